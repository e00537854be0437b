//! Pub/sub in the app's database: `publish(channel, payload)` and
//! `subscribe(channel)`.
//!
//! Every message is written to `hearth_pubsub` inside the publisher's
//! transaction, so it is delivered only if that transaction commits.
//!
//! * PostgreSQL: the commit sends `NOTIFY hearth_pubsub, '<id>:<channel>'`;
//!   each process's one LISTEN connection receives it, reads the body by id
//!   once, and hands it to that process's subscribers. Ids rather than bodies
//!   keep notifications far below PostgreSQL's 8000-byte limit.
//! * SQLite: the commit hands the message to this process's subscribers
//!   directly, and every process follows the table for what other processes
//!   published (a split `worker`, a CLI command), every 250 ms.
//!
//! Subscribers that fall behind, and every subscriber after the LISTEN
//! connection was lost, catch up from the table by id, so a slow browser
//! costs a bounded buffer, not unbounded memory.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, OnceLock, RwLock};

use futures_util::Stream;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};

use crate::db::{Db, Tx, TxConn};
use crate::jobs::now_ms;
use crate::{with_db, with_tx};

/// The PostgreSQL channel that carries `<id>:<channel>` of each message.
pub(crate) const PG_CHANNEL: &str = "hearth_pubsub";

/// Largest payload accepted, in bytes of JSON.
pub const MAX_PAYLOAD: usize = 64 * 1024;

/// Messages a subscriber may fall behind by before it catches up from the table.
const BUFFER: usize = 64;

/// Ids a subscriber remembers to drop repeats after a catch-up.
const SEEN: usize = 256;

/// Most messages one catch-up reads from the table.
const CATCH_UP: i64 = 256;

/// One published message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Increasing id; browsers resume after it with `Last-Event-ID`.
    pub id: i64,
    /// The channel it was published on.
    pub channel: String,
    /// The payload as JSON text.
    pub payload: String,
}

/// Why a message could not be published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The channel name is not usable.
    #[error(
        "invalid channel `{0}`: use 1-200 characters of letters, digits, `.`, `_`, `-` and `:`"
    )]
    Channel(String),
    /// The payload is too large or cannot be encoded.
    #[error("invalid payload: {0}")]
    Payload(String),
    /// The database failed.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
}

impl From<PublishError> for crate::Error {
    fn from(e: PublishError) -> Self {
        match e {
            PublishError::Db(e) => crate::Error::from(e),
            other => crate::Error::new(
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_message",
                other.to_string(),
            ),
        }
    }
}

/// Checks a channel name.
pub fn valid_channel(channel: &str) -> bool {
    !channel.is_empty()
        && channel.len() <= 200
        && channel
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-:".contains(c))
}

#[derive(Clone, Debug)]
enum Signal {
    Message(Arc<Message>),
    /// Messages may have been missed (the LISTEN connection was lost).
    Gap,
}

/// The process's subscribers, by channel.
#[derive(Default)]
struct Hub {
    channels: RwLock<HashMap<String, broadcast::Sender<Signal>>>,
}

impl Hub {
    fn sender(&self, channel: &str) -> broadcast::Sender<Signal> {
        if let Some(tx) = self
            .channels
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(channel)
        {
            return tx.clone();
        }
        let mut map = self.channels.write().unwrap_or_else(|e| e.into_inner());
        // Drop channels nobody listens to any more, so the map stays bounded
        // by the channels in use.
        map.retain(|_, tx| tx.receiver_count() > 0);
        map.entry(channel.to_owned())
            .or_insert_with(|| broadcast::channel(BUFFER).0)
            .clone()
    }

    fn deliver(&self, msg: Arc<Message>) {
        let map = self.channels.read().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = map.get(&msg.channel) {
            // No receivers is fine: nobody here is subscribed.
            let _ = tx.send(Signal::Message(msg));
        }
    }

    fn gap(&self) {
        let map = self.channels.read().unwrap_or_else(|e| e.into_inner());
        for tx in map.values() {
            let _ = tx.send(Signal::Gap);
        }
    }

    fn has(&self, channel: &str) -> bool {
        self.channels
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(channel)
            .is_some_and(|tx| tx.receiver_count() > 0)
    }
}

/// Publish and subscribe; handlers get it with `State<PubSub>` or `state.pubsub()`.
#[derive(Clone)]
pub struct PubSub {
    db: Db,
    hub: Arc<Hub>,
    notes: Arc<OnceLock<mpsc::Sender<Note>>>,
    closing: tokio_util::sync::CancellationToken,
}

impl std::fmt::Debug for PubSub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PubSub").finish_non_exhaustive()
    }
}

impl PubSub {
    pub(crate) fn new(db: Db) -> Self {
        Self {
            db,
            hub: Arc::default(),
            notes: Arc::default(),
            closing: tokio_util::sync::CancellationToken::new(),
        }
    }

    /// Ends every subscription of this process, so that open SSE streams and
    /// long polls finish and graceful shutdown is not held up by them.
    pub(crate) fn close(&self) {
        self.closing.cancel();
    }

    /// Publishes `payload` on `channel` inside `tx`: subscribers on every node
    /// receive it after `tx` commits, and never if it rolls back.
    pub async fn publish<T: Serialize + ?Sized>(
        &self,
        tx: &mut Tx,
        channel: &str,
        payload: &T,
    ) -> Result<i64, PublishError> {
        if !valid_channel(channel) {
            return Err(PublishError::Channel(channel.to_owned()));
        }
        let payload =
            serde_json::to_string(payload).map_err(|e| PublishError::Payload(e.to_string()))?;
        if payload.len() > MAX_PAYLOAD {
            return Err(PublishError::Payload(format!(
                "{} bytes is over the {MAX_PAYLOAD}-byte limit; publish an id and let subscribers read the rest",
                payload.len()
            )));
        }
        let id: i64 = with_tx!(tx, t => sqlx::query_scalar(
            "INSERT INTO hearth_pubsub (channel, payload, created_at) VALUES ($1, $2, $3) RETURNING id",
        )
        .bind(channel)
        .bind(&payload)
        .bind(now_ms())
        .fetch_one(&mut **t)
        .await)?;
        match tx.conn_mut() {
            TxConn::Postgres(t) => {
                sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(PG_CHANNEL)
                    .bind(format!("{id}:{channel}"))
                    .execute(&mut **t)
                    .await?;
            }
            TxConn::Sqlite(_) => {
                let hub = self.hub.clone();
                let msg = Arc::new(Message {
                    id,
                    channel: channel.to_owned(),
                    payload,
                });
                tx.after_commit(move || hub.deliver(msg));
            }
        }
        Ok(id)
    }

    /// Publishes in a transaction of its own.
    pub async fn publish_now<T: Serialize + ?Sized>(
        &self,
        channel: &str,
        payload: &T,
    ) -> Result<i64, PublishError> {
        let mut tx = self.db.begin().await?;
        let id = self.publish(&mut tx, channel, payload).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Messages on `channel` published from now on. With `after` set, first
    /// the stored messages with a larger id (resuming a reconnecting client).
    pub fn subscribe(&self, channel: &str, after: Option<i64>) -> Subscription {
        let rx = self.hub.sender(channel).subscribe();
        Subscription {
            db: self.db.clone(),
            channel: channel.to_owned(),
            rx,
            queue: VecDeque::new(),
            last: after,
            catch_up: after.is_some(),
            started_ms: now_ms(),
            closing: self.closing.clone(),
            // Grows with use: an idle stream should cost as little as possible.
            seen: VecDeque::new(),
        }
    }

    /// Stored messages of `channel` with an id above `after`, oldest first.
    pub async fn since(
        &self,
        channel: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<Message>, sqlx::Error> {
        read(&self.db, channel, Start::Id(after), limit).await
    }

    /// The highest stored message id of `channel` (0 when none).
    pub async fn last_id(&self, channel: &str) -> Result<i64, sqlx::Error> {
        let id: Option<i64> = with_db!(&self.db, pool => sqlx::query_scalar(
            "SELECT max(id) FROM hearth_pubsub WHERE channel = $1",
        )
        .bind(channel)
        .fetch_one(pool)
        .await)?;
        Ok(id.unwrap_or(0))
    }

    /// Deletes messages older than `cutoff_ms` (unix ms); returns how many.
    pub async fn purge(&self, cutoff_ms: i64) -> Result<u64, sqlx::Error> {
        with_db!(&self.db, pool => sqlx::query("DELETE FROM hearth_pubsub WHERE created_at < $1")
            .bind(cutoff_ms)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))
    }

    /// Called by the LISTEN connection with `<id>:<channel>`, or `None` after
    /// a reconnect. Notifications are queued in arrival order (commit order)
    /// for one dispatcher task, which reads their bodies in batches and
    /// delivers them in that same order.
    pub(crate) fn notified(&self, note: Option<&str>) {
        let note = match note {
            None => Note::Gap,
            Some(text) => {
                let Some((id, channel)) = text.split_once(':') else {
                    return;
                };
                let Ok(id) = id.parse::<i64>() else {
                    return;
                };
                if !self.hub.has(channel) {
                    return;
                }
                Note::Message(id, channel.to_owned())
            }
        };
        let queue = self.notes.get_or_init(|| {
            let (tx, rx) = mpsc::channel(NOTE_QUEUE);
            tokio::spawn(dispatch(self.db.clone(), self.hub.clone(), rx));
            tx
        });
        if queue.try_send(note).is_err() {
            // The dispatcher is behind: drop and let every subscriber catch up from the table.
            self.hub.gap();
        }
    }
}

/// How often a SQLite process looks for messages other processes published.
const FOLLOW_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

impl PubSub {
    /// On SQLite, follows the message table for what other processes (a
    /// split `worker`, a CLI command) published: SQLite has no NOTIFY, but
    /// its writers are serialized, so ids grow in commit order and reading
    /// past the highest id read misses nothing. Messages this process
    /// published itself were already delivered at commit; subscribers drop
    /// the repeat.
    pub(crate) fn follow_sqlite(
        &self,
        stop: tokio_util::sync::CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let (db, hub) = (self.db.clone(), self.hub.clone());
        tokio::spawn(async move {
            let Db::Sqlite(pool, _) = db else { return };
            // Start after what is stored now: followers deliver news, not history.
            let start: Option<i64> = sqlx::query_scalar("SELECT max(id) FROM hearth_pubsub")
                .fetch_one(&pool)
                .await
                .unwrap_or(None);
            let mut after = start.unwrap_or(0);
            loop {
                tokio::select! {
                    () = tokio::time::sleep(FOLLOW_EVERY) => {}
                    () = stop.cancelled() => return,
                }
                let rows: Result<Vec<(i64, String, String)>, sqlx::Error> = sqlx::query_as(
                    "SELECT id, channel, payload FROM hearth_pubsub WHERE id > $1 ORDER BY id LIMIT 500",
                )
                .bind(after)
                .fetch_all(&pool)
                .await;
                match rows {
                    Ok(rows) => {
                        for (id, channel, payload) in rows {
                            after = after.max(id);
                            if hub.has(&channel) {
                                hub.deliver(Arc::new(Message {
                                    id,
                                    channel,
                                    payload,
                                }));
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "following published messages failed"),
                }
            }
        })
    }
}

/// Notifications waiting for their bodies.
const NOTE_QUEUE: usize = 10_000;

enum Note {
    Message(i64, String),
    Gap,
}

async fn dispatch(db: Db, hub: Arc<Hub>, mut rx: mpsc::Receiver<Note>) {
    let Db::Postgres(pool) = db else {
        return;
    };
    let mut batch = Vec::with_capacity(256);
    while rx.recv_many(&mut batch, 256).await > 0 {
        let ids: Vec<i64> = batch
            .iter()
            .filter_map(|n| match n {
                Note::Message(id, _) => Some(*id),
                Note::Gap => None,
            })
            .collect();
        let bodies: HashMap<i64, String> = if ids.is_empty() {
            HashMap::new()
        } else {
            match sqlx::query_as::<_, (i64, String)>(
                "SELECT id, payload FROM hearth_pubsub WHERE id = ANY($1)",
            )
            .bind(&ids)
            .fetch_all(&pool)
            .await
            {
                Ok(rows) => rows.into_iter().collect(),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read published messages; subscribers will catch up");
                    hub.gap();
                    batch.clear();
                    continue;
                }
            }
        };
        for note in batch.drain(..) {
            match note {
                Note::Gap => hub.gap(),
                Note::Message(id, channel) => {
                    if let Some(payload) = bodies.get(&id) {
                        hub.deliver(Arc::new(Message {
                            id,
                            channel,
                            payload: payload.clone(),
                        }));
                    }
                }
            }
        }
    }
}

/// Where a read of the message table starts.
#[derive(Debug, Clone, Copy)]
enum Start {
    /// After this message id.
    Id(i64),
    /// At this time (unix ms), for a subscriber that has received nothing yet.
    Time(i64),
}

async fn read(
    db: &Db,
    channel: &str,
    from: Start,
    limit: i64,
) -> Result<Vec<Message>, sqlx::Error> {
    let (sql, bound): (&'static str, i64) = match from {
        Start::Id(id) => (
            "SELECT id, payload FROM hearth_pubsub WHERE channel = $1 AND id > $2 ORDER BY id LIMIT $3",
            id,
        ),
        Start::Time(ms) => (
            "SELECT id, payload FROM hearth_pubsub WHERE channel = $1 AND created_at >= $2 ORDER BY id LIMIT $3",
            ms,
        ),
    };
    let rows: Vec<(i64, String)> = with_db!(db, pool => sqlx::query_as(sql)
        .bind(channel)
        .bind(bound)
        .bind(limit)
        .fetch_all(pool)
        .await)?;
    Ok(rows
        .into_iter()
        .map(|(id, payload)| Message {
            id,
            channel: channel.to_owned(),
            payload,
        })
        .collect())
}

/// A live feed of one channel; use [`Subscription::next`] or [`Subscription::into_stream`].
pub struct Subscription {
    db: Db,
    channel: String,
    rx: broadcast::Receiver<Signal>,
    queue: VecDeque<Message>,
    /// Highest id handed out (or resumed from).
    last: Option<i64>,
    /// Read the table before the next live message.
    catch_up: bool,
    /// When the subscription began (unix ms): where a catch-up starts if
    /// nothing was delivered yet.
    started_ms: i64,
    closing: tokio_util::sync::CancellationToken,
    /// Ids handed out recently, oldest first.
    seen: VecDeque<i64>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("channel", &self.channel)
            .field("last", &self.last)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    /// The channel.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// The next message; `None` once the process is shutting down. Delivery
    /// is at least once: repeats within the last 256 ids are dropped, older
    /// ones are possible after a long catch-up.
    pub async fn next(&mut self) -> Option<Message> {
        loop {
            if self.closing.is_cancelled() {
                return None;
            }
            if let Some(m) = self.queue.pop_front() {
                // A catch-up can re-read what already arrived live, and the
                // other way round: skip ids handed out recently.
                if self.seen.contains(&m.id) {
                    continue;
                }
                if self.seen.len() == SEEN {
                    self.seen.pop_front();
                }
                self.seen.push_back(m.id);
                self.last = Some(self.last.map_or(m.id, |l| l.max(m.id)));
                return Some(m);
            }
            if self.catch_up {
                self.catch_up = false;
                let from = match self.last {
                    Some(after) => Start::Id(after),
                    None => Start::Time(self.started_ms),
                };
                let rows = read(&self.db, &self.channel, from, CATCH_UP).await;
                match rows {
                    Ok(rows) => {
                        // A full page means there may be more: read again next time.
                        self.catch_up = rows.len() as i64 == CATCH_UP;
                        self.queue.extend(rows);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, channel = %self.channel, "catching up from the table failed");
                    }
                }
                continue;
            }
            let signal = tokio::select! {
                s = self.rx.recv() => s,
                () = self.closing.cancelled() => return None,
            };
            match signal {
                Ok(Signal::Message(m)) => self.queue.push_back((*m).clone()),
                Ok(Signal::Gap) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    self.catch_up = true;
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// The subscription as a stream of messages.
    pub fn into_stream(self) -> impl Stream<Item = Message> + Send + 'static {
        futures_util::stream::unfold(self, |mut sub| async move {
            let m = sub.next().await?;
            Some((m, sub))
        })
    }
}
