//! The pure half of the job controller: what a Job's pods say about it (counts, completed
//! indexes, back-off), which pods to create or delete, and the status and conditions to
//! write, as upstream's `syncJob`, `manageJob` and `trackJobStatusAndRemoveFinalizers`
//! compute them. Nothing here talks to the API.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::pods::{is_active, is_ready};

/// The finalizer that keeps a finished pod until its Job has counted it.
pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
/// Annotation (and label) with the completion index of a pod of an Indexed Job.
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";
/// First delay before a failed pod is replaced; it doubles with each further failure.
pub const BACKOFF_BASE: Duration = Duration::from_secs(10);
/// Longest delay before a failed pod is replaced ("capped at six minutes").
pub const BACKOFF_MAX: Duration = Duration::from_secs(360);
/// Upstream's `MaxPodCreateDeletePerSync`.
pub const MAX_CREATE_DELETE_PER_SYNC: usize = 500;

/// `Complete` and `SuccessCriteriaMet`, `Failed` and `FailureTarget`, `Suspended`.
pub mod cond {
    /// Terminal: the Job succeeded.
    pub const COMPLETE: &str = "Complete";
    /// Terminal: the Job failed.
    pub const FAILED: &str = "Failed";
    /// Interim: the Job will succeed once its pods are gone.
    pub const SUCCESS_CRITERIA_MET: &str = "SuccessCriteriaMet";
    /// Interim: the Job will fail once its pods are gone.
    pub const FAILURE_TARGET: &str = "FailureTarget";
    /// The Job is suspended.
    pub const SUSPENDED: &str = "Suspended";
}

/// The index of a pod of an Indexed Job (annotation first, then label).
pub fn completion_index(pod: &Pod) -> Option<i32> {
    let meta = &pod.metadata;
    let raw = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(COMPLETION_INDEX))
        .or_else(|| meta.labels.as_ref().and_then(|l| l.get(COMPLETION_INDEX)))?;
    raw.parse().ok().filter(|i: &i32| *i >= 0)
}

/// `status.completedIndexes` as upstream writes it: sorted, each run of consecutive
/// indexes as `first-last`, single ones alone (`"0-2,4,6-7"`).
pub fn format_indexes(set: &BTreeSet<i32>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut iter = set.iter().copied().peekable();
    while let Some(first) = iter.next() {
        let mut last = first;
        while iter.peek() == Some(&(last + 1)) {
            last += 1;
            iter.next();
        }
        out.push(if first == last {
            first.to_string()
        } else {
            format!("{first}-{last}")
        });
    }
    out.join(",")
}

/// Parses `status.completedIndexes`, keeping the indexes below `completions` (invalid
/// parts are ignored, as upstream's `parseIndexesFromString`).
pub fn parse_indexes(s: &str, completions: i32) -> BTreeSet<i32> {
    let mut set = BTreeSet::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<i32>(), b.parse::<i32>()),
            None => (part.parse(), part.parse()),
        };
        if let (Ok(a), Ok(b)) = (a, b) {
            let hi = b.min(completions - 1);
            if a >= 0 && a <= hi {
                set.extend(a..=hi);
            }
        }
    }
    set
}

/// The delay before replacing a failed pod after `failures` failures in a row:
/// 10 s, 20 s, 40 s, ... capped at six minutes; none without a failure.
pub fn backoff_delay(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let factor = 1u64 << (failures - 1).min(20);
    BACKOFF_BASE
        .checked_mul(u32::try_from(factor).unwrap_or(u32::MAX))
        .unwrap_or(BACKOFF_MAX)
        .min(BACKOFF_MAX)
}

/// When a pod finished (upstream's `getFinishedTime`): the latest container
/// `finishedAt`, else when its Ready condition turned `False`, else its deletion
/// timestamp less the grace period, else its creation.
pub fn finish_time(pod: &Pod) -> Option<Timestamp> {
    let status = pod.status.as_ref();
    let from_containers = status
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .map(|t| t.0)
        .max();
    let from_ready = || {
        status?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_ == "Ready" && c.status == "False")?
            .last_transition_time
            .as_ref()
            .map(|t| t.0)
    };
    let from_deletion = || {
        let at = pod.metadata.deletion_timestamp.as_ref()?.0;
        let grace = pod.metadata.deletion_grace_period_seconds.unwrap_or(0);
        Some(at - SignedDuration::from_secs(grace))
    };
    from_containers
        .or_else(from_ready)
        .or_else(from_deletion)
        .or_else(|| pod.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

fn phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref()?.phase.as_deref()
}

fn uid(pod: &Pod) -> &str {
    pod.metadata.uid.as_deref().unwrap_or_default()
}

/// Whether the pod counts as failed (upstream's `isPodFailed`): `Failed`, or (unless the
/// Job only replaces failed pods) deleted before it succeeded.
pub fn is_pod_failed(pod: &Pod, job: &Job) -> bool {
    if phase(pod) == Some("Failed") {
        return true;
    }
    let only_failed = job.spec.as_ref().is_some_and(|s| {
        s.pod_replacement_policy.as_deref() == Some("Failed") || s.pod_failure_policy.is_some()
    });
    !only_failed && pod.metadata.deletion_timestamp.is_some() && phase(pod) != Some("Succeeded")
}

/// Whether the pod carries [`TRACKING_FINALIZER`].
pub fn has_tracking_finalizer(pod: &Pod) -> bool {
    pod.metadata
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|f| f == TRACKING_FINALIZER))
}

/// Upstream's back-off record of a Job: failures counted since the last success and when
/// the last one happened. Kept in memory by the controller (as upstream), updated with the
/// pods each sync counts for the first time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backoff {
    /// Failed pods since the last succeeded one.
    pub failures: u32,
    /// When the last of them finished.
    pub last_failure: Option<Timestamp>,
}

impl Backoff {
    /// The record after newly counted pods (upstream's `newBackoffRecord`): a success
    /// resets it, and only failures after the last success count.
    pub fn update(self, succeeded: &[&Pod], failed: &[&Pod]) -> Self {
        let mut failed_times: Vec<Timestamp> =
            failed.iter().filter_map(|p| finish_time(p)).collect();
        failed_times.sort();
        let last_success = succeeded.iter().filter_map(|p| finish_time(p)).max();
        match last_success {
            None if failed_times.is_empty() => self,
            None => Self {
                failures: self.failures + u32::try_from(failed_times.len()).unwrap_or(u32::MAX),
                last_failure: failed_times.last().copied().or(self.last_failure),
            },
            Some(success) => {
                let after: Vec<Timestamp> =
                    failed_times.into_iter().filter(|t| *t > success).collect();
                Self {
                    failures: u32::try_from(after.len()).unwrap_or(u32::MAX),
                    last_failure: after.last().copied(),
                }
            }
        }
    }

    /// How long before a failed pod may be replaced: 10 s after the last failure, doubled
    /// for each failure before it, at most six minutes.
    pub fn remaining(&self, now: Timestamp) -> Duration {
        let Some(last) = self.last_failure else {
            return Duration::ZERO;
        };
        let delay = backoff_delay(self.failures);
        let elapsed = now.duration_since(last);
        SignedDuration::try_from(delay)
            .ok()
            .and_then(|d| d.checked_sub(elapsed))
            .and_then(|left| Duration::try_from(left).ok())
            .unwrap_or(Duration::ZERO)
    }
}

/// The condition of `type_`, if `True`.
pub fn true_condition<'a>(status: &'a JobStatus, type_: &str) -> Option<&'a JobCondition> {
    status
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
}

/// `Complete` or `Failed`, when the Job has finished.
pub fn finished_condition(job: &Job) -> Option<&JobCondition> {
    let status = job.status.as_ref()?;
    true_condition(status, cond::COMPLETE).or_else(|| true_condition(status, cond::FAILED))
}

/// Sets a condition as upstream's `ensureJobConditionStatus`: adds it when missing (unless
/// it would be `False`), updates it when status, reason or message changed; the transition
/// time moves only with the status. Returns whether anything changed.
pub fn ensure_condition(
    status: &mut JobStatus,
    type_: &str,
    value: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> bool {
    let exists = status
        .conditions
        .as_ref()
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == type_));
    if !exists && value == "False" {
        return false;
    }
    let conds = status.conditions.get_or_insert_with(Vec::new);
    if let Some(c) = conds.iter_mut().find(|c| c.type_ == type_) {
        if c.status == value
            && c.reason.as_deref() == Some(reason)
            && c.message.as_deref() == Some(message)
        {
            return false;
        }
        if c.status != value {
            c.last_transition_time = Some(Time(now));
        }
        c.status = value.into();
        c.reason = Some(reason.into());
        c.message = Some(message.into());
        c.last_probe_time = Some(Time(now));
        return true;
    }
    conds.push(JobCondition {
        type_: type_.into(),
        status: value.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    });
    true
}

/// A condition the Job moves towards (interim) or reaches (terminal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finish {
    /// `FailureTarget`, `SuccessCriteriaMet`, `Failed` or `Complete`.
    pub type_: &'static str,
    /// `BackoffLimitExceeded`, `DeadlineExceeded`, `CompletionsReached`, ...
    pub reason: String,
    /// Human-readable.
    pub message: String,
}

impl Finish {
    fn new(type_: &'static str, reason: &str, message: &str) -> Self {
        Self {
            type_,
            reason: reason.into(),
            message: message.into(),
        }
    }

    fn is_failure(&self) -> bool {
        matches!(self.type_, cond::FAILED | cond::FAILURE_TARGET)
    }

    fn is_interim(&self) -> bool {
        matches!(
            self.type_,
            cond::FAILURE_TARGET | cond::SUCCESS_CRITERIA_MET
        )
    }
}

/// An event to record about the Job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobEvent {
    /// `Normal` or `Warning`.
    pub warning: bool,
    /// CamelCase reason.
    pub reason: &'static str,
    /// Human-readable.
    pub message: String,
}

/// What one sync of a Job should do.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Pods to create: one entry each, with its completion index for Indexed Jobs.
    pub create: Vec<Option<i32>>,
    /// Pods to delete (names and uids).
    pub delete: Vec<(String, String)>,
    /// The status to write first: counts, newly terminated pods in
    /// `uncountedTerminatedPods`, interim conditions. `active` assumes every create and
    /// delete goes through; the caller corrects it.
    pub status: JobStatus,
    /// Pods whose tracking finalizer can go once `status` is written (name, uid).
    pub release: Vec<(String, String)>,
    /// The terminal condition to add once every pod is counted and none is terminating.
    pub finish: Option<Finish>,
    /// Sync again after this long (back-off, active deadline).
    pub requeue: Option<Duration>,
    /// The back-off record with this sync's newly counted pods; to keep once `status` is
    /// written.
    pub backoff: Backoff,
    /// Events to record once `status` is written.
    pub events: Vec<JobEvent>,
}

/// Inputs of [`plan`].
pub struct View<'a> {
    /// The Job (from the cache).
    pub job: &'a Job,
    /// Its pods (controlled by it).
    pub pods: Vec<&'a Pod>,
    /// Now.
    pub now: Timestamp,
    /// Whether the cache has seen every create, delete and finalizer removal we made; when
    /// not, no pods are created or deleted this time.
    pub satisfied: bool,
    /// The Job's back-off record so far.
    pub backoff: Backoff,
}

/// Upstream's `syncJob` minus the API calls: the pods to create and delete, the status,
/// the finalizers to release and the conditions.
pub fn plan(view: &View<'_>) -> Plan {
    let job = view.job;
    let now = view.now;
    let spec = job.spec.clone().unwrap_or_default();
    let mut status = job.status.clone().unwrap_or_default();
    let mut out = Plan::default();
    let suspended = spec.suspend == Some(true);
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let completions = spec.completions;
    let backoff_limit = spec.backoff_limit.unwrap_or(6);

    if status.start_time.is_none() && !suspended {
        status.start_time = Some(Time(now));
    }

    // Pods whose accounting is recorded without their finalizer: count them for good.
    let with_finalizer: BTreeSet<&str> = view
        .pods
        .iter()
        .filter(|p| has_tracking_finalizer(p))
        .map(|p| uid(p))
        .collect();
    clean_uncounted(&mut status, &with_finalizer);
    let uncounted = status.uncounted_terminated_pods.clone().unwrap_or_default();
    let unc_succeeded: BTreeSet<String> = uncounted
        .succeeded
        .unwrap_or_default()
        .into_iter()
        .collect();
    let unc_failed: BTreeSet<String> = uncounted.failed.unwrap_or_default().into_iter().collect();

    let active: Vec<&Pod> = view.pods.iter().copied().filter(|p| is_active(p)).collect();
    let terminating = view
        .pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_some() && !crate::pods::is_finished(p))
        .count();
    let ready = active.iter().filter(|p| is_ready(p)).count();

    // Succeeded: indexes for Indexed Jobs, pod uids otherwise.
    let total = completions.unwrap_or(0);
    let mut succeeded_indexes = if indexed {
        parse_indexes(status.completed_indexes.as_deref().unwrap_or(""), total)
    } else {
        BTreeSet::new()
    };
    let mut new_succeeded: Vec<&Pod> = Vec::new();
    for p in view.pods.iter().copied() {
        if !has_tracking_finalizer(p)
            || phase(p) != Some("Succeeded")
            || unc_failed.contains(uid(p))
        {
            continue;
        }
        if indexed {
            if let Some(ix) = completion_index(p).filter(|ix| *ix < total) {
                succeeded_indexes.insert(ix);
            }
        } else if !unc_succeeded.contains(uid(p)) {
            new_succeeded.push(p);
        }
    }
    let succeeded = if indexed {
        i32::try_from(succeeded_indexes.len()).unwrap_or(i32::MAX)
    } else {
        status.succeeded.unwrap_or(0) + count(unc_succeeded.len()) + count(new_succeeded.len())
    };
    let newly_failed = |p: &&Pod, finishing_failed: bool| {
        has_tracking_finalizer(p)
            && phase(p) != Some("Succeeded")
            && !unc_failed.contains(uid(p))
            && (is_pod_failed(p, job) || finishing_failed)
            && (!indexed || completion_index(p).is_some_and(|ix| ix < total))
    };
    let fresh_failed: Vec<&Pod> = view
        .pods
        .iter()
        .copied()
        .filter(|p| newly_failed(p, false))
        .collect();
    let failed = status.failed.unwrap_or(0) + count(unc_failed.len()) + count(fresh_failed.len());
    let fresh_succeeded: Vec<&Pod> = view
        .pods
        .iter()
        .copied()
        .filter(|p| {
            has_tracking_finalizer(p)
                && phase(p) == Some("Succeeded")
                && !unc_failed.contains(uid(p))
                && !unc_succeeded.contains(uid(p))
        })
        .collect();
    out.backoff = view.backoff.update(&fresh_succeeded, &fresh_failed);

    // Where the Job is heading.
    let mut finish = None;
    if let Some(c) = true_condition(&status, cond::FAILURE_TARGET) {
        finish = Some(Finish::new(
            cond::FAILED,
            c.reason.as_deref().unwrap_or_default(),
            c.message.as_deref().unwrap_or_default(),
        ));
    } else if let Some(c) = true_condition(&status, cond::SUCCESS_CRITERIA_MET) {
        finish = Some(Finish::new(
            cond::COMPLETE,
            c.reason.as_deref().unwrap_or_default(),
            c.message.as_deref().unwrap_or_default(),
        ));
    }
    if finish.is_none() {
        if failed > backoff_limit || past_backoff_limit_on_failure(&spec, &active) {
            finish = Some(Finish::new(
                cond::FAILURE_TARGET,
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            ));
        } else if let Some(left) = deadline_left(job, &status, now) {
            if left.is_zero() {
                finish = Some(Finish::new(
                    cond::FAILURE_TARGET,
                    "DeadlineExceeded",
                    "Job was active longer than specified deadline",
                ));
            } else {
                out.requeue = Some(left);
            }
        }
    }

    let mut active_after = count(active.len());
    if finish.as_ref().is_some_and(Finish::is_failure) {
        // Failing: every active pod goes.
        out.delete = active.iter().map(|p| key(p)).collect();
        active_after = 0;
        if !view.satisfied {
            finish = None;
        }
    } else if finish.is_some() {
        // Succeeding: whatever still runs is not needed.
        out.delete = active.iter().map(|p| key(p)).collect();
        active_after = 0;
    } else {
        let mut manage_called = false;
        if view.satisfied && job.metadata.deletion_timestamp.is_none() {
            manage_called = true;
            active_after = manage(
                view,
                &spec,
                &active,
                succeeded,
                &succeeded_indexes,
                &mut out,
            );
        }
        let complete = match completions {
            None => succeeded > 0 && active_after == 0,
            Some(c) => succeeded >= c && active_after == 0,
        };
        if complete {
            finish = Some(Finish::new(
                cond::SUCCESS_CRITERIA_MET,
                "CompletionsReached",
                "Reached expected number of succeeded pods",
            ));
        } else if manage_called {
            if suspended {
                if ensure_condition(
                    &mut status,
                    cond::SUSPENDED,
                    "True",
                    "JobSuspended",
                    "Job suspended",
                    now,
                ) {
                    out.events.push(JobEvent {
                        warning: false,
                        reason: "Suspended",
                        message: "Job suspended".into(),
                    });
                }
            } else if ensure_condition(
                &mut status,
                cond::SUSPENDED,
                "False",
                "JobResumed",
                "Job resumed",
                now,
            ) {
                out.events.push(JobEvent {
                    warning: false,
                    reason: "Resumed",
                    message: "Job resumed".into(),
                });
                status.start_time = Some(Time(now));
            }
        }
    }

    // Newly terminated pods go to uncountedTerminatedPods before their finalizers go.
    let finishing_failed = finish
        .as_ref()
        .is_some_and(|f| f.type_ != cond::SUCCESS_CRITERIA_MET && f.type_ != cond::COMPLETE);
    let mut unc_s = unc_succeeded.clone();
    let mut unc_f = unc_failed.clone();
    for p in view.pods.iter().copied() {
        if !has_tracking_finalizer(p) {
            continue;
        }
        let done = if phase(p) == Some("Succeeded") && !unc_failed.contains(uid(p)) {
            if !indexed {
                unc_s.insert(uid(p).to_owned());
            }
            true
        } else if newly_failed(&p, finishing_failed) {
            unc_f.insert(uid(p).to_owned());
            true
        } else {
            unc_failed.contains(uid(p))
                || (finishing_failed && phase(p) != Some("Succeeded"))
                || (indexed && completion_index(p).is_none_or(|ix| ix >= total) && !is_active(p))
        };
        if done {
            out.release.push(key(p));
        }
    }
    // Empty lists are left out, as upstream's `omitempty`.
    let list = |set: BTreeSet<String>| (!set.is_empty()).then(|| set.into_iter().collect());
    status.uncounted_terminated_pods = Some(UncountedTerminatedPods {
        succeeded: list(unc_s),
        failed: list(unc_f),
    });
    if indexed {
        status.completed_indexes = Some(format_indexes(&succeeded_indexes));
        status.succeeded = Some(succeeded);
    } else {
        status.succeeded = Some(status.succeeded.unwrap_or(0));
    }
    status.failed = Some(status.failed.unwrap_or(0));
    status.active = Some(active_after);
    status.ready = Some(count(ready));
    status.terminating = Some(count(terminating));

    if let Some(f) = &finish
        && f.is_interim()
    {
        ensure_condition(&mut status, f.type_, "True", &f.reason, &f.message, now);
        if f.type_ == cond::FAILURE_TARGET {
            // The terminal condition follows once the pods are gone.
            out.requeue = None;
        }
    }
    out.finish = finish.filter(|f| !f.is_interim());
    out.status = status;
    out
}

/// Upstream's `manageJob`: create or delete pods towards `parallelism` and the remaining
/// completions. Returns the number of active pods once its deletes and creates are done.
fn manage(
    view: &View<'_>,
    spec: &k8s_openapi::api::batch::v1::JobSpec,
    active: &[&Pod],
    succeeded: i32,
    succeeded_indexes: &BTreeSet<i32>,
    out: &mut Plan,
) -> i32 {
    let parallelism = spec.parallelism.unwrap_or(1).max(0);
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let mut active: Vec<&Pod> = active.to_vec();
    if spec.suspend == Some(true) {
        out.delete.extend(active.iter().map(|p| key(p)));
        return 0;
    }
    if indexed {
        // Pods with a bad, finished or duplicate index go.
        let total = spec.completions.unwrap_or(0);
        let mut seen = BTreeSet::new();
        sort_for_deletion(&mut active);
        active.reverse(); // keep the best pod of each index
        let (keep, drop): (Vec<&Pod>, Vec<&Pod>) = active.into_iter().partition(|p| {
            completion_index(p)
                .filter(|ix| *ix < total && !succeeded_indexes.contains(ix))
                .is_some_and(|ix| seen.insert(ix))
        });
        out.delete.extend(drop.iter().map(|p| key(p)));
        active = keep;
    }
    let n_active = count(active.len());
    let want = match spec.completions {
        None if succeeded > 0 => n_active,
        None => parallelism,
        Some(c) => (c - succeeded).clamp(0, parallelism),
    };
    if n_active > want {
        sort_for_deletion(&mut active);
        let n = usize::try_from(n_active - want)
            .unwrap_or(0)
            .min(MAX_CREATE_DELETE_PER_SYNC);
        out.delete.extend(active.iter().take(n).map(|p| key(p)));
        return n_active - count(n);
    }
    if n_active < want {
        let left = out.backoff.remaining(view.now);
        if !left.is_zero() {
            out.requeue = Some(out.requeue.map_or(left, |r| r.min(left)));
            return n_active;
        }
        let diff = usize::try_from(want - n_active)
            .unwrap_or(0)
            .min(MAX_CREATE_DELETE_PER_SYNC);
        if indexed {
            let taken: BTreeSet<i32> = active.iter().filter_map(|p| completion_index(p)).collect();
            out.create.extend(
                (0..spec.completions.unwrap_or(0))
                    .filter(|ix| !succeeded_indexes.contains(ix) && !taken.contains(ix))
                    .take(diff)
                    .map(Some),
            );
        } else {
            out.create.extend(std::iter::repeat_n(None, diff));
        }
        return n_active + count(out.create.len());
    }
    n_active
}

/// For restartPolicy OnFailure: the containers' restarts reach the back-off limit.
fn past_backoff_limit_on_failure(
    spec: &k8s_openapi::api::batch::v1::JobSpec,
    active: &[&Pod],
) -> bool {
    let on_failure = spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        == Some("OnFailure");
    if !on_failure {
        return false;
    }
    let restarts: i32 = active
        .iter()
        .filter_map(|p| p.status.as_ref())
        .flat_map(|s| {
            s.container_statuses
                .iter()
                .flatten()
                .chain(s.init_container_statuses.iter().flatten())
        })
        .map(|c| c.restart_count)
        .sum();
    let limit = spec.backoff_limit.unwrap_or(6);
    if limit == 0 {
        return restarts > 0;
    }
    restarts >= limit
}

/// Time left before `activeDeadlineSeconds` passes (zero once it has); `None` without a
/// deadline, a start time, or while suspended.
pub fn deadline_left(job: &Job, status: &JobStatus, now: Timestamp) -> Option<Duration> {
    let spec = job.spec.as_ref()?;
    let deadline = spec.active_deadline_seconds?;
    if spec.suspend == Some(true) {
        return None;
    }
    let start = status.start_time.as_ref()?.0;
    let elapsed = now.duration_since(start);
    let left = SignedDuration::from_secs(deadline) - elapsed;
    Some(Duration::try_from(left).unwrap_or(Duration::ZERO))
}

/// Moves uncounted pods whose finalizer is gone into the counters (upstream's
/// `cleanUncountedPodsWithoutFinalizers`). Returns whether anything moved.
pub fn clean_uncounted(status: &mut JobStatus, with_finalizer: &BTreeSet<&str>) -> bool {
    let Some(unc) = status.uncounted_terminated_pods.as_mut() else {
        return false;
    };
    let mut moved = false;
    for (list, counter) in [
        (&mut unc.succeeded, &mut status.succeeded),
        (&mut unc.failed, &mut status.failed),
    ] {
        if let Some(uids) = list.as_mut() {
            let before = uids.len();
            uids.retain(|u| with_finalizer.contains(u.as_str()));
            let gone = before - uids.len();
            if gone > 0 {
                *counter = Some(counter.unwrap_or(0) + count(gone));
                moved = true;
            }
        }
    }
    moved
}

/// After the finalizers of `plan.release` went (those in `still_held` did not), counts the
/// released pods and, when nothing is left uncounted or terminating, adds the terminal
/// condition (upstream's `enactJobFinished`). Returns the event of a Job that finished.
pub fn finish(
    status: &mut JobStatus,
    plan_finish: Option<&Finish>,
    still_held: &BTreeSet<&str>,
    now: Timestamp,
) -> Option<JobEvent> {
    clean_uncounted(status, still_held);
    let f = plan_finish?;
    let unc = status.uncounted_terminated_pods.as_ref();
    let left = unc.map_or(0, |u| {
        u.succeeded.as_ref().map_or(0, Vec::len) + u.failed.as_ref().map_or(0, Vec::len)
    });
    if left > 0 || status.terminating.unwrap_or(0) > 0 {
        return None;
    }
    ensure_condition(status, f.type_, "True", &f.reason, &f.message, now);
    if f.type_ == cond::COMPLETE {
        status.completion_time = Some(Time(now));
        Some(JobEvent {
            warning: false,
            reason: "Completed",
            message: "Job completed".into(),
        })
    } else {
        let reason = match f.reason.as_str() {
            "BackoffLimitExceeded" => "BackoffLimitExceeded",
            "DeadlineExceeded" => "DeadlineExceeded",
            _ => "JobFailed",
        };
        Some(JobEvent {
            warning: true,
            reason,
            message: f.message.clone(),
        })
    }
}

/// Active pods in the order upstream deletes them: unscheduled before scheduled, pending
/// before running, not ready before ready, the younger first.
pub fn sort_for_deletion(pods: &mut [&Pod]) {
    let rank = |p: &Pod| {
        let unscheduled = p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_none_or(str::is_empty);
        let pending = phase(p) == Some("Pending") || phase(p).is_none();
        let created = p.metadata.creation_timestamp.as_ref().map(|t| t.0);
        (
            !unscheduled,
            !pending,
            is_ready(p),
            std::cmp::Reverse(created),
        )
    };
    pods.sort_by_key(|p| rank(p));
}

fn key(pod: &Pod) -> (String, String) {
    (
        pod.metadata.name.clone().unwrap_or_default(),
        uid(pod).to_owned(),
    )
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// The label an Indexed Job's pod carries besides the template's: its completion index.
pub fn index_labels(index: i32) -> BTreeMap<String, String> {
    BTreeMap::from([(COMPLETION_INDEX.to_owned(), index.to_string())])
}
