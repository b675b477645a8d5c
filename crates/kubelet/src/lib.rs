//! The rkube node agent (kubelet): registers its Node, keeps its Lease fresh and runs the
//! pods bound to it through CRI on containerd, with a CNI bridge network.
//!
//! Start at [`run`]. Areas, one module each:
//! - [`containerd`]: the agent's own containerd (generated config, supervised process);
//! - [`cri`]: every runtime call, behind the [`cri::Runtime`] trait (real and fake);
//! - [`cni`]: the bridge + host-local conflist for the node's pod CIDR;
//! - [`image`]: OCI image tarballs built from directories, and their import;
//! - [`node`]: Node registration and the Lease heartbeat;
//! - [`pods`]: pod sync, with the per-pod state machine in [`pods::lifecycle`];
//! - [`resources`]: requests and limits as CRI (cgroup) resources;
//! - [`cgroups`]: pod cgroup clean-up.

pub mod cgroups;
pub mod cni;
pub mod containerd;
pub mod cri;
pub mod image;
pub mod node;
pub mod pods;
pub mod resources;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kube::Client;

/// Errors that stop the agent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Starting containerd failed.
    #[error("cannot start containerd")]
    Containerd(#[from] containerd::Error),
    /// The runtime endpoint is not usable.
    #[error("cannot use the container runtime")]
    Runtime(#[from] cri::Error),
    /// Importing the images dir failed.
    #[error("cannot import images")]
    Image(#[from] image::Error),
    /// Node registration failed.
    #[error("cannot register the node")]
    Node(#[from] node::Error),
    /// The CNI config could not be written.
    #[error("cannot write the CNI config to {path}")]
    Cni {
        /// The dir.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A setting is invalid.
    #[error("invalid agent setting: {0}")]
    Invalid(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Agent settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The Node's name.
    pub node_name: String,
    /// The node's InternalIP (None: the first global IPv4 address, else 127.0.0.1).
    pub node_ip: Option<String>,
    /// Agent state lives in `<data_dir>/agent`, a supervised containerd in
    /// `<data_dir>/containerd`.
    pub data_dir: PathBuf,
    /// An existing CRI socket (`unix:///run/containerd/containerd.sock`); None starts the
    /// agent's own containerd.
    pub container_runtime_endpoint: Option<String>,
    /// Pod CIDR used when the Node gets no `spec.podCIDR` within `pod_cidr_wait`.
    pub pod_cidr: String,
    /// How long to wait for the node IPAM controller's `spec.podCIDR`.
    pub pod_cidr_wait: Duration,
    /// The CNI bridge.
    pub cni_bridge: String,
    /// CNI plugin binaries.
    pub cni_bin_dir: PathBuf,
    /// Pods' cgroups go under `<cgroup_parent>/pod<uid>` (empty: containerd's default).
    pub cgroup_parent: String,
    /// The sandbox (pause) image.
    pub sandbox_image: String,
}

impl Config {
    /// Defaults for `node_name` with state under `data_dir`.
    pub fn new(node_name: impl Into<String>, data_dir: impl Into<PathBuf>) -> Config {
        Config {
            node_name: node_name.into(),
            node_ip: None,
            data_dir: data_dir.into(),
            container_runtime_endpoint: None,
            pod_cidr: "10.42.0.0/24".into(),
            pod_cidr_wait: Duration::from_secs(5),
            cni_bridge: "rkube0".into(),
            cni_bin_dir: "/usr/lib/cni".into(),
            cgroup_parent: "/rkube".into(),
            sandbox_image: image::PAUSE_IMAGE.into(),
        }
    }

    /// `<data_dir>/agent`.
    pub fn agent_dir(&self) -> PathBuf {
        self.data_dir.join("agent")
    }

    /// Image tarballs imported at start-up.
    pub fn images_dir(&self) -> PathBuf {
        self.agent_dir().join("images")
    }

    /// The CNI config dir.
    pub fn cni_conf_dir(&self) -> PathBuf {
        self.agent_dir().join("cni/net.d")
    }
}

/// The first global IPv4 address (`ip -o -4 addr show scope global`), if any.
pub async fn detect_node_ip() -> Option<String> {
    let out = tokio::process::Command::new("ip")
        .args(["-o", "-4", "addr", "show", "scope", "global"])
        .output()
        .await
        .ok()?;
    parse_ip_addr(&String::from_utf8_lossy(&out.stdout))
}

/// The first `inet A.B.C.D/N` in `ip -o addr` output.
pub fn parse_ip_addr(text: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let mut words = l.split_whitespace();
        words.find(|w| *w == "inet")?;
        words.next()?.split('/').next().map(str::to_string)
    })
}

/// Runs the agent until `stop` completes: containerd, images, Node and Lease, CNI, pods.
pub async fn run(
    client: Client,
    config: Config,
    stop: impl Future<Output = ()> + Send,
) -> Result<()> {
    cni::validate_bridge(&config.cni_bridge).map_err(Error::Invalid)?;
    let agent_dir = config.agent_dir();
    for d in [
        agent_dir.clone(),
        config.images_dir(),
        config.cni_conf_dir(),
    ] {
        std::fs::create_dir_all(&d).map_err(|source| Error::Cni {
            path: d.clone(),
            source,
        })?;
    }
    let (supervised, runtime, socket) = match &config.container_runtime_endpoint {
        Some(endpoint) => {
            let socket = cri::socket_path(endpoint);
            let rt = cri::wait_ready(&socket, Duration::from_secs(10)).await?;
            (None, rt, socket)
        }
        None => {
            let layout = containerd::Layout {
                dir: config.data_dir.join("containerd"),
                cni_conf_dir: config.cni_conf_dir(),
                cni_bin_dir: config.cni_bin_dir.clone(),
                sandbox_image: config.sandbox_image.clone(),
            };
            let socket = layout.socket();
            let (c, rt) = containerd::Containerd::start(layout, Duration::from_secs(20)).await?;
            (Some(c), rt, socket)
        }
    };
    let result = run_with(client, &config, runtime, &socket, stop).await;
    if let Some(c) = supervised {
        c.stop(Duration::from_secs(3)).await;
    }
    result
}

/// Builds `busybox.tar` and `pause.tar` into the images dir from the host's static busybox
/// when they are missing (and the default sandbox image is in use), so a fresh node runs pods
/// without a registry.
fn ensure_builtin_images(config: &Config) {
    let busybox = std::path::Path::new(image::HOST_BUSYBOX);
    if !busybox.exists() {
        return;
    }
    let dir = config.images_dir();
    if config.sandbox_image == image::PAUSE_IMAGE && !dir.join("pause.tar").exists() {
        match image::build_pause(image::PAUSE_IMAGE, busybox, &dir.join("pause.tar")) {
            Ok(_) => tracing::info!(image = image::PAUSE_IMAGE, "built the sandbox image"),
            Err(err) => tracing::warn!(?err, "cannot build the sandbox image"),
        }
    }
    if !dir.join("busybox.tar").exists() {
        match image::build_busybox(image::BUSYBOX_IMAGE, busybox, &dir.join("busybox.tar")) {
            Ok(_) => tracing::info!(image = image::BUSYBOX_IMAGE, "built the busybox image"),
            Err(err) => tracing::warn!(?err, "cannot build the busybox image"),
        }
    }
}

async fn run_with(
    client: Client,
    config: &Config,
    runtime: cri::RemoteRuntime,
    socket: &std::path::Path,
    stop: impl Future<Output = ()> + Send,
) -> Result<()> {
    use cri::Runtime;
    let started = tokio::time::Instant::now();
    ensure_builtin_images(config);
    let imported = image::import_dir(socket, &config.images_dir()).await?;
    tracing::info!(count = imported.len(), elapsed = ?started.elapsed(), "imported images");
    let version = runtime.version().await?;
    let runtime_version = format!("{}://{}", version.runtime_name, version.runtime_version);
    let host = node::HostInfo::read(runtime_version);
    let node_ip = match &config.node_ip {
        Some(ip) => ip.clone(),
        None => detect_node_ip().await.unwrap_or_else(|| "127.0.0.1".into()),
    };
    let since = k8s_openapi::jiff::Timestamp::now();
    let node = node::node_object(&config.node_name, &node_ip, &host, since);
    let uid = node::register(&client, &node).await?;
    tracing::info!(node = %config.node_name, ip = %node_ip, "node registered");
    let (hb_tx, hb_rx) = tokio::sync::oneshot::channel::<()>();
    let hb = node::Heartbeat {
        name: config.node_name.clone(),
        uid,
        ip: node_ip.clone(),
        host,
        since,
    };
    let heartbeat = tokio::spawn(node::heartbeat(client.clone(), hb, async move {
        let _ = hb_rx.await;
    }));
    let pod_cidr = match node::wait_pod_cidr(&client, &config.node_name, config.pod_cidr_wait).await
    {
        Some(cidr) => cidr,
        None => {
            tracing::info!(fallback = %config.pod_cidr, "node has no spec.podCIDR; using the fallback");
            config.pod_cidr.clone()
        }
    };
    let net = cni::NetworkConfig {
        bridge: config.cni_bridge.clone(),
        pod_cidr: pod_cidr.clone(),
        ipam_dir: config.agent_dir().join("cni/ipam"),
    };
    let conf_dir = config.cni_conf_dir();
    cni::write(&conf_dir, &net).map_err(|source| Error::Cni {
        path: conf_dir.clone(),
        source,
    })?;
    tracing::info!(%pod_cidr, bridge = %config.cni_bridge, "pod network configured");
    let ctx = pods::SyncContext {
        client,
        node_name: config.node_name.clone(),
        host_ip: node_ip,
        worker: pods::lifecycle::WorkerContext {
            runtime: Arc::new(runtime),
            log_root: config.agent_dir().join("pods"),
            cgroup_parent: config.cgroup_parent.clone(),
        },
    };
    pods::run(ctx, stop).await;
    let _ = hb_tx.send(());
    let _ = heartbeat.await;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn node_ip_from_ip_addr_output() {
        let text = "2: eth0    inet 192.0.2.5/24 brd 192.0.2.255 scope global eth0\\       valid_lft forever";
        assert_eq!(super::parse_ip_addr(text).as_deref(), Some("192.0.2.5"));
        assert_eq!(super::parse_ip_addr(""), None);
    }
}
