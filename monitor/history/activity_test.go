package history

import (
	"database/sql"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/mlc-lab/mlc/monitor"
)

// scanActivity is Activity computed from every row of containers, in the
// order they were taken, as schema version 1 computed it (and the fields
// added since the same way): the reference the activity table must match.
func scanActivity(q interface {
	Query(string, ...any) (*sql.Rows, error)
}) (map[string]Activity, error) {
	out := map[string]Activity{}
	rows, err := q.Query(`SELECT c.container_id, c.name, c.user, s.time_ms, c.busy, c.running, c.started_ms
		FROM containers c JOIN samples s ON s.id = c.sample_id ORDER BY s.time_ms, s.id, c.rowid`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var id, name, user string
		var ms int64
		var busy, running bool
		var started sql.NullInt64
		if err := rows.Scan(&id, &name, &user, &ms, &busy, &running, &started); err != nil {
			return nil, err
		}
		t := time.UnixMilli(ms)
		a, ok := out[id]
		if !ok {
			a.FirstSeen = t
		}
		a.Name, a.User, a.LastSeen = name, user, t
		a.Started = time.Time{}
		if started.Valid {
			a.Started = time.UnixMilli(started.Int64)
		}
		switch {
		case busy:
			a.LastBusy, a.SinceBusy = t, 0
		case a.LastBusy.IsZero() || t.After(a.LastBusy):
			a.SinceBusy++
		}
		if running {
			a.LastRunning = t
		}
		a.Samples++
		out[id] = a
	}
	return out, rows.Err()
}

// checkActivity fails t where Activity differs from the full scan.
func checkActivity(t *testing.T, db *DB, when string) {
	t.Helper()
	got, err := db.Activity()
	if err != nil {
		t.Fatal(err)
	}
	want, err := scanActivity(db.db)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s: activity\n%v\nwant (from every row)\n%v", when, got, want)
	}
}

// randomSamples records n samples at random steps, some out of order, of
// containers that come and go, rename, change user, stop, restart and turn
// busy, with retention, checking the activity table after each.
func randomSamples(t *testing.T, db *DB, seed uint64, n int, retention time.Duration) {
	r := rand.New(rand.NewPCG(seed, 1))
	ids := []string{"a", "b", "c", "d", "e", ""}
	started := map[string]time.Time{}
	var last time.Duration
	for i := range n {
		d := last + time.Duration(r.IntN(10)+1)*time.Minute
		if r.IntN(6) == 0 {
			d = last - time.Duration(r.IntN(5))*time.Minute // out of order, or the same time
		} else {
			last = d
		}
		var cs []monitor.ContainerStats
		for j, id := range ids {
			// Each container is present in stretches.
			if (i/(j+3)+j)%3 == 0 {
				continue
			}
			switch r.IntN(8) {
			case 0:
				started[id] = at(d - time.Minute) // restarted
			case 1:
				started[id] = time.Time{} // unknown
			}
			c := running(id, started[id], 0, 0)
			c.Name = fmt.Sprintf("%s-%d", id, r.IntN(3))
			c.User = []string{"alice", "bob"}[r.IntN(2)]
			if r.IntN(6) == 0 {
				c.CPUPercent = 50
			}
			if r.IntN(5) == 0 {
				c.State = "exited"
			}
			cs = append(cs, c)
			if r.IntN(20) == 0 {
				cs = append(cs, c) // twice in one sample
			}
		}
		record(t, db, monitor.Sample{Time: at(d), Containers: cs}, Busy{CPUPercent: 10}, retention)
		checkActivity(t, db, fmt.Sprintf("sample %d at %v", i, d))
	}
}

func TestActivityTableMatchesRows(t *testing.T) {
	for _, few := range []int64{1000, 0} {
		t.Run(fmt.Sprintf("fewRows=%d", few), func(t *testing.T) {
			defer func(v int64) { fewRows = v }(fewRows)
			fewRows = few
			for seed := range uint64(3) {
				randomSamples(t, open(t), seed, 150, 3*time.Hour)
			}
			// No retention: nothing pruned.
			randomSamples(t, open(t), 9, 60, 0)
		})
	}
}

func TestActivityPruned(t *testing.T) {
	db := open(t)
	b := Busy{CPUPercent: 10}
	c := func(id string, cpu float64) monitor.ContainerStats {
		x := running(id, at(-time.Hour), 0, 0)
		x.CPUPercent = cpu
		return x
	}
	stopped := func(id string) monitor.ContainerStats {
		x := c(id, 0)
		x.State = "exited"
		return x
	}
	restarted := c("both", 50)
	restarted.StartedAt = at(3*time.Hour - time.Minute)
	// gone: busy at 0h, last seen 1h. busy: busy at 1h only. both: busy at
	// 0h and 3h (restarted just before). later: from 2h on. stopped:
	// running at 0h and 1h only.
	samples := [][]monitor.ContainerStats{
		{c("gone", 50), c("busy", 0), c("both", 50), c("stopped", 0)},
		{c("gone", 0), c("busy", 50), c("both", 0), c("stopped", 0)},
		{c("busy", 0), c("both", 0), c("later", 0), stopped("stopped")},
		{c("busy", 0), restarted, c("later", 0), stopped("stopped")},
	}
	for h, cs := range samples {
		record(t, db, monitor.Sample{Time: at(time.Duration(h) * time.Hour), Containers: cs}, b, 0)
	}
	checkActivity(t, db, "before pruning")
	a, err := db.Activity()
	if err != nil {
		t.Fatal(err)
	}
	if g := a["busy"]; g.SinceBusy != 2 {
		t.Errorf("busy before pruning: %+v", g)
	}
	if g := a["stopped"]; g.SinceBusy != 4 || !g.LastRunning.Equal(at(time.Hour)) {
		t.Errorf("stopped before pruning: %+v", g)
	}
	// A count too high for gone: no row of it is left to find, so its rows
	// are counted (none) rather than trusting the table.
	if _, err := db.db.Exec(`UPDATE activity SET samples = samples + 5 WHERE container_id = 'gone'`); err != nil {
		t.Fatal(err)
	}
	// Retention 1.5h at 3.5h: the samples at 0h and 1h go.
	record(t, db, monitor.Sample{Time: at(3*time.Hour + 30*time.Minute), Containers: []monitor.ContainerStats{c("later", 0)}}, b, 90*time.Minute)
	checkActivity(t, db, "after pruning")
	a, err = db.Activity()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := a["gone"]; ok {
		t.Errorf("gone kept: %+v", a["gone"])
	}
	// Its busy sample gone, busy's samples since are all those left.
	if g := a["busy"]; !g.FirstSeen.Equal(at(2*time.Hour)) || !g.LastBusy.IsZero() || g.Samples != 2 || g.SinceBusy != 2 ||
		!g.LastRunning.Equal(at(3*time.Hour)) {
		t.Errorf("busy: %+v", g)
	}
	if g := a["both"]; !g.FirstSeen.Equal(at(2*time.Hour)) || !g.LastBusy.Equal(at(3*time.Hour)) || g.Samples != 2 || g.SinceBusy != 0 ||
		!g.Started.Equal(at(3*time.Hour-time.Minute)) {
		t.Errorf("both: %+v", g)
	}
	if g := a["later"]; !g.FirstSeen.Equal(at(2*time.Hour)) || !g.LastSeen.Equal(at(3*time.Hour+30*time.Minute)) || g.Samples != 3 ||
		g.SinceBusy != 3 || !g.LastRunning.Equal(at(3*time.Hour+30*time.Minute)) || !g.Started.Equal(at(-time.Hour)) {
		t.Errorf("later: %+v", g)
	}
	// Its running samples gone.
	if g := a["stopped"]; g.Samples != 2 || g.SinceBusy != 2 || !g.LastRunning.IsZero() || !g.Started.Equal(at(-time.Hour)) {
		t.Errorf("stopped: %+v", g)
	}
}

// A file of schema version 1 (built with its SQL, rows as its Record wrote
// them) is brought to the current version on Open, its activity table built from the
// rows, and kept from then on.
func TestMigrateV1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "history.db")
	raw, err := sql.Open("sqlite3", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Exec(migrations[0] + `; PRAGMA user_version = 1`); err != nil {
		t.Fatal(err)
	}
	// Sample 3 was recorded out of order (before sample 2 in time), and
	// sample 4 has the time of sample 2: the later id wins the name.
	for _, s := range []struct {
		id, ms int64
	}{{1, 0}, {2, 20}, {3, 10}, {4, 20}, {5, 30}} {
		if _, err := raw.Exec(`INSERT INTO samples (id, time_ms, interval_ms, busy_cpu_pct, busy_gpu_pct, busy_net_bytes)
			VALUES (?, ?, 0, 10, 20, 0)`, s.id, at(time.Duration(s.ms)*time.Minute).UnixMilli()); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		sample         int64
		id, name, user string
		busy           bool
	}{
		{1, "x", "x0", "alice", true}, {1, "y", "y0", "bob", false},
		{2, "x", "x2", "alice", false}, {3, "x", "x3", "alice", true}, {3, "y", "y3", "bob", false},
		{4, "x", "x4", "carol", false}, {5, "y", "y5", "bob", true}, {5, "z", "z5", "bob", false},
	} {
		if _, err := raw.Exec(`INSERT INTO containers (sample_id, container_id, name, user, running, cpu_percent,
			memory_bytes, memory_limit_bytes, pids, net_rx_bytes, net_tx_bytes, n_gpus, gpu_uuids, busy)
			VALUES (?, ?, ?, ?, 1, 0, 0, 0, 0, 0, 0, 0, '', ?)`, c.sample, c.id, c.name, c.user, c.busy); err != nil {
			t.Fatal(err)
		}
	}
	raw.Close()

	db, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if v := column(t, db, `PRAGMA user_version`)[0]; v != int64(len(migrations)) {
		t.Errorf("user_version %d after upgrading, want %d", v, len(migrations))
	}
	got, err := db.Activity()
	if err != nil {
		t.Fatal(err)
	}
	want, err := scanActivity(db.db) // the rows as they were
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("activity after upgrading\n%v\nwant\n%v", got, want)
	}
	if g := got["x"]; g.Name != "x4" || g.User != "carol" || !g.FirstSeen.Equal(at(0)) || !g.LastBusy.Equal(at(10*time.Minute)) || g.Samples != 4 ||
		g.SinceBusy != 2 || !g.LastRunning.Equal(at(20*time.Minute)) || !g.Started.IsZero() {
		t.Errorf("x: %+v", g)
	}
	if n := count(t, db, `sqlite_master WHERE name IN ('containers_by_id_sample', 'net_counters_by_seen')`); n != 2 {
		t.Errorf("%d of the new indexes, want 2", n)
	}
	// Recording and pruning go on from the built table.
	record(t, db, monitor.Sample{Time: at(40 * time.Minute), Containers: []monitor.ContainerStats{running("y", at(-time.Hour), 0, 0)}},
		Busy{CPUPercent: 10}, 25*time.Minute)
	checkActivity(t, db, "after recording on the upgraded file")
}

// A file of schema version 2 (built with the SQL of versions 1 and 2, rows
// as its Record wrote them, its activity table built by migration 2) is
// brought to version 3 on Open: the new columns of activity built from the
// rows, the start time put in the rows where the network counters were last
// kept, and kept from then on.
func TestMigrateV2(t *testing.T) {
	path := filepath.Join(t.TempDir(), "history.db")
	raw, err := sql.Open("sqlite3", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Exec(migrations[0]); err != nil {
		t.Fatal(err)
	}
	// Sample 4 was recorded out of order (before sample 3 in time).
	for _, s := range []struct {
		id, ms int64
	}{{1, 0}, {2, 10}, {3, 30}, {4, 20}} {
		if _, err := raw.Exec(`INSERT INTO samples (id, time_ms, interval_ms, busy_cpu_pct, busy_gpu_pct, busy_net_bytes)
			VALUES (?, ?, 0, 10, 20, 0)`, s.id, at(time.Duration(s.ms)*time.Minute).UnixMilli()); err != nil {
			t.Fatal(err)
		}
	}
	// x: busy at 0m, running throughout. y: never busy, stopped from 20m.
	// z: busy at 10m, twice in the sample at 20m.
	for _, c := range []struct {
		sample        int64
		id            string
		running, busy bool
	}{
		{1, "x", true, true}, {1, "y", true, false},
		{2, "x", true, false}, {2, "y", true, false}, {2, "z", true, true},
		{3, "x", true, false}, {3, "y", false, false},
		{4, "x", true, false}, {4, "y", false, false}, {4, "z", true, false}, {4, "z", true, false},
	} {
		if _, err := raw.Exec(`INSERT INTO containers (sample_id, container_id, name, user, running, cpu_percent,
			memory_bytes, memory_limit_bytes, pids, net_rx_bytes, net_tx_bytes, n_gpus, gpu_uuids, busy)
			VALUES (?, ?, ?, 'alice', ?, 0, 0, 0, 0, 0, 0, 0, '', ?)`, c.sample, c.id, c.id, c.running, c.busy); err != nil {
			t.Fatal(err)
		}
	}
	// The counters of x and y where they were last running; none of z.
	for _, n := range []struct {
		id            string
		started, seen time.Time
	}{{"x", at(-time.Hour), at(30 * time.Minute)}, {"y", at(-2 * time.Hour), at(10 * time.Minute)}} {
		if _, err := raw.Exec(`INSERT INTO net_counters (container_id, started_ms, rx_bytes, tx_bytes, seen_ms)
			VALUES (?, ?, 0, 0, ?)`, n.id, n.started.UnixMilli(), n.seen.UnixMilli()); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := raw.Exec(migrations[1] + `; PRAGMA user_version = 2`); err != nil {
		t.Fatal(err)
	}
	raw.Close()

	db, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if v := column(t, db, `PRAGMA user_version`)[0]; v != int64(len(migrations)) {
		t.Errorf("user_version %d after upgrading, want %d", v, len(migrations))
	}
	checkActivity(t, db, "after upgrading")
	a, err := db.Activity()
	if err != nil {
		t.Fatal(err)
	}
	if g := a["x"]; g.Samples != 4 || !g.LastBusy.Equal(at(0)) || g.SinceBusy != 3 || !g.LastRunning.Equal(at(30*time.Minute)) ||
		!g.Started.Equal(at(-time.Hour)) {
		t.Errorf("x: %+v", g)
	}
	// y's start time is in its row at 10m, not its latest.
	if g := a["y"]; g.Samples != 4 || !g.LastBusy.IsZero() || g.SinceBusy != 4 || !g.LastRunning.Equal(at(10*time.Minute)) ||
		!g.Started.IsZero() {
		t.Errorf("y: %+v", g)
	}
	if g := a["z"]; g.Samples != 3 || !g.LastBusy.Equal(at(10*time.Minute)) || g.SinceBusy != 2 || !g.LastRunning.Equal(at(20*time.Minute)) ||
		!g.Started.IsZero() {
		t.Errorf("z: %+v", g)
	}
	if got := column(t, db, `SELECT sample_id FROM containers WHERE started_ms IS NOT NULL ORDER BY sample_id`); fmt.Sprint(got) != "[2 3]" {
		t.Errorf("rows given a start time in samples %v, want [2 3]", got)
	}
	// Recording and pruning go on from the built table.
	y := running("y", at(35*time.Minute), 0, 0)
	y.CPUPercent = 50
	record(t, db, monitor.Sample{Time: at(40 * time.Minute), Containers: []monitor.ContainerStats{running("x", at(-time.Hour), 0, 0), y}},
		Busy{CPUPercent: 10}, 25*time.Minute)
	checkActivity(t, db, "after recording on the upgraded file")
	a, err = db.Activity()
	if err != nil {
		t.Fatal(err)
	}
	if g := a["y"]; g.Samples != 3 || !g.LastBusy.Equal(at(40*time.Minute)) || g.SinceBusy != 0 || !g.Started.Equal(at(35*time.Minute)) {
		t.Errorf("y after recording: %+v", g)
	}
}

// SinceBusy counts the samples later than the last busy one, whatever order
// they were recorded in, and across a restart; Started follows the latest
// sample and LastRunning the latest running one.
func TestActivitySinceBusy(t *testing.T) {
	db := open(t)
	b := Busy{CPUPercent: 10}
	c := func(cpu float64, started time.Time, state string) []monitor.ContainerStats {
		x := running("x", started, 0, 0)
		x.CPUPercent, x.State = cpu, state
		return []monitor.ContainerStats{x}
	}
	first, second := at(-time.Hour), at(25*time.Minute)
	steps := []struct {
		d       time.Duration
		cs      []monitor.ContainerStats
		since   int
		busy    time.Duration // -1: never
		run     time.Duration
		started time.Time
	}{
		{0, c(0, first, "running"), 1, -1, 0, first},
		{10 * time.Minute, c(0, first, "running"), 2, -1, 10 * time.Minute, first},
		{30 * time.Minute, c(0, second, "running"), 3, -1, 30 * time.Minute, second},
		// Out of order: busy at 20m, so only 30m is after it.
		{20 * time.Minute, c(50, first, "running"), 1, 20 * time.Minute, 30 * time.Minute, second},
		// Out of order, older than the busy one: not counted.
		{15 * time.Minute, c(0, first, "running"), 1, 20 * time.Minute, 30 * time.Minute, second},
		// The same time as the busy one, not busy: not after it.
		{20 * time.Minute, c(0, first, "running"), 1, 20 * time.Minute, 30 * time.Minute, second},
		// Stopped: counted, not running (busy needs running).
		{40 * time.Minute, c(50, second, "exited"), 2, 20 * time.Minute, 30 * time.Minute, second},
		{50 * time.Minute, c(50, time.Time{}, "running"), 0, 50 * time.Minute, 50 * time.Minute, time.Time{}},
	}
	for i, s := range steps {
		record(t, db, monitor.Sample{Time: at(s.d), Containers: s.cs}, b, 0)
		checkActivity(t, db, fmt.Sprintf("step %d", i))
		a, err := db.Activity()
		if err != nil {
			t.Fatal(err)
		}
		g := a["x"]
		wantBusy := time.Time{}
		if s.busy >= 0 {
			wantBusy = at(s.busy)
		}
		if g.SinceBusy != s.since || !g.LastBusy.Equal(wantBusy) || !g.LastRunning.Equal(at(s.run)) || !g.Started.Equal(s.started) {
			t.Errorf("step %d: %+v, want since %d, busy %v, running %v, started %v", i, g, s.since, wantBusy, at(s.run), s.started)
		}
	}
}

// Every statement Record (pruning included) and Activity run finds its rows
// through an index: none scans a table (containers above all), but Activity
// reading the whole activity table.
func TestQueryPlans(t *testing.T) {
	db := open(t)
	cs := func(n int) []monitor.ContainerStats {
		var out []monitor.ContainerStats
		for i := range n {
			c := running(fmt.Sprintf("c%d", i), at(-time.Hour), uint64(i), 0)
			c.GPUs, c.GPUUUIDs = []int{i % 2}, []string{fmt.Sprintf("GPU-%d", i%2)}
			c.CPUPercent = float64(10 * i)
			out = append(out, c)
		}
		return out
	}
	sample := func(d time.Duration, n int) monitor.Sample {
		return monitor.Sample{
			Time: at(d), Containers: cs(n),
			GPUs:         []monitor.GPUStats{{Index: 0, UUID: "GPU-0", UtilPercent: f(50)}, {Index: 1, UUID: "GPU-1"}},
			Unattributed: []monitor.GPUProcess{{GPU: 1, GPUUUID: "GPU-1", PID: 1, Owner: monitor.OwnerHost}},
			Users:        []monitor.UserTotals{{User: "alice", Containers: n}},
		}
	}
	for i := range 40 {
		record(t, db, sample(time.Duration(i)*time.Minute, 3+i%3), Busy{CPUPercent: 15}, 0)
	}
	// No ANALYZE: mlc never runs it, so SQLite plans without statistics.
	type stmt struct {
		query string
		args  []any
	}
	var seen []stmt
	db.trace = func(q string, args []any) { seen = append(seen, stmt{q, args}) }
	// In order, out of order, pruning a few samples, for each way the first
	// sample left is found.
	record(t, db, sample(45*time.Minute, 5), Busy{CPUPercent: 15}, 40*time.Minute)
	record(t, db, sample(44*time.Minute, 5), Busy{CPUPercent: 15}, 0)
	defer func(v int64) { fewRows = v }(fewRows)
	fewRows = 0
	record(t, db, sample(50*time.Minute, 5), Busy{CPUPercent: 15}, 40*time.Minute)
	if _, err := db.Activity(); err != nil {
		t.Fatal(err)
	}
	db.trace = nil
	checkActivity(t, db, "after the traced samples")

	queries := map[string]bool{}
	for _, s := range seen {
		norm := strings.Join(strings.Fields(s.query), " ")
		if queries[norm] {
			continue
		}
		queries[norm] = true
		rows, err := db.db.Query(`EXPLAIN QUERY PLAN `+s.query, s.args...)
		if err != nil {
			t.Fatalf("%s: %v", norm, err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, unused int
			var detail string
			if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		rows.Close()
		for _, p := range plan {
			// d is pruning's few counts, materialized.
			if strings.HasPrefix(p, "SCAN ") && p != "SCAN d" && !(p == "SCAN activity" && strings.HasSuffix(norm, "FROM activity")) {
				t.Errorf("%s\nscans: %s", norm, strings.Join(plan, "; "))
			}
		}
		if testing.Verbose() {
			t.Logf("%s\n\t%s", norm, strings.Join(plan, "\n\t"))
		}
	}
	for _, want := range []string{"INSERT INTO activity", "UPDATE activity", "DELETE FROM containers", "DELETE FROM net_counters", "FROM net_counters WHERE container_id"} {
		found := false
		for q := range queries {
			found = found || strings.Contains(q, want)
		}
		if !found {
			t.Errorf("no traced statement has %q", want)
		}
	}
}

// benchDB is a history of 20,000 samples of 50 containers (1,000,000
// container rows), written straight into the tables in one transaction, its
// activity table built as the migration builds it.
const benchSamples, benchContainers = 20000, 50

func benchDB(b *testing.B) *DB {
	db, err := Open(filepath.Join(b.TempDir(), "history.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	tx, err := db.db.Begin()
	if err != nil {
		b.Fatal(err)
	}
	ss, err := tx.Prepare(`INSERT INTO samples (id, time_ms, interval_ms, busy_cpu_pct, busy_gpu_pct, busy_net_bytes)
		VALUES (?, ?, 30000, 10, 20, 0)`)
	if err != nil {
		b.Fatal(err)
	}
	cs, err := tx.Prepare(`INSERT INTO containers (sample_id, container_id, name, user, running, cpu_percent,
		memory_bytes, memory_limit_bytes, pids, net_rx_bytes, net_tx_bytes, n_gpus, gpu_uuids, busy)
		VALUES (?, ?, ?, ?, 1, ?, 1000000, 0, 10, 0, 0, 1, 'GPU-0', ?)`)
	if err != nil {
		b.Fatal(err)
	}
	for i := range benchSamples {
		if _, err := ss.Exec(i+1, benchTime(i)); err != nil {
			b.Fatal(err)
		}
		for j := range benchContainers {
			busy := (i+j)%7 == 0
			if _, err := cs.Exec(i+1, benchID(j), benchID(j), "user", 50*btoi(busy), busy); err != nil {
				b.Fatal(err)
			}
		}
	}
	if _, err := tx.Exec(buildActivity); err != nil {
		b.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
	return db
}

func benchTime(i int) int64 { return at(time.Duration(i) * 30 * time.Second).UnixMilli() }
func benchID(j int) string  { return fmt.Sprintf("container-%02d", j) }
func btoi(v bool) float64 {
	if v {
		return 1
	}
	return 0
}

// BenchmarkRecordAndActivity is what `mlc monitor serve` does every 30 s:
// Record a sample of 50 containers (its retention pruning the oldest sample,
// so the history stays at 20,000 samples), then Activity. OldActivityScan
// runs, in Activity's place, the full scan that schema version 1's Activity
// was.
func BenchmarkRecordAndActivity(b *testing.B) {
	db := benchDB(b)
	retention := time.Duration(benchSamples-1) * 30 * time.Second
	next := benchSamples
	sample := func() monitor.Sample {
		s := monitor.Sample{Time: time.UnixMilli(benchTime(next))}
		next++
		for j := range benchContainers {
			c := running(benchID(j), at(-time.Hour), uint64(next*1000), 0)
			c.User, c.CPUPercent = "user", float64((next+j)%7)
			c.GPUs, c.GPUUUIDs = []int{0}, []string{"GPU-0"}
			s.Containers = append(s.Containers, c)
		}
		return s
	}
	busy := Busy{CPUPercent: 5, GPUPercent: 20}
	for _, bm := range []struct {
		name     string
		activity func() (map[string]Activity, error)
	}{
		{"Activity", db.Activity},
		{"OldActivityScan", func() (map[string]Activity, error) { return scanActivity(db.db) }},
	} {
		b.Run(bm.name, func(b *testing.B) {
			for b.Loop() {
				if err := db.Record(sample(), busy, retention); err != nil {
					b.Fatal(err)
				}
				a, err := bm.activity()
				if err != nil {
					b.Fatal(err)
				}
				if len(a) != benchContainers {
					b.Fatalf("activity of %d containers", len(a))
				}
			}
		})
	}
	b.Run("RecordOnly", func(b *testing.B) {
		for b.Loop() {
			if err := db.Record(sample(), busy, retention); err != nil {
				b.Fatal(err)
			}
		}
	})
	var n int
	if err := db.db.QueryRow(`SELECT COUNT(*) FROM samples`).Scan(&n); err != nil || n != benchSamples {
		b.Errorf("%d samples after the benchmark (%v), want %d", n, err, benchSamples)
	}
}

// recountActivity, which pruning falls back on where the table does not
// match the rows, sets every column from the rows.
func TestRecountActivity(t *testing.T) {
	db := open(t)
	randomSamples(t, db, 5, 40, 0)
	if _, err := db.db.Exec(`UPDATE activity SET samples = 1, since_busy = 99, last_busy_ms = NULL,
		last_running_ms = NULL, started_ms = 1, name = '?'`); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"a", "b", "c", "d", "e", "", "none"} {
		if err := recountActivity(db.db, id); err != nil {
			t.Fatal(err)
		}
	}
	checkActivity(t, db, "after recounting")
}
