use super::*;
use crate::framework::FilterPlugin;
use crate::testutil::{TestCluster, node, pod};

#[test]
fn filter() {
    let cases = [
        ("no taints", pod("p"), node("n"), None),
        (
            "untolerated NoSchedule",
            pod("p"),
            node("n").taint("key", "value", "NoSchedule"),
            Some("node(s) had untolerated taint {key: value}"),
        ),
        (
            "untolerated NoExecute, empty value",
            pod("p"),
            node("n").taint("dedicated", "", "NoExecute"),
            Some("node(s) had untolerated taint {dedicated: }"),
        ),
        (
            "tolerated by value",
            pod("p").toleration("key", Some("value"), Some("NoSchedule")),
            node("n").taint("key", "value", "NoSchedule"),
            None,
        ),
        (
            "tolerated by Exists",
            pod("p").toleration("key", None, None),
            node("n").taint("key", "value", "NoSchedule"),
            None,
        ),
        (
            "wrong value",
            pod("p").toleration("key", Some("other"), None),
            node("n").taint("key", "value", "NoSchedule"),
            Some("node(s) had untolerated taint {key: value}"),
        ),
        (
            "PreferNoSchedule never filters",
            pod("p"),
            node("n").taint("key", "value", "PreferNoSchedule"),
            None,
        ),
    ];
    for (name, p, n, want) in cases {
        let cluster = TestCluster::new(vec![n.info()]);
        let s = TaintToleration.filter(
            &CycleState::new(),
            &p.info(),
            &cluster.nodes[0],
            &cluster.snapshot(),
        );
        match want {
            None => assert!(s.is_success(), "{name}: {s}"),
            Some(msg) => {
                assert_eq!(s.code(), Code::UnschedulableAndUnresolvable, "{name}");
                assert_eq!(s.message(), msg, "{name}");
            }
        }
    }
}

#[test]
fn score_prefers_fewer_untolerated_prefer_no_schedule_taints() {
    let cluster = TestCluster::new(vec![
        node("clean").info(),
        node("one").taint("a", "1", "PreferNoSchedule").info(),
        node("two")
            .taint("a", "1", "PreferNoSchedule")
            .taint("b", "1", "PreferNoSchedule")
            .info(),
        node("tolerated").taint("c", "1", "PreferNoSchedule").info(),
    ]);
    let p = pod("p")
        .toleration("c", None, Some("PreferNoSchedule"))
        .info();
    let mut state = CycleState::new();
    let nodes: Vec<&NodeInfo> = cluster.nodes.iter().collect();
    assert!(
        TaintToleration
            .pre_score(&mut state, &p, &nodes, &cluster.snapshot())
            .is_success()
    );
    let mut scores: Vec<i64> = nodes
        .iter()
        .map(|n| {
            TaintToleration
                .score(&state, &p, n, &cluster.snapshot())
                .unwrap()
        })
        .collect();
    assert_eq!(scores, vec![0, 1, 2, 0]);
    TaintToleration.normalize(&state, &p, &mut scores);
    assert_eq!(scores, vec![100, 50, 0, 100]);
}
