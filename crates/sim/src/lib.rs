//! `rkube sim`: simulated ("hollow") nodes for scale tests, like kwok and kubemark. One
//! process registers many real Node objects, keeps their leases fresh, and acts as their
//! kubelet without running containers: pods bound to its nodes get an IP and go Running,
//! finish when their annotations say so, and are removed when deleted. It is an ordinary API
//! client (kube-rs), so it works against rkube or any Kubernetes API server.
//!
//! Start with [`run`] and [`Config`]. The parts:
//!
//! - [`flags`]: the command-line values (quantities, labels, taints) with upstream's rules;
//! - `nodes`: the Node objects, their registration, the per-node state;
//! - `leases`: the `kube-node-lease` heartbeats, renewed in spread-out batches;
//! - `pods`: one filtered pod watch and a controller moving pods through their simulated
//!   life, with the pure status builder in `pods::status`;
//! - `ipam`: pod addresses per node.
//!
//! Pods can script their containers with annotations: [`EXIT_CODE_ANNOTATION`]
//! (`sim.rkube.io/exit-code: "N"`) ends them with that code after
//! [`RUN_SECONDS_ANNOTATION`] seconds (`sim.rkube.io/run-seconds`, default 0); the
//! restart policy then decides between Succeeded/Failed and a restart after a short back-off.

pub mod flags;

mod digest;
mod ipam;
mod leases;
mod nodes;
mod pods;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Taint;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

pub use leases::{LEASE_DURATION_SECONDS, RENEW_INTERVAL};
pub use nodes::{MAX_NODES, SIM_NODE_LABEL};
pub use pods::status::{EXIT_CODE_ANNOTATION, RUN_SECONDS_ANNOTATION};

/// What to simulate.
#[derive(Debug, Clone)]
pub struct Config {
    /// How many nodes (at most [`MAX_NODES`]).
    pub nodes: u32,
    /// Node names are `<name_prefix><index>`, index from 0.
    pub name_prefix: String,
    /// CPU capacity (and allocatable) of each node.
    pub cpu: Quantity,
    /// Memory capacity (and allocatable) of each node.
    pub memory: Quantity,
    /// Pod capacity of each node.
    pub pods: u32,
    /// Labels added to each node (beside the kubelet's own `kubernetes.io/*` labels).
    pub labels: BTreeMap<String, String>,
    /// Taints of each node.
    pub taints: Vec<Taint>,
}

/// Why the simulator cannot run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration asks for something impossible.
    #[error("{0}")]
    Config(String),
    /// A node could not be registered.
    #[error("cannot register node {node}")]
    RegisterNode {
        /// The node.
        node: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// A node's lease could not be created.
    #[error("cannot create the lease of node {node} in kube-node-lease")]
    CreateLease {
        /// The node.
        node: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

/// Registers the nodes, then renews their leases and runs their pods until `shutdown`
/// resolves; then heartbeats stop (the nodes go NotReady once the node lifecycle controller
/// notices) and it returns.
pub async fn run(
    client: Client,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    if config.nodes > MAX_NODES {
        return Err(Error::Config(format!(
            "--nodes {} is more than one simulator can address ({MAX_NODES}): run several with different --name-prefix",
            config.nodes
        )));
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });

    let started = Instant::now();
    tracing::info!(
        nodes = config.nodes,
        cpu = %config.cpu.0,
        memory = %config.memory.0,
        pods = config.pods,
        "registering simulated nodes {}0..{}",
        config.name_prefix,
        config.name_prefix.clone() + &config.nodes.saturating_sub(1).to_string()
    );
    let nodes = tokio::select! {
        nodes = nodes::register(&client, &config) => nodes?,
        _ = stopped(stop_rx.clone()) => {
            tracing::info!("stopped during node registration");
            return Ok(());
        }
    };
    let count = nodes.len();
    tracing::info!(
        nodes = count,
        "registered {count} nodes with leases in {:.1}s; acting as their kubelet",
        started.elapsed().as_secs_f64()
    );

    let cluster = Arc::new(nodes::Cluster::new(nodes));
    let leases = tokio::spawn(leases::renew(
        client.clone(),
        Arc::clone(&cluster),
        stop_rx.clone(),
    ));
    let cidrs = tokio::spawn(nodes::watch_pod_cidrs(
        client.clone(),
        Arc::clone(&cluster),
        stop_rx.clone(),
    ));
    // The controller wants a `Sync` future: hand the stop over through a oneshot.
    let (pods_stop_tx, pods_stop_rx) = oneshot::channel::<()>();
    tokio::spawn(async move {
        stopped(stop_rx).await;
        let _ = pods_stop_tx.send(());
    });
    pods::run(client, cluster, async move {
        let _ = pods_stop_rx.await;
    })
    .await;
    let _ = leases.await;
    let _ = cidrs.await;
    tracing::info!(
        nodes = count,
        "stopped: leases are no longer renewed; the nodes go NotReady once the node lifecycle controller notices"
    );
    Ok(())
}

/// Resolves once the stop flag is set (or its sender is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// The wall-clock time as the API's timestamps carry it.
pub(crate) fn now() -> Timestamp {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
    Timestamp::from_microsecond(micros).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// An error and its causes on one line: `outer: cause: cause`.
pub(crate) fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
