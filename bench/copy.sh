#!/usr/bin/env bash
# Times `mlc copy NAME --to hostb` of a container with about 1 GiB of changes
# (one 512 MiB file and 2048 files of 256 KiB from /dev/urandom, written in
# its layer, outside /workspace; a base file changed and one deleted) against
# a raw `tar | ssh | tar` of the same files (the container's overlay upper
# directory) between the same two servers, as the same user over the same
# ssh, alternating round by round in one run (mlc, raw, mlc, raw). The copy is
# removed on hostb between rounds (and its copy checked once, untimed).
# Reports medians, their ratio, the bytes on the wire against the changes,
# counted two ways: rx+tx deltas of the host's veth to hostb (mlcb0; all
# traffic to hostb crosses it, other tests' too) and the IP bytes of the
# user's own connections over it (an nftables table of ours counts them), and
# mlc's phases from the times its stderr lines arrive. Targets (issue 12): mlc
# <= 2x the raw pipe's time; wire bytes <= 1.1x the changes. A missed target
# is reported (MISSED), never a failure.
#
# Needs root, the host's engine (scripts/test-env.sh), hostb (scripts/hostb.sh
# up), nft, rsync, and about 5 GB of disk. It builds its own mlc with its own
# policy path into a temporary directory and makes a user (mlcb-copy, group
# mlcb-users), a sudoers drop-in (/etc/sudoers.d/mlc-benchcopy), a bind of
# hostb's policy inside hostb and the nftables table inet mlc_benchcopy, all
# removed on exit. ROUNDS, BIG_MB, SMALL_FILES, SMALL_KB change the sizes.
set -euo pipefail
cd "$(dirname "$0")/.."
HB=$PWD/scripts/hostb.sh # by its full path: the user's steps run from /
export LC_ALL=C # EPOCHREALTIME with a decimal point
ROUNDS=${ROUNDS:-2}
BIG_MB=${BIG_MB:-512}           # one file of this many MiB
SMALL_FILES=${SMALL_FILES:-2048} # and this many files
SMALL_KB=${SMALL_KB:-256}        # of this many KiB
GO=${GO:-go}
U=mlcb-copy
G=mlcb-users
SUDOERS=/etc/sudoers.d/mlc-benchcopy
HOSTB=10.231.0.2
VETH=mlcb0
NAME=big
LIMIT=${LIMIT:-900} # seconds any one step may take

die() { echo "bench/copy: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root"
for c in docker ssh rsync tar su useradd visudo nsenter bc; do command -v "$c" >/dev/null || die "missing command $c"; done
timeout 10 docker info >/dev/null 2>&1 || die "the host's engine does not answer (run scripts/test-env.sh)"
"$HB" status >/dev/null || die "hostb is not up (run scripts/hostb.sh up)"
here=$(hostname -s)
[ "$here" != hostb ] || die "this host is called hostb too"
[ -r /sys/class/net/$VETH/statistics/rx_bytes ] || die "no $VETH"
! id "$U" >/dev/null 2>&1 || die "user $U exists already (a leftover? userdel -r $U)"
! getent group "$G" >/dev/null || die "group $G exists already (a leftover? groupdel $G)"
[ ! -e "$SUDOERS" ] || die "$SUDOERS exists already (a leftover?)"
command -v nft >/dev/null || die "missing command nft"
NFT=mlc_benchcopy # an nftables table of ours: counts the user's connections to hostb
! nft list table inet $NFT >/dev/null 2>&1 || die "nftables table inet $NFT exists already (a leftover? nft delete table inet $NFT)"

D=$(mktemp -d /tmp/mlc-benchcopy-XXXX)
RAW=$D-raw # where the raw pipe unpacks on hostb (its /tmp is the host's)
uid=
bound=0
counting=0
cleanup() {
  set +e
  cd /
  if [ -n "$uid" ]; then
    ids=$(docker ps -aq --filter "label=mlc.user=$U")
    [ -n "$ids" ] && docker rm -f $ids >/dev/null 2>&1
    ids=$(timeout 30 "$HB" docker ps -aq --filter "label=mlc.user=$U" 2>/dev/null)
    [ -n "$ids" ] && timeout 60 "$HB" docker rm -f $ids >/dev/null 2>&1
    docker network rm "mlc-$uid" >/dev/null 2>&1
    timeout 30 "$HB" docker network rm "mlc-$uid" >/dev/null 2>&1
  fi
  [ "$bound" = 1 ] && timeout 30 "$HB" exec umount "$D/policy.yaml"
  [ "$counting" = 1 ] && nft delete table inet $NFT
  rm -f "$SUDOERS"
  id "$U" >/dev/null 2>&1 && userdel -r "$U" 2>/dev/null
  getent group "$G" >/dev/null && groupdel "$G"
  rm -rf "$D" "$RAW"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { echo "$EPOCHREALTIME"; }
# userwire: IP bytes, both ways, of the user's connections over the veth
# (their ssh: mlc's and the raw pipe's), whatever else crosses it.
userwire() { nft list counter inet $NFT wire | awk '{for (i = 1; i < NF; i++) if ($i == "bytes") print $(i+1)}'; }
wire() { echo $(($(cat /sys/class/net/$VETH/statistics/rx_bytes) + $(cat /sys/class/net/$VETH/statistics/tx_bytes))); }
median() { sort -g | awk '{a[NR]=$1} END {if (NR == 0) print "nan"; else printf "%.6f\n", (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
calc() { echo "$*" | bc -l; }
as_user() { timeout "$LIMIT" su -s /bin/sh "$U" -c "$1"; }
mib() { printf '%.1f MiB' "$(calc "$1 / 1048576")"; }

# mlc, its policies (hostb's bound over the same path inside hostb only).
chmod 755 "$D"
mkdir -m 755 "$D/a" "$D/b" # workspaces' parents must be traversable
echo "building mlc into $D" >&2
"$GO" build -o "$D/mlc" -ldflags "-X github.com/mlc-lab/mlc/config.SystemPath=$D/policy.yaml -extldflags=-Wl,-z,lazy" ./mlc
policy() {
  cat <<EOF
state_dir: $D/$1/state
audit_log: $D/$1/audit.jsonl
defaults:
  cpus: 2
  memory: 2g
  shm_size: 16m
  max_containers: 5
  gpus: 0
policies:
  workspace_root: $D/$1/ws
gpu:
  fake_count: 0
  runtime: env
images:
  bb:
    image: mlc/busybox:latest
    framework: busybox
    version: "1.35"
servers:
  - name: $here
    ssh: 10.231.0.1
  - name: hostb
    ssh: $HOSTB
EOF
}
policy a >"$D/policy.yaml"
policy b >"$D/policy-b.yaml"
chmod 644 "$D/policy.yaml" "$D/policy-b.yaml"
"$HB" exec mount --bind "$D/policy-b.yaml" "$D/policy.yaml"
bound=1
"$HB" exec grep -q "$D/b/state" "$D/policy.yaml" || die "hostb does not see its own policy at $D/policy.yaml"

# The user, allowed to run this mlc through sudo, with ssh keys for hostb.
groupadd "$G"
useradd -m -s /bin/sh -G "$G" "$U"
uid=$(id -u "$U")
echo "%$G ALL=(root) NOPASSWD: $D/mlc" >"$SUDOERS.tmp"
chmod 0440 "$SUDOERS.tmp"
visudo -cf "$SUDOERS.tmp" >/dev/null || { rm -f "$SUDOERS.tmp"; die "visudo rejects the drop-in"; }
mv "$SUDOERS.tmp" "$SUDOERS"
timeout 120 "$HB" user "$U" 2>/dev/null
# The veth's counters count everyone's traffic to hostb (other tests use it
# too); these count only the user's connections: a connection the user's
# socket opens over the veth is marked, and its packets both ways counted.
nft -f - <<EOF
table inet $NFT {
  counter wire {}
  chain out {
    type filter hook output priority 0; policy accept;
    oifname "$VETH" meta skuid $uid ct mark set 0x6d6c6362
    oifname "$VETH" ct mark 0x6d6c6362 counter name "wire"
  }
  chain in {
    type filter hook input priority 0; policy accept;
    iifname "$VETH" ct mark 0x6d6c6362 counter name "wire"
  }
}
EOF
counting=1
cd / # the user's commands run from a directory they can read

# The container and its changes: written as the user's uid (what mlc open
# runs as) under /tmp/data in the layer; the base-file change and deletion
# need root in the container (/etc and /bin are root's), so the engine does
# those (docker exec -u 0).
echo "creating $NAME and writing ${BIG_MB} MiB + ${SMALL_FILES} x ${SMALL_KB} KiB into its layer" >&2
as_user "$D/mlc create $NAME busybox --memory 2g" >/dev/null
as_user "$D/mlc open $NAME -- sh -c 'mkdir -p /tmp/data/small && dd if=/dev/urandom of=/tmp/data/big bs=1M count=$BIG_MB 2>/dev/null && i=0 && while [ \$i -lt $SMALL_FILES ]; do dd if=/dev/urandom of=/tmp/data/small/f\$i bs=${SMALL_KB}k count=1 2>/dev/null || exit 1; i=\$((i+1)); done && sync'" </dev/null
dname=mlc-$uid-$NAME
timeout 60 docker exec -u 0 "$dname" sh -c 'echo "benchcopy:x:4242:" >>/etc/group && rm /bin/vi'
UPPER=$(docker inspect -f '{{.GraphDriver.Data.UpperDir}}' "$dname")
[ -d "$UPPER" ] || die "no upper directory for $dname"
changes=$(find "$UPPER" \( -type f -o -type l \) -printf '%s\n' | awk '{s+=$1} END {print s+0}')
nfiles=$(find "$UPPER" -type f | wc -l)
wsdir=$(find "$D/a/ws" -mindepth 2 -maxdepth 2 -type d | head -n1)
wsbytes=$(du -sb "$wsdir" 2>/dev/null | cut -f1)

# Traffic on the veth from elsewhere (other tests using hostb) would count
# against both sides: sample it idle first.
w0=$(wire); sleep 3; bg=$((($(wire) - w0) / 3))

: >"$D/mlc.s"; : >"$D/raw.s"; : >"$D/mlc.w"; : >"$D/raw.w"; : >"$D/mlc.uw"; : >"$D/raw.uw"
for p in pre commit stream created finish; do : >"$D/ph.$p"; done
# stamp: each line of stdin with the time it arrived.
stamp() { while IFS= read -r l; do printf '%s %s\n' "$EPOCHREALTIME" "$l"; done; }

run_mlc() {
  local r=$1 t0 t1 w0 w1 u0 u1
  u0=$(userwire); w0=$(wire); t0=$(now)
  as_user "$D/mlc copy $NAME --to hostb" >"$D/mlc.$r.out" 2> >(stamp >"$D/mlc.$r.err") || {
    sleep 1; cat "$D/mlc.$r.out" "$D/mlc.$r.err" >&2; die "mlc copy failed (round $r)"; }
  t1=$(now); w1=$(wire); u1=$(userwire)
  wait $! 2>/dev/null || true # the stamping of stderr
  calc "$t1 - $t0" >>"$D/mlc.s"; echo $((w1 - w0)) >>"$D/mlc.w"; echo $((u1 - u0)) >>"$D/mlc.uw"
  # Phases from when the lines arrived: start -> "pausing" (describe and
  # preflight over ssh) -> "sending" (the pause) -> "copying ... X/s" (the
  # writable layer read, through ssh, written into the new container on
  # hostb) -> "syncing the workspace" (hostb ends the stream and records the
  # deletions) -> end (workspace rsync, start there, done).
  awk -v t0="$t0" -v t1="$t1" -v d="$D" '
    / pausing /       {c = $1} / sending /  {s = $1}
    / copying .* to / {p = $1} / syncing the workspace / {y = $1}
    END {
      if (!c || !s || !p) { print "missing phase lines" > "/dev/stderr"; exit }
      if (!y) y = t1
      printf "%.6f\n", c - t0 >> d "/ph.pre"; printf "%.6f\n", s - c >> d "/ph.commit"
      printf "%.6f\n", p - s >> d "/ph.stream"; printf "%.6f\n", y - p >> d "/ph.created"
      printf "%.6f\n", t1 - y >> d "/ph.finish"
      printf "    mlc phases: preflight %.2f s, pause %.2f s, read+ssh+write %.2f s, end of stream %.2f s, rsync+start %.2f s\n",
        c - t0, s - c, p - s, y - p, t1 - y > "/dev/stderr"
    }' "$D/mlc.$r.err"
  grep '^copied' "$D/mlc.$r.out" | sed 's/^/    mlc: /' >&2 || true
  if [ "$r" = 1 ]; then # the copy has the changes (untimed)
    local there
    there=$(as_user "$D/mlc --server hostb open $NAME -- sh -c 'find /tmp/data -type f | wc -l; find /tmp/data -type f -exec stat -c %s {} + | awk \"{s += \\\$1} END {print s}\"; grep -c benchcopy /etc/group; [ -e /bin/vi ] && echo vi-there || echo vi-gone'" </dev/null | tr -s ' \n' ' ')
    want="$((SMALL_FILES + 1)) $(find "$UPPER/tmp/data" -type f -printf '%s\n' | awk '{s += $1} END {print s}') 1 vi-gone "
    [ "$there" = "$want" ] || echo "    WARNING: the copy on hostb differs: files, bytes, group line, vi: $there (want $want)" >&2
  fi
  as_user "$D/mlc --server hostb remove --force $NAME" >/dev/null
}

run_raw() {
  local r=$1 t0 t1 w0 w1 u0 u1 rc=0
  u0=$(userwire); w0=$(wire); t0=$(now)
  # Root reads the layer; the user unpacks it on hostb over ssh. As a user,
  # tar cannot give files away or keep root's modes: --no-same-owner
  # --no-same-permissions. The whiteouts (0/0 character devices) it may make
  # (Linux >= 5.8 lets anyone make those); where it cannot, its mknod errors
  # (tar exits 2) are tolerated below. Nothing else may fail.
  timeout "$LIMIT" tar -C "$UPPER" -cf - . |
    timeout "$LIMIT" su -s /bin/sh "$U" -c "ssh -o BatchMode=yes -o StrictHostKeyChecking=yes -T $HOSTB 'mkdir -p $RAW && tar -C $RAW --no-same-owner --no-same-permissions -xf -'" \
      2>"$D/raw.$r.err" || rc=$?
  t1=$(now); w1=$(wire); u1=$(userwire)
  if [ "$rc" != 0 ] && { [ "$rc" != 2 ] || grep -v -e 'Cannot mknod' -e 'Exiting with failure status' "$D/raw.$r.err" | grep -q .; }; then
    cat "$D/raw.$r.err" >&2; die "the raw pipe failed (exit $rc, round $r)"
  fi
  local got
  got=$(find "$RAW" \( -type f -o -type l \) -printf '%s\n' | awk '{s+=$1} END {print s+0}')
  [ "$got" = "$changes" ] || die "the raw pipe unpacked $got bytes, not $changes"
  calc "$t1 - $t0" >>"$D/raw.s"; echo $((w1 - w0)) >>"$D/raw.w"; echo $((u1 - u0)) >>"$D/raw.uw"
  printf '    raw: %.2fs, %s unpacked (%d mknod errors tolerated)\n' "$(calc "$t1 - $t0")" "$(mib "$got")" \
    "$(grep -c 'Cannot mknod' "$D/raw.$r.err" || true)" >&2
  rm -rf "$RAW"
}

for r in $(seq 1 "$ROUNDS"); do
  echo "round $r of $ROUNDS" >&2
  run_mlc "$r"
  run_raw "$r"
done

m=$(median <"$D/mlc.s"); rw=$(median <"$D/raw.s")
mw=$(median <"$D/mlc.w"); ww=$(median <"$D/raw.w")
mu=$(median <"$D/mlc.uw"); ru=$(median <"$D/raw.uw")
ratio=$(calc "$m / $rw")
verdict() { [ "$(calc "$1 <= $2")" = 1 ] && echo met || echo MISSED; }
x() { calc "$1 / $changes"; } # bytes as a multiple of the changes
ph() { median <"$D/ph.$1"; }
list() { awk '{printf "%s%.2f", (NR > 1 ? " " : ""), $1}' "$1"; }
sent=$(grep -ho '([^)]* of changes' "$D"/mlc.*.out | head -n1 | sed 's/^(//; s/ of changes//')
echo "mlc copy $NAME --to hostb vs tar | ssh | tar of the same files, same user and ssh; $ROUNDS rounds, alternating; medians; $(nproc) CPUs"
printf '  changes: %d bytes (%s) in %d files in the layer (%s MiB + %d x %d KiB, a base file changed, one deleted); workspace %d bytes; mlc says %s of changes\n' \
  "$changes" "$(mib "$changes")" "$nfiles" "$BIG_MB" "$SMALL_FILES" "$SMALL_KB" "${wsbytes:-0}" "$sent"
printf '  %-17s %7.2f s   wire: %s %12.0f bytes (%.3fx the changes); its connections %12.0f bytes (%.3fx)\n' \
  "mlc copy" "$m" "$VETH" "$mw" "$(x "$mw")" "$mu" "$(x "$mu")"
printf '  %-17s %7.2f s   wire: %s %12.0f bytes (%.3fx the changes); its connections %12.0f bytes (%.3fx)\n' \
  "tar | ssh | tar" "$rw" "$VETH" "$ww" "$(x "$ww")" "$ru" "$(x "$ru")"
printf '  mlc phases: preflight %.2f s, pause %.2f s, read+ssh+write into the container (streamed) %.2f s, end of stream on hostb %.2f s, workspace rsync+start %.2f s\n' \
  "$(ph pre)" "$(ph commit)" "$(ph stream)" "$(ph created)" "$(ph finish)"
printf '    i.e. pause %.2f s + read/transfer/write %.2f s + the rest %.2f s\n' "$(ph commit)" "$(ph stream)" \
  "$(calc "$m - $(ph commit) - $(ph stream)")"
printf '  ratio time mlc/raw: %.3f (target <= 2: %s)\n' "$ratio" "$(verdict "$ratio" 2)"
printf '  ratio wire/changes, the user'"'"'s connections: mlc %.3f (target <= 1.1: %s), raw %.3f\n' "$(x "$mu")" "$(verdict "$(x "$mu")" 1.1)" "$(x "$ru")"
printf '  ratio wire/changes, all of %s: mlc %.3f (target <= 1.1: %s), raw %.3f\n' "$VETH" "$(x "$mw")" "$(verdict "$(x "$mw")" 1.1)" "$(x "$ww")"
printf '  (%s carried %d bytes/s of other traffic before the rounds: it counts in its figures, not in the connections'"'"' ones; load average now %s)\n' \
  "$VETH" "$bg" "$(cut -d' ' -f1-3 /proc/loadavg)"
printf '  runs: mlc %s s; raw %s s\n' "$(list "$D/mlc.s")" "$(list "$D/raw.s")"
