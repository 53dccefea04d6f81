//! The proxy's decision log: a bounded ring of entries (a snapshot for readers) and a broadcast channel for
//! followers, written so that `follow` hands out "everything after N" and a receiver with no gap between them.

use serde::Serialize;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::broadcast;

/// Entries kept by default.
pub const DEFAULT_CAPACITY: usize = 4096;

/// How the client asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProxyType {
    /// An absolute-form HTTP request (`GET http://host/path`), forwarded.
    Forward,
    /// A `CONNECT host:port` tunnel (plain, or for an intercepted one: the tunnel when it carried no request).
    Connect,
    /// One HTTPS request inside an intercepted `CONNECT` (TLS terminated by the proxy).
    Intercepted,
    /// No request could be read (garbage, a half request, slow headers).
    None,
}

/// Why an entry ended as it did: the policy's reason, or what went wrong around it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogReason {
    /// Allowed by a rule.
    AllowedByRule,
    /// Blocked by a deny rule.
    DeniedByRule,
    /// Blocked: an address in a default-blocked range.
    DefaultBlockedRange,
    /// Blocked: no allow rule matched.
    NoMatchingRule,
    /// The request's target is not a valid host/port.
    InvalidTarget,
    /// An origin-form request (`GET /path`) sent to the proxy as if it were the server.
    NotAProxyRequest,
    /// An absolute-form request with a scheme other than `http` (HTTPS goes through CONNECT).
    UnsupportedScheme,
    /// The name did not resolve.
    ResolveFailed,
    /// The checked address refused or timed out.
    UpstreamUnreachable,
    /// The upstream broke the HTTP exchange.
    UpstreamError,
    /// Bytes that are not an HTTP request.
    MalformedRequest,
    /// The client closed the connection in the middle of a request head.
    IncompleteRequest,
    /// The request head did not arrive in time.
    HeaderTimeout,
    /// The request head was too large.
    RequestTooLarge,
    /// The client connection failed otherwise.
    ClientError,
    /// An intercepted request's `Host` does not name the CONNECT target (`421`).
    HostMismatch,
    /// The client refused the proxy's certificate (it does not trust the sandbox CA).
    ClientRejectedCertificate,
    /// The TLS handshake with the client failed otherwise (not TLS, a protocol error).
    ClientTls,
    /// The upstream's certificate did not verify against the proxy's trust roots.
    UpstreamCertificate,
    /// The TLS handshake with the upstream failed otherwise.
    UpstreamTls,
    /// The proxy could not set up interception (minting the leaf certificate failed).
    InterceptFailed,
}

impl LogReason {
    /// Stable kebab-case name (also the `x-sandboxd-reason` header of refusals).
    pub fn as_str(self) -> &'static str {
        match self {
            LogReason::AllowedByRule => "allowed-by-rule",
            LogReason::DeniedByRule => "denied-by-rule",
            LogReason::DefaultBlockedRange => "default-blocked-range",
            LogReason::NoMatchingRule => "no-matching-rule",
            LogReason::InvalidTarget => "invalid-target",
            LogReason::NotAProxyRequest => "not-a-proxy-request",
            LogReason::UnsupportedScheme => "unsupported-scheme",
            LogReason::ResolveFailed => "resolve-failed",
            LogReason::UpstreamUnreachable => "upstream-unreachable",
            LogReason::UpstreamError => "upstream-error",
            LogReason::MalformedRequest => "malformed-request",
            LogReason::IncompleteRequest => "incomplete-request",
            LogReason::HeaderTimeout => "header-timeout",
            LogReason::RequestTooLarge => "request-too-large",
            LogReason::ClientError => "client-error",
            LogReason::HostMismatch => "host-mismatch",
            LogReason::ClientRejectedCertificate => "client-rejected-certificate",
            LogReason::ClientTls => "client-tls",
            LogReason::UpstreamCertificate => "upstream-certificate",
            LogReason::UpstreamTls => "upstream-tls",
            LogReason::InterceptFailed => "intercept-failed",
        }
    }
}

impl From<crate::core::policy::Reason> for LogReason {
    fn from(r: crate::core::policy::Reason) -> Self {
        use crate::core::policy::Reason as R;
        match r {
            R::AllowedByRule => LogReason::AllowedByRule,
            R::DeniedByRule => LogReason::DeniedByRule,
            R::DefaultBlockedRange => LogReason::DefaultBlockedRange,
            R::NoMatchingRule => LogReason::NoMatchingRule,
        }
    }
}

/// One request the proxy saw, written when it finished (at once for a refusal; when the response body or the
/// tunnel ends for an allowed one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LogEntry {
    /// Increasing from 1 for the proxy's lifetime.
    pub seq: u64,
    /// The sandbox (listener-bound, or the `Proxy-Authorization` user name), if any.
    pub sandbox: Option<String>,
    /// Forward, CONNECT, or none (no request was read).
    pub proxy_type: ProxyType,
    /// The normalised host (or the raw text when it did not parse; empty when no request was read).
    pub host: String,
    /// The port asked for.
    pub port: Option<u16>,
    /// The request method (`CONNECT` for tunnels).
    pub method: Option<String>,
    /// Whether the policy allowed the destination (an allowed request may still fail upstream).
    pub allowed: bool,
    /// The rule or default-blocked range that decided.
    pub rule: Option<String>,
    /// Why it ended as it did.
    pub reason: LogReason,
    /// The scope of the deciding rule (`global`, `sandbox:<id>`, `default`), when the policy decided.
    pub scope: Option<String>,
    /// A human-readable line.
    pub message: String,
    /// The address the proxy connected to (always one that was checked).
    pub upstream: Option<SocketAddr>,
    /// The client's address.
    pub client: SocketAddr,
    /// The status the proxy answered (the upstream's for forwarded requests, 200 for an opened tunnel).
    pub status: Option<u16>,
    /// Body / tunnel bytes from the client to the upstream.
    pub bytes_up: u64,
    /// Body / tunnel bytes from the upstream to the client.
    pub bytes_down: u64,
    /// Unix milliseconds when the request head had been read (or the connection opened).
    pub started_ms: u64,
    /// Unix milliseconds when the entry was written.
    pub ended_ms: u64,
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

struct Ring {
    entries: VecDeque<LogEntry>,
    next_seq: u64,
}

/// The log: a ring of the last `capacity` entries and a broadcast to followers.
pub struct DecisionLog {
    ring: Mutex<Ring>,
    capacity: usize,
    tx: broadcast::Sender<LogEntry>,
}

impl DecisionLog {
    /// A log keeping `capacity` entries (and as many queued per follower before it lags).
    pub fn new(capacity: usize) -> DecisionLog {
        let capacity = capacity.max(1);
        DecisionLog {
            ring: Mutex::new(Ring {
                entries: VecDeque::with_capacity(capacity.min(1024)),
                next_seq: 1,
            }),
            capacity,
            tx: broadcast::channel(capacity).0,
        }
    }

    /// Appends an entry (its `seq` and `ended_ms` are set here) and sends it to followers.
    pub fn push(&self, mut entry: LogEntry) {
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        entry.seq = ring.next_seq;
        entry.ended_ms = now_ms();
        ring.next_seq += 1;
        if ring.entries.len() == self.capacity {
            ring.entries.pop_front();
        }
        ring.entries.push_back(entry.clone());
        // Sent under the lock, so `follow` sees every entry exactly once: in its snapshot or on its receiver.
        let _ = self.tx.send(entry);
    }

    /// The entries kept, oldest first.
    pub fn snapshot(&self) -> Vec<LogEntry> {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        ring.entries.iter().cloned().collect()
    }

    /// The kept entries with `seq > after`, and a receiver of every later one (no gap, no repeat). A receiver
    /// that falls more than the capacity behind gets `RecvError::Lagged(n)` and can resume with `follow(last)`.
    pub fn follow(&self, after: u64) -> (Vec<LogEntry>, broadcast::Receiver<LogEntry>) {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let rx = self.tx.subscribe();
        let kept = ring
            .entries
            .iter()
            .filter(|e| e.seq > after)
            .cloned()
            .collect();
        (kept, rx)
    }
}
