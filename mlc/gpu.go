package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	units "github.com/docker/go-units"
	"github.com/mlc-lab/mlc/config"
	"github.com/mlc-lab/mlc/containers"
	"github.com/mlc-lab/mlc/engine"
	"github.com/mlc-lab/mlc/errs"
	"github.com/mlc-lab/mlc/gpualloc"
	"github.com/urfave/cli/v2"
)

// LedgerFile is the ledger's name in the state directory.
const LedgerFile = "gpu.db"

// newAllocator is the GPU ledger for cfg, opened (with the NVML inventory)
// on first use. onReconcile is told what the reconcile before each claim did.
func newAllocator(cfg *config.Config, eng engine.Engine, inv *gpualloc.Inventory, onReconcile func(context.Context, gpualloc.Report)) *containers.LedgerGPUs {
	return &containers.LedgerGPUs{Eng: eng, Inventory: inv, OnReconcile: onReconcile, Open: func() (*gpualloc.Ledger, error) {
		found, err := gpualloc.Discover(nvml.New(), cfg.GPU.FakeCount)
		if err != nil {
			return nil, err
		}
		*inv = found
		hold := cfg.GPU.HoldAfterStop.D
		if cfg.GPU.HoldAfterStop.Never {
			hold = 0
		}
		return gpualloc.Open(filepath.Join(cfg.StateDir, LedgerFile), found.GPUs, gpualloc.Options{
			Shared: cfg.GPU.Mode == "shared", MaxPerGPU: cfg.GPU.MaxPerGPU, Strategy: cfg.GPU.Strategy,
			PendingTimeout: cfg.GPU.PendingTimeout.D, HoldAfterStop: hold,
		})
	}}
}

// auditReconcile writes what a reconcile run by itself (before a claim) did
// to the audit log, as done by the caller whose command ran it.
func auditReconcile(s *session) func(context.Context, gpualloc.Report) {
	return func(_ context.Context, rep gpualloc.Report) {
		if err := s.mgr.Audit.Append(auditEntry(s, "gpu-reconcile-implicit", rep)); err != nil {
			fmt.Fprintf(s.errOut, "mlc: warning: audit log: %v\n", err)
		}
	}
}

func gpuCommand(s *session) *cli.Command {
	return &cli.Command{
		Name:  "gpu",
		Usage: "GPU status, reconcile and release",
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return errs.New(errs.Usage, "unknown command %q (see mlc gpu --help)", c.Args().First())
			}
			return cli.ShowSubcommandHelp(c)
		},
		Subcommands: []*cli.Command{
			{
				Name:  "status",
				Usage: "each GPU with who holds it since when, and the wait queue",
				Description: `Examples:
   mlc gpu status
   mlc gpu status --json`,
				Flags: []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print JSON"}},
				Action: func(c *cli.Context) error {
					if err := argsBetween(c, 0, 0, "mlc gpu status [--json]"); err != nil {
						return err
					}
					m, a, err := s.managerActor(c)
					if err != nil {
						return err
					}
					st, err := m.GPUStatus(s.ctx, a)
					if err != nil {
						return err
					}
					if c.Bool("json") {
						return s.json(struct {
							gpualloc.Status
							Source string `json:"inventory"`
							Note   string `json:"inventory_note,omitempty"`
						}{st, s.inv.Source, s.inv.Note})
					}
					return printGPUStatus(s, st)
				},
			},
			{
				Name:  "reconcile",
				Usage: "repair the ledger against the containers that exist (admins)",
				Description: `Releases claims whose container is gone, or whose create died before it made one;
adopts a container whose create died after making it; with gpu.hold_after_stop, releases
GPUs of containers stopped that long; reports containers running with GPUs but no
ledger row (--adopt records them, e.g. after restoring a lost ledger). It also runs by
itself before every GPU allocation.

Examples:
   mlc gpu reconcile --dry-run
   mlc gpu reconcile --adopt`,
				Flags: []cli.Flag{
					&cli.BoolFlag{Name: "dry-run", Usage: "say what would change; change nothing"},
					&cli.BoolFlag{Name: "adopt", Usage: "record containers that hold GPUs without a ledger row"},
					&cli.BoolFlag{Name: "json", Usage: "print JSON"},
				},
				Action: func(c *cli.Context) error {
					if err := argsBetween(c, 0, 0, "mlc gpu reconcile [--dry-run] [--adopt] [--json]"); err != nil {
						return err
					}
					m, a, err := s.managerActor(c)
					if err != nil {
						return err
					}
					rep, err := m.ReconcileGPUs(s.ctx, a, gpualloc.ReconcileOptions{DryRun: c.Bool("dry-run"), Adopt: c.Bool("adopt")})
					if rep.Actions == nil { // it did not run
						return err
					}
					// The ledger changed either way: print what was done, then
					// fail if it could not be audited.
					if perr := printReconcile(s, rep, c.Bool("json")); perr != nil {
						return perr
					}
					return err
				},
			},
			{
				Name:      "release",
				Usage:     "free a stopped container's GPUs (admins)",
				ArgsUsage: "NAME",
				Description: `The container stays; starting it again claims the same GPUs, or fails if they went
to someone else meanwhile. A running container must be stopped first.

Example:
   mlc gpu release thesis --user alice`,
				Flags: []cli.Flag{userFlag},
				Action: func(c *cli.Context) error {
					if err := argsBetween(c, 1, 1, "mlc gpu release NAME [--user USER]"); err != nil {
						return err
					}
					m, a, err := s.managerActor(c)
					if err != nil {
						return err
					}
					n, err := m.ReleaseGPUs(s.ctx, a, c.Args().First())
					if err != nil {
						return err
					}
					fmt.Fprintf(s.out, "released %d claim(s) of %s\n", n, c.Args().First())
					return nil
				},
			},
		},
	}
}

func printReconcile(s *session, rep gpualloc.Report, asJSON bool) error {
	if asJSON {
		return s.json(rep)
	}
	if len(rep.Actions) == 0 {
		fmt.Fprintln(s.out, "the ledger agrees with the containers; nothing to do")
		return nil
	}
	verb := map[string]string{"release": "released", "adopt": "adopted", "report": "REPORT"}
	if rep.DryRun {
		verb = map[string]string{"release": "would release", "adopt": "would adopt", "report": "REPORT"}
	}
	for _, a := range rep.Actions {
		fmt.Fprintf(s.out, "%s %s/%s (%s): %s\n", verb[a.Action], a.User, a.Name, strings.Join(shortAll(a.GPUs), ","), a.Why)
	}
	return nil
}

func shortAll(uuids []string) []string {
	out := make([]string, len(uuids))
	for i, u := range uuids {
		out[i] = shortUUID(u)
	}
	return out
}

func printGPUStatus(s *session, st gpualloc.Status) error {
	if len(st.GPUs) == 0 {
		fmt.Fprintf(s.out, "this server has no GPUs (%s)\n", s.inv.Note)
		return nil
	}
	t := s.table()
	fmt.Fprintln(t, "GPU\tUUID\tNAME\tMEMORY\tHOLDER\tSINCE")
	for _, g := range st.GPUs {
		mem := units.BytesSize(float64(g.MemoryMiB) * (1 << 20))
		if len(g.Holders) == 0 {
			fmt.Fprintf(t, "%d\t%s\t%s\t%s\t%s\t%s\n", g.Index, g.UUID, g.Name, mem, "free", "-")
		}
		for i, h := range g.Holders {
			idx, uuid, name, m := fmt.Sprint(g.Index), g.UUID, g.Name, mem
			if i > 0 {
				idx, uuid, name, m = "", "", "", ""
			}
			holder := h.User + "/" + h.Name
			if h.State == "pending" {
				holder += " (being created)"
			}
			fmt.Fprintf(t, "%s\t%s\t%s\t%s\t%s\t%s ago\n", idx, uuid, name, m, holder, units.HumanDuration(time.Since(h.Since)))
		}
	}
	if err := t.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(s.out, "\nmode %s", st.Mode)
	if st.Mode == "shared" {
		fmt.Fprintf(s.out, " (up to %d containers per GPU)", st.MaxPerGPU)
	}
	fmt.Fprintf(s.out, "; inventory %s; ledger %s\n", s.inv.Source, st.Ledger)
	if len(st.Queue) == 0 {
		fmt.Fprintln(s.out, "wait queue: empty")
		return nil
	}
	fmt.Fprintln(s.out, "wait queue:")
	for _, w := range st.Queue {
		fmt.Fprintf(s.out, "  %d. %s/%s wants %d GPU(s), waiting %s\n", w.Position, w.User, w.Name, w.N, units.HumanDuration(time.Since(w.Since)))
	}
	return nil
}
