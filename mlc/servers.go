package main

// Several servers: `mlc servers`, `mlc copy`, `mlc list --servers` and the
// global --server flag run as the user who typed them (never through sudo):
// they reach other servers with `ssh SERVER mlc ...` as that user. The
// hidden commands server-info, copy-send and copy-receive are their other
// ends, run (elevated as usual) by each server's own mlc.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	units "github.com/docker/go-units"
	"github.com/mlc-lab/mlc/config"
	"github.com/mlc-lab/mlc/containers"
	"github.com/mlc-lab/mlc/engine"
	"github.com/mlc-lab/mlc/errs"
	"github.com/mlc-lab/mlc/identity"
	"github.com/mlc-lab/mlc/servers"
	"github.com/urfave/cli/v2"
)

// serverFlag is the global --server.
var serverFlag = &cli.StringFlag{Name: "server", Usage: "run the command on server `NAME` of the policy's servers list (create: any picks one)"}

// surveyTimeout bounds each server's answer in servers, list --servers and create --server any.
const surveyTimeout = 15 * time.Second

// userSide is whether a command line (after dispatch) runs as the user who
// typed it rather than through sudo: the global --server, and the commands
// that reach other servers.
func userSide(app *cli.App, args []string) bool {
	norm, err := normalize(app, args)
	if err != nil {
		return false
	}
	if _, _, ok := takeServer(norm); ok {
		return true
	}
	path, flags := commandOf(app, norm)
	switch {
	case len(path) == 0:
		return false
	case path[0] == "servers" || path[0] == "copy":
		return !hasHelp(flags)
	case path[0] == "list" || path[0] == "ls":
		return hasFlag(flags, "servers")
	}
	return false
}

// commandOf splits a normalized command line into its command path and
// the words after it.
func commandOf(app *cli.App, norm []string) (path, rest []string) {
	i := 1
	for i < len(norm) && strings.HasPrefix(norm[i], "-") {
		i += max(1, flagWidth(app.Flags, norm[i:]))
	}
	cmds := app.Commands
	for i < len(norm) {
		c := findCommand(cmds, norm[i])
		if c == nil {
			break
		}
		path = append(path, c.Name)
		i++
		cmds = c.Subcommands
		if len(cmds) == 0 {
			break
		}
	}
	return path, norm[i:]
}

func hasFlag(args []string, name string) bool {
	for _, a := range args {
		if a == "--" {
			return false
		}
		n, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if strings.HasPrefix(a, "-") && n == name {
			return true
		}
	}
	return false
}

func hasHelp(args []string) bool { return hasFlag(args, "h") || hasFlag(args, "help") }

// takeServer removes the global --server from a normalized command line
// (global flags come first) and returns its value.
func takeServer(norm []string) (string, []string, bool) {
	for i := 1; i < len(norm); i++ {
		a := norm[i]
		if !strings.HasPrefix(a, "-") || a == "--" {
			break
		}
		if v, ok := strings.CutPrefix(a, "--server="); ok {
			return v, append(append([]string{}, norm[:i]...), norm[i+1:]...), true
		}
		if a == "--server" || a == "-server" {
			if i+1 >= len(norm) {
				return "", norm, true
			}
			return norm[i+1], append(append([]string{}, norm[:i]...), norm[i+2:]...), true
		}
	}
	return "", norm, false
}

// notThroughSudo refuses user-side commands that sudo started for a user:
// they would reach other servers with root's keys, not the user's.
func notThroughSudo() error {
	if identity.ProcessEnv().ForUser() {
		return errs.New(errs.Usage, "run this without sudo: it reaches other servers over ssh as you, with your own keys")
	}
	return nil
}

// runner is the server list of the policy the user's own mlc sees.
func (s *session) runner(c *cli.Context) (*servers.Runner, error) {
	if err := notThroughSudo(); err != nil {
		return nil, err
	}
	cfg, err := config.LoadFrom(c.String("config"))
	if err != nil {
		return nil, err
	}
	return servers.NewRunner(cfg)
}

// routeServer runs a command line with the global --server: on this server
// (the flag dropped, mlc run again as usual) or on another through ssh, its
// exit code passed through. It returns false when there is no --server.
func routeServer(args []string) (int, bool) {
	app := newApp(context.Background(), nil, io.Discard, io.Discard)
	norm, err := normalize(app, dispatch(args))
	if err != nil {
		return 0, false
	}
	name, rest, ok := takeServer(norm)
	if !ok {
		return 0, false
	}
	fail := func(err error) (int, bool) {
		fmt.Fprintln(os.Stderr, "mlc: "+oneLine(err.Error()))
		return errs.KindOf(err).ExitCode(), true
	}
	if err := notThroughSudo(); err != nil {
		return fail(err)
	}
	if name == "" {
		return fail(errs.New(errs.Usage, "--server needs a server name (or any, for create)"))
	}
	cfgFlag := ""
	for i := 1; i < len(rest); i++ {
		if v, ok := strings.CutPrefix(rest[i], "--config="); ok {
			cfgFlag = v
		} else if isConfigFlag(rest[i]) && i+1 < len(rest) {
			cfgFlag = rest[i+1]
		}
	}
	cfg, err := config.LoadFrom(cfgFlag)
	if err != nil {
		return fail(err)
	}
	r, err := servers.NewRunner(cfg)
	if err != nil {
		return fail(err)
	}
	path, after := commandOf(app, rest)
	if len(path) == 0 {
		return fail(errs.New(errs.Usage, "--server needs a command to run there (mlc --server NAME list)"))
	}
	if cfgFlag != "" {
		return fail(errs.New(errs.Usage, "--config names a file on this server; it cannot go with --server"))
	}
	// Ctrl-C and hang-ups are for the command there (ssh passes them on);
	// this process only waits for it.
	signal.Notify(make(chan os.Signal, 1), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGPIPE)
	var target config.Server
	if name == "any" {
		if path[0] != "create" {
			return fail(errs.New(errs.Usage, "--server any is for create only; name a server for %s (servers: %s)", path[0], strings.Join(r.Names(), ", ")))
		}
		gpus := 0
		for i, a := range after {
			if v, ok := strings.CutPrefix(a, "--gpus="); ok {
				gpus, _ = strconv.Atoi(v)
			} else if (a == "--gpus" || a == "-gpus") && i+1 < len(after) {
				gpus, _ = strconv.Atoi(after[i+1])
			}
		}
		if len(r.Servers) == 0 {
			return fail(errs.New(errs.NotFound, "no servers are listed in the policy (servers:), so there is none to pick"))
		}
		best, why, err := servers.Pick(r.Survey(context.Background(), surveyTimeout), gpus)
		if err != nil {
			return fail(err)
		}
		fmt.Fprintf(os.Stderr, "mlc: creating on %s: %s\n", best.Server, why)
		target, _ = r.Find(best.Server)
	} else if target, err = r.Find(name); err != nil {
		return fail(err)
	}
	if r.IsHere(target) {
		// This server: mlc again without the flag, elevating as usual. Its
		// own path as argv[0] (never a link name like mlc-list, which would
		// dispatch to its command a second time).
		err := syscall.Exec(r.Self, append([]string{r.Self}, rest[1:]...), os.Environ())
		return fail(errs.Wrap(errs.Internal, err, "running mlc"))
	}
	code, err := r.Forward(target, rest[1:], path[0] == "open" && engine.StdinIsTerminal(os.Stdin))
	if err != nil {
		return fail(err)
	}
	return code, true
}

func serverCommands(s *session) []*cli.Command {
	return []*cli.Command{
		{
			Name:  "servers",
			Usage: "the lab's servers: free GPUs, your quota left, load, memory, disk, your containers",
			Description: `Asks every server of the policy's servers list at once, over ssh as you (your
own keys; the server's host key must be known), each within 15 seconds: one that
does not answer is shown as such. Runs without sudo.

Examples:
   mlc servers
   mlc servers --json`,
			Flags: []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print JSON"}},
			Action: func(c *cli.Context) error {
				if err := argsBetween(c, 0, 0, "mlc servers [--json]"); err != nil {
					return err
				}
				r, err := s.runner(c)
				if err != nil {
					return err
				}
				if len(r.Servers) == 0 {
					return errs.New(errs.NotFound, "no servers are listed in the policy (servers:); see docs/admin-guide.md")
				}
				res := r.Survey(s.ctx, surveyTimeout)
				if c.Bool("json") {
					if err := s.json(res); err != nil {
						return err
					}
					if n := unanswered(res); n > 0 {
						return errs.New(errs.Partial, "%d of %d servers did not answer", n, len(res))
					}
					return nil
				}
				return printServers(s, res)
			},
		},
		{
			Name: "server-info", Hidden: true, Usage: "this server for the caller, as JSON (what mlc servers asks each server)",
			Flags: []cli.Flag{&cli.BoolFlag{Name: "json"}},
			Action: func(c *cli.Context) error {
				m, a, err := s.managerActor(c)
				if err != nil {
					return err
				}
				info, err := m.ServerInfo(s.ctx, a, version)
				if err != nil {
					return err
				}
				return s.json(info)
			},
		},
		copyCommand(s),
		{
			Name: "copy-send", Hidden: true, ArgsUsage: "NAME", Usage: "the source half of mlc copy",
			Flags: []cli.Flag{
				&cli.BoolFlag{Name: "describe", Usage: "print the container's settings as JSON"},
			},
			Action: func(c *cli.Context) error {
				if err := argsBetween(c, 1, 1, "mlc copy-send NAME [--describe]"); err != nil {
					return err
				}
				m, a, err := s.managerActor(c)
				if err != nil {
					return err
				}
				if c.Bool("describe") {
					d, err := m.Describe(s.ctx, a, c.Args().First())
					if err != nil {
						return err
					}
					return json.NewEncoder(s.out).Encode(d)
				}
				w := bufio.NewWriterSize(s.out, 1<<20)
				if err := m.CopyOut(s.ctx, a, c.Args().First(), w); err != nil {
					return err
				}
				return w.Flush()
			},
		},
		{
			Name: "copy-receive", Hidden: true, Usage: "the target half of mlc copy",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "as", Usage: "the new container's name"},
				&cli.StringFlag{Name: "workspace", Usage: "its workspace's name"},
				&cli.BoolFlag{Name: "preflight", Usage: "check the settings on stdin; print what this server has"},
			},
			Action: func(c *cli.Context) error {
				if err := argsBetween(c, 0, 0, "mlc copy-receive --as NAME [--workspace NAME] [--preflight]"); err != nil {
					return err
				}
				m, a, err := s.managerActor(c)
				if err != nil {
					return err
				}
				in := bufio.NewReaderSize(s.stdin, 1<<20)
				if c.Bool("preflight") {
					var set containers.CopySettings
					if err := json.NewDecoder(io.LimitReader(in, 1<<20)).Decode(&set); err != nil {
						return errs.New(errs.Usage, "copy-receive --preflight: the settings on stdin are unreadable: %v", err)
					}
					ws := c.String("workspace")
					if ws == "" {
						ws = set.Workspace
					}
					rep, err := m.Preflight(s.ctx, a, &set, c.String("as"), ws)
					if err != nil {
						return err
					}
					return json.NewEncoder(s.out).Encode(rep)
				}
				return m.CopyIn(s.ctx, a, c.String("as"), c.String("workspace"), in, s.out)
			},
		},
	}
}

func copyCommand(s *session) *cli.Command {
	return &cli.Command{
		Name:      "copy",
		Usage:     "copy (or move) a container of yours to another server",
		ArgsUsage: "NAME --to SERVER",
		Description: `Makes a container on SERVER from this one: the same catalogue image, CPUs
and memory (lowered to your limits there, if they are smaller), GPU count, ports
(the same host ports where free there) and -e variables, with its files as they
are now; other limits are SERVER's. The copy is started there. Only the container's own changes travel (the server
already has the image, or pulls it), then the workspace (rsync over ssh, unless
the policy says workspaces are shared between servers). SERVER's mlc checks its
own policy: its GPUs come from its own ledger, within your quota there.

--move removes the container here once the copy exists and started there. An
interrupted copy (Ctrl-C, a lost connection) leaves this container as it was
and nothing on SERVER. Runs without sudo; ssh uses your own keys.

Examples:
   mlc copy thesis --to gpu2
   mlc copy thesis --to gpu2 --as thesis-big --move
   mlc copy nb --to gpu3 --workspace nb-copy --json`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "to", Usage: "the server to copy to (`SERVER`)"},
			&cli.StringFlag{Name: "as", Usage: "the copy's `NAME` there (default: the same)"},
			&cli.StringFlag{Name: "workspace", Aliases: []string{"w"}, Usage: "the copy's workspace `NAME` there (default: the same)"},
			&cli.BoolFlag{Name: "move", Usage: "remove the container here once the copy started there"},
			&cli.BoolFlag{Name: "json", Usage: "print the result as JSON"},
		},
		Action: func(c *cli.Context) error {
			if err := argsBetween(c, 1, 1, "mlc copy NAME --to SERVER [--as NAME] [--move]"); err != nil {
				return err
			}
			if c.String("to") == "" {
				return errs.New(errs.Usage, "which server? mlc copy NAME --to SERVER (see mlc servers)")
			}
			r, err := s.runner(c)
			if err != nil {
				return err
			}
			to, err := r.Find(c.String("to"))
			if err != nil {
				return err
			}
			res, err := r.Copy(s.ctx, servers.CopyRequest{Name: c.Args().First(), To: to, As: c.String("as"),
				Workspace: c.String("workspace"), Move: c.Bool("move"), Progress: s.errOut, Terminal: stderrTerminal(s.errOut)})
			if err != nil {
				return err
			}
			if c.Bool("json") {
				return s.json(res)
			}
			verb := "copied"
			if res.Moved {
				verb = "moved"
			}
			fmt.Fprintf(s.out, "%s %s to %s as %s in %.1fs (%s of changes", verb, c.Args().First(), res.Server, res.Name,
				res.Seconds, units.BytesSize(float64(res.Bytes)))
			if res.Synced {
				fmt.Fprint(s.out, "; workspace synced")
			}
			fmt.Fprintln(s.out, ")")
			if len(res.GPUs) > 0 {
				fmt.Fprintf(s.out, "GPUs there: %s\n", strings.Join(res.GPUs, ", "))
			}
			if len(res.Publish) > 0 {
				fmt.Fprintf(s.out, "ports there: %s\n", strings.Join(res.Publish, ", "))
			}
			for _, n := range res.Notes {
				fmt.Fprintln(s.out, "note: "+n)
			}
			fmt.Fprintf(s.out, "open it with: mlc --server %s open %s\n", res.Server, res.Name)
			return nil
		},
	}
}

func stderrTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && engine.StdinIsTerminal(f)
}

func printServers(s *session, res []servers.Result) error {
	t := s.table()
	fmt.Fprintln(t, "SERVER\tGPUS FREE\tYOUR GPUS LEFT\tLOAD\tMEMORY FREE\tDISK FREE\tYOUR CONTAINERS\tVERSION")
	var down []string
	for _, r := range res {
		name := r.Server
		if r.Here {
			name += " (here)"
		}
		if r.Info == nil {
			fmt.Fprintf(t, "%s\t-\t-\t-\t-\t-\t-\tno answer\n", name)
			down = append(down, r.Error)
			continue
		}
		i := r.Info
		ctrs := "-"
		if len(i.Containers) > 0 {
			ctrs = fmt.Sprintf("%d (%d running)", len(i.Containers), i.Running)
		}
		fmt.Fprintf(t, "%s\t%d/%d\t%d of %d\t%.2f/%d\t%s\t%s\t%s\t%s\n", name, i.GPUsFree, i.GPUsTotal, i.QuotaLeft, i.GPUQuota,
			i.Load1, i.CPUs, units.BytesSize(float64(i.MemAvailable)), units.BytesSize(float64(i.DiskFree)), ctrs, i.Version)
	}
	if err := t.Flush(); err != nil {
		return err
	}
	for _, d := range down {
		fmt.Fprintln(s.errOut, "mlc: "+oneLine(d))
	}
	if len(down) > 0 {
		return errs.New(errs.Partial, "%d of %d servers did not answer", len(down), len(res))
	}
	return nil
}

func unanswered(res []servers.Result) int {
	n := 0
	for _, r := range res {
		if r.Info == nil {
			n++
		}
	}
	return n
}

// ServerRows is one server's containers in `mlc list --servers --json`.
type ServerRows struct {
	Server string           `json:"server"`
	Rows   []containers.Row `json:"containers"`
	Error  string           `json:"error,omitempty"`
}

// listServers is `mlc list --servers`: the caller's containers on every
// server, asked in parallel.
func listServers(s *session, c *cli.Context) error {
	r, err := s.runner(c)
	if err != nil {
		return err
	}
	if len(r.Servers) == 0 {
		return errs.New(errs.NotFound, "no servers are listed in the policy (servers:)")
	}
	var out []ServerRows
	for _, a := range r.All(s.ctx, surveyTimeout, "list", "--json") {
		o := ServerRows{Server: a.Server.Name, Rows: []containers.Row{}}
		err := a.Err
		if err == nil {
			err = json.Unmarshal(a.Out, &o.Rows)
		}
		if err != nil {
			o.Error = err.Error()
		}
		out = append(out, o)
	}
	failed := 0
	for _, o := range out {
		if o.Error != "" {
			failed++
		}
	}
	if c.Bool("json") {
		if err := s.json(out); err != nil {
			return err
		}
	} else {
		t := s.table()
		fmt.Fprintln(t, "SERVER\tNAME\tIMAGE\tSTATUS\tCPUS\tMEMORY\tGPUS\tCREATED")
		for _, o := range out {
			for _, row := range o.Rows {
				gpus := "-"
				if len(row.GPUs) > 0 {
					gpus = strconv.Itoa(len(row.GPUs))
				}
				fmt.Fprintf(t, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s ago\n", o.Server, row.Name, row.Image, row.Status, row.CPUs, row.Memory,
					gpus, units.HumanDuration(time.Since(row.Created)))
			}
		}
		if err := t.Flush(); err != nil {
			return err
		}
		for _, o := range out {
			if o.Error != "" {
				fmt.Fprintln(s.errOut, "mlc: "+oneLine(o.Error))
			}
		}
	}
	if failed > 0 {
		return errs.New(errs.Partial, "%d of %d servers did not answer", failed, len(out))
	}
	return nil
}
