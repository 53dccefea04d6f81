//! JS classes `NetworkPolicy` (rules, check, log of one backend, globally or for one sandbox) and
//! `PolicyLogFollow` over [`crate::core::netpolicy`] and the backend's `policy_*` methods.

use super::call::{run, CallOptions, Promise};
use crate::core::backend::SandboxBackend;
use crate::core::netpolicy::{self, LogFollower, RuleChange};
use crate::core::policy::{Action, Preset};
use crate::core::Error as CoreError;
use napi::bindgen_prelude::*;
use napi::Env;
use std::sync::Arc;
use std::time::Duration;

/// One rule as the daemon lists it.
#[napi(object)]
pub struct PolicyRule {
    /// What it does.
    #[napi(ts_type = "'allow' | 'deny' | 'bypass'")]
    pub action: String,
    /// The destination: `host`, `host:port`, `*.domain`, `*`, `*:443` or a CIDR.
    pub destination: String,
    /// `'global'` or `'sandbox:<name>'`.
    pub scope: String,
    /// The sandbox of a sandbox rule.
    pub sandbox: Option<String>,
}

impl From<netpolicy::PolicyRule> for PolicyRule {
    fn from(r: netpolicy::PolicyRule) -> Self {
        PolicyRule {
            action: r.action,
            destination: r.resource,
            scope: r.scope,
            sandbox: r.sandbox,
        }
    }
}

/// A change to the rules (`NetworkPolicy.change()`).
#[napi(object)]
pub struct PolicyChange {
    /// `allow`, `deny` or `bypass` adds a rule; `remove` drops every rule on the destination in that scope;
    /// `preset` replaces the global rules.
    #[napi(ts_type = "'allow' | 'deny' | 'bypass' | 'remove' | 'preset'")]
    pub op: String,
    /// The destination (not for `preset`).
    pub destination: Option<String>,
    /// The preset (`preset` only).
    #[napi(ts_type = "'allow-all' | 'balanced' | 'deny-all'")]
    pub preset: Option<String>,
    /// The sandbox whose rules change (default: the global rules).
    pub sandbox: Option<String>,
}

fn change_of(i: usize, c: PolicyChange) -> std::result::Result<RuleChange, CoreError> {
    let arg = format!("changes[{i}]");
    let dest = |c: &PolicyChange| {
        c.destination.clone().ok_or_else(|| {
            CoreError::invalid(format!("{arg}.destination is required for {}", c.op))
                .with("argument", arg.clone())
        })
    };
    let action = match c.op.as_str() {
        "allow" => Action::Allow,
        "deny" => Action::Deny,
        "bypass" => Action::Bypass,
        "remove" => {
            return Ok(RuleChange::Remove {
                resource: dest(&c)?,
                sandbox: c.sandbox,
            })
        }
        "preset" => {
            let p = c.preset.as_deref().and_then(Preset::parse).ok_or_else(|| {
                CoreError::invalid(format!(
                    "{arg}.preset must be 'allow-all', 'balanced' or 'deny-all'"
                ))
                .with("argument", arg.clone())
            })?;
            return Ok(RuleChange::Preset(p));
        }
        other => {
            return Err(CoreError::invalid(format!(
                "{arg}.op must be allow, deny, bypass, remove or preset, got {}",
                crate::core::validate::shown(other)
            ))
            .with("argument", arg))
        }
    };
    Ok(RuleChange::Add {
        action,
        resource: dest(&c)?,
        sandbox: c.sandbox,
    })
}

/// What the proxy would do with a connection to a target, and why.
#[napi(object)]
pub struct PolicyCheck {
    /// Whether a connection would be let through.
    pub allowed: bool,
    /// The target as checked.
    pub target: String,
    /// The rule (or default-blocked range) that decided.
    pub rule: Option<String>,
    /// `'allowed-by-rule'`, `'denied-by-rule'`, `'default-blocked-range'`, `'no-matching-rule'` (or the daemon's
    /// own word).
    pub reason: String,
    /// One line saying what decided.
    pub message: String,
    /// Where the deciding rule lives: `'global'`, `'sandbox:<name>'`, `'default'`.
    pub scope: String,
    /// Allowed and tunnelled without TLS interception.
    pub bypass: bool,
}

impl From<netpolicy::PolicyCheck> for PolicyCheck {
    fn from(c: netpolicy::PolicyCheck) -> Self {
        PolicyCheck {
            allowed: c.allowed,
            target: c.target,
            rule: c.rule,
            reason: c.reason,
            message: c.message,
            scope: c.scope,
            bypass: c.bypass,
        }
    }
}

/// The proxy's decisions about one host, grouped by sandbox, proxy type, rule and reason.
#[napi(object)]
pub struct PolicyLogEntry {
    /// `host:port`.
    pub host: String,
    /// The sandbox the traffic came from.
    pub sandbox: Option<String>,
    /// Whether these requests were let through.
    pub allowed: bool,
    /// How they reached the proxy: `forward`, `connect`, `intercepted`, `forward-bypass`, `none` (nothing read).
    pub proxy_type: String,
    /// The rule that decided.
    pub rule: Option<String>,
    /// Why (`denied-by-rule`, `default-blocked-range`, …), when the daemon says.
    pub reason: Option<String>,
    /// How many requests (in a followed entry: how many since the previous one).
    pub count: f64,
    /// The first of them, as the daemon printed it.
    pub first_seen: String,
    /// The last of them, as the daemon printed it.
    pub last_seen: String,
    /// The first of them in Unix milliseconds, when the daemon gives it.
    pub first_seen_ms: Option<f64>,
    /// The last of them in Unix milliseconds, when the daemon gives it.
    pub last_seen_ms: Option<f64>,
}

impl From<netpolicy::PolicyLogEntry> for PolicyLogEntry {
    fn from(e: netpolicy::PolicyLogEntry) -> Self {
        PolicyLogEntry {
            host: e.host,
            sandbox: e.sandbox,
            allowed: e.allowed,
            proxy_type: e.proxy_type,
            rule: e.rule,
            reason: e.reason,
            count: e.count as f64,
            first_seen: e.first_seen,
            last_seen: e.last_seen,
            first_seen_ms: e.first_seen_ms.map(|v| v as f64),
            last_seen_ms: e.last_seen_ms.map(|v| v as f64),
        }
    }
}

/// A backend's network policy, globally (`sandboxes.policy`) or for one sandbox (`sandbox.policy`: its rules are
/// changed and its traffic checked and logged).
#[napi]
pub struct NetworkPolicy {
    backend: Arc<dyn SandboxBackend>,
    sandbox: Option<String>,
}

impl NetworkPolicy {
    pub(crate) fn new(backend: Arc<dyn SandboxBackend>, sandbox: Option<String>) -> NetworkPolicy {
        NetworkPolicy { backend, sandbox }
    }
}

fn list<T: From<U>, U>(v: Vec<U>) -> Vec<T> {
    v.into_iter().map(Into::into).collect()
}

#[napi]
impl NetworkPolicy {
    /// The sandbox this policy is scoped to, or `null` for the global one.
    #[napi(catch_unwind, getter)]
    pub fn sandbox(&self) -> Option<String> {
        self.sandbox.clone()
    }

    /// Every rule, global and per sandbox (a scoped policy: the global rules and its own).
    #[napi(catch_unwind)]
    pub fn rules(
        &self,
        env: Env,
        options: Option<CallOptions>,
    ) -> Result<Promise<Vec<PolicyRule>>> {
        let (b, sb) = (self.backend.clone(), self.sandbox.clone());
        run(&env, options.as_ref(), move |call| async move {
            let mut rules = b.policy_rules(&call).await?;
            if let Some(s) = sb {
                rules.retain(|r| r.sandbox.is_none() || r.sandbox.as_deref() == Some(&s));
            }
            Ok(list(rules))
        })
    }

    /// Applies changes (all checked before any is sent; a scoped policy fills in its sandbox); the rules after.
    #[napi(catch_unwind)]
    pub fn change(
        &self,
        env: Env,
        changes: Vec<PolicyChange>,
        options: Option<CallOptions>,
    ) -> Result<Promise<Vec<PolicyRule>>> {
        let (b, sb) = (self.backend.clone(), self.sandbox.clone());
        let parsed: std::result::Result<Vec<RuleChange>, CoreError> = changes
            .into_iter()
            .enumerate()
            .map(|(i, mut c)| {
                if c.sandbox.is_none() && c.op != "preset" {
                    c.sandbox = sb.clone();
                }
                change_of(i, c)
            })
            .collect();
        run(&env, options.as_ref(), move |call| async move {
            let changes = parsed?;
            let mut rules = b.policy_change(&changes, &call).await?;
            if let Some(s) = sb {
                rules.retain(|r| r.sandbox.is_none() || r.sandbox.as_deref() == Some(&s));
            }
            Ok(list(rules))
        })
    }

    /// Decides `target` as the proxy would (for this policy's sandbox, if any), sending it no traffic.
    #[napi(catch_unwind)]
    pub fn check(
        &self,
        env: Env,
        target: String,
        options: Option<CallOptions>,
    ) -> Result<Promise<PolicyCheck>> {
        let (b, sb) = (self.backend.clone(), self.sandbox.clone());
        run(&env, options.as_ref(), move |call| async move {
            Ok(b.policy_check(&target, sb.as_deref(), &call).await?.into())
        })
    }

    /// The decision log now (this policy's sandbox's rows, or all).
    #[napi(catch_unwind)]
    pub fn log(
        &self,
        env: Env,
        options: Option<CallOptions>,
    ) -> Result<Promise<Vec<PolicyLogEntry>>> {
        let (b, sb) = (self.backend.clone(), self.sandbox.clone());
        run(&env, options.as_ref(), move |call| async move {
            Ok(list(b.policy_log(sb.as_deref(), &call).await?))
        })
    }

    /// A follower of the decision log: each `next()` resolves with the decisions made since the previous one.
    #[napi(catch_unwind)]
    pub fn follow(&self, interval_ms: Option<f64>) -> PolicyLogFollow {
        let interval = interval_ms
            .filter(|v| v.is_finite() && *v > 0.0)
            .map(|v| Duration::from_millis(v as u64));
        PolicyLogFollow {
            inner: Arc::new(tokio::sync::Mutex::new(LogFollower::new(
                self.backend.clone(),
                self.sandbox.clone(),
                interval,
            ))),
        }
    }
}

/// Follows the decision log (see `NetworkPolicy.follow`).
#[napi]
pub struct PolicyLogFollow {
    inner: Arc<tokio::sync::Mutex<LogFollower>>,
}

#[napi]
impl PolicyLogFollow {
    /// Waits until the log has new decisions and resolves with them (never empty); `signal`/`timeoutMs` bound the
    /// wait.
    #[napi(catch_unwind)]
    pub fn next(
        &self,
        env: Env,
        options: Option<CallOptions>,
    ) -> Result<Promise<Vec<PolicyLogEntry>>> {
        let f = self.inner.clone();
        run(&env, options.as_ref(), move |call| async move {
            Ok(list(f.lock().await.next(&call).await?))
        })
    }
}

/// A credential for a sandbox (`create({ secrets })`, `sandbox.setSecrets()`): inside, `env` holds only a
/// placeholder; the proxy writes `value` into `header` of HTTPS requests to `hosts` and nowhere else.
#[napi(object, object_to_js = false)]
pub struct SecretInput {
    /// The environment variable that holds the placeholder inside the sandbox.
    pub env: String,
    /// The real credential (never logged, never in an error, never written inside the sandbox).
    pub value: String,
    /// The exact hosts it is sent to (1 to 10; no wildcards).
    pub hosts: Vec<String>,
    /// The header it goes into (default `authorization`).
    pub header: Option<String>,
    /// How the header is written: `%s` is the value (default `%s`; e.g. `Bearer %s`).
    pub format: Option<String>,
    /// `true`: the placeholder is `proxy-managed` and the proxy writes the whole header as `format`.
    pub managed: Option<bool>,
}

/// What the sandbox sees of a secret.
#[napi(object)]
pub struct SecretPlaceholder {
    /// The environment variable.
    pub env: String,
    /// Its value inside the sandbox: `sbx-cs-…` or `proxy-managed`.
    pub placeholder: String,
    /// The hosts the real value goes to.
    pub hosts: Vec<String>,
    /// The header it goes into.
    pub header: String,
}

impl From<netpolicy::SecretPlaceholder> for SecretPlaceholder {
    fn from(p: netpolicy::SecretPlaceholder) -> Self {
        SecretPlaceholder {
            env: p.env,
            placeholder: p.placeholder,
            hosts: p.hosts,
            header: p.header,
        }
    }
}

/// The core's secrets from the JS objects (moved: the values are not copied).
pub(crate) fn secrets_of(list: Option<Vec<SecretInput>>) -> Vec<netpolicy::SecretSpec> {
    list.unwrap_or_default()
        .into_iter()
        .map(|s| netpolicy::SecretSpec {
            env: s.env,
            value: s.value,
            hosts: s.hosts,
            header: s.header,
            format: s.format,
            managed: s.managed.unwrap_or(false),
        })
        .collect()
}

/// Replaces `name`'s secrets on `backend` (the binding of `Sandbox.setSecrets`).
pub(crate) fn set_secrets_on(
    env: &Env,
    backend: Arc<dyn SandboxBackend>,
    name: String,
    secrets: Vec<SecretInput>,
    options: Option<CallOptions>,
) -> Result<Promise<Vec<SecretPlaceholder>>> {
    let secrets = secrets_of(Some(secrets));
    run(env, options.as_ref(), move |call| async move {
        Ok(list(backend.set_secrets(&name, &secrets, &call).await?))
    })
}
