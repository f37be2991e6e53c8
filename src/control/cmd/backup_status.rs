//! `ctl backup status`: the last backup, the last success, the next one, and what the
//! remote holds.

pub use crate::backup::BackupStatus;
use crate::backup::{BackupRow, RemoteArchives};
use crate::control::client::human_size;
use crate::control::{CmdError, Context};

pub fn status(ctx: &Context) -> Result<BackupStatus, CmdError> {
    Ok(ctx.backups.status()?)
}

pub fn render(r: &BackupStatus) -> String {
    format!(
        "last backup:   {}\nlast success:  {}\nrunning:       {}\nschedule:      {}\nkept:          {} days, in {}\non the remote: {}\n",
        describe(r.last.as_ref()),
        describe(r.last_success.as_ref()),
        r.running.as_ref().map_or("no", |p| p.state.as_str()),
        match &r.schedule {
            Some(at) => format!("daily at {at}, next {}", time(r.next_at)),
            None => "off".into(),
        },
        r.keep_days,
        r.dir,
        match &r.remote {
            RemoteArchives::Listed { count, bytes } =>
                format!("{count} archive(s), {}", human_size(*bytes)),
            RemoteArchives::Unknown { error } => format!("unknown ({error})"),
        }
    )
}

fn describe(b: Option<&BackupRow>) -> String {
    let Some(b) = b else {
        return "none".into();
    };
    let mut s = format!(
        "{} {} (started {}",
        b.name,
        b.state,
        time(Some(b.started_at))
    );
    if let Some(size) = b.size {
        s += &format!(", {}", human_size(size.max(0) as u64));
    }
    s.push(')');
    if let Some(e) = &b.error {
        s += &format!("\n               {e}");
    }
    s
}

/// A unix time as local time, or `-`.
pub(crate) fn time(t: Option<i64>) -> String {
    use chrono::TimeZone;
    t.and_then(|t| chrono::Local.timestamp_opt(t, 0).single())
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "-".into())
}
