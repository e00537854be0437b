//! The queue's SQL, for both engines. Every value is bound; times are unix ms.
//!
//! A job keeps its id as it moves between `hearth_job_pending`,
//! `hearth_job_active` and `hearth_job_dead`. Each move is one transaction
//! (or one statement), so a job is always in exactly one table. Moves out of
//! `active` match on `(id, attempts)`: a worker whose lease was rescued and
//! re-claimed elsewhere cannot complete or fail the newer claim.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::db::{Db, Tx, TxConn};
use crate::{with_db, with_tx};

use super::{Enqueued, JobError};

/// Columns shared by pending, active and dead.
macro_rules! job_cols {
    () => {
        "id, queue, name, payload, priority, run_at, attempts, max_attempts, timeout_ms, unique_key, last_error, created_at"
    };
}

/// The head of both engines' claim: copy the picked rows into `active` with
/// one more attempt, started now ($2), leased until $4, held by worker $5.
macro_rules! claim_insert {
    () => {
        "INSERT INTO hearth_job_active (id, queue, name, payload, priority, run_at, attempts, max_attempts, timeout_ms, unique_key, last_error, created_at, started_at, lease_until, worker)
         SELECT id, queue, name, payload, priority, run_at, attempts + 1, max_attempts, timeout_ms, unique_key, last_error, created_at, $2, $4, $5"
    };
}

/// The due jobs of queue $1 at time $2 in claim order, at most $3.
macro_rules! claim_pick {
    () => {
        "SELECT id FROM hearth_job_pending
         WHERE queue = $1 AND run_at <= $2
         ORDER BY priority DESC, run_at, id
         LIMIT $3"
    };
}

/// What a claim returns, as [`ClaimRow`].
macro_rules! claim_returning {
    () => {
        " RETURNING id, name, payload, attempts, max_attempts, timeout_ms, run_at, priority"
    };
}

/// A job ready to insert.
#[derive(Debug, Clone)]
pub(crate) struct NewRow {
    pub queue: String,
    pub name: String,
    pub payload: String,
    pub priority: i64,
    pub run_at: i64,
    pub max_attempts: i64,
    pub timeout_ms: i64,
    pub unique_key: Option<String>,
    pub created_at: i64,
}

/// A job a worker has claimed.
#[derive(Debug, Clone)]
pub(crate) struct Claimed {
    pub id: i64,
    pub name: String,
    pub payload: String,
    pub attempts: i64,
    pub max_attempts: i64,
    pub timeout_ms: i64,
    pub run_at: i64,
    pub priority: i64,
}

type ClaimRow = (i64, String, String, i64, i64, i64, i64, i64);

fn claimed(
    (id, name, payload, attempts, max_attempts, timeout_ms, run_at, priority): ClaimRow,
) -> Claimed {
    Claimed {
        id,
        name,
        payload,
        attempts,
        max_attempts,
        timeout_ms,
        run_at,
        priority,
    }
}

/// Puts claimed rows in claim order: `RETURNING` promises no order of its own,
/// and a worker that claims ahead starts its jobs in the order it holds them.
fn in_claim_order(rows: Vec<ClaimRow>) -> Vec<Claimed> {
    let mut jobs: Vec<Claimed> = rows.into_iter().map(claimed).collect();
    jobs.sort_by_key(|j| (std::cmp::Reverse(j.priority), j.run_at, j.id));
    jobs
}

/// Which table a job is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for its run time or a free worker.
    Pending,
    /// Claimed by a worker.
    Active,
    /// Out of attempts.
    Dead,
    /// Finished successfully (history).
    Done,
}

impl JobState {
    /// `pending`, `active`, `dead` or `done`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Active => "active",
            Self::Dead => "dead",
            Self::Done => "done",
        }
    }
}

impl std::str::FromStr for JobState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pending" => Ok(Self::Pending),
            "active" => Ok(Self::Active),
            "dead" => Ok(Self::Dead),
            "done" => Ok(Self::Done),
            other => Err(format!(
                "unknown job state `{other}`: use pending, active, dead or done"
            )),
        }
    }
}

/// One job as the CLI and dashboards show it.
#[derive(Debug, Clone, Serialize)]
pub struct JobInfo {
    /// Id.
    pub id: i64,
    /// Table it is in.
    pub state: JobState,
    /// Queue.
    pub queue: String,
    /// Job name.
    pub name: String,
    /// JSON payload (empty for history rows).
    pub payload: String,
    /// Priority.
    pub priority: i64,
    /// Attempts made so far.
    pub attempts: i64,
    /// Attempts allowed.
    pub max_attempts: i64,
    /// When it may run next (pending), was due (active, dead), unix ms.
    pub run_at: i64,
    /// When it was enqueued, unix ms.
    pub created_at: i64,
    /// The unique key, if any.
    pub unique_key: Option<String>,
    /// The last failure's text.
    pub last_error: Option<String>,
    /// Active: lease deadline; dead: when it died; done: when it finished (unix ms).
    pub at: Option<i64>,
    /// Active and done: the worker that ran it.
    pub worker: Option<String>,
}

/// Depth of one queue.
#[derive(Debug, Clone, Default, Serialize)]
pub struct QueueStats {
    /// Queue name.
    pub queue: String,
    /// Jobs waiting (due or not).
    pub pending: i64,
    /// Pending jobs whose run time has come.
    pub due: i64,
    /// Jobs being run.
    pub active: i64,
    /// Jobs out of attempts.
    pub dead: i64,
    /// Age of the oldest due pending job in milliseconds (0 when none).
    pub oldest_due_ms: i64,
    /// Jobs finished within the history window.
    pub done: i64,
}

/// Inserts jobs; a job whose unique key is held comes back as a duplicate of the holder.
pub(crate) async fn insert(tx: &mut Tx, rows: &[NewRow]) -> Result<Vec<Enqueued>, sqlx::Error> {
    let mut out = Vec::with_capacity(rows.len());
    let plain: Vec<&NewRow> = rows.iter().filter(|r| r.unique_key.is_none()).collect();
    let mut plain_ids = Vec::new();
    match tx.conn_mut() {
        TxConn::Postgres(t) if plain.len() > 1 => {
            // One statement for the whole batch.
            let col = |f: fn(&NewRow) -> String| plain.iter().map(|r| f(r)).collect::<Vec<_>>();
            let int = |f: fn(&NewRow) -> i64| plain.iter().map(|r| f(r)).collect::<Vec<_>>();
            plain_ids = sqlx::query_scalar(
                "INSERT INTO hearth_job_pending (queue, name, payload, priority, run_at, attempts, max_attempts, timeout_ms, created_at)
                 SELECT q, n, p, pr, ra, 0, ma, tm, ca
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[], $8::bigint[])
                      WITH ORDINALITY AS t(q, n, p, pr, ra, ma, tm, ca, ord)
                 ORDER BY ord
                 RETURNING id",
            )
            .bind(col(|r| r.queue.clone()))
            .bind(col(|r| r.name.clone()))
            .bind(col(|r| r.payload.clone()))
            .bind(int(|r| r.priority))
            .bind(int(|r| r.run_at))
            .bind(int(|r| r.max_attempts))
            .bind(int(|r| r.timeout_ms))
            .bind(int(|r| r.created_at))
            .fetch_all(&mut **t)
            .await?;
            plain_ids.sort_unstable();
        }
        _ => {
            for r in &plain {
                plain_ids.push(insert_one(tx, r).await?);
            }
        }
    }
    let mut plain_ids = plain_ids.into_iter();
    for r in rows {
        let Some(key) = &r.unique_key else {
            let id = plain_ids.next().ok_or(sqlx::Error::RowNotFound)?;
            out.push(Enqueued {
                id,
                duplicate: false,
            });
            continue;
        };
        let id = insert_one(tx, r).await?;
        // On PostgreSQL this waits for a concurrent transaction holding the
        // same key, so the key is never held twice.
        let took = with_tx!(tx, t => sqlx::query(
            "INSERT INTO hearth_job_unique (unique_key, job_id) VALUES ($1, $2) ON CONFLICT (unique_key) DO NOTHING",
        )
        .bind(key)
        .bind(id)
        .execute(&mut **t)
        .await?
        .rows_affected());
        if took == 1 {
            out.push(Enqueued {
                id,
                duplicate: false,
            });
        } else {
            with_tx!(tx, t => sqlx::query("DELETE FROM hearth_job_pending WHERE id = $1")
                .bind(id)
                .execute(&mut **t)
                .await
                .map(|_| ()))?;
            let holder: i64 = with_tx!(tx, t => sqlx::query_scalar(
                "SELECT job_id FROM hearth_job_unique WHERE unique_key = $1",
            )
            .bind(key)
            .fetch_one(&mut **t)
            .await)?;
            out.push(Enqueued {
                id: holder,
                duplicate: true,
            });
        }
    }
    Ok(out)
}

async fn insert_one(tx: &mut Tx, r: &NewRow) -> Result<i64, sqlx::Error> {
    with_tx!(tx, t => sqlx::query_scalar(
        "INSERT INTO hearth_job_pending (queue, name, payload, priority, run_at, attempts, max_attempts, timeout_ms, unique_key, created_at)
         VALUES ($1, $2, $3, $4, $5, 0, $6, $7, $8, $9) RETURNING id",
    )
    .bind(&r.queue)
    .bind(&r.name)
    .bind(&r.payload)
    .bind(r.priority)
    .bind(r.run_at)
    .bind(r.max_attempts)
    .bind(r.timeout_ms)
    .bind(&r.unique_key)
    .bind(r.created_at)
    .fetch_one(&mut **t)
    .await)
}

/// The PostgreSQL channel idle workers listen on; the payload is the queue name.
pub(crate) const PG_CHANNEL: &str = "hearth_jobs";

/// On PostgreSQL, tells every node's idle workers (at commit) that `queues` have work.
pub(crate) async fn announce(tx: &mut Tx, queues: &BTreeSet<String>) -> Result<(), sqlx::Error> {
    if let TxConn::Postgres(t) = tx.conn_mut() {
        for q in queues {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(PG_CHANNEL)
                .bind(q)
                .execute(&mut **t)
                .await?;
        }
    }
    Ok(())
}

/// Moves up to `limit` due jobs of `queue` into `active`, leased until `lease_until`.
pub(crate) async fn claim(
    db: &Db,
    queue: &str,
    limit: i64,
    now: i64,
    lease_until: i64,
    worker: &str,
) -> Result<Vec<Claimed>, sqlx::Error> {
    match db {
        Db::Postgres(pool) => {
            let rows: Vec<ClaimRow> = sqlx::query_as(concat!(
                "WITH picked AS (",
                claim_pick!(),
                " FOR UPDATE SKIP LOCKED),
                 moved AS (
                     DELETE FROM hearth_job_pending p USING picked WHERE p.id = picked.id
                     RETURNING p.*
                 ) ",
                claim_insert!(),
                " FROM moved",
                claim_returning!()
            ))
            .bind(queue)
            .bind(now)
            .bind(limit)
            .bind(lease_until)
            .bind(worker)
            .fetch_all(pool)
            .await?;
            Ok(in_claim_order(rows))
        }
        Db::Sqlite(pool, _) => {
            // One BEGIN IMMEDIATE transaction: the write lock is held from the
            // start, so two workers can never pick the same rows.
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
            let rows: Vec<ClaimRow> = sqlx::query_as(concat!(
                claim_insert!(),
                " FROM hearth_job_pending WHERE id IN (",
                claim_pick!(),
                ")",
                claim_returning!()
            ))
            .bind(queue)
            .bind(now)
            .bind(limit)
            .bind(lease_until)
            .bind(worker)
            .fetch_all(&mut *tx)
            .await?;
            if !rows.is_empty() {
                let ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
                let ids =
                    serde_json::to_string(&ids).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
                sqlx::query(
                    "DELETE FROM hearth_job_pending WHERE id IN (SELECT value FROM json_each($1))",
                )
                .bind(ids)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(in_claim_order(rows))
        }
    }
}

/// Run time of the next pending job of `queue`, if any.
pub(crate) async fn next_run_at(db: &Db, queue: &str) -> Result<Option<i64>, sqlx::Error> {
    with_db!(db, pool => sqlx::query_scalar("SELECT min(run_at) FROM hearth_job_pending WHERE queue = $1")
        .bind(queue)
        .fetch_one(pool)
        .await)
}

/// Deletes finished jobs (matched on id and attempt), releases their unique
/// keys and, when `keep` is set, records them in the history.
pub(crate) async fn complete(
    db: &Db,
    done: &[(i64, i64)],
    now: i64,
    keep: bool,
) -> Result<(), sqlx::Error> {
    if done.is_empty() {
        return Ok(());
    }
    match db {
        Db::Postgres(pool) => {
            let ids: Vec<i64> = done.iter().map(|d| d.0).collect();
            let attempts: Vec<i64> = done.iter().map(|d| d.1).collect();
            sqlx::query(
                "WITH gone AS (
                     DELETE FROM hearth_job_active a
                     USING unnest($1::bigint[], $2::bigint[]) AS c(id, attempts)
                     WHERE a.id = c.id AND a.attempts = c.attempts
                     RETURNING a.id, a.queue, a.name, a.attempts, a.created_at, a.started_at, a.worker, a.unique_key
                 ), freed AS (
                     DELETE FROM hearth_job_unique u USING gone
                     WHERE gone.unique_key IS NOT NULL AND u.unique_key = gone.unique_key AND u.job_id = gone.id
                 )
                 INSERT INTO hearth_job_done (id, queue, name, attempts, created_at, started_at, finished_at, worker)
                 SELECT id, queue, name, attempts, created_at, started_at, $3, worker FROM gone WHERE $4
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(ids)
            .bind(attempts)
            .bind(now)
            .bind(keep)
            .execute(pool)
            .await?;
            Ok(())
        }
        Db::Sqlite(pool, _) => {
            // The batch travels as one JSON array of [id, attempts] pairs, so
            // each step is one statement however many jobs finished.
            let pairs =
                serde_json::to_string(done).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
            if keep {
                sqlx::query(
                    "INSERT INTO hearth_job_done (id, queue, name, attempts, created_at, started_at, finished_at, worker)
                     SELECT id, queue, name, attempts, created_at, started_at, $2, worker
                     FROM hearth_job_active
                     WHERE (id, attempts) IN (SELECT value ->> 0, value ->> 1 FROM json_each($1))
                     ON CONFLICT (id) DO NOTHING",
                )
                .bind(&pairs)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query(
                "DELETE FROM hearth_job_unique WHERE job_id IN (
                     SELECT id FROM hearth_job_active
                     WHERE unique_key IS NOT NULL
                       AND (id, attempts) IN (SELECT value ->> 0, value ->> 1 FROM json_each($1)))",
            )
            .bind(&pairs)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "DELETE FROM hearth_job_active
                 WHERE (id, attempts) IN (SELECT value ->> 0, value ->> 1 FROM json_each($1))",
            )
            .bind(&pairs)
            .execute(&mut *tx)
            .await?;
            tx.commit().await
        }
    }
}

/// What to do with a job that did not succeed.
#[derive(Debug, Clone)]
pub(crate) enum Next {
    /// Back to pending, due at this time.
    Retry(i64),
    /// To the dead table, with this payload instead of its own when its
    /// name redacts dead jobs.
    Dead(Option<String>),
    /// Back to pending now with the attempt given back (shutdown interrupted it).
    Release,
}

/// Moves claimed job `(id, attempts)` out of `active`; false when it was no
/// longer there (its lease was rescued).
pub(crate) async fn fail(
    db: &Db,
    id: i64,
    attempts: i64,
    error: &str,
    next: Next,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let mut tx = db.begin().await?;
    let moved = move_out(&mut tx, id, attempts, error, next, now).await?;
    tx.commit().await?;
    Ok(moved)
}

async fn move_out(
    tx: &mut Tx,
    id: i64,
    attempts: i64,
    error: &str,
    next: Next,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let moved = match &next {
        Next::Retry(_) | Next::Release => {
            // A retry is due at its backoff time and records the error; a
            // release is due now, gives the interrupted attempt back and
            // keeps the previous error.
            let (run_at, give_back, error) = match next {
                Next::Retry(at) => (at, 0_i64, Some(error)),
                _ => (now, 1, None),
            };
            with_tx!(tx, t => sqlx::query(concat!(
                "INSERT INTO hearth_job_pending (", job_cols!(), ")
                 SELECT id, queue, name, payload, priority, $3, attempts - $4, max_attempts, timeout_ms, unique_key, COALESCE($5, last_error), created_at
                 FROM hearth_job_active WHERE id = $1 AND attempts = $2"
            ))
            .bind(id)
            .bind(attempts)
            .bind(run_at)
            .bind(give_back)
            .bind(error)
            .execute(&mut **t)
            .await?
            .rows_affected())
        }
        Next::Dead(redacted) => {
            let n = with_tx!(tx, t => sqlx::query(concat!(
                "INSERT INTO hearth_job_dead (", job_cols!(), ", died_at)
                 SELECT id, queue, name, COALESCE($5, payload), priority, run_at, attempts, max_attempts, timeout_ms, unique_key, $3, created_at, $4
                 FROM hearth_job_active WHERE id = $1 AND attempts = $2"
            ))
            .bind(id)
            .bind(attempts)
            .bind(error)
            .bind(now)
            .bind(redacted.as_deref())
            .execute(&mut **t)
            .await?
            .rows_affected());
            with_tx!(tx, t => sqlx::query("DELETE FROM hearth_job_unique WHERE job_id = $1")
                .bind(id)
                .execute(&mut **t)
                .await
                .map(|_| ()))?;
            n
        }
    };
    with_tx!(tx, t => sqlx::query("DELETE FROM hearth_job_active WHERE id = $1 AND attempts = $2")
        .bind(id)
        .bind(attempts)
        .execute(&mut **t)
        .await
        .map(|_| ()))?;
    Ok(moved == 1)
}

/// Extends the leases of every job `worker` holds.
pub(crate) async fn heartbeat(db: &Db, worker: &str, lease_until: i64) -> Result<u64, sqlx::Error> {
    with_db!(db, pool => sqlx::query("UPDATE hearth_job_active SET lease_until = $1 WHERE worker = $2")
        .bind(lease_until)
        .bind(worker)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))
}

/// An active job whose lease ran out.
#[derive(Debug, Clone)]
pub(crate) struct Expired {
    pub id: i64,
    pub queue: String,
    pub name: String,
    pub attempts: i64,
    pub max_attempts: i64,
    pub worker: String,
}

/// Takes up to `limit` jobs whose lease ended before `now` back out of
/// `active`: to `pending` (due now) or, when out of attempts, to `dead`
/// (redacted by `redact_for` of their name, when it gives a redactor).
pub(crate) async fn rescue(
    db: &Db,
    now: i64,
    limit: i64,
    redact_for: &(dyn Fn(&str) -> Option<super::Redact> + Sync),
) -> Result<Vec<Expired>, sqlx::Error> {
    let mut tx = db.begin().await?;
    type Row = (i64, String, String, i64, i64, String, String);
    let rows: Vec<Row> = match tx.conn_mut() {
        TxConn::Postgres(t) => sqlx::query_as(
            "SELECT id, queue, name, attempts, max_attempts, worker, payload FROM hearth_job_active
                 WHERE lease_until < $1 ORDER BY lease_until LIMIT $2 FOR UPDATE SKIP LOCKED",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&mut **t)
        .await?,
        TxConn::Sqlite(t) => sqlx::query_as(
            "SELECT id, queue, name, attempts, max_attempts, worker, payload FROM hearth_job_active
                 WHERE lease_until < $1 ORDER BY lease_until LIMIT $2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&mut **t)
        .await?,
    };
    let mut out = Vec::with_capacity(rows.len());
    for (id, queue, name, attempts, max_attempts, worker, payload) in rows {
        let error =
            format!("lease expired: worker {worker} stopped renewing it (crashed or stalled)");
        let next = if attempts >= max_attempts {
            Next::Dead(redact_for(&name).map(|r| r(&payload)))
        } else {
            Next::Retry(now)
        };
        if move_out(&mut tx, id, attempts, &error, next, now).await? {
            out.push(Expired {
                id,
                queue,
                name,
                attempts,
                max_attempts,
                worker,
            });
        }
    }
    tx.commit().await?;
    Ok(out)
}

/// Returns every job `worker` still holds to `pending`, giving the attempt back.
pub(crate) async fn release_all(db: &Db, worker: &str, now: i64) -> Result<u64, sqlx::Error> {
    let held: Vec<(i64, i64)> = with_db!(db, pool => sqlx::query_as(
        "SELECT id, attempts FROM hearth_job_active WHERE worker = $1",
    )
    .bind(worker)
    .fetch_all(pool)
    .await)?;
    let mut n = 0;
    for (id, attempts) in held {
        if fail(db, id, attempts, "", Next::Release, now).await? {
            n += 1;
        }
    }
    Ok(n)
}

type InfoRow = (
    i64,
    String,
    String,
    String,
    i64,
    i64,
    i64,
    i64,
    i64,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<String>,
);

/// Jobs in one state, optionally of one queue, oldest first.
pub(crate) async fn list(
    db: &Db,
    state: JobState,
    queue: Option<&str>,
    limit: u32,
) -> Result<Vec<JobInfo>, sqlx::Error> {
    if state == JobState::Done {
        return history_rows(db, queue, true, limit).await;
    }
    let sql: &'static str = match state {
        JobState::Pending => {
            "SELECT id, queue, name, payload, priority, run_at, attempts, max_attempts, created_at, unique_key, last_error, NULL, NULL
             FROM hearth_job_pending WHERE ($1 IS NULL OR queue = $1) ORDER BY run_at, id LIMIT $2"
        }
        JobState::Active => {
            "SELECT id, queue, name, payload, priority, run_at, attempts, max_attempts, created_at, unique_key, last_error, lease_until, worker
             FROM hearth_job_active WHERE ($1 IS NULL OR queue = $1) ORDER BY started_at, id LIMIT $2"
        }
        JobState::Dead | JobState::Done => {
            "SELECT id, queue, name, payload, priority, run_at, attempts, max_attempts, created_at, unique_key, last_error, died_at, NULL
             FROM hearth_job_dead WHERE ($1 IS NULL OR queue = $1) ORDER BY died_at, id LIMIT $2"
        }
    };
    let rows: Vec<InfoRow> = with_db!(db, pool => sqlx::query_as(sql)
        .bind(queue)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await)?;
    Ok(rows
        .into_iter()
        .map(
            |(
                id,
                queue,
                name,
                payload,
                priority,
                run_at,
                attempts,
                max_attempts,
                created_at,
                unique_key,
                last_error,
                at,
                worker,
            )| JobInfo {
                id,
                state,
                queue,
                name,
                payload,
                priority,
                attempts,
                max_attempts,
                run_at,
                created_at,
                unique_key,
                last_error,
                at,
                worker,
            },
        )
        .collect())
}

/// Finished jobs, newest first.
pub(crate) async fn history(db: &Db, limit: u32) -> Result<Vec<JobInfo>, sqlx::Error> {
    history_rows(db, None, false, limit).await
}

/// History rows, optionally of one queue, oldest or newest first.
async fn history_rows(
    db: &Db,
    queue: Option<&str>,
    oldest_first: bool,
    limit: u32,
) -> Result<Vec<JobInfo>, sqlx::Error> {
    type Row = (i64, String, String, i64, i64, i64, i64, String);
    let sql: &'static str = if oldest_first {
        "SELECT id, queue, name, attempts, created_at, started_at, finished_at, worker
         FROM hearth_job_done WHERE ($1 IS NULL OR queue = $1) ORDER BY finished_at, id LIMIT $2"
    } else {
        "SELECT id, queue, name, attempts, created_at, started_at, finished_at, worker
         FROM hearth_job_done WHERE ($1 IS NULL OR queue = $1) ORDER BY finished_at DESC, id DESC LIMIT $2"
    };
    let rows: Vec<Row> = with_db!(db, pool => sqlx::query_as(sql)
        .bind(queue)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await)?;
    Ok(rows
        .into_iter()
        .map(
            |(id, queue, name, attempts, created_at, started_at, finished_at, worker)| JobInfo {
                id,
                state: JobState::Done,
                queue,
                name,
                payload: String::new(),
                priority: 0,
                attempts,
                max_attempts: attempts,
                run_at: started_at,
                created_at,
                unique_key: None,
                last_error: None,
                at: Some(finished_at),
                worker: Some(worker),
            },
        )
        .collect())
}

/// Depth per queue and state.
pub(crate) async fn stats(db: &Db, now: i64) -> Result<Vec<QueueStats>, sqlx::Error> {
    let rows: Vec<(String, String, i64, i64, Option<i64>)> = with_db!(db, pool => sqlx::query_as(
        "SELECT 'pending', queue, count(*), sum(CASE WHEN run_at <= $1 THEN 1 ELSE 0 END), min(CASE WHEN run_at <= $1 THEN run_at END)
           FROM hearth_job_pending GROUP BY queue
         UNION ALL SELECT 'active', queue, count(*), 0, NULL FROM hearth_job_active GROUP BY queue
         UNION ALL SELECT 'dead', queue, count(*), 0, NULL FROM hearth_job_dead GROUP BY queue
         UNION ALL SELECT 'done', queue, count(*), 0, NULL FROM hearth_job_done GROUP BY queue",
    )
    .bind(now)
    .fetch_all(pool)
    .await)?;
    let mut by_queue: std::collections::BTreeMap<String, QueueStats> = Default::default();
    for (state, queue, count, due, oldest) in rows {
        let s = by_queue.entry(queue.clone()).or_insert_with(|| QueueStats {
            queue,
            ..QueueStats::default()
        });
        match state.as_str() {
            "pending" => {
                s.pending = count;
                s.due = due;
                s.oldest_due_ms = oldest.map(|t| (now - t).max(0)).unwrap_or(0);
            }
            "active" => s.active = count,
            "dead" => s.dead = count,
            _ => s.done = count,
        }
    }
    Ok(by_queue.into_values().collect())
}

/// Ids of every dead job, oldest first.
pub(crate) async fn dead_ids(db: &Db) -> Result<Vec<i64>, sqlx::Error> {
    with_db!(db, pool => sqlx::query_scalar("SELECT id FROM hearth_job_dead ORDER BY died_at, id")
        .fetch_all(pool)
        .await)
}

/// Moves dead job `id` back to `pending`, due now, with its attempts reset;
/// returns its queue.
pub(crate) async fn retry(db: &Db, id: i64, now: i64) -> Result<String, JobError> {
    let mut tx = db.begin().await?;
    let row: Option<(String, Option<String>)> = with_tx!(&mut tx, t => sqlx::query_as(
        "SELECT queue, unique_key FROM hearth_job_dead WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&mut **t)
    .await)?;
    let Some((queue, key)) = row else {
        return Err(JobError::NotFound { id, state: "dead" });
    };
    if let Some(key) = key {
        let took = with_tx!(&mut tx, t => sqlx::query(
            "INSERT INTO hearth_job_unique (unique_key, job_id) VALUES ($1, $2) ON CONFLICT (unique_key) DO NOTHING",
        )
        .bind(&key)
        .bind(id)
        .execute(&mut **t)
        .await?
        .rows_affected());
        if took == 0 {
            let holder: i64 = with_tx!(&mut tx, t => sqlx::query_scalar(
                "SELECT job_id FROM hearth_job_unique WHERE unique_key = $1",
            )
            .bind(&key)
            .fetch_one(&mut **t)
            .await)?;
            return Err(JobError::KeyHeld { id, holder, key });
        }
    }
    with_tx!(&mut tx, t => sqlx::query(concat!(
        "INSERT INTO hearth_job_pending (", job_cols!(), ")
         SELECT id, queue, name, payload, priority, $2, 0, max_attempts, timeout_ms, unique_key, last_error, created_at
         FROM hearth_job_dead WHERE id = $1"
    ))
    .bind(id)
    .bind(now)
    .execute(&mut **t)
    .await
    .map(|_| ()))?;
    with_tx!(&mut tx, t => sqlx::query("DELETE FROM hearth_job_dead WHERE id = $1")
        .bind(id)
        .execute(&mut **t)
        .await
        .map(|_| ()))?;
    let queues = BTreeSet::from([queue.clone()]);
    announce(&mut tx, &queues).await?;
    tx.commit().await?;
    Ok(queue)
}

/// Records, in the handler's transaction, that job `id` committed its
/// effects: `false` when a record exists already (an earlier attempt
/// committed). On PostgreSQL a concurrent attempt waits here for the first
/// one's transaction and then finds its record.
pub(crate) async fn record_effect(tx: &mut Tx, id: i64, now: i64) -> Result<bool, sqlx::Error> {
    let inserted = with_tx!(tx, t => sqlx::query(
        "INSERT INTO hearth_job_effect (job_id, done_at) VALUES ($1, $2) ON CONFLICT (job_id) DO NOTHING",
    )
    .bind(id)
    .bind(now)
    .execute(&mut **t)
    .await?
    .rows_affected());
    Ok(inserted == 1)
}

/// Deletes the effect records of jobs that can no longer run (gone from
/// pending, active and dead) and were recorded before `cutoff`.
pub(crate) async fn purge_effects(db: &Db, cutoff: i64) -> Result<u64, sqlx::Error> {
    with_db!(db, pool => sqlx::query(
        "DELETE FROM hearth_job_effect WHERE done_at < $1
           AND job_id NOT IN (SELECT id FROM hearth_job_pending)
           AND job_id NOT IN (SELECT id FROM hearth_job_active)
           AND job_id NOT IN (SELECT id FROM hearth_job_dead)",
    )
    .bind(cutoff)
    .execute(pool)
    .await
    .map(|r| r.rows_affected()))
}

/// Deletes dead jobs that died before `cutoff`.
pub(crate) async fn purge_dead(db: &Db, cutoff: i64) -> Result<u64, sqlx::Error> {
    with_db!(db, pool => sqlx::query("DELETE FROM hearth_job_dead WHERE died_at < $1")
        .bind(cutoff)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))
}

/// Deletes history rows finished before `cutoff`.
pub(crate) async fn purge_history(db: &Db, cutoff: i64) -> Result<u64, sqlx::Error> {
    with_db!(db, pool => sqlx::query("DELETE FROM hearth_job_done WHERE finished_at < $1")
        .bind(cutoff)
        .execute(pool)
        .await
        .map(|r| r.rows_affected()))
}
