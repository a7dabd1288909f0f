# Sourced by scripts/demo.sh: the container part of the demo.
export MLC_AUDIT_LOG=$MLC_STATE_DIR/audit.jsonl
trap 'mlc remove demo --yes --force >/dev/null 2>&1 || true; mlc remove demo-gpu --yes --force >/dev/null 2>&1 || true' EXIT
step mlc create demo busybox --cpus 1 --memory 256m
step mlc list
step mlc open demo -- sh -c 'echo "inside as uid $(id -u), in $(pwd)"; echo "memory limit: $(cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max)"'
printf '\n\033[1m$ mlc create demo2 busybox --cpus 64   # more than the policy gives\033[0m\n'
mlc create demo2 busybox --cpus 64 || echo "(exit code $?)"
if mlc gpu status >/dev/null 2>&1; then
  step mlc create demo-gpu busybox --gpus 1
  step mlc gpu status
  step mlc list
  step mlc remove demo-gpu --yes --force
fi
step mlc stop demo -t 1
step mlc remove demo --yes
step tail -n 3 "$MLC_AUDIT_LOG"
