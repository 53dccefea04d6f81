//! v1 ports (`listPorts`, `createPort`, `getPort`, `deletePort`) over the sbx port publishing: each published
//! port is a 127.0.0.1 [`Forward`] into the sandbox's container (exec tunnels), the same list the sbx routes read
//! and write. A port's id is its number; its etag is `"<host port>"` (a new publication gets a new host port); its
//! `url` is `tcp://127.0.0.1:<host port>`. A change of `core.ports` (through either API) gives the sandbox a new etag on its next read.

use super::{check_if_match, error, if_none_match, not_found, Answer, Status};
use crate::core::backend::ExecTarget;
use crate::core::call::Call;
use crate::core::forward::Forward;
use crate::core::local::sbx::SbxEntry;
use crate::core::local::Inner;
use crate::core::sbx::PortBinding;
use hyper::{HeaderMap, StatusCode};
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// The address a published port is reached at.
pub(super) fn url(p: &PortBinding) -> String {
    format!("tcp://{}:{}", p.host_ip, p.host_port)
}

fn port_json(uid: &str, p: &PortBinding) -> Value {
    json!({
        "number": p.sandbox_port,
        "protocol": "tcp",
        "url": url(p),
        "etag": etag(p),
        "uid": format!("{}-{}", p.sandbox_port, p.host_port),
        "name": format!("sandboxes/{uid}/ports/{}", p.sandbox_port),
    })
}

fn etag(p: &PortBinding) -> String {
    format!("\"{}\"", p.host_port)
}

impl Inner {
    /// The sbx sandbox of a v1 sandbox, with its v1 status; `notFound` when there is no such v1 sandbox.
    fn v1_entry(&self, uid: &str) -> Result<(Status, Option<Arc<SbxEntry>>), Answer> {
        let status = self
            .v1
            .records
            .lock()
            .ok()
            .and_then(|r| r.get(uid).map(|r| r.status))
            .ok_or_else(|| not_found(uid))?;
        Ok((status, self.sbx_all().into_iter().find(|e| e.id == uid)))
    }

    /// `listPorts`.
    pub(super) fn v1_list_ports(&self, uid: &str) -> Answer {
        match self.v1_entry(uid) {
            Ok((_, e)) => {
                let list: Vec<Value> = e
                    .map(|e| e.port_list())
                    .unwrap_or_default()
                    .iter()
                    .map(|p| port_json(uid, p))
                    .collect();
                Answer::json(StatusCode::OK, json!({ "published": list }))
            }
            Err(a) => a,
        }
    }

    /// `createPort`: `{port: {number, protocol?}}` on a running sandbox; a published number is `alreadyExists`.
    pub(super) async fn v1_create_port(&self, uid: &str, b: Map<String, Value>) -> Answer {
        let (status, entry) = match self.v1_entry(uid) {
            Ok(x) => x,
            Err(a) => return a,
        };
        if let Some(k) = b.keys().find(|k| *k != "port") {
            return error("invalidArgument", format!("unknown field {k:?}"));
        }
        let Some(Value::Object(port)) = b.get("port") else {
            return error(
                "invalidArgument",
                "port must be an object {number, protocol?}",
            );
        };
        if let Some(k) = port.keys().find(|k| *k != "number" && *k != "protocol") {
            return error("invalidArgument", format!("unknown field port.{k}"));
        }
        let number = match port.get("number").and_then(Value::as_u64) {
            Some(n) if (1..=65535).contains(&n) => n as u16,
            _ => return error("invalidArgument", "port.number must be 1 to 65535"),
        };
        match port.get("protocol").and_then(Value::as_str) {
            None | Some("tcp" | "unspecified") => {}
            Some(p) => {
                return error(
                    "invalidArgument",
                    format!("port.protocol {p:?}: only tcp ports are published"),
                )
            }
        }
        let e = match (status, entry) {
            (Status::Running, Some(e)) => e,
            (s, _) => {
                return error(
                    "failedPrecondition",
                    format!(
                        "sandbox {uid} is {}: ports are published on running sandboxes",
                        s.as_str()
                    ),
                )
            }
        };
        if e.port_list().iter().any(|p| p.sandbox_port == number) {
            return error(
                "alreadyExists",
                format!("The sandbox already publishes port {number}."),
            );
        }
        let target: Arc<dyn ExecTarget> = Arc::new(e.container.clone());
        let fwd = match Forward::start(target, number, None, &Call::default()).await {
            Ok(f) => Arc::new(f),
            Err(err) => {
                let v = super::core_error(&err);
                let code = v["code"].as_str().unwrap_or("internal").to_string();
                return error(&code, v["message"].as_str().unwrap_or_default());
            }
        };
        let binding = PortBinding {
            host_ip: "127.0.0.1".into(),
            host_port: fwd.addr().port(),
            protocol: "tcp".into(),
            sandbox_port: number,
        };
        // Published meanwhile by another request: keep theirs.
        let raced = match e.ports.lock() {
            Ok(mut p) => {
                if p.iter().any(|(b, _)| b.sandbox_port == number) {
                    true
                } else {
                    p.push((binding.clone(), fwd.clone()));
                    false
                }
            }
            Err(_) => true,
        };
        if raced {
            fwd.close().await;
            return error(
                "alreadyExists",
                format!("The sandbox already publishes port {number}."),
            );
        }
        Answer::json(StatusCode::CREATED, port_json(uid, &binding)).with_etag(etag(&binding))
    }

    fn v1_find_port(&self, uid: &str, port: &str) -> Result<PortBinding, Answer> {
        let (_, e) = self.v1_entry(uid)?;
        let n: u16 = port
            .parse()
            .map_err(|_| error("notFound", format!("port {port} not found")))?;
        e.and_then(|e| e.port_list().into_iter().find(|p| p.sandbox_port == n))
            .ok_or_else(|| {
                error(
                    "notFound",
                    format!("port {port} not found on sandbox {uid}"),
                )
            })
    }

    /// `getPort`.
    pub(super) fn v1_get_port(&self, uid: &str, port: &str, headers: &HeaderMap) -> Answer {
        match self.v1_find_port(uid, port) {
            Ok(p) => {
                if if_none_match(headers, &etag(&p)) {
                    return Answer {
                        status: StatusCode::NOT_MODIFIED,
                        body: None,
                        etag: Some(etag(&p)),
                    };
                }
                Answer::json(StatusCode::OK, port_json(uid, &p)).with_etag(etag(&p))
            }
            Err(a) => a,
        }
    }

    /// `deletePort`: `If-Match` with the port's etag; the forward is closed.
    pub(super) async fn v1_delete_port(
        &self,
        uid: &str,
        port: &str,
        headers: &HeaderMap,
    ) -> Answer {
        let p = match self.v1_find_port(uid, port) {
            Ok(p) => p,
            Err(a) => return a,
        };
        if let Some(a) = check_if_match(headers, &etag(&p)) {
            return a;
        }
        let Ok((_, Some(e))) = self.v1_entry(uid) else {
            return not_found(uid);
        };
        let gone: Vec<Arc<Forward>> = match e.ports.lock() {
            Ok(mut list) => {
                let (out, keep): (Vec<_>, Vec<_>) = list.drain(..).partition(|(b, _)| *b == p);
                *list = keep;
                out.into_iter().map(|(_, f)| f).collect()
            }
            Err(_) => Vec::new(),
        };
        for f in gone {
            f.close().await;
        }
        Answer {
            status: StatusCode::NO_CONTENT,
            body: None,
            etag: None,
        }
    }
}
