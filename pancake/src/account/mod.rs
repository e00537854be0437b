//! Accounts as pages: sign up, sign in and out, confirm the address,
//! recover and reset the password, change it, "my account", a page for
//! members only and one for admins only.
//!
//! Every page is a plain HTML form that works without JavaScript. The
//! handlers only render and redirect; the rules (CSRF, rate limits,
//! rotation, answers that do not reveal accounts) are hearth's, through
//! `hearth::auth::flows`, the same functions the JSON API uses.

mod cases;

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

use hearth::module::Guard::{Admin, OwnAccount, Public, Verified};
use hearth::module::RouteSpec as R;

/// The pages: sign-up, sign-in and recovery for visitors; the account's own
/// pages, which work before the address is verified (that is where the
/// link is sent again); the members page and the admin page.
const ROUTES: &[R] = &[
    R::get("/auth/login", Public),
    R::post("/auth/login", Public),
    R::get("/auth/signup", Public),
    R::post("/auth/signup", Public),
    R::post("/auth/logout", Public),
    R::get("/auth/verify-email", Public),
    R::post("/auth/verify-email", Public),
    R::get("/auth/recover", Public),
    R::post("/auth/recover", Public),
    R::get("/auth/reset", Public),
    R::post("/auth/reset", Public),
    R::get("/account", OwnAccount),
    R::post("/account/resend-verification", OwnAccount),
    R::post("/account/logout-everywhere", OwnAccount),
    R::post("/account/delete", OwnAccount),
    R::get("/auth/change-password", OwnAccount),
    R::post("/auth/change-password", OwnAccount),
    R::get("/api/whoami", OwnAccount),
    R::get("/members", Verified),
    R::get("/admin", Admin),
    R::post("/admin/notices", Admin),
];

impl Module for Account {
    fn spec(&self) -> ModuleSpec {
        ModuleSpec::new("account").routes(ROUTES)
    }

    fn use_cases(&self) -> Vec<UseCase> {
        cases::all()
    }

    fn register(&self, ctx: &mut Context<'_>) {
        ctx.route(R::get("/auth/login", Public), pages::login_form);
        ctx.route(R::post("/auth/login", Public), pages::login);
        ctx.route(R::get("/auth/signup", Public), pages::signup_form);
        ctx.route(R::post("/auth/signup", Public), pages::signup);
        ctx.route(R::post("/auth/logout", Public), pages::logout);
        ctx.route(R::get("/auth/verify-email", Public), pages::verify_form);
        ctx.route(R::post("/auth/verify-email", Public), pages::verify);
        ctx.route(R::get("/auth/recover", Public), pages::recover_form);
        ctx.route(R::post("/auth/recover", Public), pages::recover);
        ctx.route(R::get("/auth/reset", Public), pages::reset_form);
        ctx.route(R::post("/auth/reset", Public), pages::reset);
        ctx.route(R::get("/account", OwnAccount), pages::account);
        ctx.route(
            R::post("/account/resend-verification", OwnAccount),
            pages::resend_verification,
        );
        ctx.route(
            R::post("/account/logout-everywhere", OwnAccount),
            pages::logout_everywhere,
        );
        ctx.route(R::post("/account/delete", OwnAccount), pages::delete);
        ctx.route(
            R::get("/auth/change-password", OwnAccount),
            pages::change_password_form,
        );
        ctx.route(
            R::post("/auth/change-password", OwnAccount),
            pages::change_password,
        );
        ctx.route(R::get("/api/whoami", OwnAccount), pages::whoami);
        ctx.route(R::get("/members", Verified), pages::members);
        ctx.route(R::get("/admin", Admin), pages::admin);
        ctx.route(R::post("/admin/notices", Admin), pages::post_notice);
    }
}
