//! The departure handshake (`GET`/`PUT /consensus/departure`): bad waits, bodies and credentials
//! are refused with a clear error, and leave the departure undecided.

use sidecar::api::RestApiConfig;

use super::*;

fn put(body: &[u8]) -> String {
    format!("PUT /consensus/departure HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}", body.len())
}

/// The peer is unharmed and nothing was declared.
async fn still_undecided(addr: std::net::SocketAddr) {
    assert_unharmed(addr).await;
    assert_eq!(get(addr, "/consensus/departure").await.json()["departure"], "undecided");
}

#[tokio::test]
async fn bad_waits_and_bodies_are_400_and_declare_nothing() {
    let s = server(RestApiConfig { max_body_size: 1024, ..Default::default() }).await;
    pin_baseline(s.addr).await;
    for wait in ["99999999999999999999h", "18446744073709551616s", "-1s", "1e400s", "10m1s", "%ff"] {
        let r = get(s.addr, &format!("/consensus/departure?wait={wait}")).await;
        r.assert_error(400, "wait: ");
        still_undecided(s.addr).await;
    }
    let bodies: [&[u8]; 6] =
        [b"", b"not json", b"{}", b"{\"departure\": 7}", b"{\"departure\": \"\xff\"}", b"{\"departure\": \"removed\"}"];
    for body in bodies {
        let r = raw(s.addr, &put(body), body).await;
        assert_eq!(r.status, 400, "{body:?}: {r:?}");
        still_undecided(s.addr).await;
    }
    let huge = vec![b' '; 4096];
    raw(s.addr, &put(&huge), &huge).await.assert_error(413, "request body exceeds 1024 bytes");
    still_undecided(s.addr).await;
}

#[tokio::test]
async fn the_handshake_needs_credentials() {
    let s = server(with_auth()).await;
    let body = br#"{"departure": "restart"}"#;
    let wrong = basic("admin", "wrong");
    for auth in ["", wrong.as_str()] {
        let head = if auth.is_empty() { put(body) } else { format!("{}\r\n{auth}", put(body)) };
        raw(s.addr, &head, body).await.assert_error(401, "");
        let get_head = format!(
            "GET /consensus/departure HTTP/1.1{}",
            if auth.is_empty() { String::new() } else { format!("\r\n{auth}") }
        );
        raw(s.addr, &get_head, b"").await.assert_error(401, "");
    }
    let admin = basic("admin", "s3cret");
    let r = raw(s.addr, &format!("GET /consensus/departure HTTP/1.1\r\n{admin}"), b"").await;
    assert_eq!(r.json()["departure"], "undecided", "nothing was declared without credentials");
}
