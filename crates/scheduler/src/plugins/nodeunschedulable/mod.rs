//! NodeUnschedulable: a cordoned node (`spec.unschedulable: true`) takes no new pods unless
//! they tolerate the `node.kubernetes.io/unschedulable:NoSchedule` taint.

use k8s_openapi::api::core::v1::{Node, Taint};

use crate::framework::selector::{pod_tolerations, tolerated};
use crate::framework::{
    ActionType, ClusterEventWithHint, Code, CycleState, EventObjects, EventResource, FilterPlugin,
    NodeInfo, Plugin, PodInfo, QueueingHint, Snapshot, Status,
};

/// The plugin name.
pub const NAME: &str = super::names::NODE_UNSCHEDULABLE;
/// Why a node was rejected.
pub const ERR_REASON_UNSCHEDULABLE: &str = "node(s) were unschedulable";
/// The taint key a pod tolerates to run on cordoned nodes.
pub const TAINT_NODE_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

/// The NodeUnschedulable plugin.
#[derive(Debug, Default)]
pub struct NodeUnschedulable;

/// Whether the pod may run on a node with `unschedulable`.
pub fn fits(pod: &PodInfo, unschedulable: bool) -> bool {
    if !unschedulable {
        return true;
    }
    let taint = Taint {
        key: TAINT_NODE_UNSCHEDULABLE.into(),
        effect: "NoSchedule".into(),
        ..Default::default()
    };
    tolerated(pod_tolerations(&pod.pod), &taint)
}

fn node_unschedulable(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
}

fn hint(pod: &PodInfo, objects: &EventObjects<'_>) -> QueueingHint {
    match objects {
        EventObjects::Node { new: Some(new), .. } if fits(pod, node_unschedulable(new)) => {
            QueueingHint::Queue
        }
        EventObjects::Node { .. } => QueueingHint::Skip,
        _ => QueueingHint::Queue,
    }
}

impl Plugin for NodeUnschedulable {
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
}

impl FilterPlugin for NodeUnschedulable {
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo, _: &Snapshot<'_>) -> Status {
        if fits(pod, node.unschedulable) {
            Status::success()
        } else {
            Status::new(Code::UnschedulableAndUnresolvable, ERR_REASON_UNSCHEDULABLE)
        }
    }
}

#[cfg(test)]
mod tests;
