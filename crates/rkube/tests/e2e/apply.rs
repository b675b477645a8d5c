//! Black-box tests of server-side apply and `metadata.managedFields`: `rkube server
//! --disable-agent` driven by the real kubectl (1.33 and 1.27) and by kube-rs.

use crate::common;

use common::{KUBECTL_127, KUBECTL_133, Server, manifest, ok};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

/// A Deployment, a Service and a ConfigMap; `{app}` names them.
fn app(name: &str, replicas: u32, color: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: default
  labels: {{app: {name}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers:
      - name: web
        image: localhost/busybox:1
        ports: [{{containerPort: 80}}]
        env: [{{name: A, value: "1"}}, {{name: B, value: "2"}}]
---
apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: default
spec:
  selector: {{app: {name}}}
  ports: [{{port: 80, targetPort: 8080}}]
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: {name}-settings
  namespace: default
data:
  color: {color}
"#
    )
}

/// Runs `bin` with the server's kubeconfig; stdout on success, panics otherwise.
fn kubectl(s: &Server, bin: &str, args: &[&str]) -> String {
    ok(s.kubectl_with(bin, args), args)
}

/// `bin` expected to fail; returns stderr.
fn kubectl_err(s: &Server, bin: &str, args: &[&str]) -> String {
    let out = s.kubectl_with(bin, args);
    assert!(
        !out.status.success(),
        "kubectl {args:?} should fail:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The object as JSON, managedFields included.
fn get_json(s: &Server, kind: &str, name: &str) -> Value {
    let out = kubectl(
        s,
        KUBECTL_133,
        &[
            "-n",
            "default",
            "get",
            kind,
            name,
            "-o",
            "json",
            "--show-managed-fields",
        ],
    );
    serde_json::from_str(&out).unwrap()
}

/// The managedFields entry of `manager` with `operation`, if any.
fn entry<'a>(obj: &'a Value, manager: &str, operation: &str) -> Option<&'a Value> {
    obj["metadata"]["managedFields"]
        .as_array()?
        .iter()
        .find(|e| e["manager"] == manager && e["operation"] == operation)
}

fn managers(obj: &Value) -> Vec<String> {
    obj["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            format!(
                "{}/{}",
                e["manager"].as_str().unwrap(),
                e["operation"].as_str().unwrap()
            )
        })
        .collect()
}

/// The server-side apply story with one kubectl: create, re-apply, a second manager's
/// conflict and forced take-over, removing a field from the manifest.
fn server_side_apply_with(s: &Server, bin: &str, name: &str) {
    let (_d, path) = manifest(&app(name, 2, "blue"));
    let p = path.to_str().unwrap();
    let out = kubectl(s, bin, &["apply", "--server-side", "-f", p]);
    for line in [
        format!("deployment.apps/{name} serverside-applied"),
        format!("service/{name} serverside-applied"),
        format!("configmap/{name}-settings serverside-applied"),
    ] {
        assert!(out.contains(&line), "{out}");
    }
    let d = get_json(s, "deploy", name);
    let applied = entry(&d, "kubectl", "Apply").expect("an Apply entry for kubectl");
    assert_eq!(applied["apiVersion"], "apps/v1");
    assert_eq!(applied["fieldsType"], "FieldsV1");
    assert!(applied["time"].is_string());
    let f = &applied["fieldsV1"];
    assert_eq!(f["f:spec"]["f:replicas"], json!({}));
    assert_eq!(f["f:spec"]["f:selector"], json!({}));
    let c = &f["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"];
    assert_eq!(c["."], json!({}));
    assert_eq!(
        c["f:ports"]["k:{\"containerPort\":80,\"protocol\":\"TCP\"}"]["f:containerPort"],
        json!({})
    );
    assert!(c["f:env"]["k:{\"name\":\"B\"}"].is_object());
    // Defaults the server filled in are nobody's.
    assert!(f["f:spec"].get("f:progressDeadlineSeconds").is_none());
    let svc = get_json(s, "svc", name);
    let ports = &entry(&svc, "kubectl", "Apply").unwrap()["fieldsV1"]["f:spec"]["f:ports"];
    assert!(
        ports["k:{\"port\":80,\"protocol\":\"TCP\"}"].is_object(),
        "{ports}"
    );
    // `get -o yaml` hides managedFields unless asked.
    let yaml = kubectl(s, bin, &["get", "deploy", name, "-o", "yaml"]);
    assert!(!yaml.contains("managedFields"), "{yaml}");
    let yaml = kubectl(
        s,
        bin,
        &["get", "deploy", name, "-o", "yaml", "--show-managed-fields"],
    );
    assert!(
        yaml.contains("manager: kubectl") && yaml.contains("operation: Apply"),
        "{yaml}"
    );

    // Re-applying the same manifest changes nothing; a changed field is applied.
    let rv = d["metadata"]["resourceVersion"].clone();
    kubectl(s, bin, &["apply", "--server-side", "-f", p]);
    assert_eq!(
        get_json(s, "deploy", name)["metadata"]["resourceVersion"],
        rv
    );
    let (_d2, changed) = manifest(&app(name, 2, "red"));
    let changed = changed.to_str().unwrap();
    kubectl(s, bin, &["apply", "--server-side", "-f", changed]);
    let cm = get_json(s, "cm", &format!("{name}-settings"));
    assert_eq!(cm["data"]["color"], "red");

    // A second manager changing spec.replicas conflicts with kubectl...
    let scale = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  replicas: 5\n"
    );
    let (_d3, scale) = manifest(&scale);
    let scale = scale.to_str().unwrap();
    let err = kubectl_err(
        s,
        bin,
        &[
            "apply",
            "--server-side",
            "--field-manager=other",
            "-f",
            scale,
        ],
    );
    assert!(
        err.contains("Apply failed with 1 conflict: conflict with \"kubectl\": .spec.replicas"),
        "{err}"
    );
    assert!(err.contains("--force-conflicts"), "{err}");
    assert_eq!(get_json(s, "deploy", name)["spec"]["replicas"], 2);
    // ...and takes it over when forced.
    kubectl(
        s,
        bin,
        &[
            "apply",
            "--server-side",
            "--field-manager=other",
            "--force-conflicts",
            "-f",
            scale,
        ],
    );
    let d = get_json(s, "deploy", name);
    assert_eq!(d["spec"]["replicas"], 5);
    let other = entry(&d, "other", "Apply").unwrap();
    assert_eq!(other["fieldsV1"], json!({"f:spec": {"f:replicas": {}}}));
    let mine = &entry(&d, "kubectl", "Apply").unwrap()["fieldsV1"];
    assert!(mine["f:spec"].get("f:replicas").is_none(), "{mine}");
    // Now kubectl conflicts with `other` over the old value.
    let err = kubectl_err(s, bin, &["apply", "--server-side", "-f", changed]);
    assert!(
        err.contains("conflict with \"other\": .spec.replicas"),
        "{err}"
    );

    // Removing fields from the manifest removes them from the object; replicas stays
    // (`other` owns it), and so does what nobody applied.
    let smaller = app(name, 5, "red")
        .replace(", {name: B, value: \"2\"}", "")
        .replace("  color: red\n", "  color: red\n  size: L\n");
    let (_d4, smaller) = manifest(&smaller.replace("  replicas: 5\n", ""));
    kubectl(
        s,
        bin,
        &["apply", "--server-side", "-f", smaller.to_str().unwrap()],
    );
    let d = get_json(s, "deploy", name);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["env"],
        json!([{"name": "A", "value": "1"}])
    );
    assert_eq!(d["spec"]["replicas"], 5);
    assert_eq!(d["spec"]["progressDeadlineSeconds"], 600);
    let cm = get_json(s, "cm", &format!("{name}-settings"));
    assert_eq!(cm["data"], json!({"color": "red", "size": "L"}));
}

#[test]
fn kubectl_server_side_apply() {
    let s = Server::start(&["--disable-controller-manager"]);
    server_side_apply_with(&s, KUBECTL_133, "web");
    server_side_apply_with(&s, KUBECTL_127, "old");
}

/// Client-side apply, then server-side apply of the same manifest with one change: kubectl
/// takes over what client-side apply owned, without conflicts.
fn migrate_with(s: &Server, bin: &str, name: &str) {
    let (_d, path) = manifest(&app(name, 2, "blue"));
    kubectl(s, bin, &["apply", "-f", path.to_str().unwrap()]);
    let d = get_json(s, "deploy", name);
    assert_eq!(
        managers(&d),
        ["kubectl-client-side-apply/Update"],
        "{}",
        d["metadata"]["managedFields"]
    );
    let csa = &entry(&d, "kubectl-client-side-apply", "Update").unwrap()["fieldsV1"];
    // Update entries own the nodes they created (`.`), defaults included.
    assert_eq!(csa["f:metadata"]["f:labels"], json!({".": {}, "f:app": {}}));
    assert!(csa["f:spec"].get("f:progressDeadlineSeconds").is_some());

    let (_d2, changed) = manifest(&app(name, 3, "green"));
    let out = kubectl(
        s,
        bin,
        &["apply", "--server-side", "-f", changed.to_str().unwrap()],
    );
    assert!(out.contains("serverside-applied"), "{out}");
    let d = get_json(s, "deploy", name);
    assert_eq!(d["spec"]["replicas"], 3);
    assert!(
        entry(&d, "kubectl-client-side-apply", "Update").is_none(),
        "{:?}",
        managers(&d)
    );
    assert!(entry(&d, "kubectl", "Apply").is_some());
    let cm = get_json(s, "cm", &format!("{name}-settings"));
    assert_eq!(cm["data"]["color"], "green");
    // The last-applied annotation follows the server-side apply.
    let last = cm["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
        .as_str()
        .unwrap();
    assert!(last.contains("green"), "{last}");
}

#[test]
fn client_side_then_server_side_apply() {
    let s = Server::start(&["--disable-controller-manager"]);
    migrate_with(&s, KUBECTL_133, "mig");
    migrate_with(&s, KUBECTL_127, "mig-old");
}

/// Without kubectl's own migration (another client, or an old one), the server lets
/// `kubectl` take over the fields that still match the last-applied annotation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_applied_fields_go_to_kubectl_without_conflict() {
    let s = Server::start(&["--disable-controller-manager"]);
    let (_d, path) = manifest(&app("csa", 2, "blue"));
    s.kubectl(&["apply", "-f", path.to_str().unwrap()]);
    let client = s.client().await;
    // A manager other than kubectl conflicts on nothing when the values are equal...
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let same = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "csa"}, "spec": {"replicas": 2}});
    deploys
        .patch("csa", &PatchParams::apply("tool"), &Patch::Apply(&same))
        .await
        .unwrap();
    // ...and on the field when they differ.
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "csa-settings"}, "data": {"color": "red"}});
    match api
        .patch(
            "csa-settings",
            &PatchParams::apply("tool"),
            &Patch::Apply(&cm),
        )
        .await
    {
        Err(kube::Error::Api(e)) => {
            assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
            assert!(
                e.message
                    .contains("conflict with \"kubectl-client-side-apply\" using v1: .data.color")
            );
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let got = api
        .patch(
            "csa-settings",
            &PatchParams::apply("kubectl"),
            &Patch::Apply(&cm),
        )
        .await
        .unwrap();
    assert_eq!(got.data.unwrap()["color"], "red");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_apply() {
    let s = Server::start(&["--disable-controller-manager"]);
    let client = s.client().await;
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let d = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "rs", "labels": {"app": "rs"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "rs"}},
            "template": {"metadata": {"labels": {"app": "rs"}},
                "spec": {"containers": [{"name": "c", "image": "localhost/busybox:1"}]}},
        },
    });
    // dryRun: the answer, nothing stored.
    let mut dry = PatchParams::apply("mgr");
    dry.dry_run = true;
    let out = deploys.patch("rs", &dry, &Patch::Apply(&d)).await.unwrap();
    assert_eq!(out.spec.unwrap().replicas, Some(1));
    assert!(deploys.get_opt("rs").await.unwrap().is_none());

    let created = deploys
        .patch("rs", &PatchParams::apply("mgr"), &Patch::Apply(&d))
        .await
        .unwrap();
    let mf = created.metadata.managed_fields.clone().unwrap();
    assert_eq!(mf.len(), 1);
    assert_eq!(mf[0].manager.as_deref(), Some("mgr"));
    assert_eq!(mf[0].operation.as_deref(), Some("Apply"));
    assert_eq!(created.metadata.generation, Some(1));

    // Another manager's change of an owned field: a 409 with the field as cause.
    let scale = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "rs"}, "spec": {"replicas": 4}});
    match deploys
        .patch("rs", &PatchParams::apply("hpa"), &Patch::Apply(&scale))
        .await
    {
        Err(kube::Error::Api(e)) => {
            assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
            assert_eq!(
                e.message,
                "Apply failed with 1 conflict: conflict with \"mgr\": .spec.replicas"
            );
            let causes = e.details.unwrap().causes;
            assert_eq!(causes.len(), 1);
            assert_eq!(causes[0].field, ".spec.replicas");
            assert_eq!(causes[0].reason, "FieldManagerConflict");
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let forced = deploys
        .patch(
            "rs",
            &PatchParams::apply("hpa").force(),
            &Patch::Apply(&scale),
        )
        .await
        .unwrap();
    assert_eq!(forced.spec.unwrap().replicas, Some(4));
    assert_eq!(forced.metadata.generation, Some(2));

    // The first manager drops its label: it goes.
    let mut smaller = d.clone();
    smaller["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("labels");
    smaller["spec"].as_object_mut().unwrap().remove("replicas");
    let got = deploys
        .patch("rs", &PatchParams::apply("mgr"), &Patch::Apply(&smaller))
        .await
        .unwrap();
    assert!(got.metadata.labels.is_none_or(|l| l.is_empty()));
    assert_eq!(got.spec.unwrap().replicas, Some(4));

    // Non-apply writes record Update entries: the manager is the fieldManager parameter.
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "u"}, "data": {"a": "1"}})).unwrap();
    let pp = kube::api::PostParams {
        field_manager: Some("creator".into()),
        ..Default::default()
    };
    cms.create(&pp, &cm).await.unwrap();
    let merged = cms
        .patch(
            "u",
            &PatchParams {
                field_manager: Some("patcher".into()),
                ..Default::default()
            },
            &Patch::Merge(json!({"data": {"a": "2", "b": "3"}})),
        )
        .await
        .unwrap();
    let mf = merged.metadata.managed_fields.unwrap();
    let by = |m: &str| mf.iter().find(|e| e.manager.as_deref() == Some(m));
    assert_eq!(
        by("patcher").unwrap().fields_v1.as_ref().unwrap().0,
        json!({"f:data": {"f:a": {}, "f:b": {}}})
    );
    // data.a moved; the creator keeps the `data` map it created.
    assert_eq!(
        by("creator").unwrap().fields_v1.as_ref().unwrap().0,
        json!({"f:data": {}})
    );
}

#[test]
fn updates_are_tracked_and_managed_fields_cannot_be_corrupted() {
    let s = Server::start(&["--disable-controller-manager"]);
    s.kubectl(&["create", "configmap", "c", "--from-literal=a=1"]);
    s.kubectl(&["label", "configmap", "c", "team=x"]);
    let cm = get_json(&s, "cm", "c");
    assert_eq!(
        managers(&cm),
        ["kubectl-create/Update", "kubectl-label/Update"]
    );
    assert_eq!(
        entry(&cm, "kubectl-label", "Update").unwrap()["fieldsV1"],
        json!({"f:metadata": {"f:labels": {".": {}, "f:team": {}}}})
    );
    let good = cm["metadata"]["managedFields"].clone();

    // Garbage in managedFields is ignored: the stored entries stay.
    s.kubectl(&[
        "patch",
        "cm",
        "c",
        "--type=merge",
        "-p",
        r#"{"metadata":{"managedFields":[{"manager":"x","operation":"Bogus","apiVersion":"v1","fieldsType":"FieldsV1"}]}}"#,
    ]);
    assert_eq!(get_json(&s, "cm", "c")["metadata"]["managedFields"], good);
    // An empty list keeps them too; a list of one empty entry resets them.
    s.kubectl(&[
        "patch",
        "cm",
        "c",
        "--type=merge",
        "-p",
        r#"{"metadata":{"managedFields":[]}}"#,
    ]);
    assert_eq!(get_json(&s, "cm", "c")["metadata"]["managedFields"], good);
    s.kubectl(&[
        "patch",
        "cm",
        "c",
        "--type=merge",
        "-p",
        r#"{"metadata":{"managedFields":[{}]}}"#,
    ]);
    assert!(
        get_json(&s, "cm", "c")["metadata"]
            .get("managedFields")
            .is_none()
    );

    // Status writes are tracked per subresource.
    let (_d, path) = manifest(&app("st", 1, "blue"));
    s.kubectl(&["apply", "--server-side", "-f", path.to_str().unwrap()]);
    s.kubectl(&[
        "patch",
        "deploy",
        "st",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"observedGeneration":1}}"#,
    ]);
    let d = get_json(&s, "deploy", "st");
    let status = d["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["subresource"] == "status")
        .expect("a status entry");
    assert_eq!(status["manager"], "kubectl-patch");
    assert_eq!(
        status["fieldsV1"],
        json!({"f:status": {"f:observedGeneration": {}}})
    );
}

/// Sends a raw request and returns (code, reason, message) of the Status it fails with.
async fn raw_error(client: &kube::Client, req: http::Request<Vec<u8>>) -> (u16, String, String) {
    match client.request_text(req).await {
        Err(kube::Error::Api(e)) => (e.code, e.reason, e.message),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_apply_input_gets_a_status_and_stores_nothing() {
    let s = Server::start(&["--disable-controller-manager"]);
    let client = s.client().await;
    let apply = |query: &str, body: &str| {
        http::Request::patch(format!("/api/v1/namespaces/default/configmaps/bad{query}"))
            .header("content-type", "application/apply-patch+yaml")
            .body(body.as_bytes().to_vec())
            .unwrap()
    };
    let good = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bad\ndata:\n  a: b\n";
    let cases = [
        // Upstream answers a missing fieldManager with 422 Invalid PatchOptions.
        (
            apply("", good),
            422,
            "Invalid",
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
        ),
        (
            apply("?fieldManager=m", "apiVersion: v1\nkind: [ConfigMap\n"),
            400,
            "BadRequest",
            "error decoding YAML",
        ),
        (
            apply("?fieldManager=m", "- a\n- b\n"),
            400,
            "BadRequest",
            "error decoding YAML",
        ),
        (
            apply(
                "?fieldManager=m",
                "apiVersion: v1\nkind: Secret\nmetadata:\n  name: bad\n",
            ),
            400,
            "BadRequest",
            "invalid object type: /v1, Kind=Secret",
        ),
        (
            apply(
                "?fieldManager=m",
                "apiVersion: apps/v1\nkind: ConfigMap\nmetadata:\n  name: bad\n",
            ),
            400,
            "BadRequest",
            "invalid object type: apps/v1, Kind=ConfigMap",
        ),
        (
            apply("?fieldManager=m", "metadata:\n  name: bad\n"),
            400,
            "BadRequest",
            "invalid object type: /, Kind=",
        ),
        (
            apply(
                "?fieldManager=m",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bad\n  managedFields: []\n",
            ),
            400,
            "BadRequest",
            "metadata.managedFields must be nil",
        ),
        (
            apply(
                "?fieldManager=m",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: other\n",
            ),
            400,
            "BadRequest",
            "the name of the object (other) does not match the name on the URL (bad)",
        ),
        (
            apply(
                "?fieldManager=m&fieldValidation=Strict",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bad\nbogus: 1\n",
            ),
            400,
            "BadRequest",
            "unknown field \"bogus\"",
        ),
        (
            apply(
                "?fieldManager=m",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bad\ndata:\n  a: 1\n",
            ),
            400,
            "BadRequest",
            "cannot be handled as a ConfigMap",
        ),
        (
            apply(&format!("?fieldManager={}", "m".repeat(129)), good),
            422,
            "Invalid",
            "fieldManager: Too long",
        ),
    ];
    for (req, code, reason, message) in cases {
        let what = format!("{} {}", req.uri(), String::from_utf8_lossy(req.body()));
        let (c, r, m) = raw_error(&client, req).await;
        assert_eq!((c, r.as_str()), (code, reason), "{what}: {m}");
        assert!(m.contains(message), "{what}: {m}");
    }
    let pods = http::Request::patch("/api/v1/namespaces/default/pods/p?fieldManager=m")
        .header("content-type", "application/apply-patch+yaml")
        .body(
            br#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"image":"x"}]}}"#
                .to_vec(),
        )
        .unwrap();
    let (c, _, m) = raw_error(&client, pods).await;
    assert_eq!(c, 400, "{m}");
    assert!(
        m.contains("associative list with keys has an element that omits key field \"name\""),
        "{m}"
    );
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    assert!(cms.get_opt("bad").await.unwrap().is_none());
    assert!(cms.get_opt("other").await.unwrap().is_none());

    // Unknown fields only warn by default (and are dropped); the apply succeeds.
    let req = apply(
        "?fieldManager=m",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bad\nbogus: 1\n",
    );
    let resp = client.send(req.map(Into::into)).await.unwrap();
    assert_eq!(resp.status(), 201);
    let warning = resp.headers().get("warning").unwrap().to_str().unwrap();
    assert!(warning.contains("unknown field \\\"bogus\\\""), "{warning}");
    // A force on a non-apply patch is refused, as upstream.
    let req = http::Request::patch("/api/v1/namespaces/default/configmaps/bad?force=true")
        .header("content-type", "application/merge-patch+json")
        .body(br#"{"data":{"x":"y"}}"#.to_vec())
        .unwrap();
    let (c, r, _) = raw_error(&client, req).await;
    assert_eq!((c, r.as_str()), (422, "Invalid"));
}
