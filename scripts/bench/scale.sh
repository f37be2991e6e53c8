# The scale benchmark, sourced by `scripts/bench.sh --scale` once Apache runs and the
# mount helpers are defined (it uses $work, $docroot, $url, $port, $bin, $helper, record,
# note, drop_caches, mount_davdrive / mount_rclone and their unmounts).
#
# Each case runs on davdrive and on rclone mount (--vfs-cache-mode full), each on a
# fresh mount with an empty cache, and on the limit: `curl` for what crosses the
# network, the local disk for the rest. Sizes (environment, defaults as users have):
#   BENCH_SCALE_TREE=100000 files in BENCH_SCALE_TREE_DIRS=1000 folders (find, du -s)
#   BENCH_SCALE_WIDE=50000 entries in one folder (ls -l)
#   BENCH_SCALE_REREAD=20000 cached small files read again past the attribute TTL
#   BENCH_SCALE_BIG_MIB=4096 one big file: written, read cold, cached, and at random
#   BENCH_SCALE_RANDOM=2000 random 4 KiB reads of the uncached big file
#   BENCH_SCALE_TAR=20000 files unpacked by tar -x
#   BENCH_SCALE_MIGRATE=20000 files migrated (davdrive only: first vs last quarter rate)
#   BENCH_SCALE_SHRINK=40000 entries removed on the server, then `ls` and a cached `cat`
#   BENCH_SCALE_WALK=1000000 inodes walked (find) before reading the daemon's peak RSS
# Both tools run with a 60 s listing TTL and a 10 s attribute TTL (the shrinking and
# slow-server cases with 5 s, so that the change is due within the run).

S_TREE=${BENCH_SCALE_TREE:-100000}
S_TREE_DIRS=${BENCH_SCALE_TREE_DIRS:-1000}
S_WIDE=${BENCH_SCALE_WIDE:-50000}
S_REREAD=${BENCH_SCALE_REREAD:-20000}
S_BIG_MIB=${BENCH_SCALE_BIG_MIB:-4096}
S_RANDOM=${BENCH_SCALE_RANDOM:-2000}
S_TAR=${BENCH_SCALE_TAR:-20000}
S_MIGRATE=${BENCH_SCALE_MIGRATE:-20000}
S_SHRINK=${BENCH_SCALE_SHRINK:-40000}
S_WALK=${BENCH_SCALE_WALK:-1000000}
S_TIMEOUT=${BENCH_SCALE_TIMEOUT:-900}

DAV_TTL_ARGS="--dir-ttl 60s --attr-ttl 10s"
RCLONE_TTL_ARGS="--dir-cache-time 60s --attr-timeout 10s"

echo "bench: generating the scale data in $work (this takes a while)"
python3 "$helper" make-tree "$docroot/tree" "$S_TREE" "$S_TREE_DIRS"
python3 "$helper" make-listing "$docroot/wide" "$S_WIDE"
python3 "$helper" make-tree "$docroot/reread" "$S_REREAD" $(((S_REREAD + 999) / 1000))
python3 "$helper" make-tree "$docroot/walk" "$S_WALK" $(((S_WALK + 999) / 1000))
python3 "$helper" make-small-files "$data/tarfiles" "$S_TAR" >/dev/null
tar -cf "$data/tarfiles.tar" -C "$data" tarfiles
python3 "$helper" make-small-files "$data/migrate-src" "$S_MIGRATE" >/dev/null
head -c $((S_BIG_MIB * 1024 * 1024)) /dev/urandom >"$data/big.bin"
chown -R www-data:www-data "$docroot"
# The local limit: the same trees on the local disk.
cp -r "$docroot/tree" "$docroot/wide" "$docroot/reread" "$local_dir/"

reset_scale_server() {
  rm -rf "$docroot/big.bin" "$docroot/tarfiles" "$docroot/migrated" "$docroot/shrink" \
    "$docroot/keep"
}

L_FIND_COLD="find, ${S_TREE} files in ${S_TREE_DIRS} folders, cold"
L_DU="du -s right after"
L_DU_TTL="du -s after the attribute TTL"
L_FIND_WARM="find, warm"
L_WIDE_COLD="ls -l, ${S_WIDE}-entry folder, cold"
L_WIDE_WARM="ls -l, ${S_WIDE}-entry folder, warm"
L_REREAD="re-read ${S_REREAD} cached small files past the attr TTL"
L_BIG_SRV="write ${S_BIG_MIB} MiB: complete on server"
L_BIG_COLD="cold sequential read, ${S_BIG_MIB} MiB"
L_BIG_CACHED="cached read after drop_caches, ${S_BIG_MIB} MiB"
L_RANDOM="${S_RANDOM} random 4 KiB reads, uncached"
L_TAR_DONE="tar -x ${S_TAR} files: tar finished"
L_TAR_SRV="tar -x ${S_TAR} files: complete on server"
L_MIG_FIRST="migration of ${S_MIGRATE} files: first quarter"
L_MIG_LAST="migration: last quarter"
L_MIG_RATIO="migration: last / first quarter rate"
L_SHRINK_LS="ls after ${S_SHRINK} entries removed on the server"
L_SHRINK_CAT="cached cat during that"
L_SLOW_CAT="cached cat, server at 1 byte/s"
L_SLOW_LS="ls of a known folder, server at 1 byte/s"
L_WALK_RSS="peak RSS after walking ${S_WALK} inodes"

timed() { local t0 t1; t0=$(now); "$@" >/dev/null 2>&1; t1=$(now); elapsed "$t0" "$t1"; }

# Mounts TOOL ("davdrive" or "rclone") at $work/mnt/TOOL with a fresh cache.
scale_mount() {
  local tool=$1 ttl_dav=${2:-$DAV_TTL_ARGS} ttl_rclone=${3:-$RCLONE_TTL_ARGS} target=${4:-$url}
  rm -rf "$work/cache/$tool"; mkdir -p "$work/cache/$tool"
  drop_caches
  if [ "$tool" = davdrive ]; then
    DAV_TTL="$ttl_dav" DAV_URL="$target" mount_davdrive "$work/mnt/davdrive" "$work/cache/davdrive"
  else
    RCLONE_TTL="$ttl_rclone" RCLONE_URL="$target" mount_rclone "$work/mnt/rclone" "$work/cache/rclone"
  fi
}
scale_unmount() {
  local tool=$1
  if [ "$tool" = davdrive ]; then
    record rss_all "peak RSS over the case" MiB davdrive "$(python3 "$helper" vm-hwm "$dav_pid")"
    unmount_davdrive "$work/mnt/davdrive"
  else
    record rss_all "peak RSS over the case" MiB rclone "$(python3 "$helper" vm-hwm "$rclone_pid")"
    unmount_rclone "$work/mnt/rclone"
  fi
}

for tool in davdrive rclone; do
  echo "bench: === $tool, scale ==="
  reset_scale_server
  m="$work/mnt/$tool"

  # Walks of a big tree.
  scale_mount "$tool"
  record find_cold "$L_FIND_COLD" s "$tool" "$(timed find "$m/tree")"
  record du "$L_DU" s "$tool" "$(timed du -s "$m/tree")"
  sleep 12
  record du_ttl "$L_DU_TTL" s "$tool" "$(timed du -s "$m/tree")"
  record find_warm "$L_FIND_WARM" s "$tool" "$(timed find "$m/tree")"
  record wide_cold "$L_WIDE_COLD" s "$tool" "$(timed ls -l "$m/wide")"
  record wide_warm "$L_WIDE_WARM" s "$tool" "$(timed ls -l "$m/wide")"
  python3 "$helper" cat-tree "$m/reread" >/dev/null 2>&1
  sleep 12
  record reread "$L_REREAD" s "$tool" "$(python3 "$helper" cat-tree "$m/reread" 2>/dev/null)"
  scale_unmount "$tool"

  # One big file: written until on the server, then read cold, cached and at random.
  scale_mount "$tool"
  cat "$data/big.bin" >/dev/null
  t0=$(now)
  dd if="$data/big.bin" of="$m/big.bin" bs=1M status=none || note "$tool: dd of the big file failed"
  record big_server "$L_BIG_SRV" s "$tool" \
    "$(python3 "$helper" wait-file "$data/big.bin" "$docroot/big.bin" "$t0" "$S_TIMEOUT")"
  scale_unmount "$tool"
  scale_mount "$tool"
  record big_cold "$L_BIG_COLD" MiB/s "$tool" "$(mibps "$S_BIG_MIB" "$(timed cat "$m/big.bin")")"
  drop_caches
  record big_cached "$L_BIG_CACHED" MiB/s "$tool" "$(mibps "$S_BIG_MIB" "$(timed cat "$m/big.bin")")"
  scale_unmount "$tool"
  scale_mount "$tool"
  record random "$L_RANDOM" s "$tool" "$(python3 "$helper" random-reads "$m/big.bin" "$S_RANDOM" 4096)"
  scale_unmount "$tool"

  # Many small files written at once.
  scale_mount "$tool"
  t0=$(now)
  tar --no-same-owner -xf "$data/tarfiles.tar" -C "$m" || note "$tool: tar -x failed"
  t1=$(now)
  record tar_done "$L_TAR_DONE" s "$tool" "$(elapsed "$t0" "$t1")"
  v=$(python3 "$helper" wait-tree "$data/tarfiles" "$docroot/tarfiles" "$t0" "$S_TIMEOUT" \
    2>"$logs/wait-tree-scale-$tool.err")
  [ "$v" = mismatch ] && note "$tool: the files on the server differ from the tar's: $(head -c 300 "$logs/wait-tree-scale-$tool.err")"
  [ "$v" = timeout ] && note "$tool: the tar's files were not all on the server after ${S_TIMEOUT}s ($(cat "$logs/wait-tree-scale-$tool.err"))"
  record tar_server "$L_TAR_SRV" s "$tool" "$v"
  scale_unmount "$tool"

  # A folder that shrinks on the server, then a server that slows to a byte a second.
  mkdir -p "$docroot/shrink" "$docroot/keep"
  python3 "$helper" make-listing "$docroot/shrink" "$S_SHRINK"
  head -c 65536 /dev/urandom >"$docroot/keep/cached.bin"
  chown -R www-data:www-data "$docroot/shrink" "$docroot/keep"
  slow_port=$(python3 "$helper" free-port)
  rm -f "$work/slow"
  python3 "$helper" slow-proxy "$slow_port" "$port" "$work/slow" &
  proxy_pid=$!
  sleep 0.5
  scale_mount "$tool" "--dir-ttl 5s --attr-ttl 5s" "--dir-cache-time 5s --attr-timeout 5s" \
    "http://127.0.0.1:$slow_port/"
  ls -l "$m/shrink" >/dev/null
  cat "$m/keep/cached.bin" >/dev/null
  find "$docroot/shrink" -mindepth 1 -delete
  sleep 6
  python3 "$helper" time-cmd 300 ls "$m/shrink" >"$work/shrink-ls" &
  ls_pid=$!
  sleep 0.2
  record shrink_cat "$L_SHRINK_CAT" s "$tool" "$(python3 "$helper" time-cmd 300 cat "$m/keep/cached.bin")"
  wait "$ls_pid" || true
  record shrink_ls "$L_SHRINK_LS" s "$tool" "$(cat "$work/shrink-ls")"
  cat "$m/keep/cached.bin" >/dev/null
  touch "$work/slow"
  sleep 6
  record slow_cat "$L_SLOW_CAT" s "$tool" "$(python3 "$helper" time-cmd 120 cat "$m/keep/cached.bin")"
  record slow_ls "$L_SLOW_LS" s "$tool" "$(python3 "$helper" time-cmd 120 ls "$m/keep")"
  rm -f "$work/slow"
  kill "$proxy_pid" 2>/dev/null; wait "$proxy_pid" 2>/dev/null || true
  if [ "$tool" = davdrive ]; then
    "$bin" unmount "$m" >/dev/null 2>&1 || fusermount3 -u -z "$m"
    for _ in $(seq 100); do pid_alive "$dav_pid" || break; sleep 0.1; done
    pid_alive "$dav_pid" && kill "$dav_pid"
    dav_pid=""
  else
    fusermount3 -u -z "$m" 2>/dev/null || true
    kill "$rclone_pid" 2>/dev/null; wait "$rclone_pid" 2>/dev/null || true
    rclone_pid=""
  fi

  # Memory after a walk of many inodes.
  scale_mount "$tool"
  find "$m/walk" >/dev/null
  if [ "$tool" = davdrive ]; then
    record walk_rss "$L_WALK_RSS" MiB davdrive "$(python3 "$helper" vm-hwm "$dav_pid")"
  else
    record walk_rss "$L_WALK_RSS" MiB rclone "$(python3 "$helper" vm-hwm "$rclone_pid")"
  fi
  scale_unmount "$tool"
done

# Migration (davdrive only): does the rate hold up as the store grows?
echo "bench: === davdrive, migration ==="
scale_mount davdrive
read -r mig_first mig_last mig_total < <(python3 "$helper" migrate-rates "$bin" "$work/mnt/davdrive" \
  "$data/migrate-src" migrated "$S_MIGRATE" "$S_TIMEOUT")
record mig_first "$L_MIG_FIRST" files/s davdrive "$mig_first"
record mig_last "$L_MIG_LAST" files/s davdrive "$mig_last"
record mig_ratio "$L_MIG_RATIO" ratio davdrive \
  "$(awk -v a="$mig_last" -v b="$mig_first" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')"
scale_unmount davdrive

# The limits: curl for the network, the local disk for the rest.
echo "bench: === limits ==="
drop_caches
record big_cold "$L_BIG_COLD" MiB/s limit "$(mibps "$S_BIG_MIB" "$(timed curl -sf -o /dev/null "${url}big.bin")")"
drop_caches
record big_cached "$L_BIG_CACHED" MiB/s limit "$(mibps "$S_BIG_MIB" "$(timed cat "$data/big.bin")")"
t0=$(now); curl -sf -o /dev/null -T "$data/big.bin" "${url}curl-put.bin"; t1=$(now)
record big_server "$L_BIG_SRV" s limit "$(elapsed "$t0" "$t1")"
rm -f "$docroot/curl-put.bin"
drop_caches
record find_cold "$L_FIND_COLD" s limit "$(timed find "$local_dir/tree")"
record du "$L_DU" s limit "$(timed du -s "$local_dir/tree")"
record find_warm "$L_FIND_WARM" s limit "$(timed find "$local_dir/tree")"
record wide_warm "$L_WIDE_WARM" s limit "$(timed ls -l "$local_dir/wide")"
record reread "$L_REREAD" s limit "$(python3 "$helper" cat-tree "$local_dir/reread" 2>/dev/null)"
# Uncached reads cross the network: their limit is the server answering the same
# ranged GETs to a bare HTTP client, its page cache dropped as for the mounts.
drop_caches
record random "$L_RANDOM" s limit "$(python3 "$helper" random-gets "${url}big.bin" "$S_RANDOM" 4096)"
t0=$(now); mkdir -p "$local_dir/tar"; tar -xf "$data/tarfiles.tar" -C "$local_dir/tar"; sync; t1=$(now)
record tar_server "$L_TAR_SRV" s limit "$(elapsed "$t0" "$t1")"

note "scale run: both tools with a 60 s listing TTL and 10 s attribute TTL (5 s for the shrinking-folder and slow-server rows); limit = curl for the big file's network rows, a bare HTTP client's ranged GETs for the random reads, the local disk otherwise"
# Cold ranged GETs cost the server a read of its disk's read-ahead around each range
# (Apache maps the file; a fault reads that much around it): with 8 MiB, about 1.6 ms a
# GET against 0.25 ms with the usual 128 KiB, which bounds every client's random reads.
ra_dev=$(df --output=source "$docroot" | tail -1)
ra_kb=$(cat "/sys/class/block/$(basename "$ra_dev")/queue/read_ahead_kb" 2>/dev/null || echo unknown)
note "the server's disk ($ra_dev) reads ahead ${ra_kb} KiB: cold random GETs cost the server that much each; the random-reads limit row shows what a bare client gets from it"
note "slow server: a relay that passes requests at full speed and replies at 1 byte/s; 'timeout' means the command was still blocked at the limit (120 s)"
SCALE_THIRD=limit
