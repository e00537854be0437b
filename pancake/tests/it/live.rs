//! Live notices end to end: the publish job, the SSE stream and long poll,
//! the nightly cleanup, and the admin route's guard.

use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use hearth::jobs::{JobError, NewJob};
use hearth::testing::TestApp;
use hearth::{sqlx, with_db};
use pancake::home::live::{CLEANUP, NewNotice, PUBLISH};
use reqwest::StatusCode;
use serde_json::Value;

use crate::client;

/// Reads the first SSE `data:` line of a streaming response.
async fn first_event(res: reqwest::Response) -> Value {
    let mut body = res.bytes_stream();
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(data) = text.lines().find_map(|l| l.strip_prefix("data: ")) {
            return serde_json::from_str(data).unwrap();
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, body.next()).await {
            Ok(Some(chunk)) => text.push_str(&String::from_utf8_lossy(&chunk.unwrap())),
            _ => panic!("no event arrived: {text}"),
        }
    }
}

hearth::db_tests! {
    async fn a_published_notice_reaches_open_streams_and_the_page(backend) {
        let Some(app) = TestApp::spawn(&pancake::app(), backend).await else { return };
        let c = client();
        let res = c.get(app.url("/api/notices/live")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let cursor: Value = c.get(app.url("/api/notices/poll")).send().await.unwrap().json().await.unwrap();
        let notice = NewNotice::new("Road closed", "<b>Main</b> street", None).unwrap();
        app.state().jobs().enqueue_now(PUBLISH.job(&notice)).await.unwrap();
        let event = first_event(res).await;
        assert_eq!(event["notice"]["title"], "Road closed");
        assert_eq!(event["total"], 2, "the seeded welcome notice plus this one: {event}");
        // The long-poll fallback sees it too.
        let after = cursor["last_id"].as_i64().unwrap();
        let polled: Value = c.get(app.url(&format!("/api/notices/poll?after={after}"))).send().await.unwrap().json().await.unwrap();
        let payload: Value = serde_json::from_str(polled["messages"][0]["payload"].as_str().unwrap()).unwrap();
        assert_eq!(payload["notice"]["title"], "Road closed");
        // And the page, escaped.
        let page = c.get(app.url("/")).send().await.unwrap().text().await.unwrap();
        assert!(page.contains("Road closed") && page.contains("&#60;b&#62;Main&#60;/b&#62; street"), "{page}");
        assert!(page.contains("/static/live.js"));
        let js = c.get(app.url("/static/live.js")).send().await.unwrap();
        assert_eq!(js.headers()["content-type"], "text/javascript");
        assert!(js.text().await.unwrap().contains("textContent"));
        app.stop().await;
    }

    async fn bad_notices_are_refused_at_enqueue_and_the_admin_route_is_guarded(backend) {
        let Some(app) = TestApp::spawn(&pancake::app(), backend).await else { return };
        let jobs = app.state().jobs();
        let cases = [
            (r#"{"title":"","body":"x"}"#, "the title must not be empty"),
            (r#"{"title":"t"}"#, "missing field `body`"),
            (r#"{"title":"t","body":"b","color":"red"}"#, "unknown field `color`"),
        ];
        for (payload, expected) in cases {
            let err = jobs.enqueue_now(NewJob::from_json("home.publish", payload)).await.unwrap_err();
            assert!(matches!(err, JobError::InvalidPayload { .. }), "{err}");
            assert!(err.to_string().contains(expected), "{err}");
        }
        let long = format!(r#"{{"title":"{}","body":"b"}}"#, "t".repeat(201));
        let err = jobs.enqueue_now(NewJob::from_json("home.publish", long)).await.unwrap_err();
        assert!(err.to_string().contains("at most 200"), "{err}");
        assert!(jobs.stats().await.unwrap().iter().all(|q| q.pending == 0), "nothing was enqueued");
        let res = client().post(app.url("/api/notices")).json(&serde_json::json!({"title":"t","body":"b"})).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "admins only");
        app.stop().await;
    }

    async fn the_cleanup_job_removes_expired_notices_and_is_scheduled_nightly(backend) {
        let Some(app) = TestApp::spawn(&pancake::app(), backend).await else { return };
        let db = app.state().db().clone();
        with_db!(&db, pool => sqlx::query("INSERT INTO home_notice (title, body, created_at, expires_at) VALUES ('old', 'gone soon', 0, 1), ('new', 'stays', 0, 99999999999)")
            .execute(pool).await.map(|_| ())).unwrap();
        let jobs = app.state().jobs().clone();
        let id = jobs.enqueue_now(CLEANUP.job(&())).await.unwrap().id;
        let deadline = Instant::now() + Duration::from_secs(20);
        while !jobs.history(50).await.unwrap().iter().any(|h| h.id == id) {
            assert!(Instant::now() < deadline, "the cleanup never finished");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let titles: Vec<String> = with_db!(&db, pool => sqlx::query_scalar("SELECT title FROM home_notice ORDER BY id").fetch_all(pool).await).unwrap();
        assert_eq!(titles, ["Welcome to pancake", "new"]);
        let cron = jobs.cron_list().await.unwrap();
        let nightly = cron.iter().find(|c| c.name == "home.nightly_cleanup").expect("scheduled");
        assert_eq!(nightly.expr, "0 3 * * *");
        assert_eq!(nightly.missed, "run_once");
        assert_eq!(nightly.next_at % 86_400_000, 3 * 3_600_000, "03:00 UTC");
        app.stop().await;
    }
}
