//! Black-box tests of the OpenAPI documents (`/openapi/v2`, `/openapi/v3`): `kubectl explain`
//! and `kubectl apply` validation with the real kubectl 1.33 and 1.27, and the raw documents.

use crate::common;

use common::{KUBECTL_127, KUBECTL_133, Server, manifest, ok};
use serde_json::Value;

/// Resident set size of a process, in KiB (from `ps`, as an operator would read it).
fn rss_kib(pid: u32) -> u64 {
    let out = std::process::Command::new("ps")
        .args(["-o", "rss=", "-p", &pid.to_string()])
        .output()
        .expect("run ps");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("ps prints the RSS")
}

#[test]
fn kubectl_explain_shows_upstream_descriptions_and_types() {
    let s = Server::start(&["--disable-controller-manager"]);
    let idle = rss_kib(s.pid());
    for bin in [KUBECTL_133, KUBECTL_127] {
        let explain = |args: &[&str]| {
            let mut all = vec!["explain"];
            all.extend_from_slice(args);
            ok(s.kubectl_with(bin, &all), &all)
        };
        let pods = explain(&["pods"]);
        for want in [
            "KIND:",
            "Pod",
            "VERSION:",
            "v1",
            "DESCRIPTION:",
            "Pod is a collection of containers that can run on a host.",
            "FIELDS:",
            "apiVersion\t<string>",
            "spec\t<PodSpec>",
        ] {
            assert!(pods.contains(want), "{bin}: {want:?} missing in\n{pods}");
        }
        let containers = explain(&["pods.spec.containers"]);
        for want in [
            "containers <[]Container>",
            "List of containers belonging to the pod.",
            "image\t<string>",
            "name\t<string> -required-",
            "ports\t<[]ContainerPort>",
        ] {
            assert!(
                containers.contains(want),
                "{bin}: {want:?} missing in\n{containers}"
            );
        }
        let replicas = explain(&["deployment.spec.replicas"]);
        assert!(replicas.contains("replicas <integer>"), "{bin}: {replicas}");
        assert!(replicas.contains("Number of desired pods."), "{replicas}");
        let strategy = explain(&["deployment.spec.strategy", "--recursive"]);
        for want in [
            "GROUP:      apps",
            "strategy <DeploymentStrategy>",
            "rollingUpdate\t<RollingUpdateDeployment>",
            "maxSurge\t<IntOrString>",
            "type\t<string>",
        ] {
            assert!(
                strategy.contains(want),
                "{bin}: {want:?} missing in\n{strategy}"
            );
        }
        let svc = explain(&["svc", "--api-version=v1"]);
        assert!(svc.contains("KIND:       Service"), "{bin}: {svc}");
        assert!(
            svc.contains("Service is a named abstraction of software service"),
            "{svc}"
        );
    }
    // kubectl 1.27 can still render from the Swagger 2.0 document (served as protobuf).
    let args = [
        "explain",
        "pods.spec.containers",
        "--output=plaintext-openapiv2",
    ];
    let v2 = ok(s.kubectl_with(KUBECTL_127, &args), &args);
    for want in [
        "RESOURCE: containers <[]Object>",
        "List of containers belonging to the pod.",
        "image\t<string>",
        "name\t<string> -required-",
    ] {
        assert!(v2.contains(want), "{want:?} missing in\n{v2}");
    }
    let args = [
        "explain",
        "deploy.spec.strategy",
        "--recursive",
        "--output=plaintext-openapiv2",
    ];
    let v2 = ok(s.kubectl_with(KUBECTL_127, &args), &args);
    assert!(v2.contains("maxSurge\t<string>"), "{v2}");

    let after = rss_kib(s.pid());
    eprintln!("server RSS: idle {idle} KiB, after explain {after} KiB");
    assert!(after < 64 * 1024, "RSS {after} KiB after explain");
}

const GOOD: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: a
        image: localhost/a:1
        env: [{name: FOO, value: "1"}, {name: BAR, value: "2"}]
      - name: b
        image: localhost/b:1
"#;

/// `GOOD` with container `b` and env `FOO` removed.
const SHRUNK: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: a
        image: localhost/a:2
        env: [{name: BAR, value: "2"}]
"#;

const UNKNOWN_FIELD: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: bad}
data: {a: b}
bogus: 1
"#;

#[test]
fn kubectl_apply_validates_and_patches_with_both_versions() {
    let s = Server::start(&["--disable-controller-manager"]);
    let (_d1, good) = manifest(GOOD);
    let (_d2, shrunk) = manifest(SHRUNK);
    let (_d3, bad) = manifest(UNKNOWN_FIELD);
    let (_d4, cm) = manifest("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: made}\n");
    let (good, shrunk, bad, cm) = (
        good.to_str().unwrap(),
        shrunk.to_str().unwrap(),
        bad.to_str().unwrap(),
        cm.to_str().unwrap(),
    );
    for (bin, ns) in [(KUBECTL_133, "new"), (KUBECTL_127, "old")] {
        let k = |args: &[&str]| ok(s.kubectl_with(bin, args), args);
        k(&["create", "namespace", ns]);
        let out = k(&["-n", ns, "apply", "--validate=strict", "-f", good]);
        assert!(out.contains("deployment.apps/web created"), "{bin}: {out}");

        let args = ["-n", ns, "apply", "--validate=strict", "-f", bad];
        let out = s.kubectl_with(bin, &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bin}: unknown field accepted");
        assert!(
            err.contains(r#"strict decoding error: unknown field "bogus""#),
            "{bin}: {err}"
        );

        // Removing a container and an env var takes them away: kubectl computes the strategic
        // merge patch from the schemas' patch extensions (merge by name, `$patch: delete`).
        let out = k(&["-n", ns, "apply", "-f", shrunk]);
        assert!(
            out.contains("deployment.apps/web configured"),
            "{bin}: {out}"
        );
        let containers = k(&[
            "-n",
            ns,
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.template.spec.containers[*].name}/{.spec.template.spec.containers[0].env[*].name}/{.spec.replicas}",
        ]);
        assert_eq!(containers, "a/BAR/2", "{bin}");

        let out = k(&["-n", ns, "create", "-f", cm]);
        assert!(out.contains("configmap/made created"), "{bin}: {out}");
    }
}

#[test]
fn raw_documents_list_every_group_version_and_definition() {
    let s = Server::start(&["--disable-controller-manager"]);
    let raw = |path: &str| -> Value {
        let args = ["get", "--raw", path];
        serde_json::from_str(&ok(s.kubectl_with(KUBECTL_133, &args), &args)).unwrap()
    };
    let v2 = raw("/openapi/v2");
    assert_eq!(v2["swagger"], "2.0");
    let pod = &v2["definitions"]["io.k8s.api.core.v1.Pod"];
    assert_eq!(pod["x-kubernetes-group-version-kind"][0]["kind"], "Pod");
    assert_eq!(
        pod["properties"]["spec"]["$ref"],
        "#/definitions/io.k8s.api.core.v1.PodSpec"
    );
    assert!(
        v2["definitions"]
            .get("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")
            .is_some()
    );

    let index = raw("/openapi/v3");
    let listed: Vec<&String> = index["paths"].as_object().unwrap().keys().collect();
    let versions = ok(
        s.kubectl_with(KUBECTL_133, &["api-versions"]),
        &["api-versions"],
    );
    let mut served = 0;
    for gv in versions.lines() {
        let key = if gv.contains('/') {
            format!("apis/{gv}")
        } else {
            format!("api/{gv}")
        };
        assert!(listed.contains(&&key), "{key} not in {listed:?}");
        served += 1;
    }
    assert_eq!(listed.len(), served, "{listed:?}");
    let apps_url = index["paths"]["apis/apps/v1"]["serverRelativeURL"]
        .as_str()
        .unwrap();
    assert!(apps_url.starts_with("/openapi/v3/apis/apps/v1?hash="));
    let apps = raw(apps_url);
    let deployment = &apps["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"];
    assert_eq!(
        deployment["properties"]["spec"]["allOf"][0]["$ref"],
        "#/components/schemas/io.k8s.api.apps.v1.DeploymentSpec"
    );
}
