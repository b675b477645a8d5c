//! Upstream field defaults, applied to every object written (create, update, patch), the way
//! upstream's decode-time defaulting does: a field the client left out comes back with the
//! value a Kubernetes user expects (`restartPolicy: Always`, `strategy.rollingUpdate` 25%/25%,
//! `backoffLimit: 6`, …). Admission-time defaults upstream applies to pods (the
//! DefaultTolerationSeconds tolerations, the ServiceAccount name) live here too; priority is
//! resolved from PriorityClasses by [`crate::admission`].
//!
//! Only absent fields are filled; nothing the client set is changed.

use rkube_api::registry::ResourceInfo;
use serde_json::{Map, Value, json};

/// Fills in the defaults of `obj`'s kind. `creating` adds the create-only admission defaults.
pub fn apply(info: &ResourceInfo, obj: &mut Value, creating: bool) {
    let Some(top) = obj.as_object_mut() else {
        return;
    };
    match (info.group, info.plural) {
        ("", "pods") => {
            if let Some(spec) = object(top, "spec") {
                pod_spec(spec);
                pod_only(spec, creating);
            }
        }
        ("", "podtemplates") => template_at(top, &["template"]),
        ("", "replicationcontrollers") => {
            let template_labels = top
                .get("spec")
                .and_then(|s| s.pointer("/template/metadata/labels"))
                .cloned();
            if let Some(spec) = object(top, "spec") {
                or_insert(spec, "replicas", json!(1));
                if let Some(labels) = &template_labels
                    && spec.get("selector").is_none_or(empty)
                {
                    spec.insert("selector".into(), labels.clone());
                }
            }
            if let Some(labels) = template_labels {
                let meta = object(top, "metadata");
                if let Some(meta) = meta
                    && meta.get("labels").is_none_or(empty)
                {
                    meta.insert("labels".into(), labels);
                }
            }
            template_at(top, &["spec", "template"]);
        }
        ("apps", "deployments") => {
            if let Some(spec) = object(top, "spec") {
                or_insert(spec, "replicas", json!(1));
                or_insert(spec, "revisionHistoryLimit", json!(10));
                or_insert(spec, "progressDeadlineSeconds", json!(600));
                let strategy = object_or_new(spec, "strategy");
                or_insert(strategy, "type", json!("RollingUpdate"));
                if strategy.get("type") == Some(&json!("RollingUpdate")) {
                    let ru = object_or_new(strategy, "rollingUpdate");
                    or_insert(ru, "maxUnavailable", json!("25%"));
                    or_insert(ru, "maxSurge", json!("25%"));
                }
            }
            template_at(top, &["spec", "template"]);
        }
        ("apps", "replicasets") => {
            if let Some(spec) = object(top, "spec") {
                or_insert(spec, "replicas", json!(1));
            }
            template_at(top, &["spec", "template"]);
        }
        ("apps", "statefulsets") => {
            if let Some(spec) = object(top, "spec") {
                or_insert(spec, "replicas", json!(1));
                or_insert(spec, "podManagementPolicy", json!("OrderedReady"));
                or_insert(spec, "revisionHistoryLimit", json!(10));
                let strategy = object_or_new(spec, "updateStrategy");
                or_insert(strategy, "type", json!("RollingUpdate"));
                if strategy.get("type") == Some(&json!("RollingUpdate")) {
                    or_insert(strategy, "rollingUpdate", json!({"partition": 0}));
                }
                let retention = object_or_new(spec, "persistentVolumeClaimRetentionPolicy");
                or_insert(retention, "whenDeleted", json!("Retain"));
                or_insert(retention, "whenScaled", json!("Retain"));
            }
            template_at(top, &["spec", "template"]);
        }
        ("apps", "daemonsets") => {
            if let Some(spec) = object(top, "spec") {
                or_insert(spec, "revisionHistoryLimit", json!(10));
                let strategy = object_or_new(spec, "updateStrategy");
                or_insert(strategy, "type", json!("RollingUpdate"));
                if strategy.get("type") == Some(&json!("RollingUpdate")) {
                    let ru = object_or_new(strategy, "rollingUpdate");
                    or_insert(ru, "maxUnavailable", json!(1));
                    or_insert(ru, "maxSurge", json!(0));
                }
            }
            template_at(top, &["spec", "template"]);
        }
        ("batch", "jobs") => {
            if let Some(spec) = object(top, "spec") {
                job_spec(spec);
            }
            template_at(top, &["spec", "template"]);
        }
        ("batch", "cronjobs") => {
            if let Some(spec) = object(top, "spec") {
                or_insert(spec, "concurrencyPolicy", json!("Allow"));
                or_insert(spec, "suspend", json!(false));
                or_insert(spec, "successfulJobsHistoryLimit", json!(3));
                or_insert(spec, "failedJobsHistoryLimit", json!(1));
                if let Some(job) = object(spec, "jobTemplate").and_then(|t| object(t, "spec")) {
                    job_spec(job);
                    if let Some(template) = object(job, "template") {
                        pod_template(template);
                    }
                }
            }
        }
        ("", "services") => {
            if let Some(spec) = object(top, "spec") {
                service_spec(spec);
            }
        }
        ("", "namespaces") => {
            // The immutable name label upstream adds to every namespace.
            let name = top
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            if let (Some(name), Some(meta)) = (name, object(top, "metadata")) {
                let labels = object_or_new(meta, "labels");
                labels.insert("kubernetes.io/metadata.name".into(), json!(name));
            }
        }
        ("", "persistentvolumeclaims") => {
            if let Some(spec) = object(top, "spec") {
                or_insert(spec, "volumeMode", json!("Filesystem"));
            }
        }
        ("", "persistentvolumes") => {
            if let Some(spec) = object(top, "spec") {
                or_insert(spec, "volumeMode", json!("Filesystem"));
                or_insert(spec, "persistentVolumeReclaimPolicy", json!("Retain"));
            }
        }
        ("", "endpoints") => {
            for subset in array(top, "subsets") {
                if let Some(subset) = subset.as_object_mut() {
                    for port in array(subset, "ports") {
                        if let Some(port) = port.as_object_mut() {
                            or_insert(port, "protocol", json!("TCP"));
                        }
                    }
                }
            }
        }
        ("networking.k8s.io", "networkpolicies") => {
            if let Some(spec) = object(top, "spec") {
                if spec.get("policyTypes").is_none_or(empty) {
                    let mut types = vec![json!("Ingress")];
                    if spec.contains_key("egress") {
                        types.push(json!("Egress"));
                    }
                    spec.insert("policyTypes".into(), Value::Array(types));
                }
                for dir in ["ingress", "egress"] {
                    for rule in array(spec, dir) {
                        if let Some(rule) = rule.as_object_mut() {
                            for port in array(rule, "ports") {
                                if let Some(port) = port.as_object_mut() {
                                    or_insert(port, "protocol", json!("TCP"));
                                }
                            }
                        }
                    }
                }
            }
        }
        ("scheduling.k8s.io", "priorityclasses") => {
            or_insert(top, "preemptionPolicy", json!("PreemptLowerPriority"));
        }
        _ => {}
    }
}

fn job_spec(spec: &mut Map<String, Value>) {
    match (
        spec.contains_key("completions"),
        spec.contains_key("parallelism"),
    ) {
        // Neither set: a single pod to completion.
        (false, false) => {
            spec.insert("completions".into(), json!(1));
            spec.insert("parallelism".into(), json!(1));
        }
        // A work queue (completions unset) keeps completions unset.
        (_, false) => {
            spec.insert("parallelism".into(), json!(1));
        }
        _ => {}
    }
    if spec.contains_key("backoffLimitPerIndex") {
        or_insert(spec, "backoffLimit", json!(i32::MAX));
    } else {
        or_insert(spec, "backoffLimit", json!(6));
    }
    or_insert(spec, "completionMode", json!("NonIndexed"));
    or_insert(spec, "suspend", json!(false));
    if !spec.contains_key("podFailurePolicy") {
        or_insert(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
    } else {
        or_insert(spec, "podReplacementPolicy", json!("Failed"));
    }
}

fn service_spec(spec: &mut Map<String, Value>) {
    or_insert(spec, "type", json!("ClusterIP"));
    let kind = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_owned();
    or_insert(spec, "sessionAffinity", json!("None"));
    if spec.get("sessionAffinity") == Some(&json!("ClientIP")) {
        let config = object_or_new(spec, "sessionAffinityConfig");
        let client_ip = object_or_new(config, "clientIP");
        or_insert(client_ip, "timeoutSeconds", json!(10800));
    }
    for port in array(spec, "ports") {
        if let Some(port) = port.as_object_mut() {
            or_insert(port, "protocol", json!("TCP"));
            if port.get("targetPort").is_none_or(|t| t == 0 || t == "")
                && let Some(p) = port.get("port").cloned()
            {
                port.insert("targetPort".into(), p);
            }
        }
    }
    if kind != "ExternalName" {
        or_insert(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    if kind == "NodePort" || kind == "LoadBalancer" {
        or_insert(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if kind == "LoadBalancer" {
        or_insert(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
}

/// Defaults of the pod template at `path` (its spec and containers).
fn template_at(top: &mut Map<String, Value>, path: &[&str]) {
    let mut cur = top;
    for step in path {
        match object(cur, step) {
            Some(next) => cur = next,
            None => return,
        }
    }
    pod_template(cur);
}

fn pod_template(template: &mut Map<String, Value>) {
    if let Some(spec) = object(template, "spec") {
        pod_spec(spec);
    }
}

/// Defaults every pod spec gets, in pods and in templates.
fn pod_spec(spec: &mut Map<String, Value>) {
    or_insert(spec, "dnsPolicy", json!("ClusterFirst"));
    or_insert(spec, "restartPolicy", json!("Always"));
    or_insert(spec, "terminationGracePeriodSeconds", json!(30));
    or_insert(spec, "securityContext", json!({}));
    or_insert(spec, "schedulerName", json!("default-scheduler"));
    let host_network = spec.get("hostNetwork") == Some(&json!(true));
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        for c in array(spec, list) {
            if let Some(c) = c.as_object_mut() {
                container(c, host_network);
            }
        }
    }
    for volume in array(spec, "volumes") {
        if let Some(v) = volume.as_object_mut() {
            volume_source(v);
        }
    }
}

/// Defaults only pods get (not templates): upstream's pod defaulting plus the admission
/// plugins every cluster runs (ServiceAccount, Priority, DefaultTolerationSeconds).
fn pod_only(spec: &mut Map<String, Value>, creating: bool) {
    or_insert(spec, "enableServiceLinks", json!(true));
    for list in ["initContainers", "containers"] {
        for c in array(spec, list) {
            // Requests default to limits for every resource with a limit but no request.
            let limits = c.pointer("/resources/limits").and_then(Value::as_object);
            if let Some(limits) = limits.cloned()
                && let Some(res) = c.get_mut("resources").and_then(Value::as_object_mut)
            {
                let requests = object_or_new(res, "requests");
                for (k, v) in limits {
                    requests.entry(k).or_insert(v);
                }
            }
        }
    }
    if !creating {
        return;
    }
    let sa = spec
        .get("serviceAccountName")
        .or_else(|| spec.get("serviceAccount"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or("default")
        .to_owned();
    spec.insert("serviceAccountName".into(), json!(sa));
    spec.insert("serviceAccount".into(), json!(sa));
    // priority and preemptionPolicy come from the PriorityClass (`crate::admission`).
    // DefaultTolerationSeconds: tolerate a not-ready or unreachable node for 300 s.
    let tolerations = spec
        .entry("tolerations")
        .or_insert_with(|| json!([]))
        .as_array_mut();
    if let Some(tolerations) = tolerations {
        for key in [
            "node.kubernetes.io/not-ready",
            "node.kubernetes.io/unreachable",
        ] {
            let covered = tolerations.iter().any(|t| {
                let k = t.get("key").and_then(Value::as_str);
                let effect = t.get("effect").and_then(Value::as_str);
                (k == Some(key)
                    || (k.is_none_or(str::is_empty) && t.get("operator") == Some(&json!("Exists"))))
                    && effect.is_none_or(|e| e.is_empty() || e == "NoExecute")
            });
            if !covered {
                tolerations.push(json!({
                    "key": key,
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 300,
                }));
            }
        }
    }
}

fn container(c: &mut Map<String, Value>, host_network: bool) {
    or_insert(c, "terminationMessagePath", json!("/dev/termination-log"));
    or_insert(c, "terminationMessagePolicy", json!("File"));
    if !c.contains_key("imagePullPolicy") {
        let image = c.get("image").and_then(Value::as_str).unwrap_or("");
        c.insert("imagePullPolicy".into(), json!(image_pull_policy(image)));
    }
    for port in array(c, "ports") {
        if let Some(port) = port.as_object_mut() {
            or_insert(port, "protocol", json!("TCP"));
            if host_network
                && !port.contains_key("hostPort")
                && let Some(p) = port.get("containerPort").cloned()
            {
                port.insert("hostPort".into(), p);
            }
        }
    }
    for env in array(c, "env") {
        if let Some(field_ref) = env
            .pointer_mut("/valueFrom/fieldRef")
            .and_then(Value::as_object_mut)
        {
            or_insert(field_ref, "apiVersion", json!("v1"));
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = object(c, probe) {
            or_insert(p, "timeoutSeconds", json!(1));
            or_insert(p, "periodSeconds", json!(10));
            or_insert(p, "successThreshold", json!(1));
            or_insert(p, "failureThreshold", json!(3));
            if let Some(get) = object(p, "httpGet") {
                or_insert(get, "path", json!("/"));
                or_insert(get, "scheme", json!("HTTP"));
            }
        }
    }
}

/// `Always` for `:latest` or untagged images, `IfNotPresent` otherwise (upstream's rule).
pub fn image_pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

fn volume_source(v: &mut Map<String, Value>) {
    const SOURCES: &[&str] = &[
        "emptyDir",
        "hostPath",
        "secret",
        "configMap",
        "persistentVolumeClaim",
        "projected",
        "downwardAPI",
        "nfs",
        "iscsi",
        "csi",
        "ephemeral",
        "image",
        "fc",
        "azureDisk",
        "azureFile",
        "cephfs",
        "cinder",
        "flexVolume",
        "flocker",
        "gcePersistentDisk",
        "gitRepo",
        "glusterfs",
        "awsElasticBlockStore",
        "photonPersistentDisk",
        "portworxVolume",
        "quobyte",
        "rbd",
        "scaleIO",
        "storageos",
        "vsphereVolume",
    ];
    if !SOURCES.iter().any(|s| v.contains_key(*s)) {
        v.insert("emptyDir".into(), json!({}));
    }
    for source in ["secret", "configMap", "projected", "downwardAPI"] {
        if let Some(s) = object(v, source) {
            or_insert(s, "defaultMode", json!(0o644));
        }
    }
    if let Some(h) = object(v, "hostPath") {
        or_insert(h, "type", json!(""));
    }
}

fn or_insert(map: &mut Map<String, Value>, key: &str, value: Value) {
    if map.get(key).is_none_or(Value::is_null) {
        map.insert(key.to_owned(), value);
    }
}

fn empty(v: &Value) -> bool {
    v.is_null() || v.as_object().is_some_and(Map::is_empty)
}

fn object<'a>(map: &'a mut Map<String, Value>, key: &str) -> Option<&'a mut Map<String, Value>> {
    map.get_mut(key).and_then(Value::as_object_mut)
}

fn object_or_new<'a>(map: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let slot = map.entry(key.to_owned()).or_insert_with(|| json!({}));
    if !slot.is_object() {
        *slot = json!({});
    }
    slot.as_object_mut().expect("just made an object")
}

fn array<'a>(map: &'a mut Map<String, Value>, key: &str) -> impl Iterator<Item = &'a mut Value> {
    map.get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(group: &str, plural: &str) -> &'static ResourceInfo {
        rkube_api::registry::registry()
            .resources()
            .iter()
            .find(|r| r.group == group && r.plural == plural)
            .expect("registered")
    }

    #[test]
    fn pod_defaults_fill_only_what_is_missing() {
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {
            "restartPolicy": "Never",
            "containers": [
                {"name": "a", "image": "nginx", "ports": [{"containerPort": 80}]},
                {"name": "b", "image": "nginx:1.25", "imagePullPolicy": "Never",
                 "resources": {"limits": {"cpu": "1"}}},
            ],
            "volumes": [{"name": "scratch"}, {"name": "cfg", "configMap": {"name": "c"}}],
        }});
        apply(info("", "pods"), &mut pod, true);
        let spec = &pod["spec"];
        assert_eq!(spec["restartPolicy"], "Never");
        assert_eq!(spec["dnsPolicy"], "ClusterFirst");
        assert_eq!(spec["terminationGracePeriodSeconds"], 30);
        assert_eq!(spec["schedulerName"], "default-scheduler");
        assert_eq!(spec["serviceAccountName"], "default");
        assert_eq!(spec["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(spec["containers"][0]["ports"][0]["protocol"], "TCP");
        assert_eq!(spec["containers"][1]["imagePullPolicy"], "Never");
        assert_eq!(spec["containers"][1]["resources"]["requests"]["cpu"], "1");
        assert_eq!(spec["volumes"][0]["emptyDir"], json!({}));
        assert_eq!(spec["volumes"][1]["configMap"]["defaultMode"], 420);
        let tolerations = spec["tolerations"].as_array().unwrap();
        assert_eq!(tolerations.len(), 2);
        assert_eq!(tolerations[1]["key"], "node.kubernetes.io/unreachable");
        assert_eq!(tolerations[1]["tolerationSeconds"], 300);
    }

    #[test]
    fn image_pull_policy_follows_the_tag() {
        assert_eq!(image_pull_policy("nginx"), "Always");
        assert_eq!(image_pull_policy("nginx:latest"), "Always");
        assert_eq!(image_pull_policy("nginx:1.25"), "IfNotPresent");
        assert_eq!(image_pull_policy("localhost:5000/app"), "Always");
        assert_eq!(image_pull_policy("localhost:5000/app:v2"), "IfNotPresent");
        assert_eq!(image_pull_policy("app@sha256:abc"), "IfNotPresent");
    }

    #[test]
    fn deployment_and_job_defaults() {
        let mut d = json!({"spec": {"selector": {"matchLabels": {"a": "b"}},
            "template": {"metadata": {"labels": {"a": "b"}},
                         "spec": {"containers": [{"name": "c", "image": "x:1"}]}}}});
        apply(info("apps", "deployments"), &mut d, true);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
        assert_eq!(d["spec"]["progressDeadlineSeconds"], 600);
        assert_eq!(d["spec"]["template"]["spec"]["restartPolicy"], "Always");
        // Templates do not get the pod-only admission defaults.
        assert!(d["spec"]["template"]["spec"].get("tolerations").is_none());

        let mut recreate = json!({"spec": {"strategy": {"type": "Recreate"}}});
        apply(info("apps", "deployments"), &mut recreate, true);
        assert!(recreate["spec"]["strategy"].get("rollingUpdate").is_none());

        let mut job = json!({"spec": {"template": {"spec": {"containers": []}}}});
        apply(info("batch", "jobs"), &mut job, true);
        assert_eq!(job["spec"]["completions"], 1);
        assert_eq!(job["spec"]["parallelism"], 1);
        assert_eq!(job["spec"]["backoffLimit"], 6);
        assert_eq!(job["spec"]["completionMode"], "NonIndexed");
        let mut queue = json!({"spec": {"parallelism": 3}});
        apply(info("batch", "jobs"), &mut queue, true);
        assert!(queue["spec"].get("completions").is_none());
    }

    #[test]
    fn service_defaults() {
        let mut s = json!({"spec": {"ports": [{"port": 80}, {"port": 53, "protocol": "UDP", "targetPort": "dns"}]}});
        apply(info("", "services"), &mut s, true);
        assert_eq!(s["spec"]["type"], "ClusterIP");
        assert_eq!(s["spec"]["sessionAffinity"], "None");
        assert_eq!(s["spec"]["ports"][0]["targetPort"], 80);
        assert_eq!(s["spec"]["ports"][0]["protocol"], "TCP");
        assert_eq!(s["spec"]["ports"][1]["targetPort"], "dns");
        assert_eq!(s["spec"]["internalTrafficPolicy"], "Cluster");
        assert!(s["spec"].get("externalTrafficPolicy").is_none());
    }

    #[test]
    fn namespaces_get_their_name_label() {
        let mut ns = json!({"metadata": {"name": "team-a"}});
        apply(info("", "namespaces"), &mut ns, true);
        assert_eq!(
            ns["metadata"]["labels"]["kubernetes.io/metadata.name"],
            "team-a"
        );
    }
}
