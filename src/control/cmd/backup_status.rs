//! `ctl backup status`: the last backup, the last success, the next one, and what the
//! remote holds.

use serde_json::Value;

use crate::control::client::human_size;
use crate::control::{CmdResult, Context};

pub fn status(ctx: &Context) -> CmdResult {
    Ok(ctx.backups.status()?)
}

pub fn render(r: &Value) -> String {
    let remote = &r["remote"];
    format!(
        "last backup:   {}\nlast success:  {}\nrunning:       {}\nschedule:      {}\nkept:          {} days, in {}\non the remote: {}\n",
        describe(&r["last"]),
        describe(&r["last_success"]),
        r["running"]["state"].as_str().unwrap_or("no"),
        match r["schedule"].as_str() {
            Some(at) => format!("daily at {at}, next {}", time(&r["next_at"])),
            None => "off".into(),
        },
        r["keep_days"],
        r["dir"].as_str().unwrap_or("?"),
        match remote["count"].as_u64() {
            Some(n) => format!(
                "{n} archive(s), {}",
                human_size(remote["bytes"].as_u64().unwrap_or(0))
            ),
            None => format!(
                "unknown ({})",
                remote["error"].as_str().unwrap_or("not reachable")
            ),
        }
    )
}

fn describe(b: &Value) -> String {
    if b.is_null() {
        return "none".into();
    }
    let mut s = format!(
        "{} {} (started {}",
        b["name"].as_str().unwrap_or("?"),
        b["state"].as_str().unwrap_or("?"),
        time(&b["started_at"])
    );
    if let Some(size) = b["size"].as_u64() {
        s += &format!(", {}", human_size(size));
    }
    s.push(')');
    if let Some(e) = b["error"].as_str() {
        s += &format!("\n               {e}");
    }
    s
}

/// A unix time as local time, or `-`.
pub(crate) fn time(v: &Value) -> String {
    use chrono::TimeZone;
    v.as_i64()
        .and_then(|t| chrono::Local.timestamp_opt(t, 0).single())
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "-".into())
}
