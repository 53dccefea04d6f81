//! LocalSandboxd's `POST /sandbox/{n}/credentials` (sbx's `SyncCredentials`, sbx-api.md §4.4, §6): the sandbox's
//! custom secrets, replaced as a set. Values go to the proxy only (memory, never a file, never a log line or an
//! error); the sandbox gets each secret's placeholder in the named environment variable of every process it
//! starts afterwards, and the proxy swaps the value in, on intercepted HTTPS to the secret's hosts only.
//!
//! Body (sbx's is not documented; this is the Connect `SyncCredentialsRequest` in snake_case):
//! `{"custom_secrets":[{env_name, value, targets:[host…], header?, format?, managed?}]}` → 200
//! `{"custom_secrets":[{env_name, sentinel, targets, header}]}`. `managed: true` makes the placeholder
//! `proxy-managed` (the header is then written whole as `format`, default `%s`); otherwise it is `sbx-cs-<random>`
//! and replaced wherever it occurs in the header. A bad entry is `400 {"message","index"}` naming no value.

use super::proxy::mitm::Secret;
use super::{message, reply, Inner, Resp};
use crate::core::netpolicy::check_secret;
use hyper::StatusCode;
use serde_json::{json, Value};

/// One entry, checked (the shared [`check_secret`]); the message never holds the value.
fn secret_of(i: usize, v: &Value) -> Result<(String, Secret), String> {
    let s = |k: &str| v.get(k).and_then(Value::as_str);
    let env = s("env_name").unwrap_or("");
    let value = s("value").unwrap_or("");
    let targets: Vec<String> = v
        .get("targets")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|t| t.as_str().unwrap_or("*").to_string())
                .collect()
        })
        .unwrap_or_default();
    let header = s("header").unwrap_or("authorization").to_ascii_lowercase();
    let format = s("format").unwrap_or("%s").to_string();
    check_secret(
        &format!("custom_secrets[{i}]"),
        env,
        value,
        &targets,
        &header,
        &format,
    )?;
    let hosts: Vec<&str> = targets.iter().map(String::as_str).collect();
    let secret = if v.get("managed").and_then(Value::as_bool).unwrap_or(false) {
        Secret::service(value, &hosts, &header, &format)
    } else {
        let mut s = Secret::custom(value, &hosts, &header);
        s.format = format;
        s
    };
    Ok((env.to_string(), secret))
}

impl Inner {
    /// `POST /sandbox/{n}/credentials`.
    pub(super) fn sbx_credentials(&self, name: &str, b: Value) -> Resp {
        let Some(e) = self.sbx_get(name) else {
            return message(StatusCode::NOT_FOUND, format!("sandbox {name} not found"));
        };
        let Some(list) = b.get("custom_secrets").and_then(Value::as_array) else {
            return message(StatusCode::BAD_REQUEST, "custom_secrets must be an array");
        };
        let mut parsed = Vec::new();
        for (i, v) in list.iter().enumerate() {
            match secret_of(i, v) {
                Ok(x) => parsed.push(x),
                Err(m) => return reply(StatusCode::BAD_REQUEST, json!({"message": m, "index": i})),
            }
        }
        let answer: Vec<Value> = parsed
            .iter()
            .map(|(env, s)| {
                json!({"env_name": env, "sentinel": s.placeholder, "targets": s.hosts, "header": s.header})
            })
            .collect();
        let env: Vec<(String, String)> = parsed
            .iter()
            .map(|(env, s)| (env.clone(), s.placeholder.clone()))
            .collect();
        self.proxy
            .set_secrets(name, parsed.into_iter().map(|(_, s)| s).collect());
        e.set_secret_env(env);
        reply(StatusCode::OK, json!({ "custom_secrets": answer }))
    }
}
