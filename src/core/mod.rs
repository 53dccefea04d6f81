//! The pure Rust core. Nothing here knows about napi; the binding layer converts.

pub mod error;
pub mod http;
pub mod local;
pub mod sandboxd;
pub mod validate;
pub mod vm;

pub use error::{Error, ErrorCode, Result};
