package main

import (
	"bufio"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// docPolicy is the policy the user guide's examples run under: a catalogue
// whose pytorch entries are the local busybox image (no registry here), one
// fake GPU, a GPU limit of 2, room for the guide's containers.
const docPolicy = `state_dir: %[1]s/state
audit_log: %[1]s/audit.jsonl
admins: [mlct-admin]
defaults:
  cpus: 1
  memory: 256m
  shm_size: 16m
  max_containers: 8
  gpus: 2
policies:
  workspace_root: %[1]s/ws
  mount_roots: [%[1]s/data]
gpu:
  fake_count: 1
  runtime: env
images:
  pytorch-2.5:
    image: mlc/busybox:latest
    framework: pytorch
    version: "2.5.1"
  pytorch-2.4:
    image: mlc/busybox:latest
    framework: pytorch
    version: "2.4.1"
`

// docExample is one `$ command` line of a console block, with the exit code
// its `# exit N` comment expects (0 without one).
type docExample struct {
	line int
	cmd  string
	code int
}

var exitComment = regexp.MustCompile(`\s+# exit (\d+)$`)

func docExamples(t *testing.T, path string) []docExample {
	t.Helper()
	f, err := os.Open(path)
	must(t, err)
	defer f.Close()
	var out []docExample
	in := false
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		l := sc.Text()
		switch {
		case strings.HasPrefix(l, "```console"):
			in = true
		case strings.HasPrefix(l, "```"):
			in = false
		case in && strings.HasPrefix(l, "$ "):
			ex := docExample{line: n, cmd: strings.TrimPrefix(l, "$ ")}
			if m := exitComment.FindStringSubmatch(ex.cmd); m != nil {
				ex.code, _ = strconv.Atoi(m[1])
				ex.cmd = strings.TrimSuffix(ex.cmd, m[0])
			}
			out = append(out, ex)
		}
	}
	must(t, sc.Err())
	return out
}

// Every example of the user guide, in order, as a student types it (no
// sudo: mlc elevates itself through the rule), with the exit code it says.
// The one substitution: /data/ is the rig's data area.
func TestUserGuideExamples(t *testing.T) {
	examples := docExamples(t, "../docs/user-guide.md")
	if len(examples) < 20 {
		t.Fatalf("only %d examples found in the user guide", len(examples))
	}
	r := newSecRigPolicy(t, docPolicy)
	for _, ex := range examples {
		cmd := strings.ReplaceAll(ex.cmd, "/data/", r.dir+"/data/")
		out, errOut, code := r.as(t, "mlct-doc", "cd ~ && PATH="+r.dir+":$PATH && "+cmd)
		if code != ex.code {
			t.Fatalf("docs/user-guide.md:%d: $ %s\nexit %d, the guide says %d\nstdout: %s\nstderr: %s", ex.line, ex.cmd, code, ex.code, out, errOut)
		}
	}
}

// The parser finds what the test runs, with the codes.
func TestDocExamplesParser(t *testing.T) {
	p := t.TempDir() + "/g.md"
	must(t, os.WriteFile(p, []byte("text\n$ not this\n```console\n$ mlc list\n$ mlc x   # exit 7\nout\n```\n```sh\n$ no\n```\n"), 0o644))
	got := docExamples(t, p)
	if len(got) != 2 || got[0] != (docExample{4, "mlc list", 0}) || got[1] != (docExample{5, "mlc x", 7}) {
		t.Fatalf("%+v", got)
	}
}
