package monitor

import (
	"context"
	"errors"
	"io/fs"
	"os"
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
// dir through os.Root and never follows a symbolic link.
func LayerBytes(ctx context.Context, dir string) (int64, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return 0, err
	}
	defer root.Close()
	type inode struct{ dev, ino uint64 }
	seen := map[inode]bool{}
	var total int64
	n := 0
	err = fs.WalkDir(root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			// A file removed while walking, or a directory not readable.
			if p == "." {
				return err
			}
			return nil
		}
		if n++; n%1024 == 0 && ctx.Err() != nil {
			return errTooSlow
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		st, ok := info.Sys().(*syscall.Stat_t)
		if !ok {
			total += info.Size()
			return nil
		}
		if st.Nlink > 1 && !info.IsDir() {
			k := inode{uint64(st.Dev), st.Ino}
			if seen[k] {
				return nil
			}
			seen[k] = true
		}
		total += st.Blocks * 512
		return nil
	})
	if ctx.Err() != nil {
		return 0, errTooSlow
	}
	return total, err
}
