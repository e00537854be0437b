//! The hand-written baseline for the session-authenticated read: axum and
//! sqlx with no framework, doing the same cookie → session lookup as
//! hearth's gatekeeper on the same database: find the session cookie,
//! check its signature, hash the token, read the session joined with its
//! account in one query, check expiry and answer the account as JSON.
//!
//!   session_baseline ADDR DATABASE_URL SECRET_KEY
//!
//! It reads the tables a pancake instance created (`hearth_token`,
//! `hearth_user`) with the same secret, so one cookie works on both.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cookie::{Cookie, CookieJar, Key};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::{PgPool, SqlitePool};

#[derive(Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

struct App {
    pool: Pool,
    key: Key,
}

#[derive(Serialize)]
struct WhoAmI {
    id: i64,
    email: String,
    verified: bool,
    admin: bool,
}

type Row = (
    i64,
    String,
    i64,
    Option<String>,
    i64,
    String,
    Option<i64>,
    i64,
    Option<i64>,
);

const SQL: &str = "SELECT t.id, t.hash, t.expires_at, t.data, u.id, u.email, u.verified_at, u.admin, u.disabled_at
     FROM hearth_token t JOIN hearth_user u ON u.id = CAST(t.owner AS BIGINT)
     WHERE t.hash = $1 AND t.kind = 'session'";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn whoami(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let unauthorized = || StatusCode::UNAUTHORIZED.into_response();
    let Some(raw) = headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split(';')
                .filter_map(|p| p.trim().split_once('='))
                .find(|(n, _)| *n == "hearth_session")
                .map(|(_, v)| v.to_owned())
        })
    else {
        return unauthorized();
    };
    let Some(verified) = CookieJar::new()
        .signed(&app.key)
        .verify(Cookie::new("hearth_session", raw))
    else {
        return unauthorized();
    };
    let Ok(bytes) = URL_SAFE_NO_PAD.decode(verified.value()) else {
        return unauthorized();
    };
    let hash = hex(&Sha256::digest(&bytes));
    let row: Result<Option<Row>, sqlx::Error> = match &app.pool {
        Pool::Sqlite(p) => sqlx::query_as(SQL).bind(&hash).fetch_optional(p).await,
        Pool::Postgres(p) => sqlx::query_as(SQL).bind(&hash).fetch_optional(p).await,
    };
    let Ok(Some((_, stored, expires_at, data, id, email, verified_at, admin, disabled_at))) = row
    else {
        return unauthorized();
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let absolute: i64 = data.and_then(|d| d.parse().ok()).unwrap_or(0);
    if stored != hash || expires_at <= now || absolute <= now || disabled_at.is_some() {
        return unauthorized();
    }
    Json(WhoAmI {
        id,
        email,
        verified: verified_at.is_some(),
        admin: admin != 0,
    })
    .into_response()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(addr), Some(url), Some(secret)) = (args.next(), args.next(), args.next()) else {
        anyhow::bail!("usage: session_baseline ADDR DATABASE_URL SECRET_KEY");
    };
    // The same pool size as hearth's default.
    let pool = if url.starts_with("postgres") {
        Pool::Postgres(
            sqlx::postgres::PgPoolOptions::new()
                .max_connections(10)
                .connect(&url)
                .await?,
        )
    } else {
        let opts = sqlx::sqlite::SqliteConnectOptions::from_str(&url)?
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal);
        Pool::Sqlite(
            sqlx::sqlite::SqlitePoolOptions::new()
                .max_connections(10)
                .connect_with(opts)
                .await?,
        )
    };
    let app = Arc::new(App {
        pool,
        key: Key::derive_from(secret.as_bytes()),
    });
    let router = Router::new()
        .route("/api/whoami", get(whoami))
        .with_state(app);
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("session baseline listening on {addr}");
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
