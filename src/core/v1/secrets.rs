//! Secrets on v1. The SDK's secrets (`create({ secrets })`) become custom stored secrets (`POST /v1/secrets`: the
//! value with its injection rule — hosts, header, format, and the environment variable that carries the
//! placeholder), attached when the sandbox is created (`features.storedSecrets`); the service answers a
//! placeholder, never the value. v1 attaches stored secrets at creation only: `setSecrets()` on an existing v1
//! sandbox is `ERR_UNSUPPORTED`. The secrets' ids are kept in the sandbox's label [`SECRETS_LABEL`], so removing the
//! sandbox through the SDK deletes them too; a create that fails deletes those it made.

use super::super::call::Call;
use super::super::error::{Error, ErrorCode, Result};
use super::super::netpolicy::SecretSpec;
use super::client::{enc, Budget, Client, Ctx};
use serde_json::{json, Map, Value};
use std::time::Duration;

/// The label that lists the ids of the stored secrets the SDK made for a sandbox (comma-separated).
pub const SECRETS_LABEL: &str = "sandboxd-secrets";

impl Ctx {
    /// About the secret of environment variable `env`.
    pub fn secret(what: impl Into<String>, env: &str) -> Ctx {
        Ctx {
            what: what.into(),
            not_found: ErrorCode::SandboxdProtocol,
            conflict: ErrorCode::SandboxConflict,
            subject: Some(("secret", env.to_string())),
            files: false,
        }
    }
}

/// The `CreateSecretRequest` of `s` for the sandbox `sandbox` (a custom secret: v1 has no proxy-managed kind).
pub fn secret_request(sandbox: &str, s: &SecretSpec) -> Result<Value> {
    if s.managed {
        return Err(Error::new(
            ErrorCode::Unsupported,
            format!(
                "secret {}: v1 has no proxy-managed secrets (its placeholder is always generated)",
                s.env
            ),
        )
        .with("backend", "v1")
        .with("argument", "secrets"));
    }
    let mut injection = Map::new();
    injection.insert("hosts".into(), json!(s.hosts));
    injection.insert("header".into(), json!(s.header_name()));
    if let Some(f) = &s.format {
        injection.insert("format".into(), json!(f));
    }
    injection.insert("envVar".into(), json!(s.env));
    Ok(json!({
        "displayName": format!("{sandbox}-{}", s.env),
        "custom": { "value": s.value, "injection": injection },
    }))
}

impl Client {
    /// Store the secrets of sandbox `sandbox`; their ids. One that fails deletes those stored before it.
    pub async fn create_secrets(
        &self,
        sandbox: &str,
        secrets: &[SecretSpec],
        b: &Budget,
    ) -> Result<Vec<String>> {
        let mut made = Vec::new();
        for s in secrets {
            self.redactor.remember(&s.value);
            let stored = match secret_request(sandbox, s) {
                Ok(req) => {
                    let ctx = Ctx::secret(
                        format!("storing secret {} of v1 sandbox {sandbox:?}", s.env),
                        &s.env,
                    );
                    match self.post_idempotent("/v1/secrets", req, b, &ctx).await {
                        Ok(res) => self.json::<Value>(&res, &[200, 201], &ctx),
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(e),
            };
            match stored.and_then(|v| secret_uid(&v)) {
                Ok(uid) => made.push(uid),
                Err(e) => {
                    self.delete_secrets(&made).await;
                    return Err(e);
                }
            }
        }
        Ok(made)
    }

    /// Delete stored secrets (best effort, with a budget of their own: this runs after a failure or a removal).
    pub async fn delete_secrets(&self, uids: &[String]) {
        let b = Budget::of(&Call::default(), Duration::from_secs(30));
        for uid in uids {
            let _ = self.delete_secret(uid, &b).await;
        }
    }

    /// Delete one stored secret (its etag as `If-Match`); gone already is success.
    async fn delete_secret(&self, uid: &str, b: &Budget) -> Result<()> {
        let ctx = Ctx::secret(format!("deleting v1 secret {uid:?}"), uid);
        self.delete_with_etag(&format!("/v1/secrets/{}", enc(uid)), b, &ctx)
            .await
            .map(|_| ())
    }
}

/// The id of a stored `Secret`.
fn secret_uid(v: &Value) -> Result<String> {
    v["uid"]
        .as_str()
        .filter(|u| !u.is_empty())
        .map(str::to_string)
        .ok_or_else(|| {
            Error::protocol(
                "storing a v1 secret: the answer has no uid",
                Some(201),
                b"(body not shown: it describes a secret)",
            )
        })
}
