//! hearth's own module, registered before any app module and written like
//! one: the tables of the job queue, cron, pub/sub, tokens, accounts and
//! events, the `/api/auth/…` routes, and the framework's jobs (mail, the
//! account mails, housekeeping, scheduled backups).
//!
//! It sits at the top, beside the app builder: it wires capabilities
//! together (housekeeping touches most of them), so none of them has to
//! import another one sideways, or the module layer, to register itself.

use crate::auth::{mailing, routes};
use crate::db::migrate::Migration;
use crate::jobs::{self, JobRun};
use crate::module::{Context, ModuleSpec};
use crate::state::AppState;

/// hearth's own module: the tables of the job queue, cron, pub/sub, tokens and accounts.
pub(crate) const SPEC: ModuleSpec = ModuleSpec::new("hearth")
    .migrations(SQLITE, POSTGRES)
    .routes(crate::auth::routes::ROUTES)
    .publishes(crate::auth::EVENTS);

const SQLITE: &[Migration] = &[
    Migration::new(
        1,
        "jobs",
        include_str!("../migrations/sqlite/0001_jobs.sql"),
    ),
    Migration::new(
        2,
        "cron",
        include_str!("../migrations/sqlite/0002_cron.sql"),
    ),
    Migration::new(
        3,
        "pubsub",
        include_str!("../migrations/sqlite/0003_pubsub.sql"),
    ),
    Migration::new(
        4,
        "tokens",
        include_str!("../migrations/sqlite/0004_tokens.sql"),
    ),
    Migration::new(
        5,
        "accounts",
        include_str!("../migrations/sqlite/0005_accounts.sql"),
    ),
    Migration::new(
        6,
        "job_effects",
        include_str!("../migrations/sqlite/0006_job_effects.sql"),
    ),
    Migration::new(
        7,
        "events",
        include_str!("../migrations/sqlite/0007_events.sql"),
    ),
    Migration::new(
        8,
        "event_relay",
        include_str!("../migrations/sqlite/0008_event_relay.sql"),
    ),
];

const POSTGRES: &[Migration] = &[
    Migration::new(
        1,
        "jobs",
        include_str!("../migrations/postgres/0001_jobs.sql"),
    ),
    Migration::new(
        2,
        "cron",
        include_str!("../migrations/postgres/0002_cron.sql"),
    ),
    Migration::new(
        3,
        "pubsub",
        include_str!("../migrations/postgres/0003_pubsub.sql"),
    ),
    Migration::new(
        4,
        "tokens",
        include_str!("../migrations/postgres/0004_tokens.sql"),
    ),
    Migration::new(
        5,
        "accounts",
        include_str!("../migrations/postgres/0005_accounts.sql"),
    ),
    Migration::new(
        6,
        "job_effects",
        include_str!("../migrations/postgres/0006_job_effects.sql"),
    ),
    Migration::new(
        7,
        "events",
        include_str!("../migrations/postgres/0007_events.sql"),
    ),
    Migration::new(
        8,
        "event_relay",
        include_str!("../migrations/postgres/0008_event_relay.sql"),
    ),
];

/// Registers hearth's own routes, jobs and schedules.
pub(crate) fn register(ctx: &mut Context<'_>) {
    ctx.job(jobs::PING, jobs::ping);
    ctx.job(jobs::HOUSEKEEPING, housekeeping);
    ctx.cron(jobs::cron::Schedule::new(
        "hearth.housekeeping",
        "*/10 * * * *",
        jobs::HOUSEKEEPING,
        &(),
    ));
    ctx.job(crate::mail::SEND, crate::mail::send);
    ctx.job(mailing::SIGNUP_MAIL, mailing::signup_mail);
    ctx.job(mailing::RECOVER_MAIL, mailing::recover_mail);
    ctx.job(mailing::VERIFY_MAIL, mailing::verify_mail);
    ctx.route(routes::CSRF, routes::csrf);
    ctx.route(routes::SIGNUP, routes::signup);
    ctx.route(routes::LOGIN, routes::login);
    ctx.route(routes::LOGOUT, routes::logout);
    ctx.route(routes::VERIFY_EMAIL, routes::verify_email);
    ctx.route(routes::RECOVER, routes::recover);
    ctx.route(routes::RESET, routes::reset);
    ctx.route(routes::ME, routes::me);
    ctx.route(routes::CHANGE_PASSWORD, routes::change_password);
    ctx.route(routes::DESTROY, routes::destroy);
    ctx.route(routes::LOGOUT_EVERYWHERE, routes::logout_everywhere);
    ctx.route(routes::RESEND_VERIFICATION, routes::resend_verification);
    crate::ops::backup::register_own(ctx);
}

/// Purges what every capability keeps only for a while: finished and dead
/// jobs, old pub/sub messages, expired tokens, stale rate-limit counters
/// and events every subscriber has passed.
async fn housekeeping(run: JobRun<(), AppState>) -> anyhow::Result<()> {
    let state = &run.state;
    let (history, dead) = state.jobs().housekeeping().await?;
    let retention = state.config().realtime.retention.get();
    let now = jobs::now_ms();
    let cutoff = now - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX / 2);
    let messages = state.pubsub().purge(cutoff).await?;
    let tokens = state.tokens().purge_expired(now).await?;
    let auth = state.auth();
    let window = auth.config().limits.longest_window();
    let since = now - i64::try_from(window.as_millis()).unwrap_or(i64::MAX / 2);
    let counters = auth.limiter().purge(since).await?;
    let events = state.events().purge().await?;
    tracing::info!(
        history,
        dead,
        events,
        messages,
        tokens,
        counters,
        "housekeeping purged old jobs, events, messages, expired tokens and rate-limit counters"
    );
    Ok(())
}
