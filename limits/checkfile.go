package limits

import (
	"context"
	"errors"

	"github.com/mlc-lab/mlc/config"
	"github.com/mlc-lab/mlc/errs"
	"github.com/mlc-lab/mlc/paths"
)

// CheckFile reads the policy file p with the rights of the user uid (a helper
// dropped to that user when mlc runs as root for them), at most
// paths.MaxPolicy bytes of a regular file, and parses it. What the user could
// not read themselves, mlc does not read for them; its errors quote at most
// short excerpts of values.
func CheckFile(ctx context.Context, r paths.Runner, uid int, p string) (*config.Config, error) {
	cred, err := paths.CredFor(uid)
	if err != nil {
		return nil, err
	}
	data, err := r.ReadFile(ctx, cred, p, paths.MaxPolicy)
	var f *paths.Failure
	if errors.As(err, &f) {
		why := map[string]string{
			"not-found":          "no such file",
			"denied":             "permission denied",
			"not-a-directory":    "no such file",
			"not-a-regular-file": "not a regular file",
			"is-a-directory":     "is a directory, not a policy file",
			"too-large":          "larger than 1 MiB; not a policy file",
		}[f.Code]
		if why == "" {
			why = "cannot be read"
		}
		return nil, errs.New(errs.Config, "%s: %s", p, why)
	} else if err != nil {
		return nil, err
	}
	return config.Parse(p, data)
}
