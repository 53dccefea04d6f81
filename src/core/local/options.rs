//! LocalSandboxd's options and the Docker host syntax: the same on every platform (the server itself is Unix
//! only, see `unsupported.rs`).

use crate::core::error::{Error, Result};
use crate::core::policy::Preset;
use crate::core::validate;
use std::net::IpAddr;
use std::path::PathBuf;

/// Which backend to use; `None` picks `dockerd` on Linux when running as root with dockerd on PATH, else `relay`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    Dockerd,
    Relay,
}

/// Options for `LocalSandboxd::start`.
#[derive(Debug, Clone, Default)]
pub struct LocalOptions {
    /// State root (gets `sandboxd.sock` and `vm/<name>/`). Default: a new private directory under /tmp,
    /// removed on stop (or, on Linux, if the process dies first, by the next start with a default root: `stale`).
    pub root: Option<PathBuf>,
    pub backend: Option<BackendKind>,
    /// For `relay`: the engine to forward to (`unix://…` or a path). Default: `DOCKER_HOST`, then
    /// `/var/run/docker.sock`.
    pub docker_host: Option<String>,
    /// For `dockerd`: the dockerd binary. Default: `dockerd` on PATH.
    pub dockerd_path: Option<PathBuf>,
    /// The filtering proxy every sandbox goes out through.
    pub proxy: ProxySettings,
}

/// The settings of LocalSandboxd's filtering proxy.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// Fixed answers (name → addresses), consulted before the system resolver: a "fake internet" for tests.
    pub hosts: Vec<(String, Vec<IpAddr>)>,
    /// Whether names not in `hosts` are looked up with the system resolver (default true).
    pub system_resolver: bool,
    /// Extra CA certificates (PEM) trusted for upstream TLS, besides the platform's.
    pub upstream_ca_pem: Vec<String>,
    /// The global rules at start (default `allow-all`: every public destination; the default-blocked ranges
    /// stay blocked).
    pub preset: Preset,
}

impl Default for ProxySettings {
    fn default() -> Self {
        ProxySettings {
            hosts: Vec::new(),
            system_resolver: true,
            upstream_ca_pem: Vec::new(),
            preset: Preset::AllowAll,
        }
    }
}

/// `unix:///x`, `unix:/x` or a plain path → the socket path.
pub fn docker_host_path(host: &str) -> Result<PathBuf> {
    if let Some(rest) = host.strip_prefix("unix://") {
        return Ok(PathBuf::from(rest));
    }
    if host.starts_with('/') {
        return Ok(PathBuf::from(host));
    }
    Err(Error::invalid(format!(
        "only unix:// Docker hosts are supported, got {}",
        validate::shown(host)
    ))
    .with("argument", "dockerHost"))
}
