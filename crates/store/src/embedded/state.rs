//! The in-memory multi-version state of the embedded store.
//!
//! Every key keeps its versions in revision order, from the compaction point on; a tombstone
//! version marks a delete. A read at revision `R` takes, for each key, its newest version at or
//! below `R`. This is what lets the writer apply a batch before it is durable: readers read at
//! the last *published* revision, so versions of a batch still being logged are invisible, and
//! if logging fails they are rolled back.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use crate::{Error, Event, EventKind, KeyValue, Op, RangeRequest, RangeResponse, Result};

/// One version of a key.
#[derive(Clone, Debug)]
pub(super) struct Version {
    /// The revision that wrote it.
    pub(super) revision: i64,
    /// The revision that created the key (0 for a tombstone).
    pub(super) create_revision: i64,
    /// Writes since creation (0 for a tombstone).
    pub(super) version: i64,
    /// The value; `None` for a tombstone.
    pub(super) value: Option<Arc<[u8]>>,
}

impl Version {
    fn to_kv(&self, key: &[u8]) -> Option<KeyValue> {
        self.value.as_ref().map(|value| KeyValue {
            key: key.to_vec(),
            value: value.to_vec(),
            create_revision: self.create_revision,
            mod_revision: self.revision,
            version: self.version,
        })
    }

    /// The watch event of this version of `key`, after `prev`.
    fn event(&self, key: &[u8], prev: Option<KeyValue>) -> Event {
        match self.to_kv(key) {
            Some(kv) => Event {
                kind: EventKind::Put,
                kv,
                prev,
            },
            None => Event {
                kind: EventKind::Delete,
                kv: tombstone(key, self.revision),
                prev,
            },
        }
    }

    fn size(&self) -> usize {
        self.value.as_ref().map_or(0, |v| v.len()) + 32
    }
}

/// The events of one revision.
pub(super) struct RevisionEvents {
    pub(super) revision: i64,
    pub(super) events: Vec<Event>,
    pub(super) bytes: usize,
}

pub(super) fn events_bytes(events: &[Event]) -> usize {
    events
        .iter()
        .map(|e| e.kv.value.len() + e.prev.as_ref().map_or(0, |p| p.value.len()) + 64)
        .sum()
}

pub(super) fn tombstone(key: &[u8], revision: i64) -> KeyValue {
    KeyValue {
        key: key.to_vec(),
        value: Vec::new(),
        create_revision: 0,
        mod_revision: revision,
        version: 0,
    }
}

/// The whole store.
pub(super) struct State {
    /// Every key with its retained versions, oldest first.
    pub(super) keys: BTreeMap<Vec<u8>, Vec<Version>>,
    /// The newest applied revision (ahead of the published one while a batch is logged).
    pub(super) revision: i64,
    /// The compaction point.
    pub(super) compacted: i64,
    /// Revision → the keys it wrote, for watch replay and rollback.
    log: BTreeMap<i64, Vec<Vec<u8>>>,
    /// Approximate bytes held, for deciding when a snapshot pays off.
    pub(super) bytes: usize,
}

impl State {
    /// An empty store. Like etcd, it starts at revision 1; the first write gets revision 2.
    pub(super) fn new() -> Self {
        Self::from_parts(BTreeMap::new(), 1, 0)
    }

    /// A state read back from a snapshot; rebuilds the log.
    pub(super) fn from_parts(
        keys: BTreeMap<Vec<u8>, Vec<Version>>,
        revision: i64,
        compacted: i64,
    ) -> Self {
        let mut log: BTreeMap<i64, Vec<Vec<u8>>> = BTreeMap::new();
        let mut bytes = 0;
        for (key, versions) in &keys {
            for v in versions {
                bytes += v.size() + key.len();
                log.entry(v.revision).or_default().push(key.clone());
            }
        }
        Self {
            keys,
            revision,
            compacted,
            log,
            bytes,
        }
    }

    /// The `mod_revision` of `key` in the newest applied state (0: absent).
    pub(super) fn mod_revision(&self, key: &[u8]) -> i64 {
        match self.keys.get(key).and_then(|v| v.last()) {
            Some(v) if v.value.is_some() => v.revision,
            _ => 0,
        }
    }

    /// The newest applied entry of `key`.
    pub(super) fn current(&self, key: &[u8]) -> Option<KeyValue> {
        self.keys.get(key)?.last()?.to_kv(key)
    }

    /// Reads `req` at revision `at` (already checked against the compaction point and the
    /// published revision by the caller).
    pub(super) fn range(&self, req: &RangeRequest, at: i64) -> RangeResponse {
        let limit = if req.limit == 0 {
            usize::MAX
        } else {
            req.limit
        };
        let mut resp = RangeResponse {
            revision: at,
            ..RangeResponse::default()
        };
        let start = Bound::Included(req.key.as_slice());
        let end = match &req.range_end {
            None => Bound::Included(req.key.as_slice()),
            Some(end) if end.is_empty() => Bound::Unbounded,
            Some(end) => Bound::Excluded(end.as_slice()),
        };
        // An inverted range is empty (BTreeMap::range would panic on it).
        if let (Bound::Included(s), Bound::Excluded(e)) = (start, end)
            && s >= e
        {
            return resp;
        }
        for (key, versions) in self.keys.range::<[u8], _>((start, end)) {
            let Some(v) = version_at(versions, at) else {
                continue;
            };
            if v.value.is_none() {
                continue;
            }
            resp.count += 1;
            if resp.kvs.len() < limit {
                resp.kvs.extend(v.to_kv(key));
            } else {
                resp.more = true;
            }
        }
        resp
    }

    /// Applies `ops` at revision `self.revision + 1`, recording their events. Returns whether
    /// anything was written (a delete of a missing key writes nothing); only then does the
    /// revision advance. Live transactions and log replay both come through here.
    pub(super) fn apply(&mut self, ops: &[Op], events: &mut Vec<Event>) -> bool {
        let rev = self.revision + 1;
        let mut written = Vec::new();
        for op in ops {
            let prev = self.current(op.key());
            let version = match op {
                Op::Put { value, .. } => Version {
                    revision: rev,
                    create_revision: prev.as_ref().map_or(rev, |p| p.create_revision),
                    version: prev.as_ref().map_or(1, |p| p.version + 1),
                    value: Some(Arc::from(value.as_slice())),
                },
                Op::Delete { .. } if prev.is_none() => continue,
                Op::Delete { .. } => Version {
                    revision: rev,
                    create_revision: 0,
                    version: 0,
                    value: None,
                },
            };
            let key = op.key();
            events.push(version.event(key, prev));
            self.bytes += version.size() + key.len();
            self.keys.entry(key.to_vec()).or_default().push(version);
            written.push(key.to_vec());
        }
        if written.is_empty() {
            return false;
        }
        self.log.insert(rev, written);
        self.revision = rev;
        true
    }

    /// Undoes every revision after `revision` (a batch whose logging failed).
    pub(super) fn rollback(&mut self, revision: i64) {
        let undone: Vec<(i64, Vec<Vec<u8>>)> = self
            .log
            .range(revision + 1..)
            .map(|(r, k)| (*r, k.clone()))
            .collect();
        for (rev, keys) in undone.into_iter().rev() {
            for key in keys {
                if let Some(versions) = self.keys.get_mut(&key) {
                    if versions.last().is_some_and(|v| v.revision == rev)
                        && let Some(v) = versions.pop()
                    {
                        self.bytes = self.bytes.saturating_sub(v.size() + key.len());
                    }
                    if versions.is_empty() {
                        self.keys.remove(&key);
                    }
                }
            }
            self.log.remove(&rev);
        }
        self.revision = revision.min(self.revision);
    }

    /// Checks that a compaction at `revision` is allowed now.
    pub(super) fn check_compact(&self, revision: i64) -> Result<()> {
        if revision > self.revision {
            return Err(Error::FutureRevision {
                requested: revision,
                current: self.revision,
            });
        }
        if revision <= self.compacted {
            return Err(Error::Compacted {
                requested: revision,
                compacted: self.compacted,
            });
        }
        Ok(())
    }

    /// Drops history below `revision`, keeping each key's newest version below it (unless that
    /// is a tombstone), so reads at `revision` and later see every key. Only keys written
    /// below `revision` since the last compaction can have anything to drop.
    pub(super) fn compact(&mut self, revision: i64) {
        if revision <= self.compacted {
            return;
        }
        let old: Vec<i64> = self.log.range(..revision).map(|(r, _)| *r).collect();
        let mut touched: Vec<Vec<u8>> = Vec::new();
        for rev in old {
            if let Some(keys) = self.log.remove(&rev) {
                touched.extend(keys);
            }
        }
        touched.sort_unstable();
        touched.dedup();
        let mut dropped = 0;
        for key in touched {
            let Some(versions) = self.keys.get_mut(&key) else {
                continue;
            };
            let below = versions.partition_point(|v| v.revision < revision);
            let keep_from = match below {
                0 => 0,
                n if versions[n - 1].value.is_none() => n,
                n => n - 1,
            };
            for v in versions.drain(..keep_from) {
                self.bytes = self.bytes.saturating_sub(v.size() + key.len());
                dropped += 1;
            }
            if versions.is_empty() {
                self.keys.remove(&key);
            }
        }
        self.compacted = revision;
        tracing::info!(revision, dropped_versions = dropped, "compacted store");
    }

    /// Rebuilds the events of revisions `from..=to`.
    pub(super) fn events(&self, from: i64, to: i64) -> Vec<Arc<RevisionEvents>> {
        let mut out = Vec::new();
        for (&rev, keys) in self.log.range(from..=to) {
            let mut events = Vec::with_capacity(keys.len());
            for key in keys {
                let Some(versions) = self.keys.get(key) else {
                    continue;
                };
                let Ok(i) = versions.binary_search_by_key(&rev, |v| v.revision) else {
                    continue;
                };
                let prev = i.checked_sub(1).and_then(|p| versions[p].to_kv(key));
                events.push(versions[i].event(key, prev));
            }
            out.push(Arc::new(RevisionEvents {
                revision: rev,
                bytes: events_bytes(&events),
                events,
            }));
        }
        out
    }
}

/// The newest version at or below `at`.
fn version_at(versions: &[Version], at: i64) -> Option<&Version> {
    match versions.last() {
        Some(v) if v.revision <= at => Some(v),
        _ => {
            let i = versions.partition_point(|v| v.revision <= at);
            i.checked_sub(1).map(|i| &versions[i])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollback_undoes_a_batch_exactly() {
        let mut s = State::new();
        let mut ev = Vec::new();
        s.apply(&[Op::put("/a", b"1".to_vec())], &mut ev);
        let before = s.revision;
        let bytes = s.bytes;
        s.apply(
            &[Op::put("/a", b"2".to_vec()), Op::put("/b", b"x".to_vec())],
            &mut ev,
        );
        s.apply(&[Op::delete("/a")], &mut ev);
        s.rollback(before);
        assert_eq!(s.revision, before);
        assert_eq!(s.current(b"/a").unwrap().value, b"1");
        assert!(s.current(b"/b").is_none());
        assert!(!s.keys.contains_key(b"/b".as_slice()));
        assert_eq!(s.bytes, bytes);
        // The next write reuses the undone revision.
        assert!(s.apply(&[Op::put("/c", vec![])], &mut ev));
        assert_eq!(s.revision, before + 1);
    }

    #[test]
    fn compaction_keeps_what_reads_at_the_point_need() {
        let mut s = State::new();
        let mut ev = Vec::new();
        s.apply(&[Op::put("/a", b"1".to_vec())], &mut ev); // 2
        s.apply(&[Op::put("/a", b"2".to_vec())], &mut ev); // 3
        s.apply(&[Op::put("/g", b"g".to_vec())], &mut ev); // 4
        s.apply(&[Op::delete("/g")], &mut ev); // 5
        s.apply(&[Op::put("/a", b"3".to_vec())], &mut ev); // 6
        s.compact(6);
        assert_eq!(
            s.keys[b"/a".as_slice()].len(),
            2,
            "v2 (newest below 6) and v3"
        );
        assert!(
            !s.keys.contains_key(b"/g".as_slice()),
            "deleted before 6: gone"
        );
        let at6 = s.range(&RangeRequest::prefix("/"), 6);
        assert_eq!(at6.kvs.len(), 1);
        assert_eq!(
            s.events(6, 6)[0].events[0].prev.as_ref().unwrap().value,
            b"2"
        );
    }

    #[test]
    fn inverted_range_is_empty() {
        let s = State::new();
        let mut req = RangeRequest::prefix("/b");
        req.range_end = Some(b"/a".to_vec());
        assert_eq!(s.range(&req, 1).count, 0);
    }
}
