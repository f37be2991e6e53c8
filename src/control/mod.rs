//! The control socket: a Unix socket beside the mount through which `davdrive ctl`
//! sees and steers a running mount. One JSON request per line, one JSON reply per line:
//!
//! ```text
//! {"version":1,"cmd":"status","args":{}}
//! {"version":1,"ok":true,"result":{...}}        or  {"version":1,"ok":false,"error":"..."}
//! ```
//!
//! Only the mounting user and root are served (checked with SO_PEERCRED). Bad input gets
//! an error reply; a line over 1 MiB gets one and the connection is closed. The requests
//! are typed in `protocol`; each command's handler and the rendering of its reply are in
//! `cmd/<name>.rs`.

pub mod client;
pub mod cmd;
pub mod protocol;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

use crate::fs::{Core, FsError};

pub use protocol::{Request, PROTOCOL_VERSION};

/// Longest request line accepted.
pub const MAX_LINE: usize = 1 << 20;

/// What every command handler gets.
pub struct Context {
    pub core: Arc<Core>,
    pub mountpoint: PathBuf,
    pub started: SystemTime,
    /// Backups and migrations running now.
    pub jobs: Arc<crate::jobs::Jobs>,
    pub backups: Arc<crate::backup::Backups>,
    /// Migrations of local trees onto the remote (`migrate-*`).
    pub migrations: Arc<crate::migrate::Migrations>,
    /// Why the mount is read-only, if it is.
    pub read_only: Option<String>,
    /// Where the metrics endpoint listens, if it does (`--metrics-addr`).
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// A command's failure, as the client sees it.
#[derive(Debug)]
pub struct CmdError(pub String);

impl<E: std::fmt::Display> From<E> for CmdError {
    fn from(e: E) -> Self {
        CmdError(e.to_string())
    }
}

pub type CmdResult = Result<Value, CmdError>;

pub use cmd::dispatch;

fn reply_line(result: CmdResult) -> String {
    let v = match result {
        Ok(result) => json!({"version": PROTOCOL_VERSION, "ok": true, "result": result}),
        Err(CmdError(e)) => json!({"version": PROTOCOL_VERSION, "ok": false, "error": e}),
    };
    let mut s = v.to_string();
    s.push('\n');
    s
}

/// Binds the control socket at `path` (mode 0600). A socket file left by a dead daemon is
/// replaced; one a live daemon answers on is not.
pub fn bind(path: &Path) -> Result<UnixListener, String> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            return Err(format!(
                "control socket {}: something else is in the way (not a socket)",
                path.display()
            ));
        }
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => {
                return Err(format!(
                    "control socket {} is in use by a running davdrive",
                    path.display()
                ))
            }
            Err(_) => {
                tracing::info!("replacing stale control socket {}", path.display());
                std::fs::remove_file(path)
                    .map_err(|e| format!("control socket {}: {e}", path.display()))?;
            }
        }
    }
    if let Some(dir) = path.parent() {
        use std::os::unix::fs::DirBuilderExt;
        let _ = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir);
    }
    let listener =
        UnixListener::bind(path).map_err(|e| format!("control socket {}: {e}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("control socket {}: {e}", path.display()))?;
    Ok(listener)
}

/// Serves connections until shutdown.
pub async fn serve(listener: UnixListener, ctx: Arc<Context>, mut shutdown: watch::Receiver<bool>) {
    let owner = unsafe { libc::getuid() };
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!("control socket: accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(stream, ctx, owner).await {
                tracing::debug!("control connection ended: {e}");
            }
        });
    }
}

async fn connection(stream: UnixStream, ctx: Arc<Context>, owner: u32) -> std::io::Result<()> {
    let peer = stream.peer_cred()?;
    let (read, mut write) = stream.into_split();
    if peer.uid() != owner && peer.uid() != 0 {
        tracing::warn!(
            "control socket: refused a connection from uid {} (pid {:?}); only uid {owner} and root are served",
            peer.uid(),
            peer.pid()
        );
        let refusal = reply_line(Err(CmdError(format!(
            "permission denied: this mount is controlled by uid {owner} and root only"
        ))));
        write.write_all(refusal.as_bytes()).await?;
        return Ok(());
    }
    let mut reader = BufReader::new(read);
    let mut line = Vec::new();
    loop {
        line.clear();
        let too_long = read_line_limited(&mut reader, &mut line).await?;
        if too_long {
            let r = reply_line(Err(CmdError(format!(
                "request longer than {MAX_LINE} bytes; closing the connection"
            ))));
            write.write_all(r.as_bytes()).await?;
            return Ok(());
        }
        if line.is_empty() {
            return Ok(()); // end of input
        }
        let text = String::from_utf8_lossy(&line);
        if text.trim().is_empty() {
            continue;
        }
        let result = match Request::parse(&text) {
            Ok(req) => {
                let ctx = ctx.clone();
                match tokio::task::spawn_blocking(move || dispatch(&ctx, &req)).await {
                    Ok(r) => r,
                    Err(e) => Err(CmdError(format!("the command failed inside davdrive: {e}"))),
                }
            }
            Err(e) => Err(e),
        };
        write.write_all(reply_line(result).as_bytes()).await?;
    }
}

/// Reads one line (without its newline) into `out`; returns true if it passed
/// `MAX_LINE` (the rest of it is not read). An empty `out` with false means end of input.
async fn read_line_limited(
    reader: &mut BufReader<tokio::net::unix::OwnedReadHalf>,
    out: &mut Vec<u8>,
) -> std::io::Result<bool> {
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Ok(false);
        }
        let (chunk, done) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (&buf[..i], Some(i + 1)),
            None => (buf, None),
        };
        if out.len() + chunk.len() > MAX_LINE {
            return Ok(true);
        }
        out.extend_from_slice(chunk);
        let used = done.unwrap_or(buf.len());
        reader.consume(used);
        if done.is_some() {
            return Ok(false);
        }
    }
}

/// The mount-relative path of a path given to a command: absolute paths must lie inside
/// the mount; relative ones are taken from its root.
pub fn mount_path(ctx: &Context, given: &str) -> Result<String, CmdError> {
    let p = Path::new(given);
    let rel = if p.is_absolute() {
        p.strip_prefix(&ctx.mountpoint).map_err(|_| {
            CmdError(format!(
                "{given} is outside the mount ({})",
                ctx.mountpoint.display()
            ))
        })?
    } else {
        p
    };
    let mut parts = Vec::new();
    for c in rel.components() {
        match c {
            std::path::Component::Normal(s) => parts.push(
                s.to_str()
                    .ok_or_else(|| CmdError(format!("{given}: not UTF-8")))?
                    .to_string(),
            ),
            std::path::Component::CurDir => {}
            _ => return Err(CmdError(format!("{given}: '..' is not allowed"))),
        }
    }
    Ok(format!("/{}", parts.join("/")))
}

/// The inode at a path given to a command.
pub fn resolve(ctx: &Context, given: &str) -> Result<(String, u64), CmdError> {
    let path = mount_path(ctx, given)?;
    let ino = ctx.core.resolve_path(&path).map_err(|e| match e {
        FsError::NotFound => CmdError(format!("{given}: no such file or directory in the mount")),
        e => CmdError(format!("{given}: {e}")),
    })?;
    Ok((path, ino))
}

/// The paths a command was given: at least one.
pub fn paths_arg(a: &protocol::PathsArgs) -> Result<&[String], CmdError> {
    if a.paths.is_empty() {
        return Err(CmdError("no path given".into()));
    }
    Ok(&a.paths)
}

pub fn unix_secs(t: SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A name as it may be shown on a terminal: control characters (newlines, escapes) are
/// written as `\n`, `\x1b`, so a hostile file name cannot forge lines or move the cursor;
/// bidirectional overrides and zero-width marks as `\u{202e}`, so it cannot pass for
/// another name.
pub fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            // Invisible marks that reorder or hide what follows (bidirectional overrides
            // and isolates, zero-width characters): shown as code points, as `ls` does.
            '\u{200b}'..='\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2060}'..='\u{2069}'
            | '\u{feff}' => out.push_str(&format!("\\u{{{:04x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// "10m", "1h 5m", "3s": for messages.
pub fn human_duration(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 if s.is_multiple_of(60) => format!("{}m", s / 60),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        _ => format!("{}h {}m", s / 3600, (s % 3600) / 60),
    }
}
