//! The embedded backend: a durable multi-version store in the data dir, with no external
//! process.
//!
//! # Design: memory, a write-ahead log, snapshots
//! The state lives in memory ([`state`]): every key with its versions since the last
//! compaction. Durability comes from a write-ahead log ([`wal`]) and periodic snapshots
//! ([`snapshot`]) in the store directory:
//!
//! - **Writes: one writer thread, group commit.** Every transaction goes to a single writer
//!   thread through a channel. The thread takes all requests that are waiting (up to a batch
//!   limit), evaluates and applies them in order, appends the batch to the log as one record
//!   with one `fdatasync`, and only then *publishes* the new revision and answers. Concurrent
//!   writers share fsyncs instead of queueing for one each, and an acknowledged write survives
//!   `kill -9`.
//! - **Reads** run at the published revision, so a batch that is still being logged is never
//!   seen; if logging fails it is rolled back.
//! - **Snapshots** are written when the log has grown past the last snapshot's size (and at
//!   least 64 MiB), then the log is emptied; the cost stays proportional to what was written.
//!   Start-up reads the snapshot and replays the log after it.
//! - **Watches** replay from an in-memory ring of recent revisions, or rebuild older events
//!   from the versions, so every watcher sees every revision in order without gaps.
//!
//! This engine was chosen by measurement over redb (the previous engine, with and without a
//! log in front): see `bench/store/REPORT.md`.
//!
//! The data dir is locked (a `LOCK` file holding the owner's pid) so that a second process gets
//! a clear [`Error::DataDirLocked`]; files that are not ours are reported and left untouched.

mod snapshot;
mod state;
mod wal;

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;

use async_trait::async_trait;
use futures::StreamExt;
use parking_lot::RwLock;
use tokio::sync::{mpsc, oneshot, watch};

use self::state::{RevisionEvents, State, events_bytes};
use self::wal::{Entry, EntryRef, Wal};
use crate::{
    Error, Event, Op, RangeRequest, RangeResponse, Result, Store, Txn, TxnResponse, WatchStream,
};

pub use self::snapshot::SNAPSHOT_FILE;
pub use self::wal::WAL_FILE;

const LOCK_FILE: &str = "LOCK";

/// Most transactions applied in one batch.
const MAX_BATCH_TXNS: usize = 1024;
/// Most value bytes applied in one batch (a batch always takes at least one transaction).
const MAX_BATCH_BYTES: usize = 32 << 20;
/// Revisions kept in the watch ring.
const RING_REVISIONS: usize = 16 * 1024;
/// Value bytes kept in the watch ring.
const RING_BYTES: usize = 64 << 20;
/// Revisions a lagging watcher rebuilds in one go.
const CATCH_UP_CHUNK: i64 = 512;
/// Buffered batches per watcher before it waits for its reader.
const WATCH_CHANNEL: usize = 256;
/// The log is not snapshotted before it reaches this size.
const MIN_SNAPSHOT_LOG_BYTES: u64 = 64 << 20;

/// Options for opening an [`EmbeddedStore`].
#[derive(Clone, Debug)]
pub struct Options {
    /// The log is snapshotted once it is larger than both this and the last snapshot.
    pub min_snapshot_log_bytes: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            min_snapshot_log_bytes: MIN_SNAPSHOT_LOG_BYTES,
        }
    }
}

/// The embedded store. Cheap to clone; the store closes when the last clone is dropped.
#[derive(Clone)]
pub struct EmbeddedStore {
    shared: Arc<Shared>,
    writer: mpsc::Sender<WriteRequest>,
}

/// What the store, its watchers and its writer thread share.
struct Shared {
    dir: PathBuf,
    state: RwLock<State>,
    /// The newest durable revision: what readers see and watchers wait on.
    published: watch::Receiver<i64>,
    /// The durable compaction point.
    compacted: AtomicI64,
    /// Events of the newest revisions, for watchers.
    ring: RwLock<Ring>,
    /// Held for the store's lifetime: the data dir lock.
    _lock: File,
}

enum WriteRequest {
    Txn(Txn, oneshot::Sender<Result<TxnResponse>>),
    Compact(i64, oneshot::Sender<Result<()>>),
}

impl EmbeddedStore {
    /// Opens (or creates) the store in directory `dir`: reads its snapshot and replays its log.
    ///
    /// Fails with [`Error::DataDirLocked`] when another process has it open, and with
    /// [`Error::Corrupt`] when a file in it is not a readable store file (which is then left
    /// untouched).
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(dir, Options::default())
    }

    /// [`EmbeddedStore::open`] with options.
    pub fn open_with(dir: impl AsRef<Path>, options: Options) -> Result<Self> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            action: "create store dir",
            path: dir.to_path_buf(),
            source,
        })?;
        let lock = lock_dir(dir)?;
        let started = Instant::now();
        let (mut state, snapshot_bytes) = match snapshot::read(dir)? {
            Some((state, bytes)) => (state, bytes),
            None => (State::new(), 0),
        };
        let (wal, entries) = Wal::open(dir)?;
        let replayed = replay(&mut state, entries, &dir.join(WAL_FILE))?;
        tracing::info!(
            dir = %dir.display(),
            revision = state.revision,
            compacted = state.compacted,
            keys = state.keys.len(),
            replayed,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "opened embedded store"
        );

        let revision = state.revision;
        let (published_tx, published) = watch::channel(revision);
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            compacted: AtomicI64::new(state.compacted),
            state: RwLock::new(state),
            published,
            ring: RwLock::new(Ring::default()),
            _lock: lock,
        });
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH_TXNS);
        let writer = Writer {
            shared: shared.clone(),
            published: published_tx,
            wal,
            snapshot_bytes,
            min_snapshot_log_bytes: options.min_snapshot_log_bytes,
            poisoned: None,
        };
        std::thread::Builder::new()
            .name("rkube-store-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|source| Error::Io {
                action: "start store writer thread",
                path: dir.to_path_buf(),
                source,
            })?;
        Ok(Self { shared, writer: tx })
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    async fn submit<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T>>) -> WriteRequest,
    ) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(make(tx))
            .await
            .map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }
}

/// Applies the log entries the snapshot does not already hold. Returns how many.
fn replay(state: &mut State, entries: Vec<Entry>, path: &Path) -> Result<usize> {
    let mut replayed = 0;
    let mut events = Vec::new();
    for entry in entries {
        match entry {
            Entry::Txn { revision, .. } if revision <= state.revision => {}
            Entry::Txn { revision, ops } => {
                if revision != state.revision + 1 {
                    return Err(Error::Corrupt {
                        path: path.to_path_buf(),
                        message: format!(
                            "write-ahead log jumps from revision {} to {revision}",
                            state.revision
                        ),
                    });
                }
                events.clear();
                state.apply(&ops, &mut events);
                replayed += 1;
            }
            Entry::Compact { revision } => state.compact(revision),
        }
    }
    Ok(replayed)
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn current_revision(&self) -> Result<i64> {
        Ok(*self.shared.published.borrow())
    }

    async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        let published = *self.shared.published.borrow();
        let compacted = self.shared.compacted.load(Ordering::Acquire);
        let at = match req.revision {
            0 => published,
            r if r > published => {
                return Err(Error::FutureRevision {
                    requested: r,
                    current: published,
                });
            }
            r if r < compacted => {
                return Err(Error::Compacted {
                    requested: r,
                    compacted,
                });
            }
            r => r,
        };
        // Large ranges copy many values: keep them off the async worker threads.
        let shared = self.shared.clone();
        let read = move || shared.state.read().range(&req, at);
        if self.shared.state.read().keys.len() > 1024 {
            tokio::task::spawn_blocking(read)
                .await
                .map_err(|e| Error::Backend(format!("range task failed: {e}")))
        } else {
            Ok(read())
        }
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        txn.validate()?;
        self.submit(|tx| WriteRequest::Txn(txn, tx)).await
    }

    async fn watch(&self, prefix: &[u8], after_revision: i64) -> Result<WatchStream> {
        let compacted = self.shared.compacted.load(Ordering::Acquire);
        if after_revision + 1 < compacted {
            return Err(Error::Compacted {
                requested: after_revision + 1,
                compacted,
            });
        }
        let (tx, rx) = mpsc::channel(WATCH_CHANNEL);
        let shared = self.shared.clone();
        let prefix = prefix.to_vec();
        tokio::spawn(async move {
            if let Err(err) = run_watcher(&shared, &prefix, after_revision, &tx).await {
                let _ = tx.send(Err(err)).await;
            }
        });
        Ok(tokio_stream::wrappers::ReceiverStream::new(rx).boxed())
    }

    async fn compact(&self, revision: i64) -> Result<()> {
        self.submit(|tx| WriteRequest::Compact(revision, tx)).await
    }

    async fn compacted_revision(&self) -> Result<i64> {
        Ok(self.shared.compacted.load(Ordering::Acquire))
    }
}

// === the data dir lock ===

/// Locks directory `dir` for this process (a `LOCK` file inside it, holding our pid) until
/// the returned file is dropped. Fails with [`Error::DataDirLocked`] when another process
/// holds it.
pub fn lock_dir(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|source| Error::Io {
            action: "open lock file",
            path: path.clone(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(Error::DataDirLocked {
                path: dir.to_path_buf(),
                holder: text.trim().parse().ok(),
            });
        }
        Err(std::fs::TryLockError::Error(source)) => {
            return Err(Error::Io {
                action: "lock",
                path,
                source,
            });
        }
    }
    // Record our pid for the error message another process would print.
    let _ = file.set_len(0);
    let _ = file.rewind();
    let _ = write!(file, "{}", std::process::id());
    Ok(file)
}

// === the ring of recent events ===

#[derive(Default)]
struct Ring {
    revisions: VecDeque<Arc<RevisionEvents>>,
    bytes: usize,
}

impl Ring {
    fn push(&mut self, entry: Arc<RevisionEvents>) {
        self.bytes += entry.bytes;
        self.revisions.push_back(entry);
        while self.revisions.len() > RING_REVISIONS
            || (self.bytes > RING_BYTES && self.revisions.len() > 1)
        {
            if let Some(old) = self.revisions.pop_front() {
                self.bytes -= old.bytes;
            }
        }
    }

    /// Events of revisions `from..=to`, or None when `from` is older than the ring.
    fn get(&self, from: i64, to: i64) -> Option<Vec<Arc<RevisionEvents>>> {
        let first = self.revisions.front()?.revision;
        if from < first {
            return None;
        }
        // Revisions in the ring are consecutive, so the index is an offset.
        let start = (from - first) as usize;
        Some(
            self.revisions
                .iter()
                .skip(start)
                .take_while(|r| r.revision <= to)
                .cloned()
                .collect(),
        )
    }
}

// === watchers ===

async fn run_watcher(
    shared: &Arc<Shared>,
    prefix: &[u8],
    after_revision: i64,
    tx: &mpsc::Sender<Result<Vec<Event>>>,
) -> Result<()> {
    let mut published = shared.published.clone();
    let mut next = after_revision + 1;
    loop {
        let current = *published.borrow_and_update();
        while next <= current {
            let compacted = shared.compacted.load(Ordering::Acquire);
            if next < compacted {
                return Err(Error::Compacted {
                    requested: next,
                    compacted,
                });
            }
            let to = current.min(next + CATCH_UP_CHUNK - 1);
            let cached = shared.ring.read().get(next, to);
            let batch = match cached {
                Some(batch) => batch,
                None => shared.state.read().events(next, to),
            };
            for entry in &batch {
                let events: Vec<Event> = entry
                    .events
                    .iter()
                    .filter(|e| e.kv.key.starts_with(prefix))
                    .cloned()
                    .collect();
                if !events.is_empty() && tx.send(Ok(events)).await.is_err() {
                    return Ok(()); // the watcher was dropped
                }
            }
            next = to + 1;
        }
        tokio::select! {
            changed = published.changed() => {
                if changed.is_err() {
                    return Err(Error::Closed);
                }
            }
            () = tx.closed() => return Ok(()),
        }
    }
}

// === the writer ===

struct Writer {
    shared: Arc<Shared>,
    published: watch::Sender<i64>,
    wal: Wal,
    /// Size of the last snapshot: the log is snapshotted once it outgrows it.
    snapshot_bytes: u64,
    /// See [`Options::min_snapshot_log_bytes`].
    min_snapshot_log_bytes: u64,
    /// Set when the log could not be rolled back after a failed append: every later write
    /// fails until a restart.
    poisoned: Option<String>,
}

/// What one request of a batch produced, answered once the batch is durable.
enum Applied {
    Txn {
        reply: oneshot::Sender<Result<TxnResponse>>,
        result: TxnResponse,
        /// The transaction, kept for the log record when it wrote something.
        logged: Option<Txn>,
        events: Vec<Event>,
    },
    Compact {
        reply: oneshot::Sender<Result<()>>,
        result: Result<()>,
    },
}

impl Applied {
    fn fail(self, err: &Error) {
        let err = || Error::Backend(err.to_string());
        match self {
            Applied::Txn { reply, .. } => drop(reply.send(Err(err()))),
            Applied::Compact { reply, .. } => drop(reply.send(Err(err()))),
        }
    }
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<WriteRequest>) {
        let mut batch = Vec::with_capacity(MAX_BATCH_TXNS);
        while let Some(first) = rx.blocking_recv() {
            batch.push(first);
            let mut bytes = 0;
            while batch.len() < MAX_BATCH_TXNS && bytes < MAX_BATCH_BYTES {
                match rx.try_recv() {
                    Ok(req) => {
                        if let WriteRequest::Txn(txn, _) = &req {
                            bytes += txn_bytes(txn);
                        }
                        batch.push(req);
                    }
                    Err(_) => break,
                }
            }
            self.commit_batch(&mut batch);
            let snapshot_due =
                self.wal.len() >= self.min_snapshot_log_bytes.max(self.snapshot_bytes);
            if snapshot_due && let Err(err) = self.snapshot() {
                tracing::warn!(
                    ?err,
                    "snapshot failed; the log keeps growing until one succeeds"
                );
            }
        }
        // Clean shutdown: one snapshot, so the next start has no log to replay.
        if self.poisoned.is_none()
            && !self.wal.is_empty()
            && let Err(err) = self.snapshot()
        {
            tracing::warn!(
                ?err,
                "final snapshot failed; the log will be replayed at the next start"
            );
        }
        tracing::debug!(dir = %self.shared.dir.display(), "store writer stopped");
    }

    /// Writes a snapshot of the whole state, then empties the log.
    fn snapshot(&mut self) -> Result<()> {
        let started = Instant::now();
        let bytes = snapshot::write(&self.shared.dir, &self.shared.state.read())?;
        self.wal.reset()?;
        self.snapshot_bytes = bytes;
        tracing::info!(
            bytes,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "wrote store snapshot"
        );
        Ok(())
    }

    fn commit_batch(&mut self, batch: &mut Vec<WriteRequest>) {
        if let Some(reason) = &self.poisoned {
            let err = Error::Backend(format!(
                "store stopped taking writes after an earlier failure ({reason}); restart rkube to recover"
            ));
            for req in batch.drain(..) {
                match req {
                    WriteRequest::Txn(_, reply) => {
                        drop(reply.send(Err(Error::Backend(err.to_string()))))
                    }
                    WriteRequest::Compact(_, reply) => {
                        drop(reply.send(Err(Error::Backend(err.to_string()))))
                    }
                }
            }
            return;
        }
        let published = *self.published.borrow();
        let mut applied = Vec::with_capacity(batch.len());
        let mut compactions = Vec::new();
        {
            let mut state = self.shared.state.write();
            for req in batch.drain(..) {
                applied.push(match req {
                    WriteRequest::Txn(txn, reply) => {
                        let (result, events) = apply_txn(&mut state, &txn);
                        Applied::Txn {
                            reply,
                            logged: (!events.is_empty()).then_some(txn),
                            result,
                            events,
                        }
                    }
                    WriteRequest::Compact(revision, reply) => {
                        // Checked now, in order; done once the batch is durable.
                        let pending = compactions.last().copied().unwrap_or(state.compacted);
                        let result = if revision <= pending {
                            Err(Error::Compacted {
                                requested: revision,
                                compacted: pending,
                            })
                        } else {
                            state.check_compact(revision)
                        };
                        if result.is_ok() {
                            compactions.push(revision);
                        }
                        Applied::Compact { reply, result }
                    }
                });
            }
        }

        // One log record for the batch, in order. Compactions are logged where they were
        // asked for: replay then reaches the same state.
        let mut entries = Vec::new();
        let mut next_compaction = compactions.iter();
        for a in &applied {
            match a {
                Applied::Txn {
                    logged: Some(txn),
                    events,
                    ..
                } => entries.push(EntryRef::Txn(events[0].revision(), &txn.ops)),
                Applied::Compact { result: Ok(()), .. } => {
                    if let Some(&rev) = next_compaction.next() {
                        entries.push(EntryRef::Compact(rev));
                    }
                }
                _ => {}
            }
        }
        if !entries.is_empty()
            && let Err(err) = self.wal.append(&entries)
        {
            tracing::error!(
                ?err,
                "could not log the batch; it was rolled back and not acknowledged"
            );
            self.shared.state.write().rollback(published);
            if !self.wal.is_consistent() {
                self.poisoned = Some(err.to_string());
            }
            applied.into_iter().for_each(|a| a.fail(&err));
            return;
        }

        // Durable: apply the compactions, publish the events, then answer.
        if let Some(&last) = compactions.last() {
            let mut state = self.shared.state.write();
            for &rev in &compactions {
                state.compact(rev);
            }
            self.shared.compacted.store(last, Ordering::Release);
        }
        let revision = self.shared.state.read().revision;
        {
            let mut ring = self.shared.ring.write();
            for a in &mut applied {
                if let Applied::Txn { events, .. } = a
                    && let Some(first) = events.first()
                {
                    let revision = first.revision();
                    let events = std::mem::take(events);
                    ring.push(Arc::new(RevisionEvents {
                        revision,
                        bytes: events_bytes(&events),
                        events,
                    }));
                }
            }
        }
        self.published.send_replace(revision);
        for a in applied {
            match a {
                Applied::Txn { reply, result, .. } => drop(reply.send(Ok(result))),
                Applied::Compact { reply, result } => drop(reply.send(result)),
            }
        }
    }
}

/// Evaluates one transaction against the newest applied state and applies it if its compares
/// hold. Returns the response and the events it produced.
fn apply_txn(state: &mut State, txn: &Txn) -> (TxnResponse, Vec<Event>) {
    let succeeded = txn
        .compares
        .iter()
        .all(|c| state.mod_revision(&c.key) == c.mod_revision);
    let mut events = Vec::new();
    if !succeeded {
        let current = txn.compares.iter().map(|c| state.current(&c.key)).collect();
        return (
            TxnResponse {
                succeeded: false,
                revision: state.revision,
                current,
            },
            events,
        );
    }
    state.apply(&txn.ops, &mut events);
    (
        TxnResponse {
            succeeded: true,
            revision: state.revision,
            current: Vec::new(),
        },
        events,
    )
}

fn txn_bytes(txn: &Txn) -> usize {
    txn.ops
        .iter()
        .map(|op| match op {
            Op::Put { key, value } => key.len() + value.len(),
            Op::Delete { key } => key.len(),
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_evicts_oldest_and_serves_by_offset() {
        let mut ring = Ring::default();
        for rev in 2..(2 + RING_REVISIONS as i64 + 10) {
            ring.push(Arc::new(RevisionEvents {
                revision: rev,
                events: vec![],
                bytes: 1,
            }));
        }
        assert_eq!(ring.revisions.len(), RING_REVISIONS);
        assert!(ring.get(2, 5).is_none(), "evicted revisions are rebuilt");
        let got = ring.get(20, 22).unwrap();
        assert_eq!(
            got.iter().map(|r| r.revision).collect::<Vec<_>>(),
            vec![20, 21, 22]
        );
    }
}
