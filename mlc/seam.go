package main

import "github.com/mlc-lab/mlc/engine"

// connectEngine is how a session reaches the engine when nothing else was
// set: the Docker client (engine.New). In-process tests replace it with an
// enginetest.Fake (withEngine in cli_test.go), so that commands' output and
// exit codes are tested without dockerd.
var connectEngine = func() (engine.Engine, error) {
	c, err := engine.New()
	if err != nil {
		return nil, err // not a typed nil in the interface
	}
	return c, nil
}
