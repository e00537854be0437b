//! The job queue: durable background work in the app's own database.
//!
//! A job is a name, a JSON payload and options. It lives in exactly one of
//! three tables: `pending` (waiting for its run time), `active` (claimed by a
//! worker, with a lease deadline) or `dead` (out of attempts, kept for a
//! person to look at). On success it is deleted, and kept for a while in a
//! short history.
//!
//! * Enqueue inside the caller's transaction ([`Jobs::enqueue`]): the job
//!   exists if and only if the business write commits.
//! * Job names are explicit constants, typed by their payload:
//!   `const WELCOME: JobName<Welcome> = JobName::new("pancake.welcome");`
//!   and a module registers one handler per name with
//!   [`Context::job`](crate::Context::job).
//! * Workers claim in batches (`FOR UPDATE SKIP LOCKED` on PostgreSQL, one
//!   `BEGIN IMMEDIATE` transaction on SQLite), hold up to `jobs.prefetch`
//!   claimed jobs ahead of their free slots, renew the leases of the jobs
//!   they hold, and any node rescues jobs whose lease ran out.
//! * Execution is at least once: a handler is told its attempt number and
//!   must tolerate running again after a crash.

mod config;
pub mod cron;
mod registry;
mod store;
mod wake;
pub(crate) mod worker;

use std::collections::BTreeSet;
use std::marker::PhantomData;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::db::{Db, Tx};

pub use config::{JobsConfig, QueueConfig};
pub use registry::RegisterError;
pub(crate) use registry::{JobDef, Registry};
pub(crate) use store::PG_CHANNEL;
pub use store::{JobInfo, JobState, QueueStats};
pub(crate) use wake::Wake;

/// The queue a job runs on unless its name says otherwise.
pub const DEFAULT_QUEUE: &str = "default";

/// A job's name, typed by its payload, with the defaults its jobs get.
///
/// Declare one constant per kind of job; the name is stored with every job,
/// so it must never change once jobs of it exist.
///
/// ```
/// use hearth::jobs::JobName;
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// pub struct Welcome {
///     pub member: i64,
/// }
///
/// pub const WELCOME: JobName<Welcome> = JobName::new("pancake.welcome")
///     .queue("mail")
///     .max_attempts(5);
/// ```
pub struct JobName<P> {
    name: &'static str,
    queue: &'static str,
    max_attempts: Option<u32>,
    timeout: Option<Duration>,
    priority: i32,
    redact: Option<Redact>,
    _payload: PhantomData<fn() -> P>,
}

/// Turns a dead job's JSON payload into what may be kept (see
/// [`JobName::redact_when_dead`]).
pub type Redact = fn(&str) -> String;

impl<P> Clone for JobName<P> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<P> Copy for JobName<P> {}

impl<P> std::fmt::Debug for JobName<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobName")
            .field("name", &self.name)
            .field("queue", &self.queue)
            .finish()
    }
}

impl<P> JobName<P> {
    /// A job called `name` (conventionally `module.action`) on the default queue.
    pub const fn new(name: &'static str) -> Self {
        Self {
            name,
            queue: DEFAULT_QUEUE,
            max_attempts: None,
            timeout: None,
            priority: 0,
            redact: None,
            _payload: PhantomData,
        }
    }

    /// Runs this job's jobs on `queue` (each queue has its own concurrency).
    #[must_use]
    pub const fn queue(mut self, queue: &'static str) -> Self {
        self.queue = queue;
        self
    }

    /// Attempts before a job moves to `dead` (default: `jobs.max_attempts`).
    #[must_use]
    pub const fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = Some(n);
        self
    }

    /// Longest one attempt may run (default: `jobs.timeout`).
    #[must_use]
    pub const fn timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }

    /// Higher runs first among due jobs of the same queue (default 0).
    #[must_use]
    pub const fn priority(mut self, p: i32) -> Self {
        self.priority = p;
        self
    }

    /// Rewrites the payload of a job of this name when it dies, in the
    /// transaction that moves it to `dead`. Dead jobs are kept for
    /// `jobs.dead_retention` and copied by backups; a payload that may hold
    /// a secret (a mail with a link in it) keeps only what an operator
    /// needs to see, such as the recipient. A redacted job usually cannot be
    /// retried: its handler should refuse what `redact` leaves.
    #[must_use]
    pub const fn redact_when_dead(mut self, redact: Redact) -> Self {
        self.redact = Some(redact);
        self
    }

    /// The stored name.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// The queue.
    pub const fn queue_name(&self) -> &'static str {
        self.queue
    }
}

impl<P: Serialize> JobName<P> {
    /// A job of this name carrying `payload`, with this name's defaults.
    pub fn job(&self, payload: &P) -> NewJob {
        NewJob {
            name: self.name.to_owned(),
            payload: serde_json::to_string(payload).map_err(|e| e.to_string()),
            queue: Some(self.queue.to_owned()),
            priority: Some(self.priority),
            max_attempts: self.max_attempts,
            timeout: self.timeout,
            run_at: None,
            unique_key: None,
        }
    }
}

/// One job to enqueue, built from a [`JobName`] (or by name for scripts),
/// with per-job options.
#[derive(Debug, Clone)]
pub struct NewJob {
    name: String,
    payload: Result<String, String>,
    queue: Option<String>,
    priority: Option<i32>,
    max_attempts: Option<u32>,
    timeout: Option<Duration>,
    run_at: Option<SystemTime>,
    unique_key: Option<String>,
}

impl NewJob {
    /// A job given by name and JSON text, as the CLI and scripts enqueue them;
    /// the name must be registered and the payload must fit its type.
    pub fn from_json(name: impl Into<String>, payload: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            payload: Ok(payload.into()),
            queue: None,
            priority: None,
            max_attempts: None,
            timeout: None,
            run_at: None,
            unique_key: None,
        }
    }

    /// Runs no earlier than `delay` from now.
    #[must_use]
    pub fn delay(mut self, delay: Duration) -> Self {
        self.run_at = Some(SystemTime::now() + delay);
        self
    }

    /// Runs no earlier than `at`.
    #[must_use]
    pub fn run_at(mut self, at: SystemTime) -> Self {
        self.run_at = Some(at);
        self
    }

    /// Overrides the priority: higher runs first.
    #[must_use]
    pub fn priority(mut self, p: i32) -> Self {
        self.priority = Some(p);
        self
    }

    /// Overrides the attempts before `dead`.
    #[must_use]
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = Some(n);
        self
    }

    /// Overrides the time one attempt may take.
    #[must_use]
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }

    /// While a job with this key is pending or active, enqueuing another with
    /// the same key does nothing and returns the existing job's id.
    #[must_use]
    pub fn unique_key(mut self, key: impl Into<String>) -> Self {
        self.unique_key = Some(key.into());
        self
    }
}

/// The outcome of enqueuing one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Enqueued {
    /// The job's id (the existing job's, for a duplicate).
    pub id: i64,
    /// True when a job with the same unique key was already pending or active.
    pub duplicate: bool,
}

/// Why a job could not be enqueued or managed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// No module registered a handler for this name.
    #[error("unknown job `{0}`: no module registers a handler for it")]
    UnknownJob(String),
    /// The payload does not fit the job's payload type.
    #[error("invalid payload for job `{name}`: {problem}")]
    InvalidPayload {
        /// The job name.
        name: String,
        /// What is wrong, naming the field when one is at fault.
        problem: String,
    },
    /// An option is out of range.
    #[error("invalid job option: {0}")]
    InvalidOption(String),
    /// No job with this id is in the expected state.
    #[error("no {state} job with id {id}")]
    NotFound {
        /// The id.
        id: i64,
        /// The state looked in.
        state: &'static str,
    },
    /// A dead job cannot be retried while another job holds its unique key.
    #[error("job {id} cannot be retried: job {holder} holds its unique key `{key}`")]
    KeyHeld {
        /// The dead job.
        id: i64,
        /// The pending or active job holding the key.
        holder: i64,
        /// The key.
        key: String,
    },
    /// The database failed.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
}

impl From<JobError> for crate::Error {
    fn from(e: JobError) -> Self {
        use axum::http::StatusCode;
        let code = match &e {
            JobError::Db(_) => return crate::Error::internal(e),
            JobError::InvalidPayload { .. } => "invalid_payload",
            JobError::InvalidOption(_) => "invalid_option",
            JobError::UnknownJob(_) => "unknown_job",
            JobError::NotFound { .. } => return crate::Error::not_found(e.to_string()),
            JobError::KeyHeld { .. } => return crate::Error::conflict(e.to_string()),
        };
        crate::Error::new(StatusCode::UNPROCESSABLE_ENTITY, code, e.to_string())
    }
}

/// Returned by a handler to send its job straight to `dead`, without further
/// attempts: for failures that retrying cannot fix.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Permanent(pub String);

/// What a handler receives: the job, and the state `S` its module
/// registered it with (nothing by default; a module's own jobs usually take
/// the app's `AppState` or a narrower handle such as [`Jobs`]).
#[derive(Debug)]
pub struct JobRun<P, S = ()> {
    /// The decoded payload.
    pub payload: P,
    /// The job's id.
    pub id: i64,
    /// 1 on the first attempt, 2 on the first retry, and so on.
    pub attempt: u32,
    /// When the job was first due: its run-at time (for a cron job, its tick).
    pub scheduled_at: SystemTime,
    /// Attempts allowed before the job moves to `dead`.
    pub max_attempts: u32,
    /// Cancelled when the job's timeout passes or the worker shuts down;
    /// long handlers should select on [`CancellationToken::cancelled`].
    pub cancel: CancellationToken,
    /// What the handler was registered with.
    pub state: S,
}

impl<P, S> JobRun<P, S> {
    /// Makes this job's effects happen once even though the job may run
    /// more than once. Call it inside the transaction that writes the
    /// effects, first: it records the job as done in that transaction and
    /// returns `true`, or returns `false` when an earlier attempt's
    /// transaction already committed (the attempt then should do nothing
    /// and return `Ok`).
    ///
    /// Why: a job runs at least once. A worker that dies after the
    /// handler's transaction commits but before the job is marked finished
    /// leaves the job to be run again; so does a lost lease. With `once`,
    /// the second run finds the record and the effects are not repeated.
    /// Effects outside the database (a mail, a call to another service)
    /// cannot be covered this way; give those an idempotency key of
    /// [`id`](Self::id), which is the same on every attempt.
    ///
    /// ```no_run
    /// use hearth::prelude::*;
    ///
    /// async fn handler(run: JobRun<String, AppState>) -> hearth::anyhow::Result<()> {
    ///     let mut tx = run.state.db().begin().await?;
    ///     if !run.once(&mut tx).await? {
    ///         return Ok(());
    ///     }
    ///     /* insert, update, publish… */
    ///     tx.commit().await?;
    ///     Ok(())
    /// }
    /// ```
    pub async fn once(&self, tx: &mut Tx) -> Result<bool, sqlx::Error> {
        store::record_effect(tx, self.id, now_ms()).await
    }
}

/// The job queue of one app: enqueue, inspect and manage jobs.
///
/// Cheap to clone; handlers get it with `State<Jobs>` or `state.jobs()`.
#[derive(Clone)]
pub struct Jobs(Arc<Inner>);

struct Inner {
    db: Db,
    /// The workers' own connections: on PostgreSQL with `synchronous_commit`
    /// off (see [`Jobs::new`]); on SQLite the same pool.
    worker_db: Db,
    config: JobsConfig,
    registry: OnceLock<Arc<Registry>>,
    schedules: OnceLock<Arc<Vec<cron::Compiled>>>,
    wake: Wake,
}

impl std::fmt::Debug for Jobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jobs").finish_non_exhaustive()
    }
}

/// Unix milliseconds now.
pub(crate) fn now_ms() -> i64 {
    to_ms(SystemTime::now())
}

pub(crate) fn to_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

impl Jobs {
    /// The queue over `db`. On PostgreSQL the workers get a small pool of
    /// their own whose commits do not wait for the WAL flush: a claim,
    /// completion or lease renewal lost in a database crash only means the
    /// job runs again, which at-least-once execution allows, and not waiting
    /// for the disk makes each claim several times cheaper. Enqueues stay in
    /// the caller's transaction on the main pool, fully durable.
    pub(crate) fn new(db: Db, config: JobsConfig) -> Self {
        let worker_db = match &db {
            Db::Postgres(pool) => {
                let opts = pool
                    .connect_options()
                    .as_ref()
                    .clone()
                    .options([("synchronous_commit", "off")]);
                let pool_opts = pool.options();
                Db::Postgres(
                    sqlx::postgres::PgPoolOptions::new()
                        .max_connections(pool_opts.get_max_connections().clamp(2, 6))
                        .acquire_timeout(pool_opts.get_acquire_timeout())
                        .connect_lazy_with(opts),
                )
            }
            Db::Sqlite(..) => db.clone(),
        };
        Self(Arc::new(Inner {
            db,
            worker_db,
            config,
            registry: OnceLock::new(),
            schedules: OnceLock::new(),
            wake: Wake::default(),
        }))
    }

    /// Installs the handlers and schedules modules registered, after checking
    /// that every schedule names a registered job and a payload that fits it.
    pub(crate) fn install(
        &self,
        registry: &Registry,
        schedules: Vec<cron::Compiled>,
    ) -> Result<(), String> {
        for c in &schedules {
            let s = &c.schedule;
            let def = registry.get(s.job).ok_or_else(|| {
                format!(
                    "schedule `{}` enqueues job `{}`, which no module registers",
                    s.name, s.job
                )
            })?;
            let payload = s.payload.as_deref().unwrap_or_default();
            (def.validate)(payload).map_err(|e| {
                format!(
                    "schedule `{}`: its payload does not fit job `{}`: {e}",
                    s.name, s.job
                )
            })?;
            if schedules
                .iter()
                .filter(|o| o.schedule.name == s.name)
                .count()
                > 1
            {
                return Err(format!("schedule `{}` is declared twice", s.name));
            }
        }
        self.0.wake.add_queues(registry.queues());
        let _ = self.0.registry.set(Arc::new(registry.catalog()));
        let _ = self.0.schedules.set(Arc::new(schedules));
        Ok(())
    }

    pub(crate) fn schedules(&self) -> Arc<Vec<cron::Compiled>> {
        self.0.schedules.get().cloned().unwrap_or_default()
    }

    /// Every stored cron schedule: next tick, last tick, and what became of its last job.
    pub async fn cron_list(&self) -> Result<Vec<cron::CronInfo>, JobError> {
        Ok(cron::list(&self.0.db).await?)
    }

    pub(crate) fn registry(&self) -> Arc<Registry> {
        self.0
            .registry
            .get()
            .cloned()
            .unwrap_or_else(|| Arc::new(Registry::default()))
    }

    pub(crate) fn wake(&self) -> &Wake {
        &self.0.wake
    }

    pub(crate) fn db(&self) -> &Db {
        &self.0.db
    }

    pub(crate) fn worker_db(&self) -> &Db {
        &self.0.worker_db
    }

    /// Closes the workers' pool (the main pool is the app's to close).
    pub(crate) async fn close(&self) {
        if let Db::Postgres(p) = &self.0.worker_db {
            p.close().await;
        }
    }

    /// The queue settings.
    pub fn config(&self) -> &JobsConfig {
        &self.0.config
    }

    /// Names of every registered job, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        self.registry().names()
    }

    /// Enqueues `job` inside `tx`: it exists only if `tx` commits, and idle
    /// workers are woken after the commit.
    pub async fn enqueue(&self, tx: &mut Tx, job: NewJob) -> Result<Enqueued, JobError> {
        let mut out = self.enqueue_batch(tx, vec![job]).await?;
        out.pop()
            .ok_or_else(|| JobError::InvalidOption("nothing was enqueued".into()))
    }

    /// Enqueues several jobs inside `tx`, in one round trip per engine where
    /// possible. Every job is checked before any is written.
    pub async fn enqueue_batch(
        &self,
        tx: &mut Tx,
        jobs: Vec<NewJob>,
    ) -> Result<Vec<Enqueued>, JobError> {
        let registry = self.registry();
        let now = now_ms();
        let rows = jobs
            .into_iter()
            .map(|j| self.prepare(&registry, j, now))
            .collect::<Result<Vec<_>, _>>()?;
        let queues: BTreeSet<String> = rows.iter().map(|r| r.queue.clone()).collect();
        let out = store::insert(tx, &rows).await?;
        store::announce(tx, &queues).await?;
        let wake = self.0.wake.clone();
        tx.after_commit(move || {
            for q in &queues {
                wake.notify(q);
            }
        });
        Ok(out)
    }

    /// Enqueues `job` in a transaction of its own, for work not tied to a
    /// business write.
    pub async fn enqueue_now(&self, job: NewJob) -> Result<Enqueued, JobError> {
        let mut tx = self.0.db.begin().await?;
        let out = self.enqueue(&mut tx, job).await?;
        tx.commit().await?;
        Ok(out)
    }

    fn prepare(
        &self,
        registry: &Registry,
        job: NewJob,
        now: i64,
    ) -> Result<store::NewRow, JobError> {
        let def = registry
            .get(&job.name)
            .ok_or_else(|| JobError::UnknownJob(job.name.clone()))?;
        let payload = job.payload.map_err(|problem| JobError::InvalidPayload {
            name: job.name.clone(),
            problem,
        })?;
        (def.validate)(&payload).map_err(|problem| JobError::InvalidPayload {
            name: job.name.clone(),
            problem,
        })?;
        let max_attempts = job
            .max_attempts
            .or(def.max_attempts)
            .unwrap_or(self.0.config.max_attempts);
        if max_attempts == 0 {
            return Err(JobError::InvalidOption(
                "max_attempts must be at least 1".into(),
            ));
        }
        let timeout = job
            .timeout
            .or(def.timeout)
            .unwrap_or(self.0.config.timeout.get());
        if timeout.is_zero() {
            return Err(JobError::InvalidOption(
                "timeout must be greater than 0".into(),
            ));
        }
        if let Some(key) = &job.unique_key
            && (key.is_empty() || key.len() > 200)
        {
            return Err(JobError::InvalidOption(
                "unique_key must be 1 to 200 bytes long".into(),
            ));
        }
        Ok(store::NewRow {
            queue: job.queue.unwrap_or_else(|| def.queue.to_owned()),
            name: job.name,
            payload,
            priority: i64::from(job.priority.unwrap_or(def.priority)),
            run_at: job.run_at.map(to_ms).unwrap_or(now).max(0),
            max_attempts: i64::from(max_attempts),
            timeout_ms: i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX),
            unique_key: job.unique_key,
            created_at: now,
        })
    }

    /// Jobs in `state`, optionally of one queue, oldest first, at most `limit`.
    pub async fn list(
        &self,
        state: JobState,
        queue: Option<&str>,
        limit: u32,
    ) -> Result<Vec<JobInfo>, JobError> {
        Ok(store::list(&self.0.db, state, queue, limit).await?)
    }

    /// Depth per queue and state, and the age of the oldest due pending job.
    pub async fn stats(&self) -> Result<Vec<QueueStats>, JobError> {
        Ok(store::stats(&self.0.db, now_ms()).await?)
    }

    /// Moves dead job `id` back to `pending` with a fresh set of attempts.
    pub async fn retry(&self, id: i64) -> Result<(), JobError> {
        let queue = store::retry(&self.0.db, id, now_ms()).await?;
        self.0.wake.notify(&queue);
        Ok(())
    }

    /// Moves every dead job back to `pending`; returns how many moved. Jobs
    /// whose unique key is held by a live job stay dead.
    pub async fn retry_all_dead(&self) -> Result<u64, JobError> {
        let ids = store::dead_ids(&self.0.db).await?;
        let mut moved = 0;
        for id in ids {
            match self.retry(id).await {
                Ok(()) => moved += 1,
                Err(JobError::KeyHeld { .. } | JobError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(moved)
    }

    /// Deletes dead jobs that died more than `older_than` ago; returns how many.
    pub async fn purge_dead(&self, older_than: Duration) -> Result<u64, JobError> {
        let cutoff = now_ms() - i64::try_from(older_than.as_millis()).unwrap_or(i64::MAX / 2);
        Ok(store::purge_dead(&self.0.db, cutoff).await?)
    }

    /// Deletes history rows that finished more than `older_than` ago; returns how many.
    pub async fn purge_history(&self, older_than: Duration) -> Result<u64, JobError> {
        let cutoff = now_ms() - i64::try_from(older_than.as_millis()).unwrap_or(i64::MAX / 2);
        Ok(store::purge_history(&self.0.db, cutoff).await?)
    }

    /// Deletes history older than `jobs.history` and dead jobs older than
    /// `jobs.dead_retention`; returns (history rows, dead jobs) deleted.
    pub async fn housekeeping(&self) -> Result<(u64, u64), JobError> {
        let now = now_ms();
        let span =
            |d: crate::config::Duration| i64::try_from(d.get().as_millis()).unwrap_or(i64::MAX / 2);
        let history = store::purge_history(&self.0.db, now - span(self.0.config.history)).await?;
        let dead = store::purge_dead(&self.0.db, now - span(self.0.config.dead_retention)).await?;
        store::purge_effects(&self.0.db, now - span(self.0.config.lease)).await?;
        Ok((history, dead))
    }

    /// Recently finished jobs, newest first, at most `limit`.
    pub async fn history(&self, limit: u32) -> Result<Vec<JobInfo>, JobError> {
        Ok(store::history(&self.0.db, limit).await?)
    }
}

/// hearth's own housekeeping job: purges old history, dead jobs, domain
/// events past `events.retention` that every subscriber passed, old
/// pub/sub messages, expired tokens and spent rate-limit counters.
pub const HOUSEKEEPING: JobName<()> = JobName::new("hearth.housekeeping")
    .queue("hearth")
    .max_attempts(3);

/// What [`PING`] carries.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ping {
    /// How long the job holds its worker before finishing (at most 10
    /// minutes), to check that long jobs keep their lease.
    #[serde(default)]
    pub hold_ms: u64,
}

/// hearth's own no-op job: proves that workers claim and finish jobs
/// (`self-test` and `doctor` use it), optionally holding a worker for a while.
pub const PING: JobName<Ping> = JobName::new("hearth.ping").queue("hearth");

/// The handler of [`PING`].
pub(crate) async fn ping(run: JobRun<Ping>) -> anyhow::Result<()> {
    let hold = Duration::from_millis(run.payload.hold_ms.min(600_000));
    tokio::select! {
        () = tokio::time::sleep(hold) => Ok(()),
        () = run.cancel.cancelled() => Err(anyhow::anyhow!("cancelled while holding")),
    }
}

/// Decodes a payload for the handler of `P`, naming the field at fault.
pub(crate) fn decode<P: DeserializeOwned>(payload: &str) -> Result<P, String> {
    let de = &mut serde_json::Deserializer::from_str(payload);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || path.is_empty() {
            inner.to_string()
        } else {
            format!("field `{path}`: {inner}")
        }
    })
}
