//! pancake, hearth's reference app: a small community site built only on
//! hearth's public API.
//!
//! | module | what it does |
//! |---|---|
//! | [`account`] | sign-up, sign-in, password and account pages; a members-only and an admin-only page |
//! | [`home`] | the home page and the site's notices |
//! | [`members`] | profiles (name, bio, city), the directory, blocking; publishes `members.*` events |
//! | [`likes`] | like and unlike a member; reacts to blocks |
//! | [`alerts`] | each member's feed of what happened to them, projected from events, with a live unread count |
//! | [`status`] | `GET /api/status` (read from the database) and `GET /api/hello` (a constant, for benchmarks) |

pub mod account;
pub mod alerts;
pub mod home;
pub mod likes;
pub mod members;
pub mod status;
pub mod web;

use hearth::App;

/// The pancake app with all its modules, as `main` and the tests build it.
pub fn app() -> App {
    App::new("pancake", env!("CARGO_PKG_VERSION"))
        .login_page("/auth/login")
        .module(home::Home)
        .module(account::Account)
        .module(members::Members)
        .module(likes::Likes)
        .module(alerts::Alerts)
        .module(status::Status)
}
