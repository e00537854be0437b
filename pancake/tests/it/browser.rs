//! pancake in a real browser: headless Chromium, driven over WebDriver by
//! chromedriver, signs up, confirms the mailed link, signs in and out, posts
//! a hostile notice, and is lured into a cross-site form post.
//!
//! The form tests in `account.rs` speak HTTP the way a browser should; these
//! check what only a browser decides: that the pages work without any script
//! of ours, that the CSP and escaping keep injected markup inert, that
//! JavaScript cannot read the session cookie, and that a foreign page's
//! same-site form post is refused.
//!
//! Chromium and chromedriver come from Debian's `chromium` and
//! `chromium-driver` packages, which `.ci/run` installs. Without them the
//! tests print `SKIPPED Chromium` and pass; CI treats that line as a failure.

use std::io::Write as _;
use std::net::TcpListener as StdListener;
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use hearth::testing::{SmtpSink, TestApp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PASSWORD: &str = "a long enough passphrase";

/// A chromedriver process with one headless Chromium session.
struct Chrome {
    client: Client,
    driver: tokio::process::Child,
    _profile: tempfile::TempDir,
}

/// The first of `names` found on `PATH` (or given by `var`).
fn find_binary(var: &str, names: &[&str]) -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os(var) {
        return Some(p.into());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

impl Chrome {
    /// Starts chromedriver and a headless Chromium, or prints why it can't
    /// and returns `None`.
    async fn start() -> Option<Self> {
        let Some(driver_bin) = find_binary("HEARTH_TEST_CHROMEDRIVER", &["chromedriver"]) else {
            // Straight to stderr: the harness captures `println!`, and CI
            // greps for this line.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED Chromium: chromedriver not found (install chromium-driver)"
            );
            return None;
        };
        let browser_bin = find_binary("HEARTH_TEST_CHROMIUM", &["chromium", "google-chrome"]);
        // chromedriver takes a port, not a listener; a port the OS just
        // handed out is free in practice.
        let port = StdListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = tokio::process::Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, so that dropping `Chrome` (also when a
            // test panics) takes the browser processes down with it.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        let profile = tempfile::tempdir().unwrap();
        let mut options = serde_json::json!({
            "args": [
                "--headless=new",
                // Tests may run as root in CI, where the sandbox can't start.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                format!("--user-data-dir={}", profile.path().display()),
            ],
        });
        if let Some(bin) = browser_bin {
            options["binary"] = bin.display().to_string().into();
        }
        let mut caps = serde_json::Map::new();
        caps.insert("goog:chromeOptions".into(), options);
        let url = format!("http://127.0.0.1:{port}");
        // chromedriver needs a moment before it listens.
        let mut last = None;
        for _ in 0..100 {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(client) => {
                    return Some(Self {
                        client,
                        driver,
                        _profile: profile,
                    });
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no WebDriver session: {last:?}");
    }

    async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    /// The visible text of the page's `<main>`.
    async fn main_text(&self) -> String {
        self.client
            .find(Locator::Css("main"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Types `fields` into the inputs of the page's form named by
    /// `form` (a CSS selector) and clicks its submit button, as a person would.
    async fn submit(&self, form: &str, fields: &[(&str, &str)]) {
        let form = self.client.find(Locator::Css(form)).await.unwrap();
        for (name, value) in fields {
            let input = form
                .find(Locator::Css(&format!("[name=\"{name}\"]")))
                .await
                .unwrap_or_else(|e| panic!("no field {name}: {e}"));
            input.clear().await.unwrap();
            input.send_keys(value).await.unwrap();
        }
        let button = form
            .find(Locator::Css("button[type=submit]"))
            .await
            .unwrap();
        self.click_through(button).await;
    }

    /// Clicks `element` and waits until the page it leads to has loaded:
    /// chromedriver's click may return before the navigation it starts.
    async fn click_through(&self, element: fantoccini::elements::Element) {
        let old = self.client.find(Locator::Css("html")).await.unwrap();
        element.click().await.unwrap();
        let mut gone = false;
        for _ in 0..300 {
            // Any error means the old document is no longer there.
            if old.tag_name().await.is_err() {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(gone, "the click led nowhere");
        for _ in 0..300 {
            let state = self
                .client
                .execute("return document.readyState", vec![])
                .await;
            if matches!(state, Ok(serde_json::Value::String(s)) if s == "complete") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the page never finished loading");
    }

    /// The path and query of the current page.
    async fn location(&self) -> String {
        let url = self.client.current_url().await.unwrap();
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        }
    }

    async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Chrome {
    fn drop(&mut self) {
        if let Some(pid) = self.driver.id() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Signs up, follows the mailed link and signs in, all through the pages.
async fn join(chrome: &Chrome, app: &TestApp, sink: &SmtpSink, email: &str) {
    let base = app.base_url();
    chrome.goto(&format!("{base}/")).await;
    let link = chrome
        .client
        .find(Locator::LinkText("Sign up"))
        .await
        .unwrap();
    chrome.click_through(link).await;
    assert_eq!(chrome.location().await, "/auth/signup");
    chrome
        .submit("main form", &[("email", email), ("password", PASSWORD)])
        .await;
    assert!(chrome.main_text().await.contains("Check your inbox"));
    let link = sink.next().await.token_for("/auth/verify-email").unwrap();
    chrome
        .goto(&format!("{base}/auth/verify-email?token={link}"))
        .await;
    chrome.submit("main form", &[]).await;
    let text = chrome.main_text().await;
    assert!(text.contains("Address confirmed"), "{text}");
    // A members-only page sends the signed-out browser to sign in, and back.
    chrome.goto(&format!("{base}/members")).await;
    assert_eq!(chrome.location().await, "/auth/login?next=%2Fmembers");
    chrome
        .submit("main form", &[("email", email), ("password", PASSWORD)])
        .await;
    assert_eq!(chrome.location().await, "/members");
}

hearth::db_tests! {
    async fn a_browser_joins_signs_in_and_out_without_any_script(backend) {
        let Some(chrome) = Chrome::start().await else { return };
        let sink = SmtpSink::start().await;
        let Some(app) = crate::spawn_site(backend, &sink, &[]).await else { return };
        join(&chrome, &app, &sink, "ana@example.com").await;
        let text = chrome.main_text().await;
        assert!(text.contains("pancake has 1 member(s)"), "{text}");
        // The account pages run no script of their own: the one script is
        // the header's live alert count, from a file, and the forms above
        // worked without it.
        let scripts = chrome
            .client
            .execute("return Array.from(document.scripts).map(s => s.getAttribute('src'))", vec![])
            .await
            .unwrap();
        assert_eq!(scripts, serde_json::json!(["/static/alerts.js"]));
        // The session cookie is there, HttpOnly and SameSite=Lax, and out of
        // reach of page script.
        let cookies = chrome.client.get_all_cookies().await.unwrap();
        let session = cookies.iter().find(|c| c.name() == "hearth_session").expect("session cookie");
        assert_eq!(session.http_only(), Some(true));
        assert_eq!(format!("{:?}", session.same_site()), "Some(Lax)");
        let seen = chrome.client.execute("return document.cookie", vec![]).await.unwrap();
        assert!(!seen.as_str().unwrap_or_default().contains("hearth_session"), "{seen}");
        // My account, then sign out with the header's button.
        let link = chrome.client.find(Locator::LinkText("ana@example.com")).await.unwrap();
        chrome.click_through(link).await;
        assert_eq!(chrome.location().await, "/account");
        assert!(chrome.main_text().await.contains("ana@example.com"));
        chrome.submit("header form", &[]).await;
        assert_eq!(chrome.location().await, "/");
        chrome.goto(&format!("{}/account", app.base_url())).await;
        assert_eq!(chrome.location().await, "/auth/login?next=%2Faccount");
        chrome.close().await;
    }

    async fn a_hostile_notice_stays_text_live_and_on_reload(backend) {
        let Some(chrome) = Chrome::start().await else { return };
        let sink = SmtpSink::start().await;
        let Some(app) = crate::spawn_site(backend, &sink, &["root@example.com"]).await else { return };
        join(&chrome, &app, &sink, "root@example.com").await;
        let base = app.base_url();
        // The home page stays open in one tab; its script adds notices as
        // they stream in.
        chrome.goto(&format!("{base}/")).await;
        let home = chrome.client.window().await.unwrap();
        // Posting before the stream is open would miss the live update.
        chrome
            .client
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css("#notices[data-live=open]"))
            .await
            .unwrap();
        let admin = chrome.client.new_window(true).await.unwrap();
        chrome.client.switch_to_window(admin.handle).await.unwrap();
        chrome.goto(&format!("{base}/admin")).await;
        let payload = "<img src=x onerror=\"document.title='pwned'\"><script>document.title='pwned'</script>";
        chrome.submit("main form", &[("title", "<b>bold?</b>"), ("body", payload)]).await;
        assert!(chrome.main_text().await.contains("on its way"));
        chrome.client.switch_to_window(home).await.unwrap();
        // Once live (the script's textContent), once server-rendered.
        for how in ["live", "reloaded"] {
            let mut text = String::new();
            for _ in 0..100 {
                text = chrome.client.find(Locator::Id("notices")).await.unwrap().text().await.unwrap();
                if text.contains("onerror") {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert!(text.contains(payload), "{how}: shown as text: {text}");
            assert!(text.contains("<b>bold?</b>"), "{how}: {text}");
            let injected = chrome
                .client
                .execute("return document.querySelectorAll('#notices img, #notices script, #notices b').length", vec![])
                .await
                .unwrap();
            assert_eq!(injected, serde_json::json!(0), "{how}");
            assert_ne!(chrome.client.title().await.unwrap(), "pwned", "{how}");
            chrome.client.refresh().await.unwrap();
        }
        chrome.close().await;
    }

    async fn a_foreign_page_cannot_post_with_the_visitors_cookie(backend) {
        let Some(chrome) = Chrome::start().await else { return };
        let sink = SmtpSink::start().await;
        let Some(app) = crate::spawn_site(backend, &sink, &[]).await else { return };
        join(&chrome, &app, &sink, "ana@example.com").await;
        // Another port on the same host is another origin but the same
        // site, so SameSite=Lax still sends the cookie: only the CSRF token
        // and the Origin check stand in the way.
        let evil = evil_page(&format!("{}/account/logout-everywhere", app.base_url())).await;
        chrome.goto(&evil).await;
        chrome.submit("form", &[]).await;
        let text = chrome.client.source().await.unwrap();
        assert!(text.contains("another site"), "refused: {text}");
        // Still signed in.
        chrome.goto(&format!("{}/members", app.base_url())).await;
        assert_eq!(chrome.location().await, "/members");
        chrome.close().await;
    }
}

/// Serves one page on another port: a form that posts to `target`, as an
/// attacker's site would (with a forged `csrf_token` field).
async fn evil_page(target: &str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let html = format!(
        "<!doctype html><title>win a prize</title><form method=\"post\" action=\"{target}\">\
         <input type=\"hidden\" name=\"csrf_token\" value=\"guessed\">\
         <button type=\"submit\">Claim</button></form>"
    );
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf).await;
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{html}",
                html.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        }
    });
    url
}
