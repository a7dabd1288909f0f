package engine

import (
	"os"
	"os/signal"
	"syscall"

	"github.com/moby/term"
)

// watchResize calls fn with the terminal's size whenever the window changes,
// until stop is called.
func watchResize(fd uintptr, fn func(h, w uint)) (stop func()) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGWINCH)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-ch:
				if ws, err := term.GetWinsize(fd); err == nil {
					fn(uint(ws.Height), uint(ws.Width))
				}
			case <-done:
				return
			}
		}
	}()
	return func() { signal.Stop(ch); close(done) }
}
