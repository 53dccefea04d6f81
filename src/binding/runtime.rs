//! The tokio runtime the binding runs its futures on.
//!
//! One worker thread unless `TOKIO_WORKER_THREADS` says otherwise. Everything the SDK does on it is
//! socket I/O, framing and JSON; one worker keeps a call to one hop from the JS thread and one hop back,
//! where napi-rs's default (a worker per core) also moves work between workers (BENCHMARKS.md, T5).

/// Install the runtime before napi-rs first needs one (module registration; once per process).
#[napi_derive::module_init]
fn init() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(install);
}

fn install() {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all().thread_name("sandboxd-io");
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        builder.worker_threads(1);
    }
    // If this fails, napi-rs builds its default runtime on first use instead.
    if let Ok(rt) = builder.build() {
        napi::bindgen_prelude::create_custom_tokio_runtime(rt);
    }
}
