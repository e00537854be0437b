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

/// The statements that create role and database `name` with `password`.
/// The password goes to the server as a SCRAM-SHA-256 verifier, never in
/// clear: DDL takes no bind parameters, so it would be in the statement's
/// text, which the server may log (`log_statement = 'ddl'`, errors).
fn role_statements(name: &str, password: &str, salt: &[u8]) -> [String; 3] {
    let role = quote_ident(name);
    // The verifier is base64 and `$`, `:` and digits: no quote can occur.
    let verifier = scram_verifier(password, salt);
    [
        format!(
            "CREATE ROLE {role} LOGIN PASSWORD '{verifier}' NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION"
        ),
        format!("CREATE DATABASE {role} OWNER {role}"),
        format!("REVOKE ALL ON DATABASE {role} FROM PUBLIC"),
    ]
}

/// PostgreSQL's stored form of a SCRAM-SHA-256 password (RFC 5802 / 7677),
/// which it accepts in `PASSWORD '…'` as already encrypted:
/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
fn scram_verifier(password: &str, salt: &[u8]) -> String {
    use base64::Engine as _;
    use hmac::{Hmac, Mac};
    use sha2::{Digest, Sha256};
    const ITERATIONS: u32 = 4096;
    let b64 = base64::engine::general_purpose::STANDARD;
    let salted: [u8; 32] =
        pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(password.as_bytes(), salt, ITERATIONS);
    // HMAC pads a key shorter than its block with zeros; padding it here
    // gives the same MAC through the infallible fixed-size constructor.
    let mut block = [0_u8; 64];
    block[..32].copy_from_slice(&salted);
    let key = |label: &[u8]| {
        let mut mac = <Hmac<Sha256> as hmac::digest::KeyInit>::new(&block.into());
        mac.update(label);
        mac.finalize().into_bytes()
    };
    let stored = Sha256::digest(key(b"Client Key"));
    let server = key(b"Server Key");
    format!(
        "SCRAM-SHA-256${ITERATIONS}:{}${}:{}",
        b64.encode(salt),
        b64.encode(stored),
        b64.encode(server)
    )
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
    let password = random_hex()?;
    let salt: [u8; 16] = random_hex()?
        .as_bytes()
        .get(..16)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| OpsError::Failed("no randomness for the password salt".into()))?;
    for sql in role_statements(name, &password, &salt) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_role_password_is_sent_as_a_scram_verifier() {
        let password = "0123456789abcdef0123456789abcdef";
        let statements = role_statements("app", password, b"0123456789abcdef");
        assert!(
            statements.iter().all(|s| !s.contains(password)),
            "{statements:?}"
        );
        assert!(
            statements[0].contains("PASSWORD 'SCRAM-SHA-256$4096:MDEyMzQ1Njc4OWFiY2RlZg==$"),
            "{}",
            statements[0]
        );
    }

    #[test]
    fn the_verifier_matches_a_known_one() {
        // RFC 7677's example password and salt; the keys were computed
        // separately with Python's hashlib (pbkdf2_hmac and hmac).
        use base64::Engine as _;
        let salt = base64::engine::general_purpose::STANDARD
            .decode("W22ZaJ0SNY7soEsUEjb6gQ==")
            .unwrap();
        assert_eq!(
            scram_verifier("pencil", &salt),
            "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="
        );
    }
}
