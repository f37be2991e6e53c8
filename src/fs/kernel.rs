//! What the kernel holds of the tree and when it must forget it: content generations
//! (whether its page cache of a file may be kept), `forget`, and the notifications sent
//! through `KernelCache` when the remote changed.

use std::sync::Arc;

use super::{lock, Core, KernelCache};

impl Core {
    /// The cached content of `ino` was replaced behind the kernel's back.
    pub fn content_replaced(&self, ino: u64) {
        self.bump_content_gen(ino);
        lock(&self.verified).remove(&ino);
    }

    /// The kernel forgot inode `ino` (FUSE `forget`): its pages and entries of it are
    /// gone, so what is kept here about them goes too, unless the file is open. Keeps
    /// the per-inode maps as small as the kernel's inode cache, however many inodes a
    /// walk has seen. Everything dropped here is worked out again when needed.
    pub fn forget(&self, ino: u64) {
        if self.is_open(ino) {
            return;
        }
        lock(&self.content_gen).remove(&ino);
        lock(&self.dir_digests).remove(&ino);
        lock(&self.verified).remove(&ino);
    }

    pub(super) fn bump_content_gen(&self, ino: u64) {
        lock(&self.content_gen).entry(ino).or_insert((0, 0)).0 += 1;
    }

    /// True when the kernel's cached pages of `ino` still match our content; records
    /// that the kernel now holds the current generation.
    pub(super) fn kernel_cache_valid(&self, ino: u64) -> bool {
        let mut gens = lock(&self.content_gen);
        let e = gens.entry(ino).or_insert((0, u64::MAX));
        let valid = e.1 == e.0;
        e.1 = e.0;
        valid
    }

    /// Lets the FUSE adapter hear of what the kernel must forget: attributes, pages and
    /// names that changed on the remote. Set once; later calls are ignored.
    pub fn set_kernel_cache(&self, k: Arc<dyn KernelCache>) {
        let _ = self.kernel.set(k);
    }

    /// Tells the kernel (when there is one) that what it holds of `ino` is stale.
    pub(super) fn kernel_inval_inode(&self, ino: u64) {
        if let Some(k) = self.kernel.get() {
            k.inval_inode(ino);
        }
    }

    /// Tells the kernel (when there is one) that `name` in `parent` changed.
    pub(super) fn kernel_inval_entry(&self, parent: u64, name: &str) {
        if let Some(k) = self.kernel.get() {
            k.inval_entry(parent, name);
        }
    }

    /// Content of `ino` was dropped because the remote has a newer version: the kernel's
    /// pages and our record of them are stale.
    pub(super) fn content_dropped(&self, ino: u64) {
        self.bump_content_gen(ino);
        lock(&self.verified).remove(&ino);
        self.kernel_inval_inode(ino);
    }
}
