//! Property-based fuzzing of request decoding against a real `rkube server`: random and
//! mutated bodies (JSON, YAML, protobuf, patches) must each get a `Status` below 500, and
//! exactly the objects whose creation was acknowledged are stored — nothing half-written.
//!
//! `PROPTEST_CASES` sets the cases per property (default 200; the report in
//! `docs/fuzzing.md` comes from a longer run).

use crate::common;

use std::collections::BTreeSet;

use common::Server;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value, json};

const CMS: &str = "/api/v1/namespaces/default/configmaps";
const DEPLOYS: &str = "/apis/apps/v1/namespaces/default/deployments";

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(200)
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    })
}

/// What the server answered: the HTTP code (2xx, or the Status's code).
async fn send(client: &kube::Client, req: http::Request<Vec<u8>>) -> Result<u16, String> {
    match client.request_text(req).await {
        Ok(_) => Ok(200),
        Err(kube::Error::Api(e)) => Ok(e.code),
        Err(other) => Err(format!("no Status: {other}")),
    }
}

fn request(method: &str, path: &str, content_type: &str, body: Vec<u8>) -> http::Request<Vec<u8>> {
    http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", content_type)
        .body(body)
        .unwrap()
}

/// Any JSON value, a few levels deep.
fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "[a-zA-Z0-9./:_-]{0,12}".prop_map(Value::from),
        ".{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z$/.-]{0,10}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn deployment(name: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.25",
                    "ports": [{"containerPort": 80}]}]}}}})
}

/// Places in a Deployment a mutation may hit.
const PATHS: &[&str] = &[
    "",
    "/apiVersion",
    "/kind",
    "/metadata",
    "/metadata/name",
    "/metadata/labels",
    "/metadata/annotations",
    "/metadata/finalizers",
    "/metadata/ownerReferences",
    "/spec",
    "/spec/replicas",
    "/spec/selector",
    "/spec/selector/matchLabels",
    "/spec/strategy",
    "/spec/template",
    "/spec/template/metadata/labels",
    "/spec/template/spec/containers",
    "/spec/template/spec/containers/0",
    "/spec/template/spec/containers/0/image",
    "/spec/template/spec/containers/0/ports",
    "/spec/template/spec/containers/0/resources",
    "/spec/template/spec/volumes",
    "/status",
];

fn set_path(doc: &mut Value, path: &str, value: Value) {
    if path.is_empty() {
        *doc = value;
        return;
    }
    let (parent, last) = path.rsplit_once('/').unwrap();
    let target = if parent.is_empty() {
        Some(&mut *doc)
    } else {
        doc.pointer_mut(parent)
    };
    match target {
        Some(Value::Object(m)) => {
            m.insert(last.to_owned(), value);
        }
        Some(Value::Array(a)) => {
            if let Some(slot) = last.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                *slot = value;
            }
        }
        _ => {}
    }
}

/// Stored configmap names must be exactly those acknowledged.
async fn stored_names(client: &kube::Client) -> BTreeSet<String> {
    Api::<ConfigMap>::namespaced(client.clone(), "default")
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .filter(|n| n.starts_with("fz-"))
        .collect()
}

#[test]
fn random_bodies_get_a_status_and_store_nothing() {
    // Counts the ConfigMaps of a namespace: without the kube-root-ca.crt publisher.
    let s = Server::start(&["--disable-controller-manager"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = rt.block_on(s.client());
    let content_types = prop_oneof![
        Just("application/json"),
        Just("application/yaml"),
        Just("application/vnd.kubernetes.protobuf"),
        Just("text/plain"),
        Just("application/json; charset=utf-8"),
    ];
    let protobuf_like = prop::collection::vec(any::<u8>(), 0..512).prop_map(|mut b| {
        let mut v = b"k8s\0".to_vec();
        v.append(&mut b);
        v
    });
    let bodies = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..1024),
        protobuf_like,
        arb_json().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        ".{0,200}".prop_map(String::into_bytes),
    ];
    runner()
        .run(&(bodies, content_types), |(body, ct)| {
            let code = rt
                .block_on(send(&client, request("POST", CMS, ct, body)))
                .map_err(TestCaseError::fail)?;
            prop_assert!((400..500).contains(&code), "answered {code}");
            Ok(())
        })
        .unwrap();
    // Nothing was acknowledged, so nothing may be stored.
    let all = rt
        .block_on(
            Api::<ConfigMap>::namespaced(client.clone(), "default").list(&ListParams::default()),
        )
        .unwrap();
    assert!(all.items.is_empty(), "refused bodies left objects behind");
}

#[test]
fn mutated_objects_are_stored_whole_or_not_at_all() {
    let s = Server::start(&["--disable-controller-manager"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = rt.block_on(s.client());
    let accepted = std::cell::RefCell::new(BTreeSet::new());
    let counter = std::cell::Cell::new(0u32);
    let mutation = (prop::sample::select(PATHS), arb_json(), prop::bool::ANY);
    runner()
        .run(&prop::collection::vec(mutation, 1..4), |mutations| {
            counter.set(counter.get() + 1);
            let name = format!("fz-{}", counter.get());
            // A ConfigMap-shaped and a Deployment-shaped document, mutated.
            let mut cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name}, "data": {"k": "v"}});
            let mut deploy = deployment(&name);
            for (path, value, on_cm) in mutations {
                if on_cm {
                    let p = path.replace("/spec/template/spec/containers/0", "/data");
                    set_path(&mut cm, &p, value);
                } else {
                    set_path(&mut deploy, path, value);
                }
            }
            let code = rt
                .block_on(send(
                    &client,
                    request(
                        "POST",
                        CMS,
                        "application/json",
                        serde_json::to_vec(&cm).unwrap(),
                    ),
                ))
                .map_err(TestCaseError::fail)?;
            prop_assert!(code < 500, "configmap answered {code}: {cm}");
            if code == 200 {
                let stored = cm.pointer("/metadata/name").and_then(Value::as_str);
                if let Some(n) = stored {
                    accepted.borrow_mut().insert(n.to_owned());
                }
            }
            let code = rt
                .block_on(send(
                    &client,
                    request(
                        "POST",
                        DEPLOYS,
                        "application/json",
                        serde_json::to_vec(&deploy).unwrap(),
                    ),
                ))
                .map_err(TestCaseError::fail)?;
            prop_assert!(code < 500, "deployment answered {code}: {deploy}");
            Ok(())
        })
        .unwrap();
    // Exactly the acknowledged ConfigMaps exist (of the names this test made).
    let ours = |n: &String| n.starts_with("fz-") && n[3..].parse::<u32>().is_ok();
    let stored: BTreeSet<String> = rt
        .block_on(stored_names(&client))
        .into_iter()
        .filter(ours)
        .collect();
    let accepted: BTreeSet<String> = accepted.into_inner().into_iter().filter(ours).collect();
    assert!(
        !accepted.is_empty(),
        "no mutation was accepted: the generator is too destructive"
    );
    assert_eq!(
        stored, accepted,
        "stored and acknowledged ConfigMaps differ"
    );
    // Every stored Deployment decodes as a Deployment (nothing half-written).
    let deploys = rt
        .block_on(
            Api::<Deployment>::namespaced(client.clone(), "default").list(&ListParams::default()),
        )
        .expect("every stored Deployment decodes");
    for d in deploys.items {
        assert!(d.spec.is_some(), "a stored Deployment without a spec");
    }
}

#[test]
fn random_patches_get_a_status_and_leave_a_valid_object() {
    let s = Server::start(&["--disable-controller-manager"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = rt.block_on(s.client());
    let code = rt
        .block_on(send(
            &client,
            request(
                "POST",
                DEPLOYS,
                "application/json",
                serde_json::to_vec(&deployment("target")).unwrap(),
            ),
        ))
        .unwrap();
    assert_eq!(code, 200);
    let patch_types = prop_oneof![
        Just("application/json-patch+json"),
        Just("application/merge-patch+json"),
        Just("application/strategic-merge-patch+json"),
        Just("application/apply-patch+yaml"),
    ];
    let json_patch_op = (
        prop::sample::select(&["add", "remove", "replace", "move", "copy", "test", "bogus"][..]),
        prop::sample::select(PATHS),
        arb_json(),
    )
        .prop_map(|(op, path, value)| json!({"op": op, "path": path, "from": "/spec/replicas", "value": value}));
    let bodies = prop_oneof![
        arb_json().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        prop::collection::vec(json_patch_op, 0..4)
            .prop_map(|ops| serde_json::to_vec(&ops).unwrap()),
        (prop::sample::select(PATHS), arb_json()).prop_map(|(path, value)| {
            let mut doc = deployment("target");
            set_path(&mut doc, path, value);
            serde_json::to_vec(&doc).unwrap()
        }),
        prop::collection::vec(any::<u8>(), 0..256),
    ];
    runner()
        .run(&(patch_types, bodies), |(ct, body)| {
            let path = format!("{DEPLOYS}/target?fieldManager=fuzz");
            let code = rt
                .block_on(send(&client, request("PATCH", &path, ct, body)))
                .map_err(TestCaseError::fail)?;
            prop_assert!(code < 500, "answered {code}");
            Ok(())
        })
        .unwrap();
    // Whatever the patches did, the object is still a valid Deployment.
    let d = rt
        .block_on(Api::<Deployment>::namespaced(client.clone(), "default").get("target"))
        .expect("the patched Deployment still decodes");
    let spec = d.spec.expect("spec");
    assert!(!spec.template.spec.expect("pod spec").containers.is_empty());
}
