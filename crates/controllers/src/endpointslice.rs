//! The endpointslice controller: discovery.k8s.io/v1 EndpointSlices for every Service with a
//! selector (upstream `pkg/controller/endpointslice` and `staging/.../endpointslice`
//! reconciler).
//!
//! Start with [`run`], [`desired_endpoints`] and [`plan`]. It shares the Service watch and
//! the pod index of [`crate::endpoints`], and also caches the slices it manages (label
//! `endpointslice.kubernetes.io/managed-by`) and node zones. Per Service:
//!
//! - every selected pod with an IP becomes an endpoint with `ready`/`serving`/`terminating`
//!   conditions, `nodeName`, `zone` (the node's `topology.kubernetes.io/zone`), `hostname`
//!   and a `targetRef`; terminating pods stay (ready false) so proxies can drain them;
//! - endpoints are grouped by their resolved ports (a named `targetPort` can resolve to
//!   different numbers per pod), and each group is packed into slices of at most
//!   [`MAX_ENDPOINTS_PER_SLICE`]: existing slices are updated in place (endpoints kept,
//!   replaced or dropped), new endpoints fill slices already being updated, then new slices
//!   are created, and a slice that would be deleted is reused instead of creating one;
//! - a Service without endpoints keeps one empty placeholder slice, as upstream;
//! - slices are named `<service>-<random>` (generateName), labelled
//!   `kubernetes.io/service-name` and `endpointslice.kubernetes.io/managed-by:
//!   endpointslice-controller.k8s.io`, owned by the Service (the garbage collector deletes
//!   them with it).
//!
//! The cache of slices may lag behind this controller's own writes; a reconcile waits until
//! it shows them (upstream's `EndpointSliceTracker`) so no duplicate slices are created.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, watcher::watcher};
use parking_lot::Mutex;
use tokio::time::Instant;

use crate::context::{Context, Stop, stopped};
use crate::endpoints::{
    HEADLESS_LABEL, Informers, TRIGGER_TIME_ANNOTATION, find_port, hostname_for, pod_ip, pod_ref,
    run_workers, selector_of, should_be_in_endpoints,
};

/// Label: the Service a slice belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Label: who manages a slice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// This controller's [`MANAGED_BY_LABEL`] value.
pub const CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";
/// Node label with the zone.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// Most endpoints in one slice (upstream `--max-endpoints-per-slice` default).
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;

/// What went wrong in one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Writing a slice failed.
    #[error("cannot {action} endpointslice {namespace}/{name}")]
    Write {
        /// What was attempted.
        action: &'static str,
        /// The namespace.
        namespace: String,
        /// The slice (or its prefix).
        name: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The ports of a group of endpoints, in the Service's order.
pub type PortsKey = Vec<(String, i32, String, Option<String>)>;

fn ports_of(key: &PortsKey) -> Vec<EndpointPort> {
    key.iter()
        .map(|(name, port, protocol, app)| EndpointPort {
            name: Some(name.clone()),
            port: Some(*port),
            protocol: Some(protocol.clone()),
            app_protocol: app.clone(),
        })
        .collect()
}

fn key_of_slice(s: &EndpointSlice) -> PortsKey {
    s.ports
        .iter()
        .flatten()
        .map(|p| {
            (
                p.name.clone().unwrap_or_default(),
                p.port.unwrap_or_default(),
                p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                p.app_protocol.clone(),
            )
        })
        .collect()
}

/// The endpoints of a Service, grouped by their ports (upstream `podToEndpoint` and
/// `getEndpointPorts`); `zone_of(node)` gives a node's zone.
pub fn desired_endpoints(
    svc: &Service,
    pods: &[Arc<Pod>],
    zone_of: impl Fn(&str) -> Option<String>,
) -> BTreeMap<PortsKey, Vec<Endpoint>> {
    let spec = svc.spec.clone().unwrap_or_default();
    let publish = spec.publish_not_ready_addresses == Some(true);
    let mut out: BTreeMap<PortsKey, Vec<Endpoint>> = BTreeMap::new();
    let mut sorted: Vec<&Arc<Pod>> = pods.iter().collect();
    sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    for pod in sorted {
        if !should_be_in_endpoints(pod, true) {
            continue;
        }
        let Some(ip) = pod_ip(pod, svc) else { continue };
        let key: PortsKey = spec
            .ports
            .iter()
            .flatten()
            .filter_map(|sp| {
                Some((
                    sp.name.clone().unwrap_or_default(),
                    find_port(pod, sp)?,
                    sp.protocol.clone().unwrap_or_else(|| "TCP".into()),
                    sp.app_protocol.clone(),
                ))
            })
            .collect();
        let serving = publish || crate::pods::is_ready(pod);
        let terminating = pod.metadata.deletion_timestamp.is_some();
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        out.entry(key).or_default().push(Endpoint {
            addresses: vec![ip],
            conditions: Some(EndpointConditions {
                ready: Some(publish || (serving && !terminating)),
                serving: Some(serving),
                terminating: Some(terminating),
            }),
            hostname: hostname_for(pod, svc),
            zone: node.as_deref().and_then(&zone_of),
            node_name: node,
            target_ref: Some(pod_ref(pod)),
            ..Default::default()
        });
    }
    out
}

/// The labels of a Service's slices.
pub fn slice_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut labels = svc.metadata.labels.clone().unwrap_or_default();
    labels.insert(
        SERVICE_NAME_LABEL.into(),
        svc.metadata.name.clone().unwrap_or_default(),
    );
    labels.insert(MANAGED_BY_LABEL.into(), CONTROLLER_NAME.into());
    if svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None") {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    } else {
        labels.remove(HEADLESS_LABEL);
    }
    labels
}

/// The address type of a Service's slices.
pub fn address_type(svc: &Service) -> &'static str {
    let v6 = svc
        .spec
        .as_ref()
        .and_then(|s| s.ip_families.as_ref())
        .and_then(|f| f.first())
        .is_some_and(|f| f == "IPv6");
    if v6 { "IPv6" } else { "IPv4" }
}

/// Slice writes that bring a Service's slices to the desired state.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Plan {
    /// Slices to create (generateName set).
    pub create: Vec<EndpointSlice>,
    /// Slices to update (name and resourceVersion of the existing slice).
    pub update: Vec<EndpointSlice>,
    /// Names of slices to delete.
    pub delete: Vec<String>,
}

impl Plan {
    /// Whether nothing needs writing.
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.update.is_empty() && self.delete.is_empty()
    }
}

fn endpoint_id(e: &Endpoint) -> (String, Option<String>) {
    (
        e.addresses.first().cloned().unwrap_or_default(),
        e.target_ref.as_ref().and_then(|r| r.uid.clone()),
    )
}

fn new_slice(svc: &Service, key: &PortsKey, endpoints: Vec<Endpoint>) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            generate_name: Some(format!(
                "{}-",
                svc.metadata.name.as_deref().unwrap_or_default()
            )),
            namespace: svc.metadata.namespace.clone(),
            labels: Some(slice_labels(svc)),
            owner_references: Some(vec![crate::controller_ref::controller_reference(svc)]),
            ..Default::default()
        },
        address_type: address_type(svc).into(),
        endpoints,
        ports: Some(ports_of(key)),
    }
}

/// Upstream's reconciler, per port group: keep and refresh endpoints in the slices that
/// hold them, drop the rest, put new endpoints into slices already being updated, then
/// into one unchanged slice they all fit in, then into new slices of at most `max`;
/// slices left empty are deleted, or reused for a slice that would be created. A Service
/// without endpoints keeps one empty placeholder.
pub fn plan(
    svc: &Service,
    existing: &[Arc<EndpointSlice>],
    desired: &BTreeMap<PortsKey, Vec<Endpoint>>,
    max: usize,
) -> Plan {
    let labels = slice_labels(svc);
    let mut existing: Vec<&Arc<EndpointSlice>> = existing.iter().collect();
    existing.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut by_key: BTreeMap<PortsKey, Vec<&Arc<EndpointSlice>>> = BTreeMap::new();
    for s in existing {
        by_key.entry(key_of_slice(s)).or_default().push(s);
    }
    let mut out = Plan::default();
    let mut to_delete: Vec<EndpointSlice> = Vec::new();
    for (key, slices) in &by_key {
        if !desired.contains_key(key) {
            to_delete.extend(slices.iter().map(|s| (***s).clone()));
        }
    }
    for (key, eps) in desired {
        let want: HashMap<(String, Option<String>), &Endpoint> =
            eps.iter().map(|e| (endpoint_id(e), e)).collect();
        let mut placed = HashSet::new();
        let mut touched: Vec<EndpointSlice> = Vec::new();
        let mut untouched: Vec<EndpointSlice> = Vec::new();
        for slice in by_key.get(key).into_iter().flatten() {
            let mut changed = slice.metadata.labels.as_ref() != Some(&labels)
                || slice.address_type != address_type(svc);
            let mut kept = Vec::new();
            for e in &slice.endpoints {
                let id = endpoint_id(e);
                match want.get(&id) {
                    Some(d) if placed.insert(id) => {
                        changed |= *d != e;
                        kept.push((*d).clone());
                    }
                    _ => changed = true,
                }
            }
            let mut s = (***slice).clone();
            if kept.is_empty() {
                to_delete.push(s);
                continue;
            }
            s.endpoints = kept;
            s.metadata.labels = Some(labels.clone());
            s.address_type = address_type(svc).into();
            if changed {
                touched.push(s);
            } else {
                untouched.push(s);
            }
        }
        let mut remaining: Vec<Endpoint> = eps
            .iter()
            .filter(|e| !placed.contains(&endpoint_id(e)))
            .cloned()
            .collect();
        touched.sort_by_key(|s| std::cmp::Reverse(s.endpoints.len()));
        for s in &mut touched {
            while s.endpoints.len() < max && !remaining.is_empty() {
                s.endpoints.push(remaining.remove(0));
            }
        }
        if !remaining.is_empty() {
            untouched.sort_by_key(|s| std::cmp::Reverse(s.endpoints.len()));
            if let Some(pos) = untouched
                .iter()
                .position(|s| s.endpoints.len() + remaining.len() <= max)
            {
                let mut s = untouched.remove(pos);
                s.endpoints.append(&mut remaining);
                touched.push(s);
            }
        }
        for chunk in remaining.chunks(max.max(1)) {
            out.create.push(new_slice(svc, key, chunk.to_vec()));
        }
        out.update.extend(touched);
    }
    // Reuse slices that would be deleted rather than create new ones.
    while !out.create.is_empty() && !to_delete.is_empty() {
        let created = out.create.remove(0);
        let mut reused = to_delete.remove(0);
        reused.endpoints = created.endpoints;
        reused.ports = created.ports;
        reused.address_type = created.address_type;
        reused.metadata.labels = created.metadata.labels;
        out.update.push(reused);
    }
    if desired.is_empty() && out.update.is_empty() {
        // The placeholder: keep an existing empty slice, or make one.
        let placeholder = EndpointSlice {
            endpoints: Vec::new(),
            ports: None,
            ..new_slice(svc, &Vec::new(), Vec::new())
        };
        match to_delete.iter().position(|s| s.endpoints.is_empty()) {
            Some(i) => {
                let kept = to_delete.remove(i);
                if kept.metadata.labels.as_ref() != Some(&labels) || kept.ports.is_some() {
                    out.update.push(EndpointSlice {
                        metadata: ObjectMeta {
                            labels: Some(labels.clone()),
                            ..kept.metadata
                        },
                        ports: None,
                        ..placeholder
                    });
                }
            }
            None => match to_delete.pop() {
                Some(reused) => out.update.push(EndpointSlice {
                    metadata: ObjectMeta {
                        labels: Some(labels.clone()),
                        ..reused.metadata
                    },
                    ..placeholder
                }),
                None => out.create.push(placeholder),
            },
        }
    }
    out.delete = to_delete
        .into_iter()
        .filter_map(|s| s.metadata.name)
        .collect();
    out
}

struct SliceController {
    informers: Informers,
    slices: Store<EndpointSlice>,
    nodes: Store<PartialObjectMeta<Node>>,
    client: kube::Client,
    /// Our writes the slice cache must show before a Service is reconciled again: per
    /// Service, slice name -> resourceVersion written (`None`: deleted).
    written: Mutex<HashMap<String, HashMap<String, Written>>>,
}

/// One of our writes: the resourceVersion written (`None`: deleted) and when.
#[derive(Debug, Clone, Copy)]
struct Written {
    version: Option<u64>,
    at: Instant,
}

/// How long a write the cache does not show is waited for (someone else may have deleted
/// or replaced the slice meanwhile).
const WRITE_EXPIRY: Duration = Duration::from_secs(10);

fn pod_changed(old: &Pod, new: &Pod) -> bool {
    let view = |p: &Pod| {
        (
            p.status
                .as_ref()
                .map(|s| (s.pod_ip.clone(), s.pod_ips.clone(), s.phase.clone())),
            crate::pods::is_ready(p),
            p.metadata.deletion_timestamp.is_some(),
            p.metadata.labels.clone(),
            p.spec.as_ref().map(|s| {
                (
                    s.node_name.clone(),
                    s.hostname.clone(),
                    s.subdomain.clone(),
                    s.containers
                        .iter()
                        .map(|c| c.ports.clone())
                        .collect::<Vec<_>>(),
                )
            }),
        )
    };
    view(old) != view(new)
}

/// Runs the controller until `stop` turns true.
pub async fn run(ctx: Arc<Context>, stop: Stop) {
    let client = ctx.client.clone();
    let (informers, mut tasks) = Informers::start(&client, pod_changed);
    let (slices, writer) = reflector::store();
    let slice_stream = reflector::reflector(
        writer,
        watcher(
            Api::<EndpointSlice>::all(client.clone()),
            watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={CONTROLLER_NAME}")),
        ),
    )
    .default_backoff();
    {
        let queue = informers.queue.clone();
        tasks.spawn(async move {
            let mut s = slice_stream.boxed();
            while let Some(ev) = s.next().await {
                if let Ok(Event::Apply(sl) | Event::Delete(sl) | Event::InitApply(sl)) = ev
                    && let (Some(ns), Some(svc)) = (
                        sl.metadata.namespace.as_deref(),
                        sl.metadata
                            .labels
                            .as_ref()
                            .and_then(|l| l.get(SERVICE_NAME_LABEL)),
                    )
                {
                    queue.add(format!("{ns}/{svc}"));
                }
            }
        });
    }
    let (nodes, writer) = reflector::store();
    let node_stream = reflector::reflector(
        writer,
        watcher(
            Api::<PartialObjectMeta<Node>>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff();
    tasks.spawn(async move {
        let mut s = node_stream.boxed();
        while s.next().await.is_some() {}
    });
    let ctl = Arc::new(SliceController {
        informers,
        slices,
        nodes,
        client,
        written: Mutex::new(HashMap::new()),
    });
    let queue = ctl.informers.queue.clone();
    let workers = usize::from(ctx.config.concurrency);
    let work = {
        let ctl = ctl.clone();
        async move {
            ctl.informers.wait_synced().await;
            let _ = ctl.slices.wait_until_ready().await;
            let _ = ctl.nodes.wait_until_ready().await;
            let c = ctl.clone();
            run_workers(queue, workers, "endpointslice", move |key| {
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

fn rv(meta: &ObjectMeta) -> Option<u64> {
    meta.resource_version.as_deref()?.parse().ok()
}

impl SliceController {
    /// Whether the slice cache shows every write we made for the Service `key`.
    fn cache_current(&self, key: &str, ns: &str) -> bool {
        let mut written = self.written.lock();
        let Some(ours) = written.get_mut(key) else {
            return true;
        };
        ours.retain(|name, w| {
            if w.at.elapsed() > WRITE_EXPIRY {
                return false;
            }
            let cached = self.slices.get(&ObjectRef::new(name).within(ns));
            match (&w.version, cached) {
                (None, None) => false,
                (None, Some(_)) => true,
                (Some(v), Some(c)) => rv(&c.metadata).is_none_or(|have| have < *v),
                (Some(_), None) => true,
            }
        });
        let current = ours.is_empty();
        if current {
            written.remove(key);
        }
        current
    }

    fn record(&self, key: &str, name: String, version: Option<u64>) {
        self.written
            .lock()
            .entry(key.to_string())
            .or_default()
            .insert(
                name,
                Written {
                    version,
                    at: Instant::now(),
                },
            );
    }

    async fn sync(&self, key: &str) -> Result<Option<Duration>> {
        let Some((ns, name)) = key.split_once('/') else {
            return Ok(None);
        };
        if !self.cache_current(key, ns) {
            return Ok(Some(Duration::from_millis(100)));
        }
        let existing: Vec<Arc<EndpointSlice>> = self
            .slices
            .state()
            .into_iter()
            .filter(|s| {
                s.metadata.namespace.as_deref() == Some(ns)
                    && s.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(SERVICE_NAME_LABEL))
                        .map(String::as_str)
                        == Some(name)
            })
            .collect();
        let svc = self.informers.service(key);
        let plan = match svc.as_deref() {
            // Gone: the garbage collector deletes the slices (they are owned by it).
            None => return Ok(None),
            Some(svc) => match selector_of(svc) {
                // No selector (any more): its slices are not ours to keep.
                None => Plan {
                    delete: existing
                        .iter()
                        .filter_map(|s| s.metadata.name.clone())
                        .collect(),
                    ..Plan::default()
                },
                Some(selector) => {
                    let pods = self.informers.pods.selected(ns, selector);
                    let desired = desired_endpoints(svc, &pods, |node| {
                        self.nodes
                            .get(&ObjectRef::new(node))
                            .and_then(|n| n.metadata.labels.as_ref()?.get(ZONE_LABEL).cloned())
                    });
                    plan(svc, &existing, &desired, MAX_ENDPOINTS_PER_SLICE)
                }
            },
        };
        if plan.is_empty() {
            return Ok(None);
        }
        tracing::debug!(service = %key, create = plan.create.len(), update = plan.update.len(), delete = plan.delete.len(), "writing endpoint slices");
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), ns);
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        let err = |action: &'static str, slice: &str| {
            let slice = slice.to_string();
            move |source| Error::Write {
                action,
                namespace: ns.to_string(),
                name: slice,
                source,
            }
        };
        let stamp = |s: &mut EndpointSlice| {
            s.metadata
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(TRIGGER_TIME_ANNOTATION.into(), now.clone());
        };
        for mut s in plan.update {
            stamp(&mut s);
            let slice_name = s.metadata.name.clone().unwrap_or_default();
            match api.replace(&slice_name, &PostParams::default(), &s).await {
                Ok(w) => self.record(key, slice_name, rv(&w.metadata)),
                Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => {
                    return Ok(Some(Duration::from_millis(100)));
                }
                Err(e) => return Err(err("update", &slice_name)(e)),
            }
        }
        for mut s in plan.create {
            stamp(&mut s);
            match api.create(&PostParams::default(), &s).await {
                Ok(w) => {
                    if let Some(n) = w.metadata.name.clone() {
                        self.record(key, n, rv(&w.metadata));
                    }
                }
                // The namespace is terminating.
                Err(kube::Error::Api(e)) if e.code == 403 || e.code == 404 => return Ok(None),
                Err(e) => return Err(err("create", name)(e)),
            }
        }
        for slice_name in plan.delete {
            match api.delete(&slice_name, &DeleteParams::default()).await {
                Ok(_) => self.record(key, slice_name, None),
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(err("delete", &slice_name)(e)),
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoints::tests::{pod, service, sport};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn existing(
        svc: &Service,
        name: &str,
        key: &PortsKey,
        eps: Vec<Endpoint>,
    ) -> Arc<EndpointSlice> {
        let mut s = new_slice(svc, key, eps);
        s.metadata.name = Some(name.into());
        s.metadata.resource_version = Some("1".into());
        Arc::new(s)
    }

    fn ips(s: &EndpointSlice) -> Vec<&str> {
        s.endpoints
            .iter()
            .map(|e| e.addresses[0].as_str())
            .collect()
    }

    #[test]
    fn endpoints_have_conditions_zone_and_ports_groups() {
        let svc = service(vec![sport("http", 80, IntOrString::String("http".into()))]);
        let mut terminating = (*pod("t", "10.42.0.9", true, &[])).clone();
        terminating.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        let pods = vec![
            pod("a", "10.42.0.2", true, &[]),
            pod("b", "10.42.0.3", false, &[]),
            Arc::new(terminating),
        ];
        let d = desired_endpoints(&svc, &pods, |n| (n == "n1").then(|| "z1".to_string()));
        assert_eq!(d.len(), 1);
        let (key, eps) = d.iter().next().unwrap();
        assert_eq!(
            key,
            &vec![("http".to_string(), 8080, "TCP".to_string(), None)]
        );
        let cond = |i: usize| {
            let c = eps[i].conditions.clone().unwrap();
            (c.ready.unwrap(), c.serving.unwrap(), c.terminating.unwrap())
        };
        assert_eq!(cond(0), (true, true, false));
        assert_eq!(cond(1), (false, false, false));
        assert_eq!(
            cond(2),
            (false, true, true),
            "terminating: serving but not ready"
        );
        assert_eq!(eps[0].zone.as_deref(), Some("z1"));
        assert_eq!(eps[0].node_name.as_deref(), Some("n1"));
        assert_eq!(
            eps[0].target_ref.as_ref().unwrap().kind.as_deref(),
            Some("Pod")
        );
    }

    #[test]
    fn packs_at_most_max_per_slice_and_updates_in_place() {
        let svc = service(vec![sport("http", 80, IntOrString::Int(8080))]);
        let pods: Vec<Arc<Pod>> = (0..250)
            .map(|i| {
                pod(
                    &format!("p{i:03}"),
                    &format!("10.42.{}.{}", i / 200, i % 200 + 1),
                    true,
                    &[],
                )
            })
            .collect();
        let d = desired_endpoints(&svc, &pods, |_| None);
        let p = plan(&svc, &[], &d, 100);
        assert_eq!(p.create.len(), 3);
        assert_eq!(
            p.create
                .iter()
                .map(|s| s.endpoints.len())
                .collect::<Vec<_>>(),
            vec![100, 100, 50]
        );
        let labels = p.create[0].metadata.labels.clone().unwrap();
        assert_eq!(labels[SERVICE_NAME_LABEL], "web");
        assert_eq!(labels[MANAGED_BY_LABEL], CONTROLLER_NAME);
        assert_eq!(labels["team"], "a");
        assert_eq!(p.create[0].metadata.generate_name.as_deref(), Some("web-"));
        assert_eq!(
            p.create[0].metadata.owner_references.as_ref().unwrap()[0].kind,
            "Service"
        );
        assert_eq!(p.create[0].address_type, "IPv4");

        // Those slices exist: nothing to do.
        let key = d.keys().next().unwrap().clone();
        let slices: Vec<Arc<EndpointSlice>> = p
            .create
            .iter()
            .enumerate()
            .map(|(i, s)| existing(&svc, &format!("web-{i}"), &key, s.endpoints.clone()))
            .collect();
        assert!(plan(&svc, &slices, &d, 100).is_empty());

        // One pod gone, one new: the slice that lost it is updated and takes the new one.
        let mut pods2 = pods.clone();
        pods2.remove(0);
        pods2.push(pod("zz", "10.42.9.9", true, &[]));
        let d2 = desired_endpoints(&svc, &pods2, |_| None);
        let p2 = plan(&svc, &slices, &d2, 100);
        assert!(p2.create.is_empty() && p2.delete.is_empty());
        assert_eq!(p2.update.len(), 1);
        assert_eq!(p2.update[0].metadata.name.as_deref(), Some("web-0"));
        assert_eq!(p2.update[0].endpoints.len(), 100);
        assert!(ips(&p2.update[0]).contains(&"10.42.9.9"));
        assert!(!ips(&p2.update[0]).contains(&"10.42.0.1"));

        // A readiness change updates the slice holding that endpoint only.
        let mut pods3 = pods.clone();
        pods3[150] = pod("p150", "10.42.0.151", false, &[]);
        let p3 = plan(
            &svc,
            &slices,
            &desired_endpoints(&svc, &pods3, |_| None),
            100,
        );
        assert_eq!(p3.update.len(), 1);
        assert_eq!(p3.update[0].metadata.name.as_deref(), Some("web-1"));
    }

    #[test]
    fn placeholder_when_empty_and_reuse_instead_of_recreate() {
        let svc = service(vec![sport("http", 80, IntOrString::Int(8080))]);
        let empty = BTreeMap::new();
        let p = plan(&svc, &[], &empty, 100);
        assert_eq!(p.create.len(), 1);
        assert!(p.create[0].endpoints.is_empty());
        // The placeholder exists: nothing to do.
        let placeholder = existing(&svc, "web-p", &Vec::new(), vec![]);
        let mut ph = (*placeholder).clone();
        ph.ports = None;
        let ph = Arc::new(ph);
        assert!(plan(&svc, std::slice::from_ref(&ph), &empty, 100).is_empty());
        // Endpoints appear: the placeholder is reused, not deleted and recreated.
        let pods = vec![pod("a", "10.42.0.2", true, &[])];
        let d = desired_endpoints(&svc, &pods, |_| None);
        let p = plan(&svc, &[ph], &d, 100);
        assert!(p.create.is_empty() && p.delete.is_empty());
        assert_eq!(p.update[0].metadata.name.as_deref(), Some("web-p"));
        assert_eq!(p.update[0].ports.as_ref().unwrap()[0].port, Some(8080));
        // Every endpoint gone: the last slice becomes the placeholder.
        let key = d.keys().next().unwrap().clone();
        let s = existing(&svc, "web-a", &key, d[&key].clone());
        let p = plan(&svc, &[s], &empty, 100);
        assert!(p.delete.is_empty() && p.create.is_empty());
        assert!(p.update[0].endpoints.is_empty());
        // Ports changed (new targetPort): same slice, new ports.
        let svc2 = service(vec![sport("http", 80, IntOrString::Int(9090))]);
        let s = existing(&svc, "web-a", &key, d[&key].clone());
        let p = plan(&svc2, &[s], &desired_endpoints(&svc2, &pods, |_| None), 100);
        assert_eq!(p.update.len(), 1);
        assert_eq!(p.update[0].ports.as_ref().unwrap()[0].port, Some(9090));
        assert!(p.delete.is_empty() && p.create.is_empty());
    }
}
