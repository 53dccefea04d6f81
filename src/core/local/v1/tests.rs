//! LocalSandboxd's v1 routes driven over its socket with a raw HTTP client; every answer is checked against the
//! contract (`spec/sandboxes-api-v1.openapi.yaml`). Tests marked `ignore` need a real engine and the busybox test
//! image (`DOCKER_HOST`, `SANDBOXD_TEST_IMAGE`; scripts/test.sh runs them with `--include-ignored`); they fail,
//! not pass, when that environment is missing.

use crate::core::local::{BackendKind, LocalOptions, LocalSandboxd};
use crate::core::v1::contract::contract;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// One answer: status, headers, JSON body (`Null` when empty).
struct Got {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

impl Got {
    fn etag(&self) -> String {
        self.headers
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    }
}

/// Send one request on a fresh connection to `sock`.
async fn send(
    sock: &Path,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Got {
    let stream = tokio::net::UnixStream::connect(sock).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header("Host", "localhost");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let bytes = match &body {
        Some(v) => {
            b = b.header("Content-Type", "application/json");
            Bytes::from(v.to_string())
        }
        None => Bytes::new(),
    };
    let res = tx
        .send_request(b.body(Full::new(bytes)).unwrap())
        .await
        .unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let raw = res.into_body().collect().await.unwrap().to_bytes();
    let body = if raw.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&raw).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {raw:?}"))
    };
    Got {
        status,
        headers,
        body,
    }
}

/// `send`, then the answer checked against operation `op` of the contract: a body against its response schema
/// (an error also for its `{code, message}` shape), a bodiless 204/304 against the statuses `op` declares.
async fn call(
    sock: &Path,
    op: &str,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Got {
    let g = send(sock, method, path, headers, body).await;
    if g.status == 204 || g.status == 304 {
        assert!(g.body.is_null(), "{op} {}: a body: {}", g.status, g.body);
        let o = contract().operation(op).unwrap();
        assert!(
            o.spec["responses"].get(g.status.to_string()).is_some(),
            "{op} declares no {}",
            g.status
        );
    } else {
        contract()
            .check_response(op, g.status, &g.body)
            .unwrap_or_else(|e| panic!("{op} {} {}: {e:#?}", g.status, g.body));
        if g.status >= 400 {
            assert!(g.body["code"].is_string() && g.body["message"].is_string());
        }
    }
    g
}

async fn local(relay_to: &str) -> LocalSandboxd {
    LocalSandboxd::start(LocalOptions {
        backend: Some(BackendKind::Relay),
        docker_host: Some(relay_to.to_string()),
        ..Default::default()
    })
    .await
    .unwrap()
}

fn env(k: &str) -> String {
    std::env::var(k).unwrap_or_else(|_| {
        panic!("{k} is not set: run under scripts/lib.sh (see this file's doc)")
    })
}

/// GET the sandbox until `done` holds for it (each answer validated), at most `secs`.
async fn wait_for(sock: &Path, uid: &str, secs: u64, done: impl Fn(&Got) -> bool) -> Got {
    let until = Instant::now() + Duration::from_secs(secs);
    loop {
        let g = call(
            sock,
            "getSandbox",
            Method::GET,
            &format!("/v1/sandboxes/{uid}"),
            &[],
            None,
        )
        .await;
        if done(&g) {
            return g;
        }
        assert!(
            Instant::now() < until,
            "sandbox {uid} never settled: {} {}",
            g.status,
            g.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn status(g: &Got) -> &str {
    g.body["core"]["status"].as_str().unwrap_or_default()
}

/// The operations LocalSandboxd serves on its management surface.
const SERVED: &[&str] = &[
    "listSandboxes",
    "createSandbox",
    "getSandbox",
    "deleteSandbox",
    "startSandbox",
    "stopSandbox",
    "getNetworkPolicies",
    "listPolicyLogEntries",
    "getNetworkPoliciesInOwnerScope",
    "listPolicyLogEntriesInOwnerScope",
    "listPorts",
    "createPort",
    "getPort",
    "deletePort",
    "createSnapshot",
    "listSnapshots",
    "getSnapshot",
    "deleteSnapshot",
    "restoreSnapshot",
];

#[tokio::test]
async fn every_unserved_management_operation_answers_unimplemented() {
    let d = local("unix:///nonexistent/engine.sock").await;
    let sock = d.socket_path().to_path_buf();
    let mut checked = 0;
    for o in contract().operations() {
        if o.spec["x-sbx-serving-surface"].as_str() != Some("management")
            || SERVED.contains(&o.id.as_str())
        {
            continue;
        }
        let mut path = o.path.clone();
        while let (Some(a), Some(b)) = (path.find('{'), path.find('}')) {
            path.replace_range(a..=b, "x");
        }
        let method: Method = o.method.parse().unwrap();
        let body = matches!(o.method.as_str(), "POST" | "PUT" | "PATCH").then(|| json!({}));
        let g = call(&sock, &o.id, method, &path, &[("If-Match", "\"1\"")], body).await;
        assert_eq!(g.status, 501, "{} {}: {}", o.method, path, g.body);
        assert_eq!(g.body["code"], "unimplemented");
        checked += 1;
    }
    assert_eq!(checked, 25, "management operations not served");
    // Not an operation at all: notFound, still an Error body.
    let g = send(&sock, Method::GET, "/v2/sandboxes", &[], None).await;
    assert!(g.status == 404 || g.status == 501, "{}", g.status);
    d.stop().await;
}

#[tokio::test]
async fn requests_are_checked_before_anything_starts() {
    let d = local("unix:///nonexistent/engine.sock").await;
    let sock = d.socket_path().to_path_buf();
    let create = |b: Value| {
        let sock = sock.clone();
        async move {
            call(
                &sock,
                "createSandbox",
                Method::POST,
                "/v1/sandboxes",
                &[],
                Some(b),
            )
            .await
        }
    };
    for (b, code) in [
        (json!({"imageRef": "x", "colour": "red"}), "invalidArgument"),
        (json!({"displayName": "a"}), "invalidArgument"),
        (
            json!({"imageRef": "x", "displayName": "no spaces"}),
            "invalidArgument",
        ),
        (
            json!({"imageRef": "x", "displayName": "under_score"}),
            "invalidArgument",
        ),
        (
            json!({"imageRef": "x", "environment": {"A": 1}}),
            "invalidArgument",
        ),
        (json!({"imageRef": "x", "kits": []}), "unimplemented"),
        (
            json!({"imageRef": "x", "displayName": "a1", "displayNamePrefix": "b"}),
            "invalidArgument",
        ),
    ] {
        let g = create(b.clone()).await;
        assert_eq!(g.body["code"], code, "{b}: {}", g.body);
    }
    let g = send(&sock, Method::POST, "/v1/sandboxes", &[], None).await;
    assert_eq!(g.status, 400);
    let g = call(
        &sock,
        "getSandbox",
        Method::GET,
        "/v1/sandboxes/nope",
        &[],
        None,
    )
    .await;
    assert_eq!((g.status, g.body["code"].as_str()), (404, Some("notFound")));
    let g = call(
        &sock,
        "stopSandbox",
        Method::POST,
        "/v1/sandboxes/nope/stop",
        &[],
        None,
    )
    .await;
    assert_eq!(g.status, 404);
    // deleting what is absent succeeds (sandboxes and snapshots alike)
    let g = call(
        &sock,
        "deleteSandbox",
        Method::DELETE,
        "/v1/sandboxes/nope",
        &[("If-Match", "\"1\"")],
        None,
    )
    .await;
    assert_eq!(g.status, 204);
    let g = call(
        &sock,
        "deleteSnapshot",
        Method::DELETE,
        "/v1/snapshots/nope",
        &[("If-Match", "\"1\"")],
        None,
    )
    .await;
    assert_eq!(g.status, 204);
    let g = call(
        &sock,
        "getSnapshot",
        Method::GET,
        "/v1/snapshots/nope",
        &[],
        None,
    )
    .await;
    assert_eq!(g.status, 404);
    let g = call(
        &sock,
        "listSnapshots",
        Method::GET,
        "/v1/snapshots",
        &[],
        None,
    )
    .await;
    assert_eq!((g.status, &g.body["snapshots"]), (200, &json!([])));
    let g = call(
        &sock,
        "listPorts",
        Method::GET,
        "/v1/sandboxes/nope/ports",
        &[],
        None,
    )
    .await;
    assert_eq!(g.status, 404);
    let g = call(
        &sock,
        "createSnapshot",
        Method::POST,
        "/v1/sandboxes/nope/snapshots",
        &[],
        Some(json!({"displayName": "s"})),
    )
    .await;
    assert_eq!(g.status, 404);
    let g = call(
        &sock,
        "listSandboxes",
        Method::GET,
        "/v1/sandboxes",
        &[],
        None,
    )
    .await;
    assert_eq!(g.status, 200);
    assert_eq!(g.body["sandboxes"], json!([]));
    assert!(g.body.get("nextPageToken").is_none());
    for q in [
        "filter=colour%3Dred",
        "filter=nonsense",
        "orderBy=size",
        "pageSize=-1",
        "pageToken=garbage",
    ] {
        let g = call(
            &sock,
            "listSandboxes",
            Method::GET,
            &format!("/v1/sandboxes?{q}"),
            &[],
            None,
        )
        .await;
        assert_eq!(
            (g.status, g.body["code"].as_str()),
            (400, Some("invalidArgument")),
            "{q}"
        );
    }
    let g = call(
        &sock,
        "getNetworkPoliciesInOwnerScope",
        Method::GET,
        "/v1/network-policies",
        &[],
        None,
    )
    .await;
    assert_eq!(g.status, 200);
    // LocalSandboxd's default preset allows all but the default-blocked ranges; deny-all is the empty rule set.
    assert_eq!(g.body["effective"]["mode"], "allowAll", "{}", g.body);
    assert!(g.body["effective"]["denyNetworks"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["network"] == "169.254.0.0/16" && r["layer"] == "default"));
    let r = send(&sock, Method::POST, "/policy/network/rules", &[],
                 Some(json!({"actions": [{"action": "init", "preset": "deny-all"}, {"action": "allow", "resource": "*.example.com"}]}))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let g = call(
        &sock,
        "getNetworkPoliciesInOwnerScope",
        Method::GET,
        "/v1/network-policies",
        &[],
        None,
    )
    .await;
    assert_eq!(g.body["effective"]["mode"], "denyAll", "{}", g.body);
    assert_eq!(
        g.body["effective"]["allowNetworks"],
        json!([{"network": "*.example.com", "layer": "owner"}])
    );
    let nodes = g.body["exact"]["nodes"].as_array().unwrap();
    assert_eq!(
        nodes[0]["destination"],
        json!({"kind": "dnsSubtree", "value": "example.com"})
    );
    assert!(nodes.last().unwrap()["all"].is_object());
    let g = call(
        &sock,
        "listPolicyLogEntriesInOwnerScope",
        Method::GET,
        "/v1/policy-logs",
        &[],
        None,
    )
    .await;
    assert_eq!((g.status, &g.body["entries"]), (200, &json!([])));
    let g = call(
        &sock,
        "listPolicyLogEntriesInOwnerScope",
        Method::GET,
        "/v1/policy-logs?since=yesterday",
        &[],
        None,
    )
    .await;
    assert_eq!(g.status, 400);
    let g = call(
        &sock,
        "getNetworkPolicies",
        Method::GET,
        "/v1/sandboxes/nope/network-policies",
        &[],
        None,
    )
    .await;
    assert_eq!(g.status, 404);
    d.stop().await;
}

/// Creates that fail (the engine does not exist) settle as `failed` with `failure`; lists page, filter and order
/// over them; idempotency replays and conflicts; a failed sandbox is deleted with `If-Match`.
#[tokio::test]
async fn failed_creates_paging_filters_idempotency_and_etags() {
    let d = local("unix:///nonexistent/engine.sock").await;
    let sock = d.socket_path().to_path_buf();
    let mut uids = Vec::new();
    for i in 0..5 {
        let team = if i % 2 == 0 { "a" } else { "b" };
        let key = format!("key-{i}");
        let b = json!({"displayNamePrefix": "p-", "imageRef": "busybox:nope", "labels": {"team": team}});
        let g = call(
            &sock,
            "createSandbox",
            Method::POST,
            "/v1/sandboxes",
            &[("Idempotency-Key", &key)],
            Some(b.clone()),
        )
        .await;
        assert_eq!(g.status, 202, "{}", g.body);
        assert_eq!(status(&g), "creating");
        assert_eq!(g.etag(), g.body["core"]["etag"].as_str().unwrap());
        let uid = g.body["uid"].as_str().unwrap().to_string();
        assert_eq!(g.body["name"], format!("sandboxes/{uid}"));
        assert!(g.body["displayName"].as_str().unwrap().starts_with("p-"));
        // the same key and body: the first answer again, no second sandbox
        let again = call(
            &sock,
            "createSandbox",
            Method::POST,
            "/v1/sandboxes",
            &[("Idempotency-Key", &key)],
            Some(b),
        )
        .await;
        assert_eq!((again.status, &again.body), (202, &g.body));
        // the same key, another body: failedPrecondition (409)
        let other = json!({"displayNamePrefix": "q-", "imageRef": "busybox:nope"});
        let conflict = call(
            &sock,
            "createSandbox",
            Method::POST,
            "/v1/sandboxes",
            &[("Idempotency-Key", &key)],
            Some(other),
        )
        .await;
        assert_eq!(
            (conflict.status, conflict.body["code"].as_str()),
            (409, Some("failedPrecondition"))
        );
        uids.push(uid);
    }
    for uid in &uids {
        let g = wait_for(&sock, uid, 30, |g| status(g) != "creating").await;
        assert_eq!(status(&g), "failed", "{}", g.body);
        assert!(g.body["failure"]["code"].is_string(), "{}", g.body);
        assert!(g.body["core"].get("endpoint").is_none());
        assert_ne!(g.body["core"]["etag"], "\"1\"");
    }
    // a taken display name
    let g = call(
        &sock,
        "getSandbox",
        Method::GET,
        &format!("/v1/sandboxes/{}", uids[0]),
        &[],
        None,
    )
    .await;
    let taken = g.body["displayName"].as_str().unwrap().to_string();
    let dup = call(
        &sock,
        "createSandbox",
        Method::POST,
        "/v1/sandboxes",
        &[],
        Some(json!({"displayName": taken, "imageRef": "x"})),
    )
    .await;
    assert_eq!(
        (dup.status, dup.body["code"].as_str()),
        (409, Some("alreadyExists"))
    );
    // If-None-Match: the current etag (also weak, or in a list) is 304 with the etag; another is 200
    let etag = g.etag();
    for inm in [
        etag.clone(),
        format!("W/{etag}"),
        format!("\"zz\", {etag}"),
        "*".into(),
    ] {
        let g = call(
            &sock,
            "getSandbox",
            Method::GET,
            &format!("/v1/sandboxes/{}", uids[0]),
            &[("If-None-Match", &inm)],
            None,
        )
        .await;
        assert_eq!((g.status, g.etag()), (304, etag.clone()), "{inm}");
    }
    let g = call(
        &sock,
        "getSandbox",
        Method::GET,
        &format!("/v1/sandboxes/{}", uids[0]),
        &[("If-None-Match", "\"0\"")],
        None,
    )
    .await;
    assert_eq!(g.status, 200);
    // pages of 2 walk all five exactly once, in creation order
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let path = format!("/v1/sandboxes?pageSize=2&pageToken={token}");
        let g = call(&sock, "listSandboxes", Method::GET, &path, &[], None).await;
        let list = g.body["sandboxes"].as_array().unwrap();
        assert!(list.len() <= 2);
        seen.extend(list.iter().map(|s| s["uid"].as_str().unwrap().to_string()));
        pages += 1;
        match g.body["nextPageToken"].as_str() {
            Some(t) if !t.is_empty() => token = t.to_string(),
            _ => break,
        }
    }
    assert_eq!((seen.clone(), pages), (uids.clone(), 3));
    // a token belongs to its filter
    let g = call(
        &sock,
        "listSandboxes",
        Method::GET,
        "/v1/sandboxes?pageSize=2",
        &[],
        None,
    )
    .await;
    let t = g.body["nextPageToken"].as_str().unwrap().to_string();
    let g = call(
        &sock,
        "listSandboxes",
        Method::GET,
        &format!("/v1/sandboxes?pageSize=2&filter=status%3Dfailed&pageToken={t}"),
        &[],
        None,
    )
    .await;
    assert_eq!(g.status, 400);
    // filters: label, status, uid, display name; order by name, descending
    let n = |g: &Got| g.body["sandboxes"].as_array().unwrap().len();
    let g = call(
        &sock,
        "listSandboxes",
        Method::GET,
        "/v1/sandboxes?filter=label.team%3Da",
        &[],
        None,
    )
    .await;
    assert_eq!(n(&g), 3);
    let g = call(
        &sock,
        "listSandboxes",
        Method::GET,
        "/v1/sandboxes?filter=status%3Dfailed,label.team%3Db",
        &[],
        None,
    )
    .await;
    assert_eq!(n(&g), 2);
    let g = call(
        &sock,
        "listSandboxes",
        Method::GET,
        "/v1/sandboxes?filter=status%3Drunning",
        &[],
        None,
    )
    .await;
    assert_eq!(n(&g), 0);
    let g = call(
        &sock,
        "listSandboxes",
        Method::GET,
        &format!("/v1/sandboxes?filter=uid%3D{}", uids[3]),
        &[],
        None,
    )
    .await;
    assert_eq!(g.body["sandboxes"][0]["uid"], uids[3].as_str());
    let g = call(
        &sock,
        "listSandboxes",
        Method::GET,
        &format!("/v1/sandboxes?filter=display_name%3D{taken}"),
        &[],
        None,
    )
    .await;
    assert_eq!(n(&g), 1);
    let g = call(
        &sock,
        "listSandboxes",
        Method::GET,
        "/v1/sandboxes?orderBy=name%20desc",
        &[],
        None,
    )
    .await;
    let names: Vec<&str> = g.body["sandboxes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["displayName"].as_str().unwrap())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    sorted.reverse();
    assert_eq!(names, sorted);
    // start of a failed sandbox: failedPrecondition; delete: 428 without If-Match, 412 stale, then 202 → gone
    let path = format!("/v1/sandboxes/{}", uids[0]);
    let g = call(
        &sock,
        "startSandbox",
        Method::POST,
        &format!("{path}/start"),
        &[("If-Match", &etag)],
        None,
    )
    .await;
    assert_eq!(
        (g.status, g.body["code"].as_str()),
        (409, Some("failedPrecondition"))
    );
    let g = call(&sock, "deleteSandbox", Method::DELETE, &path, &[], None).await;
    assert_eq!(
        (g.status, g.body["code"].as_str()),
        (428, Some("failedPrecondition"))
    );
    let g = call(
        &sock,
        "deleteSandbox",
        Method::DELETE,
        &path,
        &[("If-Match", "\"999\"")],
        None,
    )
    .await;
    assert_eq!(
        (g.status, g.body["code"].as_str()),
        (412, Some("failedPrecondition"))
    );
    assert_eq!(
        g.body["details"][0]["@type"],
        "type.googleapis.com/docker.sandboxes.v1.EtagMismatch"
    );
    assert_eq!(g.body["details"][0]["currentEtag"], etag.as_str());
    let g = call(
        &sock,
        "deleteSandbox",
        Method::DELETE,
        &path,
        &[("If-Match", &etag), ("Idempotency-Key", "del-0")],
        None,
    )
    .await;
    assert_eq!((g.status, status(&g)), (202, "deleting"));
    let replay = call(
        &sock,
        "deleteSandbox",
        Method::DELETE,
        &path,
        &[("If-Match", &etag), ("Idempotency-Key", "del-0")],
        None,
    )
    .await;
    assert_eq!((replay.status, &replay.body), (202, &g.body));
    wait_for(&sock, &uids[0], 10, |g| g.status == 404).await;
    let g = call(
        &sock,
        "listSandboxes",
        Method::GET,
        "/v1/sandboxes",
        &[],
        None,
    )
    .await;
    assert_eq!(n(&g), 4);
    // concurrent retries with one key make one sandbox, and all get its answer
    let body = json!({"displayNamePrefix": "race-", "imageRef": "busybox:nope"});
    let racers = (0..6).map(|_| {
        let sock = sock.clone();
        let body = body.clone();
        tokio::spawn(async move {
            call(
                &sock,
                "createSandbox",
                Method::POST,
                "/v1/sandboxes",
                &[("Idempotency-Key", "race")],
                Some(body),
            )
            .await
        })
    });
    let got: Vec<Got> = futures::future::join_all(racers)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert!(got.iter().all(|g| g.status == 202 && g.body == got[0].body));
    let g = call(
        &sock,
        "listSandboxes",
        Method::GET,
        "/v1/sandboxes",
        &[],
        None,
    )
    .await;
    assert_eq!(n(&g), 5);
    d.stop().await;
}

/// A sandbox's endpoint socket path from its resource.
fn endpoint_socket(g: &Got) -> PathBuf {
    let ep = &g.body["core"]["endpoint"];
    assert_eq!(ep["protocol"], "unixSocket");
    assert_eq!(ep["authentication"]["scheme"], "localSocket");
    assert_eq!(ep["credentialAudience"], "");
    assert_eq!(ep["sandboxUid"], g.body["uid"]);
    assert_eq!(ep["sandbox"], g.body["name"]);
    let uri = ep["uri"].as_str().unwrap();
    PathBuf::from(uri.strip_prefix("unix://").unwrap())
}

#[tokio::test]
#[ignore = "needs DOCKER_HOST and SANDBOXD_TEST_IMAGE (scripts/lib.sh); scripts/test.sh runs it"]
async fn a_sandbox_through_its_whole_life() {
    let image = env("SANDBOXD_TEST_IMAGE");
    let d = local(&env("DOCKER_HOST")).await;
    let sock = d.socket_path().to_path_buf();
    let b = json!({"displayName": "v1-life", "imageRef": image, "environment": {"GREETING": "hello v1"},
                   "labels": {"suite": "v1"}});
    let g = call(
        &sock,
        "createSandbox",
        Method::POST,
        "/v1/sandboxes",
        &[("Idempotency-Key", "life")],
        Some(b),
    )
    .await;
    assert_eq!((g.status, status(&g)), (202, "creating"), "{}", g.body);
    let uid = g.body["uid"].as_str().unwrap().to_string();
    let path = format!("/v1/sandboxes/{uid}");
    let g = wait_for(&sock, &uid, 120, |g| status(g) != "creating").await;
    assert_eq!(status(&g), "running", "{}", g.body);
    assert_eq!(g.body["core"]["agent"], "shell");
    assert_eq!(g.body["core"]["imageRef"], image.as_str());
    assert_eq!(g.body["core"]["labels"]["suite"], "v1");
    // the same sandbox through the sbx routes: one store
    let s = send(&sock, Method::GET, "/sandbox/v1-life", &[], None).await;
    assert_eq!((s.status, s.body["id"].as_str()), (200, Some(uid.as_str())));
    // the endpoint socket serves the sandbox's processes, with the create's environment
    let ep = endpoint_socket(&g);
    assert!(
        ep.starts_with(d.root()) && ep.as_os_str().len() < 100,
        "{}",
        ep.display()
    );
    let caps = g.body["core"]["endpoint"]["capabilities"]
        .as_array()
        .unwrap();
    assert!(caps.iter().any(|c| c == "exec"));
    let x = send(
        &ep,
        Method::POST,
        "/v1/processes/exec",
        &[],
        Some(json!({"cmd": ["sh", "-c", "echo $GREETING"]})),
    )
    .await;
    contract()
        .check_response("exec", x.status, &x.body)
        .unwrap();
    use base64::Engine as _;
    let out = base64::engine::general_purpose::STANDARD
        .decode(x.body["stdout"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        (x.body["exitCode"].as_i64(), out.as_slice()),
        (Some(0), &b"hello v1\n"[..])
    );
    // stop: 428, 412, then 202 stopping (replayed by its key) → stopped; a second stop is 200
    let etag = g.etag();
    let g = call(
        &sock,
        "stopSandbox",
        Method::POST,
        &format!("{path}/stop"),
        &[],
        None,
    )
    .await;
    assert_eq!(g.status, 428);
    let g = call(
        &sock,
        "stopSandbox",
        Method::POST,
        &format!("{path}/stop"),
        &[("If-Match", "\"0\"")],
        None,
    )
    .await;
    assert_eq!(
        (g.status, g.body["details"][0]["currentEtag"].as_str()),
        (412, Some(etag.as_str()))
    );
    let hdr = [("If-Match", etag.as_str()), ("Idempotency-Key", "stop-1")];
    let g = call(
        &sock,
        "stopSandbox",
        Method::POST,
        &format!("{path}/stop"),
        &hdr,
        None,
    )
    .await;
    assert_eq!((g.status, status(&g)), (202, "stopping"), "{}", g.body);
    assert_ne!(g.etag(), etag);
    let replay = call(
        &sock,
        "stopSandbox",
        Method::POST,
        &format!("{path}/stop"),
        &hdr,
        None,
    )
    .await;
    assert_eq!((replay.status, &replay.body), (202, &g.body));
    let g = wait_for(&sock, &uid, 60, |g| status(g) != "stopping").await;
    assert_eq!(status(&g), "stopped", "{}", g.body);
    let again = call(
        &sock,
        "stopSandbox",
        Method::POST,
        &format!("{path}/stop"),
        &[("If-Match", &g.etag())],
        None,
    )
    .await;
    assert_eq!((again.status, status(&again)), (200, "stopped"));
    // start: 202 starting → running, and processes run again
    let g = call(
        &sock,
        "startSandbox",
        Method::POST,
        &format!("{path}/start"),
        &[("If-Match", &g.etag())],
        None,
    )
    .await;
    assert_eq!((g.status, status(&g)), (202, "starting"), "{}", g.body);
    let g = wait_for(&sock, &uid, 60, |g| status(g) != "starting").await;
    assert_eq!(status(&g), "running", "{}", g.body);
    let x = send(
        &ep,
        Method::POST,
        "/v1/processes/exec",
        &[],
        Some(json!({"cmd": ["true"]})),
    )
    .await;
    assert_eq!(x.body["exitCode"], 0);
    // the proxy decides what the sandbox reaches: a blocked request shows in the sandbox's policy log
    let x = send(&ep, Method::POST, "/v1/processes/exec", &[],
                 Some(json!({"cmd": ["sh", "-c", "(printf 'GET http://blocked.v1.test/ HTTP/1.0\\r\\nHost: blocked.v1.test\\r\\n\\r\\n'; sleep 2) | nc 127.0.0.1 3128 2>&1; true"]}))).await;
    assert_eq!(x.status, 200);
    let logs = call(
        &sock,
        "listPolicyLogEntries",
        Method::GET,
        &format!("{path}/policy-logs"),
        &[],
        None,
    )
    .await;
    let entries = logs.body["entries"].as_array().unwrap();
    let e = entries.iter().find(|e| {
        e["resource"]
            .as_str()
            .unwrap_or("")
            .starts_with("blocked.v1.test")
    });
    let e = e.unwrap_or_else(|| {
        panic!(
            "no entry for blocked.v1.test: {} (wget said {})",
            logs.body, x.body
        )
    });
    assert_eq!(
        (e["decision"].as_str(), e["sandboxUid"].as_str()),
        (Some("blocked"), Some(uid.as_str()))
    );
    assert_eq!(e["domain"], "network");
    let logs = call(
        &sock,
        "listPolicyLogEntries",
        Method::GET,
        &format!("{path}/policy-logs?filter=decision%3Dallowed"),
        &[],
        None,
    )
    .await;
    assert!(logs.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["decision"] == "allowed"));
    let logs = call(
        &sock,
        "listPolicyLogEntries",
        Method::GET,
        &format!("{path}/policy-logs?since=2999-01-01T00:00:00Z"),
        &[],
        None,
    )
    .await;
    assert_eq!(logs.body["entries"], json!([]));
    // a rule for this sandbox shows in its effective policy as `attached`
    let r = send(&sock, Method::POST, "/policy/network/rules", &[],
                 Some(json!({"actions": [{"action": "allow", "resource": "api.v1.test:443", "sandbox": "v1-life"}]}))).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let p = call(
        &sock,
        "getNetworkPolicies",
        Method::GET,
        &format!("{path}/network-policies"),
        &[],
        None,
    )
    .await;
    let allow = p.body["effective"]["allowNetworks"].as_array().unwrap();
    assert!(
        allow
            .iter()
            .any(|r| r["network"] == "api.v1.test:443" && r["layer"] == "attached"),
        "{}",
        p.body
    );
    // delete: 202 deleting → 404; the endpoint socket and the sbx sandbox go with it
    let etag = g.etag();
    let g = call(
        &sock,
        "deleteSandbox",
        Method::DELETE,
        &path,
        &[("If-Match", &etag)],
        None,
    )
    .await;
    assert_eq!((g.status, status(&g)), (202, "deleting"), "{}", g.body);
    wait_for(&sock, &uid, 60, |g| g.status == 404).await;
    assert!(!ep.exists());
    let s = send(&sock, Method::GET, "/sandbox/v1-life", &[], None).await;
    assert_eq!(s.status, 404);
    d.stop().await;
}

/// A sandbox made through the sbx routes is a v1 sandbox too, and one the sbx routes remove leaves v1.
#[tokio::test]
#[ignore = "needs DOCKER_HOST and SANDBOXD_TEST_IMAGE (scripts/lib.sh); scripts/test.sh runs it"]
async fn sbx_sandboxes_are_v1_sandboxes() {
    let image = env("SANDBOXD_TEST_IMAGE");
    let d = local(&env("DOCKER_HOST")).await;
    let sock = d.socket_path().to_path_buf();
    let ws = tempfile::tempdir().unwrap();
    let ws_path = ws.path().display().to_string();
    let s = send(
        &sock,
        Method::POST,
        "/sandbox",
        &[],
        Some(
            json!({"name": "from-sbx", "agent": "shell", "workspace": ws_path, "template": image}),
        ),
    )
    .await;
    assert_eq!(s.status, 201, "{}", s.body);
    let g = call(
        &sock,
        "listSandboxes",
        Method::GET,
        "/v1/sandboxes?filter=display_name%3Dfrom-sbx",
        &[],
        None,
    )
    .await;
    let sb = &g.body["sandboxes"][0];
    assert_eq!(sb["core"]["status"], "running", "{}", g.body);
    let uid = sb["uid"].as_str().unwrap().to_string();
    let got = call(
        &sock,
        "getSandbox",
        Method::GET,
        &format!("/v1/sandboxes/{uid}"),
        &[],
        None,
    )
    .await;
    let ep = endpoint_socket(&got);
    let x = send(
        &ep,
        Method::POST,
        "/v1/processes/exec",
        &[],
        Some(json!({"cmd": ["pwd"]})),
    )
    .await;
    assert_eq!(x.body["exitCode"], 0, "{}", x.body);
    // stopped through sbx: v1 follows with a new etag
    let s = send(&sock, Method::POST, "/sandbox/from-sbx/stop", &[], None).await;
    assert_eq!(s.status, 200);
    let after = call(
        &sock,
        "getSandbox",
        Method::GET,
        &format!("/v1/sandboxes/{uid}"),
        &[],
        None,
    )
    .await;
    assert_eq!(status(&after), "stopped");
    assert_ne!(after.etag(), got.etag());
    let s = send(&sock, Method::DELETE, "/sandbox/from-sbx", &[], None).await;
    assert_eq!(s.status, 200);
    let g = call(
        &sock,
        "getSandbox",
        Method::GET,
        &format!("/v1/sandboxes/{uid}"),
        &[],
        None,
    )
    .await;
    assert_eq!(g.status, 404);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!ep.exists());
    d.stop().await;
}

/// Exec `cmd` through a sandbox's endpoint socket; (exit code, stdout).
async fn run(ep: &Path, cmd: &[&str]) -> (i64, String) {
    use base64::Engine as _;
    let x = send(
        ep,
        Method::POST,
        "/v1/processes/exec",
        &[],
        Some(json!({"cmd": cmd})),
    )
    .await;
    assert_eq!(x.status, 200, "{}", x.body);
    let out = base64::engine::general_purpose::STANDARD
        .decode(x.body["stdout"].as_str().unwrap())
        .unwrap();
    (
        x.body["exitCode"].as_i64().unwrap(),
        String::from_utf8_lossy(&out).into_owned(),
    )
}

/// Create a sandbox and wait until it runs; its resource.
async fn running(sock: &Path, body: Value) -> Got {
    let g = call(
        sock,
        "createSandbox",
        Method::POST,
        "/v1/sandboxes",
        &[],
        Some(body),
    )
    .await;
    assert_eq!(g.status, 202, "{}", g.body);
    let uid = g.body["uid"].as_str().unwrap().to_string();
    let g = wait_for(sock, &uid, 120, |g| status(g) != "creating").await;
    assert_eq!(status(&g), "running", "{}", g.body);
    g
}

#[tokio::test]
#[ignore = "needs DOCKER_HOST and SANDBOXD_TEST_IMAGE (scripts/lib.sh); scripts/test.sh runs it"]
async fn ports_and_snapshots() {
    let image = env("SANDBOXD_TEST_IMAGE");
    let d = local(&env("DOCKER_HOST")).await;
    let sock = d.socket_path().to_path_buf();
    let g = running(
        &sock,
        json!({"displayName": "v1-ports", "imageRef": image, "labels": {"k": "v"}}),
    )
    .await;
    let uid = g.body["uid"].as_str().unwrap().to_string();
    let ep = endpoint_socket(&g);
    let base = format!("/v1/sandboxes/{uid}");
    // a server inside, published: 201 (replayed by its key), a second publish of the number is alreadyExists
    let (code, _) = run(
        &ep,
        &[
            "sh",
            "-c",
            "(while true; do echo hi-port | nc -l -p 8080; done) >/dev/null 2>&1 &",
        ],
    )
    .await;
    assert_eq!(code, 0);
    let hdr = [("Idempotency-Key", "port-1")];
    let p = call(
        &sock,
        "createPort",
        Method::POST,
        &format!("{base}/ports"),
        &hdr,
        Some(json!({"port": {"number": 8080}})),
    )
    .await;
    assert_eq!(p.status, 201, "{}", p.body);
    assert_eq!(p.etag(), p.body["etag"].as_str().unwrap());
    let replay = call(
        &sock,
        "createPort",
        Method::POST,
        &format!("{base}/ports"),
        &hdr,
        Some(json!({"port": {"number": 8080}})),
    )
    .await;
    assert_eq!((replay.status, &replay.body), (201, &p.body));
    let dup = call(
        &sock,
        "createPort",
        Method::POST,
        &format!("{base}/ports"),
        &[],
        Some(json!({"port": {"number": 8080}})),
    )
    .await;
    assert_eq!(
        (dup.status, dup.body["code"].as_str()),
        (409, Some("alreadyExists"))
    );
    let bad = call(
        &sock,
        "createPort",
        Method::POST,
        &format!("{base}/ports"),
        &[],
        Some(json!({"port": {"number": 0}})),
    )
    .await;
    assert_eq!(bad.status, 400);
    let url = p.body["url"].as_str().unwrap().to_string();
    let addr = url.strip_prefix("tcp://").unwrap().to_string();
    let mut got = String::new();
    for _ in 0..50 {
        use tokio::io::AsyncReadExt;
        if let Ok(mut c) = tokio::net::TcpStream::connect(&addr).await {
            got.clear();
            let _ = tokio::time::timeout(Duration::from_secs(2), c.read_to_string(&mut got)).await;
            if got.contains("hi-port") {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(got.contains("hi-port"), "read {got:?} from {addr}");
    let l = call(
        &sock,
        "listPorts",
        Method::GET,
        &format!("{base}/ports"),
        &[],
        None,
    )
    .await;
    assert_eq!(l.body["published"].as_array().unwrap().len(), 1);
    let s = call(&sock, "getSandbox", Method::GET, &base, &[], None).await;
    assert_eq!(s.body["core"]["ports"][0]["sandboxPort"], 8080);
    assert_ne!(s.etag(), g.etag(), "a publication changes the sandbox");
    let pp = format!("{base}/ports/8080");
    let one = call(&sock, "getPort", Method::GET, &pp, &[], None).await;
    assert_eq!(one.body, p.body);
    let nm = call(
        &sock,
        "getPort",
        Method::GET,
        &pp,
        &[("If-None-Match", &p.etag())],
        None,
    )
    .await;
    assert_eq!(nm.status, 304);
    let r = call(&sock, "deletePort", Method::DELETE, &pp, &[], None).await;
    assert_eq!(r.status, 428);
    let r = call(
        &sock,
        "deletePort",
        Method::DELETE,
        &pp,
        &[("If-Match", "\"1\"")],
        None,
    )
    .await;
    assert_eq!(
        (r.status, r.body["details"][0]["currentEtag"].as_str()),
        (412, Some(p.etag().as_str()))
    );
    let r = call(
        &sock,
        "deletePort",
        Method::DELETE,
        &pp,
        &[("If-Match", &p.etag())],
        None,
    )
    .await;
    assert_eq!(r.status, 204);
    let r = call(&sock, "getPort", Method::GET, &pp, &[], None).await;
    assert_eq!(r.status, 404);
    assert!(
        tokio::net::TcpStream::connect(&addr).await.is_err(),
        "{addr} still listens"
    );
    // a snapshot carries the disk: a restored sandbox has the file, the agent and the labels
    let (code, _) = run(&ep, &["sh", "-c", "echo captured > /snap.txt"]).await;
    assert_eq!(code, 0);
    let all = call(
        &sock,
        "createSnapshot",
        Method::POST,
        &format!("{base}/snapshots"),
        &[],
        Some(json!({"displayName": "s1", "captureMode": "all"})),
    )
    .await;
    assert_eq!(
        (all.status, all.body["code"].as_str()),
        (501, Some("unimplemented"))
    );
    let sn = call(
        &sock,
        "createSnapshot",
        Method::POST,
        &format!("{base}/snapshots"),
        &[("Idempotency-Key", "snap-1")],
        Some(json!({"displayName": "s1", "description": "before"})),
    )
    .await;
    assert_eq!(
        (sn.status, sn.body["status"].as_str()),
        (202, Some("creating")),
        "{}",
        sn.body
    );
    let replay = call(
        &sock,
        "createSnapshot",
        Method::POST,
        &format!("{base}/snapshots"),
        &[("Idempotency-Key", "snap-1")],
        Some(json!({"displayName": "s1", "description": "before"})),
    )
    .await;
    assert_eq!(replay.body, sn.body);
    let sid = sn.body["uid"].as_str().unwrap().to_string();
    let until = Instant::now() + Duration::from_secs(120);
    let snap = loop {
        let s = call(
            &sock,
            "getSnapshot",
            Method::GET,
            &format!("/v1/snapshots/{sid}"),
            &[],
            None,
        )
        .await;
        if s.body["status"] != "creating" {
            break s;
        }
        assert!(Instant::now() < until, "snapshot never settled");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(snap.body["status"], "ready", "{}", snap.body);
    assert_eq!(snap.body["sandboxUid"], uid.as_str());
    let l = call(
        &sock,
        "listSnapshots",
        Method::GET,
        &format!("/v1/snapshots?sandbox=sandboxes%2F{uid}"),
        &[],
        None,
    )
    .await;
    assert_eq!(l.body["snapshots"][0]["uid"], sid.as_str());
    let l = call(
        &sock,
        "listSnapshots",
        Method::GET,
        "/v1/snapshots?filter=display_name%3Dnope",
        &[],
        None,
    )
    .await;
    assert_eq!(l.body["snapshots"], json!([]));
    let r = call(
        &sock,
        "restoreSnapshot",
        Method::POST,
        &format!("/v1/snapshots/{sid}/restore"),
        &[],
        Some(json!({"displayName": "v1-restored"})),
    )
    .await;
    assert_eq!((r.status, status(&r)), (202, "creating"), "{}", r.body);
    let ruid = r.body["uid"].as_str().unwrap().to_string();
    let restored = wait_for(&sock, &ruid, 120, |g| status(g) != "creating").await;
    assert_eq!(status(&restored), "running", "{}", restored.body);
    assert_eq!(restored.body["core"]["labels"]["k"], "v");
    let (code, out) = run(&endpoint_socket(&restored), &["cat", "/snap.txt"]).await;
    assert_eq!((code, out.as_str()), (0, "captured\n"));
    // a snapshot of a stopped sandbox is refused
    let st = call(
        &sock,
        "stopSandbox",
        Method::POST,
        &format!("/v1/sandboxes/{ruid}/stop"),
        &[("If-Match", &restored.etag())],
        None,
    )
    .await;
    assert_eq!(st.status, 202);
    wait_for(&sock, &ruid, 60, |g| status(g) == "stopped").await;
    let no = call(
        &sock,
        "createSnapshot",
        Method::POST,
        &format!("/v1/sandboxes/{ruid}/snapshots"),
        &[],
        Some(json!({"displayName": "s2"})),
    )
    .await;
    assert_eq!(
        (no.status, no.body["code"].as_str()),
        (409, Some("failedPrecondition"))
    );
    // delete: If-Match, then gone (and gone again is still success)
    let del = call(
        &sock,
        "deleteSnapshot",
        Method::DELETE,
        &format!("/v1/snapshots/{sid}"),
        &[],
        None,
    )
    .await;
    assert_eq!(del.status, 428);
    let del = call(
        &sock,
        "deleteSnapshot",
        Method::DELETE,
        &format!("/v1/snapshots/{sid}"),
        &[("If-Match", &snap.etag())],
        None,
    )
    .await;
    assert_eq!(del.status, 204);
    let g = call(
        &sock,
        "getSnapshot",
        Method::GET,
        &format!("/v1/snapshots/{sid}"),
        &[],
        None,
    )
    .await;
    assert_eq!(g.status, 404);
    d.stop().await;
}

/// With the dockerd backend each v1 sandbox runs in its own private engine, which its delete stops.
#[tokio::test]
#[ignore = "needs root, dockerd, DOCKER_HOST and SANDBOXD_TEST_IMAGE (scripts/lib.sh); scripts/test.sh runs it"]
async fn a_sandbox_in_its_own_private_engine() {
    let image = env("SANDBOXD_TEST_IMAGE");
    let d = LocalSandboxd::start(LocalOptions {
        backend: Some(BackendKind::Dockerd),
        docker_host: Some(env("DOCKER_HOST")),
        ..Default::default()
    })
    .await
    .unwrap();
    let sock = d.socket_path().to_path_buf();
    let g = running(
        &sock,
        json!({"displayNamePrefix": "own-", "imageRef": image}),
    )
    .await;
    let uid = g.body["uid"].as_str().unwrap().to_string();
    // the sandbox's engine is its own: the container sees that engine's socket, whose only container is itself
    let ep = endpoint_socket(&g);
    let (code, out) = run(
        &ep,
        &["sh", "-c", "test -S /var/run/docker.sock && echo engine"],
    )
    .await;
    assert_eq!((code, out.as_str()), (0, "engine\n"));
    let engines = std::fs::read_dir(d.root().join("engines")).unwrap().count();
    assert_eq!(engines, 1);
    let del = call(
        &sock,
        "deleteSandbox",
        Method::DELETE,
        &format!("/v1/sandboxes/{uid}"),
        &[("If-Match", &g.etag())],
        None,
    )
    .await;
    assert_eq!(del.status, 202);
    wait_for(&sock, &uid, 60, |g| g.status == 404).await;
    let left = std::fs::read_dir(d.root().join("engines"))
        .map(|r| r.count())
        .unwrap_or(0);
    assert_eq!(left, 0, "the sandbox's engine directory is gone");
    d.stop().await;
}

/// A stop while v1 creates are under way ends them (bounded) and leaves no root behind.
#[tokio::test]
#[ignore = "needs DOCKER_HOST and SANDBOXD_TEST_IMAGE (scripts/lib.sh); scripts/test.sh runs it"]
async fn stopping_during_creates() {
    let image = env("SANDBOXD_TEST_IMAGE");
    let d = local(&env("DOCKER_HOST")).await;
    let sock = d.socket_path().to_path_buf();
    for i in 0..3 {
        let g = call(
            &sock,
            "createSandbox",
            Method::POST,
            "/v1/sandboxes",
            &[],
            Some(json!({"displayName": format!("cut-{i}"), "imageRef": image})),
        )
        .await;
        assert_eq!(g.status, 202);
    }
    let began = Instant::now();
    d.stop().await;
    assert!(
        began.elapsed() < Duration::from_secs(30),
        "stop took {:?}",
        began.elapsed()
    );
    assert!(!d.root().exists(), "{} is left", d.root().display());
    assert!(send_fails(&sock).await);
}

async fn send_fails(sock: &Path) -> bool {
    tokio::net::UnixStream::connect(sock).await.is_err()
}
