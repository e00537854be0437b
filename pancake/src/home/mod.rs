//! The home page and the site's notices.
//!
//! Owns the `home_notice` table. The page greets `?name=` and lists notices;
//! both go through askama's escaping, so user text cannot inject markup.

mod routes;
pub mod store;

use hearth::prelude::*;

const SQLITE: &[Migration] = &[Migration::new(
    1,
    "create_home_notice",
    include_str!("../../migrations/sqlite/0001_create_home_notice.sql"),
)];

const POSTGRES: &[Migration] = &[Migration::new(
    1,
    "create_home_notice",
    include_str!("../../migrations/postgres/0001_create_home_notice.sql"),
)];

/// The home module.
pub struct Home;

impl Module for Home {
    fn spec(&self) -> ModuleSpec {
        ModuleSpec::new("home").migrations(SQLITE, POSTGRES)
    }

    fn register(&self, ctx: &mut Context<'_>) {
        ctx.public(Router::new().route("/", get(routes::get_home)));
        ctx.asset("pancake.css", include_bytes!("../../static/pancake.css"));
        ctx.on_reset(|db| async move { store::clear(&db).await.map_err(Into::into) });
    }
}
