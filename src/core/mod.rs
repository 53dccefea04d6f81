//! The pure Rust core. Nothing here knows about napi; the binding layer converts.

pub mod container;
pub mod engine;
pub mod error;
pub mod exec;
pub mod http;
pub mod images;
pub mod local;
pub mod sandboxd;
pub mod validate;
pub mod vm;

pub use error::{Error, ErrorCode, Result};
