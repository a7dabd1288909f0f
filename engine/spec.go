// Package engine is mlc's only importer of the Docker SDK: client setup, the
// mlc.* labels, turning a Spec into a create request, listing by owner,
// exec/attach with TTYs, logs and pulls. Other packages use the Engine
// interface so they can be tested with a fake.
package engine

import (
	"fmt"
	"sort"
	"strings"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/go-connections/nat"
	units "github.com/docker/go-units"
)

// Labels mlc puts on every container it creates (see docs/architecture.md).
const (
	LabelManaged   = "mlc.managed"
	LabelUser      = "mlc.user"
	LabelUID       = "mlc.uid"
	LabelName      = "mlc.name"
	LabelImage     = "mlc.image"
	LabelGPUs      = "mlc.gpus"
	LabelAlloc     = "mlc.alloc"
	LabelProtected = "mlc.protected"
	LabelVersion   = "mlc.version"
	LabelCPUs      = "mlc.cpus"
	LabelMemory    = "mlc.memory"
	// LabelMounts records each bind mount's target and the identity
	// (device:inode) of its source at create: "/workspace=DEV:INO,/data=...".
	LabelMounts = "mlc.mounts"
	LabelGID    = "mlc.gid"
	LabelRoot   = "mlc.root"
)

// DockerName is the engine's name for container NAME of the user with uid.
// The uid (digits only) keeps it unambiguous: two users may both have a
// container called thesis, and user names may themselves contain "-".
func DockerName(uid int, name string) string { return fmt.Sprintf("mlc-%d-%s", uid, name) }

// UserNetwork is the name of the bridge network of the user with uid.
func UserNetwork(uid int) string { return fmt.Sprintf("mlc-%d", uid) }

// Mount is a bind mount.
type Mount struct {
	Source   string `json:"source"`
	Target   string `json:"target"`
	ReadOnly bool   `json:"read_only,omitempty"`
}

// Port is a published port.
type Port struct {
	HostIP        string `json:"host_ip"`
	HostPort      string `json:"host_port"` // "" lets the engine choose
	ContainerPort string `json:"container_port"`
	Proto         string `json:"proto"` // tcp or udp
}

// Ulimit is a resource limit inside the container (-1 = unlimited).
type Ulimit struct {
	Name       string
	Soft, Hard int64
}

// Spec is everything mlc decides about a new container.
type Spec struct {
	Name       string // the Docker name
	Image      string
	Labels     map[string]string
	User       string // "uid:gid"
	Env        []string
	WorkingDir string
	Cmd        []string
	Mounts     []Mount
	Ports      []Port
	NanoCPUs   int64
	Memory     int64
	MemorySwap int64
	ShmSize    int64
	PidsLimit  int64
	Ulimits    []Ulimit
	CapAdd     []string
	Devices    []string
	GPUs       []string // UUIDs
	GPURuntime string   // nvidia | env
	Network    string   // the bridge network to join; "" the default bridge
}

// Request is the create request the engine receives for a Spec.
type Request struct {
	Name       string                    `json:"name"`
	Config     *container.Config         `json:"config"`
	HostConfig *container.HostConfig     `json:"host_config"`
	Networking *network.NetworkingConfig `json:"networking_config,omitempty"`
}

// Request builds the exact create request. Whatever the spec says, the
// container is not privileged, shares no host namespace, and cannot gain
// privileges through setuid binaries.
func (s Spec) Request() Request {
	cfg := &container.Config{
		Image:        s.Image,
		Labels:       s.Labels,
		User:         s.User,
		Env:          append([]string(nil), s.Env...),
		WorkingDir:   s.WorkingDir,
		Cmd:          s.Cmd,
		Tty:          true,
		OpenStdin:    true,
		ExposedPorts: nat.PortSet{},
	}
	netMode := "bridge"
	if s.Network != "" {
		netMode = s.Network
	}
	hc := &container.HostConfig{
		Privileged:    false,
		NetworkMode:   container.NetworkMode(netMode),
		IpcMode:       "private",
		PidMode:       "",
		ShmSize:       s.ShmSize,
		CapAdd:        s.CapAdd,
		SecurityOpt:   []string{"no-new-privileges:true"},
		Init:          ptr(true),
		PortBindings:  nat.PortMap{},
		RestartPolicy: container.RestartPolicy{Name: container.RestartPolicyUnlessStopped},
		Resources: container.Resources{
			NanoCPUs:   s.NanoCPUs,
			Memory:     s.Memory,
			MemorySwap: s.MemorySwap,
			PidsLimit:  ptr(s.PidsLimit),
		},
	}
	for _, u := range s.Ulimits {
		hc.Ulimits = append(hc.Ulimits, &units.Ulimit{Name: u.Name, Soft: u.Soft, Hard: u.Hard})
	}
	// The Mounts API, not Binds: the engine refuses a missing source instead
	// of creating it as root.
	for _, m := range s.Mounts {
		hc.Mounts = append(hc.Mounts, mount.Mount{Type: mount.TypeBind, Source: m.Source, Target: m.Target, ReadOnly: m.ReadOnly,
			BindOptions: &mount.BindOptions{Propagation: mount.PropagationRPrivate}})
	}
	for _, p := range s.Ports {
		port := nat.Port(p.ContainerPort + "/" + p.Proto)
		cfg.ExposedPorts[port] = struct{}{}
		hc.PortBindings[port] = append(hc.PortBindings[port], nat.PortBinding{HostIP: p.HostIP, HostPort: p.HostPort})
	}
	for _, d := range s.Devices {
		hc.Devices = append(hc.Devices, container.DeviceMapping{PathOnHost: d, PathInContainer: d, CgroupPermissions: "rwm"})
	}
	// NVIDIA_VISIBLE_DEVICES is always set, whatever the runtime: CUDA images
	// set it to "all", and on a host whose default runtime is nvidia that
	// alone would expose every GPU.
	if len(s.GPUs) > 0 {
		ids := strings.Join(s.GPUs, ",")
		cfg.Env = append(cfg.Env, "NVIDIA_VISIBLE_DEVICES="+ids)
		switch s.GPURuntime {
		case "env":
			cfg.Env = append(cfg.Env, "CUDA_VISIBLE_DEVICES="+ids)
		default:
			hc.DeviceRequests = []container.DeviceRequest{{
				Driver:       "nvidia",
				DeviceIDs:    append([]string(nil), s.GPUs...),
				Capabilities: [][]string{{"gpu", "compute", "utility"}},
			}}
		}
	} else {
		cfg.Env = append(cfg.Env, "NVIDIA_VISIBLE_DEVICES=void")
	}
	sort.Strings(cfg.Env)
	return Request{Name: s.Name, Config: cfg, HostConfig: hc}
}

func ptr[T any](v T) *T { return &v }

// ParsePort parses [[HOSTIP:]HOSTPORT:]CONTAINERPORT[/PROTO]; the host IP
// defaults to bindAddress. A host IP other than bindAddress is refused.
func ParsePort(s, bindAddress string) (Port, error) {
	p := Port{HostIP: bindAddress, Proto: "tcp"}
	rest := s
	if i := strings.LastIndex(rest, "/"); i >= 0 {
		p.Proto = rest[i+1:]
		rest = rest[:i]
		if p.Proto != "tcp" && p.Proto != "udp" {
			return p, fmt.Errorf("port %q: protocol must be tcp or udp", s)
		}
	}
	parts := strings.Split(rest, ":")
	switch len(parts) {
	case 1:
		p.ContainerPort = parts[0]
	case 2:
		p.HostPort, p.ContainerPort = parts[0], parts[1]
	case 3:
		if parts[0] != bindAddress {
			return p, fmt.Errorf("port %q: ports may only be published on %s", s, bindAddress)
		}
		p.HostPort, p.ContainerPort = parts[1], parts[2]
	default:
		return p, fmt.Errorf("port %q: use [HOSTPORT:]CONTAINERPORT", s)
	}
	ports := []string{p.ContainerPort}
	if p.HostPort != "" { // empty: the engine picks a free one
		ports = append(ports, p.HostPort)
	}
	for _, n := range ports {
		if v, err := nat.ParsePort(n); err != nil || v < 1 {
			return p, fmt.Errorf("port %q: %q is not a port number (1-65535)", s, n)
		}
	}
	return p, nil
}
