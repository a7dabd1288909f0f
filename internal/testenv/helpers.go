package testenv

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// LockNetworkTests makes network tests in other processes wait until this
// test ends (go test runs packages at once, and several people may test on
// one engine): their subnets and address pools are the engine's.
func LockNetworkTests(t testing.TB) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(os.TempDir(), "mlc-network-tests.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
}

// HelperCopy copies the running test binary into a fresh directory every
// user can enter, so a test can start it as another user (the as-user
// helper); it returns the directory and the copy's path.
func HelperCopy(t testing.TB) (dir, exe string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "mlc-helper-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	self, err := os.Executable()
	if err == nil {
		err = os.Chmod(dir, 0o755)
	}
	var bin []byte
	if err == nil {
		bin, err = os.ReadFile(self)
	}
	exe = filepath.Join(dir, "helper")
	if err == nil {
		err = os.WriteFile(exe, bin, 0o755)
	}
	if err != nil {
		t.Fatal(err)
	}
	return dir, exe
}
