//! Model-based property test of the sync journal: random sequences of namespace and
//! content operations on the core (no kernel), interleaved with outages, 503 storms,
//! clean restarts and crashes of the core on the same state dir. After the remote
//! returns and the journal drains, the server's tree and every file's bytes must equal a
//! simple in-memory model, and so must the local view.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use davdrive::fs::{Core, CoreConfig};
use davdrive::journal;
use davdrive::store::{Kind, ROOT_INO};
use proptest::prelude::*;

use common::drive::Drive;
use common::Fault;

#[derive(Debug, Clone, PartialEq)]
enum Item {
    Dir,
    File(Vec<u8>),
}

type Model = BTreeMap<String, Item>;

#[derive(Debug, Clone)]
enum Action {
    Create {
        dir: usize,
        name: u8,
        len: u16,
        seed: u8,
    },
    Write {
        file: usize,
        at: u16,
        len: u16,
        seed: u8,
    },
    Truncate {
        file: usize,
        len: u16,
    },
    Rename {
        node: usize,
        dir: usize,
        name: u8,
    },
    Mkdir {
        dir: usize,
        name: u8,
    },
    Rmdir {
        dir: usize,
    },
    Unlink {
        file: usize,
    },
    Outage(bool),
    Storm503(bool),
    Restart,
    Crash,
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        4 => (any::<usize>(), 0u8..5, 0u16..3000, any::<u8>()).prop_map(|(dir, name, len, seed)| Action::Create { dir, name, len, seed }),
        3 => (any::<usize>(), any::<u16>(), 1u16..2000, any::<u8>()).prop_map(|(file, at, len, seed)| Action::Write { file, at, len, seed }),
        1 => (any::<usize>(), 0u16..4000).prop_map(|(file, len)| Action::Truncate { file, len }),
        3 => (any::<usize>(), any::<usize>(), 0u8..5).prop_map(|(node, dir, name)| Action::Rename { node, dir, name }),
        2 => (any::<usize>(), 0u8..4).prop_map(|(dir, name)| Action::Mkdir { dir, name }),
        1 => any::<usize>().prop_map(|dir| Action::Rmdir { dir }),
        2 => any::<usize>().prop_map(|file| Action::Unlink { file }),
        2 => any::<bool>().prop_map(Action::Outage),
        1 => any::<bool>().prop_map(Action::Storm503),
        1 => Just(Action::Restart),
        1 => Just(Action::Crash),
    ]
}

fn bytes(len: usize, seed: u8) -> Vec<u8> {
    common::pattern(len, seed as u64 + 1)
}

fn join(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// The shared drive (`common::drive`), with the listing times this test needs.
struct Harness {
    drive: Drive,
}

impl Harness {
    fn new() -> Harness {
        let drive = Drive::configured(tempfile::tempdir().unwrap(), |c| {
            c.core = CoreConfig {
                dir_ttl: Duration::from_millis(300),
                // The view is compared with the server after listings expire: each look
                // waits for its refresh, however busy the machine.
                refresh_wait: Duration::from_secs(10),
                ..CoreConfig::default()
            };
        });
        Harness { drive }
    }

    fn start(&mut self) {
        self.drive.start();
    }

    fn core(&self) -> &Arc<Core> {
        self.drive.core()
    }

    fn stop(&mut self, crash: bool) {
        if crash {
            self.drive.crash();
            // A request the dead daemon had sent may still be finishing on the server;
            // a real restart takes longer than that.
            self.drive.server.proxy.wait_idle(Duration::from_secs(10));
        } else {
            self.drive.stop();
        }
    }

    fn resolve(&self, path: &str) -> u64 {
        let mut ino = ROOT_INO;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            ino = self
                .core()
                .lookup(ino, part)
                .unwrap_or_else(|e| panic!("lookup {part} in {path}: {e}"))
                .ino;
        }
        ino
    }

    fn split(&self, path: &str) -> (u64, String) {
        let (dir, name) = path.rsplit_once('/').unwrap();
        (
            self.resolve(if dir.is_empty() { "/" } else { dir }),
            name.to_string(),
        )
    }

    fn read_file(&self, path: &str) -> Vec<u8> {
        let ino = self.resolve(path);
        let (fh, _) = self.core().open(ino, false).unwrap();
        let mut out = Vec::new();
        loop {
            let chunk = self.core().read(fh, out.len() as u64, 1 << 16).unwrap();
            if chunk.is_empty() {
                break;
            }
            out.extend_from_slice(&chunk);
        }
        self.core().release(fh).unwrap();
        out
    }

    fn write_file(&self, ino: u64, at: u64, data: &[u8]) {
        let (fh, _) = self.core().open(ino, true).unwrap();
        self.core().write(fh, at, data).unwrap();
        self.core().flush(fh).unwrap();
        self.core().release(fh).unwrap();
    }

    fn set_fault(&self, f: Option<Fault>) {
        self.drive.server.proxy.state.lock().unwrap().fault = f;
    }

    fn wait_drained(&self, what: &str) {
        // As `ctl sync` does: entries waiting out a backoff from the storms go now.
        self.core()
            .db()
            .write(|tx| journal::retry_waiting_now(tx))
            .unwrap();
        self.core().journal_changed.notify_one();
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let (waiting, failed, _) = self.core().db().write(|tx| journal::stats(tx)).unwrap();
            assert_eq!(
                failed,
                0,
                "entries failed for good: {:?} after {what}",
                self.core()
                    .db()
                    .write(|tx| journal::list(tx, true))
                    .unwrap()
            );
            if waiting == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "journal did not drain: {:?}",
                self.core()
                    .db()
                    .write(|tx| journal::list(tx, false))
                    .unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn server_tree(root: &Path) -> Model {
    fn walk(dir: &Path, rel: &str, out: &mut Model) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            let p = join(rel, &name);
            if e.file_type().unwrap().is_dir() {
                out.insert(p.clone(), Item::Dir);
                walk(&e.path(), &p, out);
            } else {
                out.insert(p, Item::File(std::fs::read(e.path()).unwrap()));
            }
        }
    }
    let mut m = Model::new();
    walk(root, "/", &mut m);
    m
}

/// The model with file contents shortened to length and hash, for readable failures.
fn digest(m: &Model) -> BTreeMap<String, String> {
    m.iter()
        .map(|(k, v)| {
            let d = match v {
                Item::Dir => "dir".to_string(),
                Item::File(b) => format!("{} bytes {}", b.len(), &common::sha256(b)[..12]),
            };
            (k.clone(), d)
        })
        .collect()
}

fn pick(m: &Model, i: usize, want: Option<&Item>, with_root: bool) -> Option<String> {
    let mut c: Vec<String> = m
        .iter()
        .filter(|(_, v)| match want {
            Some(Item::Dir) => **v == Item::Dir,
            Some(Item::File(_)) => matches!(v, Item::File(_)),
            None => true,
        })
        .map(|(k, _)| k.clone())
        .collect();
    if with_root {
        c.push("/".to_string());
    }
    if c.is_empty() {
        None
    } else {
        Some(c[i % c.len()].clone())
    }
}

fn is_empty_dir(m: &Model, p: &str) -> bool {
    let prefix = format!("{p}/");
    !m.keys().any(|k| k.starts_with(&prefix))
}

const NAMES: [&str; 5] = ["a", "b c", "d#1", "é.txt", "e+f"];

fn apply(h: &mut Harness, m: &mut Model, a: &Action) {
    match a {
        Action::Create {
            dir,
            name,
            len,
            seed,
        } => {
            let d = pick(m, *dir, Some(&Item::Dir), true).unwrap();
            let p = join(&d, NAMES[*name as usize]);
            if m.contains_key(&p) {
                return;
            }
            let data = bytes(*len as usize, *seed);
            let (parent, _) = (h.resolve(&d), ());
            let (attr, fh) = h
                .core()
                .create(parent, NAMES[*name as usize], 0o644, 0, 0)
                .unwrap();
            h.core().write(fh, 0, &data).unwrap();
            h.core().flush(fh).unwrap();
            h.core().release(fh).unwrap();
            assert_eq!(attr.kind, Kind::File);
            m.insert(p, Item::File(data));
        }
        Action::Write {
            file,
            at,
            len,
            seed,
        } => {
            let Some(p) = pick(m, *file, Some(&Item::File(vec![])), false) else {
                return;
            };
            let Item::File(cur) = m.get_mut(&p).unwrap() else {
                unreachable!()
            };
            let at = (*at as usize) % (cur.len() + 1);
            let data = bytes(*len as usize, *seed);
            let ino = h.resolve(&p);
            h.write_file(ino, at as u64, &data);
            if cur.len() < at + data.len() {
                cur.resize(at + data.len(), 0);
            }
            cur[at..at + data.len()].copy_from_slice(&data);
        }
        Action::Truncate { file, len } => {
            let Some(p) = pick(m, *file, Some(&Item::File(vec![])), false) else {
                return;
            };
            let ino = h.resolve(&p);
            h.core()
                .setattr(ino, None, None, None, Some(*len as u64), None)
                .unwrap();
            let Item::File(cur) = m.get_mut(&p).unwrap() else {
                unreachable!()
            };
            cur.resize(*len as usize, 0);
        }
        Action::Rename { node, dir, name } => {
            let Some(src) = pick(m, *node, None, false) else {
                return;
            };
            let d = pick(m, *dir, Some(&Item::Dir), true).unwrap();
            let dst = join(&d, NAMES[*name as usize]);
            let src_is_dir = m[&src] == Item::Dir;
            if dst == src || (src_is_dir && (d == src || d.starts_with(&format!("{src}/")))) {
                return;
            }
            if let Some(existing) = m.get(&dst) {
                let ok = match (src_is_dir, existing) {
                    (true, Item::Dir) => is_empty_dir(m, &dst),
                    (false, Item::File(_)) => true,
                    _ => false,
                };
                if !ok {
                    return;
                }
            }
            let (sp, sn) = h.split(&src);
            let dp = h.resolve(&d);
            h.core()
                .rename(sp, &sn, dp, NAMES[*name as usize], false)
                .unwrap_or_else(|e| panic!("rename {src} -> {dst}: {e}"));
            // Move the subtree in the model.
            let moved: Vec<(String, Item)> = m
                .iter()
                .filter(|(k, _)| **k == src || k.starts_with(&format!("{src}/")))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            m.remove(&dst);
            for (k, v) in moved {
                m.remove(&k);
                m.insert(format!("{dst}{}", &k[src.len()..]), v);
            }
        }
        Action::Mkdir { dir, name } => {
            let d = pick(m, *dir, Some(&Item::Dir), true).unwrap();
            let p = join(&d, &format!("dir{name}"));
            if m.contains_key(&p) {
                return;
            }
            let parent = h.resolve(&d);
            h.core()
                .mkdir(parent, &format!("dir{name}"), 0o755, 0, 0)
                .unwrap();
            m.insert(p, Item::Dir);
        }
        Action::Rmdir { dir } => {
            let Some(p) = pick(m, *dir, Some(&Item::Dir), false) else {
                return;
            };
            if !is_empty_dir(m, &p) {
                let (pp, n) = h.split(&p);
                let e = h.core().rmdir(pp, &n).unwrap_err();
                assert_eq!(e.errno(), libc::ENOTEMPTY);
                return;
            }
            let (pp, n) = h.split(&p);
            h.core().rmdir(pp, &n).unwrap();
            m.remove(&p);
        }
        Action::Unlink { file } => {
            let Some(p) = pick(m, *file, Some(&Item::File(vec![])), false) else {
                return;
            };
            let (pp, n) = h.split(&p);
            h.core().unlink(pp, &n).unwrap();
            m.remove(&p);
        }
        Action::Outage(on) => h.set_fault(if *on { Some(Fault::Refuse) } else { None }),
        Action::Storm503(on) => h.set_fault(if *on { Some(Fault::Status(503)) } else { None }),
        Action::Restart => {
            h.stop(false);
            h.start();
        }
        Action::Crash => {
            h.stop(true);
            h.start();
        }
    }
}

fn check(actions: Vec<Action>) {
    let mut h = Harness::new();
    let mut model = Model::new();
    // The root is listed once while online, as a first mount does.
    h.core()
        .opendir(ROOT_INO)
        .map(|fh| h.core().releasedir(fh))
        .unwrap();
    for a in &actions {
        apply(&mut h, &mut model, a);
    }
    h.set_fault(None);
    h.wait_drained(&format!("{actions:?}"));
    h.drive.server.proxy.wait_idle(Duration::from_secs(10));
    assert_eq!(
        digest(&server_tree(&h.drive.server.root)),
        digest(&model),
        "server tree after {actions:?}"
    );
    // The local view agrees too, after another restart.
    h.stop(false);
    h.start();
    for (p, item) in &model {
        if let Item::File(data) = item {
            assert_eq!(&h.read_file(p), data, "local content of {p}");
        }
    }
    h.stop(false);
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        max_shrink_iters: 200,
        ..ProptestConfig::default()
    })]

    #[test]
    fn remote_equals_model_after_replay(actions in proptest::collection::vec(action(), 1..40)) {
        check(actions);
    }
}

/// A fixed sequence that exercises every coalescing rule at once, offline.
#[test]
fn offline_sequence_with_coalescing_and_crash() {
    use Action::*;
    check(vec![
        Mkdir { dir: 0, name: 0 },
        Create {
            dir: 0,
            name: 0,
            len: 100,
            seed: 1,
        },
        Outage(true),
        Create {
            dir: 1,
            name: 1,
            len: 2000,
            seed: 2,
        },
        Write {
            file: 0,
            at: 10,
            len: 50,
            seed: 3,
        },
        Rename {
            node: 1,
            dir: 0,
            name: 2,
        },
        Mkdir { dir: 1, name: 1 },
        Create {
            dir: 2,
            name: 3,
            len: 10,
            seed: 4,
        },
        Unlink { file: 0 },
        Crash,
        Rename {
            node: 0,
            dir: 1,
            name: 4,
        },
        Truncate { file: 0, len: 5 },
        Restart,
        Outage(false),
    ]);
}

/// A daemon that dies with an upload in flight, and a file deleted after the restart:
/// the upload the server finished after the death is deleted, not left behind.
/// Creates `/a` with a slow server and waits until its upload is on the wire.
fn upload_on_the_wire(delay: Duration) -> (Harness, Model) {
    let mut h = Harness::new();
    let mut model = Model::new();
    h.set_fault(Some(Fault::Delay(delay)));
    apply(
        &mut h,
        &mut model,
        &Action::Create {
            dir: 0,
            name: 0,
            len: 700,
            seed: 3,
        },
    );
    common::wait_until(10, "the upload to reach the server", || {
        h.drive.server.proxy.body_bytes("PUT") >= 700
    });
    (h, model)
}

#[test]
fn upload_in_flight_at_a_crash_then_deleted() {
    let (mut h, mut model) = upload_on_the_wire(Duration::from_millis(400));
    apply(&mut h, &mut model, &Action::Crash);
    h.set_fault(None);
    apply(&mut h, &mut model, &Action::Unlink { file: 0 });
    h.wait_drained("unlink after a crash");
    h.drive.server.proxy.wait_idle(Duration::from_secs(10));
    assert_eq!(digest(&server_tree(&h.drive.server.root)), digest(&model));
    h.stop(false);
}

/// The same, but somebody else wrote the path after the dead daemon's upload: the
/// delete that cleans up after the upload leaves their file alone.
#[test]
fn cleanup_after_a_crash_leaves_a_stranger_file_alone() {
    let (mut h, mut model) = upload_on_the_wire(Duration::from_millis(200));
    apply(&mut h, &mut model, &Action::Outage(true));
    apply(&mut h, &mut model, &Action::Crash);
    std::fs::write(h.drive.server.path("a"), b"somebody else's").unwrap();
    apply(&mut h, &mut model, &Action::Unlink { file: 0 });
    apply(&mut h, &mut model, &Action::Outage(false));
    h.wait_drained("unlink after a crash");
    h.drive.server.proxy.wait_idle(Duration::from_secs(10));
    assert_eq!(
        std::fs::read(h.drive.server.path("a")).unwrap(),
        b"somebody else's"
    );
    h.stop(false);
}

/// Found by the property test: a directory whose creation was sent, renamed after a child
/// was made in it, then removed. The child's creation still needs the parent's, so the
/// parent's entries must not be turned into a delete in place.
#[test]
fn a_directory_removed_after_a_rename_keeps_what_its_children_need() {
    use Action::*;
    check(vec![
        Mkdir {
            dir: 15558037587672817812,
            name: 1,
        },
        Mkdir {
            dir: 9953528967592879267,
            name: 3,
        },
        Outage(true),
        Mkdir {
            dir: 17723683731660984232,
            name: 2,
        },
        Rename {
            node: 9670046835005837657,
            dir: 14501628384988745164,
            name: 2,
        },
        Rmdir {
            dir: 17081265471958164939,
        },
        Rename {
            node: 17803192587044345987,
            dir: 14198246616414409121,
            name: 4,
        },
        Mkdir {
            dir: 12340990113291873703,
            name: 3,
        },
        Rename {
            node: 17791025559660601556,
            dir: 8506514587793024920,
            name: 2,
        },
        Rmdir {
            dir: 15016730995760369999,
        },
        Rename {
            node: 2464294218868463761,
            dir: 7140037511640059557,
            name: 2,
        },
        Truncate {
            file: 7513251233672384871,
            len: 762,
        },
        Restart,
        Create {
            dir: 4948993998889385949,
            name: 2,
            len: 114,
            seed: 152,
        },
        Rmdir {
            dir: 9188931979552252354,
        },
        Rename {
            node: 7874257675103161843,
            dir: 8319335134487056803,
            name: 4,
        },
        Crash,
        Unlink {
            file: 4588508973943327148,
        },
        Create {
            dir: 4445687036980473511,
            name: 2,
            len: 2110,
            seed: 89,
        },
        Rmdir {
            dir: 5737559067229793246,
        },
        Truncate {
            file: 9358357829516451919,
            len: 817,
        },
        Create {
            dir: 5549821895375386237,
            name: 4,
            len: 792,
            seed: 100,
        },
        Write {
            file: 13692197857507729409,
            at: 32941,
            len: 822,
            seed: 67,
        },
        Storm503(true),
        Storm503(false),
        Unlink {
            file: 1925769440907009975,
        },
        Write {
            file: 5046320794916301047,
            at: 55568,
            len: 359,
            seed: 38,
        },
        Outage(false),
    ]);
}
