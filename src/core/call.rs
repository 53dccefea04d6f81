//! One call's limits: the caller's deadline and cancellation, passed as the last argument of every core
//! operation that waits. Each operation applies them with its own default, defined beside it.

use super::error::{Error, Result};
use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A call's deadline override and cancellation token (the JS `{ timeoutMs, signal }`).
#[derive(Clone, Debug, Default)]
pub struct Call {
    /// The caller's deadline; `None` leaves the operation's default in force.
    pub timeout: Option<Duration>,
    /// Fired when the caller gives up (the JS AbortSignal).
    pub cancel: CancellationToken,
}

impl Call {
    /// A call with this deadline override and token.
    pub fn new(timeout: Option<Duration>, cancel: CancellationToken) -> Call {
        Call { timeout, cancel }
    }

    /// The caller's deadline, else `default`.
    pub fn timeout_or(&self, default: Option<Duration>) -> Option<Duration> {
        self.timeout.or(default)
    }

    /// Run `fut` bounded by the caller's deadline (else `default`; `None` = no deadline) and cancellation.
    pub async fn run<T>(
        &self,
        what: &str,
        default: Option<Duration>,
        fut: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        bounded(what, self.timeout_or(default), &self.cancel, fut).await
    }
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

    #[tokio::test]
    async fn the_callers_deadline_overrides_the_default() {
        let call = Call::new(Some(Duration::from_millis(10)), CancellationToken::new());
        let e = call
            .run(
                "op",
                Some(Duration::from_secs(60)),
                std::future::pending::<Result<()>>(),
            )
            .await
            .unwrap_err();
        assert_eq!(e.props["timeoutMs"], 10);
        let e = Call::default()
            .run(
                "op",
                Some(Duration::from_millis(10)),
                std::future::pending::<Result<()>>(),
            )
            .await
            .unwrap_err();
        assert_eq!(e.props["timeoutMs"], 10);
        assert_eq!(
            Call::default()
                .run("op", None, async { Ok(7) })
                .await
                .unwrap(),
            7
        );
    }
}
