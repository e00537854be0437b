//! Domain events through the public API and real HTTP, on both engines:
//! publish in the caller's transaction, delivery to every subscriber once,
//! per-key order under concurrent publishers, a transaction held open,
//! retries and parking per key, retry and skip, replay, modules added
//! later, retention, bad stored events, a crashed node and two nodes.

use std::sync::Arc;
use std::time::Duration;

use hearth::Config;
use hearth::db::migrate::Migration;
use hearth::events::{Event, EventRun, EventSpec, StartFrom};
use hearth::prelude::*;
use hearth::testing::{Backend, TestApp};
use hearth::{sqlx, with_db, with_tx};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::jobs::eventually;
use crate::probe::client;

/// Posted by `ledger`, keyed by account.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Posted {
    pub account: String,
    pub n: i64,
    /// The subscriber refuses this many attempts first (u32::MAX: always).
    #[serde(default)]
    pub fail: u32,
    /// Refuse by panicking.
    #[serde(default)]
    pub panic: bool,
}

impl Event for Posted {
    const NAME: &'static str = "ledger.posted";
    fn key(&self) -> Option<String> {
        Some(self.account.clone())
    }
}

/// Declared by nobody.
#[derive(Debug, Serialize, Deserialize)]
pub struct Stray {
    pub n: i64,
}

impl Event for Stray {
    const NAME: &'static str = "ledger.stray";
}

const LEDGER_SQLITE: &[Migration] = &[Migration::new(
    1,
    "create",
    include_str!("../migrations/ledger_sqlite_0001.sql"),
)];
const LEDGER_POSTGRES: &[Migration] = &[Migration::new(
    1,
    "create",
    include_str!("../migrations/ledger_postgres_0001.sql"),
)];
const TALLY_SQLITE: &[Migration] = &[Migration::new(
    1,
    "create",
    include_str!("../migrations/tally_sqlite_0001.sql"),
)];
const TALLY_POSTGRES: &[Migration] = &[Migration::new(
    1,
    "create",
    include_str!("../migrations/tally_postgres_0001.sql"),
)];
const AUDIT_SQLITE: &[Migration] = &[Migration::new(
    1,
    "create",
    include_str!("../migrations/audit_sqlite_0001.sql"),
)];
const AUDIT_POSTGRES: &[Migration] = &[Migration::new(
    1,
    "create",
    include_str!("../migrations/audit_postgres_0001.sql"),
)];

const POSTED: &[EventSpec] = &[EventSpec::of::<Posted>()];

#[derive(Debug, Deserialize)]
struct Post {
    account: String,
    #[serde(default)]
    n: i64,
    #[serde(default)]
    fail: u32,
    #[serde(default)]
    panic: bool,
    /// Number the event from the account's counter row (locked to commit).
    #[serde(default)]
    counter: bool,
    /// Write something (taking a transaction id) and wait this long first.
    #[serde(default)]
    pre_write_ms: u64,
    /// Roll back instead of committing.
    #[serde(default)]
    rollback: bool,
}

async fn post_handler(State(state): State<AppState>, Json(p): Json<Post>) -> Result<Json<Value>> {
    let mut tx = state.db().begin().await?;
    if p.pre_write_ms > 0 {
        with_tx!(&mut tx, c => sqlx::query("INSERT INTO ledger_scratch (note) VALUES ('x')").execute(&mut **c).await.map(|_| ()))?;
        tokio::time::sleep(Duration::from_millis(p.pre_write_ms)).await;
    }
    let n = if p.counter {
        with_tx!(&mut tx, c => sqlx::query_scalar(
            "INSERT INTO ledger_counter (account, n) VALUES ($1, 1)
             ON CONFLICT (account) DO UPDATE SET n = ledger_counter.n + 1 RETURNING n",
        ).bind(&p.account).fetch_one(&mut **c).await)?
    } else {
        p.n
    };
    let ev = Posted {
        account: p.account,
        n,
        fail: p.fail,
        panic: p.panic,
    };
    let published = state.events().publish(&mut tx, &ev).await?;
    if p.rollback {
        tx.rollback().await?;
    } else {
        tx.commit().await?;
    }
    Ok(Json(json!({ "position": published.position, "n": n })))
}

async fn stray_handler(State(state): State<AppState>) -> Result<Json<Value>> {
    let mut tx = state.db().begin().await?;
    state.events().publish(&mut tx, &Stray { n: 1 }).await?;
    tx.commit().await?;
    Ok(Json(json!({})))
}

struct Ledger;

const POST: RouteSpec = RouteSpec::post("/ledger/post", Guard::Public);
const STRAY: RouteSpec = RouteSpec::post("/ledger/stray", Guard::Public);

impl Module for Ledger {
    fn spec(&self) -> ModuleSpec {
        ModuleSpec::new("ledger")
            .migrations(LEDGER_SQLITE, LEDGER_POSTGRES)
            .publishes(POSTED)
            .routes(&[POST, STRAY])
    }
    fn register(&self, ctx: &mut Context<'_>) {
        ctx.route(POST, post_handler);
        ctx.route(STRAY, stray_handler);
    }
}

/// Subscribes to `ledger.posted` and records each delivery. With a gate,
/// the first attempt records, signals the gate and then never returns (so
/// that the test can kill the process mid-transaction).
#[derive(Clone, Default)]
struct Tally {
    gate: Option<Arc<Notify>>,
}

impl Module for Tally {
    fn spec(&self) -> ModuleSpec {
        ModuleSpec::new("tally")
            .migrations(TALLY_SQLITE, TALLY_POSTGRES)
            .subscribes(POSTED)
    }
    fn register(&self, ctx: &mut Context<'_>) {
        let gate = self.gate.clone();
        ctx.subscribe(move |run: EventRun<Posted>| {
            let gate = gate.clone();
            async move {
                let e = &run.event;
                if run.meta.attempt <= e.fail {
                    if e.panic {
                        panic!("tally panics at {}", e.n);
                    }
                    anyhow::bail!("tally refuses {}", e.n);
                }
                let mut tx = run.tx().await;
                with_tx!(&mut *tx, c => sqlx::query("INSERT INTO tally_seen (position, account, n, attempt) VALUES ($1, $2, $3, $4)")
                    .bind(run.meta.position).bind(&e.account).bind(e.n).bind(run.meta.attempt as i32)
                    .execute(&mut **c).await.map(|_| ()))?;
                drop(tx);
                if let Some(g) = gate {
                    g.notify_one();
                    std::future::pending::<()>().await;
                }
                Ok(())
            }
        });
        ctx.on_replay(|tx| async move {
            let mut tx = tx.lock().await;
            with_tx!(&mut *tx, c => sqlx::query("DELETE FROM tally_seen").execute(&mut **c).await.map(|_| ()))?;
            Ok(())
        });
    }
}

struct Audit(StartFrom);

impl Module for Audit {
    fn spec(&self) -> ModuleSpec {
        ModuleSpec::new("audit")
            .migrations(AUDIT_SQLITE, AUDIT_POSTGRES)
            .subscribes(POSTED)
            .start_from(self.0)
    }
    fn register(&self, ctx: &mut Context<'_>) {
        ctx.subscribe(|run: EventRun<Posted>| async move {
            let mut tx = run.tx().await;
            with_tx!(&mut *tx, c => sqlx::query("INSERT INTO audit_seen (position, n) VALUES ($1, $2)")
                .bind(run.meta.position).bind(run.event.n).execute(&mut **c).await.map(|_| ()))?;
            Ok(())
        });
    }
}

fn full(tally: Tally) -> App {
    App::new("evtest", "0.0.0")
        .module(Ledger)
        .module(tally)
        .module(Audit(StartFrom::Beginning))
}

fn fast(c: &mut Config) {
    c.events.poll_interval = hearth::config::Duration::from_millis(50);
    c.events.backoff_base = hearth::config::Duration::from_millis(20);
    c.events.backoff_max = hearth::config::Duration::from_millis(100);
    c.events.max_attempts = 3;
    c.events.batch = 50;
}

async fn publish(c: &reqwest::Client, app: &TestApp, body: Value) -> Value {
    let res = c
        .post(app.url("/ledger/post"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "{}",
        res.text().await.unwrap()
    );
    res.json().await.unwrap()
}

/// (account, n, attempt) of every tally row, in delivery order.
async fn seen(db: &Db) -> Vec<(String, i64, i32)> {
    with_db!(db, pool => sqlx::query_as("SELECT account, n, attempt FROM tally_seen ORDER BY seq").fetch_all(pool).await).unwrap()
}

async fn count(db: &Db, sql: &'static str) -> i64 {
    with_db!(db, pool => sqlx::query_scalar(sql).fetch_one(pool).await).unwrap()
}

async fn wait_seen(db: &Db, what: &str, n: usize) -> Vec<(String, i64, i32)> {
    eventually(what, || async {
        let s = seen(db).await;
        (s.len() >= n).then_some(s)
    })
    .await
}

hearth::db_tests! {
    async fn every_subscriber_gets_each_committed_event_once(backend) {
        let Some(app) = TestApp::spawn_with(&full(Tally::default()), backend, fast).await else { return };
        let c = client();
        for i in 0..20 {
            publish(&c, &app, json!({"account": format!("a{}", i % 5), "n": i})).await;
        }
        // A rolled-back publish never existed.
        publish(&c, &app, json!({"account": "ghost", "n": 99, "rollback": true})).await;
        let db = app.state().db().clone();
        let s = wait_seen(&db, "20 deliveries to tally", 20).await;
        eventually("20 deliveries to audit", || async { (count(&db, "SELECT COUNT(*) FROM audit_seen").await == 20).then_some(()) }).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let s2 = seen(&db).await;
        assert_eq!(s2.len(), 20, "nothing more, nothing twice: {s2:?}");
        assert!(!s.iter().any(|r| r.0 == "ghost"));
        assert_eq!(count(&db, "SELECT COUNT(DISTINCT position) FROM tally_seen").await, 20);
        assert_eq!(count(&db, "SELECT COUNT(*) FROM audit_seen").await, 20);
        // Per account, in publish order.
        for a in 0..5 {
            let ns: Vec<i64> = s2.iter().filter(|r| r.0 == format!("a{a}")).map(|r| r.1).collect();
            assert_eq!(ns, (0..20).filter(|i| i % 5 == a).collect::<Vec<_>>());
        }
        let status = app.state().events().status().await.unwrap();
        let tally = status.iter().find(|m| m.module == "tally").unwrap();
        assert_eq!((tally.handled, tally.behind, tally.parked), (20, 0, 0), "{status:?}");
        app.stop().await;
    }

    async fn an_undeclared_event_is_refused_and_nothing_is_written(backend) {
        let Some(app) = TestApp::spawn_with(&full(Tally::default()), backend, fast).await else { return };
        let res = client().post(app.url("/ledger/stray")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], "undeclared_event", "{body}");
        assert_eq!(count(app.state().db(), "SELECT COUNT(*) FROM hearth_event").await, 0);
        app.stop().await;
    }

    async fn a_failing_event_is_retried_then_parked_for_its_key_only(backend) {
        let Some(app) = TestApp::spawn_with(&full(Tally::default()), backend, fast).await else { return };
        let c = client();
        let bad = publish(&c, &app, json!({"account": "x", "n": 1, "fail": u32::MAX})).await;
        publish(&c, &app, json!({"account": "x", "n": 2})).await;
        publish(&c, &app, json!({"account": "y", "n": 3})).await;
        // A panic on the first attempt only: retried, then handled.
        publish(&c, &app, json!({"account": "z", "n": 4, "fail": 1, "panic": true})).await;
        let db = app.state().db().clone();
        let events = app.state().events().clone();
        let held = eventually("x's first event to be parked", || async {
            let h = events.held(Some("tally"), 10).await.unwrap();
            h.iter().any(|h| h.state == "parked").then_some(h)
        }).await;
        let parked = held.iter().find(|h| h.state == "parked").unwrap();
        assert_eq!((parked.position, parked.attempts, parked.key.as_deref()), (bad["position"].as_i64().unwrap(), 3, Some("x")), "{held:?}");
        assert!(parked.error.as_deref().unwrap().contains("tally refuses 1"), "{held:?}");
        assert_eq!(held.iter().filter(|h| h.state == "waiting").count(), 1, "x's second event waits: {held:?}");
        let s = wait_seen(&db, "y and z", 2).await;
        let mut got: Vec<(String, i64, i32)> = s.clone();
        got.sort();
        assert_eq!(got, [("y".to_owned(), 3, 1), ("z".to_owned(), 4, 2)], "y goes on; z succeeds on attempt 2");
        // The other subscriber is not held up at all.
        eventually("audit to get all four", || async { (count(&db, "SELECT COUNT(*) FROM audit_seen").await == 4).then_some(()) }).await;
        // Retry: it fails again and is parked again with a fresh set of attempts.
        events.retry("tally", parked.position).await.unwrap();
        eventually("the retried event to be parked again", || async {
            let h = events.held(Some("tally"), 10).await.unwrap();
            h.iter().any(|h| h.state == "parked" && h.attempts == 3 && h.held_at > 0 && h.error.is_some()).then_some(())
        }).await;
        assert!(events.retry("tally", 999_999).await.is_err());
        // Skip: x's second event goes on.
        events.skip("tally", parked.position).await.unwrap();
        let s = wait_seen(&db, "x's second event", 3).await;
        assert_eq!(s[2], ("x".to_owned(), 2, 1));
        eventually("nothing held", || async { events.held(None, 10).await.unwrap().is_empty().then_some(()) }).await;
        app.stop().await;
    }

    async fn per_key_order_holds_under_concurrent_publishers(backend) {
        let Some(app) = TestApp::spawn_with(&full(Tally::default()), backend, fast).await else { return };
        let c = client();
        // Each publisher takes a transaction id first, waits a little, then
        // numbers its event from the account's counter row (locked until
        // commit): on PostgreSQL the ids then often disagree with the order
        // of the counter, which is the publish order.
        let mut tasks = Vec::new();
        for t in 0..8u64 {
            let c = c.clone();
            let url = app.url("/ledger/post");
            tasks.push(tokio::spawn(async move {
                for i in 0..15u64 {
                    let account = ["p", "q", "r"][((t + i) % 3) as usize];
                    let res = c.post(&url).json(&json!({"account": account, "counter": true, "pre_write_ms": (t * 7 + i * 3) % 11})).send().await.unwrap();
                    assert_eq!(res.status(), StatusCode::OK);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let s = wait_seen(app.state().db(), "120 deliveries", 120).await;
        for account in ["p", "q", "r"] {
            let ns: Vec<i64> = s.iter().filter(|r| r.0 == account).map(|r| r.1).collect();
            let expected: Vec<i64> = (1..=ns.len() as i64).collect();
            assert_eq!(ns, expected, "account {account} out of order");
        }
        app.stop().await;
    }

    async fn a_transaction_held_open_is_delivered_in_order(backend) {
        let Some(app) = TestApp::spawn_with(&full(Tally::default()), backend, fast).await else { return };
        let state = app.state().clone();
        let part = hearth::events::partition_of("slow");
        let others: Vec<String> = (0..400).map(|i| format!("k{i}")).filter(|k| hearth::events::partition_of(k) == part).take(5).collect();
        // The first event is published in a transaction that stays open while
        // later ones (same partition, other keys) commit.
        let mut open = state.db().begin().await.unwrap();
        state.events().publish(&mut open, &Posted { account: "slow".into(), n: 0, ..Posted::default() }).await.unwrap();
        let c = client();
        let mut later = Vec::new();
        for (i, k) in others.iter().enumerate() {
            let c = c.clone();
            let url = app.url("/ledger/post");
            let body = json!({"account": k, "n": i + 1});
            // On SQLite these wait for the open transaction's write lock.
            later.push(tokio::spawn(async move { c.post(&url).json(&body).send().await.unwrap().status() }));
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(seen(state.db()).await.is_empty(), "nothing may pass the open transaction's event");
        open.commit().await.unwrap();
        for t in later {
            assert_eq!(t.await.unwrap(), StatusCode::OK);
        }
        let s = wait_seen(state.db(), "all six", 6).await;
        assert_eq!(s[0].0, "slow", "the older transaction's event comes first: {s:?}");
        app.stop().await;
    }

    async fn replay_and_late_modules_see_the_retained_history(backend) {
        let Some(app) = TestApp::spawn_with(&App::new("evtest", "0.0.0").module(Ledger).module(Tally::default()), backend, fast).await else { return };
        let c = client();
        for i in 0..5 {
            publish(&c, &app, json!({"account": "h", "n": i})).await;
        }
        let db = app.state().db().clone();
        wait_seen(&db, "five", 5).await;
        // Replay: the projection is cleared and rebuilt from history.
        let oldest = app.state().events().replay("tally").await.unwrap();
        assert!(oldest.is_some());
        let s = wait_seen(&db, "five again", 5).await;
        assert_eq!(s.iter().map(|r| r.1).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
        assert!(app.state().events().replay("nobody").await.is_err());
        // A module added later: from the beginning it sees all five, from
        // now it sees only what comes next.
        let config = app.state().config().as_ref().clone();
        let later = App::new("evtest", "0.0.0").module(Ledger).module(Tally::default()).module(Audit(StartFrom::Beginning));
        let second = later.start(config).await.unwrap();
        // The first app's connections look for its own modules' tables only
        // (on PostgreSQL, each module's schema is on their search path).
        let db = second.state().db().clone();
        eventually("audit to catch up on history", || async { (count(&db, "SELECT COUNT(*) FROM audit_seen").await == 5).then_some(()) }).await;
        second.shutdown().await;
        app.stop().await;
    }

    async fn a_module_starting_from_now_skips_history(backend) {
        let Some(app) = TestApp::spawn_with(&App::new("evtest", "0.0.0").module(Ledger).module(Tally::default()), backend, fast).await else { return };
        let c = client();
        publish(&c, &app, json!({"account": "old", "n": 1})).await;
        let db = app.state().db().clone();
        wait_seen(&db, "the old one", 1).await;
        let config = app.state().config().as_ref().clone();
        let later = App::new("evtest", "0.0.0").module(Ledger).module(Tally::default()).module(Audit(StartFrom::Now));
        let second = later.start(config).await.unwrap();
        let db = second.state().db().clone();
        let addr = second.local_addr().unwrap();
        let res = c.post(format!("http://{addr}/ledger/post")).json(&json!({"account": "new", "n": 2})).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        eventually("audit to see the new one", || async { (count(&db, "SELECT COUNT(*) FROM audit_seen").await >= 1).then_some(()) }).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let ns: Vec<i64> = with_db!(&db, pool => sqlx::query_scalar("SELECT n FROM audit_seen").fetch_all(pool).await).unwrap();
        assert_eq!(ns, [2]);
        second.shutdown().await;
        app.stop().await;
    }

    async fn retention_purges_only_what_every_subscriber_passed(backend) {
        let Some(app) = TestApp::spawn_with(&full(Tally::default()), backend, fast).await else { return };
        let c = client();
        publish(&c, &app, json!({"account": "stuck", "n": 1, "fail": u32::MAX})).await;
        for i in 0..4 {
            publish(&c, &app, json!({"account": "fine", "n": i})).await;
        }
        let db = app.state().db().clone();
        let events = app.state().events().clone();
        wait_seen(&db, "the four fine ones", 4).await;
        eventually("the stuck one to park", || async {
            events.held(Some("tally"), 10).await.unwrap().iter().any(|h| h.state == "parked").then_some(())
        }).await;
        eventually("audit to pass all five", || async { (count(&db, "SELECT COUNT(*) FROM audit_seen").await == 5).then_some(()) }).await;
        // A subscriber that has read nothing (a module of another binary)
        // keeps everything in its partitions.
        let ghost_part = hearth::events::partition_of("fine");
        with_db!(&db, pool => sqlx::query("INSERT INTO hearth_event_cursor (module, part, tx, position, handled, updated_at) VALUES ('ghost', $1, 0, 0, 0, 0)").bind(ghost_part).execute(pool).await.map(|_| ())).unwrap();
        let future = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64 + 60_000;
        let purged = events.purge_before(future).await.unwrap();
        assert_eq!(purged, 0, "the ghost holds the fine ones back, and the parked one is held");
        assert_eq!(count(&db, "SELECT COUNT(*) FROM hearth_event").await, 5);
        with_db!(&db, pool => sqlx::query("DELETE FROM hearth_event_cursor WHERE module = 'ghost'").execute(pool).await.map(|_| ())).unwrap();
        let purged = events.purge_before(future).await.unwrap();
        assert_eq!(purged, 4, "all but the parked one");
        assert_eq!(count(&db, "SELECT COUNT(*) FROM hearth_event").await, 1);
        // Nothing purged is younger than the retention.
        assert_eq!(events.purge().await.unwrap(), 0);
        app.stop().await;
    }

    async fn bad_stored_events_are_parked_with_a_reason(backend) {
        let Some(app) = TestApp::spawn_with(&full(Tally::default()), backend, fast).await else { return };
        let db = app.state().db().clone();
        let id = |i: u32| format!("00000000-0000-4000-8000-00000000000{i}");
        let insert = |name: &'static str, version: i32, key: &'static str, payload: &'static str, i: u32| {
            let db = db.clone();
            let part = hearth::events::partition_of(key);
            let id = id(i);
            async move {
                match &db {
                    Db::Sqlite(p, ..) => sqlx::query("INSERT INTO hearth_event (tx, part, id, name, version, module, key, payload, published_at) VALUES (0, $1, $2, $3, $4, 'ledger', $5, $6, 0)")
                        .bind(part).bind(id).bind(name).bind(version).bind(key).bind(payload).execute(p).await.map(|_| ()),
                    Db::Postgres(p) => sqlx::query("INSERT INTO hearth_event (tx, part, id, name, version, module, key, payload, published_at) VALUES (pg_current_xact_id()::text::bigint, $1, $2::uuid, $3, $4, 'ledger', $5, $6, 0)")
                        .bind(part).bind(id).bind(name).bind(version).bind(key).bind(payload).execute(p).await.map(|_| ()),
                }.unwrap();
            }
        };
        insert("ledger.renamed-long-ago", 1, "b1", "{}", 1).await;
        insert("ledger.posted", 1, "b2", r#"{"account": 5, "n": 1}"#, 2).await;
        insert("ledger.posted", 7, "b3", r#"{"account": "b3", "n": 1}"#, 3).await;
        let events = app.state().events().clone();
        let held = eventually("three parked events per subscriber", || async {
            let h = events.held(Some("tally"), 10).await.unwrap();
            (h.len() == 3).then_some(h)
        }).await;
        let reason = |key: &str| held.iter().find(|h| h.key.as_deref() == Some(key)).unwrap().error.clone().unwrap();
        assert!(reason("b1").contains("unknown event `ledger.renamed-long-ago`"), "{held:?}");
        assert!(reason("b2").contains("field `account`"), "{held:?}");
        assert!(reason("b3").contains("version 7 is newer"), "{held:?}");
        assert!(held.iter().all(|h| h.state == "parked" && h.attempts == 1), "not retried: {held:?}");
        // The app goes on with good events.
        publish(&client(), &app, json!({"account": "good", "n": 1})).await;
        wait_seen(&db, "the good one", 1).await;
        app.stop().await;
    }

    async fn a_node_killed_mid_batch_leaves_no_trace_and_another_finishes(backend) {
        killed_mid_batch(backend, pair).await;
    }

    async fn a_module_file_killed_mid_batch_leaves_no_trace_and_another_finishes(backend) {
        killed_mid_batch(backend, pair_apart).await;
    }

    async fn two_nodes_handle_each_event_once_per_module(backend) {
        let Some(app) = TestApp::spawn_with(&full(Tally::default()), backend, fast).await else { return };
        let mut config = TestApp::config(app.db());
        fast(&mut config);
        let second = full(Tally::default()).start(config).await.unwrap();
        let addrs = [app.addr(), second.local_addr().unwrap()];
        let c = client();
        let mut tasks = Vec::new();
        for t in 0..4usize {
            let c = c.clone();
            let addr = addrs[t % 2];
            tasks.push(tokio::spawn(async move {
                for i in 0..50 {
                    let res = c.post(format!("http://{addr}/ledger/post")).json(&json!({"account": format!("acct{}", i % 7), "n": t * 1000 + i})).send().await.unwrap();
                    assert_eq!(res.status(), StatusCode::OK);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let db = app.state().db().clone();
        wait_seen(&db, "200 deliveries", 200).await;
        eventually("audit's 200", || async { (count(&db, "SELECT COUNT(*) FROM audit_seen").await == 200).then_some(()) }).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(count(&db, "SELECT COUNT(*) FROM tally_seen").await, 200);
        assert_eq!(count(&db, "SELECT COUNT(DISTINCT position) FROM tally_seen").await, 200);
        assert_eq!(count(&db, "SELECT COUNT(DISTINCT position) FROM audit_seen").await, 200);
        second.shutdown().await;
        app.stop().await;
    }
}

/// A node is killed while a handler's transaction is open (after its
/// write, before the commit); another node then handles every event once.
async fn killed_mid_batch(backend: Backend, make: fn(Tally) -> App) {
    // The serving node runs no readers; its migrations are the other nodes' too.
    let no_readers = |c: &mut Config| {
        fast(c);
        c.jobs.in_serve = false;
    };
    let Some(app) = TestApp::spawn_with(&make(Tally::default()), backend, no_readers).await else {
        return;
    };
    let c = client();
    for i in 0..3 {
        publish(&c, &app, json!({"account": "k", "n": i})).await;
    }
    let mut config = TestApp::config(app.db());
    fast(&mut config);
    let (crash_tx, crash_rx) = std::sync::mpsc::channel::<()>();
    let (held_tx, held_rx) = std::sync::mpsc::channel::<()>();
    let doomed = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let gate = Arc::new(Notify::new());
        let app = make(Tally {
            gate: Some(gate.clone()),
        });
        let running = rt.block_on(async {
            let r = app.start_worker(config).await.unwrap();
            gate.notified().await;
            r
        });
        held_tx.send(()).unwrap();
        crash_rx.recv().ok();
        // As after kill -9: nothing shuts down, the transaction never commits.
        std::mem::forget(running);
        rt.shutdown_background();
    });
    held_rx.recv().unwrap();
    crash_tx.send(()).unwrap();
    doomed.join().unwrap();
    let db = app.state().db().clone();
    assert!(
        seen(&db).await.is_empty(),
        "the killed node's writes never committed"
    );
    let mut config = TestApp::config(app.db());
    fast(&mut config);
    let healthy = make(Tally::default()).start_worker(config).await.unwrap();
    let s = wait_seen(&db, "all three", 3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(seen(&db).await, s);
    assert_eq!(
        s.iter().map(|r| r.1).collect::<Vec<_>>(),
        [0, 1, 2],
        "once each, in order"
    );
    healthy.shutdown().await;
    app.stop().await;
}

/// The same module, keeping its data in an SQLite file of its own.
struct Own<M>(M);

impl<M: Module> Module for Own<M> {
    fn spec(&self) -> ModuleSpec {
        self.0.spec().own_file()
    }
    fn register(&self, ctx: &mut Context<'_>) {
        self.0.register(ctx);
    }
}

fn pair(tally: Tally) -> App {
    App::new("evtest", "0.0.0").module(Ledger).module(tally)
}

fn pair_apart(tally: Tally) -> App {
    App::new("evtest", "0.0.0")
        .module(Own(Ledger))
        .module(Own(tally))
}

fn apart(tally: Tally) -> App {
    pair_apart(tally).module(Audit(StartFrom::Beginning))
}

/// The tables of the SQLite file at `path`, as its own main database.
async fn tables_in(path: &std::path::Path) -> Vec<String> {
    use hearth::sqlx::Connection as _;
    let opts = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .read_only(true);
    let mut c = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
    let t = sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        .fetch_all(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
    t
}

fn later_ms(ms: i64) -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        + ms
}

hearth::db_tests! {
    async fn modules_with_files_of_their_own_publish_and_handle_each_event_once(backend) {
        let Some(app) = TestApp::spawn_with(&apart(Tally::default()), backend, fast).await else { return };
        let sqlite = matches!(app.state().db(), Db::Sqlite(..));
        let c = client();
        for i in 0..20 {
            let r = publish(&c, &app, json!({"account": format!("a{}", i % 5), "n": i})).await;
            // On SQLite the event waits in ledger's outbox: it gets its
            // position when it is copied into the main file.
            assert_eq!(r["position"].is_null(), sqlite, "{r}");
        }
        publish(&c, &app, json!({"account": "ghost", "n": 99, "rollback": true})).await;
        let db = app.state().db().clone();
        wait_seen(&db, "20 deliveries to tally", 20).await;
        eventually("20 deliveries to audit", || async { (count(&db, "SELECT COUNT(*) FROM audit_seen").await == 20).then_some(()) }).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let s = seen(&db).await;
        assert_eq!(s.len(), 20, "nothing more, nothing twice: {s:?}");
        assert!(!s.iter().any(|r| r.0 == "ghost"));
        assert_eq!(count(&db, "SELECT COUNT(DISTINCT position) FROM tally_seen").await, 20);
        for a in 0..5 {
            let ns: Vec<i64> = s.iter().filter(|r| r.0 == format!("a{a}")).map(|r| r.1).collect();
            assert_eq!(ns, (0..20).filter(|i| i % 5 == a).collect::<Vec<_>>(), "per key, in publish order");
        }
        let events = app.state().events().clone();
        let status = events.status().await.unwrap();
        let tally = status.iter().find(|m| m.module == "tally").unwrap();
        assert_eq!((tally.handled, tally.behind, tally.parked), (20, 0, 0), "{status:?}");
        assert!(status.iter().any(|m| m.module == "audit"), "{status:?}");
        if sqlite {
            let dir = app.db().dir();
            let main = tables_in(&dir.join("test.db")).await;
            assert!(!main.iter().any(|t| t.starts_with("ledger_") || t.starts_with("tally_")), "{main:?}");
            assert!(main.contains(&"audit_seen".to_owned()), "{main:?}");
            let tally = tables_in(&dir.join("test.tally.db")).await;
            for t in ["tally_seen", "hearth_event_cursor", "hearth_event_held", "hearth_migration"] {
                assert!(tally.contains(&t.to_owned()), "{t} in {tally:?}");
            }
            let ledger = tables_in(&dir.join("test.ledger.db")).await;
            assert!(ledger.contains(&"ledger_counter".to_owned()) && ledger.contains(&"hearth_event_outbox".to_owned()), "{ledger:?}");
            // Tally's progress is in its file, with its writes.
            assert_eq!(count(&db, "SELECT COUNT(*) FROM main.hearth_event_cursor WHERE module = 'tally'").await, 0);
            assert_eq!(count(&db, "SELECT SUM(handled) FROM tally.hearth_event_cursor").await, 20);
            eventually("ledger's outbox to empty", || async { (count(&db, "SELECT COUNT(*) FROM ledger.hearth_event_outbox").await == 0).then_some(()) }).await;
            assert_eq!(count(&db, "SELECT seq FROM hearth_event_relay WHERE module = 'ledger'").await, 20);
            // Migrations are recorded where they ran, and reported together.
            let st = hearth::db::migrate::status(&db, app.state().specs()).await.unwrap();
            assert!(st.is_current(), "{st:?}");
            assert!(st.applied.iter().any(|m| m.module == "tally"), "{st:?}");
        }
        // Replay clears and rebuilds tally's projection, in its file.
        events.replay("tally").await.unwrap();
        let s = wait_seen(&db, "20 again", 20).await;
        assert_eq!(s.len(), 20);
        eventually("tally to catch up", || async {
            let st = events.status().await.unwrap();
            st.iter().any(|m| m.module == "tally" && m.behind == 0).then_some(())
        }).await;
        // A cursor in a module's file holds events back like one in the main file.
        let cursors = if sqlite { "tally.hearth_event_cursor" } else { "hearth_event_cursor" };
        for part in 0..hearth::events::PARTITIONS {
            with_db!(&db, pool => sqlx::query(sqlx::AssertSqlSafe(format!("INSERT INTO {cursors} (module, part, tx, position, handled, updated_at) VALUES ('ghost', $1, 0, 0, 0, 0)"))).bind(part).execute(pool).await.map(|_| ())).unwrap();
        }
        assert_eq!(events.purge_before(later_ms(60_000)).await.unwrap(), 0);
        with_db!(&db, pool => sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {cursors} WHERE module = 'ghost'"))).execute(pool).await.map(|_| ())).unwrap();
        assert_eq!(events.purge_before(later_ms(60_000)).await.unwrap(), 20);
        app.stop().await;
    }

    async fn a_module_file_keeps_its_held_events_which_retry_and_skip(backend) {
        let Some(app) = TestApp::spawn_with(&apart(Tally::default()), backend, fast).await else { return };
        let sqlite = matches!(app.state().db(), Db::Sqlite(..));
        let c = client();
        publish(&c, &app, json!({"account": "x", "n": 1, "fail": u32::MAX})).await;
        publish(&c, &app, json!({"account": "x", "n": 2})).await;
        publish(&c, &app, json!({"account": "y", "n": 3})).await;
        let db = app.state().db().clone();
        let events = app.state().events().clone();
        let held = eventually("x's first event to be parked", || async {
            let h = events.held(Some("tally"), 10).await.unwrap();
            h.iter().any(|h| h.state == "parked").then_some(h)
        }).await;
        assert_eq!(held.len(), 2, "{held:?}");
        assert!(held.iter().any(|h| h.state == "waiting" && h.key.as_deref() == Some("x")), "{held:?}");
        assert_eq!(wait_seen(&db, "y's event", 1).await, [("y".to_owned(), 3, 1)]);
        if sqlite {
            assert_eq!(count(&db, "SELECT COUNT(*) FROM main.hearth_event_held").await, 0);
            assert_eq!(count(&db, "SELECT COUNT(*) FROM tally.hearth_event_held").await, 2);
        }
        let all = events.held(None, 10).await.unwrap();
        assert_eq!(all.len(), 2, "the list of every module finds them too: {all:?}");
        let parked = held.iter().find(|h| h.state == "parked").unwrap().position;
        events.retry("tally", parked).await.unwrap();
        eventually("a fresh set of attempts, parked again", || async {
            let h = events.held(Some("tally"), 10).await.unwrap();
            h.iter().any(|h| h.position == parked && h.state == "parked" && h.attempts == 3).then_some(())
        }).await;
        let skipped = events.skip("tally", parked).await.unwrap();
        assert_eq!(skipped.position, parked);
        let s = wait_seen(&db, "x's second event", 2).await;
        assert_eq!(s[1], ("x".to_owned(), 2, 1));
        eventually("nothing held", || async { events.held(Some("tally"), 10).await.unwrap().is_empty().then_some(()) }).await;
        app.stop().await;
    }
}

#[tokio::test]
async fn a_relay_cut_between_its_two_commits_neither_loses_nor_doubles() {
    let no_readers = |c: &mut Config| {
        fast(c);
        c.jobs.in_serve = false;
    };
    let Some(app) =
        TestApp::spawn_with(&pair_apart(Tally::default()), Backend::Sqlite, no_readers).await
    else {
        return;
    };
    let c = client();
    for i in 0..3 {
        publish(&c, &app, json!({"account": "k", "n": i})).await;
    }
    let db = app.state().db().clone();
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM ledger.hearth_event_outbox").await,
        3
    );
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM hearth_event").await,
        0,
        "no relay runs on a node without readers"
    );
    // What a relay of the first two leaves when the main file's commit
    // landed and the module file's did not: the copies and the mark in the
    // main file, the rows still in the outbox.
    let Db::Sqlite(pool, ..) = &db else {
        unreachable!()
    };
    sqlx::query(
        "INSERT INTO hearth_event (tx, part, id, name, version, module, actor, key, payload, published_at)
         SELECT 0, part, id, name, version, module, actor, key, payload, published_at
         FROM ledger.hearth_event_outbox WHERE seq <= 2 ORDER BY seq",
    )
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("INSERT INTO hearth_event_relay (module, seq) VALUES ('ledger', 2)")
        .execute(pool)
        .await
        .unwrap();
    let mut config = TestApp::config(app.db());
    fast(&mut config);
    let worker = pair_apart(Tally::default())
        .start_worker(config)
        .await
        .unwrap();
    let s = wait_seen(&db, "all three", 3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(seen(&db).await, s);
    assert_eq!(
        s.iter().map(|r| r.1).collect::<Vec<_>>(),
        [0, 1, 2],
        "once each, in order"
    );
    assert_eq!(count(&db, "SELECT COUNT(*) FROM hearth_event").await, 3);
    eventually("the outbox to empty", || async {
        (count(&db, "SELECT COUNT(*) FROM ledger.hearth_event_outbox").await == 0).then_some(())
    })
    .await;
    worker.shutdown().await;
    app.stop().await;
}

#[tokio::test]
async fn a_module_migrated_in_the_main_file_cannot_move_to_its_own() {
    let Some(db) = hearth::testing::TestDb::create(Backend::Sqlite).await else {
        return;
    };
    let config = TestApp::config(&db);
    let first = TestApp::try_start(&pair(Tally::default()), config.clone())
        .await
        .unwrap();
    first.shutdown().await;
    let err = match TestApp::try_start(&pair_apart(Tally::default()), config).await {
        Ok(_) => panic!("the app started"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("hearth does not move tables between SQLite files"),
        "{err}"
    );
}

#[tokio::test]
async fn a_module_with_its_own_file_cannot_reference_hearth_tables() {
    const REFS: &[Migration] = &[Migration::new(
        1,
        "create",
        "CREATE TABLE refs_x (owner BIGINT REFERENCES hearth_user (id))",
    )];
    struct Refs;
    impl Module for Refs {
        fn spec(&self) -> ModuleSpec {
            ModuleSpec::new("refs").migrations(REFS, REFS).own_file()
        }
        fn register(&self, _: &mut Context<'_>) {}
    }
    let Some(db) = hearth::testing::TestDb::create(Backend::Sqlite).await else {
        return;
    };
    let err = match TestApp::try_start(&App::new("t", "0").module(Refs), TestApp::config(&db)).await
    {
        Ok(_) => panic!("the app started"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("references `hearth_user`")
            && err.contains("checks foreign keys within one file"),
        "{err}"
    );
}

#[tokio::test]
async fn specs_and_handlers_must_agree() {
    struct NoHandler;
    impl Module for NoHandler {
        fn spec(&self) -> ModuleSpec {
            ModuleSpec::new("nohandler").subscribes(POSTED)
        }
        fn register(&self, _: &mut Context<'_>) {}
    }
    struct Undeclared;
    impl Module for Undeclared {
        fn spec(&self) -> ModuleSpec {
            ModuleSpec::new("undeclared")
        }
        fn register(&self, ctx: &mut Context<'_>) {
            ctx.subscribe(|_: EventRun<Posted>| async { Ok(()) });
        }
    }
    struct Misnamed;
    const STRAY: &[EventSpec] = &[EventSpec::of::<Stray>()];
    impl Module for Misnamed {
        fn spec(&self) -> ModuleSpec {
            ModuleSpec::new("misnamed").publishes(STRAY)
        }
        fn register(&self, _: &mut Context<'_>) {}
    }
    let cases: [(App, &str); 4] = [
        (App::new("t", "0").module(NoHandler), "no module publishes"),
        (
            App::new("t", "0").module(Ledger).module(NoHandler),
            "registers no handler",
        ),
        (
            App::new("t", "0").module(Ledger).module(Undeclared),
            "does not list in `subscribes`",
        ),
        (
            App::new("t", "0").module(Misnamed),
            "must be named `misnamed.",
        ),
    ];
    for (app, expected) in cases {
        let Some(db) = hearth::testing::TestDb::create(Backend::Sqlite).await else {
            return;
        };
        let config = TestApp::config(&db);
        let err = match TestApp::try_start(&app, config).await {
            Ok(_) => panic!("{expected}: the app started"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(expected), "{err}");
    }
}
