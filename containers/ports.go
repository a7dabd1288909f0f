package containers

import (
	"os"
	"strconv"
	"strings"

	"github.com/mlc-lab/mlc/engine"
	"github.com/mlc-lab/mlc/errs"
)

// unprivilegedPortStart is the host's net.ipv4.ip_unprivileged_port_start:
// ports below it need privileges to bind. Tests replace it.
var unprivilegedPortStart = func() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_unprivileged_port_start")
	if err != nil {
		return 1024
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || n < 0 {
		return 1024
	}
	return n
}

// checkPorts applies the policy's rules to the host ports a non-admin asks
// to publish: none below the host's unprivileged port start (the engine
// binds as root, so it would bind them for anyone), and, when
// policies.port_range is set, all within it, which also means an explicit
// host port: the engine would pick one from the ephemeral range. Admins are
// exempt.
func (m *Manager) checkPorts(a Actor, ports []engine.Port) error {
	if a.Caller.Admin || len(ports) == 0 {
		return nil
	}
	rng := m.Cfg.Policies.PortRange
	hasRange := rng != [2]int{}
	low := unprivilegedPortStart()
	// Each published port is a root process (docker-proxy) outside the
	// user's cgroup, and a port taken from everyone: they are counted.
	count := 0
	for _, p := range ports {
		if first, last, ok := hostPorts(p.HostPort); ok {
			count += last - first + 1
		} else {
			count++
		}
	}
	if max := m.Cfg.Policies.MaxPorts; count > max {
		return errs.New(errs.Quota, "%d published ports is more than the %d a container may have (policies.max_ports)", count, max)
	}
	for _, p := range ports {
		what := "-p " + p.HostPort + ":" + p.ContainerPort + "/" + p.Proto
		if p.HostPort == "" {
			if hasRange {
				return errs.New(errs.Permission, "-p %s/%s: give a host port, HOSTPORT:%s with HOSTPORT in %d-%d (policies.port_range); without one the engine picks any free port", p.ContainerPort, p.Proto, p.ContainerPort, rng[0], rng[1])
			}
			continue
		}
		first, last, ok := hostPorts(p.HostPort)
		if !ok {
			return errs.New(errs.Usage, "%s: %q is not a port number (1-65535)", what, p.HostPort)
		}
		if int(first) < low {
			return errs.New(errs.Permission, "%s: host port %d is below %d, where this host's unprivileged ports start (net.ipv4.ip_unprivileged_port_start); only admins may publish it", what, first, low)
		}
		if hasRange && (int(first) < rng[0] || int(last) > rng[1]) {
			return errs.New(errs.Permission, "%s: host port %s is outside %d-%d, the ports users may publish (policies.port_range)", what, p.HostPort, rng[0], rng[1])
		}
	}
	return nil
}

// hostPorts reads "PORT" or "FIRST-LAST".
func hostPorts(s string) (first, last int, ok bool) {
	a, b, isRange := strings.Cut(s, "-")
	if !isRange {
		b = a
	}
	first, err1 := strconv.Atoi(a)
	last, err2 := strconv.Atoi(b)
	if err1 != nil || err2 != nil || first < 1 || last > 65535 || last < first {
		return 0, 0, false
	}
	return first, last, true
}
