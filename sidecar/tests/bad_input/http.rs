//! Malformed HTTP: bad paths, methods, headers and framing; slow and abandoned connections.

use super::*;

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
