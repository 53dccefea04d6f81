//! TLS interception and secrets against HTTPS upstreams in the test's network namespace: a test root CA made here
//! with rcgen signs the upstreams' certificates (the proxy trusts only it), an untrusted self-signed upstream, and
//! clients that trust only the sandbox CA (or, to see a plain tunnel, only the test root).

use super::*;
use crate::core::local::ca::ProxyCa;
use crate::core::policy::{Action, Preset, Scope};
use hyper::client::conn::http1::SendRequest;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio_rustls::client::TlsStream;

/// A test root CA and the leaves it signs.
struct TestPki {
    pem: String,
    der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

type Leaf = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

impl TestPki {
    fn new(cn: &str) -> TestPki {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.self_signed(&key).unwrap();
        TestPki {
            pem: cert.pem(),
            der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    fn leaf(&self, names: &[&str]) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (vec![cert.der().clone(), self.der.clone()], der)
    }
}

/// Answers `host=<Host> auth=<Authorization> key=<X-Api-Key>` (`-` when absent); `Upgrade: shout` switches to a
/// protocol that echoes upper-cased.
async fn echo(mut req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.headers().get("upgrade").is_some_and(|v| v == "shout") {
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let mut io = TokioIo::new(on.await.unwrap());
            let mut buf = [0u8; 256];
            while let Ok(n) = io.read(&mut buf).await {
                if n == 0 || io.write_all(&buf[..n].to_ascii_uppercase()).await.is_err() {
                    break;
                }
            }
        });
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        r.headers_mut()
            .insert("connection", HeaderValue::from_static("upgrade"));
        r.headers_mut()
            .insert("upgrade", HeaderValue::from_static("shout"));
        return Ok(r);
    }
    let h = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_string()
    };
    let text = format!(
        "host={} auth={} key={}",
        h("host"),
        h("authorization"),
        h("x-api-key")
    );
    Ok(Response::new(Full::new(Bytes::from(text))))
}

/// An HTTPS upstream serving [`echo`] with `leaf`; counts connections.
async fn https_upstream(addr: &str, leaf: Leaf) -> Arc<AtomicUsize> {
    let listener = TcpListener::bind(addr).await.unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(mitm::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(leaf.0, leaf.1)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            h.fetch_add(1, Ordering::SeqCst);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(s).await else {
                    return;
                };
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), hyper::service::service_fn(echo))
                    .with_upgrades()
                    .await;
            });
        }
    });
    hits
}

/// A plain HTTP upstream serving [`echo`].
async fn plain_upstream(addr: &str) {
    let listener = TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), hyper::service::service_fn(echo))
                    .await;
            });
        }
    });
}

/// The fake HTTPS internet: secure.test and other.test on 198.18.0.1 (signed by the test root), evil.test on
/// 198.18.0.2 (self-signed), pinned.test (bypass) on 198.18.0.1.
async fn fake_internet(pki: &TestPki) -> Proxy {
    fake_internet_with(pki, HEADER_TIMEOUT).await
}

/// [`fake_internet`] with a header (and client TLS handshake) timeout.
async fn fake_internet_with(pki: &TestPki, header_timeout: Duration) -> Proxy {
    https_upstream(
        "198.18.0.1:443",
        pki.leaf(&["secure.test", "other.test", "pinned.test", "198.18.0.1"]),
    )
    .await;
    https_upstream("198.18.0.2:443", TestPki::new("evil").leaf(&["evil.test"])).await;
    plain_upstream("198.18.0.1:80").await;
    let a: IpAddr = "198.18.0.1".parse().unwrap();
    let b: IpAddr = "198.18.0.2".parse().unwrap();
    let resolver = Resolver::fixed()
        .with("secure.test", &[a])
        .with("other.test", &[a])
        .with("pinned.test", &[a])
        .with("plain.test", &[a])
        .with("evil.test", &[b]);
    let policy = Arc::new(Policy::new(Preset::DenyAll));
    for r in [
        "secure.test",
        "other.test",
        "pinned.test",
        "evil.test",
        "198.18.0.1:443",
        "plain.test:80",
    ] {
        policy.add(&Scope::Global, Action::Allow, r).unwrap();
    }
    policy
        .add(&Scope::Global, Action::Bypass, "pinned.test")
        .unwrap();
    let proxy = Proxy::new(
        policy,
        ProxyOptions {
            resolver,
            log_capacity: 256,
            header_timeout,
            connect_timeout: Duration::from_secs(2),
            system_roots: false,
            extra_roots_pem: vec![pki.pem.clone()],
        },
    );
    assert_eq!(proxy.trust_error(), None);
    proxy
}

/// Opens a CONNECT tunnel and reads the proxy's answer head (nothing past it).
async fn tunnel(proxy: SocketAddr, authority: &str) -> (TcpStream, String) {
    tunnel_with(proxy, authority, "").await
}

/// [`tunnel`] with more header lines.
async fn tunnel_with(proxy: SocketAddr, authority: &str, extra: &str) -> (TcpStream, String) {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    let req = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n{extra}\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 1, "proxy closed: {}", String::from_utf8_lossy(&head));
        head.push(b[0]);
    }
    (s, String::from_utf8(head).unwrap())
}

/// A TLS client over `s` trusting only `roots`.
async fn tls(
    s: TcpStream,
    name: &str,
    roots: &[&CertificateDer<'static>],
) -> std::io::Result<TlsStream<TcpStream>> {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add((*r).clone()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(mitm::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let name = ServerName::try_from(name.to_string()).unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, s)
        .await
}

/// An intercepted HTTPS connection to `authority` (CONNECT, then TLS trusting only `ca`).
async fn open(
    proxy: SocketAddr,
    authority: &str,
    roots: &[&CertificateDer<'static>],
) -> (SendRequest<Full<Bytes>>, Vec<CertificateDer<'static>>) {
    open_with(proxy, authority, roots, "").await
}

/// [`open`] with more CONNECT header lines.
async fn open_with(
    proxy: SocketAddr,
    authority: &str,
    roots: &[&CertificateDer<'static>],
    extra: &str,
) -> (SendRequest<Full<Bytes>>, Vec<CertificateDer<'static>>) {
    let (s, head) = tunnel_with(proxy, authority, extra).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let host = authority.split(':').next().unwrap();
    let t = tls(s, host, roots).await.unwrap();
    let chain = t.get_ref().1.peer_certificates().unwrap().to_vec();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(t))
        .await
        .unwrap();
    tokio::spawn(conn.with_upgrades());
    (sender, chain)
}

async fn send(
    sender: &mut SendRequest<Full<Bytes>>,
    host: &str,
    headers: &[(&str, &str)],
) -> (u16, HeaderMap, String) {
    let mut b = Request::builder().uri("/x").header("host", host);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b.body(Full::new(Bytes::new())).unwrap();
    sender.ready().await.unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
        .await
        .unwrap()
        .unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        parts.status.as_u16(),
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

fn reason(h: &HeaderMap) -> Option<&str> {
    h.get("x-sandboxd-reason").and_then(|v| v.to_str().ok())
}

/// Waits for the first entry after `seq` that satisfies `f`.
async fn wait_for(proxy: &Proxy, after: u64, f: impl Fn(&LogEntry) -> bool) -> LogEntry {
    for _ in 0..300 {
        let found = proxy
            .log()
            .snapshot()
            .into_iter()
            .find(|e| e.seq > after && f(e));
        if let Some(e) = found {
            return e;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no such entry after {after}: {:#?}", proxy.log().snapshot());
}

fn last_seq(proxy: &Proxy) -> u64 {
    proxy.log().snapshot().last().map_or(0, |e| e.seq)
}

#[test]
fn intercepted_https_secrets_host_check_and_rule_changes() {
    in_netns(|| async {
        let pki = TestPki::new("test root");
        let proxy = fake_internet(&pki).await;
        let addr = proxy
            .listen("127.0.0.1:0".parse().unwrap(), Some("sb1".into()))
            .await
            .unwrap();
        let ca = Arc::new(ProxyCa::generate("sb1").unwrap());
        proxy.set_sandbox_ca("sb1", ca.clone());

        // A client trusting only the sandbox CA gets a leaf for the CONNECT host issued by it.
        let (mut h, chain) = open(addr, "secure.test:443", &[ca.cert_der()]).await;
        assert_eq!(chain.len(), 2);
        assert_eq!(&chain[1], ca.cert_der());
        assert_eq!(&chain[0], &ca.leaf("secure.test").unwrap().cert[0]);
        let (st, _, body) = send(&mut h, "secure.test", &[]).await;
        assert_eq!(st, 200, "{body}");
        assert_eq!(body, "host=secure.test auth=- key=-");
        let e = wait_for(&proxy, 0, |e| e.proxy_type == ProxyType::Intercepted).await;
        assert!(e.allowed && e.reason == LogReason::AllowedByRule, "{e:?}");
        assert_eq!(e.status, Some(200));
        assert_eq!(e.method.as_deref(), Some("GET"));
        assert_eq!(e.upstream, Some("198.18.0.1:443".parse().unwrap()));
        assert_eq!(e.sandbox.as_deref(), Some("sb1"));
        assert_eq!(e.bytes_down, body.len() as u64);
        // `host:443` agrees with a CONNECT to port 443.
        let (st, _, _) = send(&mut h, "Secure.Test:443", &[]).await;
        assert_eq!(st, 200);
        // An IP target: the leaf names the address, the upstream is verified by its IP SAN.
        let (mut ip, chain) = open(addr, "198.18.0.1:443", &[ca.cert_der()]).await;
        assert_eq!(&chain[0], &ca.leaf("198.18.0.1").unwrap().cert[0]);
        let (st, _, body) = send(&mut ip, "198.18.0.1", &[]).await;
        assert_eq!((st, body.as_str()), (200, "host=198.18.0.1 auth=- key=-"));

        // Secrets: only towards their hosts, only in their header.
        let custom = Secret::custom("s3cr3t-custom-value", &["secure.test"], "authorization");
        let service = Secret::service("svc-token-value", &["SECURE.test."], "x-api-key", "Key %s");
        assert!(custom.placeholder.starts_with(SECRET_PREFIX) && custom.placeholder.len() > 20);
        assert!(!format!("{custom:?}").contains("s3cr3t"));
        let ph = custom.placeholder.clone();
        proxy.set_secrets("sb1", vec![custom, service]);
        let bearer = format!("Bearer {ph}");
        let with = [
            ("authorization", bearer.as_str()),
            ("x-api-key", PROXY_MANAGED),
        ];
        let (_, _, body) = send(&mut h, "secure.test", &with).await;
        assert_eq!(
            body,
            "host=secure.test auth=Bearer s3cr3t-custom-value key=Key svc-token-value"
        );
        // Absent headers are not added.
        let (_, _, body) = send(&mut h, "secure.test", &[]).await;
        assert_eq!(body, "host=secure.test auth=- key=-");
        // Another host (same upstream, same certificate) gets the placeholders unchanged.
        let (mut other, _) = open(addr, "other.test:443", &[ca.cert_der()]).await;
        let (_, _, body) = send(&mut other, "other.test", &with).await;
        assert_eq!(
            body,
            format!("host=other.test auth=Bearer {ph} key={PROXY_MANAGED}")
        );
        // A shared listener where the CONNECT claims sb1 by Proxy-Authorization: intercepted with sb1's CA, but a
        // claim is not proof, so no secret.
        let shared = proxy
            .listen("127.0.0.1:0".parse().unwrap(), None)
            .await
            .unwrap();
        let (mut claimed, _) =
            open_with(shared, "secure.test:443", &[ca.cert_der()], &basic("sb1")).await;
        let (st, _, body) = send(&mut claimed, "secure.test", &with).await;
        assert_eq!(st, 200);
        assert_eq!(
            body,
            format!("host=secure.test auth=Bearer {ph} key={PROXY_MANAGED}")
        );
        // Plain HTTP to the secret's host: never injected.
        let plain = format!(
            "GET http://secure.test/ HTTP/1.1\r\nHost: secure.test\r\nAuthorization: Bearer {ph}\r\nConnection: close\r\n\r\n"
        );
        let r = raw(addr, &plain).await;
        assert!(r.ends_with(&format!("auth=Bearer {ph} key=-")), "{r}");

        // Host must agree with the CONNECT target: refused, logged, the upstream never asked.
        let before = last_seq(&proxy);
        let (st, hd, body) = send(&mut other, "secure.test", &with).await;
        assert_eq!((st, reason(&hd)), (421, Some("host-mismatch")), "{body}");
        let e = wait_for(&proxy, before, |_| true).await;
        assert_eq!(
            (e.reason, e.proxy_type, e.status),
            (LogReason::HostMismatch, ProxyType::Intercepted, Some(421))
        );

        // A rule change applies to the next request on the same intercepted connection.
        proxy
            .policy()
            .add(&Scope::Global, Action::Deny, "secure.test")
            .unwrap();
        let (st, hd, _) = send(&mut h, "secure.test", &[]).await;
        assert_eq!((st, reason(&hd)), (403, Some("denied-by-rule")));
        proxy
            .policy()
            .remove(&Scope::Global, Action::Deny, "secure.test")
            .unwrap();
        let (mut h, _) = open(addr, "secure.test:443", &[ca.cert_der()]).await;
        let (st, _, body) = send(&mut h, "secure.test", &with).await;
        assert_eq!(st, 200);
        assert!(body.contains("s3cr3t-custom-value"));

        // An upgrade (WebSocket-like) inside the intercepted tunnel: 101, then bytes both ways, one entry.
        let (mut h, _) = open(addr, "secure.test:443", &[ca.cert_der()]).await;
        let req = Request::builder()
            .uri("/ws")
            .header("host", "secure.test")
            .header("connection", "upgrade")
            .header("upgrade", "shout")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = h.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 101);
        let mut io = TokioIo::new(hyper::upgrade::on(resp).await.unwrap());
        io.write_all(b"hello upgrade").await.unwrap();
        let mut buf = [0u8; 13];
        io.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"HELLO UPGRADE");
        let before = last_seq(&proxy);
        drop(io);
        let e = wait_for(&proxy, before, |_| true).await;
        assert_eq!(
            (e.proxy_type, e.status, e.bytes_up, e.bytes_down),
            (ProxyType::Intercepted, Some(101), 13, 13),
            "{e:?}"
        );

        // A CONNECT inside the intercepted tunnel is refused.
        let (mut h, _) = open(addr, "secure.test:443", &[ca.cert_der()]).await;
        let req = Request::builder()
            .method("CONNECT")
            .uri("secure.test:443")
            .header("host", "secure.test:443")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = h.send_request(req).await.unwrap();
        assert_eq!(
            (resp.status().as_u16(), reason(resp.headers())),
            (400, Some("invalid-target"))
        );

        // No secret value anywhere in the log.
        let log = proxy.log().snapshot();
        assert!(log.len() >= 8, "{log:#?}");
        for e in &log {
            let text = format!("{e:?} {}", serde_json::to_string(e).unwrap());
            assert!(
                !text.contains("s3cr3t-custom-value") && !text.contains("svc-token-value"),
                "{text}"
            );
        }
        assert!(log.iter().any(|e| e.message.contains(&ph)), "{log:#?}");
        proxy.shutdown().await;
    });
}

#[test]
fn intercept_failures_bypass_and_sandboxes_without_ca() {
    in_netns(|| async {
        let pki = TestPki::new("test root");
        let proxy = fake_internet(&pki).await;
        let addr = proxy
            .listen("127.0.0.1:0".parse().unwrap(), Some("sb1".into()))
            .await
            .unwrap();
        let no_ca = proxy
            .listen("127.0.0.1:0".parse().unwrap(), Some("sb2".into()))
            .await
            .unwrap();
        let ca = Arc::new(ProxyCa::generate("sb1").unwrap());
        proxy.set_sandbox_ca("sb1", ca.clone());

        // An upstream whose certificate the proxy does not trust: 502 to the client, typed entry.
        let before = last_seq(&proxy);
        let (mut h, _) = open(addr, "evil.test:443", &[ca.cert_der()]).await;
        let (st, hd, body) = send(&mut h, "evil.test", &[]).await;
        assert_eq!(
            (st, reason(&hd)),
            (502, Some("upstream-certificate")),
            "{body}"
        );
        let e = wait_for(&proxy, before, |_| true).await;
        assert_eq!(
            (e.reason, e.proxy_type),
            (LogReason::UpstreamCertificate, ProxyType::Intercepted),
            "{e:?}"
        );

        // An upstream that does not speak TLS (plain HTTP on :80): 502, upstream-tls.
        let before = last_seq(&proxy);
        let (mut h, _) = open(addr, "plain.test:80", &[ca.cert_der()]).await;
        let (st, hd, body) = send(&mut h, "plain.test:80", &[]).await;
        assert_eq!((st, reason(&hd)), (502, Some("upstream-tls")), "{body}");
        let e = wait_for(&proxy, before, |_| true).await;
        assert_eq!(e.reason, LogReason::UpstreamTls, "{e:?}");

        // A client that does not trust the sandbox CA: typed entry for the CONNECT.
        let before = last_seq(&proxy);
        let (s, _) = tunnel(addr, "secure.test:443").await;
        assert!(tls(s, "secure.test", &[&pki.der]).await.is_err());
        let e = wait_for(&proxy, before, |_| true).await;
        assert_eq!(
            (e.reason, e.proxy_type),
            (LogReason::ClientRejectedCertificate, ProxyType::Connect),
            "{e:?}"
        );
        // Not a ClientHello (plain HTTP through CONNECT): a plain tunnel to the checked address, logged as such.
        let before = last_seq(&proxy);
        let (mut s, _) = tunnel(addr, "secure.test:443").await;
        s.write_all(b"GET / HTTP/1.1\r\nHost: secure.test\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer)).await;
        drop(s);
        let e = wait_for(&proxy, before, |_| true).await;
        assert_eq!(e.proxy_type, ProxyType::Connect, "{e:?}");
        assert!(e.message.contains("not TLS"), "{e:?}");
        assert!(e.bytes_up > 30, "{e:?}");
        // The proxy still serves.
        let (mut h, _) = open(addr, "secure.test:443", &[ca.cert_der()]).await;
        assert_eq!(send(&mut h, "secure.test", &[]).await.0, 200);

        // Bypass: a plain tunnel, the client sees the upstream's own certificate, and a secret for the host is
        // not injected (the proxy cannot see inside).
        let custom = Secret::custom("s3cr3t-bypass", &["pinned.test"], "authorization");
        let ph = custom.placeholder.clone();
        proxy.set_secrets("sb1", vec![custom]);
        let upstream_leaf = {
            let (s, head) = tunnel(addr, "pinned.test:443").await;
            assert!(head.contains("x-sandboxd-decision: allowed"), "{head}");
            let t = tls(s, "pinned.test", &[&pki.der]).await.unwrap();
            let leaf = t.get_ref().1.peer_certificates().unwrap()[0].clone();
            let (mut h, conn) = hyper::client::conn::http1::handshake(TokioIo::new(t))
                .await
                .unwrap();
            let conn = tokio::spawn(conn);
            let auth = format!("Bearer {ph}");
            let (_, _, body) = send(&mut h, "pinned.test", &[("authorization", &auth)]).await;
            assert_eq!(body, format!("host=pinned.test auth={auth} key=-"));
            drop(h);
            let _ = conn.await;
            leaf
        };
        assert_ne!(&upstream_leaf, &ca.leaf("pinned.test").unwrap().cert[0]);
        let e = wait_for(&proxy, 0, |e| e.host == "pinned.test").await;
        assert_eq!(e.proxy_type, ProxyType::Connect);
        assert!(e.message.contains("bypass") && e.bytes_down > 0, "{e:?}");

        // A sandbox without a CA: a plain tunnel.
        let (s, _) = tunnel(no_ca, "secure.test:443").await;
        let t = tls(s, "secure.test", &[&pki.der]).await.unwrap();
        assert_eq!(t.get_ref().1.peer_certificates().unwrap()[0], upstream_leaf);
        // Forgotten: its CONNECTs are plain tunnels again.
        proxy.forget_sandbox("sb1");
        let (s, _) = tunnel(addr, "secure.test:443").await;
        assert!(tls(s, "secure.test", &[ca.cert_der()]).await.is_err());
        proxy.shutdown().await;
    });
}

#[test]
fn many_intercepted_connections_at_once() {
    in_netns(|| async {
        let pki = TestPki::new("test root");
        // Held connections idle until all are open: a header timeout well above that (under load, too).
        let proxy = fake_internet_with(&pki, Duration::from_secs(120)).await;
        let addr = proxy
            .listen("127.0.0.1:0".parse().unwrap(), Some("sb1".into()))
            .await
            .unwrap();
        let ca = Arc::new(ProxyCa::generate("sb1").unwrap());
        proxy.set_sandbox_ca("sb1", ca.clone());
        // 100 intercepted connections opened and held, then each asks twice.
        let mut held = Vec::new();
        for _ in 0..100 {
            held.push(open(addr, "secure.test:443", &[ca.cert_der()]).await.0);
        }
        let mut tasks = Vec::new();
        for mut h in held {
            tasks.push(tokio::spawn(async move {
                let a = send(&mut h, "secure.test", &[]).await.0;
                let b = send(&mut h, "secure.test", &[]).await.0;
                (a, b)
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), (200, 200));
        }
        // Entries are written when response bodies end; then the tunnels close (and add none).
        wait_for(&proxy, 199, |_| true).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let log = proxy.log().snapshot();
        assert_eq!(
            log.len(),
            200,
            "one entry per request, none for the tunnels"
        );
        assert!(log
            .iter()
            .all(|e| e.proxy_type == ProxyType::Intercepted && e.status == Some(200)));
        assert_eq!(ca.cached_leaves(), 1);
        proxy.shutdown().await;
    });
}

#[test]
fn slow_clients_inside_an_intercepted_tunnel() {
    in_netns(|| async {
        let pki = TestPki::new("test root");
        let proxy = fake_internet_with(&pki, Duration::from_millis(300)).await;
        let addr = proxy
            .listen("127.0.0.1:0".parse().unwrap(), Some("sb1".into()))
            .await
            .unwrap();
        let ca = Arc::new(ProxyCa::generate("sb1").unwrap());
        proxy.set_sandbox_ca("sb1", ca.clone());
        // CONNECT, then no ClientHello.
        let (_s, _) = tunnel(addr, "secure.test:443").await;
        let e = wait_for(&proxy, 0, |_| true).await;
        assert_eq!(
            (e.reason, e.proxy_type),
            (LogReason::HeaderTimeout, ProxyType::Connect),
            "{e:?}"
        );
        // A handshake, then half a request head.
        let before = last_seq(&proxy);
        let (s, _) = tunnel(addr, "secure.test:443").await;
        let mut t = tls(s, "secure.test", &[ca.cert_der()]).await.unwrap();
        t.write_all(b"GET / HTTP/1.1\r\nHost: secure.te")
            .await
            .unwrap();
        t.flush().await.unwrap();
        let e = wait_for(&proxy, before, |_| true).await;
        assert_eq!(
            (e.reason, e.proxy_type),
            (LogReason::HeaderTimeout, ProxyType::Connect),
            "{e:?}"
        );
        assert!(e.message.contains("no request read"), "{e:?}");
        // Still serving.
        let (mut h, _) = open(addr, "secure.test:443", &[ca.cert_der()]).await;
        assert_eq!(send(&mut h, "secure.test", &[]).await.0, 200);
        proxy.shutdown().await;
    });
}
