//! The registry and discovery documents against upstream Kubernetes v1.33 values.

use std::collections::HashSet;

use k8s_openapi::api::{apps::v1 as apps, core::v1 as core};
use rkube_api::discovery::{self, AggregatedVersion, CONTENT_TYPE_AGGREGATED_V2, DiscoveryFormat};
use rkube_api::{Scope, Verb, registry};
use serde_json::{Value, json};

const CRUD: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

fn names<'a>(rs: impl IntoIterator<Item = &'a rkube_api::ResourceInfo>) -> Vec<String> {
    rs.into_iter()
        .map(|r| format!("{}.{}.{}", r.plural, r.version, r.group))
        .collect()
}

#[test]
fn every_resource_round_trips_by_gvk_and_by_plural() {
    let reg = registry();
    assert_eq!(reg.resources().len(), 48);
    for r in reg.resources() {
        let by_gvr = reg.get(r.group, r.version, r.plural).unwrap();
        assert!(std::ptr::eq(by_gvr, r), "{}", r.plural);
        let by_gvk = reg.by_kind(r.group, r.version, r.kind).unwrap();
        assert!(std::ptr::eq(by_gvk, r), "{}", r.kind);
        assert_eq!(r.singular, r.kind.to_lowercase());
        // The plural resolves (qualified, so the group is unambiguous) to this resource.
        let qualified = if r.group.is_empty() {
            r.plural.to_owned()
        } else {
            format!("{}.{}.{}", r.plural, r.version, r.group)
        };
        let resolved = reg.resolve(&qualified);
        assert!(resolved.iter().any(|x| std::ptr::eq(*x, r)), "{qualified}");
        // Every verb list and subresource list is sorted, as upstream's.
        let verbs: Vec<_> = r.verbs.iter().map(|v| v.as_str()).collect();
        let mut sorted = verbs.clone();
        sorted.sort_unstable();
        assert_eq!(verbs, sorted, "{}", r.plural);
        let subs: Vec<_> = r.subresources.iter().map(|s| s.name).collect();
        let mut sorted = subs.clone();
        sorted.sort_unstable();
        assert_eq!(subs, sorted, "{}", r.plural);
    }
}

#[test]
fn no_duplicate_plurals_or_kinds_within_a_group_version() {
    let mut plurals = HashSet::new();
    let mut kinds = HashSet::new();
    for r in registry().resources() {
        assert!(
            plurals.insert((r.group, r.version, r.plural)),
            "{}",
            r.plural
        );
        assert!(kinds.insert((r.group, r.version, r.kind)), "{}", r.kind);
    }
}

#[test]
fn a_name_never_means_two_different_resources() {
    // Across groups the same plural may appear (core `events` and `events.k8s.io` `events`),
    // but a short name or singular must never stand for two different plurals.
    let reg = registry();
    for r in reg.resources() {
        for name in r.short_names.iter().copied().chain([r.singular.as_str()]) {
            let plurals: HashSet<_> = reg.resolve(name).iter().map(|x| x.plural).collect();
            assert_eq!(plurals.len(), 1, "{name} → {plurals:?}");
        }
    }
}

#[test]
fn kubectl_style_resolution() {
    let reg = registry();
    let one = |arg: &str| {
        let r = reg
            .resolve_one(arg)
            .unwrap_or_else(|| panic!("{arg} unresolved"));
        format!("{}.{}.{}", r.plural, r.version, r.group)
    };
    assert_eq!(one("po"), "pods.v1.");
    assert_eq!(one("pod"), "pods.v1.");
    assert_eq!(one("pods"), "pods.v1.");
    assert_eq!(one("Pods"), "pods.v1.");
    assert_eq!(one("PO"), "pods.v1.");
    assert_eq!(one("Pod"), "pods.v1.");
    assert_eq!(one("deploy"), "deployments.v1.apps");
    assert_eq!(one("deploy.apps"), "deployments.v1.apps");
    assert_eq!(one("deployments.apps"), "deployments.v1.apps");
    assert_eq!(one("deployments.v1.apps"), "deployments.v1.apps");
    assert_eq!(one("Deployment"), "deployments.v1.apps");
    assert_eq!(one("svc"), "services.v1.");
    assert_eq!(one("ns"), "namespaces.v1.");
    assert_eq!(one("no"), "nodes.v1.");
    assert_eq!(one("cm"), "configmaps.v1.");
    assert_eq!(one("ep"), "endpoints.v1.");
    assert_eq!(one("endpoints"), "endpoints.v1.");
    assert_eq!(one("sa"), "serviceaccounts.v1.");
    assert_eq!(one("pv"), "persistentvolumes.v1.");
    assert_eq!(one("pvc"), "persistentvolumeclaims.v1.");
    assert_eq!(one("limits"), "limitranges.v1.");
    assert_eq!(one("quota"), "resourcequotas.v1.");
    assert_eq!(one("rc"), "replicationcontrollers.v1.");
    assert_eq!(one("cs"), "componentstatuses.v1.");
    assert_eq!(one("rs"), "replicasets.v1.apps");
    assert_eq!(one("sts"), "statefulsets.v1.apps");
    assert_eq!(one("ds"), "daemonsets.v1.apps");
    assert_eq!(one("cj"), "cronjobs.v1.batch");
    assert_eq!(one("job"), "jobs.v1.batch");
    assert_eq!(one("ing"), "ingresses.v1.networking.k8s.io");
    assert_eq!(
        one("ingresses.networking.k8s.io"),
        "ingresses.v1.networking.k8s.io"
    );
    assert_eq!(one("netpol"), "networkpolicies.v1.networking.k8s.io");
    assert_eq!(one("pdb"), "poddisruptionbudgets.v1.policy");
    assert_eq!(one("pc"), "priorityclasses.v1.scheduling.k8s.io");
    assert_eq!(one("sc"), "storageclasses.v1.storage.k8s.io");
    assert_eq!(
        one("csr"),
        "certificatesigningrequests.v1.certificates.k8s.io"
    );
    assert_eq!(one("lease"), "leases.v1.coordination.k8s.io");
    assert_eq!(one("endpointslices"), "endpointslices.v1.discovery.k8s.io");
    assert_eq!(
        one("clusterrolebindings"),
        "clusterrolebindings.v1.rbac.authorization.k8s.io"
    );
    // Preferred version first; an explicit version picks it.
    assert_eq!(one("hpa"), "horizontalpodautoscalers.v2.autoscaling");
    assert_eq!(
        names(reg.resolve("hpa")),
        [
            "horizontalpodautoscalers.v2.autoscaling",
            "horizontalpodautoscalers.v1.autoscaling"
        ]
    );
    assert_eq!(
        one("hpa.v1.autoscaling"),
        "horizontalpodautoscalers.v1.autoscaling"
    );
    // Core wins an ambiguous name, as in kubectl; the group picks the other.
    assert_eq!(
        names(reg.resolve("ev")),
        ["events.v1.", "events.v1.events.k8s.io"]
    );
    assert_eq!(one("events"), "events.v1.");
    assert_eq!(one("events.events.k8s.io"), "events.v1.events.k8s.io");
    assert_eq!(one("ev.events.k8s.io"), "events.v1.events.k8s.io");
    // Misses.
    assert!(reg.resolve("deploy.batch").is_empty());
    assert!(reg.resolve("deployments.v2.apps").is_empty());
    assert!(reg.resolve("nosuchthing").is_empty());
    assert!(reg.resolve("").is_empty());
}

#[test]
fn lookups_by_type_kind_and_subresource() {
    let reg = registry();
    let deploy = reg.for_type::<apps::Deployment>().unwrap();
    assert_eq!(deploy.plural, "deployments");
    assert_eq!(deploy.list_kind, Some("DeploymentList"));
    assert_eq!(deploy.api_version(), "apps/v1");
    assert_eq!(reg.by_kind("", "v1", "Pod").unwrap().plural, "pods");
    assert!(
        reg.by_kind("", "v1", "pod").is_none(),
        "kinds are case-sensitive"
    );
    assert!(
        reg.get("", "v1", "Pods").is_none(),
        "URL plurals are case-sensitive"
    );
    assert!(reg.get("apps", "v1", "pods").is_none());

    let (pods, log) = reg.subresource("", "v1", "pods", "log").unwrap();
    assert_eq!(pods.kind, "Pod");
    assert_eq!((log.kind, log.verbs), ("Pod", &[Verb::Get][..]));
    let (_, eviction) = reg.subresource("", "v1", "pods", "eviction").unwrap();
    assert_eq!(
        (
            eviction.group,
            eviction.version,
            eviction.kind,
            eviction.verbs
        ),
        ("policy", "v1", "Eviction", &[Verb::Create][..])
    );
    let (_, token) = reg
        .subresource("", "v1", "serviceaccounts", "token")
        .unwrap();
    assert_eq!(
        (token.group, token.version, token.kind, token.verbs),
        (
            "authentication.k8s.io",
            "v1",
            "TokenRequest",
            &[Verb::Create][..]
        )
    );
    let (_, binding) = reg.subresource("", "v1", "pods", "binding").unwrap();
    assert_eq!((binding.group, binding.kind), ("", "Binding"));
    let (_, exec) = reg.subresource("", "v1", "pods", "exec").unwrap();
    assert_eq!(
        (exec.kind, exec.verbs),
        ("PodExecOptions", &[Verb::Create, Verb::Get][..])
    );
    for plural in ["deployments", "replicasets", "statefulsets"] {
        let (_, scale) = reg.subresource("apps", "v1", plural, "scale").unwrap();
        assert_eq!(
            (scale.group, scale.version, scale.kind),
            ("autoscaling", "v1", "Scale")
        );
        assert_eq!(scale.verbs, [Verb::Get, Verb::Patch, Verb::Update]);
    }
    assert!(
        reg.subresource("apps", "v1", "daemonsets", "scale")
            .is_none()
    );
    assert!(reg.subresource("", "v1", "pods", "nosuch").is_none());

    let pods_subs: Vec<_> = pods.subresources.iter().map(|s| s.name).collect();
    assert_eq!(
        pods_subs,
        [
            "attach",
            "binding",
            "ephemeralcontainers",
            "eviction",
            "exec",
            "log",
            "portforward",
            "proxy",
            "resize",
            "status"
        ]
    );
}

/// (group, version, plural, namespaced, verbs, short names, categories, subresources) for
/// every resource, as upstream v1.33 serves them.
type Row = (
    &'static str,
    &'static str,
    &'static str,
    bool,
    &'static [&'static str],
    &'static [&'static str],
    &'static [&'static str],
    &'static [&'static str],
);

const C: &[&str] = &["create"];
const ALL: &[&str] = &["all"];
const ST: &[&str] = &["status"];
const NONE: &[&str] = &[];
const NS_VERBS: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];
const NS: bool = true;
const CL: bool = false;

#[rustfmt::skip]
const UPSTREAM: &[Row] = &[
    ("", "v1", "bindings", NS, C, NONE, NONE, NONE),
    ("", "v1", "componentstatuses", CL, &["get", "list"], &["cs"], NONE, NONE),
    ("", "v1", "configmaps", NS, &CRUD, &["cm"], NONE, NONE),
    ("", "v1", "endpoints", NS, &CRUD, &["ep"], NONE, NONE),
    ("", "v1", "events", NS, &CRUD, &["ev"], NONE, NONE),
    ("", "v1", "limitranges", NS, &CRUD, &["limits"], NONE, NONE),
    ("", "v1", "namespaces", CL, NS_VERBS, &["ns"], NONE, &["finalize", "status"]),
    ("", "v1", "nodes", CL, &CRUD, &["no"], NONE, &["proxy", "status"]),
    ("", "v1", "persistentvolumeclaims", NS, &CRUD, &["pvc"], NONE, ST),
    ("", "v1", "persistentvolumes", CL, &CRUD, &["pv"], NONE, ST),
    ("", "v1", "pods", NS, &CRUD, &["po"], ALL, &["attach", "binding", "ephemeralcontainers", "eviction", "exec", "log", "portforward", "proxy", "resize", "status"]),
    ("", "v1", "podtemplates", NS, &CRUD, NONE, NONE, NONE),
    ("", "v1", "replicationcontrollers", NS, &CRUD, &["rc"], ALL, &["scale", "status"]),
    ("", "v1", "resourcequotas", NS, &CRUD, &["quota"], NONE, ST),
    ("", "v1", "secrets", NS, &CRUD, NONE, NONE, NONE),
    ("", "v1", "serviceaccounts", NS, &CRUD, &["sa"], NONE, &["token"]),
    ("", "v1", "services", NS, &CRUD, &["svc"], ALL, &["proxy", "status"]),
    ("apps", "v1", "controllerrevisions", NS, &CRUD, NONE, NONE, NONE),
    ("apps", "v1", "daemonsets", NS, &CRUD, &["ds"], ALL, ST),
    ("apps", "v1", "deployments", NS, &CRUD, &["deploy"], ALL, &["scale", "status"]),
    ("apps", "v1", "replicasets", NS, &CRUD, &["rs"], ALL, &["scale", "status"]),
    ("apps", "v1", "statefulsets", NS, &CRUD, &["sts"], ALL, &["scale", "status"]),
    ("events.k8s.io", "v1", "events", NS, &CRUD, &["ev"], NONE, NONE),
    ("authentication.k8s.io", "v1", "selfsubjectreviews", CL, C, NONE, NONE, NONE),
    ("authentication.k8s.io", "v1", "tokenreviews", CL, C, NONE, NONE, NONE),
    ("authorization.k8s.io", "v1", "selfsubjectaccessreviews", CL, C, NONE, NONE, NONE),
    ("authorization.k8s.io", "v1", "selfsubjectrulesreviews", CL, C, NONE, NONE, NONE),
    ("authorization.k8s.io", "v1", "subjectaccessreviews", CL, C, NONE, NONE, NONE),
    ("autoscaling", "v2", "horizontalpodautoscalers", NS, &CRUD, &["hpa"], ALL, ST),
    ("autoscaling", "v1", "horizontalpodautoscalers", NS, &CRUD, &["hpa"], ALL, ST),
    ("batch", "v1", "cronjobs", NS, &CRUD, &["cj"], ALL, ST),
    ("batch", "v1", "jobs", NS, &CRUD, NONE, ALL, ST),
    ("certificates.k8s.io", "v1", "certificatesigningrequests", CL, &CRUD, &["csr"], NONE, &["approval", "status"]),
    ("networking.k8s.io", "v1", "ingressclasses", CL, &CRUD, NONE, NONE, NONE),
    ("networking.k8s.io", "v1", "ingresses", NS, &CRUD, &["ing"], NONE, ST),
    ("networking.k8s.io", "v1", "networkpolicies", NS, &CRUD, &["netpol"], NONE, NONE),
    ("policy", "v1", "poddisruptionbudgets", NS, &CRUD, &["pdb"], NONE, ST),
    ("rbac.authorization.k8s.io", "v1", "clusterrolebindings", CL, &CRUD, NONE, NONE, NONE),
    ("rbac.authorization.k8s.io", "v1", "clusterroles", CL, &CRUD, NONE, NONE, NONE),
    ("rbac.authorization.k8s.io", "v1", "rolebindings", NS, &CRUD, NONE, NONE, NONE),
    ("rbac.authorization.k8s.io", "v1", "roles", NS, &CRUD, NONE, NONE, NONE),
    ("storage.k8s.io", "v1", "csidrivers", CL, &CRUD, NONE, NONE, NONE),
    ("storage.k8s.io", "v1", "csinodes", CL, &CRUD, NONE, NONE, NONE),
    ("storage.k8s.io", "v1", "storageclasses", CL, &CRUD, &["sc"], NONE, NONE),
    ("storage.k8s.io", "v1", "volumeattachments", CL, &CRUD, NONE, NONE, ST),
    ("scheduling.k8s.io", "v1", "priorityclasses", CL, &CRUD, &["pc"], NONE, NONE),
    ("coordination.k8s.io", "v1", "leases", NS, &CRUD, NONE, NONE, NONE),
    ("discovery.k8s.io", "v1", "endpointslices", NS, &CRUD, NONE, NONE, NONE),
];

#[test]
fn upstream_scopes_verbs_short_names_and_categories() {
    let reg = registry();
    // The table above is the whole registry, in the registry's order (group priority,
    // preferred version first, plurals alphabetically).
    let table: Vec<_> = UPSTREAM
        .iter()
        .map(|row| format!("{}.{}.{}", row.2, row.1, row.0))
        .collect();
    assert_eq!(names(reg.resources()), table);
    for &(group, version, plural, namespaced, verbs, short, categories, subs) in UPSTREAM {
        let r = reg.get(group, version, plural).unwrap();
        let scope = if namespaced {
            Scope::Namespaced
        } else {
            Scope::Cluster
        };
        assert_eq!(r.scope, scope, "{plural}");
        let got: Vec<_> = r.verbs.iter().map(|v| v.as_str()).collect();
        assert_eq!(got, verbs, "{plural}");
        assert_eq!(r.short_names, short, "{plural}");
        assert_eq!(r.categories, categories, "{plural}");
        let got: Vec<_> = r.subresources.iter().map(|s| s.name).collect();
        assert_eq!(got, subs, "{plural}");
    }

    let pods = reg.for_type::<core::Pod>().unwrap();
    let sub = |name: &str| -> (String, Vec<&str>) {
        let s = pods.subresource(name).unwrap();
        (
            s.kind.to_owned(),
            s.verbs.iter().map(|v| v.as_str()).collect(),
        )
    };
    assert_eq!(
        sub("status"),
        ("Pod".into(), vec!["get", "patch", "update"])
    );
    assert_eq!(sub("log"), ("Pod".into(), vec!["get"]));
    assert_eq!(
        sub("exec"),
        ("PodExecOptions".into(), vec!["create", "get"])
    );
    assert_eq!(
        sub("attach"),
        ("PodAttachOptions".into(), vec!["create", "get"])
    );
    assert_eq!(
        sub("portforward"),
        ("PodPortForwardOptions".into(), vec!["create", "get"])
    );
    assert_eq!(
        sub("proxy"),
        (
            "PodProxyOptions".into(),
            vec!["create", "delete", "get", "patch", "update"]
        )
    );
    assert_eq!(sub("binding"), ("Binding".into(), vec!["create"]));
    assert_eq!(
        sub("ephemeralcontainers"),
        ("Pod".into(), vec!["get", "patch", "update"])
    );
    assert_eq!(
        sub("resize"),
        ("Pod".into(), vec!["get", "patch", "update"])
    );
}

#[test]
fn groups_and_preferred_versions() {
    let reg = registry();
    let groups: Vec<_> = reg.groups().iter().map(|g| g.name).collect();
    assert_eq!(groups[0], "", "core first");
    assert_eq!(reg.group("").unwrap().preferred_version(), "v1");
    assert_eq!(reg.group("autoscaling").unwrap().versions, ["v2", "v1"]);
    assert_eq!(reg.group("autoscaling").unwrap().preferred_version(), "v2");
    assert_eq!(reg.group("apps").unwrap().preferred_version(), "v1");
    assert!(reg.group("extensions").is_none());
    assert!(reg.serves("autoscaling", "v1") && reg.serves("autoscaling", "v2"));
    assert!(!reg.serves("autoscaling", "v2beta2"));

    let doc = serde_json::to_value(discovery::api_group_list(reg)).unwrap();
    assert_eq!(doc["kind"], "APIGroupList");
    let listed: Vec<_> = doc["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    // Upstream's /apis order for these groups.
    assert_eq!(
        listed,
        [
            "apps",
            "events.k8s.io",
            "authentication.k8s.io",
            "authorization.k8s.io",
            "autoscaling",
            "batch",
            "certificates.k8s.io",
            "networking.k8s.io",
            "policy",
            "rbac.authorization.k8s.io",
            "storage.k8s.io",
            "scheduling.k8s.io",
            "coordination.k8s.io",
            "discovery.k8s.io",
        ]
    );
    let autoscaling = doc["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "autoscaling")
        .unwrap();
    assert_eq!(
        autoscaling,
        // k8s-openapi writes apiVersion and kind on nested groups too (upstream does not);
        // clients ignore them.
        &json!({
            "apiVersion": "v1",
            "kind": "APIGroup",
            "name": "autoscaling",
            "versions": [
                {"groupVersion": "autoscaling/v2", "version": "v2"},
                {"groupVersion": "autoscaling/v1", "version": "v1"},
            ],
            "preferredVersion": {"groupVersion": "autoscaling/v2", "version": "v2"},
        })
    );
    for g in doc["groups"].as_array().unwrap() {
        let preferred = &g["preferredVersion"];
        assert!(preferred.is_object(), "{g}");
        assert_eq!(preferred, &g["versions"][0], "{g}");
    }
}

fn find<'a>(list: &'a Value, key: &str, name: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|x| x[key] == name)
        .unwrap_or_else(|| panic!("{name} not in {list}"))
}

#[test]
fn resource_list_for_core_v1() {
    let doc =
        serde_json::to_value(discovery::api_resource_list(registry(), "", "v1").unwrap()).unwrap();
    assert_eq!(doc["kind"], "APIResourceList");
    assert_eq!(doc["groupVersion"], "v1");
    let resources = &doc["resources"];
    let names: Vec<_> = resources
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    // Upstream's /api/v1 names in upstream's order (pods/resize is new in 1.33).
    assert_eq!(
        names,
        [
            "bindings",
            "componentstatuses",
            "configmaps",
            "endpoints",
            "events",
            "limitranges",
            "namespaces",
            "namespaces/finalize",
            "namespaces/status",
            "nodes",
            "nodes/proxy",
            "nodes/status",
            "persistentvolumeclaims",
            "persistentvolumeclaims/status",
            "persistentvolumes",
            "persistentvolumes/status",
            "pods",
            "pods/attach",
            "pods/binding",
            "pods/ephemeralcontainers",
            "pods/eviction",
            "pods/exec",
            "pods/log",
            "pods/portforward",
            "pods/proxy",
            "pods/resize",
            "pods/status",
            "podtemplates",
            "replicationcontrollers",
            "replicationcontrollers/scale",
            "replicationcontrollers/status",
            "resourcequotas",
            "resourcequotas/status",
            "secrets",
            "serviceaccounts",
            "serviceaccounts/token",
            "services",
            "services/proxy",
            "services/status",
        ]
    );
    // Upstream's exact entries.
    assert_eq!(
        find(resources, "name", "pods"),
        &json!({
            "name": "pods",
            "singularName": "pod",
            "namespaced": true,
            "kind": "Pod",
            "verbs": CRUD,
            "shortNames": ["po"],
            "categories": ["all"],
        })
    );
    assert_eq!(
        find(resources, "name", "pods/eviction"),
        &json!({
            "name": "pods/eviction",
            "singularName": "",
            "namespaced": true,
            "group": "policy",
            "version": "v1",
            "kind": "Eviction",
            "verbs": ["create"],
        })
    );
    assert_eq!(
        find(resources, "name", "pods/status"),
        &json!({
            "name": "pods/status",
            "singularName": "",
            "namespaced": true,
            "kind": "Pod",
            "verbs": ["get", "patch", "update"],
        })
    );
    assert_eq!(
        find(resources, "name", "serviceaccounts/token"),
        &json!({
            "name": "serviceaccounts/token",
            "singularName": "",
            "namespaced": true,
            "group": "authentication.k8s.io",
            "version": "v1",
            "kind": "TokenRequest",
            "verbs": ["create"],
        })
    );
    assert_eq!(
        find(resources, "name", "nodes/proxy"),
        &json!({
            "name": "nodes/proxy",
            "singularName": "",
            "namespaced": false,
            "kind": "NodeProxyOptions",
            "verbs": ["create", "delete", "get", "patch", "update"],
        })
    );
    assert_eq!(
        find(resources, "name", "namespaces"),
        &json!({
            "name": "namespaces",
            "singularName": "namespace",
            "namespaced": false,
            "kind": "Namespace",
            "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
            "shortNames": ["ns"],
        })
    );
    assert_eq!(
        find(resources, "name", "replicationcontrollers/scale")["group"],
        "autoscaling"
    );
    assert_eq!(
        find(resources, "name", "endpoints")["singularName"],
        "endpoints"
    );
    // No apps resources leak into core.
    assert!(names.iter().all(|n| !n.starts_with("deployments")));
}

#[test]
fn resource_list_for_apps_v1_has_scale_from_autoscaling_v1() {
    let doc = serde_json::to_value(discovery::api_resource_list(registry(), "apps", "v1").unwrap())
        .unwrap();
    assert_eq!(doc["groupVersion"], "apps/v1");
    let names: Vec<_> = doc["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "controllerrevisions",
            "daemonsets",
            "daemonsets/status",
            "deployments",
            "deployments/scale",
            "deployments/status",
            "replicasets",
            "replicasets/scale",
            "replicasets/status",
            "statefulsets",
            "statefulsets/scale",
            "statefulsets/status",
        ]
    );
    assert_eq!(
        find(&doc["resources"], "name", "deployments/scale"),
        &json!({
            "name": "deployments/scale",
            "singularName": "",
            "namespaced": true,
            "group": "autoscaling",
            "version": "v1",
            "kind": "Scale",
            "verbs": ["get", "patch", "update"],
        })
    );
    assert_eq!(
        find(&doc["resources"], "name", "deployments"),
        &json!({
            "name": "deployments",
            "singularName": "deployment",
            "namespaced": true,
            "kind": "Deployment",
            "verbs": CRUD,
            "shortNames": ["deploy"],
            "categories": ["all"],
        })
    );
}

#[test]
fn aggregated_core_document() {
    assert_eq!(
        DiscoveryFormat::Aggregated(AggregatedVersion::V2).content_type(),
        CONTENT_TYPE_AGGREGATED_V2
    );
    assert_eq!(
        CONTENT_TYPE_AGGREGATED_V2,
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    );
    let doc = serde_json::to_value(discovery::aggregated_discovery(
        registry(),
        true,
        AggregatedVersion::V2,
    ))
    .unwrap();
    assert_eq!(doc["apiVersion"], "apidiscovery.k8s.io/v2");
    assert_eq!(doc["kind"], "APIGroupDiscoveryList");
    assert_eq!(doc["metadata"], json!({}));
    let items = doc["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    let core = &items[0];
    // The core group's name is empty; upstream (Go omitempty) leaves it out.
    assert_eq!(core["metadata"], json!({}));
    assert_eq!(core["versions"].as_array().unwrap().len(), 1);
    let v1 = &core["versions"][0];
    assert_eq!(v1["version"], "v1");
    assert_eq!(v1["freshness"], "Current");
    let pods = find(&v1["resources"], "resource", "pods");
    assert_eq!(pods["scope"], "Namespaced");
    assert_eq!(pods["singularResource"], "pod");
    assert_eq!(pods["shortNames"], json!(["po"]));
    assert_eq!(pods["categories"], json!(["all"]));
    assert_eq!(pods["verbs"], json!(CRUD));
    assert_eq!(
        pods["responseKind"],
        json!({"group": "", "version": "", "kind": "Pod"})
    );
    let subs = &pods["subresources"];
    assert_eq!(
        find(subs, "subresource", "status"),
        &json!({
            "subresource": "status",
            "responseKind": {"group": "", "version": "", "kind": "Pod"},
            "verbs": ["get", "patch", "update"],
        })
    );
    assert_eq!(
        find(subs, "subresource", "log"),
        &json!({
            "subresource": "log",
            "responseKind": {"group": "", "version": "", "kind": "Pod"},
            "verbs": ["get"],
        })
    );
    assert_eq!(
        find(subs, "subresource", "exec"),
        &json!({
            "subresource": "exec",
            "responseKind": {"group": "", "version": "", "kind": "PodExecOptions"},
            "verbs": ["create", "get"],
        })
    );
    assert_eq!(
        find(subs, "subresource", "eviction")["responseKind"],
        json!({"group": "policy", "version": "v1", "kind": "Eviction"})
    );
    let nodes = find(&v1["resources"], "resource", "nodes");
    assert_eq!(nodes["scope"], "Cluster");
    // Absent lists are left out, not `[]`.
    let secrets = find(&v1["resources"], "resource", "secrets");
    assert_eq!(
        secrets,
        &json!({
            "resource": "secrets",
            "responseKind": {"group": "", "version": "", "kind": "Secret"},
            "scope": "Namespaced",
            "singularResource": "secret",
            "verbs": CRUD,
        })
    );
}

#[test]
fn aggregated_groups_document() {
    for version in [AggregatedVersion::V2, AggregatedVersion::V2Beta1] {
        let doc = serde_json::to_value(discovery::aggregated_discovery(registry(), false, version))
            .unwrap();
        assert_eq!(doc["apiVersion"], version.api_version());
        assert_eq!(doc["kind"], "APIGroupDiscoveryList");
        let items = doc["items"].as_array().unwrap();
        let groups: Vec<_> = items
            .iter()
            .map(|g| g["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(groups[0], "apps");
        assert!(!groups.contains(&""), "core is served under /api only");
        let group = |name: &str| {
            items
                .iter()
                .find(|g| g["metadata"]["name"] == name)
                .unwrap()
        };
        // Versions preferred first, each Current.
        let autoscaling = group("autoscaling");
        let versions: Vec<_> = autoscaling["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["version"].as_str().unwrap())
            .collect();
        assert_eq!(versions, ["v2", "v1"]);
        assert!(
            autoscaling["versions"]
                .as_array()
                .unwrap()
                .iter()
                .all(|v| v["freshness"] == "Current")
        );
        let apps = group("apps");
        let deployments = find(&apps["versions"][0]["resources"], "resource", "deployments");
        assert_eq!(
            deployments,
            &json!({
                "resource": "deployments",
                "responseKind": {"group": "", "version": "", "kind": "Deployment"},
                "scope": "Namespaced",
                "singularResource": "deployment",
                "verbs": CRUD,
                "shortNames": ["deploy"],
                "categories": ["all"],
                "subresources": [
                    {
                        "subresource": "scale",
                        "responseKind": {"group": "autoscaling", "version": "v1", "kind": "Scale"},
                        "verbs": ["get", "patch", "update"],
                    },
                    {
                        "subresource": "status",
                        "responseKind": {"group": "", "version": "", "kind": "Deployment"},
                        "verbs": ["get", "patch", "update"],
                    },
                ],
            })
        );
        let authz = group("authorization.k8s.io");
        let ssar = find(
            &authz["versions"][0]["resources"],
            "resource",
            "selfsubjectaccessreviews",
        );
        assert_eq!(ssar["scope"], "Cluster");
        assert_eq!(ssar["verbs"], json!(["create"]));
    }
}

#[test]
fn aggregated_document_parses_as_typed() {
    let json = serde_json::to_string(&discovery::aggregated_discovery(
        registry(),
        true,
        AggregatedVersion::V2,
    ))
    .unwrap();
    let back: discovery::APIGroupDiscoveryList = serde_json::from_str(&json).unwrap();
    assert_eq!(back.items.len(), 1);
    assert_eq!(back.items[0].metadata.name, None);
    let pods = back.items[0].versions[0]
        .resources
        .iter()
        .find(|r| r.resource == "pods")
        .unwrap();
    assert_eq!(pods.scope, discovery::ResourceScope::Namespaced);
    assert_eq!(pods.short_names, ["po"]);
}

#[test]
fn api_versions_advertises_the_server_address() {
    let doc = serde_json::to_value(discovery::api_versions(registry(), "127.0.0.1:6443")).unwrap();
    assert_eq!(doc["versions"], json!(["v1"]));
    assert_eq!(
        doc["serverAddressByClientCIDRs"],
        json!([{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}])
    );
}
