package paths

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/mlc-lab/mlc/errs"
)

// HelperArg is argv[1] of the helper process. mlc's main hands such a call
// to Serve before anything else. Serve refuses to run as root: the helper
// exists to have a user's rights, never to lend root's.
const HelperArg = "__mlc-as-user"

// MaxPolicy is the most `mlc limits check FILE` reads of a file.
const MaxPolicy = 1 << 20

// Cred is the rights a helper runs with.
type Cred struct {
	UID, GID int
	Groups   []uint32
}

// CredFor looks up uid's primary group and supplementary groups.
func CredFor(uid int) (Cred, error) {
	u, err := user.LookupId(strconv.Itoa(uid))
	if err != nil {
		return Cred{}, errs.New(errs.Permission, "uid %d has no user account", uid)
	}
	gid, _ := strconv.Atoi(u.Gid)
	c := Cred{UID: uid, GID: gid}
	ids, _ := u.GroupIds()
	for _, s := range ids {
		if g, err := strconv.ParseUint(s, 10, 32); err == nil {
			c.Groups = append(c.Groups, uint32(g))
		}
	}
	return c, nil
}

// Resolved is a directory a user named, as that user sees it.
type Resolved struct {
	Real string `json:"real"` // no links left
	ID   ID     `json:"id"`
}

// reply is what the helper prints.
type reply struct {
	Resolved *Resolved `json:"resolved,omitempty"`
	Data     []byte    `json:"data,omitempty"`
	Err      string    `json:"err,omitempty"` // one of the codes below
	Detail   string    `json:"detail,omitempty"`
}

// Failure codes: what the user could learn by trying it themselves.
const (
	codeNotFound   = "not-found"
	codeDenied     = "denied"
	codeNotDir     = "not-a-directory"
	codeNotRegular = "not-a-regular-file"
	codeIsDir      = "is-a-directory"
	codeTooLarge   = "too-large"
	codeExists     = "exists"
	codeOther      = "failed"
)

// Failure is a helper's refusal, with the code of what went wrong as the
// user would have seen it.
type Failure struct {
	Code   string
	Detail string
}

func (f *Failure) Error() string {
	if f.Detail != "" {
		return f.Code + ": " + f.Detail
	}
	return f.Code
}

// Runner does file operations with a user's rights: in this process when it
// already has exactly those rights (root for root, or mlc run without sudo),
// else in a helper process started as the user.
type Runner struct {
	// Exe is the binary started as the helper (default /proc/self/exe).
	Exe string
	// Timeout bounds one helper (a hung network file system): default 20s.
	Timeout time.Duration
}

func (r Runner) call(ctx context.Context, c Cred, op string, args ...string) (*reply, error) {
	return r.callIn(ctx, c, nil, op, args...)
}

// callIn is call with in as the operation's standard input (nil: none).
func (r Runner) callIn(ctx context.Context, c Cred, in []byte, op string, args ...string) (*reply, error) {
	if c.UID == os.Geteuid() && (c.UID == 0 || c.UID == os.Getuid()) {
		rep := serveIn(op, args, bytes.NewReader(in))
		return rep, rep.failure()
	}
	if os.Geteuid() != 0 {
		return nil, errs.New(errs.Permission, "mlc is not running as root, so it cannot act as uid %d", c.UID)
	}
	exe := r.Exe
	if exe == "" {
		exe = "/proc/self/exe"
	}
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = 20 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, append([]string{HelperArg, op}, args...)...)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C"}
	cmd.Dir = "/"
	if in != nil {
		cmd.Stdin = bytes.NewReader(in)
	}
	groups := c.Groups
	if groups == nil {
		groups = []uint32{}
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: uint32(c.UID), Gid: uint32(c.GID), Groups: groups},
		Pdeathsig:  syscall.SIGKILL,
	}
	var out, errOut bytes.Buffer
	cmd.Stdout = &limitedBuffer{buf: &out, max: 2*MaxPolicy + 4096}
	cmd.Stderr = &limitedBuffer{buf: &errOut, max: 4096}
	err := cmd.Run()
	var rep reply
	if jerr := json.Unmarshal(out.Bytes(), &rep); jerr != nil {
		if ctx.Err() != nil {
			return nil, errs.New(errs.Unavailable, "a path check as uid %d took longer than %v", c.UID, timeout)
		}
		return nil, errs.New(errs.Internal, "path helper as uid %d failed: %v %s", c.UID, err, bytes.TrimSpace(errOut.Bytes()))
	}
	return &rep, rep.failure()
}

func (rep *reply) failure() error {
	if rep.Err == "" {
		return nil
	}
	return &Failure{Code: rep.Err, Detail: rep.Detail}
}

type limitedBuffer struct {
	buf *bytes.Buffer
	max int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.max - l.buf.Len(); room > 0 {
		if len(p) > room {
			l.buf.Write(p[:room])
		} else {
			l.buf.Write(p)
		}
	}
	return len(p), nil
}

// ResolveDir resolves the absolute path p as the user: links followed with
// the user's rights, and the result must be a directory the user can read
// and enter.
func (r Runner) ResolveDir(ctx context.Context, c Cred, p string) (Resolved, error) {
	rep, err := r.call(ctx, c, "resolve", p)
	if err != nil {
		return Resolved{}, err
	}
	if rep.Resolved == nil {
		return Resolved{}, &Failure{Code: codeOther}
	}
	return *rep.Resolved, nil
}

// ReadFile reads the regular file p as the user, at most max bytes.
func (r Runner) ReadFile(ctx context.Context, c Cred, p string, max int64) ([]byte, error) {
	rep, err := r.call(ctx, c, "read", p, strconv.FormatInt(max, 10))
	if err != nil {
		return nil, err
	}
	return rep.Data, nil
}

// Link makes dir (and its parents) as the user and a link dir/name -> target
// in it, unless one is there already.
func (r Runner) Link(ctx context.Context, c Cred, dir, name, target string) error {
	_, err := r.call(ctx, c, "link", dir, name, target)
	return err
}

// MaxWrite is the most WriteFile writes.
const MaxWrite = 64 << 10

// WriteFile creates or truncates the regular file dir/name as the user and
// writes data to it (at most MaxWrite bytes). dir must be a directory the
// user owns, named without a link as its last component; name is one
// component, never followed if it is a link, and must be a regular file
// when it exists (nothing else is opened for writing). A new file is made
// 0644 less mlc's umask.
func (r Runner) WriteFile(ctx context.Context, c Cred, dir, name string, data []byte) error {
	if len(data) > MaxWrite {
		return &Failure{Code: codeTooLarge}
	}
	if data == nil {
		data = []byte{}
	}
	_, err := r.callIn(ctx, c, data, "write-file", dir, name)
	return err
}

// Touch sets the modification time of the regular file dir/name to mtime as
// the user, creating it (empty, 0644) when missing: the same rules as
// WriteFile for dir and name. Its access time becomes now.
func (r Runner) Touch(ctx context.Context, c Cred, dir, name string, mtime time.Time) error {
	_, err := r.call(ctx, c, "touch", dir, name, strconv.FormatInt(mtime.Unix(), 10), strconv.Itoa(mtime.Nanosecond()))
	return err
}

// Serve is the helper process: it runs one operation and prints its reply.
// It never runs as root.
func Serve(args []string, out io.Writer) int {
	if os.Geteuid() == 0 || os.Getuid() == 0 {
		fmt.Fprintln(os.Stderr, "mlc: the path helper does not run as root")
		return 2
	}
	if len(args) < 1 {
		return 2
	}
	rep := serveIn(args[0], args[1:], os.Stdin)
	if err := json.NewEncoder(out).Encode(rep); err != nil {
		return 1
	}
	return 0
}

func serve(op string, args []string) *reply {
	return serveIn(op, args, nil)
}

// serveIn runs one operation; in is its standard input (only write-file
// reads it).
func serveIn(op string, args []string, in io.Reader) *reply {
	switch {
	case op == "resolve" && len(args) == 1:
		return resolve(args[0])
	case op == "read" && len(args) == 2:
		max, err := strconv.ParseInt(args[1], 10, 64)
		if err != nil || max < 0 || max > MaxPolicy {
			return &reply{Err: codeOther, Detail: "bad size"}
		}
		return readFile(args[0], max)
	case op == "link" && len(args) == 3:
		return link(args[0], args[1], args[2])
	case op == "write-file" && len(args) == 2:
		if in == nil {
			in = bytes.NewReader(nil)
		}
		return writeFile(args[0], args[1], in)
	case op == "touch" && len(args) == 4:
		sec, err1 := strconv.ParseInt(args[2], 10, 64)
		nsec, err2 := strconv.ParseInt(args[3], 10, 64)
		if err1 != nil || err2 != nil || nsec < 0 || nsec > 999999999 {
			return &reply{Err: codeOther, Detail: "bad time"}
		}
		return touch(args[0], args[1], unix.Timespec{Sec: sec, Nsec: nsec})
	}
	return &reply{Err: codeOther, Detail: "unknown operation"}
}

func code(err error) *reply {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return &reply{Err: codeNotFound}
	case errors.Is(err, fs.ErrPermission), errors.Is(err, syscall.ELOOP):
		return &reply{Err: codeDenied}
	case errors.Is(err, syscall.ENOTDIR):
		return &reply{Err: codeNotDir}
	}
	return &reply{Err: codeOther}
}

func resolve(p string) *reply {
	if !filepath.IsAbs(p) {
		return &reply{Err: codeOther, Detail: "not absolute"}
	}
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return code(err)
	}
	fd, err := unix.Open(real, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return code(err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return code(err)
	}
	// Readable and searchable by this user, not merely present.
	if err := unix.Faccessat(unix.AT_FDCWD, real, unix.R_OK|unix.X_OK, 0); err != nil {
		return code(err)
	}
	return &reply{Resolved: &Resolved{Real: real, ID: idOf(&st)}}
}

func readFile(p string, max int64) *reply {
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		return code(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return code(err)
	}
	if st.IsDir() {
		return &reply{Err: codeIsDir}
	}
	if !st.Mode().IsRegular() {
		return &reply{Err: codeNotRegular}
	}
	if st.Size() > max {
		return &reply{Err: codeTooLarge}
	}
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return code(err)
	}
	if int64(len(data)) > max {
		return &reply{Err: codeTooLarge}
	}
	return &reply{Data: data}
}

func link(dir, name, target string) *reply {
	if !filepath.IsAbs(dir) || name == "" || name == "." || name == ".." || filepath.Base(name) != name {
		return &reply{Err: codeOther, Detail: "bad link"}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return code(err)
	}
	p := filepath.Join(dir, name)
	err := os.Symlink(target, p)
	if errors.Is(err, fs.ErrExist) {
		if cur, lerr := os.Readlink(p); lerr == nil && cur == target {
			return &reply{}
		}
		return &reply{Err: codeExists}
	}
	if err != nil {
		return code(err)
	}
	return &reply{}
}

// ownDir opens dir (absolute; its last component not a link) as a directory
// that the process's uid owns.
func ownDir(dir, name string) (int, *reply) {
	if !filepath.IsAbs(dir) || name == "" || name == "." || name == ".." || filepath.Base(name) != name {
		return -1, &reply{Err: codeOther, Detail: "bad name"}
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, code(err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, code(err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR || int(st.Uid) != os.Getuid() {
		unix.Close(fd)
		return -1, &reply{Err: codeDenied}
	}
	return fd, nil
}

// openOwnFile opens (creating 0644 when missing) dir/name for writing, never
// through a link, and only a regular file: nothing is truncated or written
// before that is known.
func openOwnFile(dir, name string) (*os.File, *reply) {
	dfd, rep := ownDir(dir, name)
	if rep != nil {
		return nil, rep
	}
	defer unix.Close(dfd)
	fd, err := unix.Openat(dfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return nil, code(err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, code(err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return nil, &reply{Err: codeNotRegular}
	}
	return os.NewFile(uintptr(fd), filepath.Join(dir, name)), nil
}

func writeFile(dir, name string, in io.Reader) *reply {
	data, err := io.ReadAll(io.LimitReader(in, MaxWrite+1))
	if err != nil {
		return code(err)
	}
	if len(data) > MaxWrite {
		return &reply{Err: codeTooLarge}
	}
	f, rep := openOwnFile(dir, name)
	if rep != nil {
		return rep
	}
	defer f.Close()
	if err := f.Truncate(0); err != nil {
		return code(err)
	}
	if _, err := f.Write(data); err != nil {
		return code(err)
	}
	if err := f.Close(); err != nil {
		return code(err)
	}
	return &reply{}
}

func touch(dir, name string, mtime unix.Timespec) *reply {
	f, rep := openOwnFile(dir, name)
	if rep != nil {
		return rep
	}
	defer f.Close()
	// futimens(fd): the file just opened, never a name again.
	ts := [2]unix.Timespec{{Nsec: unix.UTIME_NOW}, mtime}
	if _, _, e := unix.Syscall6(unix.SYS_UTIMENSAT, f.Fd(), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0); e != 0 {
		return code(e)
	}
	return &reply{}
}
