//! The free function `doctor()` over [`crate::core::doctor`].

// napi registers a free function only outside test builds, so there nothing calls it.
#![cfg_attr(test, allow(dead_code))]

use super::call::{has_call, run, AbortSignal, Promise};
use crate::core::doctor::{self, DoctorOptions as CoreOptions};
use crate::core::Error as CoreError;
use napi::bindgen_prelude::*;
use napi::Env;

/// Options for `doctor()`.
#[napi(object, object_to_js = false)]
pub struct DoctorOptions<'a> {
    /// A socket path (or `\\.\pipe\…`): the only sbx candidate, also probed for the legacy `/vm` API.
    pub socket_path: Option<String>,
    /// The sbx app name (`sbx --app-name`). Default: `DOCKER_SANDBOXES_APP_NAME`.
    pub app_name: Option<String>,
    /// Aborting rejects with `ABORT_ERR`.
    pub signal: Option<AbortSignal<'a>>,
    /// Deadline for the whole run in milliseconds (default 30 s); probes past it are reported as skipped.
    pub timeout_ms: Option<f64>,
}

has_call!(DoctorOptions);

/// What the SDK finds on this machine: every sbx candidate socket, the daemon's version and routes, the legacy
/// `/vm` API, and the backend the SDK would use. Never rejects for what it finds (only for bad options or an
/// abort).
#[napi(catch_unwind, ts_return_type = "Promise<Record<string, unknown>>")]
pub fn doctor(env: Env, options: Option<DoctorOptions>) -> Result<Promise<serde_json::Value>> {
    let core = CoreOptions {
        socket_path: options.as_ref().and_then(|o| o.socket_path.clone()),
        app_name: options.as_ref().and_then(|o| o.app_name.clone()),
        timeout: None,
    };
    run(&env, options.as_ref(), move |call| async move {
        let report = doctor::doctor(&core, &call).await;
        if call.cancel.is_cancelled() {
            return Err(CoreError::aborted());
        }
        serde_json::to_value(report).map_err(|e| CoreError::internal(format!("doctor report: {e}")))
    })
}
