//! Realtime: pub/sub through the app's database, and its delivery to
//! browsers over Server-Sent Events or long polling.
//!
//! | part | what it does |
//! |---|---|
//! | [`pubsub`] | `publish(channel, payload)` in the caller's transaction; `subscribe(channel)` as a stream, on every node |
//! | [`sse`] | a subscription as an SSE response with keep-alive and `Last-Event-ID` resume, and a long-poll fallback |
//! | `listener` | the process's one PostgreSQL LISTEN connection, shared with job wake-ups |

pub(crate) mod listener;
pub mod pubsub;
pub mod sse;

use serde::{Deserialize, Serialize};

use crate::config::Duration;

pub use pubsub::{Message, PubSub, PublishError, Subscription};
pub use sse::{LastEventId, Poll};

/// The `[realtime]` section of the configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RealtimeConfig {
    /// How long published messages stay readable for resuming clients.
    pub retention: Duration,
    /// Interval of the keep-alive comment on idle SSE streams.
    pub keep_alive: Duration,
    /// Longest a long poll waits for a message (capped a second below
    /// `http.request_timeout`; see [`Config::long_poll_wait`](crate::Config::long_poll_wait)).
    pub poll_wait: Duration,
}

impl Default for RealtimeConfig {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(3600),
            keep_alive: Duration::from_secs(15),
            poll_wait: Duration::from_secs(25),
        }
    }
}
