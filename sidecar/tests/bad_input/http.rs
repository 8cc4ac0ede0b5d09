//! Malformed HTTP: bad paths, methods, headers and framing; slow and abandoned connections.

use std::time::Duration;

use sidecar::api::RestApiConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

use super::*;

/// Long enough for any answer on a loaded machine; an answer that takes longer is a hang.
pub(crate) const ANSWER_WITHIN: Duration = Duration::from_secs(30);

/// Reads one response (its head and a Content-Length body) without waiting for the connection to
/// close: the server may still be reading the request.
pub(crate) async fn read_response(stream: &mut (impl AsyncRead + Unpin)) -> Raw {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(split) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = parse(&bytes[..split + 4]);
            let length: usize = head.header("content-length").map_or(0, |v| v.parse().unwrap());
            if bytes.len() >= split + 4 + length {
                return parse(&bytes[..split + 4 + length]);
            }
        }
        let n = stream.read(&mut chunk).await.expect("the answer arrives");
        assert!(n > 0, "the connection closed before a whole answer: {:?}", String::from_utf8_lossy(&bytes));
        bytes.extend_from_slice(&chunk[..n]);
    }
}

/// `PUT path` with a chunked body of `chunks` chunks of `size` spaces (no Content-Length: the
/// limit must hold on the bytes read); the answer. Writing stops if the server closes first.
pub(crate) async fn put_chunked(addr: SocketAddr, path: &str, chunks: usize, size: usize) -> Raw {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!("PUT {path} HTTP/1.1\r\nHost: {addr}\r\nTransfer-Encoding: chunked\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut chunk = format!("{size:x}\r\n").into_bytes();
    chunk.extend(std::iter::repeat_n(b' ', size));
    chunk.extend_from_slice(b"\r\n");
    for _ in 0..chunks {
        if stream.write_all(&chunk).await.is_err() {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    timeout(ANSWER_WITHIN, read_response(&mut stream)).await.expect("an answer")
}
/// Writes `head` and then all of `body`, and only then reads the answer, as a client that uploads
/// before it looks (Node's fetch) does.
async fn upload_then_read(addr: SocketAddr, head: &str, body: &[u8]) -> Raw {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!("{head}\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n", body.len());
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.expect("the server reads the whole upload");
    timeout(ANSWER_WITHIN, read_response(&mut stream)).await.expect("an answer")
}

#[tokio::test]
async fn malformed_json_bodies_are_400() {
    let s = server(Default::default()).await;
    pin_baseline(s.addr).await;
    for body in [&b"not json"[..], b"[]", b"{\"peer_id\": 7}", b"{\"peer_id\": \"\xff\"}"] {
        let head = format!("POST /peers HTTP/1.1\r\nContent-Length: {}", body.len());
        raw(s.addr, &head, body).await.assert_error(400, "error decoding request body");
        assert_unharmed(s.addr).await;
    }
}

/// The limit holds on the bytes read, not only on Content-Length: a chunked upload is answered
/// 413 once it passes the limit, while the client is still sending.
#[tokio::test]
async fn chunked_bodies_are_cut_off_at_the_limit() {
    const LIMIT: u64 = 1 << 20;
    const CHUNK: usize = 64 * 1024;
    const MOST: u64 = 128 << 20;
    let s = server(RestApiConfig { max_body_size: LIMIT, ..Default::default() }).await;
    pin_baseline(s.addr).await;
    // A small send buffer keeps what is "sent" close to what the server has been offered.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_send_buffer_size(CHUNK as u32).unwrap();
    let mut stream = socket.connect(s.addr).await.unwrap();
    let head = format!("POST /peers HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\n\r\n", s.addr);
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut chunk = format!("{CHUNK:x}\r\n").into_bytes();
    chunk.extend(std::iter::repeat_n(b'x', CHUNK));
    chunk.extend_from_slice(b"\r\n");
    // Between chunks, look for the answer: the bytes sent before it are what the server read.
    let mut sent = 0;
    let mut answer = vec![0u8; 4096];
    let received = loop {
        match stream.try_read(&mut answer) {
            Ok(n) => break n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("reading the answer: {e}"),
        }
        assert!(sent < MOST, "no answer after {sent} bytes");
        if stream.write_all(&chunk).await.is_err() {
            break 0;
        }
        sent += CHUNK as u64;
    };
    let mut rest = (&answer[..received]).chain(stream);
    let r = timeout(ANSWER_WITHIN, read_response(&mut rest)).await.expect("an answer");
    r.assert_error(413, "request body exceeds 1048576 bytes");
    assert!(sent < 4 * LIMIT, "{sent} bytes were sent before the 413");
    assert_unharmed(s.addr).await;
}

/// A client that uploads everything before reading gets the early answer, not a broken pipe.
#[tokio::test]
async fn early_answers_reach_a_client_that_uploads_first() {
    let s = server(with_auth()).await;
    let upload = vec![b'x'; 4 << 20];
    let head =
        format!("POST /add HTTP/1.1\r\n{}\r\nContent-Type: multipart/form-data; boundary=b", basic("admin", "wrong"));
    upload_then_read(s.addr, &head, &upload).await.assert_error(401, "");

    let s = server(RestApiConfig { max_add_body_size: Some(1024), ..Default::default() }).await;
    pin_baseline(s.addr).await;
    let head = "POST /add HTTP/1.1\r\nContent-Type: multipart/form-data; boundary=b";
    upload_then_read(s.addr, head, &upload).await.assert_error(413, "request body exceeds 1024 bytes");
    assert_unharmed(s.addr).await;
}

/// A client that waits for `100 Continue` before uploading gets the early answer instead, and the
/// connection closes without waiting for a body that will not come.
#[tokio::test]
async fn early_answers_to_a_client_waiting_for_continue_come_first() {
    let s = server(with_auth()).await;
    let mut stream = TcpStream::connect(s.addr).await.unwrap();
    let head = format!(
        "POST /add HTTP/1.1\r\nHost: {}\r\n{}\r\nExpect: 100-continue\r\nContent-Length: 4194304\r\n\r\n",
        s.addr,
        basic("admin", "wrong")
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut bytes = Vec::new();
    timeout(ANSWER_WITHIN, stream.read_to_end(&mut bytes)).await.expect("answered and closed").unwrap();
    parse(&bytes).assert_error(401, "");
    let head = format!("GET /id HTTP/1.1\r\n{}", basic("admin", "s3cret"));
    assert_eq!(raw(s.addr, &head, b"").await.status, 200);
}

/// A body cut short (the client closes its side mid-body) is a 400, not a 405 from other routes.
#[tokio::test]
async fn truncated_bodies_are_400() {
    let s = server(Default::default()).await;
    pin_baseline(s.addr).await;
    let mut stream = TcpStream::connect(s.addr).await.unwrap();
    let head = format!("POST /peers HTTP/1.1\r\nHost: {}\r\nContent-Length: 100\r\n\r\n{{\"peer_id\"", s.addr);
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut bytes = Vec::new();
    timeout(ANSWER_WITHIN, stream.read_to_end(&mut bytes)).await.expect("an answer").unwrap();
    parse(&bytes).assert_error(400, "error reading request body");
    assert_unharmed(s.addr).await;
}

#[tokio::test]
async fn bad_pin_paths_are_400() {
    let s = server(Default::default()).await;
    pin_baseline(s.addr).await;
    let paths = [
        "/pins/ipfs/not-a-cid",
        "/pins/ipfs/../../etc/passwd",
        "/pins/ipfs/%2e%2e/etc",
        &format!("/pins/ipfs/{KEPT}/a/../../b"),
        &format!("/pins/ipfs/{KEPT}/./a"),
        "/pins/ipld/not-a-cid/x",
        "/pins/ipns/../x",
    ];
    for path in paths {
        for method in ["POST", "DELETE"] {
            send(s.addr, method, path).await.assert_error(400, "error parsing path: invalid path");
            assert_unharmed(s.addr).await;
        }
    }
}

#[tokio::test]
async fn redirects_stay_on_this_server() {
    let s = server(Default::default()).await;
    for (path, location) in [("//evil.example/", "/evil.example"), ("///evil.example//?a=b", "/evil.example?a=b")] {
        let r = get(s.addr, path).await;
        assert_eq!((r.status, r.header("location")), (307, Some(location)), "{path}");
    }
    assert_unharmed_without_baseline(s.addr).await;
}

async fn assert_unharmed_without_baseline(addr: SocketAddr) {
    assert_eq!(get(addr, "/id").await.status, 200);
}

/// hyper answers requests it cannot parse itself; those answers carry the error JSON too.
#[tokio::test]
async fn unparsable_requests_get_the_error_json() {
    let long_uri = format!("GET /{} HTTP/1.1", "a".repeat(100_000));
    let long_header = format!("GET /id HTTP/1.1\r\nX-Big: {}", "a".repeat(100_000));
    let default_limits = RestApiConfig::default();
    let roomy_head = RestApiConfig { max_header_bytes: 256 << 10, ..Default::default() };
    let cases = [
        (&default_limits, "GET /\x01 HTTP/1.1".to_string(), 400, "malformed HTTP request"),
        (&default_limits, "GET / HTTP/1.1\r\nbad header".to_string(), 400, "malformed HTTP request"),
        (&default_limits, long_header.clone(), 431, "request header fields too large"),
        (&default_limits, long_uri.clone(), 431, "request header fields too large"),
        (&roomy_head, long_uri, 414, "request URI too long"),
    ];
    for (config, head, status, message) in cases {
        let s = server(config.clone()).await;
        pin_baseline(s.addr).await;
        raw(s.addr, &head, b"").await.assert_error(status, message);
        assert_unharmed(s.addr).await;
    }
    // A head under the limit is served, and the limit is the configured one plus Go's 4 KiB.
    let s = server(RestApiConfig { max_header_bytes: 1000, ..Default::default() }).await;
    let head_of = |n| format!("GET /id HTTP/1.1\r\nX-Big: {}", "a".repeat(n));
    assert_eq!(raw(s.addr, &head_of(4000), b"").await.status, 200);
    raw(s.addr, &head_of(5200), b"").await.assert_error(431, "request header fields too large");
}

/// Slow uploads are let go after `read_timeout` with a 408; while they hold every connection slot,
/// a new client waits for one (instead of the peer running out of file descriptors) and is served
/// once they time out.
#[tokio::test]
async fn slow_bodies_time_out_and_connections_are_capped() {
    const READ_TIMEOUT: Duration = Duration::from_secs(1);
    let config = RestApiConfig { max_connections: 4, read_timeout: READ_TIMEOUT, ..Default::default() };
    let s = server(config).await;
    pin_baseline(s.addr).await;
    let mut slow = Vec::new();
    for _ in 0..8 {
        let mut stream = TcpStream::connect(s.addr).await.unwrap();
        let head = format!("POST /peers HTTP/1.1\r\nHost: {}\r\nContent-Length: 100000\r\n\r\n", s.addr);
        stream.write_all(head.as_bytes()).await.unwrap();
        slow.push(stream);
    }
    let started = Instant::now();
    let fresh = timeout(ANSWER_WITHIN, get(s.addr, "/id")).await.expect("served in bounded time");
    assert_eq!(fresh.status, 200);
    let waited = started.elapsed();
    // Eight slow clients over four slots: the fresh one waits for two rounds of timeouts.
    assert!(waited >= READ_TIMEOUT, "the fresh client was served after {waited:?}, beside the slow ones");
    for mut stream in slow {
        let r = timeout(ANSWER_WITHIN, read_response(&mut stream)).await.expect("the slow client is answered");
        r.assert_error(408, "request body not received within 1s");
    }
    assert_unharmed(s.addr).await;
}

/// A keep-alive connection that sends nothing more is closed (after `read_header_timeout`).
#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let s = server(RestApiConfig { read_header_timeout: Duration::from_secs(1), ..Default::default() }).await;
    let mut stream = TcpStream::connect(s.addr).await.unwrap();
    stream.write_all(format!("GET /id HTTP/1.1\r\nHost: {}\r\n\r\n", s.addr).as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut stream).await.status, 200);
    let mut rest = Vec::new();
    timeout(ANSWER_WITHIN, stream.read_to_end(&mut rest)).await.expect("closed in bounded time").unwrap();
    assert!(rest.is_empty(), "{rest:?}");
    assert_unharmed_without_baseline(s.addr).await;
}
