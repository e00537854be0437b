//! Liking and unliking (forms on a profile page), and the likes page.

use askama::Template;
use askama_web::WebTemplate;
use hearth::auth::CurrentUser;
use hearth::auth::flows::no_store;
use hearth::axum::extract::Path;
use hearth::axum::response::{IntoResponse, Response};
use hearth::prelude::*;

use super::{Liked, Unliked, store};
use crate::account::Layout;
use crate::web::{now_ms, see_other};

/// `POST /people/{id}/like`.
pub(super) async fn like(
    State(state): State<AppState>,
    me: CurrentUser,
    Path(id): Path<i64>,
) -> Result<Response> {
    if id == me.user.id {
        return Err(Error::validation("id", "you cannot like yourself"));
    }
    // Someone on the other side of a block is, to this member, nobody.
    if state.auth().users().by_id(id).await?.is_none()
        || store::blocked_between(state.db(), me.user.id, id).await?
    {
        return Err(Error::not_found("there is no such member").with_code("no_such_member"));
    }
    let mut tx = state.db().begin().await?;
    if store::like(&mut tx, me.user.id, id, now_ms()).await? {
        let event = Liked {
            liker: me.user.id,
            liked: id,
        };
        state
            .events()
            .publish_by(&mut tx, me.user.id, &event)
            .await?;
    }
    tx.commit().await?;
    Ok(see_other(&format!("/people/{id}")))
}

/// `POST /people/{id}/unlike`.
pub(super) async fn unlike(
    State(state): State<AppState>,
    me: CurrentUser,
    Path(id): Path<i64>,
) -> Result<Response> {
    let mut tx = state.db().begin().await?;
    if store::unlike(&mut tx, me.user.id, id).await? {
        let event = Unliked {
            liker: me.user.id,
            liked: id,
        };
        state
            .events()
            .publish_by(&mut tx, me.user.id, &event)
            .await?;
    }
    tx.commit().await?;
    Ok(see_other(&format!("/people/{id}")))
}

#[derive(Template, WebTemplate)]
#[template(path = "likes.html")]
pub(super) struct LikesPage {
    layout: Layout,
    fans: Vec<(i64, Option<String>)>,
    liked: Vec<(i64, Option<String>)>,
}

/// `GET /likes`.
pub(super) async fn page(State(state): State<AppState>, me: CurrentUser) -> Result<Response> {
    Ok(no_store(
        LikesPage {
            layout: Layout::new(&state, Some(&me.session)),
            fans: store::list(state.db(), me.user.id, true).await?,
            liked: store::list(state.db(), me.user.id, false).await?,
        }
        .into_response(),
    ))
}
