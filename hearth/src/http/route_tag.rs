//! Tags each request with the route pattern that serves it (`/users/{id}`,
//! not `/users/42`), for the metrics labels and the 5xx notifications that
//! the outer layer (`front`) records. Only the router knows the pattern, so a
//! layer around every route hands it to `front` through the request's
//! task-local (see `front::set_current_route`): the route's service is
//! called when its future is first polled, inside that scope.

use std::convert::Infallible;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};

use axum::extract::{MatchedPath, Request};
use axum::response::Response;
use axum::routing::{Route, future::RouteFuture};
use tower::{Layer, Service};

use crate::telemetry::Metrics;

/// Adds [`RouteTagService`] around every route.
#[derive(Clone)]
pub(crate) struct RouteTagLayer(pub(crate) Metrics);

impl Layer<Route> for RouteTagLayer {
    type Service = RouteTagService;
    fn layer(&self, inner: Route) -> Self::Service {
        RouteTagService {
            tag: Arc::new(Tag {
                inner: Mutex::new(inner),
                metrics: self.0.clone(),
                seen: OnceLock::new(),
            }),
        }
    }
}

/// See the module docs.
#[derive(Clone)]
pub(crate) struct RouteTagService {
    // One `Arc`: the router clones this service for every request.
    tag: Arc<Tag>,
}

/// What one route's tagging needs.
struct Tag {
    // The route itself, shared by the per-request clones rather than copied
    // into each: a route is a boxed service that allocates to clone, and it
    // clones itself again when called. The lock is held only while the call
    // sets up the route's future, never while that future runs.
    inner: Mutex<Route>,
    metrics: Metrics,
    // The label of the pattern this route answered last time; shared by the
    // clones the router makes per request, so the label is looked up once.
    seen: OnceLock<crate::telemetry::metrics::Route>,
}

impl Service<Request> for RouteTagService {
    type Response = Response;
    type Error = Infallible;
    type Future = RouteFuture<Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // A route is always ready (axum's `Route` says so), which spares a
        // second turn of the lock per request.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        if let Some(pattern) = req.extensions().get::<MatchedPath>() {
            let pattern = pattern.as_str();
            // A route has one pattern, but compare rather than assume it.
            let tag = &self.tag;
            let route = match tag.seen.get() {
                Some(r) if r.as_str() == pattern => Some(r.clone()),
                _ => tag.metrics.route(pattern).inspect(|r| {
                    let _ = tag.seen.set(r.clone());
                }),
            };
            if let Some(route) = route {
                super::front::set_current_route(route);
            }
        }
        let mut inner = self.tag.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.call(req)
    }
}
