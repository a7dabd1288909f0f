package gpualloc

import (
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxa100"
)

func TestDiscoverNVMLMock(t *testing.T) {
	server := dgxa100.New()
	inv, err := Discover(server, 4)
	if err != nil {
		t.Fatal(err)
	}
	if inv.Source != "nvml" || len(inv.GPUs) != 8 || inv.Driver != "550.54.15" {
		t.Fatalf("inventory %+v", inv)
	}
	for i, g := range inv.GPUs {
		want := server.Devices[i].(*dgxa100.Device).UUID
		if g.Index != i || g.UUID != want || !strings.Contains(g.Name, "A100") || g.MemoryMiB != 40960 {
			t.Errorf("gpu %d: %+v", i, g)
		}
	}
}

func TestDiscoverNoDriverFallsBackToFake(t *testing.T) {
	server := dgxa100.New()
	server.InitFunc = func() nvml.Return { return nvml.ERROR_LIBRARY_NOT_FOUND }
	inv, _ := Discover(server, 3)
	if inv.Source != "fake" || len(inv.GPUs) != 3 || inv.GPUs[2].UUID != FakeUUID(2) || !strings.Contains(inv.Note, "no NVIDIA driver") {
		t.Fatalf("%+v", inv)
	}
	inv, _ = Discover(server, 0)
	if inv.Source != "none" || len(inv.GPUs) != 0 {
		t.Fatalf("%+v", inv)
	}
}

// The real library, where there is no driver (CI), says so instead of failing.
func TestDiscoverRealLibrary(t *testing.T) {
	inv, err := Discover(nvml.New(), 2)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("real NVML here: source %s, %d GPUs, note %q", inv.Source, len(inv.GPUs), inv.Note)
	switch inv.Source {
	case "nvml": // a driver: real GPUs with real UUIDs
		for _, g := range inv.GPUs {
			if !strings.HasPrefix(g.UUID, "GPU-") || g.MemoryMiB == 0 {
				t.Fatalf("NVML GPU %+v", g)
			}
		}
	case "fake": // no driver: the fake GPUs, and the reason
		if len(inv.GPUs) != 2 || inv.Note == "" {
			t.Fatalf("%+v", inv)
		}
	default:
		t.Fatalf("source %q with fake_count 2", inv.Source)
	}
}

func TestFakeUUIDsStable(t *testing.T) {
	if Fake(8)[1].UUID != Fake(2)[1].UUID || FakeUUID(7) != "GPU-00000007-fa4e-4000-8000-000000000000" {
		t.Fatal("fake UUIDs are not stable")
	}
}
