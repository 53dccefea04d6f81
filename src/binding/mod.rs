//! The napi binding layer: converts options, results, errors and streams. No logic of its own.

mod agent;
mod archive;
mod call;
mod container;
mod doctor;
mod engine;
mod exec;
mod files;
mod forward;
mod iter;
mod local;
mod policy;
mod runtime;
mod sandboxd;
mod sandboxes;
mod settle;
