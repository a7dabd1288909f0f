package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// HostB is a second "server" on this machine, made by scripts/hostb.sh: its
// own network namespace (reached at Addr from the host), its own mount
// namespace where /etc/mlc, /var/lib/mlc, /var/lib/mlc-workspaces,
// /var/log/mlc and /var/run/docker.sock are its own, its own hostname, Docker
// engine and sshd. Users, homes, /tmp and the mlc binary are the host's.
type HostB struct {
	Name   string // its hostname: "hostb"
	Addr   string // where its sshd listens: "10.231.0.2"
	Down   string // an address on its network that nothing answers: "10.231.0.3"
	Socket string // its engine's socket as the host sees it

	script string
}

// hostbLock serialises scripts/hostb.sh across test processes (go test runs
// packages in parallel); the script takes the same lock when run by hand.
const hostbLock = "/run/mlc-hostb.lock"

var (
	hostbOnce sync.Once
	hostb     *HostB
	hostbErr  error
)

// SecondServer brings hostb up (once per test process; it is left running
// afterwards, as bringing it up costs seconds) and returns it. Where it cannot
// be had (not root, no engine, no sshd) the test fails when Required() and is
// skipped otherwise.
func SecondServer(t testing.TB) *HostB {
	t.Helper()
	hostbOnce.Do(func() { hostb, hostbErr = upHostB() })
	if hostbErr != nil {
		if Required() {
			t.Fatalf("no second server for this test: %v", hostbErr)
		}
		t.Skipf("no second server (%v); set MLC_REQUIRE_ENGINE=1 to fail instead", hostbErr)
	}
	return hostb
}

func upHostB() (*HostB, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("scripts/hostb.sh needs root")
	}
	root, err := repoRoot()
	if err != nil {
		return nil, err
	}
	h := &HostB{
		Name:   "hostb",
		Addr:   "10.231.0.2",
		Down:   "10.231.0.3",
		Socket: "/run/mlc-hostb/docker.sock",
		script: filepath.Join(root, "scripts", "hostb.sh"),
	}
	unlock, err := lockHostB(5 * time.Minute)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if out, err := h.run(3*time.Minute, "up"); err != nil {
		return nil, fmt.Errorf("scripts/hostb.sh up: %v: %s", err, lastLine(out))
	}
	return h, nil
}

// repoRoot walks up from the working directory (a test's is its package's
// directory) to the directory holding go.mod.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// lockHostB takes hostbLock, waiting at most wait.
func lockHostB(wait time.Duration) (unlock func(), err error) {
	f, err := os.OpenFile(hostbLock, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(wait)
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) || time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("locking %s: %w", hostbLock, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// run runs scripts/hostb.sh ARGS and returns its combined output.
func (h *HostB) run(timeout time.Duration, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, h.script, args...)
	// This process holds hostbLock whenever it runs a command that takes it.
	cmd.Env = append(os.Environ(), "MLC_HOSTB_LOCKED=1")
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("%v (timed out after %s)", err, timeout)
	}
	return out, err
}

// Command returns a command that runs args as root in hostb's namespaces,
// for a test that wants its own stdin, stdout or exit status.
func (h *HostB) Command(ctx context.Context, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, h.script, append([]string{"exec"}, args...)...)
}

// Exec runs args as root in hostb's namespaces and returns their trimmed
// combined output; any failure fails the test.
func (h *HostB) Exec(t testing.TB, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := h.Command(ctx, args...)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("in %s: %s: %v\n%s", h.Name, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// Docker runs the docker CLI against hostb's engine and returns its trimmed
// output.
func (h *HostB) Docker(t testing.TB, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker", append([]string{"-H", "unix://" + h.Socket}, args...)...)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("docker on %s: %s: %v\n%s", h.Name, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// Bind mounts src over dst in hostb's mount namespace only (the host still
// sees its own dst) until the test ends. dst must exist, a file for a file, a
// directory for a directory. This is how a test gives hostb its own file at a
// path compiled into the shared mlc binary.
//
// The kernel drops the bind silently if the host deletes or renames dst while
// it is in place, so dst should outlive the test (t.TempDir made before Bind
// does: cleanups run last-in first-out).
func (h *HostB) Bind(t testing.TB, src, dst string) {
	t.Helper()
	for _, p := range []string{src, dst} {
		if !filepath.IsAbs(p) {
			t.Fatalf("Bind: %s is not an absolute path", p)
		}
	}
	h.Exec(t, "mount", "--bind", src, dst)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if out, err := h.Command(ctx, "umount", dst).CombinedOutput(); err != nil {
			t.Errorf("unbinding %s in %s: %v: %s", dst, h.Name, err, out)
		}
	})
}

// SSHUser lets the Linux user (who must exist and have a home) ssh to hostb
// with their own key, checking host keys: it makes the user's key if missing,
// authorises it and adds hostb's host key to their known_hosts.
func (h *HostB) SSHUser(t testing.TB, user string) {
	t.Helper()
	unlock, err := lockHostB(5 * time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	if out, err := h.run(time.Minute, "user", user); err != nil {
		t.Fatalf("scripts/hostb.sh user %s: %v\n%s", user, err, out)
	}
}

func lastLine(out []byte) string {
	s := strings.TrimSpace(string(out))
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return s
}
