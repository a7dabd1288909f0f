#!/usr/bin/env bash
# Times `mlc create` (create + start) against `docker run -d` with the same
# image and the same limits, interleaved round by round in one run, and
# reports the medians and their ratio. Run as root with an engine (make bench).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-15}
MLC=${MLC:-bin/mlc}
IMAGE=mlc/busybox:latest
state=$(mktemp -d /tmp/mlc-bench.XXXXXX)
export MLC_STATE_DIR=$state MLC_AUDIT_LOG=$state/audit.jsonl MLC_WORKSPACE_ROOT=$state/workspaces
unset MLC_CONFIG
ws=$state/ws; mkdir -p "$ws"
# The same limits mlc gives, as docker run flags; memlock as mlc would ask here.
read -r -a limits <<<"$($MLC limits show --docker-args)"
lock=$(ulimit -Hl); [ "$lock" = unlimited ] && lock=-1 || lock=$((lock * 1024))
limits=("${limits[@]/memlock=-1:-1/memlock=$lock:$lock}")
# docker refuses more CPUs than the host has; mlc caps the same way.
for i in "${!limits[@]}"; do
  if [ "${limits[$i]}" = --cpus ] && [ "$(echo "${limits[$((i+1))]} > $(nproc)" | bc)" = 1 ]; then limits[$((i+1))]=$(nproc); fi
done
uid=$(id -u); gid=$(id -g)

now() { date +%s%N; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
cleanup() {
  docker rm -f $(docker ps -aq --filter label=mlc-bench=1) >/dev/null 2>&1 || true
  docker network rm mlc-bench-net >/dev/null 2>&1 || true
  $MLC list -q 2>/dev/null | grep '^bench-' | while read -r n; do $MLC remove "$n" --yes --force >/dev/null 2>&1 || true; done
  rm -rf "$state"
}
trap cleanup EXIT

: >"$state/mlc.ns"; : >"$state/docker.ns"; : >"$state/dockernet.ns"
# mlc puts each user's containers on the user's own bridge network; on the engine here a start on a
# user-defined bridge costs more than on the default one, so docker run is also timed on such a bridge.
docker network create --label mlc-bench=1 mlc-bench-net >/dev/null
# The user's first container also makes their network (one POST /networks/create, about 150 ms
# here); it is timed once, apart. bench-warm then stays (not started), as a user's containers do,
# so the rounds measure a create beside the user's other containers, the usual case.
t0=$(now); $MLC create bench-warm --image busybox --no-start >/dev/null; t1=$(now)
first=$((t1 - t0))
for i in $(seq 1 "$ROUNDS"); do
  t0=$(now); $MLC create "bench-$i" --image busybox >/dev/null; t1=$(now)
  echo $((t1 - t0)) >>"$state/mlc.ns"
  t0=$(now)
  docker run -d -it --name "bench-docker-$i" --label mlc-bench=1 "${limits[@]}" --user "$uid:$gid" \
    -v "$ws:/workspace" -w /workspace --init --security-opt no-new-privileges:true --ipc private \
    --restart unless-stopped "$IMAGE" >/dev/null
  t1=$(now)
  echo $((t1 - t0)) >>"$state/docker.ns"
  t0=$(now)
  docker run -d -it --name "bench-dockernet-$i" --network mlc-bench-net --label mlc-bench=1 "${limits[@]}" --user "$uid:$gid" \
    -v "$ws:/workspace" -w /workspace --init --security-opt no-new-privileges:true --ipc private \
    --restart unless-stopped "$IMAGE" >/dev/null
  t1=$(now)
  echo $((t1 - t0)) >>"$state/dockernet.ns"
  $MLC remove "bench-$i" --yes --force >/dev/null
  docker rm -f "bench-docker-$i" "bench-dockernet-$i" >/dev/null
done
m=$(median <"$state/mlc.ns"); d=$(median <"$state/docker.ns"); dn=$(median <"$state/dockernet.ns")
printf 'create+start, %d rounds, image %s\n' "$ROUNDS" "$IMAGE"
printf '  (a user'"'"'s first mlc create, which also makes their network, without start: %.1f ms)\n' "$(echo "$first / 1000000" | bc -l)"
printf '  mlc create      median %7.1f ms\n' "$(echo "$m / 1000000" | bc -l)"
printf '  docker run -d   median %7.1f ms\n' "$(echo "$d / 1000000" | bc -l)"
printf '  docker run -d on a user-defined bridge   median %7.1f ms\n' "$(echo "$dn / 1000000" | bc -l)"
printf '  ratio mlc/docker: %.3f (target <= 1.10); mlc/docker on a user-defined bridge: %.3f\n' "$(echo "$m / $d" | bc -l)" "$(echo "$m / $dn" | bc -l)"
