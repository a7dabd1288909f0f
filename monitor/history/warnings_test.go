package history

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/mlc-lab/mlc/monitor"
)

func TestWarnings(t *testing.T) {
	db, err := Open(filepath.Join(t.TempDir(), "h.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	t0 := time.UnixMilli(1_700_000_000_000)
	for _, w := range []struct {
		id string
		w  Warning
	}{
		{"a", Warning{Level: 80, IdleSince: t0, At: t0.Add(time.Hour)}},
		{"a", Warning{Level: 95, IdleSince: t0, At: t0.Add(2 * time.Hour)}},
		{"a", Warning{Level: 95, IdleSince: t0, At: t0.Add(3 * time.Hour)}}, // the same again: replaced
		{"b", Warning{Level: 80, IdleSince: t0, At: t0.Add(40 * 24 * time.Hour)}},
	} {
		if err := db.AddWarning(w.id, w.w, 30*24*time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	ws, err := db.Warnings()
	if err != nil {
		t.Fatal(err)
	}
	if len(ws["a"]) != 0 || len(ws["b"]) != 1 || ws["b"][0].Level != 80 || !ws["b"][0].IdleSince.Equal(t0) {
		t.Errorf("a's warnings are older than 30 days when b's is given; got %+v", ws)
	}
	if err := db.AddWarning("c", Warning{Level: 80, IdleSince: t0, At: t0}, 0); err != nil {
		t.Fatal(err)
	}
	if ws, _ := db.Warnings(); len(ws["c"]) != 1 || len(ws["b"]) != 1 {
		t.Errorf("%+v", ws)
	}
}

// CPU % of a sample is averaged over its whole interval: a burst timed to
// the sampling (90 % over the collector's short window) on a container that
// used 3 s of CPU in 5 minutes is 1 %, not busy.
func TestCPUAveragedOverInterval(t *testing.T) {
	db := open(t)
	start := at(-time.Hour)
	mk := func(d time.Duration, cpuNs uint64, window float64, started time.Time) monitor.Sample {
		c := running("burst", started, 0, 0)
		c.CPUPercent, c.CPUTotalNanos = window, cpuNs
		return monitor.Sample{Time: at(d), Containers: []monitor.ContainerStats{c}}
	}
	b := Busy{CPUPercent: 5, GPUPercent: 5}
	record(t, db, mk(0, 1e9, 90, start), b, 0)
	record(t, db, mk(5*time.Minute, 4e9, 90, start), b, 0)
	record(t, db, mk(10*time.Minute, 34e9, 0, start), b, 0) // 30 s in 5 minutes: 10 %, busy
	got := column(t, db, `SELECT CAST(cpu_percent * 1000 AS INTEGER) FROM containers ORDER BY sample_id`)
	if len(got) != 3 || got[0] != 90000 || got[1] != 1000 || got[2] != 10000 {
		t.Errorf("cpu %% x1000 per sample: %v; want the window's 90 first, then the interval averages 1 and 10", got)
	}
	busy := column(t, db, `SELECT busy FROM containers ORDER BY sample_id`)
	if busy[1] != 0 || busy[2] != 1 {
		t.Errorf("busy flags %v", busy)
	}
	// A restart begins the counters again: the window figure stands.
	record(t, db, mk(15*time.Minute, 1e8, 50, at(14*time.Minute)), b, 0)
	if got := column(t, db, `SELECT CAST(cpu_percent AS INTEGER) FROM containers ORDER BY sample_id`); got[3] != 50 {
		t.Errorf("after a restart: %v", got)
	}
}
