//! The JSON auth routes under `/api/auth/…`, thin over [`flows`](super::flows).
//!
//! Routes a visitor calls before signing in (`csrf`, `signup`, `login`,
//! `logout`, `verify-email`, `recover`, `reset`) are auth routes: they sit
//! before the gatekeeper and check the CSRF token against the caller's
//! session themselves, an anonymous pre-session if need be. Routes for
//! signed-in users (`me`, `change-password`, `destroy`,
//! `logout-everywhere`, `resend-verification`) sit behind the gatekeeper and
//! the CSRF check like any signed-in route.
//!
//! No answer says whether an email has an account: signup and recover
//! answer the same whether or not it has one, and a failed login does not
//! say which of email and password was wrong. The work done is the same too
//! (a hash is computed either way), so timing does not tell either.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::auth::flows::{self, AuthRequest, Credentials, SignedIn, no_store, with_cookie};
use crate::auth::guard::CurrentUser;
use crate::auth::{Auth, User};
use crate::error::Error;
use crate::http::Json;
use crate::module::{Guard, RouteSpec};

/// `/api/auth/csrf`: a CSRF token for the caller's session.
pub const CSRF: RouteSpec = RouteSpec::get("/api/auth/csrf", Guard::Public);
/// `/api/auth/signup`.
pub const SIGNUP: RouteSpec = RouteSpec::post("/api/auth/signup", Guard::Public);
/// `/api/auth/login`.
pub const LOGIN: RouteSpec = RouteSpec::post("/api/auth/login", Guard::Public);
/// `/api/auth/logout`.
pub const LOGOUT: RouteSpec = RouteSpec::post("/api/auth/logout", Guard::Public);
/// `/api/auth/verify-email`.
pub const VERIFY_EMAIL: RouteSpec = RouteSpec::post("/api/auth/verify-email", Guard::Public);
/// `/api/auth/recover`.
pub const RECOVER: RouteSpec = RouteSpec::post("/api/auth/recover", Guard::Public);
/// `/api/auth/reset`.
pub const RESET: RouteSpec = RouteSpec::post("/api/auth/reset", Guard::Public);
/// `/api/auth/me`.
pub const ME: RouteSpec = RouteSpec::get("/api/auth/me", Guard::OwnAccount);
/// `/api/auth/change-password`.
pub const CHANGE_PASSWORD: RouteSpec =
    RouteSpec::post("/api/auth/change-password", Guard::OwnAccount);
/// `/api/auth/destroy`.
pub const DESTROY: RouteSpec = RouteSpec::post("/api/auth/destroy", Guard::OwnAccount);
/// `/api/auth/logout-everywhere`.
pub const LOGOUT_EVERYWHERE: RouteSpec =
    RouteSpec::post("/api/auth/logout-everywhere", Guard::OwnAccount);
/// `/api/auth/resend-verification`.
pub const RESEND_VERIFICATION: RouteSpec =
    RouteSpec::post("/api/auth/resend-verification", Guard::OwnAccount);

/// hearth's own routes under `/api/auth/`, as its spec declares them.
pub(crate) const ROUTES: &[RouteSpec] = &[
    CSRF,
    SIGNUP,
    LOGIN,
    LOGOUT,
    VERIFY_EMAIL,
    RECOVER,
    RESET,
    ME,
    CHANGE_PASSWORD,
    DESTROY,
    LOGOUT_EVERYWHERE,
    RESEND_VERIFICATION,
];

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
    /// How the API shows `u`.
    pub fn of(auth: &Auth, u: &User) -> Self {
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

fn signed_in_response(auth: &Auth, s: &SignedIn) -> Result<Response, Error> {
    let view = SessionView {
        csrf_token: s.csrf_token(auth),
        signed_in: true,
        user: Some(UserView::of(auth, &s.user)),
    };
    Ok(with_cookie(Json(view).into_response(), s.cookie(auth)?))
}

#[derive(Serialize)]
struct Accepted {
    status: &'static str,
    message: &'static str,
}

/// The one answer of signup and recover.
fn check_email() -> Response {
    let body = Accepted {
        status: "check_email",
        message: "if the address can be used, a message is on its way to it",
    };
    no_store((StatusCode::ACCEPTED, Json(body)).into_response())
}

#[derive(Serialize)]
struct SignedOut {
    signed_in: bool,
}

fn signed_out(auth: &Auth) -> Response {
    with_cookie(
        Json(SignedOut { signed_in: false }).into_response(),
        auth.clear_cookie_header(),
    )
}

/// `GET /api/auth/csrf`: the caller's CSRF token and whether they are signed
/// in, starting an anonymous session when they have none.
pub(crate) async fn csrf(State(auth): State<Auth>, req: Request) -> Result<Response, Error> {
    let page = flows::page_session(&auth, req.headers()).await?;
    let view = SessionView {
        signed_in: page.user().is_some(),
        user: page.user().map(|u| UserView::of(&auth, u)),
        csrf_token: page.csrf_token.clone(),
    };
    Ok(page.finish(Json(view)))
}

/// `POST /api/auth/signup`.
pub(crate) async fn signup(
    State(auth): State<Auth>,
    req: AuthRequest<Credentials>,
) -> Result<Response, Error> {
    flows::signup(&auth, &req.client, &req.body.email, &req.body.password).await?;
    Ok(check_email())
}

/// `POST /api/auth/login`.
pub(crate) async fn login(
    State(auth): State<Auth>,
    req: AuthRequest<Credentials>,
) -> Result<Response, Error> {
    let s = flows::login(
        &auth,
        &req.session,
        &req.client,
        &req.body.email,
        &req.body.password,
    )
    .await?;
    signed_in_response(&auth, &s)
}

/// An empty JSON object, for routes that take no fields.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// `POST /api/auth/logout`.
pub(crate) async fn logout(
    State(auth): State<Auth>,
    req: AuthRequest<Empty>,
) -> Result<Response, Error> {
    flows::logout(&auth, &req.session).await?;
    Ok(signed_out(&auth))
}

/// `POST /api/auth/logout-everywhere`.
pub(crate) async fn logout_everywhere(
    State(auth): State<Auth>,
    me: CurrentUser,
) -> Result<Response, Error> {
    flows::logout_everywhere(&auth, &me).await?;
    Ok(signed_out(&auth))
}

#[derive(Serialize)]
struct Me {
    user: UserView,
    groups: Vec<String>,
}

/// `GET /api/auth/me`: the signed-in account and its groups.
pub(crate) async fn me(State(auth): State<Auth>, me: CurrentUser) -> Result<Response, Error> {
    let groups = auth.users().groups(me.user.id).await?;
    Ok(no_store(
        Json(Me {
            user: UserView::of(&auth, &me.user),
            groups,
        })
        .into_response(),
    ))
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

/// `POST /api/auth/verify-email`.
pub(crate) async fn verify_email(
    State(auth): State<Auth>,
    req: AuthRequest<TokenBody>,
) -> Result<Response, Error> {
    match flows::verify_email(&auth, &req.session, &req.client, &req.body.token).await? {
        Some(s) => signed_in_response(&auth, &s),
        None => Ok(no_store(
            Json(serde_json::json!({ "verified": true, "signed_in": false })).into_response(),
        )),
    }
}

/// `POST /api/auth/resend-verification`.
pub(crate) async fn resend_verification(
    State(auth): State<Auth>,
    me: CurrentUser,
) -> Result<Response, Error> {
    flows::resend_verification(&auth, &me).await?;
    Ok(check_email())
}

/// `POST /api/auth/recover`.
pub(crate) async fn recover(
    State(auth): State<Auth>,
    req: AuthRequest<EmailBody>,
) -> Result<Response, Error> {
    flows::recover(&auth, &req.client, &req.body.email).await?;
    Ok(check_email())
}

/// `POST /api/auth/reset`.
pub(crate) async fn reset(
    State(auth): State<Auth>,
    req: AuthRequest<ResetBody>,
) -> Result<Response, Error> {
    flows::reset(&auth, &req.client, &req.body.token, &req.body.new_password).await?;
    Ok(no_store(
        Json(serde_json::json!({ "password_reset": true })).into_response(),
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

/// `POST /api/auth/change-password`.
pub(crate) async fn change_password(
    State(auth): State<Auth>,
    me: CurrentUser,
    Json(body): Json<ChangePassword>,
) -> Result<Response, Error> {
    let s = flows::change_password(&auth, &me, &body.password, &body.new_password).await?;
    signed_in_response(&auth, &s)
}

/// The current password, to confirm a destructive action.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfirmPassword {
    /// The current password.
    pub password: String,
}

/// `POST /api/auth/destroy`.
pub(crate) async fn destroy(
    State(auth): State<Auth>,
    me: CurrentUser,
    Json(body): Json<ConfirmPassword>,
) -> Result<Response, Error> {
    flows::destroy(&auth, &me, &body.password).await?;
    Ok(signed_out(&auth))
}
