//! The answers hyper gives by itself, in hearth's error shape.
//!
//! A request whose head cannot be parsed (a malformed line, a control byte
//! in a header, a bad or repeated `Content-Length`) or is larger than the
//! read buffer never becomes a request: hyper answers it before anything of
//! hearth runs, with a bare `400` or `431` and an empty body, and closes the
//! connection. It offers no hook to change that answer, so the connection's
//! writer recognizes it and writes the same status with the JSON error body
//! every other error has.
//!
//! hyper's own answer is easy to tell from the pipeline's: its header block
//! is exactly `connection: close`, `content-length: 0` and `date`, while
//! every response of the pipeline carries `x-request-id` and hearth's other
//! headers first. The check costs a comparison of the first bytes of each
//! write.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What hyper writes after the status line of its own answers.
const HYPER_OWN: &[u8] = b"connection: close\r\ncontent-length: 0\r\n";

pin_project_lite::pin_project! {
    /// A connection whose writes go through [`rewrite`].
    pub(crate) struct Refusals<I> {
        #[pin]
        io: I,
        // The rewritten answer still to be written, and how much of it is.
        pending: Option<(Vec<u8>, usize)>,
    }
}

impl<I> Refusals<I> {
    pub(crate) fn new(io: I) -> Self {
        Self { io, pending: None }
    }
}

/// hearth's version of hyper's own answer in `buf`, if `buf` is one.
fn rewrite(buf: &[u8]) -> Option<Vec<u8>> {
    if !buf.starts_with(b"HTTP/1.1 4") {
        return None;
    }
    let line_end = buf.iter().take(64).position(|&b| b == b'\n')? + 1;
    if !buf[line_end..].starts_with(HYPER_OWN) {
        return None;
    }
    let status_line = std::str::from_utf8(&buf[..line_end]).ok()?;
    let (code, message) = match status_line.get(9..12)? {
        "431" => (
            "headers_too_large",
            "the request headers are larger than the server accepts",
        ),
        "414" => (
            "uri_too_long",
            "the request URL is longer than the server accepts",
        ),
        _ => (
            "bad_request",
            "the request could not be read: a malformed request line or header, or a bad Content-Length",
        ),
    };
    let body = format!(r#"{{"error":{{"code":"{code}","message":"{message}"}}}}"#);
    let mut out = Vec::with_capacity(256 + body.len());
    out.extend_from_slice(status_line.as_bytes());
    out.extend_from_slice(
        format!(
            "connection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\ncache-control: no-store\r\nx-content-type-options: nosniff\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    out.extend_from_slice(body.as_bytes());
    Some(out)
}

impl<I: AsyncRead> AsyncRead for Refusals<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.project().io.poll_read(cx, buf)
    }
}

impl<I: AsyncWrite> AsyncWrite for Refusals<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut this = self.project();
        if this.pending.is_none() {
            match rewrite(buf) {
                None => return this.io.poll_write(cx, buf),
                Some(answer) => *this.pending = Some((answer, 0)),
            }
        }
        // Writing our answer in place of `buf`: report `buf` as written only
        // once all of it is (hyper calls again with the same bytes meanwhile).
        while let Some((answer, done)) = this.pending.as_mut() {
            if *done == answer.len() {
                *this.pending = None;
                return Poll::Ready(Ok(buf.len()));
            }
            let n = ready!(this.io.as_mut().poll_write(cx, &answer[*done..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *done += n;
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_own_answers_are_rewritten() {
        let hyper_400 = b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\ndate: Fri, 04 Dec 2026 17:14:50 GMT\r\n\r\n";
        let out = String::from_utf8(rewrite(hyper_400).unwrap()).unwrap();
        assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{out}");
        assert!(out.contains("content-type: application/json"), "{out}");
        assert!(out.ends_with(r#""code":"bad_request","message":"the request could not be read: a malformed request line or header, or a bad Content-Length"}}"#), "{out}");
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{out}"
        );
        let hyper_431 = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        assert!(
            String::from_utf8(rewrite(hyper_431).unwrap())
                .unwrap()
                .contains("headers_too_large")
        );
        // The pipeline's answers, success or error, pass untouched.
        for ours in [
            &b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nok"[..],
            b"HTTP/1.1 400 Bad Request\r\nx-request-id: abc\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
            b"HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-length: 73\r\n\r\n",
            b"tick\n",
        ] {
            assert!(rewrite(ours).is_none());
        }
    }
}
