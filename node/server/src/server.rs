//! Thread-per-core serving: one monoio runtime per core. All cores accept on one shared
//! listening socket (each keeps its own accept in flight; the kernel hands every connection to
//! exactly one of them). No hand-off between cores: a connection lives on the core that
//! accepted it.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use berth_types::{ErrorKind, OciError};
use monoio::net::{TcpListener, TcpStream};

use crate::admission::Admit;
use crate::api;
use crate::app::App;
use crate::config::IoDriver;
use crate::http::{Body, Conn, Limits, Method, Response};
use crate::metrics::{EndpointLabels, ReasonLabels, RequestLabels};

/// A running node.
pub struct Node {
    /// Address the node listens on (the real port when 0 was asked for).
    pub addr: SocketAddr,
    /// Shared state.
    pub app: Arc<App>,
    /// Which driver the cores run.
    pub driver: &'static str,
    threads: Vec<JoinHandle<()>>,
}

impl Node {
    /// Stop accepting, let in-flight requests finish (bounded by `grace`), flush the index.
    pub fn shutdown(self, grace: Duration) {
        self.app.shutting_down.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + grace;
        while self.app.in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        for t in self.threads {
            let _ = t.join();
        }
        if let Some(tier) = &self.app.tier {
            tier.shutdown(Duration::from_secs(5));
        }
        if let Some(pt) = &self.app.pull_through {
            pt.proxy.shutdown(Duration::from_secs(2));
        }
        if let Some(cn) = &self.app.cluster {
            cn.cluster.shutdown(Duration::from_secs(2));
        }
        if let Err(e) = self.app.index.flush() {
            tracing::error!(error = %e, "index flush at shutdown failed");
        }
    }
}

fn limits(app: &App) -> Limits {
    let l = &app.cfg.limits;
    Limits {
        max_head_bytes: l.max_head_bytes,
        max_headers: 100,
        idle_timeout: Duration::from_secs(l.idle_timeout_secs),
        head_timeout: Duration::from_secs(l.head_timeout_secs),
        body_timeout: Duration::from_secs(l.io_timeout_secs),
        write_timeout: Duration::from_secs(l.io_timeout_secs),
    }
}

fn use_uring(choice: IoDriver) -> std::io::Result<bool> {
    match choice {
        IoDriver::Epoll => Ok(false),
        IoDriver::Iouring if !monoio::utils::detect_uring() => {
            Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "io_uring is not available on this kernel"))
        }
        IoDriver::Iouring => Ok(true),
        IoDriver::Auto => Ok(monoio::utils::detect_uring()),
    }
}

/// Run `f` on a new monoio runtime of the chosen driver on this thread.
fn run_core<F, Fut>(uring: bool, f: F) -> std::io::Result<()>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    if uring {
        monoio::RuntimeBuilder::<monoio::IoUringDriver>::new().with_entries(1024).enable_timer().build()?.block_on(f());
    } else {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build()?.block_on(f());
    }
    Ok(())
}

/// Bind the listening socket: `SO_REUSEADDR` (fast restarts), no `SO_REUSEPORT`, backlog 4096.
fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// The node's two listening sockets, bound before anything is written to the data directory
/// (a node that cannot listen leaves no trace).
pub struct Listeners {
    public: std::net::TcpListener,
    internal: std::net::TcpListener,
}

/// Why a listener could not be bound: names the address and the fix.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The address does not parse or resolve.
    #[error(
        "{key} = {value:?} is not an address: {reason} (expected HOST:PORT, e.g. 127.0.0.1:5000 or localhost:5000)"
    )]
    Address {
        /// The configuration key.
        key: &'static str,
        /// Its value.
        value: String,
        /// Why.
        reason: String,
    },
    /// The port is taken.
    #[error("{key} {addr}: address already in use (another process, or another berth node, listens there); choose another port with --listen or stop that process")]
    InUse {
        /// The configuration key.
        key: &'static str,
        /// The address.
        addr: SocketAddr,
    },
    /// Any other bind failure.
    #[error("{key} {addr}: cannot listen: {error}")]
    Other {
        /// The configuration key.
        key: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The error (in the message only: as a source the chain would print it twice).
        error: std::io::Error,
    },
}

/// Resolve `HOST:PORT` (IP literals and host names such as `localhost`).
pub fn resolve(key: &'static str, value: &str) -> Result<SocketAddr, BindError> {
    use std::net::ToSocketAddrs;
    let err = |reason: String| BindError::Address { key, value: value.to_owned(), reason };
    if let Ok(a) = value.parse() {
        return Ok(a);
    }
    let mut addrs = value.to_socket_addrs().map_err(|e| err(e.to_string()))?;
    // Prefer IPv4 for `localhost` (what clients try first on most systems).
    let all: Vec<SocketAddr> = addrs.by_ref().collect();
    all.iter().find(|a| a.is_ipv4()).or(all.first()).copied().ok_or_else(|| err("resolves to no address".into()))
}

fn bind_named(key: &'static str, addr: SocketAddr) -> Result<std::net::TcpListener, BindError> {
    // A node restarted right after a kill -9 can find its port still held for a moment: the
    // dead process's io_uring instance releases its sockets asynchronously. Retry briefly.
    let deadline = Instant::now() + Duration::from_millis(1500);
    loop {
        match bind(addr) {
            Ok(l) => return Ok(l),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => return Err(BindError::InUse { key, addr }),
            Err(error) => return Err(BindError::Other { key, addr, error }),
        }
    }
}

impl Listeners {
    /// Bind the public and the internal listener of `cfg`. With an internal port of 0 the
    /// port the node used last time (`<data_dir>/internal.addr`) is tried first, so clients
    /// that remember it (the sidecar) find the node again after a restart.
    pub fn bind(cfg: &crate::config::Config) -> Result<Listeners, BindError> {
        let public = bind_named("listen", resolve("listen", &cfg.listen)?)?;
        let wanted = resolve("internal.listen", &cfg.internal.listen)?;
        let previous = (wanted.port() == 0)
            .then(|| std::fs::read_to_string(cfg.data_dir.join("internal.addr")).ok())
            .flatten()
            .and_then(|s| s.trim().parse::<SocketAddr>().ok())
            .filter(|p| p.ip() == wanted.ip());
        let internal = match previous.map(|p| bind_named("internal.listen", p)) {
            Some(Ok(l)) => l,
            _ => bind_named("internal.listen", wanted)?,
        };
        Ok(Listeners { public, internal })
    }

    /// The public address (the real port when 0 was asked for).
    pub fn public_addr(&self) -> std::io::Result<SocketAddr> {
        self.public.local_addr()
    }
}

/// Bind the listeners and start serving on every core. Returns once all cores listen.
pub fn start(app: App) -> std::io::Result<Node> {
    let listeners =
        Listeners::bind(&app.cfg).map_err(|e| std::io::Error::new(std::io::ErrorKind::AddrInUse, e.to_string()))?;
    start_on(app, listeners)
}

/// Start serving on listeners bound earlier. Returns once all cores listen.
pub fn start_on(app: App, listeners: Listeners) -> std::io::Result<Node> {
    let app = Arc::new(app);
    let uring = use_uring(app.cfg.io_driver)?;
    let driver = if uring { "io_uring" } else { "epoll" };
    let workers = app.cfg.worker_count();
    // Startup housekeeping: remove stale upload files and expired sessions.
    let removed = app.uploads.expire();
    if removed > 0 {
        tracing::info!(removed, "removed expired uploads at start");
    }
    // One listening socket, shared by every core (see docs/ARCHITECTURE.md, "Server").
    let Listeners { public: listener, internal } = listeners;
    let addr = listener.local_addr()?;
    let internal_addr = internal.local_addr()?;
    crate::app::write_private(&app.cfg.data_dir.join("internal.addr"), internal_addr.to_string().as_bytes())?;
    let scheme = if app.cfg.internal.tls { "https" } else { "http" };
    crate::app::write_private(
        &app.cfg.data_dir.join("internal.url"),
        format!("{scheme}://{internal_addr}").as_bytes(),
    )?;
    let mut threads = Vec::with_capacity(workers);
    for core in 0..workers {
        let (tx, rx) = std::sync::mpsc::channel::<std::io::Result<()>>();
        let app2 = app.clone();
        let std_listener = listener.try_clone()?;
        // The internal API is served by core 0 only: it carries little traffic.
        let internal_listener = if core == 0 { Some(internal.try_clone()?) } else { None };
        let t = std::thread::Builder::new().name(format!("berth-core-{core}")).spawn(move || {
            let res = run_core(uring, move || async move {
                let listener = std_listener;
                let _ = tx.send(Ok(()));
                let expiry = (core == 0).then(|| monoio::spawn(expiry_worker(app2.clone())));
                let app3 = app2.clone();
                let flusher = monoio::spawn(crate::store::access::flusher(app2.index.clone(), move || {
                    // An idle core drops descriptors of removed blob files here.
                    crate::store::open_files::refresh(app3.blobs.removal_generation());
                    app3.shutting_down.load(Ordering::Relaxed)
                }));
                let internal = internal_listener.map(|l| monoio::spawn(accept_loop(app2.clone(), l, core, true)));
                accept_loop(app2, listener, core, false).await;
                if let Some(i) = internal {
                    i.await;
                }
                // Background tasks hold the shared state; end them before the runtime goes.
                if let Some(e) = expiry {
                    e.await;
                }
                flusher.await;
            });
            if let Err(e) = res {
                tracing::error!(core, error = %e, "core runtime failed");
            }
        })?;
        match rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(std::io::Error::other("core failed to start")),
        }
        threads.push(t);
    }
    drop(listener);
    drop(internal);
    let auth = match &app.auth {
        None => "off".to_owned(),
        Some(a) => {
            let mode = if a.tokens.is_some() { "token" } else { "basic" };
            let anon = if app.cfg.auth.anonymous_pull { ", anonymous pull allowed" } else { "" };
            format!("{mode} ({} users, {} rules{anon})", a.user_count(), app.cfg.auth.rules.len())
        }
    };
    let tiering = match &app.cfg.storage.s3 {
        None => "off (local disk only)".to_owned(),
        Some(s3) => format!(
            "s3://{}/{}{}",
            s3.bucket,
            s3.prefix,
            s3.endpoint.as_deref().map(|e| format!(" at {e}")).unwrap_or_default()
        ),
    };
    if app.tls.is_none() && !addr.ip().is_loopback() {
        tracing::warn!(
            %addr,
            "serving plain HTTP on a non-loopback address: passwords and tokens cross the network in clear; \
             set [tls] cert and key (or terminate TLS in a proxy in front)"
        );
    }
    tracing::info!(
        %addr,
        tls = if app.tls.is_some() { "on" } else { "off" },
        internal_api = %internal_addr,
        auth = %auth,
        s3_tiering = %tiering,
        workers,
        driver,
        data_dir = %app.cfg.data_dir.display(),
        "berth node listening"
    );
    Ok(Node { addr, app, driver, threads })
}

/// Sleep up to `total`, waking early when shutdown starts. Returns false when stopping.
async fn nap(app: &App, total: Duration) -> bool {
    let deadline = Instant::now() + total;
    while Instant::now() < deadline {
        if app.shutting_down.load(Ordering::Relaxed) {
            return false;
        }
        monoio::time::sleep(Duration::from_millis(200).min(deadline - Instant::now())).await;
    }
    !app.shutting_down.load(Ordering::Relaxed)
}

async fn accept_loop(app: Arc<App>, listener: std::net::TcpListener, core: usize, internal: bool) {
    let limits = limits(&app);
    let live = Rc::new(Cell::new(0usize));
    // A monoio handle on a duplicate of the listening socket, used only to wait for readiness.
    let poll = match listener.try_clone().and_then(TcpListener::from_std) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(core, error = %e, "cannot watch the listening socket");
            return;
        }
    };
    while !app.shutting_down.load(Ordering::Relaxed) {
        // Every core waits for readiness (a poll: cancelling it on the shutdown-check timeout
        // loses nothing), then accepts without blocking: when another core won the race the
        // accept says WouldBlock and we wait again. A blocking io_uring accept would either
        // park a core forever or, if cancelled, drop a connection the kernel already accepted.
        match monoio::time::timeout(Duration::from_millis(200), poll.readable(false)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "listener poll failed");
                monoio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            Err(_) => continue,
        }
        loop {
            match listener.accept() {
                Ok((stream, peer)) => {
                    let stream = match TcpStream::from_std(stream) {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot register connection");
                            continue;
                        }
                    };
                    // The internal listener (loopback, token) is not capped: the sidecar and
                    // `berth gc` must get through a flood on the public port.
                    let (ticket, only_health) = if internal {
                        (None, None)
                    } else {
                        match app.admission.admit(peer.ip()) {
                            Admit::Full(t) => (Some(t), None),
                            Admit::HealthOnly(t, status) => {
                                let reason = if status == 503 { "total" } else { "address" };
                                app.metrics.connections_refused.get_or_create(&ReasonLabels { reason }).inc();
                                (Some(t), Some(status))
                            }
                            Admit::Refuse => {
                                app.metrics.connections_refused.get_or_create(&ReasonLabels { reason: "total" }).inc();
                                drop(stream);
                                continue;
                            }
                        }
                    };
                    live.set(live.get() + 1);
                    let live = live.clone();
                    let app = app.clone();
                    monoio::spawn(async move {
                        let mode = Mode { internal, only_health };
                        serve(app, stream, peer, limits, core, mode).await;
                        drop(ticket);
                        live.set(live.get() - 1);
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    monoio::time::sleep(Duration::from_millis(10)).await;
                    break;
                }
            }
        }
    }
    drop(poll);
    drop(listener);
    // Let this core's connections finish their current request (they close when idle).
    let deadline = Instant::now() + Duration::from_secs(30);
    while live.get() > 0 && Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Core 0's housekeeping: upload expiry and change-feed trimming, each on its own interval.
async fn expiry_worker(app: Arc<App>) {
    let expiry_every = Duration::from_secs(app.cfg.uploads.expiry_interval_secs.max(1));
    let trim_every = Duration::from_secs(app.cfg.feed.trim_interval_secs.max(1));
    let (mut last_expiry, mut last_trim) = (Instant::now(), Instant::now());
    while nap(&app, expiry_every.min(trim_every)).await {
        if last_trim.elapsed() >= trim_every {
            last_trim = Instant::now();
            let f = &app.cfg.feed;
            match app.index.trim_feed(f.retain_changes, f.consumer_timeout_secs.saturating_mul(1000)) {
                Ok(first) => tracing::debug!(first, "change feed trimmed"),
                Err(e) => tracing::warn!(error = %e, "change feed trim failed"),
            }
        }
        if last_expiry.elapsed() < expiry_every {
            continue;
        }
        last_expiry = Instant::now();
        let n = app.uploads.expire();
        app.expiry_last_run_ms.store(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            Ordering::Relaxed,
        );
        if n > 0 {
            tracing::info!(removed = n, "expired uploads removed");
        }
    }
}

static REQUEST_SEQ: AtomicU64 = AtomicU64::new(1);
static TLS_PROBE_LOGGED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A TLS ClientHello on the plain port: `docker login` probes TLS first and falls back to
/// HTTP for insecure registries. Said once at info level, then at debug.
fn tls_probe(peer: SocketAddr) {
    if !TLS_PROBE_LOGGED.swap(true, Ordering::Relaxed) {
        tracing::info!(
            %peer,
            "a client tried TLS on this plain-HTTP port (docker does this before falling back to HTTP); \
             closed it. Logged once; further ones at debug level"
        );
    } else {
        tracing::debug!(%peer, "TLS handshake on the plain-HTTP port; closed");
    }
}

/// How a connection is served.
#[derive(Clone, Copy)]
struct Mode {
    /// On the internal listener.
    internal: bool,
    /// Over a connection cap: only `/healthz` and `/readyz`, others get this status.
    only_health: Option<u16>,
}

/// Said to a connection over a cap that asked for more than a health check.
fn over_capacity(status: u16) -> Response {
    let msg = if status == 503 {
        "the registry has too many open connections; retry shortly"
    } else {
        "too many open connections from your address; close some or retry shortly"
    };
    let kind = if status == 503 { ErrorKind::Unavailable } else { ErrorKind::TooManyRequests };
    Response::from(OciError::new(kind).msg(msg)).set_header("Retry-After", "1")
}

async fn serve(app: Arc<App>, stream: TcpStream, peer: SocketAddr, mut limits: Limits, core: usize, mode: Mode) {
    let internal = mode.internal;
    app.metrics.connections.inc();
    if mode.only_health.is_some() {
        // One short request at most.
        limits.head_timeout = limits.head_timeout.min(Duration::from_secs(5));
        limits.idle_timeout = limits.idle_timeout.min(Duration::from_secs(5));
    }
    let tls_here = !internal || app.cfg.internal.tls;
    let mut cert_user: Option<Option<String>> = None;
    let mut conn = match (&app.tls, tls_here) {
        (Some(acceptor), true) => match acceptor
            .session()
            .and_then(|s| Conn::new_tls(stream, limits, s).map_err(|e| crate::http::tls::TlsError(e.to_string())))
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "cannot start TLS on a connection");
                app.metrics.connections.dec();
                return;
            }
        },
        _ => Conn::new(stream, limits),
    };
    loop {
        let stopping = || app.shutting_down.load(Ordering::Relaxed);
        let req = match conn.read_head(&stopping).await {
            Ok(Some(r)) => r,
            Ok(None) => break,
            Err(crate::http::HeadFailure::Io(_)) => break,
            Err(crate::http::HeadFailure::TlsHandshake) => {
                tls_probe(peer);
                break;
            }
            Err(f) => {
                let e = match f {
                    crate::http::HeadFailure::TooLarge => OciError::new(ErrorKind::HeadersTooLarge),
                    crate::http::HeadFailure::UnsupportedEncoding => {
                        OciError::new(ErrorKind::BadRequest).msg("unsupported Transfer-Encoding")
                    }
                    crate::http::HeadFailure::Malformed(m) => OciError::new(ErrorKind::BadRequest).msg(m),
                    crate::http::HeadFailure::Io(_) | crate::http::HeadFailure::TlsHandshake => {
                        unreachable!("handled above")
                    }
                };
                tracing::info!(%peer, error = %e, "rejected request head");
                let _ = conn.write_response(Response::from(e), false, false).await;
                break;
            }
        };
        // The client certificate (if any) is known once the handshake is done, before the first
        // request: read its name once per connection.
        let cert_user = cert_user.get_or_insert_with(|| conn.tls().and_then(crate::http::tls::peer_common_name));
        let client = api::Client { addr: Some(peer.ip()), cert_user: cert_user.clone(), tls: conn.tls().is_some() };
        if let Some(status) = mode.only_health {
            let health = matches!(req.path.as_str(), "/healthz" | "/readyz");
            let resp = if health {
                api::handle(&app, &req, &mut Body::new(&mut conn, &req), &client).await.0
            } else {
                over_capacity(status)
            };
            let _ = conn.write_response(resp, req.method == Method::Head, false).await;
            break;
        }
        app.in_flight.fetch_add(1, Ordering::SeqCst);
        let started = Instant::now();
        let id = format!("{:x}-{:x}", core, REQUEST_SEQ.fetch_add(1, Ordering::Relaxed));
        let mut body = Body::new(&mut conn, &req);
        let (mut resp, endpoint) = if internal {
            api::internal::handle(&app, &req, &mut body).await
        } else {
            api::handle(&app, &req, &mut body, &client).await
        };
        let mut keep = req.keep_alive && !app.shutting_down.load(Ordering::Relaxed);
        let mut unread_body = false;
        // Refused before its body was read (401, 403, 429): the body is not read at all; the
        // answer goes out and the connection closes after a short linger.
        let refused = matches!(resp.status, 401 | 403 | 429) && body.received() == 0;
        if !body.is_complete() {
            if refused {
                keep = false;
                unread_body = !body.awaiting_continue();
            } else {
                let drained = body.drain(1 << 20).await;
                keep = keep && drained;
                // A client still waiting for 100-continue will not send the body.
                unread_body = !drained && !body.awaiting_continue();
            }
        }
        let received = body.received();
        resp.headers.push(("X-Request-Id", id.clone()));
        let status = resp.status;
        let error = resp.error;
        let source = resp.source;
        let user = resp.user.take();
        if (200..300).contains(&status) && !matches!(req.method, Method::Get | Method::Head) {
            // A push or delete committed something: wake feed readers and the tier.
            app.feed_notify.send_replace(app.index.next_sequence() - 1);
            if let Some(tier) = &app.tier {
                tier.wake();
            }
        }
        let sent = conn.write_response(resp, req.method == Method::Head, keep).await;
        let elapsed = started.elapsed();
        let (sent_bytes, zero_copy) = sent.as_ref().map(|s| (s.bytes, s.zero_copy)).unwrap_or((0, false));
        if zero_copy {
            app.metrics.sendfile_bytes.inc_by(sent_bytes);
        }
        app.metrics.requests.get_or_create(&RequestLabels { endpoint, method: req.method.as_str(), status }).inc();
        app.metrics.latency.get_or_create(&EndpointLabels { endpoint }).observe(elapsed.as_secs_f64());
        app.metrics.bytes_in.inc_by(received);
        app.metrics.bytes_out.inc_by(sent_bytes);
        macro_rules! access_log {
            ($level:expr) => {
                tracing::event!(
                    target: "berth::access",
                    $level,
            id = %id,
            %peer,
            method = req.method.as_str(),
            path = %req.path,
            user = user.as_deref().unwrap_or("-"),
            endpoint,
            status,
            error = error.unwrap_or(""),
            cache = match source {
                Some("local") => "hit",
                Some("s3") | Some("s3_range") => "miss",
                Some("redirect") => "redirect",
                _ => "",
            },
            bytes_in = received,
            bytes_out = sent_bytes,
            latency_us = elapsed.as_micros() as u64,
            "request"
                )
            };
        }
        // The internal API is mostly the sidecar's long polls, and `/healthz`/`/readyz` a load
        // balancer's probes every few seconds: keep them out of the access log at the default
        // level (unless they fail).
        let probe = matches!(endpoint, "healthz" | "readyz") && status < 400;
        if internal || probe {
            access_log!(tracing::Level::DEBUG);
        } else {
            access_log!(tracing::Level::INFO);
        }
        app.in_flight.fetch_sub(1, Ordering::SeqCst);
        if let Err(e) = sent {
            tracing::debug!(%peer, error = %e, "response write failed");
            break;
        }
        if !keep {
            if unread_body && refused {
                // Long enough for a client that is still sending a modest body (a manifest, a
                // small blob) to read the answer instead of a reset; short enough that it
                // costs an unauthenticated flood little.
                conn.linger_for(Duration::from_secs(2), 1 << 20).await;
            } else if unread_body {
                conn.linger().await;
            }
            break;
        }
    }
    app.metrics.connections.dec();
}
