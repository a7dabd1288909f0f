package monitor

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mlc-lab/mlc/engine"
	"github.com/mlc-lab/mlc/errs"
	"github.com/mlc-lab/mlc/gpualloc"
	"github.com/mlc-lab/mlc/monitor/cgroups"
	"github.com/mlc-lab/mlc/monitor/gpus"
)

// Procfs is where a container's figures are read: cgroups.Host in
// production, a fixture tree in tests.
type Procfs interface {
	Read(pid int, wantID string) (cgroups.Stats, error)
	NetDev(pid int) (rx, tx uint64, err error)
	PidContainerIDs(pid int) ([]string, error)
	MemTotal() (uint64, error)
	// ContainerProcs finds every container's init process in one scan of
	// /proc; StartTime and UpperDir say when it started and where its
	// writable layer is. A container not found there is asked of the engine.
	ContainerProcs(ids []string) (map[string]cgroups.Proc, error)
	StartTime(ticks uint64) (time.Time, error)
	UpperDir(pid int) (string, error)
}

// GPUSource gives the GPUs' figures: a gpus.Reader (NVML, initialised once).
type GPUSource interface {
	Read() gpus.Snapshot
}

// Collector measures containers. One Collector keeps each container's last
// CPU reading, so that a long-running monitor computes CPU % from the
// previous sample instead of waiting.
type Collector struct {
	Engine engine.Engine
	Proc   Procfs
	GPUs   GPUSource // nil: no GPU figures
	// Inventory maps GPU UUIDs to indices when NVML gives no devices (fake
	// GPUs); NVML's devices win.
	Inventory []gpualloc.GPU
	// ProcInfo gives a host process's command name and real uid (reading
	// /proc when nil).
	ProcInfo func(pid int) (comm string, uid int)
	// Now is the clock (time.Now when nil).
	Now func() time.Time

	mu   sync.Mutex
	prev map[string]reading // by container id
}

// Options choose what Collect measures.
type Options struct {
	// User limits the sample to that user's containers; "" is everyone's
	// (admins only: the caller decides).
	User string
	// Names limits it further to these mlc names (of User); a name that is
	// not there is an error of kind NotFound.
	Names []string
	// Window is the span CPU % is measured over when there is no previous
	// reading of the container; 0 means 200ms.
	Window time.Duration
	// Reuse allows CPU % from the collector's previous reading (a monitor);
	// otherwise every Collect measures over Window.
	Reuse bool
	// Disk measures each container's writable layer, within DiskTimeout
	// (0: 2s) for all of them together.
	Disk        bool
	DiskTimeout time.Duration
	// Unattributed fills Sample.Unattributed (admins only).
	Unattributed bool
	// Stopped includes containers that are not running (their figures 0).
	Stopped bool
}

// reading is one container's cumulative CPU time at a moment.
type reading struct {
	at      time.Time
	cpuNs   uint64
	started time.Time
}

type target struct {
	c     engine.Container
	rt    engine.Runtime
	stats *ContainerStats
	cg    cgroups.Stats
	at    time.Time
}

// parallel is how many containers are inspected or walked at once.
const parallel = 8

func (co *Collector) now() time.Time {
	if co.Now != nil {
		return co.Now()
	}
	return time.Now()
}

// Collect takes one sample.
func (co *Collector) Collect(ctx context.Context, o Options) (Sample, error) {
	list, err := co.Engine.List(ctx, o.User)
	if err != nil {
		return Sample{}, err
	}
	list, err = pick(list, o.Names)
	if err != nil {
		return Sample{}, err
	}
	window := o.Window
	if window <= 0 {
		window = 200 * time.Millisecond
	}
	var targets []*target
	for _, c := range list {
		if !c.Running() && !o.Stopped {
			continue
		}
		targets = append(targets, &target{c: c, stats: newStats(c)})
	}
	// Each running container's init process, from one scan of /proc; the
	// engine is asked (one inspect each) only for the rest.
	var running []string
	for _, t := range targets {
		if t.c.Running() {
			running = append(running, t.c.ID)
		}
	}
	procs, _ := co.Proc.ContainerProcs(running)
	forEach(targets, func(t *target) {
		if p, ok := procs[t.c.ID]; ok && t.c.Running() {
			started, err := co.Proc.StartTime(p.Start)
			if err == nil {
				t.rt = engine.Runtime{Pid: p.PID, StartedAt: started}
				if o.Disk {
					t.rt.UpperDir, _ = co.Proc.UpperDir(p.PID)
				}
				t.stats.InitPID, t.stats.StartedAt = p.PID, started
				if !o.Disk || t.rt.UpperDir != "" {
					return
				}
			}
		}
		rt, err := co.Engine.Runtime(ctx, t.c.ID)
		if err != nil {
			t.stats.Error = short(err)
			return
		}
		t.rt = rt
		t.stats.InitPID, t.stats.StartedAt = rt.Pid, rt.StartedAt
	})
	// The GPUs are read while the CPU window runs.
	var snap gpus.Snapshot
	var known map[string]string
	gpuDone := make(chan struct{})
	go func() {
		defer close(gpuDone)
		if co.GPUs == nil {
			snap = gpus.Snapshot{Note: "no GPU reader"}
			return
		}
		snap = co.GPUs.Read()
		if snap.Available && hasProcesses(snap) {
			if all, err := co.Engine.ListAll(ctx); err == nil {
				known = map[string]string{}
				for _, c := range all {
					known[c.ID] = OwnerForeign
					if c.Managed() {
						known[c.ID] = OwnerMLC
					}
				}
			}
		}
	}()
	var diskDone chan struct{}
	if o.Disk {
		diskDone = make(chan struct{})
		go func() {
			defer close(diskDone)
			co.measureDisks(ctx, targets, o.DiskTimeout)
		}()
	}

	co.readAll(targets)
	if co.needWindow(targets, o.Reuse) {
		first := map[*target]reading{}
		for _, t := range targets {
			if t.stats.Error == "" && t.rt.Pid > 0 {
				first[t] = reading{at: t.at, cpuNs: t.cg.CPUUsageNs, started: t.rt.StartedAt}
			}
		}
		select {
		case <-ctx.Done():
			// The GPU read and the layer walks (on ctx too) end first.
			<-gpuDone
			if diskDone != nil {
				<-diskDone
			}
			return Sample{}, ctx.Err()
		case <-time.After(window):
		}
		co.readAll(targets)
		for t, r := range first {
			if t.stats.Error == "" {
				t.stats.CPUPercent = capped(cpuPercent(r, t.at, t.cg.CPUUsageNs), t.cg.CPULimit)
			}
		}
	} else {
		co.mu.Lock()
		for _, t := range targets {
			if r, ok := co.prev[t.c.ID]; ok && t.stats.Error == "" && r.started.Equal(t.rt.StartedAt) {
				t.stats.CPUPercent = capped(cpuPercent(r, t.at, t.cg.CPUUsageNs), t.cg.CPULimit)
			}
		}
		co.mu.Unlock()
	}
	co.remember(targets)
	<-gpuDone
	if diskDone != nil {
		<-diskDone
	}
	if err := ctx.Err(); err != nil {
		return Sample{}, err
	}

	s := Sample{Time: co.now(), Window: window, Containers: []ContainerStats{}, GPUs: []GPUStats{}, Unattributed: []GPUProcess{}}
	index := co.gpuIndex(snap)
	byContainer, unattributed := gpus.Attribute(snap, co.idsOf, known)
	for _, t := range targets {
		co.gpuFigures(t.stats, snap, index, byContainer[t.c.ID])
		s.Containers = append(s.Containers, *t.stats)
	}
	if !snap.Available {
		s.GPUNote = snap.Note
	}
	for _, d := range snap.Devices {
		g := GPUStats{Index: d.Index, UUID: d.UUID, Name: d.Name, UtilPercent: d.Util,
			MemoryUsedBytes: d.MemoryUsed, MemoryTotalBytes: d.MemoryTotal, MIG: d.MIG, Note: d.Note}
		s.GPUs = append(s.GPUs, g)
	}
	if len(snap.Devices) == 0 {
		for _, g := range co.Inventory {
			s.GPUs = append(s.GPUs, GPUStats{Index: g.Index, UUID: g.UUID, Name: g.Name,
				MemoryTotalBytes: g.MemoryMiB << 20, Note: "no NVML: figures unknown"})
		}
	}
	if o.Unattributed {
		for _, a := range unattributed {
			s.Unattributed = append(s.Unattributed, co.process(a))
		}
	}
	s.Users = Totals(s.Containers)
	return s, nil
}

// pick keeps the containers named (all when names is empty), in the order
// named; a missing name is NotFound.
func pick(list []engine.Container, names []string) ([]engine.Container, error) {
	sort.SliceStable(list, func(i, j int) bool {
		a, b := list[i].Labels, list[j].Labels
		if a[engine.LabelUser] != b[engine.LabelUser] {
			return a[engine.LabelUser] < b[engine.LabelUser]
		}
		return a[engine.LabelName] < b[engine.LabelName]
	})
	if len(names) == 0 {
		return list, nil
	}
	var out []engine.Container
	var missing []string
	for i, n := range names {
		if slices.Contains(names[:i], n) {
			continue // named twice: measured once
		}
		found := false
		for _, c := range list {
			if c.Labels[engine.LabelName] == n {
				out = append(out, c)
				found = true
				break
			}
		}
		if !found {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		return nil, errs.New(errs.NotFound, "no container named %s (see mlc list)", strings.Join(missing, ", "))
	}
	return out, nil
}

func newStats(c engine.Container) *ContainerStats {
	st := &ContainerStats{Name: c.Labels[engine.LabelName], User: c.Labels[engine.LabelUser], ID: c.ID,
		DockerName: c.Name, State: c.State, GPUs: []int{}, GPUUUIDs: []string{}, GPUProcesses: []GPUProcess{}}
	for _, u := range strings.Split(c.Labels[engine.LabelGPUs], ",") {
		if u = strings.TrimSpace(u); u != "" {
			st.GPUUUIDs = append(st.GPUUUIDs, u)
		}
	}
	return st
}

// forEach runs fn on every target, parallel at most at a time.
func forEach(ts []*target, fn func(*target)) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, parallel)
	for _, t := range ts {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			fn(t)
		}()
	}
	wg.Wait()
}

// readAll reads every running target's cgroup and network counters: file
// reads, a few milliseconds for dozens of containers, spread over the CPUs.
func (co *Collector) readAll(ts []*target) {
	total, _ := co.Proc.MemTotal()
	forEach(ts, func(t *target) {
		if t.rt.Pid <= 0 || t.stats.Error != "" {
			return
		}
		cg, err := co.Proc.Read(t.rt.Pid, t.c.ID)
		t.at = co.now()
		if err != nil {
			// Stopped while being measured, most likely.
			t.stats.Error = "not measured: " + short(err)
			return
		}
		t.cg = cg
		st := t.stats
		st.MemoryBytes, st.MemoryLimitBytes, st.Pids = cg.MemoryUsage, cg.MemoryLimit, cg.Pids
		st.CPUTotalNanos = cg.CPUUsageNs
		st.BlockReadBytes, st.BlockWriteBytes = cg.BlockReadBytes, cg.BlockWriteBytes
		if st.MemoryLimitBytes == 0 {
			st.MemoryLimitBytes = total
		}
		if st.MemoryLimitBytes > 0 {
			st.MemoryPercent = float64(st.MemoryBytes) / float64(st.MemoryLimitBytes) * 100
		}
		if rx, tx, err := co.Proc.NetDev(t.rt.Pid); err == nil {
			st.NetRxBytes, st.NetTxBytes = rx, tx
		}
	})
}

// needWindow is whether CPU % must be measured over a window now: always
// unless reuse is allowed and every running target has a previous reading.
func (co *Collector) needWindow(ts []*target, reuse bool) bool {
	if !slices.ContainsFunc(ts, func(t *target) bool { return t.rt.Pid > 0 && t.stats.Error == "" }) {
		return false // nothing running to measure
	}
	if !reuse {
		return true
	}
	co.mu.Lock()
	defer co.mu.Unlock()
	for _, t := range ts {
		if t.rt.Pid <= 0 || t.stats.Error != "" {
			continue
		}
		if r, ok := co.prev[t.c.ID]; !ok || !r.started.Equal(t.rt.StartedAt) {
			return true
		}
	}
	return false
}

func (co *Collector) remember(ts []*target) {
	co.mu.Lock()
	defer co.mu.Unlock()
	next := map[string]reading{}
	for _, t := range ts {
		if t.rt.Pid > 0 && t.stats.Error == "" {
			next[t.c.ID] = reading{at: t.at, cpuNs: t.cg.CPUUsageNs, started: t.rt.StartedAt}
		}
	}
	co.prev = next
}

// cpuPercent is the CPU used between two readings as a percentage of one
// CPU (docker's scale: 200 = two CPUs busy).
func cpuPercent(r reading, at time.Time, cpuNs uint64) float64 {
	dt := at.Sub(r.at)
	if dt <= 0 || cpuNs < r.cpuNs {
		return 0
	}
	return float64(cpuNs-r.cpuNs) / float64(dt.Nanoseconds()) * 100
}

// capped is a CPU % no higher than the container's quota allows. Over a
// short window the kernel's quota periods make a container at its limit read
// above it (two busy threads under --cpus 1 run 50 ms of every 100 ms on two
// CPUs: a 200 ms window can catch three such bursts, 150 %); over any longer
// span it cannot use more, so more is the window's artefact, not use.
func capped(pct, limitCPUs float64) float64 {
	if limitCPUs > 0 && pct > limitCPUs*100 {
		return limitCPUs * 100
	}
	return pct
}

// gpuIndex maps UUIDs to indices: NVML's devices, else the inventory.
func (co *Collector) gpuIndex(snap gpus.Snapshot) map[string]int {
	m := map[string]int{}
	for _, g := range co.Inventory {
		m[g.UUID] = g.Index
	}
	for _, d := range snap.Devices {
		if d.UUID != "" {
			m[d.UUID] = d.Index
		}
	}
	return m
}

func hasProcesses(s gpus.Snapshot) bool {
	for _, d := range s.Devices {
		if len(d.Processes) > 0 {
			return true
		}
	}
	return false
}

func (co *Collector) idsOf(pid int) []string {
	ids, _ := co.Proc.PidContainerIDs(pid)
	return ids
}

// gpuFigures fills a container's GPU columns: its allocated GPUs, and the
// memory and utilisation of its own processes.
func (co *Collector) gpuFigures(st *ContainerStats, snap gpus.Snapshot, index map[string]int, own []gpus.Attributed) {
	for _, u := range st.GPUUUIDs {
		if i, ok := index[u]; ok {
			st.GPUs = append(st.GPUs, i)
		} else {
			st.GPUs = append(st.GPUs, -1)
		}
	}
	for _, a := range own {
		st.GPUProcesses = append(st.GPUProcesses, co.process(a))
	}
	if !snap.Available {
		return
	}
	mem, util := gpus.Sum(own)
	st.GPUMemoryBytes = &mem
	if len(st.GPUUUIDs) == 0 {
		return
	}
	// Utilisation is known when no allocated device is in MIG mode (NVML
	// gives no per-process figure there) and NVML returned samples; a GPU
	// with none of the container's processes is 0 % busy for it.
	for _, d := range snap.Devices {
		for _, u := range st.GPUUUIDs {
			if d.UUID == u && d.MIG {
				return
			}
		}
	}
	total := 0.0
	if util != nil {
		total = *util
	} else if len(own) > 0 {
		// Processes, but no samples: NVML's sampling buffer had nothing
		// for them (idle), or it does not support per-process figures.
		if !samplesSupported(snap, st.GPUUUIDs) {
			return
		}
	}
	avg := total / float64(len(st.GPUUUIDs))
	st.GPUUtilPercent = &avg
}

// samplesSupported is whether NVML can give per-process utilisation on all
// of these devices (their notes say when it cannot).
func samplesSupported(snap gpus.Snapshot, uuids []string) bool {
	for _, d := range snap.Devices {
		for _, u := range uuids {
			if d.UUID == u && strings.Contains(d.Note, "utilisation") {
				return false
			}
		}
	}
	return true
}

func (co *Collector) process(a gpus.Attributed) GPUProcess {
	p := GPUProcess{GPU: a.GPU, GPUUUID: a.GPUUUID, PID: a.PID, Kind: a.Kind, MemoryBytes: a.MemoryBytes,
		UtilPercent: a.SMUtil, Owner: a.Owner, ContainerID: a.ContainerID, UID: -1}
	info := co.ProcInfo
	if info == nil {
		info = procInfo
	}
	p.Command, p.UID = info(a.PID)
	return p
}

// procInfo reads a host process's command name and real uid from /proc.
func procInfo(pid int) (string, int) {
	comm, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	uid := -1
	if b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[0] == "Uid:" {
				if n, err := strconv.Atoi(f[1]); err == nil {
					uid = n
				}
			}
		}
	}
	return strings.TrimSpace(string(comm)), uid
}

// Totals sums containers per user, in user order.
func Totals(cs []ContainerStats) []UserTotals {
	by := map[string]*UserTotals{}
	var order []string
	for _, c := range cs {
		u := by[c.User]
		if u == nil {
			u = &UserTotals{User: c.User}
			by[c.User] = u
			order = append(order, c.User)
		}
		u.Containers++
		if c.InitPID > 0 {
			u.Running++
		}
		u.CPUPercent += c.CPUPercent
		u.MemoryBytes += c.MemoryBytes
		u.GPUs += len(c.GPUUUIDs)
		if c.GPUMemoryBytes != nil {
			u.GPUMemoryBytes += *c.GPUMemoryBytes
		}
	}
	sort.Strings(order)
	out := make([]UserTotals, 0, len(order))
	for _, u := range order {
		out = append(out, *by[u])
	}
	return out
}

// short is an error's message without the engine's long preamble.
func short(err error) string {
	s := err.Error()
	if len(s) > 160 {
		s = s[:160] + "..."
	}
	return fmt.Sprint(s)
}
