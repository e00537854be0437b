//! The state every handler can reach: one cheap handle on each capability.
//!
//! It sits below the app builder and above the capabilities it holds: a
//! capability never names it (each takes the narrow handles it needs), and
//! [`App`](crate::App) builds it once the capabilities exist.

use std::sync::Arc;

use axum::extract::FromRef;

use crate::auth::{Auth, Tokens};
use crate::config::Config;
use crate::db::Db;
use crate::events::Events;
use crate::jobs::Jobs;
use crate::mail::Mailer;
use crate::module::spec::ModuleSpec;
use crate::realtime::PubSub;
use crate::telemetry::{Metrics, Notifier};

/// State shared by every handler: cheap to clone, read-only.
///
/// Handlers take it as `State<AppState>`, or take one part with `State<Db>`
/// or `State<Arc<Config>>` (via [`FromRef`]).
#[derive(Clone)]
pub struct AppState(Arc<Parts>);

/// What an [`AppState`] holds; built by the app builder only.
pub(crate) struct Parts {
    pub(crate) name: &'static str,
    pub(crate) version: &'static str,
    pub(crate) config: Arc<Config>,
    pub(crate) db: Db,
    pub(crate) specs: Vec<ModuleSpec>,
    pub(crate) jobs: Jobs,
    pub(crate) events: Events,
    pub(crate) pubsub: PubSub,
    pub(crate) tokens: Tokens,
    pub(crate) auth: Auth,
    pub(crate) mailer: Mailer,
    pub(crate) metrics: Metrics,
    pub(crate) notifier: Notifier,
    pub(crate) circuit: Option<crate::db::circuit::Circuit>,
    pub(crate) streams: crate::realtime::Streams,
}

impl AppState {
    /// The state over `parts`.
    pub(crate) fn new(parts: Parts) -> Self {
        Self(Arc::new(parts))
    }

    /// The app's name, e.g. `pancake`.
    pub fn name(&self) -> &'static str {
        self.0.name
    }

    /// The app's version.
    pub fn version(&self) -> &'static str {
        self.0.version
    }

    /// The effective configuration.
    pub fn config(&self) -> &Arc<Config> {
        &self.0.config
    }

    /// The database pool.
    pub fn db(&self) -> &Db {
        &self.0.db
    }

    /// The pool SSE streams and long polls take a place in.
    pub fn streams(&self) -> &crate::realtime::Streams {
        &self.0.streams
    }

    /// The circuit that makes requests fail fast while PostgreSQL is down
    /// (`None` on SQLite, which cannot go away).
    pub fn db_circuit(&self) -> Option<&crate::db::circuit::Circuit> {
        self.0.circuit.as_ref()
    }

    /// Every module's spec, hearth's own first.
    pub fn specs(&self) -> &[ModuleSpec] {
        &self.0.specs
    }

    /// The job queue.
    pub fn jobs(&self) -> &Jobs {
        &self.0.jobs
    }

    /// Domain events: publish, and manage what subscribers hold.
    pub fn events(&self) -> &Events {
        &self.0.events
    }

    /// Publish and subscribe.
    pub fn pubsub(&self) -> &PubSub {
        &self.0.pubsub
    }

    /// The token store.
    pub fn tokens(&self) -> &Tokens {
        &self.0.tokens
    }

    /// Accounts, sessions, passwords and rate limits.
    pub fn auth(&self) -> &Auth {
        &self.0.auth
    }

    /// The mailer (send through the queue with [`crate::mail::enqueue`]).
    pub fn mailer(&self) -> &Mailer {
        &self.0.mailer
    }

    /// The app's metrics (`/metrics`, statsd).
    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    /// The operator notification funnel.
    pub fn notifier(&self) -> &Notifier {
        &self.0.notifier
    }

    /// The sign-in page set with [`App::login_page`](crate::App::login_page).
    pub fn login_page(&self) -> Option<&'static str> {
        self.0.auth.login_page()
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("name", &self.0.name)
            .field("version", &self.0.version)
            .field("database", &self.0.db.kind())
            .finish_non_exhaustive()
    }
}

/// `impl FromRef<AppState>` for each handle, so a handler can take just the
/// part it needs (`State<Db>`, `State<Auth>`, …).
macro_rules! parts {
    ($($field:ident: $ty:ty,)*) => {$(
        impl FromRef<AppState> for $ty {
            fn from_ref(s: &AppState) -> $ty {
                s.0.$field.clone()
            }
        }
    )*};
}

parts! {
    pubsub: PubSub,
    events: Events,
    jobs: Jobs,
    db: Db,
    config: Arc<Config>,
    auth: Auth,
    tokens: Tokens,
    mailer: Mailer,
    metrics: Metrics,
    notifier: Notifier,
    streams: crate::realtime::Streams,
}

/// For job handlers that need no state (`JobRun<P>`).
impl FromRef<AppState> for () {
    fn from_ref(_: &AppState) {}
}
