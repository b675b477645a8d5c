//! The store's error type.

use std::path::PathBuf;

use crate::KeyValue;

/// A store result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a store operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The requested revision was compacted away.
    #[error("revision {requested} has been compacted (oldest available: {compacted})")]
    Compacted {
        /// The revision asked for.
        requested: i64,
        /// The compaction point: revisions below it are gone.
        compacted: i64,
    },

    /// The requested revision is newer than the store's newest.
    #[error("revision {requested} is newer than the current revision {current}")]
    FutureRevision {
        /// The revision asked for.
        requested: i64,
        /// The store's current revision.
        current: i64,
    },

    /// A value is over [`crate::MAX_VALUE_SIZE`].
    #[error("value for key {key:?} is {size} bytes, over the limit of {limit} bytes")]
    ValueTooLarge {
        /// The key.
        key: String,
        /// The value's size.
        size: usize,
        /// The limit.
        limit: usize,
    },

    /// A create found the key already present.
    #[error("key {key:?} already exists")]
    AlreadyExists {
        /// The key.
        key: String,
        /// Its current entry.
        current: Option<Box<KeyValue>>,
    },

    /// A compare-and-swap found the key changed (or gone).
    #[error("key {key:?} was modified concurrently")]
    Conflict {
        /// The key.
        key: String,
        /// Its current entry (None: it no longer exists).
        current: Option<Box<KeyValue>>,
    },

    /// The request itself is malformed.
    #[error("invalid store request: {0}")]
    InvalidRequest(String),

    /// Another process holds the data directory.
    #[error(
        "data dir {path} is in use by another rkube process{holder}: stop that process or choose another --data-dir",
        holder = holder.map(|pid| format!(" (pid {pid})")).unwrap_or_default()
    )]
    DataDirLocked {
        /// The data directory.
        path: PathBuf,
        /// The holder's pid, when it could be read.
        holder: Option<u32>,
    },

    /// The data on disk cannot be read as a store.
    #[error(
        "store file {path} is corrupt or not an rkube store ({message}): restore it from a backup or move it away to start empty; it was left untouched"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },

    /// A file-system operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done ("create data dir", "open store file", ...).
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },

    /// The backend cannot be reached.
    #[error("store backend {endpoint} is unavailable: {message}")]
    Unavailable {
        /// Where it was expected.
        endpoint: String,
        /// What went wrong.
        message: String,
    },

    /// Any other backend failure.
    #[error("store backend error: {0}")]
    Backend(String),

    /// The store was closed.
    #[error("store is closed")]
    Closed,
}
