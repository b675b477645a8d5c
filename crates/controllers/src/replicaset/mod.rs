//! The ReplicaSet and ReplicationController controllers (upstream
//! `pkg/controller/replicaset`): they own pods. Each keeps `spec.replicas` active pods made
//! from its template (generateName `<name>-`), adopts orphans its selector matches,
//! releases pods it no longer matches and writes `status` (replicas, fullyLabeled, ready,
//! available after `minReadySeconds`, terminating, observedGeneration, `ReplicaFailure`).
//!
//! Start at [`run`]. One generic reconcile serves both kinds through [`Workload`]. Pods come
//! from a watch that feeds an [`index::OwnerIndex`] (pods by controller UID), so a reconcile
//! costs O(its pods); [`expectations::Expectations`] keep a lagging cache from causing a
//! second round of creates or deletes; creates go in slow-start batches (1, 2, 4, ...) and
//! at most [`status::BURST_REPLICAS`] per sync; scale-down deletes pods in the order of
//! [`status::deletion_order`]. Side effects go through [`PodControl`].

pub mod claim;
pub mod expectations;
pub mod index;
pub mod status;

use std::fmt::Debug;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec, ReplicationController};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use rkube_component::events::object_ref;
use rkube_component::{EventRecord, Recorder};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tracing::Instrument;

use crate::context::{Context, Stop, stopped};
use crate::controller_ref::{controller_of, controller_reference};
use crate::pods::{is_active, is_finished, pod_from_template};
use claim::{Labels, adopt_patch, map_selector_matches, release_patch, selector_matches};
use expectations::Expectations;
use index::OwnerIndex;
use status::{
    BURST_REPLICAS, ManageFailure, StatusSpec, calculate_status, pods_to_delete, slow_start_batches,
};

/// Parallel API calls within one batch of creates or deletes.
const CALLS_IN_FLIGHT: usize = 64;
/// Periodic resync of every object.
const RESYNC: Duration = Duration::from_secs(600);

/// Errors of one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The uncached read of the controller before adopting pods failed.
    #[error("cannot recheck {kind} {name} before adopting pods")]
    Recheck {
        /// Kind of the controller.
        kind: String,
        /// `namespace/name`.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Writing `status` failed.
    #[error("cannot update status of {kind} {name}")]
    UpdateStatus {
        /// Kind of the controller.
        kind: String,
        /// `namespace/name`.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Creating or deleting pods failed.
    #[error("cannot manage pods of {kind} {name}: {message}")]
    ManagePods {
        /// Kind of the controller.
        kind: String,
        /// `namespace/name`.
        name: String,
        /// The first API error.
        message: String,
    },
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What the reconcile needs of a ReplicaSet or a ReplicationController.
pub trait Workload:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + Serialize
    + Debug
    + Send
    + Sync
    + 'static
{
    /// `spec.replicas` (default 1).
    fn replicas(&self) -> i32;
    /// `spec.minReadySeconds`.
    fn min_ready_seconds(&self) -> i32;
    /// `spec.template`.
    fn template(&self) -> Option<&PodTemplateSpec>;
    /// Whether the selector selects `labels`.
    fn selects(&self, labels: Option<&Labels>) -> bool;
    /// The current status, in ReplicaSet form.
    fn current_status(&self) -> ReplicaSetStatus;
    /// The status as the JSON this kind stores.
    fn status_json(status: &ReplicaSetStatus) -> Value;
}

fn status_value(status: &ReplicaSetStatus) -> Value {
    let mut v = serde_json::to_value(status).unwrap_or_default();
    // A merge patch keeps what it does not mention: clear conditions explicitly.
    if status.conditions.is_none() {
        v["conditions"] = Value::Null;
    }
    v
}

impl Workload for ReplicaSet {
    fn replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }
    fn min_ready_seconds(&self) -> i32 {
        self.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref()?.template.as_ref()
    }
    fn selects(&self, labels: Option<&Labels>) -> bool {
        self.spec
            .as_ref()
            .is_some_and(|s| selector_matches(&s.selector, labels))
    }
    fn current_status(&self) -> ReplicaSetStatus {
        self.status.clone().unwrap_or_default()
    }
    fn status_json(status: &ReplicaSetStatus) -> Value {
        status_value(status)
    }
}

impl Workload for ReplicationController {
    fn replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }
    fn min_ready_seconds(&self) -> i32 {
        self.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref()?.template.as_ref()
    }
    fn selects(&self, labels: Option<&Labels>) -> bool {
        let spec = self.spec.as_ref();
        // An RC without a selector selects its template's labels (the API server defaults
        // it, this covers objects stored before).
        let sel = spec.and_then(|s| s.selector.as_ref()).or_else(|| {
            spec.and_then(|s| s.template.as_ref())
                .and_then(|t| t.metadata.as_ref())
                .and_then(|m| m.labels.as_ref())
        });
        sel.is_some_and(|sel| map_selector_matches(sel, labels))
    }
    fn current_status(&self) -> ReplicaSetStatus {
        self.status
            .as_ref()
            .and_then(|s| serde_json::to_value(s).ok())
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default()
    }
    fn status_json(status: &ReplicaSetStatus) -> Value {
        let mut v = status_value(status);
        if let Some(m) = v.as_object_mut() {
            m.remove("terminatingReplicas");
        }
        v
    }
}

/// Pod writes, behind a trait so the reconcile logic can run against a recording fake.
#[async_trait]
pub trait PodControl: Send + Sync {
    /// Creates `pod` in `namespace`; returns what the server stored.
    async fn create(&self, namespace: &str, pod: &Pod) -> Result<Pod, kube::Error>;
    /// Deletes a pod (NotFound is an error here; the caller decides).
    async fn delete(&self, namespace: &str, name: &str) -> Result<(), kube::Error>;
    /// Applies a JSON patch to a pod.
    async fn json_patch(
        &self,
        namespace: &str,
        name: &str,
        patch: Value,
    ) -> Result<Pod, kube::Error>;
}

/// [`PodControl`] through the API.
pub struct ApiPodControl(pub kube::Client);

#[async_trait]
impl PodControl for ApiPodControl {
    async fn create(&self, namespace: &str, pod: &Pod) -> Result<Pod, kube::Error> {
        Api::<Pod>::namespaced(self.0.clone(), namespace)
            .create(&PostParams::default(), pod)
            .await
    }
    async fn delete(&self, namespace: &str, name: &str) -> Result<(), kube::Error> {
        Api::<Pod>::namespaced(self.0.clone(), namespace)
            .delete(name, &DeleteParams::default())
            .await
            .map(|_| ())
    }
    async fn json_patch(
        &self,
        namespace: &str,
        name: &str,
        patch: Value,
    ) -> Result<Pod, kube::Error> {
        let patch: json_patch::Patch =
            serde_json::from_value(patch).map_err(kube::Error::SerdeError)?;
        Api::<Pod>::namespaced(self.0.clone(), namespace)
            .patch(name, &PatchParams::default(), &Patch::<()>::Json(patch))
            .await
    }
}

/// What one controller (ReplicaSet or ReplicationController) shares across reconciles.
pub struct Ctx<K> {
    /// Client, recorder, settings.
    pub base: Arc<Context>,
    /// Pods by controller UID.
    pub pods: Arc<OwnerIndex<Pod>>,
    /// Pending creates and deletes.
    pub expectations: Arc<Expectations>,
    /// Pod writes.
    pub control: Arc<dyn PodControl>,
    _kind: PhantomData<fn() -> K>,
}

fn is_not_found(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == 404)
}

/// Runs the ReplicaSet controller until `stop` turns true.
pub async fn run(ctx: Arc<Context>, stop: Stop) {
    run_workload::<ReplicaSet>(ctx, stop).await
}

/// Runs the ReplicationController controller until `stop` turns true.
pub async fn run_replication_controllers(ctx: Arc<Context>, stop: Stop) {
    run_workload::<ReplicationController>(ctx, stop).await
}

async fn run_workload<K: Workload>(base: Arc<Context>, stop: Stop) {
    let client = base.client.clone();
    let pods = Arc::new(OwnerIndex::<Pod>::default());
    let expectations = Arc::new(Expectations::default());
    let controller = Controller::new(Api::<K>::all(client.clone()), watcher::Config::default());
    let store = controller.store();
    let pod_stream = {
        let (pods, expectations) = (pods.clone(), expectations.clone());
        watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
            .default_backoff()
            .inspect_ok(move |event| {
                for seen in pods.apply(event) {
                    expectations.observe(seen);
                }
            })
            .touched_objects()
    };
    let mapper = move |pod: Pod| -> Vec<ObjectRef<K>> {
        let ns = pod.namespace().unwrap_or_default();
        match controller_of(&pod.metadata) {
            Some(r) if r.kind == K::kind(&()) && r.api_version == K::api_version(&()) => {
                vec![ObjectRef::new(&r.name).within(&ns)]
            }
            Some(_) => vec![],
            // An orphan: every controller of its namespace that selects it may adopt it.
            None if pod.metadata.deletion_timestamp.is_some() => vec![],
            None => store
                .state()
                .iter()
                .filter(|w| {
                    w.meta().namespace.as_deref() == Some(ns.as_str())
                        && w.selects(pod.metadata.labels.as_ref())
                })
                .map(|w| ObjectRef::from_obj(&**w))
                .collect(),
        }
    };
    let ctx = Arc::new(Ctx::<K> {
        control: Arc::new(ApiPodControl(client)),
        base: base.clone(),
        pods,
        expectations,
        _kind: PhantomData,
    });
    controller
        .watches_stream(pod_stream, mapper)
        .with_config(controller::Config::default().concurrency(base.config.concurrency))
        .graceful_shutdown_on(stopped(stop))
        .run(reconcile::<K>, error_policy::<K>, ctx)
        .for_each(|res| async move {
            if let Err(err) = res {
                tracing::debug!(kind = %K::kind(&()), %err, "reconcile failed");
            }
        })
        .await;
}

fn error_policy<K: Workload>(_obj: Arc<K>, err: &Error, _ctx: Arc<Ctx<K>>) -> Action {
    tracing::warn!(?err, "reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

/// Reconciles one ReplicaSet or ReplicationController.
pub async fn reconcile<K: Workload>(obj: Arc<K>, ctx: Arc<Ctx<K>>) -> Result<Action> {
    let kind = K::kind(&());
    let span = tracing::info_span!(
        "reconcile",
        object.ref = %format!("{kind}/{}/{}", obj.namespace().unwrap_or_default(), obj.name_any()),
    );
    sync(obj, ctx).instrument(span).await
}

async fn sync<K: Workload>(obj: Arc<K>, ctx: Arc<Ctx<K>>) -> Result<Action> {
    if !ctx.pods.synced() {
        return Ok(Action::requeue(Duration::from_millis(250)));
    }
    let kind = K::kind(&()).into_owned();
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let full_name = format!("{ns}/{name}");
    let uid = obj.meta().uid.clone().unwrap_or_default();
    let deleting = obj.meta().deletion_timestamp.is_some();

    let (owned, terminating) = claim_pods(&*obj, &ctx).await?;
    let active: Vec<Arc<Pod>> = owned.into_iter().filter(|p| is_active(p)).collect();

    let mut failure = None;
    if !deleting && ctx.expectations.satisfied(&uid) {
        failure = manage_pods(
            &*obj,
            &active,
            &ctx.expectations,
            &*ctx.control,
            &ctx.base.recorder,
        )
        .await;
    }

    let current = obj.current_status();
    let min_ready = obj.min_ready_seconds();
    let spec = StatusSpec {
        generation: obj.meta().generation,
        template_labels: obj
            .template()
            .and_then(|t| t.metadata.as_ref())
            .and_then(|m| m.labels.as_ref()),
        min_ready_seconds: min_ready,
    };
    let status = calculate_status(
        &current,
        spec,
        &active,
        terminating,
        failure.as_ref(),
        Timestamp::now(),
    );
    if status::status_differs(&current, &status) {
        Api::<K>::namespaced(ctx.base.client.clone(), &ns)
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": K::status_json(&status) })),
            )
            .await
            .map_err(|source| Error::UpdateStatus {
                kind: kind.clone(),
                name: full_name.clone(),
                source,
            })?;
    }
    if let Some(f) = failure {
        return Err(Error::ManagePods {
            kind,
            name: full_name,
            message: f.message,
        });
    }
    // Pods that are ready but not yet available flip after minReadySeconds.
    if min_ready > 0 && status.ready_replicas != status.available_replicas {
        return Ok(Action::requeue(
            Duration::from_secs(min_ready as u64) + Duration::from_millis(500),
        ));
    }
    Ok(Action::requeue(RESYNC))
}

/// The active pods this controller owns after adopting matching orphans and releasing
/// owned pods that no longer match, and how many of its pods are terminating.
async fn claim_pods<K: Workload>(obj: &K, ctx: &Ctx<K>) -> Result<(Vec<Arc<Pod>>, i32)> {
    let ns = obj.namespace().unwrap_or_default();
    let uid = obj.meta().uid.clone().unwrap_or_default();
    let deleting = obj.meta().deletion_timestamp.is_some();
    let mut owned = Vec::new();
    let mut terminating = 0;
    for pod in ctx.pods.owned_by(&uid) {
        if pod.metadata.deletion_timestamp.is_some() && !is_finished(&pod) {
            terminating += 1;
        }
        if !is_active(&pod) || pod.metadata.namespace.as_deref() != Some(ns.as_str()) {
            continue;
        }
        if deleting || obj.selects(pod.metadata.labels.as_ref()) {
            owned.push(pod);
            continue;
        }
        let patch = release_patch(&pod.metadata, &uid);
        match ctx.control.json_patch(&ns, &pod.name_any(), patch).await {
            Ok(_) => tracing::info!(pod = %pod.name_any(), "released pod"),
            Err(err) if is_not_found(&err) => {}
            Err(err) => tracing::warn!(pod = %pod.name_any(), ?err, "cannot release pod"),
        }
    }
    if deleting {
        return Ok((owned, terminating));
    }
    let orphans: Vec<Arc<Pod>> = ctx
        .pods
        .orphans_in(&ns)
        .into_iter()
        .filter(|p| is_active(p) && obj.selects(p.metadata.labels.as_ref()))
        .collect();
    if orphans.is_empty() {
        return Ok((owned, terminating));
    }
    // Upstream rechecks the controller uncached before adopting: it must not be a
    // different object of the same name or one being deleted.
    let fresh = Api::<K>::namespaced(ctx.base.client.clone(), &ns)
        .get(&obj.name_any())
        .await
        .map_err(|source| Error::Recheck {
            kind: K::kind(&()).into_owned(),
            name: format!("{ns}/{}", obj.name_any()),
            source,
        })?;
    if fresh.meta().uid.as_deref() != Some(uid.as_str())
        || fresh.meta().deletion_timestamp.is_some()
    {
        return Ok((owned, terminating));
    }
    let owner = controller_reference(obj);
    for pod in orphans {
        let patch = adopt_patch(&pod.metadata, owner.clone());
        match ctx.control.json_patch(&ns, &pod.name_any(), patch).await {
            Ok(adopted) => {
                tracing::info!(pod = %pod.name_any(), "adopted pod");
                owned.push(Arc::new(adopted));
            }
            Err(err) if is_not_found(&err) => {}
            Err(err) => tracing::warn!(pod = %pod.name_any(), ?err, "cannot adopt pod"),
        }
    }
    Ok((owned, terminating))
}

/// Creates or deletes pods so `active` matches `spec.replicas`; returns the failure, if
/// any (upstream `manageReplicas`).
pub async fn manage_pods<K: Workload>(
    obj: &K,
    active: &[Arc<Pod>],
    expectations: &Expectations,
    control: &dyn PodControl,
    recorder: &Recorder,
) -> Option<ManageFailure> {
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let uid = obj.meta().uid.clone().unwrap_or_default();
    let regarding = object_ref(obj);
    let diff = active.len() as i64 - i64::from(obj.replicas());
    if diff < 0 {
        let want = ((-diff) as usize).min(BURST_REPLICAS);
        let Some(template) = obj.template() else {
            return Some(ManageFailure {
                reason: "FailedCreate",
                message: "no pod template".into(),
            });
        };
        let pod = pod_from_template(template, &ns, &name, controller_reference(obj));
        expectations.expect_creations(&uid, want);
        let mut attempted = 0;
        let mut failed = None;
        for batch in slow_start_batches(want) {
            attempted += batch;
            let results: Vec<_> = futures::stream::iter(0..batch)
                .map(|_| control.create(&ns, &pod))
                .buffer_unordered(CALLS_IN_FLIGHT)
                .collect()
                .await;
            for result in results {
                match result {
                    Ok(created) => recorder.record(EventRecord::normal(
                        regarding.clone(),
                        "SuccessfulCreate",
                        format!("Created pod: {}", created.name_any()),
                    )),
                    Err(err) => {
                        // The watch will never see this pod.
                        expectations.creation_observed(&uid);
                        tracing::warn!(?err, "cannot create pod");
                        recorder.record(EventRecord::warning(
                            regarding.clone(),
                            "FailedCreate",
                            format!("Error creating: {}", api_message(&err)),
                        ));
                        failed.get_or_insert(api_message(&err));
                    }
                }
            }
            if failed.is_some() {
                break;
            }
        }
        // Batches never started will not be observed either.
        for _ in attempted..want {
            expectations.creation_observed(&uid);
        }
        failed.map(|message| ManageFailure {
            reason: "FailedCreate",
            message,
        })
    } else if diff > 0 {
        let n = (diff as usize).min(BURST_REPLICAS);
        let victims = pods_to_delete(active, n);
        let key = |p: &Pod| (ns.clone(), p.name_any());
        expectations.expect_deletions(&uid, victims.iter().map(|p| key(p)));
        let results: Vec<_> = futures::stream::iter(victims.clone())
            .map(|p: Arc<Pod>| {
                let ns = ns.clone();
                async move {
                    let result = control.delete(&ns, &p.name_any()).await;
                    (p, result)
                }
            })
            .buffer_unordered(CALLS_IN_FLIGHT)
            .collect()
            .await;
        let mut failed = None;
        for (pod, result) in results {
            match result {
                Ok(()) => recorder.record(EventRecord::normal(
                    regarding.clone(),
                    "SuccessfulDelete",
                    format!("Deleted pod: {}", pod.name_any()),
                )),
                Err(err) => {
                    expectations.deletion_observed(&uid, &key(&pod));
                    if !is_not_found(&err) {
                        tracing::warn!(?err, "cannot delete pod");
                        recorder.record(EventRecord::warning(
                            regarding.clone(),
                            "FailedDelete",
                            format!("Error deleting: {}", api_message(&err)),
                        ));
                        failed.get_or_insert(api_message(&err));
                    }
                }
            }
        }
        failed.map(|message| ManageFailure {
            reason: "FailedDelete",
            message,
        })
    } else {
        None
    }
}

/// The API's message for an API error, the error otherwise.
pub fn api_message(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests;
