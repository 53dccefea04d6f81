//! Default LocalSandboxd roots (`/tmp/sandboxd-xxxxxxxx`) left behind by processes that died without cleaning
//! up. An engine's watchdog stops its dockerd and removes the engine's data whatever way the process died, but a
//! process killed by a signal it does not handle (SIGKILL, or SIGTERM/SIGINT in plain Node) runs no exit hook,
//! so the root's own small files stay: the socket file, `owner`, the VM and engine directories with their logs
//! and configs (~40 KiB). The next LocalSandboxd started with a default root removes such roots.
//!
//! A root is removed only when every check says it is dead: it carries an `owner` file (written once the
//! socket is bound) naming a process that is gone (pid and start time), nothing accepts connections on its
//! socket (a live server in another PID namespace sharing /tmp would), nothing is mounted under it, and no
//! process's command line mentions it (an engine or watchdog still shutting down). Only directories owned by
//! this user with exactly the default name are looked at; symlinks are not followed.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The name of a default root under /tmp: this prefix and 8 hex digits.
pub const ROOT_PREFIX: &str = "sandboxd-";
/// The file in a default root naming the process that serves it: `<pid> <start time>`.
pub const OWNER_FILE: &str = "owner";

/// A process's start time (clock ticks since boot, `/proc/<pid>/stat` field 22); `None` if it is gone.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces and parentheses) start at field 3.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(22 - 3)?
        .parse()
        .ok()
}

/// What [`OWNER_FILE`] holds for this process.
pub fn owner_line() -> String {
    let pid = std::process::id();
    format!("{pid} {}\n", start_time(pid).unwrap_or(0))
}

/// Whether the process an owner line names still runs (a start time of 0 means "unknown": pid only).
fn owner_alive(owner: &str) -> Option<bool> {
    let mut f = owner.split_whitespace();
    let pid: u32 = f.next()?.parse().ok()?;
    let start: u64 = f.next()?.parse().ok()?;
    Some(match start_time(pid) {
        Some(t) => start == 0 || t == start,
        None => false,
    })
}

/// Whether the root at `root` was left by a dead LocalSandboxd and nothing uses it any more.
fn is_stale(root: &Path) -> bool {
    let Ok(owner) = std::fs::read_to_string(root.join(OWNER_FILE)) else {
        return false;
    };
    if owner_alive(&owner) != Some(false) {
        return false;
    }
    if std::os::unix::net::UnixStream::connect(root.join("sandboxd.sock")).is_ok() {
        return false;
    }
    super::dockerd::mounts_under(root).is_empty() && !super::dockerd::any_process_mentions(root)
}

/// Remove the stale default roots directly under `base` (see the module docs); returns how many went.
pub fn sweep(base: &Path) -> usize {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    let Ok(dir) = std::fs::read_dir(base) else {
        return 0;
    };
    let mut removed = 0;
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(id) = name.to_str().and_then(|n| n.strip_prefix(ROOT_PREFIX)) else {
            continue;
        };
        if id.len() != 8 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            continue;
        }
        let path = entry.path();
        let ours = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir() && m.uid() == uid);
        if ours && is_stale(&path) && std::fs::remove_dir_all(&path).is_ok() {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn root(base: &Path, id: &str, owner: Option<&str>) -> PathBuf {
        let p = base.join(format!("{ROOT_PREFIX}{id}"));
        std::fs::create_dir_all(p.join("vm/a")).unwrap();
        std::fs::write(p.join("vm/a/dockerd.log"), "log").unwrap();
        if let Some(o) = owner {
            std::fs::write(p.join(OWNER_FILE), o).unwrap();
        }
        p
    }

    /// A pid that is not running: a child that has exited and been reaped.
    fn dead_pid() -> u32 {
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let pid = c.id();
        c.wait().unwrap();
        pid
    }

    #[test]
    fn only_roots_of_dead_owners_that_nothing_uses_are_removed() {
        let base = std::env::temp_dir().join(format!("sbx-stale-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        let dead = dead_pid();
        let me = std::process::id();
        let my_start = start_time(me).unwrap();

        let gone = root(&base, "0000000a", Some(&format!("{dead} 12345\n")));
        // this process, but a different start time: the pid was reused, the owner is gone
        let reused = root(&base, "0000000b", Some(&format!("{me} {}\n", my_start + 1)));
        let alive = root(&base, "0000000c", Some(&owner_line()));
        let unknown_start = root(&base, "0000000d", Some(&format!("{me} 0\n")));
        let no_owner = root(&base, "0000000e", None);
        let garbled = root(&base, "0000000f", Some("not a pid"));
        let other_name = base.join("sandboxd-xyz");
        std::fs::create_dir_all(&other_name).unwrap();
        std::fs::write(other_name.join(OWNER_FILE), format!("{dead} 1\n")).unwrap();
        // a dead owner, but something still answers on its socket
        let served = root(&base, "00000010", Some(&format!("{dead} 1\n")));
        let _listener =
            std::os::unix::net::UnixListener::bind(served.join("sandboxd.sock")).unwrap();
        // a dead owner, but a process still mentions the root (an engine's watchdog shutting down)
        let busy = root(&base, "00000011", Some(&format!("{dead} 1\n")));
        let mut watcher = std::process::Command::new("sh")
            .args(["-c", "sleep 30", busy.join("engines").to_str().unwrap()])
            .spawn()
            .unwrap();
        // a symlink with the right name pointing at a dead root elsewhere: not followed
        let target = root(
            &base.join("elsewhere"),
            "00000012",
            Some(&format!("{dead} 1\n")),
        );
        std::os::unix::fs::symlink(&target, base.join("sandboxd-00000013")).unwrap();

        assert_eq!(sweep(&base), 2);
        let _ = watcher.kill();
        let _ = watcher.wait();
        assert!(!gone.exists() && !reused.exists());
        for kept in [
            &alive,
            &unknown_start,
            &no_owner,
            &garbled,
            &other_name,
            &served,
            &busy,
            &target,
        ] {
            assert!(kept.exists(), "{} was removed", kept.display());
        }
        // once the watcher is gone, the busy root goes too
        assert_eq!(sweep(&base), 1);
        assert!(!busy.exists());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
