package paths

import (
	"context"
	"errors"
	"github.com/mlc-lab/mlc/internal/testenv"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// The helper process is this test binary run as another user.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == HelperArg {
		os.Exit(Serve(os.Args[2:], os.Stdout))
	}
	os.Exit(m.Run())
}

func TestWalkRefusesLinks(t *testing.T) {
	d := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(d, "a", "b"), 0o755))
	must(t, os.Symlink(filepath.Join(d, "a"), filepath.Join(d, "l")))
	must(t, os.Symlink("/", filepath.Join(d, "a", "root")))
	id, err := Walk(filepath.Join(d, "a", "b"))
	if err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	must(t, syscall.Stat(filepath.Join(d, "a", "b"), &st))
	if id != (ID{uint64(st.Dev), st.Ino}) {
		t.Errorf("id %v, stat %d:%d", id, st.Dev, st.Ino)
	}
	for _, p := range []string{filepath.Join(d, "l", "b"), filepath.Join(d, "l"), filepath.Join(d, "a", "root"), d + "/a/../a", "a/b"} {
		if _, err := Walk(p); err == nil {
			t.Errorf("Walk(%s) followed a link or took an unclean path", p)
		}
	}
	if got, ok := ParseID(id.String()); !ok || got != id {
		t.Errorf("ParseID(%s) = %v %v", id, got, ok)
	}
}

func TestPinned(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to make directories of other owners")
	}
	d, err := os.MkdirTemp("", "mlc-pinned-")
	must(t, err)
	t.Cleanup(func() { os.RemoveAll(d) })
	must(t, os.Chmod(d, 0o755))
	mk := func(p string, uid int, mode os.FileMode) string {
		p = filepath.Join(d, p)
		must(t, os.Mkdir(p, mode))
		must(t, os.Chown(p, uid, uid))
		must(t, os.Chmod(p, mode))
		return p
	}
	mine := mk("mine", 4242, 0o755)                // the user's own directory in root's d
	inner := mk("mine/inner", 4242, 0o755)         // below a directory she can write
	shared := mk("shared", 0, 0o755)               // root's
	other := mk("other", 4243, 0o700)              // another user's
	sticky := mk("sticky", 0, os.ModeSticky|0o777) // like /tmp
	inSticky := mk("sticky/hers", 4242, 0o755)     // hers, in a sticky directory: she may rename it
	rootInSticky := mk("sticky/roots", 0, 0o755)   // root's, in a sticky directory
	groupW := mk("groupw", 0, 0o775)               // root's but group-writable
	underGroupW := mk("groupw/x", 4242, 0o755)
	for _, c := range []struct {
		p  string
		ok bool
	}{{mine, true}, {inner, false}, {shared, true}, {other, false}, {inSticky, false}, {rootInSticky, true}, {sticky, true}, {underGroupW, false}} {
		_, err := Pinned(c.p, 4242)
		if (err == nil) != c.ok {
			t.Errorf("Pinned(%s): %v, want ok=%v", c.p, err, c.ok)
		}
	}
	_ = groupW
	must(t, os.Symlink(mine, filepath.Join(d, "link")))
	if _, err := Pinned(filepath.Join(d, "link"), 4242); err == nil {
		t.Error("Pinned followed a link")
	}
}

func TestEnsureWorkspace(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to give a workspace to another uid")
	}
	base := t.TempDir()
	must(t, os.Chmod(base, 0o755))
	root := filepath.Join(base, "ws")
	ws, err := EnsureWorkspace(root, "alice", 4242, 4243, "thesis")
	if err != nil {
		t.Fatal(err)
	}
	if ws.Path != filepath.Join(root, "alice", "thesis") || !ws.Created {
		t.Errorf("workspace %+v", ws)
	}
	check := func(p string, uid uint32, mode os.FileMode) {
		t.Helper()
		fi, err := os.Lstat(p)
		must(t, err)
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != uid || fi.Mode().Perm() != mode || !fi.IsDir() {
			t.Errorf("%s: uid %d mode %v, want %d %v", p, st.Uid, fi.Mode(), uid, mode)
		}
	}
	check(root, 0, 0o711)
	check(filepath.Join(root, "alice"), 0, 0o710)
	if fi, _ := os.Stat(filepath.Join(root, "alice")); fi.Sys().(*syscall.Stat_t).Gid != 4243 {
		t.Errorf("<root>/alice is not alice's group's")
	}
	check(ws.Path, 4242, 0o700)
	again, err := EnsureWorkspace(root, "alice", 4242, 4243, "thesis")
	if err != nil || again.Created || again.ID != ws.ID {
		t.Errorf("second ensure: %+v %v", again, err)
	}
	// Someone else's directory is never taken over or chowned.
	if _, err := EnsureWorkspace(root, "alice", 4244, 4243, "thesis"); err == nil || !strings.Contains(err.Error(), "belongs to another account") {
		t.Errorf("another uid's workspace: %v", err)
	}
	// A link where the workspace should be is refused, never followed.
	must(t, os.Symlink("/etc", filepath.Join(root, "alice", "evil")))
	if _, err := EnsureWorkspace(root, "alice", 4242, 4243, "evil"); err == nil {
		t.Error("a link as the workspace was accepted")
	}
	if fi, _ := os.Stat("/etc"); fi.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Fatal("/etc was chowned")
	}
	// A user-owned level is refused: the user could replace what is below it.
	must(t, os.Mkdir(filepath.Join(root, "bob"), 0o755))
	must(t, os.Chown(filepath.Join(root, "bob"), 4245, 4245))
	if _, err := EnsureWorkspace(root, "bob", 4245, 4245, "x"); err == nil || !strings.Contains(err.Error(), "not owned by root") {
		t.Errorf("user-owned level: %v", err)
	}
	// So is a writable workspace_root.
	must(t, os.Chmod(root, 0o777))
	if _, err := EnsureWorkspace(root, "alice", 4242, 4243, "thesis"); err == nil || !strings.Contains(err.Error(), "writable") {
		t.Errorf("world-writable root: %v", err)
	}
	for _, bad := range []string{"..", ".", "a/b", "", "-x"} {
		if _, err := EnsureWorkspace(root, "alice", 4242, 4243, bad); err == nil {
			t.Errorf("workspace name %q accepted", bad)
		}
	}
}

// nobody is a user with none of root's rights, for the helper tests.
func nobody(t *testing.T) Cred {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("needs root to start a helper as another user")
	}
	return Cred{UID: 65534, GID: 65534}
}

func TestHelperHasTheUsersRights(t *testing.T) {
	c := nobody(t)
	// A copy of this test binary that nobody can run is the helper.
	d, exe := testenv.HelperCopy(t)
	r := Runner{Exe: exe}
	ctx := context.Background()
	secret := filepath.Join(d, "secret.yaml")
	must(t, os.WriteFile(secret, []byte("root:$6$hash:19000:0:99999:7:::\n"), 0o600))
	open := filepath.Join(d, "open.yaml")
	must(t, os.WriteFile(open, []byte("defaults:\n  cpus: 2\n"), 0o644))

	if data, err := r.ReadFile(ctx, c, open, MaxPolicy); err != nil || string(data) != "defaults:\n  cpus: 2\n" {
		t.Errorf("readable file: %q %v", data, err)
	}
	var f *Failure
	if _, err := r.ReadFile(ctx, c, secret, MaxPolicy); !errors.As(err, &f) || f.Code != codeDenied {
		t.Errorf("root-only file read as nobody: %v", err)
	}
	if _, err := r.ReadFile(ctx, c, "/dev/zero", MaxPolicy); !errors.As(err, &f) || f.Code != codeNotRegular {
		t.Errorf("/dev/zero: %v", err)
	}
	fifo := filepath.Join(d, "fifo")
	must(t, syscall.Mkfifo(fifo, 0o666))
	if _, err := r.ReadFile(ctx, c, fifo, MaxPolicy); !errors.As(err, &f) || f.Code != codeNotRegular {
		t.Errorf("fifo: %v", err)
	}
	big := filepath.Join(d, "big")
	must(t, os.WriteFile(big, make([]byte, MaxPolicy+1), 0o644))
	if _, err := r.ReadFile(ctx, c, big, MaxPolicy); !errors.As(err, &f) || f.Code != codeTooLarge {
		t.Errorf("big file: %v", err)
	}
	// Resolving: a link to a directory nobody cannot enter is refused.
	private := filepath.Join(d, "private")
	must(t, os.Mkdir(private, 0o700))
	must(t, os.Symlink(private, filepath.Join(d, "link")))
	if _, err := r.ResolveDir(ctx, c, filepath.Join(d, "link")); !errors.As(err, &f) {
		t.Errorf("private dir through a link: %v", err)
	}
	pub := filepath.Join(d, "pub")
	must(t, os.Mkdir(pub, 0o755))
	must(t, os.Symlink(pub, filepath.Join(d, "publink")))
	res, err := r.ResolveDir(ctx, c, filepath.Join(d, "publink"))
	if err != nil || res.Real != pub {
		t.Errorf("public dir through a link: %+v %v", res, err)
	}
	// Links are made as the user: not in a directory they cannot write.
	if err := r.Link(ctx, c, filepath.Join(d, "private", "ws"), "x", "/tmp"); !errors.As(err, &f) || f.Code != codeDenied {
		t.Errorf("link in a root-only dir: %v", err)
	}
}

func TestHelperRefusesRoot(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root")
	}
	exe, err := os.Executable()
	must(t, err)
	out, err := exec.Command(exe, HelperArg, "read", "/etc/shadow", "100").CombinedOutput()
	if err == nil || strings.Contains(string(out), "root:") {
		t.Errorf("helper ran as root: %v %q", err, out)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// An undone copy removes the workspace it made, or empties the one it
// filled, and never follows a link the user left in it.
func TestRemoveWorkspace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to make root-owned workspace levels")
	}
	base := t.TempDir()
	must(t, os.Chmod(base, 0o755))
	root := filepath.Join(base, "ws")
	outside := filepath.Join(base, "outside")
	must(t, os.Mkdir(outside, 0o755))
	must(t, os.WriteFile(filepath.Join(outside, "keep"), []byte("x"), 0o644))
	for _, contentsOnly := range []bool{false, true} {
		ws, err := EnsureWorkspace(root, "alice", 4242, 4243, "copy")
		must(t, err)
		must(t, os.MkdirAll(filepath.Join(ws.Path, "a/b"), 0o755))
		must(t, os.WriteFile(filepath.Join(ws.Path, "a/b/f"), []byte("x"), 0o644))
		must(t, os.Symlink(outside, filepath.Join(ws.Path, "link")))
		must(t, RemoveWorkspace(root, "alice", "copy", contentsOnly))
		names, err := os.ReadDir(ws.Path)
		switch {
		case !contentsOnly && !os.IsNotExist(err):
			t.Fatalf("the workspace is still there: %v %v", names, err)
		case contentsOnly && (err != nil || len(names) != 0):
			t.Fatalf("emptied: %v %v", names, err)
		}
		if _, err := os.Stat(filepath.Join(outside, "keep")); err != nil {
			t.Fatalf("a file the link pointed to went: %v", err)
		}
		os.RemoveAll(ws.Path)
	}
	if err := RemoveWorkspace(root, "alice", "../alice", false); err == nil {
		t.Fatal("a name with .. was taken")
	}
}
