//! Backups through the library and the job queue: a schedule in the config
//! writes archives that pass the restore checks, retention keeps the newest,
//! and uploaded files travel with the database.

use std::time::Duration;

use hearth::ops::archive::extract;
use hearth::ops::progress::Progress;
use hearth::ops::{Target, backup, restore};
use hearth::testing::TestApp;

use crate::probe::app;

fn target(app: &TestApp) -> Target<'_> {
    Target::of(app.state())
}

fn archives(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".backup.tar.gz"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

hearth::db_tests! {
    async fn a_configured_schedule_writes_backups_that_verify(backend) {
        let Some(app) = TestApp::spawn_with(&app(), backend, |c| {
            c.backup.schedule = Some("* * * * * *".into());
            c.jobs.poll_interval = hearth::config::Duration::from_millis(100);
        }).await else { return };
        let dir = target(&app).backup_dir();
        let mut found = Vec::new();
        for _ in 0..300 {
            found = archives(&dir);
            if !found.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(!found.is_empty(), "no scheduled backup appeared in {}", dir.display());
        let unpacked = tempfile::tempdir().unwrap();
        let manifest = extract(&dir.join(&found[0]), unpacked.path(), &Progress::hidden(), u64::MAX).unwrap();
        assert_eq!(manifest.app, app.state().name());
        assert!(manifest.tables.contains_key("hearth_cron"));
        assert!(manifest.levels().contains_key("hearth"));
        let report = restore::verify(&target(&app), &dir.join(&found[0]), &Progress::hidden(), Some(&crate::probe::app())).await.unwrap();
        // The drill started the app over the restored copy and ran self-test there.
        let st = report.self_test.as_ref().unwrap();
        assert!(st.failures().is_empty(), "{st:?}");
        assert!(st.checks.iter().any(|c| c.name == "probe: items round trip"), "{st:?}");
        assert_eq!(report.tables_checked, manifest.tables.len());
        assert!(report.migrations_applied.is_empty());
    }

    async fn retention_keeps_the_newest_and_files_travel_along(backend) {
        let Some(app) = TestApp::spawn_with(&app(), backend, |c| c.backup.keep = 2).await else { return };
        let t = target(&app);
        let files = t.files_dir();
        std::fs::create_dir_all(files.join("avatars")).unwrap();
        std::fs::write(files.join("avatars/ana.png"), b"\x89PNG not really").unwrap();
        std::fs::write(files.join("notes.txt"), "hello").unwrap();
        let mut written = Vec::new();
        for _ in 0..3 {
            let r = backup::backup(&t, None, &Progress::hidden()).await.unwrap();
            written.push(r.path.file_name().unwrap().to_string_lossy().into_owned());
        }
        assert_eq!(archives(&t.backup_dir()), written[1..].to_vec());
        let unpacked = tempfile::tempdir().unwrap();
        let manifest = extract(&t.backup_dir().join(&written[2]), unpacked.path(), &Progress::hidden(), u64::MAX).unwrap();
        let paths: Vec<&str> = manifest.entries.iter().map(|e| e.path.as_str()).collect();
        assert!(paths.contains(&"files/avatars/ana.png") && paths.contains(&"files/notes.txt"), "{paths:?}");
        assert_eq!(std::fs::read(unpacked.path().join("files/notes.txt")).unwrap(), b"hello");
        // A file name given with --to is used as is, and not pruned.
        let exact = app.db().dir().join("exact.tar.gz");
        let r = backup::backup(&t, Some(&exact), &Progress::hidden()).await.unwrap();
        assert_eq!(r.path, exact);
        assert!(exact.is_file());
    }
}

/// A self-signed certificate for localhost that expires on `y-m-d`, as PEM.
fn cert_expiring(y: i32, m: u8, d: u8) -> String {
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.not_after = rcgen::date_time_ymd(y, m, d);
    let key = rcgen::KeyPair::generate().unwrap();
    params.self_signed(&key).unwrap().pem()
}

#[tokio::test]
async fn doctor_warns_before_the_certificate_expires_and_fails_after() {
    use chrono::Datelike;
    use hearth::ops::doctor::{self, Status};
    let Some(db) = hearth::testing::TestDb::create(hearth::testing::Backend::Sqlite).await else {
        return;
    };
    let mut config = TestApp::config(&db);
    let soon = chrono::Utc::now() + chrono::Duration::days(5);
    let later = chrono::Utc::now() + chrono::Duration::days(400);
    let cases = [
        (
            cert_expiring(soon.year(), soon.month() as u8, soon.day() as u8),
            Status::Warn,
        ),
        (
            cert_expiring(later.year(), later.month() as u8, later.day() as u8),
            Status::Ok,
        ),
        (cert_expiring(2020, 1, 1), Status::Fail),
        ("not a certificate".to_owned(), Status::Fail),
    ];
    for (i, (pem, want)) in cases.into_iter().enumerate() {
        let path = db.dir().join(format!("cert{i}.pem"));
        std::fs::write(&path, pem).unwrap();
        config.tls.cert = Some(path);
        let report = doctor::run(&app(), &config).await;
        let tls = report.get("tls").unwrap();
        assert_eq!(tls.status, want, "case {i}: {tls:?}");
    }
}

hearth::db_tests! {
    async fn self_test_runs_every_check_on_a_scratch_database_only(backend) {
        let Some(app) = TestApp::spawn(&crate::probe::app(), backend).await else { return };
        let live = app.state().db().clone();
        let users = || async {
            hearth::with_db!(&live, pool => hearth::sqlx::query_scalar::<_, i64>("SELECT count(*) FROM hearth_user").fetch_one(pool).await).unwrap()
        };
        let report = hearth::ops::selftest::run(&crate::probe::app(), app.state().config(), None).await.unwrap();
        assert!(report.failures().is_empty(), "{report:#?}");
        let names: Vec<&str> = report.checks.iter().map(|c| c.name.as_str()).collect();
        for want in ["hearth: migrations", "hearth: health", "hearth: errors", "hearth: limits",
            "hearth: security headers", "hearth: accounts", "hearth: jobs", "hearth: pub/sub",
            "hearth: metrics", "probe: items round trip"] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
        assert_eq!(report.database, app.state().db().kind().as_str());
        // The account it made and the item it stored went to the scratch database.
        assert_eq!(users().await, 0);
        let items = hearth::with_db!(&live, pool => hearth::sqlx::query_scalar::<_, i64>("SELECT count(*) FROM probe_item").fetch_one(pool).await).unwrap();
        assert_eq!(items, 0);
        if let hearth::Db::Postgres(pool) = &live {
            let left: i64 = hearth::sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname LIKE 'hearth_selftest_%'")
                .fetch_one(pool).await.unwrap();
            assert_eq!(left, 0, "a scratch database was left behind");
        }
        app.stop().await;
    }

    async fn a_failing_app_check_fails_the_self_test(backend) {
        let broken = hearth::App::new("probe", "0.0.1").module(crate::probe::Probe {
            broken_check: true,
            ..Default::default()
        });
        let Some(app) = TestApp::spawn(&broken, backend).await else { return };
        let report = hearth::ops::selftest::run(&broken, app.state().config(), None).await.unwrap();
        let failed: Vec<&str> = report.failures().iter().map(|c| c.name.as_str()).collect();
        assert_eq!(failed, ["probe: always fails"], "{report:#?}");
        let f = report.checks.iter().find(|c| !c.ok).unwrap();
        assert!(f.detail.contains("broken on purpose"), "{}", f.detail);
        app.stop().await;
    }
}
