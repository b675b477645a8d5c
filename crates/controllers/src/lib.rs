//! rkube's controller manager: the reconciliation loops that turn declared state into
//! actual state, with kube-controller-manager's semantics.
//!
//! Every controller is an ordinary API client built on kube-runtime (watchers, reflector
//! stores, `Controller`), in `rkube server` or alone (`rkube controller-manager
//! --kubeconfig PATH`). Start with [`run`]: it holds the `kube-system/kube-controller-manager`
//! Lease and, while it does, runs every enabled controller of [`CONTROLLERS`] with a shared
//! [`Context`] (client, event recorder, settings).
//!
//! Each controller module has the same shape: a doc comment naming what it owns, an
//! `Error` enum, `reconcile(Arc<K>, Arc<Ctx>) -> Result<Action>` with `error_policy`, pure
//! functions for desired state and status, and `pub async fn run(ctx, stop)`.
//! Shared helpers: [`controller_ref`] (owner references, adoption), [`pods`] (pods from
//! templates, readiness and availability).

pub mod context;
pub mod controller_ref;
pub mod pods;
pub mod workqueue;

pub mod cronjob;
pub mod deployment;
pub mod endpoints;
pub mod endpointslice;
pub mod garbagecollector;
pub mod job;
pub mod namespace;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod replicaset;
pub mod serviceaccount;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use rkube_component::LeaderElectionConfig;
use tokio::sync::watch;

pub use context::{Context, Stop};

/// Controller manager settings (kube-controller-manager's flags and defaults).
#[derive(Debug, Clone)]
pub struct Config {
    /// This instance's identity (events, lease holder): `hostname_uuid`.
    pub identity: String,
    /// Run only while holding this lease (`None`: always run).
    pub leader_election: Option<LeaderElectionConfig>,
    /// Controllers to run, by name (`*` for all, `-name` to leave one out), as
    /// `--controllers`.
    pub controllers: Vec<String>,
    /// Pod CIDRs are cut from this range (`--cluster-cidr`).
    pub cluster_cidr: String,
    /// Prefix length of each node's pod CIDR (`--node-cidr-mask-size`).
    pub node_cidr_mask_size: u8,
    /// A node whose Lease is older than this is NotReady/Unknown
    /// (`--node-monitor-grace-period`).
    pub node_monitor_grace_period: Duration,
    /// Workers per controller (`--concurrent-*-syncs`).
    pub concurrency: u16,
    /// The cluster CA (PEM) that the root-ca publisher puts into every namespace's
    /// `kube-root-ca.crt` ConfigMap; taken from the kubeconfig's `certificate-authority-data`
    /// (see [`serviceaccount::root_ca_from_kubeconfig`]). `None`: none is published.
    pub root_ca: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        let identity = rkube_component::default_identity();
        Self {
            leader_election: Some(LeaderElectionConfig::kube_system(
                "kube-controller-manager",
                identity.clone(),
            )),
            identity,
            controllers: vec!["*".into()],
            cluster_cidr: "10.42.0.0/16".into(),
            node_cidr_mask_size: 24,
            node_monitor_grace_period: Duration::from_secs(40),
            concurrency: 5,
            root_ca: None,
        }
    }
}

impl Config {
    /// Whether the controller `name` is enabled by [`Config::controllers`].
    pub fn enabled(&self, name: &str) -> bool {
        let mut on = false;
        for entry in &self.controllers {
            if entry == name {
                return true;
            }
            if entry.strip_prefix('-') == Some(name) {
                return false;
            }
            if entry == "*" {
                on = true;
            }
        }
        on
    }
}

/// Starts one controller; completes when `stop` turns true.
pub type StartFn = fn(Arc<Context>, Stop) -> BoxFuture<'static, ()>;

/// Every controller, by its kube-controller-manager name.
pub const CONTROLLERS: &[(&str, StartFn)] = &[
    ("replicaset", |c, s| Box::pin(replicaset::run(c, s))),
    ("replicationcontroller", |c, s| {
        Box::pin(replicaset::run_replication_controllers(c, s))
    }),
    ("deployment", |c, s| Box::pin(deployment::run(c, s))),
    ("job", |c, s| Box::pin(job::run(c, s))),
    ("cronjob", |c, s| Box::pin(cronjob::run(c, s))),
    ("ttl-after-finished", |c, s| Box::pin(job::ttl::run(c, s))),
    ("garbagecollector", |c, s| {
        Box::pin(garbagecollector::run(c, s))
    }),
    ("namespace", |c, s| Box::pin(namespace::run(c, s))),
    ("endpoint", |c, s| Box::pin(endpoints::run(c, s))),
    ("endpointslice", |c, s| Box::pin(endpointslice::run(c, s))),
    ("serviceaccount", |c, s| Box::pin(serviceaccount::run(c, s))),
    ("nodelifecycle", |c, s| Box::pin(nodelifecycle::run(c, s))),
    ("nodeipam", |c, s| Box::pin(nodeipam::run(c, s))),
];

/// Runs the controller manager until `shutdown` completes: with leader election when
/// configured, so only the holder of the lease reconciles.
pub async fn run(client: kube::Client, config: Config, shutdown: impl Future<Output = ()> + Send) {
    match config.leader_election.clone() {
        Some(le) => {
            rkube_component::leader::run(client.clone(), le, shutdown, move |stop| {
                run_controllers(client.clone(), config.clone(), stop)
            })
            .await
        }
        None => {
            let (tx, rx) = watch::channel(false);
            let task = tokio::spawn(run_controllers(client, config, rx));
            shutdown.await;
            let _ = tx.send(true);
            let _ = task.await;
        }
    }
}

/// Runs every enabled controller until `stop` turns true.
pub async fn run_controllers(client: kube::Client, config: Config, stop: Stop) {
    let (recorder, events_task) = rkube_component::Recorder::spawn(
        client.clone(),
        "kube-controller-manager".into(),
        config.identity.clone(),
    );
    let ctx = Arc::new(Context {
        client,
        recorder,
        config: Arc::new(config),
    });
    let mut tasks = tokio::task::JoinSet::new();
    let mut names = Vec::new();
    for (name, start) in CONTROLLERS {
        if ctx.config.enabled(name) {
            names.push(*name);
            tasks.spawn(start(ctx.clone(), stop.clone()));
        }
    }
    tracing::info!(controllers = %names.join(","), "controllers started");
    while let Some(done) = tasks.join_next().await {
        if let Err(err) = done
            && err.is_panic()
        {
            tracing::error!(?err, "a controller panicked");
        }
    }
    events_task.abort();
    tracing::info!("controllers stopped");
}

#[cfg(test)]
mod tests {
    use super::Config;

    #[test]
    fn controllers_flag_selects_like_upstream() {
        let mut c = Config {
            controllers: vec!["*".into(), "-job".into()],
            ..Config::default()
        };
        assert!(c.enabled("deployment"));
        assert!(!c.enabled("job"));
        c.controllers = vec!["job".into()];
        assert!(c.enabled("job"));
        assert!(!c.enabled("deployment"));
    }
}
