//! Large files sent while they are still being written: once a file written whole (every
//! byte new, as by `cp` or `dd`) passes the size where uploads go in parts, its upload entry is
//! queued at once, and the replayer sends each part as soon as the writer has moved past
//! it (see `journal::replay::early`). The close then leaves only the last parts and the
//! final `MOVE`, so a 4 GiB copy is on the server about when the copy ends instead of an
//! upload's length later.
//!
//! A part is claimed before its bytes are read; a write or truncation below the claimed
//! end afterwards breaks the early parts (what went out may not be what the file holds),
//! and the upload then starts over from the first byte once the file is closed. The claim
//! and that check are one lock apart: a write that checks before the claim has already
//! put its bytes into the content file, so the read of the part sees them.
//!
//! Locks: `EarlyParts::state` is a leaf, taken under `OpenFile::state` by writes or alone
//! by the replayer (see the lock order in `fs/mod.rs`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::open_files::OpenFile;
use super::{lock, Core, FsResult};
use crate::journal;
use crate::store::{self, Kind};

/// What the replayer waits for before sending the next part.
#[derive(Debug, PartialEq, Eq)]
pub enum PartReady {
    /// The writer has passed the part's end; it is claimed.
    Written,
    /// The file was committed (closed or synced): its upload goes on as usual.
    Sealed,
    /// Written below a part already claimed: nothing sent early counts.
    Broken,
    /// Not written that far for a while (a slow or paused writer): the replayer gives
    /// its turn back until it is.
    NotYet,
}

/// Until when an entry that gave its turn back waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Parked {
    No,
    /// Until the file is written up to here (its next part is finished).
    UntilWritten(u64),
    /// Until the writes are committed.
    UntilCommitted,
}

/// The early parts of one upload entry, shared by the file's writes and the replayer.
pub struct EarlyParts {
    /// The journal entry (an upload of the file) that sends them.
    pub entry: i64,
    state: Mutex<EarlyState>,
    progress: Notify,
}

struct EarlyState {
    /// How far the file is written.
    size: u64,
    /// The end of the parts read for sending; a write below it breaks them.
    claim: u64,
    /// The end of the parts the server has taken.
    sent: u64,
    broken: bool,
    sealed: bool,
    /// The size committed at the seal: the parts sent are a prefix of that version
    /// (which the commit named in the entry's progress).
    sealed_size: Option<u64>,
    /// Whether the entry gave its turn back, and until when.
    parked: Parked,
    /// What the entry was parked for happened: it is to be woken (until a wake lands on
    /// it, since one tried while it was still running finds nothing to wake).
    wake_due: bool,
}

impl std::fmt::Debug for EarlyParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EarlyParts(entry {})", self.entry)
    }
}

impl EarlyParts {
    fn new(entry: i64, size: u64) -> EarlyParts {
        EarlyParts {
            entry,
            state: Mutex::new(EarlyState {
                size,
                claim: 0,
                sent: 0,
                broken: false,
                sealed: false,
                sealed_size: None,
                parked: Parked::No,
                wake_due: false,
            }),
            progress: Notify::new(),
        }
    }

    /// A write of `[offset, ..)` that left the file `new_size` long (its bytes are in
    /// the content file already). Returns whether the entry is to be woken.
    pub(super) fn written(&self, offset: u64, new_size: u64) -> bool {
        self.changed(offset, new_size)
    }

    /// The file was cut (or grown) to `new_size`. Returns whether the entry is to be
    /// woken.
    pub(super) fn cut(&self, new_size: u64) -> bool {
        self.changed(new_size, new_size)
    }

    fn changed(&self, lowest: u64, new_size: u64) -> bool {
        let mut st = lock(&self.state);
        if lowest < st.claim {
            st.broken = true;
        }
        st.size = new_size;
        // Only when the wake becomes due: one that finds the entry still running is
        // made by the entry itself once parked (see `replay::park`).
        let wake = !st.wake_due && matches!(st.parked, Parked::UntilWritten(at) if new_size >= at);
        if wake {
            st.wake_due = true;
        }
        drop(st);
        self.progress.notify_waiters();
        wake
    }

    /// The writes were committed, at `size` (none when the entry was gone): the upload
    /// entry takes the file as the store has it.
    pub(super) fn seal(&self, size: Option<u64>) {
        let mut st = lock(&self.state);
        st.sealed = true;
        st.sealed_size = size;
        if st.parked != Parked::No {
            st.wake_due = true;
        }
        drop(st);
        self.progress.notify_waiters();
    }

    /// The entry gives its turn back until the file is written up to `until` (its next
    /// part is finished), or with `None` until the writes are committed.
    pub fn park(&self, until: Option<u64>) {
        let mut st = lock(&self.state);
        st.parked = match until {
            Some(at) => Parked::UntilWritten(at),
            None => Parked::UntilCommitted,
        };
        st.wake_due = st.sealed || until.is_some_and(|at| st.size >= at);
    }

    /// Whether what the entry was parked for has happened and no wake landed yet.
    pub fn wake_due(&self) -> bool {
        lock(&self.state).wake_due
    }

    /// A wake landed on the entry (or it runs again).
    pub fn woken(&self) {
        let mut st = lock(&self.state);
        st.parked = Parked::No;
        st.wake_due = false;
    }

    /// Waits until the file is written past `end` (then claims up to there), committed
    /// or broken, for at most `patience`.
    pub async fn part_ready(&self, end: u64, patience: Duration) -> PartReady {
        self.woken();
        let deadline = Instant::now() + patience;
        loop {
            let notified = self.progress.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = lock(&self.state);
                if st.broken {
                    return PartReady::Broken;
                }
                if st.sealed {
                    return PartReady::Sealed;
                }
                if st.size >= end {
                    st.claim = st.claim.max(end);
                    return PartReady::Written;
                }
            }
            if Instant::now() >= deadline {
                return PartReady::NotYet;
            }
            let _ = tokio::time::timeout_at(deadline, notified).await;
        }
    }

    /// Where the parts the server holds end (0: none, or not to be trusted).
    pub fn sent(&self) -> u64 {
        let st = lock(&self.state);
        if st.broken {
            0
        } else {
            st.sent
        }
    }

    pub fn set_sent(&self, end: u64) {
        lock(&self.state).sent = end;
    }

    /// Nothing sent counts any more (the parts went under another name): claims start
    /// over too, as no read of a part is in flight.
    pub fn start_over(&self) {
        let mut st = lock(&self.state);
        st.sent = 0;
        st.claim = 0;
    }

    /// The size of the committed version the parts sent belong to (none before the
    /// commit, or if broken).
    pub fn sealed_size(&self) -> Option<u64> {
        let st = lock(&self.state);
        st.sealed_size.filter(|_| !st.broken)
    }
}

impl Core {
    /// Called after a write that left file `ino` at least `parts_from` long: queues its
    /// upload now when every byte of it was written since its last commit (so it is
    /// sent whole), no entry of it waits, and the server is known to take parts.
    /// Decided once per open file.
    pub(super) fn maybe_send_while_written(&self, ino: u64, of: &Arc<OpenFile>) -> FsResult<()> {
        {
            let st = lock(&of.state);
            if st.early.is_some() || st.early_declined || st.size < st.early_next_try {
                return Ok(());
            }
        }
        if !self.health.is_online() || self.cfg.read_only {
            // Asked again at the next write: the answer can change.
            return Ok(());
        }
        match self.partial_put.get() {
            Some(true) => {}
            Some(false) => {
                lock(&of.state).early_declined = true;
                return Ok(());
            }
            None => {
                // Not asked yet: asked now (once per open file), off this call, for the
                // writes that follow.
                if std::mem::replace(&mut lock(&of.state).early_probed, true) {
                    return Ok(());
                }
                let (known, remote) = (self.partial_put.clone(), self.remote.clone());
                self.rt.spawn(async move {
                    let _ = known
                        .get_or_try_init(|| remote.partial_put_supported())
                        .await;
                });
                return Ok(());
            }
        }
        let started = self.store.write(|tx| {
            let mut st = lock(&of.state);
            if st.early.is_some() || st.early_declined || st.size < st.early_next_try {
                return FsResult::Ok(false);
            }
            // Every byte new: the upload sends it whole (a partial update only sends a
            // part of a version the server has).
            let all_new = st.written.covers(0, st.size);
            let node = store::get_node(tx, ino)?;
            let placed = node.is_some_and(|n| n.kind == Kind::File && n.parent != 0);
            let path = store::path_of(tx, ino)?;
            let Some(path) = path.filter(|_| all_new && placed) else {
                st.early_declined = true;
                return Ok(false);
            };
            match journal::start_put_while_written(tx, ino, &path)? {
                Some(id) => st.early = Some(Arc::new(EarlyParts::new(id, st.size))),
                // An entry of it waits (the empty file `dd` commits when it closes its
                // first descriptor, say): asked again a part later.
                None => st.early_next_try = st.size + self.cfg.uploads.part,
            }
            Ok(st.early.is_some())
        })?;
        if started {
            tracing::debug!("inode {ino}: its parts go while it is written");
            self.journal_changed.notify_one();
        }
        Ok(())
    }

    /// Wakes the parked entry sending `early`, now that its file was written. Marked
    /// woken under the store's writer, so that it cannot clear a later park of the
    /// entry. A failure only leaves the entry to its fallback retry.
    pub(super) fn wake_early_parts(&self, early: &EarlyParts) {
        let woke = self.store.write(|tx| {
            let woke = journal::wake(tx, early.entry)?;
            if woke {
                early.woken();
            }
            Ok::<_, rusqlite::Error>(woke)
        });
        match woke {
            Ok(true) => self.journal_changed.notify_one(),
            Ok(false) => {}
            Err(e) => tracing::warn!("could not wake the upload of entry {}: {e}", early.entry),
        }
    }

    /// The upload entries that wait for writes not committed yet (their files are still
    /// being written): nothing of theirs is for `ctl sync --wait` to wait for. Called
    /// under the store's writer (the lock order), in the transaction that counts them.
    pub fn uploads_awaiting_commit(&self) -> Vec<i64> {
        let open: Vec<_> = lock(&self.open_files).values().cloned().collect();
        let early = open.iter().filter_map(|of| lock(&of.state).early.clone());
        early.map(|e| e.entry).collect()
    }

    /// The early parts entry `entry` sends for file `ino`, while its writes are not
    /// committed yet.
    pub fn early_parts_of(&self, ino: u64, entry: i64) -> Option<Arc<EarlyParts>> {
        let of = lock(&self.open_files).get(&ino).cloned()?;
        let st = lock(&of.state);
        st.early.clone().filter(|e| e.entry == entry)
    }
}
