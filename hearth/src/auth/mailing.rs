//! The mails of the account flows, decided and sent off the request path.
//!
//! Signup and recovery answer the same whether or not an address has an
//! account, and do the same work while answering: they queue one of these
//! jobs with the address. The job then looks the account up and issues the
//! verification or reset token and sends the message (or tells an existing
//! account that someone tried to sign up with it). So neither the answer
//! nor its timing depends on the account existing.
//!
//! A link is never stored. The jobs carry an address or an account id;
//! when one runs, it issues the token (only its hash is written), builds the
//! message and hands it to the mailer itself, not to the `hearth.mail`
//! queue. If the mailer fails, the token is revoked and the job retries
//! with a fresh one. So a copy of the database (a backup, a dead job kept
//! for weeks, a pending job while SMTP is down) holds no link that works.

use serde::{Deserialize, Serialize};

use crate::auth::Auth;
use crate::auth::tokens::NewToken;
use crate::jobs::{JobName, JobRun, Permanent};
use crate::mail::{self, Mail, MailError, templates};

/// Token kind of email-verification links.
pub const VERIFY_KIND: &str = "verify_email";

/// Token kind of password-reset links.
pub const RESET_KIND: &str = "reset";

/// What the signup job gets.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignupMail {
    /// The normalized address.
    pub email: String,
    /// Whether the signup created the account (else it existed).
    pub created: bool,
}

/// What the recovery job gets.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecoverMail {
    /// The normalized address.
    pub email: String,
}

/// What the job that sends a new verification link gets.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyMail {
    /// The account.
    pub user_id: i64,
}

/// After a signup: the verification link, or a note to the existing account.
/// As patient as `hearth.mail`, since it sends the message itself.
pub const SIGNUP_MAIL: JobName<SignupMail> = JobName::new("hearth.auth.signup_mail")
    .queue("mail")
    .max_attempts(12);

/// After a recovery request: a reset link, if the address has an account.
pub const RECOVER_MAIL: JobName<RecoverMail> = JobName::new("hearth.auth.recover_mail")
    .queue("mail")
    .max_attempts(12);

/// A new verification link for an account that is not verified yet
/// (resend, `user create` without `--verified`).
pub const VERIFY_MAIL: JobName<VerifyMail> = JobName::new("hearth.auth.verify_mail")
    .queue("mail")
    .max_attempts(12);

/// Queues a new verification link for account `user_id`, in the caller's
/// transaction.
pub(crate) async fn queue_verification(
    auth: &Auth,
    tx: &mut crate::db::Tx,
    user_id: i64,
) -> anyhow::Result<()> {
    auth.jobs()
        .enqueue(tx, VERIFY_MAIL.job(&VerifyMail { user_id }))
        .await?;
    Ok(())
}

/// Issues `token` (after revoking the owner's earlier tokens of `replaces`,
/// if given), puts its link (`<public_url><path>?token=…`) in the message
/// `build` makes, and sends it now. When the message cannot be handed over
/// the token is revoked again, so that only links that went out can work,
/// and the error is returned for the job to retry.
async fn send_link(
    auth: &Auth,
    token: NewToken,
    replaces: Option<(&str, &str)>,
    path: &str,
    build: impl FnOnce(&str) -> Result<Mail, askama::Error>,
) -> anyhow::Result<()> {
    let mut tx = auth.db().begin().await?;
    if let Some((kind, owner)) = replaces {
        auth.tokens().revoke_owned(&mut tx, kind, owner).await?;
    }
    let (secret, issued) = auth.tokens().issue(&mut tx, token).await?;
    tx.commit().await?;
    let link = format!("{}{path}?token={}", auth.public_url(), secret.expose());
    let sent = match build(&link) {
        Ok(message) => auth.mailer().send_now(&message).await,
        Err(e) => Err(MailError::Invalid(e.to_string())),
    };
    let Err(e) = sent else {
        return Ok(());
    };
    let revoked = async {
        let mut tx = auth.db().begin().await?;
        auth.tokens().revoke(&mut tx, issued.id).await?;
        tx.commit().await
    };
    if let Err(r) = revoked.await {
        // It expires on its own; nobody has its link.
        tracing::warn!(error = %r, "could not revoke the token of an unsent link");
    }
    match e {
        MailError::Invalid(m) => Err(Permanent(m).into()),
        other => Err(other.into()),
    }
}

/// Sends a verification link for `user_id` at `email`.
async fn send_verification(auth: &Auth, user_id: i64, email: &str) -> anyhow::Result<()> {
    let c = auth.config();
    let token = NewToken::new(VERIFY_KIND, c.verify_ttl.get())
        .owner(user_id.to_string())
        .data(email)
        .single_use();
    send_link(auth, token, None, "/auth/verify-email", |link| {
        templates::verify(auth.app_name(), email, link, c.verify_ttl.get())
    })
    .await
}

pub(crate) async fn signup_mail(run: JobRun<SignupMail, Auth>) -> anyhow::Result<()> {
    let auth = &run.state;
    let email = &run.payload.email;
    let Some((user, _)) = auth.users().by_email(email).await? else {
        // Deleted since; nothing to say.
        return Ok(());
    };
    if run.payload.created {
        if !user.verified {
            send_verification(auth, user.id, email).await?;
        }
        return Ok(());
    }
    // No link in this one: it may go through the queue like any mail.
    let base = auth.public_url();
    let message = templates::registered(
        auth.app_name(),
        email,
        &format!("{base}/auth/login"),
        &format!("{base}/auth/recover"),
    )?;
    let mut tx = auth.db().begin().await?;
    mail::enqueue(auth.jobs(), &mut tx, &message).await?;
    tx.commit().await?;
    Ok(())
}

pub(crate) async fn verify_mail(run: JobRun<VerifyMail, Auth>) -> anyhow::Result<()> {
    let auth = &run.state;
    match auth.users().by_id(run.payload.user_id).await? {
        Some((user, _)) if !user.verified && !user.disabled => {
            send_verification(auth, user.id, &user.email).await
        }
        // Verified, disabled or deleted since: nothing to send.
        _ => Ok(()),
    }
}

pub(crate) async fn recover_mail(run: JobRun<RecoverMail, Auth>) -> anyhow::Result<()> {
    let auth = &run.state;
    let email = &run.payload.email;
    let user = match auth.users().by_email(email).await? {
        Some((user, _)) if !user.disabled => user,
        _ => return Ok(()),
    };
    let c = auth.config();
    let owner = user.id.to_string();
    let token = NewToken::new(RESET_KIND, c.reset_ttl.get())
        .owner(owner.clone())
        .data(email.as_str())
        .single_use();
    // Only the newest link works: a mailbox that leaked an older one loses nothing.
    send_link(
        auth,
        token,
        Some((RESET_KIND, &owner)),
        "/auth/reset",
        |link| templates::reset(auth.app_name(), email, link, c.reset_ttl.get()),
    )
    .await
}
