//! T9 (`npm run bench`): LocalSandboxd's filtering proxy (`sandboxd::core::local::proxy`) beside the same traffic
//! sent directly, in one run, inside a network namespace this program creates (needs root: `unshare(CLONE_NEWNET)`
//! on the thread that starts the runtime; its workers inherit the namespace). `lo` is up with 198.18.0.1 (an HTTP
//! upstream answering `ok`) and 198.18.0.2 (a TCP upstream that writes BYTES and closes); the proxy resolves with
//! fixed answers only and listens on 127.0.0.1. Nothing leaves the namespace.
//!
//! `proxy-floor [REQUESTS] [MIB] [RUNS]` (defaults 2000, 256, 3) prints one JSON line:
//! - `latency`: REQUESTS keep-alive `GET`s each way, in alternating blocks of 100 after a warm-up: `directP50Us`,
//!   `directP99Us`, `proxyP50Us`, `proxyP99Us`, `overheadP50Us` (proxy p50 − direct p50);
//! - `tunnel`: MIB MiB read to the end, directly and through a `CONNECT` tunnel (no interception), RUNS each,
//!   alternating: `directMibps`, `tunnelMibps` (per run), `directCpuSecs`, `tunnelCpuSecs` (the process's CPU
//!   during each run, all threads: client, proxy and upstream), `ratio` (median tunnel / median direct), `ok`;
//! - `intercepted`: MIB MiB over HTTPS (`GET /bulk`, HTTP/1.1) from an upstream on 198.18.0.1:443 whose
//!   certificate a test root made here signs (the proxy trusts only it), directly (the client trusts the test root)
//!   and through a listener bound to a sandbox with a CA (the proxy intercepts: TLS to the client with a leaf of
//!   the sandbox CA, TLS to the upstream), RUNS each, alternating: `directMibps`, `interceptedMibps`,
//!   `directCpuSecs`, `interceptedCpuSecs`, `ratio`, `ok`.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use sandboxd::core::local::ca::ProxyCa;
use sandboxd::core::local::proxy::{Proxy, ProxyOptions, Resolver};
use sandboxd::core::policy::{Action, Policy, Preset, Scope};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type Res<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

const WEB: &str = "198.18.0.1:80";
const BULK: &str = "198.18.0.2:443";
const HTTPS: &str = "198.18.0.1:443";

/// rustls on ring, as the proxy (`proxy/mitm.rs`: ring's provider is deprecated for lacking post-quantum key
/// exchange; kept there to avoid aws-lc's C build).
#[allow(deprecated)]
fn ring() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A test root CA made here (the proxy and the direct client trust it) and the upstream's leaf.
struct TestPki {
    pem: String,
    der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

type Leaf = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

impl TestPki {
    fn new() -> TestPki {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "proxy-floor test root");
        let cert = params.self_signed(&key).expect("root");
        TestPki {
            pem: cert.pem(),
            der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    fn leaf(&self, name: &str) -> Leaf {
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(vec![name.to_string()])
            .expect("params")
            .signed_by(&key, &self.issuer)
            .expect("leaf");
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (vec![cert.der().clone(), self.der.clone()], der)
    }
}

/// 198.18.0.1:443: HTTPS (HTTP/1.1), `big` as the body of every request.
async fn https_upstream(leaf: Leaf, big: Bytes) -> Res<()> {
    let listener = TcpListener::bind(HTTPS).await?;
    let cfg = rustls::ServerConfig::builder_with_provider(ring())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(leaf.0, leaf.1)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let _ = s.set_nodelay(true);
            let (acceptor, big) = (acceptor.clone(), big.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(s).await else {
                    return;
                };
                let svc = hyper::service::service_fn(move |_req: Request<Incoming>| {
                    let big = big.clone();
                    async move { Ok::<_, Infallible>(Response::new(Full::new(big))) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    Ok(())
}

/// `GET https://secure.test/bulk` over `s` (after a CONNECT when `connect`), trusting only `root`: body bytes
/// and seconds from the connect to the last byte.
async fn https_download(
    mut s: TcpStream,
    connect: bool,
    root: &CertificateDer<'static>,
) -> Res<(u64, f64)> {
    let t0 = Instant::now();
    s.set_nodelay(true)?;
    if connect {
        s.write_all(b"CONNECT secure.test:443 HTTP/1.1\r\nHost: secure.test:443\r\n\r\n")
            .await?;
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            if s.read(&mut b).await? == 0 {
                return Err("CONNECT: closed before a response".into());
            }
            head.push(b[0]);
        }
        if !head.starts_with(b"HTTP/1.1 200") {
            return Err(format!("CONNECT: {}", String::from_utf8_lossy(&head)).into());
        }
    }
    let mut store = rustls::RootCertStore::empty();
    store.add(root.clone())?;
    let mut cfg = rustls::ClientConfig::builder_with_provider(ring())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(store)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("secure.test")?, s)
        .await?;
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    tx.ready().await?;
    let req = Request::get("/bulk")
        .header("host", "secure.test")
        .body(Empty::<Bytes>::new())?;
    let resp = tx.send_request(req).await?;
    if !resp.status().is_success() {
        return Err(format!("GET https://secure.test/bulk: {}", resp.status()).into());
    }
    let mut body = resp.into_body();
    let mut n: u64 = 0;
    while let Some(frame) = body.frame().await {
        if let Some(d) = frame?.data_ref() {
            n += d.len() as u64;
        }
    }
    Ok((n, t0.elapsed().as_secs_f64()))
}

fn arg(n: usize, default: u64) -> u64 {
    std::env::args()
        .nth(n)
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let (requests, mib, runs) = (arg(1, 2000), arg(2, 256), arg(3, 3));
    let out = std::thread::spawn(move || -> Res<String> {
        // SAFETY: unshare only changes this thread's namespace; the thread was made for this.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(format!(
                "unshare(CLONE_NEWNET) (needs root): {}",
                std::io::Error::last_os_error()
            )
            .into());
        }
        for args in [
            &["link", "set", "lo", "up"][..],
            &["addr", "add", "198.18.0.1/32", "dev", "lo"],
            &["addr", "add", "198.18.0.2/32", "dev", "lo"],
        ] {
            let st = std::process::Command::new("ip").args(args).status()?;
            if !st.success() {
                return Err(format!("ip {args:?}: {st}").into());
            }
        }
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(run(requests as usize, mib << 20, runs as usize))
    })
    .join()
    .expect("bench thread");
    match out {
        Ok(line) => println!("{line}"),
        Err(e) => {
            eprintln!("proxy-floor: {e}");
            std::process::exit(1);
        }
    }
}

async fn run(requests: usize, bytes: u64, runs: usize) -> Res<String> {
    web_upstream().await?;
    bulk_upstream(bytes).await?;
    let pki = TestPki::new();
    let leaf = pki.leaf("secure.test");
    let big = Bytes::from(vec![0x5au8; bytes as usize]);
    https_upstream(leaf, big).await?;
    let resolver = Resolver::fixed()
        .with("secure.test", &[WEB.parse::<SocketAddr>()?.ip()])
        .with("web.test", &[WEB.parse::<SocketAddr>()?.ip()])
        .with("bulk.test", &[BULK.parse::<SocketAddr>()?.ip()]);
    let policy = Arc::new(Policy::new(Preset::DenyAll));
    policy.add(&Scope::Global, Action::Allow, "web.test")?;
    policy.add(&Scope::Global, Action::Allow, "bulk.test:443")?;
    policy.add(&Scope::Global, Action::Allow, "secure.test:443")?;
    let proxy = Proxy::new(
        policy,
        ProxyOptions {
            resolver,
            system_roots: false,
            extra_roots_pem: vec![pki.pem.clone()],
            ..ProxyOptions::default()
        },
    );
    let paddr = proxy.listen("127.0.0.1:0".parse()?, None).await?;
    if let Some(e) = proxy.trust_error() {
        return Err(format!("proxy trust store: {e}").into());
    }
    // A listener bound to a sandbox with a CA: its CONNECTs are intercepted.
    let sandbox_ca = Arc::new(ProxyCa::generate("bench").map_err(|e| format!("{e:?}"))?);
    proxy.set_sandbox_ca("bench", sandbox_ca.clone());
    let saddr = proxy
        .listen("127.0.0.1:0".parse()?, Some("bench".into()))
        .await?;

    // (a) Latency: one keep-alive connection each way, alternating blocks.
    let mut direct = Client::connect(WEB.parse()?, "/").await?;
    let mut via = Client::connect(paddr, "http://web.test/").await?;
    for _ in 0..100 {
        direct
            .get()
            .await
            .map_err(|e| format!("direct warm-up: {e}"))?;
        via.get().await.map_err(|e| format!("proxy warm-up: {e}"))?;
    }
    let (mut d, mut p) = (Vec::with_capacity(requests), Vec::with_capacity(requests));
    while d.len() < requests {
        for _ in 0..100.min(requests - d.len()) {
            d.push(direct.get().await?);
        }
        for _ in 0..100.min(requests - p.len()) {
            p.push(via.get().await?);
        }
    }
    d.sort_unstable_by(f64::total_cmp);
    p.sort_unstable_by(f64::total_cmp);
    let (d50, d99, p50, p99) = (pct(&d, 50), pct(&d, 99), pct(&p, 50), pct(&p, 99));

    // (b) Bulk: read BYTES to the end, direct and through a CONNECT tunnel, alternating.
    let (mut dm, mut tm) = (Vec::new(), Vec::new());
    let (mut dc, mut tc) = (Vec::new(), Vec::new());
    let mut ok = true;
    for _ in 0..runs {
        let c0 = cpu_secs();
        let (n, secs) = download(TcpStream::connect(BULK).await?, None).await?;
        dc.push(cpu_secs() - c0);
        ok &= n == bytes;
        dm.push(n as f64 / (1 << 20) as f64 / secs);
        let c0 = cpu_secs();
        let (n, secs) = download(TcpStream::connect(paddr).await?, Some("bulk.test:443")).await?;
        tc.push(cpu_secs() - c0);
        ok &= n == bytes;
        tm.push(n as f64 / (1 << 20) as f64 / secs);
    }
    let ratio = median(&tm) / median(&dm);

    // (c) HTTPS: direct (trusting the test root) and intercepted (trusting the sandbox CA), alternating.
    let (mut hd, mut hi, mut hdc, mut hic) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut hok = true;
    for _ in 0..runs {
        let c0 = cpu_secs();
        let (n, secs) = https_download(TcpStream::connect(HTTPS).await?, false, &pki.der).await?;
        hdc.push(cpu_secs() - c0);
        hok &= n == bytes;
        hd.push(n as f64 / (1 << 20) as f64 / secs);
        let c0 = cpu_secs();
        let (n, secs) = https_download(
            TcpStream::connect(saddr).await?,
            true,
            sandbox_ca.cert_der(),
        )
        .await?;
        hic.push(cpu_secs() - c0);
        hok &= n == bytes;
        hi.push(n as f64 / (1 << 20) as f64 / secs);
    }
    let hratio = median(&hi) / median(&hd);
    proxy.shutdown().await;
    let list = |v: &[f64], digits: usize| {
        v.iter()
            .map(|x| format!("{x:.digits$}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    Ok(format!(
        "{{\"latency\":{{\"requests\":{requests},\"directP50Us\":{d50:.1},\"directP99Us\":{d99:.1},\"proxyP50Us\":{p50:.1},\"proxyP99Us\":{p99:.1},\"overheadP50Us\":{:.1}}},\"tunnel\":{{\"bytes\":{bytes},\"runs\":{runs},\"directMibps\":[{}],\"tunnelMibps\":[{}],\"directCpuSecs\":[{}],\"tunnelCpuSecs\":[{}],\"ratio\":{ratio:.3},\"ok\":{ok}}},\"intercepted\":{{\"bytes\":{bytes},\"runs\":{runs},\"directMibps\":[{}],\"interceptedMibps\":[{}],\"directCpuSecs\":[{}],\"interceptedCpuSecs\":[{}],\"ratio\":{hratio:.3},\"ok\":{hok}}}}}",
        p50 - d50,
        list(&dm, 0),
        list(&tm, 0),
        list(&dc, 3),
        list(&tc, 3),
        list(&hd, 0),
        list(&hi, 0),
        list(&hdc, 3),
        list(&hic, 3)
    ))
}

/// CPU seconds (user + system) of the whole process so far: client, proxy and upstreams together.
fn cpu_secs() -> f64 {
    // SAFETY: getrusage fills a local struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

/// The p-th percentile of sorted microsecond samples.
fn pct(sorted: &[f64], p: usize) -> f64 {
    sorted[((sorted.len() - 1) * p) / 100]
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s[s.len() / 2]
}

/// A keep-alive HTTP/1 client connection that sends `GET uri` (absolute-form to the proxy).
struct Client {
    tx: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    uri: &'static str,
}

impl Client {
    async fn connect(addr: SocketAddr, uri: &'static str) -> Res<Client> {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                eprintln!("proxy-floor: client connection to {addr}: {e}");
            }
        });
        Ok(Client { tx, uri })
    }

    /// One request, its body read; microseconds.
    async fn get(&mut self) -> Res<f64> {
        let t0 = Instant::now();
        self.tx.ready().await?;
        let req = Request::get(self.uri)
            .header("host", "web.test")
            .body(Empty::new())?;
        let resp = self
            .tx
            .send_request(req)
            .await
            .map_err(|e| format!("GET {}: {e:?}", self.uri))?;
        if !resp.status().is_success() {
            return Err(format!("GET {}: {}", self.uri, resp.status()).into());
        }
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("GET {} body: {e:?}", self.uri))?
            .to_bytes();
        if &body[..] != b"ok" {
            return Err(format!("GET {}: body {body:?}", self.uri).into());
        }
        Ok(t0.elapsed().as_secs_f64() * 1e6)
    }
}

/// Reads a stream to its end (after a `CONNECT` head when `connect` is given): bytes and seconds.
async fn download(mut s: TcpStream, connect: Option<&str>) -> Res<(u64, f64)> {
    let mut buf = vec![0u8; 64 << 10];
    let t0 = Instant::now();
    let mut n: u64 = 0;
    if let Some(target) = connect {
        s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
            .await?;
        let mut head = Vec::new();
        let end = loop {
            let k = s.read(&mut buf).await?;
            if k == 0 {
                return Err("CONNECT: closed before a response".into());
            }
            head.extend_from_slice(&buf[..k]);
            if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        if !head.starts_with(b"HTTP/1.1 200") {
            return Err(format!("CONNECT: {}", String::from_utf8_lossy(&head)).into());
        }
        n += (head.len() - end) as u64;
    }
    loop {
        let k = s.read(&mut buf).await?;
        if k == 0 {
            break;
        }
        n += k as u64;
    }
    Ok((n, t0.elapsed().as_secs_f64()))
}

/// 198.18.0.1:80: `ok` to every request, keep-alive.
async fn web_upstream() -> Res<()> {
    let listener = TcpListener::bind(WEB).await?;
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req: Request<Incoming>| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    Ok(())
}

/// 198.18.0.2:443: writes `bytes` bytes to each connection in 256 KiB writes, then closes.
async fn bulk_upstream(bytes: u64) -> Res<()> {
    let listener = TcpListener::bind(BULK).await?;
    let chunk = Arc::new(vec![0x5au8; 256 << 10]);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let chunk = chunk.clone();
            tokio::spawn(async move {
                let mut left = bytes;
                while left > 0 {
                    let k = left.min(chunk.len() as u64) as usize;
                    if s.write_all(&chunk[..k]).await.is_err() {
                        return;
                    }
                    left -= k as u64;
                }
                let _ = s.shutdown().await;
            });
        }
    });
    Ok(())
}
