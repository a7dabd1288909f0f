package engine_test

import (
	"archive/tar"
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
// directory emptied) read from its writable layer and written into a new
// container of the same image give a container that sees exactly those
// changes.
func TestExportImportChanges(t *testing.T) {
	c := testenv.Engine(t)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	run := func(name string, image string, cmd string, user ...string) string {
		id, err := c.Create(ctx, engine.Spec{Name: name, Image: image, Cmd: []string{"sh", "-c", cmd}, User: strings.Join(user, ""),
			Env:    []string{"SENDER_ONLY=1"},
			Labels: map[string]string{engine.LabelManaged: "true", engine.LabelUser: "enginetest", engine.LabelName: "x"}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Remove(context.Background(), id, true) })
		return id
	}
	src := run(fmt.Sprintf("mlc-xfer-src-%d", os.Getpid()), testenv.Image,
		"echo new > /added; echo changed > /etc/motd; rm /bin/vi; rm -rf /usr; mkdir -p /opt/d; echo x > /opt/d/f; chown -R 4321:4322 /opt/d; sleep 300")
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
	var wire bytes.Buffer
	var phases []string
	var progressed int64
	exp, err := c.ExportChanges(ctx, src, &wire, func(p string) { phases = append(phases, p) }, func(n int64) { progressed = n })
	if err != nil {
		t.Fatal(err)
	}
	if exp.Bytes < 10 || progressed != exp.Bytes || int64(wire.Len()) > exp.Bytes+exp.Entries*2048+4096 || strings.Join(phases, ",") != "pausing,sending" {
		t.Fatalf("exported %+v in %d wire bytes, phases %v", exp, wire.Len(), phases)
	}
	// The source is untouched: running again, not paused.
	if d, err := c.Detail(ctx, src); err != nil || d.State != "running" {
		t.Fatalf("source after export: %+v %v", d.State, err)
	}
	half := run(fmt.Sprintf("mlc-xfer-half-%d", os.Getpid()), testenv.Image, "true")
	if _, err := c.ImportChanges(ctx, half, bytes.NewReader(wire.Bytes()[:wire.Len()/2]), 1<<40, engine.Owner{}, nil); err == nil {
		t.Fatal("a stream cut in half was taken")
	}
	if _, err := c.ImportChanges(ctx, half, bytes.NewReader(wire.Bytes()), exp.Bytes-1, engine.Owner{}, nil); !errs.Is(err, errs.Quota) {
		t.Fatalf("changes over the limit: %v", err)
	}
	// As mlc makes them: running as a uid the image's passwd does not know.
	dst := run(fmt.Sprintf("mlc-xfer-dst-%d", os.Getpid()), testenv.Image,
		"cat /added /etc/motd /opt/d/f; ls /bin/vi /usr 2>&1 | wc -l; ls /bin/sh; stat -c %u:%g /opt/d/f", "4321:4321")
	var counted int64
	got, err := c.ImportChanges(ctx, dst, bytes.NewReader(wire.Bytes()), 1<<40, engine.Owner{UID: 4321, GID: 4322}, func(n int64) { counted = n })
	if err != nil {
		t.Fatal(err)
	}
	if got.Exported != exp || counted != exp.Bytes || got.Deleted < 1 {
		t.Fatalf("received %+v (counted %d), sent %+v", got, counted, exp)
	}
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
		if strings.Contains(logs.String(), "4321:") || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if want := "new\nchanged\nx\n2\n/bin/sh\n4321:4322\n"; strings.ReplaceAll(logs.String(), "\r", "") != want {
		t.Fatalf("the copy sees %q, want %q", logs.String(), want)
	}
}

// A stream that makes a link out of the container and then records a
// deletion through it touches nothing outside the container.
func TestImportChangesStaysInside(t *testing.T) {
	c := testenv.Engine(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	outside := t.TempDir()
	victim := outside + "/victim"
	if err := os.WriteFile(victim, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	id, err := c.Create(ctx, engine.Spec{Name: fmt.Sprintf("mlc-xfer-evil-%d", os.Getpid()), Image: testenv.Image, Cmd: []string{"true"},
		Labels: map[string]string{engine.LabelManaged: "true", engine.LabelUser: "enginetest", engine.LabelName: "x"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Remove(context.Background(), id, true) })
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	tw.WriteHeader(&tar.Header{Name: "esc", Typeflag: tar.TypeSymlink, Linkname: outside, Mode: 0o777})
	tw.WriteHeader(&tar.Header{Name: "esc/.wh.victim", Typeflag: tar.TypeReg, Mode: 0o644})
	tw.Close()
	var wire bytes.Buffer
	if _, err := engine.CopyLayerForTest(bytes.NewReader(layer.Bytes()), &wire); err != nil {
		t.Fatal(err)
	}
	_, err = c.ImportChanges(ctx, id, bytes.NewReader(wire.Bytes()), 1<<30, engine.Owner{}, nil)
	if b, rerr := os.ReadFile(victim); rerr != nil || string(b) != "keep" {
		t.Fatalf("a file outside the container was touched (%v, %q); import said %v", rerr, b, err)
	}
	if err == nil {
		t.Fatal("a deletion through a link out of the container was accepted")
	}
}
