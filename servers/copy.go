package servers

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	units "github.com/docker/go-units"

	"github.com/mlc-lab/mlc/config"
	"github.com/mlc-lab/mlc/containers"
	"github.com/mlc-lab/mlc/errs"
)

// CopyRequest is `mlc copy NAME --to SERVER`.
type CopyRequest struct {
	Name      string // the container here
	To        config.Server
	As        string // its name there ("": the same)
	Workspace string // its workspace's name there ("": the same as here)
	Move      bool   // remove the source once the copy has started there
	Progress  io.Writer
	Terminal  bool // Progress is a terminal: redraw one line
}

// CopyResult is what a copy did.
type CopyResult struct {
	Name      string   `json:"name"`
	Server    string   `json:"server"`
	Workspace string   `json:"workspace"`
	GPUs      []string `json:"gpus"`
	Publish   []string `json:"publish,omitempty"`
	Bytes     int64    `json:"bytes"` // file contents sent
	Synced    bool     `json:"workspace_synced"`
	Moved     bool     `json:"moved"`
	Notes     []string `json:"notes,omitempty"`
	Seconds   float64  `json:"seconds"`
}

// local runs `mlc ARGS` here, whatever the server list says.
func (r *Runner) local(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, r.Self, args...)
	// sudo passes SIGTERM on to mlc, which undoes what it was doing.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	return cmd
}

func (r *Runner) localOutput(ctx context.Context, stdin io.Reader, args ...string) ([]byte, error) {
	cmd := r.local(ctx, args...)
	cmd.Stdin = stdin
	var errOut strings.Builder
	cmd.Stderr = &limited{w: &errOut, n: 8192}
	out, err := cmd.Output()
	if err != nil {
		return nil, r.Failure(config.Server{Name: r.hereName()}, err, errOut.String(), ctx)
	}
	return out, nil
}

func (r *Runner) hereName() string {
	if r.Here != "" {
		return r.Here
	}
	return "this server"
}

// Copy copies a container of the caller's from here to req.To: the target's
// mlc checks its own policy and creates the container there (its GPUs from
// its own ledger); only the container's layer of changes travels, then the
// workspace through rsync (unless workspaces are shared), and the container
// is started there last. Until then an interrupt or failure leaves the
// source as it was and nothing on the target: the target undoes its half
// when the stream ends without the word to start.
func (r *Runner) Copy(ctx context.Context, req CopyRequest) (*CopyResult, error) {
	start := time.Now()
	if req.To.Name == r.Here && r.Here != "" {
		return nil, errs.New(errs.Usage, "%s is this server; copy to another one (servers: %s)", req.To.Name, strings.Join(r.Names(), ", "))
	}
	newName := req.As
	if newName == "" {
		newName = req.Name
	}
	say := func(format string, a ...any) {
		if req.Progress != nil {
			fmt.Fprintf(req.Progress, format+"\n", a...)
		}
	}
	desc, err := r.localOutput(ctx, nil, "copy-send", "--describe", req.Name)
	if err != nil {
		return nil, err
	}
	var settings containers.CopySettings
	if err := json.Unmarshal(desc, &settings); err != nil {
		return nil, errs.New(errs.Internal, "mlc copy-send answered %q", firstBytes(desc))
	}
	recvArgs := []string{"copy-receive", "--as", newName}
	if req.Workspace != "" {
		recvArgs = append(recvArgs, "--workspace", req.Workspace)
	}
	pre, err := r.Output(ctx, req.To, append(append([]string{}, recvArgs...), "--preflight"), bytes.NewReader(desc))
	if err != nil {
		return nil, err
	}
	var reply containers.PreflightReply
	if err := json.Unmarshal(pre, &reply); err != nil {
		return nil, errs.New(errs.Unavailable, "%s answered something that is not mlc's (is its mlc too old?)", req.To.Name)
	}
	for _, n := range reply.Notes {
		say("note: %s", n)
	}
	containers.Failpoint(ctx, "copy-preflighted")
	if ctx.Err() != nil {
		return nil, errs.New(errs.Interrupted, "interrupted; nothing was copied")
	}

	// The receiver on the target, then the sender here, joined by a pipe
	// that does not pass through this process: the sender writes straight
	// into ssh. This process writes to the same pipe only before the sender
	// starts (the settings) and after it ended ("start"), and counts the
	// bytes from the sender's progress lines.
	pipeR, pipeW, err := os.Pipe()
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "starting the copy")
	}
	recv := r.Command(ctx, req.To, recvArgs, false)
	recv.Stdin = pipeR
	recvOut, err := recv.StdoutPipe()
	if err != nil {
		pipeR.Close()
		pipeW.Close()
		return nil, errs.Wrap(errs.Internal, err, "starting the copy")
	}
	var recvErr strings.Builder
	recv.Stderr = &limited{w: &recvErr, n: 8192}
	err = recv.Start()
	pipeR.Close() // ssh has it
	if err != nil {
		pipeW.Close()
		return nil, errs.Wrap(errs.Unavailable, err, "starting ssh")
	}
	events := bufio.NewReader(recvOut)
	recvDone := false
	finishRecv := func() error {
		if recvDone {
			return nil
		}
		recvDone = true
		pipeW.Close()
		io.Copy(io.Discard, events)
		if err := recv.Wait(); err != nil {
			return r.Failure(req.To, err, recvErr.String(), ctx)
		}
		return nil
	}
	startSent := false
	fail := func(err error) (*CopyResult, error) {
		if rerr := finishRecv(); rerr != nil && !errs.Is(err, errs.Interrupted) && errs.Is(err, errs.Internal) {
			err = rerr
		}
		switch {
		case ctx.Err() != nil && startSent:
			return nil, errs.New(errs.Interrupted, "interrupted after %s was told to start the copy; %s is as it was here, and the copy may exist there (mlc list --servers)", req.To.Name, req.Name)
		case ctx.Err() != nil:
			return nil, errs.New(errs.Interrupted, "interrupted; %s was left as it was, and nothing was kept on %s", req.Name, req.To.Name)
		}
		return nil, err
	}
	if _, err := pipeW.Write(append(bytes.TrimSpace(desc), '\n')); err != nil {
		return fail(r.Failure(req.To, err, recvErr.String(), ctx))
	}

	send := r.local(ctx, "copy-send", req.Name)
	send.Stdout = pipeW
	bar := &progress{w: req.Progress, terminal: req.Terminal, total: settings.Changes, start: time.Now(),
		what: fmt.Sprintf("copying %s to %s", req.Name, req.To.Name)}
	var sendErr strings.Builder
	// Its phases (pausing, sending) and progress are for the user; its
	// error is ours to say.
	send.Stderr = io.MultiWriter(&limited{w: &sendErr, n: 8192}, &phaseLines{w: req.Progress, bar: bar})
	if err := send.Start(); err != nil {
		return fail(errs.Wrap(errs.Internal, err, "starting mlc copy-send"))
	}
	serr := send.Wait()
	bar.done()
	if serr != nil {
		// Which side gave up first: a receiver that refused the stream
		// makes the sender fail on a closed pipe, which says nothing.
		why := lastLine(sendErr.String())
		if strings.Contains(why, "broken pipe") || strings.Contains(why, "closed pipe") {
			if rerr := finishRecv(); rerr != nil {
				return fail(rerr)
			}
		}
		return fail(r.Failure(config.Server{Name: r.hereName()}, serr, sendErr.String(), ctx))
	}
	n := bar.sent()
	ev, err := readEvent(events, "created")
	if err != nil {
		_ = finishRecv()
		return fail(r.Failure(req.To, err, recvErr.String(), ctx))
	}
	res := &CopyResult{Name: newName, Server: req.To.Name, Workspace: ev.Workspace, GPUs: ev.GPUs, Publish: ev.Publish,
		Bytes: n, Notes: ev.Notes}
	containers.Failpoint(ctx, "copy-created")
	if ctx.Err() != nil {
		return fail(ctx.Err())
	}
	if !reply.Shared && settings.WsPath != "" {
		say("syncing the workspace %s to %s:%s", settings.Workspace, req.To.Name, ev.Workspace)
		if err := r.rsync(ctx, req, settings.WsPath, ev.Workspace); err != nil {
			fmt.Fprintln(pipeW, "abort")
			return fail(err)
		}
		res.Synced = true
	}
	containers.Failpoint(ctx, "copy-synced")
	if ctx.Err() != nil {
		return fail(ctx.Err())
	}
	startSent = true
	if _, err := fmt.Fprintln(pipeW, "start"); err != nil {
		return fail(r.Failure(req.To, err, recvErr.String(), ctx))
	}
	if _, err := readEvent(events, "started"); err != nil {
		return fail(r.Failure(req.To, err, recvErr.String(), ctx))
	}
	if err := finishRecv(); err != nil {
		return nil, err
	}
	if req.Move {
		// Only now: the copy exists and started there.
		if _, err := r.localOutput(context.WithoutCancel(ctx), nil, "remove", "--force", req.Name); err != nil {
			res.Notes = append(res.Notes, fmt.Sprintf("the copy is on %s, but %s was not removed here: %v", req.To.Name, req.Name, err))
		} else {
			res.Moved = true
		}
	}
	res.Seconds = time.Since(start).Seconds()
	return res, nil
}

// rsync syncs the workspace src (here) to dst on the target, as the user,
// over ssh with the same options as every other call.
func (r *Runner) rsync(ctx context.Context, req CopyRequest, src, dst string) error {
	sshArgs := r.SSHArgs(req.To, nil, false)
	// SSHArgs ends with "--", the host and the command; rsync adds its own.
	sshArgs = sshArgs[:len(sshArgs)-3]
	e := []string{r.ssh()}
	for _, a := range sshArgs {
		e = append(e, Quote(a))
	}
	args := []string{"-aH", "--numeric-ids", "-e", strings.Join(e, " ")}
	if req.Terminal {
		args = append(args, "--info=progress2")
	}
	args = append(args, "--", strings.TrimSuffix(src, "/")+"/", req.To.SSH+":"+Quote(strings.TrimSuffix(dst, "/")+"/"))
	cmd := exec.CommandContext(ctx, "rsync", args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 10 * time.Second
	var errOut strings.Builder
	cmd.Stderr = &limited{w: &errOut, n: 8192}
	if req.Terminal {
		cmd.Stdout = req.Progress
	}
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return errs.New(errs.Interrupted, "interrupted")
		}
		return errs.New(errs.Unavailable, "syncing the workspace to %s failed: %s", req.To.Name, lastLine(errOut.String()))
	}
	return nil
}

func readEvent(r *bufio.Reader, want string) (containers.CopyEvent, error) {
	var ev containers.CopyEvent
	line, err := r.ReadBytes('\n')
	if err != nil {
		return ev, err
	}
	if err := json.Unmarshal(line, &ev); err != nil || ev.Event != want {
		return ev, fmt.Errorf("unexpected answer %q", firstBytes(line))
	}
	return ev, nil
}

func firstBytes(b []byte) string {
	if len(b) > 200 {
		b = b[:200]
	}
	return strings.TrimSpace(string(b))
}

// phaseLines passes the sender's phase lines to w; its error Copy reports
// itself, and nothing else it prints is for the user.
type phaseLines struct {
	w   io.Writer
	bar *progress
	buf []byte
}

func (p *phaseLines) Write(b []byte) (int, error) {
	if p.w == nil {
		p.w = io.Discard
	}
	p.buf = append(p.buf, b...)
	for {
		i := bytes.IndexByte(p.buf, '\n')
		if i < 0 {
			break
		}
		line := p.buf[:i+1]
		switch {
		case bytes.HasPrefix(line, []byte("progress ")):
			if n, err := strconv.ParseInt(string(bytes.TrimSpace(line[9:])), 10, 64); err == nil && p.bar != nil {
				p.bar.set(n)
			}
		case bytes.HasPrefix(line, []byte("pausing ")) || bytes.HasPrefix(line, []byte("sending ")):
			p.w.Write(line)
		}
		p.buf = p.buf[i+1:]
	}
	if len(p.buf) > 4096 {
		p.buf = p.buf[:0]
	}
	return len(b), nil
}

// progress shows bytes sent, rate and time left.
type progress struct {
	mu       sync.Mutex
	w        io.Writer
	terminal bool
	total    int64
	n        int64
	start    time.Time
	last     time.Time
	what     string
}

// set records that the sender has sent n bytes of file contents.
func (p *progress) set(n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.n == 0 {
		p.start = time.Now() // the rate counts from the first byte, not from the pause
	}
	p.n = n
	if p.w != nil && p.terminal && time.Since(p.last) > 200*time.Millisecond {
		p.last = time.Now()
		fmt.Fprintf(p.w, "\r%s\033[K", p.line())
	}
}

func (p *progress) sent() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}

func (p *progress) line() string {
	el := time.Since(p.start).Seconds()
	rate := 0.0
	if el > 0 {
		rate = float64(p.n) / el
	}
	s := fmt.Sprintf("%s: %s", p.what, units.BytesSize(float64(p.n)))
	if p.total > 0 {
		pct := min(100, 100*float64(p.n)/float64(p.total))
		s += fmt.Sprintf(" of ~%s (%.0f%%)", units.BytesSize(float64(p.total)), pct)
	}
	s += fmt.Sprintf(", %s/s", units.BytesSize(rate))
	if p.total > p.n && rate > 0 {
		s += ", about " + units.HumanDuration(time.Duration(float64(p.total-p.n)/rate*float64(time.Second))) + " left"
	}
	return s
}

func (p *progress) done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.w == nil {
		return
	}
	p.total = p.n
	if p.terminal {
		fmt.Fprintf(p.w, "\r%s\033[K\n", p.line())
	} else {
		fmt.Fprintln(p.w, p.line())
	}
}
