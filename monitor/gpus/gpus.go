// Package gpus reads GPU figures per device and per process from NVML and
// attributes the processes to containers. NVML is initialised once per
// process (a Reader); where it is absent, the normal case on machines
// without an NVIDIA driver, every Read says so cheaply.
//
// The package does not import package monitor (monitor imports it); its
// types are its own.
package gpus

import (
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// Process kinds.
const (
	KindCompute  = "compute"
	KindGraphics = "graphics"
)

// FirstWindow is how far back the first Read of a device looks for
// per-process utilisation samples.
const FirstWindow = 2 * time.Second

// notMIG is what NVML reports as the GPU or compute instance id of a process
// on a device not in MIG mode (0xFFFFFFFF).
const notMIG = math.MaxUint32

// Process is one process on one device.
type Process struct {
	PID  int
	Kind string // KindCompute or KindGraphics; a pid in both lists appears once, as compute
	// MemoryBytes is NVML's UsedGpuMemory; 0 where NVML reports it
	// unavailable.
	MemoryBytes uint64
	// SMUtil is the process's SM utilisation in percent of the device,
	// averaged over the samples NVML returned since the previous Read of
	// the device (the last FirstWindow on the first); nil where not
	// available (MIG, NOT_SUPPORTED, no sample for the pid).
	SMUtil *float64
	// GPUInstance and ComputeInstance are the MIG instance ids; -1 when
	// the device is not in MIG mode.
	GPUInstance, ComputeInstance int
}

// Device is one GPU.
type Device struct {
	Index       int
	UUID, Name  string
	MemoryTotal uint64
	MemoryUsed  uint64
	// Util is the device utilisation in percent (GetUtilizationRates().Gpu);
	// nil where unavailable (MIG mode, an error).
	Util *float64
	MIG  bool // MIG mode currently enabled
	// Note says what is not available and why, "; "-separated, e.g.
	// "MIG: device and per-process utilisation not available".
	Note      string
	Processes []Process
}

// Snapshot is one reading of all devices.
type Snapshot struct {
	// Available is true when NVML answered: initialised and counted the
	// devices.
	Available bool
	// Note says why not ("no NVIDIA driver (NVML library not found)",
	// "NVML init: ...").
	Note    string
	Driver  string
	Time    time.Time
	Devices []Device
}

// Reader reads NVML. Init is called once, on the first Read, and its
// failure is remembered: a missing library is the normal case and is not
// retried on every Read. A Reader is safe for concurrent use; Reads are
// serialised.
type Reader struct {
	mu       sync.Mutex
	lib      nvml.Interface
	now      func() time.Time
	tried    bool   // Init was called
	ok       bool   // Init succeeded and Close has not been called
	closed   bool   // Close was called
	initNote string // why Init failed
	driver   string
	// lastSeen is, per device (UUID, or "#index" where the UUID is
	// unknown), the newest per-process utilisation sample timestamp seen,
	// in microseconds.
	lastSeen map[string]uint64
}

// NewReader returns a Reader of lib: nvml.New() in production, a mock in
// tests. A nil lib reads as unavailable.
func NewReader(lib nvml.Interface) *Reader {
	return &Reader{lib: lib, now: time.Now, lastSeen: map[string]uint64{}}
}

// Close shuts NVML down if the Reader initialised it. Later Reads say the
// reader is closed.
func (r *Reader) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	r.closed = true
	if r.ok {
		r.ok = false
		_, _ = call(func() nvml.Return { return r.lib.Shutdown() })
	}
}

// Read reads every device.
func (r *Reader) Read() Snapshot {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := Snapshot{Time: r.now()}
	if r.closed {
		s.Note = "NVML reader closed"
		return s
	}
	if !r.tried {
		r.tried = true
		r.init()
	}
	if !r.ok {
		s.Note = r.initNote
		return s
	}
	s.Driver = r.driver
	var n int
	ret, err := call(func() (ret nvml.Return) { n, ret = r.lib.DeviceGetCount(); return })
	if p := problem(ret, err); p != "" {
		s.Note = "NVML device count: " + p
		return s
	}
	s.Available = true
	s.Devices = make([]Device, 0, n)
	for i := 0; i < n; i++ {
		s.Devices = append(s.Devices, r.readDevice(i, s.Time))
	}
	return s
}

// init calls Init once and remembers the outcome; r.mu is held.
func (r *Reader) init() {
	if r.lib == nil {
		r.initNote = "NVML not available"
		return
	}
	ret, err := call(func() nvml.Return { return r.lib.Init() })
	switch {
	case err != nil:
		r.initNote = "NVML init: " + err.Error()
		return
	case ret == nvml.ERROR_LIBRARY_NOT_FOUND:
		r.initNote = "no NVIDIA driver (NVML library not found)"
		return
	case ret != nvml.SUCCESS:
		r.initNote = "NVML init: " + errString(ret)
		return
	}
	r.ok = true
	var v string
	ret, err = call(func() (ret nvml.Return) { v, ret = r.lib.SystemGetDriverVersion(); return })
	if problem(ret, err) == "" {
		r.driver = v
	}
}

// readDevice reads device i; every call is guarded on its own so that one
// failing call loses only its own figure, recorded in Note.
func (r *Reader) readDevice(i int, now time.Time) (dev Device) {
	dev.Index = i
	var notes []string
	note := func(what, p string) { notes = append(notes, what+": "+p) }
	defer func() { dev.Note = strings.Join(notes, "; ") }()

	var d nvml.Device
	ret, err := call(func() (ret nvml.Return) { d, ret = r.lib.DeviceGetHandleByIndex(i); return })
	if p := problem(ret, err); p != "" {
		note("handle", p)
		return dev
	}
	if d == nil {
		note("handle", "nil device")
		return dev
	}

	ret, err = call(func() (ret nvml.Return) { dev.UUID, ret = d.GetUUID(); return })
	if p := problem(ret, err); p != "" {
		note("UUID", p)
	}
	ret, err = call(func() (ret nvml.Return) { dev.Name, ret = d.GetName(); return })
	if p := problem(ret, err); p != "" {
		note("name", p)
	}
	var mem nvml.Memory
	ret, err = call(func() (ret nvml.Return) { mem, ret = d.GetMemoryInfo(); return })
	if p := problem(ret, err); p != "" {
		note("memory", p)
	} else {
		dev.MemoryTotal, dev.MemoryUsed = mem.Total, mem.Used
	}

	var current int
	ret, err = call(func() (ret nvml.Return) { current, _, ret = d.GetMigMode(); return })
	switch p := problem(ret, err); {
	case ret == nvml.ERROR_NOT_SUPPORTED && err == nil:
		// Not MIG-capable: not MIG.
	case p != "":
		note("MIG mode", p)
	default:
		dev.MIG = current == nvml.DEVICE_MIG_ENABLE
	}

	if dev.MIG {
		notes = append(notes, "MIG: device and per-process utilisation not available")
	} else {
		var u nvml.Utilization
		ret, err = call(func() (ret nvml.Return) { u, ret = d.GetUtilizationRates(); return })
		if p := problem(ret, err); p != "" {
			note("utilisation", p)
		} else {
			v := float64(u.Gpu)
			dev.Util = &v
		}
	}

	dev.Processes = r.processes(d, dev.MIG, note)

	if !dev.MIG && len(dev.Processes) > 0 {
		key := dev.UUID
		if key == "" {
			key = fmt.Sprintf("#%d", i)
		}
		r.smUtil(d, key, now, dev.Processes, note)
	}
	return dev
}

// processes lists the compute then the graphics processes of d, a pid in
// both once, as compute.
func (r *Reader) processes(d nvml.Device, mig bool, note func(what, p string)) []Process {
	var compute, graphics []nvml.ProcessInfo
	ret, err := call(func() (ret nvml.Return) { compute, ret = d.GetComputeRunningProcesses(); return })
	if p := problem(ret, err); p != "" {
		note("compute processes", p)
	}
	ret, err = call(func() (ret nvml.Return) { graphics, ret = d.GetGraphicsRunningProcesses(); return })
	if p := problem(ret, err); p != "" {
		note("graphics processes", p)
	}
	type key struct{ pid, gi, ci int }
	seen := map[key]bool{}
	computePID := map[int]bool{}
	var out []Process
	add := func(pi nvml.ProcessInfo, kind string) {
		p := Process{PID: int(pi.Pid), Kind: kind, GPUInstance: -1, ComputeInstance: -1}
		if pi.UsedGpuMemory != math.MaxUint64 { // NVML_VALUE_NOT_AVAILABLE
			p.MemoryBytes = pi.UsedGpuMemory
		}
		if mig {
			if pi.GpuInstanceId != notMIG {
				p.GPUInstance = int(pi.GpuInstanceId)
			}
			if pi.ComputeInstanceId != notMIG {
				p.ComputeInstance = int(pi.ComputeInstanceId)
			}
		}
		k := key{p.PID, p.GPUInstance, p.ComputeInstance}
		if seen[k] {
			return
		}
		seen[k] = true
		out = append(out, p)
	}
	for _, pi := range compute {
		add(pi, KindCompute)
		computePID[int(pi.Pid)] = true
	}
	for _, pi := range graphics {
		if !computePID[int(pi.Pid)] {
			add(pi, KindGraphics)
		}
	}
	return out
}

// smUtil fills the processes' SMUtil from the samples NVML holds newer than
// the last seen for the device (FirstWindow back on the first Read).
func (r *Reader) smUtil(d nvml.Device, key string, now time.Time, ps []Process, note func(what, p string)) {
	last, ok := r.lastSeen[key]
	if !ok {
		last = uint64(max(now.Add(-FirstWindow).UnixMicro(), 0))
	}
	var samples []nvml.ProcessUtilizationSample
	ret, err := call(func() (ret nvml.Return) { samples, ret = d.GetProcessUtilization(last); return })
	switch {
	case err != nil:
		note("per-process utilisation", err.Error())
		return
	case ret == nvml.ERROR_NOT_FOUND:
		// No sample since last: every SMUtil stays nil.
	case ret == nvml.ERROR_INSUFFICIENT_SIZE && len(samples) == 0:
		// go-nvml's answer when NVML counts zero samples.
	case ret == nvml.ERROR_NOT_SUPPORTED:
		note("per-process utilisation", "not supported")
		return
	case ret != nvml.SUCCESS:
		note("per-process utilisation", errString(ret))
		return
	}
	type acc struct {
		sum float64
		n   int
	}
	byPID := map[int]*acc{}
	newest := last
	for _, s := range samples {
		if s.TimeStamp <= last { // only samples not averaged before
			continue
		}
		newest = max(newest, s.TimeStamp)
		a := byPID[int(s.Pid)]
		if a == nil {
			a = &acc{}
			byPID[int(s.Pid)] = a
		}
		a.sum += float64(s.SmUtil)
		a.n++
	}
	r.lastSeen[key] = newest
	for i := range ps {
		if a := byPID[ps[i].PID]; a != nil {
			v := a.sum / float64(a.n)
			ps[i].SMUtil = &v
		}
	}
}

// call runs f, turning a panic (go-nvml panics where the library cannot be
// loaded on some setups, and a mock panics on a method it does not set)
// into an error.
func call(f func() nvml.Return) (ret nvml.Return, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("NVML panic: %v", p)
		}
	}()
	return f(), nil
}

// problem is what went wrong with a call, "" for nothing.
func problem(ret nvml.Return, err error) string {
	if err != nil {
		return err.Error()
	}
	if ret != nvml.SUCCESS {
		return errString(ret)
	}
	return ""
}

// errString is ret's text without lib.ErrorString, which go-nvml's mocks
// leave unset.
func errString(ret nvml.Return) (s string) {
	defer func() {
		if recover() != nil {
			s = fmt.Sprintf("NVML error %d", int32(ret))
		}
	}()
	return ret.Error()
}
