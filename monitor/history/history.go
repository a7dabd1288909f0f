// Package history keeps mlc's usage history: one row set per Sample of every
// managed container and every GPU, in an SQLite file of its own in the state
// directory (apart from the GPU ledger, so sampling never waits on an
// allocation), and sums it into usage reports and per-container activity
// for idle cleanup.
//
// `mlc monitor sample` (cron) and `mlc monitor serve` may record at the same
// time: every Record is one BEGIN IMMEDIATE transaction, and a writer waits
// up to the busy timeout for another's.
package history

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/mattn/go-sqlite3"

	"github.com/mlc-lab/mlc/errs"
	"github.com/mlc-lab/mlc/internal/sqlitex"
)

// DefaultMaxGap caps the interval a sample stands for: when cron did not run
// for hours, the first sample after it must not count as hours of use.
const DefaultMaxGap = 10 * time.Minute

// BusyTimeout is how long a writer waits for another's transaction.
const BusyTimeout = 10 * time.Second

// DB is the history database.
type DB struct {
	db   *sql.DB
	path string
	// MaxGap caps the interval of a sample (DefaultMaxGap after Open).
	MaxGap time.Duration
	// trace, where set, sees every statement of Record and the reads.
	trace func(query string, args []any)
}

// migrations are applied in order; PRAGMA user_version is their count, so a
// later mlc appends one and older files are brought forward on Open.
//
// Times are Unix milliseconds. Utilisations are percent, NULL where unknown
// (no NVML, fake GPUs, MIG). Busy flags are 0/1, NULL where unknown.
var migrations = []string{
	`CREATE TABLE samples (
		id             INTEGER PRIMARY KEY AUTOINCREMENT,
		time_ms        INTEGER NOT NULL,
		interval_ms    INTEGER NOT NULL, -- since the previous sample, capped at MaxGap; 0 for the first
		busy_cpu_pct   REAL    NOT NULL, -- the Busy thresholds the flags below were computed with
		busy_gpu_pct   REAL    NOT NULL,
		busy_net_bytes INTEGER NOT NULL,
		gpu_note       TEXT    NOT NULL DEFAULT ''
	);
	CREATE INDEX samples_by_time ON samples (time_ms);
	CREATE TABLE containers (
		sample_id          INTEGER NOT NULL REFERENCES samples(id),
		container_id       TEXT    NOT NULL,
		name               TEXT    NOT NULL,
		user               TEXT    NOT NULL,
		running            INTEGER NOT NULL,
		cpu_percent        REAL    NOT NULL,
		memory_bytes       INTEGER NOT NULL,
		memory_limit_bytes INTEGER NOT NULL,
		pids               INTEGER NOT NULL,
		net_rx_bytes       INTEGER NOT NULL, -- deltas over the sample's interval
		net_tx_bytes       INTEGER NOT NULL,
		n_gpus             INTEGER NOT NULL,
		gpu_uuids          TEXT    NOT NULL, -- comma-separated
		gpu_util_percent   REAL,             -- its own processes, all its GPUs
		gpu_memory_bytes   INTEGER,
		busy               INTEGER NOT NULL
	);
	CREATE INDEX containers_by_sample ON containers (sample_id);
	CREATE INDEX containers_by_id ON containers (container_id);
	CREATE TABLE container_gpus (
		sample_id    INTEGER NOT NULL REFERENCES samples(id),
		container_id TEXT    NOT NULL,
		user         TEXT    NOT NULL,
		running      INTEGER NOT NULL,
		gpu_index    INTEGER NOT NULL, -- -1 where unknown
		gpu_uuid     TEXT    NOT NULL,
		util_percent REAL,             -- the container's own processes on this GPU
		busy         INTEGER           -- util_percent >= busy_gpu_pct
	);
	CREATE INDEX container_gpus_by_sample ON container_gpus (sample_id);
	CREATE TABLE gpus (
		sample_id         INTEGER NOT NULL REFERENCES samples(id),
		gpu_index         INTEGER NOT NULL,
		gpu_uuid          TEXT    NOT NULL,
		name              TEXT    NOT NULL,
		util_percent      REAL,             -- the device
		memory_used_bytes INTEGER NOT NULL,
		memory_total_bytes INTEGER NOT NULL,
		mig               INTEGER NOT NULL,
		busy              INTEGER,          -- util_percent >= busy_gpu_pct
		allocated         INTEGER NOT NULL, -- some container holds it
		unattributed      INTEGER NOT NULL  -- a host or foreign process is on it
	);
	CREATE INDEX gpus_by_sample ON gpus (sample_id);
	CREATE TABLE unattributed (
		sample_id    INTEGER NOT NULL REFERENCES samples(id),
		gpu_index    INTEGER NOT NULL,
		gpu_uuid     TEXT    NOT NULL,
		pid          INTEGER NOT NULL,
		owner        TEXT    NOT NULL, -- host or foreign
		uid          INTEGER NOT NULL,
		memory_bytes INTEGER NOT NULL,
		command      TEXT    NOT NULL
	);
	CREATE INDEX unattributed_by_sample ON unattributed (sample_id);
	CREATE TABLE users (
		sample_id        INTEGER NOT NULL REFERENCES samples(id),
		user             TEXT    NOT NULL,
		containers       INTEGER NOT NULL,
		running          INTEGER NOT NULL,
		cpu_percent      REAL    NOT NULL,
		memory_bytes     INTEGER NOT NULL,
		gpus             INTEGER NOT NULL,
		gpu_memory_bytes INTEGER NOT NULL
	);
	CREATE INDEX users_by_sample ON users (sample_id);
	-- The last cumulative network counters seen per container, for deltas.
	CREATE TABLE net_counters (
		container_id TEXT    PRIMARY KEY,
		started_ms   INTEGER NOT NULL,
		rx_bytes     INTEGER NOT NULL,
		tx_bytes     INTEGER NOT NULL,
		seen_ms      INTEGER NOT NULL
	);`,
	// 2: per-container activity kept up to date by Record, so Activity reads
	// one row per container instead of every sample; the indexes every query
	// of Record needs at 30 days of samples (a container's samples by id and
	// sample, for pruning; net counters by time).
	`CREATE TABLE activity (
		container_id  TEXT    PRIMARY KEY,
		name          TEXT    NOT NULL, -- in its latest sample (by time, then sample id)
		user          TEXT    NOT NULL,
		first_seen_ms INTEGER NOT NULL,
		last_seen_ms  INTEGER NOT NULL,
		last_busy_ms  INTEGER,          -- NULL: never busy
		samples       INTEGER NOT NULL  -- its rows in containers
	);
	DROP INDEX containers_by_id;
	CREATE INDEX containers_by_id_sample ON containers (container_id, sample_id);
	CREATE INDEX net_counters_by_seen ON net_counters (seen_ms);
	` + buildActivityV2,
	// 3: the start time of a container in each of its rows, and for idle
	// cleanup per container its samples since its last busy one, its last
	// running sample and its start time in its latest sample. The rows kept
	// have no start time; the start time where a running container was last
	// seen is known from its network counters, and put in those rows.
	`ALTER TABLE containers ADD COLUMN started_ms INTEGER; -- StartedAt; NULL where unknown
	ALTER TABLE activity ADD COLUMN since_busy INTEGER NOT NULL DEFAULT 0; -- its rows later than last_busy_ms (all: never busy)
	ALTER TABLE activity ADD COLUMN last_running_ms INTEGER;              -- NULL: never running
	ALTER TABLE activity ADD COLUMN started_ms INTEGER;                   -- in its latest sample
	UPDATE containers AS c SET started_ms = NULLIF(n.started_ms, 0)
		FROM net_counters n JOIN samples s ON s.time_ms = n.seen_ms
		WHERE c.container_id = n.container_id AND c.sample_id = s.id AND c.running;
	DELETE FROM activity;
	` + buildActivity,
	// 4: the warnings cleanup gave, so that a stop comes only in a run after
	// the last warning of the same idle spell.
	`CREATE TABLE warnings (
		container_id  TEXT    NOT NULL,
		level         INTEGER NOT NULL, -- percent of the idle timeout
		idle_since_ms INTEGER NOT NULL, -- the idle spell it was given for
		at_ms         INTEGER NOT NULL,
		PRIMARY KEY (container_id, level, idle_since_ms)
	);`,
	// 5: the container's cumulative CPU time at its last sample, so that CPU
	// % is averaged over the whole interval (not a burst at sampling time).
	`ALTER TABLE net_counters ADD COLUMN cpu_ns INTEGER;`,
}

// buildActivityV2 filled the activity table of schema version 2 (its
// migration is kept as it was).
const buildActivityV2 = `INSERT INTO activity (container_id, name, user, first_seen_ms, last_seen_ms, last_busy_ms, samples)
	SELECT container_id, name, user, first_seen, last_seen, last_busy, n FROM (
		SELECT c.container_id, c.name, c.user,
			MIN(s.time_ms) OVER w AS first_seen,
			MAX(s.time_ms) OVER w AS last_seen,
			MAX(CASE WHEN c.busy THEN s.time_ms END) OVER w AS last_busy,
			COUNT(*) OVER w AS n,
			ROW_NUMBER() OVER (PARTITION BY c.container_id ORDER BY s.time_ms DESC, s.id DESC, c.rowid DESC) AS latest
		FROM containers c JOIN samples s ON s.id = c.sample_id
		WINDOW w AS (PARTITION BY c.container_id)
	) WHERE latest = 1;`

// buildActivity fills the empty activity table from the containers rows kept.
var buildActivity = activityFromRows("") + ";"

// activityFromRows is the INSERT of the activity of the containers whose
// rows match where (a condition on c, the containers rows, and s, their
// samples), computed from those rows. The latest row of a container is by
// time, then sample id, then rowid: the last one Record wrote of the latest
// time.
func activityFromRows(where string) string {
	return `INSERT INTO activity (container_id, name, user, first_seen_ms, last_seen_ms, last_busy_ms, samples,
		since_busy, last_running_ms, started_ms)
	SELECT container_id, name, user, first_seen, last_seen, last_busy, n, since_busy, last_running, started_ms FROM (
		SELECT *, SUM(last_busy IS NULL OR time_ms > last_busy) OVER (PARTITION BY container_id) AS since_busy FROM (
			SELECT c.container_id, c.name, c.user, c.started_ms, s.time_ms,
				MIN(s.time_ms) OVER w AS first_seen,
				MAX(s.time_ms) OVER w AS last_seen,
				MAX(CASE WHEN c.busy THEN s.time_ms END) OVER w AS last_busy,
				MAX(CASE WHEN c.running THEN s.time_ms END) OVER w AS last_running,
				COUNT(*) OVER w AS n,
				ROW_NUMBER() OVER (PARTITION BY c.container_id ORDER BY s.time_ms DESC, s.id DESC, c.rowid DESC) AS latest
			FROM containers c JOIN samples s ON s.id = c.sample_id ` + where + `
			WINDOW w AS (PARTITION BY c.container_id)
		)
	) WHERE latest = 1`
}

// Open opens (creating when missing) the history database at path. The file
// and SQLite's -wal and -shm files are made 0600, and tightened to it when
// they exist with a wider mode: the history names every user's containers.
func Open(path string) (*DB, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, errs.Wrap(errs.State, err, "state directory %s cannot be created", dir)
	}
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		return nil, errs.New(errs.State, "usage history %s is a directory", path)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, errs.Wrap(errs.State, err, "usage history %s cannot be opened", path)
	}
	f.Close()
	// SQLite creates -wal and -shm with the database's mode; ones left over
	// from a wider database are tightened with it.
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		if err := tighten(p, 0o600); err != nil && !os.IsNotExist(err) {
			return nil, errs.Wrap(errs.State, err, "usage history %s", p)
		}
	}
	dsn := fmt.Sprintf("file:%s?_journal_mode=WAL&_busy_timeout=%d&_txlock=immediate&_synchronous=NORMAL",
		path, BusyTimeout.Milliseconds())
	sdb, err := sql.Open("sqlite3", dsn)
	if err != nil {
		return nil, errs.Wrap(errs.State, err, "usage history %s", path)
	}
	sdb.SetMaxOpenConns(1)
	db := &DB{db: sdb, path: path, MaxGap: DefaultMaxGap}
	// Setting WAL on a new file takes an exclusive lock, and SQLite answers
	// BUSY at once, without waiting, while another mlc is doing the same:
	// connecting is retried within the busy timeout.
	deadline := time.Now().Add(BusyTimeout)
	for {
		err = sdb.Ping()
		if err == nil {
			err = db.migrate()
		}
		if err == nil {
			return db, nil
		}
		var se sqlite3.Error
		if !errors.As(err, &se) || (se.Code != sqlite3.ErrBusy && se.Code != sqlite3.ErrLocked) || time.Now().After(deadline) {
			sdb.Close()
			return nil, db.classify(err, "opening")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// tighten clears the mode bits of path beyond max.
func tighten(path string, max os.FileMode) error { return sqlitex.Tighten(path, max) }

// Close closes the database.
func (db *DB) Close() error { return db.db.Close() }

// Path is the database file.
func (db *DB) Path() string { return db.path }

func (db *DB) migrate() error {
	// The usual case needs no write lock: every mlc list and report opens
	// the history, and must not stall the sampler.
	var v int
	if err := db.db.QueryRow(`PRAGMA user_version`).Scan(&v); err == nil && v == len(migrations) {
		return nil
	}
	return db.tx(func(tx *sql.Tx) error { return sqlitex.Migrate(tx, migrations, "usage history") })
}

// tx runs fn in one BEGIN IMMEDIATE transaction (the DSN's _txlock).
func (db *DB) tx(fn func(*sql.Tx) error) error {
	tx, err := db.db.Begin()
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

// read runs fn on one connection inside a deferred (read) transaction, so a
// report's queries see one state of the file without taking the write lock.
func (db *DB) read(fn func(q querier) error) error {
	ctx := context.Background()
	c, err := db.db.Conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.ExecContext(ctx, `BEGIN DEFERRED`); err != nil {
		return err
	}
	err = fn(db.traced(connQuerier{c}))
	if _, rerr := c.ExecContext(ctx, `ROLLBACK`); err == nil && rerr != nil {
		err = rerr
	}
	return err
}

// querier is a transaction's statements: *sql.Tx, a read connection, or
// either traced.
type querier interface {
	Exec(query string, args ...any) (sql.Result, error)
	Query(query string, args ...any) (*sql.Rows, error)
	QueryRow(query string, args ...any) *sql.Row
}

// traced is q, reporting each statement to db.trace where it is set (tests
// check the query plans of everything Record and Activity run).
func (db *DB) traced(q querier) querier {
	if db.trace == nil {
		return q
	}
	return tracer{q, db.trace}
}

type tracer struct {
	q querier
	f func(query string, args []any)
}

func (t tracer) Exec(query string, args ...any) (sql.Result, error) {
	t.f(query, args)
	return t.q.Exec(query, args...)
}

func (t tracer) Query(query string, args ...any) (*sql.Rows, error) {
	t.f(query, args)
	return t.q.Query(query, args...)
}

func (t tracer) QueryRow(query string, args ...any) *sql.Row {
	t.f(query, args)
	return t.q.QueryRow(query, args...)
}

type connQuerier struct{ c *sql.Conn }

func (q connQuerier) Exec(query string, args ...any) (sql.Result, error) {
	return q.c.ExecContext(context.Background(), query, args...)
}

func (q connQuerier) Query(query string, args ...any) (*sql.Rows, error) {
	return q.c.QueryContext(context.Background(), query, args...)
}

func (q connQuerier) QueryRow(query string, args ...any) *sql.Row {
	return q.c.QueryRowContext(context.Background(), query, args...)
}

// classify turns SQLite failures into errors a person can act on.
func (db *DB) classify(err error, what string) error {
	return sqlitex.Names{What: "usage history", Path: db.path, BusyTimeout: BusyTimeout,
		IfCorrupt: "move it away (a new one is started)"}.Classify(err, what)
}
