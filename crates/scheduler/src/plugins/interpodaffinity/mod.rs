//! InterPodAffinity: required pod affinity puts a pod only in topology domains that already
//! run matching pods; required anti-affinity (the pod's own, and existing pods' against it)
//! keeps it out of domains that do. Preferred terms (and existing pods' terms towards the
//! pod) add or subtract their weights per domain when scoring.

use std::collections::HashMap;

use crate::framework::selector::Labels;
use crate::framework::types::AffinityTerm;
use crate::framework::{
    ActionType, ClusterEventWithHint, Code, CycleState, EventObjects, EventResource, FilterPlugin,
    MAX_NODE_SCORE, NodeInfo, Plugin, PodInfo, PreFilterPlugin, PreFilterResult, PreScorePlugin,
    QueueingHint, ScorePlugin, Snapshot, Status,
};

/// The plugin name.
pub const NAME: &str = super::names::INTER_POD_AFFINITY;
/// Reason: an existing pod's anti-affinity forbids this pod here.
pub const ERR_REASON_EXISTING_ANTI_AFFINITY_RULES_NOT_MATCH: &str =
    "node(s) didn't satisfy existing pods anti-affinity rules";
/// Reason: no matching pod in the node's domain for a required affinity term.
pub const ERR_REASON_AFFINITY_RULES_NOT_MATCH: &str = "node(s) didn't match pod affinity rules";
/// Reason: a matching pod in the node's domain for a required anti-affinity term.
pub const ERR_REASON_ANTI_AFFINITY_RULES_NOT_MATCH: &str =
    "node(s) didn't match pod anti-affinity rules";
/// Weight of existing pods' required affinity terms towards the pod when scoring.
pub const HARD_POD_AFFINITY_WEIGHT: i64 = 1;

/// The InterPodAffinity plugin.
#[derive(Debug, Default)]
pub struct InterPodAffinity;

type TopologyCounts = HashMap<(String, String), i64>;

fn bump(counts: &mut TopologyCounts, key: &str, labels: &Labels, delta: i64) {
    if let Some(v) = labels.get(key) {
        let k = (key.to_string(), v.clone());
        let e = counts.entry(k.clone()).or_default();
        *e += delta;
        if *e == 0 {
            counts.remove(&k);
        }
    }
}

fn matches_term(term: &AffinityTerm, pod: &PodInfo, snapshot: &Snapshot<'_>) -> bool {
    term.matches(
        pod.namespace(),
        pod.labels(),
        snapshot.namespace_labels(pod.namespace()),
    )
}

fn matches_all(terms: &[AffinityTerm], pod: &PodInfo, snapshot: &Snapshot<'_>) -> bool {
    !terms.is_empty() && terms.iter().all(|t| matches_term(t, pod, snapshot))
}

/// PreFilter data: matches per topology pair.
#[derive(Debug, Clone, Default)]
struct PreFilterState {
    /// Existing pods whose required anti-affinity terms match the incoming pod.
    existing_anti: TopologyCounts,
    /// Existing pods matching all of the incoming pod's required affinity terms.
    affinity: TopologyCounts,
    /// Existing pods matching the incoming pod's required anti-affinity terms.
    anti: TopologyCounts,
}

impl PreFilterState {
    fn update(
        &mut self,
        pod: &PodInfo,
        other: &PodInfo,
        node: &NodeInfo,
        snapshot: &Snapshot<'_>,
        delta: i64,
    ) {
        let labels = node.labels();
        for t in &other.required_anti_affinity {
            if matches_term(t, pod, snapshot) {
                bump(&mut self.existing_anti, &t.topology_key, labels, delta);
            }
        }
        if matches_all(&pod.required_affinity, other, snapshot) {
            for t in &pod.required_affinity {
                bump(&mut self.affinity, &t.topology_key, labels, delta);
            }
        }
        for t in &pod.required_anti_affinity {
            if matches_term(t, other, snapshot) {
                bump(&mut self.anti, &t.topology_key, labels, delta);
            }
        }
    }
}

/// Why `pod` may not run on a node with `labels` given the counts (None: it may).
fn check(
    s: &PreFilterState,
    pod: &PodInfo,
    labels: &Labels,
    snapshot: &Snapshot<'_>,
) -> Option<(Code, &'static str)> {
    // Required affinity: every term's domain must hold a matching pod.
    let mut pods_exist = true;
    for t in &pod.required_affinity {
        match labels.get(&t.topology_key) {
            Some(v) => {
                if s.affinity
                    .get(&(t.topology_key.clone(), v.clone()))
                    .copied()
                    .unwrap_or(0)
                    <= 0
                {
                    pods_exist = false;
                }
            }
            None => {
                return Some((
                    Code::UnschedulableAndUnresolvable,
                    ERR_REASON_AFFINITY_RULES_NOT_MATCH,
                ));
            }
        }
    }
    // The first of a group of pods with affinity to each other may go anywhere.
    let first_of_group =
        s.affinity.is_empty() && matches_all(&pod.required_affinity, pod, snapshot);
    if !(pods_exist || first_of_group) {
        return Some((
            Code::UnschedulableAndUnresolvable,
            ERR_REASON_AFFINITY_RULES_NOT_MATCH,
        ));
    }
    for t in &pod.required_anti_affinity {
        if let Some(v) = labels.get(&t.topology_key)
            && s.anti
                .get(&(t.topology_key.clone(), v.clone()))
                .copied()
                .unwrap_or(0)
                > 0
        {
            return Some((
                Code::Unschedulable,
                ERR_REASON_ANTI_AFFINITY_RULES_NOT_MATCH,
            ));
        }
    }
    for ((k, v), n) in &s.existing_anti {
        if *n > 0 && labels.get(k) == Some(v) {
            return Some((
                Code::Unschedulable,
                ERR_REASON_EXISTING_ANTI_AFFINITY_RULES_NOT_MATCH,
            ));
        }
    }
    None
}

/// Whether `pod` may run on `node` among the snapshot's pods (the pure helper; computes
/// the counts from scratch).
pub fn fits(pod: &PodInfo, node: &NodeInfo, snapshot: &Snapshot<'_>) -> Result<(), &'static str> {
    let s = pre_filter_state(pod, snapshot);
    match check(&s, pod, node.labels(), snapshot) {
        None => Ok(()),
        Some((_, reason)) => Err(reason),
    }
}

fn pre_filter_state(pod: &PodInfo, snapshot: &Snapshot<'_>) -> PreFilterState {
    let mut s = PreFilterState::default();
    for node in snapshot.nodes {
        let labels = node.labels();
        for existing in &node.pods_with_required_anti_affinity {
            for t in &existing.required_anti_affinity {
                if matches_term(t, pod, snapshot) {
                    bump(&mut s.existing_anti, &t.topology_key, labels, 1);
                }
            }
        }
        if pod.required_affinity.is_empty() && pod.required_anti_affinity.is_empty() {
            continue;
        }
        for existing in &node.pods {
            if matches_all(&pod.required_affinity, existing, snapshot) {
                for t in &pod.required_affinity {
                    bump(&mut s.affinity, &t.topology_key, labels, 1);
                }
            }
            for t in &pod.required_anti_affinity {
                if matches_term(t, existing, snapshot) {
                    bump(&mut s.anti, &t.topology_key, labels, 1);
                }
            }
        }
    }
    s
}

/// PreScore data: score per topology pair.
#[derive(Debug, Clone, Default)]
struct PreScoreState {
    topology_score: HashMap<String, HashMap<String, i64>>,
}

fn add_score(
    scores: &mut HashMap<String, HashMap<String, i64>>,
    key: &str,
    labels: &Labels,
    weight: i64,
) {
    if let Some(v) = labels.get(key) {
        *scores
            .entry(key.to_string())
            .or_default()
            .entry(v.clone())
            .or_default() += weight;
    }
}

fn hint(pod: &PodInfo, objects: &EventObjects<'_>) -> QueueingHint {
    let EventObjects::Pod { old, new } = objects else {
        return QueueingHint::Queue;
    };
    let relevant = |other: &PodInfo| {
        let ns = std::collections::BTreeMap::new();
        pod.required_affinity
            .iter()
            .chain(&pod.required_anti_affinity)
            .any(|t| {
                t.matches(other.namespace(), other.labels(), &ns) || t.namespace_selector.is_some()
            })
            || !other.required_anti_affinity.is_empty()
    };
    if old.is_some_and(&relevant) || new.is_some_and(relevant) {
        QueueingHint::Queue
    } else {
        QueueingHint::Skip
    }
}

impl Plugin for InterPodAffinity {
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
            ClusterEventWithHint::new(
                EventResource::Node,
                ActionType::ADD.or(ActionType::UPDATE_NODE_LABEL),
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

impl PreFilterPlugin for InterPodAffinity {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snapshot: &Snapshot<'_>,
    ) -> (Option<PreFilterResult>, Status) {
        if pod.required_affinity.is_empty()
            && pod.required_anti_affinity.is_empty()
            && snapshot.pods_with_required_anti_affinity == 0
        {
            return (None, Status::skip());
        }
        state.write(pre_filter_state(pod, snapshot));
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
        snapshot: &Snapshot<'_>,
    ) -> Status {
        if let Some(s) = state.read_mut::<PreFilterState>() {
            s.update(pod, to_add, node, snapshot, 1);
        }
        Status::success()
    }

    fn remove_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        to_remove: &PodInfo,
        node: &NodeInfo,
        snapshot: &Snapshot<'_>,
    ) -> Status {
        if let Some(s) = state.read_mut::<PreFilterState>() {
            s.update(pod, to_remove, node, snapshot, -1);
        }
        Status::success()
    }
}

impl FilterPlugin for InterPodAffinity {
    fn filter(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        node: &NodeInfo,
        snapshot: &Snapshot<'_>,
    ) -> Status {
        let Some(s) = state.read::<PreFilterState>() else {
            return Status::success();
        };
        match check(s, pod, node.labels(), snapshot) {
            None => Status::success(),
            Some((code, reason)) => Status::new(code, reason),
        }
    }
}

impl PreScorePlugin for InterPodAffinity {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _: &[&NodeInfo],
        snapshot: &Snapshot<'_>,
    ) -> Status {
        let has_constraints =
            !pod.preferred_affinity.is_empty() || !pod.preferred_anti_affinity.is_empty();
        if !has_constraints && snapshot.pods_with_affinity == 0 {
            return Status::skip();
        }
        let mut scores: HashMap<String, HashMap<String, i64>> = HashMap::new();
        let pod_ns_labels = snapshot.namespace_labels(pod.namespace());
        for node in snapshot.nodes {
            let existing_pods = if has_constraints {
                &node.pods
            } else {
                &node.pods_with_affinity
            };
            let labels = node.labels();
            for existing in existing_pods {
                let existing_ns = snapshot.namespace_labels(existing.namespace());
                for w in &pod.preferred_affinity {
                    if w.term
                        .matches(existing.namespace(), existing.labels(), existing_ns)
                    {
                        add_score(&mut scores, &w.term.topology_key, labels, w.weight);
                    }
                }
                for w in &pod.preferred_anti_affinity {
                    if w.term
                        .matches(existing.namespace(), existing.labels(), existing_ns)
                    {
                        add_score(&mut scores, &w.term.topology_key, labels, -w.weight);
                    }
                }
                for t in &existing.required_affinity {
                    if t.matches(pod.namespace(), pod.labels(), pod_ns_labels) {
                        add_score(
                            &mut scores,
                            &t.topology_key,
                            labels,
                            HARD_POD_AFFINITY_WEIGHT,
                        );
                    }
                }
                for w in &existing.preferred_affinity {
                    if w.term.matches(pod.namespace(), pod.labels(), pod_ns_labels) {
                        add_score(&mut scores, &w.term.topology_key, labels, w.weight);
                    }
                }
                for w in &existing.preferred_anti_affinity {
                    if w.term.matches(pod.namespace(), pod.labels(), pod_ns_labels) {
                        add_score(&mut scores, &w.term.topology_key, labels, -w.weight);
                    }
                }
            }
        }
        if scores.is_empty() {
            return Status::skip();
        }
        state.write(PreScoreState {
            topology_score: scores,
        });
        Status::success()
    }
}

impl ScorePlugin for InterPodAffinity {
    fn score(
        &self,
        state: &CycleState,
        _: &PodInfo,
        node: &NodeInfo,
        _: &Snapshot<'_>,
    ) -> Result<i64, Status> {
        let Some(s) = state.read::<PreScoreState>() else {
            return Ok(0);
        };
        let labels = node.labels();
        Ok(s.topology_score
            .iter()
            .filter_map(|(k, values)| labels.get(k).and_then(|v| values.get(v)))
            .sum())
    }

    fn normalize(&self, state: &CycleState, _: &PodInfo, scores: &mut [i64]) -> Status {
        if state.read::<PreScoreState>().is_none() {
            return Status::success();
        }
        let min = scores.iter().copied().min().unwrap_or(0);
        let max = scores.iter().copied().max().unwrap_or(0);
        let diff = max - min;
        for s in scores.iter_mut() {
            *s = if diff > 0 {
                (MAX_NODE_SCORE as f64 * ((*s - min) as f64 / diff as f64)) as i64
            } else {
                0
            };
        }
        Status::success()
    }
}

#[cfg(test)]
mod tests;
