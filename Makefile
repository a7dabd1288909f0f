# mlc: see README.md. `make demo` and `make test` do all their own set-up on a
# fresh Debian machine with Go (as root: they may apt-get install docker.io
# and busybox-static and start dockerd).

PREFIX   ?= /usr/local
BINDIR   ?= $(PREFIX)/bin
DATADIR  ?= $(PREFIX)/share
MANDIR   ?= $(DATADIR)/man
BASHCOMPDIR ?= $(DATADIR)/bash-completion/completions
SYSTEMDDIR ?= /lib/systemd/system
ZSHCOMPDIR  ?= $(DATADIR)/zsh/site-functions
FISHCOMPDIR ?= $(DATADIR)/fish/vendor_completions.d
VERSION  ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
GO       ?= go
LDFLAGS  := -X main.version=$(VERSION) '-extldflags=-Wl,-z,lazy'
# Commands reachable as mlc-NAME links.
COMMANDS := create open list start stop kill remove logs stats top protect unprotect limits gpu monitor report cleanup keepalive servers copy
FUZZTIME ?= 60s

comma := ,

export CGO_ENABLED = 1

.PHONY: all build test unit test-env demo hostb-down install uninstall fuzz bench vet fmt clean man completions deb test-deb

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/mlc ./mlc
	@for c in $(COMMANDS); do ln -sf mlc bin/mlc-$$c; done

test-env:
	scripts/test-env.sh

# Unit tests, integration tests against a real dockerd, security tests with
# real users (as root). A missing engine fails the run.
test: test-env build vet
	MLC_REQUIRE_ENGINE=1 MLC_BIN=$(CURDIR)/bin/mlc $(GO) test -count=1 -timeout 30m -ldflags "$(LDFLAGS)" ./...
	bash scripts/test-deb.sh

# Unit tests only: no engine needed.
unit:
	$(GO) test -count=1 -short ./...

demo: test-env build
	scripts/demo.sh

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { gofmt -l .; echo "gofmt needed"; exit 1; }

fmt:
	gofmt -w $$(git ls-files '*.go')

fuzz:
	$(GO) test ./config -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME)
	$(GO) test ./config -run '^$$' -fuzz '^FuzzParseSize$$' -fuzztime $(FUZZTIME)
	$(GO) test ./config -run '^$$' -fuzz '^FuzzParseDuration$$' -fuzztime $(FUZZTIME)
	$(GO) test ./paths -run '^$$' -fuzz '^FuzzUnder$$' -fuzztime $(FUZZTIME)
	$(GO) test ./paths -run '^$$' -fuzz '^FuzzWalk$$' -fuzztime $(FUZZTIME)
	$(GO) test ./monitor/cgroups -run '^$$' -fuzz '^FuzzContainerIDs$$' -fuzztime $(FUZZTIME)
	$(GO) test ./monitor/cgroups -run '^$$' -fuzz '^FuzzMountinfo$$' -fuzztime $(FUZZTIME)
	$(GO) test ./monitor/cgroups -run '^$$' -fuzz '^FuzzNetDev$$' -fuzztime $(FUZZTIME)
	$(GO) test ./engine -run '^$$' -fuzz '^FuzzBuildLoad$$' -fuzztime $(FUZZTIME)
	$(GO) test ./engine -run '^$$' -fuzz '^FuzzCutLayer$$' -fuzztime $(FUZZTIME)

# Stop the second test server (scripts/hostb.sh) that multi-server tests bring up.
hostb-down:
	scripts/hostb.sh down

bench: test-env build
	bench/run.sh

# The man page and the completion scripts, written by the built binary.
man: build
	bin/mlc completion man > bin/mlc.1.tmp && mv bin/mlc.1.tmp bin/mlc.1

completions: build
	@mkdir -p bin/completion
	bin/mlc completion bash > bin/completion/mlc.bash
	bin/mlc completion zsh > bin/completion/_mlc
	bin/mlc completion fish > bin/completion/mlc.fish

install: build man completions
	install -d $(DESTDIR)$(BINDIR)
	install -m 0755 bin/mlc $(DESTDIR)$(BINDIR)/mlc
	@for c in $(COMMANDS); do ln -sf mlc $(DESTDIR)$(BINDIR)/mlc-$$c; done
	install -d -m 0755 $(DESTDIR)/etc/mlc
	test -d $(DESTDIR)/etc/sudoers.d || install -d -m 0750 $(DESTDIR)/etc/sudoers.d
	test -e $(DESTDIR)/etc/mlc/resource-limits.yaml || install -m 0644 config/default.yaml $(DESTDIR)/etc/mlc/resource-limits.yaml
	sed -e 's|@COMMANDS@|$(BINDIR)/mlc$(foreach c,$(COMMANDS),$(comma) $(BINDIR)/mlc-$(c))|' -e 's|@BINDIR@|$(BINDIR)|g' deploy/sudoers.in > deploy/.sudoers.tmp
	install -m 0440 deploy/.sudoers.tmp $(DESTDIR)/etc/sudoers.d/mlc && rm -f deploy/.sudoers.tmp
	@if [ -z "$(DESTDIR)" ] && command -v visudo >/dev/null; then visudo -cf /etc/sudoers.d/mlc; fi
	@getent group mlc-users >/dev/null || [ -n "$(DESTDIR)" ] || groupadd --system mlc-users
	@getent group mlc-admins >/dev/null || [ -n "$(DESTDIR)" ] || groupadd --system mlc-admins
	install -d $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR) $(DESTDIR)$(FISHCOMPDIR)
	install -m 0644 bin/mlc.1 $(DESTDIR)$(MANDIR)/man1/mlc.1
	install -m 0644 bin/completion/mlc.bash $(DESTDIR)$(BASHCOMPDIR)/mlc
	install -m 0644 bin/completion/_mlc $(DESTDIR)$(ZSHCOMPDIR)/_mlc
	install -m 0644 bin/completion/mlc.fish $(DESTDIR)$(FISHCOMPDIR)/mlc.fish
	@# bash and fish load a command's completion from a file named after it.
	@for c in $(COMMANDS); do ln -sf mlc $(DESTDIR)$(BASHCOMPDIR)/mlc-$$c; ln -sf mlc.fish $(DESTDIR)$(FISHCOMPDIR)/mlc-$$c.fish; done
	install -d $(DESTDIR)$(SYSTEMDDIR)
	sed -e 's|@BINDIR@|$(BINDIR)|g' deploy/mlc-monitor.service.in > deploy/.unit.tmp
	install -m 0644 deploy/.unit.tmp $(DESTDIR)$(SYSTEMDDIR)/mlc-monitor.service && rm -f deploy/.unit.tmp
	@# The nightly jobs: the cron file (the default) and the systemd timers
	@# (the alternative, installed but not enabled; see deploy/mlc.cron.in).
	@for u in mlc-sample mlc-cleanup; do \
		sed -e 's|@BINDIR@|$(BINDIR)|g' deploy/$$u.service.in > deploy/.unit.tmp && \
		install -m 0644 deploy/.unit.tmp $(DESTDIR)$(SYSTEMDDIR)/$$u.service && \
		install -m 0644 deploy/$$u.timer $(DESTDIR)$(SYSTEMDDIR)/$$u.timer || exit 1; \
	done; rm -f deploy/.unit.tmp
	install -d $(DESTDIR)/etc/cron.d
	@# An existing cron file is the admin's (edited, or kept away while the
	@# timers run): left as it is, like the policy.
	@if [ -e $(DESTDIR)/etc/cron.d/mlc ]; then echo "kept $(DESTDIR)/etc/cron.d/mlc"; \
	elif [ -z "$(DESTDIR)" ] && systemctl is-enabled --quiet mlc-sample.timer mlc-cleanup.timer 2>/dev/null; then \
		echo "not installing /etc/cron.d/mlc: mlc's systemd timers are enabled"; \
	else sed -e 's|@BINDIR@|$(BINDIR)|g' deploy/mlc.cron.in > deploy/.cron.tmp && \
		install -m 0644 deploy/.cron.tmp $(DESTDIR)/etc/cron.d/mlc && rm -f deploy/.cron.tmp; fi
	@echo "installed: add users to the mlc-users group (never to docker); they run: mlc ... (no sudo to type); admins go in mlc-admins"

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/mlc $(foreach c,$(COMMANDS),$(DESTDIR)$(BINDIR)/mlc-$(c)) $(DESTDIR)/etc/sudoers.d/mlc
	rm -f $(DESTDIR)$(MANDIR)/man1/mlc.1 $(DESTDIR)$(BASHCOMPDIR)/mlc $(DESTDIR)$(ZSHCOMPDIR)/_mlc $(DESTDIR)$(FISHCOMPDIR)/mlc.fish \
		$(foreach c,$(COMMANDS),$(DESTDIR)$(BASHCOMPDIR)/mlc-$(c) $(DESTDIR)$(FISHCOMPDIR)/mlc-$(c).fish) \
		$(DESTDIR)$(SYSTEMDDIR)/mlc-monitor.service
	@if [ -z "$(DESTDIR)" ] && command -v systemctl >/dev/null; then \
		for u in mlc-sample.timer mlc-cleanup.timer; do \
			if [ -d /run/systemd/system ]; then systemctl stop $$u 2>/dev/null || true; fi; \
			if systemctl is-enabled --quiet $$u 2>/dev/null; then systemctl disable $$u || true; fi; \
		done; \
	fi
	rm -f $(foreach u,mlc-sample mlc-cleanup,$(DESTDIR)$(SYSTEMDDIR)/$(u).service $(DESTDIR)$(SYSTEMDDIR)/$(u).timer) \
		$(DESTDIR)/etc/cron.d/mlc

# A Debian package of this tree, bin/mlc_<version>_<arch>.deb (PREFIX=/usr).
deb:
	MAKE="$(MAKE)" bash scripts/build-deb.sh

# Builds the package, installs it here, checks it, purges it (as root; make test runs it).
test-deb:
	bash scripts/test-deb.sh

clean:
	rm -rf bin
