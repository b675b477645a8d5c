use super::*;
use crate::testutil::{PodBuilder, TestCluster, node, pod};

const HOST: &str = "kubernetes.io/hostname";

fn cluster() -> TestCluster {
    TestCluster::new(vec![
        node("n1")
            .label("zone", "a")
            .with_pods(vec![pod("db").label("app", "db").node("n1").info()]),
        node("n2").label("zone", "a").info(),
        node("n3").label("zone", "b").with_pods(vec![
            pod("loner")
                .label("app", "loner")
                .pod_anti_affinity(HOST, &[("app", "web")])
                .node("n3")
                .info(),
        ]),
    ])
}

fn filter_all(c: &TestCluster, p: PodBuilder) -> Vec<Option<String>> {
    let p = p.info();
    let mut state = CycleState::new();
    let (_, s) = InterPodAffinity.pre_filter(&mut state, &p, &c.snapshot());
    c.nodes
        .iter()
        .map(|n| {
            if s.is_skip() {
                return None;
            }
            let r = InterPodAffinity.filter(&state, &p, n, &c.snapshot());
            (!r.is_success()).then(|| r.message())
        })
        .collect()
}

#[test]
fn filter() {
    let c = cluster();
    let aff = Some(ERR_REASON_AFFINITY_RULES_NOT_MATCH.to_string());
    let anti = Some(ERR_REASON_ANTI_AFFINITY_RULES_NOT_MATCH.to_string());
    let existing = Some(ERR_REASON_EXISTING_ANTI_AFFINITY_RULES_NOT_MATCH.to_string());
    let cases: Vec<(&str, PodBuilder, Vec<Option<String>>)> = vec![
        ("plain pod", pod("p"), vec![None, None, None]),
        (
            "affinity to db by host",
            pod("p").pod_affinity(HOST, &[("app", "db")]),
            vec![None, aff.clone(), aff.clone()],
        ),
        (
            "affinity to db by zone",
            pod("p").pod_affinity("zone", &[("app", "db")]),
            vec![None, None, aff.clone()],
        ),
        (
            "anti-affinity to db by zone",
            pod("p").pod_anti_affinity("zone", &[("app", "db")]),
            vec![anti.clone(), anti.clone(), None],
        ),
        (
            "existing pod's anti-affinity",
            pod("p").label("app", "web"),
            vec![None, None, existing.clone()],
        ),
        (
            "first pod of a self-affine group goes anywhere",
            pod("p")
                .label("app", "cache")
                .pod_affinity(HOST, &[("app", "cache")]),
            vec![None, None, None],
        ),
    ];
    for (name, p, want) in cases {
        assert_eq!(filter_all(&c, p), want, "{name}");
    }
}

#[test]
fn removing_a_victim_clears_anti_affinity() {
    let c = cluster();
    let p = pod("p").pod_anti_affinity("zone", &[("app", "db")]).info();
    let mut state = CycleState::new();
    InterPodAffinity.pre_filter(&mut state, &p, &c.snapshot());
    let db = c.nodes[0].pods[0].clone();
    InterPodAffinity.remove_pod(&mut state, &p, &db, &c.nodes[0], &c.snapshot());
    assert!(
        InterPodAffinity
            .filter(&state, &p, &c.nodes[1], &c.snapshot())
            .is_success()
    );
}

#[test]
fn score_follows_preferred_terms() {
    let c = cluster();
    let p = pod("p")
        .preferred_pod_affinity(50, "zone", &[("app", "db")])
        .preferred_pod_anti_affinity(10, HOST, &[("app", "db")])
        .info();
    let mut state = CycleState::new();
    let nodes: Vec<&NodeInfo> = c.nodes.iter().collect();
    assert!(
        InterPodAffinity
            .pre_score(&mut state, &p, &nodes, &c.snapshot())
            .is_success()
    );
    let mut scores: Vec<i64> = nodes
        .iter()
        .map(|n| {
            InterPodAffinity
                .score(&state, &p, n, &c.snapshot())
                .unwrap()
        })
        .collect();
    assert_eq!(scores, vec![40, 50, 0]);
    InterPodAffinity.normalize(&state, &p, &mut scores);
    assert_eq!(scores, vec![80, 100, 0]);
    assert!(
        InterPodAffinity
            .pre_score(
                &mut CycleState::new(),
                &pod("q").info(),
                &nodes,
                &c.snapshot()
            )
            .is_skip()
    );
}
