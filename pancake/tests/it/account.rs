//! pancake's account pages as a browser without JavaScript uses them:
//! plain HTML forms, cookies, 303 redirects, and mail read from a real SMTP
//! server on loopback.

use std::collections::BTreeMap;
use std::time::Duration;

use hearth::testing::{SmtpSink, TestApp};
use reqwest::StatusCode;

/// A cookie-keeping client that posts forms the way a browser does: with
/// the page's hidden fields, `Origin`, and no redirect following (so tests
/// see each 303).
struct Browser {
    http: reqwest::Client,
    base: String,
    cookies: BTreeMap<String, String>,
}

struct Page {
    status: StatusCode,
    location: Option<String>,
    text: String,
}

impl Page {
    /// The value of hidden input `name` (the first one).
    fn hidden(&self, name: &str) -> String {
        let needle = format!("name=\"{name}\" value=\"");
        let start = self
            .text
            .find(&needle)
            .unwrap_or_else(|| panic!("no {name} in {}", self.text))
            + needle.len();
        let end = self.text[start..].find('"').unwrap() + start;
        self.text[start..end].to_owned()
    }
}

impl Browser {
    fn new(app: &TestApp) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            base: app.base_url().to_owned(),
            cookies: BTreeMap::new(),
        }
    }

    async fn send(&mut self, req: reqwest::RequestBuilder) -> Page {
        let cookie = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let res = req
            .header("cookie", cookie)
            .header("accept", "text/html")
            .send()
            .await
            .unwrap();
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
        let location = res
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_owned());
        Page {
            status,
            location,
            text: res.text().await.unwrap(),
        }
    }

    async fn get(&mut self, path: &str) -> Page {
        let req = self.http.get(format!("{}{path}", self.base));
        self.send(req).await
    }

    /// Posts `fields` to `path` as a form, with `csrf` as the token field.
    async fn post(&mut self, path: &str, csrf: &str, fields: &[(&str, &str)]) -> Page {
        let mut all: Vec<(&str, &str)> = vec![("csrf_token", csrf)];
        all.extend_from_slice(fields);
        let body = all
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("origin", self.base.clone())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        self.send(req).await
    }

    /// Loads `path` until its text satisfies `done` (up to 20 s): for what
    /// the app's background readers and workers do at their own pace.
    async fn wait_for(&mut self, path: &str, done: impl Fn(&str) -> bool) -> Page {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let page = self.get(path).await;
            if done(&page.text) {
                return page;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{path} never came: {}",
                page.text
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Loads the form page at `path` and submits it with `fields`.
    async fn fill(&mut self, path: &str, action: &str, fields: &[(&str, &str)]) -> Page {
        let form = self.get(path).await;
        assert_eq!(form.status, StatusCode::OK, "{path}: {}", form.text);
        let csrf = form.hidden("csrf_token");
        self.post(action, &csrf, fields).await
    }
}

/// `application/x-www-form-urlencoded` encoding of one name or value.
fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                out.push(char::from(b))
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

const PASSWORD: &str = "a long enough passphrase";

/// The signed-in member's account id, from `/api/whoami`.
async fn ana_id(b: &mut Browser) -> i64 {
    let who = b.get("/api/whoami").await;
    let who: serde_json::Value = serde_json::from_str(&who.text).unwrap();
    who["id"].as_i64().unwrap()
}

/// Signs up through the form, confirms the address through the mailed link
/// and signs in.
async fn join(app: &TestApp, sink: &SmtpSink, email: &str) -> Browser {
    let mut b = Browser::new(app);
    let p = b
        .fill(
            "/auth/signup",
            "/auth/signup",
            &[("email", email), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.text);
    assert!(p.text.contains("Check your inbox"));
    let token = sink.next().await.token_for("/auth/verify-email").unwrap();
    let p = b
        .fill(
            &format!("/auth/verify-email?token={token}"),
            "/auth/verify-email",
            &[("token", &token)],
        )
        .await;
    assert!(p.text.contains("Address confirmed"), "{}", p.text);
    let p = b
        .fill(
            "/auth/login",
            "/auth/login",
            &[("email", email), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(
        (p.status, p.location.as_deref()),
        (StatusCode::SEE_OTHER, Some("/account")),
        "{}",
        p.text
    );
    b
}

/// The first `data:` payload on `b`'s stream at `path`.
async fn first_event(b: &Browser, path: &str) -> reqwest::Response {
    let cookie = b
        .cookies
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("; ");
    let res = b
        .http
        .get(format!("{}{path}", b.base))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    res
}

async fn next_data(res: &mut reqwest::Response) -> serde_json::Value {
    let mut text = String::new();
    loop {
        if let Some(data) = text.lines().find_map(|l| l.strip_prefix("data: ")) {
            return serde_json::from_str(data).unwrap();
        }
        match tokio::time::timeout(Duration::from_secs(20), res.chunk()).await {
            Ok(Ok(Some(chunk))) => text.push_str(&String::from_utf8_lossy(&chunk)),
            other => panic!("no event arrived ({other:?}): {text}"),
        }
    }
}

hearth::db_tests! {
    /// Two members meet: profiles, a like that reaches the other's open
    /// page over SSE and their alerts, then a block that hides each from
    /// the other everywhere. Background readers and workers run as in
    /// production; nothing is drained by hand.
    async fn a_like_reaches_the_other_live_and_a_block_hides_them_everywhere(backend) {
        let sink = SmtpSink::start().await;
        let Some(app) = crate::spawn_site(backend, &sink, &[]).await else { return };
        let mut ana = join(&app, &sink, "ana@example.com").await;
        let mut ben = join(&app, &sink, "ben@example.com").await;
        let p = ana.fill("/profile", "/profile", &[("display_name", "Ana"), ("city", "Porto"), ("bio", "Cyclist")]).await;
        assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.text);
        let p = ben.fill("/profile", "/profile", &[("display_name", "Ben"), ("city", "Gent"), ("bio", "")]).await;
        let ben_page = p.location.unwrap();
        let ben_id = ben_page.rsplit('/').next().unwrap().to_owned();
        // Ben's open page listens for his unread count.
        let mut stream = first_event(&ben, "/api/alerts/live").await;
        let directory = ana.get("/people").await;
        assert!(directory.text.contains("Ben</a> · Gent"), "{}", directory.text);
        let p = ana.fill(&ben_page, &format!("{ben_page}/like"), &[]).await;
        assert_eq!((p.status, p.location.as_deref()), (StatusCode::SEE_OTHER, Some(ben_page.as_str())));
        let count = next_data(&mut stream).await;
        assert_eq!(count["unread"], 1, "{count}");
        let alerts = ben.wait_for("/alerts", |t| t.contains("Ana</a> likes you")).await;
        assert!(alerts.text.contains("(1 new)"), "{}", alerts.text);
        let likes = ben.wait_for("/likes", |t| t.contains("Ana</a>")).await;
        assert!(likes.status.is_success());
        // Ben blocks Ana: she is gone from his alerts and likes, and he
        // from her directory and profile pages.
        let p = ben.fill(&ben_page, &format!("/people/{}/block", ana_id(&mut ana).await), &[]).await;
        assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.text);
        let count = next_data(&mut stream).await;
        assert_eq!(count["unread"], 0, "{count}");
        ben.wait_for("/alerts", |t| !t.contains("Ana")).await;
        ben.wait_for("/likes", |t| !t.contains("Ana")).await;
        assert!(!ana.get("/people").await.text.contains("Ben"));
        assert_eq!(ana.get(&format!("/people/{ben_id}")).await.status, StatusCode::NOT_FOUND);
        // Nor can she like him any more, even by posting the form by hand.
        let csrf = ana.get("/people").await.hidden("csrf_token");
        let again = ana.post(&format!("{ben_page}/like"), &csrf, &[]).await;
        assert_eq!(again.status, StatusCode::NOT_FOUND, "{}", again.text);
        app.stop().await;
    }

    async fn a_visitor_joins_and_uses_the_site_with_forms_only(backend) {
        let sink = SmtpSink::start().await;
        let Some(app) = crate::spawn_site(backend, &sink, &[]).await else { return };
        let mut b = join(&app, &sink, "ana@example.com").await;
        let p = b.get("/account").await;
        assert_eq!(p.status, StatusCode::OK);
        assert!(p.text.contains("<dd id=\"email\">ana@example.com</dd>"), "{}", p.text);
        assert!(p.text.contains("<dd id=\"verified\">yes</dd>"));
        // Pages work without script; the one script (the live unread
        // count) is an addition, loaded from a file, never inline.
        assert!(!p.text.contains("<script>"), "no inline script");
        let members = b.get("/members").await;
        assert_eq!(members.status, StatusCode::OK);
        assert!(members.text.contains("pancake has 1 member(s)"), "{}", members.text);
        let who = b.get("/api/whoami").await;
        assert_eq!(who.status, StatusCode::OK);
        let who: serde_json::Value = serde_json::from_str(&who.text).unwrap();
        assert_eq!((who["email"].as_str(), who["verified"].as_bool(), who["admin"].as_bool()), (Some("ana@example.com"), Some(true), Some(false)));
        assert!(b.get("/").await.text.contains("ana@example.com"), "the header shows who is signed in");
        // Not an admin.
        assert_eq!(b.get("/admin").await.status, StatusCode::FORBIDDEN);
        // Sign out from the header's form.
        let home = b.get("/").await;
        let p = b.post("/auth/logout", &home.hidden("csrf_token"), &[]).await;
        assert_eq!((p.status, p.location.as_deref()), (StatusCode::SEE_OTHER, Some("/")));
        // Signed-out browsers are sent to the sign-in page, and back after it.
        let p = b.get("/members").await;
        assert_eq!((p.status, p.location.as_deref()), (StatusCode::SEE_OTHER, Some("/auth/login?next=%2Fmembers")));
        let form = b.get("/auth/login?next=%2Fmembers").await;
        assert_eq!(form.hidden("next"), "/members");
        let p = b.post("/auth/login", &form.hidden("csrf_token"), &[("email", "ana@example.com"), ("password", PASSWORD), ("next", "/members")]).await;
        assert_eq!(p.location.as_deref(), Some("/members"));
        // A crafted `next` cannot send anyone off-site.
        b.cookies.clear();
        let form = b.get("/auth/login").await;
        let p = b.post("/auth/login", &form.hidden("csrf_token"), &[("email", "ana@example.com"), ("password", PASSWORD), ("next", "//evil.example/")]).await;
        assert_eq!(p.location.as_deref(), Some("/account"));
        app.stop().await;
    }

    async fn form_errors_are_shown_in_the_form_escaped(backend) {
        let sink = SmtpSink::start().await;
        let Some(app) = crate::spawn_site(backend, &sink, &[]).await else { return };
        let _ = join(&app, &sink, "ana@example.com").await;
        let mut b = Browser::new(&app);
        let p = b.fill("/auth/login", "/auth/login", &[("email", "ana@example.com"), ("password", "wrong wrong wrong")]).await;
        assert_eq!(p.status, StatusCode::UNAUTHORIZED);
        assert!(p.text.contains("the email or the password is wrong"), "{}", p.text);
        assert!(p.text.contains("value=\"ana@example.com\""), "the email is kept");
        // Markup in every field that is shown again comes back escaped.
        for xss in ["\"><script>alert(1)</script>", "<img src=x onerror=alert(1)>@example.com", "a@b.c\" autofocus onfocus=\"alert(1)"] {
            for (form, fields) in [
                ("/auth/login", vec![("email", xss), ("password", "x")]),
                ("/auth/signup", vec![("email", xss), ("password", PASSWORD)]),
                ("/auth/recover", vec![("email", xss)]),
            ] {
                let p = b.fill(form, form, &fields).await;
                assert_eq!(p.status, StatusCode::UNPROCESSABLE_ENTITY, "{form} {xss}");
                for raw in ["<script>alert", "<img src=x", "\" autofocus"] {
                    assert!(!p.text.contains(raw), "{form} {xss}: {}", p.text);
                }
            }
        }
        let p = b.fill("/auth/signup", "/auth/signup", &[("email", "bo@example.com"), ("password", "password123")]).await;
        assert_eq!(p.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(p.text.contains("most common"), "{}", p.text);
        // A form posted without its token, or from another site, is refused.
        let p = b.post("/auth/login", "", &[("email", "ana@example.com"), ("password", PASSWORD)]).await;
        assert_eq!(p.status, StatusCode::FORBIDDEN);
        app.stop().await;
    }

    async fn a_forgotten_password_is_reset_with_forms(backend) {
        let sink = SmtpSink::start().await;
        let Some(app) = crate::spawn_site(backend, &sink, &[]).await else { return };
        let mut signed_in = join(&app, &sink, "ana@example.com").await;
        let mut b = Browser::new(&app);
        let p = b.fill("/auth/recover", "/auth/recover", &[("email", "ana@example.com")]).await;
        assert!(p.text.contains("Check your inbox"));
        let token = sink.next().await.token_for("/auth/reset").unwrap();
        let p = b.fill(&format!("/auth/reset?token={token}"), "/auth/reset", &[("token", &token), ("new_password", "a brand new passphrase")]).await;
        assert!(p.text.contains("Password changed"), "{}", p.text);
        // The other browser was signed out.
        assert_eq!(signed_in.get("/account").await.status, StatusCode::SEE_OTHER);
        // The link is spent.
        let p = b.get(&format!("/auth/reset?token={token}")).await;
        assert_eq!(p.status, StatusCode::BAD_REQUEST);
        assert!(p.text.contains("Link not valid"));
        let p = b.fill("/auth/login", "/auth/login", &[("email", "ana@example.com"), ("password", "a brand new passphrase")]).await;
        assert_eq!(p.status, StatusCode::SEE_OTHER);
        app.stop().await;
    }

    async fn the_password_is_changed_and_the_account_deleted_from_my_account(backend) {
        let sink = SmtpSink::start().await;
        let Some(app) = crate::spawn_site(backend, &sink, &[]).await else { return };
        let mut b = join(&app, &sink, "ana@example.com").await;
        let p = b.fill("/auth/change-password", "/auth/change-password", &[("password", PASSWORD), ("new_password", "another long passphrase")]).await;
        assert_eq!((p.status, p.location.as_deref()), (StatusCode::SEE_OTHER, Some("/account?changed=1")), "{}", p.text);
        assert!(b.get("/account?changed=1").await.text.contains("Your password is changed"));
        let p = b.fill("/account", "/account/delete", &[("password", "wrong wrong wrong")]).await;
        assert_eq!(p.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(p.text.contains("the current password is wrong"));
        let p = b.fill("/account", "/account/delete", &[("password", "another long passphrase")]).await;
        assert!(p.text.contains("Account deleted"), "{}", p.text);
        let mut c = Browser::new(&app);
        let p = c.fill("/auth/login", "/auth/login", &[("email", "ana@example.com"), ("password", "another long passphrase")]).await;
        assert_eq!(p.status, StatusCode::UNAUTHORIZED);
        app.stop().await;
    }

    async fn admins_post_notices_from_the_admin_page(backend) {
        let sink = SmtpSink::start().await;
        let Some(app) = crate::spawn_site(backend, &sink, &["boss@example.com"]).await else { return };
        let mut boss = join(&app, &sink, "boss@example.com").await;
        let p = boss.get("/admin").await;
        assert_eq!(p.status, StatusCode::OK);
        let p = boss.post("/admin/notices", &p.hidden("csrf_token"), &[("title", "Picnic <Sunday>"), ("body", "Bring pancakes")]).await;
        assert_eq!((p.status, p.location.as_deref()), (StatusCode::SEE_OTHER, Some("/admin?posted=1")));
        let mut shown = false;
        for _ in 0..200 {
            let home = boss.get("/").await;
            if home.text.contains("Picnic &#60;Sunday&#62;") {
                shown = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(shown, "the notice reached the home page, escaped");
        let p = boss.get("/admin").await;
        let p = boss.post("/admin/notices", &p.hidden("csrf_token"), &[("title", " "), ("body", "x")]).await;
        assert_eq!(p.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(p.text.contains("must not be empty"));
        app.stop().await;
    }
}
