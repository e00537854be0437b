//! pancake's pages and API through real HTTP.

use hearth::db::migrate;
use hearth::testing::{Backend, TestApp, TestDb, schema_of};
use pancake::home::store;
use reqwest::StatusCode;
use reqwest::header::ACCEPT;
use serde_json::Value;

use crate::client;

hearth::db_tests! {
    async fn status_reports_app_engine_and_migrations_from_the_database(backend) {
        let Some(app) = TestApp::spawn(&pancake::app(), backend).await else { return };
        let res = client().get(app.url("/api/status")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert!(res.headers().contains_key("etag"));
        let v: Value = res.json().await.unwrap();
        assert_eq!(v["app"], "pancake");
        assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(v["database"], backend.kind().as_str());
        // Every module (hearth's own included) at its latest migration.
        let mut total = 0;
        for spec in pancake::app().specs().unwrap() {
            let n = spec.migrations_for(backend.kind()).len();
            total += n;
            let level = v["migrations"].get(spec.name()).and_then(Value::as_u64).unwrap_or(0);
            assert_eq!(level, n as u64, "{v}");
        }
        assert_eq!(v["migrations"]["home"], 2);
        assert_eq!(v["migration_level"], total);
        assert_eq!(v["notices"], 1);
    }

    async fn hello_is_a_constant_json(backend) {
        let Some(app) = TestApp::spawn(&pancake::app(), backend).await else { return };
        let res = client().get(app.url("/api/hello")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["content-type"], "application/json");
        assert_eq!(res.text().await.unwrap(), r#"{"message":"hello, world"}"#);
    }

    async fn home_page_lists_notices_and_escapes_what_users_send(backend) {
        let Some(app) = TestApp::spawn(&pancake::app(), backend).await else { return };
        store::add(app.state().db(), "<b>Bold</b> news", "a <script>alert(1)</script> body", 4_102_444_800).await.unwrap();
        let res = client()
            .get(app.url("/?name=%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E"))
            .header(ACCEPT, "text/html")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
        let page = res.text().await.unwrap();
        assert!(page.contains("Welcome to pancake"), "the seeded notice is shown");
        assert!(page.contains("&#60;b&#62;Bold&#60;/b&#62; news"), "{page}");
        assert!(!page.contains("<script>alert"), "{page}");
        assert!(!page.contains("<img src=x"), "{page}");
        assert!(page.contains("Hello, &#60;img"), "{page}");
        // Newest first.
        let bold = page.find("Bold").unwrap();
        let welcome = page.find("Welcome to pancake").unwrap();
        assert!(bold < welcome);
    }

    async fn home_page_rejects_an_overlong_name(backend) {
        let Some(app) = TestApp::spawn(&pancake::app(), backend).await else { return };
        let long = "n".repeat(101);
        let res = client().get(app.url(&format!("/?name={long}"))).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let v: Value = res.json().await.unwrap();
        assert_eq!(v["error"]["code"], "invalid_field");
        assert_eq!(v["error"]["field"], "name");
        let res = client().get(app.url(&format!("/?name={long}"))).header(ACCEPT, "text/html").send().await.unwrap();
        assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let page = res.text().await.unwrap();
        assert!(page.contains("at most 100 characters") && page.contains("name"), "{page}");
        // A query string of the wrong shape is a clean 400, not a 500.
        let res = client().get(app.url("/?name=a&name=b")).send().await.unwrap();
        assert!(res.status().is_client_error(), "{}", res.status());
    }

    async fn reset_clears_the_notices(backend) {
        let Some(app) = TestApp::spawn(&pancake::app(), backend).await else { return };
        app.reset().await.unwrap();
        let v: Value = client().get(app.url("/api/status")).send().await.unwrap().json().await.unwrap();
        assert_eq!(v["notices"], 0);
        let page = client().get(app.url("/")).send().await.unwrap().text().await.unwrap();
        assert!(page.contains("No notices yet"), "{page}");
    }

    async fn stylesheet_is_served_with_caching_headers(backend) {
        let Some(app) = TestApp::spawn(&pancake::app(), backend).await else { return };
        let res = client().get(app.url("/static/pancake.css")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["content-type"], "text/css");
        assert!(res.headers()["cache-control"].to_str().unwrap().contains("max-age="));
        let etag = res.headers()["etag"].clone();
        let res = client().get(app.url("/static/pancake.css")).header("if-none-match", etag).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    }
}

#[tokio::test]
async fn pancake_schema_is_the_same_on_sqlite_and_postgres() {
    let Some(pg) = TestDb::create(Backend::Postgres).await else {
        return;
    };
    let lite = TestDb::create(Backend::Sqlite).await.unwrap();
    let app = pancake::app();
    let specs = app.specs().unwrap();
    let a = app.open_db(&TestApp::config(&lite)).await.unwrap();
    let b = app.open_db(&TestApp::config(&pg)).await.unwrap();
    migrate::migrate(&a, &specs).await.unwrap();
    migrate::migrate(&b, &specs).await.unwrap();
    let (sa, sb) = (schema_of(&a).await.unwrap(), schema_of(&b).await.unwrap());
    assert!(sa.contains_key("home_notice"), "{sa:?}");
    assert_eq!(sa, sb);
    a.close().await;
    b.close().await;
}

#[test]
fn every_module_keeps_to_its_own_tables() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let problems = hearth::testing::storage_problems(&pancake::app(), &src);
    assert!(problems.is_empty(), "{problems:#?}");
}
