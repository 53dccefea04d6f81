//! The Docker Sandboxes API v1 (`spec/sandboxes-api-v1.openapi.yaml`): the SDK's third backend, served by Docker's
//! cloud and, by design, by local daemons (LocalSandboxd's Unix socket with `localSocket` authentication).
//!
//! - [`connect`] / [`V1Options`]: the backend ([`backend::V1Backend`], `kind() == "v1"`).
//! - [`client`]: the contract's rules (auth, retries, etags, idempotency, 202 polling, pages, errors).
//! - [`interact`]: durable processes over the `interact` WebSocket, resumed after a dropped socket.
//! - [`secrets`]: the SDK's secrets as stored custom secrets attached at create.
//! - [`snapshots`]: create (until ready), list, restore as a new sandbox, delete.
//! - [`transport`] (Unix socket / HTTPS), [`auth`] (token, PAT exchange, redaction), [`model`] (wire types).
//! - `contract` (tests only): the validator that checks every request and response the tests see.
//!
//! Unix only: on Windows [`connect`] answers `ERR_UNSUPPORTED`.

#[cfg(unix)]
pub mod auth;
#[cfg(unix)]
pub mod backend;
#[cfg(unix)]
pub mod client;
#[cfg(test)]
pub mod contract;
#[cfg(unix)]
pub mod interact;
#[cfg(all(test, unix))]
mod local_tests;
pub mod model;
#[cfg(unix)]
pub mod secrets;
#[cfg(unix)]
pub mod snapshots;
#[cfg(all(test, unix))]
mod tests;
#[cfg(unix)]
pub mod transport;

use super::backend::SandboxBackend;
use super::call::Call;
use super::error::Result;
use std::sync::Arc;

/// How to reach a v1 service. `Debug` never prints the token or the PAT.
#[derive(Clone, Default)]
pub struct V1Options {
    /// Management base: `unix:///path/to.sock` (localSocket auth) or `https://host/prefix` (default
    /// `https://connect.docker.com/sandboxes`).
    pub endpoint: Option<String>,
    /// A ready access token (Bearer). Never logged, never in errors.
    pub token: Option<String>,
    /// Docker ID + PAT, exchanged at `{hub_url}/v2/auth/token` for an access token (refreshed before expiry, once
    /// on 401).
    pub identifier: Option<String>,
    pub pat: Option<String>,
    /// Default `https://hub.docker.com`.
    pub hub_url: Option<String>,
    /// Extra trusted CA (PEM) for HTTPS (tests use a local CA).
    pub ca_pem: Option<String>,
}

impl std::fmt::Debug for V1Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("V1Options")
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .field("identifier", &self.identifier)
            .field("pat", &self.pat.as_ref().map(|_| "[redacted]"))
            .field("hub_url", &self.hub_url)
            .field("ca_pem", &self.ca_pem.as_ref().map(|_| "[pem]"))
            .finish()
    }
}

/// The v1 backend for `o` (kind `v1`). Options are checked here; nothing is sent until the first call.
#[cfg(unix)]
pub async fn connect(o: &V1Options, call: &Call) -> Result<Arc<dyn SandboxBackend>> {
    backend::connect(o, call).await
}

/// The v1 backend needs Unix sockets and rustls, which this platform's build has not: `ERR_UNSUPPORTED`.
#[cfg(not(unix))]
pub async fn connect(o: &V1Options, call: &Call) -> Result<Arc<dyn SandboxBackend>> {
    let _ = (o, call);
    Err(super::backend::unsupported(
        "v1",
        "support on this platform yet",
    ))
}
