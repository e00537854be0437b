//! A bare axum server with one `GET /api/hello` route and no middleware: the
//! baseline that hearth's full pipeline is measured against. It returns the
//! same JSON body as pancake's `/api/hello`.

use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

#[derive(Serialize)]
struct Hello {
    message: &'static str,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8081".to_owned());
    let app = Router::new().route(
        "/api/hello",
        get(|| async {
            Json(Hello {
                message: "hello, world",
            })
        }),
    );
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("bare axum listening on {addr}");
    // Exit cleanly on Ctrl-C/SIGINT, so profilers get to write their output.
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}
