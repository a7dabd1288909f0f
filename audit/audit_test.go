package audit

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// Concurrent writers (in one process here; separate processes use O_APPEND
// the same way) never interleave lines.
func TestAppendWholeLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "audit.jsonl")
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			l := &Log{Path: path}
			defer l.Close()
			for i := 0; i < 50; i++ {
				if err := l.Append(Entry{Caller: fmt.Sprint("u", w), Action: "create", Container: fmt.Sprint(i)}); err != nil {
					t.Error(err)
				}
			}
		}(w)
	}
	wg.Wait()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var e Entry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil || e.Result != "ok" || e.Time.IsZero() {
			t.Fatalf("line %d: %q %v", n, sc.Text(), err)
		}
		n++
	}
	if n != 200 {
		t.Fatalf("%d lines, want 200", n)
	}
}

func TestUnwritable(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "file"), nil, 0o644)
	l := &Log{Path: filepath.Join(dir, "file", "audit.jsonl")}
	if err := l.Open(); err == nil {
		t.Fatal("opened an audit log below a file")
	}
}
