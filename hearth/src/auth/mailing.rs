//! The mails of the account flows, decided off the request path.
//!
//! Signup and recovery answer the same whether or not an address has an
//! account, and do the same work while answering: they queue one of these
//! jobs with the address. The job then looks the account up and issues the
//! verification or reset token and the message (or tells an existing
//! account that someone tried to sign up with it), in one transaction. So
//! neither the answer nor its timing depends on the account existing.

use serde::{Deserialize, Serialize};

use crate::app::AppState;
use crate::auth::tokens::NewToken;
use crate::jobs::{JobName, JobRun};
use crate::mail::{self, templates};

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

/// After a signup: the verification link, or a note to the existing account.
pub const SIGNUP_MAIL: JobName<SignupMail> = JobName::new("hearth.auth.signup_mail")
    .queue("mail")
    .max_attempts(5);

/// After a recovery request: a reset link, if the address has an account.
pub const RECOVER_MAIL: JobName<RecoverMail> = JobName::new("hearth.auth.recover_mail")
    .queue("mail")
    .max_attempts(5);

/// Issues a verification token for account `user_id` and queues its
/// message, in the caller's transaction.
pub(crate) async fn queue_verification(
    state: &AppState,
    tx: &mut crate::db::Tx,
    user_id: i64,
    email: &str,
) -> anyhow::Result<()> {
    let c = state.auth().config();
    let (secret, _) = state
        .tokens()
        .issue(
            tx,
            NewToken::new(VERIFY_KIND, c.verify_ttl.get())
                .owner(user_id.to_string())
                .data(email)
                .single_use(),
        )
        .await?;
    let link = format!(
        "{}/auth/verify-email?token={}",
        state.config().public_url(),
        secret.expose()
    );
    let message = templates::verify(state.name(), email, &link, c.verify_ttl.get())?;
    mail::enqueue(state.jobs(), tx, &message).await?;
    Ok(())
}

async fn signup_mail(run: JobRun<SignupMail>) -> anyhow::Result<()> {
    let state = &run.state;
    let email = &run.payload.email;
    let Some((user, _)) = state.auth().users().by_email(email).await? else {
        // Deleted since; nothing to say.
        return Ok(());
    };
    let mut tx = state.db().begin().await?;
    if run.payload.created && !user.verified {
        queue_verification(state, &mut tx, user.id, email).await?;
    } else if !run.payload.created {
        let base = state.config().public_url();
        let message = templates::registered(
            state.name(),
            email,
            &format!("{base}/auth/login"),
            &format!("{base}/auth/recover"),
        )?;
        mail::enqueue(state.jobs(), &mut tx, &message).await?;
    }
    tx.commit().await?;
    Ok(())
}

async fn recover_mail(run: JobRun<RecoverMail>) -> anyhow::Result<()> {
    let state = &run.state;
    let email = &run.payload.email;
    let user = match state.auth().users().by_email(email).await? {
        Some((user, _)) if !user.disabled => user,
        _ => return Ok(()),
    };
    let c = state.auth().config();
    let owner = user.id.to_string();
    let mut tx = state.db().begin().await?;
    // Only the newest link works: a mailbox that leaked an older one loses nothing.
    state
        .tokens()
        .revoke_owned(&mut tx, RESET_KIND, &owner)
        .await?;
    let (secret, _) = state
        .tokens()
        .issue(
            &mut tx,
            NewToken::new(RESET_KIND, c.reset_ttl.get())
                .owner(owner)
                .data(email.as_str())
                .single_use(),
        )
        .await?;
    let link = format!(
        "{}/auth/reset?token={}",
        state.config().public_url(),
        secret.expose()
    );
    let message = templates::reset(state.name(), email, &link, c.reset_ttl.get())?;
    mail::enqueue(state.jobs(), &mut tx, &message).await?;
    tx.commit().await?;
    Ok(())
}

/// Registers the two jobs.
pub(crate) fn register_own(ctx: &mut crate::Context<'_>) {
    ctx.job(SIGNUP_MAIL, signup_mail);
    ctx.job(RECOVER_MAIL, recover_mail);
}
