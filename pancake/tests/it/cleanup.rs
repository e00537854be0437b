//! `cleanup` as an operator runs it: nothing without the explicit flag, then
//! the data dir (SQLite) or the app's own database and role (PostgreSQL);
//! never a superuser's.

use hearth::sqlx::{self, Connection};
use hearth::testing::{Backend, TestDb};

use crate::cli::{run_with, text};

const FLAG: &str = "--i-understand-this-deletes-everything";

fn admin_url() -> String {
    std::env::var("HEARTH_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

async fn admin() -> sqlx::PgConnection {
    sqlx::PgConnection::connect(&admin_url()).await.unwrap()
}

/// A role and a database it owns, as `setup` would make for an app.
async fn own_role_and_database() -> (String, String) {
    let name = format!("hearth_cleanup_{}", uuid_like());
    let mut a = admin().await;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE ROLE {name} LOGIN")))
        .execute(&mut a)
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE {name} OWNER {name}"
    )))
    .execute(&mut a)
    .await
    .unwrap();
    let base = admin_url();
    let host = base
        .split_once('@')
        .map_or("127.0.0.1:5432/postgres", |(_, h)| h);
    let host = host.split('/').next().unwrap();
    (name.clone(), format!("postgres://{name}@{host}/{name}"))
}

fn uuid_like() -> String {
    format!(
        "{:x}{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

async fn exists(kind: &str, name: &str) -> bool {
    let sql = match kind {
        "database" => "SELECT count(*) FROM pg_database WHERE datname = $1",
        _ => "SELECT count(*) FROM pg_roles WHERE rolname = $1",
    };
    let n: i64 = sqlx::query_scalar(sql)
        .bind(name)
        .fetch_one(&mut admin().await)
        .await
        .unwrap();
    n > 0
}

hearth::db_tests! {
    async fn cleanup_deletes_only_when_told_and_only_the_apps_own(backend) {
        let Some(tdb) = TestDb::create(backend).await else { return };
        let (name, url) = match backend {
            Backend::Sqlite => (String::new(), tdb.url().to_owned()),
            Backend::Postgres => own_role_and_database().await,
        };
        let env = [("DATABASE_URL", url.as_str())];
        let out = run_with(&tdb, &["migrate"], "", &env);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let data = tdb.dir().join("data");
        std::fs::create_dir_all(data.join("backups")).unwrap();
        // Without the flag: a usage error that lists what would go.
        let out = run_with(&tdb, &["cleanup"], "", &env);
        assert_eq!(out.status.code(), Some(2));
        let err = text(&out.stderr);
        assert!(err.contains(FLAG) && err.contains(&data.display().to_string()), "{err}");
        assert!(data.exists());
        if backend == Backend::Postgres {
            assert!(err.contains(&format!("PostgreSQL database {name}")), "{err}");
            // An app connected as a superuser is not the app's own role.
            let out = run_with(&tdb, &["cleanup", FLAG, "--admin-url", &admin_url()], "", &[]);
            assert_eq!(out.status.code(), Some(1));
            assert!(text(&out.stderr).contains("superuser"), "{}", text(&out.stderr));
            // Without an admin connection it cannot drop anything.
            let out = run_with(&tdb, &["cleanup", FLAG], "", &env);
            assert_eq!(out.status.code(), Some(1));
            assert!(text(&out.stderr).contains("--admin-url"), "{}", text(&out.stderr));
            assert!(exists("database", &name).await && exists("role", &name).await);
        }
        let out = run_with(&tdb, &["cleanup", FLAG, "--admin-url", &admin_url()], "", &env);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(text(&out.stdout).contains("removed"), "{}", text(&out.stdout));
        assert!(!data.exists(), "the data dir is gone");
        if backend == Backend::Postgres {
            assert!(!exists("database", &name).await, "database dropped");
            assert!(!exists("role", &name).await, "role dropped");
        }
        // Again: nothing is left to remove.
        let out = run_with(&tdb, &["cleanup", FLAG, "--admin-url", &admin_url()], "", &env);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
}
