//! The cluster network of a peer process: its libp2p address, and the secret it requires.

use std::time::Duration;

use e2e::peer::{unique_loopback, PeerOptions, PeerProcess};
use reqwest::Method;

use crate::common::*;

#[tokio::test]
async fn a_peer_reports_its_cluster_address() {
    let peer = TestPeer::start(&shared_daemon().api_multiaddr().to_string(), &[]).await;
    let (status, id) = peer.call(peer.request(Method::GET, "/id")).await;
    assert_eq!(status, 200, "{id}");
    let peer_id = id["id"].as_str().unwrap();
    let expected = format!("{}/p2p/{peer_id}", peer.process.cluster_multiaddr());
    assert_eq!(id["addresses"], serde_json::json!([expected]), "{id}");
}

#[tokio::test]
async fn a_peer_without_a_secret_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let options = PeerOptions {
        data_dir: dir.path().join("data"),
        host: unique_loopback(),
        ipfs_api: "/ip4/127.0.0.1/tcp/5001".to_string(),
        secret: None,
        args: Vec::new(),
    };
    let mut peer = PeerProcess::spawn_unchecked(options).unwrap();
    let code = peer.wait_exit(Duration::from_secs(20)).await.expect("the peer must exit by itself, promptly");
    let log = peer.log();
    assert!(code.is_some_and(|c| c != 0), "exit code {code:?}; log:\n{log}");
    assert!(log.contains("--secret") && log.contains("CLUSTER_SECRET"), "the error says what to give:\n{log}");
}
