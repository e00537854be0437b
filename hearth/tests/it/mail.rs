//! The flows that go through mail, end to end over real SMTP: the app's
//! job queue hands each message to lettre, which delivers it to an SMTP
//! server on loopback that the test reads. Also the development outbox.

use std::time::Duration;

use hearth::testing::{Backend, SmtpSink, TestApp};
use hearth::{sqlx, with_db};
use reqwest::StatusCode;
use serde_json::json;

use crate::accounts::{Browser, PASSWORD, count};
use crate::probe::app;

async fn spawn_with_mail(backend: Backend) -> Option<(TestApp, SmtpSink)> {
    let sink = SmtpSink::start().await;
    let app = TestApp::spawn_with(&app(), backend, |c| {
        sink.configure(c);
        c.mail.from = Some("probe <noreply@probe.example>".into());
        c.public_url = Some("https://probe.example".into());
        c.jobs.poll_interval = hearth::config::Duration::from_millis(100);
    })
    .await?;
    Some((app, sink))
}

/// Every job payload in every state, joined.
async fn all_payloads(app: &TestApp) -> String {
    let mut all = Vec::new();
    for table in ["hearth_job_pending", "hearth_job_active", "hearth_job_dead"] {
        let sql = format!("SELECT payload FROM {table}");
        let rows: Vec<String> = with_db!(app.state().db(), pool => sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_all(pool).await).unwrap();
        all.extend(rows);
    }
    all.join("\n")
}

/// Waits until a job called `name` has failed at least once and waits for
/// its retry.
async fn failed_once(app: &TestApp, name: &str) {
    for _ in 0..400 {
        let n: i64 = with_db!(app.state().db(), pool => sqlx::query_scalar("SELECT count(*) FROM hearth_job_pending WHERE name = $1 AND attempts >= 1").bind(name).fetch_one(pool).await).unwrap();
        if n > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{name} never failed: {}", all_payloads(app).await);
}

hearth::db_tests! {
    async fn while_smtp_is_down_no_job_holds_a_link_that_works(backend) {
        // A port nothing listens on: every delivery is refused.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let Some(app) = TestApp::spawn_with(&app(), backend, |c| {
            c.mail.transport = hearth::mail::Transport::Smtp;
            c.mail.smtp.host = "127.0.0.1".into();
            c.mail.smtp.port = Some(closed.port());
            c.mail.smtp.security = hearth::mail::SmtpSecurity::None;
            c.jobs.poll_interval = hearth::config::Duration::from_millis(100);
        }).await else { return };
        let mut b = Browser::new(&app);
        b.start().await;
        b.sign_up("ana@example.com", PASSWORD).await;
        assert_eq!(b.post("/api/auth/recover", json!({"email": "ana@example.com"})).await.status, StatusCode::ACCEPTED);
        failed_once(&app, "hearth.auth.signup_mail").await;
        failed_once(&app, "hearth.auth.recover_mail").await;
        // Pending, retrying: the jobs name the address, never a link, and
        // the tokens of the links that could not go out were taken back.
        let payloads = all_payloads(&app).await;
        assert!(!payloads.contains("token="), "{payloads}");
        assert!(payloads.contains("ana@example.com"), "{payloads}");
        assert_eq!(count(&app, "SELECT count(*) FROM hearth_token WHERE kind IN ('reset', 'verify_email')").await, 0);
        app.stop().await;
    }

    async fn a_dead_mail_keeps_its_recipient_and_subject_but_not_its_body(backend) {
        let Some((app, _sink)) = spawn_with_mail(backend).await else { return };
        let mail = hearth::mail::Mail {
            // Not an address: the message can never be sent and dies at once.
            to: "not an address".into(),
            subject: "Your invitation".into(),
            text: "join at https://probe.example/invite?token=SECRETSECRET".into(),
            html: Some("<a href=\"https://probe.example/invite?token=SECRETSECRET\">join</a>".into()),
            link: Some("https://probe.example/invite?token=SECRETSECRET".into()),
        };
        let mut tx = app.state().db().begin().await.unwrap();
        hearth::mail::enqueue(app.state().jobs(), &mut tx, &mail).await.unwrap();
        tx.commit().await.unwrap();
        let mut dead = Vec::new();
        for _ in 0..400 {
            dead = with_db!(app.state().db(), pool => sqlx::query_scalar::<_, String>("SELECT payload FROM hearth_job_dead WHERE name = 'hearth.mail'").fetch_all(pool).await).unwrap();
            if !dead.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(dead.len(), 1, "the mail job did not die");
        assert!(!dead[0].contains("SECRETSECRET"), "{}", dead[0]);
        let kept: serde_json::Value = serde_json::from_str(&dead[0]).unwrap();
        assert_eq!((kept["to"].as_str(), kept["subject"].as_str(), kept["redacted"].as_bool()), (Some("not an address"), Some("Your invitation"), Some(true)));
        app.stop().await;
    }

    async fn a_listed_admin_address_grants_nothing_until_it_is_verified(backend) {
        let sink = SmtpSink::start().await;
        let Some(app) = TestApp::spawn_with(&app(), backend, |c| {
            sink.configure(c);
            c.jobs.poll_interval = hearth::config::Duration::from_millis(100);
            c.auth.admins = vec!["boss@example.com".into()];
        }).await else { return };
        // Someone who does not own the listed address signs up with it.
        let mut b = Browser::new(&app);
        b.start().await;
        b.sign_up("boss@example.com", PASSWORD).await;
        let a = b.log_in("boss@example.com", PASSWORD).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert_eq!((a.body["user"]["verified"].as_bool(), a.body["user"]["admin"].as_bool()), (Some(false), Some(false)));
        assert_eq!(b.get("/probe/admin").await.status, StatusCode::FORBIDDEN);
        assert_eq!(b.get("/metrics").await.status, StatusCode::FORBIDDEN);
        assert_eq!(b.get("/api/auth/me").await.body["user"]["admin"], false);
        // The owner follows the mailed link: now the list counts.
        let token = sink.next().await.token_for("/auth/verify-email").unwrap();
        let a = b.post("/api/auth/verify-email", json!({"token": token})).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert_eq!(a.body["user"]["admin"], true);
        assert_eq!(b.get("/probe/admin").await.status, StatusCode::OK);
        assert_eq!(b.get("/metrics").await.status, StatusCode::OK);
        app.stop().await;
    }

    async fn a_password_change_or_logging_out_everywhere_revokes_reset_links(backend) {
        let Some((app, sink)) = spawn_with_mail(backend).await else { return };
        let mut b = Browser::signed_in(&app, "ana@example.com").await;
        let _verification = sink.next().await;
        // A link asked for, then the password changed: the link is dead.
        assert_eq!(b.post("/api/auth/recover", json!({"email": "ana@example.com"})).await.status, StatusCode::ACCEPTED);
        let link = sink.next().await.token_for("/auth/reset").unwrap();
        let a = b.post("/api/auth/change-password", json!({"password": PASSWORD, "new_password": "a new long passphrase"})).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        let a = b.post("/api/auth/reset", json!({"token": link, "new_password": "the thief's passphrase"})).await;
        assert_eq!((a.status, a.code()), (StatusCode::BAD_REQUEST, "invalid_token"));
        // A link asked for, then every session ended: the link is dead too.
        assert_eq!(b.post("/api/auth/recover", json!({"email": "ana@example.com"})).await.status, StatusCode::ACCEPTED);
        let link = sink.next().await.token_for("/auth/reset").unwrap();
        assert_eq!(b.post("/api/auth/logout-everywhere", json!({})).await.status, StatusCode::OK);
        let mut thief = Browser::new(&app);
        thief.start().await;
        let a = thief.post("/api/auth/reset", json!({"token": link, "new_password": "the thief's passphrase"})).await;
        assert_eq!(a.code(), "invalid_token");
        assert_eq!(count(&app, "SELECT count(*) FROM hearth_token WHERE kind = 'reset'").await, 0);
        let mut owner = Browser::new(&app);
        owner.start().await;
        assert_eq!(owner.log_in("ana@example.com", "a new long passphrase").await.status, StatusCode::OK);
        app.stop().await;
    }

    async fn signup_mails_a_link_that_verifies_the_address(backend) {
        let Some((app, sink)) = spawn_with_mail(backend).await else { return };
        let mut b = Browser::new(&app);
        b.start().await;
        b.sign_up("ana@example.com", PASSWORD).await;
        let mail = sink.next().await;
        assert_eq!(mail.to, ["ana@example.com"]);
        assert_eq!(mail.from, "noreply@probe.example");
        assert_eq!(mail.header("Subject").unwrap(), "Confirm your address for probe");
        assert!(mail.data.contains("multipart/alternative"), "text and HTML: {}", mail.data);
        assert!(mail.data.contains("https://probe.example/auth/verify-email?token="), "{}", mail.data);
        let token = mail.token_for("/auth/verify-email").unwrap();
        assert_eq!(token.len(), hearth::auth::tokens::TOKEN_LEN);
        // Signed in but not verified yet.
        assert_eq!(b.log_in("ana@example.com", PASSWORD).await.status, StatusCode::OK);
        assert_eq!(b.get("/probe/verified").await.status, StatusCode::FORBIDDEN);
        let before = b.cookie().cloned();
        let a = b.post("/api/auth/verify-email", json!({"token": token})).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert_eq!(a.body["user"]["verified"], true);
        // Verifying raised the session's rights, so it was replaced.
        assert_ne!(b.cookie(), before.as_ref());
        assert_eq!(b.get("/probe/verified").await.status, StatusCode::OK);
        // The link works once.
        let a = b.post("/api/auth/verify-email", json!({"token": token})).await;
        assert_eq!((a.status, a.code(), a.field()), (StatusCode::BAD_REQUEST, "invalid_token", "token"));
        // A verified account asking again gets nothing new.
        let a = b.post("/api/auth/resend-verification", json!({})).await;
        assert_eq!(a.status, StatusCode::ACCEPTED);
        assert!(sink.within(Duration::from_millis(1500)).await.is_none());
        app.stop().await;
    }

    async fn a_verification_link_works_from_another_browser_and_can_be_resent(backend) {
        let Some((app, sink)) = spawn_with_mail(backend).await else { return };
        let mut b = Browser::new(&app);
        b.start().await;
        b.sign_up("ana@example.com", PASSWORD).await;
        let first = sink.next().await.token_for("/auth/verify-email").unwrap();
        b.log_in("ana@example.com", PASSWORD).await;
        let a = b.post("/api/auth/resend-verification", json!({})).await;
        assert_eq!(a.status, StatusCode::ACCEPTED);
        let second = sink.next().await.token_for("/auth/verify-email").unwrap();
        assert_ne!(first, second);
        // Opened on a phone with no session: verified, not signed in there.
        let mut phone = Browser::new(&app);
        phone.start().await;
        let a = phone.post("/api/auth/verify-email", json!({"token": second})).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert_eq!((a.body["verified"].clone(), a.body["signed_in"].clone()), (json!(true), json!(false)));
        assert_eq!(b.get("/probe/verified").await.status, StatusCode::OK);
        // Junk and expired tokens.
        for junk in ["", "x", "' OR 1=1 --", &"A".repeat(43)] {
            let a = phone.post("/api/auth/verify-email", json!({"token": junk})).await;
            assert_eq!(a.code(), "invalid_token", "{junk}");
        }
        with_db!(app.state().db(), pool => sqlx::query("UPDATE hearth_token SET expires_at = 1 WHERE kind = 'verify_email'").execute(pool).await.map(|_| ())).unwrap();
        assert_eq!(phone.post("/api/auth/verify-email", json!({"token": first})).await.code(), "invalid_token");
        app.stop().await;
    }

    async fn signing_up_with_a_taken_address_mails_its_owner_instead(backend) {
        let Some((app, sink)) = spawn_with_mail(backend).await else { return };
        let mut b = Browser::new(&app);
        b.start().await;
        b.sign_up("ana@example.com", PASSWORD).await;
        sink.next().await;
        b.sign_up("ANA@example.com", "some other passphrase").await;
        let mail = sink.next().await;
        assert_eq!(mail.to, ["ana@example.com"]);
        assert_eq!(mail.header("Subject").unwrap(), "You already have a probe account");
        assert!(mail.token_for("/auth/verify-email").is_none());
        assert!(mail.data.contains("https://probe.example/auth/recover"));
        // The password did not change.
        assert_eq!(b.log_in("ana@example.com", PASSWORD).await.status, StatusCode::OK);
        app.stop().await;
    }

    async fn a_forgotten_password_is_reset_through_the_emailed_link(backend) {
        let Some((app, sink)) = spawn_with_mail(backend).await else { return };
        let mut owner = Browser::new(&app);
        owner.start().await;
        owner.sign_up("ana@example.com", PASSWORD).await;
        sink.next().await;
        owner.log_in("ana@example.com", PASSWORD).await;
        let mut b = Browser::new(&app);
        b.start().await;
        // Unknown and known addresses get the same answer; only one gets mail.
        let unknown = b.post("/api/auth/recover", json!({"email": "nobody@example.com"})).await;
        let known = b.post("/api/auth/recover", json!({"email": "Ana@Example.com"})).await;
        assert_eq!((unknown.status, &unknown.body), (known.status, &known.body));
        assert_eq!(known.status, StatusCode::ACCEPTED);
        let mail = sink.next().await;
        assert_eq!(mail.to, ["ana@example.com"]);
        assert_eq!(mail.header("Subject").unwrap(), "Reset your probe password");
        let token = mail.token_for("/auth/reset").unwrap();
        assert!(sink.within(Duration::from_millis(1500)).await.is_none(), "no mail for the unknown address");
        // A refused password does not use the link up.
        let a = b.post("/api/auth/reset", json!({"token": token, "new_password": "12345678"})).await;
        assert_eq!((a.status, a.field()), (StatusCode::UNPROCESSABLE_ENTITY, "new_password"));
        let a = b.post("/api/auth/reset", json!({"token": token, "new_password": "a brand new passphrase"})).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        // Every session ended; the old password is gone; the new one works.
        assert_eq!(owner.get("/api/auth/me").await.code(), "session_expired");
        assert_eq!(b.log_in("ana@example.com", PASSWORD).await.status, StatusCode::UNAUTHORIZED);
        let a = b.log_in("ana@example.com", "a brand new passphrase").await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.body["user"]["verified"], true, "the link proved the address");
        // Used once only.
        let a = b.post("/api/auth/reset", json!({"token": token, "new_password": "yet another passphrase"})).await;
        assert_eq!((a.status, a.code()), (StatusCode::BAD_REQUEST, "invalid_token"));
        // An expired link is refused, and a new request replaces an older link.
        b.post("/api/auth/recover", json!({"email": "ana@example.com"})).await;
        let older = sink.next().await.token_for("/auth/reset").unwrap();
        b.post("/api/auth/recover", json!({"email": "ana@example.com"})).await;
        let newer = sink.next().await.token_for("/auth/reset").unwrap();
        let a = b.post("/api/auth/reset", json!({"token": older, "new_password": "yet another passphrase"})).await;
        assert_eq!(a.code(), "invalid_token");
        with_db!(app.state().db(), pool => sqlx::query("UPDATE hearth_token SET expires_at = 1 WHERE kind = 'reset'").execute(pool).await.map(|_| ())).unwrap();
        let a = b.post("/api/auth/reset", json!({"token": newer, "new_password": "yet another passphrase"})).await;
        assert_eq!(a.code(), "invalid_token");
        app.stop().await;
    }

    async fn recovery_requests_are_rate_limited_per_address(backend) {
        let Some((app, sink)) = spawn_with_mail(backend).await else { return };
        let _ = &sink;
        let mut b = Browser::new(&app);
        b.start().await;
        for _ in 0..5 {
            assert_eq!(b.post("/api/auth/recover", json!({"email": "x@example.com"})).await.status, StatusCode::ACCEPTED);
        }
        let a = b.post("/api/auth/recover", json!({"email": "x@example.com"})).await;
        assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(a.headers.get("retry-after").is_some());
        // Bad input on these routes names the field.
        for (path, body, field) in [
            ("/api/auth/recover", json!({}), "email"),
            ("/api/auth/recover", json!({"email": "nope"}), "email"),
            ("/api/auth/reset", json!({"new_password": PASSWORD}), "token"),
            ("/api/auth/reset", json!({"token": 5, "new_password": PASSWORD}), "token"),
            ("/api/auth/reset", json!({"token": "x"}), "new_password"),
            ("/api/auth/verify-email", json!({"token": ["x"]}), "token"),
        ] {
            let a = b.post(path, body.clone()).await;
            assert_eq!((a.status, a.field()), (StatusCode::UNPROCESSABLE_ENTITY, field), "{path} {body}");
        }
        app.stop().await;
    }

    async fn login_costs_the_same_hashing_with_or_without_an_account(backend) {
        let Some(app) = TestApp::spawn(&app(), backend).await else { return };
        let _ = Browser::signed_in(&app, "ana@example.com").await;
        let passwords = app.state().auth().passwords();
        let mut b = Browser::new(&app);
        b.start().await;
        // The first unknown address also makes the dummy hash; count after it.
        b.log_in("warm@example.com", "whatever whatever").await;
        let n0 = passwords.computed();
        b.log_in("ana@example.com", "wrong wrong wrong").await;
        let known = passwords.computed() - n0;
        let n1 = passwords.computed();
        b.log_in("nobody@example.com", "wrong wrong wrong").await;
        let unknown = passwords.computed() - n1;
        assert_eq!((known, unknown), (1, 1));
        // Signup hashes whether or not the address is taken.
        let n2 = passwords.computed();
        b.sign_up("ana@example.com", PASSWORD).await;
        let taken = passwords.computed() - n2;
        let n3 = passwords.computed();
        b.sign_up("new@example.com", PASSWORD).await;
        let free = passwords.computed() - n3;
        assert_eq!((taken, free), (1, 1));
        app.stop().await;
    }

    async fn in_development_mail_goes_to_the_outbox(backend) {
        let Some(app) = TestApp::spawn_with(&app(), backend, |c| {
            c.jobs.poll_interval = hearth::config::Duration::from_millis(100);
        }).await else { return };
        assert!(app.state().mailer().is_outbox());
        let mut b = Browser::new(&app);
        b.start().await;
        b.sign_up("ana@example.com", PASSWORD).await;
        let outbox = app.state().config().data_dir.join("outbox");
        let mut found = None;
        for _ in 0..300 {
            if let Ok(mut dir) = std::fs::read_dir(&outbox)
                && let Some(Ok(entry)) = dir.next()
            {
                found = Some(std::fs::read_to_string(entry.path()).unwrap());
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let text = found.expect("no message in the outbox");
        assert!(text.contains("To: ana@example.com"), "{text}");
        assert!(text.contains("/auth/verify-email?token="), "{text}");
        assert_eq!(count(&app, "SELECT count(*) FROM hearth_job_dead WHERE name = 'hearth.mail'").await, 0);
        app.stop().await;
    }
}

#[tokio::test]
async fn the_mailer_logs_in_when_smtp_wants_it() {
    let sink = SmtpSink::start_with_login("mailer", "s3cret pass").await;
    let mut config = hearth::Config::default();
    sink.configure(&mut config);
    let mail = hearth::mail::Mail {
        to: "ops@example.com".into(),
        subject: "hello".into(),
        text: "body".into(),
        html: None,
        link: None,
    };
    let mailer = hearth::mail::Mailer::new(&config, "probe").unwrap();
    assert_eq!(
        mailer.send_now(&mail).await.unwrap(),
        hearth::mail::Delivery::Sent
    );
    let got = sink.next().await;
    assert_eq!(got.user.as_deref(), Some("mailer"));
    assert_eq!(got.to, ["ops@example.com"]);
    // A wrong password is the server's 535, reported, and nothing is delivered.
    config.mail.smtp.password = Some(hearth::config::Secret::new("wrong"));
    let mailer = hearth::mail::Mailer::new(&config, "probe").unwrap();
    let err = mailer.send_now(&mail).await.unwrap_err().to_string();
    assert!(
        err.contains("535") || err.contains("authentication"),
        "{err}"
    );
    assert!(sink.within(Duration::from_millis(300)).await.is_none());
}
