//! A watch-fed cache of children indexed by their controller's UID, so a reconcile finds
//! the pods of one ReplicaSet (or the ReplicaSets of one Deployment) without scanning
//! every object: the lookup costs O(children), not O(pods in the cluster).
//!
//! Objects without a controller reference are indexed by namespace, for adoption.
//! The index follows kube-runtime's watcher protocol: a relist (`Init` .. `InitDone`) is
//! buffered and swapped in whole, so objects deleted while the watch was down disappear.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use kube::Resource;
use kube::runtime::watcher::Event;
use parking_lot::RwLock;

use crate::controller_ref::controller_of;

/// `(namespace, name)`.
pub type Key = (String, String);

/// What the index saw, for expectations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// A new object controlled by `owner` appeared.
    Created {
        /// The controller's UID.
        owner: String,
    },
    /// An object controlled by `owner` is gone or being deleted.
    Deleted {
        /// The controller's UID.
        owner: String,
        /// The object.
        key: Key,
    },
    /// The watch relisted: whatever was expected may have been missed.
    Relisted,
}

struct Entry<K> {
    owner: Option<String>,
    obj: Arc<K>,
}

struct Inner<K> {
    objects: HashMap<Key, Entry<K>>,
    by_owner: HashMap<String, HashSet<Key>>,
    orphans: HashMap<String, HashSet<Key>>,
    relist: Option<Vec<K>>,
    synced: bool,
}

impl<K> Default for Inner<K> {
    fn default() -> Self {
        Self {
            objects: HashMap::new(),
            by_owner: HashMap::new(),
            orphans: HashMap::new(),
            relist: None,
            synced: false,
        }
    }
}

/// Objects of kind `K` by controller UID (and orphans by namespace).
pub struct OwnerIndex<K> {
    inner: RwLock<Inner<K>>,
}

impl<K> Default for OwnerIndex<K> {
    fn default() -> Self {
        Self {
            inner: RwLock::new(Inner::default()),
        }
    }
}

fn key_of<K: Resource>(obj: &K) -> Key {
    let m = obj.meta();
    (
        m.namespace.clone().unwrap_or_default(),
        m.name.clone().unwrap_or_default(),
    )
}

impl<K: Resource + Clone> Inner<K> {
    fn remove(&mut self, key: &Key) -> Option<Entry<K>> {
        let entry = self.objects.remove(key)?;
        let set = match &entry.owner {
            Some(uid) => self.by_owner.get_mut(uid),
            None => self.orphans.get_mut(&key.0),
        };
        if let Some(set) = set {
            set.remove(key);
            if set.is_empty() {
                let bucket = entry.owner.clone().unwrap_or_else(|| key.0.clone());
                if entry.owner.is_some() {
                    self.by_owner.remove(&bucket);
                } else {
                    self.orphans.remove(&bucket);
                }
            }
        }
        Some(entry)
    }

    fn insert(&mut self, obj: K) -> Option<Entry<K>> {
        let key = key_of(&obj);
        let old = self.remove(&key);
        let owner = controller_of(obj.meta()).map(|r| r.uid.clone());
        match &owner {
            Some(uid) => self.by_owner.entry(uid.clone()).or_default(),
            None => self.orphans.entry(key.0.clone()).or_default(),
        }
        .insert(key.clone());
        self.objects.insert(
            key,
            Entry {
                owner,
                obj: Arc::new(obj),
            },
        );
        old
    }
}

impl<K: Resource + Clone> OwnerIndex<K> {
    /// Applies one watcher event; returns what expectations should learn from it.
    pub fn apply(&self, event: &Event<K>) -> Vec<Observed> {
        let mut inner = self.inner.write();
        match event {
            Event::Apply(obj) => {
                let deleting = obj.meta().deletion_timestamp.is_some();
                let owner = controller_of(obj.meta()).map(|r| r.uid.clone());
                let old = inner.insert(obj.clone());
                let was_deleting = old
                    .as_ref()
                    .is_some_and(|e| e.obj.meta().deletion_timestamp.is_some());
                match owner {
                    Some(owner) if deleting && !was_deleting => vec![Observed::Deleted {
                        owner,
                        key: key_of(obj),
                    }],
                    Some(owner) if old.is_none() && !deleting => vec![Observed::Created { owner }],
                    _ => vec![],
                }
            }
            Event::Delete(obj) => {
                let key = key_of(obj);
                let old = inner.remove(&key);
                let owner = controller_of(obj.meta())
                    .map(|r| r.uid.clone())
                    .or_else(|| old.and_then(|e| e.owner));
                owner
                    .map(|owner| Observed::Deleted { owner, key })
                    .into_iter()
                    .collect()
            }
            Event::Init => {
                inner.relist = Some(Vec::new());
                vec![]
            }
            Event::InitApply(obj) => {
                if let Some(buf) = inner.relist.as_mut() {
                    buf.push(obj.clone());
                }
                vec![]
            }
            Event::InitDone => {
                let objs = inner.relist.take().unwrap_or_default();
                let mut fresh = Inner {
                    synced: true,
                    ..Inner::default()
                };
                for obj in objs {
                    fresh.insert(obj);
                }
                *inner = fresh;
                vec![Observed::Relisted]
            }
        }
    }

    /// Whether the first list has been applied (the index may be trusted).
    pub fn synced(&self) -> bool {
        self.inner.read().synced
    }

    /// The objects whose controller has `uid`.
    pub fn owned_by(&self, uid: &str) -> Vec<Arc<K>> {
        let inner = self.inner.read();
        inner
            .by_owner
            .get(uid)
            .into_iter()
            .flatten()
            .filter_map(|k| inner.objects.get(k).map(|e| e.obj.clone()))
            .collect()
    }

    /// The objects of `namespace` without a controller.
    pub fn orphans_in(&self, namespace: &str) -> Vec<Arc<K>> {
        let inner = self.inner.read();
        inner
            .orphans
            .get(namespace)
            .into_iter()
            .flatten()
            .filter_map(|k| inner.objects.get(k).map(|e| e.obj.clone()))
            .collect()
    }

    /// One object by namespace and name.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        let inner = self.inner.read();
        inner
            .objects
            .get(&(namespace.to_string(), name.to_string()))
            .map(|e| e.obj.clone())
    }

    /// How many objects are cached.
    pub fn len(&self) -> usize {
        self.inner.read().objects.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};

    fn pod(name: &str, owner: Option<&str>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                owner_references: owner.map(|uid| {
                    vec![OwnerReference {
                        uid: uid.into(),
                        controller: Some(true),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn names(pods: Vec<Arc<Pod>>) -> Vec<String> {
        let mut v: Vec<String> = pods
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn indexes_by_controller_and_moves_on_adoption_and_release() {
        let idx = OwnerIndex::<Pod>::default();
        assert!(!idx.synced());
        idx.apply(&Event::Init);
        idx.apply(&Event::InitApply(pod("a", Some("u1"))));
        idx.apply(&Event::InitApply(pod("b", None)));
        assert_eq!(idx.apply(&Event::InitDone), vec![Observed::Relisted]);
        assert!(idx.synced());
        assert_eq!(names(idx.owned_by("u1")), ["a"]);
        assert_eq!(names(idx.orphans_in("ns")), ["b"]);

        // A new pod of u1 is a creation; adoption of b moves it without being one.
        assert_eq!(
            idx.apply(&Event::Apply(pod("c", Some("u1")))),
            vec![Observed::Created { owner: "u1".into() }]
        );
        assert!(idx.apply(&Event::Apply(pod("b", Some("u1")))).is_empty());
        assert_eq!(names(idx.owned_by("u1")), ["a", "b", "c"]);
        assert!(idx.orphans_in("ns").is_empty());
        // Release.
        idx.apply(&Event::Apply(pod("a", None)));
        assert_eq!(names(idx.owned_by("u1")), ["b", "c"]);
        assert_eq!(names(idx.orphans_in("ns")), ["a"]);

        // A deletion timestamp counts as the deletion, once.
        let mut dying = pod("c", Some("u1"));
        dying.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        let gone = Observed::Deleted {
            owner: "u1".into(),
            key: ("ns".into(), "c".into()),
        };
        assert_eq!(idx.apply(&Event::Apply(dying.clone())), vec![gone.clone()]);
        assert!(idx.apply(&Event::Apply(dying.clone())).is_empty());
        assert_eq!(idx.apply(&Event::Delete(dying)), vec![gone]);
        assert_eq!(names(idx.owned_by("u1")), ["b"]);
    }

    #[test]
    fn relist_drops_what_disappeared() {
        let idx = OwnerIndex::<Pod>::default();
        idx.apply(&Event::Init);
        idx.apply(&Event::InitApply(pod("a", Some("u1"))));
        idx.apply(&Event::InitDone);
        idx.apply(&Event::Init);
        idx.apply(&Event::InitApply(pod("b", Some("u1"))));
        // Until the relist is done the old view stays.
        assert_eq!(names(idx.owned_by("u1")), ["a"]);
        idx.apply(&Event::InitDone);
        assert_eq!(names(idx.owned_by("u1")), ["b"]);
        assert_eq!(idx.len(), 1);
    }
}
