//! Conversion between versions of one resource: HorizontalPodAutoscalers are stored as
//! `autoscaling/v2` (the storage version) and served as `v1` too, as upstream.
//!
//! What `v1` cannot express (metrics other than the CPU target, current metrics, conditions,
//! scaling behavior) rides along in annotations, as upstream does, so that an object read and
//! written back through `v1` keeps its `v2` fields.

use serde_json::{Map, Value, json};

use rkube_api::registry::ResourceInfo;

const METRICS: &str = "autoscaling.alpha.kubernetes.io/metrics";
const CURRENT_METRICS: &str = "autoscaling.alpha.kubernetes.io/current-metrics";
const CONDITIONS: &str = "autoscaling.alpha.kubernetes.io/conditions";
const BEHAVIOR: &str = "autoscaling.alpha.kubernetes.io/behavior";

/// The version a resource is stored in, when it differs from the served one.
pub fn storage_version(info: &ResourceInfo) -> Option<&'static str> {
    (info.group == "autoscaling"
        && info.plural == "horizontalpodautoscalers"
        && info.version != "v2")
        .then_some("v2")
}

/// Converts a served-version object (as a client sent it) into the storage version.
pub fn to_storage(info: &ResourceInfo, obj: Value) -> Value {
    match storage_version(info) {
        Some(_) => hpa_v1_to_v2(obj),
        None => obj,
    }
}

/// Converts a stored object into the version the client asked for.
pub fn from_storage(info: &ResourceInfo, obj: Value) -> Value {
    match storage_version(info) {
        Some(_) if obj.get("kind").and_then(Value::as_str) == Some("Status") => obj,
        Some(_) => hpa_v2_to_v1(obj),
        None => obj,
    }
}

/// Converts every item of a stored list (and the list's apiVersion).
pub fn list_from_storage(info: &ResourceInfo, mut list: Value) -> Value {
    if storage_version(info).is_none() {
        return list;
    }
    list["apiVersion"] = json!(info.api_version());
    if let Some(items) = list.get_mut("items").and_then(Value::as_array_mut) {
        for item in items.iter_mut() {
            *item = from_storage(info, item.take());
        }
    }
    list
}

fn annotations(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    let meta = &mut obj["metadata"];
    if !meta["annotations"].is_object() {
        meta["annotations"] = json!({});
    }
    meta["annotations"]
        .as_object_mut()
        .expect("just made an object")
}

fn drop_empty_annotations(obj: &mut Value) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut)
        && meta
            .get("annotations")
            .and_then(Value::as_object)
            .is_some_and(Map::is_empty)
    {
        meta.remove("annotations");
    }
}

fn is_cpu_utilization(metric: &Value) -> bool {
    metric.get("type") == Some(&json!("Resource"))
        && metric.pointer("/resource/name") == Some(&json!("cpu"))
        && metric.pointer("/resource/target/type") == Some(&json!("Utilization"))
}

fn hpa_v2_to_v1(mut obj: Value) -> Value {
    obj["apiVersion"] = json!("autoscaling/v1");
    let spec = obj.get("spec").cloned().unwrap_or_else(|| json!({}));
    let status = obj.get("status").cloned();
    let mut v1_spec = json!({});
    for field in ["scaleTargetRef", "minReplicas", "maxReplicas"] {
        if let Some(v) = spec.get(field) {
            v1_spec[field] = v.clone();
        }
    }
    let metrics = spec
        .get("metrics")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let (cpu, other): (Vec<Value>, Vec<Value>) = metrics.into_iter().partition(is_cpu_utilization);
    if let Some(target) = cpu
        .first()
        .and_then(|m| m.pointer("/resource/target/averageUtilization"))
    {
        v1_spec["targetCPUUtilizationPercentage"] = target.clone();
    }
    let notes = annotations(&mut obj);
    if !other.is_empty() {
        notes.insert(METRICS.into(), json!(Value::Array(other).to_string()));
    }
    if let Some(behavior) = spec.get("behavior") {
        notes.insert(BEHAVIOR.into(), json!(behavior.to_string()));
    }
    if let Some(status) = &status {
        let current = status.get("currentMetrics").and_then(Value::as_array);
        if let Some(current) = current.filter(|c| !c.is_empty()) {
            notes.insert(
                CURRENT_METRICS.into(),
                json!(Value::Array(current.clone()).to_string()),
            );
        }
        if let Some(conditions) = status
            .get("conditions")
            .and_then(Value::as_array)
            .filter(|c| !c.is_empty())
        {
            notes.insert(
                CONDITIONS.into(),
                json!(Value::Array(conditions.clone()).to_string()),
            );
        }
    }
    drop_empty_annotations(&mut obj);
    obj["spec"] = v1_spec;
    if let Some(status) = status {
        let mut v1_status = json!({});
        for field in [
            "observedGeneration",
            "lastScaleTime",
            "currentReplicas",
            "desiredReplicas",
        ] {
            if let Some(v) = status.get(field) {
                v1_status[field] = v.clone();
            }
        }
        if let Some(cpu) = status
            .get("currentMetrics")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|m| m.pointer("/resource/name") == Some(&json!("cpu")))
            .and_then(|m| m.pointer("/resource/current/averageUtilization"))
        {
            v1_status["currentCPUUtilizationPercentage"] = cpu.clone();
        }
        v1_status["currentReplicas"] = v1_status
            .get("currentReplicas")
            .cloned()
            .unwrap_or(json!(0));
        v1_status["desiredReplicas"] = v1_status
            .get("desiredReplicas")
            .cloned()
            .unwrap_or(json!(0));
        obj["status"] = v1_status;
    }
    obj
}

fn take_annotation(obj: &mut Value, key: &str) -> Option<Value> {
    let notes = obj
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)?;
    let text = notes.remove(key)?;
    text.as_str().and_then(|t| serde_json::from_str(t).ok())
}

fn hpa_v1_to_v2(mut obj: Value) -> Value {
    obj["apiVersion"] = json!("autoscaling/v2");
    let spec = obj.get("spec").cloned().unwrap_or_else(|| json!({}));
    let mut v2_spec = json!({});
    for field in ["scaleTargetRef", "minReplicas", "maxReplicas"] {
        if let Some(v) = spec.get(field) {
            v2_spec[field] = v.clone();
        }
    }
    let mut metrics = Vec::new();
    if let Some(target) = spec.get("targetCPUUtilizationPercentage") {
        metrics.push(json!({"type": "Resource", "resource": {"name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": target}}}));
    }
    if let Some(Value::Array(other)) = take_annotation(&mut obj, METRICS) {
        metrics.extend(other);
    }
    if !metrics.is_empty() {
        v2_spec["metrics"] = Value::Array(metrics);
    }
    if let Some(behavior) = take_annotation(&mut obj, BEHAVIOR) {
        v2_spec["behavior"] = behavior;
    }
    let current = take_annotation(&mut obj, CURRENT_METRICS);
    let conditions = take_annotation(&mut obj, CONDITIONS);
    drop_empty_annotations(&mut obj);
    obj["spec"] = v2_spec;
    if let Some(status) = obj.get("status").cloned() {
        let mut v2_status = json!({});
        for field in [
            "observedGeneration",
            "lastScaleTime",
            "currentReplicas",
            "desiredReplicas",
        ] {
            if let Some(v) = status.get(field) {
                v2_status[field] = v.clone();
            }
        }
        let mut current_metrics = match current {
            Some(Value::Array(c)) => c,
            _ => Vec::new(),
        };
        if let Some(cpu) = status.get("currentCPUUtilizationPercentage")
            && !current_metrics
                .iter()
                .any(|m| m.pointer("/resource/name") == Some(&json!("cpu")))
        {
            current_metrics.push(json!({"type": "Resource", "resource": {"name": "cpu",
                "current": {"averageUtilization": cpu}}}));
        }
        if !current_metrics.is_empty() {
            v2_status["currentMetrics"] = Value::Array(current_metrics);
        }
        if let Some(c) = conditions {
            v2_status["conditions"] = c;
        }
        obj["status"] = v2_status;
    }
    obj
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hpa(version: &str) -> &'static ResourceInfo {
        rkube_api::registry::registry()
            .get("autoscaling", version, "horizontalpodautoscalers")
            .expect("registered")
    }

    #[test]
    fn v1_round_trips_through_v2() {
        let v1 = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                     "minReplicas": 2, "maxReplicas": 5, "targetCPUUtilizationPercentage": 70}});
        let stored = to_storage(hpa("v1"), v1.clone());
        assert_eq!(stored["apiVersion"], "autoscaling/v2");
        assert_eq!(
            stored["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            70
        );
        assert_eq!(from_storage(hpa("v1"), stored), v1);
    }

    #[test]
    fn v2_only_fields_survive_a_v1_round_trip() {
        let v2 = json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web"},
            "spec": {"maxReplicas": 5, "metrics": [
                {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}},
                {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "1Gi"}}}],
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}}},
            "status": {"currentReplicas": 1, "desiredReplicas": 2,
                "conditions": [{"type": "AbleToScale", "status": "True"}]}});
        let v1 = from_storage(hpa("v1"), v2.clone());
        assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 50);
        assert!(
            v1["metadata"]["annotations"][METRICS]
                .as_str()
                .unwrap()
                .contains("memory")
        );
        let back = to_storage(hpa("v1"), v1);
        assert_eq!(back["spec"], v2["spec"]);
        assert_eq!(back["status"]["conditions"], v2["status"]["conditions"]);
        assert!(back["metadata"].get("annotations").is_none());
        // The storage version itself is served unchanged.
        assert_eq!(from_storage(hpa("v2"), v2.clone()), v2);
    }
}
