package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/mlc-lab/mlc/containers"
	"github.com/mlc-lab/mlc/errs"
	"github.com/mlc-lab/mlc/gpualloc"
	"github.com/mlc-lab/mlc/monitor/history"
	"github.com/mlc-lab/mlc/monitor/server"
	"github.com/prometheus/common/model"
	"github.com/urfave/cli/v2"
)

// HistoryFile is the usage history's name in the state directory: its own
// database, so sampling never waits on the GPU ledger's lock.
const HistoryFile = "monitor.db"

// openHistory opens (creating) the history in the state directory.
func (s *session) openHistory() (*history.DB, error) {
	dir := s.cfg.StateDir
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, errs.Wrap(errs.State, err, "state directory %s cannot be created", dir)
	}
	return history.Open(filepath.Join(dir, HistoryFile))
}

// sampler is the monitor's sampler: every container, the ledger, the history.
func (s *session) sampler(c *cli.Context, record bool) (*server.Sampler, func(), error) {
	if err := s.setup(c); err != nil {
		return nil, nil, err
	}
	if !s.caller.Admin {
		return nil, nil, s.refused(c, errs.New(errs.Permission, "only admins may run mlc %s", commandPath(c)), nil)
	}
	co, err := s.collector(c)
	if err != nil {
		return nil, nil, err
	}
	sm := &server.Sampler{Collector: co, Window: s.cfg.Monitor.StatsWindow.D,
		Busy: history.Busy{CPUPercent: s.cfg.Cleanup.IdleCPUPercent, GPUPercent: s.cfg.Cleanup.IdleGPUPercent,
			NetBytes: uint64(s.cfg.Cleanup.IdleNetBytes)}}
	if !s.cfg.Monitor.Retention.Never {
		sm.Retention = s.cfg.Monitor.Retention.D
	}
	self := containers.Self(s.caller)
	sm.Ledger = func(ctx context.Context) (gpualloc.Status, error) { return s.mgr.GPUStatus(ctx, self) }
	closeAll := func() {}
	if record {
		db, err := s.openHistory()
		if err != nil {
			return nil, nil, err
		}
		sm.History = db
		closeAll = func() { db.Close() }
	}
	return sm, closeAll, nil
}

func monitorCommand(s *session) *cli.Command {
	return &cli.Command{
		Name:  "monitor",
		Usage: "record usage history and export Prometheus metrics (admins)",
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return errs.New(errs.Usage, "unknown command %q (see mlc monitor --help)", c.Args().First())
			}
			return cli.ShowSubcommandHelp(c)
		},
		Subcommands: []*cli.Command{
			{
				Name:  "sample",
				Usage: "record one sample of every container and GPU in the history (for cron)",
				Description: `Records CPU, memory, network (per interval), GPU use per container, every GPU,
GPU processes outside mlc and per-user totals in state_dir/monitor.db, and deletes
samples older than monitor.retention. Run it from cron every 5 minutes, or let
mlc monitor serve sample instead.

Examples:
   mlc monitor sample
   mlc monitor sample --json      (also print the sample)`,
				Flags: []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print the sample as JSON"}},
				Action: func(c *cli.Context) error {
					if err := argsBetween(c, 0, 0, "mlc monitor sample [--json]"); err != nil {
						return err
					}
					sm, done, err := s.sampler(c, true)
					if err != nil {
						return err
					}
					defer done()
					snap, err := sm.Once(s.ctx)
					if err != nil {
						return err
					}
					if snap.RecordErr != nil {
						return snap.RecordErr
					}
					if c.Bool("json") {
						return s.json(snap.Sample)
					}
					fmt.Fprintf(s.out, "sampled %d containers and %d GPUs in %s into %s\n", len(snap.Sample.Containers),
						len(snap.Sample.GPUs), snap.Took.Round(time.Millisecond), sm.History.Path())
					return nil
				},
			},
			{
				Name:  "serve",
				Usage: "sample every --interval and serve Prometheus metrics on --listen",
				Description: `Samples in the background and answers each scrape from the last sample, so a
scrape never waits on Docker or NVML. Writes the history too (unless --no-history),
so cron is not needed. Every local user can read the listen address: the metrics
name users and containers. Ctrl-C or SIGTERM stops it.

Examples:
   mlc monitor serve
   mlc monitor serve --listen 127.0.0.1:9101 --interval 30s`,
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "listen", Usage: "`HOST:PORT` to serve on (default: monitor.listen)"},
					&cli.StringFlag{Name: "interval", Usage: "sample every `DURATION` (default: monitor.interval)"},
					&cli.BoolFlag{Name: "no-history", Usage: "do not write samples to the history database"},
				},
				Action: func(c *cli.Context) error {
					if err := argsBetween(c, 0, 0, "mlc monitor serve [--listen HOST:PORT] [--interval DURATION]"); err != nil {
						return err
					}
					listen := s.cfgListen(c)
					if _, _, err := net.SplitHostPort(listen); err != nil {
						return errs.New(errs.Usage, "--listen %q is not HOST:PORT (like 127.0.0.1:9101)", listen)
					}
					every, err := s.cfgInterval(c)
					if err != nil {
						return err
					}
					sm, done, err := s.sampler(c, !c.Bool("no-history"))
					if err != nil {
						return err
					}
					defer done()
					srv := server.New(sm, every, s.errOut)
					if srv.Token, err = readToken(s.cfg.Monitor.TokenFile); err != nil {
						return err
					}
					return srv.Serve(s.ctx, listen, func(a net.Addr) {
						fmt.Fprintf(s.errOut, "mlc monitor: serving http://%s/metrics, sampling every %s\n", a, every)
					})
				},
			},
		},
	}
}

func (s *session) cfgListen(c *cli.Context) string {
	if v := c.String("listen"); v != "" {
		return v
	}
	if err := s.setup(c); err != nil {
		return ""
	}
	return s.cfg.Monitor.Listen
}

func (s *session) cfgInterval(c *cli.Context) (time.Duration, error) {
	v := c.String("interval")
	if v == "" {
		if err := s.setup(c); err != nil {
			return 0, err
		}
		return s.cfg.Monitor.Interval.D, nil
	}
	d, err := model.ParseDuration(v)
	if err != nil || time.Duration(d) < time.Second {
		return 0, errs.New(errs.Usage, "--interval %q is not a duration of at least 1s (like 30s, 5m)", v)
	}
	return time.Duration(d), nil
}

func reportCommand(s *session) *cli.Command {
	return &cli.Command{
		Name:  "report",
		Usage: "GPU-hours allocated vs busy, CPU-hours and peak memory per user; busy % per GPU",
		Description: `Sums the usage history (mlc monitor sample or serve must be recording it).
A GPU-hour is busy when the container's own processes used that GPU at least
cleanup.idle_gpu_percent; efficiency is busy / allocated ("-" where utilisation
was never known, e.g. without an NVIDIA driver). Admins see every user; others
see their own line and the GPUs.

Examples:
   mlc report                      (the last 24 hours)
   mlc report --since 7d
   mlc report --since 7d --csv > week.csv
   mlc report --json`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "since", Value: "24h", Usage: "the period: the last `DURATION` (24h, 7d, 4w)"},
			&cli.BoolFlag{Name: "json", Usage: "print JSON"},
			&cli.BoolFlag{Name: "csv", Usage: "print CSV (one header row; kind is user or gpu)"},
		},
		Action: func(c *cli.Context) error {
			if err := argsBetween(c, 0, 0, "mlc report [--since DURATION] [--json|--csv]"); err != nil {
				return err
			}
			if c.Bool("json") && c.Bool("csv") {
				return errs.New(errs.Usage, "choose one of --json and --csv")
			}
			d, err := model.ParseDuration(c.String("since"))
			if err != nil || d <= 0 {
				return errs.New(errs.Usage, "--since %q is not a duration (like 24h, 7d)", c.String("since"))
			}
			if err := s.setup(c); err != nil {
				return err
			}
			db, err := s.openHistory()
			if err != nil {
				return err
			}
			defer db.Close()
			now := time.Now()
			rep, err := db.Report(now.Add(-time.Duration(d)), now)
			if err != nil {
				return err
			}
			if !s.caller.Admin {
				rep = ownLines(rep, s.caller.User)
			}
			switch {
			case c.Bool("json"):
				return s.json(rep)
			case c.Bool("csv"):
				return rep.WriteCSV(s.out)
			}
			return rep.WriteTable(s.out)
		},
	}
}

// ownLines is rep with only user's line among the users.
func ownLines(rep history.Report, user string) history.Report {
	own := []history.UserUsage{}
	for _, u := range rep.Users {
		if u.User == user {
			own = append(own, u)
		}
	}
	rep.Users = own
	return rep
}

// readToken reads the exporter's bearer token from path ("" for none). The
// file must be root's and unreadable by others: it is what keeps the
// metrics from every local user.
func readToken(path string) (string, error) {
	if path == "" {
		return "", nil
	}
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return "", errs.Wrap(errs.Config, err, "monitor.token_file %s", path)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", errs.Wrap(errs.Config, err, "monitor.token_file %s", path)
	}
	sys, _ := st.Sys().(*syscall.Stat_t)
	if !st.Mode().IsRegular() || sys == nil || sys.Uid != 0 || st.Mode().Perm()&0o007 != 0 {
		return "", errs.New(errs.Config, "monitor.token_file %s must be a regular file of root's that others cannot read or write (chmod 0640, group prometheus)", path)
	}
	b, err := io.ReadAll(io.LimitReader(f, 4096))
	if err != nil {
		return "", errs.Wrap(errs.Config, err, "monitor.token_file %s", path)
	}
	tok := strings.TrimSpace(string(b))
	if len(tok) < 16 || strings.ContainsAny(tok, " \t\r\n") {
		return "", errs.New(errs.Config, "monitor.token_file %s: the token must be one word of at least 16 characters (openssl rand -hex 32)", path)
	}
	return tok, nil
}
