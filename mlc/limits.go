package main

import (
	"fmt"
	"strings"

	"github.com/mlc-lab/mlc/cleanup"
	"github.com/mlc-lab/mlc/config"
	"github.com/mlc-lab/mlc/errs"
	"github.com/mlc-lab/mlc/identity"
	"github.com/mlc-lab/mlc/limits"
	"github.com/mlc-lab/mlc/paths"
	"github.com/urfave/cli/v2"
)

func limitsCommand(s *session) *cli.Command {
	return &cli.Command{
		Name:  "limits",
		Usage: "show what a user gets, or validate a policy file",
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return errs.New(errs.Usage, "unknown command %q (see mlc limits --help)", c.Args().First())
			}
			return cli.ShowSubcommandHelp(c)
		},
		Subcommands: []*cli.Command{
			{
				Name:      "show",
				Usage:     "every resolved limit of USER (default: you) with the rule that set it",
				ArgsUsage: "[USER]",
				Description: `Resolves defaults, then the user's group, then their override. A name with no
system account still resolves from the policy, so a policy can be tried before
the account exists. Only admins may show another user's limits.

Examples:
   mlc limits show
   mlc limits show alice --json
   mlc limits show alice --docker-args`,
				Flags: []cli.Flag{
					&cli.BoolFlag{Name: "json", Usage: "print JSON"},
					&cli.BoolFlag{Name: "docker-args", Usage: "print the equivalent docker run flags"},
				},
				Action: func(c *cli.Context) error {
					if err := argsBetween(c, 0, 1, "mlc limits show [USER] [--json|--docker-args]"); err != nil {
						return err
					}
					if err := s.setup(c); err != nil {
						return err
					}
					user := c.Args().First()
					if user == "" {
						user = s.caller.User
					}
					if err := limits.MayShow(s.caller.User, s.caller.Admin, user); err != nil {
						return s.refused(c, err, map[string]any{"user": user})
					}
					r, err := limits.Resolve(s.cfg, identity.SystemDirectory{}, user)
					if err != nil {
						return err
					}
					switch {
					case c.Bool("json"):
						return s.json(r)
					case c.Bool("docker-args"):
						fmt.Fprintln(s.out, strings.Join(r.DockerArgs(), " "))
						return nil
					}
					return printLimits(s, r)
				},
			},
			{
				Name:      "check",
				Usage:     "validate a policy file and print a summary, or every error as FILE:LINE: message",
				ArgsUsage: "[FILE]",
				Description: `Without FILE, checks the policy mlc would use (--config, $MLC_CONFIG,
/etc/mlc/resource-limits.yaml, else the embedded default). Exits 0 when valid,
3 with every problem listed when not. FILE is read with your own rights (a
regular file of at most 1 MiB), and errors quote only short excerpts of it.
Warns when the policy allows root in containers but the engine does not
remap user namespaces.

Examples:
   mlc limits check /etc/mlc/resource-limits.yaml
   mlc limits check new-policy.yaml --json`,
				Flags: []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print JSON"}},
				Action: func(c *cli.Context) error {
					if err := argsBetween(c, 0, 1, "mlc limits check [FILE] [--json]"); err != nil {
						return err
					}
					var cfg *config.Config
					var err error
					if f := c.Args().First(); f != "" {
						uid, uerr := identity.ProcessEnv().CallerUID()
						if uerr != nil {
							return uerr
						}
						cfg, err = limits.CheckFile(s.ctx, paths.Runner{}, uid, f)
					} else if err = s.setup(c); err == nil {
						cfg = s.cfg
					} else if !errs.Is(err, errs.Config) {
						return err
					}
					var warnings []string
					if err == nil {
						warnings = s.policyWarnings(cfg)
					}
					if c.Bool("json") {
						return printCheckJSON(s, cfg, err, warnings)
					}
					if err != nil {
						return err
					}
					fmt.Fprintln(s.out, cfg.Summary())
					for _, w := range warnings {
						fmt.Fprintln(s.errOut, "warning: "+w)
					}
					return nil
				},
			},
		},
	}
}

func printLimits(s *session, r *limits.Resolved) error {
	group := "no group"
	if r.Group != "" {
		group = "group " + r.Group
	}
	fmt.Fprintf(s.out, "Limits for %s (%s), policy %s\n\n", r.User, group, r.Policy)
	t := s.table()
	fmt.Fprintln(t, "LIMIT\tVALUE\tSOURCE")
	for _, row := range r.Rows() {
		fmt.Fprintf(t, "%s\t%s\t%s\n", row.Name, row.Value, row.Source)
	}
	if err := t.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(s.out, "\nidle rule: %s\n", cleanup.IdleRule(s.cfg, r.IdleTimeout.Value, r.IdleTimeout.Source))
	if !r.AccountExists {
		fmt.Fprintf(s.out, "\nnote: no system account %q exists; these limits come from the policy alone\n", r.User)
	}
	return nil
}

func printCheckJSON(s *session, cfg *config.Config, err error, warnings []string) error {
	type problem struct {
		File string `json:"file"`
		Line int    `json:"line,omitempty"`
		Msg  string `json:"message"`
	}
	out := struct {
		Valid    bool      `json:"valid"`
		File     string    `json:"file,omitempty"`
		Summary  string    `json:"summary,omitempty"`
		Problems []problem `json:"problems,omitempty"`
		Warnings []string  `json:"warnings,omitempty"`
	}{Valid: err == nil, Warnings: warnings}
	if err == nil {
		out.File, out.Summary = cfg.Source, cfg.Summary()
		return s.json(out)
	}
	if list, ok := err.(config.ErrorList); ok {
		for _, e := range list {
			out.Problems = append(out.Problems, problem{e.File, e.Line, e.Msg})
		}
	} else {
		out.Problems = []problem{{Msg: err.Error()}}
	}
	if jerr := s.json(out); jerr != nil {
		return jerr
	}
	return errs.New(errs.Config, "policy is invalid")
}
