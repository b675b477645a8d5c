//! The kubelet side of the simulator: one watch on all pods, filtered to the pods bound to
//! simulated nodes (without managedFields, to keep the cache small), feeding a
//! `kube-runtime` controller that moves each pod through the life its annotations ask for.
//!
//! - [`status`]: the pure part, what happens next ([`status::plan`]) and the status that
//!   records it, in upstream's shapes.
//! - here: the watch, pod IPs (claimed from what the watch shows, so a restarted simulator
//!   never hands out an address a running pod holds), status writes (a merge patch of
//!   `status` through the status subresource, with the cached resourceVersion as a
//!   precondition) and deletion (gracePeriodSeconds 0 with a UID precondition, as the
//!   kubelet finishes a pod once its containers are gone).

pub(crate) mod status;

use std::future::{Future, ready};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::WatchStreamExt;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::nodes::{Cluster, SimNode};
use status::{Placement, Plan};

/// Pods reconciled at once (bounds the API calls in flight).
const CONCURRENCY: u16 = 64;
/// The field manager of the simulator's status writes.
const FIELD_MANAGER: &str = "rkube-sim";

/// A pod could not be moved on; the controller retries it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// The status write failed.
    #[error("cannot write the status of pod {pod}")]
    WriteStatus {
        /// `namespace/name`.
        pod: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The final delete of a terminating pod failed.
    #[error("cannot delete pod {pod}")]
    Delete {
        /// `namespace/name`.
        pod: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Every address of the node's pod range is in use.
    #[error("no free pod IP on node {node} (range {range})")]
    NoPodIp {
        /// The node.
        node: String,
        /// Its pod range.
        range: String,
    },
}

impl Error {
    /// A write lost a race with another writer: the watch brings the newer pod.
    fn is_conflict(&self) -> bool {
        matches!(self, Error::WriteStatus { source: kube::Error::Api(s), .. } if s.is_conflict())
    }
}

/// What every reconcile shares.
struct Context {
    client: Client,
    cluster: Arc<Cluster>,
    /// The filtered pod cache (to recover pod IPs when a node's range looks full).
    reader: Store<Pod>,
}

/// Runs the pod controller until `shutdown` resolves (then waits for running reconciles).
pub(crate) async fn run(
    client: Client,
    cluster: Arc<Cluster>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let (reader, writer) = reflector::store();
    let filter = Arc::clone(&cluster);
    let pods = watcher::watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .filter_map(move |event| {
            ready(match event {
                Ok(event) => admit(&filter, event).map(Ok),
                Err(err) => Some(Err(err)),
            })
        })
        .reflect(writer)
        .applied_objects();
    let ctx = Arc::new(Context {
        client,
        cluster,
        reader: reader.clone(),
    });
    Controller::for_stream(pods, reader)
        .with_config(controller::Config::default().concurrency(CONCURRENCY))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| {
            match result {
                Ok(_) => {}
                // Logged by `error_policy`.
                Err(controller::Error::ReconcilerFailed(..)) => {}
                // A pod deleted before its turn came.
                Err(controller::Error::ObjectNotFound(obj)) => {
                    tracing::debug!(object = %obj, "pod is gone");
                }
                Err(err) => {
                    tracing::warn!(error = %crate::chain(&err), "pod watch failed; retrying");
                }
            }
            ready(())
        })
        .await;
}

/// Keeps the events of pods bound to simulated nodes (others never reach the cache), slims
/// them, and keeps the nodes' pod IPs in step with what the API shows.
fn admit(cluster: &Cluster, event: Event<Pod>) -> Option<Event<Pod>> {
    match event {
        Event::Apply(pod) => track(cluster, pod, false).map(Event::Apply),
        Event::InitApply(pod) => track(cluster, pod, false).map(Event::InitApply),
        Event::Delete(pod) => track(cluster, pod, true).map(Event::Delete),
        Event::Init => Some(Event::Init),
        Event::InitDone => Some(Event::InitDone),
    }
}

/// `Some(pod)` (slimmed) when it is bound to a simulated node; records or frees its IP.
fn track(cluster: &Cluster, mut pod: Pod, deleted: bool) -> Option<Pod> {
    let node = cluster.node_of(&pod)?;
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let status = pod.status.as_ref();
    if let Some(ip) = status
        .and_then(|s| s.pod_ip.as_deref())
        .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
    {
        let terminal = matches!(
            status.and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        );
        let mut ipam = node.ipam.lock();
        if deleted || terminal {
            // The sandbox is gone: its address is free (the status keeps showing it).
            ipam.release(ip, uid);
        } else {
            ipam.claim(ip, uid);
        }
    }
    pod.managed_fields_mut().clear();
    if let Some(a) = pod.metadata.annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
    Some(pod)
}

/// Moves one pod a step on: start it, end its run, restart it, or finish its deletion.
async fn reconcile(pod: Arc<Pod>, ctx: Arc<Context>) -> Result<Action, Error> {
    let Some(node) = ctx.cluster.node_of(&pod) else {
        return Ok(Action::await_change());
    };
    let namespace = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let key = format!("{namespace}/{name}");
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    if pod.metadata.deletion_timestamp.is_some() {
        return finish_deletion(&api, &pod, &key, node).await;
    }
    let behaviour = status::behaviour(&pod).unwrap_or_else(|problem| {
        tracing::warn!(pod = %key, "{problem}: the pod runs until it is deleted");
        status::Behaviour::default()
    });
    let now = crate::now();
    match status::plan(&pod, &behaviour, now) {
        Plan::Wait(None) => Ok(Action::await_change()),
        Plan::Wait(Some(after)) => Ok(Action::requeue(after)),
        Plan::Start => {
            let host_network = pod
                .spec
                .as_ref()
                .and_then(|s| s.host_network)
                .unwrap_or(false);
            let uid = pod.metadata.uid.as_deref().unwrap_or_default();
            let pod_ip = if host_network {
                node.host_ip
            } else {
                allocate(&ctx, node, uid)?
            };
            let placement = Placement {
                host_ip: node.host_ip,
                pod_ip,
            };
            let written = write_status(&api, &pod, &key, status::started(&pod, placement, now));
            if let Err(err) = written.await {
                if !host_network {
                    node.ipam.lock().release(pod_ip, uid);
                }
                return Err(err);
            }
            tracing::info!(pod = %key, node = %node.name, ip = %pod_ip, "pod started");
            // Our own write comes back through the watch and triggers the next step.
            Ok(Action::await_change())
        }
        Plan::Exit(code) => {
            let st = status::exited(&pod, code, now);
            let phase = st.phase.clone().unwrap_or_default();
            write_status(&api, &pod, &key, st).await?;
            if phase == "Running" {
                tracing::info!(pod = %key, node = %node.name, exit_code = code,
                    "containers exited; restarting after a back-off");
            } else {
                tracing::info!(pod = %key, node = %node.name, exit_code = code, %phase,
                    "pod finished");
            }
            Ok(Action::await_change())
        }
        Plan::Restart => {
            write_status(&api, &pod, &key, status::restarted(&pod, now)).await?;
            tracing::info!(pod = %key, node = %node.name, "containers restarted");
            Ok(Action::await_change())
        }
    }
}

/// The pod's next free address on `node`; when the range looks full, first forgets the
/// addresses of pods the cache no longer has (deletions missed while the watch was down).
fn allocate(ctx: &Context, node: &SimNode, uid: &str) -> Result<Ipv4Addr, Error> {
    if let Some(ip) = node.ipam.lock().allocate(uid) {
        return Ok(ip);
    }
    let live: Vec<String> = ctx
        .reader
        .state()
        .iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(&node.name))
        .filter(|p| {
            !matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            )
        })
        .filter_map(|p| p.metadata.uid.clone())
        .collect();
    let mut ipam = node.ipam.lock();
    ipam.retain_owners(live.iter().map(String::as_str));
    ipam.allocate(uid).ok_or_else(|| Error::NoPodIp {
        node: node.name.clone(),
        range: ipam.range().to_string(),
    })
}

/// Writes `status` as a merge patch, valid only against the cached version of the pod.
async fn write_status(
    api: &Api<Pod>,
    pod: &Pod,
    key: &str,
    status: PodStatus,
) -> Result<(), Error> {
    let patch = json!({
        "metadata": {"resourceVersion": pod.resource_version()},
        "status": status,
    });
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    api.patch_status(&pod.name_any(), &params, &Patch::Merge(&patch))
        .await
        .map(drop)
        .map_err(|source| Error::WriteStatus {
            pod: key.to_string(),
            source,
        })
}

/// A pod with a deletionTimestamp: its (simulated) containers stop at once, and the pod is
/// removed with gracePeriodSeconds 0 and a UID precondition, as the kubelet does.
async fn finish_deletion(
    api: &Api<Pod>,
    pod: &Pod,
    key: &str,
    node: &SimNode,
) -> Result<Action, Error> {
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(&pod.name_any(), &params).await {
        Ok(_) => tracing::info!(pod = %key, node = %node.name, "pod deleted"),
        // Gone already, or a new pod took the name: nothing left to do for this one.
        Err(kube::Error::Api(s)) if s.is_not_found() || s.is_conflict() => {
            tracing::debug!(pod = %key, reason = %s.reason, "pod already gone");
        }
        Err(source) => {
            return Err(Error::Delete {
                pod: key.to_string(),
                source,
            });
        }
    }
    Ok(Action::await_change())
}

fn error_policy(pod: Arc<Pod>, err: &Error, _ctx: Arc<Context>) -> Action {
    if err.is_conflict() {
        tracing::debug!(pod = %pod.name_any(), "status write raced another writer; retrying");
        return Action::requeue(Duration::from_secs(1));
    }
    tracing::warn!(error = %crate::chain(err), "retrying in 5s");
    Action::requeue(Duration::from_secs(5))
}
