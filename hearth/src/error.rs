//! The framework's one error type for requests.
//!
//! Every failure a client can see is an [`Error`]: a status, a stable machine
//! code, a human message and optionally the input field at fault. Internal
//! errors keep their cause for the log and show the client only an opaque
//! message; the pipeline adds the request id and picks JSON or HTML when it
//! renders the response (see `http::front`).

use std::borrow::Cow;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// A result whose error is a client-visible [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A client-visible error: status, code, message and optional field.
#[derive(Debug)]
pub struct Error {
    status: StatusCode,
    body: ErrorBody,
    retry_after: Option<u64>,
    source: Option<anyhow::Error>,
}

/// The part of an error that is shown to clients.
///
/// It travels as a response extension from the handler to the pipeline's
/// front layer, which renders it as JSON or HTML with the request id.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorBody {
    /// Stable, lowercase, snake_case code for programs (`not_found`).
    pub code: Cow<'static, str>,
    /// Human-readable message, lowercase, no trailing period.
    pub message: Cow<'static, str>,
    /// The input field at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<Cow<'static, str>>,
}

impl Error {
    /// An error with any status, code and message.
    pub fn new(
        status: StatusCode,
        code: impl Into<Cow<'static, str>>,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            status,
            body: ErrorBody {
                code: code.into(),
                message: message.into(),
                field: None,
            },
            retry_after: None,
            source: None,
        }
    }

    /// 400: the request is malformed.
    pub fn bad_request(
        code: impl Into<Cow<'static, str>>,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 422: a well-formed request whose `field` is invalid.
    pub fn validation(
        field: impl Into<Cow<'static, str>>,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", message).with_field(field)
    }

    /// 401: the caller must sign in.
    pub fn unauthorized(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403: the caller is known but not allowed.
    pub fn forbidden(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404: nothing here.
    pub fn not_found(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 409: the request conflicts with the current state.
    pub fn conflict(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 413: the body is over the configured limit.
    pub fn payload_too_large(limit: u64) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    }

    /// 415: the body has a content type this route does not take.
    pub fn unsupported_media_type(expected: &str) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("expected a request body with content type {expected}"),
        )
    }

    /// 429: slow down; `retry_after` is in seconds.
    pub fn too_many_requests(retry_after: u64) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_requests",
            "too many requests, try again later",
        );
        e.retry_after = Some(retry_after);
        e
    }

    /// 503: the server cannot take the request right now.
    pub fn unavailable(
        code: impl Into<Cow<'static, str>>,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message);
        e.retry_after = Some(1);
        e
    }

    /// 500: something broke inside. The cause is logged, never shown.
    pub fn internal(cause: impl Into<anyhow::Error>) -> Self {
        let mut e = Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal server error",
        );
        e.source = Some(cause.into());
        e
    }

    /// Replaces the stable code (`forbidden` → `csrf_failed`).
    #[must_use]
    pub fn with_code(mut self, code: impl Into<Cow<'static, str>>) -> Self {
        self.body.code = code.into();
        self
    }

    /// Names the input field at fault.
    #[must_use]
    pub fn with_field(mut self, field: impl Into<Cow<'static, str>>) -> Self {
        self.body.field = Some(field.into());
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The client-visible part.
    pub fn body(&self) -> &ErrorBody {
        &self.body
    }

    /// The stable code.
    pub fn code(&self) -> &str {
        &self.body.code
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.body.message, self.body.code)?;
        if let Some(src) = &self.source {
            write!(f, ": {src:#}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        // Pool exhaustion is load, not a bug: say so with a 503 the client can retry.
        if matches!(e, sqlx::Error::PoolTimedOut) {
            return Self::unavailable("database_busy", "the database is busy, try again");
        }
        // So is a connection that was lost or refused: the request did not
        // fail because of what it asked, and may be tried again.
        if crate::db::circuit::is_unavailable(&e) {
            // The circuit logs the outage once; a line per request would
            // flood the log while it lasts.
            tracing::debug!(error = %e, "the database could not be reached");
            return Self::unavailable(
                "database_unavailable",
                "the database cannot be reached right now, try again shortly",
            );
        }
        Self::internal(e)
    }
}

impl From<anyhow::Error> for Error {
    fn from(e: anyhow::Error) -> Self {
        Self::internal(e)
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        if let Some(src) = &self.source {
            tracing::error!(
                error = format!("{src:#}"),
                code = %self.body.code,
                request_id = crate::http::current_request_id().unwrap_or_default(),
                "request failed"
            );
        }
        let mut res = render_json(self.status, &self.body, None);
        if let Some(secs) = self.retry_after {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        res.extensions_mut().insert(self.body);
        res
    }
}

/// Renders an error body as `{"error":{…},"request_id":…}`.
pub(crate) fn render_json(
    status: StatusCode,
    body: &ErrorBody,
    request_id: Option<&str>,
) -> Response {
    #[derive(Serialize)]
    struct Envelope<'a> {
        error: &'a ErrorBody,
        #[serde(skip_serializing_if = "Option::is_none")]
        request_id: Option<&'a str>,
    }
    let json = serde_json::to_vec(&Envelope {
        error: body,
        request_id,
    })
    // Serializing strings into a Vec cannot fail; keep a fixed body just in case.
    .unwrap_or_else(|_| {
        br#"{"error":{"code":"internal","message":"internal server error"}}"#.to_vec()
    });
    let mut res = (status, json).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}
