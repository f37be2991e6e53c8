//! A small built-in WebDAV server over a local directory, for tests and demos.
//!
//! Backed by `dav-server`'s `LocalFs`. Locks are faked (`FakeLs`): enough for clients
//! that insist on LOCK before writing, without pretending to give real exclusion.
//! No authentication, plain HTTP: bind it to loopback.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use dav_server::{fakels::FakeLs, localfs::LocalFs, DavHandler};
use hyper::{server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

fn handler(dir: PathBuf, props: bool) -> DavHandler {
    // Files private to the user running the server (mode 600/700).
    let local = LocalFs::new(dir.clone(), false, false, false);
    let builder = if props {
        // Dead properties (mode, owner, times of davdrive clients) kept in an extended
        // attribute of each file, and the disk's space as the quota: see serve_props.rs.
        DavHandler::builder().filesystem(crate::serve_props::PropFs::new(dir, local))
    } else {
        DavHandler::builder().filesystem(local)
    };
    builder.locksystem(FakeLs::new()).build_handler()
}

/// Binds `addr` (port 0 picks a free port) and serves `dir` on it from a background task.
/// Returns the address actually bound and the task, which runs until aborted.
pub async fn bind(dir: PathBuf, addr: SocketAddr) -> io::Result<(SocketAddr, JoinHandle<()>)> {
    bind_with(dir, addr, true).await
}

/// Like `bind`, but keeping no dead properties and reporting no quota (PROPPATCH is
/// refused), as nginx's WebDAV modules do: for tests of servers like that.
pub async fn bind_without_props(
    dir: PathBuf,
    addr: SocketAddr,
) -> io::Result<(SocketAddr, JoinHandle<()>)> {
    bind_with(dir, addr, false).await
}

async fn bind_with(
    dir: PathBuf,
    addr: SocketAddr,
    props: bool,
) -> io::Result<(SocketAddr, JoinHandle<()>)> {
    if !dir.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{} is not a directory", dir.display()),
        ));
    }
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let dav = handler(dir, props);

    let task = tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(conn) => conn,
                Err(e) => {
                    // Usually EMFILE: back off instead of spinning on the error.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let dav = dav.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let dav = dav.clone();
                    async move { Ok::<_, Infallible>(dav.handle(req).await) }
                });
                if let Err(e) = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    // Clients dropping a connection mid-body (e.g. an abandoned
                    // GET) end up here; nothing to do about it.
                    tracing::debug!(%peer, "connection ended: {e}");
                }
            });
        }
    });
    Ok((local, task))
}

/// Serves `dir` on `addr` until Ctrl-C.
pub async fn serve(dir: PathBuf, addr: SocketAddr) -> io::Result<()> {
    let (local, task) = bind(dir.clone(), addr).await?;
    println!("serving {} on http://{local}/", dir.display());
    let result = tokio::signal::ctrl_c().await;
    task.abort();
    result
}
