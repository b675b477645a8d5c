//! A recording fake [`Runtime`]: keeps sandboxes, containers and images in memory and logs
//! every call, so pod sync can be tested without containerd.

use std::collections::{BTreeMap, BTreeSet};

use k8s_cri::v1 as cri;
use parking_lot::Mutex;

use super::{Error, Result, Runtime};

/// One fake container.
#[derive(Debug, Clone)]
pub struct FakeContainer {
    /// Its sandbox.
    pub sandbox: String,
    /// Its config.
    pub config: cri::ContainerConfig,
    /// CRI state.
    pub state: cri::ContainerState,
    /// Exit code once exited.
    pub exit_code: i32,
    /// Start time in ns.
    pub started_at: i64,
    /// Finish time in ns.
    pub finished_at: i64,
}

/// The fake's state.
#[derive(Debug, Default)]
pub struct FakeState {
    /// Every call, like `RunPodSandbox(name)`, in order.
    pub calls: Vec<String>,
    /// Sandboxes: id -> (config, ready).
    pub sandboxes: BTreeMap<String, (cri::PodSandboxConfig, bool)>,
    /// Containers by id.
    pub containers: BTreeMap<String, FakeContainer>,
    /// Images present.
    pub images: BTreeSet<String>,
    /// Exit code containers of an image get when they start: they exit at once.
    pub exit_on_start: BTreeMap<String, i32>,
    next: u64,
}

/// A recording fake runtime.
#[derive(Debug, Default)]
pub struct FakeRuntime {
    /// Everything it knows.
    pub state: Mutex<FakeState>,
}

impl FakeRuntime {
    /// A fake with these images present.
    pub fn with_images(images: &[&str]) -> FakeRuntime {
        let rt = FakeRuntime::default();
        rt.state.lock().images = images.iter().map(|s| s.to_string()).collect();
        rt
    }

    /// The calls so far.
    pub fn calls(&self) -> Vec<String> {
        self.state.lock().calls.clone()
    }

    /// Makes container `id` exit with `code`.
    pub fn exit(&self, id: &str, code: i32) {
        let mut s = self.state.lock();
        if let Some(c) = s.containers.get_mut(id) {
            c.state = cri::ContainerState::ContainerExited;
            c.exit_code = code;
            c.finished_at = now_ns();
        }
    }

    /// IDs of containers named `name`, oldest first.
    pub fn containers_named(&self, name: &str) -> Vec<String> {
        self.state
            .lock()
            .containers
            .iter()
            .filter(|(_, c)| c.config.metadata.as_ref().is_some_and(|m| m.name == name))
            .map(|(id, _)| id.clone())
            .collect()
    }
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

fn not_found(call: &'static str, what: &str) -> Error {
    Error::Call {
        call,
        status: Box::new(tonic::Status::not_found(format!("{what} not found"))),
    }
}

#[async_trait::async_trait]
impl Runtime for FakeRuntime {
    async fn version(&self) -> Result<cri::VersionResponse> {
        self.state.lock().calls.push("Version".into());
        Ok(cri::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: "fake".into(),
            runtime_version: "1.0".into(),
            runtime_api_version: "v1".into(),
        })
    }

    async fn run_pod_sandbox(&self, config: cri::PodSandboxConfig) -> Result<String> {
        let mut s = self.state.lock();
        let name = config.metadata.as_ref().map_or("", |m| &m.name).to_string();
        s.calls.push(format!("RunPodSandbox({name})"));
        s.next += 1;
        let id = format!("sandbox-{}", s.next);
        s.sandboxes.insert(id.clone(), (config, true));
        Ok(id)
    }

    async fn stop_pod_sandbox(&self, id: &str) -> Result<()> {
        let mut s = self.state.lock();
        s.calls.push(format!("StopPodSandbox({id})"));
        if let Some(sb) = s.sandboxes.get_mut(id) {
            sb.1 = false;
        }
        for c in s.containers.values_mut().filter(|c| c.sandbox == id) {
            if c.state == cri::ContainerState::ContainerRunning {
                c.state = cri::ContainerState::ContainerExited;
                c.exit_code = 137;
                c.finished_at = now_ns();
            }
        }
        Ok(())
    }

    async fn remove_pod_sandbox(&self, id: &str) -> Result<()> {
        let mut s = self.state.lock();
        s.calls.push(format!("RemovePodSandbox({id})"));
        s.sandboxes.remove(id);
        s.containers.retain(|_, c| c.sandbox != id);
        Ok(())
    }

    async fn pod_sandbox_status(&self, id: &str) -> Result<Option<cri::PodSandboxStatus>> {
        let s = self.state.lock();
        let (config, ready) = s
            .sandboxes
            .get(id)
            .ok_or_else(|| not_found("PodSandboxStatus", id))?;
        Ok(Some(cri::PodSandboxStatus {
            id: id.into(),
            metadata: config.metadata.clone(),
            state: if *ready {
                cri::PodSandboxState::SandboxReady
            } else {
                cri::PodSandboxState::SandboxNotready
            } as i32,
            network: Some(cri::PodSandboxNetworkStatus {
                ip: "10.88.0.5".into(),
                additional_ips: vec![],
            }),
            ..Default::default()
        }))
    }

    async fn list_pod_sandbox(
        &self,
        _filter: Option<cri::PodSandboxFilter>,
    ) -> Result<Vec<cri::PodSandbox>> {
        let s = self.state.lock();
        Ok(s.sandboxes
            .iter()
            .map(|(id, (config, ready))| cri::PodSandbox {
                id: id.clone(),
                metadata: config.metadata.clone(),
                state: if *ready {
                    cri::PodSandboxState::SandboxReady
                } else {
                    cri::PodSandboxState::SandboxNotready
                } as i32,
                labels: config.labels.clone(),
                ..Default::default()
            })
            .collect())
    }

    async fn create_container(
        &self,
        sandbox_id: &str,
        config: cri::ContainerConfig,
        _sandbox: cri::PodSandboxConfig,
    ) -> Result<String> {
        let mut s = self.state.lock();
        let name = config.metadata.as_ref().map_or("", |m| &m.name).to_string();
        s.calls.push(format!("CreateContainer({name})"));
        if !s.sandboxes.contains_key(sandbox_id) {
            return Err(not_found("CreateContainer", sandbox_id));
        }
        s.next += 1;
        let id = format!("{name}-{}", s.next);
        s.containers.insert(
            id.clone(),
            FakeContainer {
                sandbox: sandbox_id.into(),
                config,
                state: cri::ContainerState::ContainerCreated,
                exit_code: 0,
                started_at: 0,
                finished_at: 0,
            },
        );
        Ok(id)
    }

    async fn start_container(&self, id: &str) -> Result<()> {
        let mut s = self.state.lock();
        s.calls.push(format!("StartContainer({id})"));
        let exit = {
            let c = s
                .containers
                .get(id)
                .ok_or_else(|| not_found("StartContainer", id))?;
            let image = c.config.image.as_ref().map_or("", |i| &i.image);
            s.exit_on_start.get(image).copied()
        };
        let c = s.containers.get_mut(id).expect("checked");
        c.started_at = now_ns();
        match exit {
            Some(code) => {
                c.state = cri::ContainerState::ContainerExited;
                c.exit_code = code;
                c.finished_at = now_ns();
            }
            None => c.state = cri::ContainerState::ContainerRunning,
        }
        Ok(())
    }

    async fn stop_container(&self, id: &str, timeout: i64) -> Result<()> {
        let mut s = self.state.lock();
        s.calls.push(format!("StopContainer({id},{timeout})"));
        let c = s
            .containers
            .get_mut(id)
            .ok_or_else(|| not_found("StopContainer", id))?;
        if c.state == cri::ContainerState::ContainerRunning {
            c.state = cri::ContainerState::ContainerExited;
            c.exit_code = 143;
            c.finished_at = now_ns();
        }
        Ok(())
    }

    async fn remove_container(&self, id: &str) -> Result<()> {
        let mut s = self.state.lock();
        s.calls.push(format!("RemoveContainer({id})"));
        s.containers.remove(id);
        Ok(())
    }

    async fn list_containers(
        &self,
        _filter: Option<cri::ContainerFilter>,
    ) -> Result<Vec<cri::Container>> {
        let s = self.state.lock();
        Ok(s.containers
            .iter()
            .map(|(id, c)| cri::Container {
                id: id.clone(),
                pod_sandbox_id: c.sandbox.clone(),
                metadata: c.config.metadata.clone(),
                state: c.state as i32,
                labels: c.config.labels.clone(),
                ..Default::default()
            })
            .collect())
    }

    async fn container_status(&self, id: &str) -> Result<Option<cri::ContainerStatus>> {
        let s = self.state.lock();
        let c = s
            .containers
            .get(id)
            .ok_or_else(|| not_found("ContainerStatus", id))?;
        let image = c.config.image.as_ref().map_or("", |i| &i.image).to_string();
        Ok(Some(cri::ContainerStatus {
            id: id.into(),
            metadata: c.config.metadata.clone(),
            state: c.state as i32,
            started_at: c.started_at,
            finished_at: c.finished_at,
            exit_code: c.exit_code,
            image: Some(super::image_spec(&image)),
            image_ref: format!("sha256:{image}"),
            reason: if c.state == cri::ContainerState::ContainerExited {
                if c.exit_code == 0 {
                    "Completed"
                } else {
                    "Error"
                }
                .into()
            } else {
                String::new()
            },
            ..Default::default()
        }))
    }

    async fn image_status(&self, image: &str) -> Result<Option<cri::Image>> {
        let mut s = self.state.lock();
        s.calls.push(format!("ImageStatus({image})"));
        Ok(s.images.contains(image).then(|| cri::Image {
            id: format!("sha256:{image}"),
            repo_tags: vec![image.into()],
            ..Default::default()
        }))
    }

    async fn pull_image(&self, image: &str, _sandbox: cri::PodSandboxConfig) -> Result<String> {
        let mut s = self.state.lock();
        s.calls.push(format!("PullImage({image})"));
        if s.images.contains(image) {
            Ok(format!("sha256:{image}"))
        } else {
            Err(Error::Call {
                call: "PullImage",
                status: Box::new(tonic::Status::unknown(format!(
                    "failed to pull and unpack image \"{image}\": not found"
                ))),
            })
        }
    }
}
