//! Pod sync: watches the pods bound to this node (`fieldSelector=spec.nodeName=NODE`) and
//! runs one worker task per pod UID. A worker steps its [`lifecycle::PodWorker`] whenever the
//! pod changes or a timer fires (1 s while containers run, the back-off otherwise), writes
//! the status (status subresource) when it changed, and once a deleted pod's containers and
//! sandbox are gone, deletes the object with grace period 0.
//!
//! Start at [`run`]; the state machine is in [`lifecycle`], the status in [`status`].

pub mod lifecycle;
pub mod status;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::watch;
use tracing::Instrument;

use lifecycle::{Lifecycle, PodWorker, WorkerContext};

/// What pod sync needs.
#[derive(Clone)]
pub struct SyncContext {
    /// API client.
    pub client: Client,
    /// This node's name.
    pub node_name: String,
    /// This node's IP (pods' hostIP).
    pub host_ip: String,
    /// Runtime and paths for the workers.
    pub worker: WorkerContext,
}

impl std::fmt::Debug for SyncContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncContext")
            .field("node_name", &self.node_name)
            .field("host_ip", &self.host_ip)
            .finish_non_exhaustive()
    }
}

struct WorkerHandle {
    tx: watch::Sender<Option<Arc<Pod>>>,
    task: tokio::task::JoinHandle<()>,
}

/// Watches this node's pods and runs their workers until `stop` completes.
pub async fn run(ctx: SyncContext, stop: impl Future<Output = ()>) {
    let api: Api<Pod> = Api::all(ctx.client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", ctx.node_name));
    let stream = watcher(api, config).default_backoff();
    tokio::pin!(stream);
    tokio::pin!(stop);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut workers: HashMap<String, WorkerHandle> = HashMap::new();
    let mut initial: Option<HashSet<String>> = None;
    loop {
        let event = tokio::select! {
            () = &mut stop => break,
            e = stream.next() => e,
        };
        let Some(event) = event else { break };
        let event = match event {
            Ok(e) => e,
            Err(err) => {
                tracing::warn!(?err, "pod watch failed; retrying");
                continue;
            }
        };
        workers.retain(|_, w| !w.task.is_finished());
        match event {
            watcher::Event::Init => initial = Some(HashSet::new()),
            watcher::Event::InitApply(pod) | watcher::Event::Apply(pod) => {
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                if let Some(seen) = initial.as_mut() {
                    seen.insert(uid.clone());
                }
                let pod = Arc::new(pod);
                match workers.get(&uid) {
                    Some(w) => {
                        let _ = w.tx.send(Some(pod));
                    }
                    None => {
                        if is_finished_and_gone(&pod) {
                            continue;
                        }
                        let (tx, rx) = watch::channel(Some(Arc::clone(&pod)));
                        let task = tokio::spawn(worker(ctx.clone(), rx, stop_rx.clone()));
                        workers.insert(uid, WorkerHandle { tx, task });
                    }
                }
            }
            watcher::Event::Delete(pod) => {
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                if let Some(w) = workers.remove(&uid) {
                    // Dropping the sender tells the worker the object is gone.
                    let _ = w.tx.send(None);
                } else {
                    // A terminal pod without a worker (seen finished after a restart) may
                    // still have a stopped sandbox.
                    let worker_ctx = ctx.worker.clone();
                    tokio::spawn(async move {
                        remove_sandboxes(&worker_ctx, |u| u == uid).await;
                    });
                }
            }
            watcher::Event::InitDone => {
                if let Some(seen) = initial.take() {
                    // Pods deleted while we were not watching.
                    for (uid, w) in workers.iter() {
                        if !seen.contains(uid) {
                            let _ = w.tx.send(None);
                        }
                    }
                    workers.retain(|uid, _| seen.contains(uid));
                    remove_orphan_sandboxes(&ctx.worker, &seen).await;
                }
            }
        }
    }
    let _ = stop_tx.send(true);
    for (_, w) in workers {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), w.task).await;
    }
}

/// A terminal pod that is not being deleted needs no worker (after an agent restart it
/// must not run again).
fn is_finished_and_gone(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    matches!(phase, Some("Succeeded" | "Failed")) && pod.metadata.deletion_timestamp.is_none()
}

/// Removes sandboxes rkube created for pods that no longer exist.
async fn remove_orphan_sandboxes(ctx: &WorkerContext, pods: &HashSet<String>) {
    remove_sandboxes(ctx, |uid| !pods.contains(uid)).await;
}

/// Stops and removes the sandboxes rkube created for pod UIDs that `doomed` selects.
async fn remove_sandboxes(ctx: &WorkerContext, doomed: impl Fn(&str) -> bool) {
    let filter = k8s_cri::v1::PodSandboxFilter {
        label_selector: [(
            lifecycle::labels::MANAGED_BY.to_string(),
            "true".to_string(),
        )]
        .into(),
        ..Default::default()
    };
    let Ok(list) = ctx.runtime.list_pod_sandbox(Some(filter)).await else {
        return;
    };
    for sb in list {
        let uid = sb
            .labels
            .get(lifecycle::labels::POD_UID)
            .cloned()
            .unwrap_or_default();
        if !sb.labels.contains_key(lifecycle::labels::MANAGED_BY) || !doomed(&uid) {
            continue;
        }
        tracing::info!(sandbox = %sb.id, pod_uid = %uid, "removing the sandbox of a deleted pod");
        let _ = ctx.runtime.stop_pod_sandbox(&sb.id).await;
        let _ = ctx.runtime.remove_pod_sandbox(&sb.id).await;
        crate::cgroups::remove_pod(&ctx.cgroup_parent, &uid);
    }
}

/// One pod's worker loop.
async fn worker(
    ctx: SyncContext,
    mut rx: watch::Receiver<Option<Arc<Pod>>>,
    mut stop: watch::Receiver<bool>,
) {
    let Some(first) = rx.borrow_and_update().clone() else {
        return;
    };
    let uid = first.metadata.uid.clone().unwrap_or_default();
    let span = tracing::info_span!(
        "pod_sync",
        pod.uid = %uid,
        pod.name = %first.metadata.name.as_deref().unwrap_or_default(),
        pod.namespace = %first.metadata.namespace.as_deref().unwrap_or_default(),
    );
    async move {
        let mut pod = first;
        let mut gone = false;
        let mut state = PodWorker::new(&pod);
        let mut last_written: Option<serde_json::Value> = None;
        let api: Api<Pod> = Api::namespaced(
            ctx.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or("default"),
        );
        let name = pod.metadata.name.clone().unwrap_or_default();
        let seen = tokio::time::Instant::now();
        let mut reported_running = false;
        loop {
            let result = state.step(&pod, gone, &ctx.worker).await;
            if state.lifecycle == Lifecycle::Terminated {
                if !gone {
                    let dp = DeleteParams {
                        grace_period_seconds: Some(0),
                        preconditions: Some(Preconditions {
                            uid: Some(uid.clone()),
                            resource_version: None,
                        }),
                        ..DeleteParams::default()
                    };
                    match api.delete(&name, &dp).await {
                        Ok(_) => tracing::info!("pod removed"),
                        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                        Err(err) => {
                            tracing::warn!(?err, "cannot delete the pod object; retrying");
                            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                            continue;
                        }
                    }
                }
                return;
            }
            if !gone {
                let status = status::pod_status(&pod, &state, &ctx.host_ip, Timestamp::now());
                let value = serde_json::to_value(&status).unwrap_or_default();
                if last_written.as_ref() != Some(&value) {
                    match api
                        .patch_status(
                            &name,
                            &PatchParams::default(),
                            &Patch::Merge(json!({"status": value})),
                        )
                        .await
                    {
                        Ok(p) => {
                            if !reported_running && status.phase.as_deref() == Some("Running") {
                                reported_running = true;
                                tracing::info!(elapsed = ?seen.elapsed(), "pod running");
                            }
                            last_written = Some(value);
                            // Keep the conditions' transition times stable.
                            pod = Arc::new(p);
                        }
                        Err(err) => tracing::warn!(?err, "cannot write pod status"),
                    }
                }
            }
            tokio::select! {
                changed = rx.changed(), if !gone => {
                    match changed {
                        Ok(()) => match rx.borrow_and_update().clone() {
                            Some(p) => pod = p,
                            None => gone = true,
                        },
                        Err(_) => gone = true,
                    }
                }
                () = tokio::time::sleep(result.wake) => {}
                _ = stop.changed() => return,
            }
        }
    }
    .instrument(span)
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cri::Runtime;
    use crate::cri::fake::FakeRuntime;

    #[tokio::test]
    async fn orphan_sandboxes_are_removed_and_others_kept() {
        let rt = Arc::new(FakeRuntime::default());
        let ctx = WorkerContext {
            runtime: Arc::clone(&rt) as Arc<dyn Runtime>,
            log_root: std::env::temp_dir(),
            cgroup_parent: String::new(),
        };
        for uid in ["live", "gone"] {
            let pod: Pod = serde_json::from_value(serde_json::json!({
                "metadata": {"name": uid, "namespace": "default", "uid": uid},
                "spec": {"containers": []},
            }))
            .unwrap();
            rt.run_pod_sandbox(lifecycle::sandbox_config(&pod, &ctx))
                .await
                .unwrap();
        }
        // A sandbox someone else made (no rkube label) is never touched.
        rt.run_pod_sandbox(k8s_cri::v1::PodSandboxConfig::default())
            .await
            .unwrap();
        remove_orphan_sandboxes(&ctx, &HashSet::from(["live".to_string()])).await;
        let left: Vec<String> = rt
            .state
            .lock()
            .sandboxes
            .values()
            .map(|(c, _)| c.metadata.as_ref().map_or(String::new(), |m| m.uid.clone()))
            .collect();
        assert_eq!(left, ["live", ""]);
    }
}
