//! `api-bench`: the API server end to end, as clients see it.
//!
//! For `rkube server --disable-agent` on the embedded store (and, with `--backends`, on a
//! throwaway etcd) it measures
//! - time from process start to the first `200` from `/readyz`, cold (new data dir: the PKI is
//!   generated) and warm (restart on the same data dir), and the idle RSS after start-up;
//! - create, get and update throughput with p50/p99 latency at `--clients` concurrent kube-rs
//!   clients (ConfigMaps with ~1 KiB of data, each request over the shared HTTP/2 connection
//!   pool of one kube-rs `Client` per client task);
//! - LIST of `--list-objects` objects (whole, and paged by 500);
//! - watch delivery to `--watchers` concurrent watchers (create call → event received);
//! - the peak RSS over the run.
//!
//! No kube-apiserver binary can be installed on these machines (no Go toolchain, no package
//! ships one), so the comparison point for create throughput is the floor under any
//! kube-apiserver+etcd: raw etcd creates (one transaction each, exactly what kube-apiserver
//! sends per create) at the same concurrency, measured here on the same disk.
//!
//! It prints a table and writes it, with the machine's details, to `bench/api/REPORT.md`.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use hdrhistogram::Histogram;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::Client;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use parking_lot::Mutex;
use rkube_bench::cluster::Server;
use rkube_store::Store;
use rkube_store::etcd::EtcdStore;
use rkube_store::testing::EtcdProcess;

/// Benchmarks `rkube server` through its API and writes a report.
#[derive(Parser, Debug)]
struct Args {
    /// The rkube binary to run.
    #[arg(long, default_value = "target/release/rkube")]
    rkube: PathBuf,
    /// Seconds each throughput phase runs.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Concurrent clients in the throughput phases.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Objects in the LIST benchmark.
    #[arg(long, default_value_t = 10_000)]
    list_objects: usize,
    /// Concurrent watchers.
    #[arg(long, default_value_t = 50)]
    watchers: usize,
    /// Objects created while the watchers watch.
    #[arg(long, default_value_t = 200)]
    watch_writes: usize,
    /// Stores to run the server on: `embedded`, `etcd`.
    #[arg(long, value_delimiter = ',', default_value = "embedded,etcd")]
    backends: Vec<String>,
    /// Where to write the report (nothing is written when empty).
    #[arg(long, default_value = "bench/api/REPORT.md")]
    report: PathBuf,
    /// Directory for data dirs (must be on the disk under test, not tmpfs).
    #[arg(long, default_value = "target/bench-data")]
    data_dir: PathBuf,
}

#[derive(Default, Clone)]
struct Phase {
    ops: u64,
    per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
}

#[derive(Default)]
struct Result_ {
    backend: String,
    cold_ready_ms: f64,
    warm_ready_ms: f64,
    idle_rss_mib: f64,
    create: Phase,
    get: Phase,
    update: Phase,
    list_full_ms: f64,
    list_raw_ms: f64,
    list_paged_ms: f64,
    list_items: usize,
    watch: Phase,
    peak_rss_mib: f64,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

fn config_map(name: &str, round: u64) -> ConfigMap {
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some(name.to_owned());
    cm.metadata.labels = Some([("app".to_owned(), "bench".to_owned())].into());
    cm.data = Some(
        [(
            "payload".to_owned(),
            format!("{round:08}{}", "x".repeat(1016)),
        )]
        .into(),
    );
    cm
}

async fn ensure_namespace(client: &Client, name: &str) -> anyhow::Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    let mut ns = Namespace::default();
    ns.metadata.name = Some(name.to_owned());
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Runs `op(handle, task, i)` from one task per handle for `seconds`, timing each call.
async fn timed_phase<T, F, Fut>(clients: &[T], seconds: f64, op: F) -> anyhow::Result<Phase>
where
    T: Clone + Send + 'static,
    F: Fn(T, usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let op = Arc::new(op);
    let hist = Arc::new(Mutex::new(histogram()));
    let ops = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (task, client) in clients.iter().enumerate() {
        let (op, hist, ops, stop, client) = (
            op.clone(),
            hist.clone(),
            ops.clone(),
            stop.clone(),
            client.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut local = histogram();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                op(client.clone(), task, i).await?;
                local.record(t.elapsed().as_micros().max(1) as u64)?;
                i += 1;
            }
            ops.fetch_add(i, Ordering::Relaxed);
            hist.lock().add(&local)?;
            anyhow::Ok(())
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let hist = hist.lock();
    let ops = ops.load(Ordering::Relaxed);
    Ok(Phase {
        ops,
        per_sec: ops as f64 / elapsed,
        p50_ms: ms(&hist, 0.5),
        p99_ms: ms(&hist, 0.99),
    })
}

async fn bench_server(args: &Args, backend: &str) -> anyhow::Result<Result_> {
    let mut out = Result_ {
        backend: backend.to_owned(),
        ..Result_::default()
    };
    let etcd = if backend == "etcd" {
        Some(EtcdProcess::start().context("start etcd")?)
    } else {
        None
    };
    let extra: Vec<&str> = match &etcd {
        Some(e) => vec!["--datastore-endpoint", e.endpoint.as_str()],
        None => Vec::new(),
    };
    let dir = tempfile::tempdir_in(&args.data_dir)?;
    let data = dir.path().join("rkube");
    {
        let (server, cold) = Server::start(&args.rkube, &data, &extra).await?;
        out.cold_ready_ms = cold;
        drop(server);
    }
    let (server, warm) = Server::start(&args.rkube, &data, &extra).await?;
    out.warm_ready_ms = warm;
    tokio::time::sleep(Duration::from_secs(2)).await;
    out.idle_rss_mib = server.proc_.memory_mib("VmRSS:");
    println!(
        "{backend}: ready in {cold:.0} ms cold, {warm:.0} ms warm; idle RSS {:.1} MiB",
        out.idle_rss_mib,
        cold = out.cold_ready_ms
    );

    let mut clients = Vec::new();
    for _ in 0..args.clients {
        clients.push(server.client().await?);
    }
    let admin = clients[0].clone();
    for ns in ["bench", "list", "watch"] {
        ensure_namespace(&admin, ns).await?;
    }

    // Creates: each task its own names.
    out.create = timed_phase(&clients, args.seconds, |client, task, i| async move {
        let api: Api<ConfigMap> = Api::namespaced(client, "bench");
        api.create(
            &PostParams::default(),
            &config_map(&format!("c-{task}-{i}"), i),
        )
        .await?;
        Ok(())
    })
    .await?;
    print_phase(backend, "create", &out.create);

    // Gets of the objects just created (each task reads its own).
    let created = Arc::new(per_task_counts(&admin, args.clients).await?);
    let counts = created.clone();
    out.get = timed_phase(&clients, args.seconds, move |client, task, i| {
        let n = counts[task].max(1);
        async move {
            let api: Api<ConfigMap> = Api::namespaced(client, "bench");
            api.get(&format!("c-{task}-{}", i % n)).await?;
            Ok(())
        }
    })
    .await?;
    print_phase(backend, "get", &out.get);

    // Updates: read-modify-write of the task's own objects (no conflicts between tasks).
    let counts = created.clone();
    out.update = timed_phase(&clients, args.seconds, move |client, task, i| {
        let n = counts[task].max(1);
        async move {
            let api: Api<ConfigMap> = Api::namespaced(client, "bench");
            let name = format!("c-{task}-{}", i % n);
            let mut cm = config_map(&name, i + 1);
            cm.metadata.resource_version = None;
            api.replace(&name, &PostParams::default(), &cm).await?;
            Ok(())
        }
    })
    .await?;
    print_phase(backend, "update", &out.update);

    // LIST of many objects.
    fill(&clients, "list", args.list_objects).await?;
    let api: Api<ConfigMap> = Api::namespaced(admin.clone(), "list");
    let mut full = Vec::new();
    let mut raw = Vec::new();
    let mut paged = Vec::new();
    for _ in 0..5 {
        // The bytes alone (server + transport), then typed (what a kube-rs user waits for).
        let t = Instant::now();
        let req = http::Request::get("/api/v1/namespaces/list/configmaps").body(Vec::new())?;
        let text = admin.request_text(req).await?;
        raw.push(t.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(text.len() > args.list_objects * 1000, "short LIST body");
        let t = Instant::now();
        let list = api.list(&ListParams::default()).await?;
        full.push(t.elapsed().as_secs_f64() * 1000.0);
        out.list_items = list.items.len();
        let t = Instant::now();
        let mut params = ListParams::default().limit(500);
        let mut seen = 0;
        loop {
            let page = api.list(&params).await?;
            seen += page.items.len();
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(c) => params = params.continue_token(&c),
                None => break,
            }
        }
        paged.push(t.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(
            seen == out.list_items,
            "paged LIST saw {seen} of {}",
            out.list_items
        );
    }
    out.list_full_ms = median(&mut full);
    out.list_raw_ms = median(&mut raw);
    out.list_paged_ms = median(&mut paged);
    println!(
        "{backend}: LIST {} objects {:.1} ms whole ({:.1} ms for the bytes alone), {:.1} ms paged by 500",
        out.list_items, out.list_full_ms, out.list_raw_ms, out.list_paged_ms
    );

    out.watch = bench_watch(&clients, args).await?;
    print_phase(backend, "watch delivery", &out.watch);
    out.peak_rss_mib = server.peak_rss_mib();
    drop(server);
    drop(etcd);
    Ok(out)
}

/// How many objects each create task made (names `c-TASK-I`).
async fn per_task_counts(client: &Client, tasks: usize) -> anyhow::Result<Vec<u64>> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "bench");
    let mut counts = vec![0u64; tasks];
    for cm in api.list(&ListParams::default()).await?.items {
        let name = cm.metadata.name.unwrap_or_default();
        let mut parts = name.split('-').skip(1);
        if let (Some(Ok(task)), Some(Ok(i))) = (
            parts.next().map(str::parse::<usize>),
            parts.next().map(str::parse::<u64>),
        ) && task < tasks
        {
            counts[task] = counts[task].max(i + 1);
        }
    }
    Ok(counts)
}

/// Creates `n` objects in `namespace` with all clients.
async fn fill(clients: &[Client], namespace: &str, n: usize) -> anyhow::Result<()> {
    let per = n.div_ceil(clients.len());
    let mut tasks = Vec::new();
    for (task, client) in clients.iter().enumerate() {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
        let range = (task * per)..((task + 1) * per).min(n);
        tasks.push(tokio::spawn(async move {
            for i in range {
                api.create(&PostParams::default(), &config_map(&format!("l-{i}"), 0))
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

async fn bench_watch(clients: &[Client], args: &Args) -> anyhow::Result<Phase> {
    let created: Arc<Mutex<Vec<Option<Instant>>>> =
        Arc::new(Mutex::new(vec![None; args.watch_writes]));
    let hist = Arc::new(Mutex::new(histogram()));
    let api: Api<ConfigMap> = Api::namespaced(clients[0].clone(), "watch");
    let rv = api
        .list(&ListParams::default().limit(1))
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    let mut watchers = Vec::new();
    for w in 0..args.watchers {
        let api: Api<ConfigMap> = Api::namespaced(clients[w % clients.len()].clone(), "watch");
        let (created, hist, rv, want) =
            (created.clone(), hist.clone(), rv.clone(), args.watch_writes);
        watchers.push(tokio::spawn(async move {
            let mut stream = api.watch(&WatchParams::default(), &rv).await?.boxed();
            let mut seen = 0;
            while seen < want {
                let Some(event) = stream.try_next().await? else {
                    bail!("watch ended after {seen} events");
                };
                if let WatchEvent::Added(cm) = event {
                    let name = cm.metadata.name.unwrap_or_default();
                    let i: usize = name.trim_start_matches("w-").parse()?;
                    if let Some(t) = created.lock()[i] {
                        hist.lock().record(t.elapsed().as_micros().max(1) as u64)?;
                    }
                    seen += 1;
                }
            }
            anyhow::Ok(())
        }));
    }
    // Let every watch reach the server before writing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    for i in 0..args.watch_writes {
        created.lock()[i] = Some(Instant::now());
        api.create(&PostParams::default(), &config_map(&format!("w-{i}"), 0))
            .await?;
    }
    for w in watchers {
        tokio::time::timeout(Duration::from_secs(60), w)
            .await
            .context("watchers did not get every event within 60 s")???;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let hist = hist.lock();
    let deliveries = hist.len();
    Ok(Phase {
        ops: deliveries,
        per_sec: deliveries as f64 / elapsed,
        p50_ms: ms(&hist, 0.5),
        p99_ms: ms(&hist, 0.99),
    })
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn print_phase(backend: &str, what: &str, p: &Phase) {
    println!(
        "{backend}: {what}: {:.0}/s ({} ops), p50 {:.2} ms, p99 {:.2} ms",
        p.per_sec, p.ops, p.p50_ms, p.p99_ms
    );
}

/// Raw etcd creates (one txn each) at `clients` concurrency: the most creates/s any
/// kube-apiserver+etcd can do on this machine, since kube-apiserver sends one such
/// transaction per create.
async fn etcd_floor(args: &Args) -> anyhow::Result<Phase> {
    let etcd = EtcdProcess::start().context("start etcd")?;
    let store: Arc<dyn Store> =
        Arc::new(EtcdStore::connect(std::slice::from_ref(&etcd.endpoint)).await?);
    let value = Arc::new(vec![b'x'; 1400]);
    let stores = vec![store; args.clients];
    let phase = timed_phase(&stores, args.seconds, move |store, task, i| {
        let value = value.clone();
        async move {
            let key = format!("/registry/configmaps/bench/c-{task}-{i}");
            store.create(key.as_bytes(), value.to_vec()).await?;
            Ok(())
        }
    })
    .await?;
    drop(etcd);
    Ok(phase)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("create {}", args.data_dir.display()))?;
    anyhow::ensure!(
        args.rkube.exists(),
        "{} not found: build it first (bench/api/run does)",
        args.rkube.display()
    );
    let mut results = Vec::new();
    for backend in &args.backends {
        anyhow::ensure!(
            backend == "embedded" || backend == "etcd",
            "unknown backend {backend:?}: embedded or etcd"
        );
        results.push(bench_server(&args, backend).await?);
    }
    let floor = etcd_floor(&args).await?;
    print_phase("etcd alone", "raw creates", &floor);
    let report = render(&args, &results, &floor);
    println!("\n{report}");
    if !args.report.as_os_str().is_empty() {
        if let Some(dir) = args.report.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&args.report, &report)
            .with_context(|| format!("write {}", args.report.display()))?;
        println!("wrote {}", args.report.display());
    }
    Ok(())
}

fn render(args: &Args, results: &[Result_], floor: &Phase) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# API server benchmark\n");
    let _ = writeln!(
        out,
        "Measured {} on {} with `bench/api/run` ({} s per phase, {} clients, {} watchers).\n",
        rkube_bench::date(),
        rkube_bench::machine(),
        args.seconds,
        args.clients,
        args.watchers
    );
    let _ = writeln!(
        out,
        "| | {} |",
        results
            .iter()
            .map(|r| format!("rkube on {}", r.backend))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let _ = writeln!(out, "|---|{}", "---:|".repeat(results.len()));
    let row = |out: &mut String, name: &str, f: &dyn Fn(&Result_) -> String| {
        let cells: Vec<String> = results.iter().map(f).collect();
        let _ = writeln!(out, "| {name} | {} |", cells.join(" | "));
    };
    row(&mut out, "ready, cold start (ms)", &|r| {
        format!("{:.0}", r.cold_ready_ms)
    });
    row(&mut out, "ready, restart (ms)", &|r| {
        format!("{:.0}", r.warm_ready_ms)
    });
    row(&mut out, "idle RSS (MiB)", &|r| {
        format!("{:.1}", r.idle_rss_mib)
    });
    for (name, get) in [
        (
            "create",
            (|r: &Result_| r.create.clone()) as fn(&Result_) -> Phase,
        ),
        ("get", |r: &Result_| r.get.clone()),
        ("update", |r: &Result_| r.update.clone()),
    ] {
        row(&mut out, &format!("{name}/s"), &|r| {
            format!("{:.0}", get(r).per_sec)
        });
        row(&mut out, &format!("{name} p50 / p99 (ms)"), &|r| {
            let p = get(r);
            format!("{:.2} / {:.2}", p.p50_ms, p.p99_ms)
        });
    }
    row(&mut out, "LIST whole, typed by kube-rs (ms)", &|r| {
        format!("{:.1} ({} objects)", r.list_full_ms, r.list_items)
    });
    row(&mut out, "LIST whole, bytes only (ms)", &|r| {
        format!("{:.1}", r.list_raw_ms)
    });
    row(&mut out, "LIST paged by 500 (ms)", &|r| {
        format!("{:.1}", r.list_paged_ms)
    });
    row(&mut out, "watch delivery p50 / p99 (ms)", &|r| {
        format!("{:.2} / {:.2}", r.watch.p50_ms, r.watch.p99_ms)
    });
    row(&mut out, "watch events delivered/s", &|r| {
        format!("{:.0}", r.watch.per_sec)
    });
    row(&mut out, "peak RSS (MiB)", &|r| {
        format!("{:.1}", r.peak_rss_mib)
    });
    let _ = writeln!(
        out,
        "\n**Create floor of kube-apiserver+etcd**: raw etcd creates (one transaction each, what \
         kube-apiserver sends per create), {} clients: {:.0}/s, p50 {:.2} ms, p99 {:.2} ms. \
         kube-apiserver itself cannot be installed here (no package ships it and the Go module proxy is unreachable), so this \
         upper bound of its throughput stands in for it.\n",
        args.clients, floor.per_sec, floor.p50_ms, floor.p99_ms
    );
    for r in results {
        let _ = writeln!(
            out,
            "- rkube on {}: {:.2}x the raw-etcd create floor.",
            r.backend,
            r.create.per_sec / floor.per_sec.max(1.0)
        );
    }
    let _ = writeln!(
        out,
        "\nTargets (issue 3): ready < 1 s, idle RSS < 64 MiB, create ≥ 3x kube-apiserver+etcd."
    );
    out
}
