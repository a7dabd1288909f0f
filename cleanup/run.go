package cleanup

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mlc-lab/mlc/cleanup/notify"
	"github.com/mlc-lab/mlc/config"
	"github.com/mlc-lab/mlc/containers"
	"github.com/mlc-lab/mlc/engine"
	"github.com/mlc-lab/mlc/errs"
	"github.com/mlc-lab/mlc/identity"
	"github.com/mlc-lab/mlc/limits"
	"github.com/mlc-lab/mlc/monitor/history"
)

// Env is what a cleanup run reads and acts through: the container manager
// (its policy, engine, GPU ledger and audit log), the usage history and the
// ways to reach a container's owner.
type Env struct {
	Mgr     *containers.Manager
	History *history.DB
	Notify  notify.Options
	Now     func() time.Time // time.Now when nil
	// Scope, "KEY=VALUE", limits a run to the containers and images with
	// that label: the integration test's own, so that a run beside other
	// tests touches nothing of theirs (MLC_TEST_CLEANUP_SCOPE; never under
	// sudo for a user). "" is the whole engine.
	Scope string
}

// inScope is whether labels carry the run's scope label.
func (e *Env) inScope(labels map[string]string) bool {
	if e.Scope == "" {
		return true
	}
	k, v, _ := strings.Cut(e.Scope, "=")
	return labels[k] == v
}

// Target is what acting on one container needs beyond the plan.
type Target struct {
	Name, User string
	UID, GID   int
	Workspace  string // host path of its /workspace, "" for none
}

// Result is a plan and, after a run, what became of each action.
type Result struct {
	DryRun bool `json:"dry_run"`
	Plan
}

// WarningKeep is how long given warnings are remembered.
const WarningKeep = 30 * 24 * time.Hour

func (e *Env) now() time.Time {
	if e.Now != nil {
		return e.Now()
	}
	return time.Now()
}

// RulesFrom resolves the policy's cleanup section.
func RulesFrom(cfg *config.Config) Rules {
	cl := cfg.Cleanup
	r := Rules{IdleCPUPercent: cl.IdleCPUPercent, IdleGPUPercent: cl.IdleGPUPercent, IdleNetBytes: uint64(cl.IdleNetBytes),
		MinSamples: cl.MinSamples, MaxSampleAge: cl.MaxSampleAge.D, Grace: cl.Grace.D, WarnAt: cl.WarnAt,
		KeepAliveMax: cl.KeepAliveMax.D, StopTimeout: cl.StopTimeout, ConfigSource: cfg.Source}
	if cl.KeepAliveMax.Never {
		r.KeepAliveMax = 100 * 365 * 24 * time.Hour
	}
	if hd := cl.HighDemand; hd != nil {
		r.HighDemandFraction, r.HighDemandFactor = hd.GPUFraction, hd.Factor
	}
	if !cl.RemoveStoppedAfter.Never {
		d := cl.RemoveStoppedAfter.D
		r.RemoveStoppedAfter = &d
	}
	if !cl.ImageMaxAge.Never {
		d := cl.ImageMaxAge.D
		r.ImageMaxAge = &d
	}
	return r
}

// Gather reads everything a plan needs: every container of the engine
// (mlc's and others'), each managed one's start and stop times, owner's
// idle_timeout, protection and keep-alive file, the usage history, the
// warnings already given, the GPU ledger's load, and (with
// cleanup.prune_images) the images.
func (e *Env) Gather(ctx context.Context, only string) (Input, map[string]Target, error) {
	m := e.Mgr
	in := Input{Now: e.now(), Only: only, Activity: map[string]Activity{}, Warned: map[string][]Warning{}}
	everything, err := m.Eng.ListAll(ctx)
	if err != nil {
		return in, nil, err
	}
	var all []engine.Container
	for _, c := range everything {
		if e.inScope(c.Labels) {
			all = append(all, c)
		}
	}
	targets := map[string]Target{}
	timeouts := map[string]limits.Value[config.Duration]{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	in.Containers = make([]Container, len(all))
	var firstErr error
	for i, c := range all {
		ct := Container{ID: c.ID, DockerName: c.Name, Managed: c.Managed(), State: c.State, Created: c.Created,
			ImageID: c.ImageID}
		if ct.Managed {
			ct.Name, ct.User = c.Labels[engine.LabelName], c.Labels[engine.LabelUser]
			ct.Protected = m.ProtectedWhy(c)
			ct.GPUs = len(splitList(c.Labels[engine.LabelGPUs]))
			t := Target{Name: ct.Name, User: ct.User}
			t.UID, _ = strconv.Atoi(c.Labels[engine.LabelUID])
			t.GID, _ = strconv.Atoi(c.Labels[engine.LabelGID])
			for _, mt := range c.Mounts {
				if mt.Target == "/workspace" {
					t.Workspace = mt.Source
				}
			}
			targets[c.ID] = t
			if _, ok := timeouts[ct.User]; !ok {
				res, err := limits.Resolve(m.Cfg, m.Dir, ct.User)
				if err != nil {
					wg.Wait() // the inspects started write into in
					return in, nil, err
				}
				timeouts[ct.User] = res.IdleTimeout
			}
			if v := timeouts[ct.User]; !v.Value.Never {
				d := v.Value.D
				ct.IdleTimeout, ct.IdleSource = &d, v.Source
			}
			if t.Workspace != "" {
				if ka, err := notify.KeepAlive(t.Workspace); err == nil {
					ct.KeepAlive = keepAliveTime(ka, in.Now)
				}
			}
			// The slot is filled before the inspect that completes it starts.
			in.Containers[i] = ct
			wg.Add(1)
			sem <- struct{}{}
			go func(i int) {
				defer func() { <-sem; wg.Done() }()
				rt, err := m.Eng.Runtime(ctx, c.ID)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					if !errs.Is(err, errs.NotFound) && firstErr == nil {
						firstErr = err
					}
					return
				}
				in.Containers[i].StartedAt, in.Containers[i].FinishedAt = rt.StartedAt, rt.FinishedAt
			}(i)
			continue
		}
		in.Containers[i] = ct
	}
	wg.Wait()
	if firstErr != nil {
		return in, nil, firstErr
	}
	if e.History != nil {
		act, err := e.History.Activity()
		if err != nil {
			return in, nil, err
		}
		for id, a := range act {
			in.Activity[id] = Activity{FirstSeen: a.FirstSeen, LastSeen: a.LastSeen, LastBusy: a.LastBusy,
				Samples: a.Samples, SinceBusy: a.SinceBusy}
		}
		ws, err := e.History.Warnings()
		if err != nil {
			return in, nil, err
		}
		for id, list := range ws {
			for _, w := range list {
				in.Warned[id] = append(in.Warned[id], Warning{Level: w.Level, IdleSince: w.IdleSince, At: w.At})
			}
		}
	}
	if m.GPUs != nil {
		self := containers.Actor{Caller: &identity.Caller{User: "root", Admin: true}}
		self.Target = self.Caller
		if st, err := m.GPUStatus(ctx, self); err == nil {
			in.GPUsTotal, in.Waiting = len(st.GPUs), len(st.Queue)
			for _, g := range st.GPUs {
				if len(g.Holders) > 0 {
					in.GPUsAllocated++
				}
			}
		}
	}
	if m.Cfg.Cleanup.PruneImages {
		imgs, err := m.Eng.Images(ctx)
		if err != nil {
			return in, nil, err
		}
		for _, im := range imgs {
			if !e.inScope(im.Labels) {
				continue
			}
			in.Images = append(in.Images, Image{ID: im.ID, Tags: im.Tags, Created: im.Created, Dangling: im.Dangling})
		}
		for _, ci := range m.Cfg.Images {
			if id, err := m.Eng.ImageIDOf(ctx, ci.Image); err == nil {
				in.Catalogue = append(in.Catalogue, id)
			}
		}
	}
	return in, targets, nil
}

// Execute carries out the plan as caller (an admin) and fills each action's
// Result and Error. Every action goes to the audit log. It returns an error
// of kind Partial when any action failed; the others are still done.
func (e *Env) Execute(ctx context.Context, caller *identity.Caller, p *Plan, targets map[string]Target) error {
	failed := 0
	for i := range p.Actions {
		if ctx.Err() != nil {
			p.Actions[i].Result = "not done"
			failed++
			continue
		}
		a := &p.Actions[i]
		err := e.act(ctx, caller, a, targets[a.ContainerID])
		if err != nil {
			a.Result, a.Error = "failed", err.Error()
			failed++
		} else {
			a.Result = "done"
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if failed > 0 {
		return errs.New(errs.Partial, "%d of %d cleanup actions failed (see above; the others were done)", failed, len(p.Actions))
	}
	return nil
}

func (e *Env) act(ctx context.Context, caller *identity.Caller, a *Action, t Target) error {
	m := e.Mgr
	admin := containers.Actor{Caller: caller, Target: caller}
	if a.Action == KindRemoveImage {
		err := m.Eng.RemoveImage(ctx, a.ImageID)
		m.Record(admin, "cleanup-remove-image", "", err, map[string]string{"image": a.ImageID, "reason": a.Reason, "rule": a.Rule})
		return err
	}
	target, err := identity.Lookup(m.Cfg, a.User)
	if err != nil {
		// The account is gone: act on the container as the admin would.
		target = &identity.Caller{User: a.User, UID: t.UID, GID: t.GID}
	}
	actor := containers.Actor{Caller: caller, Target: target}
	// The plan names a container by id: one removed and made again under
	// the same name since (a stop takes stop_timeout each) is not it.
	if c, err := m.Find(ctx, actor, a.Name); err != nil {
		return err
	} else if c.ID != a.ContainerID {
		return errs.New(errs.Conflict, "%s is not the container planned for (made again since the plan); left alone", a.Name)
	}
	switch a.Action {
	case KindStop:
		return m.Stop(ctx, actor, a.Name, a.StopTimeout)
	case KindRemove:
		return m.Remove(ctx, actor, a.Name, false)
	case KindWarn:
		res := notify.Deliver(ctx, e.message(a, t), e.Notify)
		detail := map[string]any{"level": a.Level, "reason": a.Reason, "stop_at": a.StopAt, "terminals": res.Terminals,
			"file": res.File, "command": res.Command}
		var derr error
		if len(res.Errors) > 0 {
			detail["errors"] = res.Errors
		}
		if ctx.Err() != nil || (res.Terminals == 0 && !res.File && !res.Command) {
			// Not given: the stop must wait for a warning that was.
			derr = errs.New(errs.State, "the warning reached %s by no way (no terminal, workspace file or notify.command)", a.User)
			m.Record(actor, "cleanup-warn", a.Name, derr, detail)
			return derr
		}
		if e.History != nil {
			derr = e.History.AddWarning(a.ContainerID, history.Warning{Level: a.Level, IdleSince: a.IdleSince, At: e.now()}, WarningKeep)
		}
		m.Record(actor, "cleanup-warn", a.Name, derr, detail)
		return derr
	}
	return errs.New(errs.Internal, "unknown cleanup action %q", a.Action)
}

// message is the warning an owner reads.
func (e *Env) message(a *Action, t Target) notify.Message {
	subject := fmt.Sprintf("mlc: your container %s is idle and will be stopped at %s", a.Name, a.StopAt.Local().Format("2006-01-02 15:04"))
	var b strings.Builder
	fmt.Fprintf(&b, "Your container %s has been idle: %s.\n", a.Name, a.Reason)
	fmt.Fprintf(&b, "The nightly cleanup will stop it at %s or later if it is still idle then (%d %% of its idle timeout reached).\n",
		a.StopAt.Local().Format("2006-01-02 15:04"), a.Level)
	if a.KeepAlive {
		b.WriteString("A keep-alive file postpones the stop until it expires.\n")
	}
	b.WriteString("To keep it: use it, or run `mlc keepalive " + a.Name + " --for 8h`, or touch /workspace/.keep-alive inside it.\n")
	b.WriteString("Stopping keeps your files; `mlc start " + a.Name + "` starts it again.\n")
	return notify.Message{User: a.User, UID: t.UID, GID: t.GID, Container: a.Name, Subject: subject, Body: b.String(),
		Workspace: t.Workspace}
}

func splitList(s string) []string {
	var out []string
	for _, x := range strings.Split(s, ",") {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
		}
	}
	return out
}

// WriteResults summarises a run: how many actions were done, and each one
// that failed or was not done, with why.
func WriteResults(w io.Writer, p Plan) {
	done, failed := 0, 0
	for _, a := range p.Actions {
		if a.Result == "done" {
			done++
			continue
		}
		failed++
		who := a.Name
		if a.User != "" {
			who = a.User + "/" + a.Name
		}
		if a.Action == KindRemoveImage {
			who = a.ImageID
		}
		fmt.Fprintf(w, "%s %s: %s %s\n", a.Action, who, a.Result, a.Error)
	}
	fmt.Fprintf(w, "cleanup: %d done, %d failed or not done\n", done, failed)
}

// keepAliveTime is the keep-alive file's time as cleanup counts it. The
// owner sets it (touch -d 2099-01-01 inside the container): a time to come
// would postpone the stop for ever, since each run would count it as new, so
// it counts as no keep-alive at all. mlc keepalive and touch write a time up
// to now; a minute of clock skew is allowed.
func keepAliveTime(mtime, now time.Time) time.Time {
	if mtime.After(now.Add(time.Minute)) {
		return time.Time{}
	}
	return mtime
}
