//! `Store`: the two connections to the state store the core holds, each behind its own
//! lock.
//!
//! - The writer (`write`, rarely `with_writer`): every change, and every read that must
//!   see the changes of the same unit of work. FUSE operations, the replayer and the
//!   sweeper take turns on it.
//! - The reader (`read`): a second connection opened read-only on the same file. In
//!   WAL mode a reader never waits for a writer: it sees the last commit as of its
//!   statement. `ctl status`, `ls`, `metrics` and `cache` read through it, so they
//!   answer at once even while a long unit of work holds the writer. It never sees
//!   uncommitted changes, so nothing that must read its own writes uses it.
//!
//! Nobody outside this module holds a connection: each is lent to a closure for one unit
//! of work and taken back when it returns. The closures are not async, so no connection
//! is held across an `.await`; a caller must not make a network call inside one either.
//!
//! Lock order: the writer and the reader are never held together, and neither closure
//! calls back into `Store` (the locks are not re-entrant: a `write` inside a `write`
//! waits for itself forever). Inside a closure the core may take its own locks that come
//! after `store` in the order `fs/mod.rs` lists; nothing taken before a closure starts
//! may be one that comes after it there.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OpenFlags, Transaction};

use super::StoreError;

/// The state store's two connections, each behind its own lock. Lock order: see the
/// top of this file (and `fs/mod.rs` for where `store` stands among the core's locks).
pub struct Store {
    writer: Mutex<Connection>,
    reader: Mutex<Connection>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not take the whole mount down with poisoned locks.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Store {
    /// Opens (creating and migrating) the store at `path` with its writer, then a
    /// read-only connection beside it.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let writer = super::open(path)?;
        let reader = open_reader(path)?;
        Ok(Store {
            writer: Mutex::new(writer),
            reader: Mutex::new(reader),
        })
    }

    /// Runs `f` in one transaction on the writer, committed when `f` succeeds (rolled
    /// back when it fails). The normal way to use the store: one unit of work, atomic.
    pub fn write<T, E: From<rusqlite::Error>>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut conn = lock(&self.writer);
        let tx = conn.transaction()?;
        let v = f(&tx)?;
        tx.commit()?;
        Ok(v)
    }

    /// Runs `f` on the writer with no transaction around it, for the few units of work
    /// that cannot be one: a pragma that may not change inside a transaction (`fsync`'s
    /// `with_full_sync`), or a step that must follow the commit while the writer is still
    /// held (a content file moved once its node is committed). `f` opens its own
    /// transaction where it changes anything. Each caller says why it needs this.
    pub fn with_writer<T, E: From<rusqlite::Error>>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, E>,
    ) -> Result<T, E> {
        let conn = lock(&self.writer);
        f(&conn)
    }

    /// Makes every commit so far durable across a power loss (see `store::sync_to_disk`).
    /// A checkpoint cannot run inside a transaction, so this is not a `write`.
    pub fn sync_to_disk(&self) -> rusqlite::Result<()> {
        super::sync_to_disk(&lock(&self.writer))
    }

    /// Runs `f` on the read-only connection, in one read transaction: every statement
    /// of `f` sees the same commit (the last one when it started), and none waits for
    /// the writer.
    pub fn read<T, E: From<rusqlite::Error>>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, E>,
    ) -> Result<T, E> {
        let conn = lock(&self.reader);
        let tx = conn.unchecked_transaction()?;
        let v = f(&tx)?;
        tx.commit()?;
        Ok(v)
    }
}

/// A read-only connection to the store at `path`, which `open` made and migrated.
fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NOFOLLOW,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.set_prepared_statement_cache_capacity(super::STATEMENT_CACHE);
    // `rarray(?)`, as on the writer (see `subtrees`).
    rusqlite::vtab::array::load_module(&conn)?;
    Ok(conn)
}
