use super::*;
use crate::testutil::{PodBuilder, TestCluster, node, pod};

fn web(name: &str, on: &str) -> PodInfo {
    pod(name).label("app", "web").node(on).info()
}

fn cluster() -> TestCluster {
    TestCluster::new(vec![
        node("a1")
            .label("zone", "a")
            .with_pods(vec![web("w1", "a1"), web("w2", "a1")]),
        node("a2").label("zone", "a").info(),
        node("b1")
            .label("zone", "b")
            .with_pods(vec![pod("other").label("app", "db").node("b1").info()]),
        node("nolabel").info(),
    ])
}

fn filter_all(c: &TestCluster, p: PodBuilder) -> Vec<Status> {
    let p = p.info();
    let mut state = CycleState::new();
    let (_, s) = PodTopologySpread.pre_filter(&mut state, &p, &c.snapshot());
    if s.is_skip() {
        return c.nodes.iter().map(|_| Status::success()).collect();
    }
    c.nodes
        .iter()
        .map(|n| PodTopologySpread.filter(&state, &p, n, &c.snapshot()))
        .collect()
}

#[test]
fn filter() {
    let c = cluster();
    let zone = |skew| {
        pod("p")
            .label("app", "web")
            .spread(skew, "zone", "DoNotSchedule", &[("app", "web")])
    };
    let cases: Vec<(&str, PodBuilder, [Option<Code>; 4])> = vec![
        ("no constraints", pod("p"), [None, None, None, None]),
        (
            "skew 1: only the empty zone",
            zone(1),
            [
                Some(Code::Unschedulable),
                Some(Code::Unschedulable),
                None,
                Some(Code::UnschedulableAndUnresolvable),
            ],
        ),
        (
            "skew 3: both zones",
            zone(3),
            [None, None, None, Some(Code::UnschedulableAndUnresolvable)],
        ),
        (
            "pod not matching itself",
            pod("p").spread(2, "zone", "DoNotSchedule", &[("app", "web")]),
            [None, None, None, Some(Code::UnschedulableAndUnresolvable)],
        ),
        (
            "ScheduleAnyway never filters",
            pod("p")
                .label("app", "web")
                .spread(1, "zone", "ScheduleAnyway", &[("app", "web")]),
            [None, None, None, None],
        ),
    ];
    for (name, p, want) in cases {
        let got: Vec<Option<Code>> = filter_all(&c, p)
            .into_iter()
            .map(|s| (!s.is_success()).then(|| s.code()))
            .collect();
        assert_eq!(got, want, "{name}");
    }
    let s = &filter_all(&c, zone(1))[0];
    assert_eq!(s.message(), ERR_REASON_CONSTRAINTS_NOT_MATCH);
    let s = &filter_all(&c, zone(1))[3];
    assert_eq!(s.message(), ERR_REASON_NODE_LABEL_NOT_MATCH);
}

#[test]
fn node_affinity_policy_limits_the_domains() {
    // Only zone a counts when the pod requires zone a: b's zero no longer sets the minimum.
    let c = cluster();
    let p = pod("p")
        .label("app", "web")
        .node_affinity_in("zone", &["a"])
        .spread(1, "zone", "DoNotSchedule", &[("app", "web")]);
    let got = filter_all(&c, p);
    assert!(got[0].is_success() && got[1].is_success());
}

#[test]
fn preemption_extensions_update_counts() {
    let c = cluster();
    let p = pod("p")
        .label("app", "web")
        .spread(1, "zone", "DoNotSchedule", &[("app", "web")])
        .info();
    let mut state = CycleState::new();
    PodTopologySpread.pre_filter(&mut state, &p, &c.snapshot());
    for w in &c.nodes[0].pods.clone() {
        PodTopologySpread.remove_pod(&mut state, &p, w, &c.nodes[0], &c.snapshot());
    }
    assert!(
        PodTopologySpread
            .filter(&state, &p, &c.nodes[0], &c.snapshot())
            .is_success()
    );
}

#[test]
fn score_prefers_emptier_hosts() {
    let c = TestCluster::new(vec![
        node("n1").with_pods(vec![web("w1", "n1"), web("w2", "n1")]),
        node("n2").with_pods(vec![web("w3", "n2")]),
        node("n3").info(),
    ]);
    let p = pod("p")
        .label("app", "web")
        .spread(1, LABEL_HOSTNAME, "ScheduleAnyway", &[("app", "web")])
        .info();
    let mut state = CycleState::new();
    let nodes: Vec<&NodeInfo> = c.nodes.iter().collect();
    assert!(
        PodTopologySpread
            .pre_score(&mut state, &p, &nodes, &c.snapshot())
            .is_success()
    );
    let mut scores: Vec<i64> = nodes
        .iter()
        .map(|n| {
            PodTopologySpread
                .score(&state, &p, n, &c.snapshot())
                .unwrap()
        })
        .collect();
    PodTopologySpread.normalize(&state, &p, &mut scores);
    assert!(scores[2] > scores[1] && scores[1] > scores[0], "{scores:?}");
    assert_eq!(scores[2], 100);
}

fn default_scores(c: &TestCluster, p: &PodInfo) -> Option<Vec<i64>> {
    let mut state = CycleState::new();
    let nodes: Vec<&NodeInfo> = c.nodes.iter().collect();
    let status = PodTopologySpread.pre_score(&mut state, p, &nodes, &c.snapshot());
    if status.is_skip() {
        return None;
    }
    let mut scores: Vec<i64> = nodes
        .iter()
        .map(|n| {
            PodTopologySpread
                .score(&state, p, n, &c.snapshot())
                .unwrap()
        })
        .collect();
    PodTopologySpread.normalize(&state, p, &mut scores);
    Some(scores)
}

#[test]
fn system_defaults_spread_pods_of_a_replicaset_or_service() {
    use crate::framework::selector::Selector;
    let mut c = TestCluster::new(vec![
        node("n1").with_pods(vec![
            pod("w1").label("app", "web").node("n1").info(),
            pod("w2").label("app", "web").node("n1").info(),
        ]),
        node("n2").with_pods(vec![pod("d1").label("app", "db").node("n2").info()]),
        node("n3").info(),
    ]);
    // A pod nothing selects gets no default constraints.
    let lone = pod("p").label("app", "web").info();
    assert!(default_scores(&c, &lone).is_none());
    // Owned by a ReplicaSet selecting app=web: hosts with fewer web pods score higher;
    // nodes without a zone label are not ignored under the system defaults.
    let sel = k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
        match_labels: Some([("app".to_string(), "web".to_string())].into()),
        ..Default::default()
    };
    c.spreaders.sets.insert(
        "ReplicaSet/default/web".into(),
        Selector::from_label_selector(Some(&sel)),
    );
    let owned = pod("p")
        .label("app", "web")
        .owner("apps/v1", "ReplicaSet", "web")
        .info();
    let scores = default_scores(&c, &owned).expect("default constraints apply");
    assert!(scores[1] > scores[0] && scores[2] > scores[0], "{scores:?}");
    // A Service selecting the pod does the same for a pod without an owner.
    c.spreaders.sets.clear();
    c.spreaders
        .services
        .entry("default".into())
        .or_default()
        .insert(
            "web".into(),
            [("app".to_string(), "web".to_string())].into(),
        );
    let scores = default_scores(&c, &lone).expect("a Service selects the pod");
    assert!(scores[1] > scores[0], "{scores:?}");
    // Own constraints replace the defaults.
    let own = pod("p")
        .label("app", "web")
        .spread(1, LABEL_HOSTNAME, "DoNotSchedule", &[("app", "web")])
        .info();
    assert!(default_scores(&c, &own).is_none());
}
