#!/usr/bin/env bash
# make demo: what mlc does, on the embedded default policy, against the local
# engine. Everything it creates it removes again.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PWD/bin:$PATH
unset MLC_CONFIG
export MLC_STATE_DIR=${MLC_STATE_DIR:-$(mktemp -d /tmp/mlc-demo-state.XXXXXX)}
export MLC_FAKE_GPUS=${MLC_FAKE_GPUS:-4}
export MLC_WORKSPACE_ROOT=${MLC_WORKSPACE_ROOT:-$MLC_STATE_DIR/workspaces}
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

step mlc version
step mlc limits check
step mlc limits show
step mlc limits show --docker-args

bad=$(mktemp /tmp/mlc-demo-bad.XXXXXX.yaml)
printf 'defaults:\n  memory: 12x\n  gpus: two\ngroups:\n  a: {members: [alice]}\n  b: {members: [alice]}\n' > "$bad"
printf '\n\033[1m$ mlc limits check %s   # a broken policy: every error, with its line\033[0m\n' "$bad"
mlc limits check "$bad" || echo "(exit code $?)"
rm -f "$bad"

if [ -f scripts/demo-containers.sh ]; then
  . scripts/demo-containers.sh
fi
