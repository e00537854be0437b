//! The worker runtime: one claim loop per queue, a lease keeper, a batched
//! completer, and graceful shutdown.
//!
//! * Each queue has a semaphore of `concurrency` permits. The loop takes as
//!   many free permits as it can (up to `claim_batch`), claims that many due
//!   jobs in one statement, and runs each in its own task. When it finds
//!   fewer jobs than permits it sleeps until woken (after an enqueue commits,
//!   in-process, or by PostgreSQL NOTIFY from another node), until the next
//!   delayed job is due, or for `poll_interval`, whichever comes first.
//! * The lease keeper renews the leases of every job this process runs in
//!   one UPDATE, and rescues jobs of any node whose lease ran out.
//! * Successes go through a channel to one completer task, which deletes them
//!   in batches: under load one statement finishes many jobs.
//! * Shutdown stops claiming, gives running jobs `shutdown_timeout` to finish,
//!   then cancels them and returns their jobs to `pending`.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::registry::{Claim, Registry};
use super::store::{self, Claimed, Next};
use super::{Jobs, Permanent, now_ms};
use crate::telemetry::{Metrics, Notifier};

/// What workers need: the queue, the handlers modules registered (each
/// holding the state it was registered with), and where to report.
#[derive(Clone)]
pub(crate) struct Runtime {
    /// The queue handle.
    pub jobs: Jobs,
    /// Every registered job, with its handler.
    pub registry: Arc<Registry>,
    /// Job timings and failures.
    pub metrics: Metrics,
    /// Dead jobs and stuck leases are reported here.
    pub notifier: Notifier,
}

/// What every task of the runtime shares.
struct Shared {
    rt: Runtime,
    worker: String,
    /// Stops the claim loops.
    stop_claiming: CancellationToken,
    /// Interrupts running jobs; fired when the shutdown bound passes.
    interrupt: CancellationToken,
    running: TaskTracker,
    done: mpsc::Sender<(i64, i64)>,
}

impl Shared {
    fn new(rt: Runtime, done: mpsc::Sender<(i64, i64)>) -> Self {
        Self {
            rt,
            worker: worker_id(),
            stop_claiming: CancellationToken::new(),
            interrupt: CancellationToken::new(),
            running: TaskTracker::new(),
            done,
        }
    }
}

/// A running set of workers; stop it with [`Workers::shutdown`].
pub(crate) struct Workers {
    shared: Arc<Shared>,
    stop_background: CancellationToken,
    loops: Vec<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
    completer: JoinHandle<()>,
}

/// This process's worker id: host, pid and a random suffix, so that two
/// runs of one process never share leases.
fn worker_id() -> String {
    let host = crate::telemetry::notify::hostname().unwrap_or_else(|| "host".into());
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}:{}:{}", std::process::id(), &suffix[..8])
}

impl Workers {
    /// Starts a claim loop for every queue some registered job runs on, the
    /// lease keeper and the completer.
    pub(crate) fn start(rt: Runtime) -> Workers {
        let jobs = rt.jobs.clone();
        let registry = rt.registry.clone();
        let (done_tx, done_rx) = mpsc::channel(4096);
        let shared = Arc::new(Shared::new(rt, done_tx));
        let stop_background = CancellationToken::new();
        let loops = registry
            .queues()
            .into_iter()
            .map(|q| tokio::spawn(queue_loop(shared.clone(), q)))
            .collect();
        let mut background = vec![tokio::spawn(lease_keeper(
            shared.clone(),
            stop_background.clone(),
        ))];
        let schedules = jobs.schedules();
        if !schedules.is_empty() {
            background.push(tokio::spawn(super::cron::scheduler(
                jobs.clone(),
                schedules,
                stop_background.clone(),
            )));
        }
        let completer = tokio::spawn(completer(jobs, done_rx));
        tracing::info!(worker = %shared.worker, queues = ?registry.queues(), "workers started");
        Workers {
            shared,
            stop_background,
            loops,
            background,
            completer,
        }
    }

    /// This process's worker id, as stored on the jobs it runs.
    pub(crate) fn id(&self) -> &str {
        &self.shared.worker
    }

    /// Stops claiming, waits up to `jobs.shutdown_timeout` for running jobs,
    /// interrupts the rest and returns their jobs to `pending`.
    pub(crate) async fn shutdown(self) {
        let Workers {
            shared,
            stop_background,
            loops,
            background,
            completer,
        } = self;
        shared.stop_claiming.cancel();
        for l in loops {
            let _ = l.await;
        }
        shared.running.close();
        let bound = shared.rt.jobs.config().shutdown_timeout.get();
        if tokio::time::timeout(bound, shared.running.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                running = shared.running.len(),
                "jobs still running after the shutdown bound; interrupting them"
            );
            shared.interrupt.cancel();
            // Interrupted jobs return themselves to pending; this only waits for those writes.
            let _ = tokio::time::timeout(Duration::from_secs(5), shared.running.wait()).await;
        }
        stop_background.cancel();
        for b in background {
            let _ = b.await;
        }
        let jobs = shared.rt.jobs.clone();
        let worker = shared.worker.clone();
        // The last sender goes with `shared`; the completer then flushes and ends.
        drop(shared);
        let _ = completer.await;
        // Anything this worker still holds (a write above failed) goes back now
        // rather than waiting for its lease.
        match store::release_all(jobs.worker_db(), &worker, now_ms()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(jobs = n, "returned unfinished jobs to pending"),
            Err(e) => {
                tracing::warn!(error = %e, "could not return unfinished jobs; their leases will expire")
            }
        }
        tracing::info!(%worker, "workers stopped");
    }
}

/// Runs every due job now, in the calling task and one at a time, until
/// none is due or `limit` have run: what a use case does between WHEN and
/// THEN, in an app started without workers. Returns how many ran; a job
/// that fails is retried later or dies, as it would under a worker.
pub(crate) async fn drain(rt: &Runtime, limit: usize) -> Result<usize, sqlx::Error> {
    let jobs = rt.jobs.clone();
    let (done_tx, done_rx) = mpsc::channel(64);
    let shared = Shared::new(rt.clone(), done_tx);
    let completer = tokio::spawn(completer(jobs.clone(), done_rx));
    let db = jobs.worker_db().clone();
    let span = millis(jobs.config().lease_span());
    let mut ran = 0;
    let mut outcome = Ok(());
    'rounds: while ran < limit {
        let mut any = false;
        for queue in shared.rt.registry.queues() {
            let now = now_ms();
            let claimed = match store::claim(&db, queue, 16, now, now + span, &shared.worker).await
            {
                Ok(c) => c,
                Err(e) => {
                    outcome = Err(e);
                    break 'rounds;
                }
            };
            for job in claimed {
                any = true;
                ran += 1;
                run_job(&shared, queue, job).await;
            }
        }
        if !any {
            break;
        }
    }
    // The completer records the successes once the last sender is gone.
    drop(shared);
    let _ = completer.await;
    outcome.map(|()| ran)
}

/// One queue's claim loop. It keeps up to `prefetch` claimed jobs in a local
/// buffer beyond the running ones, refilling it when it is half empty, so a
/// finished job's slot is filled without waiting for the database.
async fn queue_loop(shared: Arc<Shared>, queue: &'static str) {
    let cfg = shared.rt.jobs.config().clone();
    let db = shared.rt.jobs.worker_db().clone();
    let slots = Arc::new(Semaphore::new(cfg.concurrency_of(queue)));
    let prefetch = cfg.prefetch_of(queue);
    let wake = shared.rt.jobs.wake().waiter(queue);
    let poll = cfg.poll_interval.get();
    let batch = cfg.claim_batch as usize;
    let stop = shared.stop_claiming.clone();
    let mut ready: VecDeque<Claimed> = VecDeque::with_capacity(batch);
    let mut held: Option<OwnedSemaphorePermit> = None;
    // Whether the last claim found fewer due jobs than it asked for.
    let mut drained = false;
    while !stop.is_cancelled() {
        // Start buffered jobs while slots are free.
        while !ready.is_empty() {
            let permit = match held.take() {
                Some(p) => p,
                None => match slots.clone().try_acquire_owned() {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let Some(job) = ready.pop_front() else { break };
            let shared2 = shared.clone();
            shared.running.spawn(async move {
                run_job(&shared2, queue, job).await;
                drop(permit);
            });
        }
        // Refill when the buffer is half empty, unless the last claim already
        // found the queue empty: then wait for a wake-up first (below).
        let free = slots.available_permits() + usize::from(held.is_some());
        let room = (free + prefetch).saturating_sub(ready.len());
        if !drained && ready.len() <= prefetch / 2 && room > 0 {
            let wanted = room.min(batch);
            let now = now_ms();
            let lease_until = now + millis(cfg.lease_span());
            match store::claim(&db, queue, wanted as i64, now, lease_until, &shared.worker).await {
                Ok(claimed) => {
                    drained = claimed.len() < wanted;
                    ready.extend(claimed);
                }
                Err(e) => {
                    tracing::warn!(queue, error = %e, "claiming jobs failed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(poll.max(Duration::from_millis(500))) => {}
                        () = stop.cancelled() => break,
                    }
                    continue;
                }
            }
            if !ready.is_empty() && (held.is_some() || slots.available_permits() > 0) {
                continue;
            }
        }
        if ready.is_empty() && drained {
            // Nothing more is due: sleep until woken, the next run time, or the poll interval.
            let wait = match store::next_run_at(&db, queue).await {
                Ok(Some(at)) => {
                    Duration::from_millis(u64::try_from(at - now_ms()).unwrap_or(0)).min(poll)
                }
                _ => poll,
            };
            if !wait.is_zero() {
                tokio::select! {
                    () = wake.notified() => {}
                    () = tokio::time::sleep(wait) => {}
                    () = stop.cancelled() => break,
                }
            }
            drained = false;
        } else if held.is_none() {
            // Jobs are waiting for a slot, or there is no room to claim: wait for a slot.
            // (With jobs buffered and a slot held, the loop has already started them.)
            tokio::select! {
                p = slots.clone().acquire_owned() => match p {
                    Ok(p) => held = Some(p),
                    Err(_) => break,
                },
                () = stop.cancelled() => break,
            }
        }
    }
    // Jobs claimed ahead but never started go back at once, attempt returned,
    // rather than waiting for the end of shutdown.
    let now = now_ms();
    for job in ready {
        if let Err(e) = store::fail(&db, job.id, job.attempts, "", Next::Release, now).await {
            tracing::warn!(job = job.id, error = %e, "could not return a job claimed ahead; it goes back with the others at the end of shutdown");
        }
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
}

/// How an attempt ended.
enum Ended {
    Ok,
    Failed { error: String, permanent: bool },
    Interrupted,
}

async fn run_job(shared: &Shared, queue: &'static str, job: Claimed) {
    let registry = &shared.rt.registry;
    let attempt = u32::try_from(job.attempts).unwrap_or(u32::MAX);
    // Due → started: for a retry, from the time its backoff ended.
    let delay = now_ms().saturating_sub(job.run_at).max(0);
    shared.rt.metrics.job_started(
        queue,
        Duration::from_millis(u64::try_from(delay).unwrap_or(0)),
    );
    let ended = match registry.get(&job.name).and_then(|d| d.handler.clone()) {
        None => Ended::Failed {
            error: format!(
                "unknown job `{}`: this binary registers no handler for it",
                job.name
            ),
            permanent: true,
        },
        Some(handler) => {
            let cancel = shared.interrupt.child_token();
            let timeout = Duration::from_millis(u64::try_from(job.timeout_ms).unwrap_or(0));
            let fut = handler(Claim {
                id: job.id,
                payload: job.payload.clone(),
                attempt,
                max_attempts: u32::try_from(job.max_attempts).unwrap_or(u32::MAX),
                scheduled_at: std::time::UNIX_EPOCH
                    + Duration::from_millis(u64::try_from(job.run_at).unwrap_or(0)),
                cancel: cancel.clone(),
            });
            let started = std::time::Instant::now();
            let ended = tokio::select! {
                r = AssertUnwindSafe(fut).catch_unwind() => match r {
                    Ok(Ok(())) => Ended::Ok,
                    Ok(Err(e)) => Ended::Failed {
                        permanent: e.downcast_ref::<Permanent>().is_some(),
                        error: format!("{e:#}"),
                    },
                    Err(panic) => {
                        let message = panic_message(panic.as_ref());
                        shared.rt.notifier.send(
                            crate::telemetry::EventKind::Panic,
                            format!("job {}", job.name),
                            format!("job {} (`{}`) panicked on attempt {attempt}: {message}", job.id, job.name),
                        );
                        Ended::Failed {
                            error: format!("panicked: {message}"),
                            permanent: false,
                        }
                    }
                },
                () = tokio::time::sleep(timeout) => Ended::Failed {
                    error: format!("timed out after {} ms", job.timeout_ms),
                    permanent: false,
                },
                () = shared.interrupt.cancelled() => Ended::Interrupted,
            };
            // A handler that saw the interrupt through its token and returned
            // an error was interrupted too, not failed: its attempt is given back.
            let ended = match ended {
                Ended::Failed { .. } if shared.interrupt.is_cancelled() => Ended::Interrupted,
                other => other,
            };
            // Tell a handler that moved work elsewhere (spawn_blocking) to stop.
            cancel.cancel();
            tracing::debug!(
                job = job.id,
                name = %job.name,
                attempt,
                ms = started.elapsed().as_millis() as u64,
                ok = matches!(ended, Ended::Ok),
                "job attempt finished"
            );
            ended
        }
    };
    let now = now_ms();
    let next = match ended {
        Ended::Ok => {
            if shared.done.send((job.id, job.attempts)).await.is_err() {
                // The completer is gone (shutting down): finish this one directly.
                let keep = !shared.rt.jobs.config().history.is_zero();
                if let Err(e) = store::complete(
                    shared.rt.jobs.worker_db(),
                    &[(job.id, job.attempts)],
                    now,
                    keep,
                )
                .await
                {
                    tracing::warn!(job = job.id, error = %e, "could not record success; the job will run again");
                }
            }
            return;
        }
        Ended::Interrupted => (Next::Release, String::new()),
        Ended::Failed { error, permanent } => {
            let out_of_attempts = job.attempts >= job.max_attempts;
            let next = if permanent || out_of_attempts {
                let redact = shared.rt.registry.get(&job.name).and_then(|d| d.redact);
                Next::Dead(redact.map(|r| r(&job.payload)))
            } else {
                Next::Retry(now + millis(backoff(shared.rt.jobs.config(), attempt)))
            };
            let dead = matches!(next, Next::Dead(_));
            shared.rt.metrics.job_failed(queue, &job.name, dead);
            if dead {
                tracing::error!(job = job.id, name = %job.name, attempt, error = %error, "job is dead");
                notify_dead(shared, &job, &error);
            } else {
                tracing::warn!(job = job.id, name = %job.name, attempt, error = %error, "job failed; will retry");
            }
            (next, error)
        }
    };
    let (next, error) = next;
    // Errors are kept short: they are for people, and a huge one would bloat the row.
    let error = truncate(&error, 2000);
    if let Err(e) = store::fail(
        shared.rt.jobs.worker_db(),
        job.id,
        job.attempts,
        error,
        next,
        now,
    )
    .await
    {
        tracing::warn!(job = job.id, error = %e, "could not record the failure; the lease will expire and the job will be rescued");
    }
}

/// Tells the operator: a job fired by a cron schedule is a failed cron run,
/// any other a dead job.
fn notify_dead(shared: &Shared, job: &Claimed, error: &str) {
    let schedules = shared.rt.jobs.schedules();
    let cron = schedules.iter().find(|c| c.schedule.job == job.name);
    let error = truncate(error, 500);
    match cron {
        Some(c) => shared.rt.notifier.send(
            crate::telemetry::EventKind::CronFailed,
            c.schedule.name(),
            format!(
                "the `{}` run of schedule `{}` (job {}) failed after {} attempt(s): {error}",
                job.name,
                c.schedule.name(),
                job.id,
                job.attempts
            ),
        ),
        None => shared.rt.notifier.send(
            crate::telemetry::EventKind::JobDead,
            job.name.clone(),
            format!(
                "job {} (`{}`) is dead after {} attempt(s): {error}",
                job.id, job.name, job.attempts
            ),
        ),
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

pub(crate) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-text panic".to_owned()
    }
}

/// Delay before attempt `attempt + 1`: `backoff_base × 2^(attempt-1)`, capped
/// at `backoff_max`, then spread by ±25% so that jobs failing together do not
/// retry together.
pub(crate) fn backoff(cfg: &super::JobsConfig, attempt: u32) -> Duration {
    let base = cfg.backoff_base.get().as_millis() as f64;
    let max = cfg.backoff_max.get().as_millis() as f64;
    let exp = 2f64.powi(attempt.saturating_sub(1).min(62) as i32);
    let plain = (base * exp).min(max);
    let jitter = 0.75 + fastrand::f64() * 0.5;
    Duration::from_millis((plain * jitter) as u64)
}

async fn lease_keeper(shared: Arc<Shared>, stop: CancellationToken) {
    let cfg = shared.rt.jobs.config().clone();
    let db = shared.rt.jobs.worker_db().clone();
    let every = cfg.heartbeat_every();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        let now = now_ms();
        if let Err(e) = store::heartbeat(&db, &shared.worker, now + millis(cfg.lease_span())).await
        {
            tracing::warn!(error = %e, "renewing job leases failed");
        }
        loop {
            let registry = &shared.rt.registry;
            let redact_for = |name: &str| registry.get(name).and_then(|d| d.redact);
            match store::rescue(&db, now_ms(), 200, &redact_for).await {
                Ok(rescued) => {
                    for r in &rescued {
                        tracing::warn!(job = r.id, name = %r.name, queue = %r.queue, attempts = r.attempts, max_attempts = r.max_attempts, worker = %r.worker, "rescued a job whose lease expired");
                        shared.rt.jobs.wake().notify(&r.queue);
                    }
                    if rescued.len() < 200 {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "rescuing expired jobs failed");
                    break;
                }
            }
        }
    }
}

/// Deletes finished jobs in batches: it takes whatever has queued up since
/// its last write, so an idle system finishes each job at once and a busy one
/// finishes hundreds per statement.
async fn completer(jobs: Jobs, mut rx: mpsc::Receiver<(i64, i64)>) {
    let keep = !jobs.config().history.is_zero();
    let mut batch = Vec::with_capacity(512);
    while rx.recv_many(&mut batch, 512).await > 0 {
        let now = now_ms();
        let mut tries = 0;
        loop {
            match store::complete(jobs.worker_db(), &batch, now, keep).await {
                Ok(()) => break,
                Err(e) if tries < 3 => {
                    tries += 1;
                    tracing::warn!(error = %e, jobs = batch.len(), "recording finished jobs failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * tries)).await;
                }
                Err(e) => {
                    tracing::error!(error = %e, jobs = batch.len(), "could not record finished jobs; they will run again when their leases expire");
                    break;
                }
            }
        }
        batch.clear();
    }
}
