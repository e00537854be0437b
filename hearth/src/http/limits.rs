//! Per-request limits: how many requests run at once, and how long each may take.
//!
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

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;
use tower::{Layer, Service};

use crate::error::Error;

/// Adds [`Limits`] to a service.
#[derive(Debug, Clone)]
pub(crate) struct LimitsLayer {
    permits: Arc<Semaphore>,
    timeout: Duration,
}

impl LimitsLayer {
    pub(crate) fn new(concurrency: usize, timeout: Duration) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(concurrency)),
            timeout,
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
        }
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub(crate) struct Limits<S> {
    inner: S,
    permits: Arc<Semaphore>,
    timeout: Duration,
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

    fn call(&mut self, req: Request) -> Self::Future {
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
        Box::pin(async move {
            let res = match tokio::time::timeout(timeout, inner.call(req)).await {
                Ok(Ok(res)) => res,
                Ok(Err(never)) => match never {},
                Err(_) => {
                    tracing::warn!(timeout_ms = timeout.as_millis() as u64, "request timed out");
                    Error::unavailable("timeout", "the request took too long to complete")
                        .into_response()
                }
            };
            drop(permit);
            Ok(res)
        })
    }
}
