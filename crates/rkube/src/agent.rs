//! `rkube agent`: the node agent (kubelet) alone, joined to a cluster by URL and token or a
//! kubeconfig; `rkube server` runs the same agent in-process unless `--disable-agent`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Args;

/// Node agent settings shared by `rkube server` and `rkube agent`.
#[derive(Args, Debug, Clone)]
pub(crate) struct NodeArgs {
    /// Name of this node (default: the host name).
    #[arg(long, value_name = "NAME")]
    pub(crate) node_name: Option<String>,

    /// IP address the node reports as InternalIP (default: the first global IPv4 address).
    #[arg(long, value_name = "IP")]
    pub(crate) node_ip: Option<String>,

    /// Use this CRI socket (e.g. unix:///run/containerd/containerd.sock) instead of starting
    /// containerd under <data-dir>/containerd.
    #[arg(long, value_name = "ENDPOINT")]
    pub(crate) container_runtime_endpoint: Option<String>,

    /// Pod CIDR used when the node gets no spec.podCIDR from the node IPAM controller
    /// within --pod-cidr-wait.
    #[arg(long, default_value = "10.42.0.0/24", value_name = "CIDR")]
    pub(crate) pod_cidr: String,

    /// How long to wait for the node's spec.podCIDR, e.g. 5s.
    #[arg(long, default_value = "5s", value_name = "DURATION", value_parser = crate::server::parse_duration)]
    pub(crate) pod_cidr_wait: Duration,

    /// Name of the Linux bridge for pods (at most 15 characters).
    #[arg(long, default_value = "rkube0", value_name = "NAME")]
    pub(crate) cni_bridge: String,

    /// Directory of the CNI plugin binaries (Debian's containernetworking-plugins).
    #[arg(long, default_value = "/usr/lib/cni", value_name = "DIR")]
    pub(crate) cni_bin_dir: PathBuf,

    /// Parent cgroup of pod cgroups (<parent>/pod<uid>, cgroupfs driver).
    #[arg(long, default_value = "/rkube", value_name = "PATH")]
    pub(crate) cgroup_parent: String,

    /// Sandbox (pause) image. Every *.tar in <data-dir>/agent/images is imported at
    /// start-up; localhost/pause:1 and localhost/busybox:1 are built there from
    /// /bin/busybox (busybox-static) when missing (see `rkube image`).
    #[arg(long, default_value = rkube_kubelet::image::PAUSE_IMAGE, value_name = "IMAGE")]
    pub(crate) pause_image: String,
}

/// Flags of `rkube agent`.
#[derive(Args, Debug, Clone)]
pub(crate) struct AgentArgs {
    /// API server URL, e.g. https://10.0.0.1:6443 (with --token).
    #[arg(
        long,
        value_name = "URL",
        requires = "token",
        conflicts_with = "kubeconfig"
    )]
    pub(crate) server: Option<String>,

    /// Bearer token for --server (a line of the server's --token-auth-file).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "RKUBE_TOKEN",
        hide_env_values = true
    )]
    pub(crate) token: Option<String>,

    /// CA certificate of the API server for --server (the server's <data-dir>/tls/ca.crt);
    /// without it the server certificate is not verified.
    #[arg(long, value_name = "PATH")]
    pub(crate) ca_file: Option<PathBuf>,

    /// Kubeconfig of the cluster instead of --server/--token.
    #[arg(long, value_name = "PATH")]
    pub(crate) kubeconfig: Option<PathBuf>,

    /// Directory for agent state (images, CNI config, logs) and its containerd.
    #[arg(long, default_value = "/var/lib/rkube", value_name = "DIR")]
    pub(crate) data_dir: PathBuf,

    #[command(flatten)]
    pub(crate) node: NodeArgs,
}

/// The kubelet configuration for these flags, with state under `data_dir`.
pub(crate) fn config(args: &NodeArgs, data_dir: &Path) -> rkube_kubelet::Config {
    let node_name = args
        .node_name
        .clone()
        .unwrap_or_else(rkube_component::hostname);
    let mut config = rkube_kubelet::Config::new(node_name, data_dir);
    config.node_ip = args.node_ip.clone();
    config.container_runtime_endpoint = args.container_runtime_endpoint.clone();
    config.pod_cidr = args.pod_cidr.clone();
    config.pod_cidr_wait = args.pod_cidr_wait;
    config.cni_bridge = args.cni_bridge.clone();
    config.cni_bin_dir = args.cni_bin_dir.clone();
    config.cgroup_parent = args.cgroup_parent.clone();
    config.sandbox_image = args.pause_image.clone();
    config
}

async fn client(args: &AgentArgs) -> anyhow::Result<kube::Client> {
    if let Some(path) = &args.kubeconfig {
        return Ok(rkube_component::client_from_kubeconfig(path).await?);
    }
    let (Some(server), Some(token)) = (&args.server, &args.token) else {
        anyhow::bail!("give --server URL --token TOKEN, or --kubeconfig PATH");
    };
    let url: http::Uri = server
        .parse()
        .with_context(|| format!("--server {server:?} is not a URL"))?;
    let mut config = kube::Config::new(url);
    config.auth_info.token = Some(token.clone().into());
    match &args.ca_file {
        Some(ca) => {
            let pem = std::fs::read(ca)
                .with_context(|| format!("cannot read --ca-file {}", ca.display()))?;
            let ders = rustls_pemfile::certs(&mut &pem[..])
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("--ca-file {} is not PEM", ca.display()))?;
            config.root_cert = Some(ders.into_iter().map(|d| d.to_vec()).collect());
        }
        None => {
            tracing::warn!("no --ca-file: the API server's certificate is not verified");
            config.accept_invalid_certs = true;
        }
    }
    Ok(kube::Client::try_from(config)?)
}

/// Runs `rkube agent` until SIGINT/SIGTERM.
pub(crate) async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let client = client(&args).await?;
    let config = config(&args.node, &args.data_dir);
    rkube_kubelet::run(client, config, crate::server::shutdown_signal()).await?;
    Ok(())
}
