//! The HTTP pipeline, in the order of DESIGN.md:
//!
//! compression → request id + access log + error rendering + ETags (`front`)
//! → panic catcher → limits (concurrency, timeout) → body limit → static files
//! → public routes → gatekeeper → signed-in routes → admin gatekeeper → admin
//! routes, with `/healthz` and `/readyz` among the public routes and a JSON/HTML
//! 404 for everything else.
//!
//! Compression sits outside `front` so that ETags are computed on the
//! uncompressed body and are the same for every encoding (they are weak ETags).

mod front;
mod guard;
mod health;
mod json;
mod limits;
pub mod server;
mod static_files;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::limit::RequestBodyLimitLayer;

use crate::app::AppState;
use crate::error::Error;
use crate::module::Context;

pub use front::{RequestId, prefers_html};
pub use json::Json;

/// Assembles the full pipeline from what the modules registered.
pub(crate) fn pipeline(state: &AppState, ctx: Context<'_>) -> Router {
    let http = &state.config().http;
    let body_limit = usize::try_from(http.body_limit).unwrap_or(usize::MAX);

    let mut app = Router::new()
        .route("/healthz", axum::routing::get(health::healthz))
        .route("/readyz", axum::routing::get(health::readyz))
        .merge(ctx.public);
    if !ctx.assets.is_empty() {
        app = app.merge(static_files::router(&ctx.assets, http.static_max_age.get()));
    }
    // route_layer guards only the routes that exist, so unknown paths stay 404.
    if ctx.signed_in.has_routes() {
        app = app.merge(
            ctx.signed_in
                .route_layer(middleware::from_fn(guard::gatekeeper)),
        );
    }
    if ctx.admin.has_routes() {
        app = app.merge(
            ctx.admin
                .route_layer(middleware::from_fn(guard::admin_gatekeeper))
                .route_layer(middleware::from_fn(guard::gatekeeper)),
        );
    }
    app.fallback(not_found)
        .with_state(state.clone())
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(RequestBodyLimitLayer::new(body_limit))
        .layer(limits::LimitsLayer::new(
            http.concurrency_limit,
            http.request_timeout.get(),
        ))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(front::FrontLayer::new(http.body_limit))
        .layer(CompressionLayer::new())
}

async fn not_found() -> Error {
    Error::not_found("no route matches this path")
}

fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)");
    // Logged here, in the request's span; the client sees only the request id.
    tracing::error!(panic = detail, "handler panicked");
    Error::new(
        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal server error",
    )
    .into_response()
}
