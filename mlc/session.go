package main

import (
	"encoding/json"
	"io"
	"text/tabwriter"

	"github.com/mlc-lab/mlc/config"
	"github.com/mlc-lab/mlc/identity"
	"github.com/urfave/cli/v2"
)

// session holds what a command needs, loaded on first use so that --help
// works with a broken policy.
type session struct {
	stdin       io.Reader
	out, errOut io.Writer
	cfg         *config.Config
	caller      *identity.Caller
}

// setup loads the policy and works out the caller.
func (s *session) setup(c *cli.Context) error {
	if s.cfg != nil {
		return nil
	}
	cfg, err := config.LoadFrom(c.String("config"))
	if err != nil {
		return err
	}
	caller, err := identity.Current(cfg, identity.ProcessEnv())
	if err != nil {
		return err
	}
	s.cfg, s.caller = cfg, caller
	return nil
}

func (s *session) json(v any) error {
	enc := json.NewEncoder(s.out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table is a tab-separated writer with aligned columns.
func (s *session) table() *tabwriter.Writer {
	return tabwriter.NewWriter(s.out, 0, 0, 2, ' ', 0)
}
