package server

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mlc-lab/mlc/engine"
	"github.com/mlc-lab/mlc/engine/enginetest"
	"github.com/mlc-lab/mlc/gpualloc"
	"github.com/mlc-lab/mlc/monitor"
	"github.com/mlc-lab/mlc/monitor/cgroups"
	"github.com/mlc-lab/mlc/monitor/gpus"
	"github.com/mlc-lab/mlc/monitor/history"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

type proc struct {
	mu    sync.Mutex
	ids   map[int][]string
	reads int
}

func (p *proc) Read(pid int, want string) (cgroups.Stats, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.reads++
	for _, id := range p.ids[pid] {
		if id == want {
			return cgroups.Stats{CPUUsageNs: uint64(p.reads) * 1e8, MemoryUsage: 1 << 30, MemoryLimit: 2 << 30, Pids: 3}, nil
		}
	}
	return cgroups.Stats{}, errors.New("gone")
}
func (p *proc) NetDev(int) (uint64, uint64, error) { return 10, 20, nil }
func (p *proc) PidContainerIDs(pid int) ([]string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ids[pid], nil
}
func (p *proc) MemTotal() (uint64, error)                                { return 8 << 30, nil }
func (p *proc) ContainerProcs([]string) (map[string]cgroups.Proc, error) { return nil, nil }
func (p *proc) StartTime(uint64) (time.Time, error)                      { return time.Time{}, nil }
func (p *proc) UpperDir(int) (string, error)                             { return "", nil }

type snapGPUs struct{ s gpus.Snapshot }

func (g snapGPUs) Read() gpus.Snapshot { return g.s }

func ptr[T any](v T) *T { return &v }

// newServer has alice's a1 on GPU 0 running one process, a host process on
// GPU 1, and a ledger saying alice holds GPU 0 with bob waiting.
func newServer(t *testing.T) (*Server, *enginetest.Fake) {
	t.Helper()
	ctx := context.Background()
	eng := enginetest.New()
	id, err := eng.Create(ctx, engine.Spec{Name: "mlc-1000-a1", Image: enginetest.Image, Labels: map[string]string{
		engine.LabelManaged: "true", engine.LabelUser: "alice", engine.LabelName: "a1", engine.LabelGPUs: gpualloc.FakeUUID(0)}})
	if err != nil {
		t.Fatal(err)
	}
	if err := eng.Start(ctx, id); err != nil {
		t.Fatal(err)
	}
	eng.SetRuntime(id, 100, "", 0)
	snap := gpus.Snapshot{Available: true, Devices: []gpus.Device{
		{Index: 0, UUID: gpualloc.FakeUUID(0), MemoryTotal: 80 << 30, MemoryUsed: 5 << 30, Util: ptr(40.0),
			Processes: []gpus.Process{{PID: 1000, Kind: "compute", MemoryBytes: 5 << 30, SMUtil: ptr(40.0)}}},
		{Index: 1, UUID: gpualloc.FakeUUID(1), MemoryTotal: 80 << 30, MemoryUsed: 1 << 30, Util: ptr(3.0),
			Processes: []gpus.Process{{PID: 2000, Kind: "compute", MemoryBytes: 1 << 30}}},
	}}
	co := &monitor.Collector{Engine: eng, Proc: &proc{ids: map[int][]string{100: {id}, 1000: {id}}}, GPUs: snapGPUs{snap},
		ProcInfo: func(int) (string, int) { return "python", 1000 }}
	db, err := history.Open(filepath.Join(t.TempDir(), "monitor.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	ledger := func(context.Context) (gpualloc.Status, error) {
		return gpualloc.Status{GPUs: []gpualloc.GPUStatus{
			{GPU: gpualloc.GPU{Index: 0, UUID: gpualloc.FakeUUID(0)}, Holders: []gpualloc.Holder{{User: "alice", Name: "a1", State: "active"}}},
			{GPU: gpualloc.GPU{Index: 1, UUID: gpualloc.FakeUUID(1)}},
		}, Queue: []gpualloc.Waiter{{Position: 1, User: "bob", Name: "b1", N: 2}}}, nil
	}
	s := &Sampler{Collector: co, History: db, Busy: history.Busy{CPUPercent: 5, GPUPercent: 5}, Retention: time.Hour,
		Ledger: ledger, Window: time.Millisecond}
	return New(s, time.Hour, io.Discard), eng
}

func scrape(t *testing.T, h http.Handler) map[string]*dto.MetricFamily {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("scrape: %d %s", rec.Code, rec.Body)
	}
	return parse(t, rec.Body)
}

func parse(t *testing.T, r io.Reader) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mf, err := p.TextToMetricFamilies(r)
	if err != nil {
		t.Fatalf("not valid exposition format: %v", err)
	}
	return mf
}

// value is the value of the sample of family name with these labels.
func value(t *testing.T, mf map[string]*dto.MetricFamily, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	f := mf[name]
	if f == nil {
		return 0, false
	}
	for _, m := range f.Metric {
		ok := true
		for k, v := range labels {
			found := false
			for _, lp := range m.Label {
				found = found || (lp.GetName() == k && lp.GetValue() == v)
			}
			ok = ok && found
		}
		if !ok {
			continue
		}
		switch {
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		}
	}
	return 0, false
}

func TestScrapeServesTheLastSample(t *testing.T) {
	srv, eng := newServer(t)
	mf := scrape(t, srv.Handler())
	if _, ok := value(t, mf, "mlc_container_cpu_percent", nil); ok {
		t.Errorf("container figures before the first sample")
	}
	if err := srv.SampleNow(context.Background()); err != nil {
		t.Fatal(err)
	}
	calls := len(eng.Calls())
	mf = scrape(t, srv.Handler())
	if n := len(eng.Calls()); n != calls {
		t.Errorf("a scrape called the engine: %v", eng.Calls()[calls:])
	}
	a1 := map[string]string{"user": "alice", "container": "a1"}
	for name, want := range map[string]float64{
		"mlc_container_memory_bytes":                 1 << 30,
		"mlc_container_memory_limit_bytes":           2 << 30,
		"mlc_container_pids":                         3,
		"mlc_container_running":                      1,
		"mlc_container_gpus_allocated":               1,
		"mlc_container_network_receive_bytes_total":  10,
		"mlc_container_network_transmit_bytes_total": 20,
	} {
		if v, ok := value(t, mf, name, a1); !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", name, v, ok, want)
		}
	}
	if v, ok := value(t, mf, "mlc_container_cpu_percent", a1); !ok || v <= 0 {
		t.Errorf("cpu %v %v", v, ok)
	}
	g0 := map[string]string{"user": "alice", "container": "a1", "gpu": "0"}
	if v, _ := value(t, mf, "mlc_container_gpu_memory_bytes", g0); v != 5<<30 {
		t.Errorf("a1's GPU memory %v", v)
	}
	if v, _ := value(t, mf, "mlc_container_gpu_utilization_percent", g0); v != 40 {
		t.Errorf("a1's GPU util %v", v)
	}
	if v, ok := value(t, mf, "mlc_container_idle_seconds", a1); !ok || v != 0 {
		t.Errorf("a busy container's idle time %v %v", v, ok)
	}
	if v, _ := value(t, mf, "mlc_gpu_unattributed_processes", map[string]string{"gpu": "1", "owner": "host"}); v != 1 {
		t.Errorf("host process on GPU 1 not flagged: %v", v)
	}
	if v, _ := value(t, mf, "mlc_gpu_allocated", map[string]string{"gpu": "0", "user": "alice", "container": "a1"}); v != 1 {
		t.Errorf("allocation %v", v)
	}
	if v, _ := value(t, mf, "mlc_gpu_free", map[string]string{"gpu": "1"}); v != 1 {
		t.Errorf("GPU 1 free %v", v)
	}
	for name, want := range map[string]float64{"mlc_gpu_queue_length": 1, "mlc_ledger_up": 1, "mlc_monitor_nvml_up": 1,
		"mlc_monitor_history_up": 1, "mlc_monitor_samples_total": 1, "mlc_monitor_sample_failures_total": 0} {
		if v, ok := value(t, mf, name, nil); !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", name, v, ok, want)
		}
	}
	if v, _ := value(t, mf, "mlc_user_gpu_memory_bytes", map[string]string{"user": "alice"}); v != 5<<30 {
		t.Errorf("alice's GPU memory %v", v)
	}
	for name := range mf {
		if !strings.HasPrefix(name, "mlc_") {
			t.Errorf("unexpected metric %s", name)
		}
	}
}

func TestServeOverLoopback(t *testing.T) {
	srv, _ := newServer(t)
	ctx, cancel := context.WithCancel(context.Background())
	addr := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, "127.0.0.1:0", func(a net.Addr) { addr <- a }) }()
	a := <-addr
	deadline := time.Now().Add(10 * time.Second)
	var mf map[string]*dto.MetricFamily
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + a.String() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		mf = parse(t, resp.Body)
		resp.Body.Close()
		if _, ok := value(t, mf, "mlc_container_memory_bytes", nil); ok {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, ok := value(t, mf, "mlc_container_memory_bytes", map[string]string{"container": "a1"}); !ok {
		t.Fatalf("no container in the scrape after the first sample")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after its context ended")
	}
}

func TestHistoryFailureIsCounted(t *testing.T) {
	srv, _ := newServer(t)
	srv.Sampler.History.Close()
	if err := srv.SampleNow(context.Background()); err == nil {
		t.Fatal("a sample that could not be recorded reports no error")
	}
	mf := scrape(t, srv.Handler())
	if v, _ := value(t, mf, "mlc_monitor_history_up", nil); v != 0 {
		t.Errorf("history_up %v", v)
	}
	if v, _ := value(t, mf, "mlc_monitor_sample_failures_total", nil); v != 1 {
		t.Errorf("failures %v", v)
	}
	if _, ok := value(t, mf, "mlc_container_memory_bytes", nil); !ok {
		t.Errorf("the sample itself is still served")
	}
}

func TestMetricNamesAreDescribed(t *testing.T) {
	names := MetricNames()
	if len(names) < 25 {
		t.Fatalf("%d metrics", len(names))
	}
	seen := map[string]bool{}
	for _, n := range names {
		if seen[n] || !model.IsValidLegacyMetricName(n) {
			t.Errorf("bad or duplicate name %q", n)
		}
		seen[n] = true
	}
}

func TestToken(t *testing.T) {
	srv, _ := newServer(t)
	srv.Token = "s3cret-token-of-32-characters-xx"
	if err := srv.SampleNow(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"", "Bearer wrong", "Basic " + srv.Token, srv.Token} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("GET", "/metrics", nil)
		if h != "" {
			req.Header.Set("Authorization", h)
		}
		srv.Handler().ServeHTTP(rec, req)
		if rec.Code != http.StatusUnauthorized || strings.Contains(rec.Body.String(), "alice") {
			t.Errorf("Authorization %q: %d %q", h, rec.Code, rec.Body.String())
		}
	}
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+srv.Token)
	srv.Handler().ServeHTTP(rec, req)
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), `user="alice"`) {
		t.Errorf("with the token: %d", rec.Code)
	}
}
