package history

import (
	"path/filepath"
	"testing"
	"time"
)

func TestWarnings(t *testing.T) {
	db, err := Open(filepath.Join(t.TempDir(), "h.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	t0 := time.UnixMilli(1_700_000_000_000)
	for _, w := range []struct {
		id string
		w  Warning
	}{
		{"a", Warning{Level: 80, IdleSince: t0, At: t0.Add(time.Hour)}},
		{"a", Warning{Level: 95, IdleSince: t0, At: t0.Add(2 * time.Hour)}},
		{"a", Warning{Level: 95, IdleSince: t0, At: t0.Add(3 * time.Hour)}}, // the same again: replaced
		{"b", Warning{Level: 80, IdleSince: t0, At: t0.Add(40 * 24 * time.Hour)}},
	} {
		if err := db.AddWarning(w.id, w.w, 30*24*time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	ws, err := db.Warnings()
	if err != nil {
		t.Fatal(err)
	}
	if len(ws["a"]) != 0 || len(ws["b"]) != 1 || ws["b"][0].Level != 80 || !ws["b"][0].IdleSince.Equal(t0) {
		t.Errorf("a's warnings are older than 30 days when b's is given; got %+v", ws)
	}
	if err := db.AddWarning("c", Warning{Level: 80, IdleSince: t0, At: t0}, 0); err != nil {
		t.Fatal(err)
	}
	if ws, _ := db.Warnings(); len(ws["c"]) != 1 || len(ws["b"]) != 1 {
		t.Errorf("%+v", ws)
	}
}
