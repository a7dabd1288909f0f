// Package limits resolves one user's limits from a policy: built-in values,
// then the policy's defaults, then the user's group, then their override,
// field by field, remembering where each value came from.
package limits

import (
	"fmt"
	"sort"
	"strings"

	"github.com/mlc-lab/mlc/config"
	"github.com/mlc-lab/mlc/errs"
)

// Directory answers which unix groups a user is in. The system one uses the
// name service (so LDAP groups work); tests use a map.
type Directory interface {
	// Groups returns the user's unix group names, and whether the account exists.
	Groups(user string) (groups []string, exists bool, err error)
}

// Value is one resolved limit and the rule that set it.
type Value[T any] struct {
	Value  T      `json:"value"`
	Source string `json:"source"`
}

// Resolved is everything a user gets.
type Resolved struct {
	User          string                 `json:"user"`
	AccountExists bool                   `json:"account_exists"`
	Group         string                 `json:"group,omitempty"`
	Reason        string                 `json:"override_reason,omitempty"`
	GPUs          Value[int]             `json:"gpus"`
	CPUs          Value[float64]         `json:"cpus"`
	Memory        Value[config.Size]     `json:"memory"`
	MemorySwap    Value[config.Size]     `json:"memory_swap"`
	ShmSize       Value[config.Size]     `json:"shm_size"`
	PidsLimit     Value[int64]           `json:"pids_limit"`
	IdleTimeout   Value[config.Duration] `json:"idle_timeout"`
	MaxContainers Value[int]             `json:"max_containers"`
	MayCopy       Value[bool]            `json:"may_copy"`
	Policy        string                 `json:"policy_file"`
}

// Built-in values, used for a limit no level of the policy sets.
const BuiltIn = "built-in"

var builtIn = config.Limits{
	GPUs:          ptr(0),
	CPUs:          ptr(2.0),
	Memory:        ptr(config.Size(8 << 30)),
	ShmSize:       ptr(config.Size(1 << 30)),
	PidsLimit:     ptr(int64(4096)),
	IdleTimeout:   ptr(config.Never),
	MaxContainers: ptr(2),
	MayCopy:       ptr(true),
}

func ptr[T any](v T) *T { return &v }

// Resolve computes user's limits under cfg.
func Resolve(cfg *config.Config, dir Directory, user string) (*Resolved, error) {
	if !config.NamePattern.MatchString(user) {
		return nil, errs.New(errs.Usage, "%q is not a valid user name", user)
	}
	unixGroups, exists, err := dir.Groups(user)
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "looking up the groups of %s", user)
	}
	r := &Resolved{User: user, AccountExists: exists, Policy: cfg.Source}
	apply(r, builtIn, BuiltIn)
	if cfg.Policies.MaxContainersPerUser != nil {
		r.MaxContainers = Value[int]{*cfg.Policies.MaxContainersPerUser, "policies.max_containers_per_user"}
	}
	if cfg.Policies.MayCopy != nil {
		r.MayCopy = Value[bool]{*cfg.Policies.MayCopy, "policies.may_copy"}
	}
	apply(r, cfg.Defaults, "default")

	g, err := GroupOf(cfg, user, unixGroups)
	if err != nil {
		return nil, err
	}
	if g != nil {
		r.Group = g.Name
		apply(r, g.Limits, "group "+g.Name)
	}
	if o, ok := cfg.Override(user); ok {
		r.Reason = o.Reason
		src := "override"
		if o.Reason != "" {
			src = fmt.Sprintf("override (%s)", o.Reason)
		}
		apply(r, o.Limits, src)
	}
	// memory_swap counts memory plus swap. Without allow_swap, or when no level
	// set it, it equals memory: no swap.
	if !cfg.Policies.AllowSwap || r.MemorySwap.Source == "" || r.MemorySwap.Value < r.Memory.Value {
		why := "= memory (policies.allow_swap is false)"
		if cfg.Policies.AllowSwap {
			why = "= memory (no swap set)"
		}
		r.MemorySwap = Value[config.Size]{r.Memory.Value, why}
	}
	return r, nil
}

// GroupOf is the policy group the user belongs to, by name or through one of
// their unix groups; nil when none. Belonging to two is an error.
func GroupOf(cfg *config.Config, user string, unixGroups []string) (*config.Group, error) {
	inUnix := map[string]bool{}
	for _, g := range unixGroups {
		inUnix[g] = true
	}
	var found []*config.Group
	var via []string
	for i := range cfg.Groups {
		g := &cfg.Groups[i]
		for _, m := range g.Members {
			if m == user || (strings.HasPrefix(m, "@") && inUnix[m[1:]]) {
				found = append(found, g)
				via = append(via, m)
				break
			}
		}
	}
	switch len(found) {
	case 0:
		return nil, nil
	case 1:
		return found[0], nil
	}
	return nil, errs.New(errs.Config, "%s: user %s is in groups %q (as %s, line %d) and %q (as %s, line %d); a user may be in one group only",
		cfg.Source, user, found[0].Name, via[0], found[0].Line, found[1].Name, via[1], found[1].Line)
}

func apply(r *Resolved, l config.Limits, src string) {
	if l.GPUs != nil {
		r.GPUs = Value[int]{*l.GPUs, src}
	}
	if l.CPUs != nil {
		r.CPUs = Value[float64]{*l.CPUs, src}
	}
	if l.Memory != nil {
		r.Memory = Value[config.Size]{*l.Memory, src}
	}
	if l.MemorySwap != nil {
		r.MemorySwap = Value[config.Size]{*l.MemorySwap, src}
	}
	if l.ShmSize != nil {
		r.ShmSize = Value[config.Size]{*l.ShmSize, src}
	}
	if l.PidsLimit != nil {
		r.PidsLimit = Value[int64]{*l.PidsLimit, src}
	}
	if l.IdleTimeout != nil {
		r.IdleTimeout = Value[config.Duration]{*l.IdleTimeout, src}
	}
	if l.MaxContainers != nil {
		r.MaxContainers = Value[int]{*l.MaxContainers, src}
	}
	if l.MayCopy != nil {
		r.MayCopy = Value[bool]{*l.MayCopy, src}
	}
}

// Row is one limit as text, for tables.
type Row struct{ Name, Value, Source string }

// Rows lists the limits in LimitKeys order, human-readable.
func (r *Resolved) Rows() []Row {
	return []Row{
		{"gpus", fmt.Sprint(r.GPUs.Value), r.GPUs.Source},
		{"cpus", fmt.Sprint(r.CPUs.Value), r.CPUs.Source},
		{"memory", r.Memory.Value.String(), r.Memory.Source},
		{"memory_swap", r.MemorySwap.Value.String(), r.MemorySwap.Source},
		{"shm_size", r.ShmSize.Value.String(), r.ShmSize.Source},
		{"pids_limit", fmt.Sprint(r.PidsLimit.Value), r.PidsLimit.Source},
		{"idle_timeout", r.IdleTimeout.Value.String(), r.IdleTimeout.Source},
		{"max_containers", fmt.Sprint(r.MaxContainers.Value), r.MaxContainers.Source},
		{"may_copy", fmt.Sprint(r.MayCopy.Value), r.MayCopy.Source},
	}
}

// DockerArgs are the `docker run` flags that give a container these limits.
// GPUs are a per-user quota and are allocated by mlc, so they have no flag here.
func (r *Resolved) DockerArgs() []string {
	return []string{
		"--cpus", fmt.Sprint(r.CPUs.Value),
		"--memory", r.Memory.Value.Flag(),
		"--memory-swap", r.MemorySwap.Value.Flag(),
		"--shm-size", r.ShmSize.Value.Flag(),
		"--pids-limit", fmt.Sprint(r.PidsLimit.Value),
		"--ulimit", "memlock=-1:-1",
		"--ulimit", "stack=67108864:67108864",
	}
}

// MapDirectory is a Directory backed by a map: user -> unix groups.
type MapDirectory map[string][]string

// Groups implements Directory.
func (m MapDirectory) Groups(user string) ([]string, bool, error) {
	g, ok := m[user]
	out := append([]string(nil), g...)
	sort.Strings(out)
	return out, ok, nil
}

// MayShow says whether caller may see user's limits: their own, or anyone's
// for an admin.
func MayShow(caller string, admin bool, user string) error {
	if user != caller && !admin {
		return errs.New(errs.Permission, "only admins may show another user's limits")
	}
	return nil
}
