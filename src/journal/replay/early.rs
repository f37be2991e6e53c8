//! The parts of a large new file sent while it is still being written (see
//! `fs::early_parts` for when and why). They go to the scratch file the upload in parts
//! uses, named on the entry before the first one goes, so a crash, a removal or a
//! conflict cleans it up as for any upload in parts. Once the writes are committed the
//! entry goes on as usual, resuming after the parts sent here.

use std::sync::Arc;
use std::time::Duration;

use super::put::{drop_scratch_or_queue, scratch_path};
use super::{ReplayError, ReplayResult};
use crate::fs::early_parts::{EarlyParts, PartReady};
use crate::fs::Core;
use crate::journal::{self, Entry};
use crate::remote::Precondition;
use crate::store;

/// How long the entry waits for its writer to finish the next part before it gives the
/// replayer's turn back (until the part is finished): a slow download into the drive,
/// or a file held open for days, must not hold a turn that other uploads need.
const PATIENCE: Duration = Duration::from_secs(1);

/// Sends the parts of `e`'s file that its writer has moved past, until its writes are
/// committed; then records them as the entry's progress so the upload in parts resumes
/// after them. `Parked` when the next part is slow to come, or the writer wrote below a
/// part already read.
pub(super) async fn send_while_written(
    core: &Arc<Core>,
    e: &Entry,
    early: &Arc<EarlyParts>,
) -> ReplayResult<()> {
    let remote = core.remote().clone();
    let local_path = core.content().path(e.ino);
    let scratch = scratch_path(&e.path, e.ino);
    let part = core.cfg.uploads.part;
    // Parts sent under another name (the file or a folder above it was renamed): they
    // go, and sending starts over under this one.
    let earlier = core.db().read(|c| journal::scratch_of(c, e.id))?;
    if earlier.is_some_and(|(_, old)| old != scratch) {
        drop_scratch_or_queue(core, e).await?;
        early.start_over();
    }
    let mut offset = early.sent();
    if offset > 0 {
        // A cut connection may have left part of the next part there too (a server
        // writing in place), which the next part overwrites; less than was sent means
        // the scratch file is not what was sent.
        let held = remote.stat(&scratch).await?.map_or(0, |s| s.size);
        if held < offset {
            early.start_over();
            offset = 0;
        }
    }
    core.db()
        .write(|tx| journal::set_scratch(tx, e.id, Some(&scratch)))?;
    loop {
        let end = offset + part;
        match early.part_ready(end, PATIENCE).await {
            PartReady::Written => {}
            PartReady::Sealed => break,
            PartReady::Broken => {
                early.park(None);
                return Err(ReplayError::Parked {
                    why: format!(
                        "{}: written below a part sent early; sent once closed",
                        e.path
                    ),
                    early: early.clone(),
                });
            }
            PartReady::NotYet => {
                early.park(Some(end));
                return Err(ReplayError::Parked {
                    why: format!("{}: still being written", e.path),
                    early: early.clone(),
                });
            }
        }
        // Removed here meanwhile: the upload as usual finds it gone and drops the parts.
        let placed = core.db().read(|c| store::get_node(c, e.ino))?;
        if placed.is_none_or(|n| n.parent == 0) {
            return Ok(());
        }
        if offset == 0 {
            let cond = Precondition::None;
            (remote.put(&scratch, &local_path, part, cond, None, None)).await?;
        } else {
            (remote.put_range(&scratch, &local_path, offset, part, None)).await?;
        }
        offset = end;
        early.set_sent(offset);
    }
    // Committed: the store has the file's size, times and version now. The parts sent
    // are a prefix of it unless it was written below them (then nothing counts). The
    // commit recorded them already; a part that was on the wire then is added here.
    // Only the count of bytes: the commit named the version they belong to (carried
    // over a rename or a change of times since, never over a change of content).
    let sent = early.sent();
    if let (true, Some(size)) = (sent > 0, early.sealed_size()) {
        core.db()
            .write(|tx| journal::raise_part_bytes(tx, e.id, sent.min(size)))?;
    }
    Ok(())
}
