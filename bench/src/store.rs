//! `store-bench`: the state store, both backends side by side on this machine.
//!
//! For the embedded store and a real etcd (started on a free loopback port, data on the same
//! disk) it measures
//! - durable writes/s and p50/p99 latency with 1, 8 and 64 concurrent writers (~1 KiB values,
//!   each write a create, acknowledged only once on disk);
//! - a range read of 10,000 keys (whole, and paged by 500);
//! - watch delivery latency (write call → event received by a watcher);
//! - the disk's fsync floor (1 KiB write + fdatasync in a loop), the physical limit of a single
//!   writer that waits for durability.
//!
//! It prints a table and writes it, with the machine's details, to `bench/store/REPORT.md`.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use futures::StreamExt;
use hdrhistogram::Histogram;
use rkube_store::embedded::EmbeddedStore;
use rkube_store::etcd::EtcdStore;
use rkube_store::testing::EtcdProcess;
use rkube_store::{RangeRequest, Store};

/// Benchmarks the embedded and etcd store backends on this machine and writes a report.
#[derive(Parser, Debug)]
struct Args {
    /// Seconds each write phase runs.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Concurrent writer counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    writers: Vec<usize>,
    /// Value size in bytes.
    #[arg(long, default_value_t = 1024)]
    value_size: usize,
    /// Keys in the range benchmark.
    #[arg(long, default_value_t = 10_000)]
    range_keys: usize,
    /// Writes in the watch latency benchmark.
    #[arg(long, default_value_t = 2_000)]
    watch_writes: usize,
    /// Backends to measure.
    #[arg(long, value_delimiter = ',', default_value = "embedded,etcd")]
    backends: Vec<String>,
    /// Where to write the report (nothing is written when empty).
    #[arg(long, default_value = "bench/store/REPORT.md")]
    report: PathBuf,
    /// Directory for the stores' data (must be on the disk under test, not tmpfs).
    #[arg(long, default_value = "target/bench-data")]
    data_dir: PathBuf,
}

#[derive(Default)]
struct WriteResult {
    writers: usize,
    ops: u64,
    per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
}

#[derive(Default)]
struct BackendResult {
    name: String,
    writes: Vec<WriteResult>,
    range_full_ms: f64,
    range_paged_ms: f64,
    watch_p50_ms: f64,
    watch_p99_ms: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("create {}", args.data_dir.display()))?;

    let floor = fsync_floor(
        &args.data_dir,
        Duration::from_secs_f64(args.seconds.min(3.0)),
    )?;
    println!(
        "fsync floor: {:.0} fsyncs/s, p50 {:.3} ms",
        floor.per_sec, floor.p50_ms
    );

    let mut results = Vec::new();
    for backend in &args.backends {
        let (store, _guard): (Arc<dyn Store>, Box<dyn std::any::Any>) = match backend.as_str() {
            "embedded" => {
                let dir = tempfile::Builder::new()
                    .prefix("embedded-")
                    .tempdir_in(&args.data_dir)?;
                let store = EmbeddedStore::open(dir.path())?;
                (Arc::new(store), Box::new(dir))
            }
            "etcd" => {
                let etcd = EtcdProcess::start().context("start etcd")?;
                let store = EtcdStore::connect(std::slice::from_ref(&etcd.endpoint)).await?;
                (Arc::new(store), Box::new(etcd))
            }
            other => anyhow::bail!("unknown backend {other:?} (embedded, etcd)"),
        };
        println!("== {backend}");
        results.push(bench_backend(backend, store, &args).await?);
    }

    let report = render(&args, &floor, &results);
    println!("\n{report}");
    if !args.report.as_os_str().is_empty() {
        if let Some(parent) = args.report.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&args.report, &report)
            .with_context(|| format!("write {}", args.report.display()))?;
        println!("report written to {}", args.report.display());
    }
    Ok(())
}

async fn bench_backend(
    name: &str,
    store: Arc<dyn Store>,
    args: &Args,
) -> anyhow::Result<BackendResult> {
    let mut result = BackendResult {
        name: name.to_string(),
        ..Default::default()
    };
    for &writers in &args.writers {
        let w = bench_writes(&store, writers, args).await?;
        println!(
            "  {writers:>3} writers: {:>8.0} writes/s  p50 {:>7.2} ms  p99 {:>7.2} ms  ({} writes)",
            w.per_sec, w.p50_ms, w.p99_ms, w.ops
        );
        result.writes.push(w);
    }
    let (full, paged) = bench_range(&store, args).await?;
    println!(
        "  range {} keys: {full:.1} ms whole, {paged:.1} ms paged by 500",
        args.range_keys
    );
    result.range_full_ms = full;
    result.range_paged_ms = paged;
    let (p50, p99) = bench_watch(&store, args).await?;
    println!("  watch delivery: p50 {p50:.2} ms  p99 {p99:.2} ms");
    result.watch_p50_ms = p50;
    result.watch_p99_ms = p99;
    Ok(result)
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

async fn bench_writes(
    store: &Arc<dyn Store>,
    writers: usize,
    args: &Args,
) -> anyhow::Result<WriteResult> {
    let deadline = Instant::now() + Duration::from_secs_f64(args.seconds);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        let value = vec![b'x'; args.value_size];
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new(3).expect("histogram");
            let mut i = 0u64;
            while Instant::now() < deadline {
                let key = format!("/bench/writes/{writers}/{w}/{i}");
                let t = Instant::now();
                store.create(key.as_bytes(), value.clone()).await?;
                hist.record(t.elapsed().as_micros() as u64).ok();
                i += 1;
            }
            anyhow::Ok(hist)
        }));
    }
    let mut hist = Histogram::<u64>::new(3)?;
    for t in tasks {
        hist.add(t.await??)?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    Ok(WriteResult {
        writers,
        ops: hist.len(),
        per_sec: hist.len() as f64 / elapsed,
        p50_ms: ms(&hist, 0.5),
        p99_ms: ms(&hist, 0.99),
    })
}

async fn bench_range(store: &Arc<dyn Store>, args: &Args) -> anyhow::Result<(f64, f64)> {
    // Load with 64 concurrent writers to keep it quick.
    let n = args.range_keys;
    let prefix = "/bench/range/";
    futures::stream::iter(0..n)
        .map(|i| {
            let store = store.clone();
            let value = vec![b'r'; args.value_size];
            async move {
                store
                    .create(format!("{prefix}{i:08}").as_bytes(), value)
                    .await
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;

    let runs = 10;
    let mut full = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let r = store.range(RangeRequest::prefix(prefix)).await?;
        full.push(t.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(r.kvs.len() == n, "range returned {} keys", r.kvs.len());
    }
    let mut paged = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let mut req = RangeRequest::prefix(prefix).limit(500);
        let mut got = 0;
        loop {
            let page = store.range(req.clone()).await?;
            got += page.kvs.len();
            if !page.more {
                break;
            }
            req = req
                .at_revision(page.revision)
                .after(&page.kvs.last().expect("a page").key);
        }
        paged.push(t.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(got == n, "paged range returned {got} keys");
    }
    Ok((median(&mut full), median(&mut paged)))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn bench_watch(store: &Arc<dyn Store>, args: &Args) -> anyhow::Result<(f64, f64)> {
    let prefix = "/bench/watch/";
    let start_rev = store.current_revision().await?;
    let mut stream = store.watch(prefix.as_bytes(), start_rev).await?;
    let n = args.watch_writes;
    let sent: Arc<parking::Sent> = Arc::new(parking::Sent::new(n));
    let writer = {
        let store = store.clone();
        let sent = sent.clone();
        let value = vec![b'w'; args.value_size];
        tokio::spawn(async move {
            for i in 0..n {
                sent.mark(i);
                store
                    .create(format!("{prefix}{i:08}").as_bytes(), value.clone())
                    .await?;
            }
            anyhow::Ok(())
        })
    };
    let mut hist = Histogram::<u64>::new(3)?;
    let mut seen = 0;
    while seen < n {
        let batch = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .context("watch stalled")?
            .context("watch ended")??;
        for event in batch {
            let key = String::from_utf8_lossy(&event.kv.key).to_string();
            let i: usize = key.trim_start_matches(prefix).parse()?;
            hist.record(sent.since(i).as_micros() as u64).ok();
            seen += 1;
        }
    }
    writer.await??;
    Ok((ms(&hist, 0.5), ms(&hist, 0.99)))
}

/// When each watch-benchmark write was issued.
mod parking {
    use std::time::{Duration, Instant};

    pub(crate) struct Sent(parking_lot::Mutex<Vec<Option<Instant>>>);

    impl Sent {
        pub(crate) fn new(n: usize) -> Self {
            Self(parking_lot::Mutex::new(vec![None; n]))
        }
        pub(crate) fn mark(&self, i: usize) {
            self.0.lock()[i] = Some(Instant::now());
        }
        pub(crate) fn since(&self, i: usize) -> Duration {
            self.0.lock()[i].map(|t| t.elapsed()).unwrap_or_default()
        }
    }
}

struct Floor {
    per_sec: f64,
    p50_ms: f64,
}

/// 1 KiB write + fdatasync in a loop: how many durable single-writer commits the disk allows.
fn fsync_floor(dir: &std::path::Path, duration: Duration) -> anyhow::Result<Floor> {
    let path = dir.join("fsync-floor.bin");
    let mut file = std::fs::File::create(&path)?;
    let block = vec![7u8; 1024];
    let mut hist = Histogram::<u64>::new(3)?;
    let start = Instant::now();
    while start.elapsed() < duration {
        let t = Instant::now();
        file.write_all(&block)?;
        file.sync_data()?;
        hist.record(t.elapsed().as_micros() as u64).ok();
    }
    let elapsed = start.elapsed().as_secs_f64();
    drop(file);
    let _ = std::fs::remove_file(&path);
    Ok(Floor {
        per_sec: hist.len() as f64 / elapsed,
        p50_ms: ms(&hist, 0.5),
    })
}

fn render(args: &Args, floor: &Floor, results: &[BackendResult]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Store benchmark\n");
    let _ = writeln!(
        out,
        "Generated by `bench/store/run` (`store-bench`) on {} — {}.",
        rkube_bench::date(),
        rkube_bench::machine()
    );
    let _ = writeln!(
        out,
        "Each write is a create of a new key with a {} B value, acknowledged only when durable \
         (embedded: group commit + fsync; etcd: raft + its WAL fsync). Write phases last {} s.\n",
        args.value_size, args.seconds
    );
    let _ = writeln!(
        out,
        "Disk fsync floor (1 KiB write + fdatasync, one writer): **{:.0} fsyncs/s** (p50 {:.3} ms).\n",
        floor.per_sec, floor.p50_ms
    );
    let _ = writeln!(
        out,
        "| backend | writers | writes/s | p50 ms | p99 ms | writes/s ÷ fsync floor |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|");
    for r in results {
        for w in &r.writes {
            let _ = writeln!(
                out,
                "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2} |",
                r.name,
                w.writers,
                w.per_sec,
                w.p50_ms,
                w.p99_ms,
                w.per_sec / floor.per_sec
            );
        }
    }
    let _ = writeln!(
        out,
        "\n| backend | range {} keys, whole (ms) | paged by 500 (ms) | watch p50 (ms) | watch p99 (ms) |",
        args.range_keys
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|");
    for r in results {
        let _ = writeln!(
            out,
            "| {} | {:.1} | {:.1} | {:.2} | {:.2} |",
            r.name, r.range_full_ms, r.range_paged_ms, r.watch_p50_ms, r.watch_p99_ms
        );
    }
    if let (Some(e), Some(d)) = (
        results.iter().find(|r| r.name == "embedded"),
        results.iter().find(|r| r.name == "etcd"),
    ) {
        let _ = writeln!(out, "\nEmbedded ÷ etcd write throughput:");
        for (we, wd) in e.writes.iter().zip(&d.writes) {
            let _ = writeln!(
                out,
                "- {} writers: **{:.2}x**",
                we.writers,
                we.per_sec / wd.per_sec
            );
        }
    }
    out
}
