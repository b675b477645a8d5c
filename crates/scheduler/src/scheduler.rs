//! The scheduling loop: pop a pod, run one cycle over the cached nodes under the state
//! lock, then (outside the lock) bind asynchronously or record the failure.
//!
//! One cycle: PreFilter → Filter (the nominated node first, then nodes from a rotating
//! start until `numFeasibleNodesToFind` fit) → PostFilter (preemption) when none fit →
//! PreScore/Score over the feasible nodes → the best total wins, ties broken at random.
//! The chosen node gets the pod *assumed* at once; the binding runs in the background with
//! bounded concurrency.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;

use crate::api::{EventRecord, PodRef, SharedApi};
use crate::cache::Cache;
use crate::framework::{
    ActionType, ClusterEvent, Code, CycleState, Diagnosis, EventObjects, EventResource, Framework,
    NodeInfo, PluginSet, PodInfo, PostFilterContext, PostFilterResult, Status, fit_error_message,
};
use crate::queue::{QueueConfig, QueuedPod, SchedulingQueue};

/// How long a binding may take before the pod is put back in the queue.
pub const BIND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Nodes below which every node is evaluated.
pub const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;
/// The adaptive percentage never goes below this.
pub const MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND: i64 = 5;

/// How many feasible nodes to look for among `num_all_nodes` (upstream's
/// `numFeasibleNodesToFind`; `percentage` 0 is adaptive: 50% − nodes/125, at least 5%).
pub fn num_feasible_nodes_to_find(percentage: i32, num_all_nodes: usize) -> usize {
    if num_all_nodes < MIN_FEASIBLE_NODES_TO_FIND {
        return num_all_nodes;
    }
    let mut pct = i64::from(percentage);
    if pct <= 0 {
        pct = (50 - num_all_nodes as i64 / 125).max(MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND);
    }
    if pct >= 100 {
        return num_all_nodes;
    }
    ((num_all_nodes as i64 * pct / 100) as usize).max(MIN_FEASIBLE_NODES_TO_FIND)
}

/// Counters for logs and benchmarks.
#[derive(Debug, Default)]
pub struct Stats {
    /// Pods bound.
    pub scheduled: AtomicU64,
    /// Scheduling attempts that found no node.
    pub unschedulable: AtomicU64,
    /// Bindings that failed.
    pub bind_errors: AtomicU64,
    /// Preemptions started.
    pub preemptions: AtomicU64,
}

/// The cache and the queue, behind one lock.
#[derive(Debug)]
pub struct State {
    /// The cluster as the scheduler sees it.
    pub cache: Cache,
    /// Pending pods.
    pub queue: SchedulingQueue,
    next_start: usize,
    rng: u64,
}

/// What the informers and the loop share.
#[derive(Debug)]
pub struct Shared {
    /// The cache and queue.
    pub state: Mutex<State>,
    /// Wakes the loop when a pod may be ready.
    pub notify: Notify,
    /// The profile.
    pub fw: Framework,
    /// Counters.
    pub stats: Stats,
}

impl Shared {
    /// Empty state for `fw`.
    pub fn new(fw: Framework, queue: QueueConfig) -> Arc<Self> {
        let seed = k8s_openapi::jiff::Timestamp::now().as_nanosecond() as u64 | 1;
        Arc::new(Self {
            state: Mutex::new(State {
                cache: Cache::new(),
                queue: SchedulingQueue::new(queue),
                next_start: 0,
                rng: seed,
            }),
            notify: Notify::new(),
            fw,
            stats: Stats::default(),
        })
    }
}

fn next_random(rng: &mut u64) -> u64 {
    // xorshift64*
    let mut x = *rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *rng = x;
    x.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

/// The result of one cycle.
#[derive(Debug)]
pub enum CycleResult {
    /// The pod goes to this node.
    Placed(String),
    /// No node fits.
    Rejected {
        /// Why.
        diagnosis: Diagnosis,
        /// Nodes in the cluster.
        num_nodes: usize,
    },
    /// The cycle failed for a reason unrelated to the pod's fit.
    Error(String),
}

/// Runs one scheduling cycle for `pod` (the caller holds the state lock).
pub fn run_cycle(
    fw: &Framework,
    st: &mut State,
    pod: &PodInfo,
    percentage: i32,
    state: &mut CycleState,
) -> CycleResult {
    let State {
        cache,
        queue,
        next_start,
        rng,
    } = st;
    let snapshot = cache.snapshot();
    let n = snapshot.nodes.len();
    if n == 0 {
        return CycleResult::Error("no nodes available to schedule pods".into());
    }
    let mut diagnosis = Diagnosis::default();
    let allowed = match fw.run_pre_filter(state, pod, &snapshot) {
        Ok(a) => a,
        Err((status, rejectors)) => {
            if status.code() == Code::Error {
                return CycleResult::Error(status.message());
            }
            diagnosis.pre_filter_msg = status.message();
            diagnosis.unschedulable_plugins = rejectors;
            diagnosis.node_to_status.absent = Some(status);
            return CycleResult::Rejected {
                diagnosis,
                num_nodes: n,
            };
        }
    };
    let candidates: Option<Vec<usize>> = allowed.map(|(names, plugins)| {
        diagnosis.node_to_status.absent = Some(Status::new(
            Code::UnschedulableAndUnresolvable,
            format!("node(s) didn't satisfy plugin(s) [{}]", plugins.join(" ")),
        ));
        for p in plugins {
            if let Some(i) = fw.plugin_index(p) {
                diagnosis.unschedulable_plugins.insert(i);
            }
        }
        names
            .iter()
            .filter_map(|name| snapshot.index.get(name).copied())
            .collect()
    });
    let with_nominated = queue.has_nominations();
    let filter = |i: usize, state: &CycleState| -> Status {
        let node = &snapshot.nodes[i];
        if with_nominated {
            fw.run_filter_with_nominated(
                state,
                pod,
                node,
                &snapshot,
                queue.nominated_pods(&node.name),
            )
        } else {
            fw.run_filter(state, pod, node, &snapshot)
        }
    };

    // The node the pod was nominated to (by an earlier preemption) comes first.
    let nominated = pod
        .pod
        .status
        .as_ref()
        .and_then(|s| s.nominated_node_name.as_deref())
        .filter(|n| !n.is_empty());
    if let Some(name) = nominated
        && let Some(&i) = snapshot.index.get(name)
        && candidates.as_ref().is_none_or(|c| c.contains(&i))
    {
        let s = filter(i, state);
        if s.is_success() {
            return CycleResult::Placed(name.to_string());
        }
        if s.code() == Code::Error {
            return CycleResult::Error(s.message());
        }
    }

    let total = candidates.as_ref().map_or(n, Vec::len);
    let want = num_feasible_nodes_to_find(percentage, total);
    let start = if candidates.is_none() {
        *next_start % n
    } else {
        0
    };
    let mut feasible: Vec<usize> = Vec::with_capacity(want.min(total));
    let mut processed = 0;
    for k in 0..total {
        let i = match &candidates {
            Some(c) => c[(start + k) % total],
            None => (start + k) % n,
        };
        processed += 1;
        let s = filter(i, state);
        if s.is_success() {
            feasible.push(i);
            if feasible.len() >= want {
                break;
            }
        } else if s.code() == Code::Error {
            return CycleResult::Error(s.message());
        } else {
            diagnosis.node_to_status.statuses.insert(i, s);
        }
    }
    if candidates.is_none() {
        *next_start = (start + processed) % n;
    }
    if feasible.is_empty() {
        for s in diagnosis.node_to_status.statuses.values() {
            if let Some(i) = fw.plugin_index(s.plugin()) {
                diagnosis.unschedulable_plugins.insert(i);
            }
        }
        return CycleResult::Rejected {
            diagnosis,
            num_nodes: n,
        };
    }
    if feasible.len() == 1 || !fw.has_score_plugins() {
        return CycleResult::Placed(snapshot.nodes[feasible[0]].name.clone());
    }
    let refs: Vec<&NodeInfo> = feasible.iter().map(|&i| &snapshot.nodes[i]).collect();
    let scores = match fw.run_score(state, pod, &refs, &snapshot) {
        Ok(s) => s,
        Err(s) => return CycleResult::Error(s.message()),
    };
    // The best total; equal totals are chosen between uniformly (reservoir sampling).
    let mut best = 0;
    let mut best_score = i64::MIN;
    let mut ties = 0u64;
    for (j, &score) in scores.iter().enumerate() {
        if score > best_score {
            best_score = score;
            best = j;
            ties = 1;
        } else if score == best_score {
            ties += 1;
            if next_random(rng).is_multiple_of(ties) {
                best = j;
            }
        }
    }
    CycleResult::Placed(refs[best].name.clone())
}

/// Runs PostFilter (preemption) for a rejected pod (the caller holds the state lock).
pub fn run_post_filter(
    fw: &Framework,
    st: &mut State,
    pod: &PodInfo,
    state: &CycleState,
    diagnosis: &Diagnosis,
) -> (Option<PostFilterResult>, Status) {
    let State {
        cache, queue, rng, ..
    } = st;
    let rng_cell = Cell::new(*rng);
    let random = |m: u64| {
        let mut r = rng_cell.get();
        let v = next_random(&mut r);
        rng_cell.set(r);
        if m == 0 { 0 } else { v % m }
    };
    let nominated = |node: &str| queue.nominated_pods(node).to_vec();
    let ctx = PostFilterContext {
        snapshot: cache.snapshot(),
        nominated: &nominated,
        random: &random,
    };
    let out = fw.run_post_filter(state, pod, &diagnosis.node_to_status, &ctx);
    *rng = rng_cell.get();
    out
}

/// What a failed attempt leaves to do outside the lock.
#[derive(Debug)]
pub struct Failure {
    /// The pod.
    pub qp: QueuedPod,
    /// The FailedScheduling message.
    pub message: String,
    /// The PodScheduled condition's reason (`Unschedulable` or `SchedulerError`).
    pub reason: &'static str,
    /// `Some(node)`: nominate; `Some("")`: clear the nomination; `None`: leave it.
    pub nominate: Option<String>,
    /// Preemption victims to delete.
    pub victims: Vec<Arc<PodInfo>>,
    /// Pods whose nomination to the node is cleared.
    pub clear_nominations: Vec<Arc<PodInfo>>,
}

/// The outcome of one attempt.
#[derive(Debug)]
pub enum Outcome {
    /// Assumed on a node; bind next.
    Assumed {
        /// The pod.
        qp: QueuedPod,
        /// The node.
        node: String,
    },
    /// Not scheduled.
    Failed(Failure),
}

/// Schedules one popped pod (the caller holds the state lock): assumes it, or requeues
/// it and says what to record.
pub fn schedule_one_locked(
    fw: &Framework,
    st: &mut State,
    qp: QueuedPod,
    percentage: i32,
    stats: &Stats,
) -> Outcome {
    let pod = qp.info.clone();
    let mut state = CycleState::new();
    let now = Instant::now();
    match run_cycle(fw, st, &pod, percentage, &mut state) {
        CycleResult::Placed(node) => {
            st.cache.assume_pod(pod.clone(), &node);
            st.queue.done(&pod.uid);
            Outcome::Assumed { qp, node }
        }
        CycleResult::Error(message) => {
            tracing::warn!(pod = %pod.key, %message, "scheduling error");
            st.queue.requeue(&qp, PluginSet::EMPTY, true, now, false);
            Outcome::Failed(Failure {
                qp,
                message,
                reason: "SchedulerError",
                nominate: None,
                victims: Vec::new(),
                clear_nominations: Vec::new(),
            })
        }
        CycleResult::Rejected {
            mut diagnosis,
            num_nodes,
        } => {
            stats.unschedulable.fetch_add(1, Ordering::Relaxed);
            let (result, status) = run_post_filter(fw, st, &pod, &state, &diagnosis);
            if !status.is_success() {
                if status.code() == Code::Error {
                    tracing::warn!(pod = %pod.key, %status, "preemption error");
                } else {
                    diagnosis.post_filter_msg = status.message();
                }
            }
            let message = fit_error_message(num_nodes, &diagnosis);
            let mut failure = Failure {
                qp: qp.clone(),
                message,
                reason: "Unschedulable",
                nominate: None,
                victims: Vec::new(),
                clear_nominations: Vec::new(),
            };
            if let Some(r) = result {
                match r.nominated_node.as_deref() {
                    Some("") => {
                        st.queue.clear_nomination(&pod.uid);
                        failure.nominate = Some(String::new());
                    }
                    Some(node) => {
                        stats.preemptions.fetch_add(1, Ordering::Relaxed);
                        st.queue.nominate(pod.clone(), node);
                        for c in &r.clear_nominations {
                            st.queue.clear_nomination(&c.uid);
                        }
                        failure.nominate = Some(node.to_string());
                        failure.victims = r.victims;
                        failure.clear_nominations = r.clear_nominations;
                    }
                    None => {}
                }
            }
            st.queue
                .requeue(&qp, diagnosis.unschedulable_plugins, false, now, false);
            Outcome::Failed(failure)
        }
    }
}

fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// The pod's current PodScheduled condition: (status, reason, message).
fn pod_scheduled_condition(pod: &PodInfo) -> Option<(String, String, String)> {
    pod.pod
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "PodScheduled")
        .map(|c| {
            (
                c.status.clone(),
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        })
}

/// The status patch recording a failed attempt, unless the pod already says so.
pub fn failure_status_patch(f: &Failure) -> Option<Value> {
    let pod = &f.qp.info;
    let current_nominated = pod
        .pod
        .status
        .as_ref()
        .and_then(|s| s.nominated_node_name.clone())
        .unwrap_or_default();
    let want_nominated = f
        .nominate
        .clone()
        .unwrap_or_else(|| current_nominated.clone());
    let condition_same = pod_scheduled_condition(pod)
        .is_some_and(|(s, r, m)| s == "False" && r == f.reason && m == f.message);
    if condition_same && want_nominated == current_nominated {
        return None;
    }
    let mut status = json!({
        "conditions": [{
            "type": "PodScheduled",
            "status": "False",
            "reason": f.reason,
            "message": f.message,
            "lastProbeTime": null,
            "lastTransitionTime": now_rfc3339(),
        }],
    });
    if want_nominated != current_nominated {
        status["nominatedNodeName"] = if want_nominated.is_empty() {
            Value::Null
        } else {
            json!(want_nominated)
        };
    }
    Some(json!({ "status": status }))
}

async fn record_failure(api: SharedApi, f: Failure) {
    let pod = PodRef::of(&f.qp.info.pod);
    api.event(EventRecord {
        pod: pod.clone(),
        type_: "Warning",
        reason: "FailedScheduling",
        action: "Scheduling",
        message: f.message.clone(),
    });
    let node = f.nominate.clone().unwrap_or_default();
    for victim in &f.victims {
        let v = PodRef::of(&victim.pod);
        let condition = json!({"status": {"conditions": [{
            "type": "DisruptionTarget",
            "status": "True",
            "reason": "PreemptionByScheduler",
            "message": format!("{}: preempting to accommodate a higher priority pod",
                f.qp.info.pod.spec.as_ref().and_then(|s| s.scheduler_name.as_deref()).unwrap_or("default-scheduler")),
            "lastTransitionTime": now_rfc3339(),
        }]}});
        if let Err(err) = api.patch_pod_status(&v, &condition).await
            && err.status_code() != Some(404)
        {
            tracing::warn!(?err, victim = %v.key(), "cannot mark the preemption victim");
        }
        match api.delete_pod(&v).await {
            Ok(()) => {
                tracing::info!(preemptor = %pod.key(), victim = %v.key(), %node, "preempted");
                api.event(EventRecord {
                    pod: v,
                    type_: "Normal",
                    reason: "Preempted",
                    action: "Preempting",
                    message: format!("Preempted by pod {} on node {}", pod.uid, node),
                });
            }
            Err(err) if err.status_code() == Some(404) => {}
            Err(err) => {
                tracing::warn!(?err, victim = %v.key(), "cannot delete the preemption victim")
            }
        }
    }
    for other in &f.clear_nominations {
        let patch = json!({"status": {"nominatedNodeName": null}});
        if let Err(err) = api.patch_pod_status(&PodRef::of(&other.pod), &patch).await {
            tracing::debug!(?err, "cannot clear a nomination");
        }
    }
    if let Some(patch) = failure_status_patch(&f)
        && let Err(err) = api.patch_pod_status(&pod, &patch).await
        && err.status_code() != Some(404)
    {
        tracing::warn!(?err, pod = %pod.key(), "cannot update the pod's PodScheduled condition");
    }
}

async fn bind(
    shared: Arc<Shared>,
    api: SharedApi,
    qp: QueuedPod,
    node: String,
    permit: OwnedSemaphorePermit,
) {
    let pod = PodRef::of(&qp.info.pod);
    let result = match tokio::time::timeout(BIND_TIMEOUT, api.bind(&pod, &node)).await {
        Ok(r) => r,
        Err(_) => Err(crate::error::Error::Timeout {
            what: format!("binding pod {} to node {node}", pod.key()),
        }),
    };
    drop(permit);
    match result {
        Ok(()) => {
            shared.stats.scheduled.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(pod = %pod.key(), %node, "bound");
            api.event(EventRecord {
                pod: pod.clone(),
                type_: "Normal",
                reason: "Scheduled",
                action: "Binding",
                message: format!(
                    "Successfully assigned {}/{} to {}",
                    pod.namespace, pod.name, node
                ),
            });
            // The binding does not flip a condition an earlier failure set (that failure's
            // patch may not even be visible yet, hence the attempt count).
            if qp.attempts > 1
                || pod_scheduled_condition(&qp.info).is_some_and(|(s, _, _)| s == "False")
            {
                let patch = json!({"status": {"conditions": [{
                    "type": "PodScheduled", "status": "True", "reason": null, "message": null,
                    "lastProbeTime": null, "lastTransitionTime": now_rfc3339(),
                }]}});
                let _ = api.patch_pod_status(&pod, &patch).await;
            }
        }
        Err(err) => {
            shared.stats.bind_errors.fetch_add(1, Ordering::Relaxed);
            let code = err.status_code();
            tracing::warn!(?err, pod = %pod.key(), %node, "binding failed");
            let gone = matches!(code, Some(404) | Some(409));
            {
                let mut st = shared.state.lock();
                if st.cache.forget_pod(&pod.uid) {
                    let now = Instant::now();
                    let ev = ClusterEvent {
                        resource: EventResource::Pod,
                        action: ActionType::DELETE,
                    };
                    st.queue.move_all(
                        &shared.fw,
                        &ev,
                        &EventObjects::Pod {
                            old: Some(&qp.info),
                            new: None,
                        },
                        now,
                    );
                    if !gone {
                        st.queue.requeue(&qp, PluginSet::EMPTY, true, now, true);
                    }
                }
            }
            shared.notify.notify_one();
            if !gone {
                api.event(EventRecord {
                    pod,
                    type_: "Warning",
                    reason: "FailedScheduling",
                    action: "Scheduling",
                    message: format!("Binding rejected: {}", err.message()),
                });
            }
        }
    }
}

/// The loop's settings.
#[derive(Debug, Clone)]
pub struct LoopConfig {
    /// `percentageOfNodesToScore` (0: adaptive).
    pub percentage_of_nodes_to_score: i32,
    /// Bindings in flight at most.
    pub bind_concurrency: usize,
}

/// The scheduling loop.
pub struct Scheduler {
    shared: Arc<Shared>,
    api: SharedApi,
    config: LoopConfig,
    binds: Arc<Semaphore>,
}

impl Scheduler {
    /// A loop over `shared` writing through `api`.
    pub fn new(shared: Arc<Shared>, api: SharedApi, config: LoopConfig) -> Self {
        let binds = Arc::new(Semaphore::new(config.bind_concurrency.max(1)));
        Self {
            shared,
            api,
            config,
            binds,
        }
    }

    /// Waits for the next pod to schedule.
    async fn pop(&self) -> QueuedPod {
        loop {
            let notified = self.shared.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let next = {
                let mut st = self.shared.state.lock();
                if let Some(p) = st.queue.pop(Instant::now()) {
                    return p;
                }
                st.queue.next_backoff()
            };
            match next {
                Some(at) => {
                    tokio::select! {
                        () = &mut notified => {}
                        () = tokio::time::sleep_until(at) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Schedules one pod.
    pub async fn schedule_one(&self, qp: QueuedPod) {
        let span = tracing::debug_span!("schedule", pod = %qp.info.key, attempt = qp.attempts);
        let _enter = span.enter();
        let outcome = {
            let mut st = self.shared.state.lock();
            schedule_one_locked(
                &self.shared.fw,
                &mut st,
                qp,
                self.config.percentage_of_nodes_to_score,
                &self.shared.stats,
            )
        };
        drop(_enter);
        match outcome {
            Outcome::Assumed { qp, node } => {
                let Ok(permit) = self.binds.clone().acquire_owned().await else {
                    return;
                };
                tokio::spawn(bind(
                    self.shared.clone(),
                    self.api.clone(),
                    qp,
                    node,
                    permit,
                ));
            }
            Outcome::Failed(f) => {
                tracing::debug!(pod = %f.qp.info.key, message = %f.message, "unschedulable");
                tokio::spawn(record_failure(self.api.clone(), f));
            }
        }
    }

    /// Schedules pods until `stop` turns true (or its sender goes away).
    pub async fn run(&self, mut stop: watch::Receiver<bool>) {
        loop {
            if *stop.borrow() {
                return;
            }
            let qp = tokio::select! {
                qp = self.pop() => qp,
                r = stop.changed() => {
                    if r.is_err() || *stop.borrow() {
                        return;
                    }
                    continue;
                }
            };
            self.schedule_one(qp).await;
        }
    }
}

#[cfg(test)]
mod tests;
