// Command ledgerbench measures GPU claim+activate+release latency with N
// concurrent processes sharing one ledger, side by side with what labs use
// today: a flock'ed JSON state file (the lock their scripts take, minus the
// give-up). It prints p50 and p99 of both and their ratio.
//
//	go run ./bench/ledgerbench -procs 16 -ops 200
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
	"time"

	"github.com/mlc-lab/mlc/gpualloc"
)

func main() {
	procs := flag.Int("procs", 16, "concurrent processes")
	ops := flag.Int("ops", 200, "claim+activate+release cycles per process")
	gpus := flag.Int("gpus", 16, "fake GPUs")
	worker := flag.String("worker", "", "internal: run as a worker of this kind (ledger|flock)")
	dir := flag.String("dir", "", "internal: shared directory")
	flag.Parse()
	if *worker != "" {
		runWorker(*worker, *dir, *ops, *gpus)
		return
	}
	tmp, err := os.MkdirTemp("", "ledgerbench-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(tmp)
	// Create the ledger (schema) once, as the first mlc on a server would.
	l, err := gpualloc.Open(filepath.Join(tmp, "gpu.db"), gpualloc.Fake(*gpus), gpualloc.Options{})
	if err != nil {
		panic(err)
	}
	l.Close()
	fmt.Printf("claim+activate+release, %d processes x %d cycles, %d fake GPUs, exclusive\n", *procs, *ops, *gpus)
	res := map[string][]time.Duration{}
	for _, kind := range []string{"ledger", "flock"} {
		res[kind] = spawn(kind, tmp, *procs, *ops, *gpus)
		p50, p99 := pct(res[kind], 50), pct(res[kind], 99)
		fmt.Printf("  %-22s p50 %8.3f ms   p99 %8.3f ms   (%d samples)\n", label(kind), ms(p50), ms(p99), len(res[kind]))
	}
	fmt.Printf("  ratio ledger/flock: p50 %.2f, p99 %.2f\n",
		float64(pct(res["ledger"], 50))/float64(pct(res["flock"], 50)), float64(pct(res["ledger"], 99))/float64(pct(res["flock"], 99)))
}

func label(kind string) string {
	if kind == "ledger" {
		return "mlc SQLite ledger"
	}
	return "flock + JSON file"
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

func pct(d []time.Duration, p int) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := (len(s)*p + 99) / 100
	if i > 0 {
		i--
	}
	return s[i]
}

func spawn(kind, dir string, procs, ops, gpus int) []time.Duration {
	self, _ := os.Executable()
	cmds := make([]*exec.Cmd, procs)
	outs := make([]*os.File, procs)
	for i := range cmds {
		f, _ := os.CreateTemp(dir, "out-")
		outs[i] = f
		cmds[i] = exec.Command(self, "-worker", kind, "-dir", dir, "-ops", strconv.Itoa(ops), "-gpus", strconv.Itoa(gpus))
		cmds[i].Stdout, cmds[i].Stderr = f, os.Stderr
	}
	for _, c := range cmds {
		if err := c.Start(); err != nil {
			panic(err)
		}
	}
	var all []time.Duration
	for i, c := range cmds {
		if err := c.Wait(); err != nil {
			panic(fmt.Sprintf("worker %d: %v", i, err))
		}
		var ds []time.Duration
		b, _ := os.ReadFile(outs[i].Name())
		if err := json.Unmarshal(b, &ds); err != nil {
			panic(err)
		}
		all = append(all, ds...)
	}
	return all
}

func runWorker(kind, dir string, ops, gpus int) {
	ctx := context.Background()
	var ds []time.Duration
	me := strconv.Itoa(os.Getpid())
	switch kind {
	case "ledger":
		l, err := gpualloc.Open(filepath.Join(dir, "gpu.db"), gpualloc.Fake(gpus), gpualloc.Options{})
		if err != nil {
			panic(err)
		}
		defer l.Close()
		for i := 0; i < ops; i++ {
			t0 := time.Now()
			c, err := l.Claim(ctx, gpualloc.Request{User: me, Name: "b", Container: me + "-" + strconv.Itoa(i), N: 1, Quota: 1})
			if err != nil {
				panic(err)
			}
			if err := l.Activate(ctx, c.ID, "id-"+me); err != nil {
				panic(err)
			}
			if err := l.Release(ctx, c.ID, "bench"); err != nil {
				panic(err)
			}
			ds = append(ds, time.Since(t0))
		}
	case "flock":
		for i := 0; i < ops; i++ {
			t0 := time.Now()
			var gpu int
			withFlock(dir, func(state map[string]string) { // claim
				for g := 0; g < gpus; g++ {
					if _, held := state[strconv.Itoa(g)]; !held {
						state[strconv.Itoa(g)], gpu = me, g
						return
					}
				}
				panic("no free GPU")
			})
			withFlock(dir, func(state map[string]string) { state[strconv.Itoa(gpu)] = me + " active" })
			withFlock(dir, func(state map[string]string) { delete(state, strconv.Itoa(gpu)) })
			ds = append(ds, time.Since(t0))
		}
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
