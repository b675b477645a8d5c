//! The node controllers end to end, with `rkube sim` nodes and kubectl 1.33: node IPAM hands
//! every node its own pod CIDR (sim pods take their IPs from it), keeps doing so across a
//! restart and reports a full range; the node lifecycle controller turns silent nodes
//! Ready=Unknown with unreachable taints, evicts the pods that do not tolerate that for
//! longer (a ReplicaSet replaces them on a live node), marks the others not ready, and lifts
//! the taints when the nodes come back.

use crate::common;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use common::{Server, Sim, eventually, json, manifest};
use serde_json::{Value, json};

fn node(server: &Server, name: &str) -> Value {
    json(server, &["get", "node", name])
}

fn condition<'a>(obj: &'a Value, kind: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

fn taint_keys(node: &Value) -> BTreeSet<String> {
    node["spec"]["taints"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            format!(
                "{}:{}",
                t["key"].as_str().unwrap(),
                t["effect"].as_str().unwrap()
            )
        })
        .collect()
}

/// Whether `ip` is inside `cidr` (IPv4).
fn contains(cidr: &str, ip: &str) -> bool {
    let (net, bits) = cidr.split_once('/').unwrap();
    let bits: u32 = bits.parse().unwrap();
    let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
    let net = u32::from(net.parse::<Ipv4Addr>().unwrap());
    let ip = u32::from(ip.parse::<Ipv4Addr>().unwrap());
    ip & mask == net & mask
}

fn pod_cidr(server: &Server, name: &str) -> Option<String> {
    let n = node(server, name);
    let cidr = n["spec"]["podCIDR"].as_str()?.to_string();
    assert_eq!(n["spec"]["podCIDRs"], json!([cidr]), "{name}");
    Some(cidr)
}

fn bare_node(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  labels:\n    kubernetes.io/hostname: {name}\n"
    )
}

fn events(server: &Server, reason: &str) -> Vec<Value> {
    json(server, &["get", "events", "-A"])["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["reason"] == reason)
        .cloned()
        .collect()
}

fn timestamp(v: &Value) -> i64 {
    let text = v.as_str().unwrap_or_else(|| panic!("not a timestamp: {v}"));
    text.parse::<k8s_openapi::jiff::Timestamp>()
        .unwrap()
        .as_second()
}

#[test]
fn node_ipam_assigns_distinct_cidrs_across_restarts_and_reports_a_full_range() {
    let dir = tempfile::tempdir().unwrap();
    // Room for two /24s.
    let flags = [
        "--cluster-cidr",
        "10.99.0.0/23",
        "--node-cidr-mask-size",
        "24",
    ];
    let server = Server::start_in(dir.path(), &flags);
    let (_d, path) = manifest(&format!("{}---\n{}", bare_node("n1"), bare_node("n2")));
    server.kubectl(&["apply", "-f", path.to_str().unwrap()]);
    let c1 = eventually("n1 podCIDR", Duration::from_secs(30), || {
        pod_cidr(&server, "n1")
    });
    let c2 = eventually("n2 podCIDR", Duration::from_secs(30), || {
        pod_cidr(&server, "n2")
    });
    let got: BTreeSet<&str> = [c1.as_str(), c2.as_str()].into();
    assert_eq!(got, ["10.99.0.0/24", "10.99.1.0/24"].into());

    // The range is full: n3 waits, with a CIDRNotAvailable event.
    let (_d3, path) = manifest(&bare_node("n3"));
    server.kubectl(&["apply", "-f", path.to_str().unwrap()]);
    let event = eventually("CIDRNotAvailable", Duration::from_secs(30), || {
        events(&server, "CIDRNotAvailable")
            .into_iter()
            .find(|e| e["involvedObject"]["name"] == "n3")
    });
    assert_eq!(event["message"], "Node n3 status is now: CIDRNotAvailable");
    assert_eq!(pod_cidr(&server, "n3"), None);

    // A deleted node's block goes to the waiting node.
    server.kubectl(&["delete", "node", "n1"]);
    let c3 = eventually("n3 podCIDR", Duration::from_secs(30), || {
        pod_cidr(&server, "n3")
    });
    assert_eq!(c3, c1);

    // After a restart the allocator knows what is taken: no block is handed out twice.
    drop(server);
    let server = Server::start_in(dir.path(), &flags);
    let (_d4, path) = manifest(&bare_node("n4"));
    server.kubectl(&["apply", "-f", path.to_str().unwrap()]);
    eventually("CIDRNotAvailable for n4", Duration::from_secs(30), || {
        events(&server, "CIDRNotAvailable")
            .into_iter()
            .find(|e| e["involvedObject"]["name"] == "n4")
    });
    assert_eq!(pod_cidr(&server, "n4"), None);
    assert_eq!(pod_cidr(&server, "n2"), Some(c2));
    assert_eq!(pod_cidr(&server, "n3"), Some(c3));
}

/// A pod bound to `node` that tolerates unreachable/not-ready nodes for `seconds` (or, with
/// `None`, gets the 300 s default from admission).
fn pod(name: &str, node: &str, seconds: Option<u32>) -> String {
    let tolerations = match seconds {
        Some(s) => format!(
            "  tolerations:\n  - key: node.kubernetes.io/unreachable\n    operator: Exists\n    effect: NoExecute\n    tolerationSeconds: {s}\n  - key: node.kubernetes.io/not-ready\n    operator: Exists\n    effect: NoExecute\n    tolerationSeconds: {s}\n"
        ),
        None => String::new(),
    };
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  nodeName: {node}\n  containers:\n  - name: c\n    image: localhost/busybox:1\n{tolerations}---\n"
    )
}

const REPLICASET: &str = "apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: web
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: c
        image: localhost/busybox:1
      tolerations:
      - key: node.kubernetes.io/unreachable
        operator: Exists
        effect: NoExecute
        tolerationSeconds: 5
";

/// The ReplicaSet's pods that are not being deleted: (node, phase).
fn web_pods(server: &Server) -> Vec<(String, String)> {
    json(server, &["get", "pods", "-l", "app=web"])["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            (
                p["spec"]["nodeName"].as_str().unwrap_or("").to_string(),
                p["status"]["phase"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn silent_sim_nodes_turn_unknown_get_tainted_and_lose_their_pods() {
    let server = Server::start(&["--node-monitor-grace-period", "10s"]);
    let mut sim_a = Sim::start(&server, &["--nodes", "3", "--name-prefix", "a-"]);
    sim_a.wait_for_log("registered 3 nodes", Duration::from_secs(60));
    // A ReplicaSet whose pods all land on the a- nodes (the only ones yet).
    let (_rs, rs_path) = manifest(REPLICASET);
    server.kubectl(&["apply", "-f", rs_path.to_str().unwrap()]);
    eventually(
        "web pods running on a- nodes",
        Duration::from_secs(60),
        || {
            let pods = web_pods(&server);
            (pods.len() == 3
                && pods
                    .iter()
                    .all(|(node, phase)| node.starts_with("a-") && phase == "Running"))
            .then_some(())
        },
    );
    let mut sim_b = Sim::start(&server, &["--nodes", "1", "--name-prefix", "b-"]);
    sim_b.wait_for_log("registered 1 nodes", Duration::from_secs(60));

    // Every node has its own pod CIDR from the cluster range.
    let names = ["a-0", "a-1", "a-2", "b-0"];
    let cidrs: Vec<String> = names
        .iter()
        .map(|n| {
            eventually(&format!("{n} podCIDR"), Duration::from_secs(30), || {
                pod_cidr(&server, n)
            })
        })
        .collect();
    let distinct: BTreeSet<&String> = cidrs.iter().collect();
    assert_eq!(distinct.len(), 4, "{cidrs:?}");
    for c in &cidrs {
        assert!(c.starts_with("10.42.") && c.ends_with(".0/24"), "{c}");
    }
    // The sims switch their pod ranges when they see the podCIDR.
    std::thread::sleep(Duration::from_secs(2));

    let mut text = String::new();
    for (i, n) in ["a-0", "a-1", "a-2"].iter().enumerate() {
        text.push_str(&pod(&format!("quick-{i}"), n, Some(5)));
    }
    text.push_str(&pod("patient", "a-0", None));
    text.push_str(&pod("elsewhere", "b-0", Some(5)));
    let (_d, path) = manifest(&text);
    server.kubectl(&["apply", "-f", path.to_str().unwrap()]);
    let all = ["quick-0", "quick-1", "quick-2", "patient", "elsewhere"];
    for p in all {
        let pod = eventually(&format!("{p} running"), Duration::from_secs(30), || {
            let pod = json(&server, &["get", "pod", p]);
            (pod["status"]["phase"] == "Running" && pod["status"]["podIP"].is_string())
                .then_some(pod)
        });
        let node = pod["spec"]["nodeName"].as_str().unwrap();
        let cidr = &cidrs[names.iter().position(|n| *n == node).unwrap()];
        let ip = pod["status"]["podIP"].as_str().unwrap();
        assert!(contains(cidr, ip), "{p}: {ip} is not in {node}'s {cidr}");
    }
    // Nothing happens to healthy nodes.
    assert!(taint_keys(&node(&server, "a-0")).is_empty());

    // The a- nodes go silent.
    sim_a.interrupt();
    for n in ["a-0", "a-1", "a-2"] {
        let node = eventually(
            &format!("{n} unknown and tainted"),
            Duration::from_secs(60),
            || {
                let node = node(&server, n);
                let tainted = taint_keys(&node).is_superset(
                    &[
                        "node.kubernetes.io/unreachable:NoSchedule".to_string(),
                        "node.kubernetes.io/unreachable:NoExecute".to_string(),
                    ]
                    .into(),
                );
                (condition(&node, "Ready").is_some_and(|c| c["status"] == "Unknown") && tainted)
                    .then_some(node)
            },
        );
        let ready = condition(&node, "Ready").unwrap();
        assert_eq!(ready["reason"], "NodeStatusUnknown");
        assert_eq!(ready["message"], "Kubelet stopped posting node status.");
        for kind in ["MemoryPressure", "DiskPressure", "PIDPressure"] {
            assert_eq!(
                condition(&node, kind).unwrap()["status"],
                "Unknown",
                "{n} {kind}"
            );
        }
    }
    let b0 = node(&server, "b-0");
    assert_eq!(condition(&b0, "Ready").unwrap()["status"], "True");
    assert!(taint_keys(&b0).is_empty(), "{b0}");

    // Pods tolerating 5 s are deleted once those 5 s (from the taint's timeAdded) are over.
    let a0 = node(&server, "a-0");
    let added = a0["spec"]["taints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["key"] == "node.kubernetes.io/unreachable" && t["effect"] == "NoExecute")
        .map(|t| timestamp(&t["timeAdded"]))
        .unwrap();
    for p in ["quick-0", "quick-1", "quick-2"] {
        let pod = eventually(&format!("{p} evicted"), Duration::from_secs(30), || {
            let pod = json(&server, &["get", "pod", p]);
            pod["metadata"]["deletionTimestamp"]
                .is_string()
                .then_some(pod)
        });
        let target = condition(&pod, "DisruptionTarget").expect("DisruptionTarget");
        assert_eq!(target["reason"], "DeletionByTaintManager");
        if p == "quick-0" {
            // deletionTimestamp = deletion + grace period (30 s).
            let deleted = timestamp(&pod["metadata"]["deletionTimestamp"]) - 30;
            assert!(
                deleted >= added + 4,
                "deleted at {deleted}, taint added at {added}"
            );
        }
    }
    let evictions = events(&server, "TaintManagerEviction");
    for p in ["quick-0", "quick-1", "quick-2"] {
        assert!(
            evictions
                .iter()
                .any(|e| e["message"] == format!("Marking for deletion Pod default/{p}")),
            "{evictions:?}"
        );
    }
    assert!(
        events(&server, "NodeNotReady")
            .iter()
            .any(|e| e["involvedObject"]["kind"] == "Node" && e["involvedObject"]["name"] == "a-0")
    );
    // The pod with the default 300 s toleration stays, but is no longer Ready; the pod on the
    // live node is untouched.
    let patient = eventually("patient not ready", Duration::from_secs(10), || {
        let pod = json(&server, &["get", "pod", "patient"]);
        (condition(&pod, "Ready")?["status"] == "False").then_some(pod)
    });
    assert!(patient["metadata"]["deletionTimestamp"].is_null());
    let elsewhere = json(&server, &["get", "pod", "elsewhere"]);
    assert!(elsewhere["metadata"]["deletionTimestamp"].is_null());
    assert_eq!(condition(&elsewhere, "Ready").unwrap()["status"], "True");

    // The ReplicaSet replaces its evicted pods on the node that is still up.
    eventually("web pods replaced on b-0", Duration::from_secs(60), || {
        let pods = web_pods(&server);
        (pods.len() == 3
            && pods
                .iter()
                .all(|(node, phase)| node == "b-0" && phase == "Running"))
        .then_some(())
    });

    // The nodes come back: Ready, untainted; the evicted pods are finally removed.
    let _sim_a = Sim::start(&server, &["--nodes", "3", "--name-prefix", "a-"]);
    for n in ["a-0", "a-1", "a-2"] {
        eventually(&format!("{n} ready again"), Duration::from_secs(60), || {
            let node = node(&server, n);
            (condition(&node, "Ready").is_some_and(|c| c["status"] == "True")
                && taint_keys(&node).is_empty())
            .then_some(())
        });
    }
    eventually("evicted pods gone", Duration::from_secs(60), || {
        let pods = json(&server, &["get", "pods"]);
        let names: BTreeSet<&str> = pods["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["metadata"]["name"].as_str().unwrap())
            .filter(|n| !n.starts_with("web-"))
            .collect();
        (names == ["elsewhere", "patient"].into()).then_some(())
    });
    drop(sim_b);
}
