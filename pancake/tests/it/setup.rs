//! `setup` on a fresh machine, twice: the first run creates the config and
//! secrets files, the data dir, (on PostgreSQL) the app's own role and
//! database, the schema and the first admin; the second changes nothing.

use std::os::unix::fs::PermissionsExt;

use hearth::testing::{Backend, TestDb};

use crate::cli::{run_in, text};

fn admin_url() -> String {
    std::env::var("HEARTH_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// `pancake ARGS` in `dir` with no DATABASE_URL: the database comes from
/// the files `setup` writes.
fn run_here(dir: &std::path::Path, args: &[&str], input: &str) -> std::process::Output {
    run_in(dir, args, input, &[])
}

hearth::db_tests! {
    async fn setup_twice_sets_up_once(backend) {
        // TestDb only decides whether PostgreSQL is reachable; setup makes its own.
        let Some(tdb) = TestDb::create(backend).await else { return };
        let dir = tdb.dir();
        let name = format!(
            "hearth_setup_{}_{}",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos()
        );
        let mut args = vec!["setup", "--admin-email", "root@example.com"];
        let admin = admin_url();
        if backend == Backend::Postgres {
            args.extend(["--admin-url", &admin, "--db-name", &name]);
        }
        let first = run_here(dir, &args, "a long enough passphrase\n");
        assert!(first.status.success(), "{}{}", text(&first.stdout), text(&first.stderr));
        let said = text(&first.stdout);
        for needle in ["wrote hearth.toml", "secret_key", "migration(s)", "created the first admin"] {
            assert!(said.contains(needle), "{needle}: {said}");
        }
        let secrets_path = dir.join("hearth.secrets.toml");
        let secrets = std::fs::read_to_string(&secrets_path).unwrap();
        assert_eq!(std::fs::metadata(&secrets_path).unwrap().permissions().mode() & 0o777, 0o600);
        let key = secrets.lines().find_map(|l| l.strip_prefix("secret_key = ")).unwrap().trim_matches('"').to_owned();
        assert_eq!(key.len(), 64);
        assert!(dir.join("data").is_dir());
        if backend == Backend::Postgres {
            assert!(said.contains(&format!("created the PostgreSQL role and database {name}")), "{said}");
            assert!(secrets.contains(&format!("database_url = \"postgres://{name}:")), "{secrets}");
        }

        let second = run_here(dir, &args, "a long enough passphrase\n");
        assert!(second.status.success(), "{}", text(&second.stderr));
        let said = text(&second.stdout);
        assert!(said.contains("nothing to change"), "{said}");
        assert!(said.contains("an admin exists already"), "{said}");
        assert_eq!(std::fs::read_to_string(&secrets_path).unwrap(), secrets, "secrets are not regenerated");

        let list = run_here(dir, &["user", "list"], "");
        assert!(list.status.success(), "{}", text(&list.stderr));
        assert!(text(&list.stdout).contains("root@example.com"));
        let status = run_here(dir, &["migrate", "--status"], "");
        assert!(!text(&status.stdout).contains("pending"), "{}", text(&status.stdout));

        if backend == Backend::Postgres {
            // The app's role has no more rights than it needs.
            let mut a = <hearth::sqlx::PgConnection as hearth::sqlx::Connection>::connect(&admin).await.unwrap();
            let (superuser, createdb, createrole): (bool, bool, bool) = hearth::sqlx::query_as(
                "SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = $1",
            ).bind(&name).fetch_one(&mut a).await.unwrap();
            assert_eq!((superuser, createdb, createrole), (false, false, false));
            // And cleanup takes it all away again.
            let out = run_here(dir, &["cleanup", "--i-understand-this-deletes-everything", "--admin-url", &admin], "");
            assert!(out.status.success(), "{}", text(&out.stderr));
            let left: i64 = hearth::sqlx::query_scalar("SELECT count(*) FROM pg_roles WHERE rolname = $1")
                .bind(&name).fetch_one(&mut a).await.unwrap();
            assert_eq!(left, 0);
        }
        // Bad names are usage errors.
        let out = run_here(dir, &["setup", "--db-name", "Robert'); DROP"], "");
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    }
}
