//! `rkube`: a Kubernetes-compatible cluster in one binary. This file only parses the command
//! line and hands each subcommand to its module.

mod agent;
mod controller_manager;
mod image;
mod scheduler;
mod server;
mod sim;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// rkube runs a Kubernetes-compatible cluster from one binary: API server, state store,
/// scheduler, controllers and, on every node, the kubelet, service proxy, DNS and ingress.
///
/// Start a single-node cluster with `rkube server`; see `rkube server --help`.
#[derive(Parser, Debug)]
#[command(name = "rkube", version, about, long_about)]
struct Cli {
    /// Log filter, e.g. `info`, `debug`, or `rkube_store=debug,info`
    /// (overridden by the RUST_LOG environment variable).
    #[arg(long, global = true, default_value = "info", value_name = "FILTER")]
    log_level: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the node agent (kubelet) alone and join a cluster by --server and --token (or
    /// --kubeconfig): registers this host as a Node and runs its pods on containerd.
    Agent(agent::AgentArgs),
    /// Run only the controllers (ReplicaSet, Deployment, Job, garbage collector, ...),
    /// against a cluster given by a kubeconfig (`rkube server` already runs them unless
    /// --disable-controller-manager).
    ControllerManager(controller_manager::ControllerManagerArgs),
    /// Build OCI image tarballs from directories (and the busybox and pause images) and
    /// import them into containerd: images without a registry.
    Image(image::ImageArgs),
    /// Run only the scheduler, against a cluster given by a kubeconfig (`rkube server`
    /// already runs one unless --disable-scheduler).
    Scheduler(scheduler::SchedulerArgs),
    /// Run a control-plane server: the state store, the API server, the scheduler and the
    /// controllers (more components arrive with later releases).
    Server(server::ServerArgs),
    /// Simulate nodes for scale tests: register N Node objects, renew their leases and act as
    /// their kubelet (pods go Running, finish and are removed) without running containers.
    Sim(sim::SimArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(&cli.log_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Agent(args) => agent::run(args).await,
            Command::ControllerManager(args) => controller_manager::run(args).await,
            Command::Image(args) => image::run(args).await,
            Command::Scheduler(args) => scheduler::run(args).await,
            Command::Server(args) => server::run(args).await,
            Command::Sim(args) => sim::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line: the outermost context first, then each cause.
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(default_filter: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(default_filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
