package gpualloc

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mlc-lab/mlc/errs"
)

// holdFlock takes the writer lock of the ledger at path as another process
// would; the returned function drops it.
func holdFlock(t *testing.T, path string) func() {
	t.Helper()
	f, err := os.OpenFile(path+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	must(t, err)
	must(t, unix.Flock(int(f.Fd()), unix.LOCK_EX))
	var once bool
	drop := func() {
		if !once {
			once = true
			f.Close()
		}
	}
	t.Cleanup(drop)
	return drop
}

func tryFlock(t *testing.T, path string) error {
	t.Helper()
	f, err := os.OpenFile(path+".lock", os.O_RDWR, 0)
	must(t, err)
	defer f.Close()
	return unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
}

// The flock is held from before BEGIN until after COMMIT, and only then.
func TestWriterLockHeldAcrossTransaction(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gpu.db")
	l := open(t, path, 1, Options{})
	inside := errors.New("not run")
	must(t, l.tx(ctx, func(tx *sql.Tx) error {
		inside = tryFlock(t, path)
		return nil
	}))
	if !errors.Is(inside, unix.EWOULDBLOCK) {
		t.Fatalf("flock inside a transaction: %v, want EWOULDBLOCK", inside)
	}
	if err := tryFlock(t, path); err != nil {
		t.Fatalf("flock after the transaction: %v", err)
	}
	// A failed transaction (rolled back) drops it too.
	if err := l.tx(ctx, func(tx *sql.Tx) error { return errors.New("boom") }); err == nil {
		t.Fatal("error lost")
	}
	if err := tryFlock(t, path); err != nil {
		t.Fatalf("flock after a rollback: %v", err)
	}
}

// blockedOn counts the waiters blocked on the lock file of the ledger at
// path, by kind (FLOCK: waiting for the flock; OFDLCK: queued behind a
// ticket), from /proc/locks.
func blockedOn(t *testing.T, path string) map[string]int {
	t.Helper()
	st, err := os.Stat(path + ".lock")
	must(t, err)
	ino := fmt.Sprintf(":%d ", st.Sys().(*syscall.Stat_t).Ino)
	b, err := os.ReadFile("/proc/locks")
	if err != nil {
		t.Skipf("no /proc/locks: %v", err)
	}
	n := map[string]int{}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 2 && f[1] == "->" && strings.Contains(line, ino) {
			n[f[2]]++
		}
	}
	return n
}

// A writer waiting for the lock waits in the kernel (woken when the holder
// unlocks), not in SQLite's busy handler: /proc/locks lists it as a blocked
// flock waiter on the lock file.
func TestWriterLockWaitsInFlock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gpu.db")
	l := open(t, path, 2, Options{})
	drop := holdFlock(t, path)
	done := make(chan error, 1)
	go func() {
		_, err := l.Claim(ctx, req("a", "a", 1))
		done <- err
	}()
	waitFor(t, "a blocked flock in /proc/locks", func() bool { return blockedOn(t, path)["FLOCK"] == 1 })
	select {
	case err := <-done:
		t.Fatalf("claim ran while another process held the writer lock: %v", err)
	default:
	}
	drop()
	select {
	case err := <-done:
		must(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("claim did not proceed after the lock was dropped")
	}
}

// Writers get the lock in the order they asked for it: each queues behind
// the one before, and only the first waits for the flock.
func TestWriterLockInArrivalOrder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gpu.db")
	var ls []*Ledger
	for range 4 {
		ls = append(ls, open(t, path, 2, Options{})) // each its own connection and lock file, as processes have
	}
	drop := holdFlock(t, path)
	var mu sync.Mutex
	var order []string
	done := make(chan error, 4)
	for i, who := range []string{"w1", "w2", "w3", "w4"} {
		l := ls[i]
		go func() {
			done <- l.tx(ctx, func(*sql.Tx) error {
				mu.Lock()
				order = append(order, who)
				mu.Unlock()
				return nil
			})
		}()
		waitFor(t, who+" to queue", func() bool { n := blockedOn(t, path); return n["FLOCK"] == 1 && n["OFDLCK"] == i })
	}
	drop()
	for range 4 {
		select {
		case err := <-done:
			must(t, err)
		case <-time.After(10 * time.Second):
			t.Fatalf("writers stuck; got %v", order)
		}
	}
	if strings.Join(order, " ") != "w1 w2 w3 w4" {
		t.Fatalf("order %v", order)
	}
}

// A writer that dies while queued lets the one behind it through; the flock
// still keeps that one out while the holder is in.
func TestWriterLockQueuedWriterDies(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gpu.db")
	l := open(t, path, 2, Options{})
	drop := holdFlock(t, path)
	// The dying writer: a ticket, then waiting for the flock.
	f, err := os.OpenFile(path+".lock", os.O_RDWR, 0)
	must(t, err)
	defer f.Close()
	q := &queue{fd: int(f.Fd())}
	if done, err := q.step(false); done || err != nil || q.stage != 2 {
		t.Fatalf("dying writer: done %v, stage %d, %v", done, q.stage, err)
	}
	ran := make(chan error, 1)
	go func() { ran <- l.tx(ctx, func(*sql.Tx) error { return nil }) }()
	waitFor(t, "the writer to queue behind the dying one", func() bool { return blockedOn(t, path)["OFDLCK"] == 1 })
	f.Close() // dies: the kernel drops its ticket
	waitFor(t, "the writer to wait for the flock", func() bool { n := blockedOn(t, path); return n["FLOCK"] == 1 && n["OFDLCK"] == 0 })
	select {
	case err := <-ran:
		t.Fatalf("writer ran while the flock was held: %v", err)
	default:
	}
	drop()
	select {
	case err := <-ran:
		must(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("writer stuck after the holder left")
	}
}

// Waiting for the lock ends with ctx; the abandoned wait drops the lock once
// it gets it, and the ledger goes on working.
func TestWriterLockCancel(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gpu.db")
	l := open(t, path, 2, Options{})
	drop := holdFlock(t, path)
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := l.Claim(cctx, req("a", "a", 1)); !errs.Is(err, errs.Canceled) {
		t.Fatalf("claim with the lock held and ctx ending: %v", err)
	}
	done, stop := context.WithCancel(ctx)
	stop()
	if _, err := l.Claim(done, req("a", "a", 1)); !errs.Is(err, errs.Canceled) {
		t.Fatalf("claim with ctx already done: %v", err)
	}
	drop()
	// The abandoned flock waiter gets the lock and drops it: both another
	// process and this ledger can write again.
	waitFor(t, "the abandoned waiter to drop the lock", func() bool { return tryFlock(t, path) == nil })
	c := claim(t, l, req("a", "a", 1))
	if len(c.UUIDs) != 1 {
		t.Fatalf("claim after cancel: %+v", c)
	}
	if st, _ := l.Status(ctx); holders(st) != 1 {
		t.Fatalf("a canceled claim left a holder: %d", holders(st))
	}
}

// The flock only orders mlc's writers: if it is held longer than the busy
// timeout (a stopped process), a writer goes on to SQLite's own lock.
func TestWriterLockFallsBackToBusyHandler(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gpu.db")
	open(t, path, 2, Options{})
	holdFlock(t, path)
	l, err := Open(path, Fake(2), Options{BusyTimeout: 100 * time.Millisecond})
	must(t, err)
	defer l.Close()
	start := time.Now()
	claim(t, l, req("a", "a", 1))
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Fatalf("claim took %v; it did not wait for the flock", d)
	}
}
