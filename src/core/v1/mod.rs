//! The Docker Sandboxes API v1 (`spec/sandboxes-api-v1.openapi.yaml`): the SDK's third backend, served by Docker's
//! cloud and, by design, by local daemons. So far: the contract's validator (tests use it to check what the client
//! sends and what LocalSandboxd answers) and the wire types both will use; the client and LocalSandboxd's v1 routes
//! come next (issue #21).

#[cfg(test)]
pub mod contract;
pub mod model;
