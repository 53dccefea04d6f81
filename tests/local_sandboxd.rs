//! LocalSandboxd's wire contract, checked byte-level with the relay backend in front of an in-process engine.

use hyper::Method;
use sandboxd::core::http::UnixHttp;
use sandboxd::core::local::{BackendKind, LocalOptions, LocalSandboxd};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A stand-in engine: answers every request with `200 OK` and body `OK`, like `/_ping`.
async fn fake_engine() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("engine.sock");
    let l = tokio::net::UnixListener::bind(&sock).unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK",
                    )
                    .await;
            });
        }
    });
    (dir, sock)
}

/// Object keys, sorted (serde_json may or may not preserve order, depending on features other crates enable).
fn sorted_keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

async fn start(engine: &std::path::Path) -> LocalSandboxd {
    LocalSandboxd::start(LocalOptions {
        backend: Some(BackendKind::Relay),
        docker_host: Some(format!("unix://{}", engine.display())),
        ..Default::default()
    })
    .await
    .unwrap()
}

async fn req(http: &UnixHttp, m: Method, path: &str, body: Option<&str>) -> (u16, Value) {
    let r = http
        .request(m, path, body.map(|b| b.as_bytes().to_vec()), 1 << 20)
        .await
        .unwrap();
    let v = if r.body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&r.body).unwrap()
    };
    (r.status, v)
}

#[tokio::test]
async fn serves_the_contract() {
    let (_e, engine) = fake_engine().await;
    let ws = tempfile::tempdir().unwrap();
    let sbx = start(&engine).await;
    let root = sbx.root().to_path_buf();
    assert_eq!(
        std::fs::metadata(&root).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(
        std::fs::metadata(sbx.socket_path())
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let http = UnixHttp::new(sbx.socket_path());

    assert_eq!(
        req(&http, Method::GET, "/vm", None).await,
        (200, Value::Array(vec![]))
    );

    let body = format!(
        r#"{{"agent_name":"sandbox-agent","workspace_dir":"{}"}}"#,
        ws.path().display()
    );
    let (status, created) = req(&http, Method::POST, "/vm", Some(&body)).await;
    assert_eq!(status, 200);
    let keys = sorted_keys(&created);
    assert_eq!(
        keys,
        [
            "ca_cert_data",
            "ca_cert_path",
            "vm_config",
            "vm_id",
            "vm_name"
        ]
    );
    let cfg_keys = sorted_keys(&created["vm_config"]);
    assert_eq!(
        cfg_keys,
        [
            "assetDir",
            "fileSharingDirectories",
            "socketPath",
            "stateDir"
        ]
    );
    assert_eq!(created["vm_name"], "sandbox-agent-vm");
    let state = root.join("vm/sandbox-agent-vm");
    assert_eq!(
        created["vm_config"]["stateDir"],
        state.display().to_string()
    );
    assert_eq!(
        created["vm_config"]["socketPath"],
        state.join("docker.sock").display().to_string()
    );
    assert!(state.join("proxy-config.json").is_file());
    let policy: Value =
        serde_json::from_slice(&std::fs::read(state.join("proxy-config.json")).unwrap()).unwrap();
    assert_eq!(policy["policy"], "allow");
    let pem = std::fs::read_to_string(state.join("proxy_cacerts/proxy-ca.crt")).unwrap();
    use base64::Engine as _;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(created["ca_cert_data"].as_str().unwrap())
        .unwrap();
    assert_eq!(decoded, pem.as_bytes());

    // The VM socket relays to the engine.
    let (s, _) = {
        let r = UnixHttp::new(state.join("docker.sock"))
            .request(Method::GET, "/_ping", None, 1024)
            .await
            .unwrap();
        (r.status, r.body)
    };
    assert_eq!(s, 200);

    let (status, list) = req(&http, Method::GET, "/vm", None).await;
    assert_eq!(status, 200);
    let entry = &list[0];
    let keys = sorted_keys(entry);
    assert_eq!(keys, ["agent_name", "vm_id", "vm_name", "workspace_dir"]);
    assert_eq!(entry["vm_id"], created["vm_id"]);

    // Chosen answers: duplicate 409, bad input 400, unknown DELETE 404.
    assert_eq!(req(&http, Method::POST, "/vm", Some(&body)).await.0, 409);
    assert_eq!(
        req(&http, Method::POST, "/vm", Some("{not json")).await.0,
        400
    );
    assert_eq!(
        req(&http, Method::POST, "/vm", Some(r#"{"agent_name":"x"}"#))
            .await
            .0,
        400
    );
    assert_eq!(
        req(
            &http,
            Method::POST,
            "/vm",
            Some(r#"{"agent_name":"x","workspace_dir":"rel"}"#)
        )
        .await
        .0,
        400
    );
    assert_eq!(
        req(
            &http,
            Method::POST,
            "/vm",
            Some(r#"{"agent_name":"../x","workspace_dir":"/tmp"}"#)
        )
        .await
        .0,
        400
    );
    assert_eq!(req(&http, Method::DELETE, "/vm/nope-vm", None).await.0, 404);
    assert_eq!(req(&http, Method::DELETE, "/vm/%2e%2e", None).await.0, 404);
    assert!(root.exists());

    assert_eq!(
        req(&http, Method::DELETE, "/vm/sandbox-agent-vm", None)
            .await
            .0,
        204
    );
    assert!(!state.exists());
    assert_eq!(
        req(&http, Method::GET, "/vm", None).await.1,
        Value::Array(vec![])
    );

    sbx.stop().await;
    assert!(!root.exists(), "a root it created is removed on stop");
}

#[tokio::test]
async fn refuses_roots_it_must_not_serve_from() {
    let (_e, engine) = fake_engine().await;
    let d = tempfile::tempdir().unwrap();
    let open = d.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let opts = |root: PathBuf| LocalOptions {
        root: Some(root),
        backend: Some(BackendKind::Relay),
        docker_host: Some(engine.display().to_string()),
        ..Default::default()
    };
    let e = LocalSandboxd::start(opts(open)).await.err().unwrap();
    assert_eq!(e.code.as_str(), "ERR_INVALID_ARGUMENT");
    let e = LocalSandboxd::start(opts(PathBuf::from("relative")))
        .await
        .err()
        .unwrap();
    assert_eq!(e.code.as_str(), "ERR_INVALID_ARGUMENT");

    // A given root is kept (only what LocalSandboxd made inside it is removed), and a second server on a live
    // socket is refused.
    let mine = d.path().join("mine");
    let a = LocalSandboxd::start(opts(mine.clone())).await.unwrap();
    let e = LocalSandboxd::start(opts(mine.clone()))
        .await
        .err()
        .unwrap();
    assert_eq!(e.code.as_str(), "ERR_EMULATOR");
    a.stop().await;
    assert!(mine.exists());
    assert!(!mine.join("sandboxd.sock").exists());
}

#[tokio::test]
async fn relay_to_a_missing_engine_fails_the_create_cleanly() {
    let ws = tempfile::tempdir().unwrap();
    let sbx = LocalSandboxd::start(LocalOptions {
        backend: Some(BackendKind::Relay),
        docker_host: Some("unix:///nonexistent/docker.sock".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let http = UnixHttp::new(sbx.socket_path());
    let body = format!(
        r#"{{"agent_name":"a","workspace_dir":"{}"}}"#,
        ws.path().display()
    );
    let (status, v) = req(&http, Method::POST, "/vm", Some(&body)).await;
    assert_eq!(status, 500);
    assert!(v["message"].as_str().unwrap().contains("not reachable"));
    assert!(!sbx.root().join("vm/a-vm").exists());
    assert_eq!(
        req(&http, Method::GET, "/vm", None).await.1,
        Value::Array(vec![])
    );
    sbx.stop().await;
}

/// A stand-in engine that answers only once `open` turns true, with `statuses` in turn (the last repeats).
async fn gated_engine(
    open: tokio::sync::watch::Receiver<bool>,
    statuses: Vec<u16>,
) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("engine.sock");
    let l = tokio::net::UnixListener::bind(&sock).unwrap();
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let (mut open, statuses, answered) = (open.clone(), statuses.clone(), answered.clone());
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = open.wait_for(|o| *o).await;
                let n = answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let status = statuses[n.min(statuses.len() - 1)];
                let reply = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK"
                );
                let _ = s.write_all(reply.as_bytes()).await;
            });
        }
    });
    (dir, sock)
}

/// A raw POST /vm for agent `race` in its own task, so several can be in flight at once.
fn post_race(
    http: &UnixHttp,
    ws: &std::path::Path,
) -> tokio::task::JoinHandle<(u16, Value, std::time::Instant)> {
    let (http, body) = (
        http.clone(),
        format!(
            r#"{{"agent_name":"race","workspace_dir":"{}"}}"#,
            ws.display()
        ),
    );
    tokio::spawn(async move {
        let (s, v) = req(&http, Method::POST, "/vm", Some(&body)).await;
        (s, v, std::time::Instant::now())
    })
}

#[tokio::test]
async fn a_create_in_flight_makes_an_identical_one_wait_and_another_workspace_conflict() {
    let (open, gate) = tokio::sync::watch::channel(false);
    let (_e, engine) = gated_engine(gate, vec![200]).await;
    let (ws, other) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let sbx = start(&engine).await;
    let http = UnixHttp::new(sbx.socket_path());
    let ms = |n| tokio::time::sleep(std::time::Duration::from_millis(n));

    let first = post_race(&http, ws.path());
    ms(200).await;
    // Starting VMs are not listed: a listed VM is usable. The bytes stay exactly the documented array.
    let raw = http
        .request(Method::GET, "/vm", None, 1 << 20)
        .await
        .unwrap();
    assert_eq!((raw.status, &raw.body[..]), (200, &b"[]"[..]));

    // The same agent and workspace (spelled with a trailing slash): waits for the first create.
    let second = post_race(&http, &ws.path().join(""));
    // Another workspace: 409 at once, in the documented {"message"} shape.
    let (status, v) = req(
        &http,
        Method::POST,
        "/vm",
        Some(&format!(
            r#"{{"agent_name":"race","workspace_dir":"{}"}}"#,
            other.path().display()
        )),
    )
    .await;
    assert_eq!(status, 409);
    assert_eq!(sorted_keys(&v), ["message"]);
    assert!(v["message"]
        .as_str()
        .unwrap()
        .contains("being created for another workspace"));
    // Removing a VM that is being created is refused, as before.
    assert_eq!(req(&http, Method::DELETE, "/vm/race-vm", None).await.0, 409);
    ms(200).await;
    assert!(!first.is_finished() && !second.is_finished());

    let opened = std::time::Instant::now();
    open.send(true).unwrap();
    let (s1, created, t1) = first.await.unwrap();
    let (s2, v2, t2) = second.await.unwrap();
    assert_eq!(s1, 200);
    assert_eq!(created["vm_name"], "race-vm");
    // The waiter answers as if it had come after the create: the VM exists.
    assert_eq!(s2, 409);
    assert_eq!(sorted_keys(&v2), ["message"]);
    assert!(v2["message"].as_str().unwrap().contains("already exists"));
    assert!(t2 >= t1 && t1 >= opened);
    let (_, list) = req(&http, Method::GET, "/vm", None).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["vm_id"], created["vm_id"]);
    sbx.stop().await;
}

#[tokio::test]
async fn a_waiting_create_takes_over_when_the_first_fails_and_gets_503_on_stop() {
    // The engine's first answer is a failure (the first create fails), then it works.
    let (open, gate) = tokio::sync::watch::channel(false);
    let (_e, engine) = gated_engine(gate, vec![500, 200]).await;
    let ws = tempfile::tempdir().unwrap();
    let sbx = start(&engine).await;
    let http = UnixHttp::new(sbx.socket_path());
    let first = post_race(&http, ws.path());
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let second = post_race(&http, ws.path());
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    open.send(true).unwrap();
    let (s1, v1, _) = first.await.unwrap();
    assert_eq!(s1, 500, "{v1}");
    let (s2, v2, _) = second.await.unwrap();
    assert_eq!(s2, 200, "{v2}");
    let (_, list) = req(&http, Method::GET, "/vm", None).await;
    assert_eq!(list[0]["vm_id"], v2["vm_id"]);
    assert_eq!(req(&http, Method::DELETE, "/vm/race-vm", None).await.0, 204);
    sbx.stop().await;

    // A create waiting behind one in flight is answered 503 when LocalSandboxd stops.
    let (_open, gate) = tokio::sync::watch::channel(false);
    let (_e, engine) = gated_engine(gate, vec![200]).await;
    let sbx = start(&engine).await;
    let http = UnixHttp::new(sbx.socket_path());
    let first = post_race(&http, ws.path());
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let second = post_race(&http, ws.path());
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let stopping = std::time::Instant::now();
    sbx.stop().await;
    assert_eq!(first.await.unwrap().0, 503);
    assert_eq!(second.await.unwrap().0, 503);
    assert!(stopping.elapsed() < std::time::Duration::from_secs(5));
}
