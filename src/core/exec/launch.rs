//! How an exec's argv is launched, and how its process tree is killed where the container has no shell.
//!
//! With `/bin/sh` in the container, the workload runs under [`WRAPPER`]: it looks the program up in `PATH` the way
//! the runtime would, prints its own PID (runc made it a session and group leader) and `exec`s the program, so
//! a second exec can `kill -SIG -PGID`. Without a shell the argv goes to the engine unchanged; the only process
//! id the engine gives out is a host PID (`inspect_exec`'s `Pid`), so kills work only where that PID is visible
//! from here, i.e. when the engine runs on this host in this PID namespace and this process may signal it.

use super::super::engine::Engine;
use super::super::error::{Error, ErrorCode, Result};
use bollard::query_parameters::ContainerArchiveInfoOptions;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The shell the wrapper needs (by absolute path: the container's `PATH` may not name `/bin`).
pub const SHELL: &str = "/bin/sh";

/// The `/bin/sh -c` script around every workload in a container that has a shell. It resolves the program as
/// the runtime does (a name with a `/` as is, else the first executable regular file in `PATH`) and fails the
/// way the runtime does, before the PID line, so a missing program is one outcome with or without a shell:
/// the exec never started. Its variables are not exported (unless the caller's env has the same odd names).
pub const WRAPPER: &str = r#"case $1 in
*/*) if [ ! -e "$1" ]; then echo "exec: \"$1\": stat $1: no such file or directory" >&2; exit 127; fi
  if [ -d "$1" ] || [ ! -x "$1" ]; then echo "exec: \"$1\": permission denied" >&2; exit 126; fi ;;
*) __sbx_rest=${PATH-/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin}:; __sbx_found=
  while [ -n "$__sbx_rest" ]; do
    __sbx_dir=${__sbx_rest%%:*}; __sbx_rest=${__sbx_rest#*:}
    if [ -f "${__sbx_dir:-.}/$1" ] && [ -x "${__sbx_dir:-.}/$1" ]; then __sbx_found=1; break; fi
  done
  if [ -z "$__sbx_found" ]; then echo "exec: \"$1\": executable file not found in \$PATH" >&2; exit 127; fi ;;
esac
if [ -n "${__SBX_TTY_SIZE-}" ]; then stty $__SBX_TTY_SIZE 2>/dev/null; fi; unset __SBX_TTY_SIZE
echo $$ >&2
exec "$@""#;

/// The variable that carries a terminal size (`rows R cols C`) to [`WRAPPER`], which applies it with `stty`
/// before the program starts, and unsets it.
pub const TTY_SIZE_VAR: &str = "__SBX_TTY_SIZE";

/// How one exec runs its argv.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launch {
    /// Under [`WRAPPER`]: PID line, group kill from a second exec, `/proc` sweep for the marker.
    Shell,
    /// The argv as given (no `/bin/sh` in the container): kills from the host only, see [`host_kill`].
    Direct,
}

impl Launch {
    /// The argv the engine runs for the user's `cmd`.
    pub fn argv(self, cmd: &[String]) -> Vec<String> {
        match self {
            Launch::Direct => cmd.to_vec(),
            Launch::Shell => {
                let mut v = vec![
                    SHELL.to_string(),
                    "-c".to_string(),
                    WRAPPER.to_string(),
                    "sh".to_string(),
                ];
                v.extend(cmd.iter().cloned());
                v
            }
        }
    }
}

/// Containers whose shell was looked for, by engine socket and container id. Ids are unique, so an entry never
/// describes another container; the map is emptied when it grows past [`CACHE_MAX`] (removed containers).
type ShellCache = Mutex<HashMap<(PathBuf, String), Launch>>;
const CACHE_MAX: usize = 4096;

fn cache() -> &'static ShellCache {
    static CACHE: OnceLock<ShellCache> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// How to launch in `container`: looked up once per container (a `HEAD` of `/bin/sh` through the archive API,
/// a few ms, no exec) and cached. An answer the engine gives only with an error (a container that is gone or
/// locked) is not cached: the launch then assumes a shell and the exec reports the engine's real error.
pub async fn launch_for(
    engine: &Engine,
    container: &str,
    timeout: Option<Duration>,
    cancel: &CancellationToken,
) -> Result<Launch> {
    let key = (engine.socket().to_path_buf(), container.to_string());
    if let Some(l) = cache().lock().ok().and_then(|c| c.get(&key).copied()) {
        return Ok(l);
    }
    let found = super::super::call::bounded(
        "checking the container for /bin/sh",
        timeout,
        cancel,
        async { Ok(has_shell(engine, container).await) },
    )
    .await?;
    let Some(has) = found else {
        return Ok(Launch::Shell);
    };
    let launch = if has { Launch::Shell } else { Launch::Direct };
    if let Ok(mut c) = cache().lock() {
        if c.len() >= CACHE_MAX {
            c.clear();
        }
        c.insert(key, launch);
    }
    Ok(launch)
}

/// Drop what is known about `container` (it failed to start a process, or vanished): the next exec looks again.
pub fn forget(engine: &Engine, container: &str) {
    if let Ok(mut c) = cache().lock() {
        c.remove(&(engine.socket().to_path_buf(), container.to_string()));
    }
}

/// Go's `os.FileMode` bits, as the archive API reports them.
const GO_MODE_DIR: u32 = 1 << 31;
const GO_MODE_SYMLINK: u32 = 1 << 27;

/// Whether `/bin/sh` is an executable regular file (following up to 8 symlinks): `Some(false)` when the engine
/// says there is no such path, `None` when it gave no answer (the caller assumes a shell).
async fn has_shell(engine: &Engine, container: &str) -> Option<bool> {
    let mut path = SHELL.to_string();
    for _ in 0..8 {
        let stat = engine
            .docker()
            .get_container_archive_info(
                container,
                Some(ContainerArchiveInfoOptions { path: path.clone() }),
            )
            .await;
        match stat {
            Ok(st) if st.file_mode & GO_MODE_SYMLINK != 0 && !st.link_target.is_empty() => {
                path = if st.link_target.starts_with('/') {
                    st.link_target
                } else {
                    let dir = path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                    format!("{dir}/{}", st.link_target)
                };
            }
            Ok(st) => return Some(st.file_mode & GO_MODE_DIR == 0 && st.file_mode & 0o111 != 0),
            // A HEAD answer has no body, so a missing path and a missing container look alike: a container
            // that is gone fails the exec's create with its own error, and `forget` drops this entry then.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => return Some(false),
            Err(_) => return None,
        }
    }
    None
}

/// `TERM`, `9`… (as [`super::validate_signal`] returns them) → the signal number. Linux only: the numbers are
/// this host's, which are the container's only on Linux.
#[cfg(target_os = "linux")]
pub fn signal_number(sig: &str) -> Option<i32> {
    if let Ok(n) = sig.parse::<i32>() {
        return Some(n);
    }
    Some(match sig {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "ILL" => libc::SIGILL,
        "TRAP" => libc::SIGTRAP,
        "ABRT" => libc::SIGABRT,
        "BUS" => libc::SIGBUS,
        "FPE" => libc::SIGFPE,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "SEGV" => libc::SIGSEGV,
        "USR2" => libc::SIGUSR2,
        "PIPE" => libc::SIGPIPE,
        "ALRM" => libc::SIGALRM,
        "TERM" => libc::SIGTERM,
        #[cfg(target_os = "linux")]
        "STKFLT" => libc::SIGSTKFLT,
        "CHLD" => libc::SIGCHLD,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "TSTP" => libc::SIGTSTP,
        "TTIN" => libc::SIGTTIN,
        "TTOU" => libc::SIGTTOU,
        "URG" => libc::SIGURG,
        "XCPU" => libc::SIGXCPU,
        "XFSZ" => libc::SIGXFSZ,
        "VTALRM" => libc::SIGVTALRM,
        "PROF" => libc::SIGPROF,
        "WINCH" => libc::SIGWINCH,
        "IO" => libc::SIGIO,
        #[cfg(target_os = "linux")]
        "PWR" => libc::SIGPWR,
        "SYS" => libc::SIGSYS,
        _ => return None,
    })
}

/// The error of a kill that cannot be done: the container has no shell to run `kill` in and the process is not
/// visible from this host.
pub fn cannot_kill(container: &str, why: &str) -> Error {
    Error::new(
        ErrorCode::ExecFailed,
        format!(
            "cannot signal the process: the container has no {SHELL} to run the kill in, and {why}; the process \
             keeps running until it exits or the container stops"
        ),
    )
    .with("container", container.to_string())
}

/// Kill a shell-less exec's tree from the host: the engine's `Pid` for the exec is a host PID and, since runc
/// `setsid`s each exec, its group id. It is used only after `/proc/PID/environ` shows the exec's marker, which
/// proves the PID names that very process here (a remote engine's PIDs name other processes, or none). Then the
/// group is signalled and every process in the same PID namespace carrying the marker (a `setsid` escapee); with
/// `escalate`, TERM → up to 2 s → KILL. Linux only (it reads `/proc`); elsewhere the stand-in below refuses.
#[cfg(target_os = "linux")]
pub async fn host_kill(
    engine: &Engine,
    container: &str,
    exec_id: &str,
    marker: &str,
    sig: &str,
    escalate: bool,
) -> Result<()> {
    let Some(signo) = signal_number(sig) else {
        return Err(Error::invalid(format!("unknown signal {sig}")).with("argument", "signal"));
    };
    // The start request returns once attached, before the runtime has started the process (the engine
    // reports Pid 0 until then): wait for the PID as the shell path waits for its PID line.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    let pid = loop {
        let r = engine
            .docker()
            .inspect_exec(exec_id)
            .await
            .map_err(|e| engine.err(e, super::super::engine::Subject::Container(container)))?;
        let pid = r.pid.unwrap_or(0);
        if pid > 0 || tokio::time::Instant::now() >= deadline {
            break pid;
        }
        if r.running != Some(true) && r.exit_code.is_some() {
            return Ok(()); // it ended (or never started): nothing left to signal
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    if pid <= 0 {
        return Err(cannot_kill(container, "the engine reported no process id"));
    }
    let pid = pid as i32;
    let marker = marker.to_string();
    // The PID is reported from when the runtime forks, before it `execve`s the program: until then its environ
    // is the runtime's and holds no marker. Look again for a moment before deciding the PID is not this host's.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    let visible = loop {
        let m = marker.clone();
        let seen = tokio::task::spawn_blocking(move || proc_has_marker(pid, &m))
            .await
            .unwrap_or(false);
        if seen || tokio::time::Instant::now() >= deadline {
            break seen;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    if !visible {
        return Err(cannot_kill(
            container,
            "its engine's process ids are not visible from this host (a remote or virtualised engine, or \
             another PID namespace)",
        ));
    }
    let signal_all = move |signo: i32| {
        let marker = marker.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                // SAFETY: kill(2) has no memory effects; a negative pid names the process group.
                unsafe { libc::kill(-pid, signo) };
                let marked = marked_processes(pid, &marker);
                for p in &marked {
                    // SAFETY: as above, one process.
                    unsafe { libc::kill(*p, signo) };
                }
                marked
            })
            .await
            .unwrap_or_default()
        }
    };
    let marked = signal_all(signo).await;
    if escalate {
        let alive = || {
            // SAFETY: signal 0 only checks existence and permission.
            (unsafe { libc::kill(-pid, 0) } == 0) || marked.iter().any(|p| proc_alive(*p))
        };
        for _ in 0..40 {
            if !alive() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        signal_all(libc::SIGKILL).await;
    }
    Ok(())
}

/// Off Linux the engine's processes are never this host's (Docker Desktop and colima run the engine in a Linux
/// VM) and there is no `/proc` to prove a PID: a shell-less exec cannot be killed from here.
#[cfg(not(target_os = "linux"))]
pub async fn host_kill(
    _engine: &Engine,
    container: &str,
    _exec_id: &str,
    _marker: &str,
    _sig: &str,
    _escalate: bool,
) -> Result<()> {
    Err(cannot_kill(
        container,
        "its engine's process ids are not visible from this host (killing from the host needs Linux)",
    ))
}

/// Whether `/proc/PID/environ` holds `marker` as one whole entry.
#[cfg(target_os = "linux")]
fn proc_has_marker(pid: i32, marker: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|env| env.split(|b| *b == 0).any(|e| e == marker.as_bytes()))
        .unwrap_or(false)
}

/// A process that exists and is not a zombie.
#[cfg(target_os = "linux")]
fn proc_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, r)| !r.starts_with('Z')))
        .unwrap_or(false)
}

/// Processes in `pid`'s PID namespace whose environment holds `marker` (only those namespaces' processes are
/// read, so a busy host costs a `readlink` per process).
#[cfg(target_os = "linux")]
fn marked_processes(pid: i32, marker: &str) -> Vec<i32> {
    let ns = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/pid")).ok();
    let Some(want) = ns(&pid.to_string()) else {
        return Vec::new();
    };
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| ns(&p.to_string()).as_ref() == Some(&want) && proc_has_marker(*p, marker))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_per_launch() {
        let cmd = vec!["ls".to_string(), "-l".to_string()];
        assert_eq!(Launch::Direct.argv(&cmd), cmd);
        let sh = Launch::Shell.argv(&cmd);
        assert_eq!(&sh[..2], &["/bin/sh".to_string(), "-c".to_string()]);
        assert_eq!(&sh[3..], &["sh".to_string(), "ls".into(), "-l".into()]);
    }

    /// The wrapper under this host's `/bin/sh` (dash or busybox): the PID line only for a program it found.
    fn wrapper(cmd: &[&str], path: &str) -> (Option<i32>, String, String) {
        let out = std::process::Command::new(SHELL)
            .args(["-c", WRAPPER, "sh"])
            .args(cmd)
            .env("PATH", path)
            .output()
            .expect("/bin/sh");
        let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.code(), s(&out.stdout), s(&out.stderr))
    }

    #[test]
    fn wrapper_finds_programs_as_the_runtime_does() {
        let (code, out, err) = wrapper(&["echo", "a b"], "/nowhere:/usr/bin:/bin");
        assert_eq!((code, out.as_str()), (Some(0), "a b\n"));
        assert!(err.trim().parse::<u32>().is_ok(), "{err:?}");
        let (code, out, err) = wrapper(&["definitely-not-here"], "/usr/bin:/bin");
        assert_eq!((code, out.as_str()), (Some(127), ""));
        assert_eq!(
            err,
            "exec: \"definitely-not-here\": executable file not found in $PATH\n"
        );
        let (code, _, err) = wrapper(&["/no/such/prog"], "/bin");
        assert_eq!(code, Some(127));
        assert!(err.starts_with("exec: \"/no/such/prog\": stat"), "{err:?}");
        let (code, _, err) = wrapper(&["/etc/passwd"], "/bin");
        assert_eq!(code, Some(126));
        assert!(err.contains("permission denied"), "{err:?}");
        let (code, _, _) = wrapper(&["/"], "/bin");
        assert_eq!(code, Some(126));
    }

    #[test]
    fn signal_numbers() {
        assert_eq!(signal_number("TERM"), Some(libc::SIGTERM));
        assert_eq!(signal_number("KILL"), Some(9));
        assert_eq!(signal_number("9"), Some(9));
        assert_eq!(signal_number("NOPE"), None);
        for name in ["HUP", "INT", "USR1", "WINCH", "SYS"] {
            assert!(signal_number(name).is_some(), "{name}");
        }
    }

    #[test]
    fn marked_processes_are_found_and_killed_from_the_host() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .env("SBX_LAUNCH_TEST", "tok-1")
            .spawn()
            .expect("sleep");
        let pid = child.id() as i32;
        // The environ is readable once the child has exec'd; a prefix of an entry is no match.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !proc_has_marker(pid, "SBX_LAUNCH_TEST=tok-1") && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(proc_has_marker(pid, "SBX_LAUNCH_TEST=tok-1"));
        assert!(!proc_has_marker(pid, "SBX_LAUNCH_TEST=tok"));
        assert_eq!(marked_processes(pid, "SBX_LAUNCH_TEST=tok-1"), vec![pid]);
        assert!(proc_alive(pid));
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let _ = child.wait();
        assert!(!proc_alive(pid));
    }
}
