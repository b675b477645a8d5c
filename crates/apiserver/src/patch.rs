//! The patch types of PATCH requests: JSON patch (RFC 6902), JSON merge patch (RFC 7386) and
//! strategic merge patch (Kubernetes' own: lists with a merge key are merged element by
//! element, e.g. containers by `name`, and `$patch`/`$setElementOrder`/`$retainKeys`/
//! `$deleteFromPrimitiveList` directives are honoured).
//!
//! Merge keys follow upstream's `patchMergeKey` tags; lists without one are replaced whole,
//! as upstream does for atomic lists.

use serde_json::{Map, Value};

/// Supported patch content types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/json-patch+json`.
    Json,
    /// `application/merge-patch+json`.
    Merge,
    /// `application/strategic-merge-patch+json`.
    Strategic,
    /// `application/apply-patch+yaml` (server-side apply).
    Apply,
}

impl PatchType {
    /// The patch type of a request's `Content-Type`.
    pub fn from_content_type(ct: &str) -> Option<Self> {
        match ct.split(';').next().unwrap_or("").trim() {
            "application/json-patch+json" => Some(Self::Json),
            "application/merge-patch+json" => Some(Self::Merge),
            "application/strategic-merge-patch+json" => Some(Self::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Some(Self::Apply),
            _ => None,
        }
    }
}

/// Applies a JSON patch document to `target`.
pub fn json_patch(target: &Value, patch: &Value) -> Result<Value, String> {
    let patch: json_patch::Patch =
        serde_json::from_value(patch.clone()).map_err(|e| format!("invalid JSON patch: {e}"))?;
    let mut out = target.clone();
    // `patch_unsafe` leaves a half-applied document on error, which is fine on this copy; the
    // undoing `patch` can panic when an undo fails (json-patch 4.2, found by fuzzing:
    // moving a field onto the root and then failing).
    json_patch::patch_unsafe(&mut out, &patch).map_err(|e| e.to_string())?;
    Ok(out)
}

/// Applies a JSON merge patch.
pub fn merge_patch(target: &Value, patch: &Value) -> Result<Value, String> {
    if !patch.is_object() {
        return Err("a merge patch must be a JSON object".into());
    }
    let mut out = target.clone();
    json_patch::merge(&mut out, patch);
    Ok(out)
}

/// The merge key of a list field, by field name and (for `ports`) by what the elements hold.
fn merge_key(field: &str, sample: Option<&Value>) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims"
        | "secrets" => "name",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "hostAliases" => "ip",
        "conditions" | "addresses" => "type",
        "ownerReferences" => "uid",
        "topologySpreadConstraints" => "topologyKey",
        "ports" => {
            if sample.is_some_and(|s| s.get("containerPort").is_some()) {
                "containerPort"
            } else {
                "port"
            }
        }
        _ => return None,
    })
}

/// Primitive lists merged as sets (`patchStrategy: merge` without a key).
fn is_merged_primitive_list(field: &str) -> bool {
    field == "finalizers"
}

/// How server-side apply treats a list field: upstream's `x-kubernetes-list-type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListType {
    /// `map`: the items are objects identified by these key fields, each with the value
    /// it takes when an item leaves it out (`protocol` defaults to `TCP`), if any.
    Map(&'static [(&'static str, Option<&'static str>)]),
    /// `set`: the items are scalars, each at most once.
    Set,
    /// `atomic`: the list is one value, replaced whole.
    Atomic,
}

/// The server-side apply list type of the list `field` whose enclosing field is `parent`
/// (`containers` for a container's `ports`, `spec` for a Service's), in an object of `kind`.
///
/// The keys follow upstream's `+listMapKey` tags; they mostly agree with the strategic merge
/// patch keys of [`merge_key`], except that ports are keyed by port and protocol and
/// topology spread constraints by topology key and `whenUnsatisfiable`. Lists upstream
/// does not tag `map` or `set` are atomic.
pub fn list_type(kind: &str, parent: Option<&str>, field: &str) -> ListType {
    const NAME: &[(&str, Option<&str>)] = &[("name", None)];
    const CONTAINER_PORT: &[(&str, Option<&str>)] =
        &[("containerPort", None), ("protocol", Some("TCP"))];
    const SERVICE_PORT: &[(&str, Option<&str>)] = &[("port", None), ("protocol", Some("TCP"))];
    const SPREAD: &[(&str, Option<&str>)] = &[("topologyKey", None), ("whenUnsatisfiable", None)];
    const TYPE: &[(&str, Option<&str>)] = &[("type", None)];
    const IP: &[(&str, Option<&str>)] = &[("ip", None)];
    const MOUNT_PATH: &[(&str, Option<&str>)] = &[("mountPath", None)];
    const DEVICE_PATH: &[(&str, Option<&str>)] = &[("devicePath", None)];
    const UID: &[(&str, Option<&str>)] = &[("uid", None)];
    let in_container = matches!(
        parent,
        Some("containers" | "initContainers" | "ephemeralContainers")
    );
    match (field, parent) {
        ("ports", _) if in_container => ListType::Map(CONTAINER_PORT),
        ("ports", Some("spec")) if kind == "Service" => ListType::Map(SERVICE_PORT),
        ("ports", _) => ListType::Atomic,
        ("topologySpreadConstraints", _) => ListType::Map(SPREAD),
        ("finalizers", Some("metadata")) => ListType::Set,
        ("addresses", Some("status")) | ("conditions", _) => ListType::Map(TYPE),
        ("podIPs" | "hostIPs", _) => ListType::Map(IP),
        ("schedulingGates" | "claims" | "resourceClaims", _) => ListType::Map(NAME),
        _ => match merge_key(field, None) {
            Some("name") => ListType::Map(NAME),
            Some("mountPath") => ListType::Map(MOUNT_PATH),
            Some("devicePath") => ListType::Map(DEVICE_PATH),
            Some("ip") => ListType::Map(IP),
            Some("uid") => ListType::Map(UID),
            _ => ListType::Atomic,
        },
    }
}

/// Applies a strategic merge patch.
pub fn strategic_merge_patch(target: &Value, patch: &Value) -> Result<Value, String> {
    let Value::Object(p) = patch else {
        return Err("a strategic merge patch must be a JSON object".into());
    };
    let mut out = target.clone();
    if !out.is_object() {
        out = Value::Object(Map::new());
    }
    merge_object(out.as_object_mut().expect("object"), p)?;
    Ok(out)
}

fn merge_object(target: &mut Map<String, Value>, patch: &Map<String, Value>) -> Result<(), String> {
    if patch.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut replaced = patch.clone();
        replaced.remove("$patch");
        strip_directives(&mut replaced);
        *target = replaced;
        return Ok(());
    }
    if let Some(Value::Array(keep)) = patch.get("$retainKeys") {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        target.retain(|k, _| keep.contains(&k.as_str()) || patch.contains_key(k));
    }
    for (key, pv) in patch {
        if key.starts_with('$') {
            if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/")
                && let (Some(Value::Array(list)), Value::Array(del)) = (target.get_mut(field), pv)
            {
                list.retain(|v| !del.contains(v));
            }
            continue; // `$setElementOrder` only orders; other directives handled above
        }
        match pv {
            Value::Null => {
                target.remove(key);
            }
            Value::Object(po) => {
                if po.get("$patch").and_then(Value::as_str) == Some("delete") {
                    target.remove(key);
                    continue;
                }
                match target.get_mut(key) {
                    Some(Value::Object(to)) => merge_object(to, po)?,
                    _ => {
                        let mut fresh = Map::new();
                        merge_object(&mut fresh, po)?;
                        target.insert(key.clone(), Value::Object(fresh));
                    }
                }
            }
            Value::Array(pa) => {
                let merged = match target.get(key) {
                    Some(Value::Array(ta)) => merge_list(key, ta, pa)?,
                    _ => merge_list(key, &[], pa)?,
                };
                target.insert(key.clone(), Value::Array(merged));
            }
            other => {
                target.insert(key.clone(), other.clone());
            }
        }
    }
    Ok(())
}

fn merge_list(field: &str, target: &[Value], patch: &[Value]) -> Result<Vec<Value>, String> {
    // `[{"$patch": "replace"}, ...]`: replace the whole list with the other elements.
    if patch
        .iter()
        .any(|e| e.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        return Ok(patch
            .iter()
            .filter(|e| e.get("$patch").is_none())
            .cloned()
            .map(|mut v| {
                if let Value::Object(m) = &mut v {
                    strip_directives(m);
                }
                v
            })
            .collect());
    }
    if is_merged_primitive_list(field) {
        let mut out = target.to_vec();
        for v in patch {
            if !out.contains(v) {
                out.push(v.clone());
            }
        }
        return Ok(out);
    }
    let sample = patch.first().or(target.first());
    let Some(mk) = merge_key(field, sample) else {
        // Atomic list: the patch replaces it.
        return Ok(patch
            .iter()
            .cloned()
            .map(|mut v| {
                if let Value::Object(m) = &mut v {
                    strip_directives(m);
                }
                v
            })
            .collect());
    };
    let mut out: Vec<Value> = target.to_vec();
    for pe in patch {
        let Value::Object(po) = pe else {
            return Err(format!("list {field} must hold objects"));
        };
        let Some(kv) = po.get(mk) else {
            return Err(format!(
                "map: {po:?} does not contain declared merge key: {mk}"
            ));
        };
        let pos = out.iter().position(|t| t.get(mk) == Some(kv));
        let delete = po.get("$patch").and_then(Value::as_str) == Some("delete");
        match (pos, delete) {
            (Some(i), true) => {
                out.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => {
                if let Value::Object(to) = &mut out[i] {
                    merge_object(to, po)?;
                }
            }
            (None, false) => {
                let mut fresh = Map::new();
                merge_object(&mut fresh, po)?;
                out.push(Value::Object(fresh));
            }
        }
    }
    Ok(out)
}

fn strip_directives(m: &mut Map<String, Value>) {
    m.retain(|k, _| !k.starts_with('$'));
    for v in m.values_mut() {
        match v {
            Value::Object(o) => strip_directives(o),
            Value::Array(a) => {
                for e in a {
                    if let Value::Object(o) = e {
                        strip_directives(o);
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn containers_merge_by_name() {
        let pod = json!({"spec": {"containers": [
            {"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]}});
        let patch = json!({"spec": {"containers": [{"name": "b", "image": "b:2"}]}});
        let out = strategic_merge_patch(&pod, &patch).unwrap();
        assert_eq!(out["spec"]["containers"][0]["image"], "a:1");
        assert_eq!(out["spec"]["containers"][1]["image"], "b:2");
        // A merge patch would have replaced the list.
        let merged = merge_patch(&pod, &patch).unwrap();
        assert_eq!(merged["spec"]["containers"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn directives() {
        let pod = json!({"metadata": {"finalizers": ["a"], "labels": {"x": "1", "y": "2"}},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
        let patch = json!({
            "metadata": {"finalizers": ["b"], "labels": {"y": null},
                "$deleteFromPrimitiveList/finalizers": ["a"]},
            "spec": {"$setElementOrder/containers": [{"name": "b"}],
                "containers": [{"name": "a", "$patch": "delete"}]}
        });
        let out = strategic_merge_patch(&pod, &patch).unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["b"]));
        assert_eq!(out["metadata"]["labels"], json!({"x": "1"}));
        assert_eq!(out["spec"]["containers"], json!([{"name": "b"}]));
        assert!(out["spec"].get("$setElementOrder/containers").is_none());
    }

    #[test]
    fn ports_key_depends_on_the_list() {
        let svc = json!({"spec": {"ports": [{"port": 80, "name": "http"}]}});
        let out = strategic_merge_patch(
            &svc,
            &json!({"spec": {"ports": [{"port": 443, "name": "https"}]}}),
        )
        .unwrap();
        assert_eq!(out["spec"]["ports"].as_array().unwrap().len(), 2);
        let c = json!({"ports": [{"containerPort": 80}]});
        let out = strategic_merge_patch(
            &c,
            &json!({"ports": [{"containerPort": 80, "protocol": "TCP"}]}),
        )
        .unwrap();
        assert_eq!(
            out["ports"],
            json!([{"containerPort": 80, "protocol": "TCP"}])
        );
    }

    #[test]
    fn bad_documents_are_errors() {
        assert!(json_patch(&json!({}), &json!({"op": "add"})).is_err());
        assert!(json_patch(&json!({}), &json!([{"op": "remove", "path": "/x"}])).is_err());
        assert!(merge_patch(&json!({}), &json!([1])).is_err());
        assert!(strategic_merge_patch(&json!({}), &json!("x")).is_err());
        assert!(
            strategic_merge_patch(
                &json!({"spec": {"containers": []}}),
                &json!({"spec": {"containers": [{"image": "x"}]}})
            )
            .is_err()
        );
    }
}

#[cfg(test)]
mod fuzz_regressions {
    use super::*;
    use serde_json::json;

    /// Found by `fuzz_decode`: moving a field onto the root, then adding below it.
    #[test]
    fn json_patch_on_a_scalar_root_is_an_error_not_a_panic() {
        let target = json!({"spec": {"replicas": 2}});
        let patch = json!([
            {"op": "move", "from": "/spec/replicas", "path": ""},
            {"op": "add", "path": "/apiVersion", "value": null}
        ]);
        assert!(json_patch(&target, &patch).is_err());
    }
}
