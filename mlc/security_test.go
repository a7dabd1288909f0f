package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mlc-lab/mlc/internal/testenv"
)

// secRig is a real install: a binary whose system policy is a test file,
// real Linux users, and a real sudoers rule for them.
type secRig struct {
	dir, bin string
	uids     map[string]string
}

const secUsers = "mlct-alice mlct-bob mlct-admin mlct-doc"

// secPolicy is the rig's system policy; %[1]s is the rig's directory.
const secPolicy = `state_dir: %[1]s/state
audit_log: %[1]s/audit.jsonl
admins: [mlct-admin]
defaults:
  cpus: 1
  memory: 128m
  shm_size: 16m
  max_containers: 3
  gpus: 1
policies:
  allow_root: true
  workspace_root: %[1]s/ws
  mount_roots: [%[1]s/data]
gpu:
  fake_count: 4
  runtime: env
images:
  bb:
    image: mlc/busybox:latest
    framework: busybox
    version: "1.35"
`

func newSecRig(t *testing.T) *secRig {
	t.Helper()
	return newSecRigPolicy(t, secPolicy)
}

// newSecRigPolicy is newSecRig with another policy template.
func newSecRigPolicy(t *testing.T, policyTmpl string) *secRig {
	t.Helper()
	testenv.Engine(t)
	for _, tool := range []string{"sudo", "su", "useradd", "visudo"} {
		if _, err := exec.LookPath(tool); err != nil || os.Getuid() != 0 {
			if testenv.Required() {
				t.Fatalf("security tests need root and %s (CI installs sudo): %v", tool, err)
			}
			t.Skipf("needs root and %s", tool)
		}
	}
	dir, err := os.MkdirTemp("", "mlc-sec-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	r := &secRig{dir: dir, bin: filepath.Join(dir, "mlc"), uids: map[string]string{}}
	policy := fmt.Sprintf(policyTmpl, dir)
	must(t, os.WriteFile(filepath.Join(dir, "policy.yaml"), []byte(policy), 0o644))
	must(t, os.MkdirAll(filepath.Join(dir, "data"), 0o755))
	must(t, os.WriteFile(filepath.Join(dir, "evil.yaml"), []byte("defaults:\n  cpus: 64\n"), 0o644))
	build := exec.Command("go", "build", "-o", r.bin, "-ldflags",
		"-X github.com/mlc-lab/mlc/config.SystemPath="+filepath.Join(dir, "policy.yaml")+" -extldflags=-Wl,-z,lazy", ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	must(t, os.Symlink("mlc", filepath.Join(dir, "mlc-list")))

	sh(t, "sh", "-c", "getent group mlct-users >/dev/null || groupadd mlct-users")
	sh(t, "sh", "-c", "id mlct-outsider >/dev/null 2>&1 || useradd -m -s /bin/sh mlct-outsider")
	for _, u := range strings.Fields(secUsers) {
		sh(t, "sh", "-c", fmt.Sprintf("id %[1]s >/dev/null 2>&1 || useradd -m -s /bin/sh -G mlct-users %[1]s", u))
		uu, err := user.Lookup(u)
		must(t, err)
		r.uids[u] = uu.Uid
		// Each user's own data directory, as a lab makes them: root's /data, the user's /data/USER.
		must(t, os.MkdirAll(filepath.Join(dir, "data", u), 0o755))
		sh(t, "chown", u, filepath.Join(dir, "data", u))
	}
	sudoers := "/etc/sudoers.d/mlc-test"
	rule := fmt.Sprintf("%%mlct-users ALL=(root) NOPASSWD: %s, %s\n", r.bin, filepath.Join(dir, "mlc-list"))
	must(t, os.WriteFile(sudoers, []byte(rule), 0o440))
	sh(t, "visudo", "-cf", sudoers)
	t.Cleanup(func() {
		exec.Command("sh", "-c", `docker rm -f $(docker ps -aq --filter label=mlc.managed=true --filter label=mlc.user=mlct-alice --filter label=mlc.user=mlct-bob) 2>/dev/null;
			for u in `+secUsers+`; do docker rm -f $(docker ps -aq --filter label=mlc.user=$u) >/dev/null 2>&1; done`).Run()
		os.Remove(sudoers)
		for _, uid := range r.uids {
			exec.Command("docker", "network", "rm", "mlc-"+uid).Run()
		}
		for _, u := range append(strings.Fields(secUsers), "mlct-outsider") {
			exec.Command("userdel", "-r", u).Run()
		}
		exec.Command("groupdel", "mlct-users").Run()
		os.RemoveAll(dir)
	})
	return r
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func sh(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

func shellQuote(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}

// as runs a shell command line as a real user through su.
func (r *secRig) as(t *testing.T, who, line string) (string, string, int) {
	t.Helper()
	return runCmd(t, exec.Command("su", who, "-s", "/bin/sh", "-c", "cd /tmp && "+line))
}

// runCmd runs c and returns its stdout, stderr and exit code.
func runCmd(t *testing.T, c *exec.Cmd) (string, string, int) {
	t.Helper()
	var out, errOut bytes.Buffer
	c.Stdout, c.Stderr = &out, &errOut
	err := c.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errOut.String(), code
}

// sudo runs mlc as who through the sudoers rule.
func (r *secRig) sudo(t *testing.T, who string, args ...string) (string, string, int) {
	t.Helper()
	return r.as(t, who, "sudo -n "+r.bin+" "+shellQuote(args))
}

func TestSecurityBetweenUsers(t *testing.T) {
	r := newSecRig(t)
	if out, errOut, code := r.sudo(t, "mlct-bob", "create", "secret", "busybox"); code != 0 {
		t.Fatalf("bob create: %d %s %s", code, out, errOut)
	}

	// alice learns nothing of bob's container: every command answers as for a missing one.
	out, _, code := r.sudo(t, "mlct-alice", "list", "--json")
	if code != 0 || strings.TrimSpace(out) != "[]" {
		t.Fatalf("alice's list: %d %q", code, out)
	}
	for _, cmd := range [][]string{{"open", "NAME", "--", "id"}, {"stop", "NAME"}, {"kill", "NAME"}, {"start", "NAME"},
		{"remove", "NAME", "--yes", "--force"}, {"logs", "NAME"}} {
		try := func(name string) (string, int) {
			args := append([]string(nil), cmd...)
			args[1] = name
			_, errOut, code := r.sudo(t, "mlct-alice", args...)
			return strings.ReplaceAll(errOut, name, "NAME"), code
		}
		secret, c1 := try("secret")
		missing, c2 := try("nothere")
		want := 4
		if cmd[0] == "open" {
			want = 125 // mlc's own failure where CMD's codes pass through
		}
		if c1 != want || secret != "mlc: no such container: NAME\n" || secret != missing || c1 != c2 {
			t.Errorf("alice %s bob's container: exit %d %q; for a missing one: exit %d %q", cmd[0], c1, secret, c2, missing)
		}
	}

	// Admin-only things.
	for _, args := range [][]string{{"list", "--all"}, {"list", "--user", "mlct-bob"}, {"stop", "secret", "--user", "mlct-bob"},
		{"protect", "secret"}, {"limits", "show", "mlct-bob"}, {"gpu", "reconcile"}, {"gpu", "release", "secret"}, {"--config", r.dir + "/evil.yaml", "limits", "show"}} {
		_, errOut, code := r.sudo(t, "mlct-alice", args...)
		if code != 5 || !strings.Contains(errOut, "only admins may") {
			t.Errorf("alice %v: exit %d %q, want 5", args, code, errOut)
		}
	}

	// alice may use the same short name; her processes run as her.
	if _, errOut, code := r.sudo(t, "mlct-alice", "create", "secret", "busybox"); code != 0 {
		t.Fatalf("alice create: %d %s", code, errOut)
	}
	out, _, code = r.sudo(t, "mlct-alice", "open", "secret", "--", "id", "-u")
	if code != 0 || strings.TrimSpace(out) != r.uids["mlct-alice"] {
		t.Fatalf("alice's uid inside: %d %q, want %s", code, out, r.uids["mlct-alice"])
	}
	// Not someone else's home as a mount.
	_, errOut, code := r.sudo(t, "mlct-alice", "create", "peek", "busybox", "-d", "/home/mlct-bob")
	if code != 5 || !strings.Contains(errOut, "not allowed") {
		t.Errorf("alice mounting bob's home: %d %q", code, errOut)
	}
	// The argv[0] link works through sudo too.
	out, _, code = r.as(t, "mlct-alice", "sudo -n "+r.dir+"/mlc-list -q")
	if code != 0 || strings.TrimSpace(out) != "secret" {
		t.Errorf("mlc-list: %d %q", code, out)
	}

	// Without sudo she gets exactly what sudo gives her: mlc elevates itself
	// through the rule. Setting SUDO_UID herself changes nothing.
	withSudo, _, c1 := r.sudo(t, "mlct-alice", "list", "-q")
	without, errOut, c2 := r.as(t, "mlct-alice", r.bin+" list -q")
	if c1 != 0 || c2 != 0 || withSudo != without || withSudo != "secret\n" {
		t.Errorf("alice without sudo: %d %q %q; with sudo: %d %q", c2, without, errOut, c1, withSudo)
	}
	_, errOut, code = r.as(t, "mlct-alice", "SUDO_UID=0 "+r.bin+" list --all")
	if code != 5 || !strings.Contains(errOut, "only admins") {
		t.Errorf("alice with a forged SUDO_UID: %d %q", code, errOut)
	}
	// Help and version need no elevation; someone outside the rule gets one line saying what to ask for.
	if out, _, code := r.as(t, "mlct-outsider", r.bin+" version"); code != 0 || !strings.HasPrefix(out, "mlc ") {
		t.Errorf("version without the rule: %d %q", code, out)
	}
	if out, _, code := r.as(t, "mlct-outsider", r.bin+" create --help"); code != 0 || !strings.Contains(out, "mlc create") {
		t.Errorf("create --help without the rule: %d %q", code, out)
	}
	_, errOut, code = r.as(t, "mlct-outsider", r.bin+" list")
	if code != 5 || strings.Count(strings.TrimSpace(errOut), "\n") != 0 || !strings.Contains(errOut, "may not run") || !strings.Contains(errOut, "sudoers") {
		t.Errorf("list without the rule: %d %q", code, errOut)
	}

	// The admin sees and acts on everyone's containers.
	out, _, code = r.sudo(t, "mlct-admin", "list", "--all", "-q")
	if code != 0 || !strings.Contains(out, "mlct-alice/secret") || !strings.Contains(out, "mlct-bob/secret") {
		t.Fatalf("admin list --all: %d %q", code, out)
	}
	if _, errOut, code := r.sudo(t, "mlct-admin", "protect", "secret", "--user", "mlct-bob"); code != 0 {
		t.Fatalf("admin protect: %d %s", code, errOut)
	}
	_, errOut, code = r.sudo(t, "mlct-bob", "remove", "secret", "--yes", "--force")
	if code != 6 || !strings.Contains(errOut, "is protected") {
		t.Errorf("bob removing his protected container: %d %q", code, errOut)
	}

	audit, err := os.ReadFile(filepath.Join(r.dir, "audit.jsonl"))
	must(t, err)
	// Her refusals are in the audit log, with her as the caller.
	for _, action := range []string{`"action":"list --all"`, `"action":"limits show"`, `"action":"gpu-reconcile"`, `"action":"protect"`} {
		if !strings.Contains(string(audit), `"caller":"mlct-alice","caller_uid":`+r.uids["mlct-alice"]+`,`+action) {
			t.Errorf("alice's refused %s is not in the audit log:\n%s", action, audit)
		}
	}
	if !strings.Contains(string(audit), `"caller":"mlct-bob","caller_uid":`+r.uids["mlct-bob"]+`,"action":"create"`) ||
		!strings.Contains(string(audit), `"caller":"mlct-admin"`) {
		t.Errorf("audit log lacks the callers:\n%s", audit)
	}
}
