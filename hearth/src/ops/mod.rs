//! The binary's own operations: `backup`, `restore` and `restore --verify`,
//! on SQLite and PostgreSQL alike.
//!
//! * [`backup::backup`] takes an online, consistent snapshot while the app
//!   serves and writes (SQLite `VACUUM INTO`; PostgreSQL `pg_dump` on an
//!   exported snapshot), adds the uploaded files under `<data_dir>/files`,
//!   and writes one compressed archive with a checksummed manifest
//!   ([`archive`]). Old archives beyond `backup.keep` are deleted.
//! * [`restore::prepare`] unpacks and checks an archive without touching
//!   live data; [`restore::Prepared::apply`] then swaps it in and keeps the
//!   previous data aside; [`restore::verify`] is the drill: it restores into
//!   a scratch place, checks integrity and row counts, migrates the copy and
//!   throws it away.
//! * [`doctor`] checks everything the app depends on, each with a measured
//!   value and a hint.
//! * [`setup`] prepares a fresh machine: data dir, config and secrets
//!   files, on PostgreSQL the app's own role and database.
//! * [`cleanup`] removes the app's database (and role) and data dir.
//! * [`install`] writes the systemd units, environment file, system user
//!   and data directory that run the binary as a hardened service.

pub mod archive;
pub mod backup;
mod cert;
pub mod cleanup;
mod config;
pub mod doctor;
pub mod install;
mod pgtools;
pub mod progress;
pub mod restore;
pub mod selftest;
pub mod setup;

use std::path::{Path, PathBuf};

pub use config::BackupConfig;

use crate::config::Config;
use crate::db::Db;
use crate::module::ModuleSpec;

/// What an operation works on: the app's identity, configuration, database
/// and modules.
#[derive(Clone, Copy)]
pub struct Target<'a> {
    /// The app's name.
    pub app: &'static str,
    /// The app's version.
    pub version: &'static str,
    /// Effective configuration.
    pub config: &'a Config,
    /// The live database.
    pub db: &'a Db,
    /// The app's modules, hearth's first.
    pub specs: &'a [ModuleSpec],
}

impl<'a> Target<'a> {
    /// The target of a running (or built) app.
    pub fn of(state: &'a crate::AppState) -> Self {
        Self {
            app: state.name(),
            version: state.version(),
            config: state.config(),
            db: state.db(),
            specs: state.specs(),
        }
    }

    /// The target of `app` with what a command opened for it.
    pub fn new(app: &crate::App, config: &'a Config, db: &'a Db, specs: &'a [ModuleSpec]) -> Self {
        Self {
            app: app.name(),
            version: app.version(),
            config,
            db,
            specs,
        }
    }

    /// Where the app's modules keep their tables (schemas, own files).
    pub fn layout(&self) -> crate::db::Layout {
        crate::module::spec::layout(self.specs)
    }

    /// The database URL in use.
    pub fn database_url(&self) -> String {
        self.config.database_url(self.app)
    }

    /// Where uploaded files live: `<data_dir>/files`.
    pub fn files_dir(&self) -> PathBuf {
        self.config.data_dir.join("files")
    }

    /// Where backups go by default: `backup.dir`, or `<data_dir>/backups`.
    pub fn backup_dir(&self) -> PathBuf {
        self.config
            .backup
            .dir
            .clone()
            .unwrap_or_else(|| self.config.data_dir.join("backups"))
    }
}

/// Why an operation failed; each message says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// A file could not be read or written.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The archive is not intact.
    #[error("the archive is damaged: {0}")]
    Damaged(String),
    /// The archive is intact but cannot be restored by this binary here.
    #[error("the archive cannot be restored here: {0}")]
    Incompatible(String),
    /// A PostgreSQL client tool is missing or of the wrong version.
    #[error("{0}")]
    Tool(String),
    /// Something else holds the data: a running server, other connections.
    #[error("{0}")]
    Busy(String),
    /// The restored data failed a check.
    #[error("integrity check failed: {0}")]
    Integrity(String),
    /// A database query failed.
    #[error("database error")]
    Db(#[from] sqlx::Error),
    /// Anything else, explained.
    #[error("{0}")]
    Failed(String),
}

impl OpsError {
    pub(crate) fn io(what: String, source: std::io::Error) -> Self {
        Self::Io { what, source }
    }
}

/// The name of the lock file `serve` and `worker` hold (shared) in the data
/// dir, and a SQLite restore takes (exclusive) before it swaps files.
pub const LOCK_FILE: &str = "hearth.lock";

/// Holds the data dir's lock while alive.
#[derive(Debug)]
pub struct DataDirLock(#[allow(dead_code)] std::fs::File);

/// Total and available KiB of the filesystem holding `dir`, from `df -Pk`
/// (POSIX output); `None` when `df` gives no answer. Blocks while `df` runs.
pub fn disk_space_kib(dir: &Path) -> Option<(u64, u64)> {
    let out = std::process::Command::new("df")
        .arg("-Pk")
        .arg(dir)
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text.lines().nth(1)?.to_owned();
    let f: Vec<&str> = line.split_whitespace().collect();
    let total: u64 = f.get(1)?.parse().ok()?;
    let avail: u64 = f.get(3)?.parse().ok()?;
    Some((total, avail))
}

/// Takes the data dir's lock, shared (servers and workers, many at once) or
/// exclusive (a restore, alone). Never waits: a conflict is an error that
/// says who holds it.
pub fn lock_data_dir(data_dir: &Path, exclusive: bool) -> Result<DataDirLock, OpsError> {
    crate::private_fs::create_dir(data_dir)
        .map_err(|e| OpsError::io(format!("cannot create {}", data_dir.display()), e))?;
    let path = data_dir.join(LOCK_FILE);
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(crate::private_fs::FILE_MODE);
    }
    let file = opts
        .open(&path)
        .map_err(|e| OpsError::io(format!("cannot open {}", path.display()), e))?;
    let taken = if exclusive {
        file.try_lock()
    } else {
        file.try_lock_shared()
    };
    match taken {
        Ok(()) => Ok(DataDirLock(file)),
        Err(std::fs::TryLockError::WouldBlock) if exclusive => Err(OpsError::Busy(format!(
            "a server or worker is running on {} (it holds {}); stop it first",
            data_dir.display(),
            path.display()
        ))),
        Err(std::fs::TryLockError::WouldBlock) => Err(OpsError::Busy(format!(
            "a restore is replacing the data in {}; start again when it has finished",
            data_dir.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(OpsError::io(format!("cannot lock {}", path.display()), e))
        }
    }
}

/// Now as `20261201-221736-123`, for file and schema names that sort by time.
pub(crate) fn stamp() -> String {
    chrono::Utc::now().format("%Y%m%d-%H%M%S-%3f").to_string()
}
