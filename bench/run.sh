#!/usr/bin/env bash
# All benchmarks; results also go to bench/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p bench/results
stamp=$(date -u +%Y%m%dT%H%M%SZ)
bench/create.sh | tee "bench/results/create-$stamp.txt"
bench/stats.sh | tee "bench/results/stats-$stamp.txt"
bench/cleanup.sh | tee "bench/results/cleanup-$stamp.txt"
if scripts/hostb.sh status >/dev/null 2>&1; then bench/copy.sh | tee "bench/results/copy-$stamp.txt"; else echo "bench/copy.sh skipped: hostb is not up (scripts/hostb.sh up)"; fi
if [ -x bench/ledger.sh ]; then bench/ledger.sh | tee "bench/results/ledger-$stamp.txt"; fi
