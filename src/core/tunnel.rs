//! HTTP to a port inside a sandbox with no port published: a byte relay (`nc 127.0.0.1 PORT`, socat, node or
//! python3) run as an interactive exec in any [`ExecTarget`] (`docker exec -i` in a container, the sbx exec route
//! in an sbx sandbox), its stdin/stdout carrying a real HTTP/1.1 connection (hyper).

use super::backend::{ExecTarget, ProcessHandle};
use super::error::{Error, ErrorCode, Result};
use super::exec::{Chunk, ExecSpec};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;

/// The in-container program that relays bytes to `127.0.0.1:PORT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relay {
    Nc,
    BusyboxNc,
    Socat,
    Node,
    Python3,
}

const NODE_RELAY: &str = "const s=require('net').connect(+process.argv[1],'127.0.0.1');\
process.stdin.pipe(s);s.pipe(process.stdout);s.on('error',()=>process.exit(1));s.on('close',()=>process.exit(0))";
const PY_RELAY: &str = "import socket,sys,threading\n\
s=socket.create_connection(('127.0.0.1',int(sys.argv[1])))\n\
def up():\n\
  while True:\n\
    d=sys.stdin.buffer.read1(65536)\n\
    if not d: s.shutdown(socket.SHUT_WR); return\n\
    s.sendall(d)\n\
threading.Thread(target=up,daemon=True).start()\n\
while True:\n\
  d=s.recv(65536)\n\
  if not d: break\n\
  sys.stdout.buffer.write(d); sys.stdout.buffer.flush()\n";

/// Probed in this order; the script is constant (no user input reaches it).
const PROBE: &str =
    "for c in nc socat node python3; do command -v $c >/dev/null 2>&1 && echo $c; done; \
busybox nc --help >/dev/null 2>&1 && echo busybox-nc; exit 0";

impl Relay {
    /// The argv that relays stdin/stdout to `127.0.0.1:port`.
    pub fn argv(self, port: u16) -> Vec<String> {
        let p = port.to_string();
        let v: Vec<&str> = match self {
            Relay::Nc => vec!["nc", "127.0.0.1", &p],
            Relay::BusyboxNc => vec!["busybox", "nc", "127.0.0.1", &p],
            Relay::Socat => {
                return vec!["socat".into(), "-".into(), format!("TCP:127.0.0.1:{port}")]
            }
            Relay::Node => vec!["node", "-e", NODE_RELAY, &p],
            Relay::Python3 => vec!["python3", "-c", PY_RELAY, &p],
        };
        v.into_iter().map(String::from).collect()
    }

    pub fn name(self) -> &'static str {
        match self {
            Relay::Nc => "nc",
            Relay::BusyboxNc => "busybox nc",
            Relay::Socat => "socat",
            Relay::Node => "node",
            Relay::Python3 => "python3",
        }
    }
}

/// Pick the relay from the probe's output (first of nc, busybox nc, socat, node, python3).
pub fn choose_relay(probe_output: &str) -> Option<Relay> {
    let have: Vec<&str> = probe_output.lines().map(str::trim).collect();
    [
        ("nc", Relay::Nc),
        ("busybox-nc", Relay::BusyboxNc),
        ("socat", Relay::Socat),
        ("node", Relay::Node),
        ("python3", Relay::Python3),
    ]
    .into_iter()
    .find(|(n, _)| have.contains(n))
    .map(|(_, r)| r)
}

/// Probe the target once for a relay.
pub async fn probe_relay(target: &dyn ExecTarget) -> Result<Relay> {
    let out = target
        .exec(
            ExecSpec {
                cmd: vec!["sh".into(), "-c".into(), PROBE.into()],
                timeout: Some(std::time::Duration::from_secs(15)),
                ..Default::default()
            },
            Default::default(),
        )
        .await?;
    choose_relay(&String::from_utf8_lossy(&out.stdout)).ok_or_else(|| {
        let (field, value) = target.subject();
        Error::new(
            ErrorCode::NoTunnelRelay,
            format!(
                "{} has no relay to reach the agent server: install one of nc (busybox), socat, node or \
                 python3 in the image",
                target.describe()
            ),
        )
        .with(field, value)
    })
}

/// A relay exec as an `AsyncRead + AsyncWrite` byte stream. Dropping it kills the relay inside the target.
///
/// The process is held as a shared trait object: each read, write and shutdown is a `'static` future that owns a
/// clone of the handle (hyper polls them across calls), which is what `Process`'s own `Clone` gave before.
pub struct Tunnel {
    proc: Arc<dyn ProcessHandle>,
    reading: Option<BoxFuture<'static, Option<Result<Chunk>>>>,
    writing: Option<(usize, BoxFuture<'static, Result<()>>)>,
    closing: Option<BoxFuture<'static, Result<()>>>,
    buf: Bytes,
    eof: bool,
}

impl Tunnel {
    /// Start `relay` to `port` in `target`.
    pub async fn open(target: &dyn ExecTarget, relay: Relay, port: u16) -> Result<Tunnel> {
        let proc = target
            .spawn(
                ExecSpec {
                    cmd: relay.argv(port),
                    interactive: true,
                    ..Default::default()
                },
                CancellationToken::new(),
            )
            .await?;
        Ok(Tunnel {
            proc: Arc::from(proc),
            reading: None,
            writing: None,
            closing: None,
            buf: Bytes::new(),
            eof: false,
        })
    }
}

fn io_err(e: Error) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::BrokenPipe, e.to_string())
}

impl AsyncRead for Tunnel {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        loop {
            if !self.buf.is_empty() {
                let n = self.buf.len().min(out.remaining());
                let chunk = self.buf.split_to(n);
                out.put_slice(&chunk);
                return Poll::Ready(Ok(()));
            }
            if self.eof {
                return Poll::Ready(Ok(()));
            }
            if self.reading.is_none() {
                let p = self.proc.clone();
                self.reading = Some(async move { p.next().await }.boxed());
            }
            let fut = self.reading.as_mut().expect("set above");
            match fut.poll_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(item) => {
                    self.reading = None;
                    match item {
                        None => self.eof = true,
                        Some(Ok(Chunk::Stdout(b))) => self.buf = b,
                        Some(Ok(Chunk::Stderr(_))) => {} // the relay's complaints (e.g. connection refused)
                        Some(Err(e)) => return Poll::Ready(Err(io_err(e))),
                    }
                }
            }
        }
    }
}

impl AsyncWrite for Tunnel {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.writing.is_none() {
            let p = self.proc.clone();
            let owned = data.to_vec();
            let n = owned.len();
            self.writing = Some((n, async move { p.write(&owned).await }.boxed()));
        }
        let (n, fut) = self.writing.as_mut().expect("set above");
        let n = *n;
        match fut.poll_unpin(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(r) => {
                self.writing = None;
                Poll::Ready(r.map(|_| n).map_err(io_err))
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.closing.is_none() {
            let p = self.proc.clone();
            self.closing = Some(async move { p.end().await }.boxed());
        }
        let fut = self.closing.as_mut().expect("set above");
        fut.poll_unpin(cx).map(|r| r.map_err(io_err))
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        // Output is dropped at once, so the relay cannot stall on it; ending a relay that still runs (TERM, then
        // KILL) needs the runtime and is not waited for here.
        let p = self.proc.clone();
        p.discard_output();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { p.dispose().await });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_choice_follows_the_order() {
        assert_eq!(choose_relay("python3\nnode\n"), Some(Relay::Node));
        assert_eq!(choose_relay("busybox-nc\n"), Some(Relay::BusyboxNc));
        assert_eq!(choose_relay("socat\nbusybox-nc\n"), Some(Relay::BusyboxNc));
        assert_eq!(choose_relay("nc\nsocat\n"), Some(Relay::Nc));
        assert_eq!(choose_relay(""), None);
        assert_eq!(
            Relay::Socat.argv(2468),
            vec!["socat", "-", "TCP:127.0.0.1:2468"]
        );
        assert_eq!(Relay::Nc.argv(1), vec!["nc", "127.0.0.1", "1"]);
    }
}
