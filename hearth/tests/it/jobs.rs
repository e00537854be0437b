//! The job queue through the public API and real HTTP, on both engines:
//! transactional enqueue, retries with backoff, dead jobs and retry from dead,
//! unique keys, panics and timeouts, per-queue concurrency, bad input,
//! rescue of a crashed worker's jobs, two workers on one database, and
//! graceful shutdown.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hearth::Config;
use hearth::db::migrate::Migration;
use hearth::jobs::cron::{Missed, Schedule};
use hearth::jobs::{JobState, Jobs};
use hearth::prelude::*;
use hearth::testing::{Backend, TestApp};
use hearth::{sqlx, with_db, with_tx};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::probe::client;

const SQLITE: &[Migration] = &[Migration::new(
    1,
    "create_chores",
    include_str!("../migrations/chores_sqlite_0001.sql"),
)];
const POSTGRES: &[Migration] = &[Migration::new(
    1,
    "create_chores",
    include_str!("../migrations/chores_postgres_0001.sql"),
)];

/// What a `chores.record` job does on each attempt.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Task {
    pub note: String,
    /// Fail this many attempts first.
    #[serde(default)]
    pub fail_times: u32,
    /// Fail by panicking rather than by returning an error.
    #[serde(default)]
    pub panic: bool,
    /// Fail with a permanent error.
    #[serde(default)]
    pub permanent: bool,
    /// Sleep this long on the first attempt (until cancelled).
    #[serde(default)]
    pub sleep_ms: u64,
    /// Fail every attempt until an order with this item exists.
    #[serde(default)]
    pub needs_order: Option<String>,
}

pub const RECORD: JobName<Task> = JobName::new("chores.record");
pub const ONCE: JobName<u32> = JobName::new("chores.once").queue("bulk");
pub const GAUGE: JobName<u32> = JobName::new("chores.gauge").queue("narrow");
/// Records the tick it was enqueued for.
pub const TICK: JobName<String> = JobName::new("chores.tick");
/// Registered by no module.
pub const ORPHAN: JobName<u32> = JobName::new("chores.orphan");

#[derive(Default, Clone)]
struct Gauge {
    now: Arc<AtomicUsize>,
    max: Arc<AtomicUsize>,
}

#[derive(Default)]
struct Chores {
    gauge: Gauge,
    cron: Vec<Schedule>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

const ORDERS: RouteSpec = RouteSpec::post("/chores/orders", Guard::Public);
const ENQUEUE: RouteSpec = RouteSpec::post("/chores/enqueue", Guard::Public);

impl Module for Chores {
    fn spec(&self) -> ModuleSpec {
        ModuleSpec::new("chores")
            .migrations(SQLITE, POSTGRES)
            .routes(&[ORDERS, ENQUEUE])
    }

    fn register(&self, ctx: &mut Context<'_>) {
        ctx.route(ORDERS, place_order);
        ctx.route(ENQUEUE, enqueue_by_name);
        ctx.job(RECORD, |run: JobRun<Task, AppState>| async move {
            let db = run.state.db();
            with_db!(db, pool => sqlx::query("INSERT INTO chores_run (job_id, attempt, note, at_ms) VALUES ($1, $2, $3, $4)")
                .bind(run.id)
                .bind(i64::from(run.attempt))
                .bind(&run.payload.note)
                .bind(now_ms())
                .execute(pool)
                .await
                .map(|_| ()))?;
            let t = &run.payload;
            if run.attempt == 1 && t.sleep_ms > 0 {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(t.sleep_ms)) => {}
                    () = run.cancel.cancelled() => anyhow::bail!("cancelled"),
                }
            }
            if let Some(item) = &t.needs_order {
                let n: i64 = with_db!(db, pool => sqlx::query_scalar("SELECT count(*) FROM chores_order WHERE item = $1")
                    .bind(item)
                    .fetch_one(pool)
                    .await)?;
                anyhow::ensure!(n > 0, "failing on purpose, attempt {}: no order {item}", run.attempt);
            }
            if run.attempt <= t.fail_times {
                if t.panic {
                    panic!("boom on attempt {}", run.attempt);
                }
                if t.permanent {
                    return Err(Permanent("this can never work".into()).into());
                }
                anyhow::bail!("failing on purpose, attempt {}", run.attempt);
            }
            Ok(())
        });
        ctx.job(ONCE, |run: JobRun<u32, AppState>| async move {
            let worker = format!("{:?}", std::thread::current().id());
            with_db!(run.state.db(), pool => sqlx::query("INSERT INTO chores_once (job_id, worker) VALUES ($1, $2)")
                .bind(run.id)
                .bind(worker)
                .execute(pool)
                .await
                .map(|_| ()))?;
            Ok(())
        });
        ctx.job(TICK, |run: JobRun<String, AppState>| async move {
            let at = run.scheduled_at.duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64;
            with_db!(run.state.db(), pool => sqlx::query("INSERT INTO chores_run (job_id, attempt, note, at_ms) VALUES ($1, $2, $3, $4)")
                .bind(run.id)
                .bind(i64::from(run.attempt))
                .bind(&run.payload)
                .bind(at)
                .execute(pool)
                .await
                .map(|_| ()))?;
            Ok(())
        });
        for s in &self.cron {
            ctx.cron(s.clone());
        }
        let gauge = self.gauge.clone();
        ctx.job(GAUGE, move |_run: JobRun<u32>| {
            let gauge = gauge.clone();
            async move {
                let n = gauge.now.fetch_add(1, Ordering::SeqCst) + 1;
                gauge.max.fetch_max(n, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(30)).await;
                gauge.now.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            }
        });
    }
}

#[derive(Deserialize)]
struct Order {
    item: String,
    #[serde(default)]
    fail_after_enqueue: bool,
}

/// The business write and its job in one transaction.
async fn place_order(
    State(state): State<AppState>,
    Json(order): Json<Order>,
) -> Result<Json<serde_json::Value>> {
    let mut tx = state.db().begin().await?;
    with_tx!(&mut tx, t => sqlx::query("INSERT INTO chores_order (item) VALUES ($1)")
        .bind(&order.item)
        .execute(&mut **t)
        .await
        .map(|_| ()))?;
    let job = state
        .jobs()
        .enqueue(
            &mut tx,
            RECORD.job(&Task {
                note: order.item.clone(),
                ..Task::default()
            }),
        )
        .await?;
    if order.fail_after_enqueue {
        // Dropping `tx` rolls back the order and the job together.
        return Err(Error::conflict(
            "the order failed after its job was enqueued",
        ));
    }
    tx.commit().await?;
    Ok(Json(json!({ "job": job.id })))
}

#[derive(Deserialize)]
struct ByName {
    name: String,
    payload: serde_json::Value,
}

async fn enqueue_by_name(
    State(jobs): State<Jobs>,
    Json(req): Json<ByName>,
) -> Result<Json<hearth::jobs::Enqueued>> {
    let job = NewJob::from_json(req.name, req.payload.to_string());
    Ok(Json(jobs.enqueue_now(job).await?))
}

fn chores() -> App {
    App::new("chores", "0.0.1").module(Chores::default())
}

/// Fast retries and leases so that tests finish quickly; they never assert
/// an upper bound on time, only order and lower bounds.
fn fast(c: &mut Config) {
    c.jobs.backoff_base = hearth::config::Duration::from_millis(40);
    c.jobs.backoff_max = hearth::config::Duration::from_secs(2);
    c.jobs.poll_interval = hearth::config::Duration::from_millis(100);
    c.jobs.lease = hearth::config::Duration::from_secs(3);
    c.jobs.shutdown_timeout = hearth::config::Duration::from_secs(5);
}

fn no_workers(c: &mut Config) {
    fast(c);
    c.jobs.in_serve = false;
}

/// Polls `check` until it returns `Some`, failing the test after 30 s.
pub(crate) async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn count(db: &Db, sql: &'static str) -> i64 {
    with_db!(db, pool => sqlx::query_scalar(sql).fetch_one(pool).await).unwrap()
}

/// (attempt, at_ms) of each run of job `id`, in order.
async fn runs_of(db: &Db, id: i64) -> Vec<(i64, i64)> {
    with_db!(db, pool => sqlx::query_as("SELECT attempt, at_ms FROM chores_run WHERE job_id = $1 ORDER BY id")
        .bind(id)
        .fetch_all(pool)
        .await)
    .unwrap()
}

async fn enqueue(jobs: &Jobs, task: Task) -> i64 {
    jobs.enqueue_now(RECORD.job(&task)).await.unwrap().id
}

/// Waits until job `id` is in `state`.
async fn wait_state(jobs: &Jobs, id: i64, state: JobState) -> hearth::jobs::JobInfo {
    eventually(&format!("job {id} to be {}", state.as_str()), || async {
        jobs.list(state, None, 1000)
            .await
            .unwrap()
            .into_iter()
            .find(|j| j.id == id)
    })
    .await
}

/// Waits until nothing is pending or active.
async fn drained(jobs: &Jobs) {
    eventually("the queue to drain", || async {
        let s = jobs.stats().await.unwrap();
        s.iter()
            .all(|q| q.pending == 0 && q.active == 0)
            .then_some(())
    })
    .await
}

hearth::db_tests! {
    async fn once_keeps_a_rerun_from_repeating_effects_that_committed(backend) {
        let Some(app) = TestApp::spawn_with(&crate::probe::app(), backend, fast).await else { return };
        let jobs = app.state().jobs().clone();
        let id = jobs.enqueue_now(crate::probe::EFFECT.job(&"effect-1".to_owned())).await.unwrap().id;
        eventually("the job to finish", || async {
            jobs.history(10).await.unwrap().into_iter().find(|h| h.id == id)
        }).await;
        let db = app.state().db().clone();
        // Two attempts ran; the item was stored by the first only.
        let history = jobs.history(10).await.unwrap();
        assert_eq!(history.iter().find(|h| h.id == id).unwrap().attempts, 2);
        assert_eq!(count(&db, "SELECT count(*) FROM probe_item WHERE name = 'effect-1'").await, 1);
        assert_eq!(count(&db, "SELECT count(*) FROM hearth_job_effect").await, 1);
        // Once the job is gone for good (and a lease has passed), its record goes too.
        with_db!(&db, pool => sqlx::query("UPDATE hearth_job_effect SET done_at = 0").execute(pool).await.map(|_| ())).unwrap();
        jobs.housekeeping().await.unwrap();
        assert_eq!(count(&db, "SELECT count(*) FROM hearth_job_effect").await, 0);
        app.stop().await;
    }

    async fn a_committed_order_enqueues_its_job_once_and_a_rolled_back_one_none(backend) {
        let Some(app) = TestApp::spawn_with(&chores(), backend, fast).await else { return };
        let c = client();
        for i in 0..5 {
            let res = c.post(app.url("/chores/orders")).json(&json!({"item": format!("kept-{i}")})).send().await.unwrap();
            assert_eq!(res.status(), StatusCode::OK);
            let res = c.post(app.url("/chores/orders")).json(&json!({"item": format!("lost-{i}"), "fail_after_enqueue": true})).send().await.unwrap();
            assert_eq!(res.status(), StatusCode::CONFLICT);
        }
        let db = app.state().db().clone();
        drained(app.state().jobs()).await;
        assert_eq!(count(&db, "SELECT count(*) FROM chores_order").await, 5);
        assert_eq!(count(&db, "SELECT count(*) FROM chores_run WHERE note LIKE 'kept-%'").await, 5);
        assert_eq!(count(&db, "SELECT count(DISTINCT note) FROM chores_run").await, 5);
        assert_eq!(count(&db, "SELECT count(*) FROM chores_run WHERE note LIKE 'lost-%'").await, 0);
        let history = app.state().jobs().history(100).await.unwrap();
        assert_eq!(history.len(), 5, "{history:?}");
        assert!(history.iter().all(|h| h.attempts == 1 && h.name == "chores.record"));
        app.stop().await;
    }

    async fn failures_retry_with_growing_backoff_then_succeed(backend) {
        let Some(app) = TestApp::spawn_with(&chores(), backend, fast).await else { return };
        let jobs = app.state().jobs().clone();
        let id = enqueue(&jobs, Task { note: "flaky".into(), fail_times: 3, ..Task::default() }).await;
        eventually("three retries", || async {
            jobs.history(10).await.unwrap().into_iter().find(|h| h.id == id)
        }).await;
        let runs = runs_of(app.state().db(), id).await;
        assert_eq!(runs.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 2, 3, 4]);
        // Each gap is at least the jittered backoff: 40 ms × 2^(n-1) × 0.75.
        for (n, pair) in runs.windows(2).enumerate() {
            let gap = pair[1].1 - pair[0].1;
            let floor = (40.0 * 2f64.powi(n as i32) * 0.75) as i64;
            assert!(gap >= floor, "gap {n} was {gap} ms, below {floor} ms: {runs:?}");
        }
        app.stop().await;
    }

    async fn a_job_out_of_attempts_is_dead_with_its_error_and_can_be_retried(backend) {
        let Some(app) = TestApp::spawn_with(&chores(), backend, fast).await else { return };
        let jobs = app.state().jobs().clone();
        let task = Task { note: "doomed".into(), needs_order: Some("fix".into()), ..Task::default() };
        let id = jobs.enqueue_now(RECORD.job(&task).max_attempts(2)).await.unwrap().id;
        let dead = wait_state(&jobs, id, JobState::Dead).await;
        assert_eq!(dead.attempts, 2);
        assert!(dead.last_error.as_deref().unwrap().contains("failing on purpose, attempt 2"), "{dead:?}");
        assert_eq!(runs_of(app.state().db(), id).await.len(), 2);
        // The payload is intact; once the cause is fixed, a retry from dead
        // runs it again with a fresh set of attempts.
        assert_eq!(serde_json::from_str::<serde_json::Value>(&dead.payload).unwrap()["note"], "doomed");
        let err = jobs.retry(id + 1000).await.unwrap_err();
        assert!(err.to_string().contains("no dead job"), "{err}");
        with_db!(app.state().db(), pool => sqlx::query("INSERT INTO chores_order (item) VALUES ('fix')").execute(pool).await.map(|_| ())).unwrap();
        jobs.retry(id).await.unwrap();
        let done = eventually("the retried job to finish", || async {
            jobs.history(10).await.unwrap().into_iter().find(|h| h.id == id)
        }).await;
        assert_eq!(done.attempts, 1);
        assert_eq!(runs_of(app.state().db(), id).await.len(), 3);
        assert!(jobs.list(JobState::Dead, None, 10).await.unwrap().is_empty());
        app.stop().await;
    }

    async fn panics_timeouts_and_permanent_errors_are_recorded_not_fatal(backend) {
        let Some(app) = TestApp::spawn_with(&chores(), backend, fast).await else { return };
        let jobs = app.state().jobs().clone();
        let panics = enqueue(&jobs, Task { note: "panics".into(), fail_times: 1, panic: true, ..Task::default() }).await;
        let slow = jobs
            .enqueue_now(RECORD.job(&Task { note: "slow".into(), sleep_ms: 60_000, ..Task::default() }).timeout(Duration::from_millis(300)).max_attempts(1))
            .await
            .unwrap()
            .id;
        let permanent = enqueue(&jobs, Task { note: "permanent".into(), fail_times: 5, permanent: true, ..Task::default() }).await;
        // The panicking job is retried and then succeeds.
        eventually("the panicking job to succeed", || async {
            jobs.history(10).await.unwrap().into_iter().find(|h| h.id == panics)
        }).await;
        assert_eq!(runs_of(app.state().db(), panics).await.len(), 2);
        let slow = wait_state(&jobs, slow, JobState::Dead).await;
        assert!(slow.last_error.as_deref().unwrap().contains("timed out after 300 ms"), "{slow:?}");
        let permanent = wait_state(&jobs, permanent, JobState::Dead).await;
        assert_eq!(permanent.attempts, 1, "a permanent error is not retried");
        assert!(permanent.last_error.as_deref().unwrap().contains("this can never work"));
        // The server is still healthy.
        let res = client().get(app.url("/healthz")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        app.stop().await;
    }

    async fn a_unique_key_dedupes_while_pending_or_active(backend) {
        let Some(app) = TestApp::spawn_with(&chores(), backend, no_workers).await else { return };
        let jobs = app.state().jobs().clone();
        let task = Task { note: "digest".into(), ..Task::default() };
        let first = jobs.enqueue_now(RECORD.job(&task).unique_key("digest:42")).await.unwrap();
        assert!(!first.duplicate);
        let again = jobs.enqueue_now(RECORD.job(&task).unique_key("digest:42")).await.unwrap();
        assert_eq!(again, hearth::jobs::Enqueued { id: first.id, duplicate: true });
        // A batch holding the key twice and a fresh key.
        let mut tx = app.state().db().begin().await.unwrap();
        let out = jobs
            .enqueue_batch(&mut tx, vec![
                RECORD.job(&task).unique_key("digest:42"),
                RECORD.job(&task).unique_key("digest:43"),
                RECORD.job(&task),
            ])
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert!(out[0].duplicate && out[0].id == first.id);
        assert!(!out[1].duplicate && !out[2].duplicate);
        assert_eq!(jobs.list(JobState::Pending, None, 10).await.unwrap().len(), 3);
        // Once the holder has run, the key is free again.
        let config = TestApp::config(app.db());
        let mut config2 = config.clone();
        fast(&mut config2);
        let worker = chores().start_worker(config2).await.unwrap();
        drained(&jobs).await;
        worker.shutdown().await;
        let later = jobs.enqueue_now(RECORD.job(&task).unique_key("digest:42")).await.unwrap();
        assert!(!later.duplicate && later.id != first.id);
        app.stop().await;
    }

    async fn delayed_and_prioritised_jobs_run_in_order(backend) {
        let Some(app) = TestApp::spawn_with(&chores(), backend, no_workers).await else { return };
        let jobs = app.state().jobs().clone();
        let t = |note: &str| Task { note: note.into(), ..Task::default() };
        let late = jobs.enqueue_now(RECORD.job(&t("late")).delay(Duration::from_millis(600))).await.unwrap().id;
        jobs.enqueue_now(RECORD.job(&t("low")).priority(-1)).await.unwrap();
        jobs.enqueue_now(RECORD.job(&t("high")).priority(5)).await.unwrap();
        jobs.enqueue_now(RECORD.job(&t("normal"))).await.unwrap();
        let enqueued_at = now_ms();
        let mut config = TestApp::config(app.db());
        fast(&mut config);
        config.jobs.queues.insert("default".into(), hearth::jobs::QueueConfig { concurrency: 1 });
        let worker = chores().start_worker(config).await.unwrap();
        drained(&jobs).await;
        worker.shutdown().await;
        let notes: Vec<(String, i64)> = with_db!(app.state().db(), pool => sqlx::query_as("SELECT note, at_ms FROM chores_run ORDER BY id").fetch_all(pool).await).unwrap();
        let order: Vec<&str> = notes.iter().map(|n| n.0.as_str()).collect();
        assert_eq!(order, ["high", "normal", "low", "late"]);
        assert!(notes[3].1 >= enqueued_at + 500 - 100, "the delayed job ran early: {notes:?}");
        let _ = late;
        app.stop().await;
    }

    async fn a_queue_never_runs_more_than_its_concurrency(backend) {
        let chores_module = Chores::default();
        let gauge = chores_module.gauge.clone();
        let app_def = App::new("chores", "0.0.1").module(chores_module);
        let Some(app) = TestApp::spawn_with(&app_def, backend, |c| {
            fast(c);
            c.jobs.queues.insert("narrow".into(), hearth::jobs::QueueConfig { concurrency: 2 });
        }).await else { return };
        let jobs = app.state().jobs().clone();
        let mut tx = app.state().db().begin().await.unwrap();
        jobs.enqueue_batch(&mut tx, (0..12).map(|i| GAUGE.job(&i)).collect()).await.unwrap();
        tx.commit().await.unwrap();
        drained(&jobs).await;
        assert_eq!(jobs.history(100).await.unwrap().len(), 12);
        let max = gauge.max.load(Ordering::SeqCst);
        assert!((1..=2).contains(&max), "ran {max} at once");
        app.stop().await;
    }

    async fn bad_job_input_gets_a_clear_error_and_changes_nothing(backend) {
        let Some(app) = TestApp::spawn_with(&chores(), backend, no_workers).await else { return };
        let c = client();
        let cases = [
            (json!({"name": "chores.nope", "payload": {}}), "unknown_job", "unknown job `chores.nope`"),
            (json!({"name": "chores.record", "payload": {"note": 5}}), "invalid_payload", "field `note`"),
            (json!({"name": "chores.record", "payload": {}}), "invalid_payload", "missing field `note`"),
            (json!({"name": "chores.record", "payload": [1, 2]}), "invalid_payload", "chores.record"),
            (json!({"name": "chores.once", "payload": -3}), "invalid_payload", "chores.once"),
            (json!({"name": "", "payload": 1}), "unknown_job", "unknown job"),
        ];
        for (body, code, text) in cases {
            let res = c.post(app.url("/chores/enqueue")).json(&body).send().await.unwrap();
            assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY, "{body}");
            let v: serde_json::Value = res.json().await.unwrap();
            assert_eq!(v["error"]["code"], code, "{body}: {v}");
            assert!(v["error"]["message"].as_str().unwrap().contains(text), "{body}: {v}");
        }
        let jobs = app.state().jobs();
        assert!(jobs.stats().await.unwrap().is_empty(), "nothing may be enqueued");
        // A good one still goes through.
        let res = c.post(app.url("/chores/enqueue")).json(&json!({"name": "chores.once", "payload": 7})).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(jobs.list(JobState::Pending, Some("bulk"), 10).await.unwrap().len(), 1);
        app.stop().await;
    }

    async fn jobs_of_a_crashed_worker_are_rescued_within_the_lease(backend) {
        let Some(app) = TestApp::spawn_with(&chores(), backend, no_workers).await else { return };
        let jobs = app.state().jobs().clone();
        let id = enqueue(&jobs, Task { note: "survivor".into(), sleep_ms: 120_000, ..Task::default() }).await;
        // A worker on its own runtime claims the job, then the runtime is torn
        // down without any shutdown: leases stop being renewed, as after kill -9.
        let mut config = TestApp::config(app.db());
        fast(&mut config);
        let (id_tx, id_rx) = std::sync::mpsc::channel();
        let (crash_tx, crash_rx) = std::sync::mpsc::channel::<()>();
        let doomed = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
            let running = rt.block_on(chores().start_worker(config)).unwrap();
            id_tx.send(running.worker_id().unwrap().to_owned()).unwrap();
            crash_rx.recv().ok();
            // Leak the handle so nothing shuts down gracefully, then drop every task.
            std::mem::forget(running);
            rt.shutdown_background();
        });
        let crashed_worker = id_rx.recv().unwrap();
        let active = wait_state(&jobs, id, JobState::Active).await;
        assert_eq!(active.worker.as_deref(), Some(crashed_worker.as_str()));
        let db = app.state().db().clone();
        eventually("the first attempt to start", || async { (!runs_of(&db, id).await.is_empty()).then_some(()) }).await;
        crash_tx.send(()).unwrap();
        doomed.join().unwrap();
        let crashed_at = now_ms();
        // A healthy worker rescues the job and runs it (attempt 2 does not sleep).
        let mut config = TestApp::config(app.db());
        fast(&mut config);
        let healthy = chores().start_worker(config).await.unwrap();
        eventually("the rescued job to finish", || async {
            jobs.history(10).await.unwrap().into_iter().find(|h| h.id == id)
        }).await;
        let runs = runs_of(app.state().db(), id).await;
        assert_eq!(runs.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 2]);
        eprintln!("rescued and rerun {} ms after the crash (lease 3000 ms)", runs[1].1 - crashed_at);
        healthy.shutdown().await;
        app.stop().await;
    }

    async fn two_workers_on_one_database_never_run_a_job_twice(backend) {
        let Some(app) = TestApp::spawn_with(&chores(), backend, no_workers).await else { return };
        let jobs = app.state().jobs().clone();
        let n = if backend == Backend::Postgres { 600 } else { 300 };
        let mut tx = app.state().db().begin().await.unwrap();
        jobs.enqueue_batch(&mut tx, (0..n).map(|i| ONCE.job(&i)).collect()).await.unwrap();
        tx.commit().await.unwrap();
        let mut workers = Vec::new();
        for _ in 0..2 {
            let mut config = TestApp::config(app.db());
            fast(&mut config);
            workers.push(chores().start_worker(config).await.unwrap());
        }
        drained(&jobs).await;
        for w in workers {
            w.shutdown().await;
        }
        let db = app.state().db();
        assert_eq!(count(db, "SELECT count(*) FROM chores_once").await, i64::from(n));
        assert!(jobs.list(JobState::Dead, None, 10).await.unwrap().is_empty());
        let history = jobs.history(10_000).await.unwrap();
        assert_eq!(history.len(), n as usize);
        assert!(history.iter().all(|h| h.attempts == 1), "a job ran twice");
        app.stop().await;
    }

    async fn shutdown_lets_short_jobs_finish_and_returns_long_ones(backend) {
        let Some(app) = TestApp::spawn_with(&chores(), backend, no_workers).await else { return };
        let jobs = app.state().jobs().clone();
        let short = enqueue(&jobs, Task { note: "short".into(), sleep_ms: 300, ..Task::default() }).await;
        let long = enqueue(&jobs, Task { note: "long".into(), sleep_ms: 120_000, ..Task::default() }).await;
        let mut config = TestApp::config(app.db());
        fast(&mut config);
        config.jobs.shutdown_timeout = hearth::config::Duration::from_millis(1500);
        let worker = chores().start_worker(config).await.unwrap();
        wait_state(&jobs, short, JobState::Active).await;
        wait_state(&jobs, long, JobState::Active).await;
        worker.shutdown().await;
        // The short job finished during the bound; the long one is pending
        // again with its attempt given back.
        assert!(jobs.history(10).await.unwrap().iter().any(|h| h.id == short));
        let back = jobs.list(JobState::Pending, None, 10).await.unwrap();
        assert_eq!(back.len(), 1, "{back:?}");
        assert_eq!((back[0].id, back[0].attempts), (long, 0));
        assert!(jobs.list(JobState::Active, None, 10).await.unwrap().is_empty());
        app.stop().await;
    }

    async fn jobs_claimed_ahead_wait_their_turn_and_go_back_on_shutdown(backend) {
        let Some(app) = TestApp::spawn_with(&chores(), backend, no_workers).await else { return };
        let jobs = app.state().jobs().clone();
        let long = enqueue(&jobs, Task { note: "long".into(), sleep_ms: 120_000, ..Task::default() }).await;
        let mut ahead = Vec::new();
        for i in 0..3 {
            ahead.push(enqueue(&jobs, Task { note: format!("ahead {i}"), ..Task::default() }).await);
        }
        let mut config = TestApp::config(app.db());
        fast(&mut config);
        config.jobs.queues.insert("default".into(), hearth::jobs::QueueConfig { concurrency: 1 });
        config.jobs.prefetch = Some(3);
        config.jobs.shutdown_timeout = hearth::config::Duration::from_millis(300);
        let worker = chores().start_worker(config).await.unwrap();
        // One slot: the long job runs, the other three are held (leased) behind it.
        wait_state(&jobs, long, JobState::Active).await;
        for id in &ahead {
            wait_state(&jobs, *id, JobState::Active).await;
        }
        // Active only means claimed; the handler writes its row a moment later.
        let db = app.state().db().clone();
        eventually("the long job to start", || async { (count(&db, "SELECT count(*) FROM chores_run").await >= 1).then_some(()) }).await;
        let ran: Vec<i64> = with_db!(&db, pool => sqlx::query_scalar("SELECT job_id FROM chores_run").fetch_all(pool).await).unwrap();
        assert_eq!(ran, vec![long], "only the long job may have started");
        worker.shutdown().await;
        // All four are pending again, none charged an attempt.
        let back = jobs.list(JobState::Pending, None, 10).await.unwrap();
        let mut ids: Vec<(i64, i64)> = back.iter().map(|j| (j.id, j.attempts)).collect();
        ids.sort();
        let mut want: Vec<(i64, i64)> = std::iter::once(long).chain(ahead).map(|id| (id, 0)).collect();
        want.sort();
        assert_eq!(ids, want);
        assert!(jobs.list(JobState::Active, None, 10).await.unwrap().is_empty());
        app.stop().await;
    }

    async fn a_cron_tick_fires_exactly_once_with_two_nodes(backend) {
        let with_cron = || App::new("chores", "0.0.1").module(Chores {
            cron: vec![Schedule::new("chores.every_second", "* * * * * *", TICK, &"tick".to_owned())],
            ..Chores::default()
        });
        let Some(app) = TestApp::spawn_with(&with_cron(), backend, no_workers).await else { return };
        let mut nodes = Vec::new();
        for _ in 0..2 {
            let mut config = TestApp::config(app.db());
            fast(&mut config);
            nodes.push(with_cron().start_worker(config).await.unwrap());
        }
        let db = app.state().db().clone();
        eventually("five ticks", || async {
            (count(&db, "SELECT count(*) FROM chores_run WHERE note = 'tick'").await >= 5).then_some(())
        }).await;
        for n in nodes {
            n.shutdown().await;
        }
        drained(app.state().jobs()).await;
        let ticks: Vec<i64> = with_db!(&db, pool => sqlx::query_scalar("SELECT at_ms FROM chores_run WHERE note = 'tick' ORDER BY at_ms").fetch_all(pool).await).unwrap();
        // One job per tick, on whole seconds, with no tick left out.
        for pair in ticks.windows(2) {
            assert_eq!(pair[1] - pair[0], 1000, "ticks {ticks:?}");
        }
        assert!(ticks.iter().all(|t| t % 1000 == 0), "{ticks:?}");
        let listed = app.state().jobs().cron_list().await.unwrap();
        let every = listed.iter().find(|c| c.name == "chores.every_second").unwrap();
        assert_eq!(every.last_tick, ticks.last().copied());
        assert!(listed.iter().any(|c| c.name == "hearth.housekeeping"), "{listed:?}");
        app.stop().await;
    }

    async fn missed_ticks_are_skipped_or_run_once_by_policy(backend) {
        let with_cron = || App::new("chores", "0.0.1").module(Chores {
            cron: vec![
                Schedule::new("chores.hourly_skip", "@hourly", TICK, &"skip".to_owned()),
                Schedule::new("chores.hourly_once", "0 * * * *", TICK, &"once".to_owned()).missed(Missed::RunOnce),
            ],
            ..Chores::default()
        });
        let Some(app) = TestApp::spawn_with(&with_cron(), backend, no_workers).await else { return };
        let db = app.state().db().clone();
        // As if every node had been down for three hours.
        let hour = 3_600_000;
        let long_ago = (now_ms() / hour - 3) * hour;
        with_db!(&db, pool => sqlx::query("UPDATE hearth_cron SET next_at = $1 WHERE name LIKE 'chores.hourly_%'").bind(long_ago).execute(pool).await.map(|_| ())).unwrap();
        let mut config = TestApp::config(app.db());
        fast(&mut config);
        let node = with_cron().start_worker(config).await.unwrap();
        let jobs = app.state().jobs().clone();
        let listed = eventually("both schedules to catch up", || async {
            let l = jobs.cron_list().await.unwrap();
            let done = l.iter().filter(|c| c.name.starts_with("chores.hourly_")).all(|c| c.next_at > now_ms() && c.last_result.as_deref().is_some_and(|r| r == "done" || r == "skipped"));
            done.then_some(l)
        }).await;
        node.shutdown().await;
        let skip = listed.iter().find(|c| c.name == "chores.hourly_skip").unwrap();
        assert_eq!(skip.last_result.as_deref(), Some("skipped"));
        assert_eq!(skip.last_job_id, None);
        let once = listed.iter().find(|c| c.name == "chores.hourly_once").unwrap();
        assert_eq!(once.last_result.as_deref(), Some("done"));
        assert_eq!(once.last_tick, Some(long_ago));
        let notes: Vec<String> = with_db!(&db, pool => sqlx::query_scalar("SELECT note FROM chores_run ORDER BY id").fetch_all(pool).await).unwrap();
        assert_eq!(notes, ["once"], "one job for all missed ticks, none for the skipping schedule");
        app.stop().await;
    }

    async fn invalid_schedules_stop_the_app_with_a_clear_error(backend) {
        let cases: Vec<(Schedule, &str)> = vec![
            (Schedule::new("chores.bad", "61 * * * *", TICK, &String::new()), "schedule `chores.bad`: invalid cron expression `61 * * * *`"),
            (Schedule::new("chores.bad", "* * *", TICK, &String::new()), "invalid cron expression `* * *`"),
            (Schedule::new("chores.bad", "", TICK, &String::new()), "the expression is empty"),
            (Schedule::new("chores.bad", "@reboot", TICK, &String::new()), "unknown shorthand `@reboot`"),
            (Schedule::new("chores.bad", "0 0 30 2 *", TICK, &String::new()), "never matches"),
            (Schedule::new("chores.bad", "@daily", ORPHAN, &1), "enqueues job `chores.orphan`, which no module registers"),
            (Schedule::new("Chores Bad", "@daily", TICK, &String::new()), "schedule name `Chores Bad`"),
        ];
        for (schedule, expected) in cases {
            let Some(tdb) = hearth::testing::TestDb::create(backend).await else { return };
            let app = App::new("chores", "0.0.1").module(Chores { cron: vec![schedule], ..Chores::default() });
            let err = TestApp::try_start(&app, TestApp::config(&tdb)).await.err().expect("start must fail");
            assert!(err.to_string().contains(expected), "{err} should mention {expected}");
        }
    }
}
