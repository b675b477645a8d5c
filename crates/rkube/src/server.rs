//! `rkube server`: opens the state store, serves the Kubernetes API over HTTPS and runs the
//! scheduler and the controllers.
//!
//! It locks the data dir, opens the store (embedded by default, etcd with
//! `--datastore-endpoint`), creates or loads the cluster certificates under `<data-dir>/tls`,
//! writes the admin kubeconfig, starts the scheduler and the controller manager as clients of
//! that kubeconfig (unless `--disable-scheduler` / `--disable-controller-manager`), and serves
//! until SIGINT/SIGTERM.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use rkube_store::Store;
use rkube_store::embedded::EmbeddedStore;
use rkube_store::etcd::EtcdStore;

/// Flags of `rkube server`.
#[derive(Args, Debug, Clone)]
pub(crate) struct ServerArgs {
    /// Directory for all server state: the embedded store, certificates, kubeconfigs.
    /// Only one rkube process may use a data dir at a time.
    #[arg(long, default_value = "/var/lib/rkube", value_name = "DIR")]
    pub(crate) data_dir: PathBuf,

    /// Address to listen on (0.0.0.0 for all IPv4 interfaces).
    #[arg(long, default_value = "127.0.0.1", value_name = "ADDR")]
    pub(crate) bind_address: IpAddr,

    /// Port of the API server (0 picks a free port; the log says which).
    #[arg(long, default_value_t = 6443, value_name = "PORT")]
    pub(crate) https_listen_port: u16,

    /// Where to write the admin kubeconfig (default: <data-dir>/admin.kubeconfig).
    #[arg(long, value_name = "PATH")]
    pub(crate) write_kubeconfig: Option<PathBuf>,

    /// Keep cluster state in an etcd cluster instead of the embedded store:
    /// `http://HOST:PORT[,HOST:PORT...]`. Needed to run several servers.
    #[arg(long, value_name = "URL")]
    pub(crate) datastore_endpoint: Option<String>,

    /// Do not run the node agent (kubelet, proxy) inside the server.
    #[arg(long)]
    pub(crate) disable_agent: bool,

    /// Do not run the scheduler inside the server (run `rkube scheduler` elsewhere, or
    /// bind pods yourself).
    #[arg(long)]
    pub(crate) disable_scheduler: bool,

    /// Do not run the controllers inside the server (run `rkube controller-manager`
    /// elsewhere).
    #[arg(long)]
    pub(crate) disable_controller_manager: bool,

    #[command(flatten)]
    pub(crate) controllers: crate::controller_manager::ControllerArgs,

    #[command(flatten)]
    pub(crate) node: crate::agent::NodeArgs,

    /// Extra subject alternative name (host name or IP) for the serving certificate;
    /// repeat for several.
    #[arg(long = "tls-san", value_name = "NAME")]
    pub(crate) tls_sans: Vec<String>,

    /// Static bearer tokens, one per line: `token,user,uid[,"group1,group2"]`.
    #[arg(long, value_name = "PATH")]
    pub(crate) token_auth_file: Option<PathBuf>,

    /// IP range for Service cluster IPs.
    #[arg(long, default_value = "10.43.0.0/16", value_name = "CIDR")]
    pub(crate) service_cidr: String,
    /// Port range for Service NodePorts.
    #[arg(long, default_value = "30000-32767", value_name = "FROM-TO")]
    pub(crate) service_node_port_range: String,
    /// How often to discard store history older than one interval (like kube-apiserver's
    /// --etcd-compaction-interval), e.g. 300s, 5m, 1h; 0 disables compaction.
    #[arg(long, default_value = "5m", value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) compaction_interval: std::time::Duration,
}

/// Parses `90s`, `5m`, `1h` or plain seconds.
pub(crate) fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?}: want e.g. 300s, 5m or 1h"))?;
    let seconds = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => {
            return Err(format!(
                "invalid duration {text:?}: want e.g. 300s, 5m or 1h"
            ));
        }
    };
    Ok(std::time::Duration::from_secs(seconds))
}

/// Splits `http://a:1,b:2` into endpoints, each with a scheme.
pub(crate) fn parse_endpoints(value: &str) -> anyhow::Result<Vec<String>> {
    let endpoints: Vec<String> = value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            if s.starts_with("http://") || s.starts_with("https://") {
                s.to_string()
            } else {
                format!("http://{s}")
            }
        })
        .collect();
    anyhow::ensure!(
        !endpoints.is_empty(),
        "--datastore-endpoint is empty: give http://HOST:PORT[,HOST:PORT...]"
    );
    for e in &endpoints {
        let rest = e.split_once("://").map_or(e.as_str(), |(_, r)| r);
        let (host, port) = rest.rsplit_once(':').with_context(|| {
            format!("--datastore-endpoint {e:?} has no port: give http://HOST:PORT")
        })?;
        anyhow::ensure!(
            !host.is_empty() && port.trim_end_matches('/').parse::<u16>().is_ok(),
            "--datastore-endpoint {e:?} is not http://HOST:PORT"
        );
    }
    Ok(endpoints)
}

/// Runs the server until SIGINT or SIGTERM.
pub(crate) async fn run(args: ServerArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        !args.data_dir.exists() || args.data_dir.is_dir(),
        "data dir {} exists and is not a directory (choose another with --data-dir)",
        args.data_dir.display()
    );
    std::fs::create_dir_all(&args.data_dir).with_context(|| {
        format!(
            "cannot create data dir {} (choose another with --data-dir)",
            args.data_dir.display()
        )
    })?;
    // Held until exit: one server per data dir.
    let _lock = rkube_store::embedded::lock_dir(&args.data_dir)?;

    let store: Arc<dyn Store> = match &args.datastore_endpoint {
        None => {
            let dir = args.data_dir.join("db");
            let store = tokio::task::spawn_blocking(move || EmbeddedStore::open(dir))
                .await
                .context("store open task failed")??;
            Arc::new(store)
        }
        Some(value) => {
            let endpoints = parse_endpoints(value)?;
            let store = EtcdStore::connect(&endpoints).await.with_context(|| {
                format!(
                    "cannot use etcd at {}: check --datastore-endpoint and that etcd is running",
                    endpoints.join(",")
                )
            })?;
            tracing::info!(endpoints = %endpoints.join(","), "using etcd store");
            Arc::new(store)
        }
    };
    let revision = store.current_revision().await?;

    let kubeconfig = args
        .write_kubeconfig
        .clone()
        .unwrap_or_else(|| args.data_dir.join("admin.kubeconfig"));
    let config = rkube_apiserver::server::Config {
        tls_dir: args.data_dir.join("tls"),
        listen: SocketAddr::new(args.bind_address, args.https_listen_port),
        tls_sans: args.tls_sans.clone(),
        token_auth_file: args.token_auth_file.clone(),
        kubeconfig: kubeconfig.clone(),
        service_cidr: args.service_cidr.clone(),
        service_node_port_range: args.service_node_port_range.clone(),
        compaction_interval: args.compaction_interval,
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = rkube_apiserver::server::start(config, store, async {
        let _ = stop_rx.await;
    })
    .await?;
    let local = running.local_addr;
    tracing::info!(
        %local,
        revision,
        data_dir = %args.data_dir.display(),
        kubeconfig = %kubeconfig.display(),
        "rkube server ready: kubectl --kubeconfig {} get ns",
        kubeconfig.display()
    );
    let mut components = Vec::new();
    if args.disable_scheduler {
        tracing::info!("scheduler disabled");
    } else {
        let client = rkube_component::client_from_kubeconfig(&kubeconfig)
            .await
            .context("cannot start the scheduler")?;
        let config = rkube_scheduler::Config::default();
        components.push(spawn_component("scheduler", |stop| {
            rkube_scheduler::run(client, config, stop)
        }));
    }
    if args.disable_controller_manager {
        tracing::info!("controller manager disabled");
    } else {
        let client = rkube_component::client_from_kubeconfig(&kubeconfig)
            .await
            .context("cannot start the controller manager")?;
        let mut config = crate::controller_manager::config(&args.controllers, true);
        config.root_ca = rkube_controllers::serviceaccount::root_ca_from_kubeconfig(&kubeconfig);
        components.push(spawn_component("controller-manager", |stop| {
            rkube_controllers::run(client, config, stop)
        }));
    }
    if args.disable_agent {
        tracing::debug!("agent disabled");
    } else {
        let client = rkube_component::client_from_kubeconfig(&kubeconfig)
            .await
            .context("cannot start the node agent")?;
        let config = crate::agent::config(&args.node, &args.data_dir);
        components.push(spawn_component("agent", |stop| async move {
            if let Err(err) = rkube_kubelet::run(client, config, stop).await {
                tracing::error!("node agent failed: {:#}", anyhow::Error::from(err));
            }
        }));
    }
    shutdown_signal().await;
    // Stop the components (they release their leases) while the API is still up.
    for (_, stop, _) in &mut components {
        if let Some(stop) = stop.take() {
            let _ = stop.send(());
        }
    }
    for (name, _, task) in components {
        if tokio::time::timeout(std::time::Duration::from_secs(5), task)
            .await
            .is_err()
        {
            tracing::warn!(component = name, "did not stop within 5 s");
        }
    }
    let _ = stop_tx.send(());
    tracing::info!("rkube server stopped");
    Ok(())
}

/// A component running in the server: its name, its stop trigger and its task.
type Component = (
    &'static str,
    Option<tokio::sync::oneshot::Sender<()>>,
    tokio::task::JoinHandle<()>,
);

/// Completes when a component's stop trigger fires (or is dropped).
type StopSignal = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Spawns `run(stop)`, where `stop` completes when the returned trigger fires.
fn spawn_component<F, Fut>(name: &'static str, run: F) -> Component
where
    F: FnOnce(StopSignal) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run(Box::pin(async move {
        let _ = rx.await;
    })));
    (name, Some(tx), task)
}

/// Completes on SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = ctrl_c.await;
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => tracing::info!("received SIGINT, shutting down"),
        _ = term.recv() => tracing::info!("received SIGTERM, shutting down"),
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_duration, parse_endpoints};
    use std::time::Duration;

    #[test]
    fn durations_read_like_kube_flags() {
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_duration("5 minutes").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn endpoints_get_a_scheme_and_need_a_port() {
        assert_eq!(
            parse_endpoints("http://127.0.0.1:2379, 127.0.0.1:2380").unwrap(),
            vec!["http://127.0.0.1:2379", "http://127.0.0.1:2380"]
        );
        assert!(parse_endpoints("").is_err());
        assert!(parse_endpoints("http://localhost").is_err());
        assert!(parse_endpoints("http://:12").is_err());
    }
}
