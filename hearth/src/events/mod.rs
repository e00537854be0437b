//! Domain events: how modules tell each other what happened, durably.
//!
//! * An event is a typed struct with a stable [`Event::NAME`] and
//!   [`Event::VERSION`], stored as JSON. A module declares the events it
//!   publishes and those it subscribes to in its
//!   [`ModuleSpec`](crate::ModuleSpec), so they can be listed without
//!   running the app.
//! * [`Events::publish`] writes the event inside the caller's transaction:
//!   it exists if and only if that transaction commits (a transactional
//!   outbox in the app's own database).
//! * Every subscribing module gets every event at least once, on any node,
//!   across restarts and crashes, and its progress is recorded in the same
//!   transaction as its handler's writes: what a handler writes through
//!   [`EventRun::tx`] happens exactly once. What it does outside the
//!   database (a mail, a call to another service) can happen again after a
//!   crash; enqueue a job from the handler instead, which the same
//!   transaction then enqueues exactly once.
//! * Events with the same [`Event::key`] reach each subscriber in publish
//!   order; different keys may be handled in parallel. A handler that fails
//!   is retried with backoff; out of attempts, the event is parked for that
//!   module and that key only (`events parked`, `events retry`, `events skip`).
//! * A module that keeps an SQLite file of its own
//!   ([`ModuleSpec::own_file`](crate::ModuleSpec::own_file)) has its cursor,
//!   its held events and an outbox of what it publishes in that file, since
//!   WAL commits each file on its own: the guarantees above hold for its
//!   writes in its file. A relay copies its outbox into the main log after
//!   each commit (`store::relay`). A job its handler enqueues lands in the
//!   main file and is not atomic with the handler's writes there.
//!
//! The ordering argument is in `store.rs`; the delivery loop in `consumer.rs`.

mod config;
pub(crate) mod consumer;
mod registry;
mod store;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::db::{Db, Tx};
use crate::jobs::now_ms;

pub use config::EventsConfig;
pub use registry::{EventRun, EventTx};
pub(crate) use registry::{ReplayHook, Subscriber};
pub(crate) use store::PG_CHANNEL;
pub use store::{Held, ModuleStatus};

/// A domain event: something that happened, in the past tense, that other
/// modules may react to.
///
/// ```
/// use hearth::events::Event;
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// pub struct MemberBlocked {
///     pub blocker: i64,
///     pub blocked: i64,
/// }
///
/// impl Event for MemberBlocked {
///     const NAME: &'static str = "members.member-blocked";
///     fn key(&self) -> Option<String> {
///         Some(self.blocker.to_string())
///     }
/// }
/// ```
pub trait Event: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The stored name, `<module>.<what-happened>`: lowercase letters,
    /// digits, `-` and `_`. It must never change once events of it exist.
    const NAME: &'static str;
    /// The payload's version. Raise it when the struct changes in a way old
    /// payloads no longer fit; a subscriber built with version N parks an
    /// event of a higher version rather than misread it.
    const VERSION: u32 = 1;

    /// The ordering key: events with the same key reach every subscriber in
    /// the order they were published (for example the member an event is
    /// about). `None`: no order is promised against other events.
    fn key(&self) -> Option<String> {
        None
    }
}

/// The partition events with ordering key `key` land in (0 to
/// [`PARTITIONS`] − 1). Events of one partition are read in one order;
/// partitions are handled in parallel.
pub fn partition_of(key: &str) -> i16 {
    store::part_of(Some(key))
}

/// How many partitions each module's stream is split into.
pub const PARTITIONS: i16 = store::PARTS;

/// An event's name and version, as a module spec declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventSpec {
    /// The stored name.
    pub name: &'static str,
    /// The payload's version.
    pub version: u32,
}

impl EventSpec {
    /// The spec of event type `E`.
    pub const fn of<E: Event>() -> Self {
        Self {
            name: E::NAME,
            version: E::VERSION,
        }
    }
}

/// Where a module's subscriptions start the first time the app runs with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartFrom {
    /// From the oldest retained event: a projection built from history.
    #[default]
    Beginning,
    /// From the events published after the module first starts.
    Now,
}

/// What is known about a delivered event besides its payload.
#[derive(Debug, Clone)]
pub struct EventMeta {
    /// Its global position (on PostgreSQL positions are unique but are not
    /// handed out in commit order).
    pub position: i64,
    /// Its id: the same on every delivery and to every subscriber, for
    /// idempotency keys outside the database.
    pub id: uuid::Uuid,
    /// Its name.
    pub name: String,
    /// The version it was stored with.
    pub version: u32,
    /// The module that published it.
    pub module: String,
    /// The user on whose behalf it was published, if any.
    pub actor: Option<i64>,
    /// Its ordering key, if any.
    pub key: Option<String>,
    /// When it was published.
    pub published_at: SystemTime,
    /// 1 on the first delivery to this module, 2 on the first retry, and so on.
    pub attempt: u32,
}

/// The outcome of publishing one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Published {
    /// The event's position; `None` when a module with an SQLite file of
    /// its own published it: the event waits in that file's outbox and gets
    /// its position when it is copied into the main database, right after
    /// the commit.
    pub position: Option<i64>,
    /// The event's id.
    pub id: uuid::Uuid,
}

/// Why an event could not be published or managed.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// No module declares that it publishes this event.
    #[error("event `{0}` is not declared: add it to the publishing module's spec with `publishes`")]
    Undeclared(&'static str),
    /// The event is declared with another version.
    #[error(
        "event `{name}` is declared as version {declared}, but the type says version {version}"
    )]
    Version {
        /// The event name.
        name: &'static str,
        /// The version in the spec.
        declared: u32,
        /// The version of the type.
        version: u32,
    },
    /// The payload did not serialize, or a field is out of range.
    #[error("event `{name}` cannot be published: {problem}")]
    Invalid {
        /// The event name.
        name: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// No module of this binary subscribes to events under that name.
    #[error("no module `{0}` subscribes to events")]
    UnknownModule(String),
    /// The module holds no event at that position (in the state asked for).
    #[error("module `{module}` holds no {what} event at position {position}")]
    NotHeld {
        /// The module.
        module: String,
        /// The position.
        position: i64,
        /// Which kind of held event was looked for.
        what: &'static str,
    },
    /// The module's replay hook failed.
    #[error("replay of `{module}` failed: {problem}")]
    Replay {
        /// The module.
        module: String,
        /// Why.
        problem: String,
    },
    /// The database failed.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
}

/// Longest ordering key, in bytes.
const MAX_KEY: usize = 200;

/// Every declared event: who publishes it, at which version.
#[derive(Debug, Default)]
pub(crate) struct Catalog(HashMap<&'static str, (&'static str, u32)>);

impl Catalog {
    /// The module publishing `name` and its version.
    pub(crate) fn get(&self, name: &str) -> Option<(&'static str, u32)> {
        self.0.get(name).copied()
    }
}

/// Checks an event name: `<module>.<rest>`, lowercase letters, digits,
/// `-`, `_` and `.`, at most 100 bytes.
pub(crate) fn check_name(module: &str, name: &str) -> Result<(), String> {
    let Some(rest) = name.strip_prefix(module).and_then(|r| r.strip_prefix('.')) else {
        return Err(format!(
            "event `{name}` must be named `{module}.<what-happened>`, after the module that publishes it"
        ));
    };
    let ok = !rest.is_empty()
        && name.len() <= 100
        && rest
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "event `{name}`: after the module name use lowercase letters, digits, `-`, `_` and `.` (at most 100 bytes in all)"
        ))
    }
}

/// The domain events of one app: publish, inspect, manage.
///
/// Cheap to clone; handlers get it with `State<Events>` or `state.events()`
/// or capture it from [`Context::state`](crate::Context::state) in a handler.
#[derive(Clone)]
pub struct Events(Arc<Inner>);

struct Inner {
    db: Db,
    config: EventsConfig,
    catalog: OnceLock<Arc<Catalog>>,
    subscribers: OnceLock<Arc<Vec<Arc<Subscriber>>>>,
    /// Bumped after every commit that published: idle readers of this
    /// process look again at once.
    wake: tokio::sync::watch::Sender<u64>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").finish_non_exhaustive()
    }
}

impl Events {
    pub(crate) fn new(db: Db, config: EventsConfig) -> Self {
        Self(Arc::new(Inner {
            db,
            config,
            catalog: OnceLock::new(),
            subscribers: OnceLock::new(),
            wake: tokio::sync::watch::Sender::new(0),
        }))
    }

    /// Installs what the module specs declare (an `Err` names the module and
    /// what is wrong) and the handlers modules
    /// registered, after checking that they agree.
    pub(crate) fn install<D: Declares>(
        &self,
        specs: &[D],
        subscribers: Vec<Subscriber>,
    ) -> Result<(), (String, String)> {
        let err = |module: &str, problem: String| (module.to_owned(), problem);
        let mut catalog = Catalog::default();
        for spec in specs {
            for e in spec.published() {
                check_name(spec.name(), e.name).map_err(|p| err(spec.name(), p))?;
                if catalog.0.insert(e.name, (spec.name(), e.version)).is_some() {
                    return Err(err(
                        spec.name(),
                        format!("event `{}` is declared twice", e.name),
                    ));
                }
            }
        }
        for spec in specs {
            let sub = subscribers.iter().find(|s| s.module == spec.name());
            for e in spec.subscribed() {
                match catalog.get(e.name) {
                    None => {
                        return Err(err(
                            spec.name(),
                            format!("it subscribes to `{}`, which no module publishes", e.name),
                        ));
                    }
                    Some((_, v)) if v != e.version => {
                        return Err(err(
                            spec.name(),
                            format!(
                                "it subscribes to `{}` version {}, but it is published as version {v}",
                                e.name, e.version
                            ),
                        ));
                    }
                    Some(_) => {}
                }
                if !sub.is_some_and(|s| s.handles(e.name)) {
                    return Err(err(
                        spec.name(),
                        format!(
                            "its spec subscribes to `{}` but it registers no handler for it (Context::subscribe)",
                            e.name
                        ),
                    ));
                }
            }
        }
        for sub in &subscribers {
            let spec = specs.iter().find(|s| s.name() == sub.module);
            for (name, version) in sub.names() {
                if !spec.is_some_and(|s| {
                    s.subscribed()
                        .iter()
                        .any(|e| e.name == name && e.version == version)
                }) {
                    return Err(err(
                        sub.module,
                        format!(
                            "it handles `{name}` version {version}, which its spec does not list in `subscribes`"
                        ),
                    ));
                }
            }
        }
        let subscribers = subscribers
            .into_iter()
            .filter(|s| !s.is_empty())
            .map(|mut s| {
                s.start = specs
                    .iter()
                    .find(|spec| spec.name() == s.module)
                    .map(|spec| spec.starts_from())
                    .unwrap_or_default();
                Arc::new(s)
            })
            .collect();
        let _ = self.0.catalog.set(Arc::new(catalog));
        let _ = self.0.subscribers.set(Arc::new(subscribers));
        Ok(())
    }

    pub(crate) fn catalog(&self) -> Arc<Catalog> {
        self.0.catalog.get().cloned().unwrap_or_default()
    }

    pub(crate) fn subscribers(&self) -> Arc<Vec<Arc<Subscriber>>> {
        self.0.subscribers.get().cloned().unwrap_or_default()
    }

    pub(crate) fn db(&self) -> &Db {
        &self.0.db
    }

    /// The settings.
    pub fn config(&self) -> &EventsConfig {
        &self.0.config
    }

    pub(crate) fn waker(&self) -> tokio::sync::watch::Receiver<u64> {
        self.0.wake.subscribe()
    }

    /// Wakes this process's idle readers (after a NOTIFY from another node).
    pub(crate) fn wake(&self) {
        self.0.wake.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// Publishes `event` inside `tx`: it exists if and only if `tx`
    /// commits, and readers are woken after the commit. An event no module
    /// declares, or whose payload does not serialize, is an error.
    pub async fn publish<E: Event>(&self, tx: &mut Tx, event: &E) -> Result<Published, EventError> {
        self.write(tx, event, None).await
    }

    /// Like [`publish`](Self::publish), recording the user on whose behalf it happened.
    pub async fn publish_by<E: Event>(
        &self,
        tx: &mut Tx,
        actor: i64,
        event: &E,
    ) -> Result<Published, EventError> {
        self.write(tx, event, Some(actor)).await
    }

    async fn write<E: Event>(
        &self,
        tx: &mut Tx,
        event: &E,
        actor: Option<i64>,
    ) -> Result<Published, EventError> {
        let payload = serde_json::to_string(event).map_err(|e| EventError::Invalid {
            name: E::NAME,
            problem: e.to_string(),
        })?;
        self.write_raw(tx, E::NAME, E::VERSION, &payload, event.key(), actor)
            .await
    }

    /// Writes an event already serialized: the one path every publication
    /// takes, so the checks below hold for all of them.
    pub(crate) async fn write_raw(
        &self,
        tx: &mut Tx,
        name: &'static str,
        version: u32,
        payload: &str,
        key: Option<String>,
        actor: Option<i64>,
    ) -> Result<Published, EventError> {
        let (module, declared) = self
            .catalog()
            .get(name)
            .ok_or(EventError::Undeclared(name))?;
        if declared != version {
            return Err(EventError::Version {
                name,
                declared,
                version,
            });
        }
        if let Some(k) = &key
            && (k.is_empty() || k.len() > MAX_KEY)
        {
            return Err(EventError::Invalid {
                name,
                problem: format!("its key must be 1 to {MAX_KEY} bytes long"),
            });
        }
        let id = uuid::Uuid::new_v4();
        let position = store::insert(
            tx,
            &store::NewEvent {
                part: store::part_of(key.as_deref()),
                id,
                name,
                version: i32::try_from(version).unwrap_or(i32::MAX),
                module,
                actor,
                key: key.as_deref(),
                payload,
                published_at: now_ms(),
            },
        )
        .await?;
        if tx.first_time("hearth.events.announce") {
            store::announce(tx).await?;
            let wake = self.0.wake.clone();
            tx.after_commit(move || wake.send_modify(|g| *g = g.wrapping_add(1)));
        }
        Ok(Published { position, id })
    }

    /// Hands every pending event to its subscribers now, in the calling
    /// task, until none is left that may be handled: what a use case does
    /// between WHEN and THEN, in an app started without readers
    /// (`jobs.in_serve = false`). Returns how many deliveries succeeded.
    /// Events whose handler failed stay held for retry, as they would in
    /// production; [`held`](Self::held) lists them.
    pub async fn drain(&self) -> Result<u64, EventError> {
        Ok(consumer::drain(self).await?)
    }

    /// Per subscribing module: events handled, how far behind it is, and
    /// what it holds.
    pub async fn status(&self) -> Result<Vec<ModuleStatus>, EventError> {
        Ok(store::status(&self.0.db, now_ms()).await?)
    }

    /// Held events (retrying, parked, waiting), of one module or all, at most `limit`.
    pub async fn held(&self, module: Option<&str>, limit: u32) -> Result<Vec<Held>, EventError> {
        Ok(store::held_list(&self.0.db, module, i64::from(limit)).await?)
    }

    /// Gives a parked (or retrying) event of `module` another set of
    /// attempts, now.
    pub async fn retry(&self, module: &str, position: i64) -> Result<(), EventError> {
        if !store::retry_held(&self.0.db, module, position, now_ms()).await? {
            return Err(EventError::NotHeld {
                module: module.to_owned(),
                position,
                what: "parked or retrying",
            });
        }
        self.wake();
        Ok(())
    }

    /// Drops a held event of `module` without handling it; the events of
    /// its key that waited behind it go on.
    pub async fn skip(&self, module: &str, position: i64) -> Result<Held, EventError> {
        let held = store::skip_held(&self.0.db, module, position)
            .await?
            .ok_or_else(|| EventError::NotHeld {
                module: module.to_owned(),
                position,
                what: "held",
            })?;
        tracing::warn!(
            module,
            position,
            event = %held.name,
            key = held.key.as_deref().unwrap_or(""),
            "held event skipped: the module will never handle it"
        );
        self.wake();
        Ok(held)
    }

    /// Rebuilds `module`'s projection: in one transaction its replay hook
    /// clears what it derived from events, its held events are dropped and
    /// its cursors go back to the oldest retained event. The running app's
    /// readers then handle the whole retained history again. Returns the
    /// oldest retained event (position, Unix ms), if any.
    pub async fn replay(&self, module: &str) -> Result<Option<(i64, i64)>, EventError> {
        let subs = self.subscribers();
        let sub = subs
            .iter()
            .find(|s| s.module == module)
            .ok_or_else(|| EventError::UnknownModule(module.to_owned()))?;
        let shared = EventTx::new(self.0.db.begin().await?);
        if let Some(hook) = &sub.replay {
            hook(shared.clone()).await.map_err(|e| EventError::Replay {
                module: module.to_owned(),
                problem: format!("{e:#}"),
            })?;
        }
        let mut tx = shared.into_inner().map_err(|_| EventError::Replay {
            module: module.to_owned(),
            problem: "the replay hook kept its transaction after returning".into(),
        })?;
        store::rewind(&mut tx, module, now_ms()).await?;
        tx.commit().await?;
        self.wake();
        Ok(store::oldest(&self.0.db).await?)
    }

    /// Deletes events older than `events.retention` that every subscriber
    /// has passed and none holds; returns how many.
    pub async fn purge(&self) -> Result<u64, EventError> {
        let span = i64::try_from(self.0.config.retention.get().as_millis()).unwrap_or(i64::MAX / 2);
        self.purge_before(now_ms() - span).await
    }

    /// Like [`purge`](Self::purge) with an explicit cutoff (Unix ms).
    pub async fn purge_before(&self, cutoff: i64) -> Result<u64, EventError> {
        let mut total = 0;
        loop {
            let n = store::purge(&self.0.db, cutoff, 5_000).await?;
            total += n;
            if n < 5_000 {
                return Ok(total);
            }
        }
    }
}

impl From<EventError> for crate::Error {
    fn from(e: EventError) -> Self {
        use axum::http::StatusCode;
        let code = match &e {
            EventError::Db(_) | EventError::Replay { .. } => return crate::Error::internal(e),
            EventError::NotHeld { .. } | EventError::UnknownModule(_) => {
                return crate::Error::not_found(e.to_string());
            }
            EventError::Undeclared(_) => "undeclared_event",
            EventError::Version { .. } => "event_version",
            EventError::Invalid { .. } => "invalid_event",
        };
        crate::Error::new(StatusCode::UNPROCESSABLE_ENTITY, code, e.to_string())
    }
}

/// Unix milliseconds to a time.
pub(crate) fn from_ms(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

/// What a module declares about events, as [`Events::install`] reads it;
/// module specs implement it, so that events need not know the module
/// layer, which sits above them.
pub(crate) trait Declares {
    /// The module's name.
    fn name(&self) -> &'static str;
    /// The events it publishes.
    fn published(&self) -> &'static [EventSpec];
    /// The events it subscribes to.
    fn subscribed(&self) -> &'static [EventSpec];
    /// Where its subscriptions start when it is new.
    fn starts_from(&self) -> StartFrom;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_their_module() {
        assert!(check_name("likes", "likes.member-liked").is_ok());
        assert!(check_name("likes", "likes.v2.member_liked").is_ok());
        assert!(check_name("likes", "members.member-liked").is_err());
        assert!(check_name("likes", "likes.").is_err());
        assert!(check_name("likes", "likes.Member").is_err());
        assert!(check_name("likes", "likesx.member").is_err());
    }

    #[test]
    fn keys_stay_in_their_partition() {
        let a = store::part_of(Some("member:42"));
        for _ in 0..10 {
            assert_eq!(store::part_of(Some("member:42")), a);
        }
        assert!((0..store::PARTS).contains(&store::part_of(None)));
    }

    #[test]
    fn backoff_doubles_up_to_its_ceiling() {
        let c = EventsConfig::default();
        assert_eq!(c.backoff(1), Duration::from_secs(1));
        assert_eq!(c.backoff(2), Duration::from_secs(2));
        assert_eq!(c.backoff(4), Duration::from_secs(8));
        assert_eq!(c.backoff(40), Duration::from_secs(300));
    }
}
