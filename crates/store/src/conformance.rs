//! The conformance suite: the behaviour every [`Store`] backend must have.
//!
//! Each case is an async function taking a fresh store and a key prefix of its own. The
//! [`conformance_tests!`](crate::conformance_tests) macro turns the list into one `#[tokio::test]`
//! per case for a backend, so both backends run exactly the same checks.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use crate::{
    Compare, Error, EventKind, KeyValue, MAX_VALUE_SIZE, Op, RangeRequest, Store, Txn, WatchStream,
};

/// How long a test waits for a watch event before failing.
const WATCH_TIMEOUT: Duration = Duration::from_secs(10);

fn key(prefix: &str, name: &str) -> Vec<u8> {
    format!("{prefix}{name}").into_bytes()
}

/// Takes the next batch of events, failing the test after [`WATCH_TIMEOUT`].
pub async fn next_batch(stream: &mut WatchStream) -> crate::Result<Vec<crate::Event>> {
    tokio::time::timeout(WATCH_TIMEOUT, stream.next())
        .await
        .expect("timed out waiting for a watch event")
        .expect("watch stream ended")
}

/// Collects events until `n` have arrived.
pub async fn collect_events(stream: &mut WatchStream, n: usize) -> Vec<crate::Event> {
    let mut out = Vec::new();
    while out.len() < n {
        out.extend(next_batch(stream).await.expect("watch error"));
    }
    out
}

/// create → get → update: revisions and versions move as in etcd.
pub async fn create_get_update(store: Arc<dyn Store>, prefix: &str) {
    let k = key(prefix, "a");
    let before = store.current_revision().await.unwrap();
    let r1 = store.create(&k, b"one".to_vec()).await.unwrap();
    assert!(r1 > before, "a write bumps the revision");
    assert_eq!(store.current_revision().await.unwrap(), r1);
    let kv = store.get(&k).await.unwrap().expect("created key");
    assert_eq!(kv.value, b"one");
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.version),
        (r1, r1, 1)
    );

    let r2 = store.update(&k, b"two".to_vec(), r1).await.unwrap();
    assert!(r2 > r1);
    let kv = store.get(&k).await.unwrap().unwrap();
    assert_eq!(kv.value, b"two");
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.version),
        (r1, r2, 2)
    );
    assert_eq!(store.get(&key(prefix, "missing")).await.unwrap(), None);
}

/// create of an existing key fails and reports the existing entry; nothing is written.
pub async fn create_existing_fails(store: Arc<dyn Store>, prefix: &str) {
    let k = key(prefix, "a");
    let r1 = store.create(&k, b"one".to_vec()).await.unwrap();
    match store.create(&k, b"two".to_vec()).await {
        Err(Error::AlreadyExists { current, .. }) => {
            let current = current.expect("current entry");
            assert_eq!(current.value, b"one");
            assert_eq!(current.mod_revision, r1);
        }
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    assert_eq!(store.current_revision().await.unwrap(), r1);
    assert_eq!(store.get(&k).await.unwrap().unwrap().value, b"one");
}

/// update and delete with a stale mod_revision fail with Conflict and write nothing.
pub async fn cas_conflicts(store: Arc<dyn Store>, prefix: &str) {
    let k = key(prefix, "a");
    let r1 = store.create(&k, b"one".to_vec()).await.unwrap();
    let r2 = store.update(&k, b"two".to_vec(), r1).await.unwrap();

    match store.update(&k, b"stale".to_vec(), r1).await {
        Err(Error::Conflict { current, .. }) => {
            assert_eq!(current.unwrap().mod_revision, r2)
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    match store.delete(&k, r1).await {
        Err(Error::Conflict { current, .. }) => {
            assert_eq!(current.unwrap().value, b"two")
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert_eq!(store.current_revision().await.unwrap(), r2);

    // Updating a key that does not exist is a conflict with "no current entry".
    match store.update(&key(prefix, "ghost"), b"x".to_vec(), r1).await {
        Err(Error::Conflict { current, .. }) => assert!(current.is_none()),
        other => panic!("expected Conflict, got {other:?}"),
    }

    let r3 = store.delete(&k, r2).await.unwrap();
    assert!(r3 > r2);
    assert_eq!(store.get(&k).await.unwrap(), None);
    // Re-creating starts a new life: version 1, new create_revision.
    let r4 = store.create(&k, b"again".to_vec()).await.unwrap();
    let kv = store.get(&k).await.unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.version), (r4, 1));
}

/// A multi-key transaction applies all its writes under one revision, or none of them.
pub async fn txn_is_atomic(store: Arc<dyn Store>, prefix: &str) {
    let (a, b, c) = (key(prefix, "a"), key(prefix, "b"), key(prefix, "c"));
    let ra = store.create(&a, b"a".to_vec()).await.unwrap();
    let rb = store.create(&b, b"b".to_vec()).await.unwrap();

    // One compare fails: nothing changes, and the response shows both current entries.
    let failed = store
        .txn(
            Txn::new()
                .when(Compare::mod_revision(&a, ra))
                .when(Compare::mod_revision(&b, ra))
                .then(Op::put(&a, b"a2".to_vec()))
                .then(Op::put(&c, b"c".to_vec())),
        )
        .await
        .unwrap();
    assert!(!failed.succeeded);
    assert_eq!(failed.revision, rb);
    assert_eq!(failed.current.len(), 2);
    assert_eq!(failed.current[0].as_ref().unwrap().mod_revision, ra);
    assert_eq!(failed.current[1].as_ref().unwrap().mod_revision, rb);
    assert_eq!(store.get(&c).await.unwrap(), None);
    assert_eq!(store.current_revision().await.unwrap(), rb);

    // All compares hold: every op lands under one new revision.
    let ok = store
        .txn(
            Txn::new()
                .when(Compare::mod_revision(&a, ra))
                .when(Compare::mod_revision(&b, rb))
                .when(Compare::absent(&c))
                .then(Op::put(&a, b"a2".to_vec()))
                .then(Op::delete(&b))
                .then(Op::put(&c, b"c".to_vec())),
        )
        .await
        .unwrap();
    assert!(ok.succeeded);
    assert_eq!(ok.revision, rb + 1, "one transaction, one revision");
    assert_eq!(
        store.get(&a).await.unwrap().unwrap().mod_revision,
        ok.revision
    );
    assert_eq!(store.get(&b).await.unwrap(), None);
    assert_eq!(
        store.get(&c).await.unwrap().unwrap().mod_revision,
        ok.revision
    );

    // A transaction that changes nothing (delete of a missing key) keeps the revision.
    let noop = store
        .txn(Txn::new().then(Op::delete(key(prefix, "missing"))))
        .await
        .unwrap();
    assert!(noop.succeeded);
    assert_eq!(noop.revision, ok.revision);
    assert_eq!(store.current_revision().await.unwrap(), ok.revision);
}

/// Malformed requests are refused before anything is written.
pub async fn invalid_requests(store: Arc<dyn Store>, prefix: &str) {
    let before = store.current_revision().await.unwrap();
    let empty = store.txn(Txn::new().then(Op::put("", b"x".to_vec()))).await;
    assert!(matches!(empty, Err(Error::InvalidRequest(_))), "{empty:?}");
    let k = key(prefix, "dup");
    let dup = store
        .txn(
            Txn::new()
                .then(Op::put(&k, b"1".to_vec()))
                .then(Op::put(&k, b"2".to_vec())),
        )
        .await;
    assert!(matches!(dup, Err(Error::InvalidRequest(_))), "{dup:?}");
    assert_eq!(store.current_revision().await.unwrap(), before);
    assert_eq!(store.get(&k).await.unwrap(), None);
}

/// Prefix ranges come back in key order, paged with limit and continuation at one revision,
/// unaffected by writes between pages.
pub async fn range_paging(store: Arc<dyn Store>, prefix: &str) {
    let items = format!("{prefix}items/");
    for i in 0..25 {
        store
            .create(
                &key(&items, &format!("{i:03}")),
                format!("v{i}").into_bytes(),
            )
            .await
            .unwrap();
    }
    // Neighbours that must not show up.
    store
        .create(&key(prefix, "items"), b"x".to_vec())
        .await
        .unwrap();
    store
        .create(&key(prefix, "itemsz"), b"x".to_vec())
        .await
        .unwrap();

    let all = store.range(RangeRequest::prefix(&items)).await.unwrap();
    assert_eq!(all.count, 25);
    assert_eq!(all.kvs.len(), 25);
    assert!(!all.more);
    let snapshot = all.revision;

    let mut seen = Vec::new();
    let mut req = RangeRequest::prefix(&items).limit(10).at_revision(snapshot);
    let mut pages = 0;
    loop {
        let page = store.range(req.clone()).await.unwrap();
        pages += 1;
        assert_eq!(page.revision, snapshot);
        assert!(page.kvs.len() <= 10);
        // Writes between pages: visible at the newest revision only.
        store
            .create(&key(&items, &format!("new{pages}")), b"n".to_vec())
            .await
            .unwrap();
        if pages == 1 {
            let first = page.kvs[0].clone();
            store.delete(&first.key, first.mod_revision).await.unwrap();
        }
        seen.extend(page.kvs.iter().map(|kv| kv.key.clone()));
        if !page.more {
            break;
        }
        assert_eq!(
            page.count,
            25 - (pages - 1) * 10,
            "count covers the rest of the range"
        );
        req = req.after(&page.kvs.last().unwrap().key);
    }
    assert_eq!(pages, 3);
    let expected: Vec<Vec<u8>> = (0..25).map(|i| key(&items, &format!("{i:03}"))).collect();
    assert_eq!(
        seen, expected,
        "every key once, in order, as of the snapshot"
    );

    let now = store.range(RangeRequest::prefix(&items)).await.unwrap();
    assert_eq!(now.count, 25 - 1 + 3);
}

/// Reads at a past revision see the state of that revision.
pub async fn range_at_past_revision(store: Arc<dyn Store>, prefix: &str) {
    let k = key(prefix, "a");
    let other = key(prefix, "b");
    let r1 = store.create(&k, b"v1".to_vec()).await.unwrap();
    let r2 = store.update(&k, b"v2".to_vec(), r1).await.unwrap();
    let r3 = store.create(&other, b"b".to_vec()).await.unwrap();
    let r4 = store.delete(&k, r2).await.unwrap();

    let at = |rev: i64| {
        let store = store.clone();
        let prefix = prefix.to_string();
        async move {
            store
                .range(RangeRequest::prefix(prefix).at_revision(rev))
                .await
                .unwrap()
        }
    };
    let values = |kvs: &[KeyValue]| kvs.iter().map(|kv| kv.value.clone()).collect::<Vec<_>>();
    assert_eq!(values(&at(r1).await.kvs), vec![b"v1".to_vec()]);
    let s2 = at(r2).await;
    assert_eq!(values(&s2.kvs), vec![b"v2".to_vec()]);
    assert_eq!(s2.kvs[0].version, 2);
    assert_eq!(s2.revision, r2);
    assert_eq!(
        values(&at(r3).await.kvs),
        vec![b"v2".to_vec(), b"b".to_vec()]
    );
    assert_eq!(values(&at(r4).await.kvs), vec![b"b".to_vec()]);
    assert_eq!(at(r1 - 1).await.count, 0);
    let single = store
        .range(RangeRequest::key(&k).at_revision(r1))
        .await
        .unwrap();
    assert_eq!(values(&single.kvs), vec![b"v1".to_vec()]);

    let current = store.current_revision().await.unwrap();
    match store
        .range(RangeRequest::prefix(prefix).at_revision(current + 100))
        .await
    {
        Err(Error::FutureRevision { requested, .. }) => assert_eq!(requested, current + 100),
        other => panic!("expected FutureRevision, got {other:?}"),
    }
}

/// A watch delivers every change after the given revision, in order, with prev values, only
/// for its prefix; history first, then live changes.
pub async fn watch_from_revision(store: Arc<dyn Store>, prefix: &str) {
    let watched = format!("{prefix}w/");
    let mut revs = Vec::new();
    for i in 0..5 {
        revs.push(
            store
                .create(&key(&watched, &i.to_string()), vec![i as u8])
                .await
                .unwrap(),
        );
    }
    store
        .create(&key(prefix, "other"), b"x".to_vec())
        .await
        .unwrap();

    let mut stream = store.watch(watched.as_bytes(), revs[1]).await.unwrap();
    let history = collect_events(&mut stream, 3).await;
    assert_eq!(
        history.iter().map(|e| e.revision()).collect::<Vec<_>>(),
        revs[2..].to_vec()
    );
    assert!(
        history
            .iter()
            .all(|e| e.kind == EventKind::Put && e.prev.is_none())
    );

    // Live: update, delete, and a write outside the prefix that must not appear.
    let k0 = key(&watched, "0");
    let up = store.update(&k0, b"new".to_vec(), revs[0]).await.unwrap();
    store
        .create(&key(prefix, "other2"), b"x".to_vec())
        .await
        .unwrap();
    let del = store.delete(&k0, up).await.unwrap();

    let live = collect_events(&mut stream, 2).await;
    assert_eq!(
        live.len(),
        2,
        "the write outside the prefix is not delivered"
    );
    assert_eq!(live[0].kind, EventKind::Put);
    assert_eq!(live[0].kv.value, b"new");
    assert_eq!(live[0].kv.version, 2);
    assert_eq!(live[0].prev.as_ref().unwrap().value, vec![0u8]);
    assert_eq!(live[1].kind, EventKind::Delete);
    assert_eq!(live[1].kv.key, k0);
    assert_eq!(live[1].revision(), del);
    assert_eq!(live[1].prev.as_ref().unwrap().value, b"new");
}

/// A watch resumed from the last revision seen continues exactly where it stopped.
pub async fn watch_resume(store: Arc<dyn Store>, prefix: &str) {
    let start = store.current_revision().await.unwrap();
    let mut stream = store.watch(prefix.as_bytes(), start).await.unwrap();
    for i in 0..10 {
        store
            .create(&key(prefix, &format!("{i:02}")), vec![i])
            .await
            .unwrap();
    }
    let first = collect_events(&mut stream, 4).await;
    let last_seen = first.last().unwrap().revision();
    drop(stream);
    // Changes while no one watches.
    for i in 10..15 {
        store
            .create(&key(prefix, &format!("{i:02}")), vec![i])
            .await
            .unwrap();
    }
    let mut resumed = store.watch(prefix.as_bytes(), last_seen).await.unwrap();
    let rest = collect_events(&mut resumed, 15 - first.len()).await;
    let all: Vec<u8> = first.iter().chain(&rest).map(|e| e.kv.value[0]).collect();
    assert_eq!(all, (0..15).collect::<Vec<u8>>(), "no gap, no duplicate");
    let revs: Vec<i64> = first.iter().chain(&rest).map(|e| e.revision()).collect();
    assert!(revs.windows(2).all(|w| w[0] < w[1]), "strictly increasing");
}

/// After compaction, old revisions are gone for reads and watches; the newest state stays.
pub async fn compaction(store: Arc<dyn Store>, prefix: &str) {
    let k = key(prefix, "a");
    let gone = key(prefix, "gone");
    let r1 = store.create(&k, b"v1".to_vec()).await.unwrap();
    let rg = store.create(&gone, b"g".to_vec()).await.unwrap();
    let r2 = store.update(&k, b"v2".to_vec(), r1).await.unwrap();
    store.delete(&gone, rg).await.unwrap();
    let r3 = store
        .create(&key(prefix, "b"), b"b".to_vec())
        .await
        .unwrap();

    store.compact(r3).await.unwrap();
    assert_eq!(store.compacted_revision().await.unwrap(), r3);

    match store
        .range(RangeRequest::prefix(prefix).at_revision(r2))
        .await
    {
        Err(Error::Compacted {
            requested,
            compacted,
        }) => {
            assert_eq!((requested, compacted), (r2, r3))
        }
        other => panic!("expected Compacted, got {other:?}"),
    }
    let at = store
        .range(RangeRequest::prefix(prefix).at_revision(r3))
        .await
        .unwrap();
    let keys: Vec<Vec<u8>> = at.kvs.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(keys, vec![k.clone(), key(prefix, "b")]);
    let newest = store.get(&k).await.unwrap().unwrap();
    assert_eq!(
        (newest.value.as_slice(), newest.mod_revision),
        (&b"v2"[..], r2)
    );

    // Watching from before the compaction point fails with Compacted.
    let failed = match store.watch(prefix.as_bytes(), r1).await {
        Err(err) => err,
        Ok(mut stream) => next_batch(&mut stream).await.expect_err("compacted watch"),
    };
    assert!(matches!(failed, Error::Compacted { .. }), "{failed:?}");

    // Watching from the compaction point works and sees new writes, with prev values
    // that survived compaction.
    let mut stream = store.watch(prefix.as_bytes(), r3).await.unwrap();
    let r4 = store.update(&k, b"v3".to_vec(), r2).await.unwrap();
    let events = collect_events(&mut stream, 1).await;
    assert_eq!(events[0].revision(), r4);
    assert_eq!(events[0].prev.as_ref().unwrap().value, b"v2");

    // Compacting again at or below the compaction point is refused as compacted.
    assert!(matches!(
        store.compact(r3).await,
        Err(Error::Compacted { .. })
    ));
    let current = store.current_revision().await.unwrap();
    assert!(matches!(
        store.compact(current + 10).await,
        Err(Error::FutureRevision { .. })
    ));
}

/// Values up to [`MAX_VALUE_SIZE`] are stored and read back whole; larger ones are refused.
pub async fn large_values(store: Arc<dyn Store>, prefix: &str) {
    let big: Vec<u8> = (0..MAX_VALUE_SIZE).map(|i| (i % 251) as u8).collect();
    let k = key(prefix, "big");
    let rev = store.create(&k, big.clone()).await.unwrap();
    let kv = store.get(&k).await.unwrap().unwrap();
    assert_eq!(kv.value.len(), MAX_VALUE_SIZE);
    assert!(kv.value == big, "value read back intact");

    let too_big = vec![0u8; MAX_VALUE_SIZE + 1];
    match store.update(&k, too_big, rev).await {
        Err(err @ Error::ValueTooLarge { .. }) => {
            let text = err.to_string();
            assert!(text.contains("limit"), "readable error: {text}");
        }
        other => panic!("expected ValueTooLarge, got {other:?}"),
    }
    assert_eq!(store.get(&k).await.unwrap().unwrap().mod_revision, rev);
}

/// Many concurrent writers: every write gets its own revision, CAS read-modify-write loops
/// lose no update, and a watch sees every revision in order.
pub async fn concurrent_writers(store: Arc<dyn Store>, prefix: &str) {
    const WRITERS: usize = 32;
    const PER_WRITER: usize = 20;
    let start = store.current_revision().await.unwrap();
    let mut watch = store.watch(prefix.as_bytes(), start).await.unwrap();
    let counter = key(prefix, "counter");
    store.create(&counter, b"0".to_vec()).await.unwrap();

    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        let prefix = prefix.to_string();
        let counter = counter.clone();
        tasks.push(tokio::spawn(async move {
            let mut revs = Vec::new();
            for i in 0..PER_WRITER {
                revs.push(
                    store
                        .create(&key(&prefix, &format!("w{w}/{i}")), vec![1; 1024])
                        .await
                        .unwrap(),
                );
                // Increment the shared counter with optimistic concurrency.
                loop {
                    let kv = store.get(&counter).await.unwrap().unwrap();
                    let n: u64 = String::from_utf8(kv.value).unwrap().parse().unwrap();
                    match store
                        .update(&counter, (n + 1).to_string().into_bytes(), kv.mod_revision)
                        .await
                    {
                        Ok(rev) => {
                            revs.push(rev);
                            break;
                        }
                        Err(Error::Conflict { .. }) => continue,
                        Err(err) => panic!("update failed: {err}"),
                    }
                }
            }
            revs
        }));
    }
    let mut all_revs = Vec::new();
    for task in tasks {
        all_revs.extend(task.await.unwrap());
    }
    let total = WRITERS * PER_WRITER * 2;
    all_revs.sort_unstable();
    all_revs.dedup();
    assert_eq!(all_revs.len(), total, "every write has its own revision");

    let final_count = store.get(&counter).await.unwrap().unwrap();
    assert_eq!(
        String::from_utf8(final_count.value).unwrap(),
        (WRITERS * PER_WRITER).to_string(),
        "no lost update"
    );

    let events = collect_events(&mut watch, total + 1).await;
    let revs: Vec<i64> = events.iter().map(|e| e.revision()).collect();
    assert!(
        revs.windows(2).all(|w| w[0] < w[1]),
        "watch in revision order"
    );
    assert_eq!(&revs[1..], all_revs.as_slice(), "watch saw every write");
}

/// Declares one `#[tokio::test]` per conformance case. `$make` is an async expression that
/// returns `(Arc<dyn Store>, guard)`; the guard is kept alive for the test's duration.
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@cases $make;
            create_get_update, create_existing_fails, cas_conflicts, txn_is_atomic,
            invalid_requests, range_paging, range_at_past_revision, watch_from_revision,
            watch_resume, compaction, large_values, concurrent_writers);
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let (store, _guard) = $make.await;
                $crate::conformance::$case(store, concat!("/conformance/", stringify!($case), "/")).await;
            }
        )*
    };
}
