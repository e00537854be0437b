//! The `[realtime]` section of the configuration: stream limits, long-poll
//! waits and how long pub/sub messages are kept.

use serde::{Deserialize, Serialize};

use crate::config::Duration;

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
    /// SSE streams and long polls open at once; 0 (the default) means half
    /// of `http.max_connections`, so they can never take every connection.
    pub max_streams: usize,
    /// SSE streams and long polls open at once from one client address (an
    /// IPv6 client by its /64); 0 means no cap per address.
    pub max_streams_per_ip: usize,
    /// Longest an SSE stream lasts; then it ends, and the browser resumes
    /// it from `Last-Event-ID` on a new request.
    pub max_stream_age: Duration,
}

impl RealtimeConfig {
    /// The pool size: `max_streams`, or half of `max_connections` when 0.
    pub fn streams_cap(&self, max_connections: usize) -> usize {
        if self.max_streams > 0 {
            self.max_streams
        } else {
            (max_connections / 2).max(1)
        }
    }
}

impl Default for RealtimeConfig {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(3600),
            keep_alive: Duration::from_secs(15),
            poll_wait: Duration::from_secs(25),
            max_streams: 0,
            max_streams_per_ip: 16,
            max_stream_age: Duration::from_secs(600),
        }
    }
}
