//! v1 network policy read-back and policy logs over LocalSandboxd's proxy (`getNetworkPolicies`,
//! `listPolicyLogEntries` and their owner-scope forms).
//!
//! - The effective policy is the proxy's rules for the sandbox: global rules are layer `owner`, the sandbox's own
//!   `attached`, the default-blocked ranges `default`; mode `allowAll` when an `allow *` (every port) holds and no
//!   `deny *`, else `denyAll`. Bypass rules are allow rules here (they only skip interception).
//! - `exact` is the same rules as a node graph: `all(any(allow…), not(any(deny…)))`, each destination node
//!   sourced from its rule; `revision` is a hash of the rule set. An allow range inside a default-blocked range
//!   lifting it (policy step 3) is not expressed in the graph.
//! - Log entries are the proxy's decisions grouped per resource, sandbox, proxy type, decision, rule and reason
//!   (`count`, `firstSeen`, `lastSeen`), newest first; `filter` takes `decision`, `domain`, `resource`,
//!   `proxy_type`, `rule`; `since`/`until` (RFC 3339) bound `lastSeen`/`firstSeen`.

use super::{error, not_found, Answer, DEFAULT_PAGE, MAX_PAGE};
use crate::core::local::proxy::ProxyType;
use crate::core::local::Inner;
use crate::core::policy::{Action, Pattern, RuleEntry, Scope, DEFAULT_BLOCKED};
use hyper::StatusCode;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};

/// Operands per `all`/`any` node, and nodes per graph (the contract's limits).
const MAX_OPERANDS: usize = 64;
const MAX_NODES: usize = 256;

/// A rule as the v1 read-back shows it: destination text, port, layer / origin.
struct Shown {
    text: String,
    pattern: Option<Pattern>,
    port: Option<u16>,
    layer: &'static str,
    origin: &'static str,
}

fn shown(r: &RuleEntry) -> Shown {
    let (layer, origin) = match r.scope {
        Scope::Global => ("owner", "owner"),
        Scope::Sandbox(_) => ("attached", "attached"),
    };
    Shown {
        text: r.destination.to_string(),
        pattern: Some(r.destination.pattern.clone()),
        port: r.destination.port,
        layer,
        origin,
    }
}

/// A destination (or constant) node for a rule.
fn node(s: &Shown) -> Value {
    let source = json!({"origin": s.origin, "id": s.text});
    let dest = |kind: &str, value: String| {
        let mut d = json!({"kind": kind, "value": value});
        if let Some(p) = s.port {
            d["port"] = json!(p);
        }
        json!({"source": source, "destination": d})
    };
    match &s.pattern {
        Some(Pattern::Any) if s.port.is_none() => json!({"source": source, "constant": "true"}),
        // `*:443`: every name and every address on one port.
        Some(Pattern::Any) => dest("cidr", "0.0.0.0/0".into()),
        Some(Pattern::Exact(h)) => dest("dns", h.clone()),
        Some(Pattern::Subdomains(d)) => dest("dnsSubtree", d.clone()),
        Some(Pattern::Net(n)) if n.prefix_len() == n.max_prefix_len() => {
            dest("ip", n.addr().to_string())
        }
        Some(Pattern::Net(n)) => dest("cidr", n.to_string()),
        None => dest("cidr", s.text.clone()),
    }
}

/// Append `any` nodes over `ids` (chunked to the operand limit); the index of the node that unions them all.
fn any_of(nodes: &mut Vec<Value>, mut ids: Vec<usize>) -> usize {
    if ids.is_empty() {
        nodes.push(json!({"constant": "false"}));
        return nodes.len() - 1;
    }
    while ids.len() > 1 {
        ids = ids
            .chunks(MAX_OPERANDS)
            .map(|c| {
                nodes.push(json!({"any": {"nodes": c}}));
                nodes.len() - 1
            })
            .collect();
    }
    ids[0]
}

impl Inner {
    /// The effective and exact policy of `sandbox` (by name), or of the owner scope (global rules) for `None`.
    fn v1_policy_view(&self, sandbox: Option<&str>) -> Answer {
        let rules: Vec<RuleEntry> = self
            .proxy
            .policy()
            .rules()
            .into_iter()
            .filter(|r| match (&r.scope, sandbox) {
                (Scope::Global, _) => true,
                (Scope::Sandbox(n), Some(s)) => n == s,
                (Scope::Sandbox(_), None) => false,
            })
            .collect();
        let catch_all = |a: Action| {
            rules.iter().any(|r| {
                r.action == a
                    && r.destination.pattern == Pattern::Any
                    && r.destination.port.is_none()
            })
        };
        let allow_all = catch_all(Action::Allow) && !catch_all(Action::Deny);
        let mut allows: Vec<Shown> = Vec::new();
        let mut denies: Vec<Shown> = Vec::new();
        for r in &rules {
            match r.action {
                Action::Deny => denies.push(shown(r)),
                _ => allows.push(shown(r)),
            }
        }
        for b in DEFAULT_BLOCKED {
            denies.push(Shown {
                text: b.to_string(),
                pattern: crate::core::policy::Destination::parse(b)
                    .ok()
                    .map(|d| d.pattern),
                port: None,
                layer: "default",
                origin: "default",
            });
        }
        let attributed = |v: &[Shown], skip_any: bool| -> Vec<Value> {
            v.iter()
                .filter(|s| !(skip_any && s.text == "*"))
                .map(|s| json!({"network": s.text, "layer": s.layer}))
                .collect()
        };
        let mut nodes: Vec<Value> = Vec::new();
        let allow_ids: Vec<usize> = allows
            .iter()
            .map(|s| {
                nodes.push(node(s));
                nodes.len() - 1
            })
            .collect();
        let allow_root = any_of(&mut nodes, allow_ids);
        let deny_ids: Vec<usize> = denies
            .iter()
            .map(|s| {
                nodes.push(node(s));
                nodes.len() - 1
            })
            .collect();
        let deny_root = any_of(&mut nodes, deny_ids);
        nodes.push(json!({"not": deny_root}));
        let not_deny = nodes.len() - 1;
        nodes.push(json!({"all": {"nodes": [allow_root, not_deny]}}));
        if nodes.len() > MAX_NODES {
            return error(
                "unavailable",
                format!(
                    "the installed network policy is unavailable: {} rules do not fit the {MAX_NODES}-node graph",
                    rules.len()
                ),
            );
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for r in &rules {
            (
                r.action.as_str(),
                r.scope.to_string(),
                r.destination.to_string(),
            )
                .hash(&mut h);
        }
        Answer::json(
            StatusCode::OK,
            json!({
                "effective": {
                    "mode": if allow_all { "allowAll" } else { "denyAll" },
                    "allowNetworks": attributed(&allows, allow_all),
                    "denyNetworks": attributed(&denies, false),
                },
                "exact": {
                    "revision": format!("{:016x}", h.finish()),
                    "selectorVersion": "destination.v1",
                    "nodes": nodes,
                },
            }),
        )
    }

    /// `getNetworkPolicies`.
    pub(super) fn v1_network_policies(&self, uid: &str) -> Answer {
        match self.v1_name_of(uid) {
            Some(name) => self.v1_policy_view(Some(&name)),
            None => not_found(uid),
        }
    }

    /// `getNetworkPoliciesInOwnerScope`: the global rules.
    pub(super) fn v1_network_policies_owner(&self) -> Answer {
        self.v1_policy_view(None)
    }

    /// The sbx name of a v1 sandbox with a container.
    fn v1_name_of(&self, uid: &str) -> Option<String> {
        let known = self
            .v1
            .records
            .lock()
            .ok()
            .is_some_and(|r| r.contains_key(uid));
        if !known {
            return None;
        }
        self.sbx_all()
            .into_iter()
            .find(|e| e.id == uid)
            .map(|e| e.name.clone())
    }

    /// `listPolicyLogEntries` (`uid` given) and `listPolicyLogEntriesInOwnerScope`.
    pub(super) fn v1_policy_logs(&self, uid: Option<&str>, q: &HashMap<String, String>) -> Answer {
        let name = match uid {
            None => None,
            Some(u) => {
                let known = self
                    .v1
                    .records
                    .lock()
                    .ok()
                    .is_some_and(|r| r.contains_key(u));
                if !known {
                    return not_found(u);
                }
                // A sandbox still being made has no name in the proxy's log yet: its log is empty.
                Some(self.v1_name_of(u).unwrap_or_default())
            }
        };
        let page = match q.get("pageSize").map(|s| s.parse::<i64>()) {
            None | Some(Ok(0)) => DEFAULT_PAGE,
            Some(Ok(n)) if n > 0 => (n as usize).min(MAX_PAGE),
            _ => return error("invalidArgument", "pageSize must be a non-negative integer"),
        };
        let mut since = None;
        let mut until = None;
        for (k, slot) in [("since", &mut since), ("until", &mut until)] {
            if let Some(t) = q.get(k).filter(|t| !t.is_empty()) {
                match parse_rfc3339_ms(t) {
                    Some(ms) => *slot = Some(ms),
                    None => {
                        return error(
                            "invalidArgument",
                            format!("{k} {t:?} is not an RFC 3339 time"),
                        )
                    }
                }
            }
        }
        let filter = q.get("filter").cloned().unwrap_or_default();
        let mut terms = Vec::new();
        for t in filter.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            match t.split_once('=') {
                Some((
                    k @ ("decision" | "domain" | "resource" | "proxy_type" | "proxyType" | "rule"),
                    v,
                )) => terms.push((k.to_string(), v.to_string())),
                _ => {
                    return error(
                        "invalidArgument",
                        format!("filter term {t:?}: use decision, domain, resource, proxy_type or rule = value"),
                    )
                }
            }
        }
        // Names of the proxy's log → v1 uids.
        let uids: HashMap<String, String> = self
            .sbx_all()
            .into_iter()
            .map(|e| (e.name.clone(), e.id.clone()))
            .collect();
        type Key = (
            String,
            Option<String>,
            &'static str,
            bool,
            String,
            &'static str,
        );
        let mut rows: BTreeMap<Key, (u64, u64, u64)> = BTreeMap::new();
        for e in self.proxy.log().snapshot() {
            if let Some(n) = &name {
                if e.sandbox.as_deref() != Some(n.as_str()) {
                    continue;
                }
            }
            let resource = match e.port {
                Some(p) if !e.host.is_empty() => format!("{}:{p}", e.host),
                _ => e.host.clone(),
            };
            let proxy_type = match e.proxy_type {
                ProxyType::Forward => "forward",
                ProxyType::Connect => "connect",
                ProxyType::Intercepted => "intercepted",
                ProxyType::None => "none",
            };
            let key = (
                resource,
                e.sandbox.clone(),
                proxy_type,
                e.allowed,
                e.rule.clone().unwrap_or_default(),
                e.reason.as_str(),
            );
            let row = rows.entry(key).or_insert((0, u64::MAX, 0));
            row.0 += 1;
            row.1 = row.1.min(e.started_ms);
            row.2 = row.2.max(e.ended_ms);
        }
        let mut list: Vec<(Key, (u64, u64, u64))> = rows
            .into_iter()
            .filter(|((res, _, pt, ok, rule, _), (_, first, last))| {
                since.is_none_or(|s| *last >= s)
                    && until.is_none_or(|u| *first <= u)
                    && terms.iter().all(|(k, v)| match k.as_str() {
                        "decision" => v == if *ok { "allowed" } else { "blocked" },
                        "domain" => v == "network",
                        "resource" => res == v,
                        "rule" => rule == v,
                        _ => pt == v,
                    })
            })
            .collect();
        list.sort_by(|a, b| b.1 .2.cmp(&a.1 .2).then_with(|| a.0.cmp(&b.0)));
        let bound = format!(
            "{}|{filter}|{:?}|{:?}",
            uid.unwrap_or(""),
            q.get("since"),
            q.get("until")
        );
        let offset = match q.get("pageToken").filter(|t| !t.is_empty()) {
            None => 0,
            Some(t) => {
                use base64::Engine as _;
                let parsed = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(t)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                    .filter(|v| v["q"].as_str() == Some(bound.as_str()))
                    .and_then(|v| v["o"].as_u64());
                match parsed {
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
        let total = list.len();
        let entries: Vec<Value> = list
            .into_iter()
            .skip(offset)
            .take(page)
            .map(
                |((resource, sb, proxy_type, ok, rule, reason), (count, first, last))| {
                    let mut v = json!({
                        "resource": resource,
                        "decision": if ok { "allowed" } else { "blocked" },
                        "proxyType": proxy_type,
                        "reason": reason,
                        "count": count.to_string(),
                        "firstSeen": rfc3339_ms(first),
                        "lastSeen": rfc3339_ms(last),
                        "domain": "network",
                    });
                    if !rule.is_empty() {
                        v["rule"] = json!(rule);
                    }
                    if let Some(u) = sb.as_ref().and_then(|n| uids.get(n)) {
                        v["sandbox"] = json!(format!("sandboxes/{u}"));
                        v["sandboxUid"] = json!(u);
                    }
                    v
                },
            )
            .collect();
        let mut body = json!({ "entries": entries });
        if offset + page < total {
            use base64::Engine as _;
            body["nextPageToken"] = json!(base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(json!({"q": bound, "o": offset + page}).to_string()));
        }
        Answer::json(StatusCode::OK, body)
    }
}

/// Unix milliseconds as RFC 3339 with milliseconds (UTC).
fn rfc3339_ms(ms: u64) -> String {
    let s = crate::core::local::sbx::rfc3339((ms / 1000) as i64);
    format!("{}.{:03}Z", s.trim_end_matches('Z'), ms % 1000)
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DDThh:mm:ss[.frac](Z|±hh:mm)` as Unix milliseconds (clamped at 0).
pub(super) fn parse_rfc3339_ms(t: &str) -> Option<u64> {
    let b = t.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = t.get(r)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let (y, mo, d, h, mi, s) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let mut rest = &t[19..];
    let mut ms = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let f = &frac[..digits];
        ms = format!("{:0<3}", &f[..f.len().min(3)]).parse().ok()?;
        rest = &frac[digits..];
    }
    let offset_min = match rest {
        "Z" | "z" => 0,
        o if o.len() == 6 && (o.starts_with('+') || o.starts_with('-')) && &o[3..4] == ":" => {
            let oh: i64 = o[1..3].parse().ok()?;
            let om: i64 = o[4..6].parse().ok()?;
            let v = oh * 60 + om;
            if o.starts_with('-') {
                -v
            } else {
                v
            }
        }
        _ => return None,
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s - offset_min * 60;
    Some((secs * 1000 + ms).max(0) as u64)
}
