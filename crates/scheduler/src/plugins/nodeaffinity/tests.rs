use super::*;
use crate::testutil::{PodBuilder, TestCluster, node, pod};

fn run_filter(p: PodBuilder, n: crate::testutil::NodeBuilder) -> Status {
    let cluster = TestCluster::new(vec![n.info()]);
    let p = p.info();
    let mut state = CycleState::new();
    let (_, s) = NodeAffinity.pre_filter(&mut state, &p, &cluster.snapshot());
    if s.is_skip() {
        return Status::success();
    }
    if !s.is_success() {
        return s;
    }
    NodeAffinity.filter(&state, &p, &cluster.nodes[0], &cluster.snapshot())
}

#[test]
fn filter() {
    let cases = [
        ("nothing required", pod("p"), node("n"), true),
        (
            "selector matches",
            pod("p").node_selector("disk", "ssd"),
            node("n").label("disk", "ssd"),
            true,
        ),
        (
            "selector value differs",
            pod("p").node_selector("disk", "ssd"),
            node("n").label("disk", "hdd"),
            false,
        ),
        (
            "selector label missing",
            pod("p").node_selector("disk", "ssd"),
            node("n"),
            false,
        ),
        (
            "affinity In",
            pod("p").node_affinity_in("zone", &["a", "b"]),
            node("n").label("zone", "b"),
            true,
        ),
        (
            "affinity not In",
            pod("p").node_affinity_in("zone", &["a"]),
            node("n").label("zone", "b"),
            false,
        ),
        (
            "terms are ORed",
            pod("p")
                .node_affinity_in("zone", &["a"])
                .node_affinity_in("disk", &["ssd"]),
            node("n").label("disk", "ssd"),
            true,
        ),
        (
            "selector and affinity both needed",
            pod("p")
                .node_selector("disk", "ssd")
                .node_affinity_in("zone", &["a"]),
            node("n").label("disk", "ssd"),
            false,
        ),
        (
            "matchFields name",
            pod("p").node_name_affinity(&["n"]),
            node("n"),
            true,
        ),
        (
            "matchFields other name",
            pod("p").node_name_affinity(&["m"]),
            node("n"),
            false,
        ),
    ];
    for (name, p, n, want) in cases {
        let s = run_filter(p, n);
        assert_eq!(s.is_success(), want, "{name}: {s}");
        if !want {
            assert_eq!(s.message(), ERR_REASON_POD, "{name}");
            assert_eq!(s.code(), Code::UnschedulableAndUnresolvable, "{name}");
        }
    }
}

#[test]
fn name_terms_restrict_the_cycle() {
    let cluster = TestCluster::new(vec![node("a").info(), node("b").info()]);
    let p = pod("p").node_name_affinity(&["b", "c"]).info();
    let (result, s) = NodeAffinity.pre_filter(&mut CycleState::new(), &p, &cluster.snapshot());
    assert!(s.is_success());
    assert_eq!(result.unwrap().node_names.unwrap(), vec!["b", "c"]);
    let p = pod("p").node_affinity_in("zone", &["a"]).info();
    let (result, _) = NodeAffinity.pre_filter(&mut CycleState::new(), &p, &cluster.snapshot());
    assert!(result.is_none());
}

#[test]
fn score_sums_matching_preferred_weights() {
    let cluster = TestCluster::new(vec![
        node("none").info(),
        node("zone").label("zone", "a").info(),
        node("both").label("zone", "a").label("disk", "ssd").info(),
    ]);
    let p = pod("p")
        .preferred_node_affinity(10, "zone", &["a"])
        .preferred_node_affinity(30, "disk", &["ssd"])
        .info();
    let mut state = CycleState::new();
    let nodes: Vec<&NodeInfo> = cluster.nodes.iter().collect();
    assert!(
        NodeAffinity
            .pre_score(&mut state, &p, &nodes, &cluster.snapshot())
            .is_success()
    );
    let mut scores: Vec<i64> = nodes
        .iter()
        .map(|n| {
            NodeAffinity
                .score(&state, &p, n, &cluster.snapshot())
                .unwrap()
        })
        .collect();
    assert_eq!(scores, vec![0, 10, 40]);
    NodeAffinity.normalize(&state, &p, &mut scores);
    assert_eq!(scores, vec![0, 25, 100]);
    assert!(
        NodeAffinity
            .pre_score(
                &mut CycleState::new(),
                &pod("q").info(),
                &nodes,
                &cluster.snapshot()
            )
            .is_skip()
    );
}
