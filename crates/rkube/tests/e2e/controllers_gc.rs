//! The garbage collector and the namespace controller, black-box through kubectl 1.33:
//! background, foreground (blockOwnerDeletion) and orphan deletion of owners (ConfigMaps
//! owning ConfigMaps and pods, so no workload controller is involved), dangling and
//! cross-namespace owner references, and `kubectl delete ns` emptying a namespace.

use crate::common;

use std::time::Duration;

use common::{Server, Sim, eventually, json, manifest};
use serde_json::Value;

const T: Duration = Duration::from_secs(30);

/// `kubectl get ARGS -o json`, or None when it fails (not found).
fn get(server: &Server, args: &[&str]) -> Option<Value> {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend(["-o", "json"]);
    let out = server.kubectl_with(common::KUBECTL_133, &all);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

fn uid(server: &Server, args: &[&str]) -> String {
    get(server, args).unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string()
}

fn create(server: &Server, yaml: &str) {
    let (_dir, path) = manifest(yaml);
    server.kubectl(&["create", "-f", path.to_str().unwrap()]);
}

fn owner_ref(kind: &str, name: &str, uid: &str, block: bool) -> String {
    format!(
        "{{apiVersion: v1, kind: {kind}, name: {name}, uid: \"{uid}\", blockOwnerDeletion: {block}}}"
    )
}

fn owned_cm(name: &str, ns: &str, refs: &[String], finalizers: &[&str]) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {ns}\n  ownerReferences: [{}]\n  finalizers: [{}]\ndata: {{k: v}}\n",
        refs.join(", "),
        finalizers
            .iter()
            .map(|f| format!("\"{f}\""))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn owned_pod(name: &str, refs: &[String]) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  ownerReferences: [{}]\nspec:\n  containers: [{{name: c, image: busybox}}]\n",
        refs.join(", ")
    )
}

fn refs_of(v: &Value) -> Vec<String> {
    v["metadata"]["ownerReferences"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| r["name"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn gone(server: &Server, args: &[&str]) -> Option<()> {
    get(server, args).is_none().then_some(())
}

#[test]
fn background_deletion_removes_dependents_and_dangling_references() {
    let server = Server::start(&[]);
    server.kubectl(&["create", "configmap", "owner-a"]);
    server.kubectl(&["create", "configmap", "owner-b"]);
    server.kubectl(&["create", "namespace", "other"]);
    let a = uid(&server, &["configmap", "owner-a"]);
    let b = uid(&server, &["configmap", "owner-b"]);
    let ra = owner_ref("ConfigMap", "owner-a", &a, true);
    let rb = owner_ref("ConfigMap", "owner-b", &b, false);
    create(
        &server,
        &owned_cm("only-a", "default", std::slice::from_ref(&ra), &[]),
    );
    create(&server, &owned_pod("pod-a", std::slice::from_ref(&ra)));
    create(
        &server,
        &owned_cm("a-and-b", "default", &[ra.clone(), rb.clone()], &[]),
    );
    // An owner that never existed, and one in another namespace (owners must be in the
    // dependent's namespace): both dangling.
    create(
        &server,
        &owned_cm(
            "never-owned",
            "default",
            &[owner_ref(
                "ConfigMap",
                "ghost",
                "6e0c9a4c-0000-4000-8000-000000000000",
                false,
            )],
            &[],
        ),
    );
    create(
        &server,
        &owned_cm("cross-ns", "other", std::slice::from_ref(&rb), &[]),
    );
    eventually("dangling dependents deleted", T, || {
        gone(&server, &["configmap", "never-owned"])?;
        gone(&server, &["configmap", "cross-ns", "-n", "other"])
    });
    // Owners that exist keep their dependents.
    std::thread::sleep(Duration::from_secs(2));
    assert!(get(&server, &["configmap", "only-a"]).is_some());
    assert!(get(&server, &["pod", "pod-a"]).is_some());

    // Deleting owner-a (background, kubectl's default) removes what only it owned; the
    // object owned by both loses the reference to owner-a only.
    server.kubectl(&["delete", "configmap", "owner-a"]);
    eventually("dependents of owner-a deleted", T, || {
        gone(&server, &["configmap", "only-a"])?;
        gone(&server, &["pod", "pod-a"])
    });
    let both = eventually("reference to owner-a removed", T, || {
        let v = get(&server, &["configmap", "a-and-b"])?;
        (refs_of(&v) == ["owner-b"]).then_some(v)
    });
    assert_eq!(both["metadata"]["ownerReferences"][0]["uid"], b.as_str());
    let events = json(&server, &["get", "events", "-n", "other"]);
    assert!(
        events["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["reason"] == "OwnerRefInvalidNamespace"
                && e["involvedObject"]["name"] == "cross-ns"),
        "no OwnerRefInvalidNamespace event: {events}"
    );
}

#[test]
fn foreground_deletion_waits_for_blocking_dependents_only() {
    let server = Server::start(&[]);
    server.kubectl(&["create", "configmap", "fg"]);
    let fg = uid(&server, &["configmap", "fg"]);
    // Both dependents hold a finalizer, so they stay (being deleted) until we release them.
    create(
        &server,
        &owned_cm(
            "blocker",
            "default",
            &[owner_ref("ConfigMap", "fg", &fg, true)],
            &["example.com/hold"],
        ),
    );
    create(
        &server,
        &owned_cm(
            "bystander",
            "default",
            &[owner_ref("ConfigMap", "fg", &fg, false)],
            &["example.com/hold"],
        ),
    );
    server.kubectl(&[
        "delete",
        "configmap",
        "fg",
        "--cascade=foreground",
        "--wait=false",
    ]);
    let owner = get(&server, &["configmap", "fg"]).expect("owner kept while dependents remain");
    assert!(owner["metadata"]["deletionTimestamp"].is_string());
    assert!(
        owner["metadata"]["finalizers"]
            .as_array()
            .unwrap()
            .contains(&Value::from("foregroundDeletion"))
    );
    // The collector deletes both dependents (they wait on their own finalizer).
    eventually("dependents marked for deletion", T, || {
        let b = get(&server, &["configmap", "blocker"])?;
        let n = get(&server, &["configmap", "bystander"])?;
        (b["metadata"]["deletionTimestamp"].is_string()
            && n["metadata"]["deletionTimestamp"].is_string())
        .then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        get(&server, &["configmap", "fg"]).is_some(),
        "the owner must wait for its blocking dependent"
    );
    // Releasing the blocking dependent lets the owner go, though the non-blocking one stays.
    server.kubectl(&[
        "patch",
        "configmap",
        "blocker",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    eventually("owner deleted after its blocking dependent", T, || {
        gone(&server, &["configmap", "blocker"])?;
        gone(&server, &["configmap", "fg"])
    });
    assert!(get(&server, &["configmap", "bystander"]).is_some());
    server.kubectl(&[
        "patch",
        "configmap",
        "bystander",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    eventually("bystander gone", T, || {
        gone(&server, &["configmap", "bystander"])
    });
}

#[test]
fn orphan_deletion_keeps_dependents_without_the_reference() {
    let server = Server::start(&[]);
    server.kubectl(&["create", "configmap", "parent"]);
    server.kubectl(&["create", "configmap", "other-parent"]);
    let p = uid(&server, &["configmap", "parent"]);
    let o = uid(&server, &["configmap", "other-parent"]);
    let rp = owner_ref("ConfigMap", "parent", &p, true);
    create(
        &server,
        &owned_cm("kid", "default", std::slice::from_ref(&rp), &[]),
    );
    create(&server, &owned_pod("kid-pod", std::slice::from_ref(&rp)));
    create(
        &server,
        &owned_cm(
            "kid-two-parents",
            "default",
            &[rp, owner_ref("ConfigMap", "other-parent", &o, false)],
            &[],
        ),
    );
    // kubectl waits until the owner is gone, which needs the orphan finalizer handled.
    server.kubectl(&[
        "delete",
        "configmap",
        "parent",
        "--cascade=orphan",
        "--timeout=60s",
    ]);
    assert!(get(&server, &["configmap", "parent"]).is_none());
    let kid = get(&server, &["configmap", "kid"]).expect("orphaned dependent kept");
    assert!(refs_of(&kid).is_empty(), "{kid}");
    let pod = get(&server, &["pod", "kid-pod"]).expect("orphaned pod kept");
    assert!(refs_of(&pod).is_empty(), "{pod}");
    let two = get(&server, &["configmap", "kid-two-parents"]).unwrap();
    assert_eq!(refs_of(&two), ["other-parent"]);
    // They stay: nothing owns them any more.
    std::thread::sleep(Duration::from_secs(2));
    assert!(get(&server, &["configmap", "kid"]).is_some());
}

#[test]
fn deleting_a_namespace_empties_it_and_reports_what_remains() {
    let server = Server::start(&[]);
    let mut sim = Sim::start(&server, &["--nodes", "2"]);
    sim.wait_for_log("registered 2 nodes", Duration::from_secs(60));
    server.kubectl(&["create", "namespace", "doomed"]);
    create(
        &server,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p1, namespace: doomed, labels: {app: x}}\nspec:\n  containers: [{name: c, image: busybox}]\n",
    );
    server.kubectl(&["-n", "doomed", "create", "configmap", "plain"]);
    server.kubectl(&[
        "-n",
        "doomed",
        "create",
        "service",
        "clusterip",
        "svc",
        "--tcp=80:80",
    ]);
    create(
        &server,
        &owned_cm("held", "doomed", &[], &["example.com/hold"]),
    );
    eventually("pod running", T, || {
        let p = get(&server, &["pod", "p1", "-n", "doomed"])?;
        (p["status"]["phase"] == "Running").then_some(())
    });

    let kubectl = {
        let kubeconfig = server.kubeconfig.clone();
        std::thread::spawn(move || {
            std::process::Command::new(common::KUBECTL_133)
                .args(["delete", "namespace", "doomed", "--timeout=90s"])
                .env("KUBECONFIG", kubeconfig)
                .output()
                .unwrap()
        })
    };
    // The held ConfigMap keeps the namespace Terminating; everything else goes.
    let ns = eventually("namespace conditions report the finalizer", T, || {
        let ns = get(&server, &["namespace", "doomed"])?;
        let conds = ns["status"]["conditions"].as_array()?.clone();
        let find = |t: &str| conds.iter().find(|c| c["type"] == t).cloned();
        let fin = find("NamespaceFinalizersRemaining")?;
        (fin["status"] == "True").then_some(ns)
    });
    assert_eq!(ns["status"]["phase"], "Terminating");
    let conds = ns["status"]["conditions"].as_array().unwrap();
    let cond = |t: &str| conds.iter().find(|c| c["type"] == t).unwrap().clone();
    assert!(
        cond("NamespaceFinalizersRemaining")["message"]
            .as_str()
            .unwrap()
            .contains("example.com/hold in 1 resource instances"),
        "{ns}"
    );
    assert_eq!(cond("NamespaceDeletionDiscoveryFailure")["status"], "False");
    assert_eq!(cond("NamespaceDeletionContentFailure")["status"], "False");
    eventually("pod, service and plain configmap deleted", T, || {
        gone(&server, &["pod", "p1", "-n", "doomed"])?;
        gone(&server, &["service", "svc", "-n", "doomed"])?;
        gone(&server, &["configmap", "plain", "-n", "doomed"])
    });
    // New objects are refused while it terminates.
    let err = server.kubectl_err(&["-n", "doomed", "create", "configmap", "late"]);
    assert!(
        err.contains("being terminated") || err.contains("Forbidden"),
        "{err}"
    );
    assert!(!kubectl.is_finished(), "kubectl delete ns must wait");

    server.kubectl(&[
        "-n",
        "doomed",
        "patch",
        "configmap",
        "held",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    let out = kubectl.join().unwrap();
    assert!(
        out.status.success(),
        "kubectl delete ns failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(get(&server, &["namespace", "doomed"]).is_none());
    let names: Vec<String> = json(&server, &["get", "namespaces"])["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert!(!names.contains(&"doomed".to_string()));
}

#[test]
fn an_explicit_propagation_policy_replaces_the_recorded_one() {
    // Without the collector, the finalizers the API server records stay visible.
    let server = Server::start(&["--controllers=*,-garbagecollector"]);
    create(
        &server,
        &owned_cm("x", "default", &[], &["example.com/hold"]),
    );
    let finalizers = |server: &Server| {
        server.kubectl(&[
            "get",
            "configmap",
            "x",
            "-o",
            "jsonpath={.metadata.finalizers}",
        ])
    };
    server.kubectl(&[
        "delete",
        "configmap",
        "x",
        "--cascade=orphan",
        "--wait=false",
    ]);
    assert_eq!(finalizers(&server), r#"["example.com/hold","orphan"]"#);
    server.kubectl(&[
        "delete",
        "configmap",
        "x",
        "--cascade=foreground",
        "--wait=false",
    ]);
    assert_eq!(
        finalizers(&server),
        r#"["example.com/hold","foregroundDeletion"]"#
    );
    server.kubectl(&[
        "delete",
        "configmap",
        "x",
        "--cascade=background",
        "--wait=false",
    ]);
    assert_eq!(finalizers(&server), r#"["example.com/hold"]"#);
    server.kubectl(&[
        "patch",
        "configmap",
        "x",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    assert!(get(&server, &["configmap", "x"]).is_none());
}

#[test]
fn deployments_are_collected_with_their_replicasets_and_pods() {
    let server = Server::start(&[]);
    let mut sim = Sim::start(&server, &["--nodes", "2"]);
    sim.wait_for_log("registered 2 nodes", Duration::from_secs(60));
    for name in ["fg", "bg"] {
        server.kubectl(&[
            "create",
            "deployment",
            name,
            "--image=nginx",
            "--replicas=2",
        ]);
    }
    let count = |kind: &str, app: &str| {
        json(&server, &["get", kind, "-l", &format!("app={app}")])["items"]
            .as_array()
            .unwrap()
            .len()
    };
    eventually("pods of both deployments", Duration::from_secs(60), || {
        (count("pods", "fg") == 2 && count("pods", "bg") == 2).then_some(())
    });
    // Foreground: kubectl returns once the Deployment is gone, which waits for its
    // ReplicaSet, which waits for its pods.
    server.kubectl(&[
        "delete",
        "deployment",
        "fg",
        "--cascade=foreground",
        "--timeout=60s",
    ]);
    assert_eq!(count("replicasets", "fg"), 0);
    assert!(
        json(&server, &["get", "pods", "-l", "app=fg"])["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["metadata"]["deletionTimestamp"].is_string()),
        "pods of a foreground-deleted deployment must be deleted before it"
    );
    // Background: the Deployment goes at once, the rest follows.
    server.kubectl(&["delete", "deployment", "bg"]);
    eventually(
        "replicaset and pods collected",
        Duration::from_secs(60),
        || (count("replicasets", "bg") == 0 && count("pods", "bg") == 0).then_some(()),
    );
}
