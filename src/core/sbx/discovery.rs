//! Where the sbx daemon's API socket is, and how to connect to it.
//!
//! Candidates, in order (sbx-api.md §4.2 and §10.2): an explicit path; `DOCKER_SANDBOXES_API`; the app-name
//! variant (`DOCKER_SANDBOXES_APP_NAME` or the option) under `~/.sbx/run_<app>/d/`; the OS default (Linux: the
//! observed `${XDG_STATE_HOME:-~/.local/state}` path, then the `${XDG_DATA_HOME}` path one client guessed; macOS:
//! `~/Library/Application Support/…`); then both short symlinks `~/.sbx/run/d/sandboxd.sock` and
//! `~/.sbx/run/sandboxd.sock` (which one a version uses is an open question, so both are probed). On Windows the
//! named pipes come instead of the Unix paths. An explicit path or `DOCKER_SANDBOXES_API` is the only candidate:
//! a user who names a socket means that one.

use std::path::PathBuf;
use tokio::io::{AsyncRead, AsyncWrite};

/// Where a daemon listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A Unix domain socket (macOS, Linux).
    Unix(PathBuf),
    /// A Windows named pipe (`\\.\pipe\…`). Connecting is compiled on Windows targets only.
    Pipe(String),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "{}", p.display()),
            Endpoint::Pipe(p) => f.write_str(p),
        }
    }
}

/// The process environment discovery reads, as values (tests pass their own).
#[derive(Debug, Clone, Default)]
pub struct DiscoveryEnv {
    pub home: Option<PathBuf>,
    pub docker_sandboxes_api: Option<String>,
    pub app_name: Option<String>,
    pub xdg_state_home: Option<PathBuf>,
    pub xdg_data_home: Option<PathBuf>,
}

/// The operating system whose default locations are used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Os {
    Linux,
    MacOs,
    Windows,
}

impl Os {
    /// The OS this build runs on (other Unixes use the Linux layout).
    pub fn current() -> Os {
        if cfg!(windows) {
            Os::Windows
        } else if cfg!(target_os = "macos") {
            Os::MacOs
        } else {
            Os::Linux
        }
    }
}

fn non_empty(v: Option<std::ffi::OsString>) -> Option<std::ffi::OsString> {
    v.filter(|s| !s.is_empty())
}

impl DiscoveryEnv {
    /// Read the real process environment.
    pub fn from_process() -> DiscoveryEnv {
        let var = |k: &str| non_empty(std::env::var_os(k));
        DiscoveryEnv {
            home: var("HOME")
                .or_else(|| var("USERPROFILE"))
                .map(PathBuf::from),
            docker_sandboxes_api: var("DOCKER_SANDBOXES_API")
                .map(|s| s.to_string_lossy().into_owned()),
            app_name: var("DOCKER_SANDBOXES_APP_NAME").map(|s| s.to_string_lossy().into_owned()),
            xdg_state_home: var("XDG_STATE_HOME").map(PathBuf::from),
            xdg_data_home: var("XDG_DATA_HOME").map(PathBuf::from),
        }
    }
}

/// Every endpoint to try, in order, without duplicates. `explicit` and `app_name` are the caller's options
/// (an `app_name` option wins over the environment's).
pub fn candidates(
    explicit: Option<&str>,
    app_name: Option<&str>,
    env: &DiscoveryEnv,
    os: Os,
) -> Vec<Endpoint> {
    let parse = |s: &str| {
        if s.starts_with(r"\\.\pipe\") || s.starts_with("//./pipe/") {
            Endpoint::Pipe(s.to_string())
        } else {
            Endpoint::Unix(PathBuf::from(s))
        }
    };
    if let Some(p) = explicit.filter(|p| !p.is_empty()) {
        return vec![parse(p)];
    }
    if let Some(p) = env
        .docker_sandboxes_api
        .as_deref()
        .filter(|p| !p.is_empty())
    {
        return vec![parse(p)];
    }
    let home = env.home.clone().unwrap_or_else(|| PathBuf::from("/"));
    let app = app_name
        .filter(|a| !a.is_empty())
        .or(env.app_name.as_deref().filter(|a| !a.is_empty()));
    let mut out = Vec::new();
    match os {
        Os::Windows => {
            if let Some(a) = app {
                out.push(Endpoint::Pipe(format!(
                    r"\\.\pipe\docker_kaname_{a}_sandboxd"
                )));
            }
            out.push(Endpoint::Pipe(r"\\.\pipe\docker_kaname_sandboxd".into()));
        }
        Os::Linux | Os::MacOs => {
            if let Some(a) = app {
                out.push(Endpoint::Unix(
                    home.join(format!(".sbx/run_{a}/d/sandboxd.sock")),
                ));
            }
            let tail = "sandboxes/sandboxd/sandboxd.sock";
            if os == Os::MacOs {
                out.push(Endpoint::Unix(home.join(format!(
                    "Library/Application Support/com.docker.sandboxes/{tail}"
                ))));
            } else {
                let state = env
                    .xdg_state_home
                    .clone()
                    .unwrap_or_else(|| home.join(".local/state"));
                out.push(Endpoint::Unix(state.join("sandboxes").join(tail)));
                let data = env
                    .xdg_data_home
                    .clone()
                    .unwrap_or_else(|| home.join(".local/share"));
                out.push(Endpoint::Unix(data.join("com.docker.sandboxes").join(tail)));
            }
            out.push(Endpoint::Unix(home.join(".sbx/run/d/sandboxd.sock")));
            out.push(Endpoint::Unix(home.join(".sbx/run/sandboxd.sock")));
        }
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|e| seen.insert(e.to_string()));
    out
}

/// A connected byte stream to a daemon.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// Connect to `endpoint`. A named pipe serves one client per instance: a busy pipe is retried every 50 ms for
/// up to 5 s (Windows only; this cannot be exercised on Linux).
pub async fn connect(endpoint: &Endpoint) -> std::io::Result<Box<dyn Io>> {
    match endpoint {
        #[cfg(unix)]
        Endpoint::Unix(p) => Ok(Box::new(tokio::net::UnixStream::connect(p).await?)),
        #[cfg(not(unix))]
        Endpoint::Unix(p) => Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            format!(
                "Unix sockets are not supported on this platform: {}",
                p.display()
            ),
        )),
        #[cfg(windows)]
        Endpoint::Pipe(name) => {
            use tokio::net::windows::named_pipe::ClientOptions;
            const ERROR_PIPE_BUSY: i32 = 231;
            let give_up = std::time::Instant::now() + std::time::Duration::from_secs(5);
            loop {
                match ClientOptions::new().open(name) {
                    Ok(c) => return Ok(Box::new(c)),
                    Err(e)
                        if e.raw_os_error() == Some(ERROR_PIPE_BUSY)
                            && std::time::Instant::now() < give_up =>
                    {
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        #[cfg(not(windows))]
        Endpoint::Pipe(name) => Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            format!("named pipes exist only on Windows: {name}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> DiscoveryEnv {
        DiscoveryEnv {
            home: Some(PathBuf::from("/home/u")),
            ..Default::default()
        }
    }

    fn shown(v: &[Endpoint]) -> Vec<String> {
        v.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn linux_order_defaults_then_both_symlinks() {
        assert_eq!(
            shown(&candidates(None, None, &env(), Os::Linux)),
            [
                "/home/u/.local/state/sandboxes/sandboxes/sandboxd/sandboxd.sock",
                "/home/u/.local/share/com.docker.sandboxes/sandboxes/sandboxd/sandboxd.sock",
                "/home/u/.sbx/run/d/sandboxd.sock",
                "/home/u/.sbx/run/sandboxd.sock",
            ]
        );
        let mut e = env();
        e.xdg_state_home = Some("/st".into());
        e.app_name = Some("dev".into());
        let got = shown(&candidates(None, None, &e, Os::Linux));
        assert_eq!(got[0], "/home/u/.sbx/run_dev/d/sandboxd.sock");
        assert_eq!(got[1], "/st/sandboxes/sandboxes/sandboxd/sandboxd.sock");
        // The option wins over the environment's app name.
        let got = shown(&candidates(None, Some("ci"), &e, Os::Linux));
        assert_eq!(got[0], "/home/u/.sbx/run_ci/d/sandboxd.sock");
    }

    #[test]
    fn macos_and_windows_defaults() {
        let got = shown(&candidates(None, None, &env(), Os::MacOs));
        assert_eq!(
            got[0],
            "/home/u/Library/Application Support/com.docker.sandboxes/sandboxes/sandboxd/sandboxd.sock"
        );
        assert_eq!(got.len(), 3);
        let got = shown(&candidates(None, Some("x"), &env(), Os::Windows));
        assert_eq!(
            got,
            [
                r"\\.\pipe\docker_kaname_x_sandboxd",
                r"\\.\pipe\docker_kaname_sandboxd"
            ]
        );
    }

    #[test]
    fn explicit_then_env_override_are_the_only_candidate() {
        let mut e = env();
        e.docker_sandboxes_api = Some("/env.sock".into());
        assert_eq!(
            shown(&candidates(Some("/x.sock"), None, &e, Os::Linux)),
            ["/x.sock"]
        );
        assert_eq!(shown(&candidates(None, None, &e, Os::Linux)), ["/env.sock"]);
        assert_eq!(
            candidates(Some(r"\\.\pipe\p"), None, &e, Os::Windows),
            [Endpoint::Pipe(r"\\.\pipe\p".into())]
        );
    }

    #[tokio::test]
    async fn a_pipe_cannot_be_opened_off_windows() {
        let e = connect(&Endpoint::Pipe(r"\\.\pipe\x".into()))
            .await
            .err()
            .unwrap();
        assert_eq!(e.kind(), std::io::ErrorKind::Unsupported);
    }
}
