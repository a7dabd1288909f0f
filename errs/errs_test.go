package errs

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
)

func TestTableIsOneToOne(t *testing.T) {
	codes := map[int]bool{}
	for _, r := range Table {
		if codes[r.Code] || r.Code == 0 {
			t.Fatalf("exit code %d used twice or zero", r.Code)
		}
		codes[r.Code] = true
		if r.Kind.ExitCode() != r.Code {
			t.Fatalf("%s", r.Name)
		}
	}
}

func TestKindThroughWrapping(t *testing.T) {
	err := fmt.Errorf("outer: %w", New(Quota, "too many"))
	if KindOf(err) != Quota || KindOf(err).ExitCode() != 7 {
		t.Fatal(KindOf(err))
	}
	if KindOf(fmt.Errorf("plain")) != Internal || Wrap(Usage, nil, "x") != nil {
		t.Fatal("unclassified or nil")
	}
	if got := Wrap(Engine, fmt.Errorf("refused"), "ping").Error(); got != "ping: refused" {
		t.Fatal(got)
	}
}

// The exit-code table in the user guide is this table, row for row.
func TestDocsTableMatchesCode(t *testing.T) {
	data, err := os.ReadFile("../docs/user-guide.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile(`^\| (\d+) \| ([a-z-]+) \| (.+) \|$`)
	var got []string
	for _, line := range strings.Split(string(data), "\n") {
		if m := row.FindStringSubmatch(line); m != nil {
			got = append(got, m[1]+" "+m[2]+" "+m[3])
		}
	}
	var want []string
	for _, r := range Table {
		want = append(want, fmt.Sprintf("%d %s %s", r.Code, r.Name, r.What))
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("docs/user-guide.md's exit codes:\n%s\n\nerrs.Table:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
