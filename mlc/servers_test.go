package main

import (
	"context"
	"io"
	"strings"
	"testing"
)

// Which command lines run as the user who typed them (they reach other
// servers over ssh with the user's keys) and which through sudo as usual.
func TestUserSide(t *testing.T) {
	app := newApp(context.Background(), nil, io.Discard, io.Discard)
	cases := map[string]bool{
		"mlc servers":                       true,
		"mlc servers --json":                true,
		"mlc servers --help":                false,
		"mlc copy thesis --to b":            true,
		"mlc list --servers":                true,
		"mlc ls --json --servers":           true,
		"mlc list":                          false,
		"mlc --server b list":               true,
		"mlc list --server b":               true,
		"mlc stop x --server=b":             true,
		"mlc create x pytorch --server any": true,
		"mlc open x -- echo --server b":     false, // the command's own words
		"mlc create x pytorch":              false,
		"mlc limits show":                   false,
	}
	for line, want := range cases {
		if got := userSide(app, strings.Fields(line)); got != want {
			t.Errorf("%s: userSide %v, want %v", line, got, want)
		}
	}
}

func TestTakeServer(t *testing.T) {
	app := newApp(context.Background(), nil, io.Discard, io.Discard)
	for line, want := range map[string]string{
		"mlc stop x --server b -t 3":     "b|mlc stop -t 3 x",
		"mlc --server=b --config c list": "b|mlc --config c list",
		"mlc list":                       "|mlc list",
		"mlc open x -- sh --server b":    "|mlc open x -- sh --server b",
	} {
		norm, err := normalize(app, strings.Fields(line))
		if err != nil {
			t.Fatal(err)
		}
		v, rest, _ := takeServer(norm)
		if got := v + "|" + strings.Join(rest, " "); got != want {
			t.Errorf("%s: %q, want %q", line, got, want)
		}
	}
}

// Without a servers list, the commands that need one say so.
func TestServersWithoutList(t *testing.T) {
	p := writePolicy(t, "defaults:\n  cpus: 1\n")
	_, errOut, code := mlc(t, "--config", p, "servers")
	if code != 4 || !strings.Contains(errOut, "no servers are listed in the policy") {
		t.Fatalf("servers: %d %q", code, errOut)
	}
	_, errOut, code = mlc(t, "--config", p, "copy", "x")
	if code != 2 || !strings.Contains(errOut, "which server? mlc copy NAME --to SERVER") {
		t.Fatalf("copy without --to: %d %q", code, errOut)
	}
	_, errOut, code = mlc(t, "--config", p, "copy", "x", "--to", "b")
	if code != 4 || !strings.Contains(errOut, `no servers are listed in the policy (servers:), so there is no server "b"`) {
		t.Fatalf("copy to an unknown server: %d %q", code, errOut)
	}
}
