//! The nodelifecycle controller: node health, taints by condition, and taint-based eviction
//! (upstream's node lifecycle controller with its NoExecute taint manager).
//!
//! It owns three things:
//! - **node health** ([`health`]): a node whose heartbeat (its Lease in `kube-node-lease`,
//!   or its Ready condition's `lastHeartbeatTime`) is older than
//!   [`crate::Config::node_monitor_grace_period`] gets Ready, MemoryPressure, DiskPressure
//!   and PIDPressure `Unknown` (`NodeStatusUnknown`, "Kubelet stopped posting node
//!   status."), a `NodeNotReady` event, and its pods' Ready condition set to False (upstream
//!   `MarkPodsNotReady`, with a `NodeNotReady` event on each pod). Nodes that never posted a
//!   heartbeat get [`STARTUP_GRACE_PERIOD`] from their creation first.
//! - **taints** ([`taints::desired`]): `node.kubernetes.io/unreachable` (Ready Unknown) or
//!   `not-ready` (Ready False) as NoSchedule and NoExecute, the pressure/network/unschedulable
//!   NoSchedule taints; removed when the condition clears.
//! - **eviction** ([`taints::eviction`]): a pod on a node with a NoExecute taint it does not
//!   tolerate is deleted at once; one that tolerates it for `tolerationSeconds` is deleted
//!   that long after the taint's `timeAdded` unless the taint goes first. Each eviction adds
//!   the `DisruptionTarget` condition, writes a `TaintManagerEviction` event ("Marking for
//!   deletion Pod NS/NAME") and deletes the pod.
//!
//! Start at [`run`]: reflectors on Nodes, node Leases and Pods feed a loop that looks at
//! every node once per [`TICK`] (upstream's monitor period is 5 s; the eviction queue acts
//! at once). Decisions are pure functions in [`health`] and [`taints`]; this file does the
//! writes.

pub mod health;
pub mod taints;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, PodCondition, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use rkube_component::EventRecord;
use rkube_component::events::object_ref;
use serde_json::json;
use tracing::Instrument;

use crate::context::{Context, Stop, stopped};
use health::Grace;
use taints::Eviction;

/// Namespace of the node heartbeat Leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// A node that never posted a heartbeat is judged this long after its creation
/// (`--node-startup-grace-period`).
pub const STARTUP_GRACE_PERIOD: Duration = Duration::from_secs(60);
/// How often every node and every pod on a tainted node is looked at.
pub const TICK: Duration = Duration::from_secs(1);

/// Event reason on a node (and its pods) that stopped being Ready.
pub const NODE_NOT_READY: &str = "NodeNotReady";
/// Event reason on a pod the taint manager deletes.
pub const TAINT_MANAGER_EVICTION: &str = "TaintManagerEviction";

/// What failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Writing a node's conditions or taints.
    #[error("cannot update node {node}: {what}")]
    UpdateNode {
        /// The node.
        node: String,
        /// Conditions or taints.
        what: &'static str,
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// Writing a pod's status or deleting it.
    #[error("cannot {what} pod {pod}")]
    Pod {
        /// `namespace/name`.
        pod: String,
        /// What was being done.
        what: &'static str,
        /// The cause.
        #[source]
        source: kube::Error,
    },
}

/// Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Runs the controller until `stop` turns true.
pub async fn run(ctx: Arc<Context>, stop: Stop) {
    let client = ctx.client.clone();
    let (nodes, nodes_w) = reflector::store::<Node>();
    let (leases, leases_w) = reflector::store::<Lease>();
    let (pods, pods_w) = reflector::store::<Pod>();
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(
        watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
            .default_backoff()
            .reflect(nodes_w)
            .for_each(|_| async {}),
    );
    tasks.spawn(
        watcher(
            Api::<Lease>::namespaced(client.clone(), LEASE_NAMESPACE),
            watcher::Config::default(),
        )
        .default_backoff()
        .reflect(leases_w)
        .for_each(|_| async {}),
    );
    tasks.spawn(
        watcher(Api::<Pod>::all(client), watcher::Config::default())
            .default_backoff()
            .modify(|pod| {
                pod.managed_fields_mut().clear();
            })
            .reflect(pods_w)
            .for_each(|_| async {}),
    );
    let mut monitor = Monitor {
        ctx: ctx.clone(),
        nodes,
        leases,
        pods,
        grace: Grace {
            monitor: ctx.config.node_monitor_grace_period,
            startup: STARTUP_GRACE_PERIOD,
        },
        first_seen: HashMap::new(),
        last_ready: HashMap::new(),
        taint_seen: HashMap::new(),
        evicted: HashSet::new(),
        scheduled: HashMap::new(),
    };
    let ready = async {
        let _ = monitor.nodes.wait_until_ready().await;
        let _ = monitor.leases.wait_until_ready().await;
        let _ = monitor.pods.wait_until_ready().await;
    };
    tokio::select! {
        () = ready => {
            tracing::info!(grace = ?monitor.grace.monitor, "node lifecycle controller running");
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let stop_fut = stopped(stop);
            tokio::pin!(stop_fut);
            loop {
                tokio::select! {
                    () = &mut stop_fut => break,
                    _ = tick.tick() => monitor.tick().await,
                }
            }
        }
        () = stopped(stop.clone()) => {}
    }
    tasks.shutdown().await;
}

/// The loop's state: the caches and what it remembers between ticks.
struct Monitor {
    ctx: Arc<Context>,
    nodes: Store<Node>,
    leases: Store<Lease>,
    pods: Store<Pod>,
    grace: Grace,
    /// When this controller first saw each node (by name, with its UID).
    first_seen: HashMap<String, (String, Timestamp)>,
    /// The Ready status last observed per node (for `NodeNotReady` events).
    last_ready: HashMap<String, String>,
    /// When a NoExecute taint without `timeAdded` was first seen (node, key, value).
    taint_seen: HashMap<(String, String, String), Timestamp>,
    /// Pods already evicted (by UID).
    evicted: HashSet<String>,
    /// Pods with an eviction scheduled, by UID (logged once).
    scheduled: HashMap<String, Timestamp>,
}

/// What the node pass learned for the pod pass.
#[derive(Default)]
struct NodeFacts {
    /// Nodes whose Ready condition is not True.
    not_ready: HashSet<String>,
    /// NoExecute taints per node (only nodes that have some).
    no_execute: HashMap<String, Vec<Taint>>,
}

impl Monitor {
    async fn tick(&mut self) {
        let now = Timestamp::now();
        let span =
            tracing::debug_span!("reconcile", object.ref = "nodes", object.reason = "monitor");
        async {
            let facts = self.monitor_nodes(now).await;
            self.monitor_pods(&facts, now).await;
        }
        .instrument(span)
        .await
    }

    async fn monitor_nodes(&mut self, now: Timestamp) -> NodeFacts {
        let nodes = self.nodes.state();
        let names: HashSet<String> = nodes.iter().map(|n| n.name_any()).collect();
        self.first_seen.retain(|n, _| names.contains(n));
        self.last_ready.retain(|n, _| names.contains(n));
        self.taint_seen.retain(|(n, _, _), _| names.contains(n));
        let mut facts = NodeFacts::default();
        for node in nodes {
            let name = node.name_any();
            let uid = node.uid().unwrap_or_default();
            let first_seen = match self.first_seen.get(&name) {
                Some((u, t)) if *u == uid => *t,
                _ => {
                    self.first_seen.insert(name.clone(), (uid, now));
                    now
                }
            };
            let mut view = (*node).clone();
            if let Err(err) = self.check_health(&mut view, first_seen, now).await {
                tracing::warn!(node = %name, err = ?err, "cannot mark the node unknown");
            }
            let ready = health::ready_status(&view).unwrap_or("").to_string();
            let before = self.last_ready.insert(name.clone(), ready.clone());
            if before.as_deref() == Some("True") && ready != "True" {
                tracing::info!(node = %name, ready = %ready, "node is not ready");
                self.ctx.recorder.record(EventRecord::normal(
                    object_ref(&view),
                    NODE_NOT_READY,
                    format!("Node {name} status is now: {NODE_NOT_READY}"),
                ));
            }
            if let Err(err) = self.apply_taints(&mut view, now).await {
                tracing::warn!(node = %name, err = ?err, "cannot update the node's taints");
            }
            if ready != "True" {
                facts.not_ready.insert(name.clone());
            }
            let no_execute: Vec<Taint> = view
                .spec
                .as_ref()
                .and_then(|s| s.taints.as_ref())
                .into_iter()
                .flatten()
                .filter(|t| t.effect == taints::NO_EXECUTE)
                .cloned()
                .collect();
            if !no_execute.is_empty() {
                for t in no_execute.iter().filter(|t| t.time_added.is_none()) {
                    self.taint_seen
                        .entry((
                            name.clone(),
                            t.key.clone(),
                            t.value.clone().unwrap_or_default(),
                        ))
                        .or_insert(now);
                }
                facts.no_execute.insert(name, no_execute);
            }
        }
        facts
    }

    /// Marks the node's conditions Unknown once it is past its deadline.
    async fn check_health(
        &self,
        node: &mut Node,
        first_seen: Timestamp,
        now: Timestamp,
    ) -> Result<()> {
        let name = node.name_any();
        let renew = self
            .leases
            .get(&ObjectRef::new(&name).within(LEASE_NAMESPACE))
            .and_then(|l| l.spec.as_ref()?.renew_time.as_ref().map(|t| t.0));
        if now <= health::deadline(node, renew, first_seen, self.grace) {
            return Ok(());
        }
        let Some(conditions) = health::silent_conditions(node, now) else {
            return Ok(());
        };
        tracing::info!(node = %name, heartbeat = ?health::last_heartbeat(node, renew), "kubelet stopped posting node status");
        let patch = json!({
            "metadata": {"resourceVersion": node.resource_version()},
            "status": {"conditions": conditions},
        });
        let api: Api<Node> = Api::all(self.ctx.client.clone());
        let updated = api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|source| Error::UpdateNode {
                node: name.clone(),
                what: "conditions",
                source,
            })?;
        *node = updated;
        Ok(())
    }

    /// Brings the managed taints in line with the node's conditions.
    async fn apply_taints(&self, node: &mut Node, now: Timestamp) -> Result<()> {
        let Some(wanted) = taints::desired(node, now) else {
            return Ok(());
        };
        let name = node.name_any();
        tracing::info!(node = %name, taints = ?wanted.iter().map(|t| format!("{}:{}", t.key, t.effect)).collect::<Vec<_>>(), "updating node taints");
        let patch = json!({
            "metadata": {"resourceVersion": node.resource_version()},
            "spec": {"taints": if wanted.is_empty() { serde_json::Value::Null } else { json!(wanted) }},
        });
        let api: Api<Node> = Api::all(self.ctx.client.clone());
        let updated = api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|source| Error::UpdateNode {
                node: name.clone(),
                what: "taints",
                source,
            })?;
        *node = updated;
        Ok(())
    }

    async fn monitor_pods(&mut self, facts: &NodeFacts, now: Timestamp) {
        let pods = self.pods.state();
        let alive: HashSet<String> = pods.iter().filter_map(|p| p.uid()).collect();
        self.evicted.retain(|uid| alive.contains(uid));
        self.scheduled.retain(|uid, _| alive.contains(uid));
        if facts.not_ready.is_empty() && facts.no_execute.is_empty() {
            return;
        }
        for pod in pods {
            let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) else {
                continue;
            };
            let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
            if matches!(phase, Some("Succeeded" | "Failed")) {
                continue;
            }
            let uid = pod.uid().unwrap_or_default();
            let key = format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any());
            if facts.not_ready.contains(node)
                && pod_ready(&pod) == Some("True")
                && let Err(err) = self.mark_not_ready(&pod, now).await
            {
                tracing::debug!(pod = %key, err = ?err, "cannot mark the pod not ready");
            }
            let Some(node_taints) = facts.no_execute.get(node) else {
                continue;
            };
            if pod.metadata.deletion_timestamp.is_some() || self.evicted.contains(&uid) {
                continue;
            }
            let fallback = node_taints
                .iter()
                .filter(|t| t.time_added.is_none())
                .filter_map(|t| {
                    self.taint_seen
                        .get(&(
                            node.to_string(),
                            t.key.clone(),
                            t.value.clone().unwrap_or_default(),
                        ))
                        .copied()
                })
                .min()
                .unwrap_or(now);
            match taints::eviction(taints::pod_tolerations(&pod), node_taints, fallback, now) {
                Eviction::Never => {
                    if self.scheduled.remove(&uid).is_some() {
                        self.ctx.recorder.record(EventRecord::normal(
                            object_ref(pod.as_ref()),
                            TAINT_MANAGER_EVICTION,
                            format!("Cancelling deletion of Pod {key}"),
                        ));
                    }
                }
                Eviction::At(at) => {
                    if self.scheduled.insert(uid, at) != Some(at) {
                        tracing::info!(pod = %key, node, %at, "pod tolerates the node's NoExecute taints until then");
                    }
                }
                Eviction::Now => match self.evict(&pod, &key).await {
                    Ok(()) => {
                        self.scheduled.remove(&uid);
                        self.evicted.insert(uid);
                    }
                    Err(err) => tracing::warn!(pod = %key, err = ?err, "eviction failed; retrying"),
                },
            }
        }
        // Pods whose node lost its NoExecute taints: their scheduled eviction is cancelled
        // above when seen on a node that still has taints, and here when the node has none.
        let on_tainted: HashSet<String> = self
            .pods
            .state()
            .iter()
            .filter(|p| {
                p.spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_deref())
                    .is_some_and(|n| facts.no_execute.contains_key(n))
            })
            .filter_map(|p| p.uid())
            .collect();
        self.scheduled.retain(|uid, _| on_tainted.contains(uid));
    }

    /// Upstream `MarkPodsNotReady`: the pod's Ready condition turns False.
    async fn mark_not_ready(&self, pod: &Pod, now: Timestamp) -> Result<()> {
        let key = format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any());
        let mut conditions: Vec<PodCondition> = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        for c in conditions.iter_mut().filter(|c| c.type_ == "Ready") {
            c.status = "False".into();
            c.last_transition_time = Some(Time(now));
        }
        let patch = json!({
            "metadata": {"resourceVersion": pod.resource_version()},
            "status": {"conditions": conditions},
        });
        let api: Api<Pod> = Api::namespaced(
            self.ctx.client.clone(),
            &pod.namespace().unwrap_or_default(),
        );
        api.patch_status(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(|source| Error::Pod {
            pod: key.clone(),
            what: "mark not ready",
            source,
        })?;
        tracing::info!(pod = %key, "marked pod not ready: its node is not ready");
        self.ctx.recorder.record(EventRecord::warning(
            object_ref(pod),
            NODE_NOT_READY,
            "Node is not ready",
        ));
        Ok(())
    }

    /// Adds the DisruptionTarget condition and deletes the pod (upstream
    /// `addConditionAndDeletePod`).
    async fn evict(&self, pod: &Pod, key: &str) -> Result<()> {
        let ns = pod.namespace().unwrap_or_default();
        let name = pod.name_any();
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &ns);
        self.ctx.recorder.record(EventRecord::normal(
            object_ref(pod),
            TAINT_MANAGER_EVICTION,
            format!("Marking for deletion Pod {key}"),
        ));
        let mut conditions: Vec<PodCondition> = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        conditions.retain(|c| c.type_ != "DisruptionTarget");
        conditions.push(PodCondition {
            type_: "DisruptionTarget".into(),
            status: "True".into(),
            reason: Some("DeletionByTaintManager".into()),
            message: Some("Taint manager: deleting due to NoExecute taint".into()),
            last_transition_time: Some(Time(Timestamp::now())),
            ..Default::default()
        });
        let patch = json!({"status": {"conditions": conditions}});
        if let Err(err) = api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            // The deletion matters more than the condition.
            tracing::debug!(pod = %key, err = ?err, "cannot add the DisruptionTarget condition");
        }
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: pod.uid(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&name, &params).await {
            Ok(_) => {
                tracing::info!(pod = %key, "evicted pod: its node has a NoExecute taint it does not tolerate");
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(source) => Err(Error::Pod {
                pod: key.to_string(),
                what: "delete",
                source,
            }),
        }
    }
}

/// The pod's Ready condition status.
fn pod_ready(pod: &Pod) -> Option<&str> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.as_str())
}
