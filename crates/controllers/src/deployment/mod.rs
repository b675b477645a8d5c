//! The deployment controller (upstream `pkg/controller/deployment`): it owns ReplicaSets.
//! Each template revision of a Deployment gets one ReplicaSet named
//! `<deployment>-<pod-template-hash>` (the hash is also a label on its selector, template
//! and pods); the controller moves replicas from the old ReplicaSets to the new one by the
//! strategy (RollingUpdate within maxSurge/maxUnavailable, or Recreate), scales all of them
//! proportionally when the Deployment is scaled mid-rollout, keeps `revisionHistoryLimit`
//! old ReplicaSets, and reports `status` with the `Progressing` and `Available` conditions
//! that `kubectl rollout status` reads.
//!
//! Start at [`run`] and [`reconcile`] (upstream `syncDeployment`); then `sync.rs` (finding
//! or creating the new ReplicaSet, revisions, scaling, history cleanup), `rolling.rs`,
//! `recreate.rs`, `status.rs` (status and conditions, pure) and `util.rs` (fenceposts,
//! template hash, annotations). ReplicaSets come from a watch feeding an
//! [`OwnerIndex`] by controller UID. Rollback is kubectl's job (`kubectl rollout undo`
//! patches the template from an old ReplicaSet), as upstream for apps/v1.
//!
//! Where this differs from upstream, on purpose: pods are not watched. Recreate waits until
//! the old ReplicaSets report no replicas and no terminating replicas, and the surge
//! budget counts each ReplicaSet as the larger of its spec and its status replicas, so the
//! number of live pods stays within `replicas + maxSurge` even while a scaled-down
//! ReplicaSet has not deleted its pods yet; likewise available pods are counted as at most
//! the ReplicaSet's spec.

pub mod recreate;
pub mod rolling;
pub mod status;
pub mod sync;
pub mod util;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use rkube_component::EventRecord;
use rkube_component::events::object_ref;
use tracing::Instrument;

use crate::context::{Context, Stop, stopped};
use crate::controller_ref::controller_of;
use crate::replicaset::claim::selector_matches;
use crate::replicaset::index::OwnerIndex;

/// Periodic resync of every Deployment.
const RESYNC: Duration = Duration::from_secs(600);

/// Errors of one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error("cannot {op} {name}")]
    Api {
        /// What was being done: `create replica set`, `scale replica set`, ...
        op: &'static str,
        /// `namespace/name` of the object.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The new ReplicaSet's name is taken by a different ReplicaSet; `collisionCount`
    /// was raised and the next sync uses another hash.
    #[error("hash collision for deployment {name}: replica set {rs} exists with another template")]
    HashCollision {
        /// `namespace/name` of the Deployment.
        name: String,
        /// The ReplicaSet in the way.
        rs: String,
    },
    /// The spec cannot be acted on.
    #[error("invalid deployment {name}: {message}")]
    InvalidSpec {
        /// `namespace/name` of the Deployment.
        name: String,
        /// What is wrong.
        message: String,
    },
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What the controller shares across reconciles.
pub struct Ctx {
    /// Client, recorder, settings.
    pub base: Arc<Context>,
    /// ReplicaSets by controller UID.
    pub replica_sets: Arc<OwnerIndex<ReplicaSet>>,
    /// ReplicaSets as this controller last wrote them, by UID, until the watch catches up:
    /// a sync right after a scale must not decide from the spec before it.
    pub written: Mutex<HashMap<String, ReplicaSet>>,
}

impl Ctx {
    /// Remembers what a write returned.
    pub fn wrote(&self, rs: &ReplicaSet) {
        if let Some(uid) = &rs.metadata.uid {
            self.written.lock().insert(uid.clone(), rs.clone());
        }
    }

    /// `cached`, or what this controller wrote when the watch has not delivered it yet
    /// (a newer `metadata.generation`).
    pub fn freshest(&self, cached: Arc<ReplicaSet>) -> Arc<ReplicaSet> {
        let Some(uid) = cached.metadata.uid.as_deref() else {
            return cached;
        };
        let mut written = self.written.lock();
        match written.get(uid) {
            // The write's response is newer than the cache, status included.
            Some(w) if w.metadata.generation > cached.metadata.generation => Arc::new(w.clone()),
            Some(_) => {
                written.remove(uid);
                cached
            }
            None => cached,
        }
    }
}

/// Runs the controller until `stop` turns true.
pub async fn run(base: Arc<Context>, stop: Stop) {
    let client = base.client.clone();
    let replica_sets = Arc::new(OwnerIndex::<ReplicaSet>::default());
    let controller = Controller::new(
        Api::<Deployment>::all(client.clone()),
        watcher::Config::default(),
    );
    let store = controller.store();
    let rs_stream = {
        let index = replica_sets.clone();
        watcher(Api::<ReplicaSet>::all(client), watcher::Config::default())
            .default_backoff()
            .inspect_ok(move |event| {
                index.apply(event);
            })
            .touched_objects()
    };
    let mapper = move |rs: ReplicaSet| -> Vec<ObjectRef<Deployment>> {
        let ns = rs.namespace().unwrap_or_default();
        match controller_of(&rs.metadata) {
            Some(r) if r.kind == "Deployment" && r.api_version == "apps/v1" => {
                vec![ObjectRef::new(&r.name).within(&ns)]
            }
            Some(_) => vec![],
            None if rs.metadata.deletion_timestamp.is_some() => vec![],
            None => store
                .state()
                .iter()
                .filter(|d| {
                    d.metadata.namespace.as_deref() == Some(ns.as_str())
                        && d.spec.as_ref().is_some_and(|s| {
                            selector_matches(&s.selector, rs.metadata.labels.as_ref())
                        })
                })
                .map(|d| ObjectRef::from_obj(&**d))
                .collect(),
        }
    };
    let ctx = Arc::new(Ctx {
        base: base.clone(),
        replica_sets,
        written: Mutex::default(),
    });
    controller
        .watches_stream(rs_stream, mapper)
        .with_config(controller::Config::default().concurrency(base.config.concurrency))
        .graceful_shutdown_on(stopped(stop))
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(err) = res {
                tracing::debug!(%err, "deployment reconcile failed");
            }
        })
        .await;
}

fn error_policy(d: Arc<Deployment>, err: &Error, ctx: Arc<Ctx>) -> Action {
    tracing::warn!(?err, "reconcile failed");
    if let Error::InvalidSpec { message, .. } = err {
        // Only a spec change (which triggers a sync by itself) can fix this.
        ctx.base.recorder.record(EventRecord::warning(
            object_ref(&*d),
            "InvalidSpec",
            message.clone(),
        ));
        return Action::requeue(Duration::from_secs(60));
    }
    Action::requeue(Duration::from_secs(2))
}

/// Reconciles one Deployment (upstream `syncDeployment`).
pub async fn reconcile(d: Arc<Deployment>, ctx: Arc<Ctx>) -> Result<Action> {
    let span = tracing::info_span!(
        "reconcile",
        object.ref = %format!("Deployment/{}/{}", d.namespace().unwrap_or_default(), d.name_any()),
    );
    async move {
        if !ctx.replica_sets.synced() {
            return Ok(Action::requeue(Duration::from_millis(250)));
        }
        let mut dc = sync::Dc::new(&ctx, (*d).clone());
        dc.sync_deployment().await?;
        let st = dc.d.status.clone().unwrap_or_default();
        Ok(match status::requeue_after(&dc.d, &st, Timestamp::now()) {
            Some(after) => Action::requeue(after.min(RESYNC)),
            None => Action::requeue(RESYNC),
        })
    }
    .instrument(span)
    .await
}
