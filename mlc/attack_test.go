package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mlc-lab/mlc/internal/testenv"
)

// These tests attack the real binary through the real sudoers rule as a
// student with a real account would: races on paths, swaps after create,
// root in containers, parallel creates, interrupts, and reading what they
// cannot read.

// A student flips a link of hers between her own data directory, a
// directory inside her home and a root-only place while mlc resolves it:
// mlc mounts nothing but a directory no one but root can replace.
func TestAttackPathRace(t *testing.T) {
	r := newSecRig(t)
	home := "/home/mlct-alice"
	mine := r.dir + "/data/mlct-alice"
	const tries = 200
	// The flipper and the creates run at once, both as alice; each loop is bounded.
	flip := fmt.Sprintf(`i=0; while [ $i -lt 5000 ] && [ ! -e %[1]s/stop ]; do
		ln -sfn %[2]s %[1]s/d; rm -f %[1]s/d; mkdir %[1]s/d; rmdir %[1]s/d; ln -sfn /root %[1]s/d; rm -f %[1]s/d
		rm -rf %[1]s/workspaces; ln -s /etc %[1]s/workspaces; rm -f %[1]s/workspaces; mkdir -p %[1]s/workspaces; i=$((i+1)); done`, home, mine)
	flipper := exec.Command("su", "mlct-alice", "-s", "/bin/sh", "-c", flip)
	must(t, flipper.Start())
	defer func() {
		exec.Command("su", "mlct-alice", "-s", "/bin/sh", "-c", "touch "+home+"/stop").Run()
		flipper.Wait()
	}()
	loop := fmt.Sprintf(`for i in $(seq 1 %d); do sudo -n %s create race busybox -d %s/d --dry-run --json 2>/dev/null | tr -d '\n'; echo; done`, tries, r.bin, home)
	out, _, _ := r.as(t, "mlct-alice", loop)
	accepted := 0
	for _, line := range strings.Split(out, "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		var req struct {
			HostConfig struct {
				Mounts []struct{ Source, Target string }
			} `json:"host_config"`
		}
		if err := json.Unmarshal([]byte(line), &req); err != nil {
			t.Fatalf("dry run output %q: %v", line, err)
		}
		accepted++
		for _, m := range req.HostConfig.Mounts {
			if m.Target == "/data" && m.Source != mine {
				t.Fatalf("mlc planned %s at /data (the race won)", m.Source)
			}
		}
	}
	t.Logf("%d of %d dry runs accepted (through the link to her own data directory); the rest were refused", accepted, tries)
	// Real creates under the same race: the mounted source is her data directory or nothing, and it starts as such.
	for i := 0; i < 8; i++ {
		name := fmt.Sprintf("race%d", i)
		_, _, code := r.sudo(t, "mlct-alice", "create", name, "busybox", "-d", home+"/d")
		if code != 0 {
			continue
		}
		src := testenv.Docker(t, "inspect", "-f", `{{range .Mounts}}{{if eq .Destination "/data"}}{{.Source}} {{.RW}}{{end}}{{end}}`, "mlc-"+r.uids["mlct-alice"]+"-"+name)
		if src != mine+" false" {
			t.Fatalf("container %s mounts %q at /data", name, src)
		}
		r.sudo(t, "mlct-alice", "remove", name, "--yes", "--force")
	}
	// The workspace links were made as alice: nothing appeared in /etc.
	for i := 0; i < 8; i++ {
		if _, err := os.Lstat(fmt.Sprintf("/etc/race%d", i)); err == nil {
			t.Fatal("a workspace link was made in /etc")
		}
	}
}

// Nothing a student can replace is ever mounted: not a directory inside her
// home (she could swap it for a link to a place only root can traverse, like
// another user's 0700 home, and the engine would follow it as root at the
// next restart), not her workspace, not her data directory.
func TestAttackSwapAfterCreate(t *testing.T) {
	r := newSecRig(t)
	home := "/home/mlct-alice"
	mine := r.dir + "/data/mlct-alice"
	r.as(t, "mlct-alice", "mkdir -p "+home+"/ds && echo mine > "+mine+"/f")
	_, errOut, code := r.sudo(t, "mlct-alice", "create", "sw", "busybox", "-d", home+"/ds")
	if code != 5 || !strings.Contains(errOut, "not allowed") {
		t.Fatalf("a directory inside her home (replaceable by her): %d %q", code, errOut)
	}
	if _, errOut, code := r.sudo(t, "mlct-alice", "create", "sw", "busybox", "-d", mine); code != 0 {
		t.Fatalf("create with her data directory: %d %s", code, errOut)
	}
	ws := filepath.Join(r.dir, "ws", "mlct-alice", "sw")
	for _, try := range []string{"mv " + ws + " " + ws + ".x", "rmdir " + ws, "ln -s / " + ws + ".new && mv -T " + ws + ".new " + ws,
		"ln -s / " + filepath.Dir(ws) + "/evil", "mv " + mine + " " + mine + ".x", "ln -s /root " + mine + ".new && mv -T " + mine + ".new " + mine} {
		if _, _, code := r.as(t, "mlct-alice", try); code == 0 {
			t.Errorf("alice could %s", try)
		}
	}
	if fi, err := os.Lstat(ws); err != nil || !fi.IsDir() || fi.Sys().(*syscall.Stat_t).Uid != uint32(atoi(t, r.uids["mlct-alice"])) {
		t.Fatalf("workspace after the attempts: %v %v", fi, err)
	}
	// bob cannot even learn which workspace names alice has.
	if _, _, code := r.as(t, "mlct-bob", "ls "+filepath.Dir(ws)+" || stat "+ws); code == 0 {
		t.Errorf("bob can look into alice's workspaces")
	}
	if l, err := os.Readlink(home + "/workspaces/sw"); err != nil || l != ws {
		t.Errorf("home link: %q %v", l, err)
	}
	// A restart by the engine itself mounts the same directories again.
	dockerName := "mlc-" + r.uids["mlct-alice"] + "-sw"
	before := testenv.Docker(t, "inspect", "-f", "{{.RestartCount}}", dockerName)
	r.sudo(t, "mlct-alice", "open", "sw", "--", "kill", "-9", "-1")
	deadline := time.Now().Add(30 * time.Second)
	for {
		state := testenv.Docker(t, "inspect", "-f", "{{.RestartCount}} {{.State.Status}}", dockerName)
		if count, status, _ := strings.Cut(state, " "); count != before && status == "running" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the engine did not restart the container: %s (restarts before: %s)", state, before)
		}
		time.Sleep(100 * time.Millisecond)
	}
	out, errOut, _ := r.sudo(t, "mlct-alice", "open", "sw", "--", "sh", "-c", "cat /data/f; touch /data/x 2>/dev/null && echo WROTE; id -u")
	if strings.Fields(out)[0] != "mine" || strings.Contains(out, "WROTE") || !strings.HasSuffix(strings.TrimSpace(out), r.uids["mlct-alice"]) {
		t.Fatalf("after a restart: %q %q", out, errOut)
	}
	// Should the directory still change (only root can: here the test plays
	// an admin moving it), mlc refuses to start or open the container.
	r.sudo(t, "mlct-alice", "stop", "sw", "-t", "0")
	must(t, os.Rename(mine, mine+".old"))
	must(t, os.Mkdir(mine, 0o755))
	for _, c := range []struct {
		cmd  []string
		code int
	}{{[]string{"start", "sw"}, 11}, {[]string{"open", "sw", "--", "true"}, 125}} {
		_, errOut, code := r.sudo(t, "mlct-alice", c.cmd...)
		if code != c.code || !strings.Contains(errOut, "not the one it was created with") {
			t.Errorf("%v after the directory changed: %d %q, want exit %d", c.cmd, code, errOut, c.code)
		}
	}
	must(t, os.Remove(mine))
	must(t, os.Rename(mine+".old", mine))
	if _, errOut, code := r.sudo(t, "mlct-alice", "start", "sw"); code != 0 {
		t.Errorf("start with the directory back: %d %s", code, errOut)
	}
}

// Root in a container only where the engine remaps it; a non-root
// container's setuid files are the student's own.
func TestAttackRootAndSetuid(t *testing.T) {
	r := newSecRig(t)
	_, errOut, code := r.sudo(t, "mlct-alice", "create", "rt", "busybox", "--root")
	if code != 5 || !strings.Contains(errOut, "userns-remap") {
		t.Fatalf("--root on an engine without remapping: %d %q", code, errOut)
	}
	_, errOut, code = r.sudo(t, "mlct-admin", "limits", "check")
	if code != 0 || !strings.Contains(errOut, "warning: policies.allow_root is set, but this engine does not remap") {
		t.Errorf("limits check does not warn about allow_root: %d %q", code, errOut)
	}
	if _, errOut, code := r.sudo(t, "mlct-alice", "create", "su", "busybox"); code != 0 {
		t.Fatalf("create: %d %s", code, errOut)
	}
	r.sudo(t, "mlct-alice", "open", "su", "--", "sh", "-c", "cp /bin/busybox /workspace/sh && chmod 4755 /workspace/sh")
	fi, err := os.Stat(filepath.Join(r.dir, "ws", "mlct-alice", "su", "sh"))
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid == 0 || fmt.Sprint(st.Uid) != r.uids["mlct-alice"] {
		t.Fatalf("a setuid file made in the container belongs to uid %d", st.Uid)
	}
}

// 16 creates at once by one student: max_containers (3) holds.
func TestAttackParallelCreates(t *testing.T) {
	r := newSecRig(t)
	var wg sync.WaitGroup
	codes := make([]int, 16)
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, codes[i] = r.sudo(t, "mlct-alice", "create", fmt.Sprintf("par%d", i), "busybox", "--no-start")
		}()
	}
	wg.Wait()
	out, _, _ := r.sudo(t, "mlct-alice", "list", "-q")
	n := len(strings.Fields(out))
	ok := 0
	for _, c := range codes {
		if c == 0 {
			ok++
		} else if c != 7 {
			t.Errorf("a refused create exited %d, want 7 (quota)", c)
		}
	}
	if n != 3 || ok != 3 {
		t.Fatalf("16 parallel creates: %d succeeded, alice has %d containers; max_containers is 3 (exit codes %v)", ok, n, codes)
	}
}

// A create interrupted at each of its steps, by each signal a terminal or
// a dying sudo sends, leaves no container and no GPU claim.
func TestAttackInterruptedCreate(t *testing.T) {
	r := newSecRig(t)
	for _, point := range []string{"claimed", "created", "activated", "started"} {
		for _, how := range []string{"INT", "TERM", "HUP", "sudo-killed"} {
			name := strings.ToLower("int-" + point + "-" + how)
			var cmd *exec.Cmd
			if how == "sudo-killed" {
				cmd = exec.Command("sudo", "-n", "MLC_FAILPOINT_WAIT="+point, r.bin, "create", name, "busybox", "--gpus", "1")
			} else {
				cmd = exec.Command(r.bin, "create", name, "busybox", "--gpus", "1")
				cmd.Env = append(os.Environ(), "MLC_FAILPOINT_WAIT="+point)
			}
			stderr, err := cmd.StderrPipe()
			must(t, err)
			must(t, cmd.Start())
			reached := make(chan string, 1)
			go func() {
				sc := bufio.NewScanner(stderr)
				seen := ""
				for sc.Scan() {
					if strings.Contains(sc.Text(), "failpoint "+point) {
						reached <- ""
						io.Copy(io.Discard, stderr)
						return
					}
					seen += sc.Text() + "\n"
				}
				reached <- seen
			}()
			select {
			case seen := <-reached:
				if seen != "" {
					cmd.Wait()
					t.Fatalf("%s: ended before the failpoint: %s", name, seen)
				}
			case <-time.After(60 * time.Second):
				cmd.Process.Kill()
				t.Fatalf("%s: never reached the failpoint", name)
			}
			sig := map[string]syscall.Signal{"INT": syscall.SIGINT, "TERM": syscall.SIGTERM, "HUP": syscall.SIGHUP, "sudo-killed": syscall.SIGKILL}[how]
			must(t, cmd.Process.Signal(sig))
			err = cmd.Wait()
			if ee, ok := err.(*exec.ExitError); how != "sudo-killed" && (!ok || ee.ExitCode() != 130) {
				t.Errorf("%s: exit %v, want 130", name, err)
			}
			// mlc (sudo's child, when sudo was killed) finishes its undo; wait for the container to go.
			deadline := time.Now().Add(30 * time.Second)
			for testenv.Docker(t, "ps", "-aq", "--filter", "name=mlc-0-"+name) != "" {
				if time.Now().After(deadline) {
					t.Fatalf("%s: the interrupted create left its container", name)
				}
				time.Sleep(100 * time.Millisecond)
			}
			for {
				out, _, _ := runCmd(t, exec.Command(r.bin, "gpu", "status", "--json"))
				if !strings.Contains(out, name) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s: the interrupted create still holds a GPU:\n%s", name, out)
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
	}
}

// No error shows what the student could not read herself.
func TestAttackNoSecretsInErrors(t *testing.T) {
	r := newSecRig(t)
	secret := "s3cr3t-Hash-$6$abcdefghijklmnopqrstuvwxyz"
	must(t, os.MkdirAll("/root/mlct-private", 0o700))
	defer os.RemoveAll("/root/mlct-private")
	must(t, os.WriteFile("/root/mlct-private/p.yaml", []byte("admins:\n  - "+secret+"\n"), 0o600))
	must(t, os.WriteFile(r.dir+"/readable.yaml", []byte("admins:\n  - "+secret+"\n"), 0o644))
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"limits", "check", "/etc/shadow"}, 3, "/etc/shadow: permission denied"},
		{[]string{"limits", "check", "/root/mlct-private/p.yaml"}, 3, "permission denied"},
		{[]string{"limits", "check", "/dev/zero"}, 3, "/dev/zero: not a regular file"},
		{[]string{"limits", "check", r.dir + "/readable.yaml"}, 3, "is not a user name"},
		{[]string{"create", "x", "busybox", "-d", "/root/mlct-private"}, 5, "not allowed"},
		{[]string{"create", "x", "busybox", "-d", "/root/mlct-private/p.yaml"}, 5, "not allowed"},
		{[]string{"create", "x", "busybox", "-d", "/root/nothere"}, 5, "not allowed"},
	} {
		out, errOut, code := r.sudo(t, "mlct-alice", c.args...)
		all := out + errOut
		if code != c.code || !strings.Contains(all, c.want) {
			t.Errorf("%v: exit %d %q, want %d and %q", c.args, code, all, c.code, c.want)
		}
		if strings.Contains(all, "root:") || strings.Contains(all, "abcdefgh") || strings.Contains(all, "is a file") || strings.Contains(all, "really") {
			t.Errorf("%v shows too much: %q", c.args, all)
		}
	}
	// A refused path reads the same whether it exists or not.
	_, a, _ := r.sudo(t, "mlct-alice", "create", "x", "busybox", "-d", "/root/mlct-private")
	_, b, _ := r.sudo(t, "mlct-alice", "create", "x", "busybox", "-d", "/root/mlct-nothere")
	if strings.ReplaceAll(a, "mlct-private", "P") != strings.ReplaceAll(b, "mlct-nothere", "P") {
		t.Errorf("refusals differ: %q vs %q", a, b)
	}
}

// GPUs and GPU variables are mlc's; ports below the unprivileged start are not the student's.
func TestAttackGPUVarsAndPorts(t *testing.T) {
	r := newSecRig(t)
	for _, kv := range []string{"NVIDIA_VISIBLE_DEVICES=all", "NVIDIA_DRIVER_CAPABILITIES=all", "CUDA_VISIBLE_DEVICES=0"} {
		if _, errOut, code := r.sudo(t, "mlct-alice", "create", "g", "busybox", "-e", kv); code != 5 {
			t.Errorf("-e %s: %d %q", kv, code, errOut)
		}
	}
	if _, errOut, code := r.sudo(t, "mlct-alice", "create", "g", "busybox", "-p", "80:80"); code != 5 {
		t.Errorf("-p 80:80: %d %q", code, errOut)
	}
	if _, errOut, code := r.sudo(t, "mlct-alice", "create", "g", "busybox"); code != 0 {
		t.Fatalf("create: %d %s", code, errOut)
	}
	out, _, _ := r.sudo(t, "mlct-alice", "open", "g", "--", "env")
	if !strings.Contains(out, "NVIDIA_VISIBLE_DEVICES=void") {
		t.Errorf("a container without GPUs: %q", out)
	}
	// Her containers are on her own network, not the default bridge nor bob's.
	nets := testenv.Docker(t, "inspect", "-f", "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}", "mlc-"+r.uids["mlct-alice"]+"-g")
	if strings.TrimSpace(nets) != "mlc-"+r.uids["mlct-alice"] {
		t.Errorf("alice's container is on %q", nets)
	}
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	var n int
	if _, err := fmt.Sscan(s, &n); err != nil {
		t.Fatal(err)
	}
	return n
}
