package main

import (
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mlc-lab/mlc/cleanup"
	"github.com/mlc-lab/mlc/internal/testenv"
)

// A server of 100 containers in random states (managed or not, protected or
// not, idle, busy, long stopped, never started, foreign on the same image),
// with real sampled history and short windows: the plan is exactly the
// expected one, --dry-run changes nothing, a real run does exactly what the
// plan said, warnings come in runs before the stop, and everything protected
// or foreign is still there, unchanged.
func TestCleanupServer(t *testing.T) {
	testenv.Engine(t)
	if os.Getuid() != 0 {
		if testenv.Required() {
			t.Fatal("the cleanup integration test runs as root")
		}
		t.Skip("needs root")
	}
	dir := t.TempDir()
	tag := fmt.Sprintf("cl%d-", os.Getpid())
	scope := "mlc.test.cleanup=" + tag
	bin, policy := filepath.Join(dir, "mlc"), filepath.Join(dir, "policy.yaml")
	catRef := "mlc-cleanup-test:" + strings.TrimSuffix(tag, "-") + "-cat"
	must(t, os.WriteFile(policy, []byte(fmt.Sprintf(`state_dir: %[1]s/state
audit_log: %[1]s/audit.jsonl
admins: [root]
defaults:
  idle_timeout: 30s
  max_containers: 500
images:
  cat: {image: %[2]s, framework: cat, version: "1"}
cleanup:
  min_samples: 2
  max_sample_age: 1m
  grace: 5s
  warn_at: [0.5, 0.9]
  stop_timeout: 1
  remove_stopped_after: 20s
  prune_images: true
protected: ["*-keep"]
notify:
  command: cat >> %[1]s/notify.log
`, dir, catRef)), 0o644))
	if out, err := exec.Command("go", "build", "-o", bin, "-ldflags", "-extldflags=-Wl,-z,lazy", ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	mlc := func(args ...string) (string, string, int) {
		c := exec.Command(bin, args...)
		c.Env = append(os.Environ(), "MLC_CONFIG="+policy, "MLC_STATE_DIR=", "MLC_AUDIT_LOG=", "MLC_FAKE_GPUS=",
			"MLC_WORKSPACE_ROOT="+filepath.Join(dir, "ws"), "MLC_TEST_CLEANUP_SCOPE="+scope)
		return runCmd(t, c)
	}
	docker := func(args ...string) string { return testenv.Docker(t, args...) }
	t.Cleanup(func() {
		ids, _ := exec.Command("docker", "ps", "-aq", "--filter", "label="+scope).Output()
		for _, id := range strings.Fields(string(ids)) {
			exec.Command("docker", "rm", "-f", id).Run()
		}
		imgs, _ := exec.Command("docker", "images", "-q", "--filter", "label="+scope).Output()
		for _, id := range strings.Fields(string(imgs)) {
			exec.Command("docker", "rmi", "-f", id).Run()
		}
	})

	// Images: one the catalogue names (unused), one only a stopped foreign
	// container uses, and one dangling (built, then its tag built again).
	build := func(ref, extra string) string {
		ctx := t.TempDir()
		must(t, os.WriteFile(filepath.Join(ctx, "Dockerfile"),
			[]byte(fmt.Sprintf("FROM mlc/busybox:latest\nLABEL %s x=%q\n", scope, extra)), 0o644))
		c := exec.Command("docker", "build", "-q", "-t", ref, ctx)
		c.Env = append(os.Environ(), "DOCKER_BUILDKIT=0")
		out, err := c.CombinedOutput()
		if err != nil {
			t.Fatalf("docker build: %v\n%s", err, out)
		}
		return strings.TrimSpace(docker("image", "inspect", "-f", "{{.Id}}", ref))
	}
	catID := build(catRef, "cat")
	usedRef := "mlc-cleanup-test:" + strings.TrimSuffix(tag, "-") + "-used"
	usedID := build(usedRef, "used")
	danglingRef := "mlc-cleanup-test:" + strings.TrimSuffix(tag, "-") + "-dangling"
	danglingID := build(danglingRef, "v1")
	build(danglingRef, "v2") // the first one loses its tag
	keptImages := []string{catID, usedID}

	// The containers.
	type kind string
	const (
		idle, busy, stoppedLong, createdLong, foreign, foreignStopped kind = "idle", "busy", "stopped", "created", "foreign", "foreign-stopped"
	)
	type ctr struct {
		name    string
		kind    kind
		protect string // "", label, pattern, mark
	}
	rng := rand.New(rand.NewSource(7))
	kinds := []kind{idle, idle, idle, busy, stoppedLong, stoppedLong, createdLong, foreign, foreignStopped}
	protects := []string{"", "", "", "", "label", "pattern", "mark"}
	var ctrs []ctr
	busyCount := 0
	for i := 0; len(ctrs) < 100; i++ {
		k := kinds[rng.Intn(len(kinds))]
		if k == busy {
			if busyCount == 6 { // busy loops cost CPU: a few are enough
				continue
			}
			busyCount++
		}
		c := ctr{name: fmt.Sprintf("%s%03d", tag, i), kind: k}
		if k != foreign && k != foreignStopped {
			c.protect = protects[rng.Intn(len(protects))]
		}
		if c.protect == "pattern" {
			c.name += "-keep"
		}
		ctrs = append(ctrs, c)
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	for _, c := range ctrs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			args := []string{"--label", scope, "--name", "mlc-0-" + c.name, "--init"}
			image := "mlc/busybox:latest"
			if c.kind == foreign || c.kind == foreignStopped {
				args = []string{"--label", scope, "--name", "foreign-" + c.name, "--label", "mlc.name=" + c.name}
				if c.kind == foreignStopped {
					image = usedRef
				}
			} else {
				args = append(args, "--label", "mlc.managed=true", "--label", "mlc.user=root", "--label", "mlc.uid=0",
					"--label", "mlc.gid=0", "--label", "mlc.name="+c.name)
				if c.protect == "label" {
					args = append(args, "--label", "mlc.protected=true")
				}
			}
			cmd := []string{"sh", "-c", "while :; do sleep 1; done"}
			if c.kind == busy {
				args = append(args, "--cpus", "0.1")
				cmd = []string{"sh", "-c", "while :; do :; done"}
			}
			run := append(append([]string{"create"}, args...), image)
			id := strings.TrimSpace(docker(append(run, cmd...)...))
			switch c.kind {
			case idle, busy, foreign:
				docker("start", id)
			case stoppedLong, foreignStopped:
				docker("start", id)
				docker("stop", "-t", "0", id)
			}
		}()
	}
	wg.Wait()
	for _, c := range ctrs {
		if c.protect == "mark" {
			if _, e, code := mlc("protect", c.name); code != 0 {
				t.Fatalf("protect %s: %s", c.name, e)
			}
		}
	}
	setupDone := time.Now()

	// Sampling, as cron or mlc monitor serve would, every 2 s.
	stopSampling := make(chan struct{})
	sampled := make(chan struct{}, 100)
	go func() {
		for i := 0; i < 120; i++ {
			c := exec.Command(bin, "monitor", "sample")
			c.Env = append(os.Environ(), "MLC_CONFIG="+policy, "MLC_STATE_DIR=", "MLC_AUDIT_LOG=")
			_ = c.Run()
			select {
			case sampled <- struct{}{}:
			default:
			}
			select {
			case <-stopSampling:
				return
			case <-time.After(2 * time.Second):
			}
		}
	}()
	defer close(stopSampling)

	// What each container looks like to someone checking nothing changed.
	snapshot := func() map[string]string {
		out := map[string]string{}
		for _, line := range strings.Split(strings.TrimSpace(docker("ps", "-a", "--filter", "label="+scope,
			"--format", "{{.ID}} {{.Names}} {{.State}}")), "\n") {
			if f := strings.Fields(line); len(f) == 3 {
				out[f[1]] = f[0] + " " + f[2]
			}
		}
		return out
	}
	plan := func(args ...string) cleanup.Result {
		t.Helper()
		out, errOut, code := mlc(append([]string{"cleanup", "--json"}, args...)...)
		if code != 0 {
			t.Fatalf("mlc cleanup %v: exit %d\n%s\n%s", args, code, errOut, out)
		}
		var r cleanup.Result
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("cleanup --json: %v\n%s", err, out)
		}
		return r
	}
	actions := func(r cleanup.Result) []string {
		var s []string
		for _, a := range r.Actions {
			switch a.Action {
			case cleanup.KindRemoveImage:
				s = append(s, "remove-image "+a.ImageID)
			case cleanup.KindWarn:
				s = append(s, fmt.Sprintf("warn%d %s", a.Level, a.Name))
			default:
				s = append(s, a.Action+" "+a.Name)
			}
		}
		sort.Strings(s)
		return s
	}
	expect := func(f func(c ctr) string, extra ...string) []string {
		var s []string
		for _, c := range ctrs {
			if a := f(c); a != "" {
				s = append(s, a+" "+c.name)
			}
		}
		s = append(s, extra...)
		sort.Strings(s)
		return s
	}
	same := func(what string, got, want []string) {
		t.Helper()
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Fatalf("%s:\ngot  %q\nwant %q", what, got, want)
		}
	}
	managedUnprotected := func(c ctr) bool {
		return c.kind != foreign && c.kind != foreignStopped && c.protect == ""
	}
	sleepUntil := func(d time.Duration) {
		if w := time.Until(setupDone.Add(d)); w > 0 {
			time.Sleep(w)
		}
	}

	// Run 1, at half the idle timeout: warnings at 50 %, the long-stopped
	// and never-started containers removed, the dangling image removed.
	sleepUntil(21 * time.Second)
	want1 := expect(func(c ctr) string {
		switch {
		case !managedUnprotected(c):
			return ""
		case c.kind == idle:
			return "warn50"
		case c.kind == stoppedLong || c.kind == createdLong:
			return "remove"
		}
		return ""
	}, "remove-image "+danglingID)
	before := snapshot()
	dry := plan("--dry-run")
	if !dry.DryRun {
		t.Errorf("dry run not marked as one")
	}
	same("the dry run's plan", actions(dry), want1)
	if after := snapshot(); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("--dry-run changed containers:\n%v\n%v", before, after)
	}
	real := plan()
	same("the real run's plan", actions(real), want1)
	for _, a := range real.Actions {
		if a.Result != "done" {
			t.Errorf("%s %s: %s %s", a.Action, a.Name, a.Result, a.Error)
		}
	}
	after := snapshot()
	for _, c := range ctrs {
		dn := "mlc-0-" + c.name
		if c.kind == foreign || c.kind == foreignStopped {
			dn = "foreign-" + c.name
		}
		removed := managedUnprotected(c) && (c.kind == stoppedLong || c.kind == createdLong)
		if _, ok := after[dn]; ok == removed {
			t.Errorf("%s (%s, protect %q): present %v after the run", c.name, c.kind, c.protect, ok)
		}
		if !removed && after[dn] != before[dn] {
			t.Errorf("%s (%s, protect %q) changed: %s -> %s", c.name, c.kind, c.protect, before[dn], after[dn])
		}
	}
	for _, id := range keptImages {
		if _, err := exec.Command("docker", "image", "inspect", id).Output(); err != nil {
			t.Errorf("image %s (used or catalogued) was removed", id)
		}
	}
	if _, err := exec.Command("docker", "image", "inspect", danglingID).Output(); err == nil {
		t.Errorf("the dangling image is still there")
	}
	same("a second run right after", actions(plan()), nil)
	// Each warning reached its owner (here through notify.command: the
	// test's containers are root's, with no workspace): a warning that
	// reaches nobody is not counted as given.
	notified, err := os.ReadFile(filepath.Join(dir, "notify.log"))
	must(t, err)
	for _, c := range ctrs {
		if managedUnprotected(c) && c.kind == idle && !strings.Contains(string(notified), "Your container "+c.name+" has been idle") {
			t.Errorf("no warning for %s reached notify.command", c.name)
		}
	}

	// Run 2, past 90 %: the second warning, still no stop.
	sleepUntil(34 * time.Second)
	same("run 2", actions(plan()), expect(func(c ctr) string {
		if managedUnprotected(c) && c.kind == idle {
			return "warn90"
		}
		return ""
	}))
	// Run 3, past the timeout: idle ones stopped (warned in earlier runs);
	// busy ones not; nothing protected or foreign touched.
	sleepUntil(39 * time.Second)
	before = snapshot()
	r3 := plan()
	same("run 3", actions(r3), expect(func(c ctr) string {
		if managedUnprotected(c) && c.kind == idle {
			return "stop"
		}
		return ""
	}))
	after = snapshot()
	for _, c := range ctrs {
		dn := "mlc-0-" + c.name
		if c.kind == foreign || c.kind == foreignStopped {
			dn = "foreign-" + c.name
		}
		stopped := managedUnprotected(c) && c.kind == idle
		was, now := strings.Fields(before[dn]+" - -"), strings.Fields(after[dn]+" - -")
		switch {
		case stopped && (was[1] != "running" || now[1] != "exited" || now[0] != was[0]):
			t.Errorf("%s (idle) should have been stopped: %s -> %s", c.name, before[dn], after[dn])
		case !stopped && after[dn] != before[dn]:
			t.Errorf("%s (%s, protect %q) changed: %s -> %s", c.name, c.kind, c.protect, before[dn], after[dn])
		}
	}
	same("a run right after the stops", actions(plan()), nil)
	audit, err := os.ReadFile(filepath.Join(dir, "audit.jsonl"))
	must(t, err)
	for _, want := range []string{`"action":"cleanup-warn"`, `"action":"stop"`, `"action":"remove"`, `"action":"cleanup-remove-image"`} {
		if !strings.Contains(string(audit), want) {
			t.Errorf("the audit log has no %s", want)
		}
	}
}
