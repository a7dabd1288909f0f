package containers

// mlc copy, the two halves that run as root: on the source, Describe and
// CopyOut (the settings, then the layer of changes); on the target,
// Preflight and CopyIn (a create under this server's policy and ledger from
// those settings, of the same catalogue image, into which the changes are
// written). The user's own mlc
// (not root) joins the two over SSH: see package servers.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/mlc-lab/mlc/config"
	"github.com/mlc-lab/mlc/engine"
	"github.com/mlc-lab/mlc/errs"
	"github.com/mlc-lab/mlc/limits"
	"github.com/mlc-lab/mlc/paths"
)

// Transfer is what a copy needs of the engine beyond Engine
// (*engine.Client has it).
type Transfer interface {
	Detail(ctx context.Context, id string) (engine.Detail, error)
	ExportChanges(ctx context.Context, id string, w io.Writer, phase func(string), progress func(int64)) (engine.Exported, error)
	ImportChanges(ctx context.Context, id string, r io.Reader, max int64, owner engine.Owner, progress func(int64)) (engine.Received, error)
	FreeDisk(ctx context.Context) (int64, error)
}

// CopySettings are what a copy carries from the source container: what the
// target's create is asked for. The target checks every field against its own
// policy as it checks any create.
type CopySettings struct {
	Name      string      `json:"name"`  // the name on the source
	Image     string      `json:"image"` // catalogue alias
	CPUs      float64     `json:"cpus"`
	Memory    config.Size `json:"memory"`
	GPUs      int         `json:"gpus"`
	Publish   []string    `json:"publish,omitempty"` // HOSTPORT:CONTAINERPORT/PROTO
	Env       []string    `json:"env,omitempty"`     // set by the user at create
	Root      bool        `json:"root,omitempty"`
	Workspace string      `json:"workspace"`      // the workspace's name
	WsPath    string      `json:"workspace_path"` // on the source
	Data      string      `json:"data,omitempty"`
	Models    string      `json:"models,omitempty"`
	Changes   int64       `json:"changes_bytes"` // the engine's size of the writable layer
}

// PreflightReply is what the target answers before anything is sent.
type PreflightReply struct {
	Shared    bool     `json:"shared_workspaces"`
	Workspace string   `json:"workspace"` // where the workspace will be on the target
	Notes     []string `json:"notes,omitempty"`
}

// CopyEvent is one line the target writes while receiving.
type CopyEvent struct {
	Event     string   `json:"event"` // created, started
	Name      string   `json:"name"`
	Workspace string   `json:"workspace,omitempty"`
	GPUs      []string `json:"gpus,omitempty"`
	Publish   []string `json:"publish,omitempty"`
	Notes     []string `json:"notes,omitempty"`
}

func (m *Manager) transfer() (Transfer, error) {
	t, ok := m.Eng.(Transfer)
	if !ok {
		return nil, errs.New(errs.Unavailable, "this engine cannot copy containers")
	}
	return t, nil
}

// mayCopyHere refuses a user this server's policy does not let copy.
func (m *Manager) mayCopyHere(a Actor) error {
	lim, err := limits.Resolve(m.Cfg, m.Dir, a.Target.User)
	if err != nil {
		return err
	}
	return mayCopy(a, lim)
}

// mayCopy refuses a user whose limits do not let them copy.
func mayCopy(a Actor, lim *limits.Resolved) error {
	if !lim.MayCopy.Value {
		return errs.New(errs.Permission, "the policy of this server does not let %s copy containers (may_copy: false, %s)", a.Target.User, lim.MayCopy.Source)
	}
	return nil
}

// Describe is the settings of the caller's container name, for a copy.
func (m *Manager) Describe(ctx context.Context, a Actor, name string) (*CopySettings, error) {
	if err := m.mayCopyHere(a); err != nil {
		m.audit(a, "copy-out", name, err, nil)
		return nil, err
	}
	t, err := m.transfer()
	if err != nil {
		return nil, err
	}
	c, err := m.Find(ctx, a, name)
	if err != nil {
		return nil, err
	}
	d, err := t.Detail(ctx, c.ID)
	if err != nil {
		return nil, err
	}
	s := &CopySettings{Name: name, Image: c.Labels[engine.LabelImage], GPUs: len(splitList(c.Labels[engine.LabelGPUs])),
		Root: c.Labels[engine.LabelRoot] == "true", Changes: d.SizeRw}
	s.CPUs, _ = strconv.ParseFloat(c.Labels[engine.LabelCPUs], 64)
	if v := c.Labels[engine.LabelMemory]; v != "" {
		s.Memory, _ = config.ParseSize(v)
	}
	fromImage := map[string]bool{}
	for _, kv := range d.ImageEnv {
		fromImage[kv] = true
	}
	for _, kv := range d.Env {
		k, _, _ := strings.Cut(kv, "=")
		if fromImage[kv] || reservedEnv(k) || k == "HOME" || k == "USER" || k == "MLC_CONTAINER" {
			continue
		}
		s.Env = append(s.Env, kv)
	}
	for _, p := range d.Ports {
		s.Publish = append(s.Publish, p.HostPort+":"+p.ContainerPort+"/"+p.Proto)
	}
	for _, mt := range d.Mounts {
		switch mt.Target {
		case "/workspace":
			s.WsPath, s.Workspace = mt.Source, filepath.Base(mt.Source)
		case "/data":
			s.Data = mt.Source
		case "/models":
			s.Models = mt.Source
		}
	}
	return s, nil
}

// CopyOut writes the writable layer of the caller's container name to w:
// its changes to the catalogue image, nothing of the image itself.
func (m *Manager) CopyOut(ctx context.Context, a Actor, name string, w io.Writer) (err error) {
	var sent engine.Exported
	defer func() {
		m.audit(a, "copy-out", name, err, map[string]any{"bytes": sent.Bytes, "entries": sent.Entries})
	}()
	if err := m.mayCopyHere(a); err != nil {
		return err
	}
	t, err := m.transfer()
	if err != nil {
		return err
	}
	c, err := m.Find(ctx, a, name)
	if err != nil {
		return err
	}
	// Progress lines for the user's mlc, at most four a second and the last.
	var last time.Time
	var n int64
	sent, err = t.ExportChanges(ctx, c.ID, w, func(phase string) {
		if m.Progress != nil {
			fmt.Fprintf(m.Progress, "%s %s\n", phase, name)
		}
	}, func(b int64) {
		n = b
		if m.Progress != nil && time.Since(last) > 250*time.Millisecond {
			last = time.Now()
			fmt.Fprintf(m.Progress, "progress %d\n", b)
		}
	})
	if m.Progress != nil {
		fmt.Fprintf(m.Progress, "progress %d\n", n)
	}
	return err
}

// request is the create a copy asks the target for.
func (s *CopySettings) request(newName, workspace string) CreateRequest {
	return CreateRequest{Name: newName, ImageAlias: s.Image, CPUs: s.CPUs, Memory: s.Memory, GPUs: s.GPUs,
		Publish: s.Publish, Env: s.Env, Root: s.Root, Workspace: workspace, Data: s.Data, Models: s.Models, NoStart: true}
}

// fit lowers the CPUs and memory a copy carries (what the source gave the
// container) to this server's limits for the user, saying so: a copy is
// not refused for coming from a server with more generous limits.
func fit(s *CopySettings, lim *limits.Resolved) []string {
	var notes []string
	if s.CPUs > lim.CPUs.Value {
		notes = append(notes, fmt.Sprintf("%v CPUs here (your cpus limit on this server, %s), not %v", lim.CPUs.Value, lim.CPUs.Source, s.CPUs))
		s.CPUs = 0
	}
	if s.Memory > lim.Memory.Value {
		notes = append(notes, fmt.Sprintf("%s of memory here (your memory limit on this server, %s), not %s", lim.Memory.Value, lim.Memory.Source, s.Memory))
		s.Memory = 0
	}
	return notes
}

// copyTarget checks a copy's settings against this server's policy (a dry-run
// create) and answers what the target has. It may lower s's CPUs and memory
// to this server's limits (see fit) and move its host ports (see freePorts).
func (m *Manager) copyTarget(ctx context.Context, a Actor, s *CopySettings, newName, workspace string) (*PreflightReply, config.Image, error) {
	lim, err := limits.Resolve(m.Cfg, m.Dir, a.Target.User)
	if err != nil {
		return nil, config.Image{}, err
	}
	if err := mayCopy(a, lim); err != nil {
		return nil, config.Image{}, err
	}
	notes := fit(s, lim)
	var moved []string
	s.Publish, moved = m.freePorts(ctx, s.Publish)
	notes = append(notes, moved...)
	if s.GPUs > 0 && m.GPUs != nil {
		if st, err := m.GPUs.Status(ctx); err == nil {
			if free := freeGPUs(st); free < s.GPUs {
				return nil, config.Image{}, errs.New(errs.Unavailable, "the copy needs %d GPUs and %d are free on this server now (mlc servers shows where there are)", s.GPUs, free)
			}
		}
	}
	if s.Image == "" {
		return nil, config.Image{}, errs.New(errs.Usage, "the copy names no catalogue image")
	}
	if _, ok := m.Cfg.ImageAlias(s.Image); !ok {
		return nil, config.Image{}, errs.New(errs.NotFound, "image %q is not in this server's catalogue (%s)", s.Image, catalogue(m.Cfg, ""))
	}
	r := s.request(newName, workspace)
	r.DryRun = true
	out, err := m.create(ctx, a, r)
	if err != nil {
		return nil, config.Image{}, err
	}
	im, _ := m.Cfg.ImageAlias(s.Image)
	rep := &PreflightReply{Shared: m.Cfg.Policies.SharedWorkspaces, Workspace: out.Workspace, Notes: notes}
	if !rep.Shared {
		if fi, err := os.Lstat(out.Workspace); err == nil && fi.IsDir() {
			if empty, _ := dirEmpty(out.Workspace); !empty {
				return nil, config.Image{}, errs.New(errs.Conflict, "the workspace %s already exists on this server and is not empty; copy with --workspace NAME (or remove it there)", r.Workspace)
			}
		}
	}
	return rep, *im, nil
}

func dirEmpty(p string) (bool, error) {
	f, err := os.Open(p)
	if err != nil {
		return false, err
	}
	defer f.Close()
	_, err = f.Readdirnames(1)
	return errors.Is(err, io.EOF), nil
}

// Preflight checks, before any byte of the changes is sent, that this server
// would take the copy (pulling the catalogue image if it is missing), and
// says where the workspace will be and what it changed (notes).
func (m *Manager) Preflight(ctx context.Context, a Actor, s *CopySettings, newName, workspace string) (*PreflightReply, error) {
	rep, im, err := m.copyTarget(ctx, a, s, newName, workspace)
	if err != nil {
		m.audit(a, "copy-in", newName, err, nil)
		return nil, err
	}
	if err := m.ensureImage(ctx, im.Image); err != nil {
		return nil, err
	}
	return rep, nil
}

// CopyIn receives a copy on this server: the settings as one JSON line, then
// the layer stream (see engine.ImportChanges), both from in. It creates the
// container (not started) under this server's policy, GPU ledger and quota,
// writes a "created" event to out, then waits for the line "start" on in:
// only then is the container started (and a "started" event written).
// Anything else (the stream cut, end of input, an interrupt) undoes it all:
// the container, its GPU claim, and a workspace made (or filled) for it.
func (m *Manager) CopyIn(ctx context.Context, a Actor, newName, workspace string, in *bufio.Reader, out io.Writer) (err error) {
	var s CopySettings
	defer func() { m.audit(a, "copy-in", newName, err, map[string]any{"from": s.Name, "image": s.Image}) }()
	line, err := readLine(in, 1<<20)
	if err != nil {
		return errs.New(errs.Unavailable, "the copy stream ended before its settings (or they are over 1 MiB): %v", err)
	}
	if err := json.Unmarshal(line, &s); err != nil {
		return errs.New(errs.Usage, "the copy stream's settings are unreadable: %v", err)
	}
	if workspace == "" {
		workspace = s.Workspace
	}
	if workspace == "" {
		workspace = newName
	}
	unlock, err := m.lockCopies(ctx, a.Target.UID)
	if err != nil {
		return err
	}
	locked := true
	defer func() {
		if locked {
			unlock()
		}
	}()
	pre, im, err := m.copyTarget(ctx, a, &s, newName, workspace)
	if err != nil {
		return err
	}
	if err := m.ensureImage(ctx, im.Image); err != nil {
		return err
	}
	t, err := m.transfer()
	if err != nil {
		return err
	}
	free, err := t.FreeDisk(ctx)
	if err != nil {
		return err
	}
	// The changes are written once, into the container's layer; keep a
	// tenth of the disk free besides.
	max := free * 9 / 10
	wsPath := filepath.Join(m.Cfg.Policies.WorkspaceRoot, a.Target.User, workspace)
	_, wsErr := os.Lstat(wsPath)
	wsNew := errors.Is(wsErr, os.ErrNotExist)
	wsEmpty, _ := dirEmpty(wsPath) // an empty one is filled by the copy: emptied again if it is undone

	r := s.request(newName, workspace)
	notes := pre.Notes
	// Nothing may start the container while the copy writes into it.
	unmark, err := m.markCopying(ctx, a.Target.UID, newName)
	if err != nil {
		return err
	}
	marked := true
	defer func() {
		if marked {
			unmark()
		}
	}()
	created, err := m.Create(ctx, a, r)
	if err != nil {
		return err
	}
	undo := func(cause error) error {
		c, cancel := context.WithTimeout(context.WithoutCancel(ctx), 60*time.Second)
		defer cancel()
		if rerr := m.Remove(c, a, newName, true); rerr != nil && m.Progress != nil {
			fmt.Fprintf(m.Progress, "mlc: undoing the copy: %v\n", rerr)
		}
		switch {
		case m.Cfg.Policies.SharedWorkspaces:
		case wsNew:
			_ = paths.RemoveWorkspace(m.Cfg.Policies.WorkspaceRoot, a.Target.User, workspace, false)
		case wsEmpty:
			_ = paths.RemoveWorkspace(m.Cfg.Policies.WorkspaceRoot, a.Target.User, workspace, true)
		}
		return cause
	}
	got, err := t.ImportChanges(ctx, created.ID, in, max, engine.Owner{UID: a.Target.UID, GID: a.Target.GID}, nil)
	unlock()
	locked = false
	unmark()
	marked = false
	if err != nil {
		return undo(err)
	}
	if ctx.Err() != nil {
		return undo(errs.New(errs.Interrupted, "the copy was interrupted; %s was not kept", newName))
	}
	_ = got
	ev := CopyEvent{Event: "created", Name: newName, Workspace: created.Workspace, GPUs: created.GPUs, Publish: r.Publish, Notes: notes}
	if err := writeEvent(out, ev); err != nil {
		return undo(errs.New(errs.Unavailable, "the copy was interrupted (%v); %s was not kept", err, newName))
	}
	word, err := readWord(ctx, in)
	if err != nil || word != "start" {
		if ctx.Err() != nil || err != nil {
			return undo(errs.New(errs.Interrupted, "the copy was interrupted; %s was not kept", newName))
		}
		return undo(errs.New(errs.Usage, "the copy was called off (%q); %s was not kept", word, newName))
	}
	if err := m.Start(context.WithoutCancel(ctx), a, newName); err != nil {
		return undo(err)
	}
	return writeEvent(out, CopyEvent{Event: "started", Name: newName})
}

// freePorts keeps each published host port that is free here and lets the
// engine choose for the others, saying so.
func (m *Manager) freePorts(ctx context.Context, publish []string) ([]string, []string) {
	used := map[string]bool{}
	if list, err := m.Eng.ListAll(ctx); err == nil {
		for _, c := range list {
			for _, p := range c.Ports {
				used[p.HostPort+"/"+p.Proto] = true
			}
		}
	}
	var out, notes []string
	for _, p := range publish {
		host, rest, ok := strings.Cut(p, ":")
		proto := "tcp"
		if i := strings.LastIndex(rest, "/"); i >= 0 {
			proto = rest[i+1:]
		}
		if ok && host != "" && (used[host+"/"+proto] || !portFree(m.Cfg.Policies.BindAddress, host, proto)) {
			notes = append(notes, fmt.Sprintf("host port %s is taken on this server; port %s is published on a port the engine chose (see mlc list)", host, rest))
			p = rest
		}
		out = append(out, p)
	}
	return out, notes
}

func writeEvent(w io.Writer, ev CopyEvent) error {
	b, _ := json.Marshal(ev)
	_, err := w.Write(append(b, '\n'))
	return err
}

// readLine reads one line from in, of at most max bytes.
func readLine(in *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	for {
		b, err := in.ReadSlice('\n')
		line = append(line, b...)
		if len(line) > max {
			return nil, errs.New(errs.Usage, "a line of the copy stream is over %d bytes", max)
		}
		switch {
		case err == nil:
			return line, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		default:
			return line, err
		}
	}
}

// readWord reads one line from in, giving up when ctx ends.
func readWord(ctx context.Context, in *bufio.Reader) (string, error) {
	type res struct {
		s   string
		err error
	}
	ch := make(chan res, 1)
	go func() {
		b, err := readLine(in, 64)
		ch <- res{strings.TrimSpace(string(b)), err}
	}()
	select {
	case r := <-ch:
		if r.err != nil && r.s == "" {
			return "", r.err
		}
		return r.s, nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// portFree is whether nothing listens on addr:port/proto here.
func portFree(addr, port, proto string) bool {
	hp := net.JoinHostPort(addr, port)
	if proto == "udp" {
		c, err := net.ListenPacket("udp", hp)
		if err != nil {
			return false
		}
		c.Close()
		return true
	}
	l, err := net.Listen("tcp", hp)
	if err != nil {
		return false
	}
	l.Close()
	return true
}
