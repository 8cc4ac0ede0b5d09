//! `PUT /consensus/addresses` (the operator's introductions): malformed, overlong, oversized,
//! chunked and unauthenticated bodies are refused with a clear error, and the peer is unharmed.

use super::http::put_chunked;
use sidecar::api::RestApiConfig;

use super::*;

fn put(body: &[u8]) -> String {
    format!("PUT /consensus/addresses HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}", body.len())
}

const PEER: &str = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA";

#[tokio::test]
async fn malformed_and_overlong_introductions_are_400() {
    let s = server(RestApiConfig { max_body_size: 1 << 20, ..Default::default() }).await;
    pin_baseline(s.addr).await;
    let long = "z".repeat(60_000);
    let too_many = format!("[{}]", vec![format!(r#"{{"peer_id": "{PEER}", "addresses": []}}"#); 1025].join(","));
    let bodies: Vec<(String, &str)> = vec![
        (String::new(), "error decoding request body"),
        ("not json".into(), "error decoding request body"),
        ("{}".into(), "error decoding request body"),
        (r#"[{"peer_id": 7, "addresses": []}]"#.into(), "error decoding request body"),
        (r#"[{"peer_id": "x", "addresses": 99999999999999999999999}]"#.into(), "error decoding request body"),
        (format!(r#"[{{"peer_id": "{long}", "addresses": []}}]"#), "invalid peer ID: 60000 bytes is longer than any"),
        (format!(r#"[{{"peer_id": "{PEER}", "addresses": ["/ip4/999.1.1.1/tcp/1"]}}]"#), "invalid address"),
        (format!(r#"[{{"peer_id": "{PEER}", "addresses": ["/{long}"]}}]"#), "invalid address"),
        (too_many, "at most 1024 peers at once"),
    ];
    for (body, message) in bodies {
        raw(s.addr, &put(body.as_bytes()), body.as_bytes()).await.assert_error(400, message);
        assert_unharmed(s.addr).await;
    }
}

#[tokio::test]
async fn oversized_and_chunked_introductions_are_413() {
    let s = server(RestApiConfig { max_body_size: 1024, ..Default::default() }).await;
    pin_baseline(s.addr).await;
    let huge = vec![b' '; 4096];
    raw(s.addr, &put(&huge), &huge).await.assert_error(413, "request body exceeds 1024 bytes");
    assert_unharmed(s.addr).await;

    // Without Content-Length: four chunks of 512 bytes pass the limit while they are read.
    put_chunked(s.addr, "/consensus/addresses", 4, 512).await.assert_error(413, "request body exceeds 1024 bytes");
    assert_unharmed(s.addr).await;
}

#[tokio::test]
async fn introductions_need_credentials() {
    let s = server(with_auth()).await;
    let body = format!(r#"[{{"peer_id": "{PEER}", "addresses": ["/ip4/127.0.0.1/tcp/1"]}}]"#);
    for auth in [String::new(), basic("admin", "wrong")] {
        let head = if auth.is_empty() { put(body.as_bytes()) } else { format!("{}\r\n{auth}", put(body.as_bytes())) };
        raw(s.addr, &head, body.as_bytes()).await.assert_error(401, "");
    }
    let admin = basic("admin", "s3cret");
    let r = raw(s.addr, &format!("{}\r\n{admin}", put(body.as_bytes())), body.as_bytes()).await;
    assert_eq!((r.status, r.json()), (200, serde_json::json!({"connecting": 0})), "a non-member is not connected to");
}
