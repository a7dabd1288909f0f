// Package identity says who is calling mlc and whether they are an admin.
//
// Under sudo the caller is the user named by SUDO_UID (sudo sets it; the user
// cannot), trusted only when mlc runs as root. Otherwise the caller is the real
// uid. $USER and $LOGNAME are never consulted.
package identity

import (
	"errors"
	"os"
	"os/user"
	"strconv"
	"strings"

	"github.com/mlc-lab/mlc/config"
	"github.com/mlc-lab/mlc/errs"
)

// Caller is the person mlc acts for.
type Caller struct {
	User    string
	UID     int
	GID     int
	Home    string
	Groups  []string // unix group names
	Admin   bool
	ViaSudo bool
}

// Env is what Current reads; tests fill it by hand.
type Env struct {
	UID, EUID int
	SudoUID   string
}

// ProcessEnv is the running process's Env.
func ProcessEnv() Env {
	return Env{UID: os.Getuid(), EUID: os.Geteuid(), SudoUID: os.Getenv("SUDO_UID")}
}

// Current works out the caller from env, and whether they are an admin under cfg.
func Current(cfg *config.Config, env Env) (*Caller, error) {
	uid, err := env.CallerUID()
	if err != nil {
		return nil, err
	}
	via := env.EUID == 0 && env.UID == 0 && env.SudoUID != ""
	u, err := user.LookupId(strconv.Itoa(uid))
	if err != nil {
		return nil, errs.New(errs.Permission, "uid %d has no user account", uid)
	}
	c := fromUser(u)
	c.ViaSudo = via
	c.Admin = (uid == 0) || IsAdmin(cfg, c.User, c.Groups)
	return c, nil
}

// Lookup finds a user by name (for admins acting with --user).
func Lookup(cfg *config.Config, name string) (*Caller, error) {
	u, err := user.Lookup(name)
	if err != nil {
		var unknown user.UnknownUserError
		if errors.As(err, &unknown) {
			return nil, errs.New(errs.NotFound, "no user account %q", name)
		}
		return nil, errs.Wrap(errs.Internal, err, "looking up %s", name)
	}
	c := fromUser(u)
	c.Admin = c.UID == 0 || IsAdmin(cfg, c.User, c.Groups)
	return c, nil
}

func fromUser(u *user.User) *Caller {
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &Caller{User: u.Username, UID: uid, GID: gid, Home: u.HomeDir, Groups: groupNames(u)}
}

func groupNames(u *user.User) []string {
	ids, err := u.GroupIds()
	if err != nil {
		return nil
	}
	var out []string
	for _, id := range ids {
		if g, err := user.LookupGroupId(id); err == nil {
			out = append(out, g.Name)
		}
	}
	return out
}

// IsAdmin is whether the policy's admins list names user or one of their groups.
func IsAdmin(cfg *config.Config, name string, groups []string) bool {
	for _, a := range cfg.Admins {
		if a == name {
			return true
		}
		if g, ok := strings.CutPrefix(a, "@"); ok {
			for _, ug := range groups {
				if ug == g {
					return true
				}
			}
		}
	}
	return false
}

// SystemDirectory resolves unix groups through the system's name service.
type SystemDirectory struct{}

// Groups implements limits.Directory.
func (SystemDirectory) Groups(name string) ([]string, bool, error) {
	u, err := user.Lookup(name)
	if err != nil {
		var unknown user.UnknownUserError
		if errors.As(err, &unknown) {
			return nil, false, nil
		}
		return nil, false, err
	}
	return groupNames(u), true, nil
}

// ForUser is whether mlc runs as root through sudo on behalf of a non-root
// user: then the environment and --config are the user's, not the admin's.
func (e Env) ForUser() bool {
	return e.EUID == 0 && e.SudoUID != "" && e.SudoUID != "0"
}

// CallerUID is the uid mlc acts for, before any policy is read: SUDO_UID's
// under sudo as root, else the real uid.
func (e Env) CallerUID() (int, error) {
	if e.EUID == 0 && e.UID == 0 && e.SudoUID != "" {
		n, err := strconv.Atoi(e.SudoUID)
		if err != nil || n < 0 {
			return -1, errs.New(errs.Permission, "SUDO_UID %q is not a uid", e.SudoUID)
		}
		return n, nil
	}
	return e.UID, nil
}

// UIDGID is "uid:gid", as docker's --user takes it.
func (c *Caller) UIDGID() string { return strconv.Itoa(c.UID) + ":" + strconv.Itoa(c.GID) }
