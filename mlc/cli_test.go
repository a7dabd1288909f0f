package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/mlc-lab/mlc/containers"
	"github.com/mlc-lab/mlc/engine"
	"github.com/mlc-lab/mlc/engine/enginetest"
	"github.com/mlc-lab/mlc/errs"
)

// CLI tests: commands run in-process (run() through mlc()) against an
// enginetest.Fake, so their output and exit codes are tested without dockerd.
// The caller is the real uid of the test process (root in CI).

// withEngine makes every session of this test use eng instead of dockerd.
func withEngine(t *testing.T, eng engine.Engine, err error) {
	t.Helper()
	old := connectEngine
	connectEngine = func() (engine.Engine, error) { return eng, err }
	t.Cleanup(func() { connectEngine = old })
}

const cliPolicy = `
defaults:
  cpus: 2
  memory: 1g
  max_containers: 2
images:
  bb:
    image: mlc/busybox:latest
    framework: busybox
    version: "1.35"
`

type cliEnv struct {
	f      *enginetest.Fake
	policy string
	user   string // the caller
	uid    int
	dir    string
}

func cliSetup(t *testing.T) *cliEnv {
	t.Helper()
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	t.Setenv("SUDO_UID", "") // the caller is the real uid
	t.Setenv("MLC_CONFIG", "")
	t.Setenv("MLC_STATE_DIR", filepath.Join(dir, "state"))
	t.Setenv("MLC_AUDIT_LOG", filepath.Join(dir, "audit.jsonl"))
	t.Setenv("MLC_WORKSPACE_ROOT", filepath.Join(dir, "ws"))
	e := &cliEnv{f: enginetest.New(), policy: writePolicy(t, cliPolicy), user: me.Username, uid: os.Getuid(), dir: dir}
	withEngine(t, e.f, nil)
	return e
}

// add makes a container as mlc create would label it, for user (the caller
// when ""), in state created, running or exited.
func (e *cliEnv) add(t *testing.T, user, name, state string) string {
	t.Helper()
	ctx := context.Background()
	uid := e.uid
	if user == "" {
		user = e.user
	} else {
		uid += 1000
	}
	id, err := e.f.Create(ctx, engine.Spec{Name: engine.DockerName(uid, name), Image: enginetest.Image, Labels: map[string]string{
		engine.LabelManaged: "true", engine.LabelUser: user, engine.LabelUID: strconv.Itoa(uid), engine.LabelGID: "0",
		engine.LabelName: name, engine.LabelImage: "bb", engine.LabelCPUs: "2", engine.LabelMemory: "1GiB", engine.LabelGPUs: "",
		engine.LabelMounts: "",
	}})
	if err != nil {
		t.Fatal(err)
	}
	switch state {
	case "running":
		err = e.f.Start(ctx, id)
	case "exited":
		if err = e.f.Start(ctx, id); err == nil {
			err = e.f.Stop(ctx, id, 1)
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func (e *cliEnv) mlc(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	return mlc(t, append([]string{"--config", e.policy}, args...)...)
}

func TestCLIList(t *testing.T) {
	e := cliSetup(t)
	ida := e.add(t, "", "alpha", "running")
	idb := e.add(t, "", "beta", "exited")
	e.add(t, "someone-else", "gamma", "running")

	out, errOut, code := e.mlc(t, "list")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	want := []*regexp.Regexp{
		regexp.MustCompile(`^NAME +IMAGE +STATUS +CPUS +MEMORY +GPUS +CREATED +IDLE +CLEANUP STOPS$`),
		regexp.MustCompile(`^alpha +bb +Up [A-Za-z0-9 ]+ +2 +1GiB +- +[A-Za-z0-9 ]+ ago +- +-$`),
		regexp.MustCompile(`^beta +bb +Exited \(143\) [A-Za-z0-9 ]+ ago +2 +1GiB +- +[A-Za-z0-9 ]+ ago +- +-$`),
	}
	if len(lines) != len(want) {
		t.Fatalf("list:\n%s", out)
	}
	for i, re := range want {
		if !re.MatchString(lines[i]) {
			t.Errorf("line %d: %q does not match %s", i, lines[i], re)
		}
	}
	// The columns line up.
	if at := strings.Index(lines[0], "STATUS"); strings.Index(lines[1], "Up ") != at || strings.Index(lines[2], "Exited") != at {
		t.Errorf("columns:\n%s", out)
	}

	out, _, code = e.mlc(t, "list", "--json")
	if code != 0 {
		t.Fatalf("json: exit %d", code)
	}
	var rows []containers.Row
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(rows) != 2 {
		t.Fatalf("rows: %+v", rows)
	}
	for i, w := range []struct{ name, id, state, status string }{{"alpha", ida, "running", "Up "}, {"beta", idb, "exited", "Exited (143) "}} {
		r := rows[i]
		if r.Name != w.name || r.ID != w.id || r.User != e.user || r.Image != "bb" || r.State != w.state ||
			!strings.HasPrefix(r.Status, w.status) || r.CPUs != "2" || r.Memory != "1GiB" || r.GPUs == nil || len(r.GPUs) != 0 || r.Protect {
			t.Errorf("row %d: %+v", i, r)
		}
	}
	if !strings.Contains(out, `"gpus": []`) {
		t.Errorf("no GPUs is not an empty list:\n%s", out)
	}

	out, _, code = e.mlc(t, "list", "-q")
	if code != 0 || out != "alpha\nbeta\n" {
		t.Fatalf("quiet: %d %q", code, out)
	}
	// Through the mlc-list link, flags after nothing.
	var o, eo strings.Builder
	if code := run([]string{"/usr/local/bin/mlc-list", "--config", e.policy, "-q"}, strings.NewReader(""), &o, &eo); code != 0 || o.String() != "alpha\nbeta\n" {
		t.Fatalf("mlc-list: %d %q %q", code, o.String(), eo.String())
	}
}

func TestCLIListAll(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("list --all needs an admin: root")
	}
	e := cliSetup(t)
	e.add(t, "", "alpha", "created")
	e.add(t, "someone-else", "gamma", "running")
	out, errOut, code := e.mlc(t, "list", "--all", "-q")
	if code != 0 || out != e.user+"/alpha\nsomeone-else/gamma\n" {
		t.Fatalf("list --all: %d %q %s", code, out, errOut)
	}
}

// Names resolve only among the caller's containers: a missing one and
// another user's answer alike, exit 4.
func TestCLINoSuchContainer(t *testing.T) {
	e := cliSetup(t)
	e.add(t, "someone-else", "gamma", "running")
	for _, args := range [][]string{{"stop", "nope"}, {"stop", "gamma"}, {"kill", "gamma"}, {"start", "nope"}, {"remove", "nope", "--yes"}, {"logs", "nope"}} {
		out, errOut, code := e.mlc(t, args...)
		name := args[1]
		if code != 4 || out != "" || errOut != "mlc: no such container: "+name+"\n" {
			t.Errorf("%v: exit %d, out %q, err %q", args, code, out, errOut)
		}
	}
	if slices.ContainsFunc(e.f.Calls(), func(c string) bool { return !strings.HasPrefix(c, "create ") && !strings.HasPrefix(c, "start ") }) {
		t.Errorf("the engine was asked to change something: %v", e.f.Calls())
	}
}

func TestCLIStopKillStartRemove(t *testing.T) {
	e := cliSetup(t)
	id := e.add(t, "", "alpha", "running")
	out, errOut, code := e.mlc(t, "stop", "alpha", "-t", "3")
	if code != 0 || out != "stopped alpha\n" || e.f.Container(id).State != "exited" {
		t.Fatalf("stop: %d %q %q %s", code, out, errOut, e.f.Container(id).State)
	}
	_, errOut, code = e.mlc(t, "stop", "alpha")
	if code != 6 || !strings.Contains(errOut, "alpha is not running (exited)") {
		t.Fatalf("second stop: %d %q", code, errOut)
	}
	_, errOut, code = e.mlc(t, "kill", "alpha")
	if code != 6 {
		t.Fatalf("kill of a stopped container: %d %q", code, errOut)
	}
	out, errOut, code = e.mlc(t, "remove", "alpha", "--yes")
	if code != 0 || out != "removed alpha\n" || e.f.Len() != 0 {
		t.Fatalf("remove: %d %q %q", code, out, errOut)
	}
	id = e.add(t, "", "beta", "running")
	_, errOut, code = e.mlc(t, "start", "beta")
	if code != 6 || !strings.Contains(errOut, "beta is already running") {
		t.Fatalf("start of a running container: %d %q", code, errOut)
	}
	_, errOut, code = e.mlc(t, "rm", "beta", "-y")
	if code != 6 || !strings.Contains(errOut, "beta is running; stop it first, or use --force") || e.f.Len() != 1 {
		t.Fatalf("remove of a running container: %d %q", code, errOut)
	}
	out, _, code = e.mlc(t, "kill", "beta")
	if code != 0 || out != "killed beta\n" || !strings.HasPrefix(e.f.Container(id).Status, "Exited (137)") {
		t.Fatalf("kill: %d %q %+v", code, out, e.f.Container(id))
	}
	want := []string{"stop mlc-" + strconv.Itoa(e.uid) + "-alpha", "remove mlc-" + strconv.Itoa(e.uid) + "-alpha", "kill mlc-" + strconv.Itoa(e.uid) + "-beta"}
	var got []string
	for _, c := range e.f.Calls() {
		if !strings.HasPrefix(c, "create ") && !strings.HasPrefix(c, "start ") {
			got = append(got, c)
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("engine calls %q, want %q", got, want)
	}
}

// Over a limit: exit 7, and the engine creates nothing.
func TestCLICreateOverLimit(t *testing.T) {
	e := cliSetup(t)
	_, errOut, code := e.mlc(t, "create", "big", "busybox", "--cpus", "3")
	if code != 7 || errOut != "mlc: --cpus 3 is more than your cpus limit of 2 (default)\n" {
		t.Fatalf("--cpus 3: exit %d %q", code, errOut)
	}
	_, errOut, code = e.mlc(t, "create", "big", "busybox", "--memory", "2g")
	if code != 7 || !strings.Contains(errOut, "more than your memory limit of 1GiB") {
		t.Fatalf("--memory 2g: exit %d %q", code, errOut)
	}
	e.add(t, "", "alpha", "running")
	e.add(t, "", "beta", "exited")
	_, errOut, code = e.mlc(t, "create", "third", "busybox")
	if code != 7 || !strings.Contains(errOut, "you have 2 containers and your max_containers limit is 2 (default)") {
		t.Fatalf("third container: exit %d %q", code, errOut)
	}
	if e.f.Len() != 2 || slices.Contains(e.f.Calls(), "create mlc-"+strconv.Itoa(e.uid)+"-third") {
		t.Fatalf("the engine has %d containers: %v", e.f.Len(), e.f.Calls())
	}
}

// A create that goes through: the container the engine got, and what mlc says.
func TestCLICreate(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("makes a workspace below a root-owned workspace_root: needs root")
	}
	e := cliSetup(t)
	out, errOut, code := e.mlc(t, "create", "nb", "busybox", "-p", "8888", "--cpus", "1")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	ws := filepath.Join(e.dir, "ws", e.user, "nb")
	want := fmt.Sprintf("nb created and started from mlc/busybox:latest; workspace %s\nopen it with: mlc open nb\n", ws)
	if out != want {
		t.Fatalf("output %q, want %q", out, want)
	}
	ids := e.f.IDs()
	if len(ids) != 1 {
		t.Fatalf("containers: %v", ids)
	}
	c, sp := e.f.Container(ids[0]), e.f.Spec(ids[0])
	if c.State != "running" || c.Name != engine.DockerName(e.uid, "nb") || sp.NanoCPUs != 1e9 || sp.Network != engine.UserNetwork(e.uid) ||
		len(c.Ports) != 1 || c.Ports[0].HostIP != "127.0.0.1" || c.Ports[0].ContainerPort != "8888" || len(c.Mounts) != 1 || c.Mounts[0].Source != ws {
		t.Fatalf("container %+v\nspec %+v", c, sp)
	}
	_, errOut, code = e.mlc(t, "create", "nb", "busybox")
	if code != 6 || !strings.Contains(errOut, "nb already exists") {
		t.Fatalf("second create: %d %q", code, errOut)
	}
	// A port the engine cannot bind: exit 6, and the create is undone.
	e.f.FailNext("Start", errs.New(errs.Conflict, "port is already allocated"))
	_, errOut, code = e.mlc(t, "create", "nb2", "busybox", "-p", "9999:8888")
	if code != 6 || !strings.Contains(errOut, "cannot publish 9999:8888: port already taken") || e.f.Len() != 1 {
		t.Fatalf("taken port: %d %q, %d containers", code, errOut, e.f.Len())
	}
}

// open NAME -- CMD: mlc's own failures exit 125; CMD's code passes through.
func TestCLIOpen(t *testing.T) {
	e := cliSetup(t)
	_, errOut, code := e.mlc(t, "open", "nope", "--", "true")
	if code != 125 || errOut != "mlc: no such container: nope\n" {
		t.Fatalf("open of a missing container with CMD: %d %q", code, errOut)
	}
	_, errOut, code = e.mlc(t, "open", "nope")
	if code != 4 {
		t.Fatalf("open of a missing container without CMD: %d %q", code, errOut)
	}
	id := e.add(t, "", "alpha", "running")
	e.f.OnExec(func(_ context.Context, got string, o engine.ExecOptions) (int, error) {
		if got != id {
			return -1, fmt.Errorf("exec in %s", got)
		}
		in, _ := io.ReadAll(o.Stdin)
		fmt.Fprintf(o.Stdout, "%s as %s in %s, stdin %q", strings.Join(o.Cmd, " "), o.User, o.WorkDir, in)
		return 3, nil
	})
	var out, eo strings.Builder
	code = run([]string{"mlc", "--config", e.policy, "open", "alpha", "--", "python", "-c", "x"}, strings.NewReader("data"), &out, &eo)
	want := fmt.Sprintf("python -c x as %d:0 in /workspace, stdin %q", e.uid, "data")
	if code != 3 || out.String() != want {
		t.Fatalf("open with CMD: %d %q %q, want 3 %q", code, out.String(), eo.String(), want)
	}
	e.f.SetDown(true)
	_, errOut, code = e.mlc(t, "open", "alpha", "--", "true")
	if code != 125 || !strings.Contains(errOut, "cannot reach the Docker engine") {
		t.Fatalf("open with CMD, engine down: %d %q", code, errOut)
	}
}

// The engine's own failure: exit 8, whichever command.
func TestCLIEngineDown(t *testing.T) {
	e := cliSetup(t)
	e.add(t, "", "alpha", "running")
	e.f.SetDown(true)
	for _, args := range [][]string{{"list"}, {"stop", "alpha"}, {"start", "alpha"}, {"create", "x", "busybox"}, {"open", "alpha"}} {
		out, errOut, code := e.mlc(t, args...)
		if code != 8 || out != "" || errOut != "mlc: cannot reach the Docker engine at "+enginetest.Host+": is dockerd running?\n" {
			t.Errorf("%v: exit %d, out %q, err %q", args, code, out, errOut)
		}
	}
	// The client cannot even be made.
	withEngine(t, nil, errs.New(errs.Engine, "docker client: bad DOCKER_HOST"))
	_, errOut, code := e.mlc(t, "list")
	if code != 8 || errOut != "mlc: docker client: bad DOCKER_HOST\n" {
		t.Fatalf("no client: %d %q", code, errOut)
	}
}

// limits check asks the session's engine whether root in a container is
// safe.
func TestCLILimitsCheckAsksTheEngine(t *testing.T) {
	e := cliSetup(t)
	p := writePolicy(t, "policies:\n  allow_root: true\n")
	_, errOut, code := e.mlc(t, "limits", "check", p)
	if code != 0 || !strings.Contains(errOut, "warning: ") || !strings.Contains(errOut, "does not remap") {
		t.Fatalf("without userns: %d %q", code, errOut)
	}
	e.f.SetSecurityOptions("name=seccomp,profile=default", "name=userns")
	_, errOut, code = e.mlc(t, "limits", "check", p)
	if code != 0 || errOut != "" {
		t.Fatalf("with userns: %d %q", code, errOut)
	}
}
