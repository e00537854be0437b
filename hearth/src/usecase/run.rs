//! The use-case runner: each use case on a fresh database, through real
//! HTTP, with events and jobs drained in the test's own task so that THEN
//! sees every effect of WHEN, and never a timing-dependent half of it.
//!
//! The app is started with `jobs.in_serve = false`: no background worker
//! or event reader races the runner. After GIVEN and again after WHEN the
//! runner hands pending events to their subscribers and runs due jobs,
//! round after round, until a round does nothing.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde_json::Value;

use super::{Body, Given, Then, UseCase, json_contains};
use crate::App;
use crate::module::Method;
use crate::testing::{Backend, TestApp, TestDb};

/// The password every GIVEN user has.
pub const PASSWORD: &str = "use-case password 7731";

/// How a use case went.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The use case's name.
    pub name: String,
    /// Why it failed; `None` when it passed.
    pub failure: Option<String>,
}

/// Where use cases run: a fresh database of an engine, or SQLite in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A fresh database on an engine.
    Engine(Backend),
    /// A fresh SQLite database in memory ([`TestDb::in_memory`]).
    Memory,
}

impl From<Backend> for Target {
    fn from(b: Backend) -> Target {
        Target::Engine(b)
    }
}

/// Rounds of draining after which the runner gives up: events and jobs
/// that keep making more of each other would otherwise never settle.
const MAX_ROUNDS: usize = 50;

/// Runs every use case of `module` on `backend`, each on a fresh
/// database. `None` when PostgreSQL is wanted and skipped (which is said
/// on stderr). An unknown module, or one without use cases, is a failure:
/// a test that checks nothing must not pass.
pub async fn run(app: &App, module: &str, target: impl Into<Target>) -> Option<Vec<Outcome>> {
    let target = target.into();
    let docs = match app.docs() {
        Ok(d) => d,
        Err(e) => {
            return Some(vec![Outcome {
                name: module.to_owned(),
                failure: Some(e.to_string()),
            }]);
        }
    };
    let Some(m) = docs.iter().find(|d| d.spec.name() == module) else {
        return Some(vec![Outcome {
            name: module.to_owned(),
            failure: Some(format!("the app has no module `{module}`")),
        }]);
    };
    if m.use_cases.is_empty() {
        return Some(vec![Outcome {
            name: module.to_owned(),
            failure: Some(format!("module `{module}` declares no use cases")),
        }]);
    }
    let mut out = Vec::new();
    for uc in &m.use_cases {
        let failure = match run_one(app, uc, target).await {
            Ok(Some(())) => None,
            Ok(None) => return None,
            Err(why) => Some(why),
        };
        out.push(Outcome {
            name: uc.name().to_owned(),
            failure,
        });
    }
    Some(out)
}

/// Runs `module`'s use cases and panics with every failure explained:
/// what [`use_case_tests!`](crate::use_case_tests) calls.
pub async fn check(app: &App, module: &str, target: impl Into<Target>) {
    let target = target.into();
    let Some(outcomes) = run(app, module, target).await else {
        return;
    };
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| o.failure.is_some()).collect();
    if failed.is_empty() {
        return;
    }
    let mut report = format!(
        "{} of {} use cases of `{module}` failed on {target:?}:\n",
        failed.len(),
        outcomes.len()
    );
    for o in failed {
        let _ = write!(
            report,
            "\n--- {}\n{}\n",
            o.name,
            o.failure.as_deref().unwrap_or("")
        );
    }
    panic!("{report}");
}

/// The users of one run: name → (id, email).
struct Users(HashMap<String, (i64, String)>);

impl Users {
    /// Replaces `{name}` and `{name.email}` in `s`.
    fn text(&self, s: &str) -> String {
        let mut out = s.to_owned();
        for (name, (id, email)) in &self.0 {
            out = out
                .replace(&format!("{{{name}.email}}"), email)
                .replace(&format!("{{{name}}}"), &id.to_string());
        }
        out
    }

    /// Substitutes inside a JSON value; a string that is exactly `{name}`
    /// becomes the id as a number.
    fn json(&self, v: &Value) -> Value {
        match v {
            Value::String(s) => {
                if let Some(name) = s.strip_prefix('{').and_then(|r| r.strip_suffix('}'))
                    && let Some((id, _)) = self.0.get(name)
                {
                    return Value::from(*id);
                }
                Value::String(self.text(s))
            }
            Value::Array(a) => Value::Array(a.iter().map(|x| self.json(x)).collect()),
            Value::Object(o) => {
                Value::Object(o.iter().map(|(k, x)| (k.clone(), self.json(x))).collect())
            }
            other => other.clone(),
        }
    }
}

/// Runs one use case; `Ok(None)` when PostgreSQL is skipped.
async fn run_one(app: &App, uc: &UseCase, target: Target) -> Result<Option<()>, String> {
    if let Some(p) = uc.problem() {
        return Err(format!("the use case cannot run: {p}"));
    }
    let configure = |c: &mut crate::Config| {
        // No background worker or reader: the runner drains, so nothing races it.
        c.jobs.in_serve = false;
        // A long poll that finds nothing answers after a second, not 25.
        c.realtime.poll_wait = crate::config::Duration::from_millis(1000);
    };
    let t = match target {
        Target::Engine(backend) => match TestApp::spawn_with(app, backend, configure).await {
            Some(t) => t,
            None => return Ok(None),
        },
        Target::Memory => TestApp::start_on(app, TestDb::in_memory(), configure).await,
    };
    let result = run_started(&t, uc).await;
    t.stop().await;
    result.map(Some)
}

async fn run_started(t: &TestApp, uc: &UseCase) -> Result<(), String> {
    let state = t.state();
    let auth = state.auth();
    let sql = |e: sqlx::Error| format!("database error: {e}");

    // GIVEN: users, then events, then whatever they set off.
    let mut users = Users(HashMap::new());
    let hash = auth
        .passwords()
        .hash(PASSWORD)
        .await
        .map_err(|e| format!("hashing the users' password: {}", e.body().message))?;
    for g in uc.givens() {
        let Given::User {
            name,
            admin,
            groups,
        } = g
        else {
            continue;
        };
        let email = format!("{}@example.test", name.to_ascii_lowercase());
        let mut tx = state.db().begin().await.map_err(sql)?;
        let id = auth
            .users()
            .create(&mut tx, &email, &hash)
            .await
            .map_err(sql)?
            .ok_or_else(|| format!("user {name}: {email} exists already"))?;
        auth.users().mark_verified(&mut tx, id).await.map_err(sql)?;
        if *admin {
            auth.users()
                .set_admin(&mut tx, id, true)
                .await
                .map_err(sql)?;
        }
        for group in groups {
            auth.users()
                .add_group(&mut tx, id, group)
                .await
                .map_err(sql)?;
        }
        tx.commit().await.map_err(sql)?;
        users.0.insert(name.clone(), (id, email));
    }
    let events = state.events();
    let mut tx = state.db().begin().await.map_err(sql)?;
    for e in uc.given_events() {
        let payload = users.json(&e.payload);
        let (json, key) = (e.decode)(&payload).map_err(|why| {
            format!(
                "GIVEN {} {}: the payload does not fit the event: {why}",
                e.name,
                super::docs::json_text(&payload)
            )
        })?;
        let actor = e.actor.as_ref().and_then(|a| users.0.get(a)).map(|u| u.0);
        events
            .write_raw(&mut tx, e.name, e.version, &json, key, actor)
            .await
            .map_err(|why| format!("GIVEN {}: {why}", e.name))?;
    }
    tx.commit().await.map_err(sql)?;
    settle(t, "GIVEN").await?;
    let mark = last_position(state.db()).await.map_err(sql)?;

    // WHEN: one request, as a browser or an API client would send it.
    let Some(req) = uc.request() else {
        return Err("no WHEN request".into());
    };
    let path = users.text(&req.path);
    // reqwest is built without a default TLS provider; hearth uses ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| format!("HTTP client: {e}"))?;
    let method = match req.method {
        Method::Get => reqwest::Method::GET,
        Method::Post => reqwest::Method::POST,
        Method::Put => reqwest::Method::PUT,
        Method::Patch => reqwest::Method::PATCH,
        Method::Delete => reqwest::Method::DELETE,
    };
    let unsafe_method = !matches!(req.method, Method::Get);
    let mut builder = client.request(method, t.url(&path));
    if req.user.is_none() && unsafe_method {
        // A visitor who submits a form got it from a page first, and with
        // it the anonymous pre-session its CSRF token belongs to.
        let secret = auth
            .start_anonymous()
            .map_err(|e| format!("anonymous session: {}", e.body().message))?;
        builder = builder
            .header("cookie", cookie_pair(auth, &secret)?)
            .header(crate::auth::guard::CSRF_HEADER, auth.csrf_for(&secret));
    }
    if let Some(name) = &req.user {
        let (id, _) = users
            .0
            .get(name)
            .ok_or_else(|| format!("the request is sent by `{name}`, who is not given"))?;
        let (user, _) = auth
            .users()
            .by_id(*id)
            .await
            .map_err(sql)?
            .ok_or_else(|| format!("user {name} is gone"))?;
        let mut tx = state.db().begin().await.map_err(sql)?;
        let (secret, _) = auth.start_session(&mut tx, &user).await.map_err(sql)?;
        tx.commit().await.map_err(sql)?;
        builder = builder
            .header("cookie", cookie_pair(auth, &secret)?)
            .header(crate::auth::guard::CSRF_HEADER, auth.csrf_for(&secret));
    }
    for (k, v) in &req.headers {
        builder = builder.header(k.as_str(), users.text(v));
    }
    builder = match &req.body {
        Body::Empty => builder,
        Body::Json(v) => builder.json(&users.json(v)),
        Body::Form(fields) => {
            let encoded: String = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(fields.iter().map(|(k, v)| (k.as_str(), users.text(v))))
                .finish();
            builder
                .header("content-type", "application/x-www-form-urlencoded")
                .body(encoded)
        }
    };
    let response = builder
        .send()
        .await
        .map_err(|e| format!("WHEN {} {path}: the request failed: {e}", req.method))?;
    let status = response.status().as_u16();
    let headers: Vec<(String, String)> = response
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("?").to_owned()))
        .collect();
    let streaming = headers
        .iter()
        .any(|(k, v)| k == "content-type" && v.starts_with("text/event-stream"));
    let body = if streaming {
        // An event stream never ends: THEN sees what it sends first.
        read_stream_start(response).await
    } else {
        response
            .text()
            .await
            .map_err(|e| format!("WHEN {} {path}: reading the response: {e}", req.method))?
    };
    settle(t, "WHEN").await?;
    let published = published_after(state.db(), mark).await.map_err(sql)?;

    // THEN: every expectation, and all the failures at once.
    let mut failures: Vec<String> = Vec::new();
    let mut matched = vec![false; published.len()];
    let json_body: Option<Value> = serde_json::from_str(&body).ok();
    let flat = squash(&body);
    for expected in uc.expected() {
        match expected {
            Then::Status(s) => {
                if status != *s {
                    failures.push(format!("expected status {s}, got {status}"));
                }
            }
            Then::Json(subset) => {
                let subset = users.json(subset);
                match &json_body {
                    Some(v) if json_contains(v, &subset) => {}
                    Some(_) => failures.push(format!(
                        "expected the JSON to contain {}",
                        super::docs::json_text(&subset)
                    )),
                    None => failures.push("expected a JSON response".into()),
                }
            }
            Then::Contains(text) => {
                let text = squash(&users.text(text));
                if !flat.contains(&text) {
                    failures.push(format!("expected the response to show {text:?}"));
                }
            }
            Then::Lacks(text) => {
                let text = squash(&users.text(text));
                if flat.contains(&text) {
                    failures.push(format!("expected the response not to show {text:?}"));
                }
            }
            Then::Header(name, value) => {
                let value = users.text(value);
                let got: Vec<&str> = headers
                    .iter()
                    .filter(|(k, _)| k == name)
                    .map(|(_, v)| v.as_str())
                    .collect();
                if !got.contains(&value.as_str()) {
                    failures.push(format!("expected header {name}: {value}, got {got:?}"));
                }
            }
            Then::Event { name, fields } => {
                let fields = users.json(fields);
                let hit = published
                    .iter()
                    .enumerate()
                    .position(|(i, (n, p))| !matched[i] && n == name && json_contains(p, &fields));
                match hit {
                    Some(i) => matched[i] = true,
                    None => failures.push(format!(
                        "expected event {name} with {}",
                        super::docs::json_text(&fields)
                    )),
                }
            }
            Then::NoOtherEvents => {}
        }
    }
    if uc.expected().contains(&Then::NoOtherEvents) {
        for (i, (n, p)) in published.iter().enumerate() {
            if !matched[i] {
                failures.push(format!(
                    "expected no other events, but {n} {} was published",
                    super::docs::json_text(p)
                ));
            }
        }
    }
    // An event a subscriber could not handle is a failure of the use case,
    // whatever THEN says: it would be retried, then parked, in production.
    let held = events.held(None, 20).await.map_err(|e| e.to_string())?;
    for h in held {
        failures.push(format!(
            "module {} could not handle {} (position {}): {}",
            h.module,
            h.name,
            h.position,
            h.error.as_deref().unwrap_or("")
        ));
    }
    if failures.is_empty() {
        return Ok(());
    }
    let mut report = String::new();
    let _ = writeln!(report, "WHEN {} {path}", req.method);
    for f in &failures {
        let _ = writeln!(report, "  ✗ {f}");
    }
    let _ = writeln!(report, "actual response: {status}");
    let shown: String = body.chars().take(2000).collect();
    let more = if body.chars().count() > 2000 {
        " …(cut)"
    } else {
        ""
    };
    let _ = writeln!(report, "{shown}{more}");
    if published.is_empty() {
        let _ = writeln!(report, "events published: none");
    } else {
        let _ = writeln!(report, "events published:");
        for (n, p) in &published {
            let _ = writeln!(report, "  {n} {}", super::docs::json_text(p));
        }
    }
    Err(report)
}

/// What an event stream sends in its first half second (its opening
/// comment and retry hint, and any backlog a `Last-Event-ID` asked for).
async fn read_stream_start(mut response: reqwest::Response) -> String {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
    while let Ok(Ok(Some(chunk))) = tokio::time::timeout_at(deadline, response.chunk()).await {
        out.extend_from_slice(&chunk);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cookie a browser would send back for session `secret`: the
/// `name=value` part of the Set-Cookie line the app answers sign-in with.
fn cookie_pair(
    auth: &crate::auth::Auth,
    secret: &crate::auth::tokens::Secret,
) -> Result<String, String> {
    let set_cookie = auth
        .session_cookie_header(secret)
        .map_err(|e| format!("session cookie: {}", e.body().message))?;
    Ok(set_cookie
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .to_owned())
}

/// Drains events and jobs until a round does nothing.
async fn settle(t: &TestApp, phase: &str) -> Result<(), String> {
    let state = t.state();
    for _ in 0..MAX_ROUNDS {
        let handled = state
            .events()
            .drain()
            .await
            .map_err(|e| format!("{phase}: handing events to subscribers: {e}"))?;
        let ran = t
            .drain_jobs(1000)
            .await
            .map_err(|e| format!("{phase}: running jobs: {e}"))?;
        if handled == 0 && ran == 0 {
            return Ok(());
        }
    }
    Err(format!(
        "{phase}: events and jobs kept making more work after {MAX_ROUNDS} rounds"
    ))
}

async fn last_position(db: &crate::Db) -> Result<i64, sqlx::Error> {
    crate::with_db!(db, pool => sqlx::query_scalar::<_, Option<i64>>("SELECT max(position) FROM hearth_event")
        .fetch_one(pool)
        .await
        .map(|p| p.unwrap_or(0)))
}

async fn published_after(db: &crate::Db, mark: i64) -> Result<Vec<(String, Value)>, sqlx::Error> {
    let rows: Vec<(String, String)> = crate::with_db!(db, pool => sqlx::query_as(
        "SELECT name, payload FROM hearth_event WHERE position > $1 ORDER BY position",
    )
    .bind(mark)
    .fetch_all(pool)
    .await)?;
    Ok(rows
        .into_iter()
        .map(|(n, p)| {
            let v = serde_json::from_str(&p).unwrap_or(Value::String(p));
            (n, v)
        })
        .collect())
}

/// Collapses runs of whitespace into one space, so that a fragment matches
/// however the template indents it.
fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Writes a test per engine (and one on SQLite in memory) that runs every
/// use case of a module: the
/// module's author adds use cases to [`Module::use_cases`](crate::Module::use_cases),
/// not test code.
///
/// ```no_run
/// fn my_app() -> hearth::App {
///     hearth::App::new("demo", "0.1.0")
/// }
///
/// hearth::use_case_tests! {
///     likes => my_app(), "likes";
///     alerts => my_app(), "alerts";
/// }
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! use_case_tests {
    ($( $name:ident => $app:expr, $module:expr; )*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                #[tokio::test]
                async fn sqlite() {
                    $crate::usecase::run::check(&$app, $module, $crate::testing::Backend::Sqlite).await;
                }

                #[tokio::test]
                async fn postgres() {
                    $crate::usecase::run::check(&$app, $module, $crate::testing::Backend::Postgres).await;
                }

                #[tokio::test]
                async fn memory() {
                    $crate::usecase::run::check(&$app, $module, $crate::usecase::run::Target::Memory).await;
                }
            }
        )*
    };
}
