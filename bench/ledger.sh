#!/usr/bin/env bash
# GPU ledger latency with 16 concurrent processes against a flock'ed JSON
# state file (see bench/ledgerbench): ROUNDS runs of each, interleaved; a run
# that takes longer than TIMEOUT fails the bench.
set -euo pipefail
cd "$(dirname "$0")/.."
go build -ldflags '-extldflags=-Wl,-z,lazy' -o bin/ledgerbench ./bench/ledgerbench
bin/ledgerbench -procs "${PROCS:-16}" -ops "${OPS:-200}" -rounds "${ROUNDS:-3}" -timeout "${TIMEOUT:-5m}" -create "${CREATE:-0s}"
