package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/mlc-lab/mlc/internal/testenv"
)

func mlc(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(append([]string{"mlc"}, args...), strings.NewReader(""), &out, &errOut)
	return out.String(), errOut.String(), code
}

func writePolicy(t *testing.T, src string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

const testPolicy = `
defaults:
  cpus: 2
  memory: 4g
groups:
  students:
    members: [ghost]
    cpus: 3
user_overrides:
  ghost:
    memory: 8g
    reason: big model
`

func TestLimitsShowOtherUserWithoutAccount(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root (an admin) to show another user")
	}
	p := writePolicy(t, testPolicy)
	out, errOut, code := mlc(t, "--config", p, "limits", "show", "ghost")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{"Limits for ghost (group students)", "cpus            3      group students",
		"memory          8GiB   override (big model)", `no system account "ghost" exists`} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// Flags after the positional argument, and the global flag after the command.
	out2, _, code := mlc(t, "limits", "show", "ghost", "--json", "--config", p)
	if code != 0 || !strings.Contains(out2, `"source": "override (big model)"`) {
		t.Fatalf("json: %d %s", code, out2)
	}
}

func TestLimitsCheck(t *testing.T) {
	good := writePolicy(t, testPolicy)
	out, _, code := mlc(t, "limits", "check", good)
	if code != 0 || !strings.Contains(out, "valid: 1 users named, 1 groups, 1 overrides, 0 images") {
		t.Fatalf("good: %d %q", code, out)
	}
	bad := writePolicy(t, "defaults:\n  memory: 12x\n  cpus: lots\n")
	_, errOut, code := mlc(t, "limits", "check", bad)
	want := bad + ":2: defaults.memory: invalid size \"12x\" (use a number with an optional unit: 512m, 32g, 1.5GiB)\n" +
		bad + ":3: defaults.cpus: expected a number, found the string \"lots\"\n"
	if code != 3 || errOut != want {
		t.Fatalf("bad: exit %d\n%s\nwant\n%s", code, errOut, want)
	}
	_, errOut, code = mlc(t, "limits", "check", "/nonexistent.yaml")
	if code != 3 || errOut != "mlc: /nonexistent.yaml: no such file\n" {
		t.Fatalf("missing: %d %q", code, errOut)
	}
	_, errOut, code = mlc(t, "limits", "check", t.TempDir())
	if code != 3 || !strings.Contains(errOut, "is a directory") {
		t.Fatalf("dir: %d %q", code, errOut)
	}
	out, _, code = mlc(t, "limits", "check", bad, "--json")
	if code != 3 || !strings.Contains(out, `"line": 3`) || !strings.Contains(out, `"valid": false`) {
		t.Fatalf("json: %d %s", code, out)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{{"bogus"}, {"limits", "bogus"}, {"limits", "show", "--bogus"}, {"limits", "show", "a", "b"}} {
		_, errOut, code := mlc(t, args...)
		if code != 2 || !strings.HasPrefix(errOut, "mlc: ") || strings.Count(errOut, "\n") != 1 {
			t.Errorf("%v: exit %d, %q", args, code, errOut)
		}
	}
	_, errOut, code := mlc(t, "--config", "/nonexistent.yaml", "limits", "show")
	if code != 3 || !strings.Contains(errOut, "no such file") {
		t.Errorf("missing config: %d %q", code, errOut)
	}
}

func TestDispatch(t *testing.T) {
	cases := map[string][]string{
		"/usr/local/bin/mlc-limits": {"mlc", "limits", "show"},
		"mlc":                       {"mlc", "show"},
		"./bin/mlc-create":          {"mlc", "create", "show"},
	}
	for argv0, want := range cases {
		if got := dispatch([]string{argv0, "show"}); !reflect.DeepEqual(got, want) {
			t.Errorf("dispatch(%s) = %v", argv0, got)
		}
	}
}

func TestNormalizeMovesFlags(t *testing.T) {
	app := newApp(context.Background(), nil, nil, nil)
	got, err := normalize(app, []string{"mlc", "limits", "show", "alice", "--json", "--config", "x.yaml"})
	want := []string{"mlc", "--config", "x.yaml", "limits", "show", "--json", "alice"}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v %v", got, err)
	}
}

func TestCreateFlagsAnywhereDryRun(t *testing.T) {
	testenv.Engine(t)
	dir := t.TempDir()
	t.Setenv("MLC_STATE_DIR", dir)
	t.Setenv("MLC_AUDIT_LOG", filepath.Join(dir, "audit.jsonl"))
	p := writePolicy(t, "defaults:\n  cpus: 2\n  memory: 1g\nimages:\n  bb:\n    image: mlc/busybox:latest\n    framework: busybox\n    version: \"1.35\"\n")
	out, errOut, code := mlc(t, "--config", p, "create", "dry", "busybox", "1.35", "--cpus", "1.5", "-p", "8888", "-p", "9000:9001",
		"--env", "A=1,2", "--memory", "512m", "--dry-run", "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var req struct {
		Name   string
		Config struct {
			Env  []string
			User string
		} `json:"config"`
		HostConfig struct {
			NanoCpus     int64
			Memory       int64
			PortBindings map[string][]struct{ HostIp, HostPort string }
		} `json:"host_config"`
	}
	if err := json.Unmarshal([]byte(out), &req); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if req.HostConfig.NanoCpus != 1.5e9 || req.HostConfig.Memory != 512<<20 || len(req.HostConfig.PortBindings) != 2 ||
		req.HostConfig.PortBindings["9001/tcp"][0].HostPort != "9000" || req.HostConfig.PortBindings["8888/tcp"][0].HostIp != "127.0.0.1" {
		t.Fatalf("request: %+v", req.HostConfig)
	}
	if !strings.Contains(strings.Join(req.Config.Env, " "), "A=1,2") {
		t.Fatalf("--env with a comma was split: %v", req.Config.Env)
	}
	if _, err := os.Stat(filepath.Join(dir, "audit.jsonl")); err == nil {
		t.Fatal("a dry run wrote the audit log")
	}
	_, errOut, code = mlc(t, "--config", p, "create", "x", "busybox", "--timeout", "1h")
	if code != 2 || !strings.Contains(errOut, "--timeout only applies with --wait") {
		t.Fatalf("timeout without wait: %d %q", code, errOut)
	}
	_, errOut, code = mlc(t, "--config", p, "create", "x", "busybox", "--memory", "12x")
	if code != 2 || !strings.Contains(errOut, `--memory: invalid size "12x"`) {
		t.Fatalf("bad memory: %d %q", code, errOut)
	}
}

// Help, version and completion need no root; a help flag that is an argument
// (of open's command, or a flag's value) does not count.
func TestNeedsRoot(t *testing.T) {
	app := newApp(context.Background(), nil, io.Discard, io.Discard)
	for line, want := range map[string]bool{
		"mlc":                                  false,
		"mlc --help":                           false,
		"mlc help":                             false,
		"mlc version":                          false,
		"mlc --version":                        false,
		"mlc create --help":                    false,
		"mlc limits show -h":                   false,
		"mlc completion bash":                  false,
		"mlc list":                             true,
		"mlc limits show":                      true,
		"mlc open c1 ls -h /":                  true,
		"mlc open c1 -- ls --help":             true,
		"mlc create v1 busybox --workspace -v": true,
		"mlc --config x.yaml --help":           true,
		"mlc stop help":                        true,
	} {
		if got := needsRoot(app, strings.Fields(line)); got != want {
			t.Errorf("needsRoot(%s) = %v, want %v", line, got, want)
		}
	}
}
