package containers

import (
	"context"
	"fmt"
	"os"
	"syscall"
	"time"
)

// failpoint stops create at the named point, for the crash and interrupt
// tests: MLC_FAILPOINT=NAME kills this process with SIGKILL there;
// MLC_FAILPOINT_WAIT=NAME prints "mlc: failpoint NAME" on stderr and waits
// there until ctx ends (an interrupt) or 60 seconds pass. Both are ignored
// when mlc runs through sudo for a user (sudo's env_reset drops MLC_* anyway).
func failpoint(ctx context.Context, name string) { Failpoint(ctx, name) }

// Failpoint is failpoint for other packages (mlc copy's steps, run as the
// user: nothing there that the user could not do by killing their own
// process).
func Failpoint(ctx context.Context, name string) {
	if u := os.Getenv("SUDO_UID"); u != "" && u != "0" {
		return
	}
	if os.Getenv("MLC_FAILPOINT") == name {
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
	if os.Getenv("MLC_FAILPOINT_WAIT") == name {
		fmt.Fprintf(os.Stderr, "mlc: failpoint %s\n", name)
		select {
		case <-ctx.Done():
		case <-time.After(60 * time.Second):
		}
	}
}
