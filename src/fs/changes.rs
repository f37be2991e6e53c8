//! What the replayer changed on the remote, and where. A listing (or a file's
//! revalidation) fetched while the replayer changed the remote may predate that change
//! and must not overrule it; but only a change that touches what was fetched matters,
//! so a busy replay elsewhere in the tree does not make every listing fail.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Changes remembered; a fetch that spans more than this many is refused.
const KEEP: usize = 4096;

#[derive(Default)]
pub struct RemoteChanges {
    epoch: AtomicU64,
    /// (epoch the change made, remote path it changed), oldest first.
    recent: Mutex<VecDeque<(u64, String)>>,
}

/// Whether `p` is `dir` or lies below it.
fn at_or_under(p: &str, dir: &str) -> bool {
    crate::journal::at_or_under(p, dir)
}

impl RemoteChanges {
    pub fn current(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// The replayer starts or finishes changing these remote paths.
    pub fn changed(&self, paths: &[&str]) {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let epoch = self.epoch.fetch_add(1, Ordering::SeqCst) + 1;
        for p in paths {
            recent.push_back((epoch, p.to_string()));
        }
        while recent.len() > KEEP {
            recent.pop_front();
        }
    }

    /// Whether a change since `since` may make a fetch of `path` stale: a change of
    /// `path` itself or of a folder above it, or (with `children`, for a listing) of an
    /// entry directly inside it.
    pub fn touched_since(&self, since: u64, path: &str, children: bool) -> bool {
        if self.current() == since {
            return false;
        }
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        match recent.front() {
            // Part of the history since then is forgotten: assume the worst.
            Some((oldest, _)) if *oldest > since + 1 => return true,
            None => return true,
            _ => {}
        }
        recent.iter().filter(|(e, _)| *e > since).any(|(_, p)| {
            at_or_under(path, p)
                || (children
                    && p.rsplit_once('/')
                        .map(|(parent, _)| if parent.is_empty() { "/" } else { parent })
                        == Some(path))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_changes_that_touch_what_was_fetched_count() {
        let c = RemoteChanges::default();
        let since = c.current();
        assert!(!c.touched_since(since, "/a", true));
        c.changed(&["/b/x"]);
        assert!(!c.touched_since(since, "/a", true));
        assert!(c.touched_since(since, "/b", true), "a child of /b");
        assert!(!c.touched_since(since, "/b", false), "not /b itself");
        assert!(c.touched_since(since, "/b/x", false));
        c.changed(&["/a", "/c"]);
        assert!(
            c.touched_since(since, "/a/deep/file", false),
            "a folder above it moved"
        );
        assert!(
            c.touched_since(since, "/", true),
            "/a and /c are in the root"
        );
        let later = c.current();
        assert!(!c.touched_since(later, "/a", true));
    }

    #[test]
    fn a_fetch_older_than_the_history_is_refused() {
        let c = RemoteChanges::default();
        let since = c.current();
        for i in 0..KEEP + 10 {
            c.changed(&[&format!("/elsewhere/{i}")]);
        }
        assert!(c.touched_since(since, "/a", true));
    }
}
