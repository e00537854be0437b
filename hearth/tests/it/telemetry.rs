//! Metrics and notifications over real HTTP on both engines: `/metrics` is
//! closed to anonymous callers, plain users and wrong tokens, and shows
//! every promised series to an admin or the token; a burst of 5xx reaches
//! the webhook once, signed, and the hourly limit holds.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hearth::axum;
use hearth::telemetry::EventKind;
use hearth::testing::{Backend, TestApp};
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::Value;
use sha2::Sha256;

use crate::accounts::Browser;
use crate::probe::{FAIL, Probe};

const TOKEN: &str = "metrics-token-0123456789";

async fn spawn(backend: Backend, configure: impl FnOnce(&mut hearth::Config)) -> Option<TestApp> {
    let app = hearth::App::new("probe", "0.0.1").module(Probe {
        tick: true,
        ..Probe::default()
    });
    TestApp::spawn_with(&app, backend, |c| {
        c.jobs.poll_interval = hearth::config::Duration::from_millis(100);
        configure(c);
    })
    .await
}

/// The value of the first sample line that starts with `prefix`.
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

hearth::db_tests! {
    async fn metrics_are_denied_without_auth_and_show_every_series_with_it(backend) {
        let Some(app) = spawn(backend, |c| {
            c.auth.admins = vec!["boss@example.com".into()];
            c.metrics.token = Some(hearth::config::Secret::new(TOKEN));
        }).await else { return };
        let http = crate::probe::client();
        let url = app.url("/metrics");
        // Nobody, a wrong token, a plain user: no figures.
        let r = http.get(&url).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized");
        let r = http.get(&url).bearer_auth("metrics-token-wrong-wrong").send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let mut user = Browser::signed_in(&app, "user@example.com").await;
        assert_eq!(user.get("/metrics").await.status, StatusCode::FORBIDDEN);

        // Traffic to count: a hit, a miss, a bad body; a job that dies; the
        // per-second cron schedule succeeding at least once.
        assert_eq!(http.get(app.url("/probe/items")).send().await.unwrap().status(), StatusCode::OK);
        assert_eq!(http.get(app.url("/no/such/page")).send().await.unwrap().status(), StatusCode::NOT_FOUND);
        let r = http.post(app.url("/probe/echo")).header("content-type", "application/json")
            .body("{").send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let jobs = app.state().jobs();
        let mut tx = app.state().db().begin().await.unwrap();
        jobs.enqueue(&mut tx, FAIL.job(&())).await.unwrap();
        jobs.enqueue(&mut tx, hearth::jobs::PING.job(&Default::default()).delay(Duration::from_secs(3600))).await.unwrap();
        tx.commit().await.unwrap();
        let mut text = String::new();
        for _ in 0..200 {
            let r = http.get(&url).bearer_auth(TOKEN).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            assert!(r.headers()["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
            text = r.text().await.unwrap();
            let dead = sample(&text, "hearth_jobs{queue=\"default\",state=\"dead\"}").unwrap_or(0.0);
            let cron = sample(&text, "hearth_cron_last_success_timestamp_seconds{schedule=\"probe.tick\"}");
            if dead >= 1.0 && cron.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for series in [
            "hearth_http_requests_total{method=\"GET\",route=\"/probe/items\",status=\"200\"} 1",
            "hearth_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"} 1",
            "hearth_http_requests_total{method=\"POST\",route=\"/probe/echo\",status=\"400\"} 1",
            "hearth_http_request_duration_seconds_bucket{le=\"+Inf\",method=\"GET\",route=\"/probe/items\",status=\"200\"} 1",
            "hearth_http_request_duration_seconds_count{method=\"GET\",route=\"/probe/items\",status=\"200\"} 1",
            "hearth_db_pool_connections{state=\"in_use\"}",
            "hearth_db_pool_connections{state=\"idle\"}",
            "hearth_db_pool_max_connections ",
            "hearth_db_pool_acquire_seconds_count ",
            "hearth_jobs{queue=\"default\",state=\"dead\"} 1",
            "hearth_jobs{queue=\"hearth\",state=\"pending\"}",
            "hearth_jobs_oldest_due_seconds{queue=\"default\"}",
            "hearth_job_start_delay_seconds_count{queue=\"default\"}",
            "hearth_job_failures_total{queue=\"default\",job=\"probe.fail\"} 1",
            "hearth_jobs_dead_lettered_total{queue=\"default\",job=\"probe.fail\"} 1",
            "hearth_cron_last_success_timestamp_seconds{schedule=\"probe.tick\"}",
            "hearth_process_resident_memory_bytes ",
            "hearth_process_cpu_seconds_total ",
            "hearth_process_start_time_seconds ",
        ] {
            assert!(text.lines().any(|l| l.starts_with(series)), "missing `{series}` in:\n{text}");
        }
        let pending = sample(&text, "hearth_jobs{queue=\"hearth\",state=\"pending\"}").unwrap();
        assert!(pending >= 1.0, "{pending}");
        let rss = sample(&text, "hearth_process_resident_memory_bytes ").unwrap();
        assert!(rss > 1e6, "{rss}");
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        let cron = sample(&text, "hearth_cron_last_success_timestamp_seconds{schedule=\"probe.tick\"}").unwrap();
        assert!((now - cron).abs() < 600.0, "{cron} vs {now}");
        // Scrapes themselves are counted under their route, by status.
        assert!(text.contains("route=\"/metrics\",status=\"401\""), "{text}");
        // An admin's session is enough, once a listed address is verified.
        let mut boss = Browser::signed_in(&app, "boss@example.com").await;
        assert_eq!(boss.get("/metrics").await.status, StatusCode::FORBIDDEN);
        let users = app.state().auth().users();
        let (b, _) = users.by_email("boss@example.com").await.unwrap().unwrap();
        let mut tx = app.state().db().begin().await.unwrap();
        users.mark_verified(&mut tx, b.id).await.unwrap();
        tx.commit().await.unwrap();
        let a = boss.get("/metrics").await;
        assert_eq!(a.status, StatusCode::OK);
        assert!(a.body.as_str().unwrap().contains("# TYPE hearth_http_requests counter"));
        app.stop().await;
    }

    async fn statsd_gets_requests_and_gauges_over_udp(backend) {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap().to_string();
        let Some(app) = spawn(backend, |c| {
            c.metrics.statsd = Some(addr);
            c.metrics.statsd_prefix = Some("pc".into());
            c.metrics.sample_interval = hearth::config::Duration::from_secs(1);
        }).await else { return };
        let http = crate::probe::client();
        assert_eq!(http.get(app.url("/probe/items")).send().await.unwrap().status(), StatusCode::OK);
        let mut seen = String::new();
        let mut buf = vec![0_u8; 65_536];
        let wanted = [
            "pc.http.requests:1|c|#method:GET,route:/probe/items,status:200",
            "pc.http.request:",
            "pc.db.pool.in_use:",
            "pc.process.rss_bytes:",
        ];
        for _ in 0..200 {
            if wanted.iter().all(|w| seen.contains(w)) {
                break;
            }
            if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(100), socket.recv(&mut buf)).await {
                seen.push_str(&String::from_utf8_lossy(&buf[..n]));
                seen.push('\n');
            }
        }
        for w in wanted {
            assert!(seen.contains(w), "no `{w}` in:\n{seen}");
        }
        app.stop().await;
    }

    async fn a_burst_of_5xx_is_notified_once_and_the_hourly_limit_holds(backend) {
        let hook = Hook::start().await;
        let Some(app) = spawn(backend, |c| {
            c.notify.webhook = Some(hearth::config::Secret::new(hook.url.clone()));
            c.notify.webhook_secret = Some(hearth::config::Secret::new("hook-secret"));
            c.notify.max_per_hour = 4;
        }).await else { return };
        let notifier = app.state().notifier().clone();
        assert!(notifier.flush(Duration::from_secs(30)).await);
        assert_eq!(hook.kinds(), ["server_started"]);

        let http = crate::probe::client();
        for _ in 0..40 {
            let r = http.get(app.url("/probe/panic")).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        }
        assert!(notifier.flush(Duration::from_secs(30)).await);
        // 40 panics, 40 responses with 500: one of each kind went out.
        assert_eq!(hook.kinds(), ["server_started", "panic", "server_error"]);
        let got = hook.bodies();
        let err = &got[2];
        assert_eq!(err["app"], "probe");
        assert_eq!(err["subject"], "GET /probe/panic");
        assert_eq!(err["repeats"], 0);
        assert!(err["message"].as_str().unwrap().starts_with("500 for GET /probe/panic"), "{err}");
        // The panic's details stay in the operator's channel, not the response.
        assert!(got[1]["message"].as_str().unwrap().contains("secret internal detail 42"));
        // Each body is signed with the shared secret.
        for (body, sig) in hook.signed() {
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"hook-secret").unwrap();
            mac.update(&body);
            assert_eq!(sig, format!("sha256={}", hex::encode(mac.finalize().into_bytes())));
        }

        // A new kind of trouble is news: the fourth and last of the hour.
        notifier.send(EventKind::JobDead, "some.job", "job 7 is dead");
        // Past the hourly limit: logged, not posted.
        notifier.send(EventKind::BackupFailed, "backup", "disk full");
        assert!(notifier.flush(Duration::from_secs(30)).await);
        assert_eq!(hook.kinds(), ["server_started", "panic", "server_error", "job_dead"]);
        app.stop().await;
        // Not even the stop goes out this hour.
        assert_eq!(hook.kinds().len(), 4);
    }

    async fn a_dead_job_and_a_stopping_server_are_notified(backend) {
        let hook = Hook::start().await;
        let Some(app) = spawn(backend, |c| {
            c.notify.webhook = Some(hearth::config::Secret::new(hook.url.clone()));
            c.notify.mail_admins = true;
            c.auth.admins = vec!["ops@example.com".into()];
        }).await else { return };
        let mut tx = app.state().db().begin().await.unwrap();
        app.state().jobs().enqueue(&mut tx, FAIL.job(&())).await.unwrap();
        app.state().jobs().enqueue(&mut tx, crate::probe::PANIC.job(&())).await.unwrap();
        tx.commit().await.unwrap();
        let panicked = hook.first("panic", 300).await.expect("no panic notification for the job");
        assert_eq!(panicked["subject"], "job probe.panic");
        assert!(panicked["message"].as_str().unwrap().contains("probe.panic panics"), "{panicked}");
        let dead = hook.first("job_dead", 300).await.expect("no job_dead notification");
        assert_eq!(dead["subject"], "probe.fail");
        assert!(dead["message"].as_str().unwrap().contains("probe.fail always fails"), "{dead}");
        // The admins get it by mail too, through the queue (here: the outbox).
        let outbox = app.state().config().data_dir.join("outbox");
        let mut mailed = None;
        for _ in 0..300 {
            mailed = std::fs::read_dir(&outbox).ok().and_then(|d| {
                d.flatten()
                    .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
                    .find(|m| m.contains("[probe] job_dead: probe.fail"))
            });
            if mailed.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mailed = mailed.expect("no notification mail in the outbox");
        assert!(mailed.contains("ops@example.com"), "{mailed}");
        app.stop().await;
        assert_eq!(hook.kinds().last().map(String::as_str), Some("server_stopped"));
    }
}

/// Each POST's body and signature header.
type Received = Arc<Mutex<Vec<(Vec<u8>, String)>>>;

/// A webhook receiver on loopback that keeps what it is sent.
struct Hook {
    url: String,
    got: Received,
}

impl Hook {
    async fn start() -> Hook {
        let got: Received = Arc::default();
        let keep = got.clone();
        let router = axum::Router::new().route(
            "/hook",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let keep = keep.clone();
                    async move {
                        let sig = headers
                            .get("x-hearth-signature")
                            .map(|v| v.to_str().unwrap().to_owned())
                            .unwrap_or_default();
                        keep.lock().unwrap().push((body.to_vec(), sig));
                        "ok"
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Hook { url, got }
    }

    fn bodies(&self) -> Vec<Value> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .map(|(b, _)| serde_json::from_slice(b).unwrap())
            .collect()
    }

    /// The first body of this kind, polling every 50 ms, at most `tries` times.
    async fn first(&self, kind: &str, tries: usize) -> Option<Value> {
        for _ in 0..tries {
            if let Some(b) = self.bodies().into_iter().find(|b| b["kind"] == kind) {
                return Some(b);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    fn kinds(&self) -> Vec<String> {
        self.bodies()
            .iter()
            .map(|b| b["kind"].as_str().unwrap().to_owned())
            .collect()
    }

    fn signed(&self) -> Vec<(Vec<u8>, String)> {
        self.got.lock().unwrap().clone()
    }
}

/// The database going away is noticed by the sampler and notified. On
/// PostgreSQL only: a SQLite file cannot be taken away from the connections
/// that have it open.
#[tokio::test]
async fn an_unreachable_database_is_notified() {
    let hook = Hook::start().await;
    let Some(app) = spawn(Backend::Postgres, |c| {
        c.notify.webhook = Some(hearth::config::Secret::new(hook.url.clone()));
        c.metrics.sample_interval = hearth::config::Duration::from_secs(1);
        c.db.acquire_timeout = hearth::config::Duration::from_secs(2);
    })
    .await
    else {
        return;
    };
    let name = app.db().url().rsplit('/').next().unwrap().to_owned();
    let admin_url = std::env::var("HEARTH_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let admin = hearth::sqlx::PgPool::connect(&admin_url).await.unwrap();
    let sql = |s: String| hearth::sqlx::query(hearth::sqlx::AssertSqlSafe(s));
    sql(format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"))
        .execute(&admin)
        .await
        .unwrap();
    sql(format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
    ))
    .execute(&admin)
    .await
    .unwrap();
    let found = hook.first("database_unreachable", 600).await;
    sql(format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let found = found.expect("no database_unreachable notification");
    assert_eq!(found["subject"], "postgres");
    app.stop().await;
}
