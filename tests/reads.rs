//! Reads of content not cached, driven through the daemon's core (no kernel) over the
//! in-memory remote, whose log says which ranges each GET asked for: random 4 KiB reads
//! fetch small ranges, a sequential reader's read-ahead reaches further as it goes on,
//! with several ranged GETs of one file on the wire at once, and whatever order the
//! pieces arrive in, what is read back is the server's file byte for byte, also after a
//! crash leaves a file partly cached.

mod common;

use std::sync::Arc;
use std::time::Duration;

use davdrive::clock::Clock;
use davdrive::daemon::{Daemon, DaemonConfig};
use davdrive::fs::Core;
use davdrive::remote::memory::MemRemote;
use davdrive::remote::Remote;
use davdrive::store::ROOT_INO;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
/// The download unit of `fs/fetch.rs`: a reader's first GETs ask for no more (one byte
/// more at a file's end); a stream's GETs span several.
const CHUNK: u64 = davdrive::fs::CHUNK;

/// The daemon over a `MemRemote`, restartable (cleanly or as by `kill -9`) on one state.
struct MemDrive {
    rt: tokio::runtime::Runtime,
    mem: Arc<MemRemote>,
    state: tempfile::TempDir,
    daemon: Option<Daemon>,
    tweak: Box<dyn Fn(&mut DaemonConfig)>,
}

impl MemDrive {
    fn new(mem: MemRemote) -> MemDrive {
        MemDrive::configured(mem, |_| {})
    }

    fn configured(mem: MemRemote, tweak: impl Fn(&mut DaemonConfig) + 'static) -> MemDrive {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let mut d = MemDrive {
            rt,
            mem: Arc::new(mem),
            state: tempfile::tempdir().unwrap(),
            daemon: None,
            tweak: Box::new(tweak),
        };
        d.start();
        d
    }

    fn start(&mut self) {
        let _guard = self.rt.enter();
        let mut cfg = DaemonConfig::new(self.state.path());
        cfg.health_interval = Duration::from_millis(100);
        cfg.sweeper = false;
        (self.tweak)(&mut cfg);
        let remote: Arc<dyn Remote> = self.mem.clone();
        self.daemon = Some(Daemon::start(cfg, remote, Clock::default()).unwrap());
    }

    /// A stop as by `kill -9`: tasks die wherever they are, nothing more is committed.
    fn crash(&mut self) {
        let daemon = self.daemon.take().unwrap();
        let core = Arc::downgrade(daemon.core());
        daemon.abort();
        common::wait_until(30, "the old core's tasks to end", || {
            core.strong_count() == 0
        });
    }

    fn core(&self) -> &Arc<Core> {
        self.daemon.as_ref().unwrap().core()
    }

    fn ino(&self, name: &str) -> u64 {
        self.core().lookup(ROOT_INO, name).unwrap().ino
    }

    fn node(&self, name: &str) -> davdrive::store::Node {
        let ino = self.ino(name);
        self.core()
            .db()
            .write(|tx| davdrive::store::get_node(tx, ino))
            .unwrap()
            .unwrap()
    }

    /// Waits until no GET runs and none was started for a while (read-ahead included),
    /// then a little more for what the last ones brought to be stored.
    fn wait_downloads(&self) {
        common::wait_until(10, "downloads to end", || {
            let before = self.mem.ranges_asked().len();
            std::thread::sleep(Duration::from_millis(50));
            self.mem.ranges_asked().len() == before && self.mem.gets_running() == 0
        });
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Offsets of `n` 4 KiB-aligned reads scattered over a file of `size` bytes.
fn scattered(n: usize, size: u64, seed: u64) -> Vec<u64> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) % (size / 4096) * 4096
        })
        .collect()
}

fn put(d: &MemDrive, name: &str, data: &[u8]) {
    d.mem.other_put(&format!("/{name}"), data.to_vec()).unwrap();
}

#[test]
fn random_4k_reads_fetch_small_ranges_around_them() {
    let d = MemDrive::new(MemRemote::new());
    let size = 64 * MIB;
    let data = common::pattern(size as usize, 21);
    put(&d, "disk.img", &data);
    let ino = d.ino("disk.img");
    let (fh, _) = d.core().open(ino, false).unwrap();
    d.mem.clear_log();
    let reads = scattered(200, size, 7);
    for &off in &reads {
        let got = d.core().read(fh, off, 4096).unwrap();
        assert_eq!(got, &data[off as usize..off as usize + 4096], "at {off}");
    }
    d.core().release(fh).unwrap();
    let asked = d.mem.ranges_asked();
    assert!(!asked.is_empty());
    // Each GET is a small range, aligned around a read, never a chunk.
    for (path, off, len) in &asked {
        assert_eq!(path, "/disk.img");
        assert!(*len <= 128 * KIB + 1, "a GET of {len} bytes at {off}");
        assert!(*len < CHUNK / 8);
    }
    let total: u64 = asked.iter().map(|a| a.2).sum();
    assert!(
        total <= reads.len() as u64 * 64 * KIB,
        "{} reads of 4 KiB asked for {total} bytes",
        reads.len()
    );
    // Partly here: never taken for the whole file, never hashed.
    let node = d.node("disk.img");
    assert!(!node.fully_cached());
    assert!(node.sha256.is_none());
    assert!(node.cached_bytes >= reads.len() as u64 * 4096 / 2);
}

#[test]
fn a_sequential_read_reaches_further_ahead_as_it_goes() {
    let d = MemDrive::new(MemRemote::new());
    let size = 64 * MIB;
    let data = common::pattern(size as usize, 22);
    put(&d, "movie.bin", &data);
    let ino = d.ino("movie.bin");
    let (fh, _) = d.core().open(ino, false).unwrap();
    d.mem.clear_log();
    // How far beyond each read the GETs asked so far reach.
    let mut reach = Vec::new();
    let mut pos = 0u64;
    let step = 128 * KIB;
    while pos < size {
        let got = d.core().read(fh, pos, step as u32).unwrap();
        assert_eq!(got, &data[pos as usize..(pos + step) as usize], "at {pos}");
        pos += step;
        let furthest = d
            .mem
            .ranges_asked()
            .iter()
            .map(|a| a.1 + a.2)
            .max()
            .unwrap();
        reach.push(furthest.saturating_sub(pos));
    }
    d.core().release(fh).unwrap();
    let asked = d.mem.ranges_asked();
    // The first read fetches what is around it, no read-ahead yet.
    assert!(asked[0].1 == 0 && asked[0].2 <= MIB, "{:?}", asked[0]);
    assert!(reach[0] < MIB, "reach after one read: {}", reach[0]);
    // Then the window grows: a few megabytes ahead early on, many once streaming.
    let early = reach[..8].iter().max().unwrap();
    let late = reach[reach.len() / 2..reach.len() * 3 / 4]
        .iter()
        .max()
        .unwrap();
    assert!(*early <= 6 * MIB, "early reach {early}");
    assert!(
        *late >= 3 * *early && *late >= 12 * MIB,
        "late reach {late}, early {early}"
    );
    // Read once: the GETs do not overlap.
    let mut spans: Vec<(u64, u64)> = asked.iter().map(|a| (a.1, a.1 + a.2)).collect();
    spans.sort();
    for w in spans.windows(2) {
        assert!(w[0].1 <= w[1].0 || w[0].1 == size + 1, "{w:?} overlap");
    }
    // The GETs grow with the window: a chunk at most while reading starts, several
    // chunks once it streams (each GET costs both ends more than its bytes), never more
    // than half the largest window.
    assert!(
        asked[..3].iter().all(|a| a.2 <= CHUNK + 1),
        "{:?}",
        &asked[..3]
    );
    let largest = asked.iter().map(|a| a.2).max().unwrap();
    assert!(
        largest >= 4 * CHUNK,
        "the largest GET asked for {largest} bytes"
    );
    assert!(largest <= 32 * MIB + 1, "a GET of {largest} bytes");
    common::wait_until(10, "the range map recorded whole", || {
        d.node("movie.bin").fully_cached()
    });
    assert_eq!(d.node("movie.bin").cached_bytes, size);
}

#[test]
fn several_ranged_gets_of_one_file_at_once_give_its_exact_bytes() {
    let mem = MemRemote::new();
    // Every GET takes a while: downloads side by side overlap.
    mem.set_latency(Duration::from_millis(30));
    let d = MemDrive::new(mem);
    // Not a multiple of the chunk or of the reads: the last GET is short.
    let size = 24 * MIB + 12_345;
    let data = common::pattern(size as usize, 23);
    put(&d, "big.bin", &data);
    let ino = d.ino("big.bin");
    d.mem.clear_log();
    let (fh, _) = d.core().open(ino, false).unwrap();
    let mut got = Vec::new();
    loop {
        let part = d
            .core()
            .read(fh, got.len() as u64, (1 << 20) - 4096)
            .unwrap();
        if part.is_empty() {
            break;
        }
        got.extend_from_slice(&part);
    }
    d.core().release(fh).unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got == data, "the file read back differs from the server's");
    let at_once = d.mem.most_gets_at_once();
    // The read-ahead keeps two GETs running ahead of a stream (half its window each).
    assert!(at_once >= 2, "at most {at_once} GET(s) of the file at once");
    // The content file itself, as the next open serves it, is the file.
    common::wait_until(10, "the range map recorded whole", || {
        d.node("big.bin").fully_cached()
    });
    let on_disk = std::fs::read(d.core().content().path(ino)).unwrap();
    assert!(on_disk[..size as usize] == data[..]);
    // Whole: its hash is recorded, and it is the file's.
    common::wait_until(10, "the hash of the whole file", || {
        d.node("big.bin").sha256.is_some()
    });
    assert_eq!(d.node("big.bin").sha256.unwrap(), common::sha256(&data));
}

#[test]
fn a_file_partly_cached_at_a_crash_is_completed_byte_for_byte() {
    let mut d = MemDrive::new(MemRemote::new());
    let size = 24 * MIB + 777;
    let data = common::pattern(size as usize, 24);
    put(&d, "db.bin", &data);
    let ino = d.ino("db.bin");
    let (fh, _) = d.core().open(ino, false).unwrap();
    for &off in &scattered(60, size, 9) {
        let got = d.core().read(fh, off, 4096).unwrap();
        assert_eq!(got, &data[off as usize..off as usize + 4096]);
    }
    // And the start, read on a little: a chunk or two with read-ahead.
    for i in 0..8u64 {
        let off = i * 128 * KIB;
        let got = d.core().read(fh, off, 128 << 10).unwrap();
        assert_eq!(got, &data[off as usize..(off + 128 * KIB) as usize]);
    }
    d.wait_downloads();
    // Recorded in the store a moment later, the file still open.
    common::wait_until(10, "what was read recorded as here", || {
        let ranges = d.node("db.bin").ranges;
        ranges.covers(0, MIB)
            && scattered(60, size, 9)
                .iter()
                .all(|&off| ranges.covers(off, off + 4096))
    });
    let cached = d.node("db.bin").cached_bytes;
    assert!(
        cached > 0 && cached < size,
        "{cached} of {size} bytes cached"
    );
    d.crash();
    d.start();
    let node = d.node("db.bin");
    assert!(!node.fully_cached());
    assert!(node.sha256.is_none(), "a partly cached file was hashed");
    assert!(
        node.cached_bytes > 0,
        "what was downloaded before the crash was forgotten"
    );
    // What is here is served, the rest fetched; the whole equals the server's file.
    d.mem.clear_log();
    let (fh, _) = d.core().open(ino, false).unwrap();
    let mut got = Vec::new();
    common::read_rest(d.core(), fh, &mut got);
    d.core().release(fh).unwrap();
    assert!(got == data, "the file read back after the crash differs");
    d.wait_downloads();
    // Nothing of what was cached is fetched again but the scattered 64 KiB pieces a
    // GET of the gaps around them spans (only the missing bytes of a reply are kept).
    let asked = d.mem.ranges_asked();
    let fetched: u64 = asked.iter().map(|a| a.2).sum();
    assert!(
        fetched <= size - node.cached_bytes + 1 + 60 * 64 * KIB,
        "fetched {fetched} bytes again of a file with {} of {size} bytes cached",
        node.cached_bytes
    );
    let first_missing = node.ranges.missing(0, size)[0].0;
    assert!(first_missing >= MIB, "the start was read before the crash");
    assert!(
        asked.iter().all(|a| a.1 >= first_missing),
        "the start, cached before the crash, was fetched again: {asked:?}"
    );
    common::wait_until(10, "the hash of the whole file", || {
        d.node("db.bin").sha256.is_some()
    });
    assert_eq!(d.node("db.bin").sha256.unwrap(), common::sha256(&data));
}

#[test]
fn a_reader_is_answered_while_the_get_it_waits_on_is_still_arriving() {
    let d = MemDrive::new(MemRemote::new());
    let size = 8 * MIB;
    let data = common::pattern(size as usize, 25);
    put(&d, "stream.bin", &data);
    let ino = d.ino("stream.bin");
    let (fh, _) = d.core().open(ino, false).unwrap();
    // The network hands over the first 256 KiB of each reply, then nothing more.
    d.mem.hold_bodies_after(256 * KIB);
    let core = d.core().clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let _ = tx.send(core.read(fh, 0, 4096));
    });
    // The read needs only bytes that arrived: it returns while its GET still runs.
    let first = rx.recv_timeout(Duration::from_secs(30));
    d.mem.release_bodies();
    reader.join().unwrap();
    let first = first.expect("the read waited for the whole GET").unwrap();
    assert_eq!(first, &data[..4096]);
    let mut got = first;
    common::read_rest(d.core(), fh, &mut got);
    d.core().release(fh).unwrap();
    assert!(got == data, "the file read back differs from the server's");
}

#[test]
fn a_jump_into_a_large_get_still_arriving_fetches_its_bytes_at_once() {
    let d = MemDrive::new(MemRemote::new());
    let size = 96 * MIB;
    let data = common::pattern(size as usize, 27);
    put(&d, "movie.mkv", &data);
    let ino = d.ino("movie.mkv");
    let (fh, _) = d.core().open(ino, false).unwrap();
    // A stream, until its read-ahead works in GETs of several chunks.
    let step = 128 * KIB;
    let mut pos = 0u64;
    while pos < 24 * MIB {
        let got = d.core().read(fh, pos, step as u32).unwrap();
        assert_eq!(got, &data[pos as usize..(pos + step) as usize], "at {pos}");
        pos += step;
    }
    // Its read-ahead landed: what it fetched is here, and no GET is on the wire.
    common::wait_until(30, "the read-ahead's GETs to end", || {
        d.mem.gets_running() == 0
    });
    // Now the network stalls each reply after its first 3 MiB; the stream goes on
    // (through what its read-ahead brought) until the next large GET is on the wire.
    // A GET of a chunk the read-ahead left a hole in (behind a read that outran it) is
    // smaller than that and still comes whole: the stream may need it.
    d.mem.clear_log();
    d.mem.hold_bodies_after(3 * MIB);
    // Should a read of the stream wait on a stalled GET after all, the test fails
    // rather than hang: the bodies are let go after a minute and that is reported.
    let (stream_done, watch) = std::sync::mpsc::channel::<()>();
    let mem = d.mem.clone();
    let watchdog = std::thread::spawn(move || {
        let fired = watch.recv_timeout(Duration::from_secs(60)).is_err();
        if fired {
            mem.release_bodies();
        }
        fired
    });
    let held = loop {
        let large = d.mem.ranges_asked().into_iter().find(|a| a.2 >= 8 * MIB);
        if let Some(get) = large {
            break get;
        }
        assert!(pos < 56 * MIB, "no large GET started by {pos}");
        let got = d.core().read(fh, pos, step as u32).unwrap();
        assert_eq!(got, &data[pos as usize..(pos + step) as usize], "at {pos}");
        pos += step;
    };
    stream_done.send(()).unwrap();
    assert!(
        !watchdog.join().unwrap(),
        "a read of the stream waited on a stalled GET (at {pos}; GETs since the stall: {:?})",
        d.mem.ranges_asked()
    );
    // A seek near the end of that GET: its bytes come with a GET of their own, not
    // after the megabytes the stalled one has yet to bring.
    let at = held.1 + held.2 - 64 * KIB;
    let core = d.core().clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let _ = tx.send(core.read(fh, at, 4096));
    });
    let jumped = rx.recv_timeout(Duration::from_secs(30));
    d.mem.release_bodies();
    reader.join().unwrap();
    let jumped = jumped
        .expect("the read waited for the stalled GET it jumped into")
        .unwrap();
    assert_eq!(jumped, &data[at as usize..at as usize + 4096]);
    // Both GETs brought bytes of the same place: the file is still the server's.
    let mut got = d.core().read(fh, 0, pos as u32).unwrap();
    common::read_rest(d.core(), fh, &mut got);
    d.core().release(fh).unwrap();
    assert!(got == data, "the file read back differs from the server's");
}

#[test]
fn random_reads_record_the_range_map_now_and_then_and_whole_at_close() {
    let d = MemDrive::configured(MemRemote::new(), |cfg| {
        cfg.core.ranges_saved_every = Duration::from_secs(3600);
    });
    let size = 64 * MIB;
    let data = common::pattern(size as usize, 26);
    put(&d, "index.db", &data);
    let ino = d.ino("index.db");
    let (fh, _) = d.core().open(ino, false).unwrap();
    let reads = scattered(40, size, 11);
    for &off in &reads {
        let got = d.core().read(fh, off, 4096).unwrap();
        assert_eq!(got, &data[off as usize..off as usize + 4096], "at {off}");
    }
    // The first fetch was recorded; the others, within the interval, not yet.
    let node = d.node("index.db");
    assert!(node.ranges.covers(reads[0], reads[0] + 4096));
    assert!(
        node.cached_bytes <= 128 * KIB,
        "{} bytes recorded after {} reads: the map was written at each",
        node.cached_bytes,
        reads.len()
    );
    // The last close records all of it.
    d.core().release(fh).unwrap();
    let node = d.node("index.db");
    for &off in &reads {
        assert!(node.ranges.covers(off, off + 4096), "{off} not recorded");
    }
    // And what the store records as here is the server's bytes.
    let on_disk = std::fs::read(d.core().content().path(ino)).unwrap();
    for (a, b) in node.ranges.iter() {
        assert!(on_disk[a as usize..b as usize] == data[a as usize..b as usize]);
    }
}
