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
apt_install interop "${need[@]}"

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
  tls_port=$(free_port)
  mkdir -p "$d/root" "$d/digest" "$d/run" "$d/lock" "$d/tls"
  chmod 777 "$d/root" "$d/digest"
  chown www-data:www-data "$d/lock"
  # htdigest's format, user:realm:md5(user:realm:password), without its prompt.
  printf 'tester:davdrive-test:%s\n' \
    "$(printf 'tester:davdrive-test:digest-pw-1' | md5sum | cut -d' ' -f1)" >"$d/digest.pw"
  chmod 644 "$d/digest.pw"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=davdrive test CA" \
    -keyout "$d/tls/ca.key" -out "$d/tls/ca.pem" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$d/tls/server.key" -out "$d/tls/server.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1\n' >"$d/tls/ext"
  openssl x509 -req -in "$d/tls/server.csr" -CA "$d/tls/ca.pem" -CAkey "$d/tls/ca.key" \
    -CAcreateserial -days 2 -extfile "$d/tls/ext" -out "$d/tls/server.pem" 2>/dev/null
  chmod 644 "$d/tls/server.key"
  cat >"$d/httpd.conf" <<EOF
ServerRoot /etc/apache2
ServerName 127.0.0.1
Listen 127.0.0.1:$port
LoadModule mpm_event_module $mods/mod_mpm_event.so
LoadModule authz_core_module $mods/mod_authz_core.so
LoadModule alias_module $mods/mod_alias.so
LoadModule dav_module $mods/mod_dav.so
LoadModule dav_fs_module $mods/mod_dav_fs.so
LoadModule authn_core_module $mods/mod_authn_core.so
LoadModule authn_file_module $mods/mod_authn_file.so
LoadModule authz_user_module $mods/mod_authz_user.so
LoadModule auth_digest_module $mods/mod_auth_digest.so
LoadModule ssl_module $mods/mod_ssl.so
LoadModule socache_shmcb_module $mods/mod_socache_shmcb.so
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
# Digest authentication (mod_auth_digest) on a folder of its own.
Alias /digest $d/digest
<Directory $d/digest>
  Dav On
  AuthType Digest
  AuthName "davdrive-test"
  AuthDigestProvider file
  AuthUserFile $d/digest.pw
  Require valid-user
</Directory>
# TLS with a certificate from a CA made here.
Listen 127.0.0.1:$tls_port
SSLSessionCache shmcb:$d/run/ssl_scache(512000)
<VirtualHost 127.0.0.1:$tls_port>
  SSLEngine on
  SSLCertificateFile $d/tls/server.pem
  SSLCertificateKeyFile $d/tls/server.key
</VirtualHost>
EOF
  /usr/sbin/apache2 -f "$d/httpd.conf" -DFOREGROUND >"$d/stdout.log" 2>&1 &
  pids+=($!)
  url="http://127.0.0.1:$port/dav/"
  root="$d/root"
  port_of_apache=$port
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

bin="$(realpath "${CARGO_TARGET_DIR:-target}")/debug/davdrive"

# One check beyond the test suite: records pass/FAIL for server $1 under name $2.
record() {
  checks+=("$2")
  if [ "$3" = ok ]; then result[$2,$1]=ok; else result[$2,$1]=FAILED; echo "interop: $1: $2 failed: $4" >&2; fi
}

# Mounts URL ($1) with extra flags, writes a file, and checks it arrived in $2 (the
# server's folder). Prints nothing; returns non-zero with a reason on stderr.
mount_write_check() {
  local url=$1 served=$2; shift 2
  local m="$work/m.$RANDOM"
  mkdir -p "$m/mnt"
  if ! "$bin" mount "$url" "$m/mnt" --cache-dir "$m/cache" --daemon "$@" 2>"$m/err"; then
    echo "mount failed: $(cat "$m/err")" >&2; return 1
  fi
  echo "written through davdrive" >"$m/mnt/check.txt"
  local ok=1
  for _ in $(seq 100); do
    if [ "$(cat "$served/check.txt" 2>/dev/null)" = "written through davdrive" ]; then ok=0; break; fi
    sleep 0.1
  done
  [ "$(cat "$m/mnt/check.txt")" = "written through davdrive" ] || ok=1
  "$bin" unmount "$m/mnt" || ok=1
  [ $ok -eq 0 ] || echo "the file did not reach the server" >&2
  return $ok
}

# A mount that must fail with one line holding $1 and not $2.
mount_fails_with() {
  local want=$1 secret=$2 url=$3; shift 3
  local m="$work/m.$RANDOM" out
  mkdir -p "$m/mnt"
  if out=$("$bin" mount "$url" "$m/mnt" --cache-dir "$m/cache" --daemon "$@" 2>&1); then
    "$bin" unmount "$m/mnt"; echo "the mount succeeded" >&2; return 1
  fi
  [ "$(printf '%s\n' "$out" | wc -l)" -eq 1 ] || { echo "not one line: $out" >&2; return 1; }
  printf '%s' "$out" | grep -q "$want" || { echo "no '$want' in: $out" >&2; return 1; }
  if [ -n "$secret" ] && printf '%s' "$out" | grep -q "$secret"; then
    echo "the secret shows: $out" >&2; return 1
  fi
}

# Apache only: Digest authentication and TLS with a private CA.
apache_checks() {
  local d="$work/apache" r
  printf 'digest-pw-1\n' >"$work/pw.right"
  printf 'digest-pw-WRONG\n' >"$work/pw.wrong"
  r=ok; mount_write_check "http://127.0.0.1:$port_of_apache/digest/" "$d/digest" \
    --user tester --password-file "$work/pw.right" || r=fail
  record apache auth_digest_mount_and_write "$r"
  r=ok; mount_fails_with "authentication failed" "digest-pw-WRONG" \
    "http://127.0.0.1:$port_of_apache/digest/" --user tester --password-file "$work/pw.wrong" || r=fail
  record apache auth_digest_wrong_password_one_line "$r"
  mkdir -p "$d/root/tls"; chmod 777 "$d/root/tls"
  r=ok; mount_write_check "https://127.0.0.1:$tls_port/dav/tls/" "$d/root/tls" \
    --ca-cert "$d/tls/ca.pem" || r=fail
  record apache tls_private_ca_with_ca_cert "$r"
  r=ok; mount_fails_with "certificate" "" "https://127.0.0.1:$tls_port/dav/tls/" || r=fail
  record apache tls_untrusted_certificate_one_line "$r"
}

declare -A result
checks=()
meta_checks=$(grep -A1 '^#\[test\]' tests/metadata.rs | sed -n 's/^fn \([a-z0-9_]*\).*/\1/p' | tr '\n' ' ')
partial_checks=$(grep -A1 '^#\[test\]' tests/partial.rs | sed -n 's/^fn \([a-z0-9_]*\).*/\1/p' | tr '\n' ' ')
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
  # rclone keeps a listing it served for --dir-cache-time (1 s here): the tests, which
  # write into its folder behind its back, wait that long after mounting.
  cache_ms=""
  [ "$server" = rclone ] && cache_ms=1100
  # Metadata as dead properties (tests/metadata.rs) on the servers that keep them; the
  # file's own tests of a server without them run against the built-in one.
  suites="--test drive --test offline"
  # Metadata, and partial updates (tests/partial.rs: a change to a large file sends only
  # its ranges), on the servers that take them.
  case $server in dav-server|apache) suites="$suites --test metadata --test partial" ;; esac
  env ${url:+DAVDRIVE_TEST_SERVER_URL=$url} ${root:+DAVDRIVE_TEST_SERVER_ROOT=$root} \
    ${cache_ms:+DAVDRIVE_TEST_SERVER_DIR_CACHE_MS=$cache_ms} \
    cargo test --locked --no-fail-fast $suites -- --test-threads=2 $filter \
    >"$out" 2>&1 || rc=$?
  while read -r name verdict; do
    checks+=("$name")
    result[$name,$server]=$verdict
  done < <(sed -n 's/^test \([a-z0-9_]*\) \.\.\. \(ok\|FAILED\)$/\1 \2/p' "$out")
  if [ "$server" = apache ]; then
    apache_checks
  fi
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
    # The auth and TLS checks are made against Apache only; the metadata and partial
    # update checks against the servers that keep dead properties and take partial
    # updates.
    case $c in auth_*|tls_*) [ "$s" = apache ] || v=n/a ;; esac
    case " $meta_checks $partial_checks " in *" $c "*) [ "$s" = apache ] || [ "$s" = dav-server ] || v=n/a ;; esac
    [ "$v" = ok ] && v=pass
    [ "$v" = FAILED ] && v=FAIL
    [ "$v" = pass ] || [ "$v" = n/a ] || failed=1
    printf ' %-10s' "$v"
  done
  printf '\n'
done
if [ $failed -ne 0 ]; then
  echo "interop: FAILED" >&2
  exit 1
fi
echo "interop: all pass"
