#!/usr/bin/env bash
# A Python >= 3.12 for the controller on a machine that has only Debian 12's python3.11 (ansible-core 2.20+
# needs Python 3.12+). CPython is built once per version from the upstream source that Debian 13 (trixie)
# ships in its python3.13 source package, into a cache outside the repository:
#   $TEG_ISTIO_CACHE/python/python-<debian version>/bin/python3.13
#
#   tools/python.sh            build it if missing, print the interpreter's path
#   tools/python.sh --print    only print the path (no build)
#
# Why this way: Debian's archive is reachable from this project's machines (python.org is not), and apt
# verifies the source package against the archive's signed index (debian-archive-keyring), so the tarball
# is what Debian ships. Only the upstream (orig) tarball is built: Debian's patches adapt CPython to
# Debian's own multiarch layout and packaging, which a private prefix does not need. The build uses
# bookworm's -dev packages. No PGO/LTO (--enable-optimizations): they multiply the build time on a shared
# 2-core machine for a speed-up the controller's few processes do not need.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../tests/localcp/versions.env
. "$here/../tests/localcp/versions.env"
cache=${TEG_ISTIO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/teg-istio}
source_version=${PYTHON_DEBIAN_VERSION}            # e.g. 3.13.5-2+deb13u5
upstream=${source_version%%-*}                     # 3.13.5
minor=${upstream%.*}                               # 3.13
prefix="$cache/python/python-$source_version"
interpreter="$prefix/bin/python$minor"

if [ "${1:-}" = "--print" ]; then
  echo "$interpreter"
  exit 0
fi
# The stamp is written last: a build that was interrupted leaves no stamp and is redone from scratch.
if [ -x "$interpreter" ] && [ -e "$prefix/.built" ]; then
  echo "$interpreter"
  exit 0
fi

log() { printf '[python build] %s\n' "$*" >&2; }
start=$SECONDS

# Build dependencies from the machine's own suite (bookworm): headers for the stdlib modules Ansible and
# pip need (ssl, zlib, ctypes via libffi, bz2, lzma, sqlite3, readline, uuid, curses).
build_deps=(build-essential pkg-config libssl-dev zlib1g-dev libffi-dev libbz2-dev liblzma-dev libsqlite3-dev
  libreadline-dev uuid-dev libncurses-dev xz-utils)
missing=()
for package in "${build_deps[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "python.sh: missing build dependencies; run: sudo apt-get install -y ${missing[*]}" >&2
    exit 2
  fi
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2
fi

# A private apt configuration that knows only trixie's source index: the machine's own apt sources
# stay untouched. The mirror is the one the machine's apt already uses.
mirror=$(sed -n 's/^URIs: *\(http[^ ]*\/debian\)\/*$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
mirror=${mirror:-http://deb.debian.org/debian}
apt_dir="$cache/python/apt-trixie-src"
mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial"
echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror trixie main" >"$apt_dir/sources.list"
apt_options=(-q -o "Dir::Etc::SourceList=$apt_dir/sources.list" -o Dir::Etc::SourceParts=/nonexistent
  -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir" -o APT::Sandbox::User=root)
log "fetching python3.13 $source_version from $mirror (trixie, deb-src)"
apt-get "${apt_options[@]}" update >&2
work=$(mktemp -d "${TMPDIR:-/tmp}/teg-istio-python.XXXXXX")
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get "${apt_options[@]}" source --download-only "python$minor=$source_version" >&2)
tar -xJf "$work/python${minor}_${upstream}.orig.tar.xz" -C "$work"

rm -rf "$prefix"
log "building CPython $upstream into $prefix (make -j2)"
(
  cd "$work/Python-$upstream"
  ./configure --prefix="$prefix" --with-ensurepip=install >"$work/configure.log" 2>&1 \
    || { tail -20 "$work/configure.log" >&2; exit 1; }
  make -j2 >"$work/make.log" 2>&1 || { tail -40 "$work/make.log" >&2; exit 1; }
  make install >"$work/install.log" 2>&1 || { tail -40 "$work/install.log" >&2; exit 1; }
)
# The modules a controller needs must have been built (configure skips a module whose headers are missing).
"$interpreter" -c 'import ssl, zlib, bz2, lzma, ctypes, sqlite3, readline, uuid, venv, ensurepip' \
  || { echo "python.sh: $interpreter lacks a standard module; see the build dependencies above" >&2; exit 1; }
touch "$prefix/.built"
log "CPython $upstream built in $((SECONDS - start)) s"
echo "$interpreter"
