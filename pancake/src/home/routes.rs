//! `GET /`: the home page.

use askama::Template;
use askama_web::WebTemplate;
use hearth::prelude::*;
use serde::Deserialize;

use hearth::auth::MaybeSession;

use super::store::{self, Notice};
use crate::account::Layout;

/// The longest name the greeting accepts.
const MAX_NAME: usize = 100;

#[derive(Debug, Deserialize)]
pub(super) struct HomeQuery {
    name: Option<String>,
}

#[derive(Template, WebTemplate)]
#[template(path = "home.html")]
pub(super) struct HomePage {
    layout: Layout,
    name: String,
    notices: Vec<Notice>,
}

pub(super) async fn get_home(
    State(state): State<AppState>,
    session: MaybeSession,
    Query(q): Query<HomeQuery>,
) -> Result<HomePage> {
    let name = match q.name.as_deref().map(str::trim) {
        None | Some("") => "neighbour".to_owned(),
        Some(n) if n.chars().count() > MAX_NAME => {
            return Err(Error::validation(
                "name",
                format!("the name must be at most {MAX_NAME} characters"),
            ));
        }
        Some(n) => n.to_owned(),
    };
    let notices = store::latest(state.db(), 20).await?;
    Ok(HomePage {
        layout: Layout::of(&state, &session),
        name,
        notices,
    })
}
