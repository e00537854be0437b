//! Accounts over real HTTP on both engines: signup, login, sessions, CSRF,
//! guards, password change, account deletion, and the attacks each of them
//! must turn away.

use std::collections::BTreeMap;

use hearth::Config;
use hearth::testing::{Backend, TestApp};
use hearth::{sqlx, with_db};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::probe::app;

/// A client that keeps cookies like a browser and sends the CSRF token it
/// was last given, so tests read like what a person does.
pub struct Browser {
    pub http: reqwest::Client,
    pub base: String,
    pub cookies: BTreeMap<String, String>,
    pub csrf: Option<String>,
    pub origin: Option<String>,
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
    pub fn field(&self) -> &str {
        self.body["error"]["field"].as_str().unwrap_or("")
    }
    pub fn clears_cookie(&self) -> bool {
        self.headers.get_all("set-cookie").iter().any(|v| {
            let v = v.to_str().unwrap();
            (v.starts_with("hearth_session=;") || v.starts_with("__Host-hearth_session=;"))
                && v.contains("Max-Age=0")
        })
    }
}

impl Browser {
    pub fn new(app: &TestApp) -> Self {
        Self {
            http: crate::probe::client(),
            base: app.base_url().to_owned(),
            cookies: BTreeMap::new(),
            csrf: None,
            origin: Some(app.base_url().to_owned()),
        }
    }

    /// The session cookie, under its plain name or (over HTTPS) its
    /// `__Host-` name.
    pub fn cookie(&self) -> Option<&String> {
        self.cookies
            .get("hearth_session")
            .or_else(|| self.cookies.get("__Host-hearth_session"))
    }

    pub fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub async fn send(&mut self, req: reqwest::RequestBuilder) -> Answer {
        let mut req = req.header("cookie", self.cookie_header());
        if let Some(o) = &self.origin {
            req = req.header("origin", o);
        }
        let res = req.send().await.unwrap();
        for v in res.headers().get_all("set-cookie") {
            let v = v.to_str().unwrap();
            let (pair, attrs) = v.split_once(';').unwrap_or((v, ""));
            let (name, value) = pair.split_once('=').unwrap();
            if attrs.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        let status = res.status();
        let headers = res.headers().clone();
        let text = res.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if let Some(t) = body.get("csrf_token").and_then(Value::as_str) {
            self.csrf = Some(t.to_owned());
        }
        Answer {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&mut self, path: &str) -> Answer {
        let req = self.http.get(format!("{}{path}", self.base));
        self.send(req).await
    }

    pub async fn post(&mut self, path: &str, body: Value) -> Answer {
        let mut req = self.http.post(format!("{}{path}", self.base)).json(&body);
        if let Some(t) = &self.csrf {
            req = req.header("x-csrf-token", t);
        }
        self.send(req).await
    }

    pub async fn start(&mut self) {
        let a = self.get("/api/auth/csrf").await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert_eq!(a.body["signed_in"], false);
    }

    pub async fn sign_up(&mut self, email: &str, password: &str) {
        let a = self
            .post(
                "/api/auth/signup",
                json!({"email": email, "password": password}),
            )
            .await;
        assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.body);
    }

    pub async fn log_in(&mut self, email: &str, password: &str) -> Answer {
        self.post(
            "/api/auth/login",
            json!({"email": email, "password": password}),
        )
        .await
    }

    /// A new browser with a new account, signed in.
    pub async fn signed_in(app: &TestApp, email: &str) -> Browser {
        let mut b = Browser::new(app);
        b.start().await;
        b.sign_up(email, PASSWORD).await;
        let a = b.log_in(email, PASSWORD).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        b
    }
}

pub const PASSWORD: &str = "a long enough passphrase";

pub async fn count(app: &TestApp, sql: &'static str) -> i64 {
    with_db!(app.state().db(), pool => sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await)
        .unwrap()
}

async fn spawn(backend: Backend, configure: impl FnOnce(&mut Config)) -> Option<TestApp> {
    TestApp::spawn_with(&app(), backend, configure).await
}

hearth::db_tests! {
    async fn sign_up_log_in_use_the_session_and_log_out(backend) {
        let Some(app) = spawn(backend, |_| {}).await else { return };
        let mut b = Browser::new(&app);
        b.start().await;
        let pre_cookie = b.cookie().cloned().unwrap();
        let pre_csrf = b.csrf.clone().unwrap();
        b.sign_up("Ana@Example.com", PASSWORD).await;
        let a = b.log_in("ana@example.com", PASSWORD).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert_eq!(a.body["signed_in"], true);
        assert_eq!(a.body["user"]["email"], "ana@example.com");
        assert_eq!(a.body["user"]["verified"], false);
        assert_eq!(a.body["user"]["admin"], false);
        // Login rotates the session and with it the CSRF token.
        assert_ne!(b.cookie(), Some(&pre_cookie));
        assert_ne!(b.csrf.as_ref(), Some(&pre_csrf));
        let set_cookie = a.headers.get("set-cookie").unwrap().to_str().unwrap().to_owned();
        for attr in ["HttpOnly", "SameSite=Lax", "Path=/"] {
            assert!(set_cookie.contains(attr), "{set_cookie}");
        }
        assert!(!set_cookie.contains("Secure"), "dev cookies work over plain HTTP: {set_cookie}");
        assert!(!set_cookie.contains("ana@"), "the cookie carries no user data: {set_cookie}");
        assert_eq!(a.headers.get("cache-control").unwrap(), "no-store");
        let me = b.get("/api/auth/me").await;
        assert_eq!(me.status, StatusCode::OK);
        assert_eq!(me.body["user"]["email"], "ana@example.com");
        assert_eq!(b.get("/probe/me").await.body, "ana@example.com");
        // The csrf route now reports the signed-in session.
        let c = b.get("/api/auth/csrf").await;
        assert_eq!(c.body["signed_in"], true);
        // A signed-in POST with the token passes.
        let note = b.post("/probe/note", json!("hi")).await;
        assert_eq!(note.status, StatusCode::OK, "{}", note.body);
        let out = b.post("/api/auth/logout", json!({})).await;
        assert_eq!(out.status, StatusCode::OK, "{}", out.body);
        assert!(out.clears_cookie());
        assert_eq!(b.get("/api/auth/me").await.status, StatusCode::UNAUTHORIZED);
        // Only the hash of each session is stored; nothing of the cookie.
        let stored: Vec<String> = with_db!(app.state().db(), pool => sqlx::query_scalar("SELECT hash FROM hearth_token").fetch_all(pool).await).unwrap();
        assert!(stored.iter().all(|h| h.len() == 64));
        app.stop().await;
    }

    async fn answers_do_not_tell_whether_an_email_has_an_account(backend) {
        let Some(app) = spawn(backend, |_| {}).await else { return };
        let _owner = Browser::signed_in(&app, "taken@example.com").await;
        let mut b = Browser::new(&app);
        b.start().await;
        let taken = b.post("/api/auth/signup", json!({"email": "taken@example.com", "password": PASSWORD})).await;
        let free = b.post("/api/auth/signup", json!({"email": "free@example.com", "password": PASSWORD})).await;
        assert_eq!((taken.status, &taken.body), (free.status, &free.body));
        let wrong_password = b.log_in("taken@example.com", "not the passphrase").await;
        let no_account = b.log_in("nobody@example.com", "not the passphrase").await;
        assert_eq!(wrong_password.status, StatusCode::UNAUTHORIZED);
        assert_eq!(wrong_password.status, no_account.status);
        assert_eq!(wrong_password.body["error"], no_account.body["error"]);
        assert_eq!(wrong_password.code(), "invalid_credentials");
        // The existing account is untouched by the second signup.
        assert_eq!(count(&app, "SELECT count(*) FROM hearth_user WHERE email = 'taken@example.com'").await, 1);
        app.stop().await;
    }

    async fn unsafe_requests_without_the_right_csrf_token_are_refused(backend) {
        let Some(app) = spawn(backend, |_| {}).await else { return };
        let mut victim = Browser::signed_in(&app, "victim@example.com").await;
        let mut attacker = Browser::new(&app);
        attacker.start().await;
        let attackers_token = attacker.csrf.clone().unwrap();
        let good = victim.csrf.clone();
        for (case, token) in [("missing", None), ("wrong", Some("x".repeat(43))), ("another session's", Some(attackers_token))] {
            victim.csrf = token;
            let a = victim.post("/probe/note", json!("hi")).await;
            assert_eq!((a.status, a.code()), (StatusCode::FORBIDDEN, "csrf_failed"), "{case}: {}", a.body);
            let a = victim.post("/api/auth/logout", json!({})).await;
            assert_eq!(a.code(), "csrf_failed", "{case}");
            let a = victim.post("/api/auth/change-password", json!({"password": PASSWORD, "new_password": "another long passphrase"})).await;
            assert_eq!(a.code(), "csrf_failed", "{case}");
        }
        victim.csrf = good;
        // The right token from a foreign page is refused too.
        victim.origin = Some("https://evil.example".into());
        let a = victim.post("/probe/note", json!("hi")).await;
        assert_eq!((a.status, a.code()), (StatusCode::FORBIDDEN, "cross_origin"));
        victim.origin = Some("null".into());
        assert_eq!(victim.post("/probe/note", json!("hi")).await.code(), "cross_origin");
        // A form post carries the token as a field.
        victim.origin = Some(app.base_url().to_owned());
        let form = format!("csrf_token={}&x=1", victim.csrf.clone().unwrap());
        let req = victim.http.post(app.url("/probe/note")).header("content-type", "application/x-www-form-urlencoded").body(form);
        let a = victim.send(req).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert!(a.body.as_str().unwrap().contains("csrf_token="), "the handler still sees the body: {}", a.body);
        // Still signed in: nothing above logged the victim out.
        assert_eq!(victim.get("/api/auth/me").await.status, StatusCode::OK);
        // Login and signup need a session to bind the token to.
        let mut stranger = Browser::new(&app);
        let a = stranger.post("/api/auth/login", json!({"email": "victim@example.com", "password": PASSWORD})).await;
        assert_eq!((a.status, a.code()), (StatusCode::FORBIDDEN, "csrf_failed"));
        app.stop().await;
    }

    async fn a_public_route_cannot_act_as_the_user_without_the_csrf_check(backend) {
        let Some(app) = spawn(backend, |_| {}).await else { return };
        let mut victim = Browser::signed_in(&app, "victim@example.com").await;
        // A forged cross-site form: the cookie rides along, no token.
        victim.csrf = None;
        victim.origin = None;
        let a = victim.post("/probe/public-act", json!({})).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{}", a.body);
        // The session itself is fine, and the guarded routes still see it.
        assert_eq!(victim.get("/probe/me").await.status, StatusCode::OK);
        app.stop().await;
    }

    async fn the_csrf_token_differs_in_every_response_and_each_works(backend) {
        let Some(app) = spawn(backend, |_| {}).await else { return };
        let mut b = Browser::signed_in(&app, "ana@example.com").await;
        // Compression next to reflected input must not be able to reveal it
        // byte by byte (BREACH): no two responses carry the same bytes.
        let mut seen = Vec::new();
        for _ in 0..3 {
            let a = b.get("/api/auth/csrf").await;
            seen.push(a.body["csrf_token"].as_str().unwrap().to_owned());
        }
        assert!(seen[0] != seen[1] && seen[1] != seen[2] && seen[0] != seen[2], "{seen:?}");
        for token in &seen {
            b.csrf = Some(token.clone());
            assert_eq!(b.post("/probe/note", json!("hi")).await.status, StatusCode::OK);
        }
        // Another session's masked token, and a mangled one, still fail.
        let mut other = Browser::signed_in(&app, "bo@example.com").await;
        other.csrf = Some(seen[0].clone());
        assert_eq!(other.post("/probe/note", json!("hi")).await.code(), "csrf_failed");
        let mut mangled = seen[1].clone().into_bytes();
        mangled[3] = if mangled[3] == b'A' { b'B' } else { b'A' };
        b.csrf = Some(String::from_utf8(mangled).unwrap());
        assert_eq!(b.post("/probe/note", json!("hi")).await.code(), "csrf_failed");
        app.stop().await;
    }

    async fn a_session_planted_before_login_is_worthless_after_it(backend) {
        let Some(app) = spawn(backend, |_| {}).await else { return };
        let _account = Browser::signed_in(&app, "victim@example.com").await;
        // The attacker gets a pre-session and plants its cookie in the victim's browser.
        let mut attacker = Browser::new(&app);
        attacker.start().await;
        let mut victim = Browser::new(&app);
        victim.cookies = attacker.cookies.clone();
        victim.csrf = attacker.csrf.clone();
        assert_eq!(victim.log_in("victim@example.com", PASSWORD).await.status, StatusCode::OK);
        assert_ne!(victim.cookie(), attacker.cookie());
        // The planted session did not become the victim's.
        let a = attacker.get("/api/auth/me").await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED);
        assert_eq!(victim.get("/api/auth/me").await.status, StatusCode::OK);
        app.stop().await;
    }

    async fn tampered_expired_and_revoked_sessions_get_401(backend) {
        let Some(app) = spawn(backend, |_| {}).await else { return };
        let mut b = Browser::signed_in(&app, "ana@example.com").await;
        let good = b.cookie().cloned().unwrap();
        // Tampered: one character of the signed value changed.
        let mut bad = good.clone().into_bytes();
        let last = bad.len() - 1;
        bad[last] = if bad[last] == b'A' { b'B' } else { b'A' };
        b.cookies.insert("hearth_session".into(), String::from_utf8(bad).unwrap());
        let a = b.get("/api/auth/me").await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED);
        assert!(a.clears_cookie());
        // Made up entirely, and a valid token with no signature.
        for fake in ["x", "' OR 1=1 --", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"] {
            b.cookies.insert("hearth_session".into(), fake.into());
            assert_eq!(b.get("/api/auth/me").await.status, StatusCode::UNAUTHORIZED, "{fake}");
        }
        b.cookies.insert("hearth_session".into(), good.clone());
        assert_eq!(b.get("/api/auth/me").await.status, StatusCode::OK);
        // Idle expiry passed.
        with_db!(app.state().db(), pool => sqlx::query("UPDATE hearth_token SET expires_at = 1 WHERE kind = 'session'").execute(pool).await.map(|_| ())).unwrap();
        let a = b.get("/api/auth/me").await;
        assert_eq!((a.status, a.code()), (StatusCode::UNAUTHORIZED, "session_expired"));
        assert!(a.clears_cookie());
        // Absolute expiry passed while still in use.
        let mut b = Browser::new(&app);
        b.start().await;
        assert_eq!(b.log_in("ana@example.com", PASSWORD).await.status, StatusCode::OK);
        with_db!(app.state().db(), pool => sqlx::query("UPDATE hearth_token SET data = '1' WHERE kind = 'session'").execute(pool).await.map(|_| ())).unwrap();
        assert_eq!(b.get("/api/auth/me").await.code(), "session_expired");
        // Revoked: "log out everywhere" from one browser ends the other's session.
        let mut one = Browser::new(&app);
        one.start().await;
        one.log_in("ana@example.com", PASSWORD).await;
        let mut two = Browser::new(&app);
        two.start().await;
        two.log_in("ana@example.com", PASSWORD).await;
        assert_eq!(two.get("/api/auth/me").await.status, StatusCode::OK);
        let a = one.post("/api/auth/logout-everywhere", json!({})).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert_eq!(two.get("/api/auth/me").await.code(), "session_expired");
        assert_eq!(one.get("/api/auth/me").await.status, StatusCode::UNAUTHORIZED);
        app.stop().await;
    }

    async fn sessions_slide_on_use_but_not_past_their_absolute_end(backend) {
        let Some(app) = spawn(backend, |_| {}).await else { return };
        let mut b = Browser::signed_in(&app, "ana@example.com").await;
        // Pretend the session was last pushed back long ago.
        with_db!(app.state().db(), pool => sqlx::query("UPDATE hearth_token SET expires_at = expires_at - 86400000 WHERE kind = 'session'").execute(pool).await.map(|_| ())).unwrap();
        let before: i64 = count(&app, "SELECT expires_at FROM hearth_token WHERE kind = 'session'").await;
        assert_eq!(b.get("/api/auth/me").await.status, StatusCode::OK);
        let after: i64 = count(&app, "SELECT expires_at FROM hearth_token WHERE kind = 'session'").await;
        assert!(after >= before + 86_000_000, "{before} → {after}");
        // Near the absolute end, sliding stops at it.
        let end = after - 5 * 86_400_000;
        with_db!(app.state().db(), pool => sqlx::query("UPDATE hearth_token SET data = $1, expires_at = $2 WHERE kind = 'session'").bind(end.to_string()).bind(end - 86_400_000).execute(pool).await.map(|_| ())).unwrap();
        assert_eq!(b.get("/api/auth/me").await.status, StatusCode::OK);
        assert_eq!(count(&app, "SELECT expires_at FROM hearth_token WHERE kind = 'session'").await, end);
        app.stop().await;
    }

    async fn repeated_failed_logins_get_429_even_with_the_right_password(backend) {
        let Some(app) = spawn(backend, |c| {
            c.auth.limits.login_failures_per_account.max = 3;
        }).await else { return };
        let _ = Browser::signed_in(&app, "ana@example.com").await;
        let _ = Browser::signed_in(&app, "bo@example.com").await;
        let mut attacker = Browser::new(&app);
        attacker.start().await;
        for _ in 0..3 {
            assert_eq!(attacker.log_in("ana@example.com", "guess guess guess").await.status, StatusCode::UNAUTHORIZED);
        }
        let a = attacker.log_in("ana@example.com", "guess guess guess").await;
        assert_eq!((a.status, a.code()), (StatusCode::TOO_MANY_REQUESTS, "too_many_requests"));
        let retry: u64 = a.headers.get("retry-after").unwrap().to_str().unwrap().parse().unwrap();
        assert!((1..=900).contains(&retry), "{retry}");
        assert_eq!(attacker.log_in("ana@example.com", PASSWORD).await.status, StatusCode::TOO_MANY_REQUESTS);
        // An unknown address locks the same way, so the lock tells nothing.
        for _ in 0..3 {
            attacker.log_in("nobody@example.com", "guess guess guess").await;
        }
        assert_eq!(attacker.log_in("nobody@example.com", "guess").await.status, StatusCode::TOO_MANY_REQUESTS);
        // Other accounts are not affected.
        assert_eq!(attacker.log_in("bo@example.com", PASSWORD).await.status, StatusCode::OK);
        app.stop().await;
    }

    async fn concurrent_guesses_cannot_outrun_the_account_lockout(backend) {
        let Some(app) = spawn(backend, |c| {
            // Ten client addresses, as a proxy would name them.
            c.auth.trust_forwarded_for = true;
            // A hash that takes a moment, so many guesses are in flight together.
            c.auth.argon2 = hearth::auth::Argon2Config { memory_kib: 4096, iterations: 1, parallelism: 1 };
        }).await else { return };
        let _ = Browser::signed_in(&app, "ana@example.com").await;
        let mut attacker = Browser::new(&app);
        attacker.start().await;
        let max = app.state().auth().config().limits.login_failures_per_account.max;
        let hashed_before = app.state().auth().passwords().computed();
        let mut guesses = tokio::task::JoinSet::new();
        for i in 0..200 {
            let req = attacker.http.post(app.url("/api/auth/login"))
                .header("cookie", attacker.cookie_header())
                .header("x-csrf-token", attacker.csrf.clone().unwrap())
                .header("origin", app.base_url())
                .header("x-forwarded-for", format!("198.51.100.{}", i % 10))
                .json(&json!({"email": "ana@example.com", "password": format!("guess number {i}")}));
            guesses.spawn(async move { req.send().await.unwrap().status() });
        }
        let (mut wrong, mut limited, mut other) = (0, 0, Vec::new());
        while let Some(status) = guesses.join_next().await {
            match status.unwrap() {
                StatusCode::UNAUTHORIZED => wrong += 1,
                StatusCode::TOO_MANY_REQUESTS => limited += 1,
                s => other.push(s),
            }
        }
        assert_eq!((wrong, limited, other), (max, 200 - max, vec![]));
        // Only the guesses let through were hashed.
        assert_eq!(app.state().auth().passwords().computed() - hashed_before, u64::from(max));
        app.stop().await;
    }

    async fn change_password_and_destroy_are_limited_whatever_their_outcome(backend) {
        let Some(app) = spawn(backend, |c| {
            c.auth.limits.reauth_per_account.max = 3;
        }).await else { return };
        let mut ana = Browser::signed_in(&app, "ana@example.com").await;
        let mut bo = Browser::signed_in(&app, "bo@example.com").await;
        let wrong = ana.post("/api/auth/change-password", json!({"password": "wrong wrong wrong", "new_password": "a new long passphrase"})).await;
        assert_eq!(wrong.code(), "wrong_password");
        let right = ana.post("/api/auth/change-password", json!({"password": PASSWORD, "new_password": "a new long passphrase"})).await;
        assert_eq!(right.status, StatusCode::OK, "{}", right.body);
        let right = ana.post("/api/auth/change-password", json!({"password": "a new long passphrase", "new_password": PASSWORD})).await;
        assert_eq!(right.status, StatusCode::OK, "{}", right.body);
        // The fourth is refused before any hashing, right password or not,
        // and destroying the account counts in the same budget.
        let hashed = app.state().auth().passwords().computed();
        let a = ana.post("/api/auth/change-password", json!({"password": PASSWORD, "new_password": "a new long passphrase"})).await;
        assert_eq!((a.status, a.code()), (StatusCode::TOO_MANY_REQUESTS, "too_many_requests"));
        assert!(a.headers.get("retry-after").is_some());
        assert_eq!(ana.post("/api/auth/destroy", json!({"password": PASSWORD})).await.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(app.state().auth().passwords().computed(), hashed);
        assert_eq!(count(&app, "SELECT count(*) FROM hearth_user").await, 2);
        // The budget is per account.
        let a = bo.post("/api/auth/change-password", json!({"password": PASSWORD, "new_password": "a new long passphrase"})).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        app.stop().await;
    }

    async fn forwarded_addresses_cannot_be_chosen_by_the_client(backend) {
        // One proxy in front, trusted whoever connects.
        let Some(app) = spawn(backend, |c| {
            c.auth.trust_forwarded_for = true;
            c.auth.limits.login_per_ip.max = 2;
        }).await else { return };
        let mut b = Browser::new(&app);
        b.start().await;
        let login = |b: &Browser, xff: String| {
            b.http.post(format!("{}/api/auth/login", b.base))
                .header("x-csrf-token", b.csrf.clone().unwrap())
                .header("x-forwarded-for", xff)
                .json(&json!({"email": "nobody@example.com", "password": "guess guess guess"}))
        };
        // The client varies its own entry and makes the proxy's unreadable:
        // the peer counts, so the limit holds.
        let mut statuses = Vec::new();
        for i in 0..4 {
            let req = login(&b, format!("203.0.113.{i}, not-an-address"));
            statuses.push(b.send(req).await.status);
        }
        assert_eq!(statuses[..2], [StatusCode::UNAUTHORIZED; 2]);
        assert_eq!(statuses[2..], [StatusCode::TOO_MANY_REQUESTS; 2]);
        app.stop().await;

        // A list of trusted proxies: the rightmost entry that is not one of them.
        let Some(app) = spawn(backend, |c| {
            c.auth.trusted_proxies = vec!["127.0.0.0/8".into(), "10.0.0.0/8".into()];
            c.auth.limits.login_per_ip.max = 2;
        }).await else { return };
        let mut b = Browser::new(&app);
        b.start().await;
        let mut statuses = Vec::new();
        for i in 0..3 {
            let req = login(&b, format!("6.6.6.{i}, 203.0.113.9, 10.1.2.3"));
            statuses.push(b.send(req).await.status);
        }
        assert_eq!(statuses, [StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED, StatusCode::TOO_MANY_REQUESTS]);
        // Another client behind the same proxies has its own count, and an
        // IPv6 client is counted by its /64.
        let req = login(&b, "198.51.100.7, 10.1.2.3".into());
        assert_eq!(b.send(req).await.status, StatusCode::UNAUTHORIZED);
        let mut statuses = Vec::new();
        for i in 1..4 {
            let req = login(&b, format!("2001:db8:1:2::{i}"));
            statuses.push(b.send(req).await.status);
        }
        assert_eq!(statuses, [StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED, StatusCode::TOO_MANY_REQUESTS]);
        app.stop().await;
    }

    async fn behind_https_the_cookie_is_secure_and_host_only(backend) {
        // TLS ends at a proxy: the public URL is what says HTTPS.
        let Some(app) = spawn(backend, |c| {
            c.public_url = Some("https://app.example".into());
        }).await else { return };
        let mut b = Browser::new(&app);
        let a = b.get("/api/auth/csrf").await;
        let set_cookie = a.headers.get("set-cookie").unwrap().to_str().unwrap().to_owned();
        assert!(set_cookie.starts_with("__Host-hearth_session="), "{set_cookie}");
        for attr in ["; Secure", "Path=/", "HttpOnly"] {
            assert!(set_cookie.contains(attr), "{set_cookie}");
        }
        assert!(!set_cookie.contains("Domain"), "{set_cookie}");
        b.sign_up("ana@example.com", PASSWORD).await;
        let a = b.log_in("ana@example.com", PASSWORD).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert!(a.headers.get("set-cookie").unwrap().to_str().unwrap().contains("; Secure"));
        assert_eq!(b.get("/api/auth/me").await.status, StatusCode::OK);
        // The same signed value under the plain name (what a sibling
        // subdomain could set for the parent domain) is no session.
        let value = b.cookies.remove("__Host-hearth_session").unwrap();
        b.cookies.insert("hearth_session".into(), value);
        assert_eq!(b.get("/api/auth/me").await.status, StatusCode::UNAUTHORIZED);
        app.stop().await;
    }

    async fn too_many_signups_from_one_address_get_429(backend) {
        let Some(app) = spawn(backend, |c| {
            c.auth.limits.signup_per_ip.max = 2;
        }).await else { return };
        let mut b = Browser::new(&app);
        b.start().await;
        b.sign_up("a@example.com", PASSWORD).await;
        b.sign_up("b@example.com", PASSWORD).await;
        let a = b.post("/api/auth/signup", json!({"email": "c@example.com", "password": PASSWORD})).await;
        assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(a.headers.get("retry-after").is_some());
        app.stop().await;
    }

    async fn guards_keep_out_who_they_should(backend) {
        let Some(app) = spawn(backend, |c| {
            c.auth.admins = vec!["Boss@Example.com".into()];
        }).await else { return };
        let mut anonymous = Browser::new(&app);
        for path in ["/probe/me", "/probe/verified", "/probe/editors", "/probe/admin"] {
            assert_eq!(anonymous.get(path).await.status, StatusCode::UNAUTHORIZED, "{path}");
        }
        // A pre-session is not a sign-in.
        anonymous.start().await;
        assert_eq!(anonymous.get("/probe/me").await.status, StatusCode::UNAUTHORIZED);
        let mut user = Browser::signed_in(&app, "user@example.com").await;
        assert_eq!(user.get("/probe/me").await.status, StatusCode::OK);
        let a = user.get("/probe/verified").await;
        assert_eq!((a.status, a.code()), (StatusCode::FORBIDDEN, "email_unverified"));
        assert_eq!(user.get("/probe/editors").await.status, StatusCode::FORBIDDEN);
        assert_eq!(user.get("/probe/admin").await.status, StatusCode::FORBIDDEN);
        // Verified, and in the group: both open up.
        let users = app.state().auth().users();
        let (u, _) = users.by_email("user@example.com").await.unwrap().unwrap();
        let mut tx = app.state().db().begin().await.unwrap();
        users.mark_verified(&mut tx, u.id).await.unwrap();
        users.add_group(&mut tx, u.id, "editors").await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(user.get("/probe/verified").await.status, StatusCode::OK);
        assert_eq!(user.get("/probe/editors").await.status, StatusCode::OK);
        assert_eq!(user.get("/probe/admin").await.status, StatusCode::FORBIDDEN);
        // Admin by the config's list (any case) once the address is verified,
        // and by the database flag.
        let mut boss = Browser::signed_in(&app, "boss@example.com").await;
        assert_eq!(boss.get("/probe/admin").await.status, StatusCode::FORBIDDEN);
        assert_eq!(boss.get("/api/auth/me").await.body["user"]["admin"], false);
        let (b, _) = users.by_email("boss@example.com").await.unwrap().unwrap();
        let mut tx = app.state().db().begin().await.unwrap();
        users.mark_verified(&mut tx, b.id).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(boss.get("/probe/admin").await.status, StatusCode::OK);
        assert_eq!(boss.get("/api/auth/me").await.body["user"]["admin"], true);
        let mut tx = app.state().db().begin().await.unwrap();
        users.set_admin(&mut tx, u.id, true).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(user.get("/probe/admin").await.status, StatusCode::OK);
        // A disabled account's sessions stop working at once.
        let mut tx = app.state().db().begin().await.unwrap();
        users.set_disabled(&mut tx, u.id, true).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(user.get("/probe/me").await.code(), "session_expired");
        let mut again = Browser::new(&app);
        again.start().await;
        assert_eq!(again.log_in("user@example.com", PASSWORD).await.code(), "invalid_credentials");
        app.stop().await;
    }

    async fn changing_the_password_rotates_this_session_and_ends_the_others(backend) {
        let Some(app) = spawn(backend, |_| {}).await else { return };
        let mut here = Browser::signed_in(&app, "ana@example.com").await;
        let mut elsewhere = Browser::new(&app);
        elsewhere.start().await;
        elsewhere.log_in("ana@example.com", PASSWORD).await;
        let old_cookie = here.cookie().cloned();
        let a = here.post("/api/auth/change-password", json!({"password": "wrong wrong wrong", "new_password": "a new long passphrase"})).await;
        assert_eq!((a.status, a.code(), a.field()), (StatusCode::UNPROCESSABLE_ENTITY, "wrong_password", "password"));
        let a = here.post("/api/auth/change-password", json!({"password": PASSWORD, "new_password": "password123"})).await;
        assert_eq!((a.status, a.field()), (StatusCode::UNPROCESSABLE_ENTITY, "new_password"));
        let a = here.post("/api/auth/change-password", json!({"password": PASSWORD, "new_password": "a new long passphrase"})).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert_ne!(here.cookie(), old_cookie.as_ref());
        assert_eq!(here.get("/api/auth/me").await.status, StatusCode::OK);
        assert_eq!(elsewhere.get("/api/auth/me").await.code(), "session_expired");
        let mut fresh = Browser::new(&app);
        fresh.start().await;
        assert_eq!(fresh.log_in("ana@example.com", PASSWORD).await.status, StatusCode::UNAUTHORIZED);
        assert_eq!(fresh.log_in("ana@example.com", "a new long passphrase").await.status, StatusCode::OK);
        app.stop().await;
    }

    async fn destroying_an_account_removes_it_and_signals_modules(backend) {
        let Some(app) = spawn(backend, |_| {}).await else { return };
        let mut b = Browser::signed_in(&app, "ana@example.com").await;
        // The signup's job issues the verification link in the background;
        // let it finish, so that what is counted below is settled.
        for _ in 0..400 {
            if count(&app, "SELECT count(*) FROM hearth_token WHERE kind = 'verify_email'").await == 1 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        let a = b.post("/api/auth/destroy", json!({"password": "wrong wrong wrong"})).await;
        assert_eq!(a.code(), "wrong_password");
        let a = b.post("/api/auth/destroy", json!({"password": PASSWORD})).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert!(a.clears_cookie());
        assert_eq!(count(&app, "SELECT count(*) FROM hearth_user").await, 0);
        assert_eq!(count(&app, "SELECT count(*) FROM hearth_token WHERE owner IS NOT NULL").await, 0);
        let signals = app.state().pubsub().since(hearth::auth::USER_DESTROYED, 0, 10).await.unwrap();
        assert_eq!(signals.len(), 1);
        let payload: Value = serde_json::from_str(&signals[0].payload).unwrap();
        assert_eq!(payload["email"], "ana@example.com");
        let mut c = Browser::new(&app);
        c.start().await;
        assert_eq!(c.log_in("ana@example.com", PASSWORD).await.status, StatusCode::UNAUTHORIZED);
        app.stop().await;
    }

    async fn bad_input_names_the_field(backend) {
        let Some(app) = spawn(backend, |_| {}).await else { return };
        let mut b = Browser::new(&app);
        b.start().await;
        let long_email = format!("{}@example.com", "a".repeat(300));
        let long_password = "p".repeat(2000);
        let cases: Vec<(&str, Value, StatusCode, &str)> = vec![
            ("/api/auth/signup", json!({"password": PASSWORD}), StatusCode::UNPROCESSABLE_ENTITY, "email"),
            ("/api/auth/signup", json!({"email": "a@example.com"}), StatusCode::UNPROCESSABLE_ENTITY, "password"),
            ("/api/auth/signup", json!({"email": 7, "password": PASSWORD}), StatusCode::UNPROCESSABLE_ENTITY, "email"),
            ("/api/auth/signup", json!({"email": "a@example.com", "password": ["x"]}), StatusCode::UNPROCESSABLE_ENTITY, "password"),
            ("/api/auth/signup", json!({"email": "not an email", "password": PASSWORD}), StatusCode::UNPROCESSABLE_ENTITY, "email"),
            ("/api/auth/signup", json!({"email": long_email, "password": PASSWORD}), StatusCode::UNPROCESSABLE_ENTITY, "email"),
            ("/api/auth/signup", json!({"email": "a@example.com", "password": "short"}), StatusCode::UNPROCESSABLE_ENTITY, "password"),
            ("/api/auth/signup", json!({"email": "a@example.com", "password": long_password}), StatusCode::UNPROCESSABLE_ENTITY, "password"),
            ("/api/auth/signup", json!({"email": "a@example.com", "password": PASSWORD, "admin": true}), StatusCode::UNPROCESSABLE_ENTITY, "admin"),
            ("/api/auth/login", json!({"email": "", "password": PASSWORD}), StatusCode::UNPROCESSABLE_ENTITY, "email"),
            ("/api/auth/login", json!({"email": "a@example.com", "password": null}), StatusCode::UNPROCESSABLE_ENTITY, "password"),
            ("/api/auth/login", json!({"email": "a@example.com", "password": long_password}), StatusCode::UNPROCESSABLE_ENTITY, "password"),
            ("/api/auth/login", json!("a@example.com"), StatusCode::UNPROCESSABLE_ENTITY, ""),
        ];
        for (path, body, status, field) in cases {
            let a = b.post(path, body.clone()).await;
            assert_eq!((a.status, a.field()), (status, field), "{path} {body}: {}", a.body);
        }
        // Not JSON, and broken JSON.
        let req = b.http.post(app.url("/api/auth/login")).header("x-csrf-token", b.csrf.clone().unwrap()).body("email=a");
        assert_eq!(b.send(req).await.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let req = b.http.post(app.url("/api/auth/login")).header("x-csrf-token", b.csrf.clone().unwrap()).header("content-type", "application/json").body("{\"email\":");
        assert_eq!(b.send(req).await.status, StatusCode::BAD_REQUEST);
        assert_eq!(count(&app, "SELECT count(*) FROM hearth_user").await, 0);
        app.stop().await;
    }

    async fn sql_metacharacters_and_markup_are_stored_literally(backend) {
        let Some(app) = spawn(backend, |_| {}).await else { return };
        let email = "o'brien+x--y@example.com";
        let password = "'; DROP TABLE hearth_user; -- <script>alert(1)</script>";
        let mut b = Browser::new(&app);
        b.start().await;
        b.sign_up(email, password).await;
        let a = b.log_in(email, password).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert_eq!(a.body["user"]["email"], email);
        assert_eq!(count(&app, "SELECT count(*) FROM hearth_user").await, 1);
        let stored: String = with_db!(app.state().db(), pool => sqlx::query_scalar("SELECT email FROM hearth_user").fetch_one(pool).await).unwrap();
        assert_eq!(stored, email);
        app.stop().await;
    }

    async fn the_signup_list_keeps_strangers_out(backend) {
        let Some(app) = spawn(backend, |c| {
            c.auth.signup_allow = vec!["@team.example".into(), "guest@example.com".into()];
        }).await else { return };
        let mut b = Browser::new(&app);
        b.start().await;
        b.sign_up("ana@team.example", PASSWORD).await;
        b.sign_up("guest@example.com", PASSWORD).await;
        let a = b.post("/api/auth/signup", json!({"email": "stranger@example.com", "password": PASSWORD})).await;
        assert_eq!((a.status, a.code(), a.field()), (StatusCode::FORBIDDEN, "signup_closed", "email"));
        assert_eq!(count(&app, "SELECT count(*) FROM hearth_user").await, 2);
        // Anyone can sign up with a listed address; until the mailed link
        // proves they own it, the signed-in routes stay shut. Their own
        // account's routes stay open, so they can ask for the link again.
        let a = b.log_in("ana@team.example", PASSWORD).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        let a = b.get("/probe/me").await;
        assert_eq!((a.status, a.code()), (StatusCode::FORBIDDEN, "email_unverified"));
        assert_eq!(b.post("/probe/note", json!("hi")).await.code(), "email_unverified");
        assert_eq!(b.get("/api/auth/me").await.status, StatusCode::OK);
        assert_eq!(b.post("/api/auth/resend-verification", json!({})).await.status, StatusCode::ACCEPTED);
        let users = app.state().auth().users();
        let (u, _) = users.by_email("ana@team.example").await.unwrap().unwrap();
        let mut tx = app.state().db().begin().await.unwrap();
        users.mark_verified(&mut tx, u.id).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(b.get("/probe/me").await.status, StatusCode::OK);
        app.stop().await;
    }

    async fn passwords_are_hashed_with_the_configured_argon2id_and_rehashed_when_it_changes(backend) {
        let Some(db) = hearth::testing::TestDb::create(backend).await else { return };
        // First with OWASP's parameters (the defaults).
        let mut config = TestApp::config(&db);
        config.auth.argon2 = hearth::auth::Argon2Config::default();
        let running = TestApp::try_start(&app(), config.clone()).await.unwrap();
        let base = format!("http://{}", running.local_addr().unwrap());
        let mut b = Browser { http: crate::probe::client(), base: base.clone(), cookies: BTreeMap::new(), csrf: None, origin: Some(base) };
        b.start().await;
        b.sign_up("ana@example.com", PASSWORD).await;
        let hash: String = with_db!(running.state().db(), pool => sqlx::query_scalar("SELECT password_hash FROM hearth_user").fetch_one(pool).await).unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
        running.shutdown().await;
        // Then with other parameters: the old hash still signs in, and is replaced.
        config.auth.argon2.iterations = 3;
        let running = TestApp::try_start(&app(), config).await.unwrap();
        let base = format!("http://{}", running.local_addr().unwrap());
        let mut b = Browser { http: crate::probe::client(), base: base.clone(), cookies: BTreeMap::new(), csrf: None, origin: Some(base) };
        b.start().await;
        assert_eq!(b.log_in("ana@example.com", PASSWORD).await.status, StatusCode::OK);
        let hash: String = with_db!(running.state().db(), pool => sqlx::query_scalar("SELECT password_hash FROM hearth_user").fetch_one(pool).await).unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=3,p=1$"), "{hash}");
        running.shutdown().await;
    }

    async fn pre_sessions_cost_no_rows_and_end_on_time(backend) {
        let Some(app) = spawn(backend, |c| {
            c.auth.anonymous_idle = hearth::config::Duration::from_secs(60);
        }).await else { return };
        let _ = Browser::signed_in(&app, "ana@example.com").await;
        // (The signup's verification token arrives in the background; count sessions only.)
        let rows = count(&app, "SELECT count(*) FROM hearth_token WHERE kind = 'session'").await;
        assert_eq!(rows, 1, "the signed-in session");
        for _ in 0..5 {
            Browser::new(&app).start().await;
        }
        assert_eq!(count(&app, "SELECT count(*) FROM hearth_token WHERE kind = 'session'").await, rows, "a pre-session is a cookie only");
        let mut b = Browser::new(&app);
        b.start().await;
        let cookie = b.cookie().unwrap().clone();
        assert!(cookie.contains("a."), "{cookie}");
        // A pre-session cannot be stretched: its issue time is under the signature.
        let forged = cookie.replacen("a.", "a.9", 1);
        b.cookies.insert("hearth_session".into(), forged);
        let a = b.log_in("ana@example.com", PASSWORD).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED);
        assert!(a.clears_cookie());
        // Over HTTP/2 (no Host header, the authority is in the URI) the origin check still passes.
        let mut h2 = Browser::new(&app);
        h2.http = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
        h2.start().await;
        let a = h2.log_in("ana@example.com", PASSWORD).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert_eq!(h2.post("/probe/note", json!("over h2")).await.status, StatusCode::OK);
        app.stop().await;
    }
}
