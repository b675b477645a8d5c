//! Label selectors and the controller-reference dance (upstream `ControllerRefManager`):
//! a controller adopts orphans its selector matches and releases the children it no longer
//! matches. Both are JSON patches guarded by `test` operations on the child's UID and
//! resourceVersion, so a concurrent change makes the patch fail instead of clobbering it.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use serde_json::{Value, json};

/// Labels of an object.
pub type Labels = BTreeMap<String, String>;

/// Whether `sel` selects `labels` (`matchLabels` and `matchExpressions`). An empty selector
/// selects nothing here: workload controllers refuse to claim everything.
pub fn selector_matches(sel: &LabelSelector, labels: Option<&Labels>) -> bool {
    if selector_is_empty(sel) {
        return false;
    }
    let empty = Labels::new();
    let labels = labels.unwrap_or(&empty);
    let plain = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    plain
        && sel.match_expressions.iter().flatten().all(|req| {
            let values = req.values.as_deref().unwrap_or_default();
            let got = labels.get(&req.key);
            match req.operator.as_str() {
                "In" => got.is_some_and(|v| values.contains(v)),
                "NotIn" => got.is_none_or(|v| !values.contains(v)),
                "Exists" => got.is_some(),
                "DoesNotExist" => got.is_none(),
                _ => false,
            }
        })
}

/// Neither `matchLabels` nor `matchExpressions`.
pub fn selector_is_empty(sel: &LabelSelector) -> bool {
    sel.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && sel.match_expressions.as_ref().is_none_or(|m| m.is_empty())
}

/// Whether the plain selector map (ReplicationController) selects `labels`; empty selects
/// nothing.
pub fn map_selector_matches(sel: &Labels, labels: Option<&Labels>) -> bool {
    !sel.is_empty() && labels.is_some_and(|l| sel.iter().all(|(k, v)| l.get(k) == Some(v)))
}

/// The `matchLabels`-only server-side form of `sel` (`a=b,c=d`), for list calls.
pub fn selector_string(sel: &LabelSelector) -> String {
    sel.match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn guarded(meta: &ObjectMeta, refs: Vec<OwnerReference>) -> Value {
    let mut ops = vec![json!({"op": "test", "path": "/metadata/uid", "value": meta.uid})];
    if let Some(rv) = &meta.resource_version {
        ops.push(json!({"op": "test", "path": "/metadata/resourceVersion", "value": rv}));
    }
    ops.push(json!({"op": "add", "path": "/metadata/ownerReferences", "value": refs}));
    Value::Array(ops)
}

/// The JSON patch that makes `owner` the controller of the object with `meta`.
pub fn adopt_patch(meta: &ObjectMeta, owner: OwnerReference) -> Value {
    let mut refs: Vec<OwnerReference> = meta
        .owner_references
        .iter()
        .flatten()
        .filter(|r| r.uid != owner.uid)
        .cloned()
        .collect();
    refs.push(owner);
    guarded(meta, refs)
}

/// The JSON patch that drops the owner reference to `owner_uid` from the object with `meta`.
pub fn release_patch(meta: &ObjectMeta, owner_uid: &str) -> Value {
    let refs = meta
        .owner_references
        .iter()
        .flatten()
        .filter(|r| r.uid != owner_uid)
        .cloned()
        .collect();
    guarded(meta, refs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selectors_match_labels_and_expressions_and_empty_matches_nothing() {
        let sel = LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![
                LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: "In".into(),
                    values: Some(vec!["a".into(), "b".into()]),
                },
                LabelSelectorRequirement {
                    key: "canary".into(),
                    operator: "DoesNotExist".into(),
                    values: None,
                },
            ]),
        };
        assert!(selector_matches(
            &sel,
            Some(&labels(&[("app", "web"), ("tier", "b")]))
        ));
        assert!(!selector_matches(
            &sel,
            Some(&labels(&[("app", "web"), ("tier", "c")]))
        ));
        assert!(!selector_matches(
            &sel,
            Some(&labels(&[("app", "web"), ("tier", "a"), ("canary", "1")]))
        ));
        assert!(!selector_matches(&sel, None));
        assert!(!selector_matches(
            &LabelSelector::default(),
            Some(&labels(&[("x", "y")]))
        ));
        assert!(map_selector_matches(
            &labels(&[("app", "web")]),
            Some(&labels(&[("app", "web"), ("x", "y")]))
        ));
        assert!(!map_selector_matches(&Labels::new(), Some(&labels(&[]))));
        assert_eq!(selector_string(&sel), "app=web");
    }

    #[test]
    fn adoption_and_release_patches_are_guarded_and_keep_other_owners() {
        let other = OwnerReference {
            uid: "other".into(),
            name: "o".into(),
            ..Default::default()
        };
        let meta = ObjectMeta {
            uid: Some("pod-uid".into()),
            resource_version: Some("7".into()),
            owner_references: Some(vec![other.clone()]),
            ..Default::default()
        };
        let mine = OwnerReference {
            uid: "rs".into(),
            controller: Some(true),
            ..Default::default()
        };
        let p = adopt_patch(&meta, mine);
        assert_eq!(p[0]["op"], "test");
        assert_eq!(p[0]["value"], "pod-uid");
        assert_eq!(p[1]["value"], "7");
        assert_eq!(p[2]["value"].as_array().unwrap().len(), 2);
        assert_eq!(p[2]["value"][1]["uid"], "rs");
        let r = release_patch(&meta, "other");
        assert_eq!(r[2]["value"], json!([]));
    }
}
