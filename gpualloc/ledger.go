package gpualloc

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/mattn/go-sqlite3"

	"github.com/mlc-lab/mlc/errs"
	"github.com/mlc-lab/mlc/internal/sqlitex"
)

// Options are the gpu section of the policy, as the ledger needs them.
type Options struct {
	Shared         bool          // shared mode: MaxPerGPU containers per GPU
	MaxPerGPU      int           // 1 in exclusive mode
	Strategy       string        // spread | pack | last-used
	PendingTimeout time.Duration // pending claims of live processes older than this are released too
	HoldAfterStop  time.Duration // 0: keep GPUs while the container exists
	BusyTimeout    time.Duration // how long to wait for another mlc's write lock
	Poll           time.Duration // wait-queue poll interval
	StaleWaiter    time.Duration // a waiter silent this long is gone
}

func (o *Options) defaults() {
	if !o.Shared || o.MaxPerGPU < 1 {
		o.MaxPerGPU = 1
	}
	if o.Strategy == "" {
		o.Strategy = "spread"
	}
	if o.PendingTimeout <= 0 {
		o.PendingTimeout = 5 * time.Minute
	}
	if o.BusyTimeout <= 0 {
		o.BusyTimeout = 10 * time.Second
	}
	if o.Poll <= 0 {
		o.Poll = 250 * time.Millisecond
	}
	if o.StaleWaiter <= 0 {
		o.StaleWaiter = 15 * time.Second
	}
}

// Ledger is the allocation ledger in SQLite, shared by every mlc process.
type Ledger struct {
	db   *sql.DB
	path string
	lock *writerLock
	inv  []GPU
	opt  Options
	now  func() time.Time
	self proc
}

// migrations are applied in order; the version is their count.
var migrations = []string{
	`CREATE TABLE claims (
		id             INTEGER PRIMARY KEY AUTOINCREMENT,
		user           TEXT    NOT NULL,
		name           TEXT    NOT NULL, -- the user's short name
		container      TEXT    NOT NULL, -- the Docker name
		container_id   TEXT,
		state          TEXT    NOT NULL CHECK (state IN ('pending', 'active', 'released')),
		pid            INTEGER NOT NULL, -- the claiming process, for crash detection
		pid_start      INTEGER NOT NULL,
		created_ms     INTEGER NOT NULL,
		activated_ms   INTEGER,
		stopped_ms     INTEGER,
		released_ms    INTEGER,
		release_reason TEXT
	);
	CREATE TABLE claim_gpus (
		claim_id INTEGER NOT NULL REFERENCES claims(id),
		gpu_uuid TEXT    NOT NULL,
		slot     INTEGER NOT NULL, -- 0 in exclusive mode; 0..max_per_gpu-1 in shared mode
		live     INTEGER NOT NULL DEFAULT 1
	);
	-- The backstop: one live holder per GPU slot, whatever the code above it does.
	CREATE UNIQUE INDEX one_holder_per_gpu_slot ON claim_gpus (gpu_uuid, slot) WHERE live = 1;
	CREATE UNIQUE INDEX one_live_claim_per_container ON claims (container) WHERE state != 'released';
	CREATE INDEX claim_gpus_by_claim ON claim_gpus (claim_id);
	CREATE TABLE waiters (
		id          INTEGER PRIMARY KEY AUTOINCREMENT,
		user        TEXT    NOT NULL,
		name        TEXT    NOT NULL,
		n           INTEGER NOT NULL,
		pid         INTEGER NOT NULL,
		created_ms  INTEGER NOT NULL,
		seen_ms     INTEGER NOT NULL,
		state       TEXT    NOT NULL DEFAULT 'waiting' CHECK (state IN ('waiting', 'done', 'gone')),
		claim_id    INTEGER
	);`,
}

// Open opens (creating when missing) the ledger at path for the inventory.
//
// The state directory is made 0700 and the ledger, its lock file and
// SQLite's -wal and -shm files 0600: the ledger names every user's
// containers, and only root (mlc under sudo) reads or writes it. Run as root,
// Open tightens a directory or files that exist with wider modes.
func Open(path string, inv []GPU, opt Options) (*Ledger, error) {
	opt.defaults()
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, errs.Wrap(errs.State, err, "state directory %s cannot be created", dir)
	}
	if err := tighten(dir, 0o700); err != nil {
		return nil, errs.Wrap(errs.State, err, "state directory %s", dir)
	}
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		return nil, errs.New(errs.State, "GPU ledger %s is a directory", path)
	}
	lock := newWriterLock(path+".lock", opt.BusyTimeout)
	for _, p := range []string{path, lock.path} {
		f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, errs.Wrap(errs.State, err, "GPU ledger %s cannot be opened", p)
		}
		f.Close()
	}
	// SQLite creates the -wal and -shm files with the database's mode; ones
	// left by an mlc that died, or made when the ledger was wider, are
	// tightened with it.
	for _, p := range []string{path, path + "-wal", path + "-shm", lock.path} {
		if err := tighten(p, 0o600); err != nil && !os.IsNotExist(err) {
			return nil, errs.Wrap(errs.State, err, "GPU ledger %s", p)
		}
	}
	dsn := fmt.Sprintf("file:%s?_journal_mode=WAL&_busy_timeout=%d&_txlock=immediate&_foreign_keys=1&_synchronous=NORMAL",
		path, opt.BusyTimeout.Milliseconds())
	db, err := sql.Open("sqlite3", dsn)
	if err != nil {
		return nil, errs.Wrap(errs.State, err, "GPU ledger %s", path)
	}
	db.SetMaxOpenConns(1)
	l := &Ledger{db: db, path: path, lock: lock, inv: inv, opt: opt, now: time.Now, self: selfProc()}
	if err := l.migrate(); err != nil {
		db.Close()
		return nil, l.classify(err, "opening")
	}
	return l, nil
}

// tighten clears the mode bits of path beyond max, when running as root
// (only root can be sure to own the file; others leave it as it is).
func tighten(path string, max os.FileMode) error {
	if os.Geteuid() != 0 {
		return nil
	}
	return sqlitex.Tighten(path, max)
}

// Close closes the database and the lock file.
func (l *Ledger) Close() error {
	l.lock.close()
	return l.db.Close()
}

// Path is the ledger file.
func (l *Ledger) Path() string { return l.path }

func (l *Ledger) migrate() error {
	return l.tx(context.Background(), func(tx *sql.Tx) error { return sqlitex.Migrate(tx, migrations, "ledger") })
}

// classify turns SQLite failures into errors a person can act on.
func (l *Ledger) classify(err error, what string) error {
	var se sqlite3.Error
	if errors.As(err, &se) && se.Code == sqlite3.ErrConstraint {
		return errs.New(errs.Conflict, "GPU ledger refused a double allocation (%v); run mlc gpu reconcile", se)
	}
	return sqlitex.Names{What: "GPU ledger", Path: l.path, BusyTimeout: l.opt.BusyTimeout,
		IfCorrupt: "restore it from a backup, or move it away and run `mlc gpu reconcile --adopt`"}.Classify(err, what)
}

// tx runs fn in one BEGIN IMMEDIATE transaction, holding the writer lock
// (see writerLock) from before BEGIN until after COMMIT or ROLLBACK.
func (l *Ledger) tx(ctx context.Context, fn func(*sql.Tx) error) error {
	unlock, err := l.lock.lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	tx, err := l.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

func (l *Ledger) ms() int64 { return l.now().UnixMilli() }

// Request asks for GPUs for a container about to be created.
type Request struct {
	User      string
	Name      string // short name
	Container string // Docker name
	N         int
	Quota     int
	QuotaFrom string
	Wait      bool
	Timeout   time.Duration // 0: wait for ever (until interrupted)
	Progress  func(string)
}

// Claimed is a pending claim.
type Claimed struct {
	ID    int64
	UUIDs []string
}

// holding is one live claim's use of one GPU slot.
type holding struct {
	claim     int64
	user      string
	name      string
	uuid      string
	slot      int
	state     string
	createdMS int64
}

func (l *Ledger) holdings(tx *sql.Tx) ([]holding, error) {
	rows, err := tx.Query(`SELECT c.id, c.user, c.name, g.gpu_uuid, g.slot, c.state, COALESCE(c.activated_ms, c.created_ms)
		FROM claim_gpus g JOIN claims c ON c.id = g.claim_id WHERE g.live = 1 ORDER BY c.id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []holding
	for rows.Next() {
		var h holding
		if err := rows.Scan(&h.claim, &h.user, &h.name, &h.uuid, &h.slot, &h.state, &h.createdMS); err != nil {
			return nil, err
		}
		out = append(out, h)
	}
	return out, rows.Err()
}

// tryClaim picks GPUs and records a pending claim, inside tx. It returns
// nil, nil when the GPUs are not free (the caller reports or waits).
func (l *Ledger) tryClaim(tx *sql.Tx, r Request) (*Claimed, []holding, error) {
	hs, err := l.holdings(tx)
	if err != nil {
		return nil, nil, err
	}
	held := 0
	for _, h := range hs {
		if h.user == r.User {
			held++
		}
	}
	if held+r.N > r.Quota {
		return nil, hs, errs.New(errs.Quota, "you hold %d GPUs and asked for %d more; your gpus limit is %d (%s)", held, r.N, r.Quota, r.QuotaFrom)
	}
	used := usedSlots(hs)
	var free []GPU
	for _, g := range l.inv {
		if len(used[g.UUID]) < l.opt.MaxPerGPU {
			free = append(free, g)
		}
	}
	if len(free) < r.N {
		return nil, hs, nil
	}
	last, err := l.lastUsed(tx, r.User)
	if err != nil {
		return nil, nil, err
	}
	order(free, used, l.opt.Strategy, last)
	pick := free[:r.N]
	p := l.self
	res, err := tx.Exec(`INSERT INTO claims (user, name, container, state, pid, pid_start, created_ms) VALUES (?, ?, ?, 'pending', ?, ?, ?)`,
		r.User, r.Name, r.Container, p.pid, p.start, l.ms())
	if err != nil {
		return nil, nil, err
	}
	id, _ := res.LastInsertId()
	c := &Claimed{ID: id}
	for _, g := range pick {
		slot := 0
		for used[g.UUID][slot] {
			slot++
		}
		if _, err := tx.Exec(`INSERT INTO claim_gpus (claim_id, gpu_uuid, slot) VALUES (?, ?, ?)`, id, g.UUID, slot); err != nil {
			return nil, nil, err
		}
		c.UUIDs = append(c.UUIDs, g.UUID)
	}
	return c, hs, nil
}

// lastUsed maps GPU UUID to how recently user held it (higher = later).
func (l *Ledger) lastUsed(tx *sql.Tx, user string) (map[string]int64, error) {
	if l.opt.Strategy != "last-used" {
		return nil, nil
	}
	rows, err := tx.Query(`SELECT g.gpu_uuid, MAX(c.id) FROM claim_gpus g JOIN claims c ON c.id = g.claim_id WHERE c.user = ? GROUP BY g.gpu_uuid`, user)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var u string
		var id int64
		if err := rows.Scan(&u, &id); err != nil {
			return nil, err
		}
		out[u] = id
	}
	return out, rows.Err()
}

// order sorts free GPUs by the strategy: spread (least loaded first), pack
// (most loaded first), last-used (the user's most recent GPUs, then spread);
// ties by index.
func order(free []GPU, used map[string]map[int]bool, strategy string, last map[string]int64) {
	sort.SliceStable(free, func(i, j int) bool {
		a, b := free[i], free[j]
		if strategy == "last-used" && last[a.UUID] != last[b.UUID] {
			return last[a.UUID] > last[b.UUID]
		}
		ua, ub := len(used[a.UUID]), len(used[b.UUID])
		if ua != ub {
			if strategy == "pack" {
				return ua > ub
			}
			return ua < ub
		}
		return a.Index < b.Index
	})
}

// Claim reserves r.N GPUs as pending. Without r.Wait, no free GPU is an
// error that says who holds them; with it, the request queues and takes GPUs
// in arrival order as they free up.
func (l *Ledger) Claim(ctx context.Context, r Request) (*Claimed, error) {
	if r.N <= 0 {
		return nil, errs.New(errs.Usage, "ask for at least one GPU")
	}
	if len(l.inv) == 0 {
		return nil, errs.New(errs.Unavailable, "this server has no GPUs (no NVML, and gpu.fake_count is 0)")
	}
	if r.N > len(l.inv) {
		return nil, errs.New(errs.Unavailable, "asked for %d GPUs; this server has %d", r.N, len(l.inv))
	}
	if !r.Wait {
		var got *Claimed
		var hs []holding
		err := l.tx(ctx, func(tx *sql.Tx) error {
			if n, err := l.queueLength(tx); err != nil {
				return err
			} else if n > 0 {
				return errs.New(errs.Unavailable, "%d requests are already waiting for GPUs; use --wait to queue behind them", n)
			}
			var err error
			got, hs, err = l.tryClaim(tx, r)
			return err
		})
		if err != nil {
			return nil, l.classify(err, "claiming")
		}
		if got == nil {
			return nil, errs.New(errs.Unavailable, "%s", l.busyMessage(r.User, r.N, hs))
		}
		return got, nil
	}
	return l.wait(ctx, r)
}

func (l *Ledger) queueLength(tx *sql.Tx) (int, error) {
	var n int
	err := tx.QueryRow(`SELECT COUNT(*) FROM waiters WHERE state = 'waiting' AND seen_ms >= ?`, l.ms()-l.opt.StaleWaiter.Milliseconds()).Scan(&n)
	return n, err
}

// holderName is how an error shown to user names a holder: user/name for
// their own containers, only the user for anyone else's (as RedactFor).
func holderName(h holding, user string) string {
	if h.user == user {
		return h.user + "/" + h.name
	}
	return h.user
}

// busyMessage says who holds the GPUs, as user may see it.
func (l *Ledger) busyMessage(user string, n int, hs []holding) string {
	now := l.now()
	var who []string
	for i, h := range hs {
		if i == 4 {
			who = append(who, fmt.Sprintf("and %d more: see mlc gpu status", len(hs)-4))
			break
		}
		idx := "?"
		for _, g := range l.inv {
			if g.UUID == h.uuid {
				idx = strconv.Itoa(g.Index)
			}
		}
		who = append(who, fmt.Sprintf("GPU %s: %s for %s", idx, holderName(h, user), roundDur(now.Sub(time.UnixMilli(h.createdMS)))))
	}
	return fmt.Sprintf("no %d free GPU(s) of %d (%s); use --wait to queue", n, len(l.inv), strings.Join(who, "; "))
}

func roundDur(d time.Duration) string {
	switch {
	case d < time.Minute:
		return d.Round(time.Second).String()
	case d < time.Hour:
		return d.Round(time.Minute).String()
	}
	return d.Round(time.Hour).String()
}

// wait queues in the waiters table and claims when this request is first in
// line and its GPUs are free. Strict arrival order: the head is never passed.
func (l *Ledger) wait(ctx context.Context, r Request) (*Claimed, error) {
	var wid int64
	err := l.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.Exec(`INSERT INTO waiters (user, name, n, pid, created_ms, seen_ms) VALUES (?, ?, ?, ?, ?, ?)`,
			r.User, r.Name, r.N, l.self.pid, l.ms(), l.ms())
		if err != nil {
			return err
		}
		wid, _ = res.LastInsertId()
		return nil
	})
	if err != nil {
		return nil, l.classify(err, "queueing")
	}
	done := false
	defer func() {
		if !done {
			bg, cancel := context.WithTimeout(context.Background(), l.opt.BusyTimeout)
			defer cancel()
			l.tx(bg, func(tx *sql.Tx) error {
				_, err := tx.Exec(`UPDATE waiters SET state = 'gone' WHERE id = ?`, wid)
				return err
			})
		}
	}()
	var deadline <-chan time.Time
	if r.Timeout > 0 {
		t := time.NewTimer(r.Timeout)
		defer t.Stop()
		deadline = t.C
	}
	lastPos := -1
	for {
		var got *Claimed
		pos := 0
		err := l.tx(ctx, func(tx *sql.Tx) error {
			now := l.ms()
			if _, err := tx.Exec(`UPDATE waiters SET seen_ms = ? WHERE id = ?`, now, wid); err != nil {
				return err
			}
			if _, err := tx.Exec(`UPDATE waiters SET state = 'gone' WHERE state = 'waiting' AND seen_ms < ?`, now-l.opt.StaleWaiter.Milliseconds()); err != nil {
				return err
			}
			if err := tx.QueryRow(`SELECT COUNT(*) FROM waiters WHERE state = 'waiting' AND id < ?`, wid).Scan(&pos); err != nil {
				return err
			}
			if pos > 0 {
				return nil
			}
			c, _, err := l.tryClaim(tx, r)
			if err != nil || c == nil {
				return err
			}
			got = c
			_, err = tx.Exec(`UPDATE waiters SET state = 'done', claim_id = ? WHERE id = ?`, c.ID, wid)
			return err
		})
		if err != nil {
			return nil, l.classify(err, "waiting")
		}
		if got != nil {
			done = true
			return got, nil
		}
		if pos != lastPos && r.Progress != nil {
			if pos == 0 {
				r.Progress(fmt.Sprintf("waiting for %d GPU(s): next in line", r.N))
			} else {
				r.Progress(fmt.Sprintf("waiting for %d GPU(s): %d request(s) ahead", r.N, pos))
			}
			lastPos = pos
		}
		select {
		case <-ctx.Done():
			return nil, errs.New(errs.Canceled, "stopped waiting for GPUs")
		case <-deadline:
			return nil, errs.New(errs.Unavailable, "no GPU freed up within %v (%d request(s) were ahead)", r.Timeout, pos)
		case <-time.After(l.opt.Poll):
		}
	}
}

// Activate records that claim id's container now exists. It fails if the
// claim was released meanwhile (reconcile judged it dead).
func (l *Ledger) Activate(ctx context.Context, id int64, containerID string) error {
	return l.classify(l.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.Exec(`UPDATE claims SET state = 'active', container_id = ?, activated_ms = ? WHERE id = ? AND state = 'pending'`,
			containerID, l.ms(), id)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return errs.New(errs.State, "GPU claim %d was released before its container was ready; try again", id)
		}
		return nil
	}), "activating")
}

func release(tx *sql.Tx, id int64, reason string, nowMS int64) error {
	if _, err := tx.Exec(`UPDATE claims SET state = 'released', released_ms = ?, release_reason = ? WHERE id = ? AND state != 'released'`, nowMS, reason, id); err != nil {
		return err
	}
	_, err := tx.Exec(`UPDATE claim_gpus SET live = 0 WHERE claim_id = ?`, id)
	return err
}

// Release frees a claim.
func (l *Ledger) Release(ctx context.Context, id int64, reason string) error {
	return l.classify(l.tx(ctx, func(tx *sql.Tx) error { return release(tx, id, reason, l.ms()) }), "releasing")
}

// ReleaseContainer frees every live claim of a container (by id or Docker
// name); it returns how many claims it released.
func (l *Ledger) ReleaseContainer(ctx context.Context, containerID, dockerName, reason string) (int, error) {
	n := 0
	err := l.tx(ctx, func(tx *sql.Tx) error {
		ids, err := queryIDs(tx, `SELECT id FROM claims WHERE state != 'released' AND (container_id = ? OR container = ?)`, containerID, dockerName)
		if err != nil {
			return err
		}
		for _, id := range ids {
			if err := release(tx, id, reason, l.ms()); err != nil {
				return err
			}
		}
		n = len(ids)
		return nil
	})
	return n, l.classify(err, "releasing")
}

// MarkStopped notes when a container stopped, for gpu.hold_after_stop.
func (l *Ledger) MarkStopped(ctx context.Context, containerID string) error {
	return l.classify(l.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.Exec(`UPDATE claims SET stopped_ms = ? WHERE container_id = ? AND state = 'active' AND stopped_ms IS NULL`, l.ms(), containerID)
		return err
	}), "marking stopped")
}

// Rehold makes sure a container about to start holds its GPUs (uuids, from
// its labels) again. A container whose active claim is still live keeps it.
// One whose claim was released while it was stopped (gpu.hold_after_stop,
// mlc gpu release, a reconcile) claims the same GPUs anew under a create's
// rules, in one transaction: refused while anyone waits in the queue, when
// the owner's live GPUs plus these would pass r.Quota, or when someone else
// holds one of them now. r names the owner (User), the container (Name,
// Container) and the quota (Quota, QuotaFrom); r.N, r.Wait and the rest are
// not used: the GPUs are the container's, and a start does not queue.
func (l *Ledger) Rehold(ctx context.Context, r Request, containerID string, uuids []string) error {
	return l.classify(l.tx(ctx, func(tx *sql.Tx) error {
		var live int
		if err := tx.QueryRow(`SELECT COUNT(*) FROM claims WHERE container_id = ? AND state = 'active'`, containerID).Scan(&live); err != nil {
			return err
		}
		if live > 0 {
			_, err := tx.Exec(`UPDATE claims SET stopped_ms = NULL WHERE container_id = ? AND state = 'active'`, containerID)
			return err
		}
		if n, err := l.queueLength(tx); err != nil {
			return err
		} else if n > 0 {
			return errs.New(errs.Unavailable, "%d requests are waiting for GPUs; %s cannot take its GPUs back ahead of them: start it when the queue is empty (mlc gpu status)", n, r.Name)
		}
		hs, err := l.holdings(tx)
		if err != nil {
			return err
		}
		held := 0
		for _, h := range hs {
			if h.user == r.User {
				held++
			}
		}
		if held+len(uuids) > r.Quota {
			return errs.New(errs.Quota, "starting %s takes its %d GPU(s) again, and %s holds %d; the gpus limit is %d (%s)",
				r.Name, len(uuids), r.User, held, r.Quota, r.QuotaFrom)
		}
		used := usedSlots(hs)
		for _, h := range hs {
			if len(used[h.uuid]) >= l.opt.MaxPerGPU && contains(uuids, h.uuid) {
				return errs.New(errs.Unavailable, "%s's GPU %s went to %s while it was stopped; remove it and create a new one",
					r.Name, h.uuid, holderName(h, r.User))
			}
		}
		return l.insertActive(tx, used, r.User, r.Name, r.Container, containerID, uuids)
	}), "re-claiming")
}

// usedSlots maps each GPU to its taken slots.
func usedSlots(hs []holding) map[string]map[int]bool {
	used := map[string]map[int]bool{}
	for _, h := range hs {
		if used[h.uuid] == nil {
			used[h.uuid] = map[int]bool{}
		}
		used[h.uuid][h.slot] = true
	}
	return used
}

// insertActive records an active claim of uuids for an existing container,
// each in its lowest free slot.
func (l *Ledger) insertActive(tx *sql.Tx, used map[string]map[int]bool, user, name, dockerName, containerID string, uuids []string) error {
	p := l.self
	res, err := tx.Exec(`INSERT INTO claims (user, name, container, container_id, state, pid, pid_start, created_ms, activated_ms)
		VALUES (?, ?, ?, ?, 'active', ?, ?, ?, ?)`, user, name, dockerName, containerID, p.pid, p.start, l.ms(), l.ms())
	if err != nil {
		return err
	}
	id, _ := res.LastInsertId()
	for _, u := range uuids {
		slot := 0
		for used[u][slot] {
			slot++
		}
		if slot >= l.opt.MaxPerGPU {
			return errs.New(errs.Unavailable, "GPU %s is held by another container", u)
		}
		if _, err := tx.Exec(`INSERT INTO claim_gpus (claim_id, gpu_uuid, slot) VALUES (?, ?, ?)`, id, u, slot); err != nil {
			return err
		}
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func queryIDs(tx *sql.Tx, q string, args ...any) ([]int64, error) {
	rows, err := tx.Query(q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}
