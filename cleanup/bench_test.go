package cleanup

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mlc-lab/mlc/monitor"
	"github.com/mlc-lab/mlc/monitor/history"
)

// Sizes of BenchmarkPlanWeek: a week of 5-minute samples of 200 containers.
const (
	weekContainers = 200
	weekSamples    = 7 * 24 * 12 // 2016
	weekStep       = 5 * time.Minute
	weekGPUs       = 8
)

// BenchmarkPlanWeek times what `mlc cleanup` does after the engine has
// answered (issue target: under 1 s per plan): read the usage history's
// activity and warnings, convert them into the planner's Input, and plan
// over 200 containers. The history is a week of 5-minute samples of those
// containers, recorded through history.Record in setup (untimed; tens of
// seconds), so it runs only with MLC_BENCH_WEEK=1 (bench/cleanup.sh).
//
// Sub-benchmarks: run (Activity + Warnings + conversion + MakePlan) and
// makeplan (MakePlan alone, on the Input of the first).
func BenchmarkPlanWeek(b *testing.B) {
	if os.Getenv("MLC_BENCH_WEEK") == "" {
		b.Skip("set MLC_BENCH_WEEK=1 to build a week of history and time a plan over it (bench/cleanup.sh)")
	}
	w := newWeek()
	path := filepath.Join(b.TempDir(), "history.db")
	db, err := history.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()

	start := time.Now()
	busy := history.Busy{CPUPercent: 5, GPUPercent: 5, NetBytes: 1 << 20}
	perDay := ""
	day := start
	for j := range weekSamples {
		if err := db.Record(w.sample(j), busy, 30*24*time.Hour); err != nil {
			b.Fatalf("sample %d: %v", j, err)
		}
		if (j+1)%(weekSamples/7) == 0 {
			perDay += fmt.Sprintf(" %.1f", float64(time.Since(day).Microseconds())/1000/(weekSamples/7))
			day = time.Now()
		}
	}
	for _, wr := range w.warnings {
		if err := db.AddWarning(wr.id, wr.w, WarningKeep); err != nil {
			b.Fatal(err)
		}
	}
	setup := time.Since(start)
	b.Logf("setup: %d samples of %d containers recorded in %.1f s (%.1f ms a sample); DB %s",
		weekSamples, weekContainers, setup.Seconds(), float64(setup.Milliseconds())/weekSamples, diskSize(path))
	b.Logf("setup: ms a sample by day recorded:%s", perDay)

	// The Input Gather would build from the engine: once, untimed.
	base := Input{Now: w.now, Containers: w.containers, Images: w.images,
		GPUsTotal: weekGPUs, GPUsAllocated: weekGPUs / 2}
	rules := weekRules()

	// gather is the history part of Gather: Activity and Warnings converted.
	gather := func() Input {
		in := base
		in.Activity, in.Warned = map[string]Activity{}, map[string][]Warning{}
		act, err := db.Activity()
		if err != nil {
			b.Fatal(err)
		}
		for id, a := range act {
			in.Activity[id] = Activity{FirstSeen: a.FirstSeen, LastSeen: a.LastSeen, LastBusy: a.LastBusy,
				Samples: a.Samples, SinceBusy: a.SinceBusy}
		}
		ws, err := db.Warnings()
		if err != nil {
			b.Fatal(err)
		}
		for id, list := range ws {
			for _, wr := range list {
				in.Warned[id] = append(in.Warned[id], Warning{Level: wr.Level, IdleSince: wr.IdleSince, At: wr.At})
			}
		}
		return in
	}
	in := gather()
	p := MakePlan(in, rules)
	kinds := map[string]int{}
	for _, a := range p.Actions {
		kinds[a.Action]++
	}
	b.Logf("plan: %d actions %v, %d skipped; %d containers with activity, %d with warnings",
		len(p.Actions), kinds, len(p.Skipped), len(in.Activity), len(in.Warned))
	if kinds[KindWarn] == 0 || kinds[KindStop] == 0 || kinds[KindRemove] == 0 {
		b.Fatalf("the synthetic week should plan warns, stops and removes: %v", kinds)
	}

	b.Run("run", func(b *testing.B) {
		b.ReportAllocs()
		var n int
		for b.Loop() {
			n = len(MakePlan(gather(), rules).Actions)
		}
		b.ReportMetric(float64(n), "actions")
	})
	b.Run("makeplan", func(b *testing.B) {
		b.ReportAllocs()
		var n int
		for b.Loop() {
			n = len(MakePlan(in, rules).Actions)
		}
		b.ReportMetric(float64(n), "actions")
	})
}

// weekRules are the policy defaults, with stopped containers removed after
// 3 days and images older than 90 days removed.
func weekRules() Rules {
	removeAfter, imageAge := 3*24*time.Hour, 90*24*time.Hour
	return Rules{IdleCPUPercent: 5, IdleGPUPercent: 5, IdleNetBytes: 1 << 20, MinSamples: 3,
		MaxSampleAge: 15 * time.Minute, Grace: time.Hour, WarnAt: []float64{0.8, 0.95},
		KeepAliveMax: 24 * time.Hour, StopTimeout: 30, RemoveStoppedAfter: &removeAfter,
		ImageMaxAge: &imageAge, ConfigSource: "bench"}
}

// week is the synthetic server: 200 containers of 20 users, by i%10:
//
//	0-3  running, idle all week, idle_timeout 24h: stop where warned at 95 %,
//	     else warn at 95 % (a quarter warned at 80 % already)
//	4    running, last busy 2.5 days ago, idle_timeout 72h: warn at 80 %
//	5-6  running, busy on and off and in the latest sample (5: with a GPU)
//	7    running, last busy a day ago, idle_timeout 168h: nothing to do
//	8    stopped: 4 days ago (removed) or a day ago (kept)
//	9    never (idle_timeout null), protected, foreign (not in the history)
type week struct {
	now        time.Time // the run: a minute after the latest sample
	first      time.Time // the first sample
	containers []Container
	images     []Image
	warnings   []struct {
		id string
		w  history.Warning
	}
	gpuUUIDs []string
	util     []float64 // per GPU, reused by sample
}

func newWeek() *week {
	w := &week{now: time.Date(2025, 3, 10, 12, 0, 0, 0, time.UTC)}
	last := w.now.Add(-time.Minute)
	w.first = last.Add(-(weekSamples - 1) * weekStep)
	started := w.first.Add(-time.Hour)
	hours := func(h int) *time.Duration { d := time.Duration(h) * time.Hour; return &d }
	for g := range weekGPUs {
		w.gpuUUIDs = append(w.gpuUUIDs, fmt.Sprintf("GPU-%08x-0000-0000-0000-000000000000", g))
	}
	w.util = make([]float64, weekGPUs)
	for i := range weekContainers {
		user := fmt.Sprintf("user%02d", i%20)
		c := Container{ID: fmt.Sprintf("%064x", i+1), Managed: true, User: user, Name: fmt.Sprintf("c%03d", i),
			State: "running", Created: started.Add(-time.Minute), StartedAt: started,
			ImageID: fmt.Sprintf("sha256:%064x", i%5+1), IdleSource: "group staff"}
		c.DockerName = "mlc-" + user + "-" + c.Name
		switch i % 10 {
		case 0, 1, 2, 3:
			c.IdleTimeout = hours(24)
			switch (i / 10) % 4 {
			case 0:
				w.warn(c.ID, 80, started)
				w.warn(c.ID, 95, started)
			case 1:
				w.warn(c.ID, 80, started)
			}
		case 4:
			c.IdleTimeout = hours(72)
		case 5:
			c.IdleTimeout, c.GPUs = hours(24), 1
		case 6:
			c.IdleTimeout = hours(24)
		case 7:
			c.IdleTimeout = hours(168)
		case 8:
			c.State = "exited"
			c.FinishedAt = w.now.Add(-24 * time.Hour)
			if (i/10)%2 == 0 {
				c.FinishedAt = w.now.Add(-96 * time.Hour)
			}
		case 9:
			switch (i / 10) % 3 {
			case 0:
				c.IdleSource = "user " + user
			case 1:
				c.IdleTimeout, c.Protected = hours(24), "label mlc.protected"
			case 2:
				c.Managed, c.Name, c.User, c.DockerName = false, "", "", fmt.Sprintf("foreign-%03d", i)
			}
		}
		w.containers = append(w.containers, c)
	}
	for k := range 10 {
		im := Image{ID: fmt.Sprintf("sha256:%064x", k+1), Created: w.now.Add(-time.Duration(k*20) * 24 * time.Hour)}
		if k%3 == 2 {
			im.Dangling = true
		} else {
			im.Tags = []string{fmt.Sprintf("lab/image%d:latest", k)}
		}
		w.images = append(w.images, im)
	}
	return w
}

func (w *week) warn(id string, level int, idleSince time.Time) {
	w.warnings = append(w.warnings, struct {
		id string
		w  history.Warning
	}{id, history.Warning{Level: level, IdleSince: idleSince, At: w.now.Add(-time.Duration(100-level) * time.Hour)}})
}

// busyAt is whether container i is busy in sample j.
func (w *week) busyAt(i, j int) bool {
	t := w.first.Add(time.Duration(j) * weekStep)
	ago := w.now.Sub(t)
	switch i % 10 {
	case 4:
		return ago >= 60*time.Hour && j%24 < 6
	case 5, 6:
		return j >= weekSamples-2 || (j+i)%36 < 12
	case 7:
		return ago >= 24*time.Hour && j%48 < 12
	}
	return false
}

// sample is sample j as the monitor would take it: every managed container,
// the GPUs and the per-user totals.
func (w *week) sample(j int) monitor.Sample {
	t := w.first.Add(time.Duration(j) * weekStep)
	s := monitor.Sample{Time: t, Window: weekStep}
	clear(w.util)
	users := map[string]*monitor.UserTotals{}
	for i, c := range w.containers {
		if !c.Managed {
			continue
		}
		cs := monitor.ContainerStats{Name: c.Name, User: c.User, ID: c.ID, DockerName: c.DockerName, State: "running",
			MemoryLimitBytes: 64 << 30, StartedAt: c.StartedAt}
		if !c.FinishedAt.IsZero() && !t.Before(c.FinishedAt) {
			cs.State, cs.StartedAt = "exited", time.Time{}
		}
		running := cs.State == "running"
		if running {
			cs.Pids, cs.MemoryBytes = 12, 2<<30
			cs.CPUPercent = 0.4
			// Cumulative counters since the start: a trickle.
			cs.NetRxBytes, cs.NetTxBytes = uint64(j)*4096, uint64(j)*1024
			if w.busyAt(i, j) {
				cs.CPUPercent = 180
			}
		}
		if c.GPUs > 0 {
			g := (i / 10) % weekGPUs
			mem := uint64(4 << 30)
			cs.GPUs, cs.GPUUUIDs, cs.GPUMemoryBytes = []int{g}, []string{w.gpuUUIDs[g]}, &mem
			if running && w.busyAt(i, j) {
				u := 85.0
				w.util[g] += u
				cs.GPUUtilPercent = &u
				cs.GPUProcesses = []monitor.GPUProcess{{GPU: g, GPUUUID: w.gpuUUIDs[g], PID: 1000 + i, Kind: "compute",
					MemoryBytes: mem, UtilPercent: &u, Owner: monitor.OwnerMLC, ContainerID: c.ID, UID: 2000 + i%20}}
			}
		}
		s.Containers = append(s.Containers, cs)
		u := users[c.User]
		if u == nil {
			u = &monitor.UserTotals{User: c.User}
			users[c.User] = u
		}
		u.Containers++
		if running {
			u.Running++
			u.CPUPercent += cs.CPUPercent
			u.MemoryBytes += cs.MemoryBytes
			u.GPUs += len(cs.GPUs)
		}
	}
	for g := range weekGPUs {
		u := min(w.util[g], 100)
		s.GPUs = append(s.GPUs, monitor.GPUStats{Index: g, UUID: w.gpuUUIDs[g], Name: "NVIDIA A100-SXM4-80GB",
			UtilPercent: &u, MemoryUsedBytes: 8 << 30, MemoryTotalBytes: 80 << 30})
	}
	for k := range 20 {
		if u := users[fmt.Sprintf("user%02d", k)]; u != nil {
			s.Users = append(s.Users, *u)
		}
	}
	return s
}

// diskSize describes the database's files on disk.
func diskSize(path string) string {
	var total int64
	out := ""
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		if st, err := os.Stat(p); err == nil {
			total += st.Size()
			out += fmt.Sprintf(" %s %.1f MiB", filepath.Base(p), float64(st.Size())/(1<<20))
		}
	}
	return fmt.Sprintf("%.1f MiB on disk (%s)", float64(total)/(1<<20), out[1:])
}
