//! `setup`'s steps, each idempotent: the data dir, a starter `hearth.toml`,
//! the secrets file with a fresh signing key, and on PostgreSQL the app's
//! own least-privilege role and database.

use std::path::Path;
use std::str::FromStr;

use sqlx::Connection;

use super::OpsError;
use super::archive::create_private;
use super::backup::quote_ident;

/// 32 random bytes as 64 lowercase hex digits.
/// 32 random bytes from the OS as hex: secrets, passwords, tokens.
pub(crate) fn random_hex() -> Result<String, OpsError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| OpsError::Failed(format!("no randomness from the OS: {e}")))?;
    Ok(hex::encode(bytes))
}

/// Creates `dir` (mode 0750) unless it exists. True when it was created.
pub fn ensure_data_dir(dir: &Path) -> Result<bool, OpsError> {
    if dir.is_dir() {
        return Ok(false);
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| OpsError::io(format!("cannot create {}", dir.display()), e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750))
            .map_err(|e| OpsError::io(format!("cannot set the mode of {}", dir.display()), e))?;
    }
    Ok(true)
}

/// Writes a starter `hearth.toml` at `path` unless one exists. True when written.
pub fn ensure_config_file(path: &Path, app: &str) -> Result<bool, OpsError> {
    if path.exists() {
        return Ok(false);
    }
    let text = format!(
        "# {app}'s settings (written by `{app} setup`). Every key and its default:\n\
         # `{app} config` prints the effective values. Secrets go in hearth.secrets.toml.\n\
         env = \"dev\"\n\
         addr = \"127.0.0.1:8080\"\n\
         data_dir = \"data\"\n\
         \n\
         [backup]\n\
         keep = 7\n\
         # schedule = \"30 3 * * *\"\n\
         \n\
         [metrics]\n\
         # statsd = \"127.0.0.1:8125\"\n\
         # token: a bearer token for /metrics, in hearth.secrets.toml under [metrics]\n\
         \n\
         [notify]\n\
         # mail_admins = true\n\
         # webhook: a URL that receives each notification as a JSON POST, in\n\
         # hearth.secrets.toml under [notify] when it carries a token\n"
    );
    std::fs::write(path, text)
        .map_err(|e| OpsError::io(format!("cannot write {}", path.display()), e))?;
    Ok(true)
}

/// Adds what is missing to the secrets file at `path` (mode 0600): a fresh
/// `secret_key`, and `database_url` when given. Returns the keys it added.
pub fn ensure_secrets(
    path: &Path,
    database_url: Option<&str>,
) -> Result<Vec<&'static str>, OpsError> {
    let mut table = match std::fs::read_to_string(path) {
        Ok(text) => text
            .parse::<toml::Table>()
            .map_err(|e| OpsError::Failed(format!("{} is not valid TOML: {e}", path.display())))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => toml::Table::new(),
        Err(e) => return Err(OpsError::io(format!("cannot read {}", path.display()), e)),
    };
    let mut added = Vec::new();
    if !table.contains_key("secret_key") {
        table.insert("secret_key".into(), toml::Value::String(random_hex()?));
        added.push("secret_key");
    }
    if let Some(url) = database_url
        && !table.contains_key("database_url")
    {
        table.insert("database_url".into(), toml::Value::String(url.to_owned()));
        added.push("database_url");
    }
    if added.is_empty() {
        return Ok(added);
    }
    let text = format!(
        "# Secrets: keep this file out of version control (mode 0600).\n{}",
        toml::to_string(&table)
            .map_err(|e| OpsError::Failed(format!("cannot encode secrets: {e}")))?
    );
    let mut file = create_private(path)
        .map_err(|e| OpsError::io(format!("cannot write {}", path.display()), e))?;
    std::io::Write::write_all(&mut file, text.as_bytes())
        .map_err(|e| OpsError::io(format!("cannot write {}", path.display()), e))?;
    Ok(added)
}

/// What provisioning PostgreSQL did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provisioned {
    /// The role and database were created; the URL holds the new password.
    Created {
        /// The app's connection URL.
        url: String,
    },
    /// They existed already.
    Existed,
}

/// Creates the role `name` (login, no superuser, no CREATEDB, no CREATEROLE,
/// a random password) and the database `name` owned by it, closed to
/// everyone else, through `admin_url`. Nothing happens when the role exists.
pub async fn provision_postgres(admin_url: &str, name: &str) -> Result<Provisioned, OpsError> {
    let opts =
        sqlx::postgres::PgConnectOptions::from_str(admin_url)?.application_name("hearth-setup");
    let mut admin = sqlx::PgConnection::connect_with(&opts).await?;
    let exists: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_roles WHERE rolname = $1")
        .bind(name)
        .fetch_one(&mut admin)
        .await?;
    if exists > 0 {
        admin.close().await?;
        return Ok(Provisioned::Existed);
    }
    // DDL takes no bind parameters; the password is hex digits only.
    let password = random_hex()?;
    let role = quote_ident(name);
    let statements = [
        format!(
            "CREATE ROLE {role} LOGIN PASSWORD '{password}' NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION"
        ),
        format!("CREATE DATABASE {role} OWNER {role}"),
        format!("REVOKE ALL ON DATABASE {role} FROM PUBLIC"),
    ];
    for sql in statements {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut admin)
            .await
            .map_err(|e| {
                OpsError::Failed(format!("cannot create the role and database {name}: {e}"))
            })?;
    }
    admin.close().await?;
    let host = opts.get_host();
    let port = opts.get_port();
    Ok(Provisioned::Created {
        url: format!("postgres://{name}:{password}@{host}:{port}/{name}"),
    })
}
