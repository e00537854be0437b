//! `GET /api/status`, read from the database, and `GET /api/hello`, a constant.
//!
//! `/api/status` proves the whole path (pipeline, state, database, migrations)
//! on whichever engine is configured; `/api/hello` is the benchmark route that
//! measures the pipeline itself.

use std::collections::BTreeMap;

use hearth::db::migrate;
use hearth::prelude::*;
use hearth::{sqlx, with_db};
use serde::Serialize;

/// The status module (no tables of its own).
pub struct Status;

impl Module for Status {
    fn spec(&self) -> ModuleSpec {
        ModuleSpec::new("status")
    }

    fn register(&self, ctx: &mut Context<'_>) {
        ctx.public(
            Router::new()
                .route("/api/status", get(get_status))
                .route("/api/hello", get(get_hello)),
        );
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
    /// Rows in `home_notice`.
    pub notices: i64,
}

async fn get_status(State(state): State<AppState>) -> Result<Json<StatusReport>> {
    let status = migrate::status(state.db(), state.specs()).await?;
    let notices: i64 = with_db!(state.db(), pool => sqlx::query_scalar("SELECT count(*) FROM home_notice")
        .fetch_one(pool)
        .await)?;
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
