//! The `[jobs]` section of the configuration: leases, polling, retries and
//! per-queue concurrency.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, Duration};

/// Job queue settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobsConfig {
    /// Whether `serve` runs workers too; turn off when separate `worker`
    /// processes do the work.
    pub in_serve: bool,
    /// A job whose worker stops heartbeating is back in `pending` within this
    /// time. Workers heartbeat every sixth of it and a lease lasts half of it,
    /// so two heartbeats can be late before a healthy job is rescued.
    pub lease: Duration,
    /// How often an idle worker looks for due jobs when no wake-up arrives
    /// (delayed jobs, jobs enqueued by another process on SQLite).
    pub poll_interval: Duration,
    /// Most jobs claimed in one statement.
    pub claim_batch: u32,
    /// Jobs run at once per queue, unless `queues.<name>.concurrency` says otherwise.
    pub concurrency: usize,
    /// Jobs a queue's worker claims ahead of its free slots, so that when a
    /// job finishes the next one is already at hand instead of a database
    /// round trip away. Held jobs are leased like running ones (rescued if
    /// the process dies, returned on shutdown), but no other process can take
    /// them meanwhile; set it to 0 when jobs are long and nodes many. Unset, it
    /// is twice the queue's concurrency, at most `claim_batch`.
    pub prefetch: Option<usize>,
    /// Attempts before a job moves to `dead`, unless the job says otherwise.
    pub max_attempts: u32,
    /// Longest a job may run before it is cancelled and counted as failed,
    /// unless the job says otherwise.
    pub timeout: Duration,
    /// Delay before the first retry; it doubles with each attempt.
    pub backoff_base: Duration,
    /// Longest delay between retries.
    pub backoff_max: Duration,
    /// Time running jobs get to finish on shutdown before they are returned to `pending`.
    pub shutdown_timeout: Duration,
    /// How long finished jobs are kept in the history; `0s` keeps none.
    pub history: Duration,
    /// How long dead jobs are kept before housekeeping deletes them.
    pub dead_retention: Duration,
    /// Per-queue settings.
    pub queues: BTreeMap<String, QueueConfig>,
}

/// Settings of one queue.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Jobs of this queue run at once in one process.
    pub concurrency: usize,
}

impl Default for JobsConfig {
    fn default() -> Self {
        Self {
            in_serve: true,
            lease: Duration::from_secs(30),
            poll_interval: Duration::from_secs(1),
            claim_batch: 32,
            concurrency: 16,
            prefetch: None,
            max_attempts: 20,
            timeout: Duration::from_secs(300),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(3600),
            shutdown_timeout: Duration::from_secs(10),
            history: Duration::from_secs(3600),
            dead_retention: Duration::from_secs(30 * 86_400),
            queues: BTreeMap::new(),
        }
    }
}

impl JobsConfig {
    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = |key: &str, zero: bool| {
            if zero {
                Err(ConfigError::new(key, "must be greater than 0"))
            } else {
                Ok(())
            }
        };
        if self.lease.get() < std::time::Duration::from_millis(600) {
            // Heartbeats run every sixth of the lease; below this they would hammer the database.
            return Err(ConfigError::new("jobs.lease", "must be at least 600ms"));
        }
        positive("jobs.poll_interval", self.poll_interval.is_zero())?;
        positive("jobs.claim_batch", self.claim_batch == 0)?;
        positive("jobs.concurrency", self.concurrency == 0)?;
        positive("jobs.max_attempts", self.max_attempts == 0)?;
        positive("jobs.timeout", self.timeout.is_zero())?;
        if self.backoff_max < self.backoff_base {
            return Err(ConfigError::new(
                "jobs.backoff_max",
                "must not be shorter than jobs.backoff_base",
            ));
        }
        for (name, q) in &self.queues {
            positive(
                &format!("jobs.queues.{name}.concurrency"),
                q.concurrency == 0,
            )?;
        }
        Ok(())
    }

    /// Concurrency of `queue`.
    pub fn concurrency_of(&self, queue: &str) -> usize {
        self.queues
            .get(queue)
            .map(|q| q.concurrency)
            .unwrap_or(self.concurrency)
    }

    /// How many jobs `queue`'s worker holds ahead of its free slots.
    pub fn prefetch_of(&self, queue: &str) -> usize {
        self.prefetch
            .unwrap_or_else(|| 2 * self.concurrency_of(queue))
            .min(self.claim_batch as usize)
    }

    /// How long a claim or heartbeat keeps a job leased: half the lease.
    pub(crate) fn lease_span(&self) -> std::time::Duration {
        self.lease.get() / 2
    }

    /// How often leases are renewed and expired leases are rescued: a sixth of the lease.
    pub(crate) fn heartbeat_every(&self) -> std::time::Duration {
        self.lease.get() / 6
    }
}
