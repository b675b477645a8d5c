//! NodeAffinity: `spec.nodeSelector` and required node affinity keep a pod off nodes whose
//! labels (or name, with `matchFields`) do not match; preferred terms add their weights to
//! the score of matching nodes.

use k8s_openapi::api::core::v1::{Node, Pod};

use crate::framework::selector::{Labels, NodeTerm, node_labels, node_selector_terms};
use crate::framework::{
    ActionType, ClusterEventWithHint, Code, CycleState, EventObjects, EventResource, FilterPlugin,
    MAX_NODE_SCORE, NodeInfo, Plugin, PodInfo, PreFilterPlugin, PreFilterResult, PreScorePlugin,
    QueueingHint, ScorePlugin, Snapshot, Status, default_normalize_score,
};

/// The plugin name.
pub const NAME: &str = super::names::NODE_AFFINITY;
/// Why a node was rejected.
pub const ERR_REASON_POD: &str = "node(s) didn't match Pod's node affinity/selector";

/// The NodeAffinity plugin.
#[derive(Debug, Default)]
pub struct NodeAffinity;

/// A pod's hard node constraints: `nodeSelector` plus required affinity terms (ORed).
#[derive(Debug, Clone, Default)]
pub struct RequiredNodeAffinity {
    selector: Vec<(String, String)>,
    terms: Option<Vec<NodeTerm>>,
}

impl RequiredNodeAffinity {
    /// The constraints of `pod`.
    pub fn of(pod: &Pod) -> Self {
        let spec = pod.spec.as_ref();
        let selector = spec
            .and_then(|s| s.node_selector.as_ref())
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        let terms = spec
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|na| {
                na.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .map(node_selector_terms);
        Self { selector, terms }
    }

    /// No constraint at all.
    pub fn is_empty(&self) -> bool {
        self.selector.is_empty() && self.terms.is_none()
    }

    /// Whether a node with `name` and `labels` satisfies the constraints (the pure helper).
    pub fn fits(&self, name: &str, labels: &Labels) -> bool {
        self.selector
            .iter()
            .all(|(k, v)| labels.get(k).is_some_and(|l| l == v))
            && self
                .terms
                .as_ref()
                .is_none_or(|terms| terms.iter().any(|t| t.matches(name, labels)))
    }

    /// Whether `node` satisfies the constraints.
    pub fn fits_node(&self, node: &Node) -> bool {
        self.fits(
            node.metadata.name.as_deref().unwrap_or(""),
            node_labels(node),
        )
    }

    /// The node names the terms are restricted to, when every term names nodes.
    fn node_names(&self) -> Option<Vec<String>> {
        let terms = self.terms.as_ref()?;
        let mut names: Vec<String> = Vec::new();
        for t in terms {
            for n in t.name_restriction()? {
                if !names.contains(&n) {
                    names.push(n);
                }
            }
        }
        Some(names)
    }
}

/// PreFilter data.
#[derive(Debug, Clone)]
struct PreFilterState(RequiredNodeAffinity);

/// PreScore data: the preferred terms and their weights.
#[derive(Debug, Clone)]
struct PreScoreState(Vec<(NodeTerm, i64)>);

fn preferred_terms(pod: &Pod) -> Vec<(NodeTerm, i64)> {
    pod.spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .into_iter()
        .flatten()
        .filter(|t| t.weight != 0)
        .map(|t| (NodeTerm::parse(&t.preference), i64::from(t.weight)))
        .collect()
}

fn hint(pod: &PodInfo, objects: &EventObjects<'_>) -> QueueingHint {
    match objects {
        EventObjects::Node {
            new: Some(node), ..
        } => {
            if RequiredNodeAffinity::of(&pod.pod).fits_node(node) {
                QueueingHint::Queue
            } else {
                QueueingHint::Skip
            }
        }
        _ => QueueingHint::Queue,
    }
}

impl Plugin for NodeAffinity {
    fn name(&self) -> &'static str {
        NAME
    }
    fn events_to_register(&self) -> Vec<ClusterEventWithHint> {
        vec![ClusterEventWithHint::with_hint(
            EventResource::Node,
            ActionType::ADD.or(ActionType::UPDATE_NODE_LABEL),
            hint,
        )]
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

impl PreFilterPlugin for NodeAffinity {
    fn pre_filter(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _: &Snapshot<'_>,
    ) -> (Option<PreFilterResult>, Status) {
        let req = RequiredNodeAffinity::of(&pod.pod);
        if req.is_empty() {
            return (None, Status::skip());
        }
        let names = req.node_names();
        state.write(PreFilterState(req));
        match names {
            Some(names) if names.is_empty() => (
                None,
                Status::new(Code::UnschedulableAndUnresolvable, ERR_REASON_POD),
            ),
            Some(names) => (
                Some(PreFilterResult {
                    node_names: Some(names),
                }),
                Status::success(),
            ),
            None => (None, Status::success()),
        }
    }
}

impl FilterPlugin for NodeAffinity {
    fn filter(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        node: &NodeInfo,
        _: &Snapshot<'_>,
    ) -> Status {
        let fits = match state.read::<PreFilterState>() {
            Some(s) => s.0.fits(&node.name, node.labels()),
            None => RequiredNodeAffinity::of(&pod.pod).fits(&node.name, node.labels()),
        };
        if fits {
            Status::success()
        } else {
            Status::new(Code::UnschedulableAndUnresolvable, ERR_REASON_POD)
        }
    }
}

impl PreScorePlugin for NodeAffinity {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _: &[&NodeInfo],
        _: &Snapshot<'_>,
    ) -> Status {
        let terms = preferred_terms(&pod.pod);
        if terms.is_empty() {
            return Status::skip();
        }
        state.write(PreScoreState(terms));
        Status::success()
    }
}

impl ScorePlugin for NodeAffinity {
    fn score(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        node: &NodeInfo,
        _: &Snapshot<'_>,
    ) -> Result<i64, Status> {
        let owned;
        let terms = match state.read::<PreScoreState>() {
            Some(s) => &s.0,
            None => {
                owned = preferred_terms(&pod.pod);
                &owned
            }
        };
        Ok(terms
            .iter()
            .filter(|(t, _)| t.matches(&node.name, node.labels()))
            .map(|(_, w)| w)
            .sum())
    }

    fn normalize(&self, _: &CycleState, _: &PodInfo, scores: &mut [i64]) -> Status {
        default_normalize_score(MAX_NODE_SCORE, false, scores);
        Status::success()
    }
}

#[cfg(test)]
mod tests;
