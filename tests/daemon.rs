//! The daemon `davdrive mount` runs, without a kernel: its control socket answers while
//! it runs and is gone after a clean shutdown, what was written reaches the server, and a
//! second daemon on the same control socket is refused before any task of it starts.

mod common;

use std::time::Duration;

use davdrive::cache::CacheLimits;
use davdrive::clock::Clock;
use davdrive::control::{client, Request};
use davdrive::daemon::{Daemon, DaemonConfig};
use davdrive::remote::webdav::{WebDav, WebDavConfig};

use common::drive::Drive;

const TIMEOUT: Duration = Duration::from_secs(30);

#[test]
fn the_control_socket_answers_while_the_daemon_runs_and_goes_with_it() {
    let mut d = Drive::new(CacheLimits::default());
    let socket = d.daemon().control_socket().to_path_buf();
    d.write_new("a.txt", b"hello").unwrap();

    let reply = client::request(&socket, &Request::Sync(Default::default()), TIMEOUT).unwrap();
    assert_eq!(reply["ok"], true, "{reply}");
    common::wait_server_has(&d.server, "a.txt", b"hello");
    let status = client::request(&socket, &Request::Status {}, TIMEOUT).unwrap();
    assert_eq!(status["ok"], true, "{status}");
    assert_eq!(status["result"]["online"], true, "{status}");
    common::wait_until(30, "status to show an empty journal", || {
        let s = client::request(&socket, &Request::Status {}, TIMEOUT).unwrap();
        s["result"]["journal"]["waiting"] == 0
    });

    d.stop();
    assert!(!socket.exists(), "the control socket outlives the daemon");
    assert!(client::request(&socket, &Request::Status {}, TIMEOUT).is_err());
}

#[test]
fn a_second_daemon_on_a_socket_in_use_is_refused() {
    let d = Drive::new(CacheLimits::default());
    let other = tempfile::tempdir().unwrap();
    common::private(other.path());
    let mut cfg = DaemonConfig::new(other.path());
    cfg.control_socket = d.daemon().control_socket().to_path_buf();
    let _guard = d.server.rt.enter();
    let remote = WebDav::new(WebDavConfig::new(url::Url::parse(&d.server.url()).unwrap())).unwrap();
    let e = match Daemon::start(cfg, std::sync::Arc::new(remote), Clock::default()) {
        Ok(_) => panic!("a second daemon started on a socket in use"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("in use by a running davdrive"), "{e}");
    // The first one goes on answering.
    let reply = client::request(d.daemon().control_socket(), &Request::Status {}, TIMEOUT).unwrap();
    assert_eq!(reply["ok"], true, "{reply}");
}

/// Over the in-memory remote, on a runtime of the test's own, as the memory model test
/// runs it: a file closed while the remote is down survives a crash of the daemon and
/// reaches the remote after the next start.
#[test]
fn a_file_closed_offline_survives_a_crash_over_the_in_memory_remote() {
    use davdrive::remote::memory::MemRemote;
    use davdrive::store::ROOT_INO;
    use std::sync::Arc;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let state = tempfile::tempdir().unwrap();
    common::private(state.path());
    let mem = Arc::new(MemRemote::new());
    let start = |online: bool| {
        let _guard = rt.enter();
        let mut cfg = DaemonConfig::new(state.path());
        cfg.online = online;
        cfg.health_interval = Duration::from_millis(50);
        // As mounting does: a root never listed could not be created in offline.
        cfg.list_root = true;
        Daemon::start(cfg, mem.clone(), Clock::default()).unwrap()
    };

    let daemon = start(true);
    mem.set_offline(true);
    let core = daemon.core().clone();
    let (_, fh) = core.create(ROOT_INO, "kept.txt", 0o644, 0, 0).unwrap();
    core.write(fh, 0, b"closed while offline").unwrap();
    core.flush(fh).unwrap();
    core.release(fh).unwrap();
    drop(core);
    let gone = Arc::downgrade(daemon.core());
    daemon.abort();
    common::wait_until(30, "the crashed daemon's tasks to end", || {
        gone.strong_count() == 0
    });
    assert_eq!(mem.read("/kept.txt"), None);

    mem.set_offline(false);
    let daemon = start(false);
    common::wait_until(30, "the file to reach the remote", || {
        mem.read("/kept.txt").as_deref() == Some(&b"closed while offline"[..])
    });
    daemon.shutdown();
}
