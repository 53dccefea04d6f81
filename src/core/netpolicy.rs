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
