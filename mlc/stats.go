package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/mlc-lab/mlc/errs"
	"github.com/mlc-lab/mlc/gpualloc"
	"github.com/mlc-lab/mlc/monitor"
	"github.com/mlc-lab/mlc/monitor/cgroups"
	"github.com/mlc-lab/mlc/monitor/gpus"
	"github.com/moby/term"
	"github.com/urfave/cli/v2"
)

// optionalValue is a flag whose value may be left out: `--watch` is
// `--watch=2`, `--watch 5` is `--watch=5` (normalize rewrites it).
type optionalValue struct {
	*cli.Float64Flag
	bare string
}

func watchFlag() *optionalValue {
	return &optionalValue{Float64Flag: &cli.Float64Flag{Name: "watch", Aliases: []string{"w"},
		Usage: "redraw every `SECONDS` (2 when left out) until Ctrl-C"}, bare: "2"}
}

// collector is the session's monitor: the engine, this host's /proc and
// cgroup files, NVML (initialised once) and the fake GPUs of the policy.
func (s *session) collector(c *cli.Context) (*monitor.Collector, error) {
	if _, err := s.manager(c); err != nil {
		return nil, err
	}
	host, err := cgroups.Host{}.Cached()
	if err != nil {
		return nil, errs.Wrap(errs.Internal, err, "reading the cgroup mounts")
	}
	co := &monitor.Collector{Engine: s.eng, Proc: host, GPUs: gpus.NewReader(nvml.New())}
	if s.cfg.GPU.FakeCount > 0 {
		co.Inventory = gpualloc.Fake(s.cfg.GPU.FakeCount)
	}
	return co, nil
}

func statsCommand(s *session) *cli.Command {
	return &cli.Command{
		Name:      "stats",
		Usage:     "CPU, memory, network, disk and GPU use of your running containers",
		ArgsUsage: "[NAME...]",
		Description: `Like docker stats, for your containers only, in a fraction of a second: figures
come straight from the kernel's cgroup and /proc files. CPU % is measured over a
short window (100 % = one CPU busy). MEM excludes the file cache the kernel can
drop, as docker's does. GPU % and GPU MEM are those of the container's own
processes (not the whole device's); without an NVIDIA driver they are "-".
DISK is the container's writable layer (what it changed in the image).

Examples:
   mlc stats
   mlc stats thesis --json
   mlc stats --watch          (every 2 s until Ctrl-C; --watch 5 for every 5 s)
   mlc stats --all            (admins: everyone's, with a USER column)`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "all", Aliases: []string{"a"}, Usage: "every user's containers (admins)"},
			&cli.BoolFlag{Name: "json", Usage: "print JSON (field names in the user guide)"},
			&cli.BoolFlag{Name: "no-disk", Usage: "skip measuring writable layers"},
			watchFlag(),
			userFlag,
		},
		Action: func(c *cli.Context) error {
			return runStats(s, c, false)
		},
	}
}

func topCommand(s *session) *cli.Command {
	return &cli.Command{
		Name:  "top",
		Usage: "every user's containers by GPU then CPU use, and GPU processes outside mlc (admins)",
		Description: `Admins only. Containers are sorted by their own GPU utilisation, then GPU
memory, then CPU. Below them, flagged with "!", every GPU process that belongs to
no mlc container: a process on the host or in a container mlc did not make.

Examples:
   mlc top
   mlc top --watch
   mlc top --json`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "print JSON"},
			watchFlag(),
		},
		Action: func(c *cli.Context) error {
			return runStats(s, c, true)
		},
	}
}

func runStats(s *session, c *cli.Context, top bool) error {
	if top {
		if err := argsBetween(c, 0, 0, "mlc top [--json] [--watch [SECONDS]]"); err != nil {
			return err
		}
	}
	co, err := s.collector(c)
	if err != nil {
		return err
	}
	a, err := s.actor(c)
	if err != nil {
		return err
	}
	all := top || c.Bool("all")
	if all && !s.caller.Admin {
		what := "only admins may see all users' containers (--all)"
		if top {
			what = "only admins may run mlc top"
		}
		return s.refused(c, errs.New(errs.Permission, "%s", what), nil)
	}
	o := monitor.Options{User: a.Target.User, Names: c.Args().Slice(), Window: s.cfg.Monitor.StatsWindow.D,
		Disk: !top && !c.Bool("no-disk"), Unattributed: top}
	if all {
		o.User = ""
		if len(o.Names) > 0 {
			return errs.New(errs.Usage, "usage: mlc stats --all takes no NAME (use --user USER NAME)")
		}
	}
	every := c.Float64("watch")
	if c.IsSet("watch") && !(every >= 0.5 && every <= 3600) {
		return errs.New(errs.Usage, "--watch takes seconds from 0.5 to 3600")
	}
	noted := false
	var prev *monitor.Sample
	var measured time.Time
	frame := func(w io.Writer) error {
		// Layers are measured on the first frame and then every 30 s: a
		// walk is the costly part, and a layer changes slowly.
		oo := o
		oo.Disk = o.Disk && time.Since(measured) >= 30*time.Second
		smp, err := co.Collect(s.ctx, oo)
		if err != nil {
			return err
		}
		if oo.Disk {
			measured = time.Now()
		} else if prev != nil {
			monitor.CarryDisk(prev, &smp)
		}
		prev = &smp
		if !noted && !c.Bool("json") {
			for _, n := range monitor.Notes(smp) {
				fmt.Fprintf(s.errOut, "mlc: %s\n", n)
			}
			noted = true
		}
		if top {
			monitor.SortTop(smp.Containers)
		}
		if c.Bool("json") {
			if !top {
				smp.GPUs = nil
			}
			return jsonTo(w, smp)
		}
		if err := monitor.WriteTable(w, smp, monitor.TableOptions{User: all, Disk: o.Disk}); err != nil {
			return err
		}
		if top {
			return monitor.WriteUnattributed(w, smp.Unattributed)
		}
		return nil
	}
	if every == 0 {
		return frame(s.out)
	}
	if every < 0.5 {
		every = 0.5
	}
	return monitor.Watch(s.ctx, s.out, isTerminal(s.out) && !c.Bool("json"), time.Duration(every*float64(time.Second)), frame)
}

// isTerminal is whether w is a terminal (for redrawing in place).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(f.Fd())
}
