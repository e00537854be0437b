//! `restore`: check an archive completely before anything live is touched,
//! then swap it in and keep the previous data aside; and `restore --verify`,
//! the drill that restores into a scratch place and throws it away.
//!
//! Checks, in order: every entry against the manifest's SHA-256 and size;
//! the archive is this app's and this engine's; its migrations are ones this
//! binary knows (same level or older); then on the restored copy, SQLite's
//! `integrity_check` and `foreign_key_check`, and every table's row count
//! against the count taken inside the snapshot.
//!
//! Keeping aside: on SQLite the live database file (with its `-wal` and
//! `-shm`) and the files directory move to `<data_dir>/pre-restore-<time>/`.
//! On PostgreSQL the live schema is renamed to `hearth_pre_restore_<time>`,
//! and each module's schema to `hearth_pre_restore_<time>_<module>`; the
//! dump is restored in one transaction; if that fails the old schemas are
//! put back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use sqlx::Connection;

use super::archive::{self, FILES_PREFIX, Manifest, POSTGRES_ENTRY, SQLITE_ENTRY};
use super::backup::{quote_ident, sqlite_facts};
use super::progress::Progress;
use super::{OpsError, Target, lock_data_dir, pgtools, stamp};
use crate::db::migrate::{self, AppliedMigration};
use crate::db::{Db, DbKind};

/// An archive unpacked and checked, ready to replace the live data.
pub struct Prepared {
    staging: tempfile::TempDir,
    manifest: Manifest,
}

/// What a restore did.
#[derive(Debug, Clone)]
pub struct RestoreReport {
    /// What was restored.
    pub manifest: Manifest,
    /// Where the previous data is: a directory (SQLite) or a schema (PostgreSQL).
    pub kept_aside: String,
}

/// What the restore drill found.
#[derive(Debug, Clone)]
pub struct VerifyReport {
    /// The archive's manifest.
    pub manifest: Manifest,
    /// Tables whose row counts matched.
    pub tables_checked: usize,
    /// Migrations this binary would apply after restoring it.
    pub migrations_applied: Vec<String>,
    /// The self-test run on the restored copy, when an app was given.
    pub self_test: Option<super::selftest::Report>,
}

/// Where the SQLite database file of `target` is.
fn sqlite_file(target: &Target<'_>) -> Result<PathBuf, OpsError> {
    let url = target.database_url();
    let opts = sqlx::sqlite::SqliteConnectOptions::from_str(&url)?;
    Ok(opts.get_filename().to_owned())
}

/// Unpacks `archive` into a scratch directory next to the live data and
/// checks it: checksums, app, engine, migrations, and on SQLite the
/// database's integrity and row counts. Nothing live is touched.
pub async fn prepare(
    target: &Target<'_>,
    archive: &Path,
    progress: &Progress,
) -> Result<Prepared, OpsError> {
    // Staged on the same disk as the live data, so that moving it in is a rename.
    let parent = match target.db.kind() {
        DbKind::Sqlite => sqlite_file(target)?
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_owned),
        DbKind::Postgres => target.config.data_dir.clone(),
    };
    std::fs::create_dir_all(&parent)
        .map_err(|e| OpsError::io(format!("cannot create {}", parent.display()), e))?;
    let staging = tempfile::Builder::new()
        .prefix(".hearth-restore-")
        .tempdir_in(&parent)
        .map_err(|e| OpsError::io(format!("cannot stage in {}", parent.display()), e))?;
    let size = std::fs::metadata(archive)
        .map_err(|e| OpsError::io(format!("cannot open {}", archive.display()), e))?
        .len();
    // Two passes over the compressed bytes.
    progress.set_total(size.saturating_mul(2));
    progress.step("unpack");
    let dest = staging.path().to_owned();
    let src = archive.to_owned();
    let bar = progress.clone();
    // Decompressing and hashing is CPU and disk work: off the async threads.
    // The first of its two passes reads only headers, so an archive that
    // would unpack to more than the staging disk has free is refused before
    // anything is written (without `df`, the disk itself is the limit).
    let manifest = tokio::task::spawn_blocking(move || {
        let free =
            super::disk_space_kib(&dest).map_or(u64::MAX, |(_, avail)| avail.saturating_mul(1024));
        archive::extract(&src, &dest, &bar, free)
    })
    .await
    .map_err(|e| OpsError::Failed(format!("unpacking stopped: {e}")))??;
    check_manifest(target, &manifest)?;
    if target.db.kind() == DbKind::Sqlite {
        check_sqlite_files(
            &staging.path().join(SQLITE_ENTRY),
            &target.layout().files,
            &manifest,
        )
        .await?;
    }
    Ok(Prepared { staging, manifest })
}

/// The archive must be this app's, on this engine, with migrations this
/// binary knows.
fn check_manifest(target: &Target<'_>, m: &Manifest) -> Result<(), OpsError> {
    if m.app != target.app {
        return Err(OpsError::Incompatible(format!(
            "it is a backup of `{}`, not of `{}`",
            m.app, target.app
        )));
    }
    let kind = target.db.kind();
    if m.engine != kind.as_str() {
        return Err(OpsError::Incompatible(format!(
            "it holds a {} database and this app runs on {}; point DATABASE_URL at a {} database to restore it",
            m.engine,
            kind.as_str(),
            m.engine
        )));
    }
    let recorded = m
        .migrations
        .iter()
        .map(|r| AppliedMigration {
            module: r.module.clone(),
            version: r.version,
            name: r.name.clone(),
            checksum: r.checksum.clone(),
            applied_at: 0,
        })
        .collect();
    let status = migrate::compare_recorded(kind, target.specs, recorded);
    if !status.unknown.is_empty() {
        return Err(OpsError::Incompatible(format!(
            "it was made by a newer {} ({}): migrations {} are unknown to this binary ({}); restore it with that version or a newer one",
            m.app,
            m.app_version,
            status.unknown.join(", "),
            target.version
        )));
    }
    if !status.changed.is_empty() {
        return Err(OpsError::Incompatible(format!(
            "its migrations {} differ from this binary's",
            status.changed.join(", ")
        )));
    }
    Ok(())
}

/// The staged main file and the module files beside it (`files`: the
/// modules that keep one) pass SQLite's checks, and together hold the
/// snapshot's tables with their row counts. A backup whose modules kept
/// their data in other files than this app's modules do is refused.
async fn check_sqlite_files(main: &Path, files: &[&str], m: &Manifest) -> Result<(), OpsError> {
    let in_backup: std::collections::BTreeSet<&str> = m
        .tables
        .keys()
        .filter_map(|t| t.split_once('.').map(|(module, _)| module))
        .collect();
    let here: std::collections::BTreeSet<&str> = files.iter().copied().collect();
    if in_backup != here {
        let list = |s: &std::collections::BTreeSet<&str>| {
            if s.is_empty() {
                "none".to_owned()
            } else {
                s.iter().copied().collect::<Vec<_>>().join(", ")
            }
        };
        return Err(OpsError::Incompatible(format!(
            "modules with a file of their own: {} in the backup, {} in this app",
            list(&in_backup),
            list(&here)
        )));
    }
    check_sqlite_file(main).await?;
    let mut facts = sqlite_facts(main, None).await?;
    for module in files {
        let file = crate::db::module_file_path(main, module);
        if !file.exists() {
            return Err(OpsError::Integrity(format!(
                "the archive has no file for module `{module}`"
            )));
        }
        check_sqlite_file(&file).await?;
        facts
            .tables
            .extend(sqlite_facts(&file, Some(module)).await?.tables);
    }
    compare_counts(&m.tables, &facts.tables)
}

/// SQLite's own integrity and foreign key checks on a staged file, read-only.
async fn check_sqlite_file(file: &Path) -> Result<(), OpsError> {
    let opts = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(file)
        .read_only(true);
    let mut conn = sqlx::SqliteConnection::connect_with(&opts).await?;
    let integrity: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_all(&mut conn)
        .await?;
    if integrity != ["ok"] {
        return Err(OpsError::Integrity(format!(
            "SQLite integrity_check: {}",
            integrity.join("; ")
        )));
    }
    let fk: Vec<(String,)> = sqlx::query_as("SELECT \"table\" FROM pragma_foreign_key_check")
        .fetch_all(&mut conn)
        .await?;
    if let Some((table,)) = fk.first() {
        return Err(OpsError::Integrity(format!(
            "{} rows break a foreign key (first in table {table})",
            fk.len()
        )));
    }
    conn.close().await?;
    Ok(())
}

/// Every table of the snapshot is there with the rows it had.
fn compare_counts(
    expected: &BTreeMap<String, i64>,
    found: &BTreeMap<String, i64>,
) -> Result<(), OpsError> {
    for (table, n) in expected {
        match found.get(table) {
            None => return Err(OpsError::Integrity(format!("table {table} is missing"))),
            Some(got) if got != n => {
                return Err(OpsError::Integrity(format!(
                    "table {table} has {got} rows; the snapshot had {n}"
                )));
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = found.keys().find(|t| !expected.contains_key(*t)) {
        return Err(OpsError::Integrity(format!(
            "table {extra} is not in the snapshot"
        )));
    }
    Ok(())
}

impl Prepared {
    /// The archive's manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Replaces the live data with the archive's and keeps the previous data
    /// aside. Closes `target.db` first: nothing may keep using the old data.
    /// Refuses while a server or worker runs on it (SQLite: the data dir's
    /// lock; PostgreSQL: other hearth connections to the database).
    pub async fn apply(self, target: &Target<'_>) -> Result<RestoreReport, OpsError> {
        let kept_aside = match target.db.kind() {
            DbKind::Sqlite => self.apply_sqlite(target).await?,
            DbKind::Postgres => self.apply_postgres(target).await?,
        };
        tracing::warn!(
            app = %self.manifest.app,
            created_at = %self.manifest.created_at,
            kept_aside = %kept_aside,
            "restored a backup over the live data"
        );
        Ok(RestoreReport {
            manifest: self.manifest,
            kept_aside,
        })
    }

    async fn apply_sqlite(&self, target: &Target<'_>) -> Result<String, OpsError> {
        let data_dir = &target.config.data_dir;
        let _lock = lock_data_dir(data_dir, true)?;
        target.db.close().await;
        let live = sqlite_file(target)?;
        let aside = data_dir.join(format!("pre-restore-{}", stamp()));
        std::fs::create_dir_all(&aside)
            .map_err(|e| OpsError::io(format!("cannot create {}", aside.display()), e))?;
        let file_name = live
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "database.sqlite".into());
        let files = target.files_dir();
        // Every move done so far, so that a failure halfway puts the live
        // data back where it was.
        let mut moved: Vec<(PathBuf, PathBuf)> = Vec::new();
        // The main file, and each module's own file beside it.
        let mut databases = vec![(live.clone(), file_name.clone(), SQLITE_ENTRY.to_owned())];
        for module in target.layout().files {
            let path = crate::db::module_file_path(&live, module);
            let name = crate::db::module_file_path(Path::new(&file_name), module)
                .to_string_lossy()
                .into_owned();
            let entry = crate::db::module_file_path(Path::new(SQLITE_ENTRY), module)
                .to_string_lossy()
                .into_owned();
            databases.push((path, name, entry));
        }
        let result = (|| {
            for (path, name, _) in &databases {
                for suffix in ["", "-wal", "-shm"] {
                    let from = PathBuf::from(format!("{}{suffix}", path.display()));
                    if from.exists() {
                        let to = aside.join(format!("{name}{suffix}"));
                        move_path(&from, &to)?;
                        moved.push((from, to));
                    }
                }
            }
            if files.exists() {
                let to = aside.join(FILES_PREFIX);
                move_path(&files, &to)?;
                moved.push((files.clone(), to));
            }
            for (path, _, entry) in &databases {
                let staged = self.staging.path().join(entry);
                move_path(&staged, path)?;
                moved.push((staged, path.clone()));
            }
            let staged_files = self.staging.path().join(FILES_PREFIX);
            if staged_files.exists() {
                move_path(&staged_files, &files)?;
                moved.push((staged_files, files.clone()));
            }
            Ok::<_, OpsError>(())
        })();
        if let Err(e) = result {
            for (from, to) in moved.iter().rev() {
                if let Err(back) = move_path(to, from) {
                    tracing::error!(from = %to.display(), to = %from.display(), error = %back, "cannot move data back after a failed restore");
                }
            }
            return Err(e);
        }
        Ok(aside.display().to_string())
    }

    async fn apply_postgres(&self, target: &Target<'_>) -> Result<String, OpsError> {
        let pg_restore = pgtools::checked_tool(target, "pg_restore").await?;
        target.db.close().await;
        let url = target.database_url();
        let opts =
            sqlx::postgres::PgConnectOptions::from_str(&url)?.application_name("hearth-restore");
        let mut conn = sqlx::PgConnection::connect_with(&opts).await?;
        let others: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name = 'hearth'",
        )
        .fetch_one(&mut conn)
        .await?;
        if others > 0 {
            return Err(OpsError::Busy(format!(
                "{others} hearth connection(s) are open to this database: stop every server and worker using it first"
            )));
        }
        let home: String = sqlx::query_scalar("SELECT current_schema()::text")
            .fetch_one(&mut conn)
            .await?;
        let stamp = stamp().replace('-', "_");
        let modules = target.layout().schemas;
        // Every schema the dump may create is set aside first: the home
        // schema (recreated empty, since a dump does not create `public`)
        // and each module schema that exists.
        let mut swapped: Vec<(String, String)> =
            vec![(home.clone(), format!("hearth_pre_restore_{stamp}"))];
        for m in &modules {
            let exists: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
                    .bind(m)
                    .fetch_one(&mut conn)
                    .await?;
            if exists {
                swapped.push(((*m).to_owned(), format!("hearth_pre_restore_{stamp}_{m}")));
            }
        }
        let mut tx = conn.begin().await?;
        for (live, aside) in &swapped {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "ALTER SCHEMA {} RENAME TO {}",
                quote_ident(live),
                quote_ident(aside)
            )))
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE SCHEMA {}",
            quote_ident(&home)
        )))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        let dump = self.staging.path().join(POSTGRES_ENTRY);
        let args = restore_args(&dump);
        if let Err(e) = pgtools::run(target, &pg_restore, &url, &args).await {
            // pg_restore ran in one transaction, so it created nothing: drop
            // the empty home schema and put the old ones back.
            let mut tx = conn.begin().await?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA {} CASCADE",
                quote_ident(&home)
            )))
            .execute(&mut *tx)
            .await?;
            for (live, aside) in &swapped {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "ALTER SCHEMA {} RENAME TO {}",
                    quote_ident(aside),
                    quote_ident(live)
                )))
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            return Err(e);
        }
        let mut conn = conn;
        let facts = super::backup::postgres_facts(&mut conn, &modules).await?;
        conn.close().await?;
        compare_counts(&self.manifest.tables, &facts.tables)?;
        let aside: Vec<&str> = swapped.iter().map(|(_, a)| a.as_str()).collect();
        Ok(format!(
            "schema{} {}",
            if aside.len() > 1 { "s" } else { "" },
            aside.join(", ")
        ))
    }
}

/// `pg_restore` arguments: all or nothing, no owners or grants from the
/// source (the restoring role owns what it creates).
fn restore_args(dump: &Path) -> Vec<String> {
    vec![
        "--single-transaction".to_owned(),
        "--exit-on-error".to_owned(),
        "--no-owner".to_owned(),
        "--no-privileges".to_owned(),
        dump.display().to_string(),
    ]
}

/// Renames `from` to `to`, copying when they are on different disks.
fn move_path(from: &Path, to: &Path) -> Result<(), OpsError> {
    match std::fs::rename(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::CrossesDevices => {
            copy_recursive(from, to)?;
            if from.is_dir() {
                std::fs::remove_dir_all(from)
            } else {
                std::fs::remove_file(from)
            }
            .map_err(|e| OpsError::io(format!("cannot remove {}", from.display()), e))
        }
        Err(e) => Err(OpsError::io(
            format!("cannot move {} to {}", from.display(), to.display()),
            e,
        )),
    }
}

fn copy_recursive(from: &Path, to: &Path) -> Result<(), OpsError> {
    if from.is_dir() {
        std::fs::create_dir_all(to)
            .map_err(|e| OpsError::io(format!("cannot create {}", to.display()), e))?;
        let read = std::fs::read_dir(from)
            .map_err(|e| OpsError::io(format!("cannot list {}", from.display()), e))?;
        for entry in read.flatten() {
            copy_recursive(&entry.path(), &to.join(entry.file_name()))?;
        }
        Ok(())
    } else {
        std::fs::copy(from, to).map(|_| ()).map_err(|e| {
            OpsError::io(
                format!("cannot copy {} to {}", from.display(), to.display()),
                e,
            )
        })
    }
}

/// The restore drill: unpacks and checks `archive`, restores it into a
/// scratch database (a copy of the file on SQLite, a new database on
/// PostgreSQL), checks integrity and row counts there, applies this
/// binary's pending migrations to the copy, with `app` runs `self-test` on
/// it (the app started over the copy), and removes it. Nothing live is
/// touched. On PostgreSQL the role needs the right to create databases.
pub async fn verify(
    target: &Target<'_>,
    archive: &Path,
    progress: &Progress,
    app: Option<&crate::App>,
) -> Result<VerifyReport, OpsError> {
    let prepared = prepare(target, archive, progress).await?;
    progress.step("verify");
    let report = match target.db.kind() {
        DbKind::Sqlite => {
            let file = prepared.staging.path().join(SQLITE_ENTRY);
            let url = format!("sqlite://{}", file.display());
            // Module files were staged next to the main one, under the
            // names the layout gives them.
            let db = Db::connect_with(&url, &target.config.db, &target.layout())
                .await
                .map_err(|e| OpsError::Failed(format!("cannot open the restored copy: {e}")))?;
            let r = drill(target, &db, &prepared.manifest).await;
            db.close().await;
            let mut r = r?;
            if let Some(app) = app {
                progress.step("self-test");
                let data = prepared.staging.path().join("self-test-data");
                r.self_test = Some(self_test(app, target, &url, &data).await?);
            }
            r
        }
        DbKind::Postgres => verify_postgres(target, &prepared, app).await?,
    };
    progress.done();
    Ok(report)
}

/// Runs `self-test` over the restored copy at `url`; a failed check fails the drill.
async fn self_test(
    app: &crate::App,
    target: &Target<'_>,
    url: &str,
    data: &Path,
) -> Result<super::selftest::Report, OpsError> {
    let report = super::selftest::run_on(app, target.config, url, data).await?;
    let failed: Vec<String> = report
        .failures()
        .iter()
        .map(|c| format!("{} ({})", c.name, c.detail))
        .collect();
    if !failed.is_empty() {
        return Err(OpsError::Integrity(format!(
            "self-test failed on the restored copy: {}",
            failed.join("; ")
        )));
    }
    Ok(report)
}

/// Migrates the restored copy `db` and checks it again.
async fn drill(target: &Target<'_>, db: &Db, m: &Manifest) -> Result<VerifyReport, OpsError> {
    let report = migrate::migrate(db, target.specs)
        .await
        .map_err(|e| OpsError::Integrity(format!("the restored copy does not migrate: {e}")))?;
    let status = migrate::status(db, target.specs).await?;
    if let Some(problem) = status.problem() {
        return Err(OpsError::Integrity(problem));
    }
    if let Db::Sqlite(pool, _) = db {
        let integrity: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_all(pool)
            .await?;
        if integrity != ["ok"] {
            return Err(OpsError::Integrity(format!(
                "after migrating: {}",
                integrity.join("; ")
            )));
        }
    }
    Ok(VerifyReport {
        manifest: m.clone(),
        tables_checked: m.tables.len(),
        migrations_applied: report.applied,
        self_test: None,
    })
}

async fn verify_postgres(
    target: &Target<'_>,
    prepared: &Prepared,
    app: Option<&crate::App>,
) -> Result<VerifyReport, OpsError> {
    let Db::Postgres(pool) = target.db else {
        return Err(OpsError::Failed("not a PostgreSQL database".into()));
    };
    let pg_restore = pgtools::checked_tool(target, "pg_restore").await?;
    let scratch = pgtools::create_scratch(pool, "hearth_verify", "the drill").await?;
    let url = pgtools::with_database(&target.database_url(), &scratch);
    let result = async {
        let dump = prepared.staging.path().join(POSTGRES_ENTRY);
        pgtools::run(target, &pg_restore, &url, &restore_args(&dump)).await?;
        let db = Db::connect_with(&url, &target.config.db, &target.layout())
            .await
            .map_err(|e| OpsError::Failed(format!("cannot open the scratch database: {e}")))?;
        let counted = async {
            let Db::Postgres(p) = &db else {
                return Err(OpsError::Failed("not a PostgreSQL database".into()));
            };
            let mut conn = p.acquire().await?;
            let modules = target.layout().schemas;
            super::backup::postgres_facts(&mut conn, &modules).await
        }
        .await;
        let r = match counted {
            Ok(facts) => match compare_counts(&prepared.manifest.tables, &facts.tables) {
                Ok(()) => drill(target, &db, &prepared.manifest).await,
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        db.close().await;
        let mut r = r?;
        if let Some(app) = app {
            let data = prepared.staging.path().join("self-test-data");
            r.self_test = Some(self_test(app, target, &url, &data).await?);
        }
        Ok(r)
    }
    .await;
    pgtools::drop_scratch(pool, &scratch).await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_must_match_table_for_table() {
        let a: BTreeMap<String, i64> = [("t".to_owned(), 3), ("u".to_owned(), 0)].into();
        assert!(compare_counts(&a, &a).is_ok());
        let short: BTreeMap<String, i64> = [("t".to_owned(), 2), ("u".to_owned(), 0)].into();
        assert!(
            compare_counts(&a, &short)
                .unwrap_err()
                .to_string()
                .contains("t has 2 rows")
        );
        let missing: BTreeMap<String, i64> = [("t".to_owned(), 3)].into();
        assert!(
            compare_counts(&a, &missing)
                .unwrap_err()
                .to_string()
                .contains("u is missing")
        );
        let mut extra = a.clone();
        extra.insert("v".into(), 1);
        assert!(
            compare_counts(&a, &extra)
                .unwrap_err()
                .to_string()
                .contains("v is not")
        );
    }
}
