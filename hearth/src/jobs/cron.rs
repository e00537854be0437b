//! Cron: schedules declared in code, stored in the database, each tick
//! enqueuing one job exactly once across every node.
//!
//! Expressions are the standard five fields (minute hour day-of-month month
//! day-of-week), the `@hourly`/`@daily`/`@weekly`/`@monthly`/`@yearly`
//! shorthands, or six fields with leading seconds. Times are UTC.
//!
//! Exactly once: each node's scheduler reads due rows and fires a tick with
//! `UPDATE hearth_cron SET next_at = <following tick> WHERE name = $1 AND
//! next_at = <this tick>` in the same transaction as the enqueue. The row
//! lock (PostgreSQL) or the write lock (SQLite) lets one node's UPDATE match;
//! the others match nothing and enqueue nothing. No node is elected.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use serde::Serialize;

use super::{JobName, Jobs, NewJob, now_ms};
use crate::db::Db;
use crate::{with_db, with_tx};

/// What to do with ticks that passed while no node was running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Missed {
    /// Drop them; the next run is the next tick in the future.
    Skip,
    /// Enqueue one job for all of them, then continue with the next future tick.
    RunOnce,
}

impl Missed {
    fn as_str(self) -> &'static str {
        match self {
            Self::Skip => "skip",
            Self::RunOnce => "run_once",
        }
    }
}

/// A schedule: a stable name, an expression, and the job each tick enqueues.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub(crate) name: &'static str,
    pub(crate) expr: std::borrow::Cow<'static, str>,
    pub(crate) job: &'static str,
    pub(crate) payload: Result<String, String>,
    pub(crate) missed: Missed,
    pub(crate) grace: Duration,
}

impl Schedule {
    /// Enqueues `job` with `payload` at every tick of `expr`. `name` is stored,
    /// so it must not change; missed ticks are skipped unless told otherwise.
    pub fn new<P: Serialize>(
        name: &'static str,
        expr: impl Into<std::borrow::Cow<'static, str>>,
        job: JobName<P>,
        payload: &P,
    ) -> Self {
        Self {
            name,
            expr: expr.into(),
            job: job.name(),
            payload: serde_json::to_string(payload).map_err(|e| e.to_string()),
            missed: Missed::Skip,
            grace: Duration::from_secs(60),
        }
    }

    /// The policy for ticks that passed while nothing ran.
    #[must_use]
    pub fn missed(mut self, policy: Missed) -> Self {
        self.missed = policy;
        self
    }

    /// How late a tick may fire and still count as on time (default 60 s).
    #[must_use]
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// The schedule's name.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

/// Parses a cron expression the way schedules are parsed.
pub fn parse(expr: &str) -> Result<Cron, String> {
    let parser = CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build();
    let trimmed = expr.trim();
    if trimmed.is_empty() {
        return Err("the expression is empty".into());
    }
    // croner accepts `@reboot`-style words it cannot schedule; refuse them here.
    if trimmed.starts_with('@')
        && !matches!(
            trimmed.to_ascii_lowercase().as_str(),
            "@yearly" | "@annually" | "@monthly" | "@weekly" | "@daily" | "@midnight" | "@hourly"
        )
    {
        return Err(format!(
            "unknown shorthand `{trimmed}`: use @hourly, @daily, @weekly, @monthly or @yearly"
        ));
    }
    let cron = parser.parse(trimmed).map_err(|e| e.to_string())?;
    // An expression that can never match (e.g. 30 February) fails here rather than at run time.
    cron.find_next_occurrence(&Utc::now(), false)
        .map_err(|e| format!("it never matches: {e}"))?;
    Ok(cron)
}

impl FromStr for Missed {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "skip" => Ok(Self::Skip),
            "run_once" => Ok(Self::RunOnce),
            other => Err(format!("unknown missed-tick policy `{other}`")),
        }
    }
}

/// A schedule with its parsed expression.
#[derive(Clone)]
pub(crate) struct Compiled {
    pub schedule: Schedule,
    pub cron: Cron,
}

impl Compiled {
    /// The first tick strictly after `after_ms`.
    fn next_after(&self, after_ms: i64) -> Option<i64> {
        // Ticks fall on whole seconds; searching from a fractional time would
        // carry the fraction into every tick.
        let whole = after_ms.div_euclid(1000) * 1000;
        let after: DateTime<Utc> = Utc.timestamp_millis_opt(whole).single()?;
        self.cron
            .find_next_occurrence(&after, false)
            .ok()
            .map(|t| t.timestamp() * 1000)
    }
}

/// Why a schedule cannot be used.
pub(crate) fn compile(s: Schedule) -> Result<Compiled, String> {
    if !s
        .name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
        || s.name.is_empty()
        || s.name.len() > 100
    {
        return Err(format!(
            "schedule name `{}` must be 1-100 of a-z, 0-9, `.`, `_` and `-`",
            s.name
        ));
    }
    if let Err(e) = &s.payload {
        return Err(format!(
            "schedule `{}`: its payload cannot be encoded: {e}",
            s.name
        ));
    }
    let cron = parse(&s.expr).map_err(|e| {
        format!(
            "schedule `{}`: invalid cron expression `{}`: {e}",
            s.name, s.expr
        )
    })?;
    Ok(Compiled { schedule: s, cron })
}

/// Writes the declared schedules to the database: new ones get their first
/// tick, ones whose expression changed get a new next tick, and schedules no
/// longer declared are removed.
pub(crate) async fn sync(db: &Db, schedules: &[Compiled]) -> Result<(), sqlx::Error> {
    let now = now_ms();
    let mut tx = db.begin().await?;
    for c in schedules {
        let Some(next) = c.next_after(now) else {
            continue;
        };
        with_tx!(&mut tx, t => sqlx::query(
            "INSERT INTO hearth_cron (name, expr, job, missed, next_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (name) DO UPDATE SET
                 next_at = CASE WHEN hearth_cron.expr = excluded.expr THEN hearth_cron.next_at ELSE excluded.next_at END,
                 expr = excluded.expr, job = excluded.job, missed = excluded.missed, updated_at = excluded.updated_at",
        )
        .bind(c.schedule.name)
        .bind(c.schedule.expr.as_ref())
        .bind(c.schedule.job)
        .bind(c.schedule.missed.as_str())
        .bind(next)
        .bind(now)
        .execute(&mut **t)
        .await
        .map(|_| ()))?;
    }
    let stored: Vec<String> = with_tx!(&mut tx, t => sqlx::query_scalar("SELECT name FROM hearth_cron")
        .fetch_all(&mut **t)
        .await)?;
    for name in stored {
        if !schedules.iter().any(|c| c.schedule.name == name) {
            with_tx!(&mut tx, t => sqlx::query("DELETE FROM hearth_cron WHERE name = $1")
                .bind(&name)
                .execute(&mut **t)
                .await
                .map(|_| ()))?;
            tracing::info!(schedule = %name, "removed a schedule no module declares any more");
        }
    }
    tx.commit().await
}

/// Fires every due tick, then sleeps until the next one (at most a few
/// seconds, since another node may have changed the table).
pub(crate) async fn scheduler(
    jobs: Jobs,
    schedules: Arc<Vec<Compiled>>,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        let wait = match tick_all(&jobs, &schedules).await {
            Ok(Some(next)) => Duration::from_millis(u64::try_from(next - now_ms()).unwrap_or(0)),
            Ok(None) => Duration::from_secs(5),
            Err(e) => {
                tracing::warn!(error = %e, "the cron scheduler failed; retrying");
                Duration::from_secs(1)
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait.clamp(Duration::from_millis(20), Duration::from_secs(5))) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// Fires what is due; returns the earliest next tick.
async fn tick_all(jobs: &Jobs, schedules: &[Compiled]) -> Result<Option<i64>, sqlx::Error> {
    let db = jobs.db();
    let now = now_ms();
    let due: Vec<(String, i64)> = with_db!(db, pool => sqlx::query_as(
        "SELECT name, next_at FROM hearth_cron WHERE next_at <= $1",
    )
    .bind(now)
    .fetch_all(pool)
    .await)?;
    for (name, tick) in due {
        let Some(c) = schedules.iter().find(|c| c.schedule.name == name) else {
            continue;
        };
        if let Err(e) = fire(jobs, c, tick, now).await {
            tracing::warn!(schedule = %name, error = %e, "firing a cron tick failed; it will be tried again");
        }
    }
    with_db!(db, pool => sqlx::query_scalar("SELECT min(next_at) FROM hearth_cron")
        .fetch_one(pool)
        .await)
}

/// Fires one tick if this node wins it.
async fn fire(jobs: &Jobs, c: &Compiled, tick: i64, now: i64) -> Result<(), super::JobError> {
    let s = &c.schedule;
    let late = now - tick;
    let missed = late > i64::try_from(s.grace.as_millis()).unwrap_or(i64::MAX);
    // On time: the following tick. Missed: skip ahead to the future.
    let next = if missed {
        c.next_after(now)
    } else {
        c.next_after(tick)
    };
    let Some(next) = next else {
        return Ok(());
    };
    let mut tx = jobs.db().begin().await?;
    let won = with_tx!(&mut tx, t => sqlx::query(
        "UPDATE hearth_cron SET next_at = $1, last_tick = $2, last_fired_at = $3, last_job_id = NULL
         WHERE name = $4 AND next_at = $2",
    )
    .bind(next)
    .bind(tick)
    .bind(now)
    .bind(s.name)
    .execute(&mut **t)
    .await?
    .rows_affected())
        == 1;
    if !won {
        return Ok(());
    }
    if missed && s.missed == Missed::Skip {
        tracing::info!(
            schedule = s.name,
            late_ms = late,
            "skipped a missed cron tick"
        );
        tx.commit().await?;
        return Ok(());
    }
    let payload = s.payload.clone().unwrap_or_default();
    let job = NewJob::from_json(s.job, payload)
        .run_at(std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(tick).unwrap_or(0)))
        .unique_key(format!("cron:{}:{tick}", s.name));
    let enqueued = jobs.enqueue(&mut tx, job).await?;
    with_tx!(&mut tx, t => sqlx::query("UPDATE hearth_cron SET last_job_id = $1 WHERE name = $2")
        .bind(enqueued.id)
        .bind(s.name)
        .execute(&mut **t)
        .await
        .map(|_| ()))?;
    tx.commit().await?;
    tracing::debug!(
        schedule = s.name,
        tick,
        job = enqueued.id,
        "cron tick fired"
    );
    Ok(())
}

/// One schedule as `cron list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct CronInfo {
    /// Name.
    pub name: String,
    /// Expression.
    pub expr: String,
    /// Job each tick enqueues.
    pub job: String,
    /// Missed-tick policy.
    pub missed: String,
    /// Next tick, unix ms.
    pub next_at: i64,
    /// The last tick that fired, unix ms.
    pub last_tick: Option<i64>,
    /// When it fired, unix ms.
    pub last_fired_at: Option<i64>,
    /// The job it enqueued.
    pub last_job_id: Option<i64>,
    /// What became of that job: `pending`, `active`, `done`, `dead: <error>`,
    /// `skipped` or `unknown` (history expired).
    pub last_result: Option<String>,
}

/// Every stored schedule with the fate of its last job.
pub(crate) async fn list(db: &Db) -> Result<Vec<CronInfo>, sqlx::Error> {
    type Row = (
        String,
        String,
        String,
        String,
        i64,
        Option<i64>,
        Option<i64>,
        Option<i64>,
    );
    let rows: Vec<Row> = with_db!(db, pool => sqlx::query_as(
        "SELECT name, expr, job, missed, next_at, last_tick, last_fired_at, last_job_id FROM hearth_cron ORDER BY name",
    )
    .fetch_all(pool)
    .await)?;
    let mut out = Vec::with_capacity(rows.len());
    for (name, expr, job, missed, next_at, last_tick, last_fired_at, last_job_id) in rows {
        let last_result = match (last_tick, last_job_id) {
            (None, _) => None,
            (Some(_), None) => Some("skipped".to_owned()),
            (Some(_), Some(id)) => Some(job_fate(db, id).await?),
        };
        out.push(CronInfo {
            name,
            expr,
            job,
            missed,
            next_at,
            last_tick,
            last_fired_at,
            last_job_id,
            last_result,
        });
    }
    Ok(out)
}

async fn job_fate(db: &Db, id: i64) -> Result<String, sqlx::Error> {
    let row: Option<(String, Option<String>)> = with_db!(db, pool => sqlx::query_as(
        "SELECT 'done', NULL FROM hearth_job_done WHERE id = $1
         UNION ALL SELECT 'pending', last_error FROM hearth_job_pending WHERE id = $1
         UNION ALL SELECT 'active', NULL FROM hearth_job_active WHERE id = $1
         UNION ALL SELECT 'dead', last_error FROM hearth_job_dead WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await)?;
    Ok(match row {
        Some((state, Some(err))) if state == "dead" => format!("dead: {err}"),
        Some((state, Some(err))) if state == "pending" => format!("retrying: {err}"),
        Some((state, _)) => state,
        None => "unknown".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.timestamp_millis())
            .unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn compiled(expr: &'static str) -> Compiled {
        const J: JobName<()> = JobName::new("t.job");
        compile(Schedule::new("t", expr, J, &())).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn next_ticks_follow_the_expression_in_utc() {
        let t = at("2026-03-14T12:34:56.789Z");
        assert_eq!(
            compiled("@hourly").next_after(t),
            Some(at("2026-03-14T13:00:00Z"))
        );
        assert_eq!(
            compiled("*/15 * * * *").next_after(t),
            Some(at("2026-03-14T12:45:00Z"))
        );
        assert_eq!(
            compiled("0 3 * * *").next_after(t),
            Some(at("2026-03-15T03:00:00Z"))
        );
        assert_eq!(
            compiled("0 9 * * mon").next_after(t),
            Some(at("2026-03-16T09:00:00Z"))
        );
        assert_eq!(
            compiled("* * * * * *").next_after(t),
            Some(at("2026-03-14T12:34:57Z"))
        );
        // A tick exactly on the boundary moves to the following one.
        let h = at("2026-03-14T13:00:00Z");
        assert_eq!(
            compiled("@hourly").next_after(h),
            Some(at("2026-03-14T14:00:00Z"))
        );
    }

    #[test]
    fn bad_expressions_are_named() {
        for bad in [
            "",
            "61 * * * *",
            "* * *",
            "@reboot",
            "0 0 30 2 *",
            "* * * * * * 2030",
            "a b c d e",
        ] {
            assert!(parse(bad).is_err(), "`{bad}` should be refused");
        }
    }
}
