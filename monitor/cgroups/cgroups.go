// Package cgroups reads a Docker container's resource figures (CPU time,
// memory, pids, block and network I/O) straight from the cgroup and /proc
// files, which takes well under a millisecond, instead of asking the engine
// (a `docker stats` round trip takes a second or more).
//
// It handles cgroup v1 (including hybrid hosts with a v2 "unified" mount) and
// v2, the cgroupfs and systemd drivers, a --cgroup-parent, and mlc itself
// running in a cgroup namespace or with a bind-mounted cgroup sub-tree: the
// cgroup directory of a process is found from /proc/PID/cgroup and the cgroup
// mounts in /proc/self/mountinfo, never from a guessed layout.
//
// Parsers are tolerant: a line they do not understand is skipped, numbers
// that do not fit are ignored, sums saturate. Errors name the pid and the file
// but never quote file contents.
package cgroups

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// Host is where /proc and /sys/fs/cgroup are read: Root "" or "/" in
// production, a fixture directory in tests (then paths are Root+"/proc/...",
// Root+"/sys/fs/cgroup/...").
type Host struct {
	Root string
	// mounts are the cgroup mounts when Cached read them once; nil: read
	// /proc/self/mountinfo on every call.
	mounts []mount
	boot   int64 // boot time (Unix seconds) when Cached read it
}

// Cached is h with its cgroup mounts read now and kept: they do not change
// while a system runs, and reading mountinfo is most of a Read's cost.
func (h Host) Cached() (Host, error) {
	ms, err := h.mountList()
	if err != nil {
		return h, err
	}
	h.mounts = ms
	if boot, err := h.bootTime(); err == nil {
		h.boot = boot
	}
	return h, nil
}

func (h Host) mountList() ([]mount, error) {
	if h.mounts != nil {
		return h.mounts, nil
	}
	mi, err := readFile(h.path("/proc/self/mountinfo"))
	if err != nil {
		return nil, err
	}
	return parseMountinfo(mi), nil
}

// Stats are a cgroup's figures.
type Stats struct {
	Version        int    // 1 or 2
	CPUUsageNs     uint64 // cumulative CPU time of the cgroup, nanoseconds (v1 cpuacct.usage; v2 cpu.stat usage_usec*1000)
	MemoryUsage    uint64 // usage minus inactive file cache, as `docker stats` computes it
	MemoryLimit    uint64 // 0 when unlimited (v2 "max"; v1 values >= 1<<62)
	Pids           uint64 // pids.current
	BlockReadBytes uint64 // summed over devices
	// CPULimit is the CPU quota in CPUs (quota / period: 1.5 for --cpus
	// 1.5); 0 when unlimited or not readable.
	CPULimit        float64
	BlockWriteBytes uint64
}

// maxFile caps what is read of one file; the files read here are far smaller.
const maxFile = 1 << 20

// unlimited: v1 reports "no limit" as the page-rounded 9223372036854771712.
const unlimited = 1 << 62

func (h Host) path(p string) string { return filepath.Join(h.Root, p) }

func readFile(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, maxFile))
}

var idRE = regexp.MustCompile(`docker[-/]([0-9a-f]{64})(?:[^0-9a-f]|$)`)

// ContainerIDs returns, in order, every 64-hex id in a /proc/PID/cgroup
// file's lines that matches `docker[-/]<64 hex>(\.scope)?` anywhere in the
// path (cgroupfs "/docker/<id>", systemd "/system.slice/docker-<id>.scope", a
// parent "/mlc.slice/docker-<id>.scope" or "/mylab/docker/<id>", nested
// "/docker/<a>/docker/<b>", v1 and v2 lines), without duplicates. The caller
// confirms them against the engine's ids (a pid may be in no container, or in
// a foreign one).
func ContainerIDs(procCgroup []byte) []string {
	var ids []string
	for _, l := range parseProcCgroup(procCgroup) {
		for _, m := range idRE.FindAllStringSubmatch(l.Path, -1) {
			if !slices.Contains(ids, m[1]) {
				ids = append(ids, m[1])
			}
		}
	}
	return ids
}

// PidContainerIDs reads /proc/PID/cgroup and returns the ContainerIDs of
// it that are trusted (see trustedIDs).
func (h Host) PidContainerIDs(pid int) ([]string, error) {
	b, err := readFile(h.path(fmt.Sprintf("/proc/%d/cgroup", pid)))
	if err != nil {
		return nil, fmt.Errorf("pid %d: %w", pid, err)
	}
	mounts, err := h.mountList()
	if err != nil {
		return nil, err
	}
	return h.trustedIDs(b, mounts, nil), nil
}

// trustedIDs is ContainerIDs of a /proc/PID/cgroup file, keeping only ids
// in a path whose cgroup directory has the owner of the cgroup mount itself
// (root): the directories the engine makes. A user who manages a cgroup
// sub-tree of their own (systemd's delegation to user@UID.service) can make
// a directory named docker-<id>.scope there and put a process in it, but
// cannot make that directory root's; without this check such a process
// would pass for the container's (its figures, its GPU use, its layer).
//
// owners caches the mount points' owners over one scan (nil: no cache).
func (h Host) trustedIDs(procCgroup []byte, mounts []mount, owners map[string]uint32) []string {
	var out []string
	for _, l := range parseProcCgroup(procCgroup) {
		ms := idRE.FindAllStringSubmatch(l.Path, -1)
		if len(ms) == 0 || !slices.ContainsFunc(ms, func(m []string) bool { return !slices.Contains(out, m[1]) }) {
			continue // no id, or every id here already trusted
		}
		if !h.ownedLikeMount(l, mounts, owners) {
			continue
		}
		for _, m := range ms {
			if !slices.Contains(out, m[1]) {
				out = append(out, m[1])
			}
		}
	}
	return out
}

// ownedLikeMount is whether line l's cgroup directory, under a mount of its
// hierarchy, is a directory owned by that mount point's owner.
func (h Host) ownedLikeMount(l cgLine, mounts []mount, owners map[string]uint32) bool {
	for _, m := range mounts {
		if m.V2 != (l.Controllers == nil) {
			continue
		}
		if !m.V2 && !slices.ContainsFunc(l.Controllers, func(c string) bool { return slices.Contains(m.Opts, c) }) {
			continue
		}
		dir, err := h.dir(m, l.Path)
		if err != nil {
			continue
		}
		owner, ok1 := owners[m.Point]
		if !ok1 {
			owner, ok1 = ownerOf(h.path(m.Point))
			if ok1 && owners != nil {
				owners[m.Point] = owner
			}
		}
		uid, ok2 := ownerOf(dir)
		if ok1 && ok2 && uid == owner {
			return true
		}
	}
	return false
}

// ownerOf is the owner of directory p (not following a last link).
func ownerOf(p string) (uint32, bool) {
	fi, err := os.Lstat(p)
	if err != nil || !fi.IsDir() {
		return 0, false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return st.Uid, true
}

// inContainer is whether a line of a /proc/PID/cgroup file names id (as
// hasID) in a directory root's like its mount (as trustedIDs): a reused pid
// in a student's delegated cgroup named after the container does not pass.
func (h Host) inContainer(procCgroup []byte, id string, mounts []mount) bool {
	for _, l := range parseProcCgroup(procCgroup) {
		if hasID([]byte("0::"+l.Path), id) && h.ownedLikeMount(l, mounts, nil) {
			return true
		}
	}
	return false
}

// hasID reports whether id (64 lowercase hex) is a hex run of its own, in any
// form (docker/<id>, docker-<id>.scope, <parent>/<id>), in a cgroup path.
func hasID(procCgroup []byte, id string) bool {
	for _, l := range parseProcCgroup(procCgroup) {
		if slices.Contains(strings.FieldsFunc(l.Path, func(r rune) bool { return !isHex(r) }), id) {
			return true
		}
	}
	return false
}

func isHex(r rune) bool { return '0' <= r && r <= '9' || 'a' <= r && r <= 'f' }

func validID(id string) bool {
	return len(id) == 64 && strings.IndexFunc(id, func(r rune) bool { return !isHex(r) }) < 0
}

// cgLine is a /proc/PID/cgroup line "hierarchy-ID:controller-list:path".
type cgLine struct {
	Controllers []string // nil on the v2 "0::" line
	Path        string
}

func parseProcCgroup(data []byte) []cgLine {
	var out []cgLine
	for _, line := range strings.Split(string(data), "\n") {
		_, rest, ok := strings.Cut(line, ":")
		ctl, path, ok2 := strings.Cut(rest, ":")
		if !ok || !ok2 || !strings.HasPrefix(path, "/") {
			continue
		}
		l := cgLine{Path: path}
		if ctl != "" {
			l.Controllers = strings.Split(ctl, ",")
		}
		out = append(out, l)
	}
	return out
}

// mount is a cgroup mount from mountinfo.
type mount struct {
	Root  string   // the cgroup path mounted, as the reading process sees it ("/", "/../..", "/mylab")
	Point string   // the mount point
	V2    bool     // cgroup2
	Opts  []string // super options; for v1 they include the controllers ("cpu", "cpuacct", "name=systemd")
}

// parseMountinfo returns the cgroup and cgroup2 mounts of a mountinfo file
// ("36 35 98:0 /root /point opts [optional...] - fstype source superopts").
func parseMountinfo(data []byte) []mount {
	var out []mount
	for _, line := range strings.Split(string(data), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if !ok || len(f) < 6 || len(g) < 1 || (g[0] != "cgroup" && g[0] != "cgroup2") {
			continue
		}
		m := mount{Root: unescape(f[3]), Point: unescape(f[4]), V2: g[0] == "cgroup2"}
		if len(g) >= 3 {
			m.Opts = strings.Split(g[2], ",")
		}
		out = append(out, m)
	}
	return out
}

// unescape undoes mountinfo's octal escapes (\040 for a space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && s[i+1] >= '0' && s[i+1] <= '3' && isOct(s[i+2]) && isOct(s[i+3]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOct(c byte) bool { return '0' <= c && c <= '7' }

func components(p string) []string {
	return strings.FieldsFunc(p, func(r rune) bool { return r == '/' })
}

// relPath subtracts a mount's root from a process's cgroup path, both as the
// reading process sees them. It returns the path below the mount point,
// preceded by unknown levels of directories whose names are not visible: that
// happens in a cgroup namespace, where a mount made outside it shows as
// "/../.." and a process in a sibling sub-tree as "/../docker-<id>.scope".
func relPath(root, path string) (rest []string, unknown int, err error) {
	rc, pc := components(root), components(path)
	if len(pc) >= len(rc) && slices.Equal(pc[:len(rc)], rc) {
		rest = pc[len(rc):]
	} else {
		m, k := ups(rc), ups(pc)
		if m != len(rc) || k >= m {
			return nil, 0, errors.New("cgroup not under its mount")
		}
		rest, unknown = pc[k:], m-k
	}
	for _, c := range rest {
		if c == ".." || c == "." {
			return nil, 0, errors.New("cgroup not under its mount")
		}
	}
	return rest, unknown, nil
}

func ups(c []string) int {
	n := 0
	for n < len(c) && c[n] == ".." {
		n++
	}
	return n
}

// maxUnknown bounds the directory levels searched for relPath's unknown part.
const maxUnknown = 3

// dir returns the directory of cgroup path p under mount m.
func (h Host) dir(m mount, p string) (string, error) {
	rest, unknown, err := relPath(m.Root, p)
	if err != nil {
		return "", err
	}
	base := h.path(m.Point)
	if unknown == 0 {
		return filepath.Join(append([]string{base}, rest...)...), nil
	}
	if unknown > maxUnknown || len(rest) == 0 {
		return "", errors.New("cgroup not under its mount")
	}
	// The levels between the mount's root and the namespace's common ancestor
	// are unnamed: find the one directory at that depth holding rest.
	cands := []string{base}
	for range unknown {
		var next []string
		for _, c := range cands {
			ents, _ := os.ReadDir(c)
			for _, e := range ents {
				if e.IsDir() {
					next = append(next, filepath.Join(c, e.Name()))
				}
			}
		}
		cands = next
	}
	var found []string
	for _, c := range cands {
		d := filepath.Join(append([]string{c}, rest...)...)
		if fi, err := os.Stat(d); err == nil && fi.IsDir() {
			found = append(found, d)
		}
	}
	if len(found) != 1 {
		return "", errors.New("cgroup outside this cgroup namespace not found")
	}
	return found[0], nil
}

// Read returns the stats of the cgroup that process pid (a container's init
// process) is in. wantID, when not "", must appear in the process's
// /proc/PID/cgroup (guards against a reused pid); otherwise an error.
//
// The cgroup directory is resolved per controller from /proc/PID/cgroup and
// Root+/proc/self/mountinfo, the mount's root subtracted from the process's
// path. On a hybrid host the v1 controllers are used when memory is on v1. A
// missing optional file (blkio or io.stat, pids, memory.stat, the limit)
// leaves that figure 0.
func (h Host) Read(pid int, wantID string) (Stats, error) {
	pc, err := readFile(h.path(fmt.Sprintf("/proc/%d/cgroup", pid)))
	if err != nil {
		return Stats{}, fmt.Errorf("pid %d: %w", pid, err)
	}
	mounts, err := h.mountList()
	if err != nil {
		return Stats{}, fmt.Errorf("pid %d: %w", pid, err)
	}
	if wantID != "" && (!validID(wantID) || !h.inContainer(pc, wantID, mounts)) {
		return Stats{}, fmt.Errorf("pid %d: not in container %.12s", pid, wantID)
	}
	r := resolver{h: h, pid: pid, mounts: mounts, lines: parseProcCgroup(pc)}
	var s Stats
	if mem, ok, err := r.find("memory"); err != nil {
		return Stats{}, err
	} else if ok {
		err = r.readV1(&s, mem)
		return s, err
	}
	err = r.readV2(&s)
	return s, err
}

type resolver struct {
	h      Host
	pid    int
	mounts []mount
	lines  []cgLine
}

func (r *resolver) errf(format string, a ...any) error {
	return fmt.Errorf("pid %d: "+format, append([]any{r.pid}, a...)...)
}

// find returns the directory of v1 controller ctl, or ok false when the
// controller is not mounted or the process is in no cgroup of it; ctl "" finds
// the v2 directory.
func (r *resolver) find(ctl string) (dir string, ok bool, err error) {
	for _, l := range r.lines {
		if ctl == "" && l.Controllers != nil || ctl != "" && !slices.Contains(l.Controllers, ctl) {
			continue
		}
		var last error
		for _, m := range r.mounts {
			if m.V2 == (ctl == "") && (ctl == "" || slices.Contains(m.Opts, ctl)) {
				if dir, last = r.h.dir(m, l.Path); last == nil {
					return dir, true, nil
				}
			}
		}
		if last != nil {
			return "", false, r.errf("%s cgroup: %w", cmp.Or(ctl, "v2"), last)
		}
	}
	return "", false, nil
}

// file reads name under dir; a missing file is no error when optional.
func (r *resolver) file(dir, name string, optional bool) ([]byte, error) {
	b, err := readFile(filepath.Join(dir, name))
	if err != nil && optional && errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, r.errf("%w", err)
	}
	return b, nil
}

// uint reads a one-number file; "max" is math.MaxUint64, a missing optional
// file 0.
func (r *resolver) uint(dir, name string, optional bool) (uint64, error) {
	b, err := r.file(dir, name, optional)
	if err != nil || b == nil {
		return 0, err
	}
	s := strings.TrimSpace(string(b))
	if s == "max" {
		return math.MaxUint64, nil
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, r.errf("bad %s", name)
	}
	return v, nil
}

func (r *resolver) readV1(s *Stats, mem string) error {
	s.Version = 1
	var err error
	if s.MemoryUsage, err = r.uint(mem, "memory.usage_in_bytes", false); err != nil {
		return err
	}
	if s.MemoryLimit, err = r.uint(mem, "memory.limit_in_bytes", true); err != nil {
		return err
	}
	st, err := r.file(mem, "memory.stat", true)
	if err != nil {
		return err
	}
	kv := parseKV(st)
	inactive, ok := kv["total_inactive_file"]
	if !ok {
		inactive = kv["inactive_file"]
	}
	s.MemoryUsage = usageLessInactive(s.MemoryUsage, inactive)
	s.MemoryLimit = limit(s.MemoryLimit)

	cpu, ok, err := r.find("cpuacct")
	if err != nil {
		return err
	} else if !ok {
		return r.errf("no cpuacct cgroup")
	}
	if s.CPUUsageNs, err = r.uint(cpu, "cpuacct.usage", false); err != nil {
		return err
	}
	if d, ok, err := r.find("cpu"); err == nil && ok {
		quota, qerr := r.file(d, "cpu.cfs_quota_us", true)
		period, perr := r.file(d, "cpu.cfs_period_us", true)
		if qerr == nil && perr == nil {
			s.CPULimit = quotaCPUs(strings.TrimSpace(string(quota)), strings.TrimSpace(string(period)))
		}
	}

	if d, ok, err := r.find("pids"); err != nil {
		return err
	} else if ok {
		if s.Pids, err = r.uint(d, "pids.current", true); err != nil {
			return err
		}
	}

	if d, ok, err := r.find("blkio"); err != nil {
		return err
	} else if ok {
		b, err := r.file(d, "blkio.throttle.io_service_bytes_recursive", true)
		if b == nil && err == nil {
			b, err = r.file(d, "blkio.io_service_bytes_recursive", true)
		}
		if err != nil {
			return err
		}
		s.BlockReadBytes, s.BlockWriteBytes = parseBlkio(b)
	}
	return nil
}

func (r *resolver) readV2(s *Stats) error {
	d, ok, err := r.find("")
	if err != nil {
		return err
	} else if !ok {
		return r.errf("no memory cgroup")
	}
	s.Version = 2
	cs, err := r.file(d, "cpu.stat", false)
	if err != nil {
		return err
	}
	us, ok := parseKV(cs)["usage_usec"]
	if !ok {
		return r.errf("bad cpu.stat")
	}
	s.CPUUsageNs = mul(us, 1000)
	if b, err := r.file(d, "cpu.max", true); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			s.CPULimit = quotaCPUs(f[0], f[1])
		}
	}
	if s.MemoryUsage, err = r.uint(d, "memory.current", false); err != nil {
		return err
	}
	if s.MemoryLimit, err = r.uint(d, "memory.max", true); err != nil {
		return err
	}
	s.MemoryLimit = limit(s.MemoryLimit)
	st, err := r.file(d, "memory.stat", true)
	if err != nil {
		return err
	}
	s.MemoryUsage = usageLessInactive(s.MemoryUsage, parseKV(st)["inactive_file"])
	if s.Pids, err = r.uint(d, "pids.current", true); err != nil {
		return err
	}
	io, err := r.file(d, "io.stat", true)
	if err != nil {
		return err
	}
	s.BlockReadBytes, s.BlockWriteBytes = parseIOStat(io)
	return nil
}

// usageLessInactive is `docker stats`' memory figure: the inactive file
// cache is subtracted only when smaller than the usage.
func usageLessInactive(usage, inactive uint64) uint64 {
	if inactive < usage {
		return usage - inactive
	}
	return usage
}

func limit(v uint64) uint64 {
	if v >= unlimited {
		return 0
	}
	return v
}

func add(a, b uint64) uint64 {
	if a+b < a {
		return math.MaxUint64
	}
	return a + b
}

func mul(a, b uint64) uint64 {
	if b != 0 && a > math.MaxUint64/b {
		return math.MaxUint64
	}
	return a * b
}

func num(s string) uint64 {
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0 // ParseUint says MaxUint64 on overflow
	}
	return v
}

// parseKV parses "key value" lines (memory.stat, cpu.stat); bad lines are
// skipped.
func parseKV(data []byte) map[string]uint64 {
	kv := map[string]uint64{}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		if v, err := strconv.ParseUint(f[1], 10, 64); err == nil {
			kv[f[0]] = v
		}
	}
	return kv
}

// parseBlkio sums the "MAJ:MIN Read N" and "MAJ:MIN Write N" lines of a v1
// blkio io_service_bytes file.
func parseBlkio(data []byte) (rd, wr uint64) {
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			continue
		}
		switch f[1] {
		case "Read":
			rd = add(rd, num(f[2]))
		case "Write":
			wr = add(wr, num(f[2]))
		}
	}
	return rd, wr
}

// parseIOStat sums rbytes and wbytes over the devices of a v2 io.stat
// ("8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0").
func parseIOStat(data []byte) (rd, wr uint64) {
	for _, line := range strings.Split(string(data), "\n") {
		for _, kv := range strings.Fields(line) {
			k, v, _ := strings.Cut(kv, "=")
			switch k {
			case "rbytes":
				rd = add(rd, num(v))
			case "wbytes":
				wr = add(wr, num(v))
			}
		}
	}
	return rd, wr
}

// NetDev sums receive and transmit bytes over every interface but lo in
// /proc/PID/net/dev (the net namespace of that process).
func (h Host) NetDev(pid int) (rx, tx uint64, err error) {
	b, err := readFile(h.path(fmt.Sprintf("/proc/%d/net/dev", pid)))
	if err != nil {
		return 0, 0, fmt.Errorf("pid %d: %w", pid, err)
	}
	rx, tx = parseNetDev(b)
	return rx, tx, nil
}

// parseNetDev sums the byte columns of a net/dev file ("  eth0: rxbytes
// rxpackets ... (8 receive fields) txbytes ..."), skipping lo and the two
// header lines (which have no colon).
func parseNetDev(data []byte) (rx, tx uint64) {
	for _, line := range strings.Split(string(data), "\n") {
		i := strings.LastIndexByte(line, ':')
		if i < 0 {
			continue
		}
		f := strings.Fields(line[i+1:])
		if strings.TrimSpace(line[:i]) == "lo" || len(f) < 9 {
			continue
		}
		rx, tx = add(rx, num(f[0])), add(tx, num(f[8]))
	}
	return rx, tx
}

// MemTotal is MemTotal from /proc/meminfo in bytes.
func (h Host) MemTotal() (uint64, error) {
	b, err := readFile(h.path("/proc/meminfo"))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "MemTotal:" {
			continue
		}
		v, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil || v > math.MaxUint64/1024 {
			break
		}
		return v * 1024, nil // always kB
	}
	return 0, errors.New("meminfo: no MemTotal")
}

// quotaCPUs is a CFS quota and period (microseconds; quota "max" or -1 for
// none) as a number of CPUs, 0 when unlimited or unreadable.
func quotaCPUs(quota, period string) float64 {
	q, err1 := strconv.ParseInt(quota, 10, 64)
	p, err2 := strconv.ParseInt(period, 10, 64)
	if err1 != nil || err2 != nil || q <= 0 || p <= 0 {
		return 0
	}
	return float64(q) / float64(p)
}
