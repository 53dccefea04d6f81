//! In-process fake daemons for what a real server will not produce: HTML, a cut upgrade, a 101 without
//! `Sandboxes-Exec-Id`, an `api_version` out of range, 401/404/409/503, a list-env refusal, a refused upload
//! route. Each test checks the typed error and that the same client still works afterwards.

use super::client::{check_version, validate_sandbox_name, VersionMode};
use super::*;
use crate::core::backend::SandboxSpec;
use crate::core::error::ErrorCode;
use crate::core::exec::ExecSpec;
use crate::core::Call;
use bytes::Bytes;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// One request as the fake saw it.
#[derive(Debug, Clone)]
struct Req {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Req {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_default()
    }
    fn header(&self, k: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(h, _)| h.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.as_str())
    }
}

/// What the fake answers.
enum Resp {
    Json(u16, &'static str, String),
    /// Bytes written as they are, then the connection is closed.
    Raw(Vec<u8>),
    /// Close without answering.
    Close,
    /// 101 (with `exec_id` if any), then: optionally read stdin to EOF and echo it on stdout, then `frames`.
    Upgrade {
        exec_id: Option<String>,
        echo_stdin: bool,
        frames: Vec<u8>,
    },
}

fn json(status: u16, body: serde_json::Value) -> Resp {
    Resp::Json(status, "application/json", body.to_string())
}

fn frame(kind: u8, data: &[u8]) -> Vec<u8> {
    let mut f = vec![kind, 0, 0, 0];
    f.extend_from_slice(&(data.len() as u32).to_be_bytes());
    f.extend_from_slice(data);
    f
}

type Handler = Arc<dyn Fn(&Req) -> Resp + Send + Sync>;

struct Fake {
    _dir: tempfile::TempDir,
    path: PathBuf,
    seen: Arc<Mutex<Vec<Req>>>,
}

impl Fake {
    fn client(&self) -> SbxClient {
        SbxClient::at(Endpoint::Unix(self.path.clone()), None)
    }
    fn seen(&self) -> Vec<Req> {
        self.seen.lock().unwrap().clone()
    }
}

async fn read_request(conn: &mut tokio::net::UnixStream) -> Option<Req> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let path = first.next()?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[end + 4..].to_vec();
    while body.len() < len {
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Req {
        method,
        path,
        headers,
        body,
    })
}

fn fake(handler: impl Fn(&Req) -> Resp + Send + Sync + 'static) -> Fake {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sandboxd.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let handler: Handler = Arc::new(handler);
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let handler = handler.clone();
            let log = log.clone();
            tokio::spawn(async move {
                let Some(req) = read_request(&mut conn).await else {
                    return;
                };
                log.lock().unwrap().push(req.clone());
                match handler(&req) {
                    Resp::Json(status, ct, body) => {
                        let head = format!(
                            "HTTP/1.1 {status} X\r\ncontent-type: {ct}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                            body.len()
                        );
                        let _ = conn.write_all(head.as_bytes()).await;
                        let _ = conn.write_all(body.as_bytes()).await;
                    }
                    Resp::Raw(b) => {
                        let _ = conn.write_all(&b).await;
                    }
                    Resp::Close => {}
                    Resp::Upgrade {
                        exec_id,
                        echo_stdin,
                        frames,
                    } => {
                        let mut head = String::from(
                            "HTTP/1.1 101 UPGRADED\r\nconnection: Upgrade\r\nupgrade: tcp\r\n\
                             content-type: application/vnd.docker.raw-stream\r\n",
                        );
                        if let Some(id) = exec_id {
                            head.push_str(&format!("sandboxes-exec-id: {id}\r\n"));
                        }
                        head.push_str("\r\n");
                        let _ = conn.write_all(head.as_bytes()).await;
                        if echo_stdin {
                            let mut stdin = Vec::new();
                            let _ = conn.read_to_end(&mut stdin).await;
                            let _ = conn.write_all(&frame(1, &stdin)).await;
                        }
                        let _ = conn.write_all(&frames).await;
                    }
                }
                let _ = conn.shutdown().await;
            });
        }
    });
    Fake {
        _dir: dir,
        path,
        seen,
    }
}

fn health(api: &str) -> Resp {
    json(
        200,
        serde_json::json!({"status":"ok","version":"v0.38.0","api_version":api,"revision":"abc","release":true,"extra":1}),
    )
}

fn opts() -> Call {
    Call::default()
}

fn code(r: crate::core::error::Result<impl std::fmt::Debug>) -> &'static str {
    r.unwrap_err().code.as_str()
}

#[tokio::test]
async fn the_version_gate_names_the_daemon_and_the_range() {
    for (api, strict, lenient) in [
        ("0.26.0", true, true),
        ("v0.26.3", true, true),
        ("0.30.1", false, true),
        ("0.25.9", false, false),
        ("1.0.0", false, false),
        ("", false, false),
        ("banana", false, false),
    ] {
        let h = DaemonHealth {
            version: "v9".into(),
            api_version: api.into(),
            ..Default::default()
        };
        assert_eq!(
            check_version(&h, VersionMode::Strict).is_ok(),
            strict,
            "{api}"
        );
        assert_eq!(
            check_version(&h, VersionMode::Lenient).is_ok(),
            lenient,
            "{api}"
        );
        assert!(check_version(&h, VersionMode::Off).is_ok());
    }
    let f = fake(|_| health("2.1.0"));
    let e = SbxClient::connect_to(
        vec![Endpoint::Unix(f.path.clone())],
        &ConnectOptions::default(),
        &opts(),
    )
    .await
    .err()
    .unwrap();
    assert_eq!(e.code, ErrorCode::SbxVersionUnsupported);
    assert_eq!(e.props["daemonVersion"], "v0.38.0");
    assert_eq!(e.props["apiVersion"], "2.1.0");
    assert_eq!(e.props["supportedRange"], ">=0.26.0 <1.0.0");
    assert!(e.message.contains("v0.38.0") && e.message.contains("2.1.0"));
}

#[tokio::test]
async fn discovery_tries_every_candidate_in_order_and_lists_them() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.sock");
    let file = dir.path().join("file.sock");
    std::fs::write(&file, b"").unwrap();
    let dead = dir.path().join("dead.sock");
    drop(std::os::unix::net::UnixListener::bind(&dead).unwrap());
    let live = fake(|r| match r.path.as_str() {
        "/daemon/health" => health("0.26.0"),
        _ => json(404, serde_json::json!({"message":"Not Found"})),
    });
    let list = |with_live: bool| {
        let mut v = vec![
            Endpoint::Unix(missing.clone()),
            Endpoint::Unix(file.clone()),
            Endpoint::Unix(dead.clone()),
        ];
        if with_live {
            v.push(Endpoint::Unix(live.path.clone()));
        }
        v
    };
    let (c, h) = SbxClient::connect_to(list(true), &ConnectOptions::default(), &opts())
        .await
        .unwrap();
    assert_eq!(h.api_version, "0.26.0");
    assert_eq!(c.endpoint(), &Endpoint::Unix(live.path.clone()));
    let e = SbxClient::connect_to(list(false), &ConnectOptions::default(), &opts())
        .await
        .err()
        .unwrap();
    assert_eq!(e.code, ErrorCode::SandboxdUnavailable);
    let tried = e.props["triedPaths"].as_array().unwrap();
    assert_eq!(tried.len(), 3);
    assert!(tried[0]
        .as_str()
        .unwrap()
        .contains("missing.sock (no such socket)"));
    assert!(tried[1]
        .as_str()
        .unwrap()
        .contains("file.sock (not a socket)"));
    assert!(tried[2].as_str().unwrap().contains("dead.sock"));
    assert!(e.message.contains("missing.sock") && e.message.contains("dead.sock"));
}

/// The bad-input table: each row is a typed error, nothing reaches the daemon for input errors, and the client
/// keeps working afterwards.
#[tokio::test]
async fn bad_input_and_bad_answers_are_typed_and_the_client_survives() {
    let f = fake(|r| {
        let p = r.path.as_str();
        match (r.method.as_str(), p) {
            ("GET", "/daemon/health") => health("0.26.0"),
            ("GET", "/sandbox") => json(
                200,
                serde_json::json!([{"name":"ok1","status":"running","new_field":{"x":1}}]),
            ),
            ("GET", "/sandbox/html") => {
                Resp::Json(200, "text/html", "<html><body>proxy</body></html>".into())
            }
            ("GET", "/sandbox/nologin") => json(
                401,
                serde_json::json!({"message":"no valid user session found, please sign in to Docker to proceed"}),
            ),
            ("GET", "/sandbox/degraded") => json(
                503,
                serde_json::json!({"message":"daemon degraded: vm backend down"}),
            ),
            ("GET", "/sandbox/gone")
            | ("DELETE", "/sandbox/gone?force=false")
            | ("DELETE", "/sandbox/gone?force=true") => {
                json(404, serde_json::json!({"message":"sandbox gone not found"}))
            }
            ("POST", "/sandbox") => {
                json(409, serde_json::json!({"message":"sandbox already exists"}))
            }
            ("GET", p) if p.starts_with("/sandbox/stopped/files") => json(
                409,
                serde_json::json!({"message":"sandbox stopped is not running"}),
            ),
            ("GET", p) if p.starts_with("/sandbox/ok1/files") => json(
                404,
                serde_json::json!({"message":"path /nope not found in sandbox ok1"}),
            ),
            ("POST", "/sandbox/ok1/save") => {
                json(405, serde_json::json!({"message":"Method Not Allowed"}))
            }
            ("POST", "/sandbox/cut/exec/attach") => Resp::Close,
            ("POST", "/sandbox/noid/exec/attach") => Resp::Upgrade {
                exec_id: None,
                echo_stdin: false,
                frames: vec![],
            },
            ("POST", "/sandbox/halfhead/exec/attach") => Resp::Raw(b"HTTP/1.1 101 Swi".to_vec()),
            ("POST", "/sandbox/busy/exec/attach") => json(
                500,
                serde_json::json!({"message":"unable to find user nobody2"}),
            ),
            _ => json(404, serde_json::json!({"message":"Not Found"})),
        }
    });
    let c = f.client();
    let ws = tempfile::tempdir().unwrap();
    let ws_s = ws.path().to_str().unwrap().to_string();
    let spec = |name: Option<&str>, agent: &str, workspace: &str| SandboxSpec {
        name: name.map(str::to_string),
        agent: agent.into(),
        workspace: workspace.into(),
        ..Default::default()
    };
    let long = "a".repeat(64);
    let o = opts();
    let mut rows: Vec<(&str, &str, &'static str)> = Vec::new();
    // Input rejected before any request.
    for (label, name) in [
        ("1-char name", "a"),
        ("64-char name", long.as_str()),
        ("underscore", "a_b"),
        ("leading dash", "-ab"),
        ("trailing dot", "ab."),
        ("empty label", "a..b"),
        ("slash", "a/b"),
        ("space", "a b"),
        ("unicode", "café"),
        ("empty", ""),
    ] {
        rows.push((label, name, code(c.get(name, &o).await)));
    }
    rows.push((
        "relative workspace",
        "",
        code(c.create(&spec(Some("ok1"), "shell", "rel/dir"), &o).await),
    ));
    rows.push((
        "missing workspace",
        "",
        code(
            c.create(&spec(Some("ok1"), "shell", "/no/such/dir/x"), &o)
                .await,
        ),
    ));
    rows.push((
        "empty agent",
        "",
        code(c.create(&spec(Some("ok1"), "", &ws_s), &o).await),
    ));
    let mut bad_mem = spec(Some("ok1"), "shell", &ws_s);
    bad_mem.memory = Some("lots".into());
    rows.push(("bad memory", "", code(c.create(&bad_mem, &o).await)));
    let mut bad_tpl = spec(Some("ok1"), "shell", &ws_s);
    bad_tpl.template = Some("Bad Template!".into());
    rows.push((
        "unusable template ref",
        "",
        code(c.create(&bad_tpl, &o).await),
    ));
    rows.push((
        "ensure without a name",
        "",
        code(c.ensure(&spec(None, "shell", &ws_s), &o).await),
    ));
    let empty_cmd = ExecSpec::default();
    rows.push((
        "empty command",
        "",
        code(c.exec("ok1", empty_cmd, CancellationToken::new()).await),
    ));
    let before = f.seen().len();
    assert_eq!(before, 0, "input errors must not reach the daemon");
    // Answers the daemon gives.
    rows.push(("HTML answer", "html", code(c.get("html", &o).await)));
    rows.push((
        "401 no session",
        "nologin",
        code(c.get("nologin", &o).await),
    ));
    rows.push((
        "503 degraded",
        "degraded",
        code(c.get("degraded", &o).await),
    ));
    rows.push((
        "404 remove",
        "gone",
        code(c.remove("gone", false, &o).await),
    ));
    rows.push((
        "409 create",
        "",
        code(c.create(&spec(Some("ok1"), "shell", &ws_s), &o).await),
    ));
    rows.push((
        "409 stopped files",
        "stopped",
        code(c.read_file("stopped", "/etc/hosts", &o).await),
    ));
    rows.push((
        "404 path",
        "ok1",
        code(c.read_file("ok1", "/nope", &o).await),
    ));
    rows.push(("unmatched route", "ok1", code(c.ports("ok1", &o).await)));
    rows.push(("405 save", "ok1", code(c.save("ok1", "me/tpl:1", &o).await)));
    let run = |n: &'static str| {
        let c = c.clone();
        async move {
            let spec = ExecSpec {
                cmd: vec!["true".into()],
                ..Default::default()
            };
            code(c.exec(n, spec, CancellationToken::new()).await)
        }
    };
    rows.push(("cut upgrade", "cut", run("cut").await));
    rows.push(("101 without exec id", "noid", run("noid").await));
    rows.push(("half a 101 head", "halfhead", run("halfhead").await));
    rows.push(("exec refused 500", "busy", run("busy").await));
    let expected = [
        ("1-char name", "ERR_INVALID_ARGUMENT"),
        ("64-char name", "ERR_INVALID_ARGUMENT"),
        ("underscore", "ERR_INVALID_ARGUMENT"),
        ("leading dash", "ERR_INVALID_ARGUMENT"),
        ("trailing dot", "ERR_INVALID_ARGUMENT"),
        ("empty label", "ERR_INVALID_ARGUMENT"),
        ("slash", "ERR_INVALID_ARGUMENT"),
        ("space", "ERR_INVALID_ARGUMENT"),
        ("unicode", "ERR_INVALID_ARGUMENT"),
        ("empty", "ERR_INVALID_ARGUMENT"),
        ("relative workspace", "ERR_INVALID_ARGUMENT"),
        ("missing workspace", "ERR_INVALID_ARGUMENT"),
        ("empty agent", "ERR_INVALID_ARGUMENT"),
        ("bad memory", "ERR_INVALID_ARGUMENT"),
        ("unusable template ref", "ERR_INVALID_ARGUMENT"),
        ("ensure without a name", "ERR_INVALID_ARGUMENT"),
        ("empty command", "ERR_INVALID_ARGUMENT"),
        ("HTML answer", "ERR_SANDBOXD_PROTOCOL"),
        ("401 no session", "ERR_SBX_NOT_LOGGED_IN"),
        ("503 degraded", "ERR_SBX_DEGRADED"),
        ("404 remove", "ERR_SANDBOX_NOT_FOUND"),
        ("409 create", "ERR_SANDBOX_CONFLICT"),
        ("409 stopped files", "ERR_SANDBOX_STOPPED"),
        ("404 path", "ERR_PATH_NOT_FOUND"),
        ("unmatched route", "ERR_SBX_UNSUPPORTED"),
        ("405 save", "ERR_SBX_UNSUPPORTED"),
        ("cut upgrade", "ERR_SANDBOXD_PROTOCOL"),
        ("101 without exec id", "ERR_SANDBOXD_PROTOCOL"),
        ("half a 101 head", "ERR_SANDBOXD_PROTOCOL"),
        ("exec refused 500", "ERR_EXEC_FAILED"),
    ];
    let got: Vec<(&str, &str)> = rows.iter().map(|(l, _, c)| (*l, *c)).collect();
    assert_eq!(got, expected);
    assert!(rows.len() >= 25);
    // The details users need are kept.
    let e = c.get("nologin", &o).await.unwrap_err();
    assert!(e.message.contains("sbx login"));
    assert_eq!(
        e.props["daemonMessage"],
        "no valid user session found, please sign in to Docker to proceed"
    );
    assert_eq!(e.props["status"], 401);
    let e = c.get("degraded", &o).await.unwrap_err();
    assert_eq!(e.props["daemonMessage"], "daemon degraded: vm backend down");
    let e = run_noid(&c).await;
    assert_eq!(e.props["header"], "Sandboxes-Exec-Id");
    // 404 on get is "absent"; force remove of a missing sandbox succeeds.
    assert!(c.get("gone", &o).await.unwrap().is_none());
    c.remove("gone", true, &o).await.unwrap();
    // Still usable: unknown fields tolerated.
    let list = c.list(&o).await.unwrap();
    assert_eq!(
        (list.len(), list[0].name.as_str(), list[0].status.as_str()),
        (1, "ok1", "running")
    );
}

async fn run_noid(c: &SbxClient) -> crate::core::error::Error {
    let spec = ExecSpec {
        cmd: vec!["true".into()],
        ..Default::default()
    };
    c.exec("noid", spec, CancellationToken::new())
        .await
        .unwrap_err()
}

#[test]
fn hostname_rules() {
    for ok in ["ab", "a-b", "a.b", "A1", &"x".repeat(63)] {
        validate_sandbox_name(ok).unwrap();
    }
}

#[tokio::test]
async fn create_sends_the_snake_case_body() {
    let f = fake(|r| match r.method.as_str() {
        "POST" => json(
            201,
            serde_json::json!({"name":"dev","agent":"shell","status":"running","workspace":"/w","withheld":[]}),
        ),
        _ => json(404, serde_json::json!({"message":"Not Found"})),
    });
    let ws = tempfile::tempdir().unwrap();
    let extra = tempfile::tempdir().unwrap();
    let w = ws.path().to_str().unwrap().to_string();
    let spec = SandboxSpec {
        name: Some("dev".into()),
        agent: "shell".into(),
        workspace: w.clone(),
        template: Some("docker/sandbox-templates:shell".into()),
        cpus: Some(2),
        memory: Some("2g".into()),
        environment: [("A".to_string(), "1".to_string())].into(),
        additional_workspaces: vec![(extra.path().to_str().unwrap().into(), true)],
        labels: [("team".to_string(), "x".to_string())].into(),
        expiry: None,
    };
    let s = f.client().create(&spec, &opts()).await.unwrap();
    assert_eq!((s.name.as_str(), s.status.as_str()), ("dev", "running"));
    let req = &f.seen()[0];
    assert_eq!(
        (req.method.as_str(), req.path.as_str()),
        ("POST", "/sandbox")
    );
    assert_eq!(req.header("content-type"), Some("application/json"));
    let b = req.json();
    let mut keys: Vec<&str> = b.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "additional_workspaces",
            "agent",
            "cpus",
            "environment",
            "labels",
            "memory",
            "name",
            "template",
            "workspace"
        ]
    );
    assert_eq!(b["additional_workspaces"][0]["read_only"], true);
    assert_eq!(b["memory"], "2g");
    assert_eq!(b["cpus"], 2);
}

#[tokio::test]
async fn ensure_detects_drift_and_starts_a_stopped_sandbox() {
    let ws = tempfile::tempdir().unwrap();
    let w = ws.path().to_str().unwrap().to_string();
    let w2 = w.clone();
    let started = Arc::new(Mutex::new(false));
    let s2 = started.clone();
    let f = fake(move |r| match (r.method.as_str(), r.path.as_str()) {
        ("GET", "/sandbox/dev") => {
            let st = if *s2.lock().unwrap() {
                "running"
            } else {
                "stopped"
            };
            json(
                200,
                serde_json::json!({"name":"dev","agent":"shell","workspace":w2,"status":st}),
            )
        }
        ("GET", "/sandbox/other") => json(
            200,
            serde_json::json!({"name":"other","agent":"claude","workspace":"/elsewhere","status":"running"}),
        ),
        ("POST", "/sandbox/dev/start") => {
            *s2.lock().unwrap() = true;
            json(200, serde_json::json!({}))
        }
        _ => json(404, serde_json::json!({"message":"Not Found"})),
    });
    let c = f.client();
    let mut spec = SandboxSpec {
        name: Some("dev".into()),
        agent: "shell".into(),
        workspace: w.clone(),
        ..Default::default()
    };
    let s = c.ensure(&spec, &opts()).await.unwrap();
    assert_eq!(s.status, "running");
    assert!(*started.lock().unwrap());
    spec.name = Some("other".into());
    let e = c.ensure(&spec, &opts()).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::SandboxConflict);
    let drift = e.props["drift"].as_array().unwrap();
    assert_eq!(drift.len(), 2, "{drift:?}");
    assert!(f
        .seen()
        .iter()
        .all(|r| r.method != "POST" || r.path != "/sandbox"));
}

/// Exec over a fake upgrade: the request carries the upgrade headers, frames are demuxed, stdin is half-closed
/// (the fake reads to EOF before answering), the exit code comes from the exec-state route.
#[tokio::test]
async fn exec_upgrade_frames_stdin_and_exit_code() {
    let f = fake(|r| match (r.method.as_str(), r.path.as_str()) {
        ("POST", "/sandbox/dev/exec/attach") => {
            let mut frames = frame(2, b"warn\n");
            frames.extend(frame(1, b"done"));
            Resp::Upgrade {
                exec_id: Some("e1".into()),
                echo_stdin: true,
                frames,
            }
        }
        ("GET", "/sandbox/dev/exec/e1") => json(
            200,
            serde_json::json!({"id":"e1","running":false,"exit_code":3}),
        ),
        _ => json(404, serde_json::json!({"message":"Not Found"})),
    });
    let c = f.client();
    let spec = ExecSpec {
        cmd: vec!["cat".into()],
        env: vec![("K".into(), "V".into())],
        cwd: Some("/w".into()),
        stdin: Some(Bytes::from_static(b"hello")),
        ..Default::default()
    };
    let out = c.exec("dev", spec, CancellationToken::new()).await.unwrap();
    assert_eq!(out.stdout, b"hellodone");
    assert_eq!(out.stderr, b"warn\n");
    assert_eq!(out.exit_code, Some(3));
    let req = &f.seen()[0];
    assert_eq!(req.header("upgrade"), Some("tcp"));
    assert_eq!(req.header("connection"), Some("Upgrade"));
    let b = req.json();
    assert_eq!(b["cmd"], serde_json::json!(["cat"]));
    assert_eq!(b["working_dir"], "/w");
    assert_eq!(b["tty"], false);
    assert_eq!(b["env"][0], "K=V");
    assert!(b["env"][1]
        .as_str()
        .unwrap()
        .starts_with("SANDBOXD_EXEC_ID="));
    // max_output_bytes keeps a prefix and says so.
    let spec = ExecSpec {
        cmd: vec!["cat".into()],
        stdin: Some(Bytes::from_static(b"0123456789")),
        max_output_bytes: Some(4),
        ..Default::default()
    };
    let out = c.exec("dev", spec, CancellationToken::new()).await.unwrap();
    assert_eq!((out.stdout.as_slice(), out.truncated), (&b"0123"[..], true));
}

/// An exec with an output sink hands the chosen streams' chunks over in order, past the cap, and still collects
/// the capped result; a closed receiver only stops the handing over.
#[tokio::test]
async fn exec_output_sink_gets_chosen_streams_uncapped() {
    let f = fake(|r| match (r.method.as_str(), r.path.as_str()) {
        ("POST", "/sandbox/dev/exec/attach") => {
            let mut frames = frame(1, b"one ");
            frames.extend(frame(2, b"err"));
            frames.extend(frame(1, b"two"));
            Resp::Upgrade {
                exec_id: Some("e1".into()),
                echo_stdin: false,
                frames,
            }
        }
        ("GET", "/sandbox/dev/exec/e1") => json(
            200,
            serde_json::json!({"id":"e1","running":false,"exit_code":0}),
        ),
        _ => json(404, serde_json::json!({"message":"Not Found"})),
    });
    let c = f.client();
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let spec = ExecSpec {
        cmd: vec!["x".into()],
        max_output_bytes: Some(2),
        output: Some(crate::core::exec::OutputSink {
            tx,
            stdout: true,
            stderr: false,
        }),
        ..Default::default()
    };
    let run = tokio::spawn(async move { c.exec("dev", spec, CancellationToken::new()).await });
    let mut got = Vec::new();
    while let Some(chunk) = rx.recv().await {
        let chunk = chunk.unwrap();
        assert!(!chunk.is_stderr());
        got.extend_from_slice(chunk.data());
    }
    assert_eq!(got, b"one two");
    let out = run.await.unwrap().unwrap();
    assert_eq!((out.stdout.as_slice(), out.truncated), (&b"on"[..], true));
    assert_eq!(out.stderr, b"er");

    let (tx, rx) = tokio::sync::mpsc::channel(1);
    drop(rx);
    let spec = ExecSpec {
        cmd: vec!["x".into()],
        output: Some(crate::core::exec::OutputSink {
            tx,
            stdout: true,
            stderr: true,
        }),
        ..Default::default()
    };
    let out = f
        .client()
        .exec("dev", spec, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(out.stdout, b"one two");
}

#[tokio::test]
async fn exec_env_form_is_probed_once() {
    let f = fake(|r| match (r.method.as_str(), r.path.as_str()) {
        ("POST", "/sandbox/dev/exec/attach") => {
            if r.json()["env"].is_array() {
                json(
                    400,
                    serde_json::json!({"message":"json: cannot unmarshal array into Go struct field ExecRequest.env of type map[string]string"}),
                )
            } else {
                Resp::Upgrade {
                    exec_id: Some("e2".into()),
                    echo_stdin: false,
                    frames: frame(1, b"ok"),
                }
            }
        }
        ("GET", "/sandbox/dev/exec/e2") => {
            json(200, serde_json::json!({"running":false,"exit_code":0}))
        }
        _ => json(404, serde_json::json!({"message":"Not Found"})),
    });
    let c = f.client();
    for _ in 0..2 {
        let spec = ExecSpec {
            cmd: vec!["x".into()],
            ..Default::default()
        };
        let out = c.exec("dev", spec, CancellationToken::new()).await.unwrap();
        assert_eq!(
            (out.stdout.as_slice(), out.exit_code),
            (&b"ok"[..], Some(0))
        );
    }
    let attaches: Vec<bool> = f
        .seen()
        .iter()
        .filter(|r| r.path.ends_with("/attach"))
        .map(|r| r.json()["env"].is_array())
        .collect();
    assert_eq!(attaches, [true, false, false]);
}

#[tokio::test]
async fn a_refused_upload_route_falls_back_to_exec_tar() {
    let f = fake(|r| match (r.method.as_str(), r.path.as_str()) {
        ("PUT", _) => json(404, serde_json::json!({"message":"Not Found"})),
        ("POST", "/sandbox/dev/exec/attach") => Resp::Upgrade {
            exec_id: Some("t1".into()),
            echo_stdin: true,
            frames: vec![],
        },
        ("GET", "/sandbox/dev/exec/t1") => {
            json(200, serde_json::json!({"running":false,"exit_code":0}))
        }
        _ => json(404, serde_json::json!({"message":"Not Found"})),
    });
    let c = f.client();
    assert_eq!(c.put_route(), None);
    c.put_archive("dev", "/w", Bytes::from_static(b"TARDATA"), &opts())
        .await
        .unwrap();
    assert_eq!(c.put_route(), Some(false));
    c.put_archive("dev", "/w", Bytes::from_static(b"TARDATA"), &opts())
        .await
        .unwrap();
    let seen = f.seen();
    let puts = seen.iter().filter(|r| r.method == "PUT").count();
    assert_eq!(puts, 1, "the refused route is not tried again");
    let attach = seen.iter().find(|r| r.path.ends_with("/attach")).unwrap();
    assert_eq!(
        attach.json()["cmd"],
        serde_json::json!(["tar", "-x", "-C", "/w"])
    );
}

#[tokio::test]
async fn a_broken_stream_is_interrupted_with_partial_output() {
    let f = fake(|r| match (r.method.as_str(), r.path.as_str()) {
        ("POST", "/sandbox/dev/exec/attach") => {
            let mut frames = frame(1, b"partial");
            // Not a stdcopy header: the stream is broken after the first frame.
            frames.extend_from_slice(&[9, 9, 9, 9, 9, 9, 9, 9]);
            Resp::Upgrade {
                exec_id: Some("c1".into()),
                echo_stdin: false,
                frames,
            }
        }
        ("GET", "/sandbox/dev/exec/c1") => {
            json(200, serde_json::json!({"running":false,"exit_code":0}))
        }
        _ => json(404, serde_json::json!({"message":"Not Found"})),
    });
    let spec = ExecSpec {
        cmd: vec!["x".into()],
        ..Default::default()
    };
    let e = f
        .client()
        .exec("dev", spec, CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::StreamInterrupted);
    assert_eq!(e.props["receivedStdoutBytes"], 7);
    assert_eq!(e.result.unwrap().stdout, b"partial");
}

#[tokio::test]
async fn spawned_output_is_read_in_runs_like_a_container_process() {
    let f = fake(|r| match (r.method.as_str(), r.path.as_str()) {
        ("POST", "/sandbox/dev/exec/attach") => {
            let mut frames = Vec::new();
            for _ in 0..40 {
                frames.extend(frame(1, &[b'a'; 8192]));
            }
            frames.extend(frame(2, b"err"));
            frames.extend(frame(1, b"tail"));
            Resp::Upgrade {
                exec_id: Some("r1".into()),
                echo_stdin: false,
                frames,
            }
        }
        ("GET", "/sandbox/dev/exec/r1") => {
            json(200, serde_json::json!({"running":false,"exit_code":0}))
        }
        _ => json(404, serde_json::json!({"message":"Not Found"})),
    });
    let spec = || ExecSpec {
        cmd: vec!["x".into()],
        ..Default::default()
    };
    let c = f.client();
    // Everything queued (the fake writes it at once, locally): a run takes all of one stream that is waiting,
    // as the frames it came in, so a JS reader pays one round trip for it instead of one per frame.
    let p = c
        .spawn("dev", spec(), CancellationToken::new())
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let h: &dyn crate::core::backend::ProcessHandle = &p;
    let run = h.next_run(1 << 20, false).await.unwrap().unwrap();
    assert_eq!((run.stderr, run.len), (false, 40 * 8192));
    assert!(run.parts.len() >= 2, "{} parts", run.parts.len());
    let run = h.next_run(1 << 20, true).await.unwrap().unwrap();
    assert_eq!((run.stderr, run.len), (true, 3));
    let run = h.next_run(2, false).await.unwrap().unwrap();
    assert_eq!((run.stderr, run.len), (false, 2));
    let run = h.next_run(1 << 20, false).await.unwrap().unwrap();
    assert_eq!(
        run.into_chunk().into_parts(),
        (false, Bytes::from_static(b"il"))
    );
    assert!(h.next_run(1 << 20, false).await.is_none());
    // next() merges what is queued of one stream up to MAX_CHUNK.
    let p = c
        .spawn("dev", spec(), CancellationToken::new())
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let first = p.next().await.unwrap().unwrap();
    assert_eq!(first.into_parts().1.len(), crate::core::exec::MAX_CHUNK);
    let second = p.next().await.unwrap().unwrap();
    assert_eq!(
        second.into_parts().1.len(),
        40 * 8192 - crate::core::exec::MAX_CHUNK
    );
}
