#!/usr/bin/env bash
# Builds the Debian package (make deb), installs it on this machine with
# dpkg -i, checks what it installed (mlc version, mlc limits check, the
# sudoers rule, the conffiles, the mlc-users group, man page, completions, the
# systemd units and the cron file, a member of mlc-users running mlc without
# typing sudo), then removes and purges it. As root; make test runs it. Ends with "deb: N passed, M failed" and exits
# non-zero on any failure.
#
# The machine is left as it was: files the package ships that were here
# before (a policy in /etc/mlc, a make-install'd sudoers rule, ...) are saved
# first and put back after the purge; the mlc-users group is removed again if
# the package created it. An mlc package already installed is not touched: the
# test fails under CI=true and is skipped otherwise.
set -uo pipefail
cd "$(dirname "$0")/.."

passed=0 failed=0
ok() { passed=$((passed + 1)); echo "deb: ok: $*"; }
bad() { failed=$((failed + 1)); echo "deb: FAIL: $*"; }
check() { # check NAME COMMAND...: passes when COMMAND succeeds
  local name=$1 out
  shift
  if out=$("$@" 2>&1); then ok "$name"; else bad "$name"; printf '%s\n' "$out" | sed 's/^/    /' | tail -20; fi
}
finish() {
  echo "deb: $passed passed, $failed failed"
  [ "$failed" = 0 ] && [ "$passed" -gt 0 ]
}

if [ "$(id -u)" != 0 ]; then
  bad "must run as root (installs a package)"
  finish
  exit 1
fi
if dpkg-query -W -f='${Status}' mlc 2>/dev/null | grep -q 'installed'; then
  echo "deb: an mlc package is installed on this machine already; not touching it"
  if [ "${CI:-}" = true ]; then bad "mlc package installed before the test"; finish; exit 1; fi
  echo "deb: skipped"
  exit 0
fi

work=$(mktemp -d)
user=mlcdeb$$
group_before=$(getent group mlc-users >/dev/null && echo yes || echo no)
admins_before=$(getent group mlc-admins >/dev/null && echo yes || echo no)
# Directories the default policy makes mlc create, removed again if new.
made_dirs=()
for d in /var/lib/mlc /var/log/mlc /var/lib/mlc-workspaces; do [ -e "$d" ] || made_dirs+=("$d"); done
installed=no
restore() {
  if [ "$installed" = yes ]; then
    if [ -x /usr/bin/mlc ] && getent passwd "$user" >/dev/null; then
      timeout 120 /usr/bin/mlc remove firstday --user "$user" --yes --force >/dev/null 2>&1
    fi
    dpkg --purge mlc >/dev/null 2>&1 || echo "deb: warning: dpkg --purge mlc failed" >&2
  fi
  if getent passwd "$user" >/dev/null; then userdel -r "$user" >/dev/null 2>&1 || userdel "$user"; fi
  rm -rf "/var/lib/mlc-workspaces/$user"
  for d in "${made_dirs[@]}"; do rm -rf "$d"; done
  if [ "$group_before" = no ] && getent group mlc-users >/dev/null; then groupdel mlc-users; fi
  if [ "$admins_before" = no ] && getent group mlc-admins >/dev/null; then groupdel mlc-admins; fi
  if [ -s "$work/saved.tar" ]; then
    tar -C / -xpf "$work/saved.tar" || echo "deb: warning: could not put back the files saved in $work/saved.tar" >&2
  fi
  rm -rf "$work"
}
trap restore EXIT
trap 'exit 130' INT TERM HUP

# 1. Build.
if deb=$(MAKE=make make --no-print-directory deb 2>"$work/build.log" | tail -1) && [ -f "$deb" ]; then
  ok "make deb: $deb"
else
  bad "make deb"
  tail -30 "$work/build.log" | sed 's/^/    /'
  finish
  exit 1
fi

# 2. What it ships.
contents=$(dpkg-deb -c "$deb" | awk '{print $6}' | sed 's|^\./|/|')
missing=
units="mlc-monitor.service mlc-sample.service mlc-sample.timer mlc-cleanup.service mlc-cleanup.timer"
for f in /usr/bin/mlc /usr/bin/mlc-create /usr/bin/mlc-limits /etc/sudoers.d/mlc /etc/mlc/resource-limits.yaml /etc/cron.d/mlc \
  /usr/share/man/man1/mlc.1.gz /usr/share/bash-completion/completions/mlc /usr/share/bash-completion/completions/mlc-create \
  /usr/share/zsh/site-functions/_mlc /usr/share/fish/vendor_completions.d/mlc.fish $(printf '/lib/systemd/system/%s ' $units); do
  grep -qx -- "$f" <<<"$contents" || missing="$missing $f"
done
if [ -z "$missing" ]; then ok "package contents"; else bad "package lacks:$missing"; fi
depends=$(dpkg-deb -f "$deb" Depends)
check "Depends: $depends" bash -c "grep -q 'sudo' <<<'$depends' && grep -q 'docker.io | docker-ce' <<<'$depends' &&
  { ! command -v dpkg-shlibdeps >/dev/null || grep -q 'libc6 (>= ' <<<'$depends'; }"
check "sudoers rule 0440 root:root in the package" bash -c "dpkg-deb -c '$deb' | grep -E '^-r--r----- root/root .* \./etc/sudoers\.d/mlc$'"
check "cron file 0644 root:root in the package" bash -c "dpkg-deb -c '$deb' | grep -E '^-rw-r--r-- root/root .* \./etc/cron\.d/mlc$'"

# Save what is here already at the package's paths, and clear its conffiles
# so that dpkg installs the package's own.
saved=()
while read -r f; do
  [ -n "$f" ] && { [ -e "$f" ] || [ -L "$f" ]; } && [ ! -d "$f" ] && saved+=("${f#/}")
done <<<"$contents"
if [ ${#saved[@]} -gt 0 ]; then
  echo "deb: saving what is here before the test: ${saved[*]}"
  tar -C / -cpf "$work/saved.tar" "${saved[@]}" || { bad "cannot save ${saved[*]}"; finish; exit 1; }
fi
rm -f /etc/mlc/resource-limits.yaml /etc/sudoers.d/mlc /etc/cron.d/mlc

# 3. Install.
installed=yes
check "dpkg -i" env DEBIAN_FRONTEND=noninteractive dpkg -i "$deb"
check "dpkg says installed" bash -c "dpkg-query -W -f='\${Status}' mlc | grep -qx 'install ok installed'"

# 4. What it installed.
check "/usr/bin/mlc version" bash -c "/usr/bin/mlc version | grep -q '^mlc '"
check "/usr/bin/mlc limits check" bash -c "env -u MLC_CONFIG /usr/bin/mlc limits check | grep -q '^/etc/mlc/resource-limits.yaml: valid'"
check "mlc-limits link" bash -c "env -u MLC_CONFIG /usr/bin/mlc-limits check >/dev/null"
check "visudo -cf /etc/sudoers.d/mlc" visudo -cf /etc/sudoers.d/mlc
check "sudoers rule names /usr/bin/mlc" grep -q '^%mlc-users ALL=(root) NOPASSWD: /usr/bin/mlc,' /etc/sudoers.d/mlc
check "sudoers rule mode 0440" bash -c '[ "$(stat -c %a:%U:%G /etc/sudoers.d/mlc)" = 440:root:root ]'
conffiles=$(dpkg-query --control-show mlc conffiles 2>/dev/null || cat /var/lib/dpkg/info/mlc.conffiles)
check "policy is a conffile" grep -qx /etc/mlc/resource-limits.yaml <<<"$conffiles"
check "sudoers rule is a conffile" grep -qx /etc/sudoers.d/mlc <<<"$conffiles"
check "cron file is a conffile" grep -qx /etc/cron.d/mlc <<<"$conffiles"
check "mlc-users group" getent group mlc-users
check "mlc-admins group (the default policy's admins)" getent group mlc-admins
check "systemd unit mlc-monitor.service verifies" bash -c '[ -f /lib/systemd/system/mlc-monitor.service ] && grep -qx "ExecStart=/usr/bin/mlc monitor serve" /lib/systemd/system/mlc-monitor.service && systemd-analyze verify /lib/systemd/system/mlc-monitor.service'
check "systemd unit mlc-sample.service verifies" bash -c '[ -f /lib/systemd/system/mlc-sample.service ] && grep -qx "ExecStart=/usr/bin/mlc monitor sample" /lib/systemd/system/mlc-sample.service && systemd-analyze verify /lib/systemd/system/mlc-sample.service'
check "systemd unit mlc-cleanup.service verifies" bash -c '[ -f /lib/systemd/system/mlc-cleanup.service ] && grep -qx "ExecStart=/usr/bin/mlc cleanup" /lib/systemd/system/mlc-cleanup.service && systemd-analyze verify /lib/systemd/system/mlc-cleanup.service'
check "systemd timer mlc-sample.timer verifies (every 5 minutes)" bash -c '[ -f /lib/systemd/system/mlc-sample.timer ] && grep -qx "OnCalendar=\*:0/5" /lib/systemd/system/mlc-sample.timer && systemd-analyze verify /lib/systemd/system/mlc-sample.timer'
check "systemd timer mlc-cleanup.timer verifies (03:30, persistent)" bash -c '[ -f /lib/systemd/system/mlc-cleanup.timer ] && grep -qx "OnCalendar=\*-\*-\* 03:30:00" /lib/systemd/system/mlc-cleanup.timer && grep -qx "Persistent=true" /lib/systemd/system/mlc-cleanup.timer && systemd-analyze verify /lib/systemd/system/mlc-cleanup.timer'
check "timers installed, not enabled" bash -c '! systemctl is-enabled --quiet mlc-sample.timer 2>/dev/null && ! systemctl is-enabled --quiet mlc-cleanup.timer 2>/dev/null'
check "cron file /etc/cron.d/mlc: 0644 root:root, runs /usr/bin/mlc monitor sample and cleanup" bash -c '
  [ "$(stat -c %a:%U:%G /etc/cron.d/mlc)" = 644:root:root ] &&
  grep -Eq "^\*/5 \* \* \* \*[[:space:]]+root[[:space:]].*/usr/bin/mlc monitor sample" /etc/cron.d/mlc &&
  grep -Eq "^30 3 \* \* \*[[:space:]]+root[[:space:]].*/usr/bin/mlc cleanup$" /etc/cron.d/mlc &&
  ! grep -q @BINDIR@ /etc/cron.d/mlc &&
  # every job line: five time fields, the user, a command
  ! grep -Ev "^[[:space:]]*(#|$)" /etc/cron.d/mlc | grep -Evq "^([^[:space:]]+[[:space:]]+){5}root[[:space:]]+[^[:space:]]" &&
  [ -z "$(tail -c1 /etc/cron.d/mlc)" ]'
check "man page" bash -c "zcat /usr/share/man/man1/mlc.1.gz | grep -q '^\.TH mlc 1'"
check "bash completion" bash --norc --noprofile -c '
  source /usr/share/bash-completion/completions/mlc-create
  complete -p mlc-start >/dev/null
  COMP_WORDS=(mlc cre); COMP_CWORD=1; _mlc; [ "${COMPREPLY[*]}" = create ] || { echo "got: ${COMPREPLY[*]}"; exit 1; }
  COMP_WORDS=(mlc-gpu ""); COMP_CWORD=1; _mlc; [ "${COMPREPLY[*]}" = "reconcile release status" ] || { echo "got: ${COMPREPLY[*]}"; exit 1; }'

# A student's first day: a member of mlc-users runs mlc without typing sudo
# (the package's rule and group let mlc re-execute itself through sudo -n),
# creates a container from the package's default policy, completes its name.
as_student() { su "$user" -s /bin/sh -c "cd && $1"; }
if useradd -m -G mlc-users "$user"; then
  check "student: mlc list" as_student '/usr/bin/mlc list | head -1 | grep -q "^NAME"'
  check "student: completes a command" as_student '/usr/bin/mlc completion __complete -- mlc-gpu st | grep -qx status'
  if docker image inspect mlc/busybox:latest >/dev/null 2>&1; then
    check "student: mlc-create firstday busybox" as_student 'timeout 120 /usr/bin/mlc-create firstday busybox --no-start'
    check "student: mlc start <TAB> gives firstday" as_student '/usr/bin/mlc completion __complete -- mlc start "" | grep -qx firstday'
    check "student: mlc remove firstday" as_student 'timeout 120 /usr/bin/mlc remove firstday --yes'
  elif [ "${CI:-}" = true ]; then
    bad "no test image mlc/busybox:latest (scripts/test-env.sh builds it)"
  else
    echo "deb: no test image mlc/busybox:latest (scripts/test-env.sh builds it): no container tried"
  fi
else
  bad "useradd $user"
fi

# 5. Remove keeps the conffiles; purge removes them. A timer an admin
# enabled is disabled on removal (prerm): no link is left to a removed unit.
check "systemctl enable mlc-cleanup.timer" bash -c 'systemctl enable mlc-cleanup.timer && [ -L /etc/systemd/system/timers.target.wants/mlc-cleanup.timer ]'
check "dpkg -r" dpkg -r mlc
check "dpkg -r removed /usr/bin/mlc and the units and kept the policy and cron file" bash -c '[ ! -e /usr/bin/mlc ] && [ ! -e /usr/share/man/man1/mlc.1.gz ] &&
  for u in '"$units"'; do [ ! -e /lib/systemd/system/$u ] || { echo "$u is left"; exit 1; }; done &&
  [ -f /etc/mlc/resource-limits.yaml ] && [ -f /etc/cron.d/mlc ]'
check "dpkg -r disabled the enabled timer" bash -c '! [ -L /etc/systemd/system/timers.target.wants/mlc-cleanup.timer ]'
check "dpkg --purge" dpkg --purge mlc
installed=no
check "purge removed the conffiles" bash -c '[ ! -e /etc/mlc/resource-limits.yaml ] && [ ! -e /etc/sudoers.d/mlc ] && [ ! -e /etc/cron.d/mlc ]'

finish
