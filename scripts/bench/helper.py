#!/usr/bin/env python3
"""Small helpers for scripts/bench.sh: test data, polling the server's docroot, and the
results table / JSON."""
import filecmp
import json
import os
import random
import socket
import subprocess
import sys
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    print(port)


def make_listing(dest, count):
    """COUNT small files in DEST (a directory to list)."""
    os.makedirs(dest, exist_ok=True)
    for i in range(int(count)):
        with open(os.path.join(dest, f"entry-{i:05d}.txt"), "wb") as f:
            f.write(b"x" * (i % 97))


def make_small_files(dest, count):
    """COUNT files of 1-8 KiB of random bytes under DEST, spread over 8 subdirectories."""
    rnd = random.Random(20240601)
    count = int(count)
    total = 0
    for i in range(count):
        sub = os.path.join(dest, f"dir{i % 8}")
        os.makedirs(sub, exist_ok=True)
        size = rnd.randint(1024, 8192)
        total += size
        with open(os.path.join(sub, f"file-{i:05d}.bin"), "wb") as f:
            f.write(os.urandom(size))
    print(total)


def manifest(root):
    out = {}
    for d, _, files in os.walk(root):
        for n in files:
            p = os.path.join(d, n)
            out[os.path.relpath(p, root)] = os.path.getsize(p)
    return out


def wait_file(src, dst, start, timeout):
    """Poll until DST has SRC's size and bytes. Prints seconds since START (a
    `date +%s.%N` stamp) to the poll that found it so, or 'timeout'. Comparing a large
    file takes seconds of its own, which are not the tool's: DST counts as complete when
    that comparison began, provided it did not change while it was compared."""
    start, timeout = float(start), float(timeout)
    want = os.path.getsize(src)

    def stamp(st):
        return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    while True:
        polled = time.time()
        try:
            before = os.stat(dst)
            if (
                before.st_size == want
                and filecmp.cmp(src, dst, shallow=False)
                and stamp(os.stat(dst)) == stamp(before)
            ):
                print(f"{polled - start:.3f}")
                return
        except OSError:
            pass
        if time.time() - start > timeout:
            print("timeout")
            return
        time.sleep(0.1)


def wait_tree(src, dst, start, timeout):
    """Poll until every file of SRC is in DST with its size (count and total bytes
    match), then check the contents with `diff -r` (Apache's `.DAV` property folders
    left out). Prints seconds since START, or
    'timeout' / 'mismatch'."""
    start, timeout = float(start), float(timeout)
    want = manifest(src)
    want_bytes = sum(want.values())
    while True:
        have = 0
        have_bytes = 0
        for rel, size in want.items():
            try:
                s = os.path.getsize(os.path.join(dst, rel))
            except OSError:
                continue
            if s == size:
                have += 1
                have_bytes += s
        if have == len(want) and have_bytes == want_bytes:
            done = time.time() - start
            # Apache keeps dead properties (davdrive's mode and times) in `.DAV` folders
            # beside the files: the server's bookkeeping, not part of the tree.
            r = subprocess.run(["diff", "-r", "-q", "-x", ".DAV", src, dst],
                               capture_output=True, text=True)
            if r.returncode == 0:
                print(f"{done:.3f}")
                return
            if time.time() - start > timeout:
                sys.stderr.write(r.stdout[-2000:] + r.stderr[-2000:])
                print("mismatch")
                return
        elif time.time() - start > timeout:
            sys.stderr.write(f"{have} of {len(want)} files complete on the server\n")
            print("timeout")
            return
        time.sleep(0.1)


def vm_hwm(pid):
    """Peak RSS of PID in MiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                print(f"{int(line.split()[1]) / 1024:.1f}")
                return
    print("n/a")


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def jval(v):
    """A number, a marker such as 'timeout', or None for not measured."""
    if v in (None, ""):
        return None
    return num(v) if num(v) is not None else v


def fmt(v, digits):
    x = num(v)
    if x is None:
        return "n/a" if v in (None, "") else str(v)
    return f"{x:.{digits}f}"


def ratio(a, b):
    a, b = num(a), num(b)
    if a is None or b is None or b == 0:
        return None
    return a / b


def report(results_tsv, meta_json, out_json, third="local"):
    """RESULTS_TSV: lines `key<TAB>label<TAB>unit<TAB>tool<TAB>value`. Prints the table
    and writes OUT_JSON."""
    rows = {}
    order = []
    for line in open(results_tsv):
        key, label, unit, tool, value = line.rstrip("\n").split("\t")
        if key not in rows:
            rows[key] = {"measurement": label, "unit": unit}
            order.append(key)
        rows[key][tool] = value
    meta = json.load(open(meta_json))

    head = ["measurement", "unit", "davdrive", "rclone", third, "davdrive/rclone", f"davdrive/{third}"]
    table = []
    out_rows = []
    for key in order:
        r = rows[key]
        d, rc, lo = r.get("davdrive"), r.get("rclone"), r.get(third)
        digits = 1 if r["unit"] in ("MiB/s", "MiB") else 3
        rr, rl = ratio(d, rc), ratio(d, lo)
        table.append([r["measurement"], r["unit"], fmt(d, digits), fmt(rc, digits), fmt(lo, digits),
                      "n/a" if rr is None else f"{rr:.2f}", "n/a" if rl is None else f"{rl:.2f}"])
        out_rows.append({
            "key": key, "measurement": r["measurement"], "unit": r["unit"],
            "higher_is_better": r["unit"] == "MiB/s",
            "davdrive": jval(d), "rclone": jval(rc), third: jval(lo),
            "davdrive_over_rclone": None if rr is None else round(rr, 3),
            "davdrive_over_local": None if rl is None else round(rl, 3),
        })
    widths = [max(len(str(c)) for c in col) for col in zip(head, *table)]
    line = lambda cells: "  ".join(
        (c.ljust(w) if i < 2 else c.rjust(w)) for i, (c, w) in enumerate(zip(cells, widths)))
    print(line(head))
    print(line(["-" * w for w in widths]))
    for t in table:
        print(line(t))
    print()
    print("MiB/s rows: higher is better (ratio > 1 means davdrive is faster).")
    print("s and MiB rows: lower is better (ratio < 1 means davdrive is faster / smaller).")
    for n in meta.get("notes", []):
        print("note: " + n)
    with open(out_json, "w") as f:
        json.dump({**meta, "results": out_rows}, f, indent=2)
        f.write("\n")


def fill_state(db, count):
    """Adds `count` cached clean files (one directory) to a davdrive state store, as a
    long-used cache would hold, to time a restart over them."""
    import sqlite3

    count = int(count)
    c = sqlite3.connect(db)
    c.execute(
        "INSERT INTO nodes (parent, name, kind, size, mode, uid, gid, on_remote, last_access, "
        "listed_at) VALUES (1, 'restart-bench', 1, 0, 493, 0, 0, 1, 0, 0)"
    )
    parent = c.execute("SELECT max(ino) FROM nodes").fetchone()[0]
    c.executemany(
        "INSERT INTO nodes (parent, name, kind, size, mode, uid, gid, etag, on_remote, "
        "cached_bytes, content_etag, last_access) VALUES (?, ?, 0, 4096, 420, 0, 0, ?, 1, 4096, ?, 0)",
        ((parent, "f%06d" % i, '"e%d"' % i, '"e%d"' % i) for i in range(count)),
    )
    c.commit()
    c.close()


def make_tree(dest, files, dirs):
    """FILES small files (16-256 bytes) spread evenly over DIRS folders under DEST."""
    files, dirs = int(files), int(dirs)
    per = max(1, -(-files // dirs))
    rnd = random.Random(7)
    for i in range(files):
        sub = os.path.join(dest, f"d{i // per:04d}")
        if i % per == 0:
            os.makedirs(sub, exist_ok=True)
        with open(os.path.join(sub, f"f{i:07d}"), "wb") as f:
            f.write(b"y" * rnd.randint(16, 256))


def cat_tree(root):
    """Reads every file under ROOT (sorted walk); prints the seconds it took."""
    t0 = time.time()
    n = 0
    for d, subdirs, files in os.walk(root):
        subdirs.sort()
        for name in sorted(files):
            with open(os.path.join(d, name), "rb") as f:
                while f.read(1 << 20):
                    pass
            n += 1
    print(f"{time.time() - t0:.3f}")
    sys.stderr.write(f"read {n} files\n")


def random_reads(path, count, block):
    """COUNT reads of BLOCK bytes at random aligned offsets of PATH (fixed seed); prints
    the seconds they took."""
    count, block = int(count), int(block)
    size = os.path.getsize(path)
    rnd = random.Random(4096)
    offsets = [rnd.randrange(0, size // block) * block for _ in range(count)]
    t0 = time.time()
    fd = os.open(path, os.O_RDONLY)
    try:
        for off in offsets:
            if len(os.pread(fd, block, off)) != block:
                raise SystemExit(f"short read at {off}")
    finally:
        os.close(fd)
    print(f"{time.time() - t0:.3f}")


def random_gets(url, count, block):
    """The network's share of `random-reads`: the same COUNT ranged GETs of BLOCK bytes
    of URL (same seed, so the same offsets), one at a time over one kept-alive
    connection, as a bare HTTP client sends them; prints the seconds they took."""
    import http.client
    import urllib.parse

    count, block = int(count), int(block)
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=60)
    conn.request("HEAD", u.path)
    reply = conn.getresponse()
    reply.read()
    size = int(reply.getheader("Content-Length"))
    rnd = random.Random(4096)
    offsets = [rnd.randrange(0, size // block) * block for _ in range(count)]
    t0 = time.time()
    for off in offsets:
        conn.request("GET", u.path, headers={"Range": f"bytes={off}-{off + block - 1}"})
        reply = conn.getresponse()
        if reply.status != 206 or len(reply.read()) != block:
            raise SystemExit(f"range GET at {off}: HTTP {reply.status}")
    conn.close()
    print(f"{time.time() - t0:.3f}")


def time_cmd(timeout, *cmd):
    """Runs CMD; prints its seconds, or 'timeout' when it ran longer than TIMEOUT (it is
    then left running in the background, as a blocked reader would be)."""
    t0 = time.time()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        p.wait(timeout=float(timeout))
        print(f"{time.time() - t0:.3f}")
    except subprocess.TimeoutExpired:
        print("timeout")


def slow_proxy(listen_port, upstream_port, switch_file):
    """A TCP relay from 127.0.0.1:LISTEN_PORT to 127.0.0.1:UPSTREAM_PORT. While
    SWITCH_FILE exists, replies trickle to the client at one byte per second (requests
    pass at full speed): a server that has become very slow. Runs until killed."""
    import threading

    listen_port, upstream_port = int(listen_port), int(upstream_port)

    def pump(src, dst, slow):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if slow and os.path.exists(switch_file):
                    for i in range(len(data)):
                        dst.sendall(data[i:i + 1])
                        time.sleep(1)
                else:
                    dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", listen_port))
    srv.listen(256)
    while True:
        client, _ = srv.accept()
        up = socket.create_connection(("127.0.0.1", upstream_port))
        threading.Thread(target=pump, args=(client, up, False), daemon=True).start()
        threading.Thread(target=pump, args=(up, client, True), daemon=True).start()


def count_proxy(listen_port, upstream_port, counts_file):
    """A TCP relay from 127.0.0.1:LISTEN_PORT to 127.0.0.1:UPSTREAM_PORT that counts the
    bytes passing each way (headers included: bytes on the wire) and keeps the totals
    in COUNTS_FILE as `to_server from_server`, rewritten every 0.1 s. Runs until
    killed."""
    import threading

    listen_port, upstream_port = int(listen_port), int(upstream_port)
    totals = [0, 0]
    lock = threading.Lock()

    def pump(src, dst, way):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                with lock:
                    totals[way] += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def keep():
        last = None
        while True:
            with lock:
                now = f"{totals[0]} {totals[1]}\n"
            if now != last:
                tmp = counts_file + ".tmp"
                with open(tmp, "w") as f:
                    f.write(now)
                os.replace(tmp, counts_file)
                last = now
            time.sleep(0.1)

    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", listen_port))
    srv.listen(256)
    threading.Thread(target=keep, daemon=True).start()
    while True:
        client, _ = srv.accept()
        up = socket.create_connection(("127.0.0.1", upstream_port))
        threading.Thread(target=pump, args=(client, up, 0), daemon=True).start()
        threading.Thread(target=pump, args=(up, client, 1), daemon=True).start()


def counted(counts_file):
    """Prints what a count-proxy has passed so far: `to_server from_server` (0 0 before
    its first count)."""
    try:
        with open(counts_file) as f:
            print(f.read().strip() or "0 0")
    except OSError:
        print("0 0")


def wait_content(path, size, sha256, start, timeout):
    """Poll until PATH has SIZE bytes and the SHA-256 SHA256. Prints seconds since START,
    or 'timeout'."""
    import hashlib

    size, start, timeout = int(size), float(start), float(timeout)
    checked = None
    while True:
        try:
            st = os.stat(path)
            if st.st_size == size and (st.st_mtime_ns, st.st_ino) != checked:
                done = time.time() - start
                h = hashlib.sha256()
                with open(path, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        h.update(block)
                if h.hexdigest() == sha256:
                    print(f"{done:.3f}")
                    return
                checked = (st.st_mtime_ns, st.st_ino)
        except OSError:
            pass
        if time.time() - start > timeout:
            print("timeout")
            return
        time.sleep(0.1)


def migrate_rates(bin_path, mount, src, dest, total, timeout):
    """Starts `ctl migrate` of SRC to DEST and polls its status; prints the files per
    second of the first and of the last quarter of the files, and the total seconds."""
    total, timeout = int(total), float(timeout)
    r = subprocess.run([bin_path, "ctl", "--mount", mount, "migrate", "start", "--json", src,
                        dest], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"migrate start failed: {r.stdout} {r.stderr}")
    # Asked by id: without one, status leaves out migrations that have ended.
    mig_id = str(json.loads(r.stdout)["result"]["id"])
    t0 = time.time()
    marks = {}
    quarter = max(1, total // 4)
    done = 0
    while time.time() - t0 < timeout:
        r = subprocess.run([bin_path, "ctl", "--mount", mount, "migrate", "status", "--json",
                            mig_id],
                           capture_output=True, text=True)
        try:
            # The reply is {"ok": .., "result": [migration, ..], "version": ..}.
            st = json.loads(r.stdout)
            items = st["result"] if isinstance(st, dict) and "result" in st else st
            items = items if isinstance(items, list) else [items]
            m = items[-1]
            files = m.get("files", {})
            done = int(files.get("done", 0)) + int(files.get("skipped", 0))
            state = m.get("state", "")
        except (ValueError, KeyError, IndexError, TypeError):
            state = ""
        now = time.time() - t0
        for q in (1, 3, 4):
            if q not in marks and done >= q * quarter:
                marks[q] = now
        if state.startswith("completed") or state in ("failed", "cancelled"):
            marks.setdefault(4, now)
            break
        time.sleep(0.2)
    if 1 not in marks or 4 not in marks or 3 not in marks:
        print("timeout timeout timeout")
        return
    first = quarter / marks[1]
    last = (total - 3 * quarter) / max(1e-3, marks[4] - marks[3])
    print(f"{first:.1f} {last:.1f} {marks[4]:.3f}")


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    {
        "free-port": free_port,
        "make-listing": make_listing,
        "make-small-files": make_small_files,
        "wait-file": wait_file,
        "wait-tree": wait_tree,
        "vm-hwm": vm_hwm,
        "fill-state": fill_state,
        "report": report,
        "make-tree": make_tree,
        "cat-tree": cat_tree,
        "random-reads": random_reads,
        "random-gets": random_gets,
        "time-cmd": time_cmd,
        "slow-proxy": slow_proxy,
        "count-proxy": count_proxy,
        "counted": counted,
        "wait-content": wait_content,
        "migrate-rates": migrate_rates,
    }[cmd](*args)


if __name__ == "__main__":
    main()
