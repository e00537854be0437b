//! The HTTP pipeline, in the order of DESIGN.md:
//!
//! compression → request id + access log + limits (body size, concurrency,
//! timeout) + panic catcher + error rendering + ETags + security headers
//! (`front`) → static files
//! → public routes → auth routes → gatekeeper → CSRF → signed-in routes
//! (and the verified and group guards before theirs) → admin gatekeeper →
//! admin routes, with `/healthz`, `/readyz` and `/metrics` (which checks its
//! own caller) among the public routes and a
//! JSON/HTML 404 for everything else. The guards are in `auth::guard`.
//!
//! Compression sits outside `front` so that ETags are computed on the
//! uncompressed body and are the same for every encoding (they are weak ETags).

pub mod client_ip;
mod compress;
mod front;
mod head_deadline;
mod health;
mod json;
mod limits;
mod refusals;
mod route_tag;
mod security;
pub mod server;
mod static_files;

use axum::Router;
use axum::middleware;
use tower::ServiceBuilder;

use crate::auth::guard;
use crate::error::Error;
use crate::module::Context;
use crate::state::AppState;

#[cfg(test)]
pub(crate) use front::in_request as front_in_request;
pub use front::{
    PeerAddr, RequestId, current_peer, current_request_id, current_user_id, prefers_html,
    step_aside,
};
pub(crate) use front::{current as front_current, set_current_user as front_set_current_user};
pub use json::Json;
pub use limits::StepAside;
pub use security::DEFAULT_CSP;

type Stack = compress::Compress<front::Front>;

/// The whole pipeline as one service: what the server runs for every
/// connection, and what tests can call directly with `tower::ServiceExt::oneshot`.
#[derive(Clone)]
pub struct Pipeline(Stack);

impl tower::Service<axum::extract::Request> for Pipeline {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = futures_util::future::Either<
        front::FrontFuture,
        futures_util::future::Map<
            tower_http::compression::ResponseFuture<
                front::FrontFuture,
                tower_http::compression::predicate::DefaultPredicate,
            >,
            compress::ToBody,
        >,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: axum::extract::Request) -> Self::Future {
        self.0.call(req)
    }
}

/// Assembles the full pipeline from what the modules registered.
pub(crate) fn pipeline(state: &AppState, ctx: Context<'_>) -> Pipeline {
    let http = &state.config().http;
    let mut app = Router::new()
        .route("/healthz", axum::routing::get(health::healthz))
        .route("/readyz", axum::routing::get(health::readyz))
        .merge(ctx.public);
    if state.metrics().enabled() {
        app = app.route("/metrics", axum::routing::get(health::metrics));
    }
    if !ctx.assets.is_empty() {
        app = app.merge(static_files::router(&ctx.assets, http.static_max_age.get()));
    }
    // route_layer guards only the routes that exist, so unknown paths stay 404.
    // The last layer added runs first: the gatekeeper (which also checks
    // CSRF), then the group's own guard.
    let gate = || middleware::from_fn_with_state(state.clone(), guard::gatekeeper);
    let mut signed_in = ctx.signed_in;
    // With an allow-list anyone could sign up with a listed address they do
    // not own; only the mailed link proves it.
    if !state.auth().config().signup_allow.is_empty() && signed_in.has_routes() {
        signed_in = signed_in.route_layer(middleware::from_fn(guard::verified_gatekeeper));
    }
    let signed_in = signed_in.merge(ctx.own_account);
    app = app.merge(signed_in.route_layer(gate()));
    if ctx.verified.has_routes() {
        app = app.merge(
            ctx.verified
                .route_layer(middleware::from_fn(guard::verified_gatekeeper))
                .route_layer(gate()),
        );
    }
    for (group, routes) in ctx.groups {
        app = app.merge(
            routes
                .route_layer(middleware::from_fn_with_state(
                    (state.auth().clone(), group),
                    guard::group_gatekeeper,
                ))
                .route_layer(gate()),
        );
    }
    if ctx.admin.has_routes() {
        app = app.merge(
            ctx.admin
                .route_layer(middleware::from_fn(guard::admin_gatekeeper))
                .route_layer(gate()),
        );
    }
    if state.metrics().enabled() {
        // Before the fallback, so unknown paths stay untagged (`unmatched`).
        app = app.layer(route_tag::RouteTagLayer(state.metrics().clone()));
    }
    let router = app.fallback(not_found).with_state(state.clone());
    // The stack wraps the router once. (`Router::layer` would wrap every route
    // separately and clone each layer's boxed inner service per request.)
    let stack = ServiceBuilder::new()
        .layer(compress::CompressLayer::new())
        .layer(front::FrontLayer::new(
            http.body_limit,
            limits::Limits::new(
                http.concurrency_limit,
                http.request_timeout.get(),
                http.body_limit,
                limits::BodyPace {
                    idle: http.body_idle_timeout.get(),
                    min_rate: http.body_min_rate,
                },
            ),
            security::SecurityHeaders::from_config(state.config()),
            state.metrics().clone(),
            state.notifier().clone(),
            state.db_circuit().cloned(),
        ))
        .service(router);
    Pipeline(stack)
}

async fn not_found() -> Error {
    Error::not_found("no route matches this path")
}
