//! Streamed archives, so a container's files of any size move with bounded memory: downloads
//! (`GET /containers/{id}/archive`) read ahead into a small queue and handed out in large pieces, and uploads
//! (`PUT …/archive`) with a tar body that is sent as the caller writes it.

use super::call::Call;
use super::container::{validate_container_path, Container};
use super::error::{Error, ErrorCode, Result};
use super::exec::Run;
use bollard::query_parameters::UploadToContainerOptions;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Chunks queued between `write()` and the request body: a writer faster than the engine waits here.
const QUEUED_CHUNKS: usize = 8;
/// bollard's per-request timeout bounds the whole upload, so it is raised; the caller's `timeoutMs` and signal
/// bound it instead.
const BOLLARD_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

/// Pieces read ahead of the consumer: the engine hands hyper small pieces, and one JS promise per piece is slow,
/// so the reader runs ahead and queued pieces go out as one.
const READ_AHEAD: usize = 32;

/// A tar archive being read out of a container.
pub struct Download {
    state: tokio::sync::Mutex<DownloadState>,
    /// `close()`: reads end (`None`).
    stop: CancellationToken,
    /// The caller's signal: the read in flight and later ones fail with `ABORT_ERR`.
    abort: CancellationToken,
    /// The caller's deadline for the whole download, and its length for the error.
    deadline: Option<(tokio::time::Instant, Duration)>,
}

struct DownloadState {
    /// The engine's stream until the first `next()`: the request (and the engine's lock on the container) starts
    /// only when the archive is read.
    source: Option<BoxStream<'static, Result<Bytes>>>,
    queue: Option<mpsc::Receiver<Result<Bytes>>>,
    /// An error or the end, found while merging queued pieces: handed out by the next call.
    held: Option<Option<Result<Bytes>>>,
}

impl Download {
    /// A download of `source`, bounded by the call's signal and deadline (counted from now, over all reads; no
    /// default: an archive takes as long as its size needs).
    pub fn new(source: BoxStream<'static, Result<Bytes>>, call: Call) -> Download {
        Download {
            state: tokio::sync::Mutex::new(DownloadState {
                source: Some(source),
                queue: None,
                held: None,
            }),
            stop: CancellationToken::new(),
            abort: call.cancel,
            deadline: call.timeout.map(|d| (tokio::time::Instant::now() + d, d)),
        }
    }

    /// The next piece: the first one waited for, then whatever else is queued, up to `max` bytes in all.
    /// `None` at the end or after [`Download::close`]; `ABORT_ERR` once aborted, `ERR_TIMEOUT` past the
    /// deadline. Once it has ended or failed, the engine's connection is closed.
    pub async fn next(&self, max: usize) -> Option<Result<Run>> {
        let past_deadline = async {
            match self.deadline {
                Some((at, _)) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let step = tokio::select! {
            biased;
            _ = self.abort.cancelled() => Some(Err(Error::aborted())),
            _ = past_deadline => Some(Err(Error::timeout(
                "container.getArchiveStream",
                self.deadline.map(|(_, d)| d).unwrap_or_default(),
            ))),
            p = self.pull(max) => p,
        };
        if !matches!(step, Some(Ok(_))) {
            self.close();
        }
        step
    }

    async fn pull(&self, max: usize) -> Option<Result<Run>> {
        let mut st = self.state.lock().await;
        if self.stop.is_cancelled() {
            return None;
        }
        if let Some(source) = st.source.take() {
            st.queue = Some(self.read_ahead(source));
        }
        if let Some(held) = st.held.take() {
            return held.map(|r| r.map(|b| run_of(vec![b])));
        }
        let queue = st.queue.as_mut()?;
        let first = tokio::select! {
            p = queue.recv() => p,
            _ = self.stop.cancelled() => None,
        };
        let mut parts = match first? {
            Ok(b) => vec![b],
            Err(e) => return Some(Err(e)),
        };
        let mut len = parts[0].len();
        while len < max {
            match queue.try_recv() {
                Ok(Ok(b)) => {
                    len += b.len();
                    parts.push(b);
                }
                Ok(Err(e)) => {
                    st.held = Some(Some(Err(e)));
                    break;
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    st.held = Some(None);
                    break;
                }
            }
        }
        Some(Ok(run_of(parts)))
    }

    /// Stop reading: the reader task drops the engine's stream, which closes its connection (and so ends the
    /// engine's lock on the container); a read in flight and later ones end (`None`).
    pub fn close(&self) {
        self.stop.cancel();
    }

    fn read_ahead(
        &self,
        mut source: BoxStream<'static, Result<Bytes>>,
    ) -> mpsc::Receiver<Result<Bytes>> {
        let (tx, rx) = mpsc::channel(READ_AHEAD);
        let stop = self.stop.clone();
        tokio::spawn(async move {
            loop {
                let piece = tokio::select! {
                    p = source.next() => p,
                    _ = stop.cancelled() => return,
                };
                let Some(piece) = piece else { return };
                let failed = piece.is_err();
                tokio::select! {
                    sent = tx.send(piece) => if sent.is_err() { return },
                    _ = stop.cancelled() => return,
                }
                if failed {
                    return;
                }
            }
        });
        rx
    }
}

impl Drop for Download {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn run_of(parts: Vec<Bytes>) -> Run {
    Run {
        stderr: false,
        len: parts.iter().map(|b| b.len()).sum(),
        parts,
    }
}

/// A tar archive being streamed into a directory of a container.
pub struct Upload {
    /// `None` once ended: dropping the sender ends the body.
    tx: Mutex<Option<mpsc::Sender<Bytes>>>,
    outcome: watch::Receiver<Option<Result<()>>>,
    cancel: CancellationToken,
}

impl Upload {
    /// Start the request; the engine extracts the archive into `dir` as it arrives. A bad `dir` is not an error
    /// here: it is the outcome every `write`/`end` reports, so errors all come from the calls that wait.
    /// Bounded by the call's signal and deadline over the whole upload (no default).
    pub fn start(container: &Container, dir: &str, call: Call) -> Upload {
        let Call {
            timeout: deadline,
            cancel,
        } = call;
        if let Err(e) = validate_container_path(dir) {
            return Upload::failed(e);
        }
        let (done_tx, outcome) = watch::channel(None);
        let (tx, rx) = mpsc::channel::<Bytes>(QUEUED_CHUNKS);
        // The body ends only when `end()` dropped the sender; a sender dropped by an abort (or a drop) makes the
        // body fail instead, whichever of the body and the cancelled request is polled first.
        let body = futures::stream::unfold(Some((rx, cancel.clone())), |state| async move {
            let (mut rx, token) = state?;
            match rx.recv().await {
                Some(b) => Some((Ok(b), Some((rx, token)))),
                None if token.is_cancelled() => {
                    Some((Err(std::io::Error::other("the upload was aborted")), None))
                }
                None => None,
            }
        });
        let docker = container
            .engine
            .docker()
            .clone()
            .with_timeout(BOLLARD_TIMEOUT);
        let c = container.clone();
        let dir = dir.to_string();
        let token = cancel.clone();
        tokio::spawn(async move {
            let request = async {
                docker
                    .upload_to_container(
                        &c.id,
                        Some(UploadToContainerOptions {
                            path: dir.clone(),
                            ..Default::default()
                        }),
                        bollard::body_try_stream(body.boxed()),
                    )
                    .await
                    .map_err(|e| c.path_err(e, &dir))
            };
            // Cancelled or past the deadline, the request is dropped with its body unfinished: the engine sees a
            // broken upload, never a short archive that looks complete.
            let r =
                super::call::bounded("container.putArchiveStream", deadline, &token, request).await;
            let _ = done_tx.send(Some(r));
        });
        Upload {
            tx: Mutex::new(Some(tx)),
            outcome,
            cancel,
        }
    }

    /// An upload that could not start: every `write`/`end` reports `e`.
    pub fn failed(e: Error) -> Upload {
        let (_, outcome) = watch::channel(Some(Err(e)));
        Upload {
            tx: Mutex::new(None),
            outcome,
            cancel: CancellationToken::new(),
        }
    }

    /// Queue `data` for the body; waits while the engine is behind. After the upload failed, or was aborted,
    /// this reports why.
    pub async fn write(&self, data: Bytes) -> Result<()> {
        let tx = self.tx.lock().map(|t| t.clone()).unwrap_or(None);
        if self.cancel.is_cancelled() {
            return self.finished().await; // aborted: its outcome is ABORT_ERR
        }
        let Some(tx) = tx else {
            if let Some(Err(e)) = self.outcome.borrow().clone() {
                return Err(e);
            }
            return Err(
                Error::invalid("write() after end(): the upload is already finished")
                    .with("argument", "data"),
            );
        };
        if data.is_empty() || tx.send(data).await.is_ok() {
            return Ok(());
        }
        // The request ended before taking this chunk.
        match self.finished().await {
            Err(e) => Err(e),
            Ok(()) => Err(Error::new(
                ErrorCode::Engine,
                "the engine finished the upload before all data was written",
            )),
        }
    }

    /// End the body and wait for the engine to finish extracting.
    pub async fn end(&self) -> Result<()> {
        drop(self.tx.lock().ok().and_then(|mut t| t.take()));
        self.finished().await
    }

    /// Break the upload off (the engine sees a broken body) and wait until the request is gone.
    pub async fn abort(&self) {
        self.cancel.cancel();
        drop(self.tx.lock().ok().and_then(|mut t| t.take()));
        let _ = self.finished().await;
    }

    /// True once `end()` or `abort()` was called, or the upload could not start.
    pub fn is_closed(&self) -> bool {
        self.tx.lock().map(|t| t.is_none()).unwrap_or(true)
    }

    async fn finished(&self) -> Result<()> {
        let mut rx = self.outcome.clone();
        let outcome = match rx.wait_for(|o| o.is_some()).await {
            Ok(o) => o.clone(),
            Err(_) => None,
        };
        outcome.unwrap_or_else(|| Err(Error::internal("the upload ended without an outcome")))
    }
}

impl Drop for Upload {
    /// Dropped without `end()`: break the request off rather than let a short body look like a whole archive.
    fn drop(&mut self) {
        if !self.is_closed() {
            self.cancel.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::engine::Engine;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A fake engine: `/version` for the negotiation; an archive upload is reported when its head arrives
    /// (`None`), then read to its end and reported as `Some(true)` when its body was finished (the chunked
    /// terminator arrived), `Some(false)` when the connection broke.
    async fn fake_engine() -> (
        tempfile::TempDir,
        Arc<Engine>,
        mpsc::UnboundedReceiver<Option<bool>>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docker.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let (report, reports) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let report = report.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                            match conn.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                            continue;
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).to_string();
                        buf.drain(..end + 4);
                        if head.contains("/archive") {
                            let _ = report.send(None);
                            let finished = loop {
                                if buf.windows(7).any(|w| w == b"\r\n0\r\n\r\n") {
                                    break true;
                                }
                                match conn.read(&mut chunk).await {
                                    Ok(0) | Err(_) => break false,
                                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                                }
                            };
                            let _ = report.send(Some(finished));
                            let _ = conn
                                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                                .await;
                            return;
                        }
                        let json = br#"{"ApiVersion":"1.41","Version":"20.10.24"}"#;
                        let res = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                            json.len()
                        );
                        let _ = conn.write_all(res.as_bytes()).await;
                        let _ = conn.write_all(json).await;
                    }
                });
            }
        });
        let engine = Engine::connect(&path, &Default::default()).await.unwrap();
        (dir, engine, reports)
    }

    fn container(engine: &Arc<Engine>) -> Container {
        Container {
            engine: engine.clone(),
            id: "box".into(),
            name: "box".into(),
        }
    }

    #[tokio::test]
    async fn a_download_starts_on_the_first_read_merges_what_is_queued_and_holds_errors_back() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let polled = Arc::new(AtomicBool::new(false));
        let seen = polled.clone();
        let pieces: Vec<Result<Bytes>> = vec![
            Ok(Bytes::from_static(b"ab")),
            Ok(Bytes::from_static(b"cd")),
            Ok(Bytes::from_static(b"ef")),
            Err(Error::new(ErrorCode::StreamInterrupted, "cut")),
            Ok(Bytes::from_static(b"never")),
        ];
        let source = futures::stream::iter(pieces)
            .inspect(move |_| seen.store(true, Ordering::SeqCst))
            .boxed();
        let d = Download::new(source, Call::default());
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !polled.load(Ordering::SeqCst),
            "nothing is requested before the first read"
        );
        // The reader queues ahead; each read takes the queued pieces as one, up to `max` bytes.
        let merged = d.next(4).await.unwrap().unwrap();
        assert_eq!(
            (merged.parts.len(), merged.len),
            (2, 4),
            "queued pieces merged up to max"
        );
        let rest = d.next(4).await.unwrap().unwrap();
        assert_eq!(
            rest.parts,
            vec![Bytes::from_static(b"ef")],
            "the error is not merged in"
        );
        let err = d.next(4).await.unwrap().unwrap_err();
        assert_eq!(err.code, ErrorCode::StreamInterrupted);
        assert!(d.next(4).await.is_none(), "nothing after the error");

        let d = Download::new(futures::stream::pending().boxed(), Call::default());
        let pending = d.next(4);
        tokio::pin!(pending);
        assert!(futures::poll!(pending.as_mut()).is_pending());
        d.close();
        assert!(pending.await.is_none(), "close ends a read in flight");
        assert!(d.next(4).await.is_none());
    }

    #[tokio::test]
    async fn a_download_fails_on_its_signal_and_past_its_deadline_then_stays_closed() {
        let abort = CancellationToken::new();
        let d = Download::new(
            futures::stream::pending().boxed(),
            Call::new(None, abort.clone()),
        );
        let pending = d.next(4);
        tokio::pin!(pending);
        assert!(futures::poll!(pending.as_mut()).is_pending());
        abort.cancel();
        assert_eq!(pending.await.unwrap().unwrap_err().code, ErrorCode::Aborted);
        assert_eq!(
            d.next(4).await.unwrap().unwrap_err().code,
            ErrorCode::Aborted
        );
        assert!(d.stop.is_cancelled(), "the engine's connection is closed");

        let d = Download::new(
            futures::stream::pending().boxed(),
            Call::new(Some(Duration::from_millis(50)), CancellationToken::new()),
        );
        let e = d.next(4).await.unwrap().unwrap_err();
        assert_eq!(e.code, ErrorCode::Timeout);
        assert_eq!(e.props.get("timeoutMs").and_then(|v| v.as_u64()), Some(50));
        assert!(d.stop.is_cancelled(), "the engine's connection is closed");
    }

    #[tokio::test]
    async fn only_end_finishes_the_body_an_abort_or_a_drop_breaks_it() {
        let (_dir, engine, mut reports) = fake_engine().await;
        let c = container(&engine);
        let start =
            |deadline| Upload::start(&c, "/tmp", Call::new(deadline, CancellationToken::new()));
        let abc = || Bytes::from_static(b"abc");

        let up = start(None);
        up.write(abc()).await.unwrap();
        assert_eq!(
            reports.recv().await.unwrap(),
            None,
            "the request is under way"
        );
        up.end().await.unwrap();
        assert_eq!(
            reports.recv().await.unwrap(),
            Some(true),
            "end() finishes the body"
        );

        let up = start(None);
        up.write(abc()).await.unwrap();
        assert_eq!(reports.recv().await.unwrap(), None);
        up.abort().await;
        assert_eq!(
            reports.recv().await.unwrap(),
            Some(false),
            "abort() breaks it"
        );
        assert_eq!(up.end().await.unwrap_err().code, ErrorCode::Aborted);
        assert_eq!(up.write(abc()).await.unwrap_err().code, ErrorCode::Aborted);

        let up = start(None);
        up.write(abc()).await.unwrap();
        assert_eq!(reports.recv().await.unwrap(), None);
        drop(up);
        assert_eq!(
            reports.recv().await.unwrap(),
            Some(false),
            "a dropped upload breaks it"
        );

        let up = start(Some(Duration::from_millis(200)));
        up.write(abc()).await.unwrap();
        assert_eq!(reports.recv().await.unwrap(), None);
        assert_eq!(
            reports.recv().await.unwrap(),
            Some(false),
            "the deadline breaks it"
        );
        assert_eq!(up.end().await.unwrap_err().code, ErrorCode::Timeout);

        // Aborted before the request went out: nothing is sent at all.
        let up = start(None);
        up.abort().await;
        assert_eq!(up.end().await.unwrap_err().code, ErrorCode::Aborted);

        let bad = Upload::start(&c, "relative", Call::default());
        assert_eq!(
            bad.end().await.unwrap_err().code,
            ErrorCode::InvalidArgument
        );
        assert!(
            reports.try_recv().is_err(),
            "neither of the last two reached the engine"
        );
    }
}
