//! What the SDK knows about one sandboxd microVM.

use std::path::{Path, PathBuf};

/// One entry of `GET /vm`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmInfo {
    pub id: String,
    pub name: String,
    pub agent_name: String,
    pub workspace_dir: String,
    /// The daemon says the VM is still being created or started (a listing `status` such as `creating` or
    /// `starting`): it is not usable yet. The legacy `/vm` API documents no status field; one
    /// that a daemon sends is understood.
    pub starting: bool,
}

/// A VM with everything needed to reach its Docker engine and trust its proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vm {
    pub info: VmInfo,
    /// The VM's own Docker Engine socket.
    pub socket_path: PathBuf,
    pub state_dir: PathBuf,
    pub file_sharing_directories: Vec<String>,
    pub asset_dir: Option<String>,
    /// Where the proxy CA lives on the host, when known.
    pub ca_cert_path: Option<PathBuf>,
    /// The proxy CA, PEM text (decoded `ca_cert_data`, or read from `ca_cert_path`).
    pub ca_cert_pem: Option<String>,
}

impl Vm {
    /// A VM seen in a listing: no `vm_config`, so paths follow the state-dir convention
    /// `<dir of sandboxd.sock>/vm/<name>/` and the CA is read from `proxy_cacerts/proxy-ca.crt` if present.
    pub fn from_listing(info: VmInfo, state_root: &Path) -> Vm {
        let state_dir = state_root.join("vm").join(&info.name);
        let ca_path = state_dir.join("proxy_cacerts").join("proxy-ca.crt");
        let ca_cert_pem = std::fs::read_to_string(&ca_path).ok();
        Vm {
            socket_path: state_dir.join("docker.sock"),
            file_sharing_directories: vec![info.workspace_dir.clone()],
            asset_dir: None,
            ca_cert_path: ca_cert_pem.as_ref().map(|_| ca_path),
            ca_cert_pem,
            state_dir,
            info,
        }
    }
}

/// Where [`proxy_env`] points the trust variables by default.
pub const DEFAULT_CA_PATH: &str = "/usr/local/share/ca-certificates/sandboxd-proxy.crt";

/// The environment a container in a sandbox VM needs: the host proxy (HTTP/HTTPS only leave the VM through it)
/// and trust for its CA at `ca_path` — never `NODE_TLS_REJECT_UNAUTHORIZED=0`.
pub fn proxy_env(ca_path: &str) -> Vec<(String, String)> {
    let proxy = "http://host.docker.internal:3128";
    let no_proxy = "localhost,127.0.0.1";
    [
        ("HTTP_PROXY", proxy),
        ("HTTPS_PROXY", proxy),
        ("http_proxy", proxy),
        ("https_proxy", proxy),
        ("NO_PROXY", no_proxy),
        ("no_proxy", no_proxy),
        ("NODE_EXTRA_CA_CERTS", ca_path),
        ("SSL_CERT_FILE", ca_path),
        ("REQUESTS_CA_BUNDLE", ca_path),
        ("CURL_CA_BUNDLE", ca_path),
        ("GIT_SSL_CAINFO", ca_path),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}
