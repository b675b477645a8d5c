//! The job controller: runs a Job's pods to completion, as upstream's
//! `pkg/controller/job`.
//!
//! It owns the pods of every Job (`batch.kubernetes.io/controller-uid`): it creates them
//! from the template (each with the [`status::TRACKING_FINALIZER`]; Indexed Jobs add the
//! completion index annotation, label and hostname `<job>-<index>`), replaces failed ones
//! with exponential back-off until `backoffLimit`, keeps at most `parallelism` active,
//! deletes them when the Job is suspended, fails or passes `activeDeadlineSeconds`, and
//! writes the Job's status: counters, `completedIndexes`, `uncountedTerminatedPods` and the
//! conditions (`SuccessCriteriaMet` then `Complete`; `FailureTarget` then `Failed`;
//! `Suspended`).
//!
//! Finished pods are counted with upstream's finalizer protocol, so that none is counted
//! twice or lost when it is deleted: a terminated pod's uid first goes into
//! `status.uncountedTerminatedPods` (Indexed Jobs: its index into `completedIndexes`),
//! then its finalizer is removed, then the uid moves into `succeeded`/`failed`.
//!
//! Start with [`run`]; the decisions are the pure [`status::plan`] and [`status::finish`].
//! [`ttl`] is the TTL-after-finished controller.

pub mod status;
pub mod ttl;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use parking_lot::Mutex;
use rkube_component::EventRecord;
use rkube_component::events::object_ref;
use serde_json::json;
use tokio::time::Instant;
use tracing::Instrument;

use crate::context::{self, Stop, stopped};
use crate::controller_ref::{controller_of, controller_reference, is_controlled_by};
use crate::pods::pod_from_template;
use status::{COMPLETION_INDEX, TRACKING_FINALIZER, View};

/// Writes of this controller (`managedFields`).
const FIELD_MANAGER: &str = "job-controller";
/// `spec.managedBy` of the Jobs this controller syncs (unset means the same).
pub const MANAGED_BY: &str = "kubernetes.io/job-controller";
/// Expectations older than this are given up on (upstream's `ExpectationsTimeout`).
const EXPECTATIONS_TIMEOUT: Duration = Duration::from_secs(300);

/// Why a sync failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Creating a pod failed.
    #[error("cannot create a pod for job {job}")]
    CreatePod {
        /// `namespace/name` of the Job.
        job: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Deleting a pod failed.
    #[error("cannot delete pod {pod}")]
    DeletePod {
        /// `namespace/name` of the pod.
        pod: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Removing the tracking finalizer failed.
    #[error("cannot remove the tracking finalizer of pod {pod}")]
    RemoveFinalizer {
        /// `namespace/name` of the pod.
        pod: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Writing the Job's status failed (a conflict means the cache was stale).
    #[error("cannot update the status of job {job}")]
    UpdateStatus {
        /// `namespace/name` of the Job.
        job: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Reading a Job failed.
    #[error("cannot read job {job}")]
    GetJob {
        /// `namespace/name` of the Job.
        job: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

/// This module's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What the job controller's reconciles share.
pub struct Ctx {
    /// The controller manager's context (client, recorder, settings).
    pub base: Arc<context::Context>,
    /// Every pod (one shared watch).
    pub pods: Store<Pod>,
    /// Creates, deletions and finalizer removals not yet seen in `pods`, per Job uid.
    expectations: Mutex<HashMap<String, Expected>>,
    /// Back-off records, per Job uid (upstream's `podBackoffStore`).
    backoff: Mutex<HashMap<String, status::Backoff>>,
}

/// Writes made for one Job that the pod cache has not shown yet.
#[derive(Debug)]
struct Expected {
    /// Names of created pods.
    creates: BTreeSet<String>,
    /// Uids of deleted pods.
    deletes: BTreeSet<String>,
    /// Uids of pods whose finalizer was removed.
    finalizers: BTreeSet<String>,
    /// When the oldest of these writes was made.
    since: Instant,
}

impl Ctx {
    /// Whether the cache shows every write made for the Job (upstream's
    /// `satisfiedExpectations`); forgets what it now shows.
    fn satisfied(&self, job_uid: &str, pods: &[&Pod]) -> bool {
        let mut all = self.expectations.lock();
        let Some(e) = all.get_mut(job_uid) else {
            return true;
        };
        let by_uid: HashMap<&str, &Pod> = pods
            .iter()
            .filter_map(|p| Some((p.metadata.uid.as_deref()?, *p)))
            .collect();
        e.creates.retain(|name| {
            !pods
                .iter()
                .any(|p| p.metadata.name.as_deref() == Some(name))
        });
        e.deletes.retain(|uid| {
            by_uid
                .get(uid.as_str())
                .is_some_and(|p| p.metadata.deletion_timestamp.is_none())
        });
        e.finalizers.retain(|uid| {
            by_uid
                .get(uid.as_str())
                .is_some_and(|p| status::has_tracking_finalizer(p))
        });
        let done = e.creates.is_empty() && e.deletes.is_empty() && e.finalizers.is_empty();
        if done || e.since.elapsed() > EXPECTATIONS_TIMEOUT {
            all.remove(job_uid);
            return true;
        }
        false
    }

    fn expect(&self, job_uid: &str, f: impl FnOnce(&mut Expected)) {
        let mut all = self.expectations.lock();
        let e = all.entry(job_uid.to_owned()).or_insert_with(|| Expected {
            creates: BTreeSet::new(),
            deletes: BTreeSet::new(),
            finalizers: BTreeSet::new(),
            since: Instant::now(),
        });
        f(e);
    }
}

/// Runs the job controller (and the orphan-pod finalizer cleanup) until `stop` turns true.
pub async fn run(base: Arc<context::Context>, stop: Stop) {
    let client = base.client.clone();
    let (pods, writer) = reflector::store_shared::<Pod>(1024);
    let owned = writer.subscribe().expect("a shared store has subscribers");
    let orphans = writer.subscribe().expect("a shared store has subscribers");
    let pod_watch = watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect_shared(writer)
        .for_each(|_| futures::future::ready(()));
    let ctx = Arc::new(Ctx {
        base: base.clone(),
        pods: pods.clone(),
        expectations: Mutex::new(HashMap::new()),
        backoff: Mutex::new(HashMap::new()),
    });
    let controller = Controller::new(Api::<Job>::all(client.clone()), watcher::Config::default())
        .owns_shared_stream(owned)
        .with_config(controller::Config::default().concurrency(base.config.concurrency))
        .graceful_shutdown_on(stopped(stop.clone()));
    let jobs = controller.store();
    let jobs_loop = controller
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|_| futures::future::ready(()));
    let orphan_ctx = Arc::new(OrphanCtx {
        client: client.clone(),
        jobs,
    });
    let orphans_loop = Controller::for_shared_stream(
        orphans.filter(|p| futures::future::ready(status::has_tracking_finalizer(p))),
        pods,
    )
    .with_config(controller::Config::default().concurrency(2))
    .graceful_shutdown_on(stopped(stop.clone()))
    .run(reconcile_orphan, orphan_error_policy, orphan_ctx)
    .for_each(|_| futures::future::ready(()));
    tokio::select! {
        _ = pod_watch => {}
        _ = async { tokio::join!(jobs_loop, orphans_loop) } => {}
    }
}

fn job_key(job: &Job) -> String {
    format!("{}/{}", job.namespace().unwrap_or_default(), job.name_any())
}

fn now() -> Timestamp {
    Timestamp::now()
}

/// One sync of a Job.
async fn reconcile(job: Arc<Job>, ctx: Arc<Ctx>) -> Result<Action> {
    let span = tracing::info_span!("reconcile", object.ref = %job_key(&job));
    sync(job, ctx).instrument(span).await
}

async fn sync(job: Arc<Job>, ctx: Arc<Ctx>) -> Result<Action> {
    let ns = job.namespace().unwrap_or_default();
    let job_uid = job.metadata.uid.clone().unwrap_or_default();
    let all = ctx.pods.state();
    let pods: Vec<&Pod> = all
        .iter()
        .map(Arc::as_ref)
        .filter(|p| p.metadata.namespace.as_deref() == Some(ns.as_str()))
        .filter(|p| is_controlled_by(&p.metadata, &job_uid))
        .collect();
    let pod_api: Api<Pod> = Api::namespaced(ctx.base.client.clone(), &ns);

    let managed_by = job.spec.as_ref().and_then(|s| s.managed_by.as_deref());
    if managed_by.is_some_and(|m| m != MANAGED_BY) {
        // Another controller's Job (`spec.managedBy`).
        return Ok(Action::await_change());
    }
    if status::finished_condition(&job).is_some() || job.metadata.deletion_timestamp.is_some() {
        // Done: nothing more to count; let go of every pod.
        ctx.backoff.lock().remove(&job_uid);
        for p in pods.iter().filter(|p| status::has_tracking_finalizer(p)) {
            remove_finalizer(&pod_api, p).await?;
        }
        return Ok(Action::await_change());
    }

    let satisfied = ctx.satisfied(&job_uid, &pods);
    let plan = status::plan(&View {
        job: &job,
        pods: pods.clone(),
        now: now(),
        satisfied,
        backoff: ctx
            .backoff
            .lock()
            .get(&job_uid)
            .copied()
            .unwrap_or_default(),
    });
    tracing::debug!(
        create = plan.create.len(),
        delete = plan.delete.len(),
        release = plan.release.len(),
        satisfied,
        "sync"
    );
    let recorder = &ctx.base.recorder;
    let jref = object_ref(job.as_ref());

    // Deletes and creates (upstream's manageJob).
    let mut first_err = None;
    let mut deleted = 0;
    for (name, uid) in &plan.delete {
        ctx.expect(&job_uid, |e| {
            e.deletes.insert(uid.clone());
        });
        match delete_pod(&pod_api, name, uid).await {
            Ok(()) => deleted += 1,
            Err(err) => {
                ctx.expect(&job_uid, |e| {
                    e.deletes.remove(uid);
                });
                first_err.get_or_insert(err);
            }
        }
    }
    let mut created = 0;
    if !plan.create.is_empty() {
        let template_pod = |index: Option<i32>| new_pod(&job, index);
        // Slow start: batches of 1, 2, 4, ... stop at the first failure.
        let mut batch = 1;
        let mut queue = plan.create.iter().copied();
        'outer: loop {
            let chunk: Vec<Option<i32>> = queue.by_ref().take(batch).collect();
            if chunk.is_empty() {
                break;
            }
            let results = futures::future::join_all(chunk.iter().map(|ix| {
                let api = pod_api.clone();
                let pod = template_pod(*ix);
                async move { api.create(&PostParams::default(), &pod).await }
            }))
            .await;
            for r in results {
                match r {
                    Ok(pod) => {
                        created += 1;
                        let name = pod.name_any();
                        recorder.record(EventRecord::normal(
                            jref.clone(),
                            "SuccessfulCreate",
                            format!("Created pod: {name}"),
                        ));
                        ctx.expect(&job_uid, |e| {
                            e.creates.insert(name);
                        });
                    }
                    Err(source) => {
                        recorder.record(EventRecord::warning(
                            jref.clone(),
                            "FailedCreate",
                            format!("Error creating: {source}"),
                        ));
                        first_err.get_or_insert(Error::CreatePod {
                            job: job_key(&job),
                            source,
                        });
                        break 'outer;
                    }
                }
            }
            batch *= 2;
        }
    }
    let mut st = plan.status.clone();
    // `plan` assumed every create and delete went through.
    let planned = i32::try_from(plan.create.len()).unwrap_or(0);
    let missed_deletes = i32::try_from(plan.delete.len() - deleted).unwrap_or(0);
    st.active = Some(st.active.unwrap_or(0) - (planned - created) + missed_deletes);

    // Record newly terminated pods, then release them, then count them.
    let jobs_api: Api<Job> = Api::namespaced(ctx.base.client.clone(), &ns);
    let mut current = (*job).clone();
    if Some(&st) != job.status.as_ref() {
        current = write_status(&jobs_api, &current, st.clone()).await?;
    }
    // The newly terminated pods are on record: so is their back-off.
    ctx.backoff.lock().insert(job_uid.clone(), plan.backoff);
    let mut held: BTreeSet<&str> = pods
        .iter()
        .filter(|p| status::has_tracking_finalizer(p))
        .filter_map(|p| p.metadata.uid.as_deref())
        .collect();
    for (name, uid) in &plan.release {
        let Some(pod) = pods.iter().find(|p| p.metadata.uid.as_deref() == Some(uid)) else {
            continue;
        };
        ctx.expect(&job_uid, |e| {
            e.finalizers.insert(uid.clone());
        });
        match remove_finalizer(&pod_api, pod).await {
            Ok(()) => {
                held.remove(uid.as_str());
            }
            Err(err) => {
                tracing::warn!(pod = %name, error = %err, "cannot release pod");
                first_err.get_or_insert(err);
            }
        }
    }
    let mut final_status = st.clone();
    let finished = status::finish(&mut final_status, plan.finish.as_ref(), &held, now());
    if final_status != st {
        write_status(&jobs_api, &current, final_status).await?;
    }
    for ev in &plan.events {
        recorder.record(EventRecord::normal(
            jref.clone(),
            ev.reason,
            ev.message.clone(),
        ));
    }
    if let Some(ev) = finished {
        let record = if ev.warning {
            EventRecord::warning(jref.clone(), ev.reason, ev.message)
        } else {
            EventRecord::normal(jref.clone(), ev.reason, ev.message)
        };
        recorder.record(record);
    }
    if let Some(err) = first_err {
        return Err(err);
    }
    Ok(match plan.requeue {
        Some(after) => Action::requeue(after + Duration::from_millis(100)),
        // The pod and Job watches bring every change; a slow resync covers missed ones.
        None => Action::requeue(Duration::from_secs(300)),
    })
}

/// A pod for `job` (with the completion index for Indexed Jobs).
pub fn new_pod(job: &Job, index: Option<i32>) -> Pod {
    let name = job.name_any();
    let template = job
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let prefix = match index {
        Some(ix) => format!("{name}-{ix}"),
        None => name.clone(),
    };
    let mut pod = pod_from_template(
        &template,
        &job.namespace().unwrap_or_default(),
        &prefix,
        controller_reference(job),
    );
    pod.metadata
        .finalizers
        .get_or_insert_with(Vec::new)
        .push(TRACKING_FINALIZER.into());
    if let Some(ix) = index {
        pod.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(COMPLETION_INDEX.into(), ix.to_string());
        pod.metadata
            .labels
            .get_or_insert_with(Default::default)
            .extend(status::index_labels(ix));
        if let Some(spec) = pod.spec.as_mut()
            && spec.hostname.as_deref().is_none_or(str::is_empty)
        {
            spec.hostname = Some(format!("{name}-{ix}"));
        }
    }
    pod
}

async fn delete_pod(api: &Api<Pod>, name: &str, uid: &str) -> Result<()> {
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(uid.to_owned()),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.is_not_found() || s.is_conflict() => Ok(()),
        Err(source) => Err(Error::DeletePod {
            pod: name.to_owned(),
            source,
        }),
    }
}

/// Removes the tracking finalizer, guarded by a JSON-patch `test` of the finalizer list.
async fn remove_finalizer(api: &Api<Pod>, pod: &Pod) -> Result<()> {
    let Some(finalizers) = pod.metadata.finalizers.as_ref() else {
        return Ok(());
    };
    let keep: Vec<&String> = finalizers
        .iter()
        .filter(|f| *f != TRACKING_FINALIZER)
        .collect();
    let ops = vec![
        json!({"op": "test", "path": "/metadata/finalizers", "value": finalizers}),
        json!({"op": "replace", "path": "/metadata/finalizers", "value": keep}),
    ];
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    let name = pod.name_any();
    let patch: json_patch::Patch =
        serde_json::from_value(serde_json::Value::Array(ops)).expect("a valid JSON patch");
    match api.patch(&name, &params, &Patch::<()>::Json(patch)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
        Err(source) => Err(Error::RemoveFinalizer {
            pod: format!("{}/{name}", pod.namespace().unwrap_or_default()),
            source,
        }),
    }
}

/// Replaces the status, valid only against `job`'s resourceVersion (a stale cache gets a
/// conflict and the sync is retried).
async fn write_status(
    api: &Api<Job>,
    job: &Job,
    status: k8s_openapi::api::batch::v1::JobStatus,
) -> Result<Job> {
    let mut updated = job.clone();
    updated.status = Some(status);
    updated.metadata.managed_fields = None;
    api.replace_status(&job.name_any(), &PostParams::default(), &updated)
        .await
        .map_err(|source| Error::UpdateStatus {
            job: job_key(job),
            source,
        })
}

fn error_policy(job: Arc<Job>, err: &Error, _ctx: Arc<Ctx>) -> Action {
    match err {
        Error::UpdateStatus {
            source: kube::Error::Api(s),
            ..
        } if s.is_conflict() => {
            tracing::debug!(job = %job_key(&job), "stale job; syncing again");
            Action::requeue(Duration::from_millis(200))
        }
        _ => {
            tracing::warn!(job = %job_key(&job), error = %crate_chain(err), "job sync failed");
            Action::requeue(Duration::from_secs(1))
        }
    }
}

fn crate_chain(err: &dyn std::error::Error) -> String {
    let mut s = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        s.push_str(": ");
        s.push_str(&e.to_string());
        cur = e.source();
    }
    s
}

/// What the orphan-pod loop needs.
struct OrphanCtx {
    client: kube::Client,
    jobs: Store<Job>,
}

/// A pod with the tracking finalizer whose Job is gone (or that no Job controls any
/// more): nothing will count it, so its finalizer goes (upstream's orphan queue).
async fn reconcile_orphan(pod: Arc<Pod>, ctx: Arc<OrphanCtx>) -> Result<Action> {
    if !status::has_tracking_finalizer(&pod) {
        return Ok(Action::await_change());
    }
    let ns = pod.namespace().unwrap_or_default();
    let owner =
        controller_of(&pod.metadata).filter(|r| r.kind == "Job" && r.api_version == "batch/v1");
    if let Some(owner) = owner {
        let cached = ctx
            .jobs
            .get(&reflector::ObjectRef::new(&owner.name).within(&ns));
        if cached.as_ref().and_then(|j| j.metadata.uid.as_deref()) == Some(owner.uid.as_str()) {
            // The job controller takes care of it.
            return Ok(Action::await_change());
        }
        // Not (yet) in the cache: ask the API before letting go.
        let api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
        match api.get_opt(&owner.name).await {
            Ok(Some(j)) if j.metadata.uid.as_deref() == Some(owner.uid.as_str()) => {
                return Ok(Action::requeue(Duration::from_secs(5)));
            }
            Ok(_) => {}
            Err(source) => {
                return Err(Error::GetJob {
                    job: format!("{ns}/{}", owner.name),
                    source,
                });
            }
        }
    }
    tracing::info!(pod = %format!("{ns}/{}", pod.name_any()), "releasing orphan pod");
    remove_finalizer(&Api::namespaced(ctx.client.clone(), &ns), &pod).await?;
    Ok(Action::await_change())
}

fn orphan_error_policy(_pod: Arc<Pod>, err: &Error, _ctx: Arc<OrphanCtx>) -> Action {
    tracing::warn!(error = %crate_chain(err), "orphan pod cleanup failed");
    Action::requeue(Duration::from_secs(5))
}

#[cfg(test)]
mod tests;
