//! `GET /api/status`, read from the database, and `GET /api/hello`, a constant.
//!
//! `/api/status` proves the whole path (pipeline, state, database, migrations)
//! on whichever engine is configured; `/api/hello` is the benchmark route that
//! measures the pipeline itself.

mod cases;

use std::collections::BTreeMap;

use hearth::db::migrate;
use hearth::prelude::*;
use serde::Serialize;

/// The status module (no tables of its own).
pub struct Status;

/// `GET /api/status`: the app, its version and its database engine.
pub const STATUS: RouteSpec = RouteSpec::get("/api/status", Guard::Public);
/// `GET /api/hello`: a constant, for benchmarks.
pub const HELLO: RouteSpec = RouteSpec::get("/api/hello", Guard::Public);

impl Module for Status {
    fn spec(&self) -> ModuleSpec {
        ModuleSpec::new("status").routes(&[STATUS, HELLO])
    }

    fn use_cases(&self) -> Vec<UseCase> {
        cases::all()
    }

    fn register(&self, ctx: &mut Context<'_>) {
        ctx.route(STATUS, get_status);
        ctx.route(HELLO, get_hello);
        ctx.self_check("status API reads the database", |t| async move {
            let v = t.get("/api/status").await?.ensure(200)?.json()?;
            let engine = t.state().db().kind().as_str();
            if v["database"] != engine || v["migration_level"].as_u64().unwrap_or(0) == 0 {
                hearth::anyhow::bail!("unexpected status on {engine}: {v}");
            }
            Ok(())
        });
    }
}

/// What `GET /api/status` returns.
#[derive(Debug, Serialize)]
pub struct StatusReport {
    /// The app's name.
    pub app: &'static str,
    /// The app's version.
    pub version: &'static str,
    /// `sqlite` or `postgres`.
    pub database: DbKind,
    /// Highest applied migration per module, read from the database.
    pub migrations: BTreeMap<String, i64>,
    /// Total migrations applied.
    pub migration_level: usize,
    /// Notices stored (as the home module counts them).
    pub notices: i64,
}

async fn get_status(State(state): State<AppState>) -> Result<Json<StatusReport>> {
    let status = migrate::status(state.db(), state.specs()).await?;
    // The home module owns its table; it is asked, not read.
    let notices = crate::home::store::total(state.db()).await?;
    Ok(Json(StatusReport {
        app: state.name(),
        version: state.version(),
        database: state.db().kind(),
        migrations: status.levels(),
        migration_level: status.applied.len(),
        notices,
    }))
}

#[derive(Serialize)]
struct Hello {
    message: &'static str,
}

async fn get_hello() -> Json<Hello> {
    Json(Hello {
        message: "hello, world",
    })
}
