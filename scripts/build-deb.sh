#!/usr/bin/env bash
# Builds bin/mlc_<version>_<arch>.deb from this tree with dpkg-deb (make deb).
#
# The package holds what `make install PREFIX=/usr` installs: /usr/bin/mlc and
# its mlc-* links, the sudoers rule /etc/sudoers.d/mlc (0440, checked with
# visudo), the policy /etc/mlc/resource-limits.yaml (the embedded default),
# the bash, zsh and fish completions, the man page (gzipped), the systemd units
# (mlc-monitor.service; mlc-sample and mlc-cleanup, services and timers, not
# enabled) and the cron file /etc/cron.d/mlc (0644) that runs the sample and
# the nightly cleanup. The three files in /etc are conffiles. deploy/debian/
# has the control file's template and the maintainer scripts.
#
# Version: DEB_VERSION, else from git describe made Debian-safe: a tag v1.2.3
# gives 1.2.3, 4 commits after it 1.2.3+git4.<hash>; with no tag,
# 0.0~git<commit date>.<hash>; +dirty when tracked files changed.
# DEB_MAINTAINER overrides the last commit's author.
set -euo pipefail
cd "$(dirname "$0")/.."
MAKE=${MAKE:-make}

say() { echo "build-deb: $*" >&2; }
die() { say "$*"; exit 1; }

for t in dpkg-deb dpkg visudo gzip git; do
  command -v "$t" >/dev/null 2>&1 || die "needs $t"
done

deb_version() {
  local desc v dirty=
  git rev-parse -q --verify HEAD >/dev/null 2>&1 || die "cannot work out a version (not a git checkout?): set DEB_VERSION"
  [[ $(git describe --always --dirty) == *-dirty ]] && dirty=+dirty
  if desc=$(git describe --tags --match 'v[0-9]*' --match '[0-9]*' 2>/dev/null); then
    v=${desc#v}
    if [[ $v =~ ^(.+)-([0-9]+)-g([0-9a-f]+)$ ]]; then
      v="${BASH_REMATCH[1]}+git${BASH_REMATCH[2]}.${BASH_REMATCH[3]}"
    fi
    v=${v//-/\~} # 1.0-rc1 sorts before 1.0 as 1.0~rc1
  else
    v="0.0~git$(git log -1 --format=%cd --date=format:%Y%m%d HEAD).$(git rev-parse --short=12 HEAD)"
  fi
  echo "$v$dirty"
}

version=${DEB_VERSION:-$(deb_version)}
[[ $version =~ ^[0-9][0-9A-Za-z.+~]*$ ]] || die "version $version is not a Debian version (digits first; letters, digits, . + ~)"
arch=$(dpkg --print-architecture)
maintainer=${DEB_MAINTAINER:-$(git log -1 --format='%an <%ae>' 2>/dev/null || true)}
[ -n "$maintainer" ] || maintainer="mlc maintainers <root@localhost>"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/mlc

say "installing into $root (PREFIX=/usr)"
$MAKE --no-print-directory install DESTDIR="$root" PREFIX=/usr >&2
chmod 0755 "$root"

# What make install leaves out or does differently for a package.
[ -f "$root/etc/mlc/resource-limits.yaml" ] || die "make install left out /etc/mlc/resource-limits.yaml"
gzip -9n "$root/usr/share/man/man1/mlc.1"
visudo -cf "$root/etc/sudoers.d/mlc" >&2 || die "the sudoers rule does not pass visudo -cf"
chmod 0440 "$root/etc/sudoers.d/mlc"
grep -q ' /usr/bin/mlc' "$root/etc/sudoers.d/mlc" || die "the sudoers rule does not name /usr/bin/mlc"
[ -f "$root/etc/cron.d/mlc" ] || die "make install left out /etc/cron.d/mlc"
chmod 0644 "$root/etc/cron.d/mlc"
grep -q ' /usr/bin/mlc cleanup$' "$root/etc/cron.d/mlc" || die "the cron file does not run /usr/bin/mlc cleanup"
for u in mlc-monitor.service mlc-sample.service mlc-sample.timer mlc-cleanup.service mlc-cleanup.timer; do
  [ -f "$root/lib/systemd/system/$u" ] || die "make install left out the unit $u"
  ! grep -q @BINDIR@ "$root/lib/systemd/system/$u" || die "$u still says @BINDIR@"
done
find "$root" -type d -exec chmod 0755 {} +

# The C library version the binary needs (cgo: SQLite; NVML is loaded at run time).
shlibs=libc6
if command -v dpkg-shlibdeps >/dev/null 2>&1; then
  mkdir -p "$work/src/debian"
  printf 'Source: mlc\n\nPackage: mlc\nArchitecture: any\n' > "$work/src/debian/control"
  if out=$(cd "$work/src" && dpkg-shlibdeps -O -e"$root/usr/bin/mlc" 2>/dev/null); then
    out=${out#shlibs:Depends=}
    [ -n "$out" ] && shlibs=$out
  else
    say "dpkg-shlibdeps failed: depending on libc6 without a version"
  fi
else
  say "no dpkg-shlibdeps (dpkg-dev): depending on libc6 without a version"
fi

install -d -m 0755 "$root/DEBIAN"
size=$(du -sk --apparent-size "$root" | cut -f1)
sed -e "s|@VERSION@|$version|" -e "s|@ARCH@|$arch|" -e "s|@MAINTAINER@|$maintainer|" \
  -e "s|@SIZE@|$size|" -e "s|@SHLIBS@|$shlibs|" deploy/debian/control.in > "$root/DEBIAN/control"
install -m 0644 deploy/debian/conffiles "$root/DEBIAN/conffiles"
install -m 0755 deploy/debian/postinst deploy/debian/prerm deploy/debian/postrm "$root/DEBIAN/"
while read -r f; do
  [ -f "$root$f" ] || die "conffile $f is not in the package"
done < deploy/debian/conffiles
(cd "$root" && find . -type f ! -path './DEBIAN/*' ! -path './etc/*' -printf '%P\0' | sort -z | xargs -0 md5sum) > "$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/md5sums"

mkdir -p bin
rm -f bin/mlc_*.deb
deb=bin/mlc_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >&2
say "built $deb"
echo "$deb"
