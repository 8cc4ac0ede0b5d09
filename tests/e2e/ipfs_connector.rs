//! `KuboClient` against a real daemon (js-ipfs, Kubo-compatible RPC). The tests of this binary
//! share one daemon; each test has its own runtime, so each makes its own client.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use e2e::ipfs_daemon::IpfsDaemon;
use futures::{StreamExt, TryStreamExt};
use libp2p_identity::PeerId;
use multiaddr::{Multiaddr, Protocol};
use sidecar::ipfs::kubo::{KuboClient, KuboConfig};
use sidecar::ipfs::{AddRequest, IpfsConnector};
use sidecar::types::{parse_cid, Cid, CidKey, PinMode};
use sidecar::Error;
use tokio::sync::RwLock;

/// Garbage collection removes every unpinned block: tests holding unpinned content they still
/// need take this for reading, the gc test for writing.
static GC: RwLock<()> = RwLock::const_new(());

fn daemon() -> &'static IpfsDaemon {
    IpfsDaemon::shared().expect("shared IPFS daemon")
}

fn config_for(node: Multiaddr) -> KuboConfig {
    KuboConfig {
        node_multiaddress: node,
        // Generous: a bug must fail the test, not hang it for the production hour.
        pin_deadline: Duration::from_secs(60),
        request_timeout: Duration::from_secs(30),
        ..KuboConfig::default()
    }
}

fn client_of(daemon: &IpfsDaemon) -> KuboClient {
    KuboClient::new(config_for(daemon.api_multiaddr())).expect("client")
}

/// Content no other test (and no earlier run) has added.
fn unique_bytes(label: &str) -> Vec<u8> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    format!("{label} #{} at {now} in {}", COUNTER.fetch_add(1, Ordering::Relaxed), std::process::id()).into_bytes()
}

/// A raw-codec CIDv1 of a digest nobody has content for.
fn unavailable_cid() -> Cid {
    let seed = unique_bytes("unavailable");
    let mut bytes = vec![0x01, 0x55, 0x12, 0x20];
    bytes.extend((0..32).map(|i| seed[i % seed.len()] ^ (i as u8).wrapping_mul(37)));
    Cid::try_from(bytes.as_slice()).unwrap()
}

fn as_v1(cid: &Cid) -> Cid {
    Cid::new_v1(cid.codec(), *cid.hash())
}

/// Adds fresh content to the daemon, unpinned; returns its CIDv0.
async fn add_unpinned(label: &str) -> Cid {
    let text = daemon().add_bytes(&unique_bytes(label)).await.expect("add to the daemon");
    let cid = parse_cid(&text).unwrap();
    assert_eq!(cid.version(), cid::Version::V0, "the daemon adds as CIDv0 by default");
    cid
}

#[tokio::test]
async fn pin_is_seen_by_status_and_both_listings() {
    let _no_gc = GC.read().await;
    let client = client_of(daemon());
    let cid = add_unpinned("recursive pin").await;
    assert_eq!(client.pin_status(&cid).await.unwrap(), None);

    // One useful origin (the daemon itself) and one that refuses: origins are best effort.
    let closed = closed_loopback_port();
    let dead_origin = format!("/ip4/127.0.0.1/tcp/{closed}/p2p/{}", daemon().peer_id()).parse().unwrap();
    let origins = [daemon().swarm_addrs()[0].clone(), dead_origin];
    client.pin(&cid, PinMode::Recursive, &origins).await.unwrap();

    assert_eq!(client.pin_status(&cid).await.unwrap(), Some(PinMode::Recursive));
    let listed = client.pin_ls().await.unwrap();
    assert_eq!(listed.get(&CidKey::of(&cid)), Some(&PinMode::Recursive));
    let daemon_view = daemon().pin_ls().await.unwrap();
    assert_eq!(daemon_view.get(&CidKey::of(&cid)), Some(&PinMode::Recursive));
}

#[tokio::test]
async fn cidv0_pin_is_found_as_cidv1() {
    let _no_gc = GC.read().await;
    let client = client_of(daemon());
    let v0 = add_unpinned("direct pin").await;
    client.pin(&v0, PinMode::Direct, &[]).await.unwrap();

    let v1 = as_v1(&v0);
    assert_ne!(v0.to_string(), v1.to_string());
    assert_eq!(client.pin_status(&v1).await.unwrap(), Some(PinMode::Direct));
    assert_eq!(client.pin_ls().await.unwrap().get(&CidKey::of(&v1)), Some(&PinMode::Direct));
    // Pinned again as CIDv1, recursively this time: still the one pin, now recursive.
    client.pin(&v1, PinMode::Recursive, &[]).await.unwrap();
    assert_eq!(client.pin_status(&v0).await.unwrap(), Some(PinMode::Recursive));
}

#[tokio::test]
async fn unpin_removes_the_pin_and_not_pinned_is_success() {
    let _no_gc = GC.read().await;
    let client = client_of(daemon());
    let cid = add_unpinned("unpin").await;
    client.pin(&cid, PinMode::Recursive, &[]).await.unwrap();
    assert_eq!(client.pin_status(&cid).await.unwrap(), Some(PinMode::Recursive));

    client.unpin(&as_v1(&cid)).await.unwrap();
    assert_eq!(client.pin_status(&cid).await.unwrap(), None);
    assert!(!client.pin_ls().await.unwrap().contains_key(&CidKey::of(&cid)));
    assert!(!daemon().pin_ls().await.unwrap().contains_key(&CidKey::of(&cid)));

    client.unpin(&cid).await.expect("unpinning again");
    client.unpin(&unavailable_cid()).await.expect("unpinning what was never pinned");
}

#[tokio::test]
async fn pin_removed_behind_our_back_reads_as_unpinned() {
    let _no_gc = GC.read().await;
    let client = client_of(daemon());
    let cid = add_unpinned("user unpins").await;
    client.pin(&cid, PinMode::Recursive, &[]).await.unwrap();
    daemon().pin_rm(&cid.to_string()).await.unwrap();
    assert_eq!(client.pin_status(&cid).await.unwrap(), None);
    assert!(!client.pin_ls().await.unwrap().contains_key(&CidKey::of(&cid)));
}

/// A multipart upload in several chunks, as a client's body would arrive.
fn multipart_upload(boundary: &str, file_name: &str, content: &[u8], params: &[(&str, &str)]) -> AddRequest {
    let head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{file_name}\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    );
    let tail = format!("\r\n--{boundary}--\r\n");
    let (first, second) = content.split_at(content.len() / 2);
    let chunks = [Bytes::from(head), Bytes::copy_from_slice(first), Bytes::copy_from_slice(second), Bytes::from(tail)];
    AddRequest {
        content_type: format!("multipart/form-data; boundary={boundary}"),
        body: futures::stream::iter(chunks.map(Ok)).boxed(),
        params: params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    }
}

#[tokio::test]
async fn add_streams_entries_and_resolve_follows_paths() {
    let _no_gc = GC.read().await;
    let client = client_of(daemon());
    let content = unique_bytes("added through the connector").repeat(1000);
    let request = multipart_upload(
        "e2e-boundary-7d1f",
        "hello.txt",
        &content,
        &[("wrap-with-directory", "true"), ("cid-version", "1"), ("progress", "true")],
    );
    let entries: Vec<_> = client.add(request).await.unwrap().try_collect().await.unwrap();

    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["hello.txt", ""], "the file, then the wrapping directory (progress lines are not entries)");
    let (file, root) = (&entries[0], &entries[1]);
    assert_eq!(file.cid.version(), cid::Version::V1);
    assert!(file.size >= content.len() as u64, "{file:?}");

    // The connector only imports: what gets pinned is the cluster's decision.
    assert_eq!(client.pin_status(&root.cid).await.unwrap(), None);
    assert_eq!(client.pin_status(&file.cid).await.unwrap(), None);
    let resolved = client.resolve(&format!("/ipfs/{}/hello.txt", root.cid)).await.unwrap();
    assert_eq!(CidKey::of(&resolved), CidKey::of(&file.cid));
    assert_eq!(CidKey::of(&client.resolve(&format!("/ipfs/{}", root.cid)).await.unwrap()), CidKey::of(&root.cid));

    let err = client.resolve(&format!("/ipfs/{}/missing.txt", root.cid)).await.unwrap_err();
    assert!(matches!(err, Error::Ipfs(_)), "{err:?}");

    // Once the directory is pinned, the file is pinned only through it: unpinning the file
    // leaves nothing to unpin and is a success.
    client.pin(&root.cid, PinMode::Recursive, &[]).await.unwrap();
    assert_eq!(client.pin_status(&file.cid).await.unwrap(), None);
    client.unpin(&file.cid).await.expect("unpinning an indirectly pinned CID");
    assert_eq!(client.pin_status(&root.cid).await.unwrap(), Some(PinMode::Recursive));
}

#[tokio::test]
async fn add_rejected_by_the_daemon_is_an_ipfs_error() {
    let client = client_of(daemon());
    let request = multipart_upload("b", "x", b"data", &[("chunker", "no-such-chunker")]);
    let outcome = match client.add(request).await {
        Ok(entries) => entries.try_collect::<Vec<_>>().await.map(drop),
        Err(e) => Err(e),
    };
    assert!(matches!(outcome, Err(Error::Ipfs(_))), "{outcome:?}");
}

#[tokio::test]
async fn repo_stat_reports_usage() {
    let client = client_of(daemon());
    let stat = client.repo_stat().await.unwrap();
    assert!(stat.repo_size > 0, "{stat:?}");
    assert!(stat.storage_max > stat.repo_size, "{stat:?}");
    assert_eq!(stat.free_space(), stat.storage_max - stat.repo_size);
}

#[tokio::test]
async fn gc_removes_unpinned_blocks_and_keeps_pinned_ones() {
    let _only_gc = GC.write().await;
    let client = client_of(daemon());
    let kept = add_unpinned("kept by gc").await;
    client.pin(&kept, PinMode::Recursive, &[]).await.unwrap();
    let collected = add_unpinned("collected by gc").await;

    let keys = client.repo_gc().await.unwrap();
    // Blockstores are keyed by multihash, so removed blocks come back as raw CIDs (Kubo does the
    // same): compare multihashes.
    let removed: Vec<_> = keys.iter().filter_map(|k| k.key.as_ref()).map(|cid| *cid.hash()).collect();
    assert!(removed.contains(collected.hash()), "{keys:?}");
    assert!(!removed.contains(kept.hash()), "{keys:?}");
    assert!(keys.iter().all(|k| k.error.is_empty()), "{keys:?}");
    assert_eq!(client.pin_status(&kept).await.unwrap(), Some(PinMode::Recursive));
}

#[tokio::test]
async fn wait_ready_returns_the_daemon_identity() {
    let client = client_of(daemon());
    let id = client.wait_ready(Duration::from_secs(60)).await.unwrap();
    assert_eq!(id.id, Some(daemon().peer_id()));
    assert!(!id.addresses.is_empty());
    assert_eq!(client.id().await.unwrap().id, Some(daemon().peer_id()));
}

/// A loopback port nothing listens on (bound, then released).
fn closed_loopback_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn unreachable_daemon_is_reported_promptly() {
    let node = format!("/ip4/127.0.0.1/tcp/{}", closed_loopback_port()).parse().unwrap();
    let client = KuboClient::new(config_for(node)).unwrap();

    let started = Instant::now();
    let err = client.id().await.unwrap_err();
    assert!(matches!(err, Error::IpfsUnreachable(_)), "{err:?}");
    let err = client.pin_ls().await.unwrap_err();
    assert!(matches!(err, Error::IpfsUnreachable(_)), "{err:?}");
    let err = client.pin(&unavailable_cid(), PinMode::Recursive, &[]).await.unwrap_err();
    assert!(matches!(err, Error::IpfsUnreachable(_)), "{err:?}");
    let somewhere = format!("/ip4/127.0.0.1/tcp/4001/p2p/{}", PeerId::random()).parse().unwrap();
    let err = client.swarm_connect(&somewhere).await.unwrap_err();
    assert!(matches!(err, Error::IpfsUnreachable(_)), "{err:?}");
    let err = client.swarm_peers().await.unwrap_err();
    assert!(matches!(err, Error::IpfsUnreachable(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());

    let err = client.wait_ready(Duration::from_secs(1)).await.unwrap_err();
    assert!(matches!(&err, Error::Timeout(m) if m.contains("not ready")), "{err:?}");
}

/// Polls `swarm_peers` until it lists `peer` (true), or gives up at `deadline` (false).
async fn wait_until_connected(client: &KuboClient, peer: PeerId, deadline: Duration) -> bool {
    let until = Instant::now() + deadline;
    loop {
        if client.swarm_peers().await.unwrap().contains(&peer) {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The peering the cluster relies on for replication: the shared daemon (A) connects to a daemon
/// of this test's own (B) at the swarm address B's `id` reports, and a dial nobody answers fails
/// instead of hanging. No unpinned content is involved, so garbage collection need not be held off.
#[tokio::test]
async fn swarm_connect_links_two_daemons_and_a_refused_dial_fails() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    // Both start-ups (the shared one may already run) are slow and blocking: run them side by side.
    let (shared, own) = tokio::join!(
        tokio::task::spawn_blocking(|| IpfsDaemon::shared().map(drop)),
        tokio::task::spawn_blocking(move || IpfsDaemon::start(&repo)),
    );
    shared.unwrap().expect("shared IPFS daemon");
    let other = own.unwrap().expect("own daemon");
    let (a, b) = (client_of(daemon()), client_of(&other));

    let b_id = b.id().await.unwrap();
    let b_peer = b_id.id.expect("the daemon's peer ID");
    assert_eq!(b_peer, other.peer_id());
    let loopback_tcp = |address: &Multiaddr| {
        let parts: Vec<Protocol> = address.iter().collect();
        matches!(parts.as_slice(), [Protocol::Ip4(ip), Protocol::Tcp(_), Protocol::P2p(peer)] if ip.is_loopback() && *peer == b_peer)
    };
    let b_address = b_id.addresses.iter().find(|a| loopback_tcp(a)).cloned();
    let b_address = b_address.unwrap_or_else(|| panic!("no loopback TCP /p2p/ address in {:?}", b_id.addresses));
    let a_peer = a.id().await.unwrap().id.expect("the shared daemon's peer ID");
    assert!(!a.swarm_peers().await.unwrap().contains(&b_peer), "connected before the test connected them");

    // First, while not connected (a connect to a connected peer succeeds whatever the address).
    let nowhere: Multiaddr = format!("/ip4/127.0.0.1/tcp/{}/p2p/{b_peer}", closed_loopback_port()).parse().unwrap();
    let started = Instant::now();
    let refused = tokio::time::timeout(Duration::from_secs(25), a.swarm_connect(&nowhere))
        .await
        .unwrap_or_else(|_| panic!("swarm_connect to {nowhere} hung for 25 s"));
    assert!(matches!(refused, Err(Error::Ipfs(_))), "{refused:?} after {:?}", started.elapsed());
    assert!(!a.swarm_peers().await.unwrap().contains(&b_peer));

    a.swarm_connect(&b_address).await.unwrap_or_else(|e| panic!("connecting to {b_address}: {e}"));
    assert!(wait_until_connected(&a, b_peer, Duration::from_secs(30)).await, "A never listed B");
    assert!(wait_until_connected(&b, a_peer, Duration::from_secs(30)).await, "B never listed A");
    // Already connected: a success, and still one entry for B.
    a.swarm_connect(&b_address).await.expect("connecting again");
    assert_eq!(a.swarm_peers().await.unwrap().iter().filter(|p| **p == b_peer).count(), 1);
}

#[tokio::test]
async fn pin_of_content_nobody_has_times_out_at_the_deadline() {
    let config = KuboConfig { pin_deadline: Duration::from_secs(3), ..config_for(daemon().api_multiaddr()) };
    let client = KuboClient::new(config).unwrap();
    let cid = unavailable_cid();

    let started = Instant::now();
    let err = client.pin(&cid, PinMode::Recursive, &[]).await.unwrap_err();
    let elapsed = started.elapsed();
    assert!(matches!(&err, Error::Timeout(m) if m.contains("pin_deadline (3s)")), "{err:?}");
    assert!(elapsed >= Duration::from_millis(2900) && elapsed < Duration::from_secs(20), "took {elapsed:?}");
    assert_eq!(client.pin_status(&cid).await.unwrap(), None);
}

/// The harness's crash and restart, and a client that outlives them (its pooled connections die).
#[tokio::test]
async fn client_survives_a_daemon_crash_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let own = tokio::task::spawn_blocking({
        let repo = dir.path().join("repo");
        move || IpfsDaemon::start(&repo)
    })
    .await
    .unwrap()
    .expect("own daemon");
    let client = client_of(&own);
    let cid = parse_cid(&own.add_bytes(&unique_bytes("survives a crash")).await.unwrap()).unwrap();
    client.pin(&cid, PinMode::Recursive, &[]).await.unwrap();
    let (api, peer_id) = (own.api_multiaddr(), own.peer_id());

    own.kill9().unwrap();
    let err = client.id().await.unwrap_err();
    assert!(matches!(err, Error::IpfsUnreachable(_)), "{err:?}");

    let own = tokio::task::spawn_blocking(move || own.restart().map(|()| own)).await.unwrap().expect("restart");
    assert_eq!(own.api_multiaddr(), api, "a restart keeps the ports");
    assert_eq!(own.peer_id(), peer_id);
    client.wait_ready(Duration::from_secs(60)).await.unwrap();
    assert_eq!(client.pin_status(&cid).await.unwrap(), Some(PinMode::Recursive), "pins survive kill -9");
}
