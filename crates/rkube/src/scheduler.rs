//! `rkube scheduler`: runs the scheduler alone against a cluster, as a kube-rs client
//! (the same scheduler `rkube server` runs in-process unless `--disable-scheduler`).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

/// Flags of `rkube scheduler`.
#[derive(Args, Debug, Clone)]
pub(crate) struct SchedulerArgs {
    /// Kubeconfig of the cluster to schedule for (e.g. a server's admin.kubeconfig).
    #[arg(long, value_name = "PATH")]
    pub(crate) kubeconfig: PathBuf,

    /// Schedule pods whose spec.schedulerName is this; ignore the others.
    #[arg(long, default_value = rkube_scheduler::DEFAULT_SCHEDULER_NAME, value_name = "NAME")]
    pub(crate) scheduler_name: String,

    /// Schedule only while holding the kube-system/kube-scheduler Lease (so several
    /// schedulers can run; one is active).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub(crate) leader_elect: bool,

    /// Share of nodes to find feasible before scoring (0: adaptive, as kube-scheduler).
    #[arg(long, default_value_t = 0, value_name = "PERCENT")]
    pub(crate) percentage_of_nodes_to_score: i32,
}

/// The scheduler configuration for these flags.
pub(crate) fn config(args: &SchedulerArgs) -> rkube_scheduler::Config {
    let mut config = rkube_scheduler::Config {
        scheduler_name: args.scheduler_name.clone(),
        percentage_of_nodes_to_score: args.percentage_of_nodes_to_score,
        ..Default::default()
    };
    if !args.leader_elect {
        config.leader_election = None;
    }
    config
}

/// Runs the scheduler until SIGINT or SIGTERM.
pub(crate) async fn run(args: SchedulerArgs) -> anyhow::Result<()> {
    let client = rkube_component::client_from_kubeconfig(&args.kubeconfig)
        .await
        .with_context(|| {
            format!(
                "cannot use kubeconfig {}: check --kubeconfig",
                args.kubeconfig.display()
            )
        })?;
    tracing::info!(
        kubeconfig = %args.kubeconfig.display(),
        scheduler_name = %args.scheduler_name,
        leader_elect = args.leader_elect,
        "rkube scheduler starting"
    );
    rkube_scheduler::run(client, config(&args), crate::server::shutdown_signal()).await;
    tracing::info!("rkube scheduler stopped");
    Ok(())
}
