//! The server around the pipeline: graceful shutdown, header read timeout,
//! TLS, and start-up failures.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hearth::config::Duration as ConfigDuration;
use hearth::testing::{Backend, TestApp, TestDb};
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::probe::{app, app_with, client};

/// Polls until `cond` holds; panics after ten seconds so a bug cannot hang the suite.
async fn until(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..1000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("gave up waiting until {what}");
}

hearth::db_tests! {
    async fn shutdown_lets_in_flight_requests_finish(backend) {
        let arrived = Arc::new(AtomicUsize::new(0));
        let Some(app_) = TestApp::spawn(&app_with(arrived.clone()), backend).await else { return };
        let url = app_.url("/probe/slow?ms=700");
        let addr = app_.addr();
        let in_flight = tokio::spawn(async move {
            let res = client().get(url).send().await.unwrap();
            (res.status(), res.text().await.unwrap())
        });
        until("the slow request arrived", || arrived.load(Ordering::SeqCst) == 1).await;
        tokio::time::timeout(Duration::from_secs(20), app_.stop()).await.expect("shutdown finished");
        let (status, body) = in_flight.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "done");
        // The listener is closed.
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }

    async fn shutdown_timeout_bounds_the_drain(backend) {
        let arrived = Arc::new(AtomicUsize::new(0));
        let Some(app_) = TestApp::spawn_with(&app_with(arrived.clone()), backend, |c| {
            c.http.shutdown_timeout = ConfigDuration::from_millis(200);
        }).await else { return };
        let url = app_.url("/probe/slow?ms=25000");
        let _stuck = tokio::spawn(async move { client().get(url).send().await });
        until("the slow request arrived", || arrived.load(Ordering::SeqCst) == 1).await;
        // Without the bound this would wait 25 s; the test only asks that it ends.
        tokio::time::timeout(Duration::from_secs(15), app_.stop()).await.expect("shutdown was bounded");
    }
}

/// The probe app with a header read timeout of `ms` milliseconds.
async fn with_header_timeout(backend: Backend, ms: u64) -> Option<TestApp> {
    TestApp::spawn_with(&app(), backend, |c| {
        c.http.header_read_timeout = ConfigDuration::from_millis(ms);
    })
    .await
}

/// Sends half a request head on `conn`; the server must end the connection
/// (possibly after a 408) on its own.
async fn half_head_is_cut_off(conn: &mut tokio::net::TcpStream) {
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), conn.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the server kept a half-sent request open");
    let text = String::from_utf8_lossy(&buf);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
}

/// Reads from `conn` until `complete` says the text so far is a whole response.
async fn read_until(conn: &mut tokio::net::TcpStream, complete: impl Fn(&str) -> bool) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = conn.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed mid-response: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if complete(&text) {
            return text;
        }
    }
}

/// Reads one whole `Content-Length` response from `conn`.
async fn read_response(conn: &mut tokio::net::TcpStream) -> String {
    read_until(conn, |text| {
        text.find("\r\n\r\n").is_some_and(|end| {
            let len = text[..end]
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map_or(0, |v| v.trim().parse::<usize>().unwrap());
            text.len() >= end + 4 + len
        })
    })
    .await
}

/// Reads one whole chunked response from `conn`.
async fn read_chunked_response(conn: &mut tokio::net::TcpStream) -> String {
    read_until(conn, |text| text.ends_with("\r\n0\r\n\r\n")).await
}

/// Starts a POST to `/probe/echo` that declares `len` bytes of body and
/// sends only `sent` of them.
async fn stalled_body(
    addr: std::net::SocketAddr,
    len: usize,
    sent: &[u8],
) -> tokio::net::TcpStream {
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /probe/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(sent).await.unwrap();
    conn
}

/// Whether the server closes `conn` without a word.
async fn closed_unanswered(conn: &mut tokio::net::TcpStream) -> bool {
    let mut buf = Vec::new();
    matches!(
        tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

/// A GET of `/healthz` on a fresh connection, or `None` if it was closed.
async fn healthz_on_new_connection(addr: std::net::SocketAddr) -> Option<String> {
    let mut conn = tokio::net::TcpStream::connect(addr).await.ok()?;
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    (!buf.is_empty()).then(|| String::from_utf8_lossy(&buf).into_owned())
}

hearth::db_tests! {
    async fn requests_hyper_refuses_get_the_json_error_shape(backend) {
        let Some(app_) = TestApp::spawn(&app(), backend).await else { return };
        let big = format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(1024 * 1024));
        let cases: [(&[u8], &str, &str); 4] = [
            (b"POST /probe/echo HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", "400", "bad_request"),
            (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n", "400", "bad_request"),
            (b"POST /probe/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "400", "bad_request"),
            (big.as_bytes(), "431", "headers_too_large"),
        ];
        for (raw, status, code) in cases {
            let mut conn = tokio::net::TcpStream::connect(app_.addr()).await.unwrap();
            // The server may answer and close before it has read all of a
            // large head; what it wrote is still there to read.
            let _ = conn.write_all(raw).await;
            let mut buf = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut buf)).await.unwrap();
            let text = String::from_utf8_lossy(&buf).into_owned();
            assert!(text.starts_with(&format!("HTTP/1.1 {status} ")), "{text}");
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            assert!(head.contains("content-type: application/json"), "{text}");
            let v: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(v["error"]["code"], code, "{text}");
        }
        // The server is unharmed.
        assert_eq!(client().get(app_.url("/healthz")).send().await.unwrap().status(), StatusCode::OK);
    }

    async fn one_address_cannot_take_every_connection(backend) {
        let Some(app_) = TestApp::spawn_with(&app(), backend, |c| {
            c.http.max_connections_per_ip = 3;
        }).await else { return };
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(tokio::net::TcpStream::connect(app_.addr()).await.unwrap());
        }
        // The fourth is closed at once; the three stay open.
        let mut fourth = tokio::net::TcpStream::connect(app_.addr()).await.unwrap();
        assert!(closed_unanswered(&mut fourth).await, "a fourth connection from one address was served");
        held[0].write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        assert!(read_response(&mut held[0]).await.starts_with("HTTP/1.1 200"));
        // Once one closes, its place is free again.
        drop(held.pop());
        let mut served = None;
        for _ in 0..100 {
            served = healthz_on_new_connection(app_.addr()).await;
            if served.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(served.unwrap_or_default().starts_with("HTTP/1.1 200"));
        app_.stop().await;

        // A trusted proxy speaks for many clients: it is not capped.
        let Some(app_) = TestApp::spawn_with(&app(), backend, |c| {
            c.http.max_connections_per_ip = 3;
            c.auth.trusted_proxies = vec!["127.0.0.1".into()];
        }).await else { return };
        let mut held = Vec::new();
        for _ in 0..6 {
            held.push(tokio::net::TcpStream::connect(app_.addr()).await.unwrap());
        }
        let last = held.last_mut().unwrap();
        last.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        assert!(read_response(last).await.starts_with("HTTP/1.1 200"));
    }

    async fn a_body_that_stalls_or_trickles_gets_408_and_starves_nobody(backend) {
        let Some(app_) = TestApp::spawn_with(&app(), backend, |c| {
            c.http.body_idle_timeout = ConfigDuration::from_millis(400);
            c.http.body_min_rate = 1000;
            c.http.concurrency_limit = 2;
        }).await else { return };
        // More stalled bodies than the concurrency limit: while their
        // handlers wait for the client, they hold no place, so an ordinary
        // request still gets in.
        let mut stalled = Vec::new();
        for _ in 0..4 {
            stalled.push(stalled_body(app_.addr(), 100, b"{\"x\":").await);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let res = client().get(app_.url("/probe/items")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "a stalled body starved this request");
        // Each stalled body is answered 408, as JSON, naming the cause.
        for conn in &mut stalled {
            let text = read_response(conn).await;
            assert!(text.starts_with("HTTP/1.1 408"), "{text}");
            assert!(text.contains("\"code\":\"body_timeout\""), "{text}");
        }
        // A body that keeps coming, but slower than the least rate.
        let mut conn = stalled_body(app_.addr(), 200, b"{").await;
        let mut answer = None;
        for _ in 0..40 {
            if conn.write_all(b" ").await.is_err() {
                break;
            }
            let mut peek = [0u8; 16];
            if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(150), conn.peek(&mut peek)).await
                && n > 0
            {
                answer = Some(read_response(&mut conn).await);
                break;
            }
        }
        let text = answer.expect("the trickling body was never answered");
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        // The places were all given back.
        for _ in 0..3 {
            let res = client().get(app_.url("/probe/items")).send().await.unwrap();
            assert_eq!(res.status(), StatusCode::OK);
        }
    }

    async fn clients_that_trickle_headers_are_disconnected(backend) {
        let Some(app_) = with_header_timeout(backend, 300).await else {
            return;
        };
        let mut conn = tokio::net::TcpStream::connect(app_.addr()).await.unwrap();
        half_head_is_cut_off(&mut conn).await;
    }

    async fn the_header_deadline_is_per_request_on_a_kept_alive_connection(backend) {
        // Each head on a connection gets its own deadline: a connection whose
        // requests each arrive in time lives past the timeout, and a later head
        // that trickles is still cut off.
        let timeout = Duration::from_millis(1500);
        let Some(app_) = with_header_timeout(backend, 1500).await else {
            return;
        };
        let mut conn = tokio::net::TcpStream::connect(app_.addr()).await.unwrap();
        let start = std::time::Instant::now();
        // 12 requests 250 ms apart: 3 s on one connection, twice the timeout.
        for _ in 0..12 {
            conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            let res = read_response(&mut conn).await;
            assert!(res.starts_with("HTTP/1.1 200"), "{res}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert!(start.elapsed() > timeout);
        // Now half a head, after all that.
        half_head_is_cut_off(&mut conn).await;
        // The deadline also runs while a kept-alive connection sits idle between
        // requests, so idle connections are closed too.
        let mut idle = tokio::net::TcpStream::connect(app_.addr()).await.unwrap();
        idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert!(read_response(&mut idle).await.starts_with("HTTP/1.1 200"));
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(15), idle.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "the server kept an idle connection open");
    }

    async fn the_header_deadline_does_not_run_while_a_request_is_served(backend) {
        // The deadline is for heads only: a slow handler, a request body that
        // trickles in and a response that streams out may each take longer.
        let Some(app_) = with_header_timeout(backend, 800).await else {
            return;
        };
        let mut conn = tokio::net::TcpStream::connect(app_.addr()).await.unwrap();
        conn.write_all(b"GET /probe/slow?ms=2000 HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let res = read_response(&mut conn).await;
        assert!(res.starts_with("HTTP/1.1 200") && res.ends_with("done"), "{res}");

        let body = br#"{"name":"slow","count":3}"#;
        let head = format!(
            "POST /probe/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        conn.write_all(head.as_bytes()).await.unwrap();
        for part in body.chunks(9) {
            tokio::time::sleep(Duration::from_millis(400)).await;
            conn.write_all(part).await.unwrap();
        }
        let res = read_response(&mut conn).await;
        assert!(res.starts_with("HTTP/1.1 200") && res.contains(r#""name":"slow""#), "{res}");

        conn.write_all(b"GET /probe/drip?ms=400&n=3 HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let res = read_chunked_response(&mut conn).await;
        assert!(res.starts_with("HTTP/1.1 200"), "{res}");
        assert_eq!(res.matches("tick").count(), 3, "{res}");

        // The connection is still open for a head that comes in time.
        conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert!(read_response(&mut conn).await.starts_with("HTTP/1.1 200"));
        // And the deadline is back for the next one.
        half_head_is_cut_off(&mut conn).await;
    }
}

fn self_signed(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert_pem = cert.cert.pem();
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, &cert_pem).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    (cert_path, key_path, cert_pem)
}

/// The probe app over TLS with a fresh self-signed certificate, further
/// configured by `configure`; a client that trusts only that certificate; and
/// the directory holding it, to keep until the test ends.
async fn tls_app(
    backend: Backend,
    configure: impl FnOnce(&mut hearth::config::Config),
) -> Option<(TestApp, reqwest::Client, tempfile::TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, pem) = self_signed(dir.path());
    let app_ = TestApp::spawn_with(&app(), backend, |c| {
        c.tls.cert = Some(cert);
        c.tls.key = Some(key);
        configure(c);
    })
    .await?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(pem.as_bytes()).unwrap()])
        .build()
        .unwrap();
    Some((app_, client, dir))
}

hearth::db_tests! {
    async fn tls_serves_https_with_http2_and_refuses_plain_http(backend) {
        let Some((app_, tls_client, _dir)) = tls_app(backend, |_| {}).await else { return };
        assert!(app_.base_url().starts_with("https://"));
        let res = tls_client.get(app_.url("/readyz")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.version(), reqwest::Version::HTTP_2);
        let plain = format!("http://{}/healthz", app_.addr());
        let res = client().get(plain).send().await;
        assert!(res.is_err() || !res.unwrap().status().is_success());
        // And the server still serves TLS after that garbage.
        let res = tls_client.get(app_.url("/healthz")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }

    async fn over_tls_the_session_cookie_is_secure_and_host_only(backend) {
        let Some((app_, tls_client, _dir)) = tls_app(backend, |_| {}).await else { return };
        let mut b = crate::accounts::Browser::new(&app_);
        b.http = tls_client;
        let a = b.get("/api/auth/csrf").await;
        let set_cookie = a.headers.get("set-cookie").unwrap().to_str().unwrap().to_owned();
        assert!(set_cookie.starts_with("__Host-hearth_session="), "{set_cookie}");
        assert!(set_cookie.contains("; Secure") && set_cookie.contains("Path=/"), "{set_cookie}");
        b.sign_up("ana@example.com", crate::accounts::PASSWORD).await;
        assert_eq!(b.log_in("ana@example.com", crate::accounts::PASSWORD).await.status, StatusCode::OK);
        assert_eq!(b.get("/api/auth/me").await.status, StatusCode::OK);
    }

    async fn an_http2_connection_is_kept_while_a_stream_is_open_and_closed_when_idle(backend) {
        let Some((app_, tls_client, _dir)) = tls_app(backend, |c| {
            c.http.header_read_timeout = ConfigDuration::from_millis(300);
        }).await else { return };
        let peer = || async {
            let res = tls_client.get(app_.url("/probe/peer")).send().await.unwrap();
            assert_eq!(res.version(), reqwest::Version::HTTP_2);
            res.text().await.unwrap()
        };
        let first = peer().await;
        // A stream open past the deadline (a response dripping for 1.2 s)
        // keeps the connection: another request shares it.
        let drip = tls_client.get(app_.url("/probe/drip?n=6&ms=200")).send().await.unwrap();
        assert_eq!(drip.version(), reqwest::Version::HTTP_2);
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(peer().await, first, "the connection was closed under an open stream");
        assert_eq!(drip.text().await.unwrap(), "tick\n".repeat(6));
        // No stream open past the deadline: the connection is closed, and
        // the next request comes on a new one.
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert_ne!(peer().await, first, "an idle HTTP/2 connection was kept open");
    }
}

#[tokio::test]
async fn start_fails_clearly_on_bad_tls_files() {
    let tdb = TestDb::create(Backend::Sqlite).await.unwrap();
    let mut cfg = TestApp::config(&tdb);
    cfg.tls.cert = Some(tdb.dir().join("missing-cert.pem"));
    cfg.tls.key = Some(tdb.dir().join("missing-key.pem"));
    let err = TestApp::try_start(&app(), cfg)
        .await
        .err()
        .expect("must fail")
        .to_string();
    assert!(
        err.contains("TLS") && err.contains("missing-cert.pem"),
        "{err}"
    );
}

#[tokio::test]
async fn start_fails_clearly_when_the_port_is_taken() {
    let Some(first) = TestApp::spawn(&app(), Backend::Sqlite).await else {
        return;
    };
    let tdb = TestDb::create(Backend::Sqlite).await.unwrap();
    let mut cfg = TestApp::config(&tdb);
    cfg.addr = first.addr();
    let err = TestApp::try_start(&app(), cfg)
        .await
        .err()
        .expect("must fail")
        .to_string();
    assert!(err.contains("cannot listen on"), "{err}");
}
