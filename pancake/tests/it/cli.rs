//! The pancake binary as an operator runs it: help, version, config, migrate,
//! serve and stop on SIGTERM, logs as JSON in prod.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use hearth::testing::{Backend, TestDb};
use reqwest::StatusCode;

use crate::client;

const BIN: &str = env!("CARGO_BIN_EXE_pancake");

/// The binary, run in `dir`, with no inherited configuration.
pub(crate) fn pancake(dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir).stdin(Stdio::null());
    for (key, _) in std::env::vars() {
        if key.starts_with("HEARTH_") || key == "DATABASE_URL" || key == "RUST_LOG" {
            cmd.env_remove(key);
        }
    }
    cmd
}

pub(crate) fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("the pancake binary runs")
}

pub(crate) fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn every_command_has_help() {
    let dir = tempfile::tempdir().unwrap();
    let subs: &[&[&str]] = &[
        &[],
        &["serve"],
        &["worker"],
        &["migrate"],
        &["config"],
        &["version"],
        &["jobs"],
        &["jobs", "list"],
        &["jobs", "retry"],
        &["jobs", "purge"],
        &["jobs", "stats"],
        &["jobs", "enqueue"],
        &["cron"],
        &["cron", "list"],
        &["user"],
        &["user", "create"],
        &["user", "list"],
        &["user", "set-admin"],
        &["user", "add-group"],
        &["user", "remove-group"],
        &["user", "disable"],
        &["user", "enable"],
        &["mail"],
        &["mail", "test"],
        &["setup"],
        &["doctor"],
        &["self-test"],
        &["backup"],
        &["restore"],
        &["install"],
        &["cleanup"],
        &["events"],
        &["story"],
        &["summary"],
        &["graph"],
        &["routes"],
    ];
    for sub in subs {
        let out = run(pancake(dir.path()).args(*sub).arg("--help"));
        assert!(out.status.success(), "{sub:?}: {}", text(&out.stderr));
        let help = text(&out.stdout);
        assert!(help.contains("Usage: pancake"), "{sub:?}: {help}");
    }
    let out = run(pancake(dir.path()).arg("--help"));
    let help = text(&out.stdout);
    for sub in [
        "serve",
        "worker",
        "jobs",
        "cron",
        "user",
        "mail",
        "setup",
        "doctor",
        "self-test",
        "backup",
        "restore",
        "install",
        "migrate",
        "config",
        "version",
        "events",
        "story",
        "summary",
        "graph",
        "routes",
    ] {
        assert!(help.contains(sub), "{help}");
    }
    // No command is a usage error, exit code 2.
    let out = run(&mut pancake(dir.path()));
    assert_eq!(out.status.code(), Some(2));
}

/// The living documentation runs with no config and no database: in an
/// empty directory, with a config pointing at nothing, it still answers.
#[test]
fn living_documentation_needs_no_database() {
    let dir = tempfile::tempdir().unwrap();
    let docs = |args: &[&str]| {
        let out = run(pancake(dir.path())
            .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
            .args(args));
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };
    let (code, summary, err) = docs(&["summary", "--strict"]);
    assert_eq!(code, Some(0), "{summary}{err}");
    assert!(
        summary.contains("route account GET /auth/login public"),
        "{summary}"
    );
    assert!(
        summary.contains("usecase status \"a benchmark says hello\" GET /api/hello in=- out=-"),
        "{summary}"
    );
    assert!(summary.trim_end().ends_with("uncovered (0)"), "{summary}");
    let (code, story, _) = docs(&["story", "account"]);
    assert_eq!(code, Some(0));
    assert!(
        story.contains(
            "nancy signs out\n  Given nancy is a user\n   When nancy sends POST /auth/logout"
        ),
        "{story}"
    );
    assert!(
        !story.contains("a benchmark says hello"),
        "only the module asked for: {story}"
    );
    let (_, md, _) = docs(&["story", "--format", "markdown"]);
    assert!(
        md.contains("## status") && md.contains("- **When** a visitor sends GET /api/hello"),
        "{md}"
    );
    let (code, mermaid, _) = docs(&["graph", "--format", "mermaid"]);
    assert_eq!(code, Some(0));
    assert!(mermaid.starts_with("flowchart LR"), "{mermaid}");
    let (_, dot, _) = docs(&["graph"]);
    assert!(dot.starts_with("digraph"), "{dot}");
    let (_, routes, _) = docs(&["routes"]);
    assert!(
        routes
            .lines()
            .any(|l| l.starts_with("GET") && l.contains("/admin ") && l.ends_with("admin")),
        "{routes}"
    );
    let (code, _, err) = docs(&["story", "nosuch"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("no module `nosuch`"), "{err}");
}

/// The README's copy of pancake's graph is what the binary prints.
#[test]
fn the_readme_graph_is_current() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let start = readme
        .find("```mermaid\n")
        .expect("a mermaid block in the README")
        + "```mermaid\n".len();
    let end = readme[start..].find("```").unwrap() + start;
    let dir = tempfile::tempdir().unwrap();
    let out = run(pancake(dir.path()).args(["graph", "--format", "mermaid", "--no-routes"]));
    assert_eq!(
        readme[start..end].trim_end(),
        text(&out.stdout).trim_end(),
        "update the README's graph"
    );
}

#[test]
fn version_names_app_and_framework() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(pancake(dir.path()).arg("version"));
    assert!(out.status.success());
    let v = text(&out.stdout);
    assert!(
        v.starts_with(&format!("pancake {}", env!("CARGO_PKG_VERSION"))),
        "{v}"
    );
    assert!(v.contains("hearth "), "{v}");
}

#[test]
fn config_prints_layers_in_order_with_secrets_masked() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("hearth.toml"),
        "addr = \"127.0.0.1:9001\"\n[http]\nbody_limit = 4096\nrequest_timeout = \"5s\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("hearth.secrets.toml"),
        "secret_key = \"0123456789abcdef0123456789abcdef-do-not-print\"\n",
    )
    .unwrap();
    let out = run(pancake(dir.path())
        .arg("config")
        .env("DATABASE_URL", "postgres://app:hunter2@db.internal/app")
        .env("HEARTH_HTTP__BODY_LIMIT", "8192"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let cfg = text(&out.stdout);
    assert!(
        cfg.contains("addr = \"127.0.0.1:9001\""),
        "file value: {cfg}"
    );
    assert!(cfg.contains("body_limit = 8192"), "env beats file: {cfg}");
    assert!(cfg.contains("request_timeout = \"5s\""), "{cfg}");
    assert!(
        cfg.contains("postgres://app:********@db.internal/app"),
        "{cfg}"
    );
    assert!(
        !cfg.contains("hunter2") && !cfg.contains("do-not-print"),
        "leak: {cfg}"
    );
    assert!(cfg.contains("secret_key = \"********\""), "{cfg}");
    // A flag beats the environment.
    let out = run(pancake(dir.path())
        .args(["config", "--addr", "127.0.0.1:9003"])
        .env("HEARTH_ADDR", "127.0.0.1:9002"));
    assert!(text(&out.stdout).contains("addr = \"127.0.0.1:9003\""));
    // The default database is a SQLite file under the data dir.
    let out = run(pancake(dir.path()).args(["config", "--data-dir", "/srv/pc"]));
    assert!(
        text(&out.stdout).contains("sqlite:///srv/pc/pancake.db"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn bad_config_is_one_line_naming_the_key_and_exit_code_2() {
    // (file content, env, args, text the line must contain)
    type Case<'a> = (
        &'a str,
        &'a [(&'a str, &'a str)],
        &'a [&'a str],
        &'a [&'a str],
    );
    let cases: &[Case<'_>] = &[
        (
            "",
            &[("HEARTH_HTTP__BODY_LIMIT", "lots")],
            &[],
            &["`http.body_limit`", "HEARTH_"],
        ),
        (
            "[http]\nbody_limit = \"x\"\n",
            &[],
            &[],
            &["`http.body_limit`", "hearth.toml"],
        ),
        ("colour = 1\n", &[], &[], &["`colour`", "unknown key"]),
        (
            "[http]\nspeed = 1\n",
            &[],
            &[],
            &["`http.speed`", "unknown key"],
        ),
        ("", &[("HEARTH_ADDR", "nope")], &[], &["`addr`"]),
        (
            "",
            &[("DATABASE_URL", "mysql://root@h/db")],
            &[],
            &["`database_url`", "unsupported database URL scheme `mysql`"],
        ),
        ("", &[("HEARTH_ENV", "staging")], &[], &["`env`"]),
        (
            "[backup]\nschedule = \"every night\"\n",
            &[],
            &[],
            &["`backup.schedule`", "not a cron expression"],
        ),
        (
            "",
            &[("HEARTH_HTTP__REQUEST_TIMEOUT", "5w")],
            &[],
            &["`http.request_timeout`", "unit"],
        ),
        (
            "",
            &[("HEARTH_JOBS__LEASE", "100ms")],
            &[],
            &["`jobs.lease`", "at least 600ms"],
        ),
        (
            "[jobs.queues.mail]\nconcurrency = 0\n",
            &[],
            &[],
            &["`jobs.queues.mail.concurrency`", "greater than 0"],
        ),
        (
            "[jobs]\nbackoff_base = \"2h\"\n",
            &[],
            &[],
            &["`jobs.backoff_max`", "backoff_base"],
        ),
        (
            "",
            &[("HEARTH_HTTP__BODY_LIMIT", "0")],
            &[],
            &["`http.body_limit`", "greater than 0"],
        ),
        (
            "",
            &[("HEARTH_SECRET_KEY", "short")],
            &[],
            &["`secret_key`", "32"],
        ),
        ("", &[("HEARTH_LOG", "info,,=nonsense=")], &[], &["`log`"]),
        (
            "",
            &[("HEARTH_ENV", "prod")],
            &[],
            &["`mail.smtp.host`", "required"],
        ),
        (
            "[auth.argon2]\nmemory_kib = 1\n",
            &[],
            &[],
            &["`auth.argon2`"],
        ),
        (
            "[mail]\nfrom = \"not a mailbox\"\n",
            &[],
            &[],
            &["`mail.from`"],
        ),
        (
            "",
            &[("HEARTH_PUBLIC_URL", "example.com/")],
            &[],
            &["`public_url`"],
        ),
        ("[tls]\ncert = \"c.pem\"\n", &[], &[], &["`tls.key`"]),
        (
            "",
            &[],
            &["--config", "missing.toml"],
            &["`config`", "missing.toml"],
        ),
        ("addr = [\n", &[], &[], &["hearth.toml"]),
    ];
    for (file, env, args, needles) in cases {
        let dir = tempfile::tempdir().unwrap();
        if !file.is_empty() {
            std::fs::write(dir.path().join("hearth.toml"), file).unwrap();
        }
        let mut cmd = pancake(dir.path());
        cmd.args(*args).arg("migrate").arg("--status");
        for (k, v) in *env {
            cmd.env(k, v);
        }
        let out = run(&mut cmd);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{file:?} {env:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(err.starts_with("config error"), "{err}");
        for n in *needles {
            assert!(err.contains(n), "{file:?} {env:?}: {err:?} lacks {n:?}");
        }
        // Nothing was created.
        assert!(!dir.path().join("data").exists());
    }
}

#[test]
fn migrate_creates_the_sqlite_database_on_first_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(pancake(dir.path()).arg("migrate"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("applied  home/1_create_home_notice"));
    assert!(dir.path().join("data/pancake.db").is_file());
    let out = run(pancake(dir.path()).arg("migrate"));
    assert!(text(&out.stdout).contains("up to date"));
    let out = run(pancake(dir.path()).args(["migrate", "--status"]));
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("applied  home/1_create_home_notice"));
}

#[tokio::test]
async fn migrate_runs_on_postgres_from_database_url() {
    let Some(db) = TestDb::create(Backend::Postgres).await else {
        return;
    };
    let out = run(pancake(db.dir())
        .arg("migrate")
        .env("DATABASE_URL", db.url()));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("applied  home/1_create_home_notice"));
    let out = run(pancake(db.dir())
        .args(["migrate", "--status"])
        .env("DATABASE_URL", db.url()));
    assert!(text(&out.stdout).contains("applied  home/1_create_home_notice"));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

async fn wait_ready(base: &str, child: &mut Child) {
    for _ in 0..600 {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("pancake exited early with {status}");
        }
        if let Ok(res) = client().get(format!("{base}/readyz")).send().await
            && res.status() == StatusCode::OK
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("pancake did not become ready");
}

pub(crate) fn sigterm_and_wait(child: Child) -> Output {
    let pid = child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    child.wait_with_output().unwrap()
}

/// Starts `pancake serve` on a free port over `db` and waits until it is ready.
pub(crate) async fn serve(db: &TestDb, env: &[(&str, &str)]) -> (Child, String) {
    let port = free_port();
    let mut cmd = pancake(db.dir());
    cmd.args(["serve", "--addr", &format!("127.0.0.1:{port}")])
        .env("DATABASE_URL", db.url())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&base, &mut child).await;
    (child, base)
}

/// Runs `pancake ARGS` over `db` with `input` on stdin and extra `env`.
pub(crate) fn run_with(db: &TestDb, args: &[&str], input: &str, env: &[(&str, &str)]) -> Output {
    let url = db.url().to_owned();
    let mut all = vec![("DATABASE_URL", url.as_str())];
    all.extend_from_slice(env);
    run_in(db.dir(), args, input, &all)
}

/// Runs `pancake ARGS` in `dir` with `input` on stdin and `env` (nothing
/// else inherited: the database comes from `env` or the files in `dir`).
pub(crate) fn run_in(dir: &Path, args: &[&str], input: &str, env: &[(&str, &str)]) -> Output {
    use std::io::Write as _;
    let mut cmd = pancake(dir);
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

hearth::db_tests! {
    async fn accounts_are_managed_from_the_command_line(backend) {
        let Some(db) = TestDb::create(backend).await else { return };
        let ok = |out: &Output| assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
        ok(&run_with(&db, &["migrate"], "", &[]));
        let out = run_with(&db, &["user", "create", "Ana@Example.com", "--admin", "--verified"], "a long enough passphrase\n", &[]);
        ok(&out);
        assert!(text(&out.stdout).contains("created admin account"), "{}", text(&out.stdout));
        let out = run_with(&db, &["user", "create", "bo@example.com"], "a long enough passphrase\n", &[]);
        ok(&out);
        assert!(text(&out.stdout).contains("verification link is queued"));
        // Refusals: taken address, weak password, no password, bad address.
        for (args, input, says) in [
            (&["user", "create", "ana@example.com"][..], "another long passphrase\n", "exists already"),
            (&["user", "create", "cy@example.com"][..], "password123\n", "common"),
            (&["user", "create", "cy@example.com"][..], "", "no password"),
            (&["user", "create", "not-an-address"][..], "another long passphrase\n", "not a valid email"),
            (&["user", "set-admin", "nobody@example.com"][..], "", "no account"),
            (&["user", "add-group", "bo@example.com", "Bad Group"][..], "", "not a group name"),
        ] {
            let out = run_with(&db, args, input, &[]);
            assert_eq!(out.status.code(), Some(1), "{args:?}");
            assert!(text(&out.stderr).contains(says), "{args:?}: {}", text(&out.stderr));
        }
        ok(&run_with(&db, &["user", "add-group", "bo@example.com", "editors"], "", &[]));
        ok(&run_with(&db, &["user", "set-admin", "bo@example.com"], "", &[]));
        ok(&run_with(&db, &["user", "set-admin", "ana@example.com", "--off"], "", &[]));
        ok(&run_with(&db, &["user", "disable", "bo@example.com"], "", &[]));
        let out = run_with(&db, &["user", "list", "--json"], "", &[]);
        ok(&out);
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let summary: Vec<(String, bool, bool, bool)> = list.as_array().unwrap().iter().map(|u| (
            u["email"].as_str().unwrap().to_owned(),
            u["verified"].as_bool().unwrap(),
            u["admin"].as_bool().unwrap(),
            u["disabled"].as_bool().unwrap(),
        )).collect();
        assert_eq!(summary, [
            ("ana@example.com".to_owned(), true, false, false),
            ("bo@example.com".to_owned(), false, true, true),
        ]);
        // A listed admin stays one whatever the flag says.
        let out = run_with(&db, &["user", "list"], "", &[("HEARTH_AUTH__ADMINS", "[\"ana@example.com\"]")]);
        ok(&out);
        assert!(text(&out.stdout).contains("2 account(s)"), "{}", text(&out.stdout));
        let out = run_with(&db, &["user", "enable", "bo@example.com"], "", &[]);
        ok(&out);
        // The account created here signs in through the API.
        let (child, base) = serve(&db, &[]).await;
        let http = client();
        let res = http.get(format!("{base}/api/auth/csrf")).send().await.unwrap();
        let cookie = res.headers().get("set-cookie").unwrap().to_str().unwrap().split(';').next().unwrap().to_owned();
        let csrf = res.json::<serde_json::Value>().await.unwrap()["csrf_token"].as_str().unwrap().to_owned();
        let res = http.post(format!("{base}/api/auth/login")).header("cookie", cookie).header("x-csrf-token", csrf)
            .json(&serde_json::json!({"email": "ana@example.com", "password": "a long enough passphrase"})).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        tokio::task::spawn_blocking(move || sigterm_and_wait(child)).await.unwrap();
    }

    async fn mail_test_sends_over_smtp_or_writes_the_outbox(backend) {
        let Some(db) = TestDb::create(backend).await else { return };
        assert!(run_with(&db, &["migrate"], "", &[]).status.success());
        let sink = hearth::testing::SmtpSink::start().await;
        let port = sink.addr().port().to_string();
        let smtp = [
            ("HEARTH_MAIL__TRANSPORT", "smtp"),
            ("HEARTH_MAIL__SMTP__HOST", "127.0.0.1"),
            ("HEARTH_MAIL__SMTP__PORT", port.as_str()),
            ("HEARTH_MAIL__SMTP__SECURITY", "none"),
        ];
        // The sink runs on this test's runtime: wait for the binary elsewhere.
        let (url, dir) = (db.url().to_owned(), db.dir().to_owned());
        let smtp_env: Vec<(String, String)> = smtp.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let out = tokio::task::spawn_blocking(move || {
            let mut cmd = pancake(&dir);
            cmd.args(["mail", "test", "ops@example.com"]).env("DATABASE_URL", url).envs(smtp_env);
            run(&mut cmd)
        })
        .await
        .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(text(&out.stdout).contains("sent a test message to ops@example.com"), "{}", text(&out.stdout));
        let mail = sink.next().await;
        assert_eq!(mail.to, ["ops@example.com"]);
        assert_eq!(mail.header("Subject").unwrap(), "pancake: test message");
        // Development default: the outbox.
        let out = run_with(&db, &["mail", "test", "ops@example.com"], "", &[]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(text(&out.stdout).contains("outbox"), "{}", text(&out.stdout));
        // Nobody listening: exit 1 with the reason. (Let the runtime drop
        // the aborted listener before the binary connects.)
        drop(sink);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let out = run_with(&db, &["mail", "test", "ops@example.com"], "", &smtp);
        assert_eq!(out.status.code(), Some(1));
        assert!(text(&out.stderr).contains("smtp"), "{}", text(&out.stderr));
    }

    async fn serve_answers_then_exits_0_on_sigterm(backend) {
        let Some(db) = TestDb::create(backend).await else { return };
        let (child, base) = serve(&db, &[]).await;
        let v: serde_json::Value = client().get(format!("{base}/api/status")).send().await.unwrap().json().await.unwrap();
        assert_eq!(v["database"], backend.kind().as_str());
        let out = tokio::task::spawn_blocking(move || sigterm_and_wait(child)).await.unwrap();
        let log = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{log}");
        assert!(log.contains("shutdown signal received") && log.contains("stopped"), "{log}");
    }

    async fn prod_logs_are_json_with_an_access_line_per_request(backend) {
        let Some(db) = TestDb::create(backend).await else { return };
        let (child, base) = serve(&db, &[("HEARTH_ENV", "prod"), ("HEARTH_MAIL__SMTP__HOST", "localhost")]).await;
        let res = client().get(format!("{base}/api/hello?token=secret")).header("x-request-id", "probe-77").send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        // Sign up and in over the API: lines inside a request carry its id,
        // and once the session is known, the user's id.
        let http = client();
        let mut cookies: Vec<String> = Vec::new();
        let mut csrf = String::new();
        for (method, path, id) in [
            ("GET", "/api/auth/csrf", "probe-csrf"),
            ("POST", "/api/auth/signup", "probe-signup"),
            ("POST", "/api/auth/login", "probe-login"),
            ("GET", "/api/auth/me", "probe-me"),
        ] {
            let url = format!("{base}{path}");
            let req = if method == "GET" { http.get(url) } else {
                http.post(url).json(&serde_json::json!({"email": "ana@example.com", "password": "a long enough passphrase"}))
            };
            let res = req.header("x-request-id", id).header("origin", &base)
                .header("x-csrf-token", &csrf).header("cookie", cookies.join("; "))
                .send().await.unwrap();
            assert!(res.status().is_success(), "{path}: {}", res.status());
            for v in res.headers().get_all("set-cookie") {
                let pair = v.to_str().unwrap().split(';').next().unwrap().to_owned();
                let name = pair.split('=').next().unwrap().to_owned();
                cookies.retain(|c| !c.starts_with(&format!("{name}=")));
                cookies.push(pair);
            }
            let body: serde_json::Value = res.json().await.unwrap();
            if let Some(t) = body["csrf_token"].as_str() {
                csrf = t.to_owned();
            }
        }
        let out = tokio::task::spawn_blocking(move || sigterm_and_wait(child)).await.unwrap();
        let log = text(&out.stderr);
        let lines: Vec<serde_json::Value> = log
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        let access = lines
            .iter()
            .find(|l| l["target"] == "hearth::access" && l["request_id"] == "probe-77")
            .unwrap_or_else(|| panic!("no access line: {log}"));
        assert_eq!(access["method"], "GET");
        assert_eq!(access["path"], "/api/hello");
        assert_eq!(access["status"], 200);
        assert!(access["duration_us"].is_u64());
        assert!(access["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{access}");
        assert_eq!(access["level"], "INFO");
        assert!(!log.contains("token=secret"), "query strings are not logged: {log}");
        let created = lines.iter().find(|l| l["message"] == "account created")
            .unwrap_or_else(|| panic!("no `account created` line: {log}"));
        assert_eq!(created["request_id"], "probe-signup", "{created}");
        let me = lines.iter()
            .find(|l| l["target"] == "hearth::access" && l["request_id"] == "probe-me")
            .unwrap_or_else(|| panic!("no access line for /api/auth/me: {log}"));
        assert!(me["user_id"].as_i64().is_some_and(|u| u > 0), "{me}");
        let anonymous = lines.iter()
            .find(|l| l["target"] == "hearth::access" && l["request_id"] == "probe-77").unwrap();
        assert!(anonymous.get("user_id").is_none(), "{anonymous}");
    }
}
