//! Expectations (upstream's `UIDTrackingControllerExpectations`): after a controller
//! creates or deletes pods it waits until its watch has seen those changes before it
//! counts pods again, so a cache that lags behind the API never causes a second round of
//! creates or deletes. Expectations expire after five minutes in case an event is lost.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use super::index::{Key, Observed};

/// How long an unmet expectation blocks its controller (upstream `ExpectationsTimeout`).
pub const TIMEOUT: Duration = Duration::from_secs(5 * 60);

#[derive(Debug)]
struct Expectation {
    adds: i64,
    dels: HashSet<Key>,
    set_at: Instant,
}

/// Pending creations and deletions per controller UID.
#[derive(Debug, Default)]
pub struct Expectations {
    map: Mutex<HashMap<String, Expectation>>,
}

impl Expectations {
    /// Whether the controller `uid` may count its pods: nothing pending, or expired.
    pub fn satisfied(&self, uid: &str) -> bool {
        match self.map.lock().get(uid) {
            None => true,
            Some(e) => (e.adds <= 0 && e.dels.is_empty()) || e.set_at.elapsed() > TIMEOUT,
        }
    }

    /// `uid` is about to create `n` pods.
    pub fn expect_creations(&self, uid: &str, n: usize) {
        self.map.lock().insert(
            uid.to_string(),
            Expectation {
                adds: n as i64,
                dels: HashSet::new(),
                set_at: Instant::now(),
            },
        );
    }

    /// `uid` is about to delete `keys`.
    pub fn expect_deletions(&self, uid: &str, keys: impl IntoIterator<Item = Key>) {
        self.map.lock().insert(
            uid.to_string(),
            Expectation {
                adds: 0,
                dels: keys.into_iter().collect(),
                set_at: Instant::now(),
            },
        );
    }

    /// One pod of `uid` was created (or will never be: a failed create).
    pub fn creation_observed(&self, uid: &str) {
        if let Some(e) = self.map.lock().get_mut(uid) {
            e.adds -= 1;
        }
    }

    /// The pod `key` of `uid` is gone (or its deletion failed).
    pub fn deletion_observed(&self, uid: &str, key: &Key) {
        if let Some(e) = self.map.lock().get_mut(uid) {
            e.dels.remove(key);
        }
    }

    /// Applies what the pod index saw.
    pub fn observe(&self, seen: Observed) {
        match seen {
            Observed::Created { owner } => self.creation_observed(&owner),
            Observed::Deleted { owner, key } => self.deletion_observed(&owner, &key),
            // After a relist the cache is the truth again.
            Observed::Relisted => self.map.lock().clear(),
        }
    }

    /// The controller `uid` is gone.
    pub fn forget(&self, uid: &str) {
        self.map.lock().remove(uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn creations_and_deletions_must_be_observed_or_expire() {
        let e = Expectations::default();
        assert!(e.satisfied("u"));
        e.expect_creations("u", 2);
        assert!(!e.satisfied("u"));
        e.observe(Observed::Created { owner: "u".into() });
        assert!(!e.satisfied("u"));
        e.creation_observed("u");
        assert!(e.satisfied("u"));

        let key: Key = ("ns".into(), "p".into());
        e.expect_deletions("u", [key.clone()]);
        assert!(!e.satisfied("u"));
        e.observe(Observed::Deleted {
            owner: "other".into(),
            key: key.clone(),
        });
        assert!(!e.satisfied("u"));
        e.observe(Observed::Deleted {
            owner: "u".into(),
            key,
        });
        assert!(e.satisfied("u"));

        e.expect_creations("u", 1);
        tokio::time::advance(TIMEOUT + Duration::from_secs(1)).await;
        assert!(e.satisfied("u"), "expired expectations do not block");
        e.expect_creations("u", 1);
        e.observe(Observed::Relisted);
        assert!(e.satisfied("u"));
        e.expect_creations("u", 1);
        e.forget("u");
        assert!(e.satisfied("u"));
    }
}
