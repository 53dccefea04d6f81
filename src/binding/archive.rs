//! JS classes `ArchiveStream` (a tar archive read out of a container as it is consumed) and `ArchiveUpload` (a
//! tar archive written into one as it is produced), over [`crate::core::archive`].

use super::call::{
    bytes_of, js_error, promise, read_call, settle, unlink_slot, CallOptions, Linked, Promise,
};
use super::iter::{async_iterator, step};
use crate::core::archive::{Download, Upload};
use crate::core::exec::MAX_CHUNK;
use crate::core::Call;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use napi::bindgen_prelude::*;
use napi::Env;
use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;

/// `container.getArchiveStream(path)`: the tar archive as an async iterator of Buffers. It is read from the
/// engine only as fast as it is consumed. The engine locks the container until the archive is read or its
/// connection closed, so leave with `break`, `return()` or `await using`, not by dropping the iterator.
#[napi]
pub struct ArchiveStream {
    pub(crate) inner: Arc<Download>,
    /// The AbortSignal's listener, removed when the stream ends.
    pub(crate) linked: Rc<RefCell<Option<Linked>>>,
}

impl ArchiveStream {
    pub(crate) fn new(
        env: &Env,
        stream: BoxStream<'static, crate::core::Result<Bytes>>,
        options: Option<&CallOptions>,
    ) -> ArchiveStream {
        let (download, linked) = match read_call(env, options) {
            Ok((call, linked)) => (Download::new(stream, call), linked),
            Err(e) => (
                Download::new(
                    futures::stream::once(async move { Err(e) }).boxed(),
                    Call::default(),
                ),
                None,
            ),
        };
        ArchiveStream {
            inner: Arc::new(download),
            linked: Rc::new(RefCell::new(linked)),
        }
    }
}

#[napi]
impl ArchiveStream {
    /// The next piece of the archive (`done` at the end). A missing path rejects with `ERR_INVALID_ARGUMENT`
    /// (`path` set), a container that went away with `ERR_CONTAINER_NOT_FOUND`; the signal with `ABORT_ERR`,
    /// the deadline with `ERR_TIMEOUT`.
    #[napi(
        catch_unwind,
        ts_return_type = "Promise<IteratorResult<Buffer, undefined>>"
    )]
    pub fn next(&self, env: Env) -> Result<Promise<ObjectRef<false>>> {
        let d = self.inner.clone();
        let next = async move { Ok(d.next(MAX_CHUNK).await.transpose()) };
        let linked = self.linked.clone();
        settle(&env, None, next, move |env, piece| {
            if !matches!(piece, Ok(Some(_))) {
                unlink_slot(&linked, env);
            }
            let piece = piece.map_err(|e| js_error(env, e))?;
            // A V8-owned Buffer, counted like exec output so that GC keeps pace with a fast download.
            let value = match piece {
                Some(run) => Some(super::exec::buffer_from_run(env, &run)?),
                None => None,
            };
            step(env, value)
        })
    }

    /// `await using pieces = box.getArchiveStream(path)`: closes it at the end of the scope.
    #[napi(
        catch_unwind,
        well_known_symbol = "asyncDispose",
        ts_return_type = "Promise<void>"
    )]
    pub fn dispose(&self, env: Env) -> Result<Promise<ObjectRef<false>>> {
        self.return_(env)
    }
}

impl ArchiveStream {
    /// `return()`: stop reading and close the engine's connection.
    fn on_return(&self, env: &Env) -> impl Future<Output = ()> + Send + 'static {
        unlink_slot(&self.linked, env);
        self.inner.close();
        std::future::ready(())
    }
}

async_iterator!(
    ArchiveStream,
    "Stop reading and close the engine's connection.",
    "Promise<IteratorResult<Buffer, undefined>>",
    "AsyncIterator<Buffer, undefined>"
);

/// `container.putArchiveStream(dir)`: a tar archive streamed into directory `dir` as it is written.
/// `write()` waits while the engine is behind; `end()` resolves once the engine has extracted everything. Errors
/// (a missing directory, the container gone, the signal, the deadline) reject the pending `write()` or `end()`.
#[napi]
pub struct ArchiveUpload {
    pub(crate) inner: Arc<Upload>,
    /// The AbortSignal's listener, removed when `end()` or `abort()` settles.
    pub(crate) linked: RefCell<Option<Linked>>,
}

impl ArchiveUpload {
    fn take_linked(&self) -> Option<Linked> {
        self.linked.borrow_mut().take()
    }
}

#[napi]
impl ArchiveUpload {
    /// Send the next piece of the tar (a string is sent as UTF-8).
    #[napi(catch_unwind, ts_return_type = "Promise<void>")]
    pub fn write(&self, env: Env, data: Either<String, Uint8Array>) -> Result<Promise<()>> {
        let bytes = bytes_of(&data);
        let u = self.inner.clone();
        promise(&env, async move { u.write(bytes).await })
    }

    /// End the archive; resolves once the engine has extracted it.
    #[napi(catch_unwind, ts_return_type = "Promise<void>")]
    pub fn end(&self, env: Env) -> Result<Promise<()>> {
        let u = self.inner.clone();
        settle(
            &env,
            self.take_linked(),
            async move { u.end().await },
            |_, v| Ok(v),
        )
    }

    /// Break the upload off: the engine sees a broken body, not a short archive (what it had already
    /// extracted stays). Pending and later `write()`/`end()` reject with `ABORT_ERR`.
    #[napi(catch_unwind, ts_return_type = "Promise<void>")]
    pub fn abort(&self, env: Env) -> Result<Promise<()>> {
        let u = self.inner.clone();
        let abort = async move {
            u.abort().await;
            Ok(())
        };
        settle(&env, self.take_linked(), abort, |_, v| Ok(v))
    }

    /// `await using up = box.putArchiveStream(dir)`: aborts the upload unless `end()` was called.
    #[napi(
        catch_unwind,
        well_known_symbol = "asyncDispose",
        ts_return_type = "Promise<void>"
    )]
    pub fn dispose(&self, env: Env) -> Result<Promise<()>> {
        if self.inner.is_closed() {
            return settle(&env, self.take_linked(), async { Ok(()) }, |_, v| Ok(v));
        }
        self.abort(env)
    }
}
