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
	})
	h := Host{Root: root}
	got, err := h.ContainerProcs()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[idA].PID != 900 || got[idA].Start != 5 || got[idB].PID != 300 {
		t.Fatalf("ContainerProcs = %+v", got)
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
