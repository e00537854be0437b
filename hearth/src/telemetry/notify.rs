//! `notify`: one funnel for what concerns the operator.
//!
//! Server start and stop, panics, 5xx responses, dead jobs, failed cron
//! runs, an unreachable database and failed backups are sent here with
//! [`Notifier::send`], which never blocks: the event goes into a bounded
//! channel and one task per process handles it. That task
//!
//! 1. **deduplicates**: an event of the same kind about the same subject (a
//!    route, a job, a schedule) goes out once per `notify.dedup_window`; the
//!    repeats are counted and reported with the next one, or in a summary
//!    when the window closes;
//! 2. **logs** what goes out at target `hearth::notify` (errors for failures,
//!    info for start and stop);
//! 3. **rate-limits** what leaves the machine: at most `notify.max_per_hour`
//!    notifications an hour are mailed or posted, all kinds together;
//! 4. **delivers**: a JSON POST to `notify.webhook` (bounded by
//!    `notify.webhook_timeout`, signed with `notify.webhook_secret` when set)
//!    and, with `notify.mail_admins`, a mail to every admin through the job
//!    queue (which a down database makes impossible: the log says so).
//!
//! So an outage that fails every request produces one log line, one POST and
//! one mail per window, not one per request.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::db::Db;
use crate::jobs::Jobs;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The server started serving.
    ServerStarted,
    /// The server stopped.
    ServerStopped,
    /// A request handler or a job panicked.
    Panic,
    /// A response with a 5xx status.
    ServerError,
    /// A job ran out of attempts and was dead-lettered.
    JobDead,
    /// A job fired by a cron schedule was dead-lettered.
    CronFailed,
    /// The database did not answer.
    DatabaseUnreachable,
    /// A backup failed.
    BackupFailed,
}

impl EventKind {
    /// The snake_case name used in logs and webhook bodies.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ServerStarted => "server_started",
            Self::ServerStopped => "server_stopped",
            Self::Panic => "panic",
            Self::ServerError => "server_error",
            Self::JobDead => "job_dead",
            Self::CronFailed => "cron_failed",
            Self::DatabaseUnreachable => "database_unreachable",
            Self::BackupFailed => "backup_failed",
        }
    }

    fn is_failure(self) -> bool {
        !matches!(self, Self::ServerStarted | Self::ServerStopped)
    }
}

/// One event for the operator.
#[derive(Debug, Clone)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// What it happened to (a route, a job name, a schedule): events are
    /// deduplicated by kind and subject.
    pub subject: String,
    /// The details, for people.
    pub message: String,
}

enum Msg {
    Event(Event),
    /// Answered once everything sent before it has been handled.
    Flush(oneshot::Sender<()>),
    /// Handles what is queued, then stops.
    Close(oneshot::Sender<()>),
}

/// Events waiting for the task; past this they are dropped (and counted).
const QUEUE: usize = 1024;

/// The funnel; cheap to clone. See the module docs.
#[derive(Clone)]
pub struct Notifier(Arc<Shared>);

struct Shared {
    tx: mpsc::Sender<Msg>,
    // The receiver until `start` hands it to the task.
    rx: Mutex<Option<mpsc::Receiver<Msg>>>,
    task: Mutex<Option<JoinHandle<()>>>,
    dropped: std::sync::atomic::AtomicU64,
    setup: Setup,
}

#[derive(Clone)]
struct Setup {
    app: &'static str,
    host: String,
    config: crate::telemetry::NotifyConfig,
    admins: Vec<String>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("app", &self.0.setup.app)
            .finish_non_exhaustive()
    }
}

impl Notifier {
    /// A funnel for `app`; nothing is handled until [`Notifier::start`].
    pub(crate) fn new(config: &Config, app: &'static str) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let host = hostname().unwrap_or_else(|| "localhost".into());
        Self(Arc::new(Shared {
            tx,
            rx: Mutex::new(Some(rx)),
            task: Mutex::new(None),
            dropped: std::sync::atomic::AtomicU64::new(0),
            setup: Setup {
                app,
                host,
                config: config.notify.clone(),
                admins: config.auth.admins.clone(),
            },
        }))
    }

    /// Starts the task that handles events (once; later calls do nothing).
    /// Mail goes through `jobs` on `db`.
    pub(crate) fn start(&self, db: Db, jobs: Jobs) {
        let rx = self
            .0
            .rx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(rx) = rx else { return };
        let task = tokio::spawn(run(self.0.setup.clone(), rx, db, jobs));
        *self.0.task.lock().unwrap_or_else(PoisonError::into_inner) = Some(task);
    }

    /// Hands an event to the funnel without waiting. When the funnel is
    /// saturated the event is dropped; the count shows in the next one's log.
    pub fn send(&self, kind: EventKind, subject: impl Into<String>, message: impl Into<String>) {
        let event = Event {
            kind,
            subject: subject.into(),
            message: message.into(),
        };
        if self.0.tx.try_send(Msg::Event(event)).is_err() {
            self.0
                .dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Waits until every event sent before this call has been handled
    /// (delivered, suppressed or rate-limited), bounded by `limit`. Returns
    /// false on timeout or when the task is not running.
    pub async fn flush(&self, limit: Duration) -> bool {
        let (ack, done) = oneshot::channel();
        if self.0.tx.send(Msg::Flush(ack)).await.is_err() {
            return false;
        }
        matches!(tokio::time::timeout(limit, done).await, Ok(Ok(())))
    }

    /// Handles what is queued (bounded by a webhook timeout per event, at most
    /// `limit` overall) and stops the task.
    pub(crate) async fn close(&self, limit: Duration) {
        let task = self
            .0
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(task) = task else { return };
        let (ack, done) = oneshot::channel();
        if self.0.tx.send(Msg::Close(ack)).await.is_ok()
            && tokio::time::timeout(limit, done).await.is_ok()
        {
            let _ = task.await;
        } else {
            task.abort();
        }
    }

    /// Events dropped because the funnel was full.
    pub fn dropped(&self) -> u64 {
        self.0.dropped.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The body of a webhook POST.
#[derive(Serialize)]
struct Payload<'a> {
    app: &'a str,
    host: &'a str,
    kind: EventKind,
    subject: &'a str,
    message: &'a str,
    /// Events like this one suppressed since the last that went out.
    repeats: u64,
    at: String,
}

async fn run(setup: Setup, mut rx: mpsc::Receiver<Msg>, db: Db, jobs: Jobs) {
    let mut gate = Gate::new(setup.config.dedup_window.get(), setup.config.max_per_hour);
    let client = webhook_client(&setup);
    let mut tick = tokio::time::interval(Duration::from_secs(30).min(gate.window));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(Msg::Event(e)) => {
                    if let Some(repeats) = gate.admit(&e, Instant::now()) {
                        deliver(&setup, &mut gate, client.as_ref(), &db, &jobs, &e, repeats).await;
                    }
                }
                Some(Msg::Flush(ack)) => {
                    let _ = ack.send(());
                }
                Some(Msg::Close(ack)) => {
                    let _ = ack.send(());
                    break;
                }
                None => break,
            },
            _ = tick.tick() => {
                for (e, repeats) in gate.closed_windows(Instant::now()) {
                    deliver(&setup, &mut gate, client.as_ref(), &db, &jobs, &e, repeats).await;
                }
            }
        }
    }
}

async fn deliver(
    setup: &Setup,
    gate: &mut Gate,
    client: Option<&reqwest::Client>,
    db: &Db,
    jobs: &Jobs,
    e: &Event,
    repeats: u64,
) {
    let kind = e.kind.as_str();
    if e.kind.is_failure() {
        tracing::error!(target: "hearth::notify", kind, subject = %e.subject, repeats, "{}", e.message);
    } else {
        tracing::info!(target: "hearth::notify", kind, subject = %e.subject, "{}", e.message);
    }
    let outbound = client.is_some() || setup.config.mail_admins;
    if !outbound {
        return;
    }
    if !gate.outbound(Instant::now()) {
        tracing::warn!(target: "hearth::notify", kind, subject = %e.subject,
            limit = setup.config.max_per_hour,
            "not mailed or posted: the hourly notification limit is reached");
        return;
    }
    let payload = Payload {
        app: setup.app,
        host: &setup.host,
        kind: e.kind,
        subject: &e.subject,
        message: &e.message,
        repeats,
        at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    };
    if let (Some(client), Some(url)) = (client, &setup.config.webhook) {
        post(client, url.expose(), setup, &payload).await;
    }
    if setup.config.mail_admins {
        mail_admins(setup, db, jobs, &payload).await;
    }
}

fn webhook_client(setup: &Setup) -> Option<reqwest::Client> {
    setup.config.webhook.as_ref()?;
    // reqwest is built without a crypto provider of its own: use ring, the
    // one the rest of hearth uses. (Already installed is fine.)
    let _ = rustls::crypto::ring::default_provider().install_default();
    match reqwest::Client::builder()
        .timeout(setup.config.webhook_timeout.get())
        .connect_timeout(setup.config.webhook_timeout.get())
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("hearth/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::error!(target: "hearth::notify", error = %e, "cannot build the webhook client; webhooks are off");
            None
        }
    }
}

async fn post(client: &reqwest::Client, url: &str, setup: &Setup, payload: &Payload<'_>) {
    let body = match serde_json::to_vec(payload) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(target: "hearth::notify", error = %e, "cannot encode the webhook body");
            return;
        }
    };
    let mut req = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json");
    if let Some(secret) = &setup.config.webhook_secret
        && let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.expose().as_bytes())
    {
        mac.update(&body);
        let sig = hex::encode(mac.finalize().into_bytes());
        req = req.header("x-hearth-signature", format!("sha256={sig}"));
    }
    match req.body(body).send().await {
        Ok(res) if res.status().is_success() => {}
        Ok(res) => {
            tracing::warn!(target: "hearth::notify", status = res.status().as_u16(), "the webhook refused a notification");
        }
        Err(e) => {
            // reqwest's error names the URL; keep only what failed.
            tracing::warn!(target: "hearth::notify", error = %e.without_url(), "the webhook could not be reached");
        }
    }
}

async fn mail_admins(setup: &Setup, db: &Db, jobs: &Jobs, p: &Payload<'_>) {
    let result = async {
        let mut to = crate::auth::Users::new(db.clone()).admin_emails().await?;
        for a in &setup.admins {
            let a = a.trim().to_lowercase();
            if !to.contains(&a) {
                to.push(a);
            }
        }
        if to.is_empty() {
            return Ok::<usize, anyhow::Error>(0);
        }
        let subject = format!("[{}] {}: {}", p.app, p.kind.as_str(), p.subject);
        let mut text = format!(
            "{}\n\napp: {}\nhost: {}\nkind: {}\nsubject: {}\nat: {}\n",
            p.message,
            p.app,
            p.host,
            p.kind.as_str(),
            p.subject,
            p.at
        );
        if p.repeats > 0 {
            text.push_str(&format!(
                "repeats: {} more like this were not sent\n",
                p.repeats
            ));
        }
        let mut tx = db.begin().await?;
        for addr in &to {
            let mail = crate::mail::Mail {
                to: addr.clone(),
                subject: subject.clone(),
                text: text.clone(),
                html: None,
                link: None,
            };
            crate::mail::enqueue(jobs, &mut tx, &mail).await?;
        }
        tx.commit().await?;
        Ok(to.len())
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(target: "hearth::notify", error = %e, "cannot queue the notification mail to the admins");
    }
}

/// Deduplication and the hourly limit; pure, so it is tested without clocks.
struct Gate {
    window: Duration,
    per_hour: u32,
    seen: HashMap<(EventKind, String), Seen>,
    sent: VecDeque<Instant>,
}

struct Seen {
    last_sent: Instant,
    suppressed: u64,
    message: String,
}

impl Gate {
    fn new(window: Duration, per_hour: u32) -> Self {
        Self {
            window: window.max(Duration::from_secs(1)),
            per_hour,
            seen: HashMap::new(),
            sent: VecDeque::new(),
        }
    }

    /// `Some(repeats)` when the event goes out (with the count of those
    /// suppressed since the last one), `None` when it is a repeat.
    fn admit(&mut self, e: &Event, now: Instant) -> Option<u64> {
        // Start and stop are never repeats: each one is news.
        if !e.kind.is_failure() {
            return Some(0);
        }
        let key = (e.kind, e.subject.clone());
        match self.seen.get_mut(&key) {
            Some(s) if now.duration_since(s.last_sent) < self.window => {
                s.suppressed += 1;
                s.message.clone_from(&e.message);
                None
            }
            Some(s) => {
                let repeats = std::mem::take(&mut s.suppressed);
                s.last_sent = now;
                Some(repeats)
            }
            None => {
                // Forget quiet subjects so the map stays small.
                let window = self.window;
                self.seen
                    .retain(|_, s| s.suppressed > 0 || now.duration_since(s.last_sent) < window);
                self.seen.insert(
                    key,
                    Seen {
                        last_sent: now,
                        suppressed: 0,
                        message: String::new(),
                    },
                );
                Some(0)
            }
        }
    }

    /// Summaries for windows that closed with repeats in them: the last
    /// repeat's message and how many there were.
    fn closed_windows(&mut self, now: Instant) -> Vec<(Event, u64)> {
        let mut out = Vec::new();
        for ((kind, subject), s) in &mut self.seen {
            if s.suppressed > 0 && now.duration_since(s.last_sent) >= self.window {
                out.push((
                    Event {
                        kind: *kind,
                        subject: subject.clone(),
                        message: format!(
                            "{} more since the last notification; the latest: {}",
                            s.suppressed, s.message
                        ),
                    },
                    std::mem::take(&mut s.suppressed),
                ));
                s.last_sent = now;
            }
        }
        out
    }

    /// Whether one more notification may leave the machine this hour.
    fn outbound(&mut self, now: Instant) -> bool {
        let hour = Duration::from_secs(3600);
        while self
            .sent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= hour)
        {
            self.sent.pop_front();
        }
        if self.sent.len() >= self.per_hour as usize {
            return false;
        }
        self.sent.push_back(now);
        true
    }
}

/// This machine's host name (Linux), for worker ids and notifications.
pub(crate) fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: EventKind, subject: &str) -> Event {
        Event {
            kind,
            subject: subject.into(),
            message: "m".into(),
        }
    }

    #[test]
    fn repeats_are_suppressed_within_the_window_and_counted_after() {
        let mut g = Gate::new(Duration::from_secs(60), 100);
        let t0 = Instant::now();
        assert_eq!(g.admit(&ev(EventKind::ServerError, "/a"), t0), Some(0));
        for i in 1..=9 {
            assert_eq!(
                g.admit(
                    &ev(EventKind::ServerError, "/a"),
                    t0 + Duration::from_secs(i)
                ),
                None
            );
        }
        // Another subject or kind is news.
        assert_eq!(g.admit(&ev(EventKind::ServerError, "/b"), t0), Some(0));
        assert_eq!(g.admit(&ev(EventKind::Panic, "/a"), t0), Some(0));
        // After the window, the next one carries the count.
        assert_eq!(
            g.admit(
                &ev(EventKind::ServerError, "/a"),
                t0 + Duration::from_secs(61)
            ),
            Some(9)
        );
        // Start and stop always pass.
        assert_eq!(g.admit(&ev(EventKind::ServerStarted, "x"), t0), Some(0));
        assert_eq!(g.admit(&ev(EventKind::ServerStarted, "x"), t0), Some(0));
    }

    #[test]
    fn a_closed_window_with_repeats_gives_one_summary() {
        let mut g = Gate::new(Duration::from_secs(60), 100);
        let t0 = Instant::now();
        g.admit(&ev(EventKind::JobDead, "j"), t0);
        g.admit(&ev(EventKind::JobDead, "j"), t0 + Duration::from_secs(1));
        g.admit(&ev(EventKind::JobDead, "j"), t0 + Duration::from_secs(2));
        assert!(g.closed_windows(t0 + Duration::from_secs(30)).is_empty());
        let s = g.closed_windows(t0 + Duration::from_secs(61));
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].1, 2);
        assert!(s[0].0.message.starts_with("2 more"), "{}", s[0].0.message);
        assert!(g.closed_windows(t0 + Duration::from_secs(200)).is_empty());
    }

    #[test]
    fn the_hourly_limit_holds_across_kinds() {
        let mut g = Gate::new(Duration::from_secs(60), 3);
        let t0 = Instant::now();
        assert!(g.outbound(t0));
        assert!(g.outbound(t0));
        assert!(g.outbound(t0 + Duration::from_secs(10)));
        assert!(!g.outbound(t0 + Duration::from_secs(20)));
        // The two from t0 have left the hour: room for two more.
        assert!(g.outbound(t0 + Duration::from_secs(3600)));
        assert!(g.outbound(t0 + Duration::from_secs(3601)));
        assert!(!g.outbound(t0 + Duration::from_secs(3602)));
    }
}
