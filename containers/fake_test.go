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
	secOpts  []string // SecurityOptions
	onCreate func()   // called inside Create, after the container exists
}

func (f *fakeEngine) SecurityOptions(context.Context) ([]string, error) { return f.secOpts, nil }

func (f *fakeEngine) SetRestart(_ context.Context, id string, on bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.log("restart %s %v", id[:12], on)
	return nil
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
	f.byID[id] = &engine.Container{ID: id, Name: s.Name, Image: s.Image, State: "created", Labels: s.Labels, Created: time.Now(), Mounts: s.Mounts}
	f.specs[id] = s
	f.log("create %s", s.Name)
	if f.onCreate != nil {
		f.onCreate()
	}
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

func (f *fakeEngine) firstID() string {
	for id := range f.byID {
		return id
	}
	return ""
}

// Networks of the fake engine. They live beside the fake (keyed by it) so
// that the fake's struct stays as it is.
type fakeNet struct{ engine.Network }

type fakeNetState struct {
	mu       sync.Mutex
	nets     map[string]*fakeNet // by name
	n        int
	overlaps int // the next this many creates with a subnet are refused as overlapping
}

var fakeNetworks sync.Map // *fakeEngine -> *fakeNetState

func (f *fakeEngine) netState() *fakeNetState {
	s, _ := fakeNetworks.LoadOrStore(f, &fakeNetState{nets: map[string]*fakeNet{}})
	return s.(*fakeNetState)
}

func (f *fakeEngine) EnsureNetwork(_ context.Context, s engine.NetworkSpec) (string, error) {
	st := f.netState()
	st.mu.Lock()
	defer st.mu.Unlock()
	if n, ok := st.nets[s.Name]; ok {
		if !n.Managed() || n.Driver != "bridge" {
			return "", errs.New(errs.Conflict, "network %s exists but mlc did not create it", s.Name)
		}
		return n.ID, nil
	}
	if s.Subnet != "" {
		if st.overlaps > 0 {
			st.overlaps--
			return "", errs.Wrap(errs.Conflict, engine.ErrSubnetTaken, "network %s: subnet %s", s.Name, s.Subnet)
		}
		for _, n := range st.nets {
			for _, sub := range n.Subnets {
				if sub == s.Subnet {
					return "", errs.Wrap(errs.Conflict, engine.ErrSubnetTaken, "network %s: subnet %s", s.Name, s.Subnet)
				}
			}
		}
	}
	st.n++
	n := &fakeNet{Network: engine.Network{ID: fmt.Sprintf("net%061d", st.n), Name: s.Name, Driver: "bridge", Labels: s.Labels}}
	if s.Subnet != "" {
		n.Subnets = []string{s.Subnet}
	}
	st.nets[s.Name] = n
	f.mu.Lock()
	f.log("network create %s %s", s.Name, s.Subnet)
	f.mu.Unlock()
	return n.ID, nil
}

func (f *fakeEngine) Networks(context.Context) ([]engine.Network, error) {
	st := f.netState()
	st.mu.Lock()
	defer st.mu.Unlock()
	var out []engine.Network
	for _, n := range st.nets {
		out = append(out, n.Network)
	}
	return out, nil
}

func (f *fakeEngine) RemoveNetwork(_ context.Context, name string) error {
	st := f.netState()
	st.mu.Lock()
	defer st.mu.Unlock()
	n, ok := st.nets[name]
	if !ok {
		return errs.New(errs.NotFound, "network %s not found", name)
	}
	if !n.Managed() {
		return errs.New(errs.Conflict, "network %s was not created by mlc: left alone", name)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for id := range f.byID {
		if f.specs[id].Network == name {
			return errs.New(errs.Conflict, "network %s is in use", name)
		}
	}
	delete(st.nets, name)
	f.log("network remove %s", name)
	return nil
}
