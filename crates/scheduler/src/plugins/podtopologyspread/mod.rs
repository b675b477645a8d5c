//! PodTopologySpread: `topologySpreadConstraints` keep matching pods evenly spread over
//! topology domains (zones, hosts). `DoNotSchedule` constraints filter: placing the pod
//! must not make `matching pods in the domain - global minimum` exceed `maxSkew`.
//! `ScheduleAnyway` constraints score: domains with fewer matching pods score higher.
//! Pods without any constraint get the system defaults (`defaultingType: System`): skew 3
//! over hosts and 5 over zones, ScheduleAnyway, over the pods selected by the Services and
//! the ReplicaSet/StatefulSet/ReplicationController that select this pod.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Node, Pod, TopologySpreadConstraint};

use crate::framework::selector::{
    Effect, Labels, Selector, node_labels, pod_labels, pod_tolerations, tolerated,
};
use crate::framework::{
    ActionType, ClusterEventWithHint, Code, CycleState, EventObjects, EventResource, FilterPlugin,
    MAX_NODE_SCORE, NodeInfo, Plugin, PodInfo, PreFilterPlugin, PreFilterResult, PreScorePlugin,
    QueueingHint, ScorePlugin, Snapshot, Status,
};
use crate::plugins::nodeaffinity::RequiredNodeAffinity;

/// The plugin name.
pub const NAME: &str = super::names::POD_TOPOLOGY_SPREAD;
/// Reason: placing the pod would exceed a constraint's skew.
pub const ERR_REASON_CONSTRAINTS_NOT_MATCH: &str =
    "node(s) didn't match pod topology spread constraints";
/// Reason: the node lacks a constraint's topology label.
pub const ERR_REASON_NODE_LABEL_NOT_MATCH: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";
/// The hostname label (per-node domains are counted on the fly when scoring).
pub const LABEL_HOSTNAME: &str = "kubernetes.io/hostname";
/// The zone label.
pub const LABEL_ZONE: &str = "topology.kubernetes.io/zone";

/// The PodTopologySpread plugin.
#[derive(Debug, Default)]
pub struct PodTopologySpread;

/// One parsed constraint.
#[derive(Debug, Clone)]
pub struct Constraint {
    /// Allowed skew.
    pub max_skew: i32,
    /// The node label defining domains.
    pub topology_key: String,
    /// Which pods count.
    pub selector: Selector,
    /// Domains below which the global minimum counts as 0.
    pub min_domains: i32,
    /// Count only nodes that match the pod's node affinity/selector.
    pub honor_node_affinity: bool,
    /// Count only nodes whose taints the pod tolerates.
    pub honor_node_taints: bool,
}

impl Constraint {
    fn parse(c: &TopologySpreadConstraint, pod: &Pod) -> Self {
        let mut selector = Selector::from_label_selector(c.label_selector.as_ref());
        let labels = pod_labels(pod);
        for key in c.match_label_keys.iter().flatten() {
            if let Some(v) = labels.get(key) {
                selector.add_equal(key, v);
            }
        }
        Self {
            max_skew: c.max_skew,
            topology_key: c.topology_key.clone(),
            selector,
            min_domains: c.min_domains.unwrap_or(1),
            honor_node_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
            honor_node_taints: c.node_taints_policy.as_deref() == Some("Honor"),
        }
    }

    /// Whether a node counts for this constraint (node inclusion policies).
    fn includes(&self, pod: &PodInfo, node: &NodeInfo, affinity: &RequiredNodeAffinity) -> bool {
        if self.honor_node_affinity && !affinity.fits(&node.name, node.labels()) {
            return false;
        }
        if self.honor_node_taints {
            let tolerations = pod_tolerations(&pod.pod);
            if node
                .taints
                .iter()
                .filter(|t| matches!(t.effect, Effect::NoSchedule | Effect::NoExecute))
                .any(|t| !tolerated(tolerations, &t.taint))
            {
                return false;
            }
        }
        true
    }
}

/// The pod's constraints with `when_unsatisfiable == action`.
pub fn constraints(pod: &Pod, action: &str) -> Vec<Constraint> {
    pod.spec
        .as_ref()
        .and_then(|s| s.topology_spread_constraints.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| c.when_unsatisfiable == action)
        .map(|c| Constraint::parse(c, pod))
        .collect()
}

/// Upstream's system default constraints for a pod without any: `maxSkew` 3 over hosts and
/// 5 over zones, ScheduleAnyway, over what its Services and controller select (none when
/// nothing selects it).
pub fn default_constraints(pod: &Pod, snapshot: &Snapshot<'_>) -> Vec<Constraint> {
    let has_own = pod
        .spec
        .as_ref()
        .and_then(|s| s.topology_spread_constraints.as_ref())
        .is_some_and(|c| !c.is_empty());
    if has_own {
        return Vec::new();
    }
    let selector = snapshot.spreaders.default_selector(pod);
    if selector.is_everything() {
        return Vec::new();
    }
    [(3, LABEL_HOSTNAME), (5, LABEL_ZONE)]
        .into_iter()
        .map(|(max_skew, key)| Constraint {
            max_skew,
            topology_key: key.into(),
            selector: selector.clone(),
            min_domains: 1,
            honor_node_affinity: true,
            honor_node_taints: false,
        })
        .collect()
}

fn has_all_keys(labels: &Labels, constraints: &[Constraint]) -> bool {
    constraints
        .iter()
        .all(|c| labels.contains_key(&c.topology_key))
}

/// Pods on `node` in `namespace` matching `selector`, not being deleted.
pub fn count_matching(node: &NodeInfo, selector: &Selector, namespace: &str) -> i32 {
    node.pods
        .iter()
        .filter(|p| !p.terminating() && p.namespace() == namespace && selector.matches(p.labels()))
        .count() as i32
}

/// Whether placing a pod in a domain with `match_num` matching pods (plus itself when it
/// matches) keeps the skew over `min_match` within `max_skew` (the pure helper).
pub fn fits(match_num: i32, self_match: bool, min_match: i32, max_skew: i32) -> bool {
    match_num + i32::from(self_match) - min_match <= max_skew
}

/// PreFilter data: matching pods per domain, per constraint.
#[derive(Debug, Clone, Default)]
struct PreFilterState {
    constraints: Vec<Constraint>,
    counts: Vec<HashMap<String, i32>>,
    namespace: String,
    affinity: RequiredNodeAffinity,
}

impl PreFilterState {
    fn min_match(&self, i: usize) -> i32 {
        let counts = &self.counts[i];
        if (counts.len() as i32) < self.constraints[i].min_domains {
            return 0;
        }
        counts.values().copied().min().unwrap_or(i32::MAX)
    }

    fn update(&mut self, pod: &PodInfo, other: &PodInfo, node: &NodeInfo, delta: i32) {
        if other.namespace() != self.namespace || !has_all_keys(node.labels(), &self.constraints) {
            return;
        }
        for (i, c) in self.constraints.iter().enumerate() {
            if !c.selector.matches(other.labels()) || !c.includes(pod, node, &self.affinity) {
                continue;
            }
            if let Some(v) = node.labels().get(&c.topology_key) {
                *self.counts[i].entry(v.clone()).or_default() += delta;
            }
        }
    }
}

/// PreScore data.
#[derive(Debug, Clone, Default)]
struct PreScoreState {
    constraints: Vec<Constraint>,
    ignored: Vec<String>,
    counts: Vec<HashMap<String, i64>>,
    weights: Vec<f64>,
}

fn hint(pod: &PodInfo, objects: &EventObjects<'_>) -> QueueingHint {
    let cs = constraints(&pod.pod, "DoNotSchedule");
    let cs = if cs.is_empty() {
        constraints(&pod.pod, "ScheduleAnyway")
    } else {
        cs
    };
    let matches_pod = |p: &PodInfo| {
        p.namespace() == pod.namespace() && cs.iter().any(|c| c.selector.matches(p.labels()))
    };
    match objects {
        EventObjects::Pod { old, new } => {
            if old.is_some_and(matches_pod) || new.is_some_and(matches_pod) {
                QueueingHint::Queue
            } else {
                QueueingHint::Skip
            }
        }
        EventObjects::Node { old, new } => {
            let has = |n: &Node| {
                cs.iter()
                    .any(|c| node_labels(n).contains_key(&c.topology_key))
            };
            if old.is_some_and(has) || new.is_some_and(has) {
                QueueingHint::Queue
            } else {
                QueueingHint::Skip
            }
        }
        EventObjects::None => QueueingHint::Queue,
    }
}

impl Plugin for PodTopologySpread {
    fn name(&self) -> &'static str {
        NAME
    }
    fn events_to_register(&self) -> Vec<ClusterEventWithHint> {
        vec![
            ClusterEventWithHint::with_hint(
                EventResource::Pod,
                ActionType::ADD
                    .or(ActionType::UPDATE_POD_LABEL)
                    .or(ActionType::DELETE),
                hint,
            ),
            ClusterEventWithHint::with_hint(
                EventResource::Node,
                ActionType::ADD
                    .or(ActionType::DELETE)
                    .or(ActionType::UPDATE_NODE_LABEL)
                    .or(ActionType::UPDATE_NODE_TAINT),
                hint,
            ),
        ]
    }
    fn as_pre_filter(&self) -> Option<&dyn PreFilterPlugin> {
        Some(self)
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
    fn as_pre_score(&self) -> Option<&dyn PreScorePlugin> {
        Some(self)
    }
    fn as_score(&self) -> Option<&dyn ScorePlugin> {
        Some(self)
    }
}

impl PreFilterPlugin for PodTopologySpread {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snapshot: &Snapshot<'_>,
    ) -> (Option<PreFilterResult>, Status) {
        let cs = constraints(&pod.pod, "DoNotSchedule");
        if cs.is_empty() {
            return (None, Status::skip());
        }
        let affinity = RequiredNodeAffinity::of(&pod.pod);
        let mut counts: Vec<HashMap<String, i32>> = vec![HashMap::new(); cs.len()];
        for node in snapshot.nodes {
            if !has_all_keys(node.labels(), &cs) {
                continue;
            }
            for (i, c) in cs.iter().enumerate() {
                if !c.includes(pod, node, &affinity) {
                    continue;
                }
                let value = &node.labels()[&c.topology_key];
                let n = count_matching(node, &c.selector, pod.namespace());
                *counts[i].entry(value.clone()).or_default() += n;
            }
        }
        state.write(PreFilterState {
            constraints: cs,
            counts,
            namespace: pod.namespace().to_string(),
            affinity,
        });
        (None, Status::success())
    }

    fn has_extensions(&self) -> bool {
        true
    }

    fn add_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        to_add: &PodInfo,
        node: &NodeInfo,
        _: &Snapshot<'_>,
    ) -> Status {
        if let Some(s) = state.read_mut::<PreFilterState>() {
            s.update(pod, to_add, node, 1);
        }
        Status::success()
    }

    fn remove_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        to_remove: &PodInfo,
        node: &NodeInfo,
        _: &Snapshot<'_>,
    ) -> Status {
        if let Some(s) = state.read_mut::<PreFilterState>() {
            s.update(pod, to_remove, node, -1);
        }
        Status::success()
    }
}

impl FilterPlugin for PodTopologySpread {
    fn filter(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        node: &NodeInfo,
        _: &Snapshot<'_>,
    ) -> Status {
        let Some(s) = state.read::<PreFilterState>() else {
            return Status::success();
        };
        for (i, c) in s.constraints.iter().enumerate() {
            let Some(value) = node.labels().get(&c.topology_key) else {
                return Status::new(
                    Code::UnschedulableAndUnresolvable,
                    ERR_REASON_NODE_LABEL_NOT_MATCH,
                );
            };
            let min = s.min_match(i);
            let match_num = s.counts[i].get(value).copied().unwrap_or(0);
            if !fits(match_num, c.selector.matches(pod.labels()), min, c.max_skew) {
                return Status::new(Code::Unschedulable, ERR_REASON_CONSTRAINTS_NOT_MATCH);
            }
        }
        Status::success()
    }
}

impl PreScorePlugin for PodTopologySpread {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        nodes: &[&NodeInfo],
        snapshot: &Snapshot<'_>,
    ) -> Status {
        let mut cs = constraints(&pod.pod, "ScheduleAnyway");
        // With the system defaults, nodes lacking a topology label are not ignored (those
        // constraints just do not score them), as upstream's `requireAllTopologies`.
        let mut require_all = true;
        if cs.is_empty() {
            cs = default_constraints(&pod.pod, snapshot);
            require_all = false;
        }
        if cs.is_empty() || snapshot.nodes.is_empty() {
            return Status::skip();
        }
        let mut s = PreScoreState {
            counts: vec![HashMap::new(); cs.len()],
            ..Default::default()
        };
        let mut sizes = vec![0usize; cs.len()];
        let value = |node: &NodeInfo, key: &str| {
            node.labels()
                .get(key)
                .map_or_else(String::new, String::clone)
        };
        for node in nodes {
            if require_all && !has_all_keys(node.labels(), &cs) {
                s.ignored.push(node.name.clone());
                continue;
            }
            for (i, c) in cs.iter().enumerate() {
                if c.topology_key == LABEL_HOSTNAME {
                    continue;
                }
                let v = value(node, &c.topology_key);
                if let std::collections::hash_map::Entry::Vacant(slot) = s.counts[i].entry(v) {
                    slot.insert(0);
                    sizes[i] += 1;
                }
            }
        }
        s.weights = cs
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let size = if c.topology_key == LABEL_HOSTNAME {
                    nodes.len() - s.ignored.len()
                } else {
                    sizes[i]
                };
                ((size + 2) as f64).ln()
            })
            .collect();
        let affinity = RequiredNodeAffinity::of(&pod.pod);
        for node in snapshot.nodes {
            if require_all && !has_all_keys(node.labels(), &cs) {
                continue;
            }
            for (i, c) in cs.iter().enumerate() {
                if c.topology_key == LABEL_HOSTNAME || !c.includes(pod, node, &affinity) {
                    continue;
                }
                if let Some(slot) = s.counts[i].get_mut(&value(node, &c.topology_key)) {
                    *slot += i64::from(count_matching(node, &c.selector, pod.namespace()));
                }
            }
        }
        s.constraints = cs;
        state.write(s);
        Status::success()
    }
}

impl ScorePlugin for PodTopologySpread {
    fn score(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        node: &NodeInfo,
        _: &Snapshot<'_>,
    ) -> Result<i64, Status> {
        let Some(s) = state.read::<PreScoreState>() else {
            return Ok(0);
        };
        if s.ignored.contains(&node.name) {
            return Ok(-1);
        }
        let mut score = 0.0;
        for (i, c) in s.constraints.iter().enumerate() {
            let Some(v) = node.labels().get(&c.topology_key) else {
                continue;
            };
            let count = if c.topology_key == LABEL_HOSTNAME {
                i64::from(count_matching(node, &c.selector, pod.namespace()))
            } else {
                s.counts[i].get(v).copied().unwrap_or(0)
            };
            score += count as f64 * s.weights[i] + f64::from(c.max_skew - 1);
        }
        Ok(score.round() as i64)
    }

    fn normalize(&self, state: &CycleState, _: &PodInfo, scores: &mut [i64]) -> Status {
        if state.read::<PreScoreState>().is_none() {
            return Status::success();
        }
        // Ignored nodes scored -1.
        let valid = scores.iter().copied().filter(|s| *s >= 0);
        let min = valid.clone().min().unwrap_or(0);
        let max = valid.max().unwrap_or(0);
        for s in scores.iter_mut() {
            *s = if *s < 0 {
                0
            } else if max == 0 {
                MAX_NODE_SCORE
            } else {
                MAX_NODE_SCORE * (max + min - *s) / max
            };
        }
        Status::success()
    }
}

#[cfg(test)]
mod tests;
