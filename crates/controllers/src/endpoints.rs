//! The endpoints controller: one core/v1 Endpoints per Service with a selector, listing the
//! addresses of the selected pods (upstream `pkg/controller/endpoint`).
//!
//! Start with [`run`] and [`desired_subsets`]. Services, pods and Endpoints are watched into
//! local caches (pods in a [`PodIndex`] by namespace, so a Service's pods are found without
//! scanning the cluster); a change queues the Services it concerns (a pod: the Services of
//! its namespace whose selector matches its old or new labels, and only when a field the
//! endpoints depend on changed). A reconcile reads only the caches and writes the Endpoints
//! when they differ:
//!
//! - ready pods go to `addresses`, others to `notReadyAddresses` (all to `addresses` with
//!   `publishNotReadyAddresses`); pods without an IP, terminating pods and pods that will
//!   not run again are left out;
//! - each address has the IP, `nodeName`, a `targetRef` to the pod and `hostname` when the
//!   pod's `hostname` is set and its `subdomain` is the Service;
//! - ports come from `targetPort` (a number, or a container port name looked up per pod), and
//!   the subsets are repacked so addresses offering the same ports share a subset;
//! - the Endpoints carry the Service's labels, `endpointslice.kubernetes.io/skip-mirror`
//!   and the `endpoints.kubernetes.io/last-change-trigger-time` annotation.
//!
//! Endpoints are deleted with their Service or when it loses its selector; Services without a
//! selector are left alone (their Endpoints are the user's). The shared pieces (the pod
//! index, service triggers, port lookup) are used by [`crate::endpointslice`] too.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
    ServicePort,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, watcher::watcher};
use parking_lot::RwLock;
use tokio::sync::watch;
use tracing::Instrument;

use crate::context::{Context, Stop, stopped};
use crate::workqueue::Queue;

/// Label on the Endpoints this controller manages (the EndpointSlice mirroring controller
/// skips them).
pub const SKIP_MIRROR_LABEL: &str = "endpointslice.kubernetes.io/skip-mirror";
/// Label of the Endpoints and EndpointSlices of a headless Service.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// When the change that led to the current endpoints happened.
pub const TRIGGER_TIME_ANNOTATION: &str = "endpoints.kubernetes.io/last-change-trigger-time";
/// Set on Endpoints truncated to [`MAX_ADDRESSES`].
pub const OVER_CAPACITY_ANNOTATION: &str = "endpoints.kubernetes.io/over-capacity";
/// Most addresses one Endpoints object holds (upstream `maxCapacity`).
pub const MAX_ADDRESSES: usize = 1000;

/// What went wrong in one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Writing the Endpoints failed.
    #[error("cannot {action} endpoints {namespace}/{name}")]
    Write {
        /// What was attempted.
        action: &'static str,
        /// The namespace.
        namespace: String,
        /// The name.
        name: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

// === shared: pod index, triggers, ports ===

/// Pods by namespace and name, fed by a pod watch.
#[derive(Default)]
pub struct PodIndex {
    by_namespace: RwLock<HashMap<String, HashMap<String, Arc<Pod>>>>,
}

impl PodIndex {
    /// The pods of `namespace`.
    pub fn in_namespace(&self, namespace: &str) -> Vec<Arc<Pod>> {
        self.by_namespace
            .read()
            .get(namespace)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The pods of `namespace` that `selector` selects.
    pub fn selected(&self, namespace: &str, selector: &BTreeMap<String, String>) -> Vec<Arc<Pod>> {
        self.by_namespace
            .read()
            .get(namespace)
            .map(|m| {
                m.values()
                    .filter(|p| selects(selector, p.metadata.labels.as_ref()))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    fn upsert(&self, pod: Pod) -> (Option<Arc<Pod>>, Arc<Pod>) {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let pod = Arc::new(pod);
        let old = self
            .by_namespace
            .write()
            .entry(ns)
            .or_default()
            .insert(name, pod.clone());
        (old, pod)
    }

    fn remove(&self, pod: &Pod) -> Option<Arc<Pod>> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let mut map = self.by_namespace.write();
        let old = map.get_mut(ns)?.remove(name);
        if map.get(ns).is_some_and(HashMap::is_empty) {
            map.remove(ns);
        }
        old
    }

    fn replace(&self, pods: HashMap<String, HashMap<String, Arc<Pod>>>) {
        *self.by_namespace.write() = pods;
    }
}

/// Whether a (non-empty) service `selector` selects `labels`.
pub fn selects(
    selector: &BTreeMap<String, String>,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    !selector.is_empty()
        && selector
            .iter()
            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// A Service's selector, if it has a non-empty one.
pub fn selector_of(svc: &Service) -> Option<&BTreeMap<String, String>> {
    svc.spec
        .as_ref()?
        .selector
        .as_ref()
        .filter(|s| !s.is_empty())
}

/// `namespace/name` of an object.
pub fn key_of(meta: &kube::api::ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
}

/// The caches and queue both endpoints controllers are built on.
pub struct Informers {
    /// Services.
    pub services: Store<Service>,
    /// Pods by namespace.
    pub pods: Arc<PodIndex>,
    /// Services to reconcile, as `namespace/name`.
    pub queue: Arc<Queue<String>>,
    pods_synced: watch::Receiver<bool>,
}

impl Informers {
    /// Starts the Service and pod watches; `relevant(old, new)` says whether a pod update
    /// matters to the controller.
    pub fn start(client: &kube::Client, relevant: fn(&Pod, &Pod) -> bool) -> (Self, Tasks) {
        let queue = Queue::new();
        let (services, writer) = reflector::store();
        let svc_stream = reflector::reflector(
            writer,
            watcher(
                Api::<Service>::all(client.clone()),
                watcher::Config::default(),
            ),
        )
        .default_backoff();
        let mut tasks = Tasks::default();
        {
            let queue = queue.clone();
            tasks.spawn(async move {
                let mut s = svc_stream.boxed();
                while let Some(ev) = s.next().await {
                    match ev {
                        Ok(Event::Apply(svc) | Event::InitApply(svc) | Event::Delete(svc)) => {
                            queue.add(key_of(&svc.metadata))
                        }
                        Ok(_) => {}
                        Err(err) => tracing::debug!(?err, "service watch error"),
                    }
                }
            });
        }
        let pods = Arc::new(PodIndex::default());
        let (synced_tx, pods_synced) = watch::channel(false);
        {
            let (pods, queue, services) = (pods.clone(), queue.clone(), services.clone());
            let stream = watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
                .default_backoff();
            tasks.spawn(async move {
                let mut s = stream.boxed();
                let mut relist: Option<HashMap<String, HashMap<String, Arc<Pod>>>> = None;
                while let Some(ev) = s.next().await {
                    match ev {
                        Ok(Event::Apply(pod)) => {
                            let (old, new) = pods.upsert(pod);
                            if old.as_deref().is_none_or(|o| relevant(o, &new)) {
                                enqueue_for_pod(&services, &queue, old.as_deref(), Some(&new));
                            }
                        }
                        Ok(Event::Delete(pod)) => {
                            let old = pods.remove(&pod);
                            enqueue_for_pod(&services, &queue, old.as_deref(), Some(&pod));
                        }
                        Ok(Event::Init) => relist = Some(HashMap::new()),
                        Ok(Event::InitApply(pod)) => {
                            if let Some(r) = relist.as_mut() {
                                let ns = pod.metadata.namespace.clone().unwrap_or_default();
                                let name = pod.metadata.name.clone().unwrap_or_default();
                                r.entry(ns).or_default().insert(name, Arc::new(pod));
                            }
                        }
                        Ok(Event::InitDone) => {
                            pods.replace(relist.take().unwrap_or_default());
                            let _ = synced_tx.send(true);
                            for svc in services.state() {
                                queue.add(key_of(&svc.metadata));
                            }
                        }
                        Err(err) => tracing::debug!(?err, "pod watch error"),
                    }
                }
            });
        }
        (
            Self {
                services,
                pods,
                queue,
                pods_synced,
            },
            tasks,
        )
    }

    /// Waits until the Service and pod caches are filled (WaitForCacheSync).
    pub async fn wait_synced(&self) {
        let _ = self.services.wait_until_ready().await;
        let mut rx = self.pods_synced.clone();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// The Service `namespace/name`.
    pub fn service(&self, key: &str) -> Option<Arc<Service>> {
        let (ns, name) = key.split_once('/')?;
        self.services.get(&ObjectRef::new(name).within(ns))
    }
}

/// Background tasks, aborted on drop.
#[derive(Default)]
pub struct Tasks(Vec<tokio::task::JoinHandle<()>>);

impl Tasks {
    /// Spawns `fut`, aborted when `self` is dropped.
    pub fn spawn(&mut self, fut: impl std::future::Future<Output = ()> + Send + 'static) {
        self.0.push(tokio::spawn(fut));
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// Queues the Services of the pod's namespace that select its old or new labels.
fn enqueue_for_pod(
    services: &Store<Service>,
    queue: &Queue<String>,
    old: Option<&Pod>,
    new: Option<&Pod>,
) {
    let Some(ns) = new.or(old).and_then(|p| p.metadata.namespace.as_deref()) else {
        return;
    };
    let labels = |p: Option<&Pod>| p.and_then(|p| p.metadata.labels.clone());
    let (a, b) = (labels(old), labels(new));
    for svc in services.state() {
        if svc.metadata.namespace.as_deref() != Some(ns) {
            continue;
        }
        if let Some(sel) = selector_of(&svc)
            && (selects(sel, a.as_ref()) || selects(sel, b.as_ref()))
        {
            queue.add(key_of(&svc.metadata));
        }
    }
}

/// Runs `workers` workers calling `sync(key)` until the queue shuts down; `Ok(Some(d))`
/// queues the key again after `d`, errors retry with back-off.
pub async fn run_workers<F, Fut, E>(
    queue: Arc<Queue<String>>,
    workers: usize,
    what: &'static str,
    sync: F,
) where
    F: Fn(String) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Option<Duration>, E>> + Send,
    E: std::fmt::Debug,
{
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..workers.max(1) {
        let (queue, sync) = (queue.clone(), sync.clone());
        set.spawn(async move {
            while let Some(key) = queue.get().await {
                let span = tracing::info_span!("reconcile", object.ref = %key, object.reason = what);
                match sync(key.clone()).instrument(span).await {
                    Ok(None) => queue.forget(&key),
                    Ok(Some(after)) => {
                        queue.forget(&key);
                        queue.add_after(key.clone(), after);
                    }
                    Err(err) => {
                        tracing::warn!(?err, key = %key, controller = what, "sync failed; retrying");
                        queue.retry(key.clone());
                    }
                }
                queue.done(&key);
            }
        });
    }
    while set.join_next().await.is_some() {}
}

/// Whether a pod belongs in endpoints at all (upstream `ShouldPodBeInEndpoints`): it has an
/// IP, is not terminating (unless `include_terminating`) and may still run.
pub fn should_be_in_endpoints(pod: &Pod, include_terminating: bool) -> bool {
    let status = pod.status.as_ref();
    let has_ip = status.is_some_and(|s| {
        s.pod_ip.as_deref().is_some_and(|i| !i.is_empty())
            || s.pod_ips.as_ref().is_some_and(|v| !v.is_empty())
    });
    if !has_ip {
        return false;
    }
    if !include_terminating && pod.metadata.deletion_timestamp.is_some() {
        return false;
    }
    let phase = status.and_then(|s| s.phase.as_deref());
    match pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()) {
        Some("Never") => !matches!(phase, Some("Failed" | "Succeeded")),
        Some("OnFailure") => phase != Some("Succeeded"),
        _ => true,
    }
}

/// The pod's IP of the Service's (first) family.
pub fn pod_ip(pod: &Pod, svc: &Service) -> Option<String> {
    let ipv6 = svc
        .spec
        .as_ref()
        .and_then(|s| s.ip_families.as_ref())
        .and_then(|f| f.first())
        .is_some_and(|f| f == "IPv6");
    let status = pod.status.as_ref()?;
    let ips = status
        .pod_ips
        .iter()
        .flatten()
        .map(|p| p.ip.clone())
        .chain(status.pod_ip.clone());
    ips.into_iter().find(|ip| {
        ip.parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_ipv6() == ipv6)
    })
}

/// The hostname of the pod in the Service's DNS (its `hostname` when its `subdomain` is
/// the Service).
pub fn hostname_for(pod: &Pod, svc: &Service) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let hostname = spec.hostname.as_ref().filter(|h| !h.is_empty())?;
    (spec.subdomain.as_deref() == svc.metadata.name.as_deref()
        && pod.metadata.namespace == svc.metadata.namespace)
        .then(|| hostname.clone())
}

/// The container port a Service port targets on `pod` (upstream `FindPort`): a number as
/// is, a name looked up among the pod's container ports with the same protocol.
pub fn find_port(pod: &Pod, sp: &ServicePort) -> Option<i32> {
    let protocol = sp.protocol.as_deref().unwrap_or("TCP");
    match &sp.target_port {
        None => Some(sp.port),
        Some(IntOrString::Int(0)) => Some(sp.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => pod
            .spec
            .as_ref()?
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| {
                p.name.as_deref() == Some(name.as_str())
                    && p.protocol.as_deref().unwrap_or("TCP") == protocol
            })
            .map(|p| p.container_port),
    }
}

/// A reference to a pod for `targetRef`.
pub fn pod_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: pod.metadata.namespace.clone(),
        name: pod.metadata.name.clone(),
        uid: pod.metadata.uid.clone(),
        ..Default::default()
    }
}

// === the Endpoints controller ===

/// The endpoints-relevant view of a pod: an update that keeps it changes nothing.
fn pod_view(p: &Pod) -> impl PartialEq + '_ {
    let spec = p.spec.as_ref();
    (
        p.status.as_ref().map(|s| (&s.pod_ip, &s.pod_ips, &s.phase)),
        crate::pods::is_ready(p),
        p.metadata.deletion_timestamp.is_some(),
        &p.metadata.labels,
        spec.map(|s| (&s.node_name, &s.hostname, &s.subdomain, &s.restart_policy)),
        spec.map(|s| s.containers.iter().map(|c| &c.ports).collect::<Vec<_>>()),
    )
}

fn pod_changed(old: &Pod, new: &Pod) -> bool {
    pod_view(old) != pod_view(new)
}

/// An `EndpointPort` as a sortable key: name, port, protocol, appProtocol.
type PortKey = (String, i32, String, Option<String>);
/// Addresses by (ip, pod uid), with readiness.
type AddressSet = BTreeMap<(String, String), (EndpointAddress, bool)>;
/// (ip, pod uid, ready) of every address offering a port.
type Signature = Vec<(String, String, bool)>;
/// The ports sharing one [`Signature`], and its addresses.
type Group = (Vec<Option<PortKey>>, Vec<(EndpointAddress, bool)>);

/// The subsets of a Service's Endpoints for the selected `pods` (upstream `syncService` and
/// `RepackSubsets`): per port the addresses offering it, then ports grouped by identical
/// address sets; addresses sorted by IP, ready ones in `addresses`.
pub fn desired_subsets(svc: &Service, pods: &[Arc<Pod>]) -> Vec<EndpointSubset> {
    let spec = svc.spec.clone().unwrap_or_default();
    let tolerate = spec.publish_not_ready_addresses == Some(true);
    let headless = spec.cluster_ip.as_deref() == Some("None");
    let ports = spec.ports.unwrap_or_default();
    // Per port (None: the headless no-port sentinel): addresses by (ip, uid) with readiness.
    let mut by_port: BTreeMap<Option<PortKey>, AddressSet> = BTreeMap::new();
    for pod in pods {
        if !should_be_in_endpoints(pod, false) {
            continue;
        }
        let Some(ip) = pod_ip(pod, svc) else { continue };
        let address = EndpointAddress {
            ip: ip.clone(),
            hostname: hostname_for(pod, svc),
            node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            target_ref: Some(pod_ref(pod)),
        };
        let ready = tolerate || crate::pods::is_ready(pod);
        let id = (ip, pod.metadata.uid.clone().unwrap_or_default());
        if ports.is_empty() {
            if headless {
                by_port
                    .entry(None)
                    .or_default()
                    .insert(id, (address, ready));
            }
            continue;
        }
        for sp in &ports {
            let Some(port) = find_port(pod, sp) else {
                tracing::debug!(pod = ?pod.metadata.name, port = ?sp.name, "no such container port");
                continue;
            };
            let key = (
                sp.name.clone().unwrap_or_default(),
                port,
                sp.protocol.clone().unwrap_or_else(|| "TCP".into()),
                sp.app_protocol.clone(),
            );
            by_port
                .entry(Some(key))
                .or_default()
                .insert(id.clone(), (address.clone(), ready));
        }
    }
    // Group the ports by the exact set of addresses (and readiness) offering them.
    let mut groups: BTreeMap<Signature, Group> = BTreeMap::new();
    for (port, addrs) in by_port {
        let sig: Signature = addrs
            .iter()
            .map(|((ip, uid), (_, ready))| (ip.clone(), uid.clone(), *ready))
            .collect();
        let entry = groups
            .entry(sig)
            .or_insert_with(|| (Vec::new(), addrs.into_values().collect()));
        entry.0.push(port);
    }
    groups
        .into_values()
        .map(|(ports, addrs)| {
            let (ready, not_ready): (Vec<_>, Vec<_>) = addrs.into_iter().partition(|(_, r)| *r);
            let strip = |v: Vec<(EndpointAddress, bool)>| {
                let v: Vec<EndpointAddress> = v.into_iter().map(|(a, _)| a).collect();
                (!v.is_empty()).then_some(v)
            };
            let ports: Vec<EndpointPort> = ports
                .into_iter()
                .flatten()
                .map(|(name, port, protocol, app_protocol)| EndpointPort {
                    name: (!name.is_empty()).then_some(name),
                    port,
                    protocol: Some(protocol),
                    app_protocol,
                })
                .collect();
            EndpointSubset {
                addresses: strip(ready),
                not_ready_addresses: strip(not_ready),
                ports: (!ports.is_empty()).then_some(ports),
            }
        })
        .collect()
}

/// Truncates `subsets` to [`MAX_ADDRESSES`] addresses (ready ones kept first); whether it
/// had to.
pub fn truncate(subsets: &mut [EndpointSubset]) -> bool {
    let total: usize = subsets
        .iter()
        .map(|s| {
            s.addresses.as_ref().map_or(0, Vec::len)
                + s.not_ready_addresses.as_ref().map_or(0, Vec::len)
        })
        .sum();
    if total <= MAX_ADDRESSES {
        return false;
    }
    let mut budget = MAX_ADDRESSES;
    for s in subsets.iter_mut() {
        if let Some(a) = s.addresses.as_mut() {
            a.truncate(budget);
            budget -= a.len();
        }
    }
    for s in subsets.iter_mut() {
        if let Some(a) = s.not_ready_addresses.as_mut() {
            a.truncate(budget);
            budget -= a.len();
        }
    }
    true
}

/// The labels of a Service's Endpoints: the Service's, skip-mirror, and headless.
pub fn endpoints_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut labels = svc.metadata.labels.clone().unwrap_or_default();
    labels.insert(SKIP_MIRROR_LABEL.into(), "true".into());
    if svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None") {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    } else {
        labels.remove(HEADLESS_LABEL);
    }
    labels
}

struct EndpointsController {
    informers: Informers,
    endpoints: Store<Endpoints>,
    client: kube::Client,
    /// What we last wrote per Service: used instead of the cache while the cache is older,
    /// so a burst of pod changes does not turn into a burst of write conflicts.
    written: parking_lot::Mutex<HashMap<String, Arc<Endpoints>>>,
}

fn version(ep: &Endpoints) -> u64 {
    ep.metadata
        .resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Runs the controller until `stop` turns true.
pub async fn run(ctx: Arc<Context>, stop: Stop) {
    let (informers, mut tasks) = Informers::start(&ctx.client, pod_changed);
    let (endpoints, writer) = reflector::store();
    let ep_stream = reflector::reflector(
        writer,
        watcher(
            Api::<Endpoints>::all(ctx.client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff();
    {
        let queue = informers.queue.clone();
        tasks.spawn(async move {
            let mut s = ep_stream.boxed();
            while let Some(ev) = s.next().await {
                // A deleted Endpoints is recreated; ones left from deleted Services are
                // found at start (upstream `checkLeftoverEndpoints`).
                if let Ok(Event::Delete(ep) | Event::InitApply(ep)) = ev {
                    queue.add(key_of(&ep.metadata));
                }
            }
        });
    }
    let ctl = Arc::new(EndpointsController {
        informers,
        endpoints,
        client: ctx.client.clone(),
        written: parking_lot::Mutex::new(HashMap::new()),
    });
    let queue = ctl.informers.queue.clone();
    let workers = usize::from(ctx.config.concurrency);
    let work = {
        let ctl = ctl.clone();
        async move {
            ctl.informers.wait_synced().await;
            let _ = ctl.endpoints.wait_until_ready().await;
            let c = ctl.clone();
            run_workers(queue, workers, "endpoints", move |key| {
                let c = c.clone();
                async move { c.sync(&key).await }
            })
            .await
        }
    };
    tokio::select! {
        _ = stopped(stop) => {}
        _ = work => {}
    }
    ctl.informers.queue.shut_down();
    drop(tasks);
}

impl EndpointsController {
    /// Upstream `syncService`.
    async fn sync(&self, key: &str) -> Result<Option<Duration>> {
        let Some((ns, name)) = key.split_once('/') else {
            return Ok(None);
        };
        let api: Api<Endpoints> = Api::namespaced(self.client.clone(), ns);
        let cached = self.endpoints.get(&ObjectRef::new(name).within(ns));
        let current = {
            let mut written = self.written.lock();
            match (cached, written.get(key).cloned()) {
                (Some(c), Some(w)) if version(&w) > version(&c) => Some(w),
                (None, Some(w)) => Some(w),
                (c, _) => {
                    written.remove(key);
                    c
                }
            }
        };
        let write_err = |action| {
            move |source| Error::Write {
                action,
                namespace: ns.to_string(),
                name: name.to_string(),
                source,
            }
        };
        let svc = self.informers.service(key);
        let Some(selector) = svc.as_deref().and_then(selector_of) else {
            // Service gone, or no selector any more. Endpoints of a selector-less Service
            // that we did not write are the user's.
            let ours = current.as_ref().is_some_and(|ep| {
                ep.metadata
                    .labels
                    .as_ref()
                    .is_some_and(|l| l.contains_key(SKIP_MIRROR_LABEL))
            });
            if current.is_some() && (svc.is_none() || ours) {
                tracing::info!(endpoints = %key, "deleting endpoints of a service without selector or gone");
                self.written.lock().remove(key);
                match api.delete(name, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(write_err("delete")(e)),
                }
            }
            return Ok(None);
        };
        let svc = svc.clone().unwrap_or_default();
        let pods = self.informers.pods.selected(ns, selector);
        let mut subsets = desired_subsets(&svc, &pods);
        let truncated = truncate(&mut subsets);
        let labels = endpoints_labels(&svc);
        let subsets_opt = (!subsets.is_empty()).then_some(subsets);
        let mut annotations = current
            .as_ref()
            .and_then(|c| c.metadata.annotations.clone())
            .unwrap_or_default();
        let over = annotations
            .get(OVER_CAPACITY_ANNOTATION)
            .map(String::as_str)
            == Some("truncated");
        if let Some(cur) = &current
            && cur.subsets == subsets_opt
            && cur.metadata.labels.as_ref() == Some(&labels)
            && over == truncated
        {
            return Ok(None);
        }
        annotations.insert(
            TRIGGER_TIME_ANNOTATION.into(),
            k8s_openapi::jiff::Timestamp::now().to_string(),
        );
        if truncated {
            annotations.insert(OVER_CAPACITY_ANNOTATION.into(), "truncated".into());
        } else {
            annotations.remove(OVER_CAPACITY_ANNOTATION);
        }
        let mut ep = Endpoints {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                labels: Some(labels),
                annotations: Some(annotations),
                ..Default::default()
            },
            subsets: subsets_opt,
        };
        let result = match &current {
            Some(cur) => {
                ep.metadata.resource_version = cur.metadata.resource_version.clone();
                api.replace(name, &PostParams::default(), &ep).await
            }
            None => api.create(&PostParams::default(), &ep).await,
        };
        match result {
            Ok(w) => {
                tracing::debug!(endpoints = %key, "endpoints written");
                self.written.lock().insert(key.to_string(), Arc::new(w));
                Ok(None)
            }
            // The cache was behind (it exists, or it changed): look again shortly.
            Err(kube::Error::Api(s)) if s.code == 409 || (s.code == 404 && current.is_some()) => {
                self.written.lock().remove(key);
                Ok(Some(Duration::from_millis(100)))
            }
            // The namespace is being deleted.
            Err(kube::Error::Api(s)) if s.code == 403 || s.code == 404 => Ok(None),
            Err(e) => Err(write_err(if current.is_some() {
                "update"
            } else {
                "create"
            })(e)),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, ContainerPort, PodCondition, PodIP, PodSpec, PodStatus, ServiceSpec,
    };

    pub(crate) fn pod(name: &str, ip: &str, ready: bool, labels: &[(&str, &str)]) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("uid-{name}")),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("n1".into()),
                containers: vec![Container {
                    name: "c".into(),
                    ports: Some(vec![ContainerPort {
                        name: Some("http".into()),
                        container_port: 8080,
                        ..Default::default()
                    }]),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                pod_ip: Some(ip.into()),
                pod_ips: Some(vec![PodIP { ip: ip.into() }]),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        })
    }

    pub(crate) fn service(ports: Vec<ServicePort>) -> Service {
        Service {
            metadata: kube::api::ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                labels: Some([("team".to_string(), "a".to_string())].into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                selector: Some([("app".to_string(), "web".to_string())].into()),
                ports: Some(ports),
                cluster_ip: Some("10.43.0.10".into()),
                ..Default::default()
            }),
            status: None,
        }
    }

    pub(crate) fn sport(name: &str, port: i32, target: IntOrString) -> ServicePort {
        ServicePort {
            name: Some(name.into()),
            port,
            target_port: Some(target),
            protocol: Some("TCP".into()),
            ..Default::default()
        }
    }

    fn ips(v: &Option<Vec<EndpointAddress>>) -> Vec<&str> {
        v.iter().flatten().map(|a| a.ip.as_str()).collect()
    }

    #[test]
    fn ready_and_not_ready_pods_share_a_subset_by_ports() {
        let svc = service(vec![sport("http", 80, IntOrString::String("http".into()))]);
        let pods = vec![
            pod("b", "10.42.0.3", true, &[]),
            pod("a", "10.42.0.2", true, &[]),
            pod("c", "10.42.0.4", false, &[]),
        ];
        let subsets = desired_subsets(&svc, &pods);
        assert_eq!(subsets.len(), 1);
        assert_eq!(ips(&subsets[0].addresses), vec!["10.42.0.2", "10.42.0.3"]);
        assert_eq!(ips(&subsets[0].not_ready_addresses), vec!["10.42.0.4"]);
        let port = &subsets[0].ports.as_ref().unwrap()[0];
        assert_eq!((port.name.as_deref(), port.port), (Some("http"), 8080));
        let a = &subsets[0].addresses.as_ref().unwrap()[0];
        assert_eq!(a.node_name.as_deref(), Some("n1"));
        assert_eq!(a.target_ref.as_ref().unwrap().name.as_deref(), Some("a"));
        // publishNotReadyAddresses: every address is ready.
        let mut tolerant = svc.clone();
        tolerant.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
        let subsets = desired_subsets(&tolerant, &pods);
        assert_eq!(ips(&subsets[0].addresses).len(), 3);
        assert!(subsets[0].not_ready_addresses.is_none());
    }

    #[test]
    fn named_ports_with_different_numbers_split_subsets() {
        let svc = service(vec![
            sport("http", 80, IntOrString::String("http".into())),
            sport("metrics", 9090, IntOrString::Int(9100)),
        ]);
        let mut other = (*pod("b", "10.42.0.3", true, &[])).clone();
        other.spec.as_mut().unwrap().containers[0]
            .ports
            .as_mut()
            .unwrap()[0]
            .container_port = 9000;
        let pods = vec![pod("a", "10.42.0.2", true, &[]), Arc::new(other)];
        let subsets = desired_subsets(&svc, &pods);
        // metrics (9100) is offered by both; http by each at its own number.
        assert_eq!(subsets.len(), 3);
        let find = |ip: &str, port: i32| {
            subsets.iter().any(|s| {
                ips(&s.addresses) == vec![ip] && s.ports.iter().flatten().any(|p| p.port == port)
            })
        };
        assert!(find("10.42.0.2", 8080));
        assert!(find("10.42.0.3", 9000));
        assert!(
            subsets
                .iter()
                .any(|s| ips(&s.addresses).len() == 2 && s.ports.as_ref().unwrap()[0].port == 9100)
        );
        // A name no container has: the pod offers only the numeric port.
        let svc = service(vec![sport("x", 80, IntOrString::String("nope".into()))]);
        assert!(desired_subsets(&svc, &pods).is_empty());
    }

    #[test]
    fn terminating_ipless_and_finished_pods_are_left_out_and_hostnames_set() {
        let svc = service(vec![sport("http", 80, IntOrString::Int(8080))]);
        let mut terminating = (*pod("t", "10.42.0.5", true, &[])).clone();
        terminating.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        let mut ipless = (*pod("i", "", true, &[])).clone();
        ipless.status.as_mut().unwrap().pod_ips = None;
        let mut done = (*pod("d", "10.42.0.6", false, &[])).clone();
        done.spec.as_mut().unwrap().restart_policy = Some("Never".into());
        done.status.as_mut().unwrap().phase = Some("Succeeded".into());
        let mut named = (*pod("h", "10.42.0.7", true, &[])).clone();
        named.spec.as_mut().unwrap().hostname = Some("h0".into());
        named.spec.as_mut().unwrap().subdomain = Some("web".into());
        let pods: Vec<Arc<Pod>> = [terminating, ipless, done, named]
            .into_iter()
            .map(Arc::new)
            .collect();
        let subsets = desired_subsets(&svc, &pods);
        assert_eq!(subsets.len(), 1);
        assert_eq!(ips(&subsets[0].addresses), vec!["10.42.0.7"]);
        assert_eq!(
            subsets[0].addresses.as_ref().unwrap()[0]
                .hostname
                .as_deref(),
            Some("h0")
        );
        // Headless without ports: addresses without ports; a ClusterIP one: none.
        let mut headless = service(vec![]);
        headless.spec.as_mut().unwrap().cluster_ip = Some("None".into());
        let s = desired_subsets(&headless, &pods);
        assert_eq!(s.len(), 1);
        assert!(s[0].ports.is_none());
        assert!(desired_subsets(&service(vec![]), &pods).is_empty());
        assert_eq!(
            endpoints_labels(&headless)
                .get(HEADLESS_LABEL)
                .map(String::as_str),
            Some("")
        );
        assert_eq!(
            endpoints_labels(&headless)
                .get(SKIP_MIRROR_LABEL)
                .map(String::as_str),
            Some("true")
        );
    }

    #[test]
    fn selectors_and_truncation() {
        let sel: BTreeMap<String, String> = [("app".to_string(), "web".to_string())].into();
        let labels: BTreeMap<String, String> = [
            ("app".to_string(), "web".to_string()),
            ("x".to_string(), "y".to_string()),
        ]
        .into();
        assert!(selects(&sel, Some(&labels)));
        assert!(!selects(&sel, None));
        assert!(
            !selects(&BTreeMap::new(), Some(&labels)),
            "empty selects nothing"
        );
        let addr = |i: usize| EndpointAddress {
            ip: format!("10.0.{}.{}", i / 256, i % 256),
            ..Default::default()
        };
        let mut subsets = vec![EndpointSubset {
            addresses: Some((0..900).map(addr).collect()),
            not_ready_addresses: Some((900..1200).map(addr).collect()),
            ports: None,
        }];
        assert!(truncate(&mut subsets));
        assert_eq!(subsets[0].addresses.as_ref().unwrap().len(), 900);
        assert_eq!(subsets[0].not_ready_addresses.as_ref().unwrap().len(), 100);
        assert!(!truncate(&mut subsets));
    }

    #[test]
    fn pod_updates_that_matter() {
        let a = pod("a", "10.42.0.2", true, &[("app", "web")]);
        let mut b = (*a).clone();
        b.metadata.resource_version = Some("99".into());
        assert!(!pod_changed(&a, &b));
        b.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].status = "False".into();
        assert!(pod_changed(&a, &b));
    }
}
