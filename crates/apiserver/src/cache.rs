//! The watch cache: one per resource, holding every object of the resource in memory and a
//! window of recent events, kept current by a watch on the store.
//!
//! LIST and WATCH are served from here, like upstream's cacher. A list waits until the cache
//! has caught up with the store's current revision (a consistent read), and a watch from a
//! resourceVersion replays the events after it from the window, or gets 410 Gone when the
//! window no longer reaches back that far.
//!
//! States of a cache:
//! - *starting*: listing the store; readers wait (`revision` is 0);
//! - *live*: applying store watch events in revision order;
//! - *relisting*: the store watch broke; the cache lists again, and the event window restarts
//!   at the new list's revision (watchers older than that get 410 and re-list).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use parking_lot::RwLock;
use rkube_store::{EventKind, RangeRequest, Store};
use serde_json::Value;
use tokio::sync::watch;

use crate::status::{ApiError, ApiResult};

/// Events kept per resource for watchers resuming from a resourceVersion.
const EVENT_WINDOW: usize = 4096;

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchKind {
    /// Created.
    Added,
    /// Changed.
    Modified,
    /// Deleted.
    Deleted,
}

impl WatchKind {
    /// The wire name (`ADDED`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            WatchKind::Added => "ADDED",
            WatchKind::Modified => "MODIFIED",
            WatchKind::Deleted => "DELETED",
        }
    }
}

/// One change of one object.
#[derive(Debug)]
pub struct CacheEvent {
    /// The store revision of the change.
    pub revision: i64,
    /// Added, modified or deleted.
    pub kind: WatchKind,
    /// The object after the change (for a delete: the last state, at the delete's revision).
    pub object: Arc<Value>,
    /// The object before the change, if it existed.
    pub prev: Option<Arc<Value>>,
}

#[derive(Default)]
struct State {
    /// Store key → object (with `metadata.resourceVersion` set).
    objects: BTreeMap<Vec<u8>, Arc<Value>>,
    /// Recent events, oldest first.
    events: VecDeque<Arc<CacheEvent>>,
    /// Every event after this revision is in `events`.
    window_start: i64,
    /// The revision the cache reflects (0 while starting).
    revision: i64,
}

/// The cache of one resource.
pub struct WatchCache {
    prefix: Vec<u8>,
    state: RwLock<State>,
    revision_tx: watch::Sender<i64>,
    /// Bumped when events are appended (or the cache relisted): wakes watchers, which
    /// revisions that changed only other resources must not do.
    events_tx: watch::Sender<i64>,
}

/// Parses stored bytes into an object carrying its resourceVersion.
pub fn decode(bytes: &[u8], revision: i64) -> Option<Value> {
    let mut obj: Value = serde_json::from_slice(bytes).ok()?;
    crate::meta::set_meta(
        &mut obj,
        "resourceVersion",
        Value::String(revision.to_string()),
    );
    Some(obj)
}

/// Keeps a set of caches current from one store watch over their common root.
///
/// One watch (not one per resource) matters for consistent reads: every store revision,
/// whatever key it wrote, reaches every cache in order, so a cache knows it reflects revision
/// R even when R changed another resource (or a key no cache holds, like a Service IP claim).
pub fn start_all(store: Arc<dyn Store>, root: Vec<u8>, caches: Vec<Arc<WatchCache>>) {
    let weak: Vec<_> = caches.iter().map(Arc::downgrade).collect();
    drop(caches);
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        loop {
            let caches: Option<Vec<Arc<WatchCache>>> = weak.iter().map(|w| w.upgrade()).collect();
            let Some(caches) = caches else { return };
            match sync(&store, &root, &caches).await {
                Ok(()) => return, // the store closed
                Err(err) => {
                    tracing::warn!(%err, "watch caches lost their store watch; relisting");
                }
            }
            drop(caches);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    });
}

/// Lists the store, then applies its watch until it fails.
async fn sync(
    store: &Arc<dyn Store>,
    root: &[u8],
    caches: &[Arc<WatchCache>],
) -> Result<(), rkube_store::Error> {
    let list = store.range(RangeRequest::prefix(root)).await?;
    let mut objects: Vec<BTreeMap<Vec<u8>, Arc<Value>>> = vec![BTreeMap::new(); caches.len()];
    for kv in &list.kvs {
        if let Some(i) = caches.iter().position(|c| kv.key.starts_with(&c.prefix))
            && let Some(obj) = decode(&kv.value, kv.mod_revision)
        {
            objects[i].insert(kv.key.clone(), Arc::new(obj));
        }
    }
    for (cache, objects) in caches.iter().zip(objects) {
        cache.reset(objects, list.revision);
    }
    let mut stream = store.watch(root, list.revision).await?;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        // A batch may span revisions (etcd); each revision is applied as one step.
        let mut events = batch.into_iter().peekable();
        while let Some(first) = events.next() {
            let revision = first.revision();
            let mut touched: Vec<(usize, Vec<rkube_store::Event>)> = Vec::new();
            let mut next = Some(first);
            while let Some(event) = next {
                if let Some(i) = caches
                    .iter()
                    .position(|c| event.kv.key.starts_with(&c.prefix))
                {
                    match touched.iter_mut().find(|(j, _)| *j == i) {
                        Some((_, group)) => group.push(event),
                        None => touched.push((i, vec![event])),
                    }
                }
                next = events.next_if(|e| e.revision() == revision);
            }
            for (i, group) in touched {
                caches[i].apply(group, revision);
            }
            // Every cache now reflects this revision, changed or not.
            for cache in caches {
                cache.advance(revision);
            }
        }
    }
    Ok(())
}

impl WatchCache {
    /// Creates the (empty, starting) cache of the keys under `prefix`; [`start_all`] fills it.
    pub fn new(prefix: Vec<u8>) -> Arc<Self> {
        let (revision_tx, _) = watch::channel(0);
        let (events_tx, _) = watch::channel(0);
        Arc::new(Self {
            prefix,
            state: RwLock::new(State::default()),
            revision_tx,
            events_tx,
        })
    }

    /// Replaces the contents with a fresh list at `revision`; the event window restarts there.
    fn reset(&self, objects: BTreeMap<Vec<u8>, Arc<Value>>, revision: i64) {
        {
            let mut st = self.state.write();
            st.objects = objects;
            st.events.clear();
            st.window_start = revision;
            st.revision = revision;
        }
        self.revision_tx.send_replace(revision);
        self.events_tx.send_replace(revision);
    }

    /// Moves the cache to `revision` when nothing of it changed there.
    fn advance(&self, revision: i64) {
        {
            let mut st = self.state.write();
            if st.revision >= revision {
                return;
            }
            st.revision = revision;
        }
        self.revision_tx.send_replace(revision);
    }

    /// Applies the events of one store revision that fall under this cache's prefix.
    fn apply(&self, batch: Vec<rkube_store::Event>, revision: i64) {
        let mut st = self.state.write();
        for event in batch {
            let key = event.kv.key.clone();
            let prev = st.objects.get(&key).cloned();
            let (kind, object) = match event.kind {
                EventKind::Put => {
                    let Some(obj) = decode(&event.kv.value, event.kv.mod_revision) else {
                        continue;
                    };
                    let obj = Arc::new(obj);
                    st.objects.insert(key, obj.clone());
                    let kind = if prev.is_some() {
                        WatchKind::Modified
                    } else {
                        WatchKind::Added
                    };
                    (kind, obj)
                }
                EventKind::Delete => {
                    st.objects.remove(&key);
                    let Some(last) = prev.as_deref().cloned().or_else(|| {
                        let p = event.prev.as_ref()?;
                        decode(&p.value, p.mod_revision)
                    }) else {
                        continue;
                    };
                    let mut last = last;
                    crate::meta::set_meta(
                        &mut last,
                        "resourceVersion",
                        Value::String(revision.to_string()),
                    );
                    (WatchKind::Deleted, Arc::new(last))
                }
            };
            st.events.push_back(Arc::new(CacheEvent {
                revision,
                kind,
                object,
                prev,
            }));
        }
        while st.events.len() > EVENT_WINDOW {
            if let Some(old) = st.events.pop_front() {
                st.window_start = old.revision;
            }
        }
        st.revision = st.revision.max(revision);
        drop(st);
        self.revision_tx.send_replace(revision);
        self.events_tx.send_replace(revision);
    }

    /// The revision the cache reflects.
    pub fn revision(&self) -> i64 {
        *self.revision_tx.borrow()
    }

    /// Waits until the cache reflects at least `revision` (up to 3 s, as upstream).
    pub async fn wait_for(&self, revision: i64) -> ApiResult<()> {
        let mut rx = self.revision_tx.subscribe();
        let wait = rx.wait_for(|r| *r >= revision && *r > 0);
        match tokio::time::timeout(Duration::from_secs(3), wait).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(ApiError::unavailable("the watch cache stopped")),
            Err(_) => Err(ApiError::timeout(format!(
                "Too large resource version: {revision}, current: {}",
                self.revision()
            ))),
        }
    }

    /// Every object under `prefix` (a key prefix within this cache), at the cache's revision.
    pub fn list(&self, prefix: &[u8]) -> (Vec<Arc<Value>>, i64) {
        let st = self.state.read();
        let items = st
            .objects
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v.clone())
            .collect();
        (items, st.revision)
    }

    /// Events after `revision`, or 410 Gone when the window does not reach back that far.
    pub fn events_after(&self, revision: i64) -> ApiResult<(Vec<Arc<CacheEvent>>, i64)> {
        let st = self.state.read();
        if revision < st.window_start {
            return Err(ApiError::expired(format!(
                "too old resource version: {revision} ({})",
                st.window_start
            )));
        }
        let start = st.events.partition_point(|e| e.revision <= revision);
        Ok((st.events.range(start..).cloned().collect(), st.revision))
    }

    /// A receiver that changes whenever events are appended to the cache.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.events_tx.subscribe()
    }
}
