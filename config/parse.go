package config

import (
	"bytes"
	"fmt"
	"math"
	"net"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// NamePattern is what a user or unix group name may look like.
var NamePattern = regexp.MustCompile(`^[a-z_][a-z0-9_.-]*\$?$`)

// AliasPattern is what an image alias may look like.
var AliasPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// minMemory is docker's own lower bound for a memory limit.
const minMemory = 6 * 1024 * 1024

type parser struct {
	file string
	errs ErrorList
}

func (p *parser) errf(n *yaml.Node, format string, a ...any) {
	line := 0
	if n != nil {
		line = n.Line
	}
	p.errs = append(p.errs, Error{File: p.file, Line: line, Msg: fmt.Sprintf(format, a...)})
}

// Parse parses a policy. name is the file name used in errors and as Source.
// On failure the error is an ErrorList holding every problem found.
func Parse(name string, data []byte) (*Config, error) {
	p := &parser{file: name}
	if len(bytes.TrimSpace(data)) == 0 {
		p.errf(nil, "file is empty (see docs/config-reference.md, or run mlc limits check on the embedded default)")
		return nil, p.errs
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		msg := err.Error()
		line := 0
		for _, l := range strings.Split(msg, "\n") {
			l = strings.TrimSpace(l)
			if m := yamlLineRE.FindStringSubmatch(l); m != nil {
				line, _ = strconv.Atoi(m[1])
				msg = "invalid YAML: " + m[2]
				break
			}
			msg = "invalid YAML: " + strings.TrimPrefix(l, "yaml: ")
			break
		}
		p.errs = append(p.errs, Error{File: name, Line: line, Msg: msg})
		return nil, p.errs
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		p.errf(nil, "file is empty")
		return nil, p.errs
	}
	root := doc.Content[0]
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		p.errf(root, "file has no settings (only comments)")
		return nil, p.errs
	}
	c := &Config{
		Source: name,
		Policies: Policies{
			BindAddress:   "127.0.0.1",
			WorkspaceRoot: DefaultWorkspaceRoot,
			WorkspaceLink: "~/workspaces",
			NetworkPrefix: 26,
			MaxPorts:      8,
		},
		GPU: GPU{
			Mode: "exclusive", MaxPerGPU: 1, Strategy: "spread", Runtime: "nvidia",
			HoldAfterStop: Never, PendingTimeout: Duration{D: 5 * 60e9},
		},
		Cleanup: Cleanup{IdleCPUPercent: 5, IdleGPUPercent: 5, IdleNetBytes: 1 << 20, RemoveStoppedAfter: Never,
			ImageMaxAge: Never, MinSamples: 3, MaxSampleAge: Duration{D: 15 * time.Minute}, Grace: Duration{D: time.Hour},
			WarnAt: []float64{0.8, 0.95}, KeepAliveMax: Duration{D: 24 * time.Hour}, StopTimeout: 30},
		Monitor: Monitor{Retention: Duration{D: 30 * 24 * time.Hour}, Interval: Duration{D: 30 * time.Second},
			Listen: "127.0.0.1:9101", StatsWindow: Duration{D: 200 * time.Millisecond}},
		StateDir: "/var/lib/mlc",
		AuditLog: "/var/log/mlc/audit.jsonl",
	}
	p.mapping(root, "top level", func(k, v *yaml.Node) {
		switch k.Value {
		case "defaults":
			p.limits(v, "defaults", &c.Defaults, nil)
		case "groups":
			p.groups(v, c)
		case "user_overrides":
			p.overrides(v, c)
		case "policies":
			p.policies(v, &c.Policies)
		case "images":
			p.images(v, c)
		case "gpu":
			p.gpu(v, &c.GPU)
		case "cleanup":
			p.cleanup(v, &c.Cleanup)
		case "monitor":
			p.monitor(v, &c.Monitor)
		case "notify":
			p.mapping(v, "notify", func(k, v *yaml.Node) {
				switch k.Value {
				case "command":
					if v.Kind == yaml.ScalarNode && v.Tag == "!!null" {
						c.Notify.Command = ""
					} else if s, ok := p.str(v, "notify.command"); ok {
						c.Notify.Command = s
					}
				default:
					p.errf(k, "notify: unknown key %s (known: command)", excerpt(k.Value))
				}
			})
		case "protected":
			c.Protected = p.strList(v, "protected")
			for i, pat := range c.Protected {
				if _, err := filepath.Match(pat, ""); err != nil {
					p.errf(v.Content[i], "protected: bad pattern %s", excerpt(pat))
				}
			}
		case "admins":
			c.Admins = p.strList(v, "admins")
			for i, a := range c.Admins {
				if !NamePattern.MatchString(strings.TrimPrefix(a, "@")) {
					p.errf(v.Content[i], "admins: %s is not a user name or @unixgroup", excerpt(a))
				}
			}
		case "servers":
			p.servers(v, c)
		case "state_dir":
			c.StateDir = p.absPath(v, "state_dir")
		case "audit_log":
			c.AuditLog = p.absPath(v, "audit_log")
		default:
			p.errf(k, "unknown key %s (known: defaults, groups, user_overrides, policies, images, gpu, cleanup, notify, monitor, protected, admins, servers, state_dir, audit_log)", excerpt(k.Value))
		}
	})
	p.crossCheck(c)
	if len(p.errs) > 0 {
		sort.SliceStable(p.errs, func(i, j int) bool { return p.errs[i].Line < p.errs[j].Line })
		return nil, p.errs
	}
	return c, nil
}

// mapping walks a mapping node, reporting a non-mapping and duplicate keys.
func (p *parser) mapping(n *yaml.Node, what string, fn func(k, v *yaml.Node)) {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // an empty section
	}
	if n.Kind != yaml.MappingNode {
		p.errf(n, "%s: expected a mapping (key: value lines), found %s", what, kindName(n))
		return
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			p.errf(k, "%s: keys must be plain names", what)
			continue
		}
		if first, dup := seen[k.Value]; dup {
			p.errf(k, "%s: %s is given twice (first at line %d)", what, excerpt(k.Value), first)
			continue
		}
		seen[k.Value] = k.Line
		fn(k, v)
	}
}

// excerpt quotes a value from the file for an error message, cut short: a
// message never repeats a whole line of a file (mlc limits check may be
// pointed at any file the caller can read, and its errors may be logged).
func excerpt(s string) string {
	const max = 16
	r := []rune(s)
	if len(r) > max {
		return strconv.Quote(string(r[:max-4])) + "…"
	}
	return strconv.Quote(s)
}

// short is a name from the file used in a section path (groups.NAME), cut short.
func short(s string) string {
	r := []rune(s)
	if len(r) > 32 {
		return strconv.Quote(string(r[:28])) + "…"
	}
	return s
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		return "a mapping"
	case yaml.AliasNode:
		return "an alias"
	}
	switch n.Tag {
	case "!!null":
		return "nothing"
	case "!!str":
		return fmt.Sprintf("the string %s", excerpt(n.Value))
	}
	return fmt.Sprintf("%s", excerpt(n.Value))
}

func (p *parser) scalar(n *yaml.Node, what string) bool {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		*n = *n.Alias
	}
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		p.errf(n, "%s: expected a value, found %s", what, kindName(n))
		return false
	}
	return true
}

func (p *parser) str(n *yaml.Node, what string) (string, bool) {
	if !p.scalar(n, what) {
		return "", false
	}
	return n.Value, true
}

func (p *parser) integer(n *yaml.Node, what string, min int64) (int64, bool) {
	if !p.scalar(n, what) {
		return 0, false
	}
	if n.Tag != "!!int" {
		p.errf(n, "%s: expected a whole number, found %s", what, kindName(n))
		return 0, false
	}
	v, err := strconv.ParseInt(n.Value, 0, 64)
	if err != nil {
		p.errf(n, "%s: %s is out of range", what, excerpt(n.Value))
		return 0, false
	}
	if v < min {
		p.errf(n, "%s: must be at least %d, found %d", what, min, v)
		return 0, false
	}
	return v, true
}

func (p *parser) number(n *yaml.Node, what string) (float64, bool) {
	if !p.scalar(n, what) {
		return 0, false
	}
	if n.Tag != "!!int" && n.Tag != "!!float" {
		p.errf(n, "%s: expected a number, found %s", what, kindName(n))
		return 0, false
	}
	v, err := strconv.ParseFloat(n.Value, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		p.errf(n, "%s: %s is not a finite number", what, excerpt(n.Value))
		return 0, false
	}
	return v, true
}

func (p *parser) boolean(n *yaml.Node, what string) bool {
	if !p.scalar(n, what) {
		return false
	}
	if n.Tag != "!!bool" {
		p.errf(n, "%s: expected true or false, found %s", what, kindName(n))
		return false
	}
	return n.Value == "true" || n.Value == "True" || n.Value == "TRUE"
}

func (p *parser) size(n *yaml.Node, what string) (Size, bool) {
	if !p.scalar(n, what) {
		return 0, false
	}
	s, err := ParseSize(n.Value)
	if err != nil {
		p.errf(n, "%s: %v", what, err)
		return 0, false
	}
	return s, true
}

func (p *parser) duration(n *yaml.Node, what string) (Duration, bool) {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return Never, true
	}
	if !p.scalar(n, what) {
		return Duration{}, false
	}
	if n.Tag == "!!int" || n.Tag == "!!float" {
		p.errf(n, "%s: %s needs a unit (30m, 48h, 7d), or null for never", what, n.Value)
		return Duration{}, false
	}
	d, err := ParseDuration(n.Value)
	if err != nil {
		p.errf(n, "%s: %v", what, err)
		return Duration{}, false
	}
	return d, true
}

func (p *parser) strList(n *yaml.Node, what string) []string {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		p.errf(n, "%s: expected a list, found %s", what, kindName(n))
		return nil
	}
	out := []string{}
	for _, e := range n.Content {
		if s, ok := p.str(e, what+" entry"); ok {
			out = append(out, s)
		} else {
			out = append(out, "")
		}
	}
	return out
}

func (p *parser) absPath(n *yaml.Node, what string) string {
	s, ok := p.str(n, what)
	if !ok {
		return ""
	}
	if !filepath.IsAbs(s) {
		p.errf(n, "%s: %s must be an absolute path", what, excerpt(s))
	}
	return filepath.Clean(s)
}

// limits parses the limit keys of one level. extra handles keys a level adds
// (members, reason); it returns false for a key it does not know.
func (p *parser) limits(n *yaml.Node, what string, l *Limits, extra func(k, v *yaml.Node) bool) {
	p.mapping(n, what, func(k, v *yaml.Node) {
		w := what + "." + short(k.Value)
		switch k.Value {
		case "gpus":
			if x, ok := p.integer(v, w, 0); ok {
				i := int(x)
				l.GPUs = &i
			}
		case "cpus":
			if x, ok := p.number(v, w); ok {
				if x <= 0 {
					p.errf(v, "%s: must be more than 0, found %v", w, x)
				} else if x > 1024 {
					p.errf(v, "%s: %v is more CPUs than any machine has", w, x)
				} else {
					l.CPUs = &x
				}
			}
		case "memory":
			if s, ok := p.size(v, w); ok {
				if s < minMemory {
					p.errf(v, "%s: %s is below docker's minimum of 6m", w, v.Value)
				} else {
					l.Memory = &s
				}
			}
		case "memory_swap":
			if s, ok := p.size(v, w); ok {
				if s < minMemory {
					p.errf(v, "%s: %s is below docker's minimum of 6m", w, v.Value)
				} else {
					l.MemorySwap = &s
				}
			}
		case "shm_size":
			if s, ok := p.size(v, w); ok {
				if s == 0 {
					p.errf(v, "%s: must be more than 0", w)
				} else {
					l.ShmSize = &s
				}
			}
		case "pids_limit":
			if x, ok := p.integer(v, w, 1); ok {
				l.PidsLimit = &x
			}
		case "idle_timeout":
			if d, ok := p.duration(v, w); ok {
				l.IdleTimeout = &d
			}
		case "max_containers":
			if x, ok := p.integer(v, w, 0); ok {
				i := int(x)
				l.MaxContainers = &i
			}
		case "may_copy":
			if p.scalar(v, w) {
				b := p.boolean(v, w)
				l.MayCopy = &b
			}
		default:
			if extra != nil && extra(k, v) {
				return
			}
			p.errf(k, "%s: unknown limit %s (limits are: %s)", what, excerpt(k.Value), strings.Join(LimitKeys, ", "))
		}
	})
	if l.Memory != nil && l.MemorySwap != nil && *l.MemorySwap < *l.Memory {
		p.errf(n, "%s: memory_swap (%s) is less than memory (%s); it counts memory plus swap", what, *l.MemorySwap, *l.Memory)
	}
}

func (p *parser) groups(n *yaml.Node, c *Config) {
	p.mapping(n, "groups", func(k, v *yaml.Node) {
		g := Group{Name: k.Value, Line: k.Line}
		if !NamePattern.MatchString(g.Name) {
			p.errf(k, "groups: %s is not a valid group name", excerpt(g.Name))
		}
		hasMembers := false
		p.limits(v, "groups."+short(g.Name), &g.Limits, func(mk, mv *yaml.Node) bool {
			if mk.Value != "members" {
				return false
			}
			hasMembers = true
			g.Members = p.strList(mv, "groups."+short(g.Name)+".members")
			for i, m := range g.Members {
				if m != "" && !NamePattern.MatchString(strings.TrimPrefix(m, "@")) {
					p.errf(mv.Content[i], "groups.%s.members: %s is not a user name or @unixgroup", short(g.Name), excerpt(m))
				}
			}
			return true
		})
		if !hasMembers && v.Kind == yaml.MappingNode {
			p.errf(k, "groups.%s: has no members", short(g.Name))
		}
		c.Groups = append(c.Groups, g)
	})
}

func (p *parser) overrides(n *yaml.Node, c *Config) {
	p.mapping(n, "user_overrides", func(k, v *yaml.Node) {
		o := Override{User: k.Value, Line: k.Line}
		if !NamePattern.MatchString(o.User) {
			p.errf(k, "user_overrides: %s is not a valid user name", excerpt(o.User))
		}
		p.limits(v, "user_overrides."+short(o.User), &o.Limits, func(rk, rv *yaml.Node) bool {
			if rk.Value != "reason" {
				return false
			}
			o.Reason, _ = p.str(rv, "user_overrides."+short(o.User)+".reason")
			return true
		})
		c.UserOverrides = append(c.UserOverrides, o)
	})
}

func (p *parser) policies(n *yaml.Node, pol *Policies) {
	p.mapping(n, "policies", func(k, v *yaml.Node) {
		w := "policies." + short(k.Value)
		switch k.Value {
		case "max_containers_per_user":
			if x, ok := p.integer(v, w, 0); ok {
				i := int(x)
				pol.MaxContainersPerUser = &i
			}
		case "allow_root":
			pol.AllowRoot = p.boolean(v, w)
		case "allow_swap":
			pol.AllowSwap = p.boolean(v, w)
		case "bind_address":
			if s, ok := p.str(v, w); ok {
				if !ipRE.MatchString(s) {
					p.errf(v, "%s: %s is not an IP address", w, excerpt(s))
				}
				pol.BindAddress = s
			}
		case "workspace":
			p.errf(k, "%s: replaced by workspace_root: workspaces now live in a root-owned directory, <workspace_root>/<user>/<name> (see docs/admin-guide.md)", w)
		case "workspace_root":
			pol.WorkspaceRoot = p.absPath(v, w)
			if pol.WorkspaceRoot == "/" {
				p.errf(v, "%s: must be a directory other than /", w)
			}
		case "workspace_link":
			if v.Kind == yaml.ScalarNode && v.Tag == "!!null" {
				pol.WorkspaceLink = ""
			} else if s, ok := p.str(v, w); ok {
				if !strings.HasPrefix(s, "~/") || strings.Contains(s, "..") || filepath.Clean(s[2:]) == "." {
					p.errf(v, "%s: %s must be a directory below the home, like ~/workspaces, or null", w, excerpt(s))
				}
				pol.WorkspaceLink = s
			}
		case "port_range":
			pol.PortRange = p.portRange(v, w)
		case "max_ports":
			if x, ok := p.integer(v, w, 0); ok {
				if x > 1024 {
					p.errf(v, "%s: at most 1024", w)
				}
				pol.MaxPorts = int(x)
			}
		case "network_pool":
			if v.Kind == yaml.ScalarNode && v.Tag == "!!null" {
				pol.NetworkPool = ""
			} else if s, ok := p.str(v, w); ok {
				if _, n, err := net.ParseCIDR(s); err != nil || n.IP.To4() == nil {
					p.errf(v, "%s: %s is not an IPv4 CIDR like 10.200.0.0/16", w, excerpt(s))
				}
				pol.NetworkPool = s
			}
		case "network_prefix":
			if x, ok := p.integer(v, w, 16); ok {
				if x > 29 {
					p.errf(v, "%s: at most 29 (a /29 holds 5 containers)", w)
				}
				pol.NetworkPrefix = int(x)
			}
		case "mount_roots":
			pol.MountRoots = p.strList(v, w)
			for i, r := range pol.MountRoots {
				if !filepath.IsAbs(r) || filepath.Clean(r) == "/" {
					p.errf(v.Content[i], "%s: %s must be an absolute path other than /", w, excerpt(r))
				}
			}
		case "capabilities":
			pol.Capabilities = p.strList(v, w)
			for i, cp := range pol.Capabilities {
				if !capRE.MatchString(cp) {
					p.errf(v.Content[i], "%s: %s is not a capability name like SYS_PTRACE", w, excerpt(cp))
				} else if strings.EqualFold(strings.TrimPrefix(cp, "CAP_"), "SYS_ADMIN") || strings.EqualFold(cp, "ALL") {
					p.errf(v.Content[i], "%s: %s would let a user escape the container; mlc does not grant it", w, cp)
				}
			}
		case "may_copy":
			if p.scalar(v, w) {
				b := p.boolean(v, w)
				pol.MayCopy = &b
			}
		case "shared_workspaces":
			pol.SharedWorkspaces = p.boolean(v, w)
		case "devices":
			pol.Devices = p.strList(v, w)
			for i, d := range pol.Devices {
				if !strings.HasPrefix(d, "/dev/") {
					p.errf(v.Content[i], "%s: %s is not a /dev path", w, excerpt(d))
				}
			}
		default:
			p.errf(k, "policies: unknown key %s (known: max_containers_per_user, allow_root, allow_swap, bind_address, workspace_root, workspace_link, mount_roots, port_range, max_ports, network_pool, network_prefix, capabilities, devices, may_copy, shared_workspaces)", excerpt(k.Value))
		}
	})
}

// sshDestRE is a host name or address ssh may be given: no user part (users
// log in as themselves), no leading dash (it would be an ssh option).
var serverNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$`)

var sshDestRE = regexp.MustCompile(`^[A-Za-z0-9_.:\[\]][A-Za-z0-9_.:\[\]-]{0,252}$`)

// servers parses the list of the lab's servers.
func (p *parser) servers(n *yaml.Node, c *Config) {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return
	}
	if n.Kind != yaml.SequenceNode {
		p.errf(n, "servers: expected a list of servers (- name: ..., ssh: ...)")
		return
	}
	seen := map[string]int{}
	for i, item := range n.Content {
		s := Server{Line: item.Line}
		w := fmt.Sprintf("servers[%d]", i)
		p.mapping(item, w, func(k, v *yaml.Node) {
			switch k.Value {
			case "name":
				if x, ok := p.str(v, w+".name"); ok {
					if !serverNameRE.MatchString(x) || x == "any" {
						p.errf(v, "%s.name: %s is not a server name (letters, digits, _ and -, as in its host name; not \"any\")", w, excerpt(x))
					}
					s.Name = x
				}
			case "ssh":
				if x, ok := p.str(v, w+".ssh"); ok {
					if strings.Contains(x, "@") {
						p.errf(v, "%s.ssh: %s names a user; give only the host: each user logs in as themselves", w, excerpt(x))
					} else if !sshDestRE.MatchString(x) {
						p.errf(v, "%s.ssh: %s is not a host name or address", w, excerpt(x))
					}
					s.SSH = x
				}
			case "port":
				if x, ok := p.integer(v, w+".port", 1); ok {
					if x > 65535 {
						p.errf(v, "%s.port: %d is not a TCP port", w, x)
					}
					s.Port = int(x)
				}
			case "mlc":
				s.MLC = p.absPath(v, w+".mlc")
			default:
				p.errf(k, "%s: unknown key %s (known: name, ssh, port, mlc)", w, excerpt(k.Value))
			}
		})
		if item.Kind != yaml.MappingNode {
			continue
		}
		if s.Name == "" {
			p.errf(item, "%s: has no name", w)
			continue
		}
		if s.SSH == "" {
			s.SSH = s.Name
		}
		if prev, dup := seen[s.Name]; dup {
			p.errf(item, "%s: server %s is listed twice (first at line %d)", w, s.Name, prev)
			continue
		}
		seen[s.Name] = item.Line
		c.Servers = append(c.Servers, s)
	}
}

var (
	ipRE  = regexp.MustCompile(`^(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}|[0-9a-fA-F:]*:[0-9a-fA-F:.]*)$`)
	capRE = regexp.MustCompile(`^(CAP_)?[A-Z_]+$`)
)

func (p *parser) images(n *yaml.Node, c *Config) {
	p.mapping(n, "images", func(k, v *yaml.Node) {
		im := Image{Alias: k.Value, Line: k.Line}
		if !AliasPattern.MatchString(im.Alias) {
			p.errf(k, "images: %s is not a valid alias (letters, digits, _ . -)", excerpt(im.Alias))
		}
		p.mapping(v, "images."+short(im.Alias), func(ik, iv *yaml.Node) {
			w := "images." + short(im.Alias) + "." + short(ik.Value)
			switch ik.Value {
			case "image":
				im.Image, _ = p.str(iv, w)
			case "framework":
				im.Framework, _ = p.str(iv, w)
			case "version":
				im.Version, _ = p.str(iv, w)
			default:
				p.errf(ik, "images.%s: unknown key %s (known: image, framework, version)", short(im.Alias), excerpt(ik.Value))
			}
		})
		if im.Image == "" {
			p.errf(k, "images.%s: missing image reference (image: REPOSITORY:TAG)", short(im.Alias))
		} else if strings.ContainsAny(im.Image, " \t") {
			p.errf(k, "images.%s: image reference %s contains spaces", short(im.Alias), excerpt(im.Image))
		}
		if im.Framework == "" {
			im.Framework = im.Alias
		}
		c.Images = append(c.Images, im)
	})
}

func (p *parser) gpu(n *yaml.Node, g *GPU) {
	p.mapping(n, "gpu", func(k, v *yaml.Node) {
		w := "gpu." + short(k.Value)
		switch k.Value {
		case "mode":
			if s, ok := p.str(v, w); ok {
				if s != "exclusive" && s != "shared" {
					p.errf(v, "%s: %s is not exclusive or shared", w, excerpt(s))
				}
				g.Mode = s
			}
		case "max_per_gpu":
			if x, ok := p.integer(v, w, 1); ok {
				g.MaxPerGPU = int(x)
			}
		case "strategy":
			if s, ok := p.str(v, w); ok {
				if s != "spread" && s != "pack" && s != "last-used" {
					p.errf(v, "%s: %s is not spread, pack or last-used", w, excerpt(s))
				}
				g.Strategy = s
			}
		case "runtime":
			if s, ok := p.str(v, w); ok {
				if s != "nvidia" && s != "env" {
					p.errf(v, "%s: %s is not nvidia or env", w, excerpt(s))
				}
				g.Runtime = s
			}
		case "fake_count":
			if x, ok := p.integer(v, w, 0); ok {
				if x > 64 {
					p.errf(v, "%s: at most 64 fake GPUs", w)
				}
				g.FakeCount = int(x)
			}
		case "hold_after_stop":
			if d, ok := p.duration(v, w); ok {
				g.HoldAfterStop = d
			}
		case "pending_timeout":
			if d, ok := p.duration(v, w); ok {
				if d.Never {
					p.errf(v, "%s: must be a duration, not never", w)
				}
				g.PendingTimeout = d
			}
		default:
			p.errf(k, "gpu: unknown key %s (known: mode, max_per_gpu, strategy, runtime, fake_count, hold_after_stop, pending_timeout)", excerpt(k.Value))
		}
	})
	if g.Mode == "exclusive" {
		g.MaxPerGPU = 1
	}
}

func (p *parser) cleanup(n *yaml.Node, cl *Cleanup) {
	p.mapping(n, "cleanup", func(k, v *yaml.Node) {
		w := "cleanup." + short(k.Value)
		switch k.Value {
		case "idle_cpu_percent", "idle_gpu_percent":
			if x, ok := p.number(v, w); ok {
				if x < 0 || x > 100 {
					p.errf(v, "%s: must be between 0 and 100", w)
				}
				if k.Value == "idle_cpu_percent" {
					cl.IdleCPUPercent = x
				} else {
					cl.IdleGPUPercent = x
				}
			}
		case "idle_net_bytes":
			if b, ok := p.size(v, w); ok {
				cl.IdleNetBytes = b
			}
		case "remove_stopped_after":
			if d, ok := p.duration(v, w); ok {
				cl.RemoveStoppedAfter = d
			}
		case "prune_images":
			cl.PruneImages = p.boolean(v, w)
		case "image_max_age", "max_sample_age", "grace", "keepalive_max":
			d, ok := p.duration(v, w)
			if !ok {
				return
			}
			switch k.Value {
			case "image_max_age":
				cl.ImageMaxAge = d
			case "max_sample_age":
				if d.Never {
					p.errf(v, "%s: must be a duration, not never", w)
				}
				cl.MaxSampleAge = d
			case "grace":
				if d.Never {
					p.errf(v, "%s: must be a duration, not never", w)
				}
				cl.Grace = d
			case "keepalive_max":
				cl.KeepAliveMax = d
			}
		case "min_samples":
			if x, ok := p.integer(v, w, 1); ok {
				if x > 10000 {
					p.errf(v, "%s: at most 10000", w)
				}
				cl.MinSamples = int(x)
			}
		case "stop_timeout":
			if x, ok := p.integer(v, w, 0); ok {
				if x > 3600 {
					p.errf(v, "%s: at most 3600 seconds", w)
				}
				cl.StopTimeout = int(x)
			}
		case "warn_at":
			if v.Kind != yaml.SequenceNode {
				p.errf(v, "%s: expected a list of fractions of the idle timeout, like [0.8, 0.95]", w)
				return
			}
			cl.WarnAt = nil
			for _, e := range v.Content {
				if x, ok := p.number(e, w); ok {
					if x <= 0 || x >= 1 {
						p.errf(e, "%s: %v is not a fraction between 0 and 1 (0.8 warns at 80 %% of the timeout)", w, x)
						continue
					}
					cl.WarnAt = append(cl.WarnAt, x)
				}
			}
			if len(cl.WarnAt) == 0 && len(p.errs) == 0 {
				p.errf(v, "%s: give at least one fraction: the owner is always warned before a stop", w)
			}
		case "high_demand":
			if v.Kind == yaml.ScalarNode && v.Tag == "!!null" {
				cl.HighDemand = nil
				return
			}
			hd := &HighDemand{GPUFraction: 0.9, Factor: 0.5}
			p.mapping(v, w, func(k2, v2 *yaml.Node) {
				w2 := w + "." + short(k2.Value)
				x, ok := p.number(v2, w2)
				if !ok {
					return
				}
				switch k2.Value {
				case "gpu_fraction":
					if x <= 0 || x > 1 {
						p.errf(v2, "%s: must be above 0 and at most 1", w2)
					}
					hd.GPUFraction = x
				case "factor":
					if x <= 0 || x > 1 {
						p.errf(v2, "%s: must be above 0 and at most 1 (0.5 halves the timeouts)", w2)
					}
					hd.Factor = x
				default:
					p.errf(k2, "%s: unknown key %s (known: gpu_fraction, factor)", w, excerpt(k2.Value))
				}
			})
			cl.HighDemand = hd
		default:
			p.errf(k, "cleanup: unknown key %s (known: idle_cpu_percent, idle_gpu_percent, idle_net_bytes, min_samples, max_sample_age, grace, warn_at, keepalive_max, stop_timeout, high_demand, remove_stopped_after, prune_images, image_max_age)", excerpt(k.Value))
		}
	})
}

func (p *parser) monitor(n *yaml.Node, m *Monitor) {
	p.mapping(n, "monitor", func(k, v *yaml.Node) {
		w := "monitor." + short(k.Value)
		switch k.Value {
		case "retention":
			if d, ok := p.duration(v, w); ok {
				m.Retention = d
			}
		case "interval", "stats_window":
			d, ok := p.duration(v, w)
			if !ok {
				return
			}
			lo, hi := time.Second, 24*time.Hour
			if k.Value == "stats_window" {
				lo, hi = 50*time.Millisecond, 5*time.Second
			}
			if d.Never || d.D < lo || d.D > hi {
				p.errf(v, "%s: must be between %s and %s", w, Duration{D: lo}, Duration{D: hi})
				return
			}
			if k.Value == "interval" {
				m.Interval = d
			} else {
				m.StatsWindow = d
			}
		case "listen":
			if s, ok := p.str(v, w); ok {
				host, port, err := net.SplitHostPort(s)
				if n, perr := strconv.Atoi(port); err != nil || perr != nil || n < 1 || n > 65535 || host == "" {
					p.errf(v, "%s: %s is not HOST:PORT (like 127.0.0.1:9101)", w, excerpt(s))
					return
				}
				m.Listen = s
			}
		case "token_file":
			if v.Kind == yaml.ScalarNode && v.Tag == "!!null" {
				m.TokenFile = ""
				return
			}
			m.TokenFile = p.absPath(v, w)
		default:
			p.errf(k, "monitor: unknown key %s (known: retention, interval, listen, stats_window, token_file)", excerpt(k.Value))
		}
	})
}

// crossCheck finds problems that span sections.
func (p *parser) crossCheck(c *Config) {
	in := map[string]string{}
	for _, g := range c.Groups {
		for _, m := range g.Members {
			if m == "" {
				continue
			}
			if other, dup := in[m]; dup {
				what := "user"
				if strings.HasPrefix(m, "@") {
					what = "unix group"
				}
				p.errs = append(p.errs, Error{File: p.file, Line: g.Line,
					Msg: fmt.Sprintf("groups.%s: %s %s is already in group %s; a user may be in one group only", short(g.Name), what, excerpt(m), excerpt(other))})
				continue
			}
			in[m] = g.Name
		}
	}
	if c.Defaults.MaxContainers != nil && c.Policies.MaxContainersPerUser != nil &&
		*c.Defaults.MaxContainers != *c.Policies.MaxContainersPerUser {
		p.errs = append(p.errs, Error{File: p.file, Msg: fmt.Sprintf(
			"defaults.max_containers (%d) and policies.max_containers_per_user (%d) disagree; set one",
			*c.Defaults.MaxContainers, *c.Policies.MaxContainersPerUser)})
	}
}

// portRange parses [LOW, HIGH]: the host ports non-admins may publish.
func (p *parser) portRange(n *yaml.Node, what string) [2]int {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return [2]int{}
	}
	if n.Kind != yaml.SequenceNode || len(n.Content) != 2 {
		p.errf(n, "%s: expected [LOW, HIGH], like [20000, 29999], or null", what)
		return [2]int{}
	}
	lo, ok1 := p.integer(n.Content[0], what, 1)
	hi, ok2 := p.integer(n.Content[1], what, 1)
	if !ok1 || !ok2 {
		return [2]int{}
	}
	if hi > 65535 || lo > hi {
		p.errf(n, "%s: [%d, %d] is not a range of ports (1-65535, LOW <= HIGH)", what, lo, hi)
		return [2]int{}
	}
	return [2]int{int(lo), int(hi)}
}
