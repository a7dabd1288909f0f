package containers

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mlc-lab/mlc/config"
	"github.com/mlc-lab/mlc/engine"
	"github.com/mlc-lab/mlc/engine/enginetest"
	"github.com/mlc-lab/mlc/errs"
	"github.com/mlc-lab/mlc/identity"
	"github.com/mlc-lab/mlc/internal/testenv"
)

func TestNextSubnet(t *testing.T) {
	cases := []struct {
		pool   string
		prefix int
		used   []string
		want   string // or the error's kind and words
		kind   errs.Kind
	}{
		{"10.200.0.0/16", 26, nil, "10.200.0.0/26", 0},
		{"10.200.0.0/16", 26, []string{"10.200.0.0/26"}, "10.200.0.64/26", 0},
		{"10.200.0.0/16", 26, []string{"10.200.0.64/26"}, "10.200.0.0/26", 0},
		// Overlaps that are not the same size: a larger network skips all it covers,
		// a smaller one blocks the /26 it lies in.
		{"10.200.0.0/16", 26, []string{"10.200.0.0/24"}, "10.200.1.0/26", 0},
		{"10.200.0.0/16", 26, []string{"10.200.0.0/24", "10.200.1.8/29"}, "10.200.1.64/26", 0},
		{"10.200.0.0/16", 26, []string{"10.0.0.0/8"}, "no free /26 left in policies.network_pool 10.200.0.0/16", errs.Unavailable},
		// Others' networks outside the pool, IPv6 ones and junk do not matter.
		{"10.200.0.0/16", 26, []string{"172.17.0.0/16", "fd00::/64", "junk", ""}, "10.200.0.0/26", 0},
		// An unaligned pool is its network.
		{"10.200.0.77/24", 26, []string{"10.200.0.0/26"}, "10.200.0.64/26", 0},
		{"10.231.0.0/24", 26, []string{"10.231.0.0/26", "10.231.0.64/26", "10.231.0.128/26"}, "10.231.0.192/26", 0},
		{"10.231.0.0/24", 26, []string{"10.231.0.0/26", "10.231.0.64/26", "10.231.0.128/26", "10.231.0.192/26"},
			"no free /26 left in policies.network_pool 10.231.0.0/24 (4 networks use it): an admin must widen network_pool", errs.Unavailable},
		{"10.231.0.0/24", 24, nil, "10.231.0.0/24", 0},
		{"10.231.0.0/24", 24, []string{"10.231.0.4/30"}, "no free /24", errs.Unavailable},
		{"10.231.0.0/24", 29, []string{"10.231.0.0/25", "10.231.0.128/26", "10.231.0.192/27", "10.231.0.224/28", "10.231.0.240/29"}, "10.231.0.248/29", 0},
		{"10.231.0.0/24", 22, nil, "network_prefix 22 must lie between", errs.Config},
		{"fd00::/48", 64, nil, "not an IPv4 CIDR", errs.Config},
	}
	for _, c := range cases {
		got, err := nextSubnet(c.pool, c.prefix, c.used)
		if c.kind == 0 {
			if err != nil || got != c.want {
				t.Errorf("nextSubnet(%s, %d, %v) = %q, %v; want %s", c.pool, c.prefix, c.used, got, err, c.want)
			}
			continue
		}
		if !errs.Is(err, c.kind) || !strings.Contains(fmt.Sprint(err), c.want) {
			t.Errorf("nextSubnet(%s, %d, %v) = %q, %v (%v); want a %v error with %q", c.pool, c.prefix, c.used, got, err, errs.KindOf(err), c.kind, c.want)
		}
	}
}

// Every /26 of a /16, one at a time: all distinct, all in the pool, then full.
func TestNextSubnetFillsPool(t *testing.T) {
	pool := netip.MustParsePrefix("10.200.0.0/16")
	var used []string
	seen := map[string]bool{}
	for i := 0; i < 1024; i++ {
		s, err := nextSubnet(pool.String(), 26, used)
		if err != nil {
			t.Fatalf("after %d: %v", i, err)
		}
		p := netip.MustParsePrefix(s)
		if seen[s] || !pool.Contains(p.Addr()) || p.Bits() != 26 {
			t.Fatalf("subnet %d: %s", i, s)
		}
		seen[s] = true
		used = append(used, s)
	}
	if _, err := nextSubnet(pool.String(), 26, used); !errs.Is(err, errs.Unavailable) {
		t.Fatalf("full pool: %v", err)
	}
}

// Against a brute force: random networks of random sizes in and around a pool.
func TestNextSubnetMatchesBruteForce(t *testing.T) {
	pool := netip.MustParsePrefix("10.200.0.0/22")
	rnd := rand.New(rand.NewPCG(1, 2))
	for round := 0; round < 2000; round++ {
		prefix := 24 + rnd.IntN(6)
		var used []string
		for k := rnd.IntN(40); k > 0; k-- {
			bits := 20 + rnd.IntN(11)
			a := netip.AddrFrom4([4]byte{10, 200, byte(rnd.IntN(6)), byte(rnd.IntN(256))})
			used = append(used, netip.PrefixFrom(a, bits).Masked().String())
		}
		want := ""
		for a := pool.Addr(); pool.Contains(a); {
			cand := netip.PrefixFrom(a, prefix)
			free := true
			for _, u := range used {
				if netip.MustParsePrefix(u).Overlaps(cand) {
					free = false
				}
			}
			if free {
				want = cand.String()
				break
			}
			for i := 0; i < 1<<(32-prefix); i++ {
				a = a.Next()
			}
		}
		got, err := nextSubnet(pool.String(), prefix, used)
		if got != want || (want == "") != errs.Is(err, errs.Unavailable) {
			t.Fatalf("/%d of %s with %v: got %q %v, want %q", prefix, pool, used, got, err, want)
		}
	}
}

func netManager(pool string, eng engine.Engine) *Manager {
	return &Manager{Cfg: &config.Config{Policies: config.Policies{NetworkPool: pool, NetworkPrefix: 26}}, Eng: eng}
}

func fakeNetwork(t *testing.T, f *enginetest.Fake, name string) engine.Network {
	t.Helper()
	nets, _ := f.Networks(context.Background())
	for _, n := range nets {
		if n.Name == name {
			return n
		}
	}
	t.Fatalf("no network %s", name)
	return engine.Network{}
}

func countCalls(f *enginetest.Fake, prefix string) int {
	n := 0
	for _, c := range f.Calls() {
		if strings.HasPrefix(c, prefix) {
			n++
		}
	}
	return n
}

var (
	alice = Self(&identity.Caller{User: "alice", UID: 1001})
	bob   = Self(&identity.Caller{User: "bob", UID: 1002})
	carol = Self(&identity.Caller{User: "carol", UID: 1003})
)

func TestEnsureNetworkDefaultPools(t *testing.T) {
	ctx := context.Background()
	f := enginetest.New()
	m := netManager("", f)
	for i := 0; i < 2; i++ {
		name, err := m.ensureNetwork(ctx, alice)
		if err != nil || name != "mlc-1001" {
			t.Fatalf("ensure %d: %q %v", i, name, err)
		}
	}
	n := fakeNetwork(t, f, "mlc-1001")
	if !n.Managed() || n.Labels[engine.LabelUser] != "alice" || n.Labels[engine.LabelUID] != "1001" {
		t.Fatalf("network: %+v", n)
	}
	// Asked without a subnet (the engine picks one from its default pools).
	if c := countCalls(f, "network create"); c != 1 || !slices.Contains(f.Calls(), "network create mlc-1001 ") || len(n.Subnets) != 1 {
		t.Fatalf("%d creates: %v, subnets %v", c, f.Calls(), n.Subnets)
	}
}

func TestEnsureNetworkPool(t *testing.T) {
	ctx := context.Background()
	f := enginetest.New()
	m := netManager("10.231.0.0/25", f)
	for _, c := range []struct {
		a      Actor
		subnet string
	}{{alice, "10.231.0.0/26"}, {bob, "10.231.0.64/26"}, {alice, "10.231.0.0/26"}} {
		name, err := m.ensureNetwork(ctx, c.a)
		if err != nil || name != engine.UserNetwork(c.a.Target.UID) {
			t.Fatalf("%s: %q %v", c.a.Target.User, name, err)
		}
		if n := fakeNetwork(t, f, name); len(n.Subnets) != 1 || n.Subnets[0] != c.subnet {
			t.Fatalf("%s: %+v, want %s", c.a.Target.User, n, c.subnet)
		}
	}
	// The pool is full: carol is refused, with what the admin must do.
	_, err := m.ensureNetwork(ctx, carol)
	if !errs.Is(err, errs.Unavailable) || !strings.Contains(err.Error(), "widen network_pool") {
		t.Fatalf("full pool: %v", err)
	}
	// Those who have a network keep using it.
	if _, err := m.ensureNetwork(ctx, bob); err != nil {
		t.Fatalf("bob with a full pool: %v", err)
	}
	// An empty network goes, and its subnet is free again.
	if err := m.dropNetworkIfEmpty(ctx, alice); err != nil {
		t.Fatal(err)
	}
	if _, err := m.ensureNetwork(ctx, carol); err != nil {
		t.Fatal(err)
	}
	if n := fakeNetwork(t, f, "mlc-1003"); n.Subnets[0] != "10.231.0.0/26" {
		t.Fatalf("carol: %+v", n)
	}
}

// The engine refuses a subnet another mlc took a moment before: the next one is tried.
func TestEnsureNetworkSubnetRace(t *testing.T) {
	ctx := context.Background()
	f := enginetest.New()
	m := netManager("10.231.0.0/24", f)
	f.RefuseSubnets(2)
	if _, err := m.ensureNetwork(ctx, alice); err != nil {
		t.Fatal(err)
	}
	if n := fakeNetwork(t, f, "mlc-1001"); n.Subnets[0] != "10.231.0.128/26" {
		t.Fatalf("after two refusals: %+v", n)
	}
	// An engine that refuses everything ends the attempts.
	old := subnetBackoff
	subnetBackoff = func(int) time.Duration { return 0 }
	t.Cleanup(func() { subnetBackoff = old })
	f.RefuseSubnets(1000)
	_, err := netManager("10.200.0.0/16", f).ensureNetwork(ctx, bob)
	if !errs.Is(err, errs.Unavailable) || !strings.Contains(err.Error(), "refused 16 subnets") {
		t.Fatalf("endless refusals: %v", err)
	}
}

func TestEnsureNetworkNotOurs(t *testing.T) {
	ctx := context.Background()
	for _, pool := range []string{"", "10.231.0.0/24"} {
		f := enginetest.New()
		f.AddNetwork(engine.Network{ID: "x", Name: "mlc-1001", Driver: "macvlan", Subnets: []string{"192.168.1.0/24"}})
		_, err := netManager(pool, f).ensureNetwork(ctx, alice)
		if !errs.Is(err, errs.Conflict) || !strings.Contains(err.Error(), "mlc did not create it") {
			t.Fatalf("pool %q: %v", pool, err)
		}
	}
}

func TestDropNetworkIfEmptyFake(t *testing.T) {
	ctx := context.Background()
	f := enginetest.New()
	m := netManager("", f)
	if err := m.dropNetworkIfEmpty(ctx, alice); err != nil {
		t.Fatalf("missing network: %v", err)
	}
	name, _ := m.ensureNetwork(ctx, alice)
	id, err := f.Create(ctx, engine.Spec{Name: "mlc-1001-a", Image: testenv.Image, Network: name})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.dropNetworkIfEmpty(ctx, alice); err != nil {
		t.Fatalf("in use: %v", err)
	}
	fakeNetwork(t, f, name)
	f.Remove(ctx, id, true)
	if err := m.dropNetworkIfEmpty(ctx, alice); err != nil {
		t.Fatal(err)
	}
	nets, _ := f.Networks(ctx)
	for _, n := range nets {
		if n.Managed() {
			t.Fatalf("left: %+v", n)
		}
	}
	// A network of that name mlc did not make is left alone, quietly.
	f.AddNetwork(engine.Network{ID: "x", Name: "mlc-1001", Driver: "bridge"})
	if err := m.dropNetworkIfEmpty(ctx, alice); err != nil {
		t.Fatal(err)
	}
	fakeNetwork(t, f, "mlc-1001")
}

// With the real engine. These tests only create, inspect and remove networks
// and containers; they never send traffic to a container. Their pool is
// 10.231.0.0/23 (the engine package's tests use 10.231.2.0/24).

const netTestPool = "10.231.0.0/23" // eight /26

// netUsers are users with uids no one else uses, whose networks and
// containers are removed before and after the test.
func netUsers(t *testing.T, eng *engine.Client, n int) []Actor {
	t.Helper()
	base := 70000000 + (os.Getpid()%10000)*100
	var out []Actor
	for i := 0; i < n; i++ {
		out = append(out, Self(&identity.Caller{User: fmt.Sprintf("mlcnettest-%d", base+i), UID: base + i}))
	}
	testenv.LockNetworkTests(t)
	clean := func() {
		ctx := context.Background()
		for _, a := range out {
			name := engine.UserNetwork(a.Target.UID)
			for _, id := range strings.Fields(dockerOut("ps", "-aq", "--filter", "network="+name)) {
				dockerOut("rm", "-f", id)
			}
			for _, id := range strings.Fields(dockerOut("network", "ls", "-q", "--filter", "name=^"+name+"$")) {
				dockerOut("network", "rm", id)
			}
		}
		// Left by an earlier run that was killed (a run of this test in
		// another process waits for the lock, but other tests may be running).
		nets, _ := eng.Networks(ctx)
		for _, n := range nets {
			if strings.HasPrefix(n.Labels[engine.LabelUser], "mlcnettest-") && time.Since(n.Created) > 10*time.Minute {
				dockerOut("network", "rm", n.ID)
			}
		}
	}
	clean()
	t.Cleanup(clean)
	return out
}

func dockerOut(args ...string) string {
	out, _ := exec.Command("docker", args...).Output()
	return string(out)
}

func networkIDs(t *testing.T, name string) []string {
	t.Helper()
	return strings.Fields(testenv.Docker(t, "network", "ls", "-q", "--no-trunc", "--filter", "name=^"+name+"$"))
}

func subnetOf(t *testing.T, name string) netip.Prefix {
	t.Helper()
	s := testenv.Docker(t, "network", "inspect", "-f", "{{range .IPAM.Config}}{{.Subnet}}{{end}}", name)
	p, err := netip.ParsePrefix(s)
	if err != nil {
		t.Fatalf("network %s: subnet %q", name, s)
	}
	return p
}

func TestNetworkPerUserEngine(t *testing.T) {
	eng := testenv.Engine(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	users := netUsers(t, eng, 10)
	m := netManager(netTestPool, eng)
	pool := netip.MustParsePrefix(netTestPool)

	// Two users: distinct /26s from the pool; a second ensure changes nothing.
	var ids []string
	for _, a := range users[:2] {
		name, err := m.ensureNetwork(ctx, a)
		if err != nil || name != engine.UserNetwork(a.Target.UID) {
			t.Fatalf("%s: %q %v", a.Target.User, name, err)
		}
		have := networkIDs(t, name)
		if len(have) != 1 {
			t.Fatalf("%s: networks %v", name, have)
		}
		ids = append(ids, have[0])
		labels := testenv.Docker(t, "network", "inspect", "-f", `{{index .Labels "mlc.managed"}} {{index .Labels "mlc.user"}} {{index .Labels "mlc.uid"}}`, name)
		if want := fmt.Sprintf("true %s %d", a.Target.User, a.Target.UID); labels != want {
			t.Fatalf("%s: labels %q, want %q", name, labels, want)
		}
	}
	s0, s1 := subnetOf(t, engine.UserNetwork(users[0].Target.UID)), subnetOf(t, engine.UserNetwork(users[1].Target.UID))
	if s0.Bits() != 26 || s1.Bits() != 26 || !pool.Contains(s0.Addr()) || !pool.Contains(s1.Addr()) || s0.Overlaps(s1) {
		t.Fatalf("subnets %s and %s: want distinct /26s of %s", s0, s1, pool)
	}
	if _, err := m.ensureNetwork(ctx, users[0]); err != nil {
		t.Fatal(err)
	}
	if have := networkIDs(t, engine.UserNetwork(users[0].Target.UID)); len(have) != 1 || have[0] != ids[0] {
		t.Fatalf("second ensure: %v, want %s", have, ids[0])
	}

	// One user, 8 at once: one network, and every call names it.
	var wg sync.WaitGroup
	failed := make([]error, 8)
	names := make([]string, 8)
	for i := range failed {
		wg.Add(1)
		go func() {
			defer wg.Done()
			names[i], failed[i] = m.ensureNetwork(ctx, users[2])
		}()
	}
	wg.Wait()
	for i := range failed {
		if failed[i] != nil || names[i] != engine.UserNetwork(users[2].Target.UID) {
			t.Fatalf("concurrent ensure %d: %q %v", i, names[i], failed[i])
		}
	}
	if have := networkIDs(t, names[0]); len(have) != 1 {
		t.Fatalf("after 8 concurrent ensures: %d networks", len(have))
	}

	// Five other users at once: they race for the same subnets, and each
	// ends with its own. That fills the pool (eight /26).
	for i, a := range users[3:8] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, failed[i] = m.ensureNetwork(ctx, a)
		}()
	}
	wg.Wait()
	seen := map[netip.Prefix]string{}
	for i, a := range users[:8] {
		if i >= 3 && failed[i-3] != nil {
			t.Fatalf("%s: %v", a.Target.User, failed[i-3])
		}
		name := engine.UserNetwork(a.Target.UID)
		s := subnetOf(t, name)
		if s.Bits() != 26 || !pool.Contains(s.Addr()) || seen[s] != "" {
			t.Fatalf("%s: subnet %s (seen: %v)", name, s, seen)
		}
		seen[s] = name
	}
	_, err := m.ensureNetwork(ctx, users[8])
	if !errs.Is(err, errs.Unavailable) || !strings.Contains(err.Error(), "widen network_pool") {
		t.Fatalf("full pool: %v", err)
	}
	if len(networkIDs(t, engine.UserNetwork(users[8].Target.UID))) != 0 {
		t.Fatal("a network beyond the pool")
	}

	// Dropping: kept while a container is on it (running or stopped), removed when none is.
	a := users[0]
	name := engine.UserNetwork(a.Target.UID)
	id, err := eng.Create(ctx, engine.Spec{
		Name: fmt.Sprintf("mlcnettest-%d", a.Target.UID), Image: testenv.Image, User: "65534:65534",
		Cmd: []string{"sleep", "300"}, Network: name, PidsLimit: 32,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := eng.Start(ctx, id); err != nil {
		t.Fatal(err)
	}
	for _, state := range []string{"running", "stopped"} {
		if err := m.dropNetworkIfEmpty(ctx, a); err != nil {
			t.Fatalf("drop with a %s container: %v", state, err)
		}
		if have := networkIDs(t, name); len(have) != 1 {
			t.Fatalf("drop with a %s container removed the network", state)
		}
		eng.Kill(ctx, id)
	}
	if err := eng.Remove(ctx, id, true); err != nil {
		t.Fatal(err)
	}
	if err := m.dropNetworkIfEmpty(ctx, a); err != nil {
		t.Fatal(err)
	}
	if have := networkIDs(t, name); len(have) != 0 {
		t.Fatalf("empty network kept: %v", have)
	}
	if err := m.dropNetworkIfEmpty(ctx, a); err != nil {
		t.Fatalf("drop a missing network: %v", err)
	}
	// Its subnet is free again: the user who found the pool full gets it.
	if _, err := m.ensureNetwork(ctx, users[8]); err != nil {
		t.Fatal(err)
	}
	if s := subnetOf(t, engine.UserNetwork(users[8].Target.UID)); s != s0 {
		t.Fatalf("reused subnet %s, want %s", s, s0)
	}
}

// Without a pool, the engine picks the subnet from its default pools.
func TestNetworkDefaultPoolsEngine(t *testing.T) {
	eng := testenv.Engine(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a := netUsers(t, eng, 1)[0]
	m := netManager("", eng)
	name, err := m.ensureNetwork(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	subnetOf(t, name)
	if err := m.dropNetworkIfEmpty(ctx, a); err != nil {
		t.Fatal(err)
	}
	if have := networkIDs(t, name); len(have) != 0 {
		t.Fatalf("empty network kept: %v", have)
	}
}
