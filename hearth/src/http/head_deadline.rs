//! The header read deadline (`http.header_read_timeout`), kept once per
//! connection instead of once per request.
//!
//! An HTTP/1 client must deliver each request head within the timeout of the
//! connection being ready for it: from the moment the connection is accepted,
//! and again from the moment the previous response has been handed to the
//! connection in full. So a client that trickles its head, and a kept-alive
//! connection left idle, are both closed after the timeout. While a request is
//! being served (its body read, its handler run, its response streamed) the
//! deadline does not run, however long that takes: the request timeout and
//! the handler decide that.
//!
//! hyper can keep this deadline itself, but it then arms a timer for every
//! request head and runs its connection loop an extra time per request to do
//! so, which measured as ~1 300 instructions of a small request
//! (BENCHMARKS.md). Here one timer per connection is re-armed only when it
//! fires; a request costs a counter update when its head arrives and a clock
//! read when its response body is dropped.
//!
//! An HTTP/2 connection is held to the same rule with its streams as the
//! requests: while any stream is open the deadline does not run, and once
//! the last one is done the connection must start another within the
//! timeout or be closed. Answering keep-alive pings does not count as use,
//! so an idle connection cannot be kept open forever that way.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::response::Response;
use futures_util::FutureExt as _;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::Sleep;

/// What one connection's deadline watches. For HTTP/1 the counters are only
/// touched from the connection's own task (hyper starts and drops each
/// request there); HTTP/2 streams may end on other tasks, but a count kept
/// by atomic adds is exact whatever the order, and a stale `idle_since`
/// read only moves the next look by one timeout.
#[derive(Debug)]
pub(crate) struct Clock {
    epoch: Instant,
    /// `http.header_read_timeout`.
    timeout: Duration,
    /// Requests whose response body the connection has not dropped yet.
    open: AtomicU32,
    /// When the connection last became ready for a head, in milliseconds
    /// since `epoch`.
    idle_since_ms: AtomicU64,
}

impl Clock {
    /// The clock of a connection that is ready for its first head now.
    pub(crate) fn new(timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            epoch: Instant::now(),
            timeout,
            open: AtomicU32::new(0),
            idle_since_ms: AtomicU64::new(0),
        })
    }

    /// Notes that the head of a request (or an HTTP/2 stream) has arrived.
    /// The returned guard goes with the response; the deadline runs again
    /// once the last open one is dropped.
    pub(crate) fn head_arrived(self: &Arc<Self>) -> Open {
        self.open.fetch_add(1, Ordering::Relaxed);
        Open(self.clone())
    }

    /// What to do when the timer fires at `now`.
    fn on_fire(&self, now: Instant) -> Next {
        let timeout = self.timeout;
        if self.open.load(Ordering::Relaxed) > 0 {
            // Busy: look again one timeout from now; the request's end will
            // have set the real start of the next wait by then.
            return Next::At(now + timeout);
        }
        let idle_since =
            self.epoch + Duration::from_millis(self.idle_since_ms.load(Ordering::Relaxed));
        let deadline = idle_since + timeout;
        if deadline <= now {
            Next::Close
        } else {
            Next::At(deadline)
        }
    }
}

/// The deadline's decision when its timer fires.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// Look again at this time.
    At(Instant),
    /// The head is late: close the connection.
    Close,
}

/// A request in progress on its connection (see [`Clock::head_arrived`]).
#[derive(Debug)]
pub(crate) struct Open(Arc<Clock>);

impl Drop for Open {
    fn drop(&mut self) {
        let clock = &self.0;
        if clock.open.fetch_sub(1, Ordering::Relaxed) == 1 {
            let ms = u64::try_from(clock.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
            clock.idle_since_ms.store(ms, Ordering::Relaxed);
        }
    }
}

pin_project_lite::pin_project! {
    /// A request's response future that hands the request's [`Open`] guard on
    /// to the response body.
    pub(crate) struct Tracked<F> {
        #[pin]
        inner: F,
        open: Option<Open>,
    }
}

impl<F> Tracked<F> {
    /// `inner`, whose body will carry `open`.
    pub(crate) fn new(inner: F, open: Open) -> Self {
        Self {
            inner,
            open: Some(open),
        }
    }
}

impl<F> Future for Tracked<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response<TrackedBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let res = ready!(this.inner.poll(cx))?;
        let open = this.open.take();
        Poll::Ready(Ok(res.map(|inner| TrackedBody { inner, _open: open })))
    }
}

/// A response body that, when the connection drops it (sent, or abandoned),
/// marks its request as done.
#[derive(Debug)]
pub(crate) struct TrackedBody {
    inner: Body,
    _open: Option<Open>,
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project_lite::pin_project! {
    /// A connection future under the deadline: it ends early, with `None`,
    /// when a head is late.
    pub(crate) struct Watched<C> {
        #[pin]
        conn: C,
        #[pin]
        timer: Sleep,
        clock: Arc<Clock>,
        // The timer has been polled since it was last set, so it will wake
        // the task when it fires; until then a cheap check stands in for a poll.
        registered: bool,
    }
}

impl<C> Watched<C> {
    /// Watches `conn`, whose requests report to `clock`.
    pub(crate) fn new(conn: C, clock: Arc<Clock>) -> Self {
        let first = tokio::time::Instant::from_std(clock.epoch + clock.timeout);
        Self {
            conn,
            timer: tokio::time::sleep_until(first),
            clock,
            registered: false,
        }
    }
}

impl<C: Future> Future for Watched<C> {
    type Output = Option<C::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Poll::Ready(out) = this.conn.poll(cx) {
            return Poll::Ready(Some(out));
        }
        loop {
            // Most wake-ups are the connection's own; polling the timer on each
            // would cost more than the deadline saves.
            if *this.registered && !this.timer.is_elapsed() {
                return Poll::Pending;
            }
            // Outside tokio's cooperative budget: a timer refused for budget
            // would not be registered, and the deadline would never come.
            let fired = tokio::task::unconstrained(this.timer.as_mut()).poll_unpin(cx);
            if fired.is_pending() {
                *this.registered = true;
                return Poll::Pending;
            }
            *this.registered = false;
            match this.clock.on_fire(Instant::now()) {
                Next::At(at) => this
                    .timer
                    .as_mut()
                    .reset(tokio::time::Instant::from_std(at)),
                Next::Close => {
                    tracing::debug!("request head not received in time; closing the connection");
                    return Poll::Ready(None);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_runs_only_while_no_request_is_open() {
        let t = Duration::from_secs(10);
        let clock = Clock::new(t);
        let start = clock.epoch;
        // Fresh connection: the first head is due one timeout after accept.
        assert_eq!(
            clock.on_fire(start + Duration::from_secs(3)),
            Next::At(start + t)
        );
        assert_eq!(clock.on_fire(start + t), Next::Close);
        // A request in progress holds the deadline off, however long it runs.
        let open = clock.head_arrived();
        let late = start + Duration::from_secs(60);
        assert_eq!(clock.on_fire(late), Next::At(late + t));
        // Several at once (HTTP/2 streams): only the last one's end counts.
        let second = clock.head_arrived();
        drop(open);
        assert_eq!(clock.on_fire(late), Next::At(late + t));
        // Once its response is dropped, the next head is due a timeout later.
        drop(second);
        let idle = clock.epoch + Duration::from_millis(clock.idle_since_ms.load(Ordering::Relaxed));
        assert_eq!(clock.on_fire(idle), Next::At(idle + t));
        assert_eq!(clock.on_fire(idle + t), Next::Close);
    }
}
