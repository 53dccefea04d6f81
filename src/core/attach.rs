//! The attached streams of a started exec, read by hand from the hijacked connection.
//!
//! bollard starts an attached exec fine, but its reader zero-fills the whole read buffer on every poll
//! (`ReadBuf::initialize_unfilled` in its `AsyncUpgraded`, 64 KiB per poll with our capacity, also for polls that
//! find nothing to read). Profiled while streaming 200 MiB, that memset was ~4% of all the SDK's CPU samples, one
//! of the largest user-space costs on its tokio threads. So `POST /exec/{id}/start` with `Upgrade: tcp` is sent here on a connection of its own
//! (it never goes back to a pool), the upgraded stream is read with large reads into uninitialised capacity, and
//! Docker's 8-byte frame headers are taken apart here. Create, inspect and everything else stay with bollard.

use super::engine::{Engine, REQUEST_TIMEOUT_SECS};
use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bytes::{Buf, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::pin::Pin;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

/// A read goes into the free room of the current buffer while it has at least `MIN_READ` (output handed out
/// still shares that allocation); otherwise a new buffer of `READ_SIZE` is taken. Reserving `READ_SIZE` before
/// every read allocated 64 KiB per ~20 KiB that arrived.
const READ_SIZE: usize = 64 * 1024;
const MIN_READ: usize = 16 * 1024;
/// Pacing (see [`Demux::paced`]): a stream that delivered `PACE_BYTES` within `PACE_WINDOW`, or whose last read
/// found `PACED_MIN` waiting, is pouring out bulk output.
const PACE_BYTES: usize = 128 * 1024;
const PACE_WINDOW: Duration = Duration::from_millis(4);
const PACED_MIN: usize = 32 * 1024;
/// A paced read waits for the runtime's next timer tick (tokio's timer has 1 ms ticks, so this is 0–1 ms).
const PACE_WAIT: Duration = Duration::from_micros(1);
/// A read of bulk output gets at least this much room (a `PACED_READ` buffer when less is free).
const PACED_ROOM: usize = 128 * 1024;
const PACED_READ: usize = 256 * 1024;
/// A paced read that finds this much has waited too long: the engine's socket buffer (~200 KiB) was full or
/// nearly so, which stalls the engine. Such a stream is faster than the tick and is read eagerly for `EAGER_FOR`
/// (eager reads of a stream that fast are large anyway).
const PACED_FULL: usize = 192 * 1024;
const EAGER_FOR: Duration = Duration::from_millis(100);
/// Earlier bulk-output read buffers kept for reuse per stream (each `PACED_READ`; dropped when output goes
/// sparse). 16 × 256 KiB is what the exec's 64-piece channel can hold (pieces of ≤ 64 KiB in ~32 KiB frames)
/// behind a slow consumer; with 4 or 8, 30–50% of the buffers were still new allocations while streaming 200 MiB
/// into JS, with 16 about 15%. Spares are freed when the stream ends or its output goes sparse.
const MAX_SPARES: usize = 16;
/// Of the spares, at most this many are kept once free (no piece pins them): a consumer drops its pieces about a
/// buffer at a time, and keeping every buffer that was ever in flight would hold up to 4 MiB the stream no longer
/// uses, on top of a `for await` consumer's Buffers waiting for a GC.
const FREE_SPARES: usize = 2;
/// An error body longer than this is cut (it is only used for its `message`).
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Output frames, in the order the engine sent them; `None` at the end of the stream.
pub type Output = Pin<Box<dyn futures::Stream<Item = Result<LogOutput, BollardError>> + Send>>;
/// The exec's stdin; shutting it down half-closes the connection (the process sees EOF).
pub type Input = Pin<Box<dyn AsyncWrite + Send>>;

/// Start the created exec `exec_id` attached. Errors are bollard's, so they map to codes like every engine call;
/// an engine that does not answer within bollard's request timeout is a `RequestTimeoutError`, as it was there.
pub async fn start(
    engine: &Engine,
    exec_id: &str,
    tty: bool,
) -> Result<(Output, Input), BollardError> {
    let (read, write) = start_raw(engine, exec_id, tty).await?;
    Ok((frames(read, tty), write))
}

/// The raw byte stream of a started exec, for a relay that passes it on as it is (Docker's multiplexed frames,
/// or the terminal's bytes with `tty`): what [`start`] demuxes, without taking it apart. Errors as for [`start`].
pub async fn start_raw(
    engine: &Engine,
    exec_id: &str,
    tty: bool,
) -> Result<(RawOutput, Input), BollardError> {
    let deadline = Duration::from_secs(REQUEST_TIMEOUT_SECS);
    tokio::time::timeout(deadline, start_attached(engine, exec_id, tty))
        .await
        .map_err(|_| BollardError::RequestTimeoutError)?
}

/// The read half of an exec's upgraded connection: its output as the engine sends it.
pub type RawOutput = tokio::io::ReadHalf<TokioIo<hyper::upgrade::Upgraded>>;

async fn start_attached(
    engine: &Engine,
    exec_id: &str,
    tty: bool,
) -> Result<(RawOutput, Input), BollardError> {
    let stream = crate::core::socket::connect(engine.socket())
        .await
        .map_err(|err| BollardError::IOError { err })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn.with_upgrades());
    let body = serde_json::json!({ "Detach": false, "Tty": tty }).to_string();
    let req = hyper::Request::post(format!("/v{}/exec/{}/start", engine.api_version(), exec_id))
        .header("Host", "docker")
        .header("Content-Type", "application/json")
        .header("Connection", "Upgrade")
        .header("Upgrade", "tcp")
        .body(Full::new(Bytes::from(body)))?;
    let res = sender.send_request(req).await?;
    let status = res.status().as_u16();
    if status != 101 && status != 200 {
        return Err(server_error(status, res.into_body()).await);
    }
    let upgraded = TokioIo::new(hyper::upgrade::on(res).await?);
    let (read, write) = tokio::io::split(upgraded);
    Ok((read, Box::pin(write)))
}

/// The engine's `{"message": …}` for a refused start, as bollard reports it.
async fn server_error(status_code: u16, body: hyper::body::Incoming) -> BollardError {
    let limited = http_body_util::Limited::new(body, MAX_ERROR_BODY);
    let bytes = limited
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let message = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(&bytes).trim().to_string());
    BollardError::DockerResponseServerError {
        status_code,
        message,
    }
}

/// Where the demuxer is in the byte stream.
struct Demux<R> {
    read: R,
    buf: BytesMut,
    tty: bool,
    /// Bytes of the current frame not handed out yet, and its stream (1 stdout, 2 stderr, 0 stdin).
    remaining: usize,
    kind: u8,
    /// Start of the current rate window, the bytes read in it, and the size of the last read.
    window: Instant,
    window_bytes: usize,
    last_read: usize,
    /// No pacing before this (set when a paced read found the buffer full).
    eager_until: Instant,
    /// Earlier read buffers of bulk output, oldest first, kept to be read into again once every piece cut from
    /// them has been dropped (see [`Demux::fresh_buffer`]).
    spares: std::collections::VecDeque<BytesMut>,
    /// New bulk-output buffers allocated so far.
    #[cfg(test)]
    allocated: usize,
}

impl<R: AsyncRead + Unpin> Demux<R> {
    /// The next piece of output: a whole frame, or the part of a frame that has arrived (a frame is never
    /// waited for whole, so a huge frame costs no memory).
    async fn next(&mut self) -> Option<Result<LogOutput, BollardError>> {
        loop {
            // Pieces are cut at READ_SIZE even after a larger paced read: the exec's channel holds a fixed number
            // of pieces behind a paused consumer, and this keeps what waits there bounded.
            if self.tty && !self.buf.is_empty() {
                let message = self.buf.split_to(self.buf.len().min(READ_SIZE)).freeze();
                return Some(Ok(LogOutput::Console { message }));
            }
            if self.remaining > 0 && !self.buf.is_empty() {
                let n = self.remaining.min(self.buf.len()).min(READ_SIZE);
                self.remaining -= n;
                let message = self.buf.split_to(n).freeze();
                return Some(Ok(match self.kind {
                    0 => LogOutput::StdIn { message },
                    1 => LogOutput::StdOut { message },
                    _ => LogOutput::StdErr { message },
                }));
            }
            if !self.tty && self.remaining == 0 && self.buf.len() >= 8 {
                let h = &self.buf[..8];
                if h[0] > 2 || h[1..4] != [0, 0, 0] {
                    return Some(Err(BollardError::IOError {
                        err: std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            "the exec stream is not in Docker's multiplexed format",
                        ),
                    }));
                }
                self.kind = h[0];
                self.remaining = u32::from_be_bytes([h[4], h[5], h[6], h[7]]) as usize;
                self.buf.advance(8);
                continue;
            }
            let room = self.buf.capacity() - self.buf.len();
            let paced = self.paced(Instant::now());
            if paced {
                tokio::time::sleep(PACE_WAIT).await;
            }
            if self.bulk() {
                if room < PACED_ROOM {
                    self.fresh_buffer(PACED_READ);
                }
            } else {
                // Output has gone sparse: buffers kept for bulk output are not held for an idle stream.
                self.spares.clear();
                if room < MIN_READ {
                    self.buf.reserve(READ_SIZE);
                }
            }
            match self.read.read_buf(&mut self.buf).await {
                Ok(0) => return None,
                Ok(n) => self.count(n, paced, Instant::now()),
                Err(err) => return Some(Err(BollardError::IOError { err })),
            }
        }
    }
}

impl<R> Demux<R> {
    fn new(read: R, tty: bool) -> Self {
        let now = Instant::now();
        Demux {
            read,
            buf: BytesMut::with_capacity(READ_SIZE),
            tty,
            remaining: 0,
            kind: 1,
            window: now,
            window_bytes: 0,
            last_read: 0,
            eager_until: now,
            spares: std::collections::VecDeque::new(),
            #[cfg(test)]
            allocated: 0,
        }
    }

    /// Make the read buffer one with room for `size` bytes, keeping what it holds (at most a partial frame
    /// header). A new allocation's pages are faulted in, zeroed by the kernel, and returned to it when freed
    /// (`madvise`) as the pieces cut from them are dropped: for a bulk stream that was ~10% of the SDK's CPU
    /// (measured while streaming 200 MiB). So the buffer being left is kept as a spare, and a spare whose
    /// pieces have all been dropped is read into again; a new buffer is allocated only when none is free.
    fn fresh_buffer(&mut self, size: usize) {
        if self.buf.try_reclaim(size) {
            return;
        }
        let reuse = (0..self.spares.len()).find(|&i| self.spares[i].try_reclaim(size));
        let mut next = match reuse.and_then(|i| self.spares.remove(i)) {
            Some(spare) => spare,
            None => {
                #[cfg(test)]
                {
                    self.allocated += 1;
                }
                BytesMut::with_capacity(size)
            }
        };
        next.extend_from_slice(&self.buf);
        let mut left = std::mem::replace(&mut self.buf, next);
        left.clear();
        // Spares still pinned by pieces hold memory that is in use anyway; of the free ones only a few are kept.
        let mut free = 0;
        self.spares.retain_mut(|s| {
            if !s.try_reclaim(size) {
                return true;
            }
            free += 1;
            free <= FREE_SPARES
        });
        self.spares.push_back(left);
        if self.spares.len() > MAX_SPARES {
            self.spares.pop_front();
        }
    }

    /// Whether a read at `now` should wait for the next timer tick first. A stream that pours out bulk output
    /// arrives in the engine's ~8–32 KiB writes; read as each lands, that is one wake, one `epoll_wait` and one
    /// `recv` per write, CPU taken from the engine on a small machine (measured: pacing cut the SDK's client CPU
    /// for a 200 MiB stream by 20–40%). Waiting for the tick lets ~1 ms of output gather (under the engine's
    /// ~200 KiB socket buffer at the rates seen here) and takes it in one read. Sparse output never reaches the
    /// thresholds, so prompts and events are not delayed; only the first read after a burst may wait ≤ 1 ms.
    fn paced(&self, now: Instant) -> bool {
        self.bulk() && now >= self.eager_until
    }

    /// Whether the stream is pouring out bulk output (paced, or read eagerly because it is faster than the tick).
    fn bulk(&self) -> bool {
        self.last_read >= PACED_MIN || self.window_bytes >= PACE_BYTES
    }

    /// Account a read of `n` bytes at `now` (`paced`: it waited for the tick first).
    fn count(&mut self, n: usize, paced: bool, now: Instant) {
        if now.duration_since(self.window) > PACE_WINDOW {
            self.window = now;
            self.window_bytes = 0;
        }
        self.window_bytes += n;
        self.last_read = n;
        if paced && n >= PACED_FULL {
            self.eager_until = now + EAGER_FOR;
        }
    }
}

/// The demuxed output of a hijacked exec connection (the engine's, or an sbx daemon's: same framing).
pub(crate) fn frames<R: AsyncRead + Unpin + Send + 'static>(read: R, tty: bool) -> Output {
    Box::pin(futures::stream::unfold(
        Demux::new(read, tty),
        |mut d| async move {
            let item = d.next().await?;
            Some((item, d))
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use tokio::io::AsyncReadExt;

    fn frame(kind: u8, data: &[u8]) -> Vec<u8> {
        let mut f = vec![kind, 0, 0, 0];
        f.extend_from_slice(&(data.len() as u32).to_be_bytes());
        f.extend_from_slice(data);
        f
    }

    /// Everything a stream yields, as (stream, bytes) with consecutive pieces of one stream joined.
    async fn collect(mut out: Output) -> (Vec<(u8, Vec<u8>)>, Option<String>) {
        let mut got: Vec<(u8, Vec<u8>)> = Vec::new();
        while let Some(item) = out.next().await {
            let (k, m) = match item {
                Ok(LogOutput::StdIn { message }) => (0, message),
                Ok(LogOutput::StdOut { message }) => (1, message),
                Ok(LogOutput::StdErr { message }) => (2, message),
                Ok(LogOutput::Console { message }) => (9, message),
                Err(e) => return (got, Some(e.to_string())),
            };
            match got.last_mut() {
                Some((lk, lm)) if *lk == k => lm.extend_from_slice(&m),
                _ => got.push((k, m.to_vec())),
            }
        }
        (got, None)
    }

    #[tokio::test]
    async fn frames_split_anywhere_are_demuxed_in_order() {
        let big = vec![7u8; 200_000];
        let mut wire = frame(1, b"out 1\n");
        wire.extend(frame(2, b"err 1\n"));
        wire.extend(frame(1, b""));
        wire.extend(frame(1, &big));
        wire.extend(frame(2, b"err 2"));
        for step in [1, 3, 8, 9, 4096, 70_000] {
            let (client, mut server) = tokio::io::duplex(step);
            let bytes = wire.clone();
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                for piece in bytes.chunks(step) {
                    server.write_all(piece).await.unwrap();
                }
            });
            let (got, err) = collect(frames(client, false)).await;
            assert_eq!(err, None);
            assert_eq!(
                got,
                vec![
                    (1, b"out 1\n".to_vec()),
                    (2, b"err 1\n".to_vec()),
                    (1, big.clone()),
                    (2, b"err 2".to_vec())
                ],
                "step {step}"
            );
        }
    }

    /// A fake engine on a Unix socket: `/version` for the negotiation, and `start` answered by `on_start`
    /// (raw bytes, written after the request; the connection is then closed).
    async fn fake_engine(on_start: &'static [u8]) -> (tempfile::TempDir, std::sync::Arc<Engine>) {
        use tokio::io::AsyncWriteExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docker.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                            let mut chunk = [0u8; 4096];
                            match conn.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                            continue;
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).to_string();
                        let body_len = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        while buf.len() < end + 4 + body_len {
                            let mut chunk = [0u8; 4096];
                            match conn.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        buf.drain(..end + 4 + body_len);
                        if head.contains("/exec/") {
                            let _ = conn.write_all(on_start).await;
                            return;
                        }
                        let json = br#"{"ApiVersion":"1.41","Version":"20.10.24"}"#;
                        let res = format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", json.len());
                        let _ = conn.write_all(res.as_bytes()).await;
                        let _ = conn.write_all(json).await;
                    }
                });
            }
        });
        let engine = Engine::connect(&path, &Default::default()).await.unwrap();
        (dir, engine)
    }

    #[tokio::test]
    async fn a_refused_start_carries_the_engine_message_and_status() {
        let (_dir, engine) = fake_engine(
            b"HTTP/1.1 409 Conflict\r\nContent-Type: application/json\r\nContent-Length: 42\r\n\r\n{\"message\":\"Container abc is not running\"}",
        )
        .await;
        match start(&engine, "e1", false).await {
            Err(BollardError::DockerResponseServerError {
                status_code,
                message,
            }) => {
                assert_eq!(
                    (status_code, message.as_str()),
                    (409, "Container abc is not running")
                )
            }
            other => panic!("expected a server error, got {:?}", other.map(|_| ())),
        }
    }

    #[tokio::test]
    async fn an_upgraded_start_streams_frames_until_the_engine_closes() {
        let (_dir, engine) = fake_engine(
            b"HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.raw-stream\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n\x01\x00\x00\x00\x00\x00\x00\x03hi\n\x02\x00\x00\x00\x00\x00\x00\x04err\n",
        )
        .await;
        let (out, _input) = start(&engine, "e1", false).await.unwrap();
        let (got, err) = collect(out).await;
        assert_eq!(err, None);
        assert_eq!(got, vec![(1, b"hi\n".to_vec()), (2, b"err\n".to_vec())]);
    }

    #[tokio::test]
    async fn no_piece_handed_out_is_larger_than_one_plain_read() {
        // 1 MiB already waiting: the first reads make the stream bulk, and paced reads then take 256 KiB at once.
        // The pieces queued behind a paused consumer are bounded by count, so each must stay at most READ_SIZE.
        for tty in [true, false] {
            let data = vec![5u8; 1 << 20];
            let wire = if tty { data.clone() } else { frame(1, &data) };
            let (client, mut server) = tokio::io::duplex(2 << 20);
            tokio::io::AsyncWriteExt::write_all(&mut server, &wire)
                .await
                .unwrap();
            drop(server);
            let mut out = frames(client, tty);
            let (mut total, mut largest) = (0, 0);
            while let Some(item) = out.next().await {
                let n = item.unwrap().into_bytes().len();
                total += n;
                largest = largest.max(n);
            }
            assert_eq!(total, 1 << 20, "tty {tty}");
            assert!(
                largest <= READ_SIZE,
                "tty {tty}: a piece of {largest} bytes"
            );
        }
    }

    #[tokio::test]
    async fn bulk_output_is_read_into_freed_buffers_again_and_held_pieces_are_never_overwritten() {
        use tokio::io::AsyncWriteExt;
        // 16 MiB of numbered bytes in the engine's 32 KiB frames, written as fast as they are read: bulk output,
        // read in 256 KiB buffers. Without reuse that is one new buffer per 256 KiB (64 here).
        let total = 16 << 20;
        let data: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
        let mut wire = Vec::new();
        for c in data.chunks(32 * 1024) {
            wire.extend(frame(1, c));
        }
        let (client, mut server) = tokio::io::duplex(1 << 20);
        tokio::spawn(async move { server.write_all(&wire).await.unwrap() });
        let mut d = Demux::new(client, false);
        let (mut got, mut held, mut pieces) = (Vec::with_capacity(total), Vec::new(), 0);
        while let Some(item) = d.next().await {
            let m = item.unwrap().into_bytes();
            // Every 50th piece is kept to the end, pinning its buffer; the others are dropped once copied.
            if pieces % 50 == 0 {
                held.push((got.len(), m.clone()));
            }
            got.extend_from_slice(&m);
            pieces += 1;
        }
        assert!(got == data, "the stream arrived intact");
        for (at, m) in &held {
            assert!(
                m[..] == data[*at..*at + m.len()],
                "a held piece at {at} was overwritten"
            );
        }
        assert!(
            d.allocated <= 4 + held.len(),
            "{} buffers allocated for 64 reads of 256 KiB with {} pinned",
            d.allocated,
            held.len()
        );
    }

    #[test]
    fn free_spares_are_kept_only_a_few_and_pinned_ones_all() {
        let mut d = Demux::new(tokio::io::empty(), false);
        let mut pinned = Vec::new();
        for i in 0..8 {
            let mut b = BytesMut::with_capacity(PACED_READ);
            b.extend_from_slice(&[i as u8; 1024]);
            let piece = b.split_to(1024).freeze();
            if i % 2 == 0 {
                pinned.push(piece);
            }
            d.spares.push_back(b);
        }
        // The current buffer is full: a new one is needed; a free spare is taken, two more free ones stay.
        d.buf = BytesMut::with_capacity(1024);
        d.buf.extend_from_slice(&[9; 1021]);
        let _ = d.buf.split_to(1020);
        d.fresh_buffer(PACED_READ);
        assert_eq!(d.allocated, 0, "a free spare was read into again");
        assert_eq!(&d.buf[..], &[9], "the partial header moved along");
        let mut free = 0;
        for s in d.spares.iter_mut() {
            free += usize::from(s.try_reclaim(PACED_READ));
        }
        // 4 pinned + 2 free + the small buffer just left (which cannot hold a bulk read).
        assert_eq!((d.spares.len(), free), (7, FREE_SPARES));
        assert!(pinned
            .iter()
            .enumerate()
            .all(|(i, p)| p[..] == [2 * i as u8; 1024][..]));
    }

    #[tokio::test]
    async fn spare_buffers_are_dropped_once_output_goes_sparse() {
        use tokio::io::AsyncWriteExt;
        let (client, mut server) = tokio::io::duplex(1 << 20);
        let mut d = Demux::new(client, false);
        let writer = tokio::spawn(async move {
            server
                .write_all(&frame(1, &vec![1u8; 2 << 20]))
                .await
                .unwrap();
            for _ in 0..2 {
                tokio::time::sleep(Duration::from_millis(20)).await;
                server.write_all(&frame(1, b"tick\n")).await.unwrap();
            }
            server
        });
        let mut bulk = 0;
        while bulk < 2 << 20 {
            bulk += d.next().await.unwrap().unwrap().into_bytes().len();
        }
        assert!(!d.spares.is_empty(), "bulk output leaves spare buffers");
        for _ in 0..2 {
            let m = d.next().await.unwrap().unwrap().into_bytes();
            assert_eq!(&m[..], b"tick\n");
        }
        assert!(d.spares.is_empty(), "a sparse stream holds no spares");
        drop(writer.await.unwrap());
        assert!(d.next().await.is_none());
    }

    #[test]
    fn bulk_output_is_paced_until_the_tick_is_too_slow_for_it() {
        let mut d = Demux::new(tokio::io::empty(), false);
        let t0 = d.window;
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert!(!d.paced(t0), "a new stream is read as output lands");
        for i in 0..20 {
            d.count(2048, false, at(10 * i));
        }
        assert!(!d.paced(at(200)), "sparse output is never delayed");
        for _ in 0..64 {
            d.count(2048, false, at(201));
        }
        assert!(d.paced(at(202)), "128 KiB within the window is bulk output");
        d.count(100 * 1024, true, at(203));
        assert!(
            d.paced(at(204)),
            "a paced read that found ~100 KiB keeps pacing"
        );
        d.count(PACED_FULL, true, at(205));
        assert!(
            !d.paced(at(206)),
            "a paced read that found the buffer full switches to eager reads"
        );
        d.count(PACED_FULL, false, at(210));
        assert!(!d.paced(at(300)), "for a while");
        assert!(d.paced(at(306)), "then pacing is tried again");
        d.count(1024, false, at(400));
        assert!(
            !d.paced(at(401)),
            "and a stream gone quiet is read as it lands"
        );
    }

    #[tokio::test]
    async fn tty_output_passes_through_and_a_bad_header_is_an_error() {
        let (client, mut server) = tokio::io::duplex(64);
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            server.write_all(b"\x01raw tty bytes").await.unwrap();
        });
        let (got, err) = collect(frames(client, true)).await;
        assert_eq!((got, err), (vec![(9, b"\x01raw tty bytes".to_vec())], None));

        let (client, mut server) = tokio::io::duplex(64);
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            server.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
        });
        let (got, err) = collect(frames(client, false)).await;
        assert!(got.is_empty());
        assert!(err.unwrap().contains("multiplexed"));
    }
}
