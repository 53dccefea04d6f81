//! The pure Rust core. Nothing here knows about napi; the binding layer converts.

pub mod acp;
pub mod agent;
pub mod agent_install;
pub mod archive;
pub mod attach;
pub mod backend;
pub mod call;
pub mod container;
pub mod desktop;
pub mod desktop_policy;
pub mod doctor;
pub mod engine;
pub mod error;
pub mod exec;
pub mod files;
pub mod forward;
pub mod http;
pub mod images;
pub mod lines;
pub mod multipart;
pub mod netpolicy;
pub mod policy;
// LocalSandboxd serves a Unix socket; where there is none (Windows) a stand-in with the same API refuses to start.
#[cfg_attr(not(unix), path = "local/unsupported.rs")]
pub mod local;
pub mod sandboxd;
pub mod sandboxes;
pub mod sbx;
pub mod session;
pub mod socket;
pub mod sse;
pub mod tunnel;
pub mod turns;
pub mod v1;
pub mod validate;
pub mod vm;

pub use call::Call;
pub use error::{Error, ErrorCode, Result};
