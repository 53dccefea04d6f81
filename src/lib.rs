//! `sandboxd`: a Node.js SDK for Docker Sandboxes with a Rust core.
//!
//! - [`core`] is plain Rust (tokio, hyper, bollard): no napi types, unit-tested with `cargo test`.
//! - `binding` (feature `napi`) is the thin layer that converts options, results, errors and streams for JS.
#![deny(clippy::all)]

pub mod core;

#[cfg(feature = "napi")]
#[macro_use]
extern crate napi_derive;

#[cfg(feature = "napi")]
mod binding;
