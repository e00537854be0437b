//! Job-queue benchmarks for hearth, on SQLite or PostgreSQL.
//!
//! ```text
//! jobs burndown --db URL [--jobs 100000] [--concurrency 16]
//! jobs enqueue  --db URL [--jobs 100000]          # single and batch
//! jobs latency  --db URL [--jobs 1000]
//! jobs recover  --db URL [--lease 30s] [--jobs 50]
//! ```
//!
//! Each prints one JSON line per measurement on stdout; `bench/jobs.sh`
//! runs them beside the peers. The database must be fresh and empty.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hearth::db::migrate;
use hearth::jobs::{JobName, JobRun, JobState};
use hearth::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::mpsc;

/// Finishes at once.
const NOOP: JobName<u32> = JobName::new("bench.noop");
/// Records when it started, for the latency run.
const STAMP: JobName<u128> = JobName::new("bench.stamp");
/// Holds its worker on the first attempt; finishes at once after a rescue.
const HOLD: JobName<u32> = JobName::new("bench.hold");

static DONE: AtomicU64 = AtomicU64::new(0);
static RESCUED: AtomicU64 = AtomicU64::new(0);

#[derive(Clone, Default)]
struct Bench {
    stamps: Option<mpsc::UnboundedSender<Duration>>,
}

impl Module for Bench {
    fn spec(&self) -> ModuleSpec {
        ModuleSpec::new("bench")
    }

    fn register(&self, ctx: &mut Context<'_>) {
        ctx.job(NOOP, |_run: JobRun<u32>| async {
            DONE.fetch_add(1, Ordering::Relaxed);
            Ok(())
        });
        let stamps = self.stamps.clone();
        ctx.job(STAMP, move |run: JobRun<u128>| {
            let stamps = stamps.clone();
            async move {
                let waited = now_nanos().saturating_sub(run.payload);
                if let Some(tx) = stamps {
                    let _ = tx.send(Duration::from_nanos(waited as u64));
                }
                Ok(())
            }
        });
        ctx.job(HOLD, |run: JobRun<u32>| async move {
            if run.attempt == 1 {
                tokio::time::sleep(Duration::from_secs(600)).await;
            } else {
                RESCUED.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        });
    }
}

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

#[derive(Debug, Serialize, Deserialize)]
struct Args {
    workload: String,
    db: String,
    jobs: u64,
    concurrency: usize,
    lease: String,
    /// `db.max_connections`; 0 keeps hearth's default.
    pool: u32,
}

fn args() -> Args {
    let mut it = std::env::args().skip(1);
    let workload = it.next().unwrap_or_default();
    let mut a = Args {
        workload,
        db: String::new(),
        jobs: 0,
        concurrency: 16,
        lease: "30s".into(),
        pool: 0,
    };
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_default();
        match flag.as_str() {
            "--db" => a.db = value,
            "--jobs" => a.jobs = value.parse().unwrap_or(0),
            "--concurrency" => a.concurrency = value.parse().unwrap_or(16),
            "--lease" => a.lease = value,
            "--pool" => a.pool = value.parse().unwrap_or(0),
            other => {
                eprintln!("unknown flag {other}");
                std::process::exit(2);
            }
        }
    }
    if a.db.is_empty() {
        eprintln!(
            "usage: jobs burndown|enqueue|latency|recover --db URL [--jobs N] [--concurrency C] [--lease 30s] [--pool N]"
        );
        std::process::exit(2);
    }
    a
}

fn config(a: &Args) -> hearth::Config {
    let mut c = hearth::Config {
        database_url: Some(hearth::config::Secret::new(a.db.clone())),
        log: "warn".into(),
        ..hearth::Config::default()
    };
    c.jobs.concurrency = a.concurrency;
    c.db.max_connections = a.pool;
    c.jobs.lease = hearth::config::Duration::parse(&a.lease)
        .unwrap_or(hearth::config::Duration::from_secs(30));
    c
}

fn engine(url: &str) -> &'static str {
    if url.starts_with("postgres") {
        "postgres"
    } else {
        "sqlite"
    }
}

fn emit(v: serde_json::Value) {
    println!("{v}");
}

/// Enqueues `n` no-op jobs, 1000 per transaction.
async fn insert_noops(state: &AppState, n: u64) -> anyhow::Result<()> {
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let mut tx = state.db().begin().await?;
        let batch = chunk.iter().map(|i| NOOP.job(&(*i as u32))).collect();
        state.jobs().enqueue_batch(&mut tx, batch).await?;
        tx.commit().await?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let app = App::new("bench", "0").module(Bench { stamps: Some(tx) });
    let cfg = config(&a);
    let db = app.open_db(&cfg).await?;
    migrate::migrate(&db, &app.specs()?).await?;
    let state = app.build(cfg.clone(), db)?.state;
    let jobs = state.jobs().clone();
    let eng = engine(&a.db);
    match a.workload.as_str() {
        "burndown" => {
            let n = if a.jobs == 0 { 100_000 } else { a.jobs };
            let started = Instant::now();
            insert_noops(&state, n).await?;
            let inserted = started.elapsed();
            let started = Instant::now();
            let worker = app.start_worker(cfg.clone()).await?;
            while DONE.load(Ordering::Relaxed) < n {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let ran = started.elapsed();
            // Until the queue is empty in the database too (completions are batched).
            loop {
                let s = jobs.stats().await?;
                if s.iter().all(|q| q.pending == 0 && q.active == 0) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let drained = started.elapsed();
            worker.shutdown().await;
            emit(json!({
                "bench": "jobs", "impl": "hearth", "engine": eng, "workload": "burndown",
                "jobs": n, "concurrency": a.concurrency,
                "insert_s": inserted.as_secs_f64(),
                "run_s": ran.as_secs_f64(), "drained_s": drained.as_secs_f64(),
                "jobs_per_s": n as f64 / drained.as_secs_f64(),
            }));
        }
        "enqueue" => {
            let n = if a.jobs == 0 { 100_000 } else { a.jobs };
            let single = (n / 20).max(1);
            let started = Instant::now();
            for i in 0..single {
                jobs.enqueue_now(NOOP.job(&(i as u32))).await?;
            }
            let s = started.elapsed();
            emit(json!({
                "bench": "jobs", "impl": "hearth", "engine": eng, "workload": "enqueue_single",
                "jobs": single, "seconds": s.as_secs_f64(), "jobs_per_s": single as f64 / s.as_secs_f64(),
            }));
            let started = Instant::now();
            insert_noops(&state, n).await?;
            let s = started.elapsed();
            emit(json!({
                "bench": "jobs", "impl": "hearth", "engine": eng, "workload": "enqueue_batch",
                "batch": 1000, "jobs": n, "seconds": s.as_secs_f64(), "jobs_per_s": n as f64 / s.as_secs_f64(),
            }));
        }
        "latency" => {
            let n = if a.jobs == 0 { 1000 } else { a.jobs };
            let worker = app.start_worker(cfg.clone()).await?;
            // Let the workers settle into their idle wait.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let mut waits = Vec::with_capacity(n as usize);
            // Enqueue through the worker's own state, as a handler in `serve`
            // would: on SQLite the wake-up is in-process.
            let jobs = worker.state().jobs().clone();
            for _ in 0..n {
                jobs.enqueue_now(STAMP.job(&now_nanos())).await?;
                let w = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("stamp channel closed"))?;
                waits.push(w);
            }
            worker.shutdown().await;
            waits.sort();
            let ms = |d: Duration| d.as_secs_f64() * 1000.0;
            let pick = |q: f64| ms(waits[((waits.len() as f64 * q) as usize).min(waits.len() - 1)]);
            emit(json!({
                "bench": "jobs", "impl": "hearth", "engine": eng, "workload": "latency",
                "jobs": n, "p50_ms": pick(0.50), "p99_ms": pick(0.99), "max_ms": ms(*waits.last().unwrap_or(&Duration::ZERO)),
            }));
        }
        "recover" => {
            let n = if a.jobs == 0 { 50 } else { a.jobs };
            let mut tx = state.db().begin().await?;
            jobs.enqueue_batch(&mut tx, (0..n).map(|i| HOLD.job(&(i as u32))).collect())
                .await?;
            tx.commit().await?;
            let mut child = std::process::Command::new(std::env::current_exe()?)
                .args([
                    "hold",
                    "--db",
                    &a.db,
                    "--concurrency",
                    &n.to_string(),
                    "--lease",
                    &a.lease,
                ])
                .spawn()?;
            loop {
                let active = jobs.list(JobState::Active, None, n as u32 + 1).await?.len() as u64;
                if active == n {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            child.kill()?; // SIGKILL
            child.wait()?;
            let killed = Instant::now();
            let worker = app.start_worker(cfg.clone()).await?;
            while RESCUED.load(Ordering::Relaxed) < n {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let took = killed.elapsed();
            worker.shutdown().await;
            emit(json!({
                "bench": "jobs", "impl": "hearth", "engine": eng, "workload": "recover",
                "jobs": n, "lease_s": cfg.jobs.lease.get().as_secs_f64(), "recovered_s": took.as_secs_f64(),
            }));
        }
        "hold" => {
            // The worker that gets killed: claims the HOLD jobs and keeps them.
            let worker = app.start_worker(cfg.clone()).await?;
            tokio::time::sleep(Duration::from_secs(3600)).await;
            worker.shutdown().await;
        }
        other => {
            eprintln!("unknown workload `{other}`");
            std::process::exit(2);
        }
    }
    state.db().close().await;
    Ok(())
}
