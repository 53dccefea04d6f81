//! The endpoint against a real container in the test engine (`source /tmp/devd.env`: DOCKER_HOST and
//! SANDBOXD_TEST_IMAGE), served on a temporary Unix socket, driven over HTTP (UnixHttp, a raw hyper client) and
//! a WebSocket client; every JSON body and frame it sends is checked against the v1 contract.

use super::Endpoint;
use crate::core::call::Call;
use crate::core::container::{self, Container, RunSpec};
use crate::core::engine::{local_socket, Engine};
use crate::core::http::UnixHttp;
use crate::core::v1::contract::contract;
use base64::Engine as _;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::Method;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UnixStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const WAIT: Duration = Duration::from_secs(30);

/// A container, its endpoint served on a socket; the container is removed on drop.
struct Fixture {
    ep: Arc<Endpoint>,
    sock: PathBuf,
    http: UnixHttp,
    container: Container,
    _dir: tempfile::TempDir,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let c = self.container.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async { c.remove(true, &Call::default()).await })
        })
        .join();
    }
}

async fn fixture() -> Fixture {
    let image = std::env::var("SANDBOXD_TEST_IMAGE")
        .expect("SANDBOXD_TEST_IMAGE: run `set -a; source /tmp/devd.env; set +a` first");
    let engine = Engine::connect(&local_socket().expect("DOCKER_HOST"), &Call::default())
        .await
        .expect("the test engine answers");
    let c = container::run(
        engine,
        RunSpec {
            image,
            cmd: Some(vec!["sleep".into(), "3600".into()]),
            labels: [("sandboxd.test".to_string(), "v1endpoint".to_string())].into(),
            ..Default::default()
        },
        &Call::default(),
    )
    .await
    .expect("the test container starts");
    let ep = Endpoint::new(c.clone(), vec!["EP_VAR=from-endpoint".into()]);
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("ep.sock");
    serve(ep.clone(), &sock);
    Fixture {
        ep,
        http: UnixHttp::new(&sock),
        sock,
        container: c,
        _dir: dir,
    }
}

/// Serve `ep.route` on `path`, as LocalSandboxd does: hyper http1 with upgrades.
fn serve(ep: Arc<Endpoint>, path: &Path) {
    let l = tokio::net::UnixListener::bind(path).expect("bind");
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let ep = ep.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let ep = ep.clone();
                    async move { Ok::<_, std::convert::Infallible>(ep.route(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
}

/// Check a JSON body against operation `op`'s response `status` (or the `Error` schema for `op` = "").
fn check(op: &str, status: u16, body: &Value) {
    let r = if op.is_empty() {
        contract().check_schema("Error", body)
    } else {
        contract().check_response(op, status, body)
    };
    if let Err(e) = r {
        panic!("{op} {status} breaks the contract: {e:?}\n{body}");
    }
}

impl Fixture {
    /// A JSON request; the response is checked against `op`.
    async fn call(
        &self,
        op: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let r = self
            .http
            .request(
                method,
                path,
                body.map(|b| b.to_string().into_bytes()),
                64 << 20,
            )
            .await
            .expect("the endpoint answers");
        let v: Value = serde_json::from_slice(&r.body)
            .unwrap_or_else(|_| panic!("{op}: not JSON: {:?}", String::from_utf8_lossy(&r.body)));
        assert_eq!(r.content_type.as_deref(), Some("application/json"), "{op}");
        check(op, r.status, &v);
        (r.status, v)
    }

    /// A request with any body and headers; the raw answer.
    async fn raw(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (u16, hyper::HeaderMap, Bytes) {
        let s = UnixStream::connect(&self.sock).await.expect("connect");
        let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let mut b = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let res = tx
            .send_request(b.body(Full::new(Bytes::from(body))).expect("request"))
            .await
            .expect("response");
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let body = res.into_body().collect().await.expect("body").to_bytes();
        (status, headers, body)
    }

    /// `POST /v1/processes/exec`.
    async fn exec(&self, cmd: &[&str]) -> (i64, Vec<u8>, Vec<u8>, bool) {
        let (s, v) = self
            .call(
                "exec",
                Method::POST,
                "/v1/processes/exec",
                Some(json!({"cmd": cmd})),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        (
            v["exitCode"].as_i64().expect("exitCode"),
            B64.decode(v["stdout"].as_str().unwrap_or_default())
                .expect("b64"),
            B64.decode(v["stderr"].as_str().unwrap_or_default())
                .expect("b64"),
            v["incomplete"].as_bool().expect("incomplete"),
        )
    }

    async fn create(&self, body: Value) -> Value {
        let (s, v) = self
            .call("createProcess", Method::POST, "/v1/processes", Some(body))
            .await;
        assert_eq!(s, 201, "{v}");
        v
    }

    async fn get(&self, uid: &str) -> Value {
        let (s, v) = self
            .call(
                "getProcess",
                Method::GET,
                &format!("/v1/processes/{uid}"),
                None,
            )
            .await;
        assert_eq!(s, 200, "{v}");
        v
    }

    /// Wait for the process to exit; its Process resource.
    async fn exited(&self, uid: &str) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let v = self.get(uid).await;
            if v["state"] == "exited" {
                return v;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{uid} did not exit: {v}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn ws(&self, uid: &str, protocol: Option<&str>) -> Client {
        let s = UnixStream::connect(&self.sock).await.expect("connect");
        let mut req = format!("ws://localhost/v1/processes/{uid}/interact")
            .into_client_request()
            .expect("request");
        if let Some(p) = protocol {
            req.headers_mut()
                .insert("sec-websocket-protocol", p.parse().expect("header"));
        }
        let (ws, resp) = tokio_tungstenite::client_async(req, s)
            .await
            .expect("upgrade");
        let echoed = resp
            .headers()
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().unwrap_or_default().to_string());
        let expect = protocol
            .filter(|p| p.split(',').any(|x| x.trim() == "sandboxes.v1"))
            .map(|_| "sandboxes.v1".to_string());
        assert_eq!(echoed, expect);
        ws
    }
}

type Client = WebSocketStream<UnixStream>;

/// A server frame: a JSON text frame (checked: `ProcessOutput`, or `Error` when it has a `code`) or the close.
#[derive(Debug)]
enum Frame {
    Json(Value),
    Close(u16),
}

async fn recv(ws: &mut Client) -> Frame {
    loop {
        let m = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame within 30 s");
        return match m {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(t.as_str()).expect("text frames are JSON");
                let schema = if v.get("code").is_some() {
                    "Error"
                } else {
                    "ProcessOutput"
                };
                if let Err(e) = contract().check_schema(schema, &v) {
                    panic!("frame breaks {schema}: {e:?}\n{v}");
                }
                Frame::Json(v)
            }
            Some(Ok(Message::Close(f))) => Frame::Close(f.map_or(1005, |f| u16::from(f.code))),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(other)) => panic!("unexpected frame {other:?}"),
            Some(Err(_)) | None => Frame::Close(0),
        };
    }
}

async fn send(ws: &mut Client, v: Value) {
    if let Err(e) = contract().check_schema("InteractRequest", &v) {
        panic!("test frame breaks InteractRequest: {e:?}\n{v}");
    }
    ws.send(Message::text(v.to_string())).await.expect("send");
}

fn attach(uid: &str, resume: u64) -> Value {
    json!({"attach": {"name": format!("processes/{uid}"), "resumeFrom": resume.to_string()}})
}

/// Output read over interact until the exit: `(bytes per stream, last sequence, exited, close code)`. Sequences
/// must follow `last` one by one.
struct Drained {
    out: Vec<u8>,
    streams: Vec<String>,
    last: u64,
    exited: Value,
    close: u16,
}

async fn drain(ws: &mut Client, mut last: u64) -> Drained {
    let mut out = Vec::new();
    let mut streams = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no exit within 30 s; got {:?}",
            String::from_utf8_lossy(&out)
        );
        match recv(ws).await {
            Frame::Json(v) if v.get("chunk").is_some() => {
                let seq: u64 = v["chunk"]["streamSequence"]
                    .as_str()
                    .expect("int64 as a string")
                    .parse()
                    .expect("a number");
                assert_eq!(seq, last + 1, "sequences follow one by one");
                last = seq;
                out.extend(B64.decode(v["chunk"]["data"].as_str().unwrap()).unwrap());
                streams.push(v["chunk"]["stream"].as_str().unwrap().to_string());
            }
            Frame::Json(v) if v.get("heartbeat").is_some() => {}
            Frame::Json(v) if v.get("exited").is_some() => {
                let close = match recv(ws).await {
                    Frame::Close(c) => c,
                    f => panic!("after exited: {f:?}"),
                };
                return Drained {
                    out,
                    streams,
                    last,
                    exited: v["exited"].clone(),
                    close,
                };
            }
            f => panic!("unexpected {f:?}"),
        }
    }
}

/// Read frames until one carries `needle` in its chunk data (everything read is returned).
async fn until(ws: &mut Client, needle: &str, last: &mut u64) -> String {
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {needle:?} within 30 s; got {text:?}"
        );
        match recv(ws).await {
            Frame::Json(v) if v.get("chunk").is_some() => {
                let seq: u64 = v["chunk"]["streamSequence"]
                    .as_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!(seq > *last, "strictly increasing");
                *last = seq;
                text.push_str(&String::from_utf8_lossy(
                    &B64.decode(v["chunk"]["data"].as_str().unwrap()).unwrap(),
                ));
                if text.contains(needle) {
                    return text;
                }
            }
            Frame::Json(v) if v.get("heartbeat").is_some() => {}
            f => panic!("waiting for {needle:?} in {text:?}: {f:?}"),
        }
    }
}

/// The error frame and close code that end a refused session.
async fn refused(ws: &mut Client) -> (Value, u16) {
    let err = match recv(ws).await {
        Frame::Json(v) if v.get("code").is_some() => v,
        f => panic!("expected an error frame, got {f:?}"),
    };
    match recv(ws).await {
        Frame::Close(c) => (err, c),
        f => panic!("expected the close, got {f:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_runs_to_completion_with_exit_codes_and_bytes() {
    let f = fixture().await;
    let (code, out, err, incomplete) = f
        .exec(&["sh", "-c", "printf out; printf err >&2; exit 3"])
        .await;
    assert_eq!(
        (code, &out[..], &err[..], incomplete),
        (3, &b"out"[..], &b"err"[..], false)
    );
    let (code, out, _, _) = f.exec(&["printf", "\\000\\001\\377"]).await;
    assert_eq!((code, out), (0, vec![0u8, 1, 255]));
    // the endpoint's env, then the request's
    let (s, v) = f
        .call(
            "exec",
            Method::POST,
            "/v1/processes/exec",
            Some(json!({"cmd": ["sh", "-c", "echo $EP_VAR $X; pwd"], "env": {"X": "x"}, "workingDir": "/tmp"})),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        B64.decode(v["stdout"].as_str().unwrap()).unwrap(),
        b"from-endpoint x\n/tmp\n"
    );
    // the capture cap: the exit code is still the real one
    f.ep.set_limits(super::RETAIN_BYTES, 10);
    let (code, out, err, incomplete) = f.exec(&["sh", "-c", "head -c 100 /dev/zero; exit 4"]).await;
    assert_eq!((code, out.len() + err.len(), incomplete), (4, 10, true));
    let (_, out, _, incomplete) = f.exec(&["printf", "0123456789"]).await;
    assert_eq!(
        (out.len(), incomplete),
        (10, false),
        "exactly at the cap is complete"
    );
    f.ep.set_limits(super::RETAIN_BYTES, super::EXEC_CAPTURE_BYTES);
    // bad input rows
    for body in [
        json!({}),
        json!({"cmd": []}),
        json!({"cmd": ["true"], "bogus": 1}),
        json!({"cmd": "true"}),
        json!({"cmd": ["true"], "workingDir": "relative\n"}),
    ] {
        let (s, v) = f
            .call(
                "exec",
                Method::POST,
                "/v1/processes/exec",
                Some(body.clone()),
            )
            .await;
        assert_eq!(
            (s, v["code"].as_str()),
            (400, Some("invalidArgument")),
            "{body}: {v}"
        );
    }
    let (s, _, b) = f
        .raw(
            Method::POST,
            "/v1/processes/exec",
            &[("content-type", "application/json")],
            b"{not json".to_vec(),
        )
        .await;
    let v: Value = serde_json::from_slice(&b).unwrap();
    check("exec", s, &v);
    assert_eq!((s, v["code"].as_str()), (400, Some("invalidArgument")));
    // a program that is not there
    let (s, v) = f
        .call(
            "exec",
            Method::POST,
            "/v1/processes/exec",
            Some(json!({"cmd": ["no-such-program"]})),
        )
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (409, Some("failedPrecondition")),
        "{v}"
    );
    // unknown routes
    for (m, p) in [
        (Method::GET, "/v1/nothing"),
        (Method::DELETE, "/v1/processes"),
        (Method::GET, "/"),
    ] {
        let (s, v) = f.call("", m, p, None).await;
        assert_eq!((s, v["code"].as_str()), (404, Some("notFound")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_process_with_stdin_over_interact() {
    let f = fixture().await;
    let script = "while read l; do echo \"got $l\"; done; echo bye >&2; exit 7";
    let p = f
        .create(json!({"cmd": ["sh", "-c", script], "label": "reader", "session": "s1"}))
        .await;
    assert_eq!(
        (p["receiptKind"].as_str(), p["state"].as_str()),
        (Some("fresh"), Some("running"))
    );
    let uid = p["uid"].as_str().unwrap().to_string();
    assert_eq!(p["name"], format!("processes/{uid}"));
    // a label is unique per sandbox
    let (s, v) = f
        .call(
            "createProcess",
            Method::POST,
            "/v1/processes",
            Some(json!({"cmd": ["true"], "label": "reader"})),
        )
        .await;
    assert_eq!((s, v["code"].as_str()), (409, Some("alreadyExists")));

    let mut ws = f.ws(&uid, Some("sandboxes.v1")).await;
    send(&mut ws, attach(&uid, 0)).await;
    send(&mut ws, json!({"stdin": B64.encode("hello\n")})).await;
    let mut last = 0;
    let text = until(&mut ws, "got hello", &mut last).await;
    assert_eq!(text, "got hello\n");
    assert_eq!(last, 1, "the first chunk is sequence 1");
    send(&mut ws, json!({"stdin": B64.encode("two\n")})).await;
    until(&mut ws, "got two", &mut last).await;
    send(&mut ws, json!({"closeStdin": false})).await; // no effect
    send(&mut ws, json!({"closeStdin": true})).await;
    let d = drain(&mut ws, last).await;
    assert_eq!(d.out, b"bye\n");
    assert_eq!(d.streams, ["stderr"]);
    assert_eq!(d.exited["exitCode"], 7);
    assert_eq!(d.close, 1000);

    let v = f.exited(&uid).await;
    assert_eq!(
        (v["exitCode"].as_i64(), v["receiptKind"].as_str()),
        (Some(7), Some("unspecified"))
    );
    assert_eq!(v["lastStreamSequence"], d.last.to_string());

    // readOutput: whole chunks, the first always fits, the exit once nothing follows
    let (s, v) = f
        .call(
            "readOutput",
            Method::GET,
            &format!("/v1/processes/{uid}/output?resumeFrom=0&maxBytes=1"),
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["chunks"].as_array().unwrap().len(), 1);
    assert_eq!(v["nextResumeFrom"], "1");
    assert!(v.get("exited").is_none());
    let (_, v) = f
        .call(
            "readOutput",
            Method::GET,
            &format!("/v1/processes/{uid}/output"),
            None,
        )
        .await;
    let all: Vec<u8> = v["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| B64.decode(c["data"].as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(all, b"got hello\ngot two\nbye\n");
    assert_eq!(v["exited"]["exitCode"], 7);
    let (_, v) = f
        .call(
            "readOutput",
            Method::GET,
            &format!("/v1/processes/{uid}/output?resumeFrom={}", d.last),
            None,
        )
        .await;
    assert_eq!(
        (
            v["chunks"].as_array().unwrap().len(),
            v["nextResumeFrom"].as_str()
        ),
        (0, Some(&*d.last.to_string()))
    );
    assert_eq!(v["exited"]["exitCode"], 7);
    for q in ["resumeFrom=-1", "resumeFrom=x", "maxBytes=-2", "bogus=1"] {
        let (s, v) = f
            .call(
                "readOutput",
                Method::GET,
                &format!("/v1/processes/{uid}/output?{q}"),
                None,
            )
            .await;
        assert_eq!(
            (s, v["code"].as_str()),
            (400, Some("invalidArgument")),
            "{q}"
        );
    }
    let (s, v) = f
        .call(
            "readOutput",
            Method::GET,
            &format!("/v1/processes/{uid}/output?resumeFrom=999"),
            None,
        )
        .await;
    assert_eq!((s, v["code"].as_str()), (400, Some("outOfRange")));

    // Idempotency-Key: the same payload replays, another payload is refused
    let body = json!({"cmd": ["sleep", "60"], "session": "s2"});
    let post = |key: &'static str, body: Value| {
        let f = &f;
        async move {
            let (s, _, b) = f
                .raw(
                    Method::POST,
                    "/v1/processes",
                    &[
                        ("content-type", "application/json"),
                        ("idempotency-key", key),
                    ],
                    body.to_string().into_bytes(),
                )
                .await;
            let v: Value = serde_json::from_slice(&b).unwrap();
            check("createProcess", s, &v);
            (s, v)
        }
    };
    let (s1, first) = post("k1", body.clone()).await;
    let (s2, again) = post("k1", body.clone()).await;
    assert_eq!((s1, s2), (201, 201));
    assert_eq!(first["uid"], again["uid"]);
    assert_eq!(
        (first["receiptKind"].as_str(), again["receiptKind"].as_str()),
        (Some("fresh"), Some("replay"))
    );
    let (s, v) = post("k1", json!({"cmd": ["sleep", "61"]})).await;
    assert_eq!((s, v["code"].as_str()), (409, Some("failedPrecondition")));
    let sleeper = first["uid"].as_str().unwrap().to_string();

    // list: filters and pages
    let list = |q: &'static str| {
        let f = &f;
        async move {
            f.call(
                "listProcesses",
                Method::GET,
                &format!("/v1/processes{q}"),
                None,
            )
            .await
        }
    };
    let (_, v) = list("?filter=session%3Ds1").await;
    let uids: Vec<&str> = v["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["uid"].as_str().unwrap())
        .collect();
    assert_eq!(uids, [uid.as_str()]);
    let (_, v) = list("?filter=state=running,session=s2").await;
    assert_eq!(v["processes"][0]["uid"], sleeper.as_str());
    assert_eq!(v["processes"].as_array().unwrap().len(), 1);
    let (_, v) = list("?pageSize=1").await;
    assert_eq!(v["processes"].as_array().unwrap().len(), 1);
    assert_eq!(v["processes"][0]["uid"], uid.as_str(), "creation order");
    let token = v["nextPageToken"].as_str().unwrap().to_string();
    assert!(!token.is_empty());
    let (_, v) = f
        .call(
            "listProcesses",
            Method::GET,
            &format!("/v1/processes?pageSize=1&pageToken={token}"),
            None,
        )
        .await;
    assert_eq!(v["processes"][0]["uid"], sleeper.as_str());
    assert_eq!(v["nextPageToken"], "");
    for q in [
        "?filter=color=red",
        "?filter=state=sleeping",
        "?pageSize=x",
        "?pageToken=zz",
    ] {
        let (s, v) = list(q).await;
        assert_eq!(
            (s, v["code"].as_str()),
            (400, Some("invalidArgument")),
            "{q}"
        );
    }
    let (s, v) = f
        .call("getProcess", Method::GET, "/v1/processes/nope", None)
        .await;
    assert_eq!((s, v["code"].as_str()), (404, Some("notFound")));

    // signals: a handled one leaves the output flowing; term ends it; an exited process refuses
    let trap = f
        .create(json!({"cmd": ["sh", "-c", "trap 'echo got-usr1' USR1; echo ready; while :; do sleep 0.1; done"]}))
        .await;
    let t = trap["uid"].as_str().unwrap().to_string();
    let mut ws = f.ws(&t, Some("sandboxes.v1")).await;
    send(&mut ws, attach(&t, 0)).await;
    let mut last = 0;
    until(&mut ws, "ready", &mut last).await;
    let sig = |uid: String, s: &'static str| {
        let f = &f;
        async move {
            f.call(
                "signal",
                Method::POST,
                &format!("/v1/processes/{uid}/signal"),
                Some(json!({"signal": s})),
            )
            .await
        }
    };
    let (s, v) = sig(t.clone(), "usr1").await;
    assert_eq!((s, &v), (200, &json!({})));
    until(&mut ws, "got-usr1", &mut last).await;
    let (s, _) = sig(t.clone(), "kill").await;
    assert_eq!(s, 200);
    let d = drain(&mut ws, last).await;
    assert_eq!(d.close, 1000);
    assert_ne!(d.exited["exitCode"], 0);
    let (s, _) = sig(sleeper.clone(), "term").await;
    assert_eq!(s, 200);
    let v = f.exited(&sleeper).await;
    assert!(v["exitCode"].as_i64().is_some());
    let (s, v) = sig(sleeper.clone(), "term").await;
    assert_eq!((s, v["code"].as_str()), (409, Some("failedPrecondition")));
    for bad in [
        json!({"signal": "unspecified"}),
        json!({"signal": "stop"}),
        json!({}),
        json!({"signal": "term", "x": 1}),
    ] {
        let (s, v) = f
            .call(
                "signal",
                Method::POST,
                &format!("/v1/processes/{t}/signal"),
                Some(bad.clone()),
            )
            .await;
        assert_eq!(
            (s, v["code"].as_str()),
            (400, Some("invalidArgument")),
            "{bad}"
        );
    }
    // shutdown kills what still runs
    let left = f.create(json!({"cmd": ["sleep", "300"]})).await;
    let l = left["uid"].as_str().unwrap().to_string();
    let mut ws = f.ws(&l, Some("sandboxes.v1")).await;
    send(&mut ws, attach(&l, 0)).await;
    f.ep.shutdown().await;
    f.exited(&l).await;
    // an open stream ends: the sandbox is stopping (1011 after an unavailable error frame)
    let (e, code) = refused(&mut ws).await;
    assert_eq!((e["code"].as_str(), code), (Some("unavailable"), 1011));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pty_with_initial_size_resize_and_veof() {
    let f = fixture().await;
    let p = f
        .create(json!({
            "cmd": ["sh", "-c", "stty size; read x; stty size; echo \"x=$x\""],
            "pty": {"initialSize": {"rows": 30, "cols": 100}},
        }))
        .await;
    let uid = p["uid"].as_str().unwrap().to_string();
    let mut ws = f.ws(&uid, Some("sandboxes.v1")).await;
    send(&mut ws, attach(&uid, 0)).await;
    let mut last = 0;
    until(&mut ws, "30 100", &mut last).await;
    send(
        &mut ws,
        json!({"resize": {"rows": 40, "cols": 120, "bounded": true}}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    send(&mut ws, json!({"stdin": B64.encode("go\n")})).await;
    let text = until(&mut ws, "x=go", &mut last).await;
    assert!(text.contains("40 120"), "{text:?}");
    let d = drain(&mut ws, last).await;
    assert!(d.streams.iter().all(|s| s == "pty"));
    assert_eq!((d.exited["exitCode"].as_i64(), d.close), (Some(0), 1000));
    // every chunk was on the pty stream
    let (_, v) = f
        .call(
            "readOutput",
            Method::GET,
            &format!("/v1/processes/{uid}/output"),
            None,
        )
        .await;
    assert!(v["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["stream"] == "pty"));

    // closeStdin on a PTY is one VEOF: cat reads the line, then EOF
    let cat = f.create(json!({"cmd": ["cat"], "pty": {}})).await;
    let c = cat["uid"].as_str().unwrap().to_string();
    let mut ws = f.ws(&c, Some("sandboxes.v1")).await;
    send(&mut ws, attach(&c, 0)).await;
    send(&mut ws, json!({"stdin": B64.encode("abc\n")})).await;
    let mut last = 0;
    until(&mut ws, "abc\r\nabc", &mut last).await;
    send(&mut ws, json!({"closeStdin": true})).await;
    let d = drain(&mut ws, last).await;
    assert_eq!((d.exited["exitCode"].as_i64(), d.close), (Some(0), 1000));

    // resize without a PTY is failedPrecondition; a bad size is invalidArgument
    let pipe = f.create(json!({"cmd": ["sleep", "60"]})).await;
    let u = pipe["uid"].as_str().unwrap().to_string();
    let mut ws = f.ws(&u, Some("sandboxes.v1")).await;
    send(&mut ws, attach(&u, 0)).await;
    send(&mut ws, json!({"resize": {"rows": 10, "cols": 10}})).await;
    let (e, code) = refused(&mut ws).await;
    assert_eq!(
        (e["code"].as_str(), code),
        (Some("failedPrecondition"), 1008)
    );
    let term = f.create(json!({"cmd": ["sleep", "60"], "pty": {}})).await;
    let u = term["uid"].as_str().unwrap().to_string();
    let mut ws = f.ws(&u, Some("sandboxes.v1")).await;
    send(&mut ws, attach(&u, 0)).await;
    send(&mut ws, json!({"resize": {"rows": 0, "cols": 10}})).await;
    let (e, code) = refused(&mut ws).await;
    assert_eq!((e["code"].as_str(), code), (Some("invalidArgument"), 1008));
    // a bad initial size
    let (s, v) = f
        .call(
            "createProcess",
            Method::POST,
            "/v1/processes",
            Some(json!({"cmd": ["true"], "pty": {"initialSize": {"rows": 70000, "cols": 80}}})),
        )
        .await;
    assert_eq!((s, v["code"].as_str()), (400, Some("invalidArgument")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_stream_resumes_without_loss_or_duplicates() {
    let f = fixture().await;
    let script = "i=0; while [ $i -lt 400 ]; do echo line$i; i=$((i+1)); [ $((i % 20)) = 0 ] && sleep 0.05; done";
    let p = f.create(json!({"cmd": ["sh", "-c", script]})).await;
    let uid = p["uid"].as_str().unwrap().to_string();
    let mut ws = f.ws(&uid, Some("sandboxes.v1")).await;
    send(&mut ws, attach(&uid, 0)).await;
    let mut got = Vec::new();
    let mut last = 0u64;
    while last < 3 {
        match recv(&mut ws).await {
            Frame::Json(v) if v.get("chunk").is_some() => {
                let seq: u64 = v["chunk"]["streamSequence"]
                    .as_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert_eq!(seq, last + 1);
                last = seq;
                got.extend(B64.decode(v["chunk"]["data"].as_str().unwrap()).unwrap());
            }
            f => panic!("{f:?}"),
        }
    }
    drop(ws); // mid-output, no close handshake
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut ws = f.ws(&uid, Some("sandboxes.v1")).await;
    send(&mut ws, attach(&uid, last)).await;
    let d = drain(&mut ws, last).await;
    got.extend(d.out);
    let want: String = (0..400).map(|i| format!("line{i}\n")).collect();
    assert_eq!(String::from_utf8(got).unwrap(), want);
    assert_eq!((d.exited["exitCode"].as_i64(), d.close), (Some(0), 1000));
    // a second reader from the start sees the same
    let mut ws = f.ws(&uid, Some("sandboxes.v1")).await;
    send(&mut ws, attach(&uid, 0)).await;
    let d2 = drain(&mut ws, 0).await;
    assert_eq!(String::from_utf8(d2.out).unwrap(), want);
    assert_eq!(d2.last, d.last);
    // past the end is out of range
    let mut ws = f.ws(&uid, Some("sandboxes.v1")).await;
    send(&mut ws, attach(&uid, d.last + 5)).await;
    let (e, code) = refused(&mut ws).await;
    assert_eq!((e["code"].as_str(), code), (Some("outOfRange"), 1008));

    // output beyond the retention: resuming before the oldest retained chunk is failedPrecondition
    f.ep.set_limits(64 * 1024, super::EXEC_CAPTURE_BYTES);
    let big = f
        .create(json!({"cmd": ["sh", "-c", "head -c 400000 /dev/zero | tr '\\0' x"]}))
        .await;
    let b = big["uid"].as_str().unwrap().to_string();
    let v = f.exited(&b).await;
    let top: u64 = v["lastStreamSequence"].as_str().unwrap().parse().unwrap();
    let (s, e) = f
        .call(
            "readOutput",
            Method::GET,
            &format!("/v1/processes/{b}/output?resumeFrom=0"),
            None,
        )
        .await;
    assert_eq!(
        (s, e["code"].as_str()),
        (409, Some("failedPrecondition")),
        "{e}"
    );
    let mut ws = f.ws(&b, Some("sandboxes.v1")).await;
    send(&mut ws, attach(&b, 0)).await;
    let (e, code) = refused(&mut ws).await;
    assert_eq!(
        (e["code"].as_str(), code),
        (Some("failedPrecondition"), 1008)
    );
    // the retained tail is still there, and ends with the exit
    let (s, v) = f
        .call(
            "readOutput",
            Method::GET,
            &format!("/v1/processes/{b}/output?resumeFrom={}", top - 1),
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["nextResumeFrom"], top.to_string());
    assert_eq!(v["exited"]["exitCode"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interact_refusals_and_close_codes() {
    let f = fixture().await;
    let p = f.create(json!({"cmd": ["sleep", "120"]})).await;
    let uid = p["uid"].as_str().unwrap().to_string();
    // no subprotocol offered: 1002 (a bearer subprotocol alone is not echoed either)
    let mut ws = f.ws(&uid, None).await;
    let (e, code) = refused(&mut ws).await;
    assert_eq!((e["code"].as_str(), code), (Some("invalidArgument"), 1002));
    let mut ws = f
        .ws(&uid, Some("sandboxes.bearer.v1.dG9rZW4, sandboxes.v1"))
        .await;
    send(&mut ws, attach(&uid, 0)).await;
    ws.send(Message::binary(b"{}".to_vec())).await.unwrap();
    let (_, code) = refused(&mut ws).await;
    assert_eq!(code, 1003);
    for (frame, want) in [
        ("{not json", 1007),
        ("{\"bogus\":1}", 1007),
        ("{\"stdin\":\"***\"}", 1007),
        (
            "{\"attach\":{\"name\":\"processes/x\"},\"stdin\":\"\"}",
            1007,
        ),
        ("[1]", 1007),
    ] {
        let mut ws = f.ws(&uid, Some("sandboxes.v1")).await;
        ws.send(Message::text(frame)).await.unwrap();
        let (e, code) = refused(&mut ws).await;
        assert_eq!(
            (e["code"].as_str(), code),
            (Some("invalidArgument"), want),
            "{frame}"
        );
    }
    let mut ws = f.ws(&uid, Some("sandboxes.v1")).await;
    send(&mut ws, attach(&uid, 0)).await;
    // the server may stop reading mid-frame: the rest of the send can fail
    let _ = ws
        .send(Message::text(format!(
            "{{\"stdin\":\"{}\"}}",
            "A".repeat(2 << 20)
        )))
        .await;
    let (e, code) = refused(&mut ws).await;
    assert_eq!(
        (e["code"].as_str(), code),
        (Some("resourceExhausted"), 1009)
    );
    // stdin before attach; attach naming another process; an unknown process; attach twice
    let mut ws = f.ws(&uid, Some("sandboxes.v1")).await;
    send(&mut ws, json!({"stdin": ""})).await;
    let (e, code) = refused(&mut ws).await;
    assert_eq!((e["code"].as_str(), code), (Some("invalidArgument"), 1008));
    let mut ws = f.ws(&uid, Some("sandboxes.v1")).await;
    send(&mut ws, attach("other", 0)).await;
    let (e, code) = refused(&mut ws).await;
    assert_eq!((e["code"].as_str(), code), (Some("invalidArgument"), 1008));
    let mut ws = f.ws("nope", Some("sandboxes.v1")).await;
    send(&mut ws, attach("nope", 0)).await;
    let (e, code) = refused(&mut ws).await;
    assert_eq!((e["code"].as_str(), code), (Some("notFound"), 1008));
    let mut ws = f.ws(&uid, Some("sandboxes.v1")).await;
    send(&mut ws, attach(&uid, 0)).await;
    send(&mut ws, attach(&uid, 0)).await;
    let (e, code) = refused(&mut ws).await;
    assert_eq!((e["code"].as_str(), code), (Some("invalidArgument"), 1008));
    // stdin after closeStdin on pipes
    let mut ws = f.ws(&uid, Some("sandboxes.v1")).await;
    send(&mut ws, attach(&uid, 0)).await;
    send(&mut ws, json!({"closeStdin": true})).await;
    send(&mut ws, json!({"closeStdin": true})).await; // idempotent on pipes
    send(&mut ws, json!({"stdin": B64.encode("x")})).await;
    let (e, code) = refused(&mut ws).await;
    assert_eq!(
        (e["code"].as_str(), code),
        (Some("failedPrecondition"), 1008)
    );
    // pre-upgrade refusals are HTTP Error bodies
    let (s, _, b) = f
        .raw(
            Method::GET,
            &format!("/v1/processes/{uid}/interact"),
            &[],
            vec![],
        )
        .await;
    let v: Value = serde_json::from_slice(&b).unwrap();
    check("interact", s, &v);
    assert_eq!((s, v["code"].as_str()), (400, Some("invalidArgument")));
    let s = UnixStream::connect(&f.sock).await.unwrap();
    let req = format!("ws://localhost/v1/processes/{uid}/interact?token=x")
        .into_client_request()
        .unwrap();
    match tokio_tungstenite::client_async(req, s).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 400),
        other => panic!("a query parameter must be refused before the upgrade: {other:?}"),
    }
    // a heartbeat arrives on an idle stream
    let mut ws = f.ws(&uid, Some("sandboxes.v1")).await;
    send(&mut ws, attach(&uid, 0)).await;
    match recv(&mut ws).await {
        Frame::Json(v) => assert_eq!(v, json!({"heartbeat": {}})),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_operations() {
    let f = fixture().await;
    let q = |p: &str| {
        percent_encoding::utf8_percent_encode(p, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let write = |path: &str, mode: Option<u32>, data: Vec<u8>| {
        let f = &f;
        let uri = match mode {
            Some(m) => format!("/v1/files/content?path={}&mode={m}", q(path)),
            None => format!("/v1/files/content?path={}", q(path)),
        };
        async move {
            let (s, _, b) = f
                .raw(
                    Method::PUT,
                    &uri,
                    &[("content-type", "application/octet-stream")],
                    data,
                )
                .await;
            let v: Value = serde_json::from_slice(&b).unwrap();
            check("writeFile", s, &v);
            (s, v)
        }
    };
    let read = |path: &str| {
        let f = &f;
        let uri = format!("/v1/files/content?path={}", q(path));
        async move {
            let (s, h, b) = f.raw(Method::GET, &uri, &[], vec![]).await;
            if s != 200 {
                let v: Value = serde_json::from_slice(&b).unwrap();
                check("readFile", s, &v);
                return (s, v, Bytes::new());
            }
            assert_eq!(h["content-type"], "application/octet-stream");
            assert_eq!(h["content-length"], b.len().to_string().as_str());
            (s, Value::Null, b)
        }
    };
    let stat = |path: &str| {
        let f = &f;
        let uri = format!("/v1/files/stat?path={}", q(path));
        async move { f.call("stat", Method::GET, &uri, None).await }
    };
    let mkdir = |body: Value| {
        let f = &f;
        async move {
            f.call("mkdir", Method::PUT, "/v1/files/directories", Some(body))
                .await
        }
    };
    // mkdir
    let (s, v) = write("/w/a.bin", None, b"x".to_vec()).await;
    assert_eq!((s, v["code"].as_str()), (404, Some("notFound")), "{v}");
    let (s, v) = mkdir(json!({"path": "/w/x/y"})).await;
    assert_eq!((s, v["code"].as_str()), (404, Some("notFound")));
    let (s, _) = mkdir(json!({"path": "/w/sub/deep", "parents": true, "mode": 0o700})).await;
    assert_eq!(s, 200);
    let (_, v) = stat("/w/sub/deep").await;
    assert_eq!(
        (
            v["info"]["type"].as_str(),
            v["info"]["isDir"].as_bool(),
            v["info"]["mode"].as_i64()
        ),
        (Some("directory"), Some(true), Some(0o700))
    );
    let (s, _) = mkdir(json!({"path": "/w/sub/deep", "mode": 0o755})).await;
    assert_eq!(s, 200, "converges");
    let (_, v) = stat("/w/sub/deep").await;
    assert_eq!(
        v["info"]["mode"], 0o700,
        "a converged mkdir leaves the mode"
    );
    let (s, _) = mkdir(json!({"path": "/w/plain"})).await;
    assert_eq!(s, 200);
    let (_, v) = stat("/w/plain").await;
    assert_eq!(v["info"]["mode"], 0o755);
    for bad in [
        json!({"path": "rel"}),
        json!({"path": ""}),
        json!({"path": "/w/z", "x": 1}),
        json!({}),
    ] {
        let (s, v) = mkdir(bad.clone()).await;
        assert_eq!(
            (s, v["code"].as_str()),
            (400, Some("invalidArgument")),
            "{bad}"
        );
    }
    // write, read, stat
    let data: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let (s, v) = write("/w/a.bin", Some(0o600), data.clone()).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["info"]["size"].as_str(), v["info"]["mode"].as_i64()),
        (Some("70000"), Some(0o600))
    );
    let (s, _, b) = read("/w/a.bin").await;
    assert_eq!((s, &b[..]), (200, &data[..]));
    let (s, v) = stat("/w/a.bin").await;
    assert_eq!(s, 200);
    assert_eq!(
        v["info"],
        json!({"path": "/w/a.bin", "size": "70000", "mode": 0o600, "isDir": false, "type": "regular"})
    );
    let (s, _) = write("/w/empty", Some(0), vec![]).await;
    assert_eq!(s, 200);
    let (_, v) = stat("/w/empty").await;
    assert_eq!(
        (v["info"]["size"].as_str(), v["info"]["mode"].as_i64()),
        (Some("0"), Some(0o644))
    );
    let (s, v) = mkdir(json!({"path": "/w/a.bin"})).await;
    assert_eq!((s, v["code"].as_str()), (409, Some("alreadyExists")));
    let (s, v) = write("/w/sub", None, b"x".to_vec()).await;
    assert_eq!((s, v["code"].as_str()), (409, Some("failedPrecondition")));
    assert!(v["message"]
        .as_str()
        .unwrap()
        .starts_with("path_authority_nonregular_object"));
    let (s, v, _) = read("/w/sub").await;
    assert_eq!((s, v["code"].as_str()), (409, Some("failedPrecondition")));
    let (s, v, _) = read("/w/none").await;
    assert_eq!((s, v["code"].as_str()), (404, Some("notFound")));
    let (s, v) = stat("/w/none").await;
    assert_eq!((s, v["code"].as_str()), (404, Some("notFound")));
    for uri in [
        "/v1/files/stat?path=rel",
        "/v1/files/stat",
        "/v1/files/stat?path=/w&x=1",
    ] {
        let (s, v) = f.call("stat", Method::GET, uri, None).await;
        assert_eq!(
            (s, v["code"].as_str()),
            (400, Some("invalidArgument")),
            "{uri}"
        );
    }
    let (s, v) = write("/w/bad", Some(0), vec![]).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = f
        .call(
            "writeFile",
            Method::PUT,
            "/v1/files/content?path=/w/m&mode=abc",
            None,
        )
        .await;
    assert_eq!((s, v["code"].as_str()), (400, Some("invalidArgument")));
    // a chunked body has no exact Content-Length
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = UnixStream::connect(&f.sock).await.unwrap();
        s.write_all(b"PUT /v1/files/content?path=/w/c HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n").await.unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.unwrap();
        let text = String::from_utf8_lossy(&buf);
        assert!(text.starts_with("HTTP/1.1 400"), "{text}");
        let v: Value = serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        check("writeFile", 400, &v);
    }
    // links: followed when they resolve, reported when dangling; writes go through to the target
    let (code, _, err, _) = f
        .exec(&[
            "sh",
            "-c",
            "ln -s /w/a.bin /w/link && ln -s /w/gone /w/dangling && ln -s sub /w/dirlink",
        ])
        .await;
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&err));
    let (_, v) = stat("/w/link").await;
    assert_eq!(
        (v["info"]["type"].as_str(), v["info"]["size"].as_str()),
        (Some("regular"), Some("70000"))
    );
    let (_, v) = stat("/w/dangling").await;
    assert_eq!(
        (v["info"]["type"].as_str(), v["info"]["linkTarget"].as_str()),
        (Some("symlink"), Some("/w/gone"))
    );
    let (s, _) = write("/w/link", Some(0o640), b"through".to_vec()).await;
    assert_eq!(s, 200);
    let (_, _, b) = read("/w/a.bin").await;
    assert_eq!(&b[..], b"through");
    let (_, v) = stat("/w/link").await;
    assert_eq!(v["info"]["mode"], 0o640);
    // list
    let (s, v) = f.call("list", Method::GET, "/v1/files?path=/w", None).await;
    assert_eq!(s, 200);
    let names: Vec<&str> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "/w/a.bin",
            "/w/bad",
            "/w/dangling",
            "/w/dirlink",
            "/w/empty",
            "/w/link",
            "/w/plain",
            "/w/sub"
        ]
    );
    assert_eq!(v["entries"][3]["type"], "directory");
    assert_eq!(v["nextPageToken"], "");
    let (_, v) = f
        .call(
            "list",
            Method::GET,
            "/v1/files?path=/w/&pageSize=3&orderBy=path%20desc",
            None,
        )
        .await;
    let names: Vec<&str> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["/w/sub", "/w/plain", "/w/link"]);
    let tok = v["nextPageToken"].as_str().unwrap().to_string();
    let (_, v) = f
        .call(
            "list",
            Method::GET,
            &format!("/v1/files?path=/w&pageSize=3&orderBy=path+desc&pageToken={tok}"),
            None,
        )
        .await;
    assert_eq!(v["entries"][0]["path"], "/w/empty");
    let (s, v) = f
        .call("list", Method::GET, "/v1/files?path=/w/a.bin", None)
        .await;
    assert_eq!((s, v["code"].as_str()), (409, Some("failedPrecondition")));
    let (s, v) = f
        .call("list", Method::GET, "/v1/files?path=/nowhere", None)
        .await;
    assert_eq!((s, v["code"].as_str()), (404, Some("notFound")));
    let (s, v) = f
        .call("list", Method::GET, "/v1/files?path=/w&orderBy=size", None)
        .await;
    assert_eq!((s, v["code"].as_str()), (400, Some("invalidArgument")));
    // a name with spaces, quotes and a leading dash is data, not shell
    let odd = "/w/-n 'x' $(touch pwned) `touch pwned2` \"q\" *";
    let (s, _) = write(odd, None, b"odd".to_vec()).await;
    assert_eq!(s, 200);
    let (s, v) = stat(odd).await;
    assert_eq!((s, v["info"]["path"].as_str()), (200, Some(odd)));
    for p in ["/w/pwned", "/pwned", "/w/pwned2", "/pwned2"] {
        let (s, _) = stat(p).await;
        assert_eq!(s, 404, "{p}");
    }
    // move
    let mv = |from: &str, to: &str| {
        let f = &f;
        let body = json!({"from": from, "to": to});
        async move {
            f.call("move", Method::POST, "/v1/files/move", Some(body))
                .await
        }
    };
    let (s, _) = mv(odd, "/w/moved").await;
    assert_eq!(s, 200);
    let (_, _, b) = read("/w/moved").await;
    assert_eq!(&b[..], b"odd");
    let (s, _) = mv("/w/moved", "/w/empty").await;
    assert_eq!(s, 200, "a regular file destination is replaced");
    let (s, v) = mv("/w/empty", "/w/sub").await;
    assert_eq!((s, v["code"].as_str()), (409, Some("failedPrecondition")));
    assert!(v["message"]
        .as_str()
        .unwrap()
        .starts_with("move_destination_is_directory"));
    let (s, v) = mv("/w/sub", "/w/a.bin").await;
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .starts_with("move_destination_occupied"),
        "{v}"
    );
    assert_eq!(s, 409);
    let (s, v) = mv("/w/none", "/w/x").await;
    assert_eq!((s, v["code"].as_str()), (404, Some("notFound")));
    let (s, v) = mv("/w/empty", "/proc/x").await;
    assert_eq!((s, v["code"].as_str()), (409, Some("failedPrecondition")));
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .starts_with("move_crosses_filesystem"),
        "{v}"
    );
    let (s, _) = f
        .call(
            "move",
            Method::POST,
            "/v1/files/move",
            Some(json!({"from": "/w/empty"})),
        )
        .await;
    assert_eq!(s, 400);
    // remove
    let rm = |path: &str, recursive: bool| {
        let f = &f;
        let uri = format!("/v1/files?path={}&recursive={recursive}", q(path));
        async move { f.call("remove", Method::DELETE, &uri, None).await }
    };
    let (s, v) = rm("/w/sub", false).await;
    assert_eq!((s, v["code"].as_str()), (409, Some("failedPrecondition")));
    let (s, v) = rm("/w/sub", true).await;
    assert_eq!(s, 200);
    assert_eq!(v["completedPaths"], json!(["/w/sub/deep", "/w/sub"]));
    assert_eq!(v["completedCount"], 2);
    assert!(v.get("failedPath").is_none());
    let (s, v) = rm("/w/sub", true).await;
    assert_eq!(
        (s, v["completedCount"].as_i64()),
        (200, Some(0)),
        "an absent path succeeds"
    );
    let (s, v) = rm("/w/plain", false).await;
    assert_eq!((s, v["completedPaths"].clone()), (200, json!(["/w/plain"])));
    let (s, v) = rm("/w/dangling", false).await;
    assert_eq!((s, v["completedCount"].as_i64()), (200, Some(1)));
    let (s, _) = f
        .call(
            "remove",
            Method::DELETE,
            "/v1/files?path=/w&recursive=maybe",
            None,
        )
        .await;
    assert_eq!(s, 400);

    // upload: ordered metadata/content pairs
    let form = |items: &[(&str, &str, &[u8])], close: bool, extra: &str| {
        let mut b = Vec::new();
        for (name, ctype, data) in items {
            b.extend_from_slice(
                format!("--XyZ\r\nContent-Disposition: form-data; name=\"{name}\"\r\nContent-Type: {ctype}\r\n{extra}\r\n").as_bytes(),
            );
            b.extend_from_slice(data);
            b.extend_from_slice(b"\r\n");
        }
        if close {
            b.extend_from_slice(b"--XyZ--\r\n");
        }
        b
    };
    let upload = |body: Vec<u8>| {
        let f = &f;
        async move {
            let (s, _, b) = f
                .raw(
                    Method::POST,
                    "/v1/files/upload",
                    &[("content-type", "multipart/form-data; boundary=XyZ")],
                    body,
                )
                .await;
            let v: Value = serde_json::from_slice(&b).unwrap();
            check("upload", s, &v);
            (s, v)
        }
    };
    let bin: Vec<u8> = b"\r\n--XY-z is not the delimiter\0\xff".to_vec();
    let m1 = json!({"path": "/w/up/one.bin", "mode": 0o751}).to_string();
    let m2 = json!({"path": "/w/up/empty"}).to_string();
    mkdir(json!({"path": "/w/up"})).await;
    let body = form(
        &[
            ("metadata", "application/json", m1.as_bytes()),
            ("content", "application/octet-stream", &bin),
            ("metadata", "application/json", m2.as_bytes()),
            ("content", "application/octet-stream", b""),
        ],
        true,
        "",
    );
    let (s, v) = upload(body).await;
    assert_eq!((s, v.clone()), (200, json!({"filesWritten": 2})));
    let (_, _, b) = read("/w/up/one.bin").await;
    assert_eq!(&b[..], &bin[..]);
    let (_, v) = stat("/w/up/one.bin").await;
    assert_eq!(v["info"]["mode"], 0o751);
    let (_, v) = stat("/w/up/empty").await;
    assert_eq!(
        (v["info"]["size"].as_str(), v["info"]["mode"].as_i64()),
        (Some("0"), Some(0o644))
    );
    let ok_pair: [(&str, &str, &[u8]); 2] = [
        ("metadata", "application/json", m2.as_bytes()),
        ("content", "application/octet-stream", b"x"),
    ];
    let (s, v) = upload(form(&ok_pair, false, "")).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (400, Some("invalidArgument")),
        "no closing delimiter"
    );
    let (s, v) = upload(form(
        &ok_pair,
        true,
        "Content-Transfer-Encoding: base64\r\n",
    ))
    .await;
    assert_eq!((s, v["code"].as_str()), (400, Some("invalidArgument")));
    let (s, v) = upload(form(&[ok_pair[1], ok_pair[0]], true, "")).await;
    assert_eq!((s, v["code"].as_str()), (400, Some("invalidArgument")));
    assert_eq!(
        v["details"][0]["fieldViolations"][0]["field"],
        "items[0].metadata"
    );
    let (s, v) = upload(form(&ok_pair[..1], true, "")).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (400, Some("invalidArgument")),
        "metadata without content"
    );
    let bad_meta: [(&str, &str, &[u8]); 2] = [
        (
            "metadata",
            "application/json",
            b"{\"path\":\"/w/q\",\"x\":1}",
        ),
        ("content", "application/octet-stream", b""),
    ];
    let (s, _) = upload(form(&bad_meta, true, "")).await;
    assert_eq!(s, 400);
    let onto_dir: [(&str, &str, &[u8]); 2] = [
        ("metadata", "application/json", b"{\"path\":\"/w/up\"}"),
        ("content", "application/octet-stream", b""),
    ];
    let (s, v) = upload(form(&onto_dir, true, "")).await;
    assert_eq!((s, v["code"].as_str()), (409, Some("failedPrecondition")));
    let (s, _, b) = f
        .raw(
            Method::POST,
            "/v1/files/upload",
            &[("content-type", "application/json")],
            b"{}".to_vec(),
        )
        .await;
    assert_eq!(s, 400, "{}", String::from_utf8_lossy(&b));

    // download: per path a metadata + content pair or an error part, in order, duplicates included
    let (s, h, b) = f
        .raw(
            Method::GET,
            "/v1/files/download?paths=/w/up/one.bin&paths=/w/none&paths=/w/up/one.bin&paths=/w/up",
            &[],
            vec![],
        )
        .await;
    assert_eq!(s, 200);
    let ctype = h["content-type"].to_str().unwrap();
    let boundary = ctype
        .split("boundary=")
        .nth(1)
        .expect("a boundary")
        .to_string();
    assert!(ctype.starts_with("multipart/mixed;"));
    // each part's Content-Disposition as the contract's enum spells it
    let text = String::from_utf8_lossy(&b);
    let dispositions: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("Content-Disposition:"))
        .collect();
    assert_eq!(dispositions.len(), 6);
    for d in dispositions {
        assert!(
            ["metadata", "content", "error", "stream-error"]
                .iter()
                .any(|n| d == format!("Content-Disposition: attachment; name={n}")),
            "{d}"
        );
    }
    let parts = parse_mixed(&b, &boundary);
    let kinds: Vec<&str> = parts.iter().map(|p| p.0.as_str()).collect();
    assert_eq!(
        kinds,
        ["metadata", "content", "error", "metadata", "content", "error"]
    );
    for (name, ctype, data) in &parts {
        match name.as_str() {
            "metadata" => {
                assert_eq!(ctype, "application/json");
                let v: Value = serde_json::from_slice(data).unwrap();
                contract().check_schema("FileHeader", &v).unwrap();
                assert_eq!(v, json!({"path": "/w/up/one.bin", "mode": 0o751}));
            }
            "content" => {
                assert_eq!(ctype, "application/octet-stream");
                assert_eq!(&data[..], &bin[..]);
            }
            _ => {
                let v: Value = serde_json::from_slice(data).unwrap();
                contract().check_schema("FileError", &v).unwrap();
            }
        }
    }
    let e1: Value = serde_json::from_slice(&parts[2].2).unwrap();
    let e2: Value = serde_json::from_slice(&parts[5].2).unwrap();
    assert_eq!(
        (e1["path"].as_str(), e1["failure"]["code"].as_str()),
        (Some("/w/none"), Some("notFound"))
    );
    assert_eq!(
        (e2["path"].as_str(), e2["failure"]["code"].as_str()),
        (Some("/w/up"), Some("failedPrecondition"))
    );
    for uri in [
        "/v1/files/download",
        "/v1/files/download?paths=rel",
        "/v1/files/download?paths=/w&x=1",
    ] {
        let (s, _, b) = f.raw(Method::GET, uri, &[], vec![]).await;
        let v: Value = serde_json::from_slice(&b).unwrap();
        check("download", s, &v);
        assert_eq!(s, 400, "{uri}");
    }
}

/// Split a `multipart/mixed` download: `(name, content type, data)` per part; the closing delimiter is required.
fn parse_mixed(body: &[u8], boundary: &str) -> Vec<(String, String, Vec<u8>)> {
    crate::core::multipart::parse(&Bytes::copy_from_slice(body), boundary, "attachment")
        .unwrap()
        .into_iter()
        .map(|p| (p.name, p.content_type.unwrap_or_default(), p.data.to_vec()))
        .collect()
}

#[test]
fn every_capability_is_an_endpoint_operation_of_the_contract() {
    for op in Endpoint::capabilities() {
        let o = contract()
            .operation(op)
            .unwrap_or_else(|| panic!("{op} is not in the contract"));
        assert_eq!(o.spec["x-sbx-serving-surface"], "sandboxEndpoint", "{op}");
    }
    let served: usize = contract()
        .operations()
        .iter()
        .filter(|o| o.spec["x-sbx-serving-surface"] == "sandboxEndpoint")
        .count();
    assert_eq!(
        served,
        Endpoint::capabilities().len(),
        "every endpoint operation is served"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_whose_client_hangs_up_is_killed() {
    let f = fixture().await;
    let http = UnixHttp::new(&f.sock);
    let body = json!({"cmd": ["sh", "-c", "echo $$ > /tmp/hang.pid; exec sleep 300"]});
    let task = tokio::spawn(async move {
        http.request(
            Method::POST,
            "/v1/processes/exec",
            Some(body.to_string().into_bytes()),
            1 << 20,
        )
        .await
    });
    let deadline = tokio::time::Instant::now() + WAIT;
    let pid = loop {
        let (code, out, _, _) = f.exec(&["cat", "/tmp/hang.pid"]).await;
        if code == 0 && !out.is_empty() {
            break String::from_utf8(out).unwrap().trim().to_string();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the exec did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    task.abort();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (code, _, _, _) = f.exec(&["kill", "-0", &pid]).await;
        if code != 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the exec outlived its client"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
