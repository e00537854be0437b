//! `cleanup`: remove everything the app keeps, for uninstalling or for a
//! throw-away instance. SQLite: the database file and the data dir (with
//! the backups in it, unless `backup.dir` is elsewhere). PostgreSQL: the
//! app's database and its role, through an admin connection, and the data
//! dir.
//!
//! It refuses to drop a superuser role or the database it connects through
//! for administration, and (on SQLite) to run while a server holds the data
//! dir.

use std::path::PathBuf;
use std::str::FromStr;

use sqlx::Connection;

use super::backup::quote_ident;
use super::{OpsError, lock_data_dir};
use crate::config::Config;
use crate::db::DbKind;

/// What `cleanup` removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Doomed {
    /// A file or directory.
    Path(PathBuf),
    /// A PostgreSQL database.
    Database(String),
    /// A PostgreSQL role.
    Role(String),
}

impl std::fmt::Display for Doomed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Path(p) => write!(f, "{}", p.display()),
            Self::Database(d) => write!(f, "PostgreSQL database {d}"),
            Self::Role(r) => write!(f, "PostgreSQL role {r}"),
        }
    }
}

/// Everything `cleanup` would remove for `app` with `config`.
pub fn plan(app: &str, config: &Config) -> Result<Vec<Doomed>, OpsError> {
    let url = config.database_url(app);
    let mut out = Vec::new();
    match DbKind::from_url(&url).map_err(|e| OpsError::Failed(e.to_string()))? {
        DbKind::Sqlite => {
            let opts = sqlx::sqlite::SqliteConnectOptions::from_str(&url)?;
            let file = opts.get_filename().to_owned();
            for suffix in ["", "-wal", "-shm"] {
                let p = PathBuf::from(format!("{}{suffix}", file.display()));
                if p.exists() && !p.starts_with(&config.data_dir) {
                    out.push(Doomed::Path(p));
                }
            }
        }
        DbKind::Postgres => {
            let opts = sqlx::postgres::PgConnectOptions::from_str(&url)?;
            let db = opts
                .get_database()
                .unwrap_or(opts.get_username())
                .to_owned();
            out.push(Doomed::Database(db));
            out.push(Doomed::Role(opts.get_username().to_owned()));
        }
    }
    if config.data_dir.exists() {
        out.push(Doomed::Path(config.data_dir.clone()));
    }
    // Absolute paths, so the operator reads exactly what goes.
    for d in &mut out {
        if let Doomed::Path(p) = d
            && let Ok(abs) = std::path::absolute(&*p)
        {
            *p = abs;
        }
    }
    Ok(out)
}

/// Removes what [`plan`] lists. `admin_url` is a PostgreSQL connection with
/// the right to drop the database and role (not one of them).
pub async fn cleanup(
    app: &str,
    config: &Config,
    admin_url: Option<&str>,
) -> Result<Vec<Doomed>, OpsError> {
    let doomed = plan(app, config)?;
    let lock = if config.data_dir.exists() {
        Some(lock_data_dir(&config.data_dir, true)?)
    } else {
        None
    };
    let has_pg = doomed.iter().any(|d| matches!(d, Doomed::Database(_)));
    if has_pg {
        let admin_url = admin_url.ok_or_else(|| {
            OpsError::Failed(
                "on PostgreSQL, cleanup drops the app's database and role through an admin connection: pass --admin-url postgres://ADMIN@HOST/postgres".into(),
            )
        })?;
        let opts = sqlx::postgres::PgConnectOptions::from_str(admin_url)?
            .application_name("hearth-cleanup");
        let mut admin = sqlx::PgConnection::connect_with(&opts).await?;
        let admin_db: String = sqlx::query_scalar("SELECT current_database()::text")
            .fetch_one(&mut admin)
            .await?;
        let admin_role: String = sqlx::query_scalar("SELECT current_user::text")
            .fetch_one(&mut admin)
            .await?;
        for d in &doomed {
            match d {
                Doomed::Database(db) => {
                    if *db == admin_db {
                        return Err(OpsError::Failed(format!(
                            "the admin URL connects to {db}, the database to drop: connect it to another one (e.g. postgres)"
                        )));
                    }
                }
                Doomed::Role(role) => {
                    let superuser: Option<bool> =
                        sqlx::query_scalar("SELECT rolsuper FROM pg_roles WHERE rolname = $1")
                            .bind(role)
                            .fetch_optional(&mut admin)
                            .await?;
                    if superuser == Some(true) || *role == admin_role {
                        return Err(OpsError::Failed(format!(
                            "the app connects as {role}, a superuser or the admin itself: cleanup drops only an app's own role; drop the database by hand"
                        )));
                    }
                }
                Doomed::Path(_) => {}
            }
        }
        for d in &doomed {
            let sql = match d {
                Doomed::Database(db) => {
                    format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(db))
                }
                Doomed::Role(role) => format!("DROP ROLE IF EXISTS {}", quote_ident(role)),
                Doomed::Path(_) => continue,
            };
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&mut admin)
                .await
                .map_err(|e| OpsError::Failed(format!("cannot drop {d}: {e}")))?;
        }
        admin.close().await?;
    }
    for d in &doomed {
        if let Doomed::Path(p) = d {
            let removed = if p.is_dir() {
                std::fs::remove_dir_all(p)
            } else {
                std::fs::remove_file(p)
            };
            match removed {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(OpsError::io(format!("cannot remove {}", p.display()), e)),
            }
        }
    }
    drop(lock);
    tracing::warn!(
        app,
        removed = doomed.len(),
        "cleanup removed the app's data"
    );
    Ok(doomed)
}
