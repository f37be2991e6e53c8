//! Mount settings: flags and environment, validated in one place.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Invalid(String),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Parses `500ms`, `30s`, `30m`, `12h`, `7d` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration (try 30s, 30m, 12h or 7d)"))?;
    let secs = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => {
            return Err(format!(
                "'{s}': unknown unit '{unit}' (use ms, s, m, h or d)"
            ))
        }
    };
    Ok(Duration::from_secs(secs))
}

/// A size such as `512M`, `10G`, `1.5GiB` or `0`. Units are powers of 1024; `B` and
/// `iB` suffixes are optional.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size (like 512M, 10G)"))?;
    let unit = unit.trim().to_ascii_uppercase();
    let unit = unit.trim_end_matches("IB").trim_end_matches('B');
    let scale: u64 = match unit {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return Err(format!("'{s}': unknown unit (use K, M, G or T)")),
    };
    Ok((value * scale as f64) as u64)
}

/// Everything `davdrive mount` needs, after validation.
#[derive(Debug, Clone)]
pub struct MountConfig {
    pub url: url::Url,
    pub mountpoint: PathBuf,
    pub cache_dir: PathBuf,
    pub user: Option<String>,
    pub password: Option<String>,
    /// Sent as `Authorization: Bearer …` (OAuth-style tokens, Nextcloud app tokens).
    pub bearer_token: Option<String>,
    pub ca_cert_pem: Option<Vec<u8>>,
    pub dir_ttl: Duration,
    pub attr_ttl: Duration,
    pub refresh_wait: Duration,
    /// Time between rounds of the background poll of the folders that matter; zero:
    /// no poll.
    pub poll_interval: Duration,
    pub health_interval: Duration,
    pub request_timeout: Duration,
    /// Cap on one PROPFIND reply, in bytes.
    pub max_listing_size: u64,
    pub threads: usize,
    pub allow_other: bool,
    pub cache: crate::cache::CacheLimits,
    pub uploads: crate::fs::UploadSizes,
    /// Let the kernel read fully cached files directly (FUSE passthrough).
    pub passthrough: bool,
    /// Where the control socket listens (default: `<cache dir>/control.sock`).
    pub control_socket: PathBuf,
    pub backup: crate::backup::BackupConfig,
    /// Plain HTTP, read-only: directories from the server's HTML index pages.
    pub http: bool,
    /// Mount read-only even where the server takes writes (`--read-only`, `-o ro`).
    pub read_only: bool,
    /// Mount over a folder that holds files (hidden while mounted).
    pub allow_non_empty: bool,
    /// How files look to the kernel: owner, group and permission bits.
    pub attrs: AttrPolicy,
    /// Serve the metrics over HTTP on this address (`--metrics-addr`).
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Let `metrics_addr` be other than loopback (the endpoint has no authentication).
    pub metrics_allow_remote: bool,
}

/// `uid=`, `gid=`, `umask=`, `file_mode=`, `dir_mode=`: what every file shows, as the
/// mount options of other network filesystems do. Unset fields keep what the state store
/// holds (the mounting user's, modes set with chmod).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttrPolicy {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub umask: Option<u32>,
    pub file_mode: Option<u32>,
    pub dir_mode: Option<u32>,
}

impl AttrPolicy {
    pub fn is_default(&self) -> bool {
        *self == AttrPolicy::default()
    }

    /// The permission bits to show for a node whose stored bits are `perm`.
    pub fn perm(&self, is_dir: bool, perm: u16) -> u16 {
        let fixed = if is_dir {
            self.dir_mode
        } else {
            self.file_mode
        };
        match (fixed, self.umask) {
            (Some(m), _) => (m & 0o7777) as u16,
            (None, Some(mask)) => perm & !(mask as u16) & 0o7777,
            (None, None) => perm,
        }
    }
}

/// An octal mode such as `022`, `0644` or `755`.
pub fn parse_mode(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let t = t.strip_prefix("0o").unwrap_or(t);
    match u32::from_str_radix(t, 8) {
        Ok(m) if m <= 0o7777 => Ok(m),
        _ => Err(format!("'{s}' is not an octal mode (like 022 or 0644)")),
    }
}

impl MountConfig {
    /// The URL as it may appear in logs and mount tables: no credentials in it.
    pub fn display_url(&self) -> String {
        redact_url(&self.url)
    }
}

pub fn redact_url(url: &url::Url) -> String {
    let mut u = url.clone();
    let _ = u.set_password(None);
    u.to_string()
}

/// The URL without user name or password, for what every user can read (/proc/mounts).
pub fn public_url(url: &url::Url) -> String {
    let mut u = url.clone();
    let _ = u.set_password(None);
    let _ = u.set_username("");
    u.to_string()
}

pub fn parse_url(s: &str) -> Result<url::Url, ConfigError> {
    let mut url =
        url::Url::parse(s).map_err(|e| ConfigError::Invalid(format!("'{s}' is not a URL: {e}")))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(ConfigError::Invalid(format!(
            "'{}' is not an http or https URL",
            redact_url(&url)
        )));
    }
    if url.password().is_some() {
        return Err(ConfigError::Invalid(
            "do not put the password in the URL (it would show in `ps` and logs); \
             use --password-file or DAVDRIVE_PASSWORD"
                .into(),
        ));
    }
    if !url.path().ends_with('/') {
        let p = format!("{}/", url.path());
        url.set_path(&p);
    }
    Ok(url)
}

pub fn read_password_file(path: &Path) -> Result<String, ConfigError> {
    let s = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    // One trailing newline is the editor's, not the password's.
    Ok(s.strip_suffix('\n')
        .map(|s| s.strip_suffix('\r').unwrap_or(s))
        .unwrap_or(&s)
        .to_string())
}

/// `$XDG_CACHE_HOME/davdrive/<id>` (or `~/.cache/...`), the id derived from URL and mountpoint.
pub fn default_cache_dir(url: &url::Url, mountpoint: &Path) -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"));
    let mut h = Sha256::new();
    h.update(redact_url(url).as_bytes());
    h.update(b"\n");
    h.update(mountpoint.as_os_str().as_encoded_bytes());
    let id: String = h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    base.join("davdrive").join(id)
}

/// Where a running mount leaves its pid, keyed by mountpoint, for `davdrive unmount`.
pub fn pid_file(mountpoint: &Path) -> PathBuf {
    let dir = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| PathBuf::from(format!("/tmp/davdrive-{}", unsafe { libc::getuid() })));
    let mut h = Sha256::new();
    h.update(mountpoint.as_os_str().as_encoded_bytes());
    let id: String = h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    dir.join("davdrive").join(format!("mount-{id}.pid"))
}

/// A link, beside the pid file, to the control socket of the mount on `mountpoint`: how
/// `davdrive ctl --mount` finds it.
pub fn control_link(mountpoint: &Path) -> PathBuf {
    pid_file(mountpoint).with_extension("sock")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_url_has_no_credentials() {
        let u = url::Url::parse("https://me:secret@h.example/dav/").unwrap();
        assert_eq!(public_url(&u), "https://h.example/dav/");
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("0").unwrap(), 0);
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("10G").unwrap(), 10 << 30);
        assert_eq!(parse_size("10GiB").unwrap(), 10 << 30);
        assert_eq!(parse_size("1.5g").unwrap(), 3 << 29);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("10X").is_err());
        assert!(parse_size("G").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86400)
        );
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_duration("12h").unwrap(), Duration::from_secs(43200));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("5").unwrap(), Duration::from_secs(5));
        assert!(parse_duration("7w").is_err());
        assert!(parse_duration("d").is_err());
    }

    #[test]
    fn urls_get_a_trailing_slash_and_no_password() {
        assert_eq!(parse_url("http://h/dav").unwrap().path(), "/dav/");
        assert!(parse_url("http://u:secret@h/").is_err());
        assert!(parse_url("ftp://h/").is_err());
    }
}

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
