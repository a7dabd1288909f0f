// Package sqlitex is what mlc's two SQLite databases (the GPU ledger and the
// usage history) do alike: numbered schema migrations and narrowing file
// modes.
package sqlitex

import (
	"database/sql"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/mattn/go-sqlite3"
	"github.com/mlc-lab/mlc/errs"
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

// Names say which database an error is about and what to do when it is
// corrupt.
type Names struct {
	What        string        // "GPU ledger", "usage history"
	Path        string        // the file
	BusyTimeout time.Duration // how long a writer waited
	IfCorrupt   string        // the advice after "is corrupt or not an SQLite database: "
}

// Classify turns an SQLite failure while doing something into an error a
// person can act on, of kind State; an *errs.Error passes through.
func (n Names) Classify(err error, doing string) error {
	if err == nil {
		return nil
	}
	var e *errs.Error
	if errors.As(err, &e) {
		return err
	}
	var se sqlite3.Error
	if errors.As(err, &se) {
		switch se.Code {
		case sqlite3.ErrBusy, sqlite3.ErrLocked:
			return errs.New(errs.State, "%s %s is locked by another mlc for more than %v; try again", n.What, n.Path, n.BusyTimeout)
		case sqlite3.ErrNotADB, sqlite3.ErrCorrupt:
			return errs.New(errs.State, "%s %s is corrupt or not an SQLite database: %s", n.What, n.Path, n.IfCorrupt)
		case sqlite3.ErrPerm, sqlite3.ErrReadonly, sqlite3.ErrCantOpen, sqlite3.ErrAuth:
			return errs.New(errs.State, "%s %s cannot be written (%v)", n.What, n.Path, se.Code)
		}
	}
	return errs.Wrap(errs.State, err, "%s %s: %s", n.What, n.Path, doing)
}
