//! The home page and the site's notices.
//!
//! Owns the `home_notice` table. The page greets `?name=` and lists notices;
//! both go through askama's escaping, so user text cannot inject markup.
//! Notices are published by a job (from the admin API or `pancake jobs
//! enqueue home.publish …`), streamed live to browsers, and expired ones are
//! removed by a nightly cron job; see [`live`].

mod cases;

pub mod live;
mod routes;
pub mod store;

use hearth::prelude::*;

const SQLITE: &[Migration] = &[
    Migration::new(
        1,
        "create_home_notice",
        include_str!("../../migrations/sqlite/0001_create_home_notice.sql"),
    ),
    Migration::new(
        2,
        "add_notice_expiry",
        include_str!("../../migrations/sqlite/0002_add_notice_expiry.sql"),
    ),
];

const POSTGRES: &[Migration] = &[
    Migration::new(
        1,
        "create_home_notice",
        include_str!("../../migrations/postgres/0001_create_home_notice.sql"),
    ),
    Migration::new(
        2,
        "add_notice_expiry",
        include_str!("../../migrations/postgres/0002_add_notice_expiry.sql"),
    ),
];

/// The home module.
pub struct Home;

/// The home page.
pub const HOME: RouteSpec = RouteSpec::get("/", Guard::Public);
/// New notices as they are published, over SSE.
pub const LIVE: RouteSpec = RouteSpec::get("/api/notices/live", Guard::Public);
/// New notices by long polling, for clients without SSE.
pub const POLL: RouteSpec = RouteSpec::get("/api/notices/poll", Guard::Public);
/// Publishes a notice (through a job).
pub const POST_NOTICE: RouteSpec = RouteSpec::post("/api/notices", Guard::Admin);

impl Module for Home {
    fn spec(&self) -> ModuleSpec {
        ModuleSpec::new("home")
            .migrations(SQLITE, POSTGRES)
            .routes(&[HOME, LIVE, POLL, POST_NOTICE])
    }

    fn use_cases(&self) -> Vec<UseCase> {
        cases::all()
    }

    fn register(&self, ctx: &mut Context<'_>) {
        ctx.route(HOME, routes::get_home);
        ctx.route(LIVE, live::stream);
        ctx.route(POLL, live::poll);
        ctx.route(POST_NOTICE, live::post_notice);
        ctx.job(live::PUBLISH, live::publish);
        ctx.job(live::CLEANUP, live::cleanup);
        ctx.cron(
            hearth::jobs::cron::Schedule::new(
                "home.nightly_cleanup",
                "0 3 * * *",
                live::CLEANUP,
                &(),
            )
            .missed(hearth::jobs::cron::Missed::RunOnce),
        );
        ctx.asset("pancake.css", include_bytes!("../../static/pancake.css"));
        ctx.asset("live.js", include_bytes!("../../static/live.js"));
        ctx.on_reset(|db| async move { store::clear(&db).await.map_err(Into::into) });
        ctx.self_check("home page and assets are served", |t| async move {
            let home = t.get("/").await?;
            home.ensure(200)?;
            if !home
                .header("content-type")
                .unwrap_or("")
                .starts_with("text/html")
            {
                hearth::anyhow::bail!("the home page is not HTML");
            }
            t.get("/static/pancake.css").await?.ensure(200)?;
            t.get("/static/live.js").await?.ensure(200)?;
            Ok(())
        });
    }
}
