//! The etcd backend: [`EtcdStore`] keeps every key in an etcd v3 cluster, through the
//! `etcd-client` crate (gRPC).
//!
//! The [`Store`] model is etcd's own, so most calls map one to one:
//!
//! | [`Store`] call | etcd request |
//! |---|---|
//! | [`current_revision`](Store::current_revision) | a count-only `Range` of one key; the header revision |
//! | [`range`](Store::range) | `Range` (`range_end` `None`: one key; `Some(empty)`: etcd's `"\0"`, no upper bound) |
//! | [`txn`](Store::txn) | `Txn`: compares `mod_revision == N`, success = the writes, failure = a `Get` per compared key |
//! | [`watch`](Store::watch) | `Watch` on the prefix from `after_revision + 1`, with `prev_kv` |
//! | [`compact`](Store::compact) | `Compact` with `physical = true` |
//! | [`compacted_revision`](Store::compacted_revision) | probing `Range`s at past revisions (see below) |
//!
//! Details and differences:
//!
//! - **Absence.** etcd reports a missing key's `mod_revision` as 0, so `Compare::absent` is a
//!   plain `mod_revision == 0` compare.
//! - **Revisions.** etcd bumps the revision only when a transaction changes something: a
//!   transaction that only deletes missing keys succeeds at the unchanged revision.
//! - **Failed transactions.** The failure branch reads every compared key in the same
//!   transaction, so [`TxnResponse::current`] is consistent with the failed compare.
//! - **Watch batches.** etcd puts several revisions in one watch response; they are split into
//!   one stream item per revision. etcd never splits one revision over two responses (this
//!   backend does not ask for fragmented responses). The event kind is taken from the entry:
//!   etcd's delete events carry version 0, puts a version of at least 1. A delete event's `kv`
//!   is normalised to `{key, empty value, create_revision 0, mod_revision = deletion, version
//!   0}`. `prev` is etcd's `prev_kv`, which etcd leaves out when the previous entry is already
//!   compacted away.
//! - **Compaction.** etcd keeps the compaction revision itself readable: after `compact(N)`,
//!   reads at `N` work and reads below it fail with [`Error::Compacted`]. etcd does not report
//!   its compaction point directly, so [`Store::compacted_revision`] remembers the highest
//!   point this client has seen (its own compactions and compacted watches) and checks it with
//!   a read at that revision; when another client compacted further, it binary-searches the
//!   oldest readable revision (a handful of tiny reads). `compact(N)` with `N` at or below the
//!   current compaction point fails with [`Error::Compacted`] (as in etcd and the embedded
//!   store), `N <= 0` too; above the current revision with [`Error::FutureRevision`].
//! - **Errors.** Connection problems (refused, reset, timeouts, no leader) become
//!   [`Error::Unavailable`]; etcd's "required revision has been compacted" and "is a future
//!   revision" become [`Error::Compacted`] and [`Error::FutureRevision`]; malformed or
//!   oversized requests become [`Error::InvalidRequest`]; anything else is [`Error::Backend`].
//!   Every unary request has a deadline of 30 s (5 min for a compaction).
//! - **Connections.** [`EtcdStore::connect`] makes a real round trip (gRPC connects lazily).
//!   Afterwards the channel reconnects on its own; a request whose connection could not be
//!   established (so it was never sent) is retried on the other endpoints, nothing else is.
//! - **Watch lifetime.** A watch is one gRPC stream and no task: dropping the [`WatchStream`]
//!   resets the stream, which cancels the watch on the server. When the connection breaks the
//!   stream yields [`Error::Unavailable`] and ends; callers re-watch from the last revision
//!   they saw.
//! - **Limits.** [`Txn::validate`] runs first, so values over [`crate::MAX_VALUE_SIZE`] are
//!   refused before they reach etcd. etcd's own limits still apply on top: `--max-request-bytes`
//!   (1.5 MiB by default, too small for a 1.5 MiB value plus its key: run etcd with 2 MiB) and
//!   `--max-txn-ops` (128 by default, counting the writes, and separately the compares).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, CompactionOptions, CompareOp, ConnectOptions, GetOptions, GetResponse, KvClient, TxnOp,
    TxnOpResponse, WatchClient, WatchOptions,
};
use futures::StreamExt;

use crate::{
    Error, Event, EventKind, KeyValue, Op, RangeRequest, RangeResponse, Result, Store, Txn,
    TxnResponse, WatchStream, prefix_end,
};

/// How long [`EtcdStore::connect`] waits for a first answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The deadline of one unary request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The deadline of a (physical) compaction, which waits for the data to be deleted.
const COMPACT_TIMEOUT: Duration = Duration::from_secs(300);
/// HTTP/2 keep-alive while requests or watches are open: a dead server is noticed after
/// about interval + timeout even when the TCP connection does not break. (etcd refuses pings
/// more often than every 5 s, and pings on idle connections.)
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Responses may hold many values of up to 1.5 MiB each: accept any size etcd sends
/// (etcd's own limit for what it sends is 2 GiB).
const MAX_DECODING_MESSAGE_SIZE: usize = i32::MAX as usize;

/// gRPC status codes (numeric, as on the wire).
mod code {
    pub(super) const INVALID_ARGUMENT: i32 = 3;
    pub(super) const DEADLINE_EXCEEDED: i32 = 4;
    pub(super) const RESOURCE_EXHAUSTED: i32 = 8;
    pub(super) const UNAVAILABLE: i32 = 14;
}

/// etcd's error text for a read or watch below the compaction point.
const ERR_COMPACTED: &str = "required revision has been compacted";
/// etcd's error text for a read above the current revision.
const ERR_FUTURE_REV: &str = "required revision is a future revision";

/// A store kept in an etcd v3 cluster.
///
/// Cheap to share: every call clones a handle to one multiplexed gRPC channel. The channel
/// reconnects on its own after a server restart; open watches end with
/// [`Error::Unavailable`] instead, and their callers re-watch from the last revision they saw.
pub struct EtcdStore {
    /// Kept so the channel's endpoint set stays managed for the store's lifetime.
    _client: Client,
    kv: KvClient,
    watch: WatchClient,
    /// The endpoints, comma-separated, for error messages.
    endpoints: String,
    /// How often a request that could not be sent is tried (see [`EtcdStore::call`]).
    max_attempts: usize,
    /// The highest compaction point this client knows of (0: none). Compaction points only
    /// grow, so this is a lower bound of the cluster's.
    compacted: Arc<AtomicI64>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints)
            .field("known_compaction", &self.compacted.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// What an etcd call failed with, before the caller turns it into an [`Error`].
enum Failure {
    /// "required revision has been compacted".
    Compacted,
    /// "required revision is a future revision".
    FutureRevision,
    /// Anything else, already mapped.
    Other(Error),
}

impl EtcdStore {
    /// Connects to the cluster at `endpoints` (`http://host:port`, or `host:port`; a
    /// comma-separated list must be split by the caller).
    ///
    /// gRPC connects lazily, so this makes a real round trip before returning. It fails with
    /// [`Error::Unavailable`] within about 5 s when no endpoint answers (at once when every
    /// endpoint refuses the connection), and with [`Error::InvalidRequest`] for an empty list or
    /// a malformed or `https://` endpoint (TLS is not supported by this build).
    pub async fn connect(endpoints: &[String]) -> Result<Self> {
        let deadline = tokio::time::Instant::now() + CONNECT_TIMEOUT;
        let mut urls = Vec::new();
        let mut authorities = Vec::new();
        for endpoint in endpoints {
            let endpoint = endpoint.trim().trim_end_matches('/');
            if endpoint.is_empty() {
                continue;
            }
            let authority = if let Some(rest) = endpoint.strip_prefix("http://") {
                rest
            } else if endpoint.starts_with("https://") {
                return Err(Error::InvalidRequest(format!(
                    "etcd endpoint {endpoint:?}: https is not supported (no TLS support in this build)"
                )));
            } else if endpoint.contains("://") {
                return Err(Error::InvalidRequest(format!(
                    "etcd endpoint {endpoint:?}: expected http://host:port or host:port"
                )));
            } else {
                endpoint
            };
            if authority.is_empty() || authority.contains('/') {
                return Err(Error::InvalidRequest(format!(
                    "etcd endpoint {endpoint:?}: expected http://host:port or host:port"
                )));
            }
            urls.push(format!("http://{authority}"));
            authorities.push(authority.to_owned());
        }
        if urls.is_empty() {
            return Err(Error::InvalidRequest("no etcd endpoint given".into()));
        }
        let joined = urls.join(",");

        // A plain TCP connect first: it fails fast, and with a readable reason, when nothing
        // listens at all.
        probe_tcp(&joined, &authorities, deadline).await?;

        let options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_keep_alive(KEEP_ALIVE_INTERVAL, KEEP_ALIVE_TIMEOUT)
            .with_keep_alive_while_idle(false);
        let client = Client::connect(&urls, Some(options))
            .await
            .map_err(|e| map_client_error(&joined, e))?;
        let store = Self {
            kv: client
                .kv_client()
                .max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE),
            watch: client
                .watch_client()
                .max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE),
            _client: client,
            endpoints: joined,
            max_attempts: if urls.len() > 1 { 4 * urls.len() } else { 1 },
            compacted: Arc::new(AtomicI64::new(0)),
        };

        // The real round trip. With several endpoints the balancer may first pick one that is
        // down, so retry until the deadline.
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let attempt = tokio::time::timeout(remaining, store.probe_revision()).await;
            let err = match attempt {
                Ok(Ok(revision)) => {
                    tracing::debug!(endpoints = %store.endpoints, revision, "connected to etcd");
                    return Ok(store);
                }
                Ok(Err(err)) => err,
                Err(_elapsed) => {
                    store.unavailable(format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()))
                }
            };
            if !matches!(err, Error::Unavailable { .. })
                || tokio::time::Instant::now() + Duration::from_millis(100) >= deadline
            {
                tracing::debug!(endpoints = %store.endpoints, error = %err, "cannot reach etcd");
                return Err(err);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn unavailable(&self, message: impl Into<String>) -> Error {
        Error::Unavailable {
            endpoint: self.endpoints.clone(),
            message: message.into(),
        }
    }

    /// Runs one unary call, made by `make`, under `timeout`, and classifies its error.
    ///
    /// A call that failed before it was sent (its connection could not be established) is
    /// retried: with several endpoints the balancer may have picked one that is down. Nothing
    /// else is retried, since a write may have been applied.
    async fn call<T, F, Fut>(&self, timeout: Duration, mut make: F) -> Result<T, Failure>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let err = match tokio::time::timeout_at(deadline, make()).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(err)) => err,
                Err(_elapsed) => {
                    return Err(Failure::Other(
                        self.unavailable(format!("no answer within {} s", timeout.as_secs())),
                    ));
                }
            };
            if attempts < self.max_attempts && not_sent(&err) {
                tracing::trace!(error = %err, attempts, "etcd request not sent; retrying");
                continue;
            }
            return Err(classify(&self.endpoints, err));
        }
    }

    /// The header revision of a count-only read of one key.
    async fn probe_revision(&self) -> Result<i64> {
        let resp = self
            .get(vec![0u8], GetOptions::new().with_count_only())
            .await
            .map_err(|f| self.plain(f))?;
        header_revision(resp.header())
    }

    /// An etcd `Range`.
    async fn get(&self, key: Vec<u8>, opts: GetOptions) -> Result<GetResponse, Failure> {
        self.call(REQUEST_TIMEOUT, || {
            let mut kv = self.kv.clone();
            let (key, opts) = (key.clone(), opts.clone());
            async move { kv.get(key, Some(opts)).await }
        })
        .await
    }

    /// Maps a failure outside of a revision-specific request.
    fn plain(&self, failure: Failure) -> Error {
        match failure {
            Failure::Compacted => Error::Backend(format!("etcd: mvcc: {ERR_COMPACTED}")),
            Failure::FutureRevision => Error::Backend(format!("etcd: mvcc: {ERR_FUTURE_REV}")),
            Failure::Other(err) => err,
        }
    }

    /// Whether `revision` can still be read: `Ok(false)` when it is compacted.
    async fn readable_at(&self, revision: i64) -> Result<bool> {
        let opts = GetOptions::new().with_count_only().with_revision(revision);
        match self.get(vec![0u8], opts).await {
            Ok(_) => Ok(true),
            Err(Failure::Compacted) => Ok(false),
            Err(failure) => Err(self.plain(failure)),
        }
    }

    /// Notes a compaction point learned from the cluster.
    fn learn_compaction(&self, revision: i64) {
        self.compacted.fetch_max(revision, Ordering::Relaxed);
    }

    /// The current compaction point: see the module docs.
    async fn find_compaction(&self) -> Result<i64> {
        let known = self.compacted.load(Ordering::Relaxed);
        // Invariant: known <= point <= current. Reads at the point itself succeed.
        if self.readable_at(known.max(1)).await? {
            return Ok(known);
        }
        let current = self.probe_revision().await?;
        // Smallest readable revision in (lo, hi]; `hi` (the current revision) always is.
        let (mut lo, mut hi) = (known.max(1), current);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.readable_at(mid).await? {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        self.learn_compaction(hi);
        Ok(self.compacted.load(Ordering::Relaxed))
    }

    /// [`Error::Compacted`] for a request at `requested`, with the compaction point looked up
    /// (best effort: what this client knows when the lookup fails).
    async fn compacted_error(&self, requested: i64) -> Error {
        let compacted = match self.find_compaction().await {
            Ok(point) => point,
            Err(err) => {
                tracing::debug!(error = %err, "cannot look up etcd's compaction point");
                self.compacted.load(Ordering::Relaxed)
            }
        };
        Error::Compacted {
            requested,
            compacted,
        }
    }

    /// [`Error::FutureRevision`] for a request at `requested`, with the current revision
    /// looked up (best effort: 0 when the lookup fails).
    async fn future_error(&self, requested: i64) -> Error {
        let current = match self.probe_revision().await {
            Ok(revision) => revision,
            Err(err) => {
                tracing::debug!(error = %err, "cannot look up etcd's current revision");
                0
            }
        };
        Error::FutureRevision { requested, current }
    }
}

#[async_trait]
impl Store for EtcdStore {
    async fn current_revision(&self) -> Result<i64> {
        self.probe_revision().await
    }

    async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        if req.revision < 0 {
            return Err(Error::InvalidRequest(format!(
                "negative revision {}",
                req.revision
            )));
        }
        let mut key = req.key;
        let mut opts = GetOptions::new();
        match req.range_end {
            None => {
                if key.is_empty() {
                    return Err(Error::InvalidRequest("empty key".into()));
                }
            }
            Some(end) => {
                // No key is empty, so a range from "" is a range from "\0" (etcd refuses "").
                if key.is_empty() {
                    key = vec![0];
                }
                // etcd spells "no upper bound" as "\0".
                opts = opts.with_range(if end.is_empty() { vec![0] } else { end });
            }
        }
        if req.limit > 0 {
            opts = opts.with_limit(i64::try_from(req.limit).unwrap_or(i64::MAX));
        }
        if req.revision > 0 {
            opts = opts.with_revision(req.revision);
        }
        let mut resp = match self.get(key, opts).await {
            Ok(resp) => resp,
            Err(Failure::Compacted) => return Err(self.compacted_error(req.revision).await),
            Err(Failure::FutureRevision) => return Err(self.future_error(req.revision).await),
            Err(Failure::Other(err)) => return Err(err),
        };
        let header = header_revision(resp.header())?;
        let count = usize::try_from(resp.count())
            .map_err(|_| Error::Backend(format!("etcd returned count {}", resp.count())))?;
        let more = resp.more();
        let kvs = resp.take_kvs().into_iter().map(convert_kv).collect();
        Ok(RangeResponse {
            kvs,
            more,
            count,
            revision: if req.revision > 0 {
                req.revision
            } else {
                header
            },
        })
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        txn.validate()?;
        let compares: Vec<etcd_client::Compare> = txn
            .compares
            .iter()
            .map(|c| {
                etcd_client::Compare::mod_revision(c.key.clone(), CompareOp::Equal, c.mod_revision)
            })
            .collect();
        let failure: Vec<TxnOp> = txn
            .compares
            .iter()
            .map(|c| TxnOp::get(c.key.clone(), None))
            .collect();
        let n_compares = failure.len();
        let success: Vec<TxnOp> = txn
            .ops
            .into_iter()
            .map(|op| match op {
                Op::Put { key, value } => TxnOp::put(key, value, None),
                Op::Delete { key } => TxnOp::delete(key, None),
            })
            .collect();
        let request = etcd_client::Txn::new()
            .when(compares)
            .and_then(success)
            .or_else(failure);
        let resp = self
            .call(REQUEST_TIMEOUT, || {
                let mut kv = self.kv.clone();
                let request = request.clone();
                async move { kv.txn(request).await }
            })
            .await
            .map_err(|f| self.plain(f))?;
        let revision = header_revision(resp.header())?;
        if resp.succeeded() {
            return Ok(TxnResponse {
                succeeded: true,
                revision,
                current: Vec::new(),
            });
        }
        let responses = resp.op_responses();
        if responses.len() != n_compares {
            return Err(Error::Backend(format!(
                "etcd answered a failed transaction with {} results for {n_compares} reads",
                responses.len()
            )));
        }
        let current = responses
            .into_iter()
            .map(|r| match r {
                TxnOpResponse::Get(mut get) => {
                    Ok(get.take_kvs().into_iter().next().map(convert_kv))
                }
                other => Err(Error::Backend(format!(
                    "etcd answered a read in a transaction with {other:?}"
                ))),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(TxnResponse {
            succeeded: false,
            revision,
            current,
        })
    }

    async fn watch(&self, prefix: &[u8], after_revision: i64) -> Result<WatchStream> {
        if after_revision < 0 {
            return Err(Error::InvalidRequest(format!(
                "negative revision {after_revision}"
            )));
        }
        let start = after_revision.saturating_add(1);
        let (key, end) = if prefix.is_empty() {
            (vec![0], vec![0])
        } else {
            let end = prefix_end(prefix);
            (prefix.to_vec(), if end.is_empty() { vec![0] } else { end })
        };
        let options = WatchOptions::new()
            .with_range(end)
            .with_start_revision(start)
            .with_prev_key();
        let mut inner = self
            .call(REQUEST_TIMEOUT, || {
                let mut client = self.watch.clone();
                let (key, options) = (key.clone(), options.clone());
                async move { client.watch(key, Some(options)).await }
            })
            .await
            .map_err(|f| self.plain(f))?;
        // Wait for etcd's "created" answer so that connection problems fail here, at once.
        let first = match tokio::time::timeout(REQUEST_TIMEOUT, inner.message()).await {
            Ok(Ok(first)) => first,
            Ok(Err(err)) => return Err(self.plain(classify(&self.endpoints, err))),
            Err(_elapsed) => {
                return Err(self.unavailable(format!(
                    "no answer to the watch within {} s",
                    REQUEST_TIMEOUT.as_secs()
                )));
            }
        };
        let mut state = WatchState {
            inner: Some(inner),
            ready: std::collections::VecDeque::new(),
            requested: start,
            endpoints: self.endpoints.clone(),
            compacted: self.compacted.clone(),
        };
        match first {
            Some(resp) => state.absorb(&resp),
            None => state.fail(state.closed_error()),
        }
        tracing::debug!(prefix = %String::from_utf8_lossy(prefix), start, "etcd watch created");
        Ok(futures::stream::unfold(state, WatchState::next).boxed())
    }

    async fn compact(&self, revision: i64) -> Result<()> {
        // What this client knows is a lower bound of the compaction point: at or below it,
        // etcd would refuse too (and would accept 0, which means nothing here).
        if revision <= self.compacted.load(Ordering::Relaxed) {
            return Err(self.compacted_error(revision).await);
        }
        let compacting = || {
            let mut kv = self.kv.clone();
            async move {
                kv.compact(revision, Some(CompactionOptions::new().with_physical()))
                    .await
            }
        };
        match self.call(COMPACT_TIMEOUT, compacting).await {
            Ok(_) => {
                tracing::debug!(revision, "compacted etcd");
                self.learn_compaction(revision);
                Ok(())
            }
            Err(Failure::Compacted) => Err(self.compacted_error(revision).await),
            Err(Failure::FutureRevision) => Err(self.future_error(revision).await),
            Err(Failure::Other(err)) => Err(err),
        }
    }

    async fn compacted_revision(&self) -> Result<i64> {
        self.find_compaction().await
    }
}

/// The state of one watch stream. Dropping it drops the gRPC stream, which cancels the watch
/// on the server; no task runs on its behalf.
struct WatchState {
    /// `None` once the stream has ended.
    inner: Option<etcd_client::WatchStream>,
    /// Items ready to be yielded, in order.
    ready: std::collections::VecDeque<Result<Vec<Event>>>,
    /// The first revision asked for (`after_revision + 1`).
    requested: i64,
    endpoints: String,
    compacted: Arc<AtomicI64>,
}

impl WatchState {
    async fn next(mut self) -> Option<(Result<Vec<Event>>, Self)> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                return Some((item, self));
            }
            let inner = self.inner.as_mut()?;
            match inner.message().await {
                Ok(Some(resp)) => self.absorb(&resp),
                Ok(None) => self.fail(self.closed_error()),
                Err(err) => {
                    let err = match classify(&self.endpoints, err) {
                        Failure::Other(err) => err,
                        Failure::Compacted => Error::Compacted {
                            requested: self.requested,
                            compacted: self.compacted.load(Ordering::Relaxed),
                        },
                        Failure::FutureRevision => {
                            Error::Backend(format!("etcd watch: {ERR_FUTURE_REV}"))
                        }
                    };
                    self.fail(err);
                }
            }
        }
    }

    fn closed_error(&self) -> Error {
        Error::Unavailable {
            endpoint: self.endpoints.clone(),
            message: "the watch stream was closed by the server".into(),
        }
    }

    /// Queues `err` as the last item and closes the gRPC stream.
    fn fail(&mut self, err: Error) {
        tracing::debug!(error = %err, "etcd watch ended");
        self.ready.push_back(Err(err));
        self.inner = None;
    }

    /// Turns one watch response into stream items.
    fn absorb(&mut self, resp: &etcd_client::WatchResponse) {
        let mut batch: Vec<Event> = Vec::new();
        for ev in resp.events() {
            let event = match convert_event(ev) {
                Ok(event) => event,
                Err(err) => {
                    if !batch.is_empty() {
                        self.ready.push_back(Ok(std::mem::take(&mut batch)));
                    }
                    self.fail(err);
                    return;
                }
            };
            if let Some(last) = batch.last()
                && last.revision() != event.revision()
            {
                self.ready.push_back(Ok(std::mem::take(&mut batch)));
            }
            batch.push(event);
        }
        if !batch.is_empty() {
            self.ready.push_back(Ok(batch));
        }
        if resp.canceled() {
            let compacted = resp.compact_revision();
            let err = if compacted > 0 {
                self.compacted.fetch_max(compacted, Ordering::Relaxed);
                Error::Compacted {
                    requested: self.requested,
                    compacted,
                }
            } else {
                let reason = resp.cancel_reason();
                Error::Backend(format!(
                    "etcd canceled the watch: {}",
                    if reason.is_empty() {
                        "no reason given"
                    } else {
                        reason
                    }
                ))
            };
            self.fail(err);
        } else if resp.compact_revision() > 0 {
            // Not canceled but behind compaction: etcd sends this only with `canceled` set,
            // but treat it the same way should it not.
            self.compacted
                .fetch_max(resp.compact_revision(), Ordering::Relaxed);
            self.fail(Error::Compacted {
                requested: self.requested,
                compacted: resp.compact_revision(),
            });
        }
    }
}

fn convert_kv(kv: etcd_client::KeyValue) -> KeyValue {
    let (create_revision, mod_revision, version) =
        (kv.create_revision(), kv.mod_revision(), kv.version());
    let (key, value) = kv.into_key_value();
    KeyValue {
        key,
        value,
        create_revision,
        mod_revision,
        version,
    }
}

fn convert_kv_ref(kv: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: kv.key().to_vec(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
    }
}

/// Converts a watch event. The kind comes from the entry's version (0 only for a delete) rather
/// than `Event::event_type`, which panics on an unknown type.
fn convert_event(ev: &etcd_client::Event) -> Result<Event> {
    let kv = ev
        .kv()
        .ok_or_else(|| Error::Backend("etcd sent a watch event without a key".into()))?;
    let prev = ev.prev_kv().map(convert_kv_ref);
    if kv.version() == 0 {
        Ok(Event {
            kind: EventKind::Delete,
            kv: KeyValue {
                key: kv.key().to_vec(),
                value: Vec::new(),
                create_revision: 0,
                mod_revision: kv.mod_revision(),
                version: 0,
            },
            prev,
        })
    } else {
        Ok(Event {
            kind: EventKind::Put,
            kv: convert_kv_ref(kv),
            prev,
        })
    }
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Result<i64> {
    header
        .map(etcd_client::ResponseHeader::revision)
        .ok_or_else(|| Error::Backend("etcd sent a response without a header".into()))
}

/// Connects to each endpoint with plain TCP; fails when none accepts a connection.
async fn probe_tcp(
    joined: &str,
    authorities: &[String],
    deadline: tokio::time::Instant,
) -> Result<()> {
    let attempts = authorities.iter().map(|authority| async move {
        match tokio::time::timeout_at(deadline, tokio::net::TcpStream::connect(authority.as_str()))
            .await
        {
            Ok(Ok(_stream)) => Ok(()),
            Ok(Err(err)) => Err(format!("{authority}: {}", describe_io(&err))),
            Err(_elapsed) => Err(format!(
                "{authority}: connection timed out after {} s",
                CONNECT_TIMEOUT.as_secs()
            )),
        }
    });
    let results = futures::future::join_all(attempts).await;
    if results.iter().any(Result::is_ok) {
        return Ok(());
    }
    let reasons: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    let message = if let [only] = reasons.as_slice() {
        // The endpoint is already in the error; keep only the reason.
        only.split_once(": ")
            .map_or(only.clone(), |(_, reason)| reason.to_owned())
    } else {
        reasons.join("; ")
    };
    Err(Error::Unavailable {
        endpoint: joined.to_owned(),
        message,
    })
}

/// A short, readable description of an I/O error ("connection refused").
fn describe_io(err: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match err.kind() {
        ErrorKind::ConnectionRefused
        | ErrorKind::ConnectionReset
        | ErrorKind::ConnectionAborted
        | ErrorKind::NotConnected
        | ErrorKind::BrokenPipe
        | ErrorKind::TimedOut
        | ErrorKind::AddrNotAvailable
        | ErrorKind::HostUnreachable
        | ErrorKind::NetworkUnreachable
        | ErrorKind::UnexpectedEof => err.kind().to_string(),
        _ => err.to_string(),
    }
}

/// The most specific readable reason in an error chain: an I/O error if there is one, else
/// the innermost message.
fn readable_reason(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut current = Some(err);
    let mut innermost = None;
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return Some(describe_io(io));
        }
        innermost = Some(e.to_string());
        current = e.source();
    }
    innermost
}

/// Classifies a client error: the two revision errors, connection problems
/// ([`Error::Unavailable`]), bad requests ([`Error::InvalidRequest`]) and the rest
/// ([`Error::Backend`]).
fn classify(endpoints: &str, err: etcd_client::Error) -> Failure {
    let unavailable = |message: String| {
        Failure::Other(Error::Unavailable {
            endpoint: endpoints.to_owned(),
            message,
        })
    };
    match err {
        etcd_client::Error::GRpcStatus(status) => {
            let message = status.message();
            if message.contains(ERR_COMPACTED) {
                return Failure::Compacted;
            }
            if message.contains(ERR_FUTURE_REV) {
                return Failure::FutureRevision;
            }
            let code = i32::from(status.code());
            // Transport failures carry the underlying error as the status's source.
            let source = std::error::Error::source(&status).and_then(readable_reason);
            match code {
                code::UNAVAILABLE | code::DEADLINE_EXCEEDED => {
                    unavailable(source.unwrap_or_else(|| message.to_owned()))
                }
                code::INVALID_ARGUMENT => {
                    Failure::Other(Error::InvalidRequest(format!("etcd: {message}")))
                }
                code::RESOURCE_EXHAUSTED if message.contains("larger than max") => Failure::Other(
                    Error::InvalidRequest(format!("request too large for etcd: {message}")),
                ),
                _ => match source {
                    // A failure below gRPC (a broken connection) rather than an etcd answer.
                    Some(reason) if is_connection_failure(&status) => unavailable(reason),
                    _ => Failure::Other(Error::Backend(format!(
                        "etcd: {message} ({})",
                        status.code()
                    ))),
                },
            }
        }
        etcd_client::Error::TransportError(err) => {
            unavailable(readable_reason(&err).unwrap_or_else(|| err.to_string()))
        }
        etcd_client::Error::IoError(err) => unavailable(describe_io(&err)),
        etcd_client::Error::WatchError(message) => unavailable(message),
        etcd_client::Error::InvalidArgs(message) => {
            Failure::Other(Error::InvalidRequest(format!("etcd: {message}")))
        }
        etcd_client::Error::InvalidUri(err) => {
            Failure::Other(Error::InvalidRequest(format!("etcd endpoint: {err}")))
        }
        other => Failure::Other(Error::Backend(format!("etcd: {other}"))),
    }
}

/// Whether a request failed before it was sent: its connection could not be established.
fn not_sent(err: &etcd_client::Error) -> bool {
    let etcd_client::Error::GRpcStatus(status) = err else {
        return false;
    };
    if i32::from(status.code()) != code::UNAVAILABLE {
        return false;
    }
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(status);
    while let Some(e) = current {
        let text = e.to_string();
        if text.starts_with("tcp connect error") || text.contains("error trying to connect") {
            return true;
        }
        current = e.source();
    }
    false
}

/// Whether an error chain holds a transport-level failure (I/O, HTTP/2, hyper) rather than an
/// answer of the server.
fn is_connection_failure(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = std::error::Error::source(err);
    while let Some(e) = current {
        if e.is::<std::io::Error>() {
            return true;
        }
        let text = e.to_string();
        if text.contains("connection")
            || text.contains("broken pipe")
            || text.contains("h2 protocol error")
            || text.contains("transport")
        {
            return true;
        }
        current = e.source();
    }
    false
}

/// Maps an error of [`Client::connect`].
fn map_client_error(endpoints: &str, err: etcd_client::Error) -> Error {
    match classify(endpoints, err) {
        Failure::Other(err) => err,
        Failure::Compacted | Failure::FutureRevision => {
            Error::Backend("etcd: unexpected revision error while connecting".into())
        }
    }
}
