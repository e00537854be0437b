//! # hearth
//!
//! A framework for human-scale web systems: one binary, one database, the OS.
//! An app is a list of [modules](module) assembled by an [`App`]; the binary's
//! `main` is one call to [`cli::run`], which gives it `serve`, `migrate`,
//! `config` and `version`.
//!
//! | capability | what it promises |
//! |---|---|
//! | [`app`] | the builder that turns modules and config into a running server; the same path for `main` and tests |
//! | [`state`] | [`AppState`]: one cheap handle on each capability, below the builder and above the capabilities, none of which imports it |
//! | [`module`] | the module contract: a spec (name, migrations, events, routes with their guards) and registration |
//! | [`config`] | layered configuration (defaults, `hearth.toml`, secrets file, `HEARTH_*`, flags) with one-line errors |
//! | [`db`] | SQLite (embedded default) or PostgreSQL behind one type; per-module migrations on both |
//! | [`http`] | the request pipeline: request ids, access log, limits, errors as JSON or HTML, ETags, compression, health, TLS, graceful shutdown |
//! | [`error`] | the one client-visible error type |
//! | [`events`] | durable domain events between modules: publish in the caller's transaction, ordered per key, handled exactly once per module, retried and parked |
//! | [`jobs`] | a durable job queue in the app's database: enqueue in the caller's transaction, leases, retries with backoff, dead jobs |
//! | [`auth`] | accounts, sessions, passwords, CSRF, guards, rate limits and the `/api/auth/…` routes |
//! | [`mail`] | mail through the job queue: SMTP via lettre, or an outbox in development |
//! | [`realtime`] | pub/sub through the database on every node, and its delivery to browsers over SSE or long polling |
//! | [`ops`] | the binary's own operations: online backup, checked restore, the restore drill |
//! | [`private_fs`] | directories 0750 and files 0600, whatever the umask |
//! | [`cli`] | the command line every app binary gets |
//! | [`telemetry`] | logs: readable in dev, JSON in prod |
//! | [`testing`] | a fresh database per test on both engines, and the real app on a random port |
//! | [`usecase`] | use cases as data (given events and users, when a request, then a response and events): tests on both engines, stories, a coverage summary and a graph |

pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod db;
pub mod error;
pub mod events;
pub mod http;
pub mod jobs;
pub mod mail;
pub mod module;
pub mod ops;
mod own;
pub mod private_fs;
pub mod realtime;
pub mod state;
pub mod telemetry;
pub mod testing;
pub mod usecase;

pub use app::App;
pub use config::Config;
pub use db::{Db, DbKind};
pub use error::{Error, Result};
pub use module::{Context, Module, ModuleSpec};
pub use state::AppState;

/// Re-exports apps need to write routes without naming hearth's own dependencies.
pub mod prelude {
    pub use crate::db::migrate::Migration;
    pub use crate::events::{Event, EventRun, EventSpec, Events};
    pub use crate::http::Json;
    pub use crate::jobs::{JobName, JobRun, Jobs, NewJob, Permanent};
    pub use crate::module::{Guard, RouteSpec};
    pub use crate::realtime::{LastEventId, PubSub};
    pub use crate::usecase::{Request, UseCase};
    pub use crate::{App, AppState, Context, Db, DbKind, Error, Module, ModuleSpec, Result};
    pub use axum::Router;
    pub use axum::extract::{Query, State};
    pub use axum::routing::{delete, get, patch, post, put};
}

/// anyhow, re-exported for job handlers, which return `anyhow::Result<()>`.
pub use anyhow;
/// axum, re-exported so apps use the exact version hearth is built on.
pub use axum;
/// sqlx, re-exported so apps use the exact version hearth is built on.
pub use sqlx;
