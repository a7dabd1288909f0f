package enginetest_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/mlc-lab/mlc/engine"
	"github.com/mlc-lab/mlc/engine/enginetest"
	"github.com/mlc-lab/mlc/errs"
)

// The conformance suite against the fake (TestConformanceDocker in engine
// runs it against Docker).
func TestConformanceFake(t *testing.T) {
	enginetest.RunWith(t, func(*testing.T) engine.Engine { return enginetest.New() }, enginetest.Options{
		BuildImage: func(_ *testing.T, eng engine.Engine, ref string, labels map[string]string) {
			eng.(*enginetest.Fake).BuildImage(ref, labels)
		},
	})
}

func spec(name, user string) engine.Spec {
	return engine.Spec{Name: name, Image: enginetest.Image,
		Labels: map[string]string{engine.LabelManaged: "true", engine.LabelUser: user, engine.LabelName: name}}
}

// The scripting hooks: FailNext, Fail, SetDown, OnCreate, OnExec, OnLogs.
func TestFakeScripting(t *testing.T) {
	ctx := context.Background()
	f := enginetest.New()
	boom := errs.New(errs.Conflict, "boom")
	f.FailNext("Start", boom)
	var created []string
	f.OnCreate(func() { // may call the fake
		list, _ := f.List(ctx, "alice")
		created = append(created, fmt.Sprint(len(list)))
	})
	id, err := f.Create(ctx, spec("a", "alice"))
	if err != nil || len(created) != 1 || created[0] != "1" {
		t.Fatalf("create: %v, hook saw %v", err, created)
	}
	if err := f.Start(ctx, id); err != boom {
		t.Fatalf("scripted start: %v", err)
	}
	if c := f.Container(id); c.State != "created" {
		t.Fatalf("a scripted failure changed the state: %s", c.State)
	}
	if err := f.Start(ctx, id); err != nil || f.Container(id).State != "running" {
		t.Fatalf("second start: %v", err)
	}
	f.OnExec(func(_ context.Context, got string, o engine.ExecOptions) (int, error) {
		fmt.Fprintf(o.Stdout, "ran %s in %s", strings.Join(o.Cmd, " "), got[:12])
		return 3, nil
	})
	var out bytes.Buffer
	if code, err := f.Exec(ctx, "a", engine.ExecOptions{Cmd: []string{"x", "y"}, Stdout: &out}); code != 3 || err != nil || out.String() != "ran x y in "+id[:12] {
		t.Fatalf("exec: %d %v %q", code, err, out.String())
	}
	f.OnLogs(func(_ context.Context, _ string, o engine.LogOptions) error {
		_, err := io.WriteString(o.Stdout, "hello\n")
		return err
	})
	out.Reset()
	if err := f.Logs(ctx, id, engine.LogOptions{Stdout: &out}); err != nil || out.String() != "hello\n" {
		t.Fatalf("logs: %v %q", err, out.String())
	}
	f.Fail("List", errs.New(errs.Permission, "denied"))
	for i := 0; i < 2; i++ {
		if _, err := f.List(ctx, ""); !errs.Is(err, errs.Permission) {
			t.Fatalf("failing list %d: %v", i, err)
		}
	}
	f.Fail("List", nil)
	f.SetDown(true)
	if _, err := f.List(ctx, ""); !errs.Is(err, errs.Engine) || !strings.Contains(err.Error(), "is dockerd running?") {
		t.Fatalf("down: %v", err)
	}
	f.SetDown(false)
	if err := f.SetRestart(ctx, id, false); err != nil || f.Restart(id) {
		t.Fatalf("restart off: %v %v", err, f.Restart(id))
	}
	want := []string{"create a", "start a", "exec a", "restart " + id[:12] + " false"}
	if got := f.Calls(); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("calls %q, want %q", got, want)
	}
}

// Edit, IDs, Len, Spec, images, pulls.
func TestFakeInspection(t *testing.T) {
	ctx := context.Background()
	f := enginetest.New()
	sp := spec("a", "alice")
	id, _ := f.Create(ctx, sp)
	sp.Labels["later"] = "x" // the fake keeps its own copy
	if f.Spec(id).Labels["later"] != "" || f.Container(id).Labels["later"] != "" {
		t.Fatal("the spec's labels are shared with the caller")
	}
	id2, _ := f.Create(ctx, spec("b", "bob"))
	if ids := f.IDs(); len(ids) != 2 || ids[0] != id || ids[1] != id2 || f.Len() != 2 {
		t.Fatalf("ids %v", ids)
	}
	if !f.Edit(id, func(c *engine.Container) { c.State = "exited"; delete(c.Labels, engine.LabelName) }) {
		t.Fatal("edit")
	}
	if c := f.Container(id); c.State != "exited" || c.Labels[engine.LabelName] != "" || !strings.HasPrefix(c.Status, "Exited (") {
		t.Fatalf("edited: %+v", c)
	}
	if f.Edit("nope", func(*engine.Container) {}) {
		t.Fatal("edit of a missing container")
	}
	if err := f.Pull(ctx, "x:1", io.Discard); !errs.Is(err, errs.Image) {
		t.Fatalf("pull: %v", err)
	}
	f.AllowPull("x:1")
	if err := f.Pull(ctx, "x:1", io.Discard); err != nil {
		t.Fatal(err)
	}
	if ok, _ := f.ImageExists(ctx, "x:1"); !ok {
		t.Fatal("pulled image missing")
	}
	f.DeleteImage("x:1")
	if _, err := f.Create(ctx, engine.Spec{Name: "c", Image: "x:1"}); !errs.Is(err, errs.NotFound) {
		t.Fatalf("create from a removed image: %v", err)
	}
}

// Networks: default pools run out after about 30, refusals are scripted,
// foreign networks are added as they are.
func TestFakeNetworks(t *testing.T) {
	ctx := context.Background()
	f := enginetest.New()
	labels := map[string]string{engine.LabelManaged: "true"}
	n := 0
	for ; n < 100; n++ {
		_, err := f.EnsureNetwork(ctx, engine.NetworkSpec{Name: fmt.Sprint("n", n), Labels: labels})
		if errs.Is(err, errs.Unavailable) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if n != 30 { // 172.18-31 and 16 /20s of 192.168 (172.17 is the bridge's)
		t.Fatalf("%d networks from the default pools", n)
	}
	f.RefuseSubnets(1)
	_, err := f.EnsureNetwork(ctx, engine.NetworkSpec{Name: "p", Subnet: "10.9.0.0/24", Labels: labels})
	if !errors.Is(err, engine.ErrSubnetTaken) {
		t.Fatalf("refused: %v", err)
	}
	if _, err := f.EnsureNetwork(ctx, engine.NetworkSpec{Name: "p", Subnet: "10.9.0.0/24", Labels: labels}); err != nil {
		t.Fatal(err)
	}
	f.AddNetwork(engine.Network{Name: "mac", Driver: "macvlan", Subnets: []string{"192.0.2.0/24"}})
	if _, err := f.EnsureNetwork(ctx, engine.NetworkSpec{Name: "mac", Labels: labels}); !errs.Is(err, errs.Conflict) {
		t.Fatalf("foreign: %v", err)
	}
	if _, err := f.EnsureNetwork(ctx, engine.NetworkSpec{Name: "q", Subnet: "192.0.2.128/25", Labels: labels}); !errors.Is(err, engine.ErrSubnetTaken) {
		t.Fatalf("overlapping a foreign network: %v", err)
	}
}

// Many goroutines at once (run with -race).
func TestFakeConcurrent(t *testing.T) {
	ctx := context.Background()
	f := enginetest.New()
	var wg sync.WaitGroup
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 20; j++ {
				id, err := f.Create(ctx, spec(fmt.Sprintf("c%d-%d", i, j), "u"))
				if err != nil {
					t.Error(err)
					return
				}
				_ = f.Start(ctx, id)
				_, _ = f.List(ctx, "u")
				_, _ = f.EnsureNetwork(ctx, engine.NetworkSpec{Name: "shared", Labels: map[string]string{engine.LabelManaged: "true"}})
				_ = f.Remove(ctx, id, true)
			}
		}()
	}
	wg.Wait()
	if f.Len() != 0 {
		t.Fatalf("%d left", f.Len())
	}
}

// Images: ids derived from references, dangling images, a foreign
// container's image, `docker rmi -f` of an image in use.
func TestFakeImages(t *testing.T) {
	ctx := context.Background()
	f := enginetest.New()
	if id, err := f.ImageIDOf(ctx, enginetest.Image); err != nil || id != enginetest.ImageID(enginetest.Image) || len(id) != 71 {
		t.Fatalf("image id of %s: %q %v", enginetest.Image, id, err)
	}
	if id, _ := f.ImageIDOf(ctx, "mlc/busybox"); id != enginetest.ImageID(enginetest.Image) {
		t.Fatalf("a reference without a tag is :latest: %q", id)
	}
	d := f.AddDanglingImage()
	list, err := f.Images(ctx)
	if err != nil || len(list) != 2 {
		t.Fatalf("images: %+v %v", list, err)
	}
	for _, im := range list {
		if (im.ID == d) != im.Dangling {
			t.Errorf("image %+v, dangling one %s", im, d)
		}
	}
	fid := f.AddForeign("someones-db", nil)
	if c := f.Container(fid); c.ImageID != enginetest.ImageID(enginetest.Image) {
		t.Fatalf("foreign container's image id %q", c.ImageID)
	}
	if err := f.RemoveImage(ctx, enginetest.Image); !errs.Is(err, errs.Conflict) {
		t.Fatalf("remove of the image a foreign container uses: %v", err)
	}
	f.DeleteImage(enginetest.Image)
	if ok, _ := f.ImageExists(ctx, enginetest.Image); ok {
		t.Fatal("deleted image exists")
	}
	list, _ = f.Images(ctx)
	if len(list) != 2 || !list[0].Dangling || !list[1].Dangling {
		t.Fatalf("an untagged image in use stays, dangling: %+v", list)
	}
	if err := f.RemoveImage(ctx, d); err != nil {
		t.Fatal(err)
	}
	if err := f.RemoveImage(ctx, d); !errs.Is(err, errs.NotFound) {
		t.Fatalf("second remove: %v", err)
	}
	if calls := f.Calls(); len(calls) != 1 || calls[0] != "image remove "+strings.TrimPrefix(d, "sha256:")[:12] {
		t.Fatalf("calls %q", calls)
	}
}
