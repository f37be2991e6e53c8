//! The daemon `davdrive mount` runs, without a kernel: its control socket answers while
//! it runs and is gone after a clean shutdown, what was written reaches the server, and a
//! second daemon on the same control socket is refused before any task of it starts.

mod common;

use std::time::Duration;

use davdrive::cache::CacheLimits;
use davdrive::control::{client, Request};
use davdrive::store::ROOT_INO;

use common::drive::Drive;
use common::mem_drive::MemDrive;

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
    // Another drive (its own state and server), started again on the first one's socket.
    let mut other = Drive::new(CacheLimits::default());
    other.stop();
    other.config.control_socket = d.daemon().control_socket().to_path_buf();
    let e = match other.try_start() {
        Ok(()) => panic!("a second daemon started on a socket in use"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("in use by a running davdrive"), "{e}");
    // The first one goes on answering.
    let reply = client::request(d.daemon().control_socket(), &Request::Status {}, TIMEOUT).unwrap();
    assert_eq!(reply["ok"], true, "{reply}");
}

/// Over the in-memory remote, on a runtime of the test's own, as the memory model test
/// runs it: a file closed while the remote is down survives a crash of the daemon and
/// reaches the remote after the next start, which starts offline and finds it back.
#[test]
fn a_file_closed_offline_survives_a_crash_over_the_in_memory_remote() {
    let mut d = MemDrive::new(|_| {});
    d.mem.set_offline(true);
    let core = d.core();
    let (_, fh) = core.create(ROOT_INO, "kept.txt", 0o644, 0, 0).unwrap();
    core.write(fh, 0, b"closed while offline").unwrap();
    core.flush(fh).unwrap();
    core.release(fh).unwrap();
    d.crash();
    assert_eq!(d.mem.read("/kept.txt"), None);

    d.mem.set_offline(false);
    d.config.online = false;
    d.start();
    common::wait_until(30, "the file to reach the remote", || {
        d.mem.read("/kept.txt").as_deref() == Some(&b"closed while offline"[..])
    });
    d.stop();
}
