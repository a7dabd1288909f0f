package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/jsonmessage"
	"github.com/docker/docker/pkg/stdcopy"
	"github.com/moby/term"

	"github.com/mlc-lab/mlc/errs"
)

// Container is what mlc knows of one container.
type Container struct {
	ID      string            `json:"id"`
	Name    string            `json:"docker_name"`
	Image   string            `json:"image"`
	ImageID string            `json:"image_id"` // sha256:... of the image it was created from
	State   string            `json:"state"`    // created, running, exited, ...
	Status  string            `json:"status"`   // the engine's words: "Up 3 minutes"
	Created time.Time         `json:"created"`
	Labels  map[string]string `json:"labels"`
	Ports   []Port            `json:"ports,omitempty"`
	Mounts  []Mount           `json:"mounts,omitempty"` // bind mounts only
}

// Managed is whether mlc created c.
func (c Container) Managed() bool { return c.Labels[LabelManaged] == "true" }

// Running is whether c's processes exist (running, restarting or paused):
// it uses its resources and GPUs, cannot be started, and can be stopped.
func (c Container) Running() bool {
	return c.State == "running" || c.State == "restarting" || c.State == "paused"
}

// Engine is the narrow interface the rest of mlc uses.
type Engine interface {
	ImageExists(ctx context.Context, ref string) (bool, error)
	Pull(ctx context.Context, ref string, progress io.Writer) error
	Create(ctx context.Context, s Spec) (string, error)
	Start(ctx context.Context, id string) error
	Stop(ctx context.Context, id string, timeout int) error
	Kill(ctx context.Context, id string) error
	Remove(ctx context.Context, id string, force bool) error
	// List returns mlc-managed containers, those of user only when user != "".
	List(ctx context.Context, user string) ([]Container, error)
	Exec(ctx context.Context, id string, o ExecOptions) (int, error)
	Logs(ctx context.Context, id string, o LogOptions) error
	// SetRestart turns the container's restart policy on (unless-stopped)
	// or off (no): a container whose GPUs were released must not be started
	// again by the engine itself (after a daemon restart), only by mlc.
	SetRestart(ctx context.Context, id string, on bool) error
	// SecurityOptions are the engine's security options as `docker info`
	// shows them ("name=userns", "name=rootless", ...).
	SecurityOptions(ctx context.Context) ([]string, error)
	// EnsureNetwork returns the id of the mlc bridge network s.Name, creating
	// it when missing (see network.go).
	EnsureNetwork(ctx context.Context, s NetworkSpec) (string, error)
	// Networks lists all networks with their IPv4 subnets.
	Networks(ctx context.Context) ([]Network, error)
	// RemoveNetwork removes an mlc network no container is on; in use is
	// errs.Conflict, missing errs.NotFound.
	RemoveNetwork(ctx context.Context, name string) error
	// ListAll returns every container of the engine, mlc's or not, as List
	// does: what a GPU process's container id is confirmed against, and what
	// cleanup plans over.
	ListAll(ctx context.Context) ([]Container, error)
	// Runtime is what the monitor needs of one container: its init process's
	// host pid (0 when not running), start time and writable layer.
	Runtime(ctx context.Context, id string) (Runtime, error)
	// LayerSize is the size of the container's writable layer as the engine
	// computes it (slow: the engine walks the layer); used only where the
	// storage driver has no upper directory to measure.
	LayerSize(ctx context.Context, id string) (int64, error)
	// Images lists every image of the engine (the heads, not intermediate
	// layers), tagged or dangling, used or not.
	Images(ctx context.Context) ([]Image, error)
	// RemoveImage removes one image by id, never forced and never pruning
	// its untagged parents: an image any container uses (running or not),
	// or one with several tags, is errs.Conflict; a missing one
	// errs.NotFound.
	RemoveImage(ctx context.Context, id string) error
	// ImageIDOf is the id (sha256:...) of a local image reference (a name,
	// name:tag or id); errs.NotFound when there is no such image.
	ImageIDOf(ctx context.Context, ref string) (string, error)
}

// Image is one image of the engine.
type Image struct {
	ID       string            `json:"id"`   // sha256:...
	Tags     []string          `json:"tags"` // repo:tag names; none when dangling
	Created  time.Time         `json:"created"`
	Dangling bool              `json:"dangling"` // no tags (or only <none>:<none>)
	Labels   map[string]string `json:"labels"`
}

// Runtime is a container's process and storage facts.
type Runtime struct {
	Pid       int
	StartedAt time.Time
	// FinishedAt is when its last run ended; zero when it never ran to an
	// end (a running container keeps the end of its previous run).
	FinishedAt time.Time
	// UpperDir is the host directory of the writable layer (overlay2's
	// UpperDir); "" for other storage drivers.
	UpperDir string
}

// Client is the Engine backed by the Docker SDK.
type Client struct {
	api  *client.Client
	host string
}

var _ Engine = (*Client)(nil)

// New connects per DOCKER_HOST (or the default socket), negotiating the API
// version so older daemons (API 1.41) work. It does not contact the engine.
func New() (*Client, error) {
	c, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, errs.Wrap(errs.Engine, err, "docker client")
	}
	return &Client{api: c, host: c.DaemonHost()}, nil
}

// Close releases the connection.
func (c *Client) Close() error { return c.api.Close() }

// classify gives an SDK error the kind a user understands.
func (c *Client) classify(err error, what string) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	switch {
	case errors.Is(err, context.Canceled):
		return errs.Wrap(errs.Interrupted, err, "%s", what)
	case strings.Contains(msg, "permission denied") && strings.Contains(msg, "docker"):
		return errs.New(errs.Permission, "permission denied on the Docker socket (%s): run mlc through sudo (sudo mlc ...); users are not in the docker group", c.host)
	case client.IsErrConnectionFailed(err) || strings.Contains(msg, "connection refused") || strings.Contains(msg, "no such file or directory"):
		return errs.New(errs.Engine, "cannot reach the Docker engine at %s: is dockerd running?", c.host)
	case errdefs.IsNotFound(err):
		return errs.Wrap(errs.NotFound, err, "%s", what)
	case errdefs.IsConflict(err):
		return errs.Wrap(errs.Conflict, err, "%s", what)
	case errdefs.IsInvalidArgument(err):
		return errs.Wrap(errs.Usage, err, "%s", what)
	case errdefs.IsPermissionDenied(err) || errdefs.IsUnauthorized(err):
		return errs.Wrap(errs.Permission, err, "%s", what)
	case strings.Contains(msg, "port is already allocated") || strings.Contains(msg, "address already in use"):
		return errs.Wrap(errs.Conflict, err, "%s: port already taken", what)
	}
	return errs.Wrap(errs.Internal, err, "%s", what)
}

// Ping checks that the engine answers.
func (c *Client) Ping(ctx context.Context) error {
	_, err := c.api.Ping(ctx)
	return c.classify(err, "ping")
}

// ImageExists is whether ref is present locally.
func (c *Client) ImageExists(ctx context.Context, ref string) (bool, error) {
	_, err := c.api.ImageInspect(ctx, ref)
	if err == nil {
		return true, nil
	}
	if errdefs.IsNotFound(err) {
		return false, nil
	}
	return false, c.classify(err, "image "+ref)
}

// Pull fetches ref, drawing the Docker CLI's progress display on progress.
func (c *Client) Pull(ctx context.Context, ref string, progress io.Writer) error {
	rc, err := c.api.ImagePull(ctx, ref, image.PullOptions{})
	if err != nil {
		return errs.New(errs.Image, "image %s is not present and cannot be pulled: %v", ref, firstLine(err.Error()))
	}
	defer rc.Close()
	fd, isTerm := term.GetFdInfo(progress)
	if err := jsonmessage.DisplayJSONMessagesStream(rc, progress, fd, isTerm, nil); err != nil {
		return errs.New(errs.Image, "pulling %s failed: %v", ref, firstLine(err.Error()))
	}
	return nil
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

// Create creates (does not start) the container.
func (c *Client) Create(ctx context.Context, s Spec) (string, error) {
	r := s.Request()
	resp, err := c.api.ContainerCreate(ctx, r.Config, r.HostConfig, r.Networking, nil, r.Name)
	if err != nil {
		return "", c.classify(err, "creating "+s.Name)
	}
	return resp.ID, nil
}

// Start starts a container.
func (c *Client) Start(ctx context.Context, id string) error {
	return c.classify(c.api.ContainerStart(ctx, id, container.StartOptions{}), "starting "+short(id))
}

// Stop stops a container, killing it after timeout seconds.
func (c *Client) Stop(ctx context.Context, id string, timeout int) error {
	return c.classify(c.api.ContainerStop(ctx, id, container.StopOptions{Timeout: &timeout}), "stopping "+short(id))
}

// Kill sends SIGKILL.
func (c *Client) Kill(ctx context.Context, id string) error {
	err := c.api.ContainerKill(ctx, id, "KILL")
	if err != nil && errdefs.IsConflict(err) { // not running
		return errs.New(errs.Conflict, "container is not running")
	}
	return c.classify(err, "killing "+short(id))
}

// Remove removes a container (and its anonymous volumes: none, mlc uses binds).
func (c *Client) Remove(ctx context.Context, id string, force bool) error {
	return c.classify(c.api.ContainerRemove(ctx, id, container.RemoveOptions{Force: force}), "removing "+short(id))
}

// List returns managed containers, of user only when user != "".
func (c *Client) List(ctx context.Context, user string) ([]Container, error) {
	f := filters.NewArgs(filters.Arg("label", LabelManaged+"=true"))
	if user != "" {
		f.Add("label", LabelUser+"="+user)
	}
	return c.list(ctx, f)
}

// ListAll implements Engine.
func (c *Client) ListAll(ctx context.Context) ([]Container, error) {
	return c.list(ctx, filters.NewArgs())
}

// list is every container the filters let through, with its bind mounts and
// published ports.
func (c *Client) list(ctx context.Context, f filters.Args) ([]Container, error) {
	list, err := c.api.ContainerList(ctx, container.ListOptions{All: true, Filters: f})
	if err != nil {
		return nil, c.classify(err, "listing containers")
	}
	out := make([]Container, 0, len(list))
	for _, s := range list {
		ct := Container{ID: s.ID, Image: s.Image, ImageID: s.ImageID, State: s.State, Status: s.Status,
			Created: time.Unix(s.Created, 0), Labels: s.Labels}
		if len(s.Names) > 0 {
			ct.Name = strings.TrimPrefix(s.Names[0], "/")
		}
		for _, m := range s.Mounts {
			if m.Type == "bind" {
				ct.Mounts = append(ct.Mounts, Mount{Source: m.Source, Target: m.Destination, ReadOnly: !m.RW})
			}
		}
		for _, p := range s.Ports {
			if p.PublicPort != 0 {
				ct.Ports = append(ct.Ports, Port{HostIP: p.IP, HostPort: fmt.Sprint(p.PublicPort), ContainerPort: fmt.Sprint(p.PrivatePort), Proto: p.Type})
			}
		}
		out = append(out, ct)
	}
	return out, nil
}

// Runtime implements Engine.
func (c *Client) Runtime(ctx context.Context, id string) (Runtime, error) {
	r, err := c.api.ContainerInspect(ctx, id)
	if err != nil {
		return Runtime{}, c.classify(err, "inspecting "+short(id))
	}
	var rt Runtime
	if r.State != nil {
		if r.State.Running {
			rt.Pid = r.State.Pid
		}
		rt.StartedAt = engineTime(r.State.StartedAt)
		rt.FinishedAt = engineTime(r.State.FinishedAt)
	}
	if r.GraphDriver.Name == "overlay2" || r.GraphDriver.Name == "overlay" {
		rt.UpperDir = r.GraphDriver.Data["UpperDir"]
	}
	return rt, nil
}

// engineTime parses a time the engine gives in RFC 3339; its "never"
// (0001-01-01T00:00:00Z) and anything unparsable are the zero time.
func engineTime(v string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil || t.Year() <= 1 {
		return time.Time{}
	}
	return t
}

// Images implements Engine.
func (c *Client) Images(ctx context.Context) ([]Image, error) {
	list, err := c.api.ImageList(ctx, image.ListOptions{All: false})
	if err != nil {
		return nil, c.classify(err, "listing images")
	}
	out := make([]Image, 0, len(list))
	for _, s := range list {
		im := Image{ID: s.ID, Created: time.Unix(s.Created, 0), Labels: s.Labels}
		for _, t := range s.RepoTags {
			if t != "<none>:<none>" && t != "" {
				im.Tags = append(im.Tags, t)
			}
		}
		im.Dangling = len(im.Tags) == 0
		if im.Labels == nil {
			im.Labels = map[string]string{}
		}
		out = append(out, im)
	}
	return out, nil
}

// RemoveImage implements Engine.
func (c *Client) RemoveImage(ctx context.Context, id string) error {
	_, err := c.api.ImageRemove(ctx, id, image.RemoveOptions{Force: false, PruneChildren: false})
	return c.classify(err, "removing image "+shortImage(id))
}

// ImageIDOf implements Engine.
func (c *Client) ImageIDOf(ctx context.Context, ref string) (string, error) {
	r, err := c.api.ImageInspect(ctx, ref)
	if err != nil {
		return "", c.classify(err, "image "+ref)
	}
	return r.ID, nil
}

// LayerSize implements Engine.
func (c *Client) LayerSize(ctx context.Context, id string) (int64, error) {
	r, _, err := c.api.ContainerInspectWithRaw(ctx, id, true)
	if err != nil {
		return 0, c.classify(err, "inspecting "+short(id))
	}
	if r.SizeRw == nil {
		return 0, errs.New(errs.Unavailable, "the engine gave no size for %s", short(id))
	}
	return *r.SizeRw, nil
}

// SetRestart implements Engine.
func (c *Client) SetRestart(ctx context.Context, id string, on bool) error {
	p := container.RestartPolicy{Name: container.RestartPolicyDisabled}
	if on {
		p.Name = container.RestartPolicyUnlessStopped
	}
	_, err := c.api.ContainerUpdate(ctx, id, container.UpdateConfig{RestartPolicy: p})
	return c.classify(err, "restart policy of "+short(id))
}

// SecurityOptions implements Engine.
func (c *Client) SecurityOptions(ctx context.Context) ([]string, error) {
	info, err := c.api.Info(ctx)
	if err != nil {
		return nil, c.classify(err, "engine info")
	}
	return info.SecurityOptions, nil
}

// Inspect returns one container by id or Docker name.
func (c *Client) Inspect(ctx context.Context, id string) (Container, error) {
	r, err := c.api.ContainerInspect(ctx, id)
	if err != nil {
		return Container{}, c.classify(err, "inspecting "+short(id))
	}
	return containerOf(r), nil
}

// containerOf is what mlc knows of an inspected container (Detail adds its
// mounts, ports and environment).
func containerOf(r container.InspectResponse) Container {
	ct := Container{ID: r.ID, Name: strings.TrimPrefix(r.Name, "/"), Image: r.Config.Image, ImageID: r.Image, Labels: r.Config.Labels}
	if r.State != nil {
		ct.State = r.State.Status
	}
	ct.Created, _ = time.Parse(time.RFC3339Nano, r.Created)
	return ct
}

// ExecOptions are the settings of a command run in a container.
type ExecOptions struct {
	Cmd     []string
	User    string
	Env     []string
	WorkDir string
	TTY     bool // allocate a terminal; stdin should then be a terminal
	Stdin   io.Reader
	Stdout  io.Writer
	Stderr  io.Writer
}

// Exec runs a command and returns its exit code. With TTY, a terminal on
// Stdin is put in raw mode and window size changes are forwarded.
func (c *Client) Exec(ctx context.Context, id string, o ExecOptions) (int, error) {
	ec, err := c.api.ContainerExecCreate(ctx, id, container.ExecOptions{
		Cmd: o.Cmd, User: o.User, Env: o.Env, WorkingDir: o.WorkDir, Tty: o.TTY,
		AttachStdin: o.Stdin != nil, AttachStdout: true, AttachStderr: true,
	})
	if err != nil {
		return -1, c.classify(err, "exec in "+short(id))
	}
	var size *[2]uint
	var restore func()
	if o.TTY {
		if fd, isTerm := term.GetFdInfo(o.Stdin); isTerm {
			if ws, err := term.GetWinsize(fd); err == nil {
				size = &[2]uint{uint(ws.Height), uint(ws.Width)}
			}
			if st, err := term.SetRawTerminal(fd); err == nil {
				restore = func() { _ = term.RestoreTerminal(fd, st) }
			}
			stop := watchResize(fd, func(h, w uint) {
				_ = c.api.ContainerExecResize(ctx, ec.ID, container.ResizeOptions{Height: h, Width: w})
			})
			defer stop()
		}
	}
	if restore != nil {
		defer restore()
	}
	hj, err := c.api.ContainerExecAttach(ctx, ec.ID, container.ExecAttachOptions{Tty: o.TTY, ConsoleSize: size})
	if err != nil {
		return -1, c.classify(err, "attaching to "+short(id))
	}
	defer hj.Close()
	if size != nil {
		_ = c.api.ContainerExecResize(ctx, ec.ID, container.ResizeOptions{Height: size[0], Width: size[1]})
	}
	outDone := make(chan error, 1)
	go func() {
		var err error
		if o.TTY {
			_, err = io.Copy(o.Stdout, hj.Reader)
		} else {
			_, err = stdcopy.StdCopy(o.Stdout, o.Stderr, hj.Reader)
		}
		outDone <- err
	}()
	if o.Stdin != nil {
		go func() {
			_, _ = io.Copy(hj.Conn, o.Stdin)
			_ = hj.CloseWrite()
		}()
	}
	select {
	case err = <-outDone:
	case <-ctx.Done():
		return -1, c.classify(ctx.Err(), "exec")
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return -1, c.classify(err, "exec output")
	}
	// The exec may be a moment from reporting its exit code after its output closes.
	deadline := time.Now().Add(10 * time.Second)
	for {
		ins, err := c.api.ContainerExecInspect(ctx, ec.ID)
		if err != nil {
			return -1, c.classify(err, "exec status")
		}
		if !ins.Running || time.Now().After(deadline) {
			return ins.ExitCode, nil
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// LogOptions select what Logs prints.
type LogOptions struct {
	Follow bool
	Tail   string // "all" or a number
	Stdout io.Writer
	Stderr io.Writer
	TTY    bool // the container has a terminal: output is not multiplexed
}

// Logs copies the container's output.
func (c *Client) Logs(ctx context.Context, id string, o LogOptions) error {
	rc, err := c.api.ContainerLogs(ctx, id, container.LogsOptions{ShowStdout: true, ShowStderr: true, Follow: o.Follow, Tail: o.Tail})
	if err != nil {
		return c.classify(err, "logs of "+short(id))
	}
	defer rc.Close()
	if o.TTY {
		_, err = io.Copy(o.Stdout, rc)
	} else {
		_, err = stdcopy.StdCopy(o.Stdout, o.Stderr, rc)
	}
	if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, io.EOF) {
		return c.classify(err, "logs")
	}
	return nil
}

func short(id string) string {
	if len(id) > 12 && !strings.Contains(id, "-") {
		return id[:12]
	}
	return id
}

// shortImage is an image id as the engine abbreviates it (12 hex digits
// after sha256:); other references as they are.
func shortImage(id string) string {
	if h, ok := strings.CutPrefix(id, "sha256:"); ok && len(h) > 12 {
		return h[:12]
	}
	return id
}

// StdinIsTerminal is whether f is a terminal (for choosing TTY mode).
func StdinIsTerminal(f *os.File) bool {
	_, isTerm := term.GetFdInfo(f)
	return isTerm
}
