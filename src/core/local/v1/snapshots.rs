//! v1 snapshots over image commits: `createSnapshot` commits a running sandbox's container in its engine
//! (disk only: `captureMode` `disk`/`unspecified`; `all` needs memory capture and is `unimplemented`) as
//! `sandboxd-snapshot/<uid>:latest`, copies it to the template source engine (where a sandbox's image is taken
//! from, so it outlives the sandbox's own engine), then it is `ready` (or `failed` with `failure`).
//! `restoreSnapshot` creates a new sandbox from that image with the source's agent, environment and labels (the
//! answer of `createSandbox`); `deleteSnapshot` removes the image. Snapshots live as long as LocalSandboxd.

use super::{
    check_if_match, core_error, error, if_none_match, Answer, Status, DEFAULT_PAGE, MAX_PAGE,
};
use crate::core::call::Call;
use crate::core::engine::Engine;
use crate::core::images;
use crate::core::local::Inner;
use hyper::{HeaderMap, StatusCode};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Repository of snapshot images.
const SNAPSHOT_REPO: &str = "sandboxd-snapshot";

/// One snapshot.
pub(super) struct Snapshot {
    uid: String,
    display_name: String,
    description: String,
    sandbox_uid: String,
    seq: u64,
    created_at: String,
    status: &'static str,
    etag: u64,
    capture_mode: String,
    size: Option<i64>,
    failure: Option<Value>,
    /// What a restore makes the new sandbox with.
    agent: String,
    environment: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
}

impl Snapshot {
    fn image(&self) -> String {
        format!("{SNAPSHOT_REPO}/{}:latest", self.uid)
    }

    fn etag(&self) -> String {
        format!("\"{}\"", self.etag)
    }

    fn json(&self) -> Value {
        let mut v = json!({
            "uid": self.uid,
            "name": format!("snapshots/{}", self.uid),
            "displayName": self.display_name,
            "sandbox": format!("sandboxes/{}", self.sandbox_uid),
            "sandboxUid": self.sandbox_uid,
            "status": self.status,
            "createdAt": self.created_at,
            "captureMode": self.capture_mode,
            "etag": self.etag(),
        });
        if !self.description.is_empty() {
            v["description"] = json!(self.description);
        }
        if let Some(s) = self.size {
            v["totalSizeBytes"] = json!(s.to_string());
        }
        if let Some(f) = &self.failure {
            v["failure"] = f.clone();
        }
        v
    }

    /// `SnapshotSummary`.
    fn summary(&self) -> Value {
        let mut v = self.json();
        if let Some(m) = v.as_object_mut() {
            for k in ["description", "failure", "etag"] {
                m.remove(k);
            }
        }
        v
    }
}

impl Inner {
    /// Remove every snapshot's image (LocalSandboxd is stopping: snapshots live as long as it does).
    pub(in crate::core::local) async fn v1_remove_snapshots(&self) {
        let images: Vec<String> = match self.v1.snapshots.lock() {
            Ok(mut s) => std::mem::take(&mut *s)
                .values()
                .map(Snapshot::image)
                .collect(),
            Err(_) => return,
        };
        if images.is_empty() {
            return;
        }
        let call = Call::new(Some(std::time::Duration::from_secs(30)), Default::default());
        if let Ok(source) = Engine::connect(&self.template_source, &call).await {
            for image in images {
                let _ = source
                    .docker()
                    .remove_image(
                        &image,
                        Some(bollard::query_parameters::RemoveImageOptions {
                            force: true,
                            ..Default::default()
                        }),
                        None,
                    )
                    .await;
            }
        }
    }

    /// `createSnapshot`: 202 `creating`, the commit and copy in the background.
    pub(super) fn v1_create_snapshot(self: &Arc<Self>, uid: &str, b: Map<String, Value>) -> Answer {
        if let Some(k) = b
            .keys()
            .find(|k| !["displayName", "description", "captureMode"].contains(&k.as_str()))
        {
            return error("invalidArgument", format!("unknown field {k:?}"));
        }
        let display = match b.get("displayName").and_then(Value::as_str) {
            Some(d) if !d.is_empty() && !d.contains('/') && d != "." && d != ".." => d.to_string(),
            _ => {
                return error(
                    "invalidArgument",
                    "displayName is required: a name without '/' (not . or ..)",
                )
            }
        };
        let description = match b.get("description") {
            None => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(_) => return error("invalidArgument", "description must be a string"),
        };
        let mode = match b.get("captureMode").and_then(Value::as_str) {
            None | Some("unspecified" | "disk") => "disk".to_string(),
            Some("all") => {
                return error(
                    "unimplemented",
                    "LocalSandboxd captures disk only (captureMode all needs memory capture)",
                )
            }
            Some(m) => {
                return error(
                    "invalidArgument",
                    format!("captureMode {m:?} is not a capture mode"),
                )
            }
        };
        let (agent, environment, labels) = {
            let Ok(recs) = self.v1.records.lock() else {
                return error("internal", "state lock poisoned");
            };
            let Some(r) = recs.get(uid) else {
                return super::not_found(uid);
            };
            if r.status != Status::Running {
                return error(
                    "failedPrecondition",
                    format!(
                        "sandbox {uid} is {}: only a running sandbox is captured",
                        r.status.as_str()
                    ),
                );
            }
            (r.agent.clone(), r.environment.clone(), r.labels.clone())
        };
        let Some(entry) = self.sbx_all().into_iter().find(|e| e.id == uid) else {
            return error(
                "failedPrecondition",
                format!("sandbox {uid} has no container"),
            );
        };
        let snap = Snapshot {
            uid: uuid::Uuid::new_v4().simple().to_string(),
            display_name: display,
            description,
            sandbox_uid: uid.to_string(),
            seq: self.v1.seq.fetch_add(1, Ordering::SeqCst),
            created_at: super::now_rfc3339(),
            status: "creating",
            etag: 1,
            capture_mode: mode,
            size: None,
            failure: None,
            agent,
            environment,
            labels,
        };
        let answer = Answer::json(StatusCode::ACCEPTED, snap.json()).with_etag(snap.etag());
        let id = snap.uid.clone();
        let image = snap.image();
        if let Ok(mut s) = self.v1.snapshots.lock() {
            s.insert(id.clone(), snap);
        }
        let me = self.clone();
        self.tasks.spawn(async move {
            let call = Call::new(None, me.shutdown.clone());
            let made = async {
                let engine = entry.container.engine.clone();
                engine
                    .docker()
                    .commit_container(
                        bollard::query_parameters::CommitContainerOptions {
                            container: Some(entry.container.id.clone()),
                            repo: Some(format!("{SNAPSHOT_REPO}/{id}")),
                            tag: Some("latest".into()),
                            comment: Some(format!("sandboxd snapshot of sandbox {}", entry.id)),
                            pause: true,
                            ..Default::default()
                        },
                        bollard::models::ContainerConfig::default(),
                    )
                    .await
                    .map_err(|e| {
                        engine.err(
                            e,
                            crate::core::engine::Subject::Container(&entry.container.id),
                        )
                    })?;
                let source = Engine::connect(&me.template_source, &call).await?;
                images::copy(engine, source.clone(), &image, None, &call).await?;
                Ok::<_, crate::core::error::Error>(
                    images::inspect(&source, &image, &call)
                        .await?
                        .map(|i| i.size),
                )
            };
            let r = made.await;
            if let Ok(mut s) = me.v1.snapshots.lock() {
                if let Some(snap) = s.get_mut(&id) {
                    match r {
                        Ok(size) => {
                            snap.status = "ready";
                            snap.size = size;
                        }
                        Err(e) => {
                            snap.status = "failed";
                            snap.failure = Some(core_error(&e));
                        }
                    }
                    snap.etag += 1;
                }
            }
        });
        answer
    }

    /// `getSnapshot`.
    pub(super) fn v1_get_snapshot(&self, id: &str, headers: &HeaderMap) -> Answer {
        let Ok(s) = self.v1.snapshots.lock() else {
            return error("internal", "state lock poisoned");
        };
        let Some(snap) = s.get(id) else {
            return error("notFound", format!("snapshot {id} not found"));
        };
        if if_none_match(headers, &snap.etag()) {
            return Answer {
                status: StatusCode::NOT_MODIFIED,
                body: None,
                etag: Some(snap.etag()),
            };
        }
        Answer::json(StatusCode::OK, snap.json()).with_etag(snap.etag())
    }

    /// `listSnapshots`: `sandbox` (`sandboxes/<uid>`), `filter` (`name`, `display_name`, `uid`, `status`),
    /// `orderBy` `created_at` (default) or `name`, `asc`/`desc`; pages by offset, the token bound to the query.
    pub(super) fn v1_list_snapshots(&self, q: &HashMap<String, String>) -> Answer {
        let page = match q.get("pageSize").map(|s| s.parse::<i64>()) {
            None | Some(Ok(0)) => DEFAULT_PAGE,
            Some(Ok(n)) if n > 0 => (n as usize).min(MAX_PAGE),
            _ => return error("invalidArgument", "pageSize must be a non-negative integer"),
        };
        let sandbox = q.get("sandbox").filter(|s| !s.is_empty()).cloned();
        let filter = q.get("filter").cloned().unwrap_or_default();
        let mut terms = Vec::new();
        for t in filter.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            match t.split_once('=') {
                Some((k @ ("name" | "display_name" | "displayName" | "uid" | "status"), v)) => {
                    terms.push((k.to_string(), v.to_string()))
                }
                _ => {
                    return error(
                        "invalidArgument",
                        format!("filter term {t:?}: use name, display_name, uid or status = value"),
                    )
                }
            }
        }
        let order = q.get("orderBy").cloned().unwrap_or_default();
        let mut w = order.split_whitespace();
        let (by_name, desc) = match (w.next(), w.next(), w.next()) {
            (None, _, _) => (false, false),
            (Some(f @ ("created_at" | "createdAt" | "name")), d, None)
                if d.is_none_or(|d| {
                    d.eq_ignore_ascii_case("asc") || d.eq_ignore_ascii_case("desc")
                }) =>
            {
                (
                    f == "name",
                    d.is_some_and(|d| d.eq_ignore_ascii_case("desc")),
                )
            }
            _ => {
                return error(
                    "invalidArgument",
                    format!("orderBy {order:?}: use created_at or name"),
                )
            }
        };
        let bound = format!("{sandbox:?}|{filter}|{order}");
        let offset = match q.get("pageToken").filter(|t| !t.is_empty()) {
            None => 0,
            Some(t) => {
                use base64::Engine as _;
                let o = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(t)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                    .filter(|v| v["q"].as_str() == Some(bound.as_str()))
                    .and_then(|v| v["o"].as_u64());
                match o {
                    Some(o) => o as usize,
                    None => {
                        return error(
                            "invalidArgument",
                            "pageToken is not one this list gave for this query",
                        )
                    }
                }
            }
        };
        let Ok(s) = self.v1.snapshots.lock() else {
            return error("internal", "state lock poisoned");
        };
        let mut rows: Vec<&Snapshot> = s
            .values()
            .filter(|x| {
                sandbox
                    .as_deref()
                    .is_none_or(|sb| sb == format!("sandboxes/{}", x.sandbox_uid))
            })
            .filter(|x| {
                terms.iter().all(|(k, v)| match k.as_str() {
                    "name" => *v == format!("snapshots/{}", x.uid) || *v == x.display_name,
                    "uid" => *v == x.uid,
                    "status" => v == x.status,
                    _ => *v == x.display_name,
                })
            })
            .collect();
        rows.sort_by_key(|x| {
            (
                if by_name {
                    x.display_name.clone()
                } else {
                    String::new()
                },
                x.seq,
            )
        });
        if desc {
            rows.reverse();
        }
        let total = rows.len();
        let list: Vec<Value> = rows
            .iter()
            .skip(offset)
            .take(page)
            .map(|x| x.summary())
            .collect();
        let mut body = json!({ "snapshots": list });
        if offset + page < total {
            use base64::Engine as _;
            body["nextPageToken"] = json!(base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(json!({"q": bound, "o": offset + page}).to_string()));
        }
        Answer::json(StatusCode::OK, body)
    }

    /// `deleteSnapshot`: `If-Match`; one still being captured is `failedPrecondition`; an absent one succeeds.
    pub(super) fn v1_delete_snapshot(self: &Arc<Self>, id: &str, headers: &HeaderMap) -> Answer {
        let Ok(mut s) = self.v1.snapshots.lock() else {
            return error("internal", "state lock poisoned");
        };
        let Some(snap) = s.get(id) else {
            return Answer {
                status: StatusCode::NO_CONTENT,
                body: None,
                etag: None,
            };
        };
        if let Some(a) = check_if_match(headers, &snap.etag()) {
            return a;
        }
        if snap.status == "creating" {
            return error(
                "failedPrecondition",
                format!("snapshot {id} is still being captured"),
            );
        }
        let image = snap.image();
        s.remove(id);
        drop(s);
        let me = self.clone();
        self.tasks.spawn(async move {
            let call = Call::default();
            if let Ok(source) = Engine::connect(&me.template_source, &call).await {
                let _ = source
                    .docker()
                    .remove_image(
                        &image,
                        Some(bollard::query_parameters::RemoveImageOptions {
                            force: true,
                            ..Default::default()
                        }),
                        None,
                    )
                    .await;
            }
        });
        Answer {
            status: StatusCode::NO_CONTENT,
            body: None,
            etag: None,
        }
    }

    /// `restoreSnapshot`: a new sandbox from a ready snapshot (`createSandbox`'s answer).
    pub(super) fn v1_restore_snapshot(self: &Arc<Self>, id: &str, b: Map<String, Value>) -> Answer {
        if let Some(k) = b.keys().find(|k| *k != "displayName") {
            return error("invalidArgument", format!("unknown field {k:?}"));
        }
        let create = {
            let Ok(s) = self.v1.snapshots.lock() else {
                return error("internal", "state lock poisoned");
            };
            let Some(snap) = s.get(id) else {
                return error("notFound", format!("snapshot {id} not found"));
            };
            if snap.status != "ready" {
                return error(
                    "failedPrecondition",
                    format!("snapshot {id} is {}", snap.status),
                );
            }
            let mut c = Map::new();
            c.insert("imageRef".into(), json!(snap.image()));
            c.insert("agent".into(), json!(snap.agent));
            c.insert("environment".into(), json!(snap.environment));
            c.insert("labels".into(), json!(snap.labels));
            match b.get("displayName") {
                Some(Value::String(d)) if !d.is_empty() => {
                    c.insert("displayName".into(), json!(d));
                }
                Some(Value::String(_)) | None => {
                    c.insert("displayNamePrefix".into(), json!("restored-"));
                }
                Some(_) => return error("invalidArgument", "displayName must be a string"),
            }
            c
        };
        self.v1_create(create)
    }
}
