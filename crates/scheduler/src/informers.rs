//! Informers: kube-runtime watchers on pods, nodes, namespaces, PodDisruptionBudgets and
//! the selectors of Services and workloads (default spread constraints), whose events update the
//! cache and the queue (upstream's event handlers), and turn into cluster events that
//! requeue unschedulable pods.
//!
//! Pods bound to a node feed the cache; pending pods that ask for this scheduler feed the
//! queue; everything else is ignored. After a relist (the watcher's `Init`…`InitDone`),
//! objects not seen again are removed.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::cache::PodChange;
use crate::framework::resource::Resource;
use crate::framework::selector::{Labels, Selector};
use crate::framework::types::DisruptionBudget;
use crate::framework::{ActionType, ClusterEvent, EventObjects, EventResource, PodInfo};
use crate::scheduler::Shared;

/// Which informers have listed everything once (upstream's `WaitForCacheSync`).
#[derive(Debug, Default)]
pub struct Synced {
    pods: AtomicBool,
    nodes: AtomicBool,
    namespaces: AtomicBool,
    pdbs: AtomicBool,
    /// Service, ReplicationController, ReplicaSet and StatefulSet informers synced.
    spreaders: std::sync::atomic::AtomicUsize,
    notify: Notify,
}

impl Synced {
    fn mark(&self, flag: &AtomicBool) {
        flag.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    /// All informers have synced.
    pub fn all(&self) -> bool {
        self.pods.load(Ordering::SeqCst)
            && self.nodes.load(Ordering::SeqCst)
            && self.namespaces.load(Ordering::SeqCst)
            && self.pdbs.load(Ordering::SeqCst)
            && self.spreaders.load(Ordering::SeqCst) >= SPREADER_KINDS
    }

    /// Waits until every informer has synced.
    pub async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.all() {
                return;
            }
            notified.await;
        }
    }
}

fn pod_event(action: ActionType) -> ClusterEvent {
    ClusterEvent {
        resource: EventResource::Pod,
        action,
    }
}

fn node_event(action: ActionType) -> ClusterEvent {
    ClusterEvent {
        resource: EventResource::Node,
        action,
    }
}

/// What changed between two versions of a bound pod, as cluster event actions.
pub fn pod_update_actions(old: &PodInfo, new: &PodInfo) -> ActionType {
    let mut a = ActionType::default();
    if old.pod.metadata.labels != new.pod.metadata.labels {
        a = a.or(ActionType::UPDATE_POD_LABEL);
    }
    let (o, n): (&Resource, &Resource) = (&old.requests, &new.requests);
    let shrank = n.milli_cpu < o.milli_cpu
        || n.memory < o.memory
        || n.ephemeral_storage < o.ephemeral_storage
        || o.scalar.iter().any(|(k, v)| n.scalar(k) < *v);
    if shrank {
        a = a.or(ActionType::UPDATE_POD_SCALE_DOWN);
    }
    a
}

/// What changed between two versions of a node, as cluster event actions (heartbeats
/// alone change nothing).
pub fn node_update_actions(old: &Node, new: &Node) -> ActionType {
    let mut a = ActionType::default();
    let status = |n: &Node| n.status.clone().unwrap_or_default();
    let (os, ns) = (status(old), status(new));
    if os.allocatable != ns.allocatable {
        a = a.or(ActionType::UPDATE_NODE_ALLOCATABLE);
    }
    if old.metadata.labels != new.metadata.labels {
        a = a.or(ActionType::UPDATE_NODE_LABEL);
    }
    let spec = |n: &Node| {
        let s = n.spec.clone().unwrap_or_default();
        (s.taints, s.unschedulable.unwrap_or(false))
    };
    if spec(old) != spec(new) {
        a = a.or(ActionType::UPDATE_NODE_TAINT);
    }
    let conditions = |s: &k8s_openapi::api::core::v1::NodeStatus| -> Vec<(String, String)> {
        s.conditions
            .iter()
            .flatten()
            .map(|c| (c.type_.clone(), c.status.clone()))
            .collect()
    };
    if conditions(&os) != conditions(&ns) {
        a = a.or(ActionType::UPDATE_NODE_CONDITION);
    }
    if old.metadata.annotations != new.metadata.annotations {
        a = a.or(ActionType::UPDATE_NODE_ANNOTATION);
    }
    if os.images != ns.images {
        a = a.or(ActionType::UPDATE_NODE_IMAGES);
    }
    a
}

fn phase_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    )
}

/// Applies an added or updated pod. Returns whether the loop should wake up.
pub fn on_pod_apply(shared: &Shared, pod: Pod) -> bool {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let assigned = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty());
    let terminal = phase_terminal(&pod);
    let fw = &shared.fw;
    let now = Instant::now();
    let mut st = shared.state.lock();
    if assigned {
        st.queue.delete(&uid);
        if terminal {
            return match st.cache.remove_pod(&uid) {
                Some(old) => st.queue.move_all(
                    fw,
                    &pod_event(ActionType::DELETE),
                    &EventObjects::Pod {
                        old: Some(&old),
                        new: None,
                    },
                    now,
                ),
                None => false,
            };
        }
        let info = Arc::new(PodInfo::new(Arc::new(pod)));
        return match st.cache.upsert_pod(info.clone()) {
            PodChange::Added => st.queue.move_all(
                fw,
                &pod_event(ActionType::ADD),
                &EventObjects::Pod {
                    old: None,
                    new: Some(&info),
                },
                now,
            ),
            PodChange::Updated(old) => {
                let actions = pod_update_actions(&old, &info);
                !actions.is_empty()
                    && st.queue.move_all(
                        fw,
                        &pod_event(actions),
                        &EventObjects::Pod {
                            old: Some(&old),
                            new: Some(&info),
                        },
                        now,
                    )
            }
        };
    }
    // Not bound. Our own binding may still be in flight.
    if st.cache.is_assumed(&uid) {
        return false;
    }
    let ours = pod.spec.as_ref().and_then(|s| s.scheduler_name.as_deref())
        == Some(fw.scheduler_name.as_str());
    if terminal || !ours || pod.metadata.deletion_timestamp.is_some() {
        st.queue.delete(&uid);
        return false;
    }
    st.queue
        .update(fw, Arc::new(PodInfo::new(Arc::new(pod))), now)
}

/// Applies a deleted pod. Returns whether the loop should wake up.
pub fn on_pod_delete(shared: &Shared, pod: &Pod) -> bool {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let mut st = shared.state.lock();
    st.queue.delete(&uid);
    match st.cache.remove_pod(&uid) {
        Some(old) => st.queue.move_all(
            &shared.fw,
            &pod_event(ActionType::DELETE),
            &EventObjects::Pod {
                old: Some(&old),
                new: None,
            },
            Instant::now(),
        ),
        None => false,
    }
}

/// Applies an added or updated node. Returns whether the loop should wake up.
pub fn on_node_apply(shared: &Shared, node: Node) -> bool {
    let node = Arc::new(node);
    let mut st = shared.state.lock();
    let (event, old) = match st.cache.upsert_node(node.clone()) {
        None => (node_event(ActionType::ADD), None),
        Some(old) => {
            let actions = node_update_actions(&old, &node);
            if actions.is_empty() {
                return false;
            }
            (node_event(actions), Some(old))
        }
    };
    st.queue.move_all(
        &shared.fw,
        &event,
        &EventObjects::Node {
            old: old.as_deref(),
            new: Some(&node),
        },
        Instant::now(),
    )
}

/// Applies a deleted node. Returns whether the loop should wake up.
pub fn on_node_delete(shared: &Shared, name: &str) -> bool {
    let mut st = shared.state.lock();
    match st.cache.remove_node(name) {
        Some(old) => st.queue.move_all(
            &shared.fw,
            &node_event(ActionType::DELETE),
            &EventObjects::Node {
                old: Some(&old),
                new: None,
            },
            Instant::now(),
        ),
        None => false,
    }
}

/// Watches pods until the task is dropped.
pub async fn watch_pods(client: kube::Client, shared: Arc<Shared>, synced: Arc<Synced>) {
    let api: Api<Pod> = Api::all(client);
    let config = watcher::Config::default().fields("status.phase!=Succeeded,status.phase!=Failed");
    let mut stream = watcher::watcher(api, config).default_backoff().boxed();
    let mut relist: Option<HashSet<String>> = None;
    while let Some(event) = stream.next().await {
        let wake = match event {
            Ok(Event::Init) => {
                relist = Some(HashSet::new());
                false
            }
            Ok(Event::InitApply(pod)) => {
                if let Some(seen) = relist.as_mut() {
                    seen.insert(pod.metadata.uid.clone().unwrap_or_default());
                }
                on_pod_apply(&shared, pod)
            }
            Ok(Event::InitDone) => {
                let seen = relist.take().unwrap_or_default();
                let mut wake = false;
                {
                    let mut st = shared.state.lock();
                    for uid in st.queue.uids() {
                        if !seen.contains(&uid) {
                            st.queue.delete(&uid);
                        }
                    }
                    for uid in st.cache.confirmed_pod_uids() {
                        if !seen.contains(&uid) {
                            st.cache.remove_pod(&uid);
                            wake = true;
                        }
                    }
                }
                if wake {
                    let mut st = shared.state.lock();
                    st.queue.move_all(
                        &shared.fw,
                        &ClusterEvent::WILDCARD,
                        &EventObjects::None,
                        Instant::now(),
                    );
                }
                synced.mark(&synced.pods);
                true
            }
            Ok(Event::Apply(pod)) => on_pod_apply(&shared, pod),
            Ok(Event::Delete(pod)) => on_pod_delete(&shared, &pod),
            Err(err) => {
                tracing::warn!(?err, "pod watch failed; retrying");
                false
            }
        };
        if wake {
            shared.notify.notify_one();
        }
    }
}

/// Watches nodes until the task is dropped.
pub async fn watch_nodes(client: kube::Client, shared: Arc<Shared>, synced: Arc<Synced>) {
    let api: Api<Node> = Api::all(client);
    let mut stream = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut relist: Option<HashSet<String>> = None;
    while let Some(event) = stream.next().await {
        let wake = match event {
            Ok(Event::Init) => {
                relist = Some(HashSet::new());
                false
            }
            Ok(Event::InitApply(node)) => {
                if let Some(seen) = relist.as_mut() {
                    seen.insert(node.metadata.name.clone().unwrap_or_default());
                }
                on_node_apply(&shared, node)
            }
            Ok(Event::InitDone) => {
                let seen = relist.take().unwrap_or_default();
                let stale: Vec<String> = {
                    let st = shared.state.lock();
                    st.cache
                        .node_names()
                        .into_iter()
                        .filter(|n| !seen.contains(n))
                        .collect()
                };
                for name in stale {
                    on_node_delete(&shared, &name);
                }
                synced.mark(&synced.nodes);
                true
            }
            Ok(Event::Apply(node)) => on_node_apply(&shared, node),
            Ok(Event::Delete(node)) => {
                on_node_delete(&shared, node.metadata.name.as_deref().unwrap_or(""))
            }
            Err(err) => {
                tracing::warn!(?err, "node watch failed; retrying");
                false
            }
        };
        if wake {
            shared.notify.notify_one();
        }
    }
}

/// Watches namespaces (their labels, for affinity namespace selectors).
pub async fn watch_namespaces(client: kube::Client, shared: Arc<Shared>, synced: Arc<Synced>) {
    let api: Api<Namespace> = Api::all(client);
    let mut stream = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::InitApply(ns)) | Ok(Event::Apply(ns)) => {
                let name = ns.metadata.name.clone().unwrap_or_default();
                let labels = ns.metadata.labels.clone().unwrap_or_default();
                let changed = shared.state.lock().cache.upsert_namespace(&name, labels);
                if changed {
                    let moved = shared.state.lock().queue.move_all(
                        &shared.fw,
                        &ClusterEvent {
                            resource: EventResource::Namespace,
                            action: ActionType::UPDATE,
                        },
                        &EventObjects::None,
                        Instant::now(),
                    );
                    if moved {
                        shared.notify.notify_one();
                    }
                }
            }
            Ok(Event::Delete(ns)) => {
                let name = ns.metadata.name.clone().unwrap_or_default();
                shared.state.lock().cache.remove_namespace(&name);
            }
            Ok(Event::InitDone) => synced.mark(&synced.namespaces),
            Ok(Event::Init) => {}
            Err(err) => tracing::warn!(?err, "namespace watch failed; retrying"),
        }
    }
}

/// Kinds whose selectors feed the default spread constraints.
const SPREADER_KINDS: usize = 4;

/// Where one object's selector goes in [`crate::framework::types::Spreaders`].
enum SpreaderEntry {
    Service(Labels),
    ReplicationController(Labels),
    Set(Selector),
}

/// Watches Services, ReplicationControllers, ReplicaSets and StatefulSets and keeps their
/// selectors (for the default topology spread constraints of pods they select).
pub async fn watch_spreaders(client: kube::Client, shared: Arc<Shared>, synced: Arc<Synced>) {
    use k8s_openapi::api::apps::v1::{ReplicaSet, StatefulSet};
    use k8s_openapi::api::core::v1::{ReplicationController, Service};
    tokio::join!(
        watch_spreader::<Service>(client.clone(), &shared, &synced, |s| {
            let sel = s.spec.as_ref()?.selector.clone()?;
            (!sel.is_empty()).then_some(SpreaderEntry::Service(sel))
        }),
        watch_spreader::<ReplicationController>(client.clone(), &shared, &synced, |rc| {
            let sel = rc.spec.as_ref()?.selector.clone()?;
            Some(SpreaderEntry::ReplicationController(sel))
        }),
        watch_spreader::<ReplicaSet>(client.clone(), &shared, &synced, |rs| {
            let sel = rs.spec.as_ref().map(|s| &s.selector);
            Some(SpreaderEntry::Set(Selector::from_label_selector(sel)))
        }),
        watch_spreader::<StatefulSet>(client, &shared, &synced, |ss| {
            let sel = ss.spec.as_ref().map(|s| &s.selector);
            Some(SpreaderEntry::Set(Selector::from_label_selector(sel)))
        }),
    );
}

async fn watch_spreader<K>(
    client: kube::Client,
    shared: &Shared,
    synced: &Synced,
    entry: fn(&K) -> Option<SpreaderEntry>,
) where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + 'static,
{
    let api: Api<K> = Api::all(client);
    let mut stream = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let kind = K::kind(&());
    let names = |o: &K| {
        let meta = o.meta();
        (
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone().unwrap_or_default(),
        )
    };
    let remove = |shared: &Shared, ns: &str, name: &str| {
        let mut st = shared.state.lock();
        let sp = &mut st.cache.spreaders;
        if kind == "Service" {
            if let Some(m) = sp.services.get_mut(ns) {
                m.remove(name);
            }
        } else if kind == "ReplicationController" {
            sp.replication_controllers.remove(&format!("{ns}/{name}"));
        } else {
            sp.sets.remove(&format!("{kind}/{ns}/{name}"));
        }
    };
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::InitApply(o)) | Ok(Event::Apply(o)) => {
                let (ns, name) = names(&o);
                remove(shared, &ns, &name);
                let mut st = shared.state.lock();
                let sp = &mut st.cache.spreaders;
                match entry(&o) {
                    Some(SpreaderEntry::Service(sel)) => {
                        sp.services.entry(ns).or_default().insert(name, sel);
                    }
                    Some(SpreaderEntry::ReplicationController(sel)) => {
                        sp.replication_controllers
                            .insert(format!("{ns}/{name}"), sel);
                    }
                    Some(SpreaderEntry::Set(sel)) => {
                        sp.sets.insert(format!("{kind}/{ns}/{name}"), sel);
                    }
                    None => {}
                }
            }
            Ok(Event::Delete(o)) => {
                let (ns, name) = names(&o);
                remove(shared, &ns, &name);
            }
            Ok(Event::InitDone) => {
                synced.spreaders.fetch_add(1, Ordering::SeqCst);
                synced.notify.notify_waiters();
            }
            Ok(Event::Init) => {}
            Err(err) => tracing::warn!(?err, %kind, "watch failed; retrying"),
        }
    }
}

/// Watches PodDisruptionBudgets (preemption prefers victims they do not protect).
pub async fn watch_pdbs(client: kube::Client, shared: Arc<Shared>, synced: Arc<Synced>) {
    let api: Api<PodDisruptionBudget> = Api::all(client);
    let mut stream = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let key = |p: &PodDisruptionBudget| {
        format!(
            "{}/{}",
            p.metadata.namespace.as_deref().unwrap_or(""),
            p.metadata.name.as_deref().unwrap_or("")
        )
    };
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::InitApply(p)) | Ok(Event::Apply(p)) => {
                let budget = DisruptionBudget::new(&p);
                shared.state.lock().cache.upsert_pdb(&key(&p), budget);
            }
            Ok(Event::Delete(p)) => shared.state.lock().cache.remove_pdb(&key(&p)),
            Ok(Event::InitDone) => synced.mark(&synced.pdbs),
            Ok(Event::Init) => {}
            Err(err) => tracing::warn!(?err, "PodDisruptionBudget watch failed; retrying"),
        }
    }
}
