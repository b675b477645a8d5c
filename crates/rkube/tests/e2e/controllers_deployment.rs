//! Black-box tests of the ReplicaSet, ReplicationController and Deployment controllers in
//! `rkube server`, on `rkube sim` nodes (pods bound to them turn Running and Ready), driven
//! with the real kubectl 1.33 (`rollout status|history|undo|pause|resume|restart`, `scale`,
//! `set image`) and a kube-rs watch that samples the pods at every event to check the
//! rolling-update bounds and the Recreate ordering.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::{Server, Sim, eventually, json, manifest};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::watcher;
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(90);

fn start(nodes: &str) -> (Server, Sim) {
    let server = Server::start(&[]);
    let mut sim = Sim::start(&server, &["--nodes", nodes, "--pods", "200"]);
    sim.wait_for_log(
        &format!("registered {nodes} nodes"),
        Duration::from_secs(60),
    );
    (server, sim)
}

fn apply(server: &Server, yaml: &str) {
    let (_dir, path) = manifest(yaml);
    server.kubectl(&["apply", "-f", path.to_str().unwrap()]);
}

fn deployment(name: &str, replicas: u32, image: &str, strategy: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: default
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  strategy:
{strategy}
{extra_spec}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      containers:
      - name: app
        image: {image}
"
    )
}

const ROLLING_1_1: &str = "    type: RollingUpdate
    rollingUpdate: {maxSurge: 1, maxUnavailable: 1}";

/// Pods with `app=<app>`, from `kubectl get pods -o json`.
fn pods(server: &Server, app: &str) -> Vec<Value> {
    json(server, &["get", "pods", "-l", &format!("app={app}")])["items"]
        .as_array()
        .unwrap()
        .clone()
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

fn image(pod: &Value) -> &str {
    pod["spec"]["containers"][0]["image"].as_str().unwrap()
}

/// Waits until exactly `n` pods of `app` exist, all Ready, none terminating, all with `img`.
fn wait_ready(server: &Server, app: &str, n: usize, img: &str) -> Vec<Value> {
    eventually(&format!("{n} ready {img} pods of {app}"), TIMEOUT, || {
        let p = pods(server, app);
        (p.len() == n
            && p.iter().all(|p| {
                is_ready(p) && p["metadata"]["deletionTimestamp"].is_null() && image(p) == img
            }))
        .then_some(p)
    })
}

fn rollout_status(server: &Server, what: &str) -> String {
    server.kubectl(&["rollout", "status", what, "--timeout=90s"])
}

fn events(server: &Server, reason: &str) -> Vec<String> {
    json(
        server,
        &[
            "get",
            "events",
            "--field-selector",
            &format!("reason={reason}"),
        ],
    )["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn replica_sets(server: &Server, app: &str) -> Vec<Value> {
    json(server, &["get", "rs", "-l", &format!("app={app}")])["items"]
        .as_array()
        .unwrap()
        .clone()
}

/// Pod counts sampled at every watch event once the initial list is in.
#[derive(Default)]
struct Samples {
    synced: AtomicBool,
    events: AtomicUsize,
    min_ready: AtomicUsize,
    max_live: AtomicUsize,
    /// A pod with the new image existed while one with the old image did (any state).
    overlap: AtomicBool,
}

/// Watches the pods of `app` and records [`Samples`]; `old`/`new` images for the overlap.
fn sample(client: kube::Client, app: &str, old: &str, new: &str) -> Arc<Samples> {
    let samples = Arc::new(Samples {
        min_ready: AtomicUsize::new(usize::MAX),
        ..Default::default()
    });
    let out = samples.clone();
    let cfg = watcher::Config::default().labels(&format!("app={app}"));
    let (old, new) = (old.to_string(), new.to_string());
    tokio::spawn(async move {
        let mut seen = std::collections::BTreeMap::<String, Pod>::new();
        let mut init = std::collections::BTreeMap::<String, Pod>::new();
        let mut stream = watcher(Api::<Pod>::namespaced(client, "default"), cfg).boxed();
        while let Ok(Some(event)) = stream.try_next().await {
            let name = |p: &Pod| p.metadata.name.clone().unwrap_or_default();
            match event {
                watcher::Event::Init => init.clear(),
                watcher::Event::InitApply(p) => {
                    init.insert(name(&p), p);
                }
                watcher::Event::InitDone => {
                    seen = std::mem::take(&mut init);
                    out.synced.store(true, Ordering::SeqCst);
                }
                watcher::Event::Apply(p) => {
                    seen.insert(name(&p), p);
                }
                watcher::Event::Delete(p) => {
                    seen.remove(&name(&p));
                }
            }
            if !out.synced.load(Ordering::SeqCst) {
                continue;
            }
            let live: Vec<&Pod> = seen
                .values()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .collect();
            let ready = live
                .iter()
                .filter(|p| {
                    p.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
                })
                .count();
            let has = |img: &str| {
                seen.values().any(|p| {
                    p.spec
                        .as_ref()
                        .is_some_and(|s| s.containers[0].image.as_deref() == Some(img))
                })
            };
            if has(&old) && has(&new) {
                out.overlap.store(true, Ordering::SeqCst);
            }
            out.events.fetch_add(1, Ordering::SeqCst);
            out.min_ready.fetch_min(ready, Ordering::SeqCst);
            out.max_live.fetch_max(live.len(), Ordering::SeqCst);
        }
    });
    eventually("the pod watch to sync", TIMEOUT, || {
        samples.synced.load(Ordering::SeqCst).then_some(())
    });
    samples
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_rolls_out_scales_updates_within_bounds_and_undoes() {
    let (server, _sim) = start("3");
    apply(
        &server,
        &deployment("web", 4, "example/web:v1", ROLLING_1_1, ""),
    );
    let out = rollout_status(&server, "deployment/web");
    assert!(out.contains("successfully rolled out"), "{out}");
    wait_ready(&server, "web", 4, "example/web:v1");

    // One ReplicaSet named <deployment>-<hash>, the hash on its selector, template, pods.
    let rss = replica_sets(&server, "web");
    assert_eq!(rss.len(), 1);
    let rs = &rss[0];
    let hash = rs["metadata"]["labels"]["pod-template-hash"]
        .as_str()
        .unwrap();
    assert_eq!(rs["metadata"]["name"], format!("web-{hash}"));
    assert_eq!(
        rs["spec"]["selector"]["matchLabels"]["pod-template-hash"],
        hash
    );
    assert_eq!(
        rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "1"
    );
    assert_eq!(
        rs["metadata"]["annotations"]["deployment.kubernetes.io/desired-replicas"],
        "4"
    );
    assert_eq!(
        rs["metadata"]["annotations"]["deployment.kubernetes.io/max-replicas"],
        "5"
    );
    assert_eq!(rs["metadata"]["ownerReferences"][0]["kind"], "Deployment");
    for pod in pods(&server, "web") {
        assert_eq!(pod["metadata"]["labels"]["pod-template-hash"], hash);
        assert!(
            pod["metadata"]["name"]
                .as_str()
                .unwrap()
                .starts_with(&format!("web-{hash}-"))
        );
    }
    let d = json(&server, &["get", "deployment", "web"]);
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "1"
    );
    let st = &d["status"];
    assert_eq!(
        (
            &st["replicas"],
            &st["updatedReplicas"],
            &st["readyReplicas"],
            &st["availableReplicas"]
        ),
        (
            &Value::from(4),
            &Value::from(4),
            &Value::from(4),
            &Value::from(4)
        )
    );
    assert_eq!(st["observedGeneration"], d["metadata"]["generation"]);
    let conds = st["conditions"].as_array().unwrap();
    let cond = |t: &str| conds.iter().find(|c| c["type"] == t).unwrap().clone();
    assert_eq!(cond("Available")["reason"], "MinimumReplicasAvailable");
    assert_eq!(cond("Progressing")["reason"], "NewReplicaSetAvailable");
    let scaled = events(&server, "ScalingReplicaSet");
    assert!(
        scaled
            .iter()
            .any(|m| m.starts_with(&format!("Scaled up replica set web-{hash} from 0 to "))),
        "{scaled:?}"
    );

    // kubectl scale, up and down.
    server.kubectl(&["scale", "deployment/web", "--replicas=6"]);
    wait_ready(&server, "web", 6, "example/web:v1");
    server.kubectl(&["scale", "deployment/web", "--replicas=4"]);
    wait_ready(&server, "web", 4, "example/web:v1");
    rollout_status(&server, "deployment/web");

    // Rolling update v1 -> v2: never fewer than 4-1 ready, never more than 4+1 live pods.
    let samples = sample(
        server.client().await,
        "web",
        "example/web:v1",
        "example/web:v2",
    );
    server.kubectl(&["set", "image", "deployment/web", "app=example/web:v2"]);
    let out = rollout_status(&server, "deployment/web");
    assert!(out.contains("successfully rolled out"), "{out}");
    wait_ready(&server, "web", 4, "example/web:v2");
    let min_ready = samples.min_ready.load(Ordering::SeqCst);
    let max_live = samples.max_live.load(Ordering::SeqCst);
    let n = samples.events.load(Ordering::SeqCst);
    assert!(n >= 8, "only {n} pod events sampled");
    assert!(
        min_ready >= 3,
        "ready pods dropped to {min_ready} (maxUnavailable 1 of 4)"
    );
    assert!(max_live <= 5, "{max_live} live pods (maxSurge 1 over 4)");
    assert!(
        samples.overlap.load(Ordering::SeqCst),
        "a rolling update runs old and new together"
    );

    // History: two revisions; undo goes back to v1 as revision 3, reusing the old set.
    let history = server.kubectl(&["rollout", "history", "deployment/web"]);
    let revisions: Vec<&str> = history
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.chars().all(|c| c.is_ascii_digit()))
        .collect();
    assert_eq!(revisions, ["1", "2"], "{history}");
    let rev1 = server.kubectl(&["rollout", "history", "deployment/web", "--revision=1"]);
    assert!(rev1.contains("example/web:v1"), "{rev1}");
    let out = server.kubectl(&["rollout", "undo", "deployment/web"]);
    assert!(out.contains("rolled back"), "{out}");
    rollout_status(&server, "deployment/web");
    wait_ready(&server, "web", 4, "example/web:v1");
    let rss = replica_sets(&server, "web");
    assert_eq!(rss.len(), 2, "undo reuses the revision-1 ReplicaSet");
    let back = rss
        .iter()
        .find(|rs| rs["metadata"]["name"] == format!("web-{hash}"))
        .unwrap();
    assert_eq!(
        back["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "3"
    );
    assert_eq!(
        back["metadata"]["annotations"]["deployment.kubernetes.io/revision-history"],
        "1"
    );
    let history = server.kubectl(&["rollout", "history", "deployment/web"]);
    assert!(history.lines().any(|l| l.starts_with('3')), "{history}");
    let d = json(&server, &["get", "deployment", "web"]);
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "3"
    );
    // Undo to the current revision is refused by kubectl (it compares templates).
    let err = server.kubectl_err(&["rollout", "undo", "deployment/web", "--to-revision=9"]);
    assert!(err.contains("unable to find specified revision"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_removes_old_pods_before_creating_new_ones() {
    let (server, _sim) = start("2");
    let recreate = "    type: Recreate";
    apply(
        &server,
        &deployment("rec", 3, "example/rec:v1", recreate, ""),
    );
    rollout_status(&server, "deployment/rec");
    wait_ready(&server, "rec", 3, "example/rec:v1");
    let samples = sample(
        server.client().await,
        "rec",
        "example/rec:v1",
        "example/rec:v2",
    );
    server.kubectl(&["set", "image", "deployment/rec", "app=example/rec:v2"]);
    rollout_status(&server, "deployment/rec");
    wait_ready(&server, "rec", 3, "example/rec:v2");
    assert!(samples.events.load(Ordering::SeqCst) >= 6);
    assert!(
        !samples.overlap.load(Ordering::SeqCst),
        "a v2 pod existed while a v1 pod did"
    );
    assert_eq!(
        samples.min_ready.load(Ordering::SeqCst),
        0,
        "Recreate has downtime"
    );
    assert!(samples.max_live.load(Ordering::SeqCst) <= 3);
}

#[test]
fn paused_deployments_do_not_roll_out_until_resumed_and_restart_rolls() {
    let (server, _sim) = start("2");
    apply(
        &server,
        &deployment("pz", 2, "example/pz:v1", ROLLING_1_1, ""),
    );
    rollout_status(&server, "deployment/pz");
    server.kubectl(&["rollout", "pause", "deployment/pz"]);
    server.kubectl(&["set", "image", "deployment/pz", "app=example/pz:v2"]);
    eventually("the Progressing condition to say paused", TIMEOUT, || {
        let d = json(&server, &["get", "deployment", "pz"]);
        d["status"]["conditions"]
            .as_array()?
            .iter()
            .any(|c| c["type"] == "Progressing" && c["reason"] == "DeploymentPaused")
            .then_some(())
    });
    // Paused: still scales, but no new ReplicaSet.
    server.kubectl(&["scale", "deployment/pz", "--replicas=3"]);
    wait_ready(&server, "pz", 3, "example/pz:v1");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(replica_sets(&server, "pz").len(), 1);
    assert!(
        pods(&server, "pz")
            .iter()
            .all(|p| image(p) == "example/pz:v1")
    );

    server.kubectl(&["rollout", "resume", "deployment/pz"]);
    rollout_status(&server, "deployment/pz");
    wait_ready(&server, "pz", 3, "example/pz:v2");

    // restart: a template annotation, so a third ReplicaSet with the same image.
    server.kubectl(&["rollout", "restart", "deployment/pz"]);
    eventually("a third replica set", TIMEOUT, || {
        (replica_sets(&server, "pz").len() == 3).then_some(())
    });
    rollout_status(&server, "deployment/pz");
    let ready = wait_ready(&server, "pz", 3, "example/pz:v2");
    assert!(ready.iter().all(|p| {
        p["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"].is_string()
    }));
}

#[test]
fn a_rollout_that_cannot_progress_exceeds_its_deadline() {
    let (server, _sim) = start("1");
    let extra = "  progressDeadlineSeconds: 3";
    let mut yaml = deployment("stuck", 2, "example/stuck:v1", ROLLING_1_1, extra);
    // No sim node has this label: the pods stay Pending.
    yaml.push_str("      nodeSelector: {nowhere: \"true\"}\n");
    apply(&server, &yaml);
    let out = server.kubectl_with(
        common::KUBECTL_133,
        &["rollout", "status", "deployment/stuck", "--timeout=60s"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("exceeded its progress deadline"), "{err}");
    let d = json(&server, &["get", "deployment", "stuck"]);
    let progressing = d["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Progressing")
        .unwrap()
        .clone();
    assert_eq!(progressing["status"], "False");
    assert_eq!(progressing["reason"], "ProgressDeadlineExceeded");
    let available = d["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Available")
        .unwrap()
        .clone();
    assert_eq!(available["reason"], "MinimumReplicasUnavailable");
    assert_eq!(d["status"]["unavailableReplicas"], 2);

    // A maxSurge that is neither a number nor a percentage: no ReplicaSet, a warning.
    let bad = "    type: RollingUpdate
    rollingUpdate: {maxSurge: lots, maxUnavailable: 1}";
    apply(&server, &deployment("bad", 2, "example/bad:v1", bad, ""));
    eventually("an InvalidSpec event", TIMEOUT, || {
        events(&server, "InvalidSpec")
            .iter()
            .any(|m| m.contains("lots"))
            .then_some(())
    });
    assert!(replica_sets(&server, "bad").is_empty());
}

#[test]
fn replica_sets_adopt_orphans_release_mismatches_and_replace_deleted_pods() {
    let (server, _sim) = start("2");
    apply(
        &server,
        "apiVersion: v1
kind: Pod
metadata: {name: orphan, namespace: default, labels: {app: rs}}
spec:
  containers: [{name: app, image: example/rs:v1}]
",
    );
    apply(
        &server,
        "apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: front, namespace: default}
spec:
  replicas: 3
  selector: {matchLabels: {app: rs}}
  template:
    metadata: {labels: {app: rs}}
    spec:
      containers: [{name: app, image: example/rs:v1}]
",
    );
    let all = wait_ready(&server, "rs", 3, "example/rs:v1");
    let orphan = all
        .iter()
        .find(|p| p["metadata"]["name"] == "orphan")
        .expect("orphan kept");
    assert_eq!(
        orphan["metadata"]["ownerReferences"][0]["kind"],
        "ReplicaSet"
    );
    assert_eq!(orphan["metadata"]["ownerReferences"][0]["name"], "front");
    assert_eq!(orphan["metadata"]["ownerReferences"][0]["controller"], true);
    let made: Vec<&str> = all
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap())
        .filter(|n| *n != "orphan")
        .collect();
    assert_eq!(made.len(), 2, "the orphan counts toward the 3");
    assert!(made.iter().all(|n| n.starts_with("front-")), "{made:?}");
    let created = events(&server, "SuccessfulCreate");
    assert!(
        created
            .iter()
            .any(|m| m == &format!("Created pod: {}", made[0])),
        "{created:?}"
    );
    let rs = eventually("ReplicaSet status", TIMEOUT, || {
        let rs = json(&server, &["get", "rs", "front"]);
        (rs["status"]["readyReplicas"] == 3).then_some(rs)
    });
    assert_eq!(rs["status"]["replicas"], 3);
    assert_eq!(rs["status"]["fullyLabeledReplicas"], 3);
    assert_eq!(rs["status"]["availableReplicas"], 3);
    assert_eq!(
        rs["status"]["observedGeneration"],
        rs["metadata"]["generation"]
    );

    // A deleted pod is replaced.
    server.kubectl(&["delete", "pod", made[0], "--wait=false"]);
    eventually("a replacement pod", TIMEOUT, || {
        let p = pods(&server, "rs");
        let names: Vec<&str> = p
            .iter()
            .filter_map(|p| p["metadata"]["name"].as_str())
            .collect();
        (p.len() == 3 && !names.contains(&made[0]) && p.iter().all(is_ready)).then_some(())
    });

    // A pod relabelled out of the selector is released and replaced.
    server.kubectl(&["label", "pod", "orphan", "app=gone", "--overwrite"]);
    eventually("the relabelled pod released", TIMEOUT, || {
        let p = json(&server, &["get", "pod", "orphan"]);
        p["metadata"]["ownerReferences"]
            .as_array()
            .is_none_or(|r| r.is_empty())
            .then_some(())
    });
    wait_ready(&server, "rs", 3, "example/rs:v1");

    // Scale down deletes down to the count, with events.
    server.kubectl(&["scale", "rs/front", "--replicas=1"]);
    wait_ready(&server, "rs", 1, "example/rs:v1");
    let deleted = events(&server, "SuccessfulDelete");
    assert!(
        deleted.iter().any(|m| m.starts_with("Deleted pod: front-")),
        "{deleted:?}"
    );
}

#[test]
fn replication_controllers_scale_like_replica_sets() {
    let (server, _sim) = start("2");
    apply(
        &server,
        "apiVersion: v1
kind: ReplicationController
metadata: {name: legacy, namespace: default}
spec:
  replicas: 2
  selector: {app: legacy}
  template:
    metadata: {labels: {app: legacy}}
    spec:
      containers: [{name: app, image: example/legacy:v1}]
",
    );
    wait_ready(&server, "legacy", 2, "example/legacy:v1");
    server.kubectl(&["scale", "rc/legacy", "--replicas=4"]);
    wait_ready(&server, "legacy", 4, "example/legacy:v1");
    let rc = eventually("RC status", TIMEOUT, || {
        let rc = json(&server, &["get", "rc", "legacy"]);
        (rc["status"]["readyReplicas"] == 4).then_some(rc)
    });
    assert_eq!(rc["status"]["replicas"], 4);
    assert_eq!(rc["status"]["availableReplicas"], 4);
    assert!(rc["status"].get("terminatingReplicas").is_none());
    for pod in pods(&server, "legacy") {
        assert_eq!(
            pod["metadata"]["ownerReferences"][0]["kind"],
            "ReplicationController"
        );
        assert!(
            pod["metadata"]["name"]
                .as_str()
                .unwrap()
                .starts_with("legacy-")
        );
    }
    server.kubectl(&["scale", "rc/legacy", "--replicas=1"]);
    wait_ready(&server, "legacy", 1, "example/legacy:v1");
    // Negative replicas are refused by the API, and nothing changes.
    let err = server.kubectl_err(&["scale", "rc/legacy", "--replicas=-1"]);
    assert!(!err.is_empty());
    assert_eq!(pods(&server, "legacy").len(), 1);
}

#[test]
fn scaling_mid_rollout_is_proportional() {
    let (server, _sim) = start("2");
    let strategy = "    type: RollingUpdate
    rollingUpdate: {maxSurge: 3, maxUnavailable: 2}";
    apply(
        &server,
        &deployment("prop", 10, "example/prop:v1", strategy, ""),
    );
    rollout_status(&server, "deployment/prop");
    // v2 can never run (no node matches), so the rollout stops at old 8 + new 5.
    server.kubectl(&[
        "patch",
        "deployment/prop",
        "-p",
        r#"{"spec":{"template":{"spec":{"nodeSelector":{"nowhere":"true"}}}}}"#,
    ]);
    let sizes = |server: &Server| {
        let mut s: Vec<(i64, String)> = replica_sets(server, "prop")
            .iter()
            .map(|rs| {
                (
                    rs["spec"]["replicas"].as_i64().unwrap(),
                    rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
                        .as_str()
                        .unwrap()
                        .to_string(),
                )
            })
            .collect();
        s.sort_by(|a, b| a.1.cmp(&b.1));
        s.into_iter().map(|(n, _)| n).collect::<Vec<_>>()
    };
    eventually("the rollout to stall at 8 old + 5 new", TIMEOUT, || {
        (sizes(&server) == [8, 5]).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(sizes(&server), [8, 5], "a stalled rollout stays put");
    // Scaled to 15 (18 allowed): the 5 extra split 8:5 (upstream's example).
    server.kubectl(&["scale", "deployment/prop", "--replicas=15"]);
    eventually("proportional scale-up to 11 + 7", TIMEOUT, || {
        (sizes(&server) == [11, 7]).then_some(())
    });
    let rs = replica_sets(&server, "prop");
    assert!(rs.iter().all(|rs| {
        rs["metadata"]["annotations"]["deployment.kubernetes.io/desired-replicas"] == "15"
            && rs["metadata"]["annotations"]["deployment.kubernetes.io/max-replicas"] == "18"
    }));
    // And down to 5 (8 allowed): 11 -> 5 and 7 -> 3, then the rollout goes on as far as
    // availability allows (3 old must stay available; the 5 new never become so).
    let names: Vec<String> = {
        let mut rs = replica_sets(&server, "prop");
        rs.sort_by_key(|rs| {
            rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
                .as_str()
                .unwrap()
                .to_string()
        });
        rs.iter()
            .map(|rs| rs["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    };
    server.kubectl(&["scale", "deployment/prop", "--replicas=5"]);
    eventually("the rollout to settle at 3 old + 5 new", TIMEOUT, || {
        (sizes(&server) == [3, 5]).then_some(())
    });
    let scaled = events(&server, "ScalingReplicaSet");
    for msg in [
        format!("Scaled down replica set {} from 11 to 5", names[0]),
        format!("Scaled down replica set {} from 7 to 3", names[1]),
    ] {
        assert!(scaled.contains(&msg), "{msg:?} not in {scaled:?}");
    }
}

#[test]
fn pods_become_available_after_min_ready_seconds() {
    let (server, _sim) = start("1");
    apply(
        &server,
        "apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: slow, namespace: default}
spec:
  replicas: 2
  minReadySeconds: 4
  selector: {matchLabels: {app: slow}}
  template:
    metadata: {labels: {app: slow}}
    spec:
      containers: [{name: app, image: example/slow:v1}]
",
    );
    let status = |server: &Server| json(server, &["get", "rs", "slow"])["status"].clone();
    eventually("2 ready, not yet available", TIMEOUT, || {
        let s = status(&server);
        (s["readyReplicas"] == 2 && s["availableReplicas"].as_i64().unwrap_or(0) < 2).then_some(())
    });
    // Nothing else happens to the pods: only the requeue after minReadySeconds flips them.
    eventually("2 available", Duration::from_secs(20), || {
        (status(&server)["availableReplicas"] == 2).then_some(())
    });
}
