// Package sqlitex is what mlc's two SQLite databases (the GPU ledger and the
// usage history) do alike: numbered schema migrations and narrowing file
// modes.
package sqlitex

import (
	"database/sql"
	"fmt"
	"os"
	"strconv"
)

// Migrate applies the migrations a database has not had yet, in order, in tx.
// PRAGMA user_version is their count, so a later mlc appends one and older
// files are brought forward; a file from a newer mlc is refused. what names
// the database in errors.
func Migrate(tx *sql.Tx, migrations []string, what string) error {
	var v int
	if err := tx.QueryRow(`PRAGMA user_version`).Scan(&v); err != nil {
		return err
	}
	if v > len(migrations) {
		return fmt.Errorf("%s schema version %d is newer than this mlc knows (%d)", what, v, len(migrations))
	}
	for i := v; i < len(migrations); i++ {
		if _, err := tx.Exec(migrations[i]); err != nil {
			return fmt.Errorf("migration %d: %w", i+1, err)
		}
	}
	_, err := tx.Exec(`PRAGMA user_version = ` + strconv.Itoa(len(migrations)))
	return err
}

// Tighten narrows path's permission bits to at most max (a wider mode left
// by an older mlc or an admin's copy).
func Tighten(path string, max os.FileMode) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if st.Mode().Perm()&^max == 0 {
		return nil
	}
	return os.Chmod(path, st.Mode().Perm()&max)
}
