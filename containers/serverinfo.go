package containers

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/mlc-lab/mlc/gpualloc"
	"github.com/mlc-lab/mlc/limits"
)

// ServerInfo is one server as `mlc servers` shows it to the caller: room
// (GPUs, load, memory, disk) and the caller's own share of it.
type ServerInfo struct {
	Version          string   `json:"version"`
	User             string   `json:"user"`
	GPUsTotal        int      `json:"gpus_total"`
	GPUsFree         int      `json:"gpus_free"`
	GPUQuota         int      `json:"gpu_quota"`      // the caller's gpus limit here
	GPUsHeld         int      `json:"gpus_held"`      // GPUs the caller's containers hold here
	QuotaLeft        int      `json:"gpu_quota_left"` // what the caller may still take here
	CPUs             int      `json:"cpus"`
	Load1            float64  `json:"load1"`
	MemTotal         int64    `json:"mem_total_bytes"`
	MemAvailable     int64    `json:"mem_available_bytes"`
	DiskTotal        int64    `json:"disk_total_bytes"` // the file system of the workspaces
	DiskFree         int64    `json:"disk_free_bytes"`
	Containers       []string `json:"containers"` // the caller's, by name
	Running          int      `json:"running"`
	MayCopy          bool     `json:"may_copy"`
	SharedWorkspaces bool     `json:"shared_workspaces"`
	Notes            []string `json:"notes,omitempty"`
}

// ServerInfo measures this server for the caller. Nothing in it is another
// user's: free GPUs are counted, not named.
func (m *Manager) ServerInfo(ctx context.Context, a Actor, version string) (*ServerInfo, error) {
	lim, err := limits.Resolve(m.Cfg, m.Dir, a.Target.User)
	if err != nil {
		return nil, err
	}
	info := &ServerInfo{Version: version, User: a.Target.User, GPUQuota: lim.GPUs.Value, CPUs: runtime.NumCPU(),
		MayCopy: lim.MayCopy.Value, SharedWorkspaces: m.Cfg.Policies.SharedWorkspaces, Containers: []string{}}
	list, err := m.Eng.List(ctx, a.Target.User)
	if err != nil {
		return nil, err
	}
	for _, c := range list {
		if c.Managed() {
			info.Containers = append(info.Containers, c.Labels["mlc.name"])
			if c.Running() {
				info.Running++
			}
		}
	}
	sort.Strings(info.Containers)
	if m.GPUs != nil {
		st, err := m.GPUs.Status(ctx)
		if err != nil {
			info.Notes = append(info.Notes, "GPU ledger: "+err.Error())
		} else {
			info.GPUsTotal, info.GPUsFree = len(st.GPUs), freeGPUs(st)
			for _, g := range st.GPUs {
				for _, h := range g.Holders {
					if h.User == a.Target.User {
						info.GPUsHeld++
					}
				}
			}
		}
	}
	info.QuotaLeft = max(0, info.GPUQuota-info.GPUsHeld)
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			info.Load1, _ = strconv.ParseFloat(f[0], 64)
		}
	}
	info.MemTotal, info.MemAvailable = meminfo()
	dir := m.Cfg.Policies.WorkspaceRoot
	for dir != "/" {
		if _, err := os.Stat(dir); err == nil {
			break
		}
		dir = filepath.Dir(dir)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err == nil {
		info.DiskTotal, info.DiskFree = int64(st.Blocks)*st.Bsize, int64(st.Bavail)*st.Bsize
	}
	return info, nil
}

// meminfo is MemTotal and MemAvailable from /proc/meminfo, in bytes.
func meminfo() (total, avail int64) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(fs[1], 10, 64)
		switch fs[0] {
		case "MemTotal:":
			total = v << 10
		case "MemAvailable:":
			avail = v << 10
		}
	}
	return total, avail
}

// freeGPUs is how many GPUs can take one more container: none of its
// holders in exclusive mode, fewer than max_per_gpu in shared mode.
func freeGPUs(st gpualloc.Status) int {
	per := 1
	if st.Mode == "shared" && st.MaxPerGPU > 1 {
		per = st.MaxPerGPU
	}
	free := 0
	for _, g := range st.GPUs {
		if len(g.Holders) < per {
			free++
		}
	}
	return free
}
