//! The Docker engine behind each LocalSandboxd VM: a private `dockerd` (Linux only, see [`super::dockerd`]), or a
//! relay to an existing engine (any Unix).

use super::dockerd::DockerdEngine;
use crate::core::error::{Error, ErrorCode, Result};
use crate::core::http::UnixHttp;
use hyper::Method;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Which engine a VM gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// One private dockerd per VM (own data root, exec root and socket): VMs are isolated from each other.
    Dockerd { dockerd: PathBuf },
    /// The VM socket forwards every connection to an existing engine socket. VMs are NOT isolated.
    Relay { target: PathBuf },
}

impl Backend {
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Dockerd { .. } => "dockerd",
            Backend::Relay { .. } => "relay",
        }
    }
}

/// A running engine for one VM.
pub enum VmEngine {
    Dockerd(Box<DockerdEngine>),
    Relay(RelayEngine),
}

impl VmEngine {
    /// Start the engine so that `socket` answers the Docker Engine API.
    pub async fn start(
        backend: &Backend,
        name: &str,
        socket: &Path,
        engine_dir: &Path,
    ) -> Result<VmEngine> {
        match backend {
            Backend::Dockerd { dockerd } => DockerdEngine::start(dockerd, name, socket, engine_dir)
                .await
                .map(|d| VmEngine::Dockerd(Box::new(d))),
            Backend::Relay { target } => RelayEngine::start(target, socket)
                .await
                .map(VmEngine::Relay),
        }
    }

    /// Stop the engine and remove everything it left: processes, mounts, sockets, data.
    pub async fn stop(&self) {
        match self {
            VmEngine::Dockerd(d) => d.stop().await,
            VmEngine::Relay(r) => r.stop().await,
        }
    }

    /// Last-resort synchronous teardown (process exit): SIGKILL, unmount, delete.
    pub fn kill_now(&self) {
        match self {
            VmEngine::Dockerd(d) => d.kill_now(),
            VmEngine::Relay(r) => r.kill_now(),
        }
    }

    /// The dockerd process id, when there is one.
    pub fn pid(&self) -> Option<u32> {
        match self {
            VmEngine::Dockerd(d) => Some(d.pid()),
            VmEngine::Relay(_) => None,
        }
    }
}

pub(super) fn emulator_error(msg: impl Into<String>) -> Error {
    Error::new(ErrorCode::Emulator, msg)
}

/// A Unix listener at the VM socket that splices each connection to an existing engine socket.
pub struct RelayEngine {
    socket: PathBuf,
    stop: CancellationToken,
    tasks: TaskTracker,
    accept: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl RelayEngine {
    async fn start(target: &Path, socket: &Path) -> Result<Self> {
        // Fail at create time, not at first use, when the target engine is not there.
        let http = UnixHttp::new(target);
        match http.request(Method::GET, "/_ping", None, 4096).await {
            Ok(r) if r.status == 200 => {}
            Ok(r) => {
                return Err(emulator_error(format!(
                    "relay target {} answered /_ping with HTTP {}",
                    target.display(),
                    r.status
                )))
            }
            Err(e) => {
                return Err(emulator_error(format!(
                    "relay target engine {} is not reachable: {e:?}",
                    target.display()
                )))
            }
        }
        let _ = std::fs::remove_file(socket);
        let listener = UnixListener::bind(socket)
            .map_err(|e| emulator_error(format!("binding {}: {e}", socket.display())))?;
        let _ = std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600));
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let target = target.to_path_buf();
        let (stop2, tasks2) = (stop.clone(), tasks.clone());
        let accept = tokio::spawn(async move {
            loop {
                let conn = tokio::select! {
                    _ = stop2.cancelled() => break,
                    c = listener.accept() => c,
                };
                let Ok((mut inbound, _)) = conn else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let target = target.clone();
                let stop3 = stop2.clone();
                tasks2.spawn(async move {
                    let Ok(mut outbound) = UnixStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = stop3.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                });
            }
        });
        Ok(RelayEngine {
            socket: socket.to_path_buf(),
            stop,
            tasks,
            accept: Mutex::new(Some(accept)),
        })
    }

    async fn stop(&self) {
        self.stop.cancel();
        let accept = self.accept.lock().ok().and_then(|mut a| a.take());
        if let Some(a) = accept {
            let _ = a.await;
        }
        self.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.tasks.wait()).await;
        let _ = std::fs::remove_file(&self.socket);
    }

    fn kill_now(&self) {
        self.stop.cancel();
        let _ = std::fs::remove_file(&self.socket);
    }
}
