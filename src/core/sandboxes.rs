//! The front door: find a daemon and return its backend. Auto-detection tries the sbx daemon first (every
//! discovery path, then the legacy `/vm` API on the same sockets), so code written against a sandbox moves
//! between backends by changing one option.

use super::backend::SandboxBackend;
use super::call::Call;
use super::desktop::DesktopBackend;
use super::error::{Error, ErrorCode, Result};
use super::sandboxd::SandboxdClient;
use super::sbx::{ConnectOptions as SbxOptions, SbxClient, VersionMode};
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
}

impl Choice {
    /// `'auto' | 'sbx' | 'desktop'`.
    pub fn parse(s: &str) -> Result<Choice> {
        match s {
            "auto" => Ok(Choice::Auto),
            "sbx" => Ok(Choice::Sbx),
            "desktop" => Ok(Choice::Desktop),
            other => Err(Error::invalid(format!(
                "backend must be 'auto', 'sbx' or 'desktop', got {}",
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
