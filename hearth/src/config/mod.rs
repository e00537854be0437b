//! Configuration: defaults, `hearth.toml`, a git-ignored secrets file, `HEARTH_*`
//! environment variables and command-line flags, merged in that order.
//!
//! Nested keys map to environment variables with a double underscore:
//! `http.body_limit` is `HEARTH_HTTP__BODY_LIMIT`. `DATABASE_URL` is read
//! without the prefix, as most hosting tools set it. Any problem is reported as
//! one [`ConfigError`] line naming the key, and the CLI exits with code 2.

mod duration;
mod error;
mod secret;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

pub use crate::db::config::DbConfig;
pub use duration::Duration;
pub use error::ConfigError;
pub use secret::Secret;

/// The name of the secrets file that sits next to `hearth.toml`.
pub const SECRETS_FILE: &str = "hearth.secrets.toml";

/// Where the app runs: development (readable logs, no `Secure` cookies) or production.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RunEnv {
    /// Development (the default).
    #[default]
    Dev,
    /// Production.
    Prod,
}

/// The effective configuration of an app.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `dev` or `prod` (`HEARTH_ENV`).
    pub env: RunEnv,
    /// Address to listen on (`--addr`, `HEARTH_ADDR`).
    pub addr: SocketAddr,
    /// Directory for the SQLite database and other files (`--data-dir`, `HEARTH_DATA_DIR`).
    pub data_dir: PathBuf,
    /// Database URL (`DATABASE_URL`); default `sqlite://<data_dir>/<app>.db`.
    pub database_url: Option<Secret>,
    /// Log filter in `tracing` syntax (`HEARTH_LOG`); `RUST_LOG` overrides it.
    pub log: String,
    /// Key for signing cookies and tokens; keep it in the secrets file or the environment.
    pub secret_key: Option<Secret>,
    /// The address users reach the app at (`https://example.com`), for links
    /// in mail; default `http://<addr>`.
    pub public_url: Option<String>,
    /// HTTP server limits and timeouts.
    pub http: HttpConfig,
    /// Database pool limits and timeouts.
    pub db: DbConfig,
    /// TLS certificate and key; when both are set the server speaks HTTPS only.
    pub tls: TlsConfig,
    /// Job queue: leases, retries, concurrency.
    pub jobs: crate::jobs::JobsConfig,
    /// Domain events: batches, retries, retention.
    pub events: crate::events::EventsConfig,
    /// Pub/sub retention and browser streams.
    pub realtime: crate::realtime::RealtimeConfig,
    /// Accounts, sessions, passwords and the auth routes' rate limits.
    pub auth: crate::auth::AuthConfig,
    /// Outgoing mail.
    pub mail: crate::mail::MailConfig,
    /// Backups: where, how many, when.
    pub backup: crate::ops::BackupConfig,
    /// Metrics: `/metrics` and statsd.
    pub metrics: crate::telemetry::MetricsConfig,
    /// Operator notifications: mail to admins, a webhook.
    pub notify: crate::telemetry::NotifyConfig,
}

/// HTTP limits and timeouts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Largest request body in bytes; larger gets 413.
    pub body_limit: u64,
    /// Time a handler has to produce a response; longer gets 503.
    pub request_timeout: Duration,
    /// Longest a request body may stall before the next bytes; longer gets 408.
    pub body_idle_timeout: Duration,
    /// Least average rate of a request body in bytes per second, checked
    /// once `body_idle_timeout` has passed; slower gets 408.
    pub body_min_rate: u64,
    /// Requests handled at once; more get 503 at once rather than queueing without bound.
    pub concurrency_limit: usize,
    /// Open connections at once; the listener stops accepting above it.
    pub max_connections: usize,
    /// Open connections at once from one client address (an IPv6 client by
    /// its /64); more are closed as soon as they are accepted. 0: no cap.
    /// Connections from `auth.trusted_proxies` are not counted.
    pub max_connections_per_ip: usize,
    /// Time a client has to send its request headers.
    pub header_read_timeout: Duration,
    /// Time a TLS handshake may take.
    pub tls_handshake_timeout: Duration,
    /// Time in-flight requests get to finish after SIGTERM/SIGINT.
    pub shutdown_timeout: Duration,
    /// `Cache-Control: max-age` for static files.
    pub static_max_age: Duration,
    /// Whether responses carry the security headers (CSP, nosniff,
    /// Referrer-Policy, X-Frame-Options, and HSTS in prod).
    pub security_headers: bool,
    /// The Content-Security-Policy sent when a handler sets none; empty sends none.
    pub content_security_policy: String,
}
/// TLS settings.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert: Option<PathBuf>,
    /// PEM private key.
    pub key: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            env: RunEnv::Dev,
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("data"),
            database_url: None,
            log: "info".into(),
            secret_key: None,
            public_url: None,
            http: HttpConfig::default(),
            db: DbConfig::default(),
            tls: TlsConfig::default(),
            jobs: crate::jobs::JobsConfig::default(),
            events: crate::events::EventsConfig::default(),
            realtime: crate::realtime::RealtimeConfig::default(),
            auth: crate::auth::AuthConfig::default(),
            mail: crate::mail::MailConfig::default(),
            backup: crate::ops::BackupConfig::default(),
            metrics: crate::telemetry::MetricsConfig::default(),
            notify: crate::telemetry::NotifyConfig::default(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            body_limit: 2 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            body_idle_timeout: Duration::from_secs(10),
            body_min_rate: 1024,
            concurrency_limit: 1024,
            max_connections: 10_000,
            max_connections_per_ip: 256,
            header_read_timeout: Duration::from_secs(10),
            tls_handshake_timeout: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(20),
            static_max_age: Duration::from_secs(3600),
            security_headers: true,
            content_security_policy: crate::http::DEFAULT_CSP.to_owned(),
        }
    }
}

/// Command-line values that override everything else.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--addr`.
    pub addr: Option<SocketAddr>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
}

/// Environment variables with the `HEARTH_` prefix that are not config keys.
const RESERVED_ENV: &[&str] = &["config", "test_postgres_url"];

impl Config {
    /// The configuration file used when none is named.
    pub const DEFAULT_FILE: &'static str = "hearth.toml";

    /// Loads the configuration: defaults, the config file, the secrets file
    /// beside it, the environment, then `overrides`. With `path` set the file
    /// must exist; without it `hearth.toml` in the working directory is read if
    /// present. A missing secrets file is fine.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        let file = match path {
            Some(p) if !p.is_file() => {
                return Err(ConfigError::new(
                    "config",
                    format!("the file {} does not exist", p.display()),
                ));
            }
            Some(p) => p.to_path_buf(),
            None => PathBuf::from(Self::DEFAULT_FILE),
        };
        let secrets = file
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join(SECRETS_FILE);
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        for f in [&file, &secrets] {
            if f.is_file() {
                fig = fig.merge(Toml::file_exact(f));
            }
        }
        fig = fig
            .merge(
                Env::prefixed("HEARTH_")
                    .filter(|k| !RESERVED_ENV.contains(&k.as_str()))
                    .split("__"),
            )
            .merge(Env::raw().only(&["DATABASE_URL"]));
        if let Some(addr) = overrides.addr {
            fig = fig.merge(Serialized::default("addr", addr));
        }
        if let Some(dir) = &overrides.data_dir {
            fig = fig.merge(Serialized::default("data_dir", dir));
        }
        let cfg: Config = fig.extract().map_err(|e| from_figment(&fig, e))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.http.body_limit == 0 {
            return Err(ConfigError::new(
                "http.body_limit",
                "must be greater than 0",
            ));
        }
        if self.http.concurrency_limit == 0 {
            return Err(ConfigError::new(
                "http.concurrency_limit",
                "must be greater than 0",
            ));
        }
        if self.http.max_connections == 0 {
            return Err(ConfigError::new(
                "http.max_connections",
                "must be greater than 0",
            ));
        }
        if self.http.request_timeout.is_zero() {
            return Err(ConfigError::new(
                "http.request_timeout",
                "must be greater than 0",
            ));
        }
        if self.http.body_idle_timeout.is_zero() {
            return Err(ConfigError::new(
                "http.body_idle_timeout",
                "must be greater than 0",
            ));
        }
        if axum::http::HeaderValue::from_str(&self.http.content_security_policy).is_err() {
            return Err(ConfigError::new(
                "http.content_security_policy",
                "must be printable ASCII on one line",
            ));
        }
        if let Err(e) = crate::telemetry::check_filter(&self.log) {
            return Err(ConfigError::new(
                "log",
                format!("is not a valid log filter: {e}"),
            ));
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::new("data_dir", "must not be empty"));
        }
        match (&self.tls.cert, &self.tls.key) {
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "tls.key",
                    "is missing while tls.cert is set",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "tls.cert",
                    "is missing while tls.key is set",
                ));
            }
            _ => {}
        }
        if let Some(key) = &self.secret_key
            && key.expose().len() < 32
        {
            return Err(ConfigError::new(
                "secret_key",
                "must be at least 32 characters long",
            ));
        }
        if let Some(url) = &self.database_url {
            crate::db::DbKind::from_url(url.expose())
                .map_err(|e| ConfigError::new("database_url", e.to_string()))?;
        }
        if self.realtime.max_stream_age.is_zero() {
            return Err(ConfigError::new(
                "realtime.max_stream_age",
                "must be greater than 0",
            ));
        }
        if self.realtime.keep_alive.is_zero() {
            return Err(ConfigError::new(
                "realtime.keep_alive",
                "must be greater than 0",
            ));
        }
        if let Some(url) = &self.public_url {
            let ok = (url.starts_with("http://") || url.starts_with("https://"))
                && !url.ends_with('/')
                && url.len() > "https://".len();
            if !ok {
                return Err(ConfigError::new(
                    "public_url",
                    "must look like https://example.com[/prefix], without a trailing slash",
                ));
            }
        }
        self.auth.validate()?;
        self.mail.validate(self.is_prod())?;
        self.backup.validate()?;
        self.metrics.validate()?;
        self.notify.validate()?;
        self.events.validate()?;
        self.jobs.validate()
    }

    /// The database URL in effect: the configured one, or a SQLite file in the data dir.
    pub fn database_url(&self, app_name: &str) -> String {
        match &self.database_url {
            Some(url) => url.expose().to_owned(),
            None => format!("sqlite://{}/{}.db", self.data_dir.display(), app_name),
        }
    }

    /// How long a long poll may wait: `realtime.poll_wait`, kept a second
    /// under `http.request_timeout` so the answer beats the timeout.
    pub fn long_poll_wait(&self) -> std::time::Duration {
        let ceiling = self
            .http
            .request_timeout
            .get()
            .saturating_sub(std::time::Duration::from_secs(1));
        self.realtime.poll_wait.get().min(ceiling)
    }

    /// The address users reach the app at, for links: `public_url`, or
    /// `http(s)://<addr>` (with `localhost` for an unspecified address).
    pub fn public_url(&self) -> String {
        if let Some(url) = &self.public_url {
            return url.clone();
        }
        let scheme = if self.tls.cert.is_some() {
            "https"
        } else {
            "http"
        };
        if self.addr.ip().is_unspecified() {
            format!("{scheme}://localhost:{}", self.addr.port())
        } else {
            format!("{scheme}://{}", self.addr)
        }
    }

    /// True in production.
    pub fn is_prod(&self) -> bool {
        self.env == RunEnv::Prod
    }

    /// The effective configuration as TOML, secrets masked.
    pub fn to_masked_toml(&self) -> String {
        // Secret's Serialize masks the value, so this cannot leak.
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot print config: {e}\n"))
    }
}

/// Turns figment's error into one line that names the key and its source.
fn from_figment(fig: &Figment, e: figment::Error) -> ConfigError {
    let key = e.path.join(".");
    let origin = e
        .metadata
        .as_ref()
        .or_else(|| fig.find_metadata(&key))
        .map(|m| match &m.source {
            Some(src) => format!(" (from {src})"),
            None => format!(" (from {})", m.name),
        })
        .unwrap_or_default();
    let problem = match &e.kind {
        figment::error::Kind::UnknownField(field, _) => {
            return ConfigError {
                key: if e.path.last() == Some(field) {
                    key
                } else if e.path.is_empty() {
                    field.clone()
                } else {
                    format!("{key}.{field}")
                },
                origin,
                problem: "unknown key".into(),
            };
        }
        // Parse errors come with a multi-line source snippet; keep the words only.
        kind => kind
            .to_string()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('|') && !l.contains(" | "))
            .collect::<Vec<_>>()
            .join("; "),
    };
    ConfigError {
        key,
        origin,
        problem,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_database_is_sqlite_in_data_dir() {
        let cfg = Config::default();
        assert_eq!(cfg.database_url("pancake"), "sqlite://data/pancake.db");
    }

    #[test]
    fn pool_size_is_set_or_picked_by_engine() {
        let mut db = DbConfig::default();
        assert_eq!(db.pool_size(crate::DbKind::Sqlite), 10);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let pg = db.pool_size(crate::DbKind::Postgres);
        assert_eq!(pg as usize, (2 * cores).max(4));
        db.max_connections = 3;
        assert_eq!(db.pool_size(crate::DbKind::Postgres), 3);
        assert_eq!(db.pool_size(crate::DbKind::Sqlite), 3);
    }

    #[test]
    fn masked_toml_hides_secrets() {
        let mut cfg = Config {
            secret_key: Some(Secret::new("0123456789abcdef0123456789abcdef-very-secret")),
            database_url: Some(Secret::new("postgres://app:hunter2@db/app")),
            ..Config::default()
        };
        let out = cfg.to_masked_toml();
        assert!(!out.contains("very-secret"), "{out}");
        assert!(!out.contains("hunter2"), "{out}");
        assert!(out.contains("postgres://app:********@db/app"), "{out}");
        // A password in the query, and a webhook whose path is its secret.
        cfg.database_url = Some(Secret::new("postgres://app@db/app?password=hunter2"));
        cfg.notify.webhook = Some(Secret::new(
            "https://hooks.example.com/services/T0/B0/hunter3",
        ));
        let out = cfg.to_masked_toml();
        assert!(
            !out.contains("hunter2") && !out.contains("hunter3"),
            "{out}"
        );
        assert!(
            out.contains("postgres://app@db/app?password=********"),
            "{out}"
        );
        assert!(out.contains("https://hooks.example.com/********"), "{out}");
    }
}
