//! Putting the `sandbox-agent` binary into a sandbox from the host: no network inside, no custom template. The
//! binary comes from the npm package `@sandbox-agent/cli-linux-<cpu>` (resolved by the TypeScript layer, which
//! owns Node's module lookup) or a path the user gives, is chosen by the sandbox's `uname -m`, copied through
//! the files route as one archive entry (mode 0755), and verified by size and SHA-256. An identical binary
//! already there is never copied again.

use super::backend::ExecTarget;
use super::call::Call;
use super::container::single_file_tar;
use super::error::{Error, ErrorCode, Result};
use super::exec::ExecSpec;
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::time::Duration;

/// Where the binary goes (on `PATH` in every common image; the server is started by this absolute path anyway).
pub const INSTALL_PATH: &str = "/usr/local/bin/sandbox-agent";
/// Default deadline for an install (reading, hashing and copying ~25 MB).
pub const INSTALL_TIMEOUT: Duration = Duration::from_secs(120);

/// The binaries on the host, by npm cpu name (`x64`, `arm64`), or `*` for one given without an architecture.
#[derive(Debug, Clone, Default)]
pub struct BinarySources(pub Vec<(String, PathBuf)>);

impl BinarySources {
    /// Whether any binary is known.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The binary for a sandbox whose `uname -m` is `machine`.
    fn for_machine(&self, machine: &str) -> Option<&PathBuf> {
        let cpu = npm_cpu(machine);
        self.0
            .iter()
            .find(|(k, _)| Some(k.as_str()) == cpu)
            .or_else(|| self.0.iter().find(|(k, _)| k == "*"))
            .map(|(_, p)| p)
    }
}

/// `uname -m` → npm's cpu name.
fn npm_cpu(machine: &str) -> Option<&'static str> {
    match machine {
        "x86_64" | "amd64" => Some("x64"),
        "aarch64" | "arm64" => Some("arm64"),
        _ => None,
    }
}

/// What an install did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// The binary's absolute path in the sandbox.
    pub path: String,
    /// False when an identical binary was already there.
    pub copied: bool,
    pub bytes: u64,
    /// Lower-case hex SHA-256 of the binary.
    pub sha256: String,
}

async fn run(target: &dyn ExecTarget, argv: &[&str], call: &Call) -> Result<(i64, String)> {
    let spec = ExecSpec {
        cmd: argv.iter().map(|s| s.to_string()).collect(),
        timeout: call.timeout,
        ..Default::default()
    };
    let out = target.exec(spec, call.cancel.clone()).await?;
    Ok((
        out.exit_code.unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    ))
}

/// The SHA-256 of the file at `path` in the sandbox, or `None` when it is not there.
async fn remote_sha256(target: &dyn ExecTarget, path: &str, call: &Call) -> Result<Option<String>> {
    let (code, out) = run(target, &["sha256sum", "--", path], call).await?;
    Ok((code == 0)
        .then(|| out.split_whitespace().next().map(str::to_ascii_lowercase))
        .flatten())
}

/// Install the binary for this sandbox's architecture from `sources` (see the module doc).
pub async fn install(
    target: &dyn ExecTarget,
    sources: &BinarySources,
    call: &Call,
) -> Result<Installed> {
    call.run("installing sandbox-agent", Some(INSTALL_TIMEOUT), async {
        let (_, machine) = run(target, &["uname", "-m"], call).await?;
        let source = sources.for_machine(&machine).ok_or_else(|| {
            let cpu = npm_cpu(&machine).unwrap_or("<unknown>");
            Error::invalid(format!(
                "no sandbox-agent binary for this sandbox (linux/{machine}): add @sandbox-agent/cli-linux-{cpu} \
                 to your dependencies or pass agentBinary"
            ))
            .with("argument", "agentBinary")
            .with("machine", machine.clone())
        })?;
        let data = tokio::fs::read(source).await.map_err(|e| {
            Error::invalid(format!(
                "cannot read the sandbox-agent binary at {}: {e}",
                source.display()
            ))
            .with("argument", "agentBinary")
        })?;
        let sha256 = hex(&Sha256::digest(&data));
        let bytes = data.len() as u64;
        if remote_sha256(target, INSTALL_PATH, call).await?.as_deref() == Some(sha256.as_str()) {
            return Ok(Installed {
                path: INSTALL_PATH.into(),
                copied: false,
                bytes,
                sha256,
            });
        }
        let (dir, name) = INSTALL_PATH.rsplit_once('/').unwrap_or(("/", INSTALL_PATH));
        let (code, _) = run(target, &["mkdir", "-p", "--", dir], call).await?;
        if code != 0 {
            return Err(Error::new(
                ErrorCode::ExecFailed,
                format!("could not create {dir} in the sandbox (mkdir exited {code})"),
            ));
        }
        let tar = single_file_tar(name, &data, 0o755)?;
        drop(data);
        target.write_files(dir, tar.into(), call).await?;
        match remote_sha256(target, INSTALL_PATH, call).await? {
            Some(got) if got == sha256 => Ok(Installed {
                path: INSTALL_PATH.into(),
                copied: true,
                bytes,
                sha256,
            }),
            got => Err(Error::new(
                ErrorCode::AgentUnavailable,
                format!(
                    "the sandbox-agent binary copied to {INSTALL_PATH} does not match the source (sha256 {} vs \
                     {sha256})",
                    got.unwrap_or_else(|| "missing".into())
                ),
            )),
        }
    })
    .await
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_binary_is_chosen_by_the_sandboxes_machine() {
        let s = BinarySources(vec![
            ("x64".into(), PathBuf::from("/a")),
            ("arm64".into(), PathBuf::from("/b")),
        ]);
        assert_eq!(s.for_machine("x86_64"), Some(&PathBuf::from("/a")));
        assert_eq!(s.for_machine("aarch64"), Some(&PathBuf::from("/b")));
        assert_eq!(s.for_machine("riscv64"), None);
        let any = BinarySources(vec![("*".into(), PathBuf::from("/c"))]);
        assert_eq!(any.for_machine("riscv64"), Some(&PathBuf::from("/c")));
    }

    #[test]
    fn sha256_is_lower_hex() {
        assert_eq!(
            hex(&Sha256::digest(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
