#!/usr/bin/env bash
# Installs what is missing, then runs every test: unit tests, the WebDAV client against a
# real server, the FUSE tests against real mounts, and the interop suite against Apache,
# nginx and rclone.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
# systemd-analyze checks the unit template (tests/mount_helper.rs).
command -v systemd-analyze >/dev/null 2>&1 || apt_install test systemd

export CARGO_TERM_COLOR=never
cargo build --locked --all-targets -j "$(nproc)"
# Test binaries run one after another; within one, two tests run at a time.
cargo test --locked -j "$(nproc)" -- --test-threads=2
# The end-to-end suites against Apache, nginx and rclone as well (see README).
scripts/interop.sh
