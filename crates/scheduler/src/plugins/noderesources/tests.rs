use super::*;
use crate::testutil::{TestCluster, node, pod};

fn reasons(p: crate::testutil::PodBuilder, n: NodeInfo) -> Vec<String> {
    let p = p.info();
    let cluster = TestCluster::new(vec![n]);
    let s = Fit::default().filter(
        &CycleState::new(),
        &p,
        &cluster.nodes[0],
        &cluster.snapshot(),
    );
    s.reasons().iter().map(|r| r.to_string()).collect()
}

#[test]
fn filter() {
    let small = || node("n").allocatable(&[("cpu", "2"), ("memory", "2Gi"), ("pods", "2")]);
    let cases: Vec<(&str, crate::testutil::PodBuilder, NodeInfo, Vec<&str>)> = vec![
        (
            "fits",
            pod("p").req(&[("cpu", "1")]),
            small().info(),
            vec![],
        ),
        (
            "too much cpu",
            pod("p").req(&[("cpu", "1500m")]),
            small().with_pods(vec![pod("o").req(&[("cpu", "1")]).info()]),
            vec!["Insufficient cpu"],
        ),
        (
            "cpu and memory",
            pod("p").req(&[("cpu", "3"), ("memory", "3Gi")]),
            small().info(),
            vec!["Insufficient cpu", "Insufficient memory"],
        ),
        (
            "too many pods",
            pod("p"),
            small().with_pods(vec![pod("a").info(), pod("b").info()]),
            vec!["Too many pods"],
        ),
        (
            "init container dominates",
            pod("p")
                .req(&[("cpu", "500m")])
                .init_req(&[("cpu", "2500m")], false),
            small().info(),
            vec!["Insufficient cpu"],
        ),
        (
            "sidecar adds up",
            pod("p")
                .req(&[("cpu", "1500m")])
                .init_req(&[("cpu", "600m")], true),
            small().info(),
            vec!["Insufficient cpu"],
        ),
        (
            "overhead counts",
            pod("p")
                .req(&[("cpu", "1900m")])
                .overhead(&[("cpu", "200m")]),
            small().info(),
            vec!["Insufficient cpu"],
        ),
        (
            "extended resource",
            pod("p").req(&[("example.com/gpu", "1")]),
            small().info(),
            vec!["Insufficient example.com/gpu"],
        ),
        (
            "extended resource available",
            pod("p").req(&[("example.com/gpu", "1")]),
            node("n")
                .allocatable(&[("example.com/gpu", "2"), ("pods", "5")])
                .info(),
            vec![],
        ),
    ];
    for (name, p, n, want) in cases {
        assert_eq!(reasons(p, n), want, "{name}");
    }
}

#[test]
fn requests_beyond_allocatable_are_unresolvable() {
    let n = node("n").allocatable(&[("cpu", "2"), ("memory", "2Gi"), ("pods", "10")]);
    let busy = n
        .clone()
        .with_pods(vec![pod("o").req(&[("cpu", "2")]).info()]);
    let code = |p: crate::testutil::PodBuilder, n: NodeInfo| {
        let c = TestCluster::new(vec![n]);
        Fit::default()
            .filter(&CycleState::new(), &p.info(), &c.nodes[0], &c.snapshot())
            .code()
    };
    assert_eq!(
        code(pod("p").req(&[("cpu", "1")]), busy),
        Code::Unschedulable
    );
    assert_eq!(
        code(pod("p").req(&[("cpu", "3")]), n.info()),
        Code::UnschedulableAndUnresolvable
    );
}

#[test]
fn least_allocated_prefers_free_nodes() {
    // Upstream's table: 4000m/10000 node with 3000m/5000 requested → (25 + 50) / 2.
    let n = node("n")
        .allocatable(&[("cpu", "4"), ("memory", "10000"), ("pods", "10")])
        .with_pods(vec![
            pod("o").req(&[("cpu", "3"), ("memory", "5000")]).info(),
        ]);
    let cluster = TestCluster::new(vec![
        n,
        node("empty")
            .allocatable(&[("cpu", "4"), ("memory", "10000"), ("pods", "10")])
            .info(),
    ]);
    let p = pod("p").req(&[("cpu", "0"), ("memory", "0")]).info();
    let score = |i: usize| {
        Fit::default()
            .score(
                &CycleState::new(),
                &p,
                &cluster.nodes[i],
                &cluster.snapshot(),
            )
            .unwrap()
    };
    assert_eq!(score(0), (25 + 50) / 2);
    assert_eq!(score(1), 100);
    // A pod without requests counts 100m / 200Mi when scoring.
    let q = pod("q").req(&[]).info();
    let big = node("big")
        .allocatable(&[("cpu", "1"), ("memory", "400Mi"), ("pods", "10")])
        .info();
    let c2 = TestCluster::new(vec![big]);
    assert_eq!(
        Fit::default()
            .score(&CycleState::new(), &q, &c2.nodes[0], &c2.snapshot())
            .unwrap(),
        (90 + 50) / 2
    );
    let most = Fit::new(ScoringStrategy::MostAllocated);
    assert_eq!(
        most.score(
            &CycleState::new(),
            &p,
            &cluster.nodes[0],
            &cluster.snapshot()
        )
        .unwrap(),
        (75 + 50) / 2
    );
}

#[test]
fn balanced_allocation() {
    let cases = [
        ([0, 0], [4000, 10000], 100),
        ([3000, 5000], [4000, 10000], 87),
        ([2000, 5000], [4000, 10000], 100),
        ([6000, 5000], [4000, 10000], 75),
        ([1000, 0], [4000, 0], 100),
    ];
    for (req, alloc, want) in cases {
        assert_eq!(balanced_score(req, alloc), want, "{req:?}/{alloc:?}");
    }
}
