//! Oversized input: bodies (with or without Content-Length), identifiers, pins and batches.

use super::*;

#[tokio::test]
async fn declared_bodies_over_the_limit_are_413_before_they_are_read() {
    let s = server(Default::default()).await;
    pin_baseline(s.addr).await;
    let r = raw(s.addr, "POST /peers HTTP/1.1\r\nContent-Length: 500000000", b"").await;
    r.assert_error(413, "request body exceeds");
    assert_unharmed(s.addr).await;
}

/// 60,000 characters of base58: decoding that takes time quadratic in its length.
fn long_base58() -> String {
    "z".repeat(60_000)
}

#[tokio::test]
async fn identifiers_longer_than_any_peer_id_or_cid_are_400_before_they_are_decoded() {
    let s = server(Default::default()).await;
    pin_baseline(s.addr).await;
    let long = long_base58();
    let body = format!("{{\"peer_id\": \"{long}\"}}");
    let head = format!("POST /peers HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}", body.len());
    raw(s.addr, &head, body.as_bytes()).await.assert_error(400, "invalid peer ID: 60000 bytes is longer than any");
    assert_unharmed(s.addr).await;

    let requests = [
        ("DELETE", format!("/peers/{long}"), "invalid peer ID: 60000 bytes is longer than any"),
        ("POST", format!("/pins/{KEPT}?user-allocations={long}"), "user-allocations: invalid peer ID: 60000 bytes"),
        ("POST", format!("/pins/{KEPT}?user-allocations={KEPT},{long}"), "user-allocations: invalid peer ID: 60000"),
        ("GET", format!("/pins/{long}"), "error decoding Cid: 60000 bytes is longer than any CID"),
        ("POST", format!("/pins/{long}"), "error decoding Cid: 60000 bytes is longer than any CID"),
        ("DELETE", format!("/pins/{long}"), "error decoding Cid: 60000 bytes is longer than any CID"),
        ("POST", format!("/pins/{long}/recover"), "error decoding Cid: 60000 bytes is longer than any CID"),
        ("GET", format!("/allocations/{long}"), "error decoding Cid: 60000 bytes is longer than any CID"),
        ("GET", format!("/pins?cids={KEPT},{long}"), "error decoding Cid: 60000 bytes is longer than any CID"),
        (
            "POST",
            format!("/pins/{KEPT}?pin-update={long}"),
            "error decoding update option parameter: error decoding Cid: 60000",
        ),
    ];
    for (method, path, message) in requests {
        send(s.addr, method, &path).await.assert_error(400, message);
        assert_unharmed(s.addr).await;
    }
}
