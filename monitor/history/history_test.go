package history

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mlc-lab/mlc/errs"
	"github.com/mlc-lab/mlc/monitor"
)

var t0 = time.Date(2024, 3, 1, 9, 0, 0, 0, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }

func f(v float64) *float64 { return &v }
func u(v uint64) *uint64   { return &v }

func open(t *testing.T) *DB {
	t.Helper()
	db, err := Open(filepath.Join(t.TempDir(), "state", "history.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func record(t *testing.T, db *DB, s monitor.Sample, b Busy, retention time.Duration) {
	t.Helper()
	if err := db.Record(s, b, retention); err != nil {
		t.Fatal(err)
	}
}

// column reads one int64 column, in time order.
func column(t *testing.T, db *DB, query string, args ...any) []int64 {
	t.Helper()
	rows, err := db.db.Query(query, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []int64
	for rows.Next() {
		var v int64
		if err := rows.Scan(&v); err != nil {
			t.Fatal(err)
		}
		out = append(out, v)
	}
	return out
}

func count(t *testing.T, db *DB, table string) int {
	t.Helper()
	return int(column(t, db, `SELECT COUNT(*) FROM `+table)[0])
}

func minutes(ms []int64) []time.Duration {
	out := make([]time.Duration, len(ms))
	for i, v := range ms {
		out[i] = time.Duration(v) * time.Millisecond
	}
	return out
}

func TestIntervalsAndMaxGap(t *testing.T) {
	db := open(t)
	for _, d := range []time.Duration{0, 5 * time.Minute, 10 * time.Minute, 3 * time.Hour, 3*time.Hour + 5*time.Minute} {
		record(t, db, monitor.Sample{Time: at(d)}, Busy{}, 0)
	}
	// Recorded late by another mlc: it splits its successor's interval.
	record(t, db, monitor.Sample{Time: at(3*time.Hour + 2*time.Minute)}, Busy{}, 0)
	got := fmt.Sprint(minutes(column(t, db, `SELECT interval_ms FROM samples ORDER BY time_ms`)))
	want := fmt.Sprint([]time.Duration{0, 5 * time.Minute, 5 * time.Minute, DefaultMaxGap, 2 * time.Minute, 3 * time.Minute})
	if got != want {
		t.Errorf("intervals %s, want %s", got, want)
	}

	db2 := open(t)
	db2.MaxGap = time.Hour
	record(t, db2, monitor.Sample{Time: at(0)}, Busy{}, 0)
	record(t, db2, monitor.Sample{Time: at(40 * time.Minute)}, Busy{}, 0)
	record(t, db2, monitor.Sample{Time: at(3 * time.Hour)}, Busy{}, 0)
	got = fmt.Sprint(minutes(column(t, db2, `SELECT interval_ms FROM samples ORDER BY time_ms`)))
	if want := fmt.Sprint([]time.Duration{0, 40 * time.Minute, time.Hour}); got != want {
		t.Errorf("MaxGap 1h: intervals %s, want %s", got, want)
	}
}

func running(id string, started time.Time, rx, tx uint64) monitor.ContainerStats {
	return monitor.ContainerStats{ID: id, Name: id, User: "alice", State: "running", StartedAt: started, NetRxBytes: rx, NetTxBytes: tx}
}

func TestNetDeltas(t *testing.T) {
	db := open(t)
	started := at(-time.Hour)
	restarted := at(7 * time.Minute)
	steps := []struct {
		d  time.Duration
		cs []monitor.ContainerStats
	}{
		// First sample: no interval, no traffic counted.
		{0, []monitor.ContainerStats{running("c1", started, 1000, 500)}},
		{5 * time.Minute, []monitor.ContainerStats{running("c1", started, 3000, 900)}},
		// c1 restarted after the previous sample: its counters are all new
		// traffic. c2 is first seen but started long ago: 0. c3 started
		// after the previous sample: all of its counters.
		{10 * time.Minute, []monitor.ContainerStats{
			running("c1", restarted, 100, 50),
			running("c2", started, 7000, 7000),
			running("c3", at(8*time.Minute), 40, 30),
		}},
		// c1's counters went down with the same start (reset): 0. c2 stopped: 0.
		{15 * time.Minute, []monitor.ContainerStats{
			running("c1", restarted, 50, 60),
			{ID: "c2", Name: "c2", User: "alice", State: "exited", StartedAt: started},
			running("c3", at(8*time.Minute), 45, 30),
		}},
		// From the reset counters on. c2 runs again (same start as the
		// counters kept before it stopped).
		{20 * time.Minute, []monitor.ContainerStats{
			running("c1", restarted, 150, 160),
			running("c2", started, 7100, 7001),
		}},
	}
	for _, s := range steps {
		record(t, db, monitor.Sample{Time: at(s.d), Containers: s.cs}, Busy{}, 0)
	}
	rows, err := db.db.Query(`SELECT s.time_ms, c.container_id, c.net_rx_bytes, c.net_tx_bytes
		FROM containers c JOIN samples s ON s.id = c.sample_id ORDER BY s.time_ms, c.container_id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []string
	for rows.Next() {
		var ms, rx, tx int64
		var id string
		if err := rows.Scan(&ms, &id, &rx, &tx); err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%v %s %d/%d", time.UnixMilli(ms).Sub(t0), id, rx, tx))
	}
	want := []string{
		"0s c1 0/0",
		"5m0s c1 2000/400",
		"10m0s c1 100/50", "10m0s c2 0/0", "10m0s c3 40/30",
		"15m0s c1 0/0", "15m0s c2 0/0", "15m0s c3 5/0",
		"20m0s c1 100/100", "20m0s c2 100/1",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("deltas:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestBusyFlags(t *testing.T) {
	db := open(t)
	b := Busy{CPUPercent: 10, GPUPercent: 20, NetBytes: 1000}
	gpus := []monitor.GPUStats{
		{Index: 0, UUID: "GPU-0", UtilPercent: f(30)},
		{Index: 1, UUID: "GPU-1", UtilPercent: f(10)},
		{Index: 2, UUID: "GPU-2"}, // utilisation unknown
	}
	mk := func(id string, cpu float64, rx uint64) monitor.ContainerStats {
		c := running(id, at(-time.Hour), rx, 0)
		c.CPUPercent = cpu
		return c
	}
	sample := func(d time.Duration, rx uint64) monitor.Sample {
		cpuBusy := mk("cpu", 15, 0)
		gpuBusy := mk("gpu", 1, 0)
		gpuBusy.GPUs, gpuBusy.GPUUUIDs = []int{0}, []string{"GPU-0"}
		gpuBusy.GPUUtilPercent = f(25)
		gpuBusy.GPUProcesses = []monitor.GPUProcess{{GPU: 0, GPUUUID: "GPU-0", PID: 10, UtilPercent: f(25), Owner: monitor.OwnerMLC}}
		netBusy := mk("net", 1, rx)
		idle := mk("idle", 5, rx/1000)
		idle.GPUs, idle.GPUUUIDs = []int{1, 2}, []string{"GPU-1", "GPU-2"}
		stopped := mk("stopped", 50, 0)
		stopped.State = "exited"
		return monitor.Sample{Time: at(d), GPUs: gpus, Containers: []monitor.ContainerStats{cpuBusy, gpuBusy, netBusy, idle, stopped}}
	}
	record(t, db, sample(0, 0), b, 0)
	record(t, db, sample(5*time.Minute, 5000), b, 0)
	// Network ignored.
	record(t, db, sample(10*time.Minute, 10000), Busy{CPUPercent: 10, GPUPercent: 20}, 0)

	rows, err := db.db.Query(`SELECT s.time_ms, c.container_id, c.busy FROM containers c JOIN samples s ON s.id = c.sample_id
		ORDER BY s.time_ms, c.container_id`)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var ms int64
		var id string
		var busy bool
		if err := rows.Scan(&ms, &id, &busy); err != nil {
			t.Fatal(err)
		}
		if busy {
			got = append(got, fmt.Sprintf("%v:%s", time.UnixMilli(ms).Sub(t0), id))
		}
	}
	rows.Close()
	want := "0s:cpu 0s:gpu 5m0s:cpu 5m0s:gpu 5m0s:net 10m0s:cpu 10m0s:gpu"
	if g := strings.Join(got, " "); g != want {
		t.Errorf("busy containers %q, want %q", g, want)
	}

	// Per GPU: "gpu" on GPU-0 busy (25 >= 20); "idle" on GPU-1 not busy and
	// its own utilisation 0 (no process there, the device measured); on
	// GPU-2 unknown. Devices: GPU-0 busy, GPU-1 not, GPU-2 unknown.
	type flag struct {
		util, busy any
	}
	read := func(q string) map[string]flag {
		rows, err := db.db.Query(q)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		m := map[string]flag{}
		for rows.Next() {
			var k string
			var fl flag
			if err := rows.Scan(&k, &fl.util, &fl.busy); err != nil {
				t.Fatal(err)
			}
			m[k] = fl
		}
		return m
	}
	cg := read(`SELECT container_id || '/' || gpu_uuid, util_percent, busy FROM container_gpus WHERE sample_id = 1`)
	if want := map[string]flag{"gpu/GPU-0": {25.0, int64(1)}, "idle/GPU-1": {0.0, int64(0)}, "idle/GPU-2": {nil, nil}}; fmt.Sprint(cg) != fmt.Sprint(want) {
		t.Errorf("container GPUs %v, want %v", cg, want)
	}
	dev := read(`SELECT gpu_uuid, util_percent, busy FROM gpus WHERE sample_id = 1`)
	if want := map[string]flag{"GPU-0": {30.0, int64(1)}, "GPU-1": {10.0, int64(0)}, "GPU-2": {nil, nil}}; fmt.Sprint(dev) != fmt.Sprint(want) {
		t.Errorf("devices %v, want %v", dev, want)
	}
}

func TestRetention(t *testing.T) {
	db := open(t)
	mk := func(d time.Duration, id string) monitor.Sample {
		c := running(id, at(-time.Hour), 0, 0)
		c.GPUs, c.GPUUUIDs = []int{0}, []string{"GPU-0"}
		return monitor.Sample{
			Time:         at(d),
			Containers:   []monitor.ContainerStats{c},
			GPUs:         []monitor.GPUStats{{Index: 0, UUID: "GPU-0"}},
			Unattributed: []monitor.GPUProcess{{GPU: 0, GPUUUID: "GPU-0", PID: 1, Owner: monitor.OwnerHost}},
			Users:        []monitor.UserTotals{{User: "alice", Containers: 1}},
		}
	}
	for h := range 48 {
		id := "old"
		if h >= 30 {
			id = "new"
		}
		record(t, db, mk(time.Duration(h)*time.Hour, id), Busy{}, 24*time.Hour)
	}
	// The last sample is at 47h: samples from 23h on stay.
	if got := column(t, db, `SELECT MIN(time_ms) FROM samples`)[0]; got != at(23*time.Hour).UnixMilli() {
		t.Errorf("oldest sample %v, want 23h", time.UnixMilli(got).Sub(t0))
	}
	for _, table := range []string{"samples", "containers", "container_gpus", "gpus", "unattributed", "users"} {
		if n := count(t, db, table); n != 25 {
			t.Errorf("%s: %d rows, want 25", table, n)
		}
	}
	if n := count(t, db, `net_counters WHERE container_id = 'old'`); n != 1 {
		t.Errorf("old's counters gone too early")
	}
	record(t, db, mk(60*time.Hour, "new"), Busy{}, 24*time.Hour)
	if n := count(t, db, `net_counters WHERE container_id = 'old'`); n != 0 {
		t.Errorf("old's counters kept after its last sample left the retention")
	}
	// 36h..47h and 60h stay; retention 0 keeps everything.
	record(t, db, mk(1000*time.Hour, "new"), Busy{}, 0)
	if n := count(t, db, "samples"); n != 14 {
		t.Errorf("retention 0 deleted: %d samples", n)
	}
}

// reportDB records an hour of samples every 15 minutes (MaxGap 1h, so the
// hours are exact): alice runs "a1" with GPU-0 (her process at 80%) and
// GPU-1 (no process, device at 0%), 200% CPU, and a stopped "a2"; bob runs
// a CPU-only "b1" at 50% from 30 minutes on. GPU-2 has no utilisation (MIG)
// and a host process on it.
func reportDB(t *testing.T) *DB {
	db := open(t)
	db.MaxGap = time.Hour
	b := Busy{CPUPercent: 10, GPUPercent: 20}
	for i := range 5 {
		d := time.Duration(i) * 15 * time.Minute
		a1 := running("a1", at(-time.Hour), 0, 0)
		a1.CPUPercent = 200
		a1.MemoryBytes = 1 << 30
		if i == 2 {
			a1.MemoryBytes = 4 << 30
		}
		a1.GPUs, a1.GPUUUIDs = []int{0, 1}, []string{"GPU-0", "GPU-1"}
		a1.GPUUtilPercent, a1.GPUMemoryBytes = f(80), u(1<<30)
		a1.GPUProcesses = []monitor.GPUProcess{{GPU: 0, GPUUUID: "GPU-0", PID: 100, UtilPercent: f(80), Owner: monitor.OwnerMLC}}
		a2 := monitor.ContainerStats{ID: "a2", Name: "a2", User: "alice", State: "exited", MemoryBytes: 0}
		s := monitor.Sample{
			Time:       at(d),
			Containers: []monitor.ContainerStats{a1, a2},
			GPUs: []monitor.GPUStats{
				{Index: 0, UUID: "GPU-0", UtilPercent: f(90)},
				{Index: 1, UUID: "GPU-1", UtilPercent: f(0)},
				{Index: 2, UUID: "GPU-2", MIG: true},
			},
			Unattributed: []monitor.GPUProcess{{GPU: 2, GPUUUID: "GPU-2", PID: 7, Owner: monitor.OwnerHost, MemoryBytes: 1 << 20, Command: "python"}},
		}
		if i >= 2 {
			b1 := running("b1", at(-time.Hour), 0, 0)
			b1.User, b1.CPUPercent, b1.MemoryBytes = "bob", 50, 512<<20
			s.Containers = append(s.Containers, b1)
		}
		record(t, db, s, b, 0)
	}
	return db
}

func TestReport(t *testing.T) {
	db := reportDB(t)
	r, err := db.Report(at(0), at(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	eff := 0.5
	busy0, busy1 := 100.0, 0.0
	want := Report{
		Since: at(0), Until: at(time.Hour), Samples: 5, SampledHours: 1,
		Users: []UserUsage{
			{User: "alice", GPUHoursAllocated: 2, GPUHoursBusy: 1, GPUHoursIdle: 1, Efficiency: &eff,
				CPUHours: 2, PeakMemoryBytes: 4 << 30, Containers: 2, Samples: 5},
			// bob's first sample stands for the 15 minutes before it.
			{User: "bob", CPUHours: 0.5 * 0.75, PeakMemoryBytes: 512 << 20, Containers: 1, Samples: 3},
		},
		GPUs: []GPUUsage{
			{Index: 0, UUID: "GPU-0", BusyPercent: &busy0, AllocatedPercent: 100},
			{Index: 1, UUID: "GPU-1", BusyPercent: &busy1, AllocatedPercent: 100},
			{Index: 2, UUID: "GPU-2", UnattributedGPUHours: 1},
		},
	}
	gj, _ := json.Marshal(r)
	wj, _ := json.Marshal(want)
	if string(gj) != string(wj) {
		t.Errorf("report\n%s\nwant\n%s", gj, wj)
	}
	for _, key := range []string{`"efficiency":null`, `"busy_percent":null`, `"gpu_hours_allocated":2`, `"sampled_hours":1`, `"unattributed_gpu_hours":1`} {
		if !strings.Contains(string(gj), key) {
			t.Errorf("JSON lacks %s: %s", key, gj)
		}
	}

	// A part of the period: the samples at 15m and 30m.
	r, err = db.Report(at(15*time.Minute), at(30*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if r.Samples != 2 || r.SampledHours != 0.5 || len(r.Users) != 2 || r.Users[0].GPUHoursAllocated != 1 || r.Users[1].CPUHours != 0.125 {
		t.Errorf("report of [15m, 30m]: %+v", r)
	}
	// Nothing in it.
	r, err = db.Report(at(-48*time.Hour), at(-24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if j, _ := json.Marshal(r); !strings.Contains(string(j), `"samples":0,"sampled_hours":0,"users":[],"gpus":[]`) {
		t.Errorf("empty report: %s", j)
	}
}

func TestUnknownUtilisation(t *testing.T) {
	db := open(t)
	for i := range 3 {
		c := running("c", at(-time.Hour), 0, 0)
		c.GPUs, c.GPUUUIDs = []int{0}, []string{"GPU-fake-0"}
		// Fake GPUs: no NVML, no figures at all.
		record(t, db, monitor.Sample{
			Time: at(time.Duration(i) * 5 * time.Minute), GPUNote: "NVML not available",
			Containers: []monitor.ContainerStats{c},
			GPUs:       []monitor.GPUStats{{Index: 0, UUID: "GPU-fake-0"}},
		}, Busy{CPUPercent: 10, GPUPercent: 20}, 0)
	}
	r, err := db.Report(at(0), at(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Users) != 1 || r.Users[0].Efficiency != nil || r.Users[0].GPUHoursAllocated == 0 || r.Users[0].GPUHoursBusy != 0 {
		t.Errorf("users %+v: want efficiency null with hours allocated", r.Users)
	}
	if len(r.GPUs) != 1 || r.GPUs[0].BusyPercent != nil || r.GPUs[0].AllocatedPercent != 100 {
		t.Errorf("gpus %+v: want busy null, allocated 100", r.GPUs)
	}
	if n := count(t, db, `container_gpus WHERE util_percent IS NULL AND busy IS NULL`); n != 3 {
		t.Errorf("unknown utilisation stored as %d NULL rows, want 3", n)
	}
}

func TestActivity(t *testing.T) {
	db := open(t)
	b := Busy{CPUPercent: 10, GPUPercent: 20}
	cpu := []float64{50, 0, 50, 0, 0}
	for i, p := range cpu {
		c1 := running("id1", at(-time.Hour), 0, 0)
		c1.Name, c1.CPUPercent = "train", p
		cs := []monitor.ContainerStats{c1}
		if i >= 2 {
			c2 := running("id2", at(-time.Hour), 0, 0)
			c2.Name = "notebook"
			cs = append(cs, c2)
		}
		record(t, db, monitor.Sample{Time: at(time.Duration(i) * 5 * time.Minute), Containers: cs}, b, 0)
	}
	a, err := db.Activity()
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != 2 {
		t.Fatalf("activity of %d containers, want 2", len(a))
	}
	if g := a["id1"]; !g.FirstSeen.Equal(at(0)) || !g.LastBusy.Equal(at(10*time.Minute)) || !g.LastSeen.Equal(at(20*time.Minute)) ||
		g.Samples != 5 || g.Name != "train" || g.User != "alice" {
		t.Errorf("id1: %+v", g)
	}
	if g := a["id2"]; !g.FirstSeen.Equal(at(10*time.Minute)) || !g.LastBusy.IsZero() || g.Samples != 3 || g.Name != "notebook" {
		t.Errorf("id2: %+v", g)
	}
}

func TestCSV(t *testing.T) {
	r, err := reportDB(t).Report(at(0), at(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := r.WriteCSV(&buf); err != nil {
		t.Fatal(err)
	}
	recs, err := csv.NewReader(&buf).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1+2+3 {
		t.Fatalf("%d rows, want header, 2 users, 3 GPUs:\n%v", len(recs), recs)
	}
	if strings.Join(recs[0], ",") != strings.Join(CSVHeader, ",") || recs[0][0] != "kind" {
		t.Errorf("header %v", recs[0])
	}
	rows := map[string]map[string]string{}
	for _, rec := range recs[1:] {
		m := map[string]string{}
		for i, h := range recs[0] {
			m[h] = rec[i]
		}
		rows[m["kind"]+":"+m["user"]+m["gpu_uuid"]] = m
	}
	checks := []struct{ row, col, want string }{
		{"user:alice", "gpu_hours_allocated", "2"},
		{"user:alice", "gpu_hours_busy", "1"},
		{"user:alice", "gpu_hours_idle", "1"},
		{"user:alice", "efficiency", "0.5"},
		{"user:alice", "cpu_hours", "2"},
		{"user:alice", "peak_memory_bytes", "4294967296"},
		{"user:alice", "containers", "2"},
		{"user:alice", "samples", "5"},
		{"user:alice", "gpu_uuid", ""},
		{"user:bob", "efficiency", ""},
		{"user:bob", "cpu_hours", "0.375"},
		{"user:bob", "gpu_hours_allocated", "0"},
		{"gpu:GPU-0", "gpu_index", "0"},
		{"gpu:GPU-0", "busy_percent", "100"},
		{"gpu:GPU-1", "busy_percent", "0"},
		{"gpu:GPU-1", "allocated_percent", "100"},
		{"gpu:GPU-2", "gpu_index", "2"},
		{"gpu:GPU-2", "busy_percent", ""},
		{"gpu:GPU-2", "allocated_percent", "0"},
		{"gpu:GPU-2", "unattributed_gpu_hours", "1"},
		{"gpu:GPU-2", "user", ""},
	}
	for _, c := range checks {
		row, ok := rows[c.row]
		if !ok {
			t.Errorf("no row %s", c.row)
			continue
		}
		if row[c.col] != c.want {
			t.Errorf("%s %s = %q, want %q", c.row, c.col, row[c.col], c.want)
		}
	}
}

func TestTable(t *testing.T) {
	r, err := reportDB(t).Report(at(0), at(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := r.WriteTable(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	var lines [][]string
	for _, l := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		lines = append(lines, strings.Fields(l))
	}
	want := [][]string{
		strings.Fields("Usage 2024-03-01 09:00 to 2024-03-01 10:00: 5 samples, 1.0 hours sampled"),
		nil,
		strings.Fields("USER CONTAINERS SAMPLES GPU-HOURS BUSY IDLE EFFICIENCY CPU-HOURS PEAK-MEMORY"),
		strings.Fields("alice 2 5 2.0 1.0 1.0 50% 2.0 4.295GB"),
		strings.Fields("bob 1 3 0.0 0.0 0.0 - 0.4 536.9MB"),
		nil,
		strings.Fields("GPU UUID BUSY ALLOCATED UNATTRIBUTED-HOURS"),
		strings.Fields("0 GPU-0 100% 100% 0.0"),
		strings.Fields("1 GPU-1 0% 100% 0.0"),
		strings.Fields("2 GPU-2 - 0% 1.0"),
	}
	if fmt.Sprint(lines) != fmt.Sprint(want) {
		t.Errorf("table:\n%s\nwant (by fields):\n%v", out, want)
	}
	// Columns line up: each section's rows start their columns where the header does.
	ls := strings.Split(out, "\n")
	if strings.Index(ls[2], "CONTAINERS") != strings.Index(ls[3], "2 ") {
		t.Errorf("USER section not aligned:\n%s", out)
	}
}

func TestFileModes(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "history.db")
	db, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	record(t, db, monitor.Sample{Time: at(0)}, Busy{}, 0)
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", p, st.Mode().Perm())
		}
	}
	db.Close()

	// Wider files left behind are tightened.
	for _, p := range []string{path + "-wal", path + "-shm"} {
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		if err := os.Chmod(p, 0o664); err != nil {
			t.Fatal(err)
		}
	}
	db, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	record(t, db, monitor.Sample{Time: at(time.Minute)}, Busy{}, 0)
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v after reopening, want 0600", p, st.Mode().Perm())
		}
	}
	if n := count(t, db, "samples"); n != 2 {
		t.Errorf("%d samples after reopening, want 2", n)
	}
}

func TestSchemaVersion(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "history.db")
	db, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if v := column(t, db, `PRAGMA user_version`)[0]; v != int64(len(migrations)) {
		t.Errorf("user_version %d, want %d", v, len(migrations))
	}
	if _, err := db.db.Exec(`PRAGMA user_version = 99`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := Open(path); !errs.Is(err, errs.State) || !strings.Contains(err.Error(), "newer") {
		t.Errorf("opening a newer schema: %v", err)
	}
	if err := os.WriteFile(path, []byte(strings.Repeat("not a database ", 100)), 0o600); err != nil {
		t.Fatal(err)
	}
	os.Remove(path + "-wal")
	os.Remove(path + "-shm")
	if _, err := Open(path); !errs.Is(err, errs.State) {
		t.Errorf("opening garbage: %v", err)
	}
}

// Two handles on one file (cron's and serve's), 8 goroutines recording at
// once: nothing is lost, and the intervals still tile the time sampled.
func TestConcurrentRecord(t *testing.T) {
	path := filepath.Join(t.TempDir(), "history.db")
	// Both open the new file at once: one creates the schema, the other
	// waits for it.
	var dbs [2]*DB
	var opened sync.WaitGroup
	for i := range dbs {
		opened.Go(func() {
			db, err := Open(path)
			if err != nil {
				t.Error(err)
				return
			}
			t.Cleanup(func() { db.Close() })
			dbs[i] = db
		})
	}
	opened.Wait()
	if t.Failed() {
		t.FailNow()
	}
	const workers, each = 8, 10
	var wg sync.WaitGroup
	errc := make(chan error, workers*each)
	for g := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			db := dbs[g%2]
			for i := range each {
				n := i*workers + g
				c := running("c", at(-time.Hour), uint64(n)*100, 0)
				c.CPUPercent = 50
				s := monitor.Sample{Time: at(time.Duration(n) * time.Second), Containers: []monitor.ContainerStats{c},
					Users: []monitor.UserTotals{{User: "alice", Containers: 1, Running: 1}}}
				if err := db.Record(s, Busy{CPUPercent: 10}, 0); err != nil {
					errc <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	db := dbs[0]
	if n := count(t, db, "samples"); n != workers*each {
		t.Errorf("%d samples, want %d", n, workers*each)
	}
	if n := count(t, db, "containers"); n != workers*each {
		t.Errorf("%d container rows, want %d", n, workers*each)
	}
	if sum := column(t, db, `SELECT SUM(interval_ms) FROM samples`)[0]; sum != (workers*each-1)*1000 {
		t.Errorf("intervals sum to %dms, want %dms", sum, (workers*each-1)*1000)
	}
	a, err := dbs[1].Activity()
	if err != nil {
		t.Fatal(err)
	}
	if a["c"].Samples != workers*each {
		t.Errorf("activity %+v", a["c"])
	}
}
