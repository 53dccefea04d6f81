//! Where a v1 base URL leads and how bytes get there: `unix:///path` (a Unix socket; HTTP base path `/`),
//! `https://host[:port]/prefix` (rustls: the platform's roots plus an optional extra CA) and `http://host/prefix`
//! (plain, for loopback tests). The base path prefix is kept: `https://connect.docker.com/sandboxes` +
//! `/v1/sandboxes`.
//!
//! One HTTP/1.1 connection per exchange (hyper's connection API): the management plane sees a few requests per
//! SDK call, and a connection that broke can never be reused by mistake.

use super::super::error::{chain_message, Error, ErrorCode, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::HeaderMap;
use hyper::Request;
use hyper_util::rt::TokioIo;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};

/// The largest response body read (a file read is refused above the service's own cap well before this).
pub const MAX_BODY: usize = 256 * 1024 * 1024;

/// A byte stream to the server (Unix socket, TCP, or TLS over TCP).
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// A parsed base URL.
#[derive(Clone)]
pub struct Base {
    kind: Kind,
    /// The path prefix without a trailing slash (`""` or `/sandboxes`).
    prefix: String,
    /// The URL as given (for messages: it never holds a credential).
    shown: String,
}

#[derive(Clone)]
enum Kind {
    Unix(PathBuf),
    Tcp {
        host: String,
        port: u16,
        tls: Option<Arc<rustls::ClientConfig>>,
    },
}

impl std::fmt::Debug for Base {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

/// A complete response: status, headers and the whole (bounded) body.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Base {
    /// Parse `unix:///abs/path`, `https://host[:port][/prefix]` or `http://host[:port][/prefix]`; `tls` is the
    /// client configuration HTTPS uses.
    pub fn parse(url: &str, tls: &Arc<rustls::ClientConfig>) -> Result<Base> {
        let bad = |why: &str| {
            Error::invalid(format!("invalid v1 endpoint {url:?}: {why}"))
                .with("argument", "endpoint")
        };
        if let Some(path) = url.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(bad("a unix:// URL needs an absolute socket path"));
            }
            return Ok(Base {
                kind: Kind::Unix(PathBuf::from(path)),
                prefix: String::new(),
                shown: url.to_string(),
            });
        }
        let (secure, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(bad("expected unix://, https:// or http://"));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains('@') || path.contains(['?', '#']) {
            return Err(bad("expected scheme://host[:port][/prefix]"));
        }
        let default = if secure { 443 } else { 80 };
        let port_of = |p: &str| p.parse::<u16>().map_err(|_| bad("bad port"));
        let (host, port) = if let Some(r) = authority.strip_prefix('[') {
            let (h, after) = r.split_once(']').ok_or_else(|| bad("bad IPv6 host"))?;
            match after.strip_prefix(':') {
                Some(p) => (h, port_of(p)?),
                None if after.is_empty() => (h, default),
                None => return Err(bad("bad IPv6 host")),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, port_of(p)?),
                None => (authority, default),
            }
        };
        let host = host.to_string();
        Ok(Base {
            kind: Kind::Tcp {
                host,
                port,
                tls: secure.then(|| tls.clone()),
            },
            prefix: path.trim_end_matches('/').to_string(),
            shown: url.to_string(),
        })
    }

    /// The URL as given.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Whether this is a Unix socket.
    pub fn is_unix(&self) -> bool {
        matches!(self.kind, Kind::Unix(_))
    }

    /// The request target for `path` (which starts with `/`): the prefix kept.
    pub fn target(&self, path_and_query: &str) -> String {
        format!("{}{}", self.prefix, path_and_query)
    }

    /// The `Host` header value.
    pub fn host_header(&self) -> String {
        match &self.kind {
            Kind::Unix(_) => "localhost".into(),
            Kind::Tcp { host, port, tls } => {
                let default = if tls.is_some() { 443 } else { 80 };
                let h = if host.contains(':') {
                    format!("[{host}]")
                } else {
                    host.clone()
                };
                if *port == default {
                    h
                } else {
                    format!("{h}:{port}")
                }
            }
        }
    }

    /// A ws:// or wss:// URL for `path_and_query` (the WebSocket handshake's request URI).
    pub fn ws_url(&self, path_and_query: &str) -> String {
        let scheme = match &self.kind {
            Kind::Tcp { tls: Some(_), .. } => "wss",
            _ => "ws",
        };
        format!(
            "{scheme}://{}{}",
            self.host_header(),
            self.target(path_and_query)
        )
    }

    fn unavailable(&self, detail: String) -> Error {
        Error::new(
            ErrorCode::SandboxdUnavailable,
            format!(
                "the v1 service at {} cannot be reached: {detail}",
                self.shown
            ),
        )
        .with("endpoint", self.shown.clone())
    }

    /// Open a byte stream to the server.
    pub async fn connect(&self) -> Result<Pin<Box<dyn Io>>> {
        match &self.kind {
            Kind::Unix(path) => {
                let s = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(|e| self.unavailable(e.to_string()))?;
                Ok(Box::pin(s))
            }
            Kind::Tcp { host, port, tls } => {
                let tcp = tokio::net::TcpStream::connect((host.as_str(), *port))
                    .await
                    .map_err(|e| self.unavailable(e.to_string()))?;
                let _ = tcp.set_nodelay(true);
                match tls {
                    None => Ok(Box::pin(tcp)),
                    Some(cfg) => {
                        let name = rustls::pki_types::ServerName::try_from(host.clone())
                            .map_err(|e| self.unavailable(format!("bad server name: {e}")))?;
                        let s = tokio_rustls::TlsConnector::from(cfg.clone())
                            .connect(name, tcp)
                            .await
                            .map_err(|e| self.unavailable(format!("TLS: {}", chain_message(&e))))?;
                        Ok(Box::pin(s))
                    }
                }
            }
        }
    }

    /// Send one request and read the whole response (at most [`MAX_BODY`]). Deadlines are the caller's.
    pub async fn send(&self, req: Request<Full<Bytes>>) -> Result<Response> {
        let io = self.connect().await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| self.unavailable(chain_message(&e)))?;
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        let res = sender.send_request(req).await.map_err(|e| {
            self.unavailable(format!(
                "the connection broke before an answer: {}",
                chain_message(&e)
            ))
        })?;
        let status = res.status().as_u16();
        let (parts, body) = res.into_parts();
        let body = Limited::new(body, MAX_BODY).collect().await.map_err(|e| {
            Error::new(
                ErrorCode::StreamInterrupted,
                format!(
                    "the answer from {} was cut off or too large: {e}",
                    self.shown
                ),
            )
            .with("status", status)
        })?;
        conn.abort();
        Ok(Response {
            status,
            headers: parts.headers,
            body: body.to_bytes(),
        })
    }
}

/// rustls on ring (as the rest of the crate; see `local::proxy::mitm::provider`).
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The HTTPS client configuration: the platform's roots (the OS store on Linux, Mozilla's roots elsewhere) and
/// `extra_ca_pem`.
pub fn tls_config(extra_ca_pem: Option<&str>) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    #[cfg(target_os = "linux")]
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    #[cfg(not(target_os = "linux"))]
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(pem) = extra_ca_pem {
        use rustls::pki_types::pem::PemObject;
        let bad = |why: String| {
            Error::invalid(format!("caPem is not a usable CA certificate: {why}"))
                .with("argument", "caPem")
        };
        let mut n = 0;
        for c in rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()) {
            roots
                .add(c.map_err(|e| bad(e.to_string()))?)
                .map_err(|e| bad(e.to_string()))?;
            n += 1;
        }
        if n == 0 {
            return Err(bad("no certificate in it".into()));
        }
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::internal(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bases_keep_their_prefix() {
        let tls = tls_config(None).unwrap();
        let b = Base::parse("https://connect.docker.com/sandboxes/", &tls).unwrap();
        assert_eq!(b.target("/v1/sandboxes"), "/sandboxes/v1/sandboxes");
        assert_eq!(b.host_header(), "connect.docker.com");
        assert_eq!(b.ws_url("/v1/x"), "wss://connect.docker.com/sandboxes/v1/x");
        let b = Base::parse("https://127.0.0.1:8443", &tls).unwrap();
        assert_eq!(b.target("/v1/sandboxes"), "/v1/sandboxes");
        assert_eq!(b.host_header(), "127.0.0.1:8443");
        let b = Base::parse("unix:///run/s.sock", &tls).unwrap();
        assert!(b.is_unix());
        assert_eq!(b.target("/v1/files"), "/v1/files");
        for bad in [
            "ftp://x",
            "unix://rel",
            "https://",
            "https://u:p@h/",
            "https://h/p?q",
        ] {
            let e = Base::parse(bad, &tls).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidArgument, "{bad}");
        }
    }
}
