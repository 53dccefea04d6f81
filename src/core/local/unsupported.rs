//! LocalSandboxd where there are no Unix sockets to serve on (Windows): the same API, and
//! [`LocalSandboxd::start`] rejects with `ERR_EMULATOR`. The real server is `mod.rs`, compiled on every Unix.

#[path = "options.rs"]
mod options;

pub use options::{docker_host_path, BackendKind, LocalOptions, ProxySettings};

use crate::core::error::{Error, ErrorCode, Result};
use std::path::Path;

/// A running LocalSandboxd. Never constructed here ([`LocalSandboxd::start`] always fails); its methods answer
/// as a stopped server would. (Not an empty enum: the binding's code after `start` would be unreachable.)
#[derive(Clone)]
pub struct LocalSandboxd {
    _never: (),
}

impl LocalSandboxd {
    /// Rejects with `ERR_EMULATOR`: LocalSandboxd serves the sandboxd API on a Unix socket.
    pub async fn start(_opts: LocalOptions) -> Result<LocalSandboxd> {
        Err(Error::new(
            ErrorCode::Emulator,
            "LocalSandboxd serves a Unix socket and runs on Linux and macOS only",
        ))
    }

    /// Empty: no socket was bound.
    pub fn socket_path(&self) -> &Path {
        Path::new("")
    }

    /// Empty: no root was made.
    pub fn root(&self) -> &Path {
        Path::new("")
    }

    /// `relay`, the only backend off Linux.
    pub fn backend_name(&self) -> &'static str {
        "relay"
    }

    /// Empty: no engine runs.
    pub fn engine_pids(&self) -> Vec<u32> {
        Vec::new()
    }

    /// Always `true`.
    pub fn is_stopped(&self) -> bool {
        true
    }

    /// Nothing to stop.
    pub async fn stop(&self) {}

    /// A handle with nothing to kill.
    pub fn downgrade(&self) -> WeakLocalSandboxd {
        WeakLocalSandboxd { _never: () }
    }

    /// Nothing to kill.
    pub fn kill_now(&self) {}
}

/// See [`LocalSandboxd::downgrade`].
pub struct WeakLocalSandboxd {
    _never: (),
}

impl WeakLocalSandboxd {
    /// Nothing to kill.
    pub fn kill_now(&self) {}
}
