package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadToken(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("the token file must be root's: run as root (make test does)")
	}
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		must(t, os.WriteFile(p, []byte(content), mode))
		must(t, os.Chmod(p, mode))
		return p
	}
	good := write("good", "0123456789abcdef0123456789abcdef\n", 0o640)
	if tok, err := readToken(good); err != nil || tok != "0123456789abcdef0123456789abcdef" {
		t.Errorf("good token: %q %v", tok, err)
	}
	if tok, err := readToken(""); err != nil || tok != "" {
		t.Errorf("no token file: %q %v", tok, err)
	}
	must(t, os.Symlink(good, filepath.Join(dir, "link")))
	for name, p := range map[string]string{
		"readable by others": write("open", "0123456789abcdef0123456789abcdef", 0o644),
		"too short":          write("short", "abc", 0o600),
		"two words":          write("words", "0123456789abcdef 0123456789abcdef", 0o600),
		"a link":             filepath.Join(dir, "link"),
		"a directory":        dir,
		"missing":            filepath.Join(dir, "nope"),
	} {
		if _, err := readToken(p); err == nil || !strings.Contains(err.Error(), "monitor.token_file") {
			t.Errorf("%s: %v", name, err)
		}
	}
}
