//! Input checks done before anything reaches a URL, a command line or the daemon.

use super::error::{Error, Result};
use std::path::Path;

/// Longest VM or agent name accepted. Names end up in socket paths, which the kernel limits to 108 bytes.
pub const MAX_NAME_LEN: usize = 63;

/// A name that goes into a URL path segment and a directory name: `[A-Za-z0-9][A-Za-z0-9_.-]*`, no `..`.
///
/// Names are still percent-encoded on the wire; this check is what makes them safe as file names too.
pub fn name(kind: &str, value: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(
            Error::invalid(format!("invalid {kind} {}: {why}", shown(value)))
                .with("argument", kind)
                .with("value", shown(value)),
        )
    };
    if value.is_empty() {
        return bad("must not be empty");
    }
    if value.len() > MAX_NAME_LEN {
        return bad(&format!("longer than {MAX_NAME_LEN} bytes"));
    }
    if value.chars().any(|c| c.is_control()) {
        return bad("contains a control character");
    }
    if value.contains('/') || value.contains('\\') {
        return bad("contains a path separator");
    }
    if value.contains("..") {
        return bad("contains '..'");
    }
    let mut chars = value.chars();
    let first = chars.next().unwrap_or(' ');
    if !first.is_ascii_alphanumeric() {
        return bad("must start with a letter or digit");
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return bad(&format!(
            "character {c:?} is not allowed (use letters, digits, '_', '.', '-')"
        ));
    }
    Ok(())
}

/// A workspace directory: absolute, no NUL, and an existing directory on this host.
pub fn workspace_dir(value: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(
            Error::invalid(format!("invalid workspaceDir {}: {why}", shown(value)))
                .with("argument", "workspaceDir")
                .with("value", shown(value)),
        )
    };
    if value.is_empty() {
        return bad("must not be empty");
    }
    if value.contains('\0') {
        return bad("contains a NUL byte");
    }
    let p = Path::new(value);
    if !p.is_absolute() {
        return bad("must be an absolute path");
    }
    match std::fs::metadata(p) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => bad("is not a directory"),
        Err(_) => bad("does not exist"),
    }
}

/// A user-supplied value shortened and escaped for an error message (never a secret: callers pass names only).
pub fn shown(value: &str) -> String {
    let mut s: String = value.chars().take(64).collect::<String>();
    if value.chars().count() > 64 {
        s.push('…');
    }
    format!("{s:?}")
}

/// A timeout given from JS in milliseconds: finite, positive, at most ~24 days (what timers can hold).
pub fn timeout_ms(kind: &str, value: f64) -> Result<std::time::Duration> {
    const MAX: f64 = 2_147_483_647.0;
    if !value.is_finite() || value <= 0.0 || value > MAX {
        return Err(Error::invalid(format!(
            "{kind} must be a number of milliseconds between 1 and {MAX}, got {value}"
        ))
        .with("argument", kind));
    }
    Ok(std::time::Duration::from_millis(value.ceil() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "claude-vm", "sandbox-agent", "x.y_z-1", "A9"] {
            assert!(name("VM name", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "a/b",
            "..",
            "a..b",
            "%2e%2e",
            "a\0b",
            "a\nb",
            "-x",
            ".hidden",
            "a b",
            "ü",
            "a?b",
            "a#b",
            &"x".repeat(10_000),
        ] {
            let e = name("VM name", bad).unwrap_err();
            assert_eq!(e.code.as_str(), "ERR_INVALID_ARGUMENT", "{bad:?}");
        }
    }

    #[test]
    fn workspaces() {
        assert!(workspace_dir("/tmp").is_ok());
        assert!(workspace_dir("tmp").is_err());
        assert!(workspace_dir("").is_err());
        assert!(workspace_dir("/definitely/not/here").is_err());
        assert!(workspace_dir("/etc/hostname").is_err());
    }

    #[test]
    fn timeouts() {
        assert!(timeout_ms("timeoutMs", 1.0).is_ok());
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e12] {
            assert!(timeout_ms("timeoutMs", bad).is_err());
        }
    }

    #[test]
    fn shown_is_short() {
        assert!(shown(&"y".repeat(10_000)).len() < 80);
    }
}
