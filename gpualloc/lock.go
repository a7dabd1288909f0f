package gpualloc

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mlc-lab/mlc/errs"
)

// writerLock serialises the ledger's writers across processes, in arrival
// order, and wakes the next one as soon as the holder is done. SQLite's busy
// handler sleeps in coarse steps (up to 100 ms) and so lets a waiter
// oversleep a lock that was free long ago; the kernel wakes a process blocked
// in flock or fcntl at once. SQLite's own lock (BEGIN IMMEDIATE with
// _busy_timeout) stays the lock that counts: this one only orders mlc's
// writers in front of it.
//
// All of it lives in one file beside the database (gpu.db.lock, 0600), and
// the kernel drops every lock of a process that dies:
//
//   - the exclusion is flock(2) LOCK_EX on the file;
//   - the order is a ticket queue. Flock alone is not fair: an unlock wakes
//     every waiter and whoever runs first wins, usually the process that has
//     just unlocked and wants the lock again (bench/ledger.sh, 16 processes
//     on 2 CPUs: p99 150-180 ms, no better than SQLite's busy handler, against
//     50-80 ms with the queue). So a writer first takes a ticket t (the
//     counter in the file's first 8 bytes, under an OFD lock on byte 0),
//     holds an OFD lock on byte ticketBase+t until it is done, and waits for
//     the lock on byte ticketBase+t-1 before it takes the flock. Only the
//     writer before it wakes it; a writer that wants the lock again queues
//     behind everyone. A waiter that dies lets the next one through to the
//     flock, which still excludes.
//
// Within one process a one-slot channel (a mutex that honours ctx) orders
// the goroutines, so each process has at most one ticket at a time.
type writerLock struct {
	path string
	sem  chan struct{}
	wait time.Duration // give up after this long and let SQLite's busy handler decide
	f    *os.File      // the lock file, kept open between transactions; guarded by sem
}

const (
	counterLen = 8       // bytes [0, 8): the next ticket, little endian; OFD lock on byte 0 guards it
	ticketBase = 1 << 32 // OFD lock on byte ticketBase + t%ticketWrap: ticket t is queued or holds the lock
	ticketWrap = 1 << 40
)

func newWriterLock(path string, wait time.Duration) *writerLock {
	return &writerLock{path: path, sem: make(chan struct{}, 1), wait: wait}
}

// close closes the lock file (the Ledger is closing).
func (w *writerLock) close() {
	w.sem <- struct{}{}
	if w.f != nil {
		w.f.Close()
		w.f = nil
	}
	<-w.sem
}

// lock takes the writer lock; the returned function releases it. If ctx ends
// first it returns an errs.Canceled error and holds nothing. If the lock is
// not ours within w.wait (a stopped process holds it, say), lock returns
// holding only the in-process slot, and the caller's BEGIN IMMEDIATE waits
// in SQLite's busy handler as before: this lock speeds writers up but never
// stops them for good.
func (w *writerLock) lock(ctx context.Context) (func(), error) {
	select {
	case w.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, canceled()
	}
	release := func() { <-w.sem }
	if w.f == nil {
		f, err := os.OpenFile(w.path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			release()
			return nil, errs.Wrap(errs.State, err, "GPU ledger lock %s", w.path)
		}
		w.f = f
	}
	q := &queue{fd: int(w.f.Fd())}
	fail := func(err error) (func(), error) {
		w.f.Close() // drops whatever it holds
		w.f = nil
		release()
		return nil, errs.Wrap(errs.State, err, "GPU ledger lock %s", w.path)
	}
	// Uncontended, every step succeeds without waiting: no goroutine.
	done, err := q.step(false)
	if err != nil {
		return fail(err)
	}
	unlock := func() {
		q.unlock()
		release()
	}
	if done {
		return unlock, nil
	}
	// Wait in the kernel, in a goroutine, so that ctx and the deadline can
	// end the wait. An abandoned waiter keeps the file, and closes it once
	// it is through, which drops what it got; the next lock opens another.
	got := make(chan error, 1)
	go func() {
		_, err := q.step(true)
		got <- err
	}()
	timer := time.NewTimer(w.wait)
	defer timer.Stop()
	abandon := func() {
		f := w.f
		w.f = nil
		go func() {
			<-got
			f.Close()
		}()
	}
	select {
	case err := <-got:
		if err != nil {
			return fail(err)
		}
		return unlock, nil
	case <-ctx.Done():
		abandon()
		release()
		return nil, canceled()
	case <-timer.C:
		abandon()
		return release, nil
	}
}

// queue is one pass through the lock: take a ticket, wait for the one
// before, take the flock.
type queue struct {
	fd     int
	ticket uint64
	stage  int // 0: no ticket yet; 1: holds its ticket; 2: waited for the one before; 3: holds the flock
}

// step goes as far as it can; without wait it stops (done false) at the
// first step that would block, and a later step(true) goes on from there.
func (q *queue) step(wait bool) (done bool, err error) {
	if q.stage == 0 {
		if err := ofdLock(q.fd, unix.F_WRLCK, 0, wait); err != nil {
			return false, blocked(err)
		}
		t, err := q.take()
		ofdLock(q.fd, unix.F_UNLCK, 0, false)
		if err != nil {
			return false, err
		}
		q.ticket, q.stage = t, 1
	}
	if q.stage == 1 {
		if q.ticket > 0 {
			prev := ticketByte(q.ticket - 1)
			if err := ofdLock(q.fd, unix.F_WRLCK, prev, wait); err != nil {
				return false, blocked(err)
			}
			ofdLock(q.fd, unix.F_UNLCK, prev, false)
		}
		q.stage = 2
	}
	if q.stage == 2 {
		how := unix.LOCK_EX
		if !wait {
			how |= unix.LOCK_NB
		}
		if err := flock(q.fd, how); err != nil {
			return false, blocked(err)
		}
		q.stage = 3
	}
	return true, nil
}

// blocked is nil for "would block" (try again with wait), else err.
func blocked(err error) error {
	if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EWOULDBLOCK) || errors.Is(err, unix.EACCES) {
		return nil
	}
	return err
}

// take reads and advances the counter (its lock held) and takes the new
// ticket's lock before the counter is let go, so that the next ticket finds
// it held. Nobody else has the ticket, so that lock does not wait.
func (q *queue) take() (uint64, error) {
	var b [counterLen]byte
	n, err := unix.Pread(q.fd, b[:], 0)
	if err != nil {
		return 0, err
	}
	t := uint64(0)
	if n == counterLen {
		t = binary.LittleEndian.Uint64(b[:])
	}
	binary.LittleEndian.PutUint64(b[:], t+1)
	if _, err := unix.Pwrite(q.fd, b[:], 0); err != nil {
		return 0, err
	}
	if err := ofdLock(q.fd, unix.F_WRLCK, ticketByte(t), false); err != nil {
		return 0, err
	}
	return t, nil
}

// unlock drops the flock first, so that the next writer finds it free when
// the ticket wakes it, then the ticket.
func (q *queue) unlock() {
	flock(q.fd, unix.LOCK_UN)
	ofdLock(q.fd, unix.F_UNLCK, ticketByte(q.ticket), false)
	q.stage = 0
}

func ticketByte(t uint64) int64 { return ticketBase + int64(t%ticketWrap) }

// ofdLock sets (F_WRLCK) or clears (F_UNLCK) an open-file-description lock
// on one byte; wait blocks until it is free.
func ofdLock(fd int, typ int16, at int64, wait bool) error {
	cmd := unix.F_OFD_SETLK
	if wait {
		cmd = unix.F_OFD_SETLKW
	}
	lk := unix.Flock_t{Type: typ, Whence: 0, Start: at, Len: 1}
	for {
		err := unix.FcntlFlock(uintptr(fd), cmd, &lk)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

func canceled() error { return errs.New(errs.Canceled, "interrupted while waiting for the GPU ledger") }

// flock is flock(2), retried when a signal interrupts it (the Go runtime
// sends itself signals to preempt goroutines).
func flock(fd, how int) error {
	for {
		err := unix.Flock(fd, how)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}
