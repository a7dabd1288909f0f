// Package paths handles every path a user names, and every directory mlc
// makes for a user, without ever following a link as root.
//
//   - Paths a user names (--data, --models, a policy file to check) are
//     resolved and opened by a helper process that runs with the user's own
//     uid, gid and groups (AsUser); what it cannot see, mlc cannot see for it.
//   - Workspaces are made fd-relative (os.Root, O_NOFOLLOW) below a root-owned
//     directory whose every level above the leaf the user cannot write, so the
//     path Docker mounts can never be swapped for a link.
//   - Walk opens an absolute path one component at a time with O_NOFOLLOW and
//     returns the identity (device, inode) of what it names: mlc records it at
//     create and compares it before every start.
package paths

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/mlc-lab/mlc/errs"
)

// ID is a directory's identity: device and inode.
type ID struct {
	Dev uint64 `json:"dev"`
	Ino uint64 `json:"ino"`
}

func (i ID) String() string { return fmt.Sprintf("%d:%d", i.Dev, i.Ino) }

// ParseID reads "dev:ino".
func ParseID(s string) (ID, bool) {
	d, i, ok := strings.Cut(s, ":")
	if !ok {
		return ID{}, false
	}
	dev, err1 := strconv.ParseUint(d, 10, 64)
	ino, err2 := strconv.ParseUint(i, 10, 64)
	return ID{dev, ino}, err1 == nil && err2 == nil
}

func idOf(st *unix.Stat_t) ID { return ID{Dev: uint64(st.Dev), Ino: st.Ino} }

// Walk opens the absolute, clean path p one component at a time, refusing
// any symbolic link on the way (the last component included), and returns
// the identity of the directory it names. It reads nothing but the names.
func Walk(p string) (ID, error) {
	id, _, err := walkOwned(p, nil)
	return id, err
}

// Pinned is Walk that also makes sure no one but root can replace any part
// of p, so that the directory the engine finds at p whenever it resolves it
// again (every start, its own restarts included, following links as root)
// is the one mlc checked now:
//   - every directory above the leaf belongs to root, and neither its group
//     nor others may write it, except a sticky directory (like /tmp) whose
//     entry on the path belongs to root (only root may rename it then);
//   - the leaf belongs to owner or to root.
//
// It refuses links anywhere, like Walk, and returns the leaf's identity.
func Pinned(p string, owner int) (ID, error) {
	id, leafUID, err := walkOwned(p, func(dir, child *unix.Stat_t, where, part string) error {
		if dir.Uid != 0 {
			return fmt.Errorf("%s is not root's, so %s could be replaced", where, part)
		}
		if dir.Mode&0o022 != 0 && !(dir.Mode&unix.S_ISVTX != 0 && child.Uid == 0) {
			return fmt.Errorf("%s is writable by others, so %s could be replaced", where, part)
		}
		return nil
	})
	if err != nil {
		return ID{}, err
	}
	if leafUID != 0 && int(leafUID) != owner {
		return ID{}, fmt.Errorf("%s belongs to uid %d", p, leafUID)
	}
	return id, nil
}

// step judges one step of a walk: dir (at where) holds child as part.
type step func(dir, child *unix.Stat_t, where, part string) error

// walkOwned is the one walk: component by component with O_NOFOLLOW, each
// step judged by check (when not nil); it returns the leaf's identity and owner.
func walkOwned(p string, check step) (ID, uint32, error) {
	if !filepath.IsAbs(p) || filepath.Clean(p) != p {
		return ID{}, 0, fmt.Errorf("%s: not an absolute clean path", p)
	}
	fd, err := unix.Open("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return ID{}, 0, err
	}
	defer func() { unix.Close(fd) }()
	var dir unix.Stat_t
	if err := unix.Fstat(fd, &dir); err != nil {
		return ID{}, 0, err
	}
	where := "/"
	for _, part := range strings.Split(strings.TrimPrefix(p, "/"), "/") {
		if part == "" {
			continue
		}
		next, err := unix.Openat(fd, part, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return ID{}, 0, err
		}
		unix.Close(fd)
		fd = next
		var child unix.Stat_t
		if err := unix.Fstat(fd, &child); err != nil {
			return ID{}, 0, err
		}
		if check != nil {
			if err := check(&dir, &child, where, part); err != nil {
				return ID{}, 0, err
			}
		}
		dir, where = child, filepath.Join(where, part)
	}
	return idOf(&dir), dir.Uid, nil
}

// Under is whether the clean absolute path p lies at or below root.
func Under(p, root string) bool {
	rel, err := filepath.Rel(root, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

// NotAllowed is the one answer for every refused path: it never says why,
// so it shows nothing of what the caller could not see.
func NotAllowed(what, p, where string) error {
	return errs.New(errs.Permission, "%s %s: not allowed (it must be an existing directory you can read, below %s, that is yours or root's and whose parent directories only root can change, like /data/USER or your home itself)", what, p, where)
}
