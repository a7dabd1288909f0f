package containers

import (
	"strings"
	"testing"

	"github.com/mlc-lab/mlc/config"
	"github.com/mlc-lab/mlc/engine"
	"github.com/mlc-lab/mlc/engine/enginetest"
	"github.com/mlc-lab/mlc/errs"
	"github.com/mlc-lab/mlc/identity"
)

// withPortStart makes the host's unprivileged port start n for one test.
func withPortStart(t *testing.T, n int) {
	old := unprivilegedPortStart
	unprivilegedPortStart = func() int { return n }
	t.Cleanup(func() { unprivilegedPortStart = old })
}

func TestCheckPorts(t *testing.T) {
	user := Self(&identity.Caller{User: "alice", UID: 1001})
	admin := Self(&identity.Caller{User: "boss", UID: 1002, Admin: true})
	port := func(host, ctr string) engine.Port {
		return engine.Port{HostIP: "127.0.0.1", HostPort: host, ContainerPort: ctr, Proto: "tcp"}
	}
	cases := []struct {
		name      string
		start     int
		rng       [2]int
		ports     []engine.Port
		user, adm string // "" allowed, else a part of the error (Permission unless told)
	}{
		{name: "none", start: 1024},
		{name: "unprivileged", start: 1024, ports: []engine.Port{port("8888", "8888"), port("1024", "80")}},
		{name: "privileged", start: 1024, ports: []engine.Port{port("8888", "8888"), port("80", "80")},
			user: "host port 80 is below 1024"},
		{name: "host's own start", start: 500, ports: []engine.Port{port("600", "80")}},
		{name: "host's own start, below", start: 500, ports: []engine.Port{port("499", "80")},
			user: "below 500, where this host's unprivileged ports start"},
		{name: "start 0 allows all", start: 0, ports: []engine.Port{port("1", "80")}},
		{name: "engine picks", start: 1024, ports: []engine.Port{port("", "8888")}},
		{name: "in range", start: 1024, rng: [2]int{20000, 20999}, ports: []engine.Port{port("20000", "80"), port("20999", "81")}},
		{name: "above range", start: 1024, rng: [2]int{20000, 20999}, ports: []engine.Port{port("21000", "80")},
			user: "host port 21000 is outside 20000-20999"},
		{name: "below range", start: 1024, rng: [2]int{20000, 20999}, ports: []engine.Port{port("19999", "80")},
			user: "outside 20000-20999"},
		{name: "range and privileged", start: 1024, rng: [2]int{1, 2000}, ports: []engine.Port{port("443", "443")},
			user: "below 1024"},
		{name: "range needs a host port", start: 1024, rng: [2]int{20000, 20999}, ports: []engine.Port{port("", "8888")},
			user: "HOSTPORT:8888 with HOSTPORT in 20000-20999"},
		{name: "host port range", start: 1024, rng: [2]int{20000, 20999}, ports: []engine.Port{port("20995-21002", "80")},
			user: "outside 20000-20999"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			withPortStart(t, c.start)
			m := &Manager{Cfg: &config.Config{Policies: config.Policies{PortRange: c.rng, MaxPorts: 8}}, Eng: enginetest.New()}
			for _, who := range []struct {
				a    Actor
				want string
			}{{user, c.user}, {admin, c.adm}} {
				err := m.checkPorts(who.a, c.ports)
				if who.want == "" {
					if err != nil {
						t.Errorf("%s: %v", who.a.Caller.User, err)
					}
					continue
				}
				if !errs.Is(err, errs.Permission) || !strings.Contains(err.Error(), who.want) {
					t.Errorf("%s: got %v (%v), want a permission error with %q", who.a.Caller.User, err, errs.KindOf(err), who.want)
				}
				if err != nil && strings.Contains(err.Error(), "\n") {
					t.Errorf("not one line: %q", err)
				}
			}
		})
	}
}

// Every published port is a root docker-proxy and a port taken from everyone:
// a non-admin's container gets at most policies.max_ports, ranges counted port by port.
func TestMaxPorts(t *testing.T) {
	withPortStart(t, 1024)
	m := &Manager{Cfg: &config.Config{Policies: config.Policies{MaxPorts: 3}}, Eng: enginetest.New()}
	p := func(h string) engine.Port { return engine.Port{HostPort: h, ContainerPort: "80", Proto: "tcp"} }
	alice := Self(&identity.Caller{User: "alice"})
	if err := m.checkPorts(alice, []engine.Port{p("20000"), p(""), p("20001")}); err != nil {
		t.Errorf("3 ports: %v", err)
	}
	for _, ports := range [][]engine.Port{{p("20000"), p(""), p("20001"), p("20002")}, {p("30000-30002"), p("")}} {
		if err := m.checkPorts(alice, ports); !errs.Is(err, errs.Quota) || !strings.Contains(err.Error(), "policies.max_ports") {
			t.Errorf("%v: %v", ports, err)
		}
	}
	if err := m.checkPorts(Self(&identity.Caller{User: "boss", Admin: true}), []engine.Port{p("30000-30099")}); err != nil {
		t.Errorf("admin: %v", err)
	}
}

func TestCheckPortsBadHostPort(t *testing.T) {
	withPortStart(t, 1024)
	m := &Manager{Cfg: &config.Config{Policies: config.Policies{MaxPorts: 8}}, Eng: enginetest.New()}
	err := m.checkPorts(Self(&identity.Caller{User: "alice"}), []engine.Port{{HostPort: "x", ContainerPort: "80", Proto: "tcp"}})
	if !errs.Is(err, errs.Usage) {
		t.Fatalf("got %v", err)
	}
}

func TestUnprivilegedPortStartReadsHost(t *testing.T) {
	if n := unprivilegedPortStart(); n < 0 || n > 65536 {
		t.Fatalf("unprivileged port start %d", n)
	}
}
