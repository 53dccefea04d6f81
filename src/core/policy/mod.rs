//! The network policy engine: allow / deny / bypass rules, global and per sandbox, presets, the default-blocked
//! address ranges, and decisions that send no traffic. Hand-written: no maintained crate implements these
//! matching rules (seed 003, `sandboxd-api.md` "Network policy"); `ipnet` does the address arithmetic.
//!
//! How a destination is decided (every step over the global rules and the sandbox's own):
//! 1. a **deny** rule that matches the name (or, for an IP literal, the address) blocks;
//! 2. a **deny** rule that matches any address the name resolved to blocks;
//! 3. an address in a **default-blocked range** ([`DEFAULT_BLOCKED`]) blocks, unless an **allow** rule names an
//!    address range inside that range (prefix at least as long) that contains it, e.g. `allow 10.1.2.3:22`;
//!    `allow *`, `allow 0.0.0.0/0` or an allowed *name* never lift it, so DNS that points an allowed name at
//!    loopback or the metadata address is still blocked;
//! 4. an **allow** rule that matches the name, or allow rules that match every resolved address, allow;
//! 5. nothing else is allowed (`deny-all` is the empty rule set; `allow-all` is the rule `allow *`).
//!
//! Deny wins over allow whatever the scope: a global deny beats a sandbox allow and vice versa. Names and
//! addresses are normalised first ([`target`]). The proxy decides with the addresses it resolved and connects to
//! the address that was checked; [`Policy::check`] decides on the name alone (no DNS) and says so
//! (`addresses_checked: false`).

pub mod rule;
pub mod target;

#[cfg(test)]
mod tests;

pub use rule::{Destination, Pattern, RuleError};
pub use target::{canonical_ip, parse_host, parse_target, Host, Target, TargetError};

use ipnet::IpNet;
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

/// What a rule does with the destinations it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Let traffic through.
    Allow,
    /// Block traffic (wins over any allow).
    Deny,
    /// Tunnel HTTPS without interception (certificate pinning); does not allow anything by itself.
    Bypass,
}

impl Action {
    /// `allow` / `deny` / `bypass`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
            Action::Bypass => "bypass",
        }
    }
}

/// Where a rule lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Applies to every sandbox.
    Global,
    /// Applies to one sandbox (by id).
    Sandbox(String),
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Global => f.write_str("global"),
            Scope::Sandbox(id) => write!(f, "sandbox:{id}"),
        }
    }
}

/// The starting rule sets of `sbx policy init allow-all|balanced|deny-all`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// `allow *`: everything but the default-blocked ranges.
    AllowAll,
    /// Deny by default, with [`BALANCED_ALLOW`] allowed.
    Balanced,
    /// No rules: everything is blocked until allowed.
    DenyAll,
}

impl Preset {
    /// Parses `allow-all` / `balanced` / `deny-all`.
    pub fn parse(s: &str) -> Option<Preset> {
        match s {
            "allow-all" => Some(Preset::AllowAll),
            "balanced" => Some(Preset::Balanced),
            "deny-all" => Some(Preset::DenyAll),
            _ => None,
        }
    }

    /// The preset's allow rules.
    pub fn allow_rules(self) -> &'static [&'static str] {
        match self {
            Preset::AllowAll => &["*"],
            Preset::Balanced => BALANCED_ALLOW,
            Preset::DenyAll => &[],
        }
    }
}

/// The `balanced` preset's allow list. The products describe it only as "AI provider APIs, package managers, code
/// hosts, container registries and common cloud services" without publishing the list; this one is ours: the
/// hosts those tools need, and no broad cloud storage domain (`*.amazonaws.com` would be an exfiltration channel).
pub const BALANCED_ALLOW: &[&str] = &[
    // AI provider APIs
    "*.anthropic.com",
    "platform.claude.com",
    "api.openai.com",
    "generativelanguage.googleapis.com",
    "api.mistral.ai",
    "openrouter.ai",
    // package managers
    "registry.npmjs.org",
    "*.npmjs.org",
    "registry.yarnpkg.com",
    "pypi.org",
    "files.pythonhosted.org",
    "crates.io",
    "static.crates.io",
    "index.crates.io",
    "proxy.golang.org",
    "sum.golang.org",
    "rubygems.org",
    "repo.maven.apache.org",
    "deb.debian.org",
    "security.debian.org",
    "archive.ubuntu.com",
    "security.ubuntu.com",
    "dl-cdn.alpinelinux.org",
    // code hosts
    "github.com",
    "*.github.com",
    "*.githubusercontent.com",
    "gitlab.com",
    "bitbucket.org",
    // container registries
    "registry-1.docker.io",
    "auth.docker.io",
    "production.cloudflare.docker.com",
    "ghcr.io",
    "quay.io",
    "mcr.microsoft.com",
];

/// Address ranges blocked unless an allow rule names them: the documented list (RFC 1918, loopback, link-local,
/// `::1`, `fc00::/7`, `fe80::/10`) plus "this host" (`0.0.0.0/8`, `::`), which Linux connects to the local
/// machine. IPv4-mapped IPv6 (`::ffff:127.0.0.1`) is matched as the IPv4 address it maps.
pub const DEFAULT_BLOCKED: &[&str] = &[
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "0.0.0.0/8",
    "::1/128",
    "::/128",
    "fc00::/7",
    "fe80::/10",
];

/// Why a decision came out as it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// An allow rule matched (and nothing blocked).
    AllowedByRule,
    /// A deny rule matched.
    DeniedByRule,
    /// An address is in a default-blocked range no allow rule lifts.
    DefaultBlockedRange,
    /// No allow rule matched.
    NoMatchingRule,
}

impl Reason {
    /// Stable kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::AllowedByRule => "allowed-by-rule",
            Reason::DeniedByRule => "denied-by-rule",
            Reason::DefaultBlockedRange => "default-blocked-range",
            Reason::NoMatchingRule => "no-matching-rule",
        }
    }
}

/// The answer for one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the connection may be made.
    pub allowed: bool,
    /// The canonical text of the rule (or default-blocked range) that decided; `None` when nothing matched.
    pub rule: Option<String>,
    /// Why.
    pub reason: Reason,
    /// Where the deciding rule lives: `global`, `sandbox:<id>`, or `default` (default ranges, no match).
    pub scope: String,
    /// The address that decided, when an address rule or range did.
    pub address: Option<IpAddr>,
    /// An allowed destination that a bypass rule says to tunnel without interception.
    pub bypass: bool,
    /// Whether resolved addresses were part of the decision (false for a name checked without DNS).
    pub addresses_checked: bool,
}

impl Decision {
    /// One line for logs and 403 bodies.
    pub fn message(&self, target: &Target) -> String {
        let rule = self.rule.as_deref().unwrap_or("");
        let addr = self.address.map(|a| format!(" ({a})")).unwrap_or_default();
        match self.reason {
            Reason::AllowedByRule => {
                format!("{target}{addr} allowed by {} rule {rule}", self.scope)
            }
            Reason::DeniedByRule => {
                format!("{target}{addr} blocked by {} deny rule {rule}", self.scope)
            }
            Reason::DefaultBlockedRange => {
                format!("{target}{addr} is in the default-blocked range {rule}")
            }
            Reason::NoMatchingRule => format!("{target} matches no allow rule"),
        }
    }
}

/// One rule as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleEntry {
    /// Global or one sandbox's.
    pub scope: Scope,
    /// Allow, deny or bypass.
    pub action: Action,
    /// The parsed destination (`to_string()` is the canonical rule text).
    pub destination: Destination,
}

/// Rules of one action, indexed: exact names and `*.domain` suffixes by hash, address ranges by prefix length
/// (longest first) and then by network address, catch-alls in a list. A lookup costs a few hash probes whatever
/// the number of rules.
#[derive(Debug, Clone, Default)]
struct Index {
    any: Vec<Destination>,
    exact: HashMap<String, Vec<Destination>>,
    subdomains: HashMap<String, Vec<Destination>>,
    nets: Vec<NetGroup>,
}

/// The ranges of one family and prefix length, by network address.
#[derive(Debug, Clone)]
struct NetGroup {
    v6: bool,
    prefix: u8,
    by_network: HashMap<IpAddr, Vec<Destination>>,
}

/// `ip`'s network at `prefix` bits, if `ip` is of the family.
fn network_of(ip: IpAddr, v6: bool, prefix: u8) -> Option<IpAddr> {
    match (ip, v6) {
        (IpAddr::V4(a), false) => ipnet::Ipv4Net::new(a, prefix)
            .ok()
            .map(|n| IpAddr::V4(n.network())),
        (IpAddr::V6(a), true) => ipnet::Ipv6Net::new(a, prefix)
            .ok()
            .map(|n| IpAddr::V6(n.network())),
        _ => None,
    }
}

impl Index {
    fn insert(&mut self, d: &Destination) {
        match &d.pattern {
            Pattern::Any => self.any.push(d.clone()),
            Pattern::Exact(h) => self.exact.entry(h.clone()).or_default().push(d.clone()),
            Pattern::Subdomains(s) => self
                .subdomains
                .entry(s.clone())
                .or_default()
                .push(d.clone()),
            Pattern::Net(n) => {
                let (v6, prefix) = (matches!(n, IpNet::V6(_)), n.prefix_len());
                let i = match self
                    .nets
                    .iter()
                    .position(|g| g.v6 == v6 && g.prefix == prefix)
                {
                    Some(i) => i,
                    None => {
                        self.nets.push(NetGroup {
                            v6,
                            prefix,
                            by_network: HashMap::new(),
                        });
                        self.nets.sort_by_key(|g| std::cmp::Reverse(g.prefix));
                        self.nets
                            .iter()
                            .position(|g| g.v6 == v6 && g.prefix == prefix)
                            .unwrap_or(0)
                    }
                };
                self.nets[i]
                    .by_network
                    .entry(n.network())
                    .or_default()
                    .push(d.clone());
            }
        }
    }

    /// The most specific rule matching a name: exact, then the longest `*.domain`, then `*`.
    fn match_name(&self, name: &str, port: u16) -> Option<&Destination> {
        fn hit(v: Option<&Vec<Destination>>, port: u16) -> Option<&Destination> {
            v.and_then(|v| v.iter().find(|d| d.port.is_none_or(|p| p == port)))
        }
        if let Some(d) = hit(self.exact.get(name), port) {
            return Some(d);
        }
        if !self.subdomains.is_empty() {
            let mut rest = name;
            while let Some(i) = rest.find('.') {
                rest = &rest[i + 1..];
                if let Some(d) = hit(self.subdomains.get(rest), port) {
                    return Some(d);
                }
            }
        }
        self.any.iter().find(|d| d.matches_name(name, port))
    }

    /// The most specific range rule containing an address on `port`, among ranges of at least `min_prefix` bits.
    fn match_net(&self, ip: IpAddr, port: u16, min_prefix: u8) -> Option<&Destination> {
        self.nets
            .iter()
            .filter(|g| g.prefix >= min_prefix)
            .find_map(|g| {
                let net = network_of(ip, g.v6, g.prefix)?;
                g.by_network
                    .get(&net)?
                    .iter()
                    .find(|d| d.port.is_none_or(|p| p == port))
            })
    }

    /// A rule matching an address: a range containing it, then `*`.
    fn match_addr(&self, ip: IpAddr, port: u16) -> Option<&Destination> {
        self.match_net(ip, port, 0)
            .or_else(|| self.any.iter().find(|d| d.matches_addr(ip, port)))
    }

    /// An address range at least as specific as `within` (a default-blocked range) containing `ip`.
    fn lifts(&self, ip: IpAddr, port: u16, within: &IpNet) -> Option<&Destination> {
        self.match_net(ip, port, within.prefix_len())
    }
}

/// The rules of one scope.
#[derive(Debug, Clone, Default)]
struct RuleSet {
    entries: Vec<(Action, Destination)>,
    allow: Index,
    deny: Index,
    bypass: Index,
}

impl RuleSet {
    fn index(&mut self, action: Action) -> &mut Index {
        match action {
            Action::Allow => &mut self.allow,
            Action::Deny => &mut self.deny,
            Action::Bypass => &mut self.bypass,
        }
    }

    fn add(&mut self, action: Action, d: Destination) -> bool {
        if self.entries.iter().any(|(a, e)| *a == action && *e == d) {
            return false;
        }
        self.index(action).insert(&d);
        self.entries.push((action, d));
        true
    }

    fn remove(&mut self, action: Action, d: &Destination) -> bool {
        let before = self.entries.len();
        self.entries.retain(|(a, e)| !(*a == action && e == d));
        if self.entries.len() == before {
            return false;
        }
        *self.index(action) = Index::default();
        let entries = std::mem::take(&mut self.entries);
        for (a, e) in entries.iter().filter(|(a, _)| *a == action) {
            self.index(*a).insert(e);
        }
        self.entries = entries;
        true
    }
}

#[derive(Debug, Clone, Default)]
struct State {
    global: RuleSet,
    sandboxes: HashMap<String, RuleSet>,
}

/// The policy store: rules of every scope, read lock-free by decisions (a snapshot `Arc`), replaced on each change,
/// so a change applies to the next decision and never to one under way.
#[derive(Debug)]
pub struct Policy {
    state: RwLock<Arc<State>>,
    blocked: Vec<IpNet>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy::new(Preset::AllowAll)
    }
}

impl Policy {
    /// A store holding `preset`'s global rules.
    pub fn new(preset: Preset) -> Policy {
        let p = Policy {
            state: RwLock::new(Arc::new(State::default())),
            blocked: DEFAULT_BLOCKED
                .iter()
                .map(|s| s.parse().expect("default range"))
                .collect(),
        };
        p.reset(preset);
        p
    }

    fn snapshot(&self) -> Arc<State> {
        self.state.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn update<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut guard = self.state.write().unwrap_or_else(|e| e.into_inner());
        let mut next = (**guard).clone();
        let r = f(&mut next);
        *guard = Arc::new(next);
        r
    }

    /// Replaces the global rules with `preset`'s (sandbox rules are kept).
    pub fn reset(&self, preset: Preset) {
        let mut set = RuleSet::default();
        for r in preset.allow_rules() {
            set.add(Action::Allow, Destination::parse(r).expect("preset rule"));
        }
        self.update(|s| s.global = set);
    }

    /// Adds a rule; `Ok(false)` when the same rule was already there.
    pub fn add(&self, scope: &Scope, action: Action, rule: &str) -> Result<bool, RuleError> {
        let d = Destination::parse(rule)?;
        Ok(self.update(|s| match scope {
            Scope::Global => s.global.add(action, d),
            Scope::Sandbox(id) => s.sandboxes.entry(id.clone()).or_default().add(action, d),
        }))
    }

    /// Removes a rule; `Ok(false)` when there was no such rule.
    pub fn remove(&self, scope: &Scope, action: Action, rule: &str) -> Result<bool, RuleError> {
        let d = Destination::parse(rule)?;
        Ok(self.update(|s| match scope {
            Scope::Global => s.global.remove(action, &d),
            Scope::Sandbox(id) => {
                let removed = s
                    .sandboxes
                    .get_mut(id)
                    .is_some_and(|r| r.remove(action, &d));
                if s.sandboxes.get(id).is_some_and(|r| r.entries.is_empty()) {
                    s.sandboxes.remove(id);
                }
                removed
            }
        }))
    }

    /// Drops every rule of one sandbox (on its removal); returns how many there were.
    pub fn drop_sandbox(&self, id: &str) -> usize {
        self.update(|s| s.sandboxes.remove(id).map_or(0, |r| r.entries.len()))
    }

    /// Every rule, global first, then sandboxes by id, each in the order added.
    pub fn rules(&self) -> Vec<RuleEntry> {
        let st = self.snapshot();
        let mut ids: Vec<&String> = st.sandboxes.keys().collect();
        ids.sort();
        let scoped = std::iter::once((Scope::Global, &st.global)).chain(
            ids.into_iter()
                .map(|id| (Scope::Sandbox(id.clone()), &st.sandboxes[id])),
        );
        scoped
            .flat_map(|(scope, set)| {
                set.entries.iter().map(move |(action, d)| RuleEntry {
                    scope: scope.clone(),
                    action: *action,
                    destination: d.clone(),
                })
            })
            .collect()
    }

    /// Whether an allow rule on addresses (a range, or `*`) exists for this sandbox: if not, a name that no name
    /// rule allows cannot be allowed by what it resolves to, and the proxy refuses it without a lookup.
    pub fn allows_by_address(&self, sandbox: Option<&str>) -> bool {
        let st = self.snapshot();
        let has = |s: &RuleSet| !s.allow.nets.is_empty() || !s.allow.any.is_empty();
        has(&st.global) || sandbox.and_then(|id| st.sandboxes.get(id)).is_some_and(has)
    }

    /// Decides a `host[:port]` target (port 443 when none is given) for a sandbox (or none) without any DNS:
    /// a name is decided by the name rules only (`addresses_checked: false`).
    pub fn check(&self, sandbox: Option<&str>, target: &str) -> Result<Decision, TargetError> {
        let t = parse_target(target, 443)?;
        Ok(self.decide(sandbox, &t, None))
    }

    /// Decides a normalised target. `addrs` are the addresses a name resolved to (the proxy passes what it will
    /// connect to; every one must pass); `None` decides a name on its rules alone. An IP target is its own address.
    pub fn decide(
        &self,
        sandbox: Option<&str>,
        target: &Target,
        addrs: Option<&[IpAddr]>,
    ) -> Decision {
        let st = self.snapshot();
        let own = sandbox.and_then(|id| st.sandboxes.get(id).map(|r| (id, r)));
        // (sandbox id or None for global, rules); scope names are made only for the answer.
        let mut all: [(Option<&str>, &RuleSet); 2] = [(None, &st.global), (None, &st.global)];
        let n = match own {
            Some((id, r)) => {
                all[1] = (Some(id), r);
                2
            }
            None => 1,
        };
        let layers = &all[..n];
        let scope_name = |id: &Option<&str>| match id {
            Some(id) => format!("sandbox:{id}"),
            None => "global".to_string(),
        };
        let port = target.port;
        let (name, addrs, checked): (Option<&str>, Vec<IpAddr>, bool) = match &target.host {
            Host::Ip(ip) => (None, vec![canonical_ip(*ip)], true),
            Host::Name(n) => (
                Some(n.as_str()),
                addrs
                    .unwrap_or(&[])
                    .iter()
                    .map(|a| canonical_ip(*a))
                    .collect(),
                addrs.is_some(),
            ),
        };
        let decision = |allowed, rule: Option<String>, reason, scope: String, address| Decision {
            allowed,
            rule,
            reason,
            scope,
            address,
            bypass: false,
            addresses_checked: checked,
        };
        // 1 and 2: deny rules, on the name and on every address.
        for (scope, set) in layers {
            if let Some(n) = name {
                if let Some(d) = set.deny.match_name(n, port) {
                    let rule = Some(d.to_string());
                    return decision(false, rule, Reason::DeniedByRule, scope_name(scope), None);
                }
            }
            for &a in &addrs {
                if let Some(d) = set.deny.match_addr(a, port) {
                    let rule = Some(d.to_string());
                    return decision(
                        false,
                        rule,
                        Reason::DeniedByRule,
                        scope_name(scope),
                        Some(a),
                    );
                }
            }
        }
        // 3: default-blocked ranges, lifted only by an allow range inside them.
        for &a in &addrs {
            if let Some(range) = self.blocked.iter().find(|r| r.contains(&a)) {
                let lifted = layers
                    .iter()
                    .any(|(_, s)| s.allow.lifts(a, port, range).is_some());
                if !lifted {
                    let rule = Some(range.to_string());
                    let scope = "default".to_string();
                    return decision(false, rule, Reason::DefaultBlockedRange, scope, Some(a));
                }
            }
        }
        // 4: allow rules, on the name or on every address.
        let mut allowed: Option<(&Destination, &Option<&str>, Option<IpAddr>)> = None;
        if let Some(n) = name {
            allowed = layers
                .iter()
                .find_map(|(scope, s)| s.allow.match_name(n, port).map(|d| (d, scope, None)));
        }
        if allowed.is_none() && !addrs.is_empty() {
            let mut first = None;
            let all = addrs.iter().all(|&a| {
                let hit = layers.iter().find_map(|(scope, s)| {
                    s.allow.match_addr(a, port).map(|d| (d, scope, Some(a)))
                });
                first = first.or(hit);
                hit.is_some()
            });
            if all {
                allowed = first;
            }
        }
        let Some((rule, scope, address)) = allowed else {
            let scope = "default".to_string();
            return decision(false, None, Reason::NoMatchingRule, scope, None);
        };
        let (rule, scope) = (rule.to_string(), scope_name(scope));
        let bypass = layers.iter().any(|(_, s)| {
            name.is_some_and(|n| s.bypass.match_name(n, port).is_some())
                || addrs
                    .iter()
                    .any(|&a| s.bypass.match_addr(a, port).is_some())
        });
        Decision {
            bypass,
            ..decision(true, Some(rule), Reason::AllowedByRule, scope, address)
        }
    }
}
