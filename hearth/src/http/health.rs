//! Liveness and readiness probes for load balancers and orchestrators.
//!
//! `/healthz` answers as long as the process serves HTTP. `/readyz` also
//! checks that the database answers within two seconds and that its migrations
//! are exactly this binary's; otherwise it answers 503 with the reason, so a
//! load balancer sends no traffic to a node that cannot serve it.

use std::time::Duration;

use axum::extract::State;
use serde_json::json;

use crate::db::migrate;
use crate::error::{Error, Result};
use crate::http::Json;
use crate::state::AppState;

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

/// `GET /metrics`: the text exposition, for a signed-in admin or a caller
/// with `Authorization: Bearer <metrics.token>`. Gauges are sampled first
/// (bounded by two seconds per part), so a scrape sees the current queue.
pub(crate) async fn metrics(
    axum::extract::State(state): axum::extract::State<AppState>,
    headers: axum::http::HeaderMap,
) -> crate::Result<axum::response::Response> {
    use axum::http::header;
    use axum::response::IntoResponse as _;
    allowed(&state, &headers).await?;
    crate::telemetry::sample::sample(
        state.metrics(),
        state.db(),
        state.jobs(),
        state.events(),
        std::time::Duration::from_secs(2),
    )
    .await;
    let body = state
        .metrics()
        .render()
        .ok_or_else(|| crate::Error::not_found("metrics are off"))?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            ),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response())
}

async fn allowed(state: &AppState, headers: &axum::http::HeaderMap) -> crate::Result<()> {
    use subtle::ConstantTimeEq as _;
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if let Some(given) = bearer {
        let ok = state
            .config()
            .metrics
            .token
            .as_ref()
            .is_some_and(|t| bool::from(t.expose().as_bytes().ct_eq(given.trim().as_bytes())));
        return if ok {
            Ok(())
        } else {
            Err(crate::Error::unauthorized("the metrics token is not valid"))
        };
    }
    match state.auth().load(headers).await? {
        crate::auth::Loaded::Valid(s) if s.user.is_some() && s.admin => Ok(()),
        crate::auth::Loaded::Valid(s) if s.user.is_some() => {
            Err(crate::Error::forbidden("administrators only"))
        }
        _ => Err(crate::Error::unauthorized(
            "sign in as an admin, or send the metrics token as a bearer token",
        )),
    }
}
