// Package testenv gives integration tests a real Docker engine and the local
// busybox image that scripts/test-env.sh builds.
//
// Where no engine answers, a test fails when CI=true or MLC_REQUIRE_ENGINE=1
// (make test sets it) and is skipped otherwise (a bare `go test` on a laptop).
package testenv

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/mlc-lab/mlc/engine"
)

// Image is the local test image.
const Image = "mlc/busybox:latest"

// Required is whether a missing engine fails the test rather than skipping it.
func Required() bool {
	return os.Getenv("CI") == "true" || os.Getenv("MLC_REQUIRE_ENGINE") == "1"
}

// Engine returns a client to a live engine with the test image present.
func Engine(t testing.TB) *engine.Client {
	t.Helper()
	c, err := engine.New()
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err = c.Ping(ctx)
		if err == nil {
			var ok bool
			ok, err = c.ImageExists(ctx, Image)
			if err == nil && !ok {
				t.Fatalf("the test image %s is missing: run scripts/test-env.sh (make test does)", Image)
			}
		}
	}
	if err != nil {
		if Required() {
			t.Fatalf("no Docker engine for integration tests: %v (scripts/test-env.sh starts one)", err)
		}
		t.Skipf("no Docker engine (%v); set MLC_REQUIRE_ENGINE=1 to fail instead", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Docker runs the docker CLI (for checks independent of mlc's own code) and
// returns its trimmed output.
func Docker(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command("docker", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}
