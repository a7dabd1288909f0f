package containers

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/netip"
	"sort"
	"strconv"
	"time"

	"github.com/mlc-lab/mlc/engine"
	"github.com/mlc-lab/mlc/errs"
)

// Per-user networks. Each user's containers join that user's own bridge
// network, mlc-<uid>: they reach each other, and the engine's isolation
// rules between bridges keep them apart from every other user's. Docker's
// default address pools hold only about 30 bridge networks, so a lab with
// many users sets policies.network_pool, and each network gets a
// /network_prefix from it. A network is removed when its last container is.

// subnetTries bounds how often ensureNetwork takes the next subnet after
// the engine refused one (another mlc took it a moment before).
const subnetTries = 16

// ensureNetwork returns the name of the target user's network, creating it
// when missing. The caller holds the user's lock; other users' creates may
// race for the same subnet, and the engine refuses all but one of them.
func (m *Manager) ensureNetwork(ctx context.Context, a Actor) (string, error) {
	name := engine.UserNetwork(a.Target.UID)
	spec := engine.NetworkSpec{Name: name, Labels: map[string]string{
		engine.LabelManaged: "true",
		engine.LabelUser:    a.Target.User,
		engine.LabelUID:     strconv.Itoa(a.Target.UID),
	}}
	pool := m.Cfg.Policies.NetworkPool
	if pool == "" {
		if _, err := m.Eng.EnsureNetwork(ctx, spec); err != nil {
			return "", err
		}
		return name, nil
	}
	// Subnets the engine refused as taken. A refusal may come from a create
	// still in flight (another user's, or this user's own from a concurrent
	// mlc) that is not listed yet and may yet fail, so after one the next try
	// waits a moment, and when only refused subnets are left the refusals are
	// forgotten and the listing alone decides.
	var refused []string
	for try := 0; try < subnetTries; try++ {
		if try > 0 {
			if err := pause(ctx, subnetBackoff(try)); err != nil {
				return "", err
			}
		}
		nets, err := m.Eng.Networks(ctx)
		if err != nil {
			return "", err
		}
		var used []string
		for _, n := range nets {
			if n.Name == name {
				if !n.Managed() {
					return "", errs.New(errs.Conflict, "network %s exists but mlc did not create it: an admin must remove or rename it", name)
				}
				return name, nil
			}
			used = append(used, n.Subnets...)
		}
		spec.Subnet, err = nextSubnet(pool, m.Cfg.Policies.NetworkPrefix, append(used, refused...))
		if errs.Is(err, errs.Unavailable) && len(refused) > 0 {
			refused = nil
			spec.Subnet, err = nextSubnet(pool, m.Cfg.Policies.NetworkPrefix, used)
		}
		if err != nil {
			return "", err
		}
		_, err = m.Eng.EnsureNetwork(ctx, spec)
		if errors.Is(err, engine.ErrSubnetTaken) {
			refused = append(refused, spec.Subnet)
			continue
		}
		if err != nil {
			return "", err
		}
		return name, nil
	}
	return "", errs.New(errs.Unavailable, "network %s: the engine refused %d subnets of network_pool %s as taken; try again, and if this persists an admin should check `docker network ls` for networks overlapping the pool", name, subnetTries, pool)
}

// subnetBackoff is the wait before the try-th attempt at a subnet: growing,
// with jitter so racing mlc commands spread out. Tests shorten it.
var subnetBackoff = func(try int) time.Duration {
	return time.Duration(min(try, 10))*15*time.Millisecond + rand.N(15*time.Millisecond)
}

func pause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return errs.Wrap(errs.Interrupted, ctx.Err(), "waiting for a network")
	}
}

// dropNetworkIfEmpty removes the target user's network when no container,
// running or stopped, mlc's or not, is on it. A missing or busy network is
// not an error.
func (m *Manager) dropNetworkIfEmpty(ctx context.Context, a Actor) error {
	err := m.Eng.RemoveNetwork(ctx, engine.UserNetwork(a.Target.UID))
	if err == nil || errs.Is(err, errs.NotFound) || errs.Is(err, errs.Conflict) {
		return nil
	}
	return err
}

// nextSubnet is the first /prefix of pool that overlaps none of used (CIDRs;
// IPv6 and unreadable ones are ignored).
func nextSubnet(pool string, prefix int, used []string) (string, error) {
	p, err := netip.ParsePrefix(pool)
	if err != nil || !p.Addr().Is4() {
		return "", errs.New(errs.Config, "policies.network_pool %q is not an IPv4 CIDR like 10.200.0.0/16", pool)
	}
	p = p.Masked()
	if prefix < p.Bits() || prefix > 30 {
		return "", errs.New(errs.Config, "policies.network_prefix %d must lie between the pool's own /%d and 30", prefix, p.Bits())
	}
	var taken []netip.Prefix
	for _, u := range used {
		if q, err := netip.ParsePrefix(u); err == nil && q.Addr().Is4() && q.Overlaps(p) {
			taken = append(taken, q.Masked())
		}
	}
	sort.Slice(taken, func(i, j int) bool { return taken[i].Addr().Less(taken[j].Addr()) })
	size := uint64(1) << (32 - prefix)
	at := uint64(v4(p.Addr()))
	end := at + uint64(1)<<(32-p.Bits()) // one past the pool
	// Sweep the pool once: a candidate that overlaps a taken network moves
	// past it (aligned to the subnet size); the first that overlaps none is free.
	for _, q := range taken {
		qs := uint64(v4(q.Addr()))
		qe := qs + uint64(1)<<(32-q.Bits())
		if qe <= at {
			continue
		}
		if qs >= at+size {
			break
		}
		at = (max(at+size, qe) + size - 1) / size * size
	}
	if at+size <= end {
		return netip.PrefixFrom(fromV4(uint32(at)), prefix).String(), nil
	}
	return "", errs.New(errs.Unavailable, "no free /%d left in policies.network_pool %s (%d networks use it): an admin must widen network_pool (or lengthen network_prefix) in resource-limits.yaml", prefix, p, len(taken))
}

func v4(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func fromV4(x uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(x >> 24), byte(x >> 16), byte(x >> 8), byte(x)})
}
