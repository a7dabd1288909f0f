package monitor

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path"
	"syscall"
	"time"
)

// errTooSlow ends a walk that ran out of time.
var errTooSlow = errors.New("too slow")

// measureDisks sets DiskBytes of every target, within timeout for all of
// them together: overlay's upper directory is walked (in parallel), other
// storage drivers are asked through the engine.
func (co *Collector) measureDisks(ctx context.Context, ts []*target, timeout time.Duration) {
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	forEach(ts, func(t *target) {
		var n int64
		var err error
		if ctx.Err() != nil {
			t.stats.DiskNote = "not measured within " + timeout.String()
			return
		}
		if t.rt.UpperDir != "" {
			n, err = LayerBytes(ctx, t.rt.UpperDir)
		} else {
			n, err = co.Engine.LayerSize(ctx, t.c.ID)
		}
		switch {
		case errors.Is(err, errTooSlow) || ctx.Err() != nil:
			t.stats.DiskNote = "not measured within " + timeout.String()
		case err != nil:
			t.stats.DiskNote = "not measured: " + short(err)
		default:
			t.stats.DiskBytes = &n
		}
	})
}

// LayerBytes is the disk space (allocated blocks, each hard-linked inode
// once) of the files below dir, which is a container's writable layer: its
// processes can change it while it is walked, so the walk is confined to
// dir through os.Root and never follows a symbolic link. Directories are
// read in batches and ctx is checked between them, so a directory of a
// million entries cannot hold the walk (and root's memory) past the deadline.
func LayerBytes(ctx context.Context, dir string) (int64, error) {
	if ctx.Err() != nil {
		return 0, errTooSlow
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return 0, err
	}
	defer root.Close()
	type inode struct{ dev, ino uint64 }
	seen := map[inode]bool{}
	var total int64
	add := func(info fs.FileInfo) {
		st, ok := info.Sys().(*syscall.Stat_t)
		if !ok {
			total += info.Size()
			return
		}
		if st.Nlink > 1 && !info.IsDir() {
			k := inode{uint64(st.Dev), st.Ino}
			if seen[k] {
				return
			}
			seen[k] = true
		}
		total += st.Blocks * 512
	}
	if info, err := root.Lstat("."); err == nil {
		add(info)
	}
	pending := []string{"."}
	for len(pending) > 0 {
		d := pending[len(pending)-1]
		pending = pending[:len(pending)-1]
		f, err := root.Open(d)
		if err != nil {
			continue // removed meanwhile, or replaced by a link (not followed)
		}
		for {
			if ctx.Err() != nil {
				f.Close()
				return 0, errTooSlow
			}
			ents, err := f.ReadDir(256)
			for _, e := range ents {
				info, ierr := e.Info()
				if ierr != nil {
					continue
				}
				add(info)
				if e.IsDir() {
					pending = append(pending, path.Join(d, e.Name()))
				}
			}
			if err != nil { // io.EOF at the end, or the directory went away
				break
			}
		}
		f.Close()
	}
	if ctx.Err() != nil {
		return 0, errTooSlow
	}
	return total, nil
}
