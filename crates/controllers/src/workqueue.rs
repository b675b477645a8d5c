//! A client-go style work queue for controllers that key their work themselves (the garbage
//! collector by uid, the endpoints controllers by service, including deleted ones, which
//! kube-runtime's `Controller` does not hand to its reconciler).
//!
//! Semantics as client-go's `workqueue`: a key waits at most once (adding a waiting key again
//! is a no-op); a key being processed is not handed to a second worker, and if it was added
//! meanwhile it is queued again when [`Queue::done`] is called; [`Queue::add_after`] adds
//! later; [`Queue::retry`] adds after a per-key exponential back-off that
//! [`Queue::forget`] resets.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;

/// First retry delay of [`Queue::retry`].
const BASE_DELAY: Duration = Duration::from_millis(50);
/// Longest retry delay of [`Queue::retry`].
const MAX_DELAY: Duration = Duration::from_secs(60);

struct State<K> {
    queue: VecDeque<K>,
    dirty: HashSet<K>,
    processing: HashSet<K>,
    failures: HashMap<K, u32>,
    shut_down: bool,
}

/// A deduplicating work queue shared by a controller's event handlers and workers.
pub struct Queue<K> {
    state: Mutex<State<K>>,
    notify: Notify,
}

impl<K: Clone + Eq + Hash + Send + Sync + 'static> Queue<K> {
    /// An empty queue.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                dirty: HashSet::new(),
                processing: HashSet::new(),
                failures: HashMap::new(),
                shut_down: false,
            }),
            notify: Notify::new(),
        })
    }

    /// Queues `key` unless it already waits.
    pub fn add(&self, key: K) {
        let mut s = self.state.lock();
        if s.shut_down || !s.dirty.insert(key.clone()) {
            return;
        }
        if !s.processing.contains(&key) {
            s.queue.push_back(key);
            drop(s);
            self.notify.notify_one();
        }
    }

    /// Queues `key` after `delay`.
    pub fn add_after(self: &Arc<Self>, key: K, delay: Duration) {
        if delay.is_zero() {
            return self.add(key);
        }
        let this = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            this.add(key);
        });
    }

    /// Queues `key` again after its next back-off delay (50 ms doubling, at most 60 s).
    pub fn retry(self: &Arc<Self>, key: K) {
        let n = {
            let mut s = self.state.lock();
            let n = s.failures.entry(key.clone()).or_insert(0);
            *n += 1;
            *n
        };
        let delay = BASE_DELAY
            .saturating_mul(1u32 << (n - 1).min(20))
            .min(MAX_DELAY);
        self.add_after(key, delay);
    }

    /// Resets the back-off of `key` (it was processed successfully).
    pub fn forget(&self, key: &K) {
        self.state.lock().failures.remove(key);
    }

    /// The next key to process; `None` once the queue is shut down.
    pub async fn get(&self) -> Option<K> {
        loop {
            let notified = self.notify.notified();
            {
                let mut s = self.state.lock();
                if s.shut_down {
                    return None;
                }
                if let Some(key) = s.queue.pop_front() {
                    s.dirty.remove(&key);
                    s.processing.insert(key.clone());
                    if !s.queue.is_empty() {
                        self.notify.notify_one();
                    }
                    return Some(key);
                }
            }
            notified.await;
        }
    }

    /// Marks `key` processed; queues it again if it was added meanwhile.
    pub fn done(&self, key: &K) {
        let mut s = self.state.lock();
        s.processing.remove(key);
        if s.dirty.contains(key) {
            s.queue.push_back(key.clone());
            drop(s);
            self.notify.notify_one();
        }
    }

    /// Stops handing out keys: every pending and future [`Queue::get`] returns `None`.
    pub fn shut_down(&self) {
        self.state.lock().shut_down = true;
        self.notify.notify_waiters();
    }

    /// Keys waiting (not counting those being processed).
    pub fn len(&self) -> usize {
        self.state.lock().queue.len()
    }

    /// Whether no key waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dedups_waiting_keys_and_requeues_keys_added_while_processing() {
        let q = Queue::new();
        q.add("a");
        q.add("a");
        q.add("b");
        assert_eq!(q.len(), 2);
        let a = q.get().await.unwrap();
        assert_eq!(a, "a");
        q.add("a"); // while processing: not handed out twice
        assert_eq!(q.get().await, Some("b"));
        assert!(q.is_empty());
        q.done(&"a");
        assert_eq!(q.get().await, Some("a"));
        q.done(&"a");
        q.done(&"b");
        assert!(q.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn retry_backs_off_and_shut_down_wakes_workers() {
        let q = Queue::new();
        q.retry("x");
        tokio::time::sleep(Duration::from_millis(49)).await;
        assert!(q.is_empty());
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert_eq!(q.get().await, Some("x"));
        q.done(&"x");
        q.retry("x");
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(q.is_empty(), "second retry waits 100ms");
        let worker = {
            let q = q.clone();
            tokio::spawn(async move { (q.get().await, q.get().await) })
        };
        tokio::time::sleep(Duration::from_millis(60)).await;
        q.shut_down();
        let (first, second) = worker.await.unwrap();
        assert_eq!(first, Some("x"));
        assert_eq!(second, None);
    }
}
