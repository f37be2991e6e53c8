//! `davdrive ctl`: sends one request to a mount's control socket, and the helpers the
//! commands' renderings share (aligned tables, sizes like `1.2 GiB`, times like `3 min
//! ago`). Each command's rendering is in `cmd/<name>.rs`; `--json` prints the raw reply.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::protocol::Request;

/// Sends one request; returns the whole reply (its `ok` says whether it succeeded).
pub fn request(socket: &Path, req: &Request, timeout: Duration) -> Result<Value, String> {
    let stream = UnixStream::connect(socket).map_err(|e| {
        format!(
            "cannot reach the control socket {}: {e} (is the mount running?)",
            socket.display()
        )
    })?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let mut line = req.to_line();
    line.push('\n');
    // A daemon refusing this client answers and hangs up before reading: the reply may
    // be waiting even if the write fails.
    let sent = (&stream).write_all(line.as_bytes());
    let mut reply = String::new();
    let read = BufReader::new(&stream).read_line(&mut reply);
    if reply.trim().is_empty() {
        if let Err(e) = sent {
            return Err(format!("control socket: {e}"));
        }
        read.map_err(|e| format!("control socket: no reply: {e}"))?;
    }
    if reply.trim().is_empty() {
        return Err("control socket: the daemon closed the connection without a reply".into());
    }
    serde_json::from_str(&reply).map_err(|e| format!("control socket: unreadable reply: {e}"))
}

pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

pub fn human_age(secs: i64) -> String {
    match secs {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 => format!("{} min", s / 60),
        s if s < 86400 => format!("{} h", s / 3600),
        s => format!("{} d", s / 86400),
    }
}

pub(crate) fn ago(unix: Option<i64>) -> String {
    match unix {
        Some(t) if t > 0 => {
            let now = super::unix_secs(std::time::SystemTime::now());
            format!("{} ago", human_age((now - t).max(0)))
        }
        _ => "never".into(),
    }
}

pub(crate) fn u(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

pub(crate) fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// Prints rows as columns padded to the widest cell. Cells hold names from the server
/// and from other users: control characters are shown escaped (`crate::control::
/// printable`), so a name cannot forge lines or drive the terminal.
pub fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let rows: Vec<Vec<String>> = rows
        .into_iter()
        .map(|r| r.iter().map(|c| crate::control::printable(c)).collect())
        .collect();
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<String>| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                l.push_str(&format!("{c:<w$}  ", w = width[i]));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_ages_read_like_a_person_writes_them() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(1288490189), "1.2 GiB");
        assert_eq!(human_age(42), "42 s");
        assert_eq!(human_age(185), "3 min");
        assert_eq!(human_age(7200), "2 h");
        assert_eq!(human_age(8 * 86400), "8 d");
    }

    #[test]
    fn table_cells_cannot_carry_control_characters() {
        let t = table(
            &["PATH"],
            vec![vec!["evil\nFAILED: fake line\x1b[2J".to_string()]],
        );
        assert_eq!(t, "PATH\nevil\\nFAILED: fake line\\x1b[2J\n");
    }

    #[test]
    fn tables_align_their_columns() {
        let t = table(
            &["ID", "PATH"],
            vec![
                vec!["7".into(), "/a".into()],
                vec!["1234".into(), "/bb".into()],
            ],
        );
        assert_eq!(t, "ID    PATH\n7     /a\n1234  /bb\n");
    }
}
