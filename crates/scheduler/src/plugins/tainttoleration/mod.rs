//! TaintToleration: a node's `NoSchedule`/`NoExecute` taints keep out pods that do not
//! tolerate them; untolerated `PreferNoSchedule` taints lower a node's score.

use std::borrow::Cow;

use k8s_openapi::api::core::v1::{Taint, Toleration};

use crate::framework::selector::{Effect, node_taints, pod_tolerations, tolerated};
use crate::framework::types::NodeTaint;
use crate::framework::{
    ActionType, ClusterEventWithHint, Code, CycleState, EventObjects, EventResource, FilterPlugin,
    MAX_NODE_SCORE, NodeInfo, Plugin, PodInfo, PreScorePlugin, QueueingHint, ScorePlugin, Snapshot,
    Status, default_normalize_score,
};

/// The plugin name.
pub const NAME: &str = super::names::TAINT_TOLERATION;

/// Why a node was rejected: upstream's `node(s) had untolerated taint {key: value}`.
pub fn err_reason(taint: &Taint) -> String {
    format!(
        "node(s) had untolerated taint {{{}: {}}}",
        taint.key,
        taint.value.as_deref().unwrap_or("")
    )
}

/// The TaintToleration plugin.
#[derive(Debug, Default)]
pub struct TaintToleration;

/// The first `NoSchedule`/`NoExecute` taint the tolerations do not tolerate (None: fits).
pub fn fits<'a>(tolerations: &[Toleration], taints: &'a [NodeTaint]) -> Option<&'a Taint> {
    taints
        .iter()
        .filter(|t| matches!(t.effect, Effect::NoSchedule | Effect::NoExecute))
        .find(|t| !tolerated(tolerations, &t.taint))
        .map(|t| &t.taint)
}

/// The number of `PreferNoSchedule` taints not tolerated by `prefer_tolerations`.
pub fn count_intolerable_prefer_no_schedule(
    prefer_tolerations: &[Toleration],
    taints: &[NodeTaint],
) -> i64 {
    taints
        .iter()
        .filter(|t| t.effect == Effect::PreferNoSchedule)
        .filter(|t| !tolerated(prefer_tolerations, &t.taint))
        .count() as i64
}

/// PreScore data: the tolerations that apply to `PreferNoSchedule` taints.
#[derive(Debug, Clone)]
struct PreScoreState {
    tolerations: Vec<Toleration>,
}

fn hint(pod: &PodInfo, objects: &EventObjects<'_>) -> QueueingHint {
    let EventObjects::Node {
        new: Some(node), ..
    } = objects
    else {
        return QueueingHint::Queue;
    };
    let taints: Vec<NodeTaint> = node_taints(node)
        .iter()
        .map(|t| NodeTaint {
            effect: Effect::parse(&t.effect),
            taint: t.clone(),
        })
        .collect();
    if fits(pod_tolerations(&pod.pod), &taints).is_none() {
        QueueingHint::Queue
    } else {
        QueueingHint::Skip
    }
}

impl Plugin for TaintToleration {
    fn name(&self) -> &'static str {
        NAME
    }
    fn events_to_register(&self) -> Vec<ClusterEventWithHint> {
        vec![ClusterEventWithHint::with_hint(
            EventResource::Node,
            ActionType::ADD.or(ActionType::UPDATE_NODE_TAINT),
            hint,
        )]
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

impl FilterPlugin for TaintToleration {
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo, _: &Snapshot<'_>) -> Status {
        match fits(pod_tolerations(&pod.pod), &node.taints) {
            None => Status::success(),
            Some(taint) => Status::new(
                Code::UnschedulableAndUnresolvable,
                Cow::Owned(err_reason(taint)),
            ),
        }
    }
}

impl PreScorePlugin for TaintToleration {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _: &[&NodeInfo],
        _: &Snapshot<'_>,
    ) -> Status {
        let tolerations = pod_tolerations(&pod.pod)
            .iter()
            .filter(|t| {
                t.effect
                    .as_deref()
                    .is_none_or(|e| e.is_empty() || e == "PreferNoSchedule")
            })
            .cloned()
            .collect();
        state.write(PreScoreState { tolerations });
        Status::success()
    }
}

impl ScorePlugin for TaintToleration {
    fn score(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        node: &NodeInfo,
        _: &Snapshot<'_>,
    ) -> Result<i64, Status> {
        let count = match state.read::<PreScoreState>() {
            Some(s) => count_intolerable_prefer_no_schedule(&s.tolerations, &node.taints),
            None => count_intolerable_prefer_no_schedule(pod_tolerations(&pod.pod), &node.taints),
        };
        Ok(count)
    }

    fn normalize(&self, _: &CycleState, _: &PodInfo, scores: &mut [i64]) -> Status {
        default_normalize_score(MAX_NODE_SCORE, true, scores);
        Status::success()
    }
}

#[cfg(test)]
mod tests;
