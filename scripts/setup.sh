#!/usr/bin/env bash
# Installs what davdrive needs to build and run on Debian: FUSE 3 (fusermount3), git and
# tar for the tests, and checks for the Rust toolchain. Safe to run again.
set -euo pipefail

need=()
command -v fusermount3 >/dev/null 2>&1 || need+=(fuse3)
command -v git >/dev/null 2>&1 || need+=(git)
command -v getfattr >/dev/null 2>&1 || need+=(attr)
command -v cc >/dev/null 2>&1 || need+=(gcc libc6-dev)
command -v python3 >/dev/null 2>&1 || need+=(python3)
# rsync: tests/metadata.rs checks that `rsync -a` from a fresh cache sends nothing.
command -v rsync >/dev/null 2>&1 || need+=(rsync)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  for c in "$HOME/.cargo/bin/cargo" /usr/local/cargo/bin/cargo; do
    if [ -x "$c" ]; then export PATH="$(dirname "$c"):$PATH"; break; fi
  done
fi
command -v cargo >/dev/null 2>&1 || {
  echo "setup: cargo not found; install Rust (https://rustup.rs) and run again" >&2
  exit 1
}

if [ ! -e /dev/fuse ]; then
  modprobe fuse 2>/dev/null || true
fi
[ -e /dev/fuse ] || { echo "setup: /dev/fuse is missing: this machine cannot mount FUSE filesystems" >&2; exit 1; }

# apt_install NAME PACKAGE...: installs PACKAGEs (for NAME's messages) without letting
# their scripts start system-wide services (apache, nginx on port 80): the scripts start
# their own servers on 127.0.0.1 and stop them by pid.
apt_install() {
  local who=$1; shift
  [ $# -gt 0 ] || return 0
  echo "$who: installing $*"
  export DEBIAN_FRONTEND=noninteractive
  local made_policy=0 rc=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    made_policy=1
  fi
  apt-get update -qq
  apt-get install -y -qq "$@" >/dev/null || rc=$?
  [ $made_policy -eq 0 ] || rm -f /usr/sbin/policy-rc.d
  [ $rc -eq 0 ] || { echo "$who: apt-get install $* failed" >&2; exit 1; }
}
