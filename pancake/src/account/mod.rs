//! Accounts as pages: sign up, sign in and out, confirm the address,
//! recover and reset the password, change it, "my account", a page for
//! members only and one for admins only.
//!
//! Every page is a plain HTML form that works without JavaScript. The
//! handlers only render and redirect; the rules (CSRF, rate limits,
//! rotation, answers that do not reveal accounts) are hearth's, through
//! `hearth::auth::flows`, the same functions the JSON API uses.

mod pages;

use hearth::auth::{CsrfField, MaybeSession, Session};
use hearth::prelude::*;

/// What every page's header and footer need.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The signed-in account, for the header.
    pub nav: Nav,
    /// pancake's version.
    pub version: &'static str,
    /// The database engine in use.
    pub database: &'static str,
}

/// The header's account links.
#[derive(Debug, Clone, Default)]
pub struct Nav {
    /// The signed-in account's email.
    pub email: Option<String>,
    /// Whether it is an admin.
    pub admin: bool,
    /// The CSRF field for the header's sign-out form (and a page's own forms).
    pub csrf: CsrfField,
}

impl Layout {
    /// The layout for a page seen with `session` (none: signed out).
    pub fn new(state: &AppState, session: Option<&Session>) -> Self {
        let nav = match session {
            Some(s) => Nav {
                email: s.user.as_ref().map(|u| u.email.clone()),
                admin: s.admin,
                csrf: state.auth().csrf_field(s),
            },
            None => Nav::default(),
        };
        Self {
            nav,
            version: state.version(),
            database: state.db().kind().as_str(),
        }
    }

    /// The layout for a page on a public route.
    pub fn of(state: &AppState, session: &MaybeSession) -> Self {
        Self::new(state, session.0.as_ref())
    }
}

/// The account module: pages only, its data is hearth's.
pub struct Account;

impl Module for Account {
    fn spec(&self) -> ModuleSpec {
        ModuleSpec::new("account")
    }

    fn register(&self, ctx: &mut Context<'_>) {
        ctx.public(
            Router::new()
                .route("/auth/login", get(pages::login_form).post(pages::login))
                .route("/auth/signup", get(pages::signup_form).post(pages::signup))
                .route("/auth/logout", post(pages::logout))
                .route(
                    "/auth/verify-email",
                    get(pages::verify_form).post(pages::verify),
                )
                .route(
                    "/auth/recover",
                    get(pages::recover_form).post(pages::recover),
                )
                .route("/auth/reset", get(pages::reset_form).post(pages::reset)),
        );
        // The account's own pages work before the address is verified:
        // that is where the link is sent again.
        ctx.own_account(
            Router::new()
                .route("/account", get(pages::account))
                .route(
                    "/account/resend-verification",
                    post(pages::resend_verification),
                )
                .route("/account/logout-everywhere", post(pages::logout_everywhere))
                .route("/account/delete", post(pages::delete))
                .route(
                    "/auth/change-password",
                    get(pages::change_password_form).post(pages::change_password),
                )
                .route("/api/whoami", get(pages::whoami)),
        );
        ctx.verified(Router::new().route("/members", get(pages::members)));
        ctx.admin(
            Router::new()
                .route("/admin", get(pages::admin))
                .route("/admin/notices", post(pages::post_notice)),
        );
    }
}
