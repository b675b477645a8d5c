//! Periodic compaction of the store's history, as kube-apiserver does with etcd
//! (`--etcd-compaction-interval`, default 5 minutes).
//!
//! Every interval the compactor discards the history older than the revision it saw one
//! interval earlier, so watchers and paged lists keep at least one interval of history while
//! memory (embedded store) and disk (etcd) stop growing with every write. Without it both
//! backends keep every version of every object forever.
//!
//! Several API servers on one etcd may all run it: compacting to a revision that another
//! server already compacted is harmless and only logged at debug level.

use std::sync::Arc;
use std::time::Duration;

use rkube_store::{Error as StoreError, Store};

/// Starts the compactor; it runs until the store closes. An interval of zero disables it.
pub fn start(store: Arc<dyn Store>, interval: Duration) {
    if interval.is_zero() {
        tracing::info!("store compaction disabled");
        return;
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut previous: Option<i64> = None;
        loop {
            tick.tick().await;
            let current = match store.current_revision().await {
                Ok(r) => r,
                Err(StoreError::Closed) => return,
                Err(e) => {
                    tracing::warn!(%e, "compaction skipped: cannot read the store's revision");
                    continue;
                }
            };
            if let Some(target) = previous.filter(|&r| r > 0) {
                match compact_to(&*store, target).await {
                    Ok(true) => tracing::info!(revision = target, "compacted store history"),
                    Ok(false) => {}
                    Err(StoreError::Closed) => return,
                    Err(e) => tracing::warn!(%e, revision = target, "store compaction failed"),
                }
            }
            previous = Some(current);
        }
    });
}

/// Compacts to `revision` unless the store is already compacted that far. Returns whether
/// it compacted.
pub async fn compact_to(store: &dyn Store, revision: i64) -> Result<bool, StoreError> {
    if store.compacted_revision().await? >= revision {
        return Ok(false);
    }
    match store.compact(revision).await {
        Ok(()) => Ok(true),
        // Another server got there first.
        Err(StoreError::Compacted { .. }) => {
            tracing::debug!(revision, "already compacted");
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rkube_store::embedded::EmbeddedStore;

    #[tokio::test]
    async fn compacts_one_interval_behind() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        for i in 0..10 {
            store
                .create(format!("/k{i}").as_bytes(), b"v".to_vec())
                .await
                .unwrap();
        }
        start(store.clone(), Duration::from_millis(50));
        let first = store.current_revision().await.unwrap();
        // Nothing is compacted before one whole interval has passed since a revision was seen.
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(store.compacted_revision().await.unwrap(), 0);
        store.create(b"/later", b"v".to_vec()).await.unwrap();
        let mut compacted = 0;
        for _ in 0..100 {
            compacted = store.compacted_revision().await.unwrap();
            if compacted > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            compacted >= first,
            "compacted to {compacted}, want ≥ {first}"
        );
        // Compacting again to the same or an older revision is a no-op.
        assert!(!compact_to(&*store, compacted).await.unwrap());
    }
}
