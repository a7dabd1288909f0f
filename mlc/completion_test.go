package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/mlc-lab/mlc/internal/testenv"
)

const completionPolicy = `
defaults:
  cpus: 1
  memory: 1g
images:
  torch-new:
    image: example/pytorch:2.5
    framework: pytorch
    version: "2.5.1"
  torch-old:
    image: example/pytorch:2.4
    framework: pytorch
    version: "2.4.1"
  tf:
    image: example/tensorflow:2.17
    framework: TensorFlow
    version: "2.17.0"
`

// completeWords runs `mlc [--config policy] completion __complete -- words...`
// in-process and returns the candidates.
func completeWords(t *testing.T, policy string, words ...string) []string {
	t.Helper()
	args := []string{"completion", "__complete", "--"}
	if policy != "" {
		args = append([]string{"--config", policy}, args...)
	}
	out, errOut, code := mlc(t, append(args, words...)...)
	if code != 0 || errOut != "" {
		t.Fatalf("%v: exit %d, stderr %q", words, code, errOut)
	}
	return strings.Fields(out)
}

func TestCompletionScripts(t *testing.T) {
	for _, sh := range []string{"bash", "zsh", "fish"} {
		out, errOut, code := mlc(t, "completion", sh)
		if code != 0 || errOut != "" || !strings.Contains(out, "completion __complete --") ||
			!strings.Contains(out, "mlc-create") {
			t.Errorf("%s: exit %d %q\n%s", sh, code, errOut, out)
		}
	}
	fish, _, _ := mlc(t, "completion", "fish")
	for _, want := range []string{"-a 'create' -d 'create and start a container with your limits'", "-l gpus -r",
		"complete -c mlc-create -w 'mlc create'"} {
		if !strings.Contains(fish, want) {
			t.Errorf("fish script lacks %q", want)
		}
	}
	if strings.Contains(fish, "help h") || strings.Contains(fish, "`") {
		t.Errorf("fish script offers urfave's help command or keeps backquotes:\n%s", fish)
	}
	for _, args := range [][]string{{"completion"}, {"completion", "powershell"}, {"completion", "bash", "zsh"}} {
		out, errOut, code := mlc(t, args...)
		if code != 2 || out != "" || !strings.HasPrefix(errOut, "mlc: ") {
			t.Errorf("%v: exit %d, %q %q", args, code, out, errOut)
		}
	}
}

// Each script passes its shell's syntax check (zsh and fish where installed).
func TestCompletionScriptsParse(t *testing.T) {
	for _, sh := range []string{"bash", "zsh", "fish"} {
		path, err := exec.LookPath(sh)
		if err != nil {
			if sh == "bash" {
				t.Fatal("no bash")
			}
			t.Logf("%s not installed: not checked", sh)
			continue
		}
		script, _, _ := mlc(t, "completion", sh)
		f := filepath.Join(t.TempDir(), "script")
		must(t, os.WriteFile(f, []byte(script), 0o644))
		if out, err := exec.Command(path, "-n", f).CombinedOutput(); err != nil {
			t.Errorf("%s -n: %v\n%s", sh, err, out)
		}
	}
}

func TestCompletionNeedsNoRoot(t *testing.T) {
	for _, args := range [][]string{{"mlc", "completion", "bash"}, {"mlc", "completion", "man"},
		{"mlc", "completion", "__complete", "--", "mlc", "start", ""}, {"mlc", "completion", "__complete", "--", "mlc", "create", "-h"}} {
		if needsRoot(newApp(context.Background(), nil, io.Discard, io.Discard), args) {
			t.Errorf("needsRoot(%v)", args)
		}
	}
	// Only a process started for a completion hands itself to sudo.
	for args, want := range map[string]bool{
		"mlc completion __complete -- mlc start":             true,
		"/usr/bin/mlc completion __complete -- mlc-stop x":   true,
		"mlc --config p.yaml completion __complete -- mlc x": true,
		"mlc.test -test.run Completion":                      false,
		"mlc completion bash":                                false,
		"mlc open x -- completion __complete":                false,
		"mlc-completion __complete":                          true,
		"mlc create completion __complete":                   false,
	} {
		if got := isCompletionRequest(strings.Fields(args)); got != want {
			t.Errorf("isCompletionRequest(%s) = %v", args, got)
		}
	}
}

func TestCompletionCommandsAndFlags(t *testing.T) {
	cases := []struct {
		words []string
		want  string
	}{
		{[]string{"mlc", ""}, "cleanup completion copy create gpu keepalive kill limits list logs monitor open protect remove report servers start stats stop top unprotect version"},
		{[]string{"mlc", "l"}, "limits list logs"},
		{[]string{"/usr/local/bin/mlc", "gpu", ""}, "reconcile release status"},
		{[]string{"mlc-gpu", "re"}, "reconcile release"},
		{[]string{"mlc", "limits", "c"}, "check"},
		{[]string{"mlc", "--config", "x.yaml", "li"}, "limits list"},
		{[]string{"mlc", "-"}, "--config --help --server --version"},
		{[]string{"mlc", "list", "--"}, "--all --help --json --quiet --servers --user"},
		{[]string{"mlc", "create", "x", "--gpus", "1", "--d"}, "--data --dry-run"},
		{[]string{"mlc-stop", "--t"}, "--time"},
		{[]string{"mlc", "completion", ""}, "bash fish zsh"},
		{[]string{"mlc", "completion", "z"}, "zsh"},
		{[]string{"mlc", "bogus", ""}, ""},
		{[]string{"mlc", "gpu", "bogus", ""}, ""},
		{[]string{"mlc", "limits", "check", ""}, ""},       // a file: the shell completes it
		{[]string{"mlc", "create", "x", "--data", ""}, ""}, // a directory, likewise
		{[]string{"mlc", "open", "x", "--", ""}, ""},
		{[]string{"mlc", "--image="}, ""},
		{[]string{}, ""},
	}
	for _, c := range cases {
		got := strings.Join(completeWords(t, "", c.words...), " ")
		if got != c.want {
			t.Errorf("%q: got %q, want %q", c.words, got, c.want)
		}
	}
}

func TestCompletionCreateFromCatalogue(t *testing.T) {
	p := writePolicy(t, completionPolicy)
	cases := []struct {
		words []string
		want  string
	}{
		{[]string{"mlc", "create", "thesis", ""}, "TensorFlow pytorch"},
		{[]string{"mlc", "create", "thesis", "py"}, "pytorch"},
		{[]string{"mlc", "create", "--gpus", "1", "thesis", "--wait", ""}, "TensorFlow pytorch"},
		{[]string{"mlc", "create", "thesis", "pytorch", ""}, "2.4.1 2.5.1"},
		{[]string{"mlc", "create", "thesis", "PyTorch", "2.5"}, "2.5.1"},
		{[]string{"mlc-create", "thesis", "tensorflow", ""}, "2.17.0"},
		{[]string{"mlc", "create", "thesis", "jax", ""}, ""},
		{[]string{"mlc", "create", "thesis", "pytorch", "2.5.1", ""}, ""},
		{[]string{"mlc", "create", ""}, ""}, // a new name
		{[]string{"mlc", "create", "thesis", "--image", ""}, "tf torch-new torch-old"},
		{[]string{"mlc", "create", "thesis", "--image", "=", "torch"}, "torch-new torch-old"}, // bash without bash-completion
		{[]string{"mlc", "create", "thesis", "--image", "tf", ""}, ""},
	}
	for _, c := range cases {
		got := strings.Join(completeWords(t, p, c.words...), " ")
		if got != c.want {
			t.Errorf("%q: got %q, want %q", c.words, got, c.want)
		}
	}
	// The --config typed on the command line, when no global one was given.
	got := completeWords(t, "", "mlc", "--config", p, "create", "x", "")
	if !reflect.DeepEqual(got, []string{"TensorFlow", "pytorch"}) {
		t.Errorf("typed --config: %q", got)
	}
	// A policy that does not load completes nothing, silently.
	bad := writePolicy(t, "defaults:\n  memory: 12x\n")
	if got := completeWords(t, bad, "mlc", "create", "x", ""); len(got) != 0 {
		t.Errorf("broken policy: %q", got)
	}
	if got := completeWords(t, "/nonexistent.yaml", "mlc", "create", "x", ""); len(got) != 0 {
		t.Errorf("missing policy: %q", got)
	}
}

// Container names come from the caller's own containers, through the real
// engine: start offers stopped ones, stop and kill running ones.
func TestCompletionContainerNames(t *testing.T) {
	testenv.Engine(t)
	if os.Getuid() != 0 {
		if testenv.Required() {
			t.Fatal("container tests run as root")
		}
		t.Skip("needs root")
	}
	dir := t.TempDir()
	t.Setenv("MLC_STATE_DIR", filepath.Join(dir, "state"))
	t.Setenv("MLC_AUDIT_LOG", filepath.Join(dir, "audit.jsonl"))
	t.Setenv("MLC_WORKSPACE_ROOT", filepath.Join(dir, "ws"))
	t.Setenv("MLC_FAKE_GPUS", "")
	p := writePolicy(t, "defaults:\n  cpus: 0.1\n  memory: 32m\n  shm_size: 8m\n  max_containers: 200\n"+
		"images:\n  bb:\n    image: mlc/busybox:latest\n    framework: busybox\n")
	tag := fmt.Sprintf("cmp%d-", os.Getpid())
	up, down := tag+"up", tag+"down"
	t.Cleanup(func() {
		for _, n := range []string{up, down} {
			if _, errOut, code := mlc(t, "--config", p, "remove", n, "--yes", "--force"); code != 0 && code != 4 {
				t.Logf("remove %s: %s", n, errOut)
			}
		}
	})
	if _, errOut, code := mlc(t, "--config", p, "create", up, "busybox"); code != 0 {
		t.Fatalf("create %s: %s", up, errOut)
	}
	if _, errOut, code := mlc(t, "--config", p, "create", down, "busybox", "--no-start"); code != 0 {
		t.Fatalf("create %s: %s", down, errOut)
	}
	mine := func(words ...string) string {
		var got []string
		for _, n := range completeWords(t, p, words...) {
			if strings.HasPrefix(n, tag) {
				got = append(got, n)
			}
		}
		return strings.Join(got, " ")
	}
	cases := []struct {
		words []string
		want  string
	}{
		{[]string{"mlc", "start", ""}, down},
		{[]string{"mlc", "stop", "-t", "3", ""}, up},
		{[]string{"mlc-kill", tag}, up},
		{[]string{"mlc", "rm", "-f", ""}, down + " " + up},
		{[]string{"mlc", "open", tag + "u"}, up},
		{[]string{"mlc", "logs", "--tail", "5", ""}, down + " " + up},
		{[]string{"mlc", "protect", ""}, down + " " + up},
		{[]string{"mlc", "unprotect", ""}, down + " " + up},
		{[]string{"mlc", "gpu", "release", ""}, down + " " + up},
		{[]string{"mlc", "open", up, ""}, ""},
		{[]string{"mlc", "start", down, ""}, ""},
		{[]string{"mlc", "list", ""}, ""},
	}
	for _, c := range cases {
		if got := mine(c.words...); got != c.want {
			t.Errorf("%q: got %q, want %q", c.words, got, c.want)
		}
	}
	// Without an engine: nothing, and no error.
	t.Setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
	if got := completeWords(t, p, "mlc", "start", ""); len(got) != 0 {
		t.Errorf("engine down: %q", got)
	}
}

// The bash script, sourced into a real bash, completes through the built
// binary; so does the zsh script's function where zsh is installed.
func TestCompletionBashScript(t *testing.T) {
	bin := completionBinary(t)
	p := writePolicy(t, completionPolicy)
	script := filepath.Join(t.TempDir(), "mlc.bash")
	out, _, _ := mlc(t, "completion", "bash")
	must(t, os.WriteFile(script, []byte(out), 0o644))
	cases := []struct {
		line string // COMP_WORDS, the last one being completed
		want string
	}{
		{"mlc cr", "create"},
		{"mlc gpu ''", "reconcile release status"},
		{"mlc create x ''", "TensorFlow pytorch"},
		{"mlc-create x pytorch 2.4", "2.4.1"},
		{"mlc completion ''", "bash fish zsh"},
	}
	for _, c := range cases {
		prog := "source " + script + "\n" +
			"COMP_WORDS=(" + c.line + "); COMP_CWORD=$((${#COMP_WORDS[@]}-1)); _mlc; echo \"${COMPREPLY[*]}\"\n" +
			"complete -p mlc-start >/dev/null || echo 'no completion for mlc-start'"
		cmd := exec.Command("bash", "--norc", "--noprofile", "-c", prog)
		cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(bin)+":"+os.Getenv("PATH"), "MLC_CONFIG="+p)
		got, err := cmd.CombinedOutput()
		if err != nil || strings.TrimSpace(string(got)) != c.want {
			t.Errorf("%s: %v, got %q, want %q", c.line, err, got, c.want)
		}
	}
}

// completionBinary is the built mlc (MLC_BIN from make test, else built
// here), with its mlc-create link beside it.
func completionBinary(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "mlc")
	if b := os.Getenv("MLC_BIN"); b != "" {
		must(t, os.Symlink(b, bin))
	} else if out, err := exec.Command("go", "build", "-o", bin, "-ldflags", "-extldflags=-Wl,-z,lazy", ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	must(t, os.Symlink("mlc", filepath.Join(dir, "mlc-create")))
	return bin
}

func TestManPage(t *testing.T) {
	out, errOut, code := mlc(t, "completion", "man")
	if code != 0 || errOut != "" {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{".TH mlc 1", "mlc \\- fair, per-user ML containers", "mlc create [flags] NAME [FRAMEWORK [VERSION]]",
		"mlc create thesis pytorch 2.5 --gpus 1", ".SH FILES", "/etc/sudoers.d/mlc", ".SH EXIT STATUS", "canceled: the user declined"} {
		if !strings.Contains(out, want) {
			t.Errorf("man page lacks %q", want)
		}
	}
	if strings.Contains(out, "completion help") {
		t.Error("man page lists urfave's help subcommand")
	}
	if _, err := exec.LookPath("man"); err == nil {
		f := filepath.Join(t.TempDir(), "mlc.1")
		must(t, os.WriteFile(f, []byte(out), 0o644))
		cmd := exec.Command("man", "-l", f)
		cmd.Env = append(os.Environ(), "MANWIDTH=80", "MANPAGER=cat", "PAGER=cat")
		text, err := cmd.Output()
		if err != nil || !strings.Contains(string(text), "EXIT STATUS") {
			t.Errorf("man -l: %v\n%s", err, text)
		}
	}
}
