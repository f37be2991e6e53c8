//! System integration: `mount -t davdrive` and an fstab line through the real util-linux
//! mount(8) and the `mount.davdrive` helper, `umount`, the systemd unit template, and
//! shell completions.

mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};

use common::{is_mounted, require_fuse, wait_server_has, wait_until, Server, BIN};

/// Where mount(8) looks for the helper (/sbin is /usr/sbin on Debian).
const SYSTEM_HELPER: &str = "/usr/sbin/mount.davdrive";
/// "user:dv-9f3Kq7-pw" in Basic auth: a password no other process has in its arguments.
const AUTH: &str = "Basic dXNlcjpkdi05ZjNLcTctcHc=";
const PASSWORD: &str = "dv-9f3Kq7-pw";

static HELPER_LOCK: Mutex<()> = Mutex::new(());

/// /usr/sbin/mount.davdrive pointing at the binary under test while it lives; removed
/// on drop, also when the test panics. One test at a time holds it.
struct SystemHelper {
    _lock: MutexGuard<'static, ()>,
}

impl SystemHelper {
    fn install() -> SystemHelper {
        let lock = HELPER_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let path = Path::new(SYSTEM_HELPER);
        if let Ok(target) = fs::read_link(path) {
            // Left by an earlier run of these tests that was killed: ours, replace it.
            assert!(
                target.to_string_lossy().contains("/target/"),
                "{SYSTEM_HELPER} exists and points at {}, not a test build: not touching it",
                target.display()
            );
            fs::remove_file(path).unwrap();
        } else {
            assert!(
                !path.exists(),
                "{SYSTEM_HELPER} exists and is not ours: not touching it"
            );
        }
        symlink(BIN, path).unwrap();
        SystemHelper { _lock: lock }
    }
}

impl Drop for SystemHelper {
    fn drop(&mut self) {
        let _ = fs::remove_file(SYSTEM_HELPER);
    }
}

/// A mountpoint, cache dir and password file in a temp dir; unmounts what is left
/// mounted on drop.
struct Place {
    dir: tempfile::TempDir,
    mnt: PathBuf,
}

impl Place {
    fn new(password: &str) -> Place {
        let dir = tempfile::tempdir().unwrap();
        let mnt = dir.path().join("mnt");
        fs::create_dir(&mnt).unwrap();
        fs::write(dir.path().join("password"), format!("{password}\n")).unwrap();
        Place {
            mnt: fs::canonicalize(&mnt).unwrap(),
            dir,
        }
    }

    fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    /// The -o options of a mount as user "user" with this place's password file.
    fn options(&self) -> String {
        format!(
            "cache_dir={},user=user,password_file={},dir_ttl=1s,attr_ttl=1s",
            self.cache().display(),
            self.dir.path().join("password").display()
        )
    }

    fn daemon_pid(&self) -> i32 {
        let pid_file = davdrive::config::pid_file(&self.mnt);
        fs::read_to_string(&pid_file)
            .unwrap_or_else(|e| panic!("{}: {e}", pid_file.display()))
            .trim()
            .parse()
            .unwrap()
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        if is_mounted(&self.mnt) {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
    }
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The /proc/mounts line of `mnt`.
fn proc_mounts_line(mnt: &Path) -> Option<String> {
    let mounts = fs::read_to_string("/proc/mounts").unwrap();
    let mnt = mnt.to_string_lossy();
    mounts
        .lines()
        .find(|l| l.split(' ').nth(1) == Some(&*mnt))
        .map(str::to_string)
}

fn process_gone(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|s| s == "Z" || s == "X"),
        Err(_) => true,
    }
}

fn auth_server() -> Server {
    let server = Server::start();
    server.proxy.state.lock().unwrap().require_auth = Some(AUTH.into());
    server
}

#[test]
fn mount_t_mounts_writes_and_umount_stops_the_daemon() {
    require_fuse();
    let server = auth_server();
    fs::write(server.path("hello.txt"), b"from the server").unwrap();
    let place = Place::new(PASSWORD);
    let _helper = SystemHelper::install();

    let out = run(Command::new("mount")
        .args(["-t", "davdrive"])
        .arg(server.url())
        .arg(&place.mnt)
        .arg("-o")
        .arg(format!("{},_netdev,nofail", place.options())));
    assert!(out.status.success(), "mount -t davdrive: {}", stderr(&out));
    assert!(is_mounted(&place.mnt));

    // Type fuse.davdrive, the URL as source, no password anywhere to be read.
    let line = proc_mounts_line(&place.mnt).expect("in /proc/mounts");
    let fields: Vec<&str> = line.split(' ').collect();
    assert_eq!(fields[2], "fuse.davdrive", "{line}");
    assert_eq!(fields[0], server.url(), "{line}");
    assert!(!line.contains(PASSWORD), "{line}");
    let pid = place.daemon_pid();
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(
        cmdline.starts_with("davdrive mount "),
        "the daemon runs the mount: {cmdline}"
    );
    assert!(cmdline.contains("--password-file="), "{cmdline}");
    assert!(!cmdline.contains(PASSWORD), "{cmdline}");
    let ps = run(Command::new("ps").args(["-eo", "args"]));
    assert!(!String::from_utf8_lossy(&ps.stdout).contains(PASSWORD));

    assert_eq!(
        fs::read(place.mnt.join("hello.txt")).unwrap(),
        b"from the server"
    );
    fs::write(place.mnt.join("new.txt"), b"written through mount -t").unwrap();
    wait_server_has(&server, "new.txt", b"written through mount -t");

    let out = run(Command::new("umount").arg(&place.mnt));
    assert!(out.status.success(), "umount: {}", stderr(&out));
    assert!(!is_mounted(&place.mnt));
    wait_until(30, "the daemon exits after umount", || process_gone(pid));
    let log = fs::read_to_string(place.cache().join("davdrive.log")).unwrap();
    assert!(!log.contains(PASSWORD), "the log shows the password");
}

#[test]
fn fstab_line_mounts_with_mount_dash_t_fstab() {
    require_fuse();
    let server = auth_server();
    fs::write(server.path("in-fstab.txt"), b"listed").unwrap();
    let place = Place::new(PASSWORD);
    let fstab = place.dir.path().join("fstab");
    fs::write(
        &fstab,
        format!(
            "# a test fstab\n{} {} davdrive {},noauto,_netdev,x-systemd.automount 0 0\n",
            server.url(),
            place.mnt.display(),
            place.options()
        ),
    )
    .unwrap();
    let _helper = SystemHelper::install();

    let out = run(Command::new("mount").arg("-T").arg(&fstab).arg(&place.mnt));
    assert!(out.status.success(), "mount -T fstab: {}", stderr(&out));
    assert!(is_mounted(&place.mnt));
    assert_eq!(fs::read(place.mnt.join("in-fstab.txt")).unwrap(), b"listed");
    let pid = place.daemon_pid();

    let out = run(Command::new("umount").arg(&place.mnt));
    assert!(out.status.success(), "umount: {}", stderr(&out));
    wait_until(30, "the daemon exits after umount", || process_gone(pid));
}

#[test]
fn bad_options_and_wrong_password_fail_in_one_line() {
    require_fuse();
    let server = auth_server();
    let place = Place::new("s3cr3t-n0pe");
    let _helper = SystemHelper::install();
    let mount_t = |options: &str| {
        run(Command::new("mount")
            .args(["-t", "davdrive"])
            .arg(server.url())
            .arg(&place.mnt)
            .arg("-o")
            .arg(options))
    };
    let one_line = |o: &Output| {
        assert!(!o.status.success());
        let err = stderr(o);
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        err
    };

    let out = mount_t(&format!("{},bogus_opt=7", place.options()));
    let err = one_line(&out);
    assert!(err.contains("'bogus_opt'"), "{err}");

    let out = mount_t(&format!("{},password=s3cr3t-n0pe", place.options()));
    let err = one_line(&out);
    assert!(err.contains("password_file"), "{err}");
    assert!(!err.contains("s3cr3t"), "{err}");

    // The wrong password, from the file: the daemon's error, without the password.
    let out = mount_t(&place.options());
    let err = one_line(&out);
    assert!(err.contains("authentication failed"), "{err}");
    assert!(!err.contains("s3cr3t"), "{err}");
    assert!(!is_mounted(&place.mnt));

    // -f: checked, not mounted; a missing password file is found without mounting.
    let fake = |options: &str| {
        run(Command::new(SYSTEM_HELPER)
            .arg(server.url())
            .arg(&place.mnt)
            .args(["-f", "-o", options]))
    };
    // The server and the credentials are checked too: a wrong password fails -f.
    let out = fake(&place.options());
    let err = one_line(&out);
    assert!(err.contains("authentication failed"), "{err}");
    assert!(!err.contains("s3cr3t"), "{err}");
    assert!(!is_mounted(&place.mnt));
    let out = fake("password_file=/nonexistent/pw");
    let err = one_line(&out);
    assert!(err.contains("/nonexistent/pw"), "{err}");
    // A wrong value is clap's first line, naming the flag.
    let out = fake("dir_ttl=soon");
    let err = one_line(&out);
    assert!(err.contains("--dir-ttl"), "{err}");
}

fn completions(shell: &str) -> String {
    let out = run(Command::new(BIN).args(["completions", shell]));
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn completions_for_bash_zsh_and_fish() {
    let bash = completions("bash");
    assert!(bash.contains("_davdrive()"), "defines the function");
    assert!(bash.contains("complete -F _davdrive"), "registers it");
    for sub in ["mount", "unmount", "ctl", "completions"] {
        assert!(bash.contains(sub), "bash script mentions {sub}");
    }
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("davdrive.bash");
    fs::write(&script, &bash).unwrap();
    let out = run(Command::new("bash").arg("-n").arg(&script));
    assert!(out.status.success(), "bash -n: {}", stderr(&out));

    assert!(completions("zsh").starts_with("#compdef davdrive"));
    let fish = completions("fish");
    assert!(fish.contains("complete -c davdrive"));
    assert!(fish.contains("mount"));
}

/// `key=value` lines of one section of an INI-style unit file.
fn unit_section(text: &str, section: &str) -> Vec<(String, String)> {
    let mut current = String::new();
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.to_string();
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not key=value: {line}"));
        if current == section {
            out.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    out
}

#[test]
fn systemd_unit_template_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/davdrive@.service");
    let text = fs::read_to_string(&path).unwrap();
    let get = |section: &str, key: &str| -> Vec<String> {
        unit_section(&text, section)
            .into_iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v)
            .collect()
    };
    assert!(get("Unit", "After")
        .iter()
        .any(|v| v.contains("network-online.target")));
    assert!(get("Unit", "Wants")
        .iter()
        .any(|v| v.contains("network-online.target")));
    // Ready once mounted (the daemon sends READY=1; see the notify test).
    assert_eq!(get("Service", "Type"), ["notify"]);
    let start = get("Service", "ExecStart");
    assert_eq!(start.len(), 1);
    assert!(
        start[0].starts_with("/usr/local/bin/davdrive mount \"${DAVDRIVE_URL}\" \"%f\" "),
        "{start:?}"
    );
    assert!(!start[0].contains("--daemon"), "foreground under systemd");
    // No word-split variables: options come as DAVDRIVE_<OPTION> variables.
    assert!(!text.contains("$DAVDRIVE_FLAGS"));
    // A mount left dead by a crash is detached first, its failure ignored.
    let pre = get("Service", "ExecStartPre");
    assert_eq!(pre[0], "-/usr/bin/fusermount3 -uz \"%f\"", "{pre:?}");
    assert_eq!(
        get("Service", "ExecStop"),
        ["/usr/local/bin/davdrive unmount \"%f\""]
    );
    assert_eq!(get("Service", "Environment"), ["DAVDRIVE_ALLOW_OTHER=1"]);
    assert!(get("Service", "EnvironmentFile")
        .iter()
        .any(|v| v.contains("/etc/davdrive/%i.conf")));
    assert!(!get("Install", "WantedBy").is_empty());

    // systemd's own check, on an instance, with the binary under test (scripts/test.sh
    // installs systemd-analyze).
    {
        let dir = tempfile::tempdir().unwrap();
        let unit = dir.path().join("davdrive@srv-drive.service");
        fs::write(&unit, text.replace("/usr/local/bin/davdrive", BIN)).unwrap();
        let out = run(Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&unit));
        let err = stderr(&out);
        assert!(
            out.status.success() && !err.contains("davdrive@"),
            "systemd-analyze verify: {err}"
        );
    }
}

#[test]
fn install_script_puts_everything_in_place() {
    let dest = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install.sh");
    let out = run(Command::new("bash")
        .arg(&script)
        .env("DESTDIR", dest.path())
        .env("DAVDRIVE_BIN", BIN));
    assert!(out.status.success(), "install.sh: {}", stderr(&out));
    let d = dest.path();
    let bin = d.join("usr/local/bin/davdrive");
    assert!(bin.is_file());
    assert_eq!(
        fs::read_link(d.join("sbin/mount.davdrive")).unwrap(),
        Path::new("/usr/local/bin/davdrive")
    );
    assert!(d.join("etc/systemd/system/davdrive@.service").is_file());
    assert!(d
        .join("usr/local/share/bash-completion/completions/davdrive")
        .is_file());
    assert!(d
        .join("usr/local/share/zsh/site-functions/_davdrive")
        .is_file());
    assert!(d
        .join("usr/local/share/fish/vendor_completions.d/davdrive.fish")
        .is_file());
}

/// Under systemd (Type=notify) the daemon says READY=1 on $NOTIFY_SOCKET once the mount
/// answers, not before.
#[test]
fn readiness_is_sent_to_systemd_once_mounted() {
    require_fuse();
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mnt = dir.path().join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    let mut child = Command::new(BIN)
        .arg("mount")
        .arg(server.url())
        .arg(&mnt)
        .arg("--cache-dir")
        .arg(dir.path().join("cache"))
        .env("NOTIFY_SOCKET", &sock_path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];
    let n = sock
        .recv(&mut buf)
        .expect("no notification from the daemon");
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    // Sent once mounted: the mount answers right away.
    let mnt = fs::canonicalize(&mnt).unwrap();
    let mounted = fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(mnt.to_str().unwrap()));
    assert!(msg.contains("READY=1"), "{msg}");
    assert!(mounted, "READY=1 before the mount was there");
    let out = run(Command::new(BIN).arg("unmount").arg(&mnt));
    assert!(out.status.success(), "{}", stderr(&out));
    let n = sock.recv(&mut buf).expect("no STOPPING=1");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1"));
    child.wait().unwrap();
}
