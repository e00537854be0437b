//! Static files compiled into the binary, served under `/static/`.
//!
//! Each asset's content type, strong validator and headers are computed once
//! at start-up; responses carry an ETag (the pipeline answers 304 on
//! `If-None-Match`) and `Cache-Control: public, max-age=…`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::error::Error;
use crate::module::Asset;
use crate::state::AppState;

struct Prepared {
    bytes: &'static [u8],
    content_type: HeaderValue,
    etag: HeaderValue,
}

pub(crate) fn router(assets: &[Asset], max_age: Duration) -> Router<AppState> {
    let table: HashMap<&'static str, Prepared> = assets
        .iter()
        .map(|a| {
            let mime = mime_guess::from_path(a.path).first_or_octet_stream();
            let content_type = HeaderValue::from_str(mime.essence_str())
                .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"));
            let etag = super::front::weak_etag(a.bytes);
            (
                a.path.trim_start_matches('/'),
                Prepared {
                    bytes: a.bytes,
                    content_type,
                    etag,
                },
            )
        })
        .collect();
    let table = Arc::new(table);
    let cache = HeaderValue::from_str(&format!("public, max-age={}", max_age.as_secs()))
        .unwrap_or_else(|_| HeaderValue::from_static("no-cache"));
    Router::new().route(
        "/static/{*path}",
        get(move |Path(path): Path<String>| {
            let table = table.clone();
            let cache = cache.clone();
            async move { serve(&table, &path, cache) }
        }),
    )
}

fn serve(table: &HashMap<&'static str, Prepared>, path: &str, cache: HeaderValue) -> Response {
    let Some(asset) = table.get(path) else {
        return Error::not_found("no such static file").into_response();
    };
    let mut res = (StatusCode::OK, Body::from(asset.bytes)).into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, asset.content_type.clone());
    h.insert(header::ETAG, asset.etag.clone());
    h.insert(header::CACHE_CONTROL, cache);
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    res
}
