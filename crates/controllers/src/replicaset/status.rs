//! Pure parts of the ReplicaSet controller: which pods go first when scaling down, how
//! many to create per batch, and the status the pods add up to.

use std::cmp::Ordering;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::claim::Labels;
use crate::pods::{is_available, ready_since};

/// At most this many pods are created or deleted per sync (upstream `BurstReplicas`).
pub const BURST_REPLICAS: usize = 500;

/// The annotation that lowers a pod's cost of deletion (`controller.kubernetes.io/pod-deletion-cost`).
pub const POD_DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// Sizes of the slow-start batches for `n` creations: 1, 2, 4, ... (upstream
/// `slowStartBatch` with `SlowStartInitialBatchSize` 1), the last one cut to what is left.
pub fn slow_start_batches(n: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let (mut left, mut size) = (n, 1usize);
    while left > 0 {
        let batch = size.min(left);
        out.push(batch);
        left -= batch;
        size *= 2;
    }
    out
}

fn phase_rank(pod: &Pod) -> u8 {
    match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Unknown") => 1,
        Some("Running") => 2,
        _ => 0,
    }
}

fn deletion_cost(pod: &Pod) -> i64 {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(POD_DELETION_COST))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn restarts(pod: &Pod) -> i32 {
    pod.status
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
        .map(|c| c.restart_count)
        .max()
        .unwrap_or(0)
}

/// Orders pods for deletion, the pod to delete first first (upstream `ActivePods`,
/// simplified: no ranking by co-located pods):
/// 1. not yet on a node before on a node;
/// 2. Pending, then Unknown, then Running;
/// 3. not ready before ready;
/// 4. lower `pod-deletion-cost` first;
/// 5. ready for less time before ready for longer;
/// 6. more container restarts first;
/// 7. newer before older.
pub fn deletion_order(a: &Pod, b: &Pod) -> Ordering {
    let assigned = |p: &Pod| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some();
    let (ra, rb) = (ready_since(a), ready_since(b));
    assigned(a)
        .cmp(&assigned(b))
        .then_with(|| phase_rank(a).cmp(&phase_rank(b)))
        .then_with(|| ra.is_some().cmp(&rb.is_some()))
        .then_with(|| deletion_cost(a).cmp(&deletion_cost(b)))
        // Both ready (or both not): the more recently ready goes first.
        .then_with(|| rb.cmp(&ra))
        .then_with(|| restarts(b).cmp(&restarts(a)))
        .then_with(|| {
            let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
            created(b).cmp(&created(a))
        })
}

/// The `n` pods to delete first.
pub fn pods_to_delete(pods: &[Arc<Pod>], n: usize) -> Vec<Arc<Pod>> {
    let mut sorted = pods.to_vec();
    sorted.sort_by(|a, b| deletion_order(a, b));
    sorted.truncate(n);
    sorted
}

/// What went wrong while creating or deleting pods (for the `ReplicaFailure` condition).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManageFailure {
    /// `FailedCreate` or `FailedDelete`.
    pub reason: &'static str,
    /// The error.
    pub message: String,
}

/// What the status depends on in the controller's object.
#[derive(Debug, Clone, Copy, Default)]
pub struct StatusSpec<'a> {
    /// `metadata.generation` (becomes `observedGeneration`).
    pub generation: Option<i64>,
    /// The template's labels (for `fullyLabeledReplicas`).
    pub template_labels: Option<&'a Labels>,
    /// `spec.minReadySeconds`.
    pub min_ready_seconds: i32,
}

/// The status of a ReplicaSet (or ReplicationController) with `active` pods (not finished,
/// not being deleted) and `terminating` ones, as upstream `calculateStatus`.
pub fn calculate_status(
    current: &ReplicaSetStatus,
    spec: StatusSpec<'_>,
    active: &[Arc<Pod>],
    terminating: i32,
    failure: Option<&ManageFailure>,
    now: Timestamp,
) -> ReplicaSetStatus {
    let StatusSpec {
        generation,
        template_labels,
        min_ready_seconds,
    } = spec;
    let fully_labeled = active
        .iter()
        .filter(|p| {
            template_labels.is_none_or(|want| {
                let have = p.metadata.labels.as_ref();
                want.iter()
                    .all(|(k, v)| have.and_then(|h| h.get(k)) == Some(v))
            })
        })
        .count();
    let ready = active.iter().filter(|p| ready_since(p).is_some()).count();
    let available = active
        .iter()
        .filter(|p| is_available(p, min_ready_seconds, now))
        .count();
    let mut conditions = current.conditions.clone().unwrap_or_default();
    let existing = conditions.iter().position(|c| c.type_ == "ReplicaFailure");
    match (failure, existing) {
        (Some(f), None) => conditions.push(ReplicaSetCondition {
            type_: "ReplicaFailure".into(),
            status: "True".into(),
            reason: Some(f.reason.into()),
            message: Some(f.message.clone()),
            last_transition_time: Some(Time(now)),
        }),
        (None, Some(i)) => {
            conditions.remove(i);
        }
        _ => {}
    }
    ReplicaSetStatus {
        replicas: active.len() as i32,
        fully_labeled_replicas: Some(fully_labeled as i32),
        ready_replicas: Some(ready as i32),
        available_replicas: Some(available as i32),
        terminating_replicas: Some(terminating),
        observed_generation: generation.or(current.observed_generation),
        conditions: (!conditions.is_empty()).then_some(conditions),
    }
}

/// Whether two statuses differ in what the controller writes (zero and absent counts are
/// the same).
pub fn status_differs(a: &ReplicaSetStatus, b: &ReplicaSetStatus) -> bool {
    let n = |v: Option<i32>| v.unwrap_or(0);
    a.replicas != b.replicas
        || n(a.fully_labeled_replicas) != n(b.fully_labeled_replicas)
        || n(a.ready_replicas) != n(b.ready_replicas)
        || n(a.available_replicas) != n(b.available_replicas)
        || n(a.terminating_replicas) != n(b.terminating_replicas)
        || a.observed_generation != b.observed_generation
        || a.conditions.as_deref().unwrap_or_default()
            != b.conditions.as_deref().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::collections::BTreeMap;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn pod(name: &str, node: bool, phase: &str, ready_at: Option<i64>, created: i64) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                creation_timestamp: Some(Time(at(created))),
                labels: Some(BTreeMap::from([("app".into(), "web".into())])),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: node.then(|| "n1".into()),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: ready_at.map(|t| {
                    vec![PodCondition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        last_transition_time: Some(Time(at(t))),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
        }
    }

    fn name(p: &Arc<Pod>) -> &str {
        p.metadata.name.as_deref().unwrap()
    }

    #[test]
    fn slow_start_doubles_batches() {
        assert_eq!(slow_start_batches(0), Vec::<usize>::new());
        assert_eq!(slow_start_batches(1), [1]);
        assert_eq!(slow_start_batches(10), [1, 2, 4, 3]);
        assert_eq!(slow_start_batches(15), [1, 2, 4, 8]);
    }

    #[test]
    fn scale_down_deletes_unassigned_pending_unready_and_newest_ready_first() {
        let pods: Vec<Arc<Pod>> = vec![
            Arc::new(pod("ready-old", true, "Running", Some(100), 10)),
            Arc::new(pod("ready-new", true, "Running", Some(200), 20)),
            Arc::new(pod("running-unready", true, "Running", None, 30)),
            Arc::new(pod("pending", true, "Pending", None, 40)),
            Arc::new(pod("unassigned", false, "Pending", None, 50)),
        ];
        let del = pods_to_delete(&pods, 5);
        let order: Vec<&str> = del.iter().map(name).collect();
        assert_eq!(
            order,
            [
                "unassigned",
                "pending",
                "running-unready",
                "ready-new",
                "ready-old"
            ]
        );
        assert_eq!(pods_to_delete(&pods, 2).len(), 2);

        // A lower deletion cost wins over readiness age.
        let mut cheap = pod("cheap", true, "Running", Some(100), 10);
        cheap
            .metadata
            .annotations
            .get_or_insert_default()
            .insert(POD_DELETION_COST.into(), "-5".into());
        let pods = vec![pods[1].clone(), Arc::new(cheap)];
        assert_eq!(name(&pods_to_delete(&pods, 1)[0]), "cheap");
    }

    #[test]
    fn status_counts_labeled_ready_available_and_sets_replica_failure() {
        let mut unlabeled = pod("c", true, "Running", Some(995), 1);
        unlabeled.metadata.labels = None;
        let pods: Vec<Arc<Pod>> = vec![
            Arc::new(pod("a", true, "Running", Some(900), 1)),
            Arc::new(pod("b", true, "Pending", None, 1)),
            Arc::new(unlabeled),
        ];
        let labels = BTreeMap::from([("app".to_string(), "web".to_string())]);
        let failure = ManageFailure {
            reason: "FailedCreate",
            message: "quota".into(),
        };
        let spec = StatusSpec {
            generation: Some(3),
            template_labels: Some(&labels),
            min_ready_seconds: 10,
        };
        let s = calculate_status(
            &ReplicaSetStatus::default(),
            spec,
            &pods,
            1,
            Some(&failure),
            at(1000),
        );
        assert_eq!(s.replicas, 3);
        assert_eq!(s.fully_labeled_replicas, Some(2));
        assert_eq!(s.ready_replicas, Some(2));
        // "c" is ready for 5 s only.
        assert_eq!(s.available_replicas, Some(1));
        assert_eq!(s.terminating_replicas, Some(1));
        assert_eq!(s.observed_generation, Some(3));
        let cond = &s.conditions.as_ref().unwrap()[0];
        assert_eq!(
            (cond.type_.as_str(), cond.reason.as_deref()),
            ("ReplicaFailure", Some("FailedCreate"))
        );
        assert!(status_differs(&s, &ReplicaSetStatus::default()));
        // Success clears the condition.
        let s2 = calculate_status(&s, spec, &pods, 1, None, at(1000));
        assert!(s2.conditions.is_none());
        assert!(!status_differs(&s2, &s2.clone()));
    }
}
