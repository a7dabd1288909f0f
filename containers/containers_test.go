package containers

import (
	"bufio"
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/mlc-lab/mlc/audit"
	"github.com/mlc-lab/mlc/config"
	"github.com/mlc-lab/mlc/engine"
	"github.com/mlc-lab/mlc/engine/enginetest"
	"github.com/mlc-lab/mlc/errs"
	"github.com/mlc-lab/mlc/identity"
	"github.com/mlc-lab/mlc/limits"
	"github.com/mlc-lab/mlc/paths"
)

// The path helper is this test binary run as another user.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == paths.HelperArg {
		os.Exit(paths.Serve(os.Args[2:], os.Stdout))
	}
	os.Exit(m.Run())
}

const policy = `
defaults:
  cpus: 4
  memory: 8g
  gpus: 1
  max_containers: 2
admins: [boss]
images:
  pt24:
    image: pt:2.4.1
    framework: pytorch
    version: "2.4.1"
  pt25:
    image: pt:2.5.1
    framework: PyTorch
    version: "2.5.1"
  bb:
    image: mlc/busybox:latest
    framework: busybox
    version: "1.35"
  gone:
    image: mlc/nonexistent:1
protected: ["*-keep"]
`

type env struct {
	m           *Manager
	f           *enginetest.Fake
	alice, bob  *identity.Caller
	boss        *identity.Caller
	home, roots string
}

func setup(t *testing.T) *env {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("creates workspaces for other uids: needs root (make test runs as root)")
	}
	base := t.TempDir()
	roots := filepath.Join(base, "data")
	os.MkdirAll(roots, 0o755)
	cfg, err := config.Parse("p.yaml", []byte(policy+"policies:\n  mount_roots: ["+roots+"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.StateDir = filepath.Join(base, "state")
	cfg.Policies.WorkspaceRoot = filepath.Join(base, "ws")
	f := enginetest.New()
	uid, gid := os.Getuid(), os.Getgid()
	mk := func(name string, n int, admin bool) *identity.Caller {
		home := filepath.Join(base, "home", name)
		os.MkdirAll(home, 0o755)
		return &identity.Caller{User: name, UID: uid + n, GID: gid, Home: home, Admin: admin}
	}
	e := &env{f: f, alice: mk("alice", 0, false), bob: mk("bob", 0, false), boss: mk("boss", 0, true), roots: roots, home: base}
	// Tests run as one uid; give bob a different uid only where it matters (names).
	e.bob.UID = uid + 1
	if os.Getuid() != 0 {
		e.bob.UID = uid // cannot chown to another uid
	}
	e.m = &Manager{Cfg: cfg, Eng: f, Dir: limits.MapDirectory{"alice": nil, "bob": nil, "boss": nil},
		Audit: &audit.Log{Path: filepath.Join(base, "audit.jsonl")}, Version: "test", Memlock: -1, HostCPUs: 64}
	return e
}

func (e *env) create(t *testing.T, who *identity.Caller, r CreateRequest) (*Created, error) {
	t.Helper()
	return e.m.Create(context.Background(), Self(who), r)
}

func TestCreateAppliesLimits(t *testing.T) {
	e := setup(t)
	out, err := e.create(t, e.alice, CreateRequest{Name: "thesis", Framework: "pytorch", CPUs: 2, Memory: 2 << 30})
	if err == nil || !errs.Is(err, errs.Image) {
		t.Fatalf("pt image is not local and cannot be pulled: %v", err)
	}
	out, err = e.create(t, e.alice, CreateRequest{Name: "thesis", Framework: "busybox", CPUs: 2, Memory: 2 << 30, Publish: []string{"8888"}})
	if err != nil {
		t.Fatal(err)
	}
	s := e.f.Spec(out.ID)
	if s.NanoCPUs != 2e9 || s.Memory != 2<<30 || s.MemorySwap != 2<<30 || s.PidsLimit != 4096 || s.ShmSize != 1<<30 {
		t.Errorf("limits: %+v", s)
	}
	if s.User != e.alice.UIDGID() || s.WorkingDir != "/workspace" || s.Labels[engine.LabelUser] != "alice" || s.Labels[engine.LabelName] != "thesis" {
		t.Errorf("identity: %+v", s)
	}
	if len(s.Ports) != 1 || s.Ports[0].HostIP != "127.0.0.1" {
		t.Errorf("ports: %+v", s.Ports)
	}
	ws := filepath.Join(e.m.Cfg.Policies.WorkspaceRoot, "alice", "thesis")
	if fi, err := os.Stat(ws); err != nil || fi.Sys().(*syscall.Stat_t).Uid != uint32(e.alice.UID) {
		t.Errorf("workspace not created for alice: %v", err)
	}
	if len(s.Mounts) != 1 || s.Mounts[0] != (engine.Mount{Source: ws, Target: "/workspace"}) || out.Workspace != ws {
		t.Errorf("mounts %+v, workspace %s", s.Mounts, out.Workspace)
	}
	if l, err := os.Readlink(filepath.Join(e.alice.Home, "workspaces", "thesis")); err != nil || l != ws {
		t.Errorf("home link: %q %v", l, err)
	}
	if !strings.HasPrefix(s.Labels[engine.LabelMounts], "/workspace=") {
		t.Errorf("mounts not recorded: %q", s.Labels[engine.LabelMounts])
	}
	if !slices.Contains(s.Request().Config.Env, "NVIDIA_VISIBLE_DEVICES=void") {
		t.Errorf("no GPUs but NVIDIA_VISIBLE_DEVICES is not void: %v", s.Request().Config.Env)
	}
	r := s.Request()
	if r.HostConfig.Privileged || string(r.HostConfig.NetworkMode) != engine.UserNetwork(e.alice.UID) || r.HostConfig.PidMode != "" || r.HostConfig.IpcMode != "private" {
		t.Errorf("host config widens isolation: %+v", r.HostConfig)
	}
	if e.f.Container(out.ID).State != "running" {
		t.Error("not started")
	}
}

func TestCPUsCappedAtHost(t *testing.T) {
	e := setup(t)
	e.m.HostCPUs = 2
	out, err := e.create(t, e.alice, CreateRequest{Name: "a", Framework: "busybox"})
	if err != nil || e.f.Spec(out.ID).NanoCPUs != 2e9 || e.f.Spec(out.ID).Labels[engine.LabelCPUs] != "2" {
		t.Fatalf("policy 4 CPUs on a 2-CPU host: %v %+v", err, out)
	}
}

func TestImageChoice(t *testing.T) {
	e := setup(t)
	cases := []struct {
		fw, ver, alias, want string
		kind                 errs.Kind
	}{
		{"pytorch", "", "", "pt:2.5.1", 0},
		{"PYTORCH", "2.4", "", "pt:2.4.1", 0},
		{"pytorch", "2.4.1", "", "pt:2.4.1", 0},
		{"pytorch", "2", "", "pt:2.5.1", 0},
		{"pytorch", "3.0", "", "", errs.NotFound},
		{"caffe", "", "", "", errs.NotFound},
		{"", "", "PT24", "pt:2.4.1", 0},
		{"", "", "ubuntu:24.04", "", errs.NotFound},
		{"", "", "", "", errs.Usage},
	}
	for _, c := range cases {
		im, err := pickImage(e.m.Cfg, Self(e.alice), CreateRequest{Framework: c.fw, Version: c.ver, ImageAlias: c.alias})
		if c.want != "" && (err != nil || im.Image != c.want) {
			t.Errorf("%+v: got %v %v", c, im.Image, err)
		}
		if c.want == "" && !errs.Is(err, c.kind) {
			t.Errorf("%+v: got %v, want kind %v", c, err, c.kind)
		}
	}
	_, err := pickImage(e.m.Cfg, Self(e.alice), CreateRequest{Framework: "pytorch", Version: "3.0"})
	if !strings.Contains(err.Error(), "available: pytorch 2.4.1, PyTorch 2.5.1") {
		t.Errorf("does not list what exists: %v", err)
	}
	// Admins may use any local reference.
	if im, err := pickImage(e.m.Cfg, Self(e.boss), CreateRequest{ImageAlias: "ubuntu:24.04"}); err != nil || im.Image != "ubuntu:24.04" {
		t.Errorf("admin image: %v %v", im, err)
	}
}

func TestBadInput(t *testing.T) {
	e := setup(t)
	file := filepath.Join(e.alice.Home, "afile")
	os.WriteFile(file, []byte("x"), 0o644)
	os.Symlink("/etc", filepath.Join(e.alice.Home, "etc-link"))
	os.MkdirAll(filepath.Join(e.roots, "set"), 0o755)
	cases := []struct {
		name string
		r    CreateRequest
		kind errs.Kind
		msg  string
	}{
		{"bad name", CreateRequest{Name: "-x", Framework: "busybox"}, errs.Usage, "invalid container name"},
		{"long name", CreateRequest{Name: strings.Repeat("a", 64), Framework: "busybox"}, errs.Usage, "at most 63"},
		{"slash name", CreateRequest{Name: "a/b", Framework: "busybox"}, errs.Usage, "invalid container name"},
		{"more cpus", CreateRequest{Name: "a", Framework: "busybox", CPUs: 8}, errs.Quota, "--cpus 8 is more than your cpus limit of 4 (default)"},
		{"more memory", CreateRequest{Name: "a", Framework: "busybox", Memory: 16 << 30}, errs.Quota, "--memory 16GiB is more than your memory limit of 8GiB (default)"},
		{"more gpus", CreateRequest{Name: "a", Framework: "busybox", GPUs: 2}, errs.Quota, "--gpus 2 is more than your gpus limit of 1 (default)"},
		{"nan cpus", CreateRequest{Name: "a", Framework: "busybox", CPUs: math.NaN()}, errs.Usage, "not a number of CPUs"},
		{"inf cpus", CreateRequest{Name: "a", Framework: "busybox", CPUs: math.Inf(1)}, errs.Usage, "not a number of CPUs"},
		{"root", CreateRequest{Name: "a", Framework: "busybox", Root: true}, errs.Permission, "allow_root"},
		{"workspace path", CreateRequest{Name: "a", Framework: "busybox", Workspace: file}, errs.Usage, "give a workspace name"},
		{"workspace dotdot", CreateRequest{Name: "a", Framework: "busybox", Workspace: ".."}, errs.Usage, "give a workspace name"},
		{"data file", CreateRequest{Name: "a", Framework: "busybox", Data: file}, errs.Permission, "not allowed"},
		{"outside", CreateRequest{Name: "a", Framework: "busybox", Data: "/etc"}, errs.Permission, "not allowed"},
		{"dotdot", CreateRequest{Name: "a", Framework: "busybox", Data: e.roots + "/set/../../x"}, errs.Permission, "not allowed"},
		{"symlink", CreateRequest{Name: "a", Framework: "busybox", Data: filepath.Join(e.alice.Home, "etc-link")}, errs.Permission, "not allowed"},
		{"missing data", CreateRequest{Name: "a", Framework: "busybox", Data: filepath.Join(e.roots, "nope")}, errs.Permission, "not allowed"},
		{"bad port", CreateRequest{Name: "a", Framework: "busybox", Publish: []string{"70000"}}, errs.Usage, "not a port number"},
		{"foreign bind", CreateRequest{Name: "a", Framework: "busybox", Publish: []string{"0.0.0.0:80:80"}}, errs.Usage, "only be published on 127.0.0.1"},
		{"bad env", CreateRequest{Name: "a", Framework: "busybox", Env: []string{"NOVALUE"}}, errs.Usage, "use KEY=VALUE"},
		{"gpu env", CreateRequest{Name: "a", Framework: "busybox", Env: []string{"CUDA_VISIBLE_DEVICES=0"}}, errs.Permission, "set by mlc"},
		{"nvidia env", CreateRequest{Name: "a", Framework: "busybox", Env: []string{"NVIDIA_DRIVER_CAPABILITIES=all"}}, errs.Permission, "set by mlc"},
		{"nvidia env lower", CreateRequest{Name: "a", Framework: "busybox", Env: []string{"nvidia_visible_devices=all"}}, errs.Permission, "set by mlc"},
		{"missing image", CreateRequest{Name: "a", ImageAlias: "gone"}, errs.Image, "cannot be pulled"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := e.create(t, e.alice, c.r)
			if !errs.Is(err, c.kind) || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("got %v (kind %v), want kind %v with %q", err, errs.KindOf(err), c.kind, c.msg)
			}
		})
	}
	if e.f.Len() != 0 {
		t.Fatalf("bad input left containers: %v", e.f.Calls())
	}
	// Every refusal is audited with the caller.
	if lines := readAudit(t, e.m.Audit.Path); len(lines) != len(cases) || lines[0]["result"] != "error" || lines[0]["caller"] != "alice" {
		t.Errorf("%d refusals, %d audit lines: %v", len(cases), len(lines), lines)
	}
	// Data inside a mount root is fine, read-only, and recorded.
	out, err := e.create(t, e.alice, CreateRequest{Name: "ok", Framework: "busybox", Data: filepath.Join(e.roots, "set")})
	if err != nil {
		t.Fatal(err)
	}
	s := e.f.Spec(out.ID)
	if len(s.Mounts) != 2 || s.Mounts[1] != (engine.Mount{Source: filepath.Join(e.roots, "set"), Target: "/data", ReadOnly: true}) ||
		!strings.Contains(s.Labels[engine.LabelMounts], ",/data=") {
		t.Errorf("data mount %+v %q", s.Mounts, s.Labels[engine.LabelMounts])
	}
}

func TestDuplicateAndMaxContainers(t *testing.T) {
	e := setup(t)
	if _, err := e.create(t, e.alice, CreateRequest{Name: "a", Framework: "busybox"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.create(t, e.alice, CreateRequest{Name: "a", Framework: "busybox"}); !errs.Is(err, errs.Conflict) {
		t.Fatalf("duplicate: %v", err)
	}
	if _, err := e.create(t, e.alice, CreateRequest{Name: "b", Framework: "busybox"}); err != nil {
		t.Fatal(err)
	}
	_, err := e.create(t, e.alice, CreateRequest{Name: "c", Framework: "busybox"})
	if !errs.Is(err, errs.Quota) || !strings.Contains(err.Error(), "you have 2 containers and your max_containers limit is 2 (default)") {
		t.Fatalf("max: %v", err)
	}
	// bob's names and quota are his own.
	if _, err := e.create(t, e.bob, CreateRequest{Name: "a", Framework: "busybox"}); err != nil && os.Getuid() == 0 {
		t.Fatalf("bob's a: %v", err)
	}
}

func TestFailedStartLeavesNothing(t *testing.T) {
	e := setup(t)
	e.f.FailNext("Start", errs.New(errs.Conflict, "Bind for 127.0.0.1:8888 failed: port is already allocated"))
	_, err := e.create(t, e.alice, CreateRequest{Name: "a", Framework: "busybox", Publish: []string{"8888:8888"}})
	if !errs.Is(err, errs.Conflict) || !strings.Contains(err.Error(), "port already taken") {
		t.Fatalf("got %v", err)
	}
	if e.f.Len() != 0 {
		t.Fatalf("left a container: %v", e.f.Calls())
	}
	lines := readAudit(t, e.m.Audit.Path)
	if last := lines[len(lines)-1]; last["action"] != "create" || last["result"] != "error" {
		t.Fatalf("audit: %v", last)
	}
}

func TestOwnership(t *testing.T) {
	e := setup(t)
	if os.Getuid() != 0 {
		t.Skip("needs two uids")
	}
	ctx := context.Background()
	if _, err := e.create(t, e.bob, CreateRequest{Name: "secret", Framework: "busybox"}); err != nil {
		t.Fatal(err)
	}
	a := Self(e.alice)
	checks := map[string]error{
		"find":   func() error { _, err := e.m.Find(ctx, a, "secret"); return err }(),
		"start":  e.m.Start(ctx, a, "secret"),
		"stop":   e.m.Stop(ctx, a, "secret", 1),
		"kill":   e.m.Kill(ctx, a, "secret"),
		"remove": e.m.Remove(ctx, a, "secret", true),
		"logs":   e.m.Logs(ctx, a, "secret", LogsOptions{Tail: -1}),
	}
	for what, err := range checks {
		if !errs.Is(err, errs.NotFound) || err.Error() != "no such container: secret" {
			t.Errorf("alice %s bob's container: %v", what, err)
		}
	}
	rows, _ := e.m.List(ctx, a, false)
	if len(rows) != 0 {
		t.Errorf("alice sees %v", rows)
	}
	if _, err := e.m.List(ctx, a, true); !errs.Is(err, errs.Permission) {
		t.Errorf("alice --all: %v", err)
	}
	if _, err := For(e.alice, e.bob); !errs.Is(err, errs.Permission) {
		t.Errorf("alice --user bob: %v", err)
	}
	if err := e.m.Protect(ctx, a, "x", true); !errs.Is(err, errs.Permission) {
		t.Errorf("alice protect: %v", err)
	}
	boss, _ := For(e.boss, e.bob)
	if err := e.m.Stop(ctx, boss, "secret", 1); err != nil {
		t.Errorf("admin stop for bob: %v", err)
	}
}

func TestRemoveRules(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	a := Self(e.alice)
	e.create(t, e.alice, CreateRequest{Name: "run", Framework: "busybox"})
	if err := e.m.Remove(ctx, a, "run", false); !errs.Is(err, errs.Conflict) || !strings.Contains(err.Error(), "is running") {
		t.Fatalf("running: %v", err)
	}
	// A name is not a way out of the cleanup: only an admin creates a
	// container whose name matches a protected pattern.
	if _, err := e.create(t, e.alice, CreateRequest{Name: "data-keep", Framework: "busybox"}); !errs.Is(err, errs.Permission) || !strings.Contains(err.Error(), "protected pattern") {
		t.Fatalf("alice creating data-keep: %v", err)
	}
	bossFor, _ := For(e.boss, e.alice)
	if _, err := e.m.Create(ctx, bossFor, CreateRequest{Name: "data-keep", Framework: "busybox"}); err != nil {
		t.Fatalf("an admin creating data-keep for alice: %v", err)
	}
	if err := e.m.Remove(ctx, a, "data-keep", true); !errs.Is(err, errs.Conflict) || !strings.Contains(err.Error(), "protected") {
		t.Fatalf("protected by pattern: %v", err)
	}
	if err := e.m.Remove(ctx, a, "run", true); err != nil {
		t.Fatal(err)
	}
	boss, _ := For(e.boss, e.alice)
	if err := e.m.Remove(ctx, boss, "data-keep", true); err != nil {
		t.Fatalf("admin force: %v", err)
	}
	// Protection by mark.
	e.create(t, e.alice, CreateRequest{Name: "p", Framework: "busybox"})
	if err := e.m.Protect(ctx, boss, "p", true); err != nil {
		t.Fatal(err)
	}
	rows, _ := e.m.List(ctx, a, false)
	if len(rows) != 1 || !rows[0].Protect {
		t.Fatalf("list: %+v", rows)
	}
	if err := e.m.Remove(ctx, a, "p", true); !errs.Is(err, errs.Conflict) {
		t.Fatalf("marked: %v", err)
	}
	if err := e.m.Protect(ctx, boss, "p", false); err != nil {
		t.Fatal(err)
	}
	if err := e.m.Remove(ctx, a, "p", true); err != nil {
		t.Fatal(err)
	}
}

func TestDryRunChangesNothing(t *testing.T) {
	e := setup(t)
	out, err := e.create(t, e.alice, CreateRequest{Name: "d", Framework: "busybox", DryRun: true, GPUs: 1})
	if err != nil || !out.DryRun || out.Request.Name != engine.DockerName(e.alice.UID, "d") {
		t.Fatalf("%+v %v", out, err)
	}
	if len(e.f.Calls()) != 0 {
		t.Fatalf("dry run called the engine: %v", e.f.Calls())
	}
	if _, err := os.Stat(e.m.Cfg.Policies.WorkspaceRoot); err == nil {
		t.Fatal("dry run created the workspace")
	}
	b, _ := json.Marshal(out.Request)
	if !strings.Contains(string(b), `"NanoCpus":4000000000`) {
		t.Fatalf("request JSON: %s", b)
	}
}

func readAudit(t *testing.T, path string) []map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("audit line %q: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}
