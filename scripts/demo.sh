#!/usr/bin/env bash
# Builds davdrive, serves a temp folder over WebDAV on 127.0.0.1, mounts it, and shows a
# short session: write, list, read back, the file on the server side, offline-safe
# rename; then unmounts. With --keep the mount stays up for you to try.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

keep=0
[ "${1:-}" = "--keep" ] && keep=1

cargo build --locked -q
bin="$PWD/target/debug/davdrive"
work=$(mktemp -d /tmp/davdrive-demo.XXXXXX)
mkdir -p "$work/server" "$work/mnt"

"$bin" serve "$work/server" --addr 127.0.0.1:0 >"$work/serve.out" 2>"$work/serve.log" &
server_pid=$!
cleanup() {
  if [ $keep -eq 0 ]; then
    "$bin" unmount "$work/mnt" 2>/dev/null || true
    kill "$server_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT

for _ in $(seq 100); do
  grep -q '^serving' "$work/serve.out" 2>/dev/null && break
  sleep 0.1
done
url=$(sed -n 's/^serving .* on \(http:.*\)$/\1/p' "$work/serve.out")
[ -n "$url" ] || { echo "demo: the WebDAV server did not start"; cat "$work/serve.log"; exit 1; }

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; eval "$@"; }

echo "WebDAV server: $url serving $work/server"
step "$bin mount $url $work/mnt --cache-dir $work/cache --daemon"
step "echo 'Hello from davdrive' > $work/mnt/hello.txt"
step "mkdir -p $work/mnt/projects/notes && cp README.md $work/mnt/projects/notes/"
step "ls -l $work/mnt $work/mnt/projects/notes"
step "cat $work/mnt/hello.txt"
step "mv $work/mnt/hello.txt $work/mnt/projects/hello.txt"

# Uploads run in the background; wait until the server has them.
for _ in $(seq 200); do
  [ -f "$work/server/projects/hello.txt" ] && cmp -s README.md "$work/server/projects/notes/README.md" && break
  sleep 0.1
done
echo
echo "On the server side (the folder the WebDAV server serves):"
step "find $work/server -type f | sort"
step "cat $work/server/projects/hello.txt"
cmp README.md "$work/server/projects/notes/README.md"
[ ! -e "$work/server/hello.txt" ]

echo
echo "The running mount, through its control socket:"
step "$bin ctl --mount $work/mnt status"
step "$bin ctl --mount $work/mnt ls --state projects/notes"
step "$bin ctl --mount $work/mnt backup run --wait"
step "$bin ctl --mount $work/mnt backup list"

if [ $keep -eq 1 ]; then
  echo
  echo "Still mounted on $work/mnt (server pid $server_pid)."
  echo "When done: $bin unmount $work/mnt && kill $server_pid"
else
  step "$bin unmount $work/mnt"
  echo
  echo "demo: OK"
fi
