//! Running a core future as a JS promise: AbortSignal in, typed errors out, panics caught.

pub use super::settle::Pending;
use crate::core::{Error as CoreError, ErrorCode};
use futures::FutureExt;
use napi::bindgen_prelude::*;
use napi::{Env, Status};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use tokio_util::sync::CancellationToken;

/// Options accepted by every call that can wait.
#[napi(object, object_to_js = false)]
pub struct CallOptions<'a> {
    /// Aborting rejects the call with `ABORT_ERR` (and stops the work it started).
    #[napi(ts_type = "AbortSignal")]
    pub signal: Option<Object<'a>>,
    /// Deadline for this call in milliseconds; past it the call rejects with `ERR_TIMEOUT`.
    pub timeout_ms: Option<f64>,
}

/// `addEventListener` / `removeEventListener` as seen from Rust.
type ListenerFn<'a> = Function<'a, FnArgs<(&'a str, Function<'a, (), ()>)>, Unknown<'a>>;

/// A JS AbortSignal linked to a CancellationToken; the listener is removed when the call settles (or the stream
/// ends). One dropped without [`unlink`] (a handle collected unfinished) is kept for the next [`link_signal`] on
/// this thread to unlink, since only there is an env at hand: its references would otherwise hold the signal
/// and leave the listener on it for good.
pub struct Linked {
    signal: Option<ObjectRef<false>>,
    listener: Option<FunctionRef<(), ()>>,
}

thread_local! {
    /// Links dropped without [`unlink`] on this JS thread, waiting for an env.
    static ORPHANS: std::cell::RefCell<Vec<Linked>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Drop for Linked {
    fn drop(&mut self) {
        if self.signal.is_none() {
            return;
        }
        let mut orphan = Some(Linked {
            signal: self.signal.take(),
            listener: self.listener.take(),
        });
        let _ = ORPHANS.try_with(|o| {
            if let Ok(mut o) = o.try_borrow_mut() {
                o.extend(orphan.take());
            }
        });
        // The thread is going away (or the list is busy): leave the references as they are.
        std::mem::forget(orphan);
    }
}

fn link_signal(env: &Env, signal: &Object, token: &CancellationToken) -> Result<Option<Linked>> {
    let orphans = ORPHANS
        .try_with(|o| o.try_borrow_mut().map(|mut o| std::mem::take(&mut *o)))
        .ok()
        .and_then(|o| o.ok())
        .unwrap_or_default();
    for l in orphans {
        unlink(env, l);
    }
    if signal
        .get_named_property::<bool>("aborted")
        .unwrap_or(false)
    {
        token.cancel();
        return Ok(None);
    }
    let t = token.clone();
    let listener = env.create_function_from_closure::<(), (), _>("sandboxdAbort", move |_| {
        t.cancel();
        Ok(())
    })?;
    let add: ListenerFn = signal.get_named_property("addEventListener").map_err(|_| {
        Error::new(
            Status::InvalidArg,
            "signal must be an AbortSignal".to_string(),
        )
    })?;
    add.apply(signal, FnArgs::from(("abort", listener)))?;
    Ok(Some(Linked {
        signal: Some(signal.create_ref::<false>()?),
        listener: Some(listener.create_ref()?),
    }))
}

/// Unlink what `slot` holds, if anything (a handle's link, released when its stream or process ends).
pub fn unlink_slot(slot: &std::cell::RefCell<Option<Linked>>, env: &Env) {
    if let Some(l) = slot.borrow_mut().take() {
        unlink(env, l);
    }
}

/// Remove the listener from the signal and release both references.
pub fn unlink(env: &Env, mut linked: Linked) {
    let (Some(signal_ref), listener) = (linked.signal.take(), linked.listener.take()) else {
        return;
    };
    if let (Ok(signal), Some(Ok(listener))) = (
        signal_ref.get_value(env),
        listener.as_ref().map(|l| l.borrow_back(env)),
    ) {
        if let Ok(remove) = signal.get_named_property::<ListenerFn>("removeEventListener") {
            let _ = remove.apply(signal, FnArgs::from(("abort", listener)));
        }
    }
    let _ = signal_ref.unref(env);
}

/// Turn a core error into a JS `Error` with `code`, `name` (for aborts) and every property.
pub fn js_error(env: &Env, e: CoreError) -> Error {
    let build = || -> Result<Error> {
        let mut obj = env.create_error(Error::new(Status::GenericFailure, e.message.clone()))?;
        obj.set_named_property("code", e.code.as_str())?;
        if e.code == ErrorCode::Aborted {
            obj.set_named_property("name", "AbortError")?;
        }
        for (k, v) in &e.props {
            if k != "code" && k != "message" {
                obj.set_named_property(k, v.clone())?;
            }
        }
        if let Some(out) = e.result.clone() {
            let r = super::exec::exec_result_ref(env, *out)?;
            obj.set_named_property("result", r)?;
        }
        Ok(Error::from_unknown_without_coercion(obj.to_unknown()))
    };
    build().unwrap_or_else(|_| Error::new(Status::GenericFailure, e.to_string()))
}

fn panic_error(p: Box<dyn std::any::Any + Send>) -> CoreError {
    let msg = p
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string());
    CoreError::internal(format!("internal error (panic): {msg}"))
}

/// Read `{ signal, timeoutMs }`: the token to cancel and the validated deadline.
#[allow(clippy::type_complexity)]
pub fn read_options(
    env: &Env,
    signal: Option<&Object>,
    timeout_ms: Option<f64>,
) -> std::result::Result<
    (
        CancellationToken,
        Option<std::time::Duration>,
        Option<Linked>,
    ),
    CoreError,
> {
    let token = CancellationToken::new();
    let timeout = timeout_ms
        .map(|ms| crate::core::validate::timeout_ms("timeoutMs", ms))
        .transpose()?;
    let linked = match signal {
        Some(sig) => link_signal(env, sig, &token).map_err(|e| {
            CoreError::invalid(format!("signal: {}", e.reason)).with("argument", "signal")
        })?,
        None => None,
    };
    Ok((token, timeout, linked))
}

/// The promise for `fut`: resolves with its value, rejects with a typed JS error, never lets a panic through.
pub fn promise<T, F>(env: &Env, linked: Option<Linked>, fut: F) -> Result<Pending<T>>
where
    T: ToNapiValue + Send + 'static,
    F: Future<Output = crate::core::Result<T>> + Send + 'static,
{
    promise_map(env, linked, fut, |_, v| Ok(v))
}

/// Like [`promise`], with `map` run on the JS thread to turn the core value into the JS one.
pub fn promise_map<T, U, F, M>(
    env: &Env,
    linked: Option<Linked>,
    fut: F,
    map: M,
) -> Result<Pending<U>>
where
    T: Send + 'static,
    U: ToNapiValue + 'static,
    F: Future<Output = crate::core::Result<T>> + Send + 'static,
    M: FnOnce(&Env, T) -> Result<U> + 'static,
{
    let settle = Box::new(move |env: &Env, out: Box<dyn std::any::Any + Send>| {
        if let Some(l) = linked {
            unlink(env, l);
        }
        let out = *out.downcast::<crate::core::Result<T>>().map_err(|_| {
            Error::new(
                Status::GenericFailure,
                "internal error: settled with the wrong type",
            )
        })?;
        match out {
            Ok(v) => {
                let v = map(env, v)?;
                unsafe { U::to_napi_value(env.raw(), v) }
            }
            Err(e) => Err(js_error(env, e)),
        }
    });
    let (pending, settler) = super::settle::register::<U>(env, settle)?;
    let fallback = settler.clone();
    let task = async move {
        let out = AssertUnwindSafe(fut)
            .catch_unwind()
            .await
            .unwrap_or_else(|p| Err(panic_error(p)));
        settler.send(Box::new(out));
    };
    // napi-rs's spawn panics once its runtime is shut down (env teardown); the promise must still settle,
    // or the pending entry would keep the settle function referenced and the process alive.
    if std::panic::catch_unwind(AssertUnwindSafe(|| napi::bindgen_prelude::spawn(task))).is_err() {
        let gone: crate::core::Result<T> =
            Err(CoreError::internal("the SDK's async runtime is shut down"));
        fallback.send(Box::new(gone));
    }
    Ok(pending)
}

/// The bytes of a `string | Uint8Array` argument (a string as UTF-8).
pub fn bytes_of(data: &Either<String, Uint8Array>) -> bytes::Bytes {
    match data {
        Either::A(s) => bytes::Bytes::copy_from_slice(s.as_bytes()),
        Either::B(b) => bytes::Bytes::copy_from_slice(b),
    }
}

/// A promise that rejects at once with `e` (bad options found before any work started).
pub fn rejected<T: ToNapiValue + 'static>(env: &Env, e: CoreError) -> Result<Pending<T>> {
    promise_map(
        env,
        None,
        async move { Err(e) },
        |_, never: std::convert::Infallible| match never {},
    )
}

/// Run with a [`CallOptions`] object (or none).
pub fn run_with<T, F>(
    env: &Env,
    opts: Option<&CallOptions>,
    make: impl FnOnce(CancellationToken, Option<std::time::Duration>) -> F,
) -> Result<Pending<T>>
where
    T: ToNapiValue + Send + 'static,
    F: Future<Output = crate::core::Result<T>> + Send + 'static,
{
    run(
        env,
        opts.and_then(|o| o.signal.as_ref()),
        opts.and_then(|o| o.timeout_ms),
        make,
    )
}

/// Read the options, then run `make(token, timeout)` as a promise.
pub fn run<T, F>(
    env: &Env,
    signal: Option<&Object>,
    timeout_ms: Option<f64>,
    make: impl FnOnce(CancellationToken, Option<std::time::Duration>) -> F,
) -> Result<Pending<T>>
where
    T: ToNapiValue + Send + 'static,
    F: Future<Output = crate::core::Result<T>> + Send + 'static,
{
    match read_options(env, signal, timeout_ms) {
        Ok((token, timeout, linked)) => promise(env, linked, make(token, timeout)),
        Err(e) => rejected(env, e),
    }
}
