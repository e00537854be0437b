//! JSON in and out, with errors that say where the input went wrong.
//!
//! As an extractor, [`Json`] requires `Content-Type: application/json` (or
//! `+json`) and answers 415 otherwise, 413 over the body limit, 400 with the
//! line and column for malformed JSON, and 422 naming the field for JSON of
//! the wrong shape. As a response it serializes with `application/json` and a
//! weak ETag of the body.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Error;

/// A JSON request body or response.
///
/// A response gets `Content-Type: application/json`, a weak `ETag` and a
/// `Content-Length`. Code that swaps the body of such a response afterwards
/// must update or remove the length, as with any response that carries one.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Error> {
        if !is_json_request(&req) {
            return Err(Error::unsupported_media_type("application/json"));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                Error::new(
                    e.status(),
                    "payload_too_large",
                    "the request body is larger than the limit",
                )
            } else {
                Error::bad_request("unreadable_body", "the request body could not be read")
            }
        })?;
        parse(&bytes).map(Json)
    }
}

fn is_json_request(req: &Request) -> bool {
    let Some(ct) = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let media = ct.split(';').next().unwrap_or("").trim();
    media.eq_ignore_ascii_case("application/json")
        || (media.starts_with("application/") && media.ends_with("+json"))
}

/// Parses JSON into `T`, mapping serde's errors to 400 (syntax) or 422 (shape).
pub(crate) fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().to_string();
        from_serde(err.into_inner(), &path)
    })?;
    // Trailing characters after the value are malformed JSON too.
    de.end().map_err(|e| from_serde(e, ""))?;
    Ok(value)
}

fn from_serde(inner: serde_json::Error, path: &str) -> Error {
    let (line, column) = (inner.line(), inner.column());
    match inner.classify() {
        serde_json::error::Category::Data => {
            let msg = strip_position(&inner.to_string());
            let root = path == "." || path.is_empty();
            // serde reports a missing field at its parent; name the field itself.
            if let Some(name) = msg
                .strip_prefix("missing field `")
                .and_then(|rest| rest.strip_suffix('`'))
            {
                let field = if root {
                    name.to_owned()
                } else {
                    format!("{path}.{name}")
                };
                return Error::validation(field, "this field is required");
            }
            if root {
                Error::new(
                    axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_body",
                    format!("the JSON body does not match what this route expects: {msg}"),
                )
            } else {
                Error::validation(path.to_owned(), msg)
            }
        }
        serde_json::error::Category::Eof => Error::bad_request(
            "invalid_json",
            format!("the JSON body ends early at line {line} column {column}"),
        ),
        _ => Error::bad_request(
            "invalid_json",
            format!(
                "the JSON body is malformed at line {line} column {column}: {}",
                strip_position(&inner.to_string())
            ),
        ),
    }
}

/// serde_json appends " at line L column C"; the message says it its own way.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        // Most bodies fit in a first guess; growing from empty reallocates several times.
        let mut buf = Vec::with_capacity(128);
        match serde_json::to_writer(&mut buf, &self.0) {
            Ok(()) => {
                // The ETag is computed here, where the bytes are at hand, so the
                // pipeline need not buffer the body again.
                let tag = super::front::WeakEtag::of(&buf);
                let (body, etag, length) = body_and_headers(buf, tag.as_bytes());
                // Built directly: `Vec<u8>::into_response` would first set a
                // content type only to have it replaced.
                let mut res = Response::new(axum::body::Body::from(body));
                let h = res.headers_mut();
                match super::front::json_response_headers() {
                    // Holds the content type already, and an entry for each
                    // header set here, so these replace rather than add.
                    Some(map) => *h = map,
                    None => {
                        h.reserve(super::security::RESPONSE_HEADERS);
                        h.insert(
                            header::CONTENT_TYPE,
                            HeaderValue::from_static("application/json"),
                        );
                    }
                }
                h.insert(header::ETAG, etag);
                // Set here, where the length is known, so that axum does not
                // make a value of its own for it.
                h.insert(header::CONTENT_LENGTH, length);
                res
            }
            Err(e) => Error::internal(e).into_response(),
        }
    }
}

/// Splits `buf` into the body and the values of its ETag (`tag`) and
/// Content-Length headers, all three in the body's one allocation: the
/// values are written after the body, and share the block by reference count
/// instead of each taking a block of its own.
fn body_and_headers(mut buf: Vec<u8>, tag: &[u8]) -> (Bytes, HeaderValue, HeaderValue) {
    let body_len = buf.len();
    let mut digits = itoa::Buffer::new();
    let length = digits.format(body_len).as_bytes();
    // One byte more than the values keeps the length below the capacity.
    // From such a `Vec`, `Bytes` makes its shared block at once and each
    // split only counts a reference; from a full one it would hand over a
    // boxed slice, and the first split would then allocate.
    buf.reserve(tag.len() + length.len() + 1);
    buf.extend_from_slice(tag);
    buf.extend_from_slice(length);
    let mut body = Bytes::from(buf);
    let mut tag = body.split_off(body_len);
    let length = tag.split_off(tag.len() - length.len());
    // Hex digits, a dash, quotes and a slash; decimal digits: never refused.
    let etag =
        HeaderValue::from_maybe_shared(tag).unwrap_or_else(|_| super::front::weak_etag(&body));
    let length =
        HeaderValue::from_maybe_shared(length).unwrap_or_else(|_| HeaderValue::from(body_len));
    (body, etag, length)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Signup {
        email: String,
        age: u8,
        tags: Vec<String>,
    }

    #[test]
    fn the_etag_and_length_share_the_body_block_and_match_the_body() {
        for body in [&b""[..], b"{}", &[b'x'; 127], &[b'y'; 128], &[b'z'; 4000]] {
            let mut buf = Vec::with_capacity(128);
            buf.extend_from_slice(body);
            let tag = super::super::front::WeakEtag::of(&buf);
            let (out, etag, length) = body_and_headers(buf, tag.as_bytes());
            assert_eq!(&out[..], body);
            assert_eq!(etag, super::super::front::weak_etag(body));
            assert_eq!(length, body.len().to_string().as_str());
            // The values lie right after the body, in the same block.
            let end = out.as_ptr().wrapping_add(out.len());
            assert_eq!(etag.as_bytes().as_ptr(), end);
            assert_eq!(length.as_bytes().as_ptr(), end.wrapping_add(etag.len()));
        }
    }

    #[test]
    fn errors_name_the_place_that_failed() {
        let cases: &[(&str, u16, &str, Option<&str>)] = &[
            ("{", 400, "invalid_json", None),
            ("{\"email\": }", 400, "invalid_json", None),
            (
                r#"{"email":"a","age":1,"tags":[]} trailing"#,
                400,
                "invalid_json",
                None,
            ),
            ("[]", 422, "invalid_body", None),
            (
                r#"{"email":"a@b","age":"x","tags":[]}"#,
                422,
                "invalid_field",
                Some("age"),
            ),
            (
                r#"{"email":"a@b","age":300,"tags":[]}"#,
                422,
                "invalid_field",
                Some("age"),
            ),
            (
                r#"{"email":"a@b","age":3,"tags":[1]}"#,
                422,
                "invalid_field",
                Some("tags[0]"),
            ),
            (
                r#"{"age":3,"tags":[]}"#,
                422,
                "invalid_field",
                Some("email"),
            ),
        ];
        for (body, status, code, field) in cases {
            let err = parse::<Signup>(body.as_bytes()).unwrap_err();
            assert_eq!(err.status().as_u16(), *status, "{body}: {err}");
            assert_eq!(err.code(), *code, "{body}: {err}");
            assert_eq!(err.body().field.as_deref(), *field, "{body}: {err}");
        }
        assert!(parse::<Signup>(br#"{"email":"a@b","age":3,"tags":["x"]}"#).is_ok());
    }
}
