package config

import (
	"strings"
	"testing"
)

func FuzzParse(f *testing.F) {
	f.Add(string(defaultYAML))
	f.Add("defaults:\n  memory: 12x\n")
	f.Add("groups:\n  a:\n    members: [x]\n  b:\n    members: [x]\n")
	f.Add("images:\n  a: &x {image: b}\n  c: *x\n")
	f.Fuzz(func(t *testing.T, src string) {
		c, err := Parse("f.yaml", []byte(src))
		if err == nil {
			if c == nil {
				t.Fatal("nil config without error")
			}
			return
		}
		list, ok := err.(ErrorList)
		if !ok || len(list) == 0 {
			t.Fatalf("error %T %v is not a non-empty ErrorList", err, err)
		}
		for _, e := range list {
			if !strings.HasPrefix(e.String(), "f.yaml") || strings.Contains(e.Msg, "\n") {
				t.Fatalf("badly formed error %q", e.String())
			}
		}
	})
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"32g", "1.5GiB", "-1", "12x", "9999999999999999999g"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err == nil && n < 0 {
			t.Fatalf("ParseSize(%q) = %d", s, n)
		}
	})
}

func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"48h", "7d", "never", "-1h", "1h30m"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDuration(s)
		if err == nil && !d.Never && d.D <= 0 {
			t.Fatalf("ParseDuration(%q) = %v", s, d.D)
		}
	})
}
