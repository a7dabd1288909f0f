package history

import (
	"database/sql"
	"time"
)

// Warning is a warning cleanup gave the owner of a container.
type Warning struct {
	Level     int       // percent of the idle timeout reached
	IdleSince time.Time // the idle spell it was about
	At        time.Time // when it was given
}

// AddWarning records that the owner of container id was warned at level
// for the idle spell that began at idleSince. Warnings older than keep are
// deleted (keep <= 0: none).
func (db *DB) AddWarning(id string, w Warning, keep time.Duration) error {
	err := db.tx(func(tx *sql.Tx) error {
		if _, err := tx.Exec(`INSERT OR REPLACE INTO warnings (container_id, level, idle_since_ms, at_ms) VALUES (?, ?, ?, ?)`,
			id, w.Level, w.IdleSince.UnixMilli(), w.At.UnixMilli()); err != nil {
			return err
		}
		if keep > 0 {
			_, err := tx.Exec(`DELETE FROM warnings WHERE at_ms < ?`, w.At.Add(-keep).UnixMilli())
			return err
		}
		return nil
	})
	return db.classify(err, "recording a warning")
}

// Warnings returns the warnings given, by container id, oldest first.
func (db *DB) Warnings() (map[string][]Warning, error) {
	out := map[string][]Warning{}
	err := db.read(func(q querier) error {
		rows, err := q.Query(`SELECT container_id, level, idle_since_ms, at_ms FROM warnings ORDER BY at_ms, level`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var id string
			var level int
			var since, at int64
			if err := rows.Scan(&id, &level, &since, &at); err != nil {
				return err
			}
			out[id] = append(out[id], Warning{Level: level, IdleSince: time.UnixMilli(since), At: time.UnixMilli(at)})
		}
		return rows.Err()
	})
	if err != nil {
		return nil, db.classify(err, "reading warnings")
	}
	return out, nil
}
