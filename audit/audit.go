// Package audit appends one JSON line per state change to the audit log.
package audit

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/mlc-lab/mlc/errs"
)

// Entry is one line of the audit log.
type Entry struct {
	Time      time.Time `json:"time"`
	Caller    string    `json:"caller"`
	CallerUID int       `json:"caller_uid"`
	Action    string    `json:"action"`
	User      string    `json:"user,omitempty"` // whose container
	Container string    `json:"container,omitempty"`
	Result    string    `json:"result"` // ok | error
	Error     string    `json:"error,omitempty"`
	Detail    any       `json:"detail,omitempty"`
}

// Log is an append-only JSON-lines file.
type Log struct {
	Path string
	mu   sync.Mutex
	f    *os.File
}

// Open makes sure the log can be written (creating its directory), so that
// a change is refused rather than made unaudited.
func (l *Log) Open() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f != nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(l.Path), 0o750); err != nil {
		return errs.Wrap(errs.State, err, "audit log directory")
	}
	f, err := os.OpenFile(l.Path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return errs.Wrap(errs.State, err, "audit log")
	}
	l.f = f
	return nil
}

// Append writes e as one line (a single write, so concurrent mlc processes
// do not interleave lines).
func (l *Log) Append(e Entry) error {
	if err := l.Open(); err != nil {
		return err
	}
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	if e.Result == "" {
		e.Result = "ok"
	}
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	_, err = l.f.Write(append(b, '\n'))
	return err
}

// Close closes the file.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}
