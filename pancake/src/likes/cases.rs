//! The likes module's use cases.

use hearth::prelude::*;
use serde_json::{Value, json};

use hearth::auth::AccountDeleted;

use super::{Liked, Unliked};
use crate::members::cases::{blocked, profile};
use crate::members::{MemberBlocked, MemberUnblocked, ProfileUpdated};

/// `liker` likes `liked`, as an event.
pub fn liked(liker: &str, liked: &str) -> Value {
    json!({"liker": format!("{{{liker}}}"), "liked": format!("{{{liked}}}")})
}

/// Every use case of the likes module.
pub fn all() -> Vec<UseCase> {
    vec![
        UseCase::new("nancy likes bob")
            .given_user("nancy")
            .given_user("bob")
            .when(Request::post("/people/{bob}/like").by("nancy").form(&[]))
            .then_status(303)
            .then_header("location", "/people/{bob}")
            .then_event::<Liked>(json!({"liker": "{nancy}", "liked": "{bob}"}))
            .then_no_other_events(),
        UseCase::new("liking bob again changes nothing")
            .given_user("nancy")
            .given_user("bob")
            .given_by::<Liked>("nancy", liked("nancy", "bob"))
            .when(Request::post("/people/{bob}/like").by("nancy").form(&[]))
            .then_status(303)
            .then_no_other_events(),
        UseCase::new("nancy cannot like herself")
            .given_user("nancy")
            .when(Request::post("/people/{nancy}/like").by("nancy").form(&[]))
            .then_status(422)
            .then_no_other_events(),
        UseCase::new("nancy cannot like someone who blocked her")
            .given_user("nancy")
            .given_user("bob")
            .given_by::<MemberBlocked>("bob", blocked("bob", "nancy"))
            .when(Request::post("/people/{bob}/like").by("nancy").form(&[]))
            .then_status(404)
            .then_no_other_events(),
        UseCase::new("bob sees that nancy likes him")
            .given_user("nancy")
            .given_user("bob")
            .given_by::<ProfileUpdated>("nancy", profile("nancy", "Nancy", "Lyon", ""))
            .given_by::<Liked>("nancy", liked("nancy", "bob"))
            .when(Request::get("/likes").by("bob"))
            .then_status(200)
            .then_contains(r#"<a href="/people/{nancy}">Nancy</a>"#)
            .then_contains(r#"id="no-liked""#),
        UseCase::new("nancy stops liking bob")
            .given_user("nancy")
            .given_user("bob")
            .given_by::<Liked>("nancy", liked("nancy", "bob"))
            .when(Request::post("/people/{bob}/unlike").by("nancy").form(&[]))
            .then_status(303)
            .then_event::<Unliked>(json!({"liker": "{nancy}", "liked": "{bob}"}))
            .then_no_other_events(),
        UseCase::new("once nancy stops liking bob, he no longer sees her among his fans")
            .given_user("nancy")
            .given_user("bob")
            .given_by::<ProfileUpdated>("nancy", profile("nancy", "Nancy", "Lyon", ""))
            .given_by::<Liked>("nancy", liked("nancy", "bob"))
            .given_by::<Unliked>("nancy", liked("nancy", "bob"))
            .when(Request::get("/likes").by("bob"))
            .then_status(200)
            .then_contains(r#"id="no-fans""#)
            .then_lacks("Nancy"),
        UseCase::new("a deleted account's likes are gone")
            .given_user("nancy")
            .given_user("bob")
            .given_by::<ProfileUpdated>("nancy", profile("nancy", "Nancy", "Lyon", ""))
            .given_by::<Liked>("nancy", liked("nancy", "bob"))
            .given::<AccountDeleted>(json!({"account": "{nancy}"}))
            .when(Request::get("/likes").by("bob"))
            .then_status(200)
            .then_contains(r#"id="no-fans""#),
        UseCase::new("unliking someone never liked publishes nothing")
            .given_user("nancy")
            .given_user("bob")
            .when(Request::post("/people/{bob}/unlike").by("nancy").form(&[]))
            .then_status(303)
            .then_no_other_events(),
        UseCase::new("a block removes the likes between the two, both ways")
            .given_user("nancy")
            .given_user("bob")
            .given_by::<Liked>("nancy", liked("nancy", "bob"))
            .given_by::<Liked>("bob", liked("bob", "nancy"))
            .given_by::<MemberBlocked>("bob", blocked("bob", "nancy"))
            .when(Request::get("/likes").by("nancy"))
            .then_status(200)
            .then_contains(r#"id="no-fans""#)
            .then_contains(r#"id="no-liked""#),
        UseCase::new("once the block is lifted, nancy may like bob again")
            .given_user("nancy")
            .given_user("bob")
            .given_by::<MemberBlocked>("bob", blocked("bob", "nancy"))
            .given_by::<MemberUnblocked>("bob", blocked("bob", "nancy"))
            .when(Request::post("/people/{bob}/like").by("nancy").form(&[]))
            .then_status(303)
            .then_event::<Liked>(json!({"liker": "{nancy}", "liked": "{bob}"})),
    ]
}
