// Package servers spans a lab's servers. Each server keeps its own engine,
// policy and GPU ledger; this package runs as the user (never as root) and
// reaches another server by running `ssh SERVER mlc ...` as that user, with
// their own keys, so the other server's mlc checks its own policy and its
// own sudoers rule. It never hands out another server's GPUs itself.
package servers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mlc-lab/mlc/config"
	"github.com/mlc-lab/mlc/containers"
	"github.com/mlc-lab/mlc/errs"
)

// Runner runs mlc commands on the lab's servers.
type Runner struct {
	Servers []config.Server
	// Here is the name of this server in Servers ("" when it is not listed).
	Here string
	// Self is this mlc's path; another server's mlc is at the same path
	// unless its entry says otherwise.
	Self string
	// SSH is the ssh client (default "ssh" from PATH).
	SSH string
	// ConnectTimeout bounds ssh's connection (default 10s).
	ConnectTimeout time.Duration
}

// NewRunner is the Runner for a policy on this machine: Here is the server
// whose name is this machine's host name (up to its first dot).
func NewRunner(cfg *config.Config) (*Runner, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "finding mlc's own path")
	}
	r := &Runner{Servers: cfg.Servers, Self: self, SSH: "ssh", ConnectTimeout: 10 * time.Second}
	if h, err := os.Hostname(); err == nil {
		h, _, _ = strings.Cut(h, ".")
		for _, s := range cfg.Servers {
			if strings.EqualFold(s.Name, h) {
				r.Here = s.Name
			}
		}
	}
	return r, nil
}

// Find is the server called name.
func (r *Runner) Find(name string) (config.Server, error) {
	for _, s := range r.Servers {
		if s.Name == name {
			return s, nil
		}
	}
	if len(r.Servers) == 0 {
		return config.Server{}, errs.New(errs.NotFound, "no servers are listed in the policy (servers:), so there is no server %q", name)
	}
	return config.Server{}, errs.New(errs.NotFound, "no server %q in the policy (servers: %s)", name, strings.Join(r.Names(), ", "))
}

// Names are the servers' names, in the policy's order.
func (r *Runner) Names() []string {
	var out []string
	for _, s := range r.Servers {
		out = append(out, s.Name)
	}
	return out
}

// IsHere is whether s is this server.
func (r *Runner) IsHere(s config.Server) bool { return s.Name == r.Here && r.Here != "" }

// Command is the command that runs `mlc ARGS` on s: this mlc for this
// server (it elevates itself through sudo as usual), else ssh to s, as the
// user, with host keys checked and no password prompt. tty asks ssh for a
// terminal (mlc open).
func (r *Runner) Command(ctx context.Context, s config.Server, args []string, tty bool) *exec.Cmd {
	if r.IsHere(s) {
		return exec.CommandContext(ctx, r.Self, args...)
	}
	cmd := exec.CommandContext(ctx, r.ssh(), r.SSHArgs(s, args, tty)...)
	// ssh ends with the remote command; a Ctrl-C reaches it through the
	// terminal's process group. Never SIGKILL it on ctx's end: SIGTERM lets
	// it close the connection, which the other side takes for an interrupt.
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 10 * time.Second
	return cmd
}

func (r *Runner) ssh() string {
	if r.SSH == "" {
		return "ssh"
	}
	return r.SSH
}

// SSHArgs are ssh's arguments for running `mlc ARGS` on s.
func (r *Runner) SSHArgs(s config.Server, args []string, tty bool) []string {
	timeout := r.ConnectTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	out := []string{"-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
		"-o", "ConnectTimeout=" + strconv.Itoa(int(timeout.Seconds()+0.5)),
		"-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=3"}
	if s.Port != 0 {
		out = append(out, "-p", strconv.Itoa(s.Port))
	}
	if tty {
		out = append(out, "-t")
	} else {
		out = append(out, "-T")
	}
	mlc := s.MLC
	if mlc == "" {
		mlc = r.Self
	}
	words := []string{Quote(mlc)}
	for _, a := range args {
		words = append(words, Quote(a))
	}
	return append(out, "--", s.SSH, strings.Join(words, " "))
}

// Quote makes s one word for the remote user's shell.
func Quote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=:,@%+") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// Output runs `mlc ARGS` on s and returns its standard output. An ssh
// failure (exit 255) or a refusal becomes one error naming the server, with
// the remote mlc's own message and exit kind where it gave one.
func (r *Runner) Output(ctx context.Context, s config.Server, args []string, stdin io.Reader) ([]byte, error) {
	cmd := r.Command(ctx, s, args, false)
	cmd.Stdin = stdin
	var errOut strings.Builder
	cmd.Stderr = &limited{w: &errOut, n: 8192}
	out, err := cmd.Output()
	if err != nil {
		return out, r.Failure(s, err, errOut.String(), ctx)
	}
	return out, nil
}

// Failure turns a failed command on s into one error.
func (r *Runner) Failure(s config.Server, err error, stderr string, ctx context.Context) error {
	msg := lastLine(stderr)
	if ctx != nil && ctx.Err() != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return errs.New(errs.Unavailable, "%s did not answer in time", s.Name)
		}
		return errs.New(errs.Interrupted, "interrupted")
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code := ee.ExitCode()
		if code == 255 && !r.IsHere(s) {
			if msg == "" {
				msg = "ssh failed"
			}
			return errs.New(errs.Unavailable, "cannot reach %s over ssh: %s", s.Name, strings.TrimPrefix(msg, "ssh: "))
		}
		msg = strings.TrimPrefix(msg, "mlc: ")
		if msg == "" {
			msg = fmt.Sprintf("mlc exited with status %d", code)
		}
		return errs.New(errs.FromExitCode(code), "%s: %s", s.Name, msg)
	}
	return errs.Wrap(errs.Unavailable, err, "%s", s.Name)
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

type limited struct {
	w io.Writer
	n int
}

func (l *limited) Write(p []byte) (int, error) {
	if l.n > 0 {
		k := min(len(p), l.n)
		l.w.Write(p[:k])
		l.n -= k
	}
	return len(p), nil
}

// Result is one server's answer to a survey.
type Result struct {
	Server string                 `json:"server"`
	Here   bool                   `json:"here,omitempty"`
	Info   *containers.ServerInfo `json:"info,omitempty"`
	Error  string                 `json:"error,omitempty"`
	err    error
}

// Err is why the server did not answer (nil when it did).
func (r Result) Err() error { return r.err }

// Answer is one server's output of a command run on every server.
type Answer struct {
	Server config.Server
	Out    []byte
	Err    error
}

// All runs `mlc ARGS` on every server in parallel, each within timeout; a
// server that does not answer is reported, never waited for beyond that.
func (r *Runner) All(ctx context.Context, timeout time.Duration, args ...string) []Answer {
	out := make([]Answer, len(r.Servers))
	var wg sync.WaitGroup
	for i, s := range r.Servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			b, err := r.Output(c, s, args, nil)
			out[i] = Answer{Server: s, Out: b, Err: err}
		}()
	}
	wg.Wait()
	return out
}

// Survey asks every server for its ServerInfo (see All).
func (r *Runner) Survey(ctx context.Context, timeout time.Duration) []Result {
	var out []Result
	for _, a := range r.All(ctx, timeout, "server-info", "--json") {
		res := Result{Server: a.Server.Name, Here: r.IsHere(a.Server), err: a.Err}
		if a.Err == nil {
			var info containers.ServerInfo
			if json.Unmarshal(a.Out, &info) != nil {
				res.err = errs.New(errs.Unavailable, "%s answered something that is not mlc's server info (is its mlc too old?)", a.Server.Name)
			} else {
				res.Info = &info
			}
		}
		if res.err != nil {
			res.Error = res.err.Error()
		}
		out = append(out, res)
	}
	return out
}

// Forward runs `mlc ARGS` on s with this process's standard input, output
// and error (a terminal for tty), and returns its exit code; an ssh failure
// is an error naming the server.
func (r *Runner) Forward(s config.Server, args []string, tty bool) (int, error) {
	cmd := r.Command(context.Background(), s, args, tty)
	cmd.Stdin, cmd.Stdout = os.Stdin, os.Stdout
	var errOut strings.Builder
	cmd.Stderr = io.MultiWriter(os.Stderr, &limited{w: &errOut, n: 8192})
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, nil
	case errors.As(err, &ee) && ee.ExitCode() != 255 && ee.ExitCode() >= 0:
		return ee.ExitCode(), nil
	}
	return 0, r.Failure(s, err, errOut.String(), nil)
}

// Pick chooses where a create asking for gpus GPUs goes: among the servers
// that answered, those with that many GPUs free and within the caller's
// quota there; of those, the lowest load per CPU (then the most free
// memory). It says why in words.
func Pick(results []Result, gpus int) (Result, string, error) {
	var fit []Result
	var why []string
	kind := errs.Unavailable
	for _, r := range results {
		switch {
		case r.Info == nil:
			why = append(why, fmt.Sprintf("%s: no answer", r.Server))
		case gpus > r.Info.GPUsFree:
			why = append(why, fmt.Sprintf("%s: %d of %d GPUs free", r.Server, r.Info.GPUsFree, r.Info.GPUsTotal))
		case gpus > r.Info.QuotaLeft:
			why = append(why, fmt.Sprintf("%s: your GPU quota there has %d left", r.Server, r.Info.QuotaLeft))
			kind = errs.Quota
		default:
			fit = append(fit, r)
		}
	}
	if len(fit) == 0 {
		return Result{}, "", errs.New(kind, "no server can take a container with %d GPUs now (%s)", gpus, strings.Join(why, "; "))
	}
	sort.SliceStable(fit, func(i, j int) bool {
		li, lj := loadPerCPU(fit[i].Info), loadPerCPU(fit[j].Info)
		if li != lj {
			return li < lj
		}
		return fit[i].Info.MemAvailable > fit[j].Info.MemAvailable
	})
	best := fit[0]
	reason := fmt.Sprintf("%d of %d GPUs free, your quota there has %d left; load %.2f on %d CPUs",
		best.Info.GPUsFree, best.Info.GPUsTotal, best.Info.QuotaLeft, best.Info.Load1, best.Info.CPUs)
	if len(fit) > 1 {
		reason += fmt.Sprintf(", the lowest of %d servers that fit", len(fit))
	}
	return best, reason, nil
}

func loadPerCPU(i *containers.ServerInfo) float64 {
	return i.Load1 / float64(max(1, i.CPUs))
}
