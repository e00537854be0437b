//! Per-module migrations, one list per engine, recorded in `hearth_migration`.
//!
//! Each module owns an ordered list of migrations for SQLite and the same
//! versions for PostgreSQL. [`migrate`] applies what is pending, one migration
//! per transaction, while holding the engine's write lock (`BEGIN IMMEDIATE` on
//! SQLite, a transaction-scoped advisory lock on PostgreSQL), so several nodes
//! starting at once apply each migration exactly once. A database that holds a
//! migration this binary does not know, or one whose text changed since it was
//! applied, is refused: running old code against a newer schema loses data.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use sqlx::Connection;

use crate::db::{Db, DbKind, ModuleFile, TxConn};
use crate::{with_db, with_tx};

/// One schema change of one module, for one engine.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// 1, 2, 3 … in the order they apply.
    pub version: i64,
    /// Short snake_case name, the same on both engines.
    pub name: &'static str,
    /// The SQL script; it may hold several statements.
    pub sql: &'static str,
}

impl Migration {
    /// Declares a migration, usually with `include_str!` for `sql`.
    pub const fn new(version: i64, name: &'static str, sql: &'static str) -> Self {
        Self { version, name, sql }
    }

    fn checksum(&self) -> String {
        let digest = Sha256::digest(self.sql.as_bytes());
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// A migration as recorded in the database.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AppliedMigration {
    /// Owning module.
    pub module: String,
    /// Version within the module.
    pub version: i64,
    /// Name at the time it was applied.
    pub name: String,
    /// SHA-256 of the SQL text that ran.
    pub checksum: String,
    /// Unix seconds.
    pub applied_at: i64,
}

/// Where a database stands relative to this binary's migrations.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct MigrationStatus {
    /// Recorded in the database.
    pub applied: Vec<AppliedMigration>,
    /// Known here, not yet applied, as `module/version_name`.
    pub pending: Vec<String>,
    /// In the database but unknown to this binary.
    pub unknown: Vec<String>,
    /// Applied with a different text than this binary has.
    pub changed: Vec<String>,
}

impl MigrationStatus {
    /// True when everything known is applied and nothing foreign is recorded.
    pub fn is_current(&self) -> bool {
        self.pending.is_empty() && self.unknown.is_empty() && self.changed.is_empty()
    }

    /// Highest applied version per module.
    pub fn levels(&self) -> BTreeMap<String, i64> {
        let mut out = BTreeMap::new();
        for m in &self.applied {
            let level = out.entry(m.module.clone()).or_insert(0);
            *level = (*level).max(m.version);
        }
        out
    }

    /// Why the database is not current, in one line, or `None` when it is.
    pub fn problem(&self) -> Option<String> {
        if !self.unknown.is_empty() {
            return Some(format!(
                "the database holds migrations this binary does not know: {} (is this binary older than the database?)",
                self.unknown.join(", ")
            ));
        }
        if !self.changed.is_empty() {
            return Some(format!(
                "applied migrations were edited afterwards: {}",
                self.changed.join(", ")
            ));
        }
        if !self.pending.is_empty() {
            return Some(format!(
                "migrations pending: {} (run `migrate`)",
                self.pending.join(", ")
            ));
        }
        None
    }
}

/// Why migrating failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The database is ahead of, or diverged from, this binary.
    #[error("refusing to migrate: {0}")]
    Refused(String),
    /// One migration's SQL failed; it was rolled back.
    #[error("migration {module}/{version}_{name} failed: {source}")]
    Failed {
        /// Module.
        module: String,
        /// Version.
        version: i64,
        /// Name.
        name: String,
        /// Cause.
        source: sqlx::Error,
    },
    /// The database could not be read or written.
    #[error("database error while migrating: {0}")]
    Db(#[from] sqlx::Error),
}

/// What [`migrate`] did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct MigrateReport {
    /// Applied now, as `module/version_name`.
    pub applied: Vec<String>,
    /// Relations moved from the current schema into their module's schema
    /// (PostgreSQL, once, after an upgrade), as `schema.relation`.
    pub moved: Vec<String>,
}

const BOOTSTRAP: &str = "CREATE TABLE IF NOT EXISTS hearth_migration (
    module TEXT NOT NULL,
    version BIGINT NOT NULL,
    name TEXT NOT NULL,
    checksum TEXT NOT NULL,
    applied_at BIGINT NOT NULL,
    PRIMARY KEY (module, version)
)";

/// Arbitrary constant that names hearth's migration lock among advisory locks.
const PG_LOCK_KEY: i64 = 0x6865_6172_7468_0001;

/// What hearth keeps in a module's own SQLite file beside its tables.
const MODULE_FILE_BASE: &str = include_str!("../../migrations/sqlite/module_file.sql");

#[derive(Clone)]
struct Planned {
    module: &'static str,
    schema: Option<&'static str>,
    migration: Migration,
    checksum: String,
}

impl Planned {
    fn label(&self) -> String {
        format!(
            "{}/{}_{}",
            self.module, self.migration.version, self.migration.name
        )
    }
}

/// One module's migrations for both engines, as the migrator reads them;
/// module specs implement it, so that the migrator need not know the
/// module layer above it.
pub trait Migrations {
    /// The module's name, which its applied migrations are recorded under.
    fn module(&self) -> &'static str;
    /// Its migrations for `kind`, in order.
    fn migrations_for(&self, kind: DbKind) -> &'static [Migration];
    /// The PostgreSQL schema its objects live in, or `None` for the
    /// database's current schema.
    fn schema(&self) -> Option<&'static str> {
        None
    }
    /// Whether it keeps its data in an SQLite file of its own, where its
    /// migrations run and are recorded.
    fn own_file(&self) -> bool {
        false
    }
    /// Whether its PostgreSQL migrations create the relation `name`: how
    /// the migrator recognises the module's tables left in the current
    /// schema by a hearth that did not yet give modules schemas of their own.
    fn creates(&self, name: &str) -> bool {
        let _ = name;
        false
    }
}

fn plan<M: Migrations>(kind: DbKind, modules: &[M]) -> Vec<Planned> {
    modules
        .iter()
        .flat_map(|spec| {
            spec.migrations_for(kind).iter().map(|m| Planned {
                module: spec.module(),
                schema: spec.schema(),
                migration: *m,
                checksum: m.checksum(),
            })
        })
        .collect()
}

fn compare(applied: Vec<AppliedMigration>, plan: &[Planned]) -> MigrationStatus {
    let mut status = MigrationStatus::default();
    for a in &applied {
        match plan
            .iter()
            .find(|p| p.module == a.module && p.migration.version == a.version)
        {
            None => status
                .unknown
                .push(format!("{}/{}_{}", a.module, a.version, a.name)),
            Some(p) if p.checksum != a.checksum => status.changed.push(p.label()),
            Some(_) => {}
        }
    }
    for p in plan {
        if !applied
            .iter()
            .any(|a| a.module == p.module && a.version == p.migration.version)
        {
            status.pending.push(p.label());
        }
    }
    status.applied = applied;
    status
}

/// Compares migrations recorded elsewhere (a backup's manifest) with what
/// this binary knows for `kind`, as [`status`] does for a live database.
pub fn compare_recorded<M: Migrations>(
    kind: DbKind,
    modules: &[M],
    recorded: Vec<AppliedMigration>,
) -> MigrationStatus {
    compare(recorded, &plan(kind, modules))
}

/// Reads where the database stands, without changing anything.
pub async fn status<M: Migrations>(db: &Db, modules: &[M]) -> Result<MigrationStatus, sqlx::Error> {
    let exists: bool = match db {
        Db::Sqlite(p, _) => sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'hearth_migration'",
        )
        .fetch_one(p)
        .await?
            > 0,
        Db::Postgres(p) => {
            sqlx::query_scalar::<_, bool>("SELECT to_regclass('hearth_migration') IS NOT NULL")
                .fetch_one(p)
                .await?
        }
    };
    let mut applied = if exists {
        with_db!(db, pool => sqlx::query_as::<_, (String, i64, String, String, i64)>(
            "SELECT module, version, name, checksum, applied_at FROM hearth_migration ORDER BY module, version",
        )
        .fetch_all(pool)
        .await?)
    } else {
        Vec::new()
    };
    if let Db::Sqlite(pool, _) = db {
        // Each module file records its own migrations.
        for f in db.module_files() {
            let schema = super::quote_ident(f.module);
            let has: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT count(*) FROM {schema}.sqlite_master WHERE type = 'table' AND name = 'hearth_migration'"
            )))
            .fetch_one(pool)
            .await?;
            if has > 0 {
                applied.extend(
                    sqlx::query_as::<_, (String, i64, String, String, i64)>(
                        sqlx::AssertSqlSafe(format!(
                            "SELECT module, version, name, checksum, applied_at FROM {schema}.hearth_migration ORDER BY module, version"
                        )),
                    )
                    .fetch_all(pool)
                    .await?,
                );
            }
        }
    }
    Ok(compare(to_applied(applied), &plan(db.kind(), modules)))
}

fn to_applied(rows: Vec<(String, i64, String, String, i64)>) -> Vec<AppliedMigration> {
    rows.into_iter()
        .map(
            |(module, version, name, checksum, applied_at)| AppliedMigration {
                module,
                version,
                name,
                checksum,
                applied_at,
            },
        )
        .collect()
}

/// Refuses to give `module` a file of its own when the main file already
/// records its migrations: its tables are there, and hearth does not move
/// tables between SQLite files.
async fn check_not_in_main(db: &Db, module: &str) -> Result<(), MigrateError> {
    let Db::Sqlite(pool, _) = db else {
        return Ok(());
    };
    let ledger: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM main.sqlite_master WHERE type = 'table' AND name = 'hearth_migration'",
    )
    .fetch_one(pool)
    .await?;
    if ledger == 0 {
        return Ok(());
    }
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM main.hearth_migration WHERE module = $1")
        .bind(module)
        .fetch_one(pool)
        .await?;
    if n > 0 {
        return Err(MigrateError::Refused(format!(
            "module `{module}` now keeps its data in a file of its own, but its tables are in the main database file, where it was migrated before; hearth does not move tables between SQLite files (copy them over, or drop `own_file`)"
        )));
    }
    Ok(())
}

/// Applies `plan` (one module's migrations) in the module's own SQLite
/// file, on a connection whose main database is that file: unqualified
/// names create its tables there, and its ledger and hearth's event tables
/// sit beside them.
async fn migrate_file(file: &ModuleFile, plan: &[Planned]) -> Result<Vec<String>, MigrateError> {
    let mut conn = sqlx::SqliteConnection::connect_with(&file.connect_options()).await?;
    let mut applied_now = Vec::new();
    let result = async {
        loop {
            let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
            sqlx::raw_sql(BOOTSTRAP).execute(&mut *tx).await?;
            sqlx::raw_sql(MODULE_FILE_BASE).execute(&mut *tx).await?;
            let applied = sqlx::query_as::<_, (String, i64, String, String, i64)>(
                "SELECT module, version, name, checksum, applied_at FROM hearth_migration ORDER BY module, version",
            )
            .fetch_all(&mut *tx)
            .await?;
            let status = compare(to_applied(applied), plan);
            if !status.unknown.is_empty() || !status.changed.is_empty() {
                tx.rollback().await?;
                return Err(MigrateError::Refused(format!(
                    "{} (in {})",
                    status.problem().unwrap_or_default(),
                    file.describe()
                )));
            }
            let Some(next) = plan.iter().find(|p| status.pending.contains(&p.label())) else {
                tx.commit().await?;
                return Ok(());
            };
            let m = next.migration;
            sqlx::query(
                "INSERT INTO hearth_migration (module, version, name, checksum, applied_at) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(next.module)
            .bind(m.version)
            .bind(m.name)
            .bind(&next.checksum)
            .bind(unix_now())
            .execute(&mut *tx)
            .await?;
            sqlx::raw_sql(m.sql)
                .execute(&mut *tx)
                .await
                .map_err(|source| MigrateError::Failed {
                    module: next.module.to_owned(),
                    version: m.version,
                    name: m.name.to_owned(),
                    source,
                })?;
            tx.commit().await?;
            tracing::info!(migration = %next.label(), file = %file.describe(), "applied migration");
            applied_now.push(next.label());
        }
    }
    .await;
    conn.close().await.ok();
    result.map(|()| applied_now)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Creates each module's PostgreSQL schema, and moves into it the
/// relations its migrations created in the current schema before modules
/// had schemas of their own. Indexes, constraints, triggers and owned
/// sequences move with their table; foreign keys and views keep pointing
/// at the same objects.
async fn prepare_schemas<M: Migrations>(
    pool: &sqlx::PgPool,
    modules: &[M],
) -> Result<Vec<String>, MigrateError> {
    let mut moved = Vec::new();
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(PG_LOCK_KEY)
        .execute(&mut *tx)
        .await?;
    // Relations of the current schema a module could own: not indexes, and
    // not sequences that belong to a column (they move with its table).
    let here: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.relname::text, c.relkind::text FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
           AND NOT (c.relkind = 'S' AND EXISTS (
               SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                 AND d.objid = c.oid AND d.deptype IN ('a', 'i')))",
    )
    .fetch_all(&mut *tx)
    .await?;
    let home: String = sqlx::query_scalar("SELECT current_schema()::text")
        .fetch_one(&mut *tx)
        .await?;
    for spec in modules {
        let Some(schema) = spec.schema() else {
            continue;
        };
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
                .bind(schema)
                .fetch_one(&mut *tx)
                .await?;
        if !exists {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "CREATE SCHEMA {}",
                super::quote_ident(schema)
            )))
            .execute(&mut *tx)
            .await?;
        }
        for (name, kind) in &here {
            if !spec.creates(name) {
                continue;
            }
            let what = match kind.as_str() {
                "v" => "VIEW",
                "m" => "MATERIALIZED VIEW",
                "S" => "SEQUENCE",
                _ => "TABLE",
            };
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "ALTER {what} {}.{} SET SCHEMA {}",
                super::quote_ident(&home),
                super::quote_ident(name),
                super::quote_ident(schema)
            )))
            .execute(&mut *tx)
            .await?;
            tracing::info!(relation = %name, schema, "moved a module's relation into its schema");
            moved.push(format!("{schema}.{name}"));
        }
    }
    tx.commit().await?;
    Ok(moved)
}

/// Applies every pending migration of `modules`, in module order then version order.
pub async fn migrate<M: Migrations>(db: &Db, modules: &[M]) -> Result<MigrateReport, MigrateError> {
    let mut plan = plan(db.kind(), modules);
    let mut report = MigrateReport::default();
    if let Db::Postgres(pool) = db {
        report.moved = prepare_schemas(pool, modules).await?;
    }
    // On SQLite, modules with a file of their own migrate in it, first:
    // nothing in the main file depends on them.
    let mut own = Vec::new();
    if db.kind() == DbKind::Sqlite {
        for m in modules.iter().filter(|m| m.own_file()) {
            let Some(file) = db.module_files().iter().find(|f| f.module == m.module()) else {
                return Err(MigrateError::Refused(format!(
                    "module `{}` keeps its data in a file of its own, but the database was opened without it (open it through the app)",
                    m.module()
                )));
            };
            own.push(m.module());
            let mine: Vec<Planned> = plan
                .iter()
                .filter(|p| p.module == m.module())
                .cloned()
                .collect();
            check_not_in_main(db, m.module()).await?;
            report.applied.extend(migrate_file(file, &mine).await?);
        }
    }
    plan.retain(|p| !own.contains(&p.module));
    loop {
        let mut tx = db.begin().await?;
        if let TxConn::Postgres(t) = tx.conn_mut() {
            // Serializes migrators across nodes; released at commit or rollback.
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(PG_LOCK_KEY)
                .execute(&mut **t)
                .await?;
        }
        with_tx!(&mut tx, t => sqlx::raw_sql(BOOTSTRAP).execute(&mut **t).await.map(|_| ()))?;
        let applied = with_tx!(&mut tx, t => sqlx::query_as::<_, (String, i64, String, String, i64)>(
            "SELECT module, version, name, checksum, applied_at FROM hearth_migration ORDER BY module, version",
        )
        .fetch_all(&mut **t)
        .await)?;
        let status = compare(to_applied(applied), &plan);
        if !status.unknown.is_empty() || !status.changed.is_empty() {
            tx.rollback().await?;
            return Err(MigrateError::Refused(status.problem().unwrap_or_default()));
        }
        let Some(next) = plan.iter().find(|p| status.pending.contains(&p.label())) else {
            tx.commit().await?;
            return Ok(report);
        };
        let m = next.migration;
        let now = unix_now();
        // Recorded first, so that the module's own search path below cannot
        // change which table the record goes to; the transaction makes the
        // order invisible.
        with_tx!(&mut tx, t => sqlx::query(
            "INSERT INTO hearth_migration (module, version, name, checksum, applied_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(next.module)
        .bind(m.version)
        .bind(m.name)
        .bind(&next.checksum)
        .bind(now)
        .execute(&mut **t)
        .await
        .map(|_| ()))?;
        if let (TxConn::Postgres(t), Some(schema)) = (tx.conn_mut(), next.schema) {
            // Unqualified names in the migration create objects in the
            // module's schema; the rest of the path still finds hearth's
            // tables (for foreign keys to `hearth_user`).
            sqlx::query(
                "SELECT set_config('search_path', $1 || CASE WHEN current_setting('search_path') = '' THEN '' ELSE ', ' || current_setting('search_path') END, true)",
            )
            .bind(super::quote_ident(schema))
            .execute(&mut **t)
            .await?;
        }
        with_tx!(&mut tx, t => sqlx::raw_sql(m.sql).execute(&mut **t).await.map(|_| ())).map_err(
            |source| MigrateError::Failed {
                module: next.module.to_owned(),
                version: m.version,
                name: m.name.to_owned(),
                source,
            },
        )?;
        tx.commit().await?;
        tracing::info!(migration = %next.label(), "applied migration");
        report.applied.push(next.label());
    }
}
