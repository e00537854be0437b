//! Mail: messages go through the job queue, so a slow or failing SMTP server
//! costs a retry with backoff, never a request.
//!
//! [`enqueue`] puts a [`Mail`] on the queue inside the caller's transaction
//! (the mail exists only if the change it announces commits); the
//! `hearth.mail` job hands it to the [`Mailer`]. The mailer speaks SMTP
//! through lettre (implicit TLS, STARTTLS or, for a relay on the same
//! machine, plain; with or without a login), or, in development, writes each
//! message into `<data_dir>/outbox/` and logs its link: nothing leaves a
//! developer's machine by accident.

mod config;
pub mod templates;

use std::path::PathBuf;
use std::time::Duration;

use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::{Deserialize, Serialize};

pub use config::{MailConfig, SmtpSecurity, Transport};

use crate::config::Config;
use crate::db::Tx;
use crate::jobs::{JobError, JobName, Jobs, Permanent};

/// One message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mail {
    /// Recipient address.
    pub to: String,
    /// Subject line.
    pub subject: String,
    /// Plain-text body.
    pub text: String,
    /// HTML body, sent as the alternative to the text.
    #[serde(default)]
    pub html: Option<String>,
    /// The link the message is about, logged by the outbox in development.
    #[serde(default)]
    pub link: Option<String>,
}

/// The job that sends a [`Mail`]: its own queue, so a backlog of mail never
/// delays other jobs, and patient retries for SMTP servers that are down.
/// A message that dies keeps only its recipient and subject: its body may
/// hold a link that works, and dead jobs are kept for weeks and backed up.
pub const SEND: JobName<Mail> = JobName::new("hearth.mail")
    .queue("mail")
    .max_attempts(12)
    .redact_when_dead(redact);

/// What a dead mail job keeps.
#[derive(Serialize)]
struct Redacted<'a> {
    to: &'a str,
    subject: &'a str,
    redacted: bool,
}

/// A dead message's payload without its body or link. Not a [`Mail`]
/// (`redacted` is not one of its fields), so retrying it fails at once
/// instead of sending an empty message.
fn redact(payload: &str) -> String {
    let mail: Option<Mail> = serde_json::from_str(payload).ok();
    let (to, subject) = mail
        .as_ref()
        .map_or(("", ""), |m| (m.to.as_str(), m.subject.as_str()));
    serde_json::to_string(&Redacted {
        to,
        subject,
        redacted: true,
    })
    .unwrap_or_else(|_| r#"{"redacted":true}"#.to_owned())
}

/// Why a message could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// An address or the message itself is malformed; retrying will not help.
    #[error("invalid message: {0}")]
    Invalid(String),
    /// The SMTP server could not be reached or refused the message.
    #[error("smtp: {0}")]
    Smtp(String),
    /// The outbox could not be written.
    #[error("outbox: {0}")]
    Outbox(#[from] std::io::Error),
}

/// Where a message went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Accepted by the SMTP server.
    Sent,
    /// Written to this file of the outbox.
    Outbox(PathBuf),
}

/// Sends mail the configured way; cheap to clone. Reach it with `state.mailer()`.
#[derive(Clone)]
pub struct Mailer {
    from: Mailbox,
    how: How,
}

#[derive(Clone)]
enum How {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Outbox(PathBuf),
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let how = match &self.how {
            How::Smtp(_) => "smtp".to_owned(),
            How::Outbox(p) => format!("outbox {}", p.display()),
        };
        f.debug_struct("Mailer")
            .field("from", &self.from.to_string())
            .field("how", &how)
            .finish()
    }
}

impl Mailer {
    /// The mailer the config asks for. The config was validated, so the
    /// sender parses; a failure here is reported, not hidden.
    pub fn new(config: &Config, app_name: &str) -> Result<Self, MailError> {
        let mail = &config.mail;
        let from_text = mail
            .from
            .clone()
            .unwrap_or_else(|| format!("{app_name} <noreply@localhost>"));
        let from: Mailbox = from_text
            .parse()
            .map_err(|e| MailError::Invalid(format!("mail.from `{from_text}`: {e}")))?;
        let how = match mail.transport_for(config.is_prod()) {
            Transport::Outbox | Transport::Auto => How::Outbox(config.data_dir.join("outbox")),
            Transport::Smtp => How::Smtp(smtp_transport(mail)?),
        };
        Ok(Self { from, how })
    }

    /// Whether messages only go to the outbox.
    pub fn is_outbox(&self) -> bool {
        matches!(self.how, How::Outbox(_))
    }

    /// Builds the MIME message: text, or text and HTML as alternatives.
    pub fn message(&self, mail: &Mail) -> Result<Message, MailError> {
        let to: Mailbox = mail
            .to
            .parse()
            .map_err(|e| MailError::Invalid(format!("recipient `{}`: {e}", mail.to)))?;
        let builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(mail.subject.clone());
        let text = SinglePart::plain(mail.text.clone());
        let built = match &mail.html {
            Some(html) => builder.multipart(
                MultiPart::alternative()
                    .singlepart(text)
                    .singlepart(SinglePart::html(html.clone())),
            ),
            None => builder.singlepart(text),
        };
        built.map_err(|e| MailError::Invalid(e.to_string()))
    }

    /// Sends one message now (the job does this; so does `mail test`).
    pub async fn send_now(&self, mail: &Mail) -> Result<Delivery, MailError> {
        let message = self.message(mail)?;
        match &self.how {
            How::Smtp(transport) => {
                transport
                    .send(message)
                    .await
                    .map_err(|e| MailError::Smtp(smtp_error_text(&e)))?;
                Ok(Delivery::Sent)
            }
            How::Outbox(dir) => {
                let path = write_outbox(dir, &message.formatted()).await?;
                tracing::info!(
                    to = %mail.to,
                    subject = %mail.subject,
                    link = mail.link.as_deref().unwrap_or(""),
                    file = %path.display(),
                    "mail written to the outbox (development: nothing is sent)"
                );
                Ok(Delivery::Outbox(path))
            }
        }
    }

    /// Checks that the SMTP server answers and accepts the login; the outbox
    /// always passes.
    pub async fn check(&self) -> Result<(), MailError> {
        match &self.how {
            How::Smtp(t) => match t.test_connection().await {
                Ok(true) => Ok(()),
                Ok(false) => Err(MailError::Smtp("the server did not answer NOOP".into())),
                Err(e) => Err(MailError::Smtp(smtp_error_text(&e))),
            },
            How::Outbox(_) => Ok(()),
        }
    }
}

fn smtp_error_text(e: &lettre::transport::smtp::Error) -> String {
    use std::error::Error as _;
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn smtp_transport(mail: &MailConfig) -> Result<AsyncSmtpTransport<Tokio1Executor>, MailError> {
    let smtp = &mail.smtp;
    let host = smtp.host.as_str();
    let builder = match smtp.security {
        SmtpSecurity::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host),
        SmtpSecurity::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host),
        SmtpSecurity::None => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(
            host,
        )),
    }
    .map_err(|e| MailError::Invalid(format!("mail.smtp: {e}")))?;
    let mut builder = builder
        .port(smtp.port_or_default())
        .timeout(Some(smtp.timeout.get()));
    if let Some(user) = &smtp.username {
        let password = smtp
            .password
            .as_ref()
            .map(|p| p.expose().to_owned())
            .unwrap_or_default();
        builder = builder.credentials(Credentials::new(user.clone(), password));
    }
    Ok(builder.build())
}

/// Writes a message as `<unix ms>-<random>.eml`, readable by the owner only.
async fn write_outbox(dir: &std::path::Path, bytes: &[u8]) -> std::io::Result<PathBuf> {
    let owned = dir.to_owned();
    tokio::task::spawn_blocking(move || crate::private_fs::create_dir(&owned))
        .await
        .map_err(std::io::Error::other)??;
    let name = format!("{}-{:08x}.eml", crate::jobs::now_ms(), fastrand::u32(..));
    let path = dir.join(name);
    let mut opts = tokio::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut f = opts.open(&path).await?;
    tokio::io::AsyncWriteExt::write_all(&mut f, bytes).await?;
    f.sync_all().await?;
    Ok(path)
}

/// Puts `mail` on the queue inside the caller's transaction.
pub async fn enqueue(jobs: &Jobs, tx: &mut Tx, mail: &Mail) -> Result<i64, JobError> {
    jobs.enqueue(tx, SEND.job(mail)).await.map(|e| e.id)
}

/// The handler of the `hearth.mail` job: sends the message now.
pub(crate) async fn send(run: crate::jobs::JobRun<Mail, Mailer>) -> anyhow::Result<()> {
    match run.state.send_now(&run.payload).await {
        Ok(_) => Ok(()),
        Err(MailError::Invalid(e)) => Err(Permanent(e).into()),
        Err(e) => Err(e.into()),
    }
}

/// How long `mail test` waits for the whole exchange.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(30);
