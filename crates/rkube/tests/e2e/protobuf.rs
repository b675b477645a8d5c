//! Protobuf request bodies end to end: kubectl 1.33's imperative `create <kind>` commands send
//! `application/vnd.kubernetes.protobuf`; `rkube server --disable-agent` must store what they
//! mean, and refuse malformed protobuf with a 400 `Status`.

use crate::common;

use base64::Engine as _;
use common::{KUBECTL_133, Server, ok};
use serde_json::{Value, json};

fn get_json(s: &Server, args: &[&str]) -> Value {
    let mut full = args.to_vec();
    full.extend(["-o", "json"]);
    serde_json::from_str(&s.kubectl(&full)).unwrap()
}

#[test]
fn kubectl_133_imperative_creates_are_protobuf_and_stored_right() {
    let s = Server::start(&["--disable-controller-manager"]);

    // kubectl really sends protobuf, and takes the JSON answer.
    let out = s.kubectl_with(KUBECTL_133, &["create", "namespace", "pb", "--v=8"]);
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        log.contains("Content-Type: application/vnd.kubernetes.protobuf"),
        "kubectl did not send protobuf:\n{log}"
    );
    assert!(
        ok(out, &["create", "namespace"]).contains("namespace/pb created"),
        "{log}"
    );
    assert_eq!(
        get_json(&s, &["get", "ns", "pb"])["status"]["phase"],
        "Active"
    );

    let k = |args: &[&str]| {
        let mut full = vec!["-n", "pb"];
        full.extend(args);
        s.kubectl(&full)
    };
    k(&[
        "create",
        "configmap",
        "cfg",
        "--from-literal=color=blue",
        "--from-literal=empty=",
    ]);
    let cm = get_json(&s, &["-n", "pb", "get", "cm", "cfg"]);
    assert_eq!(cm["data"], json!({"color": "blue", "empty": ""}));
    assert_eq!(cm["metadata"]["namespace"], "pb");
    assert!(
        cm["metadata"]["uid"]
            .as_str()
            .is_some_and(|u| !u.is_empty())
    );

    k(&[
        "create",
        "secret",
        "generic",
        "pw",
        "--from-literal=password=s3cr3t",
    ]);
    let secret = get_json(&s, &["-n", "pb", "get", "secret", "pw"]);
    assert_eq!(secret["type"], "Opaque");
    let password = base64::engine::general_purpose::STANDARD
        .decode(secret["data"]["password"].as_str().unwrap())
        .unwrap();
    assert_eq!(password, b"s3cr3t");

    k(&[
        "create",
        "deployment",
        "web",
        "--image=nginx",
        "--replicas=2",
        "--port=80",
    ]);
    let d = get_json(&s, &["-n", "pb", "get", "deploy", "web"]);
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(
        d["spec"]["selector"],
        json!({"matchLabels": {"app": "web"}})
    );
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "nginx");
    assert_eq!(c["name"], "nginx");
    assert_eq!(
        c["ports"],
        json!([{"containerPort": 80, "protocol": "TCP"}])
    );
    // Go's empty non-pointer fields did not block defaulting.
    assert_eq!(d["spec"]["template"]["spec"]["restartPolicy"], "Always");
    assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate");
    assert_eq!(
        d["spec"]["template"]["metadata"]["labels"],
        json!({"app": "web"})
    );
    // A pointer set to zero stays zero.
    k(&[
        "create",
        "deployment",
        "idle",
        "--image=nginx",
        "--replicas=0",
    ]);
    let idle = get_json(&s, &["-n", "pb", "get", "deploy", "idle"]);
    assert_eq!(idle["spec"]["replicas"], 0);

    k(&["create", "service", "clusterip", "x", "--tcp=80:8080"]);
    let svc = get_json(&s, &["-n", "pb", "get", "svc", "x"]);
    assert_eq!(svc["spec"]["type"], "ClusterIP");
    assert_eq!(
        svc["spec"]["ports"],
        json!([{"name": "80-8080", "port": 80, "protocol": "TCP", "targetPort": 8080}])
    );
    assert_eq!(svc["spec"]["selector"], json!({"app": "x"}));

    k(&[
        "create",
        "job",
        "once",
        "--image=busybox",
        "--",
        "echo",
        "hi",
    ]);
    let job = get_json(&s, &["-n", "pb", "get", "job", "once"]);
    let jc = &job["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(jc["image"], "busybox");
    assert_eq!(jc["command"], json!(["echo", "hi"]));
    assert_eq!(job["spec"]["template"]["spec"]["restartPolicy"], "Never");

    k(&["create", "serviceaccount", "robot"]);
    let sa = get_json(&s, &["-n", "pb", "get", "sa", "robot"]);
    assert_eq!(sa["metadata"]["name"], "robot");

    // A few more kinds through the same path.
    k(&[
        "create",
        "cronjob",
        "tick",
        "--image=busybox",
        "--schedule=*/5 * * * *",
    ]);
    k(&["create", "role", "reader", "--verb=get", "--resource=pods"]);
    k(&[
        "create",
        "rolebinding",
        "rb",
        "--role=reader",
        "--serviceaccount=pb:robot",
    ]);
    k(&["create", "quota", "q", "--hard=cpu=1,memory=1G"]);
    k(&[
        "create",
        "pdb",
        "pdb",
        "--selector=app=web",
        "--min-available=0",
    ]);
    k(&["create", "ingress", "ing", "--rule=foo.com/bar=x:80"]);
    assert_eq!(
        get_json(&s, &["-n", "pb", "get", "cronjob", "tick"])["spec"]["schedule"],
        "*/5 * * * *"
    );
    assert_eq!(
        get_json(&s, &["-n", "pb", "get", "role", "reader"])["rules"],
        json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}])
    );
    assert_eq!(
        get_json(&s, &["-n", "pb", "get", "rolebinding", "rb"])["subjects"],
        json!([{"kind": "ServiceAccount", "name": "robot", "namespace": "pb"}])
    );
    assert_eq!(
        get_json(&s, &["-n", "pb", "get", "quota", "q"])["spec"]["hard"],
        json!({"cpu": "1", "memory": "1G"})
    );
    assert_eq!(
        get_json(&s, &["-n", "pb", "get", "pdb", "pdb"])["spec"]["minAvailable"],
        0
    );
    assert_eq!(
        get_json(&s, &["-n", "pb", "get", "ingress", "ing"])["spec"]["rules"][0]["http"]["paths"]
            [0]["backend"],
        json!({"service": {"name": "x", "port": {"number": 80}}})
    );
    // An existing name is still a conflict.
    let err = s.kubectl_err(&["-n", "pb", "create", "configmap", "cfg"]);
    assert!(err.contains("configmaps \"cfg\" already exists"), "{err}");
}

/// A length-delimited protobuf field.
fn field(tag: u8, bytes: &[u8]) -> Vec<u8> {
    assert!(tag < 16 && bytes.len() < 128);
    let mut out = vec![tag << 3 | 2, bytes.len() as u8];
    out.extend_from_slice(bytes);
    out
}

/// `k8s\0` + runtime.Unknown{typeMeta{apiVersion, kind}, raw}.
fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
    let mut type_meta = field(1, api_version.as_bytes());
    type_meta.extend(field(2, kind.as_bytes()));
    let mut out = b"k8s\0".to_vec();
    out.extend(field(1, &type_meta));
    out.extend(field(2, raw));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_protobuf_gets_a_bad_request_status() {
    let s = Server::start(&["--disable-controller-manager"]);
    let client = s.client().await;
    let cms = "/api/v1/namespaces/default/configmaps";
    let post = |body: Vec<u8>| {
        http::Request::post(cms)
            .header("content-type", "application/vnd.kubernetes.protobuf")
            .body(body)
            .unwrap()
    };
    // ConfigMap{metadata{name: "ok"}, data{"a": "b"}}.
    let meta = field(1, &field(1, b"ok"));
    let mut cm = meta.clone();
    cm.extend(field(2, &[field(1, b"a"), field(2, b"b")].concat()));
    let good = envelope("v1", "ConfigMap", &cm);

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("no magic", good[4..].to_vec(), "magic"),
        ("JSON", br#"{"kind":"ConfigMap"}"#.to_vec(), "magic"),
        (
            "garbage",
            b"k8s\0\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff".to_vec(),
            "envelope",
        ),
        ("truncated", good[..good.len() - 2].to_vec(), "envelope"),
        (
            "wrong kind",
            envelope("v1", "Secret", &cm),
            "the kind in the data (Secret) does not match the expected kind (ConfigMap)",
        ),
        (
            "wrong version",
            envelope("apps/v1", "ConfigMap", &cm),
            "does not match the expected API version (v1)",
        ),
        (
            "bad object",
            envelope("v1", "ConfigMap", &[0x0a, 0x05, 0x0a, 0x09]),
            "cannot be handled as protobuf",
        ),
        (
            "metadata as a number",
            envelope("v1", "ConfigMap", &[0x08, 0x01]),
            "metadata: expected a message",
        ),
    ];
    for (what, body, message) in cases {
        match client.request_text(post(body)).await {
            Err(kube::Error::Api(e)) => {
                assert_eq!(
                    (e.code, e.reason.as_str()),
                    (400, "BadRequest"),
                    "{what}: {e:?}"
                );
                assert!(e.message.contains(message), "{what}: {}", e.message);
            }
            other => panic!("{what}: expected a 400 Status, got {other:?}"),
        }
    }
    // Nothing was stored; the well-formed body is.
    let err = s.kubectl_err(&["get", "cm", "ok"]);
    assert!(err.contains("NotFound"), "{err}");
    let created: Value =
        serde_json::from_str(&client.request_text(post(good)).await.unwrap()).unwrap();
    assert_eq!(created["data"], json!({"a": "b"}));
    assert_eq!(created["metadata"]["name"], "ok");
}

/// Go clients (kube-scheduler, `kubectl drain`) send subresource bodies as protobuf too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_binding_and_eviction() {
    let s = Server::start(&["--disable-controller-manager"]);
    let client = s.client().await;
    for name in ["bound", "evicted"] {
        let pod = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]}});
        let req = http::Request::post("/api/v1/namespaces/default/pods")
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&pod).unwrap())
            .unwrap();
        client.request_text(req).await.unwrap();
    }
    // Binding{metadata{name}, target: ObjectReference{kind=1, name=3}}.
    let mut binding = field(1, &field(1, b"bound"));
    binding.extend(field(2, &[field(1, b"Node"), field(3, b"node-1")].concat()));
    let req = http::Request::post("/api/v1/namespaces/default/pods/bound/binding")
        .header("content-type", "application/vnd.kubernetes.protobuf")
        .body(envelope("v1", "Binding", &binding))
        .unwrap();
    client.request_text(req).await.unwrap();
    let pod: Value = serde_json::from_str(
        &client
            .request_text(
                http::Request::get("/api/v1/namespaces/default/pods/bound")
                    .body(Vec::new())
                    .unwrap(),
            )
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(pod["spec"]["nodeName"], "node-1");
    // Eviction{metadata{name}}.
    let eviction = field(1, &field(1, b"evicted"));
    let req = http::Request::post("/api/v1/namespaces/default/pods/evicted/eviction")
        .header("content-type", "application/vnd.kubernetes.protobuf")
        .body(envelope("policy/v1", "Eviction", &eviction))
        .unwrap();
    client.request_text(req).await.unwrap();
    let get = http::Request::get("/api/v1/namespaces/default/pods/evicted")
        .body(Vec::new())
        .unwrap();
    match client.request_text(get).await {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 404, "evicted (unbound) pod is gone"),
        Ok(text) => assert!(
            text.contains("deletionTimestamp"),
            "eviction started the deletion"
        ),
        Err(e) => panic!("{e}"),
    }
}
