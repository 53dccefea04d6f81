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

/// Longest argv or environment string the kernel accepts, counting its terminating NUL (`MAX_ARG_STRLEN`, 32
/// pages): `execve` fails with `E2BIG` beyond it. 128 KiB is the value for 4 KiB pages (x86-64, and arm64 as Linux
/// distributions build it); a remote engine's kernel is unknown, so the smallest real value is the one enforced.
pub const MAX_ARG_STRLEN: usize = 128 * 1024;

/// Bound on one exec's argv and environment together, in the bytes `execve` counts: every string with its NUL
/// plus an 8-byte pointer per string. The kernel allows a quarter of the stack limit (`RLIMIT_STACK`), which is
/// 8 MiB unless the container sets another `ulimit`, so 2 MiB; 64 KiB of that is left to what the engine and
/// the SDK add (the image's `ENV`, the `/bin/sh` wrapper and its marker variable).
pub const MAX_ARGS_TOTAL: usize = 2 * 1024 * 1024 - 64 * 1024;

/// The bytes a string costs in `execve`'s total: itself, its NUL and its pointer.
fn exec_cost(len: usize) -> usize {
    len + 1 + std::mem::size_of::<u64>()
}

/// Env keys: non-empty, no `=`, no NUL; values: no NUL; each `KEY=value` within [`MAX_ARG_STRLEN`]. Messages
/// name the key, never the value.
pub fn env(env: &[(String, String)]) -> Result<()> {
    for (k, v) in env {
        let key = shown(k);
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            return Err(Error::invalid(format!(
                "invalid env key {key}: keys must be non-empty and contain no '=' or NUL"
            ))
            .with("argument", "env")
            .with("key", key));
        }
        if v.contains('\0') {
            return Err(Error::invalid(format!(
                "the value of env {key} contains a NUL byte, which no process environment can hold"
            ))
            .with("argument", "env")
            .with("key", key));
        }
        let size = k.len() + 1 + v.len();
        if size >= MAX_ARG_STRLEN {
            return Err(Error::invalid(format!(
                "env {key} is {size} bytes as KEY=value; Linux takes at most {} bytes per environment \
                 string (MAX_ARG_STRLEN): pass large data on stdin or in a file",
                MAX_ARG_STRLEN - 1
            ))
            .with("argument", "env")
            .with("key", key)
            .with("size", size)
            .with("limit", MAX_ARG_STRLEN - 1));
        }
    }
    Ok(())
}

/// An exec's argv: non-empty, a non-empty program, no NUL, each string within [`MAX_ARG_STRLEN`]. Messages
/// name the index, never the value.
pub fn argv(cmd: &[String]) -> Result<()> {
    if cmd.is_empty() || cmd[0].is_empty() {
        return Err(
            Error::invalid("cmd must be a non-empty array of strings").with("argument", "cmd")
        );
    }
    if cmd.iter().any(|a| a.contains('\0')) {
        return Err(
            Error::invalid("cmd arguments must not contain NUL bytes").with("argument", "cmd")
        );
    }
    if let Some((i, a)) = cmd
        .iter()
        .enumerate()
        .find(|(_, a)| a.len() >= MAX_ARG_STRLEN)
    {
        return Err(Error::invalid(format!(
            "cmd[{i}] is {} bytes; Linux takes at most {} bytes per argument (MAX_ARG_STRLEN): pass large \
             data on stdin or in a file",
            a.len(),
            MAX_ARG_STRLEN - 1
        ))
        .with("argument", "cmd")
        .with("index", i)
        .with("size", a.len())
        .with("limit", MAX_ARG_STRLEN - 1));
    }
    Ok(())
}

/// The size `execve` counts for `cmd` and `env` together (strings, NULs, pointers), checked against
/// [`MAX_ARGS_TOTAL`]. The error names the largest env key (or `cmd`), never a value.
pub fn args_total(cmd: &[String], env: &[(String, String)]) -> Result<()> {
    let cmd_size: usize = cmd.iter().map(|a| exec_cost(a.len())).sum();
    let env_size: usize = env
        .iter()
        .map(|(k, v)| exec_cost(k.len() + 1 + v.len()))
        .sum();
    let size = cmd_size + env_size;
    if size <= MAX_ARGS_TOTAL {
        return Ok(());
    }
    let largest = env.iter().max_by_key(|(k, v)| k.len() + v.len());
    let (argument, detail) = match largest {
        Some((k, _)) if env_size >= cmd_size => {
            ("env", format!("; the largest env entry is {}", shown(k)))
        }
        _ => ("cmd", String::new()),
    };
    let mut e = Error::invalid(format!(
        "cmd and env come to {size} bytes as execve counts them (each string, its NUL and an 8-byte pointer); \
         at most {MAX_ARGS_TOTAL} are accepted (a quarter of the default 8 MiB stack limit, less 64 KiB for the \
         image's env){detail}: pass large data on stdin or in a file"
    ))
    .with("argument", argument)
    .with("size", size)
    .with("limit", MAX_ARGS_TOTAL);
    if let (Some((k, _)), "env") = (largest, argument) {
        e = e.with("key", shown(k));
    }
    Err(e)
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
    fn env_strings_at_under_and_over_the_kernel_limit() {
        let at = "x".repeat(MAX_ARG_STRLEN - 1 - "BIG=".len());
        assert!(env(&[("BIG".into(), at.clone())]).is_ok());
        assert!(env(&[("BIG".into(), at[1..].to_string())]).is_ok());
        let over = format!("{at}x");
        let e = env(&[("BIG".into(), over)]).unwrap_err();
        assert_eq!(e.code.as_str(), "ERR_INVALID_ARGUMENT");
        assert!(e.message.contains("\"BIG\"") && e.message.contains("131071"));
        assert!(e.message.contains("stdin"));
        assert!(!e.message.contains("xxxx"));
        assert_eq!(e.props.get("limit"), Some(&serde_json::json!(131071)));
        assert_eq!(e.props.get("size"), Some(&serde_json::json!(131072)));
        // a long key counts as well
        let key = "K".repeat(MAX_ARG_STRLEN);
        assert!(env(&[(key, String::new())]).is_err());
    }

    #[test]
    fn argv_strings_at_under_and_over_the_kernel_limit() {
        let at = "y".repeat(MAX_ARG_STRLEN - 1);
        assert!(argv(&["echo".into(), at.clone()]).is_ok());
        assert!(argv(&["echo".into(), at[1..].to_string()]).is_ok());
        let e = argv(&["echo".into(), "a".into(), format!("{at}y")]).unwrap_err();
        assert_eq!(e.props.get("index"), Some(&serde_json::json!(2)));
        assert_eq!(e.props.get("argument"), Some(&serde_json::json!("cmd")));
        assert!(!e.message.contains("yyyy"));
        assert!(argv(&[]).is_err());
        assert!(argv(&["".into()]).is_err());
        assert!(argv(&["a\0b".into()]).is_err());
    }

    #[test]
    fn total_at_under_and_over_the_limit() {
        let cmd = vec!["sh".to_string(), "-c".to_string(), "true".to_string()];
        let cmd_cost: usize = cmd.iter().map(|a| exec_cost(a.len())).sum();
        // Fill with entries of the largest allowed size, then one that lands on the limit exactly.
        let fill = |total: usize| {
            let mut left = total - cmd_cost;
            let mut env = Vec::new();
            let mut i = 0;
            while left > 0 {
                let key = format!("B{i}");
                let fixed = exec_cost(key.len() + 1);
                let len = (MAX_ARG_STRLEN - 2 - key.len()).min(left - fixed);
                left -= fixed + len;
                env.push((key, "z".repeat(len)));
                i += 1;
            }
            env
        };
        assert!(args_total(&cmd, &fill(MAX_ARGS_TOTAL)).is_ok());
        assert!(args_total(&cmd, &fill(MAX_ARGS_TOTAL - 1)).is_ok());
        let over = fill(MAX_ARGS_TOTAL + 1);
        assert!(over.iter().all(|e| env(std::slice::from_ref(e)).is_ok()));
        let e = args_total(&cmd, &over).unwrap_err();
        assert_eq!(e.props.get("argument"), Some(&serde_json::json!("env")));
        assert_eq!(
            e.props.get("size"),
            Some(&serde_json::json!(MAX_ARGS_TOTAL + 1))
        );
        assert!(e.props.contains_key("key"));
        assert!(!e.message.contains("zzzz"));
        // argv alone can exceed it too
        let long: Vec<String> = (0..20).map(|_| "a".repeat(120_000)).collect();
        let e = args_total(&long, &[]).unwrap_err();
        assert_eq!(e.props.get("argument"), Some(&serde_json::json!("cmd")));
    }

    #[test]
    fn shown_is_short() {
        assert!(shown(&"y".repeat(10_000)).len() < 80);
    }
}
