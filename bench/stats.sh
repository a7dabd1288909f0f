#!/usr/bin/env bash
# Times `mlc stats` against `docker stats --no-stream` over the same 20 and
# then 50 running containers, interleaved round by round in one run, and a
# scrape of `mlc monitor serve` at 50 containers; reports medians, their
# ratio and peak memory (max RSS). Run as root with an engine (make bench).
# Targets (issue 10): mlc stats <= 0.15x docker's wall time; a scrape < 50 ms.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
COUNTS=${COUNTS:-"20 50"}
MLC=$(realpath "${MLC:-bin/mlc}")
IMAGE=mlc/busybox:latest
state=$(mktemp -d /tmp/mlc-bench-stats.XXXXXX)
export MLC_STATE_DIR=$state MLC_AUDIT_LOG=$state/audit.jsonl MLC_WORKSPACE_ROOT=$state/workspaces
unset MLC_CONFIG
serve_pid=

now() { date +%s%N; }
ms() { echo "scale=1; $1 / 1000000" | bc -l; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
# maxrss CMD...: runs CMD, prints its peak resident memory in KiB.
maxrss() { /usr/bin/time -f %M "$@" 2>&1 >/dev/null | tail -n1; }
cleanup() {
  [ -n "$serve_pid" ] && kill "$serve_pid" 2>/dev/null && wait "$serve_pid" 2>/dev/null
  docker rm -f $(docker ps -aq --filter label=mlc-bench-stats=1) >/dev/null 2>&1 || true
  rm -rf "$state"
}
trap cleanup EXIT

# Containers as mlc lists them: managed, root's (the caller here), each with one process.
have=0
start_to() {
  while [ "$have" -lt "$1" ]; do
    have=$((have + 1))
    docker run -d --name "bench-stats-$have" --label mlc-bench-stats=1 --label mlc.managed=true \
      --label mlc.user=root --label mlc.name="bs$have" --cpus 0.5 --memory 64m --init \
      "$IMAGE" sh -c 'while :; do sleep 1; done' >/dev/null
  done
}

echo "mlc stats vs docker stats --no-stream, $ROUNDS rounds each, interleaved; $(nproc) CPUs"
for n in $COUNTS; do
  start_to "$n"
  names=$(seq -f 'bench-stats-%g' 1 "$n")
  : >"$state/mlc.$n"; : >"$state/docker.$n"
  for _ in $(seq 1 "$ROUNDS"); do
    t0=$(now); $MLC stats >/dev/null 2>&1; t1=$(now); echo $((t1 - t0)) >>"$state/mlc.$n"
    # shellcheck disable=SC2086
    t0=$(now); docker stats --no-stream $names >/dev/null; t1=$(now); echo $((t1 - t0)) >>"$state/docker.$n"
  done
  rows=$($MLC stats 2>/dev/null | tail -n +2 | wc -l)
  m=$(median <"$state/mlc.$n"); d=$(median <"$state/docker.$n")
  # shellcheck disable=SC2086
  rm_mlc=$(maxrss "$MLC" stats); rm_docker=$(maxrss docker stats --no-stream $names)
  printf '%d containers (mlc stats listed %d):\n' "$n" "$rows"
  printf '  mlc stats               median %8.1f ms   max RSS %6d KiB\n' "$(ms "$m")" "$rm_mlc"
  printf '  docker stats --no-stream median %7.1f ms   max RSS %6d KiB (the docker CLI; the daemon works too)\n' "$(ms "$d")" "$rm_docker"
  printf '  ratio mlc/docker: %.3f (target <= 0.15)\n' "$(echo "$m / $d" | bc -l)"
done

# A scrape of the exporter at the last count: answered from the last sample.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
$MLC monitor serve --listen "127.0.0.1:$port" --interval 2s --no-history 2>"$state/serve.log" &
serve_pid=$!
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$port/metrics" 2>/dev/null | grep -q '^mlc_container_memory_bytes' && break
  sleep 0.1
done
: >"$state/scrape"
for _ in $(seq 1 30); do
  # curl's own clock: the request, not the start of a curl process.
  curl -sf -o /dev/null -w '%{time_total}\n' "http://127.0.0.1:$port/metrics" | awk '{printf "%d\n", $1 * 1e9}' >>"$state/scrape"
done
series=$(curl -sf "http://127.0.0.1:$port/metrics" | grep -c '^mlc_' || true)
sleep 5 # a few more samples, so the peak includes sampling
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$serve_pid/status")
s=$(median <"$state/scrape"); smax=$(sort -n "$state/scrape" | tail -n1)
printf 'monitor serve at %d containers: scrape (%d series) median %.1f ms, max %.1f ms (target < 50 ms); peak RSS %d KiB\n' \
  "$have" "$series" "$(ms "$s")" "$(ms "$smax")" "$hwm"
