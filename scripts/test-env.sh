#!/usr/bin/env bash
# Makes sure a Docker engine answers and mlc's local busybox image exists.
#
#  - an engine at $DOCKER_HOST, or at /var/run/docker.sock, that answers is used as it is;
#  - otherwise (as root) Debian's docker.io is installed when missing, dockerd is started in the
#    background with its pid in /run/mlc-test-dockerd.pid, and we wait until it answers;
#  - the image mlc/busybox:latest is built from scratch with Debian's busybox-static.
# Exits non-zero, saying why, when no engine can be had.
set -euo pipefail

IMAGE=${MLC_TEST_IMAGE:-mlc/busybox:latest}
PIDFILE=${MLC_DOCKERD_PIDFILE:-/run/mlc-test-dockerd.pid}
LOG=${MLC_DOCKERD_LOG:-/var/log/mlc-test-dockerd.log}
here=$(cd "$(dirname "$0")/.." && pwd)

say() { echo "test-env: $*" >&2; }
answers() { timeout 15 docker info >/dev/null 2>&1; }

apt_install() {
  if [ "$(id -u)" != 0 ]; then say "need root to install $*"; exit 1; fi
  if [ -z "${_apt_updated:-}" ]; then apt-get update -qq; _apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if ! command -v docker >/dev/null 2>&1; then
  apt_install docker.io
fi

if answers; then
  say "using the engine at ${DOCKER_HOST:-unix:///var/run/docker.sock}"
elif [ -n "${DOCKER_HOST:-}" ]; then
  say "DOCKER_HOST=$DOCKER_HOST does not answer; unset it to let this script start a local engine"
  exit 1
else
  command -v dockerd >/dev/null 2>&1 || apt_install docker.io
  if [ "$(id -u)" != 0 ]; then say "no engine answers and starting dockerd needs root"; exit 1; fi
  # A pidfile left by a killed dockerd may name a pid reused by something else.
  if [ -f "$PIDFILE" ] && [ "$(cat "/proc/$(cat "$PIDFILE")/comm" 2>/dev/null)" != dockerd ]; then
    rm -f "$PIDFILE"
  fi
  if [ -f "$PIDFILE" ]; then
    say "dockerd $(cat "$PIDFILE") is starting"
  else
    say "starting dockerd (log: $LOG)"
    mkdir -p "$(dirname "$LOG")"
    nohup dockerd --pidfile "$PIDFILE" >>"$LOG" 2>&1 &
  fi
  for _ in $(seq 1 120); do
    answers && break
    sleep 0.5
  done
  if ! answers; then
    say "dockerd did not answer within 60s; last lines of $LOG:"
    tail -n 20 "$LOG" >&2 || true
    exit 1
  fi
  say "dockerd answers"
fi

if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
  bb=/bin/busybox
  if ! dpkg -s busybox-static >/dev/null 2>&1; then apt_install busybox-static; fi
  if ldd "$bb" >/dev/null 2>&1; then say "$bb is not static; install busybox-static"; exit 1; fi
  ctx=$(mktemp -d)
  trap 'rm -rf "$ctx"' EXIT
  cp "$here/testdata/image/Dockerfile" "$bb" "$ctx/"
  say "building $IMAGE"
  DOCKER_BUILDKIT=0 docker build -q -t "$IMAGE" "$ctx" >/dev/null 2>"$ctx/build.err" || {
    cat "$ctx/build.err" >&2; exit 1; }
fi
say "image $IMAGE is ready"
