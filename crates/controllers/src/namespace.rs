//! The namespace controller: empties a namespace being deleted, then removes its
//! `kubernetes` finalizer so the API server can remove it (upstream
//! `pkg/controller/namespace`, `deletion/namespaced_resources_deleter.go`).
//!
//! Start with [`run`] and [`reconcile`]. A namespace with a `deletionTimestamp` (the API
//! server sets phase `Terminating` and keeps `spec.finalizers: [kubernetes]`) has every
//! namespaced resource found by discovery deleted (`deletecollection`, or list and delete
//! one by one), then what remains is listed. The five upstream deletion conditions record
//! how that went ([`conditions`]); while content remains (pods in their grace period,
//! objects with finalizers) the namespace is looked at again after an estimate; once it is
//! empty, `PUT /api/v1/namespaces/{name}/finalize` drops `kubernetes` from its finalizers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, NamespaceCondition, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, ResourceExt,
};
use kube::core::PartialObjectMeta;
use kube::discovery::{ApiResource, Discovery, Scope, verbs};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use parking_lot::Mutex;
use serde_json::json;
use tokio::time::Instant;
use tracing::Instrument;

use crate::context::{Context, Stop, stopped};

/// The finalizer the namespace controller owns (in `spec.finalizers`).
pub const FINALIZER: &str = "kubernetes";
/// How long a discovery result is reused.
const DISCOVERY_TTL: Duration = Duration::from_secs(10);
/// Longest wait before looking at a namespace with remaining content again (upstream waits
/// half the longest pod grace period; capped so `kubectl delete ns` returns promptly once
/// pods are gone early).
const MAX_REQUEUE: Duration = Duration::from_secs(5);

/// What went wrong in one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing the namespace failed.
    #[error("cannot {action} namespace {name}")]
    Namespace {
        /// What was attempted.
        action: &'static str,
        /// The namespace.
        name: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The controller's state.
pub struct Ctx {
    base: Arc<Context>,
    discovered: Mutex<Option<(Instant, Arc<Discovered>)>>,
}

/// Namespaced resources found by discovery.
#[derive(Debug, Default)]
pub struct Discovered {
    /// Resources that can be listed and deleted.
    pub resources: Vec<(ApiResource, bool)>,
    /// Why discovery failed, if it did.
    pub error: Option<String>,
}

/// The result of one pass over a namespace's content.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ContentStatus {
    /// Discovery failure, if any.
    pub discovery_error: Option<String>,
    /// Resources whose deletion failed: `resource.group: error`.
    pub delete_errors: Vec<String>,
    /// Objects remaining per `resource.group`.
    pub remaining: BTreeMap<String, usize>,
    /// Remaining objects per finalizer they carry.
    pub finalizers: BTreeMap<String, usize>,
    /// Seconds until pods being deleted should be gone.
    pub estimate: i64,
}

impl ContentStatus {
    /// Whether the namespace is empty and nothing failed.
    pub fn done(&self) -> bool {
        self.discovery_error.is_none() && self.delete_errors.is_empty() && self.remaining.is_empty()
    }
}

/// The five namespace deletion conditions for `status`, as upstream's
/// `status_condition_utils.go` (status `False` when fine).
pub fn conditions(status: &ContentStatus) -> Vec<(&'static str, bool, &'static str, String)> {
    let mut out = Vec::new();
    out.push(match &status.discovery_error {
        Some(e) => (
            "NamespaceDeletionDiscoveryFailure",
            true,
            "DiscoveryFailed",
            format!("Discovery failed for some groups, 1 failing: {e}"),
        ),
        None => (
            "NamespaceDeletionDiscoveryFailure",
            false,
            "ResourcesDiscovered",
            "All resources successfully discovered".into(),
        ),
    });
    out.push((
        "NamespaceDeletionGroupVersionParsingFailure",
        false,
        "ParsedGroupVersions",
        "All legacy kube types successfully parsed".into(),
    ));
    out.push(if status.delete_errors.is_empty() {
        (
            "NamespaceDeletionContentFailure",
            false,
            "ContentDeleted",
            "All content successfully deleted, may be waiting on finalization".into(),
        )
    } else {
        (
            "NamespaceDeletionContentFailure",
            true,
            "ContentDeletionFailed",
            format!(
                "Failed to delete all resource types, {} remaining: {}",
                status.delete_errors.len(),
                status.delete_errors.join(", ")
            ),
        )
    });
    out.push(if status.remaining.is_empty() {
        (
            "NamespaceContentRemaining",
            false,
            "ContentRemoved",
            "All content successfully removed".into(),
        )
    } else {
        let parts: Vec<String> = status
            .remaining
            .iter()
            .map(|(r, n)| format!("{r} has {n} resource instances"))
            .collect();
        (
            "NamespaceContentRemaining",
            true,
            "SomeResourcesRemain",
            format!("Some resources are remaining: {}", parts.join(", ")),
        )
    });
    out.push(if status.finalizers.is_empty() {
        (
            "NamespaceFinalizersRemaining",
            false,
            "ContentHasNoFinalizers",
            "All content-preserving finalizers finished".into(),
        )
    } else {
        let parts: Vec<String> = status
            .finalizers
            .iter()
            .map(|(f, n)| format!("{f} in {n} resource instances"))
            .collect();
        (
            "NamespaceFinalizersRemaining",
            true,
            "SomeFinalizersRemain",
            format!(
                "Some content in the namespace has finalizers remaining: {}",
                parts.join(", ")
            ),
        )
    });
    out
}

/// Merges the deletion conditions into `existing`, keeping `lastTransitionTime` where the
/// status did not change.
pub fn merge_conditions(
    existing: &[NamespaceCondition],
    status: &ContentStatus,
    now: Time,
) -> Vec<NamespaceCondition> {
    let mut out: Vec<NamespaceCondition> = existing
        .iter()
        .filter(|c| !conditions(status).iter().any(|(t, ..)| *t == c.type_))
        .cloned()
        .collect();
    for (type_, on, reason, message) in conditions(status) {
        let status_str = if on { "True" } else { "False" };
        let previous = existing.iter().find(|c| c.type_ == type_);
        let since = match previous {
            Some(p) if p.status == status_str => p.last_transition_time.clone(),
            _ => Some(now.clone()),
        };
        out.push(NamespaceCondition {
            type_: type_.into(),
            status: status_str.into(),
            reason: Some(reason.into()),
            message: Some(message),
            last_transition_time: since,
        });
    }
    out
}

/// How long to wait before looking again at a namespace whose content remains: half the
/// estimate plus a second (upstream), at most [`MAX_REQUEUE`].
pub fn requeue_after(estimate: i64) -> Duration {
    Duration::from_secs((estimate / 2 + 1).max(1) as u64).min(MAX_REQUEUE)
}

/// Runs the controller until `stop` turns true.
pub async fn run(ctx: Arc<Context>, stop: Stop) {
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    let concurrency = ctx.config.concurrency;
    let ctx = Arc::new(Ctx {
        base: ctx,
        discovered: Mutex::new(None),
    });
    Controller::new(api, watcher::Config::default())
        .with_config(kube::runtime::controller::Config::default().concurrency(concurrency))
        .graceful_shutdown_on(stopped(stop))
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
}

/// Requeues a failed namespace after a short back-off.
pub fn error_policy(_ns: Arc<Namespace>, err: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(?err, "namespace reconcile failed");
    Action::requeue(Duration::from_secs(2))
}

/// Empties a namespace being deleted, then finalizes it.
pub async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action> {
    let span =
        tracing::info_span!("reconcile", object.ref = %ns.name_any(), object.reason = "namespace");
    reconcile_namespace(ns, ctx).instrument(span).await
}

async fn reconcile_namespace(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action> {
    let name = ns.name_any();
    if ns.metadata.deletion_timestamp.is_none() || !has_finalizer(&ns) {
        return Ok(Action::requeue(Duration::from_secs(300)));
    }
    let api: Api<Namespace> = Api::all(ctx.base.client.clone());
    let ns_err = |action| {
        let name = name.clone();
        move |source| Error::Namespace {
            action,
            name,
            source,
        }
    };
    // The cache may be behind: act on the live namespace.
    let Some(live) = api.get_opt(&name).await.map_err(ns_err("get"))? else {
        return Ok(Action::await_change());
    };
    if live.metadata.uid != ns.metadata.uid
        || live.metadata.deletion_timestamp.is_none()
        || !has_finalizer(&live)
    {
        return Ok(Action::requeue(Duration::from_secs(300)));
    }
    let discovered = ctx.discover().await;
    let status = delete_content(&ctx.base.client, &name, &discovered).await;
    let existing = live
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let merged = merge_conditions(
        &existing,
        &status,
        Time(k8s_openapi::jiff::Timestamp::now()),
    );
    let same = |a: &[NamespaceCondition], b: &[NamespaceCondition]| {
        a.len() == b.len()
            && a.iter().all(|c| {
                b.iter().any(|d| {
                    d.type_ == c.type_
                        && d.status == c.status
                        && d.reason == c.reason
                        && d.message == c.message
                })
            })
    };
    if !same(&existing, &merged) {
        let patch = json!({"status": {"phase": "Terminating", "conditions": merged}});
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(Action::await_change()),
            Err(e) => return Err(ns_err("update the status of")(e)),
        }
    }
    if !status.done() {
        let after = requeue_after(status.estimate);
        tracing::info!(namespace = %name, remaining = ?status.remaining, ?after, "namespace content remains");
        return Ok(Action::requeue(after));
    }
    // Empty: drop our finalizer (the API server removes the namespace when none remain).
    let mut finalized = live.clone();
    if let Some(spec) = finalized.spec.as_mut() {
        spec.finalizers = Some(
            spec.finalizers
                .iter()
                .flatten()
                .filter(|f| *f != FINALIZER)
                .cloned()
                .collect(),
        );
    }
    match api
        .replace_subresource("finalize", &name, &PostParams::default(), &finalized)
        .await
    {
        Ok(_) => {
            tracing::info!(namespace = %name, "namespace emptied and finalized");
            Ok(Action::await_change())
        }
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(Action::await_change()),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            Ok(Action::requeue(Duration::from_millis(200)))
        }
        Err(e) => Err(ns_err("finalize")(e)),
    }
}

fn has_finalizer(ns: &Namespace) -> bool {
    ns.spec
        .as_ref()
        .and_then(|s| s.finalizers.as_ref())
        .is_some_and(|f| f.iter().any(|x| x == FINALIZER))
}

impl Ctx {
    /// Namespaced, deletable resources (cached for [`DISCOVERY_TTL`]).
    async fn discover(&self) -> Arc<Discovered> {
        if let Some((at, d)) = self.discovered.lock().as_ref()
            && at.elapsed() < DISCOVERY_TTL
            && d.error.is_none()
        {
            return d.clone();
        }
        let client = self.base.client.clone();
        let result = match Discovery::new(client.clone()).run_aggregated().await {
            Ok(d) => Ok(d),
            Err(_) => Discovery::new(client).run().await,
        };
        let discovered = Arc::new(match result {
            Ok(d) => {
                let mut resources = Vec::new();
                for group in d.groups() {
                    for (ar, caps) in group.recommended_resources() {
                        if caps.scope == Scope::Namespaced
                            && caps.supports_operation(verbs::LIST)
                            && caps.supports_operation(verbs::DELETE)
                        {
                            resources.push((ar, caps.supports_operation(verbs::DELETE_COLLECTION)));
                        }
                    }
                }
                Discovered {
                    resources,
                    error: None,
                }
            }
            Err(e) => Discovered {
                resources: Vec::new(),
                error: Some(e.to_string()),
            },
        });
        *self.discovered.lock() = Some((Instant::now(), discovered.clone()));
        discovered
    }
}

/// Deletes every object of every discovered resource in `namespace`, then counts what
/// remains (upstream `deleteAllContent`).
async fn delete_content(client: &kube::Client, namespace: &str, d: &Discovered) -> ContentStatus {
    let mut status = ContentStatus {
        discovery_error: d.error.clone(),
        ..Default::default()
    };
    for (ar, collection) in &d.resources {
        let label = format!("{}.{}", ar.plural, ar.group);
        if ar.group.is_empty() && ar.plural == "pods" {
            status.estimate = status
                .estimate
                .max(pod_grace_estimate(client, namespace).await);
        }
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, ar);
        let params = DeleteParams::background();
        let deleted = if *collection {
            api.delete_collection(&params, &ListParams::default())
                .await
                .map(|_| ())
        } else {
            delete_each(&api, &params).await
        };
        match deleted {
            Ok(()) => {}
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 405 => {}
            Err(e) => {
                tracing::warn!(err = ?e, resource = %label, namespace, "cannot delete namespace content");
                status.delete_errors.push(format!("{label}: {e}"));
                continue;
            }
        }
        let meta: Api<PartialObjectMeta<DynamicObject>> =
            Api::namespaced_with(client.clone(), namespace, ar);
        match meta.list(&ListParams::default()).await {
            Ok(list) => {
                if !list.items.is_empty() {
                    status.remaining.insert(label.clone(), list.items.len());
                }
                for item in &list.items {
                    for f in item.metadata.finalizers.iter().flatten() {
                        *status.finalizers.entry(f.clone()).or_default() += 1;
                    }
                }
            }
            Err(e) => status.delete_errors.push(format!("{label}: {e}")),
        }
    }
    status
}

async fn delete_each(api: &Api<DynamicObject>, params: &DeleteParams) -> kube::Result<()> {
    for item in api.list(&ListParams::default()).await?.items {
        match api.delete(&item.name_any(), params).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The longest grace period of the namespace's pods still running (upstream
/// `estimateGracefulTermination`).
async fn pod_grace_estimate(client: &kube::Client, namespace: &str) -> i64 {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let Ok(list) = pods.list(&ListParams::default()).await else {
        return 0;
    };
    list.items
        .iter()
        .filter(|p| {
            !matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            )
        })
        .map(|p| {
            p.metadata.deletion_grace_period_seconds.unwrap_or_else(|| {
                p.spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds)
                    .unwrap_or(30)
            })
        })
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_are_false_when_fine_and_name_what_remains() {
        let ok = ContentStatus::default();
        assert!(ok.done());
        let c = conditions(&ok);
        assert_eq!(c.len(), 5);
        assert!(c.iter().all(|(_, on, ..)| !on));
        let mut bad = ContentStatus {
            delete_errors: vec!["widgets.example.com: boom".into()],
            ..Default::default()
        };
        bad.remaining.insert("pods.".into(), 2);
        bad.finalizers.insert("example.com/keep".into(), 1);
        assert!(!bad.done());
        let c = conditions(&bad);
        let find = |t: &str| c.iter().find(|x| x.0 == t).unwrap().clone();
        assert_eq!(
            find("NamespaceContentRemaining").3,
            "Some resources are remaining: pods. has 2 resource instances"
        );
        assert_eq!(
            find("NamespaceFinalizersRemaining").3,
            "Some content in the namespace has finalizers remaining: example.com/keep in 1 resource instances"
        );
        assert!(find("NamespaceDeletionContentFailure").1);
        assert_eq!(
            find("NamespaceDeletionContentFailure").2,
            "ContentDeletionFailed"
        );
    }

    #[test]
    fn merge_keeps_transition_times_of_unchanged_conditions() {
        let t0 = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let t1 = Time(k8s_openapi::jiff::Timestamp::now());
        let mut remaining = ContentStatus::default();
        remaining.remaining.insert("pods.".into(), 1);
        let first = merge_conditions(&[], &remaining, t0.clone());
        assert_eq!(first.len(), 5);
        let second = merge_conditions(&first, &ContentStatus::default(), t1.clone());
        let get =
            |v: &[NamespaceCondition], t: &str| v.iter().find(|c| c.type_ == t).unwrap().clone();
        assert_eq!(get(&second, "NamespaceContentRemaining").status, "False");
        assert_eq!(
            get(&second, "NamespaceContentRemaining").last_transition_time,
            Some(t1)
        );
        assert_eq!(
            get(&second, "NamespaceDeletionDiscoveryFailure").last_transition_time,
            Some(t0)
        );
    }

    #[test]
    fn requeue_is_half_the_estimate_capped() {
        assert_eq!(requeue_after(0), Duration::from_secs(1));
        assert_eq!(requeue_after(4), Duration::from_secs(3));
        assert_eq!(requeue_after(30), MAX_REQUEUE);
    }
}
