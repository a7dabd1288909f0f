package limits

import (
	"strings"
	"testing"

	"github.com/mlc-lab/mlc/config"
	"github.com/mlc-lab/mlc/errs"
)

const policy = `
defaults:
  gpus: 1
  cpus: 4
  memory: 16g
groups:
  students:
    members: [alice, "@phd"]
    cpus: 8
  staff:
    members: ["@staff"]
    gpus: 4
    memory: 64g
    memory_swap: 80g
user_overrides:
  alice:
    gpus: 2
    reason: thesis deadline
  carol:
    memory: 32g
policies:
  max_containers_per_user: 5
`

func load(t *testing.T, src string) *config.Config {
	t.Helper()
	c, err := config.Parse("p.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var dir = MapDirectory{"alice": {"users"}, "dave": {"phd"}, "erin": {"staff"}, "mallory": {"phd", "staff"}}

func TestResolveSources(t *testing.T) {
	c := load(t, policy)
	r, err := Resolve(c, dir, "alice")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][2]string{
		"gpus":           {"2", "override (thesis deadline)"},
		"cpus":           {"8", "group students"},
		"memory":         {"16GiB", "default"},
		"memory_swap":    {"16GiB", "= memory (policies.allow_swap is false)"},
		"shm_size":       {"1GiB", BuiltIn},
		"max_containers": {"5", "policies.max_containers_per_user"},
	}
	for _, row := range r.Rows() {
		if w, ok := want[row.Name]; ok && (row.Value != w[0] || row.Source != w[1]) {
			t.Errorf("%s = %s from %q, want %s from %q", row.Name, row.Value, row.Source, w[0], w[1])
		}
	}
	if !r.AccountExists || r.Group != "students" || r.Reason != "thesis deadline" {
		t.Errorf("resolved %+v", r)
	}
}

func TestUnixGroupMembership(t *testing.T) {
	c := load(t, policy)
	r, _ := Resolve(c, dir, "dave")
	if r.Group != "students" || r.CPUs.Value != 8 {
		t.Errorf("dave via @phd: %+v", r)
	}
	r, _ = Resolve(c, dir, "erin")
	if r.Group != "staff" || r.GPUs.Value != 4 || r.Memory.Value != 64<<30 {
		t.Errorf("erin via @staff: %+v", r)
	}
}

func TestTwoGroupsThroughUnixGroups(t *testing.T) {
	_, err := Resolve(load(t, policy), dir, "mallory")
	if !errs.Is(err, errs.Config) || !strings.Contains(err.Error(), `groups "students" (as @phd, line 7) and "staff" (as @staff, line 10)`) {
		t.Fatalf("got %v", err)
	}
}

func TestNoAccountStillResolves(t *testing.T) {
	r, err := Resolve(load(t, policy), dir, "carol")
	if err != nil || r.AccountExists || r.Memory.Value != 32<<30 || r.Memory.Source != "override" {
		t.Fatalf("carol: %+v %v", r, err)
	}
}

func TestSwap(t *testing.T) {
	c := load(t, policy+"  allow_swap: true\n")
	r, _ := Resolve(c, dir, "erin")
	if r.MemorySwap.Value != 80<<30 || r.MemorySwap.Source != "group staff" {
		t.Errorf("erin swap %+v", r.MemorySwap)
	}
	r, _ = Resolve(c, dir, "alice")
	if r.MemorySwap.Value != r.Memory.Value {
		t.Errorf("alice swap %+v", r.MemorySwap)
	}
}

func TestInvalidName(t *testing.T) {
	if _, err := Resolve(load(t, policy), dir, "../etc"); !errs.Is(err, errs.Usage) {
		t.Fatalf("got %v", err)
	}
}

func TestDockerArgs(t *testing.T) {
	r, _ := Resolve(load(t, policy), dir, "alice")
	got := strings.Join(r.DockerArgs(), " ")
	want := "--cpus 8 --memory 16g --memory-swap 16g --shm-size 1g --pids-limit 4096 --ulimit memlock=-1:-1 --ulimit stack=67108864:67108864"
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

// may_copy is a limit like the others: built in true, the policy's default,
// then a group's, then an override's, each with its source.
func TestMayCopy(t *testing.T) {
	c := load(t, policy)
	r, _ := Resolve(c, dir, "erin")
	if !r.MayCopy.Value || r.MayCopy.Source != BuiltIn {
		t.Fatalf("built in: %+v", r.MayCopy)
	}
	c = load(t, policy+"  may_copy: false\n")
	r, _ = Resolve(c, dir, "erin")
	if r.MayCopy.Value || r.MayCopy.Source != "policies.may_copy" {
		t.Fatalf("policy default: %+v", r.MayCopy)
	}
	c = load(t, strings.Replace(policy, "    cpus: 8\n", "    cpus: 8\n    may_copy: false\n", 1))
	for user, want := range map[string]string{"dave": "false group students", "erin": "true " + BuiltIn} {
		r, _ := Resolve(c, dir, user)
		if got := strings.TrimSpace(fmtBool(r.MayCopy.Value) + " " + r.MayCopy.Source); got != want {
			t.Errorf("%s: %q, want %q", user, got, want)
		}
	}
}

func fmtBool(b bool) string {
	if b {
		return "true"
	}
	return "false"
}
