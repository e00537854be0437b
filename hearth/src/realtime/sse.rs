//! Realtime to browsers: a subscription as a Server-Sent Events stream, and
//! a long-polling fallback for clients that cannot hold a stream open.
//!
//! Each SSE event carries the message id as its `id:`, so a browser's
//! `EventSource` sends `Last-Event-ID` when it reconnects and the stream
//! resumes from the table. A comment line is sent every `keep_alive` so that
//! proxies do not close an idle stream. Memory per stream is bounded: a
//! subscriber that falls behind drops its buffer and re-reads from the table.
//!
//! Every stream and long poll holds a [`Slot`] in the app's bounded pool
//! for as long as it lasts. A stream ends after `realtime.max_stream_age`
//! (it tells the browser to come back after a second), so no connection is
//! held forever and a node can be drained; the browser resumes where it
//! was. While a long poll waits, its request does not count against the
//! concurrency limit.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::{Stream, StreamExt as _};
use serde::{Deserialize, Serialize};

use super::RealtimeConfig;
use super::pubsub::{Message, PubSub, Subscription};
use super::streams::Slot;

/// The id a reconnecting client last saw: the `Last-Event-ID` header, or an
/// `after` query parameter for clients that cannot set headers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LastEventId(pub Option<i64>);

impl<S: Send + Sync> FromRequestParts<S> for LastEventId {
    type Rejection = crate::Error;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let bad = |what: &str| {
            crate::Error::bad_request(
                "invalid_last_event_id",
                format!("{what} must be a message id (a whole number)"),
            )
        };
        if let Some(v) = parts.headers.get("last-event-id") {
            let text = v.to_str().map_err(|_| bad("Last-Event-ID"))?.trim();
            if text.is_empty() {
                return Ok(Self(None));
            }
            return text
                .parse()
                .map(|id| Self(Some(id)))
                .map_err(|_| bad("Last-Event-ID"));
        }
        let after = parts
            .uri
            .query()
            .unwrap_or("")
            .split('&')
            .find_map(|kv| kv.strip_prefix("after="));
        match after {
            None | Some("") => Ok(Self(None)),
            Some(v) => v
                .parse()
                .map(|id| Self(Some(id)))
                .map_err(|_| bad("`after`").with_field("after")),
        }
    }
}

/// How long a browser waits before it resumes a stream that ended.
const RESUME_AFTER: Duration = Duration::from_secs(1);

/// An SSE response that streams `channel`, resuming after `last` when the
/// client reconnects, holding `slot` until it ends. Events are named
/// `message` and carry the JSON payload; keep-alive and the longest life
/// come from `config`.
pub fn sse(
    pubsub: &PubSub,
    channel: &str,
    last: LastEventId,
    slot: Slot,
    config: &RealtimeConfig,
) -> Sse<impl Stream<Item = Result<Event, Infallible>> + Send + 'static> {
    stream(pubsub.subscribe(channel, last.0), slot, config)
}

/// An SSE response over an existing subscription (see [`sse`]).
pub fn stream(
    sub: Subscription,
    slot: Slot,
    config: &RealtimeConfig,
) -> Sse<impl Stream<Item = Result<Event, Infallible>> + Send + 'static> {
    // The first event only sets the browser's reconnection delay.
    let hello = futures_util::stream::once(async { Ok(Event::default().retry(RESUME_AFTER)) });
    let events = sub
        .into_stream()
        .map(|m| Ok(Event::default().id(m.id.to_string()).data(m.payload)))
        .take_until(tokio::time::sleep(config.max_stream_age.get()));
    // The slot lives as long as the stream, and is given back when the
    // stream ends or the client goes away (the body is dropped).
    let events = hello.chain(events).map(move |e| {
        let _held = &slot;
        e
    });
    Sse::new(events).keep_alive(
        KeepAlive::new()
            .interval(config.keep_alive.get())
            .text("keep-alive"),
    )
}

/// What a long poll returns.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Poll {
    /// New messages, oldest first (empty when the wait ran out).
    pub messages: Vec<Message>,
    /// The id to pass as `after` next time.
    pub last_id: i64,
}

/// Long polling: messages of `channel` after `after`, waiting up to `wait`
/// for the first one, holding `slot` meanwhile. Without `after` it answers
/// at once with no messages and the current last id, which the client uses
/// from then on.
pub async fn long_poll(
    pubsub: &PubSub,
    channel: &str,
    after: Option<i64>,
    wait: Duration,
    slot: Slot,
) -> Result<Poll, crate::Error> {
    let _slot = slot;
    // Parked, not working: the wait does not take a concurrency place.
    let _aside = crate::http::step_aside();
    let Some(after) = after else {
        let last_id = pubsub.last_id(channel).await?;
        return Ok(Poll {
            messages: Vec::new(),
            last_id,
        });
    };
    let mut sub = pubsub.subscribe(channel, Some(after));
    let mut messages = Vec::new();
    if let Ok(Some(first)) = tokio::time::timeout(wait, sub.next()).await {
        messages.push(first);
        // Whatever else is already here goes in the same answer.
        while messages.len() < 100 {
            match tokio::time::timeout(Duration::from_millis(5), sub.next()).await {
                Ok(Some(m)) => messages.push(m),
                _ => break,
            }
        }
    }
    messages.sort_by_key(|m| m.id);
    messages.dedup_by_key(|m| m.id);
    let last_id = messages.iter().map(|m| m.id).max().unwrap_or(after);
    Ok(Poll { messages, last_id })
}
