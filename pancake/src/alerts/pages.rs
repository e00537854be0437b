//! The alerts page, marking alerts read, and the unread count as JSON and
//! as a live stream.

use askama::Template;
use askama_web::WebTemplate;
use hearth::auth::CurrentUser;
use hearth::auth::flows::no_store;
use hearth::axum::http::{HeaderValue, StatusCode, header};
use hearth::axum::response::{IntoResponse, Response};
use hearth::prelude::*;
use hearth::realtime::{Slot, sse};
use serde_json::{Value, json};

use super::store::{self, Alert};
use crate::account::Layout;

#[derive(Template, WebTemplate)]
#[template(path = "alerts.html")]
pub(super) struct AlertsPage {
    layout: Layout,
    alerts: Vec<Alert>,
    unread: i64,
}

/// `GET /alerts`.
pub(super) async fn page(State(state): State<AppState>, me: CurrentUser) -> Result<Response> {
    Ok(no_store(
        AlertsPage {
            layout: Layout::new(&state, Some(&me.session)),
            alerts: store::list(state.db(), me.user.id, 100).await?,
            unread: store::unread(state.db(), me.user.id).await?,
        }
        .into_response(),
    ))
}

/// `POST /alerts/read`.
pub(super) async fn read(State(state): State<AppState>, me: CurrentUser) -> Result<Response> {
    let mut tx = state.db().begin().await?;
    if store::mark_read(&mut tx, me.user.id, crate::web::now_ms()).await? > 0 {
        state
            .pubsub()
            .publish(
                &mut tx,
                &super::channel(me.user.id),
                &json!({ "unread": 0 }),
            )
            .await
            .map_err(Error::internal)?;
    }
    tx.commit().await?;
    let mut res = StatusCode::SEE_OTHER.into_response();
    res.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static("/alerts"));
    Ok(res)
}

/// `GET /api/alerts/unread`.
pub(super) async fn unread(State(state): State<AppState>, me: CurrentUser) -> Result<Json<Value>> {
    let n = store::unread(state.db(), me.user.id).await?;
    Ok(Json(json!({ "unread": n })))
}

/// `GET /api/alerts/live`: the caller's own channel only.
pub(super) async fn live(
    State(state): State<AppState>,
    me: CurrentUser,
    last: LastEventId,
    slot: Slot,
) -> Response {
    sse::sse(
        state.pubsub(),
        &super::channel(me.user.id),
        last,
        slot,
        &state.config().realtime,
    )
    .into_response()
}
