//! The accept loop: HTTP/1.1 and HTTP/2 over TCP, or over TLS with rustls.
//!
//! Each connection runs under a header read deadline (`head_deadline`), so a
//! client that trickles its headers, or leaves a kept-alive connection idle,
//! cannot hold a connection forever. The number of open connections is
//! bounded; at the bound the loop stops accepting until one closes. So is
//! the number from one client address (`http.max_connections_per_ip`, an
//! IPv6 client by its /64): one more is closed as soon as it is accepted,
//! so that a single client cannot take every connection. Addresses in
//! `auth.trusted_proxies` are exempt, since a proxy carries many clients. On
//! shutdown the listener is closed, connections are told to finish their
//! in-flight requests, and the loop waits for them at most
//! `http.shutdown_timeout`.

use std::cell::Cell;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower::Service as _;

use super::head_deadline::{Clock, Tracked, TrackedBody, Watched};
use crate::config::HttpConfig;

/// Loads a PEM certificate chain and private key into a TLS acceptor (ring
/// provider, TLS 1.2 and 1.3, ALPN h2 and http/1.1).
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("cannot read certificate {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("invalid certificate {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificate found in {}", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("cannot read private key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("certificate and key do not work together: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The pipeline as hyper calls it for one connection.
///
/// hyper calls a service through `&self`, a tower service is called through
/// `&mut self`; hyper-util's adapter bridges the two by cloning the whole
/// pipeline for every request. A connection's requests are started one at a
/// time from the connection's own task, so here the pipeline is taken out of a
/// cell for the call and put back, with no clone. (The pipeline is always
/// ready: its innermost service is a router.)
struct ConnService {
    pipeline: Cell<Option<super::Pipeline>>,
    /// Used if the cell is ever found empty, which would need a call from
    /// within a call; hyper makes none.
    spare: super::Pipeline,
    peer: SocketAddr,
    /// The connection's header read deadline, told of each request.
    clock: Arc<Clock>,
}

impl ConnService {
    fn new(pipeline: super::Pipeline, peer: SocketAddr, clock: Arc<Clock>) -> Self {
        Self {
            pipeline: Cell::new(Some(pipeline.clone())),
            spare: pipeline,
            peer,
            clock,
        }
    }
}

impl hyper::service::Service<hyper::Request<Incoming>> for ConnService {
    type Response = axum::response::Response<TrackedBody>;
    type Error = Infallible;
    type Future = Tracked<<super::Pipeline as tower::Service<axum::extract::Request>>::Future>;

    fn call(&self, req: hyper::Request<Incoming>) -> Self::Future {
        let open = self.clock.head_arrived();
        let req = req.map(Body::new);
        // Through a task-local rather than a request extension (see `front`).
        super::front::set_next_peer(self.peer);
        let fut = match self.pipeline.take() {
            Some(mut pipeline) => {
                let fut = pipeline.call(req);
                self.pipeline.set(Some(pipeline));
                fut
            }
            None => self.spare.clone().call(req),
        };
        Tracked::new(fut, open)
    }
}

/// Serves one connection's requests with `router`, under the header read
/// deadline (whose wait for the first head starts now) and the server's
/// graceful shutdown. `None` when a late head closed it.
fn serve_connection<I>(
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    router: super::Pipeline,
    peer: SocketAddr,
    watcher: Watcher,
    header_timeout: Duration,
) -> impl Future<Output = Option<Result<(), Box<dyn std::error::Error + Send + Sync>>>> + use<I>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let clock = Clock::new(header_timeout);
    let service = ConnService::new(router, peer, clock.clone());
    let conn = builder
        .serve_connection_with_upgrades(TokioIo::new(super::refusals::Refusals::new(io)), service)
        .into_owned();
    Watched::new(watcher.watch(conn), clock)
}

/// Serves `router` on `listener` until `shutdown` completes, then drains.
/// Connections from `proxies` are not held to the per-address cap.
pub async fn serve(
    listener: TcpListener,
    router: super::Pipeline,
    cfg: &HttpConfig,
    proxies: &[super::client_ip::IpNet],
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        // Kept once per connection by `head_deadline` instead: hyper's own
        // arms a timer for every head (see there).
        .header_read_timeout(None)
        // Head and body in one buffer and one `write`: for the small
        // responses most requests get, and under TLS, that is cheaper than a
        // vectored write of two (measured in BENCHMARKS.md); a large body
        // costs a copy into the buffer.
        .writev(false);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .max_concurrent_streams(256);
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let connections = Arc::new(Semaphore::new(cfg.max_connections));
    let handshake_timeout = cfg.tls_handshake_timeout.get();
    let header_timeout = cfg.header_read_timeout.get();
    let per_address = Arc::new(super::client_ip::PerClient::default());
    let mut refused_logged: Option<std::time::Instant> = None;
    tokio::pin!(shutdown);

    loop {
        let permit = tokio::select! {
            p = connections.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(conn) => conn,
                Err(e) => {
                    // Usually EMFILE: back off instead of spinning, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let place = if cfg.max_connections_per_ip == 0
            || proxies.iter().any(|p| p.contains(peer.ip()))
        {
            None
        } else {
            let key = super::client_ip::limit_key(peer.ip());
            match per_address.enter(&key, cfg.max_connections_per_ip) {
                Some(place) => Some(place),
                None => {
                    // Closed unanswered: answering would cost the very work
                    // the cap is there to bound. Logged at most once a minute.
                    if refused_logged.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                        refused_logged = Some(std::time::Instant::now());
                        tracing::warn!(%peer, max = cfg.max_connections_per_ip, "a client address is over its connection cap; closing its new connections");
                    }
                    drop(stream);
                    continue;
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            let result = match tls {
                None => serve_connection(&builder, stream, router, peer, watcher, header_timeout)
                    .await
                    .unwrap_or(Ok(())),
                // Boxed: the TLS state is large, and every plain connection's
                // task would otherwise be sized for it too.
                Some(acceptor) => Box::pin(async move {
                    let stream = match tokio::time::timeout(
                        handshake_timeout,
                        acceptor.accept(stream),
                    )
                    .await
                    {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return None;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return None;
                        }
                    };
                    // The wait for the first head starts after the handshake.
                    serve_connection(&builder, stream, router, peer, watcher, header_timeout).await
                })
                .await
                .unwrap_or(Ok(())),
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(place);
            drop(permit);
        });
    }

    drop(listener);
    let open = graceful.count();
    tracing::info!(
        open_connections = open,
        "shutting down: draining in-flight requests"
    );
    let limit = cfg.shutdown_timeout.get();
    if tokio::time::timeout(limit, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            timeout_ms = limit.as_millis() as u64,
            "shutdown timeout reached; closing remaining connections"
        );
    } else {
        tracing::info!("all connections drained");
    }
}
