//! Security headers on every response: a Content-Security-Policy that
//! allows no inline script, `X-Content-Type-Options: nosniff`, a
//! `Referrer-Policy`, no framing by other sites, and HSTS in production.
//!
//! A handler that sets one of these headers itself keeps its own value (a
//! page that must embed something can widen its CSP).

use axum::http::{HeaderMap, HeaderName, HeaderValue, header};

use crate::config::Config;

/// The default CSP: everything from this origin only, no inline script, no
/// plugins, no framing, forms post only here.
pub const DEFAULT_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
img-src 'self' data:; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'";

/// HSTS in production: two years, subdomains included.
const HSTS: &str = "max-age=63072000; includeSubDomains";

/// The headers, built once from the config.
#[derive(Debug, Clone, Default)]
pub(crate) struct SecurityHeaders {
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl SecurityHeaders {
    /// The headers `config` asks for (none with `http.security_headers = false`).
    pub(crate) fn from_config(config: &Config) -> Self {
        let http = &config.http;
        if !http.security_headers {
            return Self::default();
        }
        let mut headers = vec![
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("strict-origin-when-cross-origin"),
            ),
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        ];
        // Validated at config load; a value that still fails is left out
        // rather than sent broken.
        if !http.content_security_policy.is_empty()
            && let Ok(v) = HeaderValue::from_str(&http.content_security_policy)
        {
            headers.push((header::CONTENT_SECURITY_POLICY, v));
        }
        if config.is_prod() {
            headers.push((
                header::STRICT_TRANSPORT_SECURITY,
                HeaderValue::from_static(HSTS),
            ));
        }
        Self { headers }
    }

    /// Adds each header the response does not have yet.
    pub(crate) fn apply(&self, to: &mut HeaderMap) {
        for (name, value) in &self.headers {
            to.entry(name).or_insert_with(|| value.clone());
        }
    }
}
