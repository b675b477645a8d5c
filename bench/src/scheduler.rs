//! `scheduler-bench`: scheduler throughput, modelled on upstream `scheduler_perf`.
//!
//! For each workload it starts a fresh `rkube server --disable-agent
//! --disable-controller-manager` (API server, store and scheduler in one process, no
//! controllers, as upstream's scheduler_perf), creates the nodes (`--nodes-from api`: Ready
//! Node objects as scheduler_perf's node template, no kubelets; `sim`: `rkube sim`), waits
//! until every node is Ready, then creates the pods from `--clients` concurrent kube-rs clients (no `spec.nodeName`,
//! default scheduler) while a watch records when each pod's binding shows up. It reports
//! pods/s (pods ÷ seconds from the first create to the last binding observed), p50/p99
//! scheduling latency (binding observed − create returned), the server's CPU seconds over the
//! measured phase (utime+stime from `/proc/PID/stat`) and its peak RSS (`VmHWM`).
//!
//! Workloads:
//! - `SchedulingBasic`: 5,000 nodes, 10,000 plain pods (100m cpu, 128Mi);
//! - `PodAntiAffinity`: 5,000 nodes, 2,000 pods with required anti-affinity on hostname
//!   against their own label;
//! - `TopologySpreading`: 5,000 nodes over 10 zones, 5,000 pods with a `DoNotSchedule`
//!   spread constraint on zone (maxSkew 1);
//! - `Preemption`: 500 nodes (1 cpu each) filled with one low-priority 900m pod each, then
//!   500 high-priority 500m pods that each must preempt one; only these are measured.
//!
//! It prints the figures as they come and writes a table to `bench/scheduler/REPORT.md`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use futures::StreamExt;
use hdrhistogram::Histogram;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::serde_json::{self, json};
use kube::Client;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use parking_lot::Mutex;
use rkube_bench::cluster::{Proc, Server, start_sim, wait_nodes_ready};

/// Measures the scheduler's throughput and writes a report.
#[derive(Parser, Debug)]
struct Args {
    /// The rkube binary to run.
    #[arg(long, default_value = "target/release/rkube")]
    rkube: PathBuf,
    /// Workloads to run: basic, anti-affinity, spreading, preemption.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "basic,anti-affinity,spreading,preemption"
    )]
    workloads: Vec<String>,
    /// Nodes of every workload (default: each workload's own size).
    #[arg(long)]
    nodes: Option<usize>,
    /// Pods of every workload (default: each workload's own size).
    #[arg(long)]
    pods: Option<usize>,
    /// Concurrent clients creating pods.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Where the nodes come from: `api` creates Ready Node objects directly, as upstream's
    /// scheduler_perf does (no kubelets: bound pods stay Pending, no heartbeats); `sim` runs
    /// `rkube sim` (leases renewed, bound pods go Running), a heavier load on the server.
    #[arg(long, default_value = "api", value_parser = ["api", "sim"])]
    nodes_from: String,
    /// Seconds to wait for the nodes, and then for all bindings, before giving up.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Where to write the report (nothing is written when empty).
    #[arg(long, default_value = "bench/scheduler/REPORT.md")]
    report: PathBuf,
    /// Directory for data dirs.
    #[arg(long, default_value = "target/bench-data")]
    data_dir: PathBuf,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Basic,
    AntiAffinity,
    Spreading,
    Preemption,
}

impl Kind {
    fn parse(s: &str) -> anyhow::Result<Self> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "basic" | "schedulingbasic" => Kind::Basic,
            "anti-affinity" | "antiaffinity" | "podantiaffinity" => Kind::AntiAffinity,
            "spreading" | "topologyspreading" => Kind::Spreading,
            "preemption" => Kind::Preemption,
            other => bail!("unknown workload {other:?}"),
        })
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Basic => "SchedulingBasic",
            Kind::AntiAffinity => "PodAntiAffinity",
            Kind::Spreading => "TopologySpreading",
            Kind::Preemption => "Preemption",
        }
    }

    /// Default (nodes, pods).
    fn size(self) -> (usize, usize) {
        match self {
            Kind::Basic => (5_000, 10_000),
            Kind::AntiAffinity => (5_000, 2_000),
            Kind::Spreading => (5_000, 5_000),
            Kind::Preemption => (500, 500),
        }
    }
}

struct Outcome {
    kind: Kind,
    nodes: usize,
    pods: usize,
    nodes_ready_s: f64,
    per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_s: f64,
    peak_rss_mib: f64,
}

fn pod(kind: Kind, phase: &str, name: &str) -> anyhow::Result<Pod> {
    let (cpu, priority_class, grace) = match (kind, phase) {
        (Kind::Preemption, "fill") => ("900m", Some("bench-low"), Some(0)),
        (Kind::Preemption, _) => ("500m", Some("bench-high"), None),
        _ => ("100m", None, None),
    };
    let mut spec = json!({
        "containers": [{
            "name": "c",
            "image": "registry.invalid/pause:3.9",
            "resources": {"requests": {"cpu": cpu, "memory": "128Mi"}},
        }],
    });
    if let Some(pc) = priority_class {
        spec["priorityClassName"] = json!(pc);
    }
    if let Some(g) = grace {
        spec["terminationGracePeriodSeconds"] = json!(g);
    }
    let app = format!("{}-{phase}", kind.name().to_ascii_lowercase());
    match kind {
        Kind::AntiAffinity => {
            spec["affinity"] = json!({"podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [{
                    "labelSelector": {"matchLabels": {"app": app}},
                    "topologyKey": "kubernetes.io/hostname",
                }],
            }});
        }
        Kind::Spreading => {
            spec["topologySpreadConstraints"] = json!([{
                "maxSkew": 1,
                "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": {"matchLabels": {"app": app}},
            }]);
        }
        _ => {}
    }
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": app, "bench-phase": phase}},
        "spec": spec,
    }))?)
}

struct Phase {
    per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_s: f64,
}

/// Creates `count` pods of `phase` from the clients and waits until all are bound.
async fn create_and_wait(
    args: &Args,
    server: &Server,
    clients: &[Client],
    kind: Kind,
    phase: &str,
    count: usize,
) -> anyhow::Result<Phase> {
    let api: Api<Pod> = Api::namespaced(clients[0].clone(), "bench");
    let selector = format!("bench-phase={phase}");
    let list = api
        .list_metadata(&ListParams::default().labels(&selector))
        .await?;
    let rv = list.metadata.resource_version.unwrap_or_default();
    let bound: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let created: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();

    // The watcher: records when each pod's spec.nodeName is first seen.
    let watcher = {
        let (api, bound, selector) = (api.clone(), bound.clone(), selector.clone());
        tokio::spawn(async move {
            let mut rv = rv;
            loop {
                let wp = WatchParams::default().labels(&selector).timeout(290);
                let mut stream = api.watch(&wp, &rv).await?.boxed();
                while let Some(ev) = stream.next().await {
                    match ev? {
                        WatchEvent::Added(p) | WatchEvent::Modified(p) => {
                            if let Some(v) = &p.metadata.resource_version {
                                rv.clone_from(v);
                            }
                            let name = p.metadata.name.clone().unwrap_or_default();
                            if p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() {
                                let mut b = bound.lock();
                                b.entry(name).or_insert_with(Instant::now);
                                if b.len() >= count {
                                    return anyhow::Ok(());
                                }
                            }
                        }
                        WatchEvent::Bookmark(b) => rv = b.metadata.resource_version,
                        WatchEvent::Deleted(_) => {}
                        WatchEvent::Error(e) => {
                            // Expired: relist and carry on from there.
                            let list = api.list(&ListParams::default().labels(&selector)).await?;
                            let mut b = bound.lock();
                            for p in list.items {
                                if p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() {
                                    b.entry(p.metadata.name.unwrap_or_default())
                                        .or_insert_with(Instant::now);
                                }
                            }
                            if b.len() >= count {
                                return anyhow::Ok(());
                            }
                            eprintln!("watch error {e:?}; relisted");
                            rv = list.metadata.resource_version.unwrap_or_default();
                            break;
                        }
                    }
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;

    let cpu0 = server.cpu_seconds();
    let started = Instant::now();
    let mut tasks = Vec::new();
    let n = clients.len();
    for (task, client) in clients.iter().enumerate() {
        let (client, created, phase) = (client.clone(), created.clone(), phase.to_owned());
        tasks.push(tokio::spawn(async move {
            let api: Api<Pod> = Api::namespaced(client, "bench");
            for i in (task..count).step_by(n) {
                let name = format!("{phase}-{i}");
                api.create(&PostParams::default(), &pod(kind, &phase, &name)?)
                    .await
                    .with_context(|| format!("create {name}"))?;
                created.lock().insert(name, Instant::now());
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let create_s = started.elapsed().as_secs_f64();
    match tokio::time::timeout(Duration::from_secs(args.timeout), watcher).await {
        Ok(r) => r??,
        Err(_) => bail!(
            "{} of {count} pods bound after {} s",
            bound.lock().len(),
            args.timeout
        ),
    }
    let cpu_s = server.cpu_seconds() - cpu0;
    let bound = bound.lock();
    let created = created.lock();
    let last = bound.values().max().copied().unwrap_or(started);
    let elapsed = last.duration_since(started).as_secs_f64();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    for (name, at) in bound.iter() {
        if let Some(c) = created.get(name) {
            hist.record(at.saturating_duration_since(*c).as_micros().max(1) as u64)?;
        }
    }
    println!("  {phase}: {count} pods created in {create_s:.2} s, all bound after {elapsed:.2} s");
    Ok(Phase {
        per_sec: count as f64 / elapsed.max(1e-9),
        p50_ms: hist.value_at_quantile(0.5) as f64 / 1000.0,
        p99_ms: hist.value_at_quantile(0.99) as f64 / 1000.0,
        cpu_s,
    })
}

/// Starts the sims for `kind`'s nodes.
fn start_sims(args: &Args, server: &Server, kind: Kind, nodes: usize) -> anyhow::Result<Vec<Proc>> {
    let mut sims = Vec::new();
    match kind {
        Kind::Spreading => {
            let zones = 10.min(nodes.max(1));
            for z in 0..zones {
                let n = nodes / zones + usize::from(z < nodes % zones);
                let label = format!("topology.kubernetes.io/zone=z{z}");
                sims.push(start_sim(
                    &args.rkube,
                    &server.kubeconfig,
                    n,
                    &format!("z{z}-"),
                    &["--labels", &label],
                )?);
            }
        }
        Kind::Preemption => {
            sims.push(start_sim(
                &args.rkube,
                &server.kubeconfig,
                nodes,
                "sim-",
                &["--cpu", "1"],
            )?);
        }
        _ => sims.push(start_sim(
            &args.rkube,
            &server.kubeconfig,
            nodes,
            "sim-",
            &[],
        )?),
    }
    Ok(sims)
}

/// Upstream scheduler_perf's node template (4 cpu, 32Gi, 110 pods; 1 cpu for preemption;
/// zones `z0`..`z9` for spreading), Ready, created by the clients.
async fn create_nodes(clients: &[Client], kind: Kind, nodes: usize) -> anyhow::Result<()> {
    let cpu = if kind == Kind::Preemption { "1" } else { "4" };
    let n = clients.len();
    let mut tasks = Vec::new();
    for (task, client) in clients.iter().enumerate() {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let api: Api<Node> = Api::all(client);
            for i in (task..nodes).step_by(n) {
                let name = format!("node-{i}");
                let mut labels = json!({"kubernetes.io/hostname": name});
                if kind == Kind::Spreading {
                    labels["topology.kubernetes.io/zone"] = json!(format!("z{}", i % 10));
                }
                let node: Node = serde_json::from_value(json!({
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {"name": name, "labels": labels},
                    "status": {
                        "capacity": {"cpu": cpu, "memory": "32Gi", "pods": "110"},
                        "allocatable": {"cpu": cpu, "memory": "32Gi", "pods": "110"},
                        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
                    },
                }))?;
                api.create(&PostParams::default(), &node)
                    .await
                    .with_context(|| format!("create node {name}"))?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

async fn run_workload(args: &Args, kind: Kind) -> anyhow::Result<Outcome> {
    let (nodes, pods) = kind.size();
    let nodes = args.nodes.unwrap_or(nodes);
    let mut pods = args.pods.unwrap_or(pods);
    if matches!(kind, Kind::AntiAffinity | Kind::Preemption) && pods > nodes {
        // One pod per node at most: anti-affinity on hostname, one victim per node.
        pods = nodes;
    }
    println!("{}: {nodes} nodes, {pods} pods", kind.name());
    std::fs::create_dir_all(&args.data_dir)?;
    let dir = tempfile::tempdir_in(&args.data_dir)?;
    let (server, _) = Server::start(
        &args.rkube,
        &dir.path().join("rkube"),
        &["--disable-controller-manager"],
    )
    .await?;
    let admin = server.client().await?;

    let mut clients = Vec::new();
    for _ in 0..args.clients {
        clients.push(server.client().await?);
    }
    let t = Instant::now();
    let mut sims = Vec::new();
    if args.nodes_from == "sim" {
        sims = start_sims(args, &server, kind, nodes)?;
    } else {
        create_nodes(&clients, kind, nodes).await?;
    }
    wait_nodes_ready(&admin, nodes, Duration::from_secs(args.timeout)).await?;
    let nodes_ready_s = t.elapsed().as_secs_f64();
    println!("  {nodes} nodes Ready after {nodes_ready_s:.1} s");

    let ns: Api<Namespace> = Api::all(admin.clone());
    ns.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "bench"}}))?,
    )
    .await?;
    let phase = if kind == Kind::Preemption {
        let pcs: Api<PriorityClass> = Api::all(admin.clone());
        for (name, value) in [("bench-low", 100), ("bench-high", 100_000)] {
            pcs.create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                    "apiVersion": "scheduling.k8s.io/v1",
                    "kind": "PriorityClass",
                    "metadata": {"name": name},
                    "value": value,
                }))?,
            )
            .await?;
        }
        let fill = create_and_wait(args, &server, &clients, kind, "fill", nodes).await?;
        println!("  fill: {:.0} low-priority pods/s", fill.per_sec);
        create_and_wait(args, &server, &clients, kind, "high", pods).await?
    } else {
        create_and_wait(args, &server, &clients, kind, "pods", pods).await?
    };
    let out = Outcome {
        kind,
        nodes,
        pods,
        nodes_ready_s,
        per_sec: phase.per_sec,
        p50_ms: phase.p50_ms,
        p99_ms: phase.p99_ms,
        cpu_s: phase.cpu_s,
        peak_rss_mib: server.peak_rss_mib(),
    };
    println!(
        "  {}: {:.0} pods/s, p50 {:.1} ms, p99 {:.1} ms, server CPU {:.1} s, peak RSS {:.0} MiB",
        kind.name(),
        out.per_sec,
        out.p50_ms,
        out.p99_ms,
        out.cpu_s,
        out.peak_rss_mib
    );
    drop(clients);
    drop(sims);
    drop(server);
    Ok(out)
}

fn report(args: &Args, results: &[Outcome], errors: &[String]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Scheduler benchmark\n");
    let _ = writeln!(
        out,
        "Machine: {}. Date: {}. Generated by `bench/scheduler/run` (`scheduler-bench`), \
         {} concurrent kube-rs clients creating pods; `rkube server --disable-agent \
         --disable-controller-manager` (API server, embedded store and scheduler in one \
         process, no controllers, as upstream's scheduler_perf); nodes: {}; all on this \
         machine.\n",
        rkube_bench::machine(),
        rkube_bench::date(),
        args.clients,
        if args.nodes_from == "sim" {
            "`rkube sim` (leases renewed every 10 s, bound pods go Running)"
        } else {
            "Ready Node objects created through the API from upstream scheduler_perf's node \
             template (4 cpu, 32Gi, 110 pods), no kubelets, as scheduler_perf does"
        }
    );
    let _ = writeln!(
        out,
        "| workload | nodes | pods | pods/s | p50 / p99 (ms) | server CPU (s) | peak RSS (MiB) | nodes Ready after (s) |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in results {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.0} | {:.1} / {:.1} | {:.1} | {:.0} | {:.1} |",
            r.kind.name(),
            r.nodes,
            r.pods,
            r.per_sec,
            r.p50_ms,
            r.p99_ms,
            r.cpu_s,
            r.peak_rss_mib,
            r.nodes_ready_s
        );
    }
    for e in errors {
        let _ = writeln!(out, "| {e} |");
    }
    let _ = writeln!(
        out,
        "\npods/s: pods ÷ seconds from the first create to the last binding observed by a \
         watch. Latency: binding observed − create returned, per pod. Server CPU: utime+stime \
         of the server over that interval (the 32 clients and the sims run on the same 2 cores \
         and are not counted). Peak RSS: the server's VmHWM at the end of the workload. \
         Preemption: nodes of 1 cpu each filled with one 900m low-priority pod, then the \
         measured 500m high-priority pods, each of which must preempt one.\n"
    );
    let _ = writeln!(
        out,
        "Targets (issue): upstream scheduler_perf CI floor for SchedulingBasic 270 pods/s; \
         ours ≥ 2,000 pods/s for SchedulingBasic on this 2-core machine with the API server \
         and the store in the same process."
    );
    out
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let kinds = args
        .workloads
        .iter()
        .map(|w| Kind::parse(w))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut results = Vec::new();
    let mut errors = Vec::new();
    for kind in kinds {
        match run_workload(&args, kind).await {
            Ok(r) => results.push(r),
            Err(e) => {
                eprintln!("{}: failed: {e:#}", kind.name());
                errors.push(format!("{}: failed: {e:#}", kind.name()));
            }
        }
    }
    let text = report(&args, &results, &errors);
    println!("\n{text}");
    if !args.report.as_os_str().is_empty() {
        if let Some(dir) = args.report.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&args.report, text)?;
        println!("wrote {}", args.report.display());
    }
    if errors.is_empty() {
        Ok(())
    } else {
        bail!("{} workload(s) failed", errors.len())
    }
}
