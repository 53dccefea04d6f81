//! The local socket the clients reach a daemon through (sandboxd's socket, a Docker engine's socket): the one
//! place that opens such a connection, so the platform's transport is chosen here and nowhere else.
//!
//! On Unix it is a Unix domain socket. On Windows sbx listens on a named pipe, a transport not written yet:
//! there every connection fails with [`std::io::ErrorKind::Unsupported`], which the clients report as an
//! unreachable daemon. The rest of the crate is the same on every platform.

#[cfg(unix)]
mod imp {
    use std::path::Path;

    /// A connection to a local socket.
    pub type Stream = tokio::net::UnixStream;

    /// The hyper-util connector for pooled clients; the socket is named in each request's URI ([`uri`]).
    pub use hyperlocal::UnixConnector as Connector;

    /// Connect to the socket at `path`.
    pub async fn connect(path: &Path) -> std::io::Result<Stream> {
        tokio::net::UnixStream::connect(path).await
    }

    /// Whether `meta` (of the path a client was given) is a socket.
    pub fn is_socket(meta: &std::fs::Metadata) -> bool {
        use std::os::unix::fs::FileTypeExt;
        meta.file_type().is_socket()
    }

    /// The URI that sends `path_and_query` to the socket at `socket` through [`Connector`].
    pub fn uri(socket: &Path, path_and_query: &str) -> hyper::Uri {
        hyperlocal::Uri::new(socket, path_and_query).into()
    }
}

#[cfg(not(unix))]
mod imp {
    use hyper_util::client::legacy::connect::{Connected, Connection};
    use hyper_util::rt::TokioIo;
    use std::io;
    use std::path::Path;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

    fn unsupported() -> io::Error {
        io::Error::new(
            io::ErrorKind::Unsupported,
            "connecting to a local socket is not supported on this platform yet (sbx's named pipe on Windows \
             is a later transport)",
        )
    }

    /// A connection to a local socket: none can be made here, so the type has no values.
    pub enum Stream {}

    /// The hyper-util connector for pooled clients: every connection fails (see the module docs).
    #[derive(Debug, Clone, Copy)]
    pub struct Connector;

    /// Fails with [`io::ErrorKind::Unsupported`].
    pub async fn connect(_path: &Path) -> io::Result<Stream> {
        Err(unsupported())
    }

    /// Cannot be told here; `true`, so that the connection attempt reports why it fails.
    pub fn is_socket(_meta: &std::fs::Metadata) -> bool {
        true
    }

    /// A URI carrying only `path_and_query` (the connector never connects anywhere).
    pub fn uri(_socket: &Path, path_and_query: &str) -> hyper::Uri {
        format!("http://localhost{path_and_query}")
            .parse()
            .unwrap_or_default()
    }

    impl tower_service::Service<hyper::Uri> for Connector {
        type Response = TokioIo<Stream>;
        type Error = io::Error;
        type Future = std::future::Ready<io::Result<TokioIo<Stream>>>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _uri: hyper::Uri) -> Self::Future {
            std::future::ready(Err(unsupported()))
        }
    }

    impl Connection for Stream {
        fn connected(&self) -> Connected {
            match *self {}
        }
    }

    impl AsyncRead for Stream {
        fn poll_read(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            _buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            match *self.get_mut() {}
        }
    }

    impl AsyncWrite for Stream {
        fn poll_write(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            _buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            match *self.get_mut() {}
        }

        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            match *self.get_mut() {}
        }

        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            match *self.get_mut() {}
        }
    }
}

pub use imp::{connect, is_socket, uri, Connector, Stream};
