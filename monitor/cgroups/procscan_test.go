package cgroups

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func writeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for p, c := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func stat(pid, comm string, start int) string {
	// pid (comm) state ppid ... field 22 is starttime.
	f := make([]string, 20)
	for i := range f {
		f[i] = "0"
	}
	f[0] = "S"
	f[19] = strconv.Itoa(start)
	return pid + " (" + comm + ") " + strings.Join(f, " ") + " 0 0\n"
}

const (
	idA = "2b9bed79fb1886cb541fa1deb55fa456edaf375f888bd414fd77fb2e097ea35d"
	idB = "9a8cbc6b81a6000000000000000000000000000000000000000000000000beef"
)

func TestContainerProcs(t *testing.T) {
	root := writeTree(t, map[string]string{
		// Container A: its init started first (tick 5) but has a higher pid than a later process (pids wrapped).
		"proc/900/cgroup": "4:memory:/docker/" + idA + "\n0::/docker/" + idA + "\n",
		"proc/900/stat":   stat("900", "docker-init", 5),
		"proc/12/cgroup":  "4:memory:/docker/" + idA + "\n",
		"proc/12/stat":    stat("12", "python) (x", 7),
		// Container B under systemd.
		"proc/300/cgroup": "0::/system.slice/docker-" + idB + ".scope\n",
		"proc/300/stat":   stat("300", "sh", 3),
		// A host process, a process gone mid-scan (no stat), a non-pid entry.
		"proc/1/cgroup":   "0::/init.scope\n",
		"proc/1/stat":     stat("1", "systemd", 1),
		"proc/400/cgroup": "0::/docker/" + idB + "\n",
		"proc/self/x":     "",
		"proc/stat":       "cpu  1 2 3\nbtime 1700000000\n",
		"proc/self/mountinfo": "30 20 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n" +
			"31 20 0:27 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n",
		"sys/fs/cgroup/docker/" + idA + "/cgroup.procs":                    "",
		"sys/fs/cgroup/memory/docker/" + idA + "/cgroup.procs":             "",
		"sys/fs/cgroup/system.slice/docker-" + idB + ".scope/cgroup.procs": "",
		"sys/fs/cgroup/docker/" + idB + "/cgroup.procs":                    "",
		// A student's delegated sub-tree (systemd user@UID.service) with a
		// directory named after A, holding a process that started first.
		"proc/5/cgroup": "0::/user.slice/user@1001.service/docker-" + idA + ".scope\n",
		"proc/5/stat":   stat("5", "sleep", 2),
		"sys/fs/cgroup/user.slice/user@1001.service/docker-" + idA + ".scope/cgroup.procs": "",
	})
	h := Host{Root: root}
	if os.Getuid() == 0 {
		if err := os.Chown(filepath.Join(root, "sys/fs/cgroup/user.slice/user@1001.service/docker-"+idA+".scope"), 1001, 1001); err != nil {
			t.Fatal(err)
		}
	} else {
		// Not root: the student's directory cannot be given away; remove it instead.
		os.RemoveAll(filepath.Join(root, "sys/fs/cgroup/user.slice"))
	}
	got, err := h.ContainerProcs([]string{idA, idB, "not-an-id"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[idA].PID != 900 || got[idA].Start != 5 || got[idB].PID != 300 {
		t.Fatalf("ContainerProcs = %+v; want A's init 900 (not the student's 5 in a directory of theirs) and B's 300", got)
	}
	if ids, err := h.PidContainerIDs(5); err != nil || len(ids) != 0 {
		t.Errorf("the student's process passes for container A's: %v %v", ids, err)
	}
	if os.Getuid() == 0 {
		if _, err := h.Read(5, idA); err == nil || !strings.Contains(err.Error(), "not in container") {
			t.Errorf("Read takes the student's process for container A's: %v", err)
		}
	}
	if ids, err := h.PidContainerIDs(900); err != nil || len(ids) != 1 || ids[0] != idA {
		t.Errorf("A's init: %v %v", ids, err)
	}
	st, err := h.StartTime(got[idA].Start)
	if err != nil || !st.Equal(time.Unix(1700000000, 50e6)) {
		t.Errorf("StartTime = %v, %v", st, err)
	}
	if _, err := (Host{Root: t.TempDir()}).StartTime(1); err == nil {
		t.Error("no /proc/stat: no error")
	}
}

func TestUpperDir(t *testing.T) {
	line := "247 185 0:82 / / rw,relatime master:6 - overlay overlay rw,lowerdir=/var/lib/docker/overlay2/l/MLX:/var/lib/docker/overlay2/l/JCM,upperdir=/var/lib/docker/overlay2/2b9b/diff,workdir=/var/lib/docker/overlay2/2b9b/work\n"
	for in, want := range map[string]string{
		line: "/var/lib/docker/overlay2/2b9b/diff",
		"1 0 0:1 / /proc rw - proc proc rw\n" + line:                                   "/var/lib/docker/overlay2/2b9b/diff",
		"247 185 0:82 / / rw - overlay overlay rw,upperdir=/a\\040b/diff,workdir=/w\n": "/a b/diff",
		"247 185 0:82 / / rw - ext4 /dev/sda1 rw\n":                                    "",
		"247 185 0:82 / /mnt rw - overlay overlay rw,upperdir=/x/diff\n":               "",
		"247 185 0:82 / / rw - overlay overlay rw,upperdir=relative\n":                 "",
		"garbage\n - \n": "",
	} {
		if got := upperDir([]byte(in)); got != want {
			t.Errorf("upperDir(%q) = %q, want %q", in, got, want)
		}
	}
}

// Without a cgroup.procs in the usual places (a cgroup parent, or as in the
// test above), the scan finds them; with one, the scan is not needed.
func TestContainerProcsUsualCgroup(t *testing.T) {
	root := writeTree(t, map[string]string{
		"proc/self/mountinfo": "30 20 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
		"proc/900/stat":       stat("900", "docker-init", 5),
		"proc/901/stat":       stat("901", "sh", 9),
		"sys/fs/cgroup/docker/" + idA + "/cgroup.procs": "901\n900\n",
		// B's process has no cgroup file: only the usual place can find it.
		"proc/300/stat": stat("300", "sh", 3),
		"sys/fs/cgroup/system.slice/docker-" + idB + ".scope/cgroup.procs": "300\n",
	})
	got, err := Host{Root: root}.ContainerProcs([]string{idA, idB})
	if err != nil || got[idA].PID != 900 || got[idB].PID != 300 {
		t.Fatalf("%+v %v", got, err)
	}
	if os.Getuid() == 0 {
		// A directory that is not root's does not count.
		must := func(err error) {
			if err != nil {
				t.Fatal(err)
			}
		}
		must(os.Chown(filepath.Join(root, "sys/fs/cgroup/docker/"+idA), 1001, 1001))
		got, err = Host{Root: root}.ContainerProcs([]string{idA})
		if err != nil || len(got) != 0 {
			t.Errorf("a user's directory named docker/<id> counted: %+v %v", got, err)
		}
	}
}
