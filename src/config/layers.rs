//! The settings file and the environment, turned into `davdrive mount` flags placed
//! before the user's own (so a flag given on the command line wins), and
//! `--print-config`, which shows the result and where each value came from.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::MountArgs;

/// One option of `davdrive mount`, as the settings file and the environment name it.
#[derive(Debug, Clone)]
pub struct OptSpec {
    /// `dir_ttl`: the file's key; `DAVDRIVE_DIR_TTL` in the environment.
    pub key: String,
    /// `dir-ttl`: the flag `--dir-ttl`.
    pub long: String,
    pub takes_value: bool,
    /// Repeatable (`--backup-source`): every layer adds to it.
    pub repeats: bool,
}

impl OptSpec {
    pub fn env_var(&self) -> String {
        format!("DAVDRIVE_{}", self.key.to_ascii_uppercase())
    }
}

/// Where a setting came from, for `davdrive mount --print-config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    Env(String),
    Flag,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File(p) => write!(f, "file {}", p.display()),
            Source::Env(v) => write!(f, "environment {v}"),
            Source::Flag => write!(f, "command line"),
        }
    }
}

/// `--name=value` (or `--name`) for an option set to `value` in a layer.
fn as_flags(spec: &OptSpec, value: &str) -> Vec<String> {
    if spec.takes_value {
        vec![format!("--{}={value}", spec.long)]
    } else {
        vec![format!("--{}", spec.long)]
    }
}

fn truthy(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

/// The settings file as flags of `davdrive mount`: every option by its name (`dir_ttl =
/// "5s"`, `allow_other = true`, `backup_source = ["/a", "/b"]`), and the older
/// `[backup]` table (`sources`, `at`, `keep_days`, `compression`, `dir`). An unknown
/// key is one line naming it and the file.
pub fn file_flags(path: &Path, text: &str, specs: &[OptSpec]) -> Result<Vec<String>, String> {
    let shown = path.display();
    let table: toml::Table = toml::from_str(text).map_err(|e| {
        let msg = e.message().trim().replace('\n', " ");
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        match line {
            Some(l) => format!("{shown}, line {l}: {msg}"),
            None => format!("{shown}: {msg}"),
        }
    })?;
    let mut out = Vec::new();
    let mut one = |key: &str, spec_key: &str, v: &toml::Value| -> Result<(), String> {
        let spec = specs.iter().find(|s| s.key == spec_key).ok_or_else(|| {
            format!("{shown}: unknown key '{key}' (see davdrive mount --help for the options)")
        })?;
        let scalar = |v: &toml::Value| -> Result<String, String> {
            match v {
                toml::Value::String(s) => Ok(s.clone()),
                toml::Value::Integer(i) => Ok(i.to_string()),
                toml::Value::Float(f) => Ok(f.to_string()),
                toml::Value::Boolean(b) => Ok(b.to_string()),
                _ => Err(format!("{shown}: '{key}' takes a single value")),
            }
        };
        match (v, spec.takes_value) {
            (toml::Value::Array(items), true) if spec.repeats => {
                for item in items {
                    out.extend(as_flags(spec, &scalar(item)?));
                }
            }
            (toml::Value::Boolean(b), false) => {
                if *b {
                    out.extend(as_flags(spec, ""));
                }
            }
            (_, false) => return Err(format!("{shown}: '{key}' is true or false")),
            (v, true) => out.extend(as_flags(spec, &scalar(v)?)),
        }
        Ok(())
    };
    for (key, value) in &table {
        if key == "backup" {
            let toml::Value::Table(t) = value else {
                return Err(format!("{shown}: 'backup' is a table ([backup])"));
            };
            for (k, v) in t {
                let spec_key = match k.as_str() {
                    "sources" => "backup_source".to_string(),
                    other => format!("backup_{other}"),
                };
                one(&format!("backup.{k}"), &spec_key, v)?;
            }
            continue;
        }
        one(key, &key.replace('-', "_"), value)?;
    }
    Ok(out)
}

/// `DAVDRIVE_<OPTION>` variables as flags, each with the variable it came from. A
/// repeatable option takes several values separated by `:` (like PATH).
pub fn env_flags(
    specs: &[OptSpec],
    get: impl Fn(&str) -> Option<String>,
) -> Result<Vec<(String, Vec<String>)>, String> {
    let mut out = Vec::new();
    for spec in specs {
        let var = spec.env_var();
        let Some(value) = get(&var) else { continue };
        let flags = if !spec.takes_value {
            match truthy(&value) {
                Some(true) => as_flags(spec, ""),
                Some(false) => continue,
                None => return Err(format!("{var}: '{value}' is not true or false")),
            }
        } else if spec.repeats {
            value
                .split(':')
                .filter(|v| !v.is_empty())
                .flat_map(|v| as_flags(spec, v))
                .collect()
        } else {
            as_flags(spec, &value)
        };
        out.push((var, flags));
    }
    Ok(out)
}

/// The settings file to read: `--config` among `args`, else `DAVDRIVE_CONFIG`, else
/// `$XDG_CONFIG_HOME/davdrive/config.toml` (`~/.config/…`) when it exists.
pub fn config_file_path(args: &[std::ffi::OsString]) -> Option<(PathBuf, bool)> {
    let mut found = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let Some(s) = a.to_str() else { continue };
        if s == "--" {
            break;
        }
        if s == "--config" {
            found = it.next().map(PathBuf::from);
        } else if let Some(v) = s.strip_prefix("--config=") {
            found = Some(PathBuf::from(v));
        }
    }
    if let Some(p) = found {
        return Some((p, true));
    }
    if let Some(p) = std::env::var_os("DAVDRIVE_CONFIG").filter(|p| !p.is_empty()) {
        return Some((PathBuf::from(p), true));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    let p = base.join("davdrive").join("config.toml");
    p.exists().then_some((p, false))
}

/// The options of `davdrive mount` that the settings file and the environment can set:
/// all but the positional arguments, help, --config, --print-config and --daemon.
pub fn mount_specs() -> Vec<OptSpec> {
    mount_command()
        .get_arguments()
        .filter_map(|a| {
            let long = a.get_long()?;
            if matches!(long, "help" | "config" | "print-config" | "daemon") {
                return None;
            }
            Some(OptSpec {
                key: long.replace('-', "_"),
                long: long.to_string(),
                takes_value: a.get_action().takes_values(),
                repeats: matches!(a.get_action(), clap::ArgAction::Append),
            })
        })
        .collect()
}

/// `davdrive mount` arguments with the settings file's first, then the environment's,
/// then `user`'s: later ones win. Returns them with the source of each.
pub fn layered_mount_args(user: &[OsString]) -> Result<(Vec<OsString>, Vec<Source>), String> {
    let specs = mount_specs();
    let mut argv: Vec<OsString> = Vec::new();
    let mut sources = Vec::new();
    if let Some((path, _)) = config_file_path(user) {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("settings file {}: {e}", path.display()))?;
        for f in file_flags(&path, &text, &specs)? {
            argv.push(f.into());
            sources.push(Source::File(path.clone()));
        }
    }
    for (var, flags) in env_flags(&specs, |v| std::env::var(v).ok())? {
        for f in flags {
            argv.push(f.into());
            sources.push(Source::Env(var.clone()));
        }
    }
    for a in user {
        argv.push(a.clone());
        sources.push(Source::Flag);
    }
    Ok((argv, sources))
}

/// `--print-config`: every option with the value in effect and where it came from, in
/// the settings file's syntax, one line each.
pub fn render_config(argv: &[OsString], sources: &[Source]) -> String {
    let mount = mount_command();
    let mut out = String::new();
    let positional: Vec<String> = argv
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    // Positional arguments: tokens not starting with `--` that are not a flag's value.
    let mut values: Vec<(String, Vec<(String, String)>)> = Vec::new();
    let mut plain = Vec::new();
    let mut i = 0;
    while i < positional.len() {
        let t = &positional[i];
        let src = sources[i].to_string();
        if let Some(flag) = t.strip_prefix("--") {
            let (name, inline) = match flag.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (flag, None),
            };
            let takes = mount
                .get_arguments()
                .find(|a| a.get_long() == Some(name))
                .is_some_and(|a| a.get_action().takes_values());
            let value = match (inline, takes) {
                (Some(v), _) => v,
                (None, true) => {
                    i += 1;
                    positional.get(i).cloned().unwrap_or_default()
                }
                (None, false) => "true".into(),
            };
            let key = name.replace('-', "_");
            match values.iter_mut().find(|(k, _)| *k == key) {
                Some((_, v)) => v.push((value, src)),
                None => values.push((key, vec![(value, src)])),
            }
        } else {
            plain.push((t.clone(), src));
        }
        i += 1;
    }
    let quote = |v: &str| {
        // TOML integers have no leading zero: a mode stays a string.
        if v.parse::<i64>().is_ok() && (v == "0" || !v.starts_with('0')) {
            v.to_string()
        } else {
            format!("{v:?}")
        }
    };
    for (name, (v, src)) in ["url", "mountpoint"].iter().zip(plain.iter()) {
        let _ = writeln!(out, "# {name} = {}    # {src}", quote(v));
    }
    for spec in mount_specs() {
        let set = values.iter().find(|(k, _)| *k == spec.key).map(|(_, v)| v);
        let line = match set {
            Some(v) if spec.repeats => {
                let items: Vec<String> = v.iter().map(|(x, _)| quote(x)).collect();
                let mut srcs: Vec<&str> = v.iter().map(|(_, s)| s.as_str()).collect();
                srcs.dedup();
                format!(
                    "{} = [{}]    # {}",
                    spec.key,
                    items.join(", "),
                    srcs.join(", ")
                )
            }
            Some(v) => {
                let (x, src) = v.last().expect("a value");
                let shown = if spec.takes_value {
                    quote(x)
                } else {
                    x.clone()
                };
                format!("{} = {shown}    # {src}", spec.key)
            }
            None => {
                let arg = mount
                    .get_arguments()
                    .find(|a| a.get_long() == Some(spec.long.as_str()));
                let default: Vec<String> = arg
                    .map(|a| {
                        a.get_default_values()
                            .iter()
                            .map(|d| d.to_string_lossy().into_owned())
                            .collect()
                    })
                    .unwrap_or_default();
                match (default.first(), spec.takes_value) {
                    (Some(d), true) => format!("{} = {}    # default", spec.key, quote(d)),
                    (_, false) => format!("{} = false    # default", spec.key),
                    (None, true) => format!("# {} not set", spec.key),
                }
            }
        };
        let _ = writeln!(out, "{line}");
    }
    if std::env::var_os("DAVDRIVE_PASSWORD").is_some() {
        out.push_str("# password: from the environment DAVDRIVE_PASSWORD (not shown)\n");
    }
    out
}

/// The `mount` command as clap sees it: its arguments, their kinds and defaults.
fn mount_command() -> clap::Command {
    <MountArgs as clap::Args>::augment_args(clap::Command::new("mount"))
}

#[cfg(test)]
mod layer_tests {
    use super::*;

    fn specs() -> Vec<OptSpec> {
        let s = |key: &str, takes_value: bool, repeats: bool| OptSpec {
            key: key.into(),
            long: key.replace('_', "-"),
            takes_value,
            repeats,
        };
        vec![
            s("dir_ttl", true, false),
            s("allow_other", false, false),
            s("backup_source", true, true),
            s("backup_at", true, false),
            s("threads", true, false),
        ]
    }

    #[test]
    fn the_file_names_every_option() {
        let p = Path::new("/etc/d.toml");
        let f = file_flags(
            p,
            "dir_ttl = \"5s\"\nallow_other = true\nthreads = 8\nbackup_source = [\"/a\", \"/b c\"]\n[backup]\nat = \"02:00\"\nsources = [\"/d\"]\n",
            &specs(),
        )
        .unwrap();
        assert_eq!(
            f,
            [
                "--allow-other",
                "--backup-at=02:00",
                "--backup-source=/d",
                "--backup-source=/a",
                "--backup-source=/b c",
                "--dir-ttl=5s",
                "--threads=8",
            ]
        );
        let e = file_flags(p, "dir_tll = \"5s\"\n", &specs()).unwrap_err();
        assert_eq!(
            e,
            "/etc/d.toml: unknown key 'dir_tll' (see davdrive mount --help for the options)"
        );
        let e = file_flags(p, "[backup]\nsauces = []\n", &specs()).unwrap_err();
        assert!(e.contains("'backup.sauces'"), "{e}");
        let e = file_flags(p, "dir_ttl = \n", &specs()).unwrap_err();
        assert!(!e.contains('\n') && e.contains("line 1"), "{e}");
        assert!(file_flags(p, "allow_other = \"yes\"\n", &specs()).is_err());
    }

    #[test]
    fn the_environment_names_every_option() {
        let env = |v: &str| match v {
            "DAVDRIVE_DIR_TTL" => Some("7s".to_string()),
            "DAVDRIVE_ALLOW_OTHER" => Some("1".to_string()),
            "DAVDRIVE_BACKUP_SOURCE" => Some("/a:/b".to_string()),
            _ => None,
        };
        let f = env_flags(&specs(), env).unwrap();
        assert_eq!(
            f,
            [
                (
                    "DAVDRIVE_DIR_TTL".to_string(),
                    vec!["--dir-ttl=7s".to_string()]
                ),
                (
                    "DAVDRIVE_ALLOW_OTHER".to_string(),
                    vec!["--allow-other".to_string()]
                ),
                (
                    "DAVDRIVE_BACKUP_SOURCE".to_string(),
                    vec![
                        "--backup-source=/a".to_string(),
                        "--backup-source=/b".to_string()
                    ]
                ),
            ]
        );
        let bad = |v: &str| (v == "DAVDRIVE_ALLOW_OTHER").then(|| "maybe".to_string());
        assert!(env_flags(&specs(), bad)
            .unwrap_err()
            .contains("DAVDRIVE_ALLOW_OTHER"));
    }
}
