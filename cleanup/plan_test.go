package cleanup

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

var now = time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)

func dur(d time.Duration) *time.Duration { return &d }

// managed is a running managed container of alice's, started ten days ago,
// with a 72h idle_timeout from group staff.
func managed(id, user, name string) Container {
	return Container{
		ID: id, DockerName: "mlc-" + user + "-" + name, Name: name, User: user, Managed: true,
		State: "running", Created: now.Add(-241 * time.Hour), StartedAt: now.Add(-240 * time.Hour),
		GPUs: 1, ImageID: "sha256:pytorch", IdleTimeout: dur(72 * time.Hour), IdleSource: "group staff",
	}
}

// idleFor is history of a container whose last busy sample was d ago, sampled
// every 5 minutes ever since, the latest 2 minutes ago.
func idleFor(d time.Duration) Activity {
	return Activity{
		FirstSeen: now.Add(-30 * 24 * time.Hour), LastSeen: now.Add(-2 * time.Minute),
		LastBusy: now.Add(-d), Samples: 5000, SinceBusy: int(d / (5 * time.Minute)),
	}
}

func rules() Rules {
	return Rules{
		IdleCPUPercent: 5, IdleGPUPercent: 5, IdleNetBytes: 1 << 20,
		Grace: time.Hour, KeepAliveMax: 24 * time.Hour,
		HighDemandFraction: 0.75, HighDemandFactor: 0.5,
		StopTimeout: 30, ConfigSource: "/etc/mlc/resource-limits.yaml",
	}
}

// forID returns the actions and skips about one container.
func forID(p Plan, id string) ([]Action, []Skip) {
	var as []Action
	var ss []Skip
	for _, a := range p.Actions {
		if a.ContainerID == id {
			as = append(as, a)
		}
	}
	for _, s := range p.Skipped {
		if s.ContainerID == id {
			ss = append(ss, s)
		}
	}
	return as, ss
}

func TestIdleDecision(t *testing.T) {
	c := managed("c1", "alice", "thesis")
	busy := func(d time.Duration) time.Time { return now.Add(-d) }
	warned95 := []Warning{{Level: 95, IdleSince: busy(73 * time.Hour), At: now.Add(-4 * time.Hour)}}
	tests := []struct {
		name   string
		c      func(*Container)
		act    *Activity // nil: none
		warned []Warning
		rules  func(*Rules)
		only   string

		kind  string // expected action; "" none
		level int
		skip  string // expected substring of the skip; "" none
	}{
		{name: "busy recently", act: ptr(idleFor(10 * time.Minute))},
		{name: "busy in the latest sample", act: ptr(idleFor(time.Minute))},
		{name: "idle 10h of 72h", act: ptr(idleFor(10 * time.Hour))},
		{name: "idle 58h: 80 %", act: ptr(idleFor(58 * time.Hour)), kind: KindWarn, level: 80},
		{name: "idle 69h: 95 %", act: ptr(idleFor(69 * time.Hour)), kind: KindWarn, level: 95},
		{name: "idle 69h, 80 % given: 95 %", act: ptr(idleFor(69 * time.Hour)),
			warned: []Warning{{Level: 80, IdleSince: busy(69 * time.Hour)}}, kind: KindWarn, level: 95},
		{name: "idle 69h, 95 % given: nothing", act: ptr(idleFor(69 * time.Hour)),
			warned: []Warning{{Level: 95, IdleSince: busy(69 * time.Hour)}}},
		{name: "idle 73h, never warned: warn 95, no stop", act: ptr(idleFor(73 * time.Hour)), kind: KindWarn, level: 95},
		{name: "idle 73h, only 80 % given: warn 95, no stop", act: ptr(idleFor(73 * time.Hour)),
			warned: []Warning{{Level: 80, IdleSince: busy(73 * time.Hour)}}, kind: KindWarn, level: 95},
		{name: "idle 73h, 95 % given: stop", act: ptr(idleFor(73 * time.Hour)), warned: warned95, kind: KindStop},
		{name: "warning stored without sub-second part still counts", act: ptr(idleFor(73*time.Hour + 400*time.Millisecond)),
			warned: []Warning{{Level: 95, IdleSince: busy(73*time.Hour + 400*time.Millisecond).Truncate(time.Second)}}, kind: KindStop},
		{name: "idle 73h, 95 % given for an older spell: warn again", act: ptr(idleFor(73 * time.Hour)),
			warned: []Warning{{Level: 95, IdleSince: busy(100 * time.Hour)}}, kind: KindWarn, level: 95},
		{name: "null timeout: never", c: func(c *Container) { c.IdleTimeout = nil; c.IdleSource = "user bob" },
			act: ptr(idleFor(500 * time.Hour)), skip: "never: idle_timeout null (user bob)"},
		{name: "short timeout 30m", c: func(c *Container) { c.IdleTimeout = dur(30 * time.Minute) },
			act: ptr(idleFor(25 * time.Minute)), kind: KindWarn, level: 80},
		{name: "no history", act: nil, skip: "no usage history"},
		{name: "too little history", act: &Activity{FirstSeen: busy(10 * time.Minute), LastSeen: busy(time.Minute), Samples: 2, SinceBusy: 2},
			skip: "too little history: 2 samples since the last busy one, 3 needed"},
		{name: "min samples from rules, sparse history", act: &Activity{FirstSeen: busy(300 * time.Hour), LastSeen: busy(time.Minute),
			LastBusy: busy(73 * time.Hour), Samples: 100, SinceBusy: 20}, warned: warned95,
			rules: func(r *Rules) { r.MinSamples = 30 }, skip: "too little history: 20 samples since the last busy one, 30 needed"},
		{name: "min samples from rules", act: ptr(idleFor(73 * time.Hour)), warned: warned95,
			rules: func(r *Rules) { r.MinSamples = 30 }, kind: KindStop},
		{name: "stale history: monitor stopped", act: &Activity{FirstSeen: busy(300 * time.Hour), LastSeen: busy(20 * time.Minute),
			LastBusy: busy(100 * time.Hour), Samples: 900, SinceBusy: 900}, warned: []Warning{{Level: 95, IdleSince: busy(100 * time.Hour)}},
			skip: "stale usage history: latest sample 20m ago, at most 15m allowed"},
		{name: "max sample age from rules", act: &Activity{FirstSeen: busy(300 * time.Hour), LastSeen: busy(20 * time.Minute),
			LastBusy: busy(100 * time.Hour), Samples: 900, SinceBusy: 900}, warned: []Warning{{Level: 95, IdleSince: busy(100 * time.Hour)}},
			rules: func(r *Rules) { r.MaxSampleAge = time.Hour }, kind: KindStop},
		{name: "grace: started 30m ago", c: func(c *Container) { c.StartedAt = busy(30 * time.Minute) },
			act: ptr(idleFor(73 * time.Hour)), skip: "too young: started 30m ago, grace 1h"},
		{name: "never busy: idle since start", c: func(c *Container) { c.StartedAt = busy(73 * time.Hour) },
			act:    &Activity{FirstSeen: busy(73 * time.Hour), LastSeen: busy(time.Minute), Samples: 876, SinceBusy: 876},
			warned: []Warning{{Level: 95, IdleSince: busy(73 * time.Hour)}}, kind: KindStop},
		{name: "busy before a restart: idle since the restart", c: func(c *Container) { c.StartedAt = busy(58 * time.Hour) },
			act: ptr(idleFor(100 * time.Hour)), kind: KindWarn, level: 80},
		{name: "monitor started after the container: idle counts from its first sample",
			act: &Activity{FirstSeen: busy(10 * time.Hour), LastSeen: busy(time.Minute), Samples: 120, SinceBusy: 120}},
		{name: "keep-alive fresh, overdue and warned: postponed", c: func(c *Container) { c.KeepAlive = busy(2 * time.Hour) },
			act: ptr(idleFor(73 * time.Hour)), warned: warned95, skip: "keep-alive until 2026-11-24 07:00"},
		{name: "keep-alive expired: stop", c: func(c *Container) { c.KeepAlive = busy(25 * time.Hour) },
			act: ptr(idleFor(73 * time.Hour)), warned: warned95, kind: KindStop},
		{name: "keep-alive fresh at 80 %: warning says so", c: func(c *Container) { c.KeepAlive = busy(time.Hour) },
			act: ptr(idleFor(58 * time.Hour)), kind: KindWarn, level: 80},
		{name: "only stopped: idle not planned", act: ptr(idleFor(73 * time.Hour)), warned: warned95, only: OnlyStopped},
		{name: "only images: idle not planned", act: ptr(idleFor(73 * time.Hour)), warned: warned95, only: OnlyImages},
		{name: "only idle", act: ptr(idleFor(73 * time.Hour)), warned: warned95, only: OnlyIdle, kind: KindStop},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := c
			if tt.c != nil {
				tt.c(&c)
			}
			in := Input{Now: now, Containers: []Container{c}, Activity: map[string]Activity{},
				Warned: map[string][]Warning{c.ID: tt.warned}, Only: tt.only}
			if tt.act != nil {
				in.Activity[c.ID] = *tt.act
			}
			r := rules()
			if tt.rules != nil {
				tt.rules(&r)
			}
			p := MakePlan(in, r)
			as, ss := forID(p, c.ID)
			if tt.kind == "" && len(as) > 0 {
				t.Fatalf("want no action, got %+v", as)
			}
			if tt.kind != "" {
				if len(as) != 1 || as[0].Action != tt.kind || as[0].Level != tt.level {
					t.Fatalf("want one %s %d, got %+v (skipped %+v)", tt.kind, tt.level, as, ss)
				}
				a := as[0]
				if a.Rule != RuleIdleTimeout || a.Name != "thesis" || a.User != "alice" || a.Source == "" {
					t.Errorf("action fields: %+v", a)
				}
				if a.Action == KindStop && a.StopTimeout != 30 {
					t.Errorf("stop timeout %d, want 30", a.StopTimeout)
				}
				if a.Action == KindWarn && a.StopAt.IsZero() {
					t.Errorf("warning without stop_at: %+v", a)
				}
			}
			if tt.skip == "" && len(ss) > 0 {
				t.Fatalf("want no skip, got %+v", ss)
			}
			if tt.skip != "" && (len(ss) != 1 || !strings.Contains(ss[0].Why, tt.skip)) {
				t.Fatalf("want skip %q, got %+v", tt.skip, ss)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestIdleReasonHasTheNumbers(t *testing.T) {
	c := managed("c1", "alice", "thesis")
	a := idleFor(71 * time.Hour)
	p := MakePlan(Input{Now: now, Containers: []Container{c}, Activity: map[string]Activity{"c1": a}}, rules())
	if len(p.Actions) != 1 {
		t.Fatalf("%+v", p)
	}
	got := p.Actions[0]
	want := "idle 71h of its 72h idle_timeout (group staff), holding 1 GPU; CPU < 5 %, own GPU < 5 %, net < 1MiB per sample since 2026-11-20 10:00"
	if !strings.HasPrefix(got.Reason, want) {
		t.Errorf("reason\n got %q\nwant prefix %q", got.Reason, want)
	}
	if got.Level != 95 || !got.IdleSince.Equal(a.LastBusy) || !got.StopAt.Equal(a.LastBusy.Add(72*time.Hour)) || got.Source != "group staff" {
		t.Errorf("%+v", got)
	}
}

func TestKeepAliveWarning(t *testing.T) {
	c := managed("c1", "alice", "thesis")
	c.KeepAlive = now.Add(-time.Hour) // valid until now+23h
	a := idleFor(70 * time.Hour)      // stop due now+2h
	p := MakePlan(Input{Now: now, Containers: []Container{c}, Activity: map[string]Activity{"c1": a}}, rules())
	if len(p.Actions) != 1 || !p.Actions[0].KeepAlive || !p.Actions[0].StopAt.Equal(now.Add(23*time.Hour)) ||
		!strings.Contains(p.Actions[0].Reason, "keep-alive file postpones the stop until 2026-11-24 08:00") {
		t.Fatalf("%+v", p.Actions)
	}
}

func TestHighDemand(t *testing.T) {
	c := managed("c1", "alice", "thesis")
	act := map[string]Activity{"c1": idleFor(40 * time.Hour)} // 55 % of 72h; 111 % of 36h
	warned := map[string][]Warning{"c1": {{Level: 95, IdleSince: now.Add(-40 * time.Hour)}}}
	tests := []struct {
		name                    string
		total, alloc, waiting   int
		warned                  map[string][]Warning
		high                    bool
		kind                    string
		level                   int
		reason                  string
		factor, fraction        float64
		noFactor, customFactors bool
	}{
		{name: "busy server, someone waits: 36h, warn first", total: 8, alloc: 7, waiting: 2, high: true, kind: KindWarn, level: 95,
			reason: "idle 40h of its 72h idle_timeout (group staff) x0.5 = 36h (high demand: 7 of 8 GPUs allocated, 2 waiting)"},
		{name: "busy server, someone waits, warned: stop", total: 8, alloc: 7, waiting: 2, warned: warned, high: true, kind: KindStop},
		{name: "exactly the fraction", total: 8, alloc: 6, waiting: 1, warned: warned, high: true, kind: KindStop},
		{name: "nobody waits: 72h", total: 8, alloc: 8, waiting: 0, warned: warned},
		{name: "below the fraction", total: 8, alloc: 5, waiting: 3, warned: warned},
		{name: "no GPUs", total: 0, alloc: 0, waiting: 3, warned: warned},
		{name: "factor 0: off", total: 8, alloc: 8, waiting: 3, warned: warned, customFactors: true, factor: 0, fraction: 0.75},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := rules()
			if tt.customFactors {
				r.HighDemandFactor, r.HighDemandFraction = tt.factor, tt.fraction
			}
			p := MakePlan(Input{Now: now, Containers: []Container{c}, Activity: act, Warned: tt.warned,
				GPUsTotal: tt.total, GPUsAllocated: tt.alloc, Waiting: tt.waiting}, r)
			if p.HighDemand != tt.high {
				t.Errorf("high demand %v, want %v", p.HighDemand, tt.high)
			}
			if tt.kind == "" {
				if len(p.Actions) != 0 {
					t.Fatalf("want nothing, got %+v", p.Actions)
				}
				return
			}
			if len(p.Actions) != 1 || p.Actions[0].Action != tt.kind || p.Actions[0].Level != tt.level {
				t.Fatalf("want %s %d, got %+v", tt.kind, tt.level, p.Actions)
			}
			if !strings.Contains(p.Actions[0].Reason, tt.reason) || !strings.Contains(p.Actions[0].Source, "high demand") {
				t.Errorf("reason %q source %q", p.Actions[0].Reason, p.Actions[0].Source)
			}
		})
	}
}

// Two containers share a GPU: A's own processes keep it busy, B's do not.
// Busy is per container in the history, so B is idle whatever A does.
func TestSharedGPUBusyIsPerContainer(t *testing.T) {
	a, b := managed("ca", "alice", "train"), managed("cb", "bob", "notebook")
	in := Input{Now: now, Containers: []Container{a, b},
		Activity: map[string]Activity{
			"ca": idleFor(5 * time.Minute), // its own GPU processes were busy in the latest samples
			"cb": idleFor(80 * time.Hour),  // on the same device, its own processes idle
		},
		Warned: map[string][]Warning{"cb": {{Level: 95, IdleSince: now.Add(-80 * time.Hour)}}},
	}
	p := MakePlan(in, rules())
	if as, _ := forID(p, "ca"); len(as) != 0 {
		t.Errorf("busy container acted on: %+v", as)
	}
	if as, _ := forID(p, "cb"); len(as) != 1 || as[0].Action != KindStop {
		t.Errorf("idle container on a shared GPU: %+v", as)
	}
}

// 80 % then 95 % then stop, over three runs with the warnings fed back; a
// run right after each plans nothing new; a busy spell starts over.
func TestWarningSchedule(t *testing.T) {
	c := managed("c1", "alice", "thesis")
	lastBusy := now.Add(-100 * time.Hour)
	warned := map[string][]Warning{}
	run := func(at time.Time) Plan {
		t.Helper()
		a := Activity{FirstSeen: now.Add(-400 * time.Hour), LastSeen: at.Add(-time.Minute), LastBusy: lastBusy,
			Samples: 1000, SinceBusy: int(at.Sub(lastBusy) / (5 * time.Minute))}
		p := MakePlan(Input{Now: at, Containers: []Container{c}, Activity: map[string]Activity{"c1": a}, Warned: warned}, rules())
		for _, x := range p.Actions {
			if x.Action == KindWarn {
				warned["c1"] = append(warned["c1"], Warning{Level: x.Level, IdleSince: x.IdleSince, At: at})
			}
		}
		return p
	}
	expect := func(p Plan, kind string, level int) {
		t.Helper()
		if kind == "" {
			if len(p.Actions) != 0 {
				t.Fatalf("want nothing, got %+v", p.Actions)
			}
			return
		}
		if len(p.Actions) != 1 || p.Actions[0].Action != kind || p.Actions[0].Level != level {
			t.Fatalf("want %s %d, got %+v", kind, level, p.Actions)
		}
	}
	at := func(idle time.Duration) time.Time { return lastBusy.Add(idle) }

	expect(run(at(50*time.Hour)), "", 0)
	expect(run(at(58*time.Hour)), KindWarn, 80)
	expect(run(at(58*time.Hour+5*time.Minute)), "", 0) // a second run plans nothing new
	expect(run(at(69*time.Hour)), KindWarn, 95)
	expect(run(at(69*time.Hour+5*time.Minute)), "", 0)
	expect(run(at(73*time.Hour)), KindStop, 0)

	// Busy again: the old warnings are for another spell.
	lastBusy = at(74 * time.Hour)
	expect(run(at(10*time.Hour)), "", 0)
	expect(run(at(73*time.Hour)), KindWarn, 95) // overdue, but warned first
	expect(run(at(74*time.Hour)), KindStop, 0)

	// Skipping straight to the timeout (cleanup did not run for days) still warns first.
	warned = map[string][]Warning{}
	lastBusy = now.Add(-200 * time.Hour)
	expect(run(at(200*time.Hour)), KindWarn, 95)
	expect(run(at(201*time.Hour)), KindStop, 0)
}

// Whatever the history and warnings, no container is warned about and
// stopped in the same run, nor gets two actions.
func TestNeverWarnAndStopInOneRun(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 2000 {
		c := managed("c1", "alice", "thesis")
		c.IdleTimeout = dur(time.Duration(1+rng.IntN(100)) * time.Hour)
		if rng.IntN(4) == 0 {
			c.KeepAlive = now.Add(-time.Duration(rng.IntN(48)) * time.Hour)
		}
		idle := time.Duration(rng.IntN(200)) * time.Hour
		a := idleFor(idle)
		var ws []Warning
		for _, l := range []int{80, 95} {
			if rng.IntN(2) == 0 {
				ws = append(ws, Warning{Level: l, IdleSince: a.LastBusy})
			}
		}
		in := Input{Now: now, Containers: []Container{c}, Activity: map[string]Activity{"c1": a},
			Warned: map[string][]Warning{"c1": ws}, GPUsTotal: 4, GPUsAllocated: rng.IntN(5), Waiting: rng.IntN(2)}
		p := MakePlan(in, rules())
		if len(p.Actions) > 1 {
			t.Fatalf("case %d: two actions for one container: %+v", i, p.Actions)
		}
		if len(p.Actions) == 1 && p.Actions[0].Action == KindStop && !slices.ContainsFunc(ws, func(w Warning) bool { return w.Level == 95 }) {
			t.Fatalf("case %d: stop without an earlier 95 %% warning: %+v", i, p.Actions)
		}
	}
}

func TestStoppedContainers(t *testing.T) {
	after := dur(7 * 24 * time.Hour)
	stopped := func(id, state string, finishedAgo time.Duration) Container {
		c := managed(id, "alice", "c-"+id)
		c.State = state
		c.Created = now.Add(-30 * 24 * time.Hour)
		c.StartedAt = now.Add(-29 * 24 * time.Hour)
		if finishedAgo > 0 {
			c.FinishedAt = now.Add(-finishedAgo)
		} else {
			c.StartedAt, c.FinishedAt = time.Time{}, time.Time{}
		}
		return c
	}
	tests := []struct {
		name   string
		c      Container
		after  *time.Duration
		remove bool
		skip   string
	}{
		{name: "exited 8d, after 7d", c: stopped("a", "exited", 8*24*time.Hour), after: after, remove: true},
		{name: "exited 6d, after 7d", c: stopped("b", "exited", 6*24*time.Hour), after: after},
		{name: "created, never started, 30d", c: stopped("c", "created", 0), after: after, remove: true},
		{name: "dead 8d", c: stopped("d", "dead", 8*24*time.Hour), after: after, remove: true},
		{name: "never: null", c: stopped("e", "exited", 300*24*time.Hour), skip: "never removed: cleanup.remove_stopped_after null"},
		{name: "paused is not judged", c: func() Container { c := managed("f", "alice", "p"); c.State = "paused"; return c }(),
			after: after, skip: "state paused: not judged"},
		{name: "running is not removed", c: managed("g", "alice", "r"), after: dur(time.Second)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := rules()
			r.RemoveStoppedAfter = tt.after
			p := MakePlan(Input{Now: now, Containers: []Container{tt.c}, Activity: map[string]Activity{}}, r)
			as, ss := forID(p, tt.c.ID)
			removes := 0
			for _, a := range as {
				if a.Action == KindRemove {
					removes++
					if a.Rule != RuleRemoveStopped || a.Source != r.ConfigSource || !strings.Contains(a.Reason, "removed after 168h") {
						t.Errorf("%+v", a)
					}
				}
			}
			if (removes == 1) != tt.remove || removes > 1 {
				t.Fatalf("removes %d, want %v: %+v", removes, tt.remove, as)
			}
			if tt.skip != "" && !slices.ContainsFunc(ss, func(s Skip) bool { return strings.Contains(s.Why, tt.skip) }) {
				t.Fatalf("want skip %q, got %+v", tt.skip, ss)
			}
		})
	}
}

// Every path, every kind of protection: nothing is planned for the container.
func TestProtectionInEveryPath(t *testing.T) {
	type path struct {
		name string
		make func() (Container, Activity, []Warning)
		want string // what an unprotected twin gets
	}
	paths := []path{
		{"idle stop", func() (Container, Activity, []Warning) {
			a := idleFor(80 * time.Hour)
			return managed("x", "alice", "thesis"), a, []Warning{{Level: 95, IdleSince: a.LastBusy}}
		}, KindStop},
		{"idle warning", func() (Container, Activity, []Warning) {
			return managed("x", "alice", "thesis"), idleFor(60 * time.Hour), nil
		}, KindWarn},
		{"stopped removal", func() (Container, Activity, []Warning) {
			c := managed("x", "alice", "thesis")
			c.State, c.FinishedAt = "exited", now.Add(-100*24*time.Hour)
			return c, Activity{}, nil
		}, KindRemove},
	}
	protections := []struct {
		name string
		set  func(*Container)
		why  string
	}{
		{"label", func(c *Container) { c.Protected = "label mlc.protected" }, "protected: label mlc.protected"},
		{"pattern", func(c *Container) { c.Protected = "pattern *-keep" }, "protected: pattern *-keep"},
		{"mlc protect", func(c *Container) { c.Protected = "mlc protect" }, "protected: mlc protect"},
		{"foreign", func(c *Container) { c.Managed, c.User, c.Name, c.DockerName = false, "", "", "nightly-job" }, "foreign: no mlc.managed label"},
		{"foreign with a user label", func(c *Container) { c.Managed = false }, "foreign: no mlc.managed label"},
	}
	for _, pa := range paths {
		for _, pr := range protections {
			t.Run(pa.name+"/"+pr.name, func(t *testing.T) {
				r := rules()
				r.RemoveStoppedAfter = dur(24 * time.Hour)
				c, a, ws := pa.make()
				twin := c
				twin.ID = "twin"
				pr.set(&c)
				in := Input{Now: now, Containers: []Container{c, twin},
					Activity:  map[string]Activity{c.ID: a, twin.ID: a},
					Warned:    map[string][]Warning{c.ID: ws, twin.ID: ws},
					GPUsTotal: 2, GPUsAllocated: 2, Waiting: 5}
				p := MakePlan(in, r)
				as, ss := forID(p, c.ID)
				if len(as) != 0 {
					t.Fatalf("acted on a %s container: %+v", pr.name, as)
				}
				if len(ss) != 1 || ss[0].Why != pr.why {
					t.Fatalf("skip %+v, want %q", ss, pr.why)
				}
				if tas, _ := forID(p, twin.ID); len(tas) != 1 || tas[0].Action != pa.want {
					t.Fatalf("unprotected twin: %+v, want %s", tas, pa.want)
				}
			})
		}
	}
}

func TestImages(t *testing.T) {
	old := now.Add(-90 * 24 * time.Hour)
	images := []Image{
		{ID: "sha256:dangling", Created: old, Dangling: true},
		{ID: "sha256:dangling-used-by-foreign", Created: old, Dangling: true},
		{ID: "sha256:old", Tags: []string{"team/old:1", "team/old:latest"}, Created: old},
		{ID: "sha256:old-catalogue", Tags: []string{"pytorch:2.5"}, Created: old},
		{ID: "sha256:old-used-by-managed", Tags: []string{"tf:2"}, Created: old},
		{ID: "sha256:young", Tags: []string{"new:1"}, Created: now.Add(-time.Hour)},
		{ID: "sha256:old-used-by-protected", Tags: []string{"keep:1"}, Created: old},
	}
	foreign := Container{ID: "f1", DockerName: "someones-db", State: "exited", ImageID: "sha256:dangling-used-by-foreign",
		Created: old, FinishedAt: old}
	m := managed("m1", "alice", "tf")
	m.ImageID = "sha256:old-used-by-managed"
	prot := managed("p1", "bob", "keeper")
	prot.State, prot.Protected, prot.ImageID = "exited", "mlc protect", "sha256:old-used-by-protected"
	in := Input{Now: now, Containers: []Container{foreign, m, prot}, Images: images, Catalogue: []string{"sha256:old-catalogue"}}

	for _, tt := range []struct {
		name    string
		maxAge  *time.Duration
		removed []string
		kept    map[string]string
	}{
		{name: "dangling only", removed: []string{"sha256:dangling"},
			kept: map[string]string{"sha256:dangling-used-by-foreign": "image in use by container someones-db"}},
		{name: "max age 30d", maxAge: dur(30 * 24 * time.Hour), removed: []string{"sha256:dangling", "sha256:old"},
			kept: map[string]string{
				"sha256:dangling-used-by-foreign": "image in use by container someones-db",
				"sha256:old-catalogue":            "image named by the catalogue",
				"sha256:old-used-by-managed":      "image in use by container mlc-alice-tf",
				"sha256:old-used-by-protected":    "image in use by container mlc-bob-keeper",
			}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := rules()
			r.ImageMaxAge = tt.maxAge
			in := in
			in.Only = OnlyImages
			p := MakePlan(in, r)
			var removed []string
			for _, a := range p.Actions {
				if a.Action != KindRemoveImage {
					t.Fatalf("only images, got %+v", a)
				}
				removed = append(removed, a.ImageID)
				wantRule := RuleImageMaxAge
				if strings.HasPrefix(a.ImageID, "sha256:dangling") {
					wantRule = RuleDangling
				}
				if a.Rule != wantRule || a.Source != r.ConfigSource {
					t.Errorf("%+v", a)
				}
			}
			slices.Sort(removed)
			if !slices.Equal(removed, tt.removed) {
				t.Errorf("removed %v, want %v", removed, tt.removed)
			}
			kept := map[string]string{}
			for _, s := range p.Skipped {
				kept[s.ImageID] = s.Why
			}
			if len(kept) != len(tt.kept) {
				t.Errorf("kept %v, want %v", kept, tt.kept)
			}
			for id, why := range tt.kept {
				if !strings.HasPrefix(kept[id], why) {
					t.Errorf("%s kept with %q, want %q", id, kept[id], why)
				}
			}
		})
	}
	t.Run("reason lists the tags", func(t *testing.T) {
		r := rules()
		r.ImageMaxAge = dur(30 * 24 * time.Hour)
		p := MakePlan(Input{Now: now, Images: images[2:3]}, r)
		if len(p.Actions) != 1 || p.Actions[0].Name != "team/old:1" ||
			p.Actions[0].Reason != "created 2160h ago, unused images removed after 720h; tags team/old:1, team/old:latest" {
			t.Errorf("%+v", p.Actions)
		}
	})
}

// a mixed server for order, Only and the benchmark.
func server(n int) Input {
	in := Input{Now: now, Activity: map[string]Activity{}, Warned: map[string][]Warning{},
		GPUsTotal: 8, GPUsAllocated: 4}
	users := []string{"alice", "bob", "carol", "dave", "erin"}
	for i := range n {
		c := managed(fmt.Sprintf("c%03d", i), users[i%len(users)], fmt.Sprintf("box%03d", (i*37)%n))
		a := idleFor(time.Duration((i*13)%100) * time.Hour)
		switch i % 10 {
		case 0:
			c.State, c.FinishedAt = "exited", now.Add(-time.Duration(i)*24*time.Hour)
		case 1:
			c.Protected = "label mlc.protected"
		case 2:
			c.Managed, c.User, c.Name = false, "", ""
		case 3:
			in.Warned[c.ID] = []Warning{{Level: 95, IdleSince: a.LastBusy}}
		case 4:
			c.IdleTimeout = nil
		}
		c.ImageID = fmt.Sprintf("sha256:img%d", i%7)
		in.Containers = append(in.Containers, c)
		in.Activity[c.ID] = a
	}
	for i := range 20 {
		in.Images = append(in.Images, Image{ID: fmt.Sprintf("sha256:img%d", i),
			Created: now.Add(-time.Duration(i) * 24 * time.Hour)})
		if i%2 == 0 {
			in.Images[i].Dangling = true
		} else {
			in.Images[i].Tags = []string{fmt.Sprintf("t:%d", i)}
		}
	}
	return in
}

func serverRules() Rules {
	r := rules()
	r.RemoveStoppedAfter = dur(10 * 24 * time.Hour)
	r.ImageMaxAge = dur(5 * 24 * time.Hour)
	return r
}

func TestDeterministicOrder(t *testing.T) {
	in := server(100)
	want := MakePlan(in, serverRules())
	kinds := map[string]bool{}
	for _, a := range want.Actions {
		kinds[a.Action] = true
	}
	if len(kinds) != 4 {
		t.Fatalf("the test server should produce every kind, got %v", kinds)
	}
	for i := 1; i < len(want.Actions); i++ {
		a, b := want.Actions[i-1], want.Actions[i]
		ka, kb := kindRank(a.Action), kindRank(b.Action)
		if ka > kb || ka == kb && (a.User > b.User || a.User == b.User && a.Name > b.Name) {
			t.Fatalf("out of order at %d: %+v before %+v", i, a, b)
		}
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for range 20 {
		sh := in
		sh.Containers = slices.Clone(in.Containers)
		sh.Images = slices.Clone(in.Images)
		rng.Shuffle(len(sh.Containers), func(i, j int) { sh.Containers[i], sh.Containers[j] = sh.Containers[j], sh.Containers[i] })
		rng.Shuffle(len(sh.Images), func(i, j int) { sh.Images[i], sh.Images[j] = sh.Images[j], sh.Images[i] })
		if got := MakePlan(sh, serverRules()); !reflect.DeepEqual(got, want) {
			t.Fatal("a shuffled input gives another plan")
		}
	}
}

func TestOnly(t *testing.T) {
	in := server(100)
	for only, kinds := range map[string][]string{
		"":          {KindWarn, KindStop, KindRemove, KindRemoveImage},
		OnlyIdle:    {KindWarn, KindStop},
		OnlyStopped: {KindRemove},
		OnlyImages:  {KindRemoveImage},
	} {
		in.Only = only
		got := map[string]bool{}
		for _, a := range MakePlan(in, serverRules()).Actions {
			got[a.Action] = true
		}
		var gk []string
		for k := range got {
			gk = append(gk, k)
		}
		slices.SortFunc(gk, func(a, b string) int { return kindRank(a) - kindRank(b) })
		if !slices.Equal(gk, kinds) {
			t.Errorf("only %q: kinds %v, want %v", only, gk, kinds)
		}
	}
}

func TestJSON(t *testing.T) {
	p := Plan{
		Actions: []Action{
			{Action: KindWarn, Name: "thesis", User: "alice", ContainerID: "c1", Reason: "r", Rule: RuleIdleTimeout,
				Source: "group staff", Level: 80, IdleSince: now, StopAt: now.Add(time.Hour), KeepAlive: true},
			{Action: KindStop, Name: "thesis", User: "alice", ContainerID: "c1", Reason: "r", Rule: RuleIdleTimeout, StopTimeout: 30},
			{Action: KindRemoveImage, ImageID: "sha256:x", Reason: "r", Rule: RuleDangling},
		},
		Skipped: []Skip{{Name: "n", User: "u", ContainerID: "c2", Why: "protected: mlc protect"}},
	}
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	keys := func(v any) []string {
		var k []string
		for key := range v.(map[string]any) {
			k = append(k, key)
		}
		slices.Sort(k)
		return k
	}
	if got := keys(m); !slices.Equal(got, []string{"actions", "high_demand", "skipped"}) {
		t.Errorf("plan keys %v", got)
	}
	acts := m["actions"].([]any)
	for i, want := range [][]string{
		{"action", "container_id", "idle_since", "keep_alive", "level", "name", "reason", "rule", "source", "stop_at", "user"},
		{"action", "container_id", "name", "reason", "rule", "stop_timeout", "user"},
		{"action", "image_id", "reason", "rule"},
	} {
		if got := keys(acts[i]); !slices.Equal(got, want) {
			t.Errorf("action %d keys %v, want %v", i, got, want)
		}
	}
	if got := keys(m["skipped"].([]any)[0]); !slices.Equal(got, []string{"container_id", "name", "user", "why"}) {
		t.Errorf("skip keys %v", got)
	}
	if !strings.Contains(string(b), `"idle_since":"2026-11-23T09:00:00Z"`) {
		t.Errorf("time format: %s", b)
	}
	// An empty plan has lists, not nulls.
	b, _ = json.Marshal(MakePlan(Input{Now: now}, Rules{}))
	if string(b) != `{"actions":[],"skipped":[],"high_demand":false}` {
		t.Errorf("empty plan: %s", b)
	}
}

func TestWriteTable(t *testing.T) {
	p := MakePlan(server(30), serverRules())
	var buf bytes.Buffer
	if err := p.WriteTable(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{
		"WHAT", "WHO/NAME", "WHY", "RULE (SOURCE)", "WHEN",
		"warn 95%", "stop", "remove-image", "idle_timeout (group staff)",
		"cleanup.remove_stopped_after (/etc/mlc/resource-limits.yaml)",
		"LEFT ALONE", "protected: label mlc.protected", "foreign: no mlc.managed label",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	buf.Reset()
	if err := (Plan{}).WriteTable(&buf); err != nil || !strings.Contains(buf.String(), "nothing to do") {
		t.Errorf("empty plan: %q %v", buf.String(), err)
	}
}

func TestFormat(t *testing.T) {
	for d, want := range map[time.Duration]string{
		30 * time.Second: "30s", 45 * time.Minute: "45m", 71 * time.Hour: "71h",
		2*time.Hour + 30*time.Minute: "2h30m", 0: "0s",
	} {
		if got := fmtDur(d); got != want {
			t.Errorf("fmtDur(%v) = %q, want %q", d, got, want)
		}
	}
	for n, want := range map[uint64]string{0: "0B", 512: "512B", 1 << 20: "1MiB", 3 << 29: "1.5GiB"} {
		if got := fmtBytes(n); got != want {
			t.Errorf("fmtBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

// BenchmarkPlan200 plans a server of 200 containers with history for each.
func BenchmarkPlan200(b *testing.B) {
	in, r := server(200), serverRules()
	b.ReportAllocs()
	for b.Loop() {
		MakePlan(in, r)
	}
}
