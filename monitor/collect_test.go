package monitor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mlc-lab/mlc/engine"
	"github.com/mlc-lab/mlc/engine/enginetest"
	"github.com/mlc-lab/mlc/errs"
	"github.com/mlc-lab/mlc/gpualloc"
	"github.com/mlc-lab/mlc/monitor/cgroups"
	"github.com/mlc-lab/mlc/monitor/gpus"
)

// fakeProc is a Procfs whose figures the test sets per pid; each Read of a
// pid advances its CPU time by cpuStep.
type fakeProc struct {
	mu      sync.Mutex
	stats   map[int]cgroups.Stats
	cpuStep map[int]uint64
	net     map[int][2]uint64
	ids     map[int][]string
	reads   int
	procs   map[string]cgroups.Proc // what a scan of /proc finds
	upper   map[int]string
}

func newFakeProc() *fakeProc {
	return &fakeProc{stats: map[int]cgroups.Stats{}, cpuStep: map[int]uint64{}, net: map[int][2]uint64{}, ids: map[int][]string{}}
}

func (f *fakeProc) Read(pid int, wantID string) (cgroups.Stats, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads++
	s, ok := f.stats[pid]
	if !ok {
		return s, errors.New("no such process")
	}
	found := false
	for _, id := range f.ids[pid] {
		found = found || id == wantID
	}
	if !found {
		return s, errors.New("not that container's process")
	}
	s.CPUUsageNs += f.cpuStep[pid]
	f.stats[pid] = s
	return s, nil
}

func (f *fakeProc) NetDev(pid int) (uint64, uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := f.net[pid]
	return n[0], n[1], nil
}

func (f *fakeProc) PidContainerIDs(pid int) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ids[pid], nil
}

func (f *fakeProc) MemTotal() (uint64, error) { return 64 << 30, nil }

func (f *fakeProc) ContainerProcs([]string) (map[string]cgroups.Proc, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.procs, nil
}

func (f *fakeProc) StartTime(ticks uint64) (time.Time, error) { return time.Unix(int64(ticks), 0), nil }

func (f *fakeProc) UpperDir(pid int) (string, error) { return f.upper[pid], nil }

type fakeGPUs struct{ snap gpus.Snapshot }

func (f fakeGPUs) Read() gpus.Snapshot { return f.snap }

// clock advances by step on every call.
type clock struct {
	mu   sync.Mutex
	t    time.Time
	step time.Duration
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(c.step)
	return c.t
}

type rig struct {
	eng  *enginetest.Fake
	proc *fakeProc
	co   *Collector
	ids  map[string]string // by mlc name
	pids map[string]int
}

func managedSpec(user, name string, gpuUUIDs string) engine.Spec {
	return engine.Spec{Name: "mlc-1000-" + user + "-" + name, Image: enginetest.Image, Labels: map[string]string{
		engine.LabelManaged: "true", engine.LabelUser: user, engine.LabelName: name, engine.LabelGPUs: gpuUUIDs}}
}

// newRig makes alice's a1 (GPU 0) and a2 (CPU only, stopped) and bob's b1
// (GPU 1), each running one that runs with its own pid and figures.
func newRig(t *testing.T, snap gpus.Snapshot) *rig {
	t.Helper()
	ctx := context.Background()
	r := &rig{eng: enginetest.New(), proc: newFakeProc(), ids: map[string]string{}, pids: map[string]int{}}
	mk := func(user, name, uuids string, pid int, run bool) {
		id, err := r.eng.Create(ctx, managedSpec(user, name, uuids))
		if err != nil {
			t.Fatal(err)
		}
		if run {
			if err := r.eng.Start(ctx, id); err != nil {
				t.Fatal(err)
			}
		}
		r.eng.SetRuntime(id, pid, "", 4096)
		r.ids[name], r.pids[name] = id, pid
		r.proc.ids[pid] = []string{id}
		r.proc.stats[pid] = cgroups.Stats{Version: 2, MemoryUsage: 1 << 30, MemoryLimit: 4 << 30, Pids: 7,
			BlockReadBytes: 10, BlockWriteBytes: 20}
		r.proc.net[pid] = [2]uint64{1000, 2000}
	}
	mk("alice", "a1", gpualloc.FakeUUID(0), 101, true)
	mk("alice", "a2", "", 102, false)
	mk("bob", "b1", gpualloc.FakeUUID(1), 201, true)
	r.co = &Collector{Engine: r.eng, Proc: r.proc, GPUs: fakeGPUs{snap},
		ProcInfo: func(pid int) (string, int) { return "python", 1000 },
		Now:      (&clock{t: time.Unix(1e9, 0), step: 500 * time.Millisecond}).Now}
	return r
}

func byName(s Sample) map[string]ContainerStats {
	m := map[string]ContainerStats{}
	for _, c := range s.Containers {
		m[c.Name] = c
	}
	return m
}

func ptr[T any](v T) *T { return &v }

func TestCollectOwnContainersOnly(t *testing.T) {
	r := newRig(t, gpus.Snapshot{Note: "no NVIDIA driver (NVML library not found)"})
	r.proc.cpuStep[101] = uint64(250 * time.Millisecond) // per read; reads are 500ms apart: 50 %
	s, err := r.co.Collect(context.Background(), Options{User: "alice", Window: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Containers) != 1 || s.Containers[0].Name != "a1" {
		t.Fatalf("alice sees %+v; want her running a1 only", s.Containers)
	}
	a1 := s.Containers[0]
	if a1.CPUPercent < 49.9 || a1.CPUPercent > 50.1 {
		t.Errorf("cpu %.2f%%, want 50", a1.CPUPercent)
	}
	if a1.MemoryBytes != 1<<30 || a1.MemoryLimitBytes != 4<<30 || a1.MemoryPercent != 25 || a1.Pids != 7 {
		t.Errorf("memory/pids wrong: %+v", a1)
	}
	if a1.NetRxBytes != 1000 || a1.NetTxBytes != 2000 || a1.BlockReadBytes != 10 || a1.BlockWriteBytes != 20 {
		t.Errorf("io wrong: %+v", a1)
	}
	if s.GPUNote == "" || a1.GPUMemoryBytes != nil || a1.GPUUtilPercent != nil {
		t.Errorf("without NVML the GPU figures must be unknown and the note set: %q %v %v", s.GPUNote, a1.GPUMemoryBytes, a1.GPUUtilPercent)
	}
	if len(s.Unattributed) != 0 {
		t.Errorf("unattributed processes shown without asking: %v", s.Unattributed)
	}
	s, err = r.co.Collect(context.Background(), Options{User: "alice", Stopped: true, Window: time.Millisecond})
	if err != nil || len(s.Containers) != 2 {
		t.Fatalf("with stopped: %v %+v", err, s.Containers)
	}
	if a2 := byName(s)["a2"]; a2.InitPID != 0 || a2.CPUPercent != 0 || a2.MemoryBytes != 0 || a2.Error != "" {
		t.Errorf("stopped a2: %+v", a2)
	}
}

func TestCollectNames(t *testing.T) {
	r := newRig(t, gpus.Snapshot{})
	_, err := r.co.Collect(context.Background(), Options{User: "alice", Names: []string{"a1", "b1"}, Window: time.Millisecond})
	if !errs.Is(err, errs.NotFound) || err.Error() != "no container named b1 (see mlc list)" {
		t.Fatalf("another user's name: %v; want NotFound naming b1 only", err)
	}
	s, err := r.co.Collect(context.Background(), Options{User: "alice", Names: []string{"a1"}, Window: time.Millisecond})
	if err != nil || len(s.Containers) != 1 {
		t.Fatalf("%v %+v", err, s.Containers)
	}
	s, err = r.co.Collect(context.Background(), Options{Window: time.Millisecond})
	if err != nil || len(s.Containers) != 2 || s.Containers[0].Name != "a1" || s.Containers[1].Name != "b1" {
		t.Fatalf("everyone's, sorted by user then name: %v %+v", err, s.Containers)
	}
	if len(s.Users) != 2 || s.Users[0].User != "alice" || s.Users[0].Running != 1 || s.Users[1].GPUs != 1 {
		t.Errorf("totals: %+v", s.Users)
	}
}

func TestCollectUnlimitedMemoryAndVanished(t *testing.T) {
	r := newRig(t, gpus.Snapshot{})
	st := r.proc.stats[101]
	st.MemoryLimit = 0
	r.proc.stats[101] = st
	delete(r.proc.stats, 201) // b1 stopped between the engine's answer and the read
	s, err := r.co.Collect(context.Background(), Options{Window: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	m := byName(s)
	if m["a1"].MemoryLimitBytes != 64<<30 {
		t.Errorf("unlimited memory shows %d, want the host's", m["a1"].MemoryLimitBytes)
	}
	if m["b1"].Error == "" {
		t.Errorf("a container that could not be read says nothing: %+v", m["b1"])
	}
}

func TestCollectReusesPreviousReading(t *testing.T) {
	r := newRig(t, gpus.Snapshot{})
	r.proc.cpuStep[101] = uint64(time.Second)
	ctx := context.Background()
	if _, err := r.co.Collect(ctx, Options{User: "alice", Reuse: true, Window: time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	before := r.proc.reads
	s, err := r.co.Collect(ctx, Options{User: "alice", Reuse: true, Window: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if r.proc.reads-before != 1 {
		t.Errorf("%d reads; with a previous reading one is enough", r.proc.reads-before)
	}
	// One CPU-second per read, reads 500ms apart on the clock... but the
	// previous reading was taken several clock steps earlier.
	if c := s.Containers[0].CPUPercent; c <= 0 || c > 200 {
		t.Errorf("cpu from the previous reading: %.1f", c)
	}
}

func TestCollectGPUAttribution(t *testing.T) {
	snap := gpus.Snapshot{Available: true, Devices: []gpus.Device{
		{Index: 0, UUID: gpualloc.FakeUUID(0), Name: "A100", MemoryTotal: 80 << 30, MemoryUsed: 9 << 30, Util: ptr(70.0),
			Processes: []gpus.Process{
				{PID: 1101, Kind: "compute", MemoryBytes: 4 << 30, SMUtil: ptr(60.0)},
				{PID: 1102, Kind: "compute", MemoryBytes: 1 << 30, SMUtil: ptr(5.0)},
				{PID: 5000, Kind: "compute", MemoryBytes: 2 << 30, SMUtil: ptr(5.0)}, // a host process
			}},
		{Index: 1, UUID: gpualloc.FakeUUID(1), Name: "A100", MemoryTotal: 80 << 30, MIG: true,
			Note: "MIG: device and per-process utilisation not available",
			Processes: []gpus.Process{
				{PID: 2101, Kind: "compute", MemoryBytes: 3 << 30, GPUInstance: 1, ComputeInstance: 0},
				{PID: 6000, Kind: "compute", MemoryBytes: 1 << 30}, // a foreign container's
			}},
	}}
	r := newRig(t, snap)
	foreign := r.eng.AddForeign("someone-elses", nil)
	r.proc.ids[1101] = []string{r.ids["a1"]}
	r.proc.ids[1102] = []string{"f" + r.ids["a1"][1:], r.ids["a1"]} // an unknown id first
	r.proc.ids[2101] = []string{r.ids["b1"]}
	r.proc.ids[6000] = []string{foreign}
	s, err := r.co.Collect(context.Background(), Options{Unattributed: true, Window: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	m := byName(s)
	a1, b1 := m["a1"], m["b1"]
	if len(a1.GPUs) != 1 || a1.GPUs[0] != 0 || *a1.GPUMemoryBytes != 5<<30 || *a1.GPUUtilPercent != 65 || len(a1.GPUProcesses) != 2 {
		t.Errorf("a1: gpus %v mem %v util %v procs %v", a1.GPUs, *a1.GPUMemoryBytes, a1.GPUUtilPercent, a1.GPUProcesses)
	}
	if b1.GPUs[0] != 1 || *b1.GPUMemoryBytes != 3<<30 || b1.GPUUtilPercent != nil {
		t.Errorf("b1 on a MIG GPU: memory known, utilisation unknown: %v %v", *b1.GPUMemoryBytes, b1.GPUUtilPercent)
	}
	if len(s.Unattributed) != 2 {
		t.Fatalf("unattributed %+v", s.Unattributed)
	}
	if u := s.Unattributed[0]; u.PID != 5000 || u.Owner != OwnerHost || u.GPU != 0 || u.Command != "python" {
		t.Errorf("host process: %+v", u)
	}
	if u := s.Unattributed[1]; u.PID != 6000 || u.Owner != OwnerForeign || u.ContainerID != foreign {
		t.Errorf("foreign process: %+v", u)
	}
	if len(s.GPUs) != 2 || !s.GPUs[1].MIG || *s.GPUs[0].UtilPercent != 70 {
		t.Errorf("devices: %+v", s.GPUs)
	}
	// Alice asks: her own figures, nobody's processes but hers.
	s, err = r.co.Collect(context.Background(), Options{User: "alice", Window: time.Millisecond})
	if err != nil || len(s.Containers) != 1 || len(s.Unattributed) != 0 || len(s.Containers[0].GPUProcesses) != 2 {
		t.Errorf("alice's view: %v %+v", err, s)
	}
}

func TestCollectFakeInventory(t *testing.T) {
	r := newRig(t, gpus.Snapshot{Note: "no NVIDIA driver (NVML library not found)"})
	r.co.Inventory = gpualloc.Fake(2)
	s, err := r.co.Collect(context.Background(), Options{Window: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if m := byName(s); m["b1"].GPUs[0] != 1 || m["a1"].GPUs[0] != 0 {
		t.Errorf("indices from the inventory: %v %v", m["a1"].GPUs, m["b1"].GPUs)
	}
	if len(s.GPUs) != 2 || s.GPUs[0].UtilPercent != nil {
		t.Errorf("fake GPUs listed with unknown figures: %+v", s.GPUs)
	}
}

func TestLayerBytes(t *testing.T) {
	dir := t.TempDir()
	outside := t.TempDir()
	big := make([]byte, 1<<20)
	for i := range big {
		big[i] = 1
	}
	if err := os.WriteFile(filepath.Join(outside, "secret"), big, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "a", "b"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "a", "b", "f"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(dir, "a", "b", "f"), filepath.Join(dir, "hard")); err != nil {
		t.Fatal(err)
	}
	// Links out of the layer are not followed.
	if err := os.Symlink(outside, filepath.Join(dir, "escape")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../../"+filepath.Base(outside), filepath.Join(dir, "a", "rel")); err != nil {
		t.Fatal(err)
	}
	n, err := LayerBytes(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	// 1 MiB of data counted once (the hard link), plus directories' blocks.
	if n < 1<<20 || n > 1<<20+64<<10 {
		t.Errorf("layer %d bytes; want about 1 MiB", n)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := LayerBytes(ctx, dir); err == nil {
		t.Errorf("a walk out of time reports a size")
	}
}

func TestCollectDisk(t *testing.T) {
	r := newRig(t, gpus.Snapshot{})
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "f"), make([]byte, 8192), 0o644); err != nil {
		t.Fatal(err)
	}
	r.eng.SetRuntime(r.ids["a1"], 101, dir, 0)
	s, err := r.co.Collect(context.Background(), Options{Disk: true, Stopped: true, Window: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	m := byName(s)
	if d := m["a1"].DiskBytes; d == nil || *d < 8192 {
		t.Errorf("a1's upper dir measured: %v %q", d, m["a1"].DiskNote)
	}
	if d := m["a2"].DiskBytes; d == nil || *d != 4096 {
		t.Errorf("a2 without an upper dir asks the engine: %v %q", d, m["a2"].DiskNote)
	}
}

func TestPrintableProcessNames(t *testing.T) {
	for in, want := range map[string]string{"python": "python", "\x1b]0;pwned\x07": "?]0;pwned?", "a\nb\tc": "a?b?c", "bad\xffutf": "bad?utf", "naïve": "naïve"} {
		if got := Printable(in); got != want {
			t.Errorf("Printable(%q) = %q, want %q", in, got, want)
		}
	}
	var b strings.Builder
	if err := WriteUnattributed(&b, []GPUProcess{{PID: 1, Command: "\x1b[2Jx", UID: -1, Owner: OwnerHost}}); err != nil {
		t.Fatal(err)
	}
	if strings.ContainsRune(b.String(), 0x1b) {
		t.Errorf("an escape reached the table: %q", b.String())
	}
}

// A scan of /proc finds running containers' init processes; the engine is
// asked only for those it missed.
func TestCollectFindsInitByScan(t *testing.T) {
	r := newRig(t, gpus.Snapshot{})
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "f"), make([]byte, 8192), 0o644); err != nil {
		t.Fatal(err)
	}
	r.proc.procs = map[string]cgroups.Proc{r.ids["a1"]: {PID: 101, Start: 42}}
	r.proc.upper = map[int]string{101: dir}
	before := len(r.eng.Calls())
	s, err := r.co.Collect(context.Background(), Options{Disk: true, Window: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	var inspected []string
	for _, c := range r.eng.Calls()[before:] {
		if strings.HasPrefix(c, "runtime") {
			inspected = append(inspected, c)
		}
	}
	if len(inspected) != 1 || !strings.HasSuffix(inspected[0], "-b1") {
		t.Errorf("engine inspects: %v; want b1's only", inspected)
	}
	m := byName(s)
	if a1 := m["a1"]; a1.InitPID != 101 || !a1.StartedAt.Equal(time.Unix(42, 0)) || a1.DiskBytes == nil || *a1.DiskBytes < 8192 {
		t.Errorf("a1 from the scan: pid %d started %v disk %v", a1.InitPID, a1.StartedAt, a1.DiskBytes)
	}
	if b1 := m["b1"]; b1.InitPID != 201 || b1.Error != "" {
		t.Errorf("b1, missed by the scan, from the engine: %+v", b1)
	}
}

func TestNotes(t *testing.T) {
	s := Sample{GPUNote: "no NVIDIA driver (NVML library not found)"}
	if n := Notes(s); len(n) != 1 || n[0] != "GPU % and GPU MEM unknown: no NVIDIA driver (NVML library not found)" {
		t.Errorf("%q", n)
	}
	s = Sample{Containers: []ContainerStats{{GPUUUIDs: []string{"u1"}}},
		GPUs: []GPUStats{{Index: 0, UUID: "u0", MIG: true}, {Index: 1, UUID: "u1", MIG: true}}}
	if n := Notes(s); len(n) != 1 || !strings.HasPrefix(n[0], "GPU % unknown on GPU 1: in MIG mode") {
		t.Errorf("only the MIG GPUs the containers use: %q", n)
	}
}

type brokenPipe struct{}

func (brokenPipe) Write([]byte) (int, error) { return 0, errors.New("broken pipe") }

// A watch whose reader went away ends, instead of sampling as root for ever.
func TestWatchEndsWhenNobodyReads(t *testing.T) {
	frames := 0
	done := make(chan error, 1)
	go func() {
		done <- Watch(context.Background(), brokenPipe{}, false, time.Millisecond, func(w io.Writer) error {
			frames++
			_, err := io.WriteString(w, "frame\n")
			return err
		})
	}()
	select {
	case err := <-done:
		if err == nil || frames != 1 {
			t.Errorf("Watch: %v after %d frames; want the write error after one", err, frames)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Watch kept going with nobody reading")
	}
}

// A layer of many files is not walked past the deadline.
func TestLayerBytesDeadline(t *testing.T) {
	dir := t.TempDir()
	for i := 0; i < 5000; i++ {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%05d", i)), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The deadline passes after the walk has begun, inside one directory.
	ctx := &countdown{Context: context.Background(), left: 3}
	if _, err := LayerBytes(ctx, dir); !errors.Is(err, errTooSlow) || ctx.left > 0 {
		t.Errorf("past its deadline: %v", err)
	}
	if ctx.calls > 6 {
		t.Errorf("%d checks after the deadline passed", ctx.calls-3)
	}
	if n, err := LayerBytes(context.Background(), dir); err != nil || n <= 0 {
		t.Errorf("in time: %d %v", n, err)
	}
}

func TestCollectNamedTwiceOnce(t *testing.T) {
	r := newRig(t, gpus.Snapshot{})
	s, err := r.co.Collect(context.Background(), Options{User: "alice", Names: []string{"a1", "a1", "a1"}, Window: time.Millisecond})
	if err != nil || len(s.Containers) != 1 {
		t.Fatalf("%v %d", err, len(s.Containers))
	}
}

func TestCarryDisk(t *testing.T) {
	n := int64(7)
	prev := Sample{Containers: []ContainerStats{{ID: "a", DiskBytes: &n}, {ID: "b", DiskNote: "not measured within 2s"}}}
	cur := Sample{Containers: []ContainerStats{{ID: "a"}, {ID: "b"}, {ID: "c"}}}
	CarryDisk(&prev, &cur)
	if cur.Containers[0].DiskBytes == nil || *cur.Containers[0].DiskBytes != 7 || cur.Containers[1].DiskNote == "" || cur.Containers[2].DiskBytes != nil {
		t.Errorf("%+v", cur.Containers)
	}
}

// countdown is a context whose deadline passes after left calls of Err.
type countdown struct {
	context.Context
	left, calls int
}

func (c *countdown) Err() error {
	c.calls++
	if c.left > 0 {
		c.left--
		return nil
	}
	return context.DeadlineExceeded
}

func TestCapped(t *testing.T) {
	for _, c := range []struct{ pct, limit, want float64 }{{109.9, 1, 100}, {99, 1, 99}, {300, 0, 300}, {160, 1.5, 150}} {
		if got := capped(c.pct, c.limit); got != c.want {
			t.Errorf("capped(%v, %v) = %v, want %v", c.pct, c.limit, got, c.want)
		}
	}
}
