//! `self-test`: the release binary checks itself, end to end, without
//! touching live data.
//!
//! The app is started on loopback over a scratch database (a file in a
//! temporary directory on SQLite; a new database on PostgreSQL, dropped
//! afterwards), with mail going to an outbox and notifications, statsd and
//! TLS off. hearth's own checks then drive it over real HTTP (health,
//! errors, limits, security headers, a whole account life cycle with its
//! CSRF check and its mail, a job through the queue, a pub/sub round trip,
//! metrics) and every check the app's modules registered with
//! [`Context::self_check`](crate::Context::self_check) runs after them.
//! `restore --verify` runs the same checks on the restored copy.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};

use super::{OpsError, pgtools};
use crate::app::{App, Running};
use crate::config::{Config, Secret};
use crate::db::{Db, migrate};
use crate::state::AppState;

/// Time limit of one check.
const CHECK_TIMEOUT: Duration = Duration::from_secs(60);

/// What a check gets: the app serving on loopback over the scratch database,
/// and a small HTTP client for it.
#[derive(Clone)]
pub struct SelfTest {
    state: AppState,
    base: String,
    http: reqwest::Client,
}

/// An HTTP answer, read whole.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Response headers.
    pub headers: axum::http::HeaderMap,
    /// The body as text.
    pub body: String,
}

impl Reply {
    /// The body parsed as JSON.
    pub fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_str(&self.body)
            .map_err(|e| anyhow::anyhow!("the body is not JSON ({e}): {}", clip(&self.body)))
    }

    /// A header's value as text, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Fails unless the status is `want`.
    pub fn ensure(&self, want: u16) -> anyhow::Result<&Self> {
        if self.status != want {
            anyhow::bail!("expected {want}, got {}: {}", self.status, clip(&self.body));
        }
        Ok(self)
    }
}

fn clip(s: &str) -> &str {
    let mut end = s.len().min(300);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl SelfTest {
    /// The running app's state (its database is the scratch one).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The full URL of `path` on the app.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> anyhow::Result<Reply> {
        self.send(self.http.get(self.url(path))).await
    }

    /// `POST path` with a JSON body.
    pub async fn post_json(&self, path: &str, body: &Value) -> anyhow::Result<Reply> {
        self.send(self.http.post(self.url(path)).json(body)).await
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<Reply> {
        let res = req.send().await?;
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let body = res.text().await?;
        Ok(Reply {
            status,
            headers,
            body,
        })
    }
}

/// One check's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    /// `hearth: <check>` or `<module>: <check>`.
    pub name: String,
    /// Whether it passed.
    pub ok: bool,
    /// What it saw, or why it failed.
    pub detail: String,
    /// How long it took, in milliseconds.
    pub ms: u64,
}

/// Every check's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `sqlite` or `postgres`.
    pub database: &'static str,
    /// In the order they ran.
    pub checks: Vec<CheckResult>,
}

impl Report {
    /// The checks that failed.
    pub fn failures(&self) -> Vec<&CheckResult> {
        self.checks.iter().filter(|c| !c.ok).collect()
    }
}

/// Runs every check on a fresh scratch database of the configured engine.
/// On PostgreSQL the scratch database is created through `admin_url` when
/// given (the app's own role, made by `setup`, may not create databases),
/// else through the app's connection.
pub async fn run(app: &App, config: &Config, admin_url: Option<&str>) -> Result<Report, OpsError> {
    let url = config.database_url(app.name());
    let work = tempfile::Builder::new()
        .prefix("hearth-self-test-")
        .tempdir()
        .map_err(|e| OpsError::Failed(format!("cannot make a temporary directory: {e}")))?;
    if !url.starts_with("postgres") {
        let file = work.path().join("self-test.db");
        let scratch = format!("sqlite://{}", file.display());
        return run_on(app, config, &scratch, &work.path().join("data")).await;
    }
    let through = admin_url.map_or_else(|| url.clone(), str::to_owned);
    let admin = Db::connect(
        &through,
        &crate::config::DbConfig {
            max_connections: 1,
            ..config.db.clone()
        },
    )
    .await
    .map_err(|e| {
        OpsError::Failed(format!(
            "cannot connect to create the scratch database: {e}"
        ))
    })?;
    let Db::Postgres(pool) = &admin else {
        admin.close().await;
        return Err(OpsError::Failed(
            "--admin-url must be a postgres:// URL".into(),
        ));
    };
    let name = match pgtools::create_scratch(pool, "hearth_selftest", "self-test").await {
        Ok(name) => name,
        Err(e) => {
            admin.close().await;
            return Err(e);
        }
    };
    // The app connects as itself when the admin URL only made the database.
    let scratch = pgtools::with_database(&url, &name);
    if admin_url.is_some() {
        let owner = current_user(&url).await;
        if let Some(owner) = owner {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "ALTER DATABASE {} OWNER TO {}",
                super::backup::quote_ident(&name),
                super::backup::quote_ident(&owner)
            )))
            .execute(pool)
            .await;
        }
    }
    let report = run_on(app, config, &scratch, &work.path().join("data")).await;
    pgtools::drop_scratch(pool, &name).await;
    admin.close().await;
    report
}

/// The role the app's own URL signs in as.
async fn current_user(url: &str) -> Option<String> {
    let db = Db::connect(
        url,
        &crate::config::DbConfig {
            max_connections: 1,
            ..crate::config::DbConfig::default()
        },
    )
    .await
    .ok()?;
    let who = match &db {
        Db::Postgres(p) => sqlx::query_scalar::<_, String>("SELECT current_user")
            .fetch_one(p)
            .await
            .ok(),
        Db::Sqlite(..) => None,
    };
    db.close().await;
    who
}

/// Starts the app on loopback over the database at `url` (created or
/// migrated as needed; it may hold data, as a restored copy does) with its
/// files in `data_dir`, runs every check, and stops it.
pub async fn run_on(
    app: &App,
    config: &Config,
    url: &str,
    data_dir: &Path,
) -> Result<Report, OpsError> {
    let mut c = config.clone();
    c.addr = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    c.database_url = Some(Secret::new(url));
    c.data_dir = data_dir.to_path_buf();
    c.public_url = None;
    c.tls = crate::config::TlsConfig::default();
    c.mail.transport = crate::mail::Transport::Outbox;
    c.jobs.in_serve = true;
    c.db.migrate_on_serve = true;
    c.backup.schedule = None;
    c.notify = crate::telemetry::NotifyConfig::default();
    c.metrics.statsd = None;
    let token = super::setup::random_hex()?;
    c.metrics.token = Some(Secret::new(token.clone()));
    std::fs::create_dir_all(data_dir)
        .map_err(|e| OpsError::Failed(format!("cannot create {}: {e}", data_dir.display())))?;
    let running = app.start(c).await.map_err(|e| {
        OpsError::Failed(format!(
            "the app does not start on the scratch database: {e}"
        ))
    })?;
    let report = checks(&running, &token).await;
    running.shutdown().await;
    report
}

async fn checks(running: &Running, token: &str) -> Result<Report, OpsError> {
    let Some(addr) = running.local_addr() else {
        return Err(OpsError::Failed("the app serves no HTTP".into()));
    };
    // reqwest is built without a crypto provider; hearth uses ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| OpsError::Failed(format!("cannot build the HTTP client: {e}")))?;
    let t = SelfTest {
        state: running.state().clone(),
        base: format!("http://{addr}"),
        http,
    };
    let mut out = Vec::new();
    out.push(timed("hearth: migrations", migrations(&t)).await);
    out.push(timed("hearth: health", health(&t)).await);
    out.push(timed("hearth: errors", errors(&t)).await);
    out.push(timed("hearth: limits", limits(&t)).await);
    out.push(timed("hearth: security headers", headers(&t)).await);
    out.push(timed("hearth: accounts", accounts(&t)).await);
    out.push(timed("hearth: jobs", jobs(&t)).await);
    out.push(timed("hearth: pub/sub", pubsub(&t)).await);
    if t.state.metrics().enabled() {
        out.push(timed("hearth: metrics", metrics(&t, token)).await);
    }
    for (module, name, check) in running.self_checks() {
        let label = format!("{module}: {name}");
        let fut = check(t.clone());
        out.push(timed(&label, async move { fut.await.map(|()| String::new()) }).await);
    }
    Ok(Report {
        database: t.state.db().kind().as_str(),
        checks: out,
    })
}

async fn timed(
    name: &str,
    check: impl std::future::Future<Output = anyhow::Result<String>>,
) -> CheckResult {
    let started = Instant::now();
    let result = match tokio::time::timeout(CHECK_TIMEOUT, check).await {
        Ok(r) => r,
        Err(_) => Err(anyhow::anyhow!(
            "did not finish within {} s",
            CHECK_TIMEOUT.as_secs()
        )),
    };
    let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    match result {
        Ok(detail) => CheckResult {
            name: name.to_owned(),
            ok: true,
            detail,
            ms,
        },
        Err(e) => CheckResult {
            name: name.to_owned(),
            ok: false,
            detail: format!("{e:#}"),
            ms,
        },
    }
}

async fn migrations(t: &SelfTest) -> anyhow::Result<String> {
    let status = migrate::status(t.state.db(), t.state.specs()).await?;
    if let Some(problem) = status.problem() {
        anyhow::bail!(problem);
    }
    Ok(format!("{} module(s) current", t.state.specs().len()))
}

async fn health(t: &SelfTest) -> anyhow::Result<String> {
    t.get("/healthz").await?.ensure(200)?;
    let ready = t.get("/readyz").await?;
    ready.ensure(200)?;
    let v = ready.json()?;
    if v["status"] != "ready" {
        anyhow::bail!("/readyz says {v}");
    }
    Ok(format!(
        "/healthz and /readyz answer, database {}",
        v["database"]
    ))
}

async fn errors(t: &SelfTest) -> anyhow::Result<String> {
    let r = t.get("/hearth-self-test/no-such-page").await?;
    r.ensure(404)?;
    let v = r.json()?;
    if v["error"]["code"] != "not_found" {
        anyhow::bail!("a 404 body has no `not_found` code: {v}");
    }
    let id = r.header("x-request-id").unwrap_or("");
    if id.is_empty() || v["request_id"] != id {
        anyhow::bail!(
            "the error body and X-Request-Id disagree ({id:?} vs {})",
            v["request_id"]
        );
    }
    let html = t
        .send(
            t.http
                .get(t.url("/hearth-self-test/no-such-page"))
                .header("accept", "text/html"),
        )
        .await?;
    html.ensure(404)?;
    if !html
        .header("content-type")
        .unwrap_or("")
        .starts_with("text/html")
    {
        anyhow::bail!("a browser's 404 is not an HTML page");
    }
    Ok("404 as JSON with the request id, and as a page".into())
}

async fn limits(t: &SelfTest) -> anyhow::Result<String> {
    // Unsafe requests need a pre-session and its CSRF token before their
    // body is even read: take one, as a browser would.
    let mut jar = Jar::default();
    jar.send(t, t.http.get(t.url("/api/auth/csrf")), false)
        .await?
        .ensure(200)?;
    let login = t.url("/api/auth/login");
    let post = |ct: &'static str, body: &'static [u8]| {
        t.http.post(&login).header("content-type", ct).body(body)
    };
    jar.send(t, post("application/json", b"{\"email\":"), true)
        .await?
        .ensure(400)?;
    jar.send(t, post("text/plain", b"hello"), true)
        .await?
        .ensure(415)?;
    // A body over the limit is refused from its declared length, before it
    // is read: say the length and send nothing (a client still writing the
    // body when the 413 comes may see its connection closed instead).
    let limit = t.state.config().http.body_limit;
    let status = declared_only(t, &jar, "/api/auth/login", limit + 1).await?;
    if status != 413 {
        anyhow::bail!(
            "a body declared at {} bytes got {status}, not 413",
            limit + 1
        );
    }
    Ok(format!(
        "400 malformed JSON, 415 wrong type, 413 over {limit} bytes"
    ))
}

/// Sends only the head of a POST declaring `length` body bytes and returns
/// the status the server answers with.
async fn declared_only(t: &SelfTest, jar: &Jar, path: &str, length: u64) -> anyhow::Result<u16> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let host = t.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(host).await?;
    let cookie = jar.cookie_header();
    let csrf = jar.csrf.clone().unwrap_or_default();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\ncontent-length: {length}\r\ncookie: {cookie}\r\nx-csrf-token: {csrf}\r\norigin: {}\r\nconnection: close\r\n\r\n",
        t.base
    );
    stream.write_all(head.as_bytes()).await?;
    let mut buf = vec![0_u8; 1024];
    let mut got = 0;
    while got < 12 {
        let n = stream.read(&mut buf[got..]).await?;
        if n == 0 {
            break;
        }
        got += n;
    }
    let line = String::from_utf8_lossy(&buf[..got]);
    line.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no HTTP status in {line:?}"))
}

async fn headers(t: &SelfTest) -> anyhow::Result<String> {
    if !t.state.config().http.security_headers {
        return Ok("off by configuration (http.security_headers)".into());
    }
    let r = t.get("/healthz").await?;
    for h in [
        "content-security-policy",
        "x-content-type-options",
        "x-frame-options",
        "referrer-policy",
    ] {
        if r.header(h).is_none() {
            anyhow::bail!("`{h}` is missing");
        }
    }
    Ok("CSP, nosniff, frame and referrer policies present".into())
}

/// A cookie jar of one site, enough for the account flow.
#[derive(Default)]
struct Jar {
    cookies: Vec<(String, String)>,
    csrf: Option<String>,
}

impl Jar {
    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn send(
        &mut self,
        t: &SelfTest,
        req: reqwest::RequestBuilder,
        with_csrf: bool,
    ) -> anyhow::Result<Reply> {
        let mut req = req
            .header("cookie", self.cookie_header())
            .header("origin", &t.base);
        if with_csrf && let Some(token) = &self.csrf {
            req = req.header("x-csrf-token", token);
        }
        let r = t.send(req).await?;
        for v in r.headers.get_all("set-cookie") {
            let v = v.to_str().unwrap_or("");
            let (pair, attrs) = v.split_once(';').unwrap_or((v, ""));
            let Some((name, value)) = pair.split_once('=') else {
                continue;
            };
            self.cookies.retain(|(k, _)| k != name);
            if !attrs.contains("Max-Age=0") {
                self.cookies.push((name.to_owned(), value.to_owned()));
            }
        }
        if let Ok(v) = r.json()
            && let Some(token) = v.get("csrf_token").and_then(Value::as_str)
        {
            self.csrf = Some(token.to_owned());
        }
        Ok(r)
    }
}

async fn accounts(t: &SelfTest) -> anyhow::Result<String> {
    let email = format!(
        "self-test-{}@example.com",
        &super::setup::random_hex()?[..12]
    );
    let password = super::setup::random_hex()?;
    let mut jar = Jar::default();
    jar.send(t, t.http.get(t.url("/api/auth/csrf")), false)
        .await?
        .ensure(200)?;
    let creds = json!({ "email": email, "password": password });
    jar.send(t, t.http.post(t.url("/api/auth/signup")).json(&creds), true)
        .await?
        .ensure(202)?;
    jar.send(t, t.http.post(t.url("/api/auth/login")).json(&creds), true)
        .await?
        .ensure(200)?;
    let me = jar
        .send(t, t.http.get(t.url("/api/auth/me")), false)
        .await?;
    me.ensure(200)?;
    if me.json()?["user"]["email"] != email.as_str() {
        anyhow::bail!(
            "/api/auth/me does not name the new account: {}",
            clip(&me.body)
        );
    }
    // Without its CSRF token a signed-in session cannot act.
    let logout = || t.http.post(t.url("/api/auth/logout")).json(&json!({}));
    jar.send(t, logout(), false).await?.ensure(403)?;
    let out = jar.send(t, logout(), true).await?;
    if !(200..300).contains(&out.status) {
        anyhow::bail!("logout answered {}: {}", out.status, clip(&out.body));
    }
    jar.send(t, t.http.get(t.url("/api/auth/me")), false)
        .await?
        .ensure(401)?;
    // The sign-up mail goes through the queue to the outbox.
    let outbox = t.state.config().data_dir.join("outbox");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if mail_for(&outbox, &email) {
            break;
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "no sign-up mail for {email} reached {} within 30 s",
                outbox.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok("sign up, mail, sign in, CSRF refused, sign out".into())
}

fn mail_for(outbox: &Path, email: &str) -> bool {
    let Ok(dir) = std::fs::read_dir(outbox) else {
        return false;
    };
    dir.flatten()
        .any(|e| std::fs::read_to_string(e.path()).is_ok_and(|text| text.contains(email)))
}

async fn jobs(t: &SelfTest) -> anyhow::Result<String> {
    let jobs = t.state.jobs();
    let id = jobs
        .enqueue_now(crate::jobs::PING.job(&crate::jobs::Ping::default()))
        .await?
        .id;
    let started = Instant::now();
    loop {
        let done = jobs
            .list(crate::jobs::JobState::Done, Some("hearth"), 1000)
            .await?;
        if done.iter().any(|j| j.id == id) {
            return Ok(format!(
                "hearth.ping ran in {} ms",
                started.elapsed().as_millis()
            ));
        }
        let dead = jobs
            .list(crate::jobs::JobState::Dead, Some("hearth"), 1000)
            .await?;
        if let Some(j) = dead.iter().find(|j| j.id == id) {
            anyhow::bail!(
                "hearth.ping died: {}",
                j.last_error.clone().unwrap_or_default()
            );
        }
        if started.elapsed() > Duration::from_secs(30) {
            anyhow::bail!("hearth.ping did not run within 30 s: are the workers stuck?");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn pubsub(t: &SelfTest) -> anyhow::Result<String> {
    let channel = "hearth.self-test";
    let mut sub = t.state.pubsub().subscribe(channel, None);
    let nonce = super::setup::random_hex()?;
    let id = t
        .state
        .pubsub()
        .publish_now(channel, &json!({ "nonce": nonce }))
        .await?;
    let got = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .map_err(|_| anyhow::anyhow!("the message did not arrive within 10 s"))?
        .ok_or_else(|| anyhow::anyhow!("the subscription ended"))?;
    if got.id != id || !got.payload.contains(&nonce) {
        anyhow::bail!("got message {} ({}) instead of {id}", got.id, got.payload);
    }
    Ok(format!("message {id} published and received"))
}

async fn metrics(t: &SelfTest, token: &str) -> anyhow::Result<String> {
    t.get("/metrics").await?.ensure(401)?;
    let r = t
        .send(t.http.get(t.url("/metrics")).bearer_auth(token))
        .await?;
    r.ensure(200)?;
    for series in ["hearth_http_requests_total", "hearth_db_pool_connections"] {
        if !r.body.contains(series) {
            anyhow::bail!("`{series}` is missing");
        }
    }
    Ok("closed without the token, series present with it".into())
}
