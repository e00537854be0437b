//! Live notices: a job publishes a notice, browsers see it at once, and a
//! nightly cron job removes expired ones.
//!
//! * `home.publish` inserts the notice and publishes it on the `notices`
//!   channel in one transaction, so subscribers never see a notice that was
//!   not stored. Operators run it with `pancake jobs enqueue home.publish
//!   '{"title":"…","body":"…"}'`; admins through `POST /api/notices`.
//! * `GET /api/notices/live` streams the channel as Server-Sent Events (the
//!   home page listens with `EventSource`); `GET /api/notices/poll?after=ID`
//!   is the long-polling fallback.
//! * `home.cleanup` runs at 03:00 UTC (schedule `home.nightly_cleanup`; a
//!   night missed while the site was down runs once on restart).

use std::time::{SystemTime, UNIX_EPOCH};

use hearth::axum::response as axum_response;
use hearth::jobs::{JobName, JobRun};
use hearth::prelude::*;
use hearth::realtime::{Poll, Slot, sse};
use serde::{Deserialize, Serialize};

use super::store;

/// The pub/sub channel of new notices.
pub const CHANNEL: &str = "notices";

/// Publishes one notice.
pub const PUBLISH: JobName<NewNotice> = JobName::new("home.publish").max_attempts(5);

/// Deletes expired notices.
pub const CLEANUP: JobName<()> = JobName::new("home.cleanup").max_attempts(3);

/// Trims `s` and checks that it holds 1 to `max` characters.
fn bounded(s: String, what: &str, max: usize) -> Result<String, String> {
    let t = s.trim();
    match t.chars().count() {
        0 => Err(format!("the {what} must not be empty")),
        n if n > max => Err(format!("the {what} must be at most {max} characters")),
        _ => Ok(t.to_owned()),
    }
}

/// A notice title: 1 to 200 characters.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub struct Title(String);

impl TryFrom<String> for Title {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        bounded(s, "title", 200).map(Self)
    }
}

/// A notice body: 1 to 5000 characters.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub struct Body(String);

impl TryFrom<String> for Body {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        bounded(s, "body", 5000).map(Self)
    }
}

/// What `home.publish` carries (and `POST /api/notices` accepts).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewNotice {
    /// Title.
    pub title: Title,
    /// Text.
    pub body: Body,
    /// Days until the nightly cleanup removes it (1 to 365); never when absent.
    #[serde(default)]
    pub expires_in_days: Option<u16>,
}

impl NewNotice {
    /// A notice from plain strings, checked as the job's payload is.
    pub fn new(title: &str, body: &str, expires_in_days: Option<u16>) -> Result<Self, String> {
        Ok(Self {
            title: Title::try_from(title.to_owned())?,
            body: Body::try_from(body.to_owned())?,
            expires_in_days,
        })
    }
}

/// What subscribers of [`CHANNEL`] receive.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Published {
    /// The notice.
    pub notice: store::Notice,
    /// Notices on the site after this one, a live counter for the page.
    pub total: i64,
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The `home.publish` handler. A run that follows a crash after an earlier
/// attempt committed finds that attempt's record (`run.once`) and stores
/// and publishes nothing a second time.
pub async fn publish(run: JobRun<NewNotice, AppState>) -> hearth::anyhow::Result<()> {
    let n = &run.payload;
    if let Some(days) = n.expires_in_days
        && !(1..=365).contains(&days)
    {
        return Err(hearth::jobs::Permanent("expires_in_days must be 1 to 365".into()).into());
    }
    let state = &run.state;
    let now = now_secs();
    let expires_at = n.expires_in_days.map(|d| now + i64::from(d) * 86_400);
    let mut tx = state.db().begin().await?;
    if !run.once(&mut tx).await? {
        return Ok(());
    }
    let notice = store::insert(&mut tx, &n.title.0, &n.body.0, now, expires_at).await?;
    let total = store::count(&mut tx).await?;
    state
        .pubsub()
        .publish(&mut tx, CHANNEL, &Published { notice, total })
        .await?;
    tx.commit().await?;
    Ok(())
}

/// The `home.cleanup` handler.
pub async fn cleanup(run: JobRun<(), AppState>) -> hearth::anyhow::Result<()> {
    let removed = store::delete_expired(run.state.db(), now_secs()).await?;
    tracing::info!(removed, "removed expired notices");
    Ok(())
}

/// `GET /api/notices/live`: new notices as Server-Sent Events.
pub(super) async fn stream(
    State(state): State<AppState>,
    last: LastEventId,
    slot: Slot,
) -> axum_response::Response {
    let realtime = &state.config().realtime;
    axum_response::IntoResponse::into_response(sse::sse(
        state.pubsub(),
        CHANNEL,
        last,
        slot,
        realtime,
    ))
}

/// `GET /api/notices/poll?after=ID`: the long-polling fallback.
pub(super) async fn poll(
    State(state): State<AppState>,
    last: LastEventId,
    slot: Slot,
) -> Result<Json<Poll>> {
    let wait = state.config().long_poll_wait();
    Ok(Json(
        sse::long_poll(state.pubsub(), CHANNEL, last.0, wait, slot).await?,
    ))
}

/// `POST /api/notices` (admins): enqueues `home.publish`.
pub(super) async fn post_notice(
    State(state): State<AppState>,
    Json(notice): Json<NewNotice>,
) -> Result<Json<hearth::jobs::Enqueued>> {
    Ok(Json(state.jobs().enqueue_now(PUBLISH.job(&notice)).await?))
}
