//! JS class `LocalSandboxd` over [`crate::core::local::LocalSandboxd`].

use super::call::{promise, settle, Promise};
use crate::core::local::{self, BackendKind, LocalOptions, ProxySettings};
use crate::core::policy::Preset;
use crate::core::Error as CoreError;
use napi::bindgen_prelude::*;
use napi::Env;
use std::path::PathBuf;

/// Options for `LocalSandboxd.start()`.
#[napi(object)]
pub struct LocalSandboxdOptions {
    /// State root: gets `sandboxd.sock` and `vm/<name>/`. Must be owned by this user and not group/world
    /// writable. Default: a new private directory under /tmp, removed by `stop()`; default roots left by
    /// processes killed before they could clean up are removed by the next `start()` that uses a default root.
    pub root: Option<String>,
    /// `'dockerd'`: one private dockerd per VM (needs root and dockerd; VMs are isolated).
    /// `'relay'`: each VM socket forwards to an existing engine (`dockerHost`); VMs are NOT isolated.
    /// Default: `'dockerd'` when running as root with dockerd on PATH, else `'relay'`.
    #[napi(ts_type = "'dockerd' | 'relay'")]
    pub backend: Option<String>,
    /// For `'relay'`: the engine to forward to (`unix:///path` or a path). Default: `DOCKER_HOST`, then
    /// `/var/run/docker.sock`.
    pub docker_host: Option<String>,
    /// For `'dockerd'`: the dockerd binary. Default: `dockerd` on PATH.
    pub dockerd_path: Option<String>,
    /// The filtering proxy every sandbox goes out through.
    pub proxy: Option<LocalProxyOptions>,
}

/// Settings of LocalSandboxd's filtering proxy.
#[napi(object)]
pub struct LocalProxyOptions {
    /// Fixed answers, name → addresses, looked up before the system resolver: a "fake internet" for tests.
    pub hosts: Option<std::collections::HashMap<String, Vec<String>>>,
    /// Whether names not in `hosts` are looked up with the system resolver (default true). Tests that must not
    /// send a DNS query anywhere set it to false.
    pub system_resolver: Option<bool>,
    /// Extra CA certificates (PEM) trusted for upstream TLS, besides the platform's.
    pub upstream_ca: Option<Vec<String>>,
    /// The global rules at start (default `'allow-all'`; the default-blocked ranges stay blocked).
    #[napi(ts_type = "'allow-all' | 'balanced' | 'deny-all'")]
    pub preset: Option<String>,
}

fn parse_proxy(o: Option<LocalProxyOptions>) -> std::result::Result<ProxySettings, CoreError> {
    let mut s = ProxySettings::default();
    let Some(o) = o else { return Ok(s) };
    for (name, addrs) in o.hosts.unwrap_or_default() {
        let mut parsed = Vec::new();
        for a in addrs {
            let ip: std::net::IpAddr = a.parse().map_err(|_| {
                CoreError::invalid(format!(
                    "proxy.hosts[{}] holds {}, not an IP address",
                    crate::core::validate::shown(&name),
                    crate::core::validate::shown(&a)
                ))
                .with("argument", "proxy.hosts")
            })?;
            parsed.push(ip);
        }
        s.hosts.push((name, parsed));
    }
    if let Some(v) = o.system_resolver {
        s.system_resolver = v;
    }
    s.upstream_ca_pem = o.upstream_ca.unwrap_or_default();
    if let Some(p) = o.preset {
        s.preset = Preset::parse(&p).ok_or_else(|| {
            CoreError::invalid(format!(
                "proxy.preset must be 'allow-all', 'balanced' or 'deny-all', got {}",
                crate::core::validate::shown(&p)
            ))
            .with("argument", "proxy.preset")
        })?;
    }
    Ok(s)
}

/// A stand-in sandboxd on Linux, serving the same API on a Unix socket with a real Docker engine per VM.
/// Use it in tests: `await using sbx = await LocalSandboxd.start(); new Sandboxd({ socketPath: sbx.socketPath })`.
#[napi]
pub struct LocalSandboxd {
    inner: local::LocalSandboxd,
}

fn parse_options(o: Option<LocalSandboxdOptions>) -> std::result::Result<LocalOptions, CoreError> {
    let Some(o) = o else {
        return Ok(LocalOptions::default());
    };
    let backend = match o.backend.as_deref() {
        None => None,
        Some("dockerd") => Some(BackendKind::Dockerd),
        Some("relay") => Some(BackendKind::Relay),
        Some(other) => {
            return Err(CoreError::invalid(format!(
                "backend must be 'dockerd' or 'relay', got {}",
                crate::core::validate::shown(other)
            ))
            .with("argument", "backend"))
        }
    };
    Ok(LocalOptions {
        root: o.root.map(PathBuf::from),
        backend,
        docker_host: o.docker_host,
        dockerd_path: o.dockerd_path.map(PathBuf::from),
        proxy: parse_proxy(o.proxy)?,
    })
}

#[napi]
impl LocalSandboxd {
    /// Start serving. Rejects with `ERR_EMULATOR` when the backend cannot run, `ERR_INVALID_ARGUMENT` for bad
    /// options (an unsafe root included). Whatever is still running when Node exits is killed then.
    #[napi(catch_unwind)]
    pub fn start(
        env: Env,
        options: Option<LocalSandboxdOptions>,
    ) -> Result<Promise<LocalSandboxd>> {
        let opts = parse_options(options);
        settle(
            &env,
            None,
            async move { local::LocalSandboxd::start(opts?).await },
            |env, inner| {
                let weak = inner.downgrade();
                env.add_env_cleanup_hook(weak, |w| w.kill_now())?;
                Ok(LocalSandboxd { inner })
            },
        )
    }

    /// The sandboxd socket to pass to `new Sandboxd({ socketPath })`.
    #[napi(catch_unwind, getter)]
    pub fn socket_path(&self) -> String {
        self.inner.socket_path().display().to_string()
    }

    /// The state root (`sandboxd.sock`, `vm/<name>/`).
    #[napi(catch_unwind, getter)]
    pub fn root(&self) -> String {
        self.inner.root().display().to_string()
    }

    /// The backend in use: `'dockerd'` or `'relay'`.
    #[napi(catch_unwind, getter, ts_return_type = "'dockerd' | 'relay'")]
    pub fn backend(&self) -> String {
        self.inner.backend_name().to_string()
    }

    /// PIDs of the VMs' private dockerd processes (empty for `'relay'`).
    #[napi(catch_unwind, getter)]
    pub fn engine_pids(&self) -> Vec<u32> {
        self.inner.engine_pids()
    }

    /// Stop serving, stop every VM engine, remove sockets and state. Idempotent. Requests being served get
    /// their answers (up to 10 s); a create still starting its engine is cut off and answered HTTP 503, which
    /// the client reports as `ERR_SANDBOXD_UNAVAILABLE`.
    #[napi(catch_unwind, ts_return_type = "Promise<void>")]
    pub fn stop(&self, env: Env) -> Result<Promise<()>> {
        let inner = self.inner.clone();
        promise(&env, async move {
            inner.stop().await;
            Ok(())
        })
    }
}
