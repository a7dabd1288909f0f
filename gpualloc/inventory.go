// Package gpualloc is the GPU inventory (NVML, or fake GPUs where NVML is
// absent) and the SQLite allocation ledger that never hands one GPU to two
// containers.
package gpualloc

import (
	"fmt"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// GPU is one device of the inventory.
type GPU struct {
	Index     int    `json:"index"`
	UUID      string `json:"uuid"`
	Name      string `json:"name"`
	MemoryMiB uint64 `json:"memory_mib"`
}

// Inventory is the server's GPUs and where the list came from.
type Inventory struct {
	GPUs   []GPU  `json:"gpus"`
	Source string `json:"source"` // nvml, fake, none
	Driver string `json:"driver,omitempty"`
	Note   string `json:"note,omitempty"` // why NVML was not used
}

// FakeUUID is the stable UUID of fake GPU i.
func FakeUUID(i int) string { return fmt.Sprintf("GPU-%08d-fa4e-4000-8000-000000000000", i) }

// Fake is n fake GPUs with stable UUIDs.
func Fake(n int) []GPU {
	out := make([]GPU, n)
	for i := range out {
		out[i] = GPU{Index: i, UUID: FakeUUID(i), Name: "mlc fake GPU", MemoryMiB: 81920}
	}
	return out
}

// Discover lists GPUs through lib (nvml.New() in production, a mock in
// tests). Where NVML is absent (no driver: ERROR_LIBRARY_NOT_FOUND, the normal
// case in CI) or finds no device, fakeCount fake GPUs stand in; with neither
// the server has no GPUs.
func Discover(lib nvml.Interface, fakeCount int) (Inventory, error) {
	inv, err := fromNVML(lib)
	if err == nil && len(inv.GPUs) > 0 {
		return inv, nil
	}
	note := "NVML found no GPU"
	if err != nil {
		note = err.Error()
	}
	if fakeCount > 0 {
		return Inventory{GPUs: Fake(fakeCount), Source: "fake", Note: note}, nil
	}
	return Inventory{GPUs: []GPU{}, Source: "none", Note: note}, nil
}

func fromNVML(lib nvml.Interface) (inv Inventory, err error) {
	if lib == nil {
		return inv, fmt.Errorf("NVML not available")
	}
	defer func() {
		// go-nvml panics where the library cannot be loaded on some setups.
		if r := recover(); r != nil {
			err = fmt.Errorf("NVML: %v", r)
		}
	}()
	if ret := lib.Init(); ret != nvml.SUCCESS {
		if ret == nvml.ERROR_LIBRARY_NOT_FOUND {
			return inv, fmt.Errorf("no NVIDIA driver (NVML library not found)")
		}
		return inv, fmt.Errorf("NVML init: %s", lib.ErrorString(ret))
	}
	defer lib.Shutdown()
	inv.Source = "nvml"
	if v, ret := lib.SystemGetDriverVersion(); ret == nvml.SUCCESS {
		inv.Driver = v
	}
	n, ret := lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		return inv, fmt.Errorf("NVML device count: %s", lib.ErrorString(ret))
	}
	for i := 0; i < n; i++ {
		d, ret := lib.DeviceGetHandleByIndex(i)
		if ret != nvml.SUCCESS {
			return inv, fmt.Errorf("NVML device %d: %s", i, lib.ErrorString(ret))
		}
		uuid, ret := d.GetUUID()
		if ret != nvml.SUCCESS {
			return inv, fmt.Errorf("NVML device %d UUID: %s", i, lib.ErrorString(ret))
		}
		g := GPU{Index: i, UUID: uuid}
		if name, ret := d.GetName(); ret == nvml.SUCCESS {
			g.Name = name
		}
		if mem, ret := d.GetMemoryInfo(); ret == nvml.SUCCESS {
			g.MemoryMiB = mem.Total / (1 << 20)
		}
		inv.GPUs = append(inv.GPUs, g)
	}
	return inv, nil
}
