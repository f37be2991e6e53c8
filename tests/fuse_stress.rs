//! Stress through a real FUSE mount: several worker processes run a seeded pseudo-random
//! workload (mkdir, nested mkdir, renames of files and directories across and into deeper
//! directories, rmdir, unlink, create, overwrite, append, truncate both ways, writes at
//! offsets; mostly small files, a few of several MiB), each in a subtree of its own and all
//! in one shared subtree where they race each other.
//!
//! Round 0 (online) puts a first tree on the server. Round 1 runs with the server down, so
//! everything is staged in the journal. Round 2 starts the moment the server is back,
//! while the journal replays. After `ctl sync --wait` the mount and the server's folder
//! must hold the same tree, byte for byte; each worker's own subtree must equal the local
//! mirror the worker kept of it (every operation is applied to both), on the mount after
//! each round and on the server at the end; no journal entry may be failed and no conflict
//! recorded (there is only one client).
//!
//! The workers are this test binary run again (`--exact stress_worker`) with
//! `DAVDRIVE_STRESS_WORKER` set to their job; without it `stress_worker` does nothing.
//!
//! Knobs (environment):
//!   DAVDRIVE_STRESS_SEED     seed of the whole run (default 1)
//!   DAVDRIVE_STRESS_OPS      operations per worker per offline/replay round (default 400)
//!   DAVDRIVE_STRESS_WORKERS  worker processes (default 4)
//!   DAVDRIVE_STRESS_WARMUP   operations per worker in the online round 0 (default OPS/5)
//!   DAVDRIVE_STRESS_TIMEOUT  seconds a round may take before its workers are killed
//!                            (default 900)
//!   DAVDRIVE_STRESS_KEEP     set: keep the temp dir (traces, daemon log, cache, mirrors)
//!                            on success too; it is always kept on failure
//!   DAVDRIVE_STRESS_SELFTEST set: after the sync, change a file and add one on the server
//!                            side, to see the comparison catch it (the test must fail)
//!
//! Each worker's sequence of operations follows from the seed alone; what they find in the
//! shared subtree depends on timing.
//!
//! The default size (4 × (80 + 400 + 400) operations) takes about a minute in a debug
//! build on 2 cores, most of it in round 2: online, every path lookup past the 1 s
//! listing TTL lists its directory again while the replayer is busy.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const WORKER_ENV: &str = "DAVDRIVE_STRESS_WORKER";
const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

// ---------------------------------------------------------------------------------------
// Deterministic randomness

/// xorshift64*, seeded through splitmix64.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Rng(z | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// 0..n (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }

    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len() as u64) as usize]
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(n);
        out
    }

    /// A file size: mostly 0..64 KiB, a few empty, about one in 120 of several MiB.
    fn file_size(&mut self) -> usize {
        match self.below(120) {
            0 => 2 * MIB + self.below(5 * MIB as u64) as usize,
            1..=4 => 0,
            _ => self.below(64 * KIB as u64 + 1) as usize,
        }
    }

    /// The size of an append or a write at an offset: mostly small.
    fn chunk_size(&mut self) -> usize {
        match self.below(100) {
            0 => MIB + self.below(2 * MIB as u64) as usize,
            1..=9 => self.below(256 * KIB as u64) as usize,
            _ => 1 + self.below(16 * KIB as u64) as usize,
        }
    }
}

fn mix(seed: u64, round: u64, id: u64) -> u64 {
    Rng::new(seed ^ round.wrapping_mul(0x0010_0000_01B3) ^ id.wrapping_mul(0x7F4A_7C15_9E37)).next()
}

// ---------------------------------------------------------------------------------------
// Trees: walking and comparing

#[derive(Clone, Debug, PartialEq)]
enum Entry {
    Dir,
    File { len: u64, sha: String },
    Other(String),
    Unreadable(String),
}

impl std::fmt::Display for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Entry::Dir => write!(f, "dir"),
            Entry::File { len, sha } => write!(f, "file {len} bytes sha256 {}", &sha[..16]),
            Entry::Other(k) => write!(f, "other ({k})"),
            Entry::Unreadable(e) => write!(f, "unreadable: {e}"),
        }
    }
}

/// Every path below `root` (relative, '/'-separated, prefixed with `prefix`), with its
/// kind and, for files, length and SHA-256.
fn walk(root: &Path, prefix: &str) -> BTreeMap<String, Entry> {
    let mut out = BTreeMap::new();
    walk_into(root, prefix, &mut out);
    out
}

fn walk_into(dir: &Path, rel: &str, out: &mut BTreeMap<String, Entry>) {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) => {
            out.insert(format!("{rel}(listing)"), Entry::Unreadable(e.to_string()));
            return;
        }
    };
    let mut names = Vec::new();
    for e in rd {
        match e {
            Ok(e) => names.push(e.file_name()),
            Err(e) => {
                out.insert(format!("{rel}(listing)"), Entry::Unreadable(e.to_string()));
            }
        }
    }
    names.sort();
    for name in names {
        let name_s = name.to_string_lossy().into_owned();
        let p = dir.join(&name);
        let r = format!("{rel}{name_s}");
        match fs::symlink_metadata(&p) {
            Err(e) => {
                out.insert(r, Entry::Unreadable(e.to_string()));
            }
            Ok(md) if md.is_dir() => {
                out.insert(r.clone(), Entry::Dir);
                walk_into(&p, &format!("{r}/"), out);
            }
            Ok(md) if md.is_file() => {
                let e = match fs::read(&p) {
                    Ok(data) => {
                        if data.len() as u64 != md.len() {
                            Entry::Unreadable(format!(
                                "stat says {} bytes, read gave {}",
                                md.len(),
                                data.len()
                            ))
                        } else {
                            Entry::File {
                                len: data.len() as u64,
                                sha: sha256(&data),
                            }
                        }
                    }
                    Err(e) => Entry::Unreadable(e.to_string()),
                };
                out.insert(r, e);
            }
            Ok(md) => {
                out.insert(r, Entry::Other(format!("{:?}", md.file_type())));
            }
        }
    }
}

/// Readable differences between two trees, `a` and `b` naming the sides.
fn diff(
    a_name: &str,
    a: &BTreeMap<String, Entry>,
    b_name: &str,
    b: &BTreeMap<String, Entry>,
) -> Vec<String> {
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let mut out = Vec::new();
    for k in keys {
        match (a.get(k), b.get(k)) {
            (Some(x), Some(y)) if x == y => {}
            (Some(x), Some(y)) => out.push(format!("{k:?}: {a_name} has {x}, {b_name} has {y}")),
            (Some(x), None) => out.push(format!("{k:?}: only in {a_name} ({x})")),
            (None, Some(y)) => out.push(format!("{k:?}: only in {b_name} ({y})")),
            (None, None) => unreachable!(),
        }
    }
    out
}

fn show_diff(title: &str, d: &[String]) -> String {
    let mut s = format!("{title}: {} difference(s)", d.len());
    for l in d.iter().take(20) {
        s.push_str("\n  ");
        s.push_str(l);
    }
    if d.len() > 20 {
        s.push_str(&format!("\n  … and {} more", d.len() - 20));
    }
    s
}

// ---------------------------------------------------------------------------------------
// The worker

struct Job {
    id: u64,
    round: u64,
    seed: u64,
    ops: u64,
    /// The mount's root.
    mnt: PathBuf,
    /// Where this worker's mirror of its own subtree lives (outside the mount).
    mirror: PathBuf,
    trace: PathBuf,
}

impl Job {
    fn to_env(&self) -> String {
        json!({
            "id": self.id, "round": self.round, "seed": self.seed, "ops": self.ops,
            "mnt": self.mnt, "mirror": self.mirror, "trace": self.trace,
        })
        .to_string()
    }

    fn from_env(s: &str) -> Job {
        let v: Value = serde_json::from_str(s).expect("DAVDRIVE_STRESS_WORKER is not JSON");
        let p = |k: &str| PathBuf::from(v[k].as_str().unwrap());
        Job {
            id: v["id"].as_u64().unwrap(),
            round: v["round"].as_u64().unwrap(),
            seed: v["seed"].as_u64().unwrap(),
            ops: v["ops"].as_u64().unwrap(),
            mnt: p("mnt"),
            mirror: p("mirror"),
            trace: p("trace"),
        }
    }
}

#[derive(Default)]
struct Stats {
    ops: BTreeMap<&'static str, u64>,
    /// Errors tolerated in the shared subtree, by operation and errno name.
    tolerated: BTreeMap<String, u64>,
    bytes_written: u64,
    big_writes: u64,
}

/// The worker's own subtree `w<id>`: what is in it (paths relative to it, "" its root),
/// kept on disk in the mirror with the same operations.
struct Private {
    mnt: PathBuf,
    mirror: PathBuf,
    dirs: BTreeSet<String>,
    files: BTreeMap<String, u64>,
    round: u64,
    counter: u64,
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

fn parent_of(p: &str) -> &str {
    p.rfind('/').map_or("", |i| &p[..i])
}

fn depth(p: &str) -> usize {
    if p.is_empty() {
        0
    } else {
        p.matches('/').count() + 1
    }
}

fn under(p: &str, dir: &str) -> bool {
    p.len() > dir.len() && p.starts_with(dir) && p.as_bytes()[dir.len()] == b'/'
}

fn errno_name(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ENOENT) => "ENOENT".into(),
        Some(libc::EEXIST) => "EEXIST".into(),
        Some(libc::ENOTEMPTY) => "ENOTEMPTY".into(),
        Some(libc::EINVAL) => "EINVAL".into(),
        Some(libc::ENOTDIR) => "ENOTDIR".into(),
        Some(libc::EISDIR) => "EISDIR".into(),
        Some(libc::EIO) => "EIO".into(),
        Some(n) => format!("errno {n}"),
        None => format!("{:?}", e.kind()),
    }
}

impl Private {
    /// Reads the mirror (sorted, so the choices that follow are the same every run).
    fn load(job: &Job) -> Private {
        let name = format!("w{}", job.id);
        let mirror = job.mirror.join(&name);
        let mut p = Private {
            mnt: job.mnt.join(&name),
            mirror: mirror.clone(),
            dirs: BTreeSet::new(),
            files: BTreeMap::new(),
            round: job.round,
            counter: 0,
        };
        p.dirs.insert(String::new());
        if mirror.exists() {
            for (rel, e) in walk(&mirror, "") {
                match e {
                    Entry::Dir => {
                        p.dirs.insert(rel);
                    }
                    Entry::File { len, .. } => {
                        p.files.insert(rel, len);
                    }
                    other => panic!("mirror {rel}: {other}"),
                }
            }
        }
        p
    }

    fn m(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.mnt.clone()
        } else {
            self.mnt.join(rel)
        }
    }

    fn r(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.mirror.clone()
        } else {
            self.mirror.join(rel)
        }
    }

    /// A name not yet in `dir`, in one of a few styles (spaces, non-ASCII, characters
    /// that must be escaped in a URL).
    fn fresh(&mut self, rng: &mut Rng, dir: &str, kind: &str) -> String {
        loop {
            self.counter += 1;
            let n = format!("{kind}{}-{}", self.round, self.counter);
            let name = match rng.below(10) {
                0 => format!("{n} with space.txt"),
                1 => format!("{n}-ünï-çødé"),
                2 => format!("{n}%20&+#;=,@!'()"),
                _ => n,
            };
            let p = join(dir, &name);
            if !self.dirs.contains(&p) && !self.files.contains_key(&p) {
                return name;
            }
        }
    }

    fn pick_dir(&self, rng: &mut Rng) -> String {
        let v: Vec<&String> = self.dirs.iter().collect();
        rng.pick(&v).to_string()
    }

    fn pick_file(&self, rng: &mut Rng) -> Option<String> {
        if self.files.is_empty() {
            return None;
        }
        let v: Vec<&String> = self.files.keys().collect();
        Some(rng.pick(&v).to_string())
    }

    /// Applies `f` to the mount's path, then the mirror's; any error is a failure.
    fn both<T>(
        &self,
        what: &str,
        rels: &[&str],
        f: impl Fn(&[PathBuf]) -> std::io::Result<T>,
    ) -> T {
        let mp: Vec<PathBuf> = rels.iter().map(|r| self.m(r)).collect();
        let rp: Vec<PathBuf> = rels.iter().map(|r| self.r(r)).collect();
        let out = f(&mp).unwrap_or_else(|e| {
            panic!(
                "{what} {:?} in the mount failed: {e} ({})",
                rels,
                errno_name(&e)
            )
        });
        f(&rp).unwrap_or_else(|e| panic!("{what} {rels:?} in the mirror failed: {e}"));
        out
    }
}

fn write_at(p: &Path, off: u64, data: &[u8]) -> std::io::Result<()> {
    let mut f = fs::OpenOptions::new().write(true).open(p)?;
    f.seek(SeekFrom::Start(off))?;
    f.write_all(data)
}

fn append(p: &Path, data: &[u8]) -> std::io::Result<()> {
    fs::OpenOptions::new().append(true).open(p)?.write_all(data)
}

fn set_len(p: &Path, len: u64) -> std::io::Result<()> {
    fs::OpenOptions::new().write(true).open(p)?.set_len(len)
}

/// One operation in the worker's own subtree. Returns its trace line.
fn private_op(p: &mut Private, rng: &mut Rng, st: &mut Stats) -> String {
    let nfiles = p.files.len();
    let mut choice = rng.below(100);
    // Keep the tree from growing without bound.
    if nfiles > 150 && choice < 46 {
        choice = 87 + rng.below(13);
    }
    if nfiles == 0 && (20..79).contains(&choice) {
        choice = 0;
    }
    if nfiles < 40 && choice >= 79 && rng.chance(1, 2) {
        choice = 0;
    }
    match choice {
        // create + write
        0..=19 => {
            let dir = p.pick_dir(rng);
            let name = p.fresh(rng, &dir, "f");
            let rel = join(&dir, &name);
            let n = rng.file_size();
            let data = rng.bytes(n);
            st.bytes_written += data.len() as u64;
            st.big_writes += (data.len() >= MIB) as u64;
            p.both("create", &[&rel], |ps| fs::write(&ps[0], &data));
            p.files.insert(rel.clone(), data.len() as u64);
            *st.ops.entry("create").or_default() += 1;
            format!("create {rel:?} {}", data.len())
        }
        // overwrite
        20..=26 => {
            let rel = p.pick_file(rng).unwrap();
            let n = rng.file_size();
            let data = rng.bytes(n);
            st.bytes_written += n as u64;
            st.big_writes += (n >= MIB) as u64;
            p.both("overwrite", &[&rel], |ps| fs::write(&ps[0], &data));
            p.files.insert(rel.clone(), n as u64);
            *st.ops.entry("overwrite").or_default() += 1;
            format!("overwrite {rel:?} {n}")
        }
        // append
        27..=32 => {
            let rel = p.pick_file(rng).unwrap();
            let n = rng.chunk_size();
            let data = rng.bytes(n);
            st.bytes_written += n as u64;
            p.both("append", &[&rel], |ps| append(&ps[0], &data));
            *p.files.get_mut(&rel).unwrap() += n as u64;
            *st.ops.entry("append").or_default() += 1;
            format!("append {rel:?} {n}")
        }
        // truncate, shrink or grow
        33..=38 => {
            let rel = p.pick_file(rng).unwrap();
            let len = p.files[&rel];
            let new = if rng.chance(1, 2) {
                rng.below(len + 1)
            } else if rng.chance(1, 30) {
                len + MIB as u64 + rng.below(2 * MIB as u64)
            } else {
                len + rng.below(96 * KIB as u64)
            };
            p.both("truncate", &[&rel], |ps| set_len(&ps[0], new));
            p.files.insert(rel.clone(), new);
            *st.ops
                .entry(if new < len {
                    "truncate-shrink"
                } else {
                    "truncate-grow"
                })
                .or_default() += 1;
            format!("truncate {rel:?} {len} -> {new}")
        }
        // write at an offset (past the end now and then: a hole)
        39..=45 => {
            let rel = p.pick_file(rng).unwrap();
            let len = p.files[&rel];
            let off = rng.below(len + 32 * KIB as u64 + 1);
            let n = rng.chunk_size();
            let data = rng.bytes(n);
            st.bytes_written += n as u64;
            p.both("write-at", &[&rel], |ps| write_at(&ps[0], off, &data));
            p.files.insert(rel.clone(), len.max(off + n as u64));
            *st.ops.entry("write-at").or_default() += 1;
            format!("write-at {rel:?} off {off} len {n} (was {len})")
        }
        // rename a file: same dir, another, deeper; now and then over an existing file
        46..=54 => {
            let from = p.pick_file(rng).unwrap();
            let dir = p.pick_dir(rng);
            let others: Vec<&String> = p
                .files
                .keys()
                .filter(|f| parent_of(f) == dir && **f != from)
                .collect();
            let to = if !others.is_empty() && rng.chance(1, 4) {
                rng.pick(&others).to_string()
            } else {
                let name = p.fresh(rng, &dir, "f");
                join(&dir, &name)
            };
            let replaced = p.files.contains_key(&to);
            p.both("rename file", &[&from, &to], |ps| {
                fs::rename(&ps[0], &ps[1])
            });
            let len = p.files.remove(&from).unwrap();
            p.files.insert(to.clone(), len);
            *st.ops
                .entry(if replaced {
                    "rename-file-over"
                } else {
                    "rename-file"
                })
                .or_default() += 1;
            format!(
                "rename {from:?} -> {to:?}{}",
                if replaced { " (replacing)" } else { "" }
            )
        }
        // rename a directory: into another, deeper, or over an empty one
        55..=60 => {
            let candidates: Vec<&String> = p.dirs.iter().filter(|d| !d.is_empty()).collect();
            if candidates.is_empty() {
                return mkdir(p, rng, st);
            }
            let from = rng.pick(&candidates).to_string();
            // How deep the tree below `from` goes: where it lands, it stays within 8 levels.
            let height = p
                .dirs
                .iter()
                .chain(p.files.keys())
                .filter(|x| under(x, &from))
                .map(|x| depth(x) - depth(&from))
                .max()
                .unwrap_or(0);
            let targets: Vec<&String> = p
                .dirs
                .iter()
                .filter(|d| **d != from && !under(d, &from) && depth(d) + 1 + height <= 8)
                .collect();
            if targets.is_empty() {
                return mkdir(p, rng, st);
            }
            let dir = rng.pick(&targets).to_string();
            let empty_here: Vec<&String> = p
                .dirs
                .iter()
                .filter(|d| {
                    !d.is_empty()
                        && parent_of(d) == dir
                        && **d != from
                        && !under(&from, d)
                        && !p.dirs.iter().any(|x| under(x, d))
                        && !p.files.keys().any(|x| under(x, d))
                })
                .collect();
            let to = if !empty_here.is_empty() && rng.chance(1, 5) {
                rng.pick(&empty_here).to_string()
            } else {
                let name = p.fresh(rng, &dir, "d");
                join(&dir, &name)
            };
            let replaced = p.dirs.contains(&to);
            p.both("rename dir", &[&from, &to], |ps| fs::rename(&ps[0], &ps[1]));
            let moved = |x: &String| -> String {
                if *x == from {
                    to.clone()
                } else if under(x, &from) {
                    format!("{to}{}", &x[from.len()..])
                } else {
                    x.clone()
                }
            };
            p.dirs = p.dirs.iter().map(moved).collect();
            p.files = p.files.iter().map(|(k, v)| (moved(k), *v)).collect();
            *st.ops
                .entry(if replaced {
                    "rename-dir-over"
                } else {
                    "rename-dir"
                })
                .or_default() += 1;
            format!(
                "rename dir {from:?} -> {to:?}{}",
                if replaced {
                    " (replacing an empty one)"
                } else {
                    ""
                }
            )
        }
        // mkdir, nested mkdir
        61..=66 => mkdir(p, rng, st),
        67..=70 => {
            let mut dir = p.pick_dir(rng);
            if depth(&dir) > 4 {
                dir = String::new();
            }
            let mut created = Vec::new();
            let mut cur = dir.clone();
            for _ in 0..2 + rng.below(2) {
                let name = p.fresh(rng, &cur, "d");
                cur = join(&cur, &name);
                created.push(cur.clone());
            }
            p.both("mkdir -p", &[&cur], |ps| fs::create_dir_all(&ps[0]));
            p.dirs.extend(created);
            *st.ops.entry("mkdir-nested").or_default() += 1;
            format!("mkdir -p {cur:?}")
        }
        // read back and compare with the mirror
        71..=76 => {
            let rel = p.pick_file(rng).unwrap();
            let got = fs::read(p.m(&rel)).unwrap_or_else(|e| {
                panic!("read {rel:?} in the mount failed: {e} ({})", errno_name(&e))
            });
            let want = fs::read(p.r(&rel)).unwrap();
            if got != want {
                let first = got.iter().zip(&want).position(|(a, b)| a != b);
                panic!(
                    "read {rel:?}: the mount gave {} bytes, the mirror has {}; first difference at {:?}",
                    got.len(),
                    want.len(),
                    first
                );
            }
            *st.ops.entry("read-verify").or_default() += 1;
            format!("read {rel:?} ok ({} bytes)", got.len())
        }
        // move one of ours into the shared subtree; if the shared folder is missing (the
        // other workers decide that), delete it instead: gone from ours either way, so
        // what follows in our subtree does not depend on the races in the shared one
        77..=78 => {
            let from = p.pick_file(rng).unwrap();
            let to = shared_file(rng);
            let r = fs::rename(p.m(&from), p.mnt.parent().unwrap().join(&to));
            let line = match r {
                Ok(()) => {
                    *st.ops.entry("move-to-shared").or_default() += 1;
                    format!("move {from:?} -> /{to}")
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) && p.m(&from).exists() => {
                    *st.tolerated
                        .entry("move-to-shared ENOENT".into())
                        .or_default() += 1;
                    fs::remove_file(p.m(&from)).unwrap_or_else(|e| {
                        panic!(
                            "unlink {from:?} in the mount failed: {e} ({})",
                            errno_name(&e)
                        )
                    });
                    format!("move {from:?} -> /{to}: ENOENT (no such shared dir); unlinked")
                }
                Err(e) => panic!("move {from:?} -> /{to} failed: {e} ({})", errno_name(&e)),
            };
            fs::remove_file(p.r(&from)).unwrap();
            p.files.remove(&from);
            line
        }
        // rmdir of an empty one, or a whole small subtree
        79..=86 => {
            let empty: Vec<&String> = p
                .dirs
                .iter()
                .filter(|d| {
                    !d.is_empty()
                        && !p.dirs.iter().any(|x| under(x, d))
                        && !p.files.keys().any(|x| under(x, d))
                })
                .collect();
            if !empty.is_empty() && rng.chance(3, 4) {
                let d = rng.pick(&empty).to_string();
                p.both("rmdir", &[&d], |ps| fs::remove_dir(&ps[0]));
                p.dirs.remove(&d);
                *st.ops.entry("rmdir").or_default() += 1;
                return format!("rmdir {d:?}");
            }
            let small: Vec<&String> = p
                .dirs
                .iter()
                .filter(|d| !d.is_empty() && p.files.keys().filter(|x| under(x, d)).count() <= 12)
                .collect();
            if small.is_empty() || rng.chance(1, 2) {
                return unlink(p, rng, st);
            }
            let d = rng.pick(&small).to_string();
            p.both("rm -r", &[&d], |ps| fs::remove_dir_all(&ps[0]));
            p.dirs.retain(|x| *x != d && !under(x, &d));
            p.files.retain(|x, _| !under(x, &d));
            *st.ops.entry("rm-r").or_default() += 1;
            format!("rm -r {d:?}")
        }
        // unlink
        _ => unlink(p, rng, st),
    }
}

fn mkdir(p: &mut Private, rng: &mut Rng, st: &mut Stats) -> String {
    let mut dir = p.pick_dir(rng);
    if depth(&dir) > 5 {
        dir = String::new();
    }
    let name = p.fresh(rng, &dir, "d");
    let rel = join(&dir, &name);
    p.both("mkdir", &[&rel], |ps| fs::create_dir(&ps[0]));
    p.dirs.insert(rel.clone());
    *st.ops.entry("mkdir").or_default() += 1;
    format!("mkdir {rel:?}")
}

fn unlink(p: &mut Private, rng: &mut Rng, st: &mut Stats) -> String {
    if p.files.is_empty() {
        return mkdir(p, rng, st);
    }
    let rel = p.pick_file(rng).unwrap();
    p.both("unlink", &[&rel], |ps| fs::remove_file(&ps[0]));
    p.files.remove(&rel);
    *st.ops.entry("unlink").or_default() += 1;
    format!("unlink {rel:?}")
}

/// A directory of the shared subtree: `shared` and up to three levels (mostly fewer)
/// from a small pool of names, so workers meet each other.
fn shared_dir(rng: &mut Rng, min_depth: u64) -> String {
    let mut s = "shared".to_string();
    let extra = [0, 0, 0, 1, 1, 2][rng.below(6) as usize];
    for _ in 0..(min_depth + extra).min(3) {
        s.push_str(&format!("/d{}", rng.below(3)));
    }
    s
}

fn shared_file(rng: &mut Rng) -> String {
    let d = shared_dir(rng, 0);
    format!("{d}/f{}", rng.below(6))
}

/// One operation in the shared subtree, where other workers race: the errors a race can
/// explain are tolerated (and counted), any other fails the worker.
fn shared_op(mnt: &Path, rng: &mut Rng, st: &mut Stats) -> String {
    let choice = rng.below(100);
    let (what, desc, r, ok): (&'static str, String, std::io::Result<()>, &[i32]) = match choice {
        0..=11 => {
            let d = shared_dir(rng, 1);
            (
                "mkdir",
                d.clone(),
                fs::create_dir(mnt.join(&d)),
                &[libc::ENOENT, libc::EEXIST],
            )
        }
        12..=16 => {
            let d = shared_dir(rng, 2);
            (
                "mkdir-nested",
                d.clone(),
                fs::create_dir_all(mnt.join(&d)),
                &[libc::ENOENT, libc::EEXIST],
            )
        }
        17..=34 => {
            let f = shared_file(rng);
            let n = rng.file_size();
            let data = rng.bytes(n);
            st.bytes_written += data.len() as u64;
            st.big_writes += (data.len() >= MIB) as u64;
            (
                "write",
                format!("{f} {}", data.len()),
                fs::write(mnt.join(&f), &data),
                &[libc::ENOENT],
            )
        }
        35..=41 => {
            let f = shared_file(rng);
            let n = rng.chunk_size();
            let data = rng.bytes(n);
            st.bytes_written += n as u64;
            (
                "append",
                format!("{f} {n}"),
                append(&mnt.join(&f), &data),
                &[libc::ENOENT],
            )
        }
        42..=47 => {
            let f = shared_file(rng);
            let len = rng.below(96 * KIB as u64);
            (
                "truncate",
                format!("{f} {len}"),
                set_len(&mnt.join(&f), len),
                &[libc::ENOENT],
            )
        }
        48..=54 => {
            let f = shared_file(rng);
            let off = rng.below(80 * KIB as u64);
            let n = rng.chunk_size();
            let data = rng.bytes(n);
            st.bytes_written += n as u64;
            (
                "write-at",
                format!("{f} off {off} len {n}"),
                write_at(&mnt.join(&f), off, &data),
                &[libc::ENOENT],
            )
        }
        55..=66 => {
            let a = shared_file(rng);
            let b = shared_file(rng);
            (
                "rename-file",
                format!("{a} -> {b}"),
                fs::rename(mnt.join(&a), mnt.join(&b)),
                &[libc::ENOENT],
            )
        }
        67..=74 => {
            let a = shared_dir(rng, 1);
            let b = shared_dir(rng, 1);
            (
                "rename-dir",
                format!("{a} -> {b}"),
                fs::rename(mnt.join(&a), mnt.join(&b)),
                &[libc::ENOENT, libc::EEXIST, libc::ENOTEMPTY, libc::EINVAL],
            )
        }
        75..=81 => {
            let d = shared_dir(rng, 1);
            (
                "rmdir",
                d.clone(),
                fs::remove_dir(mnt.join(&d)),
                &[libc::ENOENT, libc::ENOTEMPTY],
            )
        }
        82..=83 => {
            let d = shared_dir(rng, 2);
            (
                "rm-r",
                d.clone(),
                fs::remove_dir_all(mnt.join(&d)),
                &[libc::ENOENT, libc::ENOTEMPTY],
            )
        }
        84..=93 => {
            let f = shared_file(rng);
            (
                "unlink",
                f.clone(),
                fs::remove_file(mnt.join(&f)),
                &[libc::ENOENT],
            )
        }
        _ => {
            let f = shared_file(rng);
            let r = fs::File::open(mnt.join(&f)).and_then(|mut h| {
                let mut buf = Vec::new();
                h.read_to_end(&mut buf).map(|_| ())
            });
            ("read", f.clone(), r, &[libc::ENOENT])
        }
    };
    match r {
        Ok(()) => {
            *st.ops
                .entry(match what {
                    "mkdir" => "shared-mkdir",
                    "mkdir-nested" => "shared-mkdir-nested",
                    "write" => "shared-write",
                    "append" => "shared-append",
                    "truncate" => "shared-truncate",
                    "write-at" => "shared-write-at",
                    "rename-file" => "shared-rename-file",
                    "rename-dir" => "shared-rename-dir",
                    "rmdir" => "shared-rmdir",
                    "rm-r" => "shared-rm-r",
                    "unlink" => "shared-unlink",
                    _ => "shared-read",
                })
                .or_default() += 1;
            format!("shared {what} {desc}: ok")
        }
        Err(e) if e.raw_os_error().is_some_and(|n| ok.contains(&n)) => {
            *st.tolerated
                .entry(format!("shared-{what} {}", errno_name(&e)))
                .or_default() += 1;
            format!("shared {what} {desc}: {} (tolerated)", errno_name(&e))
        }
        Err(e) => panic!("shared {what} {desc} failed: {e} ({})", errno_name(&e)),
    }
}

/// The worker's body: `job.ops` operations, about 70% in its own subtree, then a check of
/// its subtree in the mount against its mirror.
fn run_worker(job: &Job) {
    let start = Instant::now();
    let mut rng = Rng::new(mix(job.seed, job.round, job.id));
    let mut trace = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&job.trace)
        .unwrap();
    let mut p = Private::load(job);
    let mut st = Stats::default();
    if !p.mnt.exists() {
        p.both("mkdir (own root)", &[""], |ps| fs::create_dir(&ps[0]));
    }
    // The first worker makes the shared root; the others may find it missing for a moment.
    if job.id == 0 {
        match fs::create_dir(job.mnt.join("shared")) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => panic!("mkdir /shared: {e}"),
        }
    }
    let mut slowest: Vec<(u128, String)> = Vec::new();
    for i in 0..job.ops {
        // Written before the operation, so a hang shows where.
        let shared = rng.chance(3, 10);
        let _ = write!(trace, "{i}: ");
        let t = Instant::now();
        let line = if shared {
            shared_op(&job.mnt, &mut rng, &mut st)
        } else {
            private_op(&mut p, &mut rng, &mut st)
        };
        let ms = t.elapsed().as_millis();
        let _ = writeln!(trace, "{line} [{ms} ms]");
        slowest.push((ms, line));
        slowest.sort_by_key(|s| std::cmp::Reverse(s.0));
        slowest.truncate(3);
    }
    let ops_done = start.elapsed();
    // Our subtree in the mount must be what the mirror holds.
    let name = format!("w{}/", job.id);
    let d = diff(
        "the mount",
        &walk(&p.mnt, &name),
        "the mirror",
        &walk(&p.mirror, &name),
    );
    assert!(
        d.is_empty(),
        "{}",
        show_diff(
            &format!(
                "worker {} after round {}: mount vs mirror",
                job.id, job.round
            ),
            &d
        )
    );
    let report = json!({
        "id": job.id,
        "round": job.round,
        "ops": st.ops,
        "tolerated": st.tolerated,
        "bytes_written": st.bytes_written,
        "big_writes": st.big_writes,
        "files": p.files.len(),
        "dirs": p.dirs.len(),
        "secs": ops_done.as_secs_f64(),
        "verify_secs": (start.elapsed() - ops_done).as_secs_f64(),
        "slowest": slowest.iter().map(|(ms, l)| format!("{ms} ms: {l}")).collect::<Vec<_>>(),
    });
    println!("\nSTRESS-REPORT {report}");
}

/// Does the work of one worker process when run with `DAVDRIVE_STRESS_WORKER`; nothing
/// otherwise.
#[test]
fn stress_worker() {
    let Ok(s) = std::env::var(WORKER_ENV) else {
        return;
    };
    run_worker(&Job::from_env(&s));
}

// ---------------------------------------------------------------------------------------
// The conductor

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => {
            let v = v.trim();
            let parsed = if let Some(h) = v.strip_prefix("0x") {
                u64::from_str_radix(h, 16)
            } else {
                v.parse()
            };
            parsed.unwrap_or_else(|_| panic!("{name}={v}: not a number"))
        }
        Err(_) => default,
    }
}

struct RoundResult {
    failures: Vec<String>,
    reports: Vec<Value>,
    secs: f64,
}

fn tail_file(p: &Path, n: usize) -> String {
    let s = fs::read_to_string(p).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Runs one round: `workers` processes at once, each `ops` operations; waits for all.
fn run_round(
    base: &Path,
    mnt: &Path,
    seed: u64,
    round: u64,
    workers: u64,
    ops: u64,
    timeout: Duration,
) -> RoundResult {
    let start = Instant::now();
    let exe = std::env::current_exe().unwrap();
    let mut children: Vec<(u64, Child, PathBuf, PathBuf, PathBuf)> = Vec::new();
    for id in 0..workers {
        let out = base.join(format!("w{id}-r{round}.out"));
        let err = base.join(format!("w{id}-r{round}.err"));
        let trace = base.join(format!("w{id}-r{round}.trace"));
        let job = Job {
            id,
            round,
            seed,
            ops,
            mnt: mnt.to_path_buf(),
            mirror: base.join("mirror"),
            trace: trace.clone(),
        };
        let child = Command::new(&exe)
            .args([
                "--exact",
                "stress_worker",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(WORKER_ENV, job.to_env())
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out).unwrap())
            .stderr(fs::File::create(&err).unwrap())
            .spawn()
            .unwrap();
        children.push((id, child, out, err, trace));
    }
    let deadline = Instant::now() + timeout;
    let mut failures = Vec::new();
    let mut reports = Vec::new();
    for (id, mut child, out, err, trace) in children {
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break Some(s);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let stdout = fs::read_to_string(&out).unwrap_or_default();
        match status {
            Some(s) if s.success() && stdout.contains("STRESS-REPORT ") => {
                for l in stdout.lines() {
                    if let Some(i) = l.find("STRESS-REPORT ") {
                        let j = &l[i + "STRESS-REPORT ".len()..];
                        reports.push(serde_json::from_str(j).unwrap());
                    }
                }
            }
            s => {
                let stderr = fs::read_to_string(&err).unwrap_or_default();
                // The panic, without the test harness's lines around it.
                let panic_lines: Vec<&str> = stdout
                    .lines()
                    .chain(stderr.lines())
                    .filter(|l| {
                        !l.trim().is_empty()
                            && !l.starts_with("running ")
                            && !l.starts_with("test ")
                            && !l.starts_with("failures:")
                            && !l.starts_with("    stress_worker")
                            && !l.starts_with("note: run with `RUST_BACKTRACE")
                    })
                    .collect();
                failures.push(format!(
                    "round {round} worker {id}: {}\n--- its output ---\n{}\n--- last operations ({}) ---\n{}",
                    match s {
                        Some(s) => format!("exited with {s}"),
                        None => format!("killed after {}s (hung?)", timeout.as_secs()),
                    },
                    panic_lines.join("\n"),
                    trace.display(),
                    tail_file(&trace, 8)
                ));
            }
        }
    }
    RoundResult {
        failures,
        reports,
        secs: start.elapsed().as_secs_f64(),
    }
}

fn summarize(round: u64, r: &RoundResult) {
    let mut ops: BTreeMap<String, u64> = BTreeMap::new();
    let mut tolerated: BTreeMap<String, u64> = BTreeMap::new();
    let (mut bytes, mut big) = (0u64, 0u64);
    for rep in &r.reports {
        for (k, v) in rep["ops"].as_object().unwrap() {
            *ops.entry(k.clone()).or_default() += v.as_u64().unwrap();
        }
        for (k, v) in rep["tolerated"].as_object().unwrap() {
            *tolerated.entry(k.clone()).or_default() += v.as_u64().unwrap();
        }
        bytes += rep["bytes_written"].as_u64().unwrap();
        big += rep["big_writes"].as_u64().unwrap();
    }
    let total: u64 = ops.values().sum::<u64>() + tolerated.values().sum::<u64>();
    eprintln!(
        "[stress] round {round}: {} worker(s) done in {:.1}s, {total} ops, {:.1} MiB written ({big} writes of >= 1 MiB)",
        r.reports.len(),
        r.secs,
        bytes as f64 / MIB as f64,
    );
    for rep in &r.reports {
        eprintln!(
            "[stress]   worker {}: {:.1}s of operations, {:.1}s checking its subtree; slowest: {}",
            rep["id"],
            rep["secs"].as_f64().unwrap(),
            rep["verify_secs"].as_f64().unwrap(),
            rep["slowest"]
        );
    }
    eprintln!("[stress]   ops: {ops:?}");
    eprintln!("[stress]   tolerated races: {tolerated:?}");
}

fn log_tail(m: &Mount, n: usize) -> String {
    let log = m.log_text();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| !l.contains("method=OPTIONS") && !l.contains("PROPFIND path=\"/\""))
        .collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[test]
fn fuse_stress() {
    if std::env::var(WORKER_ENV).is_ok() {
        return;
    }
    require_fuse();
    let seed = env_u64("DAVDRIVE_STRESS_SEED", 1);
    let ops = env_u64("DAVDRIVE_STRESS_OPS", 400);
    let workers = env_u64("DAVDRIVE_STRESS_WORKERS", 4);
    let warmup = env_u64("DAVDRIVE_STRESS_WARMUP", ops / 5);
    let timeout = Duration::from_secs(env_u64("DAVDRIVE_STRESS_TIMEOUT", 900));
    eprintln!(
        "[stress] seed {seed} ({seed:#x}), {workers} worker processes, {warmup} ops each online, \
         then {ops} offline, then {ops} during the replay"
    );
    let t0 = Instant::now();
    let server = Server::start();
    let base_dir = tempfile::tempdir().unwrap();
    let base = base_dir.path().to_path_buf();
    fs::create_dir_all(base.join("mirror")).unwrap();
    let m = Mount::start(&server.url(), &base, &[]);
    // Listed while the server is up.
    fs::read_dir(&m.mnt).unwrap().count();
    let mut failures: Vec<String> = Vec::new();

    // Round 0, online: a tree the server knows, for the offline round to change.
    if warmup > 0 {
        let r = run_round(&base, &m.mnt, seed, 0, workers, warmup, timeout);
        summarize(0, &r);
        failures.extend(r.failures);
        let (ok, out, err) = ctl(&m, &["sync", "--wait", "--timeout", "300s"]);
        if !ok {
            failures.push(format!("sync --wait after round 0 failed: {out}{err}"));
        }
    }

    // Round 1: the server is down.
    server.proxy.set_fault(Fault::Refuse);
    if failures.is_empty() {
        let r = run_round(&base, &m.mnt, seed, 1, workers, ops, timeout);
        summarize(1, &r);
        failures.extend(r.failures);
    }
    let st = ctl_json(&m, &["status"]);
    eprintln!(
        "[stress] after round 1: online {}, journal {}, cache {}",
        st["online"], st["journal"], st["cache"]
    );

    // Round 2: the server is back, and the workload goes on while the journal replays.
    server.proxy.clear_fault();
    if failures.is_empty() {
        let r = run_round(&base, &m.mnt, seed, 2, workers, ops, timeout);
        summarize(2, &r);
        failures.extend(r.failures);
        let st = ctl_json(&m, &["status"]);
        eprintln!("[stress] after round 2: journal {}", st["journal"]);
    }

    let t_sync = Instant::now();
    let (ok, out, err) = ctl(&m, &["sync", "--wait", "--timeout", "300s"]);
    let sync_secs = t_sync.elapsed().as_secs_f64();
    eprintln!(
        "[stress] sync --wait: ok {ok} after {sync_secs:.1}s: {}{}",
        out.trim(),
        err.trim()
    );
    if !ok {
        failures.push(format!("ctl sync --wait --timeout 300s failed: {out}{err}"));
    }
    let failed = ctl_json(&m, &["journal", "--failed"]);
    if !failed.as_array().is_some_and(|a| a.is_empty()) {
        failures.push(format!(
            "failed journal entries: {}",
            serde_json::to_string_pretty(&failed).unwrap()
        ));
    }
    let conflicts = ctl_json(&m, &["conflicts"]);
    if !conflicts.as_array().is_some_and(|a| a.is_empty()) {
        failures.push(format!(
            "conflicts recorded (there is only one client): {}",
            serde_json::to_string_pretty(&conflicts).unwrap()
        ));
    }

    if std::env::var("DAVDRIVE_STRESS_SELFTEST").is_ok() {
        // Check the checker: as another client would, on the server side; the mount may
        // pick these up, the mirrors cannot.
        fs::write(server.path("selftest-stray.txt"), b"stray").unwrap();
        let victim = walk(&server.path("w0"), "w0/")
            .into_iter()
            .find(|(_, e)| matches!(e, Entry::File { len, .. } if *len > 0))
            .map(|(k, _)| k);
        if let Some(v) = victim {
            let mut data = fs::read(server.path(&v)).unwrap();
            data[0] ^= 1;
            fs::write(server.path(&v), data).unwrap();
            eprintln!("[stress] selftest: flipped a bit of {v} and added selftest-stray.txt on the server");
        }
    }

    // The trees.
    let t_cmp = Instant::now();
    let on_server = walk(&server.root, "");
    let in_mount = walk(&m.mnt, "");
    let d = diff("the mount", &in_mount, "the server", &on_server);
    if !d.is_empty() {
        failures.push(show_diff("mount vs server", &d));
    }
    let mut mirrors = BTreeMap::new();
    for id in 0..workers {
        let name = format!("w{id}");
        let mirror = base.join("mirror").join(&name);
        if mirror.exists() {
            mirrors.insert(name.clone(), Entry::Dir);
            mirrors.extend(walk(&mirror, &format!("{name}/")));
        }
    }
    let server_private: BTreeMap<String, Entry> = on_server
        .iter()
        .filter(|(k, _)| !(k.as_str() == "shared" || k.starts_with("shared/")))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let d = diff("the mirror", &mirrors, "the server", &server_private);
    if !d.is_empty() {
        failures.push(show_diff("workers' mirrors vs server (own subtrees)", &d));
    }
    let files = on_server
        .values()
        .filter(|e| matches!(e, Entry::File { .. }))
        .count();
    let dirs = on_server.values().filter(|e| **e == Entry::Dir).count();
    let bytes: u64 = on_server
        .values()
        .map(|e| match e {
            Entry::File { len, .. } => *len,
            _ => 0,
        })
        .sum();
    let shared_files = on_server
        .iter()
        .filter(|(k, e)| k.starts_with("shared/") && matches!(e, Entry::File { .. }))
        .count();
    let log = m.log_text();
    let warns = log.lines().filter(|l| l.contains(" WARN ")).count();
    let errors = log.lines().filter(|l| l.contains(" ERROR ")).count();
    eprintln!(
        "[stress] final tree: {files} files ({shared_files} in shared), {dirs} dirs, {:.1} MiB; \
         compared in {:.1}s; daemon log: {warns} WARN, {errors} ERROR lines; total {:.1}s",
        bytes as f64 / MIB as f64,
        t_cmp.elapsed().as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );

    if failures.is_empty() && std::env::var("DAVDRIVE_STRESS_KEEP").is_ok() {
        eprintln!("[stress] kept {}", base_dir.keep().display());
        return;
    }
    if !failures.is_empty() {
        let kept = base_dir.keep();
        let interesting: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .collect();
        panic!(
            "stress run with seed {seed}, {workers} workers, {ops} ops failed:\n\n{}\n\n\
             --- WARN/ERROR lines of the daemon log (last 30 of {}) ---\n{}\n\n\
             --- tail of the daemon log ---\n{}\n\n(traces and the daemon log kept in {})",
            failures.join("\n\n"),
            interesting.len(),
            interesting[interesting.len().saturating_sub(30)..].join("\n"),
            log_tail(&m, 40),
            kept.display()
        );
    }
}
