package engine

// Copying a container's changes to another engine (mlc copy): the source
// commits the container and cuts its one new layer out of the engine's own
// save stream; the target builds a load stream of its own around that layer,
// on top of its own copy of the catalogue image. Only the layer travels.
//
// The wire format between the two is a tar stream of exactly two entries:
// "layer.tar" (the layer, in the engine's layer format: a tar with .wh.
// whiteouts) and "end.json" (its diff id and size). Go's tar reader takes a
// stream cut short at an entry's end for a clean end, so the trailer is what
// says the layer arrived whole.

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"path"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/jsonmessage"
	units "github.com/docker/go-units"
	"golang.org/x/sys/unix"

	"github.com/mlc-lab/mlc/errs"
)

// ImageConfig is what a copy needs to know of an image.
type ImageConfig struct {
	ID           string          `json:"id"`
	DiffIDs      []string        `json:"diff_ids"` // the layers, base first (sha256:...)
	OS           string          `json:"os"`
	Architecture string          `json:"architecture"`
	Config       json.RawMessage `json:"config"` // the image's container config (Env, Cmd, ...)
	Env          []string        `json:"-"`
}

// Detail is an inspected container with what a copy carries over.
type Detail struct {
	Container
	Env    []string // the container's environment, image variables included
	SizeRw int64    // the engine's size of the writable layer
}

// ImageConfig inspects ref.
func (c *Client) ImageConfig(ctx context.Context, ref string) (ImageConfig, error) {
	r, err := c.api.ImageInspect(ctx, ref)
	if err != nil {
		return ImageConfig{}, c.classify(err, "image "+ref)
	}
	ic := ImageConfig{ID: r.ID, DiffIDs: r.RootFS.Layers, OS: r.Os, Architecture: r.Architecture}
	if r.Config != nil {
		ic.Env = r.Config.Env
		if ic.Config, err = json.Marshal(r.Config); err != nil {
			return ImageConfig{}, errs.Wrap(errs.Internal, err, "image %s", ref)
		}
	}
	return ic, nil
}

// Detail inspects one container, its writable layer's size included.
func (c *Client) Detail(ctx context.Context, id string) (Detail, error) {
	r, _, err := c.api.ContainerInspectWithRaw(ctx, id, true)
	if err != nil {
		return Detail{}, c.classify(err, "inspecting "+short(id))
	}
	d := Detail{Container: Container{ID: r.ID, Name: strings.TrimPrefix(r.Name, "/"), Image: r.Config.Image, ImageID: r.Image,
		Labels: r.Config.Labels}}
	if r.State != nil {
		d.State = r.State.Status
	}
	d.Created, _ = time.Parse(time.RFC3339Nano, r.Created)
	d.Env = r.Config.Env
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

// Trailer is the wire stream's end.json.
type Trailer struct {
	DiffID string `json:"diff_id"`
	Size   int64  `json:"size"`
}

// Exported is what ExportChanges sent.
type Exported struct {
	DiffID string
	Size   int64
}

// ExportChanges commits container id (pausing it for the commit), checks that
// the commit is the image have describes (the target's copy of the base image,
// by its layers) plus one layer, and writes that layer to w in the wire
// format. The committed image is removed again whatever happens. phase is
// told what is going on ("committing", "sending").
func (c *Client) ExportChanges(ctx context.Context, id string, have []string, w io.Writer, phase func(string)) (Exported, error) {
	phase("committing")
	resp, err := c.api.ContainerCommit(ctx, id, container.CommitOptions{Pause: true, Comment: "mlc copy (temporary)"})
	if err != nil {
		return Exported{}, c.classify(err, "committing "+short(id))
	}
	defer func() {
		bg, cancel := context.WithTimeout(context.WithoutCancel(ctx), 60*time.Second)
		defer cancel()
		_ = c.RemoveImage(bg, resp.ID)
	}()
	img, err := c.ImageConfig(ctx, resp.ID)
	if err != nil {
		return Exported{}, err
	}
	n := len(img.DiffIDs)
	if n == 0 || !equal(img.DiffIDs[:n-1], have) {
		return Exported{}, errs.New(errs.Conflict, "the target's copy of the image is not the one this container was made from (its layers differ); ask an admin to give both servers the same build of the image")
	}
	top := img.DiffIDs[n-1]
	phase("sending")
	rc, err := c.api.ImageSave(ctx, []string{resp.ID})
	if err != nil {
		return Exported{}, c.classify(err, "saving the changes of "+short(id))
	}
	defer rc.Close()
	return cutLayer(rc, top, w)
}

// cutLayer reads an engine save stream and writes its layer whose diff id is
// top to w in the wire format. It knows both layouts: the legacy one
// (<v1 id>/json, <v1 id>/layer.tar; the top layer's json is the only one
// with a "config") and the OCI one (blobs/sha256/<diff id>, uncompressed).
// manifest.json, which the engine writes last, must agree with its choice.
func cutLayer(save io.Reader, top string, w io.Writer) (Exported, error) {
	topHex := strings.TrimPrefix(top, "sha256:")
	tr := tar.NewReader(save)
	tw := tar.NewWriter(w)
	var topDir, sent string
	var out Exported
	checked := false
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return out, errs.Wrap(errs.Internal, err, "reading the engine's save stream")
		}
		name := strings.TrimPrefix(path.Clean(h.Name), "./")
		switch {
		case path.Base(name) == "json" && path.Dir(name) != "." && h.Typeflag == tar.TypeReg && h.Size < 1<<20:
			var v map[string]json.RawMessage
			b, err := io.ReadAll(tr)
			if err == nil && json.Unmarshal(b, &v) == nil {
				if cfg, ok := v["config"]; ok && string(cfg) != "null" {
					topDir = path.Dir(name)
				}
			}
		case sent == "" && plainFile(h) &&
			(name == "blobs/sha256/"+topHex || (topDir != "" && name == topDir+"/layer.tar")):
			if err := tw.WriteHeader(&tar.Header{Name: "layer.tar", Typeflag: tar.TypeReg, Mode: 0o600, Size: h.Size, Format: tar.FormatPAX}); err != nil {
				return out, errs.Wrap(errs.Unavailable, err, "sending the layer")
			}
			sum := sha256.New()
			if _, err := io.Copy(tw, io.TeeReader(tr, sum)); err != nil {
				return out, errs.Wrap(errs.Unavailable, err, "sending the layer")
			}
			out = Exported{DiffID: "sha256:" + hex.EncodeToString(sum.Sum(nil)), Size: h.Size}
			if out.DiffID != top {
				return out, errs.New(errs.Internal, "the layer the engine saved is %s, not the committed %s", out.DiffID, top)
			}
			sent = name
		case name == "manifest.json":
			var m []struct{ Layers []string }
			b, err := io.ReadAll(io.LimitReader(tr, 1<<20))
			if err != nil || json.Unmarshal(b, &m) != nil || len(m) != 1 || len(m[0].Layers) == 0 {
				return out, errs.New(errs.Internal, "the engine's save stream has no manifest this mlc understands")
			}
			if last := path.Clean(m[0].Layers[len(m[0].Layers)-1]); sent != "" && last != sent && last != "blobs/sha256/"+topHex {
				return out, errs.New(errs.Internal, "the engine's manifest puts %s on top, not %s", last, sent)
			}
			checked = true
		}
	}
	if sent == "" || !checked {
		return out, errs.New(errs.Internal, "the engine's save stream lacks the layer of changes (or its manifest)")
	}
	end, _ := json.Marshal(Trailer{DiffID: out.DiffID, Size: out.Size})
	if err := tw.WriteHeader(&tar.Header{Name: "end.json", Typeflag: tar.TypeReg, Mode: 0o600, Size: int64(len(end))}); err != nil {
		return out, errs.Wrap(errs.Unavailable, err, "sending the layer")
	}
	if _, err := tw.Write(end); err != nil {
		return out, errs.Wrap(errs.Unavailable, err, "sending the layer")
	}
	return out, tw.Close()
}

// ImportChanges reads the wire format from r and loads, into this engine, an
// image made of base (this engine's copy of the catalogue image) and the
// received layer, with base's own configuration: nothing of the sender's
// image settings (user, labels, environment, entrypoint) and no tag comes
// along. The stream is checked as it goes: one layer of at most max bytes,
// the trailer naming the diff id it hashes to, nothing else. It returns the
// new image's id (untagged). An error leaves no image behind.
func (c *Client) ImportChanges(ctx context.Context, r io.Reader, base ImageConfig, max int64, progress func(n int64)) (string, error) {
	loadTar, done := c.startLoad(ctx)
	id, err := buildLoad(r, base, max, loadTar, progress)
	loadTar.CloseWithError(err)
	lerr := <-done
	if err != nil {
		return "", err
	}
	if lerr != nil {
		return "", lerr
	}
	if _, err := c.ImageIDOf(ctx, id); err != nil {
		return "", errs.Wrap(errs.Internal, err, "the engine did not keep the copied image")
	}
	return id, nil
}

// startLoad starts an image load whose body is the returned pipe; done
// yields the load's result once the pipe is closed.
func (c *Client) startLoad(ctx context.Context) (*io.PipeWriter, <-chan error) {
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		resp, err := c.api.ImageLoad(ctx, pr, client.ImageLoadWithQuiet(true))
		if err != nil {
			pr.CloseWithError(err)
			done <- c.classify(err, "loading the copied layer")
			return
		}
		defer resp.Body.Close()
		err = jsonmessage.DisplayJSONMessagesStream(resp.Body, io.Discard, 0, false, nil)
		pr.CloseWithError(io.ErrClosedPipe)
		if err != nil {
			done <- errs.New(errs.Unavailable, "the engine refused the copied layer: %s", firstLine(err.Error()))
			return
		}
		done <- nil
	}()
	return pw, done
}

// buildLoad turns the wire stream into an engine load stream on w and
// returns the id the loaded image will have.
func buildLoad(r io.Reader, base ImageConfig, max int64, w io.Writer, progress func(int64)) (string, error) {
	tr := tar.NewReader(r)
	h, err := tr.Next()
	if err != nil {
		return "", errs.Wrap(errs.Usage, err, "reading the copy stream")
	}
	if h.Name != "layer.tar" || !plainFile(h) || h.Size < 0 {
		return "", errs.New(errs.Usage, "the copy stream does not start with a layer")
	}
	if h.Size > max {
		return "", errs.New(errs.Quota, "the changes are %s; this server takes at most %s now", humanBytes(h.Size), humanBytes(max))
	}
	tw := tar.NewWriter(w)
	const dir = "mlc-copy"
	if err := tw.WriteHeader(&tar.Header{Name: dir + "/layer.tar", Typeflag: tar.TypeReg, Mode: 0o600, Size: h.Size, Format: tar.FormatPAX}); err != nil {
		return "", errs.Wrap(errs.Unavailable, err, "loading the copied layer")
	}
	sum := sha256.New()
	var src io.Reader = io.TeeReader(tr, sum)
	if progress != nil {
		src = &countingReader{r: src, f: progress}
	}
	n, err := io.Copy(tw, src)
	if err != nil {
		return "", errs.Wrap(errs.Unavailable, err, "receiving the layer")
	}
	if n != h.Size {
		return "", errs.New(errs.Unavailable, "the layer was cut short (%d of %d bytes)", n, h.Size)
	}
	diffID := "sha256:" + hex.EncodeToString(sum.Sum(nil))
	h, err = tr.Next()
	if err != nil || h.Name != "end.json" || !plainFile(h) || h.Size > 4096 {
		return "", errs.New(errs.Unavailable, "the copy stream ended before its trailer: the copy was interrupted")
	}
	var end Trailer
	if b, err := io.ReadAll(tr); err != nil || json.Unmarshal(b, &end) != nil {
		return "", errs.New(errs.Unavailable, "the copy stream's trailer is unreadable")
	}
	if end.DiffID != diffID || end.Size != n {
		return "", errs.New(errs.Unavailable, "the layer arrived damaged (its digest is %s, the sender's %s)", diffID, end.DiffID)
	}
	if _, err := tr.Next(); err != io.EOF {
		return "", errs.New(errs.Usage, "the copy stream has more than a layer and its trailer")
	}
	layers := make([]string, 0, len(base.DiffIDs)+1)
	for i := range base.DiffIDs {
		// The engine has these layers (they are base's), so it never
		// opens the files named here.
		layers = append(layers, fmt.Sprintf("base-%d/layer.tar", i))
	}
	layers = append(layers, dir+"/layer.tar")
	conf := map[string]any{
		"architecture": base.Architecture, "os": base.OS, "config": base.Config,
		"rootfs":  map[string]any{"type": "layers", "diff_ids": append(append([]string{}, base.DiffIDs...), diffID)},
		"created": time.Now().UTC().Format(time.RFC3339Nano),
		"comment": "mlc copy",
	}
	cb, err := json.Marshal(conf)
	if err != nil {
		return "", errs.Wrap(errs.Internal, err, "image configuration")
	}
	sumc := sha256.Sum256(cb)
	cname := hex.EncodeToString(sumc[:]) + ".json"
	mb, _ := json.Marshal([]map[string]any{{"Config": cname, "RepoTags": nil, "Layers": layers}})
	for _, f := range []struct {
		name string
		b    []byte
	}{{cname, cb}, {"manifest.json", mb}} {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Typeflag: tar.TypeReg, Mode: 0o600, Size: int64(len(f.b))}); err != nil {
			return "", errs.Wrap(errs.Unavailable, err, "loading the copied layer")
		}
		if _, err := tw.Write(f.b); err != nil {
			return "", errs.Wrap(errs.Unavailable, err, "loading the copied layer")
		}
	}
	if err := tw.Close(); err != nil {
		return "", errs.Wrap(errs.Unavailable, err, "loading the copied layer")
	}
	return "sha256:" + hex.EncodeToString(sumc[:]), nil
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

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func humanBytes(n int64) string { return units.BytesSize(float64(n)) }
