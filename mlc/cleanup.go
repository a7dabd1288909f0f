package main

import (
	"fmt"
	"os"
	"time"

	"github.com/mlc-lab/mlc/cleanup"
	"github.com/mlc-lab/mlc/cleanup/notify"
	"github.com/mlc-lab/mlc/config"
	"github.com/mlc-lab/mlc/errs"
	"github.com/mlc-lab/mlc/identity"
	"github.com/prometheus/common/model"
	"github.com/urfave/cli/v2"
)

func cleanupCommand(s *session) *cli.Command {
	return &cli.Command{
		Name:  "cleanup",
		Usage: "stop idle containers (after warning their owners), remove long-stopped ones and unused images (admins; nightly)",
		Description: `Plans, prints the plan (what, why, which rule and where it comes from, when), then
acts on it. Idle means: in the usage history (mlc monitor), the container's CPU,
its own GPU processes and its network traffic stayed below cleanup.idle_* since
its last busy sample; once idle for its owner's idle_timeout it is stopped, but
only in a run after the owner was warned (at cleanup.warn_at of the timeout).
Never touched, in any path: containers mlc did not make, those labelled
mlc.protected, matching a protected pattern, or protected with mlc protect, and
images any container uses or the catalogue names. No prune endpoint is called.

Examples:
   mlc cleanup --dry-run
   mlc cleanup
   mlc cleanup --only stopped --json`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "dry-run", Usage: "print the plan; change nothing"},
			&cli.BoolFlag{Name: "json", Usage: "print JSON"},
			&cli.StringFlag{Name: "only", Usage: "only `KIND`: idle (warnings and stops), stopped, or images"},
		},
		Action: func(c *cli.Context) error {
			if err := argsBetween(c, 0, 0, "mlc cleanup [--dry-run] [--json] [--only idle|stopped|images]"); err != nil {
				return err
			}
			only := c.String("only")
			if only != "" && only != cleanup.OnlyIdle && only != cleanup.OnlyStopped && only != cleanup.OnlyImages {
				return errs.New(errs.Usage, "--only %q: choose idle, stopped or images", only)
			}
			m, err := s.manager(c)
			if err != nil {
				return err
			}
			if !s.caller.Admin {
				return s.refused(c, errs.New(errs.Permission, "only admins may run mlc cleanup"), nil)
			}
			db, err := s.openHistory()
			if err != nil {
				return err
			}
			defer db.Close()
			env := &cleanup.Env{Mgr: m, History: db, Notify: notify.Options{Command: s.cfg.Notify.Command, DevDir: "/dev"}}
			if !identity.ProcessEnv().ForUser() {
				env.Scope = os.Getenv("MLC_TEST_CLEANUP_SCOPE")
			}
			in, targets, err := env.Gather(s.ctx, only)
			if err != nil {
				return err
			}
			res := cleanup.Result{DryRun: c.Bool("dry-run"), Plan: cleanup.MakePlan(in, cleanup.RulesFrom(s.cfg))}
			if res.DryRun {
				if c.Bool("json") {
					return s.json(res)
				}
				fmt.Fprintln(s.out, "dry run: nothing is changed")
				return res.Plan.WriteTable(s.out)
			}
			if !c.Bool("json") {
				if err := res.Plan.WriteTable(s.out); err != nil {
					return err
				}
			}
			runErr := env.Execute(s.ctx, s.caller, &res.Plan, targets)
			if c.Bool("json") {
				if err := s.json(res); err != nil {
					return err
				}
			} else {
				cleanup.WriteResults(s.out, res.Plan)
			}
			return runErr
		},
	}
}

func keepaliveCommand(s *session) *cli.Command {
	return &cli.Command{
		Name:      "keepalive",
		Usage:     "keep an idle container from being stopped by the nightly cleanup for a while",
		ArgsUsage: "NAME",
		Description: `Writes /workspace/.keep-alive in the container's workspace so that cleanup does not
stop it for --for (at most cleanup.keepalive_max, the default). Touching
/workspace/.keep-alive inside the container does the same for keepalive_max.

Examples:
   mlc keepalive thesis
   mlc keepalive thesis --for 8h`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "for", Usage: "keep it alive for `DURATION` (default and maximum: cleanup.keepalive_max)"},
			userFlag,
		},
		Action: func(c *cli.Context) error {
			if err := argsBetween(c, 1, 1, "mlc keepalive NAME [--for DURATION]"); err != nil {
				return err
			}
			m, a, err := s.managerActor(c)
			if err != nil {
				return err
			}
			max := s.cfg.Cleanup.KeepAliveMax
			if max.Never {
				// keepalive_max null: a keep-alive file postpones the stop for
				// as long as it exists.
				max = config.Duration{D: 100 * 365 * 24 * time.Hour}
			}
			d := max.D
			if v := c.String("for"); v != "" {
				pd, err := model.ParseDuration(v)
				if err != nil || pd <= 0 {
					return errs.New(errs.Usage, "--for %q is not a duration of at most %s (like 8h, 90m)", v, max)
				}
				if time.Duration(pd) > max.D {
					return errs.New(errs.Quota, "--for %s is more than cleanup.keepalive_max (%s)", v, s.cfg.Cleanup.KeepAliveMax)
				}
				d = time.Duration(pd)
			}
			ct, err := m.Find(s.ctx, a, c.Args().First())
			if err != nil {
				return err
			}
			ws := ""
			for _, mt := range ct.Mounts {
				if mt.Target == "/workspace" {
					ws = mt.Source
				}
			}
			if ws == "" {
				return errs.New(errs.NotFound, "%s has no workspace to put a keep-alive file in", c.Args().First())
			}
			until := time.Now().Add(d)
			// The planner counts a keep-alive as fresh for keepalive_max after
			// its modification time.
			mtime := until.Add(-max.D)
			msg := notify.Message{User: a.Target.User, UID: a.Target.UID, GID: a.Target.GID, Container: c.Args().First(), Workspace: ws}
			err = notify.WriteKeepAlive(s.ctx, msg, mtime, notify.Options{})
			m.Record(a, "keepalive", c.Args().First(), err, map[string]any{"until": until})
			if err != nil {
				return err
			}
			fmt.Fprintf(s.out, "%s will not be stopped for being idle before %s\n", c.Args().First(), until.Format("2006-01-02 15:04"))
			return nil
		},
	}
}
