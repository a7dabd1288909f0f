package errs

import (
	"fmt"
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
