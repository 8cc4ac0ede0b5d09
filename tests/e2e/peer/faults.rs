//! Injected failures: content nobody has, pins removed behind the cluster's back, a peer killed
//! with queued pins or unpins, an IPFS daemon that is down or crashes, a damaged state file.

use std::time::{Duration, Instant};

use e2e::peer::PeerProcess;
use reqwest::Method;

use crate::common::*;

/// Statuses of a pin that is acknowledged but not (yet) done, with no daemon to do it.
const WAITING_OR_FAILED: [&str; 5] = ["pin_queued", "pinning", "pin_error", "cluster_error", "unexpectedly_unpinned"];

#[tokio::test]
async fn failed_pin_recovers_once_the_content_exists() {
    let daemon = shared_daemon();
    let peer = TestPeer::start_with_service(
        &daemon.api_multiaddr().to_string(),
        &["--pin-deadline", "3s"],
        Some(fast_failing_tracker()),
    )
    .await;
    let content = unique_bytes("nobody has this yet");
    let cid = raw_cid(&content);

    peer.pin(&cid, &[]).await;
    let info = peer.wait_status(&cid, &["pin_error"]).await;
    let (_, error) = local_status(&info);
    assert!(error.contains("pin_deadline"), "the error says why: {info}");
    assert!(!daemon_has_pin(daemon, &cid).await);

    block_put(daemon, &content).await;
    let (status, recovered) = peer.call(peer.request(Method::POST, &format!("/pins/{cid}/recover"))).await;
    assert_eq!(status, 200, "{recovered}");
    assert!(same_cid(recovered["cid"].as_str().unwrap(), &cid), "{recovered}");
    peer.wait_status(&cid, &["pinned"]).await;
    assert!(daemon_has_pin(daemon, &cid).await);
}

#[tokio::test]
async fn pin_removed_in_the_daemon_is_detected_and_repaired() {
    let daemon = shared_daemon();
    let peer = TestPeer::start(&daemon.api_multiaddr().to_string(), &["--ipfs-sync-interval", "1s"]).await;
    let cid = add_unpinned(daemon, "unpinned behind the cluster's back").await;
    // Pinned by a user directly in the daemon, not in the cluster: none of the cluster's business.
    let foreign = add_unpinned(daemon, "pinned outside the cluster").await;
    reqwest::Client::new()
        .post(format!("{}/api/v0/pin/add", daemon.api_url()))
        .query(&[("arg", foreign.as_str())])
        .send()
        .await
        .unwrap()
        .error_for_status()
        .expect("pin/add in the daemon");

    peer.pin(&cid, &[]).await;
    peer.wait_status(&cid, &["pinned"]).await;
    let detected = || async { peer.prometheus("cluster_tracker_unexpectedly_unpinned").await.unwrap_or(-1.0) };
    assert_eq!(detected().await, 0.0);

    // Twice: each repair is a sync that found the pin missing, listed the foreign pin, and left it.
    for round in 1..=2 {
        daemon.pin_rm(&cid).await.expect("pin/rm in the daemon");
        wait_for(&format!("detection #{round}"), WAIT, || async {
            let count = detected().await;
            if count >= round as f64 {
                Ok(())
            } else {
                Err(format!("unexpectedly_unpinned counter {count}"))
            }
        })
        .await;
        wait_daemon_pin(daemon, &cid, true).await;
        peer.wait_status(&cid, &["pinned"]).await;
        assert!(daemon_has_pin(daemon, &foreign).await, "a pin the cluster does not own is left alone");
    }
    assert!(
        peer.process.log().contains("unexpectedly") || peer.process.log().contains("missing"),
        "{}",
        peer.log_tail()
    );
    let (status, body) = peer.call(peer.request(Method::GET, &format!("/pins/{foreign}"))).await;
    assert_eq!((status, local_status(&body).0.as_str()), (200, "unpinned"), "not a cluster pin: {body}");
}

#[tokio::test]
async fn queued_pins_survive_kill9_of_the_peer() {
    const PINS: usize = 20;
    let daemon = shared_daemon();
    let mut peer =
        TestPeer::start(&daemon.api_multiaddr().to_string(), &["--concurrent-pins", "2", "--pin-deadline", "10m"])
            .await;
    let contents: Vec<Vec<u8>> = (0..PINS).map(|i| unique_bytes(&format!("queued pin {i}"))).collect();
    let cids: Vec<String> = contents.iter().map(|c| raw_cid(c)).collect();
    for cid in &cids {
        let pin = peer.pin(cid, &[]).await;
        assert!(same_cid(pin["cid"].as_str().unwrap(), cid), "acknowledged: {pin}");
    }
    // Two pinning (blocked on content nobody has), the rest queued behind them.
    wait_for("2 pins in progress and the rest queued", WAIT, || async {
        let running = peer.prometheus("cluster_tracker_in_progress").await;
        let queued = peer.prometheus("cluster_tracker_queued").await;
        match (running, queued) {
            (Some(r), Some(q)) if r == 2.0 && q == (PINS - 2) as f64 => Ok(()),
            other => Err(format!("(in progress, queued) = {other:?}")),
        }
    })
    .await;

    peer.process.kill9().unwrap();
    peer.process.restart().await.expect("restart on the same data directory");
    for content in &contents {
        block_put(daemon, content).await;
    }
    for cid in &cids {
        peer.wait_status(cid, &["pinned"]).await;
    }
    let in_daemon = daemon.pin_ls().await.unwrap();
    let missing: Vec<&String> = cids.iter().filter(|c| !in_daemon.contains_key(&key(c))).collect();
    assert!(missing.is_empty(), "acknowledged pins missing from the daemon: {missing:?}");
    let allocations = peer.allocations().await;
    let listed: std::collections::HashSet<_> = allocations.iter().map(|p| key(p["cid"].as_str().unwrap())).collect();
    assert_eq!(allocations.len(), PINS, "{allocations:?}");
    assert!(cids.iter().all(|c| listed.contains(&key(c))), "{allocations:?}");
}

#[tokio::test]
async fn an_unpin_acknowledged_before_kill9_of_the_peer_is_done_after_the_restart() {
    let daemon = shared_daemon();
    let mut peer =
        TestPeer::start(&daemon.api_multiaddr().to_string(), &["--concurrent-pins", "1", "--pin-deadline", "10m"])
            .await;
    let cid = add_unpinned(daemon, "unpinned just before a kill -9").await;
    peer.pin(&cid, &[]).await;
    peer.wait_status(&cid, &["pinned"]).await;
    wait_daemon_pin(daemon, &cid, true).await;

    // The only slot stays busy (content nobody has), so the unpin is acknowledged but only queued.
    let busy = unique_bytes("keeps the only slot busy");
    let busy_cid = raw_cid(&busy);
    peer.pin(&busy_cid, &[]).await;
    peer.wait_status(&busy_cid, &["pinning"]).await;
    let (status, body) = peer.unpin(&cid).await;
    assert_eq!(status, 200, "acknowledged: {body}");
    peer.wait_status(&cid, &["unpin_queued"]).await;
    assert!(daemon_has_pin(daemon, &cid).await, "the unpin has not run yet");

    peer.process.kill9().unwrap();
    peer.process.restart().await.expect("restart on the same data directory");
    // The busy pin takes the slot again after the restart; its content lets it finish.
    block_put(daemon, &busy).await;
    wait_daemon_pin(daemon, &cid, false).await;
    peer.wait_status(&cid, &["unpinned"]).await;
    peer.wait_status(&busy_cid, &["pinned"]).await;
}

#[tokio::test]
async fn ipfs_daemon_down_then_up() {
    let (api_port, swarm_port) = (free_port(), free_port());
    let mut peer = TestPeer::start(
        &format!("/ip4/127.0.0.1/tcp/{api_port}"),
        &["--monitor-ping-interval", "500ms", "--pin-deadline", "2m"],
    )
    .await;
    let (status, body) = peer.call(peer.request(Method::GET, "/health")).await;
    assert_eq!((status, &body), (204, &serde_json::Value::Null), "liveness does not depend on IPFS");
    let (status, body) = peer.call(peer.request(Method::GET, "/readyz")).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["ipfs"], false, "{body}");
    let problems = body["problems"].to_string();
    assert!(problems.contains("IPFS"), "the reason names IPFS: {body}");

    let contents: Vec<Vec<u8>> = (0..3).map(|i| unique_bytes(&format!("pinned while IPFS is down {i}"))).collect();
    let cids: Vec<String> = contents.iter().map(|c| raw_cid(c)).collect();
    for cid in &cids {
        peer.pin(cid, &[]).await;
        peer.wait_status(cid, &WAITING_OR_FAILED).await;
    }
    assert!(peer.process.pid().is_some(), "still running");

    let daemon = own_daemon(peer.scratch_dir(), api_port, swarm_port).await;
    assert_eq!(daemon.api_multiaddr().to_string(), format!("/ip4/127.0.0.1/tcp/{api_port}"));
    for content in &contents {
        block_put(&daemon, content).await;
    }
    for cid in &cids {
        peer.wait_status(cid, &["pinned"]).await;
        assert!(daemon_has_pin(&daemon, cid).await);
    }
    wait_for("/readyz 200", WAIT, || async {
        match peer.call(peer.request(Method::GET, "/readyz")).await {
            (200, body) if body["ready"] == true => Ok(()),
            (status, body) => Err(format!("{status} {body}")),
        }
    })
    .await;
    peer.stop().await;
    daemon.stop();
}

#[tokio::test]
async fn ipfs_daemon_killed_mid_operation() {
    let scratch = tempfile::Builder::new().prefix("e2e-daemon-").tempdir().unwrap();
    let daemon = own_daemon(scratch.path(), 0, 0).await;
    let mut peer = TestPeer::start(
        &daemon.api_multiaddr().to_string(),
        &["--monitor-ping-interval", "500ms", "--concurrent-pins", "2", "--pin-deadline", "2m"],
    )
    .await;
    // Some the daemon has (done before the crash, or interrupted), some it gets only after it.
    let mut present = Vec::new();
    for i in 0..3 {
        present.push(add_unpinned(&daemon, &format!("present before the crash {i}")).await);
    }
    let late: Vec<Vec<u8>> = (0..4).map(|i| unique_bytes(&format!("arrives after the crash {i}"))).collect();
    let late_cids: Vec<String> = late.iter().map(|c| raw_cid(c)).collect();
    for cid in late_cids.iter().chain(&present) {
        peer.pin(cid, &[]).await;
    }
    wait_for("pins in flight", WAIT, || async {
        match peer.prometheus("cluster_tracker_in_progress").await {
            Some(n) if n >= 1.0 => Ok(()),
            other => Err(format!("in progress: {other:?}")),
        }
    })
    .await;

    daemon.kill9().unwrap();
    for cid in late_cids.iter().chain(&present) {
        let (status, _) = local_status(&peer.status(cid).await);
        assert!(status == "pinned" || WAITING_OR_FAILED.contains(&status.as_str()), "{cid}: {status}");
    }
    let daemon =
        tokio::task::spawn_blocking(move || daemon.restart().map(|()| daemon)).await.unwrap().expect("daemon restart");
    for content in &late {
        block_put(&daemon, content).await;
    }
    for cid in late_cids.iter().chain(&present) {
        peer.wait_status(cid, &["pinned"]).await;
        assert!(daemon_has_pin(&daemon, cid).await, "{cid}");
    }
    peer.stop().await;
    daemon.stop();
}

/// Stops a peer holding pins, damages its state file with `damage`, and checks that the next
/// start refuses promptly, names the file, and leaves it as it was.
async fn damaged_state_file_stops_the_peer(damage: fn(&[u8]) -> Vec<u8>) {
    let daemon = shared_daemon();
    let mut peer = TestPeer::start(&daemon.api_multiaddr().to_string(), &[]).await;
    for i in 0..5 {
        let cid = add_unpinned(daemon, &format!("state file pin {i}")).await;
        peer.pin(&cid, &[]).await;
        peer.wait_status(&cid, &["pinned"]).await;
    }
    peer.stop().await;

    let state = peer.data_dir().join("pinset.redb");
    let healthy = std::fs::read(&state).expect("the state file");
    assert!(healthy.len() > 64, "{} bytes", healthy.len());
    let damaged = damage(&healthy);
    std::fs::write(&state, &damaged).unwrap();

    let started = Instant::now();
    let mut restarted = PeerProcess::spawn_unchecked(peer.process.options.clone()).unwrap();
    let code = restarted.wait_exit(Duration::from_secs(20)).await.expect("the peer must exit by itself, promptly");
    eprintln!("refused the damaged state file after {:?}", started.elapsed());
    assert!(code.is_some_and(|c| c != 0), "exit code {code:?}; log:\n{}", restarted.log());
    let log = restarted.log();
    let last_lines: String = log.lines().rev().take(5).collect::<Vec<_>>().join("\n");
    assert!(last_lines.contains("pinset.redb"), "the error names the file:\n{log}");
    assert!(last_lines.contains("damaged"), "the error says what is wrong with it:\n{log}");
    assert!(!last_lines.contains("another process"), "not blamed on a lock:\n{log}");
    assert_eq!(std::fs::read(&state).unwrap(), damaged, "the damaged file is left as it was");
}

#[tokio::test]
async fn truncated_state_file_stops_the_peer() {
    damaged_state_file_stops_the_peer(|healthy| healthy[..healthy.len() / 2].to_vec()).await;
}

#[tokio::test]
async fn garbage_state_file_stops_the_peer() {
    damaged_state_file_stops_the_peer(|healthy| {
        // Deterministic noise of the same length (xorshift).
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        (0..healthy.len())
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    })
    .await;
}
