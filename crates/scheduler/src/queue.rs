//! The scheduling queue, as upstream's `PriorityQueue`:
//!
//! - **active**: pods ready to be tried, highest priority first, then oldest (PrioritySort);
//! - **backoff**: pods that failed recently and wait `1 s × 2^(attempts-1)` (capped at 10 s)
//!   before going back to active;
//! - **unschedulable**: pods rejected by plugins; a cluster event one of the rejecting
//!   plugins registered for (and whose hint does not say Skip) moves them to backoff or
//!   active. Pods left there for 5 minutes are retried anyway.
//! - **gated**: pods a PreEnqueue plugin (scheduling gates) keeps out until an update.
//!
//! A popped pod is *in flight* until its cycle ends; events arriving meanwhile are
//! remembered so a rejection they may have resolved goes to backoff, not unschedulable.
//! The queue also keeps the nominator: pods nominated (by preemption) to a node.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::framework::{ClusterEvent, EventObjects, Framework, PluginSet, PodInfo};
use crate::plugins::queuesort;

/// Where a queued pod is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// Waiting in the active queue.
    Active,
    /// Waiting out its backoff.
    Backoff,
    /// Rejected; waiting for a cluster event.
    Unschedulable,
    /// Kept out by a PreEnqueue plugin until the pod changes.
    Gated,
    /// Being scheduled.
    InFlight,
}

/// A pod in the queue.
#[derive(Debug, Clone)]
pub struct QueuedPod {
    /// The pod.
    pub info: Arc<PodInfo>,
    /// Scheduling attempts so far.
    pub attempts: u32,
    /// When the pod last failed (its backoff counts from here).
    pub last_failure: Option<Instant>,
    /// Plugins that rejected the pod in its last attempt.
    pub unschedulable_plugins: PluginSet,
    /// Where it is.
    pub location: Location,
    /// Order within its priority (smaller: earlier).
    seq: u64,
    /// Validates heap entries (bumped whenever the pod is pushed again).
    version: u64,
    unschedulable_since: Option<Instant>,
    inflight_interest: PluginSet,
}

#[derive(Debug, PartialEq, Eq)]
struct ActiveEntry {
    priority: i32,
    seq: u64,
    version: u64,
    uid: String,
}

impl Ord for ActiveEntry {
    fn cmp(&self, other: &Self) -> Ordering {
        if queuesort::less(self.priority, self.seq, other.priority, other.seq) {
            Ordering::Greater
        } else if queuesort::less(other.priority, other.seq, self.priority, self.seq) {
            Ordering::Less
        } else {
            Ordering::Equal
        }
    }
}

impl PartialOrd for ActiveEntry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Queue timings.
#[derive(Debug, Clone, Copy)]
pub struct QueueConfig {
    /// First backoff (upstream: 1 s).
    pub initial_backoff: Duration,
    /// Longest backoff (upstream: 10 s).
    pub max_backoff: Duration,
    /// Pods unschedulable this long are retried without an event (upstream: 5 min).
    pub max_in_unschedulable: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(10),
            max_in_unschedulable: Duration::from_secs(300),
        }
    }
}

/// The scheduling queue.
#[derive(Debug, Default)]
pub struct SchedulingQueue {
    pods: HashMap<String, QueuedPod>,
    active: BinaryHeap<ActiveEntry>,
    backoff: BinaryHeap<Reverse<(Instant, u64, String)>>,
    unschedulable: HashSet<String>,
    in_flight: HashSet<String>,
    seq: u64,
    nominated: HashMap<String, Vec<Arc<PodInfo>>>,
    nominated_node_of: HashMap<String, String>,
    config: QueueConfig,
}

/// Counts per location.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Active.
    pub active: usize,
    /// Backoff.
    pub backoff: usize,
    /// Unschedulable.
    pub unschedulable: usize,
    /// Gated.
    pub gated: usize,
    /// In flight.
    pub in_flight: usize,
}

impl SchedulingQueue {
    /// An empty queue.
    #[must_use]
    pub fn new(config: QueueConfig) -> Self {
        Self {
            config,
            ..Default::default()
        }
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// The backoff after `attempts` attempts.
    pub fn backoff_duration(&self, attempts: u32) -> Duration {
        let mut d = self.config.initial_backoff;
        for _ in 1..attempts {
            d = d.saturating_mul(2);
            if d > self.config.max_backoff {
                return self.config.max_backoff;
            }
        }
        d.min(self.config.max_backoff)
    }

    fn backoff_expiry(&self, p: &QueuedPod) -> Option<Instant> {
        p.last_failure
            .map(|t| t + self.backoff_duration(p.attempts))
    }

    /// Moves pod `uid` to the active queue.
    fn move_to_active(&mut self, uid: &str) {
        let version = self.next_seq();
        let Some(p) = self.pods.get_mut(uid) else {
            return;
        };
        self.unschedulable.remove(uid);
        p.location = Location::Active;
        p.version = version;
        self.active.push(ActiveEntry {
            priority: p.info.priority,
            seq: p.seq,
            version,
            uid: uid.to_string(),
        });
    }

    /// Moves pod `uid` to backoff if it is still backing off, else to active.
    fn move_to_backoff_or_active(&mut self, uid: &str, now: Instant) {
        let Some(p) = self.pods.get(uid) else {
            return;
        };
        match self.backoff_expiry(p) {
            Some(expiry) if expiry > now => {
                let version = self.next_seq();
                let p = self.pods.get_mut(uid).expect("checked above");
                self.unschedulable.remove(uid);
                p.location = Location::Backoff;
                p.version = version;
                self.backoff
                    .push(Reverse((expiry, version, uid.to_string())));
            }
            _ => self.move_to_active(uid),
        }
    }

    fn nominate_from_status(&mut self, info: &Arc<PodInfo>) {
        let node = info
            .pod
            .status
            .as_ref()
            .and_then(|s| s.nominated_node_name.as_deref())
            .filter(|n| !n.is_empty());
        match node {
            Some(n) => self.nominate(info.clone(), n),
            None => {
                // Keep the nominator's copy current.
                if let Some(node) = self.nominated_node_of.get(&info.uid).cloned() {
                    self.nominate(info.clone(), &node);
                }
            }
        }
    }

    /// Adds a new pending pod. Returns whether it is ready to be popped.
    pub fn add(&mut self, fw: &Framework, info: Arc<PodInfo>) -> bool {
        if self.pods.contains_key(&info.uid) {
            return self.update(fw, info, Instant::now());
        }
        let uid = info.uid.clone();
        let seq = self.next_seq();
        self.nominate_from_status(&info);
        let gated = fw.run_pre_enqueue(&info).is_err();
        self.pods.insert(
            uid.clone(),
            QueuedPod {
                info,
                attempts: 0,
                last_failure: None,
                unschedulable_plugins: PluginSet::EMPTY,
                location: Location::Gated,
                seq,
                version: 0,
                unschedulable_since: None,
                inflight_interest: PluginSet::EMPTY,
            },
        );
        if gated {
            return false;
        }
        self.move_to_active(&uid);
        true
    }

    /// An update of a pending pod (added when unknown). Returns whether a pod became ready.
    pub fn update(&mut self, fw: &Framework, info: Arc<PodInfo>, now: Instant) -> bool {
        let Some(p) = self.pods.get_mut(&info.uid) else {
            return self.add(fw, info);
        };
        let old = std::mem::replace(&mut p.info, info.clone());
        let location = p.location;
        self.nominate_from_status(&info);
        match location {
            Location::InFlight | Location::Backoff => false,
            Location::Active => {
                if old.priority != info.priority {
                    self.move_to_active(&info.uid);
                }
                false
            }
            Location::Gated => {
                if fw.run_pre_enqueue(&info).is_ok() {
                    self.move_to_active(&info.uid);
                    true
                } else {
                    false
                }
            }
            Location::Unschedulable => {
                let changed = old.pod.spec != info.pod.spec
                    || old.pod.metadata.labels != info.pod.metadata.labels
                    || old.pod.metadata.annotations != info.pod.metadata.annotations;
                if changed {
                    self.move_to_backoff_or_active(&info.uid, now);
                    true
                } else {
                    false
                }
            }
        }
    }

    /// Removes a pod (deleted, bound elsewhere, or no longer ours).
    pub fn delete(&mut self, uid: &str) {
        if self.pods.remove(uid).is_some() {
            self.unschedulable.remove(uid);
            self.in_flight.remove(uid);
        }
        self.clear_nomination(uid);
    }

    /// Whether the queue holds the pod.
    pub fn contains(&self, uid: &str) -> bool {
        self.pods.contains_key(uid)
    }

    /// Moves pods whose backoff has ended to the active queue.
    pub fn flush_backoff(&mut self, now: Instant) {
        while let Some(Reverse((expiry, version, _))) = self.backoff.peek() {
            if *expiry > now {
                break;
            }
            let version = *version;
            let Some(Reverse((_, _, uid))) = self.backoff.pop() else {
                break;
            };
            if self
                .pods
                .get(&uid)
                .is_some_and(|p| p.location == Location::Backoff && p.version == version)
            {
                self.move_to_active(&uid);
            }
        }
    }

    /// When the next backoff ends, if any pod is backing off.
    pub fn next_backoff(&self) -> Option<Instant> {
        self.backoff.peek().map(|Reverse((t, _, _))| *t)
    }

    /// Takes the next pod to schedule (after flushing finished backoffs).
    pub fn pop(&mut self, now: Instant) -> Option<QueuedPod> {
        self.flush_backoff(now);
        while let Some(entry) = self.active.pop() {
            let Some(p) = self.pods.get_mut(&entry.uid) else {
                continue;
            };
            if p.location != Location::Active || p.version != entry.version {
                continue;
            }
            p.location = Location::InFlight;
            p.attempts += 1;
            p.inflight_interest = PluginSet::EMPTY;
            self.in_flight.insert(entry.uid);
            return Some(p.clone());
        }
        None
    }

    /// The pod was scheduled (assumed): it leaves the queue.
    pub fn done(&mut self, uid: &str) {
        self.pods.remove(uid);
        self.in_flight.remove(uid);
        self.unschedulable.remove(uid);
        self.clear_nomination(uid);
    }

    /// Puts back a pod whose attempt failed: to backoff after an error or when an event
    /// during the attempt may have helped, else to the unschedulable pool. `qp` (the popped
    /// copy) is used when the pod left the queue meanwhile only if `resurrect`.
    pub fn requeue(
        &mut self,
        qp: &QueuedPod,
        rejectors: PluginSet,
        error: bool,
        now: Instant,
        resurrect: bool,
    ) {
        let uid = qp.info.uid.clone();
        if !self.pods.contains_key(&uid) {
            if !resurrect {
                return;
            }
            let mut p = qp.clone();
            p.location = Location::InFlight;
            self.pods.insert(uid.clone(), p);
        }
        let seq = self.next_seq();
        let p = self.pods.get_mut(&uid).expect("inserted above");
        if p.location != Location::InFlight && !resurrect {
            return;
        }
        self.in_flight.remove(&uid);
        p.last_failure = Some(now);
        p.seq = seq;
        p.unschedulable_plugins = rejectors;
        let helped = p.inflight_interest.0 & rejectors.0 != 0;
        p.inflight_interest = PluginSet::EMPTY;
        if error || rejectors.is_empty() || helped {
            self.move_to_backoff_or_active(&uid, now);
        } else {
            p.location = Location::Unschedulable;
            p.unschedulable_since = Some(now);
            self.unschedulable.insert(uid);
        }
    }

    /// A cluster event: moves unschedulable pods it may help; remembers it for in-flight
    /// pods. Returns whether any pod moved.
    pub fn move_all(
        &mut self,
        fw: &Framework,
        event: &ClusterEvent,
        objects: &EventObjects<'_>,
        now: Instant,
    ) -> bool {
        let interest = fw.interested(event);
        let wildcard = event.resource == crate::framework::EventResource::WildCard;
        if !self.in_flight.is_empty() {
            for uid in &self.in_flight {
                if let Some(p) = self.pods.get_mut(uid) {
                    p.inflight_interest.0 |= interest.0;
                }
            }
        }
        if self.unschedulable.is_empty() {
            return false;
        }
        let movable: Vec<String> = self
            .unschedulable
            .iter()
            .filter(|uid| {
                self.pods.get(*uid).is_some_and(|p| {
                    let rejectors = p.unschedulable_plugins;
                    // One AND rules out most pods before any hint runs.
                    (wildcard || rejectors.is_empty() || rejectors.0 & interest.0 != 0)
                        && fw.worth_requeueing(rejectors, event, objects, &p.info)
                })
            })
            .cloned()
            .collect();
        for uid in &movable {
            self.move_to_backoff_or_active(uid, now);
        }
        !movable.is_empty()
    }

    /// Retries pods unschedulable for longer than the limit. Returns whether any moved.
    pub fn flush_unschedulable_leftover(&mut self, now: Instant) -> bool {
        let limit = self.config.max_in_unschedulable;
        let stale: Vec<String> = self
            .unschedulable
            .iter()
            .filter(|uid| {
                self.pods
                    .get(*uid)
                    .and_then(|p| p.unschedulable_since)
                    .is_some_and(|t| now.duration_since(t) >= limit)
            })
            .cloned()
            .collect();
        for uid in &stale {
            self.move_to_backoff_or_active(uid, now);
        }
        !stale.is_empty()
    }

    /// Nominates `info` to `node` (replacing an earlier nomination).
    pub fn nominate(&mut self, info: Arc<PodInfo>, node: &str) {
        self.clear_nomination(&info.uid);
        self.nominated_node_of
            .insert(info.uid.clone(), node.to_string());
        self.nominated
            .entry(node.to_string())
            .or_default()
            .push(info);
    }

    /// Drops a pod's nomination.
    pub fn clear_nomination(&mut self, uid: &str) {
        if let Some(node) = self.nominated_node_of.remove(uid)
            && let Some(list) = self.nominated.get_mut(&node)
        {
            list.retain(|p| p.uid != uid);
            if list.is_empty() {
                self.nominated.remove(&node);
            }
        }
    }

    /// Pods nominated to `node`.
    pub fn nominated_pods(&self, node: &str) -> &[Arc<PodInfo>] {
        self.nominated.get(node).map_or(&[], Vec::as_slice)
    }

    /// Whether any pod is nominated anywhere.
    pub fn has_nominations(&self) -> bool {
        !self.nominated.is_empty()
    }

    /// The node a pod is nominated to.
    pub fn nominated_node(&self, uid: &str) -> Option<&str> {
        self.nominated_node_of.get(uid).map(String::as_str)
    }

    /// Counts per location.
    pub fn stats(&self) -> QueueStats {
        let mut s = QueueStats::default();
        for p in self.pods.values() {
            match p.location {
                Location::Active => s.active += 1,
                Location::Backoff => s.backoff += 1,
                Location::Unschedulable => s.unschedulable += 1,
                Location::Gated => s.gated += 1,
                Location::InFlight => s.in_flight += 1,
            }
        }
        s
    }

    /// The uids of all queued pods (for relist cleanup).
    pub fn uids(&self) -> Vec<String> {
        self.pods.keys().cloned().collect()
    }

    /// Where pod `uid` is.
    pub fn location(&self, uid: &str) -> Option<Location> {
        self.pods.get(uid).map(|p| p.location)
    }
}

#[cfg(test)]
mod tests;
