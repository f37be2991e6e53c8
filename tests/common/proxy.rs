//! A fault-injecting HTTP proxy on 127.0.0.1, between davdrive and the test server.
//! It forwards everything unless told to refuse connections, answer with a status, delay,
//! cut a reply short, demand credentials, or give a canned reply for certain requests.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// Forward everything.
    None,
    /// Accept and close at once: the remote looks down.
    Refuse,
    /// Answer every request with this status.
    Status(u16),
    /// Receive the whole request, then wait this long before forwarding it. The request
    /// goes on even if the client hangs up meanwhile, as on a server that already has it.
    Delay(Duration),
    /// Forward, but end the reply body after this many bytes.
    CutResponse(usize),
    /// Once this many request body bytes have passed in all, cut the request in flight
    /// there and drop its connection (once; the fault clears itself).
    CutRequest(usize),
}

/// What the proxy does with writes of byte ranges (`PUT` with `Content-Range`, `PATCH`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Ranges {
    /// Forwarded.
    #[default]
    Forward,
    /// Answered 501 Not Implemented: a server without partial updates.
    Refuse,
    /// `Content-Range` is dropped and the PUT forwarded: a server that ignores it and
    /// replaces the file with the range's bytes (PATCH is refused).
    Strip,
}

/// A canned reply for requests whose method and path match.
#[derive(Clone, Debug)]
pub struct Canned {
    pub method: String,
    pub path_contains: String,
    pub status: u16,
    pub body: String,
}

#[derive(Default)]
pub struct ProxyState {
    pub fault: Option<Fault>,
    pub canned: Vec<Canned>,
    /// `Authorization` header value required, if any.
    pub require_auth: Option<String>,
    /// Requests seen, by method.
    pub counts: HashMap<String, usize>,
    /// Every request seen: method and path.
    pub requests: Vec<(String, String)>,
    /// Request body bytes received, by method.
    pub body_bytes: HashMap<String, usize>,
    /// Response body bytes sent, by method.
    pub reply_bytes: HashMap<String, usize>,
    /// Requests being handled now (until the upstream reply is done or abandoned).
    pub in_flight: usize,
    /// Writes of byte ranges: forwarded, refused or stripped.
    pub ranges: Ranges,
    /// Writes of byte ranges seen (PUT with Content-Range, PATCH).
    pub range_writes: usize,
    /// The range writes (counted as in `range_writes`, from 1) answered with a status
    /// instead of being forwarded, each once.
    pub fail_range_writes: Vec<(usize, u16)>,
}

/// Counts a request as in flight for as long as its handler lives.
struct InFlight(Arc<Mutex<ProxyState>>);

impl InFlight {
    fn new(st: &Arc<Mutex<ProxyState>>) -> InFlight {
        st.lock().unwrap().in_flight += 1;
        InFlight(st.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.lock().unwrap().in_flight -= 1;
    }
}

#[derive(Clone)]
pub struct Proxy {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<ProxyState>>,
}

type Body = BoxBody<Bytes, std::io::Error>;

fn full(status: u16, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/xml; charset=utf-8")
        .body(Full::new(body.into()).map_err(|e| match e {}).boxed())
        .unwrap()
}

impl Proxy {
    /// Starts the proxy on the current tokio runtime, in front of `upstream`.
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(ProxyState::default()));
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                if st.lock().unwrap().fault == Some(Fault::Refuse) {
                    drop(stream);
                    continue;
                }
                let st = st.clone();
                let client = client.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let st = st.clone();
                        let client = client.clone();
                        async move { handle(req, st, client, addr, upstream).await }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Proxy { addr, state }
    }

    pub fn set_fault(&self, f: Fault) {
        self.state.lock().unwrap().fault = Some(f);
    }

    pub fn clear_fault(&self) {
        self.state.lock().unwrap().fault = None;
    }

    pub fn body_bytes(&self, method: &str) -> usize {
        *self
            .state
            .lock()
            .unwrap()
            .body_bytes
            .get(method)
            .unwrap_or(&0)
    }

    /// Waits until no request is being handled: what a client that died had already
    /// sent is finished on the server before the test goes on, as it would be by the
    /// time a real daemon restarts.
    pub fn wait_idle(&self, timeout: Duration) {
        let deadline = std::time::Instant::now() + timeout;
        while self.state.lock().unwrap().in_flight > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the test proxy still has requests in flight"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn reply_bytes(&self, method: &str) -> usize {
        *self
            .state
            .lock()
            .unwrap()
            .reply_bytes
            .get(method)
            .unwrap_or(&0)
    }

    /// Requests of `method` for exactly `path`.
    pub fn count_at(&self, method: &str, path: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|(m, p)| m == method && p == path)
            .count()
    }

    pub fn count(&self, method: &str) -> usize {
        *self.state.lock().unwrap().counts.get(method).unwrap_or(&0)
    }

    /// Bytes of every request and reply body so far, all methods.
    pub fn wire_bytes(&self) -> (usize, usize) {
        let s = self.state.lock().unwrap();
        (s.body_bytes.values().sum(), s.reply_bytes.values().sum())
    }

    pub fn set_ranges(&self, r: Ranges) {
        self.state.lock().unwrap().ranges = r;
    }
}

async fn handle(
    req: Request<Incoming>,
    st: Arc<Mutex<ProxyState>>,
    client: reqwest::Client,
    me: SocketAddr,
    upstream: SocketAddr,
) -> Result<Response<Body>, std::io::Error> {
    let range_write = req.method() == "PATCH"
        || (req.method() == "PUT" && req.headers().contains_key("content-range"));
    let mut strip_range = false;
    let (fault, canned, auth) = {
        let mut s = st.lock().unwrap();
        *s.counts.entry(req.method().to_string()).or_default() += 1;
        s.requests
            .push((req.method().to_string(), req.uri().path().to_string()));
        if range_write {
            s.range_writes += 1;
            let n = s.range_writes;
            if let Some(i) = s.fail_range_writes.iter().position(|(at, _)| *at == n) {
                let (_, status) = s.fail_range_writes.remove(i);
                return Ok(full(status, "injected"));
            }
            match s.ranges {
                Ranges::Forward => {}
                Ranges::Refuse => return Ok(full(501, "no partial updates here")),
                Ranges::Strip if req.method() == "PATCH" => return Ok(full(405, "no PATCH here")),
                Ranges::Strip => strip_range = true,
            }
        }
        let canned = s
            .canned
            .iter()
            .find(|c| {
                c.method == req.method().as_str() && req.uri().path().contains(&c.path_contains)
            })
            .cloned();
        (s.fault.clone(), canned, s.require_auth.clone())
    };
    if let Some(expected) = auth {
        let given = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if given != Some(expected.as_str()) {
            let mut r = full(401, "unauthorized");
            r.headers_mut()
                .insert("www-authenticate", "Basic realm=\"test\"".parse().unwrap());
            return Ok(r);
        }
    }
    match fault {
        Some(Fault::Status(code)) => return Ok(full(code, "injected")),
        Some(Fault::Refuse) => return Ok(full(503, "refused")),
        _ => {}
    }
    if let Some(c) = canned {
        return Ok(full(c.status, c.body));
    }
    // Cut the request during which the bodies received so far pass the limit.
    let cut_at = match fault {
        Some(Fault::CutRequest(n)) => {
            let len = req
                .headers()
                .get("content-length")
                .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
                .unwrap_or(0);
            let mut s = st.lock().unwrap();
            let so_far: usize = s.body_bytes.values().sum();
            if so_far + len > n {
                s.fault = None;
                Some(n.saturating_sub(so_far))
            } else {
                None
            }
        }
        _ => None,
    };
    let method_name = req.method().to_string();
    let method_for_reply = method_name.clone();
    let url = format!(
        "http://{upstream}{}",
        req.uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    );
    let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes()).unwrap();
    let mut out = client.request(method, url);
    for (k, v) in req.headers() {
        if k == "host" || (strip_range && k == "content-range") {
            continue;
        }
        let mut v = v.clone();
        if k == "destination" {
            // MOVE names its target by absolute URL: point it at the real server.
            let s = v
                .to_str()
                .unwrap()
                .replace(&format!("http://{me}"), &format!("http://{upstream}"));
            v = s.parse().unwrap();
        }
        out = out.header(k, v);
    }
    // A request without a body must stay without one: a streamed empty body goes out
    // chunked, and Apache refuses an MKCOL with a body (415).
    let bodyless = !req.headers().contains_key("transfer-encoding")
        && req
            .headers()
            .get("content-length")
            .is_none_or(|v| v.as_bytes() == b"0");
    let body_stream = http_body_util::BodyStream::new(req.into_body());
    let counter = st.clone();
    let mut seen = 0usize;
    let body_stream = futures_util::StreamExt::filter_map(body_stream, move |f| {
        let item = match f {
            Ok(frame) => frame.into_data().ok().map(|mut d| {
                if let Some(limit) = cut_at {
                    if seen >= limit {
                        return Err(std::io::Error::other("request cut by the test proxy"));
                    }
                    d.truncate(limit - seen);
                }
                seen += d.len();
                *counter
                    .lock()
                    .unwrap()
                    .body_bytes
                    .entry(method_name.clone())
                    .or_default() += d.len();
                Ok::<Bytes, std::io::Error>(d)
            }),
            Err(e) => Some(Err(std::io::Error::other(e))),
        };
        async move { item }
    });
    // The upstream request runs on its own: a client that hangs up does not stop what
    // the server has already received. `wait_idle` waits for these.
    let in_flight = InFlight::new(&st);
    let delay = match fault {
        Some(Fault::Delay(d)) => Some(d),
        _ => None,
    };
    let upstream_reply = tokio::spawn(async move {
        let _in_flight = in_flight;
        let body = match delay {
            Some(d) => {
                let mut whole = Vec::new();
                let mut body_stream = std::pin::pin!(body_stream);
                while let Some(chunk) = futures_util::StreamExt::next(&mut body_stream).await {
                    whole.extend_from_slice(&chunk?);
                }
                tokio::time::sleep(d).await;
                reqwest::Body::from(whole)
            }
            _ if bodyless => reqwest::Body::from(Vec::new()),
            _ => reqwest::Body::wrap_stream(body_stream),
        };
        out.body(body).send().await.map_err(std::io::Error::other)
    });
    let resp = match upstream_reply.await.map_err(std::io::Error::other)? {
        Ok(r) => r,
        // The client's connection goes down with the cut request.
        Err(e) if cut_at.is_some() => return Err(e),
        Err(e) => return Ok(full(502, format!("proxy: {e}"))),
    };
    let mut builder = Response::builder().status(resp.status().as_u16());
    for (k, v) in resp.headers() {
        // Content-Length stays even when the body is cut: the client must notice.
        builder = builder.header(k, v);
    }
    let limit = match fault {
        Some(Fault::CutResponse(n)) => n,
        _ => usize::MAX,
    };
    let reply_counter = st.clone();
    let stream = futures_util::stream::unfold((resp, 0usize), move |(mut resp, sent)| {
        let counter = reply_counter.clone();
        let method = method_for_reply.clone();
        async move {
            if sent >= limit {
                return None;
            }
            match resp.chunk().await {
                Ok(Some(mut chunk)) => {
                    chunk.truncate(limit - sent);
                    let n = chunk.len();
                    *counter
                        .lock()
                        .unwrap()
                        .reply_bytes
                        .entry(method)
                        .or_default() += n;
                    Some((Ok(Frame::data(chunk)), (resp, sent + n)))
                }
                Ok(None) => None,
                Err(e) => Some((Err(std::io::Error::other(e)), (resp, usize::MAX))),
            }
        }
    });
    Ok(builder
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .unwrap())
}
