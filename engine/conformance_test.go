package engine_test

import (
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
	lockNetworkTests(t) // its subnets lie beside the network tests'
	sweep := func() {
		f := "label=" + enginetest.Label
		for _, id := range strings.Fields(dockerQuiet("ps", "-aq", "--filter", f)) {
			dockerQuiet("rm", "-f", id)
		}
		for _, id := range strings.Fields(dockerQuiet("network", "ls", "-q", "--filter", f)) {
			dockerQuiet("network", "rm", id)
		}
	}
	sweep()
	t.Cleanup(sweep)
	enginetest.Run(t, func(*testing.T) engine.Engine { return c })
}
