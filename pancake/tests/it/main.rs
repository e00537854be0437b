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
mod usecases;
mod workers;

/// A plain-HTTP client.
pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .expect("client")
}

/// pancake on `backend`, mailing through `sink`, with `admins` as admins and
/// a fast job poll so mailed links arrive quickly.
pub async fn spawn_site(
    backend: hearth::testing::Backend,
    sink: &hearth::testing::SmtpSink,
    admins: &[&str],
) -> Option<hearth::testing::TestApp> {
    hearth::testing::TestApp::spawn_with(&pancake::app(), backend, |c| {
        sink.configure(c);
        c.jobs.poll_interval = hearth::config::Duration::from_millis(100);
        c.auth.admins = admins.iter().map(|s| (*s).to_owned()).collect();
    })
    .await
}
