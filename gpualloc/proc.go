package gpualloc

import (
	"os"
	"strconv"
	"strings"
)

// proc identifies a process across pid reuse: its pid and start time.
type proc struct {
	pid   int
	start int64
}

func selfProc() proc { return proc{pid: os.Getpid(), start: procStart(os.Getpid())} }

// procStart is the process's start time in clock ticks since boot, 0 when
// there is no such process.
func procStart(pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// The command name (field 2) may contain spaces; fields after ")" are plain.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return 0
	}
	n, _ := strconv.ParseInt(f[19], 10, 64) // field 22: starttime
	return n
}

// alive is whether the process that made a claim still runs.
func alive(pid int, start int64) bool {
	return pid > 0 && procStart(pid) == start && start != 0
}
