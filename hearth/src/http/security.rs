//! Security headers on every response: a Content-Security-Policy that
//! allows no inline script, `X-Content-Type-Options: nosniff`, a
//! `Referrer-Policy`, no framing by other sites, and HSTS in production.
//!
//! A handler that sets one of these headers itself keeps its own value (a
//! page that must embed something can widen its CSP).

use axum::http::{HeaderMap, HeaderValue, header};

use crate::config::Config;

/// The default CSP: everything from this origin only, no inline script, no
/// plugins, no framing, forms post only here.
pub const DEFAULT_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
img-src 'self' data:; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'";

/// How many headers a response's map has room for before it grows: the
/// security headers plus a typical response's content type, length, ETag and
/// request id. (A map's room comes in steps: 6, 12, 24.)
pub(crate) const RESPONSE_HEADERS: usize = 12;

/// HSTS in production: two years, subdomains included.
const HSTS: &str = "max-age=63072000; includeSubDomains";

/// The headers, built once from the config.
#[derive(Debug, Clone)]
pub(crate) struct SecurityHeaders {
    // In the order they are added, with room for a typical response's other
    // headers, so that a response can start from a copy (`response_headers`).
    headers: HeaderMap,
}

impl SecurityHeaders {
    /// The headers `config` asks for (none with `http.security_headers = false`).
    pub(crate) fn from_config(config: &Config) -> Self {
        let mut headers = HeaderMap::with_capacity(RESPONSE_HEADERS);
        let http = &config.http;
        if !http.security_headers {
            return Self { headers };
        }
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("strict-origin-when-cross-origin"),
        );
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        // Validated at config load; a value that still fails is left out
        // rather than sent broken.
        if !http.content_security_policy.is_empty()
            && let Ok(v) = HeaderValue::from_str(&http.content_security_policy)
        {
            headers.insert(header::CONTENT_SECURITY_POLICY, v);
        }
        if config.is_prod() {
            headers.insert(
                header::STRICT_TRANSPORT_SECURITY,
                HeaderValue::from_static(HSTS),
            );
        }
        Self { headers }
    }

    /// A header map for a new response that already holds these headers, in
    /// the order `apply` checks for; the response's own headers may replace
    /// them. (Copying a prepared map costs less than adding the headers one
    /// by one, each hashed and probed: see `front::json_headers`.)
    pub(crate) fn response_headers(&self) -> HeaderMap {
        self.headers.clone()
    }

    /// Adds each header the response does not have yet.
    pub(crate) fn apply(&self, to: &mut HeaderMap) {
        // A map from `response_headers` starts with all of them (possibly
        // with other values): one pass over its first names shows that
        // without a lookup per header.
        let mut first = to.keys();
        if self.headers.keys().all(|name| first.next() == Some(name)) {
            return;
        }
        for (name, value) in &self.headers {
            to.entry(name).or_insert_with(|| value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderName;

    fn headers() -> SecurityHeaders {
        SecurityHeaders::from_config(&Config::default())
    }

    fn names(sec: &SecurityHeaders) -> Vec<HeaderName> {
        sec.headers.keys().cloned().collect()
    }

    #[test]
    fn a_map_started_from_the_template_keeps_what_the_response_set() {
        let sec = headers();
        let mut map = sec.response_headers();
        map.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
        map.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'self' https://maps.example"),
        );
        sec.apply(&mut map);
        assert_eq!(
            map[header::CONTENT_SECURITY_POLICY],
            "default-src 'self' https://maps.example"
        );
        for name in names(&sec) {
            assert_eq!(map.get_all(&name).iter().count(), 1, "{name}");
        }
    }

    #[test]
    fn any_other_map_gets_each_missing_header() {
        let sec = headers();
        // Empty; a header removed from a template map (which reorders it);
        // the headers present but in another order with one missing.
        let mut removed = sec.response_headers();
        removed.remove(header::X_CONTENT_TYPE_OPTIONS);
        let mut reordered = HeaderMap::new();
        reordered.insert(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("SAMEORIGIN"),
        );
        reordered.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        for mut map in [HeaderMap::new(), removed, reordered] {
            sec.apply(&mut map);
            for name in names(&sec) {
                assert_eq!(map.get_all(&name).iter().count(), 1, "{name}");
            }
        }
        let mut map = HeaderMap::new();
        map.insert(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("SAMEORIGIN"),
        );
        sec.apply(&mut map);
        assert_eq!(map[header::X_FRAME_OPTIONS], "SAMEORIGIN");
    }

    #[test]
    fn the_template_has_room_for_a_typical_response() {
        let map = headers().response_headers();
        assert!(map.len() >= 4);
        assert!(map.capacity() >= RESPONSE_HEADERS);
    }
}
