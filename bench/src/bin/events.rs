//! Domain-event benchmarks for hearth, on SQLite or PostgreSQL.
//!
//! ```text
//! events burndown --db URL [--events 100000]   # publish all, then 3 modules drain
//! events latency  --db URL [--rate 5000] [--secs 10]
//! events publish  --db URL [--events 5000]      # a write with and without one event
//! ```
//!
//! Three subscribing modules each write one row per event into their own
//! table, in the reader's transaction. Each workload prints one JSON line per
//! measurement; `bench/events.sh` runs them. The database must be fresh.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hearth::db::migrate::{self, Migration};
use hearth::events::{Event, EventRun, EventSpec};
use hearth::prelude::*;
use hearth::{sqlx, with_tx};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// What the publisher publishes: the time it was sent, for latency.
#[derive(Debug, Serialize, Deserialize)]
struct Tick {
    key: u32,
    sent_ns: u64,
}

impl Event for Tick {
    const NAME: &'static str = "source.tick";
    fn key(&self) -> Option<String> {
        Some(self.key.to_string())
    }
}

const TICK: &[EventSpec] = &[EventSpec::of::<Tick>()];
const SOURCE: &[Migration] = &[Migration::new(
    1,
    "create",
    "CREATE TABLE source_item (id BIGINT NOT NULL, note TEXT NOT NULL)",
)];

struct Source;

impl Module for Source {
    fn spec(&self) -> ModuleSpec {
        ModuleSpec::new("source")
            .migrations(SOURCE, SOURCE)
            .publishes(TICK)
    }
    fn register(&self, _: &mut Context<'_>) {}
}

/// Counters and latencies of one subscriber.
#[derive(Default)]
struct Seen {
    handled: AtomicU64,
    latencies: std::sync::Mutex<Vec<u64>>,
}

struct Sink {
    name: &'static str,
    seen: Arc<Seen>,
}

const SINK_SQL: [&[Migration]; 3] = [
    &[Migration::new(
        1,
        "create",
        "CREATE TABLE sink1_seen (position BIGINT NOT NULL, key BIGINT NOT NULL)",
    )],
    &[Migration::new(
        1,
        "create",
        "CREATE TABLE sink2_seen (position BIGINT NOT NULL, key BIGINT NOT NULL)",
    )],
    &[Migration::new(
        1,
        "create",
        "CREATE TABLE sink3_seen (position BIGINT NOT NULL, key BIGINT NOT NULL)",
    )],
];
const SINK_INSERT: [&str; 3] = [
    "INSERT INTO sink1_seen (position, key) VALUES ($1, $2)",
    "INSERT INTO sink2_seen (position, key) VALUES ($1, $2)",
    "INSERT INTO sink3_seen (position, key) VALUES ($1, $2)",
];

impl Module for Sink {
    fn spec(&self) -> ModuleSpec {
        let i = self.index();
        ModuleSpec::new(self.name)
            .migrations(SINK_SQL[i], SINK_SQL[i])
            .subscribes(TICK)
    }
    fn register(&self, ctx: &mut Context<'_>) {
        let seen = self.seen.clone();
        let insert = SINK_INSERT[self.index()];
        ctx.subscribe(move |run: EventRun<Tick>| {
            let seen = seen.clone();
            async move {
                let mut tx = run.tx().await;
                with_tx!(&mut *tx, c => sqlx::query(insert)
                    .bind(run.meta.position)
                    .bind(i64::from(run.event.key))
                    .execute(&mut **c)
                    .await
                    .map(|_| ()))?;
                let sent = run.event.sent_ns;
                // Handled means committed: measured when the reader's transaction commits.
                tx.after_commit(move || {
                    seen.handled.fetch_add(1, Ordering::Relaxed);
                    let lat = now_ns().saturating_sub(sent);
                    if let Ok(mut l) = seen.latencies.lock() {
                        l.push(lat);
                    }
                });
                Ok(())
            }
        });
    }
}

impl Sink {
    fn index(&self) -> usize {
        match self.name {
            "sink1" => 0,
            "sink2" => 1,
            _ => 2,
        }
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

struct Args {
    workload: String,
    db: String,
    events: u64,
    rate: u64,
    secs: u64,
    publishers: u64,
    per_tx: u64,
}

fn args() -> Args {
    let mut it = std::env::args().skip(1);
    let mut a = Args {
        workload: it.next().unwrap_or_default(),
        db: String::new(),
        events: 0,
        rate: 5000,
        secs: 10,
        publishers: 8,
        per_tx: 1,
    };
    while let Some(flag) = it.next() {
        let v = it.next().unwrap_or_default();
        match flag.as_str() {
            "--db" => a.db = v,
            "--events" => a.events = v.parse().unwrap_or(0),
            "--rate" => a.rate = v.parse().unwrap_or(5000),
            "--secs" => a.secs = v.parse().unwrap_or(10),
            "--publishers" => a.publishers = v.parse().unwrap_or(8).max(1),
            "--per-tx" => a.per_tx = v.parse().unwrap_or(1).max(1),
            other => eprintln!("ignoring unknown flag {other}"),
        }
    }
    a
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1e6
}

async fn publish_batch(state: &AppState, from: u64, n: u64) -> anyhow::Result<()> {
    let mut tx = state.db().begin().await?;
    for i in from..from + n {
        let ev = Tick {
            key: (i % 1000) as u32,
            sent_ns: now_ns(),
        };
        state.events().publish(&mut tx, &ev).await?;
    }
    tx.commit().await?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args();
    let sinks: Vec<Arc<Seen>> = (0..3).map(|_| Arc::new(Seen::default())).collect();
    let app = App::new("bench", "0")
        .module(Source)
        .module(Sink {
            name: "sink1",
            seen: sinks[0].clone(),
        })
        .module(Sink {
            name: "sink2",
            seen: sinks[1].clone(),
        })
        .module(Sink {
            name: "sink3",
            seen: sinks[2].clone(),
        });
    let mut cfg = hearth::Config {
        database_url: Some(hearth::config::Secret::new(a.db.clone())),
        log: "warn".into(),
        ..hearth::Config::default()
    };
    cfg.jobs.in_serve = false;
    let db = app.open_db(&cfg).await?;
    migrate::migrate(&db, &app.specs()?).await?;
    let state = app.build(cfg.clone(), db)?.state;
    let engine = if a.db.starts_with("postgres") {
        "postgres"
    } else {
        "sqlite"
    };
    match a.workload.as_str() {
        "burndown" => {
            let n = if a.events == 0 { 100_000 } else { a.events };
            let started = Instant::now();
            let mut i = 0;
            while i < n {
                let k = 500.min(n - i);
                publish_batch(&state, i, k).await?;
                i += k;
            }
            let published = started.elapsed();
            let started = Instant::now();
            let worker = app.start_worker(cfg.clone()).await?;
            let mut done_at = [None; 3];
            while done_at.iter().any(Option::is_none) {
                for (j, s) in sinks.iter().enumerate() {
                    if done_at[j].is_none() && s.handled.load(Ordering::Relaxed) >= n {
                        done_at[j] = Some(started.elapsed());
                    }
                }
                anyhow::ensure!(
                    started.elapsed() < Duration::from_secs(600),
                    "not drained in 10 minutes"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let all = started.elapsed();
            for (j, d) in done_at.iter().enumerate() {
                let d = d.unwrap_or(all);
                println!(
                    "{}",
                    json!({
                        "impl": "hearth", "engine": engine, "workload": "burndown", "subscriber": j + 1,
                        "events": n, "secs": d.as_secs_f64(), "events_per_s": n as f64 / d.as_secs_f64(),
                        "publish_events_per_s": n as f64 / published.as_secs_f64(),
                    })
                );
            }
            worker.shutdown().await;
        }
        "latency" => {
            let worker = app.start_worker(cfg.clone()).await?;
            // `publishers` tasks (requests in flight), each committing
            // `per_tx` events per transaction, paced to `rate` events/s in all.
            let per_tx = a.per_tx;
            let per = a.rate as f64 / a.publishers as f64 / per_tx as f64;
            let stop_at = Instant::now() + Duration::from_secs(a.secs);
            let sent = Arc::new(AtomicU64::new(0));
            let mut tasks = Vec::new();
            // Published through the running app's state, as a request would:
            // its readers are woken in-process after each commit.
            let live = worker.state().clone();
            for p in 0..a.publishers {
                let state = live.clone();
                let sent = sent.clone();
                tasks.push(tokio::spawn(async move {
                    let start = Instant::now();
                    let mut k = 0u64;
                    while Instant::now() < stop_at {
                        let due = start + Duration::from_secs_f64(k as f64 / per);
                        tokio::time::sleep_until(due.into()).await;
                        publish_batch(&state, p * 1_000_000 + k * per_tx, per_tx).await?;
                        sent.fetch_add(per_tx, Ordering::Relaxed);
                        k += 1;
                    }
                    anyhow::Ok(())
                }));
            }
            for t in tasks {
                t.await??;
            }
            let total = sent.load(Ordering::Relaxed);
            let wait = Instant::now();
            while sinks
                .iter()
                .any(|s| s.handled.load(Ordering::Relaxed) < total)
                && wait.elapsed() < Duration::from_secs(60)
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            for (j, s) in sinks.iter().enumerate() {
                let mut l = s.latencies.lock().map(|l| l.clone()).unwrap_or_default();
                l.sort_unstable();
                println!(
                    "{}",
                    json!({
                        "impl": "hearth", "engine": engine, "workload": "latency", "subscriber": j + 1,
                        "target_rate": a.rate, "achieved_rate": total as f64 / a.secs as f64,
                        "publishers": a.publishers, "per_tx": per_tx,
                        "events": l.len(), "p50_ms": percentile(&l, 0.5), "p99_ms": percentile(&l, 0.99),
                        "max_ms": percentile(&l, 1.0),
                    })
                );
            }
            worker.shutdown().await;
        }
        "publish" => {
            let n = if a.events == 0 { 5000 } else { a.events };
            // The same write, alone and with one event published in its transaction.
            for round in 0..2 {
                for with_event in [false, true] {
                    let started = Instant::now();
                    for i in 0..n {
                        let mut tx = state.db().begin().await?;
                        with_tx!(&mut tx, c => sqlx::query("INSERT INTO source_item (id, note) VALUES ($1, 'x')")
                            .bind(i as i64).execute(&mut **c).await.map(|_| ()))?;
                        if with_event {
                            state
                                .events()
                                .publish(
                                    &mut tx,
                                    &Tick {
                                        key: (i % 1000) as u32,
                                        sent_ns: 0,
                                    },
                                )
                                .await?;
                        }
                        tx.commit().await?;
                    }
                    let per = started.elapsed().as_secs_f64() * 1e6 / n as f64;
                    if round == 1 {
                        println!(
                            "{}",
                            json!({
                                "impl": "hearth", "engine": engine, "workload": "publish", "with_event": with_event,
                                "transactions": n, "us_per_tx": per,
                            })
                        );
                    }
                }
            }
        }
        other => anyhow::bail!("unknown workload `{other}`: burndown, latency or publish"),
    }
    state.db().close().await;
    Ok(())
}
