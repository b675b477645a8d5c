use super::*;
use crate::framework::runtime::NodeToStatus;
use crate::plugins::registry::{Args, default_framework};
use crate::testutil::{TestCluster, node, pod};

fn small() -> crate::testutil::NodeBuilder {
    node("n").allocatable(&[("cpu", "2"), ("memory", "4Gi"), ("pods", "10")])
}

fn statuses(fw: &Framework, c: &TestCluster, p: &PodInfo, state: &mut CycleState) -> NodeToStatus {
    let snap = c.snapshot();
    let _ = fw.run_pre_filter(state, p, &snap);
    let mut out = NodeToStatus::default();
    for (i, n) in c.nodes.iter().enumerate() {
        let s = fw.run_filter(state, p, n, &snap);
        if !s.is_success() {
            out.statuses.insert(i, s);
        }
    }
    out
}

fn run(c: &TestCluster, p: &PodInfo) -> (Option<PostFilterResult>, Status) {
    let fw = default_framework("default-scheduler", &Args::default());
    let mut state = CycleState::new();
    let st = statuses(&fw, c, p, &mut state);
    let nominated = |_: &str| Vec::new();
    let random = |_: u64| 0u64;
    let ctx = PostFilterContext {
        snapshot: c.snapshot(),
        nominated: &nominated,
        random: &random,
    };
    DefaultPreemption.post_filter(&fw, &state, p, &st, &ctx)
}

fn victims(r: &Option<PostFilterResult>) -> Vec<String> {
    let mut v: Vec<String> = r
        .as_ref()
        .map(|r| r.victims.iter().map(|v| v.name().to_string()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn evicts_the_fewest_lowest_priority_pods() {
    let busy = |name: &str, pods: Vec<(&str, i32, &str)>| {
        node(name)
            .allocatable(&[("cpu", "2"), ("memory", "4Gi"), ("pods", "10")])
            .with_pods(
                pods.into_iter()
                    .map(|(p, prio, cpu)| {
                        pod(p).priority(prio).req(&[("cpu", cpu)]).node(name).info()
                    })
                    .collect(),
            )
    };
    let c = TestCluster::new(vec![
        busy("n1", vec![("a", 10, "1"), ("b", 10, "1")]),
        busy("n2", vec![("c", 5, "1"), ("d", 20, "1")]),
    ]);
    let p = pod("p").priority(100).req(&[("cpu", "1")]).info();
    let (r, s) = run(&c, &p);
    assert!(s.is_success(), "{s}");
    // n2's victim has the lower priority (5 < 10): one victim, the low one.
    assert_eq!(r.as_ref().unwrap().nominated_node.as_deref(), Some("n2"));
    assert_eq!(victims(&r), vec!["c"]);
}

#[test]
fn never_policy_and_unhelpful_nodes() {
    let c = TestCluster::new(vec![small().with_pods(vec![
        pod("low").priority(1).req(&[("cpu", "2")]).node("n").info(),
    ])]);
    let p = pod("p")
        .priority(100)
        .req(&[("cpu", "1")])
        .preemption_policy("Never")
        .info();
    let (r, s) = run(&c, &p);
    assert!(r.is_none());
    assert_eq!(
        s.message(),
        "preemption: not eligible due to preemptionPolicy=Never."
    );

    let tainted = TestCluster::new(vec![small().taint("k", "v", "NoSchedule").info()]);
    let p = pod("p").priority(100).info();
    let (r, s) = run(&tainted, &p);
    assert_eq!(r.unwrap().nominated_node.as_deref(), Some(""));
    assert_eq!(
        s.message(),
        "preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling."
    );

    let equal =
        TestCluster::new(vec![small().with_pods(
            vec![pod("peer").priority(100).req(&[("cpu", "2")]).node("n").info()],
        )]);
    let p = pod("p").priority(100).req(&[("cpu", "1")]).info();
    let (_, s) = run(&equal, &p);
    assert_eq!(
        s.message(),
        "preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod."
    );
}

#[test]
fn reprieves_the_most_important_pods() {
    let c = TestCluster::new(vec![small().with_pods(vec![
        pod("old").priority(10).req(&[("cpu", "1")]).start_time(100).node("n").info(),
        pod("new").priority(10).req(&[("cpu", "1")]).start_time(200).node("n").info(),
    ])]);
    let p = pod("p").priority(100).req(&[("cpu", "1")]).info();
    let (r, s) = run(&c, &p);
    assert!(s.is_success());
    // Equal priority: the one that started earlier is more important and stays.
    assert_eq!(victims(&r), vec!["new"]);
}

#[test]
fn pick_one_prefers_lower_priority_then_fewer_victims() {
    let v = |name: &str, prio: i32| Arc::new(pod(name).priority(prio).info());
    let cands = vec![
        Candidate {
            node: 0,
            victims: vec![v("a", 10)],
            pdb_violations: 0,
        },
        Candidate {
            node: 1,
            victims: vec![v("b", 5), v("c", 5)],
            pdb_violations: 0,
        },
        Candidate {
            node: 2,
            victims: vec![v("d", 5)],
            pdb_violations: 0,
        },
    ];
    assert_eq!(pick_one(&cands), Some(2));
    assert_eq!(num_candidates(50), 50);
    assert_eq!(num_candidates(5000), 500);
}

#[test]
fn pod_disruption_budgets_steer_victims_and_nodes() {
    let busy = |name: &str, app: &str| {
        node(name)
            .allocatable(&[("cpu", "1"), ("memory", "4Gi"), ("pods", "10")])
            .with_pods(vec![
                pod(&format!("{app}-on-{name}"))
                    .label("app", app)
                    .priority(1)
                    .req(&[("cpu", "1")])
                    .node(name)
                    .info(),
            ])
    };
    // Both nodes need one eviction; only the db pod is protected by a budget.
    let c = TestCluster::new(vec![busy("n1", "db"), busy("n2", "web")]).pdb("db", 0);
    let p = pod("p").priority(100).req(&[("cpu", "1")]).info();
    let (r, s) = run(&c, &p);
    assert!(s.is_success());
    assert_eq!(r.unwrap().nominated_node.as_deref(), Some("n2"));

    let pods: Vec<Arc<PodInfo>> = ["a", "b", "c"]
        .iter()
        .map(|n| Arc::new(pod(n).label("app", "db").info()))
        .collect();
    let pdbs = TestCluster::new(vec![]).pdb("db", 2);
    let (violating, ok) = split_by_pdb_violation(pods, pdbs.snapshot().pdbs);
    assert_eq!(ok.len(), 2);
    assert_eq!(violating.len(), 1);
}
