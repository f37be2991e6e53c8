//! The control protocol: the requests `davdrive ctl` sends and the daemon serves, typed
//! once and shared by both sides. One JSON object per line each way:
//!
//! ```text
//! {"version":1,"cmd":"status","args":{}}
//! {"version":1,"ok":true,"result":{...}}        or  {"version":1,"ok":false,"error":"..."}
//! ```
//!
//! `Request` is the list of commands: its variant names (kebab-case) are the `cmd`
//! strings and the fields of their arguments are the keys of `args`. A missing or null
//! `args` counts as `{}`, and keys a command does not know are ignored, as they always
//! were. A missing `version` counts as 1. Each command's handler and the rendering of its
//! reply are in `control/cmd/<name>.rs`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::CmdError;
pub use crate::fs::Keep;
use crate::migrate::Verify;

pub const PROTOCOL_VERSION: u64 = 1;

/// One command and its arguments. Commands without arguments are empty struct variants so
/// that they serialize, as before, with `"args":{}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", content = "args", rename_all = "kebab-case")]
pub enum Request {
    Status {},
    Health {},
    Metrics {},
    Sync(SyncArgs),
    Journal(JournalArgs),
    JournalRetry(JournalRetryArgs),
    JournalDrop(JournalDropArgs),
    Pin(PathsArgs),
    Unpin(PathsArgs),
    Evict(PathsArgs),
    Cache {},
    Ls(LsArgs),
    Conflicts {},
    ConflictsResolve(ConflictsResolveArgs),
    BackupRun {},
    BackupJob(IdArgs),
    BackupStatus {},
    BackupList {},
    BackupVerify(BackupNameArgs),
    BackupRestore(BackupRestoreArgs),
    MigrateStart(MigrateStartArgs),
    MigrateStatus(MigrateStatusArgs),
    MigrateList {},
    MigratePause(IdArgs),
    MigrateResume(IdArgs),
    MigrateCancel(IdArgs),
    MigrateErrors(MigrateErrorsArgs),
}

fn yes() -> bool {
    true
}

/// `sync`: run the health check and the replay now; with `wait`, answer once drained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncArgs {
    /// False for the follow-ups of a wait already started (`ctl sync --wait` asks again
    /// every `slice_ms` to show progress): the check and the retry were done then.
    #[serde(default = "yes")]
    pub kick: bool,
    #[serde(default)]
    pub wait: bool,
    /// The timeout the user gave (and the message names); 600 if not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<u64>,
    /// What is left of that timeout for this request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Answer after at most this long, drained or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slice_ms: Option<u64>,
}

impl Default for SyncArgs {
    fn default() -> Self {
        SyncArgs {
            kick: true,
            wait: false,
            timeout_s: None,
            timeout_ms: None,
            slice_ms: None,
        }
    }
}

/// `journal`: the changes waiting; `failed`: only those set aside.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JournalArgs {
    #[serde(default)]
    pub failed: bool,
}

/// `journal-retry`: one entry, or `all` the failed ones.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JournalRetryArgs {
    #[serde(default)]
    pub id: Option<i64>,
    #[serde(default)]
    pub all: bool,
}

/// `journal-drop`: give up on entry `id`; `yes` confirms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalDropArgs {
    pub id: i64,
    #[serde(default)]
    pub yes: bool,
}

/// `pin`, `unpin`, `evict`: paths inside the mount (absolute) or from its root.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PathsArgs {
    pub paths: Vec<String>,
}

/// `ls`: a path inside the mount (absolute) or from its root; the root if not given.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LsArgs {
    #[serde(default)]
    pub path: String,
}

/// `conflicts-resolve`: the conflict at `path` (the original name or the copy's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConflictsResolveArgs {
    pub path: String,
    pub keep: Keep,
}

/// A job or migration id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdArgs {
    pub id: i64,
}

/// `backup-verify`: an archive's name (see `backup-list`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupNameArgs {
    pub name: String,
}

/// `backup-restore`: an archive, unpacked into `to` (absolute: the daemon has another
/// working directory); `force` writes over files there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupRestoreArgs {
    pub name: String,
    pub to: PathBuf,
    #[serde(default)]
    pub force: bool,
}

fn full() -> Verify {
    Verify::Full
}

/// `migrate-start`: copy `src` (a local folder, absolute) to `dest` (in the mount).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrateStartArgs {
    pub src: PathBuf,
    pub dest: String,
    #[serde(default = "full")]
    pub verify: Verify,
    #[serde(default)]
    pub delete_source: bool,
    /// Globs relative to `src`; null is taken for none.
    #[serde(default)]
    pub exclude: Option<Vec<String>>,
    #[serde(default)]
    pub follow_symlinks: bool,
}

/// `migrate-status`: one migration, or (without `id`) those not ended.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MigrateStatusArgs {
    #[serde(default)]
    pub id: Option<i64>,
}

/// `migrate-errors`: the items of migration `id` that failed or were skipped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrateErrorsArgs {
    pub id: i64,
    /// At most this many (10 000 if not given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
}

impl Request {
    /// The `cmd` string: the variant's name as it is on the wire.
    pub fn name(&self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v["cmd"].as_str().map(String::from))
            .unwrap_or_default()
    }

    /// The request line the client sends (without its newline).
    pub fn to_line(&self) -> String {
        #[derive(Serialize)]
        struct Envelope<'a> {
            version: u64,
            #[serde(flatten)]
            request: &'a Request,
        }
        serde_json::to_string(&Envelope {
            version: PROTOCOL_VERSION,
            request: self,
        })
        .expect("a request serializes")
    }

    /// Reads a request line. Every failure is a message for the reply: malformed JSON,
    /// another protocol version, an unknown command, or arguments of the wrong shape.
    pub fn parse(line: &str) -> Result<Request, CmdError> {
        #[derive(Deserialize)]
        struct Envelope {
            #[serde(default = "default_version")]
            version: u64,
            cmd: String,
            #[serde(default)]
            args: Value,
        }
        fn default_version() -> u64 {
            PROTOCOL_VERSION
        }
        let env: Envelope =
            serde_json::from_str(line).map_err(|e| CmdError(format!("malformed request: {e}")))?;
        if env.version != PROTOCOL_VERSION {
            return Err(CmdError(format!(
                "protocol version {} is not supported (this daemon speaks {PROTOCOL_VERSION})",
                env.version
            )));
        }
        let args = match env.args {
            Value::Null => Value::Object(Default::default()),
            a => a,
        };
        let typed = serde_json::json!({"cmd": env.cmd, "args": args});
        serde_json::from_value(typed).map_err(|e| {
            // With empty arguments, only the command's name can be unknown.
            let probe = serde_json::json!({"cmd": env.cmd, "args": {}});
            match serde_json::from_value::<Request>(probe) {
                Err(p) if p.to_string().starts_with("unknown variant") => {
                    CmdError(format!("unknown command {:?}", env.cmd))
                }
                _ => CmdError(format!("{}: bad arguments: {e}", env.cmd)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Request, String> {
        Request::parse(line).map_err(|e| e.0)
    }

    #[test]
    fn todays_request_lines_parse_into_their_commands() {
        let cases: Vec<(&str, Request)> = vec![
            (
                r#"{"version":1,"cmd":"status","args":{}}"#,
                Request::Status {},
            ),
            (r#"{"version":1,"cmd":"status"}"#, Request::Status {}),
            (r#"{"cmd":"status","args":null}"#, Request::Status {}),
            (
                r#"{"cmd":"health","args":{"ignored":1}}"#,
                Request::Health {},
            ),
            (r#"{"cmd":"metrics","args":{}}"#, Request::Metrics {}),
            (
                r#"{"version":1,"cmd":"sync","args":{"wait":false}}"#,
                Request::Sync(SyncArgs::default()),
            ),
            (
                r#"{"version":1,"cmd":"sync","args":{"wait":true,"kick":false,"timeout_ms":1500,"timeout_s":2,"slice_ms":1000}}"#,
                Request::Sync(SyncArgs {
                    kick: false,
                    wait: true,
                    timeout_s: Some(2),
                    timeout_ms: Some(1500),
                    slice_ms: Some(1000),
                }),
            ),
            (
                r#"{"version":1,"cmd":"journal","args":{"failed":true}}"#,
                Request::Journal(JournalArgs { failed: true }),
            ),
            (
                r#"{"version":1,"cmd":"journal-retry","args":{"id":null,"all":true}}"#,
                Request::JournalRetry(JournalRetryArgs {
                    id: None,
                    all: true,
                }),
            ),
            (
                r#"{"version":1,"cmd":"journal-retry","args":{"id":7,"all":false}}"#,
                Request::JournalRetry(JournalRetryArgs {
                    id: Some(7),
                    all: false,
                }),
            ),
            (
                r#"{"version":1,"cmd":"journal-drop","args":{"id":42,"yes":true}}"#,
                Request::JournalDrop(JournalDropArgs { id: 42, yes: true }),
            ),
            (
                r#"{"version":1,"cmd":"pin","args":{"paths":["/mnt/a","b"]}}"#,
                Request::Pin(PathsArgs {
                    paths: vec!["/mnt/a".into(), "b".into()],
                }),
            ),
            (
                r#"{"version":1,"cmd":"unpin","args":{"paths":["b"]}}"#,
                Request::Unpin(PathsArgs {
                    paths: vec!["b".into()],
                }),
            ),
            (
                r#"{"version":1,"cmd":"evict","args":{"paths":["big.iso"]}}"#,
                Request::Evict(PathsArgs {
                    paths: vec!["big.iso".into()],
                }),
            ),
            (
                r#"{"version":1,"cmd":"cache","args":{}}"#,
                Request::Cache {},
            ),
            (
                r#"{"version":1,"cmd":"ls","args":{"path":"Photos"}}"#,
                Request::Ls(LsArgs {
                    path: "Photos".into(),
                }),
            ),
            (r#"{"cmd":"ls"}"#, Request::Ls(LsArgs::default())),
            (r#"{"cmd":"conflicts","args":{}}"#, Request::Conflicts {}),
            (
                r#"{"version":1,"cmd":"conflicts-resolve","args":{"path":"plan.txt","keep":"local"}}"#,
                Request::ConflictsResolve(ConflictsResolveArgs {
                    path: "plan.txt".into(),
                    keep: Keep::Local,
                }),
            ),
            (r#"{"cmd":"backup-run","args":{}}"#, Request::BackupRun {}),
            (
                r#"{"cmd":"backup-job","args":{"id":3}}"#,
                Request::BackupJob(IdArgs { id: 3 }),
            ),
            (
                r#"{"cmd":"backup-status","args":{}}"#,
                Request::BackupStatus {},
            ),
            (r#"{"cmd":"backup-list","args":{}}"#, Request::BackupList {}),
            (
                r#"{"cmd":"backup-verify","args":{"name":"backup-h-1.tar.gz"}}"#,
                Request::BackupVerify(BackupNameArgs {
                    name: "backup-h-1.tar.gz".into(),
                }),
            ),
            (
                r#"{"cmd":"backup-restore","args":{"name":"b","to":"/tmp/r","force":false}}"#,
                Request::BackupRestore(BackupRestoreArgs {
                    name: "b".into(),
                    to: "/tmp/r".into(),
                    force: false,
                }),
            ),
            (
                r#"{"cmd":"migrate-start","args":{"src":"/data","dest":"Archive","verify":"size","delete_source":true,"exclude":["*.tmp"],"follow_symlinks":false}}"#,
                Request::MigrateStart(MigrateStartArgs {
                    src: "/data".into(),
                    dest: "Archive".into(),
                    verify: Verify::Size,
                    delete_source: true,
                    exclude: Some(vec!["*.tmp".into()]),
                    follow_symlinks: false,
                }),
            ),
            (
                r#"{"cmd":"migrate-start","args":{"src":"/data","dest":"A","exclude":null}}"#,
                Request::MigrateStart(MigrateStartArgs {
                    src: "/data".into(),
                    dest: "A".into(),
                    verify: Verify::Full,
                    delete_source: false,
                    exclude: None,
                    follow_symlinks: false,
                }),
            ),
            (
                r#"{"cmd":"migrate-status","args":{"id":null}}"#,
                Request::MigrateStatus(MigrateStatusArgs { id: None }),
            ),
            (
                r#"{"cmd":"migrate-status","args":{"id":1}}"#,
                Request::MigrateStatus(MigrateStatusArgs { id: Some(1) }),
            ),
            (
                r#"{"cmd":"migrate-list","args":{}}"#,
                Request::MigrateList {},
            ),
            (
                r#"{"cmd":"migrate-pause","args":{"id":1}}"#,
                Request::MigratePause(IdArgs { id: 1 }),
            ),
            (
                r#"{"cmd":"migrate-resume","args":{"id":1}}"#,
                Request::MigrateResume(IdArgs { id: 1 }),
            ),
            (
                r#"{"cmd":"migrate-cancel","args":{"id":1}}"#,
                Request::MigrateCancel(IdArgs { id: 1 }),
            ),
            (
                r#"{"cmd":"migrate-errors","args":{"id":1}}"#,
                Request::MigrateErrors(MigrateErrorsArgs { id: 1, limit: None }),
            ),
        ];
        for (line, want) in cases {
            assert_eq!(parse(line).as_ref(), Ok(&want), "{line}");
            // What the client sends reads back the same, under the same name.
            let sent = want.to_line();
            assert_eq!(parse(&sent).as_ref(), Ok(&want), "{sent}");
            let v: Value = serde_json::from_str(&sent).unwrap();
            let l: Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["cmd"], l["cmd"]);
            assert_eq!(v["version"], 1);
            assert!(v["args"].is_object(), "{sent}");
            assert_eq!(want.name(), l["cmd"].as_str().unwrap());
        }
    }

    #[test]
    fn bad_requests_are_refused_with_a_message_that_says_why() {
        let err = |line: &str| parse(line).expect_err(line);
        assert!(err("this is not json").starts_with("malformed request"));
        assert!(err(r#"{"args":{}}"#).starts_with("malformed request"));
        assert!(err(r#"{"cmd":7}"#).starts_with("malformed request"));
        assert_eq!(
            err(r#"{"cmd":"self-destruct"}"#),
            "unknown command \"self-destruct\""
        );
        assert!(err(r#"{"version":99,"cmd":"status"}"#).contains("version 99"));
        let e = err(r#"{"cmd":"pin","args":{"paths":[1,2]}}"#);
        assert!(
            e.starts_with("pin: bad arguments") && e.contains("string"),
            "{e}"
        );
        let e = err(r#"{"cmd":"pin","args":{}}"#);
        assert!(e.contains("missing field `paths`"), "{e}");
        let e = err(r#"{"cmd":"journal-drop","args":{"id":"42"}}"#);
        assert!(e.starts_with("journal-drop: bad arguments"), "{e}");
        // A bad value of an argument's own set is not taken for an unknown command.
        let e = err(r#"{"cmd":"conflicts-resolve","args":{"path":"a","keep":"mine"}}"#);
        assert!(
            e.starts_with("conflicts-resolve: bad arguments") && e.contains("local"),
            "{e}"
        );
        let e = err(r#"{"cmd":"sync","args":{"wait":"yes"}}"#);
        assert!(e.starts_with("sync: bad arguments"), "{e}");
        let e = err(r#"{"cmd":"status","args":[1]}"#);
        assert!(e.starts_with("status: bad arguments"), "{e}");
    }
}
