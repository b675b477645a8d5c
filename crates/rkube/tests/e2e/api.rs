//! Black-box tests of the API server: `rkube server --disable-agent` on a free port, driven by
//! the real kubectl (1.33 and 1.27) and by kube-rs.

use crate::common;

use std::time::Duration;

use common::{KUBECTL_127, Server, manifest, ok};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use serde_json::json;

const APP: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
  labels: {app: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: localhost/busybox:1
        env: [{name: A, value: "1"}]
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: shop
  labels: {tier: config}
data:
  color: blue
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
"#;

#[test]
fn apply_get_describe_and_discovery() {
    // Counts the ConfigMaps of a namespace: without the kube-root-ca.crt publisher.
    let s = Server::start(&["--disable-controller-manager"]);
    let (_d, path) = manifest(APP);
    let p = path.to_str().unwrap();
    let out = s.kubectl(&["apply", "-f", p]);
    for line in [
        "namespace/shop created",
        "deployment.apps/web created",
        "configmap/settings created",
        "service/web created",
    ] {
        assert!(out.contains(line), "{out}");
    }
    let again = s.kubectl(&["apply", "-f", p]);
    assert!(again.contains("configmap/settings unchanged"), "{again}");
    let (_d2, changed) = manifest(&APP.replace("color: blue", "color: red"));
    let out = s.kubectl(&["apply", "-f", changed.to_str().unwrap()]);
    assert!(out.contains("configmap/settings configured"), "{out}");
    assert_eq!(
        s.kubectl(&[
            "-n",
            "shop",
            "get",
            "cm",
            "settings",
            "-o",
            "jsonpath={.data.color}"
        ]),
        "red"
    );

    // Output formats.
    let yaml = s.kubectl(&["-n", "shop", "get", "deploy", "web", "-o", "yaml"]);
    assert!(
        yaml.contains("kind: Deployment") && yaml.contains("generation: 1"),
        "{yaml}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&s.kubectl(&["-n", "shop", "get", "cm", "-o", "json"])).unwrap();
    assert_eq!(json["kind"], "List");
    assert_eq!(json["items"][0]["metadata"]["name"], "settings");
    let wide = s.kubectl(&["-n", "shop", "get", "deploy", "-o", "wide"]);
    let header: Vec<&str> = wide.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "AGE",
            "CONTAINERS",
            "IMAGES",
            "SELECTOR"
        ]
    );
    assert!(
        wide.contains("localhost/busybox:1") && wide.contains("app=web"),
        "{wide}"
    );
    let svc = s.kubectl(&["-n", "shop", "get", "svc", "web"]);
    assert!(svc.starts_with("NAME   TYPE        CLUSTER-IP"), "{svc}");
    let ns = s.kubectl(&["get", "ns"]);
    for name in [
        "default",
        "kube-system",
        "kube-public",
        "kube-node-lease",
        "shop",
    ] {
        assert!(
            ns.lines()
                .any(|l| l.starts_with(name) && l.contains("Active")),
            "{ns}"
        );
    }
    let describe = s.kubectl(&["-n", "shop", "describe", "deploy", "web"]);
    assert!(
        describe.contains("Replicas:") && describe.contains("2 desired"),
        "{describe}"
    );

    // Discovery.
    let resources = s.kubectl(&["api-resources"]);
    assert!(
        resources
            .lines()
            .any(|l| l.starts_with("pods") && l.contains("po") && l.contains("Pod")),
        "{resources}"
    );
    assert!(
        resources
            .lines()
            .any(|l| l.starts_with("deployments") && l.contains("apps/v1")),
        "{resources}"
    );
    let versions = s.kubectl(&["api-versions"]);
    assert!(
        versions.lines().any(|l| l == "apps/v1") && versions.lines().any(|l| l == "v1"),
        "{versions}"
    );
    let version = s.kubectl(&["version", "-o", "json"]);
    assert!(version.contains("v1.33.0+rkube"), "{version}");
}

#[test]
fn patch_label_annotate_replace_scale_edit_diff() {
    let s = Server::start(&["--disable-controller-manager"]);
    let (_d, path) = manifest(APP);
    s.kubectl(&["apply", "-f", path.to_str().unwrap()]);
    let n = ["-n", "shop"];
    let k = |args: &[&str]| s.kubectl(&[&n[..], args].concat());

    k(&[
        "patch",
        "cm",
        "settings",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/data/size","value":"L"}]"#,
    ]);
    k(&[
        "patch",
        "cm",
        "settings",
        "--type=merge",
        "-p",
        r#"{"data":{"shape":"round"}}"#,
    ]);
    // Strategic merge: containers merge by name, so the env of `web` stays.
    k(&[
        "patch",
        "deploy",
        "web",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"web","image":"localhost/busybox:2"}]}}}}"#,
    ]);
    let d = k(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image} {.spec.template.spec.containers[0].env[0].name} {.metadata.generation}",
    ]);
    assert_eq!(d, "localhost/busybox:2 A 2");
    let data = k(&["get", "cm", "settings", "-o", "jsonpath={.data}"]);
    assert!(
        data.contains("\"size\":\"L\"") && data.contains("\"shape\":\"round\""),
        "{data}"
    );

    k(&["label", "cm", "settings", "owner=team-a"]);
    k(&["annotate", "cm", "settings", "note=hello"]);
    let labels = k(&["get", "cm", "--show-labels"]);
    assert!(labels.contains("owner=team-a,tier=config"), "{labels}");
    assert_eq!(
        k(&[
            "get",
            "cm",
            "settings",
            "-o",
            "jsonpath={.metadata.annotations.note}"
        ]),
        "hello"
    );

    // A label change does not bump the generation; a spec change does.
    k(&["label", "deploy", "web", "x=y"]);
    assert_eq!(
        k(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.metadata.generation}"
        ]),
        "2"
    );
    k(&["scale", "deploy", "web", "--replicas=5"]);
    assert_eq!(
        k(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.replicas} {.metadata.generation}"
        ]),
        "5 3"
    );

    let yaml = k(&["get", "cm", "settings", "-o", "yaml"]);
    let (_r, replaced) = manifest(&yaml.replace("color: blue", "color: green"));
    k(&["replace", "-f", replaced.to_str().unwrap()]);
    assert_eq!(
        k(&["get", "cm", "settings", "-o", "jsonpath={.data.color}"]),
        "green"
    );
    // Replacing with the stale resourceVersion is a conflict.
    let err = s.kubectl_err(&["replace", "-f", replaced.to_str().unwrap()]);
    assert!(err.contains("the object has been modified"), "{err}");

    let out = std::process::Command::new(common::KUBECTL_133)
        .args(["-n", "shop", "edit", "cm", "settings"])
        .env("KUBECONFIG", &s.kubeconfig)
        .env("EDITOR", "sed -i s/color:\\ green/color:\\ edited/")
        .output()
        .unwrap();
    ok(out, &["edit"]);
    assert_eq!(
        k(&["get", "cm", "settings", "-o", "jsonpath={.data.color}"]),
        "edited"
    );

    // kubectl diff: exit code 1 and a diff when the manifest differs from the live object.
    let out = s.kubectl_with(common::KUBECTL_133, &["diff", "-f", path.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("+  color: blue"));
    // diff is a dry run: nothing changed.
    assert_eq!(
        k(&["get", "cm", "settings", "-o", "jsonpath={.data.color}"]),
        "edited"
    );
}

#[test]
fn watch_wait_and_delete() {
    // Counts the ConfigMaps of a namespace: without the kube-root-ca.crt publisher.
    let s = Server::start(&["--disable-controller-manager"]);
    let (_d, path) = manifest(APP);
    s.kubectl(&["apply", "-f", path.to_str().unwrap()]);

    let mut watch = std::process::Command::new(common::KUBECTL_133)
        .args([
            "-n",
            "shop",
            "get",
            "cm",
            "-w",
            "--output-watch-events",
            "-o",
            "json",
        ])
        .env("KUBECONFIG", &s.kubeconfig)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let waiter = std::process::Command::new(common::KUBECTL_133)
        .args([
            "-n",
            "shop",
            "wait",
            "--for=delete",
            "cm/settings",
            "--timeout=20s",
        ])
        .env("KUBECONFIG", &s.kubeconfig)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    s.kubectl(&["-n", "shop", "label", "cm", "settings", "seen=yes"]);
    s.kubectl(&["-n", "shop", "delete", "cm", "settings"]);
    let waited = waiter.wait_with_output().unwrap();
    assert!(waited.status.success(), "wait --for=delete");
    std::thread::sleep(Duration::from_millis(500));
    let _ = watch.kill();
    let out = watch.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let events: Vec<String> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|e| e["type"].as_str().map(str::to_string))
        .collect();
    assert_eq!(events, ["ADDED", "MODIFIED", "DELETED"], "{text}");

    // wait --for=condition on a pod whose status is patched through the status subresource.
    s.kubectl(&[
        "-n",
        "shop",
        "run",
        "p1",
        "--image=localhost/busybox:1",
        "--restart=Never",
    ]);
    s.kubectl(&[
        "-n",
        "shop",
        "patch",
        "pod",
        "p1",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"conditions":[{"type":"Ready","status":"True"}]}}"#,
    ]);
    let out = s.kubectl(&[
        "-n",
        "shop",
        "wait",
        "--for=condition=Ready",
        "pod/p1",
        "--timeout=10s",
    ]);
    assert!(out.contains("condition met"), "{out}");

    // Foreground deletion is recorded as upstream records it (the garbage collector finishes it).
    s.kubectl(&[
        "-n",
        "shop",
        "delete",
        "deploy",
        "web",
        "--cascade=foreground",
        "--wait=false",
    ]);
    let f = s.kubectl(&[
        "-n",
        "shop",
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.metadata.finalizers} {.metadata.deletionTimestamp}",
    ]);
    assert!(f.starts_with("[\"foregroundDeletion\"] 20"), "{f}");
    // Orphan likewise; background deletes at once.
    s.kubectl(&["-n", "shop", "delete", "svc", "web", "--cascade=background"]);
    let err = s.kubectl_err(&["-n", "shop", "get", "svc", "web"]);
    assert!(err.contains("services \"web\" not found"), "{err}");
}

#[test]
fn kubectl_127_imperative_commands() {
    let s = Server::start(&["--disable-controller-manager"]);
    let k = |args: &[&str]| ok(s.kubectl_with(KUBECTL_127, args), args);
    assert!(k(&["create", "namespace", "old"]).contains("namespace/old created"));
    assert!(
        k(&[
            "-n",
            "old",
            "create",
            "configmap",
            "c",
            "--from-literal=a=b"
        ])
        .contains("configmap/c created")
    );
    assert!(
        k(&[
            "-n",
            "old",
            "create",
            "secret",
            "generic",
            "s",
            "--from-literal=p=q"
        ])
        .contains("secret/s created")
    );
    assert!(
        k(&[
            "-n",
            "old",
            "create",
            "deployment",
            "d",
            "--image=localhost/busybox:1",
            "--replicas=2"
        ])
        .contains("deployment.apps/d created")
    );
    let all = k(&["-n", "old", "get", "deploy,cm,secret"]);
    assert!(
        all.contains("deployment.apps/d")
            && all.contains("configmap/c")
            && all.contains("secret/s"),
        "{all}"
    );
    assert!(k(&["-n", "old", "get", "secret", "s", "-o", "jsonpath={.type}"]).contains("Opaque"));
    k(&["-n", "old", "scale", "deploy", "d", "--replicas=4"]);
    assert_eq!(
        k(&[
            "-n",
            "old",
            "get",
            "deploy",
            "d",
            "-o",
            "jsonpath={.spec.replicas}"
        ]),
        "4"
    );
    assert!(k(&["delete", "namespace", "old", "--wait=false"]).contains("deleted"));
    let phase = k(&["get", "ns", "old", "-o", "jsonpath={.status.phase}"]);
    assert_eq!(phase, "Terminating");
    // Nothing new can be created in a terminating namespace.
    let out = s.kubectl_with(KUBECTL_127, &["-n", "old", "create", "configmap", "late"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("because it is being terminated"));
}

#[test]
fn kubectl_reports_upstream_errors() {
    let s = Server::start(&["--disable-controller-manager"]);
    let err = s.kubectl_err(&["get", "cm", "nope"]);
    assert!(
        err.contains("Error from server (NotFound): configmaps \"nope\" not found"),
        "{err}"
    );
    let (_d, bad) = manifest("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: Bad_Name}\n");
    let err = s.kubectl_err(&["create", "-f", bad.to_str().unwrap()]);
    assert!(
        err.contains("is invalid: metadata.name: Invalid value: \"Bad_Name\""),
        "{err}"
    );
    let (_d, unknown) =
        manifest("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: u}\ndata: {a: b}\nbogus: 1\n");
    let err = s.kubectl_err(&["create", "-f", unknown.to_str().unwrap()]);
    assert!(err.contains("unknown field \"bogus\""), "{err}");
    let (_d, ok_cm) = manifest("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: twice}\n");
    s.kubectl(&["create", "-f", ok_cm.to_str().unwrap()]);
    let err = s.kubectl_err(&["create", "-f", ok_cm.to_str().unwrap()]);
    assert!(
        err.contains("(AlreadyExists)") && err.contains("configmaps \"twice\" already exists"),
        "{err}"
    );
    let err = s.kubectl_err(&["get", "cm", "-l", "a in b"]);
    assert!(
        err.contains("unable to parse requirement") || err.contains("found"),
        "{err}"
    );
    let err = s.kubectl_err(&["get", "pods", "--field-selector", "spec.bogus=1"]);
    assert!(
        err.contains("field label not supported: spec.bogus"),
        "{err}"
    );
    let err = s.kubectl_err(&["-n", "missing", "create", "-f", ok_cm.to_str().unwrap()]);
    assert!(err.contains("namespaces \"missing\" not found"), "{err}");
}

// === kube-rs ===

fn cm(name: &str, labels: serde_json::Value) -> ConfigMap {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels},
        "data": {"k": name},
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_crud_list_watch() {
    // Counts the ConfigMaps of a namespace: without the kube-root-ca.crt publisher.
    let s = Server::start(&["--disable-controller-manager"]);
    let client = s.client().await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");

    let created = api
        .create(&PostParams::default(), &cm("a", json!({"app": "x"})))
        .await
        .unwrap();
    let rv0: i64 = created
        .metadata
        .resource_version
        .clone()
        .unwrap()
        .parse()
        .unwrap();
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());
    for name in ["b", "c", "d", "e"] {
        api.create(&PostParams::default(), &cm(name, json!({"app": "y"})))
            .await
            .unwrap();
    }
    // generateName.
    let mut generated = cm("", json!({}));
    generated.metadata.name = None;
    generated.metadata.generate_name = Some("gen-".into());
    let g = api
        .create(&PostParams::default(), &generated)
        .await
        .unwrap();
    assert!(g.metadata.name.unwrap().starts_with("gen-"));

    let selected = api
        .list(&ListParams::default().labels("app=y"))
        .await
        .unwrap();
    assert_eq!(selected.items.len(), 4);
    // Pages of 2 at one resourceVersion.
    let mut names = Vec::new();
    let mut lp = ListParams::default().limit(2);
    loop {
        let page = api.list(&lp).await.unwrap();
        names.extend(page.items.iter().map(|c| c.metadata.name.clone().unwrap()));
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => break,
        }
    }
    assert_eq!(names.len(), 6);
    assert_eq!(&names[..5], ["a", "b", "c", "d", "e"]);

    // Watch from the first create's revision: sees b..e and gen, then live changes.
    let mut stream = api
        .watch(&WatchParams::default(), &rv0.to_string())
        .await
        .unwrap()
        .boxed();
    let mut seen = Vec::new();
    while seen.len() < 5 {
        match tokio::time::timeout(Duration::from_secs(10), stream.try_next())
            .await
            .unwrap()
            .unwrap()
        {
            Some(WatchEvent::Added(c)) => seen.push(c.metadata.name.unwrap()),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(&seen[..4], ["b", "c", "d", "e"]);
    api.patch(
        "b",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "new"}})),
    )
    .await
    .unwrap();
    match tokio::time::timeout(Duration::from_secs(10), stream.try_next())
        .await
        .unwrap()
        .unwrap()
    {
        Some(WatchEvent::Modified(c)) => assert_eq!(c.data.unwrap()["k"], "new"),
        other => panic!("unexpected {other:?}"),
    }

    // Optimistic concurrency: an update with a stale resourceVersion is a 409.
    let mut stale = created.clone();
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "v2"}})),
    )
    .await
    .unwrap();
    stale.data = Some([("k".to_string(), "stale".to_string())].into());
    match api.replace("a", &PostParams::default(), &stale).await {
        Err(kube::Error::Api(e)) => assert_eq!((e.code, e.reason.as_str()), (409, "Conflict")),
        other => panic!("expected a conflict, got {other:?}"),
    }

    // dryRun creates nothing.
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    api.create(&dry, &cm("dry", json!({}))).await.unwrap();
    assert!(api.get_opt("dry").await.unwrap().is_none());

    api.delete("a", &DeleteParams::default()).await.unwrap();
    match api.get("a").await {
        Err(kube::Error::Api(e)) => assert_eq!((e.code, e.reason.as_str()), (404, "NotFound")),
        other => panic!("expected NotFound, got {other:?}"),
    }
    let left = api
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels("app=y"),
        )
        .await
        .unwrap();
    assert!(left.is_left());
    assert_eq!(
        api.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_an_expired_revision_is_gone() {
    let s = Server::start(&["--disable-controller-manager"]);
    let client = s.client().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let first = api
        .create(&PostParams::default(), &cm("churn", json!({})))
        .await
        .unwrap();
    let rv0 = first.metadata.resource_version.unwrap();
    // More changes than the watch cache's event window holds.
    for i in 0..4200 {
        api.patch(
            "churn",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"k": i.to_string()}})),
        )
        .await
        .unwrap();
    }
    let mut stream = api
        .watch(&WatchParams::default(), &rv0)
        .await
        .unwrap()
        .boxed();
    match tokio::time::timeout(Duration::from_secs(10), stream.try_next())
        .await
        .unwrap()
    {
        Ok(Some(WatchEvent::Error(e))) => {
            assert_eq!((e.code, e.reason.as_str()), (410, "Expired"));
            assert!(
                e.message.starts_with("too old resource version"),
                "{}",
                e.message
            );
        }
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 410),
        other => panic!("expected 410 Gone, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_subresource_and_generation() {
    let s = Server::start(&["--disable-controller-manager"]);
    let client = s.client().await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "d"},
        "spec": {"selector": {"matchLabels": {"a": "b"}},
                 "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}},
        "status": {"replicas": 99}
    }))
    .unwrap();
    let d = deployments
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
    assert!(d.status.is_none(), "status is reset on create");
    assert_eq!(d.metadata.generation, Some(1));
    // The main resource ignores status; the status subresource changes only status.
    let pp = PatchParams::default();
    let d = deployments
        .patch("d", &pp, &Patch::Merge(json!({"status": {"replicas": 3}})))
        .await
        .unwrap();
    assert!(d.status.is_none());
    let d = deployments
        .patch_status(
            "d",
            &pp,
            &Patch::Merge(json!({"status": {"replicas": 3}, "spec": {"replicas": 7}})),
        )
        .await
        .unwrap();
    assert_eq!(d.status.unwrap().replicas, Some(3));
    assert_eq!(
        d.spec.unwrap().replicas,
        Some(1),
        "spec untouched by a status write (replicas defaulted to 1 on create)"
    );
    assert_eq!(d.metadata.generation, Some(1));
    let scale = deployments.get_scale("d").await.unwrap();
    assert_eq!(scale.status.unwrap().selector.as_deref(), Some("a=b"));

    // Binding assigns a pod once.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}),
    )
    .unwrap();
    let pod = pods.create(&PostParams::default(), &pod).await.unwrap();
    assert_eq!(pod.status.unwrap().phase.as_deref(), Some("Pending"));
    let binding = |node: &str| {
        serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"}, "target": {"kind": "Node", "name": node}})).unwrap()
    };
    let req = |body| {
        http::Request::post("/api/v1/namespaces/default/pods/p/binding")
            .header("content-type", "application/json")
            .body(body)
            .unwrap()
    };
    client.request_text(req(binding("n1"))).await.unwrap();
    let bound = pods.get("p").await.unwrap();
    assert_eq!(bound.spec.unwrap().node_name.as_deref(), Some("n1"));
    let scheduled = bound
        .status
        .unwrap()
        .conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "PodScheduled")
        .expect("the binding sets PodScheduled");
    assert_eq!(scheduled.status, "True");
    match client.request_text(req(binding("n2"))).await {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 409),
        other => panic!("expected a conflict, got {other:?}"),
    }

    // Namespaces: created Active with the kubernetes finalizer.
    let namespaces: Api<Namespace> = Api::all(client);
    let ns = namespaces.get("default").await.unwrap();
    assert_eq!(ns.status.unwrap().phase.as_deref(), Some("Active"));
    assert_eq!(
        ns.spec.unwrap().finalizers,
        Some(vec!["kubernetes".to_string()])
    );
}

/// Sends a raw request and returns (code, reason) of the Status it fails with.
async fn raw_error(client: &kube::Client, req: http::Request<Vec<u8>>) -> (u16, String, String) {
    match client.request_text(req).await {
        Err(kube::Error::Api(e)) => (e.code, e.reason, e.message),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_status_and_stores_nothing() {
    // Counts the ConfigMaps of a namespace: without the kube-root-ca.crt publisher.
    let s = Server::start(&["--disable-controller-manager"]);
    let client = s.client().await;
    let post = |path: &str, ct: &str, body: Vec<u8>| {
        http::Request::post(path.to_string())
            .header("content-type", ct)
            .body(body)
            .unwrap()
    };
    let cms = "/api/v1/namespaces/default/configmaps";
    let cases: Vec<(http::Request<Vec<u8>>, u16, &str)> = vec![
        (
            post(cms, "application/json", b"{not json".to_vec()),
            400,
            "BadRequest",
        ),
        (
            post(cms, "application/json", b"[1,2]".to_vec()),
            400,
            "BadRequest",
        ),
        (
            post(
                cms,
                "application/json",
                br#"{"apiVersion":"apps/v1","kind":"ConfigMap","metadata":{"name":"x"}}"#.to_vec(),
            ),
            400,
            "BadRequest",
        ),
        (
            post(
                cms,
                "application/json",
                br#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"x"}}"#.to_vec(),
            ),
            400,
            "BadRequest",
        ),
        (
            post(
                cms,
                "application/json",
                br#"{"metadata":{"name":"x"},"data":{"a":1}}"#.to_vec(),
            ),
            400,
            "BadRequest",
        ),
        (
            post(
                cms,
                "application/json",
                format!(r#"{{"metadata":{{"name":"{}"}}}}"#, "a".repeat(254)).into_bytes(),
            ),
            422,
            "Invalid",
        ),
        (
            post(cms, "application/json", br#"{"metadata":{}}"#.to_vec()),
            422,
            "Invalid",
        ),
        (
            post(
                cms,
                "application/json",
                br#"{"metadata":{"name":"x","labels":{"bad key":"v"}}}"#.to_vec(),
            ),
            422,
            "Invalid",
        ),
        (
            post(cms, "text/plain", b"hello".to_vec()),
            415,
            "UnsupportedMediaType",
        ),
        (
            post(
                &format!("{cms}?fieldValidation=Strict"),
                "application/json",
                br#"{"metadata":{"name":"x"},"bogus":1}"#.to_vec(),
            ),
            400,
            "BadRequest",
        ),
        (
            post(cms, "application/json", vec![b' '; 3 * 1024 * 1024 + 10]),
            413,
            "RequestEntityTooLarge",
        ),
        (
            post(
                "/api/v1/namespaces/default/widgets",
                "application/json",
                b"{}".to_vec(),
            ),
            404,
            "NotFound",
        ),
        (
            post(
                "/apis/apps/v9/namespaces/default/deployments",
                "application/json",
                b"{}".to_vec(),
            ),
            404,
            "NotFound",
        ),
        (
            post(
                "/api/v1/namespaces/nowhere/configmaps",
                "application/json",
                br#"{"metadata":{"name":"x"}}"#.to_vec(),
            ),
            404,
            "NotFound",
        ),
        (
            http::Request::get(format!("{cms}?labelSelector=a%20in%20b"))
                .body(vec![])
                .unwrap(),
            400,
            "BadRequest",
        ),
        (
            http::Request::get(format!("{cms}?limit=abc"))
                .body(vec![])
                .unwrap(),
            400,
            "BadRequest",
        ),
        (
            http::Request::get(format!("{cms}?continue=garbage&limit=1"))
                .body(vec![])
                .unwrap(),
            400,
            "BadRequest",
        ),
        (
            http::Request::get(format!("{cms}?watch=true&resourceVersion=-4"))
                .body(vec![])
                .unwrap(),
            400,
            "BadRequest",
        ),
    ];
    for (req, code, reason) in cases {
        let what = format!("{} {}", req.method(), req.uri());
        let (c, r, m) = raw_error(&client, req).await;
        assert_eq!((c, r.as_str()), (code, reason), "{what}: {m}");
        assert!(!m.is_empty());
    }
    // Bad patches.
    let cm_api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    cm_api
        .create(&PostParams::default(), &cm("target", json!({})))
        .await
        .unwrap();
    let patch = |ct: &str, body: &[u8]| {
        http::Request::patch(format!("{cms}/target"))
            .header("content-type", ct)
            .body(body.to_vec())
            .unwrap()
    };
    for (req, code) in [
        (
            patch(
                "application/json-patch+json",
                br#"[{"op":"remove","path":"/nope"}]"#,
            ),
            422,
        ),
        (
            patch("application/json-patch+json", br#"{"op":"add"}"#),
            422,
        ),
        (patch("application/merge-patch+json", b"{broken"), 400),
        (
            patch(
                "application/merge-patch+json",
                br#"{"metadata":{"name":"renamed"}}"#,
            ),
            400,
        ),
        (
            patch(
                "application/strategic-merge-patch+json",
                br#"{"data":{"k":5}}"#,
            ),
            400,
        ),
        (patch("application/x-unknown", b"{}"), 415),
    ] {
        let what = String::from_utf8_lossy(req.body()).into_owned();
        let (c, _, m) = raw_error(&client, req).await;
        assert_eq!(c, code, "{what}: {m}");
    }
    // Nothing of the above was stored.
    let names: Vec<String> = cm_api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    assert_eq!(names, ["target"]);
    assert_eq!(
        cm_api.get("target").await.unwrap().data.unwrap()["k"],
        "target"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, "s3cret,alice,1001,\"dev\"\n").unwrap();
    let s = Server::start(&[
        "--disable-controller-manager",
        "--token-auth-file",
        tokens.to_str().unwrap(),
    ]);
    let ca = std::fs::read(s.kubeconfig.parent().unwrap().join("tls/ca.crt")).unwrap();
    let client_with = |token: Option<&str>| {
        let mut config = kube::Config::new(format!("https://{}", s.addr).parse().unwrap());
        config.root_cert = Some(vec![pem_to_der(&ca)]);
        if let Some(t) = token {
            config.auth_info.token = Some(t.to_string().into());
        }
        kube::Client::try_from(config).unwrap()
    };
    let ns: Api<Namespace> = Api::all(client_with(Some("s3cret")));
    assert!(ns.list(&ListParams::default()).await.unwrap().items.len() >= 4);
    for token in [Some("wrong"), None] {
        let ns: Api<Namespace> = Api::all(client_with(token));
        match ns.list(&ListParams::default()).await {
            Err(kube::Error::Api(e)) => {
                assert_eq!((e.code, e.reason.as_str()), (401, "Unauthorized"))
            }
            other => panic!("expected 401 for {token:?}, got {other:?}"),
        }
    }
}

fn pem_to_der(pem: &[u8]) -> Vec<u8> {
    use base64::Engine;
    let text = String::from_utf8_lossy(pem);
    let b64: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}

/// HorizontalPodAutoscalers are stored as autoscaling/v2 and served as v1 too: each version
/// sees its own shape, and v2-only fields survive a read-modify-write through v1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hpa_served_as_v1_and_v2() {
    use k8s_openapi::api::autoscaling::{v1 as hpa_v1, v2 as hpa_v2};
    let s = Server::start(&["--disable-controller-manager"]);
    let client = s.client().await;
    let v1: Api<hpa_v1::HorizontalPodAutoscaler> = Api::namespaced(client.clone(), "default");
    let v2: Api<hpa_v2::HorizontalPodAutoscaler> = Api::namespaced(client.clone(), "default");
    let target = json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"});
    let created: hpa_v1::HorizontalPodAutoscaler = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"scaleTargetRef": target, "minReplicas": 2, "maxReplicas": 5,
                 "targetCPUUtilizationPercentage": 70}}))
    .unwrap();
    let out = v1.create(&PostParams::default(), &created).await.unwrap();
    assert_eq!(
        out.spec.unwrap().target_cpu_utilization_percentage,
        Some(70)
    );
    let as_v2 = v2.get("web").await.unwrap();
    let metrics = as_v2.spec.unwrap().metrics.unwrap();
    let cpu = metrics[0].resource.as_ref().unwrap();
    assert_eq!(
        (cpu.name.as_str(), cpu.target.average_utilization),
        ("cpu", Some(70))
    );

    // A v2 object with a metric v1 cannot express.
    let mem: hpa_v2::HorizontalPodAutoscaler = serde_json::from_value(json!({
        "metadata": {"name": "mem"},
        "spec": {"scaleTargetRef": target, "maxReplicas": 4, "metrics": [
            {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}},
            {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "1Gi"}}}]}}))
    .unwrap();
    v2.create(&PostParams::default(), &mem).await.unwrap();
    let mut seen_v1 = v1.get("mem").await.unwrap();
    assert_eq!(
        seen_v1
            .spec
            .as_ref()
            .unwrap()
            .target_cpu_utilization_percentage,
        Some(50)
    );
    // Read-modify-write through v1 keeps the memory metric.
    seen_v1.spec.as_mut().unwrap().max_replicas = 6;
    v1.replace("mem", &PostParams::default(), &seen_v1)
        .await
        .unwrap();
    let back = v2.get("mem").await.unwrap().spec.unwrap();
    assert_eq!(back.max_replicas, 6);
    assert_eq!(
        back.metrics.unwrap().len(),
        2,
        "the v2-only metric survived"
    );
    // A merge patch through v1 converts too.
    v1.patch(
        "mem",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"minReplicas": 3}})),
    )
    .await
    .unwrap();
    assert_eq!(
        v2.get("mem").await.unwrap().spec.unwrap().min_replicas,
        Some(3)
    );
    // Lists in both versions.
    assert_eq!(
        v1.list(&ListParams::default()).await.unwrap().items.len(),
        2
    );
    let listed = v2.list(&ListParams::default()).await.unwrap();
    assert!(
        listed
            .items
            .iter()
            .all(|h| h.spec.as_ref().unwrap().metrics.is_some())
    );
    // kubectl reads the preferred version (v2).
    let out = s.kubectl(&["get", "hpa", "mem", "-o", "jsonpath={.apiVersion}"]);
    assert_eq!(out, "autoscaling/v2");
    v1.delete("web", &Default::default()).await.unwrap();
    assert!(v2.get_opt("web").await.unwrap().is_none());
}

/// ClusterIPs and NodePorts: distinct under concurrency, user choices checked, released on
/// delete and on type change, and a full range reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_ip_and_node_port_allocation() {
    use k8s_openapi::api::core::v1::Service;
    let s = Server::start(&[
        "--disable-controller-manager",
        "--service-cidr",
        "10.96.0.0/27",
        "--service-node-port-range",
        "30000-30009",
    ]);
    let client = s.client().await;
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let kubernetes = svcs.get("kubernetes").await.unwrap().spec.unwrap();
    assert_eq!(kubernetes.cluster_ip.as_deref(), Some("10.96.0.1"));
    let service = |name: &str, spec: serde_json::Value| -> Service {
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap()
    };
    // 29 addresses are left in the /27 (30 usable, .1 is the kubernetes Service).
    let creates = (0..29).map(|i| {
        let svcs = svcs.clone();
        let svc = service(&format!("s{i}"), json!({"ports": [{"port": 80}]}));
        async move { svcs.create(&PostParams::default(), &svc).await }
    });
    let created = futures::future::join_all(creates).await;
    let mut ips = std::collections::BTreeSet::new();
    for svc in created {
        let spec = svc.expect("create while the range has room").spec.unwrap();
        let ip = spec.cluster_ip.unwrap();
        assert!(ip.starts_with("10.96.0."), "{ip}");
        assert_eq!(spec.cluster_ips, Some(vec![ip.clone()]));
        assert!(ips.insert(ip), "duplicate ClusterIP");
    }
    let full = svcs
        .create(
            &PostParams::default(),
            &service("s-full", json!({"ports": [{"port": 80}]})),
        )
        .await;
    match full {
        Err(kube::Error::Api(e)) => {
            assert_eq!(e.code, 500);
            assert!(e.message.contains("range is full"), "{}", e.message);
        }
        other => panic!("expected a full range, got {other:?}"),
    }
    assert!(
        svcs.get_opt("s-full").await.unwrap().is_none(),
        "nothing stored"
    );
    // Deleting frees the IP for a user who asks for it; a taken one is refused.
    let freed = svcs
        .get("s0")
        .await
        .unwrap()
        .spec
        .unwrap()
        .cluster_ip
        .unwrap();
    let taken = svcs
        .get("s1")
        .await
        .unwrap()
        .spec
        .unwrap()
        .cluster_ip
        .unwrap();
    svcs.delete("s0", &DeleteParams::default()).await.unwrap();
    let again = service(
        "again",
        json!({"clusterIP": freed, "ports": [{"port": 80}]}),
    );
    svcs.create(&PostParams::default(), &again).await.unwrap();
    for (name, ip, message) in [
        ("clash", taken.as_str(), "provided IP is already allocated"),
        ("outside", "192.168.1.1", "is not in the valid range"),
    ] {
        let svc = service(name, json!({"clusterIP": ip, "ports": [{"port": 80}]}));
        match svcs.create(&PostParams::default(), &svc).await {
            Err(kube::Error::Api(e)) => {
                assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
                assert!(e.message.contains(message), "{}", e.message);
            }
            other => panic!("expected 422, got {other:?}"),
        }
    }
    // NodePorts: room for 10; five Services of two ports each take them all.
    for i in 2..12 {
        svcs.delete(&format!("s{i}"), &DeleteParams::default())
            .await
            .unwrap();
    }
    let creates = (0..5).map(|i| {
        let svcs = svcs.clone();
        let svc = service(
            &format!("np{i}"),
            json!({"type": "NodePort", "ports": [{"name": "a", "port": 80}, {"name": "b", "port": 81}]}),
        );
        async move { svcs.create(&PostParams::default(), &svc).await }
    });
    let mut ports = std::collections::BTreeSet::new();
    for svc in futures::future::join_all(creates).await {
        for p in svc.unwrap().spec.unwrap().ports.unwrap() {
            let n = p.node_port.unwrap();
            assert!((30000..=30009).contains(&n));
            assert!(ports.insert(n), "duplicate NodePort {n}");
        }
    }
    let err = s.kubectl_err(&["create", "service", "nodeport", "np-full", "--tcp=80:8080"]);
    assert!(err.contains("range is full"), "{err}");
    // Back to ClusterIP: the NodePorts go back to the range and can be asked for.
    let np0 = svcs.get("np0").await.unwrap();
    let released = np0.spec.as_ref().unwrap().ports.as_ref().unwrap()[0]
        .node_port
        .unwrap();
    svcs.patch(
        "np0",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"type": "ClusterIP"}})),
    )
    .await
    .unwrap();
    let np0 = svcs.get("np0").await.unwrap().spec.unwrap();
    assert!(np0.ports.unwrap().iter().all(|p| p.node_port.is_none()));
    let out = s.kubectl(&[
        "create",
        "service",
        "nodeport",
        "np-again",
        "--tcp=80:8080",
        &format!("--node-port={released}"),
    ]);
    assert!(out.contains("created"), "{out}");
    let err = s.kubectl_err(&[
        "create",
        "service",
        "nodeport",
        "np-clash",
        "--tcp=80:8080",
        &format!("--node-port={released}"),
    ]);
    assert!(err.contains("provided port is already allocated"), "{err}");
}

/// What users leave out comes back with upstream's defaults.
#[test]
fn upstream_defaults_are_applied() {
    let s = Server::start(&["--disable-controller-manager"]);
    s.kubectl(&["create", "deployment", "web", "--image=nginx"]);
    let d: serde_json::Value =
        serde_json::from_str(&s.kubectl(&["get", "deploy", "web", "-o", "json"])).unwrap();
    assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate");
    assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
    assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
    assert_eq!(d["spec"]["progressDeadlineSeconds"], 600);
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["imagePullPolicy"], "Always");
    assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
    assert_eq!(d["spec"]["template"]["spec"]["dnsPolicy"], "ClusterFirst");

    s.kubectl(&["run", "p", "--image=nginx:1.25", "--restart=Never"]);
    let p: serde_json::Value =
        serde_json::from_str(&s.kubectl(&["get", "pod", "p", "-o", "json"])).unwrap();
    assert_eq!(p["spec"]["serviceAccountName"], "default");
    assert_eq!(p["spec"]["schedulerName"], "default-scheduler");
    assert_eq!(p["spec"]["terminationGracePeriodSeconds"], 30);
    assert_eq!(
        p["spec"]["containers"][0]["imagePullPolicy"],
        "IfNotPresent"
    );
    let tolerations = p["spec"]["tolerations"].as_array().unwrap();
    assert!(
        tolerations
            .iter()
            .any(|t| t["key"] == "node.kubernetes.io/unreachable" && t["tolerationSeconds"] == 300)
    );

    s.kubectl(&["create", "job", "once", "--image=busybox"]);
    let j: serde_json::Value =
        serde_json::from_str(&s.kubectl(&["get", "job", "once", "-o", "json"])).unwrap();
    assert_eq!(j["spec"]["completions"], 1);
    assert_eq!(j["spec"]["backoffLimit"], 6);
    let uid = j["metadata"]["uid"].as_str().unwrap();
    assert_eq!(
        j["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"],
        uid
    );
    assert_eq!(
        j["spec"]["template"]["metadata"]["labels"]["job-name"],
        "once"
    );
    // A Job with its own selector needs manualSelector.
    let (_d, path) = manifest(
        "apiVersion: batch/v1\nkind: Job\nmetadata: {name: manual}\nspec:\n  selector: {matchLabels: {a: b}}\n  template:\n    metadata: {labels: {a: b}}\n    spec:\n      restartPolicy: Never\n      containers: [{name: c, image: busybox}]\n",
    );
    let err = s.kubectl_err(&["create", "-f", path.to_str().unwrap()]);
    assert!(err.contains("`selector` not auto-generated"), "{err}");

    let ns: serde_json::Value =
        serde_json::from_str(&s.kubectl(&["get", "ns", "default", "-o", "json"])).unwrap();
    assert_eq!(
        ns["metadata"]["labels"]["kubernetes.io/metadata.name"],
        "default"
    );
}

/// `kubectl get -w` prints every change as a full table row, not just NAME and AGE.
#[test]
fn watch_prints_table_rows() {
    let s = Server::start(&["--disable-controller-manager"]);
    let mut watch = std::process::Command::new(common::KUBECTL_133)
        .args(["get", "pods", "-w"])
        .env("KUBECONFIG", &s.kubeconfig)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    s.kubectl(&["run", "w1", "--image=nginx"]);
    s.kubectl(&["label", "pod", "w1", "seen=yes"]);
    std::thread::sleep(Duration::from_millis(700));
    let _ = watch.kill();
    let out = watch.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .filter(|r: &Vec<&str>| r.first() == Some(&"w1"))
        .collect();
    assert!(rows.len() >= 2, "{text}");
    for row in rows {
        // NAME READY STATUS RESTARTS AGE
        assert_eq!(&row[..4], ["w1", "0/1", "Pending", "0"], "{text}");
    }
    assert!(
        text.contains("STATUS"),
        "header with the pod columns: {text}"
    );
}
