//! The sbx daemon client (Docker Sandboxes' standalone `sbx`): its private REST API over a Unix socket (a named
//! pipe on Windows), as documented in `shared/docs/sbx-api.md` §4.
//!
//! Nothing read from the daemon is trusted to be complete: unknown fields are ignored, only `name` is required
//! of a sandbox, and every answer outside the contract is a typed error carrying the daemon's own message.

mod client;
pub mod discovery;
mod exec;
mod policy;
pub mod wire;

pub use client::{
    check_version, parse_api_version, validate_sandbox_name, ApiRange, ConnectOptions, SbxClient,
    SbxSandbox, VersionMode, LENIENT_API, TESTED_API,
};
pub use discovery::{candidates, DiscoveryEnv, Endpoint, Os};
pub use exec::SbxProcess;
pub use wire::{DaemonHealth, DaemonInfo, ExecState, PortBinding, PortSpec};

#[cfg(test)]
mod tests;
