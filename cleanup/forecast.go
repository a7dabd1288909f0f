package cleanup

import (
	"fmt"
	"strings"
	"time"

	"github.com/mlc-lab/mlc/cleanup/notify"
	"github.com/mlc-lab/mlc/config"

	"github.com/mlc-lab/mlc/containers"
	"github.com/mlc-lab/mlc/limits"
)

// Idle is what `mlc list` shows of a running container: how long it has
// been idle by the usage history, and from when cleanup will stop it.
type Idle struct {
	Known    bool          // the history covers it (enough recent samples)
	For      time.Duration // idle for this long (0: busy at the latest sample)
	StopAt   time.Time     // cleanup stops it at its first run after this; zero: never
	Postpone time.Time     // a keep-alive file postpones the stop until then
}

// Forecast is c's idle time and stop time under rules r, by the same rules
// as MakePlan (without the warnings: the stop comes at the first run after
// StopAt in which the last warning was already given).
func Forecast(now time.Time, c Container, a Activity, haveHistory bool, r Rules, highDemand bool) Idle {
	r = withDefaults(r)
	var out Idle
	started := c.StartedAt
	if started.IsZero() {
		started = c.Created
	}
	if !haveHistory || now.Sub(a.LastSeen) > r.MaxSampleAge || c.State != "running" {
		return out
	}
	idleSince := started
	if a.LastBusy.After(started) {
		idleSince = a.LastBusy
	}
	if a.FirstSeen.After(idleSince) {
		idleSince = a.FirstSeen
	}
	out.Known = true
	if !a.LastBusy.Before(a.LastSeen) && !a.LastBusy.IsZero() {
		return out // busy in the latest sample
	}
	out.For = now.Sub(idleSince)
	if c.IdleTimeout == nil || *c.IdleTimeout <= 0 || !c.Managed || c.Protected != "" {
		return out
	}
	timeout := *c.IdleTimeout
	if highDemand && r.HighDemandFactor > 0 {
		timeout = time.Duration(float64(timeout) * r.HighDemandFactor)
	}
	out.StopAt = idleSince.Add(timeout)
	if started.Add(r.Grace).After(out.StopAt) {
		out.StopAt = started.Add(r.Grace)
	}
	if !c.KeepAlive.IsZero() && now.Sub(c.KeepAlive) < r.KeepAliveMax {
		out.Postpone = c.KeepAlive.Add(r.KeepAliveMax)
	}
	return out
}

// Forecasts is Forecast for each running row of `mlc list`: the history's
// activity (the container's start time included, so no engine call), the
// owner's idle_timeout, protection and keep-alive file.
func (e *Env) Forecasts(rows []containers.Row) (map[string]Idle, error) {
	out := map[string]Idle{}
	if e.History == nil {
		return out, nil
	}
	act, err := e.History.Activity()
	if err != nil {
		return nil, err
	}
	r := RulesFrom(e.Mgr.Cfg)
	now := e.now()
	timeouts := map[string]*time.Duration{}
	for _, row := range rows {
		if row.State != "running" {
			continue
		}
		if _, ok := timeouts[row.User]; !ok {
			res, err := limits.Resolve(e.Mgr.Cfg, e.Mgr.Dir, row.User)
			if err != nil {
				return nil, err
			}
			timeouts[row.User] = nil
			if v := res.IdleTimeout.Value; !v.Never {
				d := v.D
				timeouts[row.User] = &d
			}
		}
		a, ok := act[row.ID]
		c := Container{ID: row.ID, Managed: true, State: row.State, StartedAt: a.Started, Created: row.Created,
			IdleTimeout: timeouts[row.User]}
		if row.Protect {
			c.Protected = "protected"
		}
		if row.Workspace != "" {
			if ka, err := notify.KeepAlive(row.Workspace); err == nil {
				c.KeepAlive = keepAliveTime(ka, now)
			}
		}
		out[row.ID] = Forecast(now, c, Activity{FirstSeen: a.FirstSeen, LastSeen: a.LastSeen, LastBusy: a.LastBusy,
			Samples: a.Samples, SinceBusy: a.SinceBusy}, ok, r, false)
	}
	return out, nil
}

// IdleRule is the idle rule that applies to a user whose idle_timeout is
// timeout (from source), in words: what `mlc limits show` prints.
func IdleRule(cfg *config.Config, timeout config.Duration, source string) string {
	if timeout.Never {
		return "idle containers are never stopped (idle_timeout null, " + source + ")"
	}
	r := RulesFrom(cfg)
	r = withDefaults(r)
	var warn []string
	for _, f := range r.WarnAt {
		warn = append(warn, fmt.Sprintf("%d %%", percent(f)))
	}
	s := fmt.Sprintf("a running container idle for %s (%s) is stopped by the nightly cleanup: idle means %s; "+
		"you are warned at %s of that first", timeout, source, thresholds(r), strings.Join(warn, " and "))
	if r.KeepAliveMax > 0 {
		s += fmt.Sprintf("; a /workspace/.keep-alive (mlc keepalive) postpones it up to %s", fmtDur(r.KeepAliveMax))
	}
	if r.HighDemandFactor > 0 {
		s += fmt.Sprintf("; while %d %% of GPUs are allocated and someone waits, the timeout is x%g", percent(r.HighDemandFraction), r.HighDemandFactor)
	}
	return s
}
