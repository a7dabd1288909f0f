package containers

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/mlc-lab/mlc/engine"
	"github.com/mlc-lab/mlc/errs"
)

// 16 creates by one user at once: max_containers (2 here) holds.
func TestMaxContainersUnderParallelCreates(t *testing.T) {
	e := setup(t)
	var wg sync.WaitGroup
	errsSeen := make(chan error, 16)
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := e.create(t, e.alice, CreateRequest{Name: "p" + string(rune('a'+i)), Framework: "busybox"})
			errsSeen <- err
		}()
	}
	wg.Wait()
	close(errsSeen)
	ok := 0
	for err := range errsSeen {
		if err == nil {
			ok++
		} else if !errs.Is(err, errs.Quota) {
			t.Errorf("unexpected error: %v", err)
		}
	}
	rows, _ := e.m.List(context.Background(), Self(e.alice), false)
	if ok != 2 || len(rows) != 2 {
		t.Fatalf("%d creates succeeded and alice has %d containers; max_containers is 2", ok, len(rows))
	}
}

// An interrupt at any step after the claim undoes the create.
func TestInterruptedCreateLeavesNothing(t *testing.T) {
	e := setup(t)
	ctx, cancel := context.WithCancel(context.Background())
	e.f.OnCreate(cancel) // Ctrl-C while the engine creates the container
	_, err := e.m.Create(ctx, Self(e.alice), CreateRequest{Name: "x", Framework: "busybox"})
	if !errs.Is(err, errs.Interrupted) || !strings.Contains(err.Error(), "x was not created") {
		t.Fatalf("got %v", err)
	}
	if e.f.Len() != 0 {
		t.Fatalf("interrupted create left a container: %v", e.f.Calls())
	}
	// Interrupted before anything: the same answer, nothing made.
	_, err = e.m.Create(ctx, Self(e.alice), CreateRequest{Name: "y", Framework: "busybox"})
	if err == nil || e.f.Len() != 0 {
		t.Fatalf("create with a cancelled context: %v, %d containers", err, e.f.Len())
	}
}

// start refuses a container whose mounted directory was swapped after create.
func TestStartRechecksMounts(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	a := Self(e.alice)
	set := filepath.Join(e.roots, "set")
	must(t, os.MkdirAll(set, 0o755))
	if _, err := e.create(t, e.alice, CreateRequest{Name: "d", Framework: "busybox", Data: set, NoStart: true}); err != nil {
		t.Fatal(err)
	}
	// Swapped for a link to /.
	must(t, os.Rename(set, set+".old"))
	must(t, os.Symlink("/", set))
	err := e.m.Start(ctx, a, "d")
	if !errs.Is(err, errs.State) || !strings.Contains(err.Error(), "not the one it was created with") {
		t.Fatalf("start after a swap to a link: %v", err)
	}
	// Swapped for another directory (same path, another inode).
	must(t, os.Remove(set))
	must(t, os.Mkdir(set, 0o755))
	if err := e.m.Start(ctx, a, "d"); !errs.Is(err, errs.State) {
		t.Fatalf("start after a swap to another directory: %v", err)
	}
	if _, err := e.m.Open(ctx, a, "d", OpenOptions{Cmd: []string{"true"}}); !errs.Is(err, errs.State) {
		t.Fatalf("open after a swap: %v", err)
	}
	// Put back: it starts.
	must(t, os.Remove(set))
	must(t, os.Rename(set+".old", set))
	if err := e.m.Start(ctx, a, "d"); err != nil {
		t.Fatalf("start with the mount restored: %v", err)
	}
	// A container without a record of its mounts is not started.
	e.f.Edit(e.f.IDs()[0], func(c *engine.Container) {
		c.State = "exited"
		delete(c.Labels, engine.LabelMounts)
	})
	if err := e.m.Start(ctx, a, "d"); !errs.Is(err, errs.State) || !strings.Contains(err.Error(), "no record") {
		t.Fatalf("start without records: %v", err)
	}
}

// --root needs the engine to remap user namespaces.
func TestRootNeedsUsernsRemap(t *testing.T) {
	e := setup(t)
	e.m.Cfg.Policies.AllowRoot = true
	_, err := e.create(t, e.alice, CreateRequest{Name: "r", Framework: "busybox", Root: true})
	if !errs.Is(err, errs.Permission) || !strings.Contains(err.Error(), "userns-remap") {
		t.Fatalf("root without remap: %v", err)
	}
	if w := PolicyWarnings(context.Background(), e.m.Cfg, e.f); len(w) != 1 || !strings.Contains(w[0], "does not remap") {
		t.Errorf("warnings: %v", w)
	}
	e.f.SetSecurityOptions("name=seccomp,profile=builtin", "name=userns")
	out, err := e.create(t, e.alice, CreateRequest{Name: "r", Framework: "busybox", Root: true})
	if err != nil || e.f.Spec(out.ID).User != "0:0" {
		t.Fatalf("root with remap: %v", err)
	}
	if w := PolicyWarnings(context.Background(), e.m.Cfg, e.f); len(w) != 0 {
		t.Errorf("warnings with remap: %v", w)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// Plan is pure: the policy, the request and the facts decide the request
// exactly as --dry-run prints it, and a real create sends that request.
func TestPlanIsWhatDryRunPrintsAndCreateSends(t *testing.T) {
	e := setup(t)
	a := Self(e.alice)
	r := CreateRequest{Name: "pl", Framework: "busybox", CPUs: 1.5, Publish: []string{"8888"}, Env: []string{"A=1"}}
	f, err := e.m.gather(context.Background(), a, r)
	must(t, err)
	calls := len(e.f.Calls())
	p1, err := Plan(e.m.Cfg, a, r, f)
	must(t, err)
	p2, _ := Plan(e.m.Cfg, a, r, f)
	if len(e.f.Calls()) != calls {
		t.Fatalf("Plan called the engine: %v", e.f.Calls()[calls:])
	}
	j1, _ := json.Marshal(p1.Created().Request)
	j2, _ := json.Marshal(p2.Created().Request)
	r.DryRun = true
	dry, err := e.create(t, e.alice, r)
	must(t, err)
	j3, _ := json.Marshal(dry.Request)
	if string(j1) != string(j2) || string(j1) != string(j3) {
		t.Fatalf("plan, plan again and dry run differ:\n%s\n%s\n%s", j1, j2, j3)
	}
	r.DryRun = false
	out, err := e.create(t, e.alice, r)
	must(t, err)
	sent := e.f.Spec(out.ID).Request()
	want := p1.Created().Request
	// What only the apply knows: the recorded mount identities and the network it made.
	sent.Config.Labels[engine.LabelMounts], want.Config.Labels[engine.LabelMounts] = "", ""
	js, _ := json.Marshal(sent)
	jw, _ := json.Marshal(want)
	if string(js) != string(jw) {
		t.Fatalf("create sent something else than the plan:\nsent %s\nplan %s", js, jw)
	}
}
