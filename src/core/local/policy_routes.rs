//! LocalSandboxd's sbx policy routes (sbx-api.md §4.4, §6) over its filtering proxy: `GET/POST
//! /policy/network/rules`, `POST /policy/network/check`, and the network log at both documented paths
//! (`/network/log`, `/policy/network/log`).
//!
//! Where sbx's shapes are documented they are followed (`check`'s request and answer, the log's `allowed_hosts` /
//! `blocked_hosts` rows); where they are not, LocalSandboxd's choice is documented in the README:
//! - `GET /policy/network/rules` → `{"rules":[{action, type:"network", resource, scope, sandbox?}]}`;
//! - `POST /policy/network/rules` takes `{"actions":[{action: allow|deny|bypass|remove, resource, sandbox?}` or
//!   `{action:"init", preset}]}`, checks every action before applying any, and answers `{"changed":[bool…],
//!   "rules":[…]}`; a bad rule is `400 {"message","index","resource"}`.
//!
//! Sandboxes are named by their name in every scope (`sandbox:<name>`), and `sandbox_id` accepts an id or a name.

use super::sbx::rfc3339;
use super::{message, reply, Inner, Resp};
use crate::core::policy::{self, Action, Preset, Scope};
use hyper::StatusCode;
use serde_json::{json, Value};
use std::collections::BTreeMap;

impl Inner {
    fn rules_json(&self) -> Value {
        let rules: Vec<Value> = self
            .proxy
            .policy()
            .rules()
            .into_iter()
            .map(|r| {
                let mut v = json!({
                    "action": r.action.as_str(),
                    "type": "network",
                    "resource": r.destination.to_string(),
                    "scope": r.scope.to_string(),
                });
                if let Scope::Sandbox(n) = &r.scope {
                    v["sandbox"] = json!(n);
                }
                v
            })
            .collect();
        Value::Array(rules)
    }

    /// `GET /policy/network/rules`.
    pub(super) fn policy_rules(&self) -> Resp {
        reply(StatusCode::OK, json!({ "rules": self.rules_json() }))
    }

    /// A sandbox named by id or name → its name; `None` for an unknown one.
    fn sandbox_name(&self, id_or_name: &str) -> Option<String> {
        if let Some(e) = self.sbx_get(id_or_name) {
            return Some(e.name.clone());
        }
        self.sbx_all()
            .into_iter()
            .find(|e| e.id == id_or_name)
            .map(|e| e.name.clone())
    }

    /// `POST /policy/network/rules`: every action checked first, then all applied.
    pub(super) fn policy_change(&self, b: Value) -> Resp {
        let Some(actions) = b.get("actions").and_then(Value::as_array) else {
            return message(StatusCode::BAD_REQUEST, "actions must be an array");
        };
        enum Op {
            Add(Scope, Action, String),
            Remove(Scope, String),
            Init(Preset),
        }
        let mut ops = Vec::new();
        for (i, a) in actions.iter().enumerate() {
            let bad = |msg: String| {
                reply(
                    StatusCode::BAD_REQUEST,
                    json!({"message": msg, "index": i, "resource": a.get("resource")}),
                )
            };
            let kind = a.get("action").and_then(Value::as_str).unwrap_or("");
            if kind == "init" {
                let p = a.get("preset").and_then(Value::as_str).unwrap_or("");
                match Preset::parse(p) {
                    Some(p) => ops.push(Op::Init(p)),
                    None => {
                        return bad(format!(
                            "actions[{i}]: preset must be allow-all, balanced or deny-all"
                        ))
                    }
                }
                continue;
            }
            if let Some(t) = a.get("type").and_then(Value::as_str) {
                if t != "network" {
                    return bad(format!("actions[{i}]: only network rules are supported"));
                }
            }
            let Some(resource) = a.get("resource").and_then(Value::as_str) else {
                return bad(format!("actions[{i}]: resource must be a string"));
            };
            if let Err(e) = policy::Destination::parse(resource) {
                return bad(format!("actions[{i}]: {e}"));
            }
            let scope = match a.get("sandbox").and_then(Value::as_str) {
                None => Scope::Global,
                Some(n) => match self.sandbox_name(n) {
                    Some(name) => Scope::Sandbox(name),
                    None => {
                        return message(StatusCode::NOT_FOUND, format!("sandbox {n} not found"))
                    }
                },
            };
            let op = match kind {
                "allow" => Op::Add(scope, Action::Allow, resource.into()),
                "deny" => Op::Add(scope, Action::Deny, resource.into()),
                "bypass" => Op::Add(scope, Action::Bypass, resource.into()),
                "remove" => Op::Remove(scope, resource.into()),
                other => {
                    return bad(format!(
                        "actions[{i}]: action must be allow, deny, bypass, remove or init, got {other:?}"
                    ))
                }
            };
            ops.push(op);
        }
        let p = self.proxy.policy();
        let changed: Vec<bool> = ops
            .into_iter()
            .map(|op| match op {
                Op::Add(scope, action, r) => p.add(&scope, action, &r).unwrap_or(false),
                Op::Remove(scope, r) => {
                    [Action::Allow, Action::Deny, Action::Bypass]
                        .into_iter()
                        .filter(|&a| p.remove(&scope, a, &r).unwrap_or(false))
                        .count()
                        > 0
                }
                Op::Init(preset) => {
                    p.reset(preset);
                    true
                }
            })
            .collect();
        reply(
            StatusCode::OK,
            json!({ "changed": changed, "rules": self.rules_json() }),
        )
    }

    /// `POST /policy/network/check {type:"network", target, sandbox_id?}`: decided exactly as the proxy decides a
    /// request (same resolver, same rules), without sending traffic.
    pub(super) async fn policy_check(&self, b: Value) -> Resp {
        if let Some(t) = b.get("type").and_then(Value::as_str) {
            if t != "network" {
                return message(StatusCode::BAD_REQUEST, "only type network is supported");
            }
        }
        let Some(target_text) = b.get("target").and_then(Value::as_str) else {
            return message(StatusCode::BAD_REQUEST, "target must be a string");
        };
        let sandbox = match b.get("sandbox_id").and_then(Value::as_str) {
            None | Some("") => None,
            Some(s) => match self.sandbox_name(s) {
                Some(n) => Some(n),
                None => return message(StatusCode::NOT_FOUND, format!("sandbox {s} not found")),
            },
        };
        let target = match policy::parse_target(target_text, 443) {
            Ok(t) => t,
            Err(e) => return message(StatusCode::BAD_REQUEST, format!("{target_text}: {e}")),
        };
        let d = self.proxy.check(sandbox.as_deref(), &target).await;
        let mut v = json!({
            "allowed": d.allowed,
            "action": "net:connect:tcp",
            "context": d.scope,
            "reason": d.message(&target),
            "resource_type": "network",
            "resource_value": target.to_string(),
            "target": target_text,
            "type": "network",
            "origin": "local",
            "governance": {"active": false},
            "bypass": d.bypass,
            "addresses_checked": d.addresses_checked,
            "reason_code": d.reason.as_str(),
        });
        if let Some(r) = &d.rule {
            v["rule"] = json!(r);
        }
        if !d.allowed {
            v["deny_kind"] = json!(d.reason.as_str());
        }
        reply(StatusCode::OK, v)
    }

    /// `GET /network/log` (and `/policy/network/log`): the proxy's decisions grouped per host, sandbox, proxy
    /// type, rule and reason, as sbx's `allowed_hosts` / `blocked_hosts` rows (`count_since` counted from
    /// `since`, the first of them), newest first; `?sandbox=<name>` keeps one sandbox's.
    pub(super) fn policy_log(&self, sandbox: Option<String>) -> Resp {
        type Key = (
            String,
            Option<String>,
            &'static str,
            bool,
            Option<String>,
            &'static str,
        );
        let mut rows: BTreeMap<Key, (u64, u64, u64)> = BTreeMap::new();
        for e in self.proxy.log().snapshot() {
            if sandbox.is_some() && e.sandbox != sandbox {
                continue;
            }
            let host = match e.port {
                Some(p) if !e.host.is_empty() => format!("{}:{p}", e.host),
                _ => e.host.clone(),
            };
            let proxy_type = match e.proxy_type {
                super::proxy::ProxyType::Forward => "forward",
                super::proxy::ProxyType::Connect => "connect",
                super::proxy::ProxyType::Intercepted => "intercepted",
                super::proxy::ProxyType::None => "none",
            };
            let key = (
                host,
                e.sandbox.clone(),
                proxy_type,
                e.allowed,
                e.rule.clone(),
                e.reason.as_str(),
            );
            let row = rows.entry(key).or_insert((0, u64::MAX, 0));
            row.0 += 1;
            row.1 = row.1.min(e.started_ms);
            row.2 = row.2.max(e.ended_ms);
        }
        let mut allowed = Vec::new();
        let mut blocked = Vec::new();
        let mut sorted: Vec<_> = rows.into_iter().collect();
        sorted.sort_by_key(|(_, (_, _, last))| std::cmp::Reverse(*last));
        for ((host, sb, proxy_type, ok, rule, reason), (count, first, last)) in sorted {
            let row = json!({
                "host": host,
                "vm_name": sb.unwrap_or_default(),
                "proxy_type": proxy_type,
                "rule": rule.unwrap_or_default(),
                "reason": reason,
                "since": rfc3339((first / 1000) as i64),
                "last_seen": rfc3339((last / 1000) as i64),
                "first_seen_ms": first,
                "last_seen_ms": last,
                "count_since": count,
            });
            if ok {
                allowed.push(row)
            } else {
                blocked.push(row)
            }
        }
        reply(
            StatusCode::OK,
            json!({ "allowed_hosts": allowed, "blocked_hosts": blocked }),
        )
    }
}
