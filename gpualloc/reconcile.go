package gpualloc

import (
	"context"
	"database/sql"
	"strings"
	"time"
)

// Container is what reconcile needs to know of a live container.
type Container struct {
	ID      string
	Name    string // Docker name
	User    string
	Short   string // the user's name for it
	Alloc   int64  // the mlc.alloc label, 0 if none
	GPUs    []string
	Running bool
}

// Lister lists mlc's containers; reconcile calls it with no transaction open.
type Lister func(ctx context.Context) ([]Container, error)

// Action is one thing reconcile did, or would do.
type Action struct {
	Claim     int64    `json:"claim,omitempty"`
	User      string   `json:"user"`
	Name      string   `json:"name"`
	GPUs      []string `json:"gpus,omitempty"`
	Action    string   `json:"action"` // release, adopt, report
	Why       string   `json:"why"`
	Container string   `json:"container,omitempty"`
	// ContainerID is set when the released claim's container still exists
	// (stopped past hold_after_stop): it must not restart by itself.
	ContainerID string `json:"container_id,omitempty"`
}

// Report is the outcome of a reconcile.
type Report struct {
	DryRun  bool     `json:"dry_run"`
	Actions []Action `json:"actions"`
}

type liveClaim struct {
	id                                 int64
	user, name, container, containerID string
	state                              string
	pid                                int
	pidStart                           int64
	createdMS                          int64
	stoppedMS                          sql.NullInt64
	gpus                               []string
}

func (l *Ledger) liveClaims(ctx context.Context, q interface {
	QueryContext(context.Context, string, ...any) (*sql.Rows, error)
}) ([]liveClaim, error) {
	rows, err := q.QueryContext(ctx, `SELECT c.id, c.user, c.name, c.container, COALESCE(c.container_id, ''), c.state, c.pid, c.pid_start,
		c.created_ms, c.stopped_ms, COALESCE((SELECT group_concat(gpu_uuid) FROM claim_gpus g WHERE g.claim_id = c.id), '')
		FROM claims c WHERE c.state != 'released' ORDER BY c.id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []liveClaim
	for rows.Next() {
		var c liveClaim
		var gpus string
		if err := rows.Scan(&c.id, &c.user, &c.name, &c.container, &c.containerID, &c.state, &c.pid, &c.pidStart, &c.createdMS, &c.stoppedMS, &gpus); err != nil {
			return nil, err
		}
		if gpus != "" {
			c.gpus = strings.Split(gpus, ",")
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// ReconcileOptions control a reconcile.
type ReconcileOptions struct {
	DryRun bool
	Adopt  bool // give containers holding GPUs with no ledger row a row (after a lost ledger)
}

// Reconcile repairs the ledger against the containers that exist:
//   - a pending claim whose process died (or that is older than the pending
//     timeout) is released, unless its container exists, which is then adopted;
//   - an active claim whose container is gone is released;
//   - with gpu.hold_after_stop, an active claim whose container has been
//     stopped longer than that is released;
//   - a container holding GPUs with no live claim is reported (or adopted).
//
// The claims are read first, the containers listed with no transaction open,
// and the changes made in one transaction only to claims that did not change
// meanwhile: a claim seen before the listing has its container in the list.
func (l *Ledger) Reconcile(ctx context.Context, list Lister, o ReconcileOptions) (Report, error) {
	rep := Report{DryRun: o.DryRun, Actions: []Action{}}
	before, err := l.liveClaims(ctx, l.db)
	if err != nil {
		return rep, l.classify(err, "reading claims")
	}
	deadPending := map[int64]bool{}
	for _, c := range before {
		if c.state == "pending" && (!alive(c.pid, c.pidStart) || l.ms()-c.createdMS > l.opt.PendingTimeout.Milliseconds()) {
			deadPending[c.id] = true
		}
	}
	live, err := list(ctx)
	if err != nil {
		return rep, err
	}
	byID := map[string]Container{}
	byAlloc := map[int64]Container{}
	for _, c := range live {
		byID[c.ID] = c
		if c.Alloc != 0 {
			byAlloc[c.Alloc] = c
		}
	}
	seenBefore := map[int64]liveClaim{}
	for _, c := range before {
		seenBefore[c.id] = c
	}
	err = l.tx(ctx, func(tx *sql.Tx) error {
		rep.Actions = rep.Actions[:0]
		now, err := l.liveClaims(ctx, tx)
		if err != nil {
			return err
		}
		claimed := map[string]bool{}
		for _, c := range now {
			old, seen := seenBefore[c.id]
			act := Action{Claim: c.id, User: c.user, Name: c.name, GPUs: c.gpus, Container: c.container}
			if c.containerID != "" {
				claimed[c.containerID] = true
			}
			switch {
			case !seen || old.state != c.state:
				continue // changed since we looked: leave it to the next reconcile
			case c.state == "pending" && deadPending[c.id]:
				if ct, ok := byAlloc[c.id]; ok {
					act.Action, act.Why = "adopt", "its create stopped before recording the container, which exists"
					claimed[ct.ID] = true
					if !o.DryRun {
						if _, err := tx.Exec(`UPDATE claims SET state = 'active', container_id = ?, activated_ms = ? WHERE id = ?`, ct.ID, l.ms(), c.id); err != nil {
							return err
						}
					}
				} else {
					act.Action, act.Why = "release", "pending with no container: its create died or took too long"
					if !o.DryRun {
						if err := release(tx, c.id, "pending-dead", l.ms()); err != nil {
							return err
						}
					}
				}
				rep.Actions = append(rep.Actions, act)
			case c.state == "active":
				ct, ok := byID[c.containerID]
				if !ok {
					act.Action, act.Why = "release", "its container is gone"
					if !o.DryRun {
						if err := release(tx, c.id, "container-gone", l.ms()); err != nil {
							return err
						}
					}
					rep.Actions = append(rep.Actions, act)
					continue
				}
				if l.opt.HoldAfterStop <= 0 {
					continue
				}
				if !ct.Running && c.stoppedMS.Valid && l.ms()-c.stoppedMS.Int64 > l.opt.HoldAfterStop.Milliseconds() {
					act.Action, act.Why, act.ContainerID = "release", "stopped longer than gpu.hold_after_stop", ct.ID
					rep.Actions = append(rep.Actions, act)
					if !o.DryRun {
						if err := release(tx, c.id, "stopped", l.ms()); err != nil {
							return err
						}
					}
					continue
				}
				if o.DryRun || ct.Running == !c.stoppedMS.Valid {
					continue // the stop mark already agrees with the container
				}
				stopped := sql.NullInt64{Int64: l.ms(), Valid: !ct.Running}
				if _, err := tx.Exec(`UPDATE claims SET stopped_ms = ? WHERE id = ?`, stopped, c.id); err != nil {
					return err
				}
			}
		}
		for _, ct := range live {
			if len(ct.GPUs) == 0 || claimed[ct.ID] {
				continue
			}
			// A container whose claim was released while it was stopped is
			// fine until it starts again (start re-claims).
			if !ct.Running {
				continue
			}
			act := Action{User: ct.User, Name: ct.Short, GPUs: ct.GPUs, Container: ct.Name, Action: "report",
				Why: "runs with GPUs but has no live ledger claim"}
			if o.Adopt && !o.DryRun {
				if err := l.adopt(tx, ct); err != nil {
					act.Why += "; cannot adopt: " + err.Error()
				} else {
					act.Action, act.Why = "adopt", "runs with GPUs and had no ledger claim"
				}
			}
			rep.Actions = append(rep.Actions, act)
		}
		return nil
	})
	return rep, l.classify(err, "reconciling")
}

func (l *Ledger) adopt(tx *sql.Tx, ct Container) error {
	hs, err := l.holdings(tx)
	if err != nil {
		return err
	}
	return l.insertActive(tx, usedSlots(hs), ct.User, ct.Short, ct.Name, ct.ID, ct.GPUs)
}

// Holder is one container's hold on a GPU.
type Holder struct {
	User      string    `json:"user"`
	Name      string    `json:"name"`
	Container string    `json:"container"`
	Claim     int64     `json:"claim"`
	State     string    `json:"state"`
	Since     time.Time `json:"since"`
}

// GPUStatus is one GPU and who holds it.
type GPUStatus struct {
	GPU
	Holders []Holder `json:"holders"`
}

// Waiter is one queued request.
type Waiter struct {
	Position int       `json:"position"`
	User     string    `json:"user"`
	Name     string    `json:"name"`
	N        int       `json:"gpus"`
	Since    time.Time `json:"since"`
}

// Status is the whole picture for `mlc gpu status`.
type Status struct {
	Mode      string      `json:"mode"`
	MaxPerGPU int         `json:"max_per_gpu"`
	Ledger    string      `json:"ledger"`
	GPUs      []GPUStatus `json:"gpus"`
	Queue     []Waiter    `json:"queue"`
}

// Hidden stands for another user's container name in what a non-admin sees.
const Hidden = "-"

// RedactFor is st as user may see it: admins see everything; anyone else
// sees who holds each GPU and who waits, but the names of only their own
// containers (another user's container answers like a missing one, so its
// name is not theirs to learn). st itself is left as it is.
func (st Status) RedactFor(user string, admin bool) Status {
	if admin {
		return st
	}
	out := st
	out.GPUs = make([]GPUStatus, len(st.GPUs))
	for i, g := range st.GPUs {
		g.Holders = append([]Holder{}, g.Holders...)
		for j := range g.Holders {
			if g.Holders[j].User != user {
				g.Holders[j].Name, g.Holders[j].Container = Hidden, Hidden
			}
		}
		out.GPUs[i] = g
	}
	out.Queue = append([]Waiter{}, st.Queue...)
	for i := range out.Queue {
		if out.Queue[i].User != user {
			out.Queue[i].Name = Hidden
		}
	}
	return out
}

// RedactFor is rep as user may see it, by the rule of Status.RedactFor: the
// names of other users' containers are hidden from non-admins (anyone may
// run mlc gpu reconcile --dry-run).
func (rep Report) RedactFor(user string, admin bool) Report {
	if admin {
		return rep
	}
	out := rep
	out.Actions = append([]Action{}, rep.Actions...)
	for i := range out.Actions {
		if out.Actions[i].User != user {
			out.Actions[i].Name, out.Actions[i].Container = Hidden, Hidden
		}
	}
	return out
}

// Status reads the ledger.
func (l *Ledger) Status(ctx context.Context) (Status, error) {
	st := Status{Mode: "exclusive", MaxPerGPU: l.opt.MaxPerGPU, Ledger: l.path, GPUs: []GPUStatus{}, Queue: []Waiter{}}
	if l.opt.Shared {
		st.Mode = "shared"
	}
	rows, err := l.db.QueryContext(ctx, `SELECT g.gpu_uuid, c.user, c.name, c.container, c.id, c.state, COALESCE(c.activated_ms, c.created_ms)
		FROM claim_gpus g JOIN claims c ON c.id = g.claim_id WHERE g.live = 1 ORDER BY g.slot`)
	if err != nil {
		return st, l.classify(err, "status")
	}
	holders := map[string][]Holder{}
	for rows.Next() {
		var uuid string
		var h Holder
		var ms int64
		if err := rows.Scan(&uuid, &h.User, &h.Name, &h.Container, &h.Claim, &h.State, &ms); err != nil {
			rows.Close()
			return st, l.classify(err, "status")
		}
		h.Since = time.UnixMilli(ms)
		holders[uuid] = append(holders[uuid], h)
	}
	rows.Close()
	for _, g := range l.inv {
		hs := holders[g.UUID]
		if hs == nil {
			hs = []Holder{}
		}
		st.GPUs = append(st.GPUs, GPUStatus{GPU: g, Holders: hs})
	}
	rows, err = l.db.QueryContext(ctx, `SELECT user, name, n, created_ms FROM waiters WHERE state = 'waiting' AND seen_ms >= ? ORDER BY id`,
		l.ms()-l.opt.StaleWaiter.Milliseconds())
	if err != nil {
		return st, l.classify(err, "status")
	}
	defer rows.Close()
	for rows.Next() {
		var w Waiter
		var ms int64
		if err := rows.Scan(&w.User, &w.Name, &w.N, &ms); err != nil {
			return st, l.classify(err, "status")
		}
		w.Since, w.Position = time.UnixMilli(ms), len(st.Queue)+1
		st.Queue = append(st.Queue, w)
	}
	return st, rows.Err()
}
