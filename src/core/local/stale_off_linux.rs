//! Default LocalSandboxd roots off Linux. Telling a dead owner from a live one needs a process's start time,
//! read from `/proc` on Linux (see `stale.rs`); without it a root cannot be proven dead, so none is removed:
//! roots left by processes killed before they could clean up (a few small files each) stay until the system
//! clears `/tmp`.

/// The name of a default root under /tmp: this prefix and 8 hex digits.
pub const ROOT_PREFIX: &str = "sandboxd-";
/// The file in a default root naming the process that serves it: `<pid> 0` (start time unknown here).
pub const OWNER_FILE: &str = "owner";

/// What [`OWNER_FILE`] holds for this process.
pub fn owner_line() -> String {
    format!("{} 0\n", std::process::id())
}

/// Removes nothing (see the module docs); returns 0.
pub fn sweep(_base: &std::path::Path) -> usize {
    0
}
