#!/usr/bin/env bash
# Benchmarks a davdrive mount side by side with an rclone mount (--vfs-cache-mode full)
# and the local disk, all against one Apache mod_dav server that this script starts on
# 127.0.0.1. Run as root on Debian: installs what it needs (fuse3 via scripts/setup.sh,
# apache2, rclone), builds davdrive in release mode (CARGO_TARGET_DIR is respected),
# measures, prints a table and writes it as JSON to $BENCH_OUT (default:
# bench-results.json in the repo root).
#
# Measurements: cold / disk-cache / hot sequential read of a 256 MiB file, `ls -l` of a
# 5,000-entry directory (cold, warm), a 256 MiB sequential write and a `tar -x` of 2,000
# small files (time until the writer finishes and until the server has every byte), the
# daemons' peak RSS, and 1 MiB appended to a 1 GiB file on the server not cached
# (BENCH_APPEND_MIB sets its size): time, and bytes on the wire counted by a relay.
# BENCH_ONLY=append runs only that last case.
#
# --scale: the cases at the sizes users have (100,000 files, a 4 GiB file, a folder
# shrinking on the server, a server slowed to a byte a second, ...), side by side with
# rclone and the limits (curl, the local disk); see scripts/bench/scale.sh for the
# cases and the BENCH_SCALE_* sizes. Takes about an hour and some 20 GB of disk.
#
# Environment: BENCH_DAVDRIVE_ARGS (extra davdrive mount options), BENCH_OUT (JSON path), BENCH_TMPDIR (where the work dir goes, default
# /var/tmp; caches, local baseline and the server's docroot all live there, on one disk),
# BENCH_LOGS (a directory to copy the davdrive, rclone and apache logs to at the end).
set -euo pipefail
mode=small
case "${1:-}" in
  --scale) mode=scale ;;
  "") ;;
  *) echo "usage: scripts/bench.sh [--scale]" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
repo=$PWD
helper="$repo/scripts/bench/helper.py"

source scripts/setup.sh

[ "$(id -u)" -eq 0 ] || { echo "bench: run as root (drops the page cache, runs apache as www-data)" >&2; exit 1; }

# ---------------------------------------------------------------- packages
need=()
{ [ -x /usr/sbin/apache2 ] && [ -e /usr/lib/apache2/modules/mod_dav_fs.so ]; } || need+=(apache2)
command -v rclone >/dev/null 2>&1 || need+=(rclone)
command -v diff >/dev/null 2>&1 || need+=(diffutils)
command -v pgrep >/dev/null 2>&1 || need+=(procps)
apt_install bench "${need[@]}"
id www-data >/dev/null 2>&1 || { echo "bench: user www-data is missing (apache2 should have made it)" >&2; exit 1; }

# ---------------------------------------------------------------- build
echo "bench: building davdrive (release)"
export CARGO_TERM_COLOR=never
cargo build --release --locked
bin="$(realpath "${CARGO_TARGET_DIR:-target}")/release/davdrive"
[ -x "$bin" ] || { echo "bench: $bin was not built" >&2; exit 1; }

# ---------------------------------------------------------------- helpers
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
mibps() { awk -v m="$1" -v s="$2" 'BEGIN { if (s > 0) printf "%.1f", m / s; else print "n/a" }'; }
is_mounted() { awk -v m="$1" '$5 == m { f = 1 } END { exit !f }' /proc/self/mountinfo; }
pid_alive() {
  local s
  [ -n "$1" ] && [ -r "/proc/$1/stat" ] || return 1
  s=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [ -n "$s" ] && [ "$s" != Z ] && [ "$s" != X ]
}
notes=()
note() { notes+=("$*"); echo "bench: note: $*"; }

work=""
apache_pid=""
dav_pid=""
rclone_pid=""
relay_pid=""
cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  if [ -n "$work" ]; then
    if is_mounted "$work/mnt/davdrive"; then
      "$bin" unmount "$work/mnt/davdrive" >/dev/null 2>&1 || fusermount3 -u -z "$work/mnt/davdrive"
    fi
    if is_mounted "$work/mnt/rclone"; then
      fusermount3 -u "$work/mnt/rclone" 2>/dev/null || fusermount3 -u -z "$work/mnt/rclone"
    fi
  fi
  if pid_alive "$dav_pid"; then
    for _ in $(seq 50); do pid_alive "$dav_pid" || break; sleep 0.1; done
    pid_alive "$dav_pid" && kill "$dav_pid" 2>/dev/null
  fi
  if [ -n "$rclone_pid" ] && kill -0 "$rclone_pid" 2>/dev/null; then
    kill "$rclone_pid" 2>/dev/null
    wait "$rclone_pid" 2>/dev/null
  fi
  if [ -n "$relay_pid" ] && kill -0 "$relay_pid" 2>/dev/null; then
    kill "$relay_pid" 2>/dev/null
    wait "$relay_pid" 2>/dev/null
  fi
  if [ -n "$apache_pid" ] && kill -0 "$apache_pid" 2>/dev/null; then
    kill "$apache_pid" 2>/dev/null
    wait "$apache_pid" 2>/dev/null
  fi
  if [ -n "${BENCH_LOGS:-}" ] && [ -n "$work" ] && [ -d "$work/logs" ]; then
    mkdir -p "$BENCH_LOGS"
    cp -r "$work/logs/." "$BENCH_LOGS/"
    cp "$work/apache/error.log" "$BENCH_LOGS/apache-error.log" 2>/dev/null
    [ ! -f "$work/cache/davdrive/davdrive.log" ] || cp "$work/cache/davdrive/davdrive.log" "$BENCH_LOGS/"
  fi
  if [ -n "$work" ] && [ -d "$work" ]; then
    if is_mounted "$work/mnt/davdrive" || is_mounted "$work/mnt/rclone"; then
      echo "bench: a mount is still up under $work; leaving it in place" >&2
    else
      rm -rf --one-file-system "$work"
    fi
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

work=$(mktemp -d "${BENCH_TMPDIR:-/var/tmp}/davdrive-bench.XXXXXX")
chmod 755 "$work"
docroot="$work/docroot"
data="$work/data"
local_dir="$work/local"
logs="$work/logs"
mkdir -p "$docroot" "$data" "$local_dir" "$logs" "$work/apache/lock" "$work/apache/run" \
  "$work/mnt/davdrive" "$work/mnt/rclone"
out_json="${BENCH_OUT:-$repo/bench-results.json}"
[ "$mode" = small ] || out_json="${BENCH_OUT:-$repo/bench-scale-results.json}"
results="$work/results.tsv"
: >"$results"
record() {
  printf '%s\t%s\t%s\t%s\t%s\n' "$@" >>"$results"
  if [ -n "$5" ]; then echo "bench:   $2: $5 $3"; else echo "bench:   $2: n/a"; fi
}

# Page cache: dropped before each cold measurement when the kernel lets us.
if (sync && echo 3 >/proc/sys/vm/drop_caches) 2>/dev/null; then
  can_drop=1
else
  can_drop=0
  note "echo 3 > /proc/sys/vm/drop_caches is not permitted here: 'cold' and 'after drop_caches' rows were measured WITHOUT dropping the page cache (davdrive/rclone caches were still empty for the cold read)"
fi
drop_caches() { sync; [ $can_drop -eq 0 ] || echo 3 >/proc/sys/vm/drop_caches; }

# ---------------------------------------------------------------- test data
big_mib=256
# BENCH_ONLY=append: only the append case (quick; no other test data).
only=${BENCH_ONLY:-}
list_count=5000
small_count=2000
if [ "$mode" = small ] && [ "$only" != append ]; then
echo "bench: generating test data in $work"
head -c $((big_mib * 1024 * 1024)) /dev/urandom >"$data/read.bin"
head -c $((big_mib * 1024 * 1024)) /dev/urandom >"$data/write.bin"
python3 "$helper" make-small-files "$data/smallfiles" $small_count >/dev/null
tar -cf "$data/smallfiles.tar" -C "$data" smallfiles
cp "$data/read.bin" "$docroot/big.bin"
python3 "$helper" make-listing "$docroot/list5000" $list_count
fi
chown -R www-data:www-data "$docroot" "$work/apache/lock"

# ---------------------------------------------------------------- apache
port=$(python3 "$helper" free-port)
mods=/usr/lib/apache2/modules
cat >"$work/apache/httpd.conf" <<EOF
ServerRoot /etc/apache2
ServerName 127.0.0.1
Listen 127.0.0.1:$port
LoadModule mpm_event_module $mods/mod_mpm_event.so
LoadModule authz_core_module $mods/mod_authz_core.so
LoadModule dav_module $mods/mod_dav.so
LoadModule dav_fs_module $mods/mod_dav_fs.so
User www-data
Group www-data
PidFile $work/apache/httpd.pid
DefaultRuntimeDir $work/apache/run
Mutex file:$work/apache/run default
ErrorLog $work/apache/error.log
LogLevel warn
DavLockDB $work/apache/lock/DavLock
LimitRequestBody 0
Timeout 300
KeepAlive On
MaxKeepAliveRequests 0
DocumentRoot $docroot
<Directory />
  Require all denied
</Directory>
<Directory $docroot>
  Dav On
  Require all granted
</Directory>
EOF
/usr/sbin/apache2 -f "$work/apache/httpd.conf" -DFOREGROUND >"$work/apache/stdout.log" 2>&1 &
apache_pid=$!
url="http://127.0.0.1:$port/"
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  kill -0 "$apache_pid" 2>/dev/null || break
  sleep 0.1
done
if ! python3 - "$url" <<'EOF'
import sys, urllib.request
req = urllib.request.Request(sys.argv[1], method="PROPFIND", headers={"Depth": "0"})
with urllib.request.urlopen(req, timeout=10) as r:
    sys.exit(0 if r.status == 207 else 1)
EOF
then
  echo "bench: apache did not come up as a WebDAV server on $url" >&2
  tail -n 20 "$work/apache/stdout.log" "$work/apache/error.log" >&2 2>/dev/null || true
  exit 1
fi
echo "bench: apache (pid $apache_pid) serves $docroot over WebDAV at $url"

# Removes what a run wrote on the server; the read file and the listing stay.
reset_server() {
  find "$docroot" -mindepth 1 -maxdepth 1 ! -name big.bin ! -name list5000 -exec rm -rf {} +
}

# ---------------------------------------------------------------- mounts
mount_davdrive() {
  local mnt=$1 cache=$2
  # BENCH_DAVDRIVE_ARGS adds mount options (e.g. --passthrough).
  # shellcheck disable=SC2086
  if ! "$bin" mount "${DAV_URL:-$url}" "$mnt" --cache-dir "$cache" --daemon ${DAV_TTL:---dir-ttl 60s --attr-ttl 60s} ${BENCH_DAVDRIVE_ARGS:-} \
      >"$logs/davdrive-mount.out" 2>&1; then
    echo "bench: davdrive mount failed:" >&2
    cat "$logs/davdrive-mount.out" >&2
    echo "--- tail of $cache/davdrive.log:" >&2
    tail -n 40 "$cache/davdrive.log" >&2 2>/dev/null || true
    exit 1
  fi
  dav_pid=$(pgrep -n -f "davdrive mount .*$mnt" || true)
  if [ -z "$dav_pid" ] || ! is_mounted "$mnt"; then
    echo "bench: davdrive mount returned but $mnt is not mounted (daemon pid: ${dav_pid:-none})" >&2
    tail -n 40 "$cache/davdrive.log" >&2 2>/dev/null || true
    exit 1
  fi
}
unmount_davdrive() {
  local mnt=$1
  if ! "$bin" unmount "$mnt" >"$logs/davdrive-unmount.out" 2>&1; then
    echo "bench: davdrive unmount failed:" >&2
    cat "$logs/davdrive-unmount.out" >&2
    exit 1
  fi
  for _ in $(seq 100); do pid_alive "$dav_pid" || break; sleep 0.1; done
  pid_alive "$dav_pid" && note "davdrive daemon (pid $dav_pid) still ran 10 s after unmount"
  dav_pid=""
}
rclone_conf="$work/rclone.conf"
mount_rclone() {
  local mnt=$1 cache=$2
  : >"$rclone_conf"
  rclone config create bench webdav url="${RCLONE_URL:-$url}" vendor=other --config "$rclone_conf" >/dev/null
  # shellcheck disable=SC2086
  rclone mount bench: "$mnt" --config "$rclone_conf" --cache-dir "$cache" \
    --vfs-cache-mode full ${RCLONE_TTL:---dir-cache-time 60s --attr-timeout 60s} \
    --log-file "$logs/rclone.log" --log-level INFO &
  rclone_pid=$!
  for _ in $(seq 300); do
    is_mounted "$mnt" && return 0
    kill -0 "$rclone_pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "bench: rclone mount did not come up on $mnt" >&2
  echo "--- tail of $logs/rclone.log:" >&2
  tail -n 40 "$logs/rclone.log" >&2 2>/dev/null || true
  exit 1
}
unmount_rclone() {
  local mnt=$1
  if ! fusermount3 -u "$mnt"; then
    echo "bench: could not unmount rclone from $mnt" >&2
    exit 1
  fi
  for _ in $(seq 100); do kill -0 "$rclone_pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$rclone_pid" 2>/dev/null; then
    note "rclone (pid $rclone_pid) still ran 10 s after unmount; stopped it"
    kill "$rclone_pid"
  fi
  wait "$rclone_pid" 2>/dev/null || true
  rclone_pid=""
}

if [ "$mode" = scale ]; then
  # shellcheck source=scripts/bench/scale.sh
  source "$repo/scripts/bench/scale.sh"
else
# ---------------------------------------------------------------- measurements
write_timeout=120
tar_timeout=150
L_READ_COLD="cold sequential read, ${big_mib} MiB"
L_READ_DISK="re-read after drop_caches (tool's disk cache)"
[ $can_drop -eq 1 ] || L_READ_DISK="re-read (page cache NOT dropped)"
L_READ_HOT="hot re-read (page cache warm)"
L_LS_COLD="ls -l ${list_count} entries, cold"
L_LS_WARM="ls -l ${list_count} entries, warm"
L_W_DONE="write ${big_mib} MiB: dd finished"
L_W_SRV="write ${big_mib} MiB: complete on server"
L_T_DONE="tar -x ${small_count} files: tar finished"
L_T_SRV="tar -x ${small_count} files: complete on server"
L_RSS="daemon peak RSS (VmHWM)"
L_RESTART="remount, 100,000 cached files in the store"

# Reads, listing and writes in DIR (a mount or the local directory). For a mount, the
# "complete" times poll the server's docroot; for the local disk they are the time until
# the data is on disk (writer + sync).
measure() {
  local tool=$1 dir=$2 t0 t1 t2 rc v
  echo "bench: [$tool] cold read"
  drop_caches
  t0=$(now); cat "$dir/big.bin" >/dev/null; t1=$(now)
  record read_cold "$L_READ_COLD" MiB/s "$tool" "$(mibps $big_mib "$(elapsed "$t0" "$t1")")"
  cmp -s "$data/read.bin" "$dir/big.bin" || note "$tool: big.bin read back differs from the original"

  echo "bench: [$tool] re-read after dropping the page cache"
  drop_caches
  t0=$(now); cat "$dir/big.bin" >/dev/null; t1=$(now)
  record read_disk "$L_READ_DISK" MiB/s "$tool" "$(mibps $big_mib "$(elapsed "$t0" "$t1")")"

  echo "bench: [$tool] hot re-read"
  cat "$dir/big.bin" >/dev/null
  t0=$(now); cat "$dir/big.bin" >/dev/null; t1=$(now)
  record read_hot "$L_READ_HOT" MiB/s "$tool" "$(mibps $big_mib "$(elapsed "$t0" "$t1")")"

  echo "bench: [$tool] ls -l of $list_count entries"
  [ "$tool" != local ] || drop_caches
  t0=$(now); ls -l "$dir/list5000" >"$logs/ls-$tool.out"; t1=$(now)
  record ls_cold "$L_LS_COLD" s "$tool" "$(elapsed "$t0" "$t1")"
  v=$(($(wc -l <"$logs/ls-$tool.out") - 1))
  [ "$v" -eq $list_count ] || note "$tool: ls -l showed $v entries, not $list_count"
  t0=$(now); ls -l "$dir/list5000" >/dev/null; t1=$(now)
  record ls_warm "$L_LS_WARM" s "$tool" "$(elapsed "$t0" "$t1")"

  echo "bench: [$tool] write ${big_mib} MiB"
  cat "$data/write.bin" >/dev/null
  rc=0
  t0=$(now)
  dd if="$data/write.bin" of="$dir/x.bin" bs=1M status=none 2>"$logs/dd-$tool.err" || rc=$?
  t1=$(now)
  [ $rc -eq 0 ] || note "$tool: dd exited $rc: $(head -c 300 "$logs/dd-$tool.err")"
  record write_done "$L_W_DONE" s "$tool" "$(elapsed "$t0" "$t1")"
  if [ "$tool" = local ]; then
    sync; t2=$(now)
    record write_server "$L_W_SRV" s "$tool" "$(elapsed "$t0" "$t2")"
  else
    v=$(python3 "$helper" wait-file "$data/write.bin" "$docroot/x.bin" "$t0" $write_timeout)
    [ "$v" != timeout ] || note "$tool: x.bin was not complete on the server after ${write_timeout}s"
    record write_server "$L_W_SRV" s "$tool" "$v"
  fi

  echo "bench: [$tool] tar -x $small_count files"
  rc=0
  t0=$(now)
  tar --no-same-owner -xf "$data/smallfiles.tar" -C "$dir" 2>"$logs/tar-$tool.err" || rc=$?
  t1=$(now)
  [ $rc -eq 0 ] || note "$tool: tar exited $rc: $(head -c 300 "$logs/tar-$tool.err")"
  record tar_done "$L_T_DONE" s "$tool" "$(elapsed "$t0" "$t1")"
  if [ "$tool" = local ]; then
    sync; t2=$(now)
    record tar_server "$L_T_SRV" s "$tool" "$(elapsed "$t0" "$t2")"
  else
    v=$(python3 "$helper" wait-tree "$data/smallfiles" "$docroot/smallfiles" "$t0" $tar_timeout \
      2>"$logs/wait-tree-$tool.err")
    [ "$v" = timeout ] && note "$tool: the tar's files were not all on the server after ${tar_timeout}s ($(cat "$logs/wait-tree-$tool.err"))"
    [ "$v" = mismatch ] && note "$tool: the files on the server differ from the tar's: $(head -c 300 "$logs/wait-tree-$tool.err")"
    record tar_server "$L_T_SRV" s "$tool" "$v"
  fi
}

if [ "$only" != append ]; then
# -- davdrive
echo "bench: === davdrive ==="
reset_server
rm -rf "$work/cache/davdrive"; mkdir -p "$work/cache/davdrive"
drop_caches
mount_davdrive "$work/mnt/davdrive" "$work/cache/davdrive"
measure davdrive "$work/mnt/davdrive"
record rss "$L_RSS" MiB davdrive "$(python3 "$helper" vm-hwm "$dav_pid")"
unmount_davdrive "$work/mnt/davdrive"
cp "$work/cache/davdrive/davdrive.log" "$logs/davdrive.log" 2>/dev/null || true
# A restart must not walk the cache: time a remount over a store holding 100,000 cached
# files (rows added to the state store; their content files are not needed for this).
echo "bench: [davdrive] remount with 100,000 cached files in the state store"
python3 "$helper" fill-state "$work/cache/davdrive/state.db" 100000
t0=$(now)
mount_davdrive "$work/mnt/davdrive" "$work/cache/davdrive"
stat "$work/mnt/davdrive/big.bin" >/dev/null
t1=$(now)
record restart "$L_RESTART" s davdrive "$(elapsed "$t0" "$t1")"
record restart "$L_RESTART" s rclone ""
record restart "$L_RESTART" s local ""
unmount_davdrive "$work/mnt/davdrive"
errs=$(grep -ciE ' (error|warn) ' "$logs/davdrive.log" 2>/dev/null || true)
[ "${errs:-0}" -eq 0 ] || note "davdrive's log has ${errs} ERROR/WARN lines (listed at the end)"

# -- rclone
echo "bench: === rclone ==="
reset_server
rm -rf "$work/cache/rclone"; mkdir -p "$work/cache/rclone"
drop_caches
mount_rclone "$work/mnt/rclone" "$work/cache/rclone"
measure rclone "$work/mnt/rclone"
record rss "$L_RSS" MiB rclone "$(python3 "$helper" vm-hwm "$rclone_pid")"
errs=$(grep -c 'ERROR' "$logs/rclone.log" 2>/dev/null || true)
[ "${errs:-0}" -eq 0 ] || note "rclone's log has ${errs} ERROR lines"
unmount_rclone "$work/mnt/rclone"

# -- local disk
echo "bench: === local disk ==="
cp "$data/read.bin" "$local_dir/big.bin"
python3 "$helper" make-listing "$local_dir/list5000" $list_count
measure local "$local_dir"
record rss "$L_RSS" MiB local ""

note "local 'complete on server' rows are writer + sync (data on the local disk)"
fi

# -- append 1 MiB to a large file on the server that no tool has cached, through a
# relay that counts the bytes on the wire both ways (headers included). davdrive sends
# the new bytes only where the server takes partial updates (Apache does); a tool
# without them fetches the whole file and sends it back.
append_mib=${BENCH_APPEND_MIB:-1024}
append_timeout=600
L_APP_DONE="append 1 MiB to a ${append_mib} MiB file: writer finished"
L_APP_SRV="append 1 MiB to a ${append_mib} MiB file: complete on server"
L_APP_SENT="append 1 MiB to a ${append_mib} MiB file: bytes sent"
L_APP_RECV="append 1 MiB to a ${append_mib} MiB file: bytes received"
head -c $((1024 * 1024)) /dev/urandom >"$data/append.tail"
head -c 65536 /dev/urandom >"$data/append.head"
# Sparse on the server's disk (nothing to wait for), with bytes that are not zeros at
# its start and in its middle.
make_append_base() {
  rm -f "$1"
  truncate -s "${append_mib}M" "$1"
  dd if="$data/append.head" of="$1" conv=notrunc status=none
  dd if="$data/append.head" of="$1" conv=notrunc bs=65536 seek=$((append_mib * 8)) status=none
}
mib_of() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
measure_append() {
  local tool=$1 mnt="$work/mnt/$1" cache="$work/cache/append-$1" counts="$work/counts-$1"
  local want size relay up0 down0 up1 down1 t0 t1 v
  make_append_base "$docroot/append.log"
  chown www-data:www-data "$docroot/append.log"
  want=$(cat "$docroot/append.log" "$data/append.tail" | sha256sum | cut -d' ' -f1)
  size=$(((append_mib + 1) * 1024 * 1024))
  relay=$(python3 "$helper" free-port)
  python3 "$helper" count-proxy "$relay" "$port" "$counts" &
  relay_pid=$!
  for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$relay") 2>/dev/null && break; sleep 0.1; done
  rm -rf "$cache"; mkdir -p "$cache"
  if [ "$tool" = davdrive ]; then
    DAV_URL="http://127.0.0.1:$relay/" mount_davdrive "$mnt" "$cache"
  else
    RCLONE_URL="http://127.0.0.1:$relay/" mount_rclone "$mnt" "$cache"
  fi
  ls -l "$mnt" >/dev/null
  read -r up0 down0 < <(python3 "$helper" counted "$counts")
  echo "bench: [$tool] append 1 MiB to a ${append_mib} MiB file not cached"
  t0=$(now)
  cat "$data/append.tail" >>"$mnt/append.log"
  t1=$(now)
  record append_done "$L_APP_DONE" s "$tool" "$(elapsed "$t0" "$t1")"
  v=$(python3 "$helper" wait-content "$docroot/append.log" "$size" "$want" "$t0" $append_timeout)
  [ "$v" != timeout ] || note "$tool: the appended file was not right on the server after ${append_timeout}s"
  record append_server "$L_APP_SRV" s "$tool" "$v"
  sleep 1 # the last replies pass the relay
  read -r up1 down1 < <(python3 "$helper" counted "$counts")
  record append_sent "$L_APP_SENT" MiB "$tool" "$(mib_of $((up1 - up0)))"
  record append_recv "$L_APP_RECV" MiB "$tool" "$(mib_of $((down1 - down0)))"
  if [ "$tool" = davdrive ]; then
    unmount_davdrive "$mnt"
    cp "$cache/davdrive.log" "$logs/davdrive-append.log" 2>/dev/null || true
  else
    unmount_rclone "$mnt"
  fi
  kill "$relay_pid" 2>/dev/null; wait "$relay_pid" 2>/dev/null || true
  relay_pid=""
  rm -rf "$cache" "$docroot/append.log"
}
echo "bench: === append to a large file ==="
measure_append davdrive
measure_append rclone
make_append_base "$local_dir/append.log"
t0=$(now); cat "$data/append.tail" >>"$local_dir/append.log"; t1=$(now); sync; t2=$(now)
record append_done "$L_APP_DONE" s local "$(elapsed "$t0" "$t1")"
record append_server "$L_APP_SRV" s local "$(elapsed "$t0" "$t2")"
record append_sent "$L_APP_SENT" MiB local ""
record append_recv "$L_APP_RECV" MiB local ""
note "append: bytes on the wire counted by a relay in front of Apache, headers included, from the append until the file was right on the server (+1 s)"
fi

# ---------------------------------------------------------------- report
[ "$mode" = scale ] || note "rclone runs with its default --vfs-write-back 5s (uploads start 5 s after close) and --dir-cache-time 60s --attr-timeout 60s to match davdrive's --dir-ttl 60s --attr-ttl 60s"
rclone_version=$(rclone version 2>/dev/null | sed -n 1p)
apache_version=$(/usr/sbin/apache2 -v 2>/dev/null | sed -n 's/^Server version: //p')
davdrive_version=$("$bin" --version 2>/dev/null || echo "davdrive")
if git_rev=$(GIT_OPTIONAL_LOCKS=0 git -C "$repo" rev-parse --short HEAD 2>/dev/null); then
  if ! GIT_OPTIONAL_LOCKS=0 git -C "$repo" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null; then
    git_rev="$git_rev (with uncommitted changes)"
  fi
else
  git_rev="unknown (not a git checkout)"
fi
kernel="$(uname -sr)"

echo
if [ "$mode" = scale ]; then
  echo "=== davdrive benchmark at scale (sizes in the row names) ==="
else
  if [ "$only" = append ]; then
    echo "=== davdrive benchmark: 1 MiB appended to a ${append_mib} MiB file ==="
  else
    echo "=== davdrive benchmark: $big_mib MiB file, $list_count-entry listing, $small_count small files, 1 MiB appended to a ${append_mib} MiB file ==="
  fi
fi
echo "kernel:   $kernel"
echo "davdrive: $davdrive_version, commit $git_rev"
echo "rclone:   $rclone_version (mount --vfs-cache-mode full)"
echo "apache:   $apache_version (mod_dav + mod_dav_fs on 127.0.0.1:$port)"
echo "disk:     $(df -h --output=source,fstype "$work" | tail -n 1 | awk '{print $1" ("$2")"}') for caches, local baseline and docroot"
echo

meta="$work/meta.json"
KERNEL="$kernel" RCLONE="$rclone_version" APACHE="$apache_version" DAVDRIVE="$davdrive_version" \
GITREV="$git_rev" CANDROP=$can_drop python3 - "$meta" "${notes[@]}" <<'EOF'
import json, os, sys, time
json.dump({
    "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "kernel": os.environ["KERNEL"],
    "davdrive": os.environ["DAVDRIVE"], "davdrive_commit": os.environ["GITREV"],
    "rclone": os.environ["RCLONE"], "apache": os.environ["APACHE"],
    "page_cache_dropped": os.environ["CANDROP"] == "1",
    "notes": sys.argv[2:],
}, open(sys.argv[1], "w"))
EOF
python3 "$helper" report "$results" "$meta" "$out_json" "${SCALE_THIRD:-local}"

if [ -s "$logs/davdrive.log" ]; then
  if grep -qiE ' (error|warn) ' "$logs/davdrive.log"; then
    echo
    echo "davdrive log, ERROR/WARN lines (first 20):"
    grep -iE ' (error|warn) ' "$logs/davdrive.log" | sed -n 1,20p
  fi
fi
echo
echo "results written to $out_json"
