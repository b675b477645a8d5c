//! The garbage collector: deletes objects whose owners are gone, and carries out the
//! `foregroundDeletion` and `orphan` finalizers the API server records for
//! `propagationPolicy` (upstream `pkg/controller/garbagecollector`).
//!
//! Start with [`run`]. Discovery finds every resource that supports list, watch and delete
//! (re-run every 30 s, so new CRDs are picked up); each gets a metadata-only watch feeding
//! one [`Graph`]: per uid the object's identity, owner references and deletion state, and
//! per owner uid its dependents. Graph changes queue [`Work`]:
//!
//! - `Delete(uid)` ("attemptToDelete"): an object one of whose owners may be gone, or an
//!   owner in foreground deletion. Owners the graph does not hold are looked up with a live
//!   GET (the uncached recheck) before anything is deleted; [`decide`] then says what to do:
//!   nothing (an owner is solid), remove dangling references (some owner remains), unblock
//!   and delete in the foreground (owner waits for this object, which has dependents of its
//!   own) or delete (every owner is gone).
//! - An owner with `deletionTimestamp` and the `foregroundDeletion` finalizer has all its
//!   dependents queued for deletion; its finalizer is removed once no dependent with
//!   `blockOwnerDeletion: true` remains.
//! - `Orphan(uid)` ("attemptToOrphan"): an owner with the `orphan` finalizer; its
//!   dependents lose their references to it, then the finalizer is removed.
//!
//! Owner references that cannot hold (a namespaced owner of a cluster-scoped object, or an
//! owner uid the graph knows in another namespace) are treated as dangling, with an
//! `OwnerRefInvalidNamespace` warning event, as upstream.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions};
use kube::core::PartialObjectMeta;
use kube::discovery::{ApiCapabilities, ApiResource, Discovery, Scope, verbs};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, watcher::watcher};
use parking_lot::{Mutex, RwLock};
use serde_json::json;
use tracing::Instrument;

use crate::context::{Context, Stop, stopped};
use crate::workqueue::Queue;

/// The finalizer of foreground deletion.
pub const FOREGROUND: &str = "foregroundDeletion";
/// The finalizer of orphaning deletion.
pub const ORPHAN: &str = "orphan";

/// How often discovery is re-run.
const DISCOVERY_PERIOD: Duration = Duration::from_secs(30);
/// How long the workers wait for the first sync of every watch before they start anyway.
const SYNC_TIMEOUT: Duration = Duration::from_secs(60);
/// Workers processing the queue (upstream `--concurrent-gc-syncs` defaults to 20).
const WORKERS: usize = 8;
/// Owners confirmed absent that are remembered (upstream's absentOwnerCache).
const ABSENT_CACHE: usize = 4096;

/// What went wrong in one unit of work.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Discovery failed.
    #[error("discovery failed")]
    Discover(#[source] kube::Error),
    /// Reading an object failed.
    #[error("cannot get {kind} {name}")]
    Get {
        /// The object's kind.
        kind: String,
        /// The object's name.
        name: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// A delete or patch failed.
    #[error("cannot {action} {kind} {name}")]
    Write {
        /// What was attempted.
        action: &'static str,
        /// The object's kind.
        kind: String,
        /// The object's name.
        name: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// An owner reference names a kind the API server does not serve (yet).
    #[error("owner reference to unknown kind {api_version}/{kind}")]
    UnknownOwnerKind {
        /// The reference's apiVersion.
        api_version: String,
        /// The reference's kind.
        kind: String,
    },
    /// A write kept conflicting with other writers.
    #[error("{kind} {name} kept changing")]
    Conflicts {
        /// The object's kind.
        kind: String,
        /// The object's name.
        name: String,
    },
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A resource the collector watches.
#[derive(Debug)]
pub struct Resource {
    /// Group, version, kind and plural.
    pub ar: ApiResource,
    /// Whether its objects live in namespaces.
    pub namespaced: bool,
}

/// A unit of work, keyed by object uid.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Work {
    /// Check the object's owners and delete it (or its dangling references) if they are
    /// gone; for an owner in foreground deletion, delete its dependents or finish.
    Delete(String),
    /// Remove the owner references to this object from its dependents, then its `orphan`
    /// finalizer.
    Orphan(String),
}

/// One object of the graph.
#[derive(Debug, Clone)]
pub struct Node {
    /// Its resource.
    pub resource: Arc<Resource>,
    /// Its namespace (`None` when cluster-scoped).
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
    /// Its owner references.
    pub owners: Vec<OwnerReference>,
    /// It has a deletionTimestamp.
    pub deleting: bool,
    /// It has the `foregroundDeletion` finalizer.
    pub foreground: bool,
    /// It has the `orphan` finalizer.
    pub orphan: bool,
}

impl Node {
    /// The node of an object's metadata; `None` without a uid or name.
    pub fn from_meta(resource: Arc<Resource>, meta: &ObjectMeta) -> Option<(String, Node)> {
        let uid = meta.uid.clone()?;
        let has = |f: &str| meta.finalizers.iter().flatten().any(|x| x == f);
        Some((
            uid,
            Node {
                resource,
                namespace: meta.namespace.clone(),
                name: meta.name.clone()?,
                owners: meta.owner_references.clone().unwrap_or_default(),
                deleting: meta.deletion_timestamp.is_some(),
                foreground: has(FOREGROUND),
                orphan: has(ORPHAN),
            },
        ))
    }

    /// Being deleted in the foreground: waiting for its blocking dependents.
    pub fn deleting_dependents(&self) -> bool {
        self.deleting && self.foreground
    }

    fn kind(&self) -> &str {
        &self.resource.ar.kind
    }
}

/// The owner graph: objects by uid and dependents by owner uid.
#[derive(Debug, Default)]
pub struct Graph {
    nodes: HashMap<String, Node>,
    dependents: HashMap<String, HashSet<String>>,
}

impl Graph {
    /// Records an added or updated object; returns the work it causes.
    pub fn observe(&mut self, uid: String, node: Node) -> Vec<Work> {
        let mut work = Vec::new();
        let old = self.nodes.get(&uid).cloned();
        let old_refs: HashMap<&str, &OwnerReference> = old
            .iter()
            .flat_map(|o| o.owners.iter())
            .map(|r| (r.uid.as_str(), r))
            .collect();
        let new_refs: HashMap<&str, &OwnerReference> =
            node.owners.iter().map(|r| (r.uid.as_str(), r)).collect();
        for (owner, r) in &old_refs {
            match new_refs.get(owner) {
                None => {
                    self.unlink(owner, &uid);
                    if self
                        .nodes
                        .get(*owner)
                        .is_some_and(Node::deleting_dependents)
                    {
                        work.push(Work::Delete(owner.to_string()));
                    }
                }
                Some(n) if n.block_owner_deletion != r.block_owner_deletion => {
                    if self
                        .nodes
                        .get(*owner)
                        .is_some_and(Node::deleting_dependents)
                    {
                        work.push(Work::Delete(owner.to_string()));
                    }
                }
                Some(_) => {}
            }
        }
        // A new reference to an owner the graph does not hold (or holds elsewhere: another
        // namespace, name or kind) needs checking.
        let mut absent_owner = false;
        for (owner, r) in &new_refs {
            if !old_refs.contains_key(owner) {
                self.dependents
                    .entry(owner.to_string())
                    .or_default()
                    .insert(uid.clone());
                absent_owner |= !self
                    .nodes
                    .get(*owner)
                    .is_some_and(|o| owner_matches(o, r, node.namespace.as_deref()));
            }
        }
        if absent_owner {
            work.push(Work::Delete(uid.clone()));
        }
        if node.deleting_dependents() {
            work.push(Work::Delete(uid.clone()));
            if !old.as_ref().is_some_and(Node::deleting_dependents) {
                for d in self.dependents.get(&uid).into_iter().flatten() {
                    work.push(Work::Delete(d.clone()));
                }
            }
        }
        if node.deleting && node.orphan {
            work.push(Work::Orphan(uid.clone()));
        }
        self.nodes.insert(uid, node);
        work
    }

    /// Records a deleted object; returns the work it causes.
    pub fn forget(&mut self, uid: &str) -> Vec<Work> {
        let mut work = Vec::new();
        let Some(node) = self.nodes.remove(uid) else {
            return work;
        };
        for r in &node.owners {
            self.unlink(&r.uid, uid);
            if self
                .nodes
                .get(&r.uid)
                .is_some_and(Node::deleting_dependents)
            {
                work.push(Work::Delete(r.uid.clone()));
            }
        }
        for d in self.dependents.get(uid).into_iter().flatten() {
            work.push(Work::Delete(d.clone()));
        }
        work
    }

    fn unlink(&mut self, owner: &str, dependent: &str) {
        if let Some(set) = self.dependents.get_mut(owner) {
            set.remove(dependent);
            if set.is_empty() {
                self.dependents.remove(owner);
            }
        }
    }

    /// The object with `uid`.
    pub fn node(&self, uid: &str) -> Option<&Node> {
        self.nodes.get(uid)
    }

    /// The uids of the objects that name `uid` as an owner.
    pub fn dependents(&self, uid: &str) -> Vec<String> {
        self.dependents
            .get(uid)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Dependents whose reference to `uid` has `blockOwnerDeletion: true`.
    pub fn blocking_dependents(&self, uid: &str) -> Vec<String> {
        self.dependents
            .get(uid)
            .into_iter()
            .flatten()
            .filter(|d| {
                self.nodes.get(*d).is_some_and(|n| {
                    n.owners
                        .iter()
                        .any(|r| r.uid == uid && r.block_owner_deletion == Some(true))
                })
            })
            .cloned()
            .collect()
    }

    /// Uids of the objects of `resource` (for a relist).
    fn uids_of(&self, resource: &Arc<Resource>) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|(_, n)| Arc::ptr_eq(&n.resource, resource))
            .map(|(u, _)| u.clone())
            .collect()
    }

    /// Objects in the graph.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the graph is empty.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

/// What an owner reference points at, as found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerState {
    /// The owner exists and is not deleting its dependents in the foreground.
    Solid,
    /// The owner is gone (or the reference cannot hold).
    Dangling,
    /// The owner is being deleted in the foreground, waiting for its dependents.
    Waiting,
}

/// What to do with an object whose owners were classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing: no owner references, or every one is solid.
    Keep,
    /// Some owner remains: remove the references to these uids (dangling or waiting).
    RemoveRefs(Vec<String>),
    /// Owners wait for this object, which has dependents of its own: set
    /// `blockOwnerDeletion: false` on the references to these uids, then delete it in the
    /// foreground (upstream does this to avoid a deadlock).
    UnblockThenDeleteForeground(Vec<String>),
    /// Every owner is gone or waiting: delete the object with this propagation.
    Delete(Propagation),
}

/// A delete's `propagationPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    /// Dependents are deleted after the owner.
    Background,
    /// The owner waits for its dependents.
    Foreground,
    /// Dependents are kept, without the reference.
    Orphan,
}

impl Propagation {
    fn as_kube(self) -> kube::api::PropagationPolicy {
        match self {
            Self::Background => kube::api::PropagationPolicy::Background,
            Self::Foreground => kube::api::PropagationPolicy::Foreground,
            Self::Orphan => kube::api::PropagationPolicy::Orphan,
        }
    }
}

/// Upstream's `attemptToDeleteItem` decision for an object with `owners` classified,
/// whether it `has_dependents`, and the finalizers it has.
pub fn decide(
    owners: &[(OwnerReference, OwnerState)],
    has_dependents: bool,
    orphan_finalizer: bool,
    foreground_finalizer: bool,
) -> Decision {
    if owners.is_empty() {
        return Decision::Keep;
    }
    let of = |s: OwnerState| -> Vec<String> {
        owners
            .iter()
            .filter(|(_, st)| *st == s)
            .map(|(r, _)| r.uid.clone())
            .collect()
    };
    let (solid, dangling, waiting) = (
        of(OwnerState::Solid),
        of(OwnerState::Dangling),
        of(OwnerState::Waiting),
    );
    if !solid.is_empty() {
        if dangling.is_empty() && waiting.is_empty() {
            return Decision::Keep;
        }
        return Decision::RemoveRefs(dangling.into_iter().chain(waiting).collect());
    }
    if !waiting.is_empty() && has_dependents {
        let blocking: Vec<String> = owners
            .iter()
            .filter(|(r, st)| *st == OwnerState::Waiting && r.block_owner_deletion == Some(true))
            .map(|(r, _)| r.uid.clone())
            .collect();
        return Decision::UnblockThenDeleteForeground(blocking);
    }
    Decision::Delete(if orphan_finalizer {
        Propagation::Orphan
    } else if foreground_finalizer {
        Propagation::Foreground
    } else {
        Propagation::Background
    })
}

/// The group of an `apiVersion` (`""` for the core group).
fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(g, _)| g)
}

/// The collector's shared state.
struct Gc {
    ctx: Arc<Context>,
    graph: Mutex<Graph>,
    /// Watched resources by `group/version/plural`.
    watched: Mutex<HashMap<String, tokio::task::JoinHandle<()>>>,
    /// Served kinds by (group, kind).
    kinds: RwLock<HashMap<(String, String), Arc<Resource>>>,
    queue: Arc<Queue<Work>>,
    absent: Mutex<HashSet<String>>,
    /// Watches that completed their first list.
    synced: AtomicUsize,
    /// Whether the workers run (until then graph changes only build the graph).
    started: AtomicBool,
}

/// Runs the garbage collector until `stop` turns true.
pub async fn run(ctx: Arc<Context>, stop: Stop) {
    let gc = Arc::new(Gc {
        ctx,
        graph: Mutex::new(Graph::default()),
        watched: Mutex::new(HashMap::new()),
        kinds: RwLock::new(HashMap::new()),
        queue: Queue::new(),
        absent: Mutex::new(HashSet::new()),
        synced: AtomicUsize::new(0),
        started: AtomicBool::new(false),
    });
    tokio::select! {
        _ = stopped(stop) => {}
        _ = gc.clone().main() => {}
    }
    gc.queue.shut_down();
    for (_, task) in gc.watched.lock().drain() {
        task.abort();
    }
}

impl Gc {
    async fn main(self: Arc<Self>) {
        let mut workers = Vec::new();
        loop {
            match self.discover().await {
                Ok(n) => tracing::debug!(resources = n, "garbage collector discovery"),
                Err(err) => tracing::warn!(?err, "garbage collector discovery failed"),
            }
            if workers.is_empty() && !self.watched.lock().is_empty() {
                let want = self.watched.lock().len();
                let wait = async {
                    while self.synced.load(Ordering::Relaxed) < want {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                };
                if tokio::time::timeout(SYNC_TIMEOUT, wait).await.is_err() {
                    tracing::warn!("garbage collector starts before every watch synced");
                }
                self.started.store(true, Ordering::SeqCst);
                // Everything observed before the start: check objects with absent owners
                // and owners with deletion finalizers.
                let initial: Vec<Work> = {
                    let g = self.graph.lock();
                    g.nodes
                        .iter()
                        .flat_map(|(uid, n)| {
                            let mut w = Vec::new();
                            if n.owners.iter().any(|r| {
                                !g.nodes
                                    .get(&r.uid)
                                    .is_some_and(|o| owner_matches(o, r, n.namespace.as_deref()))
                            }) || n.deleting_dependents()
                            {
                                w.push(Work::Delete(uid.clone()));
                            }
                            if n.deleting && n.orphan {
                                w.push(Work::Orphan(uid.clone()));
                            }
                            w
                        })
                        .collect()
                };
                for w in initial {
                    self.queue.add(w);
                }
                for _ in 0..WORKERS {
                    workers.push(tokio::spawn(self.clone().worker()));
                }
                tracing::info!(
                    objects = self.graph.lock().len(),
                    "garbage collector synced"
                );
            }
            tokio::time::sleep(DISCOVERY_PERIOD).await;
        }
    }

    /// Runs discovery and starts a watch for every new deletable resource.
    async fn discover(self: &Arc<Self>) -> Result<usize> {
        let client = self.ctx.client.clone();
        let discovery = match Discovery::new(client.clone()).run_aggregated().await {
            Ok(d) => d,
            Err(_) => Discovery::new(client.clone())
                .run()
                .await
                .map_err(Error::Discover)?,
        };
        let mut kinds = HashMap::new();
        let mut fresh = Vec::new();
        for group in discovery.groups() {
            for (ar, caps) in group.recommended_resources() {
                let resource = Arc::new(Resource {
                    namespaced: caps.scope == Scope::Namespaced,
                    ar: ar.clone(),
                });
                kinds.insert((ar.group.clone(), ar.kind.clone()), resource.clone());
                if deletable(&ar, &caps) {
                    fresh.push(resource);
                }
            }
        }
        {
            let mut current = self.kinds.write();
            // Keep the Arcs already in use so graph nodes compare by pointer.
            for (k, v) in kinds {
                current.entry(k).or_insert(v);
            }
        }
        let mut watched = self.watched.lock();
        for resource in fresh {
            let key = format!(
                "{}/{}/{}",
                resource.ar.group, resource.ar.version, resource.ar.plural
            );
            if watched.contains_key(&key) {
                continue;
            }
            let resource = self
                .kinds
                .read()
                .get(&(resource.ar.group.clone(), resource.ar.kind.clone()))
                .cloned()
                .unwrap_or(resource);
            watched.insert(key, tokio::spawn(self.clone().watch(resource)));
        }
        Ok(watched.len())
    }

    /// Feeds the graph from one resource's metadata watch.
    async fn watch(self: Arc<Self>, resource: Arc<Resource>) {
        let api: Api<PartialObjectMeta<DynamicObject>> =
            Api::all_with(self.ctx.client.clone(), &resource.ar);
        let mut stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        let mut relist: Option<HashSet<String>> = None;
        let mut synced_once = false;
        while let Some(event) = stream.next().await {
            let work = match event {
                Ok(Event::Apply(obj)) => self.apply(&resource, &obj, None),
                Ok(Event::InitApply(obj)) => self.apply(&resource, &obj, relist.as_mut()),
                Ok(Event::Delete(obj)) => match obj.metadata.uid.as_deref() {
                    Some(uid) => self.graph.lock().forget(uid),
                    None => Vec::new(),
                },
                Ok(Event::Init) => {
                    relist = Some(HashSet::new());
                    Vec::new()
                }
                Ok(Event::InitDone) => {
                    let seen = relist.take().unwrap_or_default();
                    let mut g = self.graph.lock();
                    let gone: Vec<String> = g
                        .uids_of(&resource)
                        .into_iter()
                        .filter(|u| !seen.contains(u))
                        .collect();
                    let work = gone.iter().flat_map(|u| g.forget(u)).collect();
                    drop(g);
                    if !synced_once {
                        synced_once = true;
                        self.synced.fetch_add(1, Ordering::Relaxed);
                    }
                    work
                }
                Err(err) => {
                    tracing::debug!(?err, resource = %resource.ar.plural, "garbage collector watch error");
                    Vec::new()
                }
            };
            if self.started.load(Ordering::SeqCst) {
                for w in work {
                    self.queue.add(w);
                }
            }
        }
    }

    fn apply(
        &self,
        resource: &Arc<Resource>,
        obj: &PartialObjectMeta<DynamicObject>,
        seen: Option<&mut HashSet<String>>,
    ) -> Vec<Work> {
        let Some((uid, node)) = Node::from_meta(resource.clone(), &obj.metadata) else {
            return Vec::new();
        };
        if let Some(seen) = seen {
            seen.insert(uid.clone());
        }
        self.graph.lock().observe(uid, node)
    }

    async fn worker(self: Arc<Self>) {
        while let Some(work) = self.queue.get().await {
            let (kind, uid) = match &work {
                Work::Delete(u) => ("delete", u.clone()),
                Work::Orphan(u) => ("orphan", u.clone()),
            };
            let span = tracing::info_span!("reconcile", object.ref = %uid, object.reason = kind);
            let result = async {
                match &work {
                    Work::Delete(u) => self.attempt_to_delete(u).await,
                    Work::Orphan(u) => self.attempt_to_orphan(u).await,
                }
            }
            .instrument(span)
            .await;
            match result {
                Ok(Some(after)) => {
                    self.queue.forget(&work);
                    self.queue.add_after(work.clone(), after);
                }
                Ok(None) => self.queue.forget(&work),
                Err(err) => {
                    tracing::warn!(?err, uid = %uid, work = kind, "garbage collection failed; retrying");
                    if matches!(err, Error::UnknownOwnerKind { .. }) {
                        self.queue.add_after(work.clone(), DISCOVERY_PERIOD);
                    } else {
                        self.queue.retry(work.clone());
                    }
                }
            }
            self.queue.done(&work);
        }
    }

    fn api(&self, resource: &Resource, namespace: Option<&str>) -> Api<DynamicObject> {
        match (resource.namespaced, namespace) {
            (true, Some(ns)) => Api::namespaced_with(self.ctx.client.clone(), ns, &resource.ar),
            _ => Api::all_with(self.ctx.client.clone(), &resource.ar),
        }
    }

    /// Upstream's `attemptToDeleteItem`. `Ok(Some(d))`: look again after `d`.
    async fn attempt_to_delete(&self, uid: &str) -> Result<Option<Duration>> {
        let (node, blocking, has_dependents) = {
            let g = self.graph.lock();
            let Some(node) = g.node(uid).cloned() else {
                return Ok(None);
            };
            (
                node,
                g.blocking_dependents(uid),
                !g.dependents(uid).is_empty(),
            )
        };
        if node.deleting_dependents() {
            if blocking.is_empty() {
                tracing::info!(kind = node.kind(), name = %node.name, "dependents gone; removing the foregroundDeletion finalizer");
                self.remove_finalizer(&node, uid, FOREGROUND).await?;
            } else {
                for d in blocking {
                    self.queue.add(Work::Delete(d));
                }
            }
            return Ok(None);
        }
        if node.deleting || node.owners.is_empty() {
            return Ok(None);
        }
        // Quick path: every owner is in the graph and not waiting for its dependents.
        let all_solid = {
            let g = self.graph.lock();
            node.owners.iter().all(|r| {
                g.node(&r.uid).is_some_and(|o| {
                    !o.deleting_dependents() && owner_matches(o, r, node.namespace.as_deref())
                })
            })
        };
        if all_solid {
            return Ok(None);
        }
        // The uncached recheck: the object itself, then each owner it still names.
        let api = self.api(&node.resource, node.namespace.as_deref());
        let latest = api
            .get_metadata_opt(&node.name)
            .await
            .map_err(|source| Error::Get {
                kind: node.kind().into(),
                name: node.name.clone(),
                source,
            })?;
        let Some(latest) = latest.filter(|l| l.metadata.uid.as_deref() == Some(uid)) else {
            return Ok(None);
        };
        let owners = latest.metadata.owner_references.clone().unwrap_or_default();
        let mut classified = Vec::with_capacity(owners.len());
        for r in owners {
            let state = self.owner_state(&node, &latest.metadata, &r).await?;
            classified.push((r, state));
        }
        let has = |f: &str| latest.metadata.finalizers.iter().flatten().any(|x| x == f);
        let decision = decide(&classified, has_dependents, has(ORPHAN), has(FOREGROUND));
        tracing::debug!(?decision, kind = node.kind(), name = %node.name, "owners classified");
        match decision {
            Decision::Keep => {}
            Decision::RemoveRefs(uids) => {
                tracing::info!(kind = node.kind(), name = %node.name, owners = ?uids, "removing references to absent or deleting owners");
                self.patch_owner_refs(&node, uid, |refs| {
                    refs.into_iter()
                        .filter(|r| !uids.contains(&r.uid))
                        .collect()
                })
                .await?;
            }
            Decision::UnblockThenDeleteForeground(uids) => {
                if !uids.is_empty() {
                    self.patch_owner_refs(&node, uid, |refs| {
                        refs.into_iter()
                            .map(|mut r| {
                                if uids.contains(&r.uid) {
                                    r.block_owner_deletion = Some(false);
                                }
                                r
                            })
                            .collect()
                    })
                    .await?;
                }
                self.delete(&node, uid, Propagation::Foreground).await?;
            }
            Decision::Delete(policy) => self.delete(&node, uid, policy).await?,
        }
        Ok(None)
    }

    /// Classifies one owner reference of `node` (graph first, then a live GET).
    async fn owner_state(
        &self,
        node: &Node,
        meta: &ObjectMeta,
        r: &OwnerReference,
    ) -> Result<OwnerState> {
        let resource = self
            .kinds
            .read()
            .get(&(group_of(&r.api_version).to_string(), r.kind.clone()))
            .cloned();
        let Some(resource) = resource else {
            return Err(Error::UnknownOwnerKind {
                api_version: r.api_version.clone(),
                kind: r.kind.clone(),
            });
        };
        let namespace = if resource.namespaced {
            match meta.namespace.as_deref() {
                Some(ns) => Some(ns),
                None => {
                    self.invalid_namespace(node, meta, r);
                    return Ok(OwnerState::Dangling);
                }
            }
        } else {
            None
        };
        let known = self.graph.lock().node(&r.uid).cloned();
        if let Some(o) = &known {
            if o.namespace.as_deref() == namespace && o.name == r.name {
                return Ok(if o.deleting_dependents() {
                    OwnerState::Waiting
                } else {
                    OwnerState::Solid
                });
            }
            if o.namespace.as_deref() != namespace {
                self.invalid_namespace(node, meta, r);
            }
        }
        if self.absent.lock().contains(&r.uid) {
            return Ok(OwnerState::Dangling);
        }
        let owner = self
            .api(&resource, namespace)
            .get_metadata_opt(&r.name)
            .await
            .map_err(|source| Error::Get {
                kind: r.kind.clone(),
                name: r.name.clone(),
                source,
            })?;
        match owner {
            Some(o) if o.metadata.uid.as_deref() == Some(r.uid.as_str()) => {
                let deleting = o.metadata.deletion_timestamp.is_some()
                    && o.metadata
                        .finalizers
                        .iter()
                        .flatten()
                        .any(|f| f == FOREGROUND);
                Ok(if deleting {
                    OwnerState::Waiting
                } else {
                    OwnerState::Solid
                })
            }
            _ => {
                let mut absent = self.absent.lock();
                if absent.len() >= ABSENT_CACHE {
                    absent.clear();
                }
                absent.insert(r.uid.clone());
                Ok(OwnerState::Dangling)
            }
        }
    }

    fn invalid_namespace(&self, node: &Node, meta: &ObjectMeta, r: &OwnerReference) {
        let regarding = ObjectReference {
            api_version: Some(node.resource.ar.api_version.clone()),
            kind: Some(node.kind().into()),
            namespace: meta.namespace.clone(),
            name: meta.name.clone(),
            uid: meta.uid.clone(),
            ..Default::default()
        };
        self.ctx.recorder.record(rkube_component::EventRecord::warning(
            regarding,
            "OwnerRefInvalidNamespace",
            format!(
                "ownerRef [{}, Kind={}, Namespace={}, Name={}, UID={}] does not exist in namespace {:?}",
                r.api_version,
                r.kind,
                meta.namespace.as_deref().unwrap_or(""),
                r.name,
                r.uid,
                meta.namespace.as_deref().unwrap_or("")
            ),
        ));
    }

    /// Upstream's `attemptToOrphanWorker`: drop the references to `uid` from its
    /// dependents, then its `orphan` finalizer.
    async fn attempt_to_orphan(&self, uid: &str) -> Result<Option<Duration>> {
        let (owner, dependents) = {
            let g = self.graph.lock();
            let Some(owner) = g.node(uid).cloned() else {
                return Ok(None);
            };
            let deps: Vec<(String, Node)> = g
                .dependents(uid)
                .into_iter()
                .filter_map(|d| g.node(&d).cloned().map(|n| (d, n)))
                .collect();
            (owner, deps)
        };
        if !(owner.deleting && owner.orphan) {
            return Ok(None);
        }
        for (d, node) in &dependents {
            self.patch_owner_refs(node, d, |refs| {
                refs.into_iter().filter(|r| r.uid != uid).collect()
            })
            .await?;
        }
        tracing::info!(kind = owner.kind(), name = %owner.name, dependents = dependents.len(), "dependents orphaned; removing the orphan finalizer");
        self.remove_finalizer(&owner, uid, ORPHAN).await?;
        Ok(None)
    }

    async fn delete(&self, node: &Node, uid: &str, policy: Propagation) -> Result<()> {
        tracing::info!(kind = node.kind(), name = %node.name, ?policy, "deleting an object whose owners are gone");
        let params = DeleteParams {
            propagation_policy: Some(policy.as_kube()),
            preconditions: Some(Preconditions {
                uid: Some(uid.into()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match self
            .api(&node.resource, node.namespace.as_deref())
            .delete(&node.name, &params)
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(source) => Err(Error::Write {
                action: "delete",
                kind: node.kind().into(),
                name: node.name.clone(),
                source,
            }),
        }
    }

    /// Rewrites the owner references of the live object with `uid` (merge patch with its
    /// resourceVersion as precondition, retried on conflict).
    async fn patch_owner_refs(
        &self,
        node: &Node,
        uid: &str,
        f: impl Fn(Vec<OwnerReference>) -> Vec<OwnerReference>,
    ) -> Result<()> {
        let api = self.api(&node.resource, node.namespace.as_deref());
        self.patch_meta(&api, node, uid, "patch the owner references of", |meta| {
            let refs = meta.owner_references.clone().unwrap_or_default();
            let new = f(refs.clone());
            (new != refs).then(|| {
                json!({"ownerReferences": if new.is_empty() { json!(null) } else { json!(new) }})
            })
        })
        .await
    }

    async fn remove_finalizer(&self, node: &Node, uid: &str, finalizer: &str) -> Result<()> {
        let api = self.api(&node.resource, node.namespace.as_deref());
        self.patch_meta(&api, node, uid, "remove a finalizer of", |meta| {
            let list = meta.finalizers.clone().unwrap_or_default();
            let new: Vec<&String> = list.iter().filter(|f| *f != finalizer).collect();
            (new.len() != list.len()).then(|| json!({"finalizers": new}))
        })
        .await
    }

    /// GET, compute a metadata merge patch, PATCH with the resourceVersion; up to 8 tries.
    async fn patch_meta(
        &self,
        api: &Api<DynamicObject>,
        node: &Node,
        uid: &str,
        action: &'static str,
        f: impl Fn(&ObjectMeta) -> Option<serde_json::Value>,
    ) -> Result<()> {
        let write_err = |source| Error::Write {
            action,
            kind: node.kind().into(),
            name: node.name.clone(),
            source,
        };
        for _ in 0..8 {
            let Some(latest) = api.get_metadata_opt(&node.name).await.map_err(write_err)? else {
                return Ok(());
            };
            if latest.metadata.uid.as_deref() != Some(uid) {
                return Ok(());
            }
            let Some(mut patch) = f(&latest.metadata) else {
                return Ok(());
            };
            patch["resourceVersion"] = json!(latest.metadata.resource_version);
            patch["uid"] = json!(uid);
            let body = json!({"metadata": patch});
            match api
                .patch(&node.name, &PatchParams::default(), &Patch::Merge(&body))
                .await
            {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(source) => return Err(write_err(source)),
            }
        }
        Err(Error::Conflicts {
            kind: node.kind().into(),
            name: node.name.clone(),
        })
    }
}

/// Whether a graph node is the object `r` points at from a dependent in `namespace`.
fn owner_matches(o: &Node, r: &OwnerReference, namespace: Option<&str>) -> bool {
    o.name == r.name
        && o.kind() == r.kind
        && (!o.resource.namespaced || o.namespace.as_deref() == namespace)
}

/// Whether the collector watches `ar`: list, watch and delete, and not Events (upstream
/// ignores them: they never own anything and churn a lot).
fn deletable(ar: &ApiResource, caps: &ApiCapabilities) -> bool {
    caps.supports_operation(verbs::LIST)
        && caps.supports_operation(verbs::WATCH)
        && caps.supports_operation(verbs::DELETE)
        && !(ar.plural == "events" && (ar.group.is_empty() || ar.group == "events.k8s.io"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(kind: &str) -> Arc<Resource> {
        Arc::new(Resource {
            ar: ApiResource {
                group: String::new(),
                version: "v1".into(),
                api_version: "v1".into(),
                kind: kind.into(),
                plural: format!("{}s", kind.to_lowercase()),
            },
            namespaced: true,
        })
    }

    fn oref(uid: &str, block: bool) -> OwnerReference {
        OwnerReference {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: format!("n-{uid}"),
            uid: uid.into(),
            block_owner_deletion: Some(block),
            controller: None,
        }
    }

    fn node(r: &Arc<Resource>, name: &str, owners: Vec<OwnerReference>) -> Node {
        Node {
            resource: r.clone(),
            namespace: Some("default".into()),
            name: name.into(),
            owners,
            deleting: false,
            foreground: false,
            orphan: false,
        }
    }

    #[test]
    fn graph_tracks_dependents_and_queues_on_owner_changes() {
        let cm = res("ConfigMap");
        let mut g = Graph::default();
        assert_eq!(g.observe("o".into(), node(&cm, "n-o", vec![])), vec![]);
        // A dependent of a known owner queues nothing; of an unknown owner, itself.
        assert_eq!(
            g.observe("d1".into(), node(&cm, "d1", vec![oref("o", true)])),
            vec![]
        );
        assert_eq!(
            g.observe("d2".into(), node(&cm, "d2", vec![oref("gone", false)])),
            vec![Work::Delete("d2".into())]
        );
        assert_eq!(g.dependents("o"), vec!["d1".to_string()]);
        // An owner uid the graph holds in another namespace: checked too.
        let mut elsewhere = node(&cm, "x", vec![oref("o", false)]);
        elsewhere.namespace = Some("other".into());
        assert_eq!(
            g.observe("x".into(), elsewhere),
            vec![Work::Delete("x".into())]
        );
        g.forget("x");
        // Foreground deletion of the owner queues it and its dependents.
        let mut deleting = node(&cm, "n-o", vec![]);
        deleting.deleting = true;
        deleting.foreground = true;
        let w = g.observe("o".into(), deleting.clone());
        assert_eq!(w, vec![Work::Delete("o".into()), Work::Delete("d1".into())]);
        assert_eq!(g.blocking_dependents("o"), vec!["d1".to_string()]);
        // Unchanged again: the owner only (not its dependents a second time).
        assert_eq!(
            g.observe("o".into(), deleting),
            vec![Work::Delete("o".into())]
        );
        // The dependent goes: the waiting owner is queued.
        assert_eq!(g.forget("d1"), vec![Work::Delete("o".into())]);
        assert!(g.blocking_dependents("o").is_empty());
        // The owner goes: its remaining dependents are queued.
        g.observe("d3".into(), node(&cm, "d3", vec![oref("o", false)]));
        assert_eq!(g.forget("o"), vec![Work::Delete("d3".into())]);
        assert_eq!(g.len(), 2);
    }

    #[test]
    fn graph_queues_orphaning_and_reference_removal() {
        let cm = res("ConfigMap");
        let mut g = Graph::default();
        let mut owner = node(&cm, "n-o", vec![]);
        g.observe("o".into(), owner.clone());
        g.observe("d".into(), node(&cm, "d", vec![oref("o", true)]));
        owner.deleting = true;
        owner.orphan = true;
        assert_eq!(g.observe("o".into(), owner), vec![Work::Orphan("o".into())]);
        // A foreground owner whose dependent drops its reference is queued.
        let mut fg = node(&cm, "n-f", vec![]);
        fg.deleting = true;
        fg.foreground = true;
        g.observe("f".into(), fg);
        g.observe("e".into(), node(&cm, "e", vec![oref("f", true)]));
        assert_eq!(
            g.observe("e".into(), node(&cm, "e", vec![])),
            vec![Work::Delete("f".into())]
        );
        // Turning blockOwnerDeletion off also unblocks it.
        g.observe("e".into(), node(&cm, "e", vec![oref("f", true)]));
        assert_eq!(
            g.observe("e".into(), node(&cm, "e", vec![oref("f", false)])),
            vec![Work::Delete("f".into())]
        );
    }

    #[test]
    fn decide_follows_attempt_to_delete_item() {
        use OwnerState::*;
        let r = |u: &str, b: bool, s: OwnerState| (oref(u, b), s);
        assert_eq!(decide(&[], false, false, false), Decision::Keep);
        assert_eq!(
            decide(&[r("a", true, Solid)], false, false, false),
            Decision::Keep
        );
        // Some owner remains: only the dangling and waiting references go.
        assert_eq!(
            decide(
                &[
                    r("a", true, Solid),
                    r("b", false, Dangling),
                    r("c", true, Waiting)
                ],
                false,
                false,
                false
            ),
            Decision::RemoveRefs(vec!["b".into(), "c".into()])
        );
        // Every owner gone: delete, in the background unless the object asks otherwise.
        assert_eq!(
            decide(&[r("a", true, Dangling)], true, false, false),
            Decision::Delete(Propagation::Background)
        );
        assert_eq!(
            decide(&[r("a", true, Dangling)], true, true, false),
            Decision::Delete(Propagation::Orphan)
        );
        assert_eq!(
            decide(&[r("a", true, Dangling)], false, false, true),
            Decision::Delete(Propagation::Foreground)
        );
        // Waiting owner, no dependents: plain delete.
        assert_eq!(
            decide(&[r("a", true, Waiting)], false, false, false),
            Decision::Delete(Propagation::Background)
        );
        // Waiting owner and dependents of its own: unblock, then foreground.
        assert_eq!(
            decide(
                &[r("a", true, Waiting), r("b", false, Waiting)],
                true,
                false,
                false
            ),
            Decision::UnblockThenDeleteForeground(vec!["a".into()])
        );
    }

    #[test]
    fn node_reads_finalizers_and_ignores_nameless_objects() {
        let cm = res("ConfigMap");
        let meta = ObjectMeta {
            uid: Some("u".into()),
            name: Some("x".into()),
            finalizers: Some(vec![FOREGROUND.into()]),
            deletion_timestamp: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            )),
            ..Default::default()
        };
        let (uid, n) = Node::from_meta(cm.clone(), &meta).unwrap();
        assert_eq!(uid, "u");
        assert!(n.deleting_dependents() && !n.orphan);
        assert!(Node::from_meta(cm, &ObjectMeta::default()).is_none());
        assert_eq!(group_of("apps/v1"), "apps");
        assert_eq!(group_of("v1"), "");
    }
}
