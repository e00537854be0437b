//! The outermost layer that sees every request: request id, access log, error
//! rendering and ETags.
//!
//! - **Limits.** Body size, concurrency and time, see `limits`.
//! - **Panics.** A handler that panics becomes a 500 that carries the request id
//!   and nothing of the panic; the panic message goes to the log.
//! - **Request id.** A well-formed incoming `X-Request-Id` is kept (so a proxy's id
//!   follows the request); anything else is replaced by a fresh UUID. The id is
//!   in the request's extensions, in every log line of the request, in the
//!   response header and in every error body.
//! - **Access log.** One line per request at target `hearth::access`: method,
//!   path (never the query string, which may carry tokens), status, duration
//!   and request id (see `telemetry::access`).
//! - **Errors.** Every 4xx/5xx leaves as `{"error":{…},"request_id":…}` for API
//!   clients or as an HTML page for browsers (the `Accept` header decides). Bare
//!   errors from lower layers (405, 413, …) are given a body here.
//! - **ETags.** Successful JSON responses get a weak ETag computed from the body;
//!   any response with an ETag is answered with 304 when `If-None-Match` matches.

use std::cell::Cell;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use askama::Template;
use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::future::RouteFuture;
use http_body_util::BodyExt;
use tower::{Layer, Service};
use tracing::Instrument;

use super::limits::{Limits, Refusal, Running};
use super::security::SecurityHeaders;
use crate::error::{ErrorBody, render_json};
use crate::telemetry::access::{self, AccessLine};
use crate::telemetry::metrics::Route;
use crate::telemetry::{EventKind, Metrics, Notifier};

/// The id of the current request; also sent back as `X-Request-Id`.
///
/// An extractor: a handler that takes a `RequestId` gets the id of the request
/// it serves. (It is read from the request's task, not stored in the request's
/// extensions, which saves growing that map on every request.)
#[derive(Debug, Clone)]
pub struct RequestId(pub HeaderValue);

impl RequestId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        self.0.to_str().unwrap_or("")
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for RequestId {
    type Rejection = Infallible;

    async fn from_request_parts(
        _parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Infallible> {
        // Outside hearth's pipeline (a router called directly) there is no id.
        Ok(RequestId(
            CURRENT
                .try_with(|c| c.id.to_header())
                .unwrap_or_else(|_| HeaderValue::from_static("")),
        ))
    }
}

// A constant name: looking a header up by `&str` parses the name every time.
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Adds [`Front`] to a service.
#[derive(Debug, Clone)]
pub(crate) struct FrontLayer(Arc<Shared>);

/// What every request's future needs from the pipeline, behind one `Arc`
/// so that a request clones one pointer, not one per part.
#[derive(Debug)]
struct Shared {
    etag_limit: u64,
    limits: Limits,
    security: SecurityHeaders,
    // What `json_response_headers` hands out.
    json_headers: HeaderMap,
    metrics: Metrics,
    notifier: Notifier,
    circuit: Option<crate::db::circuit::Circuit>,
}

impl FrontLayer {
    /// `etag_limit`: JSON bodies larger than this get no ETag (they would have
    /// to be buffered whole to hash them). `limits` are checked for every request.
    /// `metrics` records every request; `notifier` hears of panics and 5xx;
    /// `circuit` hears of requests that failed for want of the database.
    pub(crate) fn new(
        etag_limit: u64,
        limits: Limits,
        security: SecurityHeaders,
        metrics: Metrics,
        notifier: Notifier,
        circuit: Option<crate::db::circuit::Circuit>,
    ) -> Self {
        let json_headers = json_headers(&security);
        Self(Arc::new(Shared {
            etag_limit,
            limits,
            json_headers,
            security,
            metrics,
            notifier,
            circuit,
        }))
    }
}

impl Layer<Router> for FrontLayer {
    type Service = Front;
    fn layer(&self, inner: Router) -> Front {
        Front {
            inner,
            shared: self.0.clone(),
        }
    }
}

/// The boxed future of [`Front`].
pub(crate) type FrontFuture = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

/// See the module docs. It wraps a [`Router`] in particular because a router
/// is always ready: it can be called without first being driven to readiness.
#[derive(Debug, Clone)]
pub(crate) struct Front {
    inner: Router,
    shared: Arc<Shared>,
}

/// A request id, kept inline: it is copied into the request's task-local
/// and read by every log line, and a `HeaderValue` would cost an allocation
/// to make and another the first time it is shared.
#[derive(Clone, Copy)]
pub(crate) struct ReqId {
    buf: [u8; 64],
    len: u8,
}

impl ReqId {
    /// The id; always ASCII (see `valid_incoming_id` and `new_id`).
    pub(crate) fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..usize::from(self.len)]).unwrap_or("")
    }

    /// The id as a header value (made only for the response).
    fn to_header(self) -> HeaderValue {
        HeaderValue::from_bytes(&self.buf[..usize::from(self.len)])
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
    }

    /// `bytes` (at most 64 of them) as an id.
    fn from_bytes(bytes: &[u8]) -> Self {
        let mut buf = [0; 64];
        let len = bytes.len().min(64);
        buf[..len].copy_from_slice(&bytes[..len]);
        Self {
            buf,
            // At most 64.
            len: len as u8,
        }
    }
}

/// What `Front` remembers from the request to finish the response.
struct Seen {
    method: Method,
    // Parsed only when an error is rendered, which keeps the common path cheap.
    accept: Option<HeaderValue>,
    if_none_match: Option<HeaderValue>,
}

impl Service<Request> for Front {
    type Response = Response;
    type Error = Infallible;
    type Future = FrontFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Service::<Request>::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let start = Instant::now();
        // One pass over the headers instead of a hashed lookup per header; the
        // first of repeated headers counts, as with `HeaderMap::get`.
        let (mut accept, mut if_none_match, mut incoming) = (None, None, None);
        for (name, value) in req.headers() {
            if *name == header::ACCEPT {
                accept.get_or_insert_with(|| value.clone());
            } else if *name == header::IF_NONE_MATCH {
                if_none_match.get_or_insert_with(|| value.clone());
            } else if *name == X_REQUEST_ID {
                incoming.get_or_insert(value);
            }
        }
        let id = incoming.and_then(valid_incoming_id).unwrap_or_else(new_id);
        let seen = Seen {
            method: req.method().clone(),
            accept,
            if_none_match,
        };
        // Only the path is needed (for the access line and the notices), and a
        // `PathAndQuery` clone shares its bytes: no copy of the path.
        let path = req.uri().path_and_query().cloned();
        // A debug-level span: at `info` it costs nothing, and hearth's own error
        // lines carry the id through `current_request_id` instead.
        let span = tracing::debug_span!("request", request_id = id.as_str());
        let current = Current {
            id,
            user: Cell::new(None),
            route: Cell::new(None),
            peer: PEER.take(),
            pipeline: Some(self.shared.clone()),
            body: Cell::new(BodyWait::Done),
        };
        let shared = self.shared.clone();
        // The inner service is called here, not inside the future: a router is
        // always ready, so it needs no clone driven to readiness, and the boxed
        // future holds the route's future rather than the request and a router.
        // (Routing does no work of the handler's; that runs when polled, below,
        // with the request id in scope.)
        // A panic while routing is caught here like one in the handler.
        let mut stage = match shared.limits.admit(&mut req, start) {
            Err(refused) => Stage::Refused(refused),
            Ok(admitted) => {
                let inner = &mut self.inner;
                match std::panic::catch_unwind(AssertUnwindSafe(|| inner.call(req))) {
                    Ok(routed) => Stage::Run(admitted.run(routed)),
                    Err(panic) => Stage::Panicked(Some(panic)),
                }
            }
        };
        let fut = CURRENT
            .scope(current, async move {
                let path = path.as_ref().map_or("/", |p| p.path());
                let panicked = |panic| panic_response(panic, &shared.notifier, path);
                // Awaited through `&mut`: the route's future stays where it
                // was captured instead of being moved into a second slot of
                // this future (see `request_future_fits_the_allocators_fast_path`).
                let mut res = match &mut stage {
                    Stage::Run(running) => match running.await {
                        // The handler answered whatever its extractor made of
                        // a body that stopped arriving: the client's fault.
                        Ok(_) if body_wait() == BodyWait::TimedOut => {
                            super::limits::body_timeout().into_response()
                        }
                        Ok(res) => res,
                        Err(panic) => panicked(panic),
                    },
                    Stage::Refused(refused) => refused.into_response(),
                    Stage::Panicked(panic) => {
                        panicked(panic.take().unwrap_or_else(|| Box::new(())))
                    }
                };
                // Releases the concurrency permit before the response is finished.
                drop(stage);
                let route = CURRENT.try_with(|c| c.route.take()).ok().flatten();
                if needs_etag(&res, &seen) {
                    // Boxed: a response that needs this is rare (`hearth::http::Json`
                    // sets its own ETag), and the future of every request would
                    // otherwise carry room for this one's state.
                    res = Box::pin(add_etag(res, shared.etag_limit)).await;
                }
                // Always set inside the scope.
                let req_id = CURRENT
                    .try_with(|c| c.id)
                    .unwrap_or_else(|_| ReqId::from_bytes(b""));
                let id = req_id.as_str();
                let mut res = finish(res, &seen, &req_id);
                shared.security.apply(res.headers_mut());
                let status = res.status().as_u16();
                let duration = start.elapsed();
                let user_id = current_user_id();
                access::log(&AccessLine {
                    method: seen.method.as_str(),
                    path,
                    status,
                    duration,
                    request_id: id,
                    user_id,
                });
                shared
                    .metrics
                    .http(&seen.method, route.as_ref(), status, duration);
                if status == 503
                    && let Some(circuit) = &shared.circuit
                    && res.extensions().get::<ErrorBody>().is_some_and(|b| {
                        matches!(&*b.code, "database_busy" | "database_unavailable")
                    })
                {
                    circuit.suspect();
                }
                if status >= 500 {
                    // By route pattern, so an outage is one subject, not
                    // one per URL. A panic leaves no pattern: its path
                    // then (panics are few); other untagged 5xx come from
                    // the limits, which are about the server, not a path.
                    let subject = match &route {
                        Some(r) => format!("{} {}", seen.method, r.as_str()),
                        None if res.extensions().get::<Panicked>().is_some() => {
                            format!("{} {path}", seen.method)
                        }
                        None => format!("{} (limits)", seen.method),
                    };
                    shared.notifier.send(
                        EventKind::ServerError,
                        subject,
                        format!("{status} for {} {path} (request {id})", seen.method),
                    );
                }
                Ok(res)
            })
            .instrument(span);
        Box::pin(fut)
    }
}

/// Where a request stands once `Front::call` has returned.
// The common variant is the large one and lives inside the boxed request
// future already; boxing it again would cost a second allocation.
#[allow(clippy::large_enum_variant)]
enum Stage {
    /// Admitted and routed: the route's future, under the limits.
    Run(Running<RouteFuture<Infallible>>),
    /// Refused by the limits before routing.
    Refused(Refusal),
    /// Routing itself panicked (taken when answered).
    Panicked(Option<Box<dyn std::any::Any + Send + 'static>>),
}

/// What every log line inside a request carries.
struct Current {
    id: ReqId,
    // Set when the request's session turns out to be signed in.
    user: Cell<Option<i64>>,
    // Set by the route that serves the request (see `route_tag`).
    route: Cell<Option<Route>>,
    // The connection's peer, when the request came through hearth's server.
    peer: Option<SocketAddr>,
    // For `json_response_headers`; `None` in tests that only need the id.
    pipeline: Option<Arc<Shared>>,
    // Whether the handler is waiting on the client's body, or gave up on it.
    body: Cell<BodyWait>,
}

tokio::task_local! {
    static CURRENT: Current;
}

thread_local! {
    /// The peer of the request about to enter the pipeline: the server sets
    /// it just before calling the pipeline and `Front::call` takes it, on the
    /// same thread with nothing in between. (Carrying it in the request's
    /// extensions, as axum's `ConnectInfo` does, costs a map insert, and the
    /// map's growth, on every request.)
    static PEER: Cell<Option<SocketAddr>> = const { Cell::new(None) };
}

/// Hands the connection's peer to the next request entering the pipeline.
pub(crate) fn set_next_peer(peer: SocketAddr) {
    PEER.set(Some(peer));
}

/// The address of the client at the other end of the current request's
/// connection (a proxy's, behind one), if on a request's task that came
/// through hearth's server.
pub fn current_peer() -> Option<SocketAddr> {
    CURRENT.try_with(|c| c.peer).ok().flatten()
}

/// The address of the connection's peer, as an extractor: hearth's stand-in
/// for axum's `ConnectInfo`, which it does not insert. `None` when the
/// request did not come through hearth's server (a router called directly
/// in a test). Behind a proxy, see [`crate::auth::guard::client_ip`] for the
/// forwarded address.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub Option<SocketAddr>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for PeerAddr {
    type Rejection = Infallible;

    async fn from_request_parts(
        _parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Infallible> {
        Ok(PeerAddr(current_peer()))
    }
}

/// The id of the request being handled on this task, if any. Every log line
/// written while handling it carries it.
pub fn current_request_id() -> Option<String> {
    CURRENT.try_with(|c| c.id.as_str().to_owned()).ok()
}

/// The current request's id and signed-in user, if on a request's task
/// (for the log formatter).
pub(crate) fn current() -> Option<(ReqId, Option<i64>)> {
    CURRENT.try_with(|c| (c.id, c.user.get())).ok()
}

/// The id of the signed-in user the current request came from, once its
/// session has been loaded.
pub fn current_user_id() -> Option<i64> {
    CURRENT.try_with(|c| c.user.get()).ok().flatten()
}

/// Runs `f` as if inside a request with this id and user (for tests of
/// what log lines carry).
#[cfg(test)]
pub(crate) fn in_request<R>(id: &'static str, user: Option<i64>, f: impl FnOnce() -> R) -> R {
    CURRENT.sync_scope(
        Current {
            id: ReqId::from_bytes(id.as_bytes()),
            user: Cell::new(user),
            route: Cell::new(None),
            peer: None,
            pipeline: None,
            body: Cell::new(BodyWait::Done),
        },
        f,
    )
}

/// The header map a JSON response starts from (see `json_headers`), or
/// `None` outside a request that came through the pipeline.
pub(crate) fn json_response_headers() -> Option<HeaderMap> {
    CURRENT
        .try_with(|c| c.pipeline.as_ref().map(|p| p.json_headers.clone()))
        .ok()
        .flatten()
}

/// The header map every `hearth::http::Json` response inside a request starts
/// as a copy of: the security headers, the JSON content type, and an entry
/// for each header that the response always gets and whose value only it
/// knows (ETag, length, request id). Those three hold placeholders, which
/// `Json` and `finish` overwrite without fail: `Json` sets the ETag and length
/// as it makes the map, and `finish` sets the id on every response.
///
/// Copying this map costs less than adding eight headers one by one, each
/// hashed and probed. The placeholders matter too: a copy has room for
/// exactly the entries it was made with, and one more would move the map.
fn json_headers(security: &SecurityHeaders) -> HeaderMap {
    let mut map = security.response_headers();
    map.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    map.insert(header::ETAG, HeaderValue::from_static(""));
    map.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    map.insert(X_REQUEST_ID, HeaderValue::from_static(""));
    map
}

/// Records the route pattern serving the current request, for its metrics.
pub(crate) fn set_current_route(route: Route) {
    let _ = CURRENT.try_with(|c| c.route.set(Some(route)));
}

/// Records the signed-in user of the current request, for its log lines.
pub(crate) fn set_current_user(id: i64) {
    let _ = CURRENT.try_with(|c| c.user.set(Some(id)));
}

/// Gives the current request's concurrency place back until the guard is
/// dropped, for a handler about to wait on something outside the server
/// (a long poll). Keep the guard inside the handler's future; `None`
/// outside a request.
pub fn step_aside() -> Option<super::limits::StepAside> {
    CURRENT
        .try_with(|c| c.pipeline.as_ref().map(|p| p.limits.step_aside()))
        .ok()
        .flatten()
}

/// Where the current request stands with its body, as the body tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyWait {
    /// Not waiting on the client (nothing read yet, some arrived, or all).
    Done,
    /// The handler waits for bytes the client has not sent.
    Waiting,
    /// The client sent too slowly: the request is answered 408.
    TimedOut,
}

/// Records where the current request stands with its body.
pub(crate) fn set_body_wait(w: BodyWait) {
    let _ = CURRENT.try_with(|c| c.body.set(w));
}

/// Where the current request stands with its body.
pub(crate) fn body_wait() -> BodyWait {
    CURRENT.try_with(|c| c.body.get()).unwrap_or(BodyWait::Done)
}

/// True for a 200 answer to GET or HEAD: the responses ETags are for.
fn is_ok_read(res: &Response, seen: &Seen) -> bool {
    res.status() == StatusCode::OK && (seen.method == Method::GET || seen.method == Method::HEAD)
}

/// True for a successful JSON answer to GET or HEAD that has no ETag yet.
fn needs_etag(res: &Response, seen: &Seen) -> bool {
    // The ETag check first: `hearth::http::Json` sets one, so for most JSON
    // this is the only lookup.
    is_ok_read(res, seen) && !res.headers().contains_key(header::ETAG) && is_json(res.headers())
}

/// Error bodies, 304s and the request id header, once any ETag is set.
fn finish(mut res: Response, seen: &Seen, id: &ReqId) -> Response {
    let status = res.status();
    if status.is_client_error() || status.is_server_error() {
        res = render_error(res, seen, id.as_str());
    } else if let Some(inm) = &seen.if_none_match
        && is_ok_read(&res, seen)
        && let Some(etag) = res.headers().get(header::ETAG)
        && etag_matches(inm, etag)
    {
        res = not_modified(res);
    }
    res.headers_mut().insert(X_REQUEST_ID, id.to_header());
    res
}

/// Gives every error response the standard body, as JSON or HTML.
fn render_error(res: Response, seen: &Seen, id: &str) -> Response {
    let status = res.status();
    let body = match res.extensions().get::<ErrorBody>() {
        Some(body) => body.clone(),
        None if is_bare(res.headers()) => default_body(status),
        // A handler chose its own error body: leave it alone.
        None => return res,
    };
    let (mut parts, _) = res.into_parts();
    let wants_html = seen.accept.as_ref().is_some_and(accepts_html);
    let rendered = if wants_html {
        html_page(status, &body, id)
    } else {
        render_json(status, &body, Some(id))
    };
    let (new_parts, new_body) = rendered.into_parts();
    // Keep headers the error set (Retry-After, Allow, …), but take the new body's type and length.
    parts.headers.remove(header::CONTENT_LENGTH);
    if let Some(ct) = new_parts.headers.get(header::CONTENT_TYPE) {
        parts.headers.insert(header::CONTENT_TYPE, ct.clone());
    }
    parts.extensions.insert(body);
    Response::from_parts(parts, new_body)
}

/// True when a lower layer left a body nobody designed (empty or plain text).
fn is_bare(headers: &HeaderMap) -> bool {
    match headers.get(header::CONTENT_TYPE) {
        None => true,
        Some(ct) => ct.as_bytes().starts_with(b"text/plain"),
    }
}

fn default_body(status: StatusCode) -> ErrorBody {
    let (code, message) = match status {
        StatusCode::BAD_REQUEST => ("bad_request", "the request is malformed"),
        StatusCode::UNAUTHORIZED => ("unauthorized", "sign-in is required"),
        StatusCode::FORBIDDEN => ("forbidden", "this is not allowed"),
        StatusCode::NOT_FOUND => ("not_found", "no route matches this path"),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "this path does not accept this method",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (
            "payload_too_large",
            "the request body is larger than the limit",
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "unsupported_media_type",
            "the request body has an unsupported content type",
        ),
        StatusCode::REQUEST_TIMEOUT => ("timeout", "the request took too long"),
        StatusCode::TOO_MANY_REQUESTS => {
            ("too_many_requests", "too many requests, try again later")
        }
        StatusCode::SERVICE_UNAVAILABLE => {
            ("unavailable", "the service is unavailable, try again later")
        }
        s if s.is_server_error() => ("internal", "internal server error"),
        _ => ("error", "the request failed"),
    };
    ErrorBody {
        code: code.into(),
        message: message.into(),
        field: None,
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    status: u16,
    reason: &'a str,
    message: &'a str,
    field: Option<&'a str>,
    request_id: &'a str,
}

fn html_page(status: StatusCode, body: &ErrorBody, request_id: &str) -> Response {
    let page = ErrorPage {
        status: status.as_u16(),
        reason: status.canonical_reason().unwrap_or("Error"),
        message: &body.message,
        field: body.field.as_deref(),
        request_id,
    };
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        // The template has no fallible parts; fall back to JSON rather than fail twice.
        Err(_) => render_json(status, body, Some(request_id)),
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).is_some_and(|ct| {
        let ct = ct.as_bytes();
        ct.starts_with(b"application/json")
            || ct
                .split(|b| *b == b';')
                .next()
                .is_some_and(|t| t.ends_with(b"+json"))
    })
}

/// Buffers a small JSON body to hash it. Streaming or large bodies are passed
/// through untouched.
async fn add_etag(res: Response, limit: u64) -> Response {
    use axum::body::HttpBody as _;
    let (mut parts, body) = res.into_parts();
    let exact = body.size_hint().exact();
    if exact.is_none_or(|n| n > limit) {
        return Response::from_parts(parts, body);
    }
    match body.collect().await {
        Ok(collected) => {
            let bytes = collected.to_bytes();
            parts.headers.insert(header::ETAG, weak_etag(&bytes));
            Response::from_parts(parts, Body::from(bytes))
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot read response body for its ETag");
            crate::error::Error::internal(anyhow::anyhow!("response body failed: {e}"))
                .into_response()
        }
    }
}

/// A weak ETag from the body's length and 64-bit SipHash.
///
/// `DefaultHasher::new()` has fixed keys, so every node running the same
/// binary computes the same tag; a different Rust release may change it,
/// which costs clients one full response, nothing more.
pub(crate) fn weak_etag(bytes: &[u8]) -> HeaderValue {
    let tag = WeakEtag::of(bytes);
    // Only hex digits, a dash, quotes and a slash: always a valid header value.
    HeaderValue::from_bytes(tag.as_bytes()).unwrap_or_else(|_| HeaderValue::from_static("W/\"0\""))
}

/// The text of a weak ETag, `W/"<length in hex>-<16 hex digits>"`, kept
/// inline so that a caller can put it where it likes (see `weak_etag`, and
/// `hearth::http::Json`, which appends it to the body's own buffer).
pub(crate) struct WeakEtag {
    buf: [u8; WeakEtag::MAX],
    len: usize,
}

impl WeakEtag {
    /// The longest tag: the quotes, `W/`, a dash and two 16-digit numbers.
    const MAX: usize = 2 + 1 + 16 + 1 + 16 + 1;

    /// The tag of `bytes`.
    pub(crate) fn of(bytes: &[u8]) -> Self {
        use std::hash::Hasher as _;
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut h = std::hash::DefaultHasher::new();
        h.write(bytes);
        let hash = h.finish();
        let len = bytes.len() as u64;
        let mut buf = [0_u8; Self::MAX];
        let mut n = 0;
        buf[..3].copy_from_slice(b"W/\"");
        n += 3;
        let len_digits = (64 - len.leading_zeros()).div_ceil(4).max(1);
        for i in (0..len_digits).rev() {
            buf[n] = HEX[((len >> (i * 4)) & 0xf) as usize];
            n += 1;
        }
        buf[n] = b'-';
        n += 1;
        for i in (0..16).rev() {
            buf[n] = HEX[((hash >> (i * 4)) & 0xf) as usize];
            n += 1;
        }
        buf[n] = b'"';
        n += 1;
        Self { buf, len: n }
    }

    /// The tag's bytes: ASCII, valid in a header value.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Logs a handler's panic, tells the operator, and answers 500 without any
/// of its details.
fn panic_response(
    panic: Box<dyn std::any::Any + Send + 'static>,
    notifier: &Notifier,
    path: &str,
) -> Response {
    let detail = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)");
    tracing::error!(
        panic = detail,
        request_id = current_request_id().unwrap_or_default(),
        "handler panicked"
    );
    notifier.send(
        EventKind::Panic,
        path.to_owned(),
        format!(
            "a handler panicked serving {path} (request {}): {detail}",
            current_request_id().unwrap_or_default()
        ),
    );
    let mut res = crate::error::Error::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal server error",
    )
    .into_response();
    res.extensions_mut().insert(Panicked);
    res
}

/// Marks the 500 that stands for a panic.
#[derive(Clone, Copy)]
struct Panicked;

/// Weak comparison (RFC 9110 §13.1.2): `W/` prefixes are ignored; `*` matches.
fn etag_matches(if_none_match: &HeaderValue, etag: &HeaderValue) -> bool {
    let Ok(inm) = if_none_match.to_str() else {
        return false;
    };
    let Ok(etag) = etag.to_str() else {
        return false;
    };
    let strip = |t: &str| t.trim().trim_start_matches("W/").to_owned();
    let etag = strip(etag);
    inm.split(',').any(|t| t.trim() == "*" || strip(t) == etag)
}

fn not_modified(res: Response) -> Response {
    let (mut parts, _) = res.into_parts();
    parts.status = StatusCode::NOT_MODIFIED;
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::CONTENT_TYPE);
    Response::from_parts(parts, Body::empty())
}

/// A kept incoming id: 1–64 characters of `[A-Za-z0-9._:-]`. Anything else
/// could smuggle text into logs, so it is replaced.
fn valid_incoming_id(v: &HeaderValue) -> Option<ReqId> {
    let b = v.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 64
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"._:-".contains(c));
    ok.then(|| ReqId::from_bytes(b))
}

fn new_id() -> ReqId {
    // A random (version 4) UUID from the thread's fast generator: request ids
    // must be unique, not unguessable, and the OS generator costs a system
    // call or a lock per request.
    let id = uuid::Builder::from_random_bytes(fastrand::u128(..).to_le_bytes()).into_uuid();
    let mut buf = uuid::Uuid::encode_buffer();
    ReqId::from_bytes(id.hyphenated().encode_lower(&mut buf).as_bytes())
}

/// True when the client prefers an HTML page to JSON, by the `Accept` header's
/// q-values. Browsers list `text/html` first; `curl`, `fetch` and API clients
/// send `*/*` or `application/json` and get JSON.
pub fn prefers_html(headers: &HeaderMap) -> bool {
    headers.get(header::ACCEPT).is_some_and(accepts_html)
}

fn accepts_html(accept: &HeaderValue) -> bool {
    let Ok(accept) = accept.to_str() else {
        return false;
    };
    let mut html_q = 0.0_f32;
    let mut json_q = 0.0_f32;
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let media = parts.next().unwrap_or("").trim();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        match media {
            "text/html" | "application/xhtml+xml" => html_q = html_q.max(q),
            "application/json" => json_q = json_q.max(q),
            _ => {}
        }
    }
    html_q > 0.0 && html_q >= json_q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn request_future_fits_the_allocators_fast_path() {
        // Every request boxes this future. glibc's per-thread cache serves
        // blocks up to 1032 bytes; a larger one takes the allocator's slow
        // path on every request, which measured as a visible cost of a small
        // request (BENCHMARKS.md). Growing past it should be a choice.
        let config = crate::config::Config::default();
        let layer = FrontLayer::new(
            1024,
            Limits::new(
                8,
                std::time::Duration::from_secs(5),
                1024,
                super::super::limits::BodyPace {
                    idle: std::time::Duration::from_secs(5),
                    min_rate: 0,
                },
            ),
            SecurityHeaders::from_config(&config),
            Metrics::new(&config, "test"),
            Notifier::new(&config, "test"),
            None,
        );
        let mut front = layer.layer(Router::new().route("/", axum::routing::get(|| async { "x" })));
        let fut = front.call(Request::new(Body::empty()));
        let size = std::mem::size_of_val(&*fut);
        assert!(size <= 1024, "the request future is {size} bytes");
        let res = fut.await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }

    fn accept(v: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_static(v));
        h
    }

    #[test]
    fn accept_header_decides_html_or_json() {
        let cases = [
            (
                "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
                true,
            ),
            ("*/*", false),
            ("application/json", false),
            ("application/json, text/html;q=0.5", false),
            ("text/html;q=0.9, application/json;q=0.8", true),
            ("text/html;q=0", false),
        ];
        for (value, html) in cases {
            assert_eq!(prefers_html(&accept(value)), html, "{value}");
        }
        assert!(!prefers_html(&HeaderMap::new()));
    }

    #[test]
    fn etags_compare_weakly() {
        let etag = HeaderValue::from_static("W/\"abc\"");
        for (inm, m) in [
            ("W/\"abc\"", true),
            ("\"abc\"", true),
            ("\"x\", W/\"abc\"", true),
            ("*", true),
            ("\"abd\"", false),
        ] {
            assert_eq!(
                etag_matches(&HeaderValue::from_static(inm), &etag),
                m,
                "{inm}"
            );
        }
    }

    #[test]
    fn weak_etags_carry_length_and_hash() {
        let a = weak_etag(b"hello");
        let s = a.to_str().unwrap();
        assert!(
            s.starts_with("W/\"5-") && s.ends_with('"') && s.len() == 3 + 1 + 1 + 16 + 1,
            "{s}"
        );
        assert_eq!(weak_etag(b"hello"), a);
        assert_ne!(weak_etag(b"hellp"), a);
        assert!(weak_etag(b"").to_str().unwrap().starts_with("W/\"0-"));
        assert!(
            weak_etag(&[0; 300])
                .to_str()
                .unwrap()
                .starts_with("W/\"12c-")
        );
    }

    #[test]
    fn only_safe_request_ids_are_kept() {
        assert!(valid_incoming_id(&HeaderValue::from_static("abc-123_x.y:z")).is_some());
        assert!(valid_incoming_id(&HeaderValue::from_static("a b")).is_none());
        assert!(valid_incoming_id(&HeaderValue::from_static("")).is_none());
        assert!(valid_incoming_id(&HeaderValue::from_str(&"a".repeat(65)).unwrap()).is_none());
    }
}
