//! The v1 client against an in-process HTTPS server with a test CA that plays Docker's cloud (management under
//! `/sandboxes`, the hub's token exchange, each sandbox's endpoint under `/ep/<uid>` with scoped credentials).
//!
//! The fake validates **every request body the client sends** (`check_request`) and **every JSON body it answers**
//! (`check_response`) against the contract; a violation is recorded and fails the test, so neither side can drift.

use super::backend::{V1Backend, V1Target};
use super::client::parse_duration;
use super::contract::contract;
use super::secrets::SECRETS_LABEL;
use super::V1Options;
use crate::core::backend::{
    ExecTarget, Expiry, ProcessHandle, SandboxBackend, SandboxSpec, SnapshotSpec,
};
use crate::core::call::Call;
use crate::core::error::{Error, ErrorCode};
use crate::core::exec::ExecSpec;
use crate::core::netpolicy::SecretSpec;
use base64::Engine;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio_tungstenite::tungstenite::protocol::{frame::coding::CloseCode, CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

const ID: &str = "dev-user";
const PAT: &str = "dckr_pat_SECRETSECRET";
const STATIC: &str = "static-access-token-XYZ";

/// A scripted fault: the next request of `op` answers `status` + `body` (validated like any answer).
#[derive(Clone)]
struct Fault {
    op: &'static str,
    status: u16,
    body: Value,
}

/// What the next attachment of the interact socket does.
#[derive(Clone, Debug, PartialEq)]
enum WsFault {
    /// Send `n` chunks, then drop the connection without a close frame.
    DropAfter(usize),
    /// Send `n` chunks, then an `unauthenticated` error frame and close 1008, and expire the credential.
    ExpireAfter(usize),
    /// Close with this code (and an error frame with that v1 code) at once.
    Close(u16, &'static str),
    /// Send a binary frame.
    Binary,
    /// Send a text frame of this many bytes.
    Huge(usize),
    /// Send `n` chunks, then neither read nor write (no pong) for a minute.
    Silent(usize),
    /// The handshake is answered 502 by "a proxy" (no upgrade, no contract body).
    Refuse,
}

#[derive(Default)]
struct Proc {
    chunks: Vec<(String, Vec<u8>)>,
    exit: Option<i64>,
    echo: bool,
    killed: Option<String>,
}

#[derive(Default)]
struct St {
    sandboxes: BTreeMap<String, Value>,
    /// uid → (target status, reads left before it is reached) after a 202.
    pending: HashMap<String, (String, usize)>,
    faults: VecDeque<Fault>,
    ws_faults: VecDeque<WsFault>,
    access: Vec<String>,
    exchanges: usize,
    /// The exp of minted access tokens, seconds from now.
    access_ttl: u64,
    creds: HashMap<String, (String, Instant)>,
    minted: usize,
    cred_ttl: Duration,
    /// (op, idempotency key, if-match) of every request.
    seen: Vec<(String, Option<String>, Option<String>)>,
    violations: Vec<String>,
    /// listSandboxes: 0 normal (pages of 2), 1 the same token forever, 2 a new token forever.
    pages: u8,
    processes: HashMap<String, Proc>,
    next_id: usize,
    /// Stop answering (accept, read, never reply).
    hang: bool,
    files: HashMap<String, Vec<u8>>,
    /// Directories made on the endpoint (`/` is always one).
    dirs: std::collections::BTreeSet<String>,
    /// Symbolic links that do not resolve: path → what they hold.
    dangling: HashMap<String, String>,
    /// How the next download answer is broken: `cut` (no closing delimiter), `stream-error` (a final
    /// `stream-error` part), `shuffled` (a content part first).
    download_fault: Option<&'static str>,
    uploads: Vec<Value>,
    /// uid → published ports.
    ports: HashMap<String, Vec<Value>>,
    /// The `resumeFrom` of every attach.
    attaches: Vec<usize>,
    /// The `resumeFrom` of every readOutput.
    polls: Vec<usize>,
    /// createSandbox idempotency keys → uid.
    keys: HashMap<String, String>,
    /// snapshot uid → (snapshot, reads left before it settles).
    snapshots: BTreeMap<String, (Value, usize)>,
    /// The next snapshot settles as `failed` instead of `ready`.
    snapshot_fails: bool,
    /// secret uid → the stored `Secret` (no value).
    secrets: BTreeMap<String, Value>,
    /// Every secret value received (to prove none comes back in an error).
    secret_values: Vec<String>,
    /// The body of every createSandbox.
    create_requests: Vec<Value>,
    /// The body of every renewSandboxTimeout.
    renewals: Vec<Value>,
    /// Endpoints advertise only the `webSocketSubprotocol` credential transport (a browser-first service).
    subprotocol_only: bool,
    /// How each interact attachment carried its credential: `header` or `subprotocol`.
    ws_auth: Vec<&'static str>,
}

struct Fake {
    st: Mutex<St>,
    port: u16,
    /// Unix mode: management on `<dir>/mgmt.sock`, each sandbox's endpoint on `<dir>/ep-<uid>.sock`, `localSocket`
    /// authentication (no token may be sent).
    unix: Option<std::path::PathBuf>,
}

/// Serve `listener` (a Unix socket) with `f`, every request path prefixed with `prefix` (so the routes are those of
/// the HTTPS fake).
fn serve_unix(listener: tokio::net::UnixListener, f: Arc<Fake>, prefix: String) {
    tokio::spawn(async move {
        loop {
            let Ok((io, _)) = listener.accept().await else {
                return;
            };
            let (f, prefix) = (f.clone(), prefix.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                    let pq = req
                        .uri()
                        .path_and_query()
                        .map(|p| p.as_str())
                        .unwrap_or("/")
                        .to_string();
                    *req.uri_mut() = format!("{prefix}{pq}").parse().unwrap();
                    f.clone().serve(req)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(io), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    crate::core::local::sbx::rfc3339(secs)
}

fn jwt(ttl: u64) -> String {
    let e = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    format!(
        "{}.{}.sig{}",
        e("{\"alg\":\"none\"}"),
        e(&format!(
            "{{\"exp\":{},\"n\":\"{}\"}}",
            now_s() + ttl,
            uuid::Uuid::new_v4()
        )),
        uuid::Uuid::new_v4().simple()
    )
}

fn err(code: &str, msg: &str) -> Value {
    json!({"code": code, "message": msg, "details": []})
}

fn retry_info(code: &str, delay: &str) -> Value {
    json!({"code": code, "message": "slow down",
        "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}]})
}

type Resp = Response<Full<Bytes>>;

impl Fake {
    fn sandbox_json(
        &self,
        uid: &str,
        display: &str,
        status: &str,
        etag: u64,
        req: &Value,
    ) -> Value {
        let endpoint = match &self.unix {
            Some(dir) => json!({
                "uri": format!("unix://{}/ep-{uid}.sock", dir.display()),
                "protocol": "unixSocket",
                "credentialAudience": "",
                "sandbox": format!("sandboxes/{uid}"),
                "sandboxUid": uid,
                "apiVersion": "v1",
                "capabilities": ["exec", "createProcess", "interact", "signal", "readFile", "writeFile", "upload", "download", "mkdir"],
                "authentication": {"scheme": "localSocket"}
            }),
            None => json!({
                "uri": format!("https://localhost:{}/ep/{uid}", self.port),
                "protocol": "http",
                "credentialAudience": format!("https://localhost:{}/ep/{uid}", self.port),
                "sandbox": format!("sandboxes/{uid}"),
                "sandboxUid": uid,
                "apiVersion": "v1",
                "capabilities": ["exec", "createProcess", "interact", "signal", "readFile", "writeFile", "upload", "download", "mkdir"],
                "authentication": {"scheme": "scopedBearer", "defaultTtl": "300s", "maxTtl": "300s",
                    "credentialTransports": ["authorizationHeader"]}
            }),
        };
        let mut core = json!({
            "status": status,
            "createdAt": "2026-12-05T08:00:00Z",
            "etag": format!("\"{etag}\""),
            "agent": req["agent"].as_str().unwrap_or("shell"),
            "endpoint": endpoint,
        });
        for k in ["imageRef", "environment", "labels"] {
            if let Some(v) = req.get(k) {
                core[k] = v.clone();
            }
        }
        json!({"name": format!("sandboxes/{uid}"), "uid": uid, "displayName": display, "core": core})
    }

    fn reply(&self, op: &str, status: u16, body: Option<Value>) -> Resp {
        let mut b = Response::builder().status(status);
        let bytes = match &body {
            Some(v) => {
                if let Err(e) = contract().check_response(op, status, v) {
                    self.st
                        .lock()
                        .unwrap()
                        .violations
                        .push(format!("response {op} {status}: {e:?} {v}"));
                }
                b = b.header("content-type", "application/json");
                Bytes::from(v.to_string())
            }
            None => Bytes::new(),
        };
        b.body(Full::new(bytes)).unwrap()
    }

    fn check_req(&self, op: &str, body: &Value) {
        if let Err(e) = contract().check_request(op, body) {
            self.st
                .lock()
                .unwrap()
                .violations
                .push(format!("request {op}: {e:?} {body}"));
        }
    }

    async fn serve(self: Arc<Self>, req: Request<Incoming>) -> Result<Resp, Infallible> {
        if self.st.lock().unwrap().hang {
            std::future::pending::<()>().await;
        }
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        // a repeated parameter (download's `paths`) keeps every value, joined by newlines
        let mut query: HashMap<String, String> = HashMap::new();
        for (k, v) in req
            .uri()
            .query()
            .unwrap_or("")
            .split('&')
            .filter_map(|kv| kv.split_once('='))
        {
            let v = percent_encoding::percent_decode_str(v).decode_utf8_lossy();
            query
                .entry(k.to_string())
                .and_modify(|all| *all = format!("{all}\n{v}"))
                .or_insert_with(|| v.to_string());
        }
        let h = |n: &str| {
            req.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let (auth, idem, if_match) = (h("authorization"), h("idempotency-key"), h("if-match"));
        let bearer = auth
            .as_deref()
            .and_then(|a| a.strip_prefix("Bearer "))
            .unwrap_or("")
            .to_string();
        if path.ends_with("/interact") && h("upgrade").is_some() {
            return Ok(self.interact(req, &path, &bearer));
        }
        let ct = h("content-type").unwrap_or_default();
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let json_body: Option<Value> = if ct.starts_with("application/json") {
            serde_json::from_slice(&body).ok()
        } else {
            None
        };
        // hub
        if path == "/v2/auth/token" {
            let v = json_body.unwrap_or_default();
            let mut st = self.st.lock().unwrap();
            st.exchanges += 1;
            if v["identifier"] != ID || v["secret"] != PAT {
                return Ok(Response::builder()
                    .status(401)
                    .body(Full::new(Bytes::from_static(b"{\"detail\":\"incorrect\"}")))
                    .unwrap());
            }
            let t = jwt(st.access_ttl);
            st.access.push(t.clone());
            return Ok(Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(
                    json!({"access_token": t}).to_string(),
                )))
                .unwrap());
        }
        if let Some(rest) = path.strip_prefix("/ep/") {
            let (uid, sub) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            return Ok(self.endpoint(
                &method, uid, sub, &query, &bearer, &ct, json_body, body, idem,
            ));
        }
        let Some(p) = path.strip_prefix("/sandboxes") else {
            return Ok(self.reply("getSandbox", 404, Some(err("notFound", "no route"))));
        };
        let segs: Vec<&str> = p.trim_start_matches('/').split('/').collect();
        let op: &'static str = match (method.as_str(), segs.as_slice()) {
            ("GET", ["v1", "sandboxes"]) => "listSandboxes",
            ("POST", ["v1", "sandboxes"]) => "createSandbox",
            ("GET", ["v1", "sandboxes", _]) => "getSandbox",
            ("DELETE", ["v1", "sandboxes", _]) => "deleteSandbox",
            ("POST", ["v1", "sandboxes", _, "start"]) => "startSandbox",
            ("POST", ["v1", "sandboxes", _, "stop"]) => "stopSandbox",
            ("POST", ["v1", "sandboxes", _, "endpoint-credentials"]) => "createEndpointCredential",
            ("GET", ["v1", "sandboxes", _, "network-policies"]) => "getNetworkPolicies",
            ("GET", ["v1", "sandboxes", _, "policy-logs"]) => "listPolicyLogEntries",
            ("GET", ["v1", "policy-logs"]) => "listPolicyLogEntriesInOwnerScope",
            ("GET", ["v1", "sandboxes", _, "ports"]) => "listPorts",
            ("POST", ["v1", "sandboxes", _, "ports"]) => "createPort",
            ("DELETE", ["v1", "sandboxes", _, "ports", _]) => "deletePort",
            ("POST", ["v1", "sandboxes", _, "snapshots"]) => "createSnapshot",
            ("GET", ["v1", "snapshots"]) => "listSnapshots",
            ("GET", ["v1", "snapshots", _]) => "getSnapshot",
            ("DELETE", ["v1", "snapshots", _]) => "deleteSnapshot",
            ("POST", ["v1", "snapshots", _, "restore"]) => "restoreSnapshot",
            ("POST", ["v1", "secrets"]) => "createSecret",
            ("POST", ["v1", "sandboxes", _, "renew-timeout"]) => "renewSandboxTimeout",
            ("GET", ["v1", "secrets", _]) => "getSecret",
            ("DELETE", ["v1", "secrets", _]) => "deleteSecret",
            _ => return Ok(self.reply("getSandbox", 404, Some(err("notFound", "no route")))),
        };
        if let Some(b) = &json_body {
            self.check_req(op, b);
        }
        let mut st = self.st.lock().unwrap();
        st.seen
            .push((op.to_string(), idem.clone(), if_match.clone()));
        if self.unix.is_some() {
            if !bearer.is_empty() {
                st.violations
                    .push(format!("{op}: a token sent over a localSocket"));
            }
        } else if !st.access.contains(&bearer) && bearer != STATIC {
            drop(st);
            return Ok(self.reply(
                op,
                401,
                Some(err("unauthenticated", "token missing or expired")),
            ));
        }
        if let Some(i) = st.faults.iter().position(|f| f.op == op) {
            let f = st.faults.remove(i).unwrap();
            drop(st);
            return Ok(self.reply(op, f.status, Some(f.body)));
        }
        let uid = segs.get(2).map(|s| s.to_string()).unwrap_or_default();
        match op {
            "listSandboxes" => {
                let filter = query.get("filter").cloned().unwrap_or_default();
                let want = filter.strip_prefix("display_name=").map(str::to_string);
                let all: Vec<Value> = st
                    .sandboxes
                    .values()
                    .filter(|s| want.as_ref().is_none_or(|w| s["displayName"] == **w))
                    .cloned()
                    .collect();
                let start: usize = query
                    .get("pageToken")
                    .and_then(|t| t.strip_prefix('p'))
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                let page: Vec<Value> = all.iter().skip(start).take(2).cloned().collect();
                let next = match st.pages {
                    1 => "same".to_string(),
                    2 => format!("p{}", start + 1000),
                    _ if start + 2 < all.len() => format!("p{}", start + 2),
                    _ => String::new(),
                };
                let mut v = json!({"sandboxes": if st.pages == 0 { page } else { vec![] }});
                if !next.is_empty() {
                    v["nextPageToken"] = json!(next);
                }
                drop(st);
                Ok(self.reply(op, 200, Some(v)))
            }
            "renewSandboxTimeout" => {
                let req = json_body.unwrap_or_default();
                st.renewals.push(req.clone());
                let Some(s) = st.sandboxes.get_mut(&uid) else {
                    drop(st);
                    return Ok(self.reply(op, 404, Some(err("notFound", "sandbox not found"))));
                };
                let secs =
                    parse_duration(req["timeout"].as_str().unwrap_or("")).unwrap_or_default();
                s["effectiveFeatures"]["timeouts"]["expiresAt"] =
                    json!(rfc3339(SystemTime::now() + secs));
                bump(s);
                let out = s.clone();
                drop(st);
                Ok(self.reply(op, 200, Some(out)))
            }
            "createSecret" => {
                let req = json_body.unwrap_or_default();
                st.next_id += 1;
                let id = format!("sec{:04}", st.next_id);
                st.secret_values
                    .push(req["custom"]["value"].as_str().unwrap_or("").to_string());
                let v = json!({"uid": id, "name": format!("secrets/{id}"), "type": "custom",
                    "displayName": req["displayName"], "injection": req["custom"]["injection"],
                    "placeholder": format!("sbx-cs-{id}"), "createdAt": "2026-12-05T09:00:00Z",
                    "updatedAt": "2026-12-05T09:00:00Z", "etag": "\"1\""});
                st.secrets.insert(id, v.clone());
                drop(st);
                Ok(self.reply(op, 201, Some(v)))
            }
            "getSecret" => {
                let v = st.secrets.get(&uid).cloned();
                drop(st);
                Ok(match v {
                    Some(v) => self.reply(op, 200, Some(v)),
                    None => self.reply(op, 404, Some(err("notFound", "secret not found"))),
                })
            }
            "deleteSecret" => {
                let Some(v) = st.secrets.get(&uid) else {
                    drop(st);
                    return Ok(self.reply(op, 404, Some(err("notFound", "secret not found"))));
                };
                if if_match.as_deref() != v["etag"].as_str() {
                    drop(st);
                    return Ok(self.reply(
                        op,
                        428,
                        Some(err("failedPrecondition", "If-Match required")),
                    ));
                }
                st.secrets.remove(&uid);
                drop(st);
                Ok(self.reply(op, 200, Some(json!({}))))
            }
            "createSnapshot" => {
                let req = json_body.unwrap_or_default();
                if !st.sandboxes.contains_key(&uid) {
                    drop(st);
                    return Ok(self.reply(op, 404, Some(err("notFound", "sandbox not found"))));
                }
                st.next_id += 1;
                let id = format!("snap{:04}", st.next_id);
                let v = json!({"uid": id, "name": format!("snapshots/{id}"), "displayName": req["displayName"],
                    "sandbox": format!("sandboxes/{uid}"), "sandboxUid": uid, "status": "creating",
                    "createdAt": "2026-12-05T09:00:00Z", "captureMode": req["captureMode"], "etag": "\"1\""});
                st.snapshots.insert(id, (v.clone(), 1));
                drop(st);
                Ok(self.reply(op, 202, Some(v)))
            }
            "getSnapshot" => {
                let fails = st.snapshot_fails;
                let Some((v, left)) = st.snapshots.get_mut(&uid) else {
                    drop(st);
                    return Ok(self.reply(op, 404, Some(err("notFound", "snapshot not found"))));
                };
                if *left > 0 {
                    *left -= 1;
                } else if v["status"] == "creating" {
                    v["etag"] = json!("\"2\"");
                    if fails {
                        v["status"] = json!("failed");
                        v["failure"] = err("resourceExhausted", "snapshot storage is full");
                    } else {
                        v["status"] = json!("ready");
                        v["totalSizeBytes"] = json!("4096");
                    }
                }
                let v = v.clone();
                drop(st);
                Ok(self.reply(op, 200, Some(v)))
            }
            "listSnapshots" => {
                let all: Vec<Value> = st
                    .snapshots
                    .values()
                    .map(|(v, _)| {
                        let mut v = v.clone();
                        for k in ["etag", "failure", "description"] {
                            v.as_object_mut().unwrap().remove(k);
                        }
                        v
                    })
                    .collect();
                drop(st);
                Ok(self.reply(op, 200, Some(json!({"snapshots": all}))))
            }
            "deleteSnapshot" => {
                let Some((v, _)) = st.snapshots.get(&uid) else {
                    drop(st);
                    return Ok(self.reply(op, 404, Some(err("notFound", "snapshot not found"))));
                };
                if if_match.as_deref() != v["etag"].as_str() {
                    let cur = v["etag"].clone();
                    drop(st);
                    return Ok(self.reply(op, 412, Some(json!({"code": "failedPrecondition", "message": "etag mismatch",
                        "details": [{"@type": "type.googleapis.com/docker.sandboxes.v1.EtagMismatch", "currentEtag": cur}]}))));
                }
                st.snapshots.remove(&uid);
                drop(st);
                Ok(self.reply(op, 204, None))
            }
            "restoreSnapshot" | "createSandbox" => {
                if op == "restoreSnapshot" && !st.snapshots.contains_key(&uid) {
                    drop(st);
                    return Ok(self.reply(op, 404, Some(err("notFound", "snapshot not found"))));
                }
                let req = json_body.unwrap_or_default();
                if op == "createSandbox" {
                    st.create_requests.push(req.clone());
                    // stored secrets are resolved at admission: an unknown one is refused
                    for r in req["features"]["storedSecrets"]["secrets"]
                        .as_array()
                        .into_iter()
                        .flatten()
                    {
                        let id = r.as_str().unwrap_or("").trim_start_matches("secrets/");
                        if !st.secrets.contains_key(id) {
                            drop(st);
                            return Ok(self.reply(
                                op,
                                400,
                                Some(err("invalidArgument", "unknown secret")),
                            ));
                        }
                    }
                }
                // the same key replays the first result
                let replay = idem.as_ref().and_then(|k| st.keys.get(k).cloned());
                st.next_id += 1;
                let uid = replay.unwrap_or_else(|| format!("u{:04}", st.next_id));
                if let Some(k) = &idem {
                    st.keys.insert(k.clone(), uid.clone());
                }
                let display = req["displayName"].as_str().unwrap_or("x").to_string();
                if let Some(dir) = &self.unix {
                    let sock = dir.join(format!("ep-{uid}.sock"));
                    if !sock.exists() {
                        let l = tokio::net::UnixListener::bind(&sock).unwrap();
                        serve_unix(l, self.clone(), format!("/ep/{uid}"));
                    }
                }
                let mut s = self.sandbox_json(&uid, &display, "creating", 1, &req);
                if st.subprotocol_only {
                    s["core"]["endpoint"]["authentication"]["credentialTransports"] =
                        json!(["webSocketSubprotocol"]);
                }
                if let Some(t) = req["features"].get("timeouts") {
                    let after =
                        parse_duration(t["timeout"].as_str().unwrap_or("")).unwrap_or_default();
                    s["effectiveFeatures"] = json!({
                        "lifecycle": {"stopMemoryOutcome": "discard"},
                        "outputRetention": {"minDuration": "300s"},
                        "timeouts": {"onTimeout": t["onTimeout"], "initialTimeout": t["timeout"],
                            "expiresAt": rfc3339(SystemTime::now() + after)},
                    });
                }
                let s = match st.snapshots.get(segs.get(2).copied().unwrap_or("")) {
                    // a restore is the source's sandbox again: its agent, labels and image
                    Some((snap, _)) if op == "restoreSnapshot" => {
                        let src = snap["sandboxUid"].as_str().unwrap_or("");
                        let mut s = s;
                        if let Some(from) = st.sandboxes.get(src) {
                            for k in ["agent", "labels", "imageRef", "environment"] {
                                if let Some(v) = from["core"].get(k) {
                                    s["core"][k] = v.clone();
                                }
                            }
                        }
                        s
                    }
                    _ => s,
                };
                st.sandboxes.insert(uid.clone(), s.clone());
                st.pending.insert(uid, ("running".into(), 2));
                drop(st);
                Ok(self.reply(op, 202, Some(s)))
            }
            "getSandbox" => {
                if let Some((target, left)) = st.pending.get_mut(&uid) {
                    if *left == 0 {
                        let t = target.clone();
                        st.pending.remove(&uid);
                        if t == "gone" {
                            st.sandboxes.remove(&uid);
                        } else if let Some(s) = st.sandboxes.get_mut(&uid) {
                            s["core"]["status"] = json!(t);
                            bump(s);
                        }
                    } else {
                        *left -= 1;
                    }
                }
                let s = st.sandboxes.get(&uid).cloned();
                drop(st);
                Ok(match s {
                    Some(s) => self.reply(op, 200, Some(s)),
                    None => self.reply(op, 404, Some(err("notFound", "sandbox not found"))),
                })
            }
            "startSandbox" | "stopSandbox" | "deleteSandbox" => {
                let Some(s) = st.sandboxes.get(&uid).cloned() else {
                    drop(st);
                    return Ok(self.reply(op, 404, Some(err("notFound", "sandbox not found"))));
                };
                let Some(m) = if_match else {
                    drop(st);
                    return Ok(self.reply(
                        op,
                        428,
                        Some(err("failedPrecondition", "If-Match required")),
                    ));
                };
                if m != s["core"]["etag"] {
                    let cur = s["core"]["etag"].clone();
                    drop(st);
                    return Ok(self.reply(op, 412, Some(json!({"code": "failedPrecondition", "message": "etag mismatch",
                        "details": [{"@type": "type.googleapis.com/docker.sandboxes.v1.EtagMismatch", "currentEtag": cur}]}))));
                }
                let (now, target) = match op {
                    "startSandbox" => ("starting", "running"),
                    "stopSandbox" => ("stopping", "stopped"),
                    _ => ("deleting", "gone"),
                };
                let s = st.sandboxes.get_mut(&uid).unwrap();
                s["core"]["status"] = json!(now);
                bump(s);
                let out = s.clone();
                st.pending.insert(uid, (target.into(), 1));
                drop(st);
                Ok(self.reply(op, 202, Some(out)))
            }
            "createEndpointCredential" => {
                let req = json_body.unwrap_or_default();
                st.minted += 1;
                let t = format!("ep-cred-{}-{}", st.minted, uuid::Uuid::new_v4().simple());
                let ttl = st.cred_ttl;
                st.creds
                    .insert(t.clone(), (uid.clone(), Instant::now() + ttl));
                drop(st);
                Ok(self.reply(
                    op,
                    200,
                    Some(json!({"token": t, "expireTime": rfc3339(SystemTime::now() + ttl),
                        "permissions": req["permissions"], "sandbox": format!("sandboxes/{uid}"), "audience": "ep"})),
                ))
            }
            "listPorts" => {
                let v = json!({"published": st.ports.get(&uid).cloned().unwrap_or_default()});
                drop(st);
                Ok(self.reply(op, 200, Some(v)))
            }
            "createPort" => {
                let n = json_body.unwrap_or_default()["port"]["number"]
                    .as_u64()
                    .unwrap_or(0);
                let p = json!({"number": n, "protocol": "tcp", "url": format!("http://127.0.0.1:{}", 40000 + n),
                    "etag": "\"1\"", "name": format!("sandboxes/{uid}/ports/{n}")});
                st.ports.entry(uid).or_default().push(p.clone());
                drop(st);
                Ok(self.reply(op, 201, Some(p)))
            }
            "deletePort" => {
                let n = segs[4].to_string();
                if if_match.as_deref() != Some("\"1\"") {
                    drop(st);
                    return Ok(self.reply(
                        op,
                        428,
                        Some(err("failedPrecondition", "If-Match required")),
                    ));
                }
                if let Some(v) = st.ports.get_mut(&uid) {
                    v.retain(|p| p["number"].as_u64().map(|x| x.to_string()) != Some(n.clone()));
                }
                drop(st);
                Ok(self.reply(op, 204, None))
            }
            "getNetworkPolicies" => {
                drop(st);
                Ok(self.reply(op, 200, Some(json!({
                    "effective": {"mode": "denyAll", "allowNetworks": [{"network": "api.example.com", "layer": "owner"}],
                        "denyNetworks": [{"network": "10.0.0.0/8", "layer": "org"}]},
                    "exact": {"revision": "3", "selectorVersion": "destination.v1", "nodes": [{"source": {"origin": "organization", "id": "org-default"}, "constant": "false"}]}
                }))))
            }
            _ => {
                let start: usize = query
                    .get("pageToken")
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(0);
                drop(st);
                let entries: Vec<Value> = (start..start + 2)
                    .map(|i| json!({"resource": format!("h{i}.example.com:443"), "decision": if i % 2 == 0 {"allowed"} else {"blocked"},
                        "proxyType": "forward", "rule": "r", "reason": "denied-by-rule", "count": "3",
                        "firstSeen": "2026-12-05T08:00:00Z", "lastSeen": "2026-12-05T08:00:01Z",
                        "sandbox": "sandboxes/u0001", "domain": "network"}))
                    .collect();
                let mut v = json!({"entries": entries});
                if start == 0 {
                    v["nextPageToken"] = json!("2");
                }
                Ok(self.reply(op, 200, Some(v)))
            }
        }
    }

    fn cred_ok(&self, uid: &str, bearer: &str) -> bool {
        let mut st = self.st.lock().unwrap();
        if self.unix.is_some() {
            if !bearer.is_empty() {
                st.violations
                    .push("a credential sent to a localSocket endpoint".into());
            }
            return true;
        }
        st.creds
            .get(bearer)
            .is_some_and(|(u, until)| u == uid && Instant::now() < *until)
    }

    #[allow(clippy::too_many_arguments)]
    fn endpoint(
        &self,
        method: &hyper::Method,
        uid: &str,
        sub: &str,
        query: &HashMap<String, String>,
        bearer: &str,
        ct: &str,
        json_body: Option<Value>,
        raw: Bytes,
        idem: Option<String>,
    ) -> Resp {
        let segs: Vec<&str> = sub.trim_start_matches('/').split('/').collect();
        let op: &'static str = match (method.as_str(), segs.as_slice()) {
            ("POST", ["v1", "processes", "exec"]) => "exec",
            ("POST", ["v1", "processes"]) => "createProcess",
            ("POST", ["v1", "processes", _, "signal"]) => "signal",
            ("GET", ["v1", "processes", _, "output"]) => "readOutput",
            ("GET", ["v1", "files", "content"]) => "readFile",
            ("GET", ["v1", "files", "download"]) => "download",
            ("PUT", ["v1", "files", "content"]) => "writeFile",
            ("PUT", ["v1", "files", "directories"]) => "mkdir",
            ("POST", ["v1", "files", "upload"]) => "upload",
            ("GET", ["v1", "files", "stat"]) => "stat",
            ("GET", ["v1", "files"]) => "list",
            ("DELETE", ["v1", "files"]) => "remove",
            ("POST", ["v1", "files", "move"]) => "move",
            _ => {
                return self.reply(
                    "exec",
                    404,
                    Some(err("notFound", &format!("no route {method} {sub}"))),
                )
            }
        };
        if let Some(b) = &json_body {
            self.check_req(op, b);
        }
        self.check_query(op, query);
        self.st
            .lock()
            .unwrap()
            .seen
            .push((op.to_string(), idem, None));
        if !self.cred_ok(uid, bearer) {
            return self.reply(
                op,
                401,
                Some(err(
                    "unauthenticated",
                    "scoped credential missing or expired",
                )),
            );
        }
        let mut st = self.st.lock().unwrap();
        if let Some(i) = st.faults.iter().position(|f| f.op == op) {
            let f = st.faults.remove(i).unwrap();
            drop(st);
            return self.reply(op, f.status, Some(f.body));
        }
        let b = json_body.unwrap_or_default();
        match op {
            "exec" => {
                let cmd: Vec<String> = serde_json::from_value(b["cmd"].clone()).unwrap_or_default();
                drop(st);
                let out = cmd.join(" ");
                self.reply(op, 200, Some(json!({"exitCode": 3, "stdout": base64::engine::general_purpose::STANDARD.encode(out), "stderr": "", "incomplete": false})))
            }
            "createProcess" => {
                st.next_id += 1;
                let id = format!("p{}", st.next_id);
                let cmd: Vec<String> = serde_json::from_value(b["cmd"].clone()).unwrap_or_default();
                let mut p = Proc::default();
                if cmd.first().map(String::as_str) == Some("cat") {
                    p.echo = true;
                } else if cmd.first().map(String::as_str) == Some("sleep") {
                } else {
                    for i in 0..10 {
                        p.chunks.push((
                            if i % 3 == 2 { "stderr" } else { "stdout" }.into(),
                            format!("line {i}\n").into_bytes(),
                        ));
                    }
                    p.exit = Some(7);
                }
                st.processes.insert(id.clone(), p);
                drop(st);
                self.reply(op, 201, Some(json!({"uid": id, "pid": 42, "state": "running", "label": format!("l-{id}"),
                    "name": format!("processes/{id}"), "lastStreamSequence": "0", "receiptKind": "fresh"})))
            }
            "readOutput" => {
                let id = segs[2];
                let from: usize = query
                    .get("resumeFrom")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                st.polls.push(from);
                let Some(p) = st.processes.get(id) else {
                    drop(st);
                    return self.reply(op, 404, Some(err("notFound", "process not found")));
                };
                // pages of at most 3 chunks, so the cursor has to move
                let page: Vec<Value> = p
                    .chunks
                    .iter()
                    .enumerate()
                    .skip(from)
                    .take(3)
                    .map(|(i, (stream, data))| {
                        json!({"stream": stream,
                        "data": base64::engine::general_purpose::STANDARD.encode(data),
                        "streamSequence": (i + 1).to_string()})
                    })
                    .collect();
                let next = from + page.len();
                let mut v = json!({"chunks": page, "nextResumeFrom": next.to_string()});
                if let Some(code) = p.exit.filter(|_| next >= p.chunks.len()) {
                    v["exited"] = json!({"exitCode": code, "reason": "exited"});
                }
                drop(st);
                self.reply(op, 200, Some(v))
            }
            "signal" => {
                let id = segs[2];
                if let Some(p) = st.processes.get_mut(id) {
                    p.killed = Some(b["signal"].as_str().unwrap_or("").to_string());
                    p.exit = Some(if b["signal"] == "kill" { 137 } else { 143 });
                }
                drop(st);
                self.reply(op, 200, Some(json!({})))
            }
            "readFile" => {
                let path = query.get("path").cloned().unwrap_or_default();
                match st.files.get(&path).cloned() {
                    Some(d) => Response::builder()
                        .status(200)
                        .header("content-type", "application/octet-stream")
                        .body(Full::new(Bytes::from(d)))
                        .unwrap(),
                    None => {
                        drop(st);
                        self.reply(op, 404, Some(err("notFound", "no such file")))
                    }
                }
            }
            "download" => {
                let paths: Vec<String> = query
                    .get("paths")
                    .map(|p| p.split('\n').map(str::to_string).collect())
                    .unwrap_or_default();
                let mut parts: Vec<(&str, &str, Vec<u8>)> = Vec::new();
                for p in &paths {
                    let (name, part) = match (st.files.get(p), st.dirs.contains(p)) {
                        (Some(d), _) => {
                            let h = json!({"path": p, "mode": 420});
                            parts.push(("metadata", "application/json", h.to_string().into()));
                            ("content", d.clone())
                        }
                        (None, true) => {
                            let e = json!({"path": p, "failure": err("failedPrecondition",
                                &format!("path_authority_nonregular_object: {p} is a directory"))});
                            ("error", e.to_string().into_bytes())
                        }
                        (None, false) => {
                            let e = json!({"path": p, "failure": err("notFound", "no such file")});
                            ("error", e.to_string().into_bytes())
                        }
                    };
                    let ctype = if name == "content" {
                        "application/octet-stream"
                    } else {
                        "application/json"
                    };
                    parts.push((name, ctype, part));
                }
                for (name, _, data) in &parts {
                    let schema = match *name {
                        "metadata" => "FileHeader",
                        "error" => "FileError",
                        _ => continue,
                    };
                    let v: Value = serde_json::from_slice(data).unwrap();
                    if let Err(e) = contract().check_schema(schema, &v) {
                        st.violations.push(format!("download {schema}: {e:?}"));
                    }
                }
                let fault = st.download_fault.take();
                drop(st);
                match fault {
                    Some("stream-error") => parts.push((
                        "stream-error",
                        "application/json",
                        err("internal", "the disk went away")
                            .to_string()
                            .into_bytes(),
                    )),
                    Some("shuffled") => parts.swap(0, 1),
                    _ => {}
                }
                let (boundary, body) = crate::core::multipart::write("attachment", &parts);
                let mut body = body.to_vec();
                if fault == Some("cut") {
                    body.truncate(body.len() - boundary.len() - 6);
                }
                Response::builder()
                    .status(200)
                    .header(
                        "content-type",
                        format!("multipart/mixed; boundary={boundary}"),
                    )
                    .body(Full::new(Bytes::from(body)))
                    .unwrap()
            }
            "writeFile" => {
                let path = query.get("path").cloned().unwrap_or_default();
                let n = raw.len();
                st.files.insert(path.clone(), raw.to_vec());
                drop(st);
                self.reply(op, 200, Some(json!({"info": {"path": path, "size": n.to_string(), "mode": 420, "isDir": false, "type": "regular"}})))
            }
            "mkdir" => {
                let path = b["path"].as_str().unwrap_or_default().to_string();
                let answer = match fake_info(&st, &path) {
                    Err(()) => (
                        400,
                        err("failedPrecondition", "a parent is not a directory"),
                    ),
                    Ok(Some(i)) if i["type"] == "directory" => (200, json!({})),
                    Ok(Some(_)) => (409, err("alreadyExists", &format!("{path} exists"))),
                    Ok(None) if b["parents"] == json!(true) => {
                        let mut at = String::new();
                        for seg in path.split('/').filter(|s| !s.is_empty()) {
                            at = format!("{at}/{seg}");
                            st.dirs.insert(at.clone());
                        }
                        (200, json!({}))
                    }
                    Ok(None) => match fake_info(&st, fake_parent(&path)) {
                        Ok(Some(p)) if p["type"] == "directory" => {
                            st.dirs.insert(path);
                            (200, json!({}))
                        }
                        _ => (404, err("notFound", "the parent does not exist")),
                    },
                };
                drop(st);
                self.reply(op, answer.0, Some(answer.1))
            }
            "stat" => {
                let path = query.get("path").cloned().unwrap_or_default();
                let answer = match fake_info(&st, &path) {
                    Ok(Some(i)) => (200, json!({"info": i})),
                    Ok(None) => (404, err("notFound", &format!("no such path: {path}"))),
                    Err(()) => (
                        400,
                        err("failedPrecondition", &format!("{path}: not a directory")),
                    ),
                };
                drop(st);
                self.reply(op, answer.0, Some(answer.1))
            }
            "list" => {
                let path = query.get("path").cloned().unwrap_or_default();
                let answer = match fake_info(&st, &path) {
                    Ok(Some(i)) if i["type"] == "directory" => {
                        let mut all: Vec<String> = st
                            .dirs
                            .iter()
                            .chain(st.files.keys())
                            .chain(st.dangling.keys())
                            .filter(|p| *p != "/" && fake_parent(p) == path)
                            .cloned()
                            .collect();
                        all.sort();
                        // pages of two, so a listing of three or more walks pages
                        let start: usize = query
                            .get("pageToken")
                            .map_or(0, |t| t.trim_start_matches('t').parse().unwrap_or(0));
                        let entries: Vec<Value> = all
                            .iter()
                            .skip(start)
                            .take(2)
                            .map(|p| fake_info(&st, p).unwrap().unwrap())
                            .collect();
                        let next = if start + 2 < all.len() {
                            format!("t{}", start + 2)
                        } else {
                            String::new()
                        };
                        (200, json!({"entries": entries, "nextPageToken": next}))
                    }
                    Ok(Some(_)) | Err(()) => (
                        400,
                        err("failedPrecondition", &format!("{path} is not a directory")),
                    ),
                    Ok(None) => (404, err("notFound", &format!("no such directory: {path}"))),
                };
                drop(st);
                self.reply(op, answer.0, Some(answer.1))
            }
            "remove" => {
                let path = query.get("path").cloned().unwrap_or_default();
                let recursive = query.get("recursive").map(String::as_str) == Some("true");
                let under = format!("{path}/");
                let inside: Vec<String> = st
                    .dirs
                    .iter()
                    .chain(st.files.keys())
                    .chain(st.dangling.keys())
                    .filter(|p| p.starts_with(&under))
                    .cloned()
                    .collect();
                let answer = if !inside.is_empty() && !recursive {
                    (
                        400,
                        err(
                            "failedPrecondition",
                            &format!("{path}: directory not empty"),
                        ),
                    )
                } else {
                    let mut done = inside;
                    done.sort_by(|a, b| b.cmp(a));
                    if st.dirs.contains(&path)
                        || st.files.contains_key(&path)
                        || st.dangling.contains_key(&path)
                    {
                        done.push(path.clone());
                    }
                    for p in &done {
                        st.dirs.remove(p);
                        st.files.remove(p);
                        st.dangling.remove(p);
                    }
                    (
                        200,
                        json!({"completedPaths": done, "completedCount": done.len()}),
                    )
                };
                drop(st);
                self.reply(op, answer.0, Some(answer.1))
            }
            "move" => {
                let (from, to) = (
                    b["from"].as_str().unwrap_or_default().to_string(),
                    b["to"].as_str().unwrap_or_default().to_string(),
                );
                let answer = match (
                    fake_info(&st, &from),
                    fake_info(&st, &to),
                    fake_info(&st, fake_parent(&to)),
                ) {
                    (Ok(None) | Err(()), _, _) => {
                        (404, err("notFound", &format!("no such path: {from}")))
                    }
                    (_, Ok(Some(t)), _) if t["type"] == "directory" => (
                        409,
                        err(
                            "failedPrecondition",
                            &format!("move_destination_is_directory: {to} is a directory"),
                        ),
                    ),
                    (_, _, Ok(Some(p))) if p["type"] == "directory" => {
                        let under = format!("{from}/");
                        let moved: Vec<String> = st
                            .dirs
                            .iter()
                            .chain(st.files.keys())
                            .filter(|p| **p == from || p.starts_with(&under))
                            .cloned()
                            .collect();
                        for p in moved {
                            let q = format!("{to}{}", &p[from.len()..]);
                            if st.dirs.remove(&p) {
                                st.dirs.insert(q.clone());
                            }
                            if let Some(d) = st.files.remove(&p) {
                                st.files.insert(q, d);
                            }
                        }
                        (200, json!({}))
                    }
                    _ => (
                        404,
                        err("notFound", &format!("the directory of {to} does not exist")),
                    ),
                };
                drop(st);
                self.reply(op, answer.0, Some(answer.1))
            }
            _ => {
                // upload: parse metadata/content pairs
                let boundary = crate::core::multipart::boundary_of(ct, "multipart/form-data")
                    .unwrap_or_default();
                let parts = match crate::core::multipart::parse(&raw, &boundary, "form-data") {
                    Ok(p) => p,
                    Err(e) => {
                        st.violations.push(format!("upload: {e}"));
                        drop(st);
                        return self.reply(op, 400, Some(err("invalidArgument", &e)));
                    }
                };
                let mut n = 0;
                let mut violations = vec![];
                // a directory where a file is to go refuses the whole upload (the contract's nonregular object)
                for pair in parts.chunks(2) {
                    let header: Value = serde_json::from_slice(&pair[0].data).unwrap_or_default();
                    let path = header["path"].as_str().unwrap_or_default();
                    if st.dirs.contains(path) {
                        drop(st);
                        return self.reply(op, 409, Some(err("failedPrecondition", &format!(
                            "path_authority_nonregular_object: {path} names a directory where a regular file is required"))));
                    }
                }
                for pair in parts.chunks(2) {
                    let header: Value = serde_json::from_slice(&pair[0].data).unwrap_or_default();
                    if let Err(e) = contract().check_schema("FileHeader", &header) {
                        violations.push(format!("upload FileHeader: {e:?}"));
                    }
                    let data = pair.get(1).map(|p| &p.data[..]).unwrap_or_default();
                    st.files.insert(
                        header["path"].as_str().unwrap_or("").to_string(),
                        data.to_vec(),
                    );
                    st.uploads.push(header);
                    n += 1;
                }
                st.violations.extend(violations);
                drop(st);
                self.reply(op, 200, Some(json!({"filesWritten": n})))
            }
        }
    }

    /// Check the query of endpoint operation `op` against its declared query parameters: none unknown, the
    /// required ones there, each value valid for its schema (booleans and integers read from their text).
    fn check_query(&self, op: &str, query: &HashMap<String, String>) {
        let Some(o) = contract().operation(op) else {
            return;
        };
        let params: Vec<&Value> = o.spec["parameters"]
            .as_array()
            .map(|a| a.iter().filter(|p| p["in"] == "query").collect())
            .unwrap_or_default();
        let mut bad = Vec::new();
        for p in &params {
            let name = p["name"].as_str().unwrap_or_default();
            if p["required"] == json!(true) && !query.contains_key(name) {
                bad.push(format!("{op}: query parameter {name} is required"));
            }
        }
        for (k, v) in query {
            let Some(p) = params.iter().find(|p| p["name"] == json!(k)) else {
                bad.push(format!("{op}: unknown query parameter {k}"));
                continue;
            };
            let value = match p["schema"]["type"].as_str() {
                Some("boolean") => match v.as_str() {
                    "true" => json!(true),
                    "false" => json!(false),
                    _ => json!(v),
                },
                Some("integer") => v.parse::<i64>().map_or(json!(v), |n| json!(n)),
                Some("array") => json!(v.split('\n').collect::<Vec<_>>()),
                _ => json!(v),
            };
            if let Err(e) = contract().check(&format!("{op} query {k}"), &p["schema"], &value) {
                bad.extend(e);
            }
        }
        self.st.lock().unwrap().violations.extend(bad);
    }

    fn interact(self: &Arc<Self>, mut req: Request<Incoming>, path: &str, bearer: &str) -> Resp {
        let uid = path
            .trim_start_matches("/ep/")
            .split('/')
            .next()
            .unwrap_or("")
            .to_string();
        let id = path.rsplit('/').nth(1).unwrap_or("").to_string();
        let offered: Vec<String> = req
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(',')
            .map(|p| p.trim().to_string())
            .collect();
        let carried: Vec<String> = offered
            .iter()
            .filter_map(|p| p.strip_prefix("sandboxes.bearer.v1."))
            .filter_map(|t| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(t)
                    .ok()
            })
            .map(|t| String::from_utf8_lossy(&t).into_owned())
            .collect();
        let only = self.st.lock().unwrap().subprotocol_only;
        // exactly one carrier: never both, never the header where only the subprotocol is advertised
        if carried.len() > 1
            || (!carried.is_empty() && !bearer.is_empty())
            || (only && !bearer.is_empty())
        {
            return self.reply(
                "interact",
                400,
                Some(err("invalidArgument", "mixed or misplaced credentials")),
            );
        }
        let token = carried.first().map(String::as_str).unwrap_or(bearer);
        self.st.lock().unwrap().ws_auth.push(if carried.is_empty() {
            "header"
        } else {
            "subprotocol"
        });
        if !self.cred_ok(&uid, token) {
            return self.reply(
                "interact",
                401,
                Some(err(
                    "unauthenticated",
                    "scoped credential missing or expired",
                )),
            );
        }
        if !offered.iter().any(|p| p == "sandboxes.v1") {
            return self.reply(
                "interact",
                400,
                Some(err("invalidArgument", "no subprotocol")),
            );
        }
        let key = req.headers().get("sec-websocket-key").cloned().unwrap();
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let me = self.clone();
        let fault = me.st.lock().unwrap().ws_faults.pop_front();
        if fault == Some(WsFault::Refuse) {
            return Response::builder()
                .status(502)
                .header("content-type", "text/plain")
                .body(Full::new(Bytes::from_static(
                    b"Bad Gateway (the proxy does not pass WebSockets)",
                )))
                .unwrap();
        }
        tokio::spawn(async move {
            let up = hyper::upgrade::on(&mut req).await.unwrap();
            let ws = WebSocketStream::from_raw_socket(TokioIo::new(up), Role::Server, None).await;
            me.session(ws, &id, fault).await;
        });
        Response::builder()
            .status(101)
            .header("upgrade", "websocket")
            .header("connection", "Upgrade")
            .header("sec-websocket-accept", accept)
            .header("sec-websocket-protocol", "sandboxes.v1")
            .body(Full::new(Bytes::new()))
            .unwrap()
    }

    fn out_frame(&self, v: Value) -> Message {
        if let Err(e) = contract().check_schema("ProcessOutput", &v) {
            self.st
                .lock()
                .unwrap()
                .violations
                .push(format!("ProcessOutput: {e:?}"));
        }
        Message::text(v.to_string())
    }

    async fn session(
        &self,
        mut ws: WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>,
        id: &str,
        fault: Option<WsFault>,
    ) {
        let Some(Ok(Message::Text(first))) = ws.next().await else {
            return;
        };
        let attach: Value = serde_json::from_str(first.as_str()).unwrap_or_default();
        if let Err(e) = contract().check_schema("InteractRequest", &attach) {
            self.st
                .lock()
                .unwrap()
                .violations
                .push(format!("attach: {e:?}"));
        }
        let from: usize =
            super::interact::int64(&attach["attach"]["resumeFrom"]).unwrap_or(0) as usize;
        self.st.lock().unwrap().attaches.push(from);
        let close = |code: u16| CloseFrame {
            code: CloseCode::from(code),
            reason: "".into(),
        };
        match &fault {
            Some(WsFault::Close(code, v1)) => {
                let _ = ws.send(Message::text(err(v1, "refused").to_string())).await;
                let _ = ws.send(Message::Close(Some(close(*code)))).await;
                return;
            }
            Some(WsFault::Binary) => {
                let _ = ws.send(Message::binary(vec![1u8, 2, 3])).await;
                return;
            }
            Some(WsFault::Huge(n)) => {
                let _ = ws.send(Message::text("x".repeat(*n))).await;
                return;
            }
            _ => {}
        }
        let mut sent = 0;
        let mut seq = from;
        loop {
            // the next chunk to send, if any
            let (chunk, exit, echo) = {
                let st = self.st.lock().unwrap();
                let p = st.processes.get(id).unwrap();
                (p.chunks.get(seq).cloned(), p.exit, p.echo)
            };
            if let Some((stream, data)) = chunk {
                match &fault {
                    Some(WsFault::DropAfter(n)) if sent == *n => return, // dropped: no close frame
                    Some(WsFault::Silent(n)) if sent == *n => {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        return;
                    }
                    Some(WsFault::ExpireAfter(n)) if sent == *n => {
                        self.st.lock().unwrap().creds.clear();
                        let _ = ws
                            .send(Message::text(
                                err("unauthenticated", "credential expired").to_string(),
                            ))
                            .await;
                        let _ = ws.send(Message::Close(Some(close(1008)))).await;
                        return;
                    }
                    _ => {}
                }
                seq += 1;
                sent += 1;
                let f = self.out_frame(json!({"chunk": {"stream": stream, "data": base64::engine::general_purpose::STANDARD.encode(&data), "streamSequence": seq.to_string()}}));
                if ws.send(f).await.is_err() {
                    return;
                }
                continue;
            }
            if let Some(code) = exit {
                let f = self.out_frame(json!({"exited": {"exitCode": code, "reason": "exited"}}));
                let _ = ws.send(f).await;
                let _ = ws.send(Message::Close(Some(close(1000)))).await;
                return;
            }
            // wait for input (echo processes) or a signal
            let msg = tokio::time::timeout(Duration::from_millis(20), ws.next()).await;
            let Ok(msg) = msg else { continue };
            let Some(Ok(Message::Text(t))) = msg else {
                return;
            };
            let v: Value = serde_json::from_str(t.as_str()).unwrap_or_default();
            if let Err(e) = contract().check_schema("InteractRequest", &v) {
                self.st
                    .lock()
                    .unwrap()
                    .violations
                    .push(format!("frame: {e:?}"));
            }
            let mut st = self.st.lock().unwrap();
            let p = st.processes.get_mut(id).unwrap();
            if let Some(d) = v["stdin"].as_str() {
                if echo {
                    let data = base64::engine::general_purpose::STANDARD.decode(d).unwrap();
                    p.chunks.push(("stdout".into(), data));
                }
            } else if v["closeStdin"] == true && echo {
                p.exit = Some(0);
            } else if let Some(r) = v.get("resize") {
                p.chunks.push((
                    "stdout".into(),
                    format!("resized {}x{}\n", r["cols"], r["rows"]).into_bytes(),
                ));
            }
        }
    }
}

/// The stdout of the fake's scripted process (lines 0–9, every third on stderr).
/// The parent of an absolute path (`/` for `/x`).
fn fake_parent(p: &str) -> &str {
    match p.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &p[..i],
    }
}

/// The fake endpoint's `FileInfo` for `path`: `Err` when a parent is a file, `None` when nothing is there.
fn fake_info(st: &St, path: &str) -> Result<Option<Value>, ()> {
    let mut at = String::new();
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    for seg in segs.iter().take(segs.len().saturating_sub(1)) {
        at = format!("{at}/{seg}");
        if st.files.contains_key(&at) {
            return Err(());
        }
    }
    Ok(if path == "/" || st.dirs.contains(path) {
        Some(json!({"path": path, "size": "4096", "mode": 493, "isDir": true, "type": "directory"}))
    } else if let Some(d) = st.files.get(path) {
        // the size as a number here (an int64 may come as either)
        Some(json!({"path": path, "size": d.len(), "mode": 420, "isDir": false, "type": "regular"}))
    } else {
        st.dangling.get(path).map(|t| {
            json!({"path": path, "size": t.len().to_string(), "mode": 511, "isDir": false, "type": "symlink", "linkTarget": t})
        })
    })
}

fn scripted_stdout() -> Vec<u8> {
    (0..10)
        .filter(|i| i % 3 != 2)
        .flat_map(|i| format!("line {i}\n").into_bytes())
        .collect()
}

fn bump(s: &mut Value) {
    let n: u64 = s["core"]["etag"]
        .as_str()
        .unwrap_or("\"0\"")
        .trim_matches('"')
        .parse()
        .unwrap_or(0);
    s["core"]["etag"] = json!(format!("\"{}\"", n + 1));
}

struct Pki {
    pem: String,
    cfg: Arc<rustls::ServerConfig>,
}

fn pki() -> Pki {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "v1 test CA");
    let ca = params.self_signed(&key).unwrap();
    let issuer = Issuer::new(params, key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone(), CertificateDer::from(ca.der().to_vec())],
            der,
        )
        .unwrap();
    Pki {
        pem: ca.pem(),
        cfg: Arc::new(cfg),
    }
}

/// Start the fake cloud; returns it and the options that reach it with a PAT.
async fn cloud() -> (Arc<Fake>, V1Options) {
    let pki = pki();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let fake = Arc::new(Fake {
        st: Mutex::new(St {
            access_ttl: 900,
            cred_ttl: Duration::from_secs(300),
            ..Default::default()
        }),
        port,
        unix: None,
    });
    let acceptor = tokio_rustls::TlsAcceptor::from(pki.cfg.clone());
    let f = fake.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, f) = (acceptor.clone(), f.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(move |req| f.clone().serve(req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    let o = V1Options {
        endpoint: Some(format!("https://localhost:{port}/sandboxes")),
        identifier: Some(ID.into()),
        pat: Some(PAT.into()),
        hub_url: Some(format!("https://localhost:{port}")),
        ca_pem: Some(pki.pem),
        ..Default::default()
    };
    (fake, o)
}

/// The fake over Unix sockets with `localSocket` authentication (LocalSandboxd's form); `dir` holds the sockets.
async fn local(dir: &std::path::Path) -> (Arc<Fake>, V1Options) {
    let fake = Arc::new(Fake {
        st: Mutex::new(St::default()),
        port: 0,
        unix: Some(dir.to_path_buf()),
    });
    let mgmt = dir.join("mgmt.sock");
    serve_unix(
        tokio::net::UnixListener::bind(&mgmt).unwrap(),
        fake.clone(),
        "/sandboxes".into(),
    );
    let o = V1Options {
        endpoint: Some(format!("unix://{}", mgmt.display())),
        ..Default::default()
    };
    (fake, o)
}

fn backend(o: &V1Options) -> V1Backend {
    V1Backend::new(o).unwrap()
}

fn call_ms(ms: u64) -> Call {
    Call::new(Some(Duration::from_millis(ms)), CancellationToken::new())
}

fn spec(name: &str) -> SandboxSpec {
    SandboxSpec {
        name: Some(name.into()),
        agent: "shell".into(),
        workspace: "/work/proj".into(),
        template: Some("docker/sandbox-templates:shell".into()),
        environment: [("GREETING".to_string(), "hi".to_string())].into(),
        labels: [("team".to_string(), "a".to_string())].into(),
        ..Default::default()
    }
}

/// No contract violation on either side, and no secret in `e`.
fn clean(f: &Fake) {
    let st = f.st.lock().unwrap();
    assert!(
        st.violations.is_empty(),
        "contract violations: {:#?}",
        st.violations
    );
}

fn no_secret(e: &Error, f: &Fake) {
    let text = format!("{e:?} {}", e.message);
    assert!(
        !text.contains(PAT) && !text.contains(STATIC),
        "secret in {text}"
    );
    let st = f.st.lock().unwrap();
    for t in st.access.iter().chain(st.creds.keys()) {
        assert!(!text.contains(t.as_str()), "token in {text}");
    }
    assert!(!text.contains("ep-cred-"), "endpoint credential in {text}");
}

async fn created(f: &Arc<Fake>, b: &V1Backend, name: &str) {
    b.create(&spec(name), &call_ms(10_000)).await.unwrap();
    clean(f);
}

// ---------------------------------------------------------------- the must-show path

#[tokio::test]
async fn pat_exchange_create_202_poll_and_lifecycle_with_etags() {
    let (f, o) = cloud().await;
    let b = backend(&o);
    assert_eq!(b.kind(), "v1");
    let s = b.create(&spec("dev"), &call_ms(10_000)).await.unwrap();
    assert_eq!((s.name.as_str(), s.status.as_str()), ("dev", "running"));
    assert_eq!(s.workspace, "/work/proj");
    assert_eq!(
        s.template.as_deref(),
        Some("docker/sandbox-templates:shell")
    );
    assert_eq!(s.labels.get("team").map(String::as_str), Some("a"));
    assert_eq!(
        f.st.lock().unwrap().exchanges,
        1,
        "one PAT exchange, reused"
    );
    // a 412 then a retry with the current etag
    f.st.lock().unwrap().faults.push_back(Fault {
        op: "stopSandbox",
        status: 412,
        body: json!({"code": "failedPrecondition", "message": "etag mismatch",
            "details": [{"@type": "type.googleapis.com/docker.sandboxes.v1.EtagMismatch", "currentEtag": "\"9\""}]}),
    });
    b.stop("dev", &call_ms(10_000)).await.unwrap();
    assert_eq!(
        b.get("dev", &call_ms(5000)).await.unwrap().unwrap().status,
        "stopped"
    );
    b.start("dev", &call_ms(10_000)).await.unwrap();
    b.remove("dev", false, &call_ms(10_000)).await.unwrap();
    assert!(b.get("dev", &call_ms(5000)).await.unwrap().is_none());
    b.remove("dev", true, &call_ms(5000)).await.unwrap();
    let st = f.st.lock().unwrap();
    let stops: Vec<_> = st.seen.iter().filter(|s| s.0 == "stopSandbox").collect();
    assert_eq!(stops.len(), 2, "412 then one retry");
    assert_eq!(
        stops[0].1, stops[1].1,
        "the same Idempotency-Key on the retry"
    );
    assert!(
        stops.iter().all(|s| s.2.is_some()),
        "If-Match on every lifecycle call"
    );
    assert!(st
        .seen
        .iter()
        .any(|s| s.0 == "createSandbox" && s.1.is_some()));
    assert_eq!(st.exchanges, 1);
    drop(st);
    clean(&f);
}

#[tokio::test]
async fn snapshots_wait_until_ready_restore_as_new_sandboxes_and_delete_with_etags() {
    let (f, o) = cloud().await;
    let b = backend(&o);
    created(&f, &b, "snap-src").await;
    let want = SnapshotSpec {
        name: Some("before".into()),
        ..Default::default()
    };
    let snap = b
        .snapshot("snap-src", &want, &call_ms(10_000))
        .await
        .unwrap();
    assert_eq!(
        (
            snap.name.as_str(),
            snap.status.as_str(),
            snap.capture_mode.as_str()
        ),
        ("before", "ready", "disk"),
        "the 202 was polled until ready"
    );
    assert_eq!(snap.size_bytes, Some(4096), "int64 string read");
    let listed = b.snapshots(&call_ms(5000)).await.unwrap();
    assert_eq!(listed.iter().map(|s| &s.id).collect::<Vec<_>>(), [&snap.id]);
    // restored: a new sandbox with the source's labels (so its workspace), waited until it runs
    let r = b
        .restore(&snap.id, "snap-copy", &call_ms(10_000))
        .await
        .unwrap();
    assert_eq!(
        (r.name.as_str(), r.status.as_str()),
        ("snap-copy", "running")
    );
    assert_eq!(r.workspace, "/work/proj");
    let dup = b
        .restore(&snap.id, "snap-copy", &call_ms(5000))
        .await
        .unwrap_err();
    assert_eq!(dup.code, ErrorCode::SandboxConflict);
    let missing = b
        .restore("nope", "snap-other", &call_ms(5000))
        .await
        .unwrap_err();
    assert_eq!(missing.code, ErrorCode::SnapshotNotFound);
    assert_eq!(missing.props["snapshot"], "nope");
    let bad = b
        .snapshot(
            "snap-src",
            &SnapshotSpec {
                capture_mode: Some("memory".into()),
                ..Default::default()
            },
            &call_ms(5000),
        )
        .await
        .unwrap_err();
    assert_eq!(bad.code, ErrorCode::InvalidArgument);
    // a 412 on delete: read again once, then the current etag
    f.st.lock().unwrap().faults.push_back(Fault {
        op: "deleteSnapshot",
        status: 412,
        body: json!({"code": "failedPrecondition", "message": "etag mismatch",
            "details": [{"@type": "type.googleapis.com/docker.sandboxes.v1.EtagMismatch", "currentEtag": "\"7\""}]}),
    });
    b.remove_snapshot(&snap.id, false, &call_ms(5000))
        .await
        .unwrap();
    assert!(b.snapshots(&call_ms(5000)).await.unwrap().is_empty());
    let gone = b
        .remove_snapshot(&snap.id, false, &call_ms(5000))
        .await
        .unwrap_err();
    assert_eq!(gone.code, ErrorCode::SnapshotNotFound);
    b.remove_snapshot(&snap.id, true, &call_ms(5000))
        .await
        .unwrap();
    // a snapshot that fails is the failure's error, typed, in bounded time
    f.st.lock().unwrap().snapshot_fails = true;
    let e = b
        .snapshot("snap-src", &SnapshotSpec::default(), &call_ms(10_000))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::ResourceExhausted);
    assert_eq!(e.props["status"], "failed");
    no_secret(&e, &f);
    let st = f.st.lock().unwrap();
    for op in ["createSnapshot", "restoreSnapshot"] {
        assert!(
            st.seen.iter().any(|s| s.0 == op && s.1.is_some()),
            "{op} carries an Idempotency-Key"
        );
    }
    let deletes: Vec<_> = st.seen.iter().filter(|s| s.0 == "deleteSnapshot").collect();
    assert!(
        deletes.len() >= 2 && deletes.iter().all(|s| s.2.is_some()),
        "If-Match on every delete"
    );
    drop(st);
    clean(&f);
}

#[tokio::test]
async fn an_expiry_is_armed_at_create_and_renewed() {
    let (f, o) = cloud().await;
    let b = backend(&o);
    let mut sp = spec("ttl");
    sp.expiry = Some(Expiry::new(90_000.0, Some("stop"), "expiry.afterMs").unwrap());
    let s = b.create(&sp, &call_ms(10_000)).await.unwrap();
    let armed = s.expires_at.clone().expect("expiresAt reported");
    assert_eq!(
        f.st.lock().unwrap().create_requests.last().unwrap()["features"]["timeouts"],
        json!({"timeout": "90s", "onTimeout": "stop"})
    );
    let r = b
        .renew_expiry("ttl", Duration::from_millis(1500), &call_ms(5000))
        .await
        .unwrap();
    assert_eq!(
        f.st.lock().unwrap().renewals.last().unwrap()["timeout"],
        "1.5s"
    );
    assert!(
        r.expires_at.is_some() && r.expires_at != Some(armed),
        "re-armed"
    );
    // bad input before anything is sent; a service without renewal is ERR_UNSUPPORTED
    for (ms, action) in [
        (0.0, None),
        (f64::NAN, None),
        (4e10, None),
        (1000.0, Some("explode")),
    ] {
        let e = Expiry::new(ms, action, "expiry.afterMs").unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidArgument, "{ms} {action:?}");
    }
    f.st.lock().unwrap().faults.push_back(Fault {
        op: "renewSandboxTimeout",
        status: 501,
        body: err(
            "unimplemented",
            "This operation is not available on this service.",
        ),
    });
    let e = b
        .renew_expiry("ttl", Duration::from_secs(60), &call_ms(5000))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::Unsupported);
    assert!(b
        .renew_expiry("nope", Duration::from_secs(1), &call_ms(5000))
        .await
        .is_err());
    clean(&f);
}

fn github_secret(managed: bool) -> SecretSpec {
    SecretSpec {
        env: "GH_TOKEN".into(),
        value: "ghp_SUPERSECRETVALUE123".into(),
        hosts: vec!["api.github.com".into()],
        header: None,
        format: Some("Bearer %s".into()),
        managed,
    }
}

#[tokio::test]
async fn secrets_are_stored_attached_at_create_and_deleted_with_the_sandbox() {
    let (f, o) = cloud().await;
    let b = backend(&o);
    let made = b
        .create_with_secrets(&spec("sec"), &[github_secret(false)], &call_ms(10_000))
        .await
        .unwrap();
    assert!(
        !made.labels.contains_key(SECRETS_LABEL),
        "an SDK label, not shown"
    );
    {
        let st = f.st.lock().unwrap();
        let (uid, sec) = st.secrets.iter().next().expect("one stored secret");
        assert_eq!(sec["injection"]["envVar"], "GH_TOKEN");
        assert_eq!(sec["injection"]["header"], "authorization");
        assert_eq!(sec["injection"]["format"], "Bearer %s");
        assert_eq!(sec["displayName"], "sec-GH_TOKEN");
        let req = st.create_requests.last().unwrap();
        assert_eq!(
            req["features"]["storedSecrets"]["secrets"],
            json!([format!("secrets/{uid}")])
        );
        assert_eq!(req["labels"][SECRETS_LABEL], json!(uid));
    }
    // v1 attaches secrets at creation only; proxy-managed ones do not exist there
    let later = b
        .set_secrets("sec", &[github_secret(false)], &call_ms(5000))
        .await
        .unwrap_err();
    assert_eq!(later.code, ErrorCode::Unsupported);
    let managed = b
        .create_with_secrets(&spec("sec-m"), &[github_secret(true)], &call_ms(5000))
        .await
        .unwrap_err();
    assert_eq!(managed.code, ErrorCode::Unsupported);
    assert!(b.get("sec-m", &call_ms(5000)).await.unwrap().is_none());
    // a create refused after the secret was stored deletes the secret; no value in the error
    f.st.lock().unwrap().faults.push_back(Fault {
        op: "createSandbox",
        status: 400,
        body: err("invalidArgument", "imageRef is not allowed"),
    });
    let e = b
        .create_with_secrets(&spec("sec-f"), &[github_secret(false)], &call_ms(10_000))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidArgument);
    no_secret(&e, &f);
    assert!(!format!("{e:?}").contains("ghp_SUPERSECRETVALUE123"));
    assert_eq!(
        f.st.lock().unwrap().secrets.len(),
        1,
        "only the first sandbox's secret is left"
    );
    // removing the sandbox deletes its secret
    b.remove("sec", false, &call_ms(10_000)).await.unwrap();
    assert!(f.st.lock().unwrap().secrets.is_empty());
    assert_eq!(f.st.lock().unwrap().secret_values.len(), 2);
    clean(&f);
}

#[tokio::test]
async fn a_401_is_answered_with_one_fresh_exchange_and_short_tokens_are_refreshed_early() {
    let (f, o) = cloud().await;
    let b = backend(&o);
    b.list(&call_ms(5000)).await.unwrap();
    f.st.lock().unwrap().access.clear(); // the service forgets the token: 401
    b.list(&call_ms(5000)).await.unwrap();
    assert_eq!(f.st.lock().unwrap().exchanges, 2);
    // tokens living less than the refresh margin are exchanged again before use
    f.st.lock().unwrap().access_ttl = 30;
    f.st.lock().unwrap().access.clear();
    b.list(&call_ms(5000)).await.unwrap(); // 401 → exchange (30 s token)
    let n = f.st.lock().unwrap().exchanges;
    b.list(&call_ms(5000)).await.unwrap();
    assert_eq!(
        f.st.lock().unwrap().exchanges,
        n + 1,
        "refreshed before expiry"
    );
    clean(&f);
}

#[tokio::test]
async fn resource_exhausted_with_retry_info_is_retried_with_the_same_key() {
    let (f, o) = cloud().await;
    let b = backend(&o);
    f.st.lock().unwrap().faults.push_back(Fault {
        op: "createSandbox",
        status: 429,
        body: retry_info("resourceExhausted", "0.2s"),
    });
    let t = Instant::now();
    created(&f, &b, "dev").await;
    assert!(
        t.elapsed() >= Duration::from_millis(200),
        "RetryInfo honoured"
    );
    let st = f.st.lock().unwrap();
    let keys: Vec<_> = st
        .seen
        .iter()
        .filter(|s| s.0 == "createSandbox")
        .map(|s| s.1.clone())
        .collect();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0], keys[1]);
}

#[tokio::test]
async fn many_files_are_read_in_one_download() {
    let (f, o) = cloud().await;
    let b = backend(&o);
    created(&f, &b, "dev").await;
    let t = b.target("dev", &call_ms(5000)).await.unwrap();
    {
        let mut st = f.st.lock().unwrap();
        st.files.insert("/w/a".into(), b"alpha".to_vec());
        // content that looks like a delimiter, and binary
        st.files
            .insert("/w/b".into(), b"\r\n--x\r\n\x00\xff".to_vec());
        st.dirs.insert("/w".into());
        st.files.insert("/w/long name".into(), vec![b'z'; 100_000]);
    }
    let paths = |ps: &[&str]| ps.iter().map(|p| p.to_string()).collect::<Vec<_>>();
    let reads = || {
        f.st.lock()
            .unwrap()
            .seen
            .iter()
            .filter(|r| r.0 == "download" || r.0 == "readFile")
            .count()
    };
    let before = reads();
    let got = t
        .read_files(
            &paths(&["/w/a", "/w/b", "/w/a", "/w/long name"]),
            &call_ms(5000),
        )
        .await
        .unwrap();
    assert_eq!(got[0], b"alpha");
    assert_eq!(got[1], b"\r\n--x\r\n\x00\xff");
    assert_eq!(got[2], b"alpha");
    assert_eq!(got[3].len(), 100_000);
    assert_eq!(reads() - before, 1, "one request for four files");
    // more paths than one URL holds: batches, in order
    let many: Vec<String> = (0..1000)
        .map(|i| if i % 2 == 0 { "/w/a" } else { "/w/b" }.to_string())
        .collect();
    let before = reads();
    let got = t.read_files(&many, &call_ms(5000)).await.unwrap();
    assert_eq!(got.len(), 1000);
    assert!(got.iter().step_by(2).all(|g| g == b"alpha"));
    assert!(reads() - before > 1);
    // a path's own error is that path's typed error
    let e = t
        .read_files(&paths(&["/w/a", "/w/none"]), &call_ms(5000))
        .await
        .unwrap_err();
    assert_eq!(
        (e.code, e.props["path"].as_str()),
        (ErrorCode::PathNotFound, Some("/w/none"))
    );
    assert_eq!(e.props["v1Code"], "notFound");
    assert!(e.props.get("status").is_none(), "{e:?}");
    let e = t
        .read_files(&paths(&["/w"]), &call_ms(5000))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::NotAFile, "{e:?}");
    // a broken answer is never taken for fewer files
    for (fault, code) in [
        ("cut", ErrorCode::SandboxdProtocol),
        ("shuffled", ErrorCode::SandboxdProtocol),
        ("stream-error", ErrorCode::SandboxdProtocol),
    ] {
        f.st.lock().unwrap().download_fault = Some(fault);
        let e = t
            .read_files(&paths(&["/w/a", "/w/b"]), &call_ms(5000))
            .await
            .unwrap_err();
        assert_eq!(e.code, code, "{fault}: {e:?}");
        if fault == "stream-error" {
            assert_eq!(e.props["v1Code"], "internal", "{e:?}");
        }
    }
    clean(&f);
}

#[tokio::test]
async fn exec_spawn_files_and_credentials_cached_per_sandbox() {
    let (f, o) = cloud().await;
    let b = backend(&o);
    created(&f, &b, "dev").await;
    let t = b.target("dev", &call_ms(5000)).await.unwrap();
    let out = t
        .exec(
            ExecSpec {
                cmd: vec!["echo".into(), "hi".into()],
                ..Default::default()
            },
            CancellationToken::new(),
        )
        .await
        .unwrap();
    // exec runs a durable process (the fake's scripted one: ten lines, exit 7), not the one-shot exec
    assert_eq!(
        (out.exit_code, out.stdout.as_slice()),
        (Some(7), scripted_stdout().as_slice())
    );
    t.write_file("/work/proj/a.txt", b"hello", None, &call_ms(5000))
        .await
        .unwrap();
    assert_eq!(
        t.read_file("/work/proj/a.txt", &call_ms(5000))
            .await
            .unwrap(),
        b"hello"
    );
    let e = t.read_file("/nope", &call_ms(5000)).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::PathNotFound);
    // an archive: directories + one multipart upload
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    tar.append_data(&mut h, "sub/", &[][..]).unwrap();
    for (p, d) in [("sub/x.txt", &b"xx"[..]), ("y.bin", &b"\x00\xff"[..])] {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o600);
        h.set_size(d.len() as u64);
        tar.append_data(&mut h, p, d).unwrap();
    }
    t.write_files(
        "/work/proj",
        Bytes::from(tar.into_inner().unwrap()),
        &call_ms(5000),
    )
    .await
    .unwrap();
    assert_eq!(f.st.lock().unwrap().files["/work/proj/y.bin"], b"\x00\xff");
    assert_eq!(
        f.st.lock().unwrap().uploads[0],
        json!({"path": "/work/proj/sub/x.txt", "mode": 0o600})
    );
    // spawn: ordered output, exit code
    let p = t
        .spawn(
            ExecSpec {
                cmd: vec!["gen".into()],
                ..Default::default()
            },
            CancellationToken::new(),
        )
        .await
        .unwrap();
    let (mut so, mut se) = (Vec::new(), Vec::new());
    while let Some(c) = p.next().await {
        let (err, d) = c.unwrap().into_parts();
        if err {
            se.extend_from_slice(&d)
        } else {
            so.extend_from_slice(&d)
        }
    }
    assert_eq!(String::from_utf8(se).unwrap(), "line 2\nline 5\nline 8\n");
    assert_eq!(p.wait(&call_ms(5000)).await.unwrap().exit_code, Some(7));
    // stdin over the socket, closeStdin
    let p = t
        .spawn(
            ExecSpec {
                cmd: vec!["cat".into()],
                interactive: true,
                ..Default::default()
            },
            CancellationToken::new(),
        )
        .await
        .unwrap();
    p.write(b"ping\n").await.unwrap();
    let c = p.next().await.unwrap().unwrap();
    assert_eq!(c.data().as_ref(), b"ping\n");
    p.end().await.unwrap();
    assert_eq!(p.wait(&call_ms(5000)).await.unwrap().exit_code, Some(0));
    // buffered exec with stdin goes through a durable process
    let out = t
        .exec(
            ExecSpec {
                cmd: vec!["cat".into()],
                stdin: Some(Bytes::from_static(b"abc")),
                ..Default::default()
            },
            CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(
        (out.exit_code, out.stdout.as_slice()),
        (Some(0), &b"abc"[..])
    );
    // kill
    let p = t
        .spawn(
            ExecSpec {
                cmd: vec!["sleep".into()],
                ..Default::default()
            },
            CancellationToken::new(),
        )
        .await
        .unwrap();
    p.kill("SIGKILL").await.unwrap();
    let st = p.wait(&call_ms(5000)).await.unwrap();
    assert_eq!(
        (st.exit_code, st.signal.as_deref()),
        (Some(137), Some("SIGKILL"))
    );
    let mint = f.st.lock().unwrap().minted;
    assert!(
        mint <= 3,
        "credentials cached per sandbox and permission set, minted {mint}"
    );
    clean(&f);
}

#[tokio::test]
async fn a_socket_dropped_mid_output_is_resumed_with_no_loss_and_no_duplicate() {
    let (f, o) = cloud().await;
    let b = backend(&o);
    created(&f, &b, "dev").await;
    let t = b.target("dev", &call_ms(5000)).await.unwrap();
    f.st.lock()
        .unwrap()
        .ws_faults
        .extend([WsFault::DropAfter(3), WsFault::DropAfter(2)]);
    let p = t
        .spawn(
            ExecSpec {
                cmd: vec!["gen".into()],
                ..Default::default()
            },
            CancellationToken::new(),
        )
        .await
        .unwrap();
    let all = all_output(&*p).await;
    let want = gen_lines();
    assert_eq!(String::from_utf8(all).unwrap(), want);
    assert_eq!(p.wait(&call_ms(5000)).await.unwrap().exit_code, Some(7));
    assert_eq!(
        f.st.lock().unwrap().attaches,
        [0, 3, 5],
        "resumed from the last sequence each time"
    );
    clean(&f);
}

#[tokio::test]
async fn an_endpoint_that_takes_credentials_only_as_a_subprotocol_gets_them_there() {
    let (f, o) = cloud().await;
    f.st.lock().unwrap().subprotocol_only = true;
    let b = backend(&o);
    created(&f, &b, "dev").await;
    let t = b.target("dev", &call_ms(5000)).await.unwrap();
    // a dropped socket is re-attached the same way, with no loss
    f.st.lock()
        .unwrap()
        .ws_faults
        .push_back(WsFault::DropAfter(4));
    let p = t
        .spawn(
            ExecSpec {
                cmd: vec!["gen".into()],
                ..Default::default()
            },
            CancellationToken::new(),
        )
        .await
        .unwrap();
    let all = all_output(&*p).await;
    let want = gen_lines();
    assert_eq!(String::from_utf8(all).unwrap(), want);
    assert_eq!(p.wait(&call_ms(5000)).await.unwrap().exit_code, Some(7));
    let st = f.st.lock().unwrap();
    assert!(st.ws_auth.len() >= 2);
    assert!(
        st.ws_auth.iter().all(|a| *a == "subprotocol"),
        "{:?}",
        st.ws_auth
    );
    drop(st);
    clean(&f);
}

#[tokio::test]
async fn no_socket_to_be_had_means_polled_output_with_no_loss_and_no_duplicate() {
    let (f, o) = cloud().await;
    let b = backend(&o);
    created(&f, &b, "dev").await;
    let t = b.target("dev", &call_ms(5000)).await.unwrap();
    let want = gen_lines();
    let gen = || ExecSpec {
        cmd: vec!["gen".into()],
        ..Default::default()
    };
    // 1. a proxy refuses every handshake: polled from the start
    f.st.lock().unwrap().ws_faults.push_back(WsFault::Refuse);
    let p = t.spawn(gen(), CancellationToken::new()).await.unwrap();
    let all = all_output(&*p).await;
    assert_eq!(String::from_utf8(all).unwrap(), want);
    assert_eq!(p.wait(&call_ms(5000)).await.unwrap().exit_code, Some(7));
    assert_eq!(
        f.st.lock().unwrap().polls[..4],
        [0, 0, 3, 6],
        "probe, then pages"
    );
    // 2. a socket that drops after 4 chunks and cannot be re-attached: polled on from the last sequence
    {
        let mut st = f.st.lock().unwrap();
        st.polls.clear();
        st.ws_faults.push_back(WsFault::DropAfter(4));
        st.ws_faults.extend([
            WsFault::Refuse,
            WsFault::Refuse,
            WsFault::Refuse,
            WsFault::Refuse,
        ]);
    }
    let p = t.spawn(gen(), CancellationToken::new()).await.unwrap();
    let all = all_output(&*p).await;
    assert_eq!(String::from_utf8(all).unwrap(), want, "no loss, no repeat");
    assert_eq!(p.wait(&call_ms(5000)).await.unwrap().exit_code, Some(7));
    assert_eq!(f.st.lock().unwrap().polls.first(), Some(&4));
    // 3. polling carries no stdin (a typed error), but a kill still ends the process
    f.st.lock().unwrap().ws_faults.push_back(WsFault::Refuse);
    let p = t
        .spawn(
            ExecSpec {
                cmd: vec!["cat".into()],
                interactive: true,
                ..Default::default()
            },
            CancellationToken::new(),
        )
        .await
        .unwrap();
    let e = p.write(b"hello").await.unwrap_err();
    assert_eq!(e.code, ErrorCode::StreamInterrupted);
    p.kill("SIGTERM").await.unwrap();
    let st = p.wait(&call_ms(5000)).await.unwrap();
    assert_eq!(st.exit_code, Some(143));
    clean(&f);
}

#[tokio::test]
async fn a_server_that_goes_quiet_mid_stream_is_noticed_and_the_stream_resumed() {
    let (f, o) = cloud().await;
    let b = backend(&o);
    created(&f, &b, "dev").await;
    let t = b.target("dev", &call_ms(5000)).await.unwrap();
    f.st.lock().unwrap().ws_faults.push_back(WsFault::Silent(5));
    let began = Instant::now();
    let p = t
        .spawn(
            ExecSpec {
                cmd: vec!["gen".into()],
                ..Default::default()
            },
            CancellationToken::new(),
        )
        .await
        .unwrap();
    let all = all_output(&*p).await;
    assert_eq!(all.iter().filter(|c| **c == b'\n').count(), 10);
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "{:?}",
        began.elapsed()
    );
    assert_eq!(f.st.lock().unwrap().attaches, [0, 5]);
    clean(&f);
}

#[tokio::test]
async fn a_credential_expiring_mid_process_is_renewed_and_the_stream_resumed() {
    let (f, o) = cloud().await;
    let b = backend(&o);
    created(&f, &b, "dev").await;
    let t = b.target("dev", &call_ms(5000)).await.unwrap();
    f.st.lock()
        .unwrap()
        .ws_faults
        .push_back(WsFault::ExpireAfter(4));
    let p = t
        .spawn(
            ExecSpec {
                cmd: vec!["gen".into()],
                ..Default::default()
            },
            CancellationToken::new(),
        )
        .await
        .unwrap();
    let before = f.st.lock().unwrap().minted;
    let all = all_output(&*p).await;
    assert_eq!(all.iter().filter(|c| **c == b'\n').count(), 10);
    assert_eq!(
        f.st.lock().unwrap().minted,
        before + 1,
        "one fresh credential"
    );
    assert_eq!(f.st.lock().unwrap().attaches, [0, 4]);
    clean(&f);
}

// ---------------------------------------------------------------- bad input and faults (≥ 25 rows)

async fn spawn_err(f: &Arc<Fake>, t: &Arc<dyn ExecTarget>, fault: WsFault) -> Error {
    f.st.lock().unwrap().ws_faults.push_back(fault.clone());
    // faults repeat so a retry meets them again
    for _ in 0..4 {
        f.st.lock().unwrap().ws_faults.push_back(fault.clone());
    }
    let began = Instant::now();
    let r = t
        .spawn(
            ExecSpec {
                cmd: vec!["gen".into()],
                ..Default::default()
            },
            CancellationToken::new(),
        )
        .await;
    let e = match r {
        Err(e) => e,
        Ok(p) => {
            let mut last = None;
            while let Some(c) = p.next().await {
                if let Err(e) = c {
                    last = Some(e);
                }
            }
            last.unwrap_or_else(p_wait_err)
        }
    };
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "bounded: {:?}",
        began.elapsed()
    );
    f.st.lock().unwrap().ws_faults.clear();
    e
}

/// Every byte a spawned process prints, to its end.
async fn all_output(p: &dyn ProcessHandle) -> Vec<u8> {
    let mut all = Vec::new();
    while let Some(c) = p.next().await {
        all.extend_from_slice(c.unwrap().data());
    }
    all
}

/// What the fake's `gen` process prints.
fn gen_lines() -> String {
    (0..10).map(|i| format!("line {i}\n")).collect()
}

fn p_wait_err() -> Error {
    Error::internal("the process ended without an error")
}

#[tokio::test]
async fn fault_rows() {
    let rows = std::cell::Cell::new(0);
    let (f, o) = cloud().await;
    let b = backend(&o);
    created(&f, &b, "dev").await;
    let t = b.target("dev", &call_ms(5000)).await.unwrap();
    let row = |name: &str, e: &Error, code: ErrorCode| {
        assert_eq!(e.code, code, "{name}: {e:?}");
        no_secret(e, &f);
        rows.set(rows.get() + 1);
    };

    // 1. a wrong PAT
    let mut bad = o.clone();
    bad.pat = Some("dckr_pat_WRONGWRONG".into());
    let e = backend(&bad).list(&call_ms(5000)).await.unwrap_err();
    assert!(!format!("{e:?}").contains("WRONGWRONG"));
    row("wrong PAT", &e, ErrorCode::Unauthenticated);
    // 2. a wrong static token
    let mut bad = o.clone();
    (bad.identifier, bad.pat, bad.token) = (None, None, Some("wrong-static-token-123".into()));
    let e = backend(&bad).list(&call_ms(5000)).await.unwrap_err();
    assert!(!format!("{e:?}").contains("wrong-static-token-123"));
    row("wrong token", &e, ErrorCode::Unauthenticated);
    // 3. an expired token that keeps being refused after the one refresh
    f.st.lock().unwrap().faults.extend([
        Fault {
            op: "listSandboxes",
            status: 401,
            body: err("unauthenticated", "expired"),
        },
        Fault {
            op: "listSandboxes",
            status: 401,
            body: err("unauthenticated", "expired"),
        },
    ]);
    let e = b.list(&call_ms(5000)).await.unwrap_err();
    row("expired token twice", &e, ErrorCode::Unauthenticated);
    // 4. a 428 (If-Match missing as far as the server is concerned)
    f.st.lock().unwrap().faults.push_back(Fault {
        op: "stopSandbox",
        status: 428,
        body: err("failedPrecondition", "If-Match required"),
    });
    let e = b.stop("dev", &call_ms(5000)).await.unwrap_err();
    row("428", &e, ErrorCode::SandboxdProtocol);
    // 5. 412 twice: re-read once, then a typed conflict with the current etag
    for _ in 0..2 {
        f.st.lock().unwrap().faults.push_back(Fault { op: "stopSandbox", status: 412, body: json!({"code": "failedPrecondition", "message": "etag mismatch",
            "details": [{"@type": "type.googleapis.com/docker.sandboxes.v1.EtagMismatch", "currentEtag": "\"77\""}]}) });
    }
    let e = b.stop("dev", &call_ms(5000)).await.unwrap_err();
    assert_eq!(e.props["currentEtag"], "\"77\"");
    row("412 twice", &e, ErrorCode::SandboxConflict);
    // 6. 409 on create (alreadyExists from the service)
    f.st.lock().unwrap().faults.push_back(Fault {
        op: "createSandbox",
        status: 409,
        body: err("alreadyExists", "exists"),
    });
    let e = b.create(&spec("other"), &call_ms(5000)).await.unwrap_err();
    row("409", &e, ErrorCode::SandboxConflict);
    // 7. an existing name (checked before sending)
    let e = b.create(&spec("dev"), &call_ms(5000)).await.unwrap_err();
    row("name taken", &e, ErrorCode::SandboxConflict);
    // 8. pages that never end: the same token again
    f.st.lock().unwrap().pages = 1;
    let e = b.list(&call_ms(5000)).await.unwrap_err();
    row("repeated page token", &e, ErrorCode::SandboxdProtocol);
    // 9. pages that never end: always a new token (the page cap, or the deadline)
    f.st.lock().unwrap().pages = 2;
    let e = b.list(&call_ms(1500)).await.unwrap_err();
    assert!(
        matches!(e.code, ErrorCode::SandboxdProtocol | ErrorCode::Timeout),
        "{e:?}"
    );
    row("endless pages", &e, e.code);
    f.st.lock().unwrap().pages = 0;
    // let a page request cut off by the deadline finish on the server before faults are queued again
    tokio::time::sleep(Duration::from_millis(300)).await;
    // 10. resourceExhausted beyond the retry budget
    for _ in 0..3 {
        f.st.lock().unwrap().faults.push_back(Fault {
            op: "listSandboxes",
            status: 429,
            body: retry_info("resourceExhausted", "0.01s"),
        });
    }
    let e = b.list(&call_ms(5000)).await.unwrap_err();
    assert_eq!(e.props["v1Code"], "resourceExhausted");
    row("429 x3", &e, ErrorCode::ResourceExhausted);
    // 11. a RetryInfo delay longer than the deadline: no sleep past it
    f.st.lock().unwrap().faults.push_back(Fault {
        op: "listSandboxes",
        status: 503,
        body: retry_info("unavailable", "30s"),
    });
    let began = Instant::now();
    let e = b.list(&call_ms(1000)).await.unwrap_err();
    assert!(began.elapsed() < Duration::from_millis(900));
    assert_eq!(e.props["retryDelayMs"], 30_000);
    row(
        "503 retry after the deadline",
        &e,
        ErrorCode::SandboxdUnavailable,
    );
    // 12. an unknown error code is kept
    f.st.lock().unwrap().faults.push_back(Fault {
        op: "listSandboxes",
        status: 500,
        body: err("quotaGalaxyExceeded", "future"),
    });
    let e = b.list(&call_ms(5000)).await.unwrap_err();
    assert_eq!(e.props["v1Code"], "quotaGalaxyExceeded");
    row("unknown code", &e, ErrorCode::SandboxdProtocol);
    // 13. unimplemented → ERR_UNSUPPORTED
    f.st.lock().unwrap().faults.push_back(Fault {
        op: "getNetworkPolicies",
        status: 501,
        body: err("unimplemented", "no policies here"),
    });
    let e = b.policy_rules(&call_ms(5000)).await.unwrap_err();
    row("501", &e, ErrorCode::Unsupported);
    // 14. a sandbox that fails while being created
    let e = {
        let (sp, cl) = (spec("doomed"), call_ms(5000));
        let r = b.create(&sp, &cl);
        tokio::pin!(r);
        // mark it failed as soon as it exists
        loop {
            tokio::select! {
                r = &mut r => break r.unwrap_err(),
                _ = tokio::time::sleep(Duration::from_millis(5)) => {
                    let mut st = f.st.lock().unwrap();
                    let uid = st.sandboxes.values().find(|s| s["displayName"] == "doomed").map(|s| s["uid"].as_str().unwrap().to_string());
                    if let Some(uid) = uid {
                        st.pending.remove(&uid);
                        let s = st.sandboxes.get_mut(&uid).unwrap();
                        s["core"]["status"] = json!("failed");
                        s["failure"] = err("resourceExhausted", "no capacity in region");
                    }
                }
            }
        }
    };
    assert!(e.message.contains("no capacity"));
    row("failed", &e, ErrorCode::ResourceExhausted);
    // 15. a bad name
    let e = b
        .create(&spec("has space"), &call_ms(5000))
        .await
        .unwrap_err();
    row("bad name", &e, ErrorCode::InvalidArgument);
    // 16. a missing sandbox
    let e = b.stop("ghost", &call_ms(5000)).await.unwrap_err();
    row("missing", &e, ErrorCode::SandboxNotFound);
    // 17. a deadline shorter than a 202 poll
    f.st.lock().unwrap().faults.push_back(Fault {
        op: "getSandbox",
        status: 200,
        body: Value::Null,
    });
    f.st.lock().unwrap().faults.clear();
    let e = {
        let (sp, cl) = (spec("slow"), call_ms(1000));
        let r = b.create(&sp, &cl);
        tokio::pin!(r);
        // keep it `creating`
        loop {
            tokio::select! {
                r = &mut r => break r.unwrap_err(),
                _ = tokio::time::sleep(Duration::from_millis(5)) => {
                    let mut st = f.st.lock().unwrap();
                    let uid = st.sandboxes.values().find(|s| s["displayName"] == "slow").map(|s| s["uid"].as_str().unwrap().to_string());
                    if let Some(uid) = uid { st.pending.insert(uid, ("running".into(), 1_000_000)); }
                }
            }
        }
    };
    row("202 poll past the deadline", &e, ErrorCode::Timeout);
    // 18. cancellation during a poll
    let cancel = CancellationToken::new();
    let c2 = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        c2.cancel();
    });
    {
        let mut st = f.st.lock().unwrap();
        let uid = st
            .sandboxes
            .values()
            .find(|s| s["displayName"] == "slow")
            .map(|s| s["uid"].as_str().unwrap().to_string())
            .unwrap();
        let s = st.sandboxes.get_mut(&uid).unwrap();
        s["core"]["status"] = json!("stopped");
        st.pending.clear();
    }
    f.st.lock().unwrap().faults.push_back(Fault {
        op: "startSandbox",
        status: 202,
        body: Value::Null,
    });
    f.st.lock().unwrap().faults.clear();
    let slow_uid =
        f.st.lock()
            .unwrap()
            .sandboxes
            .values()
            .find(|s| s["displayName"] == "slow")
            .map(|s| s["uid"].as_str().unwrap().to_string())
            .unwrap();
    let cl = Call::new(Some(Duration::from_secs(20)), cancel);
    let start = b.start("slow", &cl);
    tokio::pin!(start);
    let e = loop {
        tokio::select! {
            r = &mut start => break r.unwrap_err(),
            _ = tokio::time::sleep(Duration::from_millis(5)) => {
                let mut st = f.st.lock().unwrap();
                if st.pending.contains_key(&slow_uid) { st.pending.insert(slow_uid.clone(), ("running".into(), 1_000_000)); }
            }
        }
    };
    row("abort during a poll", &e, ErrorCode::Aborted);
    f.st.lock().unwrap().pending.clear();
    // 19. an endpoint credential refused twice (wrong token for the endpoint)
    f.st.lock().unwrap().faults.extend([
        Fault {
            op: "readFile",
            status: 401,
            body: err("unauthenticated", "expired"),
        },
        Fault {
            op: "readFile",
            status: 401,
            body: err("unauthenticated", "expired"),
        },
    ]);
    let e = t.read_file("/x", &call_ms(5000)).await.unwrap_err();
    row("endpoint 401 twice", &e, ErrorCode::Unauthenticated);
    // 20. permission denied on the endpoint
    f.st.lock().unwrap().faults.push_back(Fault {
        op: "writeFile",
        status: 403,
        body: err("permissionDenied", "no write"),
    });
    let e = t
        .write_file("/x", b"1", None, &call_ms(5000))
        .await
        .unwrap_err();
    row("403", &e, ErrorCode::PermissionDenied);
    // 21. upload refused with failedPrecondition (symlink escape)
    f.st.lock().unwrap().faults.push_back(Fault {
        op: "upload",
        status: 409,
        body: err("failedPrecondition", "path_authority_symlink_escape"),
    });
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(1);
    h.set_mode(0o644);
    tar.append_data(&mut h, "a", &b"1"[..]).unwrap();
    let e = t
        .write_files("/w", Bytes::from(tar.into_inner().unwrap()), &call_ms(5000))
        .await
        .unwrap_err();
    row("upload 409 (symlink escape)", &e, ErrorCode::PathEscapes);
    // 22. an archive with a symlink
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    tar.append_link(&mut h, "l", "/etc/passwd").unwrap();
    let e = t
        .write_files("/w", Bytes::from(tar.into_inner().unwrap()), &call_ms(5000))
        .await
        .unwrap_err();
    row("symlink in archive", &e, ErrorCode::Unsupported);
    // 23–29. the interact socket
    let e = spawn_err(&f, &t, WsFault::Close(1008, "permissionDenied")).await;
    assert_eq!(e.props["closeCode"], 1008);
    row(
        "close 1008 permissionDenied",
        &e,
        ErrorCode::PermissionDenied,
    );
    let e = spawn_err(&f, &t, WsFault::Close(1008, "unauthenticated")).await;
    row(
        "close 1008 unauthenticated, every time",
        &e,
        ErrorCode::StreamInterrupted,
    );
    let e = spawn_err(&f, &t, WsFault::Close(1011, "internal")).await;
    assert_eq!(e.props["closeCode"], 1011);
    row("close 1011, every time", &e, ErrorCode::StreamInterrupted);
    let e = spawn_err(&f, &t, WsFault::Close(1003, "invalidArgument")).await;
    row("close 1003", &e, ErrorCode::SandboxdProtocol);
    let e = spawn_err(&f, &t, WsFault::Binary).await;
    row("binary frame", &e, ErrorCode::SandboxdProtocol);
    let e = spawn_err(&f, &t, WsFault::Huge(5 * 1024 * 1024)).await;
    assert!(e.message.contains("above"), "{e:?}");
    row("oversized frame", &e, ErrorCode::SandboxdProtocol);
    let e = spawn_err(&f, &t, WsFault::DropAfter(0)).await;
    row("dropped every time", &e, ErrorCode::StreamInterrupted);
    // 30. a signal the contract lacks
    let p = t
        .spawn(
            ExecSpec {
                cmd: vec!["sleep".into()],
                ..Default::default()
            },
            CancellationToken::new(),
        )
        .await
        .unwrap();
    let e = p.kill("SIGWINCH").await.unwrap_err();
    row("signal not in v1", &e, ErrorCode::Unsupported);
    p.kill("TERM").await.unwrap();
    p.wait(&call_ms(5000)).await.unwrap();
    // 31. a spawn timeout kills the process
    let out = t
        .exec(
            ExecSpec {
                cmd: vec!["sleep".into()],
                timeout: Some(Duration::from_millis(100)),
                ..Default::default()
            },
            CancellationToken::new(),
        )
        .await
        .unwrap();
    assert!(out.timed_out && out.exit_code == Some(137), "{out:?}");
    rows.set(rows.get() + 1);
    // 32. additional workspaces
    let mut s = spec("extra");
    s.additional_workspaces = vec![("/tmp".into(), true)];
    let e = b.create(&s, &call_ms(5000)).await.unwrap_err();
    row("additional workspaces", &e, ErrorCode::Unsupported);
    // 33. an HTTP endpoint without credentials
    let e = V1Backend::new(&V1Options {
        endpoint: Some("https://localhost:1/x".into()),
        ..Default::default()
    })
    .unwrap_err();
    row("no credentials", &e, ErrorCode::Unauthenticated);
    // 34. a CA that is not PEM
    let e = V1Backend::new(&V1Options {
        ca_pem: Some("not a pem".into()),
        token: Some("t".into()),
        ..Default::default()
    })
    .unwrap_err();
    row("bad CA", &e, ErrorCode::InvalidArgument);
    // 35. a token and a PAT at once
    let e = V1Backend::new(&V1Options {
        token: Some("t".into()),
        identifier: Some("i".into()),
        pat: Some("p".into()),
        ..Default::default()
    })
    .unwrap_err();
    row("token and PAT", &e, ErrorCode::InvalidArgument);
    // 36. a server that stops answering
    f.st.lock().unwrap().hang = true;
    let began = Instant::now();
    let e = b.list(&call_ms(500)).await.unwrap_err();
    assert!(began.elapsed() < Duration::from_secs(2));
    row("server stops answering", &e, ErrorCode::Timeout);
    f.st.lock().unwrap().hang = false;
    // 37. nothing listens
    let mut gone = o.clone();
    gone.endpoint = Some("https://localhost:1/sandboxes".into());
    let e = backend(&gone).list(&call_ms(5000)).await.unwrap_err();
    row("refused", &e, ErrorCode::SandboxdUnavailable);
    // 38. a TLS server the CA does not vouch for
    let mut untrusted = o.clone();
    untrusted.ca_pem = None;
    let e = backend(&untrusted).list(&call_ms(5000)).await.unwrap_err();
    assert!(e.message.contains("TLS"), "{e:?}");
    row("untrusted certificate", &e, ErrorCode::SandboxdUnavailable);

    assert!(rows.get() >= 25, "{} rows", rows.get());
    clean(&f);
}

#[tokio::test]
async fn policy_read_back_and_log_pages() {
    let (f, o) = cloud().await;
    let b = backend(&o);
    created(&f, &b, "dev").await;
    let rules = b.policy_rules(&call_ms(5000)).await.unwrap();
    let got: Vec<_> = rules
        .iter()
        .map(|r| (r.action.as_str(), r.resource.as_str(), r.scope.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("deny", "*", "sandbox:dev"),
            ("allow", "api.example.com", "sandbox:dev"),
            ("deny", "10.0.0.0/8", "sandbox:dev")
        ]
    );
    let log = b.policy_log(Some("dev"), &call_ms(5000)).await.unwrap();
    assert_eq!(log.len(), 4, "two pages walked");
    assert!(log[0].allowed && !log[1].allowed);
    assert_eq!(log[0].count, 3);
    assert_eq!(log[0].first_seen_ms, Some(1_796_457_600_000));
    assert_eq!(b.policy_log(None, &call_ms(5000)).await.unwrap().len(), 4);
    let raw = b.network_policies("dev", &call_ms(5000)).await.unwrap();
    assert_eq!(raw["exact"]["revision"], "3");
    clean(&f);
}

#[tokio::test]
async fn the_validator_catches_a_wrong_field_from_the_client_side() {
    // what the client would send with a misspelt field is refused by the contract (the checks can fail)
    let c = contract();
    assert!(c
        .check_request(
            "createSandbox",
            &json!({"displayName": "dev", "imageReff": "x"})
        )
        .is_err());
    assert!(c
        .check_request("createProcess", &json!({"cmd": ["a"], "tty": true}))
        .is_err());
    assert!(c
        .check_schema(
            "InteractRequest",
            &json!({"attach": {"name": "processes/p1"}, "stdin": "AA=="})
        )
        .is_err());
    assert!(c
        .check_request(
            "createEndpointCredential",
            &json!({"permissions": ["sandboxesExec"], "ttl": "300s"})
        )
        .is_ok());
}

#[tokio::test]
async fn a_static_token_needs_no_exchange() {
    let (f, mut o) = cloud().await;
    (o.identifier, o.pat, o.token) = (None, None, Some(STATIC.into()));
    let b = backend(&o);
    created(&f, &b, "dev").await;
    assert_eq!(b.list(&call_ms(5000)).await.unwrap().len(), 1);
    assert_eq!(f.st.lock().unwrap().exchanges, 0);
    assert!(!format!("{o:?} {b:?}").contains(STATIC));
    let _: &V1Target;
}

#[tokio::test]
async fn a_local_socket_needs_no_token_and_mints_no_credential() {
    let dir = tempfile::tempdir().unwrap();
    let (f, o) = local(dir.path()).await;
    let b = backend(&o);
    assert!(b.socket().starts_with("unix://"));
    created(&f, &b, "dev").await;
    let t = b.target("dev", &call_ms(5000)).await.unwrap();
    let out = t
        .exec(
            ExecSpec {
                cmd: vec!["echo".into(), "local".into()],
                ..Default::default()
            },
            CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(out.stdout, scripted_stdout());
    t.write_file("/w/a", b"1", Some(0o600), &call_ms(5000))
        .await
        .unwrap();
    assert_eq!(t.read_file("/w/a", &call_ms(5000)).await.unwrap(), b"1");
    f.st.lock()
        .unwrap()
        .ws_faults
        .push_back(WsFault::DropAfter(6));
    let p = t
        .spawn(
            ExecSpec {
                cmd: vec!["gen".into()],
                ..Default::default()
            },
            CancellationToken::new(),
        )
        .await
        .unwrap();
    let mut n = 0;
    while let Some(c) = p.next().await {
        n += c.unwrap().data().iter().filter(|b| **b == b'\n').count();
    }
    assert_eq!(n, 10);
    // the exec above attached once from 0; this process from 0, then resumed from 6
    assert_eq!(f.st.lock().unwrap().attaches, [0, 0, 6]);
    // a 1008 on a local socket is not a credential to renew: it ends the stream
    f.st.lock()
        .unwrap()
        .ws_faults
        .push_back(WsFault::Close(1008, "unauthenticated"));
    let e = t
        .spawn(
            ExecSpec {
                cmd: vec!["gen".into()],
                ..Default::default()
            },
            CancellationToken::new(),
        )
        .await;
    let e = match e {
        Err(e) => e,
        Ok(p) => {
            let mut last = None;
            while let Some(c) = p.next().await {
                if let Err(e) = c {
                    last = Some(e);
                }
            }
            last.unwrap()
        }
    };
    assert_eq!(e.code, ErrorCode::Unauthenticated, "{e:?}");
    b.stop("dev", &call_ms(5000)).await.unwrap();
    b.remove("dev", false, &call_ms(5000)).await.unwrap();
    let st = f.st.lock().unwrap();
    assert_eq!((st.minted, st.exchanges), (0, 0));
    drop(st);
    clean(&f);
}

#[tokio::test]
async fn ports_publish_list_and_unpublish() {
    let (f, o) = cloud().await;
    let b = backend(&o);
    created(&f, &b, "dev").await;
    let spec = |p: u16| crate::core::sbx::PortSpec {
        sandbox_port: p,
        ..Default::default()
    };
    let got = b
        .publish("dev", &[spec(8080), spec(3000)], &call_ms(5000))
        .await
        .unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(
        (
            got[0].host_ip.as_str(),
            got[0].host_port,
            got[0].sandbox_port
        ),
        ("127.0.0.1", 48080, 8080)
    );
    b.unpublish("dev", &[spec(8080)], &call_ms(5000))
        .await
        .unwrap();
    let left = b.ports("dev", &call_ms(5000)).await.unwrap();
    assert_eq!(
        left.iter().map(|p| p.sandbox_port).collect::<Vec<_>>(),
        [3000]
    );
    let mut fixed = spec(1);
    fixed.host_port = Some(9);
    let e = b
        .publish("dev", &[fixed], &call_ms(5000))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::Unsupported);
    clean(&f);
}

// ---------------------------------------------------------------- files over the endpoint's own operations

/// How many processes the fake endpoint was asked to start (durable or one-shot).
fn processes_started(f: &Fake) -> usize {
    f.st.lock()
        .unwrap()
        .seen
        .iter()
        .filter(|(op, _, _)| op == "createProcess" || op == "exec")
        .count()
}

#[tokio::test]
async fn files_use_the_endpoints_mkdir_remove_and_move_without_exec_and_its_stat_as_a_fallback() {
    use crate::core::files::{FileKind, Files, WriteEntry};
    let (f, o) = cloud().await;
    let b = backend(&o);
    created(&f, &b, "dev").await;
    let t = b.target("dev", &call_ms(5000)).await.unwrap();
    let files = Files::new(t.clone());
    let c = call_ms(5000);
    let code = |r: Result<(), Error>| r.unwrap_err().code;

    // mkdir: with parents, converging; without, an existing path and a missing parent are typed
    files.mkdir("/w/a/b", true, &c).await.unwrap();
    files.mkdir("/w/a/b", true, &c).await.unwrap();
    let e = files.mkdir("/w/a", false, &c).await.unwrap_err();
    assert_eq!(
        (e.code, e.props["path"].clone()),
        (ErrorCode::PathExists, json!("/w/a"))
    );
    let e = files.mkdir("/w/no/such", false, &c).await.unwrap_err();
    assert_eq!(
        (e.code, e.props["path"].clone()),
        (ErrorCode::PathNotFound, json!("/w/no/such"))
    );
    files.mkdir("/w/a/c", false, &c).await.unwrap();
    let w = |p: &str, d: &str| WriteEntry {
        path: p.into(),
        data: Bytes::from(d.to_string()),
        mode: None,
    };
    files
        .write(
            vec![w("/w/a/f.txt", "hello"), w("/w/a/g.txt", "g")],
            false,
            &c,
        )
        .await
        .unwrap();
    // a directory where a file is to go: the endpoint refuses, the path is named
    let e = files
        .write(vec![w("/w/a/ok", "x"), w("/w/a/b", "x")], false, &c)
        .await
        .unwrap_err();
    assert_eq!(
        (e.code, e.props["path"].clone(), e.props["fileType"].clone()),
        (ErrorCode::NotAFile, json!("/w/a/b"), json!("directory"))
    );
    // mkdir over a file: exists; under a file (recursive): not a directory
    assert_eq!(
        code(files.mkdir("/w/a/f.txt", true, &c).await),
        ErrorCode::PathExists
    );
    assert_eq!(
        code(files.mkdir("/w/a/f.txt/x", false, &c).await),
        ErrorCode::NotADirectory
    );

    // stat runs the tools first (for times and special bits); in a sandbox that cannot run them (each attempt
    // refused here) it is the endpoint's stat, with no modification time (the contract has none)
    for _ in 0..5 {
        f.st.lock().unwrap().faults.push_back(Fault {
            op: "createProcess",
            status: 400,
            body: json!({"code": "failedPrecondition", "message": "stat: executable file not found",
                "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "PROCESS_START_FAILED", "domain": "sandboxd.local"}]}),
        });
    }
    let s = files.stat("/w/a/f.txt", true, &c).await.unwrap();
    assert_eq!(
        (
            s.name.as_str(),
            s.path.as_str(),
            s.kind,
            s.size,
            s.mode,
            s.link_target.clone()
        ),
        ("f.txt", "/w/a/f.txt", FileKind::File, 5, 0o644, None)
    );
    assert!(s.mtime_ms.is_nan());
    let d = files.stat("/w/a/", true, &c).await.unwrap();
    assert_eq!((d.kind, d.mode, d.size), (FileKind::Directory, 0o755, 4096));
    // the not-found row and the not-a-directory row (the endpoint's failedPrecondition)
    let e = files.stat("/w/nope", true, &c).await.unwrap_err();
    assert_eq!(
        (e.code, e.props["path"].clone()),
        (ErrorCode::PathNotFound, json!("/w/nope"))
    );
    let e = files.stat("/w/a/f.txt/x", true, &c).await.unwrap_err();
    assert_eq!(
        (e.code, e.props["path"].clone()),
        (ErrorCode::NotADirectory, json!("/w/a/f.txt/x"))
    );
    // a link that does not resolve: missing through it, exists is false
    f.st.lock()
        .unwrap()
        .dangling
        .insert("/w/a/dl".into(), "/nowhere".into());
    let e = files.stat("/w/a/dl", true, &c).await.unwrap_err();
    assert_eq!(
        (e.code, e.props["linkTarget"].clone()),
        (ErrorCode::PathNotFound, json!("/nowhere"))
    );
    assert!(!files.exists("/w/a/dl", &c).await.unwrap());
    assert!(files.exists("/w/a/f.txt", &c).await.unwrap());
    assert!(!files.exists("/w/nope", &c).await.unwrap());
    assert!(!files.exists("/w/a/f.txt/x", &c).await.unwrap());

    // list, natively: every page walked, entries under the directory asked for
    let ops = t.native_files().unwrap();
    let mut l = ops.list("/w/a", &c).await.unwrap();
    l.sort_by(|x, y| x.0.cmp(&y.0));
    let got: Vec<(&str, FileKind)> = l.iter().map(|(p, n)| (p.as_str(), n.kind)).collect();
    assert_eq!(
        got,
        vec![
            ("/w/a/b", FileKind::Directory),
            ("/w/a/c", FileKind::Directory),
            ("/w/a/dl", FileKind::Symlink),
            ("/w/a/f.txt", FileKind::File),
            ("/w/a/g.txt", FileKind::File),
        ]
    );
    assert_eq!(l[2].1.link_target.as_deref(), Some("/nowhere"));
    assert_eq!(l[3].1.size, 5);
    let e = ops.list("/w/a/f.txt", &c).await.unwrap_err();
    assert_eq!(
        (e.code, e.props["path"].clone()),
        (ErrorCode::NotADirectory, json!("/w/a/f.txt"))
    );
    let e = ops.list("/w/nope", &c).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::PathNotFound);

    // rename: onto something without overwrite, a missing source, a missing destination directory, a directory
    assert_eq!(
        code(files.rename("/w/a/f.txt", "/w/a/g.txt", false, &c).await),
        ErrorCode::PathExists
    );
    let e = files
        .rename("/w/nope", "/w/x", false, &c)
        .await
        .unwrap_err();
    assert_eq!(
        (e.code, e.props["path"].clone()),
        (ErrorCode::PathNotFound, json!("/w/nope"))
    );
    let e = files
        .rename("/w/a/f.txt", "/w/no/x", false, &c)
        .await
        .unwrap_err();
    assert_eq!(
        (e.code, e.props["path"].clone()),
        (ErrorCode::PathNotFound, json!("/w/no/x"))
    );
    let e = files
        .rename("/w/a/f.txt", "/w/a/b", true, &c)
        .await
        .unwrap_err();
    assert_eq!(
        (e.code, e.props["fileType"].clone()),
        (ErrorCode::PathExists, json!("directory"))
    );
    files
        .rename("/w/a/f.txt", "/w/a/g.txt", true, &c)
        .await
        .unwrap();
    assert_eq!(f.st.lock().unwrap().files["/w/a/g.txt"], b"hello");
    files.rename("/w/a/c", "/w/c2", false, &c).await.unwrap();
    assert!(files.exists("/w/c2", &c).await.unwrap());
    // the endpoint's own refusal of a directory destination is ERR_PATH_EXISTS naming it
    let e = ops.rename("/w/a/g.txt", "/w/a/b", &c).await.unwrap_err();
    assert_eq!(
        (e.code, e.props["path"].clone()),
        (ErrorCode::PathExists, json!("/w/a/b"))
    );

    // remove: a non-empty directory needs recursive; missing is typed unless forced
    files
        .write(vec![w("/w/a/b/deep", "d")], false, &c)
        .await
        .unwrap();
    let e = files.remove("/w/a/b", false, false, &c).await.unwrap_err();
    assert_eq!(
        (e.code, e.props["fileType"].clone()),
        (ErrorCode::NotAFile, json!("directory"))
    );
    let e = files.remove("/w/gone", false, false, &c).await.unwrap_err();
    assert_eq!(
        (e.code, e.props["path"].clone()),
        (ErrorCode::PathNotFound, json!("/w/gone"))
    );
    files.remove("/w/gone", false, true, &c).await.unwrap();
    assert_eq!(
        code(files.remove("/w/a/g.txt/x", false, true, &c).await),
        ErrorCode::NotADirectory
    );
    files.remove("/w/a/b", true, false, &c).await.unwrap();
    assert!(!files.exists("/w/a/b/deep", &c).await.unwrap());
    files.remove("/w/a/dl", false, false, &c).await.unwrap();
    assert_eq!(ops.remove("/w/a/absent", false, &c).await.unwrap().count, 0);

    // none of it started a process but the five stats' refused attempts
    assert_eq!(processes_started(&f), 5);
    assert!(f.st.lock().unwrap().faults.is_empty());

    // list and lstat run the tools (the contract cannot describe a resolving link as a link, nor give times);
    // on a target that cannot run them they fall back to the endpoint
    for _ in 0..2 {
        f.st.lock().unwrap().faults.push_back(Fault {
            op: "createProcess",
            status: 400,
            body: json!({"code": "failedPrecondition", "message": "find: executable file not found",
                "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "PROCESS_START_FAILED", "domain": "sandboxd.local"}]}),
        });
    }
    let names: Vec<String> = files
        .list("/w", &c)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, vec!["a", "c2"]);
    let dl = files.stat("/w/c2", false, &c).await.unwrap();
    assert_eq!(dl.kind, FileKind::Directory);
    assert_eq!(processes_started(&f), 7);
    clean(&f);
}
