package engine_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mlc-lab/mlc/engine"
	"github.com/mlc-lab/mlc/errs"
	"github.com/mlc-lab/mlc/internal/testenv"
)

// A container's changes (a file added, one changed, one deleted, a
// directory emptied) cut out of a commit and loaded again on top of the base
// image give a container that sees exactly those changes, and the image has
// the base's settings, not the sender's.
func TestExportImportChanges(t *testing.T) {
	c := testenv.Engine(t)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	run := func(name string, image string, cmd string) string {
		id, err := c.Create(ctx, engine.Spec{Name: name, Image: image, Cmd: []string{"sh", "-c", cmd},
			Env:    []string{"SENDER_ONLY=1"},
			Labels: map[string]string{engine.LabelManaged: "true", engine.LabelUser: "enginetest", engine.LabelName: "x"}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Remove(context.Background(), id, true) })
		return id
	}
	src := run(fmt.Sprintf("mlc-xfer-src-%d", os.Getpid()), testenv.Image,
		"echo new > /added; echo changed > /etc/motd; rm /bin/vi; rm -rf /usr; mkdir -p /opt/d; echo x > /opt/d/f; sleep 300")
	if err := c.Start(ctx, src); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		var out bytes.Buffer
		code, _ := c.Exec(ctx, src, engine.ExecOptions{Cmd: []string{"cat", "/opt/d/f"}, Stdout: &out})
		if code == 0 && out.String() == "x\n" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the source container did not make its changes")
		}
		time.Sleep(100 * time.Millisecond)
	}
	base, err := c.ImageConfig(ctx, testenv.Image)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ExportChanges(ctx, src, base.DiffIDs[:len(base.DiffIDs)-1], &bytes.Buffer{}, func(string) {}); !errs.Is(err, errs.Conflict) && len(base.DiffIDs) > 0 {
		t.Fatalf("export against another base: %v, want a conflict", err)
	}
	var wire bytes.Buffer
	var phases []string
	exp, err := c.ExportChanges(ctx, src, base.DiffIDs, &wire, func(p string) { phases = append(phases, p) })
	if err != nil {
		t.Fatal(err)
	}
	if exp.Size <= 0 || int64(wire.Len()) > exp.Size+8192 || strings.Join(phases, ",") != "committing,sending" {
		t.Fatalf("exported %+v in %d wire bytes, phases %v", exp, wire.Len(), phases)
	}
	// The source is untouched: running, and no image left behind by the commit.
	if d, err := c.Detail(ctx, src); err != nil || d.State != "running" {
		t.Fatalf("source after export: %+v %v", d.State, err)
	}
	if _, err := c.ImportChanges(ctx, bytes.NewReader(wire.Bytes()[:wire.Len()/2]), base, 1<<40, nil); err == nil {
		t.Fatal("a stream cut in half was loaded")
	}
	if _, err := c.ImportChanges(ctx, bytes.NewReader(wire.Bytes()), base, exp.Size-1, nil); !errs.Is(err, errs.Quota) {
		t.Fatalf("a layer over the limit: %v", err)
	}
	var got int64
	id, err := c.ImportChanges(ctx, bytes.NewReader(wire.Bytes()), base, 1<<40, func(n int64) { got += n })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.RemoveImage(context.Background(), id) })
	if got != exp.Size {
		t.Fatalf("progress counted %d of %d", got, exp.Size)
	}
	img, err := c.ImageConfig(ctx, id)
	if err != nil || len(img.DiffIDs) != len(base.DiffIDs)+1 || img.DiffIDs[len(img.DiffIDs)-1] != exp.DiffID {
		t.Fatalf("loaded image %+v %v", img, err)
	}
	if strings.Contains(strings.Join(img.Env, " "), "SENDER_ONLY") {
		t.Fatalf("the sender's environment came along: %v", img.Env)
	}
	dst := run(fmt.Sprintf("mlc-xfer-dst-%d", os.Getpid()), id,
		"cat /added /etc/motd /opt/d/f; ls /bin/vi /usr 2>&1 | wc -l; ls /bin/sh")
	if err := c.Start(ctx, dst); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	deadline = time.Now().Add(20 * time.Second)
	for {
		logs.Reset()
		if err := c.Logs(ctx, dst, engine.LogOptions{Stdout: &logs, Stderr: &logs, TTY: true}); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(logs.String(), "/bin/sh") || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if want := "new\nchanged\nx\n2\n/bin/sh\n"; strings.ReplaceAll(logs.String(), "\r", "") != want {
		t.Fatalf("the copy sees %q, want %q", logs.String(), want)
	}
}
