//! The embedded backend on disk: `kill -9` durability, restart, the data dir lock, and
//! corrupt files left untouched.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rkube_store::embedded::{EmbeddedStore, Options, SNAPSHOT_FILE, WAL_FILE};
use rkube_store::{Error, RangeRequest, Store};

const CHILD_DIR_ENV: &str = "RKUBE_STORE_DURABILITY_CHILD_DIR";

/// Not a test on its own: the writer process of `acknowledged_writes_survive_kill_9`. It is
/// re-executed by that test with the env var set, writes concurrently and prints one `ACK` line
/// per acknowledged write, until it is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durability_child() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return;
    };
    // Small snapshot threshold: the kill lands among snapshots and log appends, so recovery
    // reads a snapshot and replays the log after it.
    let options = Options {
        min_snapshot_log_bytes: 256 << 10,
    };
    let store = Arc::new(EmbeddedStore::open_with(&dir, options).unwrap());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    for writer in 0..16 {
        let store = store.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            for i in 0.. {
                let key = format!("/durable/{writer}/{i}");
                let rev = store
                    .create(key.as_bytes(), format!("value-{writer}-{i}").into_bytes())
                    .await
                    .unwrap();
                if tx.send(format!("ACK {key} {rev}")).is_err() {
                    return;
                }
            }
        });
    }
    drop(tx);
    let mut out = std::io::stdout().lock();
    // Bounded: the parent kills us long before this.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while let Ok(Some(line)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        writeln!(out, "{line}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "durability_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut acked = Vec::new();
    for line in stdout.lines() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("ACK ") {
            let (key, rev) = rest.rsplit_once(' ').unwrap();
            acked.push((key.to_string(), rev.parse::<i64>().unwrap()));
            if acked.len() >= 3000 {
                break;
            }
        }
    }
    // SIGKILL while the writers are still going.
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        acked.len() >= 3000,
        "child acknowledged {} writes",
        acked.len()
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = EmbeddedStore::open(dir.path()).expect("reopen after kill -9");
        for (key, rev) in &acked {
            let kv = store
                .get(key.as_bytes())
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("acknowledged write {key} lost"));
            assert_eq!(kv.mod_revision, *rev, "{key}");
        }
        let max = acked.iter().map(|(_, r)| *r).max().unwrap();
        assert!(store.current_revision().await.unwrap() >= max);
        // The store is whole: every key present has consistent metadata, and it takes writes.
        let all = store
            .range(RangeRequest::prefix("/durable/"))
            .await
            .unwrap();
        assert!(all.count >= acked.len());
        assert!(
            all.kvs
                .iter()
                .all(|kv| kv.version == 1 && kv.create_revision == kv.mod_revision)
        );
        store.create(b"/after", b"x".to_vec()).await.unwrap();
    });
}

#[tokio::test]
async fn data_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (rev, compacted) = {
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let r1 = store.create(b"/k", b"v1".to_vec()).await.unwrap();
        let r2 = store.update(b"/k", b"v2".to_vec(), r1).await.unwrap();
        store.create(b"/j", b"j".to_vec()).await.unwrap();
        store.compact(r2).await.unwrap();
        (store.current_revision().await.unwrap(), r2)
    };
    // The writer thread lets go of the file shortly after the last handle is dropped.
    let store = open_retrying(dir.path()).await;
    assert_eq!(store.current_revision().await.unwrap(), rev);
    assert_eq!(store.compacted_revision().await.unwrap(), compacted);
    assert_eq!(store.get(b"/k").await.unwrap().unwrap().value, b"v2");
    let next = store.create(b"/n", b"n".to_vec()).await.unwrap();
    assert_eq!(next, rev + 1, "revisions continue after a restart");
}

async fn open_retrying(dir: &std::path::Path) -> EmbeddedStore {
    for _ in 0..50 {
        match EmbeddedStore::open(dir) {
            Ok(store) => return store,
            Err(Error::DataDirLocked { .. }) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(err) => panic!("reopen: {err}"),
        }
    }
    panic!("store still locked after its last handle was dropped");
}

#[test]
fn second_open_is_refused_with_the_holder_pid() {
    let dir = tempfile::tempdir().unwrap();
    let _first = EmbeddedStore::open(dir.path()).unwrap();
    let err = EmbeddedStore::open(dir.path())
        .err()
        .expect("second open must fail");
    assert!(
        matches!(err, Error::DataDirLocked { holder: Some(pid), .. } if pid == std::process::id()),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("in use by another rkube process"), "{text}");
    assert!(
        text.contains("--data-dir"),
        "the message names the fix: {text}"
    );
}

#[test]
fn garbage_files_are_reported_and_left_untouched() {
    let garbage: Vec<u8> = (0..65536u32).map(|i| (i * 7 % 256) as u8).collect();
    for name in [SNAPSHOT_FILE, WAL_FILE] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, &garbage).unwrap();
        let err = EmbeddedStore::open(dir.path()).err().expect("must fail");
        assert!(matches!(err, Error::Corrupt { .. }), "{name}: {err:?}");
        assert!(err.to_string().contains(&path.display().to_string()));
        assert!(err.to_string().contains("left untouched"));
        assert!(std::fs::read(&path).unwrap() == garbage, "{name} untouched");
    }
}

#[tokio::test]
async fn damaged_snapshot_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = EmbeddedStore::open(dir.path()).unwrap();
        store.create(b"/k", b"value".to_vec()).await.unwrap();
    }
    // Waits for the first store to let go (its writer writes the shutdown snapshot).
    drop(open_retrying(dir.path()).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let path = dir.path().join(SNAPSHOT_FILE);
    let mut bytes = std::fs::read(&path).expect("clean shutdown writes a snapshot");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&path, &bytes).unwrap();
    let err = open_retrying_err(dir.path()).await;
    assert!(err.to_string().contains("checksum"), "{err}");
    assert!(std::fs::read(&path).unwrap() == bytes, "snapshot untouched");
}

async fn open_retrying_err(dir: &std::path::Path) -> Error {
    for _ in 0..50 {
        match EmbeddedStore::open(dir) {
            Ok(_) => panic!("open must fail"),
            Err(Error::DataDirLocked { .. }) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(err) => return err,
        }
    }
    panic!("store still locked");
}

#[tokio::test]
async fn log_is_snapshotted_once_it_outgrows_the_threshold() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        min_snapshot_log_bytes: 64 << 10,
    };
    let store = EmbeddedStore::open_with(dir.path(), options).unwrap();
    for i in 0..200 {
        store
            .create(format!("/s/{i:04}").as_bytes(), vec![b'v'; 1024])
            .await
            .unwrap();
    }
    let snapshot = dir.path().join(SNAPSHOT_FILE);
    let wal = dir.path().join(WAL_FILE);
    assert!(snapshot.exists(), "a snapshot was written");
    assert!(
        std::fs::metadata(&wal).unwrap().len() < 100 * 1024,
        "the log was emptied at the snapshot"
    );
    // Recover from the files as they are now, as after a crash (no shutdown snapshot): copy
    // them away while the store is still open.
    let copy = tempfile::tempdir().unwrap();
    std::fs::copy(&snapshot, copy.path().join(SNAPSHOT_FILE)).unwrap();
    std::fs::copy(&wal, copy.path().join(WAL_FILE)).unwrap();
    let rev = store.current_revision().await.unwrap();
    let reopened = EmbeddedStore::open(copy.path()).unwrap();
    assert_eq!(reopened.current_revision().await.unwrap(), rev);
    let all = reopened.range(RangeRequest::prefix("/s/")).await.unwrap();
    assert_eq!(all.count, 200);
}

#[test]
fn data_dir_that_is_a_file_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let err = EmbeddedStore::open(&file).err().expect("must fail");
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("not-a-dir"));
}
