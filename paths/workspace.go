package paths

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"

	"github.com/mlc-lab/mlc/errs"
)

// NamePattern is what a workspace name (and a user name used as a directory)
// may look like: one path component, never . or ..
var NamePattern = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}$`)

// Workspace is a user's workspace directory.
type Workspace struct {
	Path    string // <root>/<user>/<name>, the path Docker mounts
	ID      ID
	Created bool
}

// EnsureWorkspace finds or makes <root>/<user>/<name> for the user uid:gid.
//
// root must exist or be creatable, and every level of it must be a real
// directory owned by root that no one else can write. <root>/<user> is made
// root-owned, group the user's, mode 0710 (the user can reach but not rename
// or replace their workspaces); the leaf is made 0700 and given to the user. Everything below
// root is made and checked through file descriptors (os.Root, no links
// followed), and only a directory made here and now is chowned.
func EnsureWorkspace(root, user string, uid, gid int, name string) (Workspace, error) {
	if !NamePattern.MatchString(user) || !NamePattern.MatchString(name) || strings.Contains(name, "..") {
		return Workspace{}, errs.New(errs.Usage, "invalid workspace name %q (letters, digits, _ . -; at most 63)", name)
	}
	real, err := checkRoot(root)
	if err != nil {
		return Workspace{}, err
	}
	r, err := os.OpenRoot(real)
	if err != nil {
		return Workspace{}, errs.Wrap(errs.State, err, "workspace_root %s", root)
	}
	defer r.Close()
	// <user> is root's, group the user's own group, 0710: the user reaches
	// their workspaces; no one else can even test which names exist.
	if err := r.Mkdir(user, 0o710); err == nil {
		if err := r.Chown(user, 0, gid); err != nil {
			return Workspace{}, errs.Wrap(errs.State, err, "workspace_root %s: making %s", root, user)
		}
		if err := r.Chmod(user, 0o710); err != nil {
			return Workspace{}, errs.Wrap(errs.State, err, "workspace_root %s: making %s", root, user)
		}
	} else if !errors.Is(err, fs.ErrExist) {
		return Workspace{}, errs.Wrap(errs.State, err, "workspace_root %s: making %s", root, user)
	}
	if err := rootOwned(r, user); err != nil {
		return Workspace{}, errs.New(errs.State, "workspace_root %s: %s/%s %v; an admin must fix it", root, root, user, err)
	}
	ur, err := r.OpenRoot(user)
	if err != nil {
		return Workspace{}, errs.Wrap(errs.State, err, "workspace_root %s/%s", root, user)
	}
	defer ur.Close()
	ws := Workspace{Path: filepath.Join(real, user, name)}
	err = ur.Mkdir(name, 0o700)
	switch {
	case err == nil:
		ws.Created = true
	case errors.Is(err, fs.ErrExist):
	default:
		return Workspace{}, errs.Wrap(errs.State, err, "making workspace %s", ws.Path)
	}
	fi, err := ur.Lstat(name)
	if err != nil {
		return Workspace{}, errs.Wrap(errs.State, err, "workspace %s", ws.Path)
	}
	if !fi.IsDir() {
		return Workspace{}, errs.New(errs.State, "workspace %s is not a directory; an admin must fix it", ws.Path)
	}
	f, err := ur.OpenFile(name, os.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return Workspace{}, errs.Wrap(errs.State, err, "workspace %s", ws.Path)
	}
	defer f.Close()
	if ws.Created {
		if err := f.Chown(uid, gid); err != nil {
			return Workspace{}, errs.Wrap(errs.State, err, "giving workspace %s to uid %d", ws.Path, uid)
		}
	}
	st, err := f.Stat()
	if err != nil {
		return Workspace{}, errs.Wrap(errs.State, err, "workspace %s", ws.Path)
	}
	sys := st.Sys().(*syscall.Stat_t)
	if int(sys.Uid) != uid {
		return Workspace{}, errs.New(errs.State, "workspace %s belongs to another account (uid %d); an admin must move it", ws.Path, sys.Uid)
	}
	ws.ID = ID{Dev: uint64(sys.Dev), Ino: sys.Ino}
	return ws, nil
}

// RemoveEmptyWorkspace removes <root>/<user>/<name> if it is an empty
// directory (a create that made it failed), fd-relative.
func RemoveEmptyWorkspace(root, user, name string) error {
	r, err := userRoot(root, user, name)
	if err != nil {
		return err
	}
	defer r.Close()
	if fi, err := r.Lstat(name); err != nil || !fi.IsDir() {
		return err
	}
	return r.Remove(name) // rmdir: refuses a directory that is not empty
}

// userRoot opens the root-owned <root>/<user> for work on workspace name,
// which must be a valid name.
func userRoot(root, user, name string) (*os.Root, error) {
	if !NamePattern.MatchString(user) || !NamePattern.MatchString(name) || strings.Contains(name, "..") {
		return nil, errs.New(errs.Usage, "invalid workspace name %q", name)
	}
	real, err := checkRoot(root)
	if err != nil {
		return nil, err
	}
	r, err := os.OpenRoot(filepath.Join(real, user))
	if err != nil {
		return nil, err
	}
	if err := rootOwned(r, "."); err != nil {
		r.Close()
		return nil, errs.New(errs.State, "workspace_root %s/%s %v", root, user, err)
	}
	return r, nil
}

// RemoveWorkspace removes <root>/<user>/<name> and everything in it (a copy
// that made it was undone), or with contentsOnly what is in it (a copy that
// filled an empty one), fd-relative below the root-owned <root>/<user>:
// nothing outside it is touched, whatever links the user put inside.
func RemoveWorkspace(root, user, name string, contentsOnly bool) error {
	r, err := userRoot(root, user, name)
	if err != nil {
		return err
	}
	defer r.Close()
	if !contentsOnly {
		return r.RemoveAll(name)
	}
	fi, err := r.Lstat(name)
	if err != nil || !fi.IsDir() {
		return err
	}
	ws, err := r.OpenRoot(name)
	if err != nil {
		return err
	}
	defer ws.Close()
	d, err := ws.Open(".")
	if err != nil {
		return err
	}
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := ws.RemoveAll(n); err != nil {
			return err
		}
	}
	return nil
}

// checkRoot makes root if missing (0711) and checks that every level of it
// is a directory owned by root and not writable by group or others, so no
// user can replace any part of a workspace path. It returns root without links.
func checkRoot(root string) (string, error) {
	if !filepath.IsAbs(root) || filepath.Clean(root) == "/" {
		return "", errs.New(errs.Config, "workspace_root %q must be an absolute directory other than /", root)
	}
	if _, err := os.Lstat(root); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(root, 0o711); err != nil {
			return "", errs.Wrap(errs.State, err, "making workspace_root %s", root)
		}
	}
	real, err := filepath.EvalSymlinks(root)
	if err != nil {
		return "", errs.Wrap(errs.State, err, "workspace_root %s", root)
	}
	for p := real; ; p = filepath.Dir(p) {
		fi, err := os.Lstat(p)
		if err != nil {
			return "", errs.Wrap(errs.State, err, "workspace_root %s", root)
		}
		// Above the root itself a sticky directory (like /tmp) is fine: no one
		// can rename or replace root's entry in it.
		if err := safeDir(fi, p != real); err != nil {
			return "", errs.New(errs.Config, "workspace_root %s: %s %v; every level must be root's and not group- or world-writable", root, p, err)
		}
		if p == "/" {
			break
		}
	}
	return real, nil
}

func rootOwned(r *os.Root, name string) error {
	fi, err := r.Lstat(name)
	if err != nil {
		return err
	}
	return safeDir(fi, false)
}

func safeDir(fi fs.FileInfo, stickyOK bool) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	switch {
	case !fi.IsDir():
		return fmt.Errorf("is not a directory")
	case !ok || st.Uid != 0:
		return fmt.Errorf("is not owned by root")
	case fi.Mode().Perm()&0o022 != 0 && !(stickyOK && fi.Mode()&fs.ModeSticky != 0):
		return fmt.Errorf("is writable by group or others (mode %04o)", fi.Mode().Perm())
	}
	return nil
}
