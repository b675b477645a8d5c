use super::*;
use crate::framework::{ActionType, EventResource};
use crate::plugins::names;
use crate::plugins::registry::{Args, default_framework};
use crate::testutil::{node, pod};

fn fw() -> Framework {
    default_framework("default-scheduler", &Args::default())
}

fn q() -> SchedulingQueue {
    SchedulingQueue::new(QueueConfig::default())
}

fn rejected_by(fw: &Framework, name: &str) -> PluginSet {
    let mut s = PluginSet::EMPTY;
    s.insert(fw.plugin_index(name).unwrap());
    s
}

fn node_added(n: &k8s_openapi::api::core::v1::Node) -> (ClusterEvent, EventObjects<'_>) {
    (
        ClusterEvent {
            resource: EventResource::Node,
            action: ActionType::ADD,
        },
        EventObjects::Node {
            old: None,
            new: Some(n),
        },
    )
}

#[tokio::test(start_paused = true)]
async fn pops_by_priority_then_age() {
    let fw = fw();
    let mut q = q();
    q.add(&fw, pod("low").priority(1).arc());
    q.add(&fw, pod("high1").priority(10).arc());
    q.add(&fw, pod("high2").priority(10).arc());
    let order: Vec<String> = std::iter::from_fn(|| q.pop(Instant::now()))
        .map(|p| p.info.name().to_string())
        .collect();
    assert_eq!(order, vec!["high1", "high2", "low"]);
}

#[tokio::test(start_paused = true)]
async fn errors_back_off_exponentially_up_to_ten_seconds() {
    let fw = fw();
    let mut q = q();
    q.add(&fw, pod("p").arc());
    let expected = [1, 2, 4, 8, 10, 10];
    for secs in expected {
        let p = q.pop(Instant::now()).expect("ready");
        q.requeue(&p, PluginSet::EMPTY, true, Instant::now(), false);
        assert_eq!(q.location("p"), Some(Location::Backoff));
        tokio::time::advance(Duration::from_millis(secs * 1000 - 1)).await;
        assert!(
            q.pop(Instant::now()).is_none(),
            "still backing off after {secs}s - 1ms"
        );
        tokio::time::advance(Duration::from_millis(1)).await;
        q.flush_backoff(Instant::now());
        assert_eq!(q.location("p"), Some(Location::Active), "{secs}s");
    }
}

#[tokio::test(start_paused = true)]
async fn relevant_events_move_unschedulable_pods() {
    let fw = fw();
    let mut q = q();
    q.add(&fw, pod("p").req(&[("cpu", "2")]).arc());
    let p = q.pop(Instant::now()).unwrap();
    q.requeue(
        &p,
        rejected_by(&fw, names::NODE_RESOURCES_FIT),
        false,
        Instant::now(),
        false,
    );
    assert_eq!(q.location("p"), Some(Location::Unschedulable));

    // A node too small for the pod: the hint says Skip.
    let tiny = node("tiny")
        .allocatable(&[("cpu", "1"), ("pods", "10")])
        .obj();
    let (ev, obj) = node_added(&tiny);
    assert!(!q.move_all(&fw, &ev, &obj, Instant::now()));
    // A taint change: NodeResourcesFit did not register for it.
    let big = node("big").obj();
    let taint = ClusterEvent {
        resource: EventResource::Node,
        action: ActionType::UPDATE_NODE_TAINT,
    };
    let obj = EventObjects::Node {
        old: Some(&big),
        new: Some(&big),
    };
    assert!(!q.move_all(&fw, &taint, &obj, Instant::now()));
    assert_eq!(q.location("p"), Some(Location::Unschedulable));
    // A big enough node: moves (still within backoff → backoff, then active).
    let (ev, obj) = node_added(&big);
    assert!(q.move_all(&fw, &ev, &obj, Instant::now()));
    assert_eq!(q.location("p"), Some(Location::Backoff));
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(q.pop(Instant::now()).unwrap().info.name(), "p");
}

#[tokio::test(start_paused = true)]
async fn events_during_the_attempt_count() {
    let fw = fw();
    let mut q = q();
    q.add(&fw, pod("p").arc());
    let p = q.pop(Instant::now()).unwrap();
    let n = node("n").obj();
    let (ev, obj) = node_added(&n);
    q.move_all(&fw, &ev, &obj, Instant::now());
    q.requeue(
        &p,
        rejected_by(&fw, names::NODE_RESOURCES_FIT),
        false,
        Instant::now(),
        false,
    );
    assert_eq!(q.location("p"), Some(Location::Backoff));
}

#[tokio::test(start_paused = true)]
async fn leftover_unschedulable_pods_retry_after_five_minutes() {
    let fw = fw();
    let mut q = q();
    q.add(&fw, pod("p").arc());
    let p = q.pop(Instant::now()).unwrap();
    q.requeue(
        &p,
        rejected_by(&fw, names::TAINT_TOLERATION),
        false,
        Instant::now(),
        false,
    );
    tokio::time::advance(Duration::from_secs(299)).await;
    assert!(!q.flush_unschedulable_leftover(Instant::now()));
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(q.flush_unschedulable_leftover(Instant::now()));
    assert_eq!(q.location("p"), Some(Location::Active));
}

#[tokio::test(start_paused = true)]
async fn gated_and_updated_and_deleted_pods() {
    let fw = fw();
    let mut q = q();
    assert!(!q.add(&fw, pod("g").gate("wait").arc()));
    assert!(q.pop(Instant::now()).is_none());
    assert!(q.update(&fw, pod("g").arc(), Instant::now()));
    assert_eq!(q.pop(Instant::now()).unwrap().info.name(), "g");

    q.add(&fw, pod("u").arc());
    let p = q.pop(Instant::now()).unwrap();
    q.requeue(
        &p,
        rejected_by(&fw, names::TAINT_TOLERATION),
        false,
        Instant::now(),
        false,
    );
    // A status-only update does not move it; a spec change does.
    assert!(!q.update(&fw, pod("u").arc(), Instant::now()));
    assert!(q.update(
        &fw,
        pod("u").toleration("k", None, None).arc(),
        Instant::now()
    ));
    assert_eq!(q.location("u"), Some(Location::Backoff));

    q.delete("u");
    assert!(!q.contains("u"));
    // A deleted pod whose attempt ends is not put back.
    q.add(&fw, pod("d").arc());
    let p = q.pop(Instant::now()).unwrap();
    q.delete("d");
    q.requeue(&p, PluginSet::EMPTY, true, Instant::now(), false);
    assert!(!q.contains("d"));
}

#[tokio::test(start_paused = true)]
async fn nominations() {
    let fw = fw();
    let mut q = q();
    q.add(&fw, pod("p").nominated("n1").arc());
    assert_eq!(q.nominated_pods("n1").len(), 1);
    q.nominate(pod("p").arc(), "n2");
    assert!(q.nominated_pods("n1").is_empty());
    assert_eq!(q.nominated_node("p"), Some("n2"));
    q.done("p");
    assert!(!q.has_nominations());
}
