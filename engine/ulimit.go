package engine

import (
	"bufio"
	"golang.org/x/sys/unix"
	"os"
	"strconv"
	"strings"
)

const capSysResource = 24

// Memlock is the memlock ulimit to give containers: unlimited (-1), as ML
// code that pins memory (NCCL, CUDA host allocations) needs, when this
// process may raise limits (CAP_SYS_RESOURCE, as root under sudo has);
// otherwise the host's hard limit, since the engine could not set more and
// the container would fail to start.
func Memlock() int64 {
	if hasCap(capSysResource) {
		return -1
	}
	var r unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &r); err != nil || r.Max == unix.RLIM_INFINITY {
		return -1
	}
	return int64(r.Max)
}

func hasCap(bit uint) bool {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "CapEff:"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && n&(1<<bit) != 0
		}
	}
	return false
}
