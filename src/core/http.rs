//! HTTP/1.1 over a Unix socket (hyper 1's connection API), with bounded bodies and errors that keep their cause.
//!
//! Deadlines and cancellation are applied by the caller ([`super::call`]); this module only moves bytes.
//!
//! Keep-alive connections are pooled here rather than by hyper-util's legacy client, which can open a second
//! connection and keep it idle with no request ever sent (a Node `http` server's `close()` then waits for it).
//! Here a call takes the idle connection, waits until it is ready, and only connects when there is none.

use super::error::chain_message;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Idle connections kept per socket, and how long one may stay idle before it is not reused.
const POOL_MAX_IDLE: usize = 2;
const POOL_IDLE_FOR: Duration = Duration::from_secs(30);
/// How long a call waits for a pooled connection to finish its previous exchange before connecting anew.
const POOL_READY_WAIT: Duration = Duration::from_secs(1);

type Sender = SendRequest<Full<Bytes>>;

/// An HTTP client bound to one Unix socket path.
#[derive(Clone)]
pub struct UnixHttp {
    socket: PathBuf,
    idle: Arc<Mutex<Vec<(Sender, Instant)>>>,
}

/// A complete response: status and the whole (bounded) body.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Bytes,
}

/// Where a request failed before a full response was read.
#[derive(Debug)]
pub enum TransportError {
    /// Could not connect: the socket is missing, refuses, or is not a socket.
    Connect {
        kind: std::io::ErrorKind,
        detail: String,
    },
    /// Connected, but the exchange broke before the response head arrived (not HTTP, closed early).
    Exchange { detail: String },
    /// The head arrived but the body was cut off or too large.
    Body {
        status: u16,
        detail: String,
        too_large: bool,
    },
}

impl UnixHttp {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        UnixHttp {
            socket: socket.into(),
            idle: Arc::new(Mutex::new(Vec::new())),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// An idle connection that is ready for a request, if there is one. A connection put back a moment ago may
    /// still be finishing its previous exchange: wait for that briefly rather than open another.
    async fn pooled(&self) -> Option<Sender> {
        loop {
            let (mut sender, since) = self.idle.lock().ok()?.pop()?;
            if since.elapsed() >= POOL_IDLE_FOR || sender.is_closed() {
                continue;
            }
            if let Ok(Ok(())) = tokio::time::timeout(POOL_READY_WAIT, sender.ready()).await {
                return Some(sender);
            }
        }
    }

    async fn connect(&self) -> std::result::Result<Sender, TransportError> {
        let stream =
            super::socket::connect(&self.socket)
                .await
                .map_err(|e| TransportError::Connect {
                    kind: e.kind(),
                    detail: e.to_string(),
                })?;
        let (sender, conn) =
            http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| TransportError::Exchange {
                    detail: chain_message(&e),
                })?;
        // Ends when the server closes the connection or the last sender for it is dropped.
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    fn put_back(&self, sender: Sender) {
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < POOL_MAX_IDLE {
                idle.push((sender, Instant::now()));
            }
        }
    }

    /// Send one request with an optional JSON body and read the whole response, at most `limit` bytes of body.
    pub async fn request(
        &self,
        method: Method,
        path_and_query: &str,
        json_body: Option<Vec<u8>>,
        limit: usize,
    ) -> std::result::Result<HttpResponse, TransportError> {
        let mut req = Request::builder()
            .method(method)
            .uri(path_and_query)
            .header(hyper::header::HOST, "localhost")
            .header("Accept", "application/json");
        let body = match json_body {
            Some(b) => {
                req = req.header("Content-Type", "application/json");
                Full::new(Bytes::from(b))
            }
            None => Full::new(Bytes::new()),
        };
        let mut req = req.body(body).map_err(|e| TransportError::Exchange {
            detail: e.to_string(),
        })?;
        // A pooled connection the server has just closed hands the request back unsent: send it on a new one.
        let (sender, res) = loop {
            let (mut sender, reused) = match self.pooled().await {
                Some(s) => (s, true),
                None => (self.connect().await?, false),
            };
            match sender.try_send_request(req).await {
                Ok(res) => break (sender, res),
                Err(mut e) => match e.take_message() {
                    Some(unsent) if reused => req = unsent,
                    _ => {
                        return Err(TransportError::Exchange {
                            detail: chain_message(e.error()),
                        })
                    }
                },
            }
        };
        let status = res.status().as_u16();
        let content_type = res
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        match Limited::new(res.into_body(), limit).collect().await {
            Ok(c) => {
                if !sender.is_closed() {
                    self.put_back(sender);
                }
                Ok(HttpResponse {
                    status,
                    content_type,
                    body: c.to_bytes(),
                })
            }
            Err(e) => {
                let too_large = e.is::<http_body_util::LengthLimitError>();
                Err(TransportError::Body {
                    status,
                    detail: if too_large {
                        format!("response body larger than {limit} bytes")
                    } else {
                        chain_message(e.as_ref())
                    },
                    too_large,
                })
            }
        }
    }
}

/// Percent-encode one URL path segment (everything but unreserved characters).
pub fn encode_segment(s: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, SET).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server that answers every GET with `{}` and counts connections; with `close_after`, it closes each
    /// connection after answering (without saying so), as a server's idle timeout would.
    async fn counting_server(close_after: bool) -> (tempfile::TempDir, PathBuf, Arc<AtomicUsize>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    loop {
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..end + 4);
                            let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
                            if conn.write_all(reply).await.is_err() || close_after {
                                return;
                            }
                        }
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                });
            }
        });
        (dir, path, accepted)
    }

    #[tokio::test]
    async fn sequential_calls_share_one_connection() {
        let (_dir, path, accepted) = counting_server(false).await;
        let http = UnixHttp::new(&path);
        for _ in 0..50 {
            let r = http.request(Method::GET, "/vm", None, 1024).await.unwrap();
            assert_eq!((r.status, &r.body[..]), (200, &b"{}"[..]));
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_pooled_connection_the_server_closed_is_replaced() {
        let (_dir, path, accepted) = counting_server(true).await;
        let http = UnixHttp::new(&path);
        for i in 0..50 {
            let r = http.request(Method::GET, "/vm", None, 1024).await;
            assert!(r.is_ok(), "call {i}: {r:?}");
            if i % 2 == 0 {
                // give the close time to arrive, so both orders (close seen or not yet) are exercised
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 50);
    }

    #[test]
    fn segments_are_encoded() {
        assert_eq!(encode_segment("a-vm"), "a-vm");
        assert_eq!(encode_segment("a/b"), "a%2Fb");
        assert_eq!(encode_segment("%2e%2e"), "%252e%252e");
        assert_eq!(encode_segment("a b?"), "a%20b%3F");
    }
}
