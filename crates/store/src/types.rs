//! Request and response types shared by every backend.

/// The largest value a key may hold: 1.5 MiB, etcd's default request limit.
/// Larger writes are refused with [`crate::Error::ValueTooLarge`] by every backend.
pub const MAX_VALUE_SIZE: usize = 1536 * 1024;

/// One key with its value and revisions.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: Vec<u8>,
    /// The value (empty in a delete event's `kv`).
    pub value: Vec<u8>,
    /// Revision of the write that created this key (since it last did not exist).
    pub create_revision: i64,
    /// Revision of the last write to this key (for a delete event: the deletion's revision).
    pub mod_revision: i64,
    /// Number of writes since creation: 1 after create, +1 per update, 0 once deleted.
    pub version: i64,
}

impl std::fmt::Debug for KeyValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyValue")
            .field("key", &String::from_utf8_lossy(&self.key))
            .field("value_len", &self.value.len())
            .field("create_revision", &self.create_revision)
            .field("mod_revision", &self.mod_revision)
            .field("version", &self.version)
            .finish()
    }
}

/// What happened to a key in a watch event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// Created or updated.
    Put,
    /// Deleted.
    Delete,
}

/// One change delivered by a watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Put or delete.
    pub kind: EventKind,
    /// The key after the change. For a delete: key, the deletion revision as `mod_revision`,
    /// empty value, version 0.
    pub kv: KeyValue,
    /// The key before the change, if it existed (always present for a delete).
    pub prev: Option<KeyValue>,
}

impl Event {
    /// The revision at which this change was committed.
    pub fn revision(&self) -> i64 {
        self.kv.mod_revision
    }
}

/// The end of the key range that holds every key starting with `prefix`
/// (etcd's "prefix end": the prefix with its last byte incremented).
/// An empty result means "no upper bound".
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    Vec::new()
}

/// A read of one key or of a key range `[key, range_end)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeRequest {
    /// First key (inclusive).
    pub key: Vec<u8>,
    /// End of the range (exclusive). `None`: only `key` itself. `Some(empty)`: no upper bound.
    pub range_end: Option<Vec<u8>>,
    /// At most this many keys (0: no limit).
    pub limit: usize,
    /// Read at this revision (0: the newest).
    pub revision: i64,
}

impl RangeRequest {
    /// Reads exactly one key.
    pub fn key(key: impl AsRef<[u8]>) -> Self {
        Self {
            key: key.as_ref().to_vec(),
            ..Self::default()
        }
    }

    /// Reads every key starting with `prefix`.
    pub fn prefix(prefix: impl AsRef<[u8]>) -> Self {
        let prefix = prefix.as_ref();
        Self {
            key: prefix.to_vec(),
            range_end: Some(prefix_end(prefix)),
            ..Self::default()
        }
    }

    /// Returns at most `limit` keys; the response says whether there are more.
    #[must_use]
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// Reads at a fixed past revision (0: the newest).
    #[must_use]
    pub fn at_revision(mut self, revision: i64) -> Self {
        self.revision = revision;
        self
    }

    /// Continues a paged read: starts strictly after `last_key`, the last key of the previous
    /// page. Use it together with the previous response's revision.
    #[must_use]
    pub fn after(mut self, last_key: &[u8]) -> Self {
        let mut key = last_key.to_vec();
        key.push(0);
        self.key = key;
        self
    }

    /// Whether `key` lies in this request's range.
    pub fn contains(&self, key: &[u8]) -> bool {
        match &self.range_end {
            None => key == self.key.as_slice(),
            Some(end) => key >= self.key.as_slice() && (end.is_empty() || key < end.as_slice()),
        }
    }
}

/// The result of a [`RangeRequest`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeResponse {
    /// The keys found, in key order.
    pub kvs: Vec<KeyValue>,
    /// Whether the range holds more keys than `limit` let through.
    pub more: bool,
    /// How many keys the whole range holds (ignoring `limit`).
    pub count: usize,
    /// The revision the read was served at.
    pub revision: i64,
}

/// A condition of a transaction: the key's `mod_revision` equals the given one
/// (0 means "the key does not exist").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compare {
    /// The key to check.
    pub key: Vec<u8>,
    /// Its expected `mod_revision` (0: absent).
    pub mod_revision: i64,
}

impl Compare {
    /// Holds when `key` does not exist.
    pub fn absent(key: impl AsRef<[u8]>) -> Self {
        Self::mod_revision(key, 0)
    }

    /// Holds when `key` was last written at `mod_revision` (0: does not exist).
    pub fn mod_revision(key: impl AsRef<[u8]>, mod_revision: i64) -> Self {
        Self {
            key: key.as_ref().to_vec(),
            mod_revision,
        }
    }
}

/// A write in a transaction.
#[derive(Clone, PartialEq, Eq)]
pub enum Op {
    /// Create or replace a key.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The new value.
        value: Vec<u8>,
    },
    /// Delete a key (a no-op if it does not exist).
    Delete {
        /// The key.
        key: Vec<u8>,
    },
}

impl std::fmt::Debug for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Op::Put { key, value } => write!(
                f,
                "Put({:?}, {} bytes)",
                String::from_utf8_lossy(key),
                value.len()
            ),
            Op::Delete { key } => write!(f, "Delete({:?})", String::from_utf8_lossy(key)),
        }
    }
}

impl Op {
    /// A put.
    pub fn put(key: impl AsRef<[u8]>, value: Vec<u8>) -> Self {
        Op::Put {
            key: key.as_ref().to_vec(),
            value,
        }
    }

    /// A delete.
    pub fn delete(key: impl AsRef<[u8]>) -> Self {
        Op::Delete {
            key: key.as_ref().to_vec(),
        }
    }

    /// The key this op writes.
    pub fn key(&self) -> &[u8] {
        match self {
            Op::Put { key, .. } | Op::Delete { key } => key,
        }
    }
}

/// A transaction: if every compare holds, every op is applied under one new revision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Txn {
    /// Conditions, all of which must hold.
    pub compares: Vec<Compare>,
    /// Writes applied when they do. Each key may appear at most once.
    pub ops: Vec<Op>,
}

impl Txn {
    /// An empty transaction.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a condition.
    #[must_use]
    pub fn when(mut self, compare: Compare) -> Self {
        self.compares.push(compare);
        self
    }

    /// Adds a write.
    #[must_use]
    pub fn then(mut self, op: Op) -> Self {
        self.ops.push(op);
        self
    }

    /// Checks what every backend refuses the same way: empty keys, keys written twice, and
    /// values over [`MAX_VALUE_SIZE`].
    pub fn validate(&self) -> crate::Result<()> {
        let mut seen = std::collections::HashSet::new();
        for compare in &self.compares {
            if compare.key.is_empty() {
                return Err(crate::Error::InvalidRequest("empty key in compare".into()));
            }
        }
        for op in &self.ops {
            if op.key().is_empty() {
                return Err(crate::Error::InvalidRequest("empty key in write".into()));
            }
            if !seen.insert(op.key()) {
                return Err(crate::Error::InvalidRequest(format!(
                    "key {:?} is written more than once in one transaction",
                    String::from_utf8_lossy(op.key())
                )));
            }
            if let Op::Put { key, value } = op
                && value.len() > MAX_VALUE_SIZE
            {
                return Err(crate::Error::ValueTooLarge {
                    key: String::from_utf8_lossy(key).into_owned(),
                    size: value.len(),
                    limit: MAX_VALUE_SIZE,
                });
            }
        }
        Ok(())
    }
}

/// The result of a [`Txn`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxnResponse {
    /// Whether every compare held and the ops were applied.
    pub succeeded: bool,
    /// The store's revision after the transaction: the new revision when it wrote something,
    /// the unchanged current revision otherwise.
    pub revision: i64,
    /// When it failed: the current entry of each compared key, in compare order.
    pub current: Vec<Option<KeyValue>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_last_byte() {
        assert_eq!(prefix_end(b"/registry/pods/"), b"/registry/pods0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), Vec::<u8>::new());
    }

    #[test]
    fn range_contains() {
        let r = RangeRequest::prefix("/a/");
        assert!(r.contains(b"/a/x"));
        assert!(!r.contains(b"/b"));
        assert!(RangeRequest::key("k").contains(b"k"));
        assert!(!RangeRequest::key("k").contains(b"k2"));
        assert!(
            RangeRequest::prefix("/a/")
                .after(b"/a/x")
                .contains(b"/a/x\0")
        );
        assert!(!RangeRequest::prefix("/a/").after(b"/a/x").contains(b"/a/x"));
    }

    #[test]
    fn validate_refuses_duplicates_and_big_values() {
        let dup = Txn::new().then(Op::delete("k")).then(Op::put("k", vec![]));
        assert!(matches!(
            dup.validate(),
            Err(crate::Error::InvalidRequest(_))
        ));
        let big = Txn::new().then(Op::put("k", vec![0; MAX_VALUE_SIZE + 1]));
        assert!(matches!(
            big.validate(),
            Err(crate::Error::ValueTooLarge { .. })
        ));
        let ok = Txn::new().then(Op::put("k", vec![0; MAX_VALUE_SIZE]));
        assert!(ok.validate().is_ok());
    }
}
