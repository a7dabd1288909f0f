// Command ledgerbench measures GPU claim+activate+release latency with N
// concurrent processes sharing one ledger, side by side with what labs use
// today: a flock'ed JSON state file (the lock their scripts take, minus the
// give-up). It prints p50, p99 and max of both, their ratios, and each
// one's throughput. Every cycle of every process is timed; the workers are
// killed, and the run fails, if a run takes longer than -timeout.
//
//	go run ./bench/ledgerbench -procs 16 -ops 200 -rounds 3
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mlc-lab/mlc/gpualloc"
)

func main() {
	procs := flag.Int("procs", 16, "concurrent processes")
	ops := flag.Int("ops", 200, "claim+activate+release cycles per process")
	gpus := flag.Int("gpus", 16, "fake GPUs")
	rounds := flag.Int("rounds", 1, "runs of each kind, interleaved")
	timeout := flag.Duration("timeout", 5*time.Minute, "give up on a run that takes longer")
	create := flag.Duration("create", 0, "pause between claim and activate, as a Docker create (not timed)")
	worker := flag.String("worker", "", "internal: run as a worker of this kind (ledger|flock)")
	dir := flag.String("dir", "", "internal: shared directory")
	flag.Parse()
	if *worker != "" {
		runWorker(*worker, *dir, *ops, *gpus, *create)
		return
	}
	fmt.Printf("claim+activate+release, %d processes x %d cycles, %d fake GPUs, exclusive, %v between claim and activate, %d CPUs\n",
		*procs, *ops, *gpus, *create, runtime.NumCPU())
	res := map[string][]time.Duration{}
	for r := 1; r <= *rounds; r++ {
		for _, kind := range []string{"ledger", "flock"} {
			ds, wall, err := run(kind, *procs, *ops, *gpus, *create, *timeout)
			if err != nil {
				fmt.Fprintf(os.Stderr, "ledgerbench: %s run %d: %v\n", kind, r, err)
				os.Exit(1)
			}
			res[kind] = append(res[kind], ds...)
			fmt.Printf("  run %d %-18s p50 %8.3f ms  p99 %8.3f ms  max %8.3f ms  %6.0f cycles/s\n", r, label(kind),
				ms(pct(ds, 50)), ms(pct(ds, 99)), ms(pct(ds, 100)), float64(len(ds))/wall.Seconds())
		}
	}
	fmt.Println("all runs:")
	for _, kind := range []string{"ledger", "flock"} {
		ds := res[kind]
		fmt.Printf("  %-24s p50 %8.3f ms  p99 %8.3f ms  max %8.3f ms  (%d samples)\n", label(kind), ms(pct(ds, 50)), ms(pct(ds, 99)), ms(pct(ds, 100)), len(ds))
	}
	var ratios []string
	for _, p := range []int{50, 99, 100} {
		name := "max"
		if p < 100 {
			name = fmt.Sprintf("p%d", p)
		}
		ratios = append(ratios, fmt.Sprintf("%s %.2f", name, float64(pct(res["ledger"], p))/float64(pct(res["flock"], p))))
	}
	fmt.Printf("  ratio ledger/flock: %s\n", strings.Join(ratios, ", "))
}

// run is one run of kind in a fresh directory: the cycle times of all
// workers and the run's wall time.
func run(kind string, procs, ops, gpus int, create, timeout time.Duration) ([]time.Duration, time.Duration, error) {
	tmp, err := os.MkdirTemp("", "ledgerbench-")
	if err != nil {
		return nil, 0, err
	}
	defer os.RemoveAll(tmp)
	if kind == "ledger" {
		// Create the ledger (schema) once, as the first mlc on a server would.
		l, err := gpualloc.Open(filepath.Join(tmp, "gpu.db"), gpualloc.Fake(gpus), gpualloc.Options{})
		if err != nil {
			return nil, 0, err
		}
		l.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	t0 := time.Now()
	ds, err := spawn(ctx, kind, tmp, procs, ops, gpus, create)
	return ds, time.Since(t0), err
}

func label(kind string) string {
	if kind == "ledger" {
		return "mlc SQLite ledger"
	}
	return "flock + JSON file"
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

// pct is the p-th percentile (nearest rank); 100 is the maximum.
func pct(d []time.Duration, p int) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := (len(s)*p + 99) / 100
	if i > 0 {
		i--
	}
	return s[i]
}

func spawn(ctx context.Context, kind, dir string, procs, ops, gpus int, create time.Duration) ([]time.Duration, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmds := make([]*exec.Cmd, procs)
	outs := make([]string, procs)
	for i := range cmds {
		f, err := os.CreateTemp(dir, "out-")
		if err != nil {
			return nil, err
		}
		defer f.Close()
		outs[i] = f.Name()
		cmds[i] = exec.CommandContext(ctx, self, "-worker", kind, "-dir", dir, "-ops", strconv.Itoa(ops), "-gpus", strconv.Itoa(gpus), "-create", create.String())
		cmds[i].Stdout, cmds[i].Stderr = f, os.Stderr
	}
	for i, c := range cmds {
		if err := c.Start(); err != nil {
			for _, c := range cmds[:i] {
				c.Process.Kill()
				c.Wait()
			}
			return nil, err
		}
	}
	var all []time.Duration
	var failed error
	for i, c := range cmds {
		if err := c.Wait(); err != nil && failed == nil {
			failed = fmt.Errorf("worker %d: %v", i, err)
			if ctx.Err() != nil {
				failed = fmt.Errorf("worker %d: not done within the timeout", i)
			}
		}
		if failed != nil {
			continue
		}
		var ds []time.Duration
		b, _ := os.ReadFile(outs[i])
		if err := json.Unmarshal(b, &ds); err != nil {
			return nil, fmt.Errorf("worker %d: %v", i, err)
		}
		if len(ds) != ops {
			return nil, fmt.Errorf("worker %d: %d cycles, want %d", i, len(ds), ops)
		}
		all = append(all, ds...)
	}
	return all, failed
}

// runWorker times ops cycles of claim, activate and release. With a create
// time, it pauses that long between claim and activate, as mlc create does
// while Docker creates the container; the pause is not part of the cycle's
// time.
func runWorker(kind, dir string, ops, gpus int, create time.Duration) {
	ctx := context.Background()
	var ds []time.Duration
	me := strconv.Itoa(os.Getpid())
	var claim, activate, release func(i int)
	switch kind {
	case "ledger":
		l, err := gpualloc.Open(filepath.Join(dir, "gpu.db"), gpualloc.Fake(gpus), gpualloc.Options{})
		if err != nil {
			panic(err)
		}
		defer l.Close()
		var id int64
		claim = func(i int) {
			c, err := l.Claim(ctx, gpualloc.Request{User: me, Name: "b", Container: me + "-" + strconv.Itoa(i), N: 1, Quota: 1})
			if err != nil {
				panic(err)
			}
			id = c.ID
		}
		activate = func(int) {
			if err := l.Activate(ctx, id, "id-"+me); err != nil {
				panic(err)
			}
		}
		release = func(int) {
			if err := l.Release(ctx, id, "bench"); err != nil {
				panic(err)
			}
		}
	case "flock":
		var gpu int
		claim = func(int) {
			withFlock(dir, func(state map[string]string) {
				for g := 0; g < gpus; g++ {
					if _, held := state[strconv.Itoa(g)]; !held {
						state[strconv.Itoa(g)], gpu = me, g
						return
					}
				}
				panic("no free GPU")
			})
		}
		activate = func(int) { withFlock(dir, func(state map[string]string) { state[strconv.Itoa(gpu)] = me + " active" }) }
		release = func(int) { withFlock(dir, func(state map[string]string) { delete(state, strconv.Itoa(gpu)) }) }
	default:
		panic("unknown worker kind " + kind)
	}
	for i := 0; i < ops; i++ {
		t0 := time.Now()
		claim(i)
		d := time.Since(t0)
		if create > 0 {
			time.Sleep(create)
		}
		t1 := time.Now()
		activate(i)
		release(i)
		ds = append(ds, d+time.Since(t1))
	}
	json.NewEncoder(os.Stdout).Encode(ds)
}

// withFlock is the lab scripts' way: lock, read the state file, change it,
// write it back (no fsync, like a script's echo > file; the ledger runs WAL
// with synchronous=NORMAL, also without an fsync per commit), unlock.
func withFlock(dir string, fn func(map[string]string)) {
	lock, err := os.OpenFile(filepath.Join(dir, "gpu.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		panic(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		panic(err)
	}
	path := filepath.Join(dir, "gpu.json")
	state := map[string]string{}
	if b, err := os.ReadFile(path); err == nil {
		json.Unmarshal(b, &state)
	}
	fn(state)
	b, _ := json.Marshal(state)
	tmp := path + ".tmp"
	f, _ := os.Create(tmp)
	f.Write(b)
	f.Close()
	os.Rename(tmp, path)
	syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
}
