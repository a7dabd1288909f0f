package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mlc-lab/mlc/internal/testenv"
	"github.com/mlc-lab/mlc/servers"
)

// serversPolicy is both servers' policy: this one (HERE, found by host
// name), hostb (the rig's second server: its own engine, ledger and sshd)
// and hostc, an address where nothing answers. hostb's copy differs in its
// state, workspaces and GPUs (4 fake ones, here 1), and in TARGETONLY.
const serversPolicy = `state_dir: %[1]s/SIDE/state
audit_log: %[1]s/SIDE/audit.jsonl
admins: [mlct-admin]
defaults:
  cpus: 1
  memory: 256m
  shm_size: 16m
  max_containers: 4
  gpus: 2
user_overrides:
  mlct-bob:
    may_copy: false
    reason: test
TARGETONLY
policies:
  workspace_root: %[1]s/SIDE/ws
  mount_roots: [%[1]s/data]
gpu:
  fake_count: GPUS
  runtime: env
images:
  bb:
    image: mlc/busybox:latest
    framework: busybox
    version: "1.35"
servers:
  - name: HERE
    ssh: 10.231.0.1
  - name: hostb
    ssh: 10.231.0.2
  - name: hostc
    ssh: 10.231.0.3
`

type serversRig struct {
	*secRig
	hb   *testenv.HostB
	here string
}

func newServersRig(t *testing.T) *serversRig {
	t.Helper()
	hb := testenv.SecondServer(t)
	here, err := os.Hostname()
	must(t, err)
	here, _, _ = strings.Cut(here, ".")
	pol := strings.NewReplacer("HERE", here, "SIDE", "a", "GPUS", "1", "TARGETONLY", "").Replace(serversPolicy)
	r := newSecRigPolicy(t, pol)
	for _, side := range []string{"a", "b"} {
		must(t, os.Mkdir(filepath.Join(r.dir, side), 0o755)) // workspaces' parents: traversable
	}
	polB := strings.NewReplacer("HERE", here, "SIDE", "b", "GPUS", "4",
		"TARGETONLY", "  mlct-doc:\n    may_copy: false\n    reason: not here").Replace(serversPolicy)
	must(t, os.WriteFile(filepath.Join(r.dir, "policy-b.yaml"), []byte(fmt.Sprintf(polB, r.dir)), 0o644))
	hb.Bind(t, filepath.Join(r.dir, "policy-b.yaml"), filepath.Join(r.dir, "policy.yaml"))
	for _, u := range []string{"mlct-alice", "mlct-bob", "mlct-doc"} {
		hb.SSHUser(t, u)
	}
	t.Cleanup(func() {
		for _, u := range strings.Fields(secUsers) {
			ids := hb.Command(context.Background(), "docker", "ps", "-aq", "--filter", "label=mlc.user="+u)
			if out, err := ids.Output(); err == nil && len(strings.TrimSpace(string(out))) > 0 {
				hb.Command(context.Background(), append([]string{"docker", "rm", "-f"}, strings.Fields(string(out))...)...).Run()
			}
			hb.Command(context.Background(), "docker", "network", "rm", "mlc-"+r.uids[u]).Run()
		}
	})
	return &serversRig{secRig: r, hb: hb, here: here}
}

// user runs mlc as a student types it: no sudo.
func (r *serversRig) user(t *testing.T, who string, args ...string) (string, string, int) {
	t.Helper()
	return r.as(t, who, r.bin+" "+shellQuote(args))
}

func (r *serversRig) ok(t *testing.T, who string, args ...string) string {
	t.Helper()
	out, errOut, code := r.user(t, who, args...)
	if code != 0 {
		t.Fatalf("%s: mlc %s: exit %d\n%s%s", who, strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// onB is what hostb's engine says of alice's container name ("" when none).
func (r *serversRig) onB(t *testing.T, who, name, format string) string {
	t.Helper()
	out, _ := r.hb.Command(context.Background(), "docker", "ps", "-a", "--filter", "name=^/mlc-"+r.uids[who]+"-"+name+"$", "--format", format).Output()
	return strings.TrimSpace(string(out))
}

func TestServersSurveyCreateAndVerbs(t *testing.T) {
	r := newServersRig(t)

	// mlc servers: every server at once; hostc does not answer and says why.
	out, errOut, code := r.user(t, "mlct-alice", "servers", "--json")
	if code != 13 {
		t.Fatalf("servers: exit %d, want 13 (one did not answer)\n%s%s", code, out, errOut)
	}
	var res []servers.Result
	must(t, json.Unmarshal([]byte(out), &res))
	if len(res) != 3 || !res[0].Here || res[0].Info == nil || res[0].Info.GPUsTotal != 1 ||
		res[1].Info == nil || res[1].Info.GPUsTotal != 4 || res[1].Info.QuotaLeft != 2 || res[1].Info.User != "mlct-alice" ||
		res[2].Info != nil || !strings.Contains(res[2].Error, "cannot reach hostc over ssh") {
		t.Fatalf("servers --json: %s", out)
	}
	out, errOut, _ = r.user(t, "mlct-alice", "servers")
	if !strings.Contains(out, r.here+" (here)") || !regexpMatch(out, `hostb\s+4/4\s+2 of 2`) || !regexpMatch(out, `hostc\s+-.*no answer`) ||
		!strings.Contains(errOut, "mlc: 1 of 3 servers did not answer") {
		t.Fatalf("servers table:\n%s%s", out, errOut)
	}
	// Through sudo it would be root's ssh keys: refused.
	if _, errOut, code := r.sudo(t, "mlct-alice", "servers"); code != 2 || !strings.Contains(errOut, "run this without sudo") {
		t.Fatalf("servers through sudo: %d %s", code, errOut)
	}

	// create --server any: only hostb has two GPUs free; it says so.
	_, errOut, code = r.user(t, "mlct-alice", "create", "anyc", "busybox", "--gpus", "2", "--server", "any")
	if code != 0 || !strings.Contains(errOut, "creating on hostb: 4 of 4 GPUs free, your quota there has 2 left") {
		t.Fatalf("create --server any: %d %s", code, errOut)
	}
	if r.onB(t, "mlct-alice", "anyc", "{{.State}}") != "running" {
		t.Fatal("anyc is not running on hostb")
	}
	if testenv.Docker(t, "ps", "-aq", "--filter", "name=mlc-"+r.uids["mlct-alice"]+"-anyc") != "" {
		t.Fatal("anyc was made here too")
	}
	// The target's ledger and quota: alice holds 2 of her 2 there.
	_, errOut, code = r.user(t, "mlct-alice", "--server", "hostb", "create", "more", "busybox", "--gpus", "1")
	if code != 7 || !strings.Contains(errOut, "gpus limit") {
		t.Fatalf("over quota on hostb: %d %s", code, errOut)
	}
	if r.onB(t, "mlct-alice", "more", "{{.State}}") != "" {
		t.Fatal("a refused create left a container on hostb")
	}

	// Every verb with --server, before or after the command.
	out = r.ok(t, "mlct-alice", "list", "--json", "--server", "hostb")
	if !strings.Contains(out, `"name": "anyc"`) {
		t.Fatalf("list on hostb: %s", out)
	}
	r.ok(t, "mlct-alice", "--server", "hostb", "stop", "anyc", "-t", "1")
	if st := r.onB(t, "mlct-alice", "anyc", "{{.State}}"); st != "exited" {
		t.Fatalf("after stop: %s", st)
	}
	r.ok(t, "mlct-alice", "start", "anyc", "--server", "hostb")
	out = r.ok(t, "mlct-alice", "--server", "hostb", "open", "anyc", "--", "sh", "-c", "echo $NVIDIA_VISIBLE_DEVICES; echo \"it's\"")
	if !strings.Contains(out, "GPU-") || !strings.Contains(out, "it's") {
		t.Fatalf("open on hostb: %q", out)
	}
	r.ok(t, "mlct-alice", "--server", "hostb", "logs", "anyc")
	r.ok(t, "mlct-alice", "--server", "hostb", "stats", "anyc", "--json", "--no-disk")
	r.ok(t, "mlct-alice", "--server", "hostb", "kill", "anyc")
	out, errOut, code = r.user(t, "mlct-alice", "list", "--servers")
	if code != 13 || !regexpMatch(out, `hostb\s+anyc\s+bb\s+Exited`) || !strings.Contains(errOut, "cannot reach hostc") {
		t.Fatalf("list --servers: exit %d\n%s%s", code, out, errOut)
	}
	r.ok(t, "mlct-alice", "--server", "hostb", "remove", "anyc")
	if r.onB(t, "mlct-alice", "anyc", "{{.State}}") != "" {
		t.Fatal("anyc is still on hostb")
	}
	// A name that is no server, and --server on this server runs here.
	if _, errOut, code := r.user(t, "mlct-alice", "--server", "nope", "list"); code != 4 || !strings.Contains(errOut, `no server "nope" in the policy (servers: `+r.here+`, hostb, hostc)`) {
		t.Fatalf("unknown server: %d %s", code, errOut)
	}
	r.ok(t, "mlct-alice", "--server", r.here, "list")
	// Through a link (mlc-list), the command is not given twice.
	if out, errOut, code := r.as(t, "mlct-alice", r.dir+"/mlc-list --json --server "+r.here); code != 0 || strings.TrimSpace(out) != "[]" {
		t.Fatalf("mlc-list --server here: %d %q %s", code, out, errOut)
	}
	if _, errOut, code := r.user(t, "mlct-alice", "--server", "hostc", "list"); code != 10 || !strings.Contains(errOut, "cannot reach hostc over ssh") {
		t.Fatalf("a server down: %d %s", code, errOut)
	}
	if _, errOut, code := r.user(t, "mlct-alice", "--server", "any", "list"); code != 2 || !strings.Contains(errOut, "--server any is for create only") {
		t.Fatalf("any for list: %d %s", code, errOut)
	}
}

// userCmd is mlc run as who (their uid, gid and groups, their HOME), in a
// process group of its own, with env ("K=V" or "") added.
func (r *serversRig) userCmd(t *testing.T, who, env string, args ...string) *exec.Cmd {
	t.Helper()
	u, err := user.Lookup(who)
	must(t, err)
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	ids, err := u.GroupIds()
	must(t, err)
	var groups []uint32
	for _, g := range ids {
		n, _ := strconv.Atoi(g)
		groups = append(groups, uint32(n))
	}
	cmd := exec.Command(r.bin, args...)
	cmd.Dir = "/tmp"
	cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + u.HomeDir, "USER=" + who, "LOGNAME=" + who}
	if env != "" {
		cmd.Env = append(cmd.Env, env)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true,
		Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: groups}}
	return cmd
}

func regexpMatch(s, re string) bool {
	return regexp.MustCompile(re).MatchString(s)
}

// Copy refused by the source's policy (bob) and by the target's (doc).
func TestCopyMayCopy(t *testing.T) {
	r := newServersRig(t)
	r.ok(t, "mlct-bob", "create", "c", "busybox")
	_, errOut, code := r.user(t, "mlct-bob", "copy", "c", "--to", "hostb")
	if code != 5 || !strings.Contains(errOut, "does not let mlct-bob copy containers (may_copy: false, override (test))") {
		t.Fatalf("bob: %d %s", code, errOut)
	}
	r.ok(t, "mlct-doc", "create", "c", "busybox")
	_, errOut, code = r.user(t, "mlct-doc", "copy", "c", "--to", "hostb")
	if code != 5 || !strings.Contains(errOut, "hostb: the policy of this server does not let mlct-doc copy containers (may_copy: false, override (not here))") {
		t.Fatalf("doc: %d %s", code, errOut)
	}
	for _, u := range []string{"mlct-bob", "mlct-doc"} {
		if r.onB(t, u, "c", "{{.State}}") != "" {
			t.Fatalf("%s: a refused copy left a container on hostb", u)
		}
	}
	if _, errOut, code := r.user(t, "mlct-doc", "copy", "c", "--to", r.here); code != 2 || !strings.Contains(errOut, "is this server") {
		t.Fatalf("copy here: %d %s", code, errOut)
	}
}

// A container with about 1 GB of changes (files added, changed, deleted, a
// directory replaced) arrives identical and starts, with its settings, its
// workspace and its port; --move removes the source only after.
func TestCopyOneGigabyte(t *testing.T) {
	r := newServersRig(t)
	r.ok(t, "mlct-alice", "create", "big", "busybox", "-p", "18481:80", "-e", "FOO=bar baz")
	name := "mlc-" + r.uids["mlct-alice"] + "-big"
	// The user's own changes, and (as an admin could, in a root container)
	// changes to the image's files.
	r.ok(t, "mlct-alice", "open", "big", "--", "sh", "-c",
		"mkdir -p /tmp/d && dd if=/dev/urandom of=/tmp/d/large bs=1M count=900 2>/dev/null && "+
			"for i in $(seq 1 200); do dd if=/dev/urandom of=/tmp/d/s$i bs=1k count=512 2>/dev/null; done && echo ws > /workspace/note")
	testenv.Docker(t, "exec", "-u", "0", name, "sh", "-c", "echo changed >> /etc/passwd && rm /bin/vi && rm -rf /usr && mkdir /usr && echo new > /usr/only")
	sums := "md5sum /tmp/d/* /etc/passwd /usr/only | sort"
	want := r.ok(t, "mlct-alice", "open", "big", "--", "sh", "-c", sums)
	start := time.Now()
	out, errOut, code := r.user(t, "mlct-alice", "copy", "big", "--to", "hostb", "--json")
	if code != 0 {
		t.Fatalf("copy: exit %d\n%s%s", code, out, errOut)
	}
	t.Logf("copied about 1 GB in %v:\n%s%s", time.Since(start).Round(time.Millisecond), out, errOut)
	var res servers.CopyResult
	must(t, json.Unmarshal([]byte(out), &res))
	if res.Bytes < 1000<<20 || res.Bytes > 1100<<20 || !res.Synced || res.Moved || res.Server != "hostb" {
		t.Fatalf("result %+v", res)
	}
	if !strings.Contains(errOut, "pausing big") || !strings.Contains(errOut, "copying big to hostb:") {
		t.Fatalf("no progress shown: %s", errOut)
	}
	if st := r.onB(t, "mlct-alice", "big", "{{.State}} {{.Ports}}"); st != "running 127.0.0.1:18481->80/tcp" {
		t.Fatalf("on hostb: %q", st)
	}
	got := r.ok(t, "mlct-alice", "--server", "hostb", "open", "big", "--", "sh", "-c",
		sums+"; ls /bin/vi 2>&1; ls /usr; cat /workspace/note; echo \"$FOO\"; id -u")
	for _, w := range []string{want, "No such file or directory", "only\nws\nbar baz\n" + r.uids["mlct-alice"]} {
		if !strings.Contains(got, w) {
			t.Fatalf("the copy differs: lacks %q\n%s", w, got)
		}
	}
	// The source is as it was: running, no longer paused.
	if st := testenv.Docker(t, "inspect", "-f", "{{.State.Status}}", name); st != "running" {
		t.Fatalf("source: %s", st)
	}

	// --move: a second copy under another name; the source goes only after it started.
	_, errOut, code = r.user(t, "mlct-alice", "copy", "big", "--to", "hostb", "--as", "big2", "-w", "big2", "--move")
	if code != 0 || r.onB(t, "mlct-alice", "big2", "{{.State}}") != "running" {
		t.Fatalf("move: %d %s", code, errOut)
	}
	if testenv.Docker(t, "ps", "-aq", "--filter", "name=^/"+name+"$") != "" {
		t.Fatal("--move left the source")
	}
	// The copy is an ordinary container of the catalogue image there: no image was made for it.
	if img := r.onB(t, "mlct-alice", "big2", "{{.Image}}"); img != "mlc/busybox:latest" {
		t.Fatalf("the copy runs %s", img)
	}
}

// Interrupting a copy at any point leaves the source as it was and nothing
// on the target: no container, no image, no GPU claim, no workspace.
func TestCopyInterrupted(t *testing.T) {
	r := newServersRig(t)
	r.ok(t, "mlct-alice", "create", "intr", "busybox", "--gpus", "1")
	r.ok(t, "mlct-alice", "open", "intr", "--", "sh", "-c",
		"dd if=/dev/urandom of=/tmp/x bs=1M count=300 2>/dev/null; dd if=/dev/urandom of=/workspace/w bs=1M count=200 2>/dev/null")
	name := "mlc-" + r.uids["mlct-alice"] + "-intr"
	imagesB := r.hb.Exec(t, "sh", "-c", "docker images -aq | sort")
	imagesA := testenv.Docker(t, "images", "-aq")
	for _, point := range []string{"copy-preflighted", "sending", "copy-created", "copy-synced"} {
		env := "MLC_FAILPOINT_WAIT=" + point
		trigger := "failpoint " + point
		if point == "sending" {
			env, trigger = "", "sending intr"
		}
		if point == "copy-preflighted" {
			// The copy's pause must end with it, however it ends.
			defer func() {
				if st := testenv.Docker(t, "inspect", "-f", "{{.State.Status}}", name); st != "running" {
					t.Errorf("the source is %s after the interrupts", st)
				}
			}()
		}
		// mlc itself as alice (not through su, which would take the
		// Ctrl-C itself): in a process group of its own, like a shell job.
		cmd := r.userCmd(t, "mlct-alice", env, "copy", "intr", "--to", "hostb")
		stderr, err := cmd.StderrPipe()
		must(t, err)
		must(t, cmd.Start())
		reached := make(chan string, 1)
		go func() {
			sc := bufio.NewScanner(stderr)
			seen := ""
			for sc.Scan() {
				seen += sc.Text() + "\n"
				if strings.Contains(sc.Text(), trigger) {
					reached <- ""
					for sc.Scan() {
					}
					return
				}
			}
			reached <- seen
		}()
		select {
		case seen := <-reached:
			if seen != "" {
				cmd.Wait()
				t.Fatalf("%s: the copy ended before it: %s", point, seen)
			}
		case <-time.After(120 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			t.Fatalf("%s: never reached", point)
		}
		if point == "sending" {
			time.Sleep(300 * time.Millisecond) // mid-stream
		}
		must(t, syscall.Kill(-cmd.Process.Pid, syscall.SIGINT))
		err = cmd.Wait()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 130 {
			t.Errorf("%s: exit %v, want 130", point, err)
		}
		deadline := time.Now().Add(60 * time.Second)
		for {
			left := []string{}
			if st := r.onB(t, "mlct-alice", "intr", "{{.State}}"); st != "" {
				left = append(left, "the container ("+st+")")
			}
			if got := r.hb.Exec(t, "sh", "-c", "docker images -aq | sort"); got != imagesB {
				left = append(left, "an image")
			}
			if _, err := os.Stat(filepath.Join(r.dir, "b/ws/mlct-alice/intr")); err == nil {
				left = append(left, "the workspace")
			}
			out, _, _ := r.user(t, "mlct-alice", "--server", "hostb", "gpu", "status", "--json")
			if strings.Contains(out, `"intr"`) {
				left = append(left, "a GPU claim")
			}
			if got := testenv.Docker(t, "images", "-aq"); got != imagesA {
				left = append(left, "the commit's image here")
			}
			if len(left) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: the interrupted copy left %s", point, strings.Join(left, ", "))
			}
			time.Sleep(200 * time.Millisecond)
		}
		if st := testenv.Docker(t, "inspect", "-f", "{{.State.Status}}", name); st != "running" {
			t.Fatalf("%s: the source is %s", point, st)
		}
	}
}

// A student who sends copy-receive a stream of her own making (her ssh, her
// bytes) gets nothing root's: a file the stream says is root's and setuid,
// named under /workspace, stays in her container's own layer (never the
// workspace on the host), hers and not setuid; a link out of the container
// followed by a file below it fails the copy and leaves nothing; an endless
// settings line is refused.
func TestCopyReceiveHostileStream(t *testing.T) {
	r := newServersRig(t)
	body := []byte("#!/bin/sh\nid\n")
	stream := func(name string, entries func(tw *tar.Writer) (int, int)) []byte {
		var wire bytes.Buffer
		wire.WriteString(`{"name":"x","image":"bb","cpus":1,"gpus":0,"workspace":"` + name + `","changes_bytes":0}` + "\n")
		// The wire format by hand: the entries, then the trailer that counts them.
		tw := tar.NewWriter(&wire)
		n, b := entries(tw)
		end := fmt.Sprintf(`{"entries":%d,"bytes":%d}`, n, b)
		must(t, tw.WriteHeader(&tar.Header{Name: "mlc-copy-end", Typeflag: tar.TypeReg, Mode: 0o600, Size: int64(len(end)),
			PAXRecords: map[string]string{"MLC.copy.end": "1"}, Format: tar.FormatPAX}))
		tw.Write([]byte(end))
		must(t, tw.Close())
		wire.WriteString("start\n")
		return wire.Bytes()
	}
	receive := func(name string, in []byte) (string, error) {
		cmd := r.userCmd(t, "mlct-alice", "", "--server", "hostb", "copy-receive", "--as", name)
		cmd.Stdin = bytes.NewReader(in)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := receive("evil", stream("evil", func(tw *tar.Writer) (int, int) {
		must(t, tw.WriteHeader(&tar.Header{Name: "workspace/rootsh", Typeflag: tar.TypeReg, Mode: 0o4755, Size: int64(len(body))}))
		tw.Write(body)
		must(t, tw.WriteHeader(&tar.Header{Name: "opt/sgid", Typeflag: tar.TypeReg, Mode: 0o2755, Gid: 42, Size: int64(len(body))}))
		tw.Write(body)
		return 2, 2 * len(body)
	}))
	if err != nil || !strings.Contains(out, `"event":"started"`) {
		t.Fatalf("copy-receive: %v\n%s", err, out)
	}
	if _, err := os.Lstat(filepath.Join(r.dir, "b/ws/mlct-alice/evil/rootsh")); err == nil {
		t.Fatal("the stream wrote into the workspace on the host")
	}
	upper := r.hb.Docker(t, "inspect", "-f", "{{.GraphDriver.Data.UpperDir}}", "mlc-"+r.uids["mlct-alice"]+"-evil")
	for _, f := range []string{"workspace/rootsh", "opt/sgid"} {
		fi, err := os.Lstat(filepath.Join(upper, f))
		must(t, err)
		st := fi.Sys().(*syscall.Stat_t)
		if strconv.Itoa(int(st.Uid)) != r.uids["mlct-alice"] || fi.Mode()&(os.ModeSetuid|os.ModeSetgid) != 0 {
			t.Fatalf("%s on hostb: uid %d, mode %v", f, st.Uid, fi.Mode())
		}
	}
	out, err = receive("evil2", stream("evil2", func(tw *tar.Writer) (int, int) {
		must(t, tw.WriteHeader(&tar.Header{Name: "tmp/l", Typeflag: tar.TypeSymlink, Linkname: "/workspace", Mode: 0o777}))
		must(t, tw.WriteHeader(&tar.Header{Name: "tmp/l/via", Typeflag: tar.TypeReg, Mode: 0o4755, Size: int64(len(body))}))
		tw.Write(body)
		return 2, len(body)
	}))
	if err == nil || !strings.Contains(out, "path escapes") || r.onB(t, "mlct-alice", "evil2", "{{.State}}") != "" {
		t.Fatalf("a file through a link out of the container: %v\n%s", err, out)
	}
	// While the copy writes into the container, nothing starts it.
	half := r.userCmd(t, "mlct-alice", "", "--server", "hostb", "copy-receive", "--as", "slow")
	in, err := half.StdinPipe()
	must(t, err)
	must(t, half.Start())
	fmt.Fprintln(in, `{"name":"x","image":"bb","cpus":1,"gpus":0,"workspace":"slow","changes_bytes":0}`)
	tw := tar.NewWriter(in)
	must(t, tw.WriteHeader(&tar.Header{Name: "a", Typeflag: tar.TypeReg, Mode: 0o644, Size: 1 << 20}))
	tw.Write(make([]byte, 4096)) // and no more for now
	deadline := time.Now().Add(60 * time.Second)
	for r.onB(t, "mlct-alice", "slow", "{{.State}}") != "created" {
		if time.Now().After(deadline) {
			t.Fatal("the copy never created its container")
		}
		time.Sleep(100 * time.Millisecond)
	}
	_, errOut, code := r.user(t, "mlct-alice", "--server", "hostb", "start", "slow")
	if code != 6 || !strings.Contains(errOut, "still being written by mlc copy") {
		t.Fatalf("start during the copy: %d %s", code, errOut)
	}
	in.Close()
	half.Wait()
	for r.onB(t, "mlct-alice", "slow", "{{.State}}") != "" {
		if time.Now().After(deadline) {
			t.Fatal("the cut copy left its container")
		}
		time.Sleep(100 * time.Millisecond)
	}
	// A settings line with no end is refused, not read into memory.
	cmd := r.userCmd(t, "mlct-alice", "", "--server", "hostb", "copy-receive", "--as", "big")
	cmd.Stdin = io.LimitReader(zeros{}, 4<<20)
	o, _ := cmd.CombinedOutput()
	if !strings.Contains(string(o), "over 1 MiB") {
		t.Fatalf("an endless settings line: %s", o)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'a'
	}
	return len(p), nil
}
