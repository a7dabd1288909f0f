package containers

import (
	"context"
	"strconv"
	"sync"

	"github.com/mlc-lab/mlc/audit"
	"github.com/mlc-lab/mlc/engine"
	"github.com/mlc-lab/mlc/errs"
	"github.com/mlc-lab/mlc/gpualloc"
)

// LedgerGPUs is the Allocator backed by gpualloc's ledger. It lists
// containers through the engine for reconcile, which runs before every claim.
// The ledger (and the NVML inventory behind it) is opened on first use, so
// commands that touch no GPU pay nothing for it.
type LedgerGPUs struct {
	Open func() (*gpualloc.Ledger, error)
	Eng  engine.Engine
	// Inventory is filled by Open; fake GPUs are pinned with the env runtime,
	// since no GPU runtime can hand them to a container.
	Inventory *gpualloc.Inventory
	// OnReconcile is told of what the reconcile before each claim did, when
	// it did anything (releases and adoptions change who holds a GPU, so they
	// go to the audit log with the caller whose command made them).
	OnReconcile func(ctx context.Context, rep gpualloc.Report)

	mu     sync.Mutex
	ledger *gpualloc.Ledger
}

// Ledger opens the ledger on first use.
func (g *LedgerGPUs) Ledger() (*gpualloc.Ledger, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ledger == nil {
		l, err := g.Open()
		if err != nil {
			return nil, err
		}
		g.ledger = l
	}
	return g.ledger, nil
}

// Close closes the ledger if it was opened.
func (g *LedgerGPUs) Close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ledger == nil {
		return nil
	}
	return g.ledger.Close()
}

var _ Allocator = (*LedgerGPUs)(nil)

// Lister is the reconcile view of the engine's mlc containers.
func (g *LedgerGPUs) Lister() gpualloc.Lister {
	return func(ctx context.Context) ([]gpualloc.Container, error) {
		list, err := g.Eng.List(ctx, "")
		if err != nil {
			return nil, err
		}
		out := make([]gpualloc.Container, 0, len(list))
		for _, c := range list {
			if !c.Managed() {
				continue
			}
			out = append(out, toLedger(c))
		}
		return out, nil
	}
}

func toLedger(c engine.Container) gpualloc.Container {
	alloc, _ := strconv.ParseInt(c.Labels[engine.LabelAlloc], 10, 64)
	return gpualloc.Container{ID: c.ID, Name: c.Name, User: c.Labels[engine.LabelUser], Short: c.Labels[engine.LabelName],
		Alloc: alloc, GPUs: splitList(c.Labels[engine.LabelGPUs]), Running: c.Running()}
}

// Reconcile repairs the ledger against the engine's containers.
func (g *LedgerGPUs) Reconcile(ctx context.Context, o gpualloc.ReconcileOptions) (gpualloc.Report, error) {
	l, err := g.Ledger()
	if err != nil {
		return gpualloc.Report{}, err
	}
	rep, err := l.Reconcile(ctx, g.Lister(), o)
	if err == nil && !o.DryRun {
		for _, a := range rep.Actions {
			if a.Action == "release" && a.ContainerID != "" {
				// Its GPUs are gone: only mlc start (which re-claims them) may start it.
				_ = g.Eng.SetRestart(context.WithoutCancel(ctx), a.ContainerID, false)
			}
		}
	}
	return rep, err
}

// Status is the GPUs, their holders and the wait queue.
func (g *LedgerGPUs) Status(ctx context.Context) (gpualloc.Status, error) {
	l, err := g.Ledger()
	if err != nil {
		return gpualloc.Status{}, err
	}
	return l.Status(ctx)
}

// Claim reconciles, then claims.
func (g *LedgerGPUs) Claim(ctx context.Context, r ClaimRequest) (Claim, error) {
	rep, err := g.Reconcile(ctx, gpualloc.ReconcileOptions{})
	if err != nil {
		return Claim{}, err
	}
	if g.OnReconcile != nil && !rep.DryRun && len(rep.Actions) > 0 {
		g.OnReconcile(ctx, rep)
	}
	l, err := g.Ledger()
	if err != nil {
		return Claim{}, err
	}
	c, err := l.Claim(ctx, gpualloc.Request{User: r.User, Name: r.Name, Container: r.Container, N: r.N,
		Quota: r.Quota, QuotaFrom: r.QuotaFrom, Wait: r.Wait, Timeout: r.Timeout, Progress: r.Progress})
	if err != nil {
		return Claim{}, err
	}
	fake := g.Inventory != nil && g.Inventory.Source == "fake"
	return Claim{ID: c.ID, UUIDs: c.UUIDs, Fake: fake}, nil
}

// Activate implements Allocator.
func (g *LedgerGPUs) Activate(ctx context.Context, id int64, containerID string) error {
	l, err := g.Ledger()
	if err != nil {
		return err
	}
	return l.Activate(ctx, id, containerID)
}

// Abort implements Allocator.
func (g *LedgerGPUs) Abort(ctx context.Context, id int64) error {
	l, err := g.Ledger()
	if err != nil {
		return err
	}
	return l.Release(ctx, id, "create-failed")
}

// Stopped implements Allocator.
func (g *LedgerGPUs) Stopped(ctx context.Context, c engine.Container) error {
	l, err := g.Ledger()
	if err != nil {
		return err
	}
	return l.MarkStopped(ctx, c.ID)
}

// Release implements Allocator.
func (g *LedgerGPUs) Release(ctx context.Context, c engine.Container, reason string) (int, error) {
	l, err := g.Ledger()
	if err != nil {
		return 0, err
	}
	return l.ReleaseContainer(ctx, c.ID, c.Name, reason)
}

// EnsureHeld implements Allocator.
func (g *LedgerGPUs) EnsureHeld(ctx context.Context, c engine.Container, quota int, quotaFrom string) error {
	l, err := g.Ledger()
	if err != nil {
		return err
	}
	r := gpualloc.Request{User: c.Labels[engine.LabelUser], Name: c.Labels[engine.LabelName], Container: c.Name,
		Quota: quota, QuotaFrom: quotaFrom}
	return l.Rehold(ctx, r, c.ID, splitList(c.Labels[engine.LabelGPUs]))
}

// ReleaseGPUs frees a stopped container's GPUs while it goes on existing
// (admins: mlc gpu release). A running container still uses its GPUs, so it
// must be stopped first. Its GPU labels stay; starting it again re-claims the
// same GPUs, or is refused if someone else holds them by then.
func (m *Manager) ReleaseGPUs(ctx context.Context, a Actor, name string) (int, error) {
	if !a.Caller.Admin {
		return 0, errs.New(errs.Permission, "only admins may release GPUs")
	}
	if m.GPUs == nil {
		return 0, errs.New(errs.Unavailable, "this server has no GPU ledger")
	}
	c, err := m.Find(ctx, a, name)
	if err != nil {
		return 0, err
	}
	if c.Running() {
		return 0, errs.New(errs.Conflict, "%s is running and still uses its GPUs; stop it first", name)
	}
	if err := m.ready(); err != nil {
		return 0, err
	}
	n, err := m.GPUs.Release(ctx, c, "released-by-admin")
	if err == nil {
		// Without its GPUs it must not be started by the engine itself (a
		// daemon restart starts containers that were not stopped by hand):
		// only mlc start, which re-claims them.
		err = m.Eng.SetRestart(context.WithoutCancel(ctx), c.ID, false)
	}
	m.audit(a, "gpu-release", name, err, map[string]any{"claims": n})
	return n, err
}

// GPUStatus is every GPU with its holders and the wait queue, as the caller
// may see it: a non-admin sees other users' holders by user only.
func (m *Manager) GPUStatus(ctx context.Context, a Actor) (gpualloc.Status, error) {
	if m.GPUs == nil {
		return gpualloc.Status{}, errs.New(errs.Unavailable, "this server has no GPU ledger")
	}
	st, err := m.GPUs.Status(ctx)
	if err != nil {
		return st, err
	}
	return st.RedactFor(a.Caller.User, a.Caller.Admin), nil
}

// ReconcileGPUs repairs the ledger against the containers (admins), or says
// what it would do (anyone, with DryRun: others' names redacted). A change is
// refused when it could not be audited; a change that was made but could not
// be audited is returned with an error of kind State.
func (m *Manager) ReconcileGPUs(ctx context.Context, a Actor, o gpualloc.ReconcileOptions) (gpualloc.Report, error) {
	if m.GPUs == nil {
		return gpualloc.Report{}, errs.New(errs.Unavailable, "this server has no GPU ledger")
	}
	if !a.Caller.Admin && !o.DryRun {
		err := errs.New(errs.Permission, "only admins may reconcile the GPU ledger (anyone may use --dry-run)")
		m.audit(a, "gpu-reconcile", "", err, nil)
		return gpualloc.Report{}, err
	}
	if !o.DryRun {
		if err := m.ready(); err != nil {
			return gpualloc.Report{}, err
		}
	}
	rep, err := m.GPUs.Reconcile(ctx, o)
	if err != nil {
		return rep, err
	}
	if !rep.DryRun && m.Audit != nil {
		if aerr := m.Audit.Append(audit.Entry{Caller: a.Caller.User, CallerUID: a.Caller.UID, Action: "gpu-reconcile", Detail: rep}); aerr != nil {
			err = errs.Wrap(errs.State, aerr, "the ledger was reconciled as shown, but the audit log was not written")
		}
	}
	return rep.RedactFor(a.Caller.User, a.Caller.Admin), err
}
