//! `rkube sim`: simulated ("hollow") nodes for scale tests; see the `rkube-sim` crate.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use rkube_sim::flags;

/// Flags of `rkube sim`.
#[derive(Args, Debug, Clone)]
#[command(after_help = "\
Pods bound to the simulated nodes go Running with an IP from the node's range (its \
spec.podCIDR, else 10.201.<i>.0/24 for node i) and stay so until deleted. Annotate a pod \
with sim.rkube.io/exit-code: \"N\" (and optionally sim.rkube.io/run-seconds: \"S\") to end \
its containers with that code after S seconds: restartPolicy Never gives Succeeded (0) or \
Failed, OnFailure/Always restart it after a short back-off.")]
pub(crate) struct SimArgs {
    /// Kubeconfig of the cluster to join (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, value_name = "PATH")]
    pub(crate) kubeconfig: Option<PathBuf>,

    /// How many nodes to simulate.
    #[arg(long, default_value_t = 1, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=i64::from(rkube_sim::MAX_NODES)))]
    pub(crate) nodes: u32,

    /// Node names are <PREFIX><index>, index from 0.
    #[arg(long, default_value = "sim-", value_name = "PREFIX", value_parser = flags::parse_name_prefix)]
    pub(crate) name_prefix: String,

    /// CPU capacity (and allocatable) of each node, a Kubernetes quantity (32, 500m).
    #[arg(long, default_value = "32", value_name = "QUANTITY", value_parser = flags::parse_quantity)]
    pub(crate) cpu: flags::Quantity,

    /// Memory capacity (and allocatable) of each node, a Kubernetes quantity (256Gi, 1G).
    #[arg(long, default_value = "256Gi", value_name = "QUANTITY", value_parser = flags::parse_quantity)]
    pub(crate) memory: flags::Quantity,

    /// How many pods each node accepts (capacity "pods").
    #[arg(long, default_value_t = 110, value_name = "N")]
    pub(crate) pods: u32,

    /// Extra node labels: key=value[,key=value...] (repeatable).
    #[arg(long, value_name = "K=V,...", value_parser = flags::parse_labels)]
    pub(crate) labels: Vec<BTreeMap<String, String>>,

    /// Node taints: key=value:Effect or key:Effect, comma-separated (repeatable); Effect is
    /// NoSchedule, PreferNoSchedule or NoExecute.
    #[arg(long, value_name = "TAINT,...", value_parser = parse_taints)]
    pub(crate) taints: Vec<Taints>,
}

/// The taints of one `--taints` flag (a newtype: clap reads `Vec<Vec<_>>` differently).
#[derive(Debug, Clone)]
pub(crate) struct Taints(Vec<flags::Taint>);

fn parse_taints(text: &str) -> Result<Taints, flags::FlagError> {
    flags::parse_taints(text).map(Taints)
}

/// Runs the simulator until SIGINT or SIGTERM.
pub(crate) async fn run(args: SimArgs) -> anyhow::Result<()> {
    let mut labels = BTreeMap::new();
    for set in args.labels {
        for (k, v) in set {
            anyhow::ensure!(
                labels.insert(k.clone(), v).is_none(),
                "label {k:?} is given twice in --labels"
            );
        }
    }
    let config = rkube_sim::Config {
        nodes: args.nodes,
        name_prefix: args.name_prefix,
        cpu: args.cpu,
        memory: args.memory,
        pods: args.pods,
        labels,
        taints: args.taints.into_iter().flat_map(|t| t.0).collect(),
    };
    let client = rkube_component::client(args.kubeconfig.as_deref())
        .await
        .context("cannot connect (check --kubeconfig)")?;
    rkube_sim::run(client, config, shutdown_signal()).await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = ctrl_c.await;
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => tracing::info!("received SIGINT, stopping the simulated nodes"),
        _ = term.recv() => tracing::info!("received SIGTERM, stopping the simulated nodes"),
    }
}
