package engine_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mlc-lab/mlc/engine"
	"github.com/mlc-lab/mlc/errs"
	"github.com/mlc-lab/mlc/internal/testenv"
)

// These tests only create, inspect and remove networks and containers; they
// never send traffic to a container. Their subnets come from 10.231.2.0/24
// (the containers package's network tests use 10.231.0.0/23).

const netTestLabel = "mlc.test.network" // on everything these tests make

func netCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// cleanNetworks removes, now and after the test, the containers and networks
// labelled with netTestLabel=run.
func cleanNetworks(t *testing.T, run string) {
	testenv.LockNetworkTests(t)
	clean := func() {
		f := netTestLabel + "=" + run
		for _, id := range strings.Fields(dockerQuiet("ps", "-aq", "--filter", "label="+f)) {
			dockerQuiet("rm", "-f", id)
		}
		for _, id := range strings.Fields(dockerQuiet("network", "ls", "-q", "--filter", "label="+f)) {
			dockerQuiet("network", "rm", id)
		}
	}
	clean()
	t.Cleanup(clean)
}

func dockerQuiet(args ...string) string {
	out, _ := exec.Command("docker", args...).Output()
	return string(out)
}

// exactly returns the ids of the networks called exactly name.
func exactly(t *testing.T, name string) []string {
	t.Helper()
	return strings.Fields(testenv.Docker(t, "network", "ls", "-q", "--no-trunc", "--filter", "name=^"+name+"$"))
}

func netLabels(run string) map[string]string {
	return map[string]string{engine.LabelManaged: "true", netTestLabel: run}
}

func TestNetworkEnsureAndRemove(t *testing.T) {
	c := testenv.Engine(t)
	ctx := netCtx(t)
	run := fmt.Sprintf("e%d", os.Getpid())
	cleanNetworks(t, run)
	name := "mlcnt-" + run

	id, err := c.EnsureNetwork(ctx, engine.NetworkSpec{Name: name, Subnet: "10.231.2.0/26", Labels: netLabels(run)})
	if err != nil {
		t.Fatal(err)
	}
	got := testenv.Docker(t, "network", "inspect", "-f",
		`{{.Id}} {{.Driver}} {{range .IPAM.Config}}{{.Subnet}}{{end}} {{index .Options "com.docker.network.bridge.name"}} {{index .Labels "mlc.managed"}}`, name)
	if want := id + " bridge 10.231.2.0/26 " + name + " true"; got != want {
		t.Fatalf("network: %q, want %q", got, want)
	}
	// A second ensure returns the same network, whatever subnet it asks for.
	if id2, err := c.EnsureNetwork(ctx, engine.NetworkSpec{Name: name, Subnet: "10.231.2.64/26", Labels: netLabels(run)}); err != nil || id2 != id {
		t.Fatalf("second ensure: %s %v, want %s", id2, err, id)
	}
	nets, err := c.Networks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, n := range nets {
		if n.ID == id {
			found = n.Name == name && len(n.Subnets) == 1 && n.Subnets[0] == "10.231.2.0/26" && n.Managed()
		}
	}
	if !found {
		t.Fatalf("Networks() lacks %s: %+v", name, nets)
	}
	// An overlapping subnet is refused as taken.
	_, err = c.EnsureNetwork(ctx, engine.NetworkSpec{Name: name + "b", Subnet: "10.231.2.32/27", Labels: netLabels(run)})
	if !errors.Is(err, engine.ErrSubnetTaken) || !errs.Is(err, errs.Conflict) {
		t.Fatalf("overlapping subnet: %v", err)
	}
	if ids := exactly(t, name+"b"); len(ids) != 0 {
		t.Fatalf("refused network exists: %v", ids)
	}

	// A container on it, created, running, stopped: the network stays.
	spec := engine.Spec{
		Name: "mlcnt-ctr-" + run, Image: testenv.Image, Labels: netLabels(run), User: "65534:65534",
		Cmd: []string{"sleep", "300"}, Network: name, PidsLimit: 32,
	}
	cid, err := c.Create(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if mode := testenv.Docker(t, "inspect", "-f", "{{.HostConfig.NetworkMode}}", cid); mode != name {
		t.Fatalf("container's network mode %q", mode)
	}
	busy := func(state string) {
		t.Helper()
		if err := c.RemoveNetwork(ctx, name); !errs.Is(err, errs.Conflict) || !strings.Contains(err.Error(), "in use") {
			t.Fatalf("remove with a %s container: %v", state, err)
		}
		if ids := exactly(t, name); len(ids) != 1 {
			t.Fatalf("after remove with a %s container: %v", state, ids)
		}
	}
	busy("created")
	if err := c.Start(ctx, cid); err != nil {
		t.Fatal(err)
	}
	if nw := testenv.Docker(t, "inspect", "-f", "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}", cid); nw != name {
		t.Fatalf("container's networks %q", nw)
	}
	busy("running")
	if err := c.Kill(ctx, cid); err != nil {
		t.Fatal(err)
	}
	busy("stopped")
	if err := c.Remove(ctx, cid, true); err != nil {
		t.Fatal(err)
	}
	if err := c.RemoveNetwork(ctx, name); err != nil {
		t.Fatalf("remove when empty: %v", err)
	}
	if ids := exactly(t, name); len(ids) != 0 {
		t.Fatalf("still there: %v", ids)
	}
	if err := c.RemoveNetwork(ctx, name); !errs.Is(err, errs.NotFound) {
		t.Fatalf("remove a missing network: %v", err)
	}
}

// A network of the name that mlc did not create is neither adopted nor removed.
func TestNetworkNotOurs(t *testing.T) {
	c := testenv.Engine(t)
	ctx := netCtx(t)
	run := fmt.Sprintf("o%d", os.Getpid())
	cleanNetworks(t, run)
	name := "mlcnt-" + run
	testenv.Docker(t, "network", "create", "--label", netTestLabel+"="+run, "--subnet", "10.231.2.128/26", name)
	if _, err := c.EnsureNetwork(ctx, engine.NetworkSpec{Name: name, Labels: netLabels(run)}); !errs.Is(err, errs.Conflict) || !strings.Contains(err.Error(), "did not create") {
		t.Fatalf("ensure: %v", err)
	}
	if err := c.RemoveNetwork(ctx, name); !errs.Is(err, errs.Conflict) {
		t.Fatalf("remove: %v", err)
	}
	if ids := exactly(t, name); len(ids) != 1 {
		t.Fatalf("networks: %v", ids)
	}
}

// Concurrent ensures of one name end with one network, which all of them
// return (or, asking for a subnet, report it taken): the daemon (API 1.41) lets concurrent creates of one name through,
// but refuses a second network with the same bridge name.
func TestNetworkConcurrentEnsure(t *testing.T) {
	c := testenv.Engine(t)
	ctx := netCtx(t)
	run := fmt.Sprintf("c%d", os.Getpid())
	cleanNetworks(t, run)
	for round, subnet := range []string{"", "10.231.2.192/26", "", "10.231.2.192/26"} {
		name := fmt.Sprintf("mlcnt-%s-%d", run, round)
		var wg sync.WaitGroup
		ids := make([]string, 16)
		failed := make([]error, 16)
		for i := range ids {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ids[i], failed[i] = c.EnsureNetwork(ctx, engine.NetworkSpec{Name: name, Subnet: subnet, Labels: netLabels(run)})
			}()
		}
		wg.Wait()
		have := exactly(t, name)
		if len(have) != 1 {
			t.Fatalf("round %d: %d networks named %s", round, len(have), name)
		}
		for i := range ids {
			// With a subnet, a racer may find it taken by the create that won
			// before that one is listed; the caller then retries (ensureNetwork
			// takes the next subnet, and finds the network).
			if subnet != "" && errors.Is(failed[i], engine.ErrSubnetTaken) {
				continue
			}
			if failed[i] != nil || ids[i] != have[0] {
				t.Fatalf("round %d, ensure %d: %s %v; the network is %s", round, i, ids[i], failed[i], have[0])
			}
		}
		if err := c.RemoveNetwork(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
}

// Twins (two networks of one name, as an older daemon or a create without the
// bridge name option can leave) are merged into one: the one in use, else the
// oldest.
func TestNetworkTwins(t *testing.T) {
	c := testenv.Engine(t)
	ctx := netCtx(t)
	run := fmt.Sprintf("t%d", os.Getpid())
	cleanNetworks(t, run)
	name := "mlcnt-" + run
	twin := func() string {
		t.Helper()
		// The raw API with CheckDuplicate off: the CLI and the SDK turn it on.
		body, _ := json.Marshal(map[string]any{"Name": name, "CheckDuplicate": false, "Driver": "bridge", "Labels": netLabels(run)})
		hc := http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", socketPath(t))
		}}}
		resp, err := hc.Post("http://docker/v1.41/networks/create", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var r struct{ ID string }
		json.NewDecoder(resp.Body).Decode(&r)
		if resp.StatusCode != http.StatusCreated || r.ID == "" {
			t.Skipf("this engine will not make twins (%s): nothing to merge", resp.Status)
		}
		return r.ID
	}
	older, newer := twin(), twin()
	id, err := c.EnsureNetwork(ctx, engine.NetworkSpec{Name: name, Labels: netLabels(run)})
	if err != nil || id != older {
		t.Fatalf("twins: kept %s (%v), want the older %s (newer %s)", id, err, older, newer)
	}
	if have := exactly(t, name); len(have) != 1 || have[0] != older {
		t.Fatalf("after merging: %v", have)
	}
	// A twin in use is not removed. (This daemon cannot start a container
	// on a network while it has a twin, so the one in use is the older.)
	testenv.Docker(t, "run", "-d", "--label", netTestLabel+"="+run, "--network", name, "--user", "65534", testenv.Image, "sleep", "300")
	newer = twin()
	id, err = c.EnsureNetwork(ctx, engine.NetworkSpec{Name: name, Labels: netLabels(run)})
	if err != nil || id != older {
		t.Fatalf("twins, the older in use: kept %s (%v), want %s", id, err, older)
	}
	if have := exactly(t, name); len(have) != 1 || have[0] != older {
		t.Fatalf("after merging: %v", have)
	}
}

func socketPath(t *testing.T) string {
	h := os.Getenv("DOCKER_HOST")
	if h == "" {
		return "/var/run/docker.sock"
	}
	if p, ok := strings.CutPrefix(h, "unix://"); ok {
		return p
	}
	t.Skipf("DOCKER_HOST %s is not a unix socket", h)
	return ""
}

// Spec.Network never puts a container in the host's or another container's
// network namespace.
func TestSpecNetworkMode(t *testing.T) {
	for net, want := range map[string]string{"": "bridge", "mlc-1001": "mlc-1001"} {
		if got := string(engine.Spec{Network: net}.Request().HostConfig.NetworkMode); got != want {
			t.Errorf("Network %q: mode %q, want %q", net, got, want)
		}
	}
}

// The daemon's refusals that classify cannot tell apart, from an engine that
// answers like Debian's 20.10 (no real engine needed).
func TestNetworkErrorsFromDaemon(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "d.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	fail := func(w http.ResponseWriter, code int, msg string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		json.NewEncoder(w).Encode(map[string]string{"message": msg})
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Api-Version", "1.41")
		path := strings.TrimPrefix(r.URL.Path, "/v1.41")
		switch {
		case path == "/_ping":
			w.Write([]byte("OK"))
		case r.Method == "GET" && (path == "/networks" || path == "/containers/json"):
			w.Write([]byte("[]"))
		case r.Method == "POST" && path == "/networks/create":
			var req struct {
				IPAM *struct{ Config []struct{ Subnet string } }
			}
			json.NewDecoder(r.Body).Decode(&req)
			if req.IPAM != nil {
				fail(w, 403, "Pool overlaps with other one on this address space")
				return
			}
			fail(w, 500, "could not find an available, non-overlapping IPv4 address pool among the defaults to assign to the network")
		case r.Method == "GET" && path == "/networks/mlc-1":
			json.NewEncoder(w).Encode(map[string]any{"Name": "mlc-1", "Id": "abc", "Driver": "bridge", "Labels": map[string]string{"mlc.managed": "true"}})
		case r.Method == "DELETE" && path == "/networks/abc":
			fail(w, 403, "error while removing network: network mlc-1 id abc has active endpoints")
		default:
			fail(w, 404, "no such thing: "+r.Method+" "+path)
		}
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	t.Setenv("DOCKER_HOST", "unix://"+sock)
	c, err := engine.New()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := netCtx(t)

	_, err = c.EnsureNetwork(ctx, engine.NetworkSpec{Name: "mlc-1"})
	if !errs.Is(err, errs.Unavailable) || !strings.Contains(err.Error(), "set policies.network_pool") {
		t.Errorf("default pools used up: %v (%v)", err, errs.KindOf(err))
	}
	_, err = c.EnsureNetwork(ctx, engine.NetworkSpec{Name: "mlc-1", Subnet: "10.231.3.0/26"})
	if !errors.Is(err, engine.ErrSubnetTaken) || !errs.Is(err, errs.Conflict) {
		t.Errorf("subnet taken: %v (%v)", err, errs.KindOf(err))
	}
	if err := c.RemoveNetwork(ctx, "mlc-1"); !errs.Is(err, errs.Conflict) || !strings.Contains(err.Error(), "in use") {
		t.Errorf("active endpoints: %v (%v)", err, errs.KindOf(err))
	}
	if err := c.RemoveNetwork(ctx, "mlc-2"); !errs.Is(err, errs.NotFound) {
		t.Errorf("missing: %v (%v)", err, errs.KindOf(err))
	}
}
