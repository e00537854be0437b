//! Pub/sub and its delivery to browsers, on both engines: delivery only on
//! commit, delivery between two app instances, SSE with Last-Event-ID
//! resume, long polling, bad input, and recovery of a lost LISTEN connection.

use std::time::{Duration, Instant};

use axum::extract::Path;
use futures_util::StreamExt as _;
use hearth::prelude::*;
use hearth::realtime::{Message, Slot, sse};
use hearth::testing::{Backend, TestApp};
use hearth::{sqlx, with_db};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::probe::client;

struct Rt;

const PUBLISH: RouteSpec = RouteSpec::post("/rt/{channel}", Guard::Public);
const STREAM: RouteSpec = RouteSpec::get("/rt/{channel}/stream", Guard::Public);
const POLL: RouteSpec = RouteSpec::get("/rt/{channel}/poll", Guard::Public);

impl Module for Rt {
    fn spec(&self) -> ModuleSpec {
        ModuleSpec::new("rt").routes(&[PUBLISH, STREAM, POLL])
    }

    fn register(&self, ctx: &mut Context<'_>) {
        ctx.route(PUBLISH, publish);
        ctx.route(STREAM, stream);
        ctx.route(POLL, poll);
    }
}

async fn publish(
    State(state): State<AppState>,
    Path(channel): Path<String>,
    Json(body): Json<Value>,
) -> Result<Json<Value>> {
    let id = state.pubsub().publish_now(&channel, &body).await?;
    Ok(Json(json!({ "id": id })))
}

async fn stream(
    State(state): State<AppState>,
    Path(channel): Path<String>,
    last: LastEventId,
    slot: Slot,
) -> Result<axum::response::Response> {
    if !hearth::realtime::pubsub::valid_channel(&channel) {
        return Err(Error::validation("channel", "invalid channel name"));
    }
    Ok(axum::response::IntoResponse::into_response(sse::sse(
        state.pubsub(),
        &channel,
        last,
        slot,
        &state.config().realtime,
    )))
}

async fn poll(
    State(state): State<AppState>,
    Path(channel): Path<String>,
    last: LastEventId,
    slot: Slot,
) -> Result<Json<hearth::realtime::Poll>> {
    let wait = state.config().long_poll_wait();
    Ok(Json(
        sse::long_poll(state.pubsub(), &channel, last.0, wait, slot).await?,
    ))
}

fn app() -> App {
    App::new("rt", "0.0.1").module(Rt)
}

fn quick(c: &mut hearth::Config) {
    c.realtime.poll_wait = hearth::config::Duration::from_millis(300);
    c.realtime.keep_alive = hearth::config::Duration::from_millis(200);
}

/// The next message, failing the test after 20 s.
async fn next(sub: &mut hearth::realtime::Subscription) -> Message {
    tokio::time::timeout(Duration::from_secs(20), sub.next())
        .await
        .expect("a message within 20 s")
        .expect("the subscription is open")
}

/// Reads SSE events (id, data) from a streaming response until `n` arrive.
async fn read_events(res: reqwest::Response, n: usize) -> (Vec<(i64, String)>, String) {
    let mut body = res.bytes_stream();
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let events: Vec<(i64, String)> = text
            .split("\n\n")
            .filter_map(|block| {
                let id = block
                    .lines()
                    .find_map(|l| l.strip_prefix("id: "))?
                    .parse()
                    .ok()?;
                let data = block
                    .lines()
                    .find_map(|l| l.strip_prefix("data: "))?
                    .to_owned();
                Some((id, data))
            })
            .collect();
        if events.len() >= n {
            return (events, text);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, body.next()).await {
            Ok(Some(chunk)) => text.push_str(&String::from_utf8_lossy(&chunk.unwrap())),
            _ => panic!("only {} of {n} events arrived: {text}", events.len()),
        }
    }
}

hearth::db_tests! {
    async fn a_message_is_delivered_after_commit_and_never_after_rollback(backend) {
        let Some(app) = TestApp::spawn(&app(), backend).await else { return };
        let pubsub = app.state().pubsub().clone();
        let mut sub = pubsub.subscribe("news", None);
        let mut tx = app.state().db().begin().await.unwrap();
        pubsub.publish(&mut tx, "news", &json!({"n": 1})).await.unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(300), sub.next()).await.is_err(),
            "nothing may arrive before the commit"
        );
        tx.commit().await.unwrap();
        assert_eq!(next(&mut sub).await.payload, r#"{"n":1}"#);
        let mut tx = app.state().db().begin().await.unwrap();
        pubsub.publish(&mut tx, "news", &json!({"n": 2})).await.unwrap();
        tx.rollback().await.unwrap();
        pubsub.publish_now("news", &json!({"n": 3})).await.unwrap();
        assert_eq!(next(&mut sub).await.payload, r#"{"n":3}"#, "the rolled-back message never arrives");
        app.stop().await;
    }

    async fn messages_cross_between_two_app_instances(backend) {
        let Some(a) = TestApp::spawn(&app(), backend).await else { return };
        if backend == Backend::Sqlite {
            // SQLite is one process's database: delivery is in-process only.
            a.stop().await;
            return;
        }
        let b = app().start(TestApp::config(a.db())).await.unwrap();
        let mut sub = b.state().pubsub().subscribe("feed", None);
        // Let b's LISTEN connection come up before publishing.
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut got = None;
        while got.is_none() {
            assert!(Instant::now() < deadline, "b never received a message from a");
            a.state().pubsub().publish_now("feed", &json!({"from": "a"})).await.unwrap();
            got = tokio::time::timeout(Duration::from_millis(200), sub.next()).await.ok().flatten();
        }
        assert_eq!(got.unwrap().payload, r#"{"from":"a"}"#);
        // A payload too large for NOTIFY crosses too: only its id travels.
        let big = "x".repeat(20_000);
        let id = a.state().pubsub().publish_now("feed", &big).await.unwrap();
        let m = loop {
            let m = next(&mut sub).await;
            if m.id == id { break m; }
        };
        assert_eq!(m.payload.len(), 20_002);
        b.shutdown().await;
        a.stop().await;
    }

    async fn an_sse_client_receives_events_and_resumes_after_its_last_id(backend) {
        let Some(app) = TestApp::spawn_with(&app(), backend, quick).await else { return };
        let c = client();
        let res = c.get(app.url("/rt/room-1/stream")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["content-type"], "text/event-stream");
        // The stream is open: publish through HTTP and read the events.
        let mut ids = Vec::new();
        let publisher = {
            let c = c.clone();
            let url = app.url("/rt/room-1");
            // The handler subscribed before answering, so nothing published from here is missed.
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for n in 0..3 {
                    let v: Value = c.post(&url).json(&json!({"n": n})).send().await.unwrap().json().await.unwrap();
                    ids.push(v["id"].as_i64().unwrap());
                }
                ids
            })
        };
        let (events, text) = read_events(res, 3).await;
        ids.extend(publisher.await.unwrap());
        assert_eq!(events.iter().map(|e| e.0).collect::<Vec<_>>(), ids, "{text}");
        assert_eq!(events[2].1, r#"{"n":2}"#);
        // A stream first tells the browser how soon to come back, then an
        // idle one gets keep-alive comments.
        let res = c.get(app.url("/rt/quiet/stream")).send().await.unwrap();
        let mut body = res.bytes_stream();
        let mut seen = String::new();
        while !seen.contains(": keep-alive") {
            let chunk = tokio::time::timeout(Duration::from_secs(20), body.next()).await.unwrap().unwrap().unwrap();
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
        assert!(seen.starts_with("retry: 1000\n"), "{seen:?}");
        // A reconnecting browser sends Last-Event-ID and gets what came after.
        let res = c.get(app.url("/rt/room-1/stream")).header("last-event-id", ids[0].to_string()).send().await.unwrap();
        let (events, _) = read_events(res, 2).await;
        assert_eq!(events.iter().map(|e| e.0).collect::<Vec<_>>(), ids[1..]);
        app.stop().await;
    }

    async fn streams_and_long_polls_have_a_bounded_pool_of_their_own(backend) {
        let Some(app) = TestApp::spawn_with(&app(), backend, |c| {
            quick(c);
            // Clients told apart by the address a (trusted) proxy names.
            c.auth.trusted_proxies = vec!["127.0.0.0/8".into()];
            c.realtime.max_streams = 3;
            c.realtime.max_streams_per_ip = 2;
            c.realtime.poll_wait = hearth::config::Duration::from_secs(20);
            c.http.concurrency_limit = 2;
        }).await else { return };
        let c = client();
        let open = |who: &'static str| {
            c.get(app.url("/rt/room/stream")).header("x-forwarded-for", who).send()
        };
        let a1 = open("198.51.100.1").await.unwrap();
        let a2 = open("198.51.100.1").await.unwrap();
        assert_eq!((a1.status(), a2.status()), (StatusCode::OK, StatusCode::OK));
        // One address gets its share and no more.
        let a3 = open("198.51.100.1").await.unwrap();
        assert_eq!(a3.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(a3.json::<Value>().await.unwrap()["error"]["code"], "too_many_streams");
        let b = open("198.51.100.2").await.unwrap();
        assert_eq!(b.status(), StatusCode::OK);
        // The pool is full: another client is told to come back.
        let c1 = open("198.51.100.3").await.unwrap();
        assert_eq!(c1.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(c1.headers().get("retry-after").is_some());
        assert_eq!(c1.json::<Value>().await.unwrap()["error"]["code"], "too_many_streams");
        // Everything else still works.
        assert_eq!(c.get(app.url("/healthz")).send().await.unwrap().status(), StatusCode::OK);
        assert_eq!(c.get(app.url("/api/auth/csrf")).send().await.unwrap().status(), StatusCode::OK);
        // A stream that ends gives its place back.
        drop(a1);
        let mut reopened = None;
        for _ in 0..100 {
            let r = open("198.51.100.3").await.unwrap();
            if r.status() == StatusCode::OK {
                reopened = Some(r);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(reopened.is_some(), "the place of a closed stream was not given back");
        drop((a2, b, reopened));
        for _ in 0..100 {
            if app.state().streams().open() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(app.state().streams().open(), 0);

        // Long polls waiting for news hold no concurrency place: with the
        // limit at 2 and three of them parked, requests still get in.
        let last: Value = c.get(app.url("/rt/lp/poll")).send().await.unwrap().json().await.unwrap();
        let after = last["last_id"].as_i64().unwrap();
        let mut polls = Vec::new();
        for who in ["198.51.100.4", "198.51.100.5", "198.51.100.6"] {
            let req = c.get(app.url(&format!("/rt/lp/poll?after={after}"))).header("x-forwarded-for", who);
            polls.push(tokio::spawn(async move { req.send().await.unwrap().json::<Value>().await.unwrap() }));
        }
        for _ in 0..200 {
            if app.state().streams().open() == 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert_eq!(app.state().streams().open(), 3);
        for _ in 0..3 {
            assert_eq!(c.get(app.url("/api/auth/csrf")).send().await.unwrap().status(), StatusCode::OK);
        }
        // News ends the polls.
        assert_eq!(c.post(app.url("/rt/lp")).json(&json!({"n": 1})).send().await.unwrap().status(), StatusCode::OK);
        for p in polls {
            assert_eq!(p.await.unwrap()["messages"].as_array().unwrap().len(), 1);
        }
        app.stop().await;
    }

    async fn an_sse_stream_ends_after_its_longest_life_and_the_browser_resumes(backend) {
        let Some(app) = TestApp::spawn_with(&app(), backend, |c| {
            quick(c);
            c.realtime.max_stream_age = hearth::config::Duration::from_millis(800);
        }).await else { return };
        let c = client();
        let first = app.state().pubsub().publish_now("aged", &json!({"n": 1})).await.unwrap();
        let res = c.get(app.url("/rt/aged/stream")).header("last-event-id", (first - 1).to_string()).send().await.unwrap();
        // The whole body arrives: the stream ended on its own.
        let text = tokio::time::timeout(Duration::from_secs(20), res.text()).await.expect("the stream never ended").unwrap();
        assert!(text.starts_with("retry: 1000\n"), "{text}");
        assert!(text.contains(&format!("id: {first}\n")), "{text}");
        assert_eq!(app.state().streams().open(), 0);
        // What was published meanwhile comes with the resumed stream.
        let second = app.state().pubsub().publish_now("aged", &json!({"n": 2})).await.unwrap();
        let res = c.get(app.url("/rt/aged/stream")).header("last-event-id", first.to_string()).send().await.unwrap();
        let (events, _) = read_events(res, 1).await;
        assert_eq!(events[0].0, second);
        app.stop().await;
    }

    async fn long_polling_returns_new_messages_or_an_empty_answer(backend) {
        let Some(app) = TestApp::spawn_with(&app(), backend, quick).await else { return };
        let c = client();
        let first: Value = c.get(app.url("/rt/lp/poll")).send().await.unwrap().json().await.unwrap();
        assert_eq!(first["messages"], json!([]));
        let cursor = first["last_id"].as_i64().unwrap();
        // Nothing new: an empty answer after the wait.
        let empty: Value = c.get(app.url(&format!("/rt/lp/poll?after={cursor}"))).send().await.unwrap().json().await.unwrap();
        assert_eq!(empty["messages"], json!([]));
        assert_eq!(empty["last_id"], cursor);
        for n in 0..2 {
            c.post(app.url("/rt/lp")).json(&json!({"n": n})).send().await.unwrap();
        }
        let got: Value = c.get(app.url(&format!("/rt/lp/poll?after={cursor}"))).send().await.unwrap().json().await.unwrap();
        let payloads: Vec<&str> = got["messages"].as_array().unwrap().iter().map(|m| m["payload"].as_str().unwrap()).collect();
        assert_eq!(payloads, [r#"{"n":0}"#, r#"{"n":1}"#]);
        assert!(got["last_id"].as_i64().unwrap() > cursor);
        app.stop().await;
    }

    async fn bad_realtime_input_gets_clear_errors(backend) {
        let Some(app) = TestApp::spawn_with(&app(), backend, quick).await else { return };
        let c = client();
        let cases: Vec<(reqwest::RequestBuilder, StatusCode, &str)> = vec![
            (c.post(app.url("/rt/has%20space")).json(&json!(1)), StatusCode::UNPROCESSABLE_ENTITY, "invalid channel"),
            (c.post(app.url("/rt/big")).json(&"y".repeat(70_000)), StatusCode::UNPROCESSABLE_ENTITY, "limit"),
            (c.get(app.url("/rt/x/stream")).header("last-event-id", "abc"), StatusCode::BAD_REQUEST, "Last-Event-ID"),
            (c.get(app.url("/rt/x/poll?after=-")), StatusCode::BAD_REQUEST, "after"),
            (c.get(app.url("/rt/bad%20name/stream")), StatusCode::UNPROCESSABLE_ENTITY, "channel"),
        ];
        for (req, status, text) in cases {
            let res = req.send().await.unwrap();
            assert_eq!(res.status(), status);
            let v: Value = res.json().await.unwrap();
            assert!(v["error"]["message"].as_str().unwrap().contains(text), "{v}");
        }
        let n: i64 = with_db!(app.state().db(), pool => sqlx::query_scalar("SELECT count(*) FROM hearth_pubsub").fetch_one(pool).await).unwrap();
        assert_eq!(n, 0, "nothing was published");
        app.stop().await;
    }

    async fn subscribers_recover_when_the_listen_connection_is_lost(backend) {
        let Some(app) = TestApp::spawn(&app(), backend).await else { return };
        let Backend::Postgres = backend else {
            app.stop().await;
            return;
        };
        let pubsub = app.state().pubsub().clone();
        let mut sub = pubsub.subscribe("alerts", None);
        // Wait for this app's LISTEN connection, then kill it from the server side.
        let db = app.state().db().clone();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let killed: Vec<bool> = with_db!(&db, pool => sqlx::query_scalar(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE datname = current_database() AND query LIKE 'LISTEN%' AND pid <> pg_backend_pid()",
            ).fetch_all(pool).await).unwrap();
            if !killed.is_empty() { break; }
            assert!(Instant::now() < deadline, "no LISTEN connection found");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Published while the listener may be down: still delivered (live or by catch-up).
        pubsub.publish_now("alerts", &json!({"n": 1})).await.unwrap();
        assert_eq!(next(&mut sub).await.payload, r#"{"n":1}"#);
        pubsub.publish_now("alerts", &json!({"n": 2})).await.unwrap();
        let mut m = next(&mut sub).await;
        while m.payload == r#"{"n":1}"# {
            // At least once: a catch-up may repeat the first message.
            m = next(&mut sub).await;
        }
        assert_eq!(m.payload, r#"{"n":2}"#);
        app.stop().await;
    }
}
