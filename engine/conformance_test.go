package engine_test

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/mlc-lab/mlc/engine"
	"github.com/mlc-lab/mlc/engine/enginetest"
	"github.com/mlc-lab/mlc/internal/testenv"
)

// The conformance suite against the real engine: what the fake does
// (TestConformanceFake in enginetest) must be what Docker does.
func TestConformanceDocker(t *testing.T) {
	c := testenv.Engine(t)
	testenv.LockNetworkTests(t) // its subnets lie beside the network tests'
	sweep := func() {
		f := "label=" + enginetest.Label
		for _, id := range strings.Fields(dockerQuiet("ps", "-aq", "--filter", f)) {
			dockerQuiet("rm", "-f", id)
		}
		for _, id := range strings.Fields(dockerQuiet("network", "ls", "-q", "--filter", f)) {
			dockerQuiet("network", "rm", id)
		}
		for _, id := range strings.Fields(dockerQuiet("images", "-q", "--no-trunc", "--filter", f)) {
			dockerQuiet("rmi", id)
		}
	}
	sweep()
	t.Cleanup(sweep)
	enginetest.RunWith(t, func(*testing.T) engine.Engine { return c }, enginetest.Options{BuildImage: buildImage})
}

// buildImage builds ref FROM the test image with labels, in one LABEL
// instruction: the legacy builder (Debian's docker.io has no buildx) makes
// an intermediate image per instruction, and `--label`s are one each, which
// removing the image would leave behind.
func buildImage(t *testing.T, _ engine.Engine, ref string, labels map[string]string) {
	t.Helper()
	args := []string{"build", "-q", "-t", ref, "-"}
	df := "FROM " + enginetest.Image + "\nLABEL"
	for k, v := range labels {
		df += fmt.Sprintf(" %q=%q", k, v)
	}
	cmd := exec.Command("docker", args...)
	cmd.Stdin = strings.NewReader(df + "\n")
	cmd.Env = append(os.Environ(), "DOCKER_BUILDKIT=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}
