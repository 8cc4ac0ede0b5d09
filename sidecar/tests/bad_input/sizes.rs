//! Oversized input: bodies (with or without Content-Length), identifiers, pins and batches.

use sidecar::types::time::GO_ZERO_TIME;

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

#[tokio::test]
async fn a_pin_larger_than_an_entry_allows_is_400_and_leaves_the_pinset_as_it_was() {
    let s = server(Default::default()).await;
    pin_baseline(s.addr).await;
    let other = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi";
    let metadata = "m".repeat(40_000);
    for cid in [other, KEPT] {
        let r = send(s.addr, "POST", &format!("/pins/{cid}?name=big&meta-blob={metadata}")).await;
        r.assert_error(400, "the pin is too large: ");
        assert_unharmed(s.addr).await;
    }
    assert_eq!(get(s.addr, &format!("/allocations/{other}")).await.status, 404, "the large pin was not added");
    let kept = get(s.addr, &format!("/allocations/{KEPT}")).await.json();
    assert_eq!(kept["name"], "", "the baseline pin was not replaced: {kept}");
    // Large but within the limit.
    let metadata = "m".repeat(30_000);
    assert_eq!(send(s.addr, "POST", &format!("/pins/{other}?meta-blob={metadata}")).await.status, 200);
}

/// As many CIDs as a request line holds (hyper refuses URIs from 64 KiB on), some repeated: every
/// one answered, in the order asked; what is not pinned shows Go's zero time as created.
#[tokio::test]
async fn a_listing_of_a_thousand_named_cids_answers_each_in_order() {
    let s = server(Default::default()).await;
    pin_baseline(s.addr).await;
    let unpinned = |n: u32| cid::Cid::new_v1(0x55, multihash::Multihash::<64>::wrap(0x00, &n.to_be_bytes()).unwrap());
    let mut asked: Vec<String> = (0..1000).map(|n| unpinned(n).to_string()).collect();
    for at in [0, 500, asked.len()] {
        asked.insert(at, KEPT.to_string());
    }
    let r = get(s.addr, &format!("/pins?cids={}", asked.join(","))).await;
    assert_eq!((r.status, r.trailer("x-stream-error")), (200, Some("")), "{r:?}");
    let lines = r.lines();
    assert_eq!(lines.iter().map(|l| l["cid"].as_str().unwrap()).collect::<Vec<_>>(), asked);
    for line in &lines {
        let pinned = line["cid"] == KEPT;
        assert_eq!(line["created"] != GO_ZERO_TIME, pinned, "{line}");
    }
    assert_unharmed(s.addr).await;
}
