//! Running a core future as a JS promise: `{ signal, timeoutMs }` in as a core [`Call`], typed errors out,
//! panics caught.

pub use super::settle::Promise;
use crate::core::{Call, Error as CoreError, ErrorCode};
use futures::FutureExt;
use napi::bindgen_prelude::*;
use napi::{Env, Status};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use tokio_util::sync::CancellationToken;

/// A JS `AbortSignal` option (typed so in index.d.ts), linked to the call's cancellation while the call runs.
pub struct AbortSignal<'a>(Object<'a>);

impl TypeName for AbortSignal<'_> {
    fn type_name() -> &'static str {
        "AbortSignal"
    }

    fn value_type() -> ValueType {
        ValueType::Object
    }
}

impl ValidateNapiValue for AbortSignal<'_> {}

impl FromNapiValue for AbortSignal<'_> {
    unsafe fn from_napi_value(env: napi::sys::napi_env, v: napi::sys::napi_value) -> Result<Self> {
        Ok(AbortSignal(unsafe { Object::from_napi_value(env, v) }?))
    }
}

/// Options accepted by every call that can wait.
#[napi(object, object_to_js = false)]
pub struct CallOptions<'a> {
    /// Aborting rejects the call with `ABORT_ERR` (and stops the work it started).
    pub signal: Option<AbortSignal<'a>>,
    /// Deadline for this call in milliseconds; past it the call rejects with `ERR_TIMEOUT`.
    pub timeout_ms: Option<f64>,
}

/// An options object that carries `{ signal, timeoutMs }`.
pub trait HasCall {
    /// The AbortSignal, if given.
    fn signal(&self) -> Option<&AbortSignal<'_>>;
    /// The call's deadline in milliseconds, if given.
    fn timeout_ms(&self) -> Option<f64>;
}

/// `impl HasCall` for options types with `signal` and `timeout_ms` fields.
macro_rules! has_call {
    ($($t:ident),* $(,)?) => {$(
        impl $crate::binding::call::HasCall for $t<'_> {
            fn signal(&self) -> Option<&$crate::binding::call::AbortSignal<'_>> {
                self.signal.as_ref()
            }
            fn timeout_ms(&self) -> Option<f64> {
                self.timeout_ms
            }
        }
    )*};
}
pub(crate) use has_call;

has_call!(CallOptions);

/// Only the signal of an options object, for calls whose `timeoutMs` means something else.
pub struct SignalOnly<'o, 'a>(pub Option<&'o AbortSignal<'a>>);

impl HasCall for SignalOnly<'_, '_> {
    fn signal(&self) -> Option<&AbortSignal<'_>> {
        self.0
    }
    fn timeout_ms(&self) -> Option<f64> {
        None
    }
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

fn link_signal(
    env: &Env,
    signal: &AbortSignal,
    token: &CancellationToken,
) -> Result<Option<Linked>> {
    let orphans = ORPHANS
        .try_with(|o| o.try_borrow_mut().map(|mut o| std::mem::take(&mut *o)))
        .ok()
        .and_then(|o| o.ok())
        .unwrap_or_default();
    for l in orphans {
        unlink(env, l);
    }
    let signal = &signal.0;
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

/// Read `{ signal, timeoutMs }` into a core [`Call`], with the signal's link (to release when the call ends).
pub fn read_call<O: HasCall>(
    env: &Env,
    options: Option<&O>,
) -> std::result::Result<(Call, Option<Linked>), CoreError> {
    let token = CancellationToken::new();
    let timeout = options
        .and_then(HasCall::timeout_ms)
        .map(|ms| crate::core::validate::timeout_ms("timeoutMs", ms))
        .transpose()?;
    let linked = match options.and_then(HasCall::signal) {
        Some(sig) => link_signal(env, sig, &token).map_err(|e| {
            CoreError::invalid(format!("signal: {}", e.reason)).with("argument", "signal")
        })?,
        None => None,
    };
    Ok((Call::new(timeout, token), linked))
}

/// The one way to run a method with options: read them into a [`Call`] (bad options reject), run
/// `make(call)`, resolve with its value. The signal's link is released when the promise settles.
pub fn run<O, T, F>(
    env: &Env,
    options: Option<&O>,
    make: impl FnOnce(Call) -> F,
) -> Result<Promise<T>>
where
    O: HasCall,
    T: ToNapiValue + Send + 'static,
    F: Future<Output = crate::core::Result<T>> + Send + 'static,
{
    match read_call(env, options) {
        Ok((call, linked)) => settle(env, linked, make(call), |_, v| Ok(v)),
        Err(e) => promise(env, async move { Err(e) }),
    }
}

/// The promise for `fut` (a method with no options).
pub fn promise<T, F>(env: &Env, fut: F) -> Result<Promise<T>>
where
    T: ToNapiValue + Send + 'static,
    F: Future<Output = crate::core::Result<T>> + Send + 'static,
{
    settle(env, None, fut, |_, v| Ok(v))
}

/// The promise for `fut`, with `map` run on the JS thread to turn its value into the JS one and `linked`
/// released when it settles. A rejection carries the SDK's error; a panic becomes `ERR_INTERNAL`.
pub fn settle<T, U, F, M>(env: &Env, linked: Option<Linked>, fut: F, map: M) -> Result<Promise<U>>
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
