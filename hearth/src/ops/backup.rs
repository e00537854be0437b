//! `backup`: an online, consistent snapshot of the database plus the
//! uploaded files, in one archive with a checksummed manifest, and the
//! retention of old archives.
//!
//! Consistency: on SQLite, `VACUUM INTO` copies the database inside one read
//! transaction, so writers keep going and the copy is one point in time.
//! On PostgreSQL, a `REPEATABLE READ` transaction exports its snapshot and
//! `pg_dump --snapshot` dumps exactly that; the manifest's row counts are
//! read in the same transaction, so they describe the same point in time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sqlx::Connection;

use super::archive::{
    ArchiveWriter, FILES_PREFIX, FORMAT, Manifest, ManifestMigration, POSTGRES_ENTRY, SQLITE_ENTRY,
};
use super::progress::Progress;
use super::{OpsError, Target, pgtools, stamp};
use crate::db::Db;

/// What a backup wrote.
#[derive(Debug, Clone)]
pub struct BackupReport {
    /// The archive.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// What it holds.
    pub manifest: Manifest,
    /// Older archives deleted by retention.
    pub removed: Vec<PathBuf>,
}

/// The archive file name for `app` now: `<app>-<yyyymmdd-hhmmss-mmm>.backup.tar.gz`,
/// so names sort by time.
fn archive_name(app: &str) -> String {
    format!("{app}-{}.backup.tar.gz", stamp())
}

/// Takes a backup of `target` into `to`: a directory (the archive gets a
/// dated name there) or a file path. `None` means `backup.dir`. Retention
/// (`backup.keep`) applies to the directory the archive went to and only to
/// this app's archives.
pub async fn backup(
    target: &Target<'_>,
    to: Option<&Path>,
    progress: &Progress,
) -> Result<BackupReport, OpsError> {
    let (dir, path) = match to {
        Some(p) if p.is_dir() || p.as_os_str().to_string_lossy().ends_with('/') => {
            (p.to_owned(), p.join(archive_name(target.app)))
        }
        Some(p) => (
            p.parent()
                .filter(|d| !d.as_os_str().is_empty())
                .map_or_else(|| PathBuf::from("."), Path::to_owned),
            p.to_owned(),
        ),
        None => {
            let dir = target.backup_dir();
            let path = dir.join(archive_name(target.app));
            (dir, path)
        }
    };
    crate::private_fs::create_dir(&dir)
        .map_err(|e| OpsError::io(format!("cannot create {}", dir.display()), e))?;
    // The snapshot is staged next to the archive: same disk, and removed
    // whatever happens.
    let staging = tempfile::Builder::new()
        .prefix(".hearth-backup-")
        .tempdir_in(&dir)
        .map_err(|e| OpsError::io(format!("cannot stage in {}", dir.display()), e))?;
    progress.step("snapshot");
    // Module files of SQLite, as (entry, staged copy).
    let mut extra: Vec<(String, PathBuf)> = Vec::new();
    let (entry, snapshot, facts) = match target.db {
        Db::Sqlite(pool, _) => {
            let file = staging.path().join(SQLITE_ENTRY);
            // Module files first: a module's cursor in its snapshot then
            // never points past the main snapshot's events, and what its
            // outbox held but the main file already has is recognised by the
            // relay's mark (see `events::store::relay`).
            for f in target.db.module_files() {
                let copy = crate::db::module_file_path(&file, f.module);
                sqlite_snapshot(pool, Some(f.module), &copy).await?;
                extra.push((entry_name(&copy)?, copy));
            }
            sqlite_snapshot(pool, None, &file).await?;
            let mut facts = sqlite_facts(&file, None).await?;
            for f in target.db.module_files() {
                let copy = crate::db::module_file_path(&file, f.module);
                let more = sqlite_facts(&copy, Some(f.module)).await?;
                facts.tables.extend(more.tables);
                facts.migrations.extend(more.migrations);
            }
            (SQLITE_ENTRY, file, facts)
        }
        Db::Postgres(pool) => {
            let file = staging.path().join(POSTGRES_ENTRY);
            let facts = postgres_snapshot(target, pool, &file).await?;
            (POSTGRES_ENTRY, file, facts)
        }
    };
    let files_dir = target.files_dir();
    let total = file_size(&snapshot)
        + extra.iter().map(|(_, f)| file_size(f)).sum::<u64>()
        + if files_dir.is_dir() {
            dir_size(&files_dir)
        } else {
            0
        };
    progress.set_total(total);
    progress.step("archive");
    let mut writer = ArchiveWriter::create(&path)?;
    writer.add_file(entry, &snapshot, progress)?;
    for (name, copy) in &extra {
        writer.add_file(name, copy, progress)?;
    }
    if files_dir.is_dir() {
        writer.add_dir(FILES_PREFIX, &files_dir, progress)?;
    }
    let manifest = Manifest {
        format: FORMAT,
        app: target.app.to_owned(),
        app_version: target.version.to_owned(),
        hearth_version: env!("CARGO_PKG_VERSION").to_owned(),
        engine: target.db.kind().as_str().to_owned(),
        created_at: facts.taken_at,
        migrations: facts.migrations,
        tables: facts.tables,
        entries: Vec::new(),
    };
    let mut manifest_out = manifest.clone();
    manifest_out.entries = writer.entries().to_vec();
    let size = writer.finish(manifest)?;
    drop(staging);
    let removed = prune(&dir, target.app, target.config.backup.keep, &path)?;
    progress.done();
    tracing::info!(
        path = %path.display(),
        size,
        tables = manifest_out.tables.len(),
        removed = removed.len(),
        "backup written"
    );
    Ok(BackupReport {
        path,
        size,
        manifest: manifest_out,
        removed,
    })
}

/// hearth's scheduled backup: the same as `backup` with no `--to`, run by a
/// job worker when `backup.schedule` is set.
pub const BACKUP: crate::jobs::JobName<()> = crate::jobs::JobName::new("hearth.backup")
    .queue("hearth")
    .max_attempts(3);

/// Registers the backup job, and its schedule when `backup.schedule` is set.
pub(crate) fn register_own(ctx: &mut crate::Context<'_>) {
    ctx.job(BACKUP, |run: crate::jobs::JobRun<(), crate::AppState>| async move {
        let target = Target::of(&run.state);
        let report = match backup(&target, None, &Progress::hidden()).await {
            Ok(r) => r,
            Err(e) => {
                run.state.notifier().send(
                    crate::telemetry::EventKind::BackupFailed,
                    "scheduled",
                    format!("the scheduled backup failed (attempt {}): {e}", run.attempt),
                );
                return Err(e.into());
            }
        };
        tracing::info!(path = %report.path.display(), size = report.size, "scheduled backup written");
        Ok(())
    });
    if let Some(expr) = ctx.state().config().backup.schedule.clone() {
        ctx.cron(crate::jobs::cron::Schedule::new(
            "hearth.backup",
            expr,
            BACKUP,
            &(),
        ));
    }
}

/// What the snapshot holds, read from the snapshot itself.
pub(crate) struct Facts {
    pub(crate) taken_at: String,
    pub(crate) migrations: Vec<ManifestMigration>,
    pub(crate) tables: BTreeMap<String, i64>,
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Copies the main database (`schema` `None`) or a module's attached file
/// into `file`, consistently (`VACUUM INTO` reads inside one transaction).
async fn sqlite_snapshot(
    pool: &sqlx::SqlitePool,
    schema: Option<&str>,
    file: &Path,
) -> Result<(), OpsError> {
    let Some(target) = file.to_str() else {
        return Err(OpsError::Failed(format!(
            "the staging path {} is not UTF-8",
            file.display()
        )));
    };
    let schema = schema.map_or_else(|| "main".to_owned(), quote_ident);
    sqlx::query(sqlx::AssertSqlSafe(format!("VACUUM {schema} INTO ?1")))
        .bind(target)
        .execute(pool)
        .await?;
    Ok(())
}

/// The archive entry of a staged file: its name.
fn entry_name(file: &Path) -> Result<String, OpsError> {
    file.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_owned)
        .ok_or_else(|| OpsError::Failed(format!("{} has no file name", file.display())))
}

pub(crate) use crate::db::quote_ident;

/// Opens a SQLite snapshot read-only and reads its migrations and row
/// counts. A module's own file (`module`) lists its tables as
/// `module.table`: hearth's event tables are in every such file.
pub(crate) async fn sqlite_facts(file: &Path, module: Option<&str>) -> Result<Facts, OpsError> {
    let opts = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(file)
        .read_only(true);
    let mut conn = sqlx::SqliteConnection::connect_with(&opts).await?;
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
    )
    .fetch_all(&mut conn)
    .await?;
    let mut counts = BTreeMap::new();
    for t in &tables {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {}",
            quote_ident(t)
        )))
        .fetch_one(&mut conn)
        .await?;
        let name = match module {
            Some(m) => format!("{m}.{t}"),
            None => t.clone(),
        };
        counts.insert(name, n);
    }
    let migrations = if tables.iter().any(|t| t == "hearth_migration") {
        sqlx::query_as::<_, (String, i64, String, String)>(
            "SELECT module, version, name, checksum FROM hearth_migration ORDER BY module, version",
        )
        .fetch_all(&mut conn)
        .await?
    } else {
        Vec::new()
    };
    conn.close().await?;
    Ok(Facts {
        taken_at: now_rfc3339(),
        migrations: to_migrations(migrations),
        tables: counts,
    })
}

fn to_migrations(rows: Vec<(String, i64, String, String)>) -> Vec<ManifestMigration> {
    rows.into_iter()
        .map(|(module, version, name, checksum)| ManifestMigration {
            module,
            version,
            name,
            checksum,
        })
        .collect()
}

/// Reads migrations and row counts of the current schema and of the
/// modules' `schemas` on `conn`. Tables are listed under their plain
/// names, which module prefixes keep unique across schemas.
pub(crate) async fn postgres_facts(
    conn: &mut sqlx::PgConnection,
    schemas: &[&str],
) -> Result<Facts, OpsError> {
    let found: Vec<(String, String)> = sqlx::query_as(
        "SELECT schemaname::text, tablename::text FROM pg_tables
         WHERE schemaname = current_schema() OR schemaname = ANY($1) ORDER BY 2",
    )
    .bind(schemas)
    .fetch_all(&mut *conn)
    .await?;
    let mut counts = BTreeMap::new();
    for (schema, t) in &found {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {}.{}",
            quote_ident(schema),
            quote_ident(t)
        )))
        .fetch_one(&mut *conn)
        .await?;
        counts.insert(t.clone(), n);
    }
    let migrations = if counts.contains_key("hearth_migration") {
        sqlx::query_as::<_, (String, i64, String, String)>(
            "SELECT module, version, name, checksum FROM hearth_migration ORDER BY module, version",
        )
        .fetch_all(&mut *conn)
        .await?
    } else {
        Vec::new()
    };
    Ok(Facts {
        taken_at: now_rfc3339(),
        migrations: to_migrations(migrations),
        tables: counts,
    })
}

async fn postgres_snapshot(
    target: &Target<'_>,
    pool: &sqlx::PgPool,
    file: &Path,
) -> Result<Facts, OpsError> {
    let pg_dump = pgtools::checked_tool(target, "pg_dump").await?;
    let mut conn = pool.acquire().await?;
    sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut *conn)
        .await?;
    let result = async {
        let snapshot: String = sqlx::query_scalar("SELECT pg_export_snapshot()")
            .fetch_one(&mut *conn)
            .await?;
        let schemas = target.layout().schemas;
        let facts = postgres_facts(&mut conn, &schemas).await?;
        let args = vec![
            "--format=custom".to_owned(),
            // What an earlier restore set aside is not part of the app's
            // data, and restoring it would collide with the copy still there.
            "--exclude-schema=hearth_pre_restore_*".to_owned(),
            format!("--snapshot={snapshot}"),
            format!("--file={}", file.display()),
        ];
        // The exported snapshot lives as long as this transaction: the dump
        // must run while it is open.
        pgtools::run(target, &pg_dump, &target.database_url(), &args).await?;
        Ok::<_, OpsError>(facts)
    }
    .await;
    // Read-only: ending it either way changes nothing.
    let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
    result
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

fn dir_size(dir: &Path) -> u64 {
    let Ok(read) = std::fs::read_dir(dir) else {
        return 0;
    };
    read.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

/// Deletes this app's archives in `dir` beyond the newest `keep` (never
/// `just_written`). Returns what it deleted.
fn prune(
    dir: &Path,
    app: &str,
    keep: usize,
    just_written: &Path,
) -> Result<Vec<PathBuf>, OpsError> {
    if keep == 0 {
        return Ok(Vec::new());
    }
    let prefix = format!("{app}-");
    let mut ours: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| OpsError::io(format!("cannot list {}", dir.display()), e))?
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter(|e| {
            e.file_name().to_str().is_some_and(|n| {
                n.starts_with(&prefix)
                    && n.ends_with(".backup.tar.gz")
                    && n[prefix.len()..].starts_with(|c: char| c.is_ascii_digit())
            })
        })
        .map(|e| e.path())
        .collect();
    // Dated names sort by time.
    ours.sort();
    let mut removed = Vec::new();
    let excess = ours.len().saturating_sub(keep);
    for old in ours.into_iter().take(excess) {
        if old == just_written {
            continue;
        }
        std::fs::remove_file(&old)
            .map_err(|e| OpsError::io(format!("cannot delete old backup {}", old.display()), e))?;
        removed.push(old);
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_keeps_the_newest_of_this_apps_archives_only() {
        let dir = tempfile::tempdir().unwrap();
        let names = [
            "pancake-20261201-100000-000.backup.tar.gz",
            "pancake-20261202-100000-000.backup.tar.gz",
            "pancake-20261203-100000-000.backup.tar.gz",
            "other-20261101-100000-000.backup.tar.gz",
            "pancake-notes.txt",
            "pancake-manual.backup.tar.gz",
        ];
        for n in names {
            std::fs::write(dir.path().join(n), b"x").unwrap();
        }
        let newest = dir.path().join(names[2]);
        let removed = prune(dir.path(), "pancake", 2, &newest).unwrap();
        assert_eq!(removed, vec![dir.path().join(names[0])]);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            vec![
                "other-20261101-100000-000.backup.tar.gz",
                "pancake-20261202-100000-000.backup.tar.gz",
                "pancake-20261203-100000-000.backup.tar.gz",
                "pancake-manual.backup.tar.gz",
                "pancake-notes.txt",
            ]
        );
        assert!(prune(dir.path(), "pancake", 0, &newest).unwrap().is_empty());
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
