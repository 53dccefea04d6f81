//! The `dockerd` backend off Linux: it needs Linux mounts, `/proc` and cgroups (see `dockerd.rs`), so here it
//! cannot be chosen. [`super::LocalSandboxd::start`] refuses it with `ERR_EMULATOR` before anything starts;
//! this type only keeps [`super::engine::VmEngine`] the same on every platform.

use crate::core::error::Result;
use std::path::Path;

/// Never constructed off Linux.
pub enum DockerdEngine {}

impl DockerdEngine {
    /// Unreachable: no value exists.
    pub fn pid(&self) -> u32 {
        match *self {}
    }

    pub(super) async fn start(
        _dockerd: &Path,
        _name: &str,
        _socket: &Path,
        _engine_dir: &Path,
    ) -> Result<Self> {
        Err(super::engine::emulator_error(
            "the dockerd backend runs on Linux only; use backend 'relay'",
        ))
    }

    pub(super) async fn stop(&self) {
        match *self {}
    }

    pub(super) fn kill_now(&self) {
        match *self {}
    }
}
