package engine

import (
	"context"
	"errors"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"

	"github.com/mlc-lab/mlc/errs"
)

// ErrSubnetTaken is in the chain of EnsureNetwork's error when the engine
// refused the requested subnet because it overlaps another network's (most
// often one another mlc created a moment before).
var ErrSubnetTaken = errors.New("the subnet overlaps another network's")

// bridgeNameOption names the Linux bridge of a bridge network.
const bridgeNameOption = "com.docker.network.bridge.name"

// NetworkSpec is a bridge network mlc creates.
type NetworkSpec struct {
	Name   string
	Subnet string // IPv4 CIDR; "" lets the engine pick from its default address pools
	Labels map[string]string
}

// Network is what mlc knows of one network.
type Network struct {
	ID      string            `json:"id"`
	Name    string            `json:"name"`
	Driver  string            `json:"driver"`
	Subnets []string          `json:"subnets"` // IPv4 only
	Labels  map[string]string `json:"labels"`
	Created time.Time         `json:"created"`
}

// Managed is whether mlc created n.
func (n Network) Managed() bool { return n.Labels[LabelManaged] == "true" }

func toNetwork(s network.Summary) Network {
	n := Network{ID: s.ID, Name: s.Name, Driver: s.Driver, Labels: s.Labels, Created: s.Created}
	for _, c := range s.IPAM.Config {
		if p, err := netip.ParsePrefix(c.Subnet); err == nil && p.Addr().Is4() {
			n.Subnets = append(n.Subnets, c.Subnet)
		}
	}
	return n
}

// Networks lists all the engine's networks, mlc's and others', with their
// IPv4 subnets.
func (c *Client) Networks(ctx context.Context) ([]Network, error) {
	list, err := c.api.NetworkList(ctx, network.ListOptions{})
	if err != nil {
		return nil, c.classify(err, "listing networks")
	}
	out := make([]Network, 0, len(list))
	for _, s := range list {
		out = append(out, toNetwork(s))
	}
	return out, nil
}

// named returns the networks called exactly name (the engine's name filter
// also matches parts of names).
func (c *Client) named(ctx context.Context, name string) ([]Network, error) {
	list, err := c.api.NetworkList(ctx, network.ListOptions{Filters: filters.NewArgs(filters.Arg("name", name))})
	if err != nil {
		return nil, c.classify(err, "listing networks")
	}
	var out []Network
	for _, s := range list {
		if s.Name == name {
			out = append(out, toNetwork(s))
		}
	}
	return out, nil
}

// EnsureNetwork returns the id of the bridge network s.Name, creating it with
// s's subnet and labels when there is none. An existing network is adopted
// only when mlc made it (labelled mlc.managed=true, bridge driver); its subnet
// is whatever it has.
//
// The network's Linux bridge is named like the network (when the name fits
// the 15 characters of an interface name), which also makes the engine refuse
// a twin: on API 1.41 (Debian's docker.io 20.10) the SDK sends CheckDuplicate,
// but the daemon checks names before it creates, so concurrent creates of one
// name all succeed; its bridge driver does refuse a second network with the
// same bridge name. Where twins appear anyway, the one in use (else the
// oldest) is kept and the others are removed. A refused name is looked up
// and returned. When the engine refuses s.Subnet as overlapping another
// network, the error wraps ErrSubnetTaken.
func (c *Client) EnsureNetwork(ctx context.Context, s NetworkSpec) (string, error) {
	var createErr error
	for try := 0; try < 20; try++ {
		nets, err := c.named(ctx, s.Name)
		if err != nil {
			return "", err
		}
		switch {
		case len(nets) == 1:
			n := nets[0]
			if !n.Managed() || n.Driver != "bridge" {
				return "", errs.New(errs.Conflict, "network %s exists but mlc did not create it (driver %s, no %s=true label): an admin must remove or rename it", s.Name, n.Driver, LabelManaged)
			}
			return n.ID, nil
		case len(nets) > 1:
			if err := c.keepOne(ctx, nets); err != nil {
				return "", err
			}
			continue
		case createErr != nil && !nameTaken(createErr):
			return "", c.createError(createErr, s)
		case createErr != nil:
			// Refused for its name, yet not listed: the engine is still
			// making the other one. Look again in a moment.
			if err := sleep(ctx, time.Duration(try+1)*10*time.Millisecond); err != nil {
				return "", err
			}
			createErr = nil
			continue
		}
		opts := network.CreateOptions{Driver: "bridge", Labels: s.Labels, Options: map[string]string{}}
		if len(s.Name) <= 15 {
			opts.Options[bridgeNameOption] = s.Name
		}
		if s.Subnet != "" {
			opts.IPAM = &network.IPAM{Driver: "default", Config: []network.IPAMConfig{{Subnet: s.Subnet}}}
		}
		// Whatever the answer, the next listing says what exists now.
		_, createErr = c.api.NetworkCreate(ctx, s.Name, opts)
		if createErr != nil && ctx.Err() != nil {
			return "", errs.Wrap(errs.Interrupted, ctx.Err(), "creating network %s", s.Name)
		}
	}
	return "", errs.New(errs.Conflict, "network %s: creating it kept racing with other mlc commands; try again", s.Name)
}

// nameTaken is whether the engine refused a network create because a
// network of that name, or with that bridge, exists or is being made.
func nameTaken(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "already exists") || strings.Contains(msg, "same bridge name")
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return errs.Wrap(errs.Interrupted, ctx.Err(), "waiting for a network")
	}
}

// createError classifies a refused network create that left no network of
// that name.
func (c *Client) createError(err error, s NetworkSpec) error {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "non-overlapping"): // "could not find an available, non-overlapping IPv4 address pool"
		return errs.New(errs.Unavailable, "network %s: Docker's default address pools are used up (they hold about 30 networks): an admin must set policies.network_pool in resource-limits.yaml", s.Name)
	case s.Subnet != "" && strings.Contains(msg, "overlap"): // "Pool overlaps with other one on this address space"
		return errs.Wrap(errs.Conflict, ErrSubnetTaken, "network %s: subnet %s: %s", s.Name, s.Subnet, firstLine(msg))
	}
	return c.classify(err, "creating network "+s.Name)
}

// keepOne removes twins (networks of one name): it keeps the one with
// containers attached, else the oldest (then the smallest id), so that every
// mlc resolving the same twins keeps the same one.
func (c *Client) keepOne(ctx context.Context, nets []Network) error {
	inUse := map[string]bool{}
	for _, n := range nets {
		ins, err := c.api.NetworkInspect(ctx, n.ID, network.InspectOptions{})
		if err != nil && !errdefs.IsNotFound(err) {
			return c.classify(err, "inspecting network "+n.Name)
		}
		inUse[n.ID] = len(ins.Containers) > 0
	}
	sort.Slice(nets, func(i, j int) bool {
		a, b := nets[i], nets[j]
		if inUse[a.ID] != inUse[b.ID] {
			return inUse[a.ID]
		}
		if !a.Created.Equal(b.Created) {
			return a.Created.Before(b.Created)
		}
		return a.ID < b.ID
	})
	for _, n := range nets {
		if !n.Managed() {
			return errs.New(errs.Conflict, "%d networks are named %s and %s was not created by mlc: an admin must remove or rename it", len(nets), n.Name, short(n.ID))
		}
	}
	for _, n := range nets[1:] {
		err := c.api.NetworkRemove(ctx, n.ID)
		if err != nil && !errdefs.IsNotFound(err) {
			return errs.New(errs.Conflict, "%d networks are named %s and %s cannot be removed (%s): an admin must remove all but one", len(nets), n.Name, short(n.ID), firstLine(err.Error()))
		}
	}
	return nil
}

// RemoveNetwork removes the mlc network name unless a container is on it. A
// stopped container has no endpoint on its network, so the engine would
// remove the network and the container could then no longer start: any
// container configured with the network, running or not, keeps it. An
// in-use network is errs.Conflict, a missing one errs.NotFound, and one mlc
// did not create is errs.Conflict and left alone.
func (c *Client) RemoveNetwork(ctx context.Context, name string) error {
	ins, err := c.api.NetworkInspect(ctx, name, network.InspectOptions{})
	if err != nil {
		return c.classify(err, "network "+name)
	}
	if ins.Labels[LabelManaged] != "true" {
		return errs.New(errs.Conflict, "network %s was not created by mlc: left alone", name)
	}
	if len(ins.Containers) > 0 {
		return errs.New(errs.Conflict, "network %s is in use by %d container(s)", name, len(ins.Containers))
	}
	f := filters.NewArgs(filters.Arg("network", ins.Name), filters.Arg("network", ins.ID))
	list, err := c.api.ContainerList(ctx, container.ListOptions{All: true, Filters: f})
	if err != nil {
		return c.classify(err, "listing the containers of network "+name)
	}
	if len(list) > 0 {
		return errs.New(errs.Conflict, "network %s is in use by %d container(s)", name, len(list))
	}
	err = c.api.NetworkRemove(ctx, ins.ID)
	if err != nil && strings.Contains(err.Error(), "active endpoints") {
		// 20.10 answers 403 Forbidden, which classify would call a permission problem.
		return errs.Wrap(errs.Conflict, err, "network %s is in use", name)
	}
	return c.classify(err, "removing network "+name)
}
