//! Black-box tests of `rkube sim` against a real `rkube server`, driven with kubectl 1.33:
//! simulated nodes register Ready with the capacity, labels and taints asked for, their
//! leases are renewed until SIGINT, and pods bound to them run, finish by annotation and are
//! removed when deleted.

use crate::common;

use std::process::Command;
use std::time::Duration;

use common::{RKUBE, Server, Sim, eventually, json};
use serde_json::Value;

fn renew_times(server: &Server) -> Vec<(String, String)> {
    let leases = json(server, &["get", "lease", "-n", "kube-node-lease"]);
    let mut times: Vec<(String, String)> = leases["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["metadata"]["name"].as_str().unwrap().to_string(),
                l["spec"]["renewTime"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    times.sort();
    times
}

#[test]
fn sim_nodes_register_ready_renew_leases_and_stop_on_sigint() {
    let server = Server::start(&[]);
    let mut sim = Sim::start(
        &server,
        &[
            "--nodes",
            "3",
            "--name-prefix",
            "t-",
            "--cpu",
            "8",
            "--memory",
            "32Gi",
            "--pods",
            "50",
            "--labels",
            "zone=a,tier=web",
            "--taints",
            "dedicated=sim:NoSchedule,example.com/slow:PreferNoSchedule",
        ],
    );
    sim.wait_for_log("registered 3 nodes", Duration::from_secs(60));

    // `kubectl get nodes` shows three Ready nodes.
    let table = server.kubectl(&["get", "nodes", "--no-headers"]);
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 3, "{table}");
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row[0], format!("t-{i}"), "{table}");
        assert_eq!(row[1], "Ready", "{table}");
        assert_eq!(row[4], "v1.33.0", "{table}");
    }
    let nodes = json(&server, &["get", "nodes"]);
    for (i, node) in nodes["items"].as_array().unwrap().iter().enumerate() {
        let labels = &node["metadata"]["labels"];
        assert_eq!(labels["zone"], "a");
        assert_eq!(labels["tier"], "web");
        assert_eq!(labels["kubernetes.io/hostname"], format!("t-{i}"));
        assert_eq!(
            node["spec"]["taints"],
            serde_json::json!([
                {"key": "dedicated", "value": "sim", "effect": "NoSchedule"},
                {"key": "example.com/slow", "effect": "PreferNoSchedule"}
            ])
        );
        for field in ["capacity", "allocatable"] {
            let r = &node["status"][field];
            assert_eq!(
                (&r["cpu"], &r["memory"], &r["pods"]),
                (&"8".into(), &"32Gi".into(), &"50".into()),
                "{field}: {r}"
            );
        }
        let conditions = node["status"]["conditions"].as_array().unwrap();
        let status_of = |t: &str| {
            conditions
                .iter()
                .find(|c| c["type"] == t)
                .map(|c| c["status"].as_str().unwrap().to_string())
        };
        assert_eq!(status_of("Ready").as_deref(), Some("True"));
        for t in ["MemoryPressure", "DiskPressure", "PIDPressure"] {
            assert_eq!(status_of(t).as_deref(), Some("False"), "{t}");
        }
        assert_eq!(
            node["status"]["addresses"][0],
            serde_json::json!({"type": "InternalIP", "address": format!("10.200.0.{}", i + 1)})
        );
        assert_eq!(node["status"]["nodeInfo"]["operatingSystem"], "linux");
    }

    // One lease per node, owned by it, renewed.
    let leases = json(&server, &["get", "lease", "-n", "kube-node-lease"]);
    let items = leases["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    for lease in items {
        let name = lease["metadata"]["name"].as_str().unwrap();
        assert_eq!(lease["spec"]["holderIdentity"], name);
        assert_eq!(lease["spec"]["leaseDurationSeconds"], 40);
        assert_eq!(lease["metadata"]["ownerReferences"][0]["kind"], "Node");
        assert_eq!(lease["metadata"]["ownerReferences"][0]["name"], name);
    }
    let before = renew_times(&server);
    eventually("every lease renewed", Duration::from_secs(25), || {
        let now = renew_times(&server);
        now.iter()
            .zip(&before)
            .all(|((_, a), (_, b))| a > b)
            .then_some(())
    });

    // SIGINT: the sim exits and the leases are no longer renewed.
    sim.interrupt();
    sim.wait_for_log("leases are no longer renewed", Duration::from_secs(5));
    let stopped = renew_times(&server);
    std::thread::sleep(Duration::from_secs(12));
    assert_eq!(renew_times(&server), stopped, "leases renewed after SIGINT");
}

const PODS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  nodeName: sim-0
  containers: [{name: nginx, image: localhost/nginx:1.25}]
---
apiVersion: v1
kind: Pod
metadata: {name: web1}
spec:
  nodeName: sim-1
  containers: [{name: app, image: localhost/app:1}]
---
apiVersion: v1
kind: Pod
metadata:
  name: ok
  annotations: {sim.rkube.io/exit-code: "0"}
spec:
  nodeName: sim-0
  restartPolicy: Never
  containers: [{name: job, image: localhost/busybox:1}]
---
apiVersion: v1
kind: Pod
metadata:
  name: bad
  annotations: {sim.rkube.io/exit-code: "3"}
spec:
  nodeName: sim-1
  restartPolicy: Never
  containers: [{name: job, image: localhost/busybox:1}]
---
apiVersion: v1
kind: Pod
metadata:
  name: slow
  annotations: {sim.rkube.io/exit-code: "0", sim.rkube.io/run-seconds: "8"}
spec:
  nodeName: sim-0
  restartPolicy: Never
  containers: [{name: job, image: localhost/busybox:1}]
---
apiVersion: v1
kind: Pod
metadata:
  name: retry
  annotations: {sim.rkube.io/exit-code: "1"}
spec:
  nodeName: sim-1
  restartPolicy: OnFailure
  containers: [{name: job, image: localhost/busybox:1}]
"#;

/// Seconds since the epoch of an API timestamp.
fn secs(v: &Value) -> i64 {
    let t = v.as_str().unwrap_or_else(|| panic!("not a timestamp: {v}"));
    t.parse::<k8s_openapi::jiff::Timestamp>()
        .unwrap()
        .as_second()
}

fn jsonpath(server: &Server, pod: &str, path: &str) -> String {
    server.kubectl(&["get", "pod", pod, "-o", &format!("jsonpath={path}")])
}

#[test]
fn sim_runs_finishes_and_deletes_pods() {
    // Without the node IPAM controller, so sim-0 keeps the sim's own range and sim-1 the
    // podCIDR patched in below (controllers_node.rs tests the sim with IPAM).
    let server = Server::start(&["--controllers=*,-nodeipam"]);
    let mut sim = Sim::start(&server, &["--nodes", "2"]);
    sim.wait_for_log("registered 2 nodes", Duration::from_secs(60));
    // sim-1 gets a podCIDR after registration (as from an IPAM controller): its pods use it.
    server.kubectl(&[
        "patch",
        "node",
        "sim-1",
        "-p",
        r#"{"spec":{"podCIDR":"10.88.1.0/24","podCIDRs":["10.88.1.0/24"]}}"#,
    ]);
    sim.wait_for_log("node has a podCIDR", Duration::from_secs(10));

    let (_dir, manifest) = common::manifest(PODS);
    server.kubectl(&["apply", "-f", manifest.to_str().unwrap()]);
    server.kubectl(&[
        "wait",
        "--for=condition=Ready",
        "pod/web",
        "pod/web1",
        "pod/slow",
        "--timeout=60s",
    ]);

    // Running, with a pod IP from its node's range.
    let wide = server.kubectl(&["get", "pod", "web", "-o", "wide", "--no-headers"]);
    let cols: Vec<&str> = wide.split_whitespace().collect();
    assert_eq!((cols[1], cols[2]), ("1/1", "Running"), "{wide}");
    assert!(cols[5].starts_with("10.201.0."), "IP of web: {wide}");
    assert_eq!(cols[6], "sim-0", "{wide}");
    let web = json(&server, &["get", "pod", "web"]);
    let status = &web["status"];
    assert_eq!(status["hostIP"], "10.200.0.1");
    assert_eq!(status["podIPs"][0]["ip"], status["podIP"]);
    assert!(status["startTime"].is_string());
    let cs = &status["containerStatuses"][0];
    assert_eq!(cs["ready"], true);
    assert_eq!(cs["started"], true);
    assert_eq!(cs["image"], "localhost/nginx:1.25");
    assert!(cs["imageID"].as_str().unwrap().contains("@sha256:"));
    assert!(cs["containerID"].as_str().unwrap().starts_with("sim://"));
    assert!(cs["state"]["running"]["startedAt"].is_string());
    let types: Vec<&str> = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "True")
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    for t in ["PodScheduled", "Initialized", "ContainersReady", "Ready"] {
        assert!(types.contains(&t), "{t} not True: {status}");
    }
    let ip1 = jsonpath(&server, "web1", "{.status.podIP}");
    assert!(ip1.starts_with("10.88.1."), "web1 IP {ip1}");

    // run-seconds: still Running well before its 8 s are up (checked against its startedAt
    // on this machine's clock), Succeeded after.
    let slow = json(&server, &["get", "pod", "slow"]);
    let started = secs(&slow["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        now - started < 6,
        "the machine is too slow to check run-seconds"
    );
    assert_eq!(slow["status"]["phase"], "Running");

    // Exit codes with restartPolicy Never.
    server.kubectl(&[
        "wait",
        "--for=jsonpath={.status.phase}=Succeeded",
        "pod/ok",
        "pod/slow",
        "--timeout=60s",
    ]);
    let slow = json(&server, &["get", "pod", "slow"]);
    let term = &slow["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(term["exitCode"], 0);
    assert_eq!(term["reason"], "Completed");
    let ran = secs(&term["finishedAt"]) - secs(&term["startedAt"]);
    assert!(ran >= 8, "slow ran {ran}s, not the 8 it was asked to");
    server.kubectl(&[
        "wait",
        "--for=jsonpath={.status.phase}=Failed",
        "pod/bad",
        "--timeout=60s",
    ]);
    assert_eq!(
        jsonpath(
            &server,
            "bad",
            "{.status.containerStatuses[0].state.terminated.exitCode}"
        ),
        "3"
    );
    assert_eq!(
        jsonpath(
            &server,
            "bad",
            "{.status.containerStatuses[0].state.terminated.reason}"
        ),
        "Error"
    );

    // OnFailure: restarted after a back-off, the last exit kept.
    eventually("retry restarted", Duration::from_secs(30), || {
        let n = jsonpath(
            &server,
            "retry",
            "{.status.containerStatuses[0].restartCount}",
        );
        (n.parse::<i32>().unwrap_or(0) >= 1).then_some(())
    });
    assert_eq!(jsonpath(&server, "retry", "{.status.phase}"), "Running");

    // Deleting a pod on a sim node removes it.
    server.kubectl(&["delete", "pod", "web", "--timeout=30s"]);
    let err = server.kubectl_err(&["get", "pod", "web"]);
    assert!(err.contains("NotFound"), "{err}");

    sim.wait_for_log("pod started", Duration::from_secs(1));
    sim.wait_for_log("pod finished", Duration::from_secs(1));
    sim.wait_for_log("pod deleted", Duration::from_secs(5));
}

#[test]
fn sim_help_and_flag_errors() {
    let out = Command::new(RKUBE)
        .args(["sim", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--kubeconfig",
        "--nodes",
        "--name-prefix",
        "--cpu",
        "--memory",
        "--pods",
        "--labels",
        "--taints",
        "[default: 256Gi]",
        "sim.rkube.io/exit-code",
    ] {
        assert!(help.contains(flag), "sim --help lacks {flag}:\n{help}");
    }
    let top = Command::new(RKUBE).arg("--help").output().unwrap();
    assert!(String::from_utf8(top.stdout).unwrap().contains("sim"));

    // Bad values are refused before anything runs, each with a message naming the flag.
    for (args, expect) in [
        (&["--taints", "a=b:Never"][..], "--taints"),
        (&["--cpu", "1GB"], "--cpu"),
        (&["--memory=-1Gi"], "--memory"),
        (&["--labels", "zone"], "--labels"),
        (&["--nodes", "0"], "--nodes"),
        (&["--name-prefix", "Sim_"], "--name-prefix"),
    ] {
        let out = Command::new(RKUBE)
            .arg("sim")
            .args(args)
            .env("RUST_LOG", "off")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        let first = err.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("error: invalid value") && first.contains(expect),
            "{args:?}: {err}"
        );
    }
    // A kubeconfig that cannot be read: one line naming it.
    let out = Command::new(RKUBE)
        .args(["sim", "--kubeconfig", "/nonexistent/kubeconfig"])
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: ") && err.contains("/nonexistent/kubeconfig"),
        "{err}"
    );
}
