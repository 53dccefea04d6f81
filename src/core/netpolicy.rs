//! The SDK's network policy surface, the same on every backend that has one: rules (read, allow, deny, bypass,
//! remove, presets), a check that sends no traffic, and the proxy's decision log as a snapshot or followed.
//! Backends implement [`crate::core::backend::SandboxBackend`]'s `policy_*` methods; [`LogFollower`] turns any
//! backend's log snapshots into a stream of new decisions.

use crate::core::backend::SandboxBackend;
use crate::core::call::Call;
use crate::core::error::{Error, Result};
use crate::core::policy;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// One rule as the daemon lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRule {
    /// `allow`, `deny` or `bypass`.
    pub action: String,
    /// The destination (`host`, `host:port`, `*.domain`, `*`, `*:443`, a CIDR), as the daemon prints it.
    pub resource: String,
    /// `global` or `sandbox:<name>`.
    pub scope: String,
    /// The sandbox of a sandbox rule.
    pub sandbox: Option<String>,
}

/// A change to the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleChange {
    /// Add an `allow`, `deny` or `bypass` rule, globally or for one sandbox.
    Add {
        action: policy::Action,
        resource: String,
        sandbox: Option<String>,
    },
    /// Remove every rule (of any action) on this destination in that scope.
    Remove {
        resource: String,
        sandbox: Option<String>,
    },
    /// Replace the global rules with a preset.
    Preset(policy::Preset),
}

impl RuleChange {
    /// Checks the destination's form before anything is sent (the same parser the proxy uses).
    pub fn validate(&self, index: usize) -> Result<()> {
        let resource = match self {
            RuleChange::Add { resource, .. } | RuleChange::Remove { resource, .. } => resource,
            RuleChange::Preset(_) => return Ok(()),
        };
        policy::Destination::parse(resource)
            .map(|_| ())
            .map_err(|e| {
                Error::invalid(format!(
                    "{} is not a destination: {e}",
                    crate::core::validate::shown(resource)
                ))
                .with("argument", format!("rules[{index}]"))
            })
    }
}

/// The answer of a check: what the proxy would do with a connection, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyCheck {
    /// Whether a connection would be let through.
    pub allowed: bool,
    /// The target as checked.
    pub target: String,
    /// The rule (or default-blocked range) that decided.
    pub rule: Option<String>,
    /// A stable reason: `allowed-by-rule`, `denied-by-rule`, `default-blocked-range`, `no-matching-rule` (or the
    /// daemon's own word).
    pub reason: String,
    /// One line saying what decided.
    pub message: String,
    /// Where the deciding rule lives: `global`, `sandbox:<name>`, `default`.
    pub scope: String,
    /// Allowed, tunnelled without TLS interception.
    pub bypass: bool,
}

/// One row of the decision log: the decisions about one host, grouped by sandbox, proxy type, rule and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyLogEntry {
    /// `host:port` (or the host the daemon printed).
    pub host: String,
    /// The sandbox the traffic came from (`None`: not known).
    pub sandbox: Option<String>,
    /// Whether these requests were let through.
    pub allowed: bool,
    /// How they reached the proxy: `forward`, `connect`, `intercepted`, `forward-bypass`, `none` (no request read).
    pub proxy_type: String,
    /// The rule that decided.
    pub rule: Option<String>,
    /// Why (`denied-by-rule`, `default-blocked-range`, …; `None` when the daemon does not say).
    pub reason: Option<String>,
    /// How many requests.
    pub count: u64,
    /// The first of them, as the daemon printed it.
    pub first_seen: String,
    /// The last of them, as the daemon printed it.
    pub last_seen: String,
    /// The first of them in Unix milliseconds, when the daemon gives it.
    pub first_seen_ms: Option<u64>,
    /// The last of them in Unix milliseconds, when the daemon gives it.
    pub last_seen_ms: Option<u64>,
}

/// What groups log rows: host, sandbox, allowed, proxy type, rule, reason.
type LogKey = (
    String,
    Option<String>,
    bool,
    String,
    Option<String>,
    Option<String>,
);

impl PolicyLogEntry {
    fn key(
        &self,
    ) -> (
        String,
        Option<String>,
        bool,
        String,
        Option<String>,
        Option<String>,
    ) {
        (
            self.host.clone(),
            self.sandbox.clone(),
            self.allowed,
            self.proxy_type.clone(),
            self.rule.clone(),
            self.reason.clone(),
        )
    }
}

/// How often [`LogFollower`] asks for the log by default.
pub const FOLLOW_INTERVAL: Duration = Duration::from_millis(250);

/// Follows a backend's decision log: each [`LogFollower::next`] waits until rows are new or have grown since the
/// last look and returns them with `count` set to the requests added since (the log routes are snapshots, so this
/// is polling, at `interval`). The first look is the baseline: only decisions after it are returned.
pub struct LogFollower {
    backend: Arc<dyn SandboxBackend>,
    sandbox: Option<String>,
    interval: Duration,
    seen: Option<HashMap<LogKey, u64>>,
}

impl LogFollower {
    /// A follower of `sandbox`'s rows (all rows with `None`).
    pub fn new(
        backend: Arc<dyn SandboxBackend>,
        sandbox: Option<String>,
        interval: Option<Duration>,
    ) -> LogFollower {
        LogFollower {
            backend,
            sandbox,
            interval: interval
                .unwrap_or(FOLLOW_INTERVAL)
                .max(Duration::from_millis(10)),
            seen: None,
        }
    }

    async fn look(&self, call: &Call) -> Result<Vec<PolicyLogEntry>> {
        self.backend.policy_log(self.sandbox.as_deref(), call).await
    }

    /// The rows added or grown since the last call (waiting for at least one), or the call's timeout/abort.
    pub async fn next(&mut self, call: &Call) -> Result<Vec<PolicyLogEntry>> {
        let work = async {
            if self.seen.is_none() {
                let base = self.look(&Call::new(None, call.cancel.clone())).await?;
                self.seen = Some(base.iter().map(|r| (r.key(), r.count)).collect());
            }
            loop {
                let rows = self.look(&Call::new(None, call.cancel.clone())).await?;
                let seen = self.seen.get_or_insert_with(HashMap::new);
                let mut fresh = Vec::new();
                for mut r in rows {
                    let before = seen.get(&r.key()).copied().unwrap_or(0);
                    if r.count > before {
                        seen.insert(r.key(), r.count);
                        r.count -= before;
                        fresh.push(r);
                    } else if r.count < before {
                        // The daemon's window moved (its log is bounded): start counting again.
                        seen.insert(r.key(), r.count);
                    }
                }
                if !fresh.is_empty() {
                    fresh.sort_by_key(|r| r.last_seen_ms.unwrap_or(0));
                    return Ok(fresh);
                }
                tokio::time::sleep(self.interval).await;
            }
        };
        crate::core::call::bounded("policy.follow", call.timeout, &call.cancel, work).await
    }
}

/// A credential for a sandbox: the sandbox sees only a placeholder in `env`; the proxy writes the value into
/// `header` of intercepted HTTPS requests to `hosts` (exact names) and nowhere else. `Debug` hides the value.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretSpec {
    /// The environment variable that holds the placeholder inside the sandbox.
    pub env: String,
    /// The real credential (sent to the daemon only; never logged, never in an error).
    pub value: String,
    /// The exact hosts it is sent to (1 to [`MAX_SECRET_HOSTS`]).
    pub hosts: Vec<String>,
    /// The header it goes into (default `authorization`).
    pub header: Option<String>,
    /// How the header is written: `%s` is the value (default `%s`; `Bearer %s` for a bare token).
    pub format: Option<String>,
    /// `true`: the placeholder is `proxy-managed` and the proxy writes the whole header; `false`: an
    /// `sbx-cs-…` placeholder replaced wherever it occurs in the header.
    pub managed: bool,
}

impl std::fmt::Debug for SecretSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretSpec")
            .field("env", &self.env)
            .field("value", &"<redacted>")
            .field("hosts", &self.hosts)
            .field("header", &self.header)
            .field("format", &self.format)
            .field("managed", &self.managed)
            .finish()
    }
}

/// What the sandbox sees of a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// At most this many hosts per secret (as the cloud API's injection rules).
pub const MAX_SECRET_HOSTS: usize = 10;

/// Checks one secret's fields; the message names the entry and its variable, never the value. Shared by the
/// client (before anything is sent) and LocalSandboxd (on what it receives).
pub fn check_secret(
    what: &str,
    env: &str,
    value: &str,
    hosts: &[String],
    header: &str,
    format: &str,
) -> std::result::Result<(), String> {
    let mut c = env.chars();
    let env_ok = matches!(c.next(), Some(f) if f == '_' || f.is_ascii_alphabetic())
        && c.all(|x| x == '_' || x.is_ascii_alphanumeric());
    if !env_ok {
        return Err(format!("{what}: env must be an environment variable name"));
    }
    if value.is_empty() || value.contains(['\r', '\n', '\0']) {
        return Err(format!(
            "{what} ({env}): value must be a non-empty string without CR, LF or NUL (it goes into a header)"
        ));
    }
    if hosts.is_empty() || hosts.len() > MAX_SECRET_HOSTS {
        return Err(format!(
            "{what} ({env}): hosts must list 1 to {MAX_SECRET_HOSTS} host names"
        ));
    }
    for h in hosts {
        if h.contains('*') || policy::parse_host(h).is_err() {
            return Err(format!(
                "{what} ({env}): host {h:?} is not an exact host name"
            ));
        }
    }
    if hyper::header::HeaderName::from_bytes(header.as_bytes()).is_err() {
        return Err(format!(
            "{what} ({env}): header {header:?} is not a header name"
        ));
    }
    if !format.contains("%s") || format.contains(['\r', '\n', '\0']) {
        return Err(format!(
            "{what} ({env}): format must contain %s and no line breaks"
        ));
    }
    Ok(())
}

impl SecretSpec {
    /// The header, lower-cased (default `authorization`).
    pub fn header_name(&self) -> String {
        self.header
            .as_deref()
            .unwrap_or("authorization")
            .to_ascii_lowercase()
    }

    /// Checks the fields before anything is sent (`ERR_INVALID_ARGUMENT` naming `secrets[i]`).
    pub fn validate(&self, index: usize) -> Result<()> {
        let what = format!("secrets[{index}]");
        let format = self.format.as_deref().unwrap_or("%s");
        check_secret(
            &what,
            &self.env,
            &self.value,
            &self.hosts,
            &self.header_name(),
            format,
        )
        .map_err(|m| Error::invalid(m).with("argument", what))
    }
}

/// Creates a sandbox with `secrets` (each checked first); nothing is left half made when a part fails (see
/// [`SandboxBackend::create_with_secrets`]).
pub async fn create_with_secrets(
    backend: &dyn SandboxBackend,
    spec: &crate::core::backend::SandboxSpec,
    secrets: &[SecretSpec],
    call: &Call,
) -> Result<crate::core::backend::SandboxSummary> {
    for (i, s) in secrets.iter().enumerate() {
        s.validate(i)?;
    }
    backend.create_with_secrets(spec, secrets, call).await
}
