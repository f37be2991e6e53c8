//! An in-memory `Remote` for hermetic tests: a tree that answers as Apache mod_dav does
//! (seen through the WebDAV client's status mapping), plus fault hooks (offline, latency,
//! injected statuses, lost replies), another client's direct changes and a request log.
//!
//! Over 600 lines with its tests: a whole WebDAV tree with Apache's answers, fault
//! hooks and another client, for tests; kept in one file so its behaviour reads as one
//! server.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use reqwest::StatusCode;

use super::client::{normalize, quote_etag, status_error};
use super::{
    BodyHash, Entry, Precondition, PutReply, RangeReply, RangeStream, Remote, RemoteError,
    ServerInfo,
};

/// The request a call makes on the wire: what rules match and the log records.
/// `quota` is a `Stat` of "/" (PROPFIND Depth 0), `partial_put_supported`,
/// `partial_support` and `preconditions_honored` are `Probe`s of "/", `delete_if_match`
/// is a `Delete`, `move_file_if` a `Move`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Stat,
    List,
    Get,
    Put,
    PutRange,
    Mkcol,
    Delete,
    Move,
    /// `copy_file` (a `Move` rule does not match it).
    Copy,
    Probe,
}

/// Which paths a rule applies to. A `Move` matches on its source or its destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    Any,
    Exact(String),
    /// The path itself and everything below it.
    Subtree(String),
}

/// What a matching rule does to the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The server answers this status, nothing is applied, and it maps as `WebDav` maps
    /// it: 404 on `stat` is `Ok(None)`, 404 on `delete` and 405 on `mkcol` are `Ok(())`,
    /// 416 on `get_range` is empty data, 401/403 on `probe` is `Unauthorized`; the rest
    /// go through `status_error`, so 423 or 503 come out exactly as from `WebDav`
    /// (with no `retry_after`: no Retry-After header is simulated).
    Status(u16),
    /// The request never reaches the server.
    Transport,
    /// The server applies the request, then the reply is lost: a `Transport` error.
    LostReply,
    /// The call waits this long (`tokio::time::sleep`), then proceeds normally.
    Delay(Duration),
}

/// A fault rule: `Rule::on(Method::Put).at("/a").outcome(Outcome::Status(423)).times(1)`.
#[derive(Debug, Clone)]
pub struct Rule {
    /// `None`: any method.
    pub method: Option<Method>,
    pub path: PathMatch,
    /// Only the first N matching calls; `None`: all of them.
    pub times: Option<usize>,
    pub outcome: Outcome,
}

impl Rule {
    /// One method, any path, every call; the outcome is `Transport` until set.
    pub fn on(method: Method) -> Rule {
        let (path, outcome) = (PathMatch::Any, Outcome::Transport);
        Rule {
            method: Some(method),
            path,
            times: None,
            outcome,
        }
    }
    pub fn any_method() -> Rule {
        let mut rule = Rule::on(Method::Stat);
        rule.method = None;
        rule
    }
    pub fn at(mut self, path: &str) -> Rule {
        self.path = PathMatch::Exact(normalize(path));
        self
    }
    pub fn under(mut self, path: &str) -> Rule {
        self.path = PathMatch::Subtree(normalize(path));
        self
    }
    pub fn times(mut self, n: usize) -> Rule {
        self.times = Some(n);
        self
    }
    pub fn outcome(self, outcome: Outcome) -> Rule {
        Rule { outcome, ..self }
    }
}

pub type RuleId = u64;

/// One resource in `MemRemote::snapshot`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemItem {
    Dir,
    File(Vec<u8>),
}

#[derive(Debug, Clone)]
struct Node {
    /// `None` for a collection: content and ETag of a file.
    file: Option<(Bytes, String)>,
    mtime: SystemTime,
    /// A collection's version, shown as its ETag as `FolderEtags` says.
    dir_tag: u64,
}

impl Node {
    fn new(file: Option<(Bytes, String)>) -> Node {
        let mtime = now();
        Node {
            file,
            mtime,
            dir_tag: 0,
        }
    }
}

/// What ETag collections carry, and when it changes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FolderEtags {
    /// None at all (the default; nginx sends none).
    #[default]
    None,
    /// Changes when a member is added, removed or moved, not when a file's content
    /// changes (a tag made from the folder's mtime, as Apache's and dav-server's are).
    Members,
    /// Changes with anything below the folder, at any depth, content included
    /// (Nextcloud, ownCloud).
    Propagated,
}

#[derive(Default)]
struct State {
    tree: BTreeMap<String, Node>,
    /// One counter for all files: every content change or move takes a new value, so
    /// an ETag is never reused.
    next_tag: u64,
    rules: Vec<(RuleId, Rule)>,
    next_rule: RuleId,
    log: Vec<(Method, String)>,
    /// When kept (`keep_history`): every request, what the gate made of it, and every
    /// change of the tree, ours and the other client's, in order.
    history: Option<Vec<String>>,
    /// Every `get_range` asked for: path, offset and length.
    ranges_asked: Vec<(String, u64, u64)>,
    /// `get_range` calls under way now, and the most there were at once.
    gets_running: usize,
    gets_running_max: usize,
    offline: bool,
    latency: Duration,
    no_partial_put: bool,
    ignore_preconditions: bool,
    quota: (Option<u64>, Option<u64>),
    folder_etags: FolderEtags,
}

/// The in-memory remote; share it as `Arc<MemRemote>` between the code under test and
/// the test. Each trait call is one request: unlike `WebDav`, nothing is retried here.
pub struct MemRemote {
    state: Mutex<State>,
    /// Where streamed GET bodies stop until released (`hold_bodies_after`).
    body_hold: tokio::sync::watch::Sender<Option<u64>>,
}

/// Pieces a streamed GET body comes in, as a network hands them over.
const BODY_PIECE: usize = 64 << 10;

impl Default for MemRemote {
    fn default() -> Self {
        Self::new()
    }
}

/// Counts a `get_range` as under way until it returns (or its future is dropped).
struct GetRunning<'a>(&'a MemRemote);

impl Drop for GetRunning<'_> {
    fn drop(&mut self) {
        self.0.lock().gets_running -= 1;
    }
}

/// What the fault hooks let through.
enum Gate {
    Go,
    Lost,
    /// An injected status the client reads as a success that did nothing.
    Empty,
}

impl MemRemote {
    /// Just "/", online, no latency, partial PUT and preconditions honoured, no quota.
    pub fn new() -> MemRemote {
        let mut state = State::default();
        state.tree.insert("/".to_string(), Node::new(None));
        MemRemote {
            state: Mutex::new(state),
            body_hold: tokio::sync::watch::channel(None).0,
        }
    }

    /// Streamed GET bodies (`get_range_stream`) stop after their first `bytes` bytes,
    /// as a slow network would leave them, until `release_bodies`.
    pub fn hold_bodies_after(&self, bytes: u64) {
        self.body_hold.send_replace(Some(bytes));
    }

    pub fn release_bodies(&self) {
        self.body_hold.send_replace(None);
    }

    /// A GET, as `get_range` answers it, not held.
    async fn range_reply(
        &self,
        path: &str,
        offset: u64,
        len: u64,
    ) -> Result<RangeReply, RemoteError> {
        let empty = RangeReply {
            data: Bytes::new(),
            offset,
            total_size: None,
            etag: None,
        };
        if len == 0 {
            return Ok(empty);
        }
        let path = normalize(path);
        let _running = {
            let mut s = self.lock();
            s.ranges_asked.push((path.clone(), offset, len));
            s.gets_running += 1;
            s.gets_running_max = s.gets_running_max.max(s.gets_running);
            GetRunning(self)
        };
        let gate = self.gate(Method::Get, &path, None).await?;
        self.apply(gate, empty, |s| {
            if s.is_dir(&path) {
                return Err(refused(405, "a collection has no content"));
            }
            let (data, etag) = s.file(&path).ok_or(RemoteError::NotFound)?;
            let size = data.len() as u64;
            let (start, end) = (offset.min(size), offset.saturating_add(len).min(size));
            let data = data.slice(start as usize..end as usize);
            let (total_size, etag) = (Some(size), Some(etag.clone()));
            Ok(RangeReply {
                data,
                offset,
                total_size,
                etag,
            })
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock must not hide the real failure.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// While offline every call fails with `Transport` (after the latency).
    pub fn set_offline(&self, offline: bool) {
        self.lock().offline = offline;
    }
    /// Every call first sleeps this long with `tokio::time::sleep`.
    pub fn set_latency(&self, latency: Duration) {
        self.lock().latency = latency;
    }
    /// What `partial_put_supported` and `partial_support` answer; when false, `put_range`
    /// is `Refused{400}`.
    pub fn set_partial_put(&self, supported: bool) {
        self.lock().no_partial_put = !supported;
    }
    /// When false, If-Match and If-None-Match are ignored and writes go through, as on
    /// `rclone serve webdav`, and `preconditions_honored` answers false.
    pub fn set_preconditions_honored(&self, honored: bool) {
        self.lock().ignore_preconditions = !honored;
    }
    /// What `quota` answers: (available, used).
    pub fn set_quota(&self, available: Option<u64>, used: Option<u64>) {
        self.lock().quota = (available, used);
    }
    /// Whether and how collections carry an ETag (none by default).
    pub fn set_folder_etags(&self, mode: FolderEtags) {
        self.lock().folder_etags = mode;
    }

    /// The first matching rule with uses left decides, in insertion order.
    pub fn inject(&self, rule: Rule) -> RuleId {
        let mut s = self.lock();
        s.next_rule += 1;
        let id = s.next_rule;
        s.rules.push((id, rule));
        id
    }
    /// False when there is no such rule (used-up rules stay until removed or cleared).
    pub fn remove_rule(&self, id: RuleId) -> bool {
        let mut s = self.lock();
        let before = s.rules.len();
        s.rules.retain(|(i, _)| *i != id);
        s.rules.len() != before
    }
    pub fn clear_rules(&self) {
        self.lock().rules.clear();
    }

    /// Another client writes a file: no rules, log or preconditions. The parent must be a
    /// collection (`Refused{409}` otherwise). Returns the new ETag.
    pub fn other_put(&self, path: &str, data: impl Into<Bytes>) -> Result<String, RemoteError> {
        let mut s = self.lock();
        s.remember(|_| format!("other client: PUT {path}"));
        s.write(&normalize(path), data.into())
    }
    /// Another client's MKCOL, with `mkcol`'s answers.
    pub fn other_mkdir(&self, path: &str) -> Result<(), RemoteError> {
        let mut s = self.lock();
        s.remember(|_| format!("other client: MKCOL {path}"));
        s.mkcol(&normalize(path))
    }
    /// Another client's recursive DELETE; `NotFound` when missing, so typos show.
    pub fn other_delete(&self, path: &str) -> Result<(), RemoteError> {
        let (path, mut s) = (normalize(path), self.lock());
        s.remember(|_| format!("other client: DELETE {path}"));
        match s.tree.contains_key(&path) {
            true => s.delete(&path),
            false => Err(RemoteError::NotFound),
        }
    }
    /// Another client's MOVE with `Overwrite: T`, with `rename`'s answers.
    pub fn other_move(&self, from: &str, to: &str) -> Result<(), RemoteError> {
        let mut s = self.lock();
        s.remember(|_| format!("other client: MOVE {from} -> {to}"));
        s.mv(&normalize(from), &normalize(to), true)
    }

    /// Every resource but the root.
    pub fn snapshot(&self) -> BTreeMap<String, MemItem> {
        let s = self.lock();
        let item = |n: &Node| {
            n.file
                .as_ref()
                .map_or(MemItem::Dir, |f| MemItem::File(f.0.to_vec()))
        };
        s.tree
            .iter()
            .filter(|(k, _)| *k != "/")
            .map(|(k, n)| (k.clone(), item(n)))
            .collect()
    }
    /// A file's content; `None` for a collection or nothing.
    pub fn read(&self, path: &str) -> Option<Vec<u8>> {
        self.lock().file(&normalize(path)).map(|f| f.0.to_vec())
    }
    /// A file's current ETag, quoted; `None` for a collection or nothing.
    pub fn etag(&self, path: &str) -> Option<String> {
        self.lock().file(&normalize(path)).map(|f| f.1.clone())
    }

    /// Calls made of this kind, whatever came of them (offline and failed ones too).
    pub fn count(&self, method: Method) -> usize {
        self.lock().log.iter().filter(|(m, _)| *m == method).count()
    }
    /// Calls of this kind at `path` (a `Move` is logged at its source).
    pub fn count_at(&self, method: Method, path: &str) -> usize {
        let path = normalize(path);
        self.lock()
            .log
            .iter()
            .filter(|(m, p)| *m == method && *p == path)
            .count()
    }
    /// Starts keeping a history of requests and tree changes, for a failing test to
    /// print (`history`).
    pub fn keep_history(&self) {
        self.lock().history.get_or_insert_with(Vec::new);
    }
    /// The history kept since `keep_history`, with the test's own `note`s between.
    pub fn history(&self) -> Vec<String> {
        self.lock().history.clone().unwrap_or_default()
    }
    /// Adds a line of the test's own to the history (a step, say).
    pub fn note(&self, line: impl Into<String>) {
        let line = line.into();
        self.lock().remember(|_| line);
    }

    /// Every call so far, in order, with its (normalized) path.
    pub fn requests(&self) -> Vec<(Method, String)> {
        self.lock().log.clone()
    }
    /// Every `get_range` so far, in order: its (normalized) path, offset and length.
    pub fn ranges_asked(&self) -> Vec<(String, u64, u64)> {
        self.lock().ranges_asked.clone()
    }
    /// The most `get_range` calls that were under way at once (since the last
    /// `clear_log`): with a latency set, downloads running side by side show here.
    pub fn most_gets_at_once(&self) -> usize {
        self.lock().gets_running_max
    }
    /// `get_range` calls under way now.
    pub fn gets_running(&self) -> usize {
        self.lock().gets_running
    }
    pub fn clear_log(&self) {
        let mut s = self.lock();
        s.log.clear();
        s.ranges_asked.clear();
        s.gets_running_max = s.gets_running;
    }

    /// Logs the call, waits the latency, then applies offline mode and the rules.
    /// The lock is never held across a sleep.
    async fn gate(&self, m: Method, path: &str, to: Option<&str>) -> Result<Gate, RemoteError> {
        let latency = {
            let mut s = self.lock();
            s.log.push((m, path.to_string()));
            s.remember(|_| {
                format!(
                    "{m:?} {path}{}",
                    to.map(|t| format!(" -> {t}")).unwrap_or_default()
                )
            });
            s.latency
        };
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let outcome = {
            let mut s = self.lock();
            let outcome = s.admit(m, path, to);
            s.remember(|_| match &outcome {
                Ok(None) => String::new(),
                Ok(Some(o)) => format!("  gate: {o:?}"),
                Err(e) => format!("  gate: {e}"),
            });
            outcome?
        };
        match outcome {
            None => Ok(Gate::Go),
            Some(Outcome::Delay(d)) => {
                tokio::time::sleep(d).await;
                // The link may have gone down while the request was held up.
                self.lock().admit(m, path, None).map(|_| Gate::Go)
            }
            Some(Outcome::Transport) => Err(RemoteError::Transport("injected".into())),
            Some(Outcome::LostReply) => Ok(Gate::Lost),
            Some(Outcome::Status(code)) => injected(m, code).map(|_| Gate::Empty),
        }
    }

    /// Runs `op` on the tree as the gate says.
    fn apply<T>(
        &self,
        gate: Gate,
        empty: T,
        op: impl FnOnce(&mut State) -> Result<T, RemoteError>,
    ) -> Result<T, RemoteError> {
        let run = |s: &mut State| {
            let r = op(s);
            if let Err(e) = &r {
                s.remember(|_| format!("  error: {e}"));
            }
            r
        };
        match gate {
            Gate::Go => run(&mut self.lock()),
            Gate::Empty => Ok(empty),
            Gate::Lost => {
                let _ = run(&mut self.lock());
                Err(RemoteError::Transport(
                    "injected: reply lost after the request was applied".into(),
                ))
            }
        }
    }
}

/// An injected status as `WebDav` reads it for this method: `Ok` for those it takes as
/// a success that did nothing.
fn injected(m: Method, code: u16) -> Result<(), RemoteError> {
    match (m, code) {
        (Method::Stat | Method::Delete, 404) | (Method::Mkcol, 405) | (Method::Get, 416) => Ok(()),
        (Method::Delete | Method::Move, 207) => Err(refused(207, "collection only partly done")),
        (Method::Probe, 401 | 403) => Err(RemoteError::Unauthorized(code)),
        (Method::Probe, 400 | 405 | 501) => {
            Err(RemoteError::NotDav(format!("PROPFIND answered {code}")))
        }
        _ => Err(status_error(
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        )),
    }
}

impl State {
    /// Adds a line to the history when one is kept (empty lines are not kept).
    fn remember(&mut self, line: impl FnOnce(&State) -> String) {
        if self.history.is_some() {
            let line = line(self);
            if let (false, Some(h)) = (line.is_empty(), self.history.as_mut()) {
                h.push(line);
            }
        }
    }

    /// Offline mode, then the first matching rule with uses left (which uses one up).
    fn admit(
        &mut self,
        m: Method,
        path: &str,
        to: Option<&str>,
    ) -> Result<Option<Outcome>, RemoteError> {
        if self.offline {
            return Err(RemoteError::Transport("memory remote is offline".into()));
        }
        let hit = |p: &PathMatch, path: &str| match p {
            PathMatch::Any => true,
            PathMatch::Exact(p) => p == path,
            PathMatch::Subtree(p) => in_subtree(path, p),
        };
        let Some((_, rule)) = self.rules.iter_mut().find(|(_, r)| {
            r.times != Some(0)
                && r.method.is_none_or(|x| x == m)
                && (hit(&r.path, path) || to.is_some_and(|t| hit(&r.path, t)))
        }) else {
            return Ok(None);
        };
        if let Some(n) = rule.times.as_mut() {
            *n -= 1;
        }
        Ok(Some(rule.outcome.clone()))
    }

    fn tag(&mut self) -> String {
        self.next_tag += 1;
        format!("\"m{}\"", self.next_tag)
    }

    fn entry(&self, path: &str) -> Option<Entry> {
        let n = self.tree.get(path)?;
        let dir_etag =
            (self.folder_etags != FolderEtags::None).then(|| format!("\"d{}\"", n.dir_tag));
        Some(Entry {
            name: path[path.rfind('/').map_or(0, |i| i + 1)..].to_string(),
            is_dir: n.file.is_none(),
            size: n.file.as_ref().map_or(0, |f| f.0.len() as u64),
            mtime: Some(n.mtime),
            etag: n.file.as_ref().map(|f| f.1.clone()).or(dir_etag),
            checksum: None,
            meta: None,
        })
    }

    /// Content and ETag of the file at `path`.
    fn file(&self, path: &str) -> Option<&(Bytes, String)> {
        self.tree.get(path)?.file.as_ref()
    }

    fn is_dir(&self, path: &str) -> bool {
        self.tree.get(path).is_some_and(|n| n.file.is_none())
    }

    /// Apache answers 409 Conflict when the parent is missing or is not a collection.
    fn need_parent(&self, path: &str) -> Result<(), RemoteError> {
        match self.is_dir(parent(path)) {
            true => Ok(()),
            false => Err(refused(409, "parent collection missing")),
        }
    }

    /// A collection's mtime moves when its members change, as on a file system; its
    /// ETag as `folder_etags` says. `members`: a member was added, removed or moved,
    /// rather than a file's content changed.
    fn touch_parent(&mut self, path: &str, members: bool) {
        if let Some(p) = self.tree.get_mut(parent(path)) {
            p.mtime = now();
        }
        let mut folders = Vec::new();
        match self.folder_etags {
            FolderEtags::None => {}
            FolderEtags::Members if members => folders.push(parent(path).to_string()),
            FolderEtags::Members => {}
            FolderEtags::Propagated => {
                let mut p = path;
                while p != "/" {
                    p = parent(p);
                    folders.push(p.to_string());
                }
            }
        }
        for f in folders {
            self.next_tag += 1;
            let tag = self.next_tag;
            if let Some(n) = self.tree.get_mut(&f) {
                n.dir_tag = tag;
            }
        }
    }

    /// Apache refuses a PUT onto a collection with 409 "Cannot PUT to a collection".
    fn write(&mut self, path: &str, data: Bytes) -> Result<String, RemoteError> {
        if self.is_dir(path) {
            return Err(refused(409, "cannot PUT to a collection"));
        }
        self.need_parent(path)?;
        let etag = self.tag();
        let node = Node::new(Some((data, etag.clone())));
        let existed = self.tree.insert(path.to_string(), node).is_some();
        self.touch_parent(path, !existed);
        self.remember(|s| format!("  = file {path} {etag} {}", brief(path_data(&s.tree, path))));
        Ok(etag)
    }

    /// Preconditions come before the other checks, as in mod_dav.
    fn put(
        &mut self,
        path: &str,
        data: Bytes,
        cond: &Precondition,
    ) -> Result<PutReply, RemoteError> {
        let ok = self.ignore_preconditions
            || match cond {
                Precondition::None => true,
                Precondition::IfMatch(t) => self.file(path).is_some_and(|f| f.1 == quote_etag(t)),
                Precondition::IfNoneMatch => !self.tree.contains_key(path),
            };
        if !ok {
            return Err(RemoteError::PreconditionFailed);
        }
        Ok(PutReply {
            etag: Some(self.write(path, data)?),
        })
    }

    /// Writes into an existing file, extending it; zeros fill a gap, as a sparse write.
    fn put_range(&mut self, path: &str, offset: u64, part: &[u8]) -> Result<PutReply, RemoteError> {
        if self.no_partial_put {
            return Err(refused(400, "Content-Range on PUT not supported"));
        }
        if self.is_dir(path) {
            return Err(refused(409, "cannot PUT to a collection"));
        }
        let Some((old, _)) = self.file(path) else {
            return self.need_parent(path).and(Err(RemoteError::NotFound));
        };
        let mut data = old.to_vec();
        let (start, end) = (offset as usize, offset as usize + part.len());
        data.resize(data.len().max(end), 0);
        data[start..end].copy_from_slice(part);
        let etag = self.tag();
        let node = Node::new(Some((data.into(), etag.clone())));
        self.tree.insert(path.to_string(), node);
        self.remember(|s| {
            format!(
                "  = range {offset}+{} of {path} {etag}: {}",
                part.len(),
                brief(path_data(&s.tree, path))
            )
        });
        if self.folder_etags == FolderEtags::Propagated {
            self.touch_parent(path, false);
        }
        Ok(PutReply { etag: Some(etag) })
    }

    fn mkcol(&mut self, path: &str) -> Result<(), RemoteError> {
        match self.tree.get(path) {
            Some(n) if n.file.is_none() => Ok(()),
            Some(_) => Err(refused(405, "a file exists at the MKCOL target")),
            None => {
                self.need_parent(path)?;
                self.next_tag += 1;
                let mut node = Node::new(None);
                node.dir_tag = self.next_tag;
                self.tree.insert(path.to_string(), node);
                self.touch_parent(path, true);
                self.remember(|_| format!("  = folder {path}"));
                Ok(())
            }
        }
    }

    fn remove_subtree(&mut self, path: &str) -> Vec<(String, Node)> {
        let mut keys: Vec<String> = self
            .tree
            .contains_key(path)
            .then(|| path.to_string())
            .into_iter()
            .collect();
        keys.extend(self.below(path).map(|(k, _)| k.clone()));
        keys.into_iter()
            .filter_map(|k| self.tree.remove(&k).map(|n| (k, n)))
            .collect()
    }

    /// Every entry strictly below `path`. They sort together: from `path/` up to
    /// `path0` ('0' follows '/'), which "/a b" (between "/a" and "/a/x") is not in.
    fn below<'a>(&'a self, path: &str) -> impl Iterator<Item = (&'a String, &'a Node)> + 'a {
        let (start, end) = if path == "/" {
            ("/".to_string(), "0".to_string())
        } else {
            (format!("{path}/"), format!("{path}0"))
        };
        self.tree
            .range::<String, _>((
                std::ops::Bound::Included(&start),
                std::ops::Bound::Excluded(&end),
            ))
            .filter(|(k, _)| k.as_str() != "/")
            .collect::<Vec<_>>()
            .into_iter()
    }

    /// Recursive; a missing resource is fine (`WebDav` takes 404 as done).
    fn delete(&mut self, path: &str) -> Result<(), RemoteError> {
        if path == "/" {
            return Err(refused(403, "cannot delete the root collection"));
        }
        if !self.remove_subtree(path).is_empty() {
            self.touch_parent(path, true);
            self.remember(|_| format!("  = removed {path}"));
        }
        Ok(())
    }

    /// MOVE with mod_dav's checks, in its order; moved files get new ETags.
    fn mv(&mut self, from: &str, to: &str, overwrite: bool) -> Result<(), RemoteError> {
        if from == "/" || to == "/" {
            return Err(refused(403, "cannot move the root collection"));
        }
        if !self.tree.contains_key(from) {
            return Err(RemoteError::NotFound);
        }
        if from == to || (self.is_dir(from) && in_subtree(to, from)) {
            return Err(refused(
                403,
                "source and destination are the same, or nested",
            ));
        }
        self.need_parent(to)?;
        if self.tree.contains_key(to) {
            if !overwrite {
                return Err(RemoteError::PreconditionFailed);
            }
            if in_subtree(from, to) {
                return Err(refused(403, "destination collection contains the source"));
            }
            self.remove_subtree(to);
        }
        for (key, mut node) in self.remove_subtree(from) {
            if let Some(file) = node.file.as_mut() {
                file.1 = self.tag();
            }
            self.tree
                .insert(format!("{to}{}", &key[from.len()..]), node);
        }
        self.touch_parent(from, true);
        self.touch_parent(to, true);
        self.remember(|_| format!("  = moved {from} -> {to}"));
        Ok(())
    }
}

/// A file's bytes at `path`, for the history.
fn path_data<'a>(tree: &'a BTreeMap<String, Node>, path: &str) -> &'a [u8] {
    tree.get(path)
        .and_then(|n| n.file.as_ref())
        .map_or(&[][..], |f| &f.0[..])
}

/// Length and the start of the SHA-256 of `data`, for the history.
fn brief(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let sha = Sha256::digest(data);
    format!(
        "{} bytes {:02x}{:02x}{:02x}{:02x}",
        data.len(),
        sha[0],
        sha[1],
        sha[2],
        sha[3]
    )
}

fn refused(status: u16, message: &str) -> RemoteError {
    RemoteError::Refused {
        status,
        message: message.to_string(),
    }
}

fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

fn in_subtree(path: &str, root: &str) -> bool {
    root == "/" || path == root || path.strip_prefix(root).is_some_and(|r| r.starts_with('/'))
}

/// HTTP dates carry whole seconds, and so do mtimes here, as from a real server.
fn now() -> SystemTime {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// The local file an upload sends, opened before its request goes, as over the wire: a
/// file shorter than `offset + len` fails before anything is sent.
fn open_body(local: &Path, offset: u64, len: u64) -> Result<std::fs::File, RemoteError> {
    let local_err = |e: String| RemoteError::Local(format!("{}: {e}", local.display()));
    let file = crate::cache::open_nofollow(local).map_err(|e| local_err(e.to_string()))?;
    let have = file.metadata().map_err(|e| local_err(e.to_string()))?.len();
    if have < offset + len {
        return Err(local_err(format!(
            "has {have} bytes, {} to upload",
            offset + len
        )));
    }
    Ok(file)
}

/// The body of an upload as the server takes it: read from the file opened before the
/// request went, once the request is through its gate (after any delay), so a write
/// landing while it was held up goes with it, and a removal of the file does not stop
/// it, as over the wire; the bytes feed `hash`. A file cut meanwhile cuts the body
/// short: the server takes nothing.
fn read_streamed(
    body: std::fs::File,
    offset: u64,
    len: u64,
    hash: Option<&BodyHash>,
) -> Result<Bytes, RemoteError> {
    use std::os::unix::fs::FileExt;
    let mut data = vec![0; len as usize];
    body.read_exact_at(&mut data, offset)
        .map_err(|e| RemoteError::Transport(format!("upload body cut short: {e}")))?;
    if let Some(h) = hash {
        h.feed(&data);
    }
    Ok(data.into())
}

#[async_trait]
impl Remote for MemRemote {
    async fn stat(&self, path: &str) -> Result<Option<Entry>, RemoteError> {
        let path = normalize(path);
        let gate = self.gate(Method::Stat, &path, None).await?;
        self.apply(gate, None, |s| Ok(s.entry(&path)))
    }

    /// A file is `Refused{405}` (`WebDav` would list nothing for it).
    async fn list(&self, path: &str) -> Result<Vec<Entry>, RemoteError> {
        Ok(self.list_dir(path).await?.1)
    }

    /// One `List` request: the collection's own entry with its children.
    async fn list_dir(&self, path: &str) -> Result<(Option<Entry>, Vec<Entry>), RemoteError> {
        let path = normalize(path);
        let gate = self.gate(Method::List, &path, None).await?;
        self.apply(gate, (None, Vec::new()), |s| match s.tree.get(&path) {
            None => Err(RemoteError::NotFound),
            Some(n) if n.file.is_some() => Err(refused(405, "not a collection")),
            Some(_) => {
                let children = s.below(&path).filter(|(k, _)| parent(k) == path);
                let children = children.filter_map(|(k, _)| s.entry(k)).collect();
                Ok((s.entry(&path), children))
            }
        })
    }

    /// A `Stat` request, as `stat`.
    async fn stat_dir(&self, path: &str) -> Result<Option<Entry>, RemoteError> {
        self.stat(path).await
    }

    /// Clamped to the file; past its end, empty data with `total_size` and `etag` set.
    /// A collection is `Refused{405}`. `len == 0` sends nothing, as in `WebDav`. A reply
    /// longer than `hold_bodies_after` allows comes once the bodies are released.
    async fn get_range(
        &self,
        path: &str,
        offset: u64,
        len: u64,
    ) -> Result<RangeReply, RemoteError> {
        let reply = self.range_reply(path, offset, len).await?;
        let len = reply.data.len() as u64;
        let mut hold = self.body_hold.subscribe();
        let _ = hold.wait_for(|h| h.is_none_or(|at| len <= at)).await;
        Ok(reply)
    }

    /// `get_range`, its data handed over in pieces of `BODY_PIECE` bytes, held where
    /// `hold_bodies_after` says.
    async fn get_range_stream(
        &self,
        path: &str,
        offset: u64,
        len: u64,
    ) -> Result<RangeStream, RemoteError> {
        let reply = self.range_reply(path, offset, len).await?;
        let hold = self.body_hold.subscribe();
        let body = futures_util::stream::unfold(
            (reply.data.clone(), 0usize, hold),
            |(data, sent, mut hold)| async move {
                if sent >= data.len() {
                    return None;
                }
                // Whether the body may go on past `sent`; a dropped remote releases it.
                let _ = hold
                    .wait_for(|h| h.is_none_or(|at| (sent as u64) < at))
                    .await;
                let end = (sent + BODY_PIECE).min(data.len());
                Some((Ok(data.slice(sent..end)), (data, end, hold)))
            },
        );
        Ok(RangeStream {
            offset: reply.offset,
            total_size: reply.total_size,
            etag: reply.etag,
            body: Box::pin(body),
        })
    }

    /// `mtime` is ignored, as Apache ignores `X-OC-Mtime`: the server sets its own.
    async fn put(
        &self,
        path: &str,
        local: &Path,
        len: u64,
        cond: Precondition,
        _mtime: Option<SystemTime>,
        hash: Option<&BodyHash>,
    ) -> Result<PutReply, RemoteError> {
        let body = open_body(local, 0, len)?;
        let path = normalize(path);
        let gate = self.gate(Method::Put, &path, None).await?;
        let data = read_streamed(body, 0, len, hash)?;
        self.apply(gate, PutReply::default(), |s| s.put(&path, data, &cond))
    }

    async fn put_bytes(
        &self,
        path: &str,
        data: Bytes,
        cond: Precondition,
        _mtime: Option<SystemTime>,
    ) -> Result<PutReply, RemoteError> {
        let path = normalize(path);
        let gate = self.gate(Method::Put, &path, None).await?;
        self.apply(gate, PutReply::default(), |s| s.put(&path, data, &cond))
    }

    /// A missing file is `NotFound` (`Refused{409}` when its parent is missing too).
    async fn put_range(
        &self,
        path: &str,
        local: &Path,
        offset: u64,
        len: u64,
        hash: Option<&BodyHash>,
    ) -> Result<PutReply, RemoteError> {
        if len == 0 {
            return Err(RemoteError::Local(format!(
                "{}: nothing to upload",
                local.display()
            )));
        }
        let body = open_body(local, offset, len)?;
        let path = normalize(path);
        let gate = self.gate(Method::PutRange, &path, None).await?;
        let part = read_streamed(body, offset, len, hash)?;
        self.apply(gate, PutReply::default(), |s| {
            s.put_range(&path, offset, &part)
        })
    }

    async fn partial_put_supported(&self) -> Result<bool, RemoteError> {
        let gate = self.gate(Method::Probe, "/", None).await?;
        self.apply(gate, false, |s| Ok(!s.no_partial_put))
    }

    async fn partial_support(&self) -> Result<super::PartialSupport, RemoteError> {
        let gate = self.gate(Method::Probe, "/", None).await?;
        self.apply(gate, super::PartialSupport::default(), |s| {
            Ok(super::PartialSupport {
                range_write: (!s.no_partial_put).then_some(super::RangeWrite::ContentRange),
                guarded_copy_move: !s.ignore_preconditions,
            })
        })
    }

    /// A missing source is `NotFound`; `Refused{409}` without the destination's parent.
    async fn copy_file(
        &self,
        from: &str,
        to: &str,
        if_etag: Option<&str>,
        _size_hint: u64,
    ) -> Result<(), RemoteError> {
        let (from, to) = (normalize(from), normalize(to));
        let gate = self.gate(Method::Copy, &from, Some(&to)).await?;
        self.apply(gate, (), |s| {
            let (data, tag) = s.file(&from).cloned().ok_or(RemoteError::NotFound)?;
            if let Some(want) = if_etag {
                if !s.ignore_preconditions && tag != quote_etag(want) {
                    return Err(RemoteError::PreconditionFailed);
                }
            }
            s.write(&to, data).map(|_| ())
        })
    }

    /// Held to the destination's version: 412 when it is another (or gone).
    async fn move_file_if(&self, from: &str, to: &str, dest_etag: &str) -> Result<(), RemoteError> {
        let (from, to, want) = (normalize(from), normalize(to), quote_etag(dest_etag));
        let gate = self.gate(Method::Move, &from, Some(&to)).await?;
        self.apply(gate, (), |s| {
            if !s.tree.contains_key(&from) {
                return Err(RemoteError::NotFound);
            }
            if !s.ignore_preconditions && s.file(&to).is_none_or(|f| f.1 != want) {
                return Err(RemoteError::PreconditionFailed);
            }
            s.mv(&from, &to, true)
        })
    }

    async fn preconditions_honored(&self) -> Result<bool, RemoteError> {
        let gate = self.gate(Method::Probe, "/", None).await?;
        self.apply(gate, false, |s| Ok(!s.ignore_preconditions))
    }

    /// An existing file is `Refused{405}` (`WebDav::mkcol` would take that 405 as Ok).
    async fn mkcol(&self, path: &str) -> Result<(), RemoteError> {
        let path = normalize(path);
        let gate = self.gate(Method::Mkcol, &path, None).await?;
        self.apply(gate, (), |s| s.mkcol(&path))
    }

    /// `is_dir` is not checked: whatever is at `path` goes.
    async fn delete(&self, path: &str, _is_dir: bool) -> Result<(), RemoteError> {
        let path = normalize(path);
        let gate = self.gate(Method::Delete, &path, None).await?;
        self.apply(gate, (), |s| s.delete(&path))
    }

    /// A missing resource is `Ok`, as `WebDav` takes a 404.
    async fn delete_if_match(&self, path: &str, etag: &str) -> Result<(), RemoteError> {
        let (path, want) = (normalize(path), quote_etag(etag));
        let gate = self.gate(Method::Delete, &path, None).await?;
        self.apply(gate, (), |s| match s.tree.get(&path) {
            None => Ok(()),
            Some(n) if !s.ignore_preconditions && n.file.as_ref().is_none_or(|f| f.1 != want) => {
                Err(RemoteError::PreconditionFailed)
            }
            Some(_) => s.delete(&path),
        })
    }

    async fn rename(&self, from: &str, to: &str, _is_dir: bool) -> Result<(), RemoteError> {
        let (from, to) = (normalize(from), normalize(to));
        let gate = self.gate(Method::Move, &from, Some(&to)).await?;
        self.apply(gate, (), |s| s.mv(&from, &to, true))
    }

    async fn rename_no_replace(
        &self,
        from: &str,
        to: &str,
        _is_dir: bool,
    ) -> Result<(), RemoteError> {
        let (from, to) = (normalize(from), normalize(to));
        let gate = self.gate(Method::Move, &from, Some(&to)).await?;
        self.apply(gate, (), |s| s.mv(&from, &to, false))
    }

    async fn probe(&self) -> Result<ServerInfo, RemoteError> {
        let gate = self.gate(Method::Probe, "/", None).await?;
        let info = |latency| ServerInfo {
            latency,
            dav_classes: vec!["1".into(), "2".into()],
        };
        self.apply(gate, info(Duration::ZERO), |s| Ok(info(s.latency)))
    }

    async fn quota(&self) -> Result<(Option<u64>, Option<u64>), RemoteError> {
        match self.gate(Method::Stat, "/", None).await {
            Ok(gate) => self.apply(gate, (None, None), |s| Ok(s.quota)),
            Err(e) if e.is_transport() => Err(e),
            // `WebDav` reads any answer but a 207 as "no quota reported".
            Err(_) => Ok((None, None)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A result in short: "ok", "404", "412", the status of `Refused` and `Server`, "net".
    fn k<T>(r: Result<T, RemoteError>) -> String {
        match r {
            Ok(_) => "ok".into(),
            Err(RemoteError::NotFound) => "404".into(),
            Err(RemoteError::PreconditionFailed) => "412".into(),
            Err(RemoteError::Refused { status, .. } | RemoteError::Server { status, .. }) => {
                status.to_string()
            }
            Err(RemoteError::Transport(_)) => "net".into(),
            Err(e) => format!("{e:?}"),
        }
    }

    const NONE: Precondition = Precondition::None;
    const INM: Precondition = Precondition::IfNoneMatch;
    fn im(tag: &str) -> Precondition {
        Precondition::IfMatch(tag.to_string())
    }

    async fn put(
        m: &MemRemote,
        path: &str,
        data: &str,
        cond: Precondition,
    ) -> Result<String, RemoteError> {
        let data = Bytes::copy_from_slice(data.as_bytes());
        Ok(m.put_bytes(path, data, cond, None)
            .await?
            .etag
            .expect("an ETag"))
    }

    #[tokio::test]
    async fn preconditions_and_etags() {
        let m = MemRemote::new();
        let first = put(&m, "/a.txt", "one", INM).await.unwrap();
        assert!(first.starts_with("\"m"));
        assert_eq!(k(put(&m, "/a.txt", "x", INM).await), "412");
        assert_eq!(k(put(&m, "/a.txt", "x", im("\"nope\"")).await), "412");
        assert_eq!(k(put(&m, "/b.txt", "x", im(&first)).await), "412");
        // The bare spelling matches too: the client quotes it.
        let second = put(&m, "/a.txt", "two", im(first.trim_matches('"'))).await;
        let second = second.unwrap();
        assert_ne!(first, second);
        assert_eq!(m.read("/a.txt").unwrap(), b"two");
        let e = m.stat("a.txt/").await.unwrap().unwrap();
        assert_eq!(
            (e.name, e.size, e.etag),
            ("a.txt".into(), 3, Some(second.clone()))
        );
        assert_eq!(k(m.delete_if_match("/a.txt", &first).await), "412");
        m.delete_if_match("/a.txt", &second).await.unwrap();
        m.delete_if_match("/a.txt", &second).await.unwrap();
        assert_eq!(m.stat("/a.txt").await.unwrap(), None);

        m.set_preconditions_honored(false);
        assert!(!m.preconditions_honored().await.unwrap());
        put(&m, "/c", "1", im("\"nope\"")).await.unwrap();
    }

    #[tokio::test]
    async fn conflicts_on_missing_parents_and_collections() {
        let m = MemRemote::new();
        assert_eq!(k(put(&m, "/no/f", "x", NONE).await), "409");
        assert_eq!(k(m.mkcol("/no/d").await), "409");
        m.mkcol("/d").await.unwrap();
        m.mkcol("/d").await.unwrap();
        assert_eq!(k(put(&m, "/d", "x", NONE).await), "409");
        put(&m, "/d/f", "x", NONE).await.unwrap();
        assert_eq!(k(m.mkcol("/d/f").await), "405");
        assert_eq!(k(put(&m, "/d/f/g", "x", NONE).await), "409");
        assert_eq!(k(m.list("/d/f").await), "405");
        assert_eq!(k(m.list("/zz").await), "404");
        assert_eq!(k(m.other_put("/q/r", "x")), "409");
        let list = m.list("/").await.unwrap();
        assert_eq!(
            (list.len(), list[0].name.as_str(), list[0].is_dir),
            (1, "d", true)
        );
        m.delete("/d", true).await.unwrap();
        m.delete("/d", true).await.unwrap();
        assert!(m.snapshot().is_empty());
    }

    #[tokio::test]
    async fn ranges() {
        let m = MemRemote::new();
        let tag = m.other_put("/f", "hello").unwrap();
        let r = m.get_range("/f", 3, 10).await.unwrap();
        assert_eq!(
            (&r.data[..], r.total_size, r.etag),
            (&b"lo"[..], Some(5), Some(tag))
        );
        let r = m.get_range("/f", 9, 4).await.unwrap();
        assert!(r.data.is_empty() && r.total_size == Some(5) && r.etag.is_some());
        assert_eq!(k(m.get_range("/g", 0, 4).await), "404");

        let dir = tempfile::tempdir().unwrap();
        let local = dir.path().join("l");
        std::fs::write(&local, b"0123456789").unwrap();
        m.put_range("/f", &local, 7, 3, None).await.unwrap();
        assert_eq!(m.read("/f").unwrap(), b"hello\x00\x00789");
        assert_eq!(k(m.put_range("/g", &local, 0, 1, None).await), "404");
        assert!(matches!(
            m.put_range("/f", &local, 8, 5, None).await,
            Err(RemoteError::Local(_))
        ));
        m.put("/h", &local, 4, Precondition::None, None, None)
            .await
            .unwrap();
        assert_eq!(m.read("/h").unwrap(), b"0123");
        m.set_partial_put(false);
        assert!(!m.partial_put_supported().await.unwrap());
        assert_eq!(k(m.put_range("/f", &local, 0, 1, None).await), "400");
    }

    #[tokio::test]
    async fn copy_and_move_held_to_a_version() {
        let m = MemRemote::new();
        let tag = m.other_put("/f", "base").unwrap();
        assert_eq!(k(m.copy_file("/f", "/c", Some("\"nope\""), 4).await), "412");
        assert!(m.read("/c").is_none());
        m.copy_file("/f", "/c", Some(&tag), 4).await.unwrap();
        assert_eq!(m.read("/c").unwrap(), b"base");
        assert_eq!(k(m.copy_file("/g", "/c2", None, 0).await), "404");
        // Onto a destination that is no longer the version named: refused, untouched.
        let theirs = m.other_put("/f", "theirs").unwrap();
        assert_eq!(k(m.move_file_if("/c", "/f", &tag).await), "412");
        assert_eq!(m.read("/c").unwrap(), b"base");
        m.move_file_if("/c", "/f", &theirs).await.unwrap();
        assert_eq!(
            (m.read("/f").unwrap(), m.read("/c")),
            (b"base".to_vec(), None)
        );
        assert_eq!(k(m.move_file_if("/c", "/f", "\"x\"").await), "404");
        assert_eq!(m.count(Method::Copy), 3);
        let support = m.partial_support().await.unwrap();
        assert!(support.updates());
        m.set_partial_put(false);
        assert!(!m.partial_support().await.unwrap().updates());
    }

    #[tokio::test]
    async fn move_semantics() {
        let m = MemRemote::new();
        assert_eq!(k(m.rename("/x", "/y", false).await), "404");
        m.other_mkdir("/d").unwrap();
        m.other_mkdir("/d/e").unwrap();
        let old = m.other_put("/d/e/f", "f").unwrap();
        m.other_put("/g", "g").unwrap();
        assert_eq!(k(m.rename("/g", "/no/g", false).await), "409");
        assert_eq!(k(m.rename("/d", "/d/e/d2", true).await), "403");
        assert_eq!(k(m.rename("/d", "/d", true).await), "403");
        assert_eq!(k(m.rename_no_replace("/g", "/d", false).await), "412");
        m.rename("/d", "/d2", true).await.unwrap();
        assert_ne!(m.etag("/d2/e/f").unwrap(), old);
        assert_eq!(m.read("/d2/e/f").unwrap(), b"f");
        m.rename("/g", "/d2", false).await.unwrap();
        let want = BTreeMap::from([("/d2".to_string(), MemItem::File(b"g".to_vec()))]);
        assert_eq!(m.snapshot(), want);
    }

    #[tokio::test]
    async fn rules_with_counts_and_mapping() {
        let m = MemRemote::new();
        let id = m.inject(
            Rule::on(Method::Put)
                .at("/a")
                .outcome(Outcome::Status(503))
                .times(2),
        );
        assert_eq!(k(put(&m, "/a", "1", NONE).await), "503");
        assert_eq!(k(put(&m, "/a", "1", NONE).await), "503");
        put(&m, "/a", "1", NONE).await.unwrap();
        assert_eq!(m.count_at(Method::Put, "/a"), 3);
        assert!(m.remove_rule(id) && !m.remove_rule(id));

        m.inject(
            Rule::any_method()
                .under("/locked")
                .outcome(Outcome::Status(423)),
        );
        assert_eq!(k(m.mkcol("/locked").await), "423");
        assert_eq!(k(m.rename("/a", "/locked/a", false).await), "423");
        m.mkcol("/lockedx").await.unwrap();
        assert_eq!(m.stat("/a").await.unwrap().map(|e| e.size), Some(1));
        m.clear_rules();

        // Statuses the client takes as answers stay answers, and change nothing.
        m.inject(
            Rule::on(Method::Stat)
                .outcome(Outcome::Status(404))
                .times(1),
        );
        assert_eq!(m.stat("/a").await.unwrap(), None);
        m.inject(
            Rule::on(Method::Delete)
                .outcome(Outcome::Status(404))
                .times(1),
        );
        m.delete("/a", false).await.unwrap();
        assert!(m.read("/a").is_some());
        m.inject(
            Rule::on(Method::Probe)
                .outcome(Outcome::Status(401))
                .times(1),
        );
        assert!(matches!(
            m.probe().await,
            Err(RemoteError::Unauthorized(401))
        ));
        assert_eq!(m.probe().await.unwrap().dav_classes, vec!["1", "2"]);
        assert_eq!((m.count(Method::Probe), m.requests().len()), (2, 11));
        m.clear_log();
        assert!(m.requests().is_empty());
    }

    #[tokio::test]
    async fn lost_reply_applies_the_request() {
        let m = MemRemote::new();
        m.inject(Rule::on(Method::Put).outcome(Outcome::LostReply).times(1));
        assert_eq!(k(put(&m, "/a", "data", INM).await), "net");
        assert_eq!(m.read("/a").unwrap(), b"data");
        // The retry meets its own first attempt.
        assert_eq!(k(put(&m, "/a", "data", INM).await), "412");
        m.inject(Rule::on(Method::Move).outcome(Outcome::LostReply).times(1));
        assert_eq!(k(m.rename("/a", "/b", false).await), "net");
        assert!(m.read("/b").is_some() && m.read("/a").is_none());
        m.inject(Rule::on(Method::Get).times(1));
        assert_eq!(k(m.get_range("/b", 0, 1).await), "net");
        assert_eq!(m.get_range("/b", 0, 1).await.unwrap().data, "d");
    }

    #[tokio::test]
    async fn offline_and_latency() {
        let m = MemRemote::new();
        m.other_put("/a", "x").unwrap();
        m.set_offline(true);
        assert_eq!(k(m.stat("/a").await), "net");
        assert_eq!(k(m.probe().await), "net");
        assert_eq!(k(m.delete("/a", false).await), "net");
        assert!(m.read("/a").is_some());
        assert_eq!(m.count(Method::Stat), 1);
        m.set_offline(false);
        m.set_latency(Duration::from_millis(30));
        m.inject(Rule::on(Method::Stat).outcome(Outcome::Delay(Duration::from_millis(30))));
        let t = std::time::Instant::now();
        assert!(m.stat("/a").await.unwrap().is_some());
        assert!(t.elapsed() >= Duration::from_millis(60));
    }
}
