//! The legacy desktop backend (`/vm` API of Docker Desktop's removed `docker sandbox` plugin, or LocalSandboxd): a
//! sandbox is a VM named `<name>-vm` plus one container the SDK runs from the template image in the VM's own
//! engine, with the workspace at the same absolute path, the VM's proxy settings and its proxy CA trusted. That
//! is the flow the plugin's users wrote by hand (ensure VM → copy the template image in → run it); here it is
//! one `create`/`ensure`, and the result is an [`ExecTarget`] like an sbx sandbox.

use super::backend::{ExecTarget, SandboxBackend, SandboxSpec, SandboxSummary};
use super::call::Call;
use super::container::{self, Container, ContainerInfo, RunSpec};
use super::desktop_policy;
use super::engine::{self, Engine};
use super::error::{Error, ErrorCode, Result};
use super::images;
use super::netpolicy::{PolicyCheck, PolicyRule, RuleChange};
use super::policy::Scope;
use super::sandboxd::SandboxdClient;
use super::turns;
use super::validate;
use super::vm::{self, Vm};
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

/// The name of the sandbox's container in its VM's engine (one per VM).
pub const CONTAINER_NAME: &str = "sandboxd-sandbox";
/// Labels on that container recording what it was made from (the `/vm` API stores only name and workspace).
const LABEL_AGENT: &str = "io.sandboxd.agent";
const LABEL_TEMPLATE: &str = "io.sandboxd.template";
const LABEL_SANDBOX: &str = "io.sandboxd.sandbox";

/// The desktop backend over one `/vm` daemon.
pub struct DesktopBackend {
    client: SandboxdClient,
    /// The engine a template image missing in a VM is copied from (`None`: `DOCKER_HOST`, then the usual
    /// sockets, looked up when needed).
    image_source: Option<PathBuf>,
}

fn vm_name(name: &str) -> String {
    format!("{name}-vm")
}

fn not_found(name: &str, why: &str) -> Error {
    Error::new(
        ErrorCode::SandboxNotFound,
        format!("no sandbox named {name:?}: {why}"),
    )
    .with("sandbox", name)
}

impl DesktopBackend {
    /// Every VM's policy file with the sandbox it belongs to (VM `<name>-vm` → `<name>`).
    async fn policy_files(&self, call: &Call) -> Result<Vec<(String, PathBuf)>> {
        let root = self.client.state_root().to_path_buf();
        Ok(self
            .client
            .list(call)
            .await?
            .into_iter()
            .map(|info| {
                let vm = Vm::from_listing(info, &root);
                let name = vm
                    .info
                    .name
                    .strip_suffix("-vm")
                    .unwrap_or(&vm.info.name)
                    .to_string();
                (name, vm.state_dir.join("proxy-config.json"))
            })
            .collect())
    }

    async fn all_rules(&self, call: &Call) -> Result<Vec<PolicyRule>> {
        let mut rules = match desktop_policy::global_file() {
            Some(g) => desktop_policy::read_rules(&g, &Scope::Global)?,
            None => Vec::new(),
        };
        for (name, file) in self.policy_files(call).await? {
            rules.extend(desktop_policy::read_rules(&file, &Scope::Sandbox(name))?);
        }
        Ok(rules)
    }

    async fn change_rules(&self, changes: &[RuleChange], call: &Call) -> Result<Vec<PolicyRule>> {
        for (i, c) in changes.iter().enumerate() {
            c.validate(i)?;
        }
        let files = self.policy_files(call).await?;
        let mut by_file: Vec<(PathBuf, Vec<&RuleChange>)> = Vec::new();
        for c in changes {
            let sandbox = match c {
                RuleChange::Add { sandbox, .. } | RuleChange::Remove { sandbox, .. } => sandbox,
                RuleChange::Preset(_) => &None,
            };
            let Some(name) = sandbox else {
                return Err(super::backend::unsupported(
                    "desktop",
                    "global rule changes (its defaults live in ~/.sandboxd/proxy-config.json, which the SDK does not write)",
                ));
            };
            let Some((_, file)) = files.iter().find(|(n, _)| n == name) else {
                return Err(not_found(name, "no VM for it"));
            };
            match by_file.iter_mut().find(|(f, _)| f == file) {
                Some((_, list)) => list.push(c),
                None => by_file.push((file.clone(), vec![c])),
            }
        }
        for (file, list) in by_file {
            desktop_policy::change_file(&file, &list)?;
        }
        self.all_rules(call).await
    }

    /// A backend over `client`; template images are copied from `image_source` (default: the host's engine).
    pub fn new(client: SandboxdClient, image_source: Option<PathBuf>) -> DesktopBackend {
        DesktopBackend {
            client,
            image_source,
        }
    }

    async fn vm(&self, name: &str, call: &Call) -> Result<Option<Vm>> {
        validate::name("name", name)?;
        self.client.get(&vm_name(name), call).await
    }

    async fn container(vm: &Vm, call: &Call) -> Result<(Arc<Engine>, Option<Container>)> {
        let engine = Engine::connect(&vm.socket_path, call).await?;
        let c = container::get(engine.clone(), CONTAINER_NAME, call).await?;
        Ok((engine, c))
    }

    fn summary(vm: &Vm, info: Option<&ContainerInfo>) -> SandboxSummary {
        let label = |k: &str| info.and_then(|i| i.labels.get(k).cloned());
        let status = match info {
            _ if vm.info.starting => "starting",
            None => "no-container",
            Some(i) if i.running => "running",
            Some(_) => "stopped",
        };
        let labels = info
            .map(|i| {
                i.labels
                    .iter()
                    .filter(|(k, _)| !k.starts_with("io.sandboxd."))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        SandboxSummary {
            name: vm.info.agent_name.clone(),
            id: vm.info.id.clone(),
            status: status.into(),
            agent: label(LABEL_AGENT).unwrap_or_default(),
            workspace: vm.info.workspace_dir.clone(),
            template: label(LABEL_TEMPLATE),
            labels,
            expires_at: None,
        }
    }

    async fn describe(vm: &Vm, call: &Call) -> Result<SandboxSummary> {
        if vm.info.starting {
            return Ok(Self::summary(vm, None));
        }
        let (_, c) = Self::container(vm, call).await?;
        let info = match c {
            Some(c) => Some(c.inspect(call).await?),
            None => None,
        };
        Ok(Self::summary(vm, info.as_ref()))
    }

    /// Run the template container in `vm` (the image copied in first when the VM's engine lacks it).
    async fn run_template(
        &self,
        vm: &Vm,
        name: &str,
        spec: &SandboxSpec,
        call: &Call,
    ) -> Result<ContainerInfo> {
        let template = spec.template.as_deref().ok_or_else(|| {
            Error::invalid(
                "the desktop backend runs each sandbox as a container from a template image: pass `template`",
            )
            .with("argument", "template")
        })?;
        container::validate_image_ref(template)?;
        let engine = Engine::connect(&vm.socket_path, call).await?;
        if images::inspect(&engine, template, call).await?.is_none() {
            let source = match &self.image_source {
                Some(p) => p.clone(),
                None => engine::local_socket()?,
            };
            let source = Engine::connect(&source, call).await?;
            images::copy(source, engine.clone(), template, None, call).await?;
        }
        let ca_path = vm::DEFAULT_CA_PATH;
        let mut env = vm::proxy_env(ca_path);
        env.extend(spec.environment.iter().map(|(k, v)| (k.clone(), v.clone())));
        let mut binds = vec![format!("{0}:{0}", spec.workspace)];
        for (dir, ro) in &spec.additional_workspaces {
            validate::workspace_dir(dir)?;
            binds.push(format!("{dir}:{dir}{}", if *ro { ":ro" } else { "" }));
        }
        let mut labels: HashMap<String, String> = spec.labels.clone().into_iter().collect();
        labels.insert(LABEL_AGENT.into(), spec.agent.clone());
        labels.insert(LABEL_TEMPLATE.into(), template.into());
        labels.insert(LABEL_SANDBOX.into(), name.into());
        let c = container::run(
            engine,
            RunSpec {
                image: template.into(),
                name: Some(CONTAINER_NAME.into()),
                cmd: Some(vec!["sleep".into(), "infinity".into()]),
                env,
                working_dir: Some(spec.workspace.clone()),
                binds,
                labels,
                ..Default::default()
            },
            call,
        )
        .await?;
        if let Some(pem) = &vm.ca_cert_pem {
            c.trust_ca(pem, ca_path, call).await?;
        }
        c.inspect(call).await
    }

    fn check_spec(spec: &SandboxSpec) -> Result<String> {
        let name = spec.name.clone().unwrap_or_else(|| spec.agent.clone());
        // The sbx rules (a hostname label), so a name that works on one backend works on the other.
        super::sbx::validate_sandbox_name(&name)?;
        validate::name("agent", &spec.agent)?;
        validate::workspace_dir(&spec.workspace)?;
        if spec.cpus.is_some() || spec.memory.is_some() {
            return Err(Error::new(
                ErrorCode::Unsupported,
                "the desktop backend's /vm API takes no cpus or memory: its VMs are sized by Docker Desktop",
            )
            .with("backend", "desktop"));
        }
        if spec.expiry.is_some() {
            return Err(super::backend::unsupported(
                "desktop",
                "sandbox expiry (the /vm API has no deadline for a VM)",
            ));
        }
        Ok(name)
    }

    async fn create_now(&self, spec: &SandboxSpec, call: &Call) -> Result<SandboxSummary> {
        let name = Self::check_spec(spec)?;
        let vm = self.client.create(&name, &spec.workspace, call).await?;
        match self.run_template(&vm, &name, spec, call).await {
            Ok(info) => Ok(Self::summary(&vm, Some(&info))),
            Err(e) => {
                // A create that failed leaves nothing behind: the VM it made goes too.
                let _ = self
                    .client
                    .remove(&vm.info.name, true, &Call::default())
                    .await;
                Err(e)
            }
        }
    }

    async fn ensure_now(&self, spec: &SandboxSpec, call: &Call) -> Result<SandboxSummary> {
        let name = Self::check_spec(spec)?;
        // Concurrent ensures in this process take turns (the VM client has its own turn for the VM); one in
        // another process that runs the container first shows as a name conflict, and its container is used.
        let _turn = turns::turn(&format!("desktop {}", self.socket()), &name)
            .lock_owned()
            .await;
        let vm = self.client.ensure(&name, &spec.workspace, call).await?;
        let mut backoff = turns::Backoff::default();
        let info = loop {
            match Self::container(&vm, call).await?.1 {
                Some(c) => break c.inspect(call).await?,
                None => match self.run_template(&vm, &name, spec, call).await {
                    Ok(info) => break info,
                    Err(e) if e.code == ErrorCode::ContainerConflict => backoff.wait().await,
                    Err(e) => return Err(e),
                },
            }
        };
        let have = Self::summary(&vm, Some(&info));
        let drift = |what: &str, want: &str, got: &str| {
            Error::new(
                ErrorCode::SandboxConflict,
                format!("sandbox {name:?} exists with {what} {got:?}, not {want:?}: remove it or use another name"),
            )
            .with("sandbox", name.clone())
            .with("field", what)
        };
        if have.agent != spec.agent {
            return Err(drift("agent", &spec.agent, &have.agent));
        }
        if let (Some(want), Some(got)) = (&spec.template, &have.template) {
            if want != got {
                return Err(drift("template", want, got));
            }
        }
        if !info.running {
            Container::from_info(&vm.socket_path, &info, call)
                .await?
                .ensure_running(call)
                .await?;
            return Ok(Self::summary(
                &vm,
                Some(&ContainerInfo {
                    running: true,
                    ..info
                }),
            ));
        }
        Ok(have)
    }

    async fn sandbox_container(&self, name: &str, call: &Call) -> Result<Container> {
        let vm = self
            .vm(name, call)
            .await?
            .ok_or_else(|| not_found(name, "the daemon has no VM for it"))?;
        Self::container(&vm, call).await?.1.ok_or_else(|| {
            not_found(
                name,
                "its VM has no sandbox container (created outside the SDK, or a create that failed midway: \
                 `ensure` with a template repairs it)",
            )
        })
    }
}

impl Container {
    /// The container `info` describes, on the engine at `socket`.
    async fn from_info(
        socket: &std::path::Path,
        info: &ContainerInfo,
        call: &Call,
    ) -> Result<Self> {
        Ok(Container {
            engine: Engine::connect(socket, call).await?,
            id: info.id.clone(),
            name: info.name.trim_start_matches('/').to_string(),
        })
    }
}

impl SandboxBackend for DesktopBackend {
    fn kind(&self) -> &'static str {
        "desktop"
    }
    fn policy_rules<'a>(&'a self, opts: &'a Call) -> BoxFuture<'a, Result<Vec<PolicyRule>>> {
        Box::pin(self.all_rules(opts))
    }
    fn policy_change<'a>(
        &'a self,
        changes: &'a [RuleChange],
        opts: &'a Call,
    ) -> BoxFuture<'a, Result<Vec<PolicyRule>>> {
        Box::pin(self.change_rules(changes, opts))
    }
    fn policy_check<'a>(
        &'a self,
        target: &'a str,
        sandbox: Option<&'a str>,
        opts: &'a Call,
    ) -> BoxFuture<'a, Result<PolicyCheck>> {
        Box::pin(async move {
            let mut rules = self.all_rules(opts).await?;
            if let Some(s) = sandbox {
                if !self.policy_files(opts).await?.iter().any(|(n, _)| n == s) {
                    return Err(not_found(s, "no VM for it"));
                }
            }
            rules.retain(|r| r.sandbox.is_none() || r.sandbox.as_deref() == sandbox);
            desktop_policy::check(&rules, target)
        })
    }
    fn list<'a>(&'a self, opts: &'a Call) -> BoxFuture<'a, Result<Vec<SandboxSummary>>> {
        Box::pin(async move {
            let root = self
                .client
                .socket_path()
                .parent()
                .map(PathBuf::from)
                .unwrap_or_default();
            let mut out = Vec::new();
            for info in self.client.list(opts).await? {
                let vm = Vm::from_listing(info, &root);
                // A VM whose engine does not answer is listed as such rather than failing the whole list.
                out.push(match Self::describe(&vm, opts).await {
                    Ok(s) => s,
                    Err(e) if e.code == ErrorCode::Aborted || e.code == ErrorCode::Timeout => {
                        return Err(e)
                    }
                    Err(_) => SandboxSummary {
                        status: "unreachable".into(),
                        ..Self::summary(&vm, None)
                    },
                });
            }
            Ok(out)
        })
    }
    fn get<'a>(
        &'a self,
        name: &'a str,
        opts: &'a Call,
    ) -> BoxFuture<'a, Result<Option<SandboxSummary>>> {
        Box::pin(async move {
            match self.vm(name, opts).await? {
                Some(vm) => Ok(Some(Self::describe(&vm, opts).await?)),
                None => Ok(None),
            }
        })
    }
    fn create<'a>(
        &'a self,
        spec: &'a SandboxSpec,
        opts: &'a Call,
    ) -> BoxFuture<'a, Result<SandboxSummary>> {
        Box::pin(self.create_now(spec, opts))
    }
    fn ensure<'a>(
        &'a self,
        spec: &'a SandboxSpec,
        opts: &'a Call,
    ) -> BoxFuture<'a, Result<SandboxSummary>> {
        Box::pin(self.ensure_now(spec, opts))
    }
    fn start<'a>(&'a self, name: &'a str, opts: &'a Call) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.sandbox_container(name, opts)
                .await?
                .ensure_running(opts)
                .await
        })
    }
    fn stop<'a>(&'a self, name: &'a str, opts: &'a Call) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.sandbox_container(name, opts)
                .await?
                .stop(None, opts)
                .await
        })
    }
    fn remove<'a>(
        &'a self,
        name: &'a str,
        force: bool,
        opts: &'a Call,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            validate::name("name", name)?;
            match self.client.remove(&vm_name(name), force, opts).await {
                Err(e) if e.code == ErrorCode::VmNotFound => {
                    Err(not_found(name, "the daemon has no VM for it"))
                }
                r => r,
            }
        })
    }
    fn target<'a>(
        &'a self,
        name: &'a str,
        opts: &'a Call,
    ) -> BoxFuture<'a, Result<Arc<dyn ExecTarget>>> {
        Box::pin(async move {
            Ok(Arc::new(self.sandbox_container(name, opts).await?) as Arc<dyn ExecTarget>)
        })
    }
    fn socket(&self) -> String {
        self.client.socket_path().display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn vm(starting: bool) -> Vm {
        Vm::from_listing(
            vm::VmInfo {
                id: "id1".into(),
                name: "dev-vm".into(),
                agent_name: "dev".into(),
                workspace_dir: "/w".into(),
                starting,
            },
            std::path::Path::new("/nonexistent"),
        )
    }

    #[test]
    fn summary_reads_the_labels_and_hides_the_bookkeeping() {
        let mut labels = HashMap::new();
        labels.insert(LABEL_AGENT.to_string(), "claude".to_string());
        labels.insert(LABEL_TEMPLATE.to_string(), "t:1".to_string());
        labels.insert("team".to_string(), "a".to_string());
        let info = ContainerInfo {
            id: "c".into(),
            name: "/sandboxd-sandbox".into(),
            image: "t:1".into(),
            status: "running".into(),
            running: true,
            exit_code: None,
            pid: None,
            started_at: None,
            finished_at: None,
            created: None,
            labels,
            env_keys: vec![],
            init: true,
        };
        let s = DesktopBackend::summary(&vm(false), Some(&info));
        assert_eq!(s.name, "dev");
        assert_eq!(s.status, "running");
        assert_eq!(s.agent, "claude");
        assert_eq!(s.template.as_deref(), Some("t:1"));
        assert_eq!(s.labels, BTreeMap::from([("team".into(), "a".into())]));
        assert_eq!(
            DesktopBackend::summary(&vm(true), Some(&info)).status,
            "starting"
        );
        assert_eq!(
            DesktopBackend::summary(&vm(false), None).status,
            "no-container"
        );
    }

    #[test]
    fn specs_the_vm_api_cannot_honour_are_refused() {
        let spec = SandboxSpec {
            agent: "claude".into(),
            workspace: "/tmp".into(),
            cpus: Some(2),
            ..Default::default()
        };
        assert_eq!(
            DesktopBackend::check_spec(&spec).unwrap_err().code,
            ErrorCode::Unsupported
        );
        let spec = SandboxSpec {
            agent: "claude".into(),
            workspace: "relative".into(),
            ..Default::default()
        };
        assert_eq!(
            DesktopBackend::check_spec(&spec).unwrap_err().code,
            ErrorCode::InvalidArgument
        );
        let spec = SandboxSpec {
            name: Some("dev".into()),
            agent: "claude".into(),
            workspace: "/tmp".into(),
            ..Default::default()
        };
        assert_eq!(DesktopBackend::check_spec(&spec).unwrap(), "dev");
    }
}
