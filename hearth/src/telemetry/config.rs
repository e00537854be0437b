//! `[metrics]` and `[notify]` settings.

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, Duration, Secret};

/// Metrics: the Prometheus endpoint and the optional statsd sender.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Whether requests, jobs and the pool are measured and `/metrics` is
    /// served. On by default.
    pub enabled: bool,
    /// A bearer token that may read `/metrics` besides signed-in admins, for
    /// a Prometheus server (`Authorization: Bearer <token>`). Keep it in the
    /// secrets file; at least 16 characters.
    pub token: Option<Secret>,
    /// `host:port` of a statsd server to send metrics to over UDP; none by default.
    pub statsd: Option<String>,
    /// Prefix of every statsd metric name; default the app's name.
    pub statsd_prefix: Option<String>,
    /// How often gauges (queue depth, pool, process, cron) are sampled for
    /// statsd, and the database is checked for `notify`.
    pub sample_interval: Duration,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            token: None,
            statsd: None,
            statsd_prefix: None,
            sample_interval: Duration::from_secs(15),
        }
    }
}

impl MetricsConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(t) = &self.token
            && t.expose().len() < 16
        {
            return Err(ConfigError::new(
                "metrics.token",
                "must be at least 16 characters",
            ));
        }
        if let Some(addr) = &self.statsd
            && !addr.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
            })
        {
            return Err(ConfigError::new(
                "metrics.statsd",
                "must be host:port, e.g. 127.0.0.1:8125",
            ));
        }
        if self.sample_interval.get() < std::time::Duration::from_secs(1) {
            return Err(ConfigError::new(
                "metrics.sample_interval",
                "must be at least 1s",
            ));
        }
        Ok(())
    }
}

/// Operator notifications: where they go and how many may go.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotifyConfig {
    /// Mail each notification to the admins (through the job queue).
    pub mail_admins: bool,
    /// A URL that receives each notification as a JSON POST.
    pub webhook: Option<Secret>,
    /// When set, webhook bodies are signed: `X-Hearth-Signature:
    /// sha256=<hex HMAC-SHA256 of the body>`.
    pub webhook_secret: Option<Secret>,
    /// Time limit for one webhook POST.
    pub webhook_timeout: Duration,
    /// An event of the same kind about the same thing is sent at most once
    /// in this window; the repeats are counted and reported with the next one.
    pub dedup_window: Duration,
    /// At most this many notifications are mailed or posted per hour, all
    /// kinds together; past it they are only logged.
    pub max_per_hour: u32,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            mail_admins: false,
            webhook: None,
            webhook_secret: None,
            webhook_timeout: Duration::from_secs(5),
            dedup_window: Duration::from_secs(600),
            max_per_hour: 30,
        }
    }
}

impl NotifyConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.webhook {
            let u = url.expose();
            if !(u.starts_with("http://") || u.starts_with("https://"))
                || reqwest::Url::parse(u).is_err()
            {
                return Err(ConfigError::new(
                    "notify.webhook",
                    "must be an http:// or https:// URL",
                ));
            }
        }
        if self.webhook_timeout.is_zero() {
            return Err(ConfigError::new(
                "notify.webhook_timeout",
                "must be greater than 0",
            ));
        }
        if self.max_per_hour == 0 {
            return Err(ConfigError::new(
                "notify.max_per_hour",
                "must be greater than 0 (leave webhook and mail_admins unset to send nothing)",
            ));
        }
        Ok(())
    }
}
