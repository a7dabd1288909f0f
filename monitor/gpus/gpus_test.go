package gpus

import (
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxa100"
)

const gib = 1 << 30

// newServer is go-nvml's 8-A100 mock with the per-process calls dgxa100
// leaves unset answering "nothing running".
func newServer() *dgxa100.Server {
	s := dgxa100.New()
	for i := range s.Devices {
		d := dev(s, i)
		d.GetComputeRunningProcessesFunc = func() ([]nvml.ProcessInfo, nvml.Return) { return nil, nvml.SUCCESS }
		d.GetGraphicsRunningProcessesFunc = func() ([]nvml.ProcessInfo, nvml.Return) { return nil, nvml.SUCCESS }
		d.GetProcessUtilizationFunc = func(uint64) ([]nvml.ProcessUtilizationSample, nvml.Return) {
			return nil, nvml.ERROR_NOT_FOUND
		}
		d.GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) {
			return nvml.Utilization{Gpu: uint32(10 * i)}, nvml.SUCCESS
		}
	}
	return s
}

func dev(s *dgxa100.Server, i int) *dgxa100.Device { return s.Devices[i].(*dgxa100.Device) }

// procs makes the compute (or graphics) list of a non-MIG device.
func procs(ps ...nvml.ProcessInfo) func() ([]nvml.ProcessInfo, nvml.Return) {
	for i := range ps {
		ps[i].GpuInstanceId, ps[i].ComputeInstanceId = math.MaxUint32, math.MaxUint32
	}
	return func() ([]nvml.ProcessInfo, nvml.Return) { return ps, nvml.SUCCESS }
}

func pi(pid uint32, mem uint64) nvml.ProcessInfo {
	return nvml.ProcessInfo{Pid: pid, UsedGpuMemory: mem}
}

func TestAttribute(t *testing.T) {
	s := newServer()
	const (
		ctrA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
		ctrB = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
		ctrC = "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
		ctrF = "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"
		ctrX = "0000000000000000000000000000000000000000000000000000000000000000" // unknown to the engine
	)
	// ctrA on GPU 0 (pid 100, and pid 600 whose first candidate id is
	// unknown), ctrB on GPU 1, ctrC on GPUs 2 and 3 (pid 300 on both, pid
	// 301 a graphics process on 3), a host process on GPU 4, a foreign
	// container's on GPU 5.
	dev(s, 0).GetComputeRunningProcessesFunc = procs(pi(100, 1*gib), pi(600, gib/2))
	dev(s, 0).GetGraphicsRunningProcessesFunc = procs(pi(100, 1*gib)) // in both lists: once, as compute
	dev(s, 1).GetComputeRunningProcessesFunc = procs(pi(200, 2*gib))
	dev(s, 2).GetComputeRunningProcessesFunc = procs(pi(300, 3*gib))
	dev(s, 3).GetComputeRunningProcessesFunc = procs(pi(300, 4*gib))
	dev(s, 3).GetGraphicsRunningProcessesFunc = procs(pi(301, gib/4))
	dev(s, 4).GetComputeRunningProcessesFunc = procs(pi(400, 5*gib))
	dev(s, 5).GetComputeRunningProcessesFunc = procs(pi(500, 6*gib), pi(501, math.MaxUint64))

	r := NewReader(s)
	defer r.Close()
	snap := r.Read()
	if !snap.Available || snap.Note != "" || snap.Driver != "550.54.15" || len(snap.Devices) != 8 {
		t.Fatalf("snapshot: %+v", snap)
	}
	if ps := snap.Devices[0].Processes; len(ps) != 2 || ps[0].Kind != KindCompute || ps[0].GPUInstance != -1 || ps[0].ComputeInstance != -1 {
		t.Fatalf("GPU 0 processes: %+v", ps)
	}
	if ps := snap.Devices[3].Processes; len(ps) != 2 || ps[1].PID != 301 || ps[1].Kind != KindGraphics {
		t.Fatalf("GPU 3 processes: %+v", ps)
	}
	if p := snap.Devices[5].Processes[1]; p.PID != 501 || p.MemoryBytes != 0 {
		t.Fatalf("unavailable memory should read 0: %+v", p)
	}

	cgroupIDs := map[int][]string{
		100: {ctrA}, 600: {ctrX, ctrA},
		200: {ctrB},
		300: {ctrC}, 301: {ctrC},
		400: nil,
		500: {ctrF}, 501: {ctrF},
	}
	calls := map[int]int{}
	idsOf := func(pid int) []string { calls[pid]++; return cgroupIDs[pid] }
	known := map[string]string{ctrA: OwnerMLC, ctrB: OwnerMLC, ctrC: OwnerMLC, ctrF: OwnerForeign}
	by, un := Attribute(snap, idsOf, known)

	if calls[300] != 1 {
		t.Errorf("idsOf(300) called %d times, want once", calls[300])
	}
	if len(by) != 3 {
		t.Fatalf("containers: %v", by)
	}
	want := map[string]struct {
		n    int
		mem  uint64
		gpus []int
	}{
		ctrA: {2, gib + gib/2, []int{0, 0}},
		ctrB: {1, 2 * gib, []int{1}},
		ctrC: {3, 3*gib + 4*gib + gib/4, []int{2, 3, 3}},
	}
	for id, w := range want {
		ps := by[id]
		mem, _ := Sum(ps)
		if len(ps) != w.n || mem != w.mem {
			t.Errorf("%s: %d processes, %d bytes; want %d, %d: %+v", id[:4], len(ps), mem, w.n, w.mem, ps)
			continue
		}
		for i, p := range ps {
			if p.GPU != w.gpus[i] || p.GPUUUID != snap.Devices[p.GPU].UUID || p.ContainerID != id || p.Owner != OwnerMLC {
				t.Errorf("%s process %d: %+v", id[:4], i, p)
			}
		}
	}
	if len(un) != 3 {
		t.Fatalf("unattributed: %+v", un)
	}
	if h := un[0]; h.PID != 400 || h.Owner != OwnerHost || h.ContainerID != "" || h.GPU != 4 || h.MemoryBytes != 5*gib {
		t.Errorf("host process: %+v", h)
	}
	for _, f := range un[1:] {
		if f.Owner != OwnerForeign || f.ContainerID != ctrF || f.GPU != 5 {
			t.Errorf("foreign process: %+v", f)
		}
	}

	// No way to look up containers: everything is the host's.
	by, un = Attribute(snap, nil, known)
	if len(by) != 0 || len(un) != 9 {
		t.Errorf("nil idsOf: %d containers, %d unattributed", len(by), len(un))
	}
}

func TestProcessUtilisation(t *testing.T) {
	s := newServer()
	t0 := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	us := func(d time.Duration) uint64 { return uint64(t0.Add(d).UnixMicro()) }
	d := dev(s, 0)
	d.GetComputeRunningProcessesFunc = procs(pi(10, gib), pi(11, gib), pi(12, gib))
	var mu sync.Mutex
	samples := []nvml.ProcessUtilizationSample{
		{Pid: 10, TimeStamp: us(-3 * time.Second), SmUtil: 90}, // before the first window
		{Pid: 10, TimeStamp: us(-1500 * time.Millisecond), SmUtil: 20},
		{Pid: 10, TimeStamp: us(-time.Second), SmUtil: 40},
		{Pid: 11, TimeStamp: us(-500 * time.Millisecond), SmUtil: 70},
		{Pid: 99, TimeStamp: us(-400 * time.Millisecond), SmUtil: 5}, // not running any more
	}
	var seen []uint64
	// Like NVML, but returning every sample it holds whatever lastSeen
	// says: the reader must drop the old ones itself.
	d.GetProcessUtilizationFunc = func(last uint64) ([]nvml.ProcessUtilizationSample, nvml.Return) {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, last)
		return append([]nvml.ProcessUtilizationSample(nil), samples...), nvml.SUCCESS
	}
	r := NewReader(s)
	defer r.Close()
	r.now = func() time.Time { return t0 }

	check := func(read string, ps []Process, want map[int]float64) {
		t.Helper()
		for _, p := range ps {
			w, ok := want[p.PID]
			switch {
			case !ok && p.SMUtil != nil:
				t.Errorf("%s: pid %d: SMUtil %v, want nil", read, p.PID, *p.SMUtil)
			case ok && (p.SMUtil == nil || *p.SMUtil != w):
				t.Errorf("%s: pid %d: SMUtil %v, want %v", read, p.PID, p.SMUtil, w)
			}
		}
	}

	snap := r.Read()
	d0 := snap.Devices[0]
	if d0.Util == nil || *d0.Util != 0 || d0.Note != "" || d0.MIG {
		t.Fatalf("device 0: %+v", d0)
	}
	if u := snap.Devices[3].Util; u == nil || *u != 30 {
		t.Errorf("device 3 util: %v", u)
	}
	check("first", d0.Processes, map[int]float64{10: 30, 11: 70})

	mu.Lock()
	samples = append(samples,
		nvml.ProcessUtilizationSample{Pid: 10, TimeStamp: us(500 * time.Millisecond), SmUtil: 60},
		nvml.ProcessUtilizationSample{Pid: 12, TimeStamp: us(time.Second), SmUtil: 10},
		nvml.ProcessUtilizationSample{Pid: 12, TimeStamp: us(1500 * time.Millisecond), SmUtil: 15},
	)
	mu.Unlock()
	check("second", r.Read().Devices[0].Processes, map[int]float64{10: 60, 12: 12.5})
	check("third", r.Read().Devices[0].Processes, map[int]float64{})

	wantSeen := []uint64{us(-2 * time.Second), us(-400 * time.Millisecond), us(1500 * time.Millisecond), us(1500 * time.Millisecond)}
	r.Read()
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != len(wantSeen) {
		t.Fatalf("lastSeen passed: %v, want %v", seen, wantSeen)
	}
	for i := range seen {
		if seen[i] != wantSeen[i] {
			t.Errorf("read %d passed lastSeen %d, want %d", i+1, seen[i], wantSeen[i])
		}
	}

	// NOT_SUPPORTED: no figure, and the note says so.
	d.GetProcessUtilizationFunc = func(uint64) ([]nvml.ProcessUtilizationSample, nvml.Return) {
		return nil, nvml.ERROR_NOT_SUPPORTED
	}
	d0 = r.Read().Devices[0]
	check("not supported", d0.Processes, map[int]float64{})
	if !strings.Contains(d0.Note, "per-process utilisation: not supported") {
		t.Errorf("note: %q", d0.Note)
	}
}

func TestMIG(t *testing.T) {
	s := newServer()
	d := dev(s, 2)
	d.MigMode = nvml.DEVICE_MIG_ENABLE
	d.GetComputeRunningProcessesFunc = func() ([]nvml.ProcessInfo, nvml.Return) {
		return []nvml.ProcessInfo{
			{Pid: 70, UsedGpuMemory: gib, GpuInstanceId: 1, ComputeInstanceId: 0},
			{Pid: 71, UsedGpuMemory: 2 * gib, GpuInstanceId: 2, ComputeInstanceId: 1},
		}, nvml.SUCCESS
	}
	d.GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) { return nvml.Utilization{}, nvml.ERROR_NOT_SUPPORTED }
	d.GetProcessUtilizationFunc = func(uint64) ([]nvml.ProcessUtilizationSample, nvml.Return) {
		return []nvml.ProcessUtilizationSample{{Pid: 70, TimeStamp: math.MaxUint64, SmUtil: 50}}, nvml.SUCCESS
	}
	d.MemoryInfo.Used = 3 * gib
	dev(s, 4).GetMigModeFunc = func() (int, int, nvml.Return) { return 0, 0, nvml.ERROR_NOT_SUPPORTED }
	dev(s, 4).GetComputeRunningProcessesFunc = procs(pi(80, gib))

	r := NewReader(s)
	defer r.Close()
	snap := r.Read()
	g := snap.Devices[2]
	if !g.MIG || g.Util != nil || g.MemoryUsed != 3*gib || g.MemoryTotal != 42949672960 {
		t.Fatalf("MIG device: %+v", g)
	}
	if !strings.Contains(g.Note, "per-process utilisation not available") {
		t.Errorf("MIG note: %q", g.Note)
	}
	if len(g.Processes) != 2 {
		t.Fatalf("MIG processes: %+v", g.Processes)
	}
	for i, p := range g.Processes {
		if p.SMUtil != nil || p.GPUInstance != i+1 || p.ComputeInstance != i || p.MemoryBytes != uint64(i+1)*gib {
			t.Errorf("MIG process %d: %+v", i, p)
		}
	}
	if len(d.GetProcessUtilizationCalls()) != 0 || len(d.GetUtilizationRatesCalls()) != 0 {
		t.Errorf("utilisation asked of a MIG device")
	}
	// A device that cannot do MIG is simply not in MIG mode.
	if g := snap.Devices[4]; g.MIG || g.Note != "" || g.Util == nil || g.Processes[0].GPUInstance != -1 {
		t.Errorf("non-MIG-capable device: %+v", g)
	}
}

func TestNVMLNotFound(t *testing.T) {
	lib := &mock.Interface{
		InitFunc:     func() nvml.Return { return nvml.ERROR_LIBRARY_NOT_FOUND },
		ShutdownFunc: func() nvml.Return { return nvml.SUCCESS },
	}
	r := NewReader(lib)
	for i := 0; i < 3; i++ {
		s := r.Read()
		if s.Available || s.Note != "no NVIDIA driver (NVML library not found)" || len(s.Devices) != 0 || s.Time.IsZero() {
			t.Fatalf("read %d: %+v", i, s)
		}
	}
	if n := len(lib.InitCalls()); n != 1 {
		t.Errorf("Init called %d times, want once", n)
	}
	r.Close()
	if n := len(lib.ShutdownCalls()); n != 0 {
		t.Errorf("Shutdown called %d times without a successful Init", n)
	}

	// Another failure, and a panic, are remembered the same way.
	lib = &mock.Interface{InitFunc: func() nvml.Return { return nvml.ERROR_DRIVER_NOT_LOADED }}
	r = NewReader(lib)
	r.Read()
	if s := r.Read(); s.Available || s.Note != "NVML init: ERROR_DRIVER_NOT_LOADED" || len(lib.InitCalls()) != 1 {
		t.Errorf("driver not loaded: %+v, %d Init calls", s, len(lib.InitCalls()))
	}
	panics := 0
	lib = &mock.Interface{InitFunc: func() nvml.Return { panics++; panic("cannot load libnvidia-ml.so.1") }}
	r = NewReader(lib)
	r.Read()
	if s := r.Read(); s.Available || !strings.Contains(s.Note, "cannot load") || panics != 1 {
		t.Errorf("panicking Init: %+v, %d calls", s, panics)
	}
	r.Close()

	if s := NewReader(nil).Read(); s.Available || s.Note == "" {
		t.Errorf("nil lib: %+v", s)
	}
}

// TestRealNVML reads the machine's own NVML: on a machine without a driver
// (the normal case) it must say so without panicking.
func TestRealNVML(t *testing.T) {
	r := NewReader(nvml.New())
	defer r.Close()
	s := r.Read()
	if !s.Available && s.Note == "" {
		t.Errorf("unavailable without a note: %+v", s)
	}
	t.Logf("available=%v note=%q driver=%q devices=%d", s.Available, s.Note, s.Driver, len(s.Devices))
}

func TestFailingCallKeepsOtherFigures(t *testing.T) {
	s := newServer()
	d := dev(s, 3)
	d.MemoryInfo.Used = 7 * gib
	d.GetComputeRunningProcessesFunc = func() ([]nvml.ProcessInfo, nvml.Return) { return nil, nvml.ERROR_UNKNOWN }
	d.GetGraphicsRunningProcessesFunc = procs(pi(33, gib))
	// A mock method left unset panics, as go-nvml can.
	dev(s, 5).GetComputeRunningProcessesFunc = nil
	dev(s, 6).GetNameFunc = func() (string, nvml.Return) { return "", nvml.ERROR_GPU_IS_LOST }
	dev(s, 6).GetMemoryInfoFunc = func() (nvml.Memory, nvml.Return) { return nvml.Memory{}, nvml.ERROR_GPU_IS_LOST }
	dev(s, 6).GetComputeRunningProcessesFunc = procs(pi(66, gib))

	r := NewReader(s)
	defer r.Close()
	snap := r.Read()
	if !snap.Available || len(snap.Devices) != 8 {
		t.Fatalf("snapshot: %+v", snap)
	}
	g := snap.Devices[3]
	if g.MemoryUsed != 7*gib || g.MemoryTotal != 42949672960 || g.Util == nil || *g.Util != 30 || g.UUID == "" || g.Name == "" {
		t.Errorf("device 3 lost figures: %+v", g)
	}
	if g.Note != "compute processes: ERROR_UNKNOWN" {
		t.Errorf("device 3 note: %q", g.Note)
	}
	if len(g.Processes) != 1 || g.Processes[0].PID != 33 {
		t.Errorf("device 3 graphics processes lost: %+v", g.Processes)
	}
	g = snap.Devices[5]
	if g.UUID == "" || g.MemoryTotal == 0 || g.Util == nil || !strings.Contains(g.Note, "compute processes: NVML panic") {
		t.Errorf("device 5 (panicking call): %+v", g)
	}
	g = snap.Devices[6]
	if g.UUID == "" || g.Name != "" || g.MemoryTotal != 0 || len(g.Processes) != 1 ||
		g.Note != "name: ERROR_GPU_IS_LOST; memory: ERROR_GPU_IS_LOST" {
		t.Errorf("device 6: %+v", g)
	}
	for _, i := range []int{0, 1, 2, 4, 7} {
		if n := snap.Devices[i].Note; n != "" {
			t.Errorf("device %d note: %q", i, n)
		}
	}
}

func TestClose(t *testing.T) {
	s := newServer()
	r := NewReader(s)
	if !r.Read().Available {
		t.Fatal("not available")
	}
	r.Close()
	r.Close()
	if n := len(s.ShutdownCalls()); n != 1 {
		t.Errorf("Shutdown called %d times, want once", n)
	}
	if snap := r.Read(); snap.Available || snap.Note == "" || len(s.InitCalls()) != 1 {
		t.Errorf("read after Close: %+v", snap)
	}
}

func TestConcurrentReads(t *testing.T) {
	s := newServer()
	for i := range s.Devices {
		d := dev(s, i)
		d.GetComputeRunningProcessesFunc = procs(pi(uint32(1000+i), gib))
		d.GetProcessUtilizationFunc = func(last uint64) ([]nvml.ProcessUtilizationSample, nvml.Return) {
			return []nvml.ProcessUtilizationSample{{Pid: uint32(1000 + i), TimeStamp: last + 1, SmUtil: 42}}, nvml.SUCCESS
		}
	}
	r := NewReader(s)
	defer r.Close()
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; k < 25; k++ {
				snap := r.Read()
				if !snap.Available || len(snap.Devices) != 8 {
					errs <- snap.Note
					return
				}
				for _, d := range snap.Devices {
					if len(d.Processes) != 1 || d.Processes[0].SMUtil == nil || *d.Processes[0].SMUtil != 42 {
						errs <- "device " + d.UUID + ": " + d.Note
						return
					}
				}
				by, un := Attribute(snap, func(int) []string { return nil }, nil)
				if len(by) != 0 || len(un) != 8 {
					errs <- "attribution"
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if n := len(s.InitCalls()); n != 1 {
		t.Errorf("Init called %d times, want once", n)
	}
}
