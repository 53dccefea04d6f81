//! The sbx daemon's network policy routes (sbx-api.md §4.4, §6): `GET /policy/network/rules`, `POST
//! /policy/network/check`, the network log (`/network/log`, else `/policy/network/log`: the sources disagree, so
//! both are probed and the one that answers is remembered), and rule changes by `POST /policy/network/rules
//! {actions}`. That write's shape is not documented: the SDK sends LocalSandboxd's (`{action, type, resource,
//! sandbox?}`), and a daemon that does not take it answers `ERR_SBX_UNSUPPORTED` rather than a guess. Secrets:
//! `POST /sandbox/{n}/credentials` with the Connect `SyncCredentialsRequest` in snake_case (`custom_secrets`), the
//! same rule for a daemon that refuses it.

use super::client::{json_of, status_error, SbxClient, DEFAULT_TIMEOUT};
use crate::core::call::Call;
use crate::core::error::{Error, ErrorCode, Result};
use crate::core::netpolicy::{
    PolicyCheck, PolicyLogEntry, PolicyRule, RuleChange, SecretPlaceholder, SecretSpec,
};
use crate::core::policy::Preset;
use hyper::Method;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;

const LOG_ROUTES: [&str; 2] = ["/network/log", "/policy/network/log"];

fn str_of(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(Value::as_str).map(str::to_string)
}

fn rule_of(v: &Value) -> Option<PolicyRule> {
    let resource = str_of(v, "resource").or_else(|| str_of(v, "value"))?;
    let sandbox = str_of(v, "sandbox").filter(|s| !s.is_empty());
    Some(PolicyRule {
        action: str_of(v, "action").unwrap_or_default(),
        scope: str_of(v, "scope").unwrap_or_else(|| match &sandbox {
            Some(n) => format!("sandbox:{n}"),
            None => "global".into(),
        }),
        resource,
        sandbox,
    })
}

/// `{"rules":[…]}` or a bare array.
fn rules_of(v: &Value) -> Result<Vec<PolicyRule>> {
    let list = v.get("rules").unwrap_or(v);
    let Some(a) = list.as_array() else {
        return Err(Error::protocol(
            "the sbx daemon's rule list is neither an array nor {rules: [...]}",
            Some(200),
            v.to_string().as_bytes(),
        ));
    };
    Ok(a.iter().filter_map(rule_of).collect())
}

fn preset_name(p: Preset) -> &'static str {
    match p {
        Preset::AllowAll => "allow-all",
        Preset::Balanced => "balanced",
        Preset::DenyAll => "deny-all",
    }
}

fn log_rows(v: &Value, allowed: bool, key: &str, out: &mut Vec<PolicyLogEntry>) {
    let Some(a) = v.get(key).and_then(Value::as_array) else {
        return;
    };
    for r in a {
        let num = |k: &str| r.get(k).and_then(Value::as_u64);
        out.push(PolicyLogEntry {
            host: str_of(r, "host").unwrap_or_default(),
            sandbox: str_of(r, "vm_name").filter(|s| !s.is_empty()),
            allowed,
            proxy_type: str_of(r, "proxy_type").unwrap_or_default(),
            rule: str_of(r, "rule").filter(|s| !s.is_empty()),
            reason: str_of(r, "reason").filter(|s| !s.is_empty()),
            count: num("count_since").or_else(|| num("count")).unwrap_or(0),
            first_seen: str_of(r, "since").unwrap_or_default(),
            last_seen: str_of(r, "last_seen").unwrap_or_default(),
            first_seen_ms: num("first_seen_ms"),
            last_seen_ms: num("last_seen_ms"),
        });
    }
}

impl SbxClient {
    /// `GET /policy/network/rules`.
    pub async fn policy_rules(&self, opts: &Call) -> Result<Vec<PolicyRule>> {
        let what = "GET /policy/network/rules";
        let res = self
            .json_call(
                what,
                Method::GET,
                "/policy/network/rules",
                None,
                None,
                opts,
                DEFAULT_TIMEOUT,
            )
            .await?;
        rules_of(&json_of::<Value>(what, &res)?)
    }

    /// `POST /policy/network/rules {actions}` (every change checked first); the rules afterwards.
    pub async fn policy_change(
        &self,
        changes: &[RuleChange],
        opts: &Call,
    ) -> Result<Vec<PolicyRule>> {
        for (i, c) in changes.iter().enumerate() {
            c.validate(i)?;
        }
        let actions: Vec<Value> = changes
            .iter()
            .map(|c| match c {
                RuleChange::Add { action, resource, sandbox } => {
                    json!({"action": action.as_str(), "type": "network", "resource": resource, "sandbox": sandbox})
                }
                RuleChange::Remove { resource, sandbox } => {
                    json!({"action": "remove", "type": "network", "resource": resource, "sandbox": sandbox})
                }
                RuleChange::Preset(p) => json!({"action": "init", "preset": preset_name(*p)}),
            })
            .collect();
        let body = json!({ "actions": actions });
        let what = "POST /policy/network/rules";
        let instead = "sbx policy allow|deny|rm network …";
        let v = self
            .post_undocumented(what, "/policy/network/rules", body, "rules", instead, opts)
            .await?;
        match v.get("rules") {
            Some(_) => rules_of(&v),
            None => self.policy_rules(opts).await,
        }
    }

    /// POSTs a body in a shape sbx does not document (LocalSandboxd's): 2xx → the JSON answer; LocalSandboxd's 400
    /// naming the refused entry → `ERR_INVALID_ARGUMENT` on `<arg>[i]`; a 404 about a sandbox →
    /// `ERR_SANDBOX_NOT_FOUND`; any other 400/404/405/415/422/501 → `ERR_SBX_UNSUPPORTED` naming the CLI command
    /// that does it instead. The body (which may hold secret values) is never part of an error.
    async fn post_undocumented(
        &self,
        what: &str,
        path: &str,
        body: Value,
        arg: &str,
        instead: &str,
        opts: &Call,
    ) -> Result<Value> {
        let body = ("application/json", bytes::Bytes::from(body.to_string()));
        let res = self
            .call(
                what,
                Method::POST,
                path,
                Some(body),
                opts,
                DEFAULT_TIMEOUT,
                1 << 20,
            )
            .await?;
        let v: Value = serde_json::from_slice(&res.body).unwrap_or(Value::Null);
        match res.status {
            200..=299 => Ok(v),
            400 if v.get("index").is_some() => {
                let i = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                Err(Error::invalid(str_of(&v, "message").unwrap_or_default())
                    .with("argument", format!("{arg}[{i}]")))
            }
            404 if str_of(&v, "message").is_some_and(|m| m.starts_with("sandbox ")) => Err(Error::new(
                ErrorCode::SandboxNotFound,
                super::client::daemon_message(&res.body),
            )),
            400 | 404 | 405 | 415 | 422 | 501 => Err(Error::new(
                ErrorCode::SbxUnsupported,
                format!(
                    "this sbx daemon does not take {what} in the form the SDK sends (HTTP {}); use `{instead}` for it",
                    res.status
                ),
            )),
            s => Err(status_error(what, None, s, &res.body)),
        }
    }

    /// `POST /policy/network/check {type:"network", target, sandbox_id?}`.
    pub async fn policy_check(
        &self,
        target: &str,
        sandbox: Option<&str>,
        opts: &Call,
    ) -> Result<PolicyCheck> {
        if target.trim().is_empty() {
            return Err(Error::invalid("target must not be empty").with("argument", "target"));
        }
        let what = "POST /policy/network/check";
        let mut body = json!({"type": "network", "target": target});
        if let Some(s) = sandbox {
            body["sandbox_id"] = json!(s);
        }
        let res = self
            .json_call(
                what,
                Method::POST,
                "/policy/network/check",
                Some(body),
                sandbox,
                opts,
                DEFAULT_TIMEOUT,
            )
            .await?;
        let v: Value = json_of(what, &res)?;
        let allowed = v.get("allowed").and_then(Value::as_bool).ok_or_else(|| {
            Error::protocol(
                "the sbx daemon's check answer has no allowed",
                Some(res.status),
                &res.body,
            )
        })?;
        Ok(PolicyCheck {
            allowed,
            target: str_of(&v, "target").unwrap_or_else(|| target.to_string()),
            rule: str_of(&v, "rule").filter(|s| !s.is_empty()),
            reason: str_of(&v, "reason_code")
                .or_else(|| str_of(&v, "deny_kind"))
                .unwrap_or_else(|| {
                    if allowed {
                        "allowed-by-rule"
                    } else {
                        "blocked"
                    }
                    .into()
                }),
            message: str_of(&v, "reason").unwrap_or_default(),
            scope: str_of(&v, "context").unwrap_or_default(),
            bypass: v.get("bypass").and_then(Value::as_bool).unwrap_or(false),
        })
    }

    /// The network log: `/network/log`, else `/policy/network/log` (the one that answered is remembered).
    pub async fn policy_log(
        &self,
        sandbox: Option<&str>,
        opts: &Call,
    ) -> Result<Vec<PolicyLogEntry>> {
        let known = self.log_route.load(Ordering::Relaxed) as usize;
        let order: Vec<usize> = if known > 0 {
            vec![known - 1]
        } else {
            vec![0, 1]
        };
        let mut last = None;
        for i in order {
            let what = format!("GET {}", LOG_ROUTES[i]);
            match self
                .json_call(
                    &what,
                    Method::GET,
                    LOG_ROUTES[i],
                    None,
                    None,
                    opts,
                    DEFAULT_TIMEOUT,
                )
                .await
            {
                Ok(res) => {
                    self.log_route.store(i as u8 + 1, Ordering::Relaxed);
                    let v: Value = json_of(&what, &res)?;
                    let mut rows = Vec::new();
                    log_rows(&v, true, "allowed_hosts", &mut rows);
                    log_rows(&v, false, "blocked_hosts", &mut rows);
                    if let Some(s) = sandbox {
                        rows.retain(|r| r.sandbox.as_deref() == Some(s));
                    }
                    return Ok(rows);
                }
                Err(e) if e.code == ErrorCode::SbxUnsupported => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::new(ErrorCode::SbxUnsupported, "no network log route")))
    }

    /// `POST /sandbox/{n}/credentials {custom_secrets}`: replaces the sandbox's secrets (each checked first; values
    /// only in the request body, never in an error); what the sandbox sees of each.
    pub async fn set_secrets(
        &self,
        name: &str,
        secrets: &[SecretSpec],
        opts: &Call,
    ) -> Result<Vec<SecretPlaceholder>> {
        super::validate_sandbox_name(name)?;
        for (i, s) in secrets.iter().enumerate() {
            s.validate(i)?;
        }
        let list: Vec<Value> = secrets
            .iter()
            .map(|s| {
                json!({"env_name": s.env, "value": s.value, "targets": s.hosts, "header": s.header_name(),
                       "format": s.format.as_deref().unwrap_or("%s"), "managed": s.managed})
            })
            .collect();
        let path = format!("/sandbox/{}/credentials", super::client::seg(name));
        let body = json!({ "custom_secrets": list });
        let instead = "sbx secret set-custom …";
        let v = self
            .post_undocumented("POST credentials", &path, body, "secrets", instead, opts)
            .await?;
        let rows = v
            .get("custom_secrets")
            .and_then(Value::as_array)
            .ok_or_else(|| {
                Error::protocol(
                    "the credentials answer has no custom_secrets",
                    Some(200),
                    b"",
                )
            })?;
        Ok(rows
            .iter()
            .map(|r| SecretPlaceholder {
                env: str_of(r, "env_name").unwrap_or_default(),
                placeholder: str_of(r, "sentinel").unwrap_or_default(),
                hosts: r
                    .get("targets")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|t| t.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default(),
                header: str_of(r, "header").unwrap_or_default(),
            })
            .collect())
    }
}
