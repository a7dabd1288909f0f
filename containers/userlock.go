package containers

import (
	"context"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/mlc-lab/mlc/errs"
)

// lockUser takes the user's lock, <state_dir>/locks/<uid>.lock (flock), so
// that one user's creates count and create one at a time: max_containers
// holds however many run at once. The lock goes with the process, so a
// killed mlc never leaves it held. It waits while ctx allows.
func (m *Manager) lockUser(ctx context.Context, uid int) (func(), error) {
	return m.lockFile(ctx, strconv.Itoa(uid)+".lock")
}

// lockCopies takes the user's lock for copies arriving here: one at a time
// from the checks through the create to the end of the stream of changes,
// so parallel copies cannot pass max_containers or fill the disk together.
func (m *Manager) lockCopies(ctx context.Context, uid int) (func(), error) {
	return m.lockFile(ctx, "copy-"+strconv.Itoa(uid)+".lock")
}

// markCopying marks the container name of uid as being written by a copy
// arriving here, until the returned function is called (or the process
// ends): start refuses it meanwhile (see copying).
func (m *Manager) markCopying(ctx context.Context, uid int, name string) (func(), error) {
	return m.lockFile(ctx, copyingMark(uid, name))
}

func copyingMark(uid int, name string) string {
	return "copying-" + strconv.Itoa(uid) + "-" + name + ".lock"
}

// copying is whether a copy is still writing into c: its mark is held.
func (m *Manager) copying(uid int, name string) bool {
	f, err := os.OpenFile(filepath.Join(m.Cfg.StateDir, "locks", copyingMark(uid, name)), os.O_RDWR|unix.O_NOFOLLOW, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	return unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil
}

func (m *Manager) lockFile(ctx context.Context, name string) (func(), error) {
	dir := filepath.Join(m.Cfg.StateDir, "locks")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, errs.Wrap(errs.State, err, "state directory %s", m.Cfg.StateDir)
	}
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, errs.Wrap(errs.State, err, "user lock")
	}
	got := make(chan error, 1)
	go func() { got <- unix.Flock(int(f.Fd()), unix.LOCK_EX) }()
	select {
	case err := <-got:
		if err != nil {
			f.Close()
			return nil, errs.Wrap(errs.State, err, "user lock")
		}
		return func() { f.Close() }, nil
	case <-ctx.Done():
		go func() { <-got; f.Close() }()
		return nil, errs.New(errs.Interrupted, "interrupted while waiting for your other mlc commands")
	}
}
