// Package config is the schema of resource-limits.yaml, its strict loader
// (every error as FILE:LINE: message, all of them at once), the embedded
// default policy and the rule that finds the file to use.
package config

import (
	_ "embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/mlc-lab/mlc/errs"
)

//go:embed default.yaml
var defaultYAML []byte

// EmbeddedName is the Source of the compiled-in default policy.
const EmbeddedName = "<embedded default>"

// SystemPath is where an installed policy lives. It is fixed at build time
// (-ldflags -X github.com/mlc-lab/mlc/config.SystemPath=...), never taken
// from the environment, because under sudo it decides what users may do.
var SystemPath = "/etc/mlc/resource-limits.yaml"

// DefaultWorkspaceRoot is where workspaces live unless policies.workspace_root
// says otherwise. It is not below the state directory, which is 0700.
const DefaultWorkspaceRoot = "/var/lib/mlc-workspaces"

// Limits are the values a policy level (defaults, a group, an override) may set.
// A nil field is not set at that level.
type Limits struct {
	GPUs          *int      `json:"gpus,omitempty"`
	CPUs          *float64  `json:"cpus,omitempty"`
	Memory        *Size     `json:"memory,omitempty"`
	MemorySwap    *Size     `json:"memory_swap,omitempty"`
	ShmSize       *Size     `json:"shm_size,omitempty"`
	PidsLimit     *int64    `json:"pids_limit,omitempty"`
	IdleTimeout   *Duration `json:"idle_timeout,omitempty"`
	MaxContainers *int      `json:"max_containers,omitempty"`
	MayCopy       *bool     `json:"may_copy,omitempty"`
}

// LimitKeys are the limit names, in the order they are shown.
var LimitKeys = []string{"gpus", "cpus", "memory", "memory_swap", "shm_size", "pids_limit", "idle_timeout", "max_containers", "may_copy"}

// Group is a named set of users sharing limits.
type Group struct {
	Name    string
	Members []string // user names, or @unixgroup
	Limits  Limits
	Line    int
}

// Override is one user's own limits and why they have them.
type Override struct {
	User   string
	Reason string
	Limits Limits
	Line   int
}

// Policies are the rules that are not per-user numbers.
type Policies struct {
	MaxContainersPerUser *int     // same as defaults.max_containers
	AllowRoot            bool     // processes may run as root in containers
	AllowSwap            bool     // memory_swap may exceed memory
	BindAddress          string   // host address ports are published on
	WorkspaceRoot        string   // root-owned directory holding <user>/<workspace>; what /workspace mounts
	WorkspaceLink        string   // directory in the home (~/...) where mlc links each workspace; "" for none
	MountRoots           []string // --data/--models must lie below one of these (or the user's home)
	PortRange            [2]int   // host ports non-admins may publish ([0,0]: any unprivileged port)
	MaxPorts             int      // host ports a non-admin's container may publish
	NetworkPool          string   // CIDR the per-user networks' subnets come from; "" lets Docker choose
	NetworkPrefix        int      // prefix length of each per-user subnet taken from NetworkPool
	Capabilities         []string // capabilities containers may be given
	Devices              []string // host devices containers are given
	MayCopy              *bool    // the default of the may_copy limit (mlc copy to and from this server)
	SharedWorkspaces     bool     // workspace_root is the same storage on every server: copies do not sync it
}

// Server is one of the lab's servers, reached over OpenSSH as the user.
type Server struct {
	Name string // what users type: --server NAME, --to NAME
	SSH  string // ssh destination (host name or address; never user@host: users log in as themselves)
	Port int    // 0: ssh's default (or the user's ~/.ssh/config)
	MLC  string // mlc's path there; "": the same path as here
	Line int
}

// Image is a catalogue entry.
type Image struct {
	Alias     string
	Image     string
	Framework string
	Version   string
	Line      int
}

// GPU is the gpu section.
type GPU struct {
	Mode           string   // exclusive | shared
	MaxPerGPU      int      // containers per GPU in shared mode
	Strategy       string   // spread | pack | last-used
	Runtime        string   // nvidia | env
	FakeCount      int      // fake GPUs where NVML is absent
	HoldAfterStop  Duration // keep GPUs this long after a stop; never = while the container exists
	PendingTimeout Duration // a pending claim older than this with no container is released
}

// Cleanup is the cleanup section.
type Cleanup struct {
	IdleCPUPercent     float64     // below this average CPU a container is idle
	IdleGPUPercent     float64     // below this average GPU use a container is idle
	IdleNetBytes       Size        // below this much traffic (in + out) per sample interval a container is idle
	RemoveStoppedAfter Duration    // remove containers stopped this long; never = keep
	PruneImages        bool        // remove dangling images (and, with ImageMaxAge, old unused ones)
	ImageMaxAge        Duration    // unused images older than this are removed too; never = only dangling
	MinSamples         int         // samples that must cover an idle time before it is judged
	MaxSampleAge       Duration    // the latest sample must be this recent for any idle judgement
	Grace              Duration    // containers started less than this ago are not judged idle
	WarnAt             []float64   // fractions of the idle timeout at which the owner is warned
	KeepAliveMax       Duration    // a /workspace/.keep-alive younger than this postpones a stop
	StopTimeout        int         // seconds a stopped container's processes get before SIGKILL
	HighDemand         *HighDemand // nil: timeouts never shortened
}

// HighDemand shortens idle timeouts while GPUs are scarce.
type HighDemand struct {
	GPUFraction float64 // at least this share of GPUs allocated ...
	Factor      float64 // ... and someone waiting: timeouts times this
}

// Notify is how owners hear of cleanup beyond their terminals and workspace.
type Notify struct {
	Command string // run with sh -c, the message on stdin; "" for none
}

// Monitor is the monitor section: the usage history and the exporter.
type Monitor struct {
	Retention   Duration // history older than this is deleted; never = kept
	Interval    Duration // how often `mlc monitor serve` samples
	Listen      string   // the exporter's address, host:port
	StatsWindow Duration // the span `mlc stats` measures CPU over
	TokenFile   string   // a file holding the bearer token scrapes must send; "" for none
}

// Config is a loaded policy.
type Config struct {
	Source        string // file path, or EmbeddedName
	Defaults      Limits
	Groups        []Group
	UserOverrides []Override
	Policies      Policies
	Images        []Image
	GPU           GPU
	Cleanup       Cleanup
	Notify        Notify
	Monitor       Monitor
	Protected     []string
	Admins        []string
	Servers       []Server
	StateDir      string
	AuditLog      string
}

// Default is the embedded policy. It is valid; a test keeps it so.
func Default() *Config {
	c, err := Parse(EmbeddedName, defaultYAML)
	if err != nil {
		panic("embedded default policy is invalid: " + err.Error())
	}
	return c
}

// Locate picks the policy file: the --config flag, then MLC_CONFIG, then
// SystemPath when it exists; "" means the embedded default.
func Locate(flag string) string {
	if flag != "" {
		return flag
	}
	if env := os.Getenv("MLC_CONFIG"); env != "" {
		return env
	}
	if _, err := os.Stat(SystemPath); err == nil {
		return SystemPath
	}
	return ""
}

// LoadFrom loads Locate(flag)'s file, or the embedded default, and applies
// the MLC_STATE_DIR, MLC_AUDIT_LOG, MLC_WORKSPACE_ROOT and MLC_FAKE_GPUS
// overrides (never under sudo for a user: see LoadSystem).
func LoadFrom(flag string) (*Config, error) {
	c, err := loadPath(Locate(flag))
	if err != nil {
		return nil, err
	}
	return c, c.applyEnv()
}

// LoadSystem loads SystemPath (or the embedded default where it does not
// exist) and ignores the environment: what sudo runs for a user.
func LoadSystem() (*Config, error) {
	p := ""
	if _, err := os.Stat(SystemPath); err == nil {
		p = SystemPath
	}
	return loadPath(p)
}

func loadPath(p string) (*Config, error) {
	if p == "" {
		return Default(), nil
	}
	return Load(p)
}

func (c *Config) applyEnv() error {
	if v := os.Getenv("MLC_STATE_DIR"); v != "" {
		c.StateDir = v
	}
	if v := os.Getenv("MLC_AUDIT_LOG"); v != "" {
		c.AuditLog = v
	}
	if v := os.Getenv("MLC_WORKSPACE_ROOT"); v != "" {
		if !filepath.IsAbs(v) {
			return errs.New(errs.Config, "MLC_WORKSPACE_ROOT=%q is not an absolute path", v)
		}
		c.Policies.WorkspaceRoot = filepath.Clean(v)
	}
	if v := os.Getenv("MLC_FAKE_GPUS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 64 {
			return errs.New(errs.Config, "MLC_FAKE_GPUS=%q is not a number from 0 to 64", v)
		}
		c.GPU.FakeCount = n
	}
	return nil
}

// Load reads and parses one file. Every failure is of kind errs.Config.
func Load(path string) (*Config, error) {
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, errs.New(errs.Config, "%s: no such file", path)
	case errors.Is(err, fs.ErrPermission):
		return nil, errs.New(errs.Config, "%s: permission denied", path)
	case err != nil:
		return nil, errs.Wrap(errs.Config, err, "%s", path)
	case st.IsDir():
		return nil, errs.New(errs.Config, "%s: is a directory, not a policy file", path)
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrPermission) {
		return nil, errs.New(errs.Config, "%s: permission denied", path)
	} else if err != nil {
		return nil, errs.Wrap(errs.Config, err, "%s: cannot read", path)
	}
	return Parse(path, data)
}

// Group returns the named group.
func (c *Config) Group(name string) (*Group, bool) {
	for i := range c.Groups {
		if c.Groups[i].Name == name {
			return &c.Groups[i], true
		}
	}
	return nil, false
}

// Override returns the user's override.
func (c *Config) Override(user string) (*Override, bool) {
	for i := range c.UserOverrides {
		if c.UserOverrides[i].User == user {
			return &c.UserOverrides[i], true
		}
	}
	return nil, false
}

// ImageAlias returns the catalogue entry with this alias (case-insensitive).
func (c *Config) ImageAlias(alias string) (*Image, bool) {
	for i := range c.Images {
		if strings.EqualFold(c.Images[i].Alias, alias) {
			return &c.Images[i], true
		}
	}
	return nil, false
}

// Summary is the one-line description `mlc limits check` prints.
func (c *Config) Summary() string {
	users := map[string]bool{}
	for _, g := range c.Groups {
		for _, m := range g.Members {
			if !strings.HasPrefix(m, "@") {
				users[m] = true
			}
		}
	}
	for _, o := range c.UserOverrides {
		users[o.User] = true
	}
	return fmt.Sprintf("%s: valid: %d users named, %d groups, %d overrides, %d images, %d admins",
		c.Source, len(users), len(c.Groups), len(c.UserOverrides), len(c.Images), len(c.Admins))
}

// ErrorList is every problem found in one file. It is of kind errs.Config.
type ErrorList []Error

// Error is one problem at a line of a file.
type Error struct {
	File string
	Line int
	Msg  string
}

func (e Error) String() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.File, e.Msg)
}

func (l ErrorList) Error() string {
	s := make([]string, len(l))
	for i, e := range l {
		s[i] = e.String()
	}
	return strings.Join(s, "\n")
}

// ErrKind makes errs.KindOf classify an ErrorList as a config error.
func (l ErrorList) ErrKind() errs.Kind { return errs.Config }

// MatchProtected is whether any of names matches the policy's protected patterns.
func MatchProtected(c *Config, names ...string) bool { return ProtectedPattern(c, names...) != "" }

// ProtectedPattern is the first of the policy's protected patterns that one
// of names matches, "" for none.
func ProtectedPattern(c *Config, names ...string) string {
	for _, pat := range c.Protected {
		for _, n := range names {
			if ok, _ := filepath.Match(pat, n); ok && n != "" {
				return pat
			}
		}
	}
	return ""
}
