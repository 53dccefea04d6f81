//! LocalSandboxd's filtering forward proxy (hyper 1): absolute-form HTTP requests are forwarded and `CONNECT`
//! opens a tunnel, or, when the sandbox has a CA and no bypass rule matches, is intercepted ([`mitm`]: TLS
//! terminated with a leaf from the sandbox's CA, the upstream verified, secrets injected), each decided by the policy engine ([`crate::core::policy`]) on the
//! address the proxy will connect to: the name is checked, resolved, every address checked, and the connection
//! made to one of the checked addresses. Refusals are `403` with `x-sandboxd-reason` (and `x-sandboxd-rule`)
//! headers and a one-line body. Every request, and every connection that never made one (garbage, a half request,
//! slow headers), is a typed [`LogEntry`] in the [`DecisionLog`].
//!
//! Which sandbox a request comes from: a listener can be bound to one sandbox ([`Proxy::listen`]); on a shared
//! listener it is the user name of `Proxy-Authorization: Basic` (none: global rules only). A bound listener ignores
//! that header, so a sandbox cannot claim another's rules.

pub mod log;
pub mod mitm;

#[cfg(all(test, target_os = "linux"))]
mod load_tests;
#[cfg(all(test, target_os = "linux"))]
mod tests;

pub use log::{DecisionLog, LogEntry, LogReason, ProxyType};
pub use mitm::{new_placeholder, Secret, PROXY_MANAGED, SECRET_PREFIX};

use crate::core::local::ca::ProxyCa;

use crate::core::policy::{self, Decision, Host, Policy, Reason, Target};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long a client has to send a whole request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting to one upstream address may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Name resolution for the proxy: fixed answers first, then (if enabled) the system resolver.
#[derive(Debug, Clone, Default)]
pub struct Resolver {
    overrides: HashMap<String, Vec<IpAddr>>,
    system: bool,
}

impl Resolver {
    /// The system resolver (`getaddrinfo`), with no fixed answers.
    pub fn system() -> Resolver {
        Resolver {
            overrides: HashMap::new(),
            system: true,
        }
    }

    /// Only fixed answers: a name not in the map does not resolve (tests: no DNS ever leaves the machine).
    pub fn fixed() -> Resolver {
        Resolver::default()
    }

    /// Adds a fixed answer for `name` (normalised like a target host).
    pub fn with(mut self, name: &str, addrs: &[IpAddr]) -> Resolver {
        let key = match policy::parse_host(name) {
            Ok(Host::Name(n)) => n,
            _ => name.to_ascii_lowercase(),
        };
        self.overrides.insert(key, addrs.to_vec());
        self
    }

    /// The addresses of a target (an IP target is its own address), IPv4-mapped IPv6 made IPv4.
    pub async fn resolve(&self, target: &Target) -> Option<Vec<IpAddr>> {
        let name = match &target.host {
            Host::Ip(ip) => return Some(vec![*ip]),
            Host::Name(n) => n,
        };
        if let Some(a) = self.overrides.get(name) {
            return Some(a.iter().map(|a| policy::canonical_ip(*a)).collect());
        }
        if !self.system {
            return None;
        }
        let found = tokio::net::lookup_host((name.as_str(), target.port))
            .await
            .ok()?;
        let mut out: Vec<IpAddr> = Vec::new();
        for sa in found {
            let ip = policy::canonical_ip(sa.ip());
            if !out.contains(&ip) {
                out.push(ip);
            }
        }
        (!out.is_empty()).then_some(out)
    }
}

/// The proxy's settings.
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    /// How names are resolved (fixed answers first).
    pub resolver: Resolver,
    /// Decision log entries kept.
    pub log_capacity: usize,
    /// How long a client has to send a request head ([`HEADER_TIMEOUT`]).
    pub header_timeout: Duration,
    /// How long connecting to one upstream address may take ([`CONNECT_TIMEOUT`]).
    pub connect_timeout: Duration,
    /// Whether intercepted upstreams are verified against the OS trust store (rustls-native-certs; Linux only).
    pub system_roots: bool,
    /// More CA certificates (PEM, one or more each) that intercepted upstreams are verified against.
    pub extra_roots_pem: Vec<String>,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        ProxyOptions {
            resolver: Resolver::system(),
            log_capacity: log::DEFAULT_CAPACITY,
            header_timeout: HEADER_TIMEOUT,
            connect_timeout: CONNECT_TIMEOUT,
            system_roots: true,
            extra_roots_pem: Vec::new(),
        }
    }
}

/// A sandbox's interception state: its CA and its secrets.
#[derive(Default)]
struct SandboxTls {
    ca: Option<Arc<ProxyCa>>,
    secrets: Arc<Vec<Secret>>,
}

struct Shared {
    policy: Arc<Policy>,
    opts: ProxyOptions,
    /// The upstream TLS client configuration, or why the trust roots could not be loaded.
    trust: std::result::Result<Arc<rustls::ClientConfig>, String>,
    sandboxes: RwLock<HashMap<String, SandboxTls>>,
    log: DecisionLog,
    stop: CancellationToken,
    tasks: TaskTracker,
}

/// A running proxy: any number of listeners sharing one policy store and one log.
pub struct Proxy {
    shared: Arc<Shared>,
    addrs: Mutex<Vec<SocketAddr>>,
}

/// A listener served by [`Proxy::listen_std`]: dropping it closes the listener and the connections it accepted.
pub struct Listening {
    /// The bound address.
    pub addr: SocketAddr,
    stop: CancellationToken,
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Which connection a request came on.
struct Conn {
    client: SocketAddr,
    sandbox: Option<String>,
    requests: AtomicU64,
}

type ProxyBody = BoxBody<Bytes, hyper::Error>;

impl Proxy {
    /// A proxy deciding with `policy` (shared: rule changes apply to the next request).
    pub fn new(policy: Arc<Policy>, opts: ProxyOptions) -> Proxy {
        Proxy {
            shared: Arc::new(Shared {
                policy,
                trust: mitm::client_config(&opts),
                sandboxes: RwLock::new(HashMap::new()),
                log: DecisionLog::new(opts.log_capacity),
                opts,
                stop: CancellationToken::new(),
                tasks: TaskTracker::new(),
            }),
            addrs: Mutex::new(Vec::new()),
        }
    }

    /// The policy store.
    pub fn policy(&self) -> &Arc<Policy> {
        &self.shared.policy
    }

    /// Why the upstream trust roots ([`ProxyOptions`] `system_roots`, `extra_roots_pem`) could not be loaded, if
    /// they could not: intercepted requests then fail with `upstream-tls`.
    pub fn trust_error(&self) -> Option<&str> {
        self.shared.trust.as_ref().err().map(String::as_str)
    }

    /// Sets a sandbox's CA: its allowed, non-bypass CONNECTs are intercepted from the next one on.
    pub fn set_sandbox_ca(&self, id: &str, ca: Arc<ProxyCa>) {
        self.shared
            .sandboxes_mut()
            .entry(id.to_string())
            .or_default()
            .ca = Some(ca);
    }

    /// Replaces a sandbox's secrets, applied from its next intercepted request on, on listeners bound to it only.
    pub fn set_secrets(&self, id: &str, secrets: Vec<Secret>) {
        self.shared
            .sandboxes_mut()
            .entry(id.to_string())
            .or_default()
            .secrets = Arc::new(secrets);
    }

    /// Drops a sandbox's CA and secrets (its rules live in the policy: [`Policy::drop_sandbox`]).
    pub fn forget_sandbox(&self, id: &str) {
        self.shared.sandboxes_mut().remove(id);
    }

    /// The decision log.
    pub fn log(&self) -> &DecisionLog {
        &self.shared.log
    }

    /// The addresses listened on.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.addrs.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Listens on `addr` (port 0: any); `sandbox` binds the listener to one sandbox. Returns the bound address.
    pub async fn listen(
        &self,
        addr: SocketAddr,
        sandbox: Option<String>,
    ) -> std::io::Result<SocketAddr> {
        let listener = TcpListener::bind(addr).await?;
        self.serve(listener, sandbox, self.shared.stop.child_token())
    }

    /// Serves a listener bound elsewhere (LocalSandboxd binds one inside each sandbox's network namespace, so the
    /// proxy is the only address a sandbox can reach); `sandbox` binds it to one sandbox. Must be called within a
    /// Tokio runtime. The listener, and every connection it accepted, closes when the returned [`Listening`] is
    /// dropped (or the proxy shuts down).
    pub fn listen_std(
        &self,
        listener: std::net::TcpListener,
        sandbox: Option<String>,
    ) -> std::io::Result<Listening> {
        listener.set_nonblocking(true)?;
        let stop = self.shared.stop.child_token();
        let addr = self.serve(TcpListener::from_std(listener)?, sandbox, stop.clone())?;
        Ok(Listening { addr, stop })
    }

    fn serve(
        &self,
        listener: TcpListener,
        sandbox: Option<String>,
        stop: CancellationToken,
    ) -> std::io::Result<SocketAddr> {
        let local = listener.local_addr()?;
        self.addrs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(local);
        let shared = self.shared.clone();
        self.shared.tasks.spawn(async move {
            loop {
                let (stream, client) = tokio::select! {
                    _ = stop.cancelled() => break,
                    r = listener.accept() => match r {
                        Ok(x) => x,
                        // Out of descriptors and the like: wait a little rather than spin.
                        Err(_) => { tokio::time::sleep(Duration::from_millis(50)).await; continue; }
                    },
                };
                let _ = stream.set_nodelay(true);
                let conn = Arc::new(Conn {
                    client,
                    sandbox: sandbox.clone(),
                    requests: AtomicU64::new(0),
                });
                let (shared2, stop2) = (shared.clone(), stop.clone());
                shared.tasks.spawn(async move {
                    tokio::select! {
                        _ = serve_connection(shared2, conn, stream) => {}
                        _ = stop2.cancelled() => {}
                    }
                });
            }
        });
        Ok(local)
    }

    /// Decides `target` for a sandbox exactly as a request would be (the same resolver, so with fixed answers no
    /// lookup leaves the machine), without connecting. A name that does not resolve is decided on its name.
    pub async fn check(&self, sandbox: Option<&str>, target: &Target) -> Decision {
        let addrs = self.shared.opts.resolver.resolve(target).await;
        self.shared.policy.decide(sandbox, target, addrs.as_deref())
    }

    /// Stops listening and ends every connection and tunnel; returns when all are gone.
    pub async fn shutdown(&self) {
        self.shared.stop.cancel();
        self.shared.tasks.close();
        self.shared.tasks.wait().await;
    }
}

impl Shared {
    fn sandboxes_mut(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, SandboxTls>> {
        self.sandboxes.write().unwrap_or_else(|e| e.into_inner())
    }

    fn sandbox_ca(&self, id: &str) -> Option<Arc<ProxyCa>> {
        let map = self.sandboxes.read().unwrap_or_else(|e| e.into_inner());
        map.get(id).and_then(|s| s.ca.clone())
    }

    fn secrets(&self, id: &str) -> Arc<Vec<Secret>> {
        let map = self.sandboxes.read().unwrap_or_else(|e| e.into_inner());
        map.get(id).map(|s| s.secrets.clone()).unwrap_or_default()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.cancel();
    }
}

async fn serve_connection(shared: Arc<Shared>, conn: Arc<Conn>, stream: TcpStream) {
    let started = log::now_ms();
    let svc = {
        let (shared, conn) = (shared.clone(), conn.clone());
        hyper::service::service_fn(move |req| {
            let (shared, conn) = (shared.clone(), conn.clone());
            async move { Ok::<_, Infallible>(handle(shared, conn, req).await) }
        })
    };
    let served = server_builder(&shared)
        .serve_connection(TokioIo::new(stream), svc)
        .with_upgrades();
    let result = tokio::select! {
        r = served => r,
        _ = shared.stop.cancelled() => return,
    };
    let Err(e) = result else { return };
    // An idle keep-alive connection that timed out after serving requests is not an error.
    if e.is_timeout() && conn.requests.load(Ordering::Relaxed) > 0 {
        return;
    }
    let reason = serve_error_reason(&e);
    shared.log.push(LogEntry {
        seq: 0,
        sandbox: conn.sandbox.clone(),
        proxy_type: ProxyType::None,
        host: String::new(),
        port: None,
        method: None,
        allowed: false,
        rule: None,
        reason,
        scope: None,
        message: format!("no request read from {}: {e}", conn.client),
        upstream: None,
        client: conn.client,
        status: None,
        bytes_up: 0,
        bytes_down: 0,
        started_ms: started,
        ended_ms: 0,
    });
}

/// Why a client connection ended without a request.
fn serve_error_reason(e: &hyper::Error) -> LogReason {
    if e.is_parse_too_large() {
        LogReason::RequestTooLarge
    } else if e.is_parse() || e.is_parse_status() || e.is_parse_version_h2() {
        LogReason::MalformedRequest
    } else if e.is_timeout() {
        LogReason::HeaderTimeout
    } else if e.is_incomplete_message() {
        LogReason::IncompleteRequest
    } else {
        LogReason::ClientError
    }
}

/// The `Proxy-Authorization: Basic` user name.
fn auth_user(headers: &HeaderMap) -> Option<String> {
    let v = headers
        .get(hyper::header::PROXY_AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, rest) = v.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let user = text.split_once(':').map_or(text.as_str(), |(u, _)| u);
    (!user.is_empty()).then(|| user.to_string())
}

/// The entry being built for one request.
struct Pending {
    shared: Arc<Shared>,
    entry: LogEntry,
}

impl Pending {
    fn refuse(
        mut self,
        status: StatusCode,
        reason: LogReason,
        message: String,
    ) -> Response<ProxyBody> {
        self.entry.reason = reason;
        self.entry.status = Some(status.as_u16());
        self.entry.message = message.clone();
        let rule = self.entry.rule.clone();
        self.shared.log.push(self.entry);
        let mut resp = Response::new(full(format!("{message}\n")));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(
            "content-type",
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        h.insert("x-sandboxd-decision", HeaderValue::from_static("blocked"));
        h.insert(
            "x-sandboxd-reason",
            HeaderValue::from_static(reason.as_str()),
        );
        if let Some(v) = rule.and_then(|r| HeaderValue::from_str(&r).ok()) {
            h.insert("x-sandboxd-rule", v);
        }
        h.insert("connection", HeaderValue::from_static("close"));
        resp
    }

    fn apply(&mut self, d: &Decision) {
        self.entry.allowed = d.allowed;
        self.entry.rule = d.rule.clone();
        self.entry.reason = d.reason.into();
        self.entry.scope = Some(d.scope.clone());
    }
}

fn full(s: String) -> ProxyBody {
    Full::new(Bytes::from(s))
        .map_err(|never| match never {})
        .boxed()
}

async fn handle(
    shared: Arc<Shared>,
    conn: Arc<Conn>,
    mut req: Request<Incoming>,
) -> Response<ProxyBody> {
    conn.requests.fetch_add(1, Ordering::Relaxed);
    let sandbox = conn.sandbox.clone().or_else(|| auth_user(req.headers()));
    let is_connect = req.method() == Method::CONNECT;
    let mut p = Pending {
        shared: shared.clone(),
        entry: LogEntry {
            seq: 0,
            sandbox: sandbox.clone(),
            proxy_type: if is_connect {
                ProxyType::Connect
            } else {
                ProxyType::Forward
            },
            host: String::new(),
            port: None,
            method: Some(req.method().as_str().to_string()),
            allowed: false,
            rule: None,
            reason: LogReason::InvalidTarget,
            scope: None,
            message: String::new(),
            upstream: None,
            client: conn.client,
            status: None,
            bytes_up: 0,
            bytes_down: 0,
            started_ms: log::now_ms(),
            ended_ms: 0,
        },
    };
    // The target: CONNECT's authority, or the absolute-form URI's.
    let uri = req.uri().clone();
    let Some(authority) = uri.authority().cloned() else {
        let (status, reason) = if is_connect {
            (StatusCode::BAD_REQUEST, LogReason::InvalidTarget)
        } else {
            (StatusCode::BAD_REQUEST, LogReason::NotAProxyRequest)
        };
        return p.refuse(
            status,
            reason,
            format!("{} {uri} is not a proxy request", req.method()),
        );
    };
    if !is_connect && uri.scheme_str() != Some("http") {
        let msg = format!("{uri}: only http:// is forwarded (https goes through CONNECT)");
        return p.refuse(StatusCode::BAD_REQUEST, LogReason::UnsupportedScheme, msg);
    }
    let default_port = if is_connect { 443 } else { 80 };
    p.entry.host = authority.as_str().to_string();
    let target = match policy::parse_target(authority.as_str(), default_port) {
        Ok(t) => t,
        Err(e) => {
            let msg = format!("{authority}: {e}");
            return p.refuse(StatusCode::BAD_REQUEST, LogReason::InvalidTarget, msg);
        }
    };
    p.entry.host = target.host.to_string();
    p.entry.port = Some(target.port);
    let sb = sandbox.as_deref();
    // A name a deny rule blocks, or that no rule could allow whatever it resolves to, is refused before any
    // lookup (a lookup of a blocked name is itself a way out).
    let by_name = shared.policy.decide(sb, &target, None);
    if let Host::Name(_) = target.host {
        let final_ = by_name.reason == Reason::DeniedByRule || !shared.policy.allows_by_address(sb);
        if !by_name.allowed && final_ {
            p.apply(&by_name);
            let msg = by_name.message(&target);
            return p.refuse(StatusCode::FORBIDDEN, by_name.reason.into(), msg);
        }
    }
    let Some(addrs) = shared.opts.resolver.resolve(&target).await else {
        // Not allowed by name and no address to allow it: blocked; allowed by name: the lookup failed.
        if !by_name.allowed {
            p.apply(&by_name);
            let msg = by_name.message(&target);
            return p.refuse(StatusCode::FORBIDDEN, by_name.reason.into(), msg);
        }
        let msg = format!("{target}: the name does not resolve");
        return p.refuse(StatusCode::BAD_GATEWAY, LogReason::ResolveFailed, msg);
    };
    let d = shared.policy.decide(sb, &target, Some(&addrs));
    p.apply(&d);
    if !d.allowed {
        let msg = d.message(&target);
        return p.refuse(StatusCode::FORBIDDEN, d.reason.into(), msg);
    }
    // Connect to an address that was checked (all were).
    let mut upstream = None;
    let mut last_err = String::new();
    for &a in &addrs {
        let sa = SocketAddr::new(a, target.port);
        match tokio::time::timeout(shared.opts.connect_timeout, TcpStream::connect(sa)).await {
            Ok(Ok(s)) => {
                upstream = Some((s, sa));
                break;
            }
            Ok(Err(e)) => last_err = format!("{sa}: {e}"),
            Err(_) => last_err = format!("{sa}: timed out"),
        }
    }
    let Some((stream, sa)) = upstream else {
        let msg = format!("{target}: {last_err}");
        return p.refuse(StatusCode::BAD_GATEWAY, LogReason::UpstreamUnreachable, msg);
    };
    let _ = stream.set_nodelay(true);
    p.entry.upstream = Some(sa);
    p.entry.message = d.message(&target);
    if is_connect {
        p.entry.status = Some(200);
        let on_upgrade = hyper::upgrade::on(&mut req);
        // Intercepted when the sandbox has a CA and no bypass rule matched; otherwise a plain tunnel.
        let ca = sb.filter(|_| !d.bypass).and_then(|s| shared.sandbox_ca(s));
        if let Some(ca) = ca {
            let ic = mitm::Intercept {
                tcp: stream,
                upstream_addr: sa,
                target,
                addrs,
                ca,
                bound: conn.sandbox.is_some(),
            };
            let task = mitm::intercept(p, on_upgrade, ic);
            shared.tasks.spawn(task);
            let mut resp = Response::new(full(String::new()));
            resp.headers_mut().insert(
                "x-sandboxd-decision",
                HeaderValue::from_static("intercepted"),
            );
            return resp;
        }
        if d.bypass {
            p.entry.message = format!("{} (bypass: not intercepted)", p.entry.message);
        }
        let stop = shared.stop.clone();
        shared.tasks.spawn(async move {
            let mut entry = p.entry;
            let mut upstream = stream;
            if let Ok(upgraded) = on_upgrade.await {
                let copied = tokio::select! {
                    r = relay(upgraded, &mut upstream) => r.ok(),
                    _ = stop.cancelled() => None,
                };
                if let Some((up, down)) = copied {
                    entry.bytes_up = up;
                    entry.bytes_down = down;
                }
            }
            p.shared.log.push(entry);
        });
        let mut resp = Response::new(full(String::new()));
        resp.headers_mut()
            .insert("x-sandboxd-decision", HeaderValue::from_static("allowed"));
        return resp;
    }
    forward(p, req, stream, &target, authority.as_str()).await
}

/// Relays a plain tunnel both ways; the bytes sent up and down. On Linux the client's own socket is taken back
/// from hyper and the bytes move with splice(2) (tokio-splice), never through a user-space buffer; what hyper had
/// already read past the CONNECT head goes first.
async fn relay(
    upgraded: hyper::upgrade::Upgraded,
    upstream: &mut TcpStream,
) -> std::io::Result<(u64, u64)> {
    #[cfg(target_os = "linux")]
    let upgraded = match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => {
            use tokio::io::AsyncWriteExt;
            let mut client = parts.io.into_inner();
            upstream.write_all(&parts.read_buf).await?;
            let (up, down) = tokio_splice::zero_copy_bidirectional(&mut client, upstream).await?;
            return Ok((up + parts.read_buf.len() as u64, down));
        }
        Err(u) => u,
    };
    let mut client = TokioIo::new(upgraded);
    tokio::io::copy_bidirectional(&mut client, upstream).await
}

/// Hop-by-hop headers, never passed on.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    let listed: Vec<HeaderName> = h
        .get_all(hyper::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in listed {
        h.remove(n);
    }
    for n in [
        "connection",
        "proxy-connection",
        "keep-alive",
        "proxy-authorization",
        "proxy-authenticate",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        h.remove(n);
    }
}

async fn forward(
    mut p: Pending,
    req: Request<Incoming>,
    stream: TcpStream,
    target: &Target,
    authority: &str,
) -> Response<ProxyBody> {
    let (sender, connection) =
        match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
            Ok(x) => x,
            Err(e) => {
                let msg = format!("{target}: {e}");
                return p.refuse(StatusCode::BAD_GATEWAY, LogReason::UpstreamError, msg);
            }
        };
    let mut sender = sender;
    let stop = p.shared.stop.clone();
    p.shared.tasks.spawn(async move {
        tokio::select! {
            _ = connection => {}
            _ = stop.cancelled() => {}
        }
    });
    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    // The Host the upstream sees is the authority that was checked, whatever the client put there.
    if let Ok(v) = HeaderValue::from_str(authority) {
        parts.headers.insert(hyper::header::HOST, v);
    }
    let path = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    parts.uri = match path.parse() {
        Ok(u) => u,
        Err(_) => "/".parse().expect("static uri"),
    };
    let up = Arc::new(AtomicU64::new(0));
    let body = Counted {
        inner: body,
        count: up.clone(),
        done: None,
    };
    let upstream_req = Request::from_parts(parts, body);
    let resp = match sender.send_request(upstream_req).await {
        Ok(r) => r,
        Err(e) => {
            p.entry.bytes_up = up.load(Ordering::Relaxed);
            let msg = format!("{target}: {e}");
            return p.refuse(StatusCode::BAD_GATEWAY, LogReason::UpstreamError, msg);
        }
    };
    counted_response(p, resp, up)
}

/// The upstream's response passed on, hop-by-hop headers dropped, its body counted; the entry (status, bytes
/// `up` and down) is written when the body ends or is dropped.
fn counted_response(
    mut p: Pending,
    resp: Response<Incoming>,
    up: Arc<AtomicU64>,
) -> Response<ProxyBody> {
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    p.entry.status = Some(parts.status.as_u16());
    let body = Counted {
        inner: body,
        count: Arc::new(AtomicU64::new(0)),
        done: Some(Finish {
            pending: Some(p),
            up,
        }),
    };
    Response::from_parts(parts, body.boxed())
}

/// Writes the entry when the response body ends or is dropped, with the byte counts.
struct Finish {
    pending: Option<Pending>,
    up: Arc<AtomicU64>,
}

impl Finish {
    fn write(&mut self, down: u64) {
        if let Some(mut p) = self.pending.take() {
            p.entry.bytes_up = self.up.load(Ordering::Relaxed);
            p.entry.bytes_down = down;
            p.shared.log.push(p.entry);
        }
    }
}

/// A body that counts its data bytes (and, for responses, writes the log entry at its end).
struct Counted<B> {
    inner: B,
    count: Arc<AtomicU64>,
    done: Option<Finish>,
}

impl<B> Drop for Counted<B> {
    fn drop(&mut self) {
        let n = self.count.load(Ordering::Relaxed);
        if let Some(f) = self.done.as_mut() {
            f.write(n);
        }
    }
}

impl<B> Body for Counted<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    this.count.fetch_add(d.len() as u64, Ordering::Relaxed);
                }
            }
            Poll::Ready(None) => {
                let n = this.count.load(Ordering::Relaxed);
                if let Some(f) = this.done.as_mut() {
                    f.write(n);
                }
            }
            _ => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The HTTP/1 server both the proxy's own connections and the intercepted (TLS-terminated) ones are served with:
/// keep-alive, and a deadline for each request's header.
fn server_builder(shared: &Shared) -> hyper::server::conn::http1::Builder {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(shared.opts.header_timeout)
        .keep_alive(true);
    builder
}
