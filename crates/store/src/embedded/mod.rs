//! The embedded backend: a durable multi-version store in one `redb` file under the data dir.
//!
//! # Layout
//! Four redb tables hold an etcd-style MVCC history:
//! - `meta`: the current revision and the compaction point;
//! - `kv`: every existing key → the revision of its newest version (the fast path for reads at
//!   the newest revision);
//! - `history`: `(key, revision)` → that version (create revision, version, value) or a
//!   tombstone. Reads at a past revision take each key's newest version at or below it;
//! - `log`: revision → the keys that revision wrote, which is what watches replay.
//!
//! # Writes: one writer thread, group commit
//! Every transaction goes to a single writer thread through a channel. The thread takes all
//! requests that are waiting (up to a batch limit), applies them in order in one redb write
//! transaction, commits once (one fsync for the whole batch) and only then answers them. So an
//! acknowledged write is on disk, and many concurrent writers share fsyncs instead of queueing
//! for one each.
//!
//! # Watches
//! After each commit the writer appends the batch's events to an in-memory ring of recent
//! revisions and publishes the new revision. A watcher replays from the ring, or from the `log`
//! and `history` tables when it is behind the ring, so every watcher sees every revision in
//! order without gaps, however slowly it reads.
//!
//! The data dir is locked (a `LOCK` file holding the owner's pid) so that a second process gets
//! a clear [`Error::DataDirLocked`] instead of a corrupted store.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use async_trait::async_trait;
use futures::StreamExt;
use parking_lot::RwLock;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{mpsc, oneshot, watch};

mod wal;

use self::wal::Wal;
use crate::{
    Error, Event, EventKind, KeyValue, Op, RangeRequest, RangeResponse, Result, Store, Txn,
    TxnResponse, WatchStream,
};

const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
const KV: TableDefinition<'_, &[u8], u64> = TableDefinition::new("kv");
const HISTORY: TableDefinition<'_, (&[u8], u64), &[u8]> = TableDefinition::new("history");
const LOG: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("log");

const META_REVISION: &str = "revision";
const META_COMPACTED: &str = "compacted";
const META_FORMAT: &str = "format";
/// Bumped when the on-disk layout changes incompatibly.
const FORMAT_VERSION: u64 = 1;

/// The file name of the store inside its directory.
pub const STORE_FILE: &str = "state.redb";
const LOCK_FILE: &str = "LOCK";

/// Most transactions applied in one commit.
const MAX_BATCH_TXNS: usize = 1024;
/// Most value bytes applied in one commit (a batch always takes at least one transaction).
const MAX_BATCH_BYTES: usize = 32 << 20;
/// Revisions kept in memory for watchers.
const RING_REVISIONS: usize = 16 * 1024;
/// Value bytes kept in memory for watchers.
const RING_BYTES: usize = 64 << 20;
/// Revisions a lagging watcher reads from disk in one go.
const CATCH_UP_CHUNK: i64 = 512;
/// Log size that triggers a checkpoint (a durable redb commit that empties the log).
const WAL_CHECKPOINT_BYTES: u64 = 64 << 20;
/// Longest time between checkpoints while writes come in.
const WAL_CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);
/// Buffered batches per watcher before it waits for its reader.
const WATCH_CHANNEL: usize = 256;

/// Options for opening an [`EmbeddedStore`].
#[derive(Clone, Debug)]
pub struct Options {
    /// redb page cache size in bytes.
    pub cache_size: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            cache_size: 256 << 20,
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
    db: Database,
    path: PathBuf,
    /// Events of the newest revisions, for watchers.
    ring: RwLock<Ring>,
    /// The compaction point (0: never compacted).
    compacted: AtomicI64,
    /// The newest committed revision; watchers wait on it.
    revision: watch::Receiver<i64>,
    /// Held for the store's lifetime: the data dir lock.
    _lock: File,
}

enum WriteRequest {
    Txn(Txn, oneshot::Sender<Result<TxnResponse>>),
    Compact(i64, oneshot::Sender<Result<()>>),
}

impl EmbeddedStore {
    /// Opens (or creates) the store in directory `dir` with default options.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(dir, Options::default())
    }

    /// Opens (or creates) the store in directory `dir`.
    ///
    /// Fails with [`Error::DataDirLocked`] when another process has it open, and with
    /// [`Error::Corrupt`] when the file is not a readable store (which is then left untouched).
    pub fn open_with(dir: impl AsRef<Path>, options: Options) -> Result<Self> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            action: "create store dir",
            path: dir.to_path_buf(),
            source,
        })?;
        let lock = lock_dir(dir)?;
        let path = dir.join(STORE_FILE);
        let is_new = !path.exists();
        if !is_new {
            check_existing(&path)?;
        }
        let db = redb::Builder::new()
            .set_cache_size(options.cache_size)
            .create(&path)
            .map_err(|err| map_open_error(&path, err))?;
        if is_new {
            // Make the new file's directory entry durable too.
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        let (revision, compacted) = init_or_check(&db, &path)?;
        let (mut wal, logged) = Wal::open(dir)?;
        let revision = replay_wal(&db, &path, revision, logged)?;
        wal.reset()?;
        tracing::info!(path = %path.display(), revision, compacted, "opened embedded store");

        let (rev_tx, rev_rx) = watch::channel(revision);
        let shared = Arc::new(Shared {
            db,
            path,
            ring: RwLock::new(Ring::default()),
            compacted: AtomicI64::new(compacted),
            revision: rev_rx,
            _lock: lock,
        });
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH_TXNS);
        let writer_shared = shared.clone();
        std::thread::Builder::new()
            .name("rkube-store-writer".into())
            .spawn(move || {
                Writer {
                    shared: writer_shared,
                    revision_tx: rev_tx,
                    revision,
                    wal,
                    last_checkpoint: std::time::Instant::now(),
                    poisoned: None,
                }
                .run(rx)
            })
            .map_err(|source| Error::Io {
                action: "start store writer thread",
                path: dir.to_path_buf(),
                source,
            })?;
        Ok(Self { shared, writer: tx })
    }

    /// The path of the store file.
    pub fn path(&self) -> &Path {
        &self.shared.path
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

#[async_trait]
impl Store for EmbeddedStore {
    async fn current_revision(&self) -> Result<i64> {
        Ok(*self.shared.revision.borrow())
    }

    async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        let shared = self.shared.clone();
        blocking(move || shared.range(&req)).await
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

/// Runs blocking redb work off the async runtime.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|err| Error::Backend(format!("store task failed: {err}")))?
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

fn map_open_error(path: &Path, err: redb::DatabaseError) -> Error {
    match err {
        redb::DatabaseError::DatabaseAlreadyOpen => Error::DataDirLocked {
            path: path.parent().unwrap_or(path).to_path_buf(),
            holder: None,
        },
        redb::DatabaseError::Storage(redb::StorageError::Io(source))
            if source.kind() != std::io::ErrorKind::InvalidData =>
        {
            Error::Io {
                action: "open store file",
                path: path.to_path_buf(),
                source,
            }
        }
        other => corrupt(path, other),
    }
}

fn backend(err: impl std::fmt::Display) -> Error {
    Error::Backend(err.to_string())
}

/// Checks an existing store file without writing to it, so that a foreign or damaged file is
/// reported and left as it was. A file that only needs crash recovery passes: opening it for
/// writing recovers it.
fn check_existing(path: &Path) -> Result<()> {
    match redb::Builder::new().open_read_only(path) {
        Ok(db) => {
            let read = db.begin_read().map_err(|e| corrupt(path, e))?;
            check_tables(&read, path).map(|_| ())
        }
        Err(redb::DatabaseError::RepairAborted) => {
            tracing::warn!(path = %path.display(), "store was not closed cleanly; recovering");
            Ok(())
        }
        Err(err) => Err(map_open_error(path, err)),
    }
}

fn corrupt(path: &Path, err: impl std::fmt::Display) -> Error {
    Error::Corrupt {
        path: path.to_path_buf(),
        message: err.to_string(),
    }
}

/// Reads the current revision and compaction point of one of our stores; `None` for a file
/// with no tables at all (a new store); [`Error::Corrupt`] for anything else.
fn check_tables(read: &redb::ReadTransaction, path: &Path) -> Result<Option<(i64, i64)>> {
    match read.open_table(META) {
        Ok(meta) => {
            let get = |name: &str| -> Result<Option<u64>> {
                Ok(meta
                    .get(name)
                    .map_err(|e| corrupt(path, e))?
                    .map(|v| v.value()))
            };
            let format = get(META_FORMAT)?;
            if format != Some(FORMAT_VERSION) {
                return Err(corrupt(
                    path,
                    format!("store format {format:?}, this rkube reads format {FORMAT_VERSION}"),
                ));
            }
            let revision = get(META_REVISION)?.ok_or_else(|| corrupt(path, "no revision"))?;
            let compacted = get(META_COMPACTED)?.unwrap_or(0);
            Ok(Some((revision as i64, compacted as i64)))
        }
        Err(redb::TableError::TableDoesNotExist(_)) => {
            let tables = read.list_tables().map_err(|e| corrupt(path, e))?;
            if tables.count() > 0 {
                return Err(corrupt(path, "the file holds tables of another program"));
            }
            Ok(None)
        }
        Err(err) => Err(corrupt(path, err)),
    }
}

/// Creates the tables of a new store, or reads the state of an existing one.
/// Returns the current revision and the compaction point.
fn init_or_check(db: &Database, path: &Path) -> Result<(i64, i64)> {
    {
        let read = db.begin_read().map_err(backend)?;
        if let Some(state) = check_tables(&read, path)? {
            return Ok(state);
        }
    }
    let write = db.begin_write().map_err(backend)?;
    {
        let mut meta = write.open_table(META).map_err(backend)?;
        meta.insert(META_FORMAT, FORMAT_VERSION).map_err(backend)?;
        // Like etcd, an empty store is at revision 1; the first write gets revision 2.
        meta.insert(META_REVISION, 1).map_err(backend)?;
        meta.insert(META_COMPACTED, 0).map_err(backend)?;
        write.open_table(KV).map_err(backend)?;
        write.open_table(HISTORY).map_err(backend)?;
        write.open_table(LOG).map_err(backend)?;
    }
    write.commit().map_err(backend)?;
    Ok((1, 0))
}

// === record encoding ===

/// One version of a key in the `history` table.
struct Version<'a> {
    create_revision: u64,
    version: u64,
    /// None: a tombstone (the key was deleted at this revision).
    value: Option<&'a [u8]>,
}

impl<'a> Version<'a> {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(17 + self.value.map_or(0, <[u8]>::len));
        out.extend_from_slice(&self.create_revision.to_le_bytes());
        out.extend_from_slice(&self.version.to_le_bytes());
        match self.value {
            Some(value) => {
                out.push(1);
                out.extend_from_slice(value);
            }
            None => out.push(0),
        }
        out
    }

    fn decode(bytes: &'a [u8]) -> Result<Self> {
        if bytes.len() < 17 {
            return Err(Error::Backend("history record too short".into()));
        }
        let create_revision = u64::from_le_bytes(bytes[0..8].try_into().expect("8 bytes"));
        let version = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
        let value = (bytes[16] == 1).then(|| &bytes[17..]);
        Ok(Self {
            create_revision,
            version,
            value,
        })
    }

    /// The entry this version is, if it is not a tombstone.
    fn to_kv(&self, key: &[u8], mod_revision: u64) -> Option<KeyValue> {
        self.value.map(|value| KeyValue {
            key: key.to_vec(),
            value: value.to_vec(),
            create_revision: self.create_revision as i64,
            mod_revision: mod_revision as i64,
            version: self.version as i64,
        })
    }
}

/// A `log` record: the keys one revision wrote, each as a u32 length and the bytes.
fn encode_keys<'k>(keys: impl Iterator<Item = &'k [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for key in keys {
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(key);
    }
    out
}

fn decode_keys(mut bytes: &[u8]) -> Result<Vec<&[u8]>> {
    let mut keys = Vec::new();
    while !bytes.is_empty() {
        if bytes.len() < 4 {
            return Err(Error::Backend("log record truncated".into()));
        }
        let len = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes")) as usize;
        let key = bytes
            .get(4..4 + len)
            .ok_or_else(|| Error::Backend("log record truncated".into()))?;
        keys.push(key);
        bytes = &bytes[4 + len..];
    }
    Ok(keys)
}

/// Bounds of the `history` table that cover every version of every key in `req`'s range.
fn history_bounds(req: &RangeRequest) -> (Bound<(&[u8], u64)>, Bound<(&[u8], u64)>) {
    let start = Bound::Included((req.key.as_slice(), 0));
    let end = match &req.range_end {
        None => Bound::Included((req.key.as_slice(), u64::MAX)),
        Some(end) if end.is_empty() => Bound::Unbounded,
        Some(end) => Bound::Excluded((end.as_slice(), 0)),
    };
    (start, end)
}

fn kv_bounds(req: &RangeRequest) -> (Bound<&[u8]>, Bound<&[u8]>) {
    let start = Bound::Included(req.key.as_slice());
    let end = match &req.range_end {
        None => Bound::Included(req.key.as_slice()),
        Some(end) if end.is_empty() => Bound::Unbounded,
        Some(end) => Bound::Excluded(end.as_slice()),
    };
    (start, end)
}

// === reads ===

impl Shared {
    fn range(&self, req: &RangeRequest) -> Result<RangeResponse> {
        let read = self.db.begin_read().map_err(backend)?;
        let meta = read.open_table(META).map_err(backend)?;
        let current = meta
            .get(META_REVISION)
            .map_err(backend)?
            .map_or(1, |v| v.value()) as i64;
        let compacted = meta
            .get(META_COMPACTED)
            .map_err(backend)?
            .map_or(0, |v| v.value()) as i64;
        let history = read.open_table(HISTORY).map_err(backend)?;
        let limit = if req.limit == 0 {
            usize::MAX
        } else {
            req.limit
        };
        let mut resp = RangeResponse {
            revision: current,
            ..RangeResponse::default()
        };

        if req.revision == 0 || req.revision == current {
            // Newest state: walk `kv`, fetch values of the first `limit` keys only.
            let kv = read.open_table(KV).map_err(backend)?;
            for entry in kv.range::<&[u8]>(kv_bounds(req)).map_err(backend)? {
                let (key, mod_rev) = entry.map_err(backend)?;
                resp.count += 1;
                if resp.kvs.len() >= limit {
                    resp.more = true;
                    continue;
                }
                let (key, mod_rev) = (key.value(), mod_rev.value());
                let record = history
                    .get((key, mod_rev))
                    .map_err(backend)?
                    .ok_or_else(|| Error::Backend("kv entry without history".into()))?;
                if let Some(kv) = Version::decode(record.value())?.to_kv(key, mod_rev) {
                    resp.kvs.push(kv);
                }
            }
            return Ok(resp);
        }

        if req.revision > current {
            return Err(Error::FutureRevision {
                requested: req.revision,
                current,
            });
        }
        if req.revision < compacted {
            return Err(Error::Compacted {
                requested: req.revision,
                compacted,
            });
        }
        // A past revision: each key's newest version at or below it.
        let at = req.revision as u64;
        resp.revision = req.revision;
        let mut pending: Option<(Vec<u8>, u64, Vec<u8>)> = None; // key, mod_rev, record
        let flush =
            |pending: Option<(Vec<u8>, u64, Vec<u8>)>, resp: &mut RangeResponse| -> Result<()> {
                if let Some((key, mod_rev, record)) = pending
                    && let Some(kv) = Version::decode(&record)?.to_kv(&key, mod_rev)
                {
                    resp.count += 1;
                    if resp.kvs.len() >= limit {
                        resp.more = true;
                    } else {
                        resp.kvs.push(kv);
                    }
                }
                Ok(())
            };
        for entry in history.range(history_bounds(req)).map_err(backend)? {
            let (k, v) = entry.map_err(backend)?;
            let (key, rev) = k.value();
            if rev > at {
                continue;
            }
            match &mut pending {
                Some((pkey, prev, record)) if pkey.as_slice() == key => {
                    *prev = rev;
                    *record = v.value().to_vec();
                }
                _ => {
                    flush(pending.take(), &mut resp)?;
                    pending = Some((key.to_vec(), rev, v.value().to_vec()));
                }
            }
        }
        flush(pending, &mut resp)?;
        Ok(resp)
    }

    /// The events of revisions `from..=to` read from disk, grouped by revision.
    fn events_from_disk(&self, from: i64, to: i64) -> Result<Vec<Arc<RevisionEvents>>> {
        let read = self.db.begin_read().map_err(backend)?;
        let log = read.open_table(LOG).map_err(backend)?;
        let history = read.open_table(HISTORY).map_err(backend)?;
        let mut out = Vec::new();
        for entry in log
            .range(from.max(0) as u64..=to.max(0) as u64)
            .map_err(backend)?
        {
            let (rev, keys) = entry.map_err(backend)?;
            let rev = rev.value();
            let mut events = Vec::new();
            for key in decode_keys(keys.value())? {
                events.push(event_at(&history, key, rev)?);
            }
            out.push(Arc::new(RevisionEvents {
                revision: rev as i64,
                bytes: events_bytes(&events),
                events,
            }));
        }
        Ok(out)
    }
}

/// Rebuilds the event of `key` at revision `rev` from the history table.
fn event_at(
    history: &impl ReadableTable<(&'static [u8], u64), &'static [u8]>,
    key: &[u8],
    rev: u64,
) -> Result<Event> {
    let record = history
        .get((key, rev))
        .map_err(backend)?
        .ok_or_else(|| Error::Backend("log entry without history".into()))?;
    let version = Version::decode(record.value())?;
    let prev = match history
        .range((key, 0)..(key, rev))
        .map_err(backend)?
        .next_back()
    {
        Some(entry) => {
            let (k, v) = entry.map_err(backend)?;
            Version::decode(v.value())?.to_kv(key, k.value().1)
        }
        None => None,
    };
    Ok(match version.to_kv(key, rev) {
        Some(kv) => Event {
            kind: EventKind::Put,
            kv,
            prev,
        },
        None => Event {
            kind: EventKind::Delete,
            kv: tombstone(key, rev as i64),
            prev,
        },
    })
}

fn tombstone(key: &[u8], revision: i64) -> KeyValue {
    KeyValue {
        key: key.to_vec(),
        value: Vec::new(),
        create_revision: 0,
        mod_revision: revision,
        version: 0,
    }
}

// === the ring of recent events ===

/// The events of one revision.
struct RevisionEvents {
    revision: i64,
    events: Vec<Event>,
    bytes: usize,
}

fn events_bytes(events: &[Event]) -> usize {
    events
        .iter()
        .map(|e| e.kv.value.len() + e.prev.as_ref().map_or(0, |p| p.value.len()) + 64)
        .sum()
}

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
    let mut revision = shared.revision.clone();
    let mut next = after_revision + 1;
    loop {
        let current = *revision.borrow_and_update();
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
                None => {
                    let shared = shared.clone();
                    blocking(move || shared.events_from_disk(next, to)).await?
                }
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
            // Revisions with no log entry (none exist today) are simply skipped.
            next = to + 1;
        }
        tokio::select! {
            changed = revision.changed() => {
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
    revision_tx: watch::Sender<i64>,
    revision: i64,
    wal: Wal,
    last_checkpoint: std::time::Instant,
    /// Set when a commit failed after its batch reached the log: the in-memory revision can no
    /// longer be trusted, so every later write fails until a restart replays the log.
    poisoned: Option<String>,
}

/// What one request of a batch produced, answered after the commit.
enum Applied {
    Txn {
        reply: oneshot::Sender<Result<TxnResponse>>,
        result: TxnResponse,
        /// The transaction, kept for the log record; `None` when it wrote nothing.
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

impl WriteRequest {
    fn fail(self, err: &Error) {
        let err = || Error::Backend(err.to_string());
        match self {
            WriteRequest::Txn(_, reply) => drop(reply.send(Err(err()))),
            WriteRequest::Compact(_, reply) => drop(reply.send(Err(err()))),
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
        }
        // Clean shutdown: make everything durable in redb and empty the log.
        if self.poisoned.is_none()
            && self.wal.len() > 0
            && let Err(err) = self.checkpoint()
        {
            tracing::warn!(?err, "final checkpoint failed; the log will be replayed at the next start");
        }
        tracing::debug!(path = %self.shared.path.display(), "store writer stopped");
    }

    /// A durable redb commit of everything so far, then an empty log.
    fn checkpoint(&mut self) -> Result<()> {
        let write = self.shared.db.begin_write().map_err(backend)?;
        write.commit().map_err(backend)?;
        self.wal.reset()?;
        self.last_checkpoint = std::time::Instant::now();
        Ok(())
    }

    fn commit_batch(&mut self, batch: &mut Vec<WriteRequest>) {
        if let Some(reason) = &self.poisoned {
            let err = Error::Backend(format!(
                "store stopped taking writes after an earlier failure ({reason}); restart rkube to recover"
            ));
            batch.drain(..).for_each(|req| req.fail(&err));
            return;
        }
        let start_revision = self.revision;
        let mut requests = std::mem::take(batch).into_iter();
        let mut applied = Vec::new();
        let mut compacted = None;
        if let Err(err) = self.apply_batch(&mut requests, &mut applied, &mut compacted) {
            // Nothing of this batch was acknowledged: fail every request in it.
            tracing::error!(?err, "store commit failed; the batch was not written");
            self.revision = start_revision;
            applied.into_iter().for_each(|a| a.fail(&err));
            requests.for_each(|req| req.fail(&err));
            return;
        }

        // Durable: publish the compaction and the events, then answer.
        if let Some(revision) = compacted {
            self.shared.compacted.store(revision, Ordering::Release);
        }
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
        self.revision_tx.send_replace(self.revision);
        for a in applied {
            match a {
                Applied::Txn { reply, result, .. } => drop(reply.send(Ok(result))),
                Applied::Compact { reply, result } => drop(reply.send(result)),
            }
        }
    }

    /// Applies `requests` in one redb write transaction and makes it durable: through the log
    /// (one record, one fdatasync) and a redb commit without fsync, or, when a checkpoint is
    /// due, through a durable redb commit. On error nothing is acknowledged; requests not yet
    /// applied stay in the iterator.
    fn apply_batch(
        &mut self,
        requests: &mut std::vec::IntoIter<WriteRequest>,
        applied: &mut Vec<Applied>,
        compacted: &mut Option<i64>,
    ) -> Result<()> {
        let mut write = self.shared.db.begin_write().map_err(backend)?;
        {
            let mut tables = Tables::open(&write)?;
            for req in requests.by_ref() {
                match req {
                    WriteRequest::Txn(txn, reply) => {
                        let mut events = Vec::new();
                        match self.apply_txn(&mut tables, &txn, &mut events) {
                            Ok(result) => applied.push(Applied::Txn {
                                reply,
                                logged: (!events.is_empty()).then_some(txn),
                                result,
                                events,
                            }),
                            Err(err) => {
                                // The transaction may be half-applied: abort the batch.
                                let _ = reply.send(Err(Error::Backend(err.to_string())));
                                return Err(err);
                            }
                        }
                    }
                    WriteRequest::Compact(revision, reply) => {
                        let current = compacted
                            .unwrap_or_else(|| self.shared.compacted.load(Ordering::Acquire));
                        let result = self.apply_compact(&mut tables, revision, current);
                        if result.is_ok() {
                            *compacted = Some(revision);
                        }
                        applied.push(Applied::Compact { reply, result });
                    }
                }
            }
            tables
                .meta
                .insert(META_REVISION, self.revision as u64)
                .map_err(backend)?;
        }

        // A compaction is not logged: its batch is always a checkpoint.
        let checkpoint = compacted.is_some()
            || self.wal.len() >= WAL_CHECKPOINT_BYTES
            || self.last_checkpoint.elapsed() >= WAL_CHECKPOINT_INTERVAL;
        if checkpoint {
            write.commit().map_err(backend)?;
            self.last_checkpoint = std::time::Instant::now();
            if let Err(err) = self.wal.reset() {
                // Harmless for correctness (replay skips what redb already has), but say so.
                tracing::warn!(?err, "could not empty the write-ahead log after a checkpoint");
            }
            return Ok(());
        }

        let logged: Vec<(i64, &[Op])> = applied
            .iter()
            .filter_map(|a| match a {
                Applied::Txn {
                    logged: Some(txn),
                    events,
                    ..
                } => Some((events[0].revision(), txn.ops.as_slice())),
                _ => None,
            })
            .collect();
        if logged.is_empty() {
            return Ok(()); // only failed compares: nothing to make durable
        }
        // Log first: if this fails, the redb transaction is dropped (aborted) unseen.
        self.wal.append(logged.into_iter())?;
        write
            .set_durability(redb::Durability::None)
            .map_err(backend)?;
        if let Err(err) = write.commit() {
            // The batch is in the log but not in redb, and its revisions are spent.
            let reason = format!("commit after logging failed: {err}");
            tracing::error!(%reason, "store stops taking writes; a restart replays the log");
            self.poisoned = Some(reason);
            return Err(backend(err));
        }
        Ok(())
    }

    fn apply_txn(
        &mut self,
        t: &mut Tables<'_>,
        txn: &Txn,
        events: &mut Vec<Event>,
    ) -> Result<TxnResponse> {
        let succeeded = txn.compares.iter().try_fold(true, |ok, c| {
            let current =
                t.kv.get(c.key.as_slice())
                    .map_err(backend)?
                    .map_or(0, |v| v.value());
            Ok::<_, Error>(ok && current as i64 == c.mod_revision)
        })?;
        if !succeeded {
            let mut current = Vec::with_capacity(txn.compares.len());
            for c in &txn.compares {
                current.push(t.current(&c.key)?);
            }
            return Ok(TxnResponse {
                succeeded: false,
                revision: self.revision,
                current,
            });
        }
        if apply_ops(t, self.revision + 1, &txn.ops, events)? {
            self.revision += 1;
        }
        Ok(TxnResponse {
            succeeded: true,
            revision: self.revision,
            current: Vec::new(),
        })
    }

    /// Drops history below `revision`, keeping for each key its newest version below it
    /// (unless that is a tombstone), so reads at `revision` and later still see every key.
    fn apply_compact(&mut self, t: &mut Tables<'_>, revision: i64, compacted: i64) -> Result<()> {
        if revision > self.revision {
            return Err(Error::FutureRevision {
                requested: revision,
                current: self.revision,
            });
        }
        if revision <= compacted {
            return Err(Error::Compacted {
                requested: revision,
                compacted,
            });
        }
        // Collect what to remove first; redb tables can't be mutated while iterated.
        let mut doomed: Vec<(Vec<u8>, u64)> = Vec::new();
        {
            let mut previous: Option<(Vec<u8>, u64, bool)> = None; // key, rev, is tombstone
            for entry in t.history.iter().map_err(backend)? {
                let (k, v) = entry.map_err(backend)?;
                let (key, rev) = k.value();
                if rev >= revision as u64 {
                    continue;
                }
                let tombstone = Version::decode(v.value())?.value.is_none();
                if let Some((pkey, prev, _)) = &previous
                    && pkey.as_slice() == key
                {
                    // An older version of the same key, shadowed by this one.
                    doomed.push((pkey.clone(), *prev));
                } else if let Some((pkey, prev, true)) = previous.take() {
                    doomed.push((pkey, prev)); // a key whose newest old version is a tombstone
                }
                previous = Some((key.to_vec(), rev, tombstone));
            }
            if let Some((pkey, prev, true)) = previous {
                doomed.push((pkey, prev));
            }
        }
        for (key, rev) in &doomed {
            t.history.remove((key.as_slice(), *rev)).map_err(backend)?;
        }
        let old: Vec<u64> = t
            .log
            .range(..revision as u64)
            .map_err(backend)?
            .map(|e| e.map(|(k, _)| k.value()))
            .collect::<Result<_, _>>()
            .map_err(backend)?;
        for rev in old {
            t.log.remove(rev).map_err(backend)?;
        }
        t.meta
            .insert(META_COMPACTED, revision as u64)
            .map_err(backend)?;
        tracing::info!(revision, removed_versions = doomed.len(), "compacted store");
        Ok(())
    }
}

/// Applies `ops` at revision `rev` (the store's current revision + 1), recording their events.
/// Returns whether anything was written (a delete of a missing key writes nothing). Used both
/// by live transactions and by log replay, so both produce the same state.
fn apply_ops(t: &mut Tables<'_>, rev: i64, ops: &[Op], events: &mut Vec<Event>) -> Result<bool> {
    let rev = rev as u64;
    let mut written: Vec<&[u8]> = Vec::with_capacity(ops.len());
    for op in ops {
        let prev = t.current(op.key())?;
        match op {
            Op::Put { key, value } => {
                let record = Version {
                    create_revision: prev.as_ref().map_or(rev, |p| p.create_revision as u64),
                    version: prev.as_ref().map_or(1, |p| p.version as u64 + 1),
                    value: Some(value),
                };
                t.history
                    .insert((key.as_slice(), rev), record.encode().as_slice())
                    .map_err(backend)?;
                t.kv.insert(key.as_slice(), rev).map_err(backend)?;
                events.push(Event {
                    kind: EventKind::Put,
                    kv: record.to_kv(key, rev).expect("a put has a value"),
                    prev,
                });
                written.push(key);
            }
            Op::Delete { key } => {
                let Some(prev) = prev else { continue };
                let record = Version {
                    create_revision: 0,
                    version: 0,
                    value: None,
                };
                t.history
                    .insert((key.as_slice(), rev), record.encode().as_slice())
                    .map_err(backend)?;
                t.kv.remove(key.as_slice()).map_err(backend)?;
                events.push(Event {
                    kind: EventKind::Delete,
                    kv: tombstone(key, rev as i64),
                    prev: Some(prev),
                });
                written.push(key);
            }
        }
    }
    if written.is_empty() {
        return Ok(false);
    }
    t.log
        .insert(rev, encode_keys(written.into_iter()).as_slice())
        .map_err(backend)?;
    Ok(true)
}

/// Replays the log records redb does not have yet (those after its last checkpoint) and makes
/// them durable. Returns the revision afterwards.
fn replay_wal(db: &Database, path: &Path, mut revision: i64, txns: Vec<wal::LoggedTxn>) -> Result<i64> {
    let pending: Vec<_> = txns.into_iter().filter(|t| t.revision > revision).collect();
    if pending.is_empty() {
        return Ok(revision);
    }
    let write = db.begin_write().map_err(backend)?;
    {
        let mut tables = Tables::open(&write)?;
        let mut events = Vec::new();
        for txn in &pending {
            if txn.revision != revision + 1 {
                return Err(corrupt(
                    path,
                    format!(
                        "write-ahead log jumps from revision {revision} to {}",
                        txn.revision
                    ),
                ));
            }
            events.clear();
            if apply_ops(&mut tables, txn.revision, &txn.ops, &mut events)? {
                revision = txn.revision;
            }
        }
        tables
            .meta
            .insert(META_REVISION, revision as u64)
            .map_err(backend)?;
    }
    write.commit().map_err(backend)?;
    tracing::info!(replayed = pending.len(), revision, "replayed the write-ahead log");
    Ok(revision)
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

struct Tables<'t> {
    meta: redb::Table<'t, &'static str, u64>,
    kv: redb::Table<'t, &'static [u8], u64>,
    history: redb::Table<'t, (&'static [u8], u64), &'static [u8]>,
    log: redb::Table<'t, u64, &'static [u8]>,
}

impl<'t> Tables<'t> {
    fn open(write: &'t redb::WriteTransaction) -> Result<Self> {
        Ok(Self {
            meta: write.open_table(META).map_err(backend)?,
            kv: write.open_table(KV).map_err(backend)?,
            history: write.open_table(HISTORY).map_err(backend)?,
            log: write.open_table(LOG).map_err(backend)?,
        })
    }

    /// The newest entry of `key`, if it exists.
    fn current(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        let Some(rev) = self.kv.get(key).map_err(backend)?.map(|v| v.value()) else {
            return Ok(None);
        };
        let record = self
            .history
            .get((key, rev))
            .map_err(backend)?
            .ok_or_else(|| Error::Backend("kv entry without history".into()))?;
        Ok(Version::decode(record.value())?.to_kv(key, rev))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_round_trip() {
        let v = Version {
            create_revision: 3,
            version: 2,
            value: Some(b"hello"),
        };
        let bytes = v.encode();
        let d = Version::decode(&bytes).unwrap();
        assert_eq!(
            (d.create_revision, d.version, d.value),
            (3, 2, Some(&b"hello"[..]))
        );
        let t = Version {
            create_revision: 0,
            version: 0,
            value: None,
        }
        .encode();
        assert!(Version::decode(&t).unwrap().value.is_none());
        assert!(Version::decode(&t[..5]).is_err());
    }

    #[test]
    fn keys_round_trip() {
        let keys: Vec<&[u8]> = vec![b"a", b"", b"/registry/pods/x"];
        let bytes = encode_keys(keys.iter().copied());
        assert_eq!(decode_keys(&bytes).unwrap(), keys);
        assert!(decode_keys(&bytes[..bytes.len() - 1]).is_err());
    }

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
        assert!(ring.get(2, 5).is_none(), "evicted revisions come from disk");
        let got = ring.get(20, 22).unwrap();
        assert_eq!(
            got.iter().map(|r| r.revision).collect::<Vec<_>>(),
            vec![20, 21, 22]
        );
    }
}
