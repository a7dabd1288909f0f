package engine

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"testing"
)

// wire builds a wire stream: a layer and its trailer.
func wire(layer []byte, trailer Trailer) []byte {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	tw.WriteHeader(&tar.Header{Name: "layer.tar", Typeflag: tar.TypeReg, Mode: 0o600, Size: int64(len(layer))})
	tw.Write(layer)
	end, _ := json.Marshal(trailer)
	tw.WriteHeader(&tar.Header{Name: "end.json", Typeflag: tar.TypeReg, Mode: 0o600, Size: int64(len(end))})
	tw.Write(end)
	tw.Close()
	return b.Bytes()
}

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

var fuzzBase = ImageConfig{DiffIDs: []string{"sha256:" + string(bytes.Repeat([]byte("a"), 64))}, OS: "linux", Architecture: "amd64",
	Config: json.RawMessage(`{"Env":["PATH=/bin"]}`)}

// What the target hands the engine is only ever: the received layer (whole,
// its digest checked), a config of its own and a manifest without tags.
func checkLoad(t *testing.T, out []byte) {
	tr := tar.NewReader(bytes.NewReader(out))
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("the load stream is not a tar: %v", err)
		}
		names = append(names, h.Name)
		if h.Name == "manifest.json" {
			b, _ := io.ReadAll(tr)
			var m []struct {
				RepoTags []string
				Layers   []string
			}
			if json.Unmarshal(b, &m) != nil || len(m) != 1 || len(m[0].RepoTags) != 0 || len(m[0].Layers) != len(fuzzBase.DiffIDs)+1 {
				t.Fatalf("manifest %s", b)
			}
		}
	}
	if len(names) != 3 || names[0] != "mlc-copy/layer.tar" || names[2] != "manifest.json" {
		t.Fatalf("load stream entries %v", names)
	}
}

func TestBuildLoad(t *testing.T) {
	layer := []byte("pretend this is a layer tar")
	var out bytes.Buffer
	id, err := buildLoad(bytes.NewReader(wire(layer, Trailer{DiffID: digest(layer), Size: int64(len(layer))})), fuzzBase, 1<<20, &out, nil)
	if err != nil || len(id) != 71 {
		t.Fatalf("%q %v", id, err)
	}
	checkLoad(t, out.Bytes())
	for name, in := range map[string][]byte{
		"bad digest":   wire(layer, Trailer{DiffID: digest([]byte("other")), Size: int64(len(layer))}),
		"no trailer":   wire(layer, Trailer{})[:1024+512],
		"cut":          wire(layer, Trailer{DiffID: digest(layer)})[:600],
		"empty":        nil,
		"over the cap": wire(bytes.Repeat([]byte("x"), 2<<20), Trailer{}),
	} {
		if _, err := buildLoad(bytes.NewReader(in), fuzzBase, 1<<20, io.Discard, nil); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// FuzzBuildLoad: whatever a user sends the target (it comes from their own
// ssh), the target never panics and hands the engine nothing but a checked
// layer, its own config and a manifest without tags.
func FuzzBuildLoad(f *testing.F) {
	layer := []byte("layer bytes")
	f.Add(wire(layer, Trailer{DiffID: digest(layer), Size: int64(len(layer))}))
	f.Add(wire(nil, Trailer{}))
	f.Add([]byte("not a tar at all"))
	f.Fuzz(func(t *testing.T, in []byte) {
		var out bytes.Buffer
		if _, err := buildLoad(bytes.NewReader(in), fuzzBase, 1<<16, &out, nil); err == nil {
			checkLoad(t, out.Bytes())
		}
	})
}

// FuzzCutLayer: the source's reading of the engine's save stream never
// panics, and what it sends is a whole wire stream.
func FuzzCutLayer(f *testing.F) {
	var save bytes.Buffer
	tw := tar.NewWriter(&save)
	layer := []byte("the changes")
	top := digest(layer)
	for _, e := range []struct {
		name string
		body []byte
	}{{"abc/json", []byte(`{"id":"abc","config":{}}`)}, {"abc/layer.tar", layer}, {"manifest.json", []byte(`[{"Layers":["abc/layer.tar"]}]`)}} {
		tw.WriteHeader(&tar.Header{Name: e.name, Typeflag: tar.TypeReg, Mode: 0o600, Size: int64(len(e.body))})
		tw.Write(e.body)
	}
	tw.Close()
	var w bytes.Buffer
	if _, err := cutLayer(bytes.NewReader(save.Bytes()), top, &w); err != nil {
		f.Fatal(err)
	}
	f.Add(save.Bytes(), top)
	f.Fuzz(func(t *testing.T, in []byte, top string) {
		var w bytes.Buffer
		exp, err := cutLayer(bytes.NewReader(in), top, &w)
		if err != nil {
			return
		}
		if _, err := buildLoad(bytes.NewReader(w.Bytes()), fuzzBase, 1<<30, io.Discard, nil); err != nil {
			t.Fatalf("cutLayer sent %+v that the target refuses: %v", exp, err)
		}
	})
}
