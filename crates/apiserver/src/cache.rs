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

impl WatchCache {
    /// Creates the cache of the keys under `prefix` and starts keeping it current.
    pub fn start(store: Arc<dyn Store>, prefix: Vec<u8>) -> Arc<Self> {
        let (revision_tx, _) = watch::channel(0);
        let cache = Arc::new(Self {
            prefix,
            state: RwLock::new(State::default()),
            revision_tx,
        });
        let weak = Arc::downgrade(&cache);
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                let Some(cache) = weak.upgrade() else { return };
                match cache.sync(&store).await {
                    Ok(()) => return, // the store closed
                    Err(err) => {
                        tracing::warn!(prefix = %String::from_utf8_lossy(&cache.prefix), %err, "watch cache lost its store watch; relisting");
                    }
                }
                drop(cache);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        });
        cache
    }

    /// Lists the store, then applies its watch until it fails.
    async fn sync(&self, store: &Arc<dyn Store>) -> Result<(), rkube_store::Error> {
        let list = store.range(RangeRequest::prefix(&self.prefix)).await?;
        {
            let mut st = self.state.write();
            st.objects = list
                .kvs
                .iter()
                .filter_map(|kv| {
                    Some((
                        kv.key.clone(),
                        Arc::new(decode(&kv.value, kv.mod_revision)?),
                    ))
                })
                .collect();
            st.events.clear();
            st.window_start = list.revision;
            st.revision = list.revision;
        }
        self.revision_tx.send_replace(list.revision);
        let mut stream = store.watch(&self.prefix, list.revision).await?;
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            let Some(revision) = batch.first().map(|e| e.revision()) else {
                continue;
            };
            {
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
                st.revision = revision;
            }
            self.revision_tx.send_replace(revision);
        }
        Ok(())
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

    /// A receiver that changes whenever the cache moves to a new revision.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.revision_tx.subscribe()
    }
}
