//! Simulated Node objects: what a kubelet registers (labels, capacity, conditions, addresses,
//! node info), their registration with bounded concurrency, and the small state the
//! simulator keeps per node ([`SimNode`]).
//!
//! Node `i` (from 0) is `<prefix><i>` with InternalIP `10.200.0.0 + i + 1` (never routed) and,
//! until it has a `spec.podCIDR`, the pod range `10.201.0.0/24 + i` (node 256 continues in
//! 10.202.0.0/24, ...), which is why one simulator holds at most [`MAX_NODES`].

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus,
    NodeSystemInfo, Pod,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::watch;

use crate::ipam::{Cidr, Ipam};
use crate::{Config, Error, leases};

/// Label on every simulated node (the simulator watches its nodes by it).
pub const SIM_NODE_LABEL: &str = "sim.rkube.io/node";
/// Most nodes one simulator can address: default pod ranges run from 10.201.0.0/24 to
/// 10.255.255.0/24.
pub const MAX_NODES: u32 = (255 - 201 + 1) * 256;
/// Nodes (each with its lease) registered at once.
const REGISTER_CONCURRENCY: usize = 64;
/// Tries per node before registration gives up on transient errors.
const REGISTER_ATTEMPTS: u32 = 5;
/// The kubelet version the nodes report.
const KUBELET_VERSION: &str = "v1.33.0";
/// Ephemeral storage every node reports.
const EPHEMERAL_STORAGE: &str = "100Gi";

/// What the simulator keeps per node: a few dozen bytes and one entry per running pod.
#[derive(Debug)]
pub(crate) struct SimNode {
    /// Position in the simulator's node list (picks the lease renewal slot).
    pub(crate) index: u32,
    pub(crate) name: String,
    /// The Node's UID (the lease's owner reference).
    pub(crate) uid: String,
    /// The node's InternalIP (pods' hostIP).
    pub(crate) host_ip: Ipv4Addr,
    /// Pod addresses.
    pub(crate) ipam: Mutex<Ipam>,
}

/// The simulated nodes, by name.
#[derive(Debug)]
pub(crate) struct Cluster {
    nodes: Vec<Arc<SimNode>>,
    by_name: HashMap<String, Arc<SimNode>>,
}

impl Cluster {
    pub(crate) fn new(nodes: Vec<Arc<SimNode>>) -> Cluster {
        let by_name = nodes
            .iter()
            .map(|n| (n.name.clone(), Arc::clone(n)))
            .collect();
        Cluster { nodes, by_name }
    }

    pub(crate) fn nodes(&self) -> &[Arc<SimNode>] {
        &self.nodes
    }

    pub(crate) fn node(&self, name: &str) -> Option<&Arc<SimNode>> {
        self.by_name.get(name)
    }

    /// The simulated node `pod` is bound to, if any.
    pub(crate) fn node_of(&self, pod: &Pod) -> Option<&Arc<SimNode>> {
        self.node(pod.spec.as_ref()?.node_name.as_deref()?)
    }
}

/// Node `index`'s InternalIP.
pub(crate) fn node_ip(index: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 200, 0, 0)) + index + 1)
}

/// Node `index`'s pod range while it has no `spec.podCIDR`.
pub(crate) fn default_pod_cidr(index: u32) -> Cidr {
    Cidr {
        base: u32::from(Ipv4Addr::new(10, 201, 0, 0)) + index * 256,
        prefix: 24,
    }
}

/// Node `index` as its kubelet registers it.
pub(crate) fn node_object(config: &Config, index: u32, now: Timestamp) -> Node {
    let name = format!("{}{index}", config.name_prefix);
    let mut labels: BTreeMap<String, String> = [
        ("beta.kubernetes.io/arch", "amd64"),
        ("beta.kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", "amd64"),
        ("kubernetes.io/hostname", name.as_str()),
        ("kubernetes.io/os", "linux"),
        (SIM_NODE_LABEL, "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    labels.extend(config.labels.clone());
    let annotations = [
        ("node.alpha.kubernetes.io/ttl", "0"),
        (
            "volumes.kubernetes.io/controller-managed-attach-detach",
            "true",
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let resources: BTreeMap<String, Quantity> = [
        ("cpu", config.cpu.0.clone()),
        ("memory", config.memory.0.clone()),
        ("pods", config.pods.to_string()),
        ("ephemeral-storage", EPHEMERAL_STORAGE.to_string()),
        ("hugepages-1Gi", "0".to_string()),
        ("hugepages-2Mi", "0".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), Quantity(v)))
    .collect();
    let t = Time(now);
    let condition = |type_: &str, status: &str, reason: &str, message: &str| NodeCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(t.clone()),
        last_transition_time: Some(t.clone()),
    };
    let ip = node_ip(index).to_string();
    Node {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(labels),
            annotations: Some(annotations),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            taints: (!config.taints.is_empty()).then(|| config.taints.clone()),
            ..Default::default()
        }),
        status: Some(NodeStatus {
            capacity: Some(resources.clone()),
            allocatable: Some(resources),
            // Ready last, as upstream's kubelet orders them.
            conditions: Some(vec![
                condition(
                    "MemoryPressure",
                    "False",
                    "KubeletHasSufficientMemory",
                    "kubelet has sufficient memory available",
                ),
                condition(
                    "DiskPressure",
                    "False",
                    "KubeletHasNoDiskPressure",
                    "kubelet has no disk pressure",
                ),
                condition(
                    "PIDPressure",
                    "False",
                    "KubeletHasSufficientPID",
                    "kubelet has sufficient PID available",
                ),
                condition(
                    "Ready",
                    "True",
                    "KubeletReady",
                    "kubelet is posting ready status",
                ),
            ]),
            addresses: Some(vec![
                NodeAddress {
                    type_: "InternalIP".into(),
                    address: ip,
                },
                NodeAddress {
                    type_: "Hostname".into(),
                    address: name.clone(),
                },
            ]),
            daemon_endpoints: Some(NodeDaemonEndpoints {
                kubelet_endpoint: Some(DaemonEndpoint { port: 10250 }),
            }),
            node_info: Some(NodeSystemInfo {
                architecture: "amd64".into(),
                boot_id: uuid::Uuid::new_v4().to_string(),
                container_runtime_version: concat!("sim://", env!("CARGO_PKG_VERSION")).into(),
                kernel_version: "sim".into(),
                kube_proxy_version: String::new(),
                kubelet_version: KUBELET_VERSION.into(),
                machine_id: crate::digest::hex(&[&name, "machine"], 32),
                operating_system: "linux".into(),
                os_image: "rkube simulated node".into(),
                system_uuid: uuid::Uuid::new_v4().to_string(),
                swap: None,
            }),
            ..Default::default()
        }),
    }
}

/// Registers every node (and its lease), `REGISTER_CONCURRENCY` at a time, logging progress.
/// A node that already exists is taken over: its labels, taints and status are updated.
pub(crate) async fn register(client: &Client, config: &Config) -> Result<Vec<Arc<SimNode>>, Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), leases::NAMESPACE);
    let done = AtomicUsize::new(0);
    let total = config.nodes;
    let work = stream::iter(0..total)
        .map(|index| {
            let (nodes, leases, done) = (&nodes, &leases, &done);
            async move {
                let node = register_one(nodes, leases, config, index).await?;
                done.fetch_add(1, Ordering::Relaxed);
                Ok::<_, Error>(node)
            }
        })
        .buffer_unordered(REGISTER_CONCURRENCY)
        .try_collect::<Vec<_>>();
    tokio::pin!(work);
    let mut progress = tokio::time::interval(Duration::from_secs(2));
    progress.tick().await;
    let mut registered = loop {
        tokio::select! {
            result = &mut work => break result?,
            _ = progress.tick() => tracing::info!(
                "registering nodes: {}/{total}",
                done.load(Ordering::Relaxed)
            ),
        }
    };
    registered.sort_by_key(|n| n.index);
    Ok(registered)
}

async fn register_one(
    nodes: &Api<Node>,
    leases: &Api<Lease>,
    config: &Config,
    index: u32,
) -> Result<Arc<SimNode>, Error> {
    let node = node_object(config, index, crate::now());
    let name = node.name_any();
    let registered = retry(|| create_or_take_over(nodes, &node))
        .await
        .map_err(|source| Error::RegisterNode {
            node: name.clone(),
            source,
        })?;
    let uid = registered.uid().unwrap_or_default();
    retry(|| leases::ensure(leases, &name, &uid))
        .await
        .map_err(|source| Error::CreateLease {
            node: name.clone(),
            source,
        })?;
    let range = registered
        .spec
        .as_ref()
        .and_then(|s| s.pod_cidr.as_deref())
        .and_then(Cidr::parse)
        .unwrap_or_else(|| default_pod_cidr(index));
    tracing::debug!(node = %name, %range, "node registered");
    Ok(Arc::new(SimNode {
        index,
        name,
        uid,
        host_ip: node_ip(index),
        ipam: Mutex::new(Ipam::new(range)),
    }))
}

/// Creates `node`, or when it exists updates its labels, taints and status to ours.
async fn create_or_take_over(nodes: &Api<Node>, node: &Node) -> Result<Node, kube::Error> {
    match nodes.create(&PostParams::default(), node).await {
        Err(kube::Error::Api(s)) if s.is_already_exists() => {}
        other => return other,
    }
    let name = node.name_any();
    let params = PatchParams::default();
    let meta = json!({
        "metadata": {"labels": node.metadata.labels},
        "spec": {"taints": node.spec.as_ref().and_then(|s| s.taints.clone())},
    });
    nodes.patch(&name, &params, &Patch::Merge(&meta)).await?;
    let status = json!({ "status": node.status });
    nodes
        .patch_status(&name, &params, &Patch::Merge(&status))
        .await
}

/// Runs `op` up to [`REGISTER_ATTEMPTS`] times while it fails in a way that may pass
/// (server busy or unreachable, a write race), with a growing pause.
pub(crate) async fn retry<T, F, Fut>(mut op: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut pause = Duration::from_millis(200);
    let mut attempt = 1;
    loop {
        match op().await {
            Err(err) if attempt < REGISTER_ATTEMPTS && transient(&err) => {
                tracing::debug!(error = %err, attempt, "retrying");
                tokio::time::sleep(pause).await;
                pause *= 2;
                attempt += 1;
            }
            other => return other,
        }
    }
}

fn transient(err: &kube::Error) -> bool {
    match err {
        kube::Error::Api(s) => matches!(s.code, 409 | 429 | 500 | 502 | 503 | 504),
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

/// Follows the simulated nodes' `spec.podCIDR` (set by an IPAM controller after
/// registration): pods started afterwards get addresses from it. Runs until `stop`.
pub(crate) async fn watch_pod_cidrs(
    client: Client,
    cluster: Arc<Cluster>,
    mut stop: watch::Receiver<bool>,
) {
    let config = watcher::Config::default().labels(&format!("{SIM_NODE_LABEL}=true"));
    let nodes = watcher::watcher(Api::<Node>::all(client), config)
        .default_backoff()
        .applied_objects();
    tokio::pin!(nodes);
    loop {
        let node = tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => return,
            next = nodes.next() => match next {
                Some(Ok(node)) => node,
                Some(Err(err)) => {
                    tracing::debug!(error = %err, "node watch failed; retrying");
                    continue;
                }
                None => return,
            },
        };
        let Some(sim) = cluster.node(&node.name_any()) else {
            continue;
        };
        let Some(range) = node
            .spec
            .as_ref()
            .and_then(|s| s.pod_cidr.as_deref())
            .and_then(Cidr::parse)
        else {
            continue;
        };
        let mut ipam = sim.ipam.lock();
        if ipam.range() != range {
            ipam.set_range(range);
            tracing::info!(node = %sim.name, %range, "node has a podCIDR: pod IPs come from it");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flags;

    fn config() -> Config {
        Config {
            nodes: 3,
            name_prefix: "sim-".into(),
            cpu: flags::parse_quantity("8").unwrap(),
            memory: flags::parse_quantity("32Gi").unwrap(),
            pods: 50,
            labels: flags::parse_labels("zone=a,kubernetes.io/os=plan9").unwrap(),
            taints: flags::parse_taints("dedicated=sim:NoSchedule").unwrap(),
        }
    }

    #[test]
    fn addresses_and_ranges_per_index() {
        assert_eq!(node_ip(0), Ipv4Addr::new(10, 200, 0, 1));
        assert_eq!(node_ip(300), Ipv4Addr::new(10, 200, 1, 45));
        assert_eq!(default_pod_cidr(0).to_string(), "10.201.0.0/24");
        assert_eq!(default_pod_cidr(257).to_string(), "10.202.1.0/24");
        assert_eq!(
            default_pod_cidr(MAX_NODES - 1).to_string(),
            "10.255.255.0/24"
        );
    }

    #[test]
    fn node_object_has_kubelet_shape() {
        let now: Timestamp = "2025-06-01T10:00:00Z".parse().unwrap();
        let node = node_object(&config(), 2, now);
        let v = serde_json::to_value(&node).unwrap();
        assert_eq!(v["metadata"]["name"], "sim-2");
        let labels = &v["metadata"]["labels"];
        assert_eq!(labels["kubernetes.io/hostname"], "sim-2");
        assert_eq!(labels["zone"], "a");
        assert_eq!(labels[SIM_NODE_LABEL], "true");
        // The user's label wins over the default.
        assert_eq!(labels["kubernetes.io/os"], "plan9");
        assert_eq!(
            v["spec"]["taints"],
            json!([{"key": "dedicated", "value": "sim", "effect": "NoSchedule"}])
        );
        let status = &v["status"];
        for field in ["capacity", "allocatable"] {
            assert_eq!(status[field]["cpu"], "8");
            assert_eq!(status[field]["memory"], "32Gi");
            assert_eq!(status[field]["pods"], "50");
        }
        let conditions: Vec<(&str, &str)> = status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["type"].as_str().unwrap(), c["status"].as_str().unwrap()))
            .collect();
        assert_eq!(
            conditions,
            [
                ("MemoryPressure", "False"),
                ("DiskPressure", "False"),
                ("PIDPressure", "False"),
                ("Ready", "True")
            ]
        );
        assert_eq!(status["conditions"][3]["reason"], "KubeletReady");
        assert_eq!(
            status["conditions"][3]["lastHeartbeatTime"],
            "2025-06-01T10:00:00Z"
        );
        assert_eq!(
            status["addresses"],
            json!([{"type": "InternalIP", "address": "10.200.0.3"},
                   {"type": "Hostname", "address": "sim-2"}])
        );
        assert_eq!(status["daemonEndpoints"]["kubeletEndpoint"]["Port"], 10250);
        assert_eq!(status["nodeInfo"]["kubeletVersion"], KUBELET_VERSION);
        assert_eq!(status["nodeInfo"]["operatingSystem"], "linux");
        assert_eq!(status["nodeInfo"]["machineID"].as_str().unwrap().len(), 32);
    }
}
