//! The guards in front of the protected route groups, and the extractors
//! that name the caller.
//!
//! In pipeline order (DESIGN.md): the **gatekeeper** loads the session and
//! turns away a missing, expired or forged one; the **CSRF** check runs on
//! every unsafe method; then the group's own guard (**verified**, **member
//! of group G**, or the **admin gatekeeper**) decides. A forged cookie is
//! logged as suspicious; an ended session gets its cookie cleared.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRef, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::auth::{Auth, Loaded, Session, User};
use crate::error::Error;

/// The request header that carries the CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The form field that carries the CSRF token.
pub const CSRF_FIELD: &str = "csrf_token";

/// A session that passed the gatekeeper and, for an unsafe request, the
/// CSRF check. Only the gatekeeper makes one, so an extractor that merely
/// loads the cookie (like [`MaybeSession`]) can never stand in for it.
#[derive(Debug, Clone)]
pub(crate) struct Guarded(pub(crate) Session);

/// A session [`MaybeSession`] loaded on a route without the gatekeeper:
/// kept so that a second extraction does not load it again, and a type of
/// its own so that it never satisfies [`CurrentUser`].
#[derive(Debug, Clone)]
struct Unchecked(Option<Session>);

/// The signed-in caller, as the gatekeeper found them. Use it in handlers of
/// the signed-in, verified, group and admin route groups; elsewhere (a
/// public route, even one that extracted [`MaybeSession`] first) it answers
/// 401, because no CSRF check vouches for the request there.
#[derive(Debug, Clone)]
pub struct CurrentUser {
    /// The account.
    pub user: User,
    /// Whether the account is an admin.
    pub admin: bool,
    /// The session the request came with.
    pub session: Session,
}

impl<S: Send + Sync> FromRequestParts<S> for CurrentUser {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Error> {
        let Guarded(session) = parts
            .extensions
            .get::<Guarded>()
            .cloned()
            .ok_or_else(|| Error::unauthorized("sign-in is required"))?;
        match session.user.clone() {
            Some(user) => Ok(CurrentUser {
                user,
                admin: session.admin,
                session,
            }),
            None => Err(Error::unauthorized("sign-in is required")),
        }
    }
}

/// The caller's session on any route, for showing who is signed in: the
/// one the gatekeeper loaded, or else whatever the cookie holds (`None`
/// when absent, forged or over). On a public route nothing has checked a
/// CSRF token, so a handler that changes state on the caller's behalf must
/// sit behind the gatekeeper and take [`CurrentUser`] instead.
#[derive(Debug, Clone)]
pub struct MaybeSession(pub Option<Session>);

impl<S> FromRequestParts<S> for MaybeSession
where
    S: Send + Sync,
    Auth: FromRef<S>,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        if let Some(Guarded(s)) = parts.extensions.get::<Guarded>() {
            return Ok(MaybeSession(Some(s.clone())));
        }
        if let Some(Unchecked(s)) = parts.extensions.get::<Unchecked>() {
            return Ok(MaybeSession(s.clone()));
        }
        let s = match Auth::from_ref(state).load(&parts.headers).await? {
            Loaded::Valid(s) => Some(s),
            _ => None,
        };
        parts.extensions.insert(Unchecked(s.clone()));
        Ok(MaybeSession(s))
    }
}

/// The gatekeeper, then the CSRF check: only requests with a live,
/// signed-in session pass (for [`CurrentUser`] to find), and
/// unsafe ones only with the session's CSRF token from this site.
pub(crate) async fn gatekeeper(State(auth): State<Auth>, mut req: Request, next: Next) -> Response {
    let mut res = match auth.load(req.headers()).await {
        Ok(Loaded::Valid(s)) if s.user.is_some() => {
            // The CSRF check comes next in the pipeline; it runs here, in
            // the same layer, to spare every request a middleware hop.
            req = match check_csrf(&auth, &s, req).await {
                Ok(req) => req,
                Err(e) => return e.into_response(),
            };
            req.extensions_mut().insert(Guarded(s));
            return next.run(req).await;
        }
        Ok(Loaded::Valid(_) | Loaded::Absent) => {
            Error::unauthorized("sign-in is required").into_response()
        }
        Ok(Loaded::Ended) => ended(&auth),
        Ok(Loaded::Forged) => forged(&auth, &req),
        Err(e) => return e.into_response(),
    };
    // A person in a browser is better served by the sign-in page.
    if let Some(login) = auth.login_page()
        && matches!(*req.method(), Method::GET | Method::HEAD)
        && crate::http::prefers_html(req.headers())
    {
        let wanted = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let next: String = form_urlencoded::byte_serialize(wanted.as_bytes()).collect();
        if let Ok(to) = axum::http::HeaderValue::from_str(&format!("{login}?next={next}")) {
            *res.status_mut() = StatusCode::SEE_OTHER;
            res.headers_mut().insert(header::LOCATION, to);
            // The redirect has no error body for the pipeline to render.
            res.extensions_mut().remove::<crate::error::ErrorBody>();
            *res.body_mut() = Body::empty();
            res.headers_mut().remove(header::CONTENT_TYPE);
            res.headers_mut().remove(header::CONTENT_LENGTH);
        }
    }
    res
}

/// 401 for a session that is over, clearing its cookie.
pub(crate) fn ended(auth: &Auth) -> Response {
    let mut res = Error::new(
        StatusCode::UNAUTHORIZED,
        "session_expired",
        "the session has expired; sign in again",
    )
    .into_response();
    res.headers_mut()
        .append(header::SET_COOKIE, auth.clear_cookie_header());
    res
}

/// 401 for a cookie this server did not sign, logged as suspicious.
pub(crate) fn forged(auth: &Auth, req: &Request) -> Response {
    tracing::warn!(
        suspicious = true,
        client = %client_ip(auth, req.headers(), crate::http::current_peer()),
        path = req.uri().path(),
        request_id = crate::http::current_request_id().unwrap_or_default(),
        "a session cookie with a bad signature was presented"
    );
    let mut res = Error::unauthorized("sign-in is required").into_response();
    res.headers_mut()
        .append(header::SET_COOKIE, auth.clear_cookie_header());
    res
}

/// Whether `method` can change state and so needs a CSRF token.
pub fn is_unsafe(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// Checks the CSRF token and the origin of an unsafe request against
/// `session`, returning the request (its form body read and put back) when
/// they pass. Safe methods pass untouched.
pub async fn check_csrf(auth: &Auth, session: &Session, req: Request) -> Result<Request, Error> {
    if !is_unsafe(req.method()) {
        return Ok(req);
    }
    if !origin_allowed(auth, req.headers(), req.uri()) {
        return Err(
            Error::forbidden("the request comes from another site").with_code("cross_origin")
        );
    }
    if let Some(token) = req.headers().get(CSRF_HEADER) {
        let ok = token.to_str().is_ok_and(|t| auth.csrf_matches(session, t));
        return if ok { Ok(req) } else { Err(csrf_failed()) };
    }
    if !is_form(req.headers()) {
        return Err(csrf_failed());
    }
    let limit = usize::try_from(auth.body_limit()).unwrap_or(usize::MAX);
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| Error::payload_too_large(auth.body_limit()))?;
    let ok = form_urlencoded::parse(&bytes)
        .find(|(k, _)| k == CSRF_FIELD)
        .is_some_and(|(_, v)| auth.csrf_matches(session, &v));
    if ok {
        Ok(Request::from_parts(parts, Body::from(bytes)))
    } else {
        Err(csrf_failed())
    }
}

fn csrf_failed() -> Error {
    Error::forbidden("the CSRF token is missing or wrong; reload the page and try again")
        .with_code("csrf_failed")
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| {
            m.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

/// Whether the `Origin` (or, without it, the `Referer`) of a request names
/// this site (its `Host`, or over HTTP/2 the URI's authority) or an allowed
/// origin. Requests with neither (non-browser clients) pass here; the token
/// check still applies to them.
pub fn origin_allowed(auth: &Auth, headers: &HeaderMap, uri: &axum::http::Uri) -> bool {
    let source = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .map(|v| v.to_str().unwrap_or("null"));
    let Some(source) = source else {
        return true;
    };
    let Some(origin) = origin_of(source) else {
        return false;
    };
    if auth
        .config()
        .allowed_origins
        .iter()
        .any(|o| o.eq_ignore_ascii_case(&origin))
    {
        return true;
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(axum::http::uri::Authority::as_str));
    let Some(host) = host else {
        return false;
    };
    let (scheme, authority) = origin.split_once("://").unwrap_or(("", ""));
    strip_default_port(scheme, authority).eq_ignore_ascii_case(strip_default_port(scheme, host))
}

/// `scheme://host[:port]` of an Origin or Referer value; `None` for `null`
/// or anything that is not an http(s) URL.
fn origin_of(source: &str) -> Option<String> {
    let (scheme, rest) = source.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    Some(format!("{scheme}://{authority}"))
}

fn strip_default_port<'a>(scheme: &str, authority: &'a str) -> &'a str {
    match (scheme, authority.rsplit_once(':')) {
        ("https", Some((host, "443"))) | ("http", Some((host, "80"))) => host,
        _ => authority,
    }
}

/// The admin gatekeeper: only admins pass.
pub(crate) async fn admin_gatekeeper(req: Request, next: Next) -> Response {
    match req.extensions().get::<Guarded>() {
        Some(Guarded(s)) if s.admin => next.run(req).await,
        Some(_) => Error::forbidden("administrators only").into_response(),
        None => Error::unauthorized("sign-in is required").into_response(),
    }
}

/// Only accounts whose email is verified pass.
pub(crate) async fn verified_gatekeeper(req: Request, next: Next) -> Response {
    match req
        .extensions()
        .get::<Guarded>()
        .and_then(|Guarded(s)| s.user.as_ref())
    {
        Some(u) if u.verified => next.run(req).await,
        Some(_) => Error::forbidden("confirm your email address first")
            .with_code("email_unverified")
            .into_response(),
        None => Error::unauthorized("sign-in is required").into_response(),
    }
}

/// Only members of the group (the middleware's state) pass.
pub(crate) async fn group_gatekeeper(
    State((auth, group)): State<(Auth, Arc<str>)>,
    req: Request,
    next: Next,
) -> Response {
    let Some(user) = req
        .extensions()
        .get::<Guarded>()
        .and_then(|Guarded(s)| s.user.as_ref())
    else {
        return Error::unauthorized("sign-in is required").into_response();
    };
    match auth.users().in_group(user.id, &group).await {
        Ok(true) => next.run(req).await,
        Ok(false) => Error::forbidden("members of this group only").into_response(),
        Err(e) => Error::from(e).into_response(),
    }
}

/// The client's address for rate limits and logs, as
/// [`ProxyTrust::client`](crate::http::client_ip::ProxyTrust::client) finds
/// it, keyed as [`limit_key`](crate::http::client_ip::limit_key) does (an
/// IPv6 client by its /64); `unknown` without a peer.
pub fn client_ip(auth: &Auth, headers: &HeaderMap, peer: Option<SocketAddr>) -> String {
    auth.proxy_trust()
        .client(headers, peer)
        .map_or_else(|| "unknown".to_owned(), crate::http::client_ip::limit_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_cut_to_scheme_and_authority() {
        assert_eq!(
            origin_of("https://a.example/x?y").as_deref(),
            Some("https://a.example")
        );
        assert_eq!(
            origin_of("HTTP://a.example:8080").as_deref(),
            Some("http://a.example:8080")
        );
        assert_eq!(origin_of("null"), None);
        assert_eq!(origin_of("javascript://x"), None);
        assert_eq!(origin_of("https://user@evil.example/"), None);
        assert_eq!(strip_default_port("https", "a.example:443"), "a.example");
        assert_eq!(strip_default_port("http", "a.example:443"), "a.example:443");
    }
}
