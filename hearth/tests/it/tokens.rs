//! The token store on both engines: issue inside a transaction, look up,
//! use up once (also under a race), expiry, revocation, purging, and what
//! the table keeps.

use std::time::Duration;

use hearth::auth::{Found, NewToken, Tokens};
use hearth::testing::TestApp;
use hearth::{sqlx, with_db};

use crate::probe::app;

async fn issue(app: &TestApp, new: NewToken) -> (String, hearth::auth::Token) {
    let tokens = app.state().tokens();
    let mut tx = app.state().db().begin().await.unwrap();
    let (secret, token) = tokens.issue(&mut tx, new).await.unwrap();
    tx.commit().await.unwrap();
    (secret.expose().to_owned(), token)
}

hearth::db_tests! {
    async fn tokens_are_found_by_secret_and_kind_only(backend) {
        let Some(app) = TestApp::spawn(&app(), backend).await else { return };
        let tokens = app.state().tokens();
        let (secret, token) = issue(&app, NewToken::new("session", Duration::from_secs(60)).owner("42").data("x")).await;
        assert_eq!(secret.len(), hearth::auth::tokens::TOKEN_LEN);
        assert_eq!(token.owner.as_deref(), Some("42"));
        assert_eq!(tokens.find("session", &secret).await.unwrap(), Found::Valid(token.clone()));
        // Another kind, a changed character, garbage: all simply missing.
        assert_eq!(tokens.find("reset", &secret).await.unwrap(), Found::Missing);
        let mut tampered = secret.clone().into_bytes();
        tampered[10] = if tampered[10] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert_eq!(tokens.find("session", &tampered).await.unwrap(), Found::Missing);
        for junk in ["", "x", "' OR 1=1 --", &"é".repeat(43)] {
            assert_eq!(tokens.find("session", junk).await.unwrap(), Found::Missing, "{junk}");
        }
        // Only the hash is stored.
        let stored: Vec<String> = with_db!(app.state().db(), pool => sqlx::query_scalar("SELECT hash FROM hearth_token").fetch_all(pool).await).unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].len(), 64);
        assert!(!stored[0].contains(&secret));
        app.stop().await;
    }

    async fn a_rolled_back_token_never_existed(backend) {
        let Some(app) = TestApp::spawn(&app(), backend).await else { return };
        let tokens = app.state().tokens();
        let mut tx = app.state().db().begin().await.unwrap();
        let (secret, _) = tokens.issue(&mut tx, NewToken::new("reset", Duration::from_secs(60))).await.unwrap();
        tx.rollback().await.unwrap();
        assert_eq!(tokens.find("reset", secret.expose()).await.unwrap(), Found::Missing);
        app.stop().await;
    }

    async fn single_use_tokens_are_used_exactly_once_even_in_a_race(backend) {
        let Some(app) = TestApp::spawn(&app(), backend).await else { return };
        let tokens = app.state().tokens().clone();
        let (secret, token) = issue(&app, NewToken::new("reset", Duration::from_secs(60)).single_use()).await;
        assert!(token.single_use);
        let uses = (0..8).map(|_| {
            let (tokens, db, secret) = (tokens.clone(), app.state().db().clone(), secret.clone());
            tokio::spawn(async move {
                let mut tx = db.begin().await.unwrap();
                let found = tokens.consume(&mut tx, "reset", &secret).await.unwrap();
                tx.commit().await.unwrap();
                found
            })
        });
        let mut valid = 0;
        for u in uses {
            match u.await.unwrap() {
                Found::Valid(t) => { assert_eq!(t.id, token.id); valid += 1 }
                Found::Missing => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(valid, 1);
        assert_eq!(tokens.find("reset", &secret).await.unwrap(), Found::Missing);

        // A use inside a transaction that rolls back leaves the token usable.
        let (secret, _) = issue(&app, NewToken::new("reset", Duration::from_secs(60)).single_use()).await;
        let mut tx = app.state().db().begin().await.unwrap();
        assert!(matches!(tokens.consume(&mut tx, "reset", &secret).await.unwrap(), Found::Valid(_)));
        tx.rollback().await.unwrap();
        assert!(matches!(tokens.find("reset", &secret).await.unwrap(), Found::Valid(_)));
        app.stop().await;
    }

    async fn expired_tokens_are_told_apart_and_purged(backend) {
        let Some(app) = TestApp::spawn(&app(), backend).await else { return };
        let tokens: &Tokens = app.state().tokens();
        let (old, old_token) = issue(&app, NewToken::new("session", Duration::ZERO)).await;
        let (fresh, fresh_token) = issue(&app, NewToken::new("session", Duration::from_secs(60))).await;
        assert_eq!(tokens.find("session", &old).await.unwrap(), Found::Expired(old_token.clone()));
        // Using up an expired single-use token deletes it and does not count as valid.
        let (gone, _) = issue(&app, NewToken::new("verify_email", Duration::ZERO).single_use()).await;
        let mut tx = app.state().db().begin().await.unwrap();
        assert!(matches!(tokens.consume(&mut tx, "verify_email", &gone).await.unwrap(), Found::Expired(_)));
        tx.commit().await.unwrap();
        // Sliding: an expired session brought forward is valid again; a gone one is not.
        assert!(tokens.extend(fresh_token.id, fresh_token.expires_at + 1000).await.unwrap());
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
        assert_eq!(tokens.purge_expired(now).await.unwrap(), 1);
        assert_eq!(tokens.find("session", &old).await.unwrap(), Found::Missing);
        assert!(!tokens.extend(old_token.id, now + 1000).await.unwrap());
        match tokens.find("session", &fresh).await.unwrap() {
            Found::Valid(t) => assert_eq!(t.expires_at, fresh_token.expires_at + 1000),
            other => panic!("{other:?}"),
        }
        app.stop().await;
    }

    async fn revoking_one_or_all_of_an_owners_tokens(backend) {
        let Some(app) = TestApp::spawn(&app(), backend).await else { return };
        let tokens = app.state().tokens();
        let day = Duration::from_secs(86_400);
        let (a, a_token) = issue(&app, NewToken::new("session", day).owner("7")).await;
        let (b, _) = issue(&app, NewToken::new("session", day).owner("7")).await;
        let (c, _) = issue(&app, NewToken::new("session", day).owner("8")).await;
        let (d, _) = issue(&app, NewToken::new("reset", day).owner("7")).await;
        let mut tx = app.state().db().begin().await.unwrap();
        assert!(tokens.revoke(&mut tx, a_token.id).await.unwrap());
        assert!(!tokens.revoke(&mut tx, a_token.id).await.unwrap());
        tx.commit().await.unwrap();
        assert_eq!(tokens.find("session", &a).await.unwrap(), Found::Missing);
        assert!(matches!(tokens.find("session", &b).await.unwrap(), Found::Valid(_)));
        let mut tx = app.state().db().begin().await.unwrap();
        assert_eq!(tokens.revoke_owned(&mut tx, "session", "7").await.unwrap(), 1);
        tx.commit().await.unwrap();
        assert_eq!(tokens.find("session", &b).await.unwrap(), Found::Missing);
        // Other owners and other kinds are untouched.
        assert!(matches!(tokens.find("session", &c).await.unwrap(), Found::Valid(_)));
        assert!(matches!(tokens.find("reset", &d).await.unwrap(), Found::Valid(_)));
        app.stop().await;
    }

    async fn housekeeping_purges_expired_tokens_and_spent_rate_counters(backend) {
        let Some(app) = TestApp::spawn_with(&app(), backend, |c| {
            c.jobs.poll_interval = hearth::config::Duration::from_millis(100);
        }).await else { return };
        let tokens = app.state().tokens();
        let (old, _) = issue(&app, NewToken::new("session", Duration::ZERO)).await;
        let (fresh, _) = issue(&app, NewToken::new("session", Duration::from_secs(60))).await;
        // One counter from long ago, one current.
        let limiter = app.state().auth().limiter();
        let rate = hearth::auth::Rate::new(5, hearth::config::Duration::from_secs(60));
        limiter.hit("test:old", rate).await.unwrap();
        limiter.hit("test:new", rate).await.unwrap();
        with_db!(app.state().db(), pool => sqlx::query("UPDATE hearth_rate_limit SET window_start = 1 WHERE key = 'test:old'").execute(pool).await.map(|_| ())).unwrap();
        app.state().jobs().enqueue_now(hearth::jobs::HOUSEKEEPING.job(&())).await.unwrap();
        // The job purges tokens, then counters; wait for both.
        let mut purged = false;
        let mut keys: Vec<String> = Vec::new();
        for _ in 0..300 {
            keys = with_db!(app.state().db(), pool => sqlx::query_scalar("SELECT key FROM hearth_rate_limit ORDER BY key").fetch_all(pool).await).unwrap();
            if tokens.find("session", &old).await.unwrap() == Found::Missing && keys.len() == 1 {
                purged = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(purged, "housekeeping did not purge the expired token and the old counter");
        assert!(matches!(tokens.find("session", &fresh).await.unwrap(), Found::Valid(_)));
        assert_eq!(keys, ["test:new"]);
        app.stop().await;
    }
}
