//! The daemon's JSON shapes (snake_case). Every field is optional on the way in: versions differ.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `GET /daemon/health`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct DaemonHealth {
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub revision: String,
    #[serde(default)]
    pub release: serde_json::Value,
}

/// `GET /daemon/info`: the API socket and the daemon's Docker-compatible engine socket.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct DaemonInfo {
    #[serde(default)]
    pub api_socket: String,
    #[serde(default)]
    pub docker_socket: String,
}

/// One entry of `GET /sandbox` / `GET /sandbox/{n}`. Only `name` is required.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct WireSandbox {
    #[serde(default)]
    pub id: Option<serde_json::Value>,
    pub name: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub agent: Option<String>,
    #[serde(default)]
    pub workspace: Option<String>,
    #[serde(default)]
    pub template: Option<String>,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, serde_json::Value>>,
}

/// `GET /sandbox/{n}/exec/{id}`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct ExecState {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub running: bool,
    #[serde(default)]
    pub exit_code: Option<i64>,
}

/// One published port (`GET /sandbox/{n}/ports`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct PortBinding {
    #[serde(default)]
    pub host_ip: String,
    #[serde(default)]
    pub host_port: u16,
    #[serde(default)]
    pub protocol: String,
    #[serde(default)]
    pub sandbox_port: u16,
}

/// A port to publish or unpublish. Unset fields are left out of the body (the daemon picks or matches any).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct PortSpec {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub host_ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub host_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub protocol: Option<String>,
    pub sandbox_port: u16,
}
