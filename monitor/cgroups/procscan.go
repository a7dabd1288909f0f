package cgroups

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of /proc/PID/stat's times: 100 on every
// architecture Linux runs containers on.
const clockTicks = 100

// Proc is a container's init process as a scan of /proc found it.
type Proc struct {
	PID   int
	Start uint64 // start time in clock ticks since boot (/proc/PID/stat field 22)
}

// ContainerProcs returns the first process of each of the containers ids
// that it finds: the one that started first (the container's init, which
// lives as long as the container; the lowest pid is not it after pid numbers
// wrap). It looks in the engine's usual cgroup directories first
// (docker/<id> under cgroupfs, system.slice/docker-<id>.scope under systemd:
// one cgroup.procs read per container), and scans every process's
// /proc/PID/cgroup only for those it did not find there (a cgroup parent).
// Either way a directory counts only when it is root's (trustedIDs). This
// replaces one engine inspect per container, which costs more than all of it.
func (h Host) ContainerProcs(ids []string) (map[string]Proc, error) {
	out := map[string]Proc{}
	mounts, err := h.mountList()
	if err != nil {
		return nil, err
	}
	var missing []string
	for _, id := range ids {
		if !validID(id) {
			continue
		}
		if p, ok := h.fromUsualCgroup(id, mounts); ok {
			out[id] = p
		} else {
			missing = append(missing, id)
		}
	}
	if len(missing) == 0 {
		return out, nil
	}
	scanned, err := h.scanProcs()
	if err != nil {
		return out, err
	}
	for _, id := range missing {
		if p, ok := scanned[id]; ok {
			out[id] = p
		}
	}
	return out, nil
}

// usualCgroups are where the engine puts container id's cgroup without a
// cgroup parent: the cgroupfs and the systemd driver's places.
func usualCgroups(id string) []string {
	return []string{"docker/" + id, "system.slice/docker-" + id + ".scope"}
}

// fromUsualCgroup finds id's first process through the cgroup.procs of its
// usual cgroup directory, if that exists and is root's like its mount.
func (h Host) fromUsualCgroup(id string, mounts []mount) (Proc, bool) {
	for _, m := range mounts {
		if m.Root != "/" || !(m.V2 || slices.Contains(m.Opts, "pids") || slices.Contains(m.Opts, "memory")) {
			continue
		}
		owner, ok := ownerOf(h.path(m.Point))
		if !ok {
			continue
		}
		for _, rel := range usualCgroups(id) {
			dir := filepath.Join(h.path(m.Point), rel)
			if uid, ok := ownerOf(dir); !ok || uid != owner {
				continue
			}
			b, err := readFile(filepath.Join(dir, "cgroup.procs"))
			if err != nil {
				continue
			}
			var best Proc
			for _, f := range strings.Fields(string(b)) {
				pid, err := strconv.Atoi(f)
				if err != nil || pid <= 0 {
					continue
				}
				start, err := h.procStartTicks(pid)
				if err != nil {
					continue
				}
				if best.PID == 0 || start < best.Start || (start == best.Start && pid < best.PID) {
					best = Proc{PID: pid, Start: start}
				}
			}
			if best.PID != 0 {
				return best, true
			}
		}
	}
	return Proc{}, false
}

// scanProcs reads every process's cgroup file once: the first process of
// every container trustedIDs finds.
func (h Host) scanProcs() (map[string]Proc, error) {
	d, err := os.Open(h.path("/proc"))
	if err != nil {
		return nil, err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	mounts, err := h.mountList()
	if err != nil {
		return nil, err
	}
	owners := map[string]uint32{}
	out := map[string]Proc{}
	for _, n := range names {
		pid, err := strconv.Atoi(n)
		if err != nil || pid <= 0 {
			continue
		}
		b, err := readFile(h.path("/proc/" + n + "/cgroup"))
		if err != nil {
			continue
		}
		if len(idRE.FindIndex(b)) == 0 {
			continue
		}
		ids := h.trustedIDs(b, mounts, owners)
		if len(ids) == 0 {
			continue
		}
		start, err := h.procStartTicks(pid)
		if err != nil {
			continue
		}
		for _, id := range ids {
			if p, ok := out[id]; !ok || start < p.Start || (start == p.Start && pid < p.PID) {
				out[id] = Proc{PID: pid, Start: start}
			}
		}
	}
	return out, nil
}

// procStartTicks is field 22 of /proc/PID/stat. The command name (field 2)
// may hold spaces and parentheses; the fields after its last ")" are plain.
func (h Host) procStartTicks(pid int) (uint64, error) {
	b, err := readFile(h.path(fmt.Sprintf("/proc/%d/stat", pid)))
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("pid %d: bad stat", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return 0, fmt.Errorf("pid %d: bad stat", pid)
	}
	v, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("pid %d: bad stat", pid)
	}
	return v, nil
}

// StartTime is when a process that started ticks clock ticks after boot
// started, from the boot time in /proc/stat (read once per Cached host).
func (h Host) StartTime(ticks uint64) (time.Time, error) {
	boot := h.boot
	if boot == 0 {
		var err error
		if boot, err = h.bootTime(); err != nil {
			return time.Time{}, err
		}
	}
	return time.Unix(boot, 0).Add(time.Duration(ticks) * time.Second / clockTicks), nil
}

func (h Host) bootTime() (int64, error) {
	b, err := readFile(h.path("/proc/stat"))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			boot, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil || boot <= 0 {
				break
			}
			return boot, nil
		}
	}
	return 0, errors.New("/proc/stat: no btime")
}

// UpperDir is the upper directory of the overlay mounted at / for process
// pid (from /proc/PID/mountinfo, which the kernel writes; processes in a
// container cannot remount its root), "" when its root is not an overlay.
func (h Host) UpperDir(pid int) (string, error) {
	b, err := readFile(h.path(fmt.Sprintf("/proc/%d/mountinfo", pid)))
	if err != nil {
		return "", err
	}
	d := upperDir(b)
	if d == "" {
		return "", nil
	}
	// The engine's own directory: no link anywhere on the way.
	if real, err := filepath.EvalSymlinks(h.path(d)); err != nil || real != filepath.Clean(h.path(d)) {
		return "", fmt.Errorf("pid %d: upper directory is not a plain directory", pid)
	}
	return d, nil
}

func upperDir(mountinfo []byte) string {
	for _, line := range strings.Split(string(mountinfo), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if !ok || len(f) < 5 || len(g) < 3 || f[4] != "/" || g[0] != "overlay" {
			continue
		}
		for _, opt := range strings.Split(g[2], ",") {
			if v, ok := strings.CutPrefix(opt, "upperdir="); ok && strings.HasPrefix(v, "/") {
				return unescape(v)
			}
		}
	}
	return ""
}
