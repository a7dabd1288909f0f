package sqlitex

import (
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"testing"

	_ "github.com/mattn/go-sqlite3"
)

func TestMigrate(t *testing.T) {
	db, err := sql.Open("sqlite3", filepath.Join(t.TempDir(), "x.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	run := func(ms []string) error {
		tx, err := db.Begin()
		if err != nil {
			t.Fatal(err)
		}
		if err := Migrate(tx, ms, "test db"); err != nil {
			tx.Rollback()
			return err
		}
		return tx.Commit()
	}
	v1 := []string{`CREATE TABLE a (x INTEGER)`}
	v2 := append(v1, `ALTER TABLE a ADD COLUMN y INTEGER`)
	if err := run(v1); err != nil {
		t.Fatal(err)
	}
	if err := run(v2); err != nil {
		t.Fatalf("v1 -> v2: %v", err)
	}
	if err := run(v2); err != nil {
		t.Fatalf("v2 again: %v", err)
	}
	var v int
	if err := db.QueryRow(`PRAGMA user_version`).Scan(&v); err != nil || v != 2 {
		t.Fatalf("user_version %d %v", v, err)
	}
	if _, err := db.Exec(`INSERT INTO a (x, y) VALUES (1, 2)`); err != nil {
		t.Fatalf("migrated table: %v", err)
	}
	if err := run(v1); err == nil || !strings.Contains(err.Error(), "test db schema version 2 is newer than this mlc knows (1)") {
		t.Errorf("an older mlc on a newer file: %v", err)
	}
	if err := run(append(v2, `NOT SQL`)); err == nil || !strings.Contains(err.Error(), "migration 3") {
		t.Errorf("a bad migration: %v", err)
	}
}

func TestTighten(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, 0o664); err != nil {
		t.Fatal(err)
	}
	if err := Tighten(p, 0o600); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o600 {
		t.Errorf("mode %o", st.Mode().Perm())
	}
	if err := Tighten(p, 0o644); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o600 {
		t.Errorf("a narrower mode was widened: %o", st.Mode().Perm())
	}
	if err := Tighten(filepath.Join(t.TempDir(), "missing"), 0o600); err == nil {
		t.Error("missing file: no error")
	}
}
