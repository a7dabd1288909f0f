package containers

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/mlc-lab/mlc/engine"
	"github.com/mlc-lab/mlc/errs"
)

// fakeEngine is an in-memory engine.Engine.
type fakeEngine struct {
	mu       sync.Mutex
	byID     map[string]*engine.Container
	specs    map[string]engine.Spec
	images   map[string]bool
	n        int
	startErr error // returned by the next Start
	calls    []string
}

func newFake() *fakeEngine {
	return &fakeEngine{byID: map[string]*engine.Container{}, specs: map[string]engine.Spec{}, images: map[string]bool{"mlc/busybox:latest": true}}
}

func (f *fakeEngine) log(s string, a ...any) { f.calls = append(f.calls, fmt.Sprintf(s, a...)) }

func (f *fakeEngine) ImageExists(_ context.Context, ref string) (bool, error) {
	return f.images[ref], nil
}
func (f *fakeEngine) Pull(_ context.Context, ref string, _ io.Writer) error {
	return errs.New(errs.Image, "image %s is not present and cannot be pulled: no registry", ref)
}
func (f *fakeEngine) Create(_ context.Context, s engine.Spec) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.byID {
		if c.Name == s.Name {
			return "", errs.New(errs.Conflict, "name in use")
		}
	}
	f.n++
	id := fmt.Sprintf("%064d", f.n)
	f.byID[id] = &engine.Container{ID: id, Name: s.Name, Image: s.Image, State: "created", Labels: s.Labels, Created: time.Now()}
	f.specs[id] = s
	f.log("create %s", s.Name)
	return id, nil
}
func (f *fakeEngine) get(id string) (*engine.Container, error) {
	c, ok := f.byID[id]
	if !ok {
		return nil, errs.New(errs.NotFound, "no such container")
	}
	return c, nil
}
func (f *fakeEngine) Start(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.get(id)
	if err != nil {
		return err
	}
	if f.startErr != nil {
		err, f.startErr = f.startErr, nil
		return err
	}
	c.State = "running"
	f.log("start %s", c.Name)
	return nil
}
func (f *fakeEngine) Stop(_ context.Context, id string, _ int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.get(id)
	if err == nil {
		c.State = "exited"
		f.log("stop %s", c.Name)
	}
	return err
}
func (f *fakeEngine) Kill(ctx context.Context, id string) error { return f.Stop(ctx, id, 0) }
func (f *fakeEngine) Remove(_ context.Context, id string, force bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.get(id)
	if err != nil {
		return err
	}
	if c.State == "running" && !force {
		return errs.New(errs.Conflict, "running")
	}
	delete(f.byID, id)
	f.log("remove %s", c.Name)
	return nil
}
func (f *fakeEngine) List(_ context.Context, user string) ([]engine.Container, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []engine.Container
	for _, c := range f.byID {
		if user == "" || c.Labels[engine.LabelUser] == user {
			out = append(out, *c)
		}
	}
	return out, nil
}
func (f *fakeEngine) Exec(context.Context, string, engine.ExecOptions) (int, error) { return 0, nil }
func (f *fakeEngine) Logs(context.Context, string, engine.LogOptions) error         { return nil }
