//! The home module's use cases: the home page and the live notices.

use hearth::prelude::*;
use serde_json::json;

/// Every use case of the home page and its notices.
pub fn all() -> Vec<UseCase> {
    vec![
        UseCase::new("a visitor is greeted on the home page")
            .when(Request::get("/?name=Nancy"))
            .then_status(200)
            .then_contains("Hello, Nancy!"),
        UseCase::new("markup in the greeting is shown as text, not run")
            .when(Request::get("/?name=%3Cscript%3Ealert(1)%3C%2Fscript%3E"))
            .then_status(200)
            .then_contains("Hello, &#60;script&#62;alert(1)&#60;/script&#62;!")
            .then_lacks("<script>alert(1)"),
        UseCase::new("an admin posts a notice, which a job publishes")
            .given_admin("olga")
            .when(
                Request::post("/api/notices")
                    .by("olga")
                    .json(json!({"title": "Picnic", "body": "Saturday at noon"})),
            )
            .then_status(200)
            .then_json(json!({"duplicate": false})),
        UseCase::new("a member who is not an admin cannot post a notice")
            .given_user("nancy")
            .when(
                Request::post("/api/notices")
                    .by("nancy")
                    .json(json!({"title": "Picnic", "body": "Saturday at noon"})),
            )
            .then_status(403),
        UseCase::new("a browser subscribes to new notices")
            .when(Request::get("/api/notices/live"))
            .then_status(200)
            .then_header("content-type", "text/event-stream"),
        UseCase::new("a client without event streams polls for notices")
            .when(Request::get("/api/notices/poll"))
            .then_status(200)
            .then_json(json!({"messages": []})),
    ]
}
