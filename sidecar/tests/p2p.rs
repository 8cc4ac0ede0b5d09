//! The libp2p host between peers: hosts on 127.0.0.1 (port 0) in one process, each with a handler
//! that answers `Id` with its own peer ID (and refuses anything else).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p_identity::{Keypair, PeerId};
use multiaddr::{Multiaddr, Protocol};
use sidecar::p2p::{P2pConfig, RpcHandler};
use sidecar::protocol::{ClusterProtocol, Host, RpcRequest, RpcResponse};
use sidecar::types::Id;
use sidecar::Error;

const SECRET: [u8; 32] = [7; 32];
/// Generous for a loaded 2-core machine; waits poll a condition, none sleeps.
const WAIT: Duration = Duration::from_secs(30);

/// Answers `Id` with this host's ID and a peername of `peername_len` bytes (to make big answers).
struct IdHandler {
    peer_id: PeerId,
    peername_len: usize,
}

#[async_trait::async_trait]
impl RpcHandler<ClusterProtocol> for IdHandler {
    async fn handle(&self, _from: PeerId, request: RpcRequest) -> RpcResponse {
        match request {
            RpcRequest::Id => RpcResponse::Id(Box::new(Id {
                id: Some(self.peer_id),
                peername: "x".repeat(self.peername_len),
                ..Id::default()
            })),
            other => RpcResponse::Error(format!("this test host only answers Id, not {other:?}")),
        }
    }
}

fn config(secret: [u8; 32]) -> P2pConfig {
    let mut config = P2pConfig::new(secret);
    config.listen = "/ip4/127.0.0.1/tcp/0".parse().unwrap();
    config.dial_timeout = Duration::from_secs(5);
    config
}

async fn unserved_host(config: &P2pConfig) -> Host {
    Host::start(Keypair::generate_ed25519(), config).await.expect("host starts")
}

async fn host_with(config: &P2pConfig, peername_len: usize) -> Host {
    let host = unserved_host(config).await;
    host.serve(Arc::new(IdHandler { peer_id: host.peer_id(), peername_len })).await.unwrap();
    host
}

async fn host(secret: [u8; 32]) -> Host {
    host_with(&config(secret), 8).await
}

/// The host's one listen address with `/p2p/<id>`.
async fn address_of(host: &Host) -> Multiaddr {
    let addresses = host.listen_addrs().await.unwrap();
    assert_eq!(addresses.len(), 1, "{addresses:?}");
    addresses[0].clone().with(Protocol::P2p(host.peer_id()))
}

fn id_in(response: RpcResponse) -> Id {
    match response {
        RpcResponse::Id(id) => *id,
        other => panic!("expected an Id, got {other:?}"),
    }
}

async fn wait_for<F, Fut>(what: &str, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let started = Instant::now();
    loop {
        let last = match probe().await {
            Ok(()) => return,
            Err(seen) => seen,
        };
        assert!(started.elapsed() < WAIT, "timed out waiting for {what}; last seen: {last}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn hosts_with_the_same_secret_connect_identify_and_call_each_other() {
    let (a, b) = (host(SECRET).await, host(SECRET).await);
    assert_eq!(b.dial(address_of(&a).await).await.unwrap(), a.peer_id());
    assert_eq!(b.connected_peers().await.unwrap(), vec![a.peer_id()]);
    wait_for("a to see b connected", || async {
        let peers = a.connected_peers().await.unwrap();
        if peers == vec![b.peer_id()] {
            Ok(())
        } else {
            Err(format!("{peers:?}"))
        }
    })
    .await;

    // Identify: each learns where the other listens.
    let b_listens = b.listen_addrs().await.unwrap();
    wait_for("a to identify b", || async {
        let seen = a.peer_addrs(b.peer_id()).await.unwrap();
        if seen == b_listens {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    })
    .await;

    let id = id_in(b.request(a.peer_id(), RpcRequest::Id).await.unwrap());
    assert_eq!(id.id, Some(a.peer_id()));
    // The callee calls back over the same connection.
    let id = id_in(a.request(b.peer_id(), RpcRequest::Id).await.unwrap());
    assert_eq!(id.id, Some(b.peer_id()));

    // Dialling a peer already connected answers at once.
    assert_eq!(b.dial(address_of(&a).await).await.unwrap(), a.peer_id());
}

#[tokio::test]
async fn a_host_with_another_secret_can_neither_connect_nor_call() {
    let a = host(SECRET).await;
    let intruder_config = config([8; 32]);
    let intruder = host_with(&intruder_config, 8).await;

    let started = Instant::now();
    let err = intruder.dial(address_of(&a).await).await.unwrap_err();
    assert!(matches!(err, Error::PeerUnreachable(_)), "{err:?}");
    assert!(started.elapsed() < intruder_config.dial_timeout + Duration::from_secs(5), "{:?}", started.elapsed());

    // The request dials again through the address remembered from the dial, and fails the same way.
    let err = intruder.request(a.peer_id(), RpcRequest::Id).await.unwrap_err();
    assert!(matches!(err, Error::PeerUnreachable(_)), "{err:?}");
    assert!(intruder.connected_peers().await.unwrap().is_empty());
    assert!(a.connected_peers().await.unwrap().is_empty());
    assert!(a.peer_addrs(intruder.peer_id()).await.unwrap().is_empty(), "never identified");
}

#[tokio::test]
async fn unknown_and_unreachable_peers_are_reported_as_unreachable() {
    let a = host(SECRET).await;
    let err = a.request(PeerId::random(), RpcRequest::Id).await.unwrap_err();
    assert!(matches!(err, Error::PeerUnreachable(_)), "{err:?}");

    // A stopped host: its port no longer answers.
    let gone = host(SECRET).await;
    let address = address_of(&gone).await;
    gone.shutdown().await;
    let err = a.dial(address).await.unwrap_err();
    assert!(matches!(err, Error::PeerUnreachable(_)), "{err:?}");
    let err = a.request(gone.peer_id(), RpcRequest::Id).await.unwrap_err();
    assert!(matches!(err, Error::PeerUnreachable(_)), "{err:?}");
    assert!(matches!(gone.listen_addrs().await, Err(Error::ShuttingDown)));
}

#[tokio::test]
async fn a_host_not_serving_yet_answers_with_an_error() {
    let a = host(SECRET).await;
    let unserved = unserved_host(&config(SECRET)).await;
    a.dial(address_of(&unserved).await).await.unwrap();
    let err = a.request(unserved.peer_id(), RpcRequest::Id).await.unwrap_err();
    assert!(matches!(&err, Error::Remote { message, .. } if message.contains("not serving")), "{err:?}");
}

#[tokio::test]
async fn large_responses_go_through() {
    const SIZE: usize = 5 * 1024 * 1024;
    let a = host(SECRET).await;
    let big = host_with(&config(SECRET), SIZE).await;
    a.dial(address_of(&big).await).await.unwrap();
    let id = id_in(a.request(big.peer_id(), RpcRequest::Id).await.unwrap());
    assert_eq!(id.peername.len(), SIZE);

    // Beyond the configured limit the call fails instead of hanging.
    let mut small = config(SECRET);
    small.max_response_size = 1024 * 1024;
    let limited = host_with(&small, 8).await;
    limited.dial(address_of(&big).await).await.unwrap();
    assert!(limited.request(big.peer_id(), RpcRequest::Id).await.is_err());
}

/// The host's one listen address, without its peer ID.
async fn listen_addr_of(host: &Host) -> Multiaddr {
    host.listen_addrs().await.unwrap().remove(0)
}

#[tokio::test]
async fn a_lane_carries_call_after_call_and_outlives_a_restart_of_its_peer() {
    let a_config = config(SECRET);
    let a = host_with(&a_config, 8).await;
    let b_key = Keypair::generate_ed25519();
    let b_config = config(SECRET);
    let b = Host::start(b_key.clone(), &b_config).await.unwrap();
    b.serve(Arc::new(IdHandler { peer_id: b.peer_id(), peername_len: 8 })).await.unwrap();
    let b_addr = listen_addr_of(&b).await;

    // Dialed through the lane's own addresses: the hosts were never connected.
    let mut lane = a.lane(b.peer_id(), vec![b_addr.clone()]);
    for _ in 0..200 {
        assert_eq!(id_in(lane.call(RpcRequest::Id).await.unwrap()).id, Some(b.peer_id()));
    }
    let counted = a_config.bandwidth.by_protocol();
    let lane_bytes = counted.get("/cluster-sidecar/rpc/1.0.0/lane").map(|b| (b.total_out, b.total_in));
    assert!(lane_bytes.is_some_and(|(out, into)| out > 0 && into > out), "{counted:?}");

    // The peer restarts on the same address: the lane's stream died with the old connection,
    // and the next call goes through a new one.
    b.shutdown().await;
    wait_for("a to see b gone", || async {
        let peers = a.connected_peers().await.unwrap();
        if peers.is_empty() {
            Ok(())
        } else {
            Err(format!("{peers:?}"))
        }
    })
    .await;
    let mut b_config = b_config;
    b_config.listen = b_addr;
    let b = Host::start(b_key, &b_config).await.unwrap();
    b.serve(Arc::new(IdHandler { peer_id: b.peer_id(), peername_len: 8 })).await.unwrap();
    assert_eq!(id_in(lane.call(RpcRequest::Id).await.unwrap()).id, Some(b.peer_id()));
}

#[tokio::test]
async fn a_lane_call_over_the_size_limit_fails_and_the_next_call_goes_through() {
    let a = host(SECRET).await;
    let mut small = config(SECRET);
    small.max_request_size = 1024;
    let b = host_with(&small, 8).await;
    let mut lane = a.lane(b.peer_id(), vec![listen_addr_of(&b).await]);
    assert_eq!(id_in(lane.call(RpcRequest::Id).await.unwrap()).id, Some(b.peer_id()));

    let oversized = RpcRequest::Join { addrs: vec!["x".repeat(4096)] };
    let err = lane.call(oversized).await.unwrap_err();
    // Sent whole, so the peer may have handled it, as far as the caller can tell.
    assert!(matches!(err, Error::Io(_)), "{err:?}");
    assert_eq!(id_in(lane.call(RpcRequest::Id).await.unwrap()).id, Some(b.peer_id()));
}

#[tokio::test]
async fn a_lane_to_a_stopped_or_unknown_peer_reports_it_unreachable() {
    let a = host(SECRET).await;
    let gone = host(SECRET).await;
    let address = listen_addr_of(&gone).await;
    gone.shutdown().await;
    let err = a.lane(gone.peer_id(), vec![address]).call(RpcRequest::Id).await.unwrap_err();
    assert!(matches!(err, Error::PeerUnreachable(_)), "{err:?}");
    let err = a.lane(PeerId::random(), Vec::new()).call(RpcRequest::Id).await.unwrap_err();
    assert!(matches!(err, Error::PeerUnreachable(_)), "{err:?}");
}

/// A peer of a version from before lanes, on the same transport: ping and request-response only.
#[derive(libp2p::swarm::NetworkBehaviour)]
struct PeerBeforeLanes {
    ping: libp2p::ping::Behaviour,
    rpc: libp2p::request_response::cbor::Behaviour<RpcRequest, RpcResponse>,
}

/// A bare libp2p swarm on the cluster's transport (TCP, the private network, Noise, yamux), with
/// `behaviour`: a stand-in for peers the host must cope with.
fn bare_swarm<B: libp2p::swarm::NetworkBehaviour>(secret: [u8; 32], behaviour: B) -> libp2p::Swarm<B> {
    use libp2p::core::upgrade::Version;
    use libp2p::pnet::{PnetConfig, PreSharedKey};
    use libp2p::{noise, tcp, yamux, Transport};

    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_other_transport(|key| {
            let psk = PreSharedKey::new(secret);
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
                tcp::tokio::Transport::new(tcp::Config::default())
                    .and_then(move |socket, _| PnetConfig::new(psk).handshake(socket))
                    .upgrade(Version::V1)
                    .authenticate(noise::Config::new(key)?)
                    .multiplex(yamux::Config::default()),
            )
        })
        .unwrap()
        .with_behaviour(|_| behaviour)
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

/// Starts such a peer; it answers `Id` until the test ends. Its ID and listen address.
async fn peer_before_lanes(secret: [u8; 32]) -> (PeerId, Multiaddr) {
    use libp2p::futures::StreamExt;
    use libp2p::request_response::{self, ProtocolSupport};
    use libp2p::swarm::SwarmEvent;

    let mut swarm = bare_swarm(
        secret,
        PeerBeforeLanes {
            ping: libp2p::ping::Behaviour::default(),
            rpc: request_response::cbor::Behaviour::new(
                [(libp2p::StreamProtocol::new("/cluster-sidecar/rpc/1.0.0"), ProtocolSupport::Full)],
                request_response::Config::default(),
            ),
        },
    );
    swarm.listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap()).unwrap();
    let address = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            break address;
        }
    };
    let peer = *swarm.local_peer_id();
    tokio::spawn(async move {
        loop {
            let event = swarm.select_next_some().await;
            if let SwarmEvent::Behaviour(PeerBeforeLanesEvent::Rpc(request_response::Event::Message {
                message: request_response::Message::Request { channel, .. },
                ..
            })) = event
            {
                let id = Id { id: Some(peer), peername: "before lanes".into(), ..Id::default() };
                let _ = swarm.behaviour_mut().rpc.send_response(channel, RpcResponse::Id(Box::new(id)));
            }
        }
    });
    (peer, address)
}

#[tokio::test]
async fn a_lane_to_a_peer_from_before_lanes_calls_it_through_request_response() {
    let a = host(SECRET).await;
    let (old, address) = peer_before_lanes(SECRET).await;
    let mut lane = a.lane(old, vec![address]);
    for _ in 0..3 {
        let id = id_in(lane.call(RpcRequest::Id).await.unwrap());
        assert_eq!((id.id, id.peername.as_str()), (Some(old), "before lanes"));
    }
}

#[tokio::test]
async fn a_lane_to_a_host_not_serving_yet_is_answered_with_an_error() {
    let a = host(SECRET).await;
    let unserved = unserved_host(&config(SECRET)).await;
    let mut lane = a.lane(unserved.peer_id(), vec![listen_addr_of(&unserved).await]);
    let err = lane.call(RpcRequest::Id).await.unwrap_err();
    assert!(matches!(&err, Error::Remote { message, .. } if message.contains("not serving")), "{err:?}");
    unserved.serve(Arc::new(IdHandler { peer_id: unserved.peer_id(), peername_len: 8 })).await.unwrap();
    assert_eq!(id_in(lane.call(RpcRequest::Id).await.unwrap()).id, Some(unserved.peer_id()));
}

#[tokio::test]
async fn lanes_opened_all_at_once_are_each_answered_or_never_handled() {
    let target = host(SECRET).await;
    let address = listen_addr_of(&target).await;
    let callers = futures::future::join_all((0..3).map(|_| host(SECRET))).await;
    // Every caller opens many lanes to the same host at the same moment. libp2p drops an inbound
    // stream that arrives while the previous one is being handed over: such a call must fail as
    // unreachable (never handled, safe to send again), never as a call that may have been handled.
    let lanes = callers.iter().flat_map(|caller| (0..8).map(|_| caller.lane(target.peer_id(), vec![address.clone()])));
    let answered = futures::future::join_all(lanes.map(|mut lane| async move {
        let started = Instant::now();
        loop {
            match lane.call(RpcRequest::Id).await {
                Ok(response) => return id_in(response).id,
                Err(Error::PeerUnreachable(why)) => {
                    assert!(started.elapsed() < WAIT, "still unreachable after {WAIT:?}: {why}");
                    // A caller's back-off before sending again, as the writer's.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("a call failed as if it might have been handled: {e:?}"),
            }
        }
    }))
    .await;
    assert!(answered.iter().all(|id| *id == Some(target.peer_id())), "{answered:?}");
}

#[tokio::test]
async fn bad_frames_on_a_lane_close_that_lane_and_leave_the_host_serving() {
    use futures::{AsyncReadExt, AsyncWriteExt};
    use libp2p::futures::StreamExt;

    let mut small = config(SECRET);
    small.max_request_size = 64 * 1024;
    let target = host_with(&small, 8).await;
    let address = listen_addr_of(&target).await;

    let mut swarm = bare_swarm(SECRET, libp2p_stream::Behaviour::new());
    let mut control = swarm.behaviour().new_control();
    swarm.dial(address.clone().with(Protocol::P2p(target.peer_id()))).unwrap();
    tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    let lane = libp2p::StreamProtocol::new("/cluster-sidecar/rpc/1.0.0/lane");
    let mut id_frame = cbor4ii::serde::to_vec(Vec::new(), &RpcRequest::Id).unwrap();
    id_frame.splice(0..0, (id_frame.len() as u32).to_be_bytes());
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("a length over the limit", u32::MAX.to_be_bytes().to_vec()),
        ("a length just over the limit", (64 * 1024 + 1u32).to_be_bytes().to_vec()),
        ("a frame that does not decode", [&5u32.to_be_bytes()[..], b"\xff\xff\xff\xff\xff"].concat()),
        ("a frame cut short", [&100u32.to_be_bytes()[..], &[0u8; 10]].concat()),
        ("half a length prefix", vec![0, 0]),
        ("a valid call then garbage", [&id_frame[..], b"garbage!"].concat()),
    ];
    for (what, bytes) in bad {
        let mut stream = control.open_stream(target.peer_id(), lane.clone()).await.unwrap();
        stream.write_all(&bytes).await.unwrap();
        stream.close().await.unwrap();
        // The host takes the lane, answers what was whole, then closes it: read to the end.
        let mut read = Vec::new();
        let ended = tokio::time::timeout(WAIT, stream.read_to_end(&mut read)).await;
        assert!(ended.is_ok(), "{what}: the host kept the lane open");
        assert_eq!(read.first(), Some(&1), "{what}: the lane was not taken");
        // Only the whole call is answered: a frame after the accept byte.
        let answered = read.len() > 1;
        assert_eq!(answered, what.starts_with("a valid call"), "{what}: {} bytes came back", read.len());
    }
    // Slow callers: lanes opened and left silent do not hold up anyone else.
    let mut silent = Vec::new();
    for _ in 0..50 {
        let mut stream = control.open_stream(target.peer_id(), lane.clone()).await.unwrap();
        stream.write_all(&[0]).await.unwrap();
        stream.flush().await.unwrap();
        silent.push(stream);
    }
    let caller = host(SECRET).await;
    let mut good = caller.lane(target.peer_id(), vec![address]);
    assert_eq!(id_in(good.call(RpcRequest::Id).await.unwrap()).id, Some(target.peer_id()));
    drop(silent);
}
