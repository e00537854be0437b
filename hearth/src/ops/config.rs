//! `[backup]` settings: where archives go, how many are kept, an optional
//! schedule, and where the PostgreSQL client tools are.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, Duration};

/// Backup settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackupConfig {
    /// Where `backup` writes archives; default `<data_dir>/backups`.
    pub dir: Option<PathBuf>,
    /// Archives of this app kept in the directory a backup goes to; older
    /// ones are deleted after each successful backup. 0 keeps them all.
    pub keep: usize,
    /// A cron expression (UTC) for a backup run by the job
    /// workers, e.g. `"30 3 * * *"`; none by default.
    pub schedule: Option<String>,
    /// Directory holding `pg_dump` and `pg_restore`, when they are not on
    /// `PATH` or another major version is needed
    /// (e.g. `/usr/lib/postgresql/16/bin`).
    pub pg_bin_dir: Option<PathBuf>,
    /// Time limit for one `pg_dump` or `pg_restore` run.
    pub tool_timeout: Duration,
}

impl Default for BackupConfig {
    fn default() -> Self {
        Self {
            dir: None,
            keep: 7,
            schedule: None,
            pg_bin_dir: None,
            tool_timeout: Duration::from_secs(3600),
        }
    }
}

impl BackupConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(expr) = &self.schedule
            && let Err(e) = crate::jobs::cron::parse(expr)
        {
            return Err(ConfigError::new(
                "backup.schedule",
                format!("is not a cron expression: {e}"),
            ));
        }
        Ok(())
    }
}
