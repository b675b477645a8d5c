//! The processes a benchmark drives: an `rkube server` on a free port, `rkube sim` node
//! pools, each killed (by PID) on drop, and readings of a process's CPU time and memory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};
use kube::{Client, Config};

/// A child process, killed (by PID) on drop.
#[derive(Debug)]
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    /// utime + stime of the process so far, in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.0.id())).unwrap_or_default();
        // Fields after the `(comm)`: state is field 3, utime 14, stime 15.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        (ticks(11) + ticks(12)) / clock_ticks()
    }

    /// A `/proc/PID/status` memory field (`VmRSS:`, `VmHWM:`) in MiB.
    pub fn memory_mib(&self, field: &str) -> f64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.0.id())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }

    /// Peak resident memory (`VmHWM`) in MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        self.memory_mib("VmHWM:")
    }
}

/// A running `rkube server --disable-agent`, killed on drop.
#[derive(Debug)]
pub struct Server {
    /// The process.
    pub proc_: Proc,
    /// Its admin kubeconfig.
    pub kubeconfig: PathBuf,
}

impl Server {
    /// Starts `rkube` as a server in `data` with `extra` flags; returns it with the
    /// milliseconds until `/readyz` answered.
    pub async fn start(rkube: &Path, data: &Path, extra: &[&str]) -> anyhow::Result<(Self, f64)> {
        let port = free_port()?;
        let kubeconfig = data.join("admin.kubeconfig");
        let started = Instant::now();
        let child = Command::new(rkube)
            .arg("server")
            .arg("--data-dir")
            .arg(data)
            .args(["--https-listen-port", &port.to_string(), "--disable-agent"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("start {}", rkube.display()))?;
        let server = Server {
            proc_: Proc(child),
            kubeconfig,
        };
        let deadline = started + Duration::from_secs(30);
        loop {
            if Instant::now() > deadline {
                bail!("the server was not ready within 30 s");
            }
            if let Ok(client) = server.client().await {
                let req = http::Request::get("/readyz").body(Vec::new())?;
                if client.request_text(req).await.is_ok() {
                    return Ok((server, started.elapsed().as_secs_f64() * 1000.0));
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A new client (its own connection pool).
    pub async fn client(&self) -> anyhow::Result<Client> {
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig)?;
        let config = Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
        Ok(Client::try_from(config)?)
    }

    /// utime + stime of the server so far, in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        self.proc_.cpu_seconds()
    }

    /// Peak resident memory of the server in MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        self.proc_.peak_rss_mib()
    }
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// A free loopback port.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Starts `rkube sim` with `nodes` nodes named `{prefix}N` and `extra` flags.
pub fn start_sim(
    rkube: &Path,
    kubeconfig: &Path,
    nodes: usize,
    prefix: &str,
    extra: &[&str],
) -> anyhow::Result<Proc> {
    let child = Command::new(rkube)
        .arg("sim")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--nodes", &nodes.to_string(), "--name-prefix", prefix])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start rkube sim")?;
    Ok(Proc(child))
}

/// Waits until `want` nodes are Ready.
pub async fn wait_nodes_ready(
    client: &Client,
    want: usize,
    timeout: Duration,
) -> anyhow::Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    let deadline = Instant::now() + timeout;
    loop {
        let nodes = api.list(&ListParams::default()).await?;
        let ready = nodes
            .items
            .iter()
            .filter(|n| {
                n.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .count();
        if ready >= want {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {ready} of {want} nodes Ready after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
