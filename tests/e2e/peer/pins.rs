//! The pin life cycle through the REST API of a real peer beside the shared daemon: what the
//! cluster reports and what the daemon itself holds must agree.

use reqwest::Method;
use serde_json::Value;

use crate::common::*;

#[tokio::test]
async fn pin_and_unpin_a_cid_added_to_the_daemon() {
    let daemon = shared_daemon();
    let peer = TestPeer::start(&daemon.api_multiaddr().to_string(), &[]).await;
    let cid = add_unpinned(daemon, "pin and unpin").await;
    assert!(!daemon_has_pin(daemon, &cid).await);

    let pin = peer.pin(&cid, &[("name", "e2e-pin")]).await;
    assert!(same_cid(pin["cid"].as_str().unwrap(), &cid), "{pin}");
    assert_eq!(pin["name"], "e2e-pin");
    let info = peer.wait_status(&cid, &["pinned"]).await;
    assert!(same_cid(info["cid"].as_str().unwrap(), &cid), "{info}");
    assert!(daemon_has_pin(daemon, &cid).await, "pinned in the cluster, so in the daemon's own pin/ls");

    let (status, removed) = peer.unpin(&cid).await;
    assert_eq!(status, 200, "{removed}");
    assert!(same_cid(removed["cid"].as_str().unwrap(), &cid), "DELETE answers the pin as it was: {removed}");
    peer.wait_status(&cid, &["unpinned"]).await;
    wait_daemon_pin(daemon, &cid, false).await;
    let (status, body) = peer.call(peer.request(Method::GET, &format!("/allocations/{cid}"))).await;
    assert_eq!(status, 404, "{body}");

    // Absent (again, or never pinned at all): 404, which clients act on.
    let (status, body) = peer.unpin(&cid).await;
    assert_eq!((status, body["code"].as_u64()), (404, Some(404)), "{body}");
    let never = raw_cid(&unique_bytes("never pinned"));
    let (status, body) = peer.unpin(&never).await;
    assert_eq!(status, 404, "{body}");
    // An invalid CID is a 400.
    let (status, body) = peer.call(peer.request(Method::POST, "/pins/not-a-cid")).await;
    assert_eq!(status, 400, "{body}");
}

/// Imports one file wrapped in a directory into the daemon, unpinned: `(directory, file)` CIDs.
async fn add_wrapped(daemon: &e2e::ipfs_daemon::IpfsDaemon, file_name: &str) -> (String, String) {
    let part = reqwest::multipart::Part::bytes(unique_bytes("file in a directory"))
        .file_name(file_name.to_string())
        .mime_str("application/octet-stream")
        .unwrap();
    let form = reqwest::multipart::Form::new().part("file", part);
    let text = reqwest::Client::new()
        .post(format!("{}/api/v0/add", daemon.api_url()))
        .query(&[("pin", "false"), ("wrap-with-directory", "true")])
        .multipart(form)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let entries: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let hash_of =
        |name: &str| entries.iter().find(|e| e["Name"] == name).and_then(|e| e["Hash"].as_str()).map(str::to_string);
    (
        hash_of("").unwrap_or_else(|| panic!("no directory in {text}")),
        hash_of(file_name).unwrap_or_else(|| panic!("no file in {text}")),
    )
}

#[tokio::test]
async fn pin_and_unpin_by_ipfs_path() {
    let daemon = shared_daemon();
    let peer = TestPeer::start(&daemon.api_multiaddr().to_string(), &[]).await;
    let (dir, file) = add_wrapped(daemon, "hello.txt").await;
    let path = format!("ipfs/{dir}/hello.txt");

    let pin = peer.pin(&path, &[]).await;
    assert!(same_cid(pin["cid"].as_str().unwrap(), &file), "the path resolves to the file: {pin}");
    peer.wait_status(&file, &["pinned"]).await;
    assert!(daemon_has_pin(daemon, &file).await);
    assert!(!daemon_has_pin(daemon, &dir).await, "only the file was pinned");

    let (status, removed) = peer.unpin(&path).await;
    assert_eq!(status, 200, "{removed}");
    assert!(same_cid(removed["cid"].as_str().unwrap(), &file), "{removed}");
    peer.wait_status(&file, &["unpinned"]).await;
    wait_daemon_pin(daemon, &file, false).await;
    let (status, body) = peer.unpin(&path).await;
    assert_eq!(status, 404, "unpinning the path again: {body}");
}

#[tokio::test]
async fn add_through_the_peer_pins_the_content() {
    let daemon = shared_daemon();
    let peer = TestPeer::start(&daemon.api_multiaddr().to_string(), &[]).await;
    let content = unique_bytes("added through the peer").repeat(500);
    let part = reqwest::multipart::Part::bytes(content.clone())
        .file_name("added.bin")
        .mime_str("application/octet-stream")
        .unwrap();
    let response = peer
        .request(Method::POST, "/add")
        .query(&[("name", "e2e-add")])
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let text = response.text().await.unwrap();
    let outputs: Vec<Value> =
        text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"))).collect();
    let added =
        outputs.iter().find(|o| o["name"] == "added.bin").unwrap_or_else(|| panic!("no output for the file: {text}"));
    let cid = added["cid"].as_str().unwrap().to_string();
    assert!(added["size"].as_u64().unwrap_or(0) >= content.len() as u64, "{added}");

    let info = peer.wait_status(&cid, &["pinned"]).await;
    assert_eq!(info["name"], "e2e-add", "{info}");
    assert!(daemon_has_pin(daemon, &cid).await, "the content is pinned in the daemon");
    let allocations = peer.allocations().await;
    assert!(allocations.iter().any(|p| same_cid(p["cid"].as_str().unwrap(), &cid)), "{allocations:?}");
}

#[tokio::test]
async fn expired_pin_is_unpinned_in_the_cluster_and_the_daemon() {
    let daemon = shared_daemon();
    let peer = TestPeer::start(&daemon.api_multiaddr().to_string(), &["--expiry-check-interval", "200ms"]).await;
    let cid = add_unpinned(daemon, "expires").await;
    let kept = add_unpinned(daemon, "does not expire").await;

    let pin = peer.pin(&cid, &[("expire-in", "2s")]).await;
    assert_ne!(pin["expire_at"], "0001-01-01T00:00:00Z", "{pin}");
    peer.pin(&kept, &[]).await;
    peer.wait_status(&kept, &["pinned"]).await;

    peer.wait_status(&cid, &["unpinned"]).await;
    wait_daemon_pin(daemon, &cid, false).await;
    let (status, body) = peer.call(peer.request(Method::GET, &format!("/allocations/{cid}"))).await;
    assert_eq!(status, 404, "an expired pin leaves the pinset: {body}");
    assert_eq!(local_status(&peer.status(&kept).await).0, "pinned");
    assert!(daemon_has_pin(daemon, &kept).await);
    // Both pins and the expiry's unpin reached the daemon (the expiring pin was not skipped).
    let done = peer.prometheus("cluster_tracker_ops_done").await;
    assert!(done.is_some_and(|n| n >= 3.0), "IPFS operations done: {done:?}");
}
