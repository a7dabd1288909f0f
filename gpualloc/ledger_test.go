package gpualloc

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mlc-lab/mlc/errs"
)

func open(t *testing.T, path string, n int, o Options) *Ledger {
	t.Helper()
	if path == "" {
		path = filepath.Join(t.TempDir(), "gpu.db")
	}
	l, err := Open(path, Fake(n), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

var ctx = context.Background()

func req(user, name string, n int) Request {
	return Request{User: user, Name: name, Container: "mlc-" + user + "-" + name, N: n, Quota: 8, QuotaFrom: "default"}
}

func claim(t *testing.T, l *Ledger, r Request) *Claimed {
	t.Helper()
	c, err := l.Claim(ctx, r)
	if err != nil {
		t.Fatalf("claim %+v: %v", r, err)
	}
	return c
}

func index(uuids []string) []int {
	var out []int
	for _, u := range uuids {
		var i int
		fmt.Sscanf(u[4:12], "%d", &i)
		out = append(out, i)
	}
	return out
}

func TestExclusiveSpread(t *testing.T) {
	l := open(t, "", 4, Options{})
	a := claim(t, l, req("alice", "a", 2))
	b := claim(t, l, req("bob", "b", 2))
	if fmt.Sprint(index(a.UUIDs), index(b.UUIDs)) != "[0 1] [2 3]" {
		t.Fatalf("got %v %v", index(a.UUIDs), index(b.UUIDs))
	}
	_, err := l.Claim(ctx, req("carol", "c", 1))
	if !errs.Is(err, errs.Unavailable) || !strings.Contains(err.Error(), "GPU 0: alice for") || !strings.Contains(err.Error(), "use --wait") {
		t.Fatalf("no free GPU: %v", err)
	}
	if err := l.Release(ctx, a.ID, "test"); err != nil {
		t.Fatal(err)
	}
	if c := claim(t, l, req("carol", "c", 1)); index(c.UUIDs)[0] != 0 {
		t.Fatalf("after release got %v", c.UUIDs)
	}
}

func TestSharedPackAndSpread(t *testing.T) {
	spread := open(t, "", 2, Options{Shared: true, MaxPerGPU: 2})
	var got []int
	for i := 0; i < 4; i++ {
		got = append(got, index(claim(t, spread, req("u", fmt.Sprint(i), 1)).UUIDs)...)
	}
	if fmt.Sprint(got) != "[0 1 0 1]" {
		t.Fatalf("spread: %v", got)
	}
	if _, err := spread.Claim(ctx, req("u", "x", 1)); !errs.Is(err, errs.Unavailable) {
		t.Fatalf("fifth container on 2 GPUs x 2: %v", err)
	}
	pack := open(t, "", 2, Options{Shared: true, MaxPerGPU: 2, Strategy: "pack"})
	got = nil
	for i := 0; i < 4; i++ {
		got = append(got, index(claim(t, pack, req("u", fmt.Sprint(i), 1)).UUIDs)...)
	}
	if fmt.Sprint(got) != "[0 0 1 1]" {
		t.Fatalf("pack: %v", got)
	}
}

func TestLastUsed(t *testing.T) {
	l := open(t, "", 4, Options{Strategy: "last-used"})
	claim(t, l, req("bob", "b", 1)) // takes GPU 0
	a := claim(t, l, req("alice", "a", 1))
	if index(a.UUIDs)[0] != 1 {
		t.Fatalf("first: %v", a.UUIDs)
	}
	claim(t, l, req("carol", "c", 1)) // GPU 2
	l.Release(ctx, a.ID, "test")
	if a2 := claim(t, l, req("alice", "a2", 1)); index(a2.UUIDs)[0] != 1 {
		t.Fatalf("alice should get GPU 1 back, got %v", a2.UUIDs)
	}
}

func TestQuotaOverAllContainers(t *testing.T) {
	l := open(t, "", 8, Options{})
	r := req("alice", "a", 1)
	r.Quota, r.QuotaFrom = 2, "group students"
	claim(t, l, r)
	r.Name, r.Container, r.N = "b", "mlc-alice-b", 1
	claim(t, l, r)
	r.Name, r.Container = "c", "mlc-alice-c"
	_, err := l.Claim(ctx, r)
	if !errs.Is(err, errs.Quota) || err.Error() != "you hold 2 GPUs and asked for 1 more; your gpus limit is 2 (group students)" {
		t.Fatalf("got %v", err)
	}
}

func TestNoGPUs(t *testing.T) {
	l := open(t, "", 0, Options{})
	if _, err := l.Claim(ctx, req("a", "a", 1)); !errs.Is(err, errs.Unavailable) || !strings.Contains(err.Error(), "has no GPUs") {
		t.Fatalf("got %v", err)
	}
	l2 := open(t, "", 2, Options{})
	if _, err := l2.Claim(ctx, req("a", "a", 3)); !strings.Contains(err.Error(), "this server has 2") {
		t.Fatalf("got %v", err)
	}
}

// The partial unique index refuses a second live holder even if the code above it were wrong.
func TestUniqueIndexBackstop(t *testing.T) {
	l := open(t, "", 1, Options{})
	c := claim(t, l, req("a", "a", 1))
	err := l.tx(ctx, func(tx *sql.Tx) error {
		tx.Exec(`INSERT INTO claims (id, user, name, container, state, pid, pid_start, created_ms) VALUES (99, 'b', 'b', 'x', 'pending', 1, 1, 1)`)
		_, err := tx.Exec(`INSERT INTO claim_gpus (claim_id, gpu_uuid, slot) VALUES (99, ?, 0)`, c.UUIDs[0])
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "UNIQUE") {
		t.Fatalf("second holder of one GPU was accepted: %v", err)
	}
}

// Many ledgers (separate connections, as separate processes have) claim at once.
func TestConcurrentClaimsNeverDouble(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gpu.db")
	open(t, path, 8, Options{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	got := map[string]int{}
	fails := 0
	for i := 0; i < 32; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			l, err := Open(path, Fake(8), Options{})
			if err != nil {
				t.Error(err)
				return
			}
			defer l.Close()
			c, err := l.Claim(ctx, req(fmt.Sprintf("u%d", i), "x", 1))
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if !errs.Is(err, errs.Unavailable) {
					t.Errorf("claim %d: %v", i, err)
				}
				fails++
				return
			}
			got[c.UUIDs[0]]++
		}(i)
	}
	wg.Wait()
	if len(got) != 8 || fails != 24 {
		t.Fatalf("%d GPUs handed out, %d failures", len(got), fails)
	}
	for u, n := range got {
		if n != 1 {
			t.Fatalf("%s handed out %d times", u, n)
		}
	}
}

func TestWaitInArrivalOrder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gpu.db")
	l := open(t, path, 1, Options{Poll: 20 * time.Millisecond})
	first := claim(t, l, req("holder", "h", 1))
	type result struct {
		who string
		at  time.Time
	}
	results := make(chan result, 3)
	var progress sync.Map
	for i, who := range []string{"w1", "w2", "w3"} {
		w, err := Open(path, Fake(1), Options{Poll: 20 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		r := req(who, "x", 1)
		r.Wait = true
		r.Progress = func(s string) { progress.Store(who, s) }
		go func() {
			c, err := w.Claim(ctx, r)
			if err != nil {
				t.Error(err)
				return
			}
			results <- result{who, time.Now()}
			time.Sleep(30 * time.Millisecond)
			w.Release(ctx, c.ID, "done")
		}()
		// Arrival order: wait until this one is queued before starting the next.
		deadline := time.Now().Add(5 * time.Second)
		for {
			st, _ := l.Status(ctx)
			if len(st.Queue) == i+1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("waiter never queued")
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	// Queued (its row is in) comes before its first look at the queue.
	waitFor(t, "w3's progress", func() bool {
		p, _ := progress.Load("w3")
		return p == "waiting for 1 GPU(s): 2 request(s) ahead"
	})
	// A claim without --wait does not jump the queue.
	if _, err := l.Claim(ctx, req("rude", "x", 1)); !errs.Is(err, errs.Unavailable) || !strings.Contains(err.Error(), "already waiting") {
		t.Errorf("queue jumper: %v", err)
	}
	l.Release(ctx, first.ID, "done")
	var order []string
	for i := 0; i < 3; i++ {
		select {
		case r := <-results:
			order = append(order, r.who)
		case <-time.After(10 * time.Second):
			t.Fatalf("waiters stuck; got %v", order)
		}
	}
	if strings.Join(order, " ") != "w1 w2 w3" {
		t.Fatalf("order %v", order)
	}
}

func TestWaitTimeoutLeavesQueue(t *testing.T) {
	l := open(t, "", 1, Options{Poll: 10 * time.Millisecond})
	claim(t, l, req("h", "h", 1))
	r := req("w", "x", 1)
	r.Wait, r.Timeout = true, 100*time.Millisecond
	if _, err := l.Claim(ctx, r); !errs.Is(err, errs.Unavailable) || !strings.Contains(err.Error(), "within 100ms") {
		t.Fatalf("got %v", err)
	}
	if st, _ := l.Status(ctx); len(st.Queue) != 0 {
		t.Fatalf("timed-out waiter still queued: %+v", st.Queue)
	}
}

func list(cs ...Container) Lister {
	return func(context.Context) ([]Container, error) { return cs, nil }
}

func TestReconcile(t *testing.T) {
	l := open(t, "", 4, Options{})
	// A pending claim of a dead process, no container: released.
	dead := claim(t, l, req("a", "dead", 1))
	l.db.Exec(`UPDATE claims SET pid = 999999999 WHERE id = ?`, dead.ID)
	// A pending claim of a dead process whose container exists: adopted.
	half := claim(t, l, req("a", "half", 1))
	l.db.Exec(`UPDATE claims SET pid = 999999999 WHERE id = ?`, half.ID)
	// An active claim whose container is gone: released.
	gone := claim(t, l, req("a", "gone", 1))
	l.Activate(ctx, gone.ID, "c-gone")
	// A live pending claim of this process: untouched.
	mine := claim(t, l, req("a", "mine", 1))
	live := list(
		Container{ID: "c-half", Name: "mlc-a-half", User: "a", Short: "half", Alloc: half.ID, GPUs: half.UUIDs, Running: true},
		Container{ID: "c-orphan", Name: "mlc-b-orphan", User: "b", Short: "orphan", GPUs: []string{FakeUUID(0)}, Running: true},
	)
	dry, err := l.Reconcile(ctx, live, ReconcileOptions{DryRun: true})
	if err != nil || len(dry.Actions) != 4 {
		t.Fatalf("dry run: %+v %v", dry, err)
	}
	if st, _ := l.Status(ctx); holders(st) != 4 {
		t.Fatal("dry run changed the ledger")
	}
	rep, err := l.Reconcile(ctx, live, ReconcileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"dead": "release", "half": "adopt", "gone": "release", "orphan": "report"}
	for _, a := range rep.Actions {
		if want[a.Name] != a.Action {
			t.Errorf("%s: %s (%s)", a.Name, a.Action, a.Why)
		}
		delete(want, a.Name)
	}
	if len(want) != 0 {
		t.Errorf("missing actions %v", want)
	}
	st, _ := l.Status(ctx)
	if holders(st) != 2 {
		t.Fatalf("after reconcile %d holders, want 2 (half, mine)", holders(st))
	}
	if err := l.Activate(ctx, mine.ID, "c-mine"); err != nil {
		t.Fatal(err)
	}
	if err := l.Activate(ctx, dead.ID, "late"); !errs.Is(err, errs.State) {
		t.Fatalf("activating a released claim: %v", err)
	}
}

func TestHoldAfterStop(t *testing.T) {
	l := open(t, "", 1, Options{HoldAfterStop: time.Hour})
	c := claim(t, l, req("a", "s", 1))
	l.Activate(ctx, c.ID, "c1")
	ct := Container{ID: "c1", Name: "mlc-a-s", User: "a", Short: "s", Alloc: c.ID, GPUs: c.UUIDs, Running: false}
	l.MarkStopped(ctx, "c1")
	l.Reconcile(ctx, list(ct), ReconcileOptions{})
	if st, _ := l.Status(ctx); holders(st) != 1 {
		t.Fatal("released before hold_after_stop")
	}
	l.now = func() time.Time { return time.Now().Add(2 * time.Hour) }
	l.Reconcile(ctx, list(ct), ReconcileOptions{})
	if st, _ := l.Status(ctx); holders(st) != 0 {
		t.Fatal("not released after hold_after_stop")
	}
	// Starting again re-claims the same GPU while it is free...
	if err := l.Rehold(ctx, req("a", "s", 0), "c1", c.UUIDs); err != nil {
		t.Fatal(err)
	}
	if st, _ := l.Status(ctx); holders(st) != 1 {
		t.Fatal("rehold did not claim")
	}
	// ...and is refused when someone else has it.
	l.ReleaseContainer(ctx, "c1", "mlc-a-s", "test")
	claim(t, l, req("b", "b", 1))
	if err := l.Rehold(ctx, req("a", "s", 0), "c1", c.UUIDs); !errs.Is(err, errs.Unavailable) || !strings.Contains(err.Error(), "s's GPU "+c.UUIDs[0]+" went to b while") {
		t.Fatalf("got %v", err)
	}
}

func holders(st Status) int {
	n := 0
	for _, g := range st.GPUs {
		n += len(g.Holders)
	}
	return n
}

func TestBadLedgerFiles(t *testing.T) {
	dir := t.TempDir()
	corrupt := filepath.Join(dir, "corrupt.db")
	os.WriteFile(corrupt, []byte(strings.Repeat("not a database ", 100)), 0o644)
	if _, err := Open(corrupt, Fake(1), Options{}); !errs.Is(err, errs.State) || !strings.Contains(err.Error(), "corrupt or not an SQLite database") {
		t.Fatalf("corrupt: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "afile"), nil, 0o644)
	if _, err := Open(filepath.Join(dir, "afile", "gpu.db"), Fake(1), Options{}); !errs.Is(err, errs.State) || !strings.Contains(err.Error(), "state directory") {
		t.Fatalf("state dir under a file: %v", err)
	}
	if _, err := Open(dir, Fake(1), Options{}); !errs.Is(err, errs.State) || !strings.Contains(err.Error(), "is a directory") {
		t.Fatalf("directory: %v", err)
	}
}

func TestLockedLongerThanBusyTimeout(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gpu.db")
	holder := open(t, path, 2, Options{})
	tx, err := holder.db.Begin() // BEGIN IMMEDIATE: holds the write lock
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	l, err := Open(path, Fake(2), Options{BusyTimeout: 200 * time.Millisecond})
	if err == nil {
		defer l.Close()
		_, err = l.Claim(ctx, req("a", "a", 1))
	}
	if !errs.Is(err, errs.State) || !strings.Contains(err.Error(), "locked by another mlc for more than 200ms") {
		t.Fatalf("got %v", err)
	}
}

func TestMigrationIsIdempotent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gpu.db")
	l := open(t, path, 1, Options{})
	c := claim(t, l, req("a", "a", 1))
	l.Close()
	l2 := open(t, path, 1, Options{})
	var v int
	l2.db.QueryRow(`PRAGMA user_version`).Scan(&v)
	if v != len(migrations) {
		t.Fatalf("version %d", v)
	}
	if st, _ := l2.Status(ctx); st.GPUs[0].Holders[0].Claim != c.ID {
		t.Fatal("claim lost across reopen")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// waitFor polls cond until it holds, failing the test after 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The state directory is 0700 and the ledger, its lock and SQLite's -wal and
// -shm files 0600; run as root, Open tightens ones that are wider.
func TestFileModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	path := filepath.Join(dir, "gpu.db")
	files := []string{path, path + "-wal", path + "-shm", path + ".lock"}
	check := func(when string, wantDir, wantFile os.FileMode) {
		t.Helper()
		if st, err := os.Stat(dir); err != nil || st.Mode().Perm() != wantDir {
			t.Errorf("%s: state directory %v %v, want %v", when, st.Mode().Perm(), err, wantDir)
		}
		for _, f := range files {
			if st, err := os.Stat(f); err != nil || st.Mode().Perm() != wantFile {
				t.Errorf("%s: %s %v %v, want %v", when, filepath.Base(f), st.Mode().Perm(), err, wantFile)
			}
		}
	}
	l, err := Open(path, Fake(2), Options{})
	must(t, err)
	claim(t, l, req("a", "a", 1)) // the WAL has frames, the -shm an index
	check("new", 0o700, 0o600)
	// Another connection (another mlc) while this one is open: SQLite's
	// own files keep their modes.
	l2 := open(t, path, 2, Options{})
	claim(t, l2, req("b", "b", 1))
	check("second process", 0o700, 0o600)
	l2.Close()
	l.Close()

	// An older mlc made them wider.
	must(t, os.Chmod(dir, 0o755))
	for _, f := range files {
		if _, err := os.Stat(f); os.IsNotExist(err) {
			must(t, os.WriteFile(f, nil, 0o644)) // SQLite removed it on close
		}
		must(t, os.Chmod(f, 0o644))
	}
	l = open(t, path, 2, Options{})
	if st, _ := l.Status(ctx); holders(st) != 2 {
		t.Fatal("claims lost across reopen")
	}
	if os.Geteuid() == 0 {
		check("reopened as root", 0o700, 0o600)
	} else {
		check("reopened as a user", 0o755, 0o644)
	}
}

// released makes a container of user with its claim active as containerID,
// then stopped and released (gpu.hold_after_stop, or mlc gpu release), as it
// stands before it is started again.
func released(t *testing.T, l *Ledger, r Request, containerID string) []string {
	t.Helper()
	c := claim(t, l, r)
	must(t, l.Activate(ctx, c.ID, containerID))
	must(t, l.MarkStopped(ctx, containerID))
	if n, err := l.ReleaseContainer(ctx, containerID, r.Container, "released-by-admin"); n != 1 || err != nil {
		t.Fatalf("release %s: %d %v", r.Name, n, err)
	}
	return c.UUIDs
}

// A container whose claim is still live keeps it, whatever the quota or the
// queue say now: starting it takes nothing new.
func TestReholdKeepsLiveClaim(t *testing.T) {
	l := open(t, "", 2, Options{})
	c := claim(t, l, req("alice", "a", 1))
	must(t, l.Activate(ctx, c.ID, "ca"))
	must(t, l.MarkStopped(ctx, "ca"))
	_, err := l.db.Exec(`INSERT INTO waiters (user, name, n, pid, created_ms, seen_ms) VALUES ('bob', 'w', 2, 1, ?, ?)`, l.ms(), l.ms())
	must(t, err)
	r := req("alice", "a", 0)
	r.Quota = 0 // lowered since the create
	if err := l.Rehold(ctx, r, "ca", c.UUIDs); err != nil {
		t.Fatal(err)
	}
	st, _ := l.Status(ctx)
	if holders(st) != 1 || st.GPUs[0].Holders[0].Claim != c.ID {
		t.Fatalf("rehold of a live claim changed the holders: %+v", st.GPUs)
	}
	var stopped sql.NullInt64
	must(t, l.db.QueryRow(`SELECT stopped_ms FROM claims WHERE id = ?`, c.ID).Scan(&stopped))
	if stopped.Valid {
		t.Fatal("the stop mark stays after a start")
	}
}

// The attack: create with 1 GPU (quota 1), stop, have it released, create
// another with a GPU, start the first again. The start must be refused.
func TestReholdQuota(t *testing.T) {
	l := open(t, "", 4, Options{})
	ra := req("alice", "a", 1)
	ra.Quota, ra.QuotaFrom = 1, "group students"
	gpusA := released(t, l, ra, "ca")
	// Keep a's GPU busy while b is created, so that b gets another one and
	// the quota is the only reason left to refuse a's start.
	tmp := claim(t, l, req("carol", "tmp", 1))
	if tmp.UUIDs[0] != gpusA[0] {
		t.Fatalf("carol got %v, not a's free GPU %v", tmp.UUIDs, gpusA)
	}
	rb := ra
	rb.Name, rb.Container = "b", "mlc-alice-b"
	b := claim(t, l, rb)
	must(t, l.Activate(ctx, b.ID, "cb"))
	must(t, l.Release(ctx, tmp.ID, "test"))

	err := l.Rehold(ctx, ra, "ca", gpusA)
	if !errs.Is(err, errs.Quota) || err.Error() != "starting a takes its 1 GPU(s) again, and alice holds 1; the gpus limit is 1 (group students)" {
		t.Fatalf("start over quota: %v", err)
	}
	st, _ := l.Status(ctx)
	if holders(st) != 1 {
		t.Fatalf("after the refused start %d holders, want 1 (b)", holders(st))
	}
	// Within the quota the same start takes its GPU back.
	ra.Quota = 2
	must(t, l.Rehold(ctx, ra, "ca", gpusA))
	st, _ = l.Status(ctx)
	if holders(st) != 2 || st.GPUs[0].UUID != gpusA[0] || len(st.GPUs[0].Holders) != 1 || st.GPUs[0].Holders[0].Name != "a" {
		t.Fatalf("a did not get %s back: %+v", gpusA[0], st.GPUs)
	}
}

// A start does not take GPUs ahead of requests waiting in the queue, as a
// create without --wait does not.
func TestReholdQueue(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gpu.db")
	l := open(t, path, 3, Options{Poll: 10 * time.Millisecond})
	claim(t, l, req("bob", "b", 2))
	gpusA := released(t, l, req("alice", "a", 1), "ca") // the third GPU, free now
	w := open(t, path, 3, Options{Poll: 10 * time.Millisecond})
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	rw := req("carol", "w", 2)
	rw.Wait = true
	waited := make(chan error, 1)
	go func() {
		_, err := w.Claim(wctx, rw)
		waited <- err
	}()
	waitFor(t, "carol to queue", func() bool { st, _ := l.Status(ctx); return len(st.Queue) == 1 })

	err := l.Rehold(ctx, req("alice", "a", 0), "ca", gpusA)
	if !errs.Is(err, errs.Unavailable) || !strings.HasPrefix(err.Error(), "1 requests are waiting for GPUs; a cannot take its GPUs back") {
		t.Fatalf("start while carol waits: %v", err)
	}
	if st, _ := l.Status(ctx); holders(st) != 2 {
		t.Fatalf("the refused start changed the holders: %d", holders(st))
	}
	cancel()
	select {
	case err := <-waited:
		if !errs.Is(err, errs.Canceled) {
			t.Fatalf("carol's wait: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("carol's wait did not end when canceled")
	}
	must(t, l.Rehold(ctx, req("alice", "a", 0), "ca", gpusA))
	if st, _ := l.Status(ctx); holders(st) != 3 {
		t.Fatalf("with the queue empty the start did not re-claim: %d holders", holders(st))
	}
}

// A non-admin sees who holds each GPU and who waits, but only their own
// containers' names; admins see all. The status itself is not changed.
func TestStatusRedactFor(t *testing.T) {
	l := open(t, "", 2, Options{Shared: true, MaxPerGPU: 2})
	claim(t, l, req("alice", "thesis", 1)) // GPU 0
	claim(t, l, req("bob", "secret", 1))   // GPU 1
	claim(t, l, req("alice", "exp", 1))    // GPU 0
	for _, w := range []string{"alice/queued", "bob/hidden"} {
		u, n, _ := strings.Cut(w, "/")
		_, err := l.db.Exec(`INSERT INTO waiters (user, name, n, pid, created_ms, seen_ms) VALUES (?, ?, 2, 1, ?, ?)`, u, n, l.ms(), l.ms())
		must(t, err)
	}
	st, err := l.Status(ctx)
	must(t, err)
	show := func(st Status) string {
		var out []string
		for _, g := range st.GPUs {
			for _, h := range g.Holders {
				out = append(out, fmt.Sprintf("%d:%s/%s/%s", g.Index, h.User, h.Name, h.Container))
			}
		}
		for _, w := range st.Queue {
			out = append(out, fmt.Sprintf("q%d:%s/%s", w.Position, w.User, w.Name))
		}
		return strings.Join(out, " ")
	}
	all := "0:alice/thesis/mlc-alice-thesis 0:alice/exp/mlc-alice-exp 1:bob/secret/mlc-bob-secret q1:alice/queued q2:bob/hidden"
	if got := show(st); got != all {
		t.Fatalf("status: %s", got)
	}
	if got := show(st.RedactFor("alice", false)); got != "0:alice/thesis/mlc-alice-thesis 0:alice/exp/mlc-alice-exp 1:bob/-/- q1:alice/queued q2:bob/-" {
		t.Fatalf("alice sees %s", got)
	}
	if got := show(st.RedactFor("bob", false)); got != "0:alice/-/- 0:alice/-/- 1:bob/secret/mlc-bob-secret q1:alice/- q2:bob/hidden" {
		t.Fatalf("bob sees %s", got)
	}
	b, _ := json.Marshal(st.RedactFor("carol", false))
	for _, name := range []string{"thesis", "exp", "secret", "queued", "hidden"} {
		if strings.Contains(string(b), name) {
			t.Fatalf("carol's JSON names %q: %s", name, b)
		}
	}
	if got := show(st.RedactFor("root", true)); got != all {
		t.Fatalf("an admin sees %s", got)
	}
	if got := show(st); got != all {
		t.Fatalf("redacting changed the status: %s", got)
	}
}

// What reconcile --dry-run shows a non-admin hides other users' containers.
func TestReportRedactFor(t *testing.T) {
	rep := Report{DryRun: true, Actions: []Action{
		{User: "alice", Name: "thesis", Container: "mlc-alice-thesis", Action: "release"},
		{User: "bob", Name: "secret", Container: "mlc-bob-secret", Action: "report"},
	}}
	show := func(r Report) string {
		var out []string
		for _, a := range r.Actions {
			out = append(out, a.User+"/"+a.Name+"/"+a.Container)
		}
		return strings.Join(out, " ")
	}
	all := "alice/thesis/mlc-alice-thesis bob/secret/mlc-bob-secret"
	if got := show(rep.RedactFor("alice", false)); got != "alice/thesis/mlc-alice-thesis bob/-/-" {
		t.Fatalf("alice sees %s", got)
	}
	if got := show(rep.RedactFor("root", true)); got != all {
		t.Fatalf("an admin sees %s", got)
	}
	if got := show(rep); got != all {
		t.Fatalf("redacting changed the report: %s", got)
	}
}
