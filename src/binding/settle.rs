//! Settling promises from the tokio runtime through one threadsafe function per JS thread.
//!
//! napi-rs's `AsyncBlock` creates a threadsafe function (an async handle, a cleanup hook, a finalizer) for
//! every promise and tears it down when the promise settles, a cost on every call (BENCHMARKS.md, T5). Here
//! each JS thread (the main thread, or a worker)
//! keeps one threadsafe function for good; a finished future sends `(id, value)` through it and the JS
//! thread settles the deferred registered under `id`.
//!
//! The threadsafe function is referenced only while promises are pending, so it never keeps the process
//! alive on its own. An env cleanup hook (which runs before Node finalizes the threadsafe function)
//! clears the shared handle under its lock, so a future finishing during teardown drops its value
//! instead of calling into a freed function.

use napi::bindgen_prelude::*;
use napi::{sys, Env};
use std::any::Any;
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::c_void;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::ptr;
use std::sync::{Arc, Mutex};

/// What a finished future hands to the JS thread.
type Output = Box<dyn Any + Send>;
/// Runs on the JS thread: turns the output into the value to resolve with, or the error to reject with.
type Settle = Box<dyn FnOnce(&Env, Output) -> Result<sys::napi_value>>;

/// The threadsafe function, shared with the tokio threads; `None` once its env is torn down.
struct Shared {
    tsfn: Mutex<Option<Tsfn>>,
}

struct Tsfn(sys::napi_threadsafe_function);
// SAFETY: napi_call_threadsafe_function is the one call made on it off the JS thread, and napi allows
// that from any thread; the env cleanup hook takes it out under the same lock before Node frees it.
unsafe impl Send for Tsfn {}

/// One finished future on its way to the JS thread.
struct Done {
    id: u64,
    out: Output,
}

/// The per-JS-thread side: pending deferreds by id.
struct Local {
    env: sys::napi_env,
    shared: Arc<Shared>,
    tsfn: sys::napi_threadsafe_function,
    next_id: u64,
    pending: HashMap<u64, (sys::napi_deferred, Settle)>,
}

thread_local! {
    static LOCAL: RefCell<Option<Local>> = const { RefCell::new(None) };
}

/// The handle a finished future settles through (cheap to clone, `Send`).
#[derive(Clone)]
pub struct Settler {
    shared: Arc<Shared>,
    id: u64,
}

impl Settler {
    /// Hand `out` to the JS thread. Dropped silently if the env is gone.
    pub fn send(self, out: Output) {
        let guard = self.shared.tsfn.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = guard.as_ref() {
            let done = Box::into_raw(Box::new(Done { id: self.id, out }));
            // SAFETY: the function is alive while it is in `shared` (the cleanup hook takes it out under
            // this lock); on failure the item was not queued, so it is ours to free.
            let status = unsafe {
                sys::napi_call_threadsafe_function(
                    t.0,
                    done.cast(),
                    sys::ThreadsafeFunctionCallMode::nonblocking,
                )
            };
            if status != sys::Status::napi_ok {
                drop(unsafe { Box::from_raw(done) });
            }
        }
    }
}

/// A promise created by [`register`]; converts to the promise object. Named `Promise` so that napi's typegen
/// writes `Promise<T>` for methods that return one.
pub struct Promise<T> {
    promise: sys::napi_value,
    _t: PhantomData<T>,
}

impl<T> ToNapiValue for Promise<T> {
    unsafe fn to_napi_value(_: sys::napi_env, val: Self) -> Result<sys::napi_value> {
        Ok(val.promise)
    }
}

/// Create a promise whose settlement runs `settle` on this JS thread once the returned [`Settler`] is sent.
pub fn register<T>(env: &Env, settle: Settle) -> Result<(Promise<T>, Settler)> {
    let mut deferred = ptr::null_mut();
    let mut promise = ptr::null_mut();
    check_status!(
        unsafe { sys::napi_create_promise(env.raw(), &mut deferred, &mut promise) },
        "creating a promise"
    )?;
    LOCAL.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().map(|l| l.env) != Some(env.raw()) {
            *slot = Some(create(env)?);
        }
        let local = slot.as_mut().expect("created above");
        if local.pending.is_empty() {
            unsafe { sys::napi_ref_threadsafe_function(env.raw(), local.tsfn) };
        }
        let id = local.next_id;
        local.next_id += 1;
        local.pending.insert(id, (deferred, settle));
        Ok((
            Promise {
                promise,
                _t: PhantomData,
            },
            Settler {
                shared: local.shared.clone(),
                id,
            },
        ))
    })
}

fn create(env: &Env) -> Result<Local> {
    let mut name = ptr::null_mut();
    check_status!(
        unsafe {
            sys::napi_create_string_utf8(env.raw(), c"sandboxd settle".as_ptr(), 15, &mut name)
        },
        "naming the settle function"
    )?;
    let mut tsfn = ptr::null_mut();
    check_status!(
        unsafe {
            sys::napi_create_threadsafe_function(
                env.raw(),
                ptr::null_mut(),
                ptr::null_mut(),
                name,
                0,
                1,
                ptr::null_mut(),
                None,
                ptr::null_mut(),
                Some(call_js),
                &mut tsfn,
            )
        },
        "creating the settle function"
    )?;
    unsafe { sys::napi_unref_threadsafe_function(env.raw(), tsfn) };
    let shared = Arc::new(Shared {
        tsfn: Mutex::new(Some(Tsfn(tsfn))),
    });
    // Registered after the threadsafe function, so it runs before Node's own teardown of it.
    let hook = Arc::into_raw(shared.clone()) as *mut c_void;
    check_status!(
        unsafe { sys::napi_add_env_cleanup_hook(env.raw(), Some(teardown), hook) },
        "registering the settle cleanup hook"
    )?;
    Ok(Local {
        env: env.raw(),
        shared,
        tsfn,
        next_id: 0,
        pending: HashMap::new(),
    })
}

unsafe extern "C" fn teardown(data: *mut c_void) {
    let shared = unsafe { Arc::from_raw(data as *const Shared) };
    shared.tsfn.lock().unwrap_or_else(|p| p.into_inner()).take();
    // The deferreds die with the env; their settle closures may hold napi references, which must not be
    // released now.
    LOCAL.with(|cell| {
        if let Ok(mut slot) = cell.try_borrow_mut() {
            if let Some(local) = slot.take() {
                std::mem::forget(local.pending);
            }
        }
    });
}

unsafe extern "C" fn call_js(
    env: sys::napi_env,
    _js_callback: sys::napi_value,
    _context: *mut c_void,
    data: *mut c_void,
) {
    let done = unsafe { Box::from_raw(data as *mut Done) };
    if env.is_null() {
        return;
    }
    let entry = LOCAL.with(|cell| {
        let mut slot = cell.borrow_mut();
        let local = slot.as_mut()?;
        let entry = local.pending.remove(&done.id)?;
        if local.pending.is_empty() {
            unsafe { sys::napi_unref_threadsafe_function(env, local.tsfn) };
        }
        Some(entry)
    });
    let Some((deferred, settle)) = entry else {
        return;
    };
    let env = Env::from_raw(env);
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| settle(&env, done.out)))
        .unwrap_or_else(|_| {
            Err(Error::new(
                Status::GenericFailure,
                "internal error (panic while settling a promise)".to_string(),
            ))
        });
    unsafe {
        match outcome {
            Ok(v) => {
                sys::napi_resolve_deferred(env.raw(), deferred, v);
            }
            Err(e) => {
                let v = match JsError::to_napi_value(env.raw(), JsError::from(e)) {
                    Ok(v) => v,
                    Err(_) => {
                        let mut u = ptr::null_mut();
                        sys::napi_get_undefined(env.raw(), &mut u);
                        u
                    }
                };
                sys::napi_reject_deferred(env.raw(), deferred, v);
            }
        }
    }
}
