package testenv_test

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mlc-lab/mlc/internal/testenv"
)

// TestHostB checks the second server itself: that it is another host as far
// as mlc can tell (hostname, engine, /etc/mlc, network) and that a user
// reaches it over ssh with their own key.
func TestHostB(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	testenv.Engine(t)
	h := testenv.SecondServer(t)

	if got := h.Exec(t, "hostname"); got != h.Name {
		t.Errorf("hostname in hostb = %q, want %q", got, h.Name)
	}
	if host, _ := os.Hostname(); host == h.Name {
		t.Errorf("the host's own hostname is %q", host)
	}

	// Another engine, reached through /var/run/docker.sock inside hostb, with
	// the same test image.
	hostID := testenv.Docker(t, "info", "--format", "{{.ID}}")
	bID := h.Docker(t, "info", "--format", "{{.ID}}")
	if bID == hostID {
		t.Errorf("hostb's engine has the host's engine ID %s", hostID)
	}
	if got := h.Exec(t, "docker", "info", "--format", "{{.ID}}"); got != bID {
		t.Errorf("/var/run/docker.sock in hostb is engine %s, want hostb's %s", got, bID)
	}
	img := "{{.Id}}"
	if a, b := testenv.Docker(t, "image", "inspect", "-f", img, testenv.Image), h.Docker(t, "image", "inspect", "-f", img, testenv.Image); a != b {
		t.Errorf("%s is %s on the host but %s in hostb", testenv.Image, a, b)
	}

	// Bind: hostb sees src at dst, the host still sees its own dst.
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "hostb-policy.yaml"), filepath.Join(dir, "policy.yaml")
	writeFile(t, src, "hostb's\n")
	writeFile(t, dst, "the host's\n")
	h.Bind(t, src, dst)
	if got := h.Exec(t, "cat", dst); got != "hostb's" {
		t.Errorf("hostb reads %q at the bound %s", got, dst)
	}
	if got, _ := os.ReadFile(dst); string(got) != "the host's\n" {
		t.Errorf("the host reads %q at %s, bound only in hostb", got, dst)
	}

	// hostb's own /etc/mlc, read by a user over ssh.
	const name = "mlct-hbtest-x"
	h.Exec(t, "sh", "-c", "echo hostb-etc > /etc/mlc/"+name)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		h.Command(ctx, "rm", "-f", "/etc/mlc/"+name).Run()
	})
	if _, err := os.Stat("/etc/mlc/" + name); err == nil {
		t.Errorf("/etc/mlc/%s written in hostb shows on the host", name)
	}
	user := testUser(t, "mlct-hbtest")
	h.SSHUser(t, user)
	h.SSHUser(t, user) // twice: no duplicate lines
	got, err := asUser(t, user, 30*time.Second, "ssh -o BatchMode=yes -o StrictHostKeyChecking=yes -o ConnectTimeout=5 "+h.Addr+" cat /etc/mlc/"+name)
	if err != nil || got != "hostb-etc" {
		t.Errorf("%s over ssh: cat /etc/mlc/%s = %q, %v; want hostb-etc", user, name, got, err)
	}
	for _, f := range []string{"authorized_keys", "known_hosts"} {
		b, err := os.ReadFile(filepath.Join("/home", user, ".ssh", f))
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(lines) != 1 {
			t.Errorf("~%s/.ssh/%s has %d lines after two SSHUser, want 1:\n%s", user, f, len(lines), b)
		}
	}

	// Another network namespace: a port hostb's container publishes on
	// 127.0.0.1 answers in hostb and not on the host's 127.0.0.1.
	port := freePort(t)
	const web = "mlct-hbtest-web"
	exec.Command("docker", "-H", "unix://"+h.Socket, "rm", "-f", web).Run()
	h.Docker(t, "run", "-d", "--name", web, "-p", "127.0.0.1:"+port+":8080", testenv.Image, "httpd", "-f", "-p", "8080", "-h", "/etc")
	t.Cleanup(func() { exec.Command("docker", "-H", "unix://"+h.Socket, "rm", "-f", web).Run() })
	// The container's /etc/hostname: its short id. At most 10 tries, a second apart.
	// (bash's /dev/tcp: the host's static busybox wget crashes here.)
	got = h.Exec(t, "bash", "-c", `for i in 1 2 3 4 5 6 7 8 9 10; do
		if exec 3<>/dev/tcp/127.0.0.1/`+port+`; then
			printf 'GET /hostname HTTP/1.0\r\n\r\n' >&3
			body=$(timeout 5 cat <&3 | tr -d '\r' | sed '1,/^$/d')
			[ -n "$body" ] && { echo "$body"; exit 0; }
		fi 2>/dev/null
		sleep 1
	done; echo no answer; exit 1`)
	if id := h.Docker(t, "inspect", "-f", "{{.Id}}", web); !strings.HasPrefix(id, got) || got == "" {
		t.Errorf("hostb's 127.0.0.1:%s served %q, want a prefix of %s", port, got, id)
	}
	if c, err := net.DialTimeout("tcp", "127.0.0.1:"+port, 2*time.Second); err == nil {
		c.Close()
		t.Errorf("hostb's published 127.0.0.1:%s answers on the host's 127.0.0.1 too", port)
	}

	// The address nobody answers: ssh gives up within its ConnectTimeout.
	start := time.Now()
	out, err := asUser(t, user, 20*time.Second, "ssh -o BatchMode=yes -o StrictHostKeyChecking=yes -o ConnectTimeout=3 "+h.Down+" true")
	if err == nil {
		t.Errorf("ssh to %s (nothing there) succeeded: %s", h.Down, out)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("ssh to %s took %s to fail with ConnectTimeout=3", h.Down, d)
	}

	// The host is untouched: its engine answers and its docker0 is there.
	testenv.Docker(t, "info", "--format", "{{.ID}}")
	if out, err := exec.Command("ip", "link", "show", "docker0").CombinedOutput(); err != nil {
		t.Errorf("the host's docker0: %v: %s", err, out)
	}
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// testUser creates a Linux user with a home (removed when the test ends).
func testUser(t *testing.T, name string) string {
	t.Helper()
	userdel := func() {
		// A just-closed ssh session may still hold the user for a moment.
		for i := 0; i < 25; i++ {
			out, err := exec.Command("userdel", "-r", name).CombinedOutput()
			if err == nil || strings.Contains(string(out), "does not exist") {
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
		t.Logf("userdel -r %s failed", name)
	}
	userdel() // left by a killed run
	if out, err := exec.Command("useradd", "-m", "-s", "/bin/sh", name).CombinedOutput(); err != nil {
		t.Fatalf("useradd %s: %v: %s", name, err, out)
	}
	t.Cleanup(userdel)
	return name
}

// asUser runs a shell command as user, bounded by timeout, and returns its
// trimmed combined output.
func asUser(t *testing.T, user string, timeout time.Duration, cmd string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c := exec.CommandContext(ctx, "su", "-s", "/bin/sh", user, "-c", cmd)
	c.Dir = "/"
	c.WaitDelay = 2 * time.Second
	out, err := c.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// freePort is a TCP port nothing listens on at the host's 127.0.0.1.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}
