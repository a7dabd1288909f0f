package server

import (
	"math"
	"strconv"

	"github.com/mlc-lab/mlc/monitor"
	"github.com/prometheus/client_golang/prometheus"
)

// The metrics the exporter serves. docs/admin-guide.md lists them and the
// Grafana dashboard (docs/grafana/) uses them; a test keeps the three in step.
var (
	ctrLabels  = []string{"user", "container"}
	gpuLabels  = []string{"gpu", "uuid"}
	descs      = map[string]*prometheus.Desc{}
	metricList []string
	labelsOf   = map[string][]string{}
)

func desc(name, help string, labels ...string) *prometheus.Desc {
	d := prometheus.NewDesc(name, help, labels, nil)
	descs[name] = d
	metricList = append(metricList, name)
	labelsOf[name] = labels
	return d
}

var (
	mCPU        = desc("mlc_container_cpu_percent", "CPU use of the container, percent of one CPU.", ctrLabels...)
	mMem        = desc("mlc_container_memory_bytes", "Memory use of the container without inactive file cache.", ctrLabels...)
	mMemLimit   = desc("mlc_container_memory_limit_bytes", "Memory limit of the container (the host's memory when unlimited).", ctrLabels...)
	mPids       = desc("mlc_container_pids", "Processes and threads in the container.", ctrLabels...)
	mRx         = desc("mlc_container_network_receive_bytes_total", "Bytes the container received since it started.", ctrLabels...)
	mTx         = desc("mlc_container_network_transmit_bytes_total", "Bytes the container sent since it started.", ctrLabels...)
	mBlkRead    = desc("mlc_container_block_read_bytes_total", "Bytes the container read from block devices.", ctrLabels...)
	mBlkWrite   = desc("mlc_container_block_write_bytes_total", "Bytes the container wrote to block devices.", ctrLabels...)
	mRunning    = desc("mlc_container_running", "1 when the container runs, 0 when it is stopped.", ctrLabels...)
	mCtrGPUs    = desc("mlc_container_gpus_allocated", "GPUs allocated to the container.", ctrLabels...)
	mCtrGPUMem  = desc("mlc_container_gpu_memory_bytes", "GPU memory used by the container's own processes on a GPU.", "user", "container", "gpu")
	mCtrGPUUtil = desc("mlc_container_gpu_utilization_percent", "SM utilisation of the container's own processes on a GPU (absent where NVML gives none, e.g. MIG).", "user", "container", "gpu")
	mIdle       = desc("mlc_container_idle_seconds", "Seconds since the container's last busy sample (or its first sample when never busy).", ctrLabels...)
	mGPUUtil    = desc("mlc_gpu_utilization_percent", "Utilisation of the whole device.", gpuLabels...)
	mGPUMem     = desc("mlc_gpu_memory_used_bytes", "Memory used on the device, by anyone.", gpuLabels...)
	mGPUMemTot  = desc("mlc_gpu_memory_total_bytes", "Memory of the device.", gpuLabels...)
	mGPUAlloc   = desc("mlc_gpu_allocated", "1 for each holder of a GPU in the ledger.", "gpu", "uuid", "user", "container", "state")
	mGPUFree    = desc("mlc_gpu_free", "1 when the ledger has no holder for the GPU.", gpuLabels...)
	mQueue      = desc("mlc_gpu_queue_length", "Creates waiting for a GPU.")
	mUnattr     = desc("mlc_gpu_unattributed_processes", "GPU processes in no mlc container, by owner (host or foreign).", "gpu", "uuid", "owner")
	mUnattrMem  = desc("mlc_gpu_unattributed_memory_bytes", "GPU memory of processes in no mlc container.", "gpu", "uuid", "owner")
	mLedgerUp   = desc("mlc_ledger_up", "1 when the GPU ledger could be read at the last sample.")
	mUserCPU    = desc("mlc_user_cpu_percent", "CPU use of all of a user's containers.", "user")
	mUserMem    = desc("mlc_user_memory_bytes", "Memory use of all of a user's containers.", "user")
	mUserGPUs   = desc("mlc_user_gpus_allocated", "GPUs allocated to a user's containers.", "user")
	mUserGPUMem = desc("mlc_user_gpu_memory_bytes", "GPU memory used by a user's processes.", "user")
	mUserCtrs   = desc("mlc_user_containers", "A user's containers, running or not.", "user")
	mNVML       = desc("mlc_monitor_nvml_up", "1 when NVML answered at the last sample.")
	mLastSample = desc("mlc_monitor_last_sample_timestamp_seconds", "When the last sample was taken (Unix time).")
	mTook       = desc("mlc_monitor_sample_duration_seconds", "How long the last sample took.")
	mSamples    = desc("mlc_monitor_samples_total", "Samples taken since the exporter started.")
	mFailures   = desc("mlc_monitor_sample_failures_total", "Samples that failed or could not be recorded.")
	mHistoryUp  = desc("mlc_monitor_history_up", "1 when the last sample was written to the history database.")
)

// MetricNames are the names of every metric the exporter serves.
func MetricNames() []string { return append([]string(nil), metricList...) }

// MetricLabels are the label names of a metric the exporter serves.
func MetricLabels(name string) []string { return append([]string(nil), labelsOf[name]...) }

// exporter turns the server's last snapshot into metrics; it never samples.
type exporter struct{ srv *Server }

func (e exporter) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range descs {
		ch <- d
	}
}

func (e exporter) Collect(ch chan<- prometheus.Metric) {
	e.srv.mu.RLock()
	snap, samples, failures := e.srv.last, e.srv.samples, e.srv.failures
	e.srv.mu.RUnlock()
	gauge := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, l...)
	}
	counter := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, l...)
	}
	counter(mSamples, samples)
	counter(mFailures, failures)
	if snap == nil {
		return
	}
	s := snap.Sample
	gauge(mLastSample, float64(s.Time.UnixNano())/1e9)
	gauge(mTook, snap.Took.Seconds())
	gauge(mNVML, b2f(s.GPUNote == ""))
	if e.srv.Sampler.History != nil {
		gauge(mHistoryUp, b2f(snap.RecordErr == nil))
	}
	for _, c := range s.Containers {
		l := []string{c.User, c.Name}
		running := c.InitPID > 0 && c.Error == ""
		gauge(mRunning, b2f(running), l...)
		gauge(mCtrGPUs, float64(len(c.GPUUUIDs)), l...)
		if a, ok := snap.Activity[c.ID]; ok && running {
			since := a.LastBusy
			if since.IsZero() {
				since = a.FirstSeen
			}
			gauge(mIdle, max(0, math.Floor(s.Time.Sub(since).Seconds())), l...)
		}
		if !running {
			continue
		}
		gauge(mCPU, c.CPUPercent, l...)
		gauge(mMem, float64(c.MemoryBytes), l...)
		gauge(mMemLimit, float64(c.MemoryLimitBytes), l...)
		gauge(mPids, float64(c.Pids), l...)
		counter(mRx, float64(c.NetRxBytes), l...)
		counter(mTx, float64(c.NetTxBytes), l...)
		counter(mBlkRead, float64(c.BlockReadBytes), l...)
		counter(mBlkWrite, float64(c.BlockWriteBytes), l...)
		perGPU(c, s, func(gpu string, mem float64, util *float64) {
			if c.GPUMemoryBytes != nil {
				gauge(mCtrGPUMem, mem, c.User, c.Name, gpu)
			}
			if util != nil {
				gauge(mCtrGPUUtil, *util, c.User, c.Name, gpu)
			}
		})
	}
	for _, g := range s.GPUs {
		l := []string{strconv.Itoa(g.Index), g.UUID}
		if g.UtilPercent != nil {
			gauge(mGPUUtil, *g.UtilPercent, l...)
		}
		if s.GPUNote == "" {
			gauge(mGPUMem, float64(g.MemoryUsedBytes), l...)
		}
		gauge(mGPUMemTot, float64(g.MemoryTotalBytes), l...)
	}
	type key struct{ gpu, uuid, owner string }
	n, mem := map[key]float64{}, map[key]float64{}
	for _, p := range s.Unattributed {
		k := key{strconv.Itoa(p.GPU), p.GPUUUID, p.Owner}
		n[k]++
		mem[k] += float64(p.MemoryBytes)
	}
	for k, v := range n {
		gauge(mUnattr, v, k.gpu, k.uuid, k.owner)
		gauge(mUnattrMem, mem[k], k.gpu, k.uuid, k.owner)
	}
	if e.srv.Sampler.Ledger != nil {
		gauge(mLedgerUp, b2f(snap.LedgerErr == nil))
		if snap.LedgerErr == nil {
			for _, g := range snap.Ledger.GPUs {
				l := []string{strconv.Itoa(g.Index), g.UUID}
				gauge(mGPUFree, b2f(len(g.Holders) == 0), l...)
				for _, h := range g.Holders {
					gauge(mGPUAlloc, 1, l[0], l[1], h.User, h.Name, h.State)
				}
			}
			gauge(mQueue, float64(len(snap.Ledger.Queue)))
		}
	}
	for _, u := range s.Users {
		gauge(mUserCPU, u.CPUPercent, u.User)
		gauge(mUserMem, float64(u.MemoryBytes), u.User)
		gauge(mUserGPUs, float64(u.GPUs), u.User)
		if s.GPUNote == "" {
			gauge(mUserGPUMem, float64(u.GPUMemoryBytes), u.User)
		}
		gauge(mUserCtrs, float64(u.Containers), u.User)
	}
}

// perGPU calls fn for each GPU allocated to c (or used by its processes)
// with the memory and utilisation of c's own processes on it; utilisation
// is nil where NVML gave none.
func perGPU(c monitor.ContainerStats, s monitor.Sample, fn func(gpu string, mem float64, util *float64)) {
	type fig struct {
		mem   float64
		util  float64
		known bool
		procs int
	}
	figs := map[int]*fig{}
	var order []int
	add := func(i int) *fig {
		f := figs[i]
		if f == nil {
			f = &fig{}
			figs[i] = f
			order = append(order, i)
		}
		return f
	}
	for _, i := range c.GPUs {
		if i >= 0 {
			add(i)
		}
	}
	for _, p := range c.GPUProcesses {
		f := add(p.GPU)
		f.procs++
		f.mem += float64(p.MemoryBytes)
		if p.UtilPercent != nil {
			f.util += *p.UtilPercent
			f.known = true
		}
	}
	for _, i := range order {
		f := figs[i]
		var util *float64
		mig := false
		for _, g := range s.GPUs {
			if g.Index == i && g.MIG {
				mig = true
			}
		}
		if s.GPUNote == "" && !mig && (f.known || f.procs == 0) {
			// A GPU the container holds with none of its processes on it is
			// idle for it; processes without samples are unknown, as in
			// mlc stats, not idle.
			u := f.util
			util = &u
		}
		fn(strconv.Itoa(i), f.mem, util)
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
