//! The database: embedded SQLite by default, PostgreSQL when the URL says so.
//!
//! [`Db`] wraps one bounded pool of either engine. Code that must run on both
//! writes its SQL once with `$N` placeholders and dispatches with
//! [`with_db!`](crate::with_db) (or [`with_tx!`](crate::with_tx) inside a
//! transaction); each arm is type-checked against its own driver, so there is
//! no lossy "any" layer. Every query binds its values; none is built from input.
//!
//! SQLite is opened in WAL mode with foreign keys, a busy timeout and
//! `synchronous=NORMAL`, and its log is checkpointed by a background task rather
//! than inside commits; [`Db::begin`] starts writers with `BEGIN IMMEDIATE`,
//! so a transaction takes the write lock up front (waiting on the busy timeout)
//! instead of failing with `SQLITE_BUSY` when it upgrades from a read.

pub mod circuit;
pub mod config;
pub mod migrate;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, Postgres, Sqlite, SqlitePool, Transaction};

use crate::config::DbConfig;

/// Which engine a [`Db`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DbKind {
    /// Embedded SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// Errors from opening a database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL names a scheme hearth does not speak.
    #[error("unsupported database URL scheme `{0}`: use sqlite://PATH or postgres://USER@HOST/DB")]
    UnsupportedScheme(String),
    /// The URL has no scheme at all.
    #[error("database URL `{0}` has no scheme: use sqlite://PATH or postgres://USER@HOST/DB")]
    NoScheme(String),
    /// The URL is malformed for its engine.
    #[error("invalid database URL: {0}")]
    InvalidUrl(#[source] sqlx::Error),
    /// The data directory for the SQLite file could not be created.
    #[error("cannot create the directory {path} for the SQLite database: {source}")]
    CreateDir {
        /// The directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The SQLite file could not be created.
    #[error("cannot create the SQLite database file {path}: {source}")]
    CreateFile {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Connecting failed.
    #[error("cannot connect to the {kind:?} database: {source}")]
    Connect {
        /// Which engine.
        kind: DbKind,
        /// Why.
        source: sqlx::Error,
    },
}

impl DbKind {
    /// The engine a URL names, or a clear error for anything else.
    pub fn from_url(url: &str) -> Result<Self, DbError> {
        let Some((scheme, _)) = url.split_once(':') else {
            return Err(DbError::NoScheme(url.to_owned()));
        };
        match scheme {
            "sqlite" => Ok(Self::Sqlite),
            "postgres" | "postgresql" => Ok(Self::Postgres),
            other
                if other
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) =>
            {
                Err(DbError::UnsupportedScheme(other.to_owned()))
            }
            _ => Err(DbError::NoScheme(url.to_owned())),
        }
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// Where an app's modules keep their tables besides the main database:
/// what [`Db::connect_with`] needs so that module tables are found by their
/// plain (prefixed) names on either engine.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    /// PostgreSQL schemas appended to each connection's `search_path`.
    pub schemas: Vec<&'static str>,
    /// Modules that keep their data in an SQLite file of their own,
    /// attached to every connection under the module's name.
    pub files: Vec<&'static str>,
}

/// The SQLite file of a module that keeps its data apart, attached to
/// every connection of the pool under the module's name.
#[derive(Debug, Clone)]
pub struct ModuleFile {
    /// The module, which is also the schema the file is attached as.
    pub module: &'static str,
    /// The file, next to the main one; `None` when the main database is in
    /// memory (the module's is then in memory too).
    pub path: Option<PathBuf>,
    /// What `ATTACH` and a direct connection name: the path, or a memdb name.
    target: String,
    /// The busy timeout of direct connections.
    busy: Duration,
}

impl ModuleFile {
    fn new(
        module: &'static str,
        main: &Path,
        in_memory: bool,
        memory_id: &str,
        busy: Duration,
    ) -> Self {
        if in_memory {
            return Self {
                module,
                path: None,
                target: format!("/hearth-memory-{memory_id}-{module}"),
                busy,
            };
        }
        let path = module_file_path(main, module);
        Self {
            module,
            target: path.to_string_lossy().into_owned(),
            path: Some(path),
            busy,
        }
    }

    /// The file's path, or what it is when it has none, for messages.
    pub fn describe(&self) -> String {
        match &self.path {
            Some(p) => p.display().to_string(),
            None => format!("the in-memory database of module `{}`", self.module),
        }
    }

    /// What `ATTACH DATABASE` takes: a path, or a URI on the memdb VFS
    /// (connections are opened with URI names allowed).
    fn attach_name(&self) -> String {
        match self.path {
            Some(_) => self.target.clone(),
            None => format!("file:{}?vfs=memdb", self.target),
        }
    }

    /// Options for a connection whose main database is this file (the
    /// migrator's, and backups' reads).
    pub(crate) fn connect_options(&self) -> SqliteConnectOptions {
        let opts = SqliteConnectOptions::new()
            .filename(&self.target)
            .create_if_missing(true)
            .foreign_keys(true)
            .busy_timeout(self.busy);
        match self.path {
            Some(_) => opts
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal),
            None => opts.vfs("memdb"),
        }
    }
}

/// A bounded connection pool to the app's database.
#[derive(Debug, Clone)]
pub enum Db {
    /// SQLite pool, and its background tasks.
    Sqlite(SqlitePool, SqliteTasks),
    /// PostgreSQL pool.
    Postgres(PgPool),
}

/// What an SQLite [`Db`] keeps besides its pool: the background checkpointer
/// (see `checkpointer`), which stops when the last clone of the `Db` is gone,
/// and the write gate.
#[derive(Debug, Clone)]
pub struct SqliteTasks {
    _stop: Arc<tokio_util::sync::DropGuard>,
    /// One write transaction at a time in this process, in arrival order.
    /// SQLite allows one writer anyway; without the gate, writers that find
    /// the lock taken sleep in SQLite's busy handler (1, 2, 5 … up to 100 ms
    /// at a time) and are not woken when it is released, which is what made
    /// the tail of event latency hundreds of ms long. Queued here, the next
    /// writer starts as soon as the previous one ends.
    gate: Arc<tokio::sync::Semaphore>,
    /// How long to wait at the gate before going on without it (the busy
    /// timeout): a task that begins a second transaction while holding one
    /// then fails as it did before, instead of waiting forever.
    gate_wait: Duration,
    /// The modules' own files, attached to every connection.
    files: Arc<[ModuleFile]>,
}

/// How often the background checkpointer copies SQLite's write-ahead log
/// into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);
/// Frames left in the log after a passive checkpoint beyond which the next one
/// waits for readers and writers to let it finish (about 80 MB of 4 KiB pages).
const WAL_FRAMES_MAX: i64 = 20_000;

/// Checkpoints the write-ahead log of an SQLite pool until every [`Db`]
/// holding it is gone (`stop` fires) or the pool is closed.
///
/// SQLite's automatic checkpoint runs inside whichever commit crosses 1000
/// log pages and syncs the database file there: a stall of several
/// milliseconds in a random writer, which showed as the whole p99 of the job
/// queue's enqueue→start latency. Connections therefore turn it off and this
/// task checkpoints instead. A passive checkpoint waits for nobody; if the log
/// keeps growing regardless, a restarting one makes room.
async fn checkpointer(pool: SqlitePool, stop: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => break,
        }
        if pool.is_closed() {
            break;
        }
        let passive: Result<(i64, i64, i64), _> = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(&pool)
            .await;
        match passive {
            Ok((_, log, done)) if log - done > WAL_FRAMES_MAX => {
                tracing::info!(
                    frames = log - done,
                    "the write-ahead log keeps growing; checkpointing with a restart"
                );
                if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(RESTART)")
                    .execute(&pool)
                    .await
                {
                    tracing::warn!(error = %e, "SQLite checkpoint failed");
                }
            }
            Ok(_) => {}
            // Closed while checkpointing, or a passing error: try again next tick.
            Err(e) => tracing::debug!(error = %e, "SQLite checkpoint failed"),
        }
    }
    // This clone must not keep the pool open after its owners closed or dropped it.
    pool.close().await;
}

/// A write transaction on either engine; see [`with_tx!`](crate::with_tx).
///
/// Besides the connection it carries actions to run after a successful
/// commit ([`Tx::after_commit`]): the job queue and pub/sub use them to wake
/// in-process listeners only once the rows they announce are visible.
pub struct Tx {
    conn: TxConn,
    after_commit: Vec<Box<dyn FnOnce() + Send>>,
    /// What was already done once in this transaction (see [`Tx::first_time`]).
    marks: Vec<&'static str>,
    /// SQLite's write gate, held until the transaction ends.
    _gate: Option<tokio::sync::OwnedSemaphorePermit>,
    /// The modules whose SQLite files are attached to this connection.
    files: Arc<[ModuleFile]>,
}

/// The engine-specific connection inside a [`Tx`].
#[derive(Debug)]
pub enum TxConn {
    /// SQLite, begun with `BEGIN IMMEDIATE`.
    Sqlite(Transaction<'static, Sqlite>),
    /// PostgreSQL.
    Postgres(Transaction<'static, Postgres>),
}

impl std::fmt::Debug for Tx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tx")
            .field("conn", &self.conn)
            .field("after_commit", &self.after_commit.len())
            .finish()
    }
}

impl Db {
    /// Opens a pool for `url` with the limits in `cfg`. For SQLite the file and
    /// its directory are created on first use.
    pub async fn connect(url: &str, cfg: &DbConfig) -> Result<Self, DbError> {
        Self::connect_with(url, cfg, &Layout::default()).await
    }

    /// [`connect`](Self::connect), finding module tables where `layout`
    /// says they are, by their plain (prefixed) names on either engine:
    ///
    /// * PostgreSQL: the modules' schemas are appended to each connection's
    ///   `search_path`; whatever path the role, the database or the URL set
    ///   stays in front.
    /// * SQLite: each module that keeps a file of its own has it attached
    ///   to every connection under its name. The file sits next to the main
    ///   one (`app.db` → `app.<module>.db`), and is created owner-only.
    ///   Unqualified names that are not in the main file are looked up in
    ///   the attached ones, so module code reads the same either way.
    pub async fn connect_with(url: &str, cfg: &DbConfig, layout: &Layout) -> Result<Self, DbError> {
        let schemas = &layout.schemas;
        match DbKind::from_url(url)? {
            DbKind::Sqlite => {
                let opts = SqliteConnectOptions::from_str(url)
                    .map_err(DbError::InvalidUrl)?
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .foreign_keys(true)
                    .busy_timeout(cfg.busy_timeout.get())
                    // Checkpoints run in the background instead (see `checkpointer`).
                    .pragma("wal_autocheckpoint", "0");
                // An in-memory database (`sqlite::memory:`, one with
                // `mode=memory`, or one on the memdb VFS) has no file to
                // prepare, and lives as long as one connection to it is open.
                let in_memory = url.contains(":memory:")
                    || url.contains("mode=memory")
                    || url.contains("vfs=memdb");
                let file = opts.get_filename();
                if !in_memory
                    && let Some(dir) = file.parent()
                    && !dir.as_os_str().is_empty()
                {
                    crate::private_fs::create_dir(dir).map_err(|source| DbError::CreateDir {
                        path: dir.display().to_string(),
                        source,
                    })?;
                }
                // Created here, owner-only, rather than by SQLite under the
                // umask; SQLite gives the -wal and -shm files the same mode.
                if !in_memory && !file.as_os_str().is_empty() {
                    crate::private_fs::create_file(file).map_err(|source| DbError::CreateFile {
                        path: file.display().to_string(),
                        source,
                    })?;
                }
                let memory_id = uuid::Uuid::new_v4().simple().to_string();
                let files: Arc<[ModuleFile]> = layout
                    .files
                    .iter()
                    .map(|m| {
                        ModuleFile::new(m, file, in_memory, &memory_id, cfg.busy_timeout.get())
                    })
                    .collect();
                for f in files.iter() {
                    if let Some(path) = &f.path {
                        crate::private_fs::create_file(path).map_err(|source| {
                            DbError::CreateFile {
                                path: path.display().to_string(),
                                source,
                            }
                        })?;
                    }
                }
                let mut pool_opts = SqlitePoolOptions::new()
                    .max_connections(cfg.pool_size(DbKind::Sqlite))
                    .acquire_timeout(cfg.acquire_timeout.get());
                if !files.is_empty() {
                    let files = files.clone();
                    pool_opts = pool_opts.after_connect(move |conn, _| {
                        let files = files.clone();
                        Box::pin(async move {
                            for f in files.iter() {
                                attach(conn, f).await?;
                            }
                            Ok(())
                        })
                    });
                }
                if in_memory {
                    // Never let the last connection go: the data would go with it.
                    pool_opts = pool_opts
                        .min_connections(1)
                        .idle_timeout(None)
                        .max_lifetime(None);
                }
                let pool =
                    pool_opts
                        .connect_with(opts)
                        .await
                        .map_err(|source| DbError::Connect {
                            kind: DbKind::Sqlite,
                            source,
                        })?;
                let stop = tokio_util::sync::CancellationToken::new();
                tokio::spawn(checkpointer(pool.clone(), stop.clone()));
                Ok(Self::Sqlite(
                    pool,
                    SqliteTasks {
                        _stop: Arc::new(stop.drop_guard()),
                        gate: Arc::new(tokio::sync::Semaphore::new(1)),
                        gate_wait: cfg.busy_timeout.get(),
                        files,
                    },
                ))
            }
            DbKind::Postgres => {
                let timeout_ms = cfg.statement_timeout.get().as_millis().to_string();
                let opts = PgConnectOptions::from_str(url)
                    .map_err(DbError::InvalidUrl)?
                    .application_name("hearth")
                    .options([("statement_timeout", timeout_ms.as_str())]);
                let mut pool_opts = PgPoolOptions::new()
                    .max_connections(cfg.pool_size(DbKind::Postgres))
                    .acquire_timeout(cfg.acquire_timeout.get());
                if !schemas.is_empty() {
                    let path: Arc<str> = schemas
                        .iter()
                        .map(|s| quote_ident(s))
                        .collect::<Vec<_>>()
                        .join(", ")
                        .into();
                    pool_opts = pool_opts.after_connect(move |conn, _| {
                        let path = path.clone();
                        Box::pin(async move {
                            sqlx::query(
                                "SELECT set_config('search_path', CASE WHEN current_setting('search_path') = '' THEN $1 ELSE current_setting('search_path') || ', ' || $1 END, false)",
                            )
                            .bind(&*path)
                            .execute(conn)
                            .await
                            .map(|_| ())
                        })
                    });
                }
                let pool =
                    pool_opts
                        .connect_with(opts)
                        .await
                        .map_err(|source| DbError::Connect {
                            kind: DbKind::Postgres,
                            source,
                        })?;
                Ok(Self::Postgres(pool))
            }
        }
    }

    /// Which engine this is.
    pub fn kind(&self) -> DbKind {
        match self {
            Self::Sqlite(..) => DbKind::Sqlite,
            Self::Postgres(_) => DbKind::Postgres,
        }
    }

    /// The SQLite files of modules that keep their data apart (none on
    /// PostgreSQL, where every module has a schema anyway).
    pub fn module_files(&self) -> &[ModuleFile] {
        match self {
            Self::Sqlite(_, tasks) => &tasks.files,
            Self::Postgres(_) => &[],
        }
    }

    /// The schema a module's own file is attached as, when it has one.
    pub(crate) fn file_of(&self, module: &str) -> Option<&'static str> {
        file_of(self.module_files(), module)
    }

    /// Starts a write transaction (`BEGIN IMMEDIATE` on SQLite).
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        let files = match self {
            Self::Sqlite(_, tasks) => tasks.files.clone(),
            Self::Postgres(_) => Arc::from(Vec::new()),
        };
        let (conn, gate) = match self {
            Self::Sqlite(p, tasks) => {
                let permit =
                    tokio::time::timeout(tasks.gate_wait, tasks.gate.clone().acquire_owned())
                        .await
                        .ok()
                        .and_then(Result::ok);
                (
                    TxConn::Sqlite(p.begin_with("BEGIN IMMEDIATE").await?),
                    permit,
                )
            }
            Self::Postgres(p) => (TxConn::Postgres(p.begin().await?), None),
        };
        Ok(Tx {
            conn,
            _gate: gate,
            files,
            after_commit: Vec::new(),
            marks: Vec::new(),
        })
    }

    /// One round trip to the database.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        crate::with_db!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()))
    }

    /// Closes the pool, waiting for connections to be returned.
    pub async fn close(&self) {
        match self {
            Self::Sqlite(p, _) => p.close().await,
            Self::Postgres(p) => p.close().await,
        }
    }
}

impl Tx {
    /// Commits, then runs the after-commit actions in the order they were added.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self.conn {
            TxConn::Sqlite(t) => t.commit().await?,
            TxConn::Postgres(t) => t.commit().await?,
        }
        for action in self.after_commit {
            action();
        }
        Ok(())
    }

    /// Rolls back and drops the after-commit actions (dropping a `Tx` does the same).
    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        match self.conn {
            TxConn::Sqlite(t) => t.rollback().await,
            TxConn::Postgres(t) => t.rollback().await,
        }
    }

    /// Which engine this is.
    pub fn kind(&self) -> DbKind {
        match self.conn {
            TxConn::Sqlite(_) => DbKind::Sqlite,
            TxConn::Postgres(_) => DbKind::Postgres,
        }
    }

    /// The schema a module's own SQLite file is attached as, when it has one.
    pub(crate) fn file_of(&self, module: &str) -> Option<&'static str> {
        file_of(&self.files, module)
    }

    /// The engine-specific connection; [`with_tx!`](crate::with_tx) matches on it.
    pub fn conn_mut(&mut self) -> &mut TxConn {
        &mut self.conn
    }

    /// True the first time it is called with `mark` in this transaction:
    /// for work needed once per transaction however often it is asked for
    /// (a NOTIFY, which PostgreSQL sends once at commit anyway).
    pub(crate) fn first_time(&mut self, mark: &'static str) -> bool {
        if self.marks.contains(&mark) {
            return false;
        }
        self.marks.push(mark);
        true
    }

    /// Runs `action` after this transaction commits; never if it rolls back.
    pub fn after_commit(&mut self, action: impl FnOnce() + Send + 'static) {
        self.after_commit.push(Box::new(action));
    }
}

/// Where `module` keeps its own SQLite file when the main one is `main`:
/// beside it, `pancake.db` → `pancake.likes.db`.
pub fn module_file_path(main: &Path, module: &str) -> PathBuf {
    let stem = main
        .file_stem()
        .map_or_else(|| "database".into(), |s| s.to_string_lossy().into_owned());
    let name = match main.extension() {
        Some(ext) => format!("{stem}.{module}.{}", ext.to_string_lossy()),
        None => format!("{stem}.{module}"),
    };
    main.with_file_name(name)
}

fn file_of(files: &[ModuleFile], module: &str) -> Option<&'static str> {
    files.iter().find(|f| f.module == module).map(|f| f.module)
}

/// Attaches a module's file to a new connection, in WAL mode like the main
/// one. A transaction that writes two files commits each on its own (WAL
/// has no cross-file journal), which is why a module with a file of its own
/// keeps its event cursor and its outbox in that file too (see `events`).
async fn attach(conn: &mut sqlx::SqliteConnection, f: &ModuleFile) -> Result<(), sqlx::Error> {
    let schema = quote_ident(f.module);
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ATTACH DATABASE $1 AS {schema}"
    )))
    .bind(f.attach_name())
    .execute(&mut *conn)
    .await?;
    if f.path.is_some() {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "PRAGMA {schema}.journal_mode = WAL"
        )))
        .execute(&mut *conn)
        .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "PRAGMA {schema}.synchronous = NORMAL"
        )))
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// `"name"` with inner quotes doubled, for identifiers that come from the
/// catalog or from module specs: they are still never pasted in unquoted.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Runs one expression against whichever pool a [`Db`] holds.
///
/// The expression is compiled once per engine, so each arm is checked against
/// its own driver's types; both arms must produce the same type (map driver
/// results such as `execute`'s to `()` or `rows_affected()`):
///
/// ```no_run
/// # async fn count(db: &hearth::Db) -> Result<i64, hearth::sqlx::Error> {
/// use hearth::{sqlx, with_db};
/// let n: i64 = with_db!(db, pool => sqlx::query_scalar("SELECT count(*) FROM t").fetch_one(pool).await)?;
/// # Ok(n)
/// # }
/// ```
#[macro_export]
macro_rules! with_db {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::db::Db::Sqlite($pool, ..) => $body,
            $crate::db::Db::Postgres($pool) => $body,
        }
    };
}

/// Runs one expression against the connection of a [`Tx`] (given as `&mut tx`
/// or as a `&mut Tx`); `$conn` is a `&mut` transaction usable as an executor
/// (`&mut **conn`).
#[macro_export]
macro_rules! with_tx {
    ($tx:expr, $conn:ident => $body:expr) => {
        match $crate::db::Tx::conn_mut($tx) {
            $crate::db::TxConn::Sqlite($conn) => $body,
            $crate::db::TxConn::Postgres($conn) => $body,
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_schemes_are_recognised_or_named() {
        assert_eq!(
            DbKind::from_url("sqlite://data/a.db").ok(),
            Some(DbKind::Sqlite)
        );
        assert_eq!(
            DbKind::from_url("sqlite::memory:").ok(),
            Some(DbKind::Sqlite)
        );
        assert_eq!(
            DbKind::from_url("postgres://u@h/db").ok(),
            Some(DbKind::Postgres)
        );
        assert_eq!(
            DbKind::from_url("postgresql://u@h/db").ok(),
            Some(DbKind::Postgres)
        );
        let err = DbKind::from_url("mysql://u@h/db").unwrap_err().to_string();
        assert!(
            err.contains("unsupported database URL scheme `mysql`"),
            "{err}"
        );
        let err = DbKind::from_url("data/app.db").unwrap_err().to_string();
        assert!(err.contains("has no scheme"), "{err}");
    }
}
