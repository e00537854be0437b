//! The account flows, once, for every front end: the JSON routes in
//! [`routes`](super::routes) and an app's HTML pages call the same
//! functions, so a rule (a rate limit, a rotation, an answer that must not
//! reveal an account) cannot differ between them.
//!
//! Before sign-in, requests come with an [`AuthRequest`] (JSON) or
//! [`AuthForm`] (HTML form): the caller's session, checked against the
//! CSRF token, their address for rate limits, and the body.

use axum::extract::{Form, FromRef, FromRequest, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::auth::guard::{self, CurrentUser};
use crate::auth::mailing::{
    self, RECOVER_MAIL, RESET_KIND, RecoverMail, SIGNUP_MAIL, SignupMail, VERIFY_KIND,
};
use crate::auth::tokens::Secret;
use crate::auth::users::normalize_email;
use crate::auth::{Auth, Found, Loaded, Session, USER_DESTROYED, User};
use crate::error::Error;
use crate::http::Json;

/// A request to an auth route before the gatekeeper, with a JSON body: the
/// caller's session (checked against the CSRF token), their address, and
/// the body.
pub struct AuthRequest<T> {
    /// The session the CSRF token matched; anonymous before sign-in.
    pub session: Session,
    /// The client address, for rate limits.
    pub client: String,
    /// The body.
    pub body: T,
}

/// Like [`AuthRequest`], for an HTML form (`application/x-www-form-urlencoded`
/// with a `csrf_token` field, which `T` may ignore).
pub struct AuthForm<T> {
    /// The session the CSRF token matched; anonymous before sign-in.
    pub session: Session,
    /// The client address, for rate limits.
    pub client: String,
    /// The form.
    pub body: T,
}

/// Loads the session and checks the CSRF token; the request comes back
/// with its body ready to parse.
async fn checked(auth: &Auth, req: Request) -> Result<(Session, String, Request), Response> {
    let session = match auth.load(req.headers()).await {
        Ok(Loaded::Valid(s)) => s,
        Ok(Loaded::Forged) => return Err(guard::forged(auth, &req)),
        Ok(Loaded::Ended) => return Err(guard::ended(auth)),
        Ok(Loaded::Absent) => {
            return Err(Error::forbidden(
                "no session to check the CSRF token against; load the form (or GET /api/auth/csrf) first",
            )
            .with_code("csrf_failed")
            .into_response());
        }
        Err(e) => return Err(e.into_response()),
    };
    let client = guard::client_ip(auth, req.headers(), crate::http::current_peer());
    let req = guard::check_csrf(auth, &session, req)
        .await
        .map_err(IntoResponse::into_response)?;
    Ok((session, client, req))
}

impl<T, S> FromRequest<S> for AuthRequest<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
    Auth: FromRef<S>,
{
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        let (session, client, req) = checked(&Auth::from_ref(state), req).await?;
        let Json(body) = Json::<T>::from_request(req, state)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(Self {
            session,
            client,
            body,
        })
    }
}

impl<T, S> FromRequest<S> for AuthForm<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
    Auth: FromRef<S>,
{
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        let (session, client, req) = checked(&Auth::from_ref(state), req).await?;
        let Form(body) = Form::<T>::from_request(req, state).await.map_err(|e| {
            Error::bad_request(
                "invalid_form",
                format!("the form could not be read: {}", e.body_text()),
            )
            .into_response()
        })?;
        Ok(Self {
            session,
            client,
            body,
        })
    }
}

/// The hidden field that carries a CSRF token in a form: in an askama
/// template `{{ csrf }}` renders `<input type="hidden" name="csrf_token"
/// value="…">` (a token is URL-safe base64, so it needs no escaping).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CsrfField(String);

impl CsrfField {
    /// The field for `token` (as [`Auth::csrf_token`] gives it).
    pub fn new(token: &str) -> Self {
        // Keep only what a token can hold, so the markup can never break.
        Self(
            token
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect(),
        )
    }

    /// The token alone.
    pub fn token(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for CsrfField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            r#"<input type="hidden" name="{}" value="{}">"#,
            guard::CSRF_FIELD,
            self.0
        )
    }
}

impl askama::filters::HtmlSafe for CsrfField {}

/// The session a page's forms bind their CSRF token to: the caller's, or a
/// new anonymous one whose cookie the page must set.
#[derive(Debug)]
pub struct PageSession {
    /// The caller's live session, if any.
    pub session: Option<Session>,
    /// The CSRF token to put in the page's forms.
    pub csrf_token: String,
    /// `Set-Cookie` for a session started for this page.
    pub set_cookie: Option<HeaderValue>,
}

impl PageSession {
    /// The hidden form field with the CSRF token.
    pub fn field(&self) -> CsrfField {
        CsrfField::new(&self.csrf_token)
    }

    /// Whether someone is signed in.
    pub fn user(&self) -> Option<&User> {
        self.session.as_ref().and_then(|s| s.user.as_ref())
    }

    /// Adds the cookie (if a session was started) and `Cache-Control:
    /// no-store` (the page holds a CSRF token) to a response.
    pub fn finish(&self, res: impl IntoResponse) -> Response {
        match &self.set_cookie {
            Some(c) => with_cookie(res.into_response(), c.clone()),
            None => no_store(res.into_response()),
        }
    }
}

/// The caller's session for a page with forms, starting an anonymous one
/// when there is none (a forged cookie is logged and replaced).
pub async fn page_session(auth: &Auth, headers: &HeaderMap) -> Result<PageSession, Error> {
    match auth.load(headers).await? {
        Loaded::Valid(s) => Ok(PageSession {
            csrf_token: auth.csrf_token(&s),
            session: Some(s),
            set_cookie: None,
        }),
        other => {
            if matches!(other, Loaded::Forged) {
                tracing::warn!(
                    suspicious = true,
                    request_id = crate::http::current_request_id().unwrap_or_default(),
                    "a session cookie with a bad signature was presented"
                );
            }
            let secret = auth.start_anonymous()?;
            Ok(PageSession {
                session: None,
                csrf_token: auth.csrf_for(&secret),
                set_cookie: Some(auth.session_cookie_header(&secret)?),
            })
        }
    }
}

/// Adds `Set-Cookie` and `Cache-Control: no-store` to a response.
pub fn with_cookie(mut res: Response, cookie: HeaderValue) -> Response {
    res.headers_mut().append(header::SET_COOKIE, cookie);
    no_store(res)
}

/// `Cache-Control: no-store`: answers that carry tokens are not cached.
pub fn no_store(mut res: Response) -> Response {
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// 429 when a limiter says the key is over its limit.
fn limited(retry: Option<u64>) -> Result<(), Error> {
    match retry {
        Some(secs) => Err(Error::too_many_requests(secs)),
        None => Ok(()),
    }
}

/// Counts one event for `key`: 429 once it is over `rate`.
async fn count(auth: &Auth, key: &str, rate: crate::auth::Rate) -> Result<(), Error> {
    limited(auth.limiter().hit(key, rate).await?)
}

/// The answer to a login with a wrong email or password.
pub fn invalid_credentials() -> Error {
    Error::new(
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
        "the email or the password is wrong",
    )
}

/// The answer to a link that does not work.
pub fn invalid_token() -> Error {
    Error::bad_request(
        "invalid_token",
        "this link is not valid: it was used already, has expired or is incomplete",
    )
    .with_field("token")
}

/// Key of the failed-login counter of an account (also counts wrong
/// current passwords on change-password and destroy).
fn failures_key(email: &str) -> String {
    format!("login:account:{email}")
}

/// A new session: its token (for the cookie and the CSRF token) and account.
#[derive(Debug)]
pub struct SignedIn {
    /// The session token.
    pub secret: Secret,
    /// The account, as of signing in.
    pub user: User,
}

impl SignedIn {
    /// `Set-Cookie` for the new session.
    pub fn cookie(&self, auth: &Auth) -> Result<HeaderValue, Error> {
        auth.session_cookie_header(&self.secret)
    }

    /// The new session's CSRF token.
    pub fn csrf_token(&self, auth: &Auth) -> String {
        auth.csrf_for(&self.secret)
    }
}

/// Email and password, as signup and login take them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// The email address.
    pub email: String,
    /// The password.
    pub password: String,
}

/// Signs up: checks the whitelist and the password policy, hashes, creates
/// the account unless the address has one, and queues the right mail. The
/// outcome is the same whether or not the account existed.
pub async fn signup(auth: &Auth, client: &str, email: &str, password: &str) -> Result<(), Error> {
    let limits = &auth.config().limits;
    count(auth, &format!("signup:ip:{client}"), limits.signup_per_ip).await?;
    let email = normalize_email(email)?;
    if !auth.config().may_sign_up(&email) {
        return Err(Error::forbidden("signup is open to invited addresses only")
            .with_code("signup_closed")
            .with_field("email"));
    }
    auth.passwords()
        .check_policy(password, &email, "password")?;
    // Hash first, whether or not the account exists, so both take as long.
    let hash = auth.passwords().hash(password).await?;
    let mut tx = auth.db().begin().await?;
    let created = auth.users().create(&mut tx, &email, &hash).await?;
    let job = SIGNUP_MAIL.job(&SignupMail {
        email,
        created: created.is_some(),
    });
    auth.jobs()
        .enqueue(&mut tx, job)
        .await
        .map_err(Error::from)?;
    tx.commit().await?;
    if let Some(id) = created {
        tracing::info!(user_id = id, "account created");
    }
    Ok(())
}

/// Signs in, replacing `session` (whatever it was) with a new one.
pub async fn login(
    auth: &Auth,
    session: &Session,
    client: &str,
    email: &str,
    password: &str,
) -> Result<SignedIn, Error> {
    let limits = &auth.config().limits;
    count(auth, &format!("login:ip:{client}"), limits.login_per_ip).await?;
    let email = normalize_email(email)?;
    if !auth.passwords().within_max_len(password) {
        return Err(Error::validation("password", "the password is too long"));
    }
    // The attempt is counted before the password is checked, in one atomic
    // upsert: a check made before counting lets every concurrent guess pass
    // while none of them has been counted yet. A success forgets the count.
    let key = failures_key(&email);
    count(auth, &key, limits.login_failures_per_account).await?;
    let found = auth.users().by_email(&email).await?;
    let verdict = auth
        .passwords()
        .verify(password, found.as_ref().map(|(_, h)| h.as_str()))
        .await?;
    let user = match found {
        Some((user, hash)) if verdict.matches && !user.disabled => {
            if verdict.needs_rehash {
                rehash(auth, user.id, &hash, password).await;
            }
            user
        }
        _ => return Err(invalid_credentials()),
    };
    auth.limiter().clear(&key).await?;
    let signed_in = replace_session(auth, Some(session), user).await?;
    tracing::info!(user_id = signed_in.user.id, "signed in");
    Ok(signed_in)
}

/// Replaces the stored hash with one made with the current parameters; a
/// failure only costs another try at the next login.
async fn rehash(auth: &Auth, id: i64, old: &str, password: &str) {
    match auth.passwords().hash(password).await {
        Ok(new) => {
            if let Err(e) = auth.users().rehash(id, old, &new).await {
                tracing::warn!(error = %e, user_id = id, "could not store the rehashed password");
            }
        }
        Err(e) => tracing::warn!(error = %e, user_id = id, "could not rehash a password"),
    }
}

/// Ends `old` (if any) and starts a session for `user`, in one transaction.
async fn replace_session(
    auth: &Auth,
    old: Option<&Session>,
    user: User,
) -> Result<SignedIn, Error> {
    let mut tx = auth.db().begin().await?;
    if let Some(old) = old {
        auth.end_session(&mut tx, old).await?;
    }
    let (secret, _) = auth.start_session(&mut tx, &user).await?;
    tx.commit().await?;
    Ok(SignedIn { secret, user })
}

/// Ends `session`.
pub async fn logout(auth: &Auth, session: &Session) -> Result<(), Error> {
    let mut tx = auth.db().begin().await?;
    auth.end_session(&mut tx, session).await?;
    tx.commit().await?;
    Ok(())
}

/// Ends every session of the signed-in account; returns how many.
pub async fn logout_everywhere(auth: &Auth, me: &CurrentUser) -> Result<u64, Error> {
    let mut tx = auth.db().begin().await?;
    let ended = auth.end_sessions_of(&mut tx, me.user.id).await?;
    // Whoever else held a session may have asked for a reset link too.
    revoke_links(auth, &mut tx, me.user.id).await?;
    tx.commit().await?;
    tracing::info!(
        user_id = me.user.id,
        sessions = ended,
        "signed out everywhere"
    );
    Ok(ended)
}

/// The enabled account a link's token was issued to, if it still exists.
async fn holder(auth: &Auth, token: &crate::auth::Token) -> Result<Option<User>, Error> {
    let Some(id) = token.owner.as_deref().and_then(|o| o.parse::<i64>().ok()) else {
        return Ok(None);
    };
    Ok(auth
        .users()
        .by_id(id)
        .await?
        .map(|(u, _)| u)
        .filter(|u| !u.disabled))
}

/// Confirms the address a verification token was sent to. When `session`
/// belongs to that account it is replaced (its rights grew) and the new one
/// is returned.
pub async fn verify_email(
    auth: &Auth,
    session: &Session,
    client: &str,
    token: &str,
) -> Result<Option<SignedIn>, Error> {
    count(
        auth,
        &format!("reset:ip:{client}"),
        auth.config().limits.reset_per_ip,
    )
    .await?;
    let mut tx = auth.db().begin().await?;
    let token = match auth.tokens().consume(&mut tx, VERIFY_KIND, token).await? {
        Found::Valid(t) => t,
        Found::Expired(_) | Found::Missing => return Err(invalid_token()),
    };
    // The address must still be the one the link was sent to.
    let user = match holder(auth, &token).await? {
        Some(u) if Some(u.email.as_str()) == token.data.as_deref() => u,
        _ => return Err(invalid_token()),
    };
    auth.users().mark_verified(&mut tx, user.id).await?;
    let mine = session.user.as_ref().is_some_and(|u| u.id == user.id);
    let rotated = if mine {
        auth.end_session(&mut tx, session).await?;
        let verified = User {
            verified: true,
            ..user.clone()
        };
        let (secret, _) = auth.start_session(&mut tx, &verified).await?;
        Some(SignedIn {
            secret,
            user: verified,
        })
    } else {
        None
    };
    tx.commit().await?;
    tracing::info!(user_id = user.id, "email verified");
    Ok(rotated)
}

/// Queues a new verification link for the signed-in account unless it is
/// verified already.
pub async fn resend_verification(auth: &Auth, me: &CurrentUser) -> Result<(), Error> {
    count(
        auth,
        &format!("recover:account:{}", me.user.email),
        auth.config().limits.recover_per_account,
    )
    .await?;
    if !me.user.verified {
        let mut tx = auth.db().begin().await?;
        mailing::queue_verification(auth, &mut tx, me.user.id).await?;
        tx.commit().await?;
    }
    Ok(())
}

/// Queues a reset link for `email` if it has an account; the outcome is the
/// same either way.
pub async fn recover(auth: &Auth, client: &str, email: &str) -> Result<(), Error> {
    let limits = &auth.config().limits;
    count(auth, &format!("recover:ip:{client}"), limits.recover_per_ip).await?;
    let email = normalize_email(email)?;
    count(
        auth,
        &format!("recover:account:{email}"),
        limits.recover_per_account,
    )
    .await?;
    let mut tx = auth.db().begin().await?;
    auth.jobs()
        .enqueue(&mut tx, RECOVER_MAIL.job(&RecoverMail { email }))
        .await
        .map_err(Error::from)?;
    tx.commit().await?;
    Ok(())
}

/// Whether a reset token works, without using it (a page checks before
/// showing its form).
pub async fn reset_token_works(auth: &Auth, token: &str) -> Result<bool, Error> {
    Ok(matches!(
        auth.tokens().find(RESET_KIND, token).await?,
        Found::Valid(_)
    ))
}

/// Sets a new password with a reset token, ends every session of the
/// account and confirms its address (the link proved it).
pub async fn reset(
    auth: &Auth,
    client: &str,
    token: &str,
    new_password: &str,
) -> Result<(), Error> {
    count(
        auth,
        &format!("reset:ip:{client}"),
        auth.config().limits.reset_per_ip,
    )
    .await?;
    // Look first, so that a refused password does not use the link up.
    let found = match auth.tokens().find(RESET_KIND, token).await? {
        Found::Valid(t) => t,
        Found::Expired(_) | Found::Missing => return Err(invalid_token()),
    };
    let user = match holder(auth, &found).await? {
        Some(u) => u,
        None => return Err(invalid_token()),
    };
    auth.passwords()
        .check_policy(new_password, &user.email, "new_password")?;
    let hash = auth.passwords().hash(new_password).await?;
    let mut tx = auth.db().begin().await?;
    // Of two uses of one link, only the one that deletes it goes on.
    if !matches!(
        auth.tokens().consume(&mut tx, RESET_KIND, token).await?,
        Found::Valid(_)
    ) {
        return Err(invalid_token());
    }
    auth.users().set_password(&mut tx, user.id, &hash).await?;
    auth.users().mark_verified(&mut tx, user.id).await?;
    auth.end_sessions_of(&mut tx, user.id).await?;
    tx.commit().await?;
    auth.limiter().clear(&failures_key(&user.email)).await?;
    tracing::info!(user_id = user.id, "password reset; sessions ended");
    Ok(())
}

/// Revokes every reset link of account `user_id`: after the password
/// changes or every session is ended, a link mailed earlier (perhaps to
/// someone who had taken over the account) must not set it again.
async fn revoke_links(auth: &Auth, tx: &mut crate::db::Tx, user_id: i64) -> Result<(), Error> {
    auth.tokens()
        .revoke_owned(tx, RESET_KIND, &user_id.to_string())
        .await?;
    Ok(())
}

/// Checks the signed-in user's current password. Every attempt counts
/// towards `reauth_per_account` whatever its outcome, so that one session
/// cannot keep the hashing threads busy, and like a login attempt towards
/// the account's failures, so that these flows cannot be used to guess the
/// password; both are counted before the hash is checked.
async fn confirm_password(auth: &Auth, user: &User, password: &str) -> Result<(), Error> {
    let limits = &auth.config().limits;
    count(
        auth,
        &format!("reauth:account:{}", user.id),
        limits.reauth_per_account,
    )
    .await?;
    let key = failures_key(&user.email);
    count(auth, &key, limits.login_failures_per_account).await?;
    let hash = auth
        .users()
        .by_id(user.id)
        .await?
        .map(|(_, h)| h)
        .ok_or_else(|| Error::unauthorized("sign-in is required"))?;
    let ok = auth.passwords().within_max_len(password)
        && auth
            .passwords()
            .verify(password, Some(&hash))
            .await?
            .matches;
    if ok {
        auth.limiter().clear(&key).await?;
        Ok(())
    } else {
        Err(
            Error::validation("password", "the current password is wrong")
                .with_code("wrong_password"),
        )
    }
}

/// Sets a new password for the signed-in account, ends every other session
/// and replaces the caller's.
pub async fn change_password(
    auth: &Auth,
    me: &CurrentUser,
    password: &str,
    new_password: &str,
) -> Result<SignedIn, Error> {
    auth.passwords()
        .check_policy(new_password, &me.user.email, "new_password")?;
    confirm_password(auth, &me.user, password).await?;
    let hash = auth.passwords().hash(new_password).await?;
    let mut tx = auth.db().begin().await?;
    auth.users()
        .set_password(&mut tx, me.user.id, &hash)
        .await?;
    auth.end_sessions_of(&mut tx, me.user.id).await?;
    revoke_links(auth, &mut tx, me.user.id).await?;
    let (secret, _) = auth.start_session(&mut tx, &me.user).await?;
    tx.commit().await?;
    tracing::info!(
        user_id = me.user.id,
        "password changed; other sessions and reset links ended"
    );
    Ok(SignedIn {
        secret,
        user: me.user.clone(),
    })
}

#[derive(Serialize)]
struct Destroyed<'a> {
    user_id: i64,
    email: &'a str,
}

/// Deletes the signed-in account, its sessions and tokens, and publishes
/// [`USER_DESTROYED`] (to open pages) and the domain event
/// [`AccountDeleted`](crate::auth::AccountDeleted) (to modules) in the same
/// transaction.
pub async fn destroy(auth: &Auth, me: &CurrentUser, password: &str) -> Result<(), Error> {
    confirm_password(auth, &me.user, password).await?;
    let mut tx = auth.db().begin().await?;
    auth.users().delete(&mut tx, me.user.id).await?;
    auth.tokens()
        .revoke_all_owned(&mut tx, &me.user.id.to_string())
        .await?;
    let signal = Destroyed {
        user_id: me.user.id,
        email: &me.user.email,
    };
    auth.pubsub()
        .publish(&mut tx, USER_DESTROYED, &signal)
        .await
        .map_err(|e| Error::internal(anyhow::anyhow!(e)))?;
    let deleted = crate::auth::AccountDeleted {
        account: me.user.id,
    };
    auth.events().publish(&mut tx, &deleted).await?;
    tx.commit().await?;
    tracing::info!(user_id = me.user.id, "account destroyed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_csrf_field_is_a_hidden_input_that_cannot_break_out() {
        let f = CsrfField::new("abc-_XYZ09");
        assert_eq!(
            f.to_string(),
            r#"<input type="hidden" name="csrf_token" value="abc-_XYZ09">"#
        );
        let f = CsrfField::new("x\"><script>");
        assert_eq!(f.token(), "xscript");
    }
}
