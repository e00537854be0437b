//! The readers: one loop per subscribing module and partition.
//!
//! Each pass of a loop is one transaction. It locks the module's cursor of
//! its partition (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so another node
//! simply moves on; `BEGIN IMMEDIATE` on SQLite), runs the held events that
//! are due, then reads the next events past the cursor and hands each to the
//! module's handler. Passes first run without savepoints (two round trips
//! per event saved); when a handler fails, that pass is rolled back whole and
//! run again with a savepoint around each handler. There a failure rolls back
//! to its savepoint and takes the event out of the stream (held for retry, with the later
//! events of its key waiting behind it); the cursor moves past it. The
//! cursor and the handlers' writes then commit together, which is what makes
//! a handler's database effects happen exactly once.

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt as _;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::registry::{EventTx, Failure};
use super::store::{self, Cursor, Held, Stored};
use super::{Events, StartFrom, Subscriber};
use crate::jobs::now_ms;

/// What one pass found.
#[derive(Debug, PartialEq, Eq)]
enum Pass {
    /// It stopped with work left (a full batch, or out of time): go again.
    More,
    /// Events exist past the cursor but may not be read yet (a transaction
    /// that began before them is still open): look again shortly.
    HeldBack,
    /// Nothing to do (or another node has this partition).
    Idle,
}

/// Counts of one pass, for metrics.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Tally {
    /// Events handled successfully.
    pub(crate) handled: u64,
    /// Deliveries that failed.
    pub(crate) failed: u64,
}

/// Called after each pass that did something, with the module and its tally.
pub(crate) type OnPass = Arc<dyn Fn(&'static str, Tally) + Send + Sync>;

/// The running readers of one process.
pub(crate) struct Readers {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Readers {
    /// Creates missing cursors, then starts a loop per subscribing module
    /// and partition.
    pub(crate) async fn start(events: Events, on_pass: OnPass) -> Result<Self, sqlx::Error> {
        let stop = CancellationToken::new();
        let mut tasks = Vec::new();
        for sub in events.subscribers().iter() {
            store::init_cursors(
                events.db(),
                sub.module,
                sub.start == StartFrom::Now,
                now_ms(),
            )
            .await?;
            for part in 0..store::PARTS {
                tasks.push(tokio::spawn(run(
                    events.clone(),
                    sub.clone(),
                    part,
                    stop.clone(),
                    on_pass.clone(),
                )));
            }
        }
        for f in events.db().module_files() {
            tasks.push(tokio::spawn(relay_loop(
                events.clone(),
                f.module,
                stop.clone(),
            )));
        }
        Ok(Self { stop, tasks })
    }

    /// Stops the loops; a pass in progress finishes (its transaction is
    /// short: `events.batch_time` plus one handler).
    pub(crate) async fn shutdown(self) {
        self.stop.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Copies the outbox of a module with an SQLite file of its own into the
/// main database whenever something may have been published (a wake-up),
/// and at least every poll interval (another process may have published).
async fn relay_loop(events: Events, module: &'static str, stop: CancellationToken) {
    let mut wake = events.waker();
    let poll = events.config().poll_interval.get();
    let mut failing = Duration::from_millis(200);
    loop {
        wake.borrow_and_update();
        let wait = match store::relay(events.db(), module).await {
            Ok(0) => {
                failing = Duration::from_millis(200);
                poll
            }
            Ok(_) => {
                events.wake();
                continue;
            }
            Err(e) => {
                tracing::warn!(module, error = %e, "event relay failed; trying again");
                if !back_off(&mut failing, &stop).await {
                    return;
                }
                continue;
            }
        };
        if !rest(&mut wake, wait, &stop).await {
            return;
        }
    }
}

/// Waits out a failure, doubling the next wait up to 10 s; false when
/// stopped. A wake-up does not cut it short: the database is failing.
async fn back_off(failing: &mut Duration, stop: &CancellationToken) -> bool {
    let w = *failing;
    *failing = (*failing * 2).min(Duration::from_secs(10));
    tokio::select! {
        () = tokio::time::sleep(w) => true,
        () = stop.cancelled() => false,
    }
}

/// Waits for a wake-up or for `wait`; false when stopped.
async fn rest(
    wake: &mut tokio::sync::watch::Receiver<u64>,
    wait: Duration,
    stop: &CancellationToken,
) -> bool {
    tokio::select! {
        _ = wake.changed() => true,
        () = tokio::time::sleep(wait) => true,
        () = stop.cancelled() => false,
    }
}

/// Relays every module file's outbox until none is left; returns how many
/// events were copied.
async fn relay_all(events: &Events) -> Result<u64, sqlx::Error> {
    let mut n = 0;
    for f in events.db().module_files() {
        loop {
            let k = store::relay(events.db(), f.module).await?;
            n += k;
            if k == 0 {
                break;
            }
        }
    }
    Ok(n)
}

async fn run(
    events: Events,
    sub: Arc<Subscriber>,
    part: i16,
    stop: CancellationToken,
    on_pass: OnPass,
) {
    let mut wake = events.waker();
    let poll = events.config().poll_interval.get();
    let mut held_back = Duration::from_millis(5);
    let mut failing = Duration::from_millis(200);
    loop {
        if stop.is_cancelled() {
            return;
        }
        wake.borrow_and_update();
        let pass = tokio::select! {
            r = pass_twice(&events, &sub, part) => r,
            () = stop.cancelled() => return,
        };
        let wait = match pass {
            Ok((Pass::More, tally)) => {
                on_pass(sub.module, tally);
                held_back = Duration::from_millis(5);
                failing = Duration::from_millis(200);
                continue;
            }
            Ok((Pass::HeldBack, tally)) => {
                on_pass(sub.module, tally);
                failing = Duration::from_millis(200);
                let w = held_back;
                held_back = (held_back * 2).min(poll);
                w
            }
            Ok((Pass::Idle, tally)) => {
                on_pass(sub.module, tally);
                held_back = Duration::from_millis(5);
                failing = Duration::from_millis(200);
                poll
            }
            Err(e) => {
                tracing::warn!(module = sub.module, part, error = %e, "event reader failed; trying again");
                if !back_off(&mut failing, &stop).await {
                    return;
                }
                continue;
            }
        };
        if !rest(&mut wake, wait, &stop).await {
            return;
        }
    }
}

/// Runs passes for every subscriber and partition, in this task, until a
/// whole round handles and fails nothing. A partition held back by an open
/// transaction is looked at again for up to five seconds.
pub(crate) async fn drain(events: &Events) -> Result<u64, sqlx::Error> {
    let subs = events.subscribers();
    for sub in subs.iter() {
        store::init_cursors(
            events.db(),
            sub.module,
            sub.start == StartFrom::Now,
            now_ms(),
        )
        .await?;
    }
    let mut handled = 0;
    loop {
        // Handlers may have published from a module file's outbox.
        let mut progressed = relay_all(events).await? > 0;
        for sub in subs.iter() {
            for part in 0..store::PARTS {
                let mut waited = Duration::ZERO;
                loop {
                    let (pass, tally) = pass_twice(events, sub, part).await?;
                    handled += tally.handled;
                    progressed |= tally.handled + tally.failed > 0;
                    match pass {
                        Pass::More => {}
                        Pass::Idle => break,
                        Pass::HeldBack if waited < Duration::from_secs(5) => {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            waited += Duration::from_millis(10);
                        }
                        Pass::HeldBack => break,
                    }
                }
            }
        }
        if !progressed {
            return Ok(handled);
        }
    }
}

/// A pass without savepoints, which cost two round trips per event; if a
/// handler fails, that transaction is rolled back (the handlers' writes with
/// it) and the pass runs again with a savepoint around each handler.
async fn pass_twice(
    events: &Events,
    sub: &Subscriber,
    part: i16,
) -> Result<(Pass, Tally), sqlx::Error> {
    match pass(events, sub, part, false).await? {
        Some(done) => Ok(done),
        None => Ok(pass(events, sub, part, true)
            .await?
            .unwrap_or((Pass::More, Tally::default()))),
    }
}

/// One transaction's worth of work for `sub` in `part`. Without `careful`,
/// handlers run without savepoints and the first failure gives up the whole
/// pass (`None`).
async fn pass(
    events: &Events,
    sub: &Subscriber,
    part: i16,
    careful: bool,
) -> Result<Option<(Pass, Tally)>, sqlx::Error> {
    let mut tally = Tally::default();
    let now = now_ms();
    let work = store::has_work(events.db(), sub.module, part, now).await?;
    match work {
        store::Work::None => return Ok(Some((Pass::Idle, tally))),
        store::Work::HeldBack => return Ok(Some((Pass::HeldBack, tally))),
        store::Work::Ready => {}
    }
    let cfg = events.config();
    let deadline = Instant::now() + cfg.batch_time.get();
    let mut tx = events.db().begin().await?;
    let Some(cursor) = store::lock_cursor(&mut tx, sub.module, part).await? else {
        tx.rollback().await?;
        return Ok(Some((Pass::Idle, tally)));
    };
    let shared = EventTx::new(tx);
    let catalog = events.catalog();
    let max_attempts = i64::from(cfg.max_attempts);
    let mut more = false;

    // 1. Held events that are due, key by key, in order.
    let held = store::held_of(&mut *shared.lock().await, sub.module, part).await?;
    let mut blocked: HashSet<String> = HashSet::new();
    for group in by_key(&held) {
        let head = group[0];
        let due = (head.state == "retry" && head.next_at <= now) || head.state == "waiting";
        if !due || Instant::now() >= deadline {
            more |= due;
            if let Some(k) = &head.key {
                blocked.insert(k.clone());
            }
            continue;
        }
        for h in group {
            if Instant::now() >= deadline {
                more = true;
                if let Some(k) = &h.key {
                    blocked.insert(k.clone());
                }
                break;
            }
            let Some(e) = store::get(&mut *shared.lock().await, h.position).await? else {
                // Purged from under the hold (it cannot be, but nothing is gained by stopping).
                store::release(&mut *shared.lock().await, sub.module, h.position).await?;
                continue;
            };
            let attempt = u32::try_from(h.attempts + 1).unwrap_or(u32::MAX);
            let outcome = deliver(
                events,
                sub,
                &shared,
                &e,
                attempt,
                catalog.get(&e.name).is_some(),
                careful,
            )
            .await?;
            if outcome.is_some() && !careful {
                return Ok(None);
            }
            let mut tx = shared.lock().await;
            match outcome {
                None => {
                    store::release(&mut tx, sub.module, h.position).await?;
                    tally.handled += 1;
                }
                Some((failure, retryable)) => {
                    tally.failed += 1;
                    let attempts = h.attempts + 1;
                    let (state, next_at) = if retryable && attempts < max_attempts {
                        (
                            "retry",
                            now + ms(cfg.backoff(u32::try_from(attempts).unwrap_or(u32::MAX))),
                        )
                    } else {
                        ("parked", i64::MAX)
                    };
                    log_failure(sub.module, &e, attempts, state, &failure);
                    store::set_held(
                        &mut tx,
                        sub.module,
                        h.position,
                        state,
                        attempts,
                        next_at,
                        Some(&failure),
                    )
                    .await?;
                    if let Some(k) = &h.key {
                        blocked.insert(k.clone());
                    }
                    break;
                }
            }
        }
    }

    // 2. The stream past the cursor.
    let batch = i64::from(cfg.batch);
    let read = store::read(&mut *shared.lock().await, part, cursor, batch).await?;
    let full = read.len() as i64 == batch;
    let mut to = cursor;
    let mut stopped_early = false;
    for e in &read {
        if Instant::now() >= deadline && to != cursor {
            stopped_early = true;
            break;
        }
        to = Cursor {
            tx: e.tx,
            position: e.position,
        };
        let declared = catalog.get(&e.name).is_some();
        if declared && sub.handler(&e.name).is_none() {
            continue;
        }
        if let Some(k) = &e.key
            && blocked.contains(k)
        {
            store::hold(
                &mut *shared.lock().await,
                sub.module,
                part,
                e,
                "waiting",
                0,
                i64::MAX,
                None,
                now,
            )
            .await?;
            continue;
        }
        let outcome = deliver(events, sub, &shared, e, 1, declared, careful).await?;
        if outcome.is_some() && !careful {
            return Ok(None);
        }
        let mut tx = shared.lock().await;
        match outcome {
            None => tally.handled += 1,
            Some((failure, retryable)) => {
                tally.failed += 1;
                let (state, next_at) = if retryable && max_attempts > 1 {
                    ("retry", now + ms(cfg.backoff(1)))
                } else {
                    ("parked", i64::MAX)
                };
                log_failure(sub.module, e, 1, state, &failure);
                store::hold(
                    &mut tx,
                    sub.module,
                    part,
                    e,
                    state,
                    1,
                    next_at,
                    Some(&failure),
                    now,
                )
                .await?;
                if let Some(k) = &e.key {
                    blocked.insert(k.clone());
                }
            }
        }
    }
    let handled = i64::try_from(tally.handled).unwrap_or(i64::MAX);
    let mut tx = shared.into_inner().map_err(|_| {
        sqlx::Error::Protocol("an event handler kept its transaction after returning".into())
    })?;
    if to != cursor || handled > 0 {
        store::advance(&mut tx, sub.module, part, to, handled, now_ms()).await?;
    }
    tx.commit().await?;
    let pass = if more || stopped_early || full {
        Pass::More
    } else {
        Pass::Idle
    };
    Ok(Some((pass, tally)))
}

/// Held rows grouped by key; a keyless row is a group of its own.
fn by_key(held: &[Held]) -> Vec<Vec<&Held>> {
    let mut groups: Vec<Vec<&Held>> = Vec::new();
    for h in held {
        match groups.last_mut() {
            Some(g) if h.key.is_some() && g[0].key == h.key => g.push(h),
            _ => groups.push(vec![h]),
        }
    }
    groups
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2)
}

fn log_failure(module: &str, e: &Stored, attempt: i64, state: &str, failure: &str) {
    if state == "parked" {
        tracing::error!(module, position = e.position, event = %e.name, key = e.key.as_deref().unwrap_or(""), attempt, error = %failure, "event parked: later events of its key wait until `events retry` or `events skip`");
    } else {
        tracing::warn!(module, position = e.position, event = %e.name, attempt, error = %failure, "event handler failed; will retry");
    }
}

/// Runs `sub`'s handler for `e` under a savepoint. `None` on success;
/// otherwise why, and whether another attempt could help. An `Err` is a
/// database failure outside the handler: the whole pass is given up.
async fn deliver(
    events: &Events,
    sub: &Subscriber,
    shared: &EventTx,
    e: &Stored,
    attempt: u32,
    declared: bool,
    careful: bool,
) -> Result<Option<(String, bool)>, sqlx::Error> {
    if !declared {
        return Ok(Some((
            format!(
                "unknown event `{}`: no module of this binary declares it",
                e.name
            ),
            false,
        )));
    }
    let Some(handler) = sub.handler(&e.name) else {
        return Ok(None);
    };
    if careful {
        savepoint(shared, "SAVEPOINT hearth_event").await?;
    }
    let timeout = events.config().timeout.get();
    let fut = AssertUnwindSafe(handler(e.clone(), shared.clone(), attempt)).catch_unwind();
    let outcome = match tokio::time::timeout(timeout, fut).await {
        Err(_) => Err(Failure::Failed(format!("timed out after {timeout:?}"))),
        Ok(Err(panic)) => Err(Failure::Failed(format!(
            "panicked: {}",
            crate::jobs::worker::panic_message(panic.as_ref())
        ))),
        Ok(Ok(r)) => r,
    };
    match outcome {
        Ok(()) => {
            if careful {
                savepoint(shared, "RELEASE SAVEPOINT hearth_event").await?;
            }
            Ok(None)
        }
        Err(f) => {
            if careful {
                savepoint(shared, "ROLLBACK TO SAVEPOINT hearth_event").await?;
                savepoint(shared, "RELEASE SAVEPOINT hearth_event").await?;
            }
            Ok(Some(match f {
                Failure::Undecodable(p) => (p, false),
                Failure::Failed(p) => (p, true),
            }))
        }
    }
}

async fn savepoint(shared: &EventTx, sql: &'static str) -> Result<(), sqlx::Error> {
    let mut tx = shared.lock().await;
    crate::with_tx!(&mut *tx, c => sqlx::query(sql).execute(&mut **c).await.map(|_| ()))?;
    Ok(())
}
