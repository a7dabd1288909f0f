package cgroups

import (
	"errors"
	"io/fs"
	"math"
	"os"
	"slices"
	"strings"
	"testing"
)

// Container ids of the fixtures under testdata/.
const (
	idV1         = "85670516cb1d37866ca385eabd1821a50e8c35ad44482913e2437e1ba529e4da" // v1-cgroupfs, recorded on this machine
	idV1Systemd  = "e9623316878b42240105f19aa2d411bb1e174844273bf7f6c626a11f7ef3ba69" // v1-systemd
	idV2         = "a4b282ec4492f1d726600ebb8336f3fcaf5ec733cbd3749615e8c8d6f086f6d7" // v2-systemd
	idNSSibling  = "4a32e5b6f6d5666c2747a807b8bdb49fef7bda836d6124f692409770ab607273" // v2-cgroupns, /system.slice, seen as /../
	idNSParent   = "e5e60cb581227c9f4f4285bdc30d17c616c8085b92b3f2d56645f0751e05a6b9" // v2-cgroupns, /mlc.slice, seen as /../../
	idParent     = "240587e71c7b35e007e2b883ac43bb2e3d4b1a0ae52fc8629c9430ddd79159e9" // v2-parent, /mylab/<id>
	idBindmount  = "3576e3bd3ea9b14be972b538103aedb0ac1c816ccf0c87c00b48e388074d7c38" // v2-bindmount, /mylab mounted at /sys/fs/cgroup
	unknownHexID = "0000000000000000000000000000000000000000000000000000000000000000"
)

func TestRead(t *testing.T) {
	for _, c := range []struct {
		root string
		pid  int
		id   string
		want Stats
	}{
		// Recorded: busybox sleeping after writing 8 MiB to its rootfs. cpu
		// and cpuacct are separate hierarchies here; the hybrid's unified
		// cpu.stat (134761 µs) must not be used.
		{"v1-cgroupfs", 4133, idV1, Stats{Version: 1, CPUUsageNs: 134227658,
			MemoryUsage: 10436608 - 8433664, MemoryLimit: 0, Pids: 1}},
		// cpu,cpuacct co-mounted; inactive file above usage; blkio fallback file.
		{"v1-systemd", 6001, idV1Systemd, Stats{Version: 1, CPUUsageNs: 987654321,
			MemoryUsage: 4096000, MemoryLimit: 536870912, Pids: 7,
			BlockReadBytes: 1048576 + 4096, BlockWriteBytes: 2097152, CPULimit: 0.5}},
		{"v2-systemd", 2345, idV2, Stats{Version: 2, CPUUsageNs: 2345678000,
			MemoryUsage: 12947456 - 6709248, MemoryLimit: 1 << 30, Pids: 5,
			BlockReadBytes: 1 + 4096000, BlockWriteBytes: 2 + 819200, CPULimit: 1.5}},
		// Sibling sub-tree of mlc's namespace: found by searching one level.
		{"v2-cgroupns", 3001, idNSSibling, Stats{Version: 2, CPUUsageNs: 42000,
			MemoryUsage: 1000, MemoryLimit: 0, Pids: 3}},
		{"v2-cgroupns", 3002, idNSParent, Stats{Version: 2, CPUUsageNs: 1e9,
			MemoryUsage: 2048000 - 48000, MemoryLimit: 4 << 30, Pids: 1}},
		// io.stat with a saturating sum, a broken line and unparsable numbers.
		{"v2-parent", 4001, idParent, Stats{Version: 2, CPUUsageNs: 5e9,
			MemoryUsage: 300000000 - 50000000, Pids: 12,
			BlockReadBytes: math.MaxUint64, BlockWriteBytes: 20}},
		// Only cpu.stat and memory.current: the rest is 0.
		{"v2-bindmount", 5001, idBindmount, Stats{Version: 2, CPUUsageNs: 7000, MemoryUsage: 4096}},
		{"v2-bindmount", 5001, "", Stats{Version: 2, CPUUsageNs: 7000, MemoryUsage: 4096}},
	} {
		got, err := Host{Root: "testdata/" + c.root}.Read(c.pid, c.id)
		if err != nil {
			t.Errorf("%s pid %d: %v", c.root, c.pid, err)
		} else if got != c.want {
			t.Errorf("%s pid %d:\n got %+v\nwant %+v", c.root, c.pid, got, c.want)
		}
	}
}

func TestReadErrors(t *testing.T) {
	for _, c := range []struct {
		root string
		pid  int
		id   string
		want string
	}{
		{"v2-systemd", 2345, idV1, "pid 2345: not in container 85670516cb1d"},
		{"v2-systemd", 2345, strings.ToUpper(idV2), "not in container"},
		{"v2-systemd", 2345, idV2[:12], "not in container"},
		{"v1-cgroupfs", 4133, idV2, "not in container"},
		{"v2-parent", 4001, idV2, "not in container"},
		{"v2-systemd", 999, "", "pid 999: open "},
		{"v2-cgroupns", 3003, "", "pid 3003: v2 cgroup: cgroup outside this cgroup namespace not found"},
	} {
		_, err := Host{Root: "testdata/" + c.root}.Read(c.pid, c.id)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s pid %d id %.12s: err %v, want %q", c.root, c.pid, c.id, err, c.want)
		}
	}
	if _, err := (Host{Root: "testdata/v2-systemd"}).Read(999, ""); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing pid: %v, want ErrNotExist", err)
	}
}

// TestReadBadFiles checks that odd contents give short errors that do not
// quote the file.
func TestReadBadFiles(t *testing.T) {
	root := t.TempDir()
	write := func(name, text string) {
		t.Helper()
		p := root + "/" + name
		if err := os.MkdirAll(p[:strings.LastIndexByte(p, '/')], 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("proc/self/mountinfo", "35 24 0:30 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n")
	write("proc/7/cgroup", "0::/x\n")
	write("sys/fs/cgroup/x/cpu.stat", "usage_usec 99999999999999999999999\n")
	write("sys/fs/cgroup/x/memory.current", "SECRET\n")
	h := Host{Root: root}
	if _, err := h.Read(7, ""); err == nil || err.Error() != "pid 7: bad cpu.stat" {
		t.Errorf("huge usage_usec: %v", err)
	}
	write("sys/fs/cgroup/x/cpu.stat", "usage_usec 18446744073709551615\n")
	if _, err := h.Read(7, ""); err == nil || err.Error() != "pid 7: bad memory.current" {
		t.Errorf("bad memory.current: %v", err)
	}
	write("sys/fs/cgroup/x/memory.current", "5\n")
	if s, err := h.Read(7, ""); err != nil || s.CPUUsageNs != math.MaxUint64 || s.MemoryUsage != 5 {
		t.Errorf("saturated CPU: %+v %v", s, err)
	}
	write("proc/8/cgroup", "0::/../x\n")
	if _, err := h.Read(8, ""); err == nil || !strings.Contains(err.Error(), "not under its mount") {
		t.Errorf("path above the mount: %v", err)
	}
	write("proc/9/cgroup", "0::/x/../../etc\n")
	if _, err := h.Read(9, ""); err == nil || !strings.Contains(err.Error(), "not under its mount") {
		t.Errorf("path with ..: %v", err)
	}
	write("proc/10/cgroup", "garbage\n")
	if _, err := h.Read(10, ""); err == nil || err.Error() != "pid 10: no memory cgroup" {
		t.Errorf("no cgroup line: %v", err)
	}
	write("proc/self/mountinfo", "")
	if _, err := h.Read(7, ""); err == nil || err.Error() != "pid 7: no memory cgroup" {
		t.Errorf("no mounts: %v", err)
	}
}

func TestNetDev(t *testing.T) {
	rx, tx, err := Host{Root: "testdata/v2-systemd"}.NetDev(2345)
	if err != nil || rx != 5700 || tx != 3300 {
		t.Errorf("v2-systemd: %d %d %v, want 5700 3300 (lo skipped)", rx, tx, err)
	}
	rx, tx, err = Host{Root: "testdata/v1-cgroupfs"}.NetDev(4133)
	if err != nil || rx != 806 || tx != 0 {
		t.Errorf("v1-cgroupfs: %d %d %v, want 806 0", rx, tx, err)
	}
	if _, _, err := (Host{Root: "testdata/v1-cgroupfs"}).NetDev(1); err == nil {
		t.Error("missing pid: no error")
	}
	rx, tx = parseNetDev([]byte("eth0: 1 2 3\nlo 5 0 0 0 0 0 0 0 7\nx: 18446744073709551615 0 0 0 0 0 0 0 1\ny: 1 0 0 0 0 0 0 0 1\nz: -1 0 0 0 0 0 0 0 nan\n"))
	if rx != math.MaxUint64 || tx != 2 {
		t.Errorf("odd lines: %d %d", rx, tx)
	}
}

func TestMemTotal(t *testing.T) {
	if v, err := (Host{Root: "testdata/v1-cgroupfs"}).MemTotal(); err != nil || v != 24683620*1024 {
		t.Errorf("MemTotal %d %v", v, err)
	}
	if _, err := (Host{Root: "testdata/v2-systemd"}).MemTotal(); err == nil {
		t.Error("missing meminfo: no error")
	}
}

func TestContainerIDs(t *testing.T) {
	const a, b = idV2, idNSSibling
	for _, c := range []struct {
		in   string
		want []string
	}{
		{"0::/docker/" + a, []string{a}},                                               // v2 cgroupfs
		{"0::/system.slice/docker-" + a + ".scope\n", []string{a}},                     // v2 systemd
		{"0::/mlc.slice/docker-" + a + ".scope", []string{a}},                          // systemd with a parent
		{"4:memory:/mylab/docker/" + a, []string{a}},                                   // v1 cgroupfs with a parent
		{"0::/docker/" + a + "/docker/" + b, []string{a, b}},                           // nested
		{"0::/../docker-" + a + ".scope", []string{a}},                                 // seen from a cgroup namespace
		{"0::/system.slice/docker-" + a + ".scopeX", []string{a}},                      // what the pattern allows
		{"1:cpu:/docker/" + a + "\n0::/docker/" + b + "\n", []string{a, b}},            // v1 and v2 lines
		{"1:cpu:/docker/" + a + "\n2:memory:/docker/" + a, []string{a}},                // no duplicates
		{"0::/system.slice/docker-" + a + ".scope/init", []string{a}},                  // a sub-cgroup
		{"12:pids:/init.scope/docker:" + a, nil},                                       // colon, not docker[-/]
		{"0::/mylab/" + a, nil},                                                        // a parent without "docker": Read only
		{"0::/docker/" + a[:63], nil},                                                  // 63 hex
		{"0::/docker/" + a + "0", nil},                                                 // 65 hex
		{"0::/docker/" + strings.ToUpper(a), nil},                                      // uppercase
		{"0::/kubepods/burstable/pod1234/" + a, nil},                                   // kubernetes, cgroupfs
		{"0::/kubepods.slice/kubepods-pod1.slice/cri-containerd-" + a + ".scope", nil}, // containerd
		{"0::/system.slice/containerd.service", nil},
		{"docker/" + a, nil},    // not a cgroup line
		{"0:/docker/" + a, nil}, // truncated
		{"", nil},
		{"0::/", nil},
	} {
		if got := ContainerIDs([]byte(c.in)); !slices.Equal(got, c.want) {
			t.Errorf("ContainerIDs(%q) = %q, want %q", c.in, got, c.want)
		}
	}

	for _, c := range []struct {
		root string
		pid  int
		want []string
	}{
		{"v1-cgroupfs", 4133, []string{idV1}},
		{"v1-systemd", 6001, []string{idV1Systemd}},
		{"v2-systemd", 2345, []string{idV2}},
		{"v2-cgroupns", 3001, []string{idNSSibling}},
		{"v2-cgroupns", 3002, []string{idNSParent}},
		{"v2-parent", 4001, nil},
	} {
		got, err := Host{Root: "testdata/" + c.root}.PidContainerIDs(c.pid)
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("%s pid %d: %q %v, want %q", c.root, c.pid, got, err, c.want)
		}
	}
	if _, err := (Host{Root: "testdata/v2-systemd"}).PidContainerIDs(1); err == nil {
		t.Error("missing pid: no error")
	}
}

func TestParseMountinfo(t *testing.T) {
	got := parseMountinfo([]byte(`30 22 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
31 30 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:5 master:1 - cgroup cgroup rw,cpu,cpuacct
40 30 0:37 /a\040b /my\040cgroup rw - cgroup2 cgroup2
41 30 0:37 / /x rw -
42 30 0:37 / rw - cgroup cgroup rw
43 30 0:37 / /y rw - cgroup2
`))
	want := []mount{
		{Root: "/", Point: "/sys/fs/cgroup/cpu,cpuacct", Opts: []string{"rw", "cpu", "cpuacct"}},
		{Root: "/a b", Point: "/my cgroup", V2: true},
		{Root: "/", Point: "/y", V2: true},
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v", got)
	}
	for i := range want {
		if got[i].Root != want[i].Root || got[i].Point != want[i].Point || got[i].V2 != want[i].V2 || !slices.Equal(got[i].Opts, want[i].Opts) {
			t.Errorf("mount %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestRelPath(t *testing.T) {
	for _, c := range []struct {
		root, path string
		rest       string
		unknown    int
		err        bool
	}{
		{"/", "/docker/x", "docker/x", 0, false},
		{"/mylab", "/mylab/x", "x", 0, false},
		{"/mylab", "/mylab", "", 0, false},
		{"/mylab", "/mylabx/y", "", 0, true},
		{"/../..", "/../../system.slice/x", "system.slice/x", 0, false},
		{"/../..", "/../x", "x", 1, false},
		{"/../..", "/x", "x", 2, false},
		{"/", "/../x", "", 0, true},
		{"/a/..", "/b", "", 0, true},
		{"/", "/a/../../b", "", 0, true},
		{"/../..", "/../..", "", 0, false},
	} {
		rest, unknown, err := relPath(c.root, c.path)
		if (err != nil) != c.err || err == nil && (strings.Join(rest, "/") != c.rest || unknown != c.unknown) {
			t.Errorf("relPath(%q, %q) = %q %d %v", c.root, c.path, rest, unknown, err)
		}
	}
}

func FuzzContainerIDs(f *testing.F) {
	for _, s := range []string{
		"0::/docker/" + idV2, "1:cpu:/system.slice/docker-" + idV2 + ".scope\n0::/docker/" + idV1 + "/docker/" + idV2,
		"0::/mylab/" + idV2, "0:", "::", "\n\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ids := ContainerIDs(data)
		for i, id := range ids {
			if !validID(id) || slices.Contains(ids[:i], id) || !strings.Contains(string(data), id) || !hasID(data, id) {
				t.Fatalf("bad id %q in %q", id, ids)
			}
		}
	})
}

func FuzzMountinfo(f *testing.F) {
	mi, _ := os.ReadFile("testdata/v1-cgroupfs/proc/self/mountinfo")
	f.Add(mi, []byte("4:memory:/docker/"+idV1))
	mi, _ = os.ReadFile("testdata/v2-cgroupns/proc/self/mountinfo")
	f.Add(mi, []byte("0::/../docker-"+idV2+".scope"))
	f.Add([]byte(`1 2 3 /a\040b /\777 x - cgroup2`), []byte("0::/a b/../c"))
	f.Fuzz(func(t *testing.T, mi, pc []byte) {
		for _, m := range parseMountinfo(mi) {
			for _, l := range parseProcCgroup(pc) {
				rest, unknown, err := relPath(m.Root, l.Path)
				if err != nil {
					continue
				}
				if unknown < 0 || slices.Contains(rest, "..") || slices.Contains(rest, ".") || slices.Contains(rest, "") {
					t.Fatalf("relPath(%q, %q) = %q %d", m.Root, l.Path, rest, unknown)
				}
			}
		}
	})
}

func FuzzNetDev(f *testing.F) {
	nd, _ := os.ReadFile("testdata/v2-systemd/proc/2345/net/dev")
	f.Add(nd)
	f.Add([]byte("eth0: 1 2 3 4 5 6 7 8 9\n:\n lo:"))
	f.Fuzz(func(t *testing.T, data []byte) {
		rx, tx := parseNetDev(data)
		// A lo line changes nothing.
		rx2, tx2 := parseNetDev(append(slices.Clip(data), "\n  lo: 5 0 0 0 0 0 0 0 5\n"...))
		if rx != rx2 || tx != tx2 {
			t.Fatalf("lo counted: %d %d vs %d %d", rx, tx, rx2, tx2)
		}
		parseKV(data)
		parseBlkio(data)
		parseIOStat(data)
	})
}

func TestQuotaCPUs(t *testing.T) {
	for _, c := range []struct {
		q, p string
		want float64
	}{{"100000", "100000", 1}, {"150000", "100000", 1.5}, {"-1", "100000", 0}, {"max", "100000", 0}, {"5", "0", 0}, {"x", "y", 0}} {
		if got := quotaCPUs(c.q, c.p); got != c.want {
			t.Errorf("quotaCPUs(%q, %q) = %v, want %v", c.q, c.p, got, c.want)
		}
	}
}
