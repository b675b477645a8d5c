//! Black-box tests of the scheduler in `rkube server` (and `rkube scheduler`), driven with
//! kubectl 1.33: Node objects are created directly (Ready, with capacity), pods are applied,
//! and placement is read from `kubectl get pods -o wide`, reasons from `kubectl describe`.
//! Every filter and every score that changes placement has a test here; preemption,
//! priority admission, `schedulerName` and leader election too.

use crate::common;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{RKUBE, Server, manifest};
use serde_json::{Value, json};

/// A Ready node with `cpu` CPUs, 8 GiB, `pods` pods, its hostname label, plus `extra`
/// merged in (labels, taints, images, unschedulable).
fn node(name: &str, cpu: &str, pods: &str, extra: Value) -> Value {
    let mut n = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": {},
        "status": {
            "capacity": {"cpu": cpu, "memory": "8Gi", "pods": pods},
            "allocatable": {"cpu": cpu, "memory": "8Gi", "pods": pods},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
        },
    });
    merge(&mut n, &extra);
    n
}

/// A pod in `default` with one container requesting `cpu` (none when empty), plus `spec`
/// merged into its spec and `labels`.
fn pod(name: &str, cpu: &str, labels: Value, spec: Value) -> Value {
    let resources = if cpu.is_empty() {
        json!({})
    } else {
        json!({"requests": {"cpu": cpu}})
    };
    let mut p = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "localhost/busybox:1", "resources": resources}]},
    });
    merge(&mut p["spec"], &spec);
    p
}

fn merge(target: &mut Value, extra: &Value) {
    match (target, extra) {
        (Value::Object(t), Value::Object(e)) => {
            for (k, v) in e {
                merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (t, e) => *t = e.clone(),
    }
}

/// `kubectl apply` of these objects (as one List).
fn apply(s: &Server, objects: &[Value]) {
    let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
    let (_d, path) = manifest(&list.to_string());
    s.kubectl(&["apply", "-f", path.to_str().unwrap()]);
}

/// Waits until `check` returns Some, or panics saying what did not happen.
fn eventually<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Pod name → node, from `kubectl get pods -o wide` ("<none>" when not bound).
fn placements(s: &Server) -> BTreeMap<String, String> {
    let out = s.kubectl(&["get", "pods", "-o", "wide", "--no-headers"]);
    out.lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            // NAME READY STATUS RESTARTS AGE IP NODE NOMINATED-NODE READINESS-GATES
            (cols.len() >= 8).then(|| (cols[0].to_string(), cols[6].to_string()))
        })
        .collect()
}

/// The node `pod` is bound to, once it is.
fn wait_bound(s: &Server, pod: &str) -> String {
    eventually(
        &format!("{pod} to be scheduled"),
        Duration::from_secs(20),
        || {
            placements(s)
                .get(pod)
                .filter(|n| n.as_str() != "<none>")
                .cloned()
        },
    )
}

/// `kubectl describe pod`, once it contains `text`.
fn wait_described(s: &Server, pod: &str, text: &str) -> String {
    let mut last = String::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        last = s.kubectl(&["describe", "pod", pod]);
        if last.contains(text) {
            return last;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("describe pod {pod} never showed {text:?}:\n{last}");
}

/// The FailedScheduling message `kubectl describe pod` shows, once there is one
/// containing `text`.
fn failed_scheduling(s: &Server, pod: &str, text: &str) -> String {
    let d = wait_described(s, pod, text);
    let line = d
        .lines()
        .rev()
        .find(|l| l.contains("FailedScheduling") && l.contains(text))
        .unwrap_or_else(|| panic!("no FailedScheduling event with {text:?}:\n{d}"));
    line.split("default-scheduler")
        .nth(1)
        .unwrap_or("")
        .trim()
        .to_string()
}

fn jsonpath(s: &Server, kind: &str, name: &str, path: &str) -> String {
    s.kubectl(&["get", kind, name, "-o", &format!("jsonpath={path}")])
}

fn count_by_node(p: &BTreeMap<String, String>, prefix: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for (pod, node) in p {
        if pod.starts_with(prefix) {
            *out.entry(node.clone()).or_default() += 1;
        }
    }
    out
}

#[test]
fn binds_pods_spreads_equal_nodes_and_records_scheduled_events() {
    let s = Server::start(&[]);
    apply(
        &s,
        &[
            node("node-1", "4", "110", json!({})),
            node("node-2", "4", "110", json!({})),
            node("node-3", "4", "110", json!({})),
        ],
    );
    let pods: Vec<Value> = (0..9)
        .map(|i| pod(&format!("web-{i}"), "", json!({"app": "web"}), json!({})))
        .collect();
    apply(&s, &pods);
    for i in 0..9 {
        wait_bound(&s, &format!("web-{i}"));
    }
    let p = placements(&s);
    // Equal nodes, equal pods: LeastAllocated with the assume cache spreads them evenly.
    assert_eq!(
        count_by_node(&p, "web-")
            .values()
            .copied()
            .collect::<Vec<_>>(),
        vec![3, 3, 3],
        "{p:?}"
    );
    let node = &p["web-0"];
    wait_described(
        &s,
        "web-0",
        &format!("Successfully assigned default/web-0 to {node}"),
    );
    let d = s.kubectl(&["describe", "pod", "web-0"]);
    assert!(
        d.contains("Normal  Scheduled") && d.contains("default-scheduler"),
        "{d}"
    );
}

#[test]
fn failed_scheduling_message_condition_and_retry_on_new_node() {
    let s = Server::start(&[]);
    let taint =
        json!({"spec": {"taints": [{"key": "key", "value": "value", "effect": "NoSchedule"}]}});
    apply(
        &s,
        &[
            node("node-1", "1", "110", json!({})),
            node("node-2", "4", "110", taint.clone()),
            node("node-3", "4", "110", taint),
        ],
    );
    apply(&s, &[pod("p", "2", json!({}), json!({}))]);
    let want = "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint {key: value}. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.";
    let msg = failed_scheduling(&s, "p", "0/3 nodes are available");
    assert_eq!(msg, want);
    eventually(
        "the PodScheduled condition",
        Duration::from_secs(10),
        || {
            let c = jsonpath(
                &s,
                "pod",
                "p",
                "{.status.conditions[?(@.type==\"PodScheduled\")]}",
            );
            let c: Value = serde_json::from_str(&c).ok()?;
            (c["status"] == "False" && c["reason"] == "Unschedulable" && c["message"] == want)
                .then_some(())
        },
    );
    assert_eq!(placements(&s)["p"], "<none>");
    // A node that fits arrives: the pod is retried because of that event.
    apply(&s, &[node("node-4", "4", "110", json!({}))]);
    assert_eq!(wait_bound(&s, "p"), "node-4");
    wait_described(&s, "p", "Successfully assigned default/p to node-4");
    eventually("PodScheduled=True", Duration::from_secs(10), || {
        (jsonpath(
            &s,
            "pod",
            "p",
            "{.status.conditions[?(@.type==\"PodScheduled\")].status}",
        ) == "True")
            .then_some(())
    });
}

#[test]
fn node_unschedulable_node_name_and_node_selector() {
    let s = Server::start(&[]);
    apply(
        &s,
        &[
            node(
                "node-1",
                "4",
                "110",
                json!({"spec": {"unschedulable": true}}),
            ),
            node("node-2", "4", "110", json!({})),
        ],
    );
    // NodeUnschedulable: the cordoned node is skipped.
    apply(&s, &[pod("a", "", json!({}), json!({}))]);
    assert_eq!(wait_bound(&s, "a"), "node-2");
    s.kubectl(&["cordon", "node-2"]);
    apply(&s, &[pod("b", "", json!({}), json!({}))]);
    assert_eq!(
        failed_scheduling(&s, "b", "were unschedulable"),
        "0/2 nodes are available: 2 node(s) were unschedulable. preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling."
    );
    // Uncordoning is an event that retries it.
    s.kubectl(&["uncordon", "node-1"]);
    assert_eq!(wait_bound(&s, "b"), "node-1");

    // NodeName: a pod that names its node is not the scheduler's business.
    apply(
        &s,
        &[pod("pinned", "", json!({}), json!({"nodeName": "node-2"}))],
    );
    assert_eq!(wait_bound(&s, "pinned"), "node-2");
    std::thread::sleep(Duration::from_millis(500));
    let d = s.kubectl(&["describe", "pod", "pinned"]);
    assert!(!d.contains("Scheduled"), "{d}");

    // NodeSelector: pending until a node gets the label.
    apply(
        &s,
        &[pod(
            "ssd",
            "",
            json!({}),
            json!({"nodeSelector": {"disk": "ssd"}}),
        )],
    );
    assert_eq!(
        failed_scheduling(&s, "ssd", "node affinity/selector"),
        "0/2 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 1 node(s) were unschedulable. preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling."
    );
    s.kubectl(&["label", "node", "node-1", "disk=ssd"]);
    assert_eq!(wait_bound(&s, "ssd"), "node-1");
}

#[test]
fn taints_tolerations_and_prefer_no_schedule() {
    let s = Server::start(&[]);
    apply(
        &s,
        &[
            node(
                "soft",
                "4",
                "110",
                json!({"spec": {"taints": [{"key": "soft", "value": "yes", "effect": "PreferNoSchedule"}]}}),
            ),
            node(
                "gpu",
                "4",
                "110",
                json!({"spec": {"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}}),
            ),
            node("plain", "4", "110", json!({})),
        ],
    );
    // Untolerated NoSchedule filters; untolerated PreferNoSchedule scores lower.
    let pods: Vec<Value> = (0..3)
        .map(|i| pod(&format!("t-{i}"), "", json!({}), json!({})))
        .collect();
    apply(&s, &pods);
    for i in 0..3 {
        assert_eq!(wait_bound(&s, &format!("t-{i}")), "plain");
    }
    // Tolerating the NoSchedule taint opens the emptier gpu node.
    apply(
        &s,
        &[pod(
            "tolerant",
            "",
            json!({}),
            json!({"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]}),
        )],
    );
    assert_eq!(wait_bound(&s, "tolerant"), "gpu");
    // NoExecute keeps pods out too.
    s.kubectl(&["taint", "node", "plain", "evict=now:NoExecute"]);
    s.kubectl(&["taint", "node", "soft", "evict=now:NoExecute"]);
    apply(&s, &[pod("out", "", json!({}), json!({}))]);
    let msg = failed_scheduling(&s, "out", "untolerated taint");
    assert_eq!(
        msg,
        "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, 2 node(s) had untolerated taint {evict: now}. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
    );
}

#[test]
fn node_affinity_required_and_preferred() {
    let s = Server::start(&[]);
    apply(
        &s,
        &[
            node(
                "a",
                "4",
                "110",
                json!({"metadata": {"labels": {"zone": "a"}}}),
            ),
            node(
                "b",
                "4",
                "110",
                json!({"metadata": {"labels": {"zone": "b"}}}),
            ),
            node(
                "c",
                "4",
                "110",
                json!({"metadata": {"labels": {"zone": "c"}}}),
            ),
        ],
    );
    let required = |values: Value| {
        json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": values}]}]
        }}}})
    };
    let preferred = json!({"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 50, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["c"]}]}}
    ]}}});
    apply(
        &s,
        &[
            pod("req", "", json!({}), required(json!(["b"]))),
            pod("pref-0", "", json!({}), preferred.clone()),
            pod("pref-1", "", json!({}), preferred),
            pod("none", "", json!({}), required(json!(["x"]))),
        ],
    );
    assert_eq!(wait_bound(&s, "req"), "b");
    assert_eq!(wait_bound(&s, "pref-0"), "c");
    assert_eq!(wait_bound(&s, "pref-1"), "c");
    assert_eq!(
        failed_scheduling(&s, "none", "node affinity"),
        "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
    );
}

#[test]
fn node_ports_conflict_until_the_holder_is_deleted() {
    let s = Server::start(&[]);
    apply(
        &s,
        &[
            node("node-1", "4", "110", json!({})),
            node("node-2", "4", "110", json!({})),
        ],
    );
    let port = json!({"containers": [{"name": "c", "image": "localhost/busybox:1", "ports": [{"containerPort": 8080, "hostPort": 8080}]}]});
    apply(&s, &[pod("port-0", "", json!({}), port.clone())]);
    let first = wait_bound(&s, "port-0");
    apply(&s, &[pod("port-1", "", json!({}), port.clone())]);
    let second = wait_bound(&s, "port-1");
    assert_ne!(first, second);
    apply(&s, &[pod("port-2", "", json!({}), port)]);
    assert_eq!(
        failed_scheduling(&s, "port-2", "free ports"),
        "0/2 nodes are available: 2 node(s) didn't have free ports for the requested pod ports. preemption: 0/2 nodes are available: 2 No preemption victims found for incoming pod."
    );
    // Deleting a holder frees its port: the pod is retried on that event.
    s.kubectl(&["delete", "pod", "port-0", "--grace-period=0", "--force"]);
    assert_eq!(wait_bound(&s, "port-2"), first);
}

#[test]
fn resources_fit_counts_init_containers_and_pod_count() {
    let s = Server::start(&[]);
    apply(&s, &[node("node-1", "2", "2", json!({}))]);
    let init = |cpu: &str| json!({"initContainers": [{"name": "init", "image": "localhost/busybox:1", "resources": {"requests": {"cpu": cpu}}}]});
    // The largest init container counts when larger than the containers' sum.
    apply(&s, &[pod("too-big-init", "100m", json!({}), init("2500m"))]);
    assert_eq!(
        failed_scheduling(&s, "too-big-init", "Insufficient cpu"),
        "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling."
    );
    apply(&s, &[pod("init", "500m", json!({}), init("1500m"))]);
    assert_eq!(wait_bound(&s, "init"), "node-1");
    apply(&s, &[pod("half", "500m", json!({}), json!({}))]);
    assert_eq!(wait_bound(&s, "half"), "node-1");
    // The node allows 2 pods.
    apply(&s, &[pod("third", "", json!({}), json!({}))]);
    assert_eq!(
        failed_scheduling(&s, "third", "Too many pods"),
        "0/1 nodes are available: 1 Too many pods. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod."
    );
    // Freeing a slot retries it.
    s.kubectl(&["delete", "pod", "half", "--grace-period=0", "--force"]);
    assert_eq!(wait_bound(&s, "third"), "node-1");
}

#[test]
fn inter_pod_affinity_and_anti_affinity() {
    let s = Server::start(&[]);
    apply(
        &s,
        &[
            node(
                "n1",
                "4",
                "110",
                json!({"metadata": {"labels": {"zone": "a"}}}),
            ),
            node(
                "n2",
                "4",
                "110",
                json!({"metadata": {"labels": {"zone": "a"}}}),
            ),
            node(
                "n3",
                "4",
                "110",
                json!({"metadata": {"labels": {"zone": "b"}}}),
            ),
        ],
    );
    let term = |topology: &str, app: &str| json!({"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": topology});
    apply(
        &s,
        &[pod(
            "db",
            "",
            json!({"app": "db"}),
            json!({"nodeSelector": {"kubernetes.io/hostname": "n3"}}),
        )],
    );
    assert_eq!(wait_bound(&s, "db"), "n3");
    apply(
        &s,
        &[
            pod(
                "near-db",
                "",
                json!({}),
                json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term("zone", "db")]}}}),
            ),
            pod(
                "far-from-db",
                "",
                json!({}),
                json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term("zone", "db")]}}}),
            ),
            pod(
                "likes-db",
                "",
                json!({}),
                json!({"affinity": {"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 100, "podAffinityTerm": term("zone", "db")}
                ]}}}),
            ),
        ],
    );
    assert_eq!(wait_bound(&s, "near-db"), "n3");
    assert_ne!(wait_bound(&s, "far-from-db"), "n3");
    assert_eq!(wait_bound(&s, "likes-db"), "n3");
    // One per host: the fourth has nowhere to go.
    let anti = json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term("kubernetes.io/hostname", "cache")]}}});
    let caches: Vec<Value> = (0..3)
        .map(|i| {
            pod(
                &format!("cache-{i}"),
                "",
                json!({"app": "cache"}),
                anti.clone(),
            )
        })
        .collect();
    apply(&s, &caches);
    for i in 0..3 {
        wait_bound(&s, &format!("cache-{i}"));
    }
    let p = placements(&s);
    assert_eq!(count_by_node(&p, "cache-").len(), 3, "{p:?}");
    apply(&s, &[pod("cache-3", "", json!({"app": "cache"}), anti)]);
    assert_eq!(
        failed_scheduling(&s, "cache-3", "anti-affinity"),
        "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod."
    );
    // A pod with affinity to nothing that exists (and not matching itself) cannot go.
    apply(
        &s,
        &[pod(
            "lonely",
            "",
            json!({}),
            json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term("zone", "ghost")]}}}),
        )],
    );
    assert_eq!(
        failed_scheduling(&s, "lonely", "affinity rules"),
        "0/3 nodes are available: 3 node(s) didn't match pod affinity rules. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
    );
}

#[test]
fn topology_spread_do_not_schedule_and_schedule_anyway() {
    let s = Server::start(&[]);
    apply(
        &s,
        &[
            node(
                "a1",
                "4",
                "110",
                json!({"metadata": {"labels": {"zone": "a"}}}),
            ),
            node(
                "a2",
                "4",
                "110",
                json!({"metadata": {"labels": {"zone": "a"}}}),
            ),
            node(
                "b1",
                "4",
                "110",
                json!({"metadata": {"labels": {"zone": "b"}}}),
            ),
        ],
    );
    let spread = |when: &str, key: &str, app: &str| {
        json!({"topologySpreadConstraints": [{
            "maxSkew": 1, "topologyKey": key, "whenUnsatisfiable": when,
            "labelSelector": {"matchLabels": {"app": app}}
        }]})
    };
    // Zone a has twice the nodes, but DoNotSchedule with maxSkew 1 alternates zones.
    for i in 0..4 {
        let name = format!("z-{i}");
        apply(
            &s,
            &[pod(
                &name,
                "",
                json!({"app": "z"}),
                spread("DoNotSchedule", "zone", "z"),
            )],
        );
        wait_bound(&s, &name);
    }
    let p = placements(&s);
    let zone = |n: &str| if n.starts_with('a') { "a" } else { "b" };
    let mut per_zone = BTreeMap::new();
    for (pod, node) in &p {
        if pod.starts_with("z-") {
            *per_zone.entry(zone(node)).or_insert(0) += 1;
        }
    }
    assert_eq!(per_zone, BTreeMap::from([("a", 2), ("b", 2)]), "{p:?}");
    // With zone a cordoned, zone b may take one more (skew 1), not two; a node without
    // the topology label is no option at all.
    apply(&s, &[node("nolabel", "4", "110", json!({}))]);
    s.kubectl(&["cordon", "a1"]);
    s.kubectl(&["cordon", "a2"]);
    apply(
        &s,
        &[pod(
            "z-4",
            "",
            json!({"app": "z"}),
            spread("DoNotSchedule", "zone", "z"),
        )],
    );
    assert_eq!(wait_bound(&s, "z-4"), "b1");
    apply(
        &s,
        &[pod(
            "z-5",
            "",
            json!({"app": "z"}),
            spread("DoNotSchedule", "zone", "z"),
        )],
    );
    assert_eq!(
        failed_scheduling(&s, "z-5", "topology spread"),
        "0/4 nodes are available: 1 node(s) didn't match pod topology spread constraints, 1 node(s) didn't match pod topology spread constraints (missing required label), 2 node(s) were unschedulable. preemption: 0/4 nodes are available: 1 No preemption victims found for incoming pod, 3 Preemption is not helpful for scheduling."
    );
    s.kubectl(&["uncordon", "a1"]);
    assert_eq!(wait_bound(&s, "z-5"), "a1");

    // ScheduleAnyway beats LeastAllocated: busy-but-empty-of-matches wins over idle.
    let s = Server::start(&[]);
    apply(
        &s,
        &[
            node("idle", "4", "110", json!({})),
            node("busy", "4", "110", json!({})),
        ],
    );
    apply(
        &s,
        &[
            pod(
                "match",
                "0",
                json!({"app": "s"}),
                json!({"nodeName": "idle", "containers": [{"name": "c", "image": "localhost/busybox:1", "resources": {"requests": {"cpu": "0", "memory": "0"}}}]}),
            ),
            pod(
                "load",
                "1",
                json!({"app": "other"}),
                json!({"nodeName": "busy"}),
            ),
        ],
    );
    wait_bound(&s, "match");
    wait_bound(&s, "load");
    apply(
        &s,
        &[pod(
            "soft",
            "",
            json!({"app": "s"}),
            spread("ScheduleAnyway", "kubernetes.io/hostname", "s"),
        )],
    );
    assert_eq!(wait_bound(&s, "soft"), "busy");
    // Without the constraint the same pod goes to the idle node.
    apply(&s, &[pod("plain", "", json!({"app": "s"}), json!({}))]);
    assert_eq!(wait_bound(&s, "plain"), "idle");
}

#[test]
fn image_locality_and_balanced_allocation_steer_placement() {
    let s = Server::start(&[]);
    apply(
        &s,
        &[
            node(
                "has-image",
                "4",
                "110",
                json!({"status": {"images": [{"names": ["localhost/big:1"], "sizeBytes": 900_000_000}]}}),
            ),
            node("no-image", "4", "110", json!({})),
        ],
    );
    let img = json!({"containers": [{"name": "c", "image": "localhost/big:1"}]});
    apply(&s, &[pod("img", "", json!({}), img)]);
    assert_eq!(wait_bound(&s, "img"), "has-image");

    // LeastAllocated ties (both nodes half free on average); BalancedAllocation prefers the
    // node whose CPU and memory use stay even.
    let group = json!({"metadata": {"labels": {"group": "balanced"}}});
    apply(
        &s,
        &[
            node("cpu-heavy", "4", "110", group.clone()),
            node("even", "4", "110", group),
        ],
    );
    let requests = |cpu: &str, memory: &str| {
        json!({"containers": [{"name": "c", "image": "localhost/busybox:1",
            "resources": {"requests": {"cpu": cpu, "memory": memory}}}]})
    };
    let mut on_cpu_heavy = requests("2", "0");
    merge(&mut on_cpu_heavy, &json!({"nodeName": "cpu-heavy"}));
    let mut on_even = requests("1", "2Gi");
    merge(&mut on_even, &json!({"nodeName": "even"}));
    apply(
        &s,
        &[
            pod("load-a", "", json!({}), on_cpu_heavy),
            pod("load-b", "", json!({}), on_even),
        ],
    );
    wait_bound(&s, "load-a");
    wait_bound(&s, "load-b");
    let mut new = requests("1", "2Gi");
    merge(&mut new, &json!({"nodeSelector": {"group": "balanced"}}));
    apply(&s, &[pod("balanced", "", json!({}), new)]);
    assert_eq!(wait_bound(&s, "balanced"), "even");
}

#[test]
fn preemption_evicts_lower_priority_pods_and_nominates_the_node() {
    let s = Server::start(&[]);
    apply(
        &s,
        &[
            node("node-1", "2", "110", json!({})),
            json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                   "metadata": {"name": "low"}, "value": 100}),
            json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                   "metadata": {"name": "high"}, "value": 1000}),
            json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                   "metadata": {"name": "polite"}, "value": 1000, "preemptionPolicy": "Never"}),
        ],
    );
    apply(
        &s,
        &[
            pod("low-0", "1", json!({}), json!({"priorityClassName": "low"})),
            pod("low-1", "1", json!({}), json!({"priorityClassName": "low"})),
        ],
    );
    wait_bound(&s, "low-0");
    wait_bound(&s, "low-1");
    // preemptionPolicy: Never waits instead of evicting.
    apply(
        &s,
        &[pod(
            "polite",
            "1",
            json!({}),
            json!({"priorityClassName": "polite"}),
        )],
    );
    assert_eq!(
        failed_scheduling(&s, "polite", "not eligible"),
        "0/1 nodes are available: 1 Insufficient cpu. preemption: not eligible due to preemptionPolicy=Never."
    );
    s.kubectl(&["delete", "pod", "polite", "--grace-period=0", "--force"]);
    // A higher-priority pod evicts exactly one low pod and is nominated to the node.
    apply(
        &s,
        &[pod(
            "high",
            "1",
            json!({}),
            json!({"priorityClassName": "high"}),
        )],
    );
    eventually("the nomination", Duration::from_secs(20), || {
        let out = s.kubectl(&["get", "pod", "high", "-o", "wide", "--no-headers"]);
        let cols: Vec<String> = out.split_whitespace().map(str::to_string).collect();
        (cols.get(7).map(String::as_str) == Some("node-1")).then_some(())
    });
    failed_scheduling(&s, "high", "0/1 nodes are available: 1 Insufficient cpu.");
    let victim = eventually("a victim being deleted", Duration::from_secs(20), || {
        ["low-0", "low-1"]
            .into_iter()
            .find(|v| !jsonpath(&s, "pod", v, "{.metadata.deletionTimestamp}").is_empty())
    });
    let cond = jsonpath(
        &s,
        "pod",
        victim,
        "{.status.conditions[?(@.type==\"DisruptionTarget\")].reason}",
    );
    assert_eq!(cond, "PreemptionByScheduler");
    let survivor = if victim == "low-0" { "low-1" } else { "low-0" };
    assert!(jsonpath(&s, "pod", survivor, "{.metadata.deletionTimestamp}").is_empty());
    let reasons = s.kubectl(&[
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.name={victim}"),
        "-o",
        "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}",
    ]);
    assert!(
        reasons.contains("Preempted: Preempted by pod") && reasons.contains("on node node-1"),
        "{reasons}"
    );
    // No kubelet here: finish the victim's graceful deletion as one would.
    s.kubectl(&["delete", "pod", victim, "--grace-period=0", "--force"]);
    assert_eq!(wait_bound(&s, "high"), "node-1");
    wait_described(&s, "high", "Successfully assigned default/high to node-1");
}

#[test]
fn priority_admission_resolves_classes() {
    let s = Server::start(&["--disable-scheduler"]);
    let out = s.kubectl(&[
        "get",
        "priorityclasses",
        "-o",
        "custom-columns=NAME:.metadata.name,VALUE:.value",
    ]);
    assert!(
        out.contains("system-cluster-critical") && out.contains("2000000000"),
        "{out}"
    );
    assert!(
        out.contains("system-node-critical") && out.contains("2000001000"),
        "{out}"
    );
    // A missing class is refused.
    let (_d, path) = manifest(
        &pod(
            "missing",
            "",
            json!({}),
            json!({"priorityClassName": "nope"}),
        )
        .to_string(),
    );
    let err = s.kubectl_err(&["apply", "-f", path.to_str().unwrap()]);
    assert!(
        err.contains("pods \"missing\" is forbidden: no PriorityClass with name nope was found"),
        "{err}"
    );
    // No class and no default: priority 0.
    apply(&s, &[pod("zero", "", json!({}), json!({}))]);
    assert_eq!(jsonpath(&s, "pod", "zero", "{.spec.priority}"), "0");
    assert_eq!(
        jsonpath(&s, "pod", "zero", "{.spec.preemptionPolicy}"),
        "PreemptLowerPriority"
    );
    // A class sets priority and preemptionPolicy.
    apply(
        &s,
        &[
            json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                   "metadata": {"name": "batch"}, "value": 50, "preemptionPolicy": "Never"}),
            json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                   "metadata": {"name": "everyone"}, "value": 7, "globalDefault": true}),
        ],
    );
    apply(
        &s,
        &[
            pod(
                "batch",
                "",
                json!({}),
                json!({"priorityClassName": "batch"}),
            ),
            pod(
                "critical",
                "",
                json!({}),
                json!({"priorityClassName": "system-node-critical"}),
            ),
            pod("default", "", json!({}), json!({})),
        ],
    );
    assert_eq!(jsonpath(&s, "pod", "batch", "{.spec.priority}"), "50");
    assert_eq!(
        jsonpath(&s, "pod", "batch", "{.spec.preemptionPolicy}"),
        "Never"
    );
    assert_eq!(
        jsonpath(&s, "pod", "critical", "{.spec.priority}"),
        "2000001000"
    );
    // The global default applies to pods without a class.
    assert_eq!(jsonpath(&s, "pod", "default", "{.spec.priority}"), "7");
    assert_eq!(
        jsonpath(&s, "pod", "default", "{.spec.priorityClassName}"),
        "everyone"
    );
}

#[test]
fn priority_classes_are_validated_like_upstream() {
    let s = Server::start(&["--disable-scheduler", "--disable-controller-manager"]);
    let pc = |name: &str, extra: Value| {
        let mut v = json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                           "metadata": {"name": name}, "value": 10});
        merge(&mut v, &extra);
        v
    };
    let refused = |obj: Value| {
        let (_d, path) = manifest(&obj.to_string());
        s.kubectl_err(&["create", "-f", path.to_str().unwrap()])
    };
    // User classes stop at 1e9; `system-` names are reserved.
    let err = refused(pc("huge", json!({"value": 1_000_000_001})));
    assert!(
        err.contains("maximum allowed value of a user defined priority is 1000000000"),
        "{err}"
    );
    let err = refused(pc("system-mine", json!({})));
    assert!(
        err.contains("priority class names with 'system-' prefix are reserved for system use only"),
        "{err}"
    );
    let err = refused(pc("odd", json!({"preemptionPolicy": "Sometimes"})));
    assert!(err.contains("Unsupported value: \"Sometimes\""), "{err}");
    for name in ["huge", "system-mine", "odd"] {
        let out = s.kubectl(&["get", "priorityclasses", "-o", "name"]);
        assert!(!out.contains(name), "{name} was stored: {out}");
    }
    // One global default at most (403, as upstream's priority admission).
    apply(&s, &[pc("first", json!({"globalDefault": true}))]);
    let err = refused(pc("second", json!({"globalDefault": true})));
    assert!(
        err.contains(
            "PriorityClass first is already marked as default. Only one default can exist"
        ),
        "{err}"
    );
    apply(&s, &[pc("second", json!({}))]);
    let err = s.kubectl_err(&[
        "patch",
        "priorityclass",
        "second",
        "--type=merge",
        "-p",
        r#"{"globalDefault":true}"#,
    ]);
    assert!(err.contains("is already marked as default"), "{err}");
    // value and preemptionPolicy are immutable.
    let err = s.kubectl_err(&[
        "patch",
        "priorityclass",
        "second",
        "--type=merge",
        "-p",
        r#"{"value":11}"#,
    ]);
    assert!(err.contains("may not be changed in an update"), "{err}");
    assert_eq!(jsonpath(&s, "priorityclass", "second", "{.value}"), "10");
    // The built-in classes cannot be deleted.
    let err = s.kubectl_err(&["delete", "priorityclass", "system-node-critical"]);
    assert!(
        err.contains("this is a system priority class and cannot be deleted"),
        "{err}"
    );
    s.kubectl(&["get", "priorityclass", "system-node-critical"]);
}

#[test]
fn other_scheduler_names_are_ignored() {
    let s = Server::start(&[]);
    apply(&s, &[node("node-1", "4", "110", json!({}))]);
    apply(
        &s,
        &[
            pod("mine", "", json!({}), json!({})),
            pod(
                "theirs",
                "",
                json!({}),
                json!({"schedulerName": "other-scheduler"}),
            ),
        ],
    );
    assert_eq!(wait_bound(&s, "mine"), "node-1");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(placements(&s)["theirs"], "<none>");
    let d = s.kubectl(&["describe", "pod", "theirs"]);
    assert!(
        !d.contains("FailedScheduling") && !d.contains("Scheduled"),
        "{d}"
    );
}

/// A `rkube scheduler` process, killed (by PID) on drop.
struct Standalone(Child);

impl Standalone {
    fn start(s: &Server) -> Standalone {
        let child = Command::new(RKUBE)
            .arg("scheduler")
            .arg("--kubeconfig")
            .arg(&s.kubeconfig)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn rkube scheduler");
        Standalone(child)
    }

    fn terminate(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

impl Drop for Standalone {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn leader_election_hands_over_between_standalone_schedulers() {
    let s = Server::start(&["--disable-scheduler"]);
    apply(&s, &[node("node-1", "4", "110", json!({}))]);
    apply(&s, &[pod("before", "", json!({}), json!({}))]);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(placements(&s)["before"], "<none>", "no scheduler runs yet");
    let mut first = Standalone::start(&s);
    assert_eq!(wait_bound(&s, "before"), "node-1");
    let holder = || {
        s.kubectl(&[
            "-n",
            "kube-system",
            "get",
            "lease",
            "kube-scheduler",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ])
    };
    let leader = eventually("a leader", Duration::from_secs(10), || {
        Some(holder()).filter(|h| !h.is_empty())
    });
    let mut second = Standalone::start(&s);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(holder(), leader, "the second scheduler waits");
    // The leader stops (releasing the lease); the second takes over and schedules.
    first.terminate();
    let next = eventually("a new leader", Duration::from_secs(20), || {
        let h = holder();
        (!h.is_empty() && h != leader).then_some(h)
    });
    assert_ne!(next, leader);
    assert_eq!(
        s.kubectl(&[
            "-n",
            "kube-system",
            "get",
            "lease",
            "kube-scheduler",
            "-o",
            "jsonpath={.spec.leaseDurationSeconds}"
        ]),
        "15"
    );
    apply(&s, &[pod("after", "", json!({}), json!({}))]);
    assert_eq!(wait_bound(&s, "after"), "node-1");
    second.terminate();
}
