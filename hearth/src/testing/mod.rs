//! Test support: a fresh database per test on either engine, and the real app
//! served on a random port.
//!
//! [`TestApp::spawn`] starts the app through the same [`App::start`] that
//! `serve` uses, on a temporary SQLite file or on a newly created PostgreSQL
//! database that is dropped when the test ends. PostgreSQL comes from
//! `HEARTH_TEST_POSTGRES_URL`; when it is unset and no server answers on
//! 127.0.0.1:5432, PostgreSQL tests print that they are skipped and return.
//! [`db_tests!`](crate::db_tests) writes each test once and runs it on both.

mod smtp;

pub use smtp::{Received, SmtpSink};

use std::io::Write as _;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, ConnectOptions};

use crate::app::{App, Running, StartError};
use crate::config::{Config, Secret};
use crate::db::DbKind;
use crate::state::AppState;

/// The environment variable naming the PostgreSQL server for tests.
pub const POSTGRES_URL_VAR: &str = "HEARTH_TEST_POSTGRES_URL";
const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Which engine a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A temporary SQLite file.
    Sqlite,
    /// A fresh PostgreSQL database.
    Postgres,
}

impl Backend {
    /// The engine this backend runs on.
    pub fn kind(self) -> DbKind {
        match self {
            Backend::Sqlite => DbKind::Sqlite,
            Backend::Postgres => DbKind::Postgres,
        }
    }
}

/// A fresh, empty database that is removed when dropped.
pub struct TestDb {
    url: String,
    dir: tempfile::TempDir,
    // Held for its Drop, which removes the PostgreSQL database.
    _pg: Option<PgDatabase>,
}

struct PgDatabase {
    admin_url: String,
    name: String,
}

impl TestDb {
    /// Creates a database, or returns `None` (after saying so on stderr) when
    /// PostgreSQL is wanted but none is configured or reachable.
    pub async fn create(backend: Backend) -> Option<TestDb> {
        let dir = tempfile::Builder::new()
            .prefix("hearth-test-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temp dir: {e}"));
        match backend {
            Backend::Sqlite => {
                let url = format!("sqlite://{}/test.db", dir.path().display());
                Some(TestDb {
                    url,
                    dir,
                    _pg: None,
                })
            }
            Backend::Postgres => {
                let (admin_url, required) = match std::env::var(POSTGRES_URL_VAR) {
                    Ok(url) if !url.is_empty() => (url, true),
                    _ => (DEFAULT_POSTGRES_URL.to_owned(), false),
                };
                let opts = PgConnectOptions::from_str(&admin_url)
                    .unwrap_or_else(|e| panic!("{POSTGRES_URL_VAR} is not a valid URL: {e}"));
                let admin = match PgPoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(Duration::from_secs(5))
                    .connect_with(opts)
                    .await
                {
                    Ok(p) => p,
                    Err(e) if !required => {
                        skipped(&format!(
                            "no server at 127.0.0.1:5432 and {POSTGRES_URL_VAR} is unset ({e})"
                        ));
                        return None;
                    }
                    Err(e) => panic!("cannot reach PostgreSQL at {POSTGRES_URL_VAR}: {e}"),
                };
                let name = format!("hearth_test_{}", uuid::Uuid::new_v4().simple());
                // An identifier cannot be a bind parameter; `name` is generated above
                // from hex digits only.
                sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&admin)
                    .await
                    .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
                admin.close().await;
                let url = with_database(&admin_url, &name);
                Some(TestDb {
                    url,
                    dir,
                    _pg: Some(PgDatabase { admin_url, name }),
                })
            }
        }
    }

    /// A fresh SQLite database in memory, shared by the pool's connections
    /// and gone when the app stops: for fast unit tests of a module, with
    /// the same API as the other engines and no file at all.
    pub fn in_memory() -> TestDb {
        let dir = tempfile::Builder::new()
            .prefix("hearth-test-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temp dir: {e}"));
        // SQLite's memdb VFS, with a name starting with `/`, shares one
        // database among the pool's connections with the usual locking
        // (a busy writer waits) — unlike a shared-cache `:memory:`, whose
        // table locks fail at once.
        let url = format!(
            "sqlite:///hearth-memory-{}?vfs=memdb",
            uuid::Uuid::new_v4().simple()
        );
        TestDb {
            url,
            dir,
            _pg: None,
        }
    }

    /// The database URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A temporary directory that lives as long as the database.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

fn skipped(why: &str) {
    let thread = std::thread::current();
    let name = thread.name().unwrap_or("a test");
    // Written to stderr directly, not through eprintln!, so that the test
    // harness does not capture it: a skip must be visible.
    let _ = writeln!(std::io::stderr(), "SKIPPED PostgreSQL test {name}: {why}");
}

/// Replaces the database name in a PostgreSQL URL.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let authority_start = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[authority_start..].find('/') {
        Some(i) => &base[..authority_start + i],
        None => base,
    };
    format!("{base}/{name}{query}")
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = std::mem::take(&mut self.name);
        // Drop runs inside the test's runtime, which must not be blocked on;
        // a short-lived thread with its own runtime removes the database.
        let done = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let Ok(opts) = PgConnectOptions::from_str(&admin_url) else {
                    return;
                };
                let Ok(mut conn) = opts.connect().await else {
                    return;
                };
                let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                if let Err(e) = sqlx::query(AssertSqlSafe(sql)).execute(&mut conn).await {
                    let _ = writeln!(
                        std::io::stderr(),
                        "could not drop test database {name}: {e}"
                    );
                }
            });
        });
        let _ = done.join();
    }
}

/// The app running on a random port over a fresh database.
pub struct TestApp {
    // Field order matters: the server stops before its database is dropped.
    running: Running,
    addr: SocketAddr,
    base_url: String,
    db: TestDb,
}

impl TestApp {
    /// Starts `app` with test defaults on `backend`, or `None` when PostgreSQL is skipped.
    pub async fn spawn(app: &App, backend: Backend) -> Option<TestApp> {
        Self::spawn_with(app, backend, |_| {}).await
    }

    /// Like [`TestApp::spawn`], after letting `configure` change the config.
    pub async fn spawn_with(
        app: &App,
        backend: Backend,
        configure: impl FnOnce(&mut Config),
    ) -> Option<TestApp> {
        let db = TestDb::create(backend).await?;
        Some(Self::start_on(app, db, configure).await)
    }

    /// Starts `app` on `db` (from [`TestDb::create`] or
    /// [`TestDb::in_memory`]) with test defaults changed by `configure`.
    pub async fn start_on(app: &App, db: TestDb, configure: impl FnOnce(&mut Config)) -> TestApp {
        let mut config = Self::config(&db);
        configure(&mut config);
        let running = Self::try_start(app, config)
            .await
            .unwrap_or_else(|e| panic!("test app failed to start: {e}"));
        let scheme = if running.state().config().tls.cert.is_some() {
            "https"
        } else {
            "http"
        };
        let addr = running
            .local_addr()
            .unwrap_or_else(|| panic!("the test app was started without HTTP"));
        let base_url = format!("{scheme}://{addr}");
        TestApp {
            running,
            addr,
            base_url,
            db,
        }
    }

    /// The configuration tests start from: loopback on port 0, the test
    /// database, a data dir inside the test's temp dir, and cheap argon2
    /// parameters (64 KiB, one pass) so that tests which sign in many times
    /// stay fast; a test of the real cost sets them back.
    pub fn config(db: &TestDb) -> Config {
        let mut config = Config {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: db.dir().join("data"),
            database_url: Some(Secret::new(db.url())),
            log: "warn".into(),
            ..Config::default()
        };
        config.auth.argon2 = crate::auth::Argon2Config {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        };
        config
    }

    /// Starts an app and returns the error instead of panicking, for tests of start-up failures.
    pub async fn try_start(app: &App, config: Config) -> Result<Running, StartError> {
        crate::telemetry::init_for_tests(&config);
        app.start(config).await
    }

    /// `http://127.0.0.1:PORT` (or `https://` with TLS).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The full URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    /// The socket address the app listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Runs every due job now in the calling task (see `Running::drain_jobs`).
    pub(crate) async fn drain_jobs(&self, limit: usize) -> Result<usize, sqlx::Error> {
        self.running.drain_jobs(limit).await
    }

    /// The app's state (database, config).
    pub fn state(&self) -> &AppState {
        self.running.state()
    }

    /// The test database.
    pub fn db(&self) -> &TestDb {
        &self.db
    }

    /// Runs every module's reset hook.
    pub async fn reset(&self) -> anyhow::Result<()> {
        self.running.reset().await
    }

    /// Stops the server gracefully and drops the database.
    pub async fn stop(self) {
        let TestApp { running, db, .. } = self;
        running.shutdown().await;
        drop(db);
    }
}

/// Writes each test once and runs it on SQLite and on PostgreSQL, as
/// `name::sqlite` and `name::postgres`. The body sees the backend as the
/// named variable:
///
/// ```no_run
/// use hearth::testing::TestApp;
///
/// fn my_app() -> hearth::App {
///     hearth::App::new("demo", "0.1.0")
/// }
///
/// hearth::db_tests! {
///     async fn health_answers(backend) {
///         let Some(app) = TestApp::spawn(&my_app(), backend).await else { return };
///         let _url = app.url("/healthz");
///     }
/// }
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! db_tests {
    ($( $(#[$meta:meta])* async fn $name:ident($backend:ident) $body:block )*) => {
        $(
            $(#[$meta])*
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                #[tokio::test]
                async fn sqlite() {
                    let $backend = $crate::testing::Backend::Sqlite;
                    $body
                }

                #[tokio::test]
                async fn postgres() {
                    let $backend = $crate::testing::Backend::Postgres;
                    $body
                }
            }
        )*
    };
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn database_name_is_replaced_in_urls() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "t1"),
            "postgres://postgres@127.0.0.1:5432/t1"
        );
        assert_eq!(
            with_database("postgres://u:p@h/db?sslmode=disable", "t1"),
            "postgres://u:p@h/t1?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "t1"), "postgres://h/t1");
    }
}

/// One column as [`schema_of`] describes it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Column {
    /// Column name.
    pub name: String,
    /// Engine-neutral type class: `integer`, `text`, `blob`, `real`, `boolean`, or the raw type.
    pub class: String,
    /// Whether NULL is refused (primary keys count as NOT NULL on both engines).
    pub not_null: bool,
}

/// The tables and columns of a database in engine-neutral terms, so the
/// SQLite and PostgreSQL migrations of every module can be compared. On
/// PostgreSQL every schema counts (the home schema and the modules'), but
/// not the catalogs or what a restore set aside.
pub async fn schema_of(
    db: &crate::Db,
) -> Result<std::collections::BTreeMap<String, Vec<Column>>, sqlx::Error> {
    let rows: Vec<(String, String, String, bool)> = match db {
        crate::Db::Sqlite(p, _) => {
            let mut rows = Vec::new();
            // The main file, then each module's own file; hearth's tables
            // in those (its cursor, holds, outbox and ledger) are its
            // bookkeeping there, not part of the module's schema.
            for schema in std::iter::once("main").chain(db.module_files().iter().map(|f| f.module))
            {
                let own = if schema == "main" {
                    ""
                } else {
                    "AND m.name NOT LIKE 'hearth%'"
                };
                let sql = format!(
                    "SELECT m.name, c.name, c.type, c.\"notnull\", c.pk
                     FROM {}.sqlite_master m JOIN pragma_table_info(m.name, $1) c
                     WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' {own}",
                    crate::db::quote_ident(schema)
                );
                rows.extend(
                    sqlx::query_as::<_, (String, String, String, i64, i64)>(AssertSqlSafe(sql))
                        .bind(schema)
                        .fetch_all(p)
                        .await?
                        .into_iter()
                        .map(|(t, c, ty, nn, pk)| (t, c, ty, nn != 0 || pk != 0)),
                );
            }
            rows
        }
        crate::Db::Postgres(p) => sqlx::query_as::<_, (String, String, String, String)>(
            "SELECT table_name::text, column_name::text, data_type::text, is_nullable::text
             FROM information_schema.columns
             WHERE table_schema NOT LIKE 'pg\\_%' AND table_schema <> 'information_schema'
               AND table_schema NOT LIKE 'hearth\\_pre\\_restore\\_%'",
        )
        .fetch_all(p)
        .await?
        .into_iter()
        .map(|(t, c, ty, nullable)| (t, c, ty, nullable == "NO"))
        .collect(),
    };
    let mut out: std::collections::BTreeMap<String, Vec<Column>> = Default::default();
    for (table, name, ty, not_null) in rows {
        out.entry(table).or_default().push(Column {
            name,
            class: type_class(&ty),
            not_null,
        });
    }
    for cols in out.values_mut() {
        cols.sort();
    }
    Ok(out)
}

fn type_class(ty: &str) -> String {
    let t = ty.to_ascii_lowercase();
    let class = if t.contains("int") {
        "integer"
    } else if t.contains("char") || t.contains("text") || t.contains("clob") || t == "uuid" {
        "text"
    } else if t.contains("blob") || t.contains("bytea") {
        "blob"
    } else if t.contains("real")
        || t.contains("floa")
        || t.contains("doub")
        || t.contains("numeric")
    {
        "real"
    } else if t.contains("bool") {
        "boolean"
    } else {
        return t;
    };
    class.to_owned()
}

/// What breaks storage isolation in an app's sources: for each module, the
/// Rust files under `src/<module>/` (or `src/<module>.rs`) that name
/// another module's tables, one line each. Empty when every module keeps
/// to its own tables. Migrations are checked when the app starts (a module
/// whose migrations reach outside its namespace is refused); this covers
/// the queries in the code.
pub fn storage_problems(app: &App, src: &std::path::Path) -> Vec<String> {
    let specs = match app.specs() {
        Ok(s) => s,
        Err(e) => return vec![e.to_string()],
    };
    let tables = crate::module::namespace::tables(&specs);
    let mut problems = Vec::new();
    for spec in specs.iter().skip(1) {
        let mut files = Vec::new();
        let single = src.join(format!("{}.rs", spec.name()));
        if single.is_file() {
            files.push(single);
        }
        collect_rs(&src.join(spec.name()), &mut files);
        for file in files {
            let Ok(text) = std::fs::read_to_string(&file) else {
                problems.push(format!("{}: cannot be read", file.display()));
                continue;
            };
            for (owner, table) in
                crate::module::namespace::foreign_tables(&tables, spec.name(), &text)
            {
                problems.push(format!(
                    "{}: module `{}` names `{table}`, a table of module `{owner}`",
                    file.display(),
                    spec.name()
                ));
            }
        }
    }
    problems
}

fn collect_rs(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect_rs(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}
