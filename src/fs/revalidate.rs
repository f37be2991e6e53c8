//! Whether cached content may be served: fresh (at open, once the folder's listing is
//! older than the attribute TTL, it is asked for again) and whole (bound version, length
//! and SHA-256 checked before the first serve in a run; hashes recorded after download).

use super::{lock, Core, FsResult};
use crate::cache::sha256_prefix;
use crate::store::{self, nodes::has_unsent_changes, Kind};

/// Clean cached files up to this size are hashed before their first read in a run;
/// larger ones in the background, so that no open waits for more than a small file's
/// hash (until checked they are read through davdrive, never handed to passthrough).
const VERIFY_AT_OPEN_LIMIT: u64 = 8 << 20;

impl Core {
    /// A file became fully cached from the remote: hash it in the background and record
    /// the hash against the ETag its content is bound to. (Chunks are not checked one by
    /// one against that ETag: a file changed on the server in the middle of a download
    /// can be stitched from two versions; see the README.)
    pub(super) fn record_complete_download(&self, ino: u64) {
        let Some(me) = self.me.upgrade() else { return };
        self.rt.spawn_blocking(move || {
            tracing::debug!("hashing the fully cached content of inode {ino}");
            if let Err(e) = me.hash_clean_content(ino, true) {
                tracing::debug!("could not hash cached content of inode {ino}: {e}");
            }
        });
    }

    /// Hashes the content file of a clean, fully cached file. With `record`, stores the
    /// hash; without, compares with the stored one. Returns whether the content is good
    /// (true also when there is nothing to check).
    fn hash_clean_content(&self, ino: u64, record: bool) -> FsResult<bool> {
        let node = self.node(ino)?;
        if node.dirty || !node.fully_cached() || node.content_etag != node.etag {
            return Ok(true);
        }
        let expected = node.sha256.clone();
        if !record && expected.is_none() {
            // Not hashed yet: a download whose background check against the server's
            // checksum has not run is checked here, before it is served.
            let Some(spec) = &node.remote_checksum else {
                return Ok(true);
            };
            let path = self.content.path(ino);
            return Ok(crate::cache::checksum_matches(spec, &path, node.size)? != Some(false));
        }
        let path = self.content.path(ino);
        let sha = match sha256_prefix(&path, node.size) {
            Ok(s) => s,
            // Shorter than the file: truncated.
            Err(e) if e.kind() == std::io::ErrorKind::Other => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        if record {
            if let Some(spec) = &node.remote_checksum {
                if let Some(false) = crate::cache::checksum_matches(spec, &path, node.size)? {
                    let name = self.path(ino).unwrap_or_default();
                    tracing::error!(
                        "{name}: the downloaded content does not match the server's checksum \
                         ({spec}); dropping it, it is fetched again at the next read"
                    );
                    let dropped = self.store.write(|tx| {
                        if has_unsent_changes(tx, ino)? {
                            return Ok(false);
                        }
                        if self.is_open(ino) {
                            // Open files keep their content until closed; bound to no
                            // version, it is dropped at the next open (see below).
                            store::versions::unbind_content(tx, ino)?;
                            lock(&self.verified).remove(&ino);
                            return Ok(false);
                        }
                        // The content file goes under the writer, as in `evict`.
                        store::drop_content(tx, ino)?;
                        self.content.remove(ino);
                        Ok::<_, rusqlite::Error>(true)
                    })?;
                    if dropped {
                        self.content_dropped(ino);
                    }
                    return Ok(false);
                }
            }
            let recorded = self.store.write(|tx| {
                store::versions::record_content_hash(tx, ino, &sha, node.etag.as_deref(), node.size)
            })?;
            if recorded {
                lock(&self.verified).insert(ino);
            }
            return Ok(true);
        }
        let good = expected.as_deref() == Some(sha.as_str());
        if good {
            lock(&self.verified).insert(ino);
        }
        Ok(good)
    }

    /// Before a clean cached file is served for the first time in this run: content
    /// bound to another remote version, cut short, or not matching its recorded hash is
    /// a miss and is dropped, never served.
    pub(super) fn check_cached_content(&self, ino: u64) -> FsResult<()> {
        let verified = lock(&self.verified).contains(&ino); // a leaf lock: released here
        if verified || self.is_open(ino) {
            return Ok(());
        }
        let node = self.node(ino)?;
        if node.kind != Kind::File || node.dirty || node.ranges.is_empty() {
            return Ok(());
        }
        let bound_elsewhere = node.content_etag != node.etag;
        let on_disk = self.content.len(ino)?;
        let short = on_disk < node.ranges.end();
        if !bound_elsewhere && !short && node.size > VERIFY_AT_OPEN_LIMIT {
            // Hashing this at open would stall it for long: checked in the background
            // (and dropped if damaged); until then it is not handed to passthrough.
            if !lock(&self.verifying).insert(ino) {
                return Ok(()); // already being checked
            }
            if let Some(me) = self.me.upgrade() {
                self.rt.spawn_blocking(move || {
                    let good = me.hash_clean_content(ino, false);
                    lock(&me.verifying).remove(&ino);
                    if let Ok(false) = good {
                        let path = me.path(ino).unwrap_or_default();
                        tracing::warn!(
                            "{path}: cached content is damaged (hash mismatch); dropping it"
                        );
                        let dropped = me.store.write(|tx| {
                            if me.is_open(ino) || has_unsent_changes(tx, ino).unwrap_or(true) {
                                return Ok(false);
                            }
                            let _ = store::drop_content(tx, ino);
                            me.content.remove(ino);
                            Ok::<_, rusqlite::Error>(true)
                        });
                        if dropped.unwrap_or(false) {
                            me.content_dropped(ino);
                        }
                    }
                });
            }
            return Ok(());
        }
        let damaged = !bound_elsewhere && !short && !self.hash_clean_content(ino, false)?;
        if !(bound_elsewhere || short || damaged) {
            if node.fully_cached() && node.sha256.is_some() {
                lock(&self.verified).insert(ino);
            }
            return Ok(());
        }
        let path = self.path(ino).unwrap_or_default();
        tracing::warn!(
            "{path}: cached content is {}; dropping it, it will be fetched again",
            if bound_elsewhere {
                "of another remote version"
            } else if short {
                "truncated"
            } else {
                "damaged (hash mismatch)"
            }
        );
        let dropped = self.store.write(|tx| {
            if self.is_open(ino) || has_unsent_changes(tx, ino)? {
                return Ok(false);
            }
            store::drop_content(tx, ino)?;
            self.content.remove(ino);
            Ok::<_, rusqlite::Error>(true)
        })?;
        if dropped {
            self.content_dropped(ino);
        }
        Ok(())
    }

    /// At open, once the file's folder listing is older than the attribute TTL: refreshes
    /// that listing, which answers for every file in the folder with one request (never a
    /// request per file). A newer remote version drops clean cached content (and the
    /// kernel's pages of it); a dirty file keeps its content and meets the newer version
    /// as a conflict at upload. A slow or unreachable remote: the cached version is
    /// served (see `ensure_listing_within`).
    pub(super) fn revalidate(&self, ino: u64) -> FsResult<()> {
        let node = self.node(ino)?;
        if node.kind != Kind::File || !node.on_remote || node.dirty || self.is_open(ino) {
            return Ok(());
        }
        self.ensure_listing_within(node.parent, self.cfg.attr_ttl)
    }
}
