package engine

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"
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
		tw.WriteHeader(&tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: 0o644, Size: int64(len(e.body)),
			ModTime: time.Unix(1e9, 0), Uid: 1000, Gid: 1000, Xattrs: map[string]string{"user.x": "y"}})
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
// plain entries inside the root, without .wh. files.
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
		names = append(names, h.Name)
	}
}

func TestSplitStream(t *testing.T) {
	layer := layerTar(entry{"etc/", "", tar.TypeDir, ""}, entry{"etc/motd", "", tar.TypeReg, "hi"}, entry{"bin/.wh.vi", "", tar.TypeReg, ""},
		entry{"opt/d/.wh..wh..opq", "", tar.TypeReg, ""}, entry{"../../escape", "", tar.TypeReg, "x"}, entry{"dev/sda", "", tar.TypeBlock, ""},
		entry{"l", "/etc/motd", tar.TypeLink, ""})
	wire := wireOf(t, layer)
	var out bytes.Buffer
	var counted int64
	wh, got, err := splitStream(bytes.NewReader(wire), &out, 1<<20, func(n int64) { counted += n })
	if err != nil {
		t.Fatal(err)
	}
	names := checkArchive(t, out.Bytes())
	if strings.Join(names, " ") != "etc/ etc/motd escape l" || strings.Join(wh.deleted, " ") != "bin/vi" || strings.Join(wh.opaque, " ") != "opt/d" {
		t.Fatalf("archive %v, deleted %v, opaque %v", names, wh.deleted, wh.opaque)
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
		if _, _, err := splitStream(bytes.NewReader(in), io.Discard, 1<<20, nil); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// A trailer that does not match what came is refused.
	bad := bytes.Replace(wire, []byte(`"bytes":3`), []byte(`"bytes":4`), 1)
	if _, _, err := splitStream(bytes.NewReader(bad), io.Discard, 1<<20, nil); err == nil || !strings.Contains(err.Error(), "damaged") {
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
		wh, _, err := splitStream(bytes.NewReader(in), &out, 1<<16, nil)
		if err != nil {
			return
		}
		checkArchive(t, out.Bytes())
		for _, p := range append(wh.deleted, wh.opaque...) {
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
		_, got, err := splitStream(bytes.NewReader(w.Bytes()), io.Discard, 1<<40, nil)
		if err != nil && !strings.Contains(err.Error(), "bad deletion") {
			t.Fatalf("sent %+v, the target refuses: %v", sent, err)
		}
		if err == nil && got.Exported != sent {
			t.Fatalf("sent %+v, got %+v", sent, got)
		}
	})
}
