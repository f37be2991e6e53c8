//! `mount.davdrive`: the util-linux external mount helper convention, so that
//! `mount -t davdrive URL DIR -o OPTIONS` and an `/etc/fstab` line work.
//!
//! mount(8) runs `/sbin/mount.davdrive SPEC DIR [-sfnv] [-N namespace] [-o OPTIONS]
//! [-t type.subtype]`. This module turns that into the arguments of `davdrive mount`;
//! it does no I/O, so it is tested on its own.

use std::ffi::OsString;

/// The name the binary answers to as a mount helper (argv[0]'s file name).
pub const HELPER_NAME: &str = "mount.davdrive";

/// One call of the helper, parsed.
#[derive(Debug, PartialEq, Eq)]
pub struct HelperCall {
    /// `-f`: parse and check everything, mount nothing.
    pub fake: bool,
    /// `-v`: say what is run.
    pub verbose: bool,
    /// The arguments of `davdrive mount` (without the program name), `--daemon` last.
    pub mount_args: Vec<OsString>,
}

/// Options of `davdrive mount` that take a value: the mount option `cache_dir=X` (or
/// `cache-dir=X`) is the flag `--cache-dir X`.
const VALUE_OPTIONS: &[&str] = &[
    "cache_dir",
    "user",
    "password_file",
    "bearer_token_file",
    "ca_cert",
    "dir_ttl",
    "attr_ttl",
    "refresh_wait",
    "poll_interval",
    "health_interval",
    "request_timeout",
    "max_listing_size",
    "threads",
    "cache_max_age",
    "cache_max_size",
    "cache_min_free",
    "upload_parts_from",
    "upload_part_size",
    "partial_updates_from",
    "control_socket",
    "config",
    "backup_source",
    "backup_at",
    "backup_keep_days",
    "backup_compression",
    "backup_dir",
    "uid",
    "gid",
    "umask",
    "file_mode",
    "dir_mode",
    "metrics_addr",
];

/// Options of `davdrive mount` without a value.
const FLAG_OPTIONS: &[&str] = &[
    "allow_other",
    "allow_non_empty",
    "http",
    "passthrough",
    "read_only",
    "metrics_allow_remote",
];

/// Generic options that mount(8) and fstab use and pass on, with nothing for davdrive to
/// do: `rw` is what a davdrive mount is; a davdrive mount is always `nosuid,nodev`;
/// the rest are for mount(8), systemd or the fstab (`user` without `=` is fstab's "a
/// user may mount this", `user=NAME` is the server's user name).
const IGNORED: &[&str] = &[
    "defaults",
    "rw",
    "auto",
    "noauto",
    "_netdev",
    "nofail",
    "user",
    "nouser",
    "users",
    "owner",
    "group",
    "exec",
    "suid",
    "nosuid",
    "dev",
    "nodev",
    "atime",
    "noatime",
    "relatime",
    "nodiratime",
    "async",
    "loud",
    "silent",
];

/// Parses the helper's arguments (after argv[0]).
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<HelperCall, String> {
    let mut positional: Vec<OsString> = Vec::new();
    let mut options: Vec<String> = Vec::new();
    let mut fake = false;
    let mut verbose = false;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let Some(s) = arg.to_str() else {
            positional.push(arg);
            continue;
        };
        if s == "--" {
            positional.extend(args.by_ref());
            break;
        }
        if !s.starts_with('-') || s == "-" {
            positional.push(arg);
            continue;
        }
        // Short options, possibly bundled (-fv) and with the value attached (-oX).
        for (i, c) in s[1..].char_indices() {
            match c {
                'f' => fake = true,
                'v' => verbose = true,
                's' | 'n' => {}
                'o' | 'N' | 't' => {
                    let rest = &s[1 + i + 1..];
                    let value = if rest.is_empty() {
                        args.next()
                            .ok_or_else(|| format!("option -{c} needs a value"))?
                            .into_string()
                            .map_err(|_| format!("option -{c}: not valid UTF-8"))?
                    } else {
                        rest.to_string()
                    };
                    match c {
                        'o' => options.push(value),
                        'N' => {
                            return Err(
                                "-N (mount namespaces) is not supported; mount from within \
                                 the namespace"
                                    .into(),
                            )
                        }
                        // `-t davdrive` or `-t fuse.davdrive`: both are us.
                        _ => {}
                    }
                    break;
                }
                _ => return Err(format!("unknown flag -{c} (usage: {USAGE})")),
            }
        }
    }
    let [spec, dir]: [OsString; 2] = positional
        .try_into()
        .map_err(|_| format!("give the URL and the mountpoint (usage: {USAGE})"))?;
    // A password in the URL would show in `ps` and /proc/mounts before davdrive
    // refuses it: refuse it here, before anything is started.
    if let Some(url) = spec.to_str().and_then(|s| url::Url::parse(s).ok()) {
        if url.password().is_some() {
            return Err(
                "do not put the password in the URL (it would show in ps and the fstab); \
                 use password_file=FILE"
                    .into(),
            );
        }
    }
    let mut mount_args = vec![spec, dir];
    for opts in &options {
        for o in split_options(opts)? {
            mount_args.extend(translate(&o)?.into_iter().map(OsString::from));
        }
    }
    mount_args.push("--daemon".into());
    Ok(HelperCall {
        fake,
        verbose,
        mount_args,
    })
}

const USAGE: &str = "mount.davdrive URL DIR [-sfnv] [-o OPTIONS]";

/// Splits `a,b=c,d="x,y"` at the commas outside double quotes, dropping the quotes.
fn split_options(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    if quoted {
        return Err("a mount option has an unclosed double quote".into());
    }
    out.push(cur);
    Ok(out.into_iter().filter(|o| !o.is_empty()).collect())
}

/// One mount option to `davdrive mount` flags. Error texts name the option, never its
/// value (it could be a secret put in the wrong place).
fn translate(option: &str) -> Result<Vec<String>, String> {
    let (key, value) = match option.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (option, None),
    };
    let name = key.replace('-', "_");
    if matches!(name.as_str(), "password" | "pass" | "passwd") {
        return Err(format!(
            "mount option '{key}' refused: a password in mount options shows in ps, the \
             logs and the fstab; use password_file=FILE (or DAVDRIVE_PASSWORD in the \
             environment)"
        ));
    }
    let flag = format!("--{}", name.replace('_', "-"));
    match value {
        None if IGNORED.contains(&name.as_str()) => Ok(vec![]),
        None if FLAG_OPTIONS.contains(&name.as_str()) => Ok(vec![flag]),
        Some(_) if FLAG_OPTIONS.contains(&name.as_str()) => {
            Err(format!("mount option '{key}' takes no value"))
        }
        None if VALUE_OPTIONS.contains(&name.as_str()) => {
            Err(format!("mount option '{key}' needs a value: {key}=…"))
        }
        Some("") if VALUE_OPTIONS.contains(&name.as_str()) => {
            Err(format!("mount option '{key}' needs a value: {key}=…"))
        }
        Some(v) if VALUE_OPTIONS.contains(&name.as_str()) => Ok(vec![format!("{flag}={v}")]),
        // systemd's and other programs' options (x-systemd.automount, comment=…).
        _ if name.starts_with("x_") || name == "comment" => Ok(vec![]),
        None if name == "ro" => Ok(vec!["--read-only".into()]),
        _ => Err(format!(
            "unknown mount option '{key}' (see davdrive mount --help)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<OsString> {
        s.iter().map(OsString::from).collect()
    }

    fn strings(c: &HelperCall) -> Vec<String> {
        c.mount_args
            .iter()
            .map(|a| a.to_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn options_become_mount_flags() {
        let c = parse(args(&[
            "http://h/dav/",
            "/mnt/d",
            "-o",
            "rw,cache-dir=/var/cache/d,user=me,password_file=/etc/p,allow_other,_netdev,\
             noauto,x-systemd.automount,dir_ttl=5s,backup_source=/a,backup_source=/b",
        ]))
        .unwrap();
        assert_eq!(
            strings(&c),
            [
                "http://h/dav/",
                "/mnt/d",
                "--cache-dir=/var/cache/d",
                "--user=me",
                "--password-file=/etc/p",
                "--allow-other",
                "--dir-ttl=5s",
                "--backup-source=/a",
                "--backup-source=/b",
                "--daemon"
            ]
        );
        assert!(!c.fake && !c.verbose);
    }

    #[test]
    fn the_options_of_other_network_filesystems() {
        let c = parse(args(&[
            "u",
            "d",
            "-o",
            "ro,uid=1000,gid=100,umask=022,file_mode=0640,dir_mode=0750,allow_other,_netdev,nofail",
        ]))
        .unwrap();
        assert_eq!(
            strings(&c),
            [
                "u",
                "d",
                "--read-only",
                "--uid=1000",
                "--gid=100",
                "--umask=022",
                "--file-mode=0640",
                "--dir-mode=0750",
                "--allow-other",
                "--daemon"
            ]
        );
        let c = parse(args(&["u", "d", "-o", "rw"])).unwrap();
        assert_eq!(strings(&c), ["u", "d", "--daemon"]);
    }

    #[test]
    fn flags_bundled_and_attached() {
        let c = parse(args(&[
            "-fv", "u", "d", "-ohttp", "-n", "-s", "-t", "davdrive",
        ]))
        .unwrap();
        assert!(c.fake && c.verbose);
        assert_eq!(strings(&c), ["u", "d", "--http", "--daemon"]);
        let c = parse(args(&["u", "d", "-o", "config=\"/a,b.toml\""])).unwrap();
        assert_eq!(strings(&c), ["u", "d", "--config=/a,b.toml", "--daemon"]);
    }

    #[test]
    fn bad_calls_are_refused_by_name() {
        let e = parse(args(&["u", "d", "-o", "cache_dir=/c,bogus=1"])).unwrap_err();
        assert!(e.contains("'bogus'"), "{e}");
        assert!(!e.contains('\n'));
        let e = parse(args(&["u", "d", "-o", "password=hunter2"])).unwrap_err();
        assert!(e.contains("password_file"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        let e = parse(args(&["u", "d", "-o", "ro=1"])).unwrap_err();
        assert!(e.contains("'ro'"), "{e}");
        assert!(parse(args(&["u", "d", "-o", "http=1"])).is_err());
        assert!(parse(args(&["u", "d", "-o", "cache_dir"])).is_err());
        assert!(parse(args(&["u", "d", "-o", "cache_dir="])).is_err());
        assert!(parse(args(&["u"])).is_err());
        assert!(parse(args(&["u", "d", "-x"])).is_err());
        assert!(parse(args(&["u", "d", "-N", "/proc/1/ns/mnt"])).is_err());
        assert!(parse(args(&["u", "d", "-o"])).is_err());
    }

    #[test]
    fn a_password_in_the_url_is_refused() {
        let e = parse(
            ["https://me:secret@host/dav/", "/mnt"]
                .iter()
                .map(OsString::from)
                .collect::<Vec<_>>(),
        )
        .unwrap_err();
        assert!(e.contains("password_file"), "{e}");
        assert!(!e.contains("secret"), "{e}");
    }
}
