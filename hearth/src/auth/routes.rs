//! The JSON auth routes under `/api/auth/…`.
//!
//! Routes a visitor calls before signing in (`csrf`, `signup`, `login`,
//! `logout`, `verify-email`, `recover`, `reset`) are auth routes: they sit before the gatekeeper and check the
//! CSRF token against the caller's session themselves, an anonymous
//! pre-session if need be. Routes for signed-in users (`me`,
//! `change-password`, `destroy`, `logout-everywhere`,
//! `resend-verification`) sit behind the
//! gatekeeper and the CSRF check like any signed-in route.
//!
//! No answer says whether an email has an account: signup answers the same
//! whether it created one or not, and a failed login does not say which of
//! email and password was wrong. The work done is the same too (a hash is
//! computed either way), so timing does not tell either.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::{ConnectInfo, FromRequest, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::app::AppState;
use crate::auth::guard::{self, CurrentUser};
use crate::auth::mailing::{
    self, RECOVER_MAIL, RESET_KIND, RecoverMail, SIGNUP_MAIL, SignupMail, VERIFY_KIND,
};
use crate::auth::tokens::Secret;
use crate::auth::users::normalize_email;
use crate::auth::{Auth, Found, Loaded, Session, USER_DESTROYED, User};
use crate::error::Error;
use crate::http::Json;

/// The routes before the gatekeeper.
pub(crate) fn public() -> Router<AppState> {
    Router::new()
        .route("/api/auth/csrf", get(csrf))
        .route("/api/auth/signup", post(signup))
        .route("/api/auth/login", post(login))
        .route("/api/auth/logout", post(logout))
        .route("/api/auth/verify-email", post(verify_email))
        .route("/api/auth/recover", post(recover))
        .route("/api/auth/reset", post(reset))
}

/// The routes behind the gatekeeper and the CSRF check.
pub(crate) fn signed_in() -> Router<AppState> {
    Router::new()
        .route("/api/auth/me", get(me))
        .route("/api/auth/change-password", post(change_password))
        .route("/api/auth/destroy", post(destroy))
        .route("/api/auth/logout-everywhere", post(logout_everywhere))
        .route("/api/auth/resend-verification", post(resend_verification))
}

/// An account as the API shows it.
#[derive(Debug, Serialize)]
pub struct UserView {
    /// Row id.
    pub id: i64,
    /// Email.
    pub email: String,
    /// Whether the email is confirmed.
    pub verified: bool,
    /// Whether the account is an admin.
    pub admin: bool,
}

impl UserView {
    fn of(auth: &Auth, u: &User) -> Self {
        Self {
            id: u.id,
            email: u.email.clone(),
            verified: u.verified,
            admin: auth.is_admin(u),
        }
    }
}

/// What `csrf`, `login` and `change-password` answer.
#[derive(Debug, Serialize)]
struct SessionView {
    csrf_token: String,
    signed_in: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<UserView>,
}

/// A request to an auth route before the gatekeeper: the caller's session
/// (checked against the CSRF token), their address, and the JSON body.
pub struct AuthRequest<T> {
    /// The session the CSRF token matched; anonymous before sign-in.
    pub session: Session,
    /// The client address, for rate limits.
    pub client: String,
    /// The body.
    pub body: T,
}

impl<T: DeserializeOwned> FromRequest<AppState> for AuthRequest<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Response> {
        let auth = state.auth();
        let session = match auth.load(req.headers()).await {
            Ok(Loaded::Valid(s)) => s,
            Ok(Loaded::Forged) => return Err(guard::forged(auth, &req)),
            Ok(Loaded::Ended) => return Err(guard::ended(auth)),
            Ok(Loaded::Absent) => {
                return Err(Error::forbidden(
                    "no session to check the CSRF token against; GET /api/auth/csrf first",
                )
                .with_code("csrf_failed")
                .into_response());
            }
            Err(e) => return Err(e.into_response()),
        };
        let client = guard::client_ip(
            auth,
            req.headers(),
            req.extensions().get::<ConnectInfo<SocketAddr>>(),
        );
        let req = guard::check_csrf(state, &session, req)
            .await
            .map_err(IntoResponse::into_response)?;
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

/// Adds `Set-Cookie` and `Cache-Control: no-store` to a response.
fn with_cookie(mut res: Response, cookie: HeaderValue) -> Response {
    res.headers_mut().append(header::SET_COOKIE, cookie);
    no_store(res)
}

fn no_store(mut res: Response) -> Response {
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// 429 when `hit` says the key is over its limit.
fn limited(retry: Option<u64>) -> Result<(), Error> {
    match retry {
        Some(secs) => Err(Error::too_many_requests(secs)),
        None => Ok(()),
    }
}

fn invalid_credentials() -> Error {
    Error::new(
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
        "the email or the password is wrong",
    )
}

/// Key of the failed-login counter of an account (also counts wrong
/// current passwords on change-password and destroy).
fn failures_key(email: &str) -> String {
    format!("login:account:{email}")
}

/// `GET /api/auth/csrf`: the caller's CSRF token and whether they are signed
/// in, starting an anonymous session when they have none.
async fn csrf(State(state): State<AppState>, req: Request) -> Result<Response, Error> {
    let auth = state.auth();
    let loaded = auth.load(req.headers()).await?;
    if let Loaded::Valid(s) = &loaded {
        let view = SessionView {
            csrf_token: auth.csrf_token(s),
            signed_in: s.user.is_some(),
            user: s.user.as_ref().map(|u| UserView::of(auth, u)),
        };
        return Ok(no_store(Json(view).into_response()));
    }
    if matches!(loaded, Loaded::Forged) {
        // Log it, then carry on with a fresh session as for any newcomer.
        let _ = guard::forged(auth, &req);
    }
    let mut tx = state.db().begin().await?;
    let (secret, _) = auth.start_session(&mut tx, None).await?;
    tx.commit().await?;
    let view = SessionView {
        csrf_token: auth.csrf_for(&secret),
        signed_in: false,
        user: None,
    };
    Ok(with_cookie(
        Json(view).into_response(),
        auth.session_cookie_header(&secret)?,
    ))
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

#[derive(Serialize)]
struct Accepted {
    status: &'static str,
    message: &'static str,
}

/// `POST /api/auth/signup`: creates an account unless the email has one;
/// the answer is the same either way.
async fn signup(
    State(state): State<AppState>,
    req: AuthRequest<Credentials>,
) -> Result<Response, Error> {
    let auth = state.auth();
    let limits = &auth.config().limits;
    limited(
        auth.limiter()
            .hit(&format!("signup:ip:{}", req.client), limits.signup_per_ip)
            .await?,
    )?;
    let email = normalize_email(&req.body.email)?;
    if !auth.config().may_sign_up(&email) {
        return Err(Error::forbidden("signup is open to invited addresses only")
            .with_code("signup_closed")
            .with_field("email"));
    }
    let password = &req.body.password;
    auth.passwords()
        .check_policy(password, &email, "password")?;
    // Hash first, whether or not the account exists, so both take as long.
    let hash = auth.passwords().hash(password).await?;
    let mut tx = state.db().begin().await?;
    let created = auth.users().create(&mut tx, &email, &hash).await?;
    let job = SIGNUP_MAIL.job(&SignupMail {
        email,
        created: created.is_some(),
    });
    state
        .jobs()
        .enqueue(&mut tx, job)
        .await
        .map_err(Error::from)?;
    tx.commit().await?;
    if let Some(id) = created {
        tracing::info!(user_id = id, "account created");
    }
    Ok(check_email())
}

/// The one answer of signup and recover.
fn check_email() -> Response {
    let body = Accepted {
        status: "check_email",
        message: "if the address can be used, a message is on its way to it",
    };
    no_store((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// A token from an emailed link.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBody {
    /// The token.
    pub token: String,
}

/// An email address alone.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailBody {
    /// The address.
    pub email: String,
}

/// A reset token and the new password.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResetBody {
    /// The token from the emailed link.
    pub token: String,
    /// The new password.
    pub new_password: String,
}

fn invalid_token() -> Error {
    Error::bad_request(
        "invalid_token",
        "this link is not valid: it was used already, has expired or is incomplete",
    )
    .with_field("token")
}

/// `POST /api/auth/verify-email`: confirms the address the token was sent
/// to. A session of the same account is rotated, as its rights grew.
async fn verify_email(
    State(state): State<AppState>,
    req: AuthRequest<TokenBody>,
) -> Result<Response, Error> {
    let auth = state.auth();
    limited(
        auth.limiter()
            .hit(
                &format!("reset:ip:{}", req.client),
                auth.config().limits.reset_per_ip,
            )
            .await?,
    )?;
    let mut tx = state.db().begin().await?;
    let token = match state
        .tokens()
        .consume(&mut tx, VERIFY_KIND, &req.body.token)
        .await?
    {
        Found::Valid(t) => t,
        Found::Expired(_) | Found::Missing => return Err(invalid_token()),
    };
    let id: i64 = token
        .owner
        .as_deref()
        .and_then(|o| o.parse().ok())
        .unwrap_or(0);
    // The address must still be the one the link was sent to.
    let user = match auth.users().by_id(id).await? {
        Some((u, _)) if Some(u.email.as_str()) == token.data.as_deref() && !u.disabled => u,
        _ => return Err(invalid_token()),
    };
    auth.users().mark_verified(&mut tx, user.id).await?;
    let mine = req.session.user.as_ref().is_some_and(|u| u.id == user.id);
    let rotated = if mine {
        auth.tokens().revoke(&mut tx, req.session.id).await?;
        let verified = User {
            verified: true,
            ..user.clone()
        };
        Some((
            auth.start_session(&mut tx, Some(&verified)).await?.0,
            verified,
        ))
    } else {
        None
    };
    tx.commit().await?;
    tracing::info!(user_id = user.id, "email verified");
    match rotated {
        Some((secret, verified)) => signed_in_response(auth, &secret, &verified),
        None => Ok(no_store(
            Json(serde_json::json!({ "verified": true, "signed_in": false })).into_response(),
        )),
    }
}

/// `POST /api/auth/resend-verification`: a new verification link for the
/// signed-in account, if it is not verified yet.
async fn resend_verification(
    State(state): State<AppState>,
    me: CurrentUser,
) -> Result<Response, Error> {
    let auth = state.auth();
    limited(
        auth.limiter()
            .hit(
                &format!("recover:account:{}", me.user.email),
                auth.config().limits.recover_per_account,
            )
            .await?,
    )?;
    if !me.user.verified {
        let mut tx = state.db().begin().await?;
        mailing::queue_verification(&state, &mut tx, me.user.id, &me.user.email).await?;
        tx.commit().await?;
    }
    Ok(check_email())
}

/// `POST /api/auth/recover`: mails a reset link if the address has an
/// account; the answer is the same either way.
async fn recover(
    State(state): State<AppState>,
    req: AuthRequest<EmailBody>,
) -> Result<Response, Error> {
    let auth = state.auth();
    let limits = &auth.config().limits;
    limited(
        auth.limiter()
            .hit(&format!("recover:ip:{}", req.client), limits.recover_per_ip)
            .await?,
    )?;
    let email = normalize_email(&req.body.email)?;
    limited(
        auth.limiter()
            .hit(
                &format!("recover:account:{email}"),
                limits.recover_per_account,
            )
            .await?,
    )?;
    let mut tx = state.db().begin().await?;
    state
        .jobs()
        .enqueue(&mut tx, RECOVER_MAIL.job(&RecoverMail { email }))
        .await
        .map_err(Error::from)?;
    tx.commit().await?;
    Ok(check_email())
}

/// `POST /api/auth/reset`: sets a new password with a reset token, ends
/// every session of the account, and confirms its address (the link proved it).
async fn reset(
    State(state): State<AppState>,
    req: AuthRequest<ResetBody>,
) -> Result<Response, Error> {
    let auth = state.auth();
    limited(
        auth.limiter()
            .hit(
                &format!("reset:ip:{}", req.client),
                auth.config().limits.reset_per_ip,
            )
            .await?,
    )?;
    // Look first, so that a refused password does not use the link up.
    let token = match state.tokens().find(RESET_KIND, &req.body.token).await? {
        Found::Valid(t) => t,
        Found::Expired(_) | Found::Missing => return Err(invalid_token()),
    };
    let id: i64 = token
        .owner
        .as_deref()
        .and_then(|o| o.parse().ok())
        .unwrap_or(0);
    let user = match auth.users().by_id(id).await? {
        Some((u, _)) if !u.disabled => u,
        _ => return Err(invalid_token()),
    };
    auth.passwords()
        .check_policy(&req.body.new_password, &user.email, "new_password")?;
    let hash = auth.passwords().hash(&req.body.new_password).await?;
    let mut tx = state.db().begin().await?;
    // Of two uses of one link, only the one that deletes it goes on.
    if !matches!(
        state
            .tokens()
            .consume(&mut tx, RESET_KIND, &req.body.token)
            .await?,
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
    Ok(no_store(
        Json(serde_json::json!({ "password_reset": true })).into_response(),
    ))
}

/// `POST /api/auth/login`: signs in, replacing the caller's session.
async fn login(
    State(state): State<AppState>,
    req: AuthRequest<Credentials>,
) -> Result<Response, Error> {
    let auth = state.auth();
    let limits = &auth.config().limits;
    limited(
        auth.limiter()
            .hit(&format!("login:ip:{}", req.client), limits.login_per_ip)
            .await?,
    )?;
    let email = normalize_email(&req.body.email)?;
    let password = &req.body.password;
    if !auth.passwords().within_max_len(password) {
        return Err(Error::validation("password", "the password is too long"));
    }
    let key = failures_key(&email);
    limited(
        auth.limiter()
            .blocked(&key, limits.login_failures_per_account)
            .await?,
    )?;
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
        _ => {
            auth.limiter()
                .hit(&key, limits.login_failures_per_account)
                .await?;
            return Err(invalid_credentials());
        }
    };
    auth.limiter().clear(&key).await?;
    let secret = replace_session(&state, Some(&req.session), &user).await?;
    tracing::info!(user_id = user.id, "signed in");
    signed_in_response(auth, &secret, &user)
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
    state: &AppState,
    old: Option<&Session>,
    user: &User,
) -> Result<Secret, Error> {
    let auth = state.auth();
    let mut tx = state.db().begin().await?;
    if let Some(old) = old {
        auth.tokens().revoke(&mut tx, old.id).await?;
    }
    let (secret, _) = auth.start_session(&mut tx, Some(user)).await?;
    tx.commit().await?;
    Ok(secret)
}

fn signed_in_response(auth: &Auth, secret: &Secret, user: &User) -> Result<Response, Error> {
    let view = SessionView {
        csrf_token: auth.csrf_for(secret),
        signed_in: true,
        user: Some(UserView::of(auth, user)),
    };
    Ok(with_cookie(
        Json(view).into_response(),
        auth.session_cookie_header(secret)?,
    ))
}

/// An empty JSON object, for routes that take no fields.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

#[derive(Serialize)]
struct SignedOut {
    signed_in: bool,
}

/// `POST /api/auth/logout`: ends the caller's session.
async fn logout(State(state): State<AppState>, req: AuthRequest<Empty>) -> Result<Response, Error> {
    let auth = state.auth();
    let mut tx = state.db().begin().await?;
    auth.tokens().revoke(&mut tx, req.session.id).await?;
    tx.commit().await?;
    Ok(with_cookie(
        Json(SignedOut { signed_in: false }).into_response(),
        auth.clear_cookie_header(),
    ))
}

/// `POST /api/auth/logout-everywhere`: ends every session of the account.
async fn logout_everywhere(
    State(state): State<AppState>,
    me: CurrentUser,
) -> Result<Response, Error> {
    let auth = state.auth();
    let mut tx = state.db().begin().await?;
    let ended = auth.end_sessions_of(&mut tx, me.user.id).await?;
    tx.commit().await?;
    tracing::info!(
        user_id = me.user.id,
        sessions = ended,
        "signed out everywhere"
    );
    Ok(with_cookie(
        Json(SignedOut { signed_in: false }).into_response(),
        auth.clear_cookie_header(),
    ))
}

#[derive(Serialize)]
struct Me {
    user: UserView,
    groups: Vec<String>,
}

/// `GET /api/auth/me`: the signed-in account and its groups.
async fn me(State(state): State<AppState>, me: CurrentUser) -> Result<Response, Error> {
    let auth = state.auth();
    let groups = auth.users().groups(me.user.id).await?;
    Ok(no_store(
        Json(Me {
            user: UserView::of(auth, &me.user),
            groups,
        })
        .into_response(),
    ))
}

/// The current password and a new one.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangePassword {
    /// The current password.
    pub password: String,
    /// The new password.
    pub new_password: String,
}

/// Checks the signed-in user's current password, counting failures like
/// failed logins so these routes cannot be used to guess it.
async fn confirm_password(auth: &Auth, user: &User, password: &str) -> Result<String, Error> {
    let key = failures_key(&user.email);
    let rate = auth.config().limits.login_failures_per_account;
    limited(auth.limiter().blocked(&key, rate).await?)?;
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
        Ok(hash)
    } else {
        auth.limiter().hit(&key, rate).await?;
        Err(
            Error::validation("password", "the current password is wrong")
                .with_code("wrong_password"),
        )
    }
}

/// `POST /api/auth/change-password`: sets a new password, ends every other
/// session of the account and rotates the caller's.
async fn change_password(
    State(state): State<AppState>,
    me: CurrentUser,
    Json(body): Json<ChangePassword>,
) -> Result<Response, Error> {
    let auth = state.auth();
    auth.passwords()
        .check_policy(&body.new_password, &me.user.email, "new_password")?;
    confirm_password(auth, &me.user, &body.password).await?;
    let hash = auth.passwords().hash(&body.new_password).await?;
    let mut tx = state.db().begin().await?;
    auth.users()
        .set_password(&mut tx, me.user.id, &hash)
        .await?;
    auth.end_sessions_of(&mut tx, me.user.id).await?;
    let (secret, _) = auth.start_session(&mut tx, Some(&me.user)).await?;
    tx.commit().await?;
    tracing::info!(
        user_id = me.user.id,
        "password changed; other sessions ended"
    );
    signed_in_response(auth, &secret, &me.user)
}

/// The current password, to confirm a destructive action.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfirmPassword {
    /// The current password.
    pub password: String,
}

#[derive(Serialize)]
struct Destroyed<'a> {
    user_id: i64,
    email: &'a str,
}

/// `POST /api/auth/destroy`: deletes the account, its sessions and tokens,
/// and publishes [`USER_DESTROYED`] in the same transaction.
async fn destroy(
    State(state): State<AppState>,
    me: CurrentUser,
    Json(body): Json<ConfirmPassword>,
) -> Result<Response, Error> {
    let auth = state.auth();
    confirm_password(auth, &me.user, &body.password).await?;
    let mut tx = state.db().begin().await?;
    auth.users().delete(&mut tx, me.user.id).await?;
    auth.tokens()
        .revoke_all_owned(&mut tx, &me.user.id.to_string())
        .await?;
    let signal = Destroyed {
        user_id: me.user.id,
        email: &me.user.email,
    };
    state
        .pubsub()
        .publish(&mut tx, USER_DESTROYED, &signal)
        .await
        .map_err(|e| Error::internal(anyhow::anyhow!(e)))?;
    tx.commit().await?;
    tracing::info!(user_id = me.user.id, "account destroyed");
    Ok(with_cookie(
        Json(SignedOut { signed_in: false }).into_response(),
        auth.clear_cookie_header(),
    ))
}
