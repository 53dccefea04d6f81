//! Load and abuse tests of the proxy (issue #19's "Load" item), in a network namespace each test creates (needs
//! root, as `tests.rs`): `lo` up with 198.18.0.1 (an HTTP upstream) and 198.18.0.2 (a TCP echo upstream), a
//! resolver with fixed answers only, so nothing is looked up and no packet leaves the namespace.
//!
//! The load test measures the whole process (VmRSS, open descriptors), so it runs itself again as a child test
//! process with one test thread: tests running beside it in the parent would move both numbers.

use super::*;
use crate::core::policy::{Action, Preset, Scope};
use std::future::Future;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Barrier;

/// Connections held at once in each load round.
const CONNS: usize = 1000;
/// Load rounds.
const ROUNDS: usize = 3;
/// How much round 3's RSS may exceed round 1's (see `thousand_connections_held_rss_flat`).
const RSS_MARGIN_KB: u64 = 4 * 1024;
/// The bound on RSS growth over the baseline while 1,000 connections are held: the process holds all four ends
/// of each (client, proxy accept, proxy upstream, upstream accept), so 64 KiB per connection is generous.
const RSS_BOUND_KB: u64 = 64 * 1024;
/// The child process marker.
const CHILD_ENV: &str = "SANDBOXD_PROXY_LOAD_CHILD";

/// Runs `f` on a thread in a new network namespace, on a runtime whose threads are all in that namespace.
fn in_netns<F, Fut>(workers: usize, f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    std::thread::spawn(move || {
        // SAFETY: unshare only changes this thread's namespace; the thread was made for this. Threads it
        // starts (the runtime's workers) inherit the namespace.
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
        let rt = if workers > 1 {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers)
                .enable_all()
                .build()
        } else {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
        };
        rt.unwrap().block_on(f());
    })
    .join()
    .expect("test thread");
}

/// An HTTP upstream: `/big` answers `BIG` bytes, anything else `ok`; a request body is read whole first.
async fn http_upstream(addr: &str) {
    let listener = TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let big = req.uri().path() == "/big";
                    let _ = req.into_body().collect().await;
                    let body = if big {
                        Bytes::from(vec![b'x'; BIG])
                    } else {
                        Bytes::from_static(b"ok")
                    };
                    Ok::<_, Infallible>(Response::new(Full::new(body)))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
}

/// The size of `/big`.
const BIG: usize = 8 << 20;

/// A TCP upstream that echoes what it reads, upper-cased.
async fn echo_upstream(addr: &str) {
    let listener = TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
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
}

/// `web.test` (HTTP on 198.18.0.1:80) and `tunnel.test` (echo on 198.18.0.2:443), both allowed.
fn setup(header_timeout: Duration, log_capacity: usize) -> Proxy {
    let resolver = Resolver::fixed()
        .with("web.test", &["198.18.0.1".parse().unwrap()])
        .with("tunnel.test", &["198.18.0.2".parse().unwrap()]);
    let policy = Arc::new(Policy::new(Preset::DenyAll));
    for r in ["web.test", "tunnel.test:443"] {
        policy.add(&Scope::Global, Action::Allow, r).unwrap();
    }
    Proxy::new(
        policy,
        ProxyOptions {
            resolver,
            log_capacity,
            header_timeout,
            connect_timeout: Duration::from_secs(2),
            system_roots: false,
            ..ProxyOptions::default()
        },
    )
}

/// Reads until `buf` ends with `end` (a whole keep-alive response or an echo), with a deadline.
async fn read_until_ends(s: &mut TcpStream, end: &[u8]) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    tokio::time::timeout(Duration::from_secs(20), async {
        while !buf.ends_with(end) {
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&buf));
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("answered in time");
    buf
}

const GET_OK: &[u8] = b"GET http://web.test/ HTTP/1.1\r\nHost: web.test\r\n\r\n";

/// One exchange on a held connection: a keep-alive request (`http`) or an echo through the tunnel.
async fn exchange(s: &mut TcpStream, http: bool) {
    if http {
        s.write_all(GET_OK).await.unwrap();
        let r = read_until_ends(s, b"\r\n\r\nok").await;
        assert!(r.starts_with(b"HTTP/1.1 200"), "{r:?}");
    } else {
        s.write_all(b"ping").await.unwrap();
        read_until_ends(s, b"PING").await;
    }
}

/// Opens a client connection: a first keep-alive request, or a CONNECT tunnel and a first echo.
async fn open(proxy: SocketAddr, http: bool) -> TcpStream {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    if !http {
        s.write_all(b"CONNECT tunnel.test:443 HTTP/1.1\r\nHost: tunnel.test:443\r\n\r\n")
            .await
            .unwrap();
        let head = read_until_ends(&mut s, b"\r\n\r\n").await;
        assert!(head.starts_with(b"HTTP/1.1 200"), "{head:?}");
    }
    exchange(&mut s, http).await;
    s
}

fn vm_rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Hands glibc's free pages back to the kernel, so VmRSS shows what is still allocated: without it, which freed
/// arena pages glibc keeps depends on thread scheduling, and VmRSS after a round wanders by several MiB with no
/// leak (measured here: 46.6, 52.7, 55.6 MB after rounds 1-3 untrimmed; 26.2, 27.2, 27.2 MB trimmed).
fn trim() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Waits until the proxy runs only its listener task and the process is back to `fds` descriptors.
async fn settle(proxy: &Proxy, fds: usize) -> (usize, usize) {
    let mut now = (0, 0);
    for _ in 0..200 {
        now = (proxy.shared.tasks.len(), open_fds());
        if now == (1, fds) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    now
}

/// The load test proper (in the child process).
async fn load_rounds() {
    http_upstream("198.18.0.1:80").await;
    echo_upstream("198.18.0.2:443").await;
    // A log that is full after round 1 (1,500 entries a round), so a growing log is not mistaken for a leak.
    let proxy = setup(HEADER_TIMEOUT, 1024);
    let addr = proxy
        .listen("127.0.0.1:0".parse().unwrap(), None)
        .await
        .unwrap();
    // Warm up the upstreams, the runtime and the allocator with one connection of each kind.
    for http in [true, false] {
        drop(open(addr, http).await);
    }
    // The baseline: the proxy back to its listener task and the descriptor count steady for 200 ms.
    let mut base_fds = 0;
    let mut steady = 0;
    for _ in 0..200 {
        let now = open_fds();
        steady = if now == base_fds && proxy.shared.tasks.len() == 1 {
            steady + 1
        } else {
            0
        };
        base_fds = now;
        if steady == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(steady, 4, "no steady baseline");
    trim();
    let base_rss = vm_rss_kb();
    let mut rss = Vec::new();
    let mut peaks = Vec::new();
    for round in 1..=ROUNDS {
        let t0 = std::time::Instant::now();
        let held = Arc::new(Barrier::new(CONNS + 1));
        let answered = Arc::new(Barrier::new(CONNS + 1));
        let release = Arc::new(Barrier::new(CONNS + 1));
        let mut clients = Vec::new();
        for i in 0..CONNS {
            let (held, answered, release) = (held.clone(), answered.clone(), release.clone());
            clients.push(tokio::spawn(async move {
                let http = i % 2 == 0;
                let mut s = open(addr, http).await;
                held.wait().await;
                // Every connection answers again while all 1,000 are open.
                exchange(&mut s, http).await;
                answered.wait().await;
                release.wait().await;
                drop(s);
            }));
        }
        tokio::time::timeout(Duration::from_secs(60), held.wait())
            .await
            .expect("1,000 connections opened");
        tokio::time::timeout(Duration::from_secs(60), answered.wait())
            .await
            .expect("1,000 held connections answered");
        // Each held connection is at least a proxy connection task (a tunnel adds its copy task).
        let tasks = proxy.shared.tasks.len();
        assert!(tasks > CONNS, "round {round}: {tasks} proxy tasks");
        let fds = open_fds();
        // A tunnel holds four descriptors (the client's, the proxy's two, the upstream's); a kept-alive HTTP
        // connection two between requests (the proxy connects upstream per request and closes after it).
        assert!(fds >= base_fds + 3 * CONNS, "round {round}: {fds} fds");
        trim();
        let peak = vm_rss_kb();
        release.wait().await;
        for c in clients {
            c.await.unwrap();
        }
        let after = settle(&proxy, base_fds).await;
        assert_eq!(
            after,
            (1, base_fds),
            "round {round}: proxy tasks / open fds back to baseline"
        );
        let untrimmed = vm_rss_kb();
        trim();
        let r = vm_rss_kb();
        eprintln!(
            "round {round}: {CONNS} held in {:?}; {tasks} proxy tasks, {fds} fds, VmRSS {peak} kB held (trimmed), {untrimmed} kB after ({r} kB trimmed; baseline {base_rss} kB, {base_fds} fds)",
            t0.elapsed()
        );
        peaks.push(peak);
        assert!(
            peak <= base_rss + RSS_BOUND_KB,
            "round {round}: VmRSS {peak} kB with {CONNS} held, baseline {base_rss} kB"
        );
        rss.push(r);
    }
    assert!(
        rss[ROUNDS - 1] <= rss[0] + RSS_MARGIN_KB,
        "VmRSS after each round {rss:?} kB: round {ROUNDS} exceeds round 1 by more than {RSS_MARGIN_KB} kB"
    );
    assert!(
        peaks[ROUNDS - 1] <= peaks[0] + RSS_MARGIN_KB,
        "VmRSS with {CONNS} held {peaks:?} kB: round {ROUNDS} exceeds round 1 by more than {RSS_MARGIN_KB} kB"
    );
    // 2 warm-up + 1,500 entries a round, the ring keeps 1,024.
    assert_eq!(proxy.log().snapshot().len(), 1024);
    proxy.shutdown().await;
}

/// 1,000 client connections held at once through the proxy (half keep-alive HTTP, half CONNECT tunnels), each
/// answered once on opening and again while all are held, for 3 rounds on one proxy. Asserted: the proxy's tasks
/// and the process's descriptors return to their baseline after every round; VmRSS while 1,000 are held stays
/// within `RSS_BOUND_KB` of the baseline; VmRSS while held and after the round (glibc's free pages trimmed, see
/// [`trim`]) is, in round 3, within `RSS_MARGIN_KB` (4 MiB) of round 1's. The margin: a leak of 2 KiB per
/// connection (less than one connection's buffers) would add 4 MiB over the two later rounds and fail, while the
/// creep measured here is about 0.3 MiB a round (the log ring's entries differ in size, allocator fragmentation).
#[test]
fn thousand_connections_held_rss_flat() {
    if std::env::var_os(CHILD_ENV).is_some() {
        // 4 descriptors per connection and the test binary's own: raise the soft limit as far as needed.
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: plain getrlimit/setrlimit on a local struct.
        unsafe {
            assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
            let want = (8 * CONNS as libc::rlim_t).max(lim.rlim_cur);
            lim.rlim_cur = want.min(lim.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        }
        assert!(
            lim.rlim_cur as usize >= 5 * CONNS,
            "RLIMIT_NOFILE {lim:?} too low"
        );
        in_netns(2, load_rounds);
        return;
    }
    let name = format!(
        "{}::thousand_connections_held_rss_flat",
        module_path!().split_once("::").map_or("", |(_, m)| m)
    );
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([name.as_str(), "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .output()
        .expect("the child test process");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(out.status.success(), "child load test failed: {text}");
    assert!(text.contains("1 passed"), "the child ran no test: {text}");
}

/// Clients that hang up in the middle of a request body, of a response body, and of a tunnel: each leaves a typed
/// log entry, the proxy's tasks return to the listener alone, and a normal request still succeeds.
#[test]
fn abrupt_closes_mid_body() {
    in_netns(1, || async {
        http_upstream("198.18.0.1:80").await;
        echo_upstream("198.18.0.2:443").await;
        let proxy = setup(Duration::from_millis(300), 64);
        let addr = proxy
            .listen("127.0.0.1:0".parse().unwrap(), None)
            .await
            .unwrap();
        async fn next_entry(proxy: &Proxy, seq: u64) -> LogEntry {
            for _ in 0..300 {
                if let Some(e) = proxy.log().snapshot().into_iter().find(|e| e.seq == seq) {
                    return e;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("no log entry {seq}: {:#?}", proxy.log().snapshot());
        }

        // Half a request body (10 of 100,000 bytes), then the client hangs up.
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST http://web.test/up HTTP/1.1\r\nHost: web.test\r\nContent-Length: 100000\r\n\r\n0123456789")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(s);
        // Logged today as upstream-error 502: forward() does not tell a body the client cut off from a failing
        // upstream (incomplete-request would say it better; a change in proxy/mod.rs, then here).
        let e = next_entry(&proxy, 1).await;
        assert_eq!(
            (e.proxy_type, e.allowed, e.reason, e.status),
            (
                ProxyType::Forward,
                true,
                LogReason::UpstreamError,
                Some(502)
            ),
            "{e:?}"
        );
        assert_eq!(e.bytes_up, 10, "{e:?}");

        // A response body cut off: the client reads the head and 64 KiB of 8 MiB, then hangs up.
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET http://web.test/big HTTP/1.1\r\nHost: web.test\r\n\r\n")
            .await
            .unwrap();
        let mut got = vec![0u8; 64 << 10];
        s.read_exact(&mut got).await.unwrap();
        assert!(got.starts_with(b"HTTP/1.1 200"));
        drop(s);
        // Two entries: the request's (allowed, partial byte count) and the connection's failed write (client-error;
        // its message says "no request read" although one was: serve_connection logs every connection error).
        let (a, b) = (next_entry(&proxy, 2).await, next_entry(&proxy, 3).await);
        let (e, conn) = if a.proxy_type == ProxyType::Forward {
            (a, b)
        } else {
            (b, a)
        };
        assert_eq!(
            (e.proxy_type, e.allowed, e.reason, e.status),
            (
                ProxyType::Forward,
                true,
                LogReason::AllowedByRule,
                Some(200)
            ),
            "{e:?}"
        );
        assert!(
            e.bytes_down > 0 && e.bytes_down < BIG as u64,
            "a partial download is logged as partial: {e:?}"
        );
        assert_eq!(
            (conn.proxy_type, conn.reason, conn.client),
            (ProxyType::None, LogReason::ClientError, e.client),
            "{conn:?}"
        );

        // A tunnel closed by the client in the middle of an exchange (the echo not read).
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"CONNECT tunnel.test:443 HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        read_until_ends(&mut s, b"\r\n\r\n").await;
        s.write_all(b"ping").await.unwrap();
        read_until_ends(&mut s, b"PING").await;
        s.write_all(&[b'z'; 4096]).await.unwrap();
        drop(s);
        let e = next_entry(&proxy, 4).await;
        assert_eq!(
            (e.proxy_type, e.reason, e.status),
            (ProxyType::Connect, LogReason::AllowedByRule, Some(200)),
            "{e:?}"
        );
        assert!(e.bytes_up >= 4, "{e:?}");

        // Slow headers on a connection that already served a request are an idle keep-alive timeout, not an
        // error; a body that stalls is cut off by the client's hang-up above, not by the header timeout.
        let mut s = open(addr, true).await;
        tokio::time::sleep(Duration::from_millis(600)).await;
        let mut rest = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
            .await
            .expect("the idle keep-alive connection is closed")
            .unwrap();
        assert_eq!(n, 0);
        assert_eq!(
            proxy.log().snapshot().len(),
            5,
            "{:#?}",
            proxy.log().snapshot()
        );

        // Then a normal request succeeds, and only the listener task is left.
        let mut s = open(addr, true).await;
        exchange(&mut s, true).await;
        drop(s);
        let mut tasks = 0;
        for _ in 0..200 {
            tasks = proxy.shared.tasks.len();
            if tasks == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(tasks, 1, "proxy tasks after the clients left");
        proxy.shutdown().await;
    });
}
