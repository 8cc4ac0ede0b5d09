//! hyper answers requests it cannot parse (a bad request line or header, a URI or a head too long)
//! on its own, with an empty body and no hook to change it. Clients expect the error JSON on every
//! answer, so the connection's socket is wrapped: a write that is exactly such an answer's head is
//! replaced by the same head with the error JSON as its body.
//!
//! hyper's answer is told apart by having no Content-Type: the service puts one on every response
//! it makes. It is written in one piece, as the only write of the exchange (hyper gives up on the
//! connection after it), because the connection is served with `writev(false)`, which makes hyper
//! copy each message into one buffer and write it with `poll_write`.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::types::ApiError;

/// The statuses of hyper's own answers (`on_error` in hyper's `proto/h1/role.rs`), with the
/// message clients get for each.
fn message_for(status: StatusCode) -> Option<&'static str> {
    match status {
        StatusCode::BAD_REQUEST => Some("malformed HTTP request"),
        StatusCode::URI_TOO_LONG => Some("request URI too long"),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => Some("request header fields too large"),
        _ => None,
    }
}

/// `written` with the error JSON as its body, when it is one of hyper's own empty error answers.
fn with_error_json(written: &[u8]) -> Option<Vec<u8>> {
    let head = written.strip_suffix(b"\r\n\r\n")?;
    let head = std::str::from_utf8(head).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let code = status_line.strip_prefix("HTTP/1.1 ")?.get(..3)?;
    let status = StatusCode::from_bytes(code.as_bytes()).ok()?;
    let message = message_for(status)?;
    let headers: Vec<&str> = lines.collect();
    let named = |line: &str, name: &str| line.get(..name.len()).is_some_and(|n| n.eq_ignore_ascii_case(name));
    if headers.iter().any(|line| named(line, "content-type:")) || !headers.contains(&"content-length: 0") {
        return None;
    }
    let mut body = serde_json::to_vec(&ApiError { code: status.as_u16(), message: message.into() }).ok()?;
    body.push(b'\n');
    let mut reply = format!("{status_line}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n", body.len());
    for line in headers.iter().filter(|line| !named(line, "content-length:")) {
        reply.push_str(line);
        reply.push_str("\r\n");
    }
    reply.push_str("\r\n");
    let mut reply = reply.into_bytes();
    reply.append(&mut body);
    Some(reply)
}

/// A connection's socket, with hyper's empty error answers given the error JSON.
pub(crate) struct ErrorJsonIo<S> {
    inner: S,
    /// The rest of a replaced answer, written before anything else.
    pending: Bytes,
}

impl<S> ErrorJsonIo<S> {
    pub(crate) fn new(inner: S) -> Self {
        ErrorJsonIo { inner, pending: Bytes::new() }
    }
}

impl<S: AsyncWrite + Unpin> ErrorJsonIo<S> {
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending.is_empty() {
            let written = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pending.advance(written);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ErrorJsonIo<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ErrorJsonIo<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        ready!(self.poll_pending(cx))?;
        if let Some(reply) = with_error_json(buf) {
            // Taken whole; written out by this call or the next write, flush or shutdown.
            self.pending = reply.into();
            let _ = self.poll_pending(cx)?;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATE: &str = "date: Sun, 06 Dec 2026 15:51:16 GMT";

    #[test]
    fn hyper_error_answers_get_the_error_json() {
        for (code, message) in [
            ("400 Bad Request", "malformed HTTP request"),
            ("414 URI Too Long", "request URI too long"),
            ("431 Request Header Fields Too Large", "request header fields too large"),
        ] {
            let written = format!("HTTP/1.1 {code}\r\ncontent-length: 0\r\n{DATE}\r\n\r\n");
            let reply = String::from_utf8(with_error_json(written.as_bytes()).unwrap()).unwrap();
            let body = format!("{{\"code\":{},\"message\":\"{message}\"}}\n", &code[..3]);
            let expected = format!(
                "HTTP/1.1 {code}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{DATE}\r\n\r\n{body}",
                body.len()
            );
            assert_eq!(reply, expected);
        }
    }

    #[test]
    fn other_writes_pass_unchanged() {
        let ours = format!(
            "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 0\r\n{DATE}\r\n\r\n"
        );
        let cases = [
            ours.as_str(),
            "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            "HTTP/1.1 400 Bad Request\r\ncontent-length: 12\r\n\r\n",
            "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\nbody",
            "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n",
            "{\"code\":400}\n",
            "",
        ];
        for written in cases {
            assert_eq!(with_error_json(written.as_bytes()), None, "{written:?}");
        }
    }

    #[tokio::test]
    async fn a_replaced_answer_is_written_whole() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (client, server) = tokio::io::duplex(16);
        let mut io = ErrorJsonIo::new(server);
        let head = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n";
        let reading = tokio::spawn(async move {
            let mut client = client;
            let mut answer = String::new();
            client.read_to_string(&mut answer).await.unwrap();
            answer
        });
        assert_eq!(io.write(head).await.unwrap(), head.len());
        io.shutdown().await.unwrap();
        drop(io);
        let answer = reading.await.unwrap();
        assert!(
            answer.ends_with("\r\n\r\n{\"code\":431,\"message\":\"request header fields too large\"}\n"),
            "{answer}"
        );
    }
}
