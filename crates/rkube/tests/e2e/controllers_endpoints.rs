//! The endpoints and endpointslice controllers over simulated pods, through kubectl 1.33:
//! addresses follow pod IPs and readiness, named targetPorts resolve per pod, deleted pods
//! drop out, publishNotReadyAddresses, slices carry conditions/zone/owner, and Services
//! without a selector are left alone.

use crate::common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Server, Sim, eventually, json, manifest};
use serde_json::Value;

const T: Duration = Duration::from_secs(30);

fn get(server: &Server, args: &[&str]) -> Option<Value> {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend(["-o", "json"]);
    let out = server.kubectl_with(common::KUBECTL_133, &all);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

fn apply(server: &Server, yaml: &str) {
    let (_dir, path) = manifest(yaml);
    server.kubectl(&["apply", "-f", path.to_str().unwrap()]);
}

fn web_pod(name: &str, http_port: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{app: web}}}}\nspec:\n  containers:\n  - name: c\n    image: nginx\n    ports: [{{name: http, containerPort: {http_port}}}]\n"
    )
}

fn pod_ip(server: &Server, name: &str) -> String {
    eventually(&format!("{name} has an IP"), T, || {
        let p = get(server, &["pod", name])?;
        let ip = p["status"]["podIP"].as_str()?.to_string();
        (p["status"]["phase"] == "Running").then_some(ip)
    })
}

/// (ready ips, not-ready ips, ports) per subset.
fn subsets(ep: &Value) -> Vec<(BTreeSet<String>, BTreeSet<String>, BTreeSet<i64>)> {
    let ips = |v: &Value| -> BTreeSet<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(|x| x["ip"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    ep["subsets"]
        .as_array()
        .map(|s| {
            s.iter()
                .map(|s| {
                    (
                        ips(&s["addresses"]),
                        ips(&s["notReadyAddresses"]),
                        s["ports"]
                            .as_array()
                            .map(|p| p.iter().map(|p| p["port"].as_i64().unwrap()).collect())
                            .unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Every endpoint of the service's slices: ip -> (ready, serving, terminating, ports).
fn slice_endpoints(server: &Server, svc: &str) -> Vec<(String, bool, bool, bool, Vec<i64>)> {
    let list = json(
        server,
        &[
            "get",
            "endpointslices",
            "-l",
            &format!("kubernetes.io/service-name={svc}"),
        ],
    );
    let mut out = Vec::new();
    for s in list["items"].as_array().unwrap() {
        let ports: Vec<i64> = s["ports"]
            .as_array()
            .map(|p| p.iter().map(|p| p["port"].as_i64().unwrap()).collect())
            .unwrap_or_default();
        for e in s["endpoints"].as_array().into_iter().flatten() {
            let c = &e["conditions"];
            out.push((
                e["addresses"][0].as_str().unwrap().to_string(),
                c["ready"].as_bool().unwrap(),
                c["serving"].as_bool().unwrap(),
                c["terminating"].as_bool().unwrap_or(false),
                ports.clone(),
            ));
        }
    }
    out.sort();
    out
}

#[test]
fn endpoints_and_slices_follow_pods_readiness_and_ports() {
    let server = Server::start(&[]);
    let mut sim = Sim::start(
        &server,
        &[
            "--nodes",
            "2",
            "--labels",
            "topology.kubernetes.io/zone=zone-a",
        ],
    );
    sim.wait_for_log("registered 2 nodes", Duration::from_secs(60));
    apply(&server, &web_pod("web-1", 8080));
    apply(&server, &web_pod("web-2", 8080));
    apply(&server, &web_pod("web-3", 9090));
    apply(
        &server,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: other, labels: {app: other}}\nspec:\n  containers: [{name: c, image: nginx}]\n",
    );
    let (ip1, ip2, ip3) = (
        pod_ip(&server, "web-1"),
        pod_ip(&server, "web-2"),
        pod_ip(&server, "web-3"),
    );
    apply(
        &server,
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, labels: {team: a}}\nspec:\n  selector: {app: web}\n  ports:\n  - {name: http, port: 80, targetPort: http}\n  - {name: admin, port: 81, targetPort: 7000}\n",
    );
    let all = |v: &[&String]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    // Named port http resolves to 8080 on two pods and 9090 on the third: two subsets.
    let ep = eventually("endpoints with three addresses", T, || {
        let ep = get(&server, &["endpoints", "web"])?;
        (subsets(&ep).len() == 3).then_some(ep)
    });
    let s = subsets(&ep);
    assert!(
        s.contains(&(all(&[&ip1, &ip2]), BTreeSet::new(), [8080].into())),
        "{s:?}"
    );
    assert!(
        s.contains(&(all(&[&ip3]), BTreeSet::new(), [9090].into())),
        "{s:?}"
    );
    assert!(
        s.contains(&(all(&[&ip1, &ip2, &ip3]), BTreeSet::new(), [7000].into())),
        "{s:?}"
    );
    assert_eq!(
        ep["metadata"]["labels"]["endpointslice.kubernetes.io/skip-mirror"],
        "true"
    );
    assert_eq!(ep["metadata"]["labels"]["team"], "a");
    assert!(
        ep["metadata"]["annotations"]["endpoints.kubernetes.io/last-change-trigger-time"]
            .is_string()
    );
    let addr = ep["subsets"][0]["addresses"][0].clone();
    assert_eq!(addr["targetRef"]["kind"], "Pod");
    assert!(addr["nodeName"].is_string());
    let table = server.kubectl(&["get", "endpoints", "web"]);
    assert!(table.contains(&ip1), "{table}");

    // Slices: one per port set, owned by the Service, with conditions and the node's zone.
    let eps = eventually("slices with every endpoint", T, || {
        let e = slice_endpoints(&server, "web");
        (e.len() == 3).then_some(e)
    });
    assert!(
        eps.contains(&(ip3.clone(), true, true, false, vec![9090, 7000])),
        "{eps:?}"
    );
    assert!(
        eps.iter().any(|e| e.0 == ip1 && e.4 == vec![8080, 7000]),
        "{eps:?}"
    );
    let slices = json(
        &server,
        &[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=web",
        ],
    );
    for s in slices["items"].as_array().unwrap() {
        assert!(s["metadata"]["name"].as_str().unwrap().starts_with("web-"));
        assert_eq!(
            s["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"],
            "endpointslice-controller.k8s.io"
        );
        assert_eq!(s["metadata"]["ownerReferences"][0]["kind"], "Service");
        assert_eq!(s["addressType"], "IPv4");
        assert_eq!(s["endpoints"][0]["zone"], "zone-a");
        assert_eq!(s["endpoints"][0]["targetRef"]["kind"], "Pod");
    }
    let table = server.kubectl(&["get", "endpointslices"]);
    assert!(table.contains("web-") && table.contains("IPv4"), "{table}");

    // web-2 turns not ready: notReadyAddresses, and ready=false in its slice.
    server.kubectl(&[
        "patch",
        "pod",
        "web-2",
        "--subresource=status",
        "--type=strategic",
        "-p",
        r#"{"status":{"conditions":[{"type":"Ready","status":"False"}]}}"#,
    ]);
    eventually("web-2 not ready in endpoints", T, || {
        let s = subsets(&get(&server, &["endpoints", "web"])?);
        s.contains(&(all(&[&ip1]), all(&[&ip2]), [8080].into()))
            .then_some(())
    });
    eventually("web-2 not ready in slices", T, || {
        let e = slice_endpoints(&server, "web");
        e.iter().any(|e| e.0 == ip2 && !e.1 && !e.2).then_some(())
    });
    // publishNotReadyAddresses: everything is an address again.
    server.kubectl(&[
        "patch",
        "service",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"publishNotReadyAddresses":true}}"#,
    ]);
    eventually("not-ready pod published", T, || {
        let s = subsets(&get(&server, &["endpoints", "web"])?);
        s.contains(&(all(&[&ip1, &ip2]), BTreeSet::new(), [8080].into()))
            .then_some(())
    });
    eventually("not-ready pod ready in slices", T, || {
        let e = slice_endpoints(&server, "web");
        e.iter().any(|e| e.0 == ip2 && e.1).then_some(())
    });

    // Deleting a pod removes its address.
    server.kubectl(&["delete", "pod", "web-1", "--wait=true"]);
    eventually("web-1 gone from endpoints", T, || {
        let ep = get(&server, &["endpoints", "web"])?;
        (!ep.to_string().contains(&format!("\"{ip1}\""))).then_some(())
    });
    eventually("web-1 gone from slices", T, || {
        slice_endpoints(&server, "web")
            .iter()
            .all(|e| e.0 != ip1)
            .then_some(())
    });

    // Losing the selector removes the Endpoints and the slices.
    server.kubectl(&[
        "patch",
        "service",
        "web",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/spec/selector"}]"#,
    ]);
    eventually("endpoints deleted without selector", T, || {
        get(&server, &["endpoints", "web"]).is_none().then_some(())
    });
    eventually("slices deleted without selector", T, || {
        let l = json(
            &server,
            &[
                "get",
                "endpointslices",
                "-l",
                "kubernetes.io/service-name=web",
            ],
        );
        l["items"].as_array().unwrap().is_empty().then_some(())
    });
}

#[test]
fn services_without_selector_are_left_alone_and_deleted_services_lose_endpoints() {
    let server = Server::start(&[]);
    let mut sim = Sim::start(&server, &["--nodes", "1"]);
    sim.wait_for_log("registered 1 node", Duration::from_secs(60));
    // A selector-less Service with hand-written Endpoints: not touched.
    apply(
        &server,
        "apiVersion: v1\nkind: Service\nmetadata: {name: manual}\nspec:\n  ports: [{port: 80}]\n---\napiVersion: v1\nkind: Endpoints\nmetadata: {name: manual}\nsubsets:\n- addresses: [{ip: 192.0.2.10}]\n  ports: [{port: 80}]\n",
    );
    // A Service whose selector matches nothing: empty Endpoints and a placeholder slice.
    apply(
        &server,
        "apiVersion: v1\nkind: Service\nmetadata: {name: empty}\nspec:\n  selector: {app: nothing}\n  ports: [{port: 80}]\n",
    );
    let ep = eventually("empty endpoints", T, || {
        get(&server, &["endpoints", "empty"])
    });
    assert!(
        ep["subsets"].is_null() || ep["subsets"].as_array().unwrap().is_empty(),
        "{ep}"
    );
    let slices = eventually("placeholder slice", T, || {
        let l = json(
            &server,
            &[
                "get",
                "endpointslices",
                "-l",
                "kubernetes.io/service-name=empty",
            ],
        );
        let items = l["items"].as_array().unwrap().clone();
        (items.len() == 1).then_some(items)
    });
    assert!(
        slices[0]["endpoints"].is_null() || slices[0]["endpoints"].as_array().unwrap().is_empty()
    );
    std::thread::sleep(Duration::from_secs(2));
    let manual = get(&server, &["endpoints", "manual"]).unwrap();
    assert_eq!(manual["subsets"][0]["addresses"][0]["ip"], "192.0.2.10");
    assert!(manual["metadata"]["labels"].is_null());
    let none = json(
        &server,
        &[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=manual",
        ],
    );
    assert!(none["items"].as_array().unwrap().is_empty());

    // Deleting the Service deletes its Endpoints, and its slices (garbage collector).
    server.kubectl(&["delete", "service", "empty"]);
    eventually("endpoints of a deleted service deleted", T, || {
        get(&server, &["endpoints", "empty"])
            .is_none()
            .then_some(())
    });
    eventually("slices of a deleted service collected", T, || {
        let l = json(
            &server,
            &[
                "get",
                "endpointslices",
                "-l",
                "kubernetes.io/service-name=empty",
            ],
        );
        l["items"].as_array().unwrap().is_empty().then_some(())
    });
    // A manual Endpoints object removed by the user is not recreated for a selector-less Service.
    server.kubectl(&["delete", "endpoints", "manual"]);
    std::thread::sleep(Duration::from_secs(2));
    assert!(get(&server, &["endpoints", "manual"]).is_none());
}
