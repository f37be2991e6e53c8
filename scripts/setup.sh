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
