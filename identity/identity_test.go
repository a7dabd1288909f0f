package identity

import (
	"os"
	"os/user"
	"testing"

	"github.com/mlc-lab/mlc/config"
	"github.com/mlc-lab/mlc/errs"
)

func cfg(t *testing.T, src string) *config.Config {
	t.Helper()
	c, err := config.Parse("p.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestSudoUIDTrustedOnlyAsRoot(t *testing.T) {
	c := cfg(t, "admins: []\n")
	me, _ := user.Current()
	// A non-root process that sets SUDO_UID itself stays who it is.
	got, err := Current(c, Env{UID: os.Getuid(), EUID: 1000, SudoUID: "0"})
	if err != nil || got.User != me.Username || got.ViaSudo {
		t.Fatalf("forged SUDO_UID: %+v %v", got, err)
	}
	// Root through sudo acts for SUDO_UID's user.
	got, err = Current(c, Env{UID: 0, EUID: 0, SudoUID: "0"})
	if err != nil || got.User != "root" || !got.ViaSudo || !got.Admin {
		t.Fatalf("root via sudo: %+v %v", got, err)
	}
	if _, err := Current(c, Env{UID: 0, EUID: 0, SudoUID: "abc"}); !errs.Is(err, errs.Permission) {
		t.Fatalf("bad SUDO_UID: %v", err)
	}
	if _, err := Current(c, Env{UID: 0, EUID: 0, SudoUID: "987654"}); !errs.Is(err, errs.Permission) {
		t.Fatalf("SUDO_UID without an account: %v", err)
	}
}

func TestForUser(t *testing.T) {
	cases := map[Env]bool{
		{UID: 0, EUID: 0, SudoUID: "1000"}: true,
		{UID: 0, EUID: 0, SudoUID: "0"}:    false,
		{UID: 0, EUID: 0}:                  false,
		{UID: 1000, EUID: 1000}:            false,
	}
	for env, want := range cases {
		if env.ForUser() != want {
			t.Errorf("%+v: ForUser %v", env, !want)
		}
	}
}

func TestIsAdmin(t *testing.T) {
	c := cfg(t, "admins: [carol, \"@lab-admins\"]\n")
	if !IsAdmin(c, "carol", nil) || !IsAdmin(c, "dave", []string{"users", "lab-admins"}) || IsAdmin(c, "eve", []string{"users"}) {
		t.Fatal("admin rules")
	}
}

func TestLookup(t *testing.T) {
	c := cfg(t, "admins: []\n")
	if _, err := Lookup(c, "no-such-user-mlc"); !errs.Is(err, errs.NotFound) {
		t.Fatalf("got %v", err)
	}
	r, err := Lookup(c, "root")
	if err != nil || r.UID != 0 || !r.Admin || r.UIDGID() != "0:0" {
		t.Fatalf("root: %+v %v", r, err)
	}
	if _, exists, _ := (SystemDirectory{}).Groups("no-such-user-mlc"); exists {
		t.Fatal("missing user exists")
	}
}
