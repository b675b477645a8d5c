//! Builders for tests, in the style of upstream's `MakePod()`/`MakeNode()` wrappers.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    Affinity, Container, ContainerImage, ContainerPort, Node, NodeAffinity, NodeSelector,
    NodeSelectorRequirement, NodeSelectorTerm, NodeSpec, NodeStatus, Pod, PodAffinity,
    PodAffinityTerm, PodAntiAffinity, PodSpec, PodStatus, PreferredSchedulingTerm,
    ResourceRequirements, Taint, Toleration, TopologySpreadConstraint, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};

use crate::framework::selector::Labels;
use crate::framework::{NodeInfo, PodInfo, Snapshot};

fn quantities(list: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    list.iter()
        .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
        .collect()
}

fn labels(list: &[(&str, &str)]) -> BTreeMap<String, String> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn selector(list: &[(&str, &str)]) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels(list)),
        match_expressions: None,
    }
}

/// Builds a pod.
#[derive(Clone)]
pub(crate) struct PodBuilder {
    pod: Pod,
}

/// A pod named `name` in `default` (uid = name).
pub(crate) fn pod(name: &str) -> PodBuilder {
    PodBuilder {
        pod: Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(name.into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                scheduler_name: Some("default-scheduler".into()),
                ..Default::default()
            }),
            status: Some(PodStatus::default()),
        },
    }
}

impl PodBuilder {
    fn spec(&mut self) -> &mut PodSpec {
        self.pod.spec.get_or_insert_with(Default::default)
    }

    fn affinity(&mut self) -> &mut Affinity {
        self.spec().affinity.get_or_insert_with(Default::default)
    }

    /// Sets the namespace.
    pub(crate) fn namespace(mut self, ns: &str) -> Self {
        self.pod.metadata.namespace = Some(ns.into());
        self
    }

    /// Sets the uid.
    pub(crate) fn uid(mut self, uid: &str) -> Self {
        self.pod.metadata.uid = Some(uid.into());
        self
    }

    /// Adds a label.
    pub(crate) fn label(mut self, k: &str, v: &str) -> Self {
        self.pod
            .metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(k.into(), v.into());
        self
    }

    /// Binds to a node.
    pub(crate) fn owner(mut self, api_version: &str, kind: &str, name: &str) -> Self {
        self.pod.metadata.owner_references = Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                api_version: api_version.into(),
                kind: kind.into(),
                name: name.into(),
                uid: format!("{name}-uid"),
                controller: Some(true),
                ..Default::default()
            },
        ]);
        self
    }

    pub(crate) fn node(mut self, node: &str) -> Self {
        self.spec().node_name = Some(node.into());
        self
    }

    /// Sets the priority.
    pub(crate) fn priority(mut self, p: i32) -> Self {
        self.spec().priority = Some(p);
        self
    }

    /// Sets the preemption policy.
    pub(crate) fn preemption_policy(mut self, p: &str) -> Self {
        self.spec().preemption_policy = Some(p.into());
        self
    }

    /// Sets the scheduler name.
    pub(crate) fn scheduler(mut self, name: &str) -> Self {
        self.spec().scheduler_name = Some(name.into());
        self
    }

    /// Adds a container with these requests.
    pub(crate) fn req(mut self, requests: &[(&str, &str)]) -> Self {
        let n = self.spec().containers.len();
        self.spec().containers.push(Container {
            name: format!("c{n}"),
            image: Some("busybox".into()),
            resources: Some(ResourceRequirements {
                requests: (!requests.is_empty()).then(|| quantities(requests)),
                ..Default::default()
            }),
            ..Default::default()
        });
        self
    }

    /// Adds an init container with these requests (a sidecar when `sidecar`).
    pub(crate) fn init_req(mut self, requests: &[(&str, &str)], sidecar: bool) -> Self {
        let list = self.spec().init_containers.get_or_insert_with(Vec::new);
        let n = list.len();
        list.push(Container {
            name: format!("i{n}"),
            restart_policy: sidecar.then(|| "Always".into()),
            resources: Some(ResourceRequirements {
                requests: Some(quantities(requests)),
                ..Default::default()
            }),
            ..Default::default()
        });
        self
    }

    /// Sets the pod overhead.
    pub(crate) fn overhead(mut self, list: &[(&str, &str)]) -> Self {
        self.spec().overhead = Some(quantities(list));
        self
    }

    /// Adds a container image (a container without requests).
    pub(crate) fn image(mut self, image: &str) -> Self {
        let n = self.spec().containers.len();
        self.spec().containers.push(Container {
            name: format!("c{n}"),
            image: Some(image.into()),
            ..Default::default()
        });
        self
    }

    /// Adds a container claiming a host port.
    pub(crate) fn host_port(mut self, port: i32, ip: Option<&str>, protocol: Option<&str>) -> Self {
        let n = self.spec().containers.len();
        self.spec().containers.push(Container {
            name: format!("c{n}"),
            ports: Some(vec![ContainerPort {
                container_port: port,
                host_port: Some(port),
                host_ip: ip.map(Into::into),
                protocol: protocol.map(Into::into),
                ..Default::default()
            }]),
            ..Default::default()
        });
        self
    }

    /// Adds a toleration (`Equal` when `value` is Some, else `Exists`).
    pub(crate) fn toleration(
        mut self,
        key: &str,
        value: Option<&str>,
        effect: Option<&str>,
    ) -> Self {
        self.spec()
            .tolerations
            .get_or_insert_with(Vec::new)
            .push(Toleration {
                key: Some(key.into()),
                operator: Some(if value.is_some() { "Equal" } else { "Exists" }.into()),
                value: value.map(Into::into),
                effect: effect.map(Into::into),
                toleration_seconds: None,
            });
        self
    }

    /// Adds a nodeSelector entry.
    pub(crate) fn node_selector(mut self, k: &str, v: &str) -> Self {
        self.spec()
            .node_selector
            .get_or_insert_with(Default::default)
            .insert(k.into(), v.into());
        self
    }

    /// Adds a required node affinity term `key In values`.
    pub(crate) fn node_affinity_in(mut self, key: &str, values: &[&str]) -> Self {
        let na = self
            .affinity()
            .node_affinity
            .get_or_insert_with(NodeAffinity::default);
        na.required_during_scheduling_ignored_during_execution
            .get_or_insert_with(|| NodeSelector {
                node_selector_terms: Vec::new(),
            })
            .node_selector_terms
            .push(NodeSelectorTerm {
                match_expressions: Some(vec![NodeSelectorRequirement {
                    key: key.into(),
                    operator: "In".into(),
                    values: Some(values.iter().map(|v| v.to_string()).collect()),
                }]),
                match_fields: None,
            });
        self
    }

    /// Adds a required node affinity term `metadata.name In names`.
    pub(crate) fn node_name_affinity(mut self, names: &[&str]) -> Self {
        let na = self
            .affinity()
            .node_affinity
            .get_or_insert_with(NodeAffinity::default);
        na.required_during_scheduling_ignored_during_execution
            .get_or_insert_with(|| NodeSelector {
                node_selector_terms: Vec::new(),
            })
            .node_selector_terms
            .push(NodeSelectorTerm {
                match_expressions: None,
                match_fields: Some(vec![NodeSelectorRequirement {
                    key: "metadata.name".into(),
                    operator: "In".into(),
                    values: Some(names.iter().map(|v| v.to_string()).collect()),
                }]),
            });
        self
    }

    /// Adds a preferred node affinity term `key In values` with `weight`.
    pub(crate) fn preferred_node_affinity(
        mut self,
        weight: i32,
        key: &str,
        values: &[&str],
    ) -> Self {
        let na = self
            .affinity()
            .node_affinity
            .get_or_insert_with(NodeAffinity::default);
        na.preferred_during_scheduling_ignored_during_execution
            .get_or_insert_with(Vec::new)
            .push(PreferredSchedulingTerm {
                weight,
                preference: NodeSelectorTerm {
                    match_expressions: Some(vec![NodeSelectorRequirement {
                        key: key.into(),
                        operator: "In".into(),
                        values: Some(values.iter().map(|v| v.to_string()).collect()),
                    }]),
                    match_fields: None,
                },
            });
        self
    }

    fn term(topology: &str, sel: &[(&str, &str)]) -> PodAffinityTerm {
        PodAffinityTerm {
            label_selector: Some(selector(sel)),
            topology_key: topology.into(),
            ..Default::default()
        }
    }

    /// Adds a required pod affinity term.
    pub(crate) fn pod_affinity(mut self, topology: &str, sel: &[(&str, &str)]) -> Self {
        self.affinity()
            .pod_affinity
            .get_or_insert_with(PodAffinity::default)
            .required_during_scheduling_ignored_during_execution
            .get_or_insert_with(Vec::new)
            .push(Self::term(topology, sel));
        self
    }

    /// Adds a required pod anti-affinity term.
    pub(crate) fn pod_anti_affinity(mut self, topology: &str, sel: &[(&str, &str)]) -> Self {
        self.affinity()
            .pod_anti_affinity
            .get_or_insert_with(PodAntiAffinity::default)
            .required_during_scheduling_ignored_during_execution
            .get_or_insert_with(Vec::new)
            .push(Self::term(topology, sel));
        self
    }

    /// Adds a preferred pod affinity term.
    pub(crate) fn preferred_pod_affinity(
        mut self,
        w: i32,
        topology: &str,
        sel: &[(&str, &str)],
    ) -> Self {
        self.affinity()
            .pod_affinity
            .get_or_insert_with(PodAffinity::default)
            .preferred_during_scheduling_ignored_during_execution
            .get_or_insert_with(Vec::new)
            .push(WeightedPodAffinityTerm {
                weight: w,
                pod_affinity_term: Self::term(topology, sel),
            });
        self
    }

    /// Adds a preferred pod anti-affinity term.
    pub(crate) fn preferred_pod_anti_affinity(
        mut self,
        w: i32,
        topology: &str,
        sel: &[(&str, &str)],
    ) -> Self {
        self.affinity()
            .pod_anti_affinity
            .get_or_insert_with(PodAntiAffinity::default)
            .preferred_during_scheduling_ignored_during_execution
            .get_or_insert_with(Vec::new)
            .push(WeightedPodAffinityTerm {
                weight: w,
                pod_affinity_term: Self::term(topology, sel),
            });
        self
    }

    /// Adds a topology spread constraint.
    pub(crate) fn spread(
        mut self,
        max_skew: i32,
        topology: &str,
        when: &str,
        sel: &[(&str, &str)],
    ) -> Self {
        self.spec()
            .topology_spread_constraints
            .get_or_insert_with(Vec::new)
            .push(TopologySpreadConstraint {
                max_skew,
                topology_key: topology.into(),
                when_unsatisfiable: when.into(),
                label_selector: Some(selector(sel)),
                ..Default::default()
            });
        self
    }

    /// Sets `status.startTime` (seconds since the epoch).
    pub(crate) fn start_time(mut self, secs: i64) -> Self {
        self.pod
            .status
            .get_or_insert_with(Default::default)
            .start_time = Some(Time(
            k8s_openapi::jiff::Timestamp::from_second(secs).unwrap(),
        ));
        self
    }

    /// Sets `status.nominatedNodeName`.
    pub(crate) fn nominated(mut self, node: &str) -> Self {
        self.pod
            .status
            .get_or_insert_with(Default::default)
            .nominated_node_name = Some(node.into());
        self
    }

    /// Adds a scheduling gate.
    pub(crate) fn gate(mut self, name: &str) -> Self {
        self.spec()
            .scheduling_gates
            .get_or_insert_with(Vec::new)
            .push(k8s_openapi::api::core::v1::PodSchedulingGate { name: name.into() });
        self
    }

    /// The pod.
    pub(crate) fn obj(self) -> Pod {
        self.pod
    }

    /// The parsed pod.
    pub(crate) fn info(self) -> PodInfo {
        PodInfo::new(Arc::new(self.pod))
    }

    /// The parsed pod, shared.
    pub(crate) fn arc(self) -> Arc<PodInfo> {
        Arc::new(self.info())
    }
}

/// Builds a node.
#[derive(Clone)]
pub(crate) struct NodeBuilder {
    node: Node,
}

/// A node named `name` with 4 CPUs, 8 GiB and 110 pods, labelled with its hostname.
pub(crate) fn node(name: &str) -> NodeBuilder {
    NodeBuilder {
        node: Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(labels(&[("kubernetes.io/hostname", name)])),
                ..Default::default()
            },
            spec: Some(NodeSpec::default()),
            status: Some(NodeStatus {
                allocatable: Some(quantities(&[
                    ("cpu", "4"),
                    ("memory", "8Gi"),
                    ("pods", "110"),
                ])),
                ..Default::default()
            }),
        },
    }
}

impl NodeBuilder {
    /// Adds a label.
    pub(crate) fn label(mut self, k: &str, v: &str) -> Self {
        self.node
            .metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(k.into(), v.into());
        self
    }

    /// Adds a taint.
    pub(crate) fn taint(mut self, key: &str, value: &str, effect: &str) -> Self {
        self.node
            .spec
            .get_or_insert_with(Default::default)
            .taints
            .get_or_insert_with(Vec::new)
            .push(Taint {
                key: key.into(),
                value: (!value.is_empty()).then(|| value.into()),
                effect: effect.into(),
                time_added: None,
            });
        self
    }

    /// Marks the node unschedulable.
    pub(crate) fn unschedulable(mut self) -> Self {
        self.node
            .spec
            .get_or_insert_with(Default::default)
            .unschedulable = Some(true);
        self
    }

    /// Replaces allocatable.
    pub(crate) fn allocatable(mut self, list: &[(&str, &str)]) -> Self {
        self.node
            .status
            .get_or_insert_with(Default::default)
            .allocatable = Some(quantities(list));
        self
    }

    /// Adds an image.
    pub(crate) fn image(mut self, names: &[&str], size: i64) -> Self {
        self.node
            .status
            .get_or_insert_with(Default::default)
            .images
            .get_or_insert_with(Vec::new)
            .push(ContainerImage {
                names: Some(names.iter().map(|n| n.to_string()).collect()),
                size_bytes: Some(size),
            });
        self
    }

    /// The node.
    pub(crate) fn obj(self) -> Node {
        self.node
    }

    /// A node info with these pods on it.
    pub(crate) fn with_pods(self, pods: Vec<PodInfo>) -> NodeInfo {
        let mut info = NodeInfo::new(Arc::new(self.node));
        for p in pods {
            info.add_pod(Arc::new(p));
        }
        info
    }

    /// A node info without pods.
    pub(crate) fn info(self) -> NodeInfo {
        self.with_pods(Vec::new())
    }
}

/// Nodes plus what a snapshot needs around them.
pub(crate) struct TestCluster {
    /// The nodes.
    pub(crate) nodes: Vec<NodeInfo>,
    index: HashMap<String, usize>,
    namespaces: HashMap<String, Labels>,
    image_nodes: HashMap<String, usize>,
    pdbs: Vec<crate::framework::types::DisruptionBudget>,
    /// Service and workload selectors.
    pub(crate) spreaders: crate::framework::types::Spreaders,
}

impl TestCluster {
    /// A cluster of these nodes.
    pub(crate) fn new(nodes: Vec<NodeInfo>) -> Self {
        let index = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.clone(), i))
            .collect();
        let mut image_nodes: HashMap<String, usize> = HashMap::new();
        for n in &nodes {
            for name in n.images.keys() {
                *image_nodes.entry(name.clone()).or_default() += 1;
            }
        }
        Self {
            nodes,
            index,
            namespaces: HashMap::new(),
            image_nodes,
            pdbs: Vec::new(),
            spreaders: Default::default(),
        }
    }

    /// Adds a PodDisruptionBudget over `app=<app>` pods in `default`.
    pub(crate) fn pdb(mut self, app: &str, allowed: i32) -> Self {
        self.pdbs.push(crate::framework::types::DisruptionBudget {
            namespace: "default".into(),
            selector: crate::framework::selector::Selector::from_label_selector(Some(&selector(
                &[("app", app)],
            ))),
            disruptions_allowed: allowed,
            disrupted_pods: Vec::new(),
        });
        self
    }

    /// Labels a namespace.
    pub(crate) fn namespace(mut self, name: &str, l: &[(&str, &str)]) -> Self {
        self.namespaces.insert(name.into(), labels(l));
        self
    }

    /// The snapshot.
    pub(crate) fn snapshot(&self) -> Snapshot<'_> {
        Snapshot {
            nodes: &self.nodes,
            index: &self.index,
            namespaces: &self.namespaces,
            image_nodes: &self.image_nodes,
            pods_with_affinity: self.nodes.iter().map(|n| n.pods_with_affinity.len()).sum(),
            pods_with_required_anti_affinity: self
                .nodes
                .iter()
                .map(|n| n.pods_with_required_anti_affinity.len())
                .sum(),
            pdbs: &self.pdbs,
            spreaders: &self.spreaders,
        }
    }
}
