use super::*;
use crate::plugins::registry::{Args, default_framework};
use crate::testutil::{NodeBuilder, PodBuilder, node, pod};

fn shared(nodes: Vec<NodeBuilder>) -> Arc<Shared> {
    let s = Shared::new(
        default_framework("default-scheduler", &Args::default()),
        QueueConfig::default(),
    );
    {
        let mut st = s.state.lock();
        for n in nodes {
            st.cache.upsert_node(Arc::new(n.obj()));
        }
    }
    s
}

fn attempt(s: &Shared, p: PodBuilder) -> Outcome {
    let mut st = s.state.lock();
    st.queue.add(&s.fw, p.arc());
    let qp = st.queue.pop(Instant::now()).expect("pod ready");
    schedule_one_locked(&s.fw, &mut st, qp, 0, &s.stats)
}

fn placed(o: &Outcome) -> Option<&str> {
    match o {
        Outcome::Assumed { node, .. } => Some(node),
        Outcome::Failed(_) => None,
    }
}

fn message(o: &Outcome) -> &str {
    match o {
        Outcome::Failed(f) => &f.message,
        Outcome::Assumed { node, .. } => panic!("scheduled on {node}"),
    }
}

#[test]
fn feasible_nodes_to_find() {
    for (pct, nodes, want) in [
        (0, 10, 10),
        (0, 99, 99),
        (0, 100, 100),
        (0, 1000, 420),
        (0, 5000, 500),
        (0, 6000, 300),
        (0, 10000, 500),
        (50, 1000, 500),
        (100, 1000, 1000),
        (1, 1000, 100),
    ] {
        assert_eq!(
            num_feasible_nodes_to_find(pct, nodes),
            want,
            "{pct}% of {nodes}"
        );
    }
}

#[test]
fn equal_nodes_get_pods_spread_evenly() {
    let s = shared(vec![node("n1"), node("n2"), node("n3")]);
    let mut counts = std::collections::HashMap::new();
    for i in 0..30 {
        let o = attempt(&s, pod(&format!("p{i}")).req(&[("cpu", "100m")]));
        *counts.entry(placed(&o).unwrap().to_string()).or_insert(0) += 1;
    }
    assert_eq!(
        counts.values().copied().collect::<Vec<_>>(),
        vec![10, 10, 10],
        "{counts:?}"
    );
}

#[test]
fn least_allocated_prefers_the_emptier_node() {
    let s = shared(vec![node("busy"), node("idle")]);
    {
        let mut st = s.state.lock();
        st.cache
            .upsert_pod(pod("x").req(&[("cpu", "3")]).node("busy").arc());
    }
    assert_eq!(
        placed(&attempt(&s, pod("p").req(&[("cpu", "500m")]))),
        Some("idle")
    );
}

#[test]
fn failures_explain_every_node() {
    let s = shared(vec![
        node("n1").allocatable(&[("cpu", "1"), ("memory", "1Gi"), ("pods", "10")]),
        node("n2").taint("key", "value", "NoSchedule"),
        node("n3").taint("key", "value", "NoSchedule"),
    ]);
    let o = attempt(&s, pod("p").req(&[("cpu", "2")]));
    assert_eq!(
        message(&o),
        "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint {key: value}. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
    );
    let st = s.state.lock();
    assert_eq!(
        st.queue.location("p"),
        Some(crate::queue::Location::Unschedulable)
    );
    drop(st);
    let o = attempt(&shared(vec![]), pod("q"));
    assert_eq!(message(&o), "no nodes available to schedule pods");
}

#[test]
fn node_selector_and_node_name_affinity() {
    let s = shared(vec![node("a").label("disk", "ssd"), node("b")]);
    assert_eq!(
        placed(&attempt(&s, pod("p").node_selector("disk", "ssd"))),
        Some("a")
    );
    let o = attempt(&s, pod("q").node_selector("disk", "nvme"));
    assert_eq!(
        message(&o),
        "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector. preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling."
    );
    assert_eq!(
        placed(&attempt(&s, pod("r").node_name_affinity(&["b"]))),
        Some("b")
    );
    let o = attempt(
        &s,
        pod("t")
            .node_name_affinity(&["a"])
            .node_selector("disk", "x"),
    );
    assert!(message(&o).starts_with("0/2 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 1 node(s) didn't satisfy plugin(s) [NodeAffinity]."), "{}", message(&o));
}

#[test]
fn preemption_nominates_and_names_victims() {
    let s = shared(vec![node("n").allocatable(&[
        ("cpu", "1"),
        ("memory", "1Gi"),
        ("pods", "10"),
    ])]);
    {
        let mut st = s.state.lock();
        st.cache
            .upsert_pod(pod("low").priority(1).req(&[("cpu", "1")]).node("n").arc());
    }
    let o = attempt(&s, pod("high").priority(1000).req(&[("cpu", "1")]));
    let Outcome::Failed(f) = o else {
        panic!("should not fit before the victim leaves");
    };
    assert_eq!(f.nominate.as_deref(), Some("n"));
    assert_eq!(f.victims.len(), 1);
    assert_eq!(f.victims[0].name(), "low");
    assert_eq!(f.message, "0/1 nodes are available: 1 Insufficient cpu.");
    let patch = failure_status_patch(&f).unwrap();
    assert_eq!(patch["status"]["nominatedNodeName"], "n");
    assert_eq!(patch["status"]["conditions"][0]["reason"], "Unschedulable");
    // The nomination reserves the node: an equal-priority pod does not take it.
    let st = s.state.lock();
    assert_eq!(st.queue.nominated_pods("n").len(), 1);
}

#[test]
fn nominated_pods_hold_their_node() {
    let s = shared(vec![node("n").allocatable(&[
        ("cpu", "1"),
        ("memory", "1Gi"),
        ("pods", "10"),
    ])]);
    {
        let mut st = s.state.lock();
        st.queue
            .nominate(pod("big").priority(100).req(&[("cpu", "1")]).arc(), "n");
    }
    let o = attempt(&s, pod("small").priority(1).req(&[("cpu", "500m")]));
    assert!(
        message(&o).contains("1 Insufficient cpu"),
        "{}",
        message(&o)
    );
    let o = attempt(&s, pod("bigger").priority(200).req(&[("cpu", "500m")]));
    assert_eq!(placed(&o), Some("n"));
}

#[tokio::test]
async fn binding_and_events_go_through_the_api() {
    let s = shared(vec![node("n1")]);
    let api = Arc::new(crate::api::RecordingApi::default());
    let sched = Scheduler::new(
        s.clone(),
        api.clone(),
        LoopConfig {
            percentage_of_nodes_to_score: 0,
            bind_concurrency: 4,
        },
    );
    {
        let mut st = s.state.lock();
        st.queue.add(&s.fw, pod("ok").arc());
        st.queue.add(&s.fw, pod("bad").arc());
    }
    api.fail_bind.lock().push("bad".into());
    for _ in 0..2 {
        let qp = sched.pop().await;
        sched.schedule_one(qp).await;
    }
    for _ in 0..50 {
        if api.events.lock().len() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let calls = api.calls.lock().clone();
    assert!(
        calls.contains(&"bind default/ok n1".to_string()),
        "{calls:?}"
    );
    let events = api.events.lock().clone();
    assert!(
        events
            .iter()
            .any(|e| e.reason == "Scheduled"
                && e.message == "Successfully assigned default/ok to n1")
    );
    assert!(
        events
            .iter()
            .any(|e| e.reason == "FailedScheduling" && e.message == "Binding rejected: injected")
    );
    let st = s.state.lock();
    assert!(st.cache.is_assumed("ok"));
    assert!(!st.cache.has_pod("bad"));
    assert_eq!(
        st.queue.location("bad"),
        Some(crate::queue::Location::Backoff)
    );
}

/// Rough cycle throughput with 5,000 nodes (`cargo test --release -- --ignored --nocapture`).
#[test]
#[ignore = "measurement, not a check"]
fn throughput_5000_nodes() {
    let nodes: Vec<NodeBuilder> = (0..5000)
        .map(|i| {
            node(&format!("n{i}"))
                .label("zone", &format!("z{}", i % 3))
                .allocatable(&[("cpu", "32"), ("memory", "64Gi"), ("pods", "110")])
        })
        .collect();
    let s = shared(nodes);
    let pods: Vec<Arc<PodInfo>> = (0..5000)
        .map(|i| {
            pod(&format!("p{i}"))
                .req(&[("cpu", "100m"), ("memory", "128Mi")])
                .arc()
        })
        .collect();
    let start = std::time::Instant::now();
    let mut st = s.state.lock();
    for p in pods {
        st.queue.add(&s.fw, p);
        let qp = st.queue.pop(Instant::now()).unwrap();
        let o = schedule_one_locked(&s.fw, &mut st, qp, 0, &s.stats);
        assert!(placed(&o).is_some());
    }
    let secs = start.elapsed().as_secs_f64();
    println!("5000 pods on 5000 nodes: {:.0} pods/s", 5000.0 / secs);
}
