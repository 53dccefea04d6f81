//! The legacy desktop backend's network policy: each VM's `proxy-config.json` (sandboxd-api.md "Network policy"),
//! read and written as typed rules. The file is the whole API (the `/vm` API has no policy or log route), so:
//! rules are per sandbox (`sandbox:<name>`; the user-wide default `~/.sandboxd/proxy-config.json` is read as the
//! global rules but never written), `check` decides with the core's engine on the name alone (no DNS), and the
//! log is `ERR_UNSUPPORTED`.
//!
//! Mapping: `"policy": "allow"` ⇔ the rule `allow *`; `allowedDomains` ⇔ allow; `blockedDomains` and
//! `blockCIDR` ⇔ deny (CIDRs to `blockCIDR`); `bypassDomains` ⇔ bypass (the key the CLI's `--bypass-host` stands
//! for is not documented: this is ours). Fields the SDK does not know are kept as they were.

use crate::core::backend::unsupported;
use crate::core::error::{Error, Result};
use crate::core::netpolicy::{PolicyCheck, PolicyRule, RuleChange};
use crate::core::policy::{self, Action, Destination, Pattern, Policy, Preset, Scope};
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};

const ALLOWED: &str = "allowedDomains";
const BLOCKED: &str = "blockedDomains";
const BLOCK_CIDR: &str = "blockCIDR";
const BYPASS: &str = "bypassDomains";

/// The user-wide default policy file (`~/.sandboxd/proxy-config.json`).
pub fn global_file() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|h| Path::new(&h).join(".sandboxd").join("proxy-config.json"))
}

fn read(path: &Path) -> Result<Option<Value>> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
            Error::protocol(
                format!("{} is not JSON: {e}", path.display()),
                None,
                &b[..b.len().min(200)],
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::internal(format!("reading {}: {e}", path.display()))),
    }
}

fn list<'a>(v: &'a Value, key: &str) -> impl Iterator<Item = &'a str> {
    v.get("network")
        .and_then(|n| n.get(key))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
}

/// The rules one file holds, in `scope`.
pub fn rules_of(v: &Value, scope: &Scope) -> Vec<PolicyRule> {
    let sandbox = match scope {
        Scope::Sandbox(n) => Some(n.clone()),
        Scope::Global => None,
    };
    let rule = |action: &str, resource: &str| PolicyRule {
        action: action.into(),
        resource: resource.into(),
        scope: scope.to_string(),
        sandbox: sandbox.clone(),
    };
    let mut out = Vec::new();
    if v.get("policy").and_then(Value::as_str) == Some("allow") {
        out.push(rule("allow", "*"));
    }
    out.extend(list(v, ALLOWED).map(|r| rule("allow", r)));
    out.extend(list(v, BLOCKED).map(|r| rule("deny", r)));
    out.extend(list(v, BLOCK_CIDR).map(|r| rule("deny", r)));
    out.extend(list(v, BYPASS).map(|r| rule("bypass", r)));
    out
}

fn is_cidr(d: &Destination) -> bool {
    matches!(d.pattern, Pattern::Net(_))
}

/// Applies one change to a file's JSON (`Ok(false)`: nothing changed).
fn apply(v: &mut Value, change: &RuleChange) -> Result<bool> {
    let (action, resource) = match change {
        RuleChange::Add {
            action, resource, ..
        } => (Some(*action), resource),
        RuleChange::Remove { resource, .. } => (None, resource),
        RuleChange::Preset(_) => return Err(unsupported("desktop", "global presets")),
    };
    let d = Destination::parse(resource).map_err(|e| Error::invalid(e.to_string()))?;
    let text = d.to_string();
    if !v.is_object() {
        *v = json!({});
    }
    let obj = v.as_object_mut().expect("object");
    if text == "*" && action != Some(Action::Deny) && action != Some(Action::Bypass) {
        let was = obj.get("policy").and_then(Value::as_str) == Some("allow");
        obj.insert(
            "policy".into(),
            json!(if action.is_some() { "allow" } else { "deny" }),
        );
        return Ok(was != action.is_some());
    }
    let network = obj
        .entry("network")
        .or_insert_with(|| Value::Object(Map::new()));
    if !network.is_object() {
        *network = Value::Object(Map::new());
    }
    let net = network.as_object_mut().expect("object");
    let key = match (action, is_cidr(&d)) {
        (Some(Action::Allow), false) => ALLOWED,
        (Some(Action::Allow), true) => {
            return Err(unsupported(
                "desktop",
                "allow rules on address ranges (proxy-config.json has none)",
            ))
        }
        (Some(Action::Deny), false) => BLOCKED,
        (Some(Action::Deny), true) => BLOCK_CIDR,
        (Some(Action::Bypass), _) => BYPASS,
        (None, _) => {
            let mut changed = false;
            for key in [ALLOWED, BLOCKED, BLOCK_CIDR, BYPASS] {
                if let Some(Value::Array(a)) = net.get_mut(key) {
                    let before = a.len();
                    a.retain(|x| x.as_str() != Some(text.as_str()));
                    changed |= a.len() != before;
                }
            }
            return Ok(changed);
        }
    };
    let entry = net.entry(key).or_insert_with(|| json!([]));
    if !entry.is_array() {
        *entry = json!([]);
    }
    let a = entry.as_array_mut().expect("array");
    if a.iter().any(|x| x.as_str() == Some(text.as_str())) {
        return Ok(false);
    }
    a.push(json!(text));
    Ok(true)
}

/// Applies changes to the file at `path` (all checked first; written whole, through a temporary file).
pub fn change_file(path: &Path, changes: &[&RuleChange]) -> Result<()> {
    let mut v = read(path)?.unwrap_or_else(|| json!({"policy": "deny", "network": {}}));
    for c in changes {
        apply(&mut v, c)?;
    }
    let tmp = path.with_extension("json.sandboxd-tmp");
    let text = serde_json::to_string_pretty(&v).unwrap_or_default();
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| Error::internal(format!("writing {}: {e}", path.display())))
}

/// The rules of the file at `path` (none when it does not exist).
pub fn read_rules(path: &Path, scope: &Scope) -> Result<Vec<PolicyRule>> {
    Ok(read(path)?.map(|v| rules_of(&v, scope)).unwrap_or_default())
}

/// Decides `target` with the engine over these rules (the name only: no DNS; the default-blocked ranges apply to
/// IP literals).
pub fn check(rules: &[PolicyRule], target: &str) -> Result<PolicyCheck> {
    let p = Policy::new(Preset::DenyAll);
    for r in rules {
        let action = match r.action.as_str() {
            "allow" => Action::Allow,
            "deny" => Action::Deny,
            _ => Action::Bypass,
        };
        let scope = match &r.sandbox {
            Some(n) => Scope::Sandbox(n.clone()),
            None => Scope::Global,
        };
        let _ = p.add(&scope, action, &r.resource);
    }
    let sandbox = rules.iter().find_map(|r| r.sandbox.clone());
    let t = policy::parse_target(target, 443)
        .map_err(|e| Error::invalid(format!("{target:?}: {e}")).with("argument", "target"))?;
    let d = p.decide(sandbox.as_deref(), &t, None);
    Ok(PolicyCheck {
        allowed: d.allowed,
        target: target.to_string(),
        rule: d.rule.clone(),
        reason: d.reason.as_str().to_string(),
        message: d.message(&t),
        scope: d.scope.clone(),
        bypass: d.bypass,
    })
}
