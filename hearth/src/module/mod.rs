//! The module contract: what a module declares and how it plugs into an app.
//!
//! A module declares a [`ModuleSpec`] (a stable name and its migrations for
//! both engines) and, in [`Module::register`], adds routes to the route
//! groups of a [`Context`] (public, signed-in, verified, member of a group,
//! admin), static assets, jobs, cron schedules, and a reset hook that tests
//! use to return its tables to a clean state. Modules
//! get what they need through [`AppState`] and axum's compile-time-checked
//! `State` extractors; there are no globals.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;

use serde::de::DeserializeOwned;

use crate::app::AppState;
use crate::db::migrate::Migration;
use crate::db::{Db, DbKind};
use crate::events::{Event, EventRun, EventSpec, EventTx, StartFrom, Subscriber};
use crate::jobs::cron::{self, Schedule};
use crate::jobs::{JobDef, JobName, JobRun, Registry};

/// A module: a spec plus a registration step.
pub trait Module: Send + Sync + 'static {
    /// The module's name and migrations.
    fn spec(&self) -> ModuleSpec;

    /// Adds the module's routes, assets and hooks to `ctx`.
    fn register(&self, ctx: &mut Context<'_>);
}

/// What a module declares about itself.
#[derive(Debug, Clone, Copy)]
pub struct ModuleSpec {
    name: &'static str,
    sqlite: &'static [Migration],
    postgres: &'static [Migration],
    publishes: &'static [EventSpec],
    subscribes: &'static [EventSpec],
    start_from: StartFrom,
}

/// Why a module spec is not acceptable.
#[derive(Debug, thiserror::Error)]
#[error("module `{module}`: {problem}")]
pub struct SpecError {
    /// The module name.
    pub module: String,
    /// What is wrong.
    pub problem: String,
}

impl ModuleSpec {
    /// A module called `name`: lowercase letters, digits and underscores,
    /// starting with a letter. The name is stored with its migrations, so it must never change.
    pub const fn new(name: &'static str) -> Self {
        Self {
            name,
            sqlite: &[],
            postgres: &[],
            publishes: &[],
            subscribes: &[],
            start_from: StartFrom::Beginning,
        }
    }

    /// Declares the events this module publishes (`EventSpec::of::<E>()`
    /// each). Publishing an event no module declares is an error.
    #[must_use]
    pub const fn publishes(mut self, events: &'static [EventSpec]) -> Self {
        self.publishes = events;
        self
    }

    /// Declares the events this module subscribes to; [`Module::register`]
    /// adds a handler for each with [`Context::subscribe`].
    #[must_use]
    pub const fn subscribes(mut self, events: &'static [EventSpec]) -> Self {
        self.subscribes = events;
        self
    }

    /// Where this module's subscriptions start the first time it runs
    /// (default: the oldest retained event).
    #[must_use]
    pub const fn start_from(mut self, start: StartFrom) -> Self {
        self.start_from = start;
        self
    }

    /// The events it publishes.
    pub fn published(&self) -> &'static [EventSpec] {
        self.publishes
    }

    /// The events it subscribes to.
    pub fn subscribed(&self) -> &'static [EventSpec] {
        self.subscribes
    }

    /// Where its subscriptions start.
    pub fn starts_from(&self) -> StartFrom {
        self.start_from
    }

    /// Sets the migrations; both lists must have the same versions and names.
    #[must_use]
    pub const fn migrations(
        mut self,
        sqlite: &'static [Migration],
        postgres: &'static [Migration],
    ) -> Self {
        self.sqlite = sqlite;
        self.postgres = postgres;
        self
    }

    /// The stable name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The migrations for one engine.
    pub fn migrations_for(&self, kind: DbKind) -> &'static [Migration] {
        match kind {
            DbKind::Sqlite => self.sqlite,
            DbKind::Postgres => self.postgres,
        }
    }

    /// Checks the name and that both engines' migration lists line up.
    pub fn check(&self) -> Result<(), SpecError> {
        let err = |problem: String| SpecError {
            module: self.name.to_owned(),
            problem,
        };
        let mut chars = self.name.chars();
        let valid = chars.next().is_some_and(|c| c.is_ascii_lowercase())
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            return Err(err(
                "the name must be lowercase letters, digits and underscores, starting with a letter"
                    .into(),
            ));
        }
        if self.sqlite.len() != self.postgres.len() {
            return Err(err(format!(
                "{} SQLite migrations but {} PostgreSQL migrations",
                self.sqlite.len(),
                self.postgres.len()
            )));
        }
        for (i, (s, p)) in self.sqlite.iter().zip(self.postgres).enumerate() {
            let expected = i as i64 + 1;
            if s.version != expected || p.version != expected {
                return Err(err(format!(
                    "migration versions must run 1, 2, 3 … without gaps; position {expected} has {} (SQLite) and {} (PostgreSQL)",
                    s.version, p.version
                )));
            }
            if s.name != p.name {
                return Err(err(format!(
                    "migration {expected} is `{}` on SQLite but `{}` on PostgreSQL",
                    s.name, p.name
                )));
            }
        }
        Ok(())
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
        }
    }

    pub(crate) fn set_module(&mut self, name: &'static str) {
        self.module = name;
    }

    /// The app's state: config, database, name and version.
    pub fn state(&self) -> &AppState {
        self.state
    }

    /// Routes anyone may call.
    pub fn public(&mut self, routes: Router<AppState>) {
        self.public = std::mem::take(&mut self.public).merge(routes);
    }

    /// Routes that require a signed-in user; the gatekeeper and, on unsafe
    /// methods, the CSRF check run before them. When `auth.signup_allow` is
    /// set they also require a verified address: the list is only a list
    /// of addresses people have proved to own.
    pub fn signed_in(&mut self, routes: Router<AppState>) {
        self.signed_in = std::mem::take(&mut self.signed_in).merge(routes);
    }

    /// Routes about the caller's own account (settings, resending the
    /// verification link, changing the password, deleting the account):
    /// signed in, verified or not, even when `auth.signup_allow` makes the
    /// other signed-in routes require a verified address.
    pub fn own_account(&mut self, routes: Router<AppState>) {
        self.own_account = std::mem::take(&mut self.own_account).merge(routes);
    }

    /// Routes that require a signed-in user whose email is verified.
    pub fn verified(&mut self, routes: Router<AppState>) {
        self.verified = std::mem::take(&mut self.verified).merge(routes);
    }

    /// Routes that require a signed-in member of `group` (groups are stored
    /// in the database; `user add-group` puts an account in one).
    pub fn group(&mut self, group: &str, routes: Router<AppState>) {
        if let Err(e) = crate::auth::users::check_group(group) {
            self.errors.push(SpecError {
                module: self.module.to_owned(),
                problem: format!("group `{group}`: {}", e.body().message),
            });
            return;
        }
        match self.groups.iter_mut().find(|(g, _)| &**g == group) {
            Some((_, r)) => *r = std::mem::take(r).merge(routes),
            None => self.groups.push((Arc::from(group), routes)),
        }
    }

    /// Routes that require an admin; both gatekeepers run before them.
    pub fn admin(&mut self, routes: Router<AppState>) {
        self.admin = std::mem::take(&mut self.admin).merge(routes);
    }

    /// A file served at `/static/<path>` with an ETag and `Cache-Control`.
    pub fn asset(&mut self, path: &'static str, bytes: &'static [u8]) {
        self.assets.push(Asset { path, bytes });
    }

    /// Registers the handler of job `name`. The handler gets the decoded
    /// payload, the attempt number, a cancellation token and the app state;
    /// an `Err` retries the job with backoff (or sends it to `dead` when it
    /// is [`Permanent`](crate::jobs::Permanent) or out of attempts). A name
    /// registered twice, or one with an unusable name, stops the app at start.
    pub fn job<P, F, Fut>(&mut self, name: JobName<P>, handler: F)
    where
        P: DeserializeOwned + Send + 'static,
        F: Fn(JobRun<P>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        if let Err(e) = self.jobs.add(JobDef::new(self.module, name, handler)) {
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

    const A: &[Migration] = &[Migration::new(1, "create_a", "CREATE TABLE a (id BIGINT)")];
    const B: &[Migration] = &[Migration::new(1, "create_b", "CREATE TABLE b (id BIGINT)")];
    const GAP: &[Migration] = &[Migration::new(2, "create_a", "CREATE TABLE a (id BIGINT)")];

    #[test]
    fn spec_check_rejects_bad_names_and_mismatched_lists() {
        assert!(ModuleSpec::new("blog").migrations(A, A).check().is_ok());
        assert!(ModuleSpec::new("Blog").check().is_err());
        assert!(ModuleSpec::new("9blog").check().is_err());
        assert!(ModuleSpec::new("").check().is_err());
        assert!(ModuleSpec::new("blog").migrations(A, &[]).check().is_err());
        assert!(ModuleSpec::new("blog").migrations(A, B).check().is_err());
        assert!(
            ModuleSpec::new("blog")
                .migrations(GAP, GAP)
                .check()
                .is_err()
        );
    }
}
