//! `davdrive ctl`: sends one request to a mount's control socket and shows the reply,
//! as text for people (aligned tables, sizes like `1.2 GiB`, times like `3 min ago`) or
//! as the raw JSON reply with `--json`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::protocol::{MigrateStatusArgs, Request, SyncArgs};

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

fn ago(unix: Option<i64>) -> String {
    match unix {
        Some(t) if t > 0 => {
            let now = super::unix_secs(std::time::SystemTime::now());
            format!("{} ago", human_age((now - t).max(0)))
        }
        _ => "never".into(),
    }
}

fn u(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
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

/// The `poll:` line of `status`: the last round of the background poll.
fn poll_text(p: &Value) -> String {
    if p.is_null() {
        return String::new();
    }
    if u(p, "interval_s") == 0 && p["last"].is_null() {
        return "poll:          off\n".into();
    }
    let etags = match s(p, "folder_etags") {
        "propagated" => "folder ETags propagated: unchanged folders cost one PROPFIND Depth 0",
        "not_propagated" => "folder ETags not propagated: folders are listed",
        _ => "folder ETags not known yet: folders are listed",
    };
    let last = &p["last"];
    let round = if last.is_null() {
        "no round yet".to_string()
    } else if let Some(why) = last["skipped"].as_str() {
        format!("last round {} skipped ({why})", ago(last["at"].as_i64()))
    } else {
        format!(
            "last round {}: {} folder(s) checked, {} listed, {} request(s), {} change(s){}",
            ago(last["at"].as_i64()),
            u(last, "folders"),
            u(last, "listed"),
            u(last, "requests"),
            u(last, "changes"),
            match u(last, "deferred") {
                0 => String::new(),
                n => format!(", {n} folder(s) left for the next rounds"),
            }
        )
    };
    format!(
        "poll:          every {}; {round}; {} change(s) in {} round(s)\n               {etags}\n",
        human_age(u(p, "interval_s") as i64),
        u(p, "changes_total"),
        u(p, "rounds"),
    )
}

/// The human rendering of a successful reply to `req`.
pub fn render(req: &Request, r: &Value) -> String {
    match req.name().as_str() {
        "status" => {
            let j = &r["journal"];
            let c = &r["cache"];
            let l = &r["limits"];
            let mut out = String::new();
            let state = if r["online"].as_bool() == Some(true) {
                "online"
            } else {
                "OFFLINE"
            };
            out += &format!(
                "remote:        {state} since {}\n",
                ago(r["since"].as_i64())
            );
            out += &format!(
                "last check:    {}{}\n",
                ago(r["last_check"].as_i64()),
                r["last_check_latency_ms"]
                    .as_f64()
                    .map(|ms| format!(", {ms:.1} ms"))
                    .unwrap_or_default()
            );
            if let Some(e) = r["last_error"].as_str() {
                out += &format!("last error:    {}\n", crate::control::printable(e));
            }
            if let Some(why) = r["read_only_reason"].as_str() {
                out += &format!("mode:          READ-ONLY: {why}\n");
            }
            out += &format!(
                "journal:       {} waiting ({}), oldest {}, {} in flight, {} failed\n",
                u(j, "waiting"),
                human_size(u(j, "waiting_bytes")),
                j["oldest_age_s"]
                    .as_i64()
                    .map(|a| format!("{} old", human_age(a)))
                    .unwrap_or_else(|| "-".into()),
                u(j, "in_flight"),
                u(j, "failed")
            );
            out += &format!(
                "cache:         {} files, {} (clean {}, dirty {} in {} files, pinned {} in {} files)\n",
                u(c, "files"),
                human_size(u(c, "bytes")),
                human_size(u(c, "clean_bytes")),
                human_size(u(c, "dirty_bytes")),
                u(c, "dirty_files"),
                human_size(u(c, "pinned_bytes")),
                u(c, "pinned_files")
            );
            out += &format!(
                "limits:        max age {}, max size {}, min free {} (free now {})\n",
                human_age(u(l, "max_age_s") as i64),
                human_size(u(l, "max_size")),
                human_size(u(l, "min_free")),
                human_size(u(c, "disk_free"))
            );
            out += &format!("conflicts:     {}\n", u(r, "conflicts"));
            out += &poll_text(&r["poll"]);
            let jobs = r["jobs"].as_array().cloned().unwrap_or_default();
            if jobs.is_empty() {
                out += "jobs:          none\n";
            }
            for (i, j) in jobs.iter().enumerate() {
                out += &format!(
                    "{}{} {}: {}\n",
                    if i == 0 {
                        "jobs:          "
                    } else {
                        "               "
                    },
                    s(j, "kind"),
                    j["name"].as_str().unwrap_or_else(|| s(j, "id")),
                    s(j, "state")
                );
            }
            if let Some(url) = r["metrics_url"].as_str() {
                out += &format!("metrics:       {url}\n");
            }
            out += &format!(
                "davdrive:      {} on {}, up {}\n",
                s(r, "version"),
                s(r, "mountpoint"),
                human_age(u(r, "uptime_s") as i64)
            );
            out
        }
        "journal" => journal_text(r, matches!(req, Request::Journal(a) if a.failed)),
        "ls" => {
            let rows = r["entries"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|e| {
                            vec![
                                s(e, "state").to_string(),
                                if s(e, "kind") == "dir" {
                                    "-".into()
                                } else {
                                    human_size(u(e, "size"))
                                },
                                format!(
                                    "{}{}",
                                    s(e, "name"),
                                    if s(e, "kind") == "dir" { "/" } else { "" }
                                ),
                            ]
                        })
                        .collect()
                })
                .unwrap_or_default();
            table(&["STATE", "SIZE", "NAME"], rows)
        }
        "cache" => {
            let us = &r["usage"];
            let mut out = format!(
                "{} files, {} cached; {} dirty, {} pinned\n",
                u(us, "files"),
                human_size(u(us, "bytes")),
                human_size(u(us, "dirty_bytes")),
                human_size(u(us, "pinned_bytes"))
            );
            let now = super::unix_secs(std::time::SystemTime::now());
            for (title, key) in [("largest", "largest"), ("least recently used", "oldest")] {
                out += &format!("\n{title}:\n");
                let rows = r[key]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|e| {
                                vec![
                                    human_size(u(e, "bytes")),
                                    format!(
                                        "{} ago",
                                        human_age(
                                            (now - e["last_access"].as_i64().unwrap_or(0)).max(0)
                                        )
                                    ),
                                    s(e, "path").to_string(),
                                ]
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out += &table(&["SIZE", "USED", "PATH"], rows);
            }
            out
        }
        "conflicts" => {
            let rows = r
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|c| {
                            vec![
                                s(c, "path").to_string(),
                                s(c, "conflict_path").to_string(),
                                c["local_etag"].as_str().unwrap_or("-").to_string(),
                                c["remote_etag"].as_str().unwrap_or("-").to_string(),
                                ago(c["time"].as_i64()),
                                if c["resolved"].as_bool() == Some(true) {
                                    "resolved"
                                } else {
                                    "open"
                                }
                                .to_string(),
                            ]
                        })
                        .collect()
                })
                .unwrap_or_default();
            table(
                &[
                    "PATH",
                    "CONFLICT COPY",
                    "LOCAL ETAG",
                    "REMOTE ETAG",
                    "WHEN",
                    "STATE",
                ],
                rows,
            )
        }
        "health" => {
            let q = |k: &str| {
                r[k].as_u64()
                    .map(human_size)
                    .unwrap_or_else(|| "not reported".into())
            };
            let mode = match r["read_only_reason"].as_str() {
                Some(why) => format!("mode:          READ-ONLY: {why}\n"),
                None => "mode:          read-write\n".into(),
            };
            mode + &format!(
                "remote:        online, {:.1} ms\nDAV classes:   {}\npartial PUT:   {}\npartial updates: {}\nquota:         {} available, {} used\n",
                r["latency_ms"].as_f64().unwrap_or(0.0),
                r["dav_classes"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "))
                    .unwrap_or_default(),
                match r["partial_put"].as_bool() {
                    Some(true) => "yes",
                    Some(false) => "no",
                    None => "not asked yet (found out at the first large upload)",
                },
                match r["partial_updates"].as_bool() {
                    Some(true) => "yes: changed files send only the ranges written",
                    Some(false) => "no: changed files are sent whole",
                    None => "not asked yet (found out at the first change of a large file)",
                },
                q("quota_available"),
                q("quota_used")
            ) + match r["dead_properties"].as_bool() {
                Some(true) => "metadata:      mode, owner and times kept on the server\n",
                Some(false) => {
                    "metadata:      the server keeps no dead properties: mode, owner and times \
                     stay on this machine\n"
                }
                None => "",
            }
        }
        "metrics" => r.as_str().unwrap_or("").to_string(),
        "sync" => {
            if r["drained"] == true {
                format!(
                    "journal drained ({} failed entries set aside)\n",
                    u(r, "failed")
                )
            } else {
                format!(
                    "sync started: remote {}, {} waiting, {} failed\n",
                    if r["online"].as_bool() == Some(true) {
                        "online"
                    } else {
                        "offline"
                    },
                    u(r, "waiting"),
                    u(r, "failed")
                )
            }
        }
        "evict" => r
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| {
                        if let Some(files) = e["files"].as_u64() {
                            format!(
                                "evicted {files} file(s) in {} ({}), kept {}\n",
                                s(e, "path"),
                                human_size(u(e, "bytes")),
                                u(e, "kept")
                            )
                        } else if e["evicted"].as_bool() == Some(true) {
                            format!("evicted {} ({})\n", s(e, "path"), human_size(u(e, "bytes")))
                        } else {
                            format!("kept {}: {}\n", s(e, "path"), s(e, "reason"))
                        }
                    })
                    .collect()
            })
            .unwrap_or_default(),
        "pin" | "unpin" => {
            let paths: Vec<&str> = r["paths"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if r["pinned"].as_bool() == Some(true) {
                format!(
                    "pinned {} ({} file(s) fetched now)\n",
                    paths.join(", "),
                    u(r, "files_fetched")
                )
            } else {
                format!("unpinned {}\n", paths.join(", "))
            }
        }
        "journal-retry" => format!("{} entr(ies) will be tried again\n", u(r, "retried")),
        "conflicts-resolve" => format!("resolved {} (kept {})\n", s(r, "resolved"), s(r, "kept")),
        "journal-drop" => match r["content_saved_at"].as_str() {
            Some(p) => format!(
                "dropped entry {}; its content is saved at {p}\n",
                u(r, "dropped")
            ),
            None => format!("dropped entry {}\n", u(r, "dropped")),
        },
        c if c.starts_with("backup-") => super::backup::render(c, r),
        "migrate-start" => format!(
            "migration {} started: {} -> {} (see `ctl migrate status {}`)\n",
            u(r, "id"),
            s(r, "src"),
            s(r, "dest"),
            u(r, "id")
        ),
        "migrate-status" | "migrate-pause" | "migrate-resume" => {
            let list = match r {
                Value::Array(a) => a.clone(),
                one => vec![one.clone()],
            };
            if list.is_empty() {
                return "no migrations\n".into();
            }
            list.iter().map(migration_text).collect()
        }
        "migrate-list" => {
            let rows = r
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|m| {
                            let f = &m["files"];
                            vec![
                                u(m, "id").to_string(),
                                s(m, "state").to_string(),
                                format!("{:.1}%", m["percent"].as_f64().unwrap_or(0.0)),
                                format!("{}/{}", u(f, "done") + u(f, "skipped"), u(f, "total")),
                                u(f, "failed").to_string(),
                                format!("{} -> {}", s(m, "src"), s(m, "dest")),
                            ]
                        })
                        .collect()
                })
                .unwrap_or_default();
            table(
                &["ID", "STATE", "DONE", "FILES", "FAILED", "FROM -> TO"],
                rows,
            )
        }
        "migrate-cancel" => format!(
            "migration {} cancelled: {} file(s) ({}) are on the server and stay; {} ({}) \
             were copied into the drive and are still uploaded; {} ({}) were not copied{}\n",
            u(r, "id"),
            u(r, "landed_files"),
            human_size(u(r, "landed_bytes")),
            u(r, "staged_files"),
            human_size(u(r, "staged_bytes")),
            u(r, "not_copied_files"),
            human_size(u(r, "not_copied_bytes")),
            if r["walk_done"].as_bool() == Some(false) {
                " (SRC was not fully walked yet)"
            } else {
                ""
            }
        ),
        "migrate-errors" => {
            let rows = r["items"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|e| {
                            vec![
                                s(e, "state").to_string(),
                                s(e, "path").to_string(),
                                s(e, "error").to_string(),
                            ]
                        })
                        .collect()
                })
                .unwrap_or_default();
            let mut out = table(&["STATE", "PATH", "REASON"], rows);
            let shown = r["items"].as_array().map(|a| a.len()).unwrap_or(0) as u64;
            if u(r, "total") > shown {
                out += &format!("… and {} more\n", u(r, "total") - shown);
            }
            out
        }
        _ => format!("{}\n", serde_json::to_string_pretty(r).unwrap_or_default()),
    }
}

/// The journal as a table; `failed_only`: what `journal --failed` asked for. An empty
/// list is said in words.
pub fn journal_text(r: &Value, failed_only: bool) -> String {
    if r.as_array().is_some_and(|a| a.is_empty()) {
        return if failed_only {
            "No failed changes: nothing is set aside.\n".into()
        } else {
            "The journal is empty: every change is on the server.\n".into()
        };
    }
    let rows = r
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    let path = match e["dest"].as_str() {
                        Some(d) => format!("{} -> {d}", s(e, "path")),
                        None => s(e, "path").to_string(),
                    };
                    vec![
                        u(e, "id").to_string(),
                        s(e, "op").to_string(),
                        path,
                        u(e, "attempts").to_string(),
                        human_age(u(e, "age_s") as i64),
                        if e["failed"].as_bool() == Some(true) {
                            format!("FAILED: {}", s(e, "last_error"))
                        } else {
                            s(e, "last_error").to_string()
                        },
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    table(&["ID", "OP", "PATH", "TRIES", "AGE", "LAST ERROR"], rows)
}

/// One migration's progress in a few lines.
fn migration_text(m: &Value) -> String {
    let f = &m["files"];
    let b = &m["bytes"];
    let rate = m["rate_bytes_per_s"]
        .as_u64()
        .map(|r| format!(", {}/s", human_size(r)))
        .unwrap_or_default();
    let eta = m["eta_s"]
        .as_i64()
        .map(|e| format!(", ETA {}", human_age(e)))
        .unwrap_or_default();
    // The phase only where it says more than the state ("running (copying)").
    let state = match (s(m, "state"), s(m, "phase")) {
        (state, phase) if phase.is_empty() || phase == state => state.to_string(),
        (state, phase) => format!("{state} ({phase})"),
    };
    let mut out = format!(
        "migration {}: {state}  {} -> {}\n",
        u(m, "id"),
        s(m, "src"),
        s(m, "dest")
    );
    out += &format!(
        "  files: {} total, {} done, {} failed, {} skipped, {} excluded, {} staged, {} pending\n",
        u(f, "total"),
        u(f, "done"),
        u(f, "failed"),
        u(f, "skipped"),
        u(m, "excluded"),
        u(f, "staged") + u(f, "landed"),
        u(f, "pending")
    );
    out += &format!(
        "  bytes: {} of {} ({:.1}%){rate}{eta}\n",
        human_size(u(b, "done")),
        human_size(u(b, "total")),
        m["percent"].as_f64().unwrap_or(0.0)
    );
    if m["source"].is_object() {
        out += &source_text(&m["source"]);
    }
    if u(m, "errors") > 0 {
        out += &format!(
            "  {} item(s) to look at: `ctl migrate errors {}`\n",
            u(m, "errors"),
            u(m, "id")
        );
    }
    if let Some(e) = m["error"].as_str() {
        out += &format!("  error: {e}\n");
    }
    out
}

/// With --delete-source: "source: 57 removed, 3 kept (1 not the same on the server, …)".
fn source_text(src: &Value) -> String {
    const REASONS: [(&str, &str); 6] = [
        ("copy_failed", "not copied"),
        ("server_differs", "not the same on the server"),
        ("changed_since_copied", "changed since copied"),
        ("not_removable", "could not be removed"),
        ("excluded", "excluded"),
        ("not_a_regular_file", "not regular files"),
    ];
    let why: Vec<String> = REASONS
        .iter()
        .filter(|(code, _)| u(&src["kept_because"], code) > 0)
        .map(|(code, words)| format!("{} {words}", u(&src["kept_because"], code)))
        .collect();
    let mut out = format!(
        "  source: {} file(s) removed, {} kept",
        u(src, "removed"),
        u(src, "kept")
    );
    if !why.is_empty() {
        out += &format!(" ({})", why.join(", "));
    }
    if u(src, "to_do") > 0 {
        out += &format!(", {} to do", u(src, "to_do"));
    }
    out + "\n"
}

/// `sync --wait`: starts the replay, then follows the journal until it is empty, set
/// aside or past `timeout`. On a terminal a progress bar (changes, bytes, rate, time
/// left); otherwise (and unless `json_out`) a plain line each second. Returns the last
/// reply: drained, or the error that says what blocks.
pub fn sync_wait(socket: &Path, timeout: Duration, json_out: bool) -> Result<Value, String> {
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    use std::io::IsTerminal;
    const SLICE: Duration = Duration::from_secs(1);
    let ask = |args: SyncArgs| {
        request(
            socket,
            &Request::Sync(args),
            SLICE + Duration::from_secs(60),
        )
    };
    let first = ask(SyncArgs::default())?;
    if first["ok"].as_bool() != Some(true) {
        return Ok(first);
    }
    let r = &first["result"];
    let started = std::time::Instant::now();
    let deadline = started + timeout;
    let up0 = u(r, "uploaded_bytes");
    let mut p = SyncProgress::new(u(r, "waiting"), u(r, "waiting_bytes"));
    let terminal = !json_out && std::io::stdout().is_terminal();
    let bar = ProgressBar::with_draw_target(Some(p.total_bytes), ProgressDrawTarget::stdout());
    if terminal {
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}  {msg}",
            )
            .map_err(|e| e.to_string())?
            .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        bar.set_message(p.counts());
    } else {
        bar.set_draw_target(ProgressDrawTarget::hidden());
        if !json_out {
            let online = if r["online"] == true {
                "online"
            } else {
                "offline"
            };
            if p.total == 0 {
                println!("sync: nothing waits, remote {online}");
            } else {
                println!(
                    "sync: {} change(s) to send ({}), remote {online}",
                    p.total,
                    human_size(p.total_bytes)
                );
            }
        }
    }
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let reply = ask(SyncArgs {
            wait: true,
            kick: false,
            timeout_ms: Some(left.as_millis() as u64),
            timeout_s: Some(timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0)),
            slice_ms: Some(SLICE.as_millis() as u64),
        })?;
        let r = &reply["result"];
        if reply["ok"].as_bool() != Some(true) || r["drained"] != false {
            if r["drained"] == true {
                p.update(0, 0, u(r, "uploaded_bytes").max(up0) - up0);
                bar.set_position(p.done_bytes);
            }
            bar.finish_and_clear();
            return Ok(reply);
        }
        p.update(
            u(r, "waiting"),
            u(r, "waiting_bytes"),
            u(r, "uploaded_bytes").saturating_sub(up0),
        );
        if terminal {
            bar.set_length(p.total_bytes);
            bar.set_position(p.done_bytes);
            bar.set_message(p.counts());
        } else if !json_out {
            println!("sync: {}", p.line(started.elapsed()));
        }
    }
}

/// What `sync --wait` has seen go: entries and upload bytes, with totals that grow when
/// changes are made meanwhile.
struct SyncProgress {
    waiting: u64,
    waiting_bytes: u64,
    sent: u64,
    total: u64,
    sent_entry_bytes: u64,
    total_bytes: u64,
    /// Bytes uploaded since the start (a large upload moves this while it runs).
    done_bytes: u64,
}

impl SyncProgress {
    fn new(waiting: u64, waiting_bytes: u64) -> SyncProgress {
        SyncProgress {
            waiting,
            waiting_bytes,
            sent: 0,
            total: waiting,
            sent_entry_bytes: 0,
            total_bytes: waiting_bytes,
            done_bytes: 0,
        }
    }

    fn update(&mut self, waiting: u64, waiting_bytes: u64, uploaded: u64) {
        self.sent += self.waiting.saturating_sub(waiting);
        self.sent_entry_bytes += self.waiting_bytes.saturating_sub(waiting_bytes);
        self.waiting = waiting;
        self.waiting_bytes = waiting_bytes;
        self.total = self.sent + waiting;
        self.total_bytes = self.sent_entry_bytes + waiting_bytes;
        // Retried uploads send bytes twice: never past the total.
        self.done_bytes = uploaded.min(self.total_bytes);
    }

    fn counts(&self) -> String {
        format!("{}/{} changes", self.sent, self.total)
    }

    /// "2 of 5 changes sent, 1.0 MiB of 3.0 MiB, 512 KiB/s, about 4s left".
    fn line(&self, elapsed: Duration) -> String {
        let mut out = format!(
            "{} of {} change(s) sent, {} of {}",
            self.sent,
            self.total,
            human_size(self.done_bytes),
            human_size(self.total_bytes)
        );
        let secs = elapsed.as_secs_f64();
        if secs > 0.0 && self.done_bytes > 0 {
            let rate = self.done_bytes as f64 / secs;
            out += &format!(", {}/s", human_size(rate as u64));
            let rest = self.total_bytes.saturating_sub(self.done_bytes) as f64 / rate;
            if self.total_bytes > self.done_bytes {
                out += &format!(", about {} left", human_age(rest.ceil() as i64));
            }
        }
        out
    }
}

/// `migrate status --watch`: a live progress bar until the migration ends or pauses.
pub fn watch_migration(socket: &Path, id: Option<i64>, json_out: bool) -> Result<(), String> {
    use indicatif::{ProgressBar, ProgressStyle};
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{bar:40}] {percent:>3}% {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}  {msg}",
        )
        .map_err(|e| e.to_string())?
        .progress_chars("=> "),
    );
    // Not on a terminal (a pipe, a log): a plain line each time something moved.
    let plain = !json_out && !std::io::IsTerminal::is_terminal(&std::io::stderr());
    if json_out || plain {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut last_line = String::new();
    loop {
        let reply = request(
            socket,
            &Request::MigrateStatus(MigrateStatusArgs { id }),
            Duration::from_secs(60),
        )?;
        if reply["ok"].as_bool() != Some(true) {
            bar.abandon();
            return Err(reply["error"].as_str().unwrap_or("error").to_string());
        }
        let m = &reply["result"][0];
        if m.is_null() {
            bar.abandon();
            return Err("no migration is running".into());
        }
        let b = &m["bytes"];
        let f = &m["files"];
        bar.set_length(u(b, "total"));
        bar.set_position(u(b, "done"));
        bar.set_message(format!(
            "{} {}: {}/{} files, {} failed, {} skipped",
            s(m, "state"),
            s(m, "phase"),
            u(f, "done"),
            u(f, "total"),
            u(f, "failed"),
            u(f, "skipped")
        ));
        if plain {
            let line = format!(
                "migration {}: {} of {} file(s), {} of {}, {} failed, {} skipped",
                u(m, "id"),
                u(f, "done"),
                u(f, "total"),
                human_size(u(b, "done")),
                human_size(u(b, "total")),
                u(f, "failed"),
                u(f, "skipped")
            );
            if line != last_line {
                println!("{line}");
                last_line = line;
            }
        }
        let state = s(m, "state");
        if state != "running" {
            bar.finish();
            if json_out {
                println!("{reply}");
            } else {
                print!("{}", migration_text(m));
            }
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
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
