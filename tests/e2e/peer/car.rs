//! `POST /add?format=car` against real daemons: the archive comes from one daemon's `dag/export`
//! and goes to a peer beside another daemon, which can only have the content by importing it.

use serde_json::Value;

use crate::common::*;

/// The CAR of `cid` as `daemon`'s `dag/export` writes it.
pub async fn dag_export(daemon: &e2e::ipfs_daemon::IpfsDaemon, cid: &str) -> Vec<u8> {
    let url = format!("{}/api/v0/dag/export", daemon.api_url());
    let response = http_client().post(&url).query(&[("arg", cid)]).send().await.expect("dag/export");
    assert!(response.status().is_success(), "dag/export: {}", response.status());
    response.bytes().await.expect("the exported CAR").to_vec()
}

#[tokio::test]
async fn a_car_exported_elsewhere_is_imported_and_its_root_pinned() {
    let content = unique_bytes("exported as a CAR");
    let cid = shared_daemon().add_bytes(&content).await.unwrap();
    let archive = dag_export(shared_daemon(), &cid).await;

    let scratch = tempfile::Builder::new().prefix("e2e-car-").tempdir().unwrap();
    let daemon = own_daemon(scratch.path(), 0, 0).await;
    let mut peer = TestPeer::start(&daemon.api_multiaddr().to_string(), &[]).await;
    let part = reqwest::multipart::Part::bytes(archive).file_name("site.car").mime_str("application/octet-stream");
    let form = reqwest::multipart::Form::new().part("file", part.unwrap());
    let response = http_client()
        .post(peer.url("/add"))
        .query(&[("format", "car"), ("name", "from-a-car")])
        .multipart(form)
        .send()
        .await
        .expect("POST /add?format=car");
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 1, "one output for a CAR: {text}");
    let out = &lines[0];
    assert!(same_cid(out["cid"].as_str().unwrap(), &cid), "{out}");
    assert_eq!(out["name"], "site.car");
    assert_eq!(out["size"].as_u64(), Some(content.len() as u64), "the root's UnixFS file size: {out}");
    assert!(out["bytes"].as_u64().is_some_and(|b| b > content.len() as u64), "{out}");

    wait_daemon_pin(&daemon, &cid, true).await;
    let status = peer.wait_status(&cid, &["pinned"]).await;
    assert_eq!(status["name"], "from-a-car", "{status}");
    peer.stop().await;
}
