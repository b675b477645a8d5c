//! The container runtime interface: every call the agent makes to containerd goes through
//! the [`Runtime`] trait, implemented by [`RemoteRuntime`] (CRI v1 over a unix socket, with
//! the `k8s-cri` generated client) and by [`fake::FakeRuntime`] (records calls, for tests).
//!
//! The trait speaks the CRI v1 message types themselves (`k8s_cri::v1`), so the fake sees
//! exactly what containerd would.

pub mod fake;

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint, Uri};

pub use k8s_cri::v1;

/// Errors of runtime calls.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The socket could not be reached.
    #[error("cannot connect to the container runtime at {path}")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
    /// A CRI call failed.
    #[error("CRI {call} failed: {}", .status.message())]
    Call {
        /// The RPC.
        call: &'static str,
        /// The runtime's status (its message is what users see).
        #[source]
        status: Box<tonic::Status>,
    },
}

impl Error {
    /// The runtime's own message (what upstream shows in container status).
    pub fn message(&self) -> String {
        match self {
            Error::Connect { .. } => self.to_string(),
            Error::Call { status, .. } => status.message().to_string(),
        }
    }

    /// Whether the runtime said the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Call { status, .. } if status.code() == tonic::Code::NotFound)
    }
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The CRI calls the agent uses (runtime and image services).
#[async_trait::async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// `Version`.
    async fn version(&self) -> Result<cri::VersionResponse>;
    /// `RunPodSandbox`: returns the sandbox ID.
    async fn run_pod_sandbox(&self, config: cri::PodSandboxConfig) -> Result<String>;
    /// `StopPodSandbox`.
    async fn stop_pod_sandbox(&self, id: &str) -> Result<()>;
    /// `RemovePodSandbox`.
    async fn remove_pod_sandbox(&self, id: &str) -> Result<()>;
    /// `PodSandboxStatus`.
    async fn pod_sandbox_status(&self, id: &str) -> Result<Option<cri::PodSandboxStatus>>;
    /// `ListPodSandbox`.
    async fn list_pod_sandbox(
        &self,
        filter: Option<cri::PodSandboxFilter>,
    ) -> Result<Vec<cri::PodSandbox>>;
    /// `CreateContainer`: returns the container ID.
    async fn create_container(
        &self,
        sandbox_id: &str,
        config: cri::ContainerConfig,
        sandbox: cri::PodSandboxConfig,
    ) -> Result<String>;
    /// `StartContainer`.
    async fn start_container(&self, id: &str) -> Result<()>;
    /// `StopContainer` with a grace period in seconds (SIGTERM, then SIGKILL).
    async fn stop_container(&self, id: &str, timeout: i64) -> Result<()>;
    /// `RemoveContainer`.
    async fn remove_container(&self, id: &str) -> Result<()>;
    /// `ListContainers`.
    async fn list_containers(
        &self,
        filter: Option<cri::ContainerFilter>,
    ) -> Result<Vec<cri::Container>>;
    /// `ContainerStatus`.
    async fn container_status(&self, id: &str) -> Result<Option<cri::ContainerStatus>>;
    /// `ImageStatus`: the image if present.
    async fn image_status(&self, image: &str) -> Result<Option<cri::Image>>;
    /// `PullImage`: returns the image reference.
    async fn pull_image(&self, image: &str, sandbox: cri::PodSandboxConfig) -> Result<String>;
}

/// CRI v1 over a unix socket.
#[derive(Debug, Clone)]
pub struct RemoteRuntime {
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
}

/// Strips `unix://` from an endpoint.
pub fn socket_path(endpoint: &str) -> PathBuf {
    PathBuf::from(endpoint.strip_prefix("unix://").unwrap_or(endpoint))
}

impl RemoteRuntime {
    /// Connects to the socket at `path`.
    pub async fn connect(path: &Path) -> Result<RemoteRuntime> {
        let socket = path.to_path_buf();
        let channel = Endpoint::from_static("http://[::1]:50051")
            .connect_timeout(Duration::from_secs(5))
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let socket = socket.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(socket).await?,
                    ))
                }
            }))
            .await
            .map_err(|source| Error::Connect {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(RemoteRuntime {
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
        })
    }
}

fn call(name: &'static str) -> impl FnOnce(tonic::Status) -> Error {
    move |status| Error::Call {
        call: name,
        status: Box::new(status),
    }
}

#[async_trait::async_trait]
impl Runtime for RemoteRuntime {
    async fn version(&self) -> Result<cri::VersionResponse> {
        let r = self
            .runtime
            .clone()
            .version(cri::VersionRequest {
                version: "v1".into(),
            })
            .await
            .map_err(call("Version"))?;
        Ok(r.into_inner())
    }

    async fn run_pod_sandbox(&self, config: cri::PodSandboxConfig) -> Result<String> {
        let r = self
            .runtime
            .clone()
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            })
            .await
            .map_err(call("RunPodSandbox"))?;
        Ok(r.into_inner().pod_sandbox_id)
    }

    async fn stop_pod_sandbox(&self, id: &str) -> Result<()> {
        self.runtime
            .clone()
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: id.into(),
            })
            .await
            .map_err(call("StopPodSandbox"))?;
        Ok(())
    }

    async fn remove_pod_sandbox(&self, id: &str) -> Result<()> {
        self.runtime
            .clone()
            .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: id.into(),
            })
            .await
            .map_err(call("RemovePodSandbox"))?;
        Ok(())
    }

    async fn pod_sandbox_status(&self, id: &str) -> Result<Option<cri::PodSandboxStatus>> {
        let r = self
            .runtime
            .clone()
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: id.into(),
                verbose: false,
            })
            .await
            .map_err(call("PodSandboxStatus"))?;
        Ok(r.into_inner().status)
    }

    async fn list_pod_sandbox(
        &self,
        filter: Option<cri::PodSandboxFilter>,
    ) -> Result<Vec<cri::PodSandbox>> {
        let r = self
            .runtime
            .clone()
            .list_pod_sandbox(cri::ListPodSandboxRequest { filter })
            .await
            .map_err(call("ListPodSandbox"))?;
        Ok(r.into_inner().items)
    }

    async fn create_container(
        &self,
        sandbox_id: &str,
        config: cri::ContainerConfig,
        sandbox: cri::PodSandboxConfig,
    ) -> Result<String> {
        let r = self
            .runtime
            .clone()
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: sandbox_id.into(),
                config: Some(config),
                sandbox_config: Some(sandbox),
            })
            .await
            .map_err(call("CreateContainer"))?;
        Ok(r.into_inner().container_id)
    }

    async fn start_container(&self, id: &str) -> Result<()> {
        self.runtime
            .clone()
            .start_container(cri::StartContainerRequest {
                container_id: id.into(),
            })
            .await
            .map_err(call("StartContainer"))?;
        Ok(())
    }

    async fn stop_container(&self, id: &str, timeout: i64) -> Result<()> {
        self.runtime
            .clone()
            .stop_container(cri::StopContainerRequest {
                container_id: id.into(),
                timeout,
            })
            .await
            .map_err(call("StopContainer"))?;
        Ok(())
    }

    async fn remove_container(&self, id: &str) -> Result<()> {
        self.runtime
            .clone()
            .remove_container(cri::RemoveContainerRequest {
                container_id: id.into(),
            })
            .await
            .map_err(call("RemoveContainer"))?;
        Ok(())
    }

    async fn list_containers(
        &self,
        filter: Option<cri::ContainerFilter>,
    ) -> Result<Vec<cri::Container>> {
        let r = self
            .runtime
            .clone()
            .list_containers(cri::ListContainersRequest { filter })
            .await
            .map_err(call("ListContainers"))?;
        Ok(r.into_inner().containers)
    }

    async fn container_status(&self, id: &str) -> Result<Option<cri::ContainerStatus>> {
        let r = self
            .runtime
            .clone()
            .container_status(cri::ContainerStatusRequest {
                container_id: id.into(),
                verbose: false,
            })
            .await
            .map_err(call("ContainerStatus"))?;
        Ok(r.into_inner().status)
    }

    async fn image_status(&self, image: &str) -> Result<Option<cri::Image>> {
        let r = self
            .images
            .clone()
            .image_status(cri::ImageStatusRequest {
                image: Some(image_spec(image)),
                verbose: false,
            })
            .await
            .map_err(call("ImageStatus"))?;
        Ok(r.into_inner().image)
    }

    async fn pull_image(&self, image: &str, sandbox: cri::PodSandboxConfig) -> Result<String> {
        let r = self
            .images
            .clone()
            .pull_image(cri::PullImageRequest {
                image: Some(image_spec(image)),
                auth: None,
                sandbox_config: Some(sandbox),
            })
            .await
            .map_err(call("PullImage"))?;
        Ok(r.into_inner().image_ref)
    }
}

/// An image reference as CRI wants it.
pub fn image_spec(image: &str) -> cri::ImageSpec {
    cri::ImageSpec {
        image: image.into(),
        ..Default::default()
    }
}

/// Waits until the socket at `path` answers `Version`, for at most `timeout`.
pub async fn wait_ready(path: &Path, timeout: Duration) -> Result<RemoteRuntime> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let attempt = async {
            let rt = RemoteRuntime::connect(path).await?;
            rt.version().await?;
            Ok::<_, Error>(rt)
        }
        .await;
        match attempt {
            Ok(rt) => return Ok(rt),
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
