package servers

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mlc-lab/mlc/config"
	"github.com/mlc-lab/mlc/containers"
	"github.com/mlc-lab/mlc/errs"
)

func TestQuoteRoundTripsThroughAShell(t *testing.T) {
	for _, s := range []string{"plain", "", "two words", "it's", `a"b`, "$(id)", "`id`", "x;y", "--flag=v", "tab\there", "new\nline", "*"} {
		out, err := exec.Command("sh", "-c", "printf %s "+Quote(s)).Output()
		if err != nil || string(out) != s {
			t.Errorf("Quote(%q) = %s: the shell gave %q (%v)", s, Quote(s), out, err)
		}
	}
}

func TestSSHArgs(t *testing.T) {
	r := &Runner{Self: "/usr/local/bin/mlc", ConnectTimeout: 3 * time.Second}
	got := r.SSHArgs(config.Server{Name: "b", SSH: "10.0.0.2", Port: 2222}, []string{"list", "--json", "it's"}, false)
	want := "-o BatchMode=yes -o StrictHostKeyChecking=yes -o ConnectTimeout=3 -o ServerAliveInterval=15 -o ServerAliveCountMax=3 -p 2222 -T -- 10.0.0.2 /usr/local/bin/mlc list --json 'it'\\''s'"
	if strings.Join(got, " ") != want {
		t.Fatalf("got  %s\nwant %s", strings.Join(got, " "), want)
	}
	got = r.SSHArgs(config.Server{Name: "b", SSH: "gpu2", MLC: "/opt/mlc/bin/mlc"}, []string{"open", "x"}, true)
	if !contains(got, "-t") || got[len(got)-1] != "/opt/mlc/bin/mlc open x" || contains(got, "-p") {
		t.Fatalf("tty, own path, no port: %q", got)
	}
	for _, a := range got {
		if strings.Contains(a, "StrictHostKeyChecking=no") || strings.Contains(a, "accept-new") {
			t.Fatal("host keys must be checked")
		}
	}
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func info(free, total, left int, load float64, cpus int, mem int64) *containers.ServerInfo {
	return &containers.ServerInfo{GPUsFree: free, GPUsTotal: total, QuotaLeft: left, Load1: load, CPUs: cpus, MemAvailable: mem}
}

func TestPick(t *testing.T) {
	res := []Result{
		{Server: "a", Info: info(0, 4, 2, 0.1, 8, 1)},   // no GPU free
		{Server: "b", Info: info(2, 4, 2, 4.0, 8, 1)},   // fits, load 0.5 per CPU
		{Server: "c", Info: info(4, 4, 2, 4.0, 32, 1)},  // fits, load 0.125 per CPU
		{Server: "d", Info: info(4, 4, 0, 0.0, 32, 1)},  // quota used up there
		{Server: "e", Error: "cannot reach e over ssh"}, // down
	}
	best, why, err := Pick(res, 1)
	if err != nil || best.Server != "c" || !strings.Contains(why, "4 of 4 GPUs free") || !strings.Contains(why, "lowest of 2") {
		t.Fatalf("gpus 1: %s %q %v", best.Server, why, err)
	}
	if best, _, err = Pick(res, 0); err != nil || best.Server != "d" {
		t.Fatalf("no GPUs: the least loaded of all that answered, got %s %v", best.Server, err)
	}
	_, _, err = Pick(res, 3)
	if !errs.Is(err, errs.Quota) || !strings.Contains(err.Error(), "a: 0 of 4 GPUs free") || !strings.Contains(err.Error(), "d: your GPU quota there has 0 left") ||
		!strings.Contains(err.Error(), "e: no answer") {
		t.Fatalf("nothing fits: %v", err)
	}
	// No GPUs free anywhere (no quota in the way): unavailable, as for a create here.
	if _, _, err := Pick([]Result{res[0], res[4]}, 1); !errs.Is(err, errs.Unavailable) {
		t.Fatalf("none free: %v", err)
	}
	// Equal load: the one with more free memory.
	best, _, _ = Pick([]Result{{Server: "x", Info: info(1, 1, 1, 1, 4, 10)}, {Server: "y", Info: info(1, 1, 1, 1, 4, 20)}}, 1)
	if best.Server != "y" {
		t.Fatalf("tie: %s", best.Server)
	}
}

// A survey answers for every server within its deadline: one that hangs is
// reported as not answering in time, the others as they answered.
func TestSurveyDeadline(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(dir, "ssh")
	// A fake ssh: the host decides what it does.
	script := `#!/bin/sh
for a; do host=$prev; prev=$a; done
case "$host" in
  good) echo '{"version":"v1","gpus_total":2,"gpus_free":1,"containers":[]}' ;;
  slow) exec sleep 30 ;;
  bad) echo "ssh: connect to host bad port 22: Connection refused" >&2; exit 255 ;;
  refuse) echo "mlc: the policy says no" >&2; exit 5 ;;
esac
`
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	r := &Runner{SSH: fake, Self: "/bin/false", Servers: []config.Server{{Name: "good", SSH: "good"}, {Name: "slow", SSH: "slow"},
		{Name: "bad", SSH: "bad"}, {Name: "refuse", SSH: "refuse"}}}
	start := time.Now()
	res := r.Survey(context.Background(), 2*time.Second)
	if el := time.Since(start); el > 15*time.Second {
		t.Fatalf("the survey waited %v for a hung server", el)
	}
	if res[0].Info == nil || res[0].Info.Version != "v1" || res[0].Info.GPUsFree != 1 {
		t.Fatalf("good: %+v", res[0])
	}
	if !errs.Is(res[1].Err(), errs.Unavailable) || !strings.Contains(res[1].Error, "slow did not answer in time") {
		t.Fatalf("slow: %+v", res[1])
	}
	if !errs.Is(res[2].Err(), errs.Unavailable) || res[2].Error != "cannot reach bad over ssh: connect to host bad port 22: Connection refused" {
		t.Fatalf("bad: %q", res[2].Error)
	}
	if !errs.Is(res[3].Err(), errs.Permission) || res[3].Error != "refuse: the policy says no" {
		t.Fatalf("refuse: %+v", res[3])
	}
}

func TestFind(t *testing.T) {
	r := &Runner{Servers: []config.Server{{Name: "a"}, {Name: "b"}}}
	if _, err := r.Find("c"); !errs.Is(err, errs.NotFound) || !strings.Contains(err.Error(), "servers: a, b") {
		t.Fatal(err)
	}
	if _, err := (&Runner{}).Find("c"); !strings.Contains(err.Error(), "no servers are listed") {
		t.Fatal(err)
	}
}
