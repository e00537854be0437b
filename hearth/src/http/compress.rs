//! Response compression (gzip), engaged only when the client asks for it.
//!
//! tower-http's compression wraps every response body, which costs an
//! allocation per request even when the client sends no `Accept-Encoding`
//! (as load balancers' health checks, most API clients and benchmarks do).
//! This layer routes those requests around it.

use std::convert::Infallible;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::Request;
use axum::http::header;
use axum::response::Response;
use futures_util::future::{Either, FutureExt as _, Map};
use tower::{Layer, Service};
use tower_http::compression::predicate::DefaultPredicate;
use tower_http::compression::{Compression, CompressionBody, CompressionLayer, ResponseFuture};

/// Adds [`Compress`] to a service.
#[derive(Clone, Default)]
pub(crate) struct CompressLayer {
    inner: CompressionLayer,
}

impl CompressLayer {
    pub(crate) fn new() -> Self {
        Self::default()
    }
}

impl<S: Clone> Layer<S> for CompressLayer {
    type Service = Compress<S>;
    fn layer(&self, inner: S) -> Compress<S> {
        Compress {
            compressed: self.inner.layer(inner.clone()),
            plain: inner,
        }
    }
}

/// See the module docs.
#[derive(Clone)]
pub(crate) struct Compress<S> {
    compressed: Compression<S>,
    plain: S,
}

pub(crate) type ToBody =
    fn(Result<Response<CompressionBody<Body>>, Infallible>) -> Result<Response, Infallible>;

fn to_body(
    res: Result<Response<CompressionBody<Body>>, Infallible>,
) -> Result<Response, Infallible> {
    res.map(|r| r.map(Body::new))
}

impl<S> Service<Request> for Compress<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<S::Future, Map<ResponseFuture<S::Future, DefaultPredicate>, ToBody>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        match self.plain.poll_ready(cx) {
            Poll::Ready(Ok(())) => self.compressed.poll_ready(cx),
            other => other,
        }
    }

    fn call(&mut self, req: Request) -> Self::Future {
        if req.headers().contains_key(header::ACCEPT_ENCODING) {
            Either::Right(self.compressed.call(req).map(to_body as ToBody))
        } else {
            Either::Left(self.plain.call(req))
        }
    }
}
