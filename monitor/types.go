// Package monitor measures mlc's containers and the server's GPUs: CPU,
// memory, PIDs, network and block I/O read straight from cgroup and /proc
// files (subpackage cgroups), GPU use per process from NVML attributed to
// containers through /proc/PID/cgroup (subpackage gpus), and the container's
// disk use. Its Sample is what `mlc stats`, `mlc top`, the history database
// (subpackage history) and the Prometheus exporter (subpackage server) read.
package monitor

import "time"

// Owners of a GPU process.
const (
	OwnerMLC     = "mlc"     // a process of an mlc container
	OwnerForeign = "foreign" // a process of a container mlc did not make
	OwnerHost    = "host"    // a process in no container
)

// Sample is one reading of the server. JSON field names are stable
// (docs/user-guide.md lists them).
type Sample struct {
	Time time.Time `json:"time"`
	// Window is the span CPU percentages were measured over.
	Window     time.Duration    `json:"-"`
	Containers []ContainerStats `json:"containers"`
	GPUs       []GPUStats       `json:"gpus,omitempty"` // devices (mlc top, monitor)
	// GPUNote says why GPU figures are missing ("" when NVML answered).
	GPUNote string `json:"gpu_note,omitempty"`
	// Unattributed are GPU processes that belong to no mlc container: host
	// processes and foreign containers' processes. Filled for admins only;
	// absent when there are none.
	Unattributed []GPUProcess `json:"unattributed_gpu_processes,omitempty"`
	Users        []UserTotals `json:"users"`
}

// ContainerStats is one container's figures.
type ContainerStats struct {
	Name       string  `json:"name"` // the mlc name
	User       string  `json:"user"`
	ID         string  `json:"id"`
	DockerName string  `json:"docker_name"`
	State      string  `json:"state"`
	CPUPercent float64 `json:"cpu_percent"` // 100 = one CPU busy
	// CPUTotalNanos is the CPU time the container used since it started:
	// the history averages CPU % over a whole interval from it, so that a
	// burst timed to the sampling cannot make an idle container look busy.
	CPUTotalNanos    uint64   `json:"cpu_total_ns"`
	MemoryBytes      uint64   `json:"memory_bytes"`       // excluding inactive file cache
	MemoryLimitBytes uint64   `json:"memory_limit_bytes"` // the host's memory where unlimited
	MemoryPercent    float64  `json:"memory_percent"`
	Pids             uint64   `json:"pids"`
	NetRxBytes       uint64   `json:"net_rx_bytes"` // cumulative since the container started
	NetTxBytes       uint64   `json:"net_tx_bytes"`
	BlockReadBytes   uint64   `json:"block_read_bytes"`
	BlockWriteBytes  uint64   `json:"block_write_bytes"`
	GPUs             []int    `json:"gpus"`      // indices of the GPUs allocated to it
	GPUUUIDs         []string `json:"gpu_uuids"` // the same GPUs by UUID
	// GPU figures of the container's own processes; nil where unknown (no
	// NVML; utilisation under MIG).
	GPUMemoryBytes *uint64      `json:"gpu_memory_bytes"`
	GPUUtilPercent *float64     `json:"gpu_util_percent"`
	GPUProcesses   []GPUProcess `json:"gpu_processes"`
	// DiskBytes is the size of the container's writable layer; nil when it
	// could not be measured in time (DiskNote says why).
	DiskBytes *int64    `json:"disk_bytes"`
	DiskNote  string    `json:"disk_note,omitempty"`
	StartedAt time.Time `json:"started_at"`
	// InitPID is the host pid of the container's first process (0: not running).
	InitPID int `json:"-"`
	// Error is a figure that could not be read, e.g. the container stopped
	// while being measured.
	Error string `json:"error,omitempty"`
}

// GPUProcess is one process on a GPU.
type GPUProcess struct {
	GPU         int      `json:"gpu"`
	GPUUUID     string   `json:"gpu_uuid"`
	PID         int      `json:"pid"` // host pid
	Command     string   `json:"command,omitempty"`
	Kind        string   `json:"kind"` // compute or graphics
	MemoryBytes uint64   `json:"memory_bytes"`
	UtilPercent *float64 `json:"util_percent"` // SM utilisation; nil where NVML gives none (MIG)
	Owner       string   `json:"owner"`        // mlc, foreign or host
	ContainerID string   `json:"container_id,omitempty"`
	UID         int      `json:"uid"` // the process's real uid
}

// GPUStats is one device.
type GPUStats struct {
	Index            int      `json:"index"`
	UUID             string   `json:"uuid"`
	Name             string   `json:"name"`
	UtilPercent      *float64 `json:"util_percent"`
	MemoryUsedBytes  uint64   `json:"memory_used_bytes"`
	MemoryTotalBytes uint64   `json:"memory_total_bytes"`
	MIG              bool     `json:"mig"`
	Note             string   `json:"note,omitempty"`
}

// UserTotals sums one user's containers.
type UserTotals struct {
	User           string  `json:"user"`
	Containers     int     `json:"containers"`
	Running        int     `json:"running"`
	CPUPercent     float64 `json:"cpu_percent"`
	MemoryBytes    uint64  `json:"memory_bytes"`
	GPUs           int     `json:"gpus"`
	GPUMemoryBytes uint64  `json:"gpu_memory_bytes"`
}
