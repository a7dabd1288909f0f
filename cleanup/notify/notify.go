// Package notify delivers `mlc cleanup`'s idle warnings to a container's
// owner: on every terminal they are logged in on, as the file .mlc-warning in
// the container's workspace, and through the policy's notify.command. It also
// reads and writes WORKSPACE/.keep-alive, the file a user touches (through
// `mlc keepalive`) to keep an idle container running.
//
// mlc runs this as root, and every path below the workspace is the user's to
// plant links in. So:
//   - terminals are opened fd-relative below DevDir with O_NOFOLLOW and
//     O_NONBLOCK, and written only when fstat of the opened file says it is
//     a character device owned by the user with owner write;
//   - files in the workspace are written by the as-user helper
//     (paths.Runner.WriteFile, paths.Runner.Touch): with the user's uid, gid
//     and groups, into a directory the user owns, never through a link;
//   - .keep-alive is read by root only with lstat (fstatat with
//     AT_SYMLINK_NOFOLLOW) relative to the workspace opened O_NOFOLLOW;
//   - the command is the admin's (admins are root-equivalent); the values it
//     gets from mlc are single lines without control characters.
package notify

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/mlc-lab/mlc/paths"
)

// WarningFile and KeepAliveFile are the names in a workspace.
const (
	WarningFile   = ".mlc-warning"
	KeepAliveFile = ".keep-alive"
)

// CommandTimeout bounds notify.command (the whole process group is killed).
const CommandTimeout = 30 * time.Second

// commandTimeout is CommandTimeout; tests shorten it.
var commandTimeout = CommandTimeout

// maxTerminal bounds what is written to one terminal.
const maxTerminal = 4096

// Message is one warning for one container's owner.
type Message struct {
	User      string // the owner's user name
	UID, GID  int
	Container string // mlc name
	Subject   string // one line
	Body      string // a few lines, plain text
	Workspace string // host path of the container's workspace directory (<workspace_root>/<user>/<name>), "" for none
}

// Options is how to deliver.
type Options struct {
	// Command is notify.command from the policy ("" for none): run as root
	// with `sh -c`, the message body on stdin, env MLC_USER, MLC_CONTAINER,
	// MLC_SUBJECT (and PATH, HOME, LC_ALL only); at most 30 s.
	Command string
	// DevDir is "/dev" in production ("" means /dev); tests point it elsewhere.
	DevDir string
	// Runner runs the as-user helper that writes files in the workspace
	// (the zero value runs /proc/self/exe, mlc itself).
	Runner paths.Runner
}

// Result says what reached the user.
type Result struct {
	Terminals int      // terminals written
	File      bool     // WORKSPACE/.mlc-warning written
	Command   bool     // the command ran and exited 0
	Errors    []string // one line each, what failed
}

// Deliver sends m every way it can; a way that fails is a line in Errors and
// does not stop the others.
func Deliver(ctx context.Context, m Message, o Options) Result {
	var res Result
	n, errs := Terminals(o.DevDir, m.UID, FrameTerminal(m.Subject, m.Body))
	res.Terminals = n
	res.Errors = append(res.Errors, errs...)

	if m.Workspace != "" {
		if err := writeAsUser(ctx, m, o, FileText(m)); err != nil {
			res.Errors = append(res.Errors, fmt.Sprintf("%s/%s: %v", m.Workspace, WarningFile, err))
		} else {
			res.File = true
		}
	}

	if strings.TrimSpace(o.Command) != "" {
		if err := runCommand(ctx, o.Command, m); err != nil {
			res.Errors = append(res.Errors, "notify.command: "+err.Error())
		} else {
			res.Command = true
		}
	}
	return res
}

// cred is the rights the helper gets for m's owner: the account's own gid
// and groups when it exists, else m's uid and gid with no supplementary
// groups. Group 0 is given only to uid 0.
func cred(m Message) (paths.Cred, error) {
	if m.UID < 0 || m.GID < 0 {
		return paths.Cred{}, errors.New("no owner uid")
	}
	c, err := paths.CredFor(m.UID)
	if err != nil {
		c = paths.Cred{UID: m.UID, GID: m.GID, Groups: []uint32{}}
	}
	if c.UID != 0 && c.GID == 0 {
		return paths.Cred{}, fmt.Errorf("uid %d with group 0", c.UID)
	}
	return c, nil
}

func writeAsUser(ctx context.Context, m Message, o Options, text string) error {
	if !filepath.IsAbs(m.Workspace) {
		return errors.New("workspace is not an absolute path")
	}
	c, err := cred(m)
	if err != nil {
		return err
	}
	return o.Runner.WriteFile(ctx, c, filepath.Clean(m.Workspace), WarningFile, []byte(text))
}

// FileText is what .mlc-warning holds: the subject, a blank line, the body,
// without control characters.
func FileText(m Message) string {
	return Line(m.Subject) + "\n\n" + strings.Join(lines(m.Body), "\n") + "\n"
}

// FrameTerminal frames subject and body the way wall(1) does, with CR LF line
// ends and no control characters, at most 4 KiB.
func FrameTerminal(subject, body string) []byte {
	var b strings.Builder
	b.WriteString("\r\n*** mlc: ")
	b.WriteString(Line(subject))
	b.WriteString(" ***\r\n")
	for _, l := range lines(body) {
		b.WriteString(l)
		b.WriteString("\r\n")
	}
	out := []byte(b.String())
	if len(out) > maxTerminal {
		out = append(out[:maxTerminal-5:maxTerminal-5], "...\r\n"...)
	}
	return out
}

// lines splits s into lines without control characters, dropping trailing
// empty ones.
func lines(s string) []string {
	s = strings.ReplaceAll(s, "\r\n", "\n")
	ls := strings.Split(s, "\n")
	for i := range ls {
		ls[i] = Line(ls[i])
	}
	for len(ls) > 0 && strings.TrimSpace(ls[len(ls)-1]) == "" {
		ls = ls[:len(ls)-1]
	}
	return ls
}

// Line is s as one printable line: tabs become spaces; every other control
// character (C0, DEL, C1: escapes included), newlines and invalid UTF-8
// become '?'.
func Line(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n <= 1:
			b.WriteByte('?')
		case r == '\t':
			b.WriteByte(' ')
		case unicode.IsControl(r) || r == '\u2028' || r == '\u2029' || unicode.Is(unicode.Bidi_Control, r):
			b.WriteByte('?')
		default:
			b.WriteRune(r)
		}
		i += n
	}
	return b.String()
}

// Terminals writes msg to every terminal of uid: DevDir/pts/N and
// DevDir/ttyN that are, once opened, character devices owned by uid whose
// mode has owner write. Nothing blocks: a full terminal gets what fits.
func Terminals(devDir string, uid int, msg []byte) (int, []string) {
	if devDir == "" {
		devDir = "/dev"
	}
	dev, err := unix.Open(devDir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, []string{fmt.Sprintf("terminals: %s: %v", devDir, err)}
	}
	defer unix.Close(dev)
	n := 0
	var errs []string
	for _, name := range names(dev, ".", "tty") {
		if writeTerminal(dev, name, uid, msg) {
			n++
		}
	}
	pts, err := unix.Openat(dev, "pts", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		if !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Sprintf("terminals: %s/pts: %v", devDir, err))
		}
		return n, errs
	}
	defer unix.Close(pts)
	for _, name := range names(pts, ".", "") {
		if writeTerminal(pts, name, uid, msg) {
			n++
		}
	}
	return n, errs
}

// names lists the entries of the directory dirfd that are prefix followed
// by digits only.
func names(dirfd int, dot, prefix string) []string {
	fd, err := unix.Openat(dirfd, dot, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	f := os.NewFile(uintptr(fd), "dir")
	defer f.Close()
	all, _ := f.Readdirnames(-1)
	var out []string
	for _, n := range all {
		d, ok := strings.CutPrefix(n, prefix)
		if !ok || d == "" || len(d) > 9 || strings.Trim(d, "0123456789") != "" {
			continue
		}
		out = append(out, n)
	}
	return out
}

// writeTerminal opens dirfd/name without following a link, without making it
// a controlling terminal and without blocking, and writes msg when it is a
// character device of uid with owner write.
func writeTerminal(dirfd int, name string, uid int, msg []byte) bool {
	// A first look, so that nothing else (a FIFO, another user's device) is
	// even opened; the fstat below decides.
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil || !isTerminal(&st, uid) {
		return false
	}
	fd, err := unix.Openat(dirfd, name, unix.O_WRONLY|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	if err := unix.Fstat(fd, &st); err != nil || !isTerminal(&st, uid) {
		return false
	}
	wrote := false
	for len(msg) > 0 {
		k, err := unix.Write(fd, msg)
		if k > 0 {
			wrote = true
			msg = msg[k:]
		}
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || k <= 0 {
			break // EAGAIN: the terminal is full; what fits is enough
		}
	}
	return wrote
}

func isTerminal(st *unix.Stat_t, uid int) bool {
	return st.Mode&unix.S_IFMT == unix.S_IFCHR && int(st.Uid) == uid && st.Mode&0o200 != 0
}

// runCommand runs command with `sh -c` as root: the body on stdin, the
// message in MLC_USER, MLC_CONTAINER, MLC_SUBJECT; killed with its whole
// process group after 30 s (or when ctx ends). A failure is the exit status
// and the first line of what it printed.
func runCommand(ctx context.Context, command string, m Message) error {
	ctx, cancel := context.WithTimeout(ctx, commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", command)
	home := os.Getenv("HOME")
	if home == "" || !filepath.IsAbs(home) {
		home = "/"
	}
	cmd.Env = []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=" + home,
		"LC_ALL=C.UTF-8",
		"MLC_USER=" + Line(m.User),
		"MLC_CONTAINER=" + Line(m.Container),
		"MLC_SUBJECT=" + Line(m.Subject),
	}
	cmd.Dir = "/"
	// Stdin is a pipe already filled and closed, output a memory file: no
	// copying goroutine for Wait to wait on, so a child the command leaves
	// behind (a mailer finishing in the background) holds nothing of ours.
	body := []byte(strings.Join(lines(m.Body), "\n") + "\n")
	if len(body) > 16<<10 {
		body = body[:16<<10]
	}
	inR, inW, err := os.Pipe()
	if err != nil {
		return err
	}
	defer inR.Close()
	_, werr := inW.Write(body) // fits the pipe's buffer
	inW.Close()
	if werr != nil {
		return werr
	}
	mfd, err := unix.MemfdCreate("mlc-notify", unix.MFD_CLOEXEC)
	if err != nil {
		return err
	}
	outF := os.NewFile(uintptr(mfd), "mlc-notify-output")
	defer outF.Close()
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outF, outF
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	cmd.WaitDelay = 2 * time.Second
	err = cmd.Run()
	if err == nil {
		return nil
	}
	out := make([]byte, 4096)
	k, _ := outF.ReadAt(out, 0)
	out = out[:max(k, 0)]
	first := ""
	for _, l := range strings.Split(string(out), "\n") {
		if l = strings.TrimSpace(Line(l)); l != "" {
			first = l
			break
		}
	}
	if len(first) > 200 {
		first = first[:200] + "..."
	}
	var reason string
	var ee *exec.ExitError
	switch {
	case ctx.Err() == context.DeadlineExceeded:
		reason = fmt.Sprintf("killed after %v", commandTimeout)
	case ctx.Err() != nil:
		reason = "interrupted"
	case errors.As(err, &ee):
		reason = ee.ProcessState.String()
	default:
		reason = err.Error()
	}
	if first != "" {
		return fmt.Errorf("%s: %s", reason, first)
	}
	return errors.New(reason)
}

// KeepAlive returns the modification time of WORKSPACE/.keep-alive (zero
// when absent), read without following a link: lstat relative to the
// workspace opened O_NOFOLLOW|O_DIRECTORY. A workspace that is not a
// directory (a link included) is an error; a .keep-alive that is not a
// regular file (a link, a directory, a FIFO) counts as absent. The time is
// the user's to set (touch -d 2099-01-01 works from inside the container):
// the planner must bound how far ahead of now it honours it.
func KeepAlive(workspace string) (time.Time, error) {
	if !filepath.IsAbs(workspace) {
		return time.Time{}, fmt.Errorf("workspace %q is not an absolute path", workspace)
	}
	fd, err := unix.Open(filepath.Clean(workspace), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			err = errors.New("is a link")
		}
		return time.Time{}, fmt.Errorf("workspace %s: %w", workspace, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstatat(fd, KeepAliveFile, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return time.Time{}, nil
		}
		return time.Time{}, fmt.Errorf("%s/%s: %w", workspace, KeepAliveFile, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return time.Time{}, nil
	}
	return time.Unix(st.Mtim.Sec, st.Mtim.Nsec), nil
}

// WriteKeepAlive sets WORKSPACE/.keep-alive's modification time to until
// (creating it), as the user m.UID (m.User, m.GID and m.Workspace are used
// too): what `mlc keepalive NAME --for 8h` does. The workspace must be a
// directory the user owns, not a link, and .keep-alive a regular file or
// absent; a link there is refused, not followed.
func WriteKeepAlive(ctx context.Context, m Message, until time.Time, o Options) error {
	if m.Workspace == "" || !filepath.IsAbs(m.Workspace) {
		return errors.New("no workspace")
	}
	c, err := cred(m)
	if err != nil {
		return err
	}
	if err := o.Runner.Touch(ctx, c, filepath.Clean(m.Workspace), KeepAliveFile, until); err != nil {
		return fmt.Errorf("%s/%s: %w", m.Workspace, KeepAliveFile, err)
	}
	return nil
}
