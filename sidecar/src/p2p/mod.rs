//! The libp2p host that connects cluster peers: a private network keyed by the cluster secret, and
//! request-response RPC between peers in any [`Protocol`] (the cluster's is `crate::protocol`:
//! Raft's messages, forwarded writes, cluster-wide views), and [`Lane`]s for frequent calls.
//!
//! [`P2p`] is a cheap handle; one task owns the swarm and serves the handles' commands.

pub mod bandwidth;
mod behaviour;
mod event_loop;
mod faults;
mod lane;
mod transport;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libp2p::identity::Keypair;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};

use event_loop::Command;
pub use faults::NetFaults;
pub use lane::Lane;

use crate::{Error, Result};

/// The reference's cluster port.
pub const DEFAULT_LISTEN: &str = "/ip4/0.0.0.0/tcp/9096";

/// How the host listens and talks to other peers.
#[derive(Clone, Debug)]
pub struct P2pConfig {
    pub listen: Multiaddr,
    /// The cluster secret: the private network's pre-shared key, the same on every peer.
    pub secret: [u8; 32],
    /// How long a call may wait for its answer (Raft snapshot transfers take a while).
    pub request_timeout: Duration,
    /// How long connecting (TCP and handshakes) may take before the peer counts as unreachable.
    /// Short: a peer cut off keeps being dialed, and after the cut heals the next dial must start
    /// soon (a TCP connect across a cut waits ever longer between its attempts).
    pub dial_timeout: Duration,
    /// How often each connection is pinged; a connection whose ping gets no answer within
    /// `ping_timeout` is closed, so that requests use a new one rather than a connection that
    /// stalled (a cut without a reset, a peer that was frozen).
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    pub max_request_size: u64,
    pub max_response_size: u64,
    /// Emulated network faults (tests and benchmarks); `None` in production.
    pub faults: Option<NetFaults>,
    /// Counts the bytes of the RPC streams, per protocol (`GET /health/bandwidth`).
    pub bandwidth: bandwidth::BandwidthMeter,
}

impl P2pConfig {
    pub fn new(secret: [u8; 32]) -> Self {
        P2pConfig {
            listen: DEFAULT_LISTEN.parse().expect("valid default address"),
            secret,
            request_timeout: Duration::from_secs(60),
            dial_timeout: Duration::from_secs(2),
            ping_interval: Duration::from_millis(250),
            ping_timeout: Duration::from_secs(2),
            max_request_size: 16 * 1024 * 1024,
            max_response_size: 64 * 1024 * 1024,
            faults: None,
            bandwidth: bandwidth::BandwidthMeter::default(),
        }
    }
}

/// Parses the cluster secret: 32 bytes written as 64 hex digits (the reference's format).
pub fn parse_secret(text: &str) -> Result<[u8; 32]> {
    let text = text.trim();
    let invalid = || Error::Config("the cluster secret must be 32 bytes written as 64 hex digits".into());
    if text.len() != 64 || !text.is_ascii() {
        return Err(invalid());
    }
    let mut secret = [0u8; 32];
    for (byte, pair) in secret.iter_mut().zip(text.as_bytes().chunks(2)) {
        let pair = std::str::from_utf8(pair).map_err(|_| invalid())?;
        *byte = u8::from_str_radix(pair, 16).map_err(|_| invalid())?;
    }
    Ok(secret)
}

/// How many bytes `message` takes on the wire, encoded as the RPC codec does (CBOR), without
/// keeping the encoding.
pub fn encoded_len<T: Serialize>(message: &T) -> u64 {
    struct Counter(u64);
    impl std::io::Write for Counter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len() as u64;
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Counting cannot fail, and neither can serializing the protocol's plain data types; if one
    // ever did, the codec would fail on it too, and the count so far is all there is to tell.
    let _ = cbor4ii::serde::to_writer(&mut counter, message);
    counter.0
}

/// What a host carries: its messages, CBOR-encoded, and how an answer that reports a failure
/// becomes an error.
pub trait Protocol: Send + Sync + 'static {
    type Request: Serialize + DeserializeOwned + fmt::Debug + Send + 'static;
    type Response: Serialize + DeserializeOwned + fmt::Debug + Send + 'static;

    /// The protocol's name on the wire.
    fn name() -> StreamProtocol;

    /// The answer `peer` gave, or the error it reported in it.
    fn into_result(peer: PeerId, response: Self::Response) -> Result<Self::Response>;

    /// The answer of a host that serves no handler yet.
    fn not_serving() -> Self::Response;
}

/// Answers the requests other peers send to this one.
#[async_trait::async_trait]
pub trait RpcHandler<P: Protocol>: Send + Sync + 'static {
    async fn handle(&self, from: PeerId, request: P::Request) -> P::Response;
}

/// Handle to the running host; cheap to clone.
pub struct P2p<P: Protocol> {
    peer_id: PeerId,
    commands: mpsc::Sender<Command<P>>,
    /// When each peer last answered a ping.
    heard: Heard,
    ping_interval: Duration,
    max_request_size: u64,
    max_response_size: u64,
    /// Opens lanes.
    streams: libp2p_stream::Control,
    /// The handler of inbound lane calls (the event loop holds the one of request-response calls).
    lane_handler: Arc<watch::Sender<Option<Arc<dyn RpcHandler<P>>>>>,
    bandwidth: bandwidth::BandwidthMeter,
}

/// When each peer last answered a ping, shared by the event loop (which writes it) and the handles.
pub(crate) type Heard = Arc<Mutex<HashMap<PeerId, Instant>>>;

impl<P: Protocol> Clone for P2p<P> {
    fn clone(&self) -> Self {
        P2p {
            peer_id: self.peer_id,
            commands: self.commands.clone(),
            heard: self.heard.clone(),
            ping_interval: self.ping_interval,
            max_request_size: self.max_request_size,
            max_response_size: self.max_response_size,
            streams: self.streams.clone(),
            lane_handler: self.lane_handler.clone(),
            bandwidth: self.bandwidth.clone(),
        }
    }
}

impl<P: Protocol> P2p<P> {
    /// Starts listening on `config.listen` and returns once the first address is bound. Until
    /// [`P2p::serve`] is called, inbound requests are answered with an error.
    pub async fn start(keypair: Keypair, config: &P2pConfig) -> Result<P2p<P>> {
        let peer_id = keypair.public().to_peer_id();
        let mut swarm = transport::build_swarm::<P>(keypair, config)?;
        swarm
            .listen_on(config.listen.clone())
            .map_err(|e| Error::Config(format!("cannot listen on {}: {e}", config.listen)))?;
        // TCP binds at once; the address (and the port chosen for port 0) arrives as an event.
        loop {
            match futures::StreamExt::select_next_some(&mut swarm).await {
                SwarmEvent::NewListenAddr { address, .. } => {
                    tracing::info!(%address, %peer_id, "cluster peer-to-peer listening");
                    break;
                }
                SwarmEvent::ListenerError { error, .. } => {
                    return Err(Error::Config(format!("cannot listen on {}: {error}", config.listen)))
                }
                SwarmEvent::ListenerClosed { reason, .. } => {
                    return Err(Error::Config(format!("cannot listen on {}: {reason:?}", config.listen)))
                }
                _ => {}
            }
        }
        let mut streams = swarm.behaviour().lanes.new_control();
        let incoming = streams.accept(lane::protocol_name::<P>()).expect("the lane protocol is registered once");
        let (lane_handler, serving) = watch::channel(None);
        let bandwidth = config.bandwidth.clone();
        tokio::spawn(lane::serve_lanes(incoming, serving, config.max_request_size, bandwidth.clone()));
        let (commands, receiver) = mpsc::channel(256);
        let heard = Heard::default();
        tokio::spawn(event_loop::EventLoop::<P>::new(swarm, receiver, heard.clone()).run());
        Ok(P2p {
            peer_id,
            commands,
            heard,
            ping_interval: config.ping_interval,
            max_request_size: config.max_request_size,
            max_response_size: config.max_response_size,
            streams,
            lane_handler: Arc::new(lane_handler),
            bandwidth,
        })
    }

    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Sends inbound requests to `handler` from now on.
    pub async fn serve(&self, handler: Arc<dyn RpcHandler<P>>) -> Result<()> {
        self.lane_handler.send_replace(Some(handler.clone()));
        self.commands.send(Command::Serve { handler }).await.map_err(|_| Error::ShuttingDown)
    }

    /// The addresses the host listens on (with the port chosen when port 0 was asked for).
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>> {
        self.call(|reply| Command::ListenAddrs { reply }).await
    }

    /// Connects to `address`; resolves with the peer's ID once connected. A peer that cannot be
    /// reached in time, or that does not share the cluster secret, is [`Error::PeerUnreachable`].
    pub async fn dial(&self, address: Multiaddr) -> Result<PeerId> {
        self.call(|reply| Command::Dial { address, reply }).await?
    }

    /// Connects to `peer` through `addrs` in the background, unless connected or connecting.
    pub async fn connect(&self, peer: PeerId, addrs: Vec<Multiaddr>) -> Result<()> {
        self.commands.send(Command::Connect { peer, addrs }).await.map_err(|_| Error::ShuttingDown)
    }

    /// The most bytes a request may take on the wire: peers drop longer ones unread.
    pub fn max_request_size(&self) -> u64 {
        self.max_request_size
    }

    /// How often every connection is pinged.
    pub fn ping_interval(&self) -> Duration {
        self.ping_interval
    }

    /// The peers that answered a ping within the last `within`: those this host can reach now.
    pub fn heard_within(&self, within: Duration) -> HashSet<PeerId> {
        let heard = self.heard.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        heard.iter().filter(|(_, at)| at.elapsed() <= within).map(|(peer, _)| *peer).collect()
    }

    pub async fn connected_peers(&self) -> Result<Vec<PeerId>> {
        self.call(|reply| Command::ConnectedPeers { reply }).await
    }

    /// The listen addresses `peer` announced (identify); empty until it has been identified.
    pub async fn peer_addrs(&self, peer: PeerId) -> Result<Vec<Multiaddr>> {
        self.call(|reply| Command::PeerAddrs { peer, reply }).await
    }

    /// Calls `peer`, connecting first when needed. An error the peer reports comes back as an
    /// error (see [`Protocol::into_result`]); an unreachable peer as [`Error::PeerUnreachable`].
    pub async fn request(&self, peer: PeerId, request: P::Request) -> Result<P::Response> {
        self.request_via(peer, Vec::new(), request).await
    }

    /// [`P2p::request`], dialing through `addrs` when not connected (and remembering them).
    pub async fn request_via(&self, peer: PeerId, addrs: Vec<Multiaddr>, request: P::Request) -> Result<P::Response> {
        let response = self.call(|reply| Command::Request { peer, addrs, request: Box::new(request), reply }).await??;
        P::into_result(peer, response)
    }

    /// A lane to `peer` (dialing through `addrs` when not connected): calls made one after
    /// another on one stream. Opened at its first call.
    pub fn lane(&self, peer: PeerId, addrs: Vec<Multiaddr>) -> Lane<P> {
        Lane::new(self.clone(), peer, addrs)
    }

    /// Adds `addrs` to those the host dials `peer` through.
    async fn remember_addrs(&self, peer: PeerId, addrs: Vec<Multiaddr>) -> Result<()> {
        self.call(|reply| Command::RememberAddrs { peer, addrs, reply }).await
    }

    /// Closes every connection and stops the host; later calls fail with `ShuttingDown`.
    pub async fn shutdown(&self) {
        let _ = self.call(|reply| Command::Shutdown { reply }).await;
    }

    async fn call<T>(&self, command: impl FnOnce(oneshot::Sender<T>) -> Command<P>) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(command(reply)).await.map_err(|_| Error::ShuttingDown)?;
        answer.await.map_err(|_| Error::ShuttingDown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_len_is_the_codec_encoding_length() {
        let message = (vec!["a pin name".to_string(); 3], 7u64, Some(b"bytes".to_vec()));
        let encoded = cbor4ii::serde::to_vec(Vec::new(), &message).unwrap();
        assert_eq!(encoded_len(&message), encoded.len() as u64);
    }

    #[test]
    fn secret_is_64_hex_digits() {
        let text = "00ff10AB".repeat(8);
        let secret = parse_secret(&format!("{text}\n")).unwrap();
        assert_eq!(&secret[..4], &[0x00, 0xff, 0x10, 0xab]);
        assert_eq!(secret, parse_secret(&text.to_lowercase()).unwrap());
        for bad in ["", "abc", &"0".repeat(63), &"0".repeat(66), &"g".repeat(64), &"é".repeat(32)] {
            let err = parse_secret(bad).unwrap_err().to_string();
            assert!(err.contains("64 hex digits"), "{bad:?}: {err}");
        }
    }
}
