//! Subscriptions: each module's typed handlers, erased so one reader loop
//! can call any of them, and the transaction they share.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::{Mutex, MutexGuard};

use super::store::Stored;
use super::{Event, EventMeta, StartFrom, from_ms};
use crate::db::Tx;

/// The transaction a reader handles a batch of events in, lent to each
/// handler in turn. Everything written through it commits together with the
/// module's progress, or not at all.
#[derive(Clone)]
pub struct EventTx(Arc<Mutex<Tx>>);

impl std::fmt::Debug for EventTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventTx").finish_non_exhaustive()
    }
}

impl EventTx {
    pub(crate) fn new(tx: Tx) -> Self {
        Self(Arc::new(Mutex::new(tx)))
    }

    /// The transaction; hold the guard only while using it.
    pub async fn lock(&self) -> MutexGuard<'_, Tx> {
        self.0.lock().await
    }

    /// The transaction back, once no handler holds a clone.
    pub(crate) fn into_inner(self) -> Result<Tx, Self> {
        Arc::try_unwrap(self.0).map(Mutex::into_inner).map_err(Self)
    }
}

/// What an event handler receives.
#[derive(Debug)]
pub struct EventRun<E> {
    /// The decoded event.
    pub event: E,
    /// Its position, id, publisher, actor, key, time and attempt.
    pub meta: EventMeta,
    tx: EventTx,
}

impl<E> EventRun<E> {
    /// The transaction this delivery is recorded in: write the module's
    /// projection through it (and publish or enqueue follow-ups with it),
    /// so that the writes and the progress commit together.
    pub async fn tx(&self) -> MutexGuard<'_, Tx> {
        self.tx.lock().await
    }
}

/// Why a delivery did not succeed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The stored event cannot be read by this binary: retrying cannot help.
    Undecodable(String),
    /// The handler failed (an error, a panic or a timeout).
    Failed(String),
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A type-erased handler: decodes the stored event and runs the module's code.
pub(crate) type Handler =
    Arc<dyn Fn(Stored, EventTx, u32) -> BoxFuture<Result<(), Failure>> + Send + Sync>;

/// A module's hook that clears its projection before a replay.
pub(crate) type ReplayHook = Arc<dyn Fn(EventTx) -> BoxFuture<anyhow::Result<()>> + Send + Sync>;

/// One subscribing module: its handlers by event name.
pub(crate) struct Subscriber {
    pub(crate) module: &'static str,
    pub(crate) start: StartFrom,
    handlers: HashMap<&'static str, (u32, Handler)>,
    pub(crate) replay: Option<ReplayHook>,
}

impl Subscriber {
    pub(crate) fn new(module: &'static str) -> Self {
        Self {
            module,
            start: StartFrom::Beginning,
            handlers: HashMap::new(),
            replay: None,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.handlers.is_empty()
    }

    pub(crate) fn handles(&self, name: &str) -> bool {
        self.handlers.contains_key(name)
    }

    /// Names and versions handled.
    pub(crate) fn names(&self) -> impl Iterator<Item = (&'static str, u32)> + '_ {
        self.handlers.iter().map(|(n, (v, _))| (*n, *v))
    }

    pub(crate) fn handler(&self, name: &str) -> Option<&Handler> {
        self.handlers.get(name).map(|(_, h)| h)
    }

    /// Adds the handler of `E`; `Err` when `E` already has one.
    pub(crate) fn add<E, F, Fut>(&mut self, handler: F) -> Result<(), String>
    where
        E: Event,
        F: Fn(EventRun<E>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        if self.handlers.contains_key(E::NAME) {
            return Err(format!("event `{}` has two handlers", E::NAME));
        }
        let handler = Arc::new(handler);
        let erased: Handler =
            Arc::new(move |stored: Stored, tx: EventTx, attempt: u32| {
                match decode::<E>(&stored, attempt) {
                    Ok((event, meta)) => {
                        let fut = handler(EventRun { event, meta, tx });
                        Box::pin(
                            async move { fut.await.map_err(|e| Failure::Failed(format!("{e:#}"))) },
                        )
                    }
                    Err(problem) => {
                        Box::pin(std::future::ready(Err(Failure::Undecodable(problem))))
                    }
                }
            });
        self.handlers.insert(E::NAME, (E::VERSION, erased));
        Ok(())
    }
}

/// Reads a stored event as `E`, naming the field at fault.
fn decode<E: Event>(s: &Stored, attempt: u32) -> Result<(E, EventMeta), String> {
    let version = u32::try_from(s.version)
        .map_err(|_| format!("stored version {} is not a version", s.version))?;
    if version > E::VERSION {
        return Err(format!(
            "stored version {version} is newer than this binary reads (version {})",
            E::VERSION
        ));
    }
    let event = crate::jobs::decode::<E>(&s.payload)
        .map_err(|p| format!("the payload does not fit version {}: {p}", E::VERSION))?;
    let id = uuid::Uuid::parse_str(&s.id).map_err(|e| format!("stored id `{}`: {e}", s.id))?;
    Ok((
        event,
        EventMeta {
            position: s.position,
            id,
            name: s.name.clone(),
            version,
            module: s.module.clone(),
            actor: s.actor,
            key: s.key.clone(),
            published_at: from_ms(s.published_at),
            attempt,
        },
    ))
}
