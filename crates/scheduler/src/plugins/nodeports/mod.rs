//! NodePorts: a pod's host ports must be free on the node (same protocol and port on the
//! same address, or either side on 0.0.0.0, collide).

use crate::framework::types::HostPort;
use crate::framework::{
    ActionType, ClusterEventWithHint, Code, CycleState, EventObjects, EventResource, FilterPlugin,
    NodeInfo, Plugin, PodInfo, PreFilterPlugin, PreFilterResult, QueueingHint, Snapshot, Status,
};

/// The plugin name.
pub const NAME: &str = super::names::NODE_PORTS;
/// Why a node was rejected.
pub const ERR_REASON: &str = "node(s) didn't have free ports for the requested pod ports";

/// The NodePorts plugin.
#[derive(Debug, Default)]
pub struct NodePorts;

/// Whether `wanted` ports are free given the node's `used` ones.
pub fn fits(wanted: &[HostPort], used: &[HostPort]) -> bool {
    !wanted.iter().any(|w| used.iter().any(|u| w.conflicts(u)))
}

fn hint(pod: &PodInfo, objects: &EventObjects<'_>) -> QueueingHint {
    match objects {
        // A deleted pod frees ports only if it held one this pod wants.
        EventObjects::Pod {
            old: Some(old),
            new: None,
        } => {
            if fits(&pod.host_ports, &old.host_ports) {
                QueueingHint::Skip
            } else {
                QueueingHint::Queue
            }
        }
        _ => QueueingHint::Queue,
    }
}

impl Plugin for NodePorts {
    fn name(&self) -> &'static str {
        NAME
    }
    fn events_to_register(&self) -> Vec<ClusterEventWithHint> {
        vec![
            ClusterEventWithHint::with_hint(EventResource::Pod, ActionType::DELETE, hint),
            ClusterEventWithHint::new(EventResource::Node, ActionType::ADD),
        ]
    }
    fn as_pre_filter(&self) -> Option<&dyn PreFilterPlugin> {
        Some(self)
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
}

impl PreFilterPlugin for NodePorts {
    fn pre_filter(
        &self,
        _: &mut CycleState,
        pod: &PodInfo,
        _: &Snapshot<'_>,
    ) -> (Option<PreFilterResult>, Status) {
        if pod.host_ports.is_empty() {
            (None, Status::skip())
        } else {
            (None, Status::success())
        }
    }
}

impl FilterPlugin for NodePorts {
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo, _: &Snapshot<'_>) -> Status {
        if fits(&pod.host_ports, &node.used_ports) {
            Status::success()
        } else {
            Status::new(Code::Unschedulable, ERR_REASON)
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
            (
                "no ports",
                pod("p"),
                vec![pod("o").host_port(80, None, None)],
                true,
            ),
            (
                "free port",
                pod("p").host_port(8080, None, None),
                vec![pod("o").host_port(80, None, None)],
                true,
            ),
            (
                "same port",
                pod("p").host_port(80, None, None),
                vec![pod("o").host_port(80, None, None)],
                false,
            ),
            (
                "other protocol",
                pod("p").host_port(80, None, Some("UDP")),
                vec![pod("o").host_port(80, None, None)],
                true,
            ),
            (
                "different addresses",
                pod("p").host_port(80, Some("10.0.0.1"), None),
                vec![pod("o").host_port(80, Some("10.0.0.2"), None)],
                true,
            ),
            (
                "all addresses collide",
                pod("p").host_port(80, Some("10.0.0.1"), None),
                vec![pod("o").host_port(80, None, None)],
                false,
            ),
        ];
        for (name, p, existing, want) in cases {
            let n = node("n").with_pods(existing.into_iter().map(|e| e.node("n").info()).collect());
            let cluster = TestCluster::new(vec![n]);
            let p = p.info();
            let mut state = CycleState::new();
            let (_, pre) = NodePorts.pre_filter(&mut state, &p, &cluster.snapshot());
            let s = if pre.is_skip() {
                Status::success()
            } else {
                NodePorts.filter(&state, &p, &cluster.nodes[0], &cluster.snapshot())
            };
            assert_eq!(s.is_success(), want, "{name}");
            if !want {
                assert_eq!(s.message(), ERR_REASON);
                assert_eq!(s.code(), Code::Unschedulable);
            }
        }
    }
}
