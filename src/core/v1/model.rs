//! The v1 wire types the SDK reads and writes (camelCase JSON, as the contract spells it), for the client and for
//! LocalSandboxd's v1 routes alike. Only the fields the SDK uses are typed; everything else a server sends is kept in
//! `extra` and written back unchanged, so reading and re-sending a resource loses nothing. Tests check each type
//! against `spec/sandboxes-api-v1.openapi.yaml`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// `Sandbox`: a sandbox resource (`name` is `sandboxes/<uid>`; `displayName` is only a label).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sandbox {
    pub name: String,
    pub uid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    pub core: SandboxCore,
    /// Why the sandbox is `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<ApiError>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `SandboxCore`: status, etag, creation time and the endpoint of a sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxCore {
    /// `creating | starting | running | stopping | stopped | failed | deleting | degraded` (kept as sent: the
    /// contract may add states).
    pub status: String,
    /// RFC 3339. Required by the schema, yet the document's own 202 examples leave it out: read as empty then.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub created_at: String,
    /// A strong ETag, quotes included (`"…"`): what `If-Match` sends back. Empty when a 202 left it out (the
    /// client reads the resource again for it).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub etag: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_ref: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environment: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Where the sandbox's files and processes are served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<SandboxEndpoint>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `SandboxEndpoint`: the base of a sandbox's file and process operations, and how to authenticate there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxEndpoint {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// `http` or `unixSocket`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Required non-empty over `http`; empty for `unixSocket`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_audience: Option<String>,
    pub sandbox: String,
    pub sandbox_uid: String,
    pub api_version: String,
    pub capabilities: Vec<String>,
    pub authentication: EndpointAuthentication,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `EndpointAuthentication`: `scopedBearer` (credentials of at most 300 s) or `localSocket` (no token).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointAuthentication {
    pub scheme: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_ttl: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ttl: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub credential_transports: Vec<String>,
}

/// `ListSandboxesResponse`: one page; an empty `nextPageToken` ends the walk.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListSandboxesResponse {
    #[serde(default)]
    pub sandboxes: Vec<Sandbox>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub next_page_token: String,
}

/// `Snapshot`: a captured sandbox (`name` is `snapshots/<uid>`), restorable as a new sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    pub uid: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_uid: Option<String>,
    /// `creating | ready | failed | deleted` (kept as sent).
    pub status: String,
    /// An int64: a decimal string on the wire (a number is read too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_size_bytes: Option<Value>,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_mode: Option<String>,
    /// Why the snapshot is `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<ApiError>,
    /// Empty in a list's `SnapshotSummary` (which has none): a delete reads the snapshot for it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub etag: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Snapshot {
    /// `totalSizeBytes` as a number, when it is one.
    pub fn size(&self) -> Option<u64> {
        match self.total_size_bytes.as_ref()? {
            Value::String(s) => s.parse().ok(),
            v => v.as_u64(),
        }
    }
}

/// `Error`: every failure's body. `code` is kept as sent (the contract promises "future strings"); `details`
/// carry `@type`d entries such as `google.rpc.RetryInfo` and `docker.sandboxes.v1.EtagMismatch`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiError {
    pub code: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// `None` when the body had no `details` (kept apart from `[]` so a body re-sent is unchanged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Vec<Value>>,
}

impl ApiError {
    /// The detail of `@type` ending in `type_suffix` (e.g. `RetryInfo`, `EtagMismatch`).
    pub fn detail(&self, type_suffix: &str) -> Option<&Value> {
        self.details.iter().flatten().find(|d| {
            d["@type"]
                .as_str()
                .is_some_and(|t| t.rsplit(['.', '/']).next() == Some(type_suffix))
        })
    }
}

/// `ExecRequest` (`POST /v1/processes/exec`): argv, no shell; no stdin, timeout or output limit in the contract.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecRequest {
    pub cmd: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// `ExecResponse`: the exit code and both streams as base64; `incomplete` when a capture cap dropped output.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecResponse {
    #[serde(default)]
    pub exit_code: i32,
    #[serde(default, with = "b64")]
    pub stdout: Vec<u8>,
    #[serde(default, with = "b64")]
    pub stderr: Vec<u8>,
    #[serde(default)]
    pub incomplete: bool,
}

/// Bytes as standard base64 strings (the contract's `format: byte`).
mod b64 {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::super::contract::contract;
    use super::*;
    use serde_json::json;

    fn local_sandbox(uid: &str) -> Sandbox {
        Sandbox {
            name: format!("sandboxes/{uid}"),
            uid: uid.into(),
            display_name: Some("my-agent".into()),
            core: SandboxCore {
                status: "running".into(),
                created_at: "2026-12-05T02:00:00Z".into(),
                etag: "\"3\"".into(),
                agent: Some("claude".into()),
                image_ref: Some("docker/sandbox-templates:claude-code".into()),
                environment: [("GREETING".to_string(), "hi".to_string())].into(),
                labels: BTreeMap::new(),
                endpoint: Some(SandboxEndpoint {
                    uri: Some("unix:///run/sandboxd.sock".into()),
                    protocol: Some("unixSocket".into()),
                    credential_audience: Some(String::new()),
                    sandbox: format!("sandboxes/{uid}"),
                    sandbox_uid: uid.into(),
                    api_version: "v1".into(),
                    capabilities: vec!["exec".into(), "readFile".into(), "writeFile".into()],
                    authentication: EndpointAuthentication {
                        scheme: "localSocket".into(),
                        default_ttl: None,
                        max_ttl: None,
                        credential_transports: vec![],
                    },
                    extra: Map::new(),
                }),
                extra: Map::new(),
            },
            failure: None,
            extra: Map::new(),
        }
    }

    #[test]
    fn a_local_socket_sandbox_is_what_the_contract_says() {
        let c = contract();
        let s = serde_json::to_value(local_sandbox("0f3c")).unwrap();
        c.check_response("getSandbox", 200, &s).unwrap();
        let page = serde_json::to_value(ListSandboxesResponse {
            sandboxes: vec![local_sandbox("a"), local_sandbox("b")],
            next_page_token: "p2".into(),
        })
        .unwrap();
        c.check_response("listSandboxes", 200, &page).unwrap();
        // the contract's own rules bite: a local socket may not advertise a token lifetime, and an etag is quoted
        let mut ttl = s.clone();
        ttl["core"]["endpoint"]["authentication"]["defaultTtl"] = json!("300s");
        assert!(c.check_response("getSandbox", 200, &ttl).is_err());
        let mut etag = s.clone();
        etag["core"]["etag"] = json!("3");
        assert!(c.check_response("getSandbox", 200, &etag).is_err());
    }

    /// Every `Sandbox` example of the document (the lifecycle's 202s) reads into [`Sandbox`] and writes back as the
    /// same JSON: unknown fields survive in `extra`.
    #[test]
    fn the_documents_sandboxes_round_trip_unchanged() {
        let c = contract();
        let mut n = 0;
        for op in [
            "createSandbox",
            "deleteSandbox",
            "startSandbox",
            "stopSandbox",
            "restoreSnapshot",
        ] {
            let o = c.operation(op).unwrap();
            for status in ["200", "201", "202"] {
                for e in c.response_examples(o, status) {
                    let s: Sandbox = serde_json::from_value(e.clone()).unwrap();
                    assert_eq!(&serde_json::to_value(&s).unwrap(), e, "{op} {status}");
                    n += 1;
                }
            }
        }
        assert_eq!(n, 5, "sandbox examples");
    }

    #[test]
    fn snapshots_match_the_contract_and_round_trip() {
        let c = contract();
        let v = json!({
            "uid": "s1",
            "name": "snapshots/s1",
            "displayName": "before-upgrade",
            "sandbox": "sandboxes/0f3c",
            "sandboxUid": "0f3c",
            "status": "ready",
            "totalSizeBytes": "1048576",
            "createdAt": "2026-12-05T02:00:00Z",
            "captureMode": "disk",
            "etag": "\"2\"",
        });
        c.check_response("getSnapshot", 200, &v).unwrap();
        let s: Snapshot = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(s.size(), Some(1_048_576));
        assert_eq!(s.sandbox_uid.as_deref(), Some("0f3c"));
        assert_eq!(serde_json::to_value(&s).unwrap(), v, "unknown fields kept");
        // a `ready` snapshot is not a 202 answer: the contract's own rule bites
        assert!(c.check_response("createSnapshot", 202, &v).is_err());
    }

    #[test]
    fn errors_keep_unknown_codes_and_find_their_details() {
        let c = contract();
        let body = json!({
            "code": "resourceExhausted",
            "message": "slow down",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1.5s"}],
        });
        c.check_response("createSandbox", 429, &body).unwrap();
        let e: ApiError = serde_json::from_value(body).unwrap();
        assert_eq!(e.detail("RetryInfo").unwrap()["retryDelay"], "1.5s");
        assert!(e.detail("EtagMismatch").is_none());
        let future: ApiError =
            serde_json::from_value(json!({"code": "quotaGone", "message": "x"})).unwrap();
        assert_eq!(future.code, "quotaGone");
    }

    #[test]
    fn exec_request_and_response_match_the_contract() {
        let c = contract();
        let req = ExecRequest {
            cmd: vec!["sh".into(), "-c".into(), "echo hi".into()],
            env: [("A".to_string(), "1".to_string())].into(),
            working_dir: Some("/work".into()),
            user: None,
        };
        c.check_request("exec", &serde_json::to_value(&req).unwrap())
            .unwrap();
        let res = ExecResponse {
            exit_code: 3,
            stdout: b"hi\n\xff".to_vec(),
            stderr: vec![],
            incomplete: false,
        };
        let v = serde_json::to_value(&res).unwrap();
        assert_eq!(v["stdout"], "aGkK/w==");
        c.check_response("exec", 200, &v).unwrap();
        assert_eq!(serde_json::from_value::<ExecResponse>(v).unwrap(), res);
    }
}
