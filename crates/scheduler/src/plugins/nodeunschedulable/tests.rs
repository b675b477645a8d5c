use super::*;
use crate::testutil::{TestCluster, node, pod};

#[test]
fn filter() {
    let cases = [
        ("schedulable node", pod("p"), node("n"), true),
        ("cordoned node", pod("p"), node("n").unschedulable(), false),
        (
            "cordoned node, tolerated",
            pod("p").toleration(TAINT_NODE_UNSCHEDULABLE, None, Some("NoSchedule")),
            node("n").unschedulable(),
            true,
        ),
    ];
    for (name, p, n, want) in cases {
        let cluster = TestCluster::new(vec![n.info()]);
        let s = NodeUnschedulable.filter(
            &CycleState::new(),
            &p.info(),
            &cluster.nodes[0],
            &cluster.snapshot(),
        );
        assert_eq!(s.is_success(), want, "{name}");
        if !want {
            assert_eq!(s.code(), Code::UnschedulableAndUnresolvable);
            assert_eq!(s.message(), ERR_REASON_UNSCHEDULABLE);
        }
    }
}

#[test]
fn uncordoning_requeues() {
    let p = pod("p").info();
    let n = node("n").obj();
    let ev = EventObjects::Node {
        old: None,
        new: Some(&n),
    };
    assert_eq!(hint(&p, &ev), QueueingHint::Queue);
    let cordoned = node("n").unschedulable().obj();
    let ev = EventObjects::Node {
        old: None,
        new: Some(&cordoned),
    };
    assert_eq!(hint(&p, &ev), QueueingHint::Skip);
}
