//! rkube's scheduler: assigns pending pods to nodes with kube-scheduler's semantics.
//!
//! It is an ordinary API client (kube-rs), in `rkube server` or alone
//! (`rkube scheduler --kubeconfig PATH`). Start with [`run`]. The pieces:
//!
//! - [`informers`] watch pods, nodes and namespaces and feed the [`cache`] (nodes and the
//!   pods on them) and the [`queue`] (active / backoff / unschedulable pods);
//! - [`scheduler`] pops a pod and runs one cycle of the [`framework`] with the default
//!   profile's [`plugins`] (listed in [`plugins::registry`]), then binds in the background
//!   or records why the pod does not fit (events, `PodScheduled` condition, preemption);
//! - [`api`] is every write the scheduler makes (events through `rkube_component::Recorder`);
//! - `rkube_component::leader` runs all of it only while this instance holds the `kube-system/kube-scheduler`
//!   Lease, so several servers can run a scheduler.

pub mod api;
pub mod cache;
pub mod error;
pub mod framework;
pub mod informers;
pub mod plugins;
pub mod queue;
pub mod scheduler;

#[cfg(test)]
mod testutil;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;

pub use error::{Error, Result};
pub use queue::QueueConfig;
use rkube_component::leader;
pub use rkube_component::{LeaderElectionConfig, client_from_kubeconfig, default_identity};

/// The scheduler name pods ask for by default (`spec.schedulerName`).
pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";

/// Scheduler settings (upstream's `KubeSchedulerConfiguration` defaults).
#[derive(Debug, Clone)]
pub struct Config {
    /// Pods with this `spec.schedulerName` are scheduled; others are ignored.
    pub scheduler_name: String,
    /// Share of nodes to find feasible before scoring (0: adaptive, as upstream).
    pub percentage_of_nodes_to_score: i32,
    /// Backoff and unschedulable-pool timings.
    pub queue: QueueConfig,
    /// Bindings in flight at most.
    pub bind_concurrency: usize,
    /// Plugin arguments.
    pub plugin_args: plugins::registry::Args,
    /// This instance's identity (events, lease holder): `hostname_uuid`.
    pub identity: String,
    /// Run only while holding this lease (`None`: always run).
    pub leader_election: Option<LeaderElectionConfig>,
}

impl Default for Config {
    fn default() -> Self {
        let identity = default_identity();
        Self {
            scheduler_name: DEFAULT_SCHEDULER_NAME.into(),
            percentage_of_nodes_to_score: 0,
            queue: QueueConfig::default(),
            bind_concurrency: 64,
            plugin_args: Default::default(),
            leader_election: Some(LeaderElectionConfig::kube_system(
                "kube-scheduler",
                identity.clone(),
            )),
            identity,
        }
    }
}

/// Runs the scheduler until `shutdown` completes: with leader election when configured,
/// so only the holder of the lease schedules.
pub async fn run(client: kube::Client, config: Config, shutdown: impl Future<Output = ()> + Send) {
    match config.leader_election.clone() {
        Some(le) => {
            leader::run(client.clone(), le, shutdown, move |stop| {
                run_scheduler(client.clone(), config.clone(), stop)
            })
            .await
        }
        None => {
            let (tx, rx) = watch::channel(false);
            let task = tokio::spawn(run_scheduler(client, config, rx));
            shutdown.await;
            let _ = tx.send(true);
            let _ = task.await;
        }
    }
}

/// Runs informers and the scheduling loop until `stop` turns true.
pub async fn run_scheduler(client: kube::Client, config: Config, mut stop: watch::Receiver<bool>) {
    let fw = plugins::registry::default_framework(&config.scheduler_name, &config.plugin_args);
    let shared = scheduler::Shared::new(fw, config.queue);
    let (recorder, events_task) = rkube_component::Recorder::spawn(
        client.clone(),
        config.scheduler_name.clone(),
        config.identity.clone(),
    );
    let api: api::SharedApi = Arc::new(api::KubeApi::new(client.clone(), recorder));
    let synced = Arc::new(informers::Synced::default());
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(informers::watch_pods(
        client.clone(),
        shared.clone(),
        synced.clone(),
    ));
    tasks.spawn(informers::watch_nodes(
        client.clone(),
        shared.clone(),
        synced.clone(),
    ));
    tasks.spawn(informers::watch_namespaces(
        client.clone(),
        shared.clone(),
        synced.clone(),
    ));
    tasks.spawn(informers::watch_spreaders(
        client.clone(),
        shared.clone(),
        synced.clone(),
    ));
    tasks.spawn(informers::watch_pdbs(
        client.clone(),
        shared.clone(),
        synced.clone(),
    ));
    let flusher = shared.clone();
    tasks.spawn(async move {
        // Every 10 s: report progress when there was any; every 30 s: retry pods that have
        // been unschedulable for 5 minutes even without an event.
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        let mut last = 0u64;
        for n in 0u64.. {
            tick.tick().await;
            let scheduled = flusher.stats.scheduled.load(Ordering::Relaxed);
            if scheduled != last {
                let queue = flusher.state.lock().queue.stats();
                tracing::info!(
                    scheduled,
                    per_second = (scheduled - last) / 10,
                    active = queue.active,
                    backoff = queue.backoff,
                    unschedulable = queue.unschedulable,
                    "scheduling progress"
                );
                last = scheduled;
            }
            if n % 3 == 2 {
                let moved = flusher
                    .state
                    .lock()
                    .queue
                    .flush_unschedulable_leftover(tokio::time::Instant::now());
                if moved {
                    flusher.notify.notify_one();
                }
            }
        }
    });
    let stopped = |stop: &watch::Receiver<bool>| *stop.borrow();
    tokio::select! {
        () = synced.wait() => {}
        _ = async { while !stopped(&stop) && stop.changed().await.is_ok() {} } => {
            tasks.abort_all();
            events_task.abort();
            return;
        }
    }
    {
        let st = shared.state.lock();
        tracing::info!(
            nodes = st.cache.node_count(),
            pods = st.cache.pod_count(),
            pending = st.queue.uids().len(),
            "scheduler caches synced; scheduling"
        );
    }
    let sched = Arc::new(scheduler::Scheduler::new(
        shared.clone(),
        api,
        scheduler::LoopConfig {
            percentage_of_nodes_to_score: config.percentage_of_nodes_to_score,
            bind_concurrency: config.bind_concurrency,
        },
    ));
    // The loop is CPU-bound: it gets its own thread, like upstream's scheduling goroutine,
    // so it neither stalls nor is stalled by the runtime's workers.
    let handle = tokio::runtime::Handle::current();
    let loop_stop = stop.clone();
    let thread = std::thread::Builder::new()
        .name("rkube-scheduler".into())
        .spawn(move || handle.block_on(sched.run(loop_stop)));
    match thread {
        Ok(thread) => {
            while !stopped(&stop) && stop.changed().await.is_ok() {}
            shared.notify.notify_one();
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        Err(err) => tracing::error!(?err, "cannot start the scheduling thread"),
    }
    tasks.abort_all();
    events_task.abort();
    let stats = &shared.stats;
    tracing::info!(
        scheduled = stats.scheduled.load(Ordering::Relaxed),
        "scheduler stopped"
    );
}
