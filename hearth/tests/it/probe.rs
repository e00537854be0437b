//! A small app built only for the framework's tests: routes that panic, sleep,
//! stream slowly, echo JSON and write to the database, in every route group.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hearth::auth::CurrentUser;
use hearth::db::migrate::Migration;
use hearth::http::Json;
use hearth::module::Guard::{Admin, Group, Public, SignedIn, Verified};
use hearth::module::RouteSpec as R;
use hearth::prelude::*;
use hearth::{sqlx, with_db};
use serde::{Deserialize, Serialize};

pub const SQLITE: &[Migration] = &[Migration::new(
    1,
    "create_probe_item",
    include_str!("../migrations/sqlite_0001.sql"),
)];
pub const POSTGRES: &[Migration] = &[Migration::new(
    1,
    "create_probe_item",
    include_str!("../migrations/postgres_0001.sql"),
)];

/// The probe module; `arrived` counts requests that reached `/probe/slow`;
/// with `tick`, the schedule `probe.tick` runs `hearth.ping` every second.
#[derive(Default)]
pub struct Probe {
    pub arrived: Arc<AtomicUsize>,
    pub tick: bool,
    /// Registers a self-test check that always fails.
    pub broken_check: bool,
}

/// A job that always fails for good: it goes straight to the dead queue.
pub const FAIL: hearth::jobs::JobName<()> = hearth::jobs::JobName::new("probe.fail");

/// A job that panics, once (one attempt).
pub const PANIC: hearth::jobs::JobName<()> =
    hearth::jobs::JobName::new("probe.panic").max_attempts(1);

/// Stores an item named by its payload, once, and reports failure after
/// its first attempt committed: as if the worker died before recording
/// that the job finished.
pub const EFFECT: hearth::jobs::JobName<String> = hearth::jobs::JobName::new("probe.effect");

/// Every route the probe serves, in every route group.
pub const ROUTES: &[R] = &[
    R::get("/probe/panic", Public),
    R::get("/probe/slow", Public),
    R::post("/probe/echo", Public),
    R::get("/probe/items", Public),
    R::post("/probe/items", Public),
    R::get("/probe/big", Public),
    R::get("/probe/drip", Public),
    R::get("/probe/own-csp", Public),
    R::get("/probe/own-csp-json", Public),
    R::get("/probe/request-id", Public),
    R::get("/probe/peer", Public),
    R::post("/probe/public-act", Public),
    R::get("/probe/me", SignedIn),
    R::post("/probe/note", SignedIn),
    R::get("/probe/verified", Verified),
    R::get("/probe/editors", Group("editors")),
    R::get("/probe/admin", Admin),
];

impl Module for Probe {
    fn spec(&self) -> ModuleSpec {
        ModuleSpec::new("probe")
            .migrations(SQLITE, POSTGRES)
            .routes(ROUTES)
    }

    fn register(&self, ctx: &mut Context<'_>) {
        ctx.route(R::get("/probe/panic", Public), panic_now);
        ctx.route(R::get("/probe/slow", Public), {
            let arrived = self.arrived.clone();
            move |q: Query<SlowQuery>| {
                arrived.fetch_add(1, Ordering::SeqCst);
                slow(q)
            }
        });
        ctx.route(R::post("/probe/echo", Public), echo);
        ctx.route(R::get("/probe/items", Public), list_items);
        ctx.route(R::post("/probe/items", Public), add_item);
        ctx.route(R::get("/probe/big", Public), big);
        ctx.route(R::get("/probe/drip", Public), drip);
        ctx.route(R::get("/probe/own-csp", Public), || async {
            (
                [(
                    "content-security-policy",
                    "default-src 'self' https://maps.example",
                )],
                "map",
            )
        });
        ctx.route(R::get("/probe/own-csp-json", Public), || async {
            (
                [(
                    "content-security-policy",
                    "default-src 'self' https://maps.example",
                )],
                Json(serde_json::json!({ "map": true })),
            )
        });
        ctx.route(
            R::get("/probe/request-id", Public),
            |id: hearth::http::RequestId| async move { id.as_str().to_owned() },
        );
        ctx.route(
            R::get("/probe/peer", Public),
            |peer: hearth::http::PeerAddr| async move {
                peer.0.map_or_else(|| "none".to_owned(), |a| a.to_string())
            },
        );
        // A public route that looks at the session and then, wrongly,
        // asks for the signed-in user: no CSRF check stands behind it.
        ctx.route(
            R::post("/probe/public-act", Public),
            |_seen: hearth::auth::MaybeSession, me: CurrentUser| async move {
                format!("acted for {}", me.user.email)
            },
        );
        ctx.route(
            R::get("/probe/me", SignedIn),
            |me: CurrentUser| async move { me.user.email },
        );
        ctx.route(
            R::post("/probe/note", SignedIn),
            |me: CurrentUser, body: String| async move { format!("{}: {body}", me.user.email) },
        );
        ctx.route(R::get("/probe/verified", Verified), || async { "verified" });
        ctx.route(R::get("/probe/editors", Group("editors")), || async {
            "editors"
        });
        ctx.route(R::get("/probe/admin", Admin), || async { "admin" });
        ctx.asset("probe.txt", b"probe asset\n");
        ctx.job(PANIC, |_run: JobRun<()>| async move {
            if std::hint::black_box(true) {
                panic!("probe.panic panics");
            }
            Ok(())
        });
        ctx.job(EFFECT, |run: JobRun<String, AppState>| async move {
            let mut tx = run.state.db().begin().await?;
            if run.once(&mut tx).await? {
                hearth::with_tx!(&mut tx, t => sqlx::query(
                    "INSERT INTO probe_item (name, weight, created_at) VALUES ($1, 1, 0)",
                )
                .bind(&run.payload)
                .execute(&mut **t)
                .await
                .map(|_| ()))?;
            }
            tx.commit().await?;
            if run.attempt == 1 {
                hearth::anyhow::bail!("the completion of attempt 1 was lost");
            }
            Ok(())
        });
        ctx.job(FAIL, |_run: JobRun<()>| async move {
            Err(Permanent("probe.fail always fails".into()).into())
        });
        ctx.self_check("items round trip", |t| async move {
            let item = serde_json::json!({"name": "self-test", "weight": 3});
            t.post_json("/probe/items", &item).await?.ensure(200)?;
            let all = t.get("/probe/items").await?.ensure(200)?.json()?;
            if !all.to_string().contains("self-test") {
                anyhow::bail!("the item is not listed: {all}");
            }
            Ok(())
        });
        if self.broken_check {
            ctx.self_check("always fails", |_t| async move {
                anyhow::bail!("this check is broken on purpose")
            });
        }
        if self.tick {
            ctx.cron(hearth::jobs::cron::Schedule::new(
                "probe.tick",
                "* * * * * *",
                hearth::jobs::PING,
                &hearth::jobs::Ping::default(),
            ));
        }
        ctx.on_reset(|db| async move {
            with_db!(&db, pool => sqlx::query("DELETE FROM probe_item").execute(pool).await.map(|_| ()))?;
            Ok(())
        });
    }
}

pub fn app() -> App {
    App::new("probe", "0.0.1").module(Probe::default())
}

/// The probe app, sharing its arrival counter with the test.
pub fn app_with(arrived: Arc<AtomicUsize>) -> App {
    App::new("probe", "0.0.1").module(Probe {
        arrived,
        ..Probe::default()
    })
}

async fn panic_now() -> &'static str {
    panic!("secret internal detail 42")
}

#[derive(Deserialize)]
pub(crate) struct SlowQuery {
    ms: u64,
}

async fn slow(Query(q): Query<SlowQuery>) -> &'static str {
    tokio::time::sleep(Duration::from_millis(q.ms)).await;
    "done"
}

#[derive(Debug, Deserialize, Serialize)]
pub struct EchoIn {
    pub name: String,
    pub count: u32,
    #[serde(default)]
    pub tags: Vec<String>,
}

async fn echo(Json(body): Json<EchoIn>) -> Json<EchoIn> {
    Json(body)
}

#[derive(Debug, Deserialize, Serialize)]
pub struct Item {
    pub name: String,
    pub weight: i64,
}

async fn add_item(State(db): State<Db>, Json(item): Json<Item>) -> Result<Json<Item>> {
    if item.name.is_empty() {
        return Err(Error::validation("name", "the name must not be empty"));
    }
    let res = with_db!(&db, pool => sqlx::query(
        "INSERT INTO probe_item (name, weight, created_at) VALUES ($1, $2, $3)",
    )
    .bind(&item.name)
    .bind(item.weight)
    .bind(0_i64)
    .execute(pool)
    .await
    .map(|_| ()));
    match res {
        Ok(()) => Ok(Json(item)),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            Err(Error::conflict("an item with this name exists").with_field("name"))
        }
        Err(e) => Err(e.into()),
    }
}

async fn list_items(State(db): State<Db>) -> Result<Json<Vec<Item>>> {
    let rows: Vec<(String, i64)> = with_db!(&db, pool => sqlx::query_as(
        "SELECT name, weight FROM probe_item ORDER BY name",
    )
    .fetch_all(pool)
    .await)?;
    Ok(Json(
        rows.into_iter()
            .map(|(name, weight)| Item { name, weight })
            .collect(),
    ))
}

#[derive(Deserialize)]
pub(crate) struct DripQuery {
    ms: u64,
    n: u32,
}

/// A text body streamed as `n` lines `tick`, one every `ms` milliseconds.
async fn drip(Query(q): Query<DripQuery>) -> hearth::axum::body::Body {
    let every = Duration::from_millis(q.ms);
    let ticks = futures_util::stream::unfold(0, move |i| async move {
        if i == q.n {
            return None;
        }
        tokio::time::sleep(every).await;
        Some((Ok::<_, std::convert::Infallible>("tick\n"), i + 1))
    });
    hearth::axum::body::Body::from_stream(ticks)
}

/// A JSON body large enough to be compressed.
async fn big() -> Json<Vec<String>> {
    Json((0..500).map(|i| format!("item number {i}")).collect())
}

/// A reqwest client for plain HTTP that never follows redirects.
pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}
