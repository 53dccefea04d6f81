//! The sandboxd client against in-process servers that misbehave in ways a real daemon rarely does.

use base64::Engine as _;
use sandboxd::core::sandboxd::{parse_list, SandboxdClient};
use sandboxd::core::Call;
use sandboxd::core::ErrorCode;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;

/// What the fake server does after reading a request.
#[derive(Clone)]
enum Behaviour {
    /// Write these bytes, then close.
    Reply(Vec<u8>),
    /// Read the request, never answer, keep the connection open.
    Silent,
}

fn http(status: &str, content_type: &str, body: &str) -> Behaviour {
    Behaviour::Reply(
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

/// Serve `behaviour` to every connection on a fresh socket; returns (tempdir guard, socket path).
async fn fake_server(behaviour: Behaviour) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("sandboxd.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let b = behaviour.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let mut got = Vec::new();
                // Read the head (and whatever body came with it).
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                match b {
                    Behaviour::Reply(bytes) => {
                        let _ = s.write_all(&bytes).await;
                        let _ = s.shutdown().await;
                    }
                    Behaviour::Silent => {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                    }
                }
            });
        }
    });
    (dir, sock)
}

fn client(sock: &Path) -> SandboxdClient {
    SandboxdClient::new(Some(sock.to_str().unwrap()), Some(Duration::from_secs(5)))
}

fn opts() -> Call {
    Call::default()
}

#[tokio::test]
async fn lists_vms_and_tolerates_unknown_fields() {
    let body = r#"[{"vm_id":"u1","vm_name":"claude-vm","agent_name":"claude","workspace_dir":"/w","extra":{"x":1}},
                   {"vm_id":42,"vm_name":"b-vm"}]"#;
    let (_d, sock) = fake_server(http("200 OK", "application/json", body)).await;
    let vms = client(&sock).list(&opts()).await.unwrap();
    assert_eq!(vms.len(), 2);
    assert_eq!(vms[0].name, "claude-vm");
    assert_eq!(vms[0].agent_name, "claude");
    assert_eq!(vms[1].id, "42");
    assert_eq!(vms[1].workspace_dir, "");
}

#[tokio::test]
async fn get_uses_the_state_dir_convention() {
    let body =
        r#"[{"vm_id":"u1","vm_name":"claude-vm","agent_name":"claude","workspace_dir":"/w"}]"#;
    let (d, sock) = fake_server(http("200 OK", "application/json", body)).await;
    let ca_dir = d.path().join("vm/claude-vm/proxy_cacerts");
    std::fs::create_dir_all(&ca_dir).unwrap();
    std::fs::write(ca_dir.join("proxy-ca.crt"), "PEM").unwrap();
    let vm = client(&sock)
        .get("claude-vm", &opts())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(vm.socket_path, d.path().join("vm/claude-vm/docker.sock"));
    assert_eq!(vm.ca_cert_pem.as_deref(), Some("PEM"));
    assert!(client(&sock)
        .get("other-vm", &opts())
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn malformed_json_is_a_protocol_error_with_status_and_excerpt() {
    let (_d, sock) = fake_server(http("200 OK", "application/json", "[{\"vm_name\": ")).await;
    let e = client(&sock).list(&opts()).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::SandboxdProtocol);
    assert_eq!(e.props["status"], 200);
    assert!(e.props["body"].as_str().unwrap().contains("vm_name"));
}

#[tokio::test]
async fn wrong_shapes_are_protocol_errors() {
    for body in [r#"{"vms":[]}"#, r#"[{"vm_id":"x"}]"#, r#"[1,2]"#, "null"] {
        let (_d, sock) = fake_server(http("200 OK", "application/json", body)).await;
        let e = client(&sock).list(&opts()).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::SandboxdProtocol, "{body}");
    }
}

#[tokio::test]
async fn html_500_is_a_protocol_error() {
    let html = "<html><body><h1>500 Internal Server Error</h1></body></html>";
    let (_d, sock) = fake_server(http("500 Internal Server Error", "text/html", html)).await;
    let e = client(&sock).list(&opts()).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::SandboxdProtocol);
    assert_eq!(e.props["status"], 500);
    assert!(e.props["body"].as_str().unwrap().contains("<h1>500"));
    assert!(e.message.contains("HTTP 500"));
}

#[tokio::test]
async fn body_cut_mid_way_is_a_protocol_error() {
    let raw = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 400\r\n\r\n[{\"vm_name\":\"a".to_vec();
    let (_d, sock) = fake_server(Behaviour::Reply(raw)).await;
    let e = client(&sock).list(&opts()).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::SandboxdProtocol);
    assert!(e.message.contains("cut off"), "{}", e.message);
    assert_eq!(e.props["status"], 200);
}

#[tokio::test]
async fn a_server_that_is_not_http_is_a_protocol_error() {
    let (_d, sock) = fake_server(Behaviour::Reply(b"SSH-2.0-OpenSSH_9.2\r\n".to_vec())).await;
    let e = client(&sock).list(&opts()).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::SandboxdProtocol);
}

#[tokio::test]
async fn a_socket_that_accepts_and_never_answers_times_out() {
    let (_d, sock) = fake_server(Behaviour::Silent).await;
    let c = SandboxdClient::new(
        Some(sock.to_str().unwrap()),
        Some(Duration::from_millis(300)),
    );
    let t = Instant::now();
    let e = c.list(&opts()).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::Timeout);
    assert_eq!(e.props["timeoutMs"], 300);
    assert!(t.elapsed() < Duration::from_secs(3));
    // A per-call timeout overrides the client's.
    let e = c
        .list(&Call {
            timeout: Some(Duration::from_millis(50)),
            ..opts()
        })
        .await
        .unwrap_err();
    assert_eq!(e.props["timeoutMs"], 50);
}

#[tokio::test]
async fn cancellation_aborts_a_pending_call() {
    let (_d, sock) = fake_server(Behaviour::Silent).await;
    let o = opts();
    let cancel = o.cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        cancel.cancel();
    });
    let e = client(&sock).list(&o).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::Aborted);
}

#[tokio::test]
async fn missing_socket_plain_file_and_stale_socket_are_unavailable() {
    let d = tempfile::tempdir().unwrap();
    let missing = d.path().join("missing.sock");
    let e = client(&missing).list(&opts()).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::SandboxdUnavailable);
    assert!(e.message.contains("Docker Desktop 4.58"));
    assert_eq!(e.props["socketPath"], missing.display().to_string());

    let file = d.path().join("file.sock");
    std::fs::write(&file, "not a socket").unwrap();
    let e = client(&file).list(&opts()).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::SandboxdUnavailable);
    assert!(e.message.contains("not a socket"));

    let stale = d.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let e = client(&stale).list(&opts()).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::SandboxdUnavailable);
    assert!(
        e.message.to_lowercase().contains("refused"),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn create_reads_vm_config_and_decodes_the_ca() {
    let ws = tempfile::tempdir().unwrap();
    let pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    let body = serde_json::json!({
        "vm_id": "uuid-1",
        "vm_name": "sandbox-agent-vm",
        "vm_config": {
            "socketPath": "/elsewhere/docker.sock",
            "fileSharingDirectories": [ws.path()],
            "stateDir": "/elsewhere",
            "assetDir": "/assets"
        },
        "ca_cert_path": "/elsewhere/proxy_cacerts/proxy-ca.crt",
        "ca_cert_data": base64::engine::general_purpose::STANDARD.encode(pem),
    })
    .to_string();
    let (_d, sock) = fake_server(http("200 OK", "application/json", &body)).await;
    let vm = client(&sock)
        .create("sandbox-agent", ws.path().to_str().unwrap(), &opts())
        .await
        .unwrap();
    assert_eq!(vm.info.name, "sandbox-agent-vm");
    assert_eq!(vm.info.agent_name, "sandbox-agent");
    assert_eq!(vm.socket_path, PathBuf::from("/elsewhere/docker.sock"));
    assert_eq!(vm.state_dir, PathBuf::from("/elsewhere"));
    assert_eq!(vm.asset_dir.as_deref(), Some("/assets"));
    assert_eq!(vm.ca_cert_pem.as_deref(), Some(pem));
}

#[tokio::test]
async fn create_rejects_bad_ca_data_and_missing_name() {
    let ws = tempfile::tempdir().unwrap();
    for body in [
        r#"{"vm_id":"x","vm_name":"a-vm","ca_cert_data":"%%% not base64"}"#,
        r#"{"vm_id":"x"}"#,
        r#"{"vm_id":"x","vm_name":"../../etc"}"#,
        "[]",
    ] {
        let (_d, sock) = fake_server(http("200 OK", "application/json", body)).await;
        let e = client(&sock)
            .create("a", ws.path().to_str().unwrap(), &opts())
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::SandboxdProtocol, "{body}");
    }
}

#[tokio::test]
async fn create_maps_conflict_and_bad_request() {
    let ws = tempfile::tempdir().unwrap();
    let w = ws.path().to_str().unwrap();
    let (_d, sock) = fake_server(http(
        "409 Conflict",
        "application/json",
        r#"{"message":"exists"}"#,
    ))
    .await;
    assert_eq!(
        client(&sock)
            .create("a", w, &opts())
            .await
            .unwrap_err()
            .code,
        ErrorCode::VmConflict
    );
    let (_d, sock) = fake_server(http("400 Bad Request", "text/plain", "bad agent")).await;
    let e = client(&sock).create("a", w, &opts()).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidArgument);
    assert_eq!(e.props["status"], 400);
}

#[tokio::test]
async fn remove_handles_every_plausible_not_found() {
    for (status, body) in [
        ("404 Not Found", r#"{"message":"vm not found"}"#),
        ("500 Internal Server Error", "no such vm: x-vm"),
        (
            "500 Internal Server Error",
            r#"{"error":"VM x-vm does not exist"}"#,
        ),
    ] {
        let (_d, sock) = fake_server(http(status, "application/json", body)).await;
        let e = client(&sock)
            .remove("x-vm", false, &opts())
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::VmNotFound, "{status} {body}");
        assert_eq!(e.props["vmName"], "x-vm");
        client(&sock).remove("x-vm", true, &opts()).await.unwrap();
    }
    for status in ["200 OK", "202 Accepted", "204 No Content"] {
        let (_d, sock) = fake_server(http(status, "application/json", "")).await;
        client(&sock).remove("x-vm", false, &opts()).await.unwrap();
    }
    let (_d, sock) = fake_server(http(
        "500 Internal Server Error",
        "text/plain",
        "disk on fire",
    ))
    .await;
    let e = client(&sock)
        .remove("x-vm", true, &opts())
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::SandboxdProtocol);
}

#[tokio::test]
async fn bad_names_never_reach_the_socket() {
    // No server at all: validation must fail first.
    let c = client(Path::new("/nonexistent/sandboxd.sock"));
    for name in [
        "",
        "a/b",
        "..",
        "%2e%2e",
        "a\0b",
        "a\nb",
        &"x".repeat(10_000),
    ] {
        assert_eq!(
            c.remove(name, false, &opts()).await.unwrap_err().code,
            ErrorCode::InvalidArgument
        );
        assert_eq!(
            c.get(name, &opts()).await.unwrap_err().code,
            ErrorCode::InvalidArgument
        );
    }
    for ws in ["relative/path", "/does/not/exist", ""] {
        assert_eq!(
            c.create("a", ws, &opts()).await.unwrap_err().code,
            ErrorCode::InvalidArgument
        );
    }
}

#[test]
fn parses_a_thousand_vms() {
    let items: Vec<_> = (0..1000)
        .map(|i| serde_json::json!({"vm_id": format!("id-{i}"), "vm_name": format!("agent{i}-vm"), "agent_name": format!("agent{i}"), "workspace_dir": format!("/w/{i}")}))
        .collect();
    let body = serde_json::to_vec(&items).unwrap();
    let t = Instant::now();
    let vms = parse_list(&body).unwrap();
    assert_eq!(vms.len(), 1000);
    assert_eq!(vms[999].name, "agent999-vm");
    eprintln!(
        "parsed 1000 VMs ({} bytes) in {:?}",
        body.len(),
        t.elapsed()
    );
}

// ---- ensure: waiting for a VM that exists but is not ready, and concurrent callers ----

type Reply = std::pin::Pin<Box<dyn std::future::Future<Output = (u16, String)> + Send>>;
/// Answers one request: (method, path, body) → (status, JSON body).
type Handler = std::sync::Arc<dyn Fn(String, String, Vec<u8>) -> Reply + Send + Sync>;

/// A fake sandboxd whose answers come from `handler`, one request per connection.
async fn scripted_server(handler: Handler) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("sandboxd.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let h = handler.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let mut got = Vec::new();
                let head_end = loop {
                    if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&got[..head_end]).to_string();
                let len = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                while got.len() < head_end + len {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let mut words = head.split_whitespace();
                let method = words.next().unwrap_or_default().to_string();
                let path = words.next().unwrap_or_default().to_string();
                let (status, body) = h(method, path, got[head_end..].to_vec()).await;
                let raw = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(raw.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    (dir, sock)
}

fn listing(id: &str, ws: &str, status: Option<&str>) -> String {
    let mut v = serde_json::json!({"vm_id": id, "vm_name": "race-vm", "agent_name": "race", "workspace_dir": ws});
    if let Some(s) = status {
        v["status"] = s.into();
    }
    serde_json::Value::Array(vec![v]).to_string()
}

fn counter() -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
    Default::default()
}

fn count(c: &std::sync::atomic::AtomicUsize) -> usize {
    c.load(std::sync::atomic::Ordering::SeqCst)
}

fn bump(c: &std::sync::atomic::AtomicUsize) -> usize {
    c.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1
}

#[tokio::test]
async fn ensure_waits_for_a_vm_that_answers_409_before_it_is_listed() {
    // A daemon that refuses the create (the VM exists) but lists the VM only 300 ms later.
    let ws = tempfile::tempdir().unwrap();
    let w = ws.path().to_str().unwrap().to_string();
    let first_post = std::sync::Arc::new(std::sync::Mutex::new(None::<Instant>));
    let posts = counter();
    let (fp, p, w2) = (first_post.clone(), posts.clone(), w.clone());
    let handler: Handler = std::sync::Arc::new(move |method, _path, _body| {
        let (fp, p, w2) = (fp.clone(), p.clone(), w2.clone());
        Box::pin(async move {
            if method == "POST" {
                bump(&p);
                fp.lock().unwrap().get_or_insert_with(Instant::now);
                return (409, r#"{"message":"exists"}"#.to_string());
            }
            let listed = fp
                .lock()
                .unwrap()
                .is_some_and(|t| t.elapsed() >= Duration::from_millis(300));
            (
                200,
                if listed {
                    listing("late", &w2, None)
                } else {
                    "[]".into()
                },
            )
        })
    });
    let (_d, sock) = scripted_server(handler).await;
    let t = Instant::now();
    let vm = client(&sock).ensure("race", &w, &opts()).await.unwrap();
    assert_eq!(vm.info.id, "late");
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert!(count(&posts) >= 1);
}

#[tokio::test]
async fn ensure_waits_while_the_vm_is_listed_as_starting_and_never_creates_it() {
    let ws = tempfile::tempdir().unwrap();
    let w = ws.path().to_str().unwrap().to_string();
    let (gets, posts) = (counter(), counter());
    let (g, p, w2) = (gets.clone(), posts.clone(), w.clone());
    let handler: Handler = std::sync::Arc::new(move |method, _path, _body| {
        let (g, p, w2) = (g.clone(), p.clone(), w2.clone());
        Box::pin(async move {
            if method == "POST" {
                bump(&p);
                return (409, r#"{"message":"exists"}"#.to_string());
            }
            let status = if bump(&g) <= 3 { "Starting" } else { "running" };
            (200, listing("s1", &w2, Some(status)))
        })
    });
    let (_d, sock) = scripted_server(handler).await;
    let vm = client(&sock).ensure("race", &w, &opts()).await.unwrap();
    assert_eq!(vm.info.id, "s1");
    assert!(!vm.info.starting);
    assert_eq!(count(&gets), 4);
    assert_eq!(count(&posts), 0);
}

#[tokio::test]
async fn a_starting_vm_with_another_workspace_is_a_conflict_at_once() {
    let ws = tempfile::tempdir().unwrap();
    let handler: Handler = std::sync::Arc::new(move |_method, _path, _body| {
        Box::pin(async move { (200, listing("s1", "/somewhere/else", Some("creating"))) })
    });
    let (_d, sock) = scripted_server(handler).await;
    let t = Instant::now();
    let e = client(&sock)
        .ensure("race", ws.path().to_str().unwrap(), &opts())
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::VmConflict);
    assert_eq!(e.props["existingWorkspaceDir"], "/somewhere/else");
    assert!(t.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn waiting_for_a_vm_that_never_shows_up_is_bounded_by_deadline_and_cancellation() {
    // 409 to every create, an empty list forever.
    let ws = tempfile::tempdir().unwrap();
    let w = ws.path().to_str().unwrap();
    let handler: Handler = std::sync::Arc::new(move |method, _path, _body| {
        Box::pin(async move {
            if method == "POST" {
                (409, r#"{"message":"exists"}"#.to_string())
            } else {
                (200, "[]".to_string())
            }
        })
    });
    let (_d, sock) = scripted_server(handler).await;
    let t = Instant::now();
    let e = client(&sock)
        .ensure(
            "race",
            w,
            &Call {
                timeout: Some(Duration::from_millis(300)),
                ..opts()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::Timeout);
    assert_eq!(e.props["timeoutMs"], 300);
    assert_eq!(e.props["vmName"], "race-vm");
    assert!(e.message.contains("409"), "{}", e.message);
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );

    let o = opts();
    let cancel = o.cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        cancel.cancel();
    });
    let t = Instant::now();
    let e = client(&sock).ensure("race", w, &o).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::Aborted);
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
}

/// A daemon like LocalSandboxd before it serialised creates: a create takes 300 ms and is listed only when
/// done; a create meanwhile gets 409 at once. Counts POSTs and successful creates.
fn racy_daemon(ws: String) -> (Handler, [std::sync::Arc<std::sync::atomic::AtomicUsize>; 2]) {
    let state = std::sync::Arc::new(std::sync::Mutex::new((false, None::<String>)));
    let (posts, created) = (counter(), counter());
    let (p, c) = (posts.clone(), created.clone());
    let handler: Handler = std::sync::Arc::new(move |method, _path, body| {
        let (state, p, c, ws) = (state.clone(), p.clone(), c.clone(), ws.clone());
        Box::pin(async move {
            if method == "GET" {
                let listed = state.lock().unwrap().1.clone();
                return (
                    200,
                    listed.map_or("[]".into(), |id| listing(&id, &ws, None)),
                );
            }
            bump(&p);
            {
                let mut s = state.lock().unwrap();
                if s.0 || s.1.is_some() {
                    return (409, r#"{"message":"exists"}"#.to_string());
                }
                s.0 = true;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            let req: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let id = format!("vm-{}", bump(&c));
            state.lock().unwrap().1 = Some(id.clone());
            let created = serde_json::json!({"vm_id": id, "vm_name": "race-vm",
                "vm_config": {"fileSharingDirectories": [req["workspace_dir"]]}});
            (200, created.to_string())
        })
    });
    (handler, [posts, created])
}

#[tokio::test]
async fn twenty_concurrent_ensures_in_one_process_send_one_create() {
    let ws = tempfile::tempdir().unwrap();
    let w = ws.path().to_str().unwrap().to_string();
    let (handler, [posts, created]) = racy_daemon(w.clone());
    let (_d, sock) = scripted_server(handler).await;
    // Separate clients on one socket: the turn is per socket and agent, not per client.
    let ids = futures::future::join_all((0..20).map(|_| {
        let (c, w) = (client(&sock), w.clone());
        async move { c.ensure("race", &w, &opts()).await.map(|vm| vm.info.id) }
    }))
    .await;
    for id in &ids {
        assert_eq!(id.as_ref().unwrap(), "vm-1");
    }
    assert_eq!(count(&created), 1);
    assert_eq!(count(&posts), 1);
}

#[tokio::test]
async fn concurrent_ensures_that_do_not_share_a_turn_wait_out_the_409() {
    // Each caller reaches the socket through its own symlink, so the in-process turn does not apply: as with
    // callers in separate processes, all but one get 409 while the VM is not listed yet, and must wait.
    let ws = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let w = ws.path().to_str().unwrap().to_string();
    let (handler, [posts, created]) = racy_daemon(w.clone());
    let (d, sock) = scripted_server(handler).await;
    let links: Vec<PathBuf> = (0..21)
        .map(|i| {
            let l = d.path().join(format!("l{i}.sock"));
            std::os::unix::fs::symlink(&sock, &l).unwrap();
            l
        })
        .collect();
    let t = Instant::now();
    let results = futures::future::join_all(links.iter().enumerate().map(|(i, l)| {
        let c = client(l);
        // The last caller asks for another workspace while the first create is under way.
        let (w, delay) = if i == 20 {
            (other.path().to_str().unwrap().to_string(), 100)
        } else {
            (w.clone(), 0)
        };
        async move {
            tokio::time::sleep(Duration::from_millis(delay)).await;
            c.ensure("race", &w, &opts()).await.map(|vm| vm.info.id)
        }
    }))
    .await;
    for r in &results[..20] {
        assert_eq!(r.as_ref().unwrap(), "vm-1");
    }
    // The caller with another workspace learns of the conflict once the VM is listed.
    let e = results[20].as_ref().unwrap_err();
    assert_eq!(e.code, ErrorCode::VmConflict, "{}", e.message);
    assert_eq!(
        e.props["requestedWorkspaceDir"],
        other.path().to_str().unwrap()
    );
    assert_eq!(count(&created), 1);
    assert!(count(&posts) > 1, "the 409 path was not exercised");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
}

#[test]
fn listing_status_says_whether_a_vm_is_starting() {
    let body = r#"[{"vm_name":"a-vm"},{"vm_name":"b-vm","status":"creating"},{"vm_name":"c-vm","status":"STARTING"},
                   {"vm_name":"d-vm","status":"running"},{"vm_name":"e-vm","status":7}]"#;
    let starting: Vec<bool> = parse_list(body.as_bytes())
        .unwrap()
        .iter()
        .map(|v| v.starting)
        .collect();
    assert_eq!(starting, [false, true, true, false, false]);
}
