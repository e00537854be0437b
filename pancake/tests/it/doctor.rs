//! `doctor` as an operator runs it, on SQLite and PostgreSQL: all clear on a
//! healthy install with a server running, and the right failure, with a
//! hint, when the database is down, a migration is pending, a job is dead or
//! a cron schedule is stale.

use std::process::Output;

use hearth::config::DbConfig;
use hearth::testing::{Backend, TestDb};
use hearth::{Db, sqlx, with_db};

use crate::cli::{run_with, serve, sigterm_and_wait, text};

/// Runs `doctor --json` and returns (exit code, status of each check by name).
fn doctor(
    tdb: &TestDb,
    env: &[(&str, &str)],
    extra: &[&str],
) -> (Option<i32>, serde_json::Value, Output) {
    let mut args = vec!["doctor", "--json"];
    args.extend_from_slice(extra);
    let out = run_with(tdb, &args, "", env);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor --json printed no JSON ({e}): {}{}",
            text(&out.stdout),
            text(&out.stderr)
        )
    });
    (out.status.code(), json, out)
}

fn status<'a>(report: &'a serde_json::Value, name: &str) -> (&'a str, &'a str, &'a str) {
    let c = report
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {report}"));
    (
        c["status"].as_str().unwrap(),
        c["value"].as_str().unwrap_or(""),
        c["hint"].as_str().unwrap_or(""),
    )
}

async fn sql(tdb: &TestDb, statement: &str) {
    let db = Db::connect(tdb.url(), &DbConfig::default()).await.unwrap();
    with_db!(&db, pool => sqlx::query(sqlx::AssertSqlSafe(statement.to_owned())).execute(pool).await.map(|_| ()).unwrap());
    db.close().await;
}

hearth::db_tests! {
    async fn self_test_passes_from_the_binary_and_leaves_live_data_alone(backend) {
        let Some(tdb) = TestDb::create(backend).await else { return };
        assert!(run_with(&tdb, &["migrate"], "", &[]).status.success());
        let out = run_with(&tdb, &["self-test"], "", &[]);
        let printed = text(&out.stdout);
        assert!(out.status.success(), "{printed}{}", text(&out.stderr));
        for line in ["hearth: accounts", "hearth: jobs", "hearth: metrics",
            "status: status API reads the database", "home: home page and assets are served"] {
            assert!(printed.lines().any(|l| l.starts_with("ok") && l.contains(line)), "{line}: {printed}");
        }
        assert!(printed.contains(" passed, 0 failed"), "{printed}");
        let out = run_with(&tdb, &["self-test", "--json"], "", &[]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["database"], if tdb.url().starts_with("postgres") { "postgres" } else { "sqlite" });
        assert!(report["checks"].as_array().unwrap().iter().all(|c| c["ok"] == true), "{report:#}");
        // Nothing it did reached the live database.
        let db = Db::connect(tdb.url(), &DbConfig::default()).await.unwrap();
        let users: i64 = with_db!(&db, pool => sqlx::query_scalar("SELECT count(*) FROM hearth_user").fetch_one(pool).await).unwrap();
        assert_eq!(users, 0);
        db.close().await;
        // A bad argument is a usage error.
        let out = run_with(&tdb, &["self-test", "--admin-url", "mysql://x"], "", &[]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        assert!(text(&out.stderr).contains("--admin-url must be a postgres:// URL"), "{}", text(&out.stderr));
    }

    async fn doctor_is_all_clear_on_a_healthy_install(backend) {
        let Some(tdb) = TestDb::create(backend).await else { return };
        assert!(run_with(&tdb, &["migrate"], "", &[]).status.success());
        let (server, base) = serve(&tdb, &[]).await;
        let addr = base.trim_start_matches("http://").to_owned();
        let (code, report, out) = doctor(&tdb, &[], &["--addr", &addr]);
        assert_eq!(code, Some(0), "{report:#}{}", text(&out.stderr));
        // `migrate` and `serve` made the data dir 0750 and the SQLite files
        // (with the -wal and -shm of the running server) 0600.
        for name in ["config", "data dir", "file modes", "database", "migrations", "queue", "workers", "cron", "server"] {
            assert_eq!(status(&report, name).0, "ok", "{name}: {report:#}");
        }
        assert!(status(&report, "database").1.contains(if backend == Backend::Sqlite { "SQLite" } else { "PostgreSQL" }));
        assert!(status(&report, "database").1.contains("round trip"));
        if backend == Backend::Sqlite {
            assert_eq!(status(&report, "sqlite integrity").0, "ok");
            assert_eq!(status(&report, "sqlite journal").0, "ok");
        } else {
            assert_eq!(status(&report, "postgres connections").0, "ok");
            assert_eq!(status(&report, "clock").0, "ok");
        }
        assert_eq!(status(&report, "tls").0, "skip");
        assert_eq!(status(&report, "smtp").0, "skip");
        // The plain report says the same for people.
        let out = run_with(&tdb, &["doctor", "--addr", &addr], "", &[]);
        assert!(out.status.success());
        assert!(text(&out.stdout).contains("0 failure(s)"), "{}", text(&out.stdout));
        assert!(sigterm_and_wait(server).status.success());
        // With the server gone, that check is skipped, not failed.
        let (code, report, _) = doctor(&tdb, &[], &["--addr", &addr]);
        assert_eq!(code, Some(0));
        assert_eq!(status(&report, "server").0, "skip");
        // A world-readable file in the data dir is a warning that names it.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let secret = tdb.dir().join("data").join(hearth::auth::SECRET_FILE);
            std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
            let (code, report, _) = doctor(&tdb, &[], &[]);
            assert_eq!(code, Some(0), "a warning does not fail the report");
            let (s, value, hint) = status(&report, "file modes");
            assert_eq!(s, "warn", "{report:#}");
            assert!(value.contains("secret.key is 644") && hint.contains("chmod 600"), "{value} / {hint}");
        }
    }

    async fn doctor_names_what_is_broken(backend) {
        let Some(tdb) = TestDb::create(backend).await else { return };
        // The database is unreachable.
        let down = match backend {
            Backend::Sqlite => "sqlite:///proc/hearth-nowhere/x.db".to_owned(),
            Backend::Postgres => "postgres://postgres@127.0.0.1:1/nowhere".to_owned(),
        };
        let (code, report, _) = doctor(&tdb, &[("DATABASE_URL", &down), ("HEARTH_DB__ACQUIRE_TIMEOUT", "2s")], &[]);
        assert_eq!(code, Some(1));
        let (s, _, hint) = status(&report, "database");
        assert_eq!(s, "fail");
        assert!(hint.contains("DATABASE_URL"), "{hint}");
        assert_eq!(status(&report, "migrations").0, "skip");

        // Schedules are stored by a running server; then it stops.
        assert!(run_with(&tdb, &["migrate"], "", &[]).status.success());
        let (server, _) = serve(&tdb, &[]).await;
        assert!(sigterm_and_wait(server).status.success());

        // A dead job.
        sql(&tdb, "INSERT INTO hearth_job_dead (id, queue, name, payload, priority, run_at, attempts, max_attempts, timeout_ms, last_error, created_at, died_at) VALUES (999, 'default', 'home.publish', '{}', 0, 0, 5, 5, 60000, 'boom', 0, 0)").await;
        let (code, report, _) = doctor(&tdb, &[], &[]);
        assert_eq!(code, Some(1));
        let (s, value, hint) = status(&report, "queue");
        assert_eq!(s, "fail", "{report:#}");
        assert!(value.contains("1 dead") && hint.contains("jobs retry"), "{value} / {hint}");
        sql(&tdb, "DELETE FROM hearth_job_dead").await;

        // A stale schedule: its tick came a day ago and nobody fired it.
        let day_ago = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64 - 86_400_000;
        sql(&tdb, &format!("UPDATE hearth_cron SET next_at = {day_ago} WHERE name = 'hearth.housekeeping'")).await;
        let (code, report, _) = doctor(&tdb, &[], &[]);
        assert_eq!(code, Some(1));
        let (s, value, _) = status(&report, "cron");
        assert_eq!(s, "fail", "{report:#}");
        assert!(value.contains("stale: hearth.housekeeping"), "{value}");
        assert_eq!(status(&report, "queue").0, "ok");

        // A pending migration.
        sql(&tdb, "DELETE FROM hearth_migration WHERE module = 'home' AND version = 2").await;
        let (code, report, _) = doctor(&tdb, &[], &[]);
        assert_eq!(code, Some(1));
        let (s, value, hint) = status(&report, "migrations");
        assert_eq!(s, "fail");
        assert!(value.contains("pending") && hint.contains("migrate"), "{value} / {hint}");
        assert_eq!(status(&report, "queue").0, "skip");
    }
}
