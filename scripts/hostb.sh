#!/usr/bin/env bash
# hostb: a second "server" on this machine, for tests and benchmarks that span
# two hosts (users run `ssh 10.231.0.2 mlc ...` as themselves).
#
#   scripts/hostb.sh up             bring it up (idempotent: repairs what is missing)
#   scripts/hostb.sh status         exit 0 when up, 1 (saying why) when not
#   scripts/hostb.sh user NAME      let Linux user NAME ssh to hostb with their own key
#   scripts/hostb.sh exec CMD...    run CMD as root inside hostb's namespaces
#   scripts/hostb.sh docker ARGS... the docker CLI against hostb's engine
#   scripts/hostb.sh down [--purge] stop it; --purge also deletes its images and state
#
# What hostb is (DESIGN.md, "Tests need a real Docker engine"):
#   - network namespace mlcb; a veth pair: host side mlcb0 10.231.0.1/29,
#     hostb side eth0 10.231.0.2/29. 10.231.0.3 is never assigned: tests use it
#     as a server that does not answer.
#   - its own mount namespace and UTS namespace (hostname hostb), held by ns
#     files under /run/mlc-hostb. The mount namespace is a copy of the host's
#     (same /home, /tmp, /usr, /etc/passwd, /etc/sudoers.d, same mlc binary) with
#     a few paths bind-mounted over by hostb's own:
#         /run/docker.sock        <- /run/mlc-hostb/docker.sock (hostb's engine)
#         /etc/mlc                <- /var/lib/mlc-hostb/etc
#         /var/lib/mlc            <- /var/lib/mlc-hostb/state
#         /var/lib/mlc-workspaces <- /var/lib/mlc-hostb/workspaces
#         /var/log/mlc            <- /var/lib/mlc-hostb/log
#         /etc/docker             <- /var/lib/mlc-hostb/etc-docker (own key.json,
#                                    so its engine ID differs from the host's)
#         /etc/hosts              <- /var/lib/mlc-hostb/hosts (the host's, plus
#                                    "hostb", so sudo can resolve its own name)
#   - a dockerd and an sshd (10.231.0.2:22, keys only) living in all three.
#
# The ns files, sockets, pidfiles and logs live in /run/mlc-hostb; what should
# survive a `down` (images, host keys, hostb's /etc/mlc...) in /var/lib/mlc-hostb.
#
# Needs root. Every wait is bounded. Any failure prints one line saying why.
set -euo pipefail

# The MLC_HOSTB_* variables make another rig beside this one (to try this
# script without disturbing a hostb in use), e.g. MLC_HOSTB_NAME=hostc
# MLC_HOSTB_NETNS=mlcc MLC_HOSTB_HOST_IP=10.231.0.9 MLC_HOSTB_ADDR=10.231.0.10.
# Tests use the defaults only.
NAME=${MLC_HOSTB_NAME:-hostb}
NETNS=${MLC_HOSTB_NETNS:-mlcb}
NETNS_FILE=/run/netns/$NETNS
HOST_IF=${NETNS}0
HOST_IP=${MLC_HOSTB_HOST_IP:-10.231.0.1}
ADDR=${MLC_HOSTB_ADDR:-10.231.0.2}
PREFIX=29
RUN=/run/mlc-$NAME              # runtime: ns files, sockets, pidfiles, logs
STATE=/var/lib/mlc-$NAME        # persistent: docker data, host keys, hostb's mlc dirs
SOCK=$RUN/docker.sock
DOCKER_PID=$RUN/docker.pid
SSHD_PID=$RUN/sshd.pid
SSHD_CONFIG=$STATE/ssh/sshd_config
HOST_KEY=$STATE/ssh/ssh_host_ed25519_key
LOCK=/run/mlc-$NAME.lock
IMAGE=${MLC_TEST_IMAGE:-mlc/busybox:latest}

# hostb's own copies of paths that differ between servers: "source target".
BINDS=(
  "$STATE/etc /etc/mlc"
  "$STATE/state /var/lib/mlc"
  "$STATE/workspaces /var/lib/mlc-workspaces"
  "$STATE/log /var/log/mlc"
  "$STATE/etc-docker /etc/docker"
  "$STATE/hosts /etc/hosts"
)

say() { echo "$NAME: $*" >&2; }
die() { echo "$NAME: $*" >&2; exit 1; }

# The commands below serialise on $LOCK (up, user and down change shared
# state). A caller that already holds it (internal/testenv) sets
# MLC_HOSTB_LOCKED=1. Daemons are started with fd 9 closed so they never
# inherit the lock.
lock() {
  [ "${MLC_HOSTB_LOCKED:-}" = 1 ] && return 0
  exec 9>"$LOCK"
  flock -w 300 9 || die "another scripts/hostb.sh has held $LOCK for 5 minutes"
}

need_root() { [ "$(id -u)" = 0 ] || die "needs root"; }

# Runs "$@" in hostb's network, mount and UTS namespaces. Not `ip netns exec`:
# that remounts /sys, and dockerd then finds no cgroups.
in_hostb() { nsenter --net="$NETNS_FILE" --mount="$RUN/mnt" --uts="$RUN/uts" -- "$@"; }
# Runs "$@" in hostb's mount namespace only (enough for mount and stat).
in_mnt() { nsenter --mount="$RUN/mnt" -- "$@"; }

# An ns file is held when it is a bind mount of a namespace (fs type nsfs).
ns_held() { [ "$(stat -f -c %T "$1" 2>/dev/null)" = nsfs ]; }
ns_inode() { stat -L -c %i "$1"; }

# Is the pid in pidfile $1 a live $2 in hostb's network namespace? (A stale
# pidfile may name a reused pid, and the host's own sshd must never be taken
# for hostb's.) Prints the pid.
our_pid() {
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] || return 1
  [ -e "$NETNS_FILE" ] || return 1
  [ "$(readlink "/proc/$pid/ns/net" 2>/dev/null)" = "net:[$(ns_inode "$NETNS_FILE")]" ] || return 1
  echo "$pid"
}

engine_answers() { timeout 10 docker -H "unix://$SOCK" info >/dev/null 2>&1; }

# Is sshd answering on $ADDR:22? (Reads the banner: a bound port alone is not
# enough.)
ssh_answers() {
  local banner
  banner=$(timeout 3 bash -c "exec 3<>/dev/tcp/$ADDR/22 && head -c 7 <&3" 2>/dev/null) || return 1
  [ "$banner" = SSH-2.0 ]
}

# Is $1 (a path on the host) what hostb sees at $2? Compares device and inode,
# which also catches a bind the kernel dropped: when the host deletes or
# replaces the file or directory under a mount point in another namespace, the
# kernel silently unmounts it there.
bound() {
  [ "$(in_mnt stat -L -c %d:%i "$2" 2>/dev/null)" = "$(stat -L -c %d:%i "$1" 2>/dev/null)" ]
}

# Binds $1 over $2 in hostb's mount namespace unless it is already there.
bind_in_hostb() {
  bound "$1" "$2" && return 0
  # A stale bind (e.g. a socket file dockerd has since replaced) goes first.
  while in_mnt mountpoint -q "$2" 2>/dev/null; do in_mnt umount "$2" || break; done
  in_mnt mount --bind "$1" "$2" || die "cannot bind $1 over $2 in hostb"
  bound "$1" "$2" || die "$2 in hostb is not $1 after binding it"
}

# ---------------------------------------------------------------- up

up_netns() {
  [ -e "$NETNS_FILE" ] || ip netns add "$NETNS" || die "ip netns add $NETNS failed"
  # mlcb0 must be a veth whose peer is eth0 inside $NETNS. A leftover mlcb0
  # whose peer went with an old namespace is replaced.
  if ip link show "$HOST_IF" >/dev/null 2>&1 && ! ip -n "$NETNS" link show eth0 >/dev/null 2>&1; then
    ip link del "$HOST_IF" || die "cannot delete the stale $HOST_IF"
  fi
  if ! ip link show "$HOST_IF" >/dev/null 2>&1; then
    ip link add "$HOST_IF" type veth peer name eth0 netns "$NETNS" || die "cannot create the veth pair $HOST_IF/eth0"
  fi
  # (No `ip ... | grep -q` here: with pipefail, grep quitting early can fail ip
  # with SIGPIPE.)
  [[ "$(ip -o addr show dev "$HOST_IF")" == *" $HOST_IP/$PREFIX "* ]] ||
    ip addr add "$HOST_IP/$PREFIX" dev "$HOST_IF" || die "cannot address $HOST_IF"
  [[ "$(ip -n "$NETNS" -o addr show dev eth0)" == *" $ADDR/$PREFIX "* ]] ||
    ip -n "$NETNS" addr add "$ADDR/$PREFIX" dev eth0 || die "cannot address eth0 in $NETNS"
  ip link set "$HOST_IF" up && ip -n "$NETNS" link set eth0 up && ip -n "$NETNS" link set lo up ||
    die "cannot bring the links up"
}

up_namespaces() {
  mkdir -p "$RUN"
  # The ns files must sit on a private mount: were it shared, binding a mount
  # namespace's file would propagate into that namespace itself, which the
  # kernel refuses (a reference loop).
  if ! mountpoint -q "$RUN"; then
    mount --bind "$RUN" "$RUN" && mount --make-private "$RUN" || die "cannot make $RUN a private mount"
  fi
  if ns_held "$RUN/mnt" && ns_held "$RUN/uts"; then return 0; fi
  if ns_held "$RUN/mnt" || ns_held "$RUN/uts"; then
    die "half-made namespaces in $RUN (one of mnt/uts is held): run scripts/hostb.sh down first"
  fi
  touch "$RUN/mnt" "$RUN/uts"
  # slave rather than private: the host's unmounts (its dockerd's overlay mounts
  # under /var/lib/docker, ip netns delete) reach hostb's copy, so hostb never
  # pins them; hostb's own mounts never reach the host.
  unshare --mount="$RUN/mnt" --uts="$RUN/uts" --propagation slave hostname "$NAME" ||
    die "unshare of hostb's mount and UTS namespaces failed"
}

up_dirs() {
  # Modes only when created: mlc inside hostb may set its own later.
  local d
  [ -d "$STATE" ] || install -d -m 0755 "$STATE"
  for d in etc state workspaces log etc-docker; do [ -d "$STATE/$d" ] || install -d -m 0755 "$STATE/$d"; done
  for d in ssh docker; do [ -d "$STATE/$d" ] || install -d -m 0700 "$STATE/$d"; done
  # The host's /etc/hosts, plus hostb's own name (sudo looks it up).
  { grep -v "[[:space:]]$NAME\$" /etc/hosts || true; echo "127.0.1.1 $NAME"; } >"$STATE/hosts.new"
  chmod 0644 "$STATE/hosts.new"
  if cmp -s "$STATE/hosts.new" "$STATE/hosts"; then rm -f "$STATE/hosts.new"; else mv "$STATE/hosts.new" "$STATE/hosts"; fi
  local b src dst
  for b in "${BINDS[@]}"; do
    read -r src dst <<<"$b"
    # A bind needs its target to exist; on a bare host mlc's dirs may not yet.
    [ -e "$dst" ] || mkdir -p -m 0755 "$dst" || die "cannot create $dst on the host"
    bind_in_hostb "$src" "$dst"
  done
}

up_dockerd() {
  if ! our_pid "$DOCKER_PID" dockerd >/dev/null; then
    [ -S "$SOCK" ] && rm -f "$SOCK"
    say "starting hostb's dockerd (log: $RUN/dockerd.log)"
    # No --bridge=none: that would delete the host's docker0. In its own
    # network namespace dockerd makes its own docker0 and iptables rules.
    setsid nohup nsenter --net="$NETNS_FILE" --mount="$RUN/mnt" --uts="$RUN/uts" -- \
      dockerd --data-root "$STATE/docker" --exec-root "$RUN/exec" \
      --pidfile "$DOCKER_PID" -H "unix://$SOCK" \
      </dev/null >>"$RUN/dockerd.log" 2>&1 9>&- &
  fi
  local deadline=$((SECONDS + 60))
  until engine_answers; do
    if [ $SECONDS -ge $deadline ]; then
      die "hostb's dockerd did not answer within 60s: $(tail -n 1 "$RUN/dockerd.log" 2>/dev/null)"
    fi
    sleep 0.5
  done
  # Inside hostb, /var/run/docker.sock (/var/run is /run) is hostb's engine.
  # Checked each time: a restarted dockerd (hostb's, or the host's, which
  # replaces the file the bind sits on) undoes it.
  [ -S /run/docker.sock ] || die "the host has no /run/docker.sock to bind hostb's engine over"
  bind_in_hostb "$SOCK" /run/docker.sock
}

up_image() {
  local want have
  want=$(docker image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null) ||
    die "the host's engine lacks $IMAGE (run scripts/test-env.sh first)"
  have=$(docker -H "unix://$SOCK" image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null || true)
  if [ "$have" != "$want" ]; then
    say "copying $IMAGE into hostb's engine"
    timeout 120 docker save "$IMAGE" | timeout 120 docker -H "unix://$SOCK" load -q >/dev/null ||
      die "cannot copy $IMAGE into hostb's engine"
    have=$(docker -H "unix://$SOCK" image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null || true)
    [ "$have" = "$want" ] || die "$IMAGE has id $have in hostb but $want on the host"
  fi
}

up_sshd() {
  [ -x /usr/sbin/sshd ] || die "no /usr/sbin/sshd (apt-get install openssh-server)"
  if [ ! -s "$HOST_KEY" ]; then
    rm -f "$HOST_KEY" "$HOST_KEY.pub"
    ssh-keygen -q -t ed25519 -N '' -C "root@$NAME" -f "$HOST_KEY" || die "ssh-keygen of the host key failed"
  fi
  # UsePAM yes: useradd leaves the password locked ("!"), and with UsePAM no
  # sshd refuses a locked account even for a key. PAM's account check does not.
  cat >"$SSHD_CONFIG.new" <<EOF
# hostb's sshd (scripts/hostb.sh); the host's /etc/ssh/sshd_config is not used.
ListenAddress $ADDR:22
HostKey $HOST_KEY
PidFile $SSHD_PID
PubkeyAuthentication yes
AuthorizedKeysFile .ssh/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
UsePAM yes
StrictModes yes
PrintMotd no
X11Forwarding no
AcceptEnv LANG LC_*
# Benchmarks open many sessions at once.
MaxStartups 100:30:200
MaxSessions 100
Subsystem sftp /usr/lib/openssh/sftp-server
EOF
  if cmp -s "$SSHD_CONFIG.new" "$SSHD_CONFIG"; then rm -f "$SSHD_CONFIG.new"; else
    mv "$SSHD_CONFIG.new" "$SSHD_CONFIG"
    # A running sshd keeps its old configuration: restart it.
    local pid
    if pid=$(our_pid "$SSHD_PID" sshd); then stop_pid "$pid" sshd 10; fi
  fi
  if ! our_pid "$SSHD_PID" sshd >/dev/null; then
    mkdir -p -m 0755 /run/sshd # sshd's privilege separation directory
    in_hostb /usr/sbin/sshd -t -f "$SSHD_CONFIG" || die "sshd -t rejects $SSHD_CONFIG"
    say "starting hostb's sshd on $ADDR:22 (log: $RUN/sshd.log)"
    # The full path: sshd re-executes itself for every connection. It
    # daemonises itself and writes its PidFile; -E logs to a file (no syslog).
    in_hostb /usr/sbin/sshd -f "$SSHD_CONFIG" -E "$RUN/sshd.log" </dev/null >>"$RUN/sshd.log" 2>&1 9>&- ||
      die "sshd did not start: $(tail -n 1 "$RUN/sshd.log" 2>/dev/null)"
  fi
  local deadline=$((SECONDS + 15))
  until ssh_answers; do
    [ $SECONDS -lt $deadline ] || die "sshd does not answer on $ADDR:22 within 15s: $(tail -n 1 "$RUN/sshd.log" 2>/dev/null)"
    sleep 0.2
  done
}

# The host must be as it was: its engine answers and its docker0 is there.
check_host() {
  timeout 10 docker info >/dev/null 2>&1 || die "the host's engine no longer answers"
  ip link show docker0 >/dev/null 2>&1 || die "the host's docker0 is gone"
  [ "$(hostname)" != "$NAME" ] || die "the host's own hostname became $NAME"
}

cmd_up() {
  need_root
  local t0=$SECONDS
  for c in ip nsenter unshare flock dockerd docker ssh-keygen; do
    command -v "$c" >/dev/null 2>&1 || die "missing command $c"
  done
  timeout 10 docker info >/dev/null 2>&1 || die "the host's engine does not answer (run scripts/test-env.sh first)"
  lock
  up_netns
  up_namespaces
  up_dirs
  up_dockerd
  up_image
  up_sshd
  check_host
  say "up ($NAME at $ADDR, engine unix://$SOCK) in $((SECONDS - t0))s"
}

# ---------------------------------------------------------------- status

cmd_status() {
  [ -e "$NETNS_FILE" ] || die "down: no network namespace $NETNS"
  ns_held "$RUN/mnt" && ns_held "$RUN/uts" || die "down: its mount/UTS namespaces are not held in $RUN"
  engine_answers || die "down: its engine at unix://$SOCK does not answer"
  ssh_answers || die "down: no sshd answers on $ADDR:22"
  bound "$SOCK" /run/docker.sock || die "down: /run/docker.sock in hostb is not its engine's socket"
  local b src dst
  for b in "${BINDS[@]}"; do
    read -r src dst <<<"$b"
    bound "$src" "$dst" || die "down: $dst in hostb is not $src"
  done
  echo "$NAME: up"
}

# ---------------------------------------------------------------- user

cmd_user() {
  need_root
  local user=${1:-}
  [ -n "$user" ] || die "usage: scripts/hostb.sh user NAME"
  local home pub line
  home=$(getent passwd "$user" | cut -d: -f6) || die "no user $user"
  [ -d "$home" ] || die "$user's home $home does not exist"
  [ -s "$HOST_KEY.pub" ] || die "hostb has no host key yet: run scripts/hostb.sh up"
  lock
  cd /
  # Everything in the home is written as the user (runuser), never as root:
  # the home is theirs, and root must not follow their symlinks.
  as() { runuser -u "$user" -- "$@"; }
  as mkdir -p "$home/.ssh" || die "cannot create $home/.ssh as $user"
  as chmod 0700 "$home/.ssh"
  if [ ! -s "$home/.ssh/id_ed25519" ]; then
    as ssh-keygen -q -t ed25519 -N '' -C "$user@mlc-test" -f "$home/.ssh/id_ed25519" </dev/null >/dev/null ||
      die "ssh-keygen for $user failed"
  fi
  # Append a line to a file of the user's unless it is there already.
  add_line() {
    as sh -c 'touch "$2" && chmod "$3" "$2" && { grep -qxF -- "$1" "$2" || printf "%s\n" "$1" >>"$2"; }' \
      sh "$1" "$2" "$3" || die "cannot write $2 as $user"
  }
  # Homes are shared, so this is hostb's authorized_keys as well as the host's.
  pub=$(as cat "$home/.ssh/id_ed25519.pub") || die "cannot read $user's public key"
  add_line "$pub" "$home/.ssh/authorized_keys" 0600
  # hostb's host key, replacing any older key for its address.
  line="$ADDR $(cut -d' ' -f1,2 "$HOST_KEY.pub")"
  if ! as grep -qxF -- "$line" "$home/.ssh/known_hosts" 2>/dev/null; then
    if as test -e "$home/.ssh/known_hosts"; then
      as ssh-keygen -q -R "$ADDR" -f "$home/.ssh/known_hosts" >/dev/null 2>&1 || true
    fi
    add_line "$line" "$home/.ssh/known_hosts" 0644
  fi
  # sshd's StrictModes refuses a group- or world-writable home.
  [ -z "$(find "$home" -maxdepth 0 -perm /022)" ] || die "$home is group- or world-writable: sshd (StrictModes) will refuse $user"
  local got
  got=$(timeout 30 su -s /bin/sh "$user" -c \
    "ssh -o BatchMode=yes -o StrictHostKeyChecking=yes -o ConnectTimeout=5 $ADDR hostname" 2>&1) ||
    die "$user cannot ssh to $ADDR: $(echo "$got" | tail -n 1)"
  [ "$got" = "$NAME" ] || die "ssh as $user to $ADDR ran on '$got', not $NAME"
  say "$user can ssh to $ADDR"
}

# ---------------------------------------------------------------- exec, docker

cmd_exec() {
  [ $# -gt 0 ] || die "usage: scripts/hostb.sh exec CMD..."
  [ -e "$NETNS_FILE" ] && ns_held "$RUN/mnt" && ns_held "$RUN/uts" || die "down (run scripts/hostb.sh up)"
  # --wd: keep the caller's directory (entering a mount namespace resets it to /).
  exec nsenter --net="$NETNS_FILE" --mount="$RUN/mnt" --uts="$RUN/uts" --wd="$PWD" -- "$@"
}

cmd_docker() { exec docker -H "unix://$SOCK" "$@"; }

# ---------------------------------------------------------------- down

# Sends TERM to pid $1 (named $2), waits up to $3 seconds, then KILL.
stop_pid() {
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < $3 * 5; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.2
  done
  say "$2 ($pid) did not stop within $3s; killing it"
  kill -KILL "$pid" 2>/dev/null || true
  sleep 0.2
}

# Pids (other than this script) in hostb's network or mount namespace: ssh
# sessions, containerd and its shims, `exec` commands. Only hostb's own.
hostb_pids() {
  local net=none mnt=none
  [ -e "$NETNS_FILE" ] && net="net:\\[$(ns_inode "$NETNS_FILE")\\]"
  ns_held "$RUN/mnt" && mnt="mnt:\\[$(ns_inode "$RUN/mnt")\\]"
  # /proc/PID/ns/net is a link to "net:[INODE]" ([ and ] escaped for -lname).
  find /proc/[0-9]*/ns -maxdepth 1 \( -name net -lname "$net" -o -name mnt -lname "$mnt" \) 2>/dev/null |
    cut -d/ -f3 | sort -u | grep -vx "$$" || true
}

cmd_down() {
  need_root
  local purge=0
  case "${1:-}" in --purge) purge=1 ;; "") ;; *) die "usage: scripts/hostb.sh down [--purge]" ;; esac
  lock
  if engine_answers; then
    local ids
    ids=$(timeout 30 docker -H "unix://$SOCK" ps -aq) || true
    # shellcheck disable=SC2086 # one word per id
    [ -z "$ids" ] || timeout 60 docker -H "unix://$SOCK" rm -f $ids >/dev/null || say "could not remove all of hostb's containers"
  fi
  local pid
  if pid=$(our_pid "$SSHD_PID" sshd); then stop_pid "$pid" sshd 10; fi
  if pid=$(our_pid "$DOCKER_PID" dockerd); then stop_pid "$pid" dockerd 30; fi
  # What is left in hostb's namespaces (ssh sessions, shims) goes too, or it
  # would keep the namespaces, and the veth, alive.
  local left
  left=$(hostb_pids)
  if [ -n "$left" ]; then
    # shellcheck disable=SC2086
    kill -TERM $left 2>/dev/null || true
    for _ in $(seq 1 25); do [ -n "$(hostb_pids)" ] || break; sleep 0.2; done
    left=$(hostb_pids)
    # shellcheck disable=SC2086
    [ -z "$left" ] || { say "killing leftover processes $left"; kill -KILL $left 2>/dev/null || true; sleep 0.2; }
  fi
  # Unmounting the ns files ends the mount and UTS namespaces (nothing is in
  # them any more) and with them every mount made inside hostb.
  local f
  for f in "$RUN/mnt" "$RUN/uts"; do
    if ns_held "$f"; then umount "$f" || die "cannot unmount $f"; fi
  done
  if mountpoint -q "$RUN"; then umount "$RUN" || die "cannot unmount $RUN"; fi
  # Deleting one end of the veth deletes both; then the namespace.
  if ip link show "$HOST_IF" >/dev/null 2>&1; then
    ip link del "$HOST_IF" 2>/dev/null || ! ip link show "$HOST_IF" >/dev/null 2>&1 || die "cannot delete $HOST_IF"
  fi
  if [ -e "$NETNS_FILE" ]; then ip netns delete "$NETNS" || die "ip netns delete $NETNS failed"; fi
  rm -rf "${RUN:?}/exec"
  rm -f "$RUN/mnt" "$RUN/uts" "$SOCK" "$DOCKER_PID" "$SSHD_PID"
  if [ $purge = 1 ]; then
    # Refuse while anything is still mounted under $STATE: rm would go into it.
    if grep -q " $STATE[/ ]" /proc/self/mountinfo; then die "something is still mounted under $STATE; not purging"; fi
    rm -rf --one-file-system "${STATE:?}" "${RUN:?}"
    say "down; $STATE and $RUN purged"
  else
    say "down ($STATE kept)"
  fi
}

case "${1:-}" in
  up) shift; cmd_up "$@" ;;
  status) shift; cmd_status "$@" ;;
  user) shift; cmd_user "$@" ;;
  exec) shift; cmd_exec "$@" ;;
  docker) shift; cmd_docker "$@" ;;
  down) shift; cmd_down "$@" ;;
  *) die "usage: scripts/hostb.sh up|status|user NAME|exec CMD...|docker ARGS...|down [--purge]" ;;
esac
