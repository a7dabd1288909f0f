package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDefaultIsValid(t *testing.T) {
	c := Default()
	if c.Source != EmbeddedName {
		t.Fatalf("source %q", c.Source)
	}
	if *c.Defaults.Memory != 16<<30 || *c.Defaults.CPUs != 4 || c.GPU.Mode != "exclusive" {
		t.Fatalf("unexpected defaults %+v", c.Defaults)
	}
	if _, ok := c.ImageAlias("PyTorch-2.5"); !ok {
		t.Fatal("alias lookup is not case-insensitive")
	}
}

func TestFullExample(t *testing.T) {
	src := `
defaults:
  gpus: 1
  cpus: 2.5
  memory: 1.5GiB
  shm_size: 512m
  pids_limit: 100
  idle_timeout: 7d
groups:
  students:
    members: [alice, "@phd"]
    gpus: 2
user_overrides:
  bob:
    memory: 32g
    idle_timeout: null
    reason: deadline
policies:
  max_containers_per_user: 4
  mount_roots: [/data]
images:
  pt:
    image: pytorch/pytorch:2.5.1
    framework: pytorch
    version: 2.5
gpu:
  mode: shared
  max_per_gpu: 3
  runtime: env
  fake_count: 8
protected: ["*-keep"]
admins: [root, "@wheel"]
state_dir: /tmp/x
`
	c, err := Parse("p.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if *c.Defaults.CPUs != 2.5 || *c.Defaults.Memory != Size(1.5*(1<<30)) || *c.Defaults.ShmSize != 512<<20 {
		t.Errorf("defaults: %+v", c.Defaults)
	}
	if c.Defaults.IdleTimeout.D.Hours() != 168 {
		t.Errorf("idle_timeout %v", c.Defaults.IdleTimeout)
	}
	o, _ := c.Override("bob")
	if !o.Limits.IdleTimeout.Never || o.Reason != "deadline" || o.Line != 14 {
		t.Errorf("override %+v", o)
	}
	g, _ := c.Group("students")
	if len(g.Members) != 2 || g.Members[1] != "@phd" || *g.Limits.GPUs != 2 {
		t.Errorf("group %+v", g)
	}
	if im, _ := c.ImageAlias("pt"); im.Version != "2.5" || im.Framework != "pytorch" {
		t.Errorf("image %+v", im)
	}
	if c.GPU.MaxPerGPU != 3 || c.GPU.Runtime != "env" || c.GPU.FakeCount != 8 {
		t.Errorf("gpu %+v", c.GPU)
	}
	if *c.Policies.MaxContainersPerUser != 4 || c.StateDir != "/tmp/x" {
		t.Errorf("policies %+v", c.Policies)
	}
}

// Each bad input names its line and what is wrong.
func TestErrors(t *testing.T) {
	cases := []struct{ name, src, want string }{
		{"unknown top key", "defaults: {}\nfoo: 1\n", "p.yaml:2: unknown key \"foo\""},
		{"wrong type", "defaults:\n  gpus: two\n", "p.yaml:2: defaults.gpus: expected a whole number, found the string \"two\""},
		{"negative size", "defaults:\n  memory: -1g\n", "p.yaml:2: defaults.memory: size \"-1g\" is negative"},
		{"bad size", "defaults:\n  shm_size: 12x\n", "p.yaml:2: defaults.shm_size: invalid size \"12x\""},
		{"negative int", "defaults:\n  gpus: -1\n", "p.yaml:2: defaults.gpus: must be at least 0, found -1"},
		{"zero cpus", "defaults:\n  cpus: 0\n", "p.yaml:2: defaults.cpus: must be more than 0"},
		{"tiny memory", "defaults:\n  memory: 1m\n", "p.yaml:2: defaults.memory: 1m is below docker's minimum of 6m"},
		{"duration unit", "defaults:\n  idle_timeout: 48\n", "p.yaml:2: defaults.idle_timeout: 48 needs a unit"},
		{"bad duration", "defaults:\n  idle_timeout: soon\n", "p.yaml:2: defaults.idle_timeout: invalid duration \"soon\""},
		{"two groups", "groups:\n  a:\n    members: [alice]\n  b:\n    members: [alice]\n", "p.yaml:4: groups.b: user \"alice\" is already in group \"a\""},
		{"override unknown limit", "user_overrides:\n  alice:\n    gpu_count: 2\n", "p.yaml:3: user_overrides.alice: unknown limit \"gpu_count\""},
		{"group unknown limit", "groups:\n  a:\n    members: [x]\n    ram: 2g\n", "p.yaml:4: groups.a: unknown limit \"ram\""},
		{"image without ref", "images:\n  pt:\n    framework: pytorch\n", "p.yaml:2: images.pt: missing image reference"},
		{"image unknown key", "images:\n  pt:\n    image: a\n    tag: b\n", "p.yaml:4: images.pt: unknown key \"tag\""},
		{"swap below memory", "defaults:\n  memory: 2g\n  memory_swap: 1g\n", "p.yaml:2: defaults: memory_swap (1GiB) is less than memory (2GiB)"},
		{"gpu mode", "gpu:\n  mode: fair\n", "p.yaml:2: gpu.mode: \"fair\" is not exclusive or shared"},
		{"gpu strategy", "gpu:\n  strategy: random\n", "p.yaml:2: gpu.strategy: \"random\" is not spread, pack or last-used"},
		{"relative state dir", "state_dir: var/mlc\n", "p.yaml:1: state_dir: \"var/mlc\" must be an absolute path"},
		{"duplicate key", "defaults:\n  gpus: 1\n  gpus: 2\n", "p.yaml:3: defaults: \"gpus\" is given twice (first at line 2)"},
		{"section not a map", "defaults: [1, 2]\n", "p.yaml:1: defaults: expected a mapping"},
		{"group without members", "groups:\n  a:\n    gpus: 1\n", "p.yaml:2: groups.a: has no members"},
		{"bad member", "groups:\n  a:\n    members: [\"Bad Name\"]\n", "p.yaml:3: groups.a.members: \"Bad Name\" is not a user name"},
		{"sys_admin", "policies:\n  capabilities: [SYS_ADMIN]\n", "p.yaml:2: policies.capabilities: SYS_ADMIN would let a user escape"},
		{"malformed yaml", "defaults:\n  gpus: 1\n bad: [\n", "p.yaml:2: invalid YAML: did not find expected key"},
		{"tab indent", "defaults:\n\tgpus: 1\n", "p.yaml:2: invalid YAML: found character that cannot start any token"},
		{"empty", "   \n", "p.yaml: file is empty"},
		{"only comments", "# nothing\n", "p.yaml:"},
		{"policy conflict", "defaults:\n  max_containers: 2\npolicies:\n  max_containers_per_user: 3\n", "disagree"},
		{"bool type", "policies:\n  allow_root: yes please\n", "p.yaml:2: policies.allow_root: expected true or false"},
		{"servers not a list", "servers:\n  a: b\n", "p.yaml:2: servers: expected a list of servers"},
		{"server without name", "servers:\n  - ssh: h\n", "p.yaml:2: servers[0]: has no name"},
		{"server named any", "servers:\n  - name: any\n", "p.yaml:2: servers[0].name: \"any\" is not a server name"},
		{"server name with a dollar", "servers:\n  - name: gpu2$\n", "p.yaml:2: servers[0].name: \"gpu2$\" is not a server name"},
		{"server name with a dot", "servers:\n  - name: gpu2.lab\n", "p.yaml:2: servers[0].name: \"gpu2.lab\" is not a server name (letters, digits, _ and -, as in its host name"},
		{"server twice", "servers:\n  - name: a\n  - name: a\n", "p.yaml:3: servers[1]: server a is listed twice (first at line 2)"},
		{"server with user", "servers:\n  - name: a\n    ssh: root@a\n", "p.yaml:3: servers[0].ssh: \"root@a\" names a user"},
		{"server option injection", "servers:\n  - name: a\n    ssh: -oProxyCommand=x\n", "p.yaml:3: servers[0].ssh: \"-oProxyCommand=x\" is not a host name"},
		{"server port", "servers:\n  - name: a\n    port: 70000\n", "p.yaml:3: servers[0].port: 70000 is not a TCP port"},
		{"server relative mlc", "servers:\n  - name: a\n    mlc: bin/mlc\n", "p.yaml:3: servers[0].mlc: \"bin/mlc\" must be an absolute path"},
		{"server unknown key", "servers:\n  - name: a\n    user: x\n", "p.yaml:3: servers[0]: unknown key \"user\""},
		{"may_copy type", "groups:\n  ms:\n    members: [x]\n    may_copy: sometimes\n", "p.yaml:4: groups.ms.may_copy: expected true or false"},
		{"cleanup percent", "cleanup:\n  idle_cpu_percent: 150\n", "p.yaml:2: cleanup.idle_cpu_percent: must be between 0 and 100"},
		{"idle net", "cleanup:\n  idle_net_bytes: lots\n", "p.yaml:2: cleanup.idle_net_bytes: "},
		{"monitor key", "monitor:\n  retain: 3d\n", "p.yaml:2: monitor: unknown key \"retain\" (known: retention, interval, listen, stats_window, token_file)"},
		{"monitor interval", "monitor:\n  interval: 10ms\n", "p.yaml:2: monitor.interval: must be between 1s and 1d"},
		{"warn at", "cleanup:\n  warn_at: [0.8, 1.5]\n", "p.yaml:2: cleanup.warn_at: 1.5 is not a fraction between 0 and 1"},
		{"warn at empty", "cleanup:\n  warn_at: []\n", "p.yaml:2: cleanup.warn_at: give at least one fraction"},
		{"high demand", "cleanup:\n  high_demand: {gpu_fraction: 0.9, factor: 2}\n", "p.yaml:2: cleanup.high_demand.factor: must be above 0 and at most 1"},
		{"high demand key", "cleanup:\n  high_demand: {fraction: 0.9}\n", "p.yaml:2: cleanup.high_demand: unknown key \"fraction\" (known: gpu_fraction, factor)"},
		{"grace never", "cleanup:\n  grace: null\n", "p.yaml:2: cleanup.grace: must be a duration, not never"},
		{"min samples", "cleanup:\n  min_samples: 0\n", "p.yaml:2: cleanup.min_samples: must be at least 1"},
		{"notify", "notify:\n  cmd: mail\n", "p.yaml:2: notify: unknown key \"cmd\" (known: command)"},
		{"monitor token", "monitor:\n  token_file: token.txt\n", "p.yaml:2: monitor.token_file: "},
		{"monitor window", "monitor:\n  stats_window: 1m\n", "p.yaml:2: monitor.stats_window: must be between 50ms and 5s"},
		{"monitor listen", "monitor:\n  listen: 9101\n", "p.yaml:2: monitor.listen: \"9101\" is not HOST:PORT (like 127.0.0.1:9101)"},
		{"monitor listen port", "monitor:\n  listen: \"127.0.0.1:99999\"\n", "p.yaml:2: monitor.listen: \"127.0.0.1:99999\" is not HOST:PORT"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("p.yaml", []byte(tc.src))
			if err == nil {
				t.Fatalf("no error for %q", tc.src)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q\n does not contain %q", err, tc.want)
			}
			if _, ok := err.(ErrorList); !ok {
				t.Fatalf("error is %T, not ErrorList", err)
			}
		})
	}
}

func TestServersAndMayCopy(t *testing.T) {
	c, err := Parse("p.yaml", []byte(`servers:
  - name: gpu1
    ssh: gpu1.lab.example.org
  - name: gpu2
    port: 2222
    mlc: /opt/mlc/mlc
policies:
  may_copy: false
  shared_workspaces: true
groups:
  staff:
    members: [alice]
    may_copy: true
`))
	if err != nil {
		t.Fatal(err)
	}
	want := []Server{{Name: "gpu1", SSH: "gpu1.lab.example.org", Line: 2}, {Name: "gpu2", SSH: "gpu2", Port: 2222, MLC: "/opt/mlc/mlc", Line: 4}}
	if len(c.Servers) != 2 || c.Servers[0] != want[0] || c.Servers[1] != want[1] {
		t.Fatalf("servers %+v", c.Servers)
	}
	if c.Policies.MayCopy == nil || *c.Policies.MayCopy || !c.Policies.SharedWorkspaces {
		t.Fatalf("policies %+v", c.Policies)
	}
	if c.Groups[0].Limits.MayCopy == nil || !*c.Groups[0].Limits.MayCopy {
		t.Fatalf("group may_copy %+v", c.Groups[0].Limits)
	}
}

func TestAllErrorsAtOnce(t *testing.T) {
	src := "defaults:\n  gpus: x\n  memory: 12x\nfoo: 1\nimages:\n  a: {framework: f}\n"
	_, err := Parse("p.yaml", []byte(src))
	list, ok := err.(ErrorList)
	if !ok || len(list) != 4 {
		t.Fatalf("want 4 errors, got %v", err)
	}
	lines := []int{2, 3, 4, 6}
	for i, e := range list {
		if e.Line != lines[i] {
			t.Errorf("error %d at line %d, want %d: %s", i, e.Line, lines[i], e)
		}
	}
}

func TestLoadFileErrors(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.yaml")
	os.WriteFile(empty, nil, 0o644)
	unreadable := filepath.Join(dir, "secret.yaml")
	os.WriteFile(unreadable, []byte("defaults: {}\n"), 0o000)
	cases := map[string]string{
		filepath.Join(dir, "missing.yaml"): "no such file",
		dir:                                "is a directory",
		empty:                              "file is empty",
	}
	if os.Geteuid() != 0 { // root reads anything
		cases[unreadable] = "permission denied"
	}
	for path, want := range cases {
		_, err := Load(path)
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), path) {
			t.Errorf("Load(%s) = %v, want %q", path, err, want)
		}
	}
}

func TestLocate(t *testing.T) {
	t.Setenv("MLC_CONFIG", "/env.yaml")
	if got := Locate("/flag.yaml"); got != "/flag.yaml" {
		t.Errorf("flag: %s", got)
	}
	if got := Locate(""); got != "/env.yaml" {
		t.Errorf("env: %s", got)
	}
}

func TestSizes(t *testing.T) {
	good := map[string]Size{"32g": 32 << 30, "512m": 512 << 20, "1.5GiB": 3 << 29, "1024": 1024, "64k": 64 << 10}
	for s, want := range good {
		got, err := ParseSize(s)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", s, got, err, want)
		}
	}
	for _, s := range []string{"12x", "-1g", "", "g", "1..5g"} {
		if _, err := ParseSize(s); err == nil {
			t.Errorf("ParseSize(%q) accepted", s)
		}
	}
	if Size(16<<30).Flag() != "16g" || Size(512<<20).Flag() != "512m" || Size(1000).Flag() != "1000" {
		t.Error("Flag forms")
	}
}

func TestDurations(t *testing.T) {
	for s, h := range map[string]float64{"48h": 48, "7d": 168, "1w": 168, "90m": 1.5} {
		d, err := ParseDuration(s)
		if err != nil || d.D.Hours() != h {
			t.Errorf("ParseDuration(%q) = %v, %v", s, d, err)
		}
	}
	if d, _ := ParseDuration("never"); !d.Never {
		t.Error("never")
	}
	for _, s := range []string{"0s", "-1h", "soon", "7"} {
		if _, err := ParseDuration(s); err == nil {
			t.Errorf("ParseDuration(%q) accepted", s)
		}
	}
}

func TestCleanupSection(t *testing.T) {
	c, err := Parse("p.yaml", []byte(`cleanup:
  min_samples: 2
  max_sample_age: 90s
  grace: 30s
  warn_at: [0.5, 0.9]
  keepalive_max: 2m
  stop_timeout: 5
  high_demand: {gpu_fraction: 0.75, factor: 0.25}
  remove_stopped_after: 2m
  prune_images: true
  image_max_age: 30d
notify:
  command: mail -s "$MLC_SUBJECT" "$MLC_USER"
`))
	if err != nil {
		t.Fatal(err)
	}
	cl := c.Cleanup
	if cl.MinSamples != 2 || cl.MaxSampleAge.D != 90*time.Second || cl.Grace.D != 30*time.Second || len(cl.WarnAt) != 2 ||
		cl.KeepAliveMax.D != 2*time.Minute || cl.StopTimeout != 5 || cl.HighDemand == nil || cl.HighDemand.Factor != 0.25 ||
		cl.RemoveStoppedAfter.D != 2*time.Minute || !cl.PruneImages || cl.ImageMaxAge.D != 30*24*time.Hour ||
		c.Notify.Command != `mail -s "$MLC_SUBJECT" "$MLC_USER"` {
		t.Errorf("%+v %+v", cl, c.Notify)
	}
	d := Default().Cleanup
	if d.HighDemand != nil || d.MinSamples != 3 || !d.ImageMaxAge.Never || d.Grace.D != time.Hour {
		t.Errorf("defaults: %+v", d)
	}
}
