//! JS class `Forward` over [`crate::core::forward::Forward`], and the `forward()` call containers and sandboxes
//! share.

use super::call::{has_call, promise, run, AbortSignal, Promise};
use crate::core::backend::ExecTarget;
use crate::core::forward;
use napi::bindgen_prelude::*;
use napi::Env;
use std::sync::Arc;

/// Options for `forward(port)`.
#[napi(object, object_to_js = false)]
pub struct ForwardOptions<'a> {
    /// The host port on 127.0.0.1 (default: any free one).
    pub host_port: Option<u32>,
    /// Aborting rejects with `ABORT_ERR` while the forward is being set up.
    pub signal: Option<AbortSignal<'a>>,
    /// Deadline for setting it up, in milliseconds (default 30 s).
    pub timeout_ms: Option<f64>,
}

has_call!(ForwardOptions);

/// A loopback listener whose connections reach a port inside the sandbox through exec tunnels.
#[napi]
pub struct Forward {
    inner: Arc<forward::Forward>,
    port: u16,
}

/// A port number given as `what`: 1..=65535 (0 too with `zero_ok`: any free port), else `ERR_INVALID_ARGUMENT`.
pub(crate) fn port_arg(v: u32, what: &str, zero_ok: bool) -> crate::core::Result<u16> {
    u16::try_from(v)
        .ok()
        .filter(|p| zero_ok || *p > 0)
        .ok_or_else(|| {
            crate::core::Error::invalid(format!("{what} must be 1 to 65535, got {v}"))
                .with("argument", what)
        })
}

/// `forward(port, options)` on any exec target.
pub(crate) fn forward_on(
    env: Env,
    target: Arc<dyn ExecTarget>,
    port: u32,
    options: Option<ForwardOptions>,
) -> Result<Promise<Forward>> {
    let ports = port_arg(port, "port", false).and_then(|p| {
        let host = options.as_ref().and_then(|o| o.host_port);
        Ok((p, host.map(|h| port_arg(h, "hostPort", true)).transpose()?))
    });
    run(&env, options.as_ref(), move |call| async move {
        let (port, host_port) = ports?;
        let inner = forward::Forward::start(target, port, host_port, &call).await?;
        Ok(Forward {
            inner: Arc::new(inner),
            port,
        })
    })
}

#[napi]
impl Forward {
    /// `http://127.0.0.1:<hostPort>`.
    #[napi(catch_unwind, getter)]
    pub fn url(&self) -> String {
        format!("http://{}", self.inner.addr())
    }

    /// The host port it listens on (127.0.0.1).
    #[napi(catch_unwind, getter)]
    pub fn host_port(&self) -> u32 {
        self.inner.addr().port().into()
    }

    /// The port inside the sandbox.
    #[napi(catch_unwind, getter)]
    pub fn port(&self) -> u32 {
        self.port.into()
    }

    /// Stop listening and end every open connection (their tunnels inside the sandbox go too). Idempotent.
    #[napi(catch_unwind, ts_return_type = "Promise<void>")]
    pub fn close(&self, env: Env) -> Result<Promise<()>> {
        let f = self.inner.clone();
        promise(&env, async move {
            f.close().await;
            Ok(())
        })
    }
}
