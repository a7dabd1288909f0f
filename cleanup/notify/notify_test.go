package notify

import (
	"bytes"
	"context"
	"errors"
	"github.com/mlc-lab/mlc/internal/testenv"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mlc-lab/mlc/paths"
)

// The as-user helper is this test binary run as another user.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == paths.HelperArg {
		os.Exit(paths.Serve(os.Args[2:], os.Stdout))
	}
	os.Exit(m.Run())
}

// A test user with no account: the helper runs as it with no groups.
const testUID, testGID = 4242, 4242

func needRoot(t *testing.T) {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("needs root (devices, other owners, the helper as another user)")
	}
}

// base is a directory every user can enter, with a copy of this test binary
// in it that the test user can run as the helper.
func base(t *testing.T) (string, paths.Runner) {
	t.Helper()
	d, exe := testenv.HelperCopy(t)
	return d, paths.Runner{Exe: exe}
}

func TestLineAndFrame(t *testing.T) {
	if got := Line("a\x1b[2Jb\tc\x07\x9b\u202e\xffd\ne"); got != "a?[2Jb c????d?e" {
		t.Errorf("Line: %q", got)
	}
	f := string(FrameTerminal("idle \x1b]0;pwn\x07", "line one\r\nline\x1btwo\n\n"))
	want := "\r\n*** mlc: idle ?]0;pwn? ***\r\nline one\r\nline?two\r\n"
	if f != want {
		t.Errorf("frame %q, want %q", f, want)
	}
	big := FrameTerminal("s", strings.Repeat("x", 10000))
	if len(big) > maxTerminal || !bytes.HasSuffix(big, []byte("...\r\n")) {
		t.Errorf("long frame: %d bytes", len(big))
	}
	if got := FileText(Message{Subject: "s\x1b", Body: "b\n"}); got != "s?\n\nb\n" {
		t.Errorf("FileText: %q", got)
	}
}

// pty is a pseudo-terminal pair: the master the test reads and the slave's
// path; the slave stays open so that nothing hangs up.
type pty struct {
	master int
	path   string
}

// openPty opens a pseudo-terminal and gives its slave to uid with mode.
// (A node made with mknod elsewhere does not open: a slave must be reached
// through its devpts, so these tests use the system's /dev.)
func openPty(t *testing.T, uid int, mode uint32) pty {
	t.Helper()
	m, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	t.Cleanup(func() { unix.Close(m) })
	must(t, unix.IoctlSetPointerInt(m, unix.TIOCSPTLCK, 0))
	n, err := unix.IoctlGetInt(m, unix.TIOCGPTN)
	must(t, err)
	name := "/dev/pts/" + strconv.Itoa(n)
	s, err := unix.Open(name, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	must(t, err)
	t.Cleanup(func() { unix.Close(s) })
	must(t, unix.Fchown(s, uid, uid))
	must(t, unix.Fchmod(s, mode))
	return pty{master: m, path: name}
}

// read returns what arrived at the master within wait.
func (p pty) read(wait time.Duration) string {
	var out []byte
	deadline := time.Now().Add(wait)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return string(out)
		}
		fds := []unix.PollFd{{Fd: int32(p.master), Events: unix.POLLIN}}
		if n, err := unix.Poll(fds, int(left/time.Millisecond)+1); err != nil || n == 0 {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return string(out)
		}
		buf := make([]byte, 8192)
		k, err := unix.Read(p.master, buf)
		if k > 0 {
			out = append(out, buf[:k]...)
			// Whatever else is there comes at once; a short wait is enough.
			deadline = time.Now().Add(100 * time.Millisecond)
		}
		if err != nil {
			return string(out)
		}
	}
}

func TestTerminals(t *testing.T) {
	needRoot(t)
	mine := openPty(t, testUID, 0o620)
	readOnly := openPty(t, testUID, 0o400) // no owner write
	others := openPty(t, testUID+1, 0o620) // another user's
	m := Message{User: "alice", UID: testUID, GID: testGID, Container: "thesis",
		Subject: "thesis idle \x1b[31m", Body: "It will be stopped.\x07\n"}

	res := Deliver(context.Background(), m, Options{DevDir: "/dev"})
	if res.Terminals != 1 || len(res.Errors) != 0 || res.File || res.Command {
		t.Errorf("result %+v, want 1 terminal", res)
	}
	got := mine.read(2 * time.Second)
	if strings.Count(got, "*** mlc: thesis idle ?[31m ***") != 1 || !strings.Contains(got, "It will be stopped.?") {
		t.Errorf("terminal got %q", got)
	}
	if strings.ContainsAny(got, "\x1b\x07") {
		t.Errorf("a control character reached the terminal: %q", got)
	}
	for _, p := range []pty{readOnly, others} {
		if got := p.read(200 * time.Millisecond); got != "" {
			t.Errorf("%s (not the user's, or no owner write) got %q", p.path, got)
		}
	}

	// A DevDir of planted things of the user's, none a terminal: a link to
	// the user's real terminal (under a terminal's name, in pts/ and as
	// ttyN), a regular file, a FIFO, a directory.
	d, _ := base(t)
	dev := filepath.Join(d, "dev")
	must(t, os.MkdirAll(filepath.Join(dev, "pts"), 0o755))
	plant := func(p string) {
		must(t, os.Lchown(p, testUID, testGID))
	}
	for _, l := range []string{"pts/0", "tty7"} {
		must(t, os.Symlink(mine.path, filepath.Join(dev, l)))
		plant(filepath.Join(dev, l))
	}
	reg := filepath.Join(dev, "pts", "1")
	must(t, os.WriteFile(reg, nil, 0o620))
	plant(reg)
	must(t, syscall.Mkfifo(filepath.Join(dev, "pts", "2"), 0o620))
	plant(filepath.Join(dev, "pts", "2"))
	must(t, os.Mkdir(filepath.Join(dev, "tty8"), 0o755))
	plant(filepath.Join(dev, "tty8"))
	if res := Deliver(context.Background(), m, Options{DevDir: dev}); res.Terminals != 0 || len(res.Errors) != 0 {
		t.Errorf("planted: %+v", res)
	}
	if got := mine.read(200 * time.Millisecond); got != "" {
		t.Errorf("written through a link: %q", got)
	}
	if fi, _ := os.Lstat(reg); fi.Size() != 0 {
		t.Errorf("a regular file was written")
	}
	// pts itself a link to the real one: not followed.
	must(t, os.RemoveAll(filepath.Join(dev, "pts")))
	must(t, os.Symlink("/dev/pts", filepath.Join(dev, "pts")))
	if res := Deliver(context.Background(), m, Options{DevDir: dev}); res.Terminals != 0 {
		t.Errorf("pts as a link: %+v", res)
	}
	if got := mine.read(200 * time.Millisecond); got != "" {
		t.Errorf("written through a pts link: %q", got)
	}
	// A DevDir that is a link is refused.
	must(t, os.Symlink("/dev", filepath.Join(d, "devlink")))
	if n, errs := Terminals(filepath.Join(d, "devlink"), testUID, []byte("x")); n != 0 || len(errs) != 1 {
		t.Errorf("DevDir through a link: %d %v", n, errs)
	}

	// A full terminal (no one reads it) does not block.
	openPty(t, testUID+2, 0o620)
	done := make(chan Result, 1)
	go func() {
		var r Result
		for range 100 {
			r = Deliver(context.Background(), Message{UID: testUID + 2, Subject: "s", Body: strings.Repeat("x", 3000)}, Options{DevDir: "/dev"})
		}
		done <- r
	}()
	select {
	case r := <-done:
		if r.Terminals != 0 {
			t.Errorf("a full terminal took more: %+v", r)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("writing to a full terminal blocked")
	}
}

// workspace makes <d>/<name> owned by uid, 0700.
func workspace(t *testing.T, d, name string, uid int) string {
	t.Helper()
	ws := filepath.Join(d, name)
	must(t, os.Mkdir(ws, 0o700))
	must(t, os.Chown(ws, uid, uid))
	return ws
}

func TestWarningFile(t *testing.T) {
	needRoot(t)
	d, r := base(t)
	ctx := context.Background()
	noDev := filepath.Join(d, "nodev")
	must(t, os.Mkdir(noDev, 0o755))
	o := Options{DevDir: noDev, Runner: r}
	m := Message{User: "alice", UID: testUID, GID: testGID, Container: "thesis", Subject: "thesis idle", Body: "Stopping soon.\n"}

	m.Workspace = workspace(t, d, "ws", testUID)
	res := Deliver(ctx, m, o)
	if !res.File || len(res.Errors) != 0 {
		t.Fatalf("result %+v", res)
	}
	p := filepath.Join(m.Workspace, WarningFile)
	b, err := os.ReadFile(p)
	must(t, err)
	fi, _ := os.Lstat(p)
	if string(b) != FileText(m) || int(fi.Sys().(*syscall.Stat_t).Uid) != testUID || !fi.Mode().IsRegular() {
		t.Errorf("%s: %q uid %d mode %v", p, b, fi.Sys().(*syscall.Stat_t).Uid, fi.Mode())
	}
	// A second warning replaces the first.
	m.Subject = "later"
	if res := Deliver(ctx, m, o); !res.File {
		t.Errorf("second warning: %+v", res)
	}
	if b, _ := os.ReadFile(p); !strings.HasPrefix(string(b), "later\n") {
		t.Errorf("second warning: %q", b)
	}

	// .mlc-warning planted as a link: to a root file, to a file of the
	// user's (the helper could write it: only O_NOFOLLOW stops it), and
	// dangling (O_CREAT must not make the target).
	passwd, err := os.ReadFile("/etc/passwd")
	must(t, err)
	hers := filepath.Join(d, "hers")
	must(t, os.WriteFile(hers, []byte("untouched"), 0o644))
	must(t, os.Chown(hers, testUID, testGID))
	for i, target := range []string{"/etc/passwd", hers, filepath.Join(d, "made-by-root")} {
		m.Workspace = workspace(t, d, "planted"+strconv.Itoa(i), testUID)
		must(t, os.Symlink(target, filepath.Join(m.Workspace, WarningFile)))
		if res := Deliver(ctx, m, o); res.File || len(res.Errors) != 1 {
			t.Errorf("link to %s: %+v", target, res)
		}
		if fi, err := os.Lstat(filepath.Join(m.Workspace, WarningFile)); err != nil || fi.Mode()&os.ModeSymlink == 0 {
			t.Errorf("the planted link was replaced: %v %v", fi, err)
		}
	}
	if b, _ := os.ReadFile("/etc/passwd"); !bytes.Equal(b, passwd) {
		t.Fatal("/etc/passwd changed")
	}
	if b, _ := os.ReadFile(hers); string(b) != "untouched" {
		t.Errorf("the user's file behind a link changed: %q", b)
	}
	if _, err := os.Lstat(filepath.Join(d, "made-by-root")); err == nil {
		t.Error("a dangling link's target was created")
	}

	// The workspace replaced by a link (to the user's own directory, or to
	// /etc), owned by someone else, or not a directory: refused.
	good := workspace(t, d, "good", testUID)
	must(t, os.Symlink(good, filepath.Join(d, "wslink")))
	must(t, os.Symlink("/etc", filepath.Join(d, "etclink")))
	roots := filepath.Join(d, "roots")
	must(t, os.Mkdir(roots, 0o777))
	must(t, os.Chmod(roots, 0o777)) // writable by the user, but not theirs
	file := filepath.Join(d, "file")
	must(t, os.WriteFile(file, nil, 0o644))
	must(t, os.Chown(file, testUID, testGID))
	for _, ws := range []string{filepath.Join(d, "wslink"), filepath.Join(d, "etclink"), roots, file, filepath.Join(d, "missing"), "relative/ws"} {
		m.Workspace = ws
		if res := Deliver(ctx, m, o); res.File || len(res.Errors) != 1 {
			t.Errorf("workspace %s: %+v", ws, res)
		}
	}
	for _, dir := range []string{good, roots} {
		if _, err := os.Lstat(filepath.Join(dir, WarningFile)); err == nil {
			t.Errorf("written into %s", dir)
		}
	}
	if _, err := os.Lstat(filepath.Join("/etc", WarningFile)); err == nil {
		t.Fatal("written into /etc")
	}
}

// Without root (mlc run by the user themselves) the file is written in
// process, by the same rules.
func TestWarningFileSameUser(t *testing.T) {
	d := t.TempDir()
	ctx := context.Background()
	o := Options{DevDir: t.TempDir()}
	m := Message{UID: os.Getuid(), GID: os.Getgid(), Subject: "s", Body: "b", Workspace: d}
	if res := Deliver(ctx, m, o); !res.File || len(res.Errors) != 0 {
		t.Errorf("%+v", res)
	}
	target := filepath.Join(t.TempDir(), "target")
	must(t, os.WriteFile(target, []byte("untouched"), 0o644))
	must(t, os.Remove(filepath.Join(d, WarningFile)))
	must(t, os.Symlink(target, filepath.Join(d, WarningFile)))
	if res := Deliver(ctx, m, o); res.File {
		t.Errorf("followed a link: %+v", res)
	}
	if b, _ := os.ReadFile(target); string(b) != "untouched" {
		t.Errorf("target: %q", b)
	}
}

func TestKeepAlive(t *testing.T) {
	d := t.TempDir()
	ctx := context.Background()
	uid := os.Getuid()
	var o Options
	if uid == 0 {
		d, o.Runner = base(t)
		uid = testUID
	}
	ws := workspace(t, d, "ws", uid)
	if got, err := KeepAlive(ws); err != nil || !got.IsZero() {
		t.Errorf("absent: %v %v", got, err)
	}
	until := time.Now().Add(8 * time.Hour).Truncate(time.Microsecond)
	m := Message{User: "alice", UID: uid, GID: uid, Workspace: ws}
	if uid == os.Getuid() {
		m.GID = os.Getgid()
	}
	must(t, WriteKeepAlive(ctx, m, until, o))
	if got, err := KeepAlive(ws); err != nil || !got.Equal(until) {
		t.Errorf("KeepAlive = %v %v, want %v", got, err, until)
	}
	fi, err := os.Lstat(filepath.Join(ws, KeepAliveFile))
	must(t, err)
	if int(fi.Sys().(*syscall.Stat_t).Uid) != uid {
		t.Errorf(".keep-alive is uid %d's", fi.Sys().(*syscall.Stat_t).Uid)
	}
	// Again: only the time moves.
	must(t, WriteKeepAlive(ctx, m, until.Add(time.Hour), o))
	if got, _ := KeepAlive(ws); !got.Equal(until.Add(time.Hour)) {
		t.Errorf("second keepalive: %v", got)
	}

	// A link as .keep-alive is neither followed by the reader (its target's
	// time would count) nor by the writer.
	ws2 := workspace(t, d, "ws2", uid)
	target := filepath.Join(d, "target")
	must(t, os.WriteFile(target, nil, 0o666))
	must(t, os.Chown(target, uid, uid))
	old := time.Unix(1_000_000_000, 0)
	must(t, os.Chtimes(target, old, old.Add(100*365*24*time.Hour)))
	must(t, os.Symlink(target, filepath.Join(ws2, KeepAliveFile)))
	if got, err := KeepAlive(ws2); err != nil || !got.IsZero() {
		t.Errorf("a link as .keep-alive: %v %v", got, err)
	}
	m.Workspace = ws2
	if err := WriteKeepAlive(ctx, m, until, o); err == nil {
		t.Error("WriteKeepAlive through a link")
	}
	if fi, _ := os.Stat(target); !fi.ModTime().Equal(old.Add(100 * 365 * 24 * time.Hour)) {
		t.Errorf("the link's target was touched: %v", fi.ModTime())
	}
	// A directory named .keep-alive counts as absent.
	ws3 := workspace(t, d, "ws3", uid)
	must(t, os.Mkdir(filepath.Join(ws3, KeepAliveFile), 0o755))
	if got, err := KeepAlive(ws3); err != nil || !got.IsZero() {
		t.Errorf("a directory as .keep-alive: %v %v", got, err)
	}

	// The workspace: a link, a file, missing, relative are refused.
	must(t, os.Symlink(ws, filepath.Join(d, "wslink")))
	file := filepath.Join(d, "file")
	must(t, os.WriteFile(file, nil, 0o644))
	for _, bad := range []string{filepath.Join(d, "wslink"), file, filepath.Join(d, "missing"), "ws"} {
		if got, err := KeepAlive(bad); err == nil {
			t.Errorf("KeepAlive(%s) = %v", bad, got)
		}
		m.Workspace = bad
		if err := WriteKeepAlive(ctx, m, until, o); err == nil {
			t.Errorf("WriteKeepAlive(%s) accepted", bad)
		}
	}
	if _, err := os.Lstat(filepath.Join(ws, KeepAliveFile)); err != nil {
		t.Error(err)
	}
	if os.Getuid() == 0 {
		// A directory not the user's (root's, writable by all) is refused.
		open := filepath.Join(d, "open")
		must(t, os.Mkdir(open, 0o777))
		must(t, os.Chmod(open, 0o777))
		m.Workspace = open
		if err := WriteKeepAlive(ctx, m, until, o); err == nil {
			t.Error("WriteKeepAlive into root's directory")
		}
	}
}

func TestCommand(t *testing.T) {
	d := t.TempDir()
	ctx := context.Background()
	m := Message{User: "alice", UID: -1, Container: "thesis", Subject: "thesis idle\x1b[2J", Body: "line 1\nline 2\n"}
	noDev := t.TempDir()
	o := Options{DevDir: noDev, Command: `cat > "$D/body"; printf '%s|%s|%s' "$MLC_USER" "$MLC_CONTAINER" "$MLC_SUBJECT" > "$D/env"`}
	o.Command = "D=" + d + "; " + o.Command
	res := Deliver(ctx, m, o)
	if !res.Command || len(res.Errors) != 0 || res.File {
		t.Errorf("result %+v", res)
	}
	if b, _ := os.ReadFile(filepath.Join(d, "body")); string(b) != "line 1\nline 2\n" {
		t.Errorf("stdin: %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(d, "env")); string(b) != "alice|thesis|thesis idle?[2J" {
		t.Errorf("env: %q", b)
	}

	o.Command = "echo; echo 'no route to mail host' >&2; echo more; exit 3"
	res = Deliver(ctx, m, o)
	if res.Command || len(res.Errors) != 1 || !strings.Contains(res.Errors[0], "exit status 3: no route to mail host") {
		t.Errorf("failing command: %+v", res)
	}

	// A command that finishes but leaves a child holding its output is done
	// when it exits.
	start := time.Now()
	o.Command = "sleep 5 & echo sent"
	if res := Deliver(ctx, m, o); !res.Command || time.Since(start) > 3*time.Second {
		t.Errorf("background child: %+v after %v", res, time.Since(start))
	}

	// Past the timeout the whole group is killed.
	commandTimeout = 500 * time.Millisecond
	defer func() { commandTimeout = CommandTimeout }()
	pidFile := filepath.Join(d, "pid")
	o.Command = "sleep 60 & echo $! > " + pidFile + "; wait"
	start = time.Now()
	res = Deliver(ctx, m, o)
	if res.Command || len(res.Errors) != 1 || !strings.Contains(res.Errors[0], "killed after") || time.Since(start) > 5*time.Second {
		t.Errorf("hung command: %+v after %v", res, time.Since(start))
	}
	b, err := os.ReadFile(pidFile)
	must(t, err)
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	deadline := time.Now().Add(3 * time.Second)
	for alive(pid) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if alive(pid) {
		t.Errorf("the command's child %d lives on", pid)
	}

	// An interrupted run stops the command too.
	commandTimeout = CommandTimeout
	cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	o.Command = "sleep 60"
	start = time.Now()
	if res := Deliver(cctx, m, o); res.Command || time.Since(start) > 5*time.Second {
		t.Errorf("interrupted: %+v after %v", res, time.Since(start))
	}
}

// alive: pid exists and is not a zombie waiting for a parent that does not
// reap.
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && len(s) > i+2 {
		return s[i+2] != 'Z'
	}
	return true
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
