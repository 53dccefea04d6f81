//! The napi binding layer: converts options, results, errors and streams. No logic of its own.

mod call;
mod local;
mod sandboxd;
