//! `controllers-bench`: the workload controllers at scale.
//!
//! On a fresh `rkube server --disable-agent` (API server, store, scheduler and controllers in
//! one process) with `rkube sim` nodes (default 1,000), it creates one Deployment (default
//! 10,000 replicas) and measures the seconds until every replica is available, then changes
//! the pod template and measures the rolling update until every replica is new and
//! available. A watch on the pods records, for each pod, when it was first seen and when it
//! turned Ready: the pod startup latency (p50/p99; upstream's SLO is 5 s at p99).
//!
//! The floor: on another fresh server, the same number of bare pods created directly by 32
//! clients (no controllers involved) until all are Ready. The ratio of the two shows what
//! the controllers add on top of creating, scheduling and starting the pods.
//!
//! It prints figures as it goes and writes `bench/controllers/REPORT.md`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use futures::StreamExt;
use hdrhistogram::Histogram;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::serde_json::{self, json};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use parking_lot::Mutex;
use rkube_bench::cluster::{Server, start_sim, wait_nodes_ready};

/// Measures the controllers on a big Deployment and writes a report.
#[derive(Parser, Debug)]
struct Args {
    /// The rkube binary to run.
    #[arg(long, default_value = "target/release/rkube")]
    rkube: PathBuf,
    /// Simulated nodes.
    #[arg(long, default_value_t = 1_000)]
    nodes: usize,
    /// Replicas of the Deployment (and bare pods of the floor).
    #[arg(long, default_value_t = 10_000)]
    replicas: usize,
    /// Concurrent clients creating the floor's bare pods.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Skip the floor (bare pods without controllers).
    #[arg(long)]
    skip_floor: bool,
    /// Seconds to wait for each phase before giving up.
    #[arg(long, default_value_t = 900)]
    timeout: u64,
    /// Where to write the report (nothing is written when empty).
    #[arg(long, default_value = "bench/controllers/REPORT.md")]
    report: PathBuf,
    /// Directory for data dirs.
    #[arg(long, default_value = "target/bench-data")]
    data_dir: PathBuf,
}

/// One measured phase.
#[derive(Debug, Default, Clone)]
struct Phase {
    seconds: f64,
    cpu_s: f64,
    startup_p50_ms: f64,
    startup_p99_ms: f64,
}

#[derive(Debug, Default)]
struct Results {
    nodes_ready_s: f64,
    create: Option<Phase>,
    rollout: Option<Phase>,
    floor: Option<Phase>,
    peak_rss_mib: f64,
    floor_peak_rss_mib: f64,
    errors: Vec<String>,
}

/// When each pod was first seen and when it turned Ready (by uid).
#[derive(Default)]
struct PodTimes {
    seen: HashMap<String, Instant>,
    ready: HashMap<String, Instant>,
}

fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Records pod times in `bench` until dropped (aborted).
fn watch_pods(client: Client, times: Arc<Mutex<PodTimes>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let api: Api<Pod> = Api::namespaced(client, "bench");
        let mut stream = watcher::watcher(api, watcher::Config::default()).boxed();
        while let Some(ev) = stream.next().await {
            let pod = match ev {
                Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => p,
                Ok(_) => continue,
                Err(err) => {
                    eprintln!("pod watch: {err}");
                    continue;
                }
            };
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            let now = Instant::now();
            let mut t = times.lock();
            t.seen.entry(uid.clone()).or_insert(now);
            if is_ready(&pod) {
                t.ready.entry(uid).or_insert(now);
            }
        }
    })
}

/// p50/p99 of ready − seen over pods first seen after `since`.
fn startup(times: &PodTimes, since: Instant) -> anyhow::Result<(f64, f64)> {
    let mut hist = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    for (uid, seen) in &times.seen {
        if *seen < since {
            continue;
        }
        if let Some(ready) = times.ready.get(uid) {
            hist.record(ready.saturating_duration_since(*seen).as_micros().max(1) as u64)?;
        }
    }
    Ok((
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
    ))
}

fn deployment(replicas: usize, image: &str) -> anyhow::Result<Deployment> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "bench"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "terminationGracePeriodSeconds": 0,
                    "containers": [{
                        "name": "web",
                        "image": image,
                        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                    }],
                },
            },
        },
    }))?)
}

/// Waits until the Deployment reports every replica updated and available for its
/// current generation, printing progress every 5 s.
async fn wait_rolled_out(
    api: &Api<Deployment>,
    replicas: usize,
    timeout: Duration,
) -> anyhow::Result<()> {
    let want = replicas as i32;
    let deadline = Instant::now() + timeout;
    let mut last_print = Instant::now();
    loop {
        let d = api.get("web").await?;
        let generation = d.metadata.generation.unwrap_or(0);
        let st = d.status.unwrap_or_default();
        let done = st.observed_generation.unwrap_or(0) >= generation
            && st.updated_replicas == Some(want)
            && st.available_replicas == Some(want)
            && st.replicas == Some(want);
        if done {
            return Ok(());
        }
        if last_print.elapsed() > Duration::from_secs(5) {
            println!(
                "    replicas {} updated {} ready {} available {}",
                st.replicas.unwrap_or(0),
                st.updated_replicas.unwrap_or(0),
                st.ready_replicas.unwrap_or(0),
                st.available_replicas.unwrap_or(0)
            );
            last_print = Instant::now();
        }
        if Instant::now() > deadline {
            bail!("not rolled out after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn start_cluster(
    args: &Args,
    dir: &std::path::Path,
) -> anyhow::Result<(Server, rkube_bench::cluster::Proc, f64)> {
    // 1,000 nodes need more than the default /16's 256 node CIDRs of /24.
    let (server, _) = Server::start(
        &args.rkube,
        &dir.join("rkube"),
        &["--cluster-cidr", "10.64.0.0/12"],
    )
    .await?;
    let admin = server.client().await?;
    let t = Instant::now();
    let sim = start_sim(&args.rkube, &server.kubeconfig, args.nodes, "sim-", &[])?;
    wait_nodes_ready(&admin, args.nodes, Duration::from_secs(args.timeout)).await?;
    let ready_s = t.elapsed().as_secs_f64();
    let ns: Api<Namespace> = Api::all(admin);
    ns.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "bench"}}))?,
    )
    .await?;
    Ok((server, sim, ready_s))
}

async fn bench_deployment(args: &Args, out: &mut Results) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)?;
    let dir = tempfile::tempdir_in(&args.data_dir)?;
    let (server, sim, ready_s) = start_cluster(args, dir.path()).await?;
    out.nodes_ready_s = ready_s;
    println!("  {} nodes Ready after {ready_s:.1} s", args.nodes);
    let client = server.client().await?;
    let times = Arc::new(Mutex::new(PodTimes::default()));
    let watch = watch_pods(server.client().await?, times.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let api: Api<Deployment> = Api::namespaced(client, "bench");
    let timeout = Duration::from_secs(args.timeout);

    // Phase 1: create to all available.
    let cpu0 = server.cpu_seconds();
    let t0 = Instant::now();
    api.create(
        &PostParams::default(),
        &deployment(args.replicas, "localhost/busybox:1")?,
    )
    .await
    .context("create the Deployment")?;
    wait_rolled_out(&api, args.replicas, timeout).await?;
    let (p50, p99) = startup(&times.lock(), t0)?;
    let create = Phase {
        seconds: t0.elapsed().as_secs_f64(),
        cpu_s: server.cpu_seconds() - cpu0,
        startup_p50_ms: p50,
        startup_p99_ms: p99,
    };
    println!(
        "  create: {} replicas available after {:.1} s (server CPU {:.1} s), pod startup p50 {:.0} ms p99 {:.0} ms",
        args.replicas, create.seconds, create.cpu_s, p50, p99
    );
    out.create = Some(create);

    // Phase 2: rolling update to a new template.
    let cpu1 = server.cpu_seconds();
    let t1 = Instant::now();
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "localhost/busybox:2"}]}}}});
    api.patch("web", &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .context("update the Deployment")?;
    wait_rolled_out(&api, args.replicas, timeout).await?;
    let (p50, p99) = startup(&times.lock(), t1)?;
    let rollout = Phase {
        seconds: t1.elapsed().as_secs_f64(),
        cpu_s: server.cpu_seconds() - cpu1,
        startup_p50_ms: p50,
        startup_p99_ms: p99,
    };
    println!(
        "  rolling update: {} replicas replaced after {:.1} s (server CPU {:.1} s), pod startup p50 {:.0} ms p99 {:.0} ms",
        args.replicas, rollout.seconds, rollout.cpu_s, p50, p99
    );
    out.rollout = Some(rollout);
    out.peak_rss_mib = server.peak_rss_mib();
    println!("  server peak RSS {:.0} MiB", out.peak_rss_mib);
    watch.abort();
    drop(sim);
    drop(server);
    Ok(())
}

async fn bench_floor(args: &Args, out: &mut Results) -> anyhow::Result<()> {
    let dir = tempfile::tempdir_in(&args.data_dir)?;
    let (server, sim, _) = start_cluster(args, dir.path()).await?;
    let times = Arc::new(Mutex::new(PodTimes::default()));
    let watch = watch_pods(server.client().await?, times.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let template = deployment(1, "localhost/busybox:1")?
        .spec
        .context("spec")?
        .template;
    let mut clients = Vec::new();
    for _ in 0..args.clients {
        clients.push(server.client().await?);
    }
    let cpu0 = server.cpu_seconds();
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    let n = clients.len();
    for (task, client) in clients.into_iter().enumerate() {
        let (template, count) = (template.clone(), args.replicas);
        tasks.push(tokio::spawn(async move {
            let api: Api<Pod> = Api::namespaced(client, "bench");
            for i in (task..count).step_by(n) {
                let pod = Pod {
                    metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                        name: Some(format!("bare-{i}")),
                        labels: template.metadata.as_ref().and_then(|m| m.labels.clone()),
                        ..Default::default()
                    },
                    spec: template.spec.clone(),
                    status: None,
                };
                api.create(&PostParams::default(), &pod).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    loop {
        let ready = times.lock().ready.len();
        if ready >= args.replicas {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "{ready} of {} bare pods Ready after {} s",
                args.replicas,
                args.timeout
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (p50, p99) = startup(&times.lock(), t0)?;
    let floor = Phase {
        seconds: t0.elapsed().as_secs_f64(),
        cpu_s: server.cpu_seconds() - cpu0,
        startup_p50_ms: p50,
        startup_p99_ms: p99,
    };
    println!(
        "  floor: {} bare pods Ready after {:.1} s (server CPU {:.1} s), pod startup p50 {:.0} ms p99 {:.0} ms",
        args.replicas, floor.seconds, floor.cpu_s, p50, p99
    );
    out.floor = Some(floor);
    out.floor_peak_rss_mib = server.peak_rss_mib();
    watch.abort();
    drop(sim);
    drop(server);
    Ok(())
}

fn report(args: &Args, r: &Results) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Controllers benchmark\n");
    let _ = writeln!(
        out,
        "Machine: {}. Date: {}. Generated by `bench/controllers/run` (`controllers-bench`): \
         `rkube server --disable-agent` (API server, embedded store, scheduler and controllers \
         in one process) and one `rkube sim` with {} nodes (Ready after {:.1} s), all on this \
         machine.\n",
        rkube_bench::machine(),
        rkube_bench::date(),
        args.nodes,
        r.nodes_ready_s
    );
    let _ = writeln!(
        out,
        "| phase | pods | seconds | pods/s | server CPU (s) | CPU per pod (ms) | pod startup p50 / p99 (ms) |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|");
    let rows = [
        ("Deployment created → all available", &r.create),
        ("rolling update → all new pods available", &r.rollout),
        (
            "floor: bare pods created by 32 clients → all Ready",
            &r.floor,
        ),
    ];
    for (name, phase) in rows {
        if let Some(p) = phase {
            let _ = writeln!(
                out,
                "| {name} | {} | {:.1} | {:.0} | {:.1} | {:.2} | {:.0} / {:.0} |",
                args.replicas,
                p.seconds,
                args.replicas as f64 / p.seconds.max(1e-9),
                p.cpu_s,
                p.cpu_s * 1000.0 / args.replicas as f64,
                p.startup_p50_ms,
                p.startup_p99_ms
            );
        }
    }
    for e in &r.errors {
        let _ = writeln!(out, "| error: {e} |");
    }
    let _ = writeln!(
        out,
        "\nServer peak RSS (VmHWM): {:.0} MiB with the Deployment, {:.0} MiB for the floor.\n",
        r.peak_rss_mib, r.floor_peak_rss_mib
    );
    if let (Some(c), Some(f)) = (&r.create, &r.floor) {
        let _ = writeln!(
            out,
            "Ratio to the floor: the Deployment took {:.2}x the time and {:.2}x the server CPU \
             of creating the same pods directly; reconcile overhead ≈ {:.2} ms of server CPU per \
             pod.\n",
            c.seconds / f.seconds.max(1e-9),
            c.cpu_s / f.cpu_s.max(1e-9),
            (c.cpu_s - f.cpu_s) * 1000.0 / args.replicas as f64
        );
    }
    let _ = writeln!(
        out,
        "Pod startup: first seen by the benchmark's pod watch → Ready seen by it (pods here are \
         simulated, so this is API server + scheduler + controllers + sim kubelet latency). \
         Upstream's SLO: 5 s at p99. Server CPU: utime+stime of the server process over the \
         phase (the sim and the benchmark run on the same 2 cores and are not counted)."
    );
    out
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut results = Results::default();
    println!(
        "Deployment of {} replicas on {} sim nodes",
        args.replicas, args.nodes
    );
    if let Err(err) = bench_deployment(&args, &mut results).await {
        println!("  failed: {err:#}");
        results.errors.push(format!("{err:#}"));
    }
    if !args.skip_floor {
        println!("Floor: {} bare pods", args.replicas);
        if let Err(err) = bench_floor(&args, &mut results).await {
            println!("  failed: {err:#}");
            results.errors.push(format!("floor: {err:#}"));
        }
    }
    let text = report(&args, &results);
    if !args.report.as_os_str().is_empty() {
        std::fs::write(&args.report, &text)
            .with_context(|| format!("write {}", args.report.display()))?;
        println!("report written to {}", args.report.display());
    }
    if results.errors.is_empty() {
        Ok(())
    } else {
        bail!("{} phase(s) failed", results.errors.len())
    }
}
