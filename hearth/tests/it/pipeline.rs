//! The request pipeline: ids, errors, limits, ETags, compression, guards, health.

use std::time::Duration;

use hearth::testing::TestApp;
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use serde_json::{Value, json};

use crate::probe::{app, client};

async fn json_of(res: reqwest::Response) -> Value {
    let text = res.text().await.expect("body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Asserts the standard error envelope and returns it.
/// Checks that a JSON response's framing headers describe its body: one
/// content type, one length equal to the body's, one ETag whose length part
/// is the body's, and one request id.
async fn assert_json_whole(res: reqwest::Response) {
    let h = res.headers().clone();
    for name in ["content-type", "content-length", "etag", "x-request-id"] {
        assert_eq!(h.get_all(name).iter().count(), 1, "{name}: {h:?}");
    }
    assert_eq!(h["content-type"], "application/json");
    assert!(!h["x-request-id"].is_empty());
    let body = res.bytes().await.unwrap();
    assert!(serde_json::from_slice::<Value>(&body).is_ok());
    assert_eq!(
        h["content-length"].to_str().unwrap(),
        body.len().to_string()
    );
    let etag = h["etag"].to_str().unwrap();
    let length = etag.strip_prefix("W/\"").and_then(|t| t.split('-').next());
    assert_eq!(length, Some(format!("{:x}", body.len()).as_str()), "{etag}");
}

fn assert_error(body: &Value, code: &str) {
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(
        body["request_id"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

hearth::db_tests! {
    async fn request_id_is_generated_kept_or_replaced(backend) {
        let Some(app) = TestApp::spawn(&app(), backend).await else { return };
        let c = client();
        let res = c.get(app.url("/healthz")).send().await.unwrap();
        let generated = res.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert_eq!(generated.len(), 36, "{generated}");

        let res = c.get(app.url("/healthz")).header("x-request-id", "lb-1234.abc").send().await.unwrap();
        assert_eq!(res.headers()["x-request-id"], "lb-1234.abc");

        let res = c.get(app.url("/healthz")).header("x-request-id", "bad id\twith tab").send().await.unwrap();
        assert_ne!(res.headers()["x-request-id"], "bad id\twith tab");

        let res = c.get(app.url("/nothing")).header("x-request-id", "trace-7").send().await.unwrap();
        assert_eq!(json_of(res).await["request_id"], "trace-7");

        // Handlers see the same id through the `RequestId` extractor.
        let res = c.get(app.url("/probe/request-id")).send().await.unwrap();
        let header = res.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert_eq!(res.text().await.unwrap(), header);
        let res = c.get(app.url("/probe/request-id")).header("x-request-id", "trace-8").send().await.unwrap();
        assert_eq!(res.text().await.unwrap(), "trace-8");
    }

    async fn handlers_see_the_peer_of_their_own_connection(backend) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let Some(app) = TestApp::spawn(&app(), backend).await else { return };
        let addr = app.url("").trim_start_matches("http://").trim_end_matches('/').to_owned();
        // Many connections at once, two requests on each: every answer must
        // name the connection it came over, never a neighbour's.
        let tasks: Vec<_> = (0..24)
            .map(|_| {
                let addr = addr.clone();
                tokio::spawn(async move {
                    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
                    let me = s.local_addr().unwrap().to_string();
                    let req = format!("GET /probe/peer HTTP/1.1\r\nhost: {addr}\r\n\r\n");
                    s.write_all(format!("{req}{}", req.replace("HTTP/1.1\r\n", "HTTP/1.1\r\nconnection: close\r\n")).as_bytes()).await.unwrap();
                    let mut out = String::new();
                    s.read_to_string(&mut out).await.unwrap();
                    (me, out)
                })
            })
            .collect();
        for t in tasks {
            let (me, out) = t.await.unwrap();
            let bodies: Vec<&str> = out
                .split("HTTP/1.1 ")
                .skip(1)
                .map(|r| r.rsplit("\r\n\r\n").next().unwrap_or(""))
                .collect();
            assert_eq!(bodies, [me.as_str(), me.as_str()], "{out}");
        }
    }

    async fn unknown_routes_get_404_as_json_or_html(backend) {
        let Some(app) = TestApp::spawn(&app(), backend).await else { return };
        let c = client();
        let res = c.get(app.url("/no/such/route")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
        assert_eq!(res.headers()[CONTENT_TYPE], "application/json");
        assert_error(&json_of(res).await, "not_found");

        let res = c
            .get(app.url("/no/such/route"))
            .header(ACCEPT, "text/html,application/xhtml+xml,*/*;q=0.8")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
        assert!(res.headers()[CONTENT_TYPE].to_str().unwrap().starts_with("text/html"));
        let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
        let page = res.text().await.unwrap();
        assert!(page.contains("404 Not Found"), "{page}");
        assert!(page.contains(&id), "the page shows the request id: {page}");
    }

    async fn wrong_method_gets_405_with_allow(backend) {
        let Some(app) = TestApp::spawn(&app(), backend).await else { return };
        let res = client().delete(app.url("/healthz")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert!(res.headers().contains_key("allow"));
        assert_error(&json_of(res).await, "method_not_allowed");
    }

    async fn panic_becomes_500_with_request_id_and_no_internals(backend) {
        let Some(app) = TestApp::spawn(&app(), backend).await else { return };
        let c = client();
        for accept in ["application/json", "text/html"] {
            let res = c.get(app.url("/probe/panic")).header(ACCEPT, accept).send().await.unwrap();
            assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
            let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
            let body = res.text().await.unwrap();
            assert!(!body.contains("secret internal detail"), "leaked: {body}");
            assert!(!body.contains("probe.rs"), "leaked: {body}");
            assert!(body.contains(&id), "{body}");
        }
        // The server is still healthy afterwards.
        let res = c.get(app.url("/healthz")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }

    async fn bad_json_bodies_get_clear_errors(backend) {
        let Some(app) = TestApp::spawn(&app(), backend).await else { return };
        let c = client();
        // (content type, body, status, code, field, text the message must contain)
        type Case<'a> = (Option<&'a str>, &'a str, u16, &'a str, Option<&'a str>, &'a str);
        let cases: &[Case<'_>] = &[
            (Some("application/json"), "{\"name\": \"a\", ", 400, "invalid_json", None, "line 1"),
            (Some("application/json"), "{\"name\": nope}", 400, "invalid_json", None, "column"),
            (Some("application/json"), "", 400, "invalid_json", None, "line 1"),
            (Some("application/json"), "{\"name\":\"a\",\"count\":1} extra", 400, "invalid_json", None, "line 1"),
            (Some("application/json"), "\"just a string\"", 422, "invalid_body", None, "expects"),
            (Some("application/json"), "{\"count\":1}", 422, "invalid_field", Some("name"), "required"),
            (Some("application/json"), "{\"name\":\"a\",\"count\":-1}", 422, "invalid_field", Some("count"), "-1"),
            (Some("application/json"), "{\"name\":\"a\",\"count\":\"x\"}", 422, "invalid_field", Some("count"), "string"),
            (Some("application/json"), "{\"name\":\"a\",\"count\":1,\"tags\":[\"x\",7]}", 422, "invalid_field", Some("tags[1]"), "integer"),
            (Some("text/plain"), "{\"name\":\"a\",\"count\":1}", 415, "unsupported_media_type", None, "application/json"),
            (Some("application/x-www-form-urlencoded"), "name=a&count=1", 415, "unsupported_media_type", None, "application/json"),
            (None, "{\"name\":\"a\",\"count\":1}", 415, "unsupported_media_type", None, "application/json"),
        ];
        for (ct, body, status, code, field, needle) in cases {
            let mut req = c.post(app.url("/probe/echo")).body(body.to_string());
            if let Some(ct) = ct {
                req = req.header(CONTENT_TYPE, *ct);
            }
            let res = req.send().await.unwrap();
            assert_eq!(res.status().as_u16(), *status, "{ct:?} {body}");
            let v = json_of(res).await;
            assert_error(&v, code);
            assert_eq!(v["error"]["field"].as_str(), *field, "{body}: {v}");
            let msg = v["error"]["message"].as_str().unwrap();
            assert!(msg.contains(needle), "{body}: message {msg:?} lacks {needle:?}");
        }
        // And the good one goes through, with a charset parameter too.
        let res = c
            .post(app.url("/probe/echo"))
            .header(CONTENT_TYPE, "application/json; charset=utf-8")
            .body(r#"{"name":"a","count":1}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(json_of(res).await["name"], "a");
    }

    async fn bodies_over_the_limit_get_413(backend) {
        let Some(app) = TestApp::spawn_with(&app(), backend, |c| c.http.body_limit = 1024).await else { return };
        let c = client();
        let big = format!(r#"{{"name":"{}","count":1}}"#, "x".repeat(2000));
        // Declared length over the limit.
        let res = c.post(app.url("/probe/echo")).header(CONTENT_TYPE, "application/json").body(big.clone()).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_error(&json_of(res).await, "payload_too_large");
        // Chunked, so the length is only known while reading.
        let stream = futures_stream(big.into_bytes());
        let res = c
            .post(app.url("/probe/echo"))
            .header(CONTENT_TYPE, "application/json")
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_error(&json_of(res).await, "payload_too_large");
        // A route that reads no body still refuses an oversized declared one.
        let res = c.post(app.url("/healthz")).body(vec![b'x'; 4096]).send().await.unwrap();
        assert!(res.status() == StatusCode::PAYLOAD_TOO_LARGE || res.status() == StatusCode::METHOD_NOT_ALLOWED);
    }

    async fn a_limit_above_two_mib_lets_such_bodies_through(backend) {
        let limit = 3 * 1024 * 1024;
        let Some(app) = TestApp::spawn_with(&app(), backend, |c| c.http.body_limit = limit).await else { return };
        let c = client();
        // 2.5 MiB: over axum's own default, under the configured limit.
        let body = format!(r#"{{"name":"{}","count":1}}"#, "x".repeat(5 * 512 * 1024));
        let res = c.post(app.url("/probe/echo")).header(CONTENT_TYPE, "application/json").body(body.clone()).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let res = c
            .post(app.url("/probe/echo"))
            .header(CONTENT_TYPE, "application/json")
            .body(reqwest::Body::wrap_stream(futures_stream(body.into_bytes())))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let over = format!(r#"{{"name":"{}","count":1}}"#, "x".repeat(limit as usize));
        let res = c.post(app.url("/probe/echo")).header(CONTENT_TYPE, "application/json").body(over).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }

    async fn slow_handlers_time_out_with_503(backend) {
        let Some(app) = TestApp::spawn_with(&app(), backend, |c| {
            c.http.request_timeout = hearth::config::Duration::from_millis(300);
        }).await else { return };
        let res = client().get(app.url("/probe/slow?ms=20000")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(res.headers().contains_key("retry-after"));
        assert_error(&json_of(res).await, "timeout");
    }

    async fn requests_over_the_concurrency_limit_get_503(backend) {
        let Some(app) = TestApp::spawn_with(&app(), backend, |c| c.http.concurrency_limit = 1).await else { return };
        let c = client();
        let slow = tokio::spawn({
            let c = c.clone();
            let url = app.url("/probe/slow?ms=3000");
            async move { c.get(url).send().await.unwrap().status() }
        });
        // Wait until the slow request holds the only permit.
        let mut refused = None;
        for _ in 0..200 {
            let res = c.get(app.url("/healthz")).send().await.unwrap();
            if res.status() == StatusCode::SERVICE_UNAVAILABLE {
                refused = Some(json_of(res).await);
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let refused = refused.expect("a request over the limit was refused");
        assert_error(&refused, "overloaded");
        assert_eq!(slow.await.unwrap(), StatusCode::OK);
        let res = c.get(app.url("/healthz")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }

    async fn json_gets_an_etag_and_304(backend) {
        let Some(app) = TestApp::spawn(&app(), backend).await else { return };
        let c = client();
        let res = c.get(app.url("/probe/items")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let etag = res.headers()["etag"].to_str().unwrap().to_owned();
        assert!(etag.starts_with("W/\""), "{etag}");
        let length = res.headers()["content-length"].clone();
        assert_json_whole(res).await;
        // HEAD: the same length and tag, no body.
        let res = c.head(app.url("/probe/items")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["content-length"], length);
        assert_eq!(res.headers()["etag"].to_str().unwrap(), etag);
        assert!(res.bytes().await.unwrap().is_empty());
        let res = c.get(app.url("/probe/items")).header("if-none-match", &etag).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(res.headers()["etag"].to_str().unwrap(), etag);
        assert!(res.bytes().await.unwrap().is_empty());
        // A change in the data changes the ETag.
        let res = c.post(app.url("/probe/items")).json(&json!({"name":"a","weight":1})).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let res = c.get(app.url("/probe/items")).header("if-none-match", &etag).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_ne!(res.headers()["etag"].to_str().unwrap(), etag);
    }

    async fn static_files_have_etag_and_cache_control(backend) {
        let Some(app) = TestApp::spawn(&app(), backend).await else { return };
        let c = client();
        let res = c.get(app.url("/static/probe.txt")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()[CONTENT_TYPE], "text/plain");
        assert_eq!(res.headers()["cache-control"], "public, max-age=3600");
        let etag = res.headers()["etag"].to_str().unwrap().to_owned();
        assert_eq!(res.text().await.unwrap(), "probe asset\n");
        let res = c.get(app.url("/static/probe.txt")).header("if-none-match", &etag).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
        let res = c.get(app.url("/static/nope.txt")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
        let res = c.get(app.url("/static/../Cargo.toml")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
    }

    async fn large_json_is_compressed_when_asked(backend) {
        let Some(app) = TestApp::spawn(&app(), backend).await else { return };
        let c = client();
        let res = c.get(app.url("/probe/big")).header("accept-encoding", "gzip").send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["content-encoding"], "gzip");
        let compressed = res.bytes().await.unwrap().len();
        let res = c.get(app.url("/probe/big")).send().await.unwrap();
        assert!(res.headers().get("content-encoding").is_none());
        let plain = res.bytes().await.unwrap().len();
        assert!(compressed * 3 < plain, "gzip {compressed} vs plain {plain}");
    }

    async fn signed_in_and_admin_routes_refuse_anonymous_callers(backend) {
        let Some(app) = TestApp::spawn(&app(), backend).await else { return };
        let c = client();
        let res = c.get(app.url("/probe/me")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert_error(&json_of(res).await, "unauthorized");
        let res = c.get(app.url("/probe/admin")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        // Unknown paths stay 404, not 401.
        let res = c.get(app.url("/probe/nope")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
    }

    async fn health_and_readiness(backend) {
        let Some(app) = TestApp::spawn(&app(), backend).await else { return };
        let c = client();
        let res = c.get(app.url("/healthz")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(json_of(res).await["status"], "ok");
        let res = c.get(app.url("/readyz")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let v = json_of(res).await;
        assert_eq!(v["status"], "ready");
        assert_eq!(v["migrations"]["probe"], 1);
        assert_eq!(v["database"], backend.kind().as_str());
    }

    async fn unique_violation_is_a_409_naming_the_field(backend) {
        let Some(app) = TestApp::spawn(&app(), backend).await else { return };
        let c = client();
        let item = json!({"name": "dup", "weight": 3});
        let res = c.post(app.url("/probe/items")).json(&item).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let res = c.post(app.url("/probe/items")).json(&item).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::CONFLICT);
        let v = json_of(res).await;
        assert_error(&v, "conflict");
        assert_eq!(v["error"]["field"], "name");
        // Nothing was lost or doubled.
        let v = json_of(c.get(app.url("/probe/items")).send().await.unwrap()).await;
        assert_eq!(v, json!([{"name": "dup", "weight": 3}]));
    }

    async fn reset_hooks_clear_module_data(backend) {
        let Some(app) = TestApp::spawn(&app(), backend).await else { return };
        let c = client();
        c.post(app.url("/probe/items")).json(&json!({"name":"x","weight":1})).send().await.unwrap();
        app.reset().await.unwrap();
        let v = json_of(c.get(app.url("/probe/items")).send().await.unwrap()).await;
        assert_eq!(v, json!([]));
    }
}

fn futures_stream(
    bytes: Vec<u8>,
) -> impl futures_core::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        bytes.chunks(256).map(|c| Ok(c.to_vec())).collect();
    tokio_stream_iter(chunks)
}

/// A stream over a vector, without pulling in a stream utility crate.
fn tokio_stream_iter<T: Send + 'static + Unpin>(
    items: Vec<T>,
) -> impl futures_core::Stream<Item = T> + Send + 'static {
    struct Iter<T>(std::vec::IntoIter<T>);
    impl<T: Unpin> futures_core::Stream for Iter<T> {
        type Item = T;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<T>> {
            std::task::Poll::Ready(self.0.next())
        }
    }
    Iter(items.into_iter())
}

hearth::db_tests! {
    async fn every_response_carries_the_security_headers(backend) {
        let Some(app) = TestApp::spawn(&app(), backend).await else { return };
        let c = client();
        for path in ["/healthz", "/probe/items", "/static/probe.txt", "/no/such/page", "/api/auth/me"] {
            for accept in ["application/json", "text/html"] {
                let res = c.get(app.url(path)).header("accept", accept).send().await.unwrap();
                let h = res.headers();
                assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
                assert_eq!(h["referrer-policy"], "strict-origin-when-cross-origin", "{path}");
                assert_eq!(h["x-frame-options"], "DENY", "{path}");
                let csp = h["content-security-policy"].to_str().unwrap();
                assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{path}: {csp}");
                assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
                assert!(h.get("strict-transport-security").is_none(), "no HSTS in dev: {path}");
            }
        }
        // A handler's own policy wins, over text and over JSON, and is the
        // only one sent; the other headers are still there, once each.
        for path in ["/probe/own-csp", "/probe/own-csp-json"] {
            let res = c.get(app.url(path)).send().await.unwrap();
            let h = res.headers();
            let csp: Vec<_> = h.get_all("content-security-policy").iter().collect();
            assert_eq!(csp, ["default-src 'self' https://maps.example"], "{path}");
            for name in ["x-content-type-options", "referrer-policy", "x-frame-options", "x-request-id"] {
                assert_eq!(h.get_all(name).iter().count(), 1, "{path}: {name}");
            }
        }
        app.stop().await;
        // Production adds HSTS; the headers can be turned off.
        let Some(app) = TestApp::spawn_with(&crate::probe::app(), backend, |cfg| {
            cfg.env = hearth::config::RunEnv::Prod;
            cfg.mail.transport = hearth::mail::Transport::Outbox;
        }).await else { return };
        for path in ["/healthz", "/probe/items"] {
            let res = c.get(app.url(path)).send().await.unwrap();
            assert_eq!(res.headers()["strict-transport-security"], "max-age=63072000; includeSubDomains", "{path}");
        }
        // and marks the session cookie Secure.
        let res = c.get(app.url("/api/auth/csrf")).send().await.unwrap();
        let cookie = res.headers()["set-cookie"].to_str().unwrap().to_owned();
        assert!(cookie.contains("; Secure") && cookie.contains("HttpOnly"), "{cookie}");
        app.stop().await;
        let Some(app) = TestApp::spawn_with(&crate::probe::app(), backend, |cfg| cfg.http.security_headers = false).await else { return };
        for path in ["/healthz", "/probe/items"] {
            let res = c.get(app.url(path)).send().await.unwrap();
            assert!(res.headers().get("content-security-policy").is_none(), "{path}");
            assert!(res.headers().get("x-frame-options").is_none(), "{path}");
        }
        // JSON is still whole and tagged without them.
        let res = c.get(app.url("/probe/items")).send().await.unwrap();
        assert_json_whole(res).await;
        app.stop().await;
    }
}
