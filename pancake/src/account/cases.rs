//! The account module's use cases: the pages a visitor and a member go
//! through, as data. They run as tests on both engines and print with
//! `pancake story account`.

use hearth::auth::AccountDeleted;
use hearth::prelude::*;
use hearth::usecase::run::PASSWORD;
use serde_json::json;

/// Every use case of the account pages.
pub fn all() -> Vec<UseCase> {
    vec![
        UseCase::new("a visitor opens the sign-in page")
            .when(Request::get("/auth/login"))
            .then_status(200)
            .then_contains(r#"action="/auth/login""#),
        UseCase::new("nancy signs in and lands on the page she asked for")
            .given_user("nancy")
            .when(Request::post("/auth/login").form(&[
                ("email", "{nancy.email}"),
                ("password", PASSWORD),
                ("next", "/account"),
            ]))
            .then_status(303)
            .then_header("location", "/account")
            .then_no_other_events(),
        UseCase::new("a wrong password keeps nancy out, without saying which part was wrong")
            .given_user("nancy")
            .when(
                Request::post("/auth/login")
                    .form(&[("email", "{nancy.email}"), ("password", "not her password")]),
            )
            .then_status(401)
            .then_contains("the email or the password is wrong")
            .then_lacks("{nancy.email} has no account"),
        UseCase::new("a visitor opens the sign-up page")
            .when(Request::get("/auth/signup"))
            .then_status(200)
            .then_contains(r#"action="/auth/signup""#),
        UseCase::new("a visitor signs up and is told to check the inbox")
            .when(Request::post("/auth/signup").form(&[
                ("email", "olive@example.test"),
                ("password", "a long enough passphrase"),
            ]))
            .then_status(200)
            .then_contains("Check your inbox"),
        UseCase::new("a common password is refused at sign-up")
            .when(
                Request::post("/auth/signup")
                    .form(&[("email", "olive@example.test"), ("password", "password")]),
            )
            .then_status(422)
            .then_contains(r#"action="/auth/signup""#),
        UseCase::new("nancy signs out")
            .given_user("nancy")
            .when(Request::post("/auth/logout").by("nancy").form(&[]))
            .then_status(303)
            .then_header("location", "/"),
        UseCase::new("the confirmation link opens a button, not a confirmation")
            .when(Request::get("/auth/verify-email?token=abc"))
            .then_status(200)
            .then_contains("Confirm my address"),
        UseCase::new("a made-up confirmation token is refused")
            .when(Request::post("/auth/verify-email").form(&[("token", "made-up")]))
            .then_status(400)
            .then_lacks("Address confirmed"),
        UseCase::new("a visitor opens the forgotten-password page")
            .when(Request::get("/auth/recover"))
            .then_status(200)
            .then_contains("Forgot your password?"),
        UseCase::new("nancy asks for a reset link and is told to check her inbox")
            .given_user("nancy")
            .when(Request::post("/auth/recover").form(&[("email", "{nancy.email}")]))
            .then_status(200)
            .then_contains("Check your inbox"),
        UseCase::new("an unknown address gets the same answer as a known one")
            .when(Request::post("/auth/recover").form(&[("email", "nobody@example.test")]))
            .then_status(200)
            .then_contains("Check your inbox"),
        UseCase::new("a reset link that is not valid says so")
            .when(Request::get("/auth/reset?token=made-up"))
            .then_status(400)
            .then_contains("Link not valid"),
        UseCase::new("a new password with a made-up link is refused")
            .when(Request::post("/auth/reset").form(&[
                ("token", "made-up"),
                ("new_password", "a long enough passphrase"),
            ]))
            .then_status(400)
            .then_contains("Link not valid"),
        UseCase::new("nancy sees her account page")
            .given_user("nancy")
            .when(Request::get("/account").by("nancy"))
            .then_status(200)
            .then_contains("{nancy.email}"),
        UseCase::new("a visitor's API client is told to sign in for the account page")
            .when(Request::get("/account"))
            .then_status(401),
        UseCase::new("nancy, already confirmed, asks for the link again")
            .given_user("nancy")
            .when(Request::post("/account/resend-verification").by("nancy"))
            .then_status(303)
            .then_header("location", "/account?sent=1"),
        UseCase::new("nancy signs out everywhere")
            .given_user("nancy")
            .when(Request::post("/account/logout-everywhere").by("nancy"))
            .then_status(303)
            .then_header("location", "/"),
        UseCase::new("nancy deletes her account with her password")
            .given_user("nancy")
            .when(
                Request::post("/account/delete")
                    .by("nancy")
                    .form(&[("password", PASSWORD)]),
            )
            .then_status(200)
            .then_contains("Account deleted")
            .then_event::<AccountDeleted>(json!({"account": "{nancy}"}))
            .then_no_other_events(),
        UseCase::new("a wrong password does not delete the account")
            .given_user("nancy")
            .when(
                Request::post("/account/delete")
                    .by("nancy")
                    .form(&[("password", "not her password")]),
            )
            .then_status(422)
            .then_contains("the current password is wrong"),
        UseCase::new("nancy opens the change-password page")
            .given_user("nancy")
            .when(Request::get("/auth/change-password").by("nancy"))
            .then_status(200)
            .then_contains("Change my password"),
        UseCase::new("nancy changes her password")
            .given_user("nancy")
            .when(Request::post("/auth/change-password").by("nancy").form(&[
                ("password", PASSWORD),
                ("new_password", "another long passphrase"),
            ]))
            .then_status(303),
        UseCase::new("nancy asks the API who she is")
            .given_user("nancy")
            .when(Request::get("/api/whoami").by("nancy"))
            .then_status(200)
            .then_json(json!({"email": "{nancy.email}"})),
        UseCase::new("a confirmed member sees the members page")
            .given_user("nancy")
            .when(Request::get("/members").by("nancy"))
            .then_status(200),
        UseCase::new("an admin opens the admin page")
            .given_admin("olga")
            .when(Request::get("/admin").by("olga"))
            .then_status(200),
        UseCase::new("a member who is not an admin is turned away from the admin page")
            .given_user("nancy")
            .when(Request::get("/admin").by("nancy"))
            .then_status(403),
        UseCase::new("an admin posts a notice from the admin page")
            .given_admin("olga")
            .when(
                Request::post("/admin/notices")
                    .by("olga")
                    .form(&[("title", "Picnic"), ("body", "Saturday at noon")]),
            )
            .then_status(303)
            .then_header("location", "/admin?posted=1"),
    ]
}
