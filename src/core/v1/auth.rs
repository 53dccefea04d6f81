//! Management credentials: none (a `localSocket` endpoint), a ready access token, or a Docker ID + PAT exchanged
//! at `{hub}/v2/auth/token` for an access token, which is refreshed before it expires (its JWT `exp` when
//! readable, else [`UNKNOWN_LIFETIME`]) and once when the service answers 401.
//!
//! Secrets live in [`Secret`] (whose `Debug` prints `[redacted]`), and every error the client returns passes
//! through [`Redactor::scrub`], so no token or PAT reaches a message, a property or a log.

use super::super::error::{Error, ErrorCode, Result};
use super::transport::Base;
use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use serde_json::Value;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long an access token whose expiry cannot be read is used before it is exchanged again.
pub const UNKNOWN_LIFETIME: Duration = Duration::from_secs(300);
/// A token is refreshed when less than this is left of it.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(60);

/// A credential: never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap a credential.
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    /// The value, for the one header that carries it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Every secret the client has held, so errors can be scrubbed of them (a server may echo a header back).
#[derive(Default)]
pub struct Redactor {
    seen: Mutex<Vec<String>>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Redactor")
    }
}

/// The most secrets remembered (endpoint credentials are renewed every few minutes).
const REMEMBERED: usize = 64;

impl Redactor {
    /// Remember `s` (ignored when too short to be a credential).
    pub fn remember(&self, s: &str) {
        if s.len() < 8 {
            return;
        }
        if let Ok(mut seen) = self.seen.lock() {
            if !seen.iter().any(|x| x == s) {
                seen.push(s.to_string());
                if seen.len() > REMEMBERED {
                    let i = 1.min(seen.len() - 1);
                    seen.remove(i);
                }
            }
        }
    }

    fn clean(&self, text: &str) -> String {
        let mut out = text.to_string();
        if let Ok(seen) = self.seen.lock() {
            for s in seen.iter() {
                if out.contains(s.as_str()) {
                    out = out.replace(s.as_str(), "[redacted]");
                }
            }
        }
        out
    }

    fn clean_value(&self, v: &mut Value) {
        match v {
            Value::String(s) => *s = self.clean(s),
            Value::Array(a) => a.iter_mut().for_each(|x| self.clean_value(x)),
            Value::Object(o) => o.values_mut().for_each(|x| self.clean_value(x)),
            _ => {}
        }
    }

    /// `e` with every remembered secret replaced by `[redacted]` in its message and properties.
    pub fn scrub(&self, mut e: Error) -> Error {
        e.message = self.clean(&e.message);
        for v in e.props.values_mut() {
            self.clean_value(v);
        }
        e
    }
}

/// How management requests authenticate.
pub enum Auth {
    /// `localSocket`: no token.
    Local,
    /// A ready access token.
    Token(Secret),
    /// A Docker ID and PAT exchanged for access tokens.
    Pat(PatAuth),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Local => f.write_str("Auth::Local"),
            Auth::Token(_) => f.write_str("Auth::Token([redacted])"),
            Auth::Pat(p) => write!(f, "Auth::Pat({:?}, [redacted])", p.identifier),
        }
    }
}

/// The PAT exchange and its cached access token.
pub struct PatAuth {
    identifier: String,
    pat: Secret,
    hub: Base,
    cached: tokio::sync::Mutex<Option<(Secret, Instant)>>,
}

impl PatAuth {
    /// A PAT exchanged at `hub` (`{hub}/v2/auth/token`).
    pub fn new(identifier: String, pat: Secret, hub: Base) -> PatAuth {
        PatAuth {
            identifier,
            pat,
            hub,
            cached: tokio::sync::Mutex::new(None),
        }
    }
}

impl Auth {
    /// Whether a 401 can be answered by exchanging again.
    pub fn can_refresh(&self) -> bool {
        matches!(self, Auth::Pat(_))
    }

    /// The bearer token to send (`None` for a local socket); `fresh` forces a new exchange (after a 401).
    pub async fn bearer(&self, fresh: bool, redactor: &Redactor) -> Result<Option<Secret>> {
        match self {
            Auth::Local => Ok(None),
            Auth::Token(t) => Ok(Some(t.clone())),
            Auth::Pat(p) => {
                let mut cached = p.cached.lock().await;
                if let Some((t, until)) = cached.as_ref() {
                    if !fresh && Instant::now() + REFRESH_MARGIN < *until {
                        return Ok(Some(t.clone()));
                    }
                }
                let (token, lifetime) = exchange(p, redactor).await?;
                *cached = Some((token.clone(), Instant::now() + lifetime));
                Ok(Some(token))
            }
        }
    }
}

/// `POST {hub}/v2/auth/token {"identifier","secret"}` → `access_token` and how long it lives.
async fn exchange(p: &PatAuth, redactor: &Redactor) -> Result<(Secret, Duration)> {
    redactor.remember(p.pat.expose());
    let body = serde_json::json!({"identifier": p.identifier, "secret": p.pat.expose()});
    let req = hyper::Request::post(p.hub.target("/v2/auth/token"))
        .header("host", p.hub.host_header())
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| Error::internal(e.to_string()))?;
    let res = p.hub.send(req).await?;
    let refused = |why: String| {
        Error::new(
            ErrorCode::Unauthenticated,
            format!(
                "Docker Hub refused the token exchange for {:?}: {why}",
                p.identifier
            ),
        )
        .with("status", res.status)
        .with("hub", p.hub.shown().to_string())
    };
    if res.status == 401 || res.status == 403 {
        return Err(refused(
            "check the Docker ID and that the PAT is valid with the sandbox:use scope".into(),
        ));
    }
    if res.status != 200 {
        return Err(Error::protocol(
            format!(
                "Docker Hub answered the token exchange with HTTP {}",
                res.status
            ),
            Some(res.status),
            &res.body,
        ));
    }
    let v: Value = serde_json::from_slice(&res.body).map_err(|_| {
        Error::protocol(
            "Docker Hub's token exchange answer is not JSON",
            Some(200),
            b"",
        )
    })?;
    let token = v["access_token"]
        .as_str()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            Error::protocol(
                "Docker Hub's token exchange answer has no access_token",
                Some(200),
                b"",
            )
        })?;
    redactor.remember(token);
    Ok((Secret::new(token), lifetime(token)))
}

/// How long a token lives: its JWT `exp` when readable, else [`UNKNOWN_LIFETIME`].
pub fn lifetime(token: &str) -> Duration {
    let exp = token
        .split('.')
        .nth(1)
        .and_then(|p| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p.trim_end_matches('='))
                .ok()
        })
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v["exp"].as_u64());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    match exp {
        Some(exp) => Duration::from_secs(exp.saturating_sub(now)),
        None => UNKNOWN_LIFETIME,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_expiry_is_read_and_opaque_tokens_get_the_conservative_lifetime() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(format!("{{\"exp\":{}}}", now + 900));
        let l = lifetime(&format!("eyJhbGciOiJub25lIn0.{claims}.sig"));
        assert!(l > Duration::from_secs(890) && l <= Duration::from_secs(900));
        assert_eq!(lifetime("opaque-token"), UNKNOWN_LIFETIME);
        let past = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("{\"exp\":1}");
        assert_eq!(lifetime(&format!("a.{past}.b")), Duration::ZERO);
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("tok-very-secret");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert!(!format!("{:?}", Auth::Token(s)).contains("very"));
        let r = Redactor::default();
        r.remember("tok-very-secret");
        let e = r.scrub(
            Error::invalid("server said: Bearer tok-very-secret is bad")
                .with("body", serde_json::json!({"x": ["tok-very-secret"]})),
        );
        assert!(!format!("{e:?}").contains("tok-very-secret"));
    }
}
