//! The account pages' handlers: render a form, or run a hearth flow and
//! redirect (303, so a reload does not post again) or show what went wrong
//! in the form, with the status the API would give.

use askama::Template;
use askama_web::WebTemplate;
use hearth::auth::flows::{self, AuthForm, SignedIn};
use hearth::auth::{CsrfField, CurrentUser, page_session};
use hearth::axum::Form;
use hearth::axum::http::{HeaderMap, StatusCode};
use hearth::axum::response::{IntoResponse, Response};
use hearth::prelude::*;
use serde::Deserialize;

use super::Layout;
use crate::home::live::{NewNotice, PUBLISH};
use crate::web::see_other;

/// One input of a form.
pub(super) struct Field {
    label: &'static str,
    name: &'static str,
    kind: &'static str,
    value: String,
    autocomplete: &'static str,
}

impl Field {
    fn email(value: &str) -> Self {
        Self {
            label: "Email",
            name: "email",
            kind: "email",
            value: value.to_owned(),
            autocomplete: "email",
        }
    }

    fn password(label: &'static str, name: &'static str, autocomplete: &'static str) -> Self {
        Self {
            label,
            name,
            kind: "password",
            value: String::new(),
            autocomplete,
        }
    }
}

/// Every form page: sign in, sign up, recover, reset, confirm, change password.
#[derive(Template, WebTemplate)]
#[template(path = "auth_form.html")]
pub(super) struct FormPage {
    layout: Layout,
    title: &'static str,
    intro: &'static str,
    error: Option<String>,
    action: &'static str,
    csrf: CsrfField,
    hidden: Vec<(&'static str, String)>,
    fields: Vec<Field>,
    submit: &'static str,
    links: Vec<(&'static str, &'static str)>,
}

/// A page that only says something.
#[derive(Template, WebTemplate)]
#[template(path = "message.html")]
pub(super) struct MessagePage {
    layout: Layout,
    title: &'static str,
    text: &'static str,
    link: Option<(&'static str, &'static str)>,
}

/// "My account".
#[derive(Template, WebTemplate)]
#[template(path = "account.html")]
pub(super) struct AccountPage {
    layout: Layout,
    email: String,
    verified: bool,
    admin: bool,
    groups: Vec<String>,
    error: Option<String>,
    notice: Option<&'static str>,
}

/// The members-only page.
#[derive(Template, WebTemplate)]
#[template(path = "members.html")]
pub(super) struct MembersPage {
    layout: Layout,
    email: String,
    members: i64,
}

/// The admin-only page.
#[derive(Template, WebTemplate)]
#[template(path = "admin.html")]
pub(super) struct AdminPage {
    layout: Layout,
    error: Option<String>,
    posted: bool,
    title: String,
    body: String,
}

/// Renders `page` with `status`.
fn with_status(page: impl IntoResponse, status: StatusCode) -> Response {
    let mut res = page.into_response();
    *res.status_mut() = status;
    res
}

/// Where to go after signing in: a local path only, so a crafted link
/// cannot send a fresh session's owner to another site.
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.contains('\\')
                && !n.chars().any(char::is_control) =>
        {
            n
        }
        _ => "/account",
    }
}

fn message(
    state: &AppState,
    session: Option<&hearth::auth::Session>,
    title: &'static str,
    text: &'static str,
    link: Option<(&'static str, &'static str)>,
) -> MessagePage {
    MessagePage {
        layout: Layout::new(state, session),
        title,
        text,
        link,
    }
}

/// The form again after `e`: its message shown, the status the API would
/// give, fields rebuilt by `page` (which gets the layout, the CSRF token of
/// `session`, and the message).
fn refill(
    state: &AppState,
    session: &hearth::auth::Session,
    e: &Error,
    page: impl FnOnce(Layout, CsrfField, Option<String>) -> FormPage,
) -> Response {
    let layout = Layout::new(state, Some(session));
    let csrf = state.auth().csrf_field(session);
    let form = page(layout, csrf, Some(e.body().message.to_string()));
    flows::no_store(with_status(form, e.status()))
}

/// A blank form page: the caller's session (a pre-session started if need
/// be) gives the layout and the CSRF field that `page` builds the form with.
async fn blank(
    state: &AppState,
    headers: &HeaderMap,
    page: impl FnOnce(Layout, CsrfField) -> FormPage,
) -> Result<Response> {
    let session = page_session(state.auth(), headers).await?;
    let layout = Layout::new(state, session.session.as_ref());
    let form = page(layout, session.field());
    Ok(session.finish(form))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct NextQuery {
    next: Option<String>,
}

fn login_page(
    layout: Layout,
    csrf: CsrfField,
    email: &str,
    next: Option<String>,
    error: Option<String>,
) -> FormPage {
    FormPage {
        layout,
        title: "Sign in",
        intro: "",
        error,
        action: "/auth/login",
        csrf,
        hidden: next.map(|n| ("next", n)).into_iter().collect(),
        fields: vec![
            Field::email(email),
            Field::password("Password", "password", "current-password"),
        ],
        submit: "Sign in",
        links: vec![
            ("/auth/recover", "Forgot your password?"),
            ("/auth/signup", "No account yet? Sign up"),
        ],
    }
}

/// `GET /auth/login`.
pub(super) async fn login_form(
    State(state): State<AppState>,
    Query(q): Query<NextQuery>,
    headers: HeaderMap,
) -> Result<Response> {
    let page = page_session(state.auth(), &headers).await?;
    if page.user().is_some() {
        return Ok(see_other(safe_next(q.next.as_deref())));
    }
    let layout = Layout::new(&state, page.session.as_ref());
    let form = login_page(layout, page.field(), "", q.next, None);
    Ok(page.finish(form))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct LoginForm {
    email: String,
    password: String,
    next: Option<String>,
}

/// The response to a successful sign-in: the new cookie and a redirect.
fn signed_in(state: &AppState, s: &SignedIn, to: &str) -> Result<Response> {
    Ok(flows::with_cookie(see_other(to), s.cookie(state.auth())?))
}

/// `POST /auth/login`.
pub(super) async fn login(
    State(state): State<AppState>,
    form: AuthForm<LoginForm>,
) -> Result<Response> {
    let f = &form.body;
    match flows::login(
        state.auth(),
        &form.session,
        &form.client,
        &f.email,
        &f.password,
    )
    .await
    {
        Ok(s) => signed_in(&state, &s, safe_next(f.next.as_deref())),
        Err(e) => Ok(refill(&state, &form.session, &e, |layout, csrf, error| {
            login_page(layout, csrf, &f.email, f.next.clone(), error)
        })),
    }
}

fn signup_page(layout: Layout, csrf: CsrfField, email: &str, error: Option<String>) -> FormPage {
    FormPage {
        layout,
        title: "Sign up",
        intro: "Choose a password of at least 8 characters that is not a common one.",
        error,
        action: "/auth/signup",
        csrf,
        hidden: Vec::new(),
        fields: vec![
            Field::email(email),
            Field::password("Password", "password", "new-password"),
        ],
        submit: "Sign up",
        links: vec![("/auth/login", "Have an account? Sign in")],
    }
}

/// `GET /auth/signup`.
pub(super) async fn signup_form(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response> {
    blank(&state, &headers, |layout, csrf| {
        signup_page(layout, csrf, "", None)
    })
    .await
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct CredentialsForm {
    email: String,
    password: String,
}

const CHECK_INBOX: &str =
    "If the address can be used, a message is on its way to it. Open the link in it to go on.";

/// `POST /auth/signup`.
pub(super) async fn signup(
    State(state): State<AppState>,
    form: AuthForm<CredentialsForm>,
) -> Result<Response> {
    let f = &form.body;
    match flows::signup(state.auth(), &form.client, &f.email, &f.password).await {
        Ok(()) => Ok(flows::no_store(
            message(
                &state,
                Some(&form.session),
                "Check your inbox",
                CHECK_INBOX,
                Some(("/auth/login", "Sign in")),
            )
            .into_response(),
        )),
        Err(e) => Ok(refill(&state, &form.session, &e, |layout, csrf, error| {
            signup_page(layout, csrf, &f.email, error)
        })),
    }
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct NoFields {}

/// `POST /auth/logout`.
pub(super) async fn logout(
    State(state): State<AppState>,
    form: AuthForm<NoFields>,
) -> Result<Response> {
    flows::logout(state.auth(), &form.session).await?;
    Ok(flows::with_cookie(
        see_other("/"),
        state.auth().clear_cookie_header(),
    ))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct TokenQuery {
    token: String,
}

fn verify_page(layout: Layout, csrf: CsrfField, token: String, error: Option<String>) -> FormPage {
    FormPage {
        layout,
        title: "Confirm your address",
        intro: "Press the button to confirm that this address is yours.",
        error,
        action: "/auth/verify-email",
        csrf,
        hidden: vec![("token", token)],
        fields: Vec::new(),
        submit: "Confirm my address",
        links: Vec::new(),
    }
}

/// `GET /auth/verify-email?token=…`: a button, so that a link scanner
/// opening the link confirms nothing.
pub(super) async fn verify_form(
    State(state): State<AppState>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
) -> Result<Response> {
    blank(&state, &headers, |layout, csrf| {
        verify_page(layout, csrf, q.token, None)
    })
    .await
}

/// `POST /auth/verify-email`.
pub(super) async fn verify(
    State(state): State<AppState>,
    form: AuthForm<TokenQuery>,
) -> Result<Response> {
    match flows::verify_email(state.auth(), &form.session, &form.client, &form.body.token).await {
        Ok(rotated) => {
            let page = message(
                &state,
                None,
                "Address confirmed",
                "Thank you: your address is confirmed.",
                Some(("/account", "My account")),
            );
            match rotated {
                Some(s) => Ok(flows::with_cookie(
                    page.into_response(),
                    s.cookie(state.auth())?,
                )),
                None => Ok(flows::no_store(page.into_response())),
            }
        }
        Err(e) => Ok(refill(&state, &form.session, &e, |layout, csrf, error| {
            verify_page(layout, csrf, form.body.token.clone(), error)
        })),
    }
}

fn recover_page(layout: Layout, csrf: CsrfField, email: &str, error: Option<String>) -> FormPage {
    FormPage {
        layout,
        title: "Forgot your password?",
        intro: "Give the address of your account; a link to choose a new password will be sent to it.",
        error,
        action: "/auth/recover",
        csrf,
        hidden: Vec::new(),
        fields: vec![Field::email(email)],
        submit: "Send me a link",
        links: vec![("/auth/login", "Sign in")],
    }
}

/// `GET /auth/recover`.
pub(super) async fn recover_form(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response> {
    blank(&state, &headers, |layout, csrf| {
        recover_page(layout, csrf, "", None)
    })
    .await
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct EmailForm {
    email: String,
}

/// `POST /auth/recover`.
pub(super) async fn recover(
    State(state): State<AppState>,
    form: AuthForm<EmailForm>,
) -> Result<Response> {
    match flows::recover(state.auth(), &form.client, &form.body.email).await {
        Ok(()) => Ok(flows::no_store(
            message(
                &state,
                Some(&form.session),
                "Check your inbox",
                CHECK_INBOX,
                None,
            )
            .into_response(),
        )),
        Err(e) => Ok(refill(&state, &form.session, &e, |layout, csrf, error| {
            recover_page(layout, csrf, &form.body.email, error)
        })),
    }
}

fn reset_page(layout: Layout, csrf: CsrfField, token: String, error: Option<String>) -> FormPage {
    FormPage {
        layout,
        title: "Choose a new password",
        intro: "At least 8 characters, not a common one. Every device signed in to your account will be signed out.",
        error,
        action: "/auth/reset",
        csrf,
        hidden: vec![("token", token)],
        fields: vec![Field::password(
            "New password",
            "new_password",
            "new-password",
        )],
        submit: "Set my new password",
        links: Vec::new(),
    }
}

const LINK_INVALID: &str =
    "This link is not valid: it was used already, has expired or is incomplete.";

/// `GET /auth/reset?token=…`.
pub(super) async fn reset_form(
    State(state): State<AppState>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
) -> Result<Response> {
    let page = page_session(state.auth(), &headers).await?;
    if !flows::reset_token_works(state.auth(), &q.token).await? {
        let msg = message(
            &state,
            page.session.as_ref(),
            "Link not valid",
            LINK_INVALID,
            Some(("/auth/recover", "Ask for a new link")),
        );
        return Ok(page.finish(with_status(msg, StatusCode::BAD_REQUEST)));
    }
    let layout = Layout::new(&state, page.session.as_ref());
    let form = reset_page(layout, page.field(), q.token, None);
    Ok(page.finish(form))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct ResetForm {
    token: String,
    new_password: String,
}

/// `POST /auth/reset`.
pub(super) async fn reset(
    State(state): State<AppState>,
    form: AuthForm<ResetForm>,
) -> Result<Response> {
    let f = &form.body;
    match flows::reset(state.auth(), &form.client, &f.token, &f.new_password).await {
        Ok(()) => Ok(flows::no_store(
            message(
                &state,
                None,
                "Password changed",
                "Your new password is set, and every device was signed out.",
                Some(("/auth/login", "Sign in")),
            )
            .into_response(),
        )),
        Err(e) if e.code() == "invalid_token" => {
            let msg = message(
                &state,
                Some(&form.session),
                "Link not valid",
                LINK_INVALID,
                Some(("/auth/recover", "Ask for a new link")),
            );
            Ok(flows::no_store(with_status(msg, e.status())))
        }
        Err(e) => Ok(refill(&state, &form.session, &e, |layout, csrf, error| {
            reset_page(layout, csrf, f.token.clone(), error)
        })),
    }
}

fn change_page(state: &AppState, me: &CurrentUser, error: Option<String>) -> FormPage {
    FormPage {
        layout: Layout::new(state, Some(&me.session)),
        title: "Change my password",
        intro: "Every other device signed in to your account will be signed out.",
        error,
        action: "/auth/change-password",
        csrf: state.auth().csrf_field(&me.session),
        hidden: Vec::new(),
        fields: vec![
            Field::password("Current password", "password", "current-password"),
            Field::password("New password", "new_password", "new-password"),
        ],
        submit: "Change my password",
        links: vec![("/account", "Back to my account")],
    }
}

/// `GET /auth/change-password` (signed in).
pub(super) async fn change_password_form(
    State(state): State<AppState>,
    me: CurrentUser,
) -> Response {
    flows::no_store(change_page(&state, &me, None).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct ChangeForm {
    password: String,
    new_password: String,
}

/// `POST /auth/change-password` (signed in; the CSRF check ran before).
pub(super) async fn change_password(
    State(state): State<AppState>,
    me: CurrentUser,
    Form(f): Form<ChangeForm>,
) -> Result<Response> {
    match flows::change_password(state.auth(), &me, &f.password, &f.new_password).await {
        Ok(s) => signed_in(&state, &s, "/account?changed=1"),
        Err(e) => Ok(flows::no_store(with_status(
            change_page(&state, &me, Some(e.body().message.to_string())),
            e.status(),
        ))),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct AccountQuery {
    changed: Option<String>,
    sent: Option<String>,
}

async fn account_page(
    state: &AppState,
    me: &CurrentUser,
    error: Option<String>,
    notice: Option<&'static str>,
) -> Result<AccountPage> {
    let groups = state.auth().users().groups(me.user.id).await?;
    Ok(AccountPage {
        layout: Layout::new(state, Some(&me.session)),
        email: me.user.email.clone(),
        verified: me.user.verified,
        admin: me.admin,
        groups,
        error,
        notice,
    })
}

/// `GET /account` (signed in).
pub(super) async fn account(
    State(state): State<AppState>,
    Query(q): Query<AccountQuery>,
    me: CurrentUser,
) -> Result<Response> {
    let notice = if q.changed.is_some() {
        Some("Your password is changed; other devices were signed out.")
    } else if q.sent.is_some() {
        Some("A new confirmation link is on its way.")
    } else {
        None
    };
    Ok(flows::no_store(
        account_page(&state, &me, None, notice)
            .await?
            .into_response(),
    ))
}

/// `POST /account/resend-verification` (signed in).
pub(super) async fn resend_verification(
    State(state): State<AppState>,
    me: CurrentUser,
) -> Result<Response> {
    match flows::resend_verification(state.auth(), &me).await {
        Ok(()) => Ok(see_other("/account?sent=1")),
        Err(e) => Ok(flows::no_store(with_status(
            account_page(&state, &me, Some(e.body().message.to_string()), None).await?,
            e.status(),
        ))),
    }
}

/// `POST /account/logout-everywhere` (signed in).
pub(super) async fn logout_everywhere(
    State(state): State<AppState>,
    me: CurrentUser,
) -> Result<Response> {
    flows::logout_everywhere(state.auth(), &me).await?;
    Ok(flows::with_cookie(
        see_other("/"),
        state.auth().clear_cookie_header(),
    ))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct PasswordForm {
    password: String,
}

/// `POST /account/delete` (signed in).
pub(super) async fn delete(
    State(state): State<AppState>,
    me: CurrentUser,
    Form(f): Form<PasswordForm>,
) -> Result<Response> {
    match flows::destroy(state.auth(), &me, &f.password).await {
        Ok(()) => Ok(flows::with_cookie(
            message(
                &state,
                None,
                "Account deleted",
                "Your account and everything tied to it are gone.",
                Some(("/", "Home")),
            )
            .into_response(),
            state.auth().clear_cookie_header(),
        )),
        Err(e) => Ok(flows::no_store(with_status(
            account_page(&state, &me, Some(e.body().message.to_string()), None).await?,
            e.status(),
        ))),
    }
}

/// `GET /members` (signed in).
pub(super) async fn members(State(state): State<AppState>, me: CurrentUser) -> Result<Response> {
    let members = state.auth().users().count().await?;
    Ok(flows::no_store(
        MembersPage {
            layout: Layout::new(&state, Some(&me.session)),
            email: me.user.email.clone(),
            members,
        }
        .into_response(),
    ))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct AdminQuery {
    posted: Option<String>,
}

/// `GET /admin` (admins).
pub(super) async fn admin(
    State(state): State<AppState>,
    Query(q): Query<AdminQuery>,
    me: CurrentUser,
) -> Response {
    flows::no_store(
        AdminPage {
            layout: Layout::new(&state, Some(&me.session)),
            error: None,
            posted: q.posted.is_some(),
            title: String::new(),
            body: String::new(),
        }
        .into_response(),
    )
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct NoticeForm {
    title: String,
    body: String,
}

/// `POST /admin/notices` (admins): queues the notice like the API does.
pub(super) async fn post_notice(
    State(state): State<AppState>,
    me: CurrentUser,
    Form(f): Form<NoticeForm>,
) -> Result<Response> {
    match NewNotice::new(&f.title, &f.body, None) {
        Ok(notice) => {
            state.jobs().enqueue_now(PUBLISH.job(&notice)).await?;
            Ok(see_other("/admin?posted=1"))
        }
        Err(problem) => Ok(flows::no_store(with_status(
            AdminPage {
                layout: Layout::new(&state, Some(&me.session)),
                error: Some(problem),
                posted: false,
                title: f.title,
                body: f.body,
            },
            StatusCode::UNPROCESSABLE_ENTITY,
        ))),
    }
}

/// What `GET /api/whoami` answers.
#[derive(serde::Serialize)]
pub(super) struct WhoAmI {
    id: i64,
    email: String,
    verified: bool,
    admin: bool,
}

/// `GET /api/whoami` (signed in): the account behind the session cookie,
/// read with the gatekeeper's one lookup and nothing else (the
/// session-authenticated read of the benchmarks).
pub(super) async fn whoami(me: CurrentUser) -> Json<WhoAmI> {
    Json(WhoAmI {
        id: me.user.id,
        email: me.user.email,
        verified: me.user.verified,
        admin: me.admin,
    })
}
