//! Pure helpers of the deployment controller (upstream `deployment/util`): fenceposts
//! (maxSurge / maxUnavailable), the pod-template hash, revisions and annotations,
//! conditions, and the orders ReplicaSets are walked in.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

/// The revision of a ReplicaSet (and the latest one, on the Deployment).
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// Revisions a ReplicaSet had before it was rolled back to.
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
/// `spec.replicas` of the Deployment when it last scaled the ReplicaSet.
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// `spec.replicas + maxSurge` of the Deployment when it last scaled the ReplicaSet.
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
/// The label that tells the ReplicaSets of one Deployment apart.
pub const HASH_LABEL: &str = "pod-template-hash";

/// Deployment annotations that are not copied to its ReplicaSets.
const NOT_COPIED: [&str; 6] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];

/// Condition types and reasons (upstream's constants, which `kubectl rollout status` reads).
pub mod reason {
    /// `Progressing` True: a new ReplicaSet was created.
    pub const NEW_RS_CREATED: &str = "NewReplicaSetCreated";
    /// `Progressing` True: the new ReplicaSet already existed.
    pub const FOUND_NEW_RS: &str = "FoundNewReplicaSet";
    /// `Progressing` True: the rollout moved.
    pub const RS_UPDATED: &str = "ReplicaSetUpdated";
    /// `Progressing` True: the rollout is complete.
    pub const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
    /// `Progressing` False: no progress within `progressDeadlineSeconds`.
    pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";
    /// `Progressing` False: the new ReplicaSet could not be created.
    pub const RS_CREATE_ERROR: &str = "ReplicaSetCreateError";
    /// `Progressing` Unknown: paused.
    pub const PAUSED: &str = "DeploymentPaused";
    /// `Progressing` Unknown: resumed.
    pub const RESUMED: &str = "DeploymentResumed";
    /// `Available` True.
    pub const MIN_AVAILABLE: &str = "MinimumReplicasAvailable";
    /// `Available` False.
    pub const MIN_UNAVAILABLE: &str = "MinimumReplicasUnavailable";
}

/// `spec.replicas` (default 1).
pub fn replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

/// `spec.replicas` of a ReplicaSet (default 1).
pub fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

/// `status.replicas` of a ReplicaSet.
pub fn rs_actual(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().map_or(0, |s| s.replicas)
}

/// `status.availableReplicas` of a ReplicaSet.
pub fn rs_available(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

/// Whether the strategy is RollingUpdate (the default).
pub fn is_rolling(d: &Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        != Some("Recreate")
}

/// `spec.paused`.
pub fn is_paused(d: &Deployment) -> bool {
    d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false)
}

/// An int or a percentage of `total`; percentages round up or down (upstream
/// `GetScaledValueFromIntOrPercent`).
pub fn scaled_value(v: &IntOrString, total: i32, round_up: bool) -> Result<i32, String> {
    match v {
        IntOrString::Int(n) => Ok(*n),
        IntOrString::String(s) => {
            let pct: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| format!("invalid value for IntOrString: invalid value {s:?}"))?;
            let scaled = pct * i64::from(total);
            let v = if round_up {
                (scaled + 99).div_euclid(100)
            } else {
                scaled.div_euclid(100)
            };
            Ok(v as i32)
        }
    }
}

/// `(maxSurge, maxUnavailable)` for `desired` replicas: surge rounds up, unavailable
/// down, and when both come to zero unavailable is 1 (upstream `ResolveFenceposts`).
pub fn resolve_fenceposts(
    max_surge: Option<&IntOrString>,
    max_unavailable: Option<&IntOrString>,
    desired: i32,
) -> Result<(i32, i32), String> {
    let zero = IntOrString::Int(0);
    let surge = scaled_value(max_surge.unwrap_or(&zero), desired, true)?;
    let mut unavailable = scaled_value(max_unavailable.unwrap_or(&zero), desired, false)?;
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    Ok((surge, unavailable))
}

fn fenceposts(d: &Deployment) -> (i32, i32) {
    let ru = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    resolve_fenceposts(
        ru.and_then(|r| r.max_surge.as_ref()),
        ru.and_then(|r| r.max_unavailable.as_ref()),
        replicas(d),
    )
    .unwrap_or((0, 0))
}

/// The resolved maxSurge (0 for Recreate or an invalid value).
pub fn max_surge(d: &Deployment) -> i32 {
    if !is_rolling(d) {
        return 0;
    }
    fenceposts(d).0
}

/// The resolved maxUnavailable, at most `spec.replicas` (0 for Recreate or no replicas).
pub fn max_unavailable(d: &Deployment) -> i32 {
    if !is_rolling(d) || replicas(d) == 0 {
        return 0;
    }
    fenceposts(d).1.min(replicas(d))
}

/// FNV-1a, 32 bits.
pub fn fnv32a(data: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in data {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// Upstream `rand.SafeEncodeString`: each byte mapped onto consonants and digits that
/// cannot spell words.
pub fn safe_encode(s: &str) -> String {
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    s.bytes()
        .map(|b| ALPHANUMS[usize::from(b) % ALPHANUMS.len()] as char)
        .collect()
}

/// The `pod-template-hash` of `template` (upstream `ComputeHash`: FNV-32a of the template,
/// then of the collision count, rendered in decimal with the safe alphabet). The template
/// is hashed as its JSON, which is stable for equal templates (maps are ordered).
pub fn compute_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut data = serde_json::to_vec(template).unwrap_or_default();
    if let Some(n) = collision_count {
        let mut bytes = [0u8; 8];
        bytes[..4].copy_from_slice(&(n as u32).to_le_bytes());
        data.extend_from_slice(&bytes);
    }
    safe_encode(&fnv32a(&data).to_string())
}

/// `value` without nulls, empty maps and empty lists (how the server may round-trip them).
fn normalized(value: Value) -> Value {
    match value {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| (k, normalized(v)))
                .filter(|(_, v)| match v {
                    Value::Null => false,
                    Value::Object(m) => !m.is_empty(),
                    Value::Array(a) => !a.is_empty(),
                    _ => true,
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(normalized).collect()),
        other => other,
    }
}

fn without_hash(t: &PodTemplateSpec) -> Value {
    let mut t = t.clone();
    if let Some(labels) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove(HASH_LABEL);
    }
    normalized(serde_json::to_value(&t).unwrap_or_default())
}

/// Whether two templates are equal but for the `pod-template-hash` label (upstream
/// `EqualIgnoreHash`).
pub fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    without_hash(a) == without_hash(b)
}

/// The revision annotation of an object (0 when missing or invalid).
pub fn revision_of(annotations: Option<&BTreeMap<String, String>>) -> i64 {
    annotations
        .and_then(|a| a.get(REVISION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// The revision of a ReplicaSet.
pub fn rs_revision(rs: &ReplicaSet) -> i64 {
    revision_of(rs.metadata.annotations.as_ref())
}

/// An integer annotation of a ReplicaSet.
pub fn int_annotation(rs: &ReplicaSet, key: &str) -> Option<i32> {
    rs.metadata.annotations.as_ref()?.get(key)?.parse().ok()
}

/// Copies the Deployment's annotations onto the ReplicaSet (except the controller's own);
/// returns whether anything changed.
pub fn copy_annotations(d: &Deployment, rs: &mut ReplicaSet) -> bool {
    let mut changed = false;
    let target = rs.metadata.annotations.get_or_insert_default();
    for (k, v) in d.metadata.annotations.iter().flatten() {
        if NOT_COPIED.contains(&k.as_str()) || target.get(k) == Some(v) {
            continue;
        }
        target.insert(k.clone(), v.clone());
        changed = true;
    }
    changed
}

/// Sets the desired and max replica annotations; returns whether they changed.
pub fn set_replicas_annotations(rs: &mut ReplicaSet, desired: i32, max: i32) -> bool {
    let a = rs.metadata.annotations.get_or_insert_default();
    let mut changed = false;
    for (k, v) in [(DESIRED_REPLICAS, desired), (MAX_REPLICAS, max)] {
        let v = v.to_string();
        if a.get(k) != Some(&v) {
            a.insert(k.into(), v);
            changed = true;
        }
    }
    changed
}

/// Annotations of the new ReplicaSet for `new_revision` (upstream
/// `SetNewReplicaSetAnnotations`): copied annotations, the revision (a rolled-back-to
/// ReplicaSet keeps its old revisions in `revision-history`) and, for one being created,
/// the replica annotations. Returns whether anything changed.
pub fn set_new_rs_annotations(
    d: &Deployment,
    rs: &mut ReplicaSet,
    new_revision: i64,
    exists: bool,
) -> bool {
    let mut changed = copy_annotations(d, rs);
    let a = rs.metadata.annotations.get_or_insert_default();
    let old = a.get(REVISION).cloned();
    let old_n: i64 = old.as_deref().and_then(|o| o.parse().ok()).unwrap_or(0);
    if old_n < new_revision {
        a.insert(REVISION.into(), new_revision.to_string());
        changed = true;
        if let Some(old) = old.filter(|o| !o.is_empty()) {
            let history = match a.get(REVISION_HISTORY).filter(|h| !h.is_empty()) {
                Some(h) => format!("{h},{old}"),
                None => old,
            };
            a.insert(REVISION_HISTORY.into(), history);
        }
    }
    if !exists && set_replicas_annotations(rs, replicas(d), replicas(d) + max_surge(d)) {
        changed = true;
    }
    changed
}

/// The condition of `type_`.
pub fn condition<'a>(status: &'a DeploymentStatus, type_: &str) -> Option<&'a DeploymentCondition> {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_)
}

/// A condition stamped `now`.
pub fn new_condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: impl Into<String>,
    now: Timestamp,
) -> DeploymentCondition {
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_update_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// Sets `cond` (upstream `SetDeploymentCondition`): nothing changes when status and
/// reason are the same; the transition time is kept when only the reason changes.
pub fn set_condition(status: &mut DeploymentStatus, mut cond: DeploymentCondition) {
    if let Some(cur) = condition(status, &cond.type_) {
        if cur.status == cond.status && cur.reason == cond.reason {
            return;
        }
        if cur.status == cond.status {
            cond.last_transition_time = cur.last_transition_time.clone();
        }
    }
    remove_condition(status, &cond.type_);
    status.conditions.get_or_insert_default().push(cond);
}

/// Removes the condition of `type_`.
pub fn remove_condition(status: &mut DeploymentStatus, type_: &str) {
    if let Some(c) = status.conditions.as_mut() {
        c.retain(|c| c.type_ != type_);
    }
}

/// `spec.progressDeadlineSeconds`, unless unset or "never" (`MaxInt32`).
pub fn progress_deadline(d: &Deployment) -> Option<i32> {
    d.spec
        .as_ref()
        .and_then(|s| s.progress_deadline_seconds)
        .filter(|s| *s != i32::MAX)
}

fn created(rs: &ReplicaSet) -> (Option<Timestamp>, String) {
    (
        rs.metadata.creation_timestamp.as_ref().map(|t| t.0),
        rs.metadata.name.clone().unwrap_or_default(),
    )
}

/// Oldest first (ties by name).
pub fn sort_by_creation(rss: &mut [ReplicaSet]) {
    rss.sort_by_key(created);
}

/// Largest first; among equals, newer first (scaling up) or older first (scaling down).
pub fn sort_by_size(rss: &mut [ReplicaSet], newer_first: bool) {
    rss.sort_by(|a, b| {
        rs_replicas(b).cmp(&rs_replicas(a)).then_with(|| {
            if newer_first {
                created(b).cmp(&created(a))
            } else {
                created(a).cmp(&created(b))
            }
        })
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn s(v: &str) -> IntOrString {
        IntOrString::String(v.into())
    }

    pub(crate) fn deployment(
        replicas: i32,
        surge: IntOrString,
        unavailable: IntOrString,
    ) -> Deployment {
        Deployment {
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                strategy: Some(DeploymentStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: Some(surge),
                        max_unavailable: Some(unavailable),
                    }),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn fenceposts_round_surge_up_and_unavailable_down() {
        assert_eq!(
            resolve_fenceposts(Some(&s("25%")), Some(&s("25%")), 10),
            Ok((3, 2))
        );
        assert_eq!(
            resolve_fenceposts(Some(&s("25%")), Some(&s("25%")), 1),
            Ok((1, 0))
        );
        assert_eq!(
            resolve_fenceposts(Some(&IntOrString::Int(2)), Some(&IntOrString::Int(1)), 10),
            Ok((2, 1))
        );
        // Both zero after rounding: one may be unavailable.
        assert_eq!(
            resolve_fenceposts(Some(&s("0%")), Some(&s("10%")), 5),
            Ok((0, 1))
        );
        assert!(resolve_fenceposts(Some(&s("lots")), None, 5).is_err());
        assert!(scaled_value(&s("x%"), 5, true).is_err());

        let d = deployment(4, s("25%"), s("50%"));
        assert_eq!((max_surge(&d), max_unavailable(&d)), (1, 2));
        let d = deployment(2, IntOrString::Int(0), IntOrString::Int(5));
        assert_eq!(max_unavailable(&d), 2, "capped at replicas");
        let mut d = deployment(0, s("25%"), s("25%"));
        assert_eq!(max_unavailable(&d), 0);
        d.spec.as_mut().unwrap().strategy.as_mut().unwrap().type_ = Some("Recreate".into());
        d.spec.as_mut().unwrap().replicas = Some(4);
        assert_eq!((max_surge(&d), max_unavailable(&d)), (0, 0));
    }

    #[test]
    fn template_hash_is_stable_safe_and_depends_on_template_and_collisions() {
        assert_eq!(fnv32a(b""), 0x811c_9dc5);
        assert_eq!(fnv32a(b"a"), 0xe40c_292c);
        assert_eq!(safe_encode("0123456789"), "456789bcdf");
        let mut t = PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(BTreeMap::from([("app".into(), "web".into())])),
                ..Default::default()
            }),
            spec: None,
        };
        let h = compute_hash(&t, None);
        assert_eq!(h, compute_hash(&t.clone(), None));
        assert!(
            h.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)),
            "{h}"
        );
        assert_ne!(h, compute_hash(&t, Some(1)));
        let with_hash = {
            let mut t2 = t.clone();
            t2.metadata
                .as_mut()
                .unwrap()
                .labels
                .as_mut()
                .unwrap()
                .insert(HASH_LABEL.into(), h.clone());
            t2
        };
        assert!(equal_ignore_hash(&t, &with_hash));
        t.metadata
            .as_mut()
            .unwrap()
            .labels
            .as_mut()
            .unwrap()
            .insert("v".into(), "2".into());
        assert_ne!(h, compute_hash(&t, None));
        assert!(!equal_ignore_hash(&t, &with_hash));
    }

    #[test]
    fn new_rs_annotations_carry_revision_history_and_replicas() {
        let mut d = deployment(3, s("25%"), s("25%"));
        d.metadata.annotations = Some(BTreeMap::from([
            ("kubernetes.io/change-cause".into(), "v2".into()),
            (REVISION.into(), "9".into()),
        ]));
        let mut rs = ReplicaSet::default();
        assert!(set_new_rs_annotations(&d, &mut rs, 1, false));
        let a = rs.metadata.annotations.clone().unwrap();
        assert_eq!(a[REVISION], "1");
        assert_eq!(a["kubernetes.io/change-cause"], "v2");
        assert_eq!(
            (a[DESIRED_REPLICAS].as_str(), a[MAX_REPLICAS].as_str()),
            ("3", "4")
        );
        assert!(!a.contains_key(REVISION_HISTORY));
        // Rolled back to: the revision moves on, the old one is remembered.
        assert!(set_new_rs_annotations(&d, &mut rs, 3, true));
        assert!(!set_new_rs_annotations(&d, &mut rs, 3, true));
        let a = rs.metadata.annotations.unwrap();
        assert_eq!(
            (a[REVISION].as_str(), a[REVISION_HISTORY].as_str()),
            ("3", "1")
        );
    }

    #[test]
    fn conditions_keep_transition_time_unless_status_changes() {
        let t0 = Timestamp::from_second(100).unwrap();
        let t1 = Timestamp::from_second(200).unwrap();
        let mut st = DeploymentStatus::default();
        set_condition(
            &mut st,
            new_condition("Progressing", "True", reason::NEW_RS_CREATED, "a", t0),
        );
        set_condition(
            &mut st,
            new_condition("Progressing", "True", reason::RS_UPDATED, "b", t1),
        );
        let c = condition(&st, "Progressing").unwrap();
        assert_eq!(c.reason.as_deref(), Some(reason::RS_UPDATED));
        assert_eq!(c.last_transition_time.as_ref().unwrap().0, t0);
        assert_eq!(c.last_update_time.as_ref().unwrap().0, t1);
        set_condition(
            &mut st,
            new_condition("Progressing", "False", reason::TIMED_OUT, "c", t1),
        );
        assert_eq!(
            condition(&st, "Progressing")
                .unwrap()
                .last_transition_time
                .as_ref()
                .unwrap()
                .0,
            t1
        );
        assert_eq!(st.conditions.as_ref().unwrap().len(), 1);
        remove_condition(&mut st, "Progressing");
        assert!(condition(&st, "Progressing").is_none());
    }
}
