//! exec results and streams for JS: `ExecResult`, `ExecProcess` (async iterator of output chunks), `ExecLines`,
//! and `LogStream` (iterators in the shape of [`super::iter`]).

use super::call::{
    js_error, promise, read_call, settle, unlink_slot, CallOptions, Linked, Promise,
};
use super::iter::{async_iterator, step};
use crate::core::backend::ProcessHandle;
use crate::core::exec::{Chunk, ExecOutput, ExitStatus as CoreExit, Run, MAX_CHUNK};
use crate::core::lines::{Line, Lines};
use crate::core::{Error as CoreError, ErrorCode};
use futures::stream::BoxStream;
use futures::StreamExt;
use napi::bindgen_prelude::*;
use napi::Env;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The outcome of `container.exec()`. A non-zero `exitCode` is a result, never an exception.
#[napi(object, object_from_js = false)]
pub struct ExecResult<'a> {
    /// The exit code; absent only when the exit could not be known.
    pub exit_code: Option<i64>,
    /// The signal the SDK sent to end the process (timeout or abort), if any.
    pub signal: Option<String>,
    pub stdout: Buffer,
    pub stderr: Buffer,
    /// True when `timeoutMs` passed and the process tree was killed.
    pub timed_out: bool,
    /// True when the call's signal aborted it (only seen on `err.result`).
    pub aborted: bool,
    /// True when `maxOutputBytes` cut stdout or stderr.
    pub truncated: bool,
    pub duration_ms: f64,
    /// `stdout` decoded as UTF-8.
    #[napi(ts_type = "() => string")]
    pub text: Function<'a, (), String>,
}

/// Build the JS `ExecResult` (also used for `err.result` on aborts and interruptions), held by a reference so
/// it can cross into a promise.
pub fn exec_result_ref(env: &Env, out: ExecOutput) -> Result<ObjectRef<false>> {
    let r = exec_result(env, out)?;
    let raw = unsafe { ExecResult::to_napi_value(env.raw(), r)? };
    Object::from_raw(env.raw(), raw).create_ref::<false>()
}

fn exec_result(env: &Env, out: ExecOutput) -> Result<ExecResult<'_>> {
    let text = env.create_function_from_closure::<(), String, _>("text", |ctx| {
        let this: Object = ctx.this()?;
        let buf: Buffer = this.get_named_property("stdout")?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    })?;
    Ok(ExecResult {
        exit_code: out.exit_code,
        signal: out.signal,
        stdout: out.stdout.into(),
        stderr: out.stderr.into(),
        timed_out: out.timed_out,
        aborted: out.aborted,
        truncated: out.truncated,
        duration_ms: out.duration_ms as f64,
        text,
    })
}

/// A piece of output: `{ stream: 'stdout' | 'stderr', data: Buffer }`.
#[napi(object)]
#[allow(dead_code)] // built field by field on the JS thread (one copy into the Buffer); exists for index.d.ts
pub struct OutputChunk {
    #[napi(ts_type = "'stdout' | 'stderr'")]
    pub stream: String,
    pub data: Buffer,
}

/// One line of output (without its line ending).
#[napi(object)]
pub struct OutputLine {
    #[napi(ts_type = "'stdout' | 'stderr'")]
    pub stream: String,
    pub line: String,
}

impl From<Line> for OutputLine {
    fn from(l: Line) -> Self {
        OutputLine {
            stream: stream_name(l.stderr).into(),
            line: l.text,
        }
    }
}

/// How a streamed process ended.
#[napi(object)]
pub struct ExitStatus {
    /// The exit code (non-zero is a result, not an error).
    pub exit_code: Option<i64>,
    /// The signal the SDK sent (`kill()`, timeout, dispose), if any.
    pub signal: Option<String>,
    /// True when `timeoutMs` passed and the process tree was killed.
    pub timed_out: bool,
    /// True when the spawn's `signal` aborted while the process ran and the process tree was killed.
    pub aborted: bool,
    pub duration_ms: f64,
}

impl From<CoreExit> for ExitStatus {
    fn from(e: CoreExit) -> Self {
        ExitStatus {
            exit_code: e.exit_code,
            signal: e.signal,
            timed_out: e.timed_out,
            aborted: e.aborted,
            duration_ms: e.duration_ms as f64,
        }
    }
}

/// `{ done, value: { stream, data } }` with `data` copied once, straight from the frames it arrived in, into a
/// V8-allocated Buffer: V8 then counts the bytes and collects streamed chunks promptly (external buffers let RSS
/// run ahead of the GC).
fn chunk_step(env: &Env, run: Option<Run>) -> Result<ObjectRef<false>> {
    let value = match run {
        None => None,
        Some(run) => {
            let mut value = Object::new(env)?;
            value.set_named_property("stream", stream_name(run.stderr))?;
            value.set_named_property("data", buffer_from_run(env, &run)?)?;
            Some(value)
        }
    };
    step(env, value)
}

fn stream_name(stderr: bool) -> &'static str {
    if stderr {
        "stderr"
    } else {
        "stdout"
    }
}

/// One new Buffer holding a run's parts back to back.
pub(crate) fn buffer_from_run<'e>(env: &'e Env, run: &Run) -> Result<BufferSlice<'e>> {
    let mut data = std::ptr::null_mut();
    let mut value = std::ptr::null_mut();
    check_status!(
        unsafe { napi::sys::napi_create_buffer(env.raw(), run.len, &mut data, &mut value) },
        "could not allocate a Buffer for exec output"
    )?;
    // SAFETY: `data` points at `run.len` writable bytes owned by the new Buffer; the parts sum to `run.len`.
    unsafe { copy_parts(run, data.cast(), run.len) };
    young_gc_nudge(env, run.len);
    unsafe { BufferSlice::from_napi_value(env.raw(), value) }
}

thread_local! {
    /// Per JS thread (each has its own heap): bytes of chunk Buffers created since the last decision of
    /// [`young_gc_nudge`], and how many to create before the next one ([`nudge_plan`]).
    static NUDGE: Cell<(usize, usize)> = const { Cell::new((0, NUDGE_MIN)) };
}
/// The shortest interval between two nudges, in bytes of chunk Buffers: about what RSS grows by between two
/// collections of them.
const NUDGE_MIN: usize = 4 << 20;
/// Young backing-store bytes at which V8 (Node 20) starts a scavenge before allocating another ArrayBuffer (twice
/// its largest semi-space); also the size of the ArrayBuffer a nudge drops, which stays under the external-memory
/// soft limit, so it starts no major GC.
const V8_SCAVENGE_AT: usize = 32 << 20;

/// Streamed chunks are dropped at once by a typical consumer, but V8 frees them only at a GC, which on its own
/// comes after [`V8_SCAVENGE_AT`] bytes of young Buffers. Every [`NUDGE_MIN`] bytes (more in a large heap:
/// [`nudge_plan`]) this creates and drops one untouched ArrayBuffer of that size, which costs no RSS but makes the
/// next Buffer start a cheap scavenge now, so RSS stays close to flat without major GCs (numbers in
/// BENCHMARKS.md, T3). `read(buffer)` allocates nothing and needs no nudge; on a V8 that schedules differently a
/// nudge is only an early hint.
fn young_gc_nudge(env: &Env, created: usize) {
    let (since, every) = NUDGE.get();
    if since + created < every {
        NUDGE.set((since + created, every));
        return;
    }
    let (nudge, next) = nudge_plan(heap_used(env));
    NUDGE.set((0, next));
    if nudge {
        let mut data = std::ptr::null_mut();
        let mut value = std::ptr::null_mut();
        // SAFETY: called on the JS thread with its env; the ArrayBuffer is never referenced again.
        unsafe {
            napi::sys::napi_create_arraybuffer(env.raw(), V8_SCAVENGE_AT, &mut data, &mut value)
        };
    }
}

/// Whether to nudge now, given the JS heap's size, and how many bytes of chunks until the next decision: a
/// quarter of the heap or [`NUDGE_MIN`], whichever is larger, so RSS growth from chunks stays under a quarter of
/// the heap and larger heaps, whose scavenges take longer, get fewer of them. No nudge once that interval reaches
/// V8's own (heaps from 128 MiB): V8 scavenges on its own schedule then. An unknown heap size is treated as small.
fn nudge_plan(heap_used: Option<usize>) -> (bool, usize) {
    let every = heap_used.map_or(NUDGE_MIN, |h| (h / 4).max(NUDGE_MIN));
    (every < V8_SCAVENGE_AT, every)
}

/// `process.memoryUsage().heapUsed`, read once per decision (tens of µs). `None` if it cannot be read; whatever
/// that threw (a patched `process`, say) is cleared, so the chunk being created is not lost to it.
fn heap_used(env: &Env) -> Option<usize> {
    let heap = read_heap_used(env);
    if heap.is_none() {
        let mut pending = false;
        let mut thrown = std::ptr::null_mut();
        // SAFETY: called on the JS thread with its env.
        unsafe {
            napi::sys::napi_is_exception_pending(env.raw(), &mut pending);
            if pending {
                napi::sys::napi_get_and_clear_last_exception(env.raw(), &mut thrown);
            }
        }
    }
    heap
}

fn read_heap_used(env: &Env) -> Option<usize> {
    let process: Object = env.get_global().ok()?.get_named_property("process").ok()?;
    let usage: Function<(), Object> = process.get_named_property("memoryUsage").ok()?;
    let heap: f64 = usage
        .apply(process, ())
        .ok()?
        .get_named_property("heapUsed")
        .ok()?;
    (heap.is_finite() && heap >= 0.0).then_some(heap as usize)
}

/// Copy a run's parts to `dst`, which must have room for `cap` ≥ `run.len` bytes.
unsafe fn copy_parts(run: &Run, dst: *mut u8, cap: usize) {
    let mut at = 0;
    for p in &run.parts {
        if at + p.len() > cap {
            return;
        }
        std::ptr::copy_nonoverlapping(p.as_ptr(), dst.add(at), p.len());
        at += p.len();
    }
}

/// A terminal size.
#[napi(object)]
pub struct TtySize {
    pub cols: u32,
    pub rows: u32,
}

impl TtySize {
    /// `(cols, rows)`, each 1..=65535.
    pub(crate) fn to_core(&self) -> std::result::Result<(u16, u16), CoreError> {
        let one = |v: u32, what: &str| {
            u16::try_from(v).ok().filter(|v| *v > 0).ok_or_else(|| {
                CoreError::invalid(format!("tty {what} must be 1 to 65535, got {v}"))
                    .with("argument", "tty")
            })
        };
        Ok((one(self.cols, "cols")?, one(self.rows, "rows")?))
    }
}

/// What `proc.read(buffer)` put in the buffer.
#[napi(object)]
pub struct ReadResult {
    /// Which stream the bytes came from (one read never mixes them).
    #[napi(ts_type = "'stdout' | 'stderr'")]
    pub stream: String,
    /// How many bytes were written at the start of the buffer.
    pub bytes_read: u32,
}

/// A process started with `container.spawn()`. `for await (const { stream, data } of proc)` reads its output
/// in order, with backpressure; `write`/`end` feed stdin; `kill` signals the whole process group.
#[napi]
pub struct ExecProcess {
    pub(crate) proc: Arc<dyn ProcessHandle>,
    /// The spawn's AbortSignal (it kills the process tree while the process runs), released once JS has seen
    /// the process end: its output's end or an error, `wait()` settling, or disposal.
    pub(crate) link: SignalLink,
}

/// A process's link to its spawn's AbortSignal, shared by the handles that can see the process end.
pub(crate) type SignalLink = Rc<RefCell<Option<Linked>>>;

/// A read seen on the JS thread: the end of the output or an error means the process has ended, so the link
/// is released; an error becomes the JS error.
fn seen<T>(link: &SignalLink, env: &Env, r: crate::core::Result<Option<T>>) -> Result<Option<T>> {
    if !matches!(r, Ok(Some(_))) {
        unlink_slot(link, env);
    }
    r.map_err(|e| js_error(env, e))
}

#[napi]
impl ExecProcess {
    /// The next output chunk (`done` at the end). Rejects with `ERR_STREAM_INTERRUPTED` when the container or
    /// engine went away.
    #[napi(
        catch_unwind,
        ts_return_type = "Promise<IteratorResult<OutputChunk, undefined>>"
    )]
    pub fn next(&self, env: Env) -> Result<Promise<ObjectRef<false>>> {
        let p = self.proc.clone();
        let link = self.link.clone();
        settle(
            &env,
            None,
            async move { Ok(p.next_run(MAX_CHUNK, true).await.transpose()) },
            move |env, run| chunk_step(env, seen(&link, env, run)?),
        )
    }

    /// Read the next output into `buffer` (bring your own buffer): at most `buffer.length` bytes of one stream,
    /// written at its start. Resolves `null` at the end. Reusing one buffer streams any amount of output with no
    /// allocation per chunk, so memory stays flat where `for await` leaves each chunk to the GC.
    #[napi(catch_unwind, ts_return_type = "Promise<ReadResult | null>")]
    pub fn read(&self, env: Env, buffer: Uint8Array) -> Result<Promise<Option<ReadResult>>> {
        let max = buffer.len();
        let p = self.proc.clone();
        let back = self.proc.clone();
        let link = self.link.clone();
        settle(
            &env,
            None,
            async move {
                if max == 0 {
                    return Err(
                        CoreError::invalid("read() needs a buffer of at least one byte")
                            .with("argument", "buffer"),
                    );
                }
                Ok(p.next_run(max, true).await.transpose())
            },
            move |env, run| {
                let Some(run) = seen(&link, env, run)? else {
                    return Ok(None);
                };
                // The buffer may have been detached or shrunk while the read waited: look at it again.
                let raw = unsafe { Uint8Array::to_napi_value(env.raw(), buffer)? };
                let (mut data, mut len) = (std::ptr::null_mut(), 0usize);
                let mut kind = napi::sys::TypedarrayType::uint8_array;
                check_status!(unsafe {
                    napi::sys::napi_get_typedarray_info(
                        env.raw(),
                        raw,
                        &mut kind,
                        &mut len,
                        &mut data,
                        std::ptr::null_mut(),
                        std::ptr::null_mut(),
                    )
                })?;
                if len < run.len || (data.is_null() && run.len > 0) {
                    let lost = run.len;
                    back.unread(Ok(run.into_chunk()));
                    return Err(js_error(
                        env,
                        CoreError::invalid(format!(
                            "the buffer passed to read() was detached or shrunk while the read waited \
                             ({lost} bytes are kept for the next read)"
                        ))
                        .with("argument", "buffer"),
                    ));
                }
                // SAFETY: `data` is the typed array's current memory with room for `len` ≥ `run.len` bytes.
                unsafe { copy_parts(&run, data.cast(), len) };
                Ok(Some(ReadResult {
                    stream: stream_name(run.stderr).into(),
                    bytes_read: run.len as u32,
                }))
            },
        )
    }

    /// Output as text lines, `{ stream, line }`, each stream split on `\n` (a trailing `\r` is dropped).
    #[napi(catch_unwind)]
    pub fn lines(&self) -> ExecLines {
        ExecLines {
            inner: Arc::new(tokio::sync::Mutex::new(Lines::new(self.proc.clone()))),
            link: self.link.clone(),
        }
    }

    /// The output has a reader from now on, before its first read (`proc.stdout` / `proc.stderr` were made):
    /// `wait()` leaves the output to it instead of discarding it.
    #[napi(catch_unwind)]
    pub fn mark_read(&self) {
        self.proc.mark_read();
    }

    /// The process id inside the container (known shortly after start), or `null`.
    #[napi(catch_unwind, getter)]
    pub fn pid(&self) -> Option<i64> {
        self.proc.pid()
    }

    /// Write to stdin. Rejects with `ERR_PROCESS_FINISHED` after `end()` or once the process is gone.
    #[napi(catch_unwind, ts_return_type = "Promise<void>")]
    pub fn write(&self, env: Env, data: Either<String, Uint8Array>) -> Result<Promise<()>> {
        let bytes = super::call::bytes_of(&data);
        let p = self.proc.clone();
        promise(&env, async move { p.write(&bytes).await })
    }

    /// Resize the terminal of a process spawned with `tty` (the engine's or the daemon's resize route).
    #[napi(catch_unwind, ts_return_type = "Promise<void>")]
    pub fn resize(&self, env: Env, size: TtySize) -> Result<Promise<()>> {
        let p = self.proc.clone();
        let size = size.to_core();
        promise(&env, async move {
            let (cols, rows) = size?;
            p.resize(cols, rows).await
        })
    }

    /// Close stdin: the process reads EOF (a real half-close). Idempotent.
    #[napi(catch_unwind, ts_return_type = "Promise<void>")]
    pub fn end(&self, env: Env) -> Result<Promise<()>> {
        let p = self.proc.clone();
        promise(&env, async move { p.end().await })
    }

    /// Send `signal` (default `SIGTERM`) to the whole process group, children included. Output already
    /// queued stays readable; output written after the kill is discarded.
    #[napi(catch_unwind, ts_return_type = "Promise<void>")]
    pub fn kill(&self, env: Env, signal: Option<String>) -> Result<Promise<()>> {
        let p = self.proc.clone();
        promise(&env, async move {
            p.kill(signal.as_deref().unwrap_or("SIGTERM")).await
        })
    }

    /// Wait for the exit. If the output is not being read, it is discarded so the process cannot stall.
    #[napi(catch_unwind)]
    pub fn wait(&self, env: Env, options: Option<CallOptions>) -> Result<Promise<ExitStatus>> {
        let p = self.proc.clone();
        let link = self.link.clone();
        let (call, linked) = match read_call(&env, options.as_ref()) {
            Ok(r) => r,
            Err(e) => return promise(&env, async move { Err(e) }),
        };
        settle(
            &env,
            linked,
            async move { Ok(p.wait(&call).await) },
            move |env, st| {
                // Only an exit (or a failed process) ends the process; this wait's own signal or deadline does not.
                if !matches!(&st, Err(e) if matches!(e.code, ErrorCode::Aborted | ErrorCode::Timeout))
                {
                    unlink_slot(&link, env);
                }
                st.map(ExitStatus::from).map_err(|e| js_error(env, e))
            },
        )
    }

    /// `await using proc = await c.spawn(…)`: kills the process tree (TERM, then KILL) if it still runs.
    #[napi(
        catch_unwind,
        well_known_symbol = "asyncDispose",
        ts_return_type = "Promise<void>"
    )]
    pub fn dispose(&self, env: Env) -> Result<Promise<()>> {
        let p = self.proc.clone();
        let link = self.link.clone();
        settle(
            &env,
            None,
            async move {
                p.dispose().await;
                Ok(())
            },
            move |env, ()| {
                unlink_slot(&link, env);
                Ok(())
            },
        )
    }
}

impl ExecProcess {
    /// `return()`: further output is discarded; the process keeps running.
    fn on_return(&self, _: &Env) -> impl Future<Output = ()> + Send + 'static {
        self.proc.discard_output();
        std::future::ready(())
    }
}

async_iterator!(
    ExecProcess,
    "Stop reading (`break` in `for await`): further output is discarded; the process keeps running.",
    "Promise<IteratorResult<OutputChunk, undefined>>",
    "AsyncIterator<OutputChunk, undefined>"
);

/// Chunks queued between a streamed exec and its JS callbacks (the exec waits for room beyond this).
pub(crate) const EXEC_RUN_QUEUE: usize = 64;

/// A buffered exec whose output is also handed out as it arrives (`exec` with `onStdout` / `onStderr`): `next()`
/// reads the chosen streams' chunks in order, `result()` settles as `exec` would, `abort()` gives up (the
/// process tree is killed, the chunks still queued are dropped). The exec waits while chunks are unread.
#[napi]
pub struct ExecRun {
    rx: Arc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<crate::core::Result<Chunk>>>>,
    held: Arc<std::sync::Mutex<std::collections::VecDeque<crate::core::Result<Chunk>>>>,
    last_run: Arc<std::sync::atomic::AtomicUsize>,
    result: RefCell<Option<tokio::sync::oneshot::Receiver<crate::core::Result<ExecOutput>>>>,
    link: RefCell<Option<Linked>>,
    cancel: CancellationToken,
}

impl ExecRun {
    /// Run `exec` now (it sends its chunks to the sender of `rx`); `cancel` is its token, `link` its signal's.
    pub(crate) fn start(
        link: Option<Linked>,
        cancel: CancellationToken,
        rx: tokio::sync::mpsc::Receiver<crate::core::Result<Chunk>>,
        exec: impl Future<Output = crate::core::Result<ExecOutput>> + Send + 'static,
    ) -> ExecRun {
        use futures::FutureExt;
        let (tx, result) = tokio::sync::oneshot::channel();
        let task = async move {
            let out = std::panic::AssertUnwindSafe(exec)
                .catch_unwind()
                .await
                .unwrap_or_else(|_| Err(CoreError::internal("internal error (panic) in exec")));
            let _ = tx.send(out);
        };
        // napi-rs's spawn panics once its runtime is shut down: `result()` then rejects (the sender is gone).
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            napi::bindgen_prelude::spawn(task)
        }));
        ExecRun {
            rx: Arc::new(tokio::sync::Mutex::new(rx)),
            held: Default::default(),
            last_run: Default::default(),
            result: RefCell::new(Some(result)),
            link: RefCell::new(link),
            cancel,
        }
    }

    /// A run that never started: no chunks, `result()` rejects with `e`.
    pub(crate) fn failed(e: CoreError) -> ExecRun {
        let (tx, result) = tokio::sync::oneshot::channel();
        let _ = tx.send(Err(e));
        let (_, rx) = tokio::sync::mpsc::channel(1);
        ExecRun {
            rx: Arc::new(tokio::sync::Mutex::new(rx)),
            held: Default::default(),
            last_run: Default::default(),
            result: RefCell::new(Some(result)),
            link: RefCell::new(None),
            cancel: CancellationToken::new(),
        }
    }
}

#[napi]
impl ExecRun {
    /// The next chunk of a chosen stream (`done` once the exec has ended and every chunk was read).
    #[napi(
        catch_unwind,
        ts_return_type = "Promise<IteratorResult<OutputChunk, undefined>>"
    )]
    pub fn next(&self, env: Env) -> Result<Promise<ObjectRef<false>>> {
        let (rx, held, last) = (self.rx.clone(), self.held.clone(), self.last_run.clone());
        settle(
            &env,
            None,
            async move {
                let mut rx = rx.lock().await;
                crate::core::exec::next_run(&mut rx, &held, &last, MAX_CHUNK, true)
                    .await
                    .transpose()
            },
            chunk_step,
        )
    }

    /// How the exec ended, as `exec` settles (once).
    #[napi(catch_unwind, ts_return_type = "Promise<ExecResult>")]
    pub fn result(&self, env: Env) -> Result<Promise<ObjectRef<false>>> {
        let Some(result) = self.result.borrow_mut().take() else {
            return settle(
                &env,
                None,
                async { Err(CoreError::invalid("result() was already called")) },
                exec_result_ref,
            );
        };
        let link = self.link.borrow_mut().take();
        settle(
            &env,
            link,
            async move {
                result.await.unwrap_or_else(|_| {
                    Err(CoreError::internal("the exec task ended without a result"))
                })
            },
            exec_result_ref,
        )
    }

    /// Give up: the exec is aborted (its process tree killed; `result()` rejects with `ABORT_ERR` and the partial
    /// output) and the chunks not yet read are dropped.
    #[napi(catch_unwind)]
    pub fn abort(&self) {
        self.cancel.cancel();
        if let Ok(mut h) = self.held.lock() {
            h.clear();
        }
        let rx = self.rx.clone();
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            napi::bindgen_prelude::spawn(async move {
                let mut rx = rx.lock().await;
                rx.close();
                while rx.try_recv().is_ok() {}
            })
        }));
    }
}

/// `proc.lines()`: the process output as `{ stream, line }`.
#[napi]
pub struct ExecLines {
    inner: Arc<tokio::sync::Mutex<Lines>>,
    link: SignalLink,
}

#[napi]
impl ExecLines {
    /// The next line (`done` at the end).
    #[napi(
        catch_unwind,
        ts_return_type = "Promise<IteratorResult<OutputLine, undefined>>"
    )]
    pub fn next(&self, env: Env) -> Result<Promise<ObjectRef<false>>> {
        let s = self.inner.clone();
        let link = self.link.clone();
        settle(
            &env,
            None,
            async move { Ok(s.lock().await.next().await) },
            move |env, l| step(env, seen(&link, env, l)?.map(OutputLine::from)),
        )
    }
}

impl ExecLines {
    /// `return()`: further output is discarded.
    fn on_return(&self, _: &Env) -> impl Future<Output = ()> + Send + 'static {
        let s = self.inner.clone();
        async move { s.lock().await.discard() }
    }
}

async_iterator!(
    ExecLines,
    "Stop reading: further output is discarded.",
    "Promise<IteratorResult<OutputLine, undefined>>",
    "AsyncIterator<OutputLine, undefined>"
);

/// `container.logs()`: log chunks `{ stream, data }`; with `follow`, until the container stops or `return()`.
#[napi]
pub struct LogStream {
    pub(crate) inner: Arc<tokio::sync::Mutex<BoxStream<'static, crate::core::Result<Chunk>>>>,
    pub(crate) stop: CancellationToken,
}

#[napi]
impl LogStream {
    /// The next chunk (`done` at the end).
    #[napi(
        catch_unwind,
        ts_return_type = "Promise<IteratorResult<OutputChunk, undefined>>"
    )]
    pub fn next(&self, env: Env) -> Result<Promise<ObjectRef<false>>> {
        let s = self.inner.clone();
        let stop = self.stop.clone();
        let next = async move {
            let mut g = s.lock().await;
            let item = tokio::select! {
                i = g.next() => i,
                _ = stop.cancelled() => None,
            };
            item.map(|r| r.map(Run::from)).transpose()
        };
        settle(&env, None, next, chunk_step)
    }
}

impl LogStream {
    /// `return()`: stop following the logs.
    fn on_return(&self, _: &Env) -> impl Future<Output = ()> + Send + 'static {
        self.stop.cancel();
        std::future::ready(())
    }
}

async_iterator!(
    LogStream,
    "Stop following the logs.",
    "Promise<IteratorResult<OutputChunk, undefined>>",
    "AsyncIterator<OutputChunk, undefined>"
);
