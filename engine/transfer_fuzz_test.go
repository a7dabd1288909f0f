package engine

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

type entry struct {
	name, link string
	typ        byte
	body       string
}

// layerTar is a layer as the engine writes one.
func layerTar(es ...entry) []byte {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range es {
		tw.WriteHeader(&tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: 0o6755, Size: int64(len(e.body)),
			ModTime: time.Unix(1e9, 0), Uid: 0, Gid: 0, PAXRecords: map[string]string{"SCHILY.xattr.security.capability": "x"}})
		tw.Write([]byte(e.body))
	}
	tw.Close()
	return b.Bytes()
}

func wireOf(t testing.TB, layer []byte) []byte {
	var w bytes.Buffer
	if _, err := copyLayer(context.Background(), bytes.NewReader(layer), &w, nil); err != nil {
		t.Fatal(err)
	}
	return w.Bytes()
}

// checkArchive: what the target hands the engine's archive API is only
// plain entries inside the root, without .wh. files, all the caller's
// (uid 1234, gid 1235) and none set-id.
func checkArchive(t *testing.T, out []byte) []string {
	tr := tar.NewReader(bytes.NewReader(out))
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return names
		}
		if err != nil {
			t.Fatalf("the archive is not a tar: %v", err)
		}
		switch h.Typeflag {
		case tar.TypeReg, tar.TypeDir, tar.TypeSymlink, tar.TypeLink, tar.TypeFifo:
		default:
			t.Fatalf("entry %q of type %q", h.Name, h.Typeflag)
		}
		if strings.HasPrefix(h.Name, "/") || strings.Contains("/"+h.Name+"/", "/../") || strings.Contains(h.Name, ".wh.") ||
			len(h.PAXRecords) > 0 && h.PAXRecords[endKey] != "" {
			t.Fatalf("entry %q passed", h.Name)
		}
		if h.Uid != 1234 || h.Gid != 1235 || h.Mode&0o6000 != 0 {
			t.Fatalf("entry %q is %d:%d mode %o", h.Name, h.Uid, h.Gid, h.Mode)
		}
		names = append(names, h.Name)
	}
}

// tarSink is a sink that writes a tar and keeps the deletions.
type tarSink struct {
	tw         *tar.Writer
	dels, opqs []string
}

func newTarSink(w io.Writer) *tarSink { return &tarSink{tw: tar.NewWriter(w)} }

func (s *tarSink) entry(h *tar.Header, body io.Reader) error {
	if err := s.tw.WriteHeader(h); err != nil {
		return err
	}
	if body != nil {
		_, err := io.Copy(s.tw, body)
		return err
	}
	return nil
}
func (s *tarSink) deleted(p string) error { s.dels = append(s.dels, p); return nil }
func (s *tarSink) opaque(p string) error  { s.opqs = append(s.opqs, p); return nil }
func (s *tarSink) close() error           { return s.tw.Close() }

func TestSplitStream(t *testing.T) {
	layer := layerTar(entry{"etc/", "", tar.TypeDir, ""}, entry{"etc/motd", "", tar.TypeReg, "hi"}, entry{"bin/.wh.vi", "", tar.TypeReg, ""},
		entry{"opt/d/.wh..wh..opq", "", tar.TypeReg, ""}, entry{"../../escape", "", tar.TypeReg, "x"}, entry{"dev/sda", "", tar.TypeBlock, ""},
		entry{"l", "/etc/motd", tar.TypeLink, ""})
	wire := wireOf(t, layer)
	var out bytes.Buffer
	var counted int64
	ts := newTarSink(&out)
	got, err := splitStream(bytes.NewReader(wire), ts, 1<<20, Owner{UID: 1234, GID: 1235}, func(n int64) { counted = n })
	if err != nil {
		t.Fatal(err)
	}
	names := checkArchive(t, out.Bytes())
	if strings.Join(names, " ") != "etc/ etc/motd escape l" || strings.Join(ts.dels, " ") != "bin/vi" || strings.Join(ts.opqs, " ") != "opt/d" {
		t.Fatalf("archive %v, deleted %v, opaque %v", names, ts.dels, ts.opqs)
	}
	if got.Entries != 6 || got.Bytes != 3 || counted != 3 {
		t.Fatalf("received %+v, counted %d", got, counted)
	}
	for name, in := range map[string][]byte{
		"cut short":    wire[:len(wire)-2048],
		"no trailer":   layer,
		"empty":        nil,
		"over the cap": wireOf(t, layerTar(entry{"big", "", tar.TypeReg, strings.Repeat("x", 2<<20)})),
		"a device":     append(layerTar(entry{"dev/sda", "", tar.TypeBlock, ""})[:512], make([]byte, 1024)...),
		"bad deletion": wireOf(t, layerTar(entry{"a/.wh...", "", tar.TypeReg, ""})),
	} {
		if _, err := splitStream(bytes.NewReader(in), newTarSink(io.Discard), 1<<20, Owner{}, nil); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// A trailer that does not match what came is refused.
	bad := bytes.Replace(wire, []byte(`"bytes":3`), []byte(`"bytes":4`), 1)
	if _, err := splitStream(bytes.NewReader(bad), newTarSink(io.Discard), 1<<20, Owner{}, nil); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Errorf("a wrong trailer: %v", err)
	}
}

// FuzzSplitStream: whatever a user sends the target (it comes from their
// own ssh), the target never panics and hands the engine only plain entries
// inside the root.
func FuzzSplitStream(f *testing.F) {
	copyBuf = 4 << 10
	f.Add(wireOf(f, layerTar(entry{"a/", "", tar.TypeDir, ""}, entry{"a/f", "", tar.TypeReg, "data"}, entry{"a/.wh.g", "", tar.TypeReg, ""})))
	f.Add([]byte("not a tar at all"))
	f.Fuzz(func(t *testing.T, in []byte) {
		var out bytes.Buffer
		ts := newTarSink(&out)
		_, err := splitStream(bytes.NewReader(in), ts, 1<<16, Owner{UID: 1234, GID: 1235}, nil)
		if err != nil {
			return
		}
		checkArchive(t, out.Bytes())
		for _, p := range append(ts.dels, ts.opqs...) {
			if strings.HasPrefix(p, "/") || strings.Contains("/"+p+"/", "/../") {
				t.Fatalf("deletion %q leaves the root", p)
			}
		}
	})
}

// FuzzCopyLayer: any layer the source reads becomes a stream the target
// takes whole.
func FuzzCopyLayer(f *testing.F) {
	copyBuf = 4 << 10
	f.Add(layerTar(entry{"a/", "", tar.TypeDir, ""}, entry{"a/f", "", tar.TypeReg, "data"}, entry{"a/.wh.g", "", tar.TypeReg, ""}))
	f.Fuzz(func(t *testing.T, layer []byte) {
		var w bytes.Buffer
		sent, err := copyLayer(context.Background(), bytes.NewReader(layer), &w, nil)
		if err != nil {
			return
		}
		got, err := splitStream(bytes.NewReader(w.Bytes()), newTarSink(io.Discard), 1<<40, Owner{}, nil)
		if err != nil && !strings.Contains(err.Error(), "bad deletion") {
			t.Fatalf("sent %+v, the target refuses: %v", sent, err)
		}
		if err == nil && got.Exported != sent {
			t.Fatalf("sent %+v, got %+v", sent, got)
		}
	})
}

// The source's walk of an upper directory: deletions and opaque
// directories in the layer format, links as links (never their targets),
// hard links once.
func TestWalkLayer(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for whiteout devices and trusted.* attributes")
	}
	up := t.TempDir()
	secret := filepath.Join(t.TempDir(), "secret")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(secret, []byte("host secret"), 0o600))
	must(os.MkdirAll(filepath.Join(up, "etc/opq"), 0o755))
	must(os.WriteFile(filepath.Join(up, "etc/motd"), []byte("changed"), 0o644))
	must(os.Link(filepath.Join(up, "etc/motd"), filepath.Join(up, "etc/motd2")))
	must(os.Symlink(secret, filepath.Join(up, "etc/link")))
	must(unix.Mknod(filepath.Join(up, "etc/gone"), unix.S_IFCHR, 0))
	must(unix.Setxattr(filepath.Join(up, "etc/opq"), "trusted.overlay.opaque", []byte("y"), 0))
	root, err := os.OpenRoot(up)
	must(err)
	defer root.Close()
	var b bytes.Buffer
	l := newLayerOut(&b, nil)
	must(walkLayer(context.Background(), root, l))
	must(l.tw.Close()) // no trailer: the walk alone
	tr := tar.NewReader(&b)
	var got []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		must(err)
		body, _ := io.ReadAll(tr)
		if strings.Contains(string(body), "host secret") {
			t.Fatal("the walk read a file outside the layer")
		}
		got = append(got, fmt.Sprintf("%s %c %s %s", h.Name, h.Typeflag, h.Linkname, body))
	}
	want := []string{"etc/ 5  ", "etc/.wh.gone 0  ", "etc/link 2 " + secret + " ", "etc/motd 0  changed", "etc/motd2 1 etc/motd ",
		"etc/opq/ 5  ", "etc/opq/.wh..wh..opq 0  "}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("walk:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// A file swapped for a link after it was listed is refused, not followed.
	fi, err := root.Lstat("etc/motd")
	must(err)
	must(os.Remove(filepath.Join(up, "etc/motd")))
	must(os.Symlink(secret, filepath.Join(up, "etc/motd")))
	var out bytes.Buffer
	err = copyFile(root, "etc/motd", fi.Sys().(*syscall.Stat_t), &tar.Header{Name: "etc/motd"}, newLayerOut(&out, nil))
	if err == nil || strings.Contains(out.String(), "host secret") {
		t.Fatalf("a swapped file: %v, %q", err, out.String())
	}
}
