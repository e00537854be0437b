//! The members module's use cases: profiles, the directory, blocking.

use hearth::prelude::*;
use serde_json::{Value, json};

use hearth::auth::AccountDeleted;

use super::{MemberBlocked, MemberUnblocked, ProfileUpdated};

/// `who`'s profile, as the event that saved it.
pub fn profile(who: &str, name: &str, city: &str, bio: &str) -> Value {
    json!({"member": format!("{{{who}}}"), "display_name": name, "city": city, "bio": bio, "at": 1})
}

/// `blocker` blocked `blocked`, as an event.
pub fn blocked(blocker: &str, blocked: &str) -> Value {
    json!({"blocker": format!("{{{blocker}}}"), "blocked": format!("{{{blocked}}}")})
}

/// Every use case of the members module.
pub fn all() -> Vec<UseCase> {
    vec![
        UseCase::new("nancy fills in her profile")
            .given_user("nancy")
            .when(Request::post("/profile").by("nancy").form(&[
                ("display_name", "Nancy"),
                ("city", "Lyon"),
                ("bio", "Bakes on Sundays."),
            ]))
            .then_status(303)
            .then_header("location", "/people/{nancy}")
            .then_event::<ProfileUpdated>(
                json!({"member": "{nancy}", "display_name": "Nancy", "city": "Lyon", "bio": "Bakes on Sundays."}),
            )
            .then_no_other_events(),
        UseCase::new("a profile needs a name")
            .given_user("nancy")
            .when(
                Request::post("/profile")
                    .by("nancy")
                    .form(&[("display_name", "  "), ("city", "Lyon"), ("bio", "")]),
            )
            .then_status(422)
            .then_contains("Choose a name others will see.")
            .then_no_other_events(),
        UseCase::new("nancy finds bob in the directory")
            .given_user("nancy")
            .given_user("bob")
            .given_by::<ProfileUpdated>("bob", profile("bob", "Bob", "Oslo", ""))
            .when(Request::get("/people").by("nancy"))
            .then_status(200)
            .then_contains(r#"<a href="/people/{bob}">Bob</a> · Oslo"#),
        UseCase::new("bob's profile page shows his bio, and markup in it as text")
            .given_user("nancy")
            .given_user("bob")
            .given_by::<ProfileUpdated>("bob", profile("bob", "Bob", "Oslo", "<b>hi</b>"))
            .when(Request::get("/people/{bob}").by("nancy"))
            .then_status(200)
            .then_contains("&#60;b&#62;hi&#60;/b&#62;")
            .then_lacks("<b>hi</b>")
            .then_contains(r#"action="/people/{bob}/like""#),
        UseCase::new("nancy opens her profile form, filled in")
            .given_user("nancy")
            .given_by::<ProfileUpdated>("nancy", profile("nancy", "Nancy", "Lyon", ""))
            .when(Request::get("/profile").by("nancy"))
            .then_status(200)
            .then_contains(r#"value="Nancy""#),
        UseCase::new("nancy blocks bob")
            .given_user("nancy")
            .given_user("bob")
            .when(Request::post("/people/{bob}/block").by("nancy").form(&[]))
            .then_status(303)
            .then_header("location", "/people")
            .then_event::<MemberBlocked>(json!({"blocker": "{nancy}", "blocked": "{bob}"}))
            .then_no_other_events(),
        UseCase::new("nobody can block themselves")
            .given_user("nancy")
            .when(Request::post("/people/{nancy}/block").by("nancy").form(&[]))
            .then_status(422)
            .then_no_other_events(),
        UseCase::new("blocking someone who does not exist is not found")
            .given_user("nancy")
            .when(Request::post("/people/999999/block").by("nancy").form(&[]))
            .then_status(404)
            .then_no_other_events(),
        UseCase::new("someone who blocked nancy is gone from her directory")
            .given_user("nancy")
            .given_user("bob")
            .given_by::<ProfileUpdated>("nancy", profile("nancy", "Nancy", "Lyon", ""))
            .given_by::<ProfileUpdated>("bob", profile("bob", "Bob", "Oslo", ""))
            .given_by::<MemberBlocked>("bob", blocked("bob", "nancy"))
            .when(Request::get("/people").by("nancy"))
            .then_status(200)
            .then_contains("Nancy")
            .then_lacks("Bob"),
        UseCase::new("the profile of someone who blocked nancy is not found")
            .given_user("nancy")
            .given_user("bob")
            .given_by::<ProfileUpdated>("bob", profile("bob", "Bob", "Oslo", ""))
            .given_by::<MemberBlocked>("bob", blocked("bob", "nancy"))
            .when(Request::get("/people/{bob}").by("nancy"))
            .then_status(404)
            .then_lacks("Oslo"),
        UseCase::new("nancy lifts her block on bob")
            .given_user("nancy")
            .given_user("bob")
            .given_by::<MemberBlocked>("nancy", blocked("nancy", "bob"))
            .when(Request::post("/people/{bob}/unblock").by("nancy").form(&[]))
            .then_status(303)
            .then_header("location", "/profile")
            .then_event::<MemberUnblocked>(json!({"blocker": "{nancy}", "blocked": "{bob}"}))
            .then_no_other_events(),
        UseCase::new("a deleted account's profile is gone from the directory")
            .given_user("nancy")
            .given_user("bob")
            .given_by::<ProfileUpdated>("bob", profile("bob", "Bob", "Oslo", ""))
            .given::<AccountDeleted>(json!({"account": "{bob}"}))
            .when(Request::get("/people").by("nancy"))
            .then_status(200)
            .then_lacks("Bob"),
        // Two use cases, one each way round, because the deletion and the
        // block have different keys and so may be handled in either order.
        UseCase::new("a block of an account deleted first is dropped")
            .given_user("nancy")
            .given_user("bob")
            .given::<AccountDeleted>(json!({"account": "{bob}"}))
            .given_by::<MemberBlocked>("nancy", blocked("nancy", "bob"))
            .when(Request::get("/profile").by("nancy"))
            .then_status(200)
            .then_lacks("People I blocked"),
        UseCase::new("a block of an account deleted first is dropped, the other way round")
            .given_user("nancy")
            .given_user("bob")
            .given::<AccountDeleted>(json!({"account": "{nancy}"}))
            .given_by::<MemberBlocked>("bob", blocked("bob", "nancy"))
            .when(Request::get("/profile").by("bob"))
            .then_status(200)
            .then_lacks("People I blocked"),
        UseCase::new("after the block is lifted, bob is back in the directory")
            .given_user("nancy")
            .given_user("bob")
            .given_by::<ProfileUpdated>("bob", profile("bob", "Bob", "Oslo", ""))
            .given_by::<MemberBlocked>("nancy", blocked("nancy", "bob"))
            .given_by::<MemberUnblocked>("nancy", blocked("nancy", "bob"))
            .when(Request::get("/people").by("nancy"))
            .then_status(200)
            .then_contains("Bob"),
    ]
}
