//! Use cases as tests, on both engines: a small app of two modules that
//! talk through an event (`notes` publishes `notes.added`, `counts`
//! projects it and sets off a job), its use cases run by the macro, and
//! what a failing use case says about itself. Also: the app refuses routes
//! its modules register without declaring, or declare without registering.

use hearth::auth::CurrentUser;
use hearth::db::migrate::Migration;
use hearth::events::{Event, EventRun, EventSpec};
use hearth::prelude::*;
use hearth::testing::TestApp;
use hearth::usecase::run::run;
use hearth::usecase::{Request, UseCase};
use hearth::{sqlx, with_db, with_tx};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// A note was added.
#[derive(Debug, Serialize, Deserialize)]
pub struct Added {
    pub author: i64,
    pub text: String,
}

impl Event for Added {
    const NAME: &'static str = "notes.added";
    fn key(&self) -> Option<String> {
        Some(self.author.to_string())
    }
}

const ADDED: &[EventSpec] = &[EventSpec::of::<Added>()];

const NOTES_SQLITE: &[Migration] = &[Migration::new(
    1,
    "create",
    "CREATE TABLE notes_note (id INTEGER PRIMARY KEY AUTOINCREMENT, author BIGINT NOT NULL, text TEXT NOT NULL)",
)];
const NOTES_POSTGRES: &[Migration] = &[Migration::new(
    1,
    "create",
    "CREATE TABLE notes_note (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, author BIGINT NOT NULL, text TEXT NOT NULL)",
)];
const COUNTS_SQL: &[Migration] = &[Migration::new(
    1,
    "create",
    "CREATE TABLE counts_count (author BIGINT PRIMARY KEY, n BIGINT NOT NULL, badge BOOLEAN NOT NULL DEFAULT FALSE)",
)];

const ADD: RouteSpec = RouteSpec::post("/notes", Guard::SignedIn);
const PAGE: RouteSpec = RouteSpec::get("/notes/{author}", Guard::Public);
const COUNT: RouteSpec = RouteSpec::get("/counts/{author}", Guard::SignedIn);

/// The badge job: a second note earns one.
const BADGE: hearth::jobs::JobName<i64> = hearth::jobs::JobName::new("counts.badge");

#[derive(Deserialize)]
struct NewNote {
    text: String,
}

async fn add(
    State(state): State<AppState>,
    me: CurrentUser,
    Json(n): Json<NewNote>,
) -> Result<(axum::http::StatusCode, Json<Value>)> {
    if n.text.trim().is_empty() {
        return Err(Error::validation("text", "a note needs some text"));
    }
    let mut tx = state.db().begin().await?;
    with_tx!(&mut tx, c => sqlx::query("INSERT INTO notes_note (author, text) VALUES ($1, $2)")
        .bind(me.user.id).bind(&n.text).execute(&mut **c).await.map(|_| ()))?;
    state
        .events()
        .publish_by(
            &mut tx,
            me.user.id,
            &Added {
                author: me.user.id,
                text: n.text.clone(),
            },
        )
        .await?;
    tx.commit().await?;
    Ok((
        axum::http::StatusCode::CREATED,
        Json(json!({ "author": me.user.id, "text": n.text })),
    ))
}

async fn page(
    State(state): State<AppState>,
    axum::extract::Path(author): axum::extract::Path<i64>,
) -> Result<axum::response::Html<String>> {
    let db = state.db();
    let texts: Vec<String> = with_db!(db, p => sqlx::query_scalar("SELECT text FROM notes_note WHERE author = $1 ORDER BY id")
        .bind(author).fetch_all(p).await)?;
    let items: String = texts
        .iter()
        .map(|t| format!("<li>{}</li>", t.replace('<', "&lt;")))
        .collect();
    Ok(axum::response::Html(format!("<ul>\n  {items}\n</ul>")))
}

async fn count(
    State(state): State<AppState>,
    axum::extract::Path(author): axum::extract::Path<i64>,
) -> Result<Json<Value>> {
    let db = state.db();
    let row: Option<(i64, bool)> = with_db!(db, p => sqlx::query_as("SELECT n, badge FROM counts_count WHERE author = $1")
        .bind(author).fetch_optional(p).await)?;
    let (n, badge) = row.unwrap_or((0, false));
    Ok(Json(
        json!({ "author": author, "count": n, "badge": badge }),
    ))
}

/// Publishes notes. With `wrong`, it also declares a use case that fails.
struct Notes {
    wrong: bool,
}

impl Module for Notes {
    fn spec(&self) -> ModuleSpec {
        ModuleSpec::new("notes")
            .migrations(NOTES_SQLITE, NOTES_POSTGRES)
            .publishes(ADDED)
            .routes(&[ADD, PAGE])
    }

    fn register(&self, ctx: &mut Context<'_>) {
        ctx.route(ADD, add);
        ctx.route(PAGE, page);
    }

    fn use_cases(&self) -> Vec<UseCase> {
        let mut cases = vec![
            UseCase::new("nancy adds a note")
                .given_user("nancy")
                .when(
                    Request::post("/notes")
                        .by("nancy")
                        .json(json!({"text": "hello"})),
                )
                .then_status(201)
                .then_json(json!({"author": "{nancy}", "text": "hello"}))
                .then_event::<Added>(json!({"author": "{nancy}", "text": "hello"}))
                .then_no_other_events(),
            UseCase::new("a visitor cannot add a note")
                .when(Request::post("/notes").json(json!({"text": "hello"})))
                .then_status(401)
                .then_no_other_events(),
            UseCase::new("an empty note is refused and nothing is published")
                .given_user("nancy")
                .when(
                    Request::post("/notes")
                        .by("nancy")
                        .json(json!({"text": " "})),
                )
                .then_status(422)
                .then_json(json!({"error": {"code": "invalid_field", "field": "text"}}))
                .then_no_other_events(),
            UseCase::new("nancy's page lists her notes, escaped")
                .given_user("nancy")
                .when(Request::get("/notes/{nancy}"))
                .then_status(200)
                .then_contains("<ul> </ul>")
                .then_lacks("<li>"),
        ];
        if self.wrong {
            cases.push(
                UseCase::new("a use case that expects the wrong status")
                    .given_user("nancy")
                    .when(
                        Request::post("/notes")
                            .by("nancy")
                            .json(json!({"text": "hi"})),
                    )
                    .then_status(200)
                    .then_event::<Added>(json!({"text": "bye"}))
                    .then_no_other_events(),
            );
        }
        cases
    }
}

/// Counts each author's notes from the events; a second note earns a
/// badge through a job. A note saying "boom" makes its handler fail.
struct Counts;

impl Module for Counts {
    fn spec(&self) -> ModuleSpec {
        ModuleSpec::new("counts")
            .migrations(COUNTS_SQL, COUNTS_SQL)
            .subscribes(ADDED)
            .routes(&[COUNT])
    }

    fn register(&self, ctx: &mut Context<'_>) {
        ctx.route(COUNT, count);
        let jobs = ctx.state().jobs().clone();
        ctx.subscribe(move |run: EventRun<Added>| {
            let jobs = jobs.clone();
            async move {
                if run.event.text == "boom" {
                    anyhow::bail!("counts cannot count a boom");
                }
                let mut tx = run.tx().await;
                let n: i64 = with_tx!(&mut *tx, c => sqlx::query_scalar(
                "INSERT INTO counts_count (author, n) VALUES ($1, 1)
                 ON CONFLICT (author) DO UPDATE SET n = counts_count.n + 1 RETURNING n",
            ).bind(run.event.author).fetch_one(&mut **c).await)?;
                if n == 2 {
                    jobs.enqueue(&mut tx, BADGE.job(&run.event.author)).await?;
                }
                Ok(())
            }
        });
        ctx.job(BADGE, |run: JobRun<i64, AppState>| async move {
            let db = run.state.db();
            with_db!(db, p => sqlx::query("UPDATE counts_count SET badge = TRUE WHERE author = $1")
                .bind(run.payload).execute(p).await.map(|_| ()))?;
            Ok(())
        });
    }

    fn use_cases(&self) -> Vec<UseCase> {
        vec![
            UseCase::new("bob sees how many notes nancy has added")
                .given_user("nancy")
                .given_user("bob")
                .given_by::<Added>("nancy", json!({"author": "{nancy}", "text": "one"}))
                .when(Request::get("/counts/{nancy}").by("bob"))
                .then_status(200)
                .then_json(json!({"author": "{nancy}", "count": 1, "badge": false})),
            UseCase::new("a second note earns a badge, through a job")
                .given_user("nancy")
                .given::<Added>(json!({"author": "{nancy}", "text": "one"}))
                .given::<Added>(json!({"author": "{nancy}", "text": "two"}))
                .when(Request::get("/counts/{nancy}").by("nancy"))
                .then_status(200)
                .then_json(json!({"count": 2, "badge": true})),
        ]
    }
}

fn app() -> App {
    App::new("uctest", "0.0.0")
        .module(Notes { wrong: false })
        .module(Counts)
}

hearth::use_case_tests! {
    notes_use_cases => app(), "notes";
    counts_use_cases => app(), "counts";
}

/// A module whose use case sets off a handler failure.
struct Boom;

impl Module for Boom {
    fn spec(&self) -> ModuleSpec {
        ModuleSpec::new("boom")
    }
    fn register(&self, _ctx: &mut Context<'_>) {}
    fn use_cases(&self) -> Vec<UseCase> {
        vec![
            UseCase::new("a boom is added")
                .given_user("nancy")
                .when(
                    Request::post("/notes")
                        .by("nancy")
                        .json(json!({"text": "boom"})),
                )
                .then_status(201),
            UseCase::new("a given payload that does not fit its event")
                .given::<Added>(json!({"author": "not a number", "text": "x"}))
                .when(Request::get("/notes/1"))
                .then_status(200),
        ]
    }
}

hearth::db_tests! {
    async fn a_failing_use_case_explains_itself(backend) {
        let app = App::new("uctest", "0.0.0").module(Notes { wrong: true }).module(Counts);
        let Some(outcomes) = run(&app, "notes", backend).await else { return };
        assert_eq!(outcomes.len(), 5);
        let failed: Vec<_> = outcomes.iter().filter(|o| o.failure.is_some()).collect();
        assert_eq!(failed.len(), 1, "{outcomes:?}");
        let why = failed[0].failure.as_deref().unwrap();
        assert_eq!(failed[0].name, "a use case that expects the wrong status");
        assert!(why.contains("WHEN POST /notes"), "{why}");
        assert!(why.contains("expected status 200, got 201"), "{why}");
        assert!(why.contains(r#"expected event notes.added with {"text":"bye"}"#), "{why}");
        assert!(why.contains("expected no other events, but notes.added"), "{why}");
        assert!(why.contains("actual response: 201"), "{why}");
        assert!(why.contains(r#""text":"hi""#), "the actual body is shown: {why}");
        assert!(why.contains("events published:\n  notes.added"), "{why}");
    }

    async fn a_handler_failure_and_a_misfit_payload_fail_the_use_case(backend) {
        let app = App::new("uctest", "0.0.0").module(Notes { wrong: false }).module(Counts).module(Boom);
        let Some(outcomes) = run(&app, "boom", backend).await else { return };
        let why = outcomes[0].failure.as_deref().expect("a handler failure fails the use case");
        assert!(why.contains("module counts could not handle notes.added"), "{why}");
        assert!(why.contains("counts cannot count a boom"), "{why}");
        let why = outcomes[1].failure.as_deref().expect("a misfit payload fails the use case");
        assert!(why.contains("GIVEN notes.added"), "{why}");
        assert!(why.contains("does not fit the event"), "{why}");
    }

    async fn routes_must_be_declared_and_registered(backend) {
        struct Undeclared;
        impl Module for Undeclared {
            fn spec(&self) -> ModuleSpec {
                ModuleSpec::new("undeclared")
            }
            fn register(&self, ctx: &mut Context<'_>) {
                ctx.route(RouteSpec::get("/sneaky", Guard::Public), || async { "hi" });
            }
        }
        struct Unregistered;
        impl Module for Unregistered {
            fn spec(&self) -> ModuleSpec {
                const PROMISED: &[RouteSpec] = &[RouteSpec::get("/promised", Guard::Admin)];
                ModuleSpec::new("unregistered").routes(PROMISED)
            }
            fn register(&self, _ctx: &mut Context<'_>) {}
        }
        struct Clash;
        impl Module for Clash {
            fn spec(&self) -> ModuleSpec {
                const MINE: &[RouteSpec] = &[RouteSpec::post("/notes", Guard::Public)];
                ModuleSpec::new("clash").routes(MINE)
            }
            fn register(&self, ctx: &mut Context<'_>) {
                ctx.route(RouteSpec::post("/notes", Guard::Public), || async { "mine" });
            }
        }
        let cases: [(App, &str); 3] = [
            (App::new("uctest", "0.0.0").module(Undeclared), "route GET /sneaky (public) is registered but its spec does not declare it"),
            (App::new("uctest", "0.0.0").module(Unregistered), "route GET /promised is declared in the spec but register() attaches no handler to it"),
            (app().module(Clash), "POST /notes"),
        ];
        for (bad, expected) in cases {
            let Some(db) = hearth::testing::TestDb::create(backend).await else { return };
            let err = match TestApp::try_start(&bad, TestApp::config(&db)).await {
                Ok(_) => panic!("an app with a bad route started"),
                Err(e) => e.to_string(),
            };
            assert!(err.contains(expected), "{err}");
        }
    }
}

#[test]
fn the_docs_of_the_test_app_list_everything() {
    let docs = app().docs().unwrap();
    let (summary, gaps) = hearth::usecase::docs::summary(&docs);
    assert!(gaps.is_empty(), "{summary}");
    assert!(summary.contains("module counts subscribes notes.added"));
    assert!(summary.contains("route notes POST /notes signed-in"));
    assert!(summary.contains(
        "usecase counts \"a second note earns a badge, through a job\" GET /counts/{nancy} in=notes.added,notes.added out=-"
    ));
    assert!(summary.ends_with("uncovered (0)\n"));
}

/// The in-memory mode: the same API (HTTP, events, jobs) on SQLite in
/// memory, one database per app, and not a file written.
#[tokio::test]
async fn in_memory_apps_are_separate_and_write_no_file() {
    let quiet = |c: &mut hearth::Config| c.jobs.in_serve = false;
    let a = TestApp::start_on(&app(), hearth::testing::TestDb::in_memory(), quiet).await;
    let b = TestApp::start_on(&app(), hearth::testing::TestDb::in_memory(), quiet).await;
    let db = a.state().db().clone();
    let mut tx = db.begin().await.unwrap();
    a.state()
        .events()
        .publish(
            &mut tx,
            &Added {
                author: 7,
                text: "one".into(),
            },
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(a.state().events().drain().await.unwrap(), 1);
    let n: i64 = with_db!(&db, p => sqlx::query_scalar("SELECT n FROM counts_count WHERE author = 7").fetch_one(p).await).unwrap();
    assert_eq!(n, 1);
    let other = b.state().db().clone();
    let none: Option<i64> = with_db!(&other, p => sqlx::query_scalar("SELECT n FROM counts_count WHERE author = 7").fetch_optional(p).await).unwrap();
    assert_eq!(none, None, "each app has its own memory database");
    let files: Vec<_> = walk(a.db().dir())
        .into_iter()
        .filter(|p| {
            let name = p.to_string_lossy();
            name.ends_with(".db") || name.contains("hearth-memory")
        })
        .collect();
    assert!(files.is_empty(), "{files:?}");
    assert!(
        !std::path::Path::new(
            a.db()
                .url()
                .trim_start_matches("sqlite:")
                .split('?')
                .next()
                .unwrap()
        )
        .exists()
    );
    a.stop().await;
    b.stop().await;
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
