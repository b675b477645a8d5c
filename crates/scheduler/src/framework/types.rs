//! What the scheduler knows about pods and nodes, computed once when an object arrives
//! (requests, host ports, affinity terms, taints) so the per-node checks of a scheduling
//! cycle only compare numbers and strings.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod, PodAffinityTerm, Taint, WeightedPodAffinityTerm};

use super::resource::{Resource, pod_requests};
use super::selector::{Effect, Labels, Selector, node_labels, node_taints, pod_labels};

/// The pod's `namespace/name`.
pub fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.name.as_deref().unwrap_or("")
    )
}

/// The pod's priority (0 when unset, as upstream's `PodPriority`).
pub fn pod_priority(pod: &Pod) -> i32 {
    pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

/// A host port a pod claims: address, protocol, port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// Host IP (`0.0.0.0` for all).
    pub ip: String,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
    /// The port.
    pub port: i32,
}

impl HostPort {
    /// Whether two claims collide: same protocol and port, and the same address or either
    /// one on all addresses.
    pub fn conflicts(&self, other: &HostPort) -> bool {
        self.port == other.port
            && self.protocol == other.protocol
            && (self.ip == other.ip || self.ip == "0.0.0.0" || other.ip == "0.0.0.0")
    }
}

/// The host ports of a pod's containers (and sidecars).
pub fn pod_host_ports(pod: &Pod) -> Vec<HostPort> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    let sidecars = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"));
    let mut out = Vec::new();
    for c in spec.containers.iter().chain(sidecars) {
        for p in c.ports.iter().flatten() {
            let Some(port) = p.host_port.filter(|p| *p > 0) else {
                continue;
            };
            out.push(HostPort {
                ip: p
                    .host_ip
                    .clone()
                    .filter(|ip| !ip.is_empty())
                    .unwrap_or_else(|| "0.0.0.0".into()),
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                port,
            });
        }
    }
    out
}

/// A parsed pod (anti-)affinity term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AffinityTerm {
    /// Namespaces listed in the term (the pod's own when neither these nor a namespace
    /// selector are given).
    pub namespaces: Vec<String>,
    /// The namespace selector (`None`: only `namespaces`).
    pub namespace_selector: Option<Selector>,
    /// Which pods the term selects.
    pub selector: Selector,
    /// The node label whose value defines the topology domain.
    pub topology_key: String,
}

impl AffinityTerm {
    fn parse(term: &PodAffinityTerm, pod_namespace: &str) -> Self {
        let namespaces = term.namespaces.clone().unwrap_or_default();
        let namespace_selector = term
            .namespace_selector
            .as_ref()
            .map(|s| Selector::from_label_selector(Some(s)));
        let namespaces = if namespaces.is_empty() && namespace_selector.is_none() {
            vec![pod_namespace.to_string()]
        } else {
            namespaces
        };
        Self {
            namespaces,
            namespace_selector,
            selector: Selector::from_label_selector(term.label_selector.as_ref()),
            topology_key: term.topology_key.clone(),
        }
    }

    /// Whether a pod in `namespace` (whose namespace has `ns_labels`) with `labels` matches.
    pub fn matches(&self, namespace: &str, labels: &Labels, ns_labels: &Labels) -> bool {
        let ns_ok = self.namespaces.iter().any(|n| n == namespace)
            || self
                .namespace_selector
                .as_ref()
                .is_some_and(|s| s.matches(ns_labels));
        ns_ok && self.selector.matches(labels)
    }
}

/// A weighted (preferred) affinity term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightedTerm {
    /// The term.
    pub term: AffinityTerm,
    /// Its weight (1–100).
    pub weight: i64,
}

fn weighted(terms: Option<&Vec<WeightedPodAffinityTerm>>, ns: &str) -> Vec<WeightedTerm> {
    terms
        .into_iter()
        .flatten()
        .map(|t| WeightedTerm {
            term: AffinityTerm::parse(&t.pod_affinity_term, ns),
            weight: i64::from(t.weight),
        })
        .collect()
}

/// Everything the scheduler uses of a pod, computed once.
#[derive(Debug, Clone)]
pub struct PodInfo {
    /// The pod object.
    pub pod: Arc<Pod>,
    /// `namespace/name`.
    pub key: String,
    /// The pod's UID.
    pub uid: String,
    /// Priority.
    pub priority: i32,
    /// Requests, as NodeResourcesFit counts them.
    pub requests: Resource,
    /// CPU (millicores) and memory (bytes) with the scoring defaults for missing requests.
    pub non_zero: (i64, i64),
    /// Host ports claimed.
    pub host_ports: Vec<HostPort>,
    /// Required pod affinity terms.
    pub required_affinity: Vec<AffinityTerm>,
    /// Required pod anti-affinity terms.
    pub required_anti_affinity: Vec<AffinityTerm>,
    /// Preferred pod affinity terms.
    pub preferred_affinity: Vec<WeightedTerm>,
    /// Preferred pod anti-affinity terms.
    pub preferred_anti_affinity: Vec<WeightedTerm>,
}

impl PodInfo {
    /// Parses a pod.
    pub fn new(pod: Arc<Pod>) -> Self {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let affinity = pod.spec.as_ref().and_then(|s| s.affinity.as_ref());
        let pa = affinity.and_then(|a| a.pod_affinity.as_ref());
        let paa = affinity.and_then(|a| a.pod_anti_affinity.as_ref());
        let required = |terms: Option<&Vec<PodAffinityTerm>>| -> Vec<AffinityTerm> {
            terms
                .into_iter()
                .flatten()
                .map(|t| AffinityTerm::parse(t, &ns))
                .collect()
        };
        let non_zero = pod_requests(&pod, true);
        Self {
            key: pod_key(&pod),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            priority: pod_priority(&pod),
            requests: pod_requests(&pod, false),
            non_zero: (non_zero.milli_cpu, non_zero.memory),
            host_ports: pod_host_ports(&pod),
            required_affinity: required(pa.and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            required_anti_affinity: required(paa.and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })),
            preferred_affinity: weighted(
                pa.and_then(|a| {
                    a.preferred_during_scheduling_ignored_during_execution
                        .as_ref()
                }),
                &ns,
            ),
            preferred_anti_affinity: weighted(
                paa.and_then(|a| {
                    a.preferred_during_scheduling_ignored_during_execution
                        .as_ref()
                }),
                &ns,
            ),
            pod,
        }
    }

    /// The pod's namespace.
    pub fn namespace(&self) -> &str {
        self.pod.metadata.namespace.as_deref().unwrap_or("")
    }

    /// The pod's name.
    pub fn name(&self) -> &str {
        self.pod.metadata.name.as_deref().unwrap_or("")
    }

    /// The pod's labels.
    pub fn labels(&self) -> &Labels {
        pod_labels(&self.pod)
    }

    /// The node the pod is bound to ("" when none).
    pub fn node_name(&self) -> &str {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .unwrap_or("")
    }

    /// Has any pod affinity or anti-affinity (required or preferred).
    pub fn has_affinity(&self) -> bool {
        !self.required_affinity.is_empty()
            || !self.required_anti_affinity.is_empty()
            || !self.preferred_affinity.is_empty()
            || !self.preferred_anti_affinity.is_empty()
    }

    /// Being deleted (`metadata.deletionTimestamp` set).
    pub fn terminating(&self) -> bool {
        self.pod.metadata.deletion_timestamp.is_some()
    }

    /// When the pod started (`status.startTime`), in nanoseconds since the epoch; `now` for
    /// pods not started (upstream's `GetPodStartTime`).
    pub fn start_time_nanos(&self, now: i128) -> i128 {
        self.pod
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map_or(now, |t| t.0.as_nanosecond())
    }
}

/// A parsed node taint.
#[derive(Debug, Clone)]
pub struct NodeTaint {
    /// The taint.
    pub taint: Taint,
    /// Its effect.
    pub effect: Effect,
}

/// One node and the pods on it (bound or assumed), with running totals.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// Node name.
    pub name: String,
    /// The node object.
    pub node: Arc<Node>,
    /// Parsed taints.
    pub taints: Vec<NodeTaint>,
    /// `spec.unschedulable`.
    pub unschedulable: bool,
    /// Allocatable resources.
    pub allocatable: Resource,
    /// Sum of the pods' requests.
    pub requested: Resource,
    /// Sum of the pods' CPU and memory requests with the scoring defaults.
    pub non_zero_requested: (i64, i64),
    /// Pods on the node.
    pub pods: Vec<Arc<PodInfo>>,
    /// Pods on the node with any pod (anti-)affinity.
    pub pods_with_affinity: Vec<Arc<PodInfo>>,
    /// Pods on the node with required anti-affinity.
    pub pods_with_required_anti_affinity: Vec<Arc<PodInfo>>,
    /// Host ports in use.
    pub used_ports: Vec<HostPort>,
    /// Images present on the node (every name) and their sizes in bytes.
    pub images: HashMap<String, i64>,
}

impl NodeInfo {
    /// A node with no pods.
    pub fn new(node: Arc<Node>) -> Self {
        let mut info = Self {
            name: node.metadata.name.clone().unwrap_or_default(),
            node: node.clone(),
            taints: Vec::new(),
            unschedulable: false,
            allocatable: Resource::default(),
            requested: Resource::default(),
            non_zero_requested: (0, 0),
            pods: Vec::new(),
            pods_with_affinity: Vec::new(),
            pods_with_required_anti_affinity: Vec::new(),
            used_ports: Vec::new(),
            images: HashMap::new(),
        };
        info.set_node(node);
        info
    }

    /// Replaces the node object (pods stay).
    pub fn set_node(&mut self, node: Arc<Node>) {
        self.taints = node_taints(&node)
            .iter()
            .map(|t| NodeTaint {
                effect: Effect::parse(&t.effect),
                taint: t.clone(),
            })
            .collect();
        self.unschedulable = node
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false);
        self.allocatable = node
            .status
            .as_ref()
            .and_then(|s| s.allocatable.as_ref())
            .map(Resource::from_list)
            .unwrap_or_default();
        self.images.clear();
        for image in node
            .status
            .as_ref()
            .and_then(|s| s.images.as_ref())
            .into_iter()
            .flatten()
        {
            for name in image.names.iter().flatten() {
                self.images
                    .insert(name.clone(), image.size_bytes.unwrap_or(0));
            }
        }
        self.node = node;
    }

    /// The node's labels.
    pub fn labels(&self) -> &Labels {
        node_labels(&self.node)
    }

    /// Adds a pod's usage.
    pub fn add_pod(&mut self, pod: Arc<PodInfo>) {
        self.requested.add(&pod.requests);
        self.non_zero_requested.0 += pod.non_zero.0;
        self.non_zero_requested.1 += pod.non_zero.1;
        self.used_ports.extend(pod.host_ports.iter().cloned());
        if pod.has_affinity() {
            self.pods_with_affinity.push(pod.clone());
        }
        if !pod.required_anti_affinity.is_empty() {
            self.pods_with_required_anti_affinity.push(pod.clone());
        }
        self.pods.push(pod);
    }

    /// Removes the pod with `uid`; returns it when it was there.
    pub fn remove_pod(&mut self, uid: &str) -> Option<Arc<PodInfo>> {
        let i = self.pods.iter().position(|p| p.uid == uid)?;
        let pod = self.pods.swap_remove(i);
        self.requested.sub(&pod.requests);
        self.non_zero_requested.0 -= pod.non_zero.0;
        self.non_zero_requested.1 -= pod.non_zero.1;
        for hp in &pod.host_ports {
            if let Some(j) = self.used_ports.iter().position(|u| u == hp) {
                self.used_ports.swap_remove(j);
            }
        }
        self.pods_with_affinity.retain(|p| p.uid != uid);
        self.pods_with_required_anti_affinity
            .retain(|p| p.uid != uid);
        Some(pod)
    }
}

/// A PodDisruptionBudget, as preemption reads it.
#[derive(Debug, Clone)]
pub struct DisruptionBudget {
    /// Namespace.
    pub namespace: String,
    /// Which pods it covers (an empty or missing selector covers none).
    pub selector: Selector,
    /// `status.disruptionsAllowed`.
    pub disruptions_allowed: i32,
    /// `status.disruptedPods` (names already being disrupted).
    pub disrupted_pods: Vec<String>,
}

impl DisruptionBudget {
    /// Parses a PodDisruptionBudget.
    pub fn new(pdb: &k8s_openapi::api::policy::v1::PodDisruptionBudget) -> Self {
        let selector = pdb.spec.as_ref().and_then(|s| s.selector.as_ref());
        let selector = match selector {
            Some(s)
                if s.match_labels.as_ref().is_some_and(|m| !m.is_empty())
                    || s.match_expressions.as_ref().is_some_and(|e| !e.is_empty()) =>
            {
                Selector::from_label_selector(Some(s))
            }
            _ => Selector::Nothing,
        };
        let status = pdb.status.as_ref();
        Self {
            namespace: pdb.metadata.namespace.clone().unwrap_or_default(),
            selector,
            disruptions_allowed: status.map_or(0, |s| s.disruptions_allowed),
            disrupted_pods: status
                .and_then(|s| s.disrupted_pods.as_ref())
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default(),
        }
    }
}

/// The selectors upstream's `DefaultSelector` reads to give pods without
/// `topologySpreadConstraints` the system default ones: Services (by namespace), and the
/// ReplicationControllers, ReplicaSets and StatefulSets that own pods.
#[derive(Debug, Default)]
pub struct Spreaders {
    /// Non-empty Service selectors: namespace -> service name -> selector.
    pub services: HashMap<String, HashMap<String, Labels>>,
    /// ReplicationController selectors by `namespace/name`.
    pub replication_controllers: HashMap<String, Labels>,
    /// ReplicaSet and StatefulSet selectors by `Kind/namespace/name`.
    pub sets: HashMap<String, Selector>,
}

impl Spreaders {
    /// Upstream's `DefaultSelector`: the labels of every Service selecting the pod, merged
    /// with its owning ReplicationController's selector, plus the requirements of its
    /// owning ReplicaSet or StatefulSet. Empty when nothing selects the pod.
    pub fn default_selector(&self, pod: &Pod) -> Selector {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("");
        let labels = pod_labels(pod);
        let mut merged = Labels::new();
        for selector in self
            .services
            .get(namespace)
            .into_iter()
            .flat_map(|m| m.values())
        {
            if selector.iter().all(|(k, v)| labels.get(k) == Some(v)) {
                merged.extend(selector.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
        let owner = pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|r| r.controller == Some(true));
        let mut extra = Vec::new();
        if let Some(owner) = owner {
            match (owner.api_version.as_str(), owner.kind.as_str()) {
                ("v1", "ReplicationController") => {
                    let key = format!("{namespace}/{}", owner.name);
                    if let Some(sel) = self.replication_controllers.get(&key) {
                        merged.extend(sel.iter().map(|(k, v)| (k.clone(), v.clone())));
                    }
                }
                ("apps/v1", kind @ ("ReplicaSet" | "StatefulSet")) => {
                    let key = format!("{kind}/{namespace}/{}", owner.name);
                    if let Some(Selector::Requirements(reqs)) = self.sets.get(&key) {
                        extra.extend(reqs.iter().cloned());
                    }
                }
                _ => {}
            }
        }
        let mut selector = Selector::everything();
        for (k, v) in &merged {
            selector.add_equal(k, v);
        }
        if let Selector::Requirements(reqs) = &mut selector {
            reqs.extend(extra);
        }
        selector
    }
}

/// A read-only view of the cluster during one scheduling cycle.
#[derive(Clone, Copy)]
pub struct Snapshot<'a> {
    /// Every node.
    pub nodes: &'a [NodeInfo],
    /// Position of each node in `nodes`, by name.
    pub index: &'a HashMap<String, usize>,
    /// Namespace labels by namespace name.
    pub namespaces: &'a HashMap<String, Labels>,
    /// For each image name, how many nodes have it.
    pub image_nodes: &'a HashMap<String, usize>,
    /// Pods on the nodes with any pod (anti-)affinity.
    pub pods_with_affinity: usize,
    /// Pods on the nodes with required pod anti-affinity.
    pub pods_with_required_anti_affinity: usize,
    /// PodDisruptionBudgets, for preemption.
    pub pdbs: &'a [DisruptionBudget],
    /// Selectors for the default topology spread constraints.
    pub spreaders: &'a Spreaders,
}

static NO_LABELS: Labels = Labels::new();

impl<'a> Snapshot<'a> {
    /// The labels of a namespace (empty when unknown).
    pub fn namespace_labels(&self, namespace: &str) -> &'a Labels {
        self.namespaces.get(namespace).unwrap_or(&NO_LABELS)
    }

    /// The node named `name`, if known.
    pub fn node(&self, name: &str) -> Option<&'a NodeInfo> {
        self.index.get(name).map(|&i| &self.nodes[i])
    }
}
