//! The `[db]` section of the configuration: pool limits and timeouts.

use serde::{Deserialize, Serialize};

use crate::config::Duration;

/// Database pool limits and timeouts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DbConfig {
    /// Most connections in the pool; 0 (the default) picks by engine: 10 on
    /// SQLite, twice the cores (at least 4) on PostgreSQL. See
    /// [`DbConfig::pool_size`].
    pub max_connections: u32,
    /// Time to wait for a pooled connection (including connecting) before failing.
    pub acquire_timeout: Duration,
    /// PostgreSQL `statement_timeout`.
    pub statement_timeout: Duration,
    /// SQLite busy timeout: how long a writer waits for the lock.
    pub busy_timeout: Duration,
    /// Whether `serve` applies pending migrations before it starts.
    pub migrate_on_serve: bool,
}

impl Default for DbConfig {
    fn default() -> Self {
        Self {
            max_connections: 0,
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
            busy_timeout: Duration::from_secs(5),
            migrate_on_serve: true,
        }
    }
}

impl DbConfig {
    /// The pool size for `kind`: `max_connections`, or when that is 0 a
    /// default for the engine. SQLite connections are cheap and reads run in
    /// parallel, so 10. A PostgreSQL connection is a server process: more of
    /// them than about twice the cores only queue on the CPU and stretch the
    /// tail (measured in BENCHMARKS.md, "pool size"), so 2 × cores, at least 4.
    pub fn pool_size(&self, kind: super::DbKind) -> u32 {
        if self.max_connections > 0 {
            return self.max_connections;
        }
        match kind {
            super::DbKind::Sqlite => 10,
            super::DbKind::Postgres => {
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                u32::try_from(cores.saturating_mul(2))
                    .unwrap_or(u32::MAX)
                    .max(4)
            }
        }
    }
}
