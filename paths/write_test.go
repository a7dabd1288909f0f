package paths

import (
	"bytes"
	"context"
	"errors"
	"github.com/mlc-lab/mlc/internal/testenv"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// helperExe copies this test binary where the user c can run it.
func helperExe(t *testing.T) (Runner, string) {
	t.Helper()
	d, exe := testenv.HelperCopy(t)
	return Runner{Exe: exe}, d
}

func TestHelperWriteFileAndTouch(t *testing.T) {
	c := nobody(t)
	r, d := helperExe(t)
	ctx := context.Background()
	ws := filepath.Join(d, "ws")
	must(t, os.Mkdir(ws, 0o700))
	must(t, os.Chown(ws, c.UID, c.GID))

	if err := r.WriteFile(ctx, c, ws, "note", []byte("hello\n")); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(filepath.Join(ws, "note"))
	must(t, err)
	if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != c.UID || !fi.Mode().IsRegular() || fi.Mode().Perm()&^0o644 != 0 {
		t.Errorf("note: uid %d mode %v", st.Uid, fi.Mode())
	}
	// Truncated, not appended.
	must(t, r.WriteFile(ctx, c, ws, "note", []byte("hi")))
	if b, _ := os.ReadFile(filepath.Join(ws, "note")); string(b) != "hi" {
		t.Errorf("rewritten note: %q", b)
	}

	// A link planted as the name is not followed, even to a file the user
	// could write; nor to a root file.
	hers := filepath.Join(d, "hers")
	must(t, os.WriteFile(hers, []byte("untouched"), 0o666))
	must(t, os.Chown(hers, c.UID, c.GID))
	roots := filepath.Join(d, "roots")
	must(t, os.WriteFile(roots, []byte("untouched"), 0o644))
	must(t, os.Symlink(hers, filepath.Join(ws, "l1")))
	must(t, os.Symlink(roots, filepath.Join(ws, "l2")))
	must(t, os.Symlink(filepath.Join(d, "new"), filepath.Join(ws, "l3"))) // dangling: O_CREAT must not make the target
	var f *Failure
	for _, n := range []string{"l1", "l2", "l3"} {
		if err := r.WriteFile(ctx, c, ws, n, []byte("PWNED")); !errors.As(err, &f) || f.Code != codeDenied {
			t.Errorf("write through link %s: %v", n, err)
		}
		if err := r.Touch(ctx, c, ws, n, time.Unix(1e9, 0)); !errors.As(err, &f) || f.Code != codeDenied {
			t.Errorf("touch through link %s: %v", n, err)
		}
	}
	for _, p := range []string{hers, roots} {
		if b, _ := os.ReadFile(p); string(b) != "untouched" {
			t.Errorf("%s changed: %q", p, b)
		}
	}
	if _, err := os.Lstat(filepath.Join(d, "new")); err == nil {
		t.Error("a dangling link's target was created")
	}
	// A FIFO or a directory is not written.
	must(t, syscall.Mkfifo(filepath.Join(ws, "fifo"), 0o666))
	must(t, os.Chown(filepath.Join(ws, "fifo"), c.UID, c.GID))
	if err := r.WriteFile(ctx, c, ws, "fifo", []byte("x")); !errors.As(err, &f) {
		t.Errorf("fifo: %v", err)
	}
	must(t, os.Mkdir(filepath.Join(ws, "sub"), 0o755))
	must(t, os.Chown(filepath.Join(ws, "sub"), c.UID, c.GID))
	if err := r.WriteFile(ctx, c, ws, "sub", []byte("x")); err == nil {
		t.Error("a directory was written")
	}

	// The directory: a link to it, a directory of root's (even one the user
	// could write), a file, bad names are all refused.
	must(t, os.Symlink(ws, filepath.Join(d, "wslink")))
	open := filepath.Join(d, "open")
	must(t, os.Mkdir(open, 0o777))
	must(t, os.Chmod(open, 0o777))
	for _, bad := range [][2]string{{filepath.Join(d, "wslink"), "x"}, {open, "x"}, {hers, "x"}, {ws, "../x"}, {ws, ".."}, {ws, ""}, {"ws", "x"}} {
		if err := r.WriteFile(ctx, c, bad[0], bad[1], []byte("x")); err == nil {
			t.Errorf("WriteFile(%s, %s) accepted", bad[0], bad[1])
		}
	}
	if ents, _ := os.ReadDir(open); len(ents) != 0 {
		t.Errorf("written into root's directory: %v", ents)
	}
	if err := r.WriteFile(ctx, c, ws, "big", bytes.Repeat([]byte("x"), MaxWrite+1)); err == nil {
		t.Error("more than MaxWrite written")
	}

	// Touch: creates, then sets the time; keeps the content.
	until := time.Now().Add(8 * time.Hour).Truncate(time.Microsecond)
	must(t, r.Touch(ctx, c, ws, ".keep-alive", until))
	fi, err = os.Lstat(filepath.Join(ws, ".keep-alive"))
	must(t, err)
	if !fi.ModTime().Equal(until) || fi.Size() != 0 || int(fi.Sys().(*syscall.Stat_t).Uid) != c.UID {
		t.Errorf(".keep-alive: %v size %d, want %v", fi.ModTime(), fi.Size(), until)
	}
	must(t, r.Touch(ctx, c, ws, "note", until))
	if b, _ := os.ReadFile(filepath.Join(ws, "note")); string(b) != "hi" {
		t.Errorf("touch changed the content: %q", b)
	}
}

// As the process's own user (no helper), the same rules hold.
func TestWriteFileInProcess(t *testing.T) {
	c := Cred{UID: os.Getuid(), GID: os.Getgid()}
	d := t.TempDir()
	var r Runner
	ctx := context.Background()
	must(t, r.WriteFile(ctx, c, d, "a", []byte("one")))
	if b, _ := os.ReadFile(filepath.Join(d, "a")); string(b) != "one" {
		t.Errorf("a: %q", b)
	}
	target := filepath.Join(t.TempDir(), "target")
	must(t, os.WriteFile(target, []byte("untouched"), 0o644))
	must(t, os.Symlink(target, filepath.Join(d, "l")))
	if err := r.WriteFile(ctx, c, d, "l", []byte("x")); err == nil {
		t.Error("followed a link")
	}
	if err := r.Touch(ctx, c, d, "l", time.Unix(1, 0)); err == nil {
		t.Error("touched through a link")
	}
	if b, _ := os.ReadFile(target); string(b) != "untouched" {
		t.Errorf("target: %q", b)
	}
	dl := filepath.Join(t.TempDir(), "dl")
	must(t, os.Symlink(d, dl))
	if err := r.WriteFile(ctx, c, dl, "b", nil); err == nil {
		t.Error("a link as the directory was accepted")
	}
	if _, err := os.Lstat(filepath.Join(d, "b")); err == nil {
		t.Error("written through a directory link")
	}
}
