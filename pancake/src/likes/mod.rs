//! Likes: a member likes (or stops liking) another.
//!
//! Owns `likes_like`, and keeps from other modules' events what it needs:
//! display names (`likes_name`, from `members.profile-updated`) and the
//! pairs that blocked each other (`likes_block`, from `members.member-blocked`
//! and `members.member-unblocked`). A block removes the likes between the
//! two members and refuses new ones. Liking publishes `likes.liked`;
//! unliking publishes `likes.unliked`. Like `members`, it applies its own
//! events too (idempotently), so its likes can be rebuilt from history and
//! given to a use case as events.

pub mod cases;
mod pages;
pub mod store;

use hearth::auth::AccountDeleted;
use hearth::events::{Event, EventRun, EventSpec};
use hearth::module::Guard::SignedIn;
use hearth::module::RouteSpec as R;
use hearth::prelude::*;
use serde::{Deserialize, Serialize};

use crate::members::{MemberBlocked, MemberUnblocked, ProfileUpdated};

/// `liker` likes `liked`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Liked {
    /// Who likes.
    pub liker: i64,
    /// Who is liked.
    pub liked: i64,
}

impl Event for Liked {
    const NAME: &'static str = "likes.liked";
    fn key(&self) -> Option<String> {
        Some(self.liked.to_string())
    }
}

/// `liker` no longer likes `liked`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Unliked {
    /// Who liked.
    pub liker: i64,
    /// Who was liked.
    pub liked: i64,
}

impl Event for Unliked {
    const NAME: &'static str = "likes.unliked";
    fn key(&self) -> Option<String> {
        Some(self.liked.to_string())
    }
}

/// Likes a member.
pub const LIKE: R = R::post("/people/{id}/like", SignedIn);
/// Stops liking a member.
pub const UNLIKE: R = R::post("/people/{id}/unlike", SignedIn);
/// Who likes me, and whom I like.
pub const PAGE: R = R::get("/likes", SignedIn);

const SQLITE: &[Migration] = &[Migration::new(
    1,
    "create",
    include_str!("../../migrations/sqlite/likes_0001_create.sql"),
)];
const POSTGRES: &[Migration] = &[Migration::new(
    1,
    "create",
    include_str!("../../migrations/postgres/likes_0001_create.sql"),
)];

const PUBLISHES: &[EventSpec] = &[EventSpec::of::<Liked>(), EventSpec::of::<Unliked>()];
const SUBSCRIBES: &[EventSpec] = &[
    EventSpec::of::<Liked>(),
    EventSpec::of::<Unliked>(),
    EventSpec::of::<ProfileUpdated>(),
    EventSpec::of::<MemberBlocked>(),
    EventSpec::of::<MemberUnblocked>(),
    EventSpec::of::<AccountDeleted>(),
];

/// The likes module.
pub struct Likes;

impl Module for Likes {
    fn spec(&self) -> ModuleSpec {
        ModuleSpec::new("likes")
            .migrations(SQLITE, POSTGRES)
            .publishes(PUBLISHES)
            .subscribes(SUBSCRIBES)
            .routes(&[LIKE, UNLIKE, PAGE])
    }

    fn use_cases(&self) -> Vec<UseCase> {
        cases::all()
    }

    fn register(&self, ctx: &mut Context<'_>) {
        ctx.route(LIKE, pages::like);
        ctx.route(UNLIKE, pages::unlike);
        ctx.route(PAGE, pages::page);
        ctx.subscribe(|run: EventRun<Liked>| async move {
            let e = &run.event;
            let at = crate::web::ms(run.meta.published_at);
            let mut tx = run.tx().await;
            // A like between members who have since blocked each other stays gone.
            if !store::blocked_between_tx(&mut tx, e.liker, e.liked).await?
                && !store::gone(&mut tx, e.liker, e.liked).await?
            {
                store::like(&mut tx, e.liker, e.liked, at).await?;
            }
            Ok(())
        });
        ctx.subscribe(|run: EventRun<Unliked>| async move {
            let e = &run.event;
            let mut tx = run.tx().await;
            store::unlike(&mut tx, e.liker, e.liked).await?;
            Ok(())
        });
        ctx.subscribe(|run: EventRun<ProfileUpdated>| async move {
            let mut tx = run.tx().await;
            let who = run.event.member;
            if !store::gone(&mut tx, who, who).await? {
                store::set_name(&mut tx, who, &run.event.display_name).await?;
            }
            Ok(())
        });
        ctx.subscribe(|run: EventRun<MemberBlocked>| async move {
            let e = &run.event;
            let mut tx = run.tx().await;
            store::block(&mut tx, e.blocker, e.blocked).await?;
            Ok(())
        });
        ctx.subscribe(|run: EventRun<MemberUnblocked>| async move {
            let e = &run.event;
            let mut tx = run.tx().await;
            store::unblock(&mut tx, e.blocker, e.blocked).await?;
            Ok(())
        });
        ctx.subscribe(|run: EventRun<AccountDeleted>| async move {
            let mut tx = run.tx().await;
            store::forget(&mut tx, run.event.account).await?;
            Ok(())
        });
        // Everything here can be derived from events.
        ctx.on_replay(|tx| async move {
            let mut tx = tx.lock().await;
            store::clear_projections(&mut tx).await?;
            Ok(())
        });
        ctx.on_reset(|db| async move { store::clear(&db).await.map_err(Into::into) });
    }
}
