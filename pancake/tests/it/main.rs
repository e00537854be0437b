//! pancake end to end: the real binary and the real app over HTTP, on SQLite
//! and on PostgreSQL.

// Test code: a failed unwrap is a failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod account;
mod backup;
mod browser;
mod cleanup;
mod cli;
mod doctor;
mod install;
mod live;
mod setup;
mod site;
mod workers;

/// A plain-HTTP client.
pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .expect("client")
}
