//! The database layer: migrations on both engines, refusal of foreign
//! schemas, concurrent migrators and writers, schema parity.

use hearth::db::migrate::{self, MigrateError};
use hearth::testing::{Backend, TestApp, TestDb, schema_of};
use hearth::{Db, sqlx, with_db};
use reqwest::StatusCode;

use crate::probe::{app, client};

async fn open(db: &TestDb) -> Db {
    let cfg = TestApp::config(db);
    app().open_db(&cfg).await.unwrap()
}

/// Asserts that `/readyz` answers 503 `not_ready` and returns its message.
async fn not_ready_reason(app: &TestApp) -> String {
    let res = client().get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let v: serde_json::Value = res.json().await.unwrap();
    assert_eq!(v["error"]["code"], "not_ready", "{v}");
    v["error"]["message"].as_str().unwrap().to_owned()
}

hearth::db_tests! {
    async fn migrations_are_recorded_and_a_rerun_changes_nothing(backend) {
        let Some(app_) = TestApp::spawn(&app(), backend).await else { return };
        let db = app_.state().db().clone();
        let specs = app().specs().unwrap();
        let status = migrate::status(&db, &specs).await.unwrap();
        assert!(status.is_current(), "{status:?}");
        // hearth's own tables first, then the module's.
        let applied: Vec<(&str, &str)> = status.applied.iter().map(|m| (m.module.as_str(), m.name.as_str())).collect();
        assert_eq!(applied, [("hearth", "jobs"), ("hearth", "cron"), ("hearth", "pubsub"), ("hearth", "tokens"), ("hearth", "accounts"), ("hearth", "job_effects"), ("hearth", "events"), ("hearth", "event_relay"), ("probe", "create_probe_item")]);
        let report = migrate::migrate(&db, &specs).await.unwrap();
        assert!(report.applied.is_empty());
    }

    async fn start_is_refused_when_the_database_has_unknown_migrations(backend) {
        let Some(tdb) = TestDb::create(backend).await else { return };
        let db = open(&tdb).await;
        migrate::migrate(&db, &app().specs().unwrap()).await.unwrap();
        with_db!(&db, pool => sqlx::query(
            "INSERT INTO hearth_migration (module, version, name, checksum, applied_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind("probe").bind(2_i64).bind("from_the_future").bind("x").bind(0_i64)
        .execute(pool).await.map(|_| ())).unwrap();
        let err = TestApp::try_start(&app(), TestApp::config(&tdb)).await.err().expect("start must fail");
        let msg = err.to_string();
        assert!(msg.contains("does not know") && msg.contains("probe/2_from_the_future"), "{msg}");
        // `migrate` refuses too, and changes nothing.
        let err = migrate::migrate(&db, &app().specs().unwrap()).await.unwrap_err();
        assert!(matches!(err, MigrateError::Refused(_)), "{err}");
        // Even with migrations off at start-up.
        let mut cfg = TestApp::config(&tdb);
        cfg.db.migrate_on_serve = false;
        assert!(TestApp::try_start(&app(), cfg).await.is_err());
        db.close().await;
    }

    async fn start_is_refused_when_an_applied_migration_was_edited(backend) {
        let Some(tdb) = TestDb::create(backend).await else { return };
        let db = open(&tdb).await;
        migrate::migrate(&db, &app().specs().unwrap()).await.unwrap();
        with_db!(&db, pool => sqlx::query("UPDATE hearth_migration SET checksum = $1 WHERE module = $2")
            .bind("0000").bind("probe").execute(pool).await.map(|_| ())).unwrap();
        let err = TestApp::try_start(&app(), TestApp::config(&tdb)).await.err().expect("start must fail");
        assert!(err.to_string().contains("edited"), "{err}");
        db.close().await;
    }

    async fn readyz_is_503_while_migrations_are_pending(backend) {
        let Some(app_) = TestApp::spawn_with(&app(), backend, |c| c.db.migrate_on_serve = false).await else { return };
        let reason = not_ready_reason(&app_).await;
        assert!(reason.contains("probe/1_create_probe_item"), "{reason}");
        // Liveness is unaffected.
        let res = client().get(app_.url("/healthz")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        migrate::migrate(app_.state().db(), &app().specs().unwrap()).await.unwrap();
        let res = client().get(app_.url("/readyz")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }

    async fn readyz_is_503_when_the_database_is_unreachable(backend) {
        let Some(app_) = TestApp::spawn(&app(), backend).await else { return };
        app_.state().db().close().await;
        let reason = not_ready_reason(&app_).await;
        assert!(reason.contains("unreachable"), "{reason}");
        // A route that needs the database fails cleanly too, without internals.
        let res = client().get(app_.url("/probe/items")).send().await.unwrap();
        assert!(res.status().is_server_error());
        let v: serde_json::Value = res.json().await.unwrap();
        assert!(!v.to_string().contains("PoolClosed"), "{v}");
        let res = client().get(app_.url("/healthz")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }

    async fn concurrent_migrators_apply_each_migration_once(backend) {
        let Some(tdb) = TestDb::create(backend).await else { return };
        let (a, b, c) = (open(&tdb).await, open(&tdb).await, open(&tdb).await);
        let specs = app().specs().unwrap();
        let (ra, rb, rc) = tokio::join!(
            migrate::migrate(&a, &specs),
            migrate::migrate(&b, &specs),
            migrate::migrate(&c, &specs)
        );
        let applied: usize = [ra, rb, rc].into_iter().map(|r| r.unwrap().applied.len()).sum();
        let expected = specs.iter().map(|s| s.migrations_for(a.kind()).len()).sum::<usize>();
        assert_eq!(applied, expected);
        let n: i64 = with_db!(&a, pool => sqlx::query_scalar("SELECT count(*) FROM hearth_migration").fetch_one(pool).await).unwrap();
        assert_eq!(n, expected as i64);
        for db in [a, b, c] { db.close().await; }
    }

    async fn concurrent_read_then_write_transactions_never_fail_busy(backend) {
        let Some(app_) = TestApp::spawn(&app(), backend).await else { return };
        let db = app_.state().db().clone();
        let mut tasks = Vec::new();
        for i in 0..24_i64 {
            let db = db.clone();
            tasks.push(tokio::spawn(async move {
                let mut tx = db.begin().await?;
                // A read first, then a write: the pattern that fails with
                // SQLITE_BUSY under a deferred BEGIN.
                let n: i64 = hearth::with_tx!(&mut tx, t => sqlx::query_scalar("SELECT count(*) FROM probe_item").fetch_one(&mut **t).await)?;
                hearth::with_tx!(&mut tx, t => sqlx::query("INSERT INTO probe_item (name, weight, created_at) VALUES ($1, $2, $3)")
                    .bind(format!("w{i}")).bind(n).bind(0_i64).execute(&mut **t).await.map(|_| ()))?;
                tx.commit().await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let n: i64 = with_db!(&db, pool => sqlx::query_scalar("SELECT count(*) FROM probe_item").fetch_one(pool).await).unwrap();
        assert_eq!(n, 24);
    }

    async fn a_rolled_back_transaction_leaves_nothing(backend) {
        let Some(app_) = TestApp::spawn(&app(), backend).await else { return };
        let db = app_.state().db().clone();
        let mut tx = db.begin().await.unwrap();
        hearth::with_tx!(&mut tx, t => sqlx::query("INSERT INTO probe_item (name, weight, created_at) VALUES ($1, $2, $3)")
            .bind("gone").bind(1_i64).bind(0_i64).execute(&mut **t).await.map(|_| ())).unwrap();
        tx.rollback().await.unwrap();
        let n: i64 = with_db!(&db, pool => sqlx::query_scalar("SELECT count(*) FROM probe_item").fetch_one(pool).await).unwrap();
        assert_eq!(n, 0);
    }

    async fn parameters_are_bound_not_spliced(backend) {
        let Some(app_) = TestApp::spawn(&app(), backend).await else { return };
        let c = client();
        let nasty = "x'); DROP TABLE probe_item; --";
        let res = c.post(app_.url("/probe/items")).json(&serde_json::json!({"name": nasty, "weight": 1})).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let v: serde_json::Value = c.get(app_.url("/probe/items")).send().await.unwrap().json().await.unwrap();
        assert_eq!(v[0]["name"], nasty);
    }
}

/// On PostgreSQL a module's tables live in a schema of its own, hearth's in
/// the current one; module code still names them plainly. A database laid
/// out before modules had schemas is moved over by the next `migrate`,
/// rows, identity sequence and indexes included.
#[tokio::test]
async fn postgres_modules_live_in_their_own_schema_and_old_layouts_move_there() {
    let Some(pg) = TestDb::create(Backend::Postgres).await else {
        return;
    };
    let specs = app().specs().unwrap();
    let db = open(&pg).await;
    let report = migrate::migrate(&db, &specs).await.unwrap();
    assert!(report.moved.is_empty(), "{report:?}");
    let Db::Postgres(pool) = &db else {
        unreachable!()
    };
    let place = |t: &'static str| async move {
        sqlx::query_scalar::<_, String>(
            "SELECT schemaname::text FROM pg_tables WHERE tablename = $1",
        )
        .bind(t)
        .fetch_all(pool)
        .await
        .unwrap()
    };
    assert_eq!(place("probe_item").await, ["probe"]);
    assert_eq!(place("hearth_migration").await, ["public"]);
    // Plain names reach the module's table through the search path.
    sqlx::query("INSERT INTO probe_item (name, weight, created_at) VALUES ('a', 1, 0)")
        .execute(pool)
        .await
        .unwrap();

    // The layout an older hearth left: the module's table in `public`.
    sqlx::query("ALTER TABLE probe.probe_item SET SCHEMA public")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("DROP SCHEMA probe")
        .execute(pool)
        .await
        .unwrap();
    let report = migrate::migrate(&db, &specs).await.unwrap();
    assert_eq!(report.moved, ["probe.probe_item"]);
    assert!(report.applied.is_empty());
    assert_eq!(place("probe_item").await, ["probe"]);
    // Its rows, its unique index and its identity came along.
    sqlx::query("INSERT INTO probe_item (name, weight, created_at) VALUES ('b', 1, 0)")
        .execute(pool)
        .await
        .unwrap();
    let dup = sqlx::query("INSERT INTO probe_item (name, weight, created_at) VALUES ('a', 1, 0)")
        .execute(pool)
        .await;
    assert!(dup.is_err(), "the unique index moved with the table");
    let ids: Vec<(i64, String)> = sqlx::query_as("SELECT id, name FROM probe_item ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap();
    assert_eq!(ids, [(1, "a".to_owned()), (2, "b".to_owned())]);
    let seq: String = sqlx::query_scalar(
        "SELECT n.nspname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'S' AND c.relname LIKE 'probe_item%'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(seq, "probe");
    // A second run has nothing left to move.
    assert!(
        migrate::migrate(&db, &specs)
            .await
            .unwrap()
            .moved
            .is_empty()
    );
    db.close().await;
}

#[tokio::test]
async fn sqlite_and_postgres_end_with_the_same_tables_and_columns() {
    let Some(pg) = TestDb::create(Backend::Postgres).await else {
        return;
    };
    let lite = TestDb::create(Backend::Sqlite).await.unwrap();
    let specs = app().specs().unwrap();
    let (a, b) = (open(&lite).await, open(&pg).await);
    migrate::migrate(&a, &specs).await.unwrap();
    migrate::migrate(&b, &specs).await.unwrap();
    let (sa, sb) = (schema_of(&a).await.unwrap(), schema_of(&b).await.unwrap());
    assert!(
        sa.contains_key("probe_item") && sa.contains_key("hearth_migration"),
        "{sa:?}"
    );
    assert_eq!(sa, sb);
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn sqlite_is_opened_in_wal_mode_with_foreign_keys() {
    let tdb = TestDb::create(Backend::Sqlite).await.unwrap();
    let db = open(&tdb).await;
    let Db::Sqlite(pool, _) = &db else {
        panic!("not sqlite")
    };
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(fk, 1);
    let busy: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
        .fetch_one(pool)
        .await
        .unwrap();
    assert!(busy >= 1000, "{busy}");
    db.close().await;
}

#[tokio::test]
async fn sqlite_checkpoints_its_log_in_the_background() {
    let tdb = TestDb::create(Backend::Sqlite).await.unwrap();
    let db = open(&tdb).await;
    let Db::Sqlite(pool, _) = &db else {
        panic!("not sqlite")
    };
    // Commits no longer checkpoint on their own.
    let auto: i64 = sqlx::query_scalar("PRAGMA wal_autocheckpoint")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(auto, 0);
    let file = tdb.url().trim_start_matches("sqlite://").to_owned();
    sqlx::query("CREATE TABLE filler (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
        .execute(pool)
        .await
        .unwrap();
    let before = std::fs::metadata(&file).unwrap().len();
    // Many writers at once, each in its own transaction.
    let writers = (0..50).map(|i| {
        let db = db.clone();
        tokio::spawn(async move {
            let mut tx = db.begin().await.unwrap();
            hearth::with_tx!(&mut tx, conn => sqlx::query("INSERT INTO filler (body) VALUES ($1)")
                .bind(format!("{i}{}", "x".repeat(20_000)))
                .execute(&mut **conn)
                .await
                .map(|_| ()))
            .unwrap();
            tx.commit().await.unwrap();
        })
    });
    for w in writers {
        w.await.unwrap();
    }
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM filler")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(n, 50);
    // The rows reach the database file itself without any commit checkpointing.
    let mut grown = false;
    for _ in 0..100 {
        if std::fs::metadata(&file).unwrap().len() > before + 500_000 {
            grown = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        grown,
        "the background checkpoint never copied the log into {file}"
    );
    db.close().await;
}

#[tokio::test]
async fn unknown_database_schemes_are_named() {
    let cfg = hearth::Config {
        database_url: Some(hearth::config::Secret::new("mysql://root@localhost/app")),
        ..hearth::Config::default()
    };
    let err = app().open_db(&cfg).await.unwrap_err().to_string();
    assert!(
        err.contains("unsupported database URL scheme `mysql`"),
        "{err}"
    );
}

/// A TCP proxy in front of PostgreSQL that the test can cut, as if the
/// server stopped, and bring back on the same port.
struct Proxy {
    addr: std::net::SocketAddr,
    upstream: String,
    tasks: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let proxy = Proxy {
            addr,
            upstream,
            tasks: Default::default(),
        };
        proxy.serve(listener);
        proxy
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let (upstream, tasks) = (self.upstream.clone(), self.tasks.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let conn = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                tasks.lock().unwrap().push(conn.abort_handle());
            }
        });
        self.tasks.lock().unwrap().push(accept.abort_handle());
    }

    /// Drops every connection and stops listening.
    fn cut(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }

    /// Listens again on the same port.
    async fn restore(&self) {
        let listener = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }
}

async fn get(url: &str) -> (StatusCode, serde_json::Value) {
    let res = client().get(url).send().await.unwrap();
    let status = res.status();
    (status, res.json().await.unwrap_or_default())
}

/// PostgreSQL only: SQLite is a file in the process and cannot go away.
#[tokio::test]
async fn a_lost_postgres_is_a_503_that_fails_fast_until_it_is_back() {
    let Some(tdb) = TestDb::create(Backend::Postgres).await else {
        return;
    };
    let opts: sqlx::postgres::PgConnectOptions = tdb.url().parse().unwrap();
    let upstream = format!("{}:{}", opts.get_host(), opts.get_port());
    let proxy = Proxy::start(upstream.clone()).await;
    let mut config = TestApp::config(&tdb);
    let url = tdb.url().replacen(&upstream, &proxy.addr.to_string(), 1);
    config.database_url = Some(hearth::config::Secret::new(url));
    config.db.acquire_timeout = hearth::config::Duration::from_secs(3);
    let running = TestApp::try_start(&app(), config).await.unwrap();
    let base = format!("http://{}", running.local_addr().unwrap());
    let items = format!("{base}/probe/items");
    assert_eq!(get(&items).await.0, StatusCode::OK);

    proxy.cut();
    // The pooled connection was reset under the request: a 503 to retry,
    // never a 500.
    let (status, body) = get(&items).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let code = body["error"]["code"].as_str().unwrap().to_owned();
    assert!(
        code == "database_unavailable" || code == "database_busy",
        "{body}"
    );
    assert!(!body.to_string().contains("Io"), "no internals: {body}");
    let circuit = running.state().db_circuit().unwrap().clone();
    for _ in 0..200 {
        if circuit.is_open() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(circuit.is_open(), "the circuit did not open");
    // Known down: refused at once as unavailable (without the circuit the
    // pool would retry for the whole acquire timeout and say "busy").
    let (status, body) = get(&items).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Some("database_unavailable")
        ),
        "{body}"
    );
    assert_eq!(
        get(&format!("{base}/readyz")).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(get(&format!("{base}/healthz")).await.0, StatusCode::OK);

    proxy.restore().await;
    let mut back = false;
    for _ in 0..300 {
        if get(&items).await.0 == StatusCode::OK {
            back = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        back,
        "requests did not succeed again after the database came back"
    );
    assert!(!circuit.is_open());
    running.shutdown().await;
}
