#!/usr/bin/env bash
# Times `mlc cleanup`'s planning over 200 containers with a week of 5-minute
# usage history (2016 samples, recorded through history.Record in setup):
# reading activity and warnings from the history plus MakePlan (run), and
# MakePlan alone (makeplan). Needs no engine and no root; setup takes tens
# of seconds. Target (issue): planning under 1 s.
set -euo pipefail
cd "$(dirname "$0")/.."
BENCHTIME=${BENCHTIME:-10x}
GO=${GO:-go}
out=$(mktemp /tmp/mlc-bench-cleanup.XXXXXX)
trap 'rm -f "$out"' EXIT

echo "mlc cleanup planning: 200 containers, a week of 5-minute history; -benchtime $BENCHTIME; $(nproc) CPUs"
MLC_BENCH_WEEK=1 "$GO" test -v -run '^$' -bench '^BenchmarkPlanWeek$' -benchtime "$BENCHTIME" -timeout 20m \
  -ldflags '-extldflags=-Wl,-z,lazy' ./cleanup/ >"$out" 2>&1 || { cat "$out"; exit 1; }
# The setup and plan lines the benchmark logs (-v shows them), then its results.
sed -n 's/^ *bench_test.go:[0-9]*: /  /p' "$out"
awk '/^BenchmarkPlanWeek\/.* ns\/op/ {
  ns = act = by = al = 0; name = $1; sub(/^BenchmarkPlanWeek\//, "", name); sub(/-[0-9]+$/, "", name)
  for (i = 3; i < NF; i++) if ($(i+1) == "ns/op") ns = $i; else if ($(i+1) == "actions") act = $i; else if ($(i+1) == "B/op") by = $i; else if ($(i+1) == "allocs/op") al = $i
  printf "  %-9s %10.3f ms a plan (%d ns/op; %d actions; %.2f MiB, %d allocs a plan)\n", name, ns / 1e6, ns, act, by / 1048576, al
  if (name == "run") run = ns
} END {
  if (run == "") { print "no result"; exit 1 }
  printf "target: under 1 s per plan: run takes %.4f s, %.5fx the target (%s)\n", run / 1e9, run / 1e9, (run < 1e9) ? "met" : "NOT met"
}' "$out"
