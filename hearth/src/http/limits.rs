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

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, HttpBody as _};
use axum::extract::Request;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use http_body_util::Limited;
use tokio::sync::Semaphore;
use tower::{Layer, Service};

use crate::error::Error;

/// The body limit axum's extractors apply when told nothing else.
const AXUM_DEFAULT_BODY_LIMIT: u64 = 2 * 1024 * 1024;

/// Adds [`Limits`] to a service.
#[derive(Debug, Clone)]
pub(crate) struct LimitsLayer {
    permits: Arc<Semaphore>,
    timeout: Duration,
    body_limit: u64,
}

impl LimitsLayer {
    pub(crate) fn new(concurrency: usize, timeout: Duration, body_limit: u64) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(concurrency)),
            timeout,
            body_limit,
        }
    }
}

impl<S> Layer<S> for LimitsLayer {
    type Service = Limits<S>;
    fn layer(&self, inner: S) -> Limits<S> {
        Limits {
            inner,
            permits: self.permits.clone(),
            timeout: self.timeout,
            body_limit: self.body_limit,
        }
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub(crate) struct Limits<S> {
    inner: S,
    permits: Arc<Semaphore>,
    timeout: Duration,
    body_limit: u64,
}

impl<S> Service<Request> for Limits<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        // axum's extractors stop at 2 MiB on their own; lift that ceiling only
        // when the configured limit is higher (the checks below enforce ours).
        if self.body_limit > AXUM_DEFAULT_BODY_LIMIT {
            axum::extract::DefaultBodyLimit::max(
                usize::try_from(self.body_limit).unwrap_or(usize::MAX),
            )
            .apply(&mut req);
        }
        match declared {
            Some(len) if len > self.body_limit => {
                let limit = self.body_limit;
                return Box::pin(
                    async move { Ok(Error::payload_too_large(limit).into_response()) },
                );
            }
            // hyper holds a body with a declared length to exactly that length.
            Some(_) => {}
            None if req.body().is_end_stream() => {}
            None => {
                let limit = usize::try_from(self.body_limit).unwrap_or(usize::MAX);
                req = req.map(|body| Body::new(Limited::new(body, limit)));
            }
        }
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            return Box::pin(async {
                Ok(
                    Error::unavailable("overloaded", "the server is busy, try again shortly")
                        .into_response(),
                )
            });
        };
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let timeout = self.timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let fut = inner.call(req);
        Box::pin(async move {
            let mut fut = std::pin::pin!(fut);
            // Poll once before arming a timer: handlers that do not wait on I/O
            // finish here, and a timer per request is a measurable cost.
            let first = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await;
            let outcome = match first {
                Poll::Ready(r) => Ok(r),
                Poll::Pending => tokio::time::timeout_at(deadline, fut).await,
            };
            let res = match outcome {
                Ok(Ok(res)) => res,
                Ok(Err(never)) => match never {},
                Err(_) => {
                    tracing::warn!(
                        timeout_ms = timeout.as_millis() as u64,
                        request_id = crate::http::current_request_id().unwrap_or_default(),
                        "request timed out"
                    );
                    Error::unavailable("timeout", "the request took too long to complete")
                        .into_response()
                }
            };
            drop(permit);
            Ok(res)
        })
    }
}
