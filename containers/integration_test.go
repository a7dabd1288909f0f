package containers_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mlc-lab/mlc/audit"
	"github.com/mlc-lab/mlc/config"
	"github.com/mlc-lab/mlc/containers"
	"github.com/mlc-lab/mlc/engine"
	"github.com/mlc-lab/mlc/errs"
	"github.com/mlc-lab/mlc/identity"
	"github.com/mlc-lab/mlc/internal/testenv"
	"github.com/mlc-lab/mlc/limits"
)

const itPolicy = `
defaults:
  cpus: 0.5
  memory: 64m
  shm_size: 32m
  pids_limit: 64
  max_containers: 5
images:
  bb:
    image: mlc/busybox:latest
    framework: busybox
    version: "1.35"
  gone:
    image: mlc/nonexistent:1
`

type rig struct {
	m    *containers.Manager
	user *identity.Caller
	ctx  context.Context
}

func newRig(t *testing.T, eng engine.Engine) *rig {
	t.Helper()
	if os.Getuid() != 0 {
		if testenv.Required() {
			t.Fatal("integration tests run as root (they chown workspaces)")
		}
		t.Skip("needs root")
	}
	base := t.TempDir()
	os.Chmod(base, 0o755)
	cfg, err := config.Parse("it.yaml", []byte(itPolicy))
	if err != nil {
		t.Fatal(err)
	}
	cfg.StateDir = filepath.Join(base, "state")
	cfg.Policies.WorkspaceRoot = filepath.Join(base, "ws")
	name := fmt.Sprintf("it%d", time.Now().UnixNano()%1e9)
	u := &identity.Caller{User: name, UID: 40000 + os.Getpid()%20000, GID: 40000 + os.Getpid()%20000, Home: filepath.Join(base, "home")}
	os.MkdirAll(u.Home, 0o755)
	m := &containers.Manager{Cfg: cfg, Eng: eng, Dir: limits.MapDirectory{name: nil},
		Audit: &audit.Log{Path: filepath.Join(base, "audit.jsonl")}, Version: "test", Memlock: engine.Memlock()}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	t.Cleanup(func() {
		list, _ := eng.List(context.Background(), name)
		for _, c := range list {
			eng.Remove(context.Background(), c.ID, true)
		}
	})
	return &rig{m: m, user: u, ctx: ctx}
}

func (r *rig) exec(t *testing.T, name, script string) (string, int) {
	t.Helper()
	var out bytes.Buffer
	code, err := r.m.Open(r.ctx, containers.Self(r.user), name, containers.OpenOptions{Cmd: []string{"sh", "-c", script}, Stdout: &out, Stderr: &out})
	if err != nil {
		t.Fatalf("open %s: %v", name, err)
	}
	return strings.TrimSpace(out.String()), code
}

// The resolved limits hold inside the container, and processes run as the caller.
func TestLimitsInsideContainer(t *testing.T) {
	r := newRig(t, testenv.Engine(t))
	out, err := r.m.Create(r.ctx, containers.Self(r.user), containers.CreateRequest{Name: "lim", Framework: "busybox"})
	if err != nil {
		t.Fatal(err)
	}
	got, code := r.exec(t, "lim", `
id -u; id -g; pwd; echo $HOME
cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max
cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.cfs_period_us 2>/dev/null || cat /sys/fs/cgroup/cpu.max
cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max
df -k /dev/shm | awk 'NR==2 {print $2}'
touch /workspace/made-inside`)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, got)
	}
	uid := fmt.Sprint(r.user.UID)
	want := []string{uid, uid, "/workspace", "/workspace", "67108864", "50000", "100000", "64", "32768"}
	if f := strings.Fields(got); strings.Join(f, " ") != strings.Join(want, " ") {
		t.Fatalf("inside the container:\n got %v\nwant %v", f, want)
	}
	st, err := os.Stat(filepath.Join(out.Workspace, "made-inside"))
	if err != nil || st.Sys().(*syscall.Stat_t).Uid != uint32(r.user.UID) {
		t.Fatalf("file made inside is not the caller's on the host: %v", err)
	}
}

// A process past the memory limit is killed inside; the container and the host go on.
func TestMemoryLimitKillsInside(t *testing.T) {
	r := newRig(t, testenv.Engine(t))
	if _, err := r.m.Create(r.ctx, containers.Self(r.user), containers.CreateRequest{Name: "oom", Framework: "busybox"}); err != nil {
		t.Fatal(err)
	}
	_, code := r.exec(t, "oom", "dd if=/dev/zero of=/dev/null bs=200M count=1")
	if code != 137 {
		t.Fatalf("allocating 200M under a 64M limit exited %d, want 137 (SIGKILL by the OOM killer)", code)
	}
	got, code := r.exec(t, "oom", "cat /sys/fs/cgroup/memory/memory.oom_control 2>/dev/null || cat /sys/fs/cgroup/memory.events")
	if code != 0 || !strings.Contains(got, "oom_kill 1") {
		t.Fatalf("no OOM kill recorded in the container's cgroup: %s", got)
	}
	rows, _ := r.m.List(r.ctx, containers.Self(r.user), false)
	if len(rows) != 1 || rows[0].State != "running" {
		t.Fatalf("container after the OOM kill: %+v", rows)
	}
}

func TestPortTakenLeavesNoContainer(t *testing.T) {
	eng := testenv.Engine(t)
	r := newRig(t, eng)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	_, err = r.m.Create(r.ctx, containers.Self(r.user), containers.CreateRequest{Name: "web", Framework: "busybox", Publish: []string{fmt.Sprintf("%d:80", port)}})
	if !errs.Is(err, errs.Conflict) || !strings.Contains(err.Error(), "port already taken") {
		t.Fatalf("got %v", err)
	}
	if list, _ := eng.List(r.ctx, r.user.User); len(list) != 0 {
		t.Fatalf("a failed create left %d containers", len(list))
	}
	// A free port works and is bound on 127.0.0.1 only.
	l.Close()
	if _, err := r.m.Create(r.ctx, containers.Self(r.user), containers.CreateRequest{Name: "web", Framework: "busybox", Publish: []string{fmt.Sprintf("%d:80", port)}}); err != nil {
		t.Fatal(err)
	}
	got := testenv.Docker(t, "port", engine.DockerName(r.user.UID, "web"))
	if got != fmt.Sprintf("80/tcp -> 127.0.0.1:%d", port) {
		t.Fatalf("docker port: %q", got)
	}
}

func TestMissingImage(t *testing.T) {
	eng := testenv.Engine(t)
	r := newRig(t, eng)
	var progress bytes.Buffer
	r.m.Progress = &progress
	_, err := r.m.Create(r.ctx, containers.Self(r.user), containers.CreateRequest{Name: "x", ImageAlias: "gone"})
	if !errs.Is(err, errs.Image) || !strings.Contains(err.Error(), "mlc/nonexistent:1 is not present and cannot be pulled") {
		t.Fatalf("got %v", err)
	}
	if list, _ := eng.List(r.ctx, r.user.User); len(list) != 0 {
		t.Fatal("left a container")
	}
}

func TestEngineDown(t *testing.T) {
	t.Setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
	eng, err := engine.New()
	if err != nil {
		t.Fatal(err)
	}
	r := newRig(t, eng)
	_, err = r.m.Create(r.ctx, containers.Self(r.user), containers.CreateRequest{Name: "x", Framework: "busybox"})
	if !errs.Is(err, errs.Engine) || !strings.Contains(err.Error(), "cannot reach the Docker engine at unix:///nonexistent/docker.sock: is dockerd running?") {
		t.Fatalf("got %v", err)
	}
}

func TestStopStartKillLogs(t *testing.T) {
	r := newRig(t, testenv.Engine(t))
	a := containers.Self(r.user)
	if _, err := r.m.Create(r.ctx, a, containers.CreateRequest{Name: "life", Framework: "busybox"}); err != nil {
		t.Fatal(err)
	}
	if err := r.m.Stop(r.ctx, a, "life", 1); err != nil {
		t.Fatal(err)
	}
	// open starts a stopped container.
	if got, code := r.exec(t, "life", "echo back"); code != 0 || got != "back" {
		t.Fatalf("open after stop: %d %q", code, got)
	}
	if err := r.m.Kill(r.ctx, a, "life"); err != nil {
		t.Fatal(err)
	}
	if err := r.m.Kill(r.ctx, a, "life"); !errs.Is(err, errs.Conflict) {
		t.Fatalf("kill a stopped container: %v", err)
	}
	if err := r.m.Start(r.ctx, a, "life"); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	if err := r.m.Logs(r.ctx, a, "life", containers.LogsOptions{Tail: -1, Out: &logs}); err != nil {
		t.Fatal(err)
	}
	if err := r.m.Remove(r.ctx, a, "life", true); err != nil {
		t.Fatal(err)
	}
	if _, err := r.m.Find(r.ctx, a, "life"); !errs.Is(err, errs.NotFound) {
		t.Fatalf("after remove: %v", err)
	}
}
