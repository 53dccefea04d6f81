//! The proxy against a "fake internet" that exists only inside a network namespace each test creates (needs root,
//! as LocalSandboxd's own tests do): `lo` up, with 198.18.0.1 and 198.18.0.2 (the benchmarking range) added to it.
//! The resolver has fixed answers only, so no name is ever looked up and no packet can leave the namespace; the
//! namespace goes away with the test's thread.

use super::*;
use crate::core::policy::{Action, Preset, Scope};
use std::future::Future;
use std::sync::atomic::AtomicUsize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[path = "mitm_tests.rs"]
mod mitm_tests;

/// Runs `f` on a thread in a new network namespace, on a runtime of that thread.
fn in_netns<F, Fut>(f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    std::thread::spawn(move || {
        // SAFETY: unshare only changes this thread's namespace; the thread was made for this.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "unshare(CLONE_NEWNET): {}",
            std::io::Error::last_os_error()
        );
        for args in [
            &["link", "set", "lo", "up"][..],
            &["addr", "add", "198.18.0.1/32", "dev", "lo"],
            &["addr", "add", "198.18.0.2/32", "dev", "lo"],
        ] {
            let st = std::process::Command::new("ip")
                .args(args)
                .status()
                .expect("ip");
            assert!(st.success(), "ip {args:?}");
        }
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f());
    })
    .join()
    .expect("test thread");
}

/// An HTTP upstream that answers `host=<Host> method=<M> path=<P> body=<len>` and counts connections.
async fn http_upstream(addr: &str) -> Arc<AtomicUsize> {
    let listener = TcpListener::bind(addr).await.unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            h.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let host = req
                        .headers()
                        .get("host")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    let leaked = req.headers().contains_key("proxy-authorization");
                    let (m, p) = (req.method().clone(), req.uri().to_string());
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    let text = format!(
                        "host={host} method={m} path={p} body={} proxy-auth={leaked}",
                        body.len()
                    );
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(text))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    hits
}

/// A TCP upstream that echoes what it reads, upper-cased, and counts connections.
async fn echo_upstream(addr: &str) -> Arc<AtomicUsize> {
    let listener = TcpListener::bind(addr).await.unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            h.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n].to_ascii_uppercase()).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    hits
}

/// Writes `req` to the proxy and reads until the proxy closes (requests carry `Connection: close`).
async fn raw(proxy: SocketAddr, req: &str) -> String {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("proxy answered in time")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

fn get(url: &str, extra: &str) -> String {
    format!("GET {url} HTTP/1.1\r\nHost: ignored.test\r\n{extra}Connection: close\r\n\r\n")
}

fn status(resp: &str) -> u16 {
    resp.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn header<'a>(resp: &'a str, name: &str) -> Option<&'a str> {
    let head = resp.split("\r\n\r\n").next()?;
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn basic(user: &str) -> String {
    let b = base64::engine::general_purpose::STANDARD.encode(format!("{user}:x"));
    format!("Proxy-Authorization: Basic {b}\r\n")
}

/// The fake internet's names, and the policy the tests start from.
fn setup(header_timeout: Duration) -> Proxy {
    let a: IpAddr = "198.18.0.1".parse().unwrap();
    let b: IpAddr = "198.18.0.2".parse().unwrap();
    let lo: IpAddr = "127.0.0.1".parse().unwrap();
    let resolver = Resolver::fixed()
        .with("allowed.test", &[a])
        .with("api.wild.test", &[a])
        .with("denied.test", &[a])
        .with("unlisted.test", &[a])
        .with("sb.test", &[a])
        .with("tunnel.test", &[b])
        .with("rebind.test", &[lo])
        .with("mixed.test", &[b, lo]);
    let policy = Arc::new(Policy::new(Preset::DenyAll));
    let g = Scope::Global;
    for r in [
        "allowed.test",
        "*.wild.test",
        "tunnel.test:443",
        "rebind.test",
        "mixed.test",
        "198.18.0.2:80",
    ] {
        policy.add(&g, Action::Allow, r).unwrap();
    }
    policy.add(&g, Action::Deny, "denied.test").unwrap();
    policy
        .add(&Scope::Sandbox("sb1".into()), Action::Allow, "sb.test")
        .unwrap();
    Proxy::new(
        policy,
        ProxyOptions {
            resolver,
            log_capacity: 64,
            header_timeout,
            connect_timeout: Duration::from_secs(2),
            system_roots: false,
            extra_roots_pem: Vec::new(),
        },
    )
}

async fn last_entry(proxy: &Proxy) -> LogEntry {
    for _ in 0..100 {
        if let Some(e) = proxy.log().snapshot().pop() {
            return e;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no log entry");
}

/// Waits for the entry with sequence number `seq`.
async fn entry(proxy: &Proxy, seq: u64) -> LogEntry {
    for _ in 0..200 {
        if let Some(e) = proxy.log().snapshot().into_iter().find(|e| e.seq == seq) {
            return e;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no log entry {seq}: {:#?}", proxy.log().snapshot());
}

#[test]
fn forward_and_connect_through_the_policy() {
    in_netns(|| async {
        let web = http_upstream("198.18.0.1:80").await;
        let web2 = http_upstream("198.18.0.2:80").await;
        let tls = echo_upstream("198.18.0.2:443").await;
        let local = http_upstream("127.0.0.1:80").await;
        let local_tls = echo_upstream("127.0.0.1:443").await;
        let proxy = setup(HEADER_TIMEOUT);
        let addr = proxy
            .listen("127.0.0.1:0".parse().unwrap(), None)
            .await
            .unwrap();
        let (_, mut follow) = proxy.log().follow(0);

        // Allowed forward: the upstream sees the checked authority as Host, and no proxy credentials.
        let r = raw(addr, &get("http://allowed.test/a?b=1", &basic("nobody"))).await;
        assert_eq!(status(&r), 200, "{r}");
        assert!(
            r.ends_with("host=allowed.test method=GET path=/a?b=1 body=0 proxy-auth=false"),
            "{r}"
        );
        let e = entry(&proxy, 1).await;
        assert!(e.allowed && e.reason == LogReason::AllowedByRule, "{e:?}");
        assert_eq!(e.rule.as_deref(), Some("allowed.test"));
        assert_eq!(e.proxy_type, ProxyType::Forward);
        assert_eq!(e.upstream, Some("198.18.0.1:80".parse().unwrap()));
        assert_eq!(e.sandbox.as_deref(), Some("nobody"));
        assert_eq!(e.status, Some(200));
        assert!(e.bytes_down > 30 && e.bytes_up == 0, "{e:?}");
        assert!(e.started_ms <= e.ended_ms && e.started_ms > 0);
        // The follower got the same entry.
        let followed = tokio::time::timeout(Duration::from_secs(5), follow.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(followed, e);

        // A request body is counted up.
        let post = "POST http://api.wild.test/up HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
        let r = raw(addr, post).await;
        assert!(
            r.ends_with("host=api.wild.test method=POST path=/up body=5 proxy-auth=false"),
            "{r}"
        );
        let e = entry(&proxy, 2).await;
        assert_eq!((e.bytes_up, e.rule.as_deref()), (5, Some("*.wild.test")));

        // Blocked: deny rule (no lookup needed), no matching rule, default-blocked ranges (by name and literal).
        let hits = web.load(Ordering::SeqCst);
        for (url, reason, rule) in [
            ("http://denied.test/", "denied-by-rule", Some("denied.test")),
            ("http://unlisted.test/", "no-matching-rule", None),
            ("http://wild.test/", "no-matching-rule", None),
            (
                "http://rebind.test/",
                "default-blocked-range",
                Some("127.0.0.0/8"),
            ),
            (
                "http://mixed.test/",
                "default-blocked-range",
                Some("127.0.0.0/8"),
            ),
            (
                "http://127.0.0.1/",
                "default-blocked-range",
                Some("127.0.0.0/8"),
            ),
            (
                "http://2130706433/",
                "default-blocked-range",
                Some("127.0.0.0/8"),
            ),
            (
                "http://0x7f.1/",
                "default-blocked-range",
                Some("127.0.0.0/8"),
            ),
            (
                "http://[::ffff:127.0.0.1]/",
                "default-blocked-range",
                Some("127.0.0.0/8"),
            ),
            ("http://[::1]/", "default-blocked-range", Some("::1/128")),
            ("http://198.18.0.1/", "no-matching-rule", None),
        ] {
            let r = raw(addr, &get(url, "")).await;
            assert_eq!(status(&r), 403, "{url}: {r}");
            assert_eq!(header(&r, "x-sandboxd-reason"), Some(reason), "{url}: {r}");
            assert_eq!(header(&r, "x-sandboxd-rule"), rule, "{url}: {r}");
            assert_eq!(header(&r, "x-sandboxd-decision"), Some("blocked"));
            let e = last_entry(&proxy).await;
            assert!(
                !e.allowed && e.reason.as_str() == reason && e.upstream.is_none(),
                "{url}: {e:?}"
            );
        }
        assert_eq!(
            web.load(Ordering::SeqCst),
            hits,
            "no blocked request reached an upstream"
        );
        assert_eq!(local.load(Ordering::SeqCst), 0);

        // An IP rule with a port: 198.18.0.2:80 is allowed as an address.
        let r = raw(addr, &get("http://198.18.0.2/", "")).await;
        assert!(
            r.ends_with("host=198.18.0.2 method=GET path=/ body=0 proxy-auth=false"),
            "{r}"
        );
        assert_eq!(web2.load(Ordering::SeqCst), 1);

        // CONNECT: tunnelled both ways to the checked address; bytes counted when the tunnel ends.
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"CONNECT tunnel.test:443 HTTP/1.1\r\nHost: tunnel.test:443\r\n\r\n")
            .await
            .unwrap();
        let mut head = [0u8; 256];
        let n = s.read(&mut head).await.unwrap();
        let head = String::from_utf8_lossy(&head[..n]).to_string();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        s.write_all(b"ping through").await.unwrap();
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"PING THROUGH");
        drop(s);
        let seq = proxy.log().snapshot().last().unwrap().seq + 1;
        let e = entry(&proxy, seq).await;
        assert_eq!(e.proxy_type, ProxyType::Connect);
        assert_eq!((e.bytes_up, e.bytes_down), (12, 12), "{e:?}");
        assert_eq!(e.upstream, Some("198.18.0.2:443".parse().unwrap()));
        assert_eq!(tls.load(Ordering::SeqCst), 1);

        // CONNECT refused: the wrong port for a host:port rule, a loopback literal, an invalid target.
        for (req, code, reason) in [
            (
                "CONNECT tunnel.test:8443 HTTP/1.1\r\n\r\n",
                403,
                "no-matching-rule",
            ),
            (
                "CONNECT 127.0.0.1:443 HTTP/1.1\r\n\r\n",
                403,
                "default-blocked-range",
            ),
            (
                "CONNECT [::ffff:7f00:1]:443 HTTP/1.1\r\n\r\n",
                403,
                "default-blocked-range",
            ),
            (
                "CONNECT 1.2.3.999:443 HTTP/1.1\r\n\r\n",
                400,
                "invalid-target",
            ),
        ] {
            let r = raw(addr, req).await;
            assert_eq!(status(&r), code, "{req}: {r}");
            assert_eq!(header(&r, "x-sandboxd-reason"), Some(reason), "{req}: {r}");
        }
        assert_eq!(local_tls.load(Ordering::SeqCst), 0);
        assert_eq!(tls.load(Ordering::SeqCst), 1);

        // Not proxy requests.
        let r = raw(
            addr,
            "GET / HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(
            (status(&r), header(&r, "x-sandboxd-reason")),
            (400, Some("not-a-proxy-request"))
        );
        let r = raw(addr, &get("https://allowed.test/", "")).await;
        assert_eq!(
            (status(&r), header(&r, "x-sandboxd-reason")),
            (400, Some("unsupported-scheme"))
        );
        // A name with no answer.
        proxy
            .policy()
            .add(&Scope::Global, Action::Allow, "nowhere.test")
            .unwrap();
        let r = raw(addr, &get("http://nowhere.test/", "")).await;
        assert_eq!(
            (status(&r), header(&r, "x-sandboxd-reason")),
            (502, Some("resolve-failed"))
        );
        // An allowed address where nothing listens.
        proxy
            .policy()
            .add(&Scope::Global, Action::Allow, "198.18.0.1:81")
            .unwrap();
        let r = raw(addr, &get("http://198.18.0.1:81/", "")).await;
        assert_eq!(
            (status(&r), header(&r, "x-sandboxd-reason")),
            (502, Some("upstream-unreachable"))
        );

        // The proxy's check agrees with what requests got.
        for (t, allowed) in [
            ("allowed.test:80", true),
            ("denied.test:80", false),
            ("rebind.test:80", false),
            ("tunnel.test:443", true),
            ("tunnel.test:8443", false),
        ] {
            let t = policy::parse_target(t, 80).unwrap();
            assert_eq!(proxy.check(None, &t).await.allowed, allowed, "{t}");
        }
        proxy.shutdown().await;
    });
}

/// Reads one response's first segment from a kept-alive connection.
async fn read_one(s: &mut TcpStream) -> String {
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn sandboxes_and_runtime_changes() {
    in_netns(|| async {
        let _web = http_upstream("198.18.0.1:80").await;
        let proxy = setup(HEADER_TIMEOUT);
        let shared = proxy
            .listen("127.0.0.1:0".parse().unwrap(), None)
            .await
            .unwrap();
        let bound = proxy
            .listen("127.0.0.1:0".parse().unwrap(), Some("sb2".into()))
            .await
            .unwrap();

        // Per-sandbox rules: by Proxy-Authorization on the shared listener; a bound listener ignores the header.
        assert_eq!(
            status(&raw(shared, &get("http://sb.test/", &basic("sb1"))).await),
            200
        );
        assert_eq!(
            status(&raw(shared, &get("http://sb.test/", &basic("sb2"))).await),
            403
        );
        assert_eq!(status(&raw(shared, &get("http://sb.test/", "")).await), 403);
        let r = raw(bound, &get("http://sb.test/", &basic("sb1"))).await;
        assert_eq!(status(&r), 403, "{r}");
        assert_eq!(last_entry(&proxy).await.sandbox.as_deref(), Some("sb2"));

        // Rules changed at run time apply to the next request on the same keep-alive connection.
        let mut s = TcpStream::connect(shared).await.unwrap();
        let req = "GET http://allowed.test/k HTTP/1.1\r\nHost: allowed.test\r\n\r\n";
        s.write_all(req.as_bytes()).await.unwrap();
        assert_eq!(status(&read_one(&mut s).await), 200);
        proxy
            .policy()
            .add(&Scope::Global, Action::Deny, "allowed.test")
            .unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let r = read_one(&mut s).await;
        assert_eq!(
            (status(&r), header(&r, "x-sandboxd-reason")),
            (403, Some("denied-by-rule"))
        );
        proxy
            .policy()
            .remove(&Scope::Global, Action::Deny, "allowed.test")
            .unwrap();
        assert_eq!(
            status(&raw(shared, &get("http://allowed.test/", "")).await),
            200
        );
        // A sandbox's rules dropped on dispose.
        proxy.policy().drop_sandbox("sb1");
        assert_eq!(
            status(&raw(shared, &get("http://sb.test/", &basic("sb1"))).await),
            403
        );
        proxy.shutdown().await;
    });
}

#[test]
fn garbage_half_requests_and_slow_headers() {
    in_netns(|| async {
        let _web = http_upstream("198.18.0.1:80").await;
        let proxy = setup(Duration::from_millis(300));
        let addr = proxy
            .listen("127.0.0.1:0".parse().unwrap(), None)
            .await
            .unwrap();

        async fn send_then(addr: SocketAddr, bytes: &[u8], close_write: bool) -> String {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(bytes).await.unwrap();
            if close_write {
                s.shutdown().await.unwrap();
            }
            let mut out = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
            String::from_utf8_lossy(&out).into_owned()
        }
        // A TLS ClientHello sent to the plain proxy port, binary garbage, an HTTP/2 preface.
        for junk in [
            &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n"[..],
            b"\x00\xff\xfe\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"GET http://allowed.test/ HTTP/1.1\r\nBad Header\r\n\r\n",
        ] {
            let before = proxy.log().snapshot().len();
            let _ = send_then(addr, junk, false).await;
            let e = last_entry(&proxy).await;
            assert_eq!(proxy.log().snapshot().len(), before + 1, "{junk:?}");
            assert_eq!(
                (e.reason, e.proxy_type),
                (LogReason::MalformedRequest, ProxyType::None),
                "{junk:?}: {e:?}"
            );
        }
        // Half a request head, then the client hangs up.
        let _ = send_then(addr, b"GET http://allowed.test/ HTTP/1.1\r\nHost: al", true).await;
        let e = last_entry(&proxy).await;
        assert_eq!(e.reason, LogReason::IncompleteRequest, "{e:?}");
        // A head that never finishes: cut off after the header timeout.
        let t0 = std::time::Instant::now();
        let _ = send_then(
            addr,
            b"GET http://allowed.test/ HTTP/1.1\r\nHost: allowed.test\r\n",
            false,
        )
        .await;
        assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
        let e = last_entry(&proxy).await;
        assert_eq!(e.reason, LogReason::HeaderTimeout, "{e:?}");
        // A huge head.
        let big = format!(
            "GET http://allowed.test/ HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(600_000)
        );
        let _ = send_then(addr, big.as_bytes(), false).await;
        assert_eq!(last_entry(&proxy).await.reason, LogReason::RequestTooLarge);
        // 200 connections that open and send nothing, held while requests are served.
        let mut idle = Vec::new();
        for _ in 0..200 {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        // The proxy still serves.
        let r = raw(addr, &get("http://allowed.test/after", "")).await;
        assert_eq!(status(&r), 200, "{r}");
        drop(idle);
        proxy.shutdown().await;
    });
}
