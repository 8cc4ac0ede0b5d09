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
