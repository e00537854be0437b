//! The `[mail]` section of the configuration.

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, Duration, Secret};

/// How mail leaves the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// The outbox in development, SMTP in production.
    #[default]
    Auto,
    /// Files in `<data_dir>/outbox/`; nothing is sent.
    Outbox,
    /// The SMTP server of `mail.smtp`.
    Smtp,
}

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Plain connection, then a required STARTTLS upgrade (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: only for a relay on the same machine or network (port 25).
    None,
}

/// Mail settings.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct MailConfig {
    /// Sender, e.g. `pancake <noreply@example.com>`; default `<app> <noreply@localhost>`.
    pub from: Option<String>,
    /// `auto`, `outbox` or `smtp`.
    pub transport: Transport,
    /// The SMTP server.
    pub smtp: SmtpConfig,
}

/// An SMTP server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmtpConfig {
    /// Host name (checked against the certificate).
    pub host: String,
    /// Port; default 587, 465 or 25 by `security`.
    pub port: Option<u16>,
    /// `starttls`, `tls` or `none`.
    pub security: SmtpSecurity,
    /// Login name, when the server wants one.
    pub username: Option<String>,
    /// Password; keep it in the secrets file or the environment.
    pub password: Option<Secret>,
    /// Longest wait for the server at each step.
    pub timeout: Duration,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        Self {
            host: String::new(),
            port: None,
            security: SmtpSecurity::default(),
            username: None,
            password: None,
            timeout: Duration::from_secs(10),
        }
    }
}

impl SmtpConfig {
    /// The port in effect.
    pub fn port_or_default(&self) -> u16 {
        self.port.unwrap_or(match self.security {
            SmtpSecurity::Starttls => 587,
            SmtpSecurity::Tls => 465,
            SmtpSecurity::None => 25,
        })
    }
}

impl MailConfig {
    /// The transport in effect: `auto` resolved by the environment.
    pub fn transport_for(&self, prod: bool) -> Transport {
        match self.transport {
            Transport::Auto if prod => Transport::Smtp,
            Transport::Auto => Transport::Outbox,
            t => t,
        }
    }

    /// Checks values that parse but cannot work.
    pub fn validate(&self, prod: bool) -> Result<(), ConfigError> {
        if let Some(from) = &self.from
            && from.parse::<lettre::message::Mailbox>().is_err()
        {
            return Err(ConfigError::new(
                "mail.from",
                "is not a mailbox like `pancake <noreply@example.com>`",
            ));
        }
        if self.transport_for(prod) == Transport::Smtp && self.smtp.host.trim().is_empty() {
            return Err(ConfigError::new(
                "mail.smtp.host",
                "is required to send mail over SMTP (in prod, or with mail.transport = \"smtp\")",
            ));
        }
        if self.smtp.timeout.is_zero() {
            return Err(ConfigError::new(
                "mail.smtp.timeout",
                "must be greater than 0",
            ));
        }
        if self.smtp.password.is_some() && self.smtp.username.is_none() {
            return Err(ConfigError::new(
                "mail.smtp.username",
                "is missing while mail.smtp.password is set",
            ));
        }
        Ok(())
    }
}
