//! The protocols every connection speaks: identify (who the peer is, where it listens), ping (keeps
//! connections checked), the cluster's request-response RPC, and its lanes (long-lived streams for
//! frequent calls, `super::lane`).

use libp2p::request_response::cbor::codec::Codec;
use libp2p::request_response::ProtocolSupport;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{identify, ping, request_response};

use super::bandwidth::Counting;
use super::{P2pConfig, Protocol};

/// Announced by identify; peers of other software show up with another version in logs.
const IDENTIFY_PROTOCOL_VERSION: &str = "/cluster-sidecar/1.0.0";

#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour<P: Protocol> {
    pub identify: identify::Behaviour,
    pub ping: ping::Behaviour,
    pub rpc: request_response::Behaviour<Counting<Codec<P::Request, P::Response>>>,
    pub lanes: libp2p_stream::Behaviour,
}

impl<P: Protocol> Behaviour<P> {
    pub fn new(keypair: &libp2p::identity::Keypair, config: &P2pConfig) -> Self {
        let identify = identify::Config::new(IDENTIFY_PROTOCOL_VERSION.to_string(), keypair.public())
            .with_agent_version(format!("cluster-sidecar/{}", env!("CARGO_PKG_VERSION")));
        // The codec's defaults (1 MiB requests, 10 MiB responses) are too small for Raft snapshot
        // chunks; exceeding them shows up as a confusing `Eof`.
        let codec = Codec::default()
            .set_request_size_maximum(config.max_request_size)
            .set_response_size_maximum(config.max_response_size);
        let codec = Counting { codec, meter: config.bandwidth.clone() };
        let rpc = request_response::Behaviour::with_codec(
            codec,
            [(P::name(), ProtocolSupport::Full)],
            request_response::Config::default().with_request_timeout(config.request_timeout),
        );
        let ping = ping::Config::new().with_interval(config.ping_interval).with_timeout(config.ping_timeout);
        Behaviour {
            identify: identify::Behaviour::new(identify),
            ping: ping::Behaviour::new(ping),
            rpc,
            lanes: libp2p_stream::Behaviour::new(),
        }
    }
}
