//! `backup` and `restore` as an operator runs them, on SQLite and
//! PostgreSQL: a backup taken while a writer keeps inserting restores to a
//! consistent snapshot; damaged, foreign and too-new archives are refused
//! with nothing touched; a running server blocks a restore.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use hearth::config::DbConfig;
use hearth::testing::TestDb;
use hearth::{Db, sqlx, with_db};

use crate::cli::{run_with, serve, sigterm_and_wait, text};

fn ok(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// The archive path `backup` printed.
fn written(out: &std::process::Output) -> PathBuf {
    let stdout = text(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("backup written: "))
        .unwrap_or_else(|| panic!("no archive in {stdout}"));
    PathBuf::from(line.split(" (").next().unwrap())
}

/// Rows per `k` in the writer's table, as (k, rows).
async fn pairs(db: &Db) -> Vec<(i64, i64)> {
    with_db!(db, pool => sqlx::query_as::<_, (i64, i64)>(
        "SELECT k, count(*) FROM bk_pair GROUP BY k ORDER BY k",
    )
    .fetch_all(pool)
    .await
    .unwrap())
}

async fn open(db: &TestDb) -> Db {
    Db::connect(db.url(), &DbConfig::default()).await.unwrap()
}

/// Where the alerts module's tables are: its own file on SQLite, the
/// database on PostgreSQL.
async fn open_alerts(db: &TestDb) -> Db {
    match db.url().starts_with("sqlite") {
        true => Db::connect(
            &format!("sqlite://{}/test.alerts.db", db.dir().display()),
            &DbConfig::default(),
        )
        .await
        .unwrap(),
        false => open(db).await,
    }
}

hearth::db_tests! {
    async fn a_backup_taken_under_writes_restores_to_a_consistent_snapshot(backend) {
        let Some(tdb) = TestDb::create(backend).await else { return };
        ok(&run_with(&tdb, &["migrate"], "", &[]));
        let db = open(&tdb).await;
        with_db!(&db, pool => sqlx::query("CREATE TABLE bk_pair (k BIGINT NOT NULL, part INTEGER NOT NULL, PRIMARY KEY (k, part))")
            .execute(pool).await.map(|_| ()).unwrap());
        // A module's row, in its own schema on PostgreSQL, comes back too.
        let profile = match &db { Db::Sqlite(..) => "members_profile", Db::Postgres(_) => "members.members_profile" };
        with_db!(&db, pool => sqlx::query(sqlx::AssertSqlSafe(format!("INSERT INTO {profile} (member, display_name, bio, city, updated_at) VALUES (7, 'Nancy', '', 'Oslo', 0)")))
            .execute(pool).await.map(|_| ()).unwrap());
        // So does a row of alerts, which keeps a file of its own on SQLite.
        let alerts = open_alerts(&tdb).await;
        let alert = match &alerts { Db::Sqlite(..) => "alerts_alert", Db::Postgres(_) => "alerts.alerts_alert" };
        with_db!(&alerts, pool => sqlx::query(sqlx::AssertSqlSafe(format!("INSERT INTO {alert} (owner, kind, actor, created_at) VALUES (7, 'liked', 8, 0)")))
            .execute(pool).await.map(|_| ()).unwrap());
        alerts.close().await;
        // The writer commits pairs of rows, one pair per transaction, and
        // publishes the last k it committed.
        let last = Arc::new(AtomicI64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (db, last, stop) = (db.clone(), last.clone(), stop.clone());
            tokio::spawn(async move {
                let mut k = 0i64;
                while !stop.load(Ordering::Relaxed) {
                    k += 1;
                    let mut tx = db.begin().await.unwrap();
                    for part in [1, 2] {
                        hearth::with_tx!(&mut tx, t => sqlx::query("INSERT INTO bk_pair (k, part) VALUES ($1, $2)")
                            .bind(k).bind(part).execute(&mut **t).await.map(|_| ()).unwrap());
                    }
                    tx.commit().await.unwrap();
                    last.store(k, Ordering::SeqCst);
                }
                k
            })
        };
        while last.load(Ordering::SeqCst) < 50 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let before = last.load(Ordering::SeqCst);
        let backups = tdb.dir().join("backups");
        let dir = format!("{}/", backups.display());
        let out = tokio::task::spawn_blocking({
            let url = tdb.url().to_owned();
            let cwd = tdb.dir().to_owned();
            move || crate::cli::pancake(&cwd).args(["backup", "--to", &dir]).env("DATABASE_URL", url).output().unwrap()
        }).await.unwrap();
        ok(&out);
        let archive = written(&out);
        stop.store(true, Ordering::Relaxed);
        let total = writer.await.unwrap();
        assert!(total >= before);
        // The live database now has more than the snapshot.
        assert_eq!(pairs(&db).await.len() as i64, total);
        db.close().await;

        let out = run_with(&tdb, &["restore", "--verify", archive.to_str().unwrap()], "", &[]);
        ok(&out);
        assert!(text(&out.stdout).starts_with("ok: "), "{}", text(&out.stdout));
        // The drill ran self-test on the restored copy.
        assert!(text(&out.stdout).contains("\nself-test on a scratch "), "{}", text(&out.stdout));
        assert!(text(&out.stdout).contains("status: status API reads the database"), "{}", text(&out.stdout));
        assert!(text(&out.stdout).contains(" passed, 0 failed"), "{}", text(&out.stdout));
        let out = run_with(&tdb, &["restore", "--yes", archive.to_str().unwrap()], "", &[]);
        ok(&out);
        assert!(text(&out.stdout).contains("the previous data is in"), "{}", text(&out.stdout));

        let db = open(&tdb).await;
        let rows = pairs(&db).await;
        // No torn transaction: every k has both rows.
        assert!(rows.iter().all(|(_, n)| *n == 2), "torn pairs: {:?}", rows.iter().filter(|(_, n)| *n != 2).collect::<Vec<_>>());
        // Every pair committed before the backup started is there, with no gap.
        let ks: Vec<i64> = rows.iter().map(|(k, _)| *k).collect();
        assert_eq!(ks, (1..=ks.len() as i64).collect::<Vec<_>>());
        assert!(ks.len() as i64 >= before, "{} pairs restored, {before} committed before the backup", ks.len());
        assert!(ks.len() as i64 <= total);
        if let Db::Sqlite(pool, _) = &db {
            let check: String = sqlx::query_scalar("PRAGMA integrity_check").fetch_one(pool).await.unwrap();
            assert_eq!(check, "ok");
        }
        let name: String = with_db!(&db, pool => sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT display_name FROM {profile} WHERE member = 7"))).fetch_one(pool).await.unwrap());
        assert_eq!(name, "Nancy");
        let alerts = open_alerts(&tdb).await;
        let n: i64 = with_db!(&alerts, pool => sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {alert} WHERE owner = 7"))).fetch_one(pool).await.unwrap());
        assert_eq!(n, 1, "the alerts file came back");
        alerts.close().await;
        if backend == hearth::testing::Backend::Sqlite {
            let aside = std::fs::read_dir(tdb.dir().join("data")).unwrap().flatten()
                .find(|e| e.file_name().to_string_lossy().starts_with("pre-restore-")).unwrap().path();
            assert!(aside.join("test.alerts.db").is_file(), "the live alerts file is set aside with the main one");
        }
        if let Db::Postgres(pool) = &db {
            let schemas: Vec<(String, String)> = sqlx::query_as(
                "SELECT tablename::text, schemaname::text FROM pg_tables WHERE tablename IN ('members_profile', 'likes_like', 'hearth_user') AND schemaname NOT LIKE 'hearth\\_pre\\_restore%' ORDER BY 1",
            ).fetch_all(pool).await.unwrap();
            assert_eq!(schemas, [("hearth_user".into(), "public".into()), ("likes_like".into(), "likes".into()), ("members_profile".into(), "members".into())]);
        }
        // The accounts table came back too, and the app still migrates.
        db.close().await;
        ok(&run_with(&tdb, &["migrate"], "", &[]));
        // Backing up and restoring again works: what the first restore set
        // aside is neither in the new archive nor in the way.
        let out = run_with(&tdb, &["backup"], "", &[]);
        ok(&out);
        let again = tdb.dir().join(written(&out));
        let out = run_with(&tdb, &["restore", "--yes", again.to_str().unwrap()], "", &[]);
        ok(&out);
        if backend == hearth::testing::Backend::Postgres {
            assert!(text(&out.stdout).contains("_members"), "module schemas are set aside too: {}", text(&out.stdout));
        }
        let db = open(&tdb).await;
        assert_eq!(pairs(&db).await.len(), ks.len());
        db.close().await;
    }

    async fn damaged_foreign_and_newer_archives_are_refused_and_nothing_is_touched(backend) {
        let Some(tdb) = TestDb::create(backend).await else { return };
        ok(&run_with(&tdb, &["migrate"], "", &[]));
        ok(&run_with(&tdb, &["user", "create", "ana@example.com"], "a long enough passphrase\n", &[]));
        let out = run_with(&tdb, &["backup"], "", &[]);
        ok(&out);
        let archive = tdb.dir().join(written(&out));
        let bytes = std::fs::read(&archive).unwrap();
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("flipped", { let mut b = bytes.clone(); let i = b.len() / 2; b[i] ^= 0x55; b }, "damaged"),
            ("truncated", bytes[..bytes.len() * 2 / 3].to_vec(), "damaged"),
            ("empty", Vec::new(), "damaged"),
            ("not gzip", b"hello, this is not an archive".to_vec(), "damaged"),
        ];
        for (name, content, expect) in cases {
            let path = tdb.dir().join(format!("{}.tar.gz", name.replace(' ', "_")));
            std::fs::write(&path, content).unwrap();
            for args in [vec!["restore", "--verify"], vec!["restore", "--yes"]] {
                let mut all = args.clone();
                all.push(path.to_str().unwrap());
                let out = run_with(&tdb, &all, "", &[]);
                assert_eq!(out.status.code(), Some(1), "{name} {args:?}: {}", text(&out.stderr));
                let err = text(&out.stderr);
                assert!(err.contains(expect), "{name} {args:?}: {err}");
                assert!(!err.contains("panicked"), "{err}");
            }
        }
        // A backup of another app, and one made by a newer binary.
        let other = forged(&tdb, &archive, "otherapp", None);
        let out = run_with(&tdb, &["restore", "--yes", other.to_str().unwrap()], "", &[]);
        assert_eq!(out.status.code(), Some(1));
        assert!(text(&out.stderr).contains("not of `pancake`"), "{}", text(&out.stderr));
        let newer = forged(&tdb, &archive, "pancake", Some("home"));
        let out = run_with(&tdb, &["restore", "--verify", newer.to_str().unwrap()], "", &[]);
        assert_eq!(out.status.code(), Some(1));
        assert!(text(&out.stderr).contains("made by a newer pancake"), "{}", text(&out.stderr));
        // Without --yes and without a terminal there is no one to confirm.
        let out = run_with(&tdb, &["restore", archive.to_str().unwrap()], "pancake\n", &[]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
        assert!(text(&out.stderr).contains("--yes"));
        // Bad arguments are usage errors.
        let out = run_with(&tdb, &["restore"], "", &[]);
        assert_eq!(out.status.code(), Some(2));
        let out = run_with(&tdb, &["restore", "--yes", "--verify", archive.to_str().unwrap()], "", &[]);
        assert_eq!(out.status.code(), Some(2));
        // Nothing was touched: the account is still there, nothing was set aside.
        let out = run_with(&tdb, &["user", "list"], "", &[]);
        ok(&out);
        assert!(text(&out.stdout).contains("ana@example.com"));
        let aside = std::fs::read_dir(tdb.dir().join("data")).unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("pre-restore-"));
        assert!(!aside, "nothing is set aside when a restore is refused");
    }

    async fn a_restore_waits_for_the_server_to_stop(backend) {
        let Some(tdb) = TestDb::create(backend).await else { return };
        ok(&run_with(&tdb, &["migrate"], "", &[]));
        let out = run_with(&tdb, &["backup"], "", &[]);
        ok(&out);
        let archive = tdb.dir().join(written(&out));
        let (server, _) = serve(&tdb, &[]).await;
        let out = run_with(&tdb, &["restore", "--yes", archive.to_str().unwrap()], "", &[]);
        assert_eq!(out.status.code(), Some(1));
        let err = text(&out.stderr);
        assert!(err.contains("stop") && (err.contains("running") || err.contains("connection")), "{err}");
        let stopped = sigterm_and_wait(server);
        assert!(stopped.status.success());
        ok(&run_with(&tdb, &["restore", "--yes", archive.to_str().unwrap()], "", &[]));
    }
}

/// Rewrites `archive` with its manifest's app set to `app`, and with a
/// migration of `newer_module` this binary does not have, re-checksummed so
/// that only the content check can refuse it.
fn forged(tdb: &TestDb, archive: &Path, app: &str, newer_module: Option<&str>) -> PathBuf {
    use hearth::ops::archive::{ArchiveWriter, ManifestMigration, extract};
    use hearth::ops::progress::Progress;
    let unpacked = tdb
        .dir()
        .join(format!("unpacked-{app}-{}", newer_module.is_some()));
    std::fs::create_dir_all(&unpacked).unwrap();
    let mut manifest = extract(archive, &unpacked, &Progress::hidden(), u64::MAX).unwrap();
    manifest.app = app.to_owned();
    if let Some(module) = newer_module {
        manifest.migrations.push(ManifestMigration {
            module: module.to_owned(),
            version: 99,
            name: "from_the_future".into(),
            checksum: "0".repeat(64),
        });
    }
    let out = tdb
        .dir()
        .join(format!("forged-{app}-{}.tar.gz", newer_module.is_some()));
    let mut w = ArchiveWriter::create(&out).unwrap();
    for e in manifest.entries.clone() {
        w.add_file(&e.path, &unpacked.join(&e.path), &Progress::hidden())
            .unwrap();
    }
    w.finish(manifest).unwrap();
    out
}

/// The usual reason to restore: the live SQLite file is damaged beyond
/// opening. The restore still works and sets the damaged file aside as it is.
#[tokio::test]
async fn a_database_too_damaged_to_open_is_restored_over() {
    let tdb = TestDb::create(hearth::testing::Backend::Sqlite)
        .await
        .unwrap();
    ok(&run_with(&tdb, &["migrate"], "", &[]));
    let out = run_with(&tdb, &["backup"], "", &[]);
    ok(&out);
    let archive = written(&out);
    let file = PathBuf::from(tdb.url().trim_start_matches("sqlite://"));
    let garbage = b"this is not a database file, it was overwritten by accident ".repeat(200);
    std::fs::write(&file, &garbage).unwrap();
    for side in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{side}", file.display()));
    }
    // The damage is real: the app cannot open it.
    let out = run_with(&tdb, &["migrate", "--status"], "", &[]);
    assert!(!out.status.success(), "{}", text(&out.stdout));

    let out = run_with(
        &tdb,
        &["restore", "--yes", archive.to_str().unwrap()],
        "",
        &[],
    );
    ok(&out);
    assert!(
        text(&out.stderr).contains("cannot be opened"),
        "{}",
        text(&out.stderr)
    );
    let status = run_with(&tdb, &["migrate", "--status"], "", &[]);
    ok(&status);
    // The damaged file is kept, byte for byte, where the restore said.
    let printed = text(&out.stdout);
    let dir = printed
        .split("the previous data is in ")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .unwrap_or_else(|| panic!("{printed}"))
        .trim();
    // Printed as the data dir was given (relative to where pancake ran).
    let aside: Vec<PathBuf> = std::fs::read_dir(tdb.dir().join(dir))
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .flatten()
        .map(|f| f.path())
        .collect();
    assert!(
        aside
            .iter()
            .any(|p| std::fs::read(p).is_ok_and(|b| b == garbage)),
        "{aside:?}"
    );
}
