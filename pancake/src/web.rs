//! Small pieces every pancake page module uses: a 303 redirect and the
//! clock in Unix milliseconds.

use hearth::axum::http::{HeaderValue, StatusCode, header};
use hearth::axum::response::{IntoResponse, Response};

/// `303 See Other` to `to`, the answer to a form that worked.
pub fn see_other(to: &str) -> Response {
    let mut res = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    res
}

/// Unix milliseconds of `t`.
pub fn ms(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    ms(std::time::SystemTime::now())
}
