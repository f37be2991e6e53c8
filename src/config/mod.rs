//! Mount settings: flags, settings file and environment, validated in one place.
//!
//! Three files, because together they would pass 1,000 lines and each is read for a
//! different question:
//! - this one: what a mount is configured with ([`MountConfig`]) and the parsers and
//!   paths every part shares;
//! - `args`: the flags of `davdrive mount` and their validation into a `MountConfig`;
//! - `layers`: how the settings file and the environment become flags under the user's,
//!   and `--print-config`.

mod args;
mod layers;

pub use args::{backup_config, build_config, MountArgs};
pub use layers::{
    config_file_path, env_flags, file_flags, layered_mount_args, mount_specs, render_config,
    OptSpec, Source,
};

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
