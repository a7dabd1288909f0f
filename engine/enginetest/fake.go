// Package enginetest is an in-memory engine.Engine for unit tests (Fake) and
// the conformance suite (Run) that holds the fake and the real Docker client
// to the same behaviour, so that the fake cannot drift from Docker's.
//
// The fake keeps containers (by id, with names, labels, states, mounts,
// ports, networks and images), images (by id, with tags and labels) and
// networks in memory. Its errors are of the
// errs kinds engine.Client gives the same situations (NotFound, Conflict,
// Usage, Image, Engine, ...). Tests script it with FailNext, Fail, SetDown,
// OnCreate, OnExec and OnLogs, make images with AddImage, BuildImage and
// AddDanglingImage, and look inside with Spec, Container, IDs, Calls and
// Restart. Every method is safe for concurrent use.
package enginetest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	units "github.com/docker/go-units"

	"github.com/mlc-lab/mlc/engine"
	"github.com/mlc-lab/mlc/errs"
)

// Image is the image a new Fake has, the local test image of the real
// engine's tests (internal/testenv.Image, built from testdata/image).
const Image = "mlc/busybox:latest"

// imageLabels are Image's own labels (testdata/image/Dockerfile): the engine
// gives a container its image's labels under its own.
var imageLabels = map[string]string{"org.opencontainers.image.title": "mlc busybox test image"}

// Host is the engine address the fake names in its "cannot reach" error.
const Host = "unix:///var/run/docker.sock"

// Exit codes the fake gives a container that was stopped or killed (a
// process that dies of SIGTERM, of SIGKILL, behind the container's init).
const (
	ExitStopped = 143
	ExitKilled  = 137
)

// firstEphemeralPort is where the fake starts choosing host ports for
// published ports that name none (Docker takes them from the kernel's
// ephemeral range).
const firstEphemeralPort = 49153

// Fake is an in-memory engine.Engine. The zero value is not usable: use New.
type Fake struct {
	mu       sync.Mutex
	seq      int
	ctrs     map[string]*fakeCtr   // by id
	order    []string              // ids, oldest first
	images   map[string]*fakeImage // present images, by id
	tags     map[string]string     // normalized reference -> image id
	pullable map[string]bool
	nets     map[string]*engine.Network // by name
	netOrder []string
	refuse   int // the next this many network creates with a subnet are refused as overlapping
	secOpts  []string
	calls    []string
	next     map[string][]error // FailNext, by method
	always   map[string]error   // Fail, by method ("*": all)
	down     bool
	port     int
	onCreate func()
	exec     func(ctx context.Context, id string, o engine.ExecOptions) (int, error)
	logs     func(ctx context.Context, id string, o engine.LogOptions) error
}

type fakeCtr struct {
	c        engine.Container // State, Labels; Status and Ports are made when listed
	spec     engine.Spec
	restart  bool          // restart policy unless-stopped (on) or no
	ports    []engine.Port // bound while running (host ports chosen)
	exitCode int           // of the last run
	started  time.Time     // of the last start
	finished time.Time     // of the last stop
	network  string        // name of the network it is configured with
	imageID  string        // of the image it was created from
	pid      int           // SetRuntime's host pid while running
	upper    string        // SetRuntime's upper directory
	size     int64         // SetRuntime's layer size
}

// fakeImage is one image: its tags are the references naming it.
type fakeImage struct {
	id      string
	tags    []string
	labels  map[string]string
	created time.Time
}

var _ engine.Engine = (*Fake)(nil)

// New returns an empty engine that has the image Image, Docker's predefined
// networks (bridge with 172.17.0.0/16, host, none) and the security options
// of an engine without user namespace remapping.
func New() *Fake {
	f := &Fake{
		ctrs:     map[string]*fakeCtr{},
		images:   map[string]*fakeImage{},
		tags:     map[string]string{},
		pullable: map[string]bool{},
		nets:     map[string]*engine.Network{},
		secOpts:  []string{"name=seccomp,profile=default"},
		next:     map[string][]error{},
		always:   map[string]error{},
		port:     firstEphemeralPort,
	}
	for _, n := range []engine.Network{
		{Name: "bridge", Driver: "bridge", Subnets: []string{"172.17.0.0/16"}},
		{Name: "host", Driver: "host"},
		{Name: "none", Driver: "null"},
	} {
		f.addNetwork(n)
	}
	f.addImage(Image, imageLabels)
	return f
}

// ---- scripting ----

// AddForeign adds a running container mlc did not make (no mlc.managed
// label), as another tool on the server would; it returns its id.
func (f *Fake) AddForeign(name string, labels map[string]string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seq++
	id := fmt.Sprintf("%064x", 0xf0000000+f.seq)
	imageID := ImageID(Image)
	if im := f.image(Image); im != nil {
		imageID = im.id
	}
	f.ctrs[id] = &fakeCtr{c: engine.Container{ID: id, Name: name, Image: Image, ImageID: imageID, State: "running",
		Created: time.Now(), Labels: copyMap(labels)}, started: time.Now(), network: "bridge", imageID: imageID}
	f.order = append(f.order, id)
	return id
}

// SetRuntime sets what Runtime and LayerSize say of container id: the host
// pid of its init process while it runs, its upper directory and its layer
// size. It reports whether the container exists.
func (f *Fake) SetRuntime(id string, pid int, upperDir string, size int64) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.ctrs[id]
	if ok {
		c.pid, c.upper, c.size = pid, upperDir, size
	}
	return ok
}

// FailNext makes the next call of method (an engine.Engine method name:
// "Start", "Create", "List", ...) return err instead of doing anything.
// Several calls queue up in order.
func (f *Fake) FailNext(method string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.next[method] = append(f.next[method], err)
}

// Fail makes every call of method ("*": of every method) return err until
// Fail(method, nil).
func (f *Fake) Fail(method string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err == nil {
		delete(f.always, method)
		return
	}
	f.always[method] = err
}

// SetDown makes every call fail as engine.Client's do when dockerd is not
// running: errs.Engine, "cannot reach the Docker engine at ...".
func (f *Fake) SetDown(down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = down
}

// OnCreate sets a function Create calls after the container exists (outside
// the fake's lock, so it may call the fake).
func (f *Fake) OnCreate(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.onCreate = fn
}

// OnExec sets what Exec does in a running container. Without it, Exec writes
// nothing and returns exit code 0.
func (f *Fake) OnExec(fn func(ctx context.Context, id string, o engine.ExecOptions) (int, error)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.exec = fn
}

// OnLogs sets what Logs does for an existing container. Without it, Logs
// writes nothing.
func (f *Fake) OnLogs(fn func(ctx context.Context, id string, o engine.LogOptions) error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.logs = fn
}

// SetSecurityOptions sets what SecurityOptions returns ("name=userns" for
// an engine that remaps user namespaces).
func (f *Fake) SetSecurityOptions(opts ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.secOpts = append([]string(nil), opts...)
}

// AddImage makes refs present, each an image of its own without labels,
// with the id ImageID(ref); a ref already present is left as it is.
func (f *Fake) AddImage(refs ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range refs {
		f.addImage(r, nil)
	}
}

// BuildImage makes a new image, as `docker build` of "FROM Image" with these
// labels would: Image's labels overlaid with labels, a fresh id (returned),
// tagged ref. An image ref named before loses that tag, and is dangling when
// it had no other.
func (f *Fake) BuildImage(ref string, labels map[string]string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seq++
	l := copyMap(imageLabels)
	for k, v := range labels {
		l[k] = v
	}
	im := &fakeImage{id: digest(fmt.Sprintf("enginetest build %d %s", f.seq, ref)), labels: l, created: time.Now()}
	f.images[im.id] = im
	f.tag(im, ref)
	return im.id
}

// AddDanglingImage adds an image without tags (as a rebuild leaves the old
// image behind) and returns its id.
func (f *Fake) AddDanglingImage() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seq++
	im := &fakeImage{id: digest(fmt.Sprintf("enginetest dangling %d", f.seq)), labels: map[string]string{}, created: time.Now()}
	f.images[im.id] = im
	return im.id
}

// DeleteImage makes refs missing, as `docker rmi -f REF` does: the tag goes;
// an image left without tags is deleted, or stays dangling while a
// container uses it.
func (f *Fake) DeleteImage(refs ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range refs {
		im := f.image(r)
		if im == nil {
			continue
		}
		if id, ok := f.tags[normRef(r)]; ok && id == im.id {
			f.untag(im, normRef(r))
		} else {
			for _, t := range im.tags {
				delete(f.tags, t)
			}
			im.tags = nil
		}
		if len(im.tags) == 0 && f.imageUsers(im.id) == 0 {
			delete(f.images, im.id)
		}
	}
}

// ImageID is the id the fake gives the image AddImage, Pull or New make
// for ref: "sha256:" and 64 hex digits derived from the reference.
func ImageID(ref string) string { return digest("enginetest image " + normRef(ref)) }

func digest(s string) string {
	sum := sha256.Sum256([]byte(s))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// normRef is ref as the engine names it: with ":latest" when it has
// neither a tag nor a digest.
func normRef(ref string) string {
	last := ref[strings.LastIndex(ref, "/")+1:]
	if ref == "" || strings.ContainsAny(last, ":@") {
		return ref
	}
	return ref + ":latest"
}

// addImage makes ref present (an image of its own with the id ImageID(ref))
// unless it is.
func (f *Fake) addImage(ref string, labels map[string]string) {
	if f.image(ref) != nil {
		return
	}
	l := copyMap(labels)
	if l == nil {
		l = map[string]string{}
	}
	im := f.images[ImageID(ref)]
	if im == nil {
		im = &fakeImage{id: ImageID(ref), labels: l, created: time.Now()}
		f.images[im.id] = im
	}
	f.tag(im, ref)
}

// tag points ref at im, taking it from the image it named before.
func (f *Fake) tag(im *fakeImage, ref string) {
	ref = normRef(ref)
	if old := f.images[f.tags[ref]]; old != nil && old != im {
		f.untag(old, ref)
	}
	f.tags[ref] = im.id
	if !slices.Contains(im.tags, ref) {
		im.tags = append(im.tags, ref)
	}
}

func (f *Fake) untag(im *fakeImage, ref string) {
	delete(f.tags, ref)
	im.tags = slices.DeleteFunc(im.tags, func(t string) bool { return t == ref })
}

// image resolves a reference (name[:tag]), a full id with or without
// "sha256:", or a unique id prefix, as the engine does; nil when none.
func (f *Fake) image(ref string) *fakeImage {
	if ref == "" {
		return nil
	}
	if id, ok := f.tags[normRef(ref)]; ok {
		return f.images[id]
	}
	if im := f.images[ref]; im != nil {
		return im
	}
	hexID := strings.TrimPrefix(ref, "sha256:")
	if strings.Trim(hexID, "0123456789abcdef") != "" {
		return nil
	}
	var found *fakeImage
	for id, im := range f.images {
		if strings.HasPrefix(strings.TrimPrefix(id, "sha256:"), hexID) {
			if found != nil {
				return nil
			}
			found = im
		}
	}
	return found
}

// imageUsers is the number of containers, in any state, created from
// image id.
func (f *Fake) imageUsers(id string) int {
	n := 0
	for _, c := range f.ctrs {
		if c.imageID == id {
			n++
		}
	}
	return n
}

// AllowPull lets Pull fetch refs (without it a pull fails as it does
// with no registry reachable).
func (f *Fake) AllowPull(refs ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range refs {
		f.pullable[r] = true
	}
}

// AddNetwork adds n as it is (a network mlc did not make, say: no labels,
// another driver); an empty ID is filled in. It replaces a network of the
// same name.
func (f *Fake) AddNetwork(n engine.Network) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.addNetwork(n)
}

// RefuseSubnets makes the next n network creates that ask for a subnet fail
// as overlapping (as when another mlc took the subnet a moment before).
func (f *Fake) RefuseSubnets(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.refuse = n
}

// ---- looking inside ----

// Calls are the changes made so far, in order: "create NAME", "start NAME",
// "stop NAME", "kill NAME", "remove NAME", "restart ID12 true|false",
// "exec NAME", "pull REF", "network create NAME SUBNET", "network remove
// NAME", "image remove ID12", "image untag REF". Reads (List, ImageExists,
// Networks, ...) are not recorded.
func (f *Fake) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

// Spec is the spec container id was created with (the zero Spec if there
// is no such container).
func (f *Fake) Spec(id string) engine.Spec {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c := f.ctrs[id]; c != nil {
		return c.spec
	}
	return engine.Spec{}
}

// Container is container id as List shows it (the zero Container if there
// is none).
func (f *Fake) Container(id string) engine.Container {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c := f.ctrs[id]; c != nil {
		return f.view(c)
	}
	return engine.Container{}
}

// IDs are the ids of all containers, managed or not, oldest first.
func (f *Fake) IDs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.order...)
}

// Len is the number of containers, managed or not.
func (f *Fake) Len() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.order)
}

// Restart is whether container id's restart policy is on (unless-stopped,
// as created) or off (SetRestart false).
func (f *Fake) Restart(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.ctrs[id]
	return c != nil && c.restart
}

// Edit changes container id in place, for tests that need what Docker
// cannot do (change labels after create) or a state reached some other way
// (a container that exited by itself). It reports whether id exists.
func (f *Fake) Edit(id string, fn func(c *engine.Container)) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.ctrs[id]
	if c == nil {
		return false
	}
	was := c.c.State
	fn(&c.c)
	switch {
	case was != "running" && c.c.State == "running":
		c.started = time.Now()
		f.bind(c)
	case was == "running" && c.c.State != "running":
		c.finished = time.Now()
		c.ports = nil
	}
	return true
}

// ---- engine.Engine ----

// enter takes the lock and returns the error scripted for method, if any.
// The caller unlocks.
func (f *Fake) enter(method string) error {
	f.mu.Lock()
	if f.down {
		return errs.New(errs.Engine, "cannot reach the Docker engine at %s: is dockerd running?", Host)
	}
	if q := f.next[method]; len(q) > 0 {
		f.next[method] = q[1:]
		return q[0]
	}
	if err := f.always[method]; err != nil {
		return err
	}
	return f.always["*"]
}

func (f *Fake) log(format string, a ...any) { f.calls = append(f.calls, fmt.Sprintf(format, a...)) }

// find resolves a full id, a name or a unique id prefix, as the engine does.
func (f *Fake) find(ref, what string) (*fakeCtr, error) {
	if c := f.ctrs[ref]; c != nil {
		return c, nil
	}
	name := strings.TrimPrefix(ref, "/")
	for _, id := range f.order {
		if f.ctrs[id].c.Name == name {
			return f.ctrs[id], nil
		}
	}
	var found *fakeCtr
	if ref != "" {
		for _, id := range f.order {
			if strings.HasPrefix(id, ref) {
				if found != nil {
					return nil, errs.New(errs.Usage, "%s: multiple IDs found with provided prefix: %s", what, ref)
				}
				found = f.ctrs[id]
			}
		}
	}
	if found == nil {
		return nil, errs.New(errs.NotFound, "%s: Error response from daemon: No such container: %s", what, ref)
	}
	return found, nil
}

// SecurityOptions implements engine.Engine.
func (f *Fake) SecurityOptions(context.Context) ([]string, error) {
	err := f.enter("SecurityOptions")
	defer f.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return append([]string(nil), f.secOpts...), nil
}

// ImageExists implements engine.Engine.
func (f *Fake) ImageExists(_ context.Context, ref string) (bool, error) {
	err := f.enter("ImageExists")
	defer f.mu.Unlock()
	if err != nil {
		return false, err
	}
	return f.image(ref) != nil, nil
}

// Pull implements engine.Engine: refs allowed by AllowPull become present,
// others fail as with no registry reachable (errs.Image).
func (f *Fake) Pull(_ context.Context, ref string, progress io.Writer) error {
	err := f.enter("Pull")
	defer f.mu.Unlock()
	if err != nil {
		return err
	}
	if !f.pullable[ref] {
		return errs.New(errs.Image, "image %s is not present and cannot be pulled: no registry is reachable", ref)
	}
	f.addImage(ref, nil)
	f.log("pull %s", ref)
	if progress != nil {
		fmt.Fprintf(progress, "Status: Downloaded newer image for %s\n", ref)
	}
	return nil
}

// Create implements engine.Engine. Like the engine it refuses a taken name
// (Conflict), a missing image (NotFound), and a bind mount whose source does
// not exist on this host (Usage). A missing network is refused only by
// Start, as Docker 20.10 does. The container's labels are its image's
// overlaid with the spec's.
func (f *Fake) Create(_ context.Context, s engine.Spec) (string, error) {
	err := f.enter("Create")
	if err != nil {
		f.mu.Unlock()
		return "", err
	}
	id, err := f.create(s)
	hook := f.onCreate
	f.mu.Unlock()
	if err != nil {
		return "", err
	}
	if hook != nil {
		hook()
	}
	return id, nil
}

func (f *Fake) create(s engine.Spec) (string, error) {
	what := "creating " + s.Name
	if s.Name != "" {
		for _, id := range f.order {
			if f.ctrs[id].c.Name == s.Name {
				return "", errs.New(errs.Conflict, "%s: Error response from daemon: Conflict. The container name \"/%s\" is already in use by container \"%s\". You have to remove (or rename) that container to be able to reuse that name.", what, s.Name, id)
			}
		}
	}
	img := f.image(s.Image)
	if img == nil {
		return "", errs.New(errs.NotFound, "%s: Error response from daemon: No such image: %s", what, s.Image)
	}
	network := s.Network
	if network == "" {
		network = "bridge"
	}
	for _, m := range s.Mounts {
		if _, err := os.Stat(m.Source); err != nil {
			return "", errs.New(errs.Usage, "%s: Error response from daemon: invalid mount config for type \"bind\": bind source path does not exist: %s", what, m.Source)
		}
	}
	f.seq++
	sum := sha256.Sum256([]byte(fmt.Sprintf("enginetest container %d", f.seq)))
	id := hex.EncodeToString(sum[:])
	name := s.Name
	if name == "" {
		name = "fake_" + id[:12]
	}
	labels := map[string]string{}
	for k, v := range img.labels {
		labels[k] = v
	}
	for k, v := range s.Labels {
		labels[k] = v
	}
	spec := s
	spec.Labels = copyMap(s.Labels)
	spec.Mounts = append([]engine.Mount(nil), s.Mounts...)
	spec.Ports = append([]engine.Port(nil), s.Ports...)
	c := &fakeCtr{
		c: engine.Container{ID: id, Name: name, Image: s.Image, ImageID: img.id, State: "created",
			Created: time.Now().Truncate(time.Second), Labels: labels},
		spec: spec, restart: true, network: network, imageID: img.id,
	}
	f.ctrs[id] = c
	f.order = append(f.order, id)
	f.log("create %s", name)
	return id, nil
}

func copyMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// Start implements engine.Engine. Starting a running container does nothing
// (the engine answers 304 Not Modified). A published host port another
// running container holds is a Conflict, and the container stays as it was.
func (f *Fake) Start(_ context.Context, id string) error {
	err := f.enter("Start")
	defer f.mu.Unlock()
	if err != nil {
		return err
	}
	c, err := f.find(id, "starting "+short(id))
	if err != nil {
		return err
	}
	if c.c.State == "running" {
		return nil
	}
	if f.network(c.network) == nil {
		return errs.New(errs.NotFound, "starting %s: Error response from daemon: network %s not found", short(c.c.ID), c.network)
	}
	for _, p := range c.spec.Ports {
		if p.HostPort == "" {
			continue
		}
		for _, o := range f.ctrs {
			if o == c || o.c.State != "running" {
				continue
			}
			for _, q := range o.ports {
				if q.HostPort == p.HostPort && q.Proto == p.Proto && (q.HostIP == p.HostIP || q.HostIP == "" || p.HostIP == "" || q.HostIP == "0.0.0.0" || p.HostIP == "0.0.0.0") {
					return errs.New(errs.Conflict, "starting %s: Error response from daemon: driver failed programming external connectivity on endpoint %s: Bind for %s:%s failed: port is already allocated: port already taken",
						short(c.c.ID), c.c.Name, p.HostIP, p.HostPort)
				}
			}
		}
	}
	c.c.State = "running"
	c.started = time.Now()
	c.exitCode = 0
	f.bind(c)
	f.log("start %s", c.c.Name)
	return nil
}

// bind gives a starting container its published ports, choosing host ports
// for those that name none.
func (f *Fake) bind(c *fakeCtr) {
	c.ports = nil
	for _, p := range c.spec.Ports {
		if p.HostPort == "" {
			p.HostPort = strconv.Itoa(f.port)
			f.port++
		}
		if p.Proto == "" {
			p.Proto = "tcp"
		}
		if p.HostIP == "" {
			p.HostIP = "0.0.0.0"
		}
		c.ports = append(c.ports, p)
	}
}

// Stop implements engine.Engine. Stopping a container that is not running
// does nothing (304 Not Modified): a created one stays created.
func (f *Fake) Stop(_ context.Context, id string, _ int) error {
	err := f.enter("Stop")
	defer f.mu.Unlock()
	if err != nil {
		return err
	}
	c, err := f.find(id, "stopping "+short(id))
	if err != nil {
		return err
	}
	if c.c.State != "running" {
		return nil
	}
	f.halt(c, ExitStopped)
	f.log("stop %s", c.c.Name)
	return nil
}

func (f *Fake) halt(c *fakeCtr, code int) {
	c.c.State = "exited"
	c.exitCode = code
	c.finished = time.Now()
	c.ports = nil
}

// Kill implements engine.Engine. Killing a container that is not running is
// a Conflict, as engine.Client reports it.
func (f *Fake) Kill(_ context.Context, id string) error {
	err := f.enter("Kill")
	defer f.mu.Unlock()
	if err != nil {
		return err
	}
	c, err := f.find(id, "killing "+short(id))
	if err != nil {
		return err
	}
	if c.c.State != "running" {
		return errs.New(errs.Conflict, "container is not running")
	}
	f.halt(c, ExitKilled)
	f.log("kill %s", c.c.Name)
	return nil
}

// Remove implements engine.Engine. A running container needs force
// (Conflict without); a missing one is NotFound, with force too.
func (f *Fake) Remove(_ context.Context, id string, force bool) error {
	err := f.enter("Remove")
	defer f.mu.Unlock()
	if err != nil {
		return err
	}
	what := "removing " + short(id)
	c, err := f.find(id, what)
	if err != nil {
		return err
	}
	if c.c.State == "running" && !force {
		return errs.New(errs.Conflict, "%s: Error response from daemon: You cannot remove a running container %s. Stop the container before attempting removal or force remove", what, c.c.ID)
	}
	delete(f.ctrs, c.c.ID)
	for i, o := range f.order {
		if o == c.c.ID {
			f.order = append(f.order[:i:i], f.order[i+1:]...)
			break
		}
	}
	f.log("remove %s", c.c.Name)
	return nil
}

// List implements engine.Engine: containers labelled mlc.managed=true (and
// mlc.user=user when user != ""), newest first, as the engine lists them.
func (f *Fake) List(_ context.Context, user string) ([]engine.Container, error) {
	err := f.enter("List")
	defer f.mu.Unlock()
	if err != nil {
		return nil, err
	}
	out := []engine.Container{}
	for i := len(f.order) - 1; i >= 0; i-- {
		c := f.ctrs[f.order[i]]
		if c.c.Labels[engine.LabelManaged] != "true" || (user != "" && c.c.Labels[engine.LabelUser] != user) {
			continue
		}
		out = append(out, f.view(c))
	}
	return out, nil
}

// ListAll implements engine.Engine: every container, newest first, as List shows it.
func (f *Fake) ListAll(context.Context) ([]engine.Container, error) {
	err := f.enter("ListAll")
	defer f.mu.Unlock()
	if err != nil {
		return nil, err
	}
	out := []engine.Container{}
	for i := len(f.order) - 1; i >= 0; i-- {
		out = append(out, f.view(f.ctrs[f.order[i]]))
	}
	return out, nil
}

// Runtime implements engine.Engine: the pid SetRuntime gave while running
// (one no process has where none was given; 0 when not running), the last
// start and end times and the upper directory.
func (f *Fake) Runtime(_ context.Context, id string) (engine.Runtime, error) {
	err := f.enter("Runtime")
	defer f.mu.Unlock()
	if err != nil {
		return engine.Runtime{}, err
	}
	c, err := f.find(id, "inspecting "+short(id))
	if err != nil {
		return engine.Runtime{}, err
	}
	f.log("runtime %s", c.c.Name)
	rt := engine.Runtime{StartedAt: c.started, FinishedAt: c.finished, UpperDir: c.upper}
	if c.c.State == "running" {
		rt.Pid = c.pid
		if rt.Pid == 0 {
			rt.Pid = 1 << 22 // above pid_max's default: no such process
		}
	}
	return rt, nil
}

// LayerSize implements engine.Engine: the size SetRuntime gave.
func (f *Fake) LayerSize(_ context.Context, id string) (int64, error) {
	err := f.enter("LayerSize")
	defer f.mu.Unlock()
	if err != nil {
		return 0, err
	}
	c, err := f.find(id, "inspecting "+short(id))
	if err != nil {
		return 0, err
	}
	return c.size, nil
}

// view is c as listed: a copy, with the engine's status words, bind mounts,
// and ports while running.
func (f *Fake) view(c *fakeCtr) engine.Container {
	v := c.c
	v.ImageID = c.imageID
	v.Labels = copyMap(c.c.Labels)
	if v.Labels == nil {
		v.Labels = map[string]string{}
	}
	switch v.State {
	case "created":
		v.Status = "Created"
	case "running":
		v.Status = "Up " + units.HumanDuration(time.Since(c.started))
	case "exited":
		v.Status = fmt.Sprintf("Exited (%d) %s ago", c.exitCode, units.HumanDuration(time.Since(c.finished)))
	default:
		v.Status = strings.ToUpper(v.State[:1]) + v.State[1:]
	}
	v.Mounts = nil
	for _, m := range c.spec.Mounts {
		v.Mounts = append(v.Mounts, m)
	}
	sort.Slice(v.Mounts, func(i, j int) bool { return v.Mounts[i].Target < v.Mounts[j].Target })
	v.Ports = nil
	if v.State == "running" {
		v.Ports = append(v.Ports, c.ports...)
	}
	return v
}

// Exec implements engine.Engine: NotFound for a missing container, Conflict
// for one that is not running; otherwise what OnExec set (exit code 0).
func (f *Fake) Exec(ctx context.Context, id string, o engine.ExecOptions) (int, error) {
	err := f.enter("Exec")
	if err != nil {
		f.mu.Unlock()
		return -1, err
	}
	c, err := f.find(id, "exec in "+short(id))
	if err == nil && c.c.State != "running" {
		err = errs.New(errs.Conflict, "exec in %s: Error response from daemon: Container %s is not running", short(id), c.c.ID)
	}
	if err != nil {
		f.mu.Unlock()
		return -1, err
	}
	f.log("exec %s", c.c.Name)
	fn, cid := f.exec, c.c.ID
	f.mu.Unlock()
	if fn == nil {
		return 0, nil
	}
	return fn(ctx, cid, o)
}

// Logs implements engine.Engine: NotFound for a missing container; otherwise
// what OnLogs set (nothing).
func (f *Fake) Logs(ctx context.Context, id string, o engine.LogOptions) error {
	err := f.enter("Logs")
	if err != nil {
		f.mu.Unlock()
		return err
	}
	c, err := f.find(id, "logs of "+short(id))
	fn := f.logs
	f.mu.Unlock()
	if err != nil || fn == nil {
		return err
	}
	return fn(ctx, c.c.ID, o)
}

// SetRestart implements engine.Engine.
func (f *Fake) SetRestart(_ context.Context, id string, on bool) error {
	err := f.enter("SetRestart")
	defer f.mu.Unlock()
	if err != nil {
		return err
	}
	c, err := f.find(id, "restart policy of "+short(id))
	if err != nil {
		return err
	}
	c.restart = on
	f.log("restart %s %v", c.c.ID[:12], on)
	return nil
}

// ---- images ----

// Images implements engine.Engine: every image, newest first, its tags
// sorted; dangling when it has none.
func (f *Fake) Images(context.Context) ([]engine.Image, error) {
	err := f.enter("Images")
	defer f.mu.Unlock()
	if err != nil {
		return nil, err
	}
	out := []engine.Image{}
	for _, im := range f.images {
		labels := copyMap(im.labels)
		if labels == nil {
			labels = map[string]string{}
		}
		tags := slices.Sorted(slices.Values(im.tags))
		out = append(out, engine.Image{ID: im.id, Tags: tags, Created: im.created, Dangling: len(tags) == 0, Labels: labels})
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Created.Equal(out[j].Created) {
			return out[i].Created.After(out[j].Created)
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

// RemoveImage implements engine.Engine as the engine does without force:
// NotFound when missing; Conflict when a container in any state uses it, or
// when it is named by id and has several tags; a tag of an image with
// several is only untagged.
func (f *Fake) RemoveImage(_ context.Context, id string) error {
	err := f.enter("RemoveImage")
	defer f.mu.Unlock()
	if err != nil {
		return err
	}
	what := "removing image " + shortImage(id)
	im := f.image(id)
	if im == nil {
		return errs.New(errs.NotFound, "%s: Error response from daemon: No such image: %s", what, id)
	}
	if tid, ok := f.tags[normRef(id)]; ok && tid == im.id && len(im.tags) > 1 {
		f.untag(im, normRef(id))
		f.log("image untag %s", normRef(id))
		return nil
	}
	if len(im.tags) > 1 {
		return errs.New(errs.Conflict, "%s: Error response from daemon: conflict: unable to delete %s (must be forced) - image is referenced in multiple repositories", what, shortImage(im.id))
	}
	for _, cid := range f.order {
		if c := f.ctrs[cid]; c.imageID == im.id {
			how := "must be forced) - image is being used by stopped"
			if c.c.State == "running" {
				how = "cannot be forced) - image is being used by running"
			}
			return errs.New(errs.Conflict, "%s: Error response from daemon: conflict: unable to delete %s (%s container %s", what, shortImage(im.id), how, short(c.c.ID))
		}
	}
	for _, t := range im.tags {
		delete(f.tags, t)
	}
	delete(f.images, im.id)
	f.log("image remove %s", shortImage(im.id))
	return nil
}

// ImageIDOf implements engine.Engine.
func (f *Fake) ImageIDOf(_ context.Context, ref string) (string, error) {
	err := f.enter("ImageIDOf")
	defer f.mu.Unlock()
	if err != nil {
		return "", err
	}
	im := f.image(ref)
	if im == nil {
		return "", errs.New(errs.NotFound, "image %s: Error response from daemon: No such image: %s", ref, ref)
	}
	return im.id, nil
}

func shortImage(id string) string {
	if h, ok := strings.CutPrefix(id, "sha256:"); ok && len(h) > 12 {
		return h[:12]
	}
	return id
}

// ---- networks ----

func (f *Fake) addNetwork(n engine.Network) {
	if n.ID == "" {
		f.seq++
		sum := sha256.Sum256([]byte(fmt.Sprintf("enginetest network %d", f.seq)))
		n.ID = hex.EncodeToString(sum[:])
	}
	if n.Created.IsZero() {
		n.Created = time.Now()
	}
	n.Labels = copyMap(n.Labels)
	n.Subnets = append([]string(nil), n.Subnets...)
	if _, ok := f.nets[n.Name]; !ok {
		f.netOrder = append(f.netOrder, n.Name)
	}
	f.nets[n.Name] = &n
}

// network finds a network by name, id or unique id prefix.
func (f *Fake) network(ref string) *engine.Network {
	if n := f.nets[ref]; n != nil {
		return n
	}
	var found *engine.Network
	for _, n := range f.nets {
		if n.ID == ref {
			return n
		}
		if ref != "" && strings.HasPrefix(n.ID, ref) {
			if found != nil {
				return nil
			}
			found = n
		}
	}
	return found
}

// defaultPools are the subnets Docker's default address pools hand out, in
// order: 172.17-31.0.0/16, then 192.168.0.0/20 in /20s.
func defaultPools() []netip.Prefix {
	var out []netip.Prefix
	for b := 17; b <= 31; b++ {
		out = append(out, netip.PrefixFrom(netip.AddrFrom4([4]byte{172, byte(b), 0, 0}), 16))
	}
	for c := 0; c < 256; c += 16 {
		out = append(out, netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 168, byte(c), 0}), 20))
	}
	return out
}

func (f *Fake) overlapping(p netip.Prefix) bool {
	for _, n := range f.nets {
		for _, s := range n.Subnets {
			if q, err := netip.ParsePrefix(s); err == nil && q.Overlaps(p) {
				return true
			}
		}
	}
	return false
}

// EnsureNetwork implements engine.Engine as engine.Client documents it: an
// existing network is adopted only when mlc made it (mlc.managed=true, bridge
// driver), else Conflict; a new one gets s.Subnet, or without one the next
// free subnet of Docker's default pools (Unavailable when they are used up);
// a subnet overlapping another network's is Conflict wrapping
// engine.ErrSubnetTaken. A spec without mlc.managed=true makes a network and
// then refuses it as not mlc's, as engine.Client does.
func (f *Fake) EnsureNetwork(_ context.Context, s engine.NetworkSpec) (string, error) {
	err := f.enter("EnsureNetwork")
	defer f.mu.Unlock()
	if err != nil {
		return "", err
	}
	if n := f.nets[s.Name]; n != nil {
		if !n.Managed() || n.Driver != "bridge" {
			return "", errs.New(errs.Conflict, "network %s exists but mlc did not create it (driver %s, no %s=true label): an admin must remove or rename it", s.Name, n.Driver, engine.LabelManaged)
		}
		return n.ID, nil
	}
	subnet := s.Subnet
	if subnet != "" {
		p, err := netip.ParsePrefix(subnet)
		if err != nil || !p.Addr().Is4() {
			return "", errs.New(errs.Usage, "creating network %s: Error response from daemon: invalid subnet %s", s.Name, subnet)
		}
		if f.refuse > 0 || f.overlapping(p) {
			if f.refuse > 0 {
				f.refuse--
			}
			return "", errs.Wrap(errs.Conflict, engine.ErrSubnetTaken, "network %s: subnet %s: Error response from daemon: Pool overlaps with other one on this address space", s.Name, subnet)
		}
	} else {
		for _, p := range defaultPools() {
			if !f.overlapping(p) {
				subnet = p.String()
				break
			}
		}
		if subnet == "" {
			return "", errs.New(errs.Unavailable, "network %s: Docker's default address pools are used up (they hold about 30 networks): an admin must set policies.network_pool in resource-limits.yaml", s.Name)
		}
	}
	f.addNetwork(engine.Network{Name: s.Name, Driver: "bridge", Labels: s.Labels, Subnets: []string{subnet}})
	n := f.nets[s.Name]
	if n.Labels == nil {
		n.Labels = map[string]string{}
	}
	f.log("network create %s %s", s.Name, s.Subnet)
	if !n.Managed() {
		// engine.Client looks again after creating, and finds a network
		// mlc did not make (its spec had no mlc.managed label).
		return "", errs.New(errs.Conflict, "network %s exists but mlc did not create it (driver %s, no %s=true label): an admin must remove or rename it", s.Name, n.Driver, engine.LabelManaged)
	}
	return n.ID, nil
}

// Networks implements engine.Engine: every network, oldest first.
func (f *Fake) Networks(context.Context) ([]engine.Network, error) {
	err := f.enter("Networks")
	defer f.mu.Unlock()
	if err != nil {
		return nil, err
	}
	out := []engine.Network{}
	for _, name := range f.netOrder {
		if n := f.nets[name]; n != nil {
			c := *n
			c.Labels = copyMap(n.Labels)
			if c.Labels == nil {
				c.Labels = map[string]string{}
			}
			c.Subnets = append([]string(nil), n.Subnets...)
			out = append(out, c)
		}
	}
	return out, nil
}

// RemoveNetwork implements engine.Engine: NotFound when missing, Conflict
// when mlc did not make it or any container, in any state, is configured
// with it.
func (f *Fake) RemoveNetwork(_ context.Context, name string) error {
	err := f.enter("RemoveNetwork")
	defer f.mu.Unlock()
	if err != nil {
		return err
	}
	n := f.network(name)
	if n == nil {
		return errs.New(errs.NotFound, "network %s: Error response from daemon: network %s not found", name, name)
	}
	if !n.Managed() {
		return errs.New(errs.Conflict, "network %s was not created by mlc: left alone", name)
	}
	users := 0
	for _, c := range f.ctrs {
		if c.network == n.Name || c.network == n.ID {
			users++
		}
	}
	if users > 0 {
		return errs.New(errs.Conflict, "network %s is in use by %d container(s)", name, users)
	}
	delete(f.nets, n.Name)
	for i, o := range f.netOrder {
		if o == n.Name {
			f.netOrder = append(f.netOrder[:i:i], f.netOrder[i+1:]...)
			break
		}
	}
	f.log("network remove %s", n.Name)
	return nil
}

func short(id string) string {
	if len(id) > 12 && !strings.Contains(id, "-") {
		return id[:12]
	}
	return id
}
