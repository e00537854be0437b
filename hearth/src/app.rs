//! The [`App`] builder and the state every handler can reach.
//!
//! An app is a name, a version and a list of modules. [`App::start`] opens the
//! database, applies (or checks) migrations, lets each module register, builds
//! the HTTP pipeline and starts serving; `main`, the CLI and the tests all go
//! through it, so what is tested is what runs.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::auth::{Auth, Tokens};
use crate::config::Config;
use crate::db::migrate::{self, MigrateError};
use crate::db::{Db, DbError};
use crate::events::Events;
use crate::http;
use crate::jobs::Jobs;
use crate::jobs::worker::{Runtime, Workers};
use crate::mail::Mailer;
use crate::module::{Context, Module, ModuleSpec, ResetHook, SpecError};
use crate::realtime::{PubSub, listener};
use crate::state::{AppState, Parts};
use crate::telemetry::{EventKind, Metrics, Notifier};

/// An app under construction: name, version and modules.
#[derive(Clone)]
pub struct App {
    name: &'static str,
    version: &'static str,
    modules: Vec<Arc<dyn Module>>,
    login_page: Option<&'static str>,
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
        let own = std::iter::once(crate::own::SPEC);
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
        Db::connect_with(&config.database_url(self.name), &config.db, &self.layout()).await
    }

    /// Where the app's modules keep their tables: their PostgreSQL schemas
    /// (hearth's own tables stay in the current schema), and the modules
    /// that keep an SQLite file of their own.
    pub fn layout(&self) -> crate::db::Layout {
        let specs: Vec<ModuleSpec> = self.modules.iter().map(|m| m.spec()).collect();
        crate::module::spec::layout(&specs)
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
        let mailer = Mailer::new(&config, self.name).map_err(|e| SpecError {
            module: "mail".into(),
            problem: e.to_string(),
        })?;
        let auth = Auth::new(
            &config,
            db.clone(),
            tokens.clone(),
            crate::auth::Wiring {
                jobs: jobs.clone(),
                events: events.clone(),
                pubsub: pubsub.clone(),
                mailer: mailer.clone(),
                app_name: self.name,
                login_page: self.login_page,
            },
        );
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
        let state = AppState::new(Parts {
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
        });
        let mut ctx = Context::new(&state);
        ctx.set_module(&crate::own::SPEC);
        crate::own::register(&mut ctx);
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
        let registry = Arc::new(std::mem::take(&mut ctx.jobs));
        state
            .jobs()
            .install(&registry, std::mem::take(&mut ctx.schedules))
            .map_err(|problem| SpecError {
                module: "jobs".into(),
                problem,
            })?;
        state
            .events()
            .install(state.specs(), std::mem::take(&mut ctx.subscribers))
            .map_err(|(module, problem)| SpecError { module, problem })?;
        let resets = std::mem::take(&mut ctx.resets);
        let checks = std::mem::take(&mut ctx.checks);
        let router = http::pipeline(&state, ctx);
        let runtime = Runtime {
            jobs: state.jobs().clone(),
            registry,
            metrics: state.metrics().clone(),
            notifier: state.notifier().clone(),
        };
        Ok(Built {
            state,
            router,
            resets,
            checks,
            runtime,
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
        let background = Background::start(&built, true).await?;
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
            Background::start(&built, current && built.state.config().jobs.in_serve).await?;
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
    /// What job workers run: the queue and every registered handler.
    pub(crate) runtime: Runtime,
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
    async fn start(built: &Built, run_workers: bool) -> Result<Self, StartError> {
        let state = &built.state;
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
        let workers = run_workers.then(|| Workers::start(built.runtime.clone()));
        // Event readers run wherever job workers do.
        let readers = if run_workers {
            let metrics = state.metrics().clone();
            let on_pass: crate::events::consumer::OnPass = Arc::new(move |module, tally| {
                metrics.events_pass(module, tally.handled, tally.failed)
            });
            Some(crate::events::consumer::Readers::start(state.events().clone(), on_pass).await?)
        } else {
            None
        };
        state
            .notifier()
            .start(state.db().clone(), state.jobs().clone());
        let stop = CancellationToken::new();
        let sampler = (tokio::spawn(sampler(state.clone(), stop.clone())), stop);
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

    /// Runs every due job now, one at a time in the calling task, until
    /// none is due or `limit` have run; returns how many ran. What a use
    /// case does between WHEN and THEN.
    pub(crate) async fn drain_jobs(&self, limit: usize) -> Result<usize, sqlx::Error> {
        crate::jobs::worker::drain(&self.built.runtime, limit).await
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

/// Samples the gauges every `metrics.sample_interval` (for statsd; `/metrics`
/// samples on each read too) and watches the database for `notify`: the
/// first failed check after a good one is reported, later ones while it
/// stays down are repeats the funnel counts.
async fn sampler(state: AppState, stop: CancellationToken) {
    let every = state.config().metrics.sample_interval.get();
    let limit = state.config().db.acquire_timeout.get();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_ok = true;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let ok = if state.metrics().enabled() {
            crate::telemetry::sample::sample(
                state.metrics(),
                state.db(),
                state.jobs(),
                state.events(),
                limit,
            )
            .await
        } else {
            tokio::time::timeout(limit, state.db().ping())
                .await
                .is_ok_and(|r| r.is_ok())
        };
        if !ok {
            state.notifier().send(
                EventKind::DatabaseUnreachable,
                state.db().kind().as_str(),
                format!(
                    "the {} database did not answer within {} ms",
                    state.db().kind().as_str(),
                    limit.as_millis()
                ),
            );
        } else if !was_ok {
            tracing::info!(target: "hearth::notify", "the database answers again");
        }
        was_ok = ok;
    }
}
