//! Use cases: plain data that says what a module does, in its own words.
//!
//! A use case is GIVEN (users who exist, events already published), WHEN
//! (one HTTP request, as a user or a visitor), THEN (the status, parts of
//! the JSON or of the page, headers, and the events the request published).
//! The same data
//!
//! * runs as a test on SQLite and on PostgreSQL, through real HTTP on a
//!   fresh database, with pending events and jobs drained before THEN is
//!   checked (`use_case_tests!`, `run::run`);
//! * prints as stories, a grep-able summary with what no use case covers,
//!   and a graph of modules, routes and events (`docs`; the `story`,
//!   `summary` and `graph` commands of every app binary).
//!
//! Users are named in the use case (`nancy`, `bob`) and written into paths,
//! payloads and expected text as `{nancy}` (the account id) or
//! `{nancy.email}`; the runner substitutes them. In JSON, a string that is
//! exactly `"{nancy}"` becomes the id as a number.
//!
//! ```
//! use hearth::events::Event;
//! use hearth::usecase::{Request, UseCase};
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Liked { liker: i64, liked: i64 }
//! impl Event for Liked { const NAME: &'static str = "likes.liked"; }
//!
//! let case = UseCase::new("nancy likes bob")
//!     .given_user("nancy")
//!     .given_user("bob")
//!     .when(Request::post("/members/{bob}/like").by("nancy"))
//!     .then_status(303)
//!     .then_event::<Liked>(serde_json::json!({"liker": "{nancy}", "liked": "{bob}"}))
//!     .then_no_other_events();
//! assert_eq!(case.name(), "nancy likes bob");
//! ```

pub mod docs;
pub mod run;

use serde_json::Value;

use crate::events::Event;
use crate::module::Method;

/// One use case. Build it with [`UseCase::new`] and the `given_*`, `when`
/// and `then_*` methods.
#[derive(Debug, Clone)]
pub struct UseCase {
    name: String,
    given: Vec<Given>,
    when: Option<Request>,
    then: Vec<Then>,
}

/// What is true before the request.
#[derive(Debug, Clone)]
pub enum Given {
    /// An account named `name` exists (email `<name>@example.test`,
    /// verified), an admin if `admin`, a member of `groups`.
    User {
        /// The name the use case calls it by.
        name: String,
        /// Whether it is an admin.
        admin: bool,
        /// Groups it belongs to.
        groups: Vec<String>,
    },
    /// An event was published (and handled by its subscribers).
    Event(GivenEvent),
}

/// An event in GIVEN.
#[derive(Debug, Clone)]
pub struct GivenEvent {
    /// Its name.
    pub name: &'static str,
    /// Its version.
    pub version: u32,
    /// Its payload, with `{user}` placeholders.
    pub payload: Value,
    /// The user on whose behalf it was published, if any.
    pub actor: Option<String>,
    /// Decodes the substituted payload as the event type: its canonical
    /// JSON and its ordering key, or why it does not fit.
    pub(crate) decode: Decode,
}

pub(crate) type Decode = fn(&Value) -> Result<(String, Option<String>), String>;

fn decode_as<E: Event>(v: &Value) -> Result<(String, Option<String>), String> {
    let e: E = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
    let json = serde_json::to_string(&e).map_err(|e| e.to_string())?;
    Ok((json, e.key()))
}

/// The request of WHEN.
#[derive(Debug, Clone)]
pub struct Request {
    /// The method.
    pub method: Method,
    /// The path and query, with `{user}` placeholders.
    pub path: String,
    /// The signed-in user who sends it; `None` for a visitor.
    pub user: Option<String>,
    /// The body.
    pub body: Body,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
}

/// A request body.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// No body.
    Empty,
    /// A JSON body (with placeholders).
    Json(Value),
    /// A form (`application/x-www-form-urlencoded`, with placeholders).
    Form(Vec<(String, String)>),
}

impl Request {
    /// A request with `method` for `path`, sent by a visitor.
    pub fn new(method: Method, path: impl Into<String>) -> Self {
        Self {
            method,
            path: path.into(),
            user: None,
            body: Body::Empty,
            headers: Vec::new(),
        }
    }

    /// A GET.
    pub fn get(path: impl Into<String>) -> Self {
        Self::new(Method::Get, path)
    }

    /// A POST.
    pub fn post(path: impl Into<String>) -> Self {
        Self::new(Method::Post, path)
    }

    /// A PUT.
    pub fn put(path: impl Into<String>) -> Self {
        Self::new(Method::Put, path)
    }

    /// A PATCH.
    pub fn patch(path: impl Into<String>) -> Self {
        Self::new(Method::Patch, path)
    }

    /// A DELETE.
    pub fn delete(path: impl Into<String>) -> Self {
        Self::new(Method::Delete, path)
    }

    /// Sent by `user`, signed in (with its CSRF token on unsafe methods, as
    /// a page of the app would send it).
    #[must_use]
    pub fn by(mut self, user: &str) -> Self {
        self.user = Some(user.to_owned());
        self
    }

    /// With a JSON body.
    #[must_use]
    pub fn json(mut self, body: Value) -> Self {
        self.body = Body::Json(body);
        self
    }

    /// With a form body.
    #[must_use]
    pub fn form(mut self, fields: &[(&str, &str)]) -> Self {
        self.body = Body::Form(
            fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        );
        self
    }

    /// With a header.
    #[must_use]
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// The path without its query string.
    pub fn route_path(&self) -> &str {
        self.path.split('?').next().unwrap_or(&self.path)
    }
}

/// What must hold after the request.
#[derive(Debug, Clone, PartialEq)]
pub enum Then {
    /// The response status.
    Status(u16),
    /// The response is JSON and contains this subset: every key of an
    /// expected object is present with a matching value; an expected array
    /// matches when its elements match elements of the actual one, in order
    /// (others may lie between).
    Json(Value),
    /// The body contains this text (runs of whitespace count as one space).
    Contains(String),
    /// The body does not contain this text.
    Lacks(String),
    /// The response has this header with this value.
    Header(String, String),
    /// This event was published, with a payload containing these fields.
    Event {
        /// Its name.
        name: &'static str,
        /// A subset of its payload, as for [`Then::Json`].
        fields: Value,
    },
    /// No events were published besides those expected.
    NoOtherEvents,
}

impl UseCase {
    /// A use case named in the domain's words, such as "nancy likes bob, so
    /// bob sees it in his alerts".
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            given: Vec::new(),
            when: None,
            then: Vec::new(),
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What is given.
    pub fn givens(&self) -> &[Given] {
        &self.given
    }

    /// The request, if set.
    pub fn request(&self) -> Option<&Request> {
        self.when.as_ref()
    }

    /// What is expected.
    pub fn expected(&self) -> &[Then] {
        &self.then
    }

    /// The events in GIVEN.
    pub fn given_events(&self) -> impl Iterator<Item = &GivenEvent> {
        self.given.iter().filter_map(|g| match g {
            Given::Event(e) => Some(e),
            Given::User { .. } => None,
        })
    }

    /// The names of the events THEN expects.
    pub fn expected_events(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.then.iter().filter_map(|t| match t {
            Then::Event { name, .. } => Some(*name),
            _ => None,
        })
    }

    fn user(mut self, name: &str, admin: bool, groups: Vec<String>) -> Self {
        self.given.push(Given::User {
            name: name.to_owned(),
            admin,
            groups,
        });
        self
    }

    /// GIVEN an account called `name`.
    #[must_use]
    pub fn given_user(self, name: &str) -> Self {
        self.user(name, false, Vec::new())
    }

    /// GIVEN an admin called `name`.
    #[must_use]
    pub fn given_admin(self, name: &str) -> Self {
        self.user(name, true, Vec::new())
    }

    /// GIVEN an account called `name` in `group`.
    #[must_use]
    pub fn given_member_of(self, name: &str, group: &str) -> Self {
        self.user(name, false, vec![group.to_owned()])
    }

    /// GIVEN event `E` with this payload (placeholders allowed) was
    /// published. The runner checks that the payload fits `E`.
    #[must_use]
    pub fn given<E: Event>(self, payload: Value) -> Self {
        self.given_event::<E>(None, payload)
    }

    /// GIVEN event `E` was published on behalf of `actor`.
    #[must_use]
    pub fn given_by<E: Event>(self, actor: &str, payload: Value) -> Self {
        self.given_event::<E>(Some(actor.to_owned()), payload)
    }

    fn given_event<E: Event>(mut self, actor: Option<String>, payload: Value) -> Self {
        self.given.push(Given::Event(GivenEvent {
            name: E::NAME,
            version: E::VERSION,
            payload,
            actor,
            decode: decode_as::<E>,
        }));
        self
    }

    /// WHEN this request is sent.
    #[must_use]
    pub fn when(mut self, request: Request) -> Self {
        self.when = Some(request);
        self
    }

    /// THEN the status is `status`.
    #[must_use]
    pub fn then_status(mut self, status: u16) -> Self {
        self.then.push(Then::Status(status));
        self
    }

    /// THEN the JSON response contains `subset`.
    #[must_use]
    pub fn then_json(mut self, subset: Value) -> Self {
        self.then.push(Then::Json(subset));
        self
    }

    /// THEN the body (a page, say) contains `fragment`.
    #[must_use]
    pub fn then_contains(mut self, fragment: &str) -> Self {
        self.then.push(Then::Contains(fragment.to_owned()));
        self
    }

    /// THEN the body does not contain `text`.
    #[must_use]
    pub fn then_lacks(mut self, text: &str) -> Self {
        self.then.push(Then::Lacks(text.to_owned()));
        self
    }

    /// THEN the response carries header `name` with `value`.
    #[must_use]
    pub fn then_header(mut self, name: &str, value: &str) -> Self {
        self.then
            .push(Then::Header(name.to_ascii_lowercase(), value.to_owned()));
        self
    }

    /// THEN event `E` was published with a payload containing `fields`.
    #[must_use]
    pub fn then_event<E: Event>(mut self, fields: Value) -> Self {
        self.then.push(Then::Event {
            name: E::NAME,
            fields,
        });
        self
    }

    /// THEN no other event was published.
    #[must_use]
    pub fn then_no_other_events(mut self) -> Self {
        self.then.push(Then::NoOtherEvents);
        self
    }

    /// Why this use case cannot run, if it cannot: no request, a user
    /// named twice, or a request by a user it does not give.
    pub fn problem(&self) -> Option<String> {
        let mut names: Vec<&str> = Vec::new();
        for g in &self.given {
            if let Given::User { name, .. } = g {
                let valid = !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if !valid {
                    return Some(format!(
                        "user name `{name}` must be letters, digits, `-` and `_`"
                    ));
                }
                if names.contains(&name.as_str()) {
                    return Some(format!("user `{name}` is given twice"));
                }
                names.push(name);
            }
        }
        let Some(req) = &self.when else {
            return Some("it has no WHEN request".into());
        };
        if let Some(u) = &req.user
            && !names.contains(&u.as_str())
        {
            return Some(format!("the request is sent by `{u}`, who is not given"));
        }
        for e in self.given_events() {
            if let Some(a) = &e.actor
                && !names.contains(&a.as_str())
            {
                return Some(format!(
                    "event {} is published by `{a}`, who is not given",
                    e.name
                ));
            }
        }
        if self.then.is_empty() {
            return Some("it expects nothing (no THEN)".into());
        }
        None
    }
}

/// Whether `actual` contains `expected` as [`Then::Json`] describes.
pub fn json_contains(actual: &Value, expected: &Value) -> bool {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => e
            .iter()
            .all(|(k, ev)| a.get(k).is_some_and(|av| json_contains(av, ev))),
        (Value::Array(e), Value::Array(a)) => {
            let mut rest = a.iter();
            e.iter().all(|ev| rest.any(|av| json_contains(av, ev)))
        }
        (e, a) => e == a,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_subsets() {
        let a = json!({"a": 1, "b": {"c": [1, 2, 3], "d": "x"}, "e": null});
        assert!(json_contains(&a, &json!({})));
        assert!(json_contains(&a, &json!({"a": 1})));
        assert!(json_contains(&a, &json!({"b": {"c": [1, 3]}})));
        assert!(!json_contains(&a, &json!({"b": {"c": [3, 1]}})));
        assert!(!json_contains(&a, &json!({"a": 2})));
        assert!(!json_contains(&a, &json!({"z": 1})));
        assert!(json_contains(&a, &json!({"e": null})));
        assert!(json_contains(
            &json!([{"id": 1, "n": "a"}, {"id": 2, "n": "b"}]),
            &json!([{"n": "b"}])
        ));
    }

    #[test]
    fn problems_are_named() {
        assert!(UseCase::new("x").problem().is_some());
        let no_user = UseCase::new("x")
            .when(Request::get("/").by("nancy"))
            .then_status(200);
        assert!(no_user.problem().unwrap().contains("nancy"));
        let twice = UseCase::new("x")
            .given_user("a")
            .given_user("a")
            .when(Request::get("/"))
            .then_status(200);
        assert!(twice.problem().is_some());
        let ok = UseCase::new("x")
            .given_user("nancy")
            .when(Request::get("/").by("nancy"))
            .then_status(200);
        assert!(ok.problem().is_none());
    }
}
