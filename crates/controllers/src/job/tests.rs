//! Unit tests of the job controller's pure decisions.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{Job, JobSpec, JobStatus};
use k8s_openapi::api::core::v1::{Pod, PodCondition, PodStatus, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;

use super::status::*;

fn at(s: i64) -> Timestamp {
    Timestamp::from_second(s).unwrap()
}

fn job(completions: Option<i32>, parallelism: i32) -> Job {
    Job {
        metadata: ObjectMeta {
            name: Some("pi".into()),
            namespace: Some("default".into()),
            uid: Some("job-uid".into()),
            ..Default::default()
        },
        spec: Some(JobSpec {
            completions,
            parallelism: Some(parallelism),
            backoff_limit: Some(2),
            completion_mode: Some("NonIndexed".into()),
            template: PodTemplateSpec {
                metadata: None,
                spec: Some(Default::default()),
            },
            ..Default::default()
        }),
        status: Some(JobStatus {
            start_time: Some(Time(at(1000))),
            ..Default::default()
        }),
    }
}

/// A pod of the Job: `phase`, finished at `finished` (its deletion time when `deleted`).
fn pod(uid: &str, phase: &str, finalizer: bool) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(format!("pi-{uid}")),
            uid: Some(uid.into()),
            finalizers: finalizer.then(|| vec![TRACKING_FINALIZER.into()]),
            creation_timestamp: Some(Time(at(1000))),
            ..Default::default()
        },
        spec: Some(Default::default()),
        status: Some(PodStatus {
            phase: Some(phase.into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if phase == "Running" { "True" } else { "False" }.into(),
                last_transition_time: Some(Time(at(1010))),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    }
}

fn indexed(p: Pod, ix: i32) -> Pod {
    let mut p = p;
    p.metadata.annotations = Some([(COMPLETION_INDEX.into(), ix.to_string())].into());
    p
}

fn run(job: &Job, pods: &[Pod], now: i64) -> Plan {
    plan(&View {
        job,
        pods: pods.iter().collect(),
        now: at(now),
        satisfied: true,
        backoff: Backoff::default(),
    })
}

#[test]
fn completed_indexes_are_written_as_ranges() {
    let set: BTreeSet<i32> = [0, 1, 2, 4, 6, 7].into();
    assert_eq!(format_indexes(&set), "0-2,4,6-7");
    assert_eq!(format_indexes(&BTreeSet::new()), "");
    assert_eq!(parse_indexes("0-2,4,6-7", 10), set);
    // Out of range and garbage are dropped.
    assert_eq!(parse_indexes("1,3-9,x,5-2", 5), [1, 3, 4].into());
}

#[test]
fn backoff_doubles_from_ten_seconds_to_six_minutes() {
    assert_eq!(backoff_delay(0), Duration::ZERO);
    assert_eq!(backoff_delay(1), Duration::from_secs(10));
    assert_eq!(backoff_delay(2), Duration::from_secs(20));
    assert_eq!(backoff_delay(3), Duration::from_secs(40));
    assert_eq!(backoff_delay(6), Duration::from_secs(320));
    assert_eq!(backoff_delay(7), Duration::from_secs(360));
    assert_eq!(backoff_delay(1000), Duration::from_secs(360));
}

#[test]
fn backoff_record_counts_failures_since_the_last_success() {
    let failed = pod("a", "Failed", false); // Ready turned False at 1010
    let b = Backoff::default().update(&[], &[&failed]);
    assert_eq!(b.failures, 1);
    assert_eq!(b.remaining(at(1012)), Duration::from_secs(8));
    let mut failed2 = pod("b", "Failed", false);
    failed2
        .status
        .as_mut()
        .unwrap()
        .conditions
        .as_mut()
        .unwrap()[0]
        .last_transition_time = Some(Time(at(1020)));
    // Two failures: 20 s from the last.
    let b2 = b.update(&[], &[&failed2]);
    assert_eq!(b2.failures, 2);
    assert_eq!(b2.remaining(at(1025)), Duration::from_secs(15));
    assert_eq!(b2.remaining(at(1041)), Duration::ZERO);
    // A success resets it; only failures after that success count.
    let mut ok = pod("c", "Succeeded", false);
    ok.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].last_transition_time =
        Some(Time(at(1015)));
    assert_eq!(b2.update(&[&ok], &[]), Backoff::default());
    let b3 = b2.update(&[&ok], &[&failed, &failed2]);
    assert_eq!((b3.failures, b3.last_failure), (1, Some(at(1020))));
    // A deleted pod finished when it was deleted, less its grace period.
    let mut deleted = pod("d", "Running", true);
    deleted.status.as_mut().unwrap().conditions = None;
    deleted.metadata.deletion_timestamp = Some(Time(at(1100)));
    deleted.metadata.deletion_grace_period_seconds = Some(30);
    assert_eq!(finish_time(&deleted), Some(at(1070)));
}

#[test]
fn creates_up_to_parallelism_with_the_remaining_completions() {
    let j = job(Some(5), 2);
    let p = run(&j, &[], 1000);
    assert_eq!(p.create.len(), 2);
    assert_eq!(p.status.active, Some(2));
    // Four succeeded: only one more is needed.
    let mut j4 = j.clone();
    j4.status.as_mut().unwrap().succeeded = Some(4);
    assert_eq!(run(&j4, &[], 1000).create.len(), 1);
    // Too many active: the surplus goes.
    let pods: Vec<Pod> = (0..3)
        .map(|i| pod(&i.to_string(), "Running", true))
        .collect();
    let p = run(&j4, &pods, 1000);
    assert_eq!((p.create.len(), p.delete.len()), (0, 2));
}

#[test]
fn finished_pods_go_through_uncounted_before_the_counters() {
    let j = job(Some(2), 2);
    let pods = [pod("a", "Succeeded", true), pod("b", "Running", true)];
    let p = run(&j, &pods, 1000);
    let unc = p.status.uncounted_terminated_pods.clone().unwrap();
    assert_eq!(unc.succeeded.unwrap(), vec!["a".to_string()]);
    assert_eq!(p.status.succeeded, Some(0));
    assert_eq!(p.release.len(), 1);
    assert_eq!(p.release[0].1, "a");
    assert!(p.create.is_empty(), "one done, one running: nothing to add");
    // Once the finalizer is gone, it is counted.
    let mut st = p.status.clone();
    assert!(finish(&mut st, p.finish.as_ref(), &BTreeSet::from(["b"]), at(1000)).is_none());
    assert_eq!(st.succeeded, Some(1));
    assert!(
        st.uncounted_terminated_pods
            .unwrap()
            .succeeded
            .unwrap()
            .is_empty()
    );
}

#[test]
fn success_is_interim_then_complete() {
    let mut j = job(Some(1), 1);
    j.status.as_mut().unwrap().succeeded = Some(1);
    let p = run(&j, &[pod("a", "Succeeded", false)], 1000);
    assert!(true_condition(&p.status, cond::SUCCESS_CRITERIA_MET).is_some());
    assert!(true_condition(&p.status, cond::COMPLETE).is_none());
    // Next sync: SuccessCriteriaMet becomes Complete with a completion time.
    let mut j2 = j.clone();
    j2.status = Some(p.status.clone());
    let p2 = run(&j2, &[pod("a", "Succeeded", false)], 1001);
    let mut st = p2.status.clone();
    let ev = finish(&mut st, p2.finish.as_ref(), &BTreeSet::new(), at(1001)).unwrap();
    assert_eq!(ev.reason, "Completed");
    assert!(true_condition(&st, cond::COMPLETE).is_some());
    assert_eq!(st.completion_time, Some(Time(at(1001))));
}

#[test]
fn work_queue_completes_when_one_succeeded_and_none_active() {
    let mut j = job(None, 2);
    j.status.as_mut().unwrap().succeeded = Some(1);
    // One still running: no new pods, not complete yet.
    let p = run(&j, &[pod("b", "Running", true)], 1000);
    assert!(p.create.is_empty());
    assert!(true_condition(&p.status, cond::SUCCESS_CRITERIA_MET).is_none());
    let p = run(&j, &[], 1000);
    assert!(true_condition(&p.status, cond::SUCCESS_CRITERIA_MET).is_some());
}

#[test]
fn backoff_limit_exceeded_fails_the_job_and_deletes_active_pods() {
    let mut j = job(Some(5), 2);
    j.status.as_mut().unwrap().failed = Some(2);
    let pods = [pod("c", "Failed", true), pod("d", "Running", true)];
    let p = run(&j, &pods, 1000);
    let c = true_condition(&p.status, cond::FAILURE_TARGET).unwrap();
    assert_eq!(c.reason.as_deref(), Some("BackoffLimitExceeded"));
    assert_eq!(p.delete, vec![("pi-d".to_string(), "d".to_string())]);
    assert!(p.create.is_empty());
    // The running pod counts as failed too and both are released.
    assert_eq!(
        p.status
            .uncounted_terminated_pods
            .clone()
            .unwrap()
            .failed
            .unwrap()
            .len(),
        2
    );
    // Next sync, pods gone and counted: Failed.
    let mut j2 = j.clone();
    let mut st = p.status.clone();
    st.uncounted_terminated_pods = None;
    st.failed = Some(4);
    j2.status = Some(st);
    let p2 = run(&j2, &[], 1001);
    let mut st = p2.status.clone();
    let ev = finish(&mut st, p2.finish.as_ref(), &BTreeSet::new(), at(1001)).unwrap();
    assert_eq!((ev.warning, ev.reason), (true, "BackoffLimitExceeded"));
    assert!(true_condition(&st, cond::FAILED).is_some());
    assert!(st.completion_time.is_none());
}

#[test]
fn failed_is_held_back_while_pods_terminate() {
    let mut j = job(Some(1), 1);
    j.status.as_mut().unwrap().conditions = Some(vec![k8s_openapi::api::batch::v1::JobCondition {
        type_: cond::FAILURE_TARGET.into(),
        status: "True".into(),
        reason: Some("DeadlineExceeded".into()),
        message: Some("Job was active longer than specified deadline".into()),
        ..Default::default()
    }]);
    let mut p = pod("a", "Running", true);
    p.metadata.deletion_timestamp = Some(Time(at(1000)));
    let plan = run(&j, &[p], 1001);
    assert_eq!(plan.status.terminating, Some(1));
    let mut st = plan.status.clone();
    assert!(finish(&mut st, plan.finish.as_ref(), &BTreeSet::new(), at(1001)).is_none());
}

#[test]
fn active_deadline_requeues_then_fails() {
    let mut j = job(Some(1), 1);
    j.spec.as_mut().unwrap().active_deadline_seconds = Some(30);
    let p = run(&j, &[pod("a", "Running", true)], 1010);
    assert_eq!(p.requeue, Some(Duration::from_secs(20)));
    let p = run(&j, &[pod("a", "Running", true)], 1030);
    let c = true_condition(&p.status, cond::FAILURE_TARGET).unwrap();
    assert_eq!(c.reason.as_deref(), Some("DeadlineExceeded"));
    assert_eq!(p.delete.len(), 1);
}

#[test]
fn failed_pods_are_replaced_after_the_backoff() {
    let j = job(Some(1), 1);
    let failed = pod("a", "Failed", true); // finished at 1010, not counted yet
    let p = run(&j, std::slice::from_ref(&failed), 1015);
    assert!(p.create.is_empty());
    assert_eq!(p.requeue, Some(Duration::from_secs(5)));
    assert_eq!(p.backoff.failures, 1);
    // The record outlives the pod.
    let later = plan(&View {
        job: &j,
        pods: vec![],
        now: at(1015),
        satisfied: true,
        backoff: p.backoff,
    });
    assert!(later.create.is_empty());
    let later = plan(&View {
        job: &j,
        pods: vec![],
        now: at(1020),
        satisfied: true,
        backoff: p.backoff,
    });
    assert_eq!(later.create.len(), 1);
}

#[test]
fn indexed_jobs_create_missing_indexes_and_record_completed_ones() {
    let mut j = job(Some(4), 2);
    j.spec.as_mut().unwrap().completion_mode = Some("Indexed".into());
    j.status.as_mut().unwrap().completed_indexes = Some("0".into());
    let pods = [
        indexed(pod("a", "Succeeded", true), 2),
        indexed(pod("b", "Running", true), 1),
    ];
    let p = run(&j, &pods, 1000);
    assert_eq!(p.status.completed_indexes.as_deref(), Some("0,2"));
    assert_eq!(p.status.succeeded, Some(2));
    assert_eq!(p.create, vec![Some(3)]);
    // Succeeded index pods are released without going through uncounted.
    assert_eq!(p.release, vec![("pi-a".to_string(), "a".to_string())]);
    assert!(
        p.status
            .uncounted_terminated_pods
            .clone()
            .unwrap()
            .succeeded
            .is_none()
    );
    // A duplicate of index 1 is deleted.
    let pods = [
        indexed(pod("b", "Running", true), 1),
        indexed(pod("c", "Pending", true), 1),
    ];
    let p = run(&j, &pods, 1000);
    assert_eq!(p.delete, vec![("pi-c".to_string(), "c".to_string())]);
}

#[test]
fn suspend_deletes_active_pods_and_resume_resets_start_time() {
    let mut j = job(Some(3), 2);
    j.spec.as_mut().unwrap().suspend = Some(true);
    let p = run(&j, &[pod("a", "Running", true)], 1000);
    assert_eq!(p.delete.len(), 1);
    assert!(p.create.is_empty());
    let c = true_condition(&p.status, cond::SUSPENDED).unwrap();
    assert_eq!(c.reason.as_deref(), Some("JobSuspended"));
    assert_eq!(p.events[0].reason, "Suspended");
    let mut resumed = j.clone();
    resumed.spec.as_mut().unwrap().suspend = Some(false);
    resumed.status = Some(p.status.clone());
    let p = run(&resumed, &[], 2000);
    assert_eq!(p.status.start_time, Some(Time(at(2000))));
    let c = p
        .status
        .conditions
        .as_ref()
        .unwrap()
        .iter()
        .find(|c| c.type_ == cond::SUSPENDED)
        .unwrap();
    assert_eq!(
        (c.status.as_str(), c.reason.as_deref()),
        ("False", Some("JobResumed"))
    );
    assert_eq!(p.create.len(), 2);
}

#[test]
fn nothing_is_created_while_expectations_are_pending() {
    let j = job(Some(5), 2);
    let p = plan(&View {
        job: &j,
        pods: vec![],
        now: at(1000),
        satisfied: false,
        backoff: Backoff::default(),
    });
    assert!(p.create.is_empty());
}

#[test]
fn deleted_pods_count_as_failed() {
    let j = job(Some(1), 1);
    let mut p = pod("a", "Running", true);
    p.metadata.deletion_timestamp = Some(Time(at(1000)));
    assert!(is_pod_failed(&p, &j));
    let mut only_failed = j.clone();
    only_failed.spec.as_mut().unwrap().pod_replacement_policy = Some("Failed".into());
    assert!(!is_pod_failed(&p, &only_failed));
}

#[test]
fn indexed_pods_get_annotation_label_hostname_and_finalizer() {
    let mut j = job(Some(3), 1);
    j.spec.as_mut().unwrap().completion_mode = Some("Indexed".into());
    let pod = super::new_pod(&j, Some(2));
    assert_eq!(pod.metadata.generate_name.as_deref(), Some("pi-2-"));
    assert_eq!(pod.metadata.annotations.unwrap()[COMPLETION_INDEX], "2");
    assert_eq!(pod.metadata.labels.unwrap()[COMPLETION_INDEX], "2");
    assert_eq!(pod.spec.unwrap().hostname.as_deref(), Some("pi-2"));
    assert_eq!(
        pod.metadata.finalizers.unwrap(),
        vec![TRACKING_FINALIZER.to_string()]
    );
    let plain = super::new_pod(&job(Some(1), 1), None);
    assert_eq!(plain.metadata.generate_name.as_deref(), Some("pi-"));
    assert_eq!(plain.metadata.owner_references.unwrap()[0].kind, "Job");
}
