//! Worker processes as an operator runs them: a worker killed with SIGKILL
//! mid-job has its job rescued by another, two workers share one database
//! without running a job twice, and `jobs …` / `cron …` manage the queue.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hearth::jobs::{JobState, PING, Ping};
use hearth::testing::{TestApp, TestDb};
use serde_json::Value;

use crate::cli::{pancake, run, sigterm_and_wait, text};

/// Settings every process of one test shares: the database, short leases.
fn with_env<'a>(cmd: &'a mut Command, db: &TestDb) -> &'a mut Command {
    cmd.env("DATABASE_URL", db.url())
        .env("HEARTH_DATA_DIR", db.dir().join("data"))
        .env("HEARTH_JOBS__LEASE", "3s")
        .env("HEARTH_JOBS__POLL_INTERVAL", "200ms")
        .env("HEARTH_LOG", "warn")
}

fn cli(db: &TestDb, args: &[&str]) -> std::process::Output {
    run(with_env(&mut pancake(db.dir()), db).args(args))
}

/// Runs a command that must succeed and print JSON.
fn json(db: &TestDb, args: &[&str]) -> Value {
    let out = cli(db, args);
    assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", text(&out.stdout)))
}

fn worker(db: &TestDb) -> Child {
    with_env(&mut pancake(db.dir()), db)
        .arg("worker")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The job with `id` among `jobs list --state STATE`, if there.
fn find(db: &TestDb, state: &str, id: i64) -> Option<Value> {
    let list = json(db, &["jobs", "list", "--state", state, "--json"]);
    list.as_array()
        .unwrap()
        .iter()
        .find(|j| j["id"] == id)
        .cloned()
}

fn poll<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn migrate(dir: &Path, db: &TestDb) {
    let out = run(with_env(&mut pancake(dir), db).arg("migrate"));
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// The migrated database's app state, to enqueue and inspect from the test
/// while worker processes do the work.
async fn queue_side(db: &TestDb) -> hearth::AppState {
    migrate(db.dir(), db);
    let app = pancake::app();
    let config = TestApp::config(db);
    app.build(config.clone(), app.open_db(&config).await.unwrap())
        .unwrap()
        .state
}

/// Waits until nothing is pending or active, at most a minute.
async fn drained(jobs: &hearth::jobs::Jobs) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stats = jobs.stats().await.unwrap();
        if stats.iter().all(|q| q.pending == 0 && q.active == 0) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the workers did not drain the queue: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

hearth::db_tests! {
    async fn a_job_of_a_killed_worker_is_rescued_by_another_within_the_lease(backend) {
        let Some(db) = TestDb::create(backend).await else { return };
        tokio::task::spawn_blocking(move || {
            migrate(db.dir(), &db);
            let id = json(&db, &["jobs", "enqueue", "hearth.ping", r#"{"hold_ms":4000}"#, "--json"])["id"].as_i64().unwrap();
            let mut first = worker(&db);
            let held = poll("the first worker to claim the job", || find(&db, "active", id));
            first.kill().unwrap(); // SIGKILL: no shutdown, no chance to hand the job back
            first.wait().unwrap();
            let killed_at = Instant::now();
            let second = worker(&db);
            let rescued = poll("another worker to take the job", || {
                find(&db, "active", id).filter(|j| j["worker"] != held["worker"])
            });
            let recovery = killed_at.elapsed();
            assert_eq!(rescued["attempts"], 2, "{rescued}");
            let done = poll("the rescued job to finish", || find(&db, "done", id));
            assert_eq!(done["attempts"], 2);
            assert_eq!(done["worker"], rescued["worker"]);
            // A fresh process needs a moment to start; the rescue itself is bounded by the lease.
            eprintln!("job back on a worker {} ms after SIGKILL (lease 3000 ms)", recovery.as_millis());
            let out = sigterm_and_wait(second);
            assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        })
        .await
        .unwrap();
    }

    async fn two_worker_processes_share_a_database_without_running_a_job_twice(backend) {
        let Some(db) = TestDb::create(backend).await else { return };
        let state = queue_side(&db).await;
        let jobs = state.jobs().clone();
        let mut tx = state.db().begin().await.unwrap();
        jobs.enqueue_batch(&mut tx, (0..400).map(|_| PING.job(&Ping::default())).collect()).await.unwrap();
        tx.commit().await.unwrap();
        let workers = [worker(&db), worker(&db)];
        drained(&jobs).await;
        for w in workers {
            let out = tokio::task::spawn_blocking(move || sigterm_and_wait(w)).await.unwrap();
            assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        }
        let history = jobs.history(10_000).await.unwrap();
        let pings: Vec<_> = history.iter().filter(|h| h.name == "hearth.ping").collect();
        assert_eq!(pings.len(), 400);
        assert!(pings.iter().all(|h| h.attempts == 1), "a job was claimed twice");
        assert!(jobs.list(JobState::Dead, None, 10).await.unwrap().is_empty());
        let workers_used: std::collections::BTreeSet<_> = pings.iter().map(|h| h.worker.clone()).collect();
        eprintln!("400 jobs finished by {} worker process(es)", workers_used.len());
        state.db().close().await;
    }

    async fn notices_published_by_a_worker_killed_mid_burndown_are_stored_once(backend) {
        let Some(db) = TestDb::create(backend).await else { return };
        let state = queue_side(&db).await;
        let jobs = state.jobs().clone();
        const N: i64 = 400;
        let notices: Vec<_> = (0..N)
            .map(|i| {
                let n: pancake::home::live::NewNotice = serde_json::from_value(serde_json::json!({"title": format!("n{i}"), "body": "b"})).unwrap();
                pancake::home::live::PUBLISH.job(&n)
            })
            .collect();
        let mut tx = state.db().begin().await.unwrap();
        jobs.enqueue_batch(&mut tx, notices).await.unwrap();
        tx.commit().await.unwrap();
        let stored = || async {
            hearth::with_db!(state.db(), pool => hearth::sqlx::query_scalar::<_, i64>("SELECT count(*) FROM home_notice").fetch_one(pool).await).unwrap()
        };
        // The site starts with a welcome notice of its own.
        let before = stored().await;
        // Kill the first worker in the middle of the burndown: jobs whose
        // notices committed but whose completion was not yet recorded are
        // run again by the second worker.
        let mut first = worker(&db);
        let deadline = Instant::now() + Duration::from_secs(60);
        while stored().await < before + N / 4 {
            assert!(Instant::now() < deadline, "the first worker stored nothing");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        first.kill().unwrap();
        let _ = first.wait();
        let at_kill = stored().await - before;
        let second = worker(&db);
        drained(&jobs).await;
        let out = tokio::task::spawn_blocking(move || sigterm_and_wait(second)).await.unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let history = jobs.history(10_000).await.unwrap();
        let rerun = history.iter().filter(|h| h.name == "home.publish" && h.attempts > 1).count();
        let total = stored().await - before;
        eprintln!("killed after {at_kill} of {N} notices; {rerun} job(s) ran again; {} duplicate notice(s)", total - N);
        assert_eq!(total, N, "a notice was stored twice");
        state.db().close().await;
    }

    async fn jobs_and_cron_commands_manage_the_queue(backend) {
        let Some(db) = TestDb::create(backend).await else { return };
        migrate(db.dir(), &db);
        // A job that times out on its only attempt ends up dead.
        let app = pancake::app();
        let mut config = TestApp::config(&db);
        config.jobs.in_serve = false;
        let running = app.start_worker(config.clone()).await.unwrap();
        let jobs = running.state().jobs().clone();
        let id = jobs
            .enqueue_now(PING.job(&Ping { hold_ms: 5000 }).timeout(Duration::from_millis(100)).max_attempts(1))
            .await
            .unwrap()
            .id;
        let deadline = Instant::now() + Duration::from_secs(30);
        while jobs.list(JobState::Dead, None, 10).await.unwrap().is_empty() {
            assert!(Instant::now() < deadline, "the job never died");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        running.shutdown().await;
        tokio::task::spawn_blocking(move || {
            let dead = find(&db, "dead", id).expect("listed as dead");
            assert!(dead["last_error"].as_str().unwrap().contains("timed out after 100 ms"), "{dead}");
            let table = text(&cli(&db, &["jobs", "list", "--state", "dead"]).stdout);
            assert!(table.contains("hearth.ping") && table.contains("timed out"), "{table}");
            let stats = json(&db, &["jobs", "stats", "--json"]);
            let hearth_q = stats.as_array().unwrap().iter().find(|q| q["queue"] == "hearth").unwrap();
            assert_eq!(hearth_q["dead"], 1, "{stats}");
            let purged = json(&db, &["jobs", "purge", "--state", "dead", "--older-than", "1h", "--json"]);
            assert_eq!(purged["purged"], 0, "it died just now");
            // Retry it, then it is pending with fresh attempts.
            let out = cli(&db, &["jobs", "retry", &id.to_string()]);
            assert!(out.status.success(), "{}", text(&out.stderr));
            let pending = find(&db, "pending", id).expect("pending again");
            assert_eq!(pending["attempts"], 0);
            // Mistakes get a clear error and a non-zero exit.
            let cases: &[(&[&str], i32, &str)] = &[
                (&["jobs", "retry", "999999"], 1, "no dead job with id 999999"),
                (&["jobs", "enqueue", "nope"], 1, "unknown job `nope`"),
                (&["jobs", "enqueue", "hearth.ping", r#"{"hold":1}"#], 1, "unknown field `hold`"),
                (&["jobs", "enqueue", "hearth.ping", "{"], 1, "invalid payload for job `hearth.ping`"),
                (&["jobs", "enqueue", "hearth.ping", r#"{"hold_ms":-5}"#], 1, "field `hold_ms`"),
                (&["jobs", "purge", "--state", "pending"], 2, "only dead jobs and history"),
                (&["jobs", "list", "--state", "lost"], 2, "unknown job state `lost`"),
                (&["jobs", "purge", "--state", "dead", "--older-than", "soon"], 2, "not a duration"),
                (&["jobs", "retry", "1", "--all-dead"], 2, "cannot be used with"),
            ];
            for (args, code, message) in cases {
                let out = cli(&db, args);
                assert_eq!(out.status.code(), Some(*code), "{args:?}: {}", text(&out.stderr));
                assert!(text(&out.stderr).contains(message), "{args:?}: {}", text(&out.stderr));
            }
            assert!(find(&db, "pending", id).is_some(), "nothing was lost");
            let enqueued = json(&db, &["jobs", "enqueue", "hearth.ping", "{}", "--delay", "10m", "--json"]);
            assert_eq!(enqueued["duplicate"], false);
            // Cron schedules were stored when the worker started.
            let cron = json(&db, &["cron", "list", "--json"]);
            let hk = cron.as_array().unwrap().iter().find(|c| c["name"] == "hearth.housekeeping").expect("housekeeping schedule");
            assert_eq!(hk["expr"], "*/10 * * * *");
            assert!(hk["next_at"].as_i64().unwrap() > 0);
            let table = text(&cli(&db, &["cron", "list"]).stdout);
            assert!(table.contains("hearth.housekeeping"), "{table}");
        })
        .await
        .unwrap();
    }
}

/// Reads SSE `data:` lines from a streaming response until one satisfies `want`.
async fn wait_for_event(res: reqwest::Response, want: impl Fn(&Value) -> bool) -> Value {
    use futures_util::StreamExt as _;
    let mut body = res.bytes_stream();
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for data in text.lines().filter_map(|l| l.strip_prefix("data: ")) {
            let v: Value = serde_json::from_str(data).unwrap();
            if want(&v) {
                return v;
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, body.next()).await {
            Ok(Some(chunk)) => text.push_str(&String::from_utf8_lossy(&chunk.unwrap())),
            _ => panic!("the event never arrived: {text}"),
        }
    }
}

hearth::db_tests! {
    /// A notice published by a job in a `worker` process reaches a browser
    /// streaming from a separate `serve` process: through NOTIFY on
    /// PostgreSQL, by following the message table on SQLite.
    async fn pubsub_crosses_processes(backend) {
        let Some(db) = TestDb::create(backend).await else { return };
        migrate(db.dir(), &db);
        let (web, base) = crate::cli::serve(&db, &[("HEARTH_JOBS__IN_SERVE", "false")]).await;
        let work = worker(&db);
        let res = crate::client().get(format!("{base}/api/notices/live")).send().await.unwrap();
        assert_eq!(res.status(), reqwest::StatusCode::OK);
        let out = cli(&db, &["jobs", "enqueue", "home.publish", r#"{"title":"From the worker","body":"hello"}"#]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let event = wait_for_event(res, |v| v["notice"]["title"] == "From the worker").await;
        assert_eq!(event["notice"]["body"], "hello");
        for child in [web, work] {
            let out = tokio::task::spawn_blocking(move || sigterm_and_wait(child)).await.unwrap();
            assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        }
    }
}
