//! Snapshots of v1 sandboxes: `createSnapshot` (then read until `ready`: a 202 is progress, not a result),
//! `listSnapshots` (pages walked), `restoreSnapshot` (a new sandbox, waited until it runs; one that fails is
//! deleted) and `deleteSnapshot` (with the snapshot's etag as `If-Match`, one re-read on 412).

use super::super::backend::{SandboxSummary, SnapshotSpec, SnapshotSummary};
use super::super::error::{Error, ErrorCode, Result};
use super::backend::{check_name, summary, V1Backend};
use super::client::{code_for, enc, Budget, Client, Ctx};
use super::model::{Sandbox, Snapshot};
use serde_json::{json, Map, Value};
use std::time::Duration;

impl Ctx {
    /// About the snapshot `id`.
    pub fn snapshot(what: impl Into<String>, id: &str) -> Ctx {
        Ctx {
            what: what.into(),
            not_found: ErrorCode::SnapshotNotFound,
            conflict: ErrorCode::SandboxConflict,
            subject: Some(("snapshot", id.to_string())),
            files: false,
        }
    }
}

/// The error for a snapshot id that names nothing.
pub(super) fn no_snapshot(id: &str) -> Error {
    Error::new(
        ErrorCode::SnapshotNotFound,
        format!("no v1 snapshot with id {id:?}"),
    )
    .with("snapshot", id.to_string())
}

/// The error for a snapshot whose status is `failed`: the failure's code, message and v1 code.
fn snapshot_failed(s: &Snapshot) -> Error {
    let (code, said) = match &s.failure {
        Some(f) => (code_for(&f.code, 0), format!(": {}", f.message)),
        None => (ErrorCode::Emulator, String::new()),
    };
    let code = match code {
        ErrorCode::SandboxdProtocol | ErrorCode::SandboxNotFound => ErrorCode::Emulator,
        c => c,
    };
    let mut e = Error::new(code, format!("v1 snapshot {:?} failed{said}", s.uid))
        .with("snapshot", s.uid.clone())
        .with("status", "failed");
    if let Some(f) = &s.failure {
        e = e.with("v1Code", f.code.clone());
    }
    e
}

/// What the SDK reports of a v1 snapshot.
pub fn snapshot_summary(s: &Snapshot) -> SnapshotSummary {
    SnapshotSummary {
        id: s.uid.clone(),
        name: s.display_name.clone().unwrap_or_default(),
        description: s.description.clone().unwrap_or_default(),
        sandbox_id: s.sandbox_uid.clone().unwrap_or_default(),
        status: s.status.clone(),
        capture_mode: match s.capture_mode.as_deref() {
            None | Some("unspecified") => "disk".into(),
            Some(m) => m.to_string(),
        },
        size_bytes: s.size(),
        created_at: s.created_at.clone(),
    }
}

impl Client {
    /// The snapshot `id`, or `None` when it is gone.
    pub async fn get_snapshot(&self, id: &str, b: &Budget) -> Result<Option<Snapshot>> {
        let ctx = Ctx::snapshot(format!("reading v1 snapshot {id:?}"), id);
        self.get_opt(&format!("/v1/snapshots/{}", enc(id)), b, &ctx)
            .await
    }

    /// Capture the running sandbox `s` (SDK name `display`); resolves once the snapshot is `ready`.
    pub async fn create_snapshot(
        &self,
        s: &Sandbox,
        display: &str,
        req: Value,
        b: &Budget,
    ) -> Result<Snapshot> {
        let ctx = Ctx::sandbox(format!("snapshotting v1 sandbox {display:?}"), display);
        let path = format!("/v1/sandboxes/{}/snapshots", enc(&s.uid));
        let res = self.post_idempotent(&path, req, b, &ctx).await?;
        let mut snap: Snapshot = self.json(&res, &[200, 201, 202], &ctx)?;
        let mut pause = Duration::from_millis(50);
        while snap.status == "creating" {
            b.sleep(
                &format!("waiting for v1 snapshot {:?} to be ready", snap.uid),
                pause,
            )
            .await?;
            pause = (pause * 2).min(Duration::from_secs(1));
            snap = self
                .get_snapshot(&snap.uid, b)
                .await?
                .ok_or_else(|| no_snapshot(&snap.uid))?;
        }
        match snap.status.as_str() {
            "ready" => Ok(snap),
            "failed" => Err(self.scrub(snapshot_failed(&snap))),
            other => Err(Error::protocol(
                format!("v1 snapshot {:?} settled as {other:?}, not ready", snap.uid),
                Some(res.status),
                &res.body,
            )
            .with("snapshot", snap.uid.clone())),
        }
    }

    /// Every snapshot (pages walked).
    pub async fn list_snapshots(&self, b: &Budget) -> Result<Vec<Snapshot>> {
        let ctx = Ctx::snapshot("listing v1 snapshots", "");
        let ctx = Ctx {
            subject: None,
            ..ctx
        };
        self.list_all("/v1/snapshots", "snapshots", b, &ctx)
            .await?
            .into_iter()
            .map(|v| {
                serde_json::from_value(v.clone()).map_err(|e| {
                    Error::protocol(
                        format!("listing v1 snapshots: an entry is not a Snapshot: {e}"),
                        Some(200),
                        v.to_string().as_bytes(),
                    )
                })
            })
            .collect()
    }

    /// A new sandbox `display` from the snapshot `id`, once it runs.
    pub async fn restore_snapshot(&self, id: &str, display: &str, b: &Budget) -> Result<Sandbox> {
        let ctx = Ctx::snapshot(
            format!("restoring v1 snapshot {id:?} as sandbox {display:?}"),
            id,
        );
        let path = format!("/v1/snapshots/{}/restore", enc(id));
        let res = self
            .post_idempotent(&path, json!({ "displayName": display }), b, &ctx)
            .await?;
        let s: Sandbox = self.json(&res, &[200, 201, 202], &ctx)?;
        self.settle_new(s, display, b).await
    }

    /// Delete the snapshot `id` with its etag as `If-Match` (412: read again once and retry); `false` when it
    /// was gone already.
    pub async fn delete_snapshot(&self, id: &str, b: &Budget) -> Result<bool> {
        let ctx = Ctx::snapshot(format!("deleting v1 snapshot {id:?}"), id);
        self.delete_with_etag(&format!("/v1/snapshots/{}", enc(id)), b, &ctx)
            .await
    }
}

/// A snapshot name the contract accepts (`displayName`: not empty, no `/`, not `.` or `..`).
fn check_snapshot_name(name: &str) -> Result<()> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(Error::invalid(format!(
            "invalid snapshot name {name:?}: it must be non-empty, without '/', and not '.' or '..'"
        ))
        .with("argument", "name"));
    }
    Ok(())
}

impl V1Backend {
    /// `snapshot()` of the sandbox `name`.
    pub(super) async fn do_snapshot(
        &self,
        name: &str,
        spec: &SnapshotSpec,
        b: &Budget,
    ) -> Result<SnapshotSummary> {
        let mode = match spec.capture_mode.as_deref() {
            None | Some("disk") => "disk",
            Some("all") => "all",
            Some(other) => {
                return Err(Error::invalid(format!(
                    "captureMode must be 'disk' or 'all', got {}",
                    crate::core::validate::shown(other)
                ))
                .with("argument", "captureMode"))
            }
        };
        let display = match &spec.name {
            Some(n) => n.clone(),
            None => format!(
                "{name}-{}",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_millis()
            ),
        };
        check_snapshot_name(&display)?;
        let s = self.require(name, b).await?;
        if s.core.status != "running" {
            return Err(Error::new(
                ErrorCode::SandboxStopped,
                format!(
                    "v1 sandbox {name:?} is {}: only a running sandbox can be snapshotted",
                    s.core.status
                ),
            )
            .with("sandbox", name.to_string())
            .with("status", s.core.status.clone()));
        }
        let mut req = Map::new();
        req.insert("displayName".into(), json!(display));
        req.insert("captureMode".into(), json!(mode));
        if let Some(d) = &spec.description {
            req.insert("description".into(), json!(d));
        }
        let snap = self
            .client()
            .create_snapshot(&s, name, Value::Object(req), b)
            .await?;
        Ok(snapshot_summary(&snap))
    }

    /// `restore()`: a new sandbox `name` from the snapshot `id`.
    pub(super) async fn do_restore(
        &self,
        id: &str,
        name: &str,
        b: &Budget,
    ) -> Result<SandboxSummary> {
        check_name(name)?;
        if id.is_empty() {
            return Err(Error::invalid("the snapshot id is empty").with("argument", "snapshot"));
        }
        if self.client().find(name, b).await?.is_some() {
            return Err(Error::new(
                ErrorCode::SandboxConflict,
                format!("a v1 sandbox named {name:?} exists already"),
            )
            .with("sandbox", name.to_string()));
        }
        let s = self.client().restore_snapshot(id, name, b).await?;
        Ok(summary(&s))
    }
}
