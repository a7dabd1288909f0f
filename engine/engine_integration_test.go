package engine_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mlc-lab/mlc/engine"
	"github.com/mlc-lab/mlc/errs"
	"github.com/mlc-lab/mlc/internal/testenv"
)

// The test environment gives a working engine with the busybox image:
// create, start, exec, remove; and the limits of the spec hold inside.
func TestEngineLifecycle(t *testing.T) {
	c := testenv.Engine(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	name := fmt.Sprintf("mlc-enginetest-%d", os.Getpid())
	spec := engine.Spec{
		Name:   name,
		Image:  testenv.Image,
		Labels: map[string]string{engine.LabelManaged: "true", engine.LabelUser: "enginetest", engine.LabelName: "x"},
		User:   "4321:4321", Cmd: []string{"sleep", "300"},
		NanoCPUs: 5e8, Memory: 64 << 20, MemorySwap: 64 << 20, ShmSize: 32 << 20, PidsLimit: 77,
		Ulimits: []engine.Ulimit{{Name: "memlock", Soft: engine.Memlock(), Hard: engine.Memlock()}},
	}
	id, err := c.Create(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Remove(context.Background(), id, true) })
	if _, err := c.Create(ctx, spec); !errs.Is(err, errs.Conflict) {
		t.Fatalf("second create with the same name: %v, want a conflict", err)
	}
	if err := c.Start(ctx, id); err != nil {
		t.Fatal(err)
	}
	var out, stderr bytes.Buffer
	code, err := c.Exec(ctx, id, engine.ExecOptions{
		Cmd:    []string{"sh", "-c", "id -u; cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/memory.max 2>/dev/null; cat /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/pids.max 2>/dev/null; df -k /dev/shm | tail -1; ulimit -l"},
		Stdout: &out, Stderr: &stderr,
	})
	if err != nil || code != 0 {
		t.Fatalf("exec: code %d err %v stderr %s", code, err, stderr.String())
	}
	got := strings.Fields(out.String())
	if len(got) < 5 || got[0] != "4321" || got[1] != "67108864" || got[2] != "77" {
		t.Fatalf("inside the container: %q", out.String())
	}
	wantLock := "unlimited"
	if m := engine.Memlock(); m >= 0 {
		wantLock = fmt.Sprint(m / 1024)
	}
	if !strings.Contains(out.String(), " 32768 ") || got[len(got)-1] != wantLock {
		t.Fatalf("shm or memlock: %q", out.String())
	}
	code, err = c.Exec(ctx, id, engine.ExecOptions{Cmd: []string{"sh", "-c", "exit 7"}, Stdout: &out, Stderr: &out})
	if err != nil || code != 7 {
		t.Fatalf("exit code passthrough: %d %v", code, err)
	}
	list, err := c.List(ctx, "enginetest")
	if err != nil || len(list) != 1 || list[0].ID != id || list[0].State != "running" {
		t.Fatalf("list: %+v %v", list, err)
	}
	if err := c.Remove(ctx, id, true); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Inspect(ctx, id); !errs.Is(err, errs.NotFound) {
		t.Fatalf("after remove: %v", err)
	}
}

func TestEngineNotRunning(t *testing.T) {
	t.Setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
	c, err := engine.New()
	if err != nil {
		t.Fatal(err)
	}
	err = c.Ping(context.Background())
	if !errs.Is(err, errs.Engine) || !strings.Contains(err.Error(), "is dockerd running?") {
		t.Fatalf("got %v", err)
	}
}
