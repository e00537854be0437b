//! The bounded pool of parked requests: SSE streams and long polls.
//!
//! A parked request holds a connection and some memory for as long as the
//! client keeps it, and a long poll used to hold a concurrency place too.
//! So they have a pool of their own, apart from the concurrency limit:
//! `realtime.max_streams` in all (by default half of `http.max_connections`,
//! so streams can never take every connection), and
//! `realtime.max_streams_per_ip` from one client address (an IPv6 client
//! counts by its /64). A handler takes its place with the [`Slot`]
//! extractor before it subscribes: a full pool answers 503
//! `too_many_streams`, a client over its share 429. The place is given back
//! when the stream or the poll ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;

use crate::auth::Auth;
use crate::error::Error;
use crate::http::client_ip::{ClientPlace, PerClient};

/// The pool; cheap to clone. Reach it with `state.streams()`.
#[derive(Debug, Clone)]
pub struct Streams(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    max: usize,
    per_client: usize,
    open: AtomicUsize,
    by_client: Arc<PerClient>,
}

impl Streams {
    /// A pool of `max` places, `per_client` of them for one address (0: no
    /// cap per address).
    pub fn new(max: usize, per_client: usize) -> Self {
        Self(Arc::new(Inner {
            max,
            per_client,
            open: AtomicUsize::new(0),
            by_client: Arc::default(),
        }))
    }

    /// Takes a place for `client` (as [`client_ip`](crate::auth::guard::client_ip)
    /// names it), or says why not.
    pub fn enter(&self, client: &str) -> Result<Slot, Error> {
        let inner = &self.0;
        if inner
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < inner.max).then_some(n + 1)
            })
            .is_err()
        {
            return Err(Error::unavailable(
                "too_many_streams",
                "the server holds as many live connections as it can; try again shortly",
            ));
        }
        // Past this point the place is taken: a refusal below gives it back
        // through the slot's drop.
        let mut slot = Slot {
            streams: inner.clone(),
            client: None,
        };
        if inner.per_client > 0 {
            slot.client = Some(
                inner
                    .by_client
                    .enter(client, inner.per_client)
                    .ok_or_else(|| Error::too_many_requests(5).with_code("too_many_streams"))?,
            );
        }
        Ok(slot)
    }

    /// Places taken now.
    pub fn open(&self) -> usize {
        self.0.open.load(Ordering::Acquire)
    }
}

/// A place in the pool, given back when dropped. As an extractor it takes
/// the place for the request's client address.
#[derive(Debug)]
pub struct Slot {
    streams: Arc<Inner>,
    /// The client's place, when addresses are counted.
    client: Option<ClientPlace>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.streams.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<S> FromRequestParts<S> for Slot
where
    S: Send + Sync,
    Streams: FromRef<S>,
    Auth: FromRef<S>,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        let client = crate::auth::guard::client_ip(
            &Auth::from_ref(state),
            &parts.headers,
            crate::http::current_peer(),
        );
        Streams::from_ref(state).enter(&client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_bounded_in_all_and_per_client_and_given_back() {
        let s = Streams::new(3, 2);
        let a1 = s.enter("a").unwrap();
        let _a2 = s.enter("a").unwrap();
        let e = s.enter("a").unwrap_err();
        assert_eq!((e.status().as_u16(), e.code()), (429, "too_many_streams"));
        let _b = s.enter("b").unwrap();
        let e = s.enter("c").unwrap_err();
        assert_eq!((e.status().as_u16(), e.code()), (503, "too_many_streams"));
        assert_eq!(s.open(), 3);
        drop(a1);
        assert_eq!(s.open(), 2);
        let _c = s.enter("c").unwrap();
        let _ = s.enter("a").unwrap_err();
        // Refusals left nothing behind.
        assert_eq!(s.open(), 3);
        let unlimited = Streams::new(10, 0);
        let held: Vec<_> = (0..10).map(|_| unlimited.enter("a").unwrap()).collect();
        assert_eq!(held.len(), 10);
        assert!(unlimited.enter("a").is_err());
    }
}
