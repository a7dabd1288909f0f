// Package containers is the per-user container lifecycle: create, open,
// list, start, stop, kill, remove, logs, protect. It decides from the policy
// (through limits), talks to Docker only through engine.Engine, allocates GPUs
// through an Allocator, and audits every state change.
package containers

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/mlc-lab/mlc/audit"
	"github.com/mlc-lab/mlc/config"
	"github.com/mlc-lab/mlc/engine"
	"github.com/mlc-lab/mlc/errs"
	"github.com/mlc-lab/mlc/identity"
	"github.com/mlc-lab/mlc/limits"
	"github.com/mlc-lab/mlc/paths"
)

// NamePattern is what a container's short name may look like.
var NamePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)

// Manager carries out lifecycle requests.
type Manager struct {
	Cfg      *config.Config
	Eng      engine.Engine
	Dir      limits.Directory
	Audit    *audit.Log
	GPUs     Allocator // nil: the server has no GPU ledger
	Progress io.Writer // pull progress and notices
	Version  string
	// Memlock is the memlock ulimit to ask for (-1 unlimited); see engine.Memlock.
	Memlock int64
	// HostCPUs caps the CPU limit (the engine refuses more than the host has);
	// 0 means this machine's count (mlc runs beside the engine).
	HostCPUs int
	// Paths resolves and makes paths with a user's own rights.
	Paths paths.Runner
}

// Actor is who acts (Caller) and for whom (Target, the caller unless an
// admin passed --user).
type Actor struct {
	Caller *identity.Caller
	Target *identity.Caller
}

// Self is an actor acting for themselves.
func Self(c *identity.Caller) Actor { return Actor{Caller: c, Target: c} }

// For checks that a may act for target (admins only) and returns that actor.
func For(caller, target *identity.Caller) (Actor, error) {
	if target.User != caller.User && !caller.Admin {
		return Actor{}, errs.New(errs.Permission, "only admins may act for another user (--user)")
	}
	return Actor{Caller: caller, Target: target}, nil
}

func (m *Manager) audit(a Actor, action, name string, err error, detail any) {
	if m.Audit == nil {
		return
	}
	e := audit.Entry{Caller: a.Caller.User, CallerUID: a.Caller.UID, Action: action, User: a.Target.User,
		Container: name, Detail: detail}
	if err != nil {
		e.Result, e.Error = "error", err.Error()
	}
	if aerr := m.Audit.Append(e); aerr != nil && m.Progress != nil {
		fmt.Fprintf(m.Progress, "mlc: warning: audit log: %v\n", aerr)
	}
}

// Record appends an action done outside the Manager's own methods (a
// cleanup warning, an image removal) to the audit log.
func (m *Manager) Record(a Actor, action, name string, err error, detail any) {
	m.audit(a, action, name, err, detail)
}

// ready makes sure a state change can be audited before it is made.
func (m *Manager) ready() error {
	if m.Audit == nil {
		return nil
	}
	return m.Audit.Open()
}

// Find resolves a short name among the target's own containers. Another
// user's container answers exactly like a missing one.
func (m *Manager) Find(ctx context.Context, a Actor, name string) (engine.Container, error) {
	if !NamePattern.MatchString(name) {
		return engine.Container{}, errs.New(errs.Usage, "invalid container name %q (letters, digits, _ . -; at most 63; no leading punctuation)", name)
	}
	list, err := m.Eng.List(ctx, a.Target.User)
	if err != nil {
		return engine.Container{}, err
	}
	for _, c := range list {
		if c.Managed() && c.Labels[engine.LabelName] == name && c.Labels[engine.LabelUser] == a.Target.User {
			return c, nil
		}
	}
	return engine.Container{}, errs.New(errs.NotFound, "no such container: %s", name)
}

// Row is one line of `mlc list`.
type Row struct {
	Name    string    `json:"name"`
	User    string    `json:"user"`
	Image   string    `json:"image"`
	Status  string    `json:"status"`
	State   string    `json:"state"`
	CPUs    string    `json:"cpus"`
	Memory  string    `json:"memory"`
	GPUs    []string  `json:"gpus"`
	Ports   []string  `json:"ports,omitempty"`
	Created time.Time `json:"created"`
	Protect bool      `json:"protected"`
	ID      string    `json:"id"`
	// Filled by the caller from the usage history (package cleanup): how
	// long a running container has been idle, and from when cleanup will
	// stop it (nil: never, or not known).
	IdleSeconds *int64     `json:"idle_seconds,omitempty"`
	StopAt      *time.Time `json:"cleanup_stop_at,omitempty"`
	// Workspace is the host directory mounted at /workspace ("" for none).
	Workspace string `json:"-"`
}

// List returns the target's containers, or everyone's with all (admins).
func (m *Manager) List(ctx context.Context, a Actor, all bool) ([]Row, error) {
	user := a.Target.User
	if all {
		if !a.Caller.Admin {
			err := errs.New(errs.Permission, "only admins may list all users' containers (--all)")
			m.audit(a, "list --all", "", err, nil)
			return nil, err
		}
		user = ""
	}
	list, err := m.Eng.List(ctx, user)
	if err != nil {
		return nil, err
	}
	rows := make([]Row, 0, len(list))
	for _, c := range list {
		if !c.Managed() {
			continue
		}
		r := Row{Name: c.Labels[engine.LabelName], User: c.Labels[engine.LabelUser], Image: c.Labels[engine.LabelImage],
			Status: c.Status, State: c.State, CPUs: c.Labels[engine.LabelCPUs], Memory: c.Labels[engine.LabelMemory],
			GPUs: splitList(c.Labels[engine.LabelGPUs]), Created: c.Created, Protect: m.IsProtected(c), ID: c.ID}
		if r.Image == "" {
			r.Image = c.Image
		}
		for _, mt := range c.Mounts {
			if mt.Target == "/workspace" {
				r.Workspace = mt.Source
			}
		}
		for _, p := range c.Ports {
			r.Ports = append(r.Ports, fmt.Sprintf("%s:%s->%s/%s", p.HostIP, p.HostPort, p.ContainerPort, p.Proto))
		}
		rows = append(rows, r)
	}
	sort.Slice(rows, func(i, j int) bool {
		if rows[i].User != rows[j].User {
			return rows[i].User < rows[j].User
		}
		return rows[i].Name < rows[j].Name
	})
	return rows, nil
}

func hasGPUs(c engine.Container) bool { return c.Labels[engine.LabelGPUs] != "" }

func splitList(s string) []string {
	if s == "" {
		return []string{}
	}
	return strings.Split(s, ",")
}

// Start starts a stopped container.
func (m *Manager) Start(ctx context.Context, a Actor, name string) (err error) {
	defer func() { m.audit(a, "start", name, err, nil) }()
	c, err := m.Find(ctx, a, name)
	if err != nil {
		return err
	}
	if c.Running() {
		return errs.New(errs.Conflict, "%s is already running", name)
	}
	return m.start(ctx, c)
}

// start starts a found container: its mounts must still be the directories
// recorded at create, and its GPUs are re-claimed, under the owner's quota,
// if they were released while it was stopped.
func (m *Manager) start(ctx context.Context, c engine.Container) error {
	if err := m.ready(); err != nil {
		return err
	}
	if uid, err := strconv.Atoi(c.Labels[engine.LabelUID]); err == nil && m.copying(uid, c.Labels[engine.LabelName]) {
		return errs.New(errs.Conflict, "%s is still being written by mlc copy; it starts when the copy is done", c.Labels[engine.LabelName])
	}
	if err := checkMounts(c); err != nil {
		return err
	}
	if m.GPUs != nil && hasGPUs(c) {
		lim, err := limits.Resolve(m.Cfg, m.Dir, c.Labels[engine.LabelUser])
		if err != nil {
			return err
		}
		if err := m.GPUs.EnsureHeld(ctx, c, lim.GPUs.Value, lim.GPUs.Source); err != nil {
			return err
		}
		// Its GPUs held again, the engine may restart it again (a release turned that off).
		if err := m.Eng.SetRestart(ctx, c.ID, true); err != nil {
			return err
		}
	}
	return m.Eng.Start(ctx, c.ID)
}

// Stop stops a container, killing it after timeout seconds.
func (m *Manager) Stop(ctx context.Context, a Actor, name string, timeout int) error {
	return m.halt(ctx, a, name, "stop", func(ctx context.Context, id string) error { return m.Eng.Stop(ctx, id, timeout) })
}

// Kill force-stops a container.
func (m *Manager) Kill(ctx context.Context, a Actor, name string) error {
	return m.halt(ctx, a, name, "kill", func(ctx context.Context, id string) error { return m.Eng.Kill(ctx, id) })
}

// halt stops a running container with fn and tells the GPU ledger.
func (m *Manager) halt(ctx context.Context, a Actor, name, action string, fn func(ctx context.Context, id string) error) (err error) {
	defer func() { m.audit(a, action, name, err, nil) }()
	c, err := m.Find(ctx, a, name)
	if err != nil {
		return err
	}
	if err := m.ready(); err != nil {
		return err
	}
	if !c.Running() {
		return errs.New(errs.Conflict, "%s is not running (%s)", name, c.State)
	}
	// Once asked, the engine finishes the stop whatever happens to us: an
	// interrupt must not leave the ledger without its stop mark.
	work := context.WithoutCancel(ctx)
	err = fn(work, c.ID)
	if err == nil && m.GPUs != nil && hasGPUs(c) {
		err = m.GPUs.Stopped(work, c)
	}
	return err
}

// Remove removes a container. Its workspace and data stay. A running one
// needs force; a protected one needs an admin's force.
func (m *Manager) Remove(ctx context.Context, a Actor, name string, force bool) (err error) {
	defer func() { m.audit(a, "remove", name, err, nil) }()
	c, err := m.Find(ctx, a, name)
	if err != nil {
		return err
	}
	if err := m.ready(); err != nil {
		return err
	}
	if m.IsProtected(c) && !(force && a.Caller.Admin) {
		return errs.New(errs.Conflict, "%s is protected; an admin can remove it with --force", name)
	}
	if c.Running() && !force {
		return errs.New(errs.Conflict, "%s is running; stop it first, or use --force", name)
	}
	// The engine finishes a remove once asked, whatever happens to us: the
	// bookkeeping after it (GPUs, mark, network) must run to its end too.
	ctx = context.WithoutCancel(ctx)
	err = m.Eng.Remove(ctx, c.ID, force)
	if err == nil {
		if m.GPUs != nil && (hasGPUs(c) || c.Labels[engine.LabelAlloc] != "") {
			_, err = m.GPUs.Release(ctx, c, "removed")
		}
		m.clearProtectMark(c.ID)
		// Under the user's lock: a create of theirs may be about to join it.
		if unlock, lerr := m.lockUser(context.WithoutCancel(ctx), a.Target.UID); lerr == nil {
			if nerr := m.dropNetworkIfEmpty(ctx, a); nerr != nil && m.Progress != nil {
				fmt.Fprintf(m.Progress, "mlc: note: %v\n", nerr)
			}
			unlock()
		}
	}
	return err
}

// LogsOptions select the output of Logs.
type LogsOptions struct {
	Follow bool
	Tail   int // <0: all
	Out    io.Writer
}

// Logs prints a container's output.
func (m *Manager) Logs(ctx context.Context, a Actor, name string, o LogsOptions) error {
	c, err := m.Find(ctx, a, name)
	if err != nil {
		return err
	}
	tail := "all"
	if o.Tail >= 0 {
		tail = strconv.Itoa(o.Tail)
	}
	return m.Eng.Logs(ctx, c.ID, engine.LogOptions{Follow: o.Follow, Tail: tail, Stdout: o.Out, Stderr: o.Out, TTY: true})
}

// OpenOptions are the streams and command of Open.
type OpenOptions struct {
	Cmd    []string // empty: a login shell
	TTY    bool
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
}

// Open runs a shell (or Cmd) as the container's user, starting the container
// when it is stopped. It returns the command's exit code.
func (m *Manager) Open(ctx context.Context, a Actor, name string, o OpenOptions) (int, error) {
	c, err := m.Find(ctx, a, name)
	if err != nil {
		m.audit(a, "open", name, err, nil)
		return -1, err
	}
	if !c.Running() {
		err := m.start(ctx, c)
		m.audit(a, "start", name, err, map[string]any{"by": "open"})
		if err != nil {
			return -1, err
		}
	}
	cmd := o.Cmd
	if len(cmd) == 0 {
		cmd = []string{"sh", "-c", "if command -v bash >/dev/null 2>&1; then exec bash -l; else exec sh -l; fi"}
	}
	user := ""
	if uid := c.Labels[engine.LabelUID]; uid != "" && c.Labels[engine.LabelRoot] != "true" {
		user = uid + ":" + c.Labels[engine.LabelGID]
	}
	m.audit(a, "open", name, nil, map[string]any{"cmd": o.Cmd})
	return m.Eng.Exec(ctx, c.ID, engine.ExecOptions{Cmd: cmd, User: user, WorkDir: "/workspace",
		TTY: o.TTY, Stdin: o.Stdin, Stdout: o.Stdout, Stderr: o.Stderr})
}

// Protect marks a container so cleanup and remove leave it alone (admins).
// Docker labels cannot change after create, so the mark is a file in the
// state directory; the mlc.protected label and the policy's patterns count too.
func (m *Manager) Protect(ctx context.Context, a Actor, name string, on bool) (err error) {
	action := "protect"
	if !on {
		action = "unprotect"
	}
	defer func() { m.audit(a, action, name, err, nil) }()
	if !a.Caller.Admin {
		return errs.New(errs.Permission, "only admins may change protection")
	}
	c, err := m.Find(ctx, a, name)
	if err != nil {
		return err
	}
	if err := m.ready(); err != nil {
		return err
	}
	if on {
		err = os.MkdirAll(m.protectDir(), 0o700)
		if err == nil {
			err = os.WriteFile(m.protectMark(c.ID), []byte(a.Caller.User+"\n"), 0o644)
		}
		err = errs.Wrap(errs.State, err, "protection mark")
	} else {
		if why := m.ProtectedWhy(c); why != "" && why != "mlc protect" {
			err = errs.New(errs.Conflict, "%s is protected by its label or by the policy's protected patterns; only the policy can change that", name)
		} else if rerr := os.Remove(m.protectMark(c.ID)); rerr != nil && !os.IsNotExist(rerr) {
			err = errs.Wrap(errs.State, rerr, "protection mark")
		}
	}
	return err
}

func (m *Manager) protectDir() string           { return filepath.Join(m.Cfg.StateDir, "protected") }
func (m *Manager) protectMark(id string) string { return filepath.Join(m.protectDir(), id) }
func (m *Manager) clearProtectMark(id string)   { _ = os.Remove(m.protectMark(id)) }

// IsProtected is whether cleanup, prune and remove must leave c alone.
func (m *Manager) IsProtected(c engine.Container) bool { return m.ProtectedWhy(c) != "" }

// ProtectedWhy says why c is protected ("" when it is not): its label, a
// protected pattern of the policy, or an admin's mlc protect.
func (m *Manager) ProtectedWhy(c engine.Container) string {
	if c.Labels[engine.LabelProtected] == "true" {
		return "label " + engine.LabelProtected
	}
	if pat := config.ProtectedPattern(m.Cfg, c.Labels[engine.LabelName], c.Name); pat != "" {
		return "pattern " + pat
	}
	if _, err := os.Stat(m.protectMark(c.ID)); err == nil {
		return "mlc protect"
	}
	return ""
}
