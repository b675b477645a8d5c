//! One pod's life on this node: the [`Lifecycle`] state enum, the per-container records, and
//! [`PodWorker::step`], which looks at the pod and the runtime and makes one round of
//! progress (create the sandbox, pull images, start init containers in order, then the
//! containers, restart exited ones per `restartPolicy` with CrashLoopBackOff, tear down on
//! deletion). Every runtime call goes through [`Runtime`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::jiff::Timestamp;
use tokio::time::Instant;

use crate::cri::Runtime;

/// First restart delay after the first crash (upstream: 10 s, doubling).
pub const BACKOFF_INITIAL: Duration = Duration::from_secs(10);
/// Longest restart delay (upstream: 5 min).
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// A container that ran this long resets its back-off (upstream: 10 min).
pub const BACKOFF_RESET: Duration = Duration::from_secs(600);
/// How often running containers are checked while nothing else happens.
pub const POLL: Duration = Duration::from_secs(1);
/// Shortest stop grace period (upstream enforces 2 s as well).
pub const MIN_GRACE_SECONDS: i64 = 2;

/// Labels the agent puts on sandboxes and containers (the same keys as upstream's kubelet).
pub mod labels {
    /// Pod name.
    pub const POD_NAME: &str = "io.kubernetes.pod.name";
    /// Pod namespace.
    pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
    /// Pod UID.
    pub const POD_UID: &str = "io.kubernetes.pod.uid";
    /// Container name.
    pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";
    /// Marks objects created by rkube.
    pub const MANAGED_BY: &str = "rkube.io/managed";
}

/// Where a pod is in its life on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lifecycle {
    /// Seen; no sandbox yet (or the last RunPodSandbox failed and will be retried).
    Pending,
    /// The sandbox is ready; containers are being run and watched.
    Running,
    /// No container will run again (restartPolicy reached a terminal phase); the sandbox
    /// is stopped, the status stays.
    Finished,
    /// Deletion requested: containers are being stopped and the sandbox removed.
    Terminating,
    /// Nothing of the pod is left on the node.
    Terminated,
}

/// How a container ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Termination {
    /// Exit code.
    pub exit_code: i32,
    /// `Completed`, `Error`, `OOMKilled`, ...
    pub reason: String,
    /// The runtime's message.
    pub message: Option<String>,
    /// When it started.
    pub started_at: Option<Timestamp>,
    /// When it finished.
    pub finished_at: Timestamp,
    /// The runtime's container ID.
    pub container_id: String,
}

/// A container's state as reported in status.
#[derive(Debug, Clone, PartialEq)]
pub enum CState {
    /// Not running: being created, pulling, backing off.
    Waiting {
        /// `ContainerCreating`, `PodInitializing`, `ErrImagePull`, `CrashLoopBackOff`, ...
        reason: String,
        /// Details (the runtime's message for errors).
        message: Option<String>,
    },
    /// Running since.
    Running {
        /// Start time.
        started_at: Timestamp,
    },
    /// Exited and not restarted (yet).
    Terminated(Termination),
}

/// What the worker knows about one container of the pod spec.
#[derive(Debug, Clone)]
pub struct ContainerRecord {
    /// Its name in the spec.
    pub name: String,
    /// The image as the spec names it.
    pub image: String,
    /// The resolved image ID (empty until known).
    pub image_id: String,
    /// The current runtime container, if one exists.
    pub id: Option<String>,
    /// Reported state.
    pub state: CState,
    /// The previous run's termination.
    pub last_termination: Option<Termination>,
    /// Restarts so far.
    pub restart_count: i32,
    /// Current restart delay (None before the first restart).
    pub backoff: Option<Duration>,
    /// No restart before this.
    pub backoff_until: Option<Instant>,
    /// Current image pull delay.
    pub pull_backoff: Option<Duration>,
    /// No pull before this.
    pub pull_until: Option<Instant>,
}

impl ContainerRecord {
    /// A container not created yet.
    pub fn new(name: &str, image: &str) -> ContainerRecord {
        ContainerRecord {
            name: name.into(),
            image: image.into(),
            image_id: String::new(),
            id: None,
            state: CState::Waiting {
                reason: "ContainerCreating".into(),
                message: None,
            },
            last_termination: None,
            restart_count: 0,
            backoff: None,
            backoff_until: None,
            pull_backoff: None,
            pull_until: None,
        }
    }

    fn waiting(&mut self, reason: &str, message: Option<String>) {
        self.state = CState::Waiting {
            reason: reason.into(),
            message,
        };
    }

    fn succeeded(&self) -> bool {
        matches!(&self.state, CState::Terminated(t) if t.exit_code == 0)
    }
}

/// What a worker needs from the agent.
#[derive(Clone)]
pub struct WorkerContext {
    /// The runtime.
    pub runtime: Arc<dyn Runtime>,
    /// Container logs go under `<log_root>/<namespace>_<name>_<uid>/`.
    pub log_root: PathBuf,
    /// Pod cgroups go under `<cgroup_parent>/pod<uid>` (empty: the runtime's default).
    pub cgroup_parent: String,
}

impl std::fmt::Debug for WorkerContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerContext")
            .field("log_root", &self.log_root)
            .field("cgroup_parent", &self.cgroup_parent)
            .finish_non_exhaustive()
    }
}

/// One pod's worker state.
#[derive(Debug, Clone)]
pub struct PodWorker {
    /// Where the pod is.
    pub lifecycle: Lifecycle,
    /// The sandbox ID once created.
    pub sandbox_id: Option<String>,
    /// The pod IP.
    pub pod_ip: Option<String>,
    /// The last RunPodSandbox error (shown as the pod's message).
    pub sandbox_error: Option<String>,
    /// When the agent first acted on the pod.
    pub start_time: Option<Timestamp>,
    /// Init containers, in spec order.
    pub init: Vec<ContainerRecord>,
    /// Containers, in spec order.
    pub containers: Vec<ContainerRecord>,
    sandbox_retry: Option<Instant>,
}

fn ns_to_ts(ns: i64) -> Option<Timestamp> {
    (ns > 0)
        .then(|| Timestamp::from_nanosecond(i128::from(ns)).ok())
        .flatten()
}

fn pod_uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

/// Labels identifying the pod on its sandbox.
pub fn pod_labels(pod: &Pod) -> HashMap<String, String> {
    let mut l: HashMap<String, String> = pod
        .metadata
        .labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    l.insert(
        labels::POD_NAME.into(),
        pod.metadata.name.clone().unwrap_or_default(),
    );
    l.insert(
        labels::POD_NAMESPACE.into(),
        pod.metadata.namespace.clone().unwrap_or_default(),
    );
    l.insert(labels::POD_UID.into(), pod_uid(pod));
    l.insert(labels::MANAGED_BY.into(), "true".into());
    l
}

/// The sandbox config for `pod`.
pub fn sandbox_config(pod: &Pod, ctx: &WorkerContext) -> cri::PodSandboxConfig {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let uid = pod_uid(pod);
    let spec = pod.spec.clone().unwrap_or_default();
    let mut hostname = spec.hostname.clone().unwrap_or_else(|| name.clone());
    hostname.truncate(63);
    let host_network = spec.host_network.unwrap_or(false);
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.clone(),
            uid: uid.clone(),
            namespace: namespace.clone(),
            attempt: 0,
        }),
        hostname: if host_network {
            String::new()
        } else {
            hostname
        },
        log_directory: ctx
            .log_root
            .join(format!("{namespace}_{name}_{uid}"))
            .to_string_lossy()
            .into_owned(),
        dns_config: None,
        port_mappings: vec![],
        labels: pod_labels(pod),
        annotations: pod
            .metadata
            .annotations
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: if ctx.cgroup_parent.is_empty() {
                String::new()
            } else {
                format!("{}/pod{uid}", ctx.cgroup_parent.trim_end_matches('/'))
            },
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    network: if host_network {
                        cri::NamespaceMode::Node
                    } else {
                        cri::NamespaceMode::Pod
                    } as i32,
                    pid: cri::NamespaceMode::Container as i32,
                    ipc: cri::NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        windows: None,
    }
}

/// The container config for `c` (its `attempt`-th run).
pub fn container_config(pod: &Pod, c: &Container, attempt: u32) -> cri::ContainerConfig {
    let mut l = HashMap::new();
    l.insert(labels::CONTAINER_NAME.to_string(), c.name.clone());
    l.insert(
        labels::POD_NAME.into(),
        pod.metadata.name.clone().unwrap_or_default(),
    );
    l.insert(
        labels::POD_NAMESPACE.into(),
        pod.metadata.namespace.clone().unwrap_or_default(),
    );
    l.insert(labels::POD_UID.into(), pod_uid(pod));
    let envs = c
        .env
        .iter()
        .flatten()
        .filter_map(|e| {
            // valueFrom (ConfigMap, Secret, downward API) arrives with the volumes work.
            e.value.as_ref().map(|v| cri::KeyValue {
                key: e.name.clone(),
                value: v.clone(),
            })
        })
        .collect();
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: c.name.clone(),
            attempt,
        }),
        image: Some(crate::cri::image_spec(
            c.image.as_deref().unwrap_or_default(),
        )),
        command: c.command.clone().unwrap_or_default(),
        args: c.args.clone().unwrap_or_default(),
        working_dir: c.working_dir.clone().unwrap_or_default(),
        envs,
        labels: l,
        annotations: HashMap::from([(
            "io.kubernetes.container.restartCount".to_string(),
            attempt.to_string(),
        )]),
        log_path: format!("{}/{attempt}.log", c.name),
        stdin: c.stdin.unwrap_or(false),
        stdin_once: c.stdin_once.unwrap_or(false),
        tty: c.tty.unwrap_or(false),
        linux: Some(cri::LinuxContainerConfig {
            resources: Some(crate::resources::linux_resources(c)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The pull policy, defaulted as upstream does (`Always` for `:latest` or no tag).
pub fn pull_policy(c: &Container) -> String {
    if let Some(p) = &c.image_pull_policy {
        return p.clone();
    }
    let image = c.image.as_deref().unwrap_or_default();
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') {
        "IfNotPresent".into()
    } else if !last.contains(':') || last.ends_with(":latest") {
        "Always".into()
    } else {
        "IfNotPresent".into()
    }
}

/// Whether a container that exited with `exit_code` runs again under `policy`.
pub fn should_restart(policy: &str, exit_code: i32) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => exit_code != 0,
        _ => true,
    }
}

/// The next restart delay after one at `current` (None: the first restart is immediate).
pub fn next_backoff(current: Option<Duration>) -> Duration {
    match current {
        None => BACKOFF_INITIAL,
        Some(d) => (d * 2).min(BACKOFF_MAX),
    }
}

/// What happened in a step, for the worker loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepResult {
    /// Step again after this long at the latest.
    pub wake: Duration,
}

impl PodWorker {
    /// The worker for a newly seen pod.
    pub fn new(pod: &Pod) -> PodWorker {
        let spec = pod.spec.clone().unwrap_or_default();
        let rec =
            |c: &Container| ContainerRecord::new(&c.name, c.image.as_deref().unwrap_or_default());
        let init: Vec<ContainerRecord> = spec.init_containers.iter().flatten().map(rec).collect();
        let mut containers: Vec<ContainerRecord> = spec.containers.iter().map(rec).collect();
        if !init.is_empty() {
            for c in &mut containers {
                c.waiting("PodInitializing", None);
            }
        }
        PodWorker {
            lifecycle: Lifecycle::Pending,
            sandbox_id: None,
            pod_ip: None,
            sandbox_error: None,
            start_time: None,
            init,
            containers,
            sandbox_retry: None,
        }
    }

    /// Makes one round of progress. `gone` means the pod object no longer exists.
    pub async fn step(&mut self, pod: &Pod, gone: bool, ctx: &WorkerContext) -> StepResult {
        let deleting = gone || pod.metadata.deletion_timestamp.is_some();
        if deleting && self.lifecycle != Lifecycle::Terminated {
            self.lifecycle = Lifecycle::Terminating;
        }
        match self.lifecycle {
            Lifecycle::Pending => self.step_pending(pod, ctx).await,
            Lifecycle::Running => self.step_running(pod, ctx).await,
            Lifecycle::Finished => StepResult {
                wake: Duration::from_secs(3600),
            },
            Lifecycle::Terminating => {
                self.terminate(pod, ctx).await;
                StepResult { wake: POLL }
            }
            Lifecycle::Terminated => StepResult {
                wake: Duration::from_secs(3600),
            },
        }
    }

    async fn step_pending(&mut self, pod: &Pod, ctx: &WorkerContext) -> StepResult {
        if let Some(at) = self.sandbox_retry
            && Instant::now() < at
        {
            return StepResult {
                wake: at - Instant::now(),
            };
        }
        self.start_time.get_or_insert_with(Timestamp::now);
        // Sandboxes a previous agent left for this pod are replaced (adopting them is later
        // work).
        self.remove_stale_sandboxes(pod, ctx).await;
        let config = sandbox_config(pod, ctx);
        let _ = std::fs::create_dir_all(&config.log_directory);
        match ctx.runtime.run_pod_sandbox(config).await {
            Ok(id) => {
                tracing::info!(sandbox = %id, "sandbox ready");
                self.sandbox_error = None;
                self.sandbox_id = Some(id.clone());
                if let Ok(Some(status)) = ctx.runtime.pod_sandbox_status(&id).await {
                    self.pod_ip = status.network.map(|n| n.ip).filter(|ip| !ip.is_empty());
                }
                self.lifecycle = Lifecycle::Running;
                Box::pin(self.step_running(pod, ctx)).await
            }
            Err(err) => {
                tracing::warn!(?err, "RunPodSandbox failed");
                self.sandbox_error =
                    Some(format!("failed to create pod sandbox: {}", err.message()));
                let delay = Duration::from_secs(2);
                self.sandbox_retry = Some(Instant::now() + delay);
                StepResult { wake: delay }
            }
        }
    }

    async fn remove_stale_sandboxes(&self, pod: &Pod, ctx: &WorkerContext) {
        let filter = cri::PodSandboxFilter {
            label_selector: HashMap::from([(labels::POD_UID.to_string(), pod_uid(pod))]),
            ..Default::default()
        };
        if let Ok(list) = ctx.runtime.list_pod_sandbox(Some(filter)).await {
            for sb in list {
                if sb.labels.get(labels::POD_UID).map(String::as_str) != Some(&pod_uid(pod)) {
                    continue;
                }
                let _ = ctx.runtime.stop_pod_sandbox(&sb.id).await;
                let _ = ctx.runtime.remove_pod_sandbox(&sb.id).await;
            }
        }
    }

    /// Refreshes the state of a created or running container from the runtime.
    async fn refresh(rec: &mut ContainerRecord, ctx: &WorkerContext) {
        let Some(id) = rec.id.clone() else { return };
        // Only a running container can change under us (waiting ones have exited already).
        if !matches!(rec.state, CState::Running { .. }) {
            return;
        }
        match ctx.runtime.container_status(&id).await {
            Ok(Some(s)) if s.state == cri::ContainerState::ContainerExited as i32 => {
                if !s.image_ref.is_empty() {
                    rec.image_id = s.image_ref.clone();
                }
                rec.state = CState::Terminated(Termination {
                    exit_code: s.exit_code,
                    reason: if s.reason.is_empty() {
                        if s.exit_code == 0 {
                            "Completed"
                        } else {
                            "Error"
                        }
                        .into()
                    } else {
                        s.reason
                    },
                    message: (!s.message.is_empty()).then_some(s.message),
                    started_at: ns_to_ts(s.started_at),
                    finished_at: ns_to_ts(s.finished_at).unwrap_or_else(Timestamp::now),
                    container_id: id,
                });
            }
            Ok(Some(s)) => {
                if !s.image_ref.is_empty() {
                    rec.image_id = s.image_ref.clone();
                }
                if s.state == cri::ContainerState::ContainerRunning as i32
                    && let Some(t) = ns_to_ts(s.started_at)
                {
                    rec.state = CState::Running { started_at: t };
                }
            }
            Ok(None) | Err(_) => {
                // The container vanished: treat it as an unknown exit.
                rec.state = CState::Terminated(Termination {
                    exit_code: 137,
                    reason: "ContainerStatusUnknown".into(),
                    message: Some("the container could not be located".into()),
                    started_at: None,
                    finished_at: Timestamp::now(),
                    container_id: id,
                });
            }
        }
    }

    /// Pulls the image if the policy says so. Returns false (with the record waiting) when
    /// the image is not available.
    async fn ensure_image(
        rec: &mut ContainerRecord,
        c: &Container,
        sandbox: &cri::PodSandboxConfig,
        ctx: &WorkerContext,
    ) -> bool {
        let image = c.image.clone().unwrap_or_default();
        let policy = pull_policy(c);
        if policy != "Always" {
            match ctx.runtime.image_status(&image).await {
                Ok(Some(img)) => {
                    rec.image_id = img.id;
                    return true;
                }
                Ok(None) if policy == "Never" => {
                    rec.waiting(
                        "ErrImageNeverPull",
                        Some(format!(
                            "Container image \"{image}\" is not present with pull policy of Never"
                        )),
                    );
                    return false;
                }
                Ok(None) => {}
                Err(err) => {
                    rec.waiting("ErrImagePull", Some(err.message()));
                    return false;
                }
            }
        }
        if let Some(until) = rec.pull_until
            && Instant::now() < until
        {
            rec.waiting(
                "ImagePullBackOff",
                Some(format!("Back-off pulling image \"{image}\"")),
            );
            return false;
        }
        match ctx.runtime.pull_image(&image, sandbox.clone()).await {
            Ok(image_ref) => {
                rec.image_id = image_ref;
                rec.pull_backoff = None;
                rec.pull_until = None;
                true
            }
            Err(err) => {
                tracing::info!(%image, ?err, "image pull failed");
                let delay = next_backoff(rec.pull_backoff);
                rec.pull_backoff = Some(delay);
                rec.pull_until = Some(Instant::now() + delay);
                rec.waiting("ErrImagePull", Some(err.message()));
                false
            }
        }
    }

    /// Creates and starts a run of `c`. Returns whether it started.
    async fn run_container(
        rec: &mut ContainerRecord,
        pod: &Pod,
        c: &Container,
        sandbox_id: &str,
        ctx: &WorkerContext,
    ) -> bool {
        let sandbox = sandbox_config(pod, ctx);
        if !Self::ensure_image(rec, c, &sandbox, ctx).await {
            return false;
        }
        // The previous run's container is kept until the next one exists (for its logs).
        let attempt = rec.restart_count.max(0) as u32;
        let config = container_config(pod, c, attempt);
        let id = match ctx
            .runtime
            .create_container(sandbox_id, config, sandbox)
            .await
        {
            Ok(id) => id,
            Err(err) => {
                rec.waiting("CreateContainerError", Some(err.message()));
                return false;
            }
        };
        if let CState::Terminated(t) = &rec.state {
            let old = t.container_id.clone();
            let _ = ctx.runtime.remove_container(&old).await;
        }
        if let Err(err) = ctx.runtime.start_container(&id).await {
            rec.id = Some(id.clone());
            rec.state = CState::Terminated(Termination {
                exit_code: 128,
                reason: "StartError".into(),
                message: Some(err.message()),
                started_at: None,
                finished_at: Timestamp::now(),
                container_id: id,
            });
            return false;
        }
        rec.id = Some(id);
        // StartContainer returned: the container runs (no need to wait for a relist).
        rec.state = CState::Running {
            started_at: Timestamp::now(),
        };
        true
    }

    /// Decides what to do with an exited container: restart now, wait (CrashLoopBackOff),
    /// or leave it terminated. Returns the wait, if any.
    async fn handle_exit(
        rec: &mut ContainerRecord,
        pod: &Pod,
        c: &Container,
        sandbox_id: &str,
        policy: &str,
        ctx: &WorkerContext,
    ) -> Option<Duration> {
        let CState::Terminated(t) = rec.state.clone() else {
            // Waiting in back-off after an exit.
            return Self::retry_after_backoff(rec, pod, c, sandbox_id, ctx).await;
        };
        if !should_restart(policy, t.exit_code) {
            return None;
        }
        if let (Some(s), f) = (t.started_at, t.finished_at)
            && f.duration_since(s).as_secs() as u64 >= BACKOFF_RESET.as_secs()
        {
            rec.backoff = None;
        }
        rec.last_termination = Some(t.clone());
        match rec.backoff {
            None => {
                // The first restart is immediate; later ones wait.
                rec.backoff = Some(next_backoff(None));
                rec.backoff_until = Some(Instant::now() + BACKOFF_INITIAL);
                rec.restart_count += 1;
                Self::run_container(rec, pod, c, sandbox_id, ctx).await;
                None
            }
            Some(delay) => {
                let until = Instant::now() + delay;
                rec.backoff_until = Some(until);
                rec.backoff = Some(next_backoff(Some(delay)));
                rec.waiting(
                    "CrashLoopBackOff",
                    Some(format!(
                        "back-off {}s restarting failed container={} pod={}",
                        delay.as_secs(),
                        c.name,
                        pod.metadata.name.as_deref().unwrap_or_default()
                    )),
                );
                Some(delay)
            }
        }
    }

    async fn retry_after_backoff(
        rec: &mut ContainerRecord,
        pod: &Pod,
        c: &Container,
        sandbox_id: &str,
        ctx: &WorkerContext,
    ) -> Option<Duration> {
        let until = rec.backoff_until?;
        let now = Instant::now();
        if now < until {
            return Some(until - now);
        }
        rec.restart_count += 1;
        if let Some(t) = &rec.last_termination {
            // run_container removes the previous container.
            rec.state = CState::Terminated(t.clone());
        }
        Self::run_container(rec, pod, c, sandbox_id, ctx).await;
        None
    }

    async fn step_running(&mut self, pod: &Pod, ctx: &WorkerContext) -> StepResult {
        let Some(sandbox_id) = self.sandbox_id.clone() else {
            self.lifecycle = Lifecycle::Pending;
            return StepResult {
                wake: Duration::ZERO,
            };
        };
        let spec = pod.spec.clone().unwrap_or_default();
        let policy = spec
            .restart_policy
            .clone()
            .unwrap_or_else(|| "Always".into());
        let wake = POLL;
        for rec in self.init.iter_mut().chain(self.containers.iter_mut()) {
            Self::refresh(rec, ctx).await;
        }
        // Init containers, one at a time, in order.
        let inits: Vec<Container> = spec.init_containers.clone().unwrap_or_default();
        for (rec, c) in self.init.iter_mut().zip(&inits) {
            if rec.succeeded() {
                continue;
            }
            match &rec.state {
                CState::Running { .. } => {}
                CState::Waiting { .. } if rec.id.is_none() && rec.last_termination.is_none() => {
                    Self::run_container(rec, pod, c, &sandbox_id, ctx).await;
                }
                CState::Terminated(t) if policy == "Never" && t.exit_code != 0 => {
                    self.finish(ctx).await;
                }
                _ => {
                    // Failed init containers restart (with back-off) unless policy is Never.
                    Self::handle_exit(rec, pod, c, &sandbox_id, "OnFailure", ctx).await;
                }
            }
            return StepResult { wake };
        }
        // Containers.
        for (rec, c) in self.containers.iter_mut().zip(&spec.containers) {
            match &rec.state {
                CState::Running { .. } => {}
                CState::Waiting { .. } if rec.id.is_none() && rec.last_termination.is_none() => {
                    Self::run_container(rec, pod, c, &sandbox_id, ctx).await;
                }
                _ => {
                    Self::handle_exit(rec, pod, c, &sandbox_id, &policy, ctx).await;
                }
            }
        }
        let done = self.containers.iter().all(|r| match &r.state {
            CState::Terminated(t) => !should_restart(&policy, t.exit_code),
            _ => false,
        });
        if done {
            self.finish(ctx).await;
        }
        StepResult { wake }
    }

    /// No container runs again: stop the sandbox, keep the records.
    async fn finish(&mut self, ctx: &WorkerContext) {
        if let Some(id) = &self.sandbox_id {
            let _ = ctx.runtime.stop_pod_sandbox(id).await;
        }
        self.lifecycle = Lifecycle::Finished;
    }

    /// Stops every container with the grace period, then stops and removes the sandbox.
    async fn terminate(&mut self, pod: &Pod, ctx: &WorkerContext) {
        let grace = pod
            .metadata
            .deletion_grace_period_seconds
            .or(pod
                .spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds))
            .unwrap_or(30)
            .max(MIN_GRACE_SECONDS);
        let stops = self
            .containers
            .iter()
            .chain(&self.init)
            .filter(|r| matches!(r.state, CState::Running { .. }))
            .filter_map(|r| r.id.clone())
            .map(|id| {
                let rt = Arc::clone(&ctx.runtime);
                async move {
                    if let Err(err) = rt.stop_container(&id, grace).await
                        && !err.is_not_found()
                    {
                        tracing::warn!(container = %id, ?err, "StopContainer failed");
                    }
                }
            });
        futures::future::join_all(stops).await;
        if let Some(id) = self.sandbox_id.take() {
            if let Err(err) = ctx.runtime.stop_pod_sandbox(&id).await
                && !err.is_not_found()
            {
                tracing::warn!(sandbox = %id, ?err, "StopPodSandbox failed");
                self.sandbox_id = Some(id);
                return;
            }
            if let Err(err) = ctx.runtime.remove_pod_sandbox(&id).await
                && !err.is_not_found()
            {
                tracing::warn!(sandbox = %id, ?err, "RemovePodSandbox failed");
                self.sandbox_id = Some(id);
                return;
            }
        }
        self.remove_stale_sandboxes(pod, ctx).await;
        for rec in self.init.iter_mut().chain(self.containers.iter_mut()) {
            if let Some(id) = &rec.id
                && matches!(rec.state, CState::Running { .. } | CState::Waiting { .. })
            {
                let id = id.clone();
                rec.state = CState::Terminated(Termination {
                    exit_code: 137,
                    reason: "Error".into(),
                    message: None,
                    started_at: None,
                    finished_at: Timestamp::now(),
                    container_id: id,
                });
            }
        }
        crate::cgroups::remove_pod(&ctx.cgroup_parent, &pod_uid(pod));
        self.lifecycle = Lifecycle::Terminated;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cri::fake::FakeRuntime;
    use crate::pods::status::pod_status;

    fn pod(restart: &str, containers: serde_json::Value, init: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "default", "uid": "u1"},
            "spec": {"restartPolicy": restart, "containers": containers, "initContainers": init,
                     "terminationGracePeriodSeconds": 5},
        }))
        .unwrap()
    }

    fn c(name: &str, image: &str) -> serde_json::Value {
        serde_json::json!({"name": name, "image": image, "imagePullPolicy": "IfNotPresent",
                           "env": [{"name": "A", "value": "1"}], "command": ["/bin/sh"], "args": ["-c", "x"]})
    }

    fn ctx(rt: &Arc<FakeRuntime>) -> WorkerContext {
        WorkerContext {
            runtime: Arc::clone(rt) as Arc<dyn Runtime>,
            log_root: std::env::temp_dir().join("rkube-kubelet-unit-logs"),
            cgroup_parent: String::new(),
        }
    }

    fn reason(rec: &ContainerRecord) -> String {
        match &rec.state {
            CState::Waiting { reason, .. } => reason.clone(),
            CState::Running { .. } => "Running".into(),
            CState::Terminated(t) => format!("Terminated({})", t.exit_code),
        }
    }

    #[tokio::test]
    async fn starts_sandbox_then_container_and_reports_running() {
        let rt = Arc::new(FakeRuntime::with_images(&["localhost/busybox:1"]));
        let pod = pod(
            "Always",
            serde_json::json!([c("main", "localhost/busybox:1")]),
            serde_json::json!([]),
        );
        let mut w = PodWorker::new(&pod);
        w.step(&pod, false, &ctx(&rt)).await;
        assert_eq!(w.lifecycle, Lifecycle::Running);
        assert_eq!(reason(&w.containers[0]), "Running");
        let calls = rt.calls();
        assert_eq!(calls[0], "RunPodSandbox(p)");
        assert!(
            calls.contains(&"CreateContainer(main)".to_string()),
            "{calls:?}"
        );
        assert!(
            calls.iter().any(|c| c.starts_with("StartContainer(")),
            "{calls:?}"
        );
        assert!(
            !calls.iter().any(|c| c.starts_with("PullImage")),
            "image present: no pull"
        );
        // The container config carries command, args and env.
        let id = w.containers[0].id.clone().unwrap();
        let config = rt.state.lock().containers[&id].config.clone();
        assert_eq!(config.command, ["/bin/sh"]);
        assert_eq!(config.args, ["-c", "x"]);
        assert_eq!(
            (config.envs[0].key.as_str(), config.envs[0].value.as_str()),
            ("A", "1")
        );
        let status = pod_status(&pod, &w, "192.0.2.1", Timestamp::now());
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert_eq!(status.pod_ip.as_deref(), Some("10.88.0.5"));
        let ready = status
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True");
    }

    #[tokio::test(start_paused = true)]
    async fn missing_image_is_err_image_pull_then_back_off() {
        let rt = Arc::new(FakeRuntime::with_images(&[]));
        let pod = pod(
            "Always",
            serde_json::json!([c("main", "localhost/nope:1")]),
            serde_json::json!([]),
        );
        let mut w = PodWorker::new(&pod);
        let ctx = ctx(&rt);
        w.step(&pod, false, &ctx).await;
        assert_eq!(reason(&w.containers[0]), "ErrImagePull");
        let CState::Waiting { message, .. } = &w.containers[0].state else {
            panic!()
        };
        assert!(
            message.as_deref().unwrap().contains("not found"),
            "the runtime's message"
        );
        w.step(&pod, false, &ctx).await;
        assert_eq!(reason(&w.containers[0]), "ImagePullBackOff");
        let pulls = rt
            .calls()
            .iter()
            .filter(|c| c.starts_with("PullImage"))
            .count();
        assert_eq!(pulls, 1, "no pull during the back-off");
        tokio::time::advance(BACKOFF_INITIAL + Duration::from_millis(1)).await;
        w.step(&pod, false, &ctx).await;
        assert_eq!(reason(&w.containers[0]), "ErrImagePull");
        assert_eq!(
            rt.calls()
                .iter()
                .filter(|c| c.starts_with("PullImage"))
                .count(),
            2
        );
        let status = pod_status(&pod, &w, "192.0.2.1", Timestamp::now());
        assert_eq!(status.phase.as_deref(), Some("Pending"));
    }

    #[tokio::test(start_paused = true)]
    async fn crashing_container_restarts_then_backs_off() {
        let rt = Arc::new(FakeRuntime::with_images(&["localhost/crash:1"]));
        rt.state
            .lock()
            .exit_on_start
            .insert("localhost/crash:1".into(), 1);
        let pod = pod(
            "Always",
            serde_json::json!([c("main", "localhost/crash:1")]),
            serde_json::json!([]),
        );
        let mut w = PodWorker::new(&pod);
        let ctx = ctx(&rt);
        w.step(&pod, false, &ctx).await; // started (exits at once)
        w.step(&pod, false, &ctx).await; // exit seen: first restart is immediate
        assert_eq!(w.containers[0].restart_count, 1);
        w.step(&pod, false, &ctx).await; // second exit: back-off 10 s
        assert_eq!(reason(&w.containers[0]), "CrashLoopBackOff");
        assert_eq!(
            w.containers[0].last_termination.as_ref().unwrap().exit_code,
            1
        );
        w.step(&pod, false, &ctx).await;
        assert_eq!(w.containers[0].restart_count, 1, "still backing off");
        let status = pod_status(&pod, &w, "192.0.2.1", Timestamp::now());
        assert_eq!(status.phase.as_deref(), Some("Running"));
        tokio::time::advance(BACKOFF_INITIAL).await;
        w.step(&pod, false, &ctx).await;
        assert_eq!(w.containers[0].restart_count, 2);
        w.step(&pod, false, &ctx).await; // exit again: back-off doubles
        assert_eq!(reason(&w.containers[0]), "CrashLoopBackOff");
        tokio::time::advance(BACKOFF_INITIAL).await;
        w.step(&pod, false, &ctx).await;
        assert_eq!(w.containers[0].restart_count, 2, "20 s now");
        tokio::time::advance(BACKOFF_INITIAL).await;
        w.step(&pod, false, &ctx).await;
        assert_eq!(w.containers[0].restart_count, 3);
        // Only the latest run's container is kept.
        assert_eq!(rt.containers_named("main").len(), 1);
    }

    #[tokio::test]
    async fn init_containers_run_first_in_order() {
        let rt = Arc::new(FakeRuntime::with_images(&[
            "localhost/init:1",
            "localhost/busybox:1",
        ]));
        rt.state
            .lock()
            .exit_on_start
            .insert("localhost/init:1".into(), 0);
        let pod = pod(
            "Always",
            serde_json::json!([c("main", "localhost/busybox:1")]),
            serde_json::json!([c("one", "localhost/init:1"), c("two", "localhost/init:1")]),
        );
        let mut w = PodWorker::new(&pod);
        let ctx = ctx(&rt);
        w.step(&pod, false, &ctx).await;
        assert_eq!(reason(&w.containers[0]), "PodInitializing");
        let status = pod_status(&pod, &w, "192.0.2.1", Timestamp::now());
        assert_eq!(status.phase.as_deref(), Some("Pending"));
        for _ in 0..3 {
            w.step(&pod, false, &ctx).await;
        }
        let creates: Vec<String> = rt
            .calls()
            .into_iter()
            .filter(|c| c.starts_with("CreateContainer"))
            .collect();
        assert_eq!(
            creates,
            [
                "CreateContainer(one)",
                "CreateContainer(two)",
                "CreateContainer(main)"
            ]
        );
        assert_eq!(reason(&w.containers[0]), "Running");
        let status = pod_status(&pod, &w, "192.0.2.1", Timestamp::now());
        let init = status
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Initialized")
            .unwrap();
        assert_eq!(init.status, "True");
    }

    #[tokio::test]
    async fn never_policy_finishes_with_succeeded() {
        let rt = Arc::new(FakeRuntime::with_images(&["localhost/ok:1"]));
        rt.state
            .lock()
            .exit_on_start
            .insert("localhost/ok:1".into(), 0);
        let pod = pod(
            "Never",
            serde_json::json!([c("main", "localhost/ok:1")]),
            serde_json::json!([]),
        );
        let mut w = PodWorker::new(&pod);
        let ctx = ctx(&rt);
        w.step(&pod, false, &ctx).await;
        w.step(&pod, false, &ctx).await;
        assert_eq!(w.lifecycle, Lifecycle::Finished);
        assert_eq!(w.containers[0].restart_count, 0);
        let status = pod_status(&pod, &w, "192.0.2.1", Timestamp::now());
        assert_eq!(status.phase.as_deref(), Some("Succeeded"));
        assert!(rt.calls().iter().any(|c| c.starts_with("StopPodSandbox")));
    }

    #[tokio::test]
    async fn deletion_stops_with_grace_and_removes_the_sandbox() {
        let rt = Arc::new(FakeRuntime::with_images(&["localhost/busybox:1"]));
        let mut pod = pod(
            "Always",
            serde_json::json!([c("main", "localhost/busybox:1")]),
            serde_json::json!([]),
        );
        let mut w = PodWorker::new(&pod);
        let ctx = ctx(&rt);
        w.step(&pod, false, &ctx).await;
        let id = w.containers[0].id.clone().unwrap();
        pod.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::now()),
        );
        pod.metadata.deletion_grace_period_seconds = Some(7);
        w.step(&pod, false, &ctx).await;
        assert_eq!(w.lifecycle, Lifecycle::Terminated);
        let calls = rt.calls();
        let stop = calls
            .iter()
            .position(|c| *c == format!("StopContainer({id},7)"))
            .expect("graceful stop");
        let sb = calls
            .iter()
            .position(|c| c.starts_with("StopPodSandbox"))
            .unwrap();
        let rm = calls
            .iter()
            .position(|c| c.starts_with("RemovePodSandbox"))
            .unwrap();
        assert!(stop < sb && sb < rm, "{calls:?}");
        assert!(rt.state.lock().sandboxes.is_empty());
    }

    #[test]
    fn pull_policy_defaults_like_upstream() {
        let c = |image: &str| Container {
            name: "c".into(),
            image: Some(image.into()),
            ..Container::default()
        };
        assert_eq!(pull_policy(&c("localhost/busybox:1")), "IfNotPresent");
        assert_eq!(pull_policy(&c("localhost/busybox")), "Always");
        assert_eq!(pull_policy(&c("busybox:latest")), "Always");
        assert_eq!(pull_policy(&c("localhost:5000/busybox")), "Always");
        assert_eq!(next_backoff(None), BACKOFF_INITIAL);
        assert_eq!(next_backoff(Some(Duration::from_secs(160))), BACKOFF_MAX);
    }
}
