package identity

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"

	"github.com/mlc-lab/mlc/errs"
)

// Elevate re-executes this command through `sudo -n` (the sudoers rule that
// `make install` puts in place), with the same arguments, so users never
// type sudo. argv0 is how mlc was invoked (mlc, or a link like mlc-create):
// the rule names each of them. It returns only on failure, with one line
// saying what the admin must do. Identity stays SUDO_UID's: sudo sets it.
func Elevate(argv0 string, args []string) error {
	sudo, err := exec.LookPath("sudo")
	if err != nil {
		for _, p := range []string{"/usr/bin/sudo", "/bin/sudo"} {
			if _, serr := os.Stat(p); serr == nil {
				sudo, err = p, nil
			}
		}
	}
	if err != nil {
		return errs.New(errs.Permission, "mlc needs sudo, which is not installed here: an admin must install it and mlc's sudoers rule (make install)")
	}
	self, err := selfPath(argv0)
	if err != nil {
		return errs.Wrap(errs.Internal, err, "finding mlc's own path")
	}
	// Ask first, so that a missing rule is one clear line, not sudo's prompt.
	check := exec.Command(sudo, "-n", "-l", self)
	check.Stdout, check.Stderr = nil, nil
	if err := check.Run(); err != nil {
		return errs.New(errs.Permission, "you may not run %s through sudo on this server: an admin must add you to the group in mlc's sudoers rule (/etc/sudoers.d/mlc, usually mlc-users)", self)
	}
	return syscall.Exec(sudo, append([]string{"sudo", "-n", "--", self}, args...), os.Environ())
}

// selfPath is the absolute path the user invoked, links kept (the sudoers
// rule names mlc-create as well as mlc).
func selfPath(argv0 string) (string, error) {
	if filepath.IsAbs(argv0) {
		return argv0, nil
	}
	p, err := exec.LookPath(argv0)
	if err != nil {
		return os.Executable()
	}
	return filepath.Abs(p)
}
