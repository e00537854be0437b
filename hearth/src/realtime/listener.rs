//! The one PostgreSQL LISTEN connection of a process.
//!
//! Job wake-ups and pub/sub both ride on it: each registers a channel and a
//! callback. The connection reconnects by itself after a loss; because
//! notifications sent while it was down are gone, every callback is then
//! called with `None`, so that its owner can catch up from the database.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Called with a notification's payload, or `None` after a reconnect.
pub(crate) type Route = Arc<dyn Fn(Option<&str>) + Send + Sync>;

/// Channels and their callbacks.
#[derive(Default, Clone)]
pub(crate) struct Routes(HashMap<&'static str, Route>);

impl Routes {
    pub(crate) fn add(&mut self, channel: &'static str, route: Route) {
        self.0.insert(channel, route);
    }

    fn all_lost(&self) {
        for r in self.0.values() {
            r(None);
        }
    }
}

/// Listens on every routed channel until `stop` fires.
pub(crate) fn spawn(pool: PgPool, routes: Routes, stop: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        'connect: loop {
            let connected = tokio::select! {
                r = connect(&pool, &routes) => r,
                () = stop.cancelled() => return,
            };
            let mut listener = match connected {
                Ok(l) => {
                    backoff = Duration::from_millis(100);
                    // Whatever was sent before this connection listened is unknown.
                    routes.all_lost();
                    l
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot LISTEN on PostgreSQL");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = stop.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue 'connect;
                }
            };
            loop {
                let next = tokio::select! {
                    n = listener.try_recv() => n,
                    () = stop.cancelled() => return,
                };
                match next {
                    Ok(Some(n)) => {
                        if let Some(route) = routes.0.get(n.channel()) {
                            route(Some(n.payload()));
                        }
                    }
                    Ok(None) => {
                        tracing::warn!("the LISTEN connection was lost; reconnecting");
                        continue 'connect;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "the LISTEN connection failed; reconnecting");
                        continue 'connect;
                    }
                }
            }
        }
    })
}

async fn connect(pool: &PgPool, routes: &Routes) -> Result<PgListener, sqlx::Error> {
    let mut l = tokio::time::timeout(Duration::from_secs(10), PgListener::connect_with(pool))
        .await
        .map_err(|_| sqlx::Error::PoolTimedOut)??;
    let channels: Vec<&str> = routes.0.keys().copied().collect();
    l.listen_all(channels).await?;
    Ok(l)
}
