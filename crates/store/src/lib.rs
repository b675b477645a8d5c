//! The state store: a small, etcd v3-shaped key-value interface that the API server keeps
//! every object in, with two backends.
//!
//! - [`embedded::EmbeddedStore`] (the default): a durable store on local disk built on `redb`,
//!   with group commit so that concurrent writers share fsyncs.
//! - [`etcd::EtcdStore`]: a real etcd cluster, for several API servers.
//!
//! The model, shared by both backends, is etcd's:
//! - one global **revision**, bumped once per successful write transaction;
//! - each key carries its `create_revision`, `mod_revision` and `version`
//!   (number of writes since it was created);
//! - reads can be served at a past revision, until that revision is **compacted**;
//! - a **watch** on a prefix delivers every change after a given revision, in order, without
//!   gaps, or fails with [`Error::Compacted`] when that history is gone.
//!
//! Start with the [`Store`] trait. With the `testing` feature, `conformance` is the test suite
//! both backends pass and `testing` starts throwaway etcd servers.

#![deny(unsafe_code)]

#[cfg(feature = "testing")]
pub mod conformance;
pub mod embedded;
mod error;
pub mod etcd;
#[cfg(feature = "testing")]
pub mod testing;
mod types;

pub use self::error::{Error, Result};
pub use self::types::{
    Compare, Event, EventKind, KeyValue, MAX_VALUE_SIZE, Op, RangeRequest, RangeResponse, Txn,
    TxnResponse, prefix_end,
};

use async_trait::async_trait;
use futures::stream::BoxStream;

/// A stream of watch events. Each item is the batch of events of one revision (one write
/// transaction), in revision order. An `Err` item ends the stream.
pub type WatchStream = BoxStream<'static, Result<Vec<Event>>>;

/// The store interface every backend implements. All methods are safe to call concurrently.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The newest revision: the revision of the last committed write (or the initial revision
    /// of an empty store).
    async fn current_revision(&self) -> Result<i64>;

    /// Reads keys. See [`RangeRequest`] for prefix, limit, continuation and revision.
    async fn range(&self, req: RangeRequest) -> Result<RangeResponse>;

    /// Reads one key at the newest revision.
    async fn get(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        let resp = self.range(RangeRequest::key(key)).await?;
        Ok(resp.kvs.into_iter().next())
    }

    /// Runs a transaction: if every compare holds, applies every op under one new revision.
    /// Otherwise nothing is written and the response carries the current state of the
    /// compared keys.
    async fn txn(&self, txn: Txn) -> Result<TxnResponse>;

    /// Watches every key starting with `prefix` and delivers every change with a revision
    /// greater than `after_revision`. Fails (as the first stream item, or at once) with
    /// [`Error::Compacted`] when part of that history has been compacted away.
    async fn watch(&self, prefix: &[u8], after_revision: i64) -> Result<WatchStream>;

    /// Discards history older than `revision`: reads at and watches from earlier revisions
    /// fail with [`Error::Compacted`] afterwards. The newest state of every key is kept.
    async fn compact(&self, revision: i64) -> Result<()>;

    /// The oldest revision still readable (the last compaction point; 0 if never compacted).
    async fn compacted_revision(&self) -> Result<i64>;

    // --- conveniences built on `txn`, the three CAS shapes the API server uses ---

    /// Creates `key` only if it does not exist. Returns the new revision, or
    /// [`Error::AlreadyExists`] with the existing entry.
    async fn create(&self, key: &[u8], value: Vec<u8>) -> Result<i64> {
        let resp = self
            .txn(
                Txn::new()
                    .when(Compare::absent(key))
                    .then(Op::put(key, value)),
            )
            .await?;
        if resp.succeeded {
            Ok(resp.revision)
        } else {
            Err(Error::AlreadyExists {
                key: String::from_utf8_lossy(key).into_owned(),
                current: resp.current.into_iter().next().flatten().map(Box::new),
            })
        }
    }

    /// Replaces `key` only if its `mod_revision` is still `expected_mod_revision`.
    /// Returns the new revision, or [`Error::Conflict`] with the current entry (None when the
    /// key is gone).
    async fn update(&self, key: &[u8], value: Vec<u8>, expected_mod_revision: i64) -> Result<i64> {
        let resp = self
            .txn(
                Txn::new()
                    .when(Compare::mod_revision(key, expected_mod_revision))
                    .then(Op::put(key, value)),
            )
            .await?;
        if resp.succeeded {
            Ok(resp.revision)
        } else {
            Err(Error::Conflict {
                key: String::from_utf8_lossy(key).into_owned(),
                current: resp.current.into_iter().next().flatten().map(Box::new),
            })
        }
    }

    /// Deletes `key` only if its `mod_revision` is still `expected_mod_revision`.
    /// Returns the new revision, or [`Error::Conflict`] with the current entry.
    async fn delete(&self, key: &[u8], expected_mod_revision: i64) -> Result<i64> {
        let resp = self
            .txn(
                Txn::new()
                    .when(Compare::mod_revision(key, expected_mod_revision))
                    .then(Op::delete(key)),
            )
            .await?;
        if resp.succeeded {
            Ok(resp.revision)
        } else {
            Err(Error::Conflict {
                key: String::from_utf8_lossy(key).into_owned(),
                current: resp.current.into_iter().next().flatten().map(Box::new),
            })
        }
    }
}
