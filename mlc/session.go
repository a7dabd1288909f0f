package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mlc-lab/mlc/audit"
	"github.com/mlc-lab/mlc/config"
	"github.com/mlc-lab/mlc/containers"
	"github.com/mlc-lab/mlc/engine"
	"github.com/mlc-lab/mlc/errs"
	"github.com/mlc-lab/mlc/gpualloc"
	"github.com/mlc-lab/mlc/identity"
	"github.com/urfave/cli/v2"
)

// session holds what a command needs, loaded on first use so that --help
// works with a broken policy.
type session struct {
	ctx         context.Context
	stdin       io.Reader
	out, errOut io.Writer
	cfg         *config.Config
	caller      *identity.Caller
	// newEngine connects to the engine; nil means connectEngine (engine.New,
	// or the fake that in-process tests put there: see seam.go).
	newEngine func() (engine.Engine, error)
	eng       engine.Engine
	mgr       *containers.Manager
	inv       gpualloc.Inventory
}

// setup loads the policy and works out the caller.
//
// Run through sudo for a non-root user, mlc uses only the system policy
// (config.SystemPath, fixed at build time) and ignores MLC_* variables; such
// a caller may pass --config only when that policy makes them an admin.
func (s *session) setup(c *cli.Context) error {
	if s.cfg != nil {
		return nil
	}
	env := identity.ProcessEnv()
	flag := c.String("config")
	var cfg *config.Config
	var err error
	if env.ForUser() {
		cfg, err = config.LoadSystem()
	} else {
		cfg, err = config.LoadFrom(flag)
	}
	if err != nil {
		return err
	}
	caller, err := identity.Current(cfg, env)
	if err != nil {
		return err
	}
	if env.ForUser() && flag != "" {
		if !caller.Admin {
			s.cfg, s.caller = cfg, caller
			return s.refused(c, errs.New(errs.Permission, "only admins may choose the policy file (--config)"), nil)
		}
		if cfg, err = config.LoadFrom(flag); err != nil {
			return err
		}
	}
	s.cfg, s.caller = cfg, caller
	return nil
}

// manager sets up the engine client and the lifecycle manager.
func (s *session) manager(c *cli.Context) (*containers.Manager, error) {
	if s.mgr != nil {
		return s.mgr, nil
	}
	if err := s.setup(c); err != nil {
		return nil, err
	}
	eng, err := s.engine()
	if err != nil {
		return nil, err
	}
	s.eng = eng
	s.mgr = &containers.Manager{
		Cfg: s.cfg, Eng: eng, Dir: identity.SystemDirectory{}, Audit: &audit.Log{Path: s.cfg.AuditLog},
		Progress: s.errOut, Version: version, Memlock: engine.Memlock(),
	}
	s.mgr.GPUs = newAllocator(s.cfg, eng, &s.inv, auditReconcile(s))
	return s.mgr, nil
}

// engine connects to the engine through the session's seam.
func (s *session) engine() (engine.Engine, error) {
	if s.newEngine != nil {
		return s.newEngine()
	}
	return connectEngine()
}

// policyWarnings are what `mlc limits check` says of a valid policy on this host.
func (s *session) policyWarnings(cfg *config.Config) []string {
	eng, err := s.engine()
	if err != nil {
		return []string{"cannot reach the Docker engine to check the policy against it: " + err.Error()}
	}
	if c, ok := eng.(io.Closer); ok {
		defer c.Close()
	}
	ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
	defer cancel()
	return containers.PolicyWarnings(ctx, cfg, eng)
}

// actor is the caller acting for --user (admins) or themselves.
func (s *session) actor(c *cli.Context) (containers.Actor, error) {
	if err := s.setup(c); err != nil {
		return containers.Actor{}, err
	}
	name := c.String("user")
	if name == "" || name == s.caller.User {
		return containers.Self(s.caller), nil
	}
	if !s.caller.Admin {
		return containers.Actor{}, s.refused(c, errs.New(errs.Permission, "only admins may act for another user (--user)"), map[string]any{"user": name})
	}
	target, err := identity.Lookup(s.cfg, name)
	if err != nil {
		return containers.Actor{}, err
	}
	return containers.For(s.caller, target)
}

func (s *session) json(v any) error { return jsonTo(s.out, v) }

func jsonTo(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table is a tab-separated writer with aligned columns.
func (s *session) table() *tabwriter.Writer {
	return tabwriter.NewWriter(s.out, 0, 0, 2, ' ', 0)
}

func (s *session) stdinTerminal() bool {
	f, ok := s.stdin.(*os.File)
	return ok && engine.StdinIsTerminal(f)
}

// refused writes a refusal of what the caller asked to the audit log (every
// refusal is audited) and returns err.
func (s *session) refused(c *cli.Context, err error, detail any) error {
	if s.cfg == nil || s.caller == nil {
		return err
	}
	e := auditEntry(s, commandPath(c), detail)
	e.Result, e.Error = "error", err.Error()
	if aerr := (&audit.Log{Path: s.cfg.AuditLog}).Append(e); aerr != nil {
		fmt.Fprintf(s.errOut, "mlc: warning: audit log: %v\n", aerr)
	}
	return err
}

// commandPath is the command being run, "limits show" for `mlc limits show`.
func commandPath(c *cli.Context) string {
	var names []string
	for _, x := range c.Lineage() {
		if x.Command != nil && x.Command.Name != "" && (x.App == nil || x.Command.Name != x.App.Name) {
			names = append([]string{x.Command.Name}, names...)
		}
	}
	return strings.Join(names, " ")
}

func auditEntry(s *session, action string, detail any) audit.Entry {
	return audit.Entry{Caller: s.caller.User, CallerUID: s.caller.UID, Action: action, Detail: detail}
}
