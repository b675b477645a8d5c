//! Node health decisions (upstream `monitorNodeHealth`/`tryUpdateNodeHealth`): when a node
//! counts as silent, and the conditions it gets then.
//!
//! A node's last heartbeat is the newer of its Lease's `renewTime` and its Ready
//! condition's `lastHeartbeatTime`. A node that has posted a Ready condition and a heartbeat
//! is silent once that heartbeat is older than the monitor grace period. A node that never
//! posted one (no Ready condition, or no heartbeat anywhere: a bare Node object) is judged
//! only after the startup grace period from its creation, as upstream's
//! `nodeStartupGracePeriod`. A node this controller has just started watching gets a full
//! grace period from that moment too (upstream's probe timestamp is the local time it first
//! saw the node), so a restarted controller does not judge on stale data.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, NodeCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// Condition types the controller turns Unknown alongside Ready.
pub const OTHER_CONDITIONS: [&str; 3] = ["MemoryPressure", "DiskPressure", "PIDPressure"];
/// Reason of a condition turned Unknown because the kubelet went silent.
pub const REASON_UNKNOWN: &str = "NodeStatusUnknown";
/// Its message.
pub const MESSAGE_UNKNOWN: &str = "Kubelet stopped posting node status.";
/// Reason of a condition added as Unknown because the kubelet never posted it.
pub const REASON_NEVER_UPDATED: &str = "NodeStatusNeverUpdated";
/// Its message.
pub const MESSAGE_NEVER_UPDATED: &str = "Kubelet never posted node status.";

/// The grace periods.
#[derive(Debug, Clone, Copy)]
pub struct Grace {
    /// `--node-monitor-grace-period` (40 s).
    pub monitor: Duration,
    /// `--node-startup-grace-period` (60 s).
    pub startup: Duration,
}

/// A node's condition of type `kind`.
pub fn condition<'a>(node: &'a Node, kind: &str) -> Option<&'a NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)
}

/// The Ready condition's status (`True`, `False`, `Unknown`), if there is one.
pub fn ready_status(node: &Node) -> Option<&str> {
    condition(node, "Ready").map(|c| c.status.as_str())
}

/// The newest heartbeat: the Lease's renewTime or the Ready condition's lastHeartbeatTime.
pub fn last_heartbeat(node: &Node, lease_renew: Option<Timestamp>) -> Option<Timestamp> {
    let posted = condition(node, "Ready")
        .and_then(|c| c.last_heartbeat_time.as_ref())
        .map(|t| t.0);
    match (posted, lease_renew) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// When the node counts as silent unless a new heartbeat comes (see the module doc).
/// `first_seen` is when this controller first saw the node.
pub fn deadline(
    node: &Node,
    lease_renew: Option<Timestamp>,
    first_seen: Timestamp,
    grace: Grace,
) -> Timestamp {
    let created = node
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(first_seen, |t| t.0);
    let judged = match (condition(node, "Ready"), last_heartbeat(node, lease_renew)) {
        (Some(_), Some(beat)) => beat + grace.monitor,
        _ => created + grace.startup,
    };
    judged.max(first_seen + grace.monitor)
}

/// The node's conditions after it went silent at `now`: Ready and the pressure conditions
/// Unknown (`NodeStatusUnknown`, or added with `NodeStatusNeverUpdated` when missing), the
/// others kept. `None` when they are all Unknown already.
pub fn silent_conditions(node: &Node, now: Timestamp) -> Option<Vec<NodeCondition>> {
    let mut conditions: Vec<NodeCondition> = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let created = node
        .metadata
        .creation_timestamp
        .clone()
        .unwrap_or(Time(now));
    let mut changed = false;
    for kind in std::iter::once("Ready").chain(OTHER_CONDITIONS) {
        match conditions.iter_mut().find(|c| c.type_ == kind) {
            None => {
                conditions.push(NodeCondition {
                    type_: kind.to_string(),
                    status: "Unknown".into(),
                    reason: Some(REASON_NEVER_UPDATED.into()),
                    message: Some(MESSAGE_NEVER_UPDATED.into()),
                    last_heartbeat_time: Some(created.clone()),
                    last_transition_time: Some(Time(now)),
                });
                changed = true;
            }
            Some(c) if c.status != "Unknown" => {
                c.status = "Unknown".into();
                c.reason = Some(REASON_UNKNOWN.into());
                c.message = Some(MESSAGE_UNKNOWN.into());
                c.last_transition_time = Some(Time(now));
                changed = true;
            }
            Some(_) => {}
        }
    }
    changed.then_some(conditions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NodeStatus;

    const GRACE: Grace = Grace {
        monitor: Duration::from_secs(40),
        startup: Duration::from_secs(60),
    };

    fn ts(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn node(created: i64, ready: Option<(&str, Option<i64>)>) -> Node {
        let mut n = Node::default();
        n.metadata.name = Some("n".into());
        n.metadata.creation_timestamp = Some(Time(ts(created)));
        if let Some((status, beat)) = ready {
            n.status = Some(NodeStatus {
                conditions: Some(vec![
                    NodeCondition {
                        type_: "MemoryPressure".into(),
                        status: "False".into(),
                        ..Default::default()
                    },
                    NodeCondition {
                        type_: "Ready".into(),
                        status: status.into(),
                        reason: Some("KubeletReady".into()),
                        last_heartbeat_time: beat.map(|b| Time(ts(b))),
                        last_transition_time: Some(Time(ts(0))),
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            });
        }
        n
    }

    #[test]
    fn the_newer_of_lease_and_posted_heartbeat_counts() {
        let n = node(0, Some(("True", Some(10))));
        assert_eq!(last_heartbeat(&n, None), Some(ts(10)));
        assert_eq!(last_heartbeat(&n, Some(ts(30))), Some(ts(30)));
        assert_eq!(last_heartbeat(&n, Some(ts(5))), Some(ts(10)));
        // Lease renewals keep a node alive although its status is old.
        assert_eq!(deadline(&n, Some(ts(100)), ts(0), GRACE), ts(140));
        assert_eq!(deadline(&n, None, ts(0), GRACE), ts(50));
    }

    #[test]
    fn nodes_that_never_posted_get_the_startup_grace_from_creation() {
        // A bare node with Ready=True but no heartbeat and no lease (scheduler tests).
        let bare = node(0, Some(("True", None)));
        assert_eq!(deadline(&bare, None, ts(1), GRACE), ts(60));
        // No Ready condition at all: the same, even with a lease.
        let empty = node(0, None);
        assert_eq!(deadline(&empty, Some(ts(50)), ts(1), GRACE), ts(60));
    }

    #[test]
    fn a_node_first_seen_late_gets_a_full_grace_period() {
        let n = node(0, Some(("True", Some(10))));
        // The controller (re)started at 100: the node is judged at 140, not 50.
        assert_eq!(deadline(&n, None, ts(100), GRACE), ts(140));
    }

    #[test]
    fn silent_nodes_turn_unknown_like_upstream() {
        let n = node(0, Some(("True", Some(10))));
        let now = ts(60);
        let c = silent_conditions(&n, now).unwrap();
        let ready = c.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.status, "Unknown");
        assert_eq!(ready.reason.as_deref(), Some(REASON_UNKNOWN));
        assert_eq!(ready.message.as_deref(), Some(MESSAGE_UNKNOWN));
        assert_eq!(ready.last_transition_time, Some(Time(now)));
        assert_eq!(
            ready.last_heartbeat_time,
            Some(Time(ts(10))),
            "heartbeat kept"
        );
        let mem = c.iter().find(|c| c.type_ == "MemoryPressure").unwrap();
        assert_eq!(mem.reason.as_deref(), Some(REASON_UNKNOWN));
        let disk = c.iter().find(|c| c.type_ == "DiskPressure").unwrap();
        assert_eq!(
            (disk.status.as_str(), disk.reason.as_deref()),
            ("Unknown", Some(REASON_NEVER_UPDATED))
        );
        assert_eq!(c.len(), 4);
        // Once Unknown, nothing more to write.
        let mut again = n.clone();
        again.status.as_mut().unwrap().conditions = Some(c);
        assert_eq!(silent_conditions(&again, ts(70)), None);
    }
}
