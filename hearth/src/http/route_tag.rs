//! Tags each response with the route pattern that served it (`/users/{id}`,
//! not `/users/42`), for the metrics labels and the 5xx notifications that
//! the outer layer (`front`) records. Only the router knows the pattern, and
//! `front` only sees the response, so it travels in the response's extensions.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::{MatchedPath, Request};
use axum::response::Response;
use tower::{Layer, Service};

use crate::telemetry::Metrics;
use crate::telemetry::metrics::Route;

/// The route pattern of the route that answered.
#[derive(Debug, Clone)]
pub(crate) struct RouteTag(pub(crate) Route);

/// Adds [`RouteTagService`] around every route.
#[derive(Clone)]
pub(crate) struct RouteTagLayer(pub(crate) Metrics);

impl<S> Layer<S> for RouteTagLayer {
    type Service = RouteTagService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RouteTagService {
            inner,
            metrics: self.0.clone(),
        }
    }
}

/// See the module docs.
#[derive(Clone)]
pub(crate) struct RouteTagService<S> {
    inner: S,
    metrics: Metrics,
}

pin_project_lite::pin_project! {
    /// The route's future, then the tag on its response (no allocation).
    pub(crate) struct Tagged<F> {
        #[pin]
        inner: F,
        route: Option<Route>,
    }
}

impl<F, E> Future for Tagged<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.inner.poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(res) => Poll::Ready(res.map(|mut r| {
                if let Some(route) = this.route.take() {
                    r.extensions_mut().insert(RouteTag(route));
                }
                r
            })),
        }
    }
}

impl<S> Service<Request> for RouteTagService<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Tagged<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let route = req
            .extensions()
            .get::<MatchedPath>()
            .and_then(|m| self.metrics.route(m.as_str()));
        Tagged {
            inner: self.inner.call(req),
            route,
        }
    }
}
