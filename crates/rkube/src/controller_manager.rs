//! `rkube controller-manager`: runs the controllers alone against a cluster, as a kube-rs
//! client (the same controllers `rkube server` runs in-process unless
//! `--disable-controller-manager`).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

/// Controller settings shared by `rkube server` and `rkube controller-manager`.
#[derive(Args, Debug, Clone)]
pub(crate) struct ControllerArgs {
    /// Controllers to run: `*` for all, a name to add one, `-name` to leave one out
    /// (names: replicaset, replicationcontroller, deployment, job, cronjob,
    /// garbagecollector, namespace, endpoint, endpointslice, serviceaccount, nodelifecycle,
    /// nodeipam).
    #[arg(long, value_delimiter = ',', default_value = "*", value_name = "NAMES")]
    pub(crate) controllers: Vec<String>,

    /// IP range each node's pod CIDR (`spec.podCIDR`) is cut from.
    #[arg(long, default_value = "10.42.0.0/16", value_name = "CIDR")]
    pub(crate) cluster_cidr: String,

    /// Prefix length of each node's pod CIDR.
    #[arg(long, default_value_t = 24, value_name = "BITS")]
    pub(crate) node_cidr_mask_size: u8,

    /// A node whose heartbeat Lease is older than this turns NotReady (Unknown), e.g. 40s.
    #[arg(long, default_value = "40s", value_name = "DURATION", value_parser = crate::server::parse_duration)]
    pub(crate) node_monitor_grace_period: std::time::Duration,
}

/// Flags of `rkube controller-manager`.
#[derive(Args, Debug, Clone)]
pub(crate) struct ControllerManagerArgs {
    /// Kubeconfig of the cluster to run controllers for (e.g. a server's admin.kubeconfig).
    #[arg(long, value_name = "PATH")]
    pub(crate) kubeconfig: PathBuf,

    /// Run only while holding the kube-system/kube-controller-manager Lease (so several
    /// controller managers can run; one is active).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub(crate) leader_elect: bool,

    #[command(flatten)]
    pub(crate) controllers: ControllerArgs,
}

/// The controller manager configuration for these flags.
pub(crate) fn config(args: &ControllerArgs, leader_elect: bool) -> rkube_controllers::Config {
    let mut config = rkube_controllers::Config {
        controllers: args.controllers.clone(),
        cluster_cidr: args.cluster_cidr.clone(),
        node_cidr_mask_size: args.node_cidr_mask_size,
        node_monitor_grace_period: args.node_monitor_grace_period,
        ..Default::default()
    };
    if !leader_elect {
        config.leader_election = None;
    }
    config
}

/// Runs the controllers until SIGINT or SIGTERM.
pub(crate) async fn run(args: ControllerManagerArgs) -> anyhow::Result<()> {
    let client = rkube_component::client_from_kubeconfig(&args.kubeconfig)
        .await
        .with_context(|| {
            format!(
                "cannot use kubeconfig {}: check --kubeconfig",
                args.kubeconfig.display()
            )
        })?;
    tracing::info!(
        kubeconfig = %args.kubeconfig.display(),
        leader_elect = args.leader_elect,
        "rkube controller-manager starting"
    );
    let mut config = config(&args.controllers, args.leader_elect);
    config.root_ca = rkube_controllers::serviceaccount::root_ca_from_kubeconfig(&args.kubeconfig);
    rkube_controllers::run(client, config, crate::server::shutdown_signal()).await;
    tracing::info!("rkube controller-manager stopped");
    Ok(())
}
