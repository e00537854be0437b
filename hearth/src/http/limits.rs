//! Per-request limits: body size, how many requests run at once, and how long
//! each may take.
//!
//! A declared `Content-Length` over the body limit is refused with 413 before
//! anything reads the body; a body of unknown length (chunked) is wrapped so
//! that reading past the limit fails, which the extractors report as 413.
//! Over the concurrency limit a request is refused at once with 503 and
//! `Retry-After`, instead of waiting in an unbounded queue; a handler that
//! does not produce its response within the timeout is dropped and the client
//! gets 503 `timeout`. Response bodies that stream after the head (SSE,
//! downloads) are not cut by the timeout.
//!
//! A request body is the client's to send, and a slow one must cost the
//! server nothing: while a handler waits for bytes that have not arrived,
//! its request does not count against the concurrency limit, and a body
//! that stalls for `http.body_idle_timeout`, or arrives slower than
//! `http.body_min_rate` on average after that long, ends the request with
//! 408 `body_timeout`. Neither is a server error, so neither is notified.
//!
//! These are plain calls made by the `front` layer rather than a layer of
//! their own: every layer boxes its future, and one box per request is enough.

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody as _};
use axum::extract::Request;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use http_body_util::Limited;
use tokio::time::Instant;

use crate::error::Error;

/// The body limit axum's extractors apply when told nothing else.
const AXUM_DEFAULT_BODY_LIMIT: u64 = 2 * 1024 * 1024;

/// The limits of one pipeline; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    in_flight: Arc<InFlight>,
    timeout: Duration,
    body_limit: u64,
    body: BodyPace,
}

/// How fast a request body must arrive.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyPace {
    /// Longest wait for the next bytes.
    pub idle: Duration,
    /// Least average rate in bytes per second, once `idle` has passed.
    pub min_rate: u64,
}

/// How many requests are running, against how many may.
///
/// A counter rather than a semaphore: a request over the limit is refused,
/// never queued, so there are no waiters to keep, and a semaphore takes a
/// lock on every release. Signed, because a request waiting on its body
/// gives its place back and takes it again, and a body that outlives its
/// request (moved into a task) may take it back after the permit is gone:
/// the count is briefly one lower, never wrapped.
#[derive(Debug)]
struct InFlight {
    now: AtomicIsize,
    max: isize,
}

/// One request's place under the concurrency limit, given back on drop.
#[derive(Debug)]
struct Permit(Arc<InFlight>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::Release);
    }
}

/// A request that passed the limits: it holds a concurrency permit until dropped.
pub(crate) struct Admitted {
    _permit: Permit,
    deadline: Instant,
    timeout: Duration,
}

impl Limits {
    pub(crate) fn new(
        concurrency: usize,
        timeout: Duration,
        body_limit: u64,
        body: BodyPace,
    ) -> Self {
        Self {
            in_flight: Arc::new(InFlight {
                now: AtomicIsize::new(0),
                max: isize::try_from(concurrency).unwrap_or(isize::MAX),
            }),
            timeout,
            body_limit,
            body,
        }
    }

    /// Checks the body size and takes a concurrency permit, or says why not.
    /// The deadline runs from `start`, when the request arrived.
    pub(crate) fn admit(
        &self,
        req: &mut Request,
        start: std::time::Instant,
    ) -> Result<Admitted, Refusal> {
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        match declared {
            Some(len) if len > self.body_limit => {
                return Err(Refusal::TooLarge(self.body_limit));
            }
            _ if req.body().is_end_stream() => {}
            // hyper holds a body with a declared length to exactly that length.
            Some(_) => {
                let body = std::mem::take(req.body_mut());
                *req.body_mut() = Body::new(self.paced(body));
            }
            None => {
                let limit = usize::try_from(self.body_limit).unwrap_or(usize::MAX);
                let body = std::mem::take(req.body_mut());
                *req.body_mut() = Body::new(self.paced(Limited::new(body, limit)));
            }
        }
        // axum's extractors stop at 2 MiB on their own; lift that ceiling only
        // when the configured limit is higher (the checks above enforce ours).
        if self.body_limit > AXUM_DEFAULT_BODY_LIMIT {
            axum::extract::DefaultBodyLimit::max(
                usize::try_from(self.body_limit).unwrap_or(usize::MAX),
            )
            .apply(req);
        }
        // Counted up first, so that two requests racing for the last place
        // cannot both take it.
        if self.in_flight.now.fetch_add(1, Ordering::Acquire) >= self.in_flight.max {
            self.in_flight.now.fetch_sub(1, Ordering::Release);
            return Err(Refusal::Busy);
        }
        let permit = Permit(self.in_flight.clone());
        Ok(Admitted {
            _permit: permit,
            deadline: Instant::from_std(start) + self.timeout,
            timeout: self.timeout,
        })
    }
}

impl Limits {
    fn paced<B>(&self, inner: B) -> ClientBody<B> {
        ClientBody {
            inner,
            pace: self.body,
            in_flight: self.in_flight.clone(),
            started: Instant::now(),
            received: 0,
            timer: None,
            waiting: None,
        }
    }
}

/// A request that waits on something outside the server (a long poll) and
/// has given its concurrency place back meanwhile; it takes it back when
/// dropped, which happens inside the request, before its permit goes.
#[derive(Debug)]
pub struct StepAside(Arc<InFlight>);

impl StepAside {
    fn new(in_flight: &Arc<InFlight>) -> Self {
        in_flight.now.fetch_sub(1, Ordering::AcqRel);
        Self(in_flight.clone())
    }
}

impl Limits {
    pub(crate) fn step_aside(&self) -> StepAside {
        StepAside::new(&self.in_flight)
    }
}

impl Drop for StepAside {
    fn drop(&mut self) {
        self.0.now.fetch_add(1, Ordering::AcqRel);
    }
}

/// 408: the client sent its body too slowly.
pub(crate) fn body_timeout() -> Error {
    Error::new(
        axum::http::StatusCode::REQUEST_TIMEOUT,
        "body_timeout",
        "the request body arrived too slowly",
    )
}

/// The error a timed-out body reports to whatever reads it.
#[derive(Debug)]
struct BodyTimedOut;

impl std::fmt::Display for BodyTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request body arrived too slowly")
    }
}

impl std::error::Error for BodyTimedOut {}

pin_project_lite::pin_project! {
    /// A request body held to [`BodyPace`], which gives its request's
    /// place under the concurrency limit back while the handler waits for
    /// the client.
    struct ClientBody<B> {
        #[pin]
        inner: B,
        pace: BodyPace,
        in_flight: Arc<InFlight>,
        started: Instant,
        received: u64,
        // Armed the first time the body has to wait.
        timer: Option<Pin<Box<tokio::time::Sleep>>>,
        // Held while the handler waits for the client's bytes.
        waiting: Option<StepAside>,
    }
}

impl<B> axum::body::HttpBody for ClientBody<B>
where
    B: axum::body::HttpBody<Data = Bytes>,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let mut this = self.project();
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Pending => {
                if this.waiting.is_none() {
                    *this.waiting = Some(StepAside::new(this.in_flight));
                    super::front::set_body_wait(super::front::BodyWait::Waiting);
                }
                let idle = this.pace.idle;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                if timer.as_mut().poll(cx).is_ready() {
                    *this.waiting = None;
                    return Poll::Ready(Some(Err(timed_out())));
                }
                Poll::Pending
            }
            Poll::Ready(frame) => {
                if this.waiting.take().is_some() {
                    super::front::set_body_wait(super::front::BodyWait::Done);
                }
                if let Some(Ok(f)) = &frame
                    && let Some(data) = f.data_ref()
                {
                    *this.received += data.len() as u64;
                    let elapsed = this.started.elapsed();
                    let floor = this.pace.min_rate.saturating_mul(elapsed.as_secs());
                    if elapsed > this.pace.idle && *this.received < floor {
                        return Poll::Ready(Some(Err(timed_out())));
                    }
                }
                if let Some(timer) = this.timer.as_mut() {
                    timer
                        .as_mut()
                        .reset(tokio::time::Instant::now() + this.pace.idle);
                }
                Poll::Ready(frame.map(|r| r.map_err(Into::into)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Gives up on a body (its request has taken its place back, as it is about
/// to be answered): the request will be answered 408.
fn timed_out() -> axum::BoxError {
    super::front::set_body_wait(super::front::BodyWait::TimedOut);
    tracing::info!(
        request_id = crate::http::current_request_id().unwrap_or_default(),
        "the request body arrived too slowly; answering 408"
    );
    Box::new(BodyTimedOut)
}

/// Why a request was refused before reaching its handler.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Refusal {
    /// The declared body is over this many bytes.
    TooLarge(u64),
    /// Every concurrency permit is taken.
    Busy,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Self::TooLarge(limit) => Error::payload_too_large(limit).into_response(),
            Self::Busy => Error::unavailable("overloaded", "the server is busy, try again shortly")
                .into_response(),
        }
    }
}

impl Admitted {
    /// Runs the route's future until its response head is ready or the
    /// deadline passes, catching a panic in it. The permit is released when
    /// the returned future is dropped.
    pub(crate) fn run<F>(self, route: F) -> Running<F> {
        Running {
            route,
            admitted: self,
            timer: None,
        }
    }
}

pin_project_lite::pin_project! {
    /// The route's future under the deadline and the panic catcher, polled in
    /// place. (Written by hand rather than as nested `async` blocks, whose
    /// state kept several copies of the route's future in every request's
    /// future.) Its output is the response, or the panic's payload.
    pub(crate) struct Running<F> {
        #[pin]
        route: F,
        admitted: Admitted,
        // Armed only when the route does not finish on its first poll:
        // handlers that do not wait on I/O never pay for a timer.
        timer: Option<Pin<Box<tokio::time::Sleep>>>,
    }
}

impl<F> Future for Running<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = std::thread::Result<Response>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let route = this.route;
        match std::panic::catch_unwind(AssertUnwindSafe(|| route.poll(cx))) {
            Err(panic) => return Poll::Ready(Err(panic)),
            Ok(Poll::Ready(Ok(res))) => return Poll::Ready(Ok(res)),
            Ok(Poll::Ready(Err(never))) => match never {},
            Ok(Poll::Pending) => {}
        }
        let deadline = this.admitted.deadline;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        // Still waiting on the client's body at the deadline: the client's
        // fault, not the server's.
        if super::front::body_wait() != super::front::BodyWait::Done {
            return Poll::Ready(Ok(body_timeout().into_response()));
        }
        tracing::warn!(
            timeout_ms = this.admitted.timeout.as_millis() as u64,
            request_id = crate::http::current_request_id().unwrap_or_default(),
            "request timed out"
        );
        Poll::Ready(Ok(Error::unavailable(
            "timeout",
            "the request took too long to complete",
        )
        .into_response()))
    }
}
