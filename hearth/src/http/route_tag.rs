//! Tags each request with the route pattern that serves it (`/users/{id}`,
//! not `/users/42`), for the metrics labels and the 5xx notifications that
//! the outer layer (`front`) records. Only the router knows the pattern, so a
//! layer around every route hands it to `front` through the request's
//! task-local (see `front::set_current_route`): the route's service is
//! called when its future is first polled, inside that scope.

use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use axum::extract::{MatchedPath, Request};
use tower::{Layer, Service};

use crate::telemetry::Metrics;

/// Adds [`RouteTagService`] around every route.
#[derive(Clone)]
pub(crate) struct RouteTagLayer(pub(crate) Metrics);

impl<S> Layer<S> for RouteTagLayer {
    type Service = RouteTagService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RouteTagService {
            inner,
            tag: Arc::new(Tag {
                metrics: self.0.clone(),
                seen: OnceLock::new(),
            }),
        }
    }
}

/// See the module docs.
#[derive(Clone)]
pub(crate) struct RouteTagService<S> {
    inner: S,
    // One `Arc`: the router clones this service for every request.
    tag: Arc<Tag>,
}

/// What one route's tagging needs.
struct Tag {
    metrics: Metrics,
    // The label of the pattern this route answered last time; shared by the
    // clones the router makes per request, so the label is looked up once.
    seen: OnceLock<crate::telemetry::metrics::Route>,
}

impl<S> Service<Request> for RouteTagService<S>
where
    S: Service<Request>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
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
        self.inner.call(req)
    }
}
