//! NodeName: a pod that names a node (`spec.nodeName`) fits only that node.

use crate::framework::{
    ActionType, ClusterEventWithHint, Code, CycleState, EventObjects, EventResource, FilterPlugin,
    NodeInfo, Plugin, PodInfo, QueueingHint, Snapshot, Status,
};

/// The plugin name.
pub const NAME: &str = super::names::NODE_NAME;
/// Why a node was rejected.
pub const ERR_REASON: &str = "node(s) didn't match the requested node name";

/// The NodeName plugin.
#[derive(Debug, Default)]
pub struct NodeName;

/// Whether the pod may run on `node_name`.
pub fn fits(pod: &PodInfo, node_name: &str) -> bool {
    let wanted = pod.node_name();
    wanted.is_empty() || wanted == node_name
}

fn hint(pod: &PodInfo, objects: &EventObjects<'_>) -> QueueingHint {
    match objects {
        EventObjects::Node { new: Some(n), .. } => {
            if fits(pod, n.metadata.name.as_deref().unwrap_or("")) {
                QueueingHint::Queue
            } else {
                QueueingHint::Skip
            }
        }
        _ => QueueingHint::Queue,
    }
}

impl Plugin for NodeName {
    fn name(&self) -> &'static str {
        NAME
    }
    fn events_to_register(&self) -> Vec<ClusterEventWithHint> {
        vec![ClusterEventWithHint::with_hint(
            EventResource::Node,
            ActionType::ADD,
            hint,
        )]
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
}

impl FilterPlugin for NodeName {
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo, _: &Snapshot<'_>) -> Status {
        if fits(pod, &node.name) {
            Status::success()
        } else {
            Status::new(Code::UnschedulableAndUnresolvable, ERR_REASON)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{TestCluster, node, pod};

    #[test]
    fn filter() {
        let cases = [
            ("no node name", pod("p"), "n1", true),
            ("same name", pod("p").node("n1"), "n1", true),
            ("other name", pod("p").node("n2"), "n1", false),
        ];
        for (name, p, n, want) in cases {
            let cluster = TestCluster::new(vec![node(n).info()]);
            let s = NodeName.filter(
                &CycleState::new(),
                &p.info(),
                &cluster.nodes[0],
                &cluster.snapshot(),
            );
            assert_eq!(s.is_success(), want, "{name}");
            if !want {
                assert_eq!(s.message(), ERR_REASON);
                assert_eq!(s.code(), Code::UnschedulableAndUnresolvable);
            }
        }
    }
}
