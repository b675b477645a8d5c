//! The nodeipam controller (upstream's range allocator): every Node without `spec.podCIDR`
//! gets a free block of [`crate::Config::node_cidr_mask_size`] bits from
//! [`crate::Config::cluster_cidr`], written to `spec.podCIDR` and `spec.podCIDRs`.
//!
//! The controller keeps no state of its own that matters: the blocks in use are those the
//! Nodes carry (read from the controller's reflector store once it has listed every node),
//! plus the blocks it has just handed out and not yet seen come back from the watch. So a
//! restarted controller rebuilds the used set before it allocates, a deleted node's block is
//! free again, and one block never goes to two nodes (reconciles run one at a time, and a
//! node changed since it was read is not patched: the patch carries its resourceVersion).
//! When the range is full the node gets a `CIDRNotAvailable` event and is retried later.
//!
//! Start at [`run`]; the address arithmetic is in [`Ipv4Cidr`] and [`first_free`].

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use parking_lot::Mutex;
use serde_json::json;
use tracing::Instrument;

use crate::context::{Context, Stop, stopped};

/// Event reason when the cluster CIDR has no free block left.
pub const CIDR_NOT_AVAILABLE: &str = "CIDRNotAvailable";
/// How long before a node is tried again when the range is full.
const RETRY_FULL: Duration = Duration::from_secs(10);

/// An IPv4 network: address (masked) and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Cidr {
    addr: u32,
    prefix: u8,
}

impl Ipv4Cidr {
    /// The network `addr/prefix` (host bits cleared); `None` for a prefix over 32.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Option<Self> {
        (prefix <= 32).then(|| Self {
            addr: u32::from(addr) & Self::mask(prefix),
            prefix,
        })
    }

    fn mask(prefix: u8) -> u32 {
        u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether the two networks share an address.
    pub fn overlaps(&self, other: &Ipv4Cidr) -> bool {
        let p = self.prefix.min(other.prefix);
        self.addr & Self::mask(p) == other.addr & Self::mask(p)
    }

    /// How many blocks of `/size` this network holds (`None` when `size` is shorter than the
    /// prefix or over 32).
    pub fn blocks(&self, size: u8) -> Option<u64> {
        (size >= self.prefix && size <= 32).then(|| 1u64 << (size - self.prefix))
    }

    /// The `index`th block of `/size`.
    pub fn block(&self, size: u8, index: u64) -> Option<Ipv4Cidr> {
        if index >= self.blocks(size)? {
            return None;
        }
        let step = 1u64 << (32 - u32::from(size));
        let addr = u64::from(self.addr) + index * step;
        Some(Ipv4Cidr {
            addr: u32::try_from(addr).ok()?,
            prefix: size,
        })
    }
}

impl FromStr for Ipv4Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = s
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a CIDR (ADDRESS/BITS)"))?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("{s:?}: {addr:?} is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| format!("{s:?}: {prefix:?} is not a prefix length"))?;
        Self::new(addr, prefix).ok_or_else(|| format!("{s:?}: prefix length over 32"))
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.addr), self.prefix)
    }
}

/// The first `/size` block of `cluster` that overlaps none of `used`.
pub fn first_free(cluster: Ipv4Cidr, size: u8, used: &[Ipv4Cidr]) -> Option<Ipv4Cidr> {
    let relevant: Vec<&Ipv4Cidr> = used.iter().filter(|u| u.overlaps(&cluster)).collect();
    let count = cluster.blocks(size)?;
    // Blocks exactly of our size index directly; skip those quickly, then check overlaps.
    let exact: HashSet<u32> = relevant
        .iter()
        .filter(|u| u.prefix == size)
        .map(|u| u.addr)
        .collect();
    let others: Vec<&&Ipv4Cidr> = relevant.iter().filter(|u| u.prefix != size).collect();
    (0..count)
        .filter_map(|i| cluster.block(size, i))
        .find(|b| !exact.contains(&b.addr) && !others.iter().any(|u| u.overlaps(b)))
}

/// The pod CIDRs a node carries (`spec.podCIDRs`, else `spec.podCIDR`); unparsable or IPv6
/// ones are left out.
pub fn node_cidrs(node: &Node) -> Vec<Ipv4Cidr> {
    let Some(spec) = &node.spec else {
        return Vec::new();
    };
    let mut list: Vec<&String> = spec.pod_cidrs.iter().flatten().collect();
    if list.is_empty() {
        list.extend(spec.pod_cidr.as_ref());
    }
    list.into_iter().filter_map(|c| c.parse().ok()).collect()
}

/// Whether the node still needs a pod CIDR.
pub fn needs_cidr(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.pod_cidr.as_deref())
        .is_none_or(str::is_empty)
}

/// What failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Writing the node's pod CIDR.
    #[error("cannot set pod CIDR {cidr} on node {node}")]
    Patch {
        /// The node.
        node: String,
        /// The block.
        cidr: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
}

/// Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The allocator's state for the reconciles.
struct Ipam {
    ctx: Arc<Context>,
    cluster: Ipv4Cidr,
    size: u8,
    nodes: Store<Node>,
    /// Blocks handed out whose node has not come back from the watch with it yet, by node.
    pending: Mutex<BTreeMap<String, Ipv4Cidr>>,
}

/// Runs the controller until `stop` turns true.
pub async fn run(ctx: Arc<Context>, stop: Stop) {
    let cluster: Ipv4Cidr = match ctx.config.cluster_cidr.parse() {
        Ok(c) => c,
        Err(err) => {
            tracing::error!(%err, "bad --cluster-cidr; nodeipam does nothing");
            return stopped(stop).await;
        }
    };
    let size = ctx.config.node_cidr_mask_size;
    if cluster.blocks(size).is_none() {
        tracing::error!(%cluster, size, "--node-cidr-mask-size must be between the cluster CIDR's prefix and 32; nodeipam does nothing");
        return stopped(stop).await;
    }
    let api: Api<Node> = Api::all(ctx.client.clone());
    let controller = Controller::new(api, watcher::Config::default()).with_config(
        // One at a time: two nodes never race for the same block.
        kube::runtime::controller::Config::default().concurrency(1),
    );
    let ipam = Arc::new(Ipam {
        ctx,
        cluster,
        size,
        nodes: controller.store(),
        pending: Mutex::new(BTreeMap::new()),
    });
    controller
        .graceful_shutdown_on(stopped(stop))
        .run(reconcile, error_policy, ipam)
        .for_each(|_| async {})
        .await;
}

impl Ipam {
    /// Every block in use: the nodes' (as the store has them) and the pending ones of nodes
    /// that still lack theirs in the store. Pending entries of nodes that have their block
    /// or are gone are dropped.
    fn used(&self, except: &str) -> Vec<Ipv4Cidr> {
        let mut used: Vec<Ipv4Cidr> = self
            .nodes
            .state()
            .iter()
            .flat_map(|n| node_cidrs(n))
            .collect();
        let mut pending = self.pending.lock();
        pending.retain(|name, _| {
            self.nodes
                .get(&kube::runtime::reflector::ObjectRef::new(name))
                .is_some_and(|n| needs_cidr(&n))
        });
        used.extend(
            pending
                .iter()
                .filter(|(name, _)| name.as_str() != except)
                .map(|(_, c)| *c),
        );
        used
    }
}

async fn reconcile(node: Arc<Node>, ipam: Arc<Ipam>) -> Result<Action> {
    let name = node.name_any();
    let span = tracing::info_span!("reconcile", object.ref = %format!("node/{name}"), object.reason = "allocate");
    async {
        // Every existing node's block must be known before one is handed out.
        let _ = ipam.nodes.wait_until_ready().await;
        // The store's copy is the newest this controller has seen.
        let node = ipam
            .nodes
            .get(&kube::runtime::reflector::ObjectRef::new(&name))
            .unwrap_or(node);
        if !needs_cidr(&node) {
            ipam.pending.lock().remove(&name);
            return Ok(Action::await_change());
        }
        if let Some(cidr) = ipam.pending.lock().get(&name).copied() {
            // Handed out already; waiting for the watch to show it.
            tracing::debug!(node = %name, %cidr, "pod CIDR pending");
            return Ok(Action::requeue(Duration::from_secs(2)));
        }
        let used = ipam.used(&name);
        let Some(cidr) = first_free(ipam.cluster, ipam.size, &used) else {
            tracing::warn!(node = %name, cluster = %ipam.cluster, "no pod CIDR left");
            ipam.ctx
                .recorder
                .record(rkube_component::EventRecord::normal(
                    rkube_component::events::object_ref(node.as_ref()),
                    CIDR_NOT_AVAILABLE,
                    format!("Node {name} status is now: {CIDR_NOT_AVAILABLE}"),
                ));
            return Ok(Action::requeue(RETRY_FULL));
        };
        ipam.pending.lock().insert(name.clone(), cidr);
        let patch = json!({
            "metadata": {"resourceVersion": node.resource_version()},
            "spec": {"podCIDR": cidr.to_string(), "podCIDRs": [cidr.to_string()]},
        });
        let api: Api<Node> = Api::all(ipam.ctx.client.clone());
        match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                tracing::info!(node = %name, %cidr, "assigned pod CIDR");
                Ok(Action::await_change())
            }
            Err(source) => {
                ipam.pending.lock().remove(&name);
                if let kube::Error::Api(s) = &source
                    && matches!(s.code, 404 | 409)
                {
                    // Gone, or changed since it was read: the watch brings the new state.
                    return Ok(Action::requeue(Duration::from_secs(1)));
                }
                tracing::warn!(node = %name, %cidr, err = ?source, "cannot set the pod CIDR");
                Err(Error::Patch {
                    node: name.clone(),
                    cidr: cidr.to_string(),
                    source,
                })
            }
        }
    }
    .instrument(span)
    .await
}

fn error_policy(node: Arc<Node>, err: &Error, _ipam: Arc<Ipam>) -> Action {
    tracing::warn!(node = %node.name_any(), err = ?err, "nodeipam sync failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// Compile-time check that the reconcile future can run on the runtime.
#[allow(dead_code)]
fn assert_send() {
    fn is_send<T: Send>(_: T) {}
    let _ = |node: Arc<Node>, ipam: Arc<Ipam>| is_send(reconcile(node, ipam));
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NodeSpec;

    fn c(s: &str) -> Ipv4Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_masks() {
        assert_eq!(c("10.42.3.7/24").to_string(), "10.42.3.0/24");
        assert!("10.42.0.0".parse::<Ipv4Cidr>().is_err());
        assert!("10.42.0.0/33".parse::<Ipv4Cidr>().is_err());
        assert!("fd00::/64".parse::<Ipv4Cidr>().is_err());
    }

    #[test]
    fn blocks_of_the_cluster_range() {
        let cluster = c("10.42.0.0/16");
        assert_eq!(cluster.blocks(24), Some(256));
        assert_eq!(cluster.blocks(15), None);
        assert_eq!(cluster.block(24, 0), Some(c("10.42.0.0/24")));
        assert_eq!(cluster.block(24, 255), Some(c("10.42.255.0/24")));
        assert_eq!(cluster.block(24, 256), None);
        assert_eq!(c("0.0.0.0/0").block(1, 1), Some(c("128.0.0.0/1")));
    }

    #[test]
    fn allocation_skips_used_blocks_and_never_repeats() {
        let cluster = c("10.42.0.0/16");
        let mut used = Vec::new();
        let mut seen = HashSet::new();
        for i in 0..256 {
            let next = first_free(cluster, 24, &used).unwrap();
            assert_eq!(next, cluster.block(24, i).unwrap());
            assert!(seen.insert(next));
            used.push(next);
        }
        assert_eq!(first_free(cluster, 24, &used), None, "the range is full");
        // A freed block (deleted node) is handed out again.
        used.retain(|b| *b != c("10.42.7.0/24"));
        assert_eq!(first_free(cluster, 24, &used), Some(c("10.42.7.0/24")));
    }

    #[test]
    fn foreign_sizes_and_ranges_block_what_they_overlap() {
        let cluster = c("10.42.0.0/16");
        // A /23 someone set by hand covers two /24s; a block outside the range is ignored.
        let used = vec![c("10.42.0.0/23"), c("192.168.0.0/24")];
        assert_eq!(first_free(cluster, 24, &used), Some(c("10.42.2.0/24")));
        let used = vec![c("10.42.0.0/24"), c("10.42.1.128/25")];
        assert_eq!(first_free(cluster, 24, &used), Some(c("10.42.2.0/24")));
        assert!(c("10.42.0.0/16").overlaps(&c("10.42.9.0/24")));
        assert!(!c("10.42.0.0/24").overlaps(&c("10.42.1.0/24")));
    }

    #[test]
    fn existing_nodes_are_read_like_upstream() {
        let mut node = Node::default();
        assert!(needs_cidr(&node));
        assert!(node_cidrs(&node).is_empty());
        node.spec = Some(NodeSpec {
            pod_cidr: Some("10.42.5.0/24".into()),
            pod_cidrs: Some(vec!["10.42.5.0/24".into(), "fd00::/64".into()]),
            ..Default::default()
        });
        assert!(!needs_cidr(&node));
        assert_eq!(node_cidrs(&node), vec![c("10.42.5.0/24")]);
        node.spec.as_mut().unwrap().pod_cidrs = None;
        assert_eq!(node_cidrs(&node), vec![c("10.42.5.0/24")]);
    }
}
