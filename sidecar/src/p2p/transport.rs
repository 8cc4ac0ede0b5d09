//! The swarm: TCP, then the private network handshake keyed by the cluster secret, then noise and
//! yamux. A peer without the secret cannot complete a connection, so it can neither call nor be
//! called. No QUIC: it cannot carry a private network.

use futures::future::Either;
use libp2p::core::upgrade::Version;
use libp2p::pnet::{PnetConfig, PreSharedKey};
use libp2p::{noise, tcp, yamux, Swarm, SwarmBuilder, Transport};

use super::behaviour::Behaviour;
use super::{P2pConfig, Protocol};
use crate::{Error, Result};

/// Cluster connections carry Raft heartbeats and long calls: keep them open while idle.
const IDLE_CONNECTION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3600);

pub(crate) fn build_swarm<P: Protocol>(
    keypair: libp2p::identity::Keypair,
    config: &P2pConfig,
) -> Result<Swarm<Behaviour<P>>> {
    let psk = PreSharedKey::new(config.secret);
    let faults = config.faults.clone();
    let swarm = SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_other_transport(|keypair| {
            let noise = noise::Config::new(keypair)?;
            let transport = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
                .and_then(move |socket, _| {
                    let socket = match &faults {
                        Some(faults) => Either::Right(faults.relay(socket.0)),
                        None => Either::Left(socket),
                    };
                    PnetConfig::new(psk).handshake(socket)
                })
                .upgrade(Version::V1)
                .authenticate(noise)
                .multiplex(yamux::Config::default());
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(transport)
        })
        .map_err(|e| Error::Config(format!("libp2p transport: {e}")))?
        // `/dns4/...` addresses, as Kubernetes services give them.
        .with_dns()
        .map_err(|e| Error::Config(format!("libp2p DNS resolver: {e}")))?
        .with_behaviour(|keypair| Behaviour::new(keypair, config))
        .unwrap_or_else(|never| match never {})
        // Lazy protocol negotiation: a request travels with its stream's protocol proposal
        // instead of after its confirmation, one round trip per call instead of two (Raft's
        // replication calls must finish within a heartbeat interval, on slow links too).
        .with_swarm_config(|c| {
            c.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT)
                .with_substream_upgrade_protocol_override(Version::V1Lazy)
        })
        // Bounds TCP connect plus handshakes: with a wrong secret the handshake may never finish.
        .with_connection_timeout(config.dial_timeout)
        .build();
    Ok(swarm)
}
