//! The v1 HTTP client: one place that applies the contract's rules to every request.
//!
//! - **Auth**: the management bearer ([`super::auth`]); on a sandbox endpoint a scoped credential from
//!   `createEndpointCredential`, cached per sandbox and permission set and renewed [`CRED_MARGIN`] before it
//!   expires (never one per call), or none over a `localSocket` endpoint. A 401 is answered once with a fresh
//!   token.
//! - **Retries**: `resourceExhausted` (429) and `unavailable` (503) are retried at most [`MAX_RETRIES`] times, after
//!   the `RetryInfo` delay the service gave (else a short backoff), and only when that delay fits in the call's
//!   deadline; the same `Idempotency-Key` goes with each retry of one logical call.
//! - **Etags**: lifecycle calls read the sandbox, send its etag as `If-Match`, and on 412 read it again once.
//! - **202**: the sandbox is read until it reaches the state the call promises (`failed` is an error carrying the
//!   failure), bounded by the call's deadline and cancellation.
//! - **Pages**: walked to the end; a page token seen twice, or more than [`MAX_PAGES`] pages, is an error.
//! - **Errors**: the body's `code` picks the SDK code; the v1 code (kept even when unknown), the HTTP status and
//!   the details are properties; no credential ever appears (every error is scrubbed).

use super::super::call::Call;
use super::super::error::{Error, ErrorCode, Result};
use super::auth::{Auth, Redactor, Secret};
use super::model::{ApiError, ExecRequest, ExecResponse, ListSandboxesResponse, Sandbox};
use super::transport::{Base, Response};
use bytes::Bytes;
use http_body_util::Full;
use hyper::Method;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Retries of one request after `resourceExhausted` / `unavailable`.
pub const MAX_RETRIES: u32 = 2;
/// The most pages a list walks.
pub const MAX_PAGES: usize = 1000;
/// A call's deadline when the caller sets none (one request, or one wait for a state).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a lifecycle call (create, start, stop, delete) waits for its state when the caller sets no deadline.
pub const LIFECYCLE_TIMEOUT: Duration = Duration::from_secs(300);
/// An endpoint credential is renewed when less than this is left of it.
pub const CRED_MARGIN: Duration = Duration::from_secs(30);
/// The lifetime asked of endpoint credentials (the contract's maximum).
pub const CRED_TTL: &str = "300s";

/// One logical call's limits: when it must be done, and the caller's cancellation.
#[derive(Clone, Debug)]
pub struct Budget {
    pub until: Instant,
    pub total: Duration,
    pub cancel: CancellationToken,
}

impl Budget {
    /// The call's deadline (else `default`) from now.
    pub fn of(call: &Call, default: Duration) -> Budget {
        let total = call.timeout.unwrap_or(default);
        Budget {
            until: Instant::now() + total,
            total,
            cancel: call.cancel.clone(),
        }
    }

    /// What is left.
    pub fn left(&self) -> Duration {
        self.until.saturating_duration_since(Instant::now())
    }

    /// Run `fut` within what is left; `ERR_TIMEOUT` names `what` and the whole budget.
    pub async fn bound<T>(
        &self,
        what: &str,
        fut: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        if self.cancel.is_cancelled() {
            return Err(Error::aborted());
        }
        tokio::select! {
            r = fut => r,
            _ = self.cancel.cancelled() => Err(Error::aborted()),
            _ = tokio::time::sleep_until(self.until.into()) => Err(Error::timeout(what, self.total)),
        }
    }

    /// Sleep `d` (cut short by the deadline or the cancellation, which are errors).
    pub async fn sleep(&self, what: &str, d: Duration) -> Result<()> {
        self.bound(what, async {
            tokio::time::sleep(d).await;
            Ok(())
        })
        .await
    }
}

/// A request body.
pub enum Body {
    Empty,
    Json(Value),
    Raw(String, Bytes),
}

/// What an error is about: the code a 404 / conflict becomes, and the property that names the subject.
#[derive(Clone, Debug)]
pub struct Ctx {
    pub what: String,
    pub not_found: ErrorCode,
    pub conflict: ErrorCode,
    pub subject: Option<(&'static str, String)>,
    /// A file operation: `failedPrecondition` is read as not-a-file, not-a-directory or an escape by its message.
    pub files: bool,
}

impl Ctx {
    /// About the sandbox `name`.
    pub fn sandbox(what: impl Into<String>, name: &str) -> Ctx {
        Ctx {
            what: what.into(),
            not_found: ErrorCode::SandboxNotFound,
            conflict: ErrorCode::SandboxConflict,
            subject: Some(("sandbox", name.to_string())),
            files: false,
        }
    }
    /// About `path` in a sandbox.
    pub fn path(what: impl Into<String>, path: &str) -> Ctx {
        Ctx {
            what: what.into(),
            not_found: ErrorCode::PathNotFound,
            conflict: ErrorCode::PathExists,
            subject: Some(("path", path.to_string())),
            files: true,
        }
    }
    /// About a process.
    pub fn process(what: impl Into<String>) -> Ctx {
        Ctx {
            what: what.into(),
            not_found: ErrorCode::ProcessFinished,
            conflict: ErrorCode::ExecFailed,
            subject: None,
            files: false,
        }
    }
}

/// Where a sandbox's files and processes are served, and how to authenticate there.
#[derive(Clone, Debug)]
pub struct EndpointRef {
    pub base: Base,
    /// `localSocket`: no credential.
    pub local: bool,
    /// `sandboxes/<uid>`.
    pub sandbox: String,
    pub uid: String,
    /// The SDK's name for the sandbox (its displayName), for messages.
    pub display: String,
    /// The endpoint takes a WebSocket credential only as a `sandboxes.bearer.v1.<token>` subprotocol offer (it
    /// advertises `webSocketSubprotocol` and not `authorizationHeader`).
    pub ws_subprotocol_auth: bool,
}

/// Which credential a request carries.
#[derive(Clone, Copy)]
pub enum Cred<'a> {
    Management,
    Endpoint(&'a EndpointRef, &'a [&'static str]),
}

type CredKey = (String, String);

/// The v1 client (management plane + sandbox endpoints).
pub struct Client {
    pub base: Base,
    auth: Auth,
    pub redactor: Redactor,
    tls: Arc<rustls::ClientConfig>,
    creds: tokio::sync::Mutex<HashMap<CredKey, (Secret, Instant)>>,
    /// Credentials minted (tests check they are cached, not minted per call).
    pub minted: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

/// `s` percent-encoded for a query value or a path segment.
pub fn enc(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

/// The id part of `kind/<id>` (`sandboxes/abc` → `abc`).
pub fn id_of(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

impl Client {
    /// A client for the management base `base`.
    pub fn new(base: Base, auth: Auth, tls: Arc<rustls::ClientConfig>) -> Client {
        let redactor = Redactor::default();
        if let Auth::Token(t) = &auth {
            redactor.remember(t.expose());
        }
        Client {
            base,
            auth,
            redactor,
            tls,
            creds: Default::default(),
            minted: Default::default(),
        }
    }

    /// The TLS configuration (for endpoint bases).
    pub fn tls(&self) -> &Arc<rustls::ClientConfig> {
        &self.tls
    }

    /// The bearer for `cred` (`None`: none needed); `fresh` renews it.
    pub async fn token(&self, cred: Cred<'_>, fresh: bool, b: &Budget) -> Result<Option<Secret>> {
        match cred {
            Cred::Management => {
                b.bound(
                    "exchanging the PAT for an access token",
                    self.auth.bearer(fresh, &self.redactor),
                )
                .await
            }
            Cred::Endpoint(ep, perms) => {
                if ep.local {
                    return Ok(None);
                }
                self.endpoint_credential(ep, perms, fresh, b)
                    .await
                    .map(Some)
            }
        }
    }

    /// A scoped credential for `ep` with `perms`, from the cache unless it is within [`CRED_MARGIN`] of its
    /// expiry (or `fresh`).
    /// (Boxed: minting a credential is itself an exchange, which asks for a token.)
    fn endpoint_credential<'a>(
        &'a self,
        ep: &'a EndpointRef,
        perms: &'a [&'static str],
        fresh: bool,
        b: &'a Budget,
    ) -> futures::future::BoxFuture<'a, Result<Secret>> {
        Box::pin(async move {
            let key = (ep.uid.clone(), perms.join(","));
            let mut creds = self.creds.lock().await;
            if let Some((t, until)) = creds.get(&key) {
                if !fresh && Instant::now() + CRED_MARGIN < *until {
                    return Ok(t.clone());
                }
            }
            let ctx = Ctx::sandbox("minting a sandbox endpoint credential", &ep.display);
            let res = self
                .exchange(
                    &self.base,
                    Cred::Management,
                    Method::POST,
                    &format!(
                        "/v1/sandboxes/{}/endpoint-credentials",
                        enc(id_of(&ep.sandbox))
                    ),
                    &Body::Json(json!({"permissions": perms, "ttl": CRED_TTL})),
                    &[],
                    b,
                    &ctx,
                )
                .await?;
            let v: Value = self.json(&res, &[200], &ctx)?;
            let token = v["token"]
                .as_str()
                .filter(|t| !t.is_empty())
                .ok_or_else(|| {
                    Error::protocol("the endpoint credential has no token", Some(200), b"")
                })?;
            self.redactor.remember(token);
            self.minted
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let lifetime = v["expireTime"]
                .as_str()
                .and_then(unix_seconds)
                .map(|exp| {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_secs_f64();
                    Duration::from_secs_f64((exp - now).max(0.0))
                })
                .unwrap_or(Duration::from_secs(120))
                .min(Duration::from_secs(300));
            let secret = Secret::new(token);
            creds.insert(key, (secret.clone(), Instant::now() + lifetime));
            Ok(secret)
        })
    }

    /// Forget a cached endpoint credential (the server refused it).
    pub async fn drop_credential(&self, ep: &EndpointRef, perms: &[&'static str]) {
        self.creds
            .lock()
            .await
            .remove(&(ep.uid.clone(), perms.join(",")));
    }

    /// Send one request with the contract's retry rules (401 → one fresh token; 429/503 → up to
    /// [`MAX_RETRIES`] retries after `RetryInfo`, within the budget). Returns whatever answered last.
    #[allow(clippy::too_many_arguments)]
    pub async fn exchange(
        &self,
        base: &Base,
        cred: Cred<'_>,
        method: Method,
        path_and_query: &str,
        body: &Body,
        headers: &[(&str, String)],
        b: &Budget,
        ctx: &Ctx,
    ) -> Result<Response> {
        let mut fresh = false;
        let mut retries = 0;
        loop {
            let token = self
                .token(cred, fresh, b)
                .await
                .map_err(|e| self.scrub(e))?;
            let mut req = hyper::Request::builder()
                .method(method.clone())
                .uri(base.target(path_and_query))
                .header("host", base.host_header())
                .header("accept", "application/json");
            if let Some(t) = &token {
                let mut v = hyper::header::HeaderValue::from_str(&format!("Bearer {}", t.expose()))
                    .map_err(|_| {
                        Error::new(
                            ErrorCode::Unauthenticated,
                            "the access token is not a valid header value",
                        )
                    })?;
                v.set_sensitive(true);
                req = req.header("authorization", v);
            }
            for (k, v) in headers {
                req = req.header(*k, v);
            }
            let bytes = match body {
                Body::Empty => Bytes::new(),
                Body::Json(v) => {
                    req = req.header("content-type", "application/json");
                    Bytes::from(v.to_string())
                }
                Body::Raw(ct, b) => {
                    req = req.header("content-type", ct.as_str());
                    b.clone()
                }
            };
            if !matches!(body, Body::Empty) || method == Method::PUT || method == Method::POST {
                req = req.header("content-length", bytes.len());
            }
            let req = req
                .body(Full::new(bytes))
                .map_err(|e| Error::internal(format!("building a request: {e}")))?;
            let res = b
                .bound(&ctx.what, base.send(req))
                .await
                .map_err(|e| self.scrub(e))?;
            let refreshable = match cred {
                Cred::Management => self.auth.can_refresh(),
                Cred::Endpoint(ep, _) => !ep.local,
            };
            if res.status == 401 && refreshable && !fresh {
                if let Cred::Endpoint(ep, perms) = cred {
                    self.drop_credential(ep, perms).await;
                }
                fresh = true;
                continue;
            }
            if (res.status == 429 || res.status == 503) && retries < MAX_RETRIES {
                // RetryInfo, else an HTTP Retry-After in seconds, else a short backoff.
                let after = res
                    .headers
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
                    .map(|s| Duration::from_secs(s.min(86_400)));
                let delay = retry_delay(&res.body)
                    .or(after)
                    .unwrap_or(Duration::from_millis(200 << retries))
                    .max(Duration::from_millis(10));
                if delay < b.left() {
                    retries += 1;
                    b.sleep(&ctx.what, delay).await?;
                    continue;
                }
            }
            return Ok(res);
        }
    }

    /// The body of `res` as `T` when its status is one of `ok`; else the error it carries.
    pub fn json<T: serde::de::DeserializeOwned>(
        &self,
        res: &Response,
        ok: &[u16],
        ctx: &Ctx,
    ) -> Result<T> {
        if !ok.contains(&res.status) {
            return Err(self.error(res, ctx));
        }
        serde_json::from_slice(&res.body).map_err(|e| {
            self.scrub(Error::protocol(
                format!(
                    "{}: the v1 answer (HTTP {}) is not what the contract says: {e}",
                    ctx.what, res.status
                ),
                Some(res.status),
                &res.body,
            ))
        })
    }

    /// The typed error for a failed answer.
    pub fn error(&self, res: &Response, ctx: &Ctx) -> Error {
        self.scrub(api_error(res.status, &res.body, ctx))
    }

    /// `e` without any credential in it.
    pub fn scrub(&self, e: Error) -> Error {
        self.redactor.scrub(e)
    }

    // ---- management ----

    /// Every sandbox (pages walked), optionally filtered (`display_name=x`).
    pub async fn list_sandboxes(&self, filter: Option<&str>, b: &Budget) -> Result<Vec<Sandbox>> {
        let ctx = Ctx {
            what: "listing v1 sandboxes".into(),
            not_found: ErrorCode::SandboxdProtocol,
            conflict: ErrorCode::SandboxConflict,
            subject: None,
            files: false,
        };
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut token = String::new();
        for _ in 0..MAX_PAGES {
            let mut q = "/v1/sandboxes?pageSize=100".to_string();
            if let Some(f) = filter {
                q += &format!("&filter={}", enc(f));
            }
            if !token.is_empty() {
                q += &format!("&pageToken={}", enc(&token));
            }
            let res = self
                .exchange(
                    &self.base,
                    Cred::Management,
                    Method::GET,
                    &q,
                    &Body::Empty,
                    &[],
                    b,
                    &ctx,
                )
                .await?;
            let page: ListSandboxesResponse = self.json(&res, &[200], &ctx)?;
            out.extend(page.sandboxes);
            if page.next_page_token.is_empty() {
                return Ok(out);
            }
            if !seen.insert(page.next_page_token.clone()) {
                return Err(endless(&ctx.what, "a page token came back twice"));
            }
            token = page.next_page_token;
        }
        Err(endless(&ctx.what, &format!("more than {MAX_PAGES} pages")))
    }

    /// The sandbox `uid`, or `None` (404).
    pub async fn get_sandbox(
        &self,
        uid: &str,
        display: &str,
        b: &Budget,
    ) -> Result<Option<Sandbox>> {
        let ctx = Ctx::sandbox(format!("reading v1 sandbox {display:?}"), display);
        self.get_opt(&format!("/v1/sandboxes/{}", enc(uid)), b, &ctx)
            .await
    }

    /// DELETE the resource at `path` with its current etag as `If-Match` (read first; on 412 read again once and
    /// retry); `false` when it was gone already.
    pub async fn delete_with_etag(&self, path: &str, b: &Budget, ctx: &Ctx) -> Result<bool> {
        let mut reread = false;
        loop {
            let Some(cur) = self.get_opt::<Value>(path, b, ctx).await? else {
                return Ok(false);
            };
            let etag = cur["etag"].as_str().unwrap_or("").to_string();
            let res = self
                .exchange(
                    &self.base,
                    Cred::Management,
                    Method::DELETE,
                    path,
                    &Body::Empty,
                    &[("if-match", etag)],
                    b,
                    ctx,
                )
                .await?;
            match res.status {
                200..=299 => return Ok(true),
                404 => return Ok(false),
                412 if !reread => reread = true,
                _ => return Err(self.error(&res, ctx)),
            }
        }
    }

    /// A GET on the management plane: the resource, or `None` on 404.
    pub async fn get_opt<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        b: &Budget,
        ctx: &Ctx,
    ) -> Result<Option<T>> {
        let res = self
            .exchange(
                &self.base,
                Cred::Management,
                Method::GET,
                path,
                &Body::Empty,
                &[],
                b,
                ctx,
            )
            .await?;
        if res.status == 404 {
            return Ok(None);
        }
        self.json(&res, &[200], ctx).map(Some)
    }

    /// The sandbox whose displayName is `name` (the SDK's name), or `None`.
    pub async fn find(&self, name: &str, b: &Budget) -> Result<Option<Sandbox>> {
        let all = self
            .list_sandboxes(Some(&format!("display_name={name}")), b)
            .await?;
        Ok(all
            .into_iter()
            .find(|s| s.display_name.as_deref() == Some(name)))
    }

    /// Create (`CreateSandboxRequest` JSON) and wait until it runs.
    pub async fn create_sandbox(&self, req: Value, display: &str, b: &Budget) -> Result<Sandbox> {
        let ctx = Ctx::sandbox(format!("creating v1 sandbox {display:?}"), display);
        let res = self.post_idempotent("/v1/sandboxes", req, b, &ctx).await?;
        let s: Sandbox = self.json(&res, &[200, 201, 202], &ctx)?;
        self.settle_new(s, display, b).await
    }

    /// A POST that creates something, with an `Idempotency-Key`: a connection that broke before the answer is
    /// sent once more with the same key (the service replays the first result).
    pub async fn post_idempotent(
        &self,
        path: &str,
        req: Value,
        b: &Budget,
        ctx: &Ctx,
    ) -> Result<Response> {
        let key = uuid::Uuid::new_v4().to_string();
        let body = Body::Json(req);
        let headers = [("idempotency-key", key)];
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self
                .exchange(
                    &self.base,
                    Cred::Management,
                    Method::POST,
                    path,
                    &body,
                    &headers,
                    b,
                    ctx,
                )
                .await
            {
                Err(e) if e.code == ErrorCode::SandboxdUnavailable && attempt < 2 => continue,
                r => return r,
            }
        }
    }

    /// A sandbox just created (or restored) once it runs; one that fails is deleted (best effort) and the
    /// failure is the error.
    pub async fn settle_new(&self, s: Sandbox, display: &str, b: &Budget) -> Result<Sandbox> {
        if s.core.status == "running" {
            return Ok(s);
        }
        let ran = match self.wait_for(&s.uid, display, &["running"], b).await {
            Err(e) if e.props.get("status").and_then(|v| v.as_str()) == Some("failed") => {
                // a create that rejects leaves nothing behind: the failed sandbox is deleted (best effort)
                let clean = Budget::of(&Call::default(), Duration::from_secs(30));
                if let Ok(Some(cur)) = self.get_sandbox(&s.uid, display, &clean).await {
                    let _ = self.lifecycle(&cur, "delete", &clean).await;
                }
                return Err(e);
            }
            r => r?,
        };
        ran.ok_or_else(|| {
            Error::new(
                ErrorCode::SandboxNotFound,
                format!("v1 sandbox {display:?} vanished while it was being created"),
            )
            .with("sandbox", display.to_string())
        })
    }

    /// Read the sandbox until its status is one of `states` (`None`: it is gone); `failed` is an error with the
    /// failure; bounded by `b`.
    pub async fn wait_for(
        &self,
        uid: &str,
        display: &str,
        states: &[&str],
        b: &Budget,
    ) -> Result<Option<Sandbox>> {
        let mut pause = Duration::from_millis(50);
        loop {
            let s = self.get_sandbox(uid, display, b).await?;
            match &s {
                None => return Ok(None),
                Some(s) if states.contains(&s.core.status.as_str()) => return Ok(Some(s.clone())),
                Some(s) if s.core.status == "failed" => return Err(self.scrub(failed(s, display))),
                Some(_) => {}
            }
            b.sleep(
                &format!(
                    "waiting for v1 sandbox {display:?} to be {}",
                    states.join(" or ")
                ),
                pause,
            )
            .await?;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    /// `start`, `stop` or `delete` with `If-Match` (412 → read again once and retry), then wait for `running`,
    /// `stopped` or gone.
    pub async fn lifecycle(&self, s: &Sandbox, action: &str, b: &Budget) -> Result<()> {
        let display = s.display_name.clone().unwrap_or_else(|| s.uid.clone());
        let ctx = Ctx::sandbox(format!("{action} of v1 sandbox {display:?}"), &display);
        let key = uuid::Uuid::new_v4().to_string();
        let (method, path, body, target) = match action {
            "start" => (
                Method::POST,
                format!("/v1/sandboxes/{}/start", enc(&s.uid)),
                Body::Json(json!({})),
                Some("running"),
            ),
            "stop" => (
                Method::POST,
                format!("/v1/sandboxes/{}/stop", enc(&s.uid)),
                Body::Json(json!({})),
                Some("stopped"),
            ),
            _ => (
                Method::DELETE,
                format!("/v1/sandboxes/{}", enc(&s.uid)),
                Body::Empty,
                None,
            ),
        };
        let mut etag = s.core.etag.clone();
        let mut reread = false;
        loop {
            if etag.is_empty() {
                match self.get_sandbox(&s.uid, &display, b).await? {
                    Some(now) => etag = now.core.etag,
                    None if target.is_none() => return Ok(()),
                    None => return Err(gone(&display)),
                }
            }
            let headers = [("if-match", etag.clone()), ("idempotency-key", key.clone())];
            let res = match self
                .exchange(
                    &self.base,
                    Cred::Management,
                    method.clone(),
                    &path,
                    &body,
                    &headers,
                    b,
                    &ctx,
                )
                .await
            {
                // The connection broke before an answer: once more with the same key (the service replays).
                Err(e) if e.code == ErrorCode::SandboxdUnavailable => {
                    self.exchange(
                        &self.base,
                        Cred::Management,
                        method.clone(),
                        &path,
                        &body,
                        &headers,
                        b,
                        &ctx,
                    )
                    .await?
                }
                r => r?,
            };
            match res.status {
                412 if !reread => {
                    reread = true;
                    etag.clear();
                    continue;
                }
                404 if target.is_none() => return Ok(()),
                200..=299 => break,
                _ => return Err(self.error(&res, &ctx)),
            }
        }
        match target {
            Some(t) => {
                self.wait_for(&s.uid, &display, &[t], b)
                    .await?
                    .ok_or_else(|| gone(&display))?;
            }
            None => {
                if self.wait_for(&s.uid, &display, &[], b).await?.is_some() {
                    unreachable!("no state ends a deletion but its absence");
                }
            }
        }
        Ok(())
    }

    /// Every page of a list answer's `field` (e.g. policy log `entries`).
    pub async fn list_all(
        &self,
        path: &str,
        field: &str,
        b: &Budget,
        ctx: &Ctx,
    ) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut token = String::new();
        let sep = if path.contains('?') { '&' } else { '?' };
        for _ in 0..MAX_PAGES {
            let mut q = format!("{path}{sep}pageSize=100");
            if !token.is_empty() {
                q += &format!("&pageToken={}", enc(&token));
            }
            let res = self
                .exchange(
                    &self.base,
                    Cred::Management,
                    Method::GET,
                    &q,
                    &Body::Empty,
                    &[],
                    b,
                    ctx,
                )
                .await?;
            let page: Value = self.json(&res, &[200], ctx)?;
            if let Some(items) = page[field].as_array() {
                out.extend(items.iter().cloned());
            }
            let next = page["nextPageToken"].as_str().unwrap_or("").to_string();
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

    /// A GET on the management plane, as JSON.
    pub async fn get_json(&self, path: &str, b: &Budget, ctx: &Ctx) -> Result<Value> {
        let res = self
            .exchange(
                &self.base,
                Cred::Management,
                Method::GET,
                path,
                &Body::Empty,
                &[],
                b,
                ctx,
            )
            .await?;
        self.json(&res, &[200], ctx)
    }

    // ---- sandbox endpoint ----

    /// Where `s` serves files and processes.
    pub fn endpoint(&self, s: &Sandbox) -> Result<EndpointRef> {
        let display = s.display_name.clone().unwrap_or_else(|| s.uid.clone());
        let ep = s.core.endpoint.as_ref().ok_or_else(|| {
            Error::new(
                ErrorCode::SandboxStopped,
                format!(
                    "v1 sandbox {display:?} has no endpoint (status {})",
                    s.core.status
                ),
            )
            .with("sandbox", display.clone())
            .with("status", s.core.status.clone())
        })?;
        let uri = ep.uri.as_deref().unwrap_or_default();
        let base = Base::parse(uri, &self.tls).map_err(|e| {
            Error::protocol(
                format!(
                    "v1 sandbox {display:?} has an unusable endpoint: {}",
                    e.message
                ),
                None,
                b"",
            )
        })?;
        let transports = &ep.authentication.credential_transports;
        Ok(EndpointRef {
            ws_subprotocol_auth: transports.iter().any(|t| t == "webSocketSubprotocol")
                && !transports.iter().any(|t| t == "authorizationHeader"),
            local: ep.authentication.scheme == "localSocket",
            base,
            sandbox: if ep.sandbox.is_empty() {
                s.name.clone()
            } else {
                ep.sandbox.clone()
            },
            uid: s.uid.clone(),
            display,
        })
    }

    /// One request on a sandbox endpoint with the credential for `perms`.
    #[allow(clippy::too_many_arguments)]
    pub async fn on_endpoint(
        &self,
        ep: &EndpointRef,
        perms: &[&'static str],
        method: Method,
        path: &str,
        body: &Body,
        headers: &[(&str, String)],
        b: &Budget,
        ctx: &Ctx,
    ) -> Result<Response> {
        self.exchange(
            &ep.base,
            Cred::Endpoint(ep, perms),
            method,
            path,
            body,
            headers,
            b,
            ctx,
        )
        .await
    }

    /// `POST /v1/processes/exec`.
    pub async fn exec(
        &self,
        ep: &EndpointRef,
        req: &ExecRequest,
        b: &Budget,
    ) -> Result<ExecResponse> {
        let ctx = Ctx {
            subject: Some(("sandbox", ep.display.clone())),
            ..Ctx::process(format!("exec in v1 sandbox {:?}", ep.display))
        };
        let body = serde_json::to_value(req).map_err(|e| Error::internal(e.to_string()))?;
        let res = self
            .on_endpoint(
                ep,
                &["sandboxesExec"],
                Method::POST,
                "/v1/processes/exec",
                &Body::Json(body),
                &[],
                b,
                &ctx,
            )
            .await?;
        self.json(&res, &[200], &ctx)
    }
}

/// ERR_SANDBOXD_PROTOCOL for a list that never ends.
pub(super) fn endless(what: &str, why: &str) -> Error {
    Error::new(
        ErrorCode::SandboxdProtocol,
        format!("{what}: the pages never end ({why})"),
    )
}

fn gone(display: &str) -> Error {
    Error::new(
        ErrorCode::SandboxNotFound,
        format!("v1 sandbox {display:?} is gone"),
    )
    .with("sandbox", display.to_string())
}

/// The error for a sandbox whose status is `failed`.
fn failed(s: &Sandbox, display: &str) -> Error {
    let (code, msg, v1) = match &s.failure {
        Some(f) => (code_for(&f.code, 0), f.message.clone(), f.code.clone()),
        None => (ErrorCode::SandboxdProtocol, String::new(), String::new()),
    };
    let code = match code {
        ErrorCode::SandboxdProtocol | ErrorCode::SandboxNotFound => ErrorCode::Emulator,
        c => c,
    };
    let mut e = Error::new(
        code,
        format!(
            "v1 sandbox {display:?} failed{}",
            if msg.is_empty() {
                String::new()
            } else {
                format!(": {msg}")
            }
        ),
    )
    .with("sandbox", display.to_string())
    .with("status", "failed");
    if !v1.is_empty() {
        e = e.with("v1Code", v1);
    }
    if let Some(f) = &s.failure {
        e = e.with("failure", serde_json::to_value(f).unwrap_or_default());
    }
    e
}

/// The SDK code for a v1 error `code` (HTTP `status` when the code says nothing).
pub(super) fn code_for(code: &str, status: u16) -> ErrorCode {
    match code {
        "unauthenticated" => ErrorCode::Unauthenticated,
        "permissionDenied" => ErrorCode::PermissionDenied,
        "invalidArgument" | "outOfRange" => ErrorCode::InvalidArgument,
        "resourceExhausted" => ErrorCode::ResourceExhausted,
        "unavailable" => ErrorCode::SandboxdUnavailable,
        "unimplemented" => ErrorCode::Unsupported,
        "deadlineExceeded" => ErrorCode::Timeout,
        "cancelled" => ErrorCode::Aborted,
        _ => match status {
            400 => ErrorCode::InvalidArgument,
            401 => ErrorCode::Unauthenticated,
            403 => ErrorCode::PermissionDenied,
            429 => ErrorCode::ResourceExhausted,
            501 => ErrorCode::Unsupported,
            502..=504 => ErrorCode::SandboxdUnavailable,
            _ => ErrorCode::SandboxdProtocol,
        },
    }
}

/// The typed error for a v1 error answer: the SDK code from the v1 `code` (kept in `v1Code`, unknown ones too),
/// the status, details and retry delay as properties. `status` 0: an `Error` carried inside a 200 answer (a
/// download's per-file or stream error), which has no HTTP status of its own.
pub fn api_error(status: u16, body: &[u8], ctx: &Ctx) -> Error {
    let api: Option<ApiError> = serde_json::from_slice(body).ok();
    let v1code = api.as_ref().map(|a| a.code.clone()).unwrap_or_default();
    let code = match (v1code.as_str(), status) {
        // 428: the client sent no If-Match (a client bug, or a server that asks for what the contract does not).
        (_, 428) => ErrorCode::SandboxdProtocol,
        (_, 412) => ctx.conflict,
        ("notFound", _) | ("", 404) => ctx.not_found,
        ("failedPrecondition", _) if ctx.files => file_precondition(body),
        ("alreadyExists" | "failedPrecondition" | "aborted", _) | ("", 409) => ctx.conflict,
        (c, s) => code_for(c, s),
    };
    let said = api.as_ref().map(|a| a.message.clone()).unwrap_or_default();
    let mut e = Error::new(
        code,
        format!(
            "{}: {} (v1 {}{})",
            ctx.what,
            if said.is_empty() {
                "the service refused".to_string()
            } else {
                said.clone()
            },
            if v1code.is_empty() { "error" } else { &v1code },
            if status == 0 {
                String::new()
            } else {
                format!(", HTTP {status}")
            }
        ),
    );
    if status != 0 {
        e = e.with("status", status);
    }
    if let Some((k, v)) = &ctx.subject {
        e = e.with(k, v.clone());
    }
    if code == ErrorCode::Unsupported {
        e = e.with("backend", "v1");
    }
    match &api {
        Some(a) => {
            e = e.with("v1Code", a.code.clone());
            if let Some(d) = &a.details {
                e = e.with("details", Value::Array(d.clone()));
            }
            if let Some(ms) = retry_delay(body) {
                e = e.with("retryDelayMs", ms.as_millis() as u64);
            }
            if let Some(m) = a.detail("EtagMismatch") {
                e = e.with("currentEtag", m["currentEtag"].clone());
            }
        }
        None => e = e.with("body", super::super::error::excerpt(body)),
    }
    e
}

/// A file operation's `failedPrecondition`, by what its message and details say.
fn file_precondition(body: &[u8]) -> ErrorCode {
    let text = String::from_utf8_lossy(body).to_ascii_lowercase();
    if text.contains("escape") || text.contains("symlink") {
        ErrorCode::PathEscapes
    } else if text.contains("not a directory") {
        ErrorCode::NotADirectory
    } else if text.contains("directory") || text.contains("regular") || text.contains("not a file")
    {
        ErrorCode::NotAFile
    } else {
        ErrorCode::PathExists
    }
}

/// The `RetryInfo.retryDelay` of an error body (`"1.5s"`).
pub fn retry_delay(body: &[u8]) -> Option<Duration> {
    let api: ApiError = serde_json::from_slice(body).ok()?;
    let d = api.detail("RetryInfo")?;
    parse_duration(d["retryDelay"].as_str()?)
}

/// A protobuf JSON duration (`"1.5s"`).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let secs: f64 = s.strip_suffix('s')?.parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(86_400.0)))
}

/// Seconds since the epoch of an RFC 3339 timestamp (`2026-12-05T08:00:00.5Z`, `…+02:00`).
pub fn unix_seconds(t: &str) -> Option<f64> {
    let b = t.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| t.get(r)?.parse::<i64>().ok();
    let (y, mo, d, h, mi, s) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    let mut rest = &t[19..];
    let mut frac = 0.0;
    if let Some(r) = rest.strip_prefix('.') {
        let n = r.bytes().take_while(|c| c.is_ascii_digit()).count();
        frac = format!("0.{}", &r[..n]).parse().ok()?;
        rest = &r[n..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        o if o.len() == 6 => {
            let sign = if o.starts_with('-') { -1 } else { 1 };
            sign * (o[1..3].parse::<i64>().ok()? * 3600 + o[4..6].parse::<i64>().ok()? * 60)
        }
        _ => return None,
    };
    // days from civil (Howard Hinnant)
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + h * 3600 + mi * 60 + s - offset) as f64 + frac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_and_durations_parse() {
        assert_eq!(unix_seconds("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(unix_seconds("2026-12-05T08:00:00Z"), Some(1_796_457_600.0));
        assert_eq!(
            unix_seconds("2026-12-05T10:00:00.5+02:00"),
            Some(1_796_457_600.5)
        );
        assert_eq!(unix_seconds("yesterday"), None);
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("-1s"), None);
        assert_eq!(parse_duration("3m"), None);
    }

    #[test]
    fn unknown_codes_are_kept_and_known_ones_typed() {
        let ctx = Ctx::sandbox("x", "dev");
        let e = api_error(418, br#"{"code":"quotaGone","message":"m"}"#, &ctx);
        assert_eq!(e.code, ErrorCode::SandboxdProtocol);
        assert_eq!(e.props["v1Code"], "quotaGone");
        let e = api_error(404, br#"{"code":"notFound","message":"m"}"#, &ctx);
        assert_eq!(e.code, ErrorCode::SandboxNotFound);
        assert_eq!(e.props["sandbox"], "dev");
        let e = api_error(502, b"<html>bad gateway</html>", &ctx);
        assert_eq!(e.code, ErrorCode::SandboxdUnavailable);
        assert!(e.props["body"].as_str().unwrap().contains("bad gateway"));
    }
}
