package main

import (
	"os/exec"
	"strings"
	"testing"
)

// mlc open on a terminal gives the command a real TTY of the caller's size.
func TestOpenWithTerminal(t *testing.T) {
	if _, err := exec.LookPath("script"); err != nil {
		t.Skip("needs script(1) for a pseudo-terminal")
	}
	r := newGPURig(t, "")
	name := r.n("tty")
	if _, errOut, code := r.run(t, "create", name, "busybox"); code != 0 {
		t.Fatal(errOut)
	}
	line := "stty rows 33 cols 101; MLC_CONFIG=" + r.policy + " " + r.bin + " open " + name + " -- sh -c 'tty; stty size; exit 5'"
	out, err := exec.Command("script", "-qec", line, "/dev/null").CombinedOutput()
	ee, _ := err.(*exec.ExitError)
	if ee == nil || ee.ExitCode() != 5 {
		t.Fatalf("exit code through the terminal: %v\n%s", err, out)
	}
	got := strings.ReplaceAll(string(out), "\r", "")
	if !strings.Contains(got, "/dev/pts/") || !strings.Contains(got, "33 101") {
		t.Fatalf("inside: %q", got)
	}
	// Without a terminal the same command sees none.
	out2, _, _ := r.run(t, "open", name, "--", "sh", "-c", "tty || true")
	if !strings.Contains(out2, "not a tty") {
		t.Fatalf("without a terminal: %q", out2)
	}
}

func TestEngineDownCLI(t *testing.T) {
	t.Setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
	_, errOut, code := mlc(t, "list")
	if code != 8 || errOut != "mlc: cannot reach the Docker engine at unix:///nonexistent/docker.sock: is dockerd running?\n" {
		t.Fatalf("exit %d %q", code, errOut)
	}
}
