//! Per-kind behaviour of the generic storage, like upstream's registry strategies: what a
//! create resets, what validation adds to the generic checks, which fields are immutable,
//! and how deletion is staged.

use rkube_api::registry::ResourceInfo;
use serde_json::{Value, json};

use crate::meta::{meta_str, set_meta};
use crate::status::{ApiError, ApiResult, Cause};

fn kind_of(info: &ResourceInfo) -> (&'static str, &'static str) {
    (info.group, info.plural)
}

/// Resets what a client may not set on create.
pub fn prepare_for_create(info: &ResourceInfo, obj: &mut Value) {
    match kind_of(info) {
        ("", "pods") => {
            let qos = qos_class(obj);
            obj["status"] = json!({"phase": "Pending", "qosClass": qos});
        }
        ("", "namespaces") => {
            obj["status"] = json!({"phase": "Active"});
            obj["spec"] = json!({"finalizers": ["kubernetes"]});
        }
        ("", "persistentvolumes") | ("", "persistentvolumeclaims") => {
            obj["status"] = json!({"phase": "Pending"});
        }
        ("", "nodes") | ("", "events") | ("events.k8s.io", "events") => {}
        _ if info.subresource("status").is_some() => {
            if let Some(m) = obj.as_object_mut() {
                m.remove("status");
            }
        }
        _ => {}
    }
    if kind_of(info) == ("", "secrets") && obj.get("type").is_none() {
        obj["type"] = json!("Opaque");
    }
    if kind_of(info) == ("batch", "jobs") {
        generate_job_selector(obj);
    }
}

/// Upstream's generated Job selector: unless `manualSelector` is set, the pods are labelled
/// with the Job's uid and name, and the selector matches the uid.
fn generate_job_selector(job: &mut Value) {
    if job.pointer("/spec/manualSelector") == Some(&json!(true)) {
        return;
    }
    let uid = meta_str(job, "uid").unwrap_or("").to_owned();
    let name = meta_str(job, "name").unwrap_or("").to_owned();
    let Some(spec) = job.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    if spec.contains_key("selector") {
        // Left for validation to refuse: a selector needs `manualSelector: true`.
        return;
    }
    let labels = [
        ("batch.kubernetes.io/controller-uid", &uid),
        ("batch.kubernetes.io/job-name", &name),
        ("controller-uid", &uid),
        ("job-name", &name),
    ];
    if let Some(template) = spec.get_mut("template").and_then(Value::as_object_mut) {
        let meta = template.entry("metadata").or_insert_with(|| json!({}));
        if !meta.get("labels").is_some_and(Value::is_object) {
            meta["labels"] = json!({});
        }
        for (k, v) in labels {
            meta["labels"][k] = json!(v);
        }
    }
    spec.insert(
        "selector".into(),
        json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}),
    );
}

/// Upstream's QoS class of a pod: Guaranteed when every container has equal CPU and memory
/// requests and limits, BestEffort when none has any, Burstable otherwise.
pub fn qos_class(pod: &Value) -> &'static str {
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .filter_map(|f| pod.pointer(&format!("/spec/{f}")).and_then(Value::as_array))
        .flatten()
        .collect();
    let mut any = false;
    let mut guaranteed = !containers.is_empty();
    for c in &containers {
        let limits = c.pointer("/resources/limits");
        let requests = c.pointer("/resources/requests");
        for res in ["cpu", "memory"] {
            let l = limits.and_then(|l| l.get(res));
            let r = requests.and_then(|r| r.get(res)).or(l);
            any |= l.is_some() || r.is_some();
            if l.is_none() || l != r {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// Kind-specific validation; `old` is the stored object on update.
pub fn validate(info: &ResourceInfo, obj: &Value, old: Option<&Value>) -> ApiResult<()> {
    let name = meta_str(obj, "name").unwrap_or("");
    let mut causes = Vec::new();
    match kind_of(info) {
        ("", "pods") => {
            validate_pod_spec(obj.get("spec"), "spec", &mut causes);
            if let Some(old) = old {
                let strip = |v: &Value| {
                    let mut spec = v.get("spec").cloned().unwrap_or(Value::Null);
                    // Mutable pod spec fields (upstream allows image, tolerations additions,
                    // activeDeadlineSeconds; we allow images).
                    for list in ["containers", "initContainers"] {
                        if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
                            for c in cs {
                                if let Some(m) = c.as_object_mut() {
                                    m.remove("image");
                                }
                            }
                        }
                    }
                    if let Some(m) = spec.as_object_mut() {
                        for f in ["activeDeadlineSeconds", "tolerations", "nodeName"] {
                            m.remove(f);
                        }
                    }
                    spec
                };
                if strip(obj) != strip(old) {
                    causes.push(Cause::forbidden(
                        "spec",
                        "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
                    ));
                }
                if old.pointer("/spec/nodeName").is_some_and(|n| n != "")
                    && obj.pointer("/spec/nodeName") != old.pointer("/spec/nodeName")
                {
                    causes.push(Cause::immutable("spec.nodeName"));
                }
            }
        }
        ("apps", "deployments")
        | ("apps", "replicasets")
        | ("apps", "statefulsets")
        | ("apps", "daemonsets") => {
            validate_workload(obj, &mut causes);
            if let Some(old) = old
                && old.pointer("/spec/selector") != obj.pointer("/spec/selector")
            {
                causes.push(Cause::invalid(
                    "spec.selector",
                    obj.pointer("/spec/selector").unwrap_or(&Value::Null),
                    "field is immutable",
                ));
            }
        }
        ("batch", "cronjobs") => validate_cronjob(obj, &mut causes),
        ("batch", "jobs") => {
            validate_pod_spec(
                obj.pointer("/spec/template/spec"),
                "spec.template.spec",
                &mut causes,
            );
            let generated = obj
                .pointer("/spec/selector/matchLabels/batch.kubernetes.io~1controller-uid")
                .and_then(Value::as_str)
                == meta_str(obj, "uid");
            if old.is_none()
                && !generated
                && obj.pointer("/spec/manualSelector") != Some(&json!(true))
            {
                causes.push(Cause::invalid(
                    "spec.selector",
                    obj.pointer("/spec/selector").unwrap_or(&Value::Null),
                    "`selector` not auto-generated",
                ));
            }
            if let Some(old) = old
                && old.pointer("/spec/template") != obj.pointer("/spec/template")
                && old.pointer("/spec/suspend") != Some(&json!(true))
            {
                causes.push(Cause::immutable("spec.template"));
            }
            if let Some(p) = obj
                .pointer("/spec/template/spec/restartPolicy")
                .and_then(Value::as_str)
                && p == "Always"
            {
                causes.push(Cause {
                    reason: "FieldValueNotSupported",
                    message:
                        "Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\""
                            .into(),
                    field: "spec.template.spec.restartPolicy".into(),
                });
            }
        }
        ("", "services") => {
            if let Some(old) = old {
                let (o, n) = (
                    old.pointer("/spec/clusterIP"),
                    obj.pointer("/spec/clusterIP"),
                );
                if o.is_some_and(|v| v != "")
                    && n != o
                    && obj.pointer("/spec/type") != Some(&json!("ExternalName"))
                {
                    causes.push(Cause::invalid(
                        "spec.clusterIPs[0]",
                        n.unwrap_or(&Value::Null),
                        "may not change once set",
                    ));
                }
            }
            if let Some(ports) = obj.pointer("/spec/ports").and_then(Value::as_array) {
                for (i, p) in ports.iter().enumerate() {
                    match p.get("port").and_then(Value::as_i64) {
                        Some(port) if (1..=65535).contains(&port) => {}
                        Some(port) => causes.push(Cause::invalid(
                            format!("spec.ports[{i}].port"),
                            &json!(port),
                            "must be between 1 and 65535, inclusive",
                        )),
                        None => causes.push(Cause::required(format!("spec.ports[{i}].port"))),
                    }
                }
            }
        }
        ("scheduling.k8s.io", "priorityclasses") => validate_priority_class(obj, old, &mut causes),
        ("", "configmaps") | ("", "secrets") => {
            if let Some(old) = old
                && old.get("immutable") == Some(&json!(true))
            {
                for f in ["data", "binaryData", "stringData"] {
                    if old.get(f) != obj.get(f) {
                        causes.push(Cause::forbidden(
                            f,
                            "field is immutable when `immutable` is set",
                        ));
                    }
                }
                if obj.get("immutable") != Some(&json!(true)) {
                    causes.push(Cause::forbidden(
                        "immutable",
                        "field is immutable when `immutable` is set",
                    ));
                }
            }
            let data_size: usize = ["data", "binaryData"]
                .iter()
                .filter_map(|f| obj.get(*f).and_then(Value::as_object))
                .flat_map(|m| m.values())
                .filter_map(Value::as_str)
                .map(str::len)
                .sum();
            if data_size > 1024 * 1024 {
                causes.push(Cause {
                    reason: "FieldValueTooLong",
                    message: "Too long: must have at most 1048576 bytes".into(),
                    field: "data".into(),
                });
            }
        }
        _ => {}
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(info.group, info.kind, name, causes))
    }
}

/// The highest `value` a user-defined PriorityClass may have (upstream's
/// `HighestUserDefinablePriority`); above it are the `system-` classes.
pub const HIGHEST_USER_DEFINABLE_PRIORITY: i64 = 1_000_000_000;

/// Upstream's PriorityClass validation: `system-` names are reserved for the built-in
/// classes, user values stay at or below 1e9, `value` and `preemptionPolicy` never change.
fn validate_priority_class(obj: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    let name = meta_str(obj, "name").unwrap_or("");
    let value = obj.get("value").and_then(Value::as_i64);
    if name.starts_with("system-") {
        let known = crate::admission::system_priority_classes()
            .into_iter()
            .find(|pc| pc.pointer("/metadata/name").and_then(Value::as_str) == Some(name));
        let problem = match known {
            None => Some(format!("{name} is not a known system priority class")),
            Some(pc) if pc.get("value").and_then(Value::as_i64) != value => Some(format!(
                "value of {name} PriorityClass must be {}",
                pc["value"]
            )),
            Some(_) if obj.get("globalDefault") == Some(&json!(true)) => Some(format!(
                "globalDefault of {name} PriorityClass must be false"
            )),
            Some(_) => None,
        };
        if let Some(problem) = problem {
            causes.push(Cause::forbidden(
                "metadata.name",
                format!(
                    "priority class names with 'system-' prefix are reserved for system use only. error: {problem}"
                ),
            ));
        }
    } else if let Some(v) = value
        && v > HIGHEST_USER_DEFINABLE_PRIORITY
    {
        causes.push(Cause::forbidden(
            "value",
            format!(
                "maximum allowed value of a user defined priority is {HIGHEST_USER_DEFINABLE_PRIORITY}"
            ),
        ));
    }
    if let Some(policy) = obj.get("preemptionPolicy").and_then(Value::as_str)
        && !matches!(policy, "PreemptLowerPriority" | "Never")
    {
        causes.push(Cause {
            reason: "FieldValueNotSupported",
            message: format!(
                "Unsupported value: \"{policy}\": supported values: \"Never\", \"PreemptLowerPriority\""
            ),
            field: "preemptionPolicy".into(),
        });
    }
    if let Some(old) = old {
        for field in ["value", "preemptionPolicy"] {
            if old.get(field) != obj.get(field) {
                causes.push(Cause::forbidden(field, "may not be changed in an update."));
            }
        }
    }
}

/// Upstream's CronJob checks on `spec.schedule` and `spec.timeZone` (an IANA name, not
/// `Local`, from the bundled or system tz database); the schedule's syntax is checked by
/// the cronjob controller, which reports an unparseable one as an event.
fn validate_cronjob(obj: &Value, causes: &mut Vec<Cause>) {
    let schedule = obj.pointer("/spec/schedule").and_then(Value::as_str);
    match schedule {
        None | Some("") => causes.push(Cause::required("spec.schedule")),
        Some(s) => {
            if obj.pointer("/spec/timeZone").is_some_and(|t| !t.is_null())
                && (s.contains("TZ=") || s.contains("CRON_TZ="))
            {
                causes.push(Cause::invalid(
                    "spec.schedule",
                    &json!(s),
                    "cannot use both timeZone field and TZ or CRON_TZ in schedule",
                ));
            }
        }
    }
    if let Some(tz) = obj.pointer("/spec/timeZone").and_then(Value::as_str) {
        let valid_part = |p: &str| {
            p != "."
                && p != ".."
                && !p.starts_with('-')
                && !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-+".contains(c))
        };
        let message = if tz.is_empty() {
            Some("timeZone must be nil or non-empty string".to_string())
        } else if !tz.split('/').all(valid_part) {
            Some(format!("unknown time zone {tz}"))
        } else if tz.eq_ignore_ascii_case("Local") {
            Some(
                "timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones"
                    .to_string(),
            )
        } else if jiff::tz::TimeZone::get(tz).is_err() {
            Some(format!("unknown time zone {tz}"))
        } else {
            None
        };
        if let Some(message) = message {
            causes.push(Cause::invalid("spec.timeZone", &json!(tz), message));
        }
    }
}

fn validate_workload(obj: &Value, causes: &mut Vec<Cause>) {
    validate_pod_spec(
        obj.pointer("/spec/template/spec"),
        "spec.template.spec",
        causes,
    );
    let selector = obj
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object);
    let has_expressions = obj
        .pointer("/spec/selector/matchExpressions")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    match selector {
        None if !has_expressions => causes.push(Cause::required("spec.selector")),
        Some(sel) => {
            let labels = obj.pointer("/spec/template/metadata/labels");
            let matches = sel
                .iter()
                .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v));
            if !matches {
                causes.push(Cause::invalid(
                    "spec.template.metadata.labels",
                    labels.unwrap_or(&Value::Null),
                    "`selector` does not match template `labels`",
                ));
            }
        }
        None => {}
    }
    if let Some(r) = obj.pointer("/spec/replicas").and_then(Value::as_i64)
        && r < 0
    {
        causes.push(Cause::invalid(
            "spec.replicas",
            &json!(r),
            "must be greater than or equal to 0",
        ));
    }
}

fn validate_pod_spec(spec: Option<&Value>, path: &str, causes: &mut Vec<Cause>) {
    let containers = spec
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array);
    match containers {
        None => causes.push(Cause::required(format!("{path}.containers"))),
        Some(cs) if cs.is_empty() => causes.push(Cause::required(format!("{path}.containers"))),
        Some(cs) => {
            let mut names = std::collections::HashSet::new();
            for (i, c) in cs.iter().enumerate() {
                match c.get("name").and_then(Value::as_str) {
                    None | Some("") => {
                        causes.push(Cause::required(format!("{path}.containers[{i}].name")))
                    }
                    Some(n) => {
                        for why in crate::meta::dns1123_label(n) {
                            causes.push(Cause::invalid(
                                format!("{path}.containers[{i}].name"),
                                &json!(n),
                                why,
                            ));
                        }
                        if !names.insert(n) {
                            causes.push(Cause {
                                reason: "FieldValueDuplicate",
                                message: format!("Duplicate value: \"{n}\""),
                                field: format!("{path}.containers[{i}].name"),
                            });
                        }
                    }
                }
                if c.get("image")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    causes.push(Cause::required(format!("{path}.containers[{i}].image")));
                }
            }
        }
    }
    if let Some(p) = spec
        .and_then(|s| s.get("restartPolicy"))
        .and_then(Value::as_str)
        && !matches!(p, "Always" | "OnFailure" | "Never")
    {
        causes.push(Cause {
            reason: "FieldValueNotSupported",
            message: format!(
                "Unsupported value: \"{p}\": supported values: \"Always\", \"Never\", \"OnFailure\""
            ),
            field: format!("{path}.restartPolicy"),
        });
    }
}

/// The grace period of a delete, when the object is stopped gracefully rather than removed
/// at once: only pods bound to a node (whose kubelet stops the containers), as upstream.
pub fn grace_period(info: &ResourceInfo, obj: &Value, options: &Value) -> Option<i64> {
    if kind_of(info) != ("", "pods") {
        return None;
    }
    let bound = obj
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    let phase = obj.pointer("/status/phase").and_then(Value::as_str);
    if !bound || matches!(phase, Some("Succeeded" | "Failed")) {
        return None;
    }
    let grace = options
        .get("gracePeriodSeconds")
        .and_then(Value::as_i64)
        .or_else(|| {
            obj.pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
        })
        .unwrap_or(30);
    (grace > 0).then_some(grace)
}

/// What deletion sets beyond the deletion timestamp.
pub fn prepare_for_delete(info: &ResourceInfo, obj: &mut Value) {
    if kind_of(info) == ("", "namespaces") {
        obj["status"] = json!({"phase": "Terminating"});
    }
}

/// Builds the `Scale` of a scalable object.
pub fn scale_of(info: &ResourceInfo, obj: &Value) -> Value {
    // Workloads use a LabelSelector (its matchLabels); services and RCs a plain label map.
    let selector = match obj.pointer("/spec/selector") {
        Some(Value::Object(s))
            if s.contains_key("matchLabels") || s.contains_key("matchExpressions") =>
        {
            crate::meta::label_map_selector(s.get("matchLabels"))
        }
        plain => crate::meta::label_map_selector(plain),
    };
    let mut metadata = json!({
        "name": meta_str(obj, "name"),
        "namespace": meta_str(obj, "namespace"),
        "uid": meta_str(obj, "uid"),
        "resourceVersion": meta_str(obj, "resourceVersion"),
        "creationTimestamp": meta_str(obj, "creationTimestamp"),
    });
    let _ = info;
    if let Some(m) = metadata.as_object_mut() {
        m.retain(|_, v| !v.is_null());
    }
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": metadata,
        "spec": {"replicas": obj.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1)},
        "status": {
            "replicas": obj.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0),
            "selector": selector,
        },
    })
}

/// Writes a Scale's `spec.replicas` into the object.
pub fn apply_scale(obj: &mut Value, scale: &Value) -> ApiResult<()> {
    let replicas = scale
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if replicas < 0 {
        return Err(ApiError::invalid(
            "autoscaling",
            "Scale",
            meta_str(obj, "name").unwrap_or(""),
            vec![Cause::invalid(
                "spec.replicas",
                &json!(replicas),
                "must be greater than or equal to 0",
            )],
        ));
    }
    if !obj.get("spec").is_some_and(Value::is_object) {
        obj["spec"] = json!({});
    }
    obj["spec"]["replicas"] = json!(replicas);
    if let Some(rv) = meta_str(scale, "resourceVersion").map(str::to_string) {
        set_meta(obj, "resourceVersion", json!(rv));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cronjob_time_zones_must_be_known() {
        let info = rkube_api::registry::registry()
            .get("batch", "v1", "cronjobs")
            .unwrap();
        let cj = |tz: Value, schedule: &str| {
            json!({"metadata": {"name": "c"}, "spec": {"schedule": schedule, "timeZone": tz,
                "jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}}}})
        };
        assert!(validate(info, &cj(json!("Europe/Berlin"), "0 9 * * *"), None).is_ok());
        assert!(validate(info, &cj(Value::Null, "0 9 * * *"), None).is_ok());
        for bad in [
            "Mars/Olympus",
            "Local",
            "",
            "../etc/passwd",
            "Europe/-Berlin",
        ] {
            assert!(
                validate(info, &cj(json!(bad), "0 9 * * *"), None).is_err(),
                "{bad:?} should be refused"
            );
        }
        assert!(validate(info, &cj(json!("UTC"), "TZ=UTC 0 9 * * *"), None).is_err());
        assert!(validate(info, &cj(Value::Null, ""), None).is_err());
    }

    #[test]
    fn qos_classes() {
        let best = json!({"spec": {"containers": [{"name": "c"}]}});
        assert_eq!(qos_class(&best), "BestEffort");
        let guaranteed = json!({"spec": {"containers": [{"name": "c", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}});
        assert_eq!(qos_class(&guaranteed), "Guaranteed");
        let burst = json!({"spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "1"}}}]}});
        assert_eq!(qos_class(&burst), "Burstable");
    }
}
