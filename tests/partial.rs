//! Partial updates against a real server (the built-in one, or the one
//! `DAVDRIVE_TEST_SERVER_URL` names: see `scripts/interop.sh`) through the counting,
//! fault-injecting proxy: a change to a large file sends only the ranges written, and a
//! write to a file not cached here fetches nothing of it; a concurrent change on the
//! server becomes a conflict copy, never a mix; a server without partial updates (or one
//! that ignores `Content-Range`) gets whole files; an update cut between two ranges goes
//! on after a restart.
//!
//! The large files are made sparse on the server's disk, so a 1 GiB file costs no time
//! to create; hashes are taken with `sha256sum`.

mod common;

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::drive::Drive;
use common::proxy::Ranges;
use common::{Fault, Mount, Server};
use davdrive::cache::CacheLimits;
use davdrive::fs::UploadSizes;
use davdrive::store::ROOT_INO;

const MIB: u64 = 1 << 20;

fn limits() -> CacheLimits {
    CacheLimits {
        min_free: 0,
        ..CacheLimits::default()
    }
}

/// A sparse file of `size` bytes on the server's disk with a few marked blocks, so its
/// bytes are not all zeros.
fn make_big(server: &Server, rel: &str, size: u64) {
    let f = std::fs::File::create(server.path(rel)).unwrap();
    f.set_len(size).unwrap();
    for (i, at) in [0, size / 3, size / 2, size - 64 * 1024]
        .into_iter()
        .enumerate()
    {
        f.write_all_at(&common::pattern(64 * 1024, i as u64 + 1), at)
            .unwrap();
    }
    f.sync_all().unwrap();
}

/// `sha256sum` of the files given, one after the other (`cat a b | sha256sum`).
fn sha256_of(files: &[&Path]) -> String {
    let list: Vec<String> = files.iter().map(|p| format!("'{}'", p.display())).collect();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("cat {} | sha256sum", list.join(" ")))
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// What the server file should hold: `base` as it is now with `tail` appended.
fn expected_with_tail(base: &Path, tail: &[u8], scratch: &Path) -> String {
    let t = scratch.join("tail");
    std::fs::write(&t, tail).unwrap();
    sha256_of(&[base, &t])
}

/// Writes `data` at `offset` through the core, in FUSE-sized pieces, then closes.
fn write_at(d: &Drive, name: &str, offset: u64, data: &[u8]) {
    let (fh, _) = d.core().open(d.ino(name), true).unwrap();
    for (i, part) in data.chunks(128 * 1024).enumerate() {
        d.core()
            .write(fh, offset + (i * 128 * 1024) as u64, part)
            .unwrap();
    }
    d.core().flush(fh).unwrap();
    d.core().release(fh).unwrap();
}

/// Reads `len` bytes at `offset` through the core.
fn read_at(d: &Drive, name: &str, offset: u64, len: u64) -> Vec<u8> {
    let (fh, _) = d.core().open(d.ino(name), false).unwrap();
    let mut out = Vec::new();
    while (out.len() as u64) < len {
        let want = (len - out.len() as u64).min(128 * 1024) as u32;
        let chunk = d.core().read(fh, offset + out.len() as u64, want).unwrap();
        if chunk.is_empty() {
            break;
        }
        out.extend_from_slice(&chunk);
    }
    d.core().release(fh).unwrap();
    out
}

/// Names on the server's side of the test folder that are davdrive's scratch files.
fn scratch_left(server: &Server) -> Vec<String> {
    std::fs::read_dir(&server.root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".davdrive-"))
        .collect()
}

fn partial_updates_used(d: &Drive) -> Option<bool> {
    d.core().partial_updates.get().copied()
}

#[test]
fn appending_to_a_large_file_not_cached_sends_only_the_append() {
    let d = Drive::new(limits());
    let size = 1 << 30;
    make_big(&d.server, "big.log", size);
    let tail = common::pattern(MIB as usize, 7);
    let want = expected_with_tail(&d.server.path("big.log"), &tail, d.state.path());
    let before = d.server.proxy.wire_bytes();
    write_at(&d, "big.log", size, &tail);
    d.wait_drained();
    let (sent, received) = d.server.proxy.wire_bytes();
    let (sent, received) = ((sent - before.0) as u64, (received - before.1) as u64);
    eprintln!("append 1 MiB to 1 GiB: {sent} bytes sent, {received} received");
    assert_eq!(partial_updates_used(&d), Some(true));
    assert!(
        sent < 3 * MIB && received < 2 * MIB,
        "{sent} bytes sent and {received} received for a 1 MiB append"
    );
    assert_eq!(
        sha256_of(&[&d.server.path("big.log")]),
        want,
        "the server's file"
    );
    // Nothing of the rest came here, and what did is the server's.
    assert!(d.cached_bytes("big.log") <= 2 * MIB);
    assert_eq!(read_at(&d, "big.log", size, MIB), tail);
    assert_eq!(
        read_at(&d, "big.log", size / 3, 64 * 1024),
        common::pattern(64 * 1024, 2)
    );
    let attr = d.core().getattr(d.ino("big.log")).unwrap();
    assert_eq!(attr.size, size + MIB);
    assert!(
        scratch_left(&d.server).is_empty(),
        "{:?}",
        scratch_left(&d.server)
    );
}

#[test]
fn writes_in_the_middle_and_a_grown_gap_send_only_their_ranges() {
    let d = Drive::new(limits());
    let size = 48 * MIB;
    make_big(&d.server, "data.bin", size);
    let mut model = std::fs::read(d.server.path("data.bin")).unwrap();
    let (a, b) = (common::pattern(300_000, 11), common::pattern(5000, 12));
    write_at(&d, "data.bin", 5 * MIB + 17, &a);
    // Past the end: the gap reads as zeros, here and on the server.
    write_at(&d, "data.bin", size + 4096, &b);
    model[(5 * MIB + 17) as usize..(5 * MIB + 17) as usize + a.len()].copy_from_slice(&a);
    model.resize((size + 4096) as usize, 0);
    model.extend_from_slice(&b);
    d.wait_drained();
    let (sent, _) = d.server.proxy.wire_bytes();
    assert!((sent as u64) < 2 * MIB, "{sent} bytes sent");
    common::wait_server_has(&d.server, "data.bin", &model);
    assert!(scratch_left(&d.server).is_empty());
    // Truncating below the server's size cannot be a range: the file goes whole, its
    // missing parts fetched from its base first.
    let ino = d.ino("data.bin");
    d.core()
        .setattr(ino, None, None, None, Some(size - MIB), None)
        .unwrap();
    model.truncate((size - MIB) as usize);
    d.wait_drained();
    common::wait_server_has(&d.server, "data.bin", &model);
    assert!(scratch_left(&d.server).is_empty());
}

#[test]
fn a_change_on_the_server_during_an_offline_append_gives_a_conflict_copy() {
    let d = Drive::new(limits());
    let size = 64 * MIB;
    make_big(&d.server, "big.log", size);
    let base = std::fs::read(d.server.path("big.log")).unwrap();
    let ino = d.ino("big.log");
    // The first line goes while the server is there (the base copy is made then); the
    // rest while it is away; then another client replaces the file.
    let (fh, _) = d.core().open(ino, true).unwrap();
    let mut ours = base.clone();
    let mut at = size;
    let mut line = |d: &Drive, n: usize, ours: &mut Vec<u8>| {
        let l = format!("line {n}\n").into_bytes();
        d.core().write(fh, at, &l).unwrap();
        at += l.len() as u64;
        ours.extend_from_slice(&l);
    };
    line(&d, 0, &mut ours);
    d.server.proxy.set_fault(Fault::Refuse);
    for n in 1..50 {
        line(&d, n, &mut ours);
    }
    d.core().flush(fh).unwrap();
    d.core().release(fh).unwrap();
    let theirs = b"their version of the log\n".to_vec();
    d.server.put_as_another_client("big.log", &theirs);
    std::thread::sleep(Duration::from_millis(300));
    d.server.proxy.clear_fault();
    d.wait_drained();
    assert_eq!(std::fs::read(d.server.path("big.log")).unwrap(), theirs);
    let copy = common::server_entry_starting(&d.server, "big (conflict")
        .expect("a conflict copy on the server");
    let got = std::fs::read(d.server.path(&copy)).unwrap();
    assert!(
        got == ours,
        "the conflict copy is not our version ({} bytes)",
        got.len()
    );
    assert!(
        scratch_left(&d.server).is_empty(),
        "{:?}",
        scratch_left(&d.server)
    );
    // Here too: the file is theirs, the copy ours (its missing parts come from the
    // server's copy, which is ours).
    common::wait_until(10, "their version here", || d.read("big.log") == theirs);
    let copy_ino = d.core().lookup(ROOT_INO, &copy).unwrap().ino;
    assert_eq!(d.core().getattr(copy_ino).unwrap().size, ours.len() as u64);
    assert!(d.read(&copy) == ours);
    let conflicts: i64 = d
        .core()
        .db()
        .write(|c| c.query_row("SELECT COUNT(*) FROM conflicts", [], |r| r.get(0)))
        .unwrap();
    assert_eq!(conflicts, 1);
}

/// The same append on a server that refuses partial writes, and on one that would take
/// a `PUT` with `Content-Range` as a whole new file: the probe says no, and the whole
/// file is fetched and sent, as before partial updates.
#[test]
fn without_partial_updates_the_whole_file_goes_and_stays_right() {
    for ranges in [Ranges::Refuse, Ranges::Strip] {
        let d = Drive::new(limits());
        d.server.proxy.set_ranges(ranges);
        let size = 24 * MIB;
        make_big(&d.server, "big.log", size);
        let tail = common::pattern(MIB as usize, 3);
        let want = expected_with_tail(&d.server.path("big.log"), &tail, d.state.path());
        write_at(&d, "big.log", size, &tail);
        d.wait_drained();
        assert_eq!(partial_updates_used(&d), Some(false), "{ranges:?}");
        assert_eq!(
            sha256_of(&[&d.server.path("big.log")]),
            want,
            "{ranges:?}: the server's file"
        );
        let (sent, received) = d.server.proxy.wire_bytes();
        assert!(
            sent as u64 >= size && received as u64 >= size,
            "{ranges:?}: {sent} sent, {received} received: not the whole file"
        );
        assert!(
            scratch_left(&d.server).is_empty(),
            "{:?}",
            scratch_left(&d.server)
        );
    }
}

#[test]
fn an_update_cut_between_two_ranges_goes_on_after_a_restart() {
    let mut d = Drive::with_uploads(
        limits(),
        UploadSizes {
            part: MIB,
            ..UploadSizes::default()
        },
    );
    let size = 32 * MIB;
    make_big(&d.server, "data.bin", size);
    let mut model = std::fs::read(d.server.path("data.bin")).unwrap();
    let ino = d.ino("data.bin");
    let (fh, _) = d.core().open(ino, true).unwrap();
    // Three ranges of one part each.
    for (i, at) in [MIB, 20 * MIB, size].into_iter().enumerate() {
        let data = common::pattern(MIB as usize, 40 + i as u64);
        for (j, piece) in data.chunks(128 * 1024).enumerate() {
            d.core()
                .write(fh, at + (j * 128 * 1024) as u64, piece)
                .unwrap();
        }
        model.resize(model.len().max((at + MIB) as usize), 0);
        model[at as usize..(at + MIB) as usize].copy_from_slice(&data);
    }
    // The probe wrote its range already: the second range of the update fails, and so
    // does every later try until the restart.
    let probe_writes = d.server.proxy.state.lock().unwrap().range_writes;
    d.server.proxy.state.lock().unwrap().fail_range_writes = (probe_writes + 2..probe_writes + 200)
        .map(|n| (n, 500))
        .collect();
    d.core().flush(fh).unwrap();
    d.core().release(fh).unwrap();
    common::wait_until(30, "the second range to fail", || {
        d.server.proxy.state.lock().unwrap().range_writes >= probe_writes + 2
    });
    d.server.proxy.wait_idle(Duration::from_secs(10));
    // The file on the server is untouched: the ranges went to the copy.
    assert_eq!(
        &std::fs::read(d.server.path("data.bin")).unwrap()[MIB as usize..2 * MIB as usize],
        &vec![0u8; MIB as usize][..]
    );
    d.stop();
    d.server
        .proxy
        .state
        .lock()
        .unwrap()
        .fail_range_writes
        .clear();
    let before = d.server.proxy.state.lock().unwrap().range_writes;
    d.start();
    d.wait_drained();
    common::wait_server_has(&d.server, "data.bin", &model);
    let after = d.server.proxy.state.lock().unwrap().range_writes;
    // The new run's probe, then the second and third ranges: the first is not sent
    // again.
    assert_eq!(after - before, 3, "range writes after the restart");
    assert!(
        scratch_left(&d.server).is_empty(),
        "{:?}",
        scratch_left(&d.server)
    );
}

/// Through a real mount: a line appended by the shell to a large file not cached.
#[test]
fn a_shell_append_through_a_mount_sends_only_the_line() {
    let server = Server::start();
    let size = 256 * MIB;
    make_big(&server, "app.log", size);
    let base = tempfile::tempdir().unwrap();
    let m = Mount::start(&server.url(), base.path(), &[]);
    let line = b"one more line\n";
    let want = expected_with_tail(&server.path("app.log"), line, base.path());
    let before = server.proxy.wire_bytes();
    {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(m.path("app.log"))
            .unwrap();
        f.write_all(line).unwrap();
    }
    common::wait_until(60, "the line on the server", || {
        std::fs::metadata(server.path("app.log"))
            .map(|m| m.len())
            .ok()
            == Some(size + line.len() as u64)
            && scratch_left(&server).is_empty()
    });
    let (sent, received) = server.proxy.wire_bytes();
    let (sent, received) = (sent - before.0, received - before.1);
    assert!(
        (sent as u64) < MIB && (received as u64) < MIB,
        "{sent} bytes sent and {received} received"
    );
    assert_eq!(sha256_of(&[&server.path("app.log")]), want);
    let attr = std::fs::metadata(m.path("app.log")).unwrap();
    assert_eq!(attr.len(), size + line.len() as u64);
}
