package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	units "github.com/docker/go-units"
	"github.com/mlc-lab/mlc/cleanup"
	"github.com/mlc-lab/mlc/config"
	"github.com/mlc-lab/mlc/containers"
	"github.com/mlc-lab/mlc/errs"
	"github.com/mlc-lab/mlc/monitor/history"
	"github.com/urfave/cli/v2"
)

var userFlag = &cli.StringFlag{Name: "user", Usage: "act for `USER` (admins only)"}

func containerCommands(s *session) []*cli.Command {
	return []*cli.Command{
		createCommand(s),
		{
			Name: "open", Usage: "a shell (or CMD) inside a container, as you; starts it when stopped",
			ArgsUsage: "NAME [-- CMD ARGS...]",
			Description: `Without CMD, opens an interactive login shell with a real terminal. With CMD,
runs it and exits with its exit code; when mlc itself fails (no such container,
a mount changed, ...) it exits 125, as docker run does, since CMD's own codes may be
anything. Without a terminal on stdin it works as a pipe.

Examples:
   mlc open thesis
   mlc open thesis -- python train.py --epochs 3
   echo 'print(1)' | mlc open thesis -- python`,
			Flags: []cli.Flag{userFlag},
			Action: func(c *cli.Context) error {
				args := c.Args().Slice()
				if len(args) == 0 {
					return errs.New(errs.Usage, "usage: mlc open NAME [-- CMD ARGS...]")
				}
				cmd := args[1:]
				if len(cmd) > 0 && cmd[0] == "--" {
					cmd = cmd[1:]
				}
				m, a, err := s.managerActor(c)
				if err != nil {
					return openFailed(cmd, err)
				}
				tty := s.stdinTerminal()
				code, err := m.Open(s.ctx, a, args[0], containers.OpenOptions{Cmd: cmd, TTY: tty, Stdin: s.stdin, Stdout: s.out, Stderr: s.errOut})
				if err != nil {
					return openFailed(cmd, err)
				}
				if code != 0 {
					return exitStatus(code)
				}
				return nil
			},
		},
		{
			Name: "list", Aliases: []string{"ls"}, Usage: "your containers (admins: --all for everyone's)",
			Description: `Examples:
   mlc list
   mlc list --json
   mlc list --all          (admins)
   mlc list --servers      yours on every server of the lab`,
			Flags: []cli.Flag{
				&cli.BoolFlag{Name: "all", Aliases: []string{"a"}, Usage: "every user's containers (admins)"},
				&cli.BoolFlag{Name: "servers", Usage: "yours on every server of the policy's servers list (runs without sudo, over ssh as you)"},
				&cli.BoolFlag{Name: "json", Usage: "print JSON"},
				&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "names only"},
				userFlag,
			},
			Action: func(c *cli.Context) error {
				if err := argsBetween(c, 0, 0, "mlc list [--all] [--json] [-q]"); err != nil {
					return err
				}
				if c.Bool("servers") {
					return listServers(s, c)
				}
				m, a, err := s.managerActor(c)
				if err != nil {
					return err
				}
				rows, err := m.List(s.ctx, a, c.Bool("all"))
				if err != nil {
					return err
				}
				s.forecast(m, rows)
				return printList(s, rows, c.Bool("all"), c.Bool("json"), c.Bool("quiet"))
			},
		},
		simpleCommand(s, "start", "start a stopped container", "mlc start thesis", nil,
			func(c *cli.Context, m *containers.Manager, a containers.Actor, name string) error {
				return m.Start(s.ctx, a, name)
			}),
		simpleCommand(s, "stop", "stop a container (SIGTERM, then SIGKILL after -t seconds)", "mlc stop thesis -t 30",
			[]cli.Flag{&cli.IntFlag{Name: "time", Aliases: []string{"t"}, Value: 10, Usage: "seconds to wait before killing"}},
			func(c *cli.Context, m *containers.Manager, a containers.Actor, name string) error {
				if c.Int("time") < 0 {
					return errs.New(errs.Usage, "-t must be 0 or more seconds")
				}
				return m.Stop(s.ctx, a, name, c.Int("time"))
			}),
		simpleCommand(s, "kill", "force-stop a container (SIGKILL)", "mlc kill thesis", nil,
			func(c *cli.Context, m *containers.Manager, a containers.Actor, name string) error {
				return m.Kill(s.ctx, a, name)
			}),
		withAlias(simpleCommand(s, "remove", "remove a container; its workspace and data stay", "mlc remove thesis --yes",
			[]cli.Flag{
				&cli.BoolFlag{Name: "yes", Aliases: []string{"y"}, Usage: "do not ask for confirmation"},
				&cli.BoolFlag{Name: "force", Aliases: []string{"f"}, Usage: "remove even when running (admins: even when protected)"},
			},
			func(c *cli.Context, m *containers.Manager, a containers.Actor, name string) error {
				if !c.Bool("yes") && s.stdinTerminal() {
					if _, err := m.Find(s.ctx, a, name); err != nil {
						return err
					}
					fmt.Fprintf(s.errOut, "Remove container %s? Its workspace and data stay. [y/N] ", name)
					line, _ := bufio.NewReader(s.stdin).ReadString('\n')
					if ans := strings.ToLower(strings.TrimSpace(line)); ans != "y" && ans != "yes" {
						return errs.New(errs.Canceled, "not removed")
					}
				}
				return m.Remove(s.ctx, a, name, c.Bool("force"))
			}), "rm"),
		simpleCommand(s, "logs", "print a container's output", "mlc logs thesis -f --tail 100",
			[]cli.Flag{
				&cli.BoolFlag{Name: "follow", Aliases: []string{"f"}, Usage: "keep printing new output"},
				&cli.IntFlag{Name: "tail", Value: -1, Usage: "only the last `N` lines"},
			},
			func(c *cli.Context, m *containers.Manager, a containers.Actor, name string) error {
				return m.Logs(s.ctx, a, name, containers.LogsOptions{Follow: c.Bool("follow"), Tail: c.Int("tail"), Out: s.out})
			}),
		simpleCommand(s, "protect", "keep cleanup and remove away from a container (admins)", "mlc protect thesis --user alice", nil,
			func(c *cli.Context, m *containers.Manager, a containers.Actor, name string) error {
				return m.Protect(s.ctx, a, name, true)
			}),
		simpleCommand(s, "unprotect", "undo mlc protect (admins)", "mlc unprotect thesis --user alice", nil,
			func(c *cli.Context, m *containers.Manager, a containers.Actor, name string) error {
				return m.Protect(s.ctx, a, name, false)
			}),
	}
}

// openFailed marks mlc's own failure when open runs a CMD whose exit codes
// pass through (exit 125, as docker run).
func openFailed(cmd []string, err error) error {
	if len(cmd) > 0 {
		return openError{err}
	}
	return err
}

func withAlias(c *cli.Command, a string) *cli.Command { c.Aliases = append(c.Aliases, a); return c }

// simpleCommand is a command taking exactly NAME.
func simpleCommand(s *session, name, usage, example string, flags []cli.Flag,
	fn func(*cli.Context, *containers.Manager, containers.Actor, string) error) *cli.Command {
	return &cli.Command{
		Name: name, Usage: usage, ArgsUsage: "NAME",
		Description: "Example:\n   " + example,
		Flags:       append(flags, userFlag),
		Action: func(c *cli.Context) error {
			if err := argsBetween(c, 1, 1, "mlc "+name+" NAME"); err != nil {
				return err
			}
			m, a, err := s.managerActor(c)
			if err != nil {
				return err
			}
			if err := fn(c, m, a, c.Args().First()); err != nil {
				return err
			}
			if done := doneWords[name]; done != "" {
				fmt.Fprintf(s.out, "%s %s\n", done, c.Args().First())
			}
			return nil
		},
	}
}

var doneWords = map[string]string{"start": "started", "stop": "stopped", "kill": "killed", "remove": "removed",
	"protect": "protected", "unprotect": "unprotected"}

func (s *session) managerActor(c *cli.Context) (*containers.Manager, containers.Actor, error) {
	m, err := s.manager(c)
	if err != nil {
		return nil, containers.Actor{}, err
	}
	a, err := s.actor(c)
	return m, a, err
}

func createCommand(s *session) *cli.Command {
	return &cli.Command{
		Name:      "create",
		Usage:     "create and start a container with your limits",
		ArgsUsage: "NAME [FRAMEWORK [VERSION]]",
		Description: `The image comes from the lab's catalogue: FRAMEWORK and VERSION (case-insensitive;
without VERSION, the newest), or --image ALIAS. Limits come from the policy; you may
ask for less (--cpus, --memory) but never more. Processes run as you. Flags may come
anywhere.

Your workspace is mounted read-write at /workspace: a directory the lab keeps for
you (workspace_root/USER/NAME, linked as ~/workspaces/NAME), named after the
container unless -w names another, so containers can share one and it outlives
mlc remove. --data and --models mount a directory of yours (below your home or a
mount root of the policy) read-only at /data and /models; if it is replaced after
create, mlc will not start the container again.

Examples:
   mlc create thesis pytorch 2.5 --gpus 1
   mlc create nb --image busybox --cpus 2 --memory 4g -p 8888
   mlc create big pytorch --gpus 2 --wait --timeout 2h
   mlc create exp2 pytorch -w thesis -d ~/datasets/imagenet
   mlc create thesis pytorch --dry-run --json`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "image", Usage: "catalogue `ALIAS` (admins: any local image reference)"},
			&cli.Float64Flag{Name: "cpus", Usage: "CPUs for this container (at most your limit)"},
			&cli.StringFlag{Name: "memory", Usage: "memory `SIZE` for this container, like 8g (at most your limit)"},
			&cli.IntFlag{Name: "gpus", Usage: "GPUs to allocate (`N`)"},
			&cli.BoolFlag{Name: "wait", Usage: "queue for GPUs when none are free"},
			&cli.StringFlag{Name: "timeout", Usage: "with --wait, give up after `DURATION` (30m, 2h)"},
			&cli.StringFlag{Name: "workspace", Aliases: []string{"w"}, Usage: "workspace `NAME` mounted at /workspace (default: the container's name)"},
			&cli.StringFlag{Name: "data", Aliases: []string{"d"}, Usage: "`DIR` of yours mounted read-only at /data"},
			&cli.StringFlag{Name: "models", Aliases: []string{"m"}, Usage: "`DIR` of yours mounted read-only at /models"},
			&cli.StringSliceFlag{Name: "publish", Aliases: []string{"p"}, Usage: "publish a port on 127.0.0.1 (every local user can reach it): [HOSTPORT:]CONTAINERPORT (repeatable)"},
			&cli.StringSliceFlag{Name: "env", Aliases: []string{"e"}, Usage: "set `KEY=VALUE` (repeatable)"},
			&cli.BoolFlag{Name: "root", Usage: "run as root inside (only where the policy allows it and the engine remaps user namespaces)"},
			&cli.BoolFlag{Name: "no-start", Usage: "create but do not start"},
			&cli.BoolFlag{Name: "dry-run", Usage: "print the create request; change nothing"},
			&cli.BoolFlag{Name: "json", Usage: "print JSON"},
			userFlag,
		},
		Action: func(c *cli.Context) error {
			if err := argsBetween(c, 1, 3, "mlc create NAME [FRAMEWORK [VERSION]] [flags]"); err != nil {
				return err
			}
			r := containers.CreateRequest{
				Name: c.Args().Get(0), Framework: c.Args().Get(1), Version: c.Args().Get(2),
				ImageAlias: c.String("image"), CPUs: c.Float64("cpus"), GPUs: c.Int("gpus"),
				Workspace: c.String("workspace"), Data: c.String("data"), Models: c.String("models"),
				Publish: c.StringSlice("publish"), Env: c.StringSlice("env"), Root: c.Bool("root"),
				NoStart: c.Bool("no-start"), DryRun: c.Bool("dry-run"), Wait: c.Bool("wait"),
			}
			if v := c.String("memory"); v != "" {
				size, err := config.ParseSize(v)
				if err != nil {
					return errs.New(errs.Usage, "--memory: %v", err)
				}
				r.Memory = size
			}
			if v := c.String("timeout"); v != "" {
				d, err := config.ParseDuration(v)
				if err != nil || d.Never {
					return errs.New(errs.Usage, "--timeout: invalid duration %q (30m, 2h)", v)
				}
				r.Timeout = d.D
			}
			if c.IsSet("timeout") && !r.Wait {
				return errs.New(errs.Usage, "--timeout only applies with --wait")
			}
			m, a, err := s.managerActor(c)
			if err != nil {
				return err
			}
			out, err := m.Create(s.ctx, a, r)
			if err != nil {
				return err
			}
			switch {
			case c.Bool("json") && out.DryRun:
				return s.json(out.Request)
			case c.Bool("json"):
				return s.json(out)
			case out.DryRun:
				fmt.Fprintf(s.out, "dry run: would create %s for %s from %s; the request:\n", out.Name, out.User, out.Image)
				return s.json(out.Request)
			}
			gpus := ""
			if len(out.GPUs) > 0 {
				gpus = " with GPUs " + strings.Join(out.GPUs, ", ")
			}
			state := "created and started"
			if !out.Started {
				state = "created (not started)"
			}
			fmt.Fprintf(s.out, "%s %s from %s%s; workspace %s\nopen it with: mlc open %s\n", out.Name, state, out.Image, gpus, out.Workspace, out.Name)
			return nil
		},
	}
}

func printList(s *session, rows []containers.Row, all, asJSON, quiet bool) error {
	switch {
	case asJSON:
		return s.json(rows)
	case quiet:
		for _, r := range rows {
			if all {
				fmt.Fprintf(s.out, "%s/%s\n", r.User, r.Name)
			} else {
				fmt.Fprintln(s.out, r.Name)
			}
		}
		return nil
	}
	t := s.table()
	head := "NAME\tIMAGE\tSTATUS\tCPUS\tMEMORY\tGPUS\tCREATED\tIDLE\tCLEANUP STOPS"
	if all {
		head = "USER\t" + head
	}
	fmt.Fprintln(t, head)
	for _, r := range rows {
		gpus := "-"
		if len(r.GPUs) > 0 {
			short := make([]string, len(r.GPUs))
			for i, g := range r.GPUs {
				short[i] = shortUUID(g)
			}
			gpus = strings.Join(short, ",")
		}
		status := r.Status
		if r.Protect {
			status += " (protected)"
		}
		idle, stops := "-", "-"
		if r.IdleSeconds != nil {
			idle = "busy"
			if *r.IdleSeconds > 0 {
				idle = units.HumanDuration(time.Duration(*r.IdleSeconds) * time.Second)
			}
		}
		if r.StopAt != nil {
			stops = "after " + r.StopAt.Local().Format("01-02 15:04")
		}
		line := fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%s\t%s ago\t%s\t%s", r.Name, r.Image, status, r.CPUs, r.Memory, gpus,
			units.HumanDuration(time.Since(r.Created)), idle, stops)
		if all {
			line = r.User + "\t" + line
		}
		fmt.Fprintln(t, line)
	}
	return t.Flush()
}

func shortUUID(u string) string {
	if len(u) > 12 {
		return u[:12]
	}
	return u
}

// forecast fills each running row's idle time and cleanup stop time from the
// usage history, when there is one; without it (or on any error) they stay
// unknown ("-").
func (s *session) forecast(m *containers.Manager, rows []containers.Row) {
	p := filepath.Join(s.cfg.StateDir, HistoryFile)
	if _, err := os.Stat(p); err != nil {
		return
	}
	db, err := history.Open(p)
	if err != nil {
		return
	}
	defer db.Close()
	f, err := (&cleanup.Env{Mgr: m, History: db}).Forecasts(rows)
	if err != nil {
		return
	}
	for i := range rows {
		idle, ok := f[rows[i].ID]
		if !ok || !idle.Known {
			continue
		}
		secs := int64(idle.For / time.Second)
		rows[i].IdleSeconds = &secs
		if !idle.StopAt.IsZero() {
			at := idle.StopAt
			if idle.Postpone.After(at) {
				at = idle.Postpone
			}
			rows[i].StopAt = &at
		}
	}
}
