package containers

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/mlc-lab/mlc/config"
	"github.com/mlc-lab/mlc/engine"
	"github.com/mlc-lab/mlc/errs"
	"github.com/mlc-lab/mlc/gpualloc"
	"github.com/mlc-lab/mlc/limits"
	"github.com/mlc-lab/mlc/paths"
)

// Allocator hands out GPUs (gpualloc's ledger implements it).
type Allocator interface {
	// Claim reserves n GPUs as pending for a container about to be created,
	// keeping the user within quota GPUs over all their containers.
	Claim(ctx context.Context, r ClaimRequest) (Claim, error)
	// Activate records that the container now exists.
	Activate(ctx context.Context, claimID int64, containerID string) error
	// Abort releases a claim whose container could not be made.
	Abort(ctx context.Context, claimID int64) error
	// Stopped is told of a stop (GPUs may be released after gpu.hold_after_stop).
	Stopped(ctx context.Context, c engine.Container) error
	// Release frees every GPU claim of a container (removed, or released by
	// an admin) and says how many claims it freed.
	Release(ctx context.Context, c engine.Container, reason string) (int, error)
	// EnsureHeld re-claims a stopped container's GPUs before it starts again,
	// if they were released while it was stopped, under the same quota and
	// wait-queue rules as a create (quota is the owner's gpus limit).
	EnsureHeld(ctx context.Context, c engine.Container, quota int, quotaFrom string) error
	// Status is every GPU, its holders and the wait queue.
	Status(ctx context.Context) (gpualloc.Status, error)
	// Reconcile repairs the ledger against the containers that exist.
	Reconcile(ctx context.Context, o gpualloc.ReconcileOptions) (gpualloc.Report, error)
}

// ClaimRequest asks for GPUs.
type ClaimRequest struct {
	User      string
	Name      string // the user's short name
	Container string // the Docker name
	N         int
	Quota     int    // the user's gpus limit
	QuotaFrom string // the rule that set it, for errors
	Wait      bool
	Timeout   time.Duration
	Progress  func(msg string)
}

// Claim is a reservation.
type Claim struct {
	ID    int64
	UUIDs []string
	Fake  bool // fake GPUs: pinned through the env runtime whatever the policy says
}

// CreateRequest is `mlc create`'s arguments.
type CreateRequest struct {
	Name       string
	Framework  string
	Version    string
	ImageAlias string
	CPUs       float64     // 0: the limit
	Memory     config.Size // 0: the limit
	GPUs       int
	Workspace  string // "" : the policy's workspace
	Data       string
	Models     string
	Publish    []string
	Env        []string
	Root       bool
	NoStart    bool
	DryRun     bool
	Wait       bool
	Timeout    time.Duration
	Cwd        string // for relative paths; "" = the process's
}

// Created is what create made (or would make, with DryRun).
type Created struct {
	Name      string         `json:"name"`
	User      string         `json:"user"`
	ID        string         `json:"id,omitempty"`
	Image     string         `json:"image"`
	GPUs      []string       `json:"gpus"`
	Started   bool           `json:"started"`
	Workspace string         `json:"workspace"`
	Request   engine.Request `json:"request"`
	DryRun    bool           `json:"dry_run,omitempty"`
}

var envKeyRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// reservedEnv is whether a user may not set variable k: GPUs are mlc's to assign.
func reservedEnv(k string) bool {
	u := strings.ToUpper(k)
	return strings.HasPrefix(u, "NVIDIA_") || u == "CUDA_VISIBLE_DEVICES"
}

// Create makes a container for a.Target under the policy and starts it. It
// either succeeds or leaves nothing behind: no container, no GPU claim, even
// when interrupted (ctx cancelled) at any point. Every outcome but a dry run
// is audited, refusals included.
func (m *Manager) Create(ctx context.Context, a Actor, r CreateRequest) (*Created, error) {
	out, err := m.create(ctx, a, r)
	if r.DryRun {
		return out, err
	}
	var detail any
	if err == nil {
		detail = map[string]any{"image": out.Image, "cpus": out.Request.HostConfig.NanoCPUs, "memory": out.Request.HostConfig.Memory,
			"gpus": out.GPUs, "workspace": out.Workspace}
	}
	m.audit(a, "create", r.Name, err, detail)
	return out, err
}

func (m *Manager) create(ctx context.Context, a Actor, r CreateRequest) (*Created, error) {
	if !NamePattern.MatchString(r.Name) {
		return nil, errs.New(errs.Usage, "invalid container name %q (letters, digits, _ . -; at most 63; no leading punctuation)", r.Name)
	}
	f, err := m.gather(ctx, a, r)
	if err != nil {
		return nil, err
	}
	p, err := Plan(m.Cfg, a, r, f)
	if err != nil {
		return nil, err
	}
	if err := m.checkPorts(a, p.Spec.Ports); err != nil {
		return nil, err
	}
	// An early answer; the count that decides is taken again under the user's lock.
	if err := m.checkCount(ctx, a, r.Name, p.Limits); err != nil {
		return nil, err
	}
	if r.DryRun {
		return p.Created(), nil
	}
	return m.apply(ctx, a, r, p)
}

// Facts are what a create plan needs to know beyond the policy and the
// request, gathered before planning (they take I/O): the owner's resolved
// limits, --data/--models resolved with the owner's rights, the host's CPU
// count, whether the engine remaps root.
type Facts struct {
	Limits      *limits.Resolved
	Mounts      map[string]paths.Resolved // "/data", "/models" -> the resolved directory
	HostCPUs    int
	RemapsRoot  bool
	Memlock     int64
	Version     string
	WorkspaceID paths.ID // zero in a plan: the workspace is made by apply
}

// gather collects the Facts for r.
func (m *Manager) gather(ctx context.Context, a Actor, r CreateRequest) (Facts, error) {
	lim, err := limits.Resolve(m.Cfg, m.Dir, a.Target.User)
	if err != nil {
		return Facts{}, err
	}
	f := Facts{Limits: lim, Mounts: map[string]paths.Resolved{}, HostCPUs: m.hostCPUs(), Memlock: m.Memlock, Version: m.Version}
	if r.Root && m.Cfg.Policies.AllowRoot {
		if f.RemapsRoot, err = EngineRemapsRoot(ctx, m.Eng); err != nil {
			return Facts{}, err
		}
	}
	for _, d := range []struct{ flag, path, target string }{{"--data", r.Data, "/data"}, {"--models", r.Models, "/models"}} {
		if d.path == "" {
			continue
		}
		res, err := m.userDir(ctx, a, r.Cwd, d.path, d.flag)
		if err != nil {
			return Facts{}, err
		}
		f.Mounts[d.target] = res
	}
	return f, nil
}

// CreatePlan is what a create will make: the exact create request, which is
// what --dry-run prints.
type CreatePlan struct {
	Spec   engine.Spec
	Limits *limits.Resolved
	Image  config.Image
	mounts mountPlan
	out    Created
}

// Created is the plan as the dry run shows it.
func (p *CreatePlan) Created() *Created {
	spec := p.Spec
	spec.Labels = maps.Clone(p.Spec.Labels)
	if n := len(spec.GPUs); n > 0 {
		spec.Labels[engine.LabelGPUs] = strings.Join(spec.GPUs, ",")
	}
	spec.Labels[engine.LabelMounts] = "<recorded at create>"
	out := p.out
	out.Request, out.DryRun = spec.Request(), true
	return &out
}

// Plan decides a create from the policy, the request and the gathered facts
// alone: no I/O. Every refusal of the request that needs no engine is here.
func Plan(cfg *config.Config, a Actor, r CreateRequest, f Facts) (*CreatePlan, error) {
	lim := f.Limits
	img, err := pickImage(cfg, a, r)
	if err != nil {
		return nil, err
	}
	cpus, mem, err := fitLimits(r, lim)
	if err != nil {
		return nil, err
	}
	// A limit above the machine's size means all of it; the engine refuses more.
	if host := float64(f.HostCPUs); host > 0 && cpus > host {
		cpus = host
	}
	if r.GPUs < 0 {
		return nil, errs.New(errs.Usage, "--gpus must be 0 or more")
	}
	if r.GPUs > lim.GPUs.Value {
		return nil, errs.New(errs.Quota, "--gpus %d is more than your gpus limit of %d (%s)", r.GPUs, lim.GPUs.Value, lim.GPUs.Source)
	}
	if r.Root {
		if !cfg.Policies.AllowRoot {
			return nil, errs.New(errs.Permission, "--root: the policy does not allow root in containers (policies.allow_root)")
		}
		if !f.RemapsRoot {
			return nil, errs.New(errs.Permission, "--root: this engine does not remap user namespaces, so root in a container would be root on the host; an admin must run dockerd with --userns-remap=default (see docs/admin-guide.md)")
		}
	}
	var ports []engine.Port
	for _, p := range r.Publish {
		port, err := engine.ParsePort(p, cfg.Policies.BindAddress)
		if err != nil {
			return nil, errs.New(errs.Usage, "%v", err)
		}
		ports = append(ports, port)
	}
	env := []string{"HOME=/workspace", "USER=" + a.Target.User, "MLC_CONTAINER=" + r.Name}
	for _, kv := range r.Env {
		k, _, ok := strings.Cut(kv, "=")
		if !ok || !envKeyRE.MatchString(k) {
			return nil, errs.New(errs.Usage, "--env %q: use KEY=VALUE", kv)
		}
		if reservedEnv(k) {
			return nil, errs.New(errs.Permission, "--env %s: NVIDIA_* and CUDA_VISIBLE_DEVICES are set by mlc (ask for GPUs with --gpus N)", k)
		}
		env = append(env, kv)
	}
	mp, err := planMounts(cfg, a, r, f)
	if err != nil {
		return nil, err
	}
	user := a.Target.UIDGID()
	if r.Root {
		user = "0:0"
	}
	labels := map[string]string{
		engine.LabelManaged: "true", engine.LabelUser: a.Target.User, engine.LabelUID: strconv.Itoa(a.Target.UID),
		engine.LabelGID: strconv.Itoa(a.Target.GID), engine.LabelName: r.Name, engine.LabelImage: img.Alias,
		engine.LabelVersion: f.Version, engine.LabelCPUs: strconv.FormatFloat(cpus, 'f', -1, 64),
		engine.LabelMemory: mem.String(), engine.LabelGPUs: "",
	}
	if r.Root {
		labels[engine.LabelRoot] = "true"
	}
	dockerName := engine.DockerName(a.Target.UID, r.Name)
	if config.MatchProtected(cfg, r.Name, dockerName) {
		// A protected container is never stopped for being idle: a name
		// is not a way for a user to opt out of the cleanup.
		if !a.Caller.Admin {
			return nil, errs.New(errs.Permission, "the name %s matches a protected pattern of the policy; only admins create protected containers (ask one, or choose another name)", r.Name)
		}
		labels[engine.LabelProtected] = "true"
	}
	spec := engine.Spec{
		Name: dockerName, Image: img.Image, Labels: labels, User: user, Env: env, WorkingDir: "/workspace",
		Mounts: mp.mounts, Ports: ports, NanoCPUs: int64(cpus * 1e9), Memory: int64(mem), MemorySwap: int64(lim.MemorySwap.Value),
		ShmSize: int64(lim.ShmSize.Value), PidsLimit: lim.PidsLimit.Value,
		Ulimits: []engine.Ulimit{{Name: "memlock", Soft: f.Memlock, Hard: f.Memlock}, {Name: "stack", Soft: 64 << 20, Hard: 64 << 20}},
		CapAdd:  cfg.Policies.Capabilities, Devices: cfg.Policies.Devices, GPURuntime: cfg.GPU.Runtime,
		Network: engine.UserNetwork(a.Target.UID),
	}
	if mem < lim.Memory.Value {
		spec.MemorySwap = int64(mem) // asking for less memory: no more swap than memory
	}
	for i := 0; i < r.GPUs; i++ {
		spec.GPUs = append(spec.GPUs, fmt.Sprintf("<gpu %d of %d, chosen at create>", i+1, r.GPUs))
	}
	return &CreatePlan{Spec: spec, Limits: lim, Image: img, mounts: mp,
		out: Created{Name: r.Name, User: a.Target.User, Image: img.Image, GPUs: []string{}, Workspace: mp.workspace}}, nil
}

// apply carries out a plan: image, GPU claim, then under the user's lock the
// authoritative count, workspace, network, create, activate, start; any
// failure or interrupt undoes all of it.
func (m *Manager) apply(ctx context.Context, a Actor, r CreateRequest, p *CreatePlan) (*Created, error) {
	spec, lim, mp, dockerName := p.Spec, p.Limits, p.mounts, p.Spec.Name
	spec.GPUs = nil
	out := p.out
	var err error
	if err := m.ready(); err != nil {
		return nil, err
	}
	if err := m.ensureImage(ctx, spec.Image); err != nil {
		return nil, err
	}

	var claim Claim
	if r.GPUs > 0 {
		if m.GPUs == nil {
			return nil, errs.New(errs.Unavailable, "this server has no GPUs (no NVML, and gpu.fake_count is 0)")
		}
		claim, err = m.GPUs.Claim(ctx, ClaimRequest{User: a.Target.User, Name: r.Name, Container: dockerName, N: r.GPUs,
			Quota: lim.GPUs.Value, QuotaFrom: lim.GPUs.Source, Wait: r.Wait, Timeout: r.Timeout,
			Progress: func(msg string) {
				if m.Progress != nil {
					fmt.Fprintln(m.Progress, msg)
				}
			}})
		if err != nil {
			return nil, err
		}
		spec.GPUs = claim.UUIDs
		if claim.Fake {
			spec.GPURuntime = "env"
		}
		spec.Labels[engine.LabelGPUs] = strings.Join(claim.UUIDs, ",")
		spec.Labels[engine.LabelAlloc] = strconv.FormatInt(claim.ID, 10)
	}
	// From here every step runs to its end whatever ctx does, and ctx is
	// looked at between steps: an interrupt (Ctrl-C, SIGTERM, SIGHUP, the
	// sudo parent dying) is answered by undoing, never by stopping half-way.
	work := context.WithoutCancel(ctx)
	id, joined := "", false
	var ws paths.Workspace
	undo := func(cause error) error {
		bg, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if id != "" {
			_ = m.Eng.Remove(bg, id, true)
		}
		if ws.Created { // made for this create: gone again if still empty
			_ = paths.RemoveEmptyWorkspace(m.Cfg.Policies.WorkspaceRoot, a.Target.User, mp.wsName)
		}
		if joined { // a network made for this create alone goes too (the user's lock is held)
			_ = m.dropNetworkIfEmpty(bg, a)
		}
		if claim.ID != 0 {
			_ = m.GPUs.Abort(bg, claim.ID)
		}
		return cause
	}
	interrupted := func() error {
		if ctx.Err() != nil {
			return errs.New(errs.Interrupted, "interrupted; %s was not created", r.Name)
		}
		return nil
	}
	failpoint(ctx, "claimed")
	unlock, err := m.lockUser(ctx, a.Target.UID)
	if err != nil {
		return nil, undo(err)
	}
	defer unlock()
	if err := m.checkCount(work, a, r.Name, lim); err != nil {
		return nil, undo(err)
	}
	if err := interrupted(); err != nil {
		return nil, undo(err)
	}
	// The workspace is made only now, for a create that passed every check.
	if ws, err = m.makeWorkspace(a, &mp); err != nil {
		return nil, undo(err)
	}
	spec.Mounts = mp.mounts
	spec.Labels[engine.LabelMounts] = mp.label()
	if spec.Network, err = m.ensureNetwork(work, a); err != nil {
		return nil, undo(err)
	}
	joined = true
	id, err = m.Eng.Create(work, spec)
	if err != nil {
		if errs.Is(err, errs.Conflict) {
			err = errs.New(errs.Conflict, "%s already exists", r.Name)
		}
		return nil, undo(err)
	}
	// The link in the owner's home is made by a helper process run as them:
	// it runs beside activate and start instead of after them.
	linked := make(chan struct{})
	go func() { defer close(linked); m.linkWorkspace(work, a, mp) }()
	undoLinked := undo
	undo = func(cause error) error { <-linked; return undoLinked(cause) }
	failpoint(ctx, "created")
	if err := interrupted(); err != nil {
		return nil, undo(err)
	}
	if claim.ID != 0 {
		if err := m.GPUs.Activate(work, claim.ID, id); err != nil {
			return nil, undo(err)
		}
	}
	failpoint(ctx, "activated")
	if err := interrupted(); err != nil {
		return nil, undo(err)
	}
	if !r.NoStart {
		if err := m.Eng.Start(work, id); err != nil {
			if errs.Is(err, errs.Conflict) && len(spec.Ports) > 0 {
				err = errs.New(errs.Conflict, "cannot publish %s: port already taken", strings.Join(r.Publish, ", "))
			}
			return nil, undo(err)
		}
		out.Started = true
	}
	failpoint(ctx, "started")
	if err := interrupted(); err != nil {
		return nil, undo(err)
	}
	out.ID, out.GPUs, out.Request, out.Workspace = id, spec.GPUs, spec.Request(), mp.workspace
	if out.GPUs == nil {
		out.GPUs = []string{}
	}
	<-linked
	return &out, nil
}

// checkCount refuses a create that would pass max_containers, or reuse a name.
func (m *Manager) checkCount(ctx context.Context, a Actor, name string, lim *limits.Resolved) error {
	existing, err := m.Eng.List(ctx, a.Target.User)
	if err != nil {
		return err
	}
	mine := 0
	for _, c := range existing {
		if !c.Managed() || c.Labels[engine.LabelUser] != a.Target.User {
			continue
		}
		mine++
		if c.Labels[engine.LabelName] == name {
			return errs.New(errs.Conflict, "%s already exists (mlc list shows it; mlc remove %s frees the name)", name, name)
		}
	}
	if mine >= lim.MaxContainers.Value {
		return errs.New(errs.Quota, "you have %d containers and your max_containers limit is %d (%s); remove one first",
			mine, lim.MaxContainers.Value, lim.MaxContainers.Source)
	}
	return nil
}

// PolicyWarnings are the problems of a valid policy on this engine: root
// allowed in containers where root in a container would be root on the host.
func PolicyWarnings(ctx context.Context, cfg *config.Config, eng engine.Engine) []string {
	if !cfg.Policies.AllowRoot {
		return nil
	}
	ok, err := EngineRemapsRoot(ctx, eng)
	switch {
	case err != nil:
		return []string{"policies.allow_root is set; could not ask the engine whether it remaps user namespaces: " + err.Error()}
	case !ok:
		return []string{"policies.allow_root is set, but this engine does not remap user namespaces (dockerd --userns-remap): mlc refuses --root until it does"}
	}
	return nil
}

// EngineRemapsRoot is whether root in the engine's containers is not root on
// the host: user-namespace remapping or a rootless engine.
func EngineRemapsRoot(ctx context.Context, eng engine.Engine) (bool, error) {
	opts, err := eng.SecurityOptions(ctx)
	if err != nil {
		return false, err
	}
	for _, o := range opts {
		for _, kv := range strings.Split(o, ",") {
			if kv == "name=userns" || kv == "name=rootless" {
				return true, nil
			}
		}
	}
	return false, nil
}

// fitLimits checks --cpus/--memory against the user's limits: less is fine,
// more is an error naming the limit and the rule that set it.
func fitLimits(r CreateRequest, lim *limits.Resolved) (float64, config.Size, error) {
	cpus, mem := lim.CPUs.Value, lim.Memory.Value
	if math.IsNaN(r.CPUs) || math.IsInf(r.CPUs, 0) {
		return 0, 0, errs.New(errs.Usage, "--cpus %v is not a number of CPUs", r.CPUs)
	}
	if r.CPUs < 0 {
		return 0, 0, errs.New(errs.Usage, "--cpus must be more than 0")
	}
	if r.CPUs > 0 {
		if r.CPUs > cpus {
			return 0, 0, errs.New(errs.Quota, "--cpus %v is more than your cpus limit of %v (%s)", r.CPUs, cpus, lim.CPUs.Source)
		}
		if r.CPUs < 0.01 {
			return 0, 0, errs.New(errs.Usage, "--cpus %v is too small (at least 0.01)", r.CPUs)
		}
		cpus = r.CPUs
	}
	if r.Memory > 0 {
		if r.Memory > mem {
			return 0, 0, errs.New(errs.Quota, "--memory %s is more than your memory limit of %s (%s)", r.Memory, mem, lim.Memory.Source)
		}
		if r.Memory < 6<<20 {
			return 0, 0, errs.New(errs.Usage, "--memory %s is below docker's minimum of 6m", r.Memory)
		}
		mem = r.Memory
	}
	return cpus, mem, nil
}

// pickImage chooses the catalogue entry, or (admins) any local reference.
func pickImage(cfg *config.Config, a Actor, r CreateRequest) (config.Image, error) {
	if r.ImageAlias != "" {
		if im, ok := cfg.ImageAlias(r.ImageAlias); ok {
			return *im, nil
		}
		if a.Caller.Admin {
			return config.Image{Alias: r.ImageAlias, Image: r.ImageAlias}, nil
		}
		return config.Image{}, errs.New(errs.NotFound, "image %q is not in the catalogue (%s)", r.ImageAlias, catalogue(cfg, ""))
	}
	if r.Framework == "" {
		return config.Image{}, errs.New(errs.Usage, "which image? mlc create NAME FRAMEWORK [VERSION], or --image ALIAS (%s)", catalogue(cfg, ""))
	}
	var best *config.Image
	found := false
	for i := range cfg.Images {
		im := &cfg.Images[i]
		if !strings.EqualFold(im.Framework, r.Framework) {
			continue
		}
		found = true
		v := strings.ToLower(im.Version)
		want := strings.ToLower(r.Version)
		if want != "" && v != want && !strings.HasPrefix(v, want+".") {
			continue
		}
		if best == nil || versionLess(best.Version, im.Version) {
			best = im
		}
	}
	switch {
	case best != nil:
		return *best, nil
	case found:
		return config.Image{}, errs.New(errs.NotFound, "no %s version %s in the catalogue (%s)", r.Framework, r.Version, catalogue(cfg, r.Framework))
	}
	return config.Image{}, errs.New(errs.NotFound, "no framework %q in the catalogue (%s)", r.Framework, catalogue(cfg, ""))
}

func catalogue(cfg *config.Config, framework string) string {
	var s []string
	for _, im := range cfg.Images {
		if framework == "" || strings.EqualFold(im.Framework, framework) {
			s = append(s, im.Framework+" "+im.Version)
		}
	}
	if len(s) == 0 {
		return "the catalogue is empty"
	}
	return "available: " + strings.Join(s, ", ")
}

// versionLess compares dotted versions numerically where it can.
func versionLess(a, b string) bool {
	pa, pb := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(pa) && i < len(pb); i++ {
		na, ea := strconv.Atoi(pa[i])
		nb, eb := strconv.Atoi(pb[i])
		if ea == nil && eb == nil {
			if na != nb {
				return na < nb
			}
			continue
		}
		if pa[i] != pb[i] {
			return pa[i] < pb[i]
		}
	}
	return len(pa) < len(pb)
}

func (m *Manager) ensureImage(ctx context.Context, ref string) error {
	ok, err := m.Eng.ImageExists(ctx, ref)
	if err != nil || ok {
		return err
	}
	if m.Progress != nil {
		fmt.Fprintf(m.Progress, "pulling %s\n", ref)
	}
	return m.Eng.Pull(ctx, ref, m.Progress)
}

// mountPlan is the bind mounts of a container being created.
type mountPlan struct {
	wsName    string
	workspace string              // <workspace_root>/<user>/<name>
	mounts    []engine.Mount      // the workspace first, its source filled by makeWorkspace
	ids       map[string]paths.ID // target -> identity of the source, recorded in LabelMounts
}

func (p *mountPlan) label() string {
	var parts []string
	for _, mt := range p.mounts {
		parts = append(parts, mt.Target+"="+p.ids[mt.Target].String())
	}
	return strings.Join(parts, ",")
}

// planMounts works out the mounts: the workspace (a name; its directory is
// <workspace_root>/<user>/<name>) at /workspace, and --data at /data and
// --models at /models, read-only, each an existing directory the owner can
// read, below their home or a mount root, resolved with the owner's rights.
func planMounts(cfg *config.Config, a Actor, r CreateRequest, f Facts) (mountPlan, error) {
	name := r.Workspace
	if name == "" {
		name = r.Name
	}
	if strings.Contains(name, "/") || !paths.NamePattern.MatchString(name) || strings.Contains(name, "..") {
		return mountPlan{}, errs.New(errs.Usage, "--workspace %q: give a workspace name (letters, digits, _ . -), not a path: workspaces live in %s/%s/NAME; mount a directory of yours with --data or --models",
			name, cfg.Policies.WorkspaceRoot, a.Target.User)
	}
	mp := mountPlan{wsName: name, workspace: filepath.Join(cfg.Policies.WorkspaceRoot, a.Target.User, name), ids: map[string]paths.ID{}}
	mp.mounts = []engine.Mount{{Source: mp.workspace, Target: "/workspace"}}
	for _, target := range []string{"/data", "/models"} {
		if res, ok := f.Mounts[target]; ok {
			mp.mounts = append(mp.mounts, engine.Mount{Source: res.Real, Target: target, ReadOnly: true})
			mp.ids[target] = res.ID
		}
	}
	return mp, nil
}

// userDir resolves a directory the owner named, with the owner's rights, and
// checks that root reaches the same directory through no link, below an
// allowed place. Every refusal reads the same.
func (m *Manager) userDir(ctx context.Context, a Actor, cwd, p, what string) (paths.Resolved, error) {
	where := strings.Join(append([]string{"your home"}, m.Cfg.Policies.MountRoots...), ", ")
	shown := p
	if rest, ok := strings.CutPrefix(p, "~/"); ok {
		p = filepath.Join(a.Target.Home, rest)
	}
	if !filepath.IsAbs(p) {
		if cwd == "" {
			cwd, _ = os.Getwd()
		}
		p = filepath.Join(cwd, p)
	}
	cred, err := paths.CredFor(a.Target.UID)
	if err != nil {
		return paths.Resolved{}, err
	}
	res, err := m.Paths.ResolveDir(ctx, cred, filepath.Clean(p))
	var f *paths.Failure
	if errors.As(err, &f) {
		return paths.Resolved{}, paths.NotAllowed(what, shown, where)
	} else if err != nil {
		return paths.Resolved{}, err
	}
	// The engine resolves the source again at every start, as root: only a
	// directory no one but root can replace (and hers or root's) is safe.
	if id, err := paths.Pinned(res.Real, a.Target.UID); err != nil || id != res.ID {
		return paths.Resolved{}, paths.NotAllowed(what, shown, where)
	}
	for _, root := range m.allowedRoots(a) {
		if paths.Under(res.Real, root) {
			return res, nil
		}
	}
	return paths.Resolved{}, paths.NotAllowed(what, shown, where)
}

func (m *Manager) allowedRoots(a Actor) []string {
	roots := []string{a.Target.Home}
	roots = append(roots, m.Cfg.Policies.MountRoots...)
	var out []string
	for _, r := range roots {
		if r == "" || r == "/" {
			continue
		}
		if real, err := filepath.EvalSymlinks(r); err == nil && real != "/" {
			out = append(out, real)
		}
	}
	return out
}

// makeWorkspace finds or makes the workspace directory (fd-relative, below
// the root-owned workspace_root) and records its identity.
func (m *Manager) makeWorkspace(a Actor, mp *mountPlan) (paths.Workspace, error) {
	ws, err := paths.EnsureWorkspace(m.Cfg.Policies.WorkspaceRoot, a.Target.User, a.Target.UID, a.Target.GID, mp.wsName)
	if err != nil {
		return ws, err
	}
	mp.workspace = ws.Path
	mp.mounts[0].Source = ws.Path
	mp.ids["/workspace"] = ws.ID
	return ws, nil
}

// linkWorkspace links the workspace into the owner's home, as the owner; a
// link that cannot be made is only a notice.
func (m *Manager) linkWorkspace(ctx context.Context, a Actor, mp mountPlan) {
	link := m.Cfg.Policies.WorkspaceLink
	if link == "" {
		return
	}
	dir := filepath.Join(a.Target.Home, strings.TrimPrefix(link, "~/"))
	cred, err := paths.CredFor(a.Target.UID)
	if err == nil {
		err = m.Paths.Link(ctx, cred, dir, mp.wsName, mp.workspace)
	}
	if err != nil && m.Progress != nil {
		fmt.Fprintf(m.Progress, "mlc: note: could not link %s/%s to the workspace (%v)\n", dir, mp.wsName, err)
	}
}

// checkMounts refuses to start a container one of whose bind mounts is no
// longer the directory recorded at create (a link planted, or a directory
// swapped): Docker resolves a bind source again at every start.
func checkMounts(c engine.Container) error {
	name := c.Labels[engine.LabelName]
	recorded := map[string]paths.ID{}
	for _, kv := range strings.Split(c.Labels[engine.LabelMounts], ",") {
		t, v, ok := strings.Cut(kv, "=")
		if id, good := paths.ParseID(v); ok && good {
			recorded[t] = id
		}
	}
	owner, err := strconv.Atoi(c.Labels[engine.LabelUID])
	if err != nil {
		return errs.New(errs.State, "%s has no owner uid label; remove it and create it again", name)
	}
	for _, mt := range c.Mounts {
		want, ok := recorded[mt.Target]
		if !ok {
			return errs.New(errs.State, "%s: its mount %s has no record from create (made by an older mlc); remove it and create it again", name, mt.Target)
		}
		if got, err := paths.Pinned(mt.Source, owner); err != nil || got != want {
			return errs.New(errs.State, "%s: the directory mounted at %s (%s) is not the one it was created with; mlc will not start it: restore it, or remove the container and create it again", name, mt.Target, mt.Source)
		}
	}
	return nil
}

func (m *Manager) hostCPUs() int {
	if m.HostCPUs > 0 {
		return m.HostCPUs
	}
	return runtime.NumCPU()
}
