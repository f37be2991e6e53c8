#!/usr/bin/env bash
# Installs davdrive for the whole system (as root, from a checkout):
#   $PREFIX/bin/davdrive                  the program (PREFIX defaults to /usr/local)
#   /sbin/mount.davdrive -> it            so `mount -t davdrive` and /etc/fstab work
#   /etc/systemd/system/davdrive@.service the unit template
#   $PREFIX/share/…                       bash, zsh and fish completions
# DAVDRIVE_BIN=path installs that binary instead of building one; DESTDIR=dir installs
# below dir (for packaging).
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=${PREFIX:-/usr/local}
dest=${DESTDIR:-}
bin=${DAVDRIVE_BIN:-}
if [ -z "$bin" ]; then
    cargo build --release --locked
    bin=target/release/davdrive
fi

install -D -m 0755 "$bin" "$dest$prefix/bin/davdrive"
mkdir -p "$dest/sbin"
ln -sfn "$prefix/bin/davdrive" "$dest/sbin/mount.davdrive"
mkdir -p "$dest/etc/systemd/system"
sed "s|/usr/local/bin/davdrive|$prefix/bin/davdrive|g" scripts/davdrive@.service \
    >"$dest/etc/systemd/system/davdrive@.service"
share=$dest$prefix/share
mkdir -p "$share/bash-completion/completions" "$share/zsh/site-functions" \
    "$share/fish/vendor_completions.d"
"$bin" completions bash >"$share/bash-completion/completions/davdrive"
"$bin" completions zsh >"$share/zsh/site-functions/_davdrive"
"$bin" completions fish >"$share/fish/vendor_completions.d/davdrive.fish"
echo "installed $prefix/bin/davdrive and /sbin/mount.davdrive${dest:+ below $dest}"
