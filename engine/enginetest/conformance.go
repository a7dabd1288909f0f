package enginetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mlc-lab/mlc/engine"
	"github.com/mlc-lab/mlc/errs"
)

// Label is on every container and network the conformance suite makes, with
// the run's id as its value, so that a real engine's leftovers (a crashed
// run; the network mlc did not make, which RemoveNetwork refuses) can be
// swept by label.
const Label = "mlc.test.conformance"

// Subnets the suite asks for: 10.231.3.0/24 (the engine package's network
// tests use 10.231.2.0/24, the containers package's 10.231.0.0/23).
const (
	confSubnet      = "10.231.3.0/26"
	confSubnetInner = "10.231.3.0/27" // overlaps confSubnet
)

// Run is the conformance suite: what mlc relies on an engine.Engine to do,
// written once and run against the Docker client (engine's tests) and the
// Fake (this package's), so the fake cannot drift from Docker's behaviour.
// newEngine gives each subtest its engine (it may return the same one every
// time). The suite uses the image Image and short-lived containers (`sleep
// 300`), never connects to a container, labels everything it makes with
// Label, and removes what it can through the engine itself when each subtest
// ends. The cases that need an image of their own are skipped: RunWith gives
// the suite a way to build one.
func Run(t *testing.T, newEngine func(t *testing.T) engine.Engine) {
	RunWith(t, newEngine, Options{})
}

// Options give the suite what engine.Engine cannot do.
type Options struct {
	// BuildImage makes a new image on eng tagged ref, as `docker build` of
	// "FROM Image" with these labels would: a fresh id, Image's labels
	// overlaid with labels. An image ref named before keeps its id and
	// loses the tag (dangling when it had no other). labels always hold
	// Label, for sweeping. Nil skips the cases that need it.
	BuildImage func(t *testing.T, eng engine.Engine, ref string, labels map[string]string)
}

// RunWith is Run with Options.
func RunWith(t *testing.T, newEngine func(t *testing.T) engine.Engine, o Options) {
	for _, c := range []struct {
		name string
		fn   func(*suite)
	}{
		{"CreateAndList", testCreateAndList},
		{"CreateRefusals", testCreateRefusals},
		{"Lifecycle", testLifecycle},
		{"NotRunning", testNotRunning},
		{"Missing", testMissing},
		{"Mounts", testMounts},
		{"Ports", testPorts},
		{"PortTaken", testPortTaken},
		{"Images", testImages},
		{"ImageList", testImageList},
		{"ContainerImageID", testContainerImageID},
		{"RemoveImage", testRemoveImage},
		{"Networks", testNetworks},
		{"NetworkInUse", testNetworkInUse},
		{"NetworkNotOurs", testNetworkNotOurs},
		{"NetworkDefaultPool", testNetworkDefaultPool},
		{"SetRestart", testSetRestart},
		{"SecurityOptions", testSecurityOptions},
		{"ListAllAndRuntime", testListAllAndRuntime},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newSuite(t, newEngine(t))
			s.opts = o
			c.fn(s)
		})
	}
}

type suite struct {
	*testing.T
	eng  engine.Engine
	ctx  context.Context
	run  string // unique to this subtest
	user string // the mlc.user of its managed containers
	n    int
	ids  []string
	nets []string
	imgs []string // ids of images it built
	opts Options
}

func newSuite(t *testing.T, eng engine.Engine) *suite {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	run := hex.EncodeToString(b)
	s := &suite{T: t, eng: eng, ctx: ctx, run: run, user: "conformance-" + run}
	t.Cleanup(func() {
		cancel()
		bg, done := context.WithTimeout(context.Background(), time.Minute)
		defer done()
		for _, id := range s.ids {
			_ = eng.Remove(bg, id, true)
		}
		for _, n := range s.nets {
			_ = eng.RemoveNetwork(bg, n)
		}
		for _, id := range s.imgs {
			_ = eng.RemoveImage(bg, id)
		}
	})
	return s
}

// name is a fresh container name.
func (s *suite) name() string {
	s.n++
	return fmt.Sprintf("mlc-conf-%s-%d", s.run, s.n)
}

// netName is a fresh network name that fits a Linux interface name.
func (s *suite) netName() string {
	s.n++
	return fmt.Sprintf("mlcc-%s-%d", s.run, s.n)
}

// spec is a managed container of the suite's user running `sleep 300`.
func (s *suite) spec() engine.Spec {
	name := s.name()
	return engine.Spec{
		Name:  name,
		Image: Image,
		Labels: map[string]string{
			engine.LabelManaged: "true", engine.LabelUser: s.user, engine.LabelName: strings.TrimPrefix(name, "mlc-conf-"),
			Label: s.run,
		},
		Cmd: []string{"sleep", "300"},
	}
}

func (s *suite) create(sp engine.Spec) string {
	s.Helper()
	id, err := s.eng.Create(s.ctx, sp)
	if err != nil {
		s.Fatalf("create %s: %v", sp.Name, err)
	}
	s.ids = append(s.ids, id)
	if len(id) != 64 {
		s.Errorf("create %s: id %q is not 64 hex digits", sp.Name, id)
	}
	return id
}

func (s *suite) ensure(ns engine.NetworkSpec) (string, error) {
	s.nets = append(s.nets, ns.Name)
	return s.eng.EnsureNetwork(s.ctx, ns)
}

func (s *suite) netSpec(subnet string) engine.NetworkSpec {
	return engine.NetworkSpec{Name: s.netName(), Subnet: subnet,
		Labels: map[string]string{engine.LabelManaged: "true", engine.LabelUser: s.user, Label: s.run}}
}

// get is container id as List(s.user) shows it.
func (s *suite) get(id string) engine.Container {
	s.Helper()
	list, err := s.eng.List(s.ctx, s.user)
	if err != nil {
		s.Fatalf("list: %v", err)
	}
	for _, c := range list {
		if c.ID == id {
			return c
		}
	}
	s.Fatalf("container %s is not listed for %s", id[:12], s.user)
	return engine.Container{}
}

// state checks the state of container id, and that its status words begin
// with statusPrefix.
func (s *suite) state(id, want, statusPrefix string) engine.Container {
	s.Helper()
	c := s.get(id)
	if c.State != want || !strings.HasPrefix(c.Status, statusPrefix) {
		s.Fatalf("container %s: state %q, status %q; want %q, %q...", c.Name, c.State, c.Status, want, statusPrefix)
	}
	return c
}

// is checks that err is of kind k.
func (s *suite) is(err error, k errs.Kind, what string) {
	s.Helper()
	if err == nil {
		s.Fatalf("%s: no error, want %s", what, k)
	}
	if !errs.Is(err, k) {
		s.Fatalf("%s: %v (kind %s), want %s", what, err, errs.KindOf(err), k)
	}
}

func (s *suite) ok(err error, what string) {
	s.Helper()
	if err != nil {
		s.Fatalf("%s: %v", what, err)
	}
}

// Create and List: labels round-trip exactly, the listing is filtered by
// mlc.managed and mlc.user, a fresh container is created.
func testCreateAndList(s *suite) {
	a := s.spec()
	a.Labels["mlc.test.value"] = "a=b,c d"
	a.Labels[engine.LabelGPUs] = ""
	ida := s.create(a)
	other := s.spec()
	other.Labels[engine.LabelUser] = s.user + "-other"
	idb := s.create(other)
	unmanaged := s.spec()
	unmanaged.Labels = map[string]string{Label: s.run, engine.LabelUser: s.user}
	idc := s.create(unmanaged)

	list, err := s.eng.List(s.ctx, s.user)
	s.ok(err, "list")
	if len(list) != 1 || list[0].ID != ida {
		s.Fatalf("list of %s: %+v, want only %s", s.user, list, a.Name)
	}
	c := list[0]
	if c.Name != a.Name || c.Image != Image || c.State != "created" || c.Status != "Created" {
		s.Errorf("listed %+v", c)
	}
	// The engine adds the image's labels; never an mlc.* one.
	for k, v := range c.Labels {
		if want, ok := a.Labels[k]; ok && v != want || !ok && strings.HasPrefix(k, "mlc.") {
			s.Errorf("label %s=%q; the spec's labels are %v", k, v, a.Labels)
		}
	}
	for k, v := range a.Labels {
		if got, ok := c.Labels[k]; !ok || got != v {
			s.Errorf("label %s=%q did not round-trip: %v", k, v, c.Labels)
		}
	}
	if !c.Managed() {
		s.Error("not Managed()")
	}
	if d := time.Since(c.Created); d < -2*time.Second || d > time.Minute {
		s.Errorf("created %v (%v ago)", c.Created, d)
	}
	if len(c.Mounts) != 0 || len(c.Ports) != 0 {
		s.Errorf("mounts %+v, ports %+v", c.Mounts, c.Ports)
	}
	all, err := s.eng.List(s.ctx, "")
	s.ok(err, "list all")
	seen := map[string]bool{}
	for _, c := range all {
		seen[c.ID] = true
		if !c.Managed() {
			s.Errorf("list all: %s is not managed", c.Name)
		}
	}
	if !seen[ida] || !seen[idb] || seen[idc] {
		s.Errorf("list all: managed %v %v, unmanaged %v; want true true false", seen[ida], seen[idb], seen[idc])
	}
	none, err := s.eng.List(s.ctx, s.user+"-nobody")
	if err != nil || len(none) != 0 {
		s.Errorf("list of a user with no containers: %+v %v", none, err)
	}
}

// Create refuses a taken name and a missing image; a missing network is
// refused at create (newer engines) or at start (20.10), as not found.
func testCreateRefusals(s *suite) {
	a := s.spec()
	s.create(a)
	dup := s.spec()
	dup.Name = a.Name
	_, err := s.eng.Create(s.ctx, dup)
	s.is(err, errs.Conflict, "create with a taken name")

	img := s.spec()
	img.Image = "mlc/conformance-missing:0"
	id, err := s.eng.Create(s.ctx, img)
	if id != "" {
		s.ids = append(s.ids, id)
	}
	s.is(err, errs.NotFound, "create from a missing image")

	net := s.spec()
	net.Network = s.netName()
	id, err = s.eng.Create(s.ctx, net)
	if err == nil {
		s.ids = append(s.ids, id)
		err = s.eng.Start(s.ctx, id)
		s.is(err, errs.NotFound, "start on a missing network")
		s.state(id, "created", "Created")
		return
	}
	s.is(err, errs.NotFound, "create on a missing network")
}

// Start, stop, kill and remove: the states they lead to and their refusals.
func testLifecycle(s *suite) {
	sp := s.spec()
	id := s.create(sp)
	s.ok(s.eng.Start(s.ctx, id), "start")
	s.state(id, "running", "Up ")
	s.ok(s.eng.Start(s.ctx, id), "start of a running container (Docker: 304 Not Modified)")
	s.state(id, "running", "Up ")
	s.is(s.eng.Remove(s.ctx, id, false), errs.Conflict, "remove of a running container without force")

	s.ok(s.eng.Stop(s.ctx, id, 5), "stop")
	s.state(id, "exited", fmt.Sprintf("Exited (%d) ", ExitStopped))
	s.ok(s.eng.Stop(s.ctx, id, 5), "stop of a stopped container (Docker: 304 Not Modified)")
	s.state(id, "exited", "Exited (")
	s.is(s.eng.Kill(s.ctx, id), errs.Conflict, "kill of a stopped container")

	s.ok(s.eng.Start(s.ctx, sp.Name), "start by name")
	s.state(id, "running", "Up ")
	var out strings.Builder
	code, err := s.eng.Exec(s.ctx, id, engine.ExecOptions{Cmd: []string{"true"}, Stdout: &out, Stderr: &out})
	if err != nil || code != 0 {
		s.Fatalf("exec true: %d %v %q", code, err, out.String())
	}
	s.ok(s.eng.Kill(s.ctx, id), "kill")
	s.state(id, "exited", fmt.Sprintf("Exited (%d) ", ExitKilled))
	s.ok(s.eng.Remove(s.ctx, id, false), "remove of a stopped container")
	s.is(s.eng.Remove(s.ctx, id, false), errs.NotFound, "second remove")

	// Force removes a running container.
	id2 := s.create(s.spec())
	s.ok(s.eng.Start(s.ctx, id2), "start")
	s.ok(s.eng.Remove(s.ctx, id2, true), "forced remove of a running container")
	list, err := s.eng.List(s.ctx, s.user)
	if err != nil || len(list) != 0 {
		s.Fatalf("after removing both: %+v %v", list, err)
	}
}

// A created container that never ran: stop does nothing, kill and exec are
// refused, logs are empty.
func testNotRunning(s *suite) {
	id := s.create(s.spec())
	s.ok(s.eng.Stop(s.ctx, id, 1), "stop of a created container")
	s.state(id, "created", "Created")
	s.is(s.eng.Kill(s.ctx, id), errs.Conflict, "kill of a created container")
	_, err := s.eng.Exec(s.ctx, id, engine.ExecOptions{Cmd: []string{"true"}, Stdout: &strings.Builder{}, Stderr: &strings.Builder{}})
	s.is(err, errs.Conflict, "exec in a created container")
	var out strings.Builder
	s.ok(s.eng.Logs(s.ctx, id, engine.LogOptions{Tail: "all", Stdout: &out, Stderr: &out, TTY: true}), "logs of a created container")
	if out.Len() != 0 {
		s.Errorf("logs of a created container: %q", out.String())
	}
	s.ok(s.eng.Remove(s.ctx, id, false), "remove of a created container")
}

// Every call on a container that does not exist is NotFound.
func testMissing(s *suite) {
	id := s.create(s.spec())
	s.ok(s.eng.Remove(s.ctx, id, false), "remove")
	for what, err := range map[string]error{
		"start":         s.eng.Start(s.ctx, id),
		"stop":          s.eng.Stop(s.ctx, id, 1),
		"kill":          s.eng.Kill(s.ctx, id),
		"remove":        s.eng.Remove(s.ctx, id, false),
		"forced remove": s.eng.Remove(s.ctx, id, true),
		"set restart":   s.eng.SetRestart(s.ctx, id, false),
		"logs":          s.eng.Logs(s.ctx, id, engine.LogOptions{Tail: "all", Stdout: &strings.Builder{}, Stderr: &strings.Builder{}}),
	} {
		s.Run(what, func(t *testing.T) {
			if !errs.Is(err, errs.NotFound) {
				t.Errorf("%s of a missing container: %v (kind %s), want not-found", what, err, errs.KindOf(err))
			}
		})
	}
	_, err := s.eng.Exec(s.ctx, id, engine.ExecOptions{Cmd: []string{"true"}, Stdout: &strings.Builder{}, Stderr: &strings.Builder{}})
	s.is(err, errs.NotFound, "exec in a missing container")
}

// Bind mounts are listed with source, target and read-only, in any state;
// a missing source is refused.
func testMounts(s *suite) {
	ws, data := s.TempDir(), s.TempDir()
	sp := s.spec()
	sp.Mounts = []engine.Mount{{Source: ws, Target: "/workspace"}, {Source: data, Target: "/data", ReadOnly: true}}
	id := s.create(sp)
	want := []engine.Mount{{Source: data, Target: "/data", ReadOnly: true}, {Source: ws, Target: "/workspace"}}
	check := func(when string) {
		s.Helper()
		got := s.get(id).Mounts
		sort.Slice(got, func(i, j int) bool { return got[i].Target < got[j].Target })
		if fmt.Sprint(got) != fmt.Sprint(want) {
			s.Errorf("mounts %s: %+v, want %+v", when, got, want)
		}
	}
	check("when created")
	s.ok(s.eng.Start(s.ctx, id), "start")
	check("when running")
	s.ok(s.eng.Stop(s.ctx, id, 5), "stop")
	check("when stopped")

	bad := s.spec()
	bad.Mounts = []engine.Mount{{Source: ws + "/missing", Target: "/workspace"}}
	nid, err := s.eng.Create(s.ctx, bad)
	if nid != "" {
		s.ids = append(s.ids, nid)
	}
	s.is(err, errs.Usage, "create with a missing bind source")
}

// freePort is a TCP port on 127.0.0.1 free a moment ago.
func (s *suite) freePort() string {
	s.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		s.Fatal(err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

// Published ports are listed while the container runs, with the host port
// the engine chose where the spec named none.
func testPorts(s *suite) {
	p := s.freePort()
	sp := s.spec()
	sp.Ports = []engine.Port{{HostIP: "127.0.0.1", HostPort: p, ContainerPort: "80", Proto: "tcp"},
		{HostIP: "127.0.0.1", ContainerPort: "81", Proto: "tcp"}}
	id := s.create(sp)
	if c := s.get(id); len(c.Ports) != 0 {
		s.Errorf("ports of a created container: %+v", c.Ports)
	}
	s.ok(s.eng.Start(s.ctx, id), "start")
	got := s.get(id).Ports
	sort.Slice(got, func(i, j int) bool { return got[i].ContainerPort < got[j].ContainerPort })
	if len(got) != 2 || got[0] != sp.Ports[0] {
		s.Fatalf("ports when running: %+v, want %+v and 81 on a chosen port", got, sp.Ports[0])
	}
	if q := got[1]; q.HostIP != "127.0.0.1" || q.ContainerPort != "81" || q.Proto != "tcp" || q.HostPort == "" || q.HostPort == "0" {
		s.Errorf("chosen port: %+v", q)
	}
	s.ok(s.eng.Stop(s.ctx, id, 5), "stop")
	if c := s.get(id); len(c.Ports) != 0 {
		s.Errorf("ports of a stopped container: %+v", c.Ports)
	}
}

// A host port another container holds: the start is a Conflict and the
// container is left as it was.
func testPortTaken(s *suite) {
	p := s.freePort()
	port := []engine.Port{{HostIP: "127.0.0.1", HostPort: p, ContainerPort: "80", Proto: "tcp"}}
	a, b := s.spec(), s.spec()
	a.Ports, b.Ports = port, port
	ida, idb := s.create(a), s.create(b)
	s.ok(s.eng.Start(s.ctx, ida), "start the first")
	s.is(s.eng.Start(s.ctx, idb), errs.Conflict, "start of a second container on the same host port")
	s.state(idb, "created", "Created")
	if c := s.get(idb); len(c.Ports) != 0 {
		s.Errorf("ports of the refused container: %+v", c.Ports)
	}
	// Once the first has stopped, the port is free again.
	s.ok(s.eng.Stop(s.ctx, ida, 5), "stop the first")
	s.ok(s.eng.Start(s.ctx, idb), "start the second after the first stopped")
	s.state(idb, "running", "Up ")
}

func testImages(s *suite) {
	ok, err := s.eng.ImageExists(s.ctx, Image)
	if err != nil || !ok {
		s.Fatalf("%s: %v %v", Image, ok, err)
	}
	ok, err = s.eng.ImageExists(s.ctx, "mlc/conformance-missing:0")
	if err != nil || ok {
		s.Fatalf("a missing image: %v %v", ok, err)
	}
	// A registry that cannot be reached (nothing listens on port 1).
	s.is(s.eng.Pull(s.ctx, "127.0.0.1:1/mlc/conformance-missing:0", &strings.Builder{}), errs.Image, "pull of an unreachable image")
}

// imageOf is the id of ref, which must exist.
func (s *suite) imageOf(ref string) string {
	s.Helper()
	id, err := s.eng.ImageIDOf(s.ctx, ref)
	s.ok(err, "image id of "+ref)
	if !strings.HasPrefix(id, "sha256:") || len(id) != len("sha256:")+64 {
		s.Fatalf("image id of %s: %q, want sha256: and 64 hex digits", ref, id)
	}
	return id
}

// listedImage is image id as Images lists it.
func (s *suite) listedImage(id string) (engine.Image, bool) {
	s.Helper()
	list, err := s.eng.Images(s.ctx)
	s.ok(err, "images")
	for _, im := range list {
		if im.ID == id {
			return im, true
		}
	}
	return engine.Image{}, false
}

// build makes image ref (Options.BuildImage) with labels and Label, and
// returns its id; the subtest is skipped without BuildImage.
func (s *suite) build(ref string, labels map[string]string) string {
	s.Helper()
	if s.opts.BuildImage == nil {
		s.Skip("no Options.BuildImage: the engine cannot build an image")
	}
	l := map[string]string{Label: s.run}
	maps.Copy(l, labels)
	s.opts.BuildImage(s.T, s.eng, ref, l)
	id := s.imageOf(ref)
	s.imgs = append(s.imgs, id)
	return id
}

// Images lists every image with its id, tags and labels; the test image is
// tagged, not dangling; ImageIDOf resolves a reference and an id, and a
// missing image is NotFound, for RemoveImage too.
func testImageList(s *suite) {
	id := s.imageOf(Image)
	if again := s.imageOf(id); again != id {
		s.Errorf("image id of %s: %s", id, again)
	}
	list, err := s.eng.Images(s.ctx)
	s.ok(err, "images")
	var found bool
	for _, im := range list {
		if !strings.HasPrefix(im.ID, "sha256:") || len(im.ID) != len("sha256:")+64 {
			s.Errorf("image id %q", im.ID)
		}
		if im.Dangling != (len(im.Tags) == 0) || slices.Contains(im.Tags, "<none>:<none>") {
			s.Errorf("image %s: tags %q, dangling %v", im.ID, im.Tags, im.Dangling)
		}
		if im.Labels == nil {
			s.Errorf("image %s: nil labels", im.ID)
		}
		if im.ID != id {
			continue
		}
		found = true
		if !slices.Contains(im.Tags, Image) || im.Dangling {
			s.Errorf("%s listed with tags %q, dangling %v", Image, im.Tags, im.Dangling)
		}
		if im.Labels["org.opencontainers.image.title"] != imageLabels["org.opencontainers.image.title"] {
			s.Errorf("%s listed with labels %v, want %v", Image, im.Labels, imageLabels)
		}
		if im.Created.IsZero() || im.Created.After(time.Now().Add(time.Minute)) {
			s.Errorf("%s created %v", Image, im.Created)
		}
	}
	if !found {
		s.Fatalf("%s (%s) is not listed among %d images", Image, id, len(list))
	}
	_, err = s.eng.ImageIDOf(s.ctx, "mlc/conformance-missing:0")
	s.is(err, errs.NotFound, "image id of a missing image")
	missing := "sha256:" + strings.Repeat("0", 60) + s.run[:4]
	_, err = s.eng.ImageIDOf(s.ctx, missing)
	s.is(err, errs.NotFound, "image id of a missing id")
	s.is(s.eng.RemoveImage(s.ctx, missing), errs.NotFound, "remove of a missing image")
}

// Containers are listed with the id of their image, by List and ListAll.
func testContainerImageID(s *suite) {
	want := s.imageOf(Image)
	id := s.create(s.spec())
	if c := s.get(id); c.ImageID != want {
		s.Errorf("List: image id %q, want %q", c.ImageID, want)
	}
	all, err := s.eng.ListAll(s.ctx)
	s.ok(err, "list all")
	for _, c := range all {
		if c.ID == id && c.ImageID != want {
			s.Errorf("ListAll: image id %q, want %q", c.ImageID, want)
		}
	}
}

// RemoveImage refuses an image a container uses, in every state; removes an
// unused one, tagged or dangling; a rebuild leaves the old image dangling.
func testRemoveImage(s *suite) {
	ref := "mlc-conf-" + s.run + ":x"
	base := s.imageOf(Image)
	id1 := s.build(ref, map[string]string{"mlc.test.build": "one"})
	if id1 == base {
		s.Fatalf("the built image has %s's id", Image)
	}
	im, ok := s.listedImage(id1)
	if !ok || len(im.Tags) != 1 || im.Tags[0] != ref || im.Dangling || im.Labels[Label] != s.run || im.Labels["mlc.test.build"] != "one" {
		s.Fatalf("built image listed as %+v (%v), want tag %s and labels %s, mlc.test.build", im, ok, ref, Label)
	}
	sp := s.spec()
	sp.Image = ref
	cid := s.create(sp)
	if c := s.get(cid); c.ImageID != id1 {
		s.Errorf("container of the built image: image id %q, want %q", c.ImageID, id1)
	}
	s.is(s.eng.RemoveImage(s.ctx, id1), errs.Conflict, "remove of an image a created container uses")
	s.ok(s.eng.Start(s.ctx, cid), "start")
	s.is(s.eng.RemoveImage(s.ctx, id1), errs.Conflict, "remove of an image a running container uses")
	s.ok(s.eng.Stop(s.ctx, cid, 5), "stop")
	s.is(s.eng.RemoveImage(s.ctx, id1), errs.Conflict, "remove of an image a stopped container uses")
	if got := s.imageOf(ref); got != id1 {
		s.Fatalf("after refused removes %s is %s, want %s", ref, got, id1)
	}
	s.ok(s.eng.Remove(s.ctx, cid, false), "remove the container")

	// A rebuild takes the tag: the first image is left dangling.
	id2 := s.build(ref, map[string]string{"mlc.test.build": "two"})
	if id2 == id1 {
		s.Fatal("the rebuild has the first build's id")
	}
	if im, ok := s.listedImage(id1); !ok || !im.Dangling || len(im.Tags) != 0 {
		s.Fatalf("the replaced image: %+v (listed %v), want dangling", im, ok)
	}
	if im, ok := s.listedImage(id2); !ok || im.Dangling || len(im.Tags) != 1 || im.Tags[0] != ref || im.Labels["mlc.test.build"] != "two" {
		s.Fatalf("the rebuilt image: %+v (listed %v)", im, ok)
	}
	s.ok(s.eng.RemoveImage(s.ctx, id1), "remove of an unused dangling image")
	if _, ok := s.listedImage(id1); ok {
		s.Error("the removed dangling image is listed")
	}
	s.is(s.eng.RemoveImage(s.ctx, id1), errs.NotFound, "second remove")
	s.ok(s.eng.RemoveImage(s.ctx, id2), "remove of an unused tagged image")
	if _, ok := s.listedImage(id2); ok {
		s.Error("the removed image is listed")
	}
	_, err := s.eng.ImageIDOf(s.ctx, ref)
	s.is(err, errs.NotFound, "image id of a removed image")
	if got := s.imageOf(Image); got != base {
		s.Fatalf("%s is now %s, was %s", Image, got, base)
	}
}

func (s *suite) network(name string) (engine.Network, bool) {
	s.Helper()
	nets, err := s.eng.Networks(s.ctx)
	s.ok(err, "networks")
	for _, n := range nets {
		if n.Name == name {
			return n, true
		}
	}
	return engine.Network{}, false
}

// EnsureNetwork creates once and adopts after; an overlapping subnet is
// refused with ErrSubnetTaken; Networks lists the predefined networks too.
func testNetworks(s *suite) {
	ns := s.netSpec(confSubnet)
	id, err := s.ensure(ns)
	s.ok(err, "ensure")
	again, err := s.ensure(ns)
	if err != nil || again != id {
		s.Fatalf("second ensure: %q %v, want %q", again, err, id)
	}
	n, ok := s.network(ns.Name)
	if !ok || n.ID != id || n.Driver != "bridge" || !n.Managed() || !maps.Equal(n.Labels, ns.Labels) ||
		len(n.Subnets) != 1 || n.Subnets[0] != confSubnet {
		s.Fatalf("listed %+v (found %v), want id %s, bridge, labels %v, subnet %s", n, ok, id, ns.Labels, confSubnet)
	}
	if d := time.Since(n.Created); d < -2*time.Second || d > time.Minute {
		s.Errorf("created %v", n.Created)
	}
	inner := s.netSpec(confSubnetInner)
	_, err = s.ensure(inner)
	s.is(err, errs.Conflict, "a subnet overlapping another network's")
	if !errors.Is(err, engine.ErrSubnetTaken) {
		s.Errorf("overlap: %v does not wrap ErrSubnetTaken", err)
	}
	if _, ok := s.network(inner.Name); ok {
		s.Error("the refused network is listed")
	}
	for name, driver := range map[string]string{"bridge": "bridge", "host": "host", "none": "null"} {
		if n, ok := s.network(name); !ok || n.Driver != driver || n.Managed() {
			s.Errorf("predefined network %s: %+v %v", name, n, ok)
		}
	}
	s.ok(s.eng.RemoveNetwork(s.ctx, ns.Name), "remove")
	if _, ok := s.network(ns.Name); ok {
		s.Error("removed network still listed")
	}
	s.is(s.eng.RemoveNetwork(s.ctx, ns.Name), errs.NotFound, "remove of a removed network")
}

// A network any container is configured with, in any state, stays.
func testNetworkInUse(s *suite) {
	ns := s.netSpec(confSubnet)
	_, err := s.ensure(ns)
	s.ok(err, "ensure")
	sp := s.spec()
	sp.Network = ns.Name
	id := s.create(sp)
	s.is(s.eng.RemoveNetwork(s.ctx, ns.Name), errs.Conflict, "remove with a created container on it")
	s.ok(s.eng.Start(s.ctx, id), "start")
	s.is(s.eng.RemoveNetwork(s.ctx, ns.Name), errs.Conflict, "remove with a running container on it")
	s.ok(s.eng.Stop(s.ctx, id, 5), "stop")
	s.is(s.eng.RemoveNetwork(s.ctx, ns.Name), errs.Conflict, "remove with a stopped container on it")
	s.ok(s.eng.Remove(s.ctx, id, false), "remove the container")
	s.ok(s.eng.RemoveNetwork(s.ctx, ns.Name), "remove once empty")
}

// A network of mlc's name that mlc did not make is neither adopted nor
// removed. (It stays behind on a real engine: its test sweeps it by Label.)
func testNetworkNotOurs(s *suite) {
	ns := s.netSpec(confSubnet)
	delete(ns.Labels, engine.LabelManaged)
	// Made, then found not mlc's: EnsureNetwork looks again after creating.
	_, err := s.ensure(ns)
	s.is(err, errs.Conflict, "ensure of a network without mlc.managed")
	_, err = s.ensure(ns)
	s.is(err, errs.Conflict, "ensure of a network mlc did not make")
	s.is(s.eng.RemoveNetwork(s.ctx, ns.Name), errs.Conflict, "remove of a network mlc did not make")
	if _, ok := s.network(ns.Name); !ok {
		s.Error("the network mlc did not make is gone")
	}
}

// Without a subnet the engine picks one from its default pools.
func testNetworkDefaultPool(s *suite) {
	ns := s.netSpec("")
	_, err := s.ensure(ns)
	s.ok(err, "ensure without a subnet")
	n, ok := s.network(ns.Name)
	if !ok || len(n.Subnets) != 1 {
		s.Fatalf("listed %+v %v, want one IPv4 subnet", n, ok)
	}
	s.ok(s.eng.RemoveNetwork(s.ctx, ns.Name), "remove")
}

func testSetRestart(s *suite) {
	id := s.create(s.spec())
	s.ok(s.eng.SetRestart(s.ctx, id, false), "restart off, created")
	s.ok(s.eng.Start(s.ctx, id), "start")
	s.ok(s.eng.SetRestart(s.ctx, id, true), "restart on, running")
	s.ok(s.eng.SetRestart(s.ctx, id, false), "restart off, running")
	s.state(id, "running", "Up ")
}

func testSecurityOptions(s *suite) {
	opts, err := s.eng.SecurityOptions(s.ctx)
	s.ok(err, "security options")
	for _, o := range opts {
		if !strings.HasPrefix(o, "name=") {
			s.Errorf("option %q: want name=...", o)
		}
	}
}

// testListAllAndRuntime: ListAll shows containers mlc did not make, which
// List never does; Runtime gives a pid only while the container runs.
func testListAllAndRuntime(s *suite) {
	managed := s.spec()
	mid := s.create(managed)
	foreign := s.spec()
	delete(foreign.Labels, engine.LabelManaged)
	fid := s.create(foreign)
	all, err := s.eng.ListAll(s.ctx)
	if err != nil {
		s.Fatalf("ListAll: %v", err)
	}
	seen := map[string]bool{}
	for _, c := range all {
		seen[c.ID] = true
	}
	if !seen[mid] || !seen[fid] {
		s.Fatalf("ListAll misses the managed (%v) or the foreign (%v) container", seen[mid], seen[fid])
	}
	list, err := s.eng.List(s.ctx, s.user)
	if err != nil {
		s.Fatal(err)
	}
	for _, c := range list {
		if c.ID == fid {
			s.Fatalf("List shows the foreign container")
		}
	}
	rt, err := s.eng.Runtime(s.ctx, mid)
	if err != nil || rt.Pid != 0 || !rt.FinishedAt.IsZero() {
		s.Fatalf("Runtime of a created container: pid %d, finished %v, %v; want 0, zero", rt.Pid, rt.FinishedAt, err)
	}
	if err := s.eng.Start(s.ctx, mid); err != nil {
		s.Fatal(err)
	}
	rt, err = s.eng.Runtime(s.ctx, mid)
	if err != nil || rt.Pid <= 0 || rt.StartedAt.IsZero() {
		s.Fatalf("Runtime of a running container: %+v, %v", rt, err)
	}
	if err := s.eng.Stop(s.ctx, mid, 1); err != nil {
		s.Fatal(err)
	}
	started := rt.StartedAt
	if rt, err = s.eng.Runtime(s.ctx, mid); err != nil || rt.Pid != 0 {
		s.Fatalf("Runtime of a stopped container: pid %d, %v; want 0", rt.Pid, err)
	}
	if rt.FinishedAt.Before(started) || time.Since(rt.FinishedAt) > time.Minute || !rt.StartedAt.Equal(started) {
		s.Fatalf("Runtime of a stopped container: started %v, finished %v; want started %v, finished after it, just now", rt.StartedAt, rt.FinishedAt, started)
	}
	if _, err := s.eng.Runtime(s.ctx, "no-such-container-"+s.run); !errs.Is(err, errs.NotFound) {
		s.Fatalf("Runtime of a missing container: %v; want NotFound", err)
	}
}
