//! Running PostgreSQL's `pg_dump` and `pg_restore`: finding them, checking
//! that their major version is the server's, and passing the connection
//! without putting the password on a command line.

use std::path::PathBuf;
use std::process::Stdio;

use super::{OpsError, Target};

/// The path of tool `name`: in `backup.pg_bin_dir` when set, else on `PATH`.
fn tool_path(target: &Target<'_>, name: &str) -> PathBuf {
    match &target.config.backup.pg_bin_dir {
        Some(dir) => dir.join(name),
        None => PathBuf::from(name),
    }
}

/// The server's major version, e.g. 15.
async fn server_major(target: &Target<'_>) -> Result<u32, OpsError> {
    let crate::Db::Postgres(pool) = target.db else {
        return Err(OpsError::Failed("not a PostgreSQL database".into()));
    };
    let num: String = sqlx::query_scalar("SHOW server_version_num")
        .fetch_one(pool)
        .await?;
    let num: u32 = num
        .trim()
        .parse()
        .map_err(|_| OpsError::Failed(format!("unexpected server_version_num {num:?}")))?;
    Ok(num / 10_000)
}

/// Finds tool `name` and checks that its major version is the server's:
/// an older `pg_dump` refuses a newer server, and a newer one writes
/// archives an older `pg_restore` cannot read.
pub(super) async fn checked_tool(target: &Target<'_>, name: &str) -> Result<PathBuf, OpsError> {
    let path = tool_path(target, name);
    let out = tokio::process::Command::new(&path)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| {
            OpsError::Tool(format!(
                "{name} was not found ({}: {e}); install the PostgreSQL client tools of the server's major version (Debian: postgresql-client-N) or set backup.pg_bin_dir",
                path.display()
            ))
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "pg_dump (PostgreSQL) 15.19 (Debian 15.19-0+deb12u1)"
    let major = text
        .split_whitespace()
        .find_map(|w| w.split('.').next()?.parse::<u32>().ok())
        .ok_or_else(|| OpsError::Tool(format!("cannot read {name}'s version from {text:?}")))?;
    let server = server_major(target).await?;
    if major != server {
        return Err(OpsError::Tool(format!(
            "{name} is PostgreSQL {major} but the server is PostgreSQL {server}; use the client tools of version {server} (Debian: postgresql-client-{server}, then backup.pg_bin_dir = \"/usr/lib/postgresql/{server}/bin\")"
        )));
    }
    Ok(path)
}

/// Splits a `postgres://user:password@host/db` URL into the URL without the
/// password and the decoded password, which goes to the tool through
/// `PGPASSWORD` instead of its argument list (visible to every local user).
pub(super) fn split_password(url: &str) -> (String, Option<String>) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_owned(), None);
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return (url.to_owned(), None);
    };
    let Some((user, password)) = userinfo.split_once(':') else {
        return (url.to_owned(), None);
    };
    let decoded = percent_encoding::percent_decode_str(password)
        .decode_utf8_lossy()
        .into_owned();
    (format!("{scheme}://{user}@{host}{tail}"), Some(decoded))
}

/// `url` with its database name replaced by `db`.
pub(super) fn with_database(url: &str, db: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let query = tail.find('?').map_or("", |q| &tail[q..]);
    format!("{scheme}://{authority}/{db}{query}")
}

/// Creates a scratch database `<prefix>_<time>` through `pool` and returns
/// its name. `what` names the purpose in the error (the drill, self-test).
pub(super) async fn create_scratch(
    pool: &sqlx::PgPool,
    prefix: &str,
    what: &str,
) -> Result<String, OpsError> {
    let name = format!("{prefix}_{}", super::stamp().replace('-', "_"));
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE {}",
        super::backup::quote_ident(&name)
    )))
    .execute(pool)
    .await
    .map_err(|e| {
        OpsError::Failed(format!(
            "cannot create the scratch database {name} for {what} ({e}); the role needs CREATEDB, or use an admin connection"
        ))
    })?;
    Ok(name)
}

/// Drops a scratch database made by [`create_scratch`], closing whatever
/// still uses it; a failure is only logged (there is nothing left to undo).
pub(super) async fn drop_scratch(pool: &sqlx::PgPool, name: &str) {
    let dropped = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
        super::backup::quote_ident(name)
    )))
    .execute(pool)
    .await;
    if let Err(e) = dropped {
        tracing::warn!(database = %name, error = %e, "cannot drop a scratch database");
    }
}

/// Runs `tool` with `args` against `url`, within `backup.tool_timeout`.
/// Fails with the tool's own error output.
pub(super) async fn run(
    target: &Target<'_>,
    tool: &std::path::Path,
    url: &str,
    args: &[String],
) -> Result<(), OpsError> {
    let (url, password) = split_password(url);
    let mut cmd = tokio::process::Command::new(tool);
    cmd.args(args)
        .arg(format!("--dbname={url}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(p) = password {
        cmd.env("PGPASSWORD", p);
    }
    let name = tool.file_name().map_or_else(
        || tool.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let child = cmd
        .spawn()
        .map_err(|e| OpsError::Tool(format!("cannot start {name}: {e}")))?;
    let limit = target.config.backup.tool_timeout.get();
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .map_err(|_| {
            OpsError::Failed(format!(
                "{name} took longer than {limit:?} (backup.tool_timeout)"
            ))
        })?
        .map_err(|e| OpsError::Failed(format!("{name} failed: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    Err(OpsError::Failed(format!(
        "{name} failed ({}): {}",
        out.status,
        tail.join(" | ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_leaves_the_url() {
        assert_eq!(
            split_password("postgres://app:s%40cret@db:5432/app?sslmode=require"),
            (
                "postgres://app@db:5432/app?sslmode=require".to_owned(),
                Some("s@cret".to_owned())
            )
        );
        assert_eq!(
            split_password("postgres://postgres@127.0.0.1/x"),
            ("postgres://postgres@127.0.0.1/x".to_owned(), None)
        );
    }

    #[test]
    fn the_database_is_swapped() {
        assert_eq!(
            with_database("postgres://a:b@h:1/app?x=1", "scratch"),
            "postgres://a:b@h:1/scratch?x=1"
        );
        assert_eq!(with_database("postgres://h", "s"), "postgres://h/s");
    }
}
