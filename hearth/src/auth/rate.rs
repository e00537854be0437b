//! Rate limits kept in the database, so that every node counts together and
//! a restart forgets nothing.
//!
//! Each key (`login:ip:203.0.113.9`, `login:account:ana@example.com`, …) has
//! one row: the start of its current window and the events counted in it.
//! A fixed window is crude at its edges (up to twice the rate across a
//! boundary) but needs one upsert per event and no clock beyond the
//! database row, which is what a limit on password guessing needs.

use crate::auth::Rate;
use crate::db::Db;
use crate::jobs::now_ms;
use crate::with_db;

/// The rate limiter; cheap to clone.
#[derive(Debug, Clone)]
pub struct Limiter {
    db: Db,
}

fn window_ms(rate: Rate) -> i64 {
    i64::try_from(rate.per.get().as_millis()).unwrap_or(i64::MAX / 4)
}

/// Whole seconds until a window that started at `start` ends, at least 1.
fn retry_after(start: i64, rate: Rate, now: i64) -> u64 {
    let left_ms = start.saturating_add(window_ms(rate)).saturating_sub(now);
    u64::try_from(left_ms.max(0))
        .unwrap_or(0)
        .div_ceil(1000)
        .max(1)
}

impl Limiter {
    /// The limiter of `db`.
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// Counts one event for `key`. Returns the seconds to wait when this
    /// event is over the limit, `None` while it is within.
    ///
    /// Count before doing the work the limit guards, not after: the count
    /// and its check are one statement, so of many concurrent events
    /// exactly `rate.max` are let through.
    pub async fn hit(&self, key: &str, rate: Rate) -> Result<Option<u64>, sqlx::Error> {
        let now = now_ms();
        let (start, hits): (i64, i64) = with_db!(&self.db, pool => sqlx::query_as(
            "INSERT INTO hearth_rate_limit (key, window_start, hits) VALUES ($1, $2, 1)
             ON CONFLICT (key) DO UPDATE SET
               hits = CASE WHEN hearth_rate_limit.window_start <= $3 THEN 1
                           ELSE hearth_rate_limit.hits + 1 END,
               window_start = CASE WHEN hearth_rate_limit.window_start <= $3 THEN $2
                                   ELSE hearth_rate_limit.window_start END
             RETURNING window_start, hits",
        )
        .bind(key)
        .bind(now)
        .bind(now.saturating_sub(window_ms(rate)))
        .fetch_one(pool)
        .await)?;
        Ok((hits > i64::from(rate.max)).then(|| retry_after(start, rate, now)))
    }

    /// Forgets `key` (a successful login clears its failures).
    pub async fn clear(&self, key: &str) -> Result<(), sqlx::Error> {
        with_db!(&self.db, pool => sqlx::query("DELETE FROM hearth_rate_limit WHERE key = $1")
            .bind(key)
            .execute(pool)
            .await
            .map(|_| ()))
    }

    /// Deletes counters whose window started before `before` (unix ms).
    pub async fn purge(&self, before: i64) -> Result<u64, sqlx::Error> {
        with_db!(&self.db, pool => sqlx::query("DELETE FROM hearth_rate_limit WHERE window_start < $1")
            .bind(before)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Duration;

    #[test]
    fn retry_after_rounds_up_and_is_never_zero() {
        let r = Rate::new(1, Duration::from_secs(60));
        assert_eq!(retry_after(0, r, 0), 60);
        assert_eq!(retry_after(0, r, 59_001), 1);
        assert_eq!(retry_after(0, r, 58_999), 2);
        assert_eq!(retry_after(0, r, 120_000), 1);
    }
}
