//! The front door: find a daemon and return its backend. Auto-detection tries the sbx daemon first (every
//! discovery path, then the legacy `/vm` API on the same sockets), so code written against a sandbox moves
//! between backends by changing one option.

use super::backend::SandboxBackend;
use super::call::Call;
use super::desktop::DesktopBackend;
use super::error::{Error, ErrorCode, Result};
use super::sandboxd::SandboxdClient;
use super::sbx::{ConnectOptions as SbxOptions, SbxClient, VersionMode};
use super::v1::V1Options;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Which backend to use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Choice {
    /// sbx when a daemon answers its API, else the legacy `/vm` API.
    #[default]
    Auto,
    /// Only the sbx daemon.
    Sbx,
    /// Only the legacy `/vm` API (Docker Desktop's removed plugin, or LocalSandboxd).
    Desktop,
    /// The Docker Sandboxes API v1: Docker's cloud over HTTPS, or a local daemon's Unix socket (LocalSandboxd).
    /// Never chosen by `Auto`: it is named, with its endpoint and credentials.
    V1,
}

impl Choice {
    /// `'auto' | 'sbx' | 'desktop' | 'v1'`.
    pub fn parse(s: &str) -> Result<Choice> {
        match s {
            "auto" => Ok(Choice::Auto),
            "sbx" => Ok(Choice::Sbx),
            "desktop" => Ok(Choice::Desktop),
            "v1" => Ok(Choice::V1),
            other => Err(Error::invalid(format!(
                "backend must be 'auto', 'sbx', 'desktop' or 'v1', got {}",
                super::validate::shown(other)
            ))
            .with("argument", "backend")),
        }
    }
}

/// How to find the daemon.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    pub backend: Choice,
    /// The daemon's socket: the only candidate when set.
    pub socket_path: Option<String>,
    /// The sbx app name (`sbx --app-name`).
    pub app_name: Option<String>,
    pub version_mode: VersionMode,
    /// Overrides every call's default deadline.
    pub timeout: Option<Duration>,
    /// Desktop backend: the engine template images are copied from (default: the host's engine).
    pub image_source: Option<PathBuf>,
    /// v1 backend: endpoint and credentials (unset fields are read from the environment: see [`v1_options`]).
    pub v1: V1Options,
}

/// The v1 options with the environment's defaults filled in: `socket_path` (a local daemon's socket) becomes the
/// `unix://` endpoint; else `DOCKER_SANDBOXES_URL`; else the client's default (Docker's cloud). Credentials:
/// `DOCKER_SANDBOXES_TOKEN` (a ready access token), else `DOCKER_ID` + `DOCKER_PAT` (exchanged at Docker Hub).
/// A local socket needs none; credentials given explicitly are never mixed with the environment's.
pub fn v1_options(o: &ConnectOptions, env: impl Fn(&str) -> Option<String>) -> Result<V1Options> {
    let mut v = o.v1.clone();
    if let Some(sock) = &o.socket_path {
        if v.endpoint.is_some() {
            return Err(Error::invalid(
                "pass either socketPath or endpoint to the v1 backend, not both",
            )
            .with("argument", "endpoint"));
        }
        v.endpoint = Some(format!("unix://{sock}"));
    }
    let env = |k: &str| env(k).filter(|s| !s.is_empty());
    if v.endpoint.is_none() {
        v.endpoint = env("DOCKER_SANDBOXES_URL");
    }
    let local = v
        .endpoint
        .as_deref()
        .is_some_and(|e| e.starts_with("unix://"));
    let explicit = v.token.is_some() || v.identifier.is_some() || v.pat.is_some();
    if !local && !explicit {
        v.token = env("DOCKER_SANDBOXES_TOKEN");
        if v.token.is_none() {
            v.identifier = env("DOCKER_ID");
            v.pat = env("DOCKER_PAT");
        }
    }
    if v.hub_url.is_none() {
        v.hub_url = env("DOCKER_HUB_URL");
    }
    Ok(v)
}

/// Whether an sbx probe failed because nothing answers the sbx API there (so another backend may): no socket, or
/// a server that does not know `/daemon/health`.
fn no_sbx_here(e: &Error) -> bool {
    matches!(
        e.code,
        ErrorCode::SandboxdUnavailable | ErrorCode::SbxUnsupported | ErrorCode::SandboxdProtocol
    )
}

/// Connect to a daemon and return its backend (see [`Choice`]). Nothing answering is
/// `ERR_SANDBOXD_UNAVAILABLE` whose message and `triedPaths` list every path and backend tried, in order.
pub async fn connect(o: &ConnectOptions, call: &Call) -> Result<Arc<dyn SandboxBackend>> {
    if o.backend == Choice::V1 {
        let v = v1_options(o, |k| std::env::var(k).ok())?;
        return super::v1::connect(&v, call).await;
    }
    let mut tried: Vec<String> = Vec::new();
    if o.backend != Choice::Desktop {
        let sbx = SbxOptions {
            socket_path: o.socket_path.clone(),
            app_name: o.app_name.clone(),
            version_mode: o.version_mode,
            timeout: o.timeout,
        };
        match SbxClient::connect(&sbx, call).await {
            Ok((client, _)) => return Ok(Arc::new(client)),
            Err(e) if o.backend == Choice::Auto && no_sbx_here(&e) => {
                tried.extend(paths_of(&e, "sbx"));
            }
            Err(e) => return Err(e),
        }
    }
    let client = SandboxdClient::new(o.socket_path.as_deref(), o.timeout);
    match client.ping(call).await {
        Ok(()) => Ok(Arc::new(DesktopBackend::new(
            client,
            o.image_source.clone(),
        ))),
        Err(e) if e.code == ErrorCode::SandboxdUnavailable || o.backend == Choice::Auto => {
            tried.push(format!(
                "desktop {} ({})",
                client.socket_path().display(),
                e.props
                    .get("cause")
                    .and_then(|c| c.as_str())
                    .unwrap_or(e.code.as_str())
            ));
            if !no_sbx_here(&e) {
                return Err(e);
            }
            Err(Error::new(
                ErrorCode::SandboxdUnavailable,
                format!(
                    "no sandbox daemon answers. Tried, in order: {}. Install Docker Sandboxes (`sbx`) and run any \
                     `sbx` command to start its daemon, set DOCKER_SANDBOXES_API, or pass socketPath (LocalSandboxd \
                     prints its own)",
                    tried.join("; ")
                ),
            )
            .with("triedPaths", tried))
        }
        Err(e) => Err(e),
    }
}

/// The paths an `ERR_SANDBOXD_UNAVAILABLE` from one backend lists, prefixed with that backend.
fn paths_of(e: &Error, backend: &str) -> Vec<String> {
    match e.props.get("triedPaths").and_then(|v| v.as_array()) {
        Some(list) => list
            .iter()
            .filter_map(|p| p.as_str())
            .map(|p| format!("{backend} {p}"))
            .collect(),
        None => vec![format!("{backend}: {}", e.message)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choice_parses_the_three_words_only() {
        assert_eq!(Choice::parse("auto").unwrap(), Choice::Auto);
        assert_eq!(Choice::parse("sbx").unwrap(), Choice::Sbx);
        assert_eq!(Choice::parse("desktop").unwrap(), Choice::Desktop);
        let e = Choice::parse("cloud").unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidArgument);
        assert_eq!(e.props["argument"], "backend");
        assert_eq!(Choice::parse("v1").unwrap(), Choice::V1);
    }

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn v1_options_fill_in_the_environment_and_never_mix_credentials() {
        const ENV: &[(&str, &str)] = &[
            ("DOCKER_SANDBOXES_URL", "https://example.test/sandboxes"),
            ("DOCKER_SANDBOXES_TOKEN", "tok"),
            ("DOCKER_ID", "me"),
            ("DOCKER_PAT", "pat"),
            ("DOCKER_HUB_URL", ""),
        ];
        let base = ConnectOptions {
            backend: Choice::V1,
            ..Default::default()
        };
        // nothing given: the cloud URL and the ready token from the environment (the token wins over the PAT)
        let v = v1_options(&base, env_of(ENV)).unwrap();
        assert_eq!(
            v.endpoint.as_deref(),
            Some("https://example.test/sandboxes")
        );
        assert_eq!(v.token.as_deref(), Some("tok"));
        assert_eq!((v.identifier, v.pat, v.hub_url), (None, None, None));
        // a socket path is the local endpoint: no credentials read
        let local = ConnectOptions {
            socket_path: Some("/run/x.sock".into()),
            ..base.clone()
        };
        let v = v1_options(&local, env_of(ENV)).unwrap();
        assert_eq!(v.endpoint.as_deref(), Some("unix:///run/x.sock"));
        assert_eq!(v.token, None);
        // explicit credentials are kept alone
        let mut mine = base.clone();
        mine.v1.identifier = Some("other".into());
        mine.v1.pat = Some("p2".into());
        let v = v1_options(&mine, env_of(ENV)).unwrap();
        assert_eq!((v.token, v.identifier.as_deref()), (None, Some("other")));
        // without a token the PAT pair is read
        let v = v1_options(&base, env_of(&[("DOCKER_ID", "me"), ("DOCKER_PAT", "pat")])).unwrap();
        assert_eq!(
            (v.endpoint, v.identifier.as_deref(), v.pat.as_deref()),
            (None, Some("me"), Some("pat"))
        );
        // both a socket and an endpoint: which one was meant is unknown
        let mut both = local.clone();
        both.v1.endpoint = Some("https://x.test".into());
        let e = v1_options(&both, env_of(ENV)).unwrap_err();
        assert_eq!(e.props["argument"], "endpoint");
    }

    #[tokio::test]
    async fn nothing_answering_lists_every_path_of_both_backends() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("none.sock").display().to_string();
        let o = ConnectOptions {
            socket_path: Some(sock.clone()),
            ..Default::default()
        };
        let e = match connect(&o, &Call::default()).await {
            Err(e) => e,
            Ok(_) => panic!("connected to nothing"),
        };
        assert_eq!(e.code, ErrorCode::SandboxdUnavailable);
        let tried: Vec<String> = serde_json::from_value(e.props["triedPaths"].clone()).unwrap();
        assert_eq!(tried.len(), 2, "{tried:?}");
        assert!(
            tried[0].starts_with("sbx ") && tried[0].contains(&sock),
            "{tried:?}"
        );
        assert!(
            tried[1].starts_with("desktop ") && tried[1].contains(&sock),
            "{tried:?}"
        );
        assert!(e.message.contains(&sock));
    }
}
