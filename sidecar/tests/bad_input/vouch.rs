//! `PUT /consensus/vouch` (the operator vouching for a member's readiness without a leader):
//! malformed, out-of-range, overflowing, oversized, chunked and unauthenticated bodies are refused with a
//! clear error, vouch for nothing, and leave the peer unharmed.

use sidecar::api::RestApiConfig;

use super::http::put_chunked;
use super::*;

fn put(body: &[u8]) -> String {
    format!("PUT /consensus/vouch HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}", body.len())
}

/// The peer is unharmed and reports no vouch.
async fn nothing_vouched(addr: SocketAddr) {
    assert_unharmed(addr).await;
    assert_eq!(get(addr, "/consensus").await.json()["vouched_seconds"], 0);
}

#[tokio::test]
async fn bad_vouches_are_refused_and_vouch_for_nothing() {
    let s = server(RestApiConfig { max_body_size: 1024, ..Default::default() }).await;
    pin_baseline(s.addr).await;
    let bodies: [(&[u8], &str); 10] = [
        (b"", "error decoding request body"),
        (b"not json", "error decoding request body"),
        (b"{}", "error decoding request body"),
        (b"{\"seconds\": \"60\"}", "error decoding request body"),
        (b"{\"seconds\": -1}", "error decoding request body"),
        (b"{\"seconds\": 1.5}", "error decoding request body"),
        (b"{\"seconds\": 18446744073709551616}", "error decoding request body"),
        (b"{\"seconds\": 1e400}", "error decoding request body"),
        (b"{\"seconds\": 0}", "seconds: between 1 and 600"),
        (b"{\"seconds\": 18446744073709551615}", "seconds: between 1 and 600"),
    ];
    for (body, message) in bodies {
        raw(s.addr, &put(body), body).await.assert_error(400, message);
        nothing_vouched(s.addr).await;
    }
    let huge = vec![b' '; 4096];
    raw(s.addr, &put(&huge), &huge).await.assert_error(413, "request body exceeds 1024 bytes");
    nothing_vouched(s.addr).await;
    put_chunked(s.addr, "/consensus/vouch", 4, 512).await.assert_error(413, "request body exceeds 1024 bytes");
    nothing_vouched(s.addr).await;
}

#[tokio::test]
async fn a_vouch_needs_credentials() {
    let s = server(with_auth()).await;
    let admin = basic("admin", "s3cret");
    // Once the peer leads its one-member cluster.
    let pinned = raw(s.addr, &format!("POST /pins/{KEPT} HTTP/1.1\r\n{admin}"), b"").await;
    assert_eq!(pinned.status, 200, "{pinned:?}");
    let body = br#"{"seconds": 60}"#;
    for auth in [String::new(), basic("admin", "wrong")] {
        let head = if auth.is_empty() { put(body) } else { format!("{}\r\n{auth}", put(body)) };
        raw(s.addr, &head, body).await.assert_error(401, "");
    }
    let r = raw(s.addr, &format!("{}\r\n{admin}", put(body)), body).await;
    // A peer that knows a live leader (here it leads alone) needs no vouch: none is granted.
    assert_eq!((r.status, r.json()), (200, serde_json::json!({"seconds": 0})));
}
