package paths

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzUnder: Under never says yes to a path outside root.
func FuzzUnder(f *testing.F) {
	for _, s := range [][2]string{{"/home/a/x", "/home/a"}, {"/home/ab", "/home/a"}, {"/home/a/../b", "/home/a"}, {"/", "/home"}, {"/home/a", "/home/a"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, p, root string) {
		if !filepath.IsAbs(p) || !filepath.IsAbs(root) {
			return
		}
		p, root = filepath.Clean(p), filepath.Clean(root)
		if !Under(p, root) {
			return
		}
		if p != root && !strings.HasPrefix(p, strings.TrimSuffix(root, "/")+"/") {
			t.Fatalf("Under(%q, %q) but it is not below", p, root)
		}
	})
}

// FuzzWalk: on a tree with links in it, Walk succeeds exactly for the paths
// that reach a directory through no link, and names that directory.
func FuzzWalk(f *testing.F) {
	d := f.TempDir()
	for _, p := range []string{"a/b/c", "a/d", "e"} {
		if err := os.MkdirAll(filepath.Join(d, p), 0o755); err != nil {
			f.Fatal(err)
		}
	}
	os.Symlink(filepath.Join(d, "a"), filepath.Join(d, "l"))
	os.Symlink("/", filepath.Join(d, "a", "root"))
	os.Symlink("b", filepath.Join(d, "a", "rel"))
	os.WriteFile(filepath.Join(d, "a", "file"), nil, 0o644)
	for _, s := range []string{"a/b/c", "l/b", "a/root/etc", "a/rel/c", "a/file", "e/../a", "a//b", "nothere"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, rel string) {
		p := filepath.Join(d, rel)
		if !strings.HasPrefix(p, d+"/") {
			return
		}
		id, err := Walk(p)
		links := false
		for q := p; q != d; q = filepath.Dir(q) {
			if fi, lerr := os.Lstat(q); lerr == nil && fi.Mode()&os.ModeSymlink != 0 {
				links = true
			}
		}
		fi, serr := os.Lstat(p)
		want := !links && serr == nil && fi.IsDir()
		if want != (err == nil) {
			t.Fatalf("Walk(%q): %v, want success %v", rel, err, want)
		}
		if err == nil {
			st, _ := Walk(p)
			if st != id {
				t.Fatalf("Walk(%q) unstable", rel)
			}
		}
	})
}
