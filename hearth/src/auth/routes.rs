//! The JSON auth routes under `/api/auth/…`.
//!
//! Routes a visitor calls before signing in (`csrf`, `signup`, `login`,
//! `logout`) are auth routes: they sit before the gatekeeper and check the
//! CSRF token against the caller's session themselves, an anonymous
//! pre-session if need be. Routes for signed-in users (`me`,
//! `change-password`, `destroy`, `logout-everywhere`) sit behind the
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
use crate::auth::tokens::Secret;
use crate::auth::users::normalize_email;
use crate::auth::{Auth, Loaded, Session, USER_DESTROYED, User};
use crate::error::Error;
use crate::http::Json;

/// The routes before the gatekeeper.
pub(crate) fn public() -> Router<AppState> {
    Router::new()
        .route("/api/auth/csrf", get(csrf))
        .route("/api/auth/signup", post(signup))
        .route("/api/auth/login", post(login))
        .route("/api/auth/logout", post(logout))
}

/// The routes behind the gatekeeper and the CSRF check.
pub(crate) fn signed_in() -> Router<AppState> {
    Router::new()
        .route("/api/auth/me", get(me))
        .route("/api/auth/change-password", post(change_password))
        .route("/api/auth/destroy", post(destroy))
        .route("/api/auth/logout-everywhere", post(logout_everywhere))
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
    tx.commit().await?;
    if let Some(id) = created {
        tracing::info!(user_id = id, "account created");
    }
    let body = Accepted {
        status: "check_email",
        message: "if the address can be used, a message is on its way to it",
    };
    Ok(no_store((StatusCode::ACCEPTED, Json(body)).into_response()))
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
