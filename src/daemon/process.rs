//! The daemon as a process: started in the background (`mount --daemon`, mount(8)),
//! telling the command that started it once the mount is ready or has failed, and
//! stopped by `davdrive unmount`.
//!
//! The background daemon is this same program run again, in a session of its own, with
//! [`CHILD_ENV`] set. It writes one line to its stdout: `READY`, `READY read-only: <why>`
//! or `ERROR <message>`; from `READY` on it logs to `<cache dir>/davdrive.log`.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::fuse::session::Ready;

/// Set in the environment of the background daemon.
pub const CHILD_ENV: &str = "DAVDRIVE_DAEMON_CHILD";

/// Whether this process is the background daemon another `davdrive mount` started.
pub fn is_child() -> bool {
    std::env::var_os(CHILD_ENV).is_some()
}

/// What the background daemon reported once its mount was ready.
#[derive(Debug, Clone)]
pub struct Detached {
    /// `read-only: <why>` for a read-only mount.
    pub mode: Option<String>,
    /// Where the daemon logs from now on.
    pub log: PathBuf,
}

/// The background daemon's side: tells the command waiting for it how mounting went,
/// and from a ready mount on logs to `log` (that command is gone then).
pub fn report_to_parent(result: Result<Ready, String>, log: &Path) {
    match result {
        Ok(ready) => {
            match ready.read_only {
                Some(why) => println!("READY read-only: {why}"),
                None => println!("READY"),
            }
            redirect_output(log);
        }
        Err(e) => println!("ERROR {e}"),
    }
}

fn redirect_output(log: &Path) {
    use std::os::fd::AsRawFd;
    if let Ok(f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
    {
        unsafe {
            libc::dup2(f.as_raw_fd(), 1);
            libc::dup2(f.as_raw_fd(), 2);
        }
    }
}

/// Starts this same program again with `argv` (a `davdrive mount … --daemon` command
/// line, whatever name this one was called by) in its own session and waits until it
/// reports the mount ready (exit 0) or failed (its error, exit 1).
pub fn start_in_background(cache_dir: &Path, argv: Vec<OsString>) -> Result<Detached, String> {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return Err(format!("cannot find my own executable: {e}")),
    };
    let mut cmd = Command::new(exe);
    // Named davdrive even when this is mount.davdrive, so it mounts instead of parsing
    // helper arguments again.
    cmd.arg0("davdrive")
        .args(argv)
        .env(CHILD_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Err(format!("cannot start the daemon: {e}")),
    };
    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    // Read beside stdout: a daemon logging much before it is ready would otherwise
    // fill the pipe and wait on it while we wait for READY.
    let stderr_text = std::thread::spawn(move || {
        let mut err = String::new();
        let _ = stderr.read_to_string(&mut err);
        err
    });
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if let Some(rest) = line.strip_prefix("READY") {
            return Ok(Detached {
                mode: Some(rest.trim().to_string()).filter(|m| !m.is_empty()),
                log: cache_dir.join("davdrive.log"),
            });
        }
        if let Some(msg) = line.strip_prefix("ERROR ") {
            let _ = child.wait();
            return Err(msg.to_string());
        }
    }
    let _ = child.wait();
    let err = stderr_text.join().unwrap_or_default();
    Err(format!(
        "the daemon stopped before the mount was ready: {}",
        err.lines().last().unwrap_or("no message")
    ))
}

/// `davdrive unmount`: unmounts the davdrive mount on `mountpoint` and waits (a minute at
/// most) for its daemon to hand everything to the journal and exit.
pub fn unmount(mountpoint: &Path) -> Result<(), String> {
    let mp = std::path::absolute(mountpoint).unwrap_or_else(|_| mountpoint.to_path_buf());
    let mp = std::fs::canonicalize(&mp).unwrap_or(mp);
    match crate::fuse::session::mounted_fstype(&mp) {
        None => return Err(format!("{} is not mounted", mp.display())),
        Some(t) if t != "fuse.davdrive" => {
            return Err(format!("{} is not a davdrive mount ({t})", mp.display()))
        }
        Some(_) => {}
    }
    let pid = std::fs::read_to_string(crate::config::pid_file(&mp))
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok());
    // fusermount3's own message becomes part of ours: one line, from one program.
    let out = Command::new("fusermount3")
        .arg("-u")
        .arg(&mp)
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            let why = String::from_utf8_lossy(&o.stderr);
            let why = why
                .lines()
                .last()
                .unwrap_or("")
                .rsplit(": ")
                .next()
                .unwrap_or("")
                .trim();
            let hint = if why.contains("busy") {
                " (a program has a file or folder in it open)"
            } else {
                ""
            };
            return Err(format!(
                "could not unmount {}: {}{hint}",
                mp.display(),
                if why.is_empty() {
                    "fusermount3 failed"
                } else {
                    why
                }
            ));
        }
        Err(e) => {
            return Err(format!(
                "cannot run fusermount3 (install the fuse3 package): {e}"
            ))
        }
    }
    // Wait for the daemon to hand everything to the journal and exit.
    if let Some(pid) = pid {
        let deadline = Instant::now() + Duration::from_secs(60);
        while process_running(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(())
}

/// Alive and not a zombie (an exited daemon whose parent has not reaped it yet).
fn process_running(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}
