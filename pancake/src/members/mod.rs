//! Members: profiles (a display name, a bio, a city) and blocking.
//!
//! Owns `members_profile` and `members_block`. Saving a profile publishes
//! `members.profile-updated`; blocking publishes `members.member-blocked`
//! (and unblocking `members.member-unblocked`), to which the other modules
//! react in their own way: likes between the two are removed and refused,
//! alerts between them disappear. Here, two members of whom one blocked the
//! other do not see each other in the directory or on a profile page.
//!
//! The module also subscribes to its own events and applies them (an
//! idempotent write, never older over newer): its tables can be rebuilt
//! from its history with `events replay members`, and a use case can give a
//! profile or a block as an event. A deleted account (`hearth.account-deleted`)
//! takes its profile and its blocks with it.

pub mod cases;
mod pages;
pub mod store;

use hearth::auth::AccountDeleted;
use hearth::events::{Event, EventRun, EventSpec};
use hearth::module::Guard::SignedIn;
use hearth::module::RouteSpec as R;
use hearth::prelude::*;
use serde::{Deserialize, Serialize};

/// A member saved their profile.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProfileUpdated {
    /// The member's account id.
    pub member: i64,
    /// The name others see.
    pub display_name: String,
    /// Their city.
    pub city: String,
    /// A few words about them.
    #[serde(default)]
    pub bio: String,
    /// When it was saved, in Unix milliseconds: an older save never
    /// replaces a newer one.
    #[serde(default)]
    pub at: i64,
}

impl Event for ProfileUpdated {
    const NAME: &'static str = "members.profile-updated";
    fn key(&self) -> Option<String> {
        Some(self.member.to_string())
    }
}

/// `blocker` blocked `blocked`: from now on neither sees the other.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberBlocked {
    /// Who blocked.
    pub blocker: i64,
    /// Who was blocked.
    pub blocked: i64,
}

impl Event for MemberBlocked {
    const NAME: &'static str = "members.member-blocked";
    fn key(&self) -> Option<String> {
        Some(self.blocker.to_string())
    }
}

/// `blocker` lifted its block of `blocked`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberUnblocked {
    /// Who had blocked.
    pub blocker: i64,
    /// Who had been blocked.
    pub blocked: i64,
}

impl Event for MemberUnblocked {
    const NAME: &'static str = "members.member-unblocked";
    fn key(&self) -> Option<String> {
        Some(self.blocker.to_string())
    }
}

/// The directory of members with a profile.
pub const DIRECTORY: R = R::get("/people", SignedIn);
/// One member's profile page.
pub const PROFILE: R = R::get("/people/{id}", SignedIn);
/// The signed-in member's own profile form (and their blocks).
pub const EDIT: R = R::get("/profile", SignedIn);
/// Saves the signed-in member's profile.
pub const SAVE: R = R::post("/profile", SignedIn);
/// Blocks a member.
pub const BLOCK: R = R::post("/people/{id}/block", SignedIn);
/// Lifts a block.
pub const UNBLOCK: R = R::post("/people/{id}/unblock", SignedIn);

const SQLITE: &[Migration] = &[Migration::new(
    1,
    "create",
    include_str!("../../migrations/sqlite/members_0001_create.sql"),
)];
const POSTGRES: &[Migration] = &[Migration::new(
    1,
    "create",
    include_str!("../../migrations/postgres/members_0001_create.sql"),
)];

const PUBLISHES: &[EventSpec] = &[
    EventSpec::of::<ProfileUpdated>(),
    EventSpec::of::<MemberBlocked>(),
    EventSpec::of::<MemberUnblocked>(),
];

const SUBSCRIBES: &[EventSpec] = &[
    EventSpec::of::<ProfileUpdated>(),
    EventSpec::of::<MemberBlocked>(),
    EventSpec::of::<MemberUnblocked>(),
    EventSpec::of::<AccountDeleted>(),
];

/// The members module.
pub struct Members;

impl Module for Members {
    fn spec(&self) -> ModuleSpec {
        ModuleSpec::new("members")
            .migrations(SQLITE, POSTGRES)
            .publishes(PUBLISHES)
            .subscribes(SUBSCRIBES)
            .routes(&[DIRECTORY, PROFILE, EDIT, SAVE, BLOCK, UNBLOCK])
    }

    fn use_cases(&self) -> Vec<UseCase> {
        cases::all()
    }

    fn register(&self, ctx: &mut Context<'_>) {
        ctx.route(DIRECTORY, pages::directory);
        ctx.route(PROFILE, pages::profile);
        ctx.route(EDIT, pages::edit);
        ctx.route(SAVE, pages::save);
        ctx.route(BLOCK, pages::block);
        ctx.route(UNBLOCK, pages::unblock);
        ctx.subscribe(|run: EventRun<ProfileUpdated>| async move {
            let e = &run.event;
            let profile = store::Profile {
                member: e.member,
                display_name: e.display_name.clone(),
                bio: e.bio.clone(),
                city: e.city.clone(),
            };
            let mut tx = run.tx().await;
            if !store::gone(&mut tx, e.member, e.member).await? {
                store::save(&mut tx, &profile, e.at).await?;
            }
            Ok(())
        });
        ctx.subscribe(|run: EventRun<MemberBlocked>| async move {
            let e = &run.event;
            let at = crate::web::ms(run.meta.published_at);
            let mut tx = run.tx().await;
            if !store::gone(&mut tx, e.blocker, e.blocked).await? {
                store::block(&mut tx, e.blocker, e.blocked, at).await?;
            }
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
        ctx.on_replay(|tx| async move {
            let mut tx = tx.lock().await;
            store::clear_tx(&mut tx).await?;
            Ok(())
        });
        ctx.on_reset(|db| async move { store::clear(&db).await.map_err(Into::into) });
    }
}
