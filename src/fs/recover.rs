//! Recovery at start (`Core::load` runs it): the root node, journal entries left running,
//! orphans of files unlinked while open, and files written but not closed when the daemon
//! died, whose uploads are queued again.

use super::{Core, FsResult};
use crate::journal;
use crate::store::{self, Kind, NewNode, RangeSet, ROOT_INO};

impl Core {
    pub(super) fn recover(&self) -> FsResult<()> {
        // Not a `write`: this transaction is IMMEDIATE. It writes, and a deferred
        // transaction that must upgrade while another connection writes fails at once
        // instead of waiting (busy_timeout).
        let orphans = self.store.with_writer(|conn| {
            let tx = rusqlite::Transaction::new_unchecked(
                conn,
                rusqlite::TransactionBehavior::Immediate,
            )?;
            if store::get_node(&tx, ROOT_INO)?.is_none() {
                let ino = store::insert_node(
                    &tx,
                    &NewNode {
                        parent: 0,
                        name: "",
                        kind: Kind::Dir,
                        size: 0,
                        mtime_ns: store::now_ns(),
                        mode: 0o755,
                        uid: self.cfg.uid,
                        gid: self.cfg.gid,
                        etag: None,
                        on_remote: true,
                        dirty: false,
                        ranges: RangeSet::default(),
                        listed_at: None,
                        last_access: self.cfg.clock.now_s(),
                    },
                )?;
                debug_assert_eq!(ino, ROOT_INO);
            }
            journal::reset_running(&tx)?;
            // Files unlinked while open die with the process that held them.
            let orphans = store::nodes::orphans(&tx)?;
            for ino in &orphans {
                store::delete_node(&tx, *ino)?;
            }
            // Files written but not closed when the daemon died: what reached the content
            // file is all there is, so its size is the file's and it is queued (an upload
            // already waiting covers it). This holds for files with a waiting upload too: a
            // file reopened and written (grown or cut) after its last close has a node that
            // still says the size of that close.
            let dirty = store::nodes::dirty_files(&tx)?;
            // A read-only mount queues nothing: they wait for the next read-write mount.
            let dirty = if self.cfg.read_only {
                Vec::new()
            } else {
                dirty
            };
            for ino in &dirty {
                let node = store::get_node(&tx, *ino)?.expect("selected above");
                let size = if node.fully_cached() {
                    // Writes to a file all here are recorded at close: what reached the
                    // content file is the file, and which bytes changed is not known.
                    let size = self.content.len(*ino)?;
                    store::set_local_content(&tx, *ino, size, node.mtime_ns)?;
                    store::forget_written(&tx, *ino)?;
                    size
                } else {
                    // Written without the rest of it here (partial updates): each write was
                    // recorded (size, ranges present and written) before its bytes went
                    // into the content file. A write cut off by the crash may leave zeros
                    // in its range, as on a local disk; the bytes not here stay the
                    // server's.
                    let f = self.content.open(*ino)?;
                    if f.metadata()?.len() < node.size {
                        f.set_len(node.size)?;
                    }
                    node.size
                };
                if let Some(path) = store::path_of(&tx, *ino)? {
                    tracing::info!("recovering unfinished write of {path} ({size} bytes)");
                    journal::record_put(&tx, *ino, &path)?;
                }
            }
            tx.commit()?;
            FsResult::Ok(orphans)
        })?;
        for ino in orphans {
            self.content.remove(ino);
        }
        // Upload snapshots of earlier versions lived here; they are held in memory now.
        let _ = std::fs::remove_dir_all(self.cache_dir.join("uploads"));
        Ok(())
    }
}
