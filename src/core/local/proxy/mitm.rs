//! HTTPS interception of allowed `CONNECT`s, and secrets injection into intercepted requests.
//!
//! When the sandbox has a CA ([`Proxy::set_sandbox_ca`](super::Proxy::set_sandbox_ca)) and the decision is not
//! `bypass`, the proxy answers `200`, terminates the client's TLS with a leaf minted by that CA for the CONNECT host
//! (tokio-rustls, ALPN `http/1.1`), and serves the client's HTTP/1.1 requests with hyper. Each request must name the
//! CONNECT target as its `Host` (else `421`, `host-mismatch`), is decided by the policy again (a rule change applies
//! to the next request), and is forwarded over a TLS connection to the checked upstream address (SNI: the CONNECT
//! host) whose certificate is verified against the proxy's trust roots ([`ProxyOptions`] `system_roots` and
//! `extra_roots_pem`) as a normal client would. Every intercepted request is a log entry of type
//! [`ProxyType::Intercepted`]; a TLS failure on either side is a typed entry, and an upstream one is also a `502`
//! to the client. An upgrade (`Connection: upgrade`, e.g. WebSocket) is passed on and, when the upstream answers
//! `101`, the two upgraded connections are joined (one entry, written when they end).
//!
//! Secrets ([`Secret`]) are applied only here: to intercepted requests towards the secret's exact hosts, over the
//! upstream connection the proxy verified, on a listener bound to the sandbox; never to plain HTTP, inside a bypass
//! tunnel, or for a sandbox named only by `Proxy-Authorization` on a shared listener. Only the secret's
//! configured header is touched, and only when the client sent it: a header that is absent stays absent.

use super::{
    counted_response, log, policy, strip_hop_by_hop, Counted, Host, LogEntry, LogReason, Pending,
    ProxyBody, ProxyOptions, ProxyType, Shared, Target,
};
use crate::core::local::ca::ProxyCa;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::convert::Infallible;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// The prefix of custom-secret placeholders (`sbx-cs-<random>`).
pub const SECRET_PREFIX: &str = "sbx-cs-";
/// The placeholder of service secrets: the header that carries it is set to the secret's formatted value.
pub const PROXY_MANAGED: &str = "proxy-managed";

/// A fresh custom-secret placeholder, `sbx-cs-` and 32 random hex digits.
pub fn new_placeholder() -> String {
    format!("{SECRET_PREFIX}{}", uuid::Uuid::new_v4().simple())
}

/// A credential the proxy writes into intercepted requests towards its hosts, in place of a placeholder the
/// sandbox holds. `Debug` never shows the value, and no log entry, error or message contains it.
#[derive(Clone)]
pub struct Secret {
    /// What the sandbox sends: `sbx-cs-…` (replaced by the value wherever it occurs in the header) or
    /// [`PROXY_MANAGED`] (the whole header becomes `format` applied to the value).
    pub placeholder: String,
    /// The real credential.
    pub value: String,
    /// The exact host names (or IP addresses) it is sent to; no wildcards, no subdomains.
    pub hosts: Vec<String>,
    /// The header it goes into, e.g. `authorization`.
    pub header: String,
    /// How a `proxy-managed` header is written: `%s` is the value (`Bearer %s`); empty means `%s`.
    pub format: String,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("placeholder", &self.placeholder)
            .field("value", &"<redacted>")
            .field("hosts", &self.hosts)
            .field("header", &self.header)
            .field("format", &self.format)
            .finish()
    }
}

impl Secret {
    /// A custom secret with a fresh `sbx-cs-…` placeholder and format `%s`.
    pub fn custom(value: &str, hosts: &[&str], header: &str) -> Secret {
        Secret {
            placeholder: new_placeholder(),
            value: value.to_string(),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            header: header.to_string(),
            format: "%s".to_string(),
        }
    }

    /// A service secret: placeholder [`PROXY_MANAGED`], header written as `format` (e.g. `Bearer %s`).
    pub fn service(value: &str, hosts: &[&str], header: &str, format: &str) -> Secret {
        Secret {
            placeholder: PROXY_MANAGED.to_string(),
            value: value.to_string(),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            header: header.to_string(),
            format: format.to_string(),
        }
    }

    fn applies_to(&self, host: &Host) -> bool {
        self.hosts
            .iter()
            .any(|h| policy::parse_host(h).is_ok_and(|h| &h == host))
    }

    /// The new header value when `current` carries the placeholder.
    fn rewrite(&self, current: &str) -> Option<String> {
        if self.placeholder.is_empty() || !current.contains(&self.placeholder) {
            return None;
        }
        if self.placeholder == PROXY_MANAGED {
            let format = if self.format.is_empty() {
                "%s"
            } else {
                &self.format
            };
            return Some(format.replace("%s", &self.value));
        }
        Some(current.replace(&self.placeholder, &self.value))
    }
}

/// Applies the secrets for `host` to `headers`; returns the placeholders applied (never values).
pub(super) fn inject(secrets: &[Secret], host: &Host, headers: &mut HeaderMap) -> Vec<String> {
    let mut applied = Vec::new();
    for s in secrets.iter().filter(|s| s.applies_to(host)) {
        let Ok(name) = HeaderName::from_bytes(s.header.trim().as_bytes()) else {
            continue;
        };
        let Some(new) = headers
            .get(&name)
            .and_then(|v| v.to_str().ok())
            .and_then(|cur| s.rewrite(cur))
        else {
            continue;
        };
        if let Ok(mut v) = HeaderValue::from_str(&new) {
            v.set_sensitive(true);
            headers.insert(name, v);
            applied.push(s.placeholder.clone());
        }
    }
    applied
}

/// rustls on ring: rustls 0.23.48 deprecates ring's provider for lacking post-quantum key exchange (aws-lc has
/// it); ring is kept because aws-lc-sys is a large C/CMake build and rcgen already uses ring.
#[allow(deprecated)]
pub(super) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The upstream TLS client configuration: the OS trust store (if `system_roots`) and the extra PEMs.
pub(super) fn client_config(opts: &ProxyOptions) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    // The OS store on Linux only: elsewhere no sandbox can reach the proxy (no namespace to put it in), and only
    // `extra_roots_pem` count.
    #[cfg(target_os = "linux")]
    if opts.system_roots {
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    }
    for (i, pem) in opts.extra_roots_pem.iter().enumerate() {
        let mut n = 0;
        for c in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let c = c.map_err(|e| format!("extra root PEM {i}: {e}"))?;
            roots
                .add(c)
                .map_err(|e| format!("extra root PEM {i}: {e}"))?;
            n += 1;
        }
        if n == 0 {
            return Err(format!("extra root PEM {i}: no certificate"));
        }
    }
    if roots.is_empty() {
        return Err("no trust roots (the OS store is empty or off, and no extra_roots_pem)".into());
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

fn server_config(
    leaf: Arc<rustls::sign::CertifiedKey>,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(leaf)));
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

fn tls_error(e: &std::io::Error) -> Option<&rustls::Error> {
    e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>())
}

/// The reason for a failed TLS accept from the client.
fn client_reason(e: &std::io::Error) -> LogReason {
    use rustls::AlertDescription as A;
    match tls_error(e) {
        Some(rustls::Error::AlertReceived(
            A::UnknownCA
            | A::BadCertificate
            | A::CertificateUnknown
            | A::UnsupportedCertificate
            | A::AccessDenied
            | A::DecryptError,
        )) => LogReason::ClientRejectedCertificate,
        _ => LogReason::ClientTls,
    }
}

fn host_text(t: &Target) -> String {
    match &t.host {
        Host::Name(n) => n.clone(),
        Host::Ip(ip) => ip.to_string(),
    }
}

type UpBody = Counted<Incoming>;

/// The upstream side of one intercepted connection: the first TCP connection (made when the CONNECT was decided),
/// then a verified TLS connection, reopened to the same checked address when the upstream closes it.
struct Upstream {
    tcp: Option<TcpStream>,
    sender: Option<SendRequest<UpBody>>,
}

struct Session {
    shared: Arc<Shared>,
    /// The CONNECT's entry (allowed, rule, upstream address, client), the template of every request's entry.
    base: LogEntry,
    target: Target,
    addrs: Vec<IpAddr>,
    upstream_addr: SocketAddr,
    upstream: tokio::sync::Mutex<Upstream>,
    served: AtomicU64,
    bound: bool,
}

/// What an allowed CONNECT to intercept was decided with.
pub(super) struct Intercept {
    /// Already connected to `upstream_addr`, one of the checked `addrs`.
    pub tcp: TcpStream,
    /// The checked address `tcp` is connected to (reconnections go there too).
    pub upstream_addr: SocketAddr,
    /// The CONNECT target (the leaf's name, the upstream SNI, what each request's `Host` must name).
    pub target: Target,
    /// The addresses the target resolved to and was checked with (each request is decided on them again).
    pub addrs: Vec<IpAddr>,
    /// The sandbox's CA.
    pub ca: Arc<ProxyCa>,
    /// Whether the sandbox is the listener's (secrets are applied only then: a `Proxy-Authorization` user name on
    /// a shared listener is a claim, not proof).
    pub bound: bool,
}

/// Intercepts an allowed CONNECT.
pub(super) async fn intercept(p: Pending, on_upgrade: hyper::upgrade::OnUpgrade, ic: Intercept) {
    let Intercept {
        tcp,
        upstream_addr,
        target,
        addrs,
        ca,
        bound,
    } = ic;
    let shared = p.shared.clone();
    let mut entry = p.entry;
    let Ok(upgraded) = on_upgrade.await else {
        entry.reason = LogReason::ClientError;
        entry.message = format!("{target}: the client left before the tunnel opened");
        shared.log.push(entry);
        return;
    };
    let fail = |mut entry: LogEntry, reason: LogReason, message: String| {
        entry.reason = reason;
        entry.message = message;
        shared.log.push(entry);
    };
    // What comes first decides: a TLS handshake record (0x16) is intercepted; anything else (plain HTTP sent
    // through CONNECT, another protocol) goes through as a plain tunnel to the address already checked, as a
    // sandbox without a CA would get. No secret is ever applied there.
    let mut client = TokioIo::new(upgraded);
    let mut first = [0u8; 1];
    let peeked = tokio::select! {
        r = tokio::time::timeout(shared.opts.header_timeout, client.read(&mut first)) => r,
        _ = shared.stop.cancelled() => return,
    };
    match peeked {
        Ok(Ok(1)) if first[0] == 0x16 => {}
        Ok(Ok(1)) => {
            let mut upstream = tcp;
            entry.proxy_type = ProxyType::Connect;
            entry.message = format!("{target}: not TLS, tunnelled without interception");
            let copied = async {
                upstream.write_all(&first).await?;
                tokio::io::copy_bidirectional(&mut client, &mut upstream).await
            };
            let copied = tokio::select! {
                r = copied => r.ok(),
                _ = shared.stop.cancelled() => None,
            };
            if let Some((up, down)) = copied {
                entry.bytes_up = up + 1;
                entry.bytes_down = down;
            }
            shared.log.push(entry);
            return;
        }
        Ok(Ok(_)) | Ok(Err(_)) => {
            let msg = format!("{target}: the client closed the tunnel before sending anything");
            return fail(entry, LogReason::IncompleteRequest, msg);
        }
        Err(_) => {
            let msg = format!("{target}: nothing sent through the tunnel in time");
            return fail(entry, LogReason::HeaderTimeout, msg);
        }
    }
    let cfg = match ca.leaf(&host_text(&target)).map_err(|e| e.to_string()) {
        Ok(leaf) => server_config(leaf),
        Err(e) => Err(e),
    };
    let cfg = match cfg {
        Ok(c) => c,
        Err(e) => {
            let msg = format!("{target}: cannot intercept: {e}");
            return fail(entry, LogReason::InterceptFailed, msg);
        }
    };
    let accept = TlsAcceptor::from(cfg).accept(Prefixed {
        first: Some(first[0]),
        inner: client,
    });
    let accepted = tokio::select! {
        r = tokio::time::timeout(shared.opts.header_timeout, accept) => r,
        _ = shared.stop.cancelled() => return,
    };
    let tls = match accepted {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let msg = format!("{target}: TLS with the client failed: {e}");
            return fail(entry, client_reason(&e), msg);
        }
        Err(_) => {
            let msg = format!("{target}: no TLS handshake from the client in time");
            return fail(entry, LogReason::HeaderTimeout, msg);
        }
    };
    let session = Arc::new(Session {
        shared: shared.clone(),
        base: entry.clone(),
        target,
        addrs,
        upstream_addr,
        upstream: tokio::sync::Mutex::new(Upstream {
            tcp: Some(tcp),
            sender: None,
        }),
        served: AtomicU64::new(0),
        bound,
    });
    let svc = {
        let session = session.clone();
        hyper::service::service_fn(move |req| {
            let session = session.clone();
            async move { Ok::<_, Infallible>(handle(session, req).await) }
        })
    };
    let served = super::server_builder(&shared)
        .serve_connection(TokioIo::new(tls), svc)
        .with_upgrades();
    let result = tokio::select! {
        r = served => r,
        _ = shared.stop.cancelled() => return,
    };
    // An intercepted connection that carried requests is logged by them; one that carried none is logged here.
    if session.served.load(Ordering::Relaxed) > 0 {
        return;
    }
    let (reason, message) = match result {
        Ok(()) => (
            entry.reason,
            format!("{}: intercepted, no request", session.target),
        ),
        Err(e) => (
            super::serve_error_reason(&e),
            format!("{}: intercepted, no request read: {e}", session.target),
        ),
    };
    fail(entry, reason, message)
}

/// Whether the request names the CONNECT target (absolute-form authority, else `Host`).
fn asked_authority(req: &Request<Incoming>) -> Option<String> {
    if let Some(a) = req.uri().authority() {
        return Some(a.as_str().to_string());
    }
    req.headers()
        .get(hyper::header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The `Upgrade` value of a request that asks for one (`Connection: upgrade`), e.g. a WebSocket handshake.
fn upgrade_asked(h: &HeaderMap) -> Option<HeaderValue> {
    let wants = h
        .get_all(hyper::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    wants
        .then(|| h.get(hyper::header::UPGRADE).cloned())
        .flatten()
}

async fn handle(s: Arc<Session>, mut req: Request<Incoming>) -> Response<ProxyBody> {
    s.served.fetch_add(1, Ordering::Relaxed);
    let mut p = Pending {
        shared: s.shared.clone(),
        entry: s.base.clone(),
    };
    p.entry.proxy_type = ProxyType::Intercepted;
    p.entry.method = Some(req.method().as_str().to_string());
    p.entry.started_ms = log::now_ms();
    p.entry.status = None;
    p.entry.message = String::new();
    let target = &s.target;
    if req.method() == hyper::Method::CONNECT {
        let msg = format!("CONNECT inside the intercepted tunnel to {target}");
        return p.refuse(StatusCode::BAD_REQUEST, LogReason::InvalidTarget, msg);
    }
    let asked = asked_authority(&req);
    let agrees = asked
        .as_deref()
        .and_then(|a| policy::parse_target(a, 443).ok())
        .is_some_and(|t| &t == target);
    if !agrees {
        let asked = asked.unwrap_or_else(|| "(none)".into());
        let msg = format!("Host {asked} does not agree with the CONNECT target {target}");
        return p.refuse(
            StatusCode::MISDIRECTED_REQUEST,
            LogReason::HostMismatch,
            msg,
        );
    }
    // Decided again on the addresses the connection was checked with: a rule change applies to this request.
    let sb = p.entry.sandbox.clone();
    let d = s
        .shared
        .policy
        .decide(sb.as_deref(), target, Some(&s.addrs));
    p.apply(&d);
    if !d.allowed {
        let msg = d.message(target);
        return p.refuse(StatusCode::FORBIDDEN, d.reason.into(), msg);
    }
    p.entry.message = d.message(target);

    // An upgrade (WebSocket): passed on, and if the upstream switches protocols the two sides are joined.
    let upgrade = upgrade_asked(req.headers());
    let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    if let Some(u) = upgrade {
        parts.headers.insert(
            hyper::header::CONNECTION,
            HeaderValue::from_static("upgrade"),
        );
        parts.headers.insert(hyper::header::UPGRADE, u);
    }
    if let Some(v) = asked.and_then(|a| HeaderValue::from_str(&a).ok()) {
        parts.headers.insert(hyper::header::HOST, v);
    }
    let path = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    parts.uri = match path.parse() {
        Ok(u) => u,
        Err(_) => "/".parse().expect("static uri"),
    };
    let secrets = sb
        .as_deref()
        .filter(|_| s.bound)
        .map(|id| s.shared.secrets(id))
        .unwrap_or_default();
    let applied = inject(&secrets, &target.host, &mut parts.headers);
    if !applied.is_empty() {
        p.entry.message = format!(
            "{} (secrets {} injected)",
            p.entry.message,
            applied.join(", ")
        );
    }
    let up = Arc::new(AtomicU64::new(0));
    let body = Counted {
        inner: body,
        count: up.clone(),
        done: None,
    };
    let upstream_req = Request::from_parts(parts, body);

    let mut slot = s.upstream.lock().await;
    if let Err((reason, msg)) = connect_upstream(&s, &mut slot).await {
        slot.sender = None;
        return p.refuse(StatusCode::BAD_GATEWAY, reason, msg);
    }
    let sender = slot.sender.as_mut().expect("connected");
    let sent = match sender.ready().await {
        Ok(()) => sender.send_request(upstream_req).await,
        Err(e) => Err(e),
    };
    let resp = match sent {
        Ok(r) => r,
        Err(e) => {
            slot.sender = None;
            p.entry.bytes_up = up.load(Ordering::Relaxed);
            let msg = format!("{target}: {e}");
            return p.refuse(StatusCode::BAD_GATEWAY, LogReason::UpstreamError, msg);
        }
    };
    drop(slot);
    if let (StatusCode::SWITCHING_PROTOCOLS, Some(client_upgrade)) = (resp.status(), client_upgrade)
    {
        return join_upgrade(p, client_upgrade, resp);
    }
    counted_response(p, resp, up)
}

/// Answers the client's upgrade with the upstream's `101` and joins the two upgraded connections; the entry is
/// written when they end, with the bytes each way.
fn join_upgrade(
    p: Pending,
    client: hyper::upgrade::OnUpgrade,
    mut resp: Response<Incoming>,
) -> Response<ProxyBody> {
    let upstream = hyper::upgrade::on(&mut resp);
    let mut out = Response::new(super::full(String::new()));
    *out.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *out.headers_mut() = resp.headers().clone();
    let shared = p.shared.clone();
    let stop = shared.stop.clone();
    shared.tasks.spawn(async move {
        let mut entry = p.entry;
        entry.status = Some(101);
        if let (Ok(c), Ok(u)) = (client.await, upstream.await) {
            // Counted as read, so an end without close_notify (an error to copy_bidirectional) keeps the counts.
            let (up, down) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
            let mut c = CountRead(TokioIo::new(c), up.clone());
            let mut u = CountRead(TokioIo::new(u), down.clone());
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut c, &mut u) => {}
                _ = stop.cancelled() => {}
            }
            entry.bytes_up = up.load(Ordering::Relaxed);
            entry.bytes_down = down.load(Ordering::Relaxed);
        } else {
            entry.reason = LogReason::UpstreamError;
            entry.message = format!("{} (the upgrade did not complete)", entry.message);
        }
        p.shared.log.push(entry);
    });
    out
}

/// An I/O object that counts the bytes read from it.
struct CountRead<T>(T, Arc<AtomicU64>);

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for CountRead<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.0).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        self.1.fetch_add(n, Ordering::Relaxed);
        r
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for CountRead<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Makes sure `slot` has an open, verified upstream connection.
async fn connect_upstream(s: &Session, slot: &mut Upstream) -> Result<(), (LogReason, String)> {
    if slot.sender.as_ref().is_some_and(|x| !x.is_closed()) {
        return Ok(());
    }
    let target = &s.target;
    let sa = s.upstream_addr;
    let opts = &s.shared.opts;
    let tcp = match slot.tcp.take() {
        Some(t) => t,
        None => match tokio::time::timeout(opts.connect_timeout, TcpStream::connect(sa)).await {
            Ok(Ok(t)) => {
                let _ = t.set_nodelay(true);
                t
            }
            Ok(Err(e)) => {
                return Err((
                    LogReason::UpstreamUnreachable,
                    format!("{target} ({sa}): {e}"),
                ))
            }
            Err(_) => {
                return Err((
                    LogReason::UpstreamUnreachable,
                    format!("{target} ({sa}): timed out"),
                ))
            }
        },
    };
    let cfg = s.shared.trust.clone().map_err(|e| {
        (
            LogReason::UpstreamTls,
            format!("the proxy's trust roots: {e}"),
        )
    })?;
    let name = ServerName::try_from(host_text(target))
        .map_err(|e| (LogReason::UpstreamTls, format!("{target}: {e}")))?;
    let handshake = TlsConnector::from(cfg).connect(name, tcp);
    let tls = match tokio::time::timeout(opts.connect_timeout, handshake).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            let reason = match tls_error(&e) {
                Some(rustls::Error::InvalidCertificate(_)) => LogReason::UpstreamCertificate,
                _ => LogReason::UpstreamTls,
            };
            return Err((reason, format!("{target} ({sa}): upstream TLS failed: {e}")));
        }
        Err(_) => {
            return Err((
                LogReason::UpstreamTls,
                format!("{target} ({sa}): upstream TLS handshake timed out"),
            ))
        }
    };
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| (LogReason::UpstreamError, format!("{target}: {e}")))?;
    let stop = s.shared.stop.clone();
    s.shared.tasks.spawn(async move {
        tokio::select! {
            _ = connection.with_upgrades() => {}
            _ = stop.cancelled() => {}
        }
    });
    slot.sender = Some(sender);
    Ok(())
}

/// A stream whose first read returns the byte already taken off it (to see whether a tunnel carries TLS).
struct Prefixed<S> {
    first: Option<u8>,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if let Some(b) = self.first.take() {
            buf.put_slice(&[b]);
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn injection_rules() {
        let host = |h: &str| policy::parse_host(h).unwrap();
        let c = Secret::custom("VAL", &["api.test", "10.0.0.1"], "Authorization");
        let ph = c.placeholder.clone();
        assert!(ph.starts_with(SECRET_PREFIX) && ph.len() == SECRET_PREFIX.len() + 32);
        assert_ne!(ph, new_placeholder());
        let m = Secret::service("TOK", &["api.test"], "x-api-key", "");
        let all = [c, m];
        // Every occurrence in the configured header; other headers untouched; names normalised.
        let mut h = headers(&[
            ("authorization", &format!("Basic {ph}:{ph}")),
            ("x-other", &ph),
            ("x-api-key", "proxy-managed"),
        ]);
        let applied = inject(&all, &host("API.test."), &mut h);
        assert_eq!(applied, vec![ph.clone(), PROXY_MANAGED.to_string()]);
        assert_eq!(h["authorization"], "Basic VAL:VAL");
        assert!(h["authorization"].is_sensitive());
        assert_eq!(h["x-other"], ph.as_str());
        assert_eq!(h["x-api-key"], "TOK");
        // IP hosts; a subdomain is another host; an absent header is not added.
        let mut h = headers(&[("authorization", &ph)]);
        assert_eq!(inject(&all, &host("10.0.0.1"), &mut h).len(), 1);
        let mut h = headers(&[("authorization", &ph)]);
        assert!(inject(&all, &host("x.api.test"), &mut h).is_empty());
        assert_eq!(h["authorization"], ph.as_str());
        let mut h = HeaderMap::new();
        assert!(inject(&all, &host("api.test"), &mut h).is_empty());
        assert!(h.is_empty());
        // A value that is not a valid header value is not applied (and not echoed anywhere).
        let bad = Secret::custom("a\nb", &["api.test"], "authorization");
        let mut h = headers(&[("authorization", &bad.placeholder)]);
        assert!(inject(std::slice::from_ref(&bad), &host("api.test"), &mut h).is_empty());
        assert!(!format!("{bad:?}").contains("a\\nb"));
    }

    #[test]
    fn trust_roots() {
        let opts = |system: bool, extra: Vec<String>| ProxyOptions {
            system_roots: system,
            extra_roots_pem: extra,
            ..ProxyOptions::default()
        };
        assert!(client_config(&opts(false, vec![])).is_err());
        let e = client_config(&opts(false, vec!["not a pem".into()])).unwrap_err();
        assert!(e.contains("extra root PEM 0"), "{e}");
        let ca = ProxyCa::generate("t").unwrap();
        assert!(client_config(&opts(false, vec![ca.cert_pem().into()])).is_ok());
    }
}
