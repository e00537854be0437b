//! Identity: the token store now; sessions, accounts, passwords, guards,
//! CSRF and rate limits are built on it.
//!
//! Every secret hearth hands a user (a session cookie, an email verification
//! link, a password reset link, a CSRF secret) is a [`Token`](tokens::Token)
//! in one table, so expiry, revocation and purging work the same way for all
//! of them.

pub mod tokens;

pub use tokens::{Found, NewToken, Secret, Token, Tokens};
