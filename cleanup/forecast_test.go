package cleanup

import (
	"strings"
	"testing"
	"time"

	"github.com/mlc-lab/mlc/config"
)

func TestForecast(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	h := time.Hour
	timeout := 72 * h
	c := Container{ID: "c", Managed: true, State: "running", StartedAt: now.Add(-100 * h), IdleTimeout: &timeout}
	r := Rules{MaxSampleAge: 15 * time.Minute, KeepAliveMax: 24 * h, HighDemandFactor: 0.5}
	a := Activity{FirstSeen: now.Add(-90 * h), LastSeen: now.Add(-time.Minute), LastBusy: now.Add(-10 * h), SinceBusy: 120}

	if f := Forecast(now, c, a, true, r, false); !f.Known || f.For != 10*h || !f.StopAt.Equal(now.Add(62*h)) {
		t.Errorf("idle 10h of 72h: %+v", f)
	}
	if f := Forecast(now, c, a, true, r, true); !f.StopAt.Equal(now.Add(26 * h)) {
		t.Errorf("high demand halves the timeout: %+v", f)
	}
	busy := a
	busy.LastBusy = a.LastSeen
	if f := Forecast(now, c, busy, true, r, false); !f.Known || f.For != 0 {
		t.Errorf("busy at the latest sample: %+v", f)
	}
	if f := Forecast(now, c, a, false, r, false); f.Known {
		t.Errorf("no history: %+v", f)
	}
	stale := a
	stale.LastSeen = now.Add(-time.Hour)
	if f := Forecast(now, c, stale, true, r, false); f.Known {
		t.Errorf("stale history: %+v", f)
	}
	never := c
	never.IdleTimeout = nil
	if f := Forecast(now, never, a, true, r, false); !f.StopAt.IsZero() || f.For != 10*h {
		t.Errorf("null timeout: %+v", f)
	}
	prot := c
	prot.Protected = "mlc protect"
	if f := Forecast(now, prot, a, true, r, false); !f.StopAt.IsZero() {
		t.Errorf("protected: %+v", f)
	}
	ka := c
	ka.KeepAlive = now.Add(-time.Hour)
	if f := Forecast(now, ka, a, true, r, false); !f.Postpone.Equal(now.Add(23 * h)) {
		t.Errorf("keep-alive: %+v", f)
	}
}

func TestIdleRule(t *testing.T) {
	cfg := config.Default()
	if got := IdleRule(cfg, config.Never, "group staff"); got != "idle containers are never stopped (idle_timeout null, group staff)" {
		t.Errorf("%q", got)
	}
	got := IdleRule(cfg, config.Duration{D: 72 * time.Hour}, "default")
	for _, want := range []string{"idle for 3d (default)", "CPU < 5 %", "own GPU < 5 %", "80 % and 95 %", "up to 24h"} {
		if !strings.Contains(got, want) {
			t.Errorf("%q lacks %q", got, want)
		}
	}
}

func TestKeepAliveTime(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	for in, want := range map[time.Time]time.Time{
		now.Add(-time.Hour):                         now.Add(-time.Hour),
		now.Add(30 * time.Second):                   now.Add(30 * time.Second), // clock skew
		now.Add(2 * time.Minute):                    {},                        // a time to come: none
		time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC): {},
	} {
		if got := keepAliveTime(in, now); !got.Equal(want) {
			t.Errorf("keepAliveTime(%v) = %v, want %v", in, got, want)
		}
	}
}
