//! The [`App`] builder and the state every handler can reach.
//!
//! An app is a name, a version and a list of modules. [`App::start`] opens the
//! database, applies (or checks) migrations, lets each module register, builds
//! the HTTP pipeline and starts serving; `main`, the CLI and the tests all go
//! through it, so what is tested is what runs.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::FromRef;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::auth::{Auth, Tokens};
use crate::config::Config;
use crate::db::migrate::{self, MigrateError, Migration};
use crate::db::{Db, DbError};
use crate::events::Events;
use crate::http;
use crate::jobs::{Jobs, Workers};
use crate::mail::Mailer;
use crate::module::{Context, Module, ModuleSpec, ResetHook, SpecError};
use crate::realtime::{PubSub, listener};
use crate::telemetry::{EventKind, Metrics, Notifier};

/// hearth's own module: the tables of the job queue, cron, pub/sub, tokens and accounts.
pub(crate) const HEARTH_SPEC: ModuleSpec = ModuleSpec::new("hearth")
    .migrations(HEARTH_SQLITE, HEARTH_POSTGRES)
    .routes(crate::auth::routes::ROUTES)
    .publishes(crate::auth::EVENTS);

const HEARTH_SQLITE: &[Migration] = &[
    Migration::new(
        1,
        "jobs",
        include_str!("../migrations/sqlite/0001_jobs.sql"),
    ),
    Migration::new(
        2,
        "cron",
        include_str!("../migrations/sqlite/0002_cron.sql"),
    ),
    Migration::new(
        3,
        "pubsub",
        include_str!("../migrations/sqlite/0003_pubsub.sql"),
    ),
    Migration::new(
        4,
        "tokens",
        include_str!("../migrations/sqlite/0004_tokens.sql"),
    ),
    Migration::new(
        5,
        "accounts",
        include_str!("../migrations/sqlite/0005_accounts.sql"),
    ),
    Migration::new(
        6,
        "job_effects",
        include_str!("../migrations/sqlite/0006_job_effects.sql"),
    ),
    Migration::new(
        7,
        "events",
        include_str!("../migrations/sqlite/0007_events.sql"),
    ),
];

const HEARTH_POSTGRES: &[Migration] = &[
    Migration::new(
        1,
        "jobs",
        include_str!("../migrations/postgres/0001_jobs.sql"),
    ),
    Migration::new(
        2,
        "cron",
        include_str!("../migrations/postgres/0002_cron.sql"),
    ),
    Migration::new(
        3,
        "pubsub",
        include_str!("../migrations/postgres/0003_pubsub.sql"),
    ),
    Migration::new(
        4,
        "tokens",
        include_str!("../migrations/postgres/0004_tokens.sql"),
    ),
    Migration::new(
        5,
        "accounts",
        include_str!("../migrations/postgres/0005_accounts.sql"),
    ),
    Migration::new(
        6,
        "job_effects",
        include_str!("../migrations/postgres/0006_job_effects.sql"),
    ),
    Migration::new(
        7,
        "events",
        include_str!("../migrations/postgres/0007_events.sql"),
    ),
];

/// An app under construction: name, version and modules.
#[derive(Clone)]
pub struct App {
    name: &'static str,
    version: &'static str,
    modules: Vec<Arc<dyn Module>>,
    login_page: Option<&'static str>,
}

/// State shared by every handler: cheap to clone, read-only.
///
/// Handlers take it as `State<AppState>`, or take one part with `State<Db>`
/// or `State<Arc<Config>>` (via [`FromRef`]).
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    name: &'static str,
    version: &'static str,
    config: Arc<Config>,
    db: Db,
    specs: Vec<ModuleSpec>,
    jobs: Jobs,
    events: Events,
    pubsub: PubSub,
    tokens: Tokens,
    auth: Auth,
    mailer: Mailer,
    metrics: Metrics,
    notifier: Notifier,
    circuit: Option<crate::db::circuit::Circuit>,
    streams: crate::realtime::Streams,
    login_page: Option<&'static str>,
}

impl AppState {
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

    /// The sign-in page set with [`App::login_page`].
    pub fn login_page(&self) -> Option<&'static str> {
        self.0.login_page
    }
}

impl FromRef<AppState> for PubSub {
    fn from_ref(s: &AppState) -> PubSub {
        s.0.pubsub.clone()
    }
}

impl FromRef<AppState> for Events {
    fn from_ref(s: &AppState) -> Events {
        s.0.events.clone()
    }
}

impl FromRef<AppState> for Jobs {
    fn from_ref(s: &AppState) -> Jobs {
        s.0.jobs.clone()
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

impl FromRef<AppState> for Db {
    fn from_ref(s: &AppState) -> Db {
        s.0.db.clone()
    }
}

impl FromRef<AppState> for Arc<Config> {
    fn from_ref(s: &AppState) -> Arc<Config> {
        s.0.config.clone()
    }
}

/// Why an app could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A module spec is invalid or two modules share a name.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The database could not be opened.
    #[error(transparent)]
    Db(#[from] DbError),
    /// Migrations failed or the database is ahead of this binary.
    #[error(transparent)]
    Migrate(#[from] MigrateError),
    /// The database could not be read.
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS certificate or key could not be loaded.
    #[error("TLS: {0}")]
    Tls(String),
}

impl App {
    /// A new app called `name` (used for the default database file) at `version`.
    pub fn new(name: &'static str, version: &'static str) -> Self {
        Self {
            name,
            version,
            modules: Vec::new(),
            login_page: None,
        }
    }

    /// The app's sign-in page. A browser that asks for a signed-in page
    /// without a session is then sent there (303, with `?next=` the page it
    /// wanted) instead of getting a 401 page; API clients still get 401.
    #[must_use]
    pub fn login_page(mut self, path: &'static str) -> Self {
        self.login_page = Some(path);
        self
    }

    /// Adds a module; modules register and migrate in the order they are added.
    #[must_use]
    pub fn module(mut self, module: impl Module) -> Self {
        self.modules.push(Arc::new(module));
        self
    }

    /// The app's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The app's version.
    pub fn version(&self) -> &'static str {
        self.version
    }

    /// Every module's spec, checked: valid names, matching migration lists, no
    /// duplicates. hearth's own tables (jobs, cron, pub/sub) come first.
    pub fn specs(&self) -> Result<Vec<ModuleSpec>, SpecError> {
        let mut specs: Vec<ModuleSpec> = Vec::with_capacity(self.modules.len() + 1);
        let own = std::iter::once(HEARTH_SPEC);
        for spec in own.chain(self.modules.iter().map(|m| m.spec())) {
            spec.check()?;
            if specs.iter().any(|s| s.name() == spec.name()) {
                return Err(SpecError {
                    module: spec.name().to_owned(),
                    problem: "two modules have this name".into(),
                });
            }
            specs.push(spec);
        }
        Ok(specs)
    }

    /// What every module declares, for the living documentation (`story`,
    /// `summary`, `graph`, `routes`) and the use-case runner: specs, checked
    /// as [`specs`](Self::specs) checks them, and use cases, each of which
    /// must be able to run and have a name unique in its module.
    pub fn docs(&self) -> Result<Vec<crate::usecase::docs::ModuleDoc>, SpecError> {
        let specs = self.specs()?;
        let mut out = vec![crate::usecase::docs::ModuleDoc {
            spec: specs[0],
            use_cases: Vec::new(),
            framework: true,
        }];
        for (m, spec) in self.modules.iter().zip(&specs[1..]) {
            let use_cases = m.use_cases();
            for (i, uc) in use_cases.iter().enumerate() {
                let err = |problem: String| SpecError {
                    module: spec.name().to_owned(),
                    problem: format!("use case {:?}: {problem}", uc.name()),
                };
                if let Some(p) = uc.problem() {
                    return Err(err(p));
                }
                if use_cases[..i].iter().any(|o| o.name() == uc.name()) {
                    return Err(err("two use cases have this name".into()));
                }
            }
            out.push(crate::usecase::docs::ModuleDoc {
                spec: *spec,
                use_cases,
                framework: false,
            });
        }
        Ok(out)
    }

    /// Opens the database this config names.
    pub async fn open_db(&self, config: &Config) -> Result<Db, DbError> {
        Db::connect(&config.database_url(self.name), &config.db).await
    }

    /// Builds the state and the full HTTP pipeline on an open database, without
    /// touching migrations or sockets.
    ///
    /// Each call makes a state of its own, with its own job queue handle: jobs
    /// enqueued through it wake workers of another state in the same process
    /// only through the database (NOTIFY on PostgreSQL, the poll interval on
    /// SQLite). Enqueue through the running app's state where latency matters.
    pub fn build(&self, config: Config, db: Db) -> Result<Built, SpecError> {
        let specs = self.specs()?;
        let jobs = Jobs::new(db.clone(), config.jobs.clone());
        let events = Events::new(db.clone(), config.events.clone());
        let pubsub = PubSub::new(db.clone());
        let tokens = Tokens::new(db.clone());
        let auth = Auth::new(&config, db.clone(), tokens.clone());
        let mailer = Mailer::new(&config, self.name).map_err(|e| SpecError {
            module: "mail".into(),
            problem: e.to_string(),
        })?;
        let metrics = Metrics::new(&config, self.name);
        let notifier = Notifier::new(&config, self.name);
        let circuit = match (&db, jobs.worker_db()) {
            (Db::Postgres(main), Db::Postgres(workers)) => {
                Some(crate::db::circuit::Circuit::new(&[main, workers]))
            }
            _ => None,
        };
        let streams = crate::realtime::Streams::new(
            config.realtime.streams_cap(config.http.max_connections),
            config.realtime.max_streams_per_ip,
        );
        let state = AppState(Arc::new(Inner {
            name: self.name,
            version: self.version,
            config: Arc::new(config),
            db,
            specs,
            jobs,
            events,
            pubsub,
            tokens,
            auth,
            mailer,
            metrics,
            notifier,
            circuit,
            streams,
            login_page: self.login_page,
        }));
        let mut ctx = Context::new(&state);
        ctx.set_module(&HEARTH_SPEC);
        crate::jobs::register_own(&mut ctx);
        crate::mail::register_own(&mut ctx);
        crate::auth::mailing::register_own(&mut ctx);
        crate::auth::routes::register_own(&mut ctx);
        crate::ops::backup::register_own(&mut ctx);
        ctx.finish_module();
        // specs()[0] is hearth's own; modules follow in order.
        for (m, spec) in self.modules.iter().zip(&state.specs()[1..]) {
            ctx.set_module(spec);
            m.register(&mut ctx);
            ctx.finish_module();
        }
        if let Some(e) = ctx.errors.drain(..).next() {
            return Err(e);
        }
        state
            .jobs()
            .install(
                std::mem::take(&mut ctx.jobs),
                std::mem::take(&mut ctx.schedules),
            )
            .map_err(|problem| SpecError {
                module: "jobs".into(),
                problem,
            })?;
        state
            .events()
            .install(state.specs(), std::mem::take(&mut ctx.subscribers))?;
        let resets = std::mem::take(&mut ctx.resets);
        let checks = std::mem::take(&mut ctx.checks);
        let router = http::pipeline(&state, ctx);
        Ok(Built {
            state,
            router,
            resets,
            checks,
        })
    }

    /// Opens the database and applies pending migrations (or, with
    /// `db.migrate_on_serve` off, refuses a database that is ahead of this binary).
    /// Returns the database and whether its migrations are current.
    async fn prepare_db(&self, config: &Config) -> Result<(Db, bool), StartError> {
        let specs = self.specs()?;
        let db = self.open_db(config).await?;
        let mut current = true;
        if config.db.migrate_on_serve {
            migrate::migrate(&db, &specs).await?;
        } else {
            let status = migrate::status(&db, &specs).await?;
            if !status.unknown.is_empty() || !status.changed.is_empty() {
                return Err(MigrateError::Refused(status.problem().unwrap_or_default()).into());
            }
            if let Some(problem) = status.problem() {
                // Serve anyway: /readyz reports 503 until someone runs `migrate`.
                tracing::warn!(%problem, "starting with pending migrations; job workers and cron stay off");
                current = false;
            }
        }
        Ok((db, current))
    }

    /// Opens the database, migrates, and runs the job workers only (no HTTP),
    /// for `worker` processes split from the web ones.
    pub async fn start_worker(&self, config: Config) -> Result<Running, StartError> {
        let (db, current) = self.prepare_db(&config).await?;
        if !current {
            db.close().await;
            return Err(MigrateError::Refused(
                "migrations are pending: run `migrate` before starting workers".into(),
            )
            .into());
        }
        let built = self.build(config, db)?;
        crate::jobs::cron::sync(built.state.db(), &built.state.jobs().schedules()).await?;
        let background = Background::start(&built.state, true).await?;
        let (stop_tx, mut stop_rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        });
        tracing::info!(
            app = self.name,
            version = self.version,
            database = built.state.db().kind().as_str(),
            "worker running"
        );
        built.state.notifier().send(
            EventKind::ServerStarted,
            "worker",
            format!("{} {} worker started", self.name, self.version),
        );
        Ok(Running {
            local_addr: None,
            built,
            stop: stop_tx,
            task,
            background,
        })
    }

    /// Opens the database, migrates (or checks migrations, when
    /// `db.migrate_on_serve` is off), builds the pipeline and starts serving on
    /// `config.addr`. Returns once the socket is listening.
    pub async fn start(&self, config: Config) -> Result<Running, StartError> {
        let (db, current) = self.prepare_db(&config).await?;
        let tls = match (&config.tls.cert, &config.tls.key) {
            (Some(cert), Some(key)) => {
                Some(http::server::tls_acceptor(cert, key).map_err(StartError::Tls)?)
            }
            _ => None,
        };
        let addr = config.addr;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| StartError::Bind { addr, source })?;
        let built = self.build(config, db)?;
        // Without current migrations the queue's tables may not exist yet:
        // serve (so /readyz can say why) but leave the background work off.
        if current {
            crate::jobs::cron::sync(built.state.db(), &built.state.jobs().schedules()).await?;
        }
        let background =
            Background::start(&built.state, current && built.state.config().jobs.in_serve).await?;
        let (stop_tx, mut stop_rx) = watch::channel(false);
        let http_cfg = built.state.config().http.clone();
        // A proxy in front speaks for many clients: its connections are not
        // held to the per-address cap.
        let proxies = built.state.auth().proxy_trust().proxies.clone();
        let router = built.router.clone();
        let pubsub = built.state.pubsub().clone();
        let task = tokio::spawn(async move {
            let stop = async move {
                // Either a stop request or the sender being dropped ends serving.
                let _ = stop_rx.wait_for(|s| *s).await;
                // Open SSE streams and long polls end now; clients reconnect elsewhere.
                pubsub.close();
            };
            http::server::serve(listener, router, &http_cfg, &proxies, tls, stop).await;
        });
        tracing::info!(
            app = self.name,
            version = self.version,
            addr = %local_addr,
            database = built.state.db().kind().as_str(),
            "serving"
        );
        built.state.notifier().send(
            EventKind::ServerStarted,
            "server",
            format!("{} {} serving on {local_addr}", self.name, self.version),
        );
        Ok(Running {
            local_addr: Some(local_addr),
            built,
            stop: stop_tx,
            task,
            background,
        })
    }
}

/// An app's state and pipeline, ready to serve.
pub struct Built {
    /// The state handlers see.
    pub state: AppState,
    /// The full pipeline, state applied.
    pub router: http::Pipeline,
    /// Each module's reset hook, in registration order.
    pub resets: Vec<(&'static str, ResetHook)>,
    /// The checks modules added to `self-test`: module, name, check.
    pub checks: Vec<(&'static str, &'static str, crate::module::SelfCheck)>,
}

/// What runs beside the HTTP server: the LISTEN connection (PostgreSQL) or
/// the message-table follower (SQLite), the job workers, the notification
/// funnel's task and the metrics sampler (which also watches the database).
struct Background {
    workers: Option<Workers>,
    readers: Option<crate::events::consumer::Readers>,
    listener: Option<(JoinHandle<()>, CancellationToken)>,
    sampler: (JoinHandle<()>, CancellationToken),
}

impl Background {
    async fn start(state: &AppState, run_workers: bool) -> Result<Self, StartError> {
        let listener = match state.db() {
            Db::Postgres(pool) => {
                let mut routes = listener::Routes::default();
                let wake = state.jobs().wake().clone();
                routes.add(
                    crate::jobs::PG_CHANNEL,
                    Arc::new(move |queue: Option<&str>| match queue {
                        Some(q) => wake.notify(q),
                        None => wake.notify_all(),
                    }),
                );
                let events = state.events().clone();
                routes.add(
                    crate::events::PG_CHANNEL,
                    Arc::new(move |_: Option<&str>| events.wake()),
                );
                let pubsub = state.pubsub().clone();
                routes.add(
                    crate::realtime::pubsub::PG_CHANNEL,
                    Arc::new(move |note: Option<&str>| pubsub.notified(note)),
                );
                let stop = CancellationToken::new();
                Some((listener::spawn(pool.clone(), routes, stop.clone()), stop))
            }
            Db::Sqlite(..) => {
                let stop = CancellationToken::new();
                Some((state.pubsub().follow_sqlite(stop.clone()), stop))
            }
        };
        // hearth's own jobs are always registered, so there is always a queue to work.
        let workers = run_workers.then(|| Workers::start(state.clone()));
        // Event readers run wherever job workers do.
        let readers = if run_workers {
            let metrics = state.metrics().clone();
            let on_pass: crate::events::consumer::OnPass =
                Arc::new(move |module, tally| metrics.events_pass(module, tally));
            Some(crate::events::consumer::Readers::start(state.events().clone(), on_pass).await?)
        } else {
            None
        };
        state
            .notifier()
            .start(state.db().clone(), state.jobs().clone());
        let stop = CancellationToken::new();
        let sampler = (
            tokio::spawn(crate::telemetry::sampler(state.clone(), stop.clone())),
            stop,
        );
        Ok(Self {
            workers,
            readers,
            listener,
            sampler,
        })
    }

    async fn shutdown(self) {
        self.sampler.1.cancel();
        let _ = self.sampler.0.await;
        if let Some(r) = self.readers {
            r.shutdown().await;
        }
        if let Some(w) = self.workers {
            w.shutdown().await;
        }
        if let Some((task, stop)) = self.listener {
            stop.cancel();
            let _ = task.await;
        }
    }
}

/// A started app.
pub struct Running {
    local_addr: Option<SocketAddr>,
    built: Built,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    background: Background,
}

impl Running {
    /// Where it listens (useful with port 0); `None` for a worker-only
    /// process ([`App::start_worker`]), which serves no HTTP.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// This process's worker id, when it runs job workers.
    pub fn worker_id(&self) -> Option<&str> {
        self.background.workers.as_ref().map(|w| w.id())
    }

    /// The app's state.
    pub fn state(&self) -> &AppState {
        &self.built.state
    }

    /// The checks modules added to `self-test`: module, name, check.
    pub fn self_checks(&self) -> &[(&'static str, &'static str, crate::module::SelfCheck)] {
        &self.built.checks
    }

    /// Runs every module's reset hook, returning data to a clean state.
    pub async fn reset(&self) -> anyhow::Result<()> {
        for (module, hook) in &self.built.resets {
            hook(self.built.state.db().clone())
                .await
                .map_err(|e| e.context(format!("reset of module `{module}` failed")))?;
        }
        Ok(())
    }

    /// Stops accepting, drains in-flight requests (bounded by
    /// `http.shutdown_timeout`), then closes the database pool.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        self.wait().await;
    }

    /// Waits until serving ends (after [`Running::shutdown`] or a fatal
    /// error), then stops the workers (bounded by `jobs.shutdown_timeout`)
    /// and closes the database.
    pub async fn wait(self) {
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "server task failed");
        }
        self.background.shutdown().await;
        let state = &self.built.state;
        let what = if self.local_addr.is_some() {
            "server"
        } else {
            "worker"
        };
        state.notifier().send(
            EventKind::ServerStopped,
            what,
            format!("{} {} {what} stopped", state.name(), state.version()),
        );
        // The last notifications may need the database (mail): before it closes.
        let webhook = state.config().notify.webhook_timeout.get();
        state.notifier().close(webhook * 3).await;
        self.built.state.jobs().close().await;
        self.built.state.db().close().await;
    }

    /// A handle that can ask the server to stop from elsewhere.
    pub fn stopper(&self) -> Stopper {
        Stopper(self.stop.clone())
    }
}

/// Asks a [`Running`] app to stop.
#[derive(Clone)]
pub struct Stopper(watch::Sender<bool>);

impl Stopper {
    /// Stops accepting and starts draining.
    pub fn stop(&self) {
        let _ = self.0.send(true);
    }
}
