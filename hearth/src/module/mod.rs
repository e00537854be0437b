//! The module contract: what a module declares and how it plugs into an app.
//!
//! A module declares a [`ModuleSpec`] — a stable name, its migrations for
//! both engines, the events it publishes and subscribes to, and its routes
//! with their guards — and its use cases ([`Module::use_cases`]). All of it
//! is data, so `routes`, `story`, `summary` and `graph` list it without a
//! database. In [`Module::register`] it attaches a handler to each declared
//! route, and adds static assets, jobs, cron schedules, event handlers and
//! a reset hook that tests use to return its tables to a clean state. The
//! app refuses to start when the routes registered differ from the routes
//! declared. Modules get what they need through [`AppState`] and axum's
//! compile-time-checked `State` extractors; there are no globals.

pub mod namespace;
mod route;
pub(crate) mod spec;

pub use route::{Guard, Method, RouteSpec};
pub use spec::{ModuleSpec, SpecError};

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;

use serde::de::DeserializeOwned;

use crate::db::Db;
use crate::events::{Event, EventRun, EventTx, Subscriber};
use crate::jobs::cron::{self, Schedule};
use crate::jobs::{JobDef, JobName, JobRun, Registry};
use crate::state::AppState;
use crate::usecase::UseCase;
use axum::extract::FromRef;

/// A module: a spec plus a registration step.
pub trait Module: Send + Sync + 'static {
    /// The module's name and migrations.
    fn spec(&self) -> ModuleSpec;

    /// Adds the module's routes, assets and hooks to `ctx`.
    fn register(&self, ctx: &mut Context<'_>);

    /// The module's use cases: plain data that runs as tests on both
    /// engines ([`use_case_tests!`](crate::use_case_tests)) and prints as
    /// stories, a coverage summary and a graph. None by default.
    fn use_cases(&self) -> Vec<UseCase> {
        Vec::new()
    }
}

/// A future returned by a reset hook.
pub type ResetFuture = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

/// A hook that returns a module's data to a clean state, for tests.
pub type ResetHook = Arc<dyn Fn(Db) -> ResetFuture + Send + Sync>;

/// A check a module adds to `self-test`: it gets the app running on a
/// scratch database and answers `Ok` or why not.
pub type SelfCheck = Arc<dyn Fn(crate::ops::selftest::SelfTest) -> ResetFuture + Send + Sync>;

/// A file compiled into the binary and served under `/static/`.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    /// Path below `/static/`, e.g. `pancake.css`.
    pub path: &'static str,
    /// The content.
    pub bytes: &'static [u8],
}

/// What a module registers into. Built by the app, one per module.
pub struct Context<'a> {
    state: &'a AppState,
    pub(crate) public: Router<AppState>,
    pub(crate) signed_in: Router<AppState>,
    pub(crate) own_account: Router<AppState>,
    pub(crate) verified: Router<AppState>,
    pub(crate) groups: Vec<(Arc<str>, Router<AppState>)>,
    pub(crate) admin: Router<AppState>,
    pub(crate) resets: Vec<(&'static str, ResetHook)>,
    pub(crate) checks: Vec<(&'static str, &'static str, SelfCheck)>,
    pub(crate) assets: Vec<Asset>,
    pub(crate) jobs: Registry,
    pub(crate) schedules: Vec<cron::Compiled>,
    pub(crate) errors: Vec<SpecError>,
    pub(crate) subscribers: Vec<Subscriber>,
    module: &'static str,
    declared: &'static [RouteSpec],
    registered: Vec<RouteSpec>,
    all: Router<AppState>,
    owners: Vec<(RouteSpec, &'static str)>,
}

impl<'a> Context<'a> {
    pub(crate) fn new(state: &'a AppState) -> Self {
        Self {
            state,
            public: Router::new(),
            signed_in: Router::new(),
            own_account: Router::new(),
            verified: Router::new(),
            groups: Vec::new(),
            admin: Router::new(),
            resets: Vec::new(),
            checks: Vec::new(),
            assets: Vec::new(),
            jobs: Registry::default(),
            schedules: Vec::new(),
            errors: Vec::new(),
            subscribers: Vec::new(),
            module: "",
            declared: &[],
            registered: Vec::new(),
            all: Router::new(),
            owners: Vec::new(),
        }
    }

    pub(crate) fn set_module(&mut self, spec: &ModuleSpec) {
        self.module = spec.name();
        self.declared = spec.declared_routes();
        self.registered.clear();
    }

    /// The app's state: config, database, name and version.
    pub fn state(&self) -> &AppState {
        self.state
    }

    /// Attaches `handler` to `route`, which this module's spec must declare
    /// ([`ModuleSpec::routes`]). The route's guard decides where it goes:
    /// public routes before the gatekeeper; signed-in, own-account,
    /// verified, group and admin routes behind it and the CSRF check, each
    /// with its own guard. A route the spec does not declare, one attached
    /// twice, or a declared one left without a handler stops the app at start.
    pub fn route<H, T>(&mut self, route: RouteSpec, handler: H)
    where
        H: axum::handler::Handler<T, AppState>,
        T: 'static,
    {
        let module = self.module;
        let fail = |problem: String| SpecError {
            module: module.to_owned(),
            problem,
        };
        if !self.declared.contains(&route) {
            self.errors.push(fail(format!(
                "route {route} ({}) is registered but its spec does not declare it",
                route.guard
            )));
            return;
        }
        if self.registered.contains(&route) {
            self.errors
                .push(fail(format!("route {route} is registered twice")));
            return;
        }
        // axum panics on a path it cannot route (a conflict with another
        // module's route, say); that is a bad spec, reported like the others.
        let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Router::new().route(
                route.path,
                axum::routing::on(route.method.filter(), handler),
            )
        }));
        let routes = match built {
            Ok(r) => r,
            Err(p) => {
                let why = crate::jobs::worker::panic_message(p.as_ref());
                self.errors.push(fail(format!("route {route}: {why}")));
                return;
            }
        };
        // Every route of every module goes through one router too, so that a
        // path two modules claim (or two patterns axum cannot tell apart)
        // is reported here, naming the route, rather than panicking later.
        let all = std::mem::take(&mut self.all);
        let copy = routes.clone();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| all.merge(copy))) {
            Ok(all) => self.all = all,
            Err(p) => {
                let why = crate::jobs::worker::panic_message(p.as_ref());
                let owner = self
                    .owners
                    .iter()
                    .find(|(r, _)| r.method == route.method && r.path == route.path)
                    .map(|(_, m)| format!(" (module `{m}` serves it already)"))
                    .unwrap_or_default();
                self.errors
                    .push(fail(format!("route {route}: {why}{owner}")));
                return;
            }
        }
        self.owners.push((route, module));
        self.registered.push(route);
        let merged = |r: &mut Router<AppState>, routes| {
            let taken = std::mem::take(r);
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| taken.merge(routes)))
        };
        let result = match route.guard {
            Guard::Public => merged(&mut self.public, routes).map(|r| self.public = r),
            Guard::SignedIn => merged(&mut self.signed_in, routes).map(|r| self.signed_in = r),
            Guard::OwnAccount => {
                merged(&mut self.own_account, routes).map(|r| self.own_account = r)
            }
            Guard::Verified => merged(&mut self.verified, routes).map(|r| self.verified = r),
            Guard::Admin => merged(&mut self.admin, routes).map(|r| self.admin = r),
            Guard::Group(group) => match self.groups.iter_mut().position(|(g, _)| &**g == group) {
                Some(i) => merged(&mut self.groups[i].1, routes).map(|r| self.groups[i].1 = r),
                None => {
                    self.groups.push((Arc::from(group), routes));
                    Ok(())
                }
            },
        };
        if let Err(p) = result {
            let why = crate::jobs::worker::panic_message(p.as_ref());
            self.errors.push(fail(format!("route {route}: {why}")));
        }
    }

    /// Checks that every route the current module declares got a handler.
    pub(crate) fn finish_module(&mut self) {
        for r in self.declared {
            if !self.registered.contains(r) {
                self.errors.push(SpecError {
                    module: self.module.to_owned(),
                    problem: format!(
                        "route {r} is declared in the spec but register() attaches no handler to it"
                    ),
                });
            }
        }
        self.registered.clear();
    }

    /// A file served at `/static/<path>` with an ETag and `Cache-Control`.
    pub fn asset(&mut self, path: &'static str, bytes: &'static [u8]) {
        self.assets.push(Asset { path, bytes });
    }

    /// Registers the handler of job `name`. The handler gets the decoded
    /// payload, the attempt number, a cancellation token and a state `S`
    /// taken from the app's: [`AppState`] itself, a narrower handle such as
    /// [`Jobs`](crate::jobs::Jobs) or [`Db`], or nothing (`()`);
    /// an `Err` retries the job with backoff (or sends it to `dead` when it
    /// is [`Permanent`](crate::jobs::Permanent) or out of attempts). A name
    /// registered twice, or one with an unusable name, stops the app at start.
    pub fn job<P, S, F, Fut>(&mut self, name: JobName<P>, handler: F)
    where
        P: DeserializeOwned + Send + 'static,
        S: FromRef<AppState> + Clone + Send + Sync + 'static,
        F: Fn(JobRun<P, S>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let state = S::from_ref(self.state);
        if let Err(e) = self
            .jobs
            .add(JobDef::new(self.module, name, state, handler))
        {
            self.errors.push(SpecError {
                module: self.module.to_owned(),
                problem: e.to_string(),
            });
        }
    }

    /// Declares a cron schedule: each tick enqueues its job once across all
    /// nodes. An invalid expression, or a job no module registers, stops the
    /// app at start with a message naming the schedule.
    pub fn cron(&mut self, schedule: Schedule) {
        match cron::compile(schedule) {
            Ok(c) => self.schedules.push(c),
            Err(problem) => self.errors.push(SpecError {
                module: self.module.to_owned(),
                problem,
            }),
        }
    }

    fn subscriber(&mut self) -> &mut Subscriber {
        let module = self.module;
        match self.subscribers.iter().position(|s| s.module == module) {
            Some(i) => &mut self.subscribers[i],
            None => {
                self.subscribers.push(Subscriber::new(module));
                let last = self.subscribers.len() - 1;
                &mut self.subscribers[last]
            }
        }
    }

    /// Registers this module's handler of event `E`, which its spec must
    /// list in [`ModuleSpec::subscribes`]. The handler gets the decoded event,
    /// its metadata and the transaction to write through
    /// ([`EventRun::tx`]); an `Err` (or a panic, or running past
    /// `events.timeout`) rolls its writes back and retries the event with
    /// backoff, then parks it for this module and its key.
    pub fn subscribe<E, F, Fut>(&mut self, handler: F)
    where
        E: Event,
        F: Fn(EventRun<E>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        if let Err(problem) = self.subscriber().add(handler) {
            self.errors.push(SpecError {
                module: self.module.to_owned(),
                problem,
            });
        }
    }

    /// Registers the hook `events replay <module>` runs before this
    /// module's subscriptions start over: it clears, in the replay's
    /// transaction, everything the module derived from events.
    pub fn on_replay<F, Fut>(&mut self, hook: F)
    where
        F: Fn(EventTx) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let hook: crate::events::ReplayHook = Arc::new(move |tx| Box::pin(hook(tx)));
        self.subscriber().replay = Some(hook);
    }

    /// Registers the hook that clears this module's data between tests.
    pub fn on_reset<F, Fut>(&mut self, hook: F)
    where
        F: Fn(Db) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let hook: ResetHook = Arc::new(move |db| Box::pin(hook(db)));
        self.resets.push((self.module, hook));
    }

    /// Adds a check to `self-test` (and so to `restore --verify`). It runs
    /// against the app serving on loopback over a scratch database, after
    /// hearth's own checks, and is reported as `<module>: <name>`.
    pub fn self_check<F, Fut>(&mut self, name: &'static str, check: F)
    where
        F: Fn(crate::ops::selftest::SelfTest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let check: SelfCheck = Arc::new(move |t| Box::pin(check(t)));
        self.checks.push((self.module, name, check));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::migrate::Migration;

    const A: &[Migration] = &[Migration::new(
        1,
        "create_a",
        "CREATE TABLE blog_a (id BIGINT)",
    )];
    const B: &[Migration] = &[Migration::new(
        1,
        "create_b",
        "CREATE TABLE blog_b (id BIGINT)",
    )];
    const GAP: &[Migration] = &[Migration::new(
        2,
        "create_a",
        "CREATE TABLE blog_a (id BIGINT)",
    )];
    const OUTSIDE: &[Migration] = &[Migration::new(1, "create", "CREATE TABLE post (id BIGINT)")];

    #[test]
    fn spec_check_rejects_bad_names_and_mismatched_lists() {
        assert!(ModuleSpec::new("blog").migrations(A, A).check().is_ok());
        assert!(ModuleSpec::new("Blog").check().is_err());
        assert!(ModuleSpec::new("9blog").check().is_err());
        assert!(ModuleSpec::new("").check().is_err());
        assert!(ModuleSpec::new("blog").migrations(A, &[]).check().is_err());
        let outside = ModuleSpec::new("blog").migrations(OUTSIDE, OUTSIDE).check();
        assert!(
            outside
                .as_ref()
                .is_err_and(|e| e.problem.contains("creates `post`")),
            "{outside:?}"
        );
        assert!(ModuleSpec::new("blog").migrations(A, B).check().is_err());
        assert!(
            ModuleSpec::new("blog")
                .migrations(GAP, GAP)
                .check()
                .is_err()
        );
    }
}
