//! The gatekeepers in front of the signed-in and admin route groups.
//!
//! hearth has no sessions yet (they arrive with accounts), so no request can
//! prove who it is, and both guards deny every request. That keeps the route
//! groups safe by default: a route registered as signed-in or admin is never
//! served to an anonymous caller, even before accounts exist. The accounts
//! capability replaces the bodies of these two functions, not their place in
//! the pipeline.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::Error;

/// Lets through only requests that carry a signed-in identity (none yet).
pub(crate) async fn gatekeeper(_req: Request, _next: Next) -> Response {
    Error::unauthorized("sign-in is required").into_response()
}

/// Lets through only requests whose identity is an admin (none yet).
pub(crate) async fn admin_gatekeeper(_req: Request, _next: Next) -> Response {
    Error::forbidden("administrators only").into_response()
}
