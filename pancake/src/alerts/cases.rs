//! The alerts module's use cases.

use hearth::prelude::*;
use serde_json::json;

use hearth::auth::AccountDeleted;

use crate::likes::cases::liked;
use crate::likes::{Liked, Unliked};
use crate::members::cases::{blocked, profile};
use crate::members::{MemberBlocked, MemberUnblocked, ProfileUpdated};

/// Every use case of the alerts module.
pub fn all() -> Vec<UseCase> {
    vec![
        UseCase::new("nancy likes bob, so bob sees it in his alerts")
            .given_user("nancy")
            .given_user("bob")
            .given_by::<ProfileUpdated>("nancy", profile("nancy", "Nancy", "Lyon", ""))
            .given_by::<Liked>("nancy", liked("nancy", "bob"))
            .when(Request::get("/alerts").by("bob"))
            .then_status(200)
            .then_contains(r#"<a href="/people/{nancy}">Nancy</a> likes you"#)
            .then_contains("(1 new)"),
        UseCase::new("bob's page asks how many alerts are unread")
            .given_user("nancy")
            .given_user("bob")
            .given_by::<Liked>("nancy", liked("nancy", "bob"))
            .when(Request::get("/api/alerts/unread").by("bob"))
            .then_status(200)
            .then_json(json!({"unread": 1})),
        UseCase::new("the alerts are nancy's, not bob's")
            .given_user("nancy")
            .given_user("bob")
            .given_by::<Liked>("nancy", liked("nancy", "bob"))
            .when(Request::get("/api/alerts/unread").by("nancy"))
            .then_status(200)
            .then_json(json!({"unread": 0})),
        UseCase::new("bob marks his alerts read")
            .given_user("nancy")
            .given_user("bob")
            .given_by::<Liked>("nancy", liked("nancy", "bob"))
            .when(Request::post("/alerts/read").by("bob").form(&[]))
            .then_status(303)
            .then_header("location", "/alerts"),
        UseCase::new("an unlike takes back the unread alert")
            .given_user("nancy")
            .given_user("bob")
            .given_by::<Liked>("nancy", liked("nancy", "bob"))
            .given_by::<Unliked>("nancy", liked("nancy", "bob"))
            .when(Request::get("/api/alerts/unread").by("bob"))
            .then_status(200)
            .then_json(json!({"unread": 0})),
        UseCase::new("a block removes the alerts between the two")
            .given_user("nancy")
            .given_user("bob")
            .given_by::<ProfileUpdated>("nancy", profile("nancy", "Nancy", "Lyon", ""))
            .given_by::<Liked>("nancy", liked("nancy", "bob"))
            .given_by::<MemberBlocked>("bob", blocked("bob", "nancy"))
            .when(Request::get("/alerts").by("bob"))
            .then_status(200)
            .then_contains("Nothing has happened to you yet.")
            .then_lacks("Nancy"),
        UseCase::new("a like across a block makes no alert")
            .given_user("nancy")
            .given_user("bob")
            .given_by::<MemberBlocked>("bob", blocked("bob", "nancy"))
            .given_by::<Liked>("nancy", liked("nancy", "bob"))
            .when(Request::get("/api/alerts/unread").by("bob"))
            .then_status(200)
            .then_json(json!({"unread": 0})),
        UseCase::new("once the block is lifted, likes make alerts again")
            .given_user("nancy")
            .given_user("bob")
            .given_by::<MemberBlocked>("bob", blocked("bob", "nancy"))
            .given_by::<MemberUnblocked>("bob", blocked("bob", "nancy"))
            .given_by::<Liked>("nancy", liked("nancy", "bob"))
            .when(Request::get("/api/alerts/unread").by("bob"))
            .then_status(200)
            .then_json(json!({"unread": 1})),
        UseCase::new("bob's unread count streams to his open pages")
            .given_user("bob")
            .when(Request::get("/api/alerts/live").by("bob"))
            .then_status(200)
            .then_header("content-type", "text/event-stream"),
        UseCase::new("the alerts a deleted account caused are gone")
            .given_user("nancy")
            .given_user("bob")
            .given_by::<Liked>("nancy", liked("nancy", "bob"))
            .given::<AccountDeleted>(json!({"account": "{nancy}"}))
            .when(Request::get("/api/alerts/unread").by("bob"))
            .then_status(200)
            .then_json(json!({"unread": 0})),
        UseCase::new("a visitor has no alerts to read")
            .when(Request::get("/api/alerts/unread"))
            .then_status(401),
    ]
}
