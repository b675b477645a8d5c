//! Admission steps that read other objects, run on create after defaulting (upstream's
//! mutating admission plugins that are more than field defaults).
//!
//! **Priority**: a pod's `spec.priorityClassName` resolves to `spec.priority` and
//! `spec.preemptionPolicy` from that PriorityClass (403 when it does not exist); a pod
//! without a class gets the `globalDefault` class (the lowest one if several), or priority
//! 0. The built-in `system-cluster-critical` and `system-node-critical` classes are created
//! at start-up ([`system_priority_classes`]).

use serde_json::{Value, json};

use crate::rest::Rest;
use crate::status::{ApiError, ApiResult, Details};
use rkube_api::registry::ResourceInfo;

/// Priority of pods without a class when no class is the global default.
pub const DEFAULT_PRIORITY: i64 = 0;
/// Priority of `system-cluster-critical`.
pub const SYSTEM_CLUSTER_CRITICAL: i64 = 2_000_000_000;
/// Priority of `system-node-critical`.
pub const SYSTEM_NODE_CRITICAL: i64 = 2_000_001_000;

/// The PriorityClasses every cluster has from the start.
pub fn system_priority_classes() -> Vec<Value> {
    [
        (
            "system-node-critical",
            SYSTEM_NODE_CRITICAL,
            "Used for system critical pods that must not be moved from their current node.",
        ),
        (
            "system-cluster-critical",
            SYSTEM_CLUSTER_CRITICAL,
            "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.",
        ),
    ]
    .into_iter()
    .map(|(name, value, description)| {
        json!({
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass",
            "metadata": {"name": name},
            "value": value,
            "globalDefault": false,
            "description": description,
            "preemptionPolicy": "PreemptLowerPriority",
        })
    })
    .collect()
}

/// Runs the admission steps for a new object of `info`'s kind.
pub async fn admit_create(rest: &Rest, info: &ResourceInfo, obj: &mut Value) -> ApiResult<()> {
    if info.group.is_empty() && info.plural == "pods" {
        priority(rest, obj).await?;
    }
    if is_priority_class(info) {
        single_global_default(rest, obj)?;
    }
    Ok(())
}

/// Runs the admission steps for an update of an object of `info`'s kind.
pub fn admit_update(rest: &Rest, info: &ResourceInfo, new: &Value) -> ApiResult<()> {
    if is_priority_class(info) {
        single_global_default(rest, new)?;
    }
    Ok(())
}

/// Refuses to delete the built-in PriorityClasses, as upstream's registry does.
pub fn admit_delete(info: &ResourceInfo, name: &str) -> ApiResult<()> {
    let system = system_priority_classes()
        .iter()
        .any(|pc| pc.pointer("/metadata/name").and_then(Value::as_str) == Some(name));
    if is_priority_class(info) && system {
        return Err(ApiError {
            details: Some(Box::new(Details {
                name: name.to_string(),
                group: "scheduling.k8s.io".into(),
                kind: "priorityclasses".into(),
                ..Details::default()
            })),
            ..ApiError::forbidden(format!(
                "priorityclasses.scheduling.k8s.io \"{name}\" is forbidden: this is a system priority class and cannot be deleted"
            ))
        });
    }
    Ok(())
}

fn is_priority_class(info: &ResourceInfo) -> bool {
    info.group == "scheduling.k8s.io" && info.plural == "priorityclasses"
}

/// Only one PriorityClass may be the global default (upstream's priority admission).
fn single_global_default(rest: &Rest, pc: &Value) -> ApiResult<()> {
    if pc.get("globalDefault").and_then(Value::as_bool) != Some(true) {
        return Ok(());
    }
    let name = pc
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    match default_class(rest)? {
        Some((existing, _, _)) if existing != name => Err(ApiError {
            details: Some(Box::new(Details {
                name: name.to_string(),
                group: "scheduling.k8s.io".into(),
                kind: "priorityclasses".into(),
                ..Details::default()
            })),
            ..ApiError::forbidden(format!(
                "priorityclasses.scheduling.k8s.io \"{name}\" is forbidden: PriorityClass {existing} is already marked as default. Only one default can exist"
            ))
        }),
        _ => Ok(()),
    }
}

fn forbidden(pod: &str, message: String) -> ApiError {
    ApiError {
        details: Some(Box::new(Details {
            name: pod.to_string(),
            kind: "pods".into(),
            ..Details::default()
        })),
        ..ApiError::forbidden(format!("pods \"{pod}\" is forbidden: {message}"))
    }
}

/// (name, value, preemptionPolicy) of a PriorityClass object.
fn class_of(pc: &Value) -> (String, i64, Option<String>) {
    (
        pc.pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        pc.get("value").and_then(Value::as_i64).unwrap_or(0),
        pc.get("preemptionPolicy")
            .and_then(Value::as_str)
            .map(str::to_string),
    )
}

/// The global default class: the one with `globalDefault: true` (the lowest if several).
fn default_class(rest: &Rest) -> ApiResult<Option<(String, i64, Option<String>)>> {
    let Some(info) = rest
        .registry
        .get("scheduling.k8s.io", "v1", "priorityclasses")
    else {
        return Ok(None);
    };
    let prefix = crate::rest::resource_prefix(info);
    let (items, _) = rest.watch_cache(info)?.list(prefix.as_bytes());
    Ok(items
        .iter()
        .filter(|pc| pc.get("globalDefault").and_then(Value::as_bool) == Some(true))
        .map(|pc| class_of(pc))
        .min_by_key(|(_, value, _)| *value))
}

async fn priority(rest: &Rest, pod: &mut Value) -> ApiResult<()> {
    let name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    let class_name = spec
        .get("priorityClassName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(str::to_string);
    let (class, value, policy) = match &class_name {
        Some(class) => {
            let info = rest
                .registry
                .get("scheduling.k8s.io", "v1", "priorityclasses")
                .ok_or_else(|| ApiError::internal("priorityclasses are not registered"))?;
            match rest.get(info, None, class).await {
                Ok(current) => class_of(&current.object),
                Err(e) if e.code == 404 => {
                    return Err(forbidden(
                        &name,
                        format!("no PriorityClass with name {class} was found"),
                    ));
                }
                Err(e) => return Err(e),
            }
        }
        None => default_class(rest)?.unwrap_or_else(|| {
            (
                String::new(),
                DEFAULT_PRIORITY,
                Some("PreemptLowerPriority".into()),
            )
        }),
    };
    if let Some(given) = spec.get("priority").and_then(Value::as_i64)
        && given != value
    {
        return Err(forbidden(
            &name,
            format!(
                "the integer value of priority ({given}) must not be provided in pod spec; priority admission controller computed {value} from the given PriorityClass name"
            ),
        ));
    }
    spec.insert("priority".into(), json!(value));
    if let Some(policy) = policy {
        if let Some(given) = spec.get("preemptionPolicy").and_then(Value::as_str)
            && given != policy
        {
            return Err(forbidden(
                &name,
                format!(
                    "the string value of PreemptionPolicy ({given}) must not be provided in pod spec; priority admission controller computed {policy} from the given PriorityClass name"
                ),
            ));
        }
        spec.insert("preemptionPolicy".into(), json!(policy));
    }
    if class_name.is_none() && !class.is_empty() {
        spec.insert("priorityClassName".into(), json!(class));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_classes() {
        let classes = system_priority_classes();
        let values: Vec<(String, i64, Option<String>)> = classes.iter().map(class_of).collect();
        assert_eq!(
            values,
            vec![
                (
                    "system-node-critical".into(),
                    2_000_001_000,
                    Some("PreemptLowerPriority".into())
                ),
                (
                    "system-cluster-critical".into(),
                    2_000_000_000,
                    Some("PreemptLowerPriority".into())
                ),
            ]
        );
    }

    #[test]
    fn forbidden_message_names_the_pod() {
        let e = forbidden("p", "no PriorityClass with name x was found".into());
        assert_eq!(e.code, 403);
        assert_eq!(
            e.message,
            "pods \"p\" is forbidden: no PriorityClass with name x was found"
        );
    }
}
