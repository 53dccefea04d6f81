//! LocalSandboxd's `dockerd` backend: one private dockerd per VM, under a watchdog that cleans up whatever way
//! this process ends. Linux only: it relies on Linux mounts (`umount2`, `/proc/self/mountinfo`), `/proc` to
//! find the processes an engine leaves behind, and cgroups to tell container processes apart. Other platforms
//! compile `dockerd_off_linux.rs` in its place.

use super::engine::emulator_error;
use crate::core::error::Result;
use crate::core::http::UnixHttp;
use hyper::Method;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a private dockerd gets to answer `/_ping` after it is started.
const DOCKERD_START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a private dockerd gets to shut down (it stops its containers first) before it is killed.
const DOCKERD_STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// The dockerd watchdog (argv: dockerd, exec root, data root, dockerd's arguments…). Constant text: no input
/// is interpolated into it.
const WATCHDOG: &str = r#"dockerd=$1; xr=$2; dr=$3; shift 3
exec 3<&0
"$dockerd" "$@" </dev/null &
# (a background job's stdin is /dev/null in sh, so the watcher reads the pipe as fd 3)
d=$!
( while read -r _ <&3; do :; done; kill -TERM "$d" 2>/dev/null; sleep 15; kill -KILL "$d" 2>/dev/null ) &
w=$!
wait "$d"
st=$?
kill "$w" 2>/dev/null
# container processes: when dockerd was killed they outlive their shims (reparented to init); their cgroup
# names the container id, and the ids are the data root's containers/ entries
ids=$(ls "$dr/containers" 2>/dev/null)
for p in /proc/[0-9]*; do
  [ "${p#/proc/}" = "$$" ] && continue
  if [ -n "$ids" ]; then
    cg=$(cat "$p/cgroup" 2>/dev/null)
    for id in $ids; do
      case "$cg" in *"$id"*) kill -KILL "${p#/proc/}" 2>/dev/null; continue 2 ;; esac
    done
  fi
  case "$( { tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null)" in
    sandboxd-engine-watchdog*) ;;
    *"$xr"*|*"$dr"*) kill -KILL "${p#/proc/}" 2>/dev/null ;;
  esac
done
if command -v umount >/dev/null 2>&1; then
  awk -v a="$xr" -v b="$dr" '$5 == a || index($5, a "/") == 1 || $5 == b || index($5, b "/") == 1 { print $5 }' \
    /proc/self/mountinfo 2>/dev/null | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
fi
rm -rf "$xr" "$dr"
exit $st
"#;

/// A private dockerd in its own process group.
pub struct DockerdEngine {
    /// The watchdog's pid (= the process group).
    pid: u32,
    child: tokio::sync::Mutex<Option<tokio::process::Child>>,
    socket: PathBuf,
    data_root: PathBuf,
    exec_root: PathBuf,
    engine_dir: PathBuf,
}

/// A short private directory under /tmp: containerd's sockets live in the exec root and the kernel limits
/// socket paths to 108 bytes.
fn short_exec_root() -> Result<PathBuf> {
    for _ in 0..16 {
        let p = PathBuf::from(format!(
            "/tmp/sbxd-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..10]
        ));
        match std::fs::create_dir(&p) {
            Ok(()) => {
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700))
                    .map_err(|e| emulator_error(format!("chmod {}: {e}", p.display())))?;
                return Ok(p);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(emulator_error(format!(
                    "creating an exec root in /tmp: {e}"
                )))
            }
        }
    }
    Err(emulator_error("could not create an exec root in /tmp"))
}

fn log_tail(path: &Path) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

impl DockerdEngine {
    /// The watchdog's pid, which leads the engine's process group.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub(super) async fn start(
        dockerd: &Path,
        name: &str,
        socket: &Path,
        engine_dir: &Path,
    ) -> Result<Self> {
        let data_root = engine_dir.join("data");
        std::fs::create_dir_all(&data_root)
            .map_err(|e| emulator_error(format!("creating {}: {e}", data_root.display())))?;
        let exec_root = short_exec_root()?;
        let config = engine_dir.join("daemon.json");
        let log_path = engine_dir.join("dockerd.log");
        let pidfile = engine_dir.join("dockerd.pid");
        let io = |e: std::io::Error| emulator_error(format!("preparing dockerd for {name}: {e}"));
        std::fs::write(&config, b"{}\n").map_err(io)?;
        let log = std::fs::File::create(&log_path).map_err(io)?;
        let log2 = log.try_clone().map_err(io)?;
        // dockerd runs under a small sh watchdog that holds a pipe from this process on its stdin: when the
        // pipe closes — stop(), or this process dying in any way (an uncaught exception, SIGKILL) — it stops
        // dockerd and removes what it left. The watchdog leads the process group, so signals reach both.
        let mut cmd = tokio::process::Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(WATCHDOG)
            .arg("sandboxd-engine-watchdog")
            .arg(dockerd)
            .arg(&exec_root)
            .arg(&data_root)
            .arg("--host")
            .arg(format!("unix://{}", socket.display()))
            .arg("--data-root")
            .arg(&data_root)
            .arg("--exec-root")
            .arg(&exec_root)
            .arg("--pidfile")
            .arg(&pidfile)
            .arg("--config-file")
            .arg(&config)
            .args([
                "--iptables=false",
                "--ip6tables=false",
                "--bridge=none",
                "--storage-driver=vfs",
                "--shutdown-timeout=3",
                "--log-level=warn",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(log)
            .stderr(log2)
            .process_group(0)
            .kill_on_drop(false);
        let child = cmd.spawn().map_err(|e| {
            let _ = std::fs::remove_dir_all(&exec_root);
            emulator_error(format!("starting {}: {e}", dockerd.display()))
        })?;
        let pid = child.id().unwrap_or(0);
        let engine = DockerdEngine {
            pid,
            child: tokio::sync::Mutex::new(Some(child)),
            socket: socket.to_path_buf(),
            data_root,
            exec_root,
            engine_dir: engine_dir.to_path_buf(),
        };
        if let Err(e) = engine.wait_ready(&log_path).await {
            engine.stop().await;
            return Err(e);
        }
        // Owner-only socket; the VM state dir is 0700 as well.
        let _ = std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600));
        Ok(engine)
    }

    async fn wait_ready(&self, log_path: &Path) -> Result<()> {
        let http = UnixHttp::new(&self.socket);
        let started = Instant::now();
        loop {
            if let Some(child) = self.child.lock().await.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(emulator_error(format!(
                        "dockerd exited during start-up ({status}); last log lines:\n{}",
                        log_tail(log_path)
                    )));
                }
            }
            if self.socket.exists() {
                if let Ok(r) = http.request(Method::GET, "/_ping", None, 4096).await {
                    if r.status == 200 {
                        return Ok(());
                    }
                }
            }
            if started.elapsed() > DOCKERD_START_TIMEOUT {
                return Err(emulator_error(format!(
                    "dockerd did not answer /_ping within {} s; last log lines:\n{}",
                    DOCKERD_START_TIMEOUT.as_secs(),
                    log_tail(log_path)
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(super) async fn stop(&self) {
        let child = self.child.lock().await.take();
        if let Some(mut child) = child {
            // Closing the watchdog's stdin makes it stop dockerd (TERM, KILL after 15 s) and clean up.
            drop(child.stdin.take());
            let exited =
                tokio::time::timeout(DOCKERD_STOP_TIMEOUT + Duration::from_secs(5), child.wait())
                    .await;
            if exited.is_err() {
                signal_group(self.pid, libc::SIGKILL);
                let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
            }
        }
        let this = self.paths();
        let _ = tokio::task::spawn_blocking(move || this.sweep()).await;
    }

    pub(super) fn kill_now(&self) {
        if let Ok(mut guard) = self.child.try_lock() {
            if let Some(mut child) = guard.take() {
                signal_group(self.pid, libc::SIGKILL);
                let _ = child.start_kill();
                // Reap synchronously so no zombie is left; SIGKILL makes this quick.
                let mut status = 0;
                unsafe { libc::waitpid(self.pid as i32, &mut status, 0) };
            }
        }
        self.paths().sweep();
    }

    fn paths(&self) -> EnginePaths {
        EnginePaths {
            socket: self.socket.clone(),
            roots: vec![self.data_root.clone(), self.exec_root.clone()],
            engine_dir: self.engine_dir.clone(),
        }
    }
}

/// What a stopped dockerd may leave behind.
struct EnginePaths {
    socket: PathBuf,
    roots: Vec<PathBuf>,
    engine_dir: PathBuf,
}

impl EnginePaths {
    /// Kill stray processes that still reference our roots (containerd shims), unmount, delete.
    fn sweep(&self) {
        kill_processes_referencing(&self.roots);
        for r in &self.roots {
            unmount_under(r);
        }
        for r in &self.roots {
            let _ = std::fs::remove_dir_all(r);
        }
        let _ = std::fs::remove_dir_all(&self.engine_dir);
        let _ = std::fs::remove_file(&self.socket);
    }
}

fn signal_group(pgid: u32, sig: i32) {
    if pgid > 1 {
        unsafe {
            libc::kill(-(pgid as i32), sig);
        }
    }
}

/// SIGKILL every process whose command line mentions one of `roots` (containerd and its shims), or whose cgroup
/// names a container of this engine (`containers/<id>` under a root): when dockerd was killed, the containers'
/// own processes outlive their shims, reparented to init.
fn kill_processes_referencing(roots: &[PathBuf]) {
    let ids: Vec<String> = roots
        .iter()
        .filter_map(|r| std::fs::read_dir(r.join("containers")).ok())
        .flat_map(|d| d.flatten())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|id| id.len() >= 12 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .collect();
    for (pid, dir) in other_processes() {
        let in_container = !ids.is_empty()
            && std::fs::read_to_string(dir.join("cgroup"))
                .is_ok_and(|cg| ids.iter().any(|id| cg.contains(id.as_str())));
        if in_container || cmdline_mentions(&dir, roots) {
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
        }
    }
}

/// Every process but this one: its pid and its `/proc/<pid>` directory.
fn other_processes() -> impl Iterator<Item = (u32, PathBuf)> {
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .into_iter()
        .flat_map(|d| d.flatten())
        .filter_map(move |e| {
            let pid = e.file_name().to_str()?.parse::<u32>().ok()?;
            (pid != me).then(|| (pid, e.path()))
        })
}

/// Whether the command line in `/proc/<pid>` (`proc_dir`) mentions one of `paths`.
fn cmdline_mentions(proc_dir: &Path, paths: &[PathBuf]) -> bool {
    let Ok(cmdline) = std::fs::read(proc_dir.join("cmdline")) else {
        return false;
    };
    paths.iter().any(|p| {
        let n = p.as_os_str().as_encoded_bytes();
        !n.is_empty() && cmdline.windows(n.len()).any(|w| w == n)
    })
}

/// Whether any other process's command line mentions `path` (an engine or its watchdog still at work there).
pub fn any_process_mentions(path: &Path) -> bool {
    let paths = [path.to_path_buf()];
    other_processes().any(|(_, dir)| cmdline_mentions(&dir, &paths))
}

/// Lazily unmount every mount point at or below `root`, deepest first.
fn unmount_under(root: &Path) {
    let mut points = mounts_under(root);
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        if let Ok(c) = std::ffi::CString::new(p) {
            unsafe {
                libc::umount2(c.as_ptr(), libc::MNT_DETACH);
            }
        }
    }
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mount points at or below `root`.
pub fn mounts_under(root: &Path) -> Vec<String> {
    let root_s = root.to_string_lossy().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mount)
        .filter(|p| p == &root_s || p.starts_with(&format!("{root_s}/")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_unescape() {
        assert_eq!(unescape_mount("/a\\040b"), "/a b");
        assert_eq!(unescape_mount("/plain"), "/plain");
        assert_eq!(unescape_mount("/end\\04"), "/end\\04");
    }
}
