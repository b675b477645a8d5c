//! Tests of the etcd-specific mapping of [`EtcdStore`], against throwaway etcd servers.
//! (The behaviour both backends share is checked by the conformance suite.)

use std::time::{Duration, Instant};

use futures::StreamExt;
use rkube_store::etcd::EtcdStore;
use rkube_store::testing::EtcdProcess;
use rkube_store::{
    Compare, Error, Event, EventKind, MAX_VALUE_SIZE, Op, RangeRequest, Store, Txn, WatchStream,
};

async fn start() -> (EtcdProcess, EtcdStore) {
    let proc = tokio::task::spawn_blocking(EtcdProcess::start)
        .await
        .expect("start task")
        .expect("start etcd");
    let store = EtcdStore::connect(std::slice::from_ref(&proc.endpoint))
        .await
        .expect("connect");
    (proc, store)
}

async fn next(stream: &mut WatchStream) -> rkube_store::Result<Vec<Event>> {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("watch item within 10 s")
        .expect("the watch stream ended without an error")
}

/// A loopback port with nothing listening on it.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn connect_refused_fails_fast_with_unavailable() {
    let port = closed_port();
    for endpoint in [
        format!("127.0.0.1:{port}"),
        format!("http://127.0.0.1:{port}"),
    ] {
        let started = Instant::now();
        let err = EtcdStore::connect(&[endpoint]).await.unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "{:?}",
            started.elapsed()
        );
        match err {
            Error::Unavailable { endpoint, message } => {
                assert_eq!(endpoint, format!("http://127.0.0.1:{port}"));
                assert_eq!(message, "connection refused");
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn connect_to_silent_server_times_out_with_unavailable() {
    // Accepts TCP connections (the kernel completes them) but never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
    let started = Instant::now();
    let err = EtcdStore::connect(&[endpoint]).await.unwrap_err();
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(7), "took {elapsed:?}");
    assert!(
        matches!(err, Error::Unavailable { .. }),
        "expected Unavailable, got {err:?}"
    );
    drop(listener);
}

#[tokio::test]
async fn connect_refuses_bad_endpoints() {
    for endpoints in [
        vec![],
        vec![" ".to_string()],
        vec!["https://127.0.0.1:1".to_string()],
    ] {
        let err = EtcdStore::connect(&endpoints).await.unwrap_err();
        assert!(
            matches!(err, Error::InvalidRequest(_)),
            "{endpoints:?}: {err:?}"
        );
    }
}

#[tokio::test]
async fn connect_uses_any_live_endpoint() {
    let (proc, _store) = start().await;
    let dead = format!("127.0.0.1:{}", closed_port());
    let store = EtcdStore::connect(&[dead, proc.endpoint.clone()])
        .await
        .expect("one live endpoint is enough");
    // Requests the balancer sends to the dead endpoint are retried on the live one.
    for _ in 0..200 {
        store.current_revision().await.unwrap();
    }
    store.create(b"/k", b"v".to_vec()).await.unwrap();
    let mut watch = store.watch(b"/", 0).await.unwrap();
    assert_eq!(next(&mut watch).await.unwrap()[0].kv.key, b"/k");
}

#[tokio::test]
async fn value_size_limit() {
    let (_proc, store) = start().await;
    let big = vec![7u8; MAX_VALUE_SIZE];
    let rev = store.create(b"/big", big.clone()).await.unwrap();
    let kv = store.get(b"/big").await.unwrap().unwrap();
    assert_eq!(kv.value, big);
    assert_eq!(kv.mod_revision, rev);

    let err = store
        .create(b"/too-big", vec![0u8; MAX_VALUE_SIZE + 1])
        .await
        .unwrap_err();
    match err {
        Error::ValueTooLarge { size, limit, .. } => {
            assert_eq!(size, MAX_VALUE_SIZE + 1);
            assert_eq!(limit, MAX_VALUE_SIZE);
        }
        other => panic!("expected ValueTooLarge, got {other:?}"),
    }
    assert!(store.get(b"/too-big").await.unwrap().is_none());
}

#[tokio::test]
async fn etcd_request_limits_are_invalid_requests() {
    let (_proc, store) = start().await;
    // Each value fits, but together they are over etcd's request limit (2 MiB here).
    let err = store
        .txn(
            Txn::new()
                .then(Op::put("/a", vec![1; MAX_VALUE_SIZE]))
                .then(Op::put("/b", vec![2; MAX_VALUE_SIZE])),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidRequest(_)), "{err:?}");
    // etcd's default --max-txn-ops is 128.
    let mut txn = Txn::new();
    for i in 0..129 {
        txn = txn.then(Op::put(format!("/k{i}"), vec![]));
    }
    let err = store.txn(txn).await.unwrap_err();
    assert!(matches!(err, Error::InvalidRequest(_)), "{err:?}");
    assert_eq!(
        store.range(RangeRequest::prefix("/")).await.unwrap().count,
        0
    );
}

#[tokio::test]
async fn large_ranges_and_watch_batches_are_received() {
    // Four 1.5 MiB values: 6 MiB in one range response and in one watch catch-up response,
    // over gRPC's default 4 MiB decoding limit.
    let (_proc, store) = start().await;
    let before = store.current_revision().await.unwrap();
    for i in 0..4 {
        store
            .create(
                format!("/big/{i}").as_bytes(),
                vec![i as u8; MAX_VALUE_SIZE],
            )
            .await
            .unwrap();
    }
    let resp = store.range(RangeRequest::prefix("/big/")).await.unwrap();
    assert_eq!(resp.kvs.len(), 4);
    assert_eq!(resp.count, 4);
    let mut watch = store.watch(b"/big/", before).await.unwrap();
    for i in 0..4 {
        let batch = next(&mut watch).await.unwrap();
        assert_eq!(batch.len(), 1);
        assert_eq!(batch[0].kv.key, format!("/big/{i}").into_bytes());
        assert_eq!(batch[0].kv.value.len(), MAX_VALUE_SIZE);
    }
}

#[tokio::test]
async fn range_mapping() {
    let (_proc, store) = start().await;
    for key in ["/a/1", "/a/2", "/a/3", "/b/1"] {
        store
            .create(key.as_bytes(), key.as_bytes().to_vec())
            .await
            .unwrap();
    }
    let resp = store
        .range(RangeRequest::prefix("/a/").limit(2))
        .await
        .unwrap();
    let keys: Vec<_> = resp.kvs.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(keys, vec![b"/a/1".to_vec(), b"/a/2".to_vec()]);
    assert!(resp.more);
    assert_eq!(resp.count, 3);
    assert_eq!(resp.revision, store.current_revision().await.unwrap());

    // Some(empty) = no upper bound; an empty start key is the smallest key.
    let all = RangeRequest {
        key: Vec::new(),
        range_end: Some(Vec::new()),
        ..RangeRequest::default()
    };
    assert_eq!(store.range(all).await.unwrap().count, 4);
    let from_b = RangeRequest {
        key: b"/b".to_vec(),
        range_end: Some(Vec::new()),
        ..RangeRequest::default()
    };
    assert_eq!(store.range(from_b).await.unwrap().kvs.len(), 1);

    // A past revision is echoed back.
    let first = store.get(b"/a/1").await.unwrap().unwrap().mod_revision;
    let old = store
        .range(RangeRequest::prefix("/").at_revision(first))
        .await
        .unwrap();
    assert_eq!(old.revision, first);
    assert_eq!(old.kvs.len(), 1);

    let current = store.current_revision().await.unwrap();
    match store
        .range(RangeRequest::prefix("/").at_revision(current + 10))
        .await
    {
        Err(Error::FutureRevision {
            requested,
            current: c,
        }) => {
            assert_eq!(requested, current + 10);
            assert_eq!(c, current);
        }
        other => panic!("expected FutureRevision, got {other:?}"),
    }
}

#[tokio::test]
async fn txn_failure_reports_current_entries_in_compare_order() {
    let (_proc, store) = start().await;
    let rev_a = store.create(b"/a", b"1".to_vec()).await.unwrap();
    let resp = store
        .txn(
            Txn::new()
                .when(Compare::absent("/missing"))
                .when(Compare::mod_revision("/a", rev_a + 100))
                .then(Op::put("/c", b"x".to_vec())),
        )
        .await
        .unwrap();
    assert!(!resp.succeeded);
    assert_eq!(resp.revision, rev_a);
    assert_eq!(resp.current.len(), 2);
    assert!(resp.current[0].is_none());
    let a = resp.current[1].as_ref().expect("current /a");
    assert_eq!(
        (
            a.key.as_slice(),
            a.value.as_slice(),
            a.mod_revision,
            a.version
        ),
        (&b"/a"[..], &b"1"[..], rev_a, 1)
    );

    // Conflict and AlreadyExists come with the current entry.
    match store.update(b"/a", b"2".to_vec(), rev_a - 1).await {
        Err(Error::Conflict {
            current: Some(kv), ..
        }) => assert_eq!(kv.mod_revision, rev_a),
        other => panic!("expected Conflict, got {other:?}"),
    }
    match store.create(b"/a", b"2".to_vec()).await {
        Err(Error::AlreadyExists {
            current: Some(kv), ..
        }) => assert_eq!(kv.value, b"1"),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }

    // A delete of a missing key succeeds without a new revision (etcd semantics).
    let resp = store
        .txn(Txn::new().then(Op::delete("/nothing")))
        .await
        .unwrap();
    assert!(resp.succeeded);
    assert_eq!(resp.revision, rev_a);

    // Duplicate keys are refused before reaching etcd.
    let err = store
        .txn(
            Txn::new()
                .then(Op::put("/d", vec![]))
                .then(Op::delete("/d")),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidRequest(_)), "{err:?}");
}

#[tokio::test]
async fn delete_events_carry_prev_and_revisions_are_split() {
    let (_proc, store) = start().await;
    let start = store.current_revision().await.unwrap();
    let r1 = store.create(b"/w/a", b"a1".to_vec()).await.unwrap();
    let r2 = store.update(b"/w/a", b"a2".to_vec(), r1).await.unwrap();
    // One transaction, two keys: one item with two events.
    let r3 = store
        .txn(
            Txn::new()
                .then(Op::put("/w/b", b"b1".to_vec()))
                .then(Op::delete("/w/a")),
        )
        .await
        .unwrap()
        .revision;
    store.create(b"/other", b"x".to_vec()).await.unwrap();

    // All of this is history by now, so etcd sends it in one response: it must be split.
    let mut watch = store.watch(b"/w/", start).await.unwrap();
    let first = next(&mut watch).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].kind, EventKind::Put);
    assert_eq!(first[0].revision(), r1);
    assert_eq!(first[0].kv.version, 1);
    assert!(first[0].prev.is_none());

    let second = next(&mut watch).await.unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].revision(), r2);
    assert_eq!(second[0].prev.as_ref().unwrap().value, b"a1");

    let third = next(&mut watch).await.unwrap();
    assert_eq!(third.len(), 2);
    assert!(third.iter().all(|e| e.revision() == r3));
    let put = third.iter().find(|e| e.kind == EventKind::Put).unwrap();
    assert_eq!(put.kv.key, b"/w/b");
    let del = third.iter().find(|e| e.kind == EventKind::Delete).unwrap();
    assert_eq!(del.kv.key, b"/w/a");
    assert!(del.kv.value.is_empty());
    assert_eq!(
        (del.kv.create_revision, del.kv.mod_revision, del.kv.version),
        (0, r3, 0)
    );
    let prev = del
        .prev
        .as_ref()
        .expect("a delete carries the deleted entry");
    assert_eq!(
        (
            prev.value.as_slice(),
            prev.create_revision,
            prev.mod_revision,
            prev.version
        ),
        (&b"a2"[..], r1, r2, 2)
    );

    // A live event after the catch-up.
    let r5 = store.delete(b"/w/b", r3).await.unwrap();
    let live = next(&mut watch).await.unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].kind, EventKind::Delete);
    assert_eq!(live[0].revision(), r5);
    assert_eq!(live[0].prev.as_ref().unwrap().value, b"b1");
}

#[tokio::test]
async fn compaction_mapping() {
    let (_proc, store) = start().await;
    assert_eq!(store.compacted_revision().await.unwrap(), 0);
    let mut rev = 0;
    for i in 0..10 {
        rev = store
            .txn(Txn::new().then(Op::put("/c/k", format!("{i}").into_bytes())))
            .await
            .unwrap()
            .revision;
    }
    let point = rev - 3;
    store.compact(point).await.unwrap();
    assert_eq!(store.compacted_revision().await.unwrap(), point);
    // Compacting again at or below the point is refused, with the point.
    for again in [point, point - 2, 0] {
        match store.compact(again).await {
            Err(Error::Compacted {
                requested,
                compacted,
            }) => assert_eq!((requested, compacted), (again, point)),
            other => panic!("expected Compacted, got {other:?}"),
        }
    }

    // Reads at the point work, below it fail.
    store
        .range(RangeRequest::key("/c/k").at_revision(point))
        .await
        .unwrap();
    match store
        .range(RangeRequest::key("/c/k").at_revision(point - 1))
        .await
    {
        Err(Error::Compacted {
            requested,
            compacted,
        }) => assert_eq!((requested, compacted), (point - 1, point)),
        other => panic!("expected Compacted, got {other:?}"),
    }

    // A watch from before the point fails as its first item, and the stream ends.
    let mut watch = store.watch(b"/c/", point - 5).await.unwrap();
    match next(&mut watch).await {
        Err(Error::Compacted {
            requested,
            compacted,
        }) => assert_eq!((requested, compacted), (point - 4, point)),
        other => panic!("expected Compacted, got {other:?}"),
    }
    assert!(watch.next().await.is_none());

    // A watch from the point itself replays what is left.
    let mut watch = store.watch(b"/c/", point - 1).await.unwrap();
    assert_eq!(next(&mut watch).await.unwrap()[0].revision(), point);

    // Compacting the future is refused.
    match store.compact(rev + 5).await {
        Err(Error::FutureRevision { requested, current }) => {
            assert_eq!((requested, current), (rev + 5, rev));
        }
        other => panic!("expected FutureRevision, got {other:?}"),
    }
}

#[tokio::test]
async fn compaction_by_another_client_is_found() {
    let (proc, store) = start().await;
    let other = EtcdStore::connect(std::slice::from_ref(&proc.endpoint))
        .await
        .unwrap();
    let mut rev = 0;
    for i in 0..50 {
        rev = store
            .txn(Txn::new().then(Op::put(format!("/k{i}"), vec![])))
            .await
            .unwrap()
            .revision;
    }
    other.compact(rev - 17).await.unwrap();
    assert_eq!(store.compacted_revision().await.unwrap(), rev - 17);
    other.compact(rev - 3).await.unwrap();
    // `store` only knows of rev - 17: etcd refuses, and the error has the real point.
    match store.compact(rev - 10).await {
        Err(Error::Compacted {
            requested,
            compacted,
        }) => assert_eq!((requested, compacted), (rev - 10, rev - 3)),
        other => panic!("expected Compacted, got {other:?}"),
    }
    match store.range(RangeRequest::key("/k0").at_revision(2)).await {
        Err(Error::Compacted {
            requested,
            compacted,
        }) => assert_eq!((requested, compacted), (2, rev - 3)),
        other => panic!("expected Compacted, got {other:?}"),
    }
}

#[tokio::test]
async fn watch_ends_with_unavailable_when_the_server_dies() {
    let (proc, store) = start().await;
    let mut watch = store.watch(b"/", 0).await.unwrap();
    store.create(b"/x", vec![]).await.unwrap();
    assert_eq!(next(&mut watch).await.unwrap().len(), 1);
    drop(proc);
    match next(&mut watch).await {
        Err(Error::Unavailable { .. }) => {}
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(watch.next().await.is_none());
    // Unary calls fail the same way, and quickly.
    let started = Instant::now();
    let err = store.current_revision().await.unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// A gauge from etcd's `/metrics` (on the client port).
fn etcd_metric(endpoint: &str, name: &str) -> i64 {
    use std::io::{Read, Write};
    let addr = endpoint.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).unwrap();
    body.lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("metric {name} not found")) as i64
}

#[tokio::test]
async fn dropping_a_watch_cancels_it() {
    let (proc, store) = start().await;
    let watches: Vec<_> = futures::future::join_all((0..20).map(|_| store.watch(b"/", 0)))
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    let watchers = "etcd_debugging_mvcc_watcher_total ";
    assert_eq!(etcd_metric(&proc.endpoint, watchers), 20);
    drop(watches);
    let deadline = Instant::now() + Duration::from_secs(5);
    while etcd_metric(&proc.endpoint, watchers) != 0 {
        assert!(Instant::now() < deadline, "etcd still has watchers");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Still usable, and a new watch sees new writes.
    let mut watch = store.watch(b"/", 0).await.unwrap();
    store.create(b"/y", vec![]).await.unwrap();
    assert_eq!(next(&mut watch).await.unwrap()[0].kv.key, b"/y");
}

#[test]
fn etcd_process_cleans_up() {
    let proc = EtcdProcess::start().expect("start etcd");
    let pid = proc.pid();
    let dir = proc.data_dir().to_path_buf();
    assert!(dir.is_dir());
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    drop(proc);
    assert!(!dir.exists(), "data dir removed");
    // Killed and reaped: the pid is gone (or reused by something that is not this etcd).
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    assert!(
        !String::from_utf8_lossy(&cmdline).contains(dir.to_string_lossy().as_ref()),
        "etcd still running"
    );
}
