//! Liveness and readiness probes for load balancers and orchestrators.
//!
//! `/healthz` answers as long as the process serves HTTP. `/readyz` also
//! checks that the database answers within two seconds and that its migrations
//! are exactly this binary's; otherwise it answers 503 with the reason, so a
//! load balancer sends no traffic to a node that cannot serve it.

use std::time::Duration;

use axum::extract::State;
use serde_json::json;

use crate::app::AppState;
use crate::db::migrate;
use crate::error::{Error, Result};
use crate::http::Json;

const READY_TIMEOUT: Duration = Duration::from_secs(2);

pub(crate) async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

pub(crate) async fn readyz(State(state): State<AppState>) -> Result<Json<serde_json::Value>> {
    if state
        .db_circuit()
        .is_some_and(crate::db::circuit::Circuit::is_open)
    {
        return Err(Error::unavailable(
            "not_ready",
            "the database is unreachable",
        ));
    }
    let check = async {
        state.db().ping().await?;
        migrate::status(state.db(), state.specs()).await
    };
    let status = match tokio::time::timeout(READY_TIMEOUT, check).await {
        Err(_) => {
            if let Some(c) = state.db_circuit() {
                c.suspect();
            }
            return Err(Error::unavailable(
                "not_ready",
                "the database did not answer within 2s",
            ));
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness check failed");
            if let Some(c) = state.db_circuit() {
                c.suspect();
            }
            return Err(Error::unavailable(
                "not_ready",
                "the database is unreachable",
            ));
        }
        Ok(Ok(status)) => status,
    };
    if let Some(problem) = status.problem() {
        return Err(Error::unavailable("not_ready", problem));
    }
    Ok(Json(json!({
        "status": "ready",
        "database": state.db().kind(),
        "migrations": status.levels(),
    })))
}
