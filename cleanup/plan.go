// Package cleanup plans `mlc cleanup`: which idle containers to warn about and
// stop, which long-stopped containers to remove, which unused images to
// remove. The planner is pure: everything it knows comes in through Input
// (containers, usage history, images, earlier warnings, the clock) and Rules
// (the policy's cleanup section); it returns a Plan and changes nothing.
//
// What it never does: act on a container without the mlc.managed label, or on
// a protected one, in any path (warnings included); remove an image that any
// container uses (running or not, managed or not) or that the catalogue
// names; plan a prune of anything; warn about and stop a container in the
// same run.
package cleanup

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// Action kinds, in the order a Plan lists them.
const (
	KindWarn        = "warn"
	KindStop        = "stop"
	KindRemove      = "remove"
	KindRemoveImage = "remove-image"
)

// Only values: which kinds a run plans ("" is all). OnlyIdle covers warn and
// stop.
const (
	OnlyIdle    = "idle"
	OnlyStopped = "stopped"
	OnlyImages  = "images"
)

// Rule names written into actions.
const (
	RuleIdleTimeout   = "idle_timeout"
	RuleRemoveStopped = "cleanup.remove_stopped_after"
	RuleDangling      = "dangling"
	RuleImageMaxAge   = "cleanup.image_max_age"
)

// Defaults applied where Rules leaves a value zero.
const (
	DefaultMinSamples   = 3
	DefaultMaxSampleAge = 15 * time.Minute
)

// DefaultWarnAt is used when Rules.WarnAt holds no valid fraction.
var DefaultWarnAt = []float64{0.8, 0.95}

// Container is one container of the engine, managed by mlc or not.
type Container struct {
	ID, DockerName                 string
	Name, User                     string // mlc name and owner ("" for a foreign container)
	Managed                        bool   // label mlc.managed=true
	Protected                      string // why it is protected ("label mlc.protected", "pattern *-keep", "mlc protect"); "" if not
	State                          string // running, exited, created, paused, restarting, dead
	Created, StartedAt, FinishedAt time.Time
	GPUs                           int
	ImageID                        string         // sha256:... of the image it uses
	IdleTimeout                    *time.Duration // the owner's idle_timeout; nil = never
	IdleSource                     string         // where that came from, e.g. "group staff", "defaults"
	KeepAlive                      time.Time      // mtime of /workspace/.keep-alive (zero: none)
}

// Activity is what the usage history knows of one container (the caller
// converts monitor/history's Activity into it).
type Activity struct {
	FirstSeen time.Time // its first sample still kept
	LastSeen  time.Time // its latest sample
	LastBusy  time.Time // its latest busy sample; zero: never busy
	Samples   int       // samples of it kept
	SinceBusy int       // samples after the last busy one; all of them when never busy
}

// Image is one image of the engine.
type Image struct {
	ID       string
	Tags     []string
	Created  time.Time
	Dangling bool
}

// Warning is a warning given in an earlier run. Level is in percent (80, 95).
type Warning struct {
	Level     int
	IdleSince time.Time
	At        time.Time
}

// Input is everything the planner looks at.
type Input struct {
	Now        time.Time
	Containers []Container          // every container of the engine, managed or not
	Activity   map[string]Activity  // by container id, from the usage history
	Images     []Image              //
	Catalogue  []string             // image IDs the policy's catalogue names: never removed
	Warned     map[string][]Warning // by container id, warnings of earlier runs

	GPUsTotal, GPUsAllocated, Waiting int

	Only string // "", "idle", "stopped", "images"
}

// Rules is the policy's cleanup section, resolved.
type Rules struct {
	// Informational: the busy flags are in the history already; these go
	// into the reasons.
	IdleCPUPercent, IdleGPUPercent float64
	IdleNetBytes                   uint64

	MinSamples   int           // samples since the last busy one needed to judge; default 3
	MaxSampleAge time.Duration // the latest sample must be at most this old, else no judgement; default 15m
	Grace        time.Duration // containers started less than this ago are skipped
	WarnAt       []float64     // fractions of the timeout at which to warn; default {0.8, 0.95}
	KeepAliveMax time.Duration // a keep-alive file younger than this postpones the stop

	// When GPUsAllocated >= HighDemandFraction*GPUsTotal and Waiting > 0,
	// idle timeouts are multiplied by HighDemandFactor (0: off).
	HighDemandFraction, HighDemandFactor float64

	RemoveStoppedAfter *time.Duration // nil = never
	ImageMaxAge        *time.Duration // nil = only dangling images

	StopTimeout int // seconds of grace on stop, copied into stop actions

	// ConfigSource is where the cleanup.* values come from (a file, or
	// "defaults"); it is the Source of remove and remove-image actions.
	ConfigSource string
}

// Action is one step of a plan. Its JSON form is stable.
type Action struct {
	Action      string    `json:"action"` // stop | remove | remove-image | warn
	Name        string    `json:"name,omitempty"`
	User        string    `json:"user,omitempty"`
	ContainerID string    `json:"container_id,omitempty"`
	ImageID     string    `json:"image_id,omitempty"`
	Reason      string    `json:"reason"`           // a sentence with the numbers
	Rule        string    `json:"rule"`             // idle_timeout, cleanup.remove_stopped_after, dangling, cleanup.image_max_age
	Source      string    `json:"source,omitempty"` // where the rule's value comes from
	Level       int       `json:"level,omitempty"`  // warn: 80 or 95 (percent)
	IdleSince   time.Time `json:"idle_since,omitzero"`
	StopAt      time.Time `json:"stop_at,omitzero"`     // warn: when it will be stopped if still idle
	KeepAlive   bool      `json:"keep_alive,omitempty"` // warn: a keep-alive file postpones the stop
	StopTimeout int       `json:"stop_timeout,omitempty"`
	// After a real run: done, failed or not done (interrupted), and why it failed.
	Result string `json:"result,omitempty"`
	Error  string `json:"error,omitempty"`
}

// Skip is a container (or image) that was considered and left alone, and why.
type Skip struct {
	Name        string `json:"name,omitempty"`
	User        string `json:"user,omitempty"`
	ContainerID string `json:"container_id,omitempty"`
	ImageID     string `json:"image_id,omitempty"`
	Why         string `json:"why"`
}

// Plan is what a run would do.
type Plan struct {
	Actions    []Action `json:"actions"`
	Skipped    []Skip   `json:"skipped"`
	HighDemand bool     `json:"high_demand"`
}

// MakePlan plans one cleanup run. The order is deterministic: actions by kind
// (warn, stop, remove, remove-image), then user, name, id; skips by user,
// name, id.
func MakePlan(in Input, r Rules) Plan {
	r = withDefaults(r)
	p := Plan{Actions: []Action{}, Skipped: []Skip{}}
	p.HighDemand = highDemand(in, r)

	doIdle := in.Only == "" || in.Only == OnlyIdle
	doStopped := in.Only == "" || in.Only == OnlyStopped
	doImages := in.Only == "" || in.Only == OnlyImages

	for _, c := range in.Containers {
		idlePath := c.State == "running"
		stoppedPath := isStopped(c.State)
		considered := (doIdle && idlePath) || (doStopped && stoppedPath) ||
			(!idlePath && !stoppedPath && (doIdle || doStopped))
		if !considered {
			continue
		}
		switch {
		case !c.Managed:
			p.skip(c, "foreign: no mlc.managed label")
			continue
		case c.Protected != "":
			p.skip(c, "protected: "+c.Protected)
			continue
		}
		switch {
		case idlePath:
			planIdle(&p, in, r, c)
		case stoppedPath:
			planStopped(&p, in, r, c)
		default:
			p.skip(c, "state "+c.State+": not judged")
		}
	}
	if doImages {
		planImages(&p, in, r)
	}

	slices.SortStableFunc(p.Actions, func(a, b Action) int {
		return cmp.Or(
			cmp.Compare(kindRank(a.Action), kindRank(b.Action)),
			cmp.Compare(a.User, b.User),
			cmp.Compare(a.Name, b.Name),
			cmp.Compare(a.ContainerID, b.ContainerID),
			cmp.Compare(a.ImageID, b.ImageID),
		)
	})
	slices.SortStableFunc(p.Skipped, func(a, b Skip) int {
		return cmp.Or(
			cmp.Compare(a.User, b.User),
			cmp.Compare(a.Name, b.Name),
			cmp.Compare(a.ContainerID, b.ContainerID),
			cmp.Compare(a.ImageID, b.ImageID),
		)
	})
	return p
}

func kindRank(k string) int {
	switch k {
	case KindWarn:
		return 0
	case KindStop:
		return 1
	case KindRemove:
		return 2
	case KindRemoveImage:
		return 3
	}
	return 4
}

func isStopped(state string) bool {
	return state == "exited" || state == "created" || state == "dead"
}

func (p *Plan) skip(c Container, why string) {
	name := c.Name
	if name == "" {
		name = c.DockerName
	}
	p.Skipped = append(p.Skipped, Skip{Name: name, User: c.User, ContainerID: c.ID, Why: why})
}

func withDefaults(r Rules) Rules {
	if r.MinSamples <= 0 {
		r.MinSamples = DefaultMinSamples
	}
	if r.MaxSampleAge <= 0 {
		r.MaxSampleAge = DefaultMaxSampleAge
	}
	var at []float64
	for _, f := range r.WarnAt {
		if f > 0 && f < 1 && !math.IsNaN(f) {
			at = append(at, f)
		}
	}
	if len(at) == 0 {
		at = slices.Clone(DefaultWarnAt)
	}
	slices.Sort(at)
	r.WarnAt = slices.Compact(at)
	return r
}

func highDemand(in Input, r Rules) bool {
	return r.HighDemandFactor > 0 && in.GPUsTotal > 0 && in.Waiting > 0 &&
		float64(in.GPUsAllocated) >= r.HighDemandFraction*float64(in.GPUsTotal)
}

// percent turns a WarnAt fraction into a warning level.
func percent(f float64) int { return int(math.Round(f * 100)) }

// warned reports whether a warning at level or above was given for this idle
// spell. Idle starts are compared to the second, since a stored warning may
// have lost the sub-second part.
func warned(ws []Warning, level int, idleSince time.Time) bool {
	for _, w := range ws {
		if w.Level >= level && sameInstant(w.IdleSince, idleSince) {
			return true
		}
	}
	return false
}

func sameInstant(a, b time.Time) bool {
	d := a.Sub(b)
	return d > -time.Second && d < time.Second
}

func planIdle(p *Plan, in Input, r Rules, c Container) {
	if c.IdleTimeout == nil {
		p.skip(c, "never: idle_timeout null"+paren(c.IdleSource))
		return
	}
	if *c.IdleTimeout <= 0 {
		p.skip(c, "idle_timeout "+fmtDur(*c.IdleTimeout)+paren(c.IdleSource)+" is not positive: treated as never")
		return
	}
	started := c.StartedAt
	if started.IsZero() {
		started = c.Created
	}
	if up := in.Now.Sub(started); up < r.Grace {
		p.skip(c, fmt.Sprintf("too young: started %s ago, grace %s", fmtDur(up), fmtDur(r.Grace)))
		return
	}
	a, ok := in.Activity[c.ID]
	switch {
	case !ok:
		p.skip(c, "no usage history (is `mlc monitor sample` running?)")
		return
	case in.Now.Sub(a.LastSeen) > r.MaxSampleAge:
		p.skip(c, fmt.Sprintf("stale usage history: latest sample %s ago, at most %s allowed (is `mlc monitor sample` running?)",
			fmtDur(in.Now.Sub(a.LastSeen)), fmtDur(r.MaxSampleAge)))
		return
	case a.SinceBusy < r.MinSamples && a.LastBusy.After(started) &&
		in.Now.Sub(a.LastBusy) <= time.Duration(r.MinSamples)*r.MaxSampleAge:
		// Busy a moment ago: nothing to judge and nothing worth
		// reporting. A busy sample long ago with too few since is
		// reported below (the monitor sampled too rarely).
		return
	case a.SinceBusy < r.MinSamples:
		p.skip(c, fmt.Sprintf("too little history: %d samples since the last busy one, %d needed", a.SinceBusy, r.MinSamples))
		return
	}

	// idleSince identifies the idle spell (warnings are given for it);
	// observed is where the history's evidence of it starts: a spell that
	// began before the monitor's first kept sample of the container counts
	// only from that sample.
	idleSince := started
	if a.LastBusy.After(started) {
		idleSince = a.LastBusy
	}
	observed := idleSince
	if a.FirstSeen.After(observed) {
		observed = a.FirstSeen
	}
	idleFor := in.Now.Sub(observed)
	timeout := *c.IdleTimeout
	timeoutText := fmtDur(timeout) + " idle_timeout" + paren(c.IdleSource)
	source := c.IdleSource
	if p.HighDemand {
		timeout = time.Duration(float64(timeout) * r.HighDemandFactor)
		timeoutText = fmt.Sprintf("%s x%g = %s (high demand: %d of %d GPUs allocated, %d waiting)",
			fmtDur(*c.IdleTimeout)+" idle_timeout"+paren(c.IdleSource), r.HighDemandFactor, fmtDur(timeout),
			in.GPUsAllocated, in.GPUsTotal, in.Waiting)
		source = strings.TrimSpace(source + " x" + fmt.Sprint(r.HighDemandFactor) + " high demand")
	}
	stopAt := observed.Add(timeout)
	keepUntil := time.Time{}
	if !c.KeepAlive.IsZero() && in.Now.Sub(c.KeepAlive) < r.KeepAliveMax {
		keepUntil = c.KeepAlive.Add(r.KeepAliveMax)
	}

	var gpus string
	if c.GPUs > 0 {
		gpus = fmt.Sprintf(", holding %d GPU%s", c.GPUs, plural(c.GPUs))
	}
	idleText := fmt.Sprintf("idle %s of its %s%s; %s since %s", fmtDur(idleFor), timeoutText, gpus,
		thresholds(r), fmtTime(observed))
	if observed.After(idleSince) {
		idleText += " (first sample kept; running since " + fmtTime(idleSince) + ")"
	}
	ws := in.Warned[c.ID]
	top := percent(r.WarnAt[len(r.WarnAt)-1])

	base := Action{Name: c.Name, User: c.User, ContainerID: c.ID, Rule: RuleIdleTimeout, Source: source, IdleSince: idleSince}
	if timeout <= 0 {
		timeout = time.Nanosecond
	}
	if idleFor >= timeout {
		switch {
		case !keepUntil.IsZero():
			p.skip(c, fmt.Sprintf("keep-alive until %s: %s", fmtTime(keepUntil), idleText))
		case warned(ws, top, idleSince):
			a := base
			a.Action = KindStop
			a.Reason = idleText
			a.StopTimeout = r.StopTimeout
			p.Actions = append(p.Actions, a)
		default:
			a := base
			a.Action = KindWarn
			a.Level = top
			a.StopAt = stopAt
			a.Reason = idleText + fmt.Sprintf("; due since %s, stopped at the next cleanup run if still idle", fmtTime(stopAt))
			p.Actions = append(p.Actions, a)
		}
		return
	}
	for i := len(r.WarnAt) - 1; i >= 0; i-- {
		f := r.WarnAt[i]
		if float64(idleFor) < f*float64(timeout) {
			continue
		}
		level := percent(f)
		if warned(ws, level, idleSince) {
			return
		}
		a := base
		a.Action = KindWarn
		a.Level = level
		a.StopAt = stopAt
		a.Reason = idleText + fmt.Sprintf("; %d %% reached, stopped at %s if still idle", level, fmtTime(stopAt))
		if !keepUntil.IsZero() {
			a.KeepAlive = true
			if keepUntil.After(stopAt) {
				a.StopAt = keepUntil
			}
			a.Reason += fmt.Sprintf("; keep-alive file postpones the stop until %s", fmtTime(keepUntil))
		}
		p.Actions = append(p.Actions, a)
		return
	}
}

func thresholds(r Rules) string {
	return fmt.Sprintf("CPU < %g %%, own GPU < %g %%, net < %s per sample", r.IdleCPUPercent, r.IdleGPUPercent, fmtBytes(r.IdleNetBytes))
}

func planStopped(p *Plan, in Input, r Rules, c Container) {
	if r.RemoveStoppedAfter == nil {
		p.skip(c, "never removed: cleanup.remove_stopped_after null")
		return
	}
	since := c.FinishedAt
	what := "stopped"
	if since.IsZero() {
		since = c.Created
		what = "created"
	}
	age := in.Now.Sub(since)
	if age < *r.RemoveStoppedAfter {
		return
	}
	p.Actions = append(p.Actions, Action{
		Action: KindRemove, Name: c.Name, User: c.User, ContainerID: c.ID,
		Reason: fmt.Sprintf("%s %s ago (%s, since %s), removed after %s; its workspace stays",
			c.State, fmtDur(age), what, fmtTime(since), fmtDur(*r.RemoveStoppedAfter)),
		Rule:   RuleRemoveStopped,
		Source: r.ConfigSource,
	})
}

func planImages(p *Plan, in Input, r Rules) {
	used := map[string]string{} // image id -> a container using it
	for _, c := range in.Containers {
		if c.ImageID == "" {
			continue
		}
		n := c.DockerName
		if n == "" {
			n = c.Name
		}
		if n == "" {
			n = shortID(c.ID)
		}
		if old, ok := used[c.ImageID]; !ok || n < old {
			used[c.ImageID] = n
		}
	}
	catalogue := map[string]bool{}
	for _, id := range in.Catalogue {
		catalogue[id] = true
	}
	for _, im := range in.Images {
		var rule, why string
		age := in.Now.Sub(im.Created)
		switch {
		case im.Dangling:
			rule, why = RuleDangling, fmt.Sprintf("dangling (untagged), created %s ago", fmtDur(age))
		case r.ImageMaxAge != nil && age >= *r.ImageMaxAge:
			rule, why = RuleImageMaxAge, fmt.Sprintf("created %s ago, unused images removed after %s", fmtDur(age), fmtDur(*r.ImageMaxAge))
		default:
			continue
		}
		name := imageName(im)
		if n, ok := used[im.ID]; ok {
			p.Skipped = append(p.Skipped, Skip{Name: name, ImageID: im.ID, Why: "image in use by container " + n + " (" + why + ")"})
			continue
		}
		if catalogue[im.ID] {
			p.Skipped = append(p.Skipped, Skip{Name: name, ImageID: im.ID, Why: "image named by the catalogue (" + why + ")"})
			continue
		}
		if len(im.Tags) > 0 {
			why += "; tags " + strings.Join(im.Tags, ", ")
		}
		p.Actions = append(p.Actions, Action{
			Action: KindRemoveImage, Name: name, ImageID: im.ID,
			Reason: why, Rule: rule, Source: r.ConfigSource,
		})
	}
}

func imageName(im Image) string {
	if len(im.Tags) == 0 {
		return ""
	}
	return slices.Min(im.Tags)
}

func shortID(id string) string {
	id = strings.TrimPrefix(id, "sha256:")
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

func paren(s string) string {
	if s == "" {
		return ""
	}
	return " (" + s + ")"
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

func fmtTime(t time.Time) string { return t.Format("2006-01-02 15:04") }

// fmtDur writes a duration the way people say it: 71h, 2h30m, 45m, 30s.
func fmtDur(d time.Duration) string {
	neg := d < 0
	if neg {
		d = -d
	}
	var s string
	switch {
	case d < time.Minute:
		s = fmt.Sprintf("%ds", int64(d.Round(time.Second)/time.Second))
	default:
		d = d.Round(time.Minute)
		h, m := int64(d/time.Hour), int64(d%time.Hour/time.Minute)
		switch {
		case h == 0:
			s = fmt.Sprintf("%dm", m)
		case m == 0:
			s = fmt.Sprintf("%dh", h)
		default:
			s = fmt.Sprintf("%dh%dm", h, m)
		}
	}
	if neg {
		return "-" + s
	}
	return s
}

// fmtBytes writes a byte count in binary units: 512B, 1MiB, 1.5GiB.
func fmtBytes(n uint64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	v := float64(n)
	i := 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	if v == math.Trunc(v) {
		return fmt.Sprintf("%d%s", int64(v), units[i])
	}
	return fmt.Sprintf("%.1f%s", v, units[i])
}
