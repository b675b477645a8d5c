//! The Deployment's status from its ReplicaSets, and the `Progressing` / `Available`
//! conditions (upstream `calculateStatus`, `syncRolloutStatus`, `DeploymentComplete`,
//! `DeploymentProgressing`, `DeploymentTimedOut`, `checkPausedConditions`). All pure.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};
use k8s_openapi::jiff::Timestamp;

use super::util::{
    condition, max_unavailable, new_condition, progress_deadline, reason, remove_condition,
    replicas, rs_actual, rs_available, set_condition,
};

/// The status the ReplicaSets add up to; conditions other than `Available` are kept.
pub fn calculate_status(
    all: &[&ReplicaSet],
    new: Option<&ReplicaSet>,
    d: &Deployment,
    now: Timestamp,
) -> DeploymentStatus {
    let current = d.status.clone().unwrap_or_default();
    let total: i32 = all.iter().map(|rs| rs_actual(rs)).sum();
    let available: i32 = all.iter().map(|rs| rs_available(rs)).sum();
    let ready: i32 = all
        .iter()
        .map(|rs| {
            rs.status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0)
        })
        .sum();
    let mut status = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(total),
        updated_replicas: Some(new.map_or(0, rs_actual)),
        ready_replicas: Some(ready),
        available_replicas: Some(available),
        unavailable_replicas: Some((total - available).max(0)),
        // Upstream fills it only behind an alpha gate (DeploymentReplicaSetTerminatingReplicas).
        terminating_replicas: None,
        collision_count: current.collision_count,
        conditions: current.conditions.clone(),
    };
    if available >= replicas(d) - max_unavailable(d) {
        set_condition(
            &mut status,
            new_condition(
                "Available",
                "True",
                reason::MIN_AVAILABLE,
                "Deployment has minimum availability.",
                now,
            ),
        );
    } else {
        set_condition(
            &mut status,
            new_condition(
                "Available",
                "False",
                reason::MIN_UNAVAILABLE,
                "Deployment does not have minimum availability.",
                now,
            ),
        );
    }
    status
}

fn n(v: Option<i32>) -> i32 {
    v.unwrap_or(0)
}

/// Every replica updated and available, no old ones left, status observed.
pub fn is_complete(d: &Deployment, s: &DeploymentStatus) -> bool {
    let want = replicas(d);
    n(s.updated_replicas) == want
        && n(s.replicas) == want
        && n(s.available_replicas) == want
        && s.observed_generation >= d.metadata.generation
}

/// Whether `new` shows progress over the Deployment's current status.
pub fn is_progressing(d: &Deployment, new: &DeploymentStatus) -> bool {
    let old = d.status.clone().unwrap_or_default();
    let old_old = n(old.replicas) - n(old.updated_replicas);
    let new_old = n(new.replicas) - n(new.updated_replicas);
    n(new.updated_replicas) > n(old.updated_replicas)
        || new_old < old_old
        || n(new.ready_replicas) > n(old.ready_replicas)
        || n(new.available_replicas) > n(old.available_replicas)
}

/// Whether the last progress is older than `progressDeadlineSeconds`.
pub fn timed_out(d: &Deployment, s: &DeploymentStatus, now: Timestamp) -> bool {
    let Some(deadline) = progress_deadline(d) else {
        return false;
    };
    let Some(c) = condition(s, "Progressing") else {
        return false;
    };
    match c.reason.as_deref() {
        Some(reason::NEW_RS_AVAILABLE) => false,
        Some(reason::TIMED_OUT) => true,
        _ => c
            .last_update_time
            .as_ref()
            .is_some_and(|t| t.0.as_second() + i64::from(deadline) < now.as_second()),
    }
}

/// The rollout's status: [`calculate_status`] plus the `Progressing` condition and the
/// ReplicaSets' `ReplicaFailure` (upstream `syncRolloutStatus`).
pub fn rollout_status(
    all: &[&ReplicaSet],
    new: Option<&ReplicaSet>,
    d: &Deployment,
    now: Timestamp,
) -> DeploymentStatus {
    let mut s = calculate_status(all, new, d, now);
    if progress_deadline(d).is_none() {
        remove_condition(&mut s, "Progressing");
    }
    let current = d.status.clone().unwrap_or_default();
    let cur = condition(&current, "Progressing");
    let already_complete = n(s.replicas) == n(s.updated_replicas)
        && cur.is_some_and(|c| c.reason.as_deref() == Some(reason::NEW_RS_AVAILABLE));
    let rs_name = new.and_then(|rs| rs.metadata.name.clone());
    let subject = match &rs_name {
        Some(name) => format!("ReplicaSet {name:?}"),
        None => format!(
            "Deployment {:?}",
            d.metadata.name.as_deref().unwrap_or_default()
        ),
    };
    if progress_deadline(d).is_some() && !already_complete {
        if is_complete(d, &s) {
            set_condition(
                &mut s,
                new_condition(
                    "Progressing",
                    "True",
                    reason::NEW_RS_AVAILABLE,
                    format!("{subject} has successfully progressed."),
                    now,
                ),
            );
        } else if is_progressing(d, &s) {
            let mut c = new_condition(
                "Progressing",
                "True",
                reason::RS_UPDATED,
                format!("{subject} is progressing."),
                now,
            );
            // Progress refreshes lastUpdateTime even when the reason stays.
            if let Some(cur) = cur {
                if cur.status == "True" {
                    c.last_transition_time = cur.last_transition_time.clone();
                }
                remove_condition(&mut s, "Progressing");
            }
            set_condition(&mut s, c);
        } else if timed_out(d, &s, now) {
            set_condition(
                &mut s,
                new_condition(
                    "Progressing",
                    "False",
                    reason::TIMED_OUT,
                    format!("{subject} has timed out progressing."),
                    now,
                ),
            );
        }
    }
    match replica_failure(all, new) {
        Some(c) => set_condition(&mut s, c),
        None => remove_condition(&mut s, "ReplicaFailure"),
    }
    s
}

/// The `ReplicaFailure` of the new ReplicaSet, else of an old one.
fn replica_failure(all: &[&ReplicaSet], new: Option<&ReplicaSet>) -> Option<DeploymentCondition> {
    let of = |rs: &ReplicaSet| {
        rs.status
            .as_ref()?
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "ReplicaFailure")
            .map(|c| DeploymentCondition {
                type_: c.type_.clone(),
                status: c.status.clone(),
                reason: c.reason.clone(),
                message: c.message.clone(),
                last_update_time: c.last_transition_time.clone(),
                last_transition_time: c.last_transition_time.clone(),
            })
    };
    new.and_then(of)
        .or_else(|| all.iter().find_map(|rs| of(rs)))
}

/// When to look again at a rollout that may time out (upstream `requeueStuckDeployment`).
pub fn requeue_after(d: &Deployment, s: &DeploymentStatus, now: Timestamp) -> Option<Duration> {
    let deadline = progress_deadline(d)?;
    let c = condition(s, "Progressing")?;
    if is_complete(d, s) || c.reason.as_deref() == Some(reason::TIMED_OUT) {
        return None;
    }
    let since = c.last_update_time.as_ref()?.0.as_second();
    let left = since + i64::from(deadline) - now.as_second();
    Some(Duration::from_secs(left.max(0) as u64 + 1))
}

/// The `Progressing` condition for pausing and resuming (upstream
/// `checkPausedConditions`); returns whether it changed.
pub fn paused_condition(d: &Deployment, s: &mut DeploymentStatus, now: Timestamp) -> bool {
    if progress_deadline(d).is_none() {
        return false;
    }
    let paused = super::util::is_paused(d);
    let shows_paused =
        condition(s, "Progressing").is_some_and(|c| c.reason.as_deref() == Some(reason::PAUSED));
    if paused && !shows_paused {
        set_condition(
            s,
            new_condition(
                "Progressing",
                "Unknown",
                reason::PAUSED,
                "Deployment is paused",
                now,
            ),
        );
        true
    } else if !paused && shows_paused {
        set_condition(
            s,
            new_condition(
                "Progressing",
                "Unknown",
                reason::RESUMED,
                "Deployment is resumed",
                now,
            ),
        );
        true
    } else {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, ReplicaSetSpec, ReplicaSetStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    fn rs(name: &str, actual: i32, ready: i32, available: i32) -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(actual),
                ..Default::default()
            }),
            status: Some(ReplicaSetStatus {
                replicas: actual,
                ready_replicas: Some(ready),
                available_replicas: Some(available),
                ..Default::default()
            }),
        }
    }

    fn deploy(replicas: i32, deadline: i32) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                name: Some("web".into()),
                generation: Some(2),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                progress_deadline_seconds: Some(deadline),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn status_sums_replica_sets_and_sets_availability() {
        let (old, new) = (rs("old", 2, 2, 2), rs("new", 2, 1, 1));
        let d = deploy(4, 600);
        let s = calculate_status(&[&old, &new], Some(&new), &d, at(10));
        assert_eq!(s.replicas, Some(4));
        assert_eq!(s.updated_replicas, Some(2));
        assert_eq!(s.ready_replicas, Some(3));
        assert_eq!(s.available_replicas, Some(3));
        assert_eq!(s.unavailable_replicas, Some(1));
        assert_eq!(s.observed_generation, Some(2));
        // 25% of 4 may be unavailable: 3 is enough.
        let c = condition(&s, "Available").unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_deref()),
            ("True", Some(reason::MIN_AVAILABLE))
        );
        let s = calculate_status(&[&rs("new", 4, 0, 0)], None, &d, at(10));
        assert_eq!(condition(&s, "Available").unwrap().status, "False");
        assert_eq!(s.updated_replicas, Some(0));
    }

    #[test]
    fn progressing_moves_from_updated_to_complete_or_times_out() {
        let mut d = deploy(2, 5);
        let stuck = rs("new", 2, 0, 0);
        // First sight: progress (replicas appeared).
        let s = rollout_status(&[&stuck], Some(&stuck), &d, at(100));
        let c = condition(&s, "Progressing").unwrap();
        assert_eq!(c.reason.as_deref(), Some(reason::RS_UPDATED));
        assert_eq!(
            c.message.as_deref(),
            Some("ReplicaSet \"new\" is progressing.")
        );
        d.status = Some(s);
        // No progress, within the deadline: unchanged, and a requeue at the deadline.
        let s = rollout_status(&[&stuck], Some(&stuck), &d, at(103));
        assert_eq!(
            condition(&s, "Progressing").unwrap().reason.as_deref(),
            Some(reason::RS_UPDATED)
        );
        assert_eq!(requeue_after(&d, &s, at(103)), Some(Duration::from_secs(3)));
        // Past the deadline.
        let s = rollout_status(&[&stuck], Some(&stuck), &d, at(106));
        let c = condition(&s, "Progressing").unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_deref()),
            ("False", Some(reason::TIMED_OUT))
        );
        assert_eq!(requeue_after(&d, &s, at(106)), None);

        let done = rs("new", 2, 2, 2);
        let s = rollout_status(&[&done], Some(&done), &d, at(107));
        let c = condition(&s, "Progressing").unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_deref()),
            ("True", Some(reason::NEW_RS_AVAILABLE))
        );
        assert!(is_complete(&d, &s));
    }

    #[test]
    fn pausing_and_resuming_show_in_progressing() {
        let mut d = deploy(1, 600);
        let mut s = DeploymentStatus::default();
        assert!(!paused_condition(&d, &mut s, at(1)));
        d.spec.as_mut().unwrap().paused = Some(true);
        assert!(paused_condition(&d, &mut s, at(1)));
        assert!(!paused_condition(&d, &mut s, at(2)));
        assert_eq!(
            condition(&s, "Progressing").unwrap().reason.as_deref(),
            Some(reason::PAUSED)
        );
        d.spec.as_mut().unwrap().paused = Some(false);
        assert!(paused_condition(&d, &mut s, at(3)));
        assert_eq!(
            condition(&s, "Progressing").unwrap().reason.as_deref(),
            Some(reason::RESUMED)
        );
        let _ = Time(at(0));
    }
}
