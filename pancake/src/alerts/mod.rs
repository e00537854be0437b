//! Alerts: each member's feed of what happened to them, projected from the
//! other modules' events, with an unread count that updates live.
//!
//! Owns `alerts_alert`, and keeps the names (`alerts_name`) and blocks
//! (`alerts_block`) it learns from `members`. `likes.liked` adds a "likes
//! you" alert (unless the two blocked each other); `likes.unliked` takes an
//! unread one back; `members.member-blocked` removes every alert between
//! the two, both ways; a deleted account's alerts, and those it caused,
//! go with it. Each change to a member's unread count is published
//! on the pub/sub channel `alerts.<member>` in the handler's transaction,
//! so their open pages update over SSE once it commits.

mod cases;
mod pages;
pub mod store;

use hearth::auth::AccountDeleted;
use hearth::events::{EventRun, EventSpec};
use hearth::module::Guard::SignedIn;
use hearth::module::RouteSpec as R;
use hearth::prelude::*;

use crate::likes::{Liked, Unliked};
use crate::members::{MemberBlocked, MemberUnblocked, ProfileUpdated};

/// The alerts page.
pub const PAGE: R = R::get("/alerts", SignedIn);
/// Marks every alert read.
pub const READ: R = R::post("/alerts/read", SignedIn);
/// The unread count, as JSON.
pub const UNREAD: R = R::get("/api/alerts/unread", SignedIn);
/// The unread count as it changes, over SSE.
pub const LIVE: R = R::get("/api/alerts/live", SignedIn);

const SQLITE: &[Migration] = &[Migration::new(
    1,
    "create",
    include_str!("../../migrations/sqlite/alerts_0001_create.sql"),
)];
const POSTGRES: &[Migration] = &[Migration::new(
    1,
    "create",
    include_str!("../../migrations/postgres/alerts_0001_create.sql"),
)];

/// The pub/sub channel of `member`'s unread count.
pub fn channel(member: i64) -> String {
    format!("alerts.{member}")
}

const SUBSCRIBES: &[EventSpec] = &[
    EventSpec::of::<Liked>(),
    EventSpec::of::<Unliked>(),
    EventSpec::of::<ProfileUpdated>(),
    EventSpec::of::<MemberBlocked>(),
    EventSpec::of::<MemberUnblocked>(),
    EventSpec::of::<AccountDeleted>(),
];

/// The alerts module.
pub struct Alerts;

impl Module for Alerts {
    fn spec(&self) -> ModuleSpec {
        // A projection that only grows with activity: on SQLite it lives
        // in a file of its own, which can be sized, copied or rebuilt
        // (`events replay alerts`) apart from the members' data.
        ModuleSpec::new("alerts")
            .own_file()
            .migrations(SQLITE, POSTGRES)
            .subscribes(SUBSCRIBES)
            .routes(&[PAGE, READ, UNREAD, LIVE])
    }

    fn use_cases(&self) -> Vec<UseCase> {
        cases::all()
    }

    fn register(&self, ctx: &mut Context<'_>) {
        ctx.route(PAGE, pages::page);
        ctx.route(READ, pages::read);
        ctx.route(UNREAD, pages::unread);
        ctx.route(LIVE, pages::live);
        let pubsub = ctx.state().pubsub().clone();
        let ps = pubsub.clone();
        ctx.subscribe(move |run: EventRun<Liked>| {
            let pubsub = ps.clone();
            async move {
                let e = &run.event;
                let mut tx = run.tx().await;
                if store::blocked_between(&mut tx, e.liker, e.liked).await?
                    || store::gone(&mut tx, e.liker, e.liked).await?
                {
                    return Ok(());
                }
                store::add(
                    &mut tx,
                    e.liked,
                    "like",
                    e.liker,
                    crate::web::ms(run.meta.published_at),
                )
                .await?;
                store::announce(&pubsub, &mut tx, e.liked).await?;
                Ok(())
            }
        });
        let ps = pubsub.clone();
        ctx.subscribe(move |run: EventRun<Unliked>| {
            let pubsub = ps.clone();
            async move {
                let e = &run.event;
                let mut tx = run.tx().await;
                if store::take_back(&mut tx, e.liked, "like", e.liker).await? {
                    store::announce(&pubsub, &mut tx, e.liked).await?;
                }
                Ok(())
            }
        });
        ctx.subscribe(|run: EventRun<ProfileUpdated>| async move {
            let mut tx = run.tx().await;
            let who = run.event.member;
            if !store::gone(&mut tx, who, who).await? {
                store::set_name(&mut tx, who, &run.event.display_name).await?;
            }
            Ok(())
        });
        let ps = pubsub.clone();
        ctx.subscribe(move |run: EventRun<MemberBlocked>| {
            let pubsub = ps.clone();
            async move {
                let e = &run.event;
                let mut tx = run.tx().await;
                store::block(&mut tx, e.blocker, e.blocked).await?;
                store::announce(&pubsub, &mut tx, e.blocker).await?;
                store::announce(&pubsub, &mut tx, e.blocked).await?;
                Ok(())
            }
        });
        ctx.subscribe(|run: EventRun<MemberUnblocked>| async move {
            let e = &run.event;
            let mut tx = run.tx().await;
            store::unblock(&mut tx, e.blocker, e.blocked).await?;
            Ok(())
        });
        let ps = pubsub.clone();
        ctx.subscribe(move |run: EventRun<AccountDeleted>| {
            let pubsub = ps.clone();
            async move {
                let mut tx = run.tx().await;
                for owner in store::forget(&mut tx, run.event.account).await? {
                    store::announce(&pubsub, &mut tx, owner).await?;
                }
                Ok(())
            }
        });
        // Everything here is derived from events: a replay rebuilds it all.
        ctx.on_replay(|tx| async move {
            let mut tx = tx.lock().await;
            store::clear_tx(&mut tx).await?;
            Ok(())
        });
        ctx.on_reset(|db| async move { store::clear(&db).await.map_err(Into::into) });
        ctx.asset("alerts.js", include_bytes!("../../static/alerts.js"));
    }
}
