#!/usr/bin/env bash
# GPU ledger latency with 16 concurrent processes (see bench/ledgerbench).
set -euo pipefail
cd "$(dirname "$0")/.."
go build -ldflags '-extldflags=-Wl,-z,lazy' -o bin/ledgerbench ./bench/ledgerbench
bin/ledgerbench -procs "${PROCS:-16}" -ops "${OPS:-200}"
