// Package server is mlc's monitor loop and Prometheus exporter: it samples
// every managed container and GPU (package monitor), records the samples in
// the history database (package history) and answers scrapes from the last
// sample, so a scrape never waits on Docker or NVML.
package server

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/mlc-lab/mlc/gpualloc"
	"github.com/mlc-lab/mlc/monitor"
	"github.com/mlc-lab/mlc/monitor/history"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Sampler takes samples of the whole server and records them.
type Sampler struct {
	Collector *monitor.Collector
	// History records each sample when not nil.
	History   *history.DB
	Busy      history.Busy
	Retention time.Duration
	// Ledger gives the GPU ledger's state (allocations, wait queue); nil on
	// a server without GPUs.
	Ledger func(ctx context.Context) (gpualloc.Status, error)
	// Window is the CPU window of a sample that has no previous reading.
	Window time.Duration
}

// Snapshot is one sample with what the exporter shows beside it.
type Snapshot struct {
	Sample    monitor.Sample
	Ledger    gpualloc.Status
	LedgerErr error
	// Activity is each container's history (by id): when it was last busy.
	Activity map[string]history.Activity
	Took     time.Duration
	// RecordErr is why the sample could not be written to the history.
	RecordErr error
}

// Once takes one sample of every managed container (running or not) and
// GPU, with the GPU processes outside mlc, and records it.
func (s *Sampler) Once(ctx context.Context) (Snapshot, error) {
	start := time.Now()
	smp, err := s.Collector.Collect(ctx, monitor.Options{Window: s.Window, Reuse: true, Unattributed: true, Stopped: true})
	if err != nil {
		return Snapshot{}, err
	}
	snap := Snapshot{Sample: smp}
	if s.Ledger != nil {
		snap.Ledger, snap.LedgerErr = s.Ledger(ctx)
	}
	if s.History != nil {
		snap.RecordErr = s.History.Record(smp, s.Busy, s.Retention)
		if act, err := s.History.Activity(); err == nil {
			snap.Activity = act
		} else if snap.RecordErr == nil {
			snap.RecordErr = err
		}
	}
	snap.Took = time.Since(start)
	return snap, nil
}

// Server samples in the background and exports the last sample.
type Server struct {
	Sampler  *Sampler
	Interval time.Duration
	Log      io.Writer // one line per failed sample
	// Token, when set, must come with every scrape as "Authorization:
	// Bearer TOKEN": a loopback port is open to every local user.
	Token string

	mu       sync.RWMutex
	last     *Snapshot
	samples  float64
	failures float64
	reg      *prometheus.Registry
}

// New returns a server; call Run to sample and Handler to export.
func New(s *Sampler, interval time.Duration, log io.Writer) *Server {
	srv := &Server{Sampler: s, Interval: interval, Log: log, reg: prometheus.NewRegistry()}
	srv.reg.MustRegister(exporter{srv})
	return srv
}

// SampleNow takes one sample and makes it the one scrapes see.
func (srv *Server) SampleNow(ctx context.Context) error {
	snap, err := srv.Sampler.Once(ctx)
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if err != nil {
		srv.failures++
		return err
	}
	srv.samples++
	srv.last = &snap
	if snap.RecordErr != nil {
		srv.failures++
		return fmt.Errorf("history: %w", snap.RecordErr)
	}
	return nil
}

// Run samples every Interval until ctx ends.
func (srv *Server) Run(ctx context.Context) {
	t := time.NewTicker(srv.Interval)
	defer t.Stop()
	for {
		if err := srv.SampleNow(ctx); err != nil && ctx.Err() == nil && srv.Log != nil {
			fmt.Fprintf(srv.Log, "mlc monitor: sample failed: %v\n", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Last is the last sample (nil before the first).
func (srv *Server) Last() *Snapshot {
	srv.mu.RLock()
	defer srv.mu.RUnlock()
	return srv.last
}

// Handler serves /metrics (and a pointer to it at /).
func (srv *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	metrics := promhttp.HandlerFor(srv.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
		if srv.Token != "" {
			got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(srv.Token)) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="mlc"`)
				http.Error(w, "mlc monitor: a bearer token is needed (monitor.token_file)", http.StatusUnauthorized)
				return
			}
		}
		metrics.ServeHTTP(w, r)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintln(w, "mlc monitor: metrics at /metrics")
	})
	return mux
}

// Serve listens on addr and serves Handler until ctx ends, sampling in the
// background. ready, when not nil, gets the address listened on.
func (srv *Server) Serve(ctx context.Context, addr string, ready func(net.Addr)) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: time.Minute}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		srv.Run(ctx)
	}()
	go func() {
		<-ctx.Done()
		sctx, done := context.WithTimeout(context.Background(), 5*time.Second)
		defer done()
		_ = hs.Shutdown(sctx)
	}()
	if ready != nil {
		ready(ln.Addr())
	}
	err = hs.Serve(ln)
	cancel()
	wg.Wait()
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}
