//! The `[events]` section of the configuration: batches, retries and retention.

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, Duration};

/// Domain event delivery settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventsConfig {
    /// Most events one subscriber handles in one transaction.
    pub batch: u32,
    /// How long a subscriber keeps adding events to one transaction. Its
    /// transaction holds back what other readers may see on PostgreSQL, so
    /// it stays short.
    pub batch_time: Duration,
    /// How often an idle subscriber looks for events when no wake-up
    /// arrives (events published by another process on SQLite, or held
    /// back on PostgreSQL behind a transaction that was still open).
    pub poll_interval: Duration,
    /// Attempts a handler gets at one event before the event is parked for
    /// that module and key.
    pub max_attempts: u32,
    /// Longest one handler call may take; longer counts as a failure.
    pub timeout: Duration,
    /// Delay before the first retry of a failed event; it doubles with each attempt.
    pub backoff_base: Duration,
    /// Longest delay between retries.
    pub backoff_max: Duration,
    /// How long events are kept once every subscriber has passed them. A
    /// module added later, or replayed, sees this much history.
    pub retention: Duration,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            batch: 256,
            batch_time: Duration::from_millis(200),
            poll_interval: Duration::from_secs(1),
            max_attempts: 10,
            timeout: Duration::from_secs(30),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            retention: Duration::from_secs(90 * 86_400),
        }
    }
}

impl EventsConfig {
    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = |key: &str, zero: bool| {
            if zero {
                Err(ConfigError::new(key, "must be greater than 0"))
            } else {
                Ok(())
            }
        };
        positive("events.batch", self.batch == 0)?;
        positive("events.batch_time", self.batch_time.is_zero())?;
        positive("events.poll_interval", self.poll_interval.is_zero())?;
        positive("events.max_attempts", self.max_attempts == 0)?;
        positive("events.timeout", self.timeout.is_zero())?;
        if self.backoff_max < self.backoff_base {
            return Err(ConfigError::new(
                "events.backoff_max",
                "must not be shorter than events.backoff_base",
            ));
        }
        Ok(())
    }

    /// The delay before attempt `attempt + 1`, after `attempt` failures.
    pub(crate) fn backoff(&self, attempt: u32) -> std::time::Duration {
        let base = self.backoff_base.get();
        let factor = 1u32 << attempt.saturating_sub(1).min(20);
        base.saturating_mul(factor).min(self.backoff_max.get())
    }
}
