// Package errs classifies mlc's errors into kinds, and keeps the one table that
// maps each kind to the process exit code. Packages below mlc/ return errors
// made or wrapped here; mlc/ only asks KindOf(err).ExitCode().
package errs

import (
	"errors"
	"fmt"
)

// Kind is the class of a failure, as a user or a script sees it.
type Kind int

// The kinds. Their exit codes are the table below; keep docs/user-guide.md's
// "Exit codes" section in step.
const (
	Internal    Kind = iota // a bug or an unexpected failure
	Usage                   // bad command line: unknown command or flag, wrong arguments
	Config                  // the policy file is missing, unreadable or invalid
	NotFound                // no such container, user, image alias or GPU
	Permission              // the caller may not do this
	Conflict                // exists already, running, protected, name or port taken
	Quota                   // asks for more than the policy gives
	Engine                  // the Docker engine is not running or not reachable
	Image                   // the image is missing and cannot be pulled
	Unavailable             // no free GPU (without --wait), a wait timed out, or no free network address
	State                   // the state directory or ledger is unusable
	Canceled                // the user said no to a confirmation
	Partial                 // some actions of a run failed (mlc cleanup); the others were done
	Interrupted             // Ctrl-C, SIGTERM or SIGHUP (or sudo dying) stopped the command
	OpenFailed              // mlc itself failed in `mlc open NAME -- CMD`, whose own codes pass through
)

// Table is the one table of exit codes. 0 is success; a command run inside a
// container (mlc open NAME -- CMD) exits with that command's code instead.
var Table = []struct {
	Kind Kind
	Code int
	Name string
	What string
}{
	{Internal, 1, "internal", "unexpected failure (a bug: please report it)"},
	{Usage, 2, "usage", "unknown command or flag, wrong number of arguments, invalid value"},
	{Config, 3, "config", "resource-limits.yaml missing, unreadable or invalid"},
	{NotFound, 4, "not-found", "no such container, user, image alias or GPU"},
	{Permission, 5, "permission", "the caller may not do this (not an admin, not their container, socket denied)"},
	{Conflict, 6, "conflict", "already exists, is running, is protected, or a port is taken"},
	{Quota, 7, "quota", "the request exceeds a limit of the policy"},
	{Engine, 8, "engine", "the Docker engine is not running or not reachable"},
	{Image, 9, "image", "the image is not present and cannot be pulled"},
	{Unavailable, 10, "unavailable", "no free GPU, waiting for one timed out, no network address left, or another server did not answer"},
	{State, 11, "state", "the state directory or the GPU ledger cannot be used"},
	{Canceled, 12, "canceled", "the user declined a confirmation"},
	{Partial, 13, "partial", "some actions failed and the others were done (mlc cleanup), or some servers did not answer (mlc servers, list --servers)"},
	{OpenFailed, 125, "open-failed", "mlc open NAME -- CMD: mlc itself failed (CMD's own codes pass through, so mlc's are not used there)"},
	{Interrupted, 130, "interrupted", "interrupted (Ctrl-C, SIGTERM, SIGHUP); a change under way was undone"},
}

// ExitCode is the process exit code for k.
func (k Kind) ExitCode() int {
	for _, r := range Table {
		if r.Kind == k {
			return r.Code
		}
	}
	return 1
}

// FromExitCode is the kind whose exit code is code (Internal for a code
// not in the table): how a remote mlc's failure keeps its kind.
func FromExitCode(code int) Kind {
	for _, r := range Table {
		if r.Code == code {
			return r.Kind
		}
	}
	return Internal
}

func (k Kind) String() string {
	for _, r := range Table {
		if r.Kind == k {
			return r.Name
		}
	}
	return "internal"
}

// Error is an error with a kind.
type Error struct {
	Kind Kind
	Msg  string
	Err  error
}

func (e *Error) Error() string {
	switch {
	case e.Msg == "" && e.Err != nil:
		return e.Err.Error()
	case e.Err != nil:
		return e.Msg + ": " + e.Err.Error()
	}
	return e.Msg
}

func (e *Error) Unwrap() error { return e.Err }

// New makes an error of kind k.
func New(k Kind, format string, a ...any) error {
	return &Error{Kind: k, Msg: fmt.Sprintf(format, a...)}
}

// Wrap gives err the kind k and a prefix; nil stays nil.
func Wrap(k Kind, err error, format string, a ...any) error {
	if err == nil {
		return nil
	}
	return &Error{Kind: k, Msg: fmt.Sprintf(format, a...), Err: err}
}

// KindOf is the kind of the outermost classified error in err's chain,
// Internal when none is classified.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	var k interface{ ErrKind() Kind }
	if errors.As(err, &k) {
		return k.ErrKind()
	}
	return Internal
}

// Is reports whether err is of kind k.
func Is(err error, k Kind) bool { return err != nil && KindOf(err) == k }
