//! A listener inside another process's network namespace: LocalSandboxd binds the proxy's address in each
//! sandbox container's namespace (Docker's `none` network: a loopback and nothing else), so the proxy is the
//! only address a sandbox can reach. A socket keeps the namespace it was made in, so the listener is served
//! from LocalSandboxd's own namespace while it accepts connections made inside the container.

use crate::core::error::{Error, Result};
use std::net::SocketAddr;

/// Binds `addr` in the network namespace of process `pid` (needs root: `setns` takes `CAP_SYS_ADMIN`). The bind
/// runs on a short-lived thread made for it, so no other thread ever changes namespace.
#[cfg(target_os = "linux")]
pub fn bind_in_netns(pid: u32, addr: SocketAddr) -> Result<std::net::TcpListener> {
    use std::os::fd::AsRawFd;
    let path = format!("/proc/{pid}/ns/net");
    let ns =
        std::fs::File::open(&path).map_err(|e| Error::internal(format!("opening {path}: {e}")))?;
    std::thread::spawn(move || {
        // SAFETY: setns on a descriptor we own; it changes only this thread, which ends after the bind.
        let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            return Err(Error::internal(format!(
                "entering the sandbox's network namespace ({path}): {e}"
            )));
        }
        std::net::TcpListener::bind(addr).map_err(|e| {
            Error::internal(format!(
                "binding {addr} in the sandbox's network namespace: {e}"
            ))
        })
    })
    .join()
    .map_err(|_| Error::internal("the namespace thread panicked"))?
}

/// Off Linux there are no network namespaces to enter.
#[cfg(not(target_os = "linux"))]
pub fn bind_in_netns(_pid: u32, _addr: SocketAddr) -> Result<std::net::TcpListener> {
    Err(Error::internal(
        "binding in a network namespace needs Linux".to_string(),
    ))
}
