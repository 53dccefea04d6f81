//! The Docker Sandboxes API v1 (`spec/sandboxes-api-v1.openapi.yaml`): the SDK's third backend, served by Docker's
//! cloud and, by design, by local daemons. So far only the contract's validator is here (tests use it to check
//! what the client sends and what LocalSandboxd answers); the client and LocalSandboxd's v1 routes come next.

#[cfg(test)]
pub mod contract;
