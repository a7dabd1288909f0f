package containers

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
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
	"github.com/mlc-lab/mlc/limits"
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

var reservedEnv = map[string]bool{"NVIDIA_VISIBLE_DEVICES": true, "CUDA_VISIBLE_DEVICES": true,
	"NVIDIA_DRIVER_CAPABILITIES": true, "NVIDIA_REQUIRE_CUDA": true}

// Create makes a container for a.Target under the policy and starts it. It
// either succeeds or leaves nothing behind: no container, no GPU claim.
func (m *Manager) Create(ctx context.Context, a Actor, r CreateRequest) (*Created, error) {
	if !NamePattern.MatchString(r.Name) {
		return nil, errs.New(errs.Usage, "invalid container name %q (letters, digits, _ . -; at most 63; no leading punctuation)", r.Name)
	}
	lim, err := limits.Resolve(m.Cfg, m.Dir, a.Target.User)
	if err != nil {
		return nil, err
	}
	img, err := m.pickImage(a, r)
	if err != nil {
		return nil, err
	}
	cpus, mem, err := fitLimits(r, lim)
	if err != nil {
		return nil, err
	}
	// A limit above the machine's size means all of it; the engine refuses more.
	if host := float64(m.hostCPUs()); cpus > host {
		cpus = host
	}
	if r.GPUs < 0 {
		return nil, errs.New(errs.Usage, "--gpus must be 0 or more")
	}
	if r.GPUs > lim.GPUs.Value {
		return nil, errs.New(errs.Quota, "--gpus %d is more than your gpus limit of %d (%s)", r.GPUs, lim.GPUs.Value, lim.GPUs.Source)
	}
	if r.Root && !m.Cfg.Policies.AllowRoot {
		return nil, errs.New(errs.Permission, "--root: the policy does not allow root in containers (policies.allow_root)")
	}
	mounts, workspace, err := m.mounts(a, r)
	if err != nil {
		return nil, err
	}
	var ports []engine.Port
	for _, p := range r.Publish {
		port, err := engine.ParsePort(p, m.Cfg.Policies.BindAddress)
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
		if reservedEnv[k] {
			return nil, errs.New(errs.Permission, "--env %s: GPUs are assigned by mlc (--gpus N)", k)
		}
		env = append(env, kv)
	}

	existing, err := m.Eng.List(ctx, a.Target.User)
	if err != nil {
		return nil, err
	}
	mine := 0
	for _, c := range existing {
		if !c.Managed() || c.Labels[engine.LabelUser] != a.Target.User {
			continue
		}
		mine++
		if c.Labels[engine.LabelName] == r.Name {
			return nil, errs.New(errs.Conflict, "%s already exists (mlc list shows it; mlc remove %s frees the name)", r.Name, r.Name)
		}
	}
	if mine >= lim.MaxContainers.Value {
		return nil, errs.New(errs.Quota, "you have %d containers and your max_containers limit is %d (%s); remove one first",
			mine, lim.MaxContainers.Value, lim.MaxContainers.Source)
	}

	user := a.Target.UIDGID()
	if r.Root {
		user = "0:0"
	}
	labels := map[string]string{
		engine.LabelManaged: "true", engine.LabelUser: a.Target.User, engine.LabelUID: strconv.Itoa(a.Target.UID),
		"mlc.gid": strconv.Itoa(a.Target.GID), engine.LabelName: r.Name, engine.LabelImage: img.Alias,
		engine.LabelVersion: m.Version, engine.LabelCPUs: strconv.FormatFloat(cpus, 'f', -1, 64),
		engine.LabelMemory: mem.String(), engine.LabelGPUs: "",
	}
	if r.Root {
		labels["mlc.root"] = "true"
	}
	dockerName := engine.DockerName(a.Target.UID, r.Name)
	if config.MatchProtected(m.Cfg, r.Name, dockerName) {
		labels[engine.LabelProtected] = "true"
	}
	spec := engine.Spec{
		Name: dockerName, Image: img.Image, Labels: labels, User: user, Env: env, WorkingDir: "/workspace",
		Mounts: mounts, Ports: ports, NanoCPUs: int64(cpus * 1e9), Memory: int64(mem), MemorySwap: int64(lim.MemorySwap.Value),
		ShmSize: int64(lim.ShmSize.Value), PidsLimit: lim.PidsLimit.Value,
		Ulimits: []engine.Ulimit{{Name: "memlock", Soft: m.Memlock, Hard: m.Memlock}, {Name: "stack", Soft: 64 << 20, Hard: 64 << 20}},
		CapAdd:  m.Cfg.Policies.Capabilities, Devices: m.Cfg.Policies.Devices, GPURuntime: m.Cfg.GPU.Runtime,
	}
	if mem < lim.Memory.Value {
		spec.MemorySwap = int64(mem) // asking for less memory: no more swap than memory
	}
	out := &Created{Name: r.Name, User: a.Target.User, Image: img.Image, GPUs: []string{}, Workspace: workspace}
	if r.DryRun {
		if r.GPUs > 0 {
			spec.GPUs = make([]string, r.GPUs)
			for i := range spec.GPUs {
				spec.GPUs[i] = fmt.Sprintf("<gpu %d of %d, chosen at create>", i+1, r.GPUs)
			}
			spec.Labels[engine.LabelGPUs] = strings.Join(spec.GPUs, ",")
		}
		out.Request, out.DryRun = spec.Request(), true
		return out, nil
	}

	if err := m.ready(); err != nil {
		return nil, err
	}
	if err := m.ensureImage(ctx, img.Image); err != nil {
		m.audit(a, "create", r.Name, err, nil)
		return nil, err
	}
	if err := m.makeWorkspace(a, workspace); err != nil {
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
			m.audit(a, "create", r.Name, err, nil)
			return nil, err
		}
		failpoint("claimed")
		spec.GPUs = claim.UUIDs
		if claim.Fake {
			spec.GPURuntime = "env"
		}
		spec.Labels[engine.LabelGPUs] = strings.Join(claim.UUIDs, ",")
		spec.Labels[engine.LabelAlloc] = strconv.FormatInt(claim.ID, 10)
	}
	undo := func(id string, cause error) error {
		// A create that fails halfway leaves nothing behind.
		bg, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if id != "" {
			_ = m.Eng.Remove(bg, id, true)
		}
		if claim.ID != 0 {
			_ = m.GPUs.Abort(bg, claim.ID)
		}
		m.audit(a, "create", r.Name, cause, nil)
		return cause
	}
	id, err := m.Eng.Create(ctx, spec)
	if err != nil {
		if errs.Is(err, errs.Conflict) {
			err = errs.New(errs.Conflict, "%s already exists", r.Name)
		}
		return nil, undo("", err)
	}
	failpoint("created")
	if claim.ID != 0 {
		if err := m.GPUs.Activate(ctx, claim.ID, id); err != nil {
			return nil, undo(id, err)
		}
	}
	failpoint("activated")
	if !r.NoStart {
		if err := m.Eng.Start(ctx, id); err != nil {
			if errs.Is(err, errs.Conflict) && len(ports) > 0 {
				err = errs.New(errs.Conflict, "cannot publish %s: port already taken", strings.Join(r.Publish, ", "))
			}
			return nil, undo(id, err)
		}
		out.Started = true
	}
	out.ID, out.GPUs, out.Request = id, spec.GPUs, spec.Request()
	if out.GPUs == nil {
		out.GPUs = []string{}
	}
	m.audit(a, "create", r.Name, nil, map[string]any{"image": img.Image, "cpus": cpus, "memory": int64(mem), "gpus": spec.GPUs})
	return out, nil
}

// fitLimits checks --cpus/--memory against the user's limits: less is fine,
// more is an error naming the limit and the rule that set it.
func fitLimits(r CreateRequest, lim *limits.Resolved) (float64, config.Size, error) {
	cpus, mem := lim.CPUs.Value, lim.Memory.Value
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
func (m *Manager) pickImage(a Actor, r CreateRequest) (config.Image, error) {
	if r.ImageAlias != "" {
		if im, ok := m.Cfg.ImageAlias(r.ImageAlias); ok {
			return *im, nil
		}
		if a.Caller.Admin {
			return config.Image{Alias: r.ImageAlias, Image: r.ImageAlias}, nil
		}
		return config.Image{}, errs.New(errs.NotFound, "image %q is not in the catalogue (%s)", r.ImageAlias, m.catalogue(""))
	}
	if r.Framework == "" {
		return config.Image{}, errs.New(errs.Usage, "which image? mlc create NAME FRAMEWORK [VERSION], or --image ALIAS (%s)", m.catalogue(""))
	}
	var best *config.Image
	found := false
	for i := range m.Cfg.Images {
		im := &m.Cfg.Images[i]
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
		return config.Image{}, errs.New(errs.NotFound, "no %s version %s in the catalogue (%s)", r.Framework, r.Version, m.catalogue(r.Framework))
	}
	return config.Image{}, errs.New(errs.NotFound, "no framework %q in the catalogue (%s)", r.Framework, m.catalogue(""))
}

func (m *Manager) catalogue(framework string) string {
	var s []string
	for _, im := range m.Cfg.Images {
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

// mounts works out the bind mounts: the workspace at /workspace, --data at
// /data, --models at /models. Each must lie below the user's home or one of
// policies.mount_roots, after symlinks are resolved; ".." is refused.
func (m *Manager) mounts(a Actor, r CreateRequest) ([]engine.Mount, string, error) {
	ws := r.Workspace
	if ws == "" {
		ws = "~/workspace"
	}
	if rest, ok := strings.CutPrefix(ws, "~/"); ok {
		ws = filepath.Join(a.Target.Home, rest)
	}
	ws, err := m.checkPath(a, r.Cwd, ws, "workspace", true)
	if err != nil {
		return nil, "", err
	}
	mounts := []engine.Mount{{Source: ws, Target: "/workspace"}}
	for _, p := range []struct{ flag, path, target string }{{"data", r.Data, "/data"}, {"models", r.Models, "/models"}} {
		if p.path == "" {
			continue
		}
		real, err := m.checkPath(a, r.Cwd, p.path, p.flag, false)
		if err != nil {
			return nil, "", err
		}
		mounts = append(mounts, engine.Mount{Source: real, Target: p.target})
	}
	return mounts, ws, nil
}

func (m *Manager) allowedRoots(a Actor) []string {
	roots := []string{a.Target.Home}
	roots = append(roots, m.Cfg.Policies.MountRoots...)
	var out []string
	for _, r := range roots {
		if r == "" || r == "/" {
			continue
		}
		if real, err := filepath.EvalSymlinks(r); err == nil {
			out = append(out, real)
		}
	}
	return out
}

// checkPath returns the real path of p (or, for a missing workspace, of the
// deepest existing parent joined with the rest) after checking it is allowed.
func (m *Manager) checkPath(a Actor, cwd, p, what string, mayCreate bool) (string, error) {
	for _, part := range strings.Split(filepath.ToSlash(p), "/") {
		if part == ".." {
			return "", errs.New(errs.Usage, "%s %s: \"..\" is not allowed in mount paths", what, p)
		}
	}
	if !filepath.IsAbs(p) {
		if cwd == "" {
			cwd, _ = os.Getwd()
		}
		p = filepath.Join(cwd, p)
	}
	p = filepath.Clean(p)
	real, err := filepath.EvalSymlinks(p)
	switch {
	case err == nil:
		st, err := os.Stat(real)
		if err != nil {
			return "", errs.Wrap(errs.Usage, err, "%s %s", what, p)
		}
		if !st.IsDir() {
			return "", errs.New(errs.Usage, "%s %s is a file, not a directory", what, p)
		}
	case errors.Is(err, fs.ErrNotExist) && mayCreate:
		// The deepest existing ancestor must be allowed; the rest is created.
		parent, rest := p, ""
		for {
			next := filepath.Dir(parent)
			rest = filepath.Join(filepath.Base(parent), rest)
			parent = next
			if pr, err := filepath.EvalSymlinks(parent); err == nil {
				real = filepath.Join(pr, rest)
				break
			}
			if parent == "/" {
				return "", errs.New(errs.Usage, "%s %s: no existing parent directory", what, p)
			}
		}
	case errors.Is(err, fs.ErrNotExist):
		return "", errs.New(errs.NotFound, "%s %s does not exist", what, p)
	default:
		return "", errs.Wrap(errs.Usage, err, "%s %s", what, p)
	}
	for _, root := range m.allowedRoots(a) {
		if rel, err := filepath.Rel(root, real); err == nil && rel != ".." && !strings.HasPrefix(rel, "../") {
			return real, nil
		}
	}
	roots := append([]string{a.Target.Home}, m.Cfg.Policies.MountRoots...)
	return "", errs.New(errs.Permission, "%s %s (really %s) is outside the allowed places: %s", what, p, real, strings.Join(roots, ", "))
}

// makeWorkspace creates a missing workspace owned by the target user.
func (m *Manager) makeWorkspace(a Actor, ws string) error {
	if _, err := os.Stat(ws); err == nil {
		return nil
	}
	// Create each missing level and give it to the user.
	var missing []string
	for p := ws; ; p = filepath.Dir(p) {
		if _, err := os.Lstat(p); err == nil || p == "/" {
			break
		}
		missing = append([]string{p}, missing...)
	}
	for _, p := range missing {
		if err := os.Mkdir(p, 0o755); err != nil && !os.IsExist(err) {
			return errs.Wrap(errs.State, err, "creating workspace")
		}
		if err := os.Lchown(p, a.Target.UID, a.Target.GID); err != nil {
			return errs.Wrap(errs.State, err, "giving the workspace to %s", a.Target.User)
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
