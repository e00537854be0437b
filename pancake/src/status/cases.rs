//! The status module's use cases.

use hearth::prelude::*;
use serde_json::json;

/// Every use case of the status API.
pub fn all() -> Vec<UseCase> {
    vec![
        UseCase::new("a monitor reads the app's status from the database")
            .when(Request::get("/api/status"))
            .then_status(200)
            .then_json(json!({"app": "pancake", "migrations": {"home": 2}})),
        UseCase::new("a benchmark says hello")
            .when(Request::get("/api/hello"))
            .then_status(200),
    ]
}
