//! Opens many idle Server-Sent Events streams and holds them, for measuring
//! the server's memory per stream.
//!
//! ```text
//! sse_clients ADDR PATH COUNT [SOURCES] [HOLD_SECONDS] [http1|h2]
//! ```
//!
//! With `http1` (the default) each stream is a connection of its own, and
//! connections are spread over SOURCES loopback addresses (127.0.0.2, …) so
//! that COUNT can exceed one address's ephemeral ports. With `h2` the streams
//! are multiplexed over HTTP/2 connections without TLS (prior knowledge), at
//! most 200 per connection (the server allows 256), as a browser on HTTPS
//! does. Prints how many streams answered `200 OK`, then holds them for
//! HOLD_SECONDS.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};

async fn open(addr: SocketAddr, source: Ipv4Addr, path: &str) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source, 0)))?;
    let mut stream = socket.connect(addr).await?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
    stream.write_all(req.as_bytes()).await?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 512];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::Error::other("closed before the headers"));
        }
        head.extend_from_slice(&buf[..n]);
    }
    if !head.starts_with(b"HTTP/1.1 200") {
        return Err(std::io::Error::other(
            String::from_utf8_lossy(&head).into_owned(),
        ));
    }
    Ok(stream)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: sse_clients ADDR PATH COUNT [SOURCES] [HOLD_SECONDS]");
        std::process::exit(2);
    }
    let addr: SocketAddr = match args[1].parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ADDR `{}` is not a socket address: {e}", args[1]);
            std::process::exit(2);
        }
    };
    let path = args[2].clone();
    let count: usize = args[3].parse().unwrap_or(1000);
    let sources: u8 = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(4).max(1);
    let hold: u64 = args.get(5).and_then(|s| s.parse().ok()).unwrap_or(30);
    if args.get(6).is_some_and(|p| p == "h2") {
        h2(addr, &path, count, hold).await;
        return;
    }
    let mut streams = Vec::with_capacity(count);
    let mut failed = 0usize;
    let mut first_error = None;
    for i in 0..count {
        let source = Ipv4Addr::new(127, 0, 0, 2 + (i % usize::from(sources)) as u8);
        match open(addr, source, &path).await {
            Ok(s) => streams.push(s),
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e.to_string());
            }
        }
    }
    println!(
        "{{\"open\":{},\"failed\":{},\"first_error\":{:?}}}",
        streams.len(),
        failed,
        first_error.unwrap_or_default()
    );
    tokio::time::sleep(Duration::from_secs(hold)).await;
    drop(streams);
}

/// Streams per HTTP/2 connection; the server's limit is 256.
const PER_CONNECTION: usize = 200;

async fn h2(addr: SocketAddr, path: &str, count: usize, hold: u64) {
    // reqwest is built without a crypto provider (none is used over h2c).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let url = format!("http://{addr}{path}");
    let mut held = Vec::with_capacity(count);
    // Each client is a connection of its own; kept for as long as the streams.
    let mut clients = Vec::new();
    let mut failed = 0usize;
    let mut first_error = None;
    for i in 0..count {
        if i % PER_CONNECTION == 0 {
            match reqwest::Client::builder().http2_prior_knowledge().build() {
                Ok(c) => clients.push(c),
                Err(e) => {
                    eprintln!("cannot build a client: {e}");
                    std::process::exit(1);
                }
            }
        }
        let Some(client) = clients.last() else { break };
        // The server answers an SSE request's head at once, so one at a time is quick.
        match client
            .get(&url)
            .header("accept", "text/event-stream")
            .send()
            .await
        {
            Ok(res) if res.status() == 200 => held.push(res),
            Ok(res) => {
                failed += 1;
                first_error.get_or_insert(format!("status {}", res.status()));
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e.to_string());
            }
        }
    }
    println!(
        "{{\"open\":{},\"failed\":{},\"connections\":{},\"first_error\":{:?}}}",
        held.len(),
        failed,
        clients.len(),
        first_error.unwrap_or_default()
    );
    tokio::time::sleep(Duration::from_secs(hold)).await;
    drop(held);
    drop(clients);
}
