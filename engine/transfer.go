package engine

// Copying a container's changes to another engine (mlc copy): the source
// reads the container's writable layer (the overlay2 upper directory, the
// container paused meanwhile) as the engine's own layer format, a tar whose
// .wh. entries are deletions; the target writes the files into a new
// container of the same catalogue image through the engine's archive API and
// records the deletions as overlay2 does. Only the changes travel, streamed:
// no image is committed, saved or loaded on either side.
//
// The wire format is that tar, every header written afresh, ended by a
// trailer entry (marked by a PAX record no other entry has) saying how many
// entries and bytes were sent: Go's tar reader takes a stream cut short at
// an entry's end for a clean end, so the trailer is what says it all arrived.

import (
	"archive/tar"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"syscall"
	"time"

	units "github.com/docker/go-units"
	"golang.org/x/sys/unix"

	"github.com/mlc-lab/mlc/errs"
)

// Detail is an inspected container with what a copy carries over.
type Detail struct {
	Container
	Env      []string // the container's environment, image variables included
	ImageEnv []string // its image's environment
	SizeRw   int64    // the engine's size of the writable layer
}

// Detail inspects one container, its writable layer's size and its image's
// environment included.
func (c *Client) Detail(ctx context.Context, id string) (Detail, error) {
	r, _, err := c.api.ContainerInspectWithRaw(ctx, id, true)
	if err != nil {
		return Detail{}, c.classify(err, "inspecting "+short(id))
	}
	d := Detail{Container: containerOf(r)}
	d.Env = r.Config.Env
	img, err := c.api.ImageInspect(ctx, r.Image)
	if err != nil {
		return Detail{}, c.classify(err, "image of "+short(id))
	}
	if img.Config != nil {
		d.ImageEnv = img.Config.Env
	}
	if r.SizeRw != nil {
		d.SizeRw = *r.SizeRw
	}
	for _, m := range r.Mounts {
		if m.Type == "bind" {
			d.Mounts = append(d.Mounts, Mount{Source: m.Source, Target: m.Destination, ReadOnly: !m.RW})
		}
	}
	if r.HostConfig != nil {
		for p, bs := range r.HostConfig.PortBindings {
			for _, b := range bs {
				d.Ports = append(d.Ports, Port{HostIP: b.HostIP, HostPort: b.HostPort, ContainerPort: p.Port(), Proto: p.Proto()})
			}
		}
	}
	return d, nil
}

// FreeDisk is the free space of the engine's data root, in bytes.
func (c *Client) FreeDisk(ctx context.Context) (int64, error) {
	info, err := c.api.Info(ctx)
	if err != nil {
		return 0, c.classify(err, "engine info")
	}
	var st unix.Statfs_t
	if err := unix.Statfs(info.DockerRootDir, &st); err != nil {
		return 0, errs.Wrap(errs.Internal, err, "free space of the engine's data root")
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

// Exported is what ExportChanges sent.
type Exported struct {
	Entries int64 `json:"entries"`
	Bytes   int64 `json:"bytes"` // file contents
}

// endKey marks the wire stream's trailer: a PAX record no entry of a layer
// carries (the sender writes every entry's header afresh, without any).
const endKey = "MLC.copy.end"

// ExportChanges writes container id's writable layer to w, in the engine's
// layer format (a tar whose .wh. entries are deletions), followed by the
// trailer. The layer is read from the storage driver's upper directory
// (overlay2), as the engine itself reads it for a commit, with the
// container paused meanwhile (as commit pauses it) so that nothing in it
// changes, or is swapped for a link, while it is read.
func (c *Client) ExportChanges(ctx context.Context, id string, w io.Writer, phase func(string), progress func(int64)) (Exported, error) {
	rt, err := c.Runtime(ctx, id)
	if err != nil {
		return Exported{}, err
	}
	if rt.UpperDir == "" {
		return Exported{}, errs.New(errs.Unavailable, "this server's storage driver is not overlay2, so mlc cannot read the container's changes")
	}
	if rt.Pid != 0 {
		phase("pausing")
		if err := c.api.ContainerPause(ctx, id); err != nil {
			return Exported{}, c.classify(err, "pausing "+short(id))
		}
		defer func() {
			bg, cancel := context.WithTimeout(context.WithoutCancel(ctx), 60*time.Second)
			defer cancel()
			_ = c.api.ContainerUnpause(bg, id)
		}()
	}
	phase("sending")
	root, err := os.OpenRoot(rt.UpperDir)
	if err != nil {
		return Exported{}, errs.Wrap(errs.Internal, err, "the writable layer of %s", short(id))
	}
	defer root.Close()
	l := newLayerOut(w, progress)
	if err := walkLayer(ctx, root, l); err != nil {
		return l.out, err
	}
	return l.end()
}

// layerOut writes the wire stream: entries (counted), then the trailer.
type layerOut struct {
	tw       *tar.Writer
	out      Exported
	buf      []byte
	progress func(int64)
}

func newLayerOut(w io.Writer, progress func(int64)) *layerOut {
	return &layerOut{tw: tar.NewWriter(w), buf: make([]byte, copyBuf), progress: progress}
}

// entry writes h and, for a regular file, exactly h.Size bytes of body.
func (l *layerOut) entry(h *tar.Header, body io.Reader) error {
	if err := l.tw.WriteHeader(h); err != nil {
		return errs.Wrap(errs.Unavailable, err, "sending the changes")
	}
	l.out.Entries++
	if h.Typeflag != tar.TypeReg {
		return nil
	}
	src := io.LimitReader(body, h.Size)
	if l.progress != nil {
		base := l.out.Bytes
		src = &countingReader{r: src, f: func(k int64) { base += k; l.progress(base) }}
	}
	n, err := io.CopyBuffer(l.tw, src, l.buf)
	l.out.Bytes += n
	if err == nil && n != h.Size {
		err = fmt.Errorf("%s shrank while it was read", h.Name)
	}
	if err != nil {
		return errs.Wrap(errs.Unavailable, err, "sending the changes")
	}
	return nil
}

// end writes the trailer and closes the stream.
func (l *layerOut) end() (Exported, error) {
	end, _ := json.Marshal(l.out)
	if err := l.tw.WriteHeader(&tar.Header{Name: "mlc-copy-end", Typeflag: tar.TypeReg, Mode: 0o600, Size: int64(len(end)),
		PAXRecords: map[string]string{endKey: "1"}, Format: tar.FormatPAX}); err != nil {
		return l.out, errs.Wrap(errs.Unavailable, err, "sending the changes")
	}
	if _, err := l.tw.Write(end); err != nil {
		return l.out, errs.Wrap(errs.Unavailable, err, "sending the changes")
	}
	return l.out, l.tw.Close()
}

// walkLayer writes the overlay2 upper directory under root as the engine's
// layer format: a 0/0 character device is a deletion (.wh.NAME), a
// directory with trusted.overlay.opaque=y hides the image's contents
// (.wh..wh..opq). Root reads a directory the container's processes can
// write, so every name is opened fd-relative below root, never through a
// link (os.Root, and O_NOFOLLOW on the last component), and a file that is
// no longer what was listed is an error: a process that swaps a file for a
// link while it is read gets the copy refused, never a file of the host.
func walkLayer(ctx context.Context, root *os.Root, l *layerOut) error {
	links := map[[2]uint64]string{}
	var walk func(dir string) error
	walk = func(dir string) error {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		d, err := root.OpenFile(dir, os.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
		if err != nil {
			return err
		}
		names, err := d.Readdirnames(-1)
		d.Close()
		if err != nil {
			return err
		}
		sort.Strings(names)
		for _, n := range names {
			p := path.Join(dir, n)
			fi, err := root.Lstat(p)
			if err != nil {
				return err
			}
			st, _ := fi.Sys().(*syscall.Stat_t)
			if st == nil {
				return errs.New(errs.Internal, "no owner for %s", p)
			}
			h := &tar.Header{Name: p, Mode: int64(st.Mode & 0o7777), Uid: int(st.Uid), Gid: int(st.Gid), ModTime: fi.ModTime(), Format: tar.FormatPAX}
			switch st.Mode & syscall.S_IFMT {
			case syscall.S_IFDIR:
				h.Typeflag, h.Name = tar.TypeDir, p+"/"
				if err := l.entry(h, nil); err != nil {
					return err
				}
				if opaque(root, p) {
					if err := l.entry(&tar.Header{Name: p + "/.wh..wh..opq", Typeflag: tar.TypeReg, Mode: 0o600, Format: tar.FormatPAX}, nil); err != nil {
						return err
					}
				}
				if err := walk(p); err != nil {
					return err
				}
			case syscall.S_IFCHR:
				if st.Rdev != 0 {
					continue // a device, not a deletion: not copied
				}
				if err := l.entry(&tar.Header{Name: path.Join(dir, ".wh."+n), Typeflag: tar.TypeReg, Mode: 0o600, Format: tar.FormatPAX}, nil); err != nil {
					return err
				}
			case syscall.S_IFLNK:
				target, err := root.Readlink(p)
				if err != nil {
					return err
				}
				h.Typeflag, h.Linkname = tar.TypeSymlink, target
				if err := l.entry(h, nil); err != nil {
					return err
				}
			case syscall.S_IFIFO:
				h.Typeflag = tar.TypeFifo
				if err := l.entry(h, nil); err != nil {
					return err
				}
			case syscall.S_IFREG:
				key := [2]uint64{uint64(st.Dev), st.Ino}
				if first, ok := links[key]; ok && st.Nlink > 1 {
					h.Typeflag, h.Linkname = tar.TypeLink, first
					if err := l.entry(h, nil); err != nil {
						return err
					}
					continue
				}
				if st.Nlink > 1 {
					links[key] = p
				}
				if err := copyFile(root, p, st, h, l); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := walk("."); err != nil {
		if errs.Is(err, errs.Unavailable) {
			return err // the stream, not the layer
		}
		return errs.Wrap(errs.Conflict, err, "reading the container's changes (did it change while paused?)")
	}
	return nil
}

// copyFile writes the regular file p as listed (st): opened without
// following a link, and refused if it is not the file that was listed.
func copyFile(root *os.Root, p string, st *syscall.Stat_t, h *tar.Header, l *layerOut) error {
	f, err := root.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	var now unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &now); err != nil {
		return err
	}
	if now.Mode&unix.S_IFMT != unix.S_IFREG || now.Ino != st.Ino || uint64(now.Dev) != uint64(st.Dev) {
		return fmt.Errorf("%s was replaced while it was read", p)
	}
	h.Typeflag, h.Size = tar.TypeReg, now.Size
	return l.entry(h, f)
}

// opaque is whether the directory p has overlay's opaque attribute.
func opaque(root *os.Root, p string) bool {
	d, err := root.OpenFile(p, os.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return false
	}
	defer d.Close()
	buf := make([]byte, 8)
	n, err := unix.Fgetxattr(int(d.Fd()), "trusted.overlay.opaque", buf)
	return err == nil && n == 1 && buf[0] == 'y'
}

// cleanHeader is h with only what a layer entry may carry, or nil for an
// entry that is not copied. Names are relative and clean; none leaves the
// root.
func cleanHeader(h *tar.Header) *tar.Header {
	name := path.Clean("/" + h.Name)[1:]
	if name == "" {
		return nil
	}
	nh := &tar.Header{Name: name, Mode: h.Mode & 0o7777, Uid: h.Uid, Gid: h.Gid, ModTime: h.ModTime, Typeflag: h.Typeflag, Format: tar.FormatPAX}
	switch h.Typeflag {
	case tar.TypeReg:
		if !plainFile(h) {
			return nil
		}
		nh.Size = h.Size
	case tar.TypeDir:
		nh.Name += "/"
	case tar.TypeSymlink:
		nh.Linkname = h.Linkname
	case tar.TypeLink:
		l := path.Clean("/" + h.Linkname)[1:]
		if l == "" {
			return nil
		}
		nh.Linkname = l
	case tar.TypeFifo:
	default:
		return nil
	}
	return nh
}

// Received is what ImportChanges took in.
type Received struct {
	Exported
	Deleted int `json:"deleted"`
}

// ImportChanges reads a wire stream (ExportChanges's) from r into the
// created, never started container id: files through the engine's own
// archive API (which keeps every path inside the container), all owned by
// owner and without set-id bits, deletions (the .wh. entries) as the
// overlay2 driver itself records them, in the container's upper directory,
// fd-relative. The stream is the user's, so it is checked as it goes: no
// devices, no sparse files, names inside the root, at most max bytes of
// contents, and the trailer must say what arrived. On error the container
// is left for the caller to remove.
func (c *Client) ImportChanges(ctx context.Context, id string, r io.Reader, max int64, owner Owner, progress func(int64)) (Received, error) {
	rt, err := c.Runtime(ctx, id)
	if err != nil {
		return Received{}, err
	}
	if rt.UpperDir == "" || rt.Pid != 0 {
		return Received{}, errs.New(errs.Unavailable, "this server's storage driver is not overlay2 (or the container runs), so mlc cannot take in a copy")
	}
	root, err := os.OpenRoot(rt.UpperDir)
	if err != nil {
		return Received{}, errs.Wrap(errs.Internal, err, "the container's upper directory")
	}
	defer root.Close()
	return splitStream(r, &upperSink{root: root, buf: make([]byte, copyBuf)}, max, owner, progress)
}

// Owner is who every file a copy writes belongs to: the caller. What the
// stream says of owners and set-id bits is the sender's word, and the
// sender is whoever holds the user's ssh.
type Owner struct{ UID, GID int }

// sink is where a received stream goes: the container's upper directory
// (upperSink), or a tar in the tests.
type sink interface {
	// entry makes h (a directory, file, link or fifo); body has exactly
	// h.Size bytes for a regular file.
	entry(h *tar.Header, body io.Reader) error
	deleted(p string) error // a deletion (.wh.NAME) of p
	opaque(p string) error  // the image's contents of directory p are hidden
	close() error
}

// splitStream reads the wire stream r into to, every entry owned by owner
// and without set-id bits, and says what it carried.
func splitStream(r io.Reader, to sink, max int64, owner Owner, progress func(int64)) (Received, error) {
	var got Received
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return got, errs.New(errs.Unavailable, "the copy stream ended before its trailer: the copy was interrupted")
		}
		if err != nil {
			return got, errs.Wrap(errs.Unavailable, err, "reading the copy stream")
		}
		if h.PAXRecords[endKey] == "1" {
			var end Exported
			b, err := io.ReadAll(io.LimitReader(tr, 4096))
			if err != nil || json.Unmarshal(b, &end) != nil || end != got.Exported {
				return got, errs.New(errs.Unavailable, "the copy arrived damaged (%d entries, %d bytes; the sender says %s)", got.Entries, got.Bytes, strings.TrimSpace(string(b)))
			}
			if _, err := tr.Next(); err != io.EOF {
				return got, errs.New(errs.Usage, "the copy stream goes on after its trailer")
			}
			return got, to.close()
		}
		nh := cleanHeader(h)
		if nh == nil || nh.Typeflag == tar.TypeReg && nh.Size != h.Size {
			return got, errs.New(errs.Usage, "the copy stream has an entry mlc does not copy (%q, type %q)", h.Name, string(h.Typeflag))
		}
		got.Entries++
		dir, base := path.Split(strings.TrimSuffix(nh.Name, "/"))
		if strings.HasPrefix(base, ".wh.") {
			switch {
			case base == ".wh..wh..opq":
				err = to.opaque(path.Clean("/" + dir)[1:])
			case len(base) > 4 && base[4:] != "." && base[4:] != "..":
				got.Deleted++
				err = to.deleted(path.Join(dir, base[4:]))
			default:
				return got, errs.New(errs.Usage, "the copy stream has a bad deletion %q", h.Name)
			}
			if err != nil {
				return got, errs.Wrap(errs.Usage, err, "recording the deletion %s", nh.Name)
			}
			continue
		}
		nh.Uid, nh.Gid, nh.Mode = owner.UID, owner.GID, nh.Mode&^0o6000
		var body io.Reader
		if nh.Typeflag == tar.TypeReg {
			if got.Bytes+nh.Size > max {
				return got, errs.New(errs.Quota, "the changes are more than %s, what this server takes now", humanBytes(max))
			}
			body = &countingReader{r: tr, f: func(k int64) {
				got.Bytes += k
				if progress != nil {
					progress(got.Bytes)
				}
			}}
		}
		if err := to.entry(nh, body); err != nil {
			if errs.KindOf(err) != errs.Internal {
				return got, err
			}
			return got, errs.Wrap(errs.Usage, err, "writing %s", nh.Name)
		}
	}
}

// upperSink writes a received stream into a created, never started
// container's overlay2 upper directory, as the overlay2 driver applies a
// layer: files as they are, a deletion as a 0/0 character device, an
// opaque directory with trusted.overlay.opaque=y. Every path is opened
// below the upper directory through os.Root, so a link the stream made
// cannot lead out, and the last component is never followed. Nothing runs
// in the container meanwhile and only root can reach the directory.
type upperSink struct {
	root *os.Root
	buf  []byte
	dirs []*tar.Header // their times are set last: their contents change them
}

// parent makes the directories above p (0755, as overlay copies them up
// when the stream has none) and returns p's directory, open.
func (u *upperSink) parent(p string) (*os.File, string, error) {
	dir, base := path.Split(p)
	if dir == "" {
		dir = "."
	}
	if err := u.root.MkdirAll(dir, 0o755); err != nil {
		return nil, "", err
	}
	d, err := u.root.OpenFile(dir, os.O_RDONLY|unix.O_DIRECTORY, 0)
	return d, base, err
}

func (u *upperSink) entry(h *tar.Header, body io.Reader) error {
	name := strings.TrimSuffix(h.Name, "/")
	d, base, err := u.parent(name)
	if err != nil {
		return err
	}
	defer d.Close()
	if h.Typeflag == tar.TypeDir {
		fi, err := u.root.Lstat(name)
		if err == nil && !fi.IsDir() {
			if err := u.root.Remove(name); err != nil {
				return err
			}
		}
		if err != nil || !fi.IsDir() {
			if err := u.root.Mkdir(name, 0o700); err != nil {
				return err
			}
		}
		u.dirs = append(u.dirs, h)
	} else {
		if err := u.root.RemoveAll(name); err != nil {
			return err
		}
		switch h.Typeflag {
		case tar.TypeReg:
			f, err := u.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
			if err != nil {
				return err
			}
			n, err := io.CopyBuffer(f, body, u.buf)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return errs.Wrap(errs.Unavailable, err, "receiving %s", name)
			}
			if n != h.Size {
				return errs.New(errs.Unavailable, "%s was cut short", name)
			}
		case tar.TypeSymlink:
			if err := u.root.Symlink(h.Linkname, name); err != nil {
				return err
			}
		case tar.TypeLink:
			return u.root.Link(h.Linkname, name) // the same inode: owner and mode are the first one's
		case tar.TypeFifo:
			if err := unix.Mknodat(int(d.Fd()), base, unix.S_IFIFO|0o600, 0); err != nil {
				return err
			}
		}
	}
	if err := u.root.Lchown(name, h.Uid, h.Gid); err != nil {
		return err
	}
	if h.Typeflag == tar.TypeSymlink {
		return nil
	}
	mode := os.FileMode(h.Mode & 0o777)
	if h.Mode&0o1000 != 0 {
		mode |= os.ModeSticky
	}
	if err := u.root.Chmod(name, mode); err != nil {
		return err
	}
	if h.Typeflag != tar.TypeDir {
		return u.root.Chtimes(name, h.ModTime, h.ModTime)
	}
	return nil
}

func (u *upperSink) deleted(p string) error {
	d, base, err := u.parent(p)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := u.root.RemoveAll(p); err != nil {
		return err
	}
	return unix.Mknodat(int(d.Fd()), base, unix.S_IFCHR, 0)
}

func (u *upperSink) opaque(p string) error {
	if p == "" {
		p = "."
	}
	if err := u.root.MkdirAll(p, 0o755); err != nil {
		return err
	}
	d, err := u.root.OpenFile(p, os.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer d.Close()
	return unix.Fsetxattr(int(d.Fd()), "trusted.overlay.opaque", []byte("y"), 0)
}

func (u *upperSink) close() error {
	for i := len(u.dirs) - 1; i >= 0; i-- {
		h := u.dirs[i]
		if err := u.root.Chtimes(strings.TrimSuffix(h.Name, "/"), h.ModTime, h.ModTime); err != nil {
			return err
		}
	}
	return nil
}

// plainFile is whether h is a regular file stored whole: not a sparse one,
// whose holes the reader would make up (a few bytes on the wire could then
// stand for exabytes of zeros).
func plainFile(h *tar.Header) bool {
	if h.Typeflag != tar.TypeReg {
		return false
	}
	for k := range h.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return false
		}
	}
	return true
}

type countingReader struct {
	r io.Reader
	f func(int64)
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if n > 0 {
		c.f(int64(n))
	}
	return n, err
}

func humanBytes(n int64) string { return units.BytesSize(float64(n)) }

// copyBuf is the buffer of each copy of file contents.
var copyBuf = 1 << 20
