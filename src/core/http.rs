//! HTTP/1.1 over a Unix socket (hyper 1 + hyperlocal), with bounded bodies and errors that keep their cause.
//!
//! Deadlines and cancellation are applied by the caller with [`bounded`]; this module only moves bytes.

use super::error::{chain_message, io_cause, Error, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyperlocal::{UnixClientExt, UnixConnector};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// An HTTP client bound to one Unix socket path.
#[derive(Clone)]
pub struct UnixHttp {
    socket: PathBuf,
    client: Client<UnixConnector, Full<Bytes>>,
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
        let client = Client::unix();
        UnixHttp {
            socket: socket.into(),
            client,
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Send one request with an optional JSON body and read the whole response, at most `limit` bytes of body.
    pub async fn request(
        &self,
        method: Method,
        path_and_query: &str,
        json_body: Option<Vec<u8>>,
        limit: usize,
    ) -> std::result::Result<HttpResponse, TransportError> {
        let uri: hyper::Uri = hyperlocal::Uri::new(&self.socket, path_and_query).into();
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header("Accept", "application/json");
        let body = match json_body {
            Some(b) => {
                req = req.header("Content-Type", "application/json");
                Full::new(Bytes::from(b))
            }
            None => Full::new(Bytes::new()),
        };
        let req = req.body(body).map_err(|e| TransportError::Exchange {
            detail: e.to_string(),
        })?;
        let res = match self.client.request(req).await {
            Ok(r) => r,
            Err(e) => {
                let detail = chain_message(&e);
                if e.is_connect() {
                    let kind = io_cause(&e)
                        .map(|io| io.kind())
                        .unwrap_or(std::io::ErrorKind::Other);
                    return Err(TransportError::Connect { kind, detail });
                }
                return Err(TransportError::Exchange { detail });
            }
        };
        let status = res.status().as_u16();
        let content_type = res
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        match Limited::new(res.into_body(), limit).collect().await {
            Ok(c) => Ok(HttpResponse {
                status,
                content_type,
                body: c.to_bytes(),
            }),
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

/// Run `fut` until it finishes, the deadline passes (`ERR_TIMEOUT`) or `cancel` fires (`ABORT_ERR`).
pub async fn bounded<T>(
    what: &str,
    deadline: Option<Duration>,
    cancel: &CancellationToken,
    fut: impl Future<Output = Result<T>>,
) -> Result<T> {
    if cancel.is_cancelled() {
        return Err(Error::aborted());
    }
    let sleep = async {
        match deadline {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        r = fut => r,
        _ = cancel.cancelled() => Err(Error::aborted()),
        _ = sleep => Err(Error::timeout(what, deadline.unwrap_or_default())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_encoded() {
        assert_eq!(encode_segment("a-vm"), "a-vm");
        assert_eq!(encode_segment("a/b"), "a%2Fb");
        assert_eq!(encode_segment("%2e%2e"), "%252e%252e");
        assert_eq!(encode_segment("a b?"), "a%20b%3F");
    }

    #[tokio::test]
    async fn bounded_times_out_and_aborts() {
        let t = CancellationToken::new();
        let e = bounded(
            "x",
            Some(Duration::from_millis(20)),
            &t,
            std::future::pending::<Result<()>>(),
        )
        .await
        .unwrap_err();
        assert_eq!(e.code.as_str(), "ERR_TIMEOUT");
        assert_eq!(e.props["timeoutMs"], 20);
        t.cancel();
        let e = bounded("x", None, &t, std::future::pending::<Result<()>>())
            .await
            .unwrap_err();
        assert_eq!(e.code.as_str(), "ABORT_ERR");
    }
}
