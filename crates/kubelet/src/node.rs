//! The agent's Node object and heartbeat: registration with capacity/allocatable read from
//! the host, addresses, node info (including the runtime version from CRI `Version`) and
//! conditions; a Lease in `kube-node-lease` renewed every [`LEASE_RENEW`].

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeCondition, NodeStatus, NodeSystemInfo};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

/// The kubelet version the node reports.
pub const KUBELET_VERSION: &str = "v1.33.0";
/// Pods per node (upstream's default `--max-pods`).
pub const MAX_PODS: u32 = 110;
/// How often the Lease is renewed (upstream: every 10 s, duration 40 s).
pub const LEASE_RENEW: Duration = Duration::from_secs(10);
/// The Lease's duration.
pub const LEASE_DURATION_SECONDS: i32 = 40;

/// Errors of node registration.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Creating or updating the Node failed.
    #[error("cannot register node {node}")]
    Register {
        /// The node.
        node: String,
        /// Why.
        #[source]
        source: kube::Error,
    },
    /// Renewing the Lease failed.
    #[error("cannot renew the lease of node {node}")]
    Lease {
        /// The node.
        node: String,
        /// Why.
        #[source]
        source: kube::Error,
    },
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What the host reports about itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostInfo {
    /// CPUs.
    pub cpus: u32,
    /// Memory in KiB.
    pub memory_kib: u64,
    /// `/etc/os-release` PRETTY_NAME.
    pub os_image: String,
    /// Kernel release.
    pub kernel_version: String,
    /// `/etc/machine-id`.
    pub machine_id: String,
    /// This boot's ID.
    pub boot_id: String,
    /// e.g. `containerd://1.6.20`.
    pub container_runtime_version: String,
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Parses `MemTotal:  16318764 kB` from `/proc/meminfo` text.
pub fn mem_total_kib(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// The PRETTY_NAME from `/etc/os-release` text.
pub fn pretty_name(os_release: &str) -> Option<String> {
    os_release
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
}

impl HostInfo {
    /// Reads this host.
    pub fn read(container_runtime_version: String) -> HostInfo {
        HostInfo {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
            memory_kib: mem_total_kib(&read_trim("/proc/meminfo")).unwrap_or(0),
            os_image: pretty_name(&read_trim("/etc/os-release")).unwrap_or_else(|| "Linux".into()),
            kernel_version: read_trim("/proc/sys/kernel/osrelease"),
            machine_id: read_trim("/etc/machine-id"),
            boot_id: read_trim("/proc/sys/kernel/random/boot_id"),
            container_runtime_version,
        }
    }
}

/// The node as the agent registers it.
pub fn node_object(name: &str, ip: &str, host: &HostInfo, now: Timestamp) -> Node {
    let labels: BTreeMap<String, String> = [
        ("beta.kubernetes.io/arch", crate::image::go_arch()),
        ("beta.kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", crate::image::go_arch()),
        ("kubernetes.io/hostname", name),
        ("kubernetes.io/os", "linux"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let resources: BTreeMap<String, Quantity> = [
        ("cpu", host.cpus.to_string()),
        ("memory", format!("{}Ki", host.memory_kib)),
        ("pods", MAX_PODS.to_string()),
        ("hugepages-2Mi", "0".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), Quantity(v)))
    .collect();
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        spec: None,
        status: Some(node_status(name, ip, host, resources, now)),
    }
}

fn node_status(
    name: &str,
    ip: &str,
    host: &HostInfo,
    resources: BTreeMap<String, Quantity>,
    now: Timestamp,
) -> NodeStatus {
    let t = Time(now);
    let condition = |type_: &str, status: &str, reason: &str, message: &str| NodeCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(t.clone()),
        last_transition_time: Some(t.clone()),
    };
    NodeStatus {
        capacity: Some(resources.clone()),
        allocatable: Some(resources),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: ip.into(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: name.into(),
            },
        ]),
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
        node_info: Some(NodeSystemInfo {
            architecture: crate::image::go_arch().into(),
            boot_id: host.boot_id.clone(),
            container_runtime_version: host.container_runtime_version.clone(),
            kernel_version: host.kernel_version.clone(),
            kube_proxy_version: String::new(),
            kubelet_version: KUBELET_VERSION.into(),
            machine_id: host.machine_id.clone(),
            operating_system: "linux".into(),
            os_image: host.os_image.clone(),
            system_uuid: host.machine_id.clone(),
            ..NodeSystemInfo::default()
        }),
        ..NodeStatus::default()
    }
}

/// Creates the Node (or, when it exists, refreshes its labels and status). Returns its UID.
pub async fn register(client: &Client, node: &Node) -> Result<String> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let api: Api<Node> = Api::all(client.clone());
    let err = |source| Error::Register {
        node: name.clone(),
        source,
    };
    let created = match api.create(&PostParams::default(), node).await {
        Ok(n) => n,
        Err(kube::Error::Api(s)) if s.code == 409 => api
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": node.metadata.labels}})),
            )
            .await
            .map_err(err)?,
        Err(e) => return Err(err(e)),
    };
    // Status is a subresource: create ignores it.
    api.patch_status(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": node.status})),
    )
    .await
    .map_err(err)?;
    Ok(created.metadata.uid.unwrap_or_default())
}

/// Waits up to `wait` for the node's `spec.podCIDR` (set by the node IPAM controller).
pub async fn wait_pod_cidr(client: &Client, name: &str, wait: Duration) -> Option<String> {
    let api: Api<Node> = Api::all(client.clone());
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if let Ok(node) = api.get(name).await
            && let Some(cidr) = node.spec.and_then(|s| s.pod_cidr)
            && !cidr.is_empty()
        {
            return Some(cidr);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The node's Lease.
pub fn lease_object(name: &str, node_uid: &str, now: Timestamp) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("kube-node-lease".into()),
            owner_references: (!node_uid.is_empty()).then(|| {
                vec![OwnerReference {
                    api_version: "v1".into(),
                    kind: "Node".into(),
                    name: name.into(),
                    uid: node_uid.into(),
                    ..OwnerReference::default()
                }]
            }),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(name.into()),
            lease_duration_seconds: Some(LEASE_DURATION_SECONDS),
            renew_time: Some(MicroTime(now)),
            ..LeaseSpec::default()
        }),
    }
}

/// Creates or renews the node's Lease.
pub async fn renew_lease(client: &Client, name: &str, node_uid: &str) -> Result<()> {
    let api: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let lease = lease_object(name, node_uid, Timestamp::now());
    let err = |source| Error::Lease {
        node: name.into(),
        source,
    };
    match api.get_opt(name).await.map_err(err)? {
        None => {
            api.create(&PostParams::default(), &lease)
                .await
                .map_err(err)?;
        }
        Some(_) => {
            api.patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"holderIdentity": name, "renewTime": lease.spec.as_ref().and_then(|s| s.renew_time.clone()), "leaseDurationSeconds": LEASE_DURATION_SECONDS}})),
            )
            .await
            .map_err(err)?;
        }
    }
    Ok(())
}

/// How often the Node's status (conditions' heartbeat) is rewritten besides the Lease
/// (upstream: on change, at least every 5 min; the node lifecycle controller may have turned
/// the node Unknown while the agent was away).
pub const STATUS_EVERY: Duration = Duration::from_secs(60);

/// What the heartbeat needs to rewrite the Node's status.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    /// The node's name.
    pub name: String,
    /// Its UID (the Lease's owner).
    pub uid: String,
    /// Its InternalIP.
    pub ip: String,
    /// The host facts.
    pub host: HostInfo,
    /// When the agent registered (the conditions' transition time).
    pub since: Timestamp,
}

/// The Node's status with heartbeat `now` and transition time `since`.
pub fn status_patch(hb: &Heartbeat, now: Timestamp) -> serde_json::Value {
    let mut node = node_object(&hb.name, &hb.ip, &hb.host, now);
    if let Some(conditions) = node.status.as_mut().and_then(|s| s.conditions.as_mut()) {
        for c in conditions {
            c.last_transition_time = Some(Time(hb.since));
        }
    }
    json!({"status": node.status})
}

/// Renews the Lease every [`LEASE_RENEW`] and the Node status every [`STATUS_EVERY`] until
/// `stop` completes.
pub async fn heartbeat(client: Client, hb: Heartbeat, stop: impl std::future::Future<Output = ()>) {
    tokio::pin!(stop);
    let nodes: Api<Node> = Api::all(client.clone());
    let mut last_status = tokio::time::Instant::now();
    loop {
        if let Err(err) = renew_lease(&client, &hb.name, &hb.uid).await {
            tracing::warn!(?err, "lease renewal failed");
        }
        if last_status.elapsed() >= STATUS_EVERY {
            last_status = tokio::time::Instant::now();
            let patch = status_patch(&hb, Timestamp::now());
            if let Err(err) = nodes
                .patch_status(&hb.name, &PatchParams::default(), &Patch::Merge(patch))
                .await
            {
                tracing::warn!(?err, "node status update failed");
            }
        }
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(LEASE_RENEW) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_files_parse() {
        assert_eq!(
            mem_total_kib("MemTotal:       16318764 kB\nMemFree: 1 kB"),
            Some(16318764)
        );
        assert_eq!(mem_total_kib("nothing"), None);
        assert_eq!(
            pretty_name("NAME=x\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n").as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
    }

    #[test]
    fn node_reports_capacity_addresses_and_runtime() {
        let host = HostInfo {
            cpus: 2,
            memory_kib: 4096,
            container_runtime_version: "containerd://1.6.20".into(),
            ..HostInfo::default()
        };
        let node = node_object("n1", "192.0.2.7", &host, Timestamp::UNIX_EPOCH);
        let status = node.status.unwrap();
        let cap = status.capacity.unwrap();
        assert_eq!(cap["cpu"].0, "2");
        assert_eq!(cap["memory"].0, "4096Ki");
        assert_eq!(cap["pods"].0, "110");
        let addrs = status.addresses.unwrap();
        assert_eq!(
            (addrs[0].type_.as_str(), addrs[0].address.as_str()),
            ("InternalIP", "192.0.2.7")
        );
        assert_eq!(
            (addrs[1].type_.as_str(), addrs[1].address.as_str()),
            ("Hostname", "n1")
        );
        let info = status.node_info.unwrap();
        assert_eq!(info.container_runtime_version, "containerd://1.6.20");
        let ready = status
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True");
    }

    #[test]
    fn status_heartbeat_keeps_transition_times() {
        let hb = Heartbeat {
            name: "n1".into(),
            uid: "u".into(),
            ip: "192.0.2.1".into(),
            host: HostInfo::default(),
            since: Timestamp::UNIX_EPOCH,
        };
        let now = Timestamp::from_second(1_000_000).unwrap();
        let patch = status_patch(&hb, now);
        let ready = patch["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap()
            .clone();
        assert_eq!(ready["lastTransitionTime"], "1970-01-01T00:00:00Z");
        assert_eq!(ready["lastHeartbeatTime"], "1970-01-12T13:46:40Z");
    }

    #[test]
    fn lease_is_owned_by_the_node() {
        let lease = lease_object("n1", "uid-1", Timestamp::UNIX_EPOCH);
        assert_eq!(lease.metadata.namespace.as_deref(), Some("kube-node-lease"));
        assert_eq!(lease.metadata.owner_references.unwrap()[0].uid, "uid-1");
        assert_eq!(lease.spec.unwrap().lease_duration_seconds, Some(40));
    }
}
