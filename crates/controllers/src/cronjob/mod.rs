//! The cronjob controller: creates a CronJob's Jobs on its schedule, as upstream's
//! `pkg/controller/cronjob` (the v2 controller).
//!
//! It owns the Jobs a CronJob creates, named `<cronjob>-<scheduled time in minutes since
//! the epoch>` (the name is the lock against creating one twice) with the annotation
//! `batch.kubernetes.io/cronjob-scheduled-timestamp`. Each sync: notes finished Jobs
//! (`SawCompletedJob`, `lastSuccessfulTime`) and vanished ones in `status.active`; finds
//! the most recent missed run (never older than `startingDeadlineSeconds`; more than 100
//! missed gives `TooManyMissedTimes`); applies `concurrencyPolicy` (Forbid skips with
//! `JobAlreadyActive`, Replace deletes the running ones); creates the Job; prunes finished
//! Jobs beyond the history limits; writes `status`; and sleeps until the next run.
//!
//! Start with [`run`]; the schedule is [`schedule::Schedule`], the timing
//! [`most_recent_schedule_time`] and [`next_schedule_delay`].

pub mod schedule;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::tz::TimeZone;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams, PropagationPolicy};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use rkube_component::EventRecord;
use rkube_component::events::object_ref;
use tracing::Instrument;

use crate::context::{Context, Stop, stopped};
use crate::controller_ref::{controller_reference, is_controlled_by};
use schedule::Schedule;

/// Annotation with the scheduled time of a CronJob's Job (RFC 3339, in its time zone).
pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// Requeue slack after the scheduled time, for clock skew (upstream's `nextScheduleDelta`).
const NEXT_SCHEDULE_DELTA: Duration = Duration::from_millis(100);
/// Beyond this many missed runs the controller warns (`TooManyMissedTimes`).
const MANY_MISSED: i64 = 100;

/// Why a sync failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Creating a Job failed.
    #[error("cannot create job {job}")]
    CreateJob {
        /// `namespace/name` of the Job.
        job: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Reading or deleting a Job failed.
    #[error("cannot read or delete job {job}")]
    Job {
        /// `namespace/name` of the Job.
        job: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Writing the CronJob's status failed.
    #[error("cannot update the status of cronjob {cronjob}")]
    UpdateStatus {
        /// `namespace/name` of the CronJob.
        cronjob: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

/// This module's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What the cronjob controller's reconciles share.
pub struct Ctx {
    /// The controller manager's context.
    pub base: Arc<Context>,
    /// Every Job (one shared watch).
    pub jobs: Store<Job>,
}

/// How many runs were missed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missed {
    /// None.
    None,
    /// A few (at most 100).
    Few,
    /// More than 100: worth a warning.
    Many,
}

/// Upstream's `mostRecentScheduleTime`: the time runs are counted from (last schedule or
/// creation, or `now - startingDeadlineSeconds` when `with_deadline` and later), the most
/// recent run time not after `now` (if any), and how many were missed. An error for a
/// schedule whose runs are under a second apart (impossible dates).
pub fn most_recent_schedule_time(
    cj: &CronJob,
    now: Timestamp,
    sched: &Schedule,
    tz: &TimeZone,
    with_deadline: bool,
) -> Result<(Timestamp, Option<Timestamp>, Missed), String> {
    let mut earliest = cj
        .status
        .as_ref()
        .and_then(|s| s.last_schedule_time.as_ref())
        .or(cj.metadata.creation_timestamp.as_ref())
        .map_or(now, |t| t.0);
    if with_deadline
        && let Some(deadline) = cj.spec.as_ref().and_then(|s| s.starting_deadline_seconds)
    {
        let floor = now - SignedDuration::from_secs(deadline);
        if floor > earliest {
            earliest = floor;
        }
    }
    let Some(t1) = sched.next_after(earliest, tz) else {
        return Ok((earliest, None, Missed::None));
    };
    if now < t1 {
        return Ok((earliest, None, Missed::None));
    }
    let Some(t2) = sched.next_after(t1, tz) else {
        return Ok((earliest, Some(t1), Missed::Few));
    };
    if now < t2 {
        return Ok((earliest, Some(t1), Missed::None));
    }
    let between = t2.duration_since(t1).as_secs();
    if between < 1 {
        return Err("time difference between two schedules is less than 1 second".into());
    }
    let elapsed = now.duration_since(t1).as_secs();
    let missed = elapsed / between + 1;
    // Start a little before the estimate and walk forward to the exact most recent run.
    let mut t = t1 + SignedDuration::from_secs((missed - 2).max(0) * between);
    let mut most_recent = None;
    while let Some(next) = sched.next_after(t, tz) {
        if next > now {
            break;
        }
        most_recent = Some(next);
        t = next;
    }
    let kind = if missed > MANY_MISSED {
        Missed::Many
    } else {
        Missed::Few
    };
    Ok((earliest, most_recent, kind))
}

/// How long until the next run after the last one due (upstream's
/// `nextScheduleTimeDuration`, with its 100 ms slack); `None` if there is no next run.
pub fn next_schedule_delay(
    cj: &CronJob,
    now: Timestamp,
    sched: &Schedule,
    tz: &TimeZone,
) -> Option<Duration> {
    let from = match most_recent_schedule_time(cj, now, sched, tz, false) {
        Ok((_, Some(recent), _)) => recent,
        Ok((earliest, None, _)) => earliest,
        Err(_) => now,
    };
    let next = sched.next_after(from, tz)?;
    let left = next.duration_since(now);
    Some(Duration::try_from(left).unwrap_or(Duration::ZERO) + NEXT_SCHEDULE_DELAY_PAD)
}

const NEXT_SCHEDULE_DELAY_PAD: Duration = NEXT_SCHEDULE_DELTA;

/// The name of the Job for the run at `scheduled`.
pub fn job_name(cj: &CronJob, scheduled: Timestamp) -> String {
    format!("{}-{}", cj.name_any(), scheduled.as_second().div_euclid(60))
}

/// The Job for the run at `scheduled` (upstream's `getJobFromTemplate2`).
pub fn job_from_template(cj: &CronJob, scheduled: Timestamp, tz: &TimeZone) -> Job {
    let spec = cj.spec.clone().unwrap_or_default();
    let template = spec.job_template;
    let tmeta = template.metadata.unwrap_or_default();
    let mut annotations = tmeta.annotations.unwrap_or_default();
    annotations.insert(
        SCHEDULED_TIMESTAMP.into(),
        scheduled
            .to_zoned(tz.clone())
            .strftime("%Y-%m-%dT%H:%M:%S%:z")
            .to_string()
            .replace("+00:00", "Z"),
    );
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(cj, scheduled)),
            namespace: cj.namespace(),
            labels: tmeta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![controller_reference(cj)]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    }
}

/// `Complete` or `Failed`, when the Job has finished.
fn finished_type(job: &Job) -> Option<&'static str> {
    let conds = job.status.as_ref()?.conditions.as_ref()?;
    conds
        .iter()
        .find_map(|c| match (c.type_.as_str(), c.status.as_str()) {
            ("Complete", "True") => Some("Complete"),
            ("Failed", "True") => Some("Failed"),
            _ => None,
        })
}

/// The finished Jobs to delete beyond the history limits: the oldest first (by start
/// time, then name), as upstream's `removeOldestJobs`.
pub fn jobs_to_prune<'a>(cj: &CronJob, jobs: &[&'a Job]) -> Vec<&'a Job> {
    let spec = cj.spec.clone().unwrap_or_default();
    let mut out = Vec::new();
    for (kind, limit) in [
        ("Complete", spec.successful_jobs_history_limit),
        ("Failed", spec.failed_jobs_history_limit),
    ] {
        let Some(limit) = limit else { continue };
        let mut done: Vec<&Job> = jobs
            .iter()
            .copied()
            .filter(|j| finished_type(j) == Some(kind))
            .collect();
        let excess = done
            .len()
            .saturating_sub(usize::try_from(limit.max(0)).unwrap_or(0));
        done.sort_by_key(|j| {
            (
                j.status
                    .as_ref()
                    .and_then(|s| s.start_time.as_ref())
                    .map(|t| t.0),
                j.name_any(),
            )
        });
        out.extend(done.into_iter().take(excess));
    }
    out
}

fn job_ref(job: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: job.metadata.name.clone(),
        namespace: job.metadata.namespace.clone(),
        uid: job.metadata.uid.clone(),
        resource_version: job.metadata.resource_version.clone(),
        ..Default::default()
    }
}

/// Runs the controller until `stop` turns true.
pub async fn run(base: Arc<Context>, stop: Stop) {
    let client = base.client.clone();
    let (jobs, writer) = reflector::store_shared::<Job>(1024);
    let owned = writer.subscribe().expect("a shared store has subscribers");
    let job_watch = watcher(Api::<Job>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect_shared(writer)
        .for_each(|_| futures::future::ready(()));
    let ctx = Arc::new(Ctx {
        base: base.clone(),
        jobs,
    });
    let controller = Controller::new(
        Api::<CronJob>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns_shared_stream(owned)
    .with_config(controller::Config::default().concurrency(base.config.concurrency))
    .graceful_shutdown_on(stopped(stop))
    .run(reconcile, error_policy, ctx)
    .for_each(|_| futures::future::ready(()));
    tokio::select! {
        _ = job_watch => {}
        _ = controller => {}
    }
}

fn key(cj: &CronJob) -> String {
    format!("{}/{}", cj.namespace().unwrap_or_default(), cj.name_any())
}

async fn reconcile(cj: Arc<CronJob>, ctx: Arc<Ctx>) -> Result<Action> {
    let span = tracing::info_span!("reconcile", object.ref = %key(&cj));
    sync(cj, ctx).instrument(span).await
}

/// Upstream's `sync`: `syncCronJob`, then `cleanupFinishedJobs`, then the status write.
async fn sync(cj: Arc<CronJob>, ctx: Arc<Ctx>) -> Result<Action> {
    let ns = cj.namespace().unwrap_or_default();
    let uid = cj.metadata.uid.clone().unwrap_or_default();
    let all = ctx.jobs.state();
    let jobs: Vec<&Job> = all
        .iter()
        .map(Arc::as_ref)
        .filter(|j| j.metadata.namespace.as_deref() == Some(ns.as_str()))
        .filter(|j| is_controlled_by(&j.metadata, &uid))
        .collect();
    let api: Api<Job> = Api::namespaced(ctx.base.client.clone(), &ns);
    let rec = &ctx.base.recorder;
    let cref = object_ref(cj.as_ref());
    let old_status = cj.status.clone().unwrap_or_default();
    let mut status = old_status.clone();
    let now = Timestamp::now();

    // What became of the Jobs we know.
    let mut children = BTreeSet::new();
    for j in &jobs {
        let juid = j.metadata.uid.clone().unwrap_or_default();
        children.insert(juid.clone());
        let active = status.active.get_or_insert_with(Vec::new);
        let in_list = active
            .iter()
            .any(|r| r.uid.as_deref() == Some(juid.as_str()));
        let finished = finished_type(j);
        if !in_list && finished.is_none() {
            // Ours, running, but not listed: the status write after its creation was lost
            // (or our copy is stale; a conflict on the write tells). Upstream only warns;
            // listing it keeps Forbid and Replace honest.
            active.push(job_ref(j));
        } else if in_list && let Some(cond) = finished {
            active.retain(|r| r.uid.as_deref() != Some(juid.as_str()));
            rec.record(EventRecord::normal(
                cref.clone(),
                "SawCompletedJob",
                format!("Saw completed job: {}, condition: {cond}", j.name_any()),
            ));
        }
        if finished == Some("Complete")
            && let Some(done) = j.status.as_ref().and_then(|s| s.completion_time.clone())
            && status
                .last_successful_time
                .as_ref()
                .is_none_or(|t| t.0 < done.0)
        {
            status.last_successful_time = Some(done);
        }
    }
    // Jobs in the list that no longer exist (asked uncached, as upstream).
    let listed: Vec<ObjectReference> = status.active.clone().unwrap_or_default();
    for r in listed {
        let ruid = r.uid.clone().unwrap_or_default();
        if children.contains(&ruid) {
            continue;
        }
        let name = r.name.clone().unwrap_or_default();
        let gone = match api.get_opt(&name).await {
            Ok(Some(j)) => j.metadata.uid.as_deref() != Some(ruid.as_str()),
            Ok(None) => true,
            Err(source) => {
                return Err(Error::Job {
                    job: format!("{ns}/{name}"),
                    source,
                });
            }
        };
        if gone {
            rec.record(EventRecord::normal(
                cref.clone(),
                "MissingJob",
                format!("Active job went missing: {name}"),
            ));
            if let Some(a) = status.active.as_mut() {
                a.retain(|x| x.uid.as_deref() != Some(ruid.as_str()));
            }
        }
    }

    let requeue = schedule_run(&cj, &ctx, &api, &jobs, &mut status, now).await;

    // History limits.
    for j in jobs_to_prune(&cj, &jobs) {
        if delete_job(&api, j).await.is_ok() {
            if let Some(a) = status.active.as_mut() {
                a.retain(|x| x.uid != j.metadata.uid);
            }
            rec.record(EventRecord::normal(
                cref.clone(),
                "SuccessfulDelete",
                format!("Deleted job {}", j.name_any()),
            ));
        }
    }

    if status.active.as_ref().is_some_and(Vec::is_empty) && old_status.active.is_none() {
        status.active = None;
    }
    if status != old_status {
        let mut updated = (*cj).clone();
        updated.status = Some(status);
        updated.metadata.managed_fields = None;
        let cjs: Api<CronJob> = Api::namespaced(ctx.base.client.clone(), &ns);
        cjs.replace_status(&cj.name_any(), &PostParams::default(), &updated)
            .await
            .map_err(|source| Error::UpdateStatus {
                cronjob: key(&cj),
                source,
            })?;
    }
    let requeue = requeue?;
    Ok(match requeue {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    })
}

/// Upstream's `syncCronJob` from the time zone on: creates the Job of the most recent
/// missed run when the policies allow. Returns when to sync again.
async fn schedule_run(
    cj: &CronJob,
    ctx: &Ctx,
    api: &Api<Job>,
    jobs: &[&Job],
    status: &mut CronJobStatus,
    now: Timestamp,
) -> Result<Option<Duration>> {
    let rec = &ctx.base.recorder;
    let cref = object_ref(cj);
    let spec = cj.spec.clone().unwrap_or_default();
    if cj.metadata.deletion_timestamp.is_some() {
        return Ok(None);
    }
    let tz = match spec.time_zone.as_deref() {
        Some(name) => match schedule::time_zone(name) {
            Ok(tz) => tz,
            Err(err) => {
                rec.record(EventRecord::warning(
                    cref,
                    "UnknownTimeZone",
                    format!("invalid timeZone: {name:?}: {err}"),
                ));
                return Ok(None);
            }
        },
        None => TimeZone::system(),
    };
    if spec.suspend == Some(true) {
        return Ok(None);
    }
    if spec.time_zone.is_some() && (spec.schedule.contains("TZ=")) {
        rec.record(EventRecord::warning(
            cref.clone(),
            "UnsupportedSchedule",
            format!(
                "CRON_TZ or TZ used in schedule {:?} is not officially supported, see https://kubernetes.io/docs/concepts/workloads/controllers/cron-jobs/ for more details",
                spec.schedule
            ),
        ));
    }
    let sched = match Schedule::parse(&spec.schedule) {
        Ok(s) => s,
        Err(err) => {
            rec.record(EventRecord::warning(
                cref,
                "UnparseableSchedule",
                format!("unparseable schedule: {:?} : {err}", spec.schedule),
            ));
            return Ok(None);
        }
    };
    let view = CronJob {
        status: Some(status.clone()),
        ..cj.clone()
    };
    let scheduled = match most_recent_schedule_time(&view, now, &sched, &tz, true) {
        Err(err) => {
            rec.record(EventRecord::warning(
                cref,
                "InvalidSchedule",
                format!("invalid schedule: {} : {err}", spec.schedule),
            ));
            return Ok(None);
        }
        Ok((_, None, _)) => return Ok(next_schedule_delay(&view, now, &sched, &tz)),
        Ok((_, Some(t), missed)) => {
            if missed == Missed::Many {
                rec.record(EventRecord::warning(
                    cref.clone(),
                    "TooManyMissedTimes",
                    "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew",
                ));
            }
            t
        }
    };
    let next = || next_schedule_delay(&view, now, &sched, &tz);
    if let Some(deadline) = spec.starting_deadline_seconds
        && scheduled + SignedDuration::from_secs(deadline) < now
    {
        rec.record(EventRecord::warning(
            cref,
            "MissSchedule",
            format!(
                "Missed scheduled time to start a job: {}",
                scheduled.strftime("%a, %d %b %Y %H:%M:%S %z")
            ),
        ));
        return Ok(next());
    }
    let name = job_name(cj, scheduled);
    let active = status.active.clone().unwrap_or_default();
    if active
        .iter()
        .any(|r| r.name.as_deref() == Some(name.as_str()))
        || status.last_schedule_time.as_ref().map(|t| t.0) == Some(scheduled)
    {
        return Ok(next());
    }
    match spec.concurrency_policy.as_deref() {
        Some("Forbid") if !active.is_empty() => {
            rec.record(EventRecord::normal(
                cref,
                "JobAlreadyActive",
                "Not starting job because prior execution is running and concurrency policy is Forbid",
            ));
            return Ok(next());
        }
        Some("Replace") => {
            for r in &active {
                let jname = r.name.clone().unwrap_or_default();
                let Some(j) = jobs.iter().find(|j| j.metadata.uid == r.uid) else {
                    continue;
                };
                delete_job(api, j).await?;
                if let Some(a) = status.active.as_mut() {
                    a.retain(|x| x.uid != r.uid);
                }
                rec.record(EventRecord::normal(
                    cref.clone(),
                    "SuccessfulDelete",
                    format!("Deleted job {jname}"),
                ));
            }
        }
        _ => {}
    }
    let job = job_from_template(cj, scheduled, &tz);
    let created = match api.create(&PostParams::default(), &job).await {
        Ok(j) => j,
        Err(kube::Error::Api(s)) if s.is_already_exists() => {
            // Created before (our status write was lost): it is the lock.
            tracing::debug!(job = %name, "job exists already");
            match api.get_opt(&name).await {
                Ok(Some(j))
                    if is_controlled_by(
                        &j.metadata,
                        cj.metadata.uid.as_deref().unwrap_or_default(),
                    ) =>
                {
                    j
                }
                _ => return Ok(next()),
            }
        }
        Err(source) => {
            rec.record(EventRecord::warning(
                cref,
                "FailedCreate",
                format!("Error creating job: {source}"),
            ));
            return Err(Error::CreateJob {
                job: format!("{}/{name}", cj.namespace().unwrap_or_default()),
                source,
            });
        }
    };
    rec.record(EventRecord::normal(
        cref,
        "SuccessfulCreate",
        format!("Created job {}", created.name_any()),
    ));
    let active = status.active.get_or_insert_with(Vec::new);
    if !active.iter().any(|r| r.uid == created.metadata.uid) {
        active.push(job_ref(&created));
    }
    status.last_schedule_time = Some(Time(scheduled));
    let view = CronJob {
        status: Some(status.clone()),
        ..cj.clone()
    };
    Ok(next_schedule_delay(&view, now, &sched, &tz))
}

async fn delete_job(api: &Api<Job>, job: &Job) -> Result<()> {
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..Default::default()
    };
    match api.delete(&job.name_any(), &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
        Err(source) => Err(Error::Job {
            job: format!("{}/{}", job.namespace().unwrap_or_default(), job.name_any()),
            source,
        }),
    }
}

fn error_policy(cj: Arc<CronJob>, err: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(cronjob = %key(&cj), error = %err, "cronjob sync failed");
    Action::requeue(Duration::from_secs(5))
}

#[cfg(test)]
mod tests;
