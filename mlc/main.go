// Command mlc is the multi-call binary: `mlc COMMAND ...`, or a link named
// mlc-COMMAND (mlc-create, mlc-limits, ...) that behaves as `mlc COMMAND`.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/mlc-lab/mlc/config"
	"github.com/mlc-lab/mlc/errs"
	"github.com/mlc-lab/mlc/identity"
	"github.com/mlc-lab/mlc/paths"
	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"
)

// version is set by the Makefile with -ldflags -X main.version=...
var version = "dev"

func main() {
	if len(os.Args) > 1 && os.Args[1] == paths.HelperArg {
		os.Exit(paths.Serve(os.Args[2:], os.Stdout))
	}
	if e := identity.ProcessEnv(); e.EUID == 0 && e.SudoUID != "" {
		// The sudo that started us dying is an interrupt like Ctrl-C.
		_ = unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(syscall.SIGTERM), 0, 0, 0)
	}
	if identity.ProcessEnv().ForUser() {
		// The engine is the system's: never one a user's environment names
		// (sudo's env_reset drops these anyway, unless a site relaxed it).
		for _, k := range []string{"DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_CERT_PATH", "DOCKER_TLS_VERIFY", "DOCKER_API_VERSION", "DOCKER_CONFIG"} {
			os.Unsetenv(k)
		}
	}
	if code, ok := routeServer(os.Args); ok {
		os.Exit(code)
	}
	if app := newApp(context.Background(), nil, io.Discard, io.Discard); os.Geteuid() != 0 &&
		needsRoot(app, dispatch(os.Args)) && !userSide(app, dispatch(os.Args)) {
		err := identity.Elevate(os.Args[0], os.Args[1:])
		fmt.Fprintln(os.Stderr, "mlc: "+oneLine(err.Error()))
		os.Exit(errs.KindOf(err).ExitCode())
	}
	// A closed pipe or terminal makes writes fail instead of killing mlc
	// half-way through a change.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	os.Exit(run(os.Args, os.Stdin, os.Stdout, os.Stderr))
}

// needsRoot is whether a command line (after dispatch: "mlc", command, ...)
// needs mlc to run as root: everything but help, version and completion. A
// help or version flag counts only among the command's own words and flags,
// before its first argument (`mlc open c1 ls -h` runs ls -h, as root).
func needsRoot(app *cli.App, args []string) bool {
	cmds := app.Commands
	top := true
	for _, a := range args[1:] {
		switch {
		case a == "--":
			return true
		case a == "-h" || a == "--help" || a == "-v" || a == "--version":
			return false
		case strings.HasPrefix(a, "-"):
			continue
		}
		c := findCommand(cmds, a)
		if c == nil {
			return !(top && a == "help")
		}
		if top && (c.Name == "version" || c.Name == "completion") {
			return false
		}
		cmds, top = c.Subcommands, false
	}
	return len(args) > 1
}

// exitStatus is an exit code passed through from a command run in a container.
type exitStatus int

func (e exitStatus) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// run is main without os.Exit, for tests.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	// Interrupts cancel ctx; later ones are caught too (until run returns), so
	// a second Ctrl-C cannot cut short the undo of an interrupted change.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	app := newApp(ctx, stdin, stdout, stderr)
	args, err := normalize(app, dispatch(args))
	if err == nil {
		err = app.Run(args)
	}
	if err == nil {
		return 0
	}
	var es exitStatus
	if errors.As(err, &es) {
		return int(es)
	}
	code := errs.KindOf(err).ExitCode()
	if ctx.Err() != nil {
		code = errs.Interrupted.ExitCode()
	}
	var list config.ErrorList
	if errors.As(err, &list) {
		fmt.Fprintln(stderr, list.Error())
	} else {
		fmt.Fprintln(stderr, "mlc: "+oneLine(err.Error()))
	}
	var oe openError
	if errors.As(err, &oe) && ctx.Err() == nil {
		return errs.OpenFailed.ExitCode()
	}
	return code
}

// openError marks mlc's own failure in `mlc open NAME -- CMD`.
type openError struct{ error }

func (e openError) Unwrap() error { return e.error }

func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " ")), " ")
}

// dispatch turns argv[0] = mlc-NAME into `mlc NAME`.
func dispatch(args []string) []string {
	if len(args) == 0 {
		return []string{"mlc"}
	}
	base := filepath.Base(args[0])
	if name, ok := strings.CutPrefix(base, "mlc-"); ok && name != "" {
		out := []string{"mlc", name}
		return append(out, args[1:]...)
	}
	return append([]string{"mlc"}, args[1:]...)
}

// normalize lets flags follow positional arguments (`mlc create thesis
// pytorch --gpus 1`): for the command being run it moves every flag, with its
// value, in front of the positionals; everything after `--` stays as it is.
// It also accepts the global --config anywhere, and rejects unknown commands.
func normalize(app *cli.App, args []string) ([]string, error) {
	out := []string{args[0]}
	rest := args[1:]
	var global []string
	// Leading global flags.
	for len(rest) > 0 && strings.HasPrefix(rest[0], "-") && rest[0] != "--" {
		n := flagWidth(app.Flags, rest)
		if n == 0 {
			break
		}
		global = append(global, rest[:n]...)
		rest = rest[n:]
	}
	var path []string
	cmds := app.Commands
	var leaf *cli.Command
	for len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
		c := findCommand(cmds, rest[0])
		if c == nil {
			if leaf == nil || len(leaf.Subcommands) > 0 {
				where := "mlc"
				if leaf != nil {
					where = "mlc " + strings.Join(path, " ")
				}
				if rest[0] == "help" && leaf == nil {
					break
				}
				return nil, errs.New(errs.Usage, "unknown command %q (see %s --help)", rest[0], where)
			}
			break
		}
		leaf = c
		path = append(path, rest[0])
		cmds = c.Subcommands
		rest = rest[1:]
		if len(c.Subcommands) == 0 {
			break
		}
	}
	if leaf == nil {
		return append(append(out, global...), rest...), nil
	}
	var flags, pos []string
	for i := 0; i < len(rest); i++ {
		a := rest[i]
		if a == "--" {
			pos = append(pos, rest[i:]...)
			break
		}
		if strings.HasPrefix(a, "-") && a != "-" {
			if n := flagWidth(app.Flags, rest[i:]); n > 0 && isGlobalFlag(a) {
				global = append(global, rest[i:i+n]...)
				i += n - 1
				continue
			}
			n := flagWidth(leaf.Flags, rest[i:])
			if n == 0 {
				n = 1 // unknown: leave it for cli to report
			}
			if o := optional(leaf.Flags, a); o != nil && n == 1 && !strings.Contains(a, "=") {
				flags = append(flags, a+"="+o.bare)
				continue
			}
			flags = append(flags, rest[i:min(i+n, len(rest))]...)
			i += n - 1
			continue
		}
		pos = append(pos, a)
	}
	out = append(out, global...)
	out = append(out, path...)
	out = append(out, flags...)
	return append(out, pos...), nil
}

// optional is the optional-value flag a names among flags, or nil.
func optional(flags []cli.Flag, a string) *optionalValue {
	name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
	for _, f := range flags {
		if o, ok := f.(*optionalValue); ok && slices.Contains(f.Names(), name) {
			return o
		}
	}
	return nil
}

func isNumber(s string) bool {
	_, err := strconv.ParseFloat(s, 64)
	return err == nil && !strings.ContainsAny(s, "xXpPnN")
}

func isConfigFlag(a string) bool {
	return a == "--config" || a == "-config" || strings.HasPrefix(a, "--config=")
}

// isGlobalFlag is whether a is a flag of mlc itself (--config, --server),
// accepted anywhere on the command line.
func isGlobalFlag(a string) bool {
	return isConfigFlag(a) || a == "--server" || a == "-server" || strings.HasPrefix(a, "--server=")
}

// flagWidth is how many args the flag at args[0] takes (1 or 2), 0 if it is
// not one of flags.
func flagWidth(flags []cli.Flag, args []string) int {
	a := strings.TrimLeft(args[0], "-")
	name, _, hasValue := strings.Cut(a, "=")
	for _, f := range flags {
		for _, n := range f.Names() {
			if n != name {
				continue
			}
			if hasValue {
				return 1
			}
			if _, isBool := f.(*cli.BoolFlag); isBool {
				return 1
			}
			if _, opt := f.(*optionalValue); opt {
				if len(args) > 1 && isNumber(args[1]) {
					return 2
				}
				return 1
			}
			if len(args) < 2 {
				return 1
			}
			return 2
		}
	}
	if name == "h" || name == "help" {
		return 1
	}
	return 0
}

func findCommand(cmds []*cli.Command, name string) *cli.Command {
	for _, c := range cmds {
		if c.HasName(name) {
			return c
		}
	}
	return nil
}

func newApp(ctx context.Context, stdin io.Reader, stdout, stderr io.Writer) *cli.App {
	s := &session{ctx: ctx, stdin: stdin, out: stdout, errOut: stderr}
	app := &cli.App{
		Name:    "mlc",
		Usage:   "fair, per-user ML containers on a shared GPU server",
		Version: version,
		Description: `mlc creates persistent containers for each user with the limits of the lab's
policy (resource-limits.yaml), pins GPUs by UUID, cleans up idle containers and
monitors usage. Users reach it through sudo; they are not in the docker group.

Every command is also a link: mlc-create is mlc create, mlc-limits is mlc limits.

Examples:
   mlc limits show                 what you get, and which rule says so
   mlc limits check policy.yaml    validate a policy file
   mlc --config policy.yaml limits show alice`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "config", Usage: "policy `FILE` (default: $MLC_CONFIG, then /etc/mlc/resource-limits.yaml, then the embedded default)"},
			serverFlag,
		},
		Reader:          stdin,
		Writer:          stdout,
		ErrWriter:       stderr,
		HideHelpCommand: true,
		ExitErrHandler:  func(*cli.Context, error) {},
		OnUsageError: func(_ *cli.Context, err error, _ bool) error {
			return errs.Wrap(errs.Usage, err, "")
		},
		DisableSliceFlagSeparator: true,
		Commands: append(append(containerCommands(s), serverCommands(s)...),
			statsCommand(s),
			topCommand(s),
			monitorCommand(s),
			reportCommand(s),
			cleanupCommand(s),
			keepaliveCommand(s),
			gpuCommand(s),
			limitsCommand(s),
			versionCommand(s),
			completionCommand(s),
		),
	}
	setUsageErrors(app.Commands)
	return app
}

func setUsageErrors(cmds []*cli.Command) {
	for _, c := range cmds {
		c.OnUsageError = func(_ *cli.Context, err error, _ bool) error {
			return errs.Wrap(errs.Usage, err, "")
		}
		setUsageErrors(c.Subcommands)
	}
}

func versionCommand(s *session) *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print mlc's version",
		Action: func(c *cli.Context) error {
			fmt.Fprintln(s.out, "mlc", version)
			return nil
		},
	}
}

// noArgs fails when a command got positional arguments it does not take.
func argsBetween(c *cli.Context, lo, hi int, usage string) error {
	n := c.NArg()
	if n < lo || n > hi {
		return errs.New(errs.Usage, "usage: %s", usage)
	}
	return nil
}
