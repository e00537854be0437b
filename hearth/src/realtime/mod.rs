//! Realtime: pub/sub through the app's database, and its delivery to
//! browsers over Server-Sent Events or long polling.
//!
//! | part | what it does |
//! |---|---|
//! | [`pubsub`] | `publish(channel, payload)` in the caller's transaction; `subscribe(channel)` as a stream, on every node |
//! | [`sse`] | a subscription as an SSE response with keep-alive and `Last-Event-ID` resume, and a long-poll fallback |
//! | [`streams`] | the bounded pool (in all and per client address) that streams and long polls take a place in |
//! | `listener` | the process's one PostgreSQL LISTEN connection, shared with job wake-ups |

mod config;
pub(crate) mod listener;
pub mod pubsub;
pub mod sse;
pub mod streams;

pub use config::RealtimeConfig;
pub use pubsub::{Message, PubSub, PublishError, Subscription};
pub use sse::{LastEventId, Poll};
pub use streams::{Slot, Streams};
