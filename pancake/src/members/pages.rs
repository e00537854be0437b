//! The members pages: the directory, a profile, the profile form, and
//! blocking. Blocking is checked both ways: neither member sees the other.

use askama::Template;
use askama_web::WebTemplate;
use hearth::auth::CurrentUser;
use hearth::auth::flows::no_store;
use hearth::axum::Form;
use hearth::axum::extract::Path;
use hearth::axum::http::StatusCode;
use hearth::axum::response::{IntoResponse, Response};
use hearth::prelude::*;
use serde::Deserialize;

use super::store::{self, Profile};
use super::{MemberBlocked, MemberUnblocked, ProfileUpdated};
use crate::account::Layout;
use crate::web::{now_ms, see_other};

/// Limits on what a profile holds, in characters.
const MAX_NAME: usize = 60;
const MAX_BIO: usize = 500;
const MAX_CITY: usize = 60;

/// The answer for a member who does not exist, has no profile, or is on
/// the other side of a block: the same, so a block is not revealed.
fn no_such_member() -> Error {
    Error::not_found("there is no such member").with_code("no_such_member")
}

#[derive(Template, WebTemplate)]
#[template(path = "people.html")]
pub(super) struct PeoplePage {
    layout: Layout,
    people: Vec<Profile>,
    me: i64,
}

/// `GET /people`.
pub(super) async fn directory(State(state): State<AppState>, me: CurrentUser) -> Result<Response> {
    let people = store::directory(state.db(), me.user.id, 500).await?;
    Ok(no_store(
        PeoplePage {
            layout: Layout::new(&state, Some(&me.session)),
            people,
            me: me.user.id,
        }
        .into_response(),
    ))
}

#[derive(Template, WebTemplate)]
#[template(path = "person.html")]
pub(super) struct PersonPage {
    layout: Layout,
    person: Profile,
    mine: bool,
}

/// `GET /people/{id}`.
pub(super) async fn profile(
    State(state): State<AppState>,
    me: CurrentUser,
    Path(id): Path<i64>,
) -> Result<Response> {
    if id != me.user.id && store::blocked_between(state.db(), me.user.id, id).await? {
        return Err(no_such_member());
    }
    let person = store::get(state.db(), id)
        .await?
        .ok_or_else(no_such_member)?;
    Ok(no_store(
        PersonPage {
            layout: Layout::new(&state, Some(&me.session)),
            person,
            mine: id == me.user.id,
        }
        .into_response(),
    ))
}

#[derive(Template, WebTemplate)]
#[template(path = "profile.html")]
pub(super) struct ProfileFormPage {
    layout: Layout,
    display_name: String,
    bio: String,
    city: String,
    error: Option<String>,
    blocked: Vec<(i64, Option<String>)>,
}

/// `GET /profile`.
pub(super) async fn edit(State(state): State<AppState>, me: CurrentUser) -> Result<Response> {
    let current = store::get(state.db(), me.user.id).await?;
    let (display_name, bio, city) = match current {
        Some(p) => (p.display_name, p.bio, p.city),
        None => (String::new(), String::new(), String::new()),
    };
    Ok(no_store(
        ProfileFormPage {
            layout: Layout::new(&state, Some(&me.session)),
            display_name,
            bio,
            city,
            error: None,
            blocked: store::blocked_by(state.db(), me.user.id).await?,
        }
        .into_response(),
    ))
}

/// The profile form.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct ProfileForm {
    display_name: String,
    bio: String,
    city: String,
}

/// Why a profile cannot be saved, if it cannot.
fn invalid(f: &ProfileForm) -> Option<&'static str> {
    let name = f.display_name.trim();
    let has_control = |s: &str| s.chars().any(|c| c.is_control() && c != '\n' && c != '\r');
    if name.is_empty() {
        Some("Choose a name others will see.")
    } else if name.chars().count() > MAX_NAME {
        Some("The name is too long: 60 characters at most.")
    } else if f.bio.chars().count() > MAX_BIO {
        Some("The bio is too long: 500 characters at most.")
    } else if f.city.trim().chars().count() > MAX_CITY {
        Some("The city is too long: 60 characters at most.")
    } else if name.contains(['\n', '\r'])
        || has_control(name)
        || has_control(&f.bio)
        || has_control(&f.city)
    {
        Some("The profile holds characters that cannot be shown.")
    } else {
        None
    }
}

/// `POST /profile`.
pub(super) async fn save(
    State(state): State<AppState>,
    me: CurrentUser,
    Form(f): Form<ProfileForm>,
) -> Result<Response> {
    if let Some(problem) = invalid(&f) {
        let page = ProfileFormPage {
            layout: Layout::new(&state, Some(&me.session)),
            display_name: f.display_name,
            bio: f.bio,
            city: f.city,
            error: Some(problem.to_owned()),
            blocked: store::blocked_by(state.db(), me.user.id).await?,
        };
        let mut res = page.into_response();
        *res.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
        return Ok(no_store(res));
    }
    let profile = Profile {
        member: me.user.id,
        display_name: f.display_name.trim().to_owned(),
        bio: f.bio.trim().to_owned(),
        city: f.city.trim().to_owned(),
    };
    let mut tx = state.db().begin().await?;
    let at = now_ms();
    store::save(&mut tx, &profile, at).await?;
    let event = ProfileUpdated {
        member: profile.member,
        display_name: profile.display_name.clone(),
        city: profile.city.clone(),
        bio: profile.bio.clone(),
        at,
    };
    state
        .events()
        .publish_by(&mut tx, me.user.id, &event)
        .await?;
    tx.commit().await?;
    Ok(see_other(&format!("/people/{}", me.user.id)))
}

/// `POST /people/{id}/block`.
pub(super) async fn block(
    State(state): State<AppState>,
    me: CurrentUser,
    Path(id): Path<i64>,
) -> Result<Response> {
    if id == me.user.id {
        return Err(Error::validation("id", "you cannot block yourself"));
    }
    if state.auth().users().by_id(id).await?.is_none() {
        return Err(no_such_member());
    }
    let mut tx = state.db().begin().await?;
    if store::block(&mut tx, me.user.id, id, now_ms()).await? {
        let event = MemberBlocked {
            blocker: me.user.id,
            blocked: id,
        };
        state
            .events()
            .publish_by(&mut tx, me.user.id, &event)
            .await?;
    }
    tx.commit().await?;
    Ok(see_other("/people"))
}

/// `POST /people/{id}/unblock`.
pub(super) async fn unblock(
    State(state): State<AppState>,
    me: CurrentUser,
    Path(id): Path<i64>,
) -> Result<Response> {
    let mut tx = state.db().begin().await?;
    if store::unblock(&mut tx, me.user.id, id).await? {
        let event = MemberUnblocked {
            blocker: me.user.id,
            blocked: id,
        };
        state
            .events()
            .publish_by(&mut tx, me.user.id, &event)
            .await?;
    }
    tx.commit().await?;
    Ok(see_other("/profile"))
}
