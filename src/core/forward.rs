//! Forwarded ports: a loopback listener on the host whose every connection is carried to a port inside a sandbox
//! by an exec tunnel ([`Tunnel`]), so ordinary HTTP clients reach a service in the sandbox with no port published.

use super::backend::ExecTarget;
use super::call::Call;
use super::error::{Error, ErrorCode, Result};
use super::tunnel::{probe_relay, Tunnel};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Default deadline for setting a forward up (probing the relay, binding the listener).
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `close` waits for the connections' tunnels to be torn down.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// A listening forward. Dropping it does not stop it: call [`Forward::close`] (the binding does on dispose).
pub struct Forward {
    addr: SocketAddr,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Forward {
    /// Listen on `127.0.0.1:host_port` (0 or `None`: any free port) and carry each connection to `port` inside
    /// `target`. The relay program is probed first, so a target without one fails here (`ERR_NO_TUNNEL_RELAY`).
    pub async fn start(
        target: Arc<dyn ExecTarget>,
        port: u16,
        host_port: Option<u16>,
        call: &Call,
    ) -> Result<Forward> {
        if port == 0 {
            return Err(Error::invalid("port must be 1 to 65535").with("argument", "port"));
        }
        let (listener, relay) = call
            .run("starting a forward", Some(START_TIMEOUT), async {
                let relay = probe_relay(target.as_ref()).await?;
                let listener = TcpListener::bind(("127.0.0.1", host_port.unwrap_or(0)))
                    .await
                    .map_err(|e| {
                        Error::new(
                            ErrorCode::InvalidArgument,
                            format!("cannot listen on 127.0.0.1:{}: {e}", host_port.unwrap_or(0)),
                        )
                        .with("argument", "hostPort")
                    })?;
                Ok((listener, relay))
            })
            .await?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::internal(format!("the forward's listener has no address: {e}")))?;
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let (stop2, tasks2) = (stop.clone(), tasks.clone());
        tasks.spawn(async move {
            loop {
                let conn = tokio::select! {
                    c = listener.accept() => c,
                    _ = stop2.cancelled() => break,
                };
                let Ok((mut conn, _)) = conn else {
                    // A failed accept (out of descriptors, say) is not fatal for the listener.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let _ = conn.set_nodelay(true);
                let (target, stop) = (target.clone(), stop2.clone());
                tasks2.spawn(async move {
                    let Ok(mut tunnel) = Tunnel::open(target.as_ref(), relay, port).await else {
                        // The client sees its connection closed: nothing listens behind it, or the sandbox is gone.
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut conn, &mut tunnel) => {}
                        _ = stop.cancelled() => {}
                    }
                });
            }
        });
        Ok(Forward { addr, stop, tasks })
    }

    /// The host address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop listening and end every connection (their relays inside the sandbox are disposed of); waits up to
    /// [`CLOSE_WAIT`]. Idempotent.
    pub async fn close(&self) {
        self.stop.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(CLOSE_WAIT, self.tasks.wait()).await;
    }

    /// Whether `close` was called.
    pub fn is_closed(&self) -> bool {
        self.stop.is_cancelled()
    }
}
