//! The `v1` [`SandboxBackend`]: sandboxes of the Docker Sandboxes API v1 (Docker's cloud, or a local daemon's
//! Unix socket), reached through [`super::client::Client`].
//!
//! - SDK name ↔ v1 `displayName` (`[a-zA-Z0-9_-]{1,64}`); the sandbox id is its `uid`.
//! - Create: `imageRef` = the template, `agent` (default `shell`), `environment`, `labels`. CPUs and memory are
//!   `resources`. v1 has no host mounts: the `workspace` is created as an **empty directory at the same path in
//!   the sandbox** (nothing is copied from the host; use `writeFiles` to upload), and remembered in the label
//!   [`WORKSPACE_LABEL`] so `get`/`ensure` report and compare it. Additional workspaces are `ERR_UNSUPPORTED`.
//! - Exec: the one-shot `POST /v1/processes/exec` when the spec has no stdin, timeout, tty, output sink or
//!   interactivity; otherwise a durable process and its `interact` socket ([`super::interact`]). A one-shot exec
//!   cannot be killed: an abort returns at once and the command runs on in the sandbox.
//! - Files: `GET/PUT /v1/files/content`; an archive becomes `PUT /v1/files/directories` for its directories and
//!   one multipart `POST /v1/files/upload` for its files (symlinks and other entry types are `ERR_UNSUPPORTED`).
//!   `V1Target` is also the files API's [`FileOps`] (stat, list, mkdir, remove, move on the endpoint: no exec).
//! - Ports: `listPorts` / `createPort` (TCP, the service picks the host address) / `deletePort` with its etag.
//! - Secrets ([`super::secrets`]): stored at create and attached as `features.storedSecrets`; deleted with the
//!   sandbox.
//! - Snapshots ([`super::snapshots`]): `createSnapshot` until ready, `restoreSnapshot` as a new sandbox.
//! - Policy read-back: `getNetworkPolicies` per sandbox as [`PolicyRule`]s (the effective mode as a `*` rule);
//!   the log: `listPolicyLogEntries`.

use super::super::backend::{
    unsupported, ExecTarget, ProcessHandle, SandboxBackend, SandboxSpec, SandboxSummary,
    SnapshotSpec, SnapshotSummary,
};
use super::super::call::Call;
use super::super::error::{Error, ErrorCode, Result};
use super::super::exec::{Chunk, ExecOutput, ExecSpec, ExitStatus, Run};
use super::super::files::{FileKind, FileOps, NativeInfo, Removed};
use super::super::multipart;
use super::super::netpolicy::{PolicyLogEntry, PolicyRule, SecretPlaceholder, SecretSpec};
use super::super::sbx::{PortBinding, PortSpec};
use super::client::{
    api_error, enc, endless, Body, Budget, Client, Ctx, EndpointRef, DEFAULT_TIMEOUT,
    LIFECYCLE_TIMEOUT, MAX_PAGES,
};
use super::interact::{int64, V1Process};
use super::model::Sandbox;
use super::secrets::SECRETS_LABEL;
use super::transport::{tls_config, Base};
use super::V1Options;
use bytes::Bytes;
use futures::future::BoxFuture;
use hyper::Method;
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The default management base (Docker's cloud).
pub const DEFAULT_ENDPOINT: &str = "https://connect.docker.com/sandboxes";
/// The default Docker Hub (PAT exchange).
pub const DEFAULT_HUB: &str = "https://hub.docker.com";
/// The label that remembers the SDK workspace path of a v1 sandbox.
pub const WORKSPACE_LABEL: &str = "sandboxd-workspace";

/// Connect to a v1 service: nothing is sent until the first call (the PAT is exchanged then).
pub async fn connect(o: &V1Options, call: &Call) -> Result<Arc<dyn SandboxBackend>> {
    let _ = call;
    Ok(Arc::new(V1Backend::new(o)?))
}

/// The v1 backend.
#[derive(Debug, Clone)]
pub struct V1Backend {
    client: Arc<Client>,
}

impl V1Backend {
    /// A backend for `o` (checked, not yet contacted).
    pub fn new(o: &V1Options) -> Result<V1Backend> {
        let tls = tls_config(o.ca_pem.as_deref())?;
        let endpoint = o.endpoint.as_deref().unwrap_or(DEFAULT_ENDPOINT);
        let base = Base::parse(endpoint, &tls)?;
        let auth = match (&o.token, &o.identifier, &o.pat) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                return Err(Error::invalid(
                    "give either a token or an identifier and PAT, not both",
                )
                .with("argument", "token"))
            }
            (Some(t), None, None) if !t.is_empty() => {
                super::auth::Auth::Token(super::auth::Secret::new(t.clone()))
            }
            (None, Some(id), Some(pat)) if !id.is_empty() && !pat.is_empty() => {
                let hub = Base::parse(o.hub_url.as_deref().unwrap_or(DEFAULT_HUB), &tls)?;
                super::auth::Auth::Pat(super::auth::PatAuth::new(
                    id.clone(),
                    super::auth::Secret::new(pat.clone()),
                    hub,
                ))
            }
            (None, None, None) if base.is_unix() => super::auth::Auth::Local,
            (None, None, None) => {
                return Err(Error::new(
                    ErrorCode::Unauthenticated,
                    format!(
                        "the v1 service at {endpoint} needs credentials: a token, or an identifier (Docker ID) and a PAT"
                    ),
                ))
            }
            _ => {
                return Err(Error::invalid(
                    "an identifier needs a PAT and a PAT needs an identifier (both non-empty); a token must be non-empty",
                )
                .with("argument", "pat"))
            }
        };
        Ok(V1Backend {
            client: Arc::new(Client::new(base, auth, tls)),
        })
    }

    /// The client (tests and the lead's extra operations).
    pub fn client(&self) -> &Arc<Client> {
        &self.client
    }

    pub(super) async fn require(&self, name: &str, b: &Budget) -> Result<Sandbox> {
        self.client
            .find(name, b)
            .await?
            .ok_or_else(|| not_found(name))
    }

    /// The raw `GetNetworkPoliciesResponse` of sandbox `name` (effective and exact policy).
    pub async fn network_policies(&self, name: &str, call: &Call) -> Result<Value> {
        let b = Budget::of(call, DEFAULT_TIMEOUT);
        let s = self.require(name, &b).await?;
        let ctx = Ctx::sandbox(
            format!("reading the network policy of v1 sandbox {name:?}"),
            name,
        );
        self.client
            .get_json(
                &format!("/v1/sandboxes/{}/network-policies", enc(&s.uid)),
                &b,
                &ctx,
            )
            .await
    }

    async fn do_create(
        &self,
        spec: &SandboxSpec,
        secrets: &[SecretSpec],
        b: &Budget,
    ) -> Result<SandboxSummary> {
        let name = spec.name.clone().unwrap_or_default();
        check_name(&name)?;
        if !spec.additional_workspaces.is_empty() {
            return Err(unsupported("v1", "additional workspaces (no host mounts)"));
        }
        if self.client.find(&name, b).await?.is_some() {
            return Err(Error::new(
                ErrorCode::SandboxConflict,
                format!("a v1 sandbox named {name:?} exists already"),
            )
            .with("sandbox", name));
        }
        let mut labels = spec.labels.clone();
        if !spec.workspace.is_empty() {
            crate::core::container::validate_container_path(&spec.workspace)?;
            labels.insert(WORKSPACE_LABEL.into(), spec.workspace.clone());
        }
        let mut req = Map::new();
        req.insert("displayName".into(), json!(name));
        req.insert(
            "agent".into(),
            json!(if spec.agent.is_empty() {
                "shell"
            } else {
                &spec.agent
            }),
        );
        if let Some(t) = &spec.template {
            req.insert("imageRef".into(), json!(t));
        }
        if !spec.environment.is_empty() {
            req.insert("environment".into(), json!(spec.environment));
        }
        let mut resources = Map::new();
        if let Some(c) = spec.cpus {
            resources.insert("cpus".into(), json!(c));
        }
        if let Some(m) = &spec.memory {
            resources.insert("memoryMib".into(), json!(memory_mib(m)?));
        }
        if !resources.is_empty() {
            req.insert("resources".into(), Value::Object(resources));
        }
        let mut features = Map::new();
        if let Some(x) = &spec.expiry {
            features.insert(
                "timeouts".into(),
                json!({ "timeout": duration(x.after), "onTimeout": x.action }),
            );
        }
        let stored = self.client.create_secrets(&name, secrets, b).await?;
        if !stored.is_empty() {
            labels.insert(SECRETS_LABEL.into(), stored.join(","));
            let names: Vec<String> = stored.iter().map(|u| format!("secrets/{u}")).collect();
            features.insert("storedSecrets".into(), json!({ "secrets": names }));
        }
        if !features.is_empty() {
            req.insert("features".into(), Value::Object(features));
        }
        if !labels.is_empty() {
            req.insert("labels".into(), json!(labels));
        }
        let s = match self
            .client
            .create_sandbox(Value::Object(req), &name, b)
            .await
        {
            Ok(s) => s,
            Err(e) => {
                self.client.delete_secrets(&stored).await;
                return Err(e);
            }
        };
        if !spec.workspace.is_empty() {
            let ep = self.client.endpoint(&s)?;
            let target = V1Target::new(self.client.clone(), ep);
            target.mkdir(&spec.workspace, b).await?;
        }
        Ok(summary(&s))
    }
}

impl V1Backend {
    async fn list_ports(&self, s: &Sandbox, name: &str, b: &Budget) -> Result<Vec<Value>> {
        let ctx = Ctx::sandbox(format!("listing the ports of v1 sandbox {name:?}"), name);
        let v = self
            .client
            .get_json(&format!("/v1/sandboxes/{}/ports", enc(&s.uid)), b, &ctx)
            .await?;
        Ok(v["published"].as_array().cloned().unwrap_or_default())
    }

    /// The sandbox's published ports as bindings.
    async fn published(&self, s: &Sandbox, name: &str, b: &Budget) -> Result<Vec<PortBinding>> {
        Ok(self
            .list_ports(s, name, b)
            .await?
            .iter()
            .map(port_binding)
            .collect())
    }
}

/// A v1 `Port` as a binding: the host and port parsed from its `url` (`http://127.0.0.1:49152`, `tcp://h:p`).
pub fn port_binding(p: &Value) -> PortBinding {
    let url = p["url"].as_str().unwrap_or("");
    let rest = url.split_once("://").map(|x| x.1).unwrap_or(url);
    let authority = rest.split('/').next().unwrap_or("");
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h.trim_matches(['[', ']']), p.parse().unwrap_or(0)),
        None => (authority, 0),
    };
    PortBinding {
        host_ip: host.to_string(),
        host_port: port,
        protocol: match p["protocol"].as_str() {
            Some("unspecified") | None => "tcp".into(),
            Some(x) => x.to_string(),
        },
        sandbox_port: p["number"].as_u64().unwrap_or(0) as u16,
    }
}

fn not_found(name: &str) -> Error {
    Error::new(
        ErrorCode::SandboxNotFound,
        format!("no v1 sandbox named {name:?}"),
    )
    .with("sandbox", name.to_string())
}

/// A sandbox name every backend accepts: the sbx hostname rule (2–63 of `[A-Za-z0-9.-]`, starting and ending with
/// a letter or digit) within v1's displayName alphabet (`[a-zA-Z0-9_-]`): so no `.`.
pub(super) fn check_name(name: &str) -> Result<()> {
    crate::core::sbx::validate_sandbox_name(name)?;
    if name.contains('.') {
        return Err(Error::invalid(format!(
            "invalid sandbox name {name:?}: a v1 sandbox name may contain only letters, digits and '-'"
        ))
        .with("argument", "name"));
    }
    Ok(())
}

/// A protobuf JSON duration (`"90s"`, `"1.5s"`).
pub fn duration(d: Duration) -> String {
    match d.subsec_millis() {
        0 => format!("{}s", d.as_secs()),
        ms => format!(
            "{}.{}s",
            d.as_secs(),
            format!("{ms:03}").trim_end_matches('0')
        ),
    }
}

/// `"2g"`, `"1024m"`, `"512"` (MiB) → MiB.
fn memory_mib(m: &str) -> Result<u64> {
    let t = m.trim().to_ascii_lowercase();
    let (num, mult) = match t.chars().last() {
        Some('g') => (&t[..t.len() - 1], 1024),
        Some('m') => (&t[..t.len() - 1], 1),
        _ => (t.as_str(), 1),
    };
    num.parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .map(|n| n * mult)
        .ok_or_else(|| {
            Error::invalid(format!(
                "memory {m:?} is not a size like \"2g\" or \"1024m\""
            ))
            .with("argument", "memory")
        })
}

/// What the SDK reports of a v1 sandbox.
pub fn summary(s: &Sandbox) -> SandboxSummary {
    let mut labels = s.core.labels.clone();
    let workspace = labels.remove(WORKSPACE_LABEL).unwrap_or_default();
    labels.remove(SECRETS_LABEL);
    SandboxSummary {
        name: s.display_name.clone().unwrap_or_else(|| s.uid.clone()),
        id: s.uid.clone(),
        status: s.core.status.clone(),
        agent: s.core.agent.clone().unwrap_or_default(),
        workspace,
        template: s.core.image_ref.clone(),
        labels,
        expires_at: s
            .extra
            .get("effectiveFeatures")
            .and_then(|f| f["timeouts"]["expiresAt"].as_str())
            .map(str::to_string),
    }
}

impl SandboxBackend for V1Backend {
    fn kind(&self) -> &'static str {
        "v1"
    }

    fn list<'a>(&'a self, opts: &'a Call) -> BoxFuture<'a, Result<Vec<SandboxSummary>>> {
        Box::pin(async move {
            let b = Budget::of(opts, DEFAULT_TIMEOUT);
            let all = self.client.list_sandboxes(None, &b).await?;
            Ok(all.iter().map(summary).collect())
        })
    }

    fn get<'a>(
        &'a self,
        name: &'a str,
        opts: &'a Call,
    ) -> BoxFuture<'a, Result<Option<SandboxSummary>>> {
        Box::pin(async move {
            let b = Budget::of(opts, DEFAULT_TIMEOUT);
            Ok(self.client.find(name, &b).await?.as_ref().map(summary))
        })
    }

    fn create<'a>(
        &'a self,
        spec: &'a SandboxSpec,
        opts: &'a Call,
    ) -> BoxFuture<'a, Result<SandboxSummary>> {
        Box::pin(async move {
            let b = Budget::of(opts, LIFECYCLE_TIMEOUT);
            self.do_create(spec, &[], &b).await
        })
    }

    fn ensure<'a>(
        &'a self,
        spec: &'a SandboxSpec,
        opts: &'a Call,
    ) -> BoxFuture<'a, Result<SandboxSummary>> {
        Box::pin(async move {
            let b = Budget::of(opts, LIFECYCLE_TIMEOUT);
            let name = spec.name.clone().unwrap_or_default();
            check_name(&name)?;
            let mut pause = Duration::from_millis(50);
            loop {
                let s = match self.client.find(&name, &b).await? {
                    None => match self.do_create(spec, &[], &b).await {
                        // another caller made it between the look and the create: look again
                        Err(e) if e.code == ErrorCode::SandboxConflict => {
                            b.sleep(
                                &format!("waiting for a concurrent create of v1 sandbox {name:?}"),
                                pause,
                            )
                            .await?;
                            pause = (pause * 2).min(Duration::from_secs(1));
                            continue;
                        }
                        r => return r,
                    },
                    Some(s) => s,
                };
                let have = summary(&s);
                let agent = if spec.agent.is_empty() {
                    "shell"
                } else {
                    &spec.agent
                };
                let mut differs = Vec::new();
                if have.workspace != spec.workspace {
                    differs.push("workspace");
                }
                if have.agent != agent {
                    differs.push("agent");
                }
                if spec.template.is_some() && have.template != spec.template {
                    differs.push("template");
                }
                if !differs.is_empty() {
                    return Err(Error::new(
                        ErrorCode::SandboxConflict,
                        format!(
                            "v1 sandbox {name:?} exists with a different {}",
                            differs.join(", ")
                        ),
                    )
                    .with("sandbox", name));
                }
                match s.core.status.as_str() {
                    "stopped" => {
                        self.client.lifecycle(&s, "start", &b).await?;
                        let s = self.require(&name, &b).await?;
                        return Ok(summary(&s));
                    }
                    // made by a concurrent create: wait until it runs (or is gone: look again)
                    "creating" | "starting" => {
                        match self
                            .client
                            .wait_for(&s.uid, &name, &["running"], &b)
                            .await?
                        {
                            Some(s) => return Ok(summary(&s)),
                            None => continue,
                        }
                    }
                    _ => return Ok(have),
                }
            }
        })
    }

    fn start<'a>(&'a self, name: &'a str, opts: &'a Call) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let b = Budget::of(opts, LIFECYCLE_TIMEOUT);
            let s = self.require(name, &b).await?;
            if s.core.status == "running" {
                return Ok(());
            }
            self.client.lifecycle(&s, "start", &b).await
        })
    }

    fn stop<'a>(&'a self, name: &'a str, opts: &'a Call) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let b = Budget::of(opts, LIFECYCLE_TIMEOUT);
            let s = self.require(name, &b).await?;
            if s.core.status == "stopped" {
                return Ok(());
            }
            self.client.lifecycle(&s, "stop", &b).await
        })
    }

    fn remove<'a>(
        &'a self,
        name: &'a str,
        force: bool,
        opts: &'a Call,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let b = Budget::of(opts, LIFECYCLE_TIMEOUT);
            match self.client.find(name, &b).await? {
                None if force => Ok(()),
                None => Err(not_found(name)),
                Some(s) => {
                    self.client.lifecycle(&s, "delete", &b).await?;
                    // the stored secrets the SDK made for it go with it, unless a sandbox restored from one of
                    // its snapshots still uses them (the last one removed deletes them)
                    if let Some(ids) = s.core.labels.get(SECRETS_LABEL) {
                        let shared = match self.client.list_sandboxes(None, &b).await {
                            Ok(all) => all.iter().any(|o| {
                                o.uid != s.uid && o.core.labels.get(SECRETS_LABEL) == Some(ids)
                            }),
                            Err(_) => true,
                        };
                        if !shared {
                            let ids: Vec<String> = ids.split(',').map(str::to_string).collect();
                            self.client.delete_secrets(&ids).await;
                        }
                    }
                    Ok(())
                }
            }
        })
    }

    fn target<'a>(
        &'a self,
        name: &'a str,
        opts: &'a Call,
    ) -> BoxFuture<'a, Result<Arc<dyn ExecTarget>>> {
        Box::pin(async move {
            let b = Budget::of(opts, DEFAULT_TIMEOUT);
            let s = self.require(name, &b).await?;
            if s.core.status != "running" {
                return Err(Error::new(
                    ErrorCode::SandboxStopped,
                    format!("v1 sandbox {name:?} is {}", s.core.status),
                )
                .with("sandbox", name.to_string())
                .with("status", s.core.status.clone()));
            }
            let ep = self.client.endpoint(&s)?;
            Ok(Arc::new(V1Target::new(self.client.clone(), ep)) as Arc<dyn ExecTarget>)
        })
    }

    fn socket(&self) -> String {
        self.client.base.shown().to_string()
    }

    /// `listPorts`: each published port with the host address parsed from its `url`.
    fn ports<'a>(
        &'a self,
        name: &'a str,
        opts: &'a Call,
    ) -> BoxFuture<'a, Result<Vec<PortBinding>>> {
        Box::pin(async move {
            let b = Budget::of(opts, DEFAULT_TIMEOUT);
            let s = self.require(name, &b).await?;
            self.published(&s, name, &b).await
        })
    }

    /// `createPort` for each spec (TCP; the service picks the host address: asking for one is `ERR_UNSUPPORTED`).
    fn publish<'a>(
        &'a self,
        name: &'a str,
        ports: &'a [PortSpec],
        opts: &'a Call,
    ) -> BoxFuture<'a, Result<Vec<PortBinding>>> {
        Box::pin(async move {
            let b = Budget::of(opts, DEFAULT_TIMEOUT);
            for p in ports {
                if p.host_ip.is_some() || p.host_port.is_some() {
                    return Err(unsupported(
                        "v1",
                        "choice of the host address of a published port",
                    ));
                }
                if p.protocol.as_deref().is_some_and(|x| x != "tcp") {
                    return Err(unsupported("v1", "published ports other than TCP"));
                }
            }
            let s = self.require(name, &b).await?;
            let ctx = Ctx::sandbox(format!("publishing a port of v1 sandbox {name:?}"), name);
            for p in ports {
                let res = self
                    .client
                    .exchange(
                        &self.client.base,
                        super::client::Cred::Management,
                        Method::POST,
                        &format!("/v1/sandboxes/{}/ports", enc(&s.uid)),
                        &Body::Json(json!({"port": {"number": p.sandbox_port, "protocol": "tcp"}})),
                        &[("idempotency-key", uuid::Uuid::new_v4().to_string())],
                        &b,
                        &ctx,
                    )
                    .await?;
                self.client.json::<Value>(&res, &[200, 201], &ctx)?;
            }
            self.published(&s, name, &b).await
        })
    }

    /// `deletePort` (with its etag) for every published port matching one of `ports`.
    fn unpublish<'a>(
        &'a self,
        name: &'a str,
        ports: &'a [PortSpec],
        opts: &'a Call,
    ) -> BoxFuture<'a, Result<String>> {
        Box::pin(async move {
            let b = Budget::of(opts, DEFAULT_TIMEOUT);
            let s = self.require(name, &b).await?;
            let ctx = Ctx::sandbox(format!("unpublishing a port of v1 sandbox {name:?}"), name);
            let mut n = 0;
            for p in self.list_ports(&s, name, &b).await? {
                let have = port_binding(&p);
                let hit = ports.iter().any(|want| {
                    want.sandbox_port == have.sandbox_port
                        && want.host_port.is_none_or(|h| h == have.host_port)
                        && want.host_ip.as_ref().is_none_or(|h| *h == have.host_ip)
                });
                if !hit {
                    continue;
                }
                let id = p["name"]
                    .as_str()
                    .map(|x| super::client::id_of(x).to_string())
                    .unwrap_or_else(|| have.sandbox_port.to_string());
                let res = self
                    .client
                    .exchange(
                        &self.client.base,
                        super::client::Cred::Management,
                        Method::DELETE,
                        &format!("/v1/sandboxes/{}/ports/{}", enc(&s.uid), enc(&id)),
                        &Body::Empty,
                        &[("if-match", p["etag"].as_str().unwrap_or("*").to_string())],
                        &b,
                        &ctx,
                    )
                    .await?;
                if !(200..300).contains(&res.status) && res.status != 404 {
                    return Err(self.client.error(&res, &ctx));
                }
                n += 1;
            }
            Ok(format!("unpublished {n} port key(s)"))
        })
    }

    /// `renewSandboxTimeout`: the deadline re-armed from the service's acceptance (a cloud operation: a local
    /// daemon answers `unimplemented`).
    fn renew_expiry<'a>(
        &'a self,
        name: &'a str,
        after: Duration,
        opts: &'a Call,
    ) -> BoxFuture<'a, Result<SandboxSummary>> {
        Box::pin(async move {
            let b = Budget::of(opts, DEFAULT_TIMEOUT);
            let s = self.require(name, &b).await?;
            let ctx = Ctx::sandbox(
                format!("renewing the deadline of v1 sandbox {name:?}"),
                name,
            );
            let res = self
                .client
                .exchange(
                    &self.client.base,
                    super::client::Cred::Management,
                    Method::POST,
                    &format!("/v1/sandboxes/{}/renew-timeout", enc(&s.uid)),
                    &Body::Json(json!({ "timeout": duration(after) })),
                    &[],
                    &b,
                    &ctx,
                )
                .await?;
            let s: Sandbox = self.client.json(&res, &[200], &ctx)?;
            Ok(summary(&s))
        })
    }

    fn create_with_secrets<'a>(
        &'a self,
        spec: &'a SandboxSpec,
        secrets: &'a [SecretSpec],
        opts: &'a Call,
    ) -> BoxFuture<'a, Result<SandboxSummary>> {
        Box::pin(async move {
            let b = Budget::of(opts, LIFECYCLE_TIMEOUT);
            self.do_create(spec, secrets, &b).await
        })
    }

    /// v1 attaches stored secrets when a sandbox is created, and has no verb that changes them afterwards.
    fn set_secrets<'a>(
        &'a self,
        name: &'a str,
        secrets: &'a [SecretSpec],
        opts: &'a Call,
    ) -> BoxFuture<'a, Result<Vec<SecretPlaceholder>>> {
        let _ = (name, secrets, opts);
        Box::pin(async move {
            Err(unsupported(
                "v1",
                "secrets changed after create (pass them to create(): v1 attaches stored secrets then)",
            ))
        })
    }

    fn snapshot<'a>(
        &'a self,
        name: &'a str,
        spec: &'a SnapshotSpec,
        opts: &'a Call,
    ) -> BoxFuture<'a, Result<SnapshotSummary>> {
        Box::pin(async move {
            let b = Budget::of(opts, LIFECYCLE_TIMEOUT);
            self.do_snapshot(name, spec, &b).await
        })
    }

    fn snapshots<'a>(&'a self, opts: &'a Call) -> BoxFuture<'a, Result<Vec<SnapshotSummary>>> {
        Box::pin(async move {
            let b = Budget::of(opts, DEFAULT_TIMEOUT);
            let all = self.client.list_snapshots(&b).await?;
            Ok(all.iter().map(super::snapshots::snapshot_summary).collect())
        })
    }

    fn restore<'a>(
        &'a self,
        id: &'a str,
        name: &'a str,
        opts: &'a Call,
    ) -> BoxFuture<'a, Result<SandboxSummary>> {
        Box::pin(async move {
            let b = Budget::of(opts, LIFECYCLE_TIMEOUT);
            self.do_restore(id, name, &b).await
        })
    }

    fn remove_snapshot<'a>(
        &'a self,
        id: &'a str,
        force: bool,
        opts: &'a Call,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let b = Budget::of(opts, DEFAULT_TIMEOUT);
            match self.client.delete_snapshot(id, &b).await? {
                false if !force => Err(super::snapshots::no_snapshot(id)),
                _ => Ok(()),
            }
        })
    }

    fn policy_rules<'a>(&'a self, opts: &'a Call) -> BoxFuture<'a, Result<Vec<PolicyRule>>> {
        Box::pin(async move {
            let b = Budget::of(opts, DEFAULT_TIMEOUT);
            let mut out = Vec::new();
            for s in self.client.list_sandboxes(None, &b).await? {
                let name = s.display_name.clone().unwrap_or_else(|| s.uid.clone());
                let ctx = Ctx::sandbox(
                    format!("reading the network policy of v1 sandbox {name:?}"),
                    &name,
                );
                let v = self
                    .client
                    .get_json(
                        &format!("/v1/sandboxes/{}/network-policies", enc(&s.uid)),
                        &b,
                        &ctx,
                    )
                    .await?;
                out.extend(policy_rules_of(&name, &v));
            }
            Ok(out)
        })
    }

    fn policy_log<'a>(
        &'a self,
        sandbox: Option<&'a str>,
        opts: &'a Call,
    ) -> BoxFuture<'a, Result<Vec<PolicyLogEntry>>> {
        Box::pin(async move {
            let b = Budget::of(opts, DEFAULT_TIMEOUT);
            let (path, ctx) = match sandbox {
                Some(name) => {
                    let s = self.require(name, &b).await?;
                    (
                        format!("/v1/sandboxes/{}/policy-logs", enc(&s.uid)),
                        Ctx::sandbox(
                            format!("reading the policy log of v1 sandbox {name:?}"),
                            name,
                        ),
                    )
                }
                None => (
                    "/v1/policy-logs".to_string(),
                    Ctx {
                        what: "reading the v1 policy log".into(),
                        not_found: ErrorCode::Unsupported,
                        conflict: ErrorCode::SandboxdProtocol,
                        subject: None,
                        files: false,
                    },
                ),
            };
            let entries = self.client.list_all(&path, "entries", &b, &ctx).await?;
            let mut out: Vec<PolicyLogEntry> = entries.iter().map(policy_log_entry).collect();
            // rows name the sandbox by resource (`sandboxes/<uid>`): the SDK's name is the displayName
            let names: std::collections::HashMap<String, String> = match sandbox {
                Some(_) => Default::default(),
                None => self
                    .client
                    .list_sandboxes(None, &b)
                    .await?
                    .into_iter()
                    .filter_map(|s| Some((s.name.clone(), s.display_name.clone()?)))
                    .collect(),
            };
            for e in &mut out {
                e.sandbox = match (sandbox, e.sandbox.take()) {
                    (Some(name), _) => Some(name.to_string()),
                    (None, Some(res)) => Some(names.get(&res).cloned().unwrap_or(res)),
                    (None, None) => None,
                };
            }
            Ok(out)
        })
    }
}

/// A sandbox's `GetNetworkPoliciesResponse` as rules: the effective mode as `allow|deny *`, then each allowed and
/// denied network.
pub fn policy_rules_of(sandbox: &str, v: &Value) -> Vec<PolicyRule> {
    let eff = &v["effective"];
    let rule = |action: &str, resource: &str| PolicyRule {
        action: action.into(),
        resource: resource.into(),
        scope: format!("sandbox:{sandbox}"),
        sandbox: Some(sandbox.to_string()),
    };
    let mut out = Vec::new();
    match eff["mode"].as_str() {
        Some("allowAll") => out.push(rule("allow", "*")),
        Some("denyAll") => out.push(rule("deny", "*")),
        _ => {}
    }
    for (field, action) in [("allowNetworks", "allow"), ("denyNetworks", "deny")] {
        for r in eff[field].as_array().into_iter().flatten() {
            if let Some(n) = r["network"].as_str() {
                out.push(rule(action, n));
            }
        }
    }
    out
}

/// A v1 `PolicyLogEntry` as the SDK's.
pub fn policy_log_entry(v: &Value) -> PolicyLogEntry {
    let s = |k: &str| v[k].as_str().map(str::to_string);
    let ms = |k: &str| {
        v[k].as_str()
            .and_then(super::client::unix_seconds)
            .map(|t| (t * 1000.0) as u64)
    };
    PolicyLogEntry {
        host: s("resource").unwrap_or_default(),
        sandbox: s("sandbox").filter(|x| !x.is_empty()),
        allowed: v["decision"] == "allowed",
        proxy_type: s("proxyType").unwrap_or_default(),
        rule: s("rule").filter(|x| !x.is_empty()),
        reason: s("reason").filter(|x| !x.is_empty()),
        count: int64(&v["count"]).unwrap_or(0).max(0) as u64,
        first_seen: s("firstSeen").unwrap_or_default(),
        last_seen: s("lastSeen").unwrap_or_default(),
        first_seen_ms: ms("firstSeen"),
        last_seen_ms: ms("lastSeen"),
    }
}

/// A running v1 sandbox as a place to run commands and move files.
pub struct V1Target {
    client: Arc<Client>,
    ep: EndpointRef,
}

impl V1Target {
    /// The target served at `ep`.
    pub fn new(client: Arc<Client>, ep: EndpointRef) -> V1Target {
        V1Target { client, ep }
    }

    /// `PUT /v1/files/directories` with parents.
    pub async fn mkdir(&self, path: &str, b: &Budget) -> Result<()> {
        let ctx = Ctx::path(
            format!(
                "creating directory {path:?} in v1 sandbox {:?}",
                self.ep.display
            ),
            path,
        );
        let res = self
            .client
            .on_endpoint(
                &self.ep,
                &["sandboxesFilesWrite"],
                Method::PUT,
                "/v1/files/directories",
                &Body::Json(json!({"path": path, "mode": 0o755, "parents": true})),
                &[],
                b,
                &ctx,
            )
            .await?;
        match res.status {
            200..=299 => Ok(()),
            409 => Ok(()), // there already
            _ => Err(self.client.error(&res, &ctx)),
        }
    }

    /// Start a durable process for `spec`.
    async fn start_process(&self, spec: &ExecSpec, abort: CancellationToken) -> Result<V1Process> {
        if spec.cmd.first().is_none_or(|c| c.is_empty()) {
            return Err(Error::invalid("exec needs a non-empty command").with("argument", "cmd"));
        }
        let b = Budget::of(&Call::new(None, abort.clone()), DEFAULT_TIMEOUT);
        let mut req = Map::new();
        req.insert("cmd".into(), json!(spec.cmd));
        if !spec.env.is_empty() {
            let env: Map<String, Value> = spec
                .env
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect();
            req.insert("env".into(), Value::Object(env));
        }
        if let Some(c) = &spec.cwd {
            req.insert("workingDir".into(), json!(c));
        }
        if let Some(u) = &spec.user {
            req.insert("user".into(), json!(u));
        }
        if spec.tty {
            let mut pty = Map::new();
            if let Some((cols, rows)) = spec.tty_size {
                pty.insert("initialSize".into(), json!({"rows": rows, "cols": cols}));
            }
            req.insert("pty".into(), Value::Object(pty));
        }
        let ctx = Ctx {
            subject: Some(("sandbox", self.ep.display.clone())),
            ..Ctx::process(format!(
                "starting a process in v1 sandbox {:?}",
                self.ep.display
            ))
        };
        let key = uuid::Uuid::new_v4().to_string();
        let res = self
            .client
            .on_endpoint(
                &self.ep,
                &["sandboxesExec"],
                Method::POST,
                "/v1/processes",
                &Body::Json(Value::Object(req)),
                &[("idempotency-key", key)],
                &b,
                &ctx,
            )
            .await?;
        let p: Value = self.client.json(&res, &[200, 201], &ctx)?;
        let proc = V1Process::start(
            self.client.clone(),
            self.ep.clone(),
            &p,
            spec.tty,
            spec.timeout,
            abort,
        )
        .await?;
        if let Some(input) = &spec.stdin {
            if !input.is_empty() {
                proc.write(input).await?;
            }
            if !spec.interactive {
                proc.end().await?;
            }
        } else if !spec.interactive && !spec.tty {
            // Nothing to read: stdin at EOF at once, as a container exec without stdin. (On a PTY `closeStdin` is
            // a VEOF the program would read as input, so a tty keeps its stdin.) A socket that failed already
            // reports why through the output, which says more than this frame's failure would.
            let _ = proc.end().await;
        }
        Ok(proc)
    }

    /// One `GET /v1/files/download` of `paths`: their bytes in order. A path's own error part fails the call with
    /// that path's typed error; a `stream-error` part, a part out of order or a body without its closing delimiter
    /// (a connection cut short) is never taken for fewer files.
    async fn download(&self, paths: &[String], call: &Call) -> Result<Vec<Vec<u8>>> {
        let query: Vec<String> = paths.iter().map(|p| format!("paths={}", enc(p))).collect();
        let ctx = self.file_ctx("downloading", &paths[0]);
        let res = self
            .files_request(
                "sandboxesFilesRead",
                Method::GET,
                &format!("/v1/files/download?{}", query.join("&")),
                Body::Empty,
                call,
                &ctx,
            )
            .await?;
        if res.status != 200 {
            return Err(self.client.error(&res, &ctx));
        }
        // no excerpt of the body: it is the user's files
        let bad = |why: String| {
            Error::new(
                ErrorCode::SandboxdProtocol,
                format!("downloading from v1 sandbox {:?}: {why}", self.ep.display),
            )
        };
        let ctype = res
            .headers
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let boundary = multipart::boundary_of(ctype, "multipart/mixed")
            .ok_or_else(|| bad(format!("the answer is {ctype:?}, not multipart/mixed")))?;
        let mut parts = multipart::parse(&res.body, &boundary, "attachment")
            .map_err(bad)?
            .into_iter();
        let mut out = Vec::with_capacity(paths.len());
        for path in paths {
            let part = parts
                .next()
                .ok_or_else(|| bad(format!("no part for {path:?}")))?;
            match part.name.as_str() {
                // results come in request order (the contract's promise); the header's path is not compared, as
                // a service may report it canonicalised
                "metadata" => {
                    let header: Value = serde_json::from_slice(&part.data).unwrap_or_default();
                    if !header.is_object() {
                        return Err(bad(format!("{path:?}'s header is not a FileHeader")));
                    }
                    match parts.next() {
                        Some(c) if c.name == "content" => out.push(c.data.to_vec()),
                        _ => return Err(bad(format!("no content part after {path:?}'s header"))),
                    }
                }
                "error" => {
                    let e: Value = serde_json::from_slice(&part.data).unwrap_or_default();
                    let failure = serde_json::to_vec(&e["failure"]).unwrap_or_default();
                    return Err(self
                        .client
                        .scrub(api_error(0, &failure, &self.read_ctx(path))));
                }
                "stream-error" => {
                    let ctx = self.file_ctx("reading", path);
                    return Err(self.client.scrub(api_error(0, &part.data, &ctx)));
                }
                other => return Err(bad(format!("an unexpected {other:?} part for {path:?}"))),
            }
        }
        match parts.next() {
            Some(p) if p.name == "stream-error" => {
                Err(self.client.scrub(api_error(0, &p.data, &ctx)))
            }
            Some(p) => Err(bad(format!("a {:?} part after the last path", p.name))),
            None => Ok(out),
        }
    }

    /// The context of reading file `path`: a directory (or another non-file) there is the endpoint's
    /// failedPrecondition, `ERR_NOT_A_FILE`.
    fn read_ctx(&self, path: &str) -> Ctx {
        Ctx {
            conflict: ErrorCode::NotAFile,
            ..self.file_ctx("reading", path)
        }
    }

    fn file_ctx(&self, what: &str, path: &str) -> Ctx {
        Ctx::path(
            format!("{what} {path:?} in v1 sandbox {:?}", self.ep.display),
            path,
        )
    }

    /// `e`, unless the sandbox is no longer running: then `ERR_SANDBOX_STOPPED` (or `ERR_SANDBOX_NOT_FOUND`), which
    /// says why an endpoint call failed better than the endpoint's own refusal.
    async fn explain(&self, e: Error) -> Error {
        if matches!(
            e.code,
            ErrorCode::Aborted
                | ErrorCode::Timeout
                | ErrorCode::InvalidArgument
                | ErrorCode::Unauthenticated
        ) {
            return e;
        }
        let b = Budget::of(&Call::default(), Duration::from_secs(10));
        match self
            .client
            .get_sandbox(&self.ep.uid, &self.ep.display, &b)
            .await
        {
            Ok(Some(s)) if s.core.status != "running" => Error::new(
                ErrorCode::SandboxStopped,
                format!(
                    "v1 sandbox {:?} is {} ({})",
                    self.ep.display, s.core.status, e.message
                ),
            )
            .with("sandbox", self.ep.display.clone())
            .with("status", s.core.status),
            Ok(None) => not_found(&self.ep.display),
            _ => e,
        }
    }

    /// [`ExecTarget::exec`] before [`V1Target::explain`].
    async fn exec_inner(&self, spec: ExecSpec, cancel: CancellationToken) -> Result<ExecOutput> {
        let began = Instant::now();
        // Always a durable process: the one-shot `POST /v1/processes/exec` has no stdin, no timeout and no way to
        // stop its command, and an abort must kill the process tree (`Client::exec` is the one-shot form).
        let p = self.start_process(&spec, cancel).await?;
        collect(p, &spec, began).await
    }

    /// One files request on the endpoint.
    async fn files_request(
        &self,
        perm: &'static str,
        method: Method,
        path_and_query: &str,
        body: Body,
        call: &Call,
        ctx: &Ctx,
    ) -> Result<super::transport::Response> {
        let b = Budget::of(call, DEFAULT_TIMEOUT);
        self.client
            .on_endpoint(
                &self.ep,
                &[perm],
                method,
                path_and_query,
                &body,
                &[],
                &b,
                ctx,
            )
            .await
    }

    /// `GET /v1/files/stat`: what `path` leads to.
    async fn file_stat(&self, path: &str, call: &Call) -> Result<NativeInfo> {
        let ctx = self.file_ctx("looking at", path);
        let q = format!("/v1/files/stat?path={}", enc(path));
        let res = self
            .files_request(
                "sandboxesFilesRead",
                Method::GET,
                &q,
                Body::Empty,
                call,
                &ctx,
            )
            .await?;
        let v: Value = self.client.json(&res, &[200], &ctx)?;
        if !v["info"].is_object() {
            return Err(Error::protocol(
                format!("{}: the answer has no info", ctx.what),
                Some(res.status),
                &res.body,
            ));
        }
        Ok(native_info(&v["info"]))
    }

    /// `GET /v1/files`, every page: the entries of `dir` as `(path under dir, info)`.
    async fn file_list(&self, dir: &str, call: &Call) -> Result<Vec<(String, NativeInfo)>> {
        let ctx = self.file_ctx("listing", dir);
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut token = String::new();
        for _ in 0..MAX_PAGES {
            let mut q = format!("/v1/files?path={}", enc(dir));
            if !token.is_empty() {
                q += &format!("&pageToken={}", enc(&token));
            }
            let res = self
                .files_request(
                    "sandboxesFilesRead",
                    Method::GET,
                    &q,
                    Body::Empty,
                    call,
                    &ctx,
                )
                .await?;
            let v: Value = self.client.json(&res, &[200], &ctx)?;
            for e in v["entries"].as_array().into_iter().flatten() {
                // The entry's own name (its path's last segment), placed under the directory asked for.
                let p = e["path"].as_str().unwrap_or_default().trim_end_matches('/');
                let name = p.rsplit('/').next().unwrap_or_default();
                if name.is_empty() || name == "." || name == ".." {
                    return Err(Error::protocol(
                        format!("{}: an entry without a name: {e}", ctx.what),
                        Some(res.status),
                        &res.body,
                    ));
                }
                let path = if dir == "/" {
                    format!("/{name}")
                } else {
                    format!("{}/{name}", dir.trim_end_matches('/'))
                };
                out.push((path, native_info(e)));
            }
            let next = v["nextPageToken"].as_str().unwrap_or_default().to_string();
            if next.is_empty() {
                return Ok(out);
            }
            if !seen.insert(next.clone()) {
                return Err(endless(&ctx.what, "a page token came back twice"));
            }
            token = next;
        }
        Err(endless(&ctx.what, &format!("more than {MAX_PAGES} pages")))
    }

    /// `PUT /v1/files/directories` (mode 0755): an existing directory converges; another object there is
    /// `ERR_PATH_EXISTS`.
    async fn file_mkdir(&self, path: &str, parents: bool, call: &Call) -> Result<()> {
        let ctx = self.file_ctx("creating directory", path);
        let body = Body::Json(json!({"path": path, "mode": 0o755, "parents": parents}));
        let res = self
            .files_request(
                "sandboxesFilesWrite",
                Method::PUT,
                "/v1/files/directories",
                body,
                call,
                &ctx,
            )
            .await?;
        self.client.json::<Value>(&res, &[200], &ctx).map(|_| ())
    }

    /// `DELETE /v1/files`: an absent path succeeds; a recursive removal that stops partway says where.
    async fn file_remove(&self, path: &str, recursive: bool, call: &Call) -> Result<Removed> {
        let ctx = self.file_ctx("removing", path);
        let q = format!("/v1/files?path={}&recursive={recursive}", enc(path));
        let res = self
            .files_request(
                "sandboxesFilesWrite",
                Method::DELETE,
                &q,
                Body::Empty,
                call,
                &ctx,
            )
            .await?;
        let v: Value = self.client.json(&res, &[200], &ctx)?;
        let listed = v["completedPaths"].as_array().map_or(0, Vec::len) as u64;
        Ok(Removed {
            count: int64(&v["completedCount"]).map_or(listed, |n| n.max(0) as u64),
            failed_path: v["failedPath"]
                .as_str()
                .filter(|p| !p.is_empty())
                .map(str::to_string),
        })
    }

    /// `POST /v1/files/move`: the destination is exact. A directory there (or anything there when `from` is a
    /// directory) is `ERR_PATH_EXISTS` naming `to`; a move across file systems `ERR_UNSUPPORTED`.
    async fn file_move(&self, from: &str, to: &str, call: &Call) -> Result<()> {
        let ctx = self.file_ctx("moving", from);
        let body = Body::Json(json!({"from": from, "to": to}));
        let res = self
            .files_request(
                "sandboxesFilesWrite",
                Method::POST,
                "/v1/files/move",
                body,
                call,
                &ctx,
            )
            .await?;
        if res.status == 200 {
            return self.client.json::<Value>(&res, &[200], &ctx).map(|_| ());
        }
        let mut e = self.client.error(&res, &ctx);
        let said = String::from_utf8_lossy(&res.body).to_ascii_lowercase();
        if said.contains("move_destination_is_directory")
            || said.contains("move_destination_occupied")
        {
            e.code = ErrorCode::PathExists;
            e = e.with("path", to);
        } else if said.contains("move_crosses_filesystem") {
            e.code = ErrorCode::Unsupported;
            e = e.with("backend", "v1");
        }
        Err(e)
    }
}

/// A v1 `FileInfo` as a [`NativeInfo`]: its `type` (else `isDir`), `size` (an int64 as a number or a string),
/// `mode & 0o777`, and `linkTarget` for a link that did not resolve.
pub fn native_info(v: &Value) -> NativeInfo {
    let kind = match v["type"].as_str() {
        Some("regular") => FileKind::File,
        Some("directory") => FileKind::Directory,
        Some("symlink") => FileKind::Symlink,
        Some("other") => FileKind::Other,
        // `unspecified` (the contract says Stat and List always classify): what `isDir` says.
        _ if v["isDir"] == json!(true) => FileKind::Directory,
        _ => FileKind::File,
    };
    NativeInfo {
        kind,
        size: int64(&v["size"]).unwrap_or(0).max(0) as u64,
        mode: (v["mode"].as_u64().unwrap_or(0) as u32) & 0o777,
        link_target: (kind == FileKind::Symlink)
            .then(|| v["linkTarget"].as_str().unwrap_or_default().to_string()),
    }
}

impl FileOps for V1Target {
    fn stat<'a>(&'a self, path: &'a str, call: &'a Call) -> BoxFuture<'a, Result<NativeInfo>> {
        Box::pin(self.file_stat(path, call))
    }
    fn list<'a>(
        &'a self,
        dir: &'a str,
        call: &'a Call,
    ) -> BoxFuture<'a, Result<Vec<(String, NativeInfo)>>> {
        Box::pin(self.file_list(dir, call))
    }
    fn mkdir<'a>(
        &'a self,
        path: &'a str,
        parents: bool,
        call: &'a Call,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.file_mkdir(path, parents, call))
    }
    fn remove<'a>(
        &'a self,
        path: &'a str,
        recursive: bool,
        call: &'a Call,
    ) -> BoxFuture<'a, Result<Removed>> {
        Box::pin(self.file_remove(path, recursive, call))
    }
    fn rename<'a>(
        &'a self,
        from: &'a str,
        to: &'a str,
        call: &'a Call,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.file_move(from, to, call))
    }
}

/// Collect a process's output into an [`ExecOutput`] (caps applied, the sink fed).
async fn collect(p: V1Process, spec: &ExecSpec, began: Instant) -> Result<ExecOutput> {
    let cap = spec.max_output_bytes.unwrap_or(usize::MAX);
    let mut out = ExecOutput::default();
    while let Some(c) = p.next().await {
        let c = c?;
        if let Some(sink) = &spec.output {
            if sink.wants(&c) {
                let _ = sink.tx.send(Ok(c.clone())).await;
            }
        }
        let (stderr, data) = c.into_parts();
        let buf = if stderr {
            &mut out.stderr
        } else {
            &mut out.stdout
        };
        let room = cap.saturating_sub(buf.len());
        if data.len() > room {
            out.truncated = true;
        }
        buf.extend_from_slice(&data[..data.len().min(room)]);
    }
    let st: ExitStatus = p.wait(&Call::default()).await?;
    out.exit_code = st.exit_code;
    out.signal = st.signal;
    out.timed_out = st.timed_out;
    out.aborted = st.aborted;
    out.duration_ms = began.elapsed().as_millis() as u64;
    if out.aborted {
        let mut e = Error::aborted();
        e.result = Some(Box::new(out));
        return Err(e);
    }
    Ok(out)
}

impl ProcessHandle for V1Process {
    fn next(&self) -> BoxFuture<'_, Option<Result<Chunk>>> {
        Box::pin(V1Process::next(self))
    }
    fn next_run(&self, max: usize, coalesce: bool) -> BoxFuture<'_, Option<Result<Run>>> {
        Box::pin(V1Process::next_run(self, max, coalesce))
    }
    fn unread(&self, chunk: Result<Chunk>) {
        V1Process::unread(self, chunk)
    }
    fn pid(&self) -> Option<i64> {
        V1Process::pid(self)
    }
    fn resize(&self, cols: u16, rows: u16) -> BoxFuture<'_, Result<()>> {
        Box::pin(V1Process::resize(self, cols, rows))
    }
    fn discard_output(&self) {
        V1Process::discard_output(self)
    }
    fn mark_read(&self) {
        V1Process::mark_read(self)
    }
    fn dispose(&self) -> BoxFuture<'_, ()> {
        Box::pin(V1Process::dispose(self))
    }
    fn write<'a>(&'a self, data: &'a [u8]) -> BoxFuture<'a, Result<()>> {
        Box::pin(V1Process::write(self, data))
    }
    fn end(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(V1Process::end(self))
    }
    fn kill<'a>(&'a self, signal: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(V1Process::kill(self, signal))
    }
    fn wait<'a>(&'a self, call: &'a Call) -> BoxFuture<'a, Result<ExitStatus>> {
        Box::pin(V1Process::wait(self, call))
    }
}

impl ExecTarget for V1Target {
    fn native_files(&self) -> Option<&dyn FileOps> {
        Some(self)
    }
    fn describe(&self) -> String {
        format!("v1 sandbox {}", self.ep.display)
    }

    fn subject(&self) -> (&'static str, String) {
        ("sandbox", self.ep.display.clone())
    }

    fn exec(&self, spec: ExecSpec, cancel: CancellationToken) -> BoxFuture<'_, Result<ExecOutput>> {
        Box::pin(async move {
            match self.exec_inner(spec, cancel).await {
                Err(e) => Err(self.explain(e).await),
                ok => ok,
            }
        })
    }

    fn spawn(
        &self,
        spec: ExecSpec,
        abort: CancellationToken,
    ) -> BoxFuture<'_, Result<Box<dyn ProcessHandle>>> {
        Box::pin(async move {
            let mut spec = spec;
            spec.interactive = true; // a spawned process keeps stdin open for writes, as a container's does
            let p = match self.start_process(&spec, abort).await {
                Ok(p) => p,
                Err(e) => return Err(self.explain(e).await),
            };
            Ok(Box::new(p) as Box<dyn ProcessHandle>)
        })
    }

    fn read_file<'a>(&'a self, path: &'a str, call: &'a Call) -> BoxFuture<'a, Result<Vec<u8>>> {
        Box::pin(async move {
            crate::core::container::validate_container_path(path)?;
            let ctx = self.read_ctx(path);
            let res = self
                .files_request(
                    "sandboxesFilesRead",
                    Method::GET,
                    &format!("/v1/files/content?path={}", enc(path)),
                    Body::Empty,
                    call,
                    &ctx,
                )
                .await?;
            if res.status != 200 {
                return Err(self.client.error(&res, &ctx));
            }
            Ok(res.body.to_vec())
        })
    }

    fn read_files<'a>(
        &'a self,
        paths: &'a [String],
        call: &'a Call,
    ) -> BoxFuture<'a, Result<Vec<Vec<u8>>>> {
        Box::pin(async move {
            for p in paths {
                crate::core::container::validate_container_path(p)?;
            }
            let mut out = Vec::with_capacity(paths.len());
            for batch in download_batches(paths) {
                out.extend(self.download(batch, call).await?);
            }
            Ok(out)
        })
    }

    fn write_file<'a>(
        &'a self,
        path: &'a str,
        data: &'a [u8],
        mode: Option<u32>,
        call: &'a Call,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            crate::core::container::validate_container_path(path)?;
            if path.ends_with('/') {
                return Err(
                    Error::invalid("writeFile needs a file path, not a directory")
                        .with("argument", "path"),
                );
            }
            let b = Budget::of(call, DEFAULT_TIMEOUT);
            let ctx = self.file_ctx("writing", path);
            let res = self
                .client
                .on_endpoint(
                    &self.ep,
                    &["sandboxesFilesWrite"],
                    Method::PUT,
                    &format!(
                        "/v1/files/content?path={}&mode={}",
                        enc(path),
                        mode.unwrap_or(0o644) & 0o777
                    ),
                    &Body::Raw(
                        "application/octet-stream".into(),
                        Bytes::copy_from_slice(data),
                    ),
                    &[],
                    &b,
                    &ctx,
                )
                .await?;
            self.client.json::<Value>(&res, &[200], &ctx).map(|_| ())
        })
    }

    fn write_files<'a>(
        &'a self,
        dir: &'a str,
        tar: Bytes,
        call: &'a Call,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            crate::core::container::validate_container_path(dir)?;
            let b = Budget::of(call, DEFAULT_TIMEOUT);
            let (mut dirs, files) = untar(dir, &tar)?;
            // an archive extracts into the parents its paths name (as the engine's archive API does); an upload
            // needs them made first
            let top = dir.trim_end_matches('/');
            for f in &files {
                if let Some((parent, _)) = f.path.rsplit_once('/') {
                    if parent.len() > top.len() && !dirs.iter().any(|d| d == parent) {
                        dirs.push(parent.to_string());
                    }
                }
            }
            for d in &dirs {
                self.mkdir(d, &b).await?;
            }
            if files.is_empty() {
                return Ok(());
            }
            let (boundary, body) = upload_body(&files);
            let ctx = self.file_ctx("uploading into", dir);
            let res = self
                .client
                .on_endpoint(
                    &self.ep,
                    &["sandboxesFilesWrite"],
                    Method::POST,
                    "/v1/files/upload",
                    &Body::Raw(format!("multipart/form-data; boundary={boundary}"), body),
                    &[],
                    &b,
                    &ctx,
                )
                .await?;
            self.client.json::<Value>(&res, &[200], &ctx).map(|_| ())
        })
    }
}

/// One file of an upload.
pub struct UploadFile {
    pub path: String,
    pub mode: u32,
    pub data: Vec<u8>,
}

/// The directories and regular files of a tar archive, under `dir`.
pub fn untar(dir: &str, tar: &[u8]) -> Result<(Vec<String>, Vec<UploadFile>)> {
    use std::io::Read;
    let bad = |e: std::io::Error| Error::invalid(format!("the archive cannot be read: {e}"));
    let mut a = tar::Archive::new(tar);
    let (mut dirs, mut files) = (Vec::new(), Vec::new());
    let join = |rel: &str| {
        let rel = rel.trim_start_matches("./").trim_end_matches('/');
        if dir.ends_with('/') {
            format!("{dir}{rel}")
        } else {
            format!("{dir}/{rel}")
        }
    };
    for e in a.entries().map_err(bad)? {
        let mut e = e.map_err(bad)?;
        let rel = e.path().map_err(bad)?.to_string_lossy().to_string();
        if rel.split('/').any(|p| p == "..") || rel.starts_with('/') {
            return Err(Error::invalid(format!(
                "the archive entry {rel:?} leaves the directory"
            )));
        }
        let mode = e.header().mode().unwrap_or(0o644) & 0o777;
        match e.header().entry_type() {
            tar::EntryType::Directory => {
                if !matches!(rel.as_str(), "." | "./" | "") {
                    dirs.push(join(&rel));
                }
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut data = Vec::new();
                e.read_to_end(&mut data).map_err(bad)?;
                files.push(UploadFile {
                    path: join(&rel),
                    mode,
                    data,
                });
            }
            t => {
                return Err(unsupported(
                    "v1",
                    &format!(
                        "archive entries of type {t:?} ({rel}); only files and directories upload"
                    ),
                ))
            }
        }
    }
    Ok((dirs, files))
}

/// Most bytes of `paths=` query one download request carries (URLs stay well inside servers' limits); more paths
/// go in further requests.
const DOWNLOAD_QUERY_BYTES: usize = 6 * 1024;

/// `paths` in runs whose encoded query fits [`DOWNLOAD_QUERY_BYTES`] (a longer single path runs alone).
fn download_batches(paths: &[String]) -> Vec<&[String]> {
    let mut out = Vec::new();
    let (mut start, mut len) = (0, 0);
    for (i, p) in paths.iter().enumerate() {
        let n = enc(p).len() + "paths=&".len();
        if i > start && len + n > DOWNLOAD_QUERY_BYTES {
            out.push(&paths[start..i]);
            (start, len) = (i, 0);
        }
        len += n;
    }
    if start < paths.len() {
        out.push(&paths[start..]);
    }
    out
}

/// The `multipart/form-data` body of an upload: ordered `metadata` (JSON `FileHeader`) / `content` pairs, and its
/// boundary.
pub fn upload_body(files: &[UploadFile]) -> (String, Bytes) {
    let headers: Vec<String> = files
        .iter()
        .map(|f| json!({"path": f.path, "mode": f.mode}).to_string())
        .collect();
    let parts: Vec<(&str, &str, &[u8])> = files
        .iter()
        .zip(&headers)
        .flat_map(|(f, h)| {
            [
                ("metadata", "application/json", h.as_bytes()),
                ("content", "application/octet-stream", &f.data[..]),
            ]
        })
        .collect();
    multipart::write("form-data", &parts)
}
