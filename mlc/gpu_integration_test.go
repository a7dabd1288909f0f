package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3"

	"github.com/mlc-lab/mlc/gpualloc"
	"github.com/mlc-lab/mlc/internal/testenv"
)

// gpuRig runs the real binary against the real engine with 8 fake GPUs.
// Its containers' names start with tag (this process's pid), and it looks
// at and removes only those: another run of these tests on the same engine
// (as root too) has containers of its own.
type gpuRig struct {
	bin, state, policy, tag string
	orphans                 []string // created-never-started containers without a claim
}

func newGPURig(t *testing.T, extra string) *gpuRig {
	t.Helper()
	testenv.Engine(t)
	if os.Getuid() != 0 {
		if testenv.Required() {
			t.Fatal("GPU integration tests run as root")
		}
		t.Skip("needs root")
	}
	dir := t.TempDir()
	r := &gpuRig{bin: filepath.Join(dir, "mlc"), state: filepath.Join(dir, "state"), policy: filepath.Join(dir, "policy.yaml"),
		tag: fmt.Sprintf("g%d-", os.Getpid())}
	policy := fmt.Sprintf(`state_dir: %s
audit_log: %s/audit.jsonl
defaults:
  gpus: 64
  cpus: 0.1
  memory: 32m
  shm_size: 8m
  max_containers: 200
images:
  bb:
    image: mlc/busybox:latest
    framework: busybox
gpu:
  fake_count: 8
  runtime: env
%s`, r.state, dir, extra)
	must(t, os.WriteFile(r.policy, []byte(policy), 0o644))
	if out, err := exec.Command("go", "build", "-o", r.bin, "-ldflags", "-extldflags=-Wl,-z,lazy", ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	t.Cleanup(func() { r.removeAll() })
	return r
}

func (r *gpuRig) cmd(args ...string) *exec.Cmd {
	c := exec.Command(r.bin, args...)
	c.Env = append(os.Environ(), "MLC_CONFIG="+r.policy, "MLC_FAKE_GPUS=", "MLC_STATE_DIR=", "MLC_AUDIT_LOG=",
		"MLC_WORKSPACE_ROOT="+filepath.Join(filepath.Dir(r.state), "ws"))
	return c
}

func (r *gpuRig) run(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	return runCmd(t, r.cmd(args...))
}

// n is the rig's name for a container: tag + short.
func (r *gpuRig) n(short string) string { return r.tag + short }

func (r *gpuRig) removeAll() {
	out, _ := exec.Command("docker", "ps", "-aq", "--filter", "label=mlc.managed=true", "--filter", "label=mlc.gpus",
		"--filter", fmt.Sprintf("label=mlc.uid=%d", os.Getuid())).Output()
	for _, id := range strings.Fields(string(out)) {
		name, _ := exec.Command("docker", "inspect", "-f", `{{index .Config.Labels "mlc.name"}}`, id).Output()
		if strings.HasPrefix(string(name), r.tag) {
			exec.Command("docker", "rm", "-f", id).Run()
		}
	}
}

type gpuStatus struct {
	GPUs []struct {
		UUID    string `json:"uuid"`
		Holders []struct {
			Name  string `json:"name"`
			State string `json:"state"`
		} `json:"holders"`
	} `json:"gpus"`
	Queue []any `json:"queue"`
}

func (r *gpuRig) status(t *testing.T) gpuStatus {
	t.Helper()
	out, errOut, code := r.run(t, "gpu", "status", "--json")
	if code != 0 {
		t.Fatalf("gpu status: %d %s", code, errOut)
	}
	var st gpuStatus
	must(t, json.Unmarshal([]byte(out), &st))
	return st
}

// containerGPUs inspects the engine: the rig's containers' short names -> the
// GPUs each is given.
func (r *gpuRig) containerGPUs(t *testing.T) map[string]string {
	t.Helper()
	got, _ := r.containerGPUStates(t)
	return got
}

// containerGPUStates also says which of them run.
func (r *gpuRig) containerGPUStates(t *testing.T) (map[string]string, map[string]bool) {
	t.Helper()
	out := testenv.Docker(t, "ps", "-a", "--filter", "label=mlc.managed=true", "--filter", fmt.Sprintf("label=mlc.uid=%d", os.Getuid()),
		"--format", "{{.ID}}")
	got, running := map[string]string{}, map[string]bool{}
	for _, id := range strings.Fields(out) {
		line := testenv.Docker(t, "inspect", "-f", `{{index .Config.Labels "mlc.name"}} {{.State.Running}} {{range .Config.Env}}{{println .}}{{end}}`, id)
		f := strings.Fields(line)
		if !strings.HasPrefix(f[0], r.tag) {
			continue
		}
		running[f[0]] = f[1] == "true"
		for _, e := range f[2:] {
			if v, ok := strings.CutPrefix(e, "NVIDIA_VISIBLE_DEVICES="); ok && v != "void" {
				got[f[0]] = v
			}
		}
	}
	return got, running
}

// 64 creates at once against 8 GPUs in exclusive mode: exactly 8 get one,
// no UUID twice, the other 56 fail cleanly and leave nothing.
func TestConcurrentCreatesExclusive(t *testing.T) {
	r := newGPURig(t, "")
	const n = 64
	type res struct {
		code   int
		stderr string
	}
	results := make([]res, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			c := r.cmd("create", r.n(fmt.Sprintf("c%02d", i)), "busybox", "--gpus", "1")
			var errOut bytes.Buffer
			c.Stderr = &errOut
			<-start
			err := c.Run()
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			}
			results[i] = res{code, errOut.String()}
		}(i)
	}
	close(start)
	wg.Wait()
	ok, unavailable := 0, 0
	for i, r := range results {
		switch {
		case r.code == 0:
			ok++
		case r.code == 10 && strings.HasPrefix(r.stderr, "mlc: no 1 free GPU(s) of 8 (GPU ") && strings.Count(r.stderr, "\n") == 1:
			unavailable++
		default:
			t.Errorf("create c%02d: exit %d %q", i, r.code, r.stderr)
		}
	}
	if ok != 8 || unavailable != 56 {
		t.Fatalf("%d created, %d refused; want 8 and 56", ok, unavailable)
	}
	inContainers := r.containerGPUs(t)
	if len(inContainers) != 8 {
		t.Fatalf("%d containers exist with GPUs, want 8: %v", len(inContainers), inContainers)
	}
	seen := map[string]string{}
	for name, uuid := range inContainers {
		if other, dup := seen[uuid]; dup {
			t.Fatalf("%s given to both %s and %s", uuid, other, name)
		}
		seen[uuid] = name
	}
	st := r.status(t)
	for _, g := range st.GPUs {
		if len(g.Holders) != 1 || g.Holders[0].State != "active" || inContainers[g.Holders[0].Name] != g.UUID {
			t.Errorf("ledger says %s is held by %+v; containers say %v", g.UUID, g.Holders, seen[g.UUID])
		}
	}
}

// The same with --wait while containers are removed: all 64 eventually get a
// GPU, in the order they queued.
func TestConcurrentCreatesWait(t *testing.T) {
	r := newGPURig(t, "")
	const n = 64
	codes := make([]int, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			c := r.cmd("create", r.n(fmt.Sprintf("w%02d", i)), "busybox", "--gpus", "1", "--wait", "--timeout", "5m")
			var errOut bytes.Buffer
			c.Stderr = &errOut
			err := c.Run()
			if ee, ok := err.(*exec.ExitError); ok {
				codes[i] = ee.ExitCode()
				t.Errorf("w%02d: %d %s", i, codes[i], errOut.String())
			}
		}(i)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	// Remove containers as they get GPUs and run, so the queue moves; bounded
	// in time. One not running yet is between its create and its start.
	removed := 0
	deadline := time.Now().Add(5 * time.Minute)
loop:
	for removed < n && time.Now().Before(deadline) {
		finished := false
		select {
		case <-done:
			finished = true
		default:
		}
		got, running := r.containerGPUStates(t)
		for name := range got {
			if !running[name] && !finished {
				continue
			}
			if _, errOut, code := r.run(t, "remove", name, "--yes", "--force"); code != 0 && !strings.Contains(errOut, "no such container") {
				t.Fatalf("remove %s: %s", name, errOut)
			}
			removed++
		}
		select {
		case <-done:
			if len(r.containerGPUs(t)) == 0 {
				break loop
			}
		case <-time.After(100 * time.Millisecond):
		}
	}
	<-done
	if removed != n {
		t.Fatalf("%d of %d waiters got a GPU", removed, n)
	}
	db, err := sql.Open("sqlite3", "file:"+filepath.Join(r.state, "gpu.db")+"?mode=ro")
	must(t, err)
	defer db.Close()
	rows, err := db.Query(`SELECT claim_id FROM waiters WHERE state = 'done' ORDER BY id`)
	must(t, err)
	defer rows.Close()
	var last int64
	count := 0
	for rows.Next() {
		var id int64
		must(t, rows.Scan(&id))
		if id <= last {
			t.Fatalf("waiter %d got claim %d after a later waiter's %d: not in arrival order", count, id, last)
		}
		last = id
		count++
	}
	if count != n {
		t.Fatalf("%d waiters served, want %d", count, n)
	}
}

// kill -9 a create at each phase, many times; after reconcile no GPU is
// held by nobody, none by two.
func TestCrashInjection(t *testing.T) {
	r := newGPURig(t, "")
	k := 0
	next := func() string { k++; return r.n(fmt.Sprintf("k%03d", k)) }
	// Deterministic: each failpoint, several times.
	for _, fp := range []string{"claimed", "created", "activated"} {
		for i := 0; i < 4; i++ {
			c := r.cmd("create", next(), "busybox", "--gpus", "1")
			c.Env = append(c.Env, "MLC_FAILPOINT="+fp)
			err := c.Run()
			if ee, ok := err.(*exec.ExitError); !ok || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
				t.Fatalf("failpoint %s did not kill the create: %v", fp, err)
			}
		}
		r.checkLedger(t)
		r.removeAll()
		r.run(t, "gpu", "reconcile")
	}
	// Random: kill -9 from outside at a random moment, while others create too.
	rng := rand.New(rand.NewSource(1))
	for round := 0; round < 6; round++ {
		var wg sync.WaitGroup
		for i := 0; i < 6; i++ {
			c := r.cmd("create", next(), "busybox", "--gpus", "1")
			must(t, c.Start())
			delay := time.Duration(rng.Intn(600)) * time.Millisecond
			wg.Add(1)
			go func() {
				defer wg.Done()
				time.Sleep(delay)
				c.Process.Signal(syscall.SIGKILL)
				c.Wait()
			}()
		}
		wg.Wait()
		r.checkLedger(t)
		r.removeAll()
	}
	t.Logf("%d creates killed; %d left a never-started container without a claim", k, len(r.orphans))
}

// A container left created by a killed create, whose claim reconcile
// released, cannot start onto a GPU someone else holds meanwhile.
func TestOrphanCannotStartOntoTakenGPU(t *testing.T) {
	r := newGPURig(t, "")
	b, _ := os.ReadFile(r.policy)
	must(t, os.WriteFile(r.policy, []byte(strings.Replace(string(b), "fake_count: 8", "fake_count: 1", 1)), 0o644))
	c := r.cmd("create", r.n("orphan"), "busybox", "--gpus", "1")
	c.Env = append(c.Env, "MLC_FAILPOINT=created")
	c.Run()
	// The claim stays pending with a dead process; make it look like the
	// create's container appeared after reconcile looked: release it by hand.
	db, err := sql.Open("sqlite3", "file:"+filepath.Join(r.state, "gpu.db"))
	must(t, err)
	_, err = db.Exec(`UPDATE claims SET state = 'released', release_reason = 'test' WHERE name = ?; UPDATE claim_gpus SET live = 0`, r.n("orphan"))
	db.Close()
	must(t, err)
	if _, errOut, code := r.run(t, "create", r.n("taker"), "busybox", "--gpus", "1"); code != 0 {
		t.Fatalf("taker: %s", errOut)
	}
	_, errOut, code := r.run(t, "start", r.n("orphan"))
	if code != 10 || !strings.Contains(errOut, "went to root/"+r.n("taker")+" while it was stopped") {
		t.Fatalf("starting the orphan: %d %q", code, errOut)
	}
	if _, running := r.containerGPUStates(t); running[r.n("orphan")] {
		t.Fatal("the orphan runs on a GPU someone else holds")
	}
}

// checkLedger reconciles, then compares the ledger with the containers:
// every claim belongs to a container that has that GPU, and every running
// container with a GPU has a claim, no GPU in two of them. A container that a
// killed create left created but never started may have no claim: it uses no
// GPU, and starting it claims its GPUs again (or is refused).
func (r *gpuRig) checkLedger(t *testing.T) {
	t.Helper()
	if _, errOut, code := r.run(t, "gpu", "reconcile"); code != 0 {
		t.Fatalf("reconcile: %s", errOut)
	}
	inContainers, running := r.containerGPUStates(t)
	st := r.status(t)
	held := map[string]bool{}
	for _, g := range st.GPUs {
		if len(g.Holders) > 1 {
			t.Fatalf("%s held by %d claims", g.UUID, len(g.Holders))
		}
		for _, h := range g.Holders {
			if h.State != "active" {
				t.Fatalf("%s still %s after reconcile (its create is dead)", g.UUID, h.State)
			}
			if inContainers[h.Name] != g.UUID {
				t.Fatalf("ledger: %s held by %s, which has %q: a GPU held by nobody", g.UUID, h.Name, inContainers[h.Name])
			}
			held[h.Name] = true
		}
	}
	byUUID := map[string]string{}
	for name, uuid := range inContainers {
		if !running[name] {
			if !held[name] {
				r.orphans = append(r.orphans, name)
			}
			continue
		}
		if !held[name] {
			t.Fatalf("running container %s has %s but no ledger claim", name, uuid)
		}
		if other, dup := byUUID[uuid]; dup {
			t.Fatalf("%s in both %s and %s", uuid, other, name)
		}
		byUUID[uuid] = name
	}
}

// The attack on the quota through start: with a gpus limit of 1, create a
// container with a GPU, stop it, have its GPU released (mlc gpu release, or
// gpu.hold_after_stop), create another with a GPU, then start the first
// again. The start must be refused (exit 7, quota) and the ledger still show
// one GPU held, by the second container.
func TestReclaimOnStartQuota(t *testing.T) {
	r := newGPURig(t, "user_overrides:\n  root:\n    gpus: 1\n    reason: quota test\n")
	first, second := r.n("first"), r.n("second")
	for _, s := range [][]string{{"create", first, "busybox", "--gpus", "1"}, {"stop", first}, {"gpu", "release", first}} {
		if _, errOut, code := r.run(t, s...); code != 0 {
			t.Fatalf("%v: exit %d %s", s, code, errOut)
		}
	}
	firstGPU := r.containerGPUs(t)[first]
	// Someone else holds first's GPU for a while, so that second gets another
	// one and first's is free again when it starts: else the start would be
	// refused because its GPU is taken, whatever the quota. A claim of this
	// test process stays pending (and alive) through the reconciles.
	other, err := gpualloc.Open(filepath.Join(r.state, "gpu.db"), gpualloc.Fake(8), gpualloc.Options{})
	must(t, err)
	defer other.Close()
	hold, err := other.Claim(context.Background(), gpualloc.Request{User: "someone", Name: "x", Container: "mlc-someone-x", N: 1, Quota: 8})
	must(t, err)
	if hold.UUIDs[0] != firstGPU {
		t.Fatalf("someone got %v, not first's GPU %s", hold.UUIDs, firstGPU)
	}
	if _, errOut, code := r.run(t, "create", second, "busybox", "--gpus", "1"); code != 0 {
		t.Fatalf("create second: exit %d %s", code, errOut)
	}
	must(t, other.Release(context.Background(), hold.ID, "test"))

	_, errOut, code := r.run(t, "start", first)
	if code != 7 || !strings.Contains(errOut, "the gpus limit is 1 (override (quota test))") {
		t.Fatalf("starting first over the quota: exit %d %q", code, errOut)
	}
	st := r.status(t)
	var held []string
	for _, g := range st.GPUs {
		for _, h := range g.Holders {
			held = append(held, h.Name+"/"+h.State)
		}
	}
	if strings.Join(held, " ") != second+"/active" {
		t.Fatalf("ledger holders after the refused start: %v, want only second", held)
	}
	if _, running := r.containerGPUStates(t); running[first] || !running[second] {
		t.Fatalf("running: %v", running)
	}
	// Once the second is gone, the first may have its GPU back.
	if _, errOut, code := r.run(t, "remove", second, "--yes", "--force"); code != 0 {
		t.Fatalf("remove second: %s", errOut)
	}
	if _, errOut, code := r.run(t, "start", first); code != 0 {
		t.Fatalf("starting first within the quota: exit %d %s", code, errOut)
	}
}

// The reconcile that runs before every claim writes what it released to the
// audit log, with the caller whose create ran it.
func TestGPUImplicitReconcileAudited(t *testing.T) {
	r := newGPURig(t, "")
	gone := r.n("gone")
	if _, errOut, code := r.run(t, "create", gone, "busybox", "--gpus", "1"); code != 0 {
		t.Fatalf("create gone: %s", errOut)
	}
	// The container disappears behind mlc's back; its claim stays.
	out := testenv.Docker(t, "ps", "-aq", "--filter", "label=mlc.managed=true", "--filter", "label=mlc.name="+gone,
		"--filter", fmt.Sprintf("label=mlc.uid=%d", os.Getuid()))
	if len(strings.Fields(out)) != 1 {
		t.Fatalf("containers named gone: %q", out)
	}
	testenv.Docker(t, "rm", "-f", strings.TrimSpace(out))
	if _, errOut, code := r.run(t, "create", r.n("next"), "busybox", "--gpus", "1"); code != 0 {
		t.Fatalf("create next: %s", errOut)
	}
	b, err := os.ReadFile(filepath.Join(filepath.Dir(r.policy), "audit.jsonl"))
	must(t, err)
	var found []string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var e struct {
			Caller    string `json:"caller"`
			CallerUID int    `json:"caller_uid"`
			Action    string `json:"action"`
			Detail    struct {
				DryRun  bool `json:"dry_run"`
				Actions []struct {
					Action, Name, Why string
				} `json:"actions"`
			} `json:"detail"`
		}
		must(t, json.Unmarshal([]byte(line), &e))
		if e.Action != "gpu-reconcile-implicit" {
			continue
		}
		if e.CallerUID != os.Getuid() || e.Caller == "" || e.Detail.DryRun {
			t.Errorf("implicit reconcile entry: %s", line)
		}
		for _, a := range e.Detail.Actions {
			if strings.HasPrefix(a.Name, r.tag) { // the engine may run other tests' containers with GPUs
				found = append(found, a.Action+" "+a.Name+": "+a.Why)
			}
		}
	}
	if strings.Join(found, "; ") != "release "+gone+": its container is gone" {
		t.Fatalf("implicit reconcile actions in the audit log: %q", found)
	}
}

// A container whose GPUs an admin released is not restarted by the engine
// itself (a daemon restart would start it without its GPUs' claim): its
// restart policy is off until mlc start re-claims them.
func TestReleasedGPUsNoRestartByEngine(t *testing.T) {
	r := newGPURig(t, "")
	name := r.n("held")
	policy := func() string {
		return testenv.Docker(t, "inspect", "-f", "{{.HostConfig.RestartPolicy.Name}}", "mlc-0-"+name)
	}
	if _, errOut, code := r.run(t, "create", name, "busybox", "--gpus", "1"); code != 0 {
		t.Fatalf("create: %d %s", code, errOut)
	}
	if p := policy(); p != "unless-stopped" {
		t.Fatalf("restart policy after create: %q", p)
	}
	for _, s := range [][]string{{"stop", name, "-t", "0"}, {"gpu", "release", name}} {
		if _, errOut, code := r.run(t, s...); code != 0 {
			t.Fatalf("%v: %d %s", s, code, errOut)
		}
	}
	if p := policy(); p != "no" {
		t.Fatalf("restart policy after its GPUs were released: %q, want no", p)
	}
	if _, errOut, code := r.run(t, "start", name); code != 0 {
		t.Fatalf("start: %d %s", code, errOut)
	}
	if p := policy(); p != "unless-stopped" {
		t.Fatalf("restart policy after mlc start re-claimed its GPUs: %q", p)
	}
}
