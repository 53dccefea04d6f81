//! A stand-in for helper B's `crate::core::local::endpoint::Endpoint` (issue #21 design §3), with the same
//! interface, so the per-sandbox endpoint sockets can be bound, served and tested before B's service is merged. It
//! serves `POST /v1/processes/exec` only (a buffered exec in the sandbox's container) and answers `unimplemented`
//! elsewhere. When B's module lands, `v1/mod.rs` names `crate::core::local::endpoint::Endpoint` instead and this
//! file goes.

use crate::core::container::Container;
use crate::core::exec::{self, ExecSpec};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use serde_json::{json, Value};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// One sandbox's endpoint state.
pub struct Endpoint {
    container: Container,
    env: Vec<String>,
    stop: CancellationToken,
}

fn answer(status: u16, body: Value) -> hyper::Response<Full<Bytes>> {
    let mut r = hyper::Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

impl Endpoint {
    /// The endpoint of `container`; `env` (`NAME=value`) is added to every process.
    pub fn new(container: Container, env: Vec<String>) -> Arc<Endpoint> {
        Arc::new(Endpoint {
            container,
            env,
            stop: CancellationToken::new(),
        })
    }

    /// Serve one HTTP request of the endpoint surface.
    pub async fn route(
        self: &Arc<Self>,
        req: hyper::Request<hyper::body::Incoming>,
    ) -> hyper::Response<Full<Bytes>> {
        if req.method() != hyper::Method::POST || req.uri().path() != "/v1/processes/exec" {
            return answer(
                501,
                json!({"code": "unimplemented", "message": format!("{} {} is not served by this endpoint", req.method(), req.uri().path())}),
            );
        }
        let body = match Limited::new(req.into_body(), 1 << 20).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                return answer(
                    400,
                    json!({"code": "invalidArgument", "message": e.to_string()}),
                )
            }
        };
        let b: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let cmd: Vec<String> = b["cmd"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if cmd.is_empty() {
            return answer(
                400,
                json!({"code": "invalidArgument", "message": "cmd must be a non-empty list of strings"}),
            );
        }
        let mut env: Vec<(String, String)> = self
            .env
            .iter()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if let Some(m) = b["environment"].as_object().or(b["env"].as_object()) {
            env.extend(
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())),
            );
        }
        let spec = ExecSpec {
            cmd,
            env,
            cwd: b["workingDir"].as_str().map(str::to_string),
            user: b["user"].as_str().map(str::to_string),
            ..Default::default()
        };
        let run = exec::exec(
            self.container.engine.clone(),
            self.container.id.clone(),
            spec,
            self.stop.child_token(),
        )
        .await;
        use base64::Engine as _;
        let b64 = |v: &[u8]| base64::engine::general_purpose::STANDARD.encode(v);
        match run {
            Ok(o) => answer(
                200,
                json!({"exitCode": o.exit_code.unwrap_or(-1), "stdout": b64(&o.stdout), "stderr": b64(&o.stderr), "incomplete": o.truncated}),
            ),
            Err(e) => answer(500, json!({"code": "internal", "message": e.message})),
        }
    }

    /// The operationIds served.
    pub fn capabilities() -> Vec<&'static str> {
        vec!["exec"]
    }

    /// Kill every process (sandbox stopped/deleted).
    pub async fn shutdown(&self) {
        self.stop.cancel();
    }
}
