#!/usr/bin/env bash
# Runs davdrive's end-to-end suite (real FUSE mounts: tests/drive.rs, tests/offline.rs,
# tests/interop.rs) against the WebDAV servers people run, each started here on
# 127.0.0.1: davdrive's own test server (dav-server), Apache with mod_dav, nginx with the
# dav-ext module, and `rclone serve webdav`. Prints a table of server x check and exits
# non-zero when a check fails anywhere.
#
# INTEROP_SERVERS="apache nginx" limits the servers; INTEROP_FILTER=name limits the
# checks to those whose name contains it; INTEROP_LOGS=DIR keeps each server's test
# output there. Run as root (Apache runs as www-data).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

servers=${INTEROP_SERVERS:-"dav-server apache nginx rclone"}
filter=${INTEROP_FILTER:-}
[ "$(id -u)" -eq 0 ] || { echo "interop: run as root" >&2; exit 1; }

# ---------------------------------------------------------------- packages
need=()
{ [ -x /usr/sbin/apache2 ] && [ -e /usr/lib/apache2/modules/mod_dav_fs.so ]; } || need+=(apache2)
{ [ -x /usr/sbin/nginx ] && [ -e /usr/lib/nginx/modules/ngx_http_dav_ext_module.so ]; } || need+=(nginx libnginx-mod-http-dav-ext)
command -v rclone >/dev/null 2>&1 || need+=(rclone)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
if [ ${#need[@]} -gt 0 ]; then
  echo "interop: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Keep the packages from starting system-wide servers on port 80: each server here
  # runs on its own port on 127.0.0.1, started and stopped by this script.
  made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    made_policy=1
  fi
  apt-get update -qq
  apt_rc=0
  apt-get install -y -qq "${need[@]}" >/dev/null || apt_rc=$?
  [ $made_policy -eq 0 ] || rm -f /usr/sbin/policy-rc.d
  [ $apt_rc -eq 0 ] || { echo "interop: apt-get install ${need[*]} failed" >&2; exit 1; }
fi

export CARGO_TERM_COLOR=never
cargo build --locked --tests -j "$(nproc)" >/dev/null

work=$(mktemp -d /tmp/davdrive-interop.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
  if [ -n "${INTEROP_LOGS:-}" ]; then
    mkdir -p "$INTEROP_LOGS"
    cp "$work"/*.out "$INTEROP_LOGS"/ 2>/dev/null || true
  fi
  for p in "${pids[@]}"; do
    kill "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Waits until URL answers PROPFIND with 207 (a WebDAV server is up).
wait_dav() {
  local url=$1 pid=$2 log=$3
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || break
    if python3 - "$url" <<'EOF' 2>/dev/null
import sys, urllib.request
req = urllib.request.Request(sys.argv[1], method="PROPFIND", headers={"Depth": "0"})
with urllib.request.urlopen(req, timeout=5) as r:
    sys.exit(0 if r.status == 207 else 1)
EOF
    then return 0; fi
    sleep 0.1
  done
  echo "interop: no WebDAV server came up at $url; its log:" >&2
  tail -n 30 "$log" >&2 || true
  return 1
}

# Starts server $1; sets url and root (the folder the URL serves).
start_apache() {
  local d="$work/apache" port mods=/usr/lib/apache2/modules
  port=$(free_port)
  mkdir -p "$d/root" "$d/run" "$d/lock"
  chmod 777 "$d/root"
  chown www-data:www-data "$d/lock"
  cat >"$d/httpd.conf" <<EOF
ServerRoot /etc/apache2
ServerName 127.0.0.1
Listen 127.0.0.1:$port
LoadModule mpm_event_module $mods/mod_mpm_event.so
LoadModule authz_core_module $mods/mod_authz_core.so
LoadModule alias_module $mods/mod_alias.so
LoadModule dav_module $mods/mod_dav.so
LoadModule dav_fs_module $mods/mod_dav_fs.so
User www-data
Group www-data
PidFile $d/httpd.pid
DefaultRuntimeDir $d/run
Mutex file:$d/run default
ErrorLog $d/error.log
LogLevel warn
DavLockDB $d/lock/DavLock
LimitRequestBody 0
KeepAlive On
MaxKeepAliveRequests 0
<Directory />
  Require all denied
</Directory>
Alias /dav $d/root
<Directory $d/root>
  Dav On
  Require all granted
</Directory>
EOF
  /usr/sbin/apache2 -f "$d/httpd.conf" -DFOREGROUND >"$d/stdout.log" 2>&1 &
  pids+=($!)
  url="http://127.0.0.1:$port/dav/"
  root="$d/root"
  wait_dav "$url" $! "$d/error.log"
}

start_nginx() {
  local d="$work/nginx" port
  port=$(free_port)
  mkdir -p "$d/www/dav" "$d/tmp"
  cat >"$d/nginx.conf" <<EOF
load_module /usr/lib/nginx/modules/ngx_http_dav_ext_module.so;
daemon off;
master_process off;
worker_processes 1;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 512; }
http {
  access_log off;
  client_body_temp_path $d/tmp/body;
  proxy_temp_path $d/tmp/proxy;
  fastcgi_temp_path $d/tmp/fastcgi;
  uwsgi_temp_path $d/tmp/uwsgi;
  scgi_temp_path $d/tmp/scgi;
  server {
    listen 127.0.0.1:$port;
    client_max_body_size 0;
    location /dav/ {
      root $d/www;
      dav_methods PUT DELETE MKCOL COPY MOVE;
      dav_ext_methods PROPFIND OPTIONS;
      create_full_put_path on;
      dav_access user:rw group:rw all:rw;
    }
  }
}
EOF
  /usr/sbin/nginx -c "$d/nginx.conf" -p "$d" >"$d/stdout.log" 2>&1 &
  pids+=($!)
  url="http://127.0.0.1:$port/dav/"
  root="$d/www/dav"
  wait_dav "$url" $! "$d/error.log"
}

start_rclone() {
  local d="$work/rclone" port
  port=$(free_port)
  mkdir -p "$d/root"
  # Tests change files on the server's disk behind its back: a short directory cache
  # (with none, rclone lists a folder of 2,000 files in 80 s instead of 0.1 s).
  rclone serve webdav "$d/root" --addr "127.0.0.1:$port" --dir-cache-time 1s \
    --poll-interval 0 --config /dev/null --log-file "$d/rclone.log" >/dev/null 2>&1 &
  pids+=($!)
  url="http://127.0.0.1:$port/"
  root="$d/root"
  wait_dav "$url" $! "$d/rclone.log"
}

declare -A result
checks=()
failed=0
for server in $servers; do
  url=""
  root=""
  case $server in
    dav-server) ;;
    apache) start_apache ;;
    nginx) start_nginx ;;
    rclone) start_rclone ;;
    *) echo "interop: unknown server $server" >&2; exit 1 ;;
  esac
  echo "interop: $server ${url:-(the built-in test server)}"
  out="$work/$server.out"
  rc=0
  env ${url:+DAVDRIVE_TEST_SERVER_URL=$url} ${root:+DAVDRIVE_TEST_SERVER_ROOT=$root} \
    cargo test --locked --no-fail-fast --test drive --test offline -- --test-threads=2 $filter \
    >"$out" 2>&1 || rc=$?
  while read -r name verdict; do
    checks+=("$name")
    result[$name,$server]=$verdict
  done < <(sed -n 's/^test \([a-z0-9_]*\) \.\.\. \(ok\|FAILED\)$/\1 \2/p' "$out")
  if [ $rc -ne 0 ]; then
    failed=1
    grep -q "^test .* \.\.\. \(ok\|FAILED\)" "$out" || { echo "interop: $server: the suite did not run:" >&2; tail -n 30 "$out" >&2; }
    # The failures' own messages, for the log.
    sed -n '/^failures:$/,/^test result/p' "$out" | head -n 200
  fi
done

# ---------------------------------------------------------------- table
mapfile -t checks < <(printf '%s\n' "${checks[@]}" | sort -u)
printf '\n%-72s' "check"
for s in $servers; do printf ' %-10s' "$s"; done
printf '\n'
for c in "${checks[@]}"; do
  printf '%-72s' "$c"
  for s in $servers; do
    v=${result[$c,$s]:-missing}
    [ "$v" = ok ] && v=pass
    [ "$v" = FAILED ] && v=FAIL
    [ "$v" = pass ] || failed=1
    printf ' %-10s' "$v"
  done
  printf '\n'
done
if [ $failed -ne 0 ]; then
  echo "interop: FAILED" >&2
  exit 1
fi
echo "interop: all pass"
