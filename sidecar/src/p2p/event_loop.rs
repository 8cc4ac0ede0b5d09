//! The one task that owns the swarm. Handles send it [`Command`]s with a oneshot for the answer
//! (rust-libp2p's file-sharing example pattern); inbound requests run on their own tasks and come
//! back here to be answered.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use libp2p::request_response::{self, OutboundFailure, OutboundRequestId, ResponseChannel};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{identify, multiaddr, ping, Multiaddr, PeerId, Swarm};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use super::behaviour::{Behaviour, BehaviourEvent};
use super::{Heard, Protocol, RpcHandler};
use crate::{Error, Result};

/// Where the answer to an outbound request goes.
type Reply<P> = oneshot::Sender<Result<<P as Protocol>::Response>>;

pub(crate) enum Command<P: Protocol> {
    ListenAddrs {
        reply: oneshot::Sender<Vec<Multiaddr>>,
    },
    Dial {
        address: Multiaddr,
        reply: oneshot::Sender<Result<PeerId>>,
    },
    Connect {
        peer: PeerId,
        addrs: Vec<Multiaddr>,
    },
    ConnectedPeers {
        reply: oneshot::Sender<Vec<PeerId>>,
    },
    RememberAddrs {
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        reply: oneshot::Sender<()>,
    },
    PeerAddrs {
        peer: PeerId,
        reply: oneshot::Sender<Vec<Multiaddr>>,
    },
    Request {
        peer: PeerId,
        /// Addresses to dial the peer through when not connected (learnt for later requests too).
        addrs: Vec<Multiaddr>,
        /// Boxed: Raft's append requests make it much larger than every other command.
        request: Box<P::Request>,
        reply: Reply<P>,
    },
    Serve {
        handler: Arc<dyn RpcHandler<P>>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

pub(crate) struct EventLoop<P: Protocol> {
    swarm: Swarm<Behaviour<P>>,
    commands: mpsc::Receiver<Command<P>>,
    handler: Option<Arc<dyn RpcHandler<P>>>,
    /// Inbound requests being handled, each with the channel its answer goes back on.
    inbound: JoinSet<(ResponseChannel<P::Response>, P::Response)>,
    dials: HashMap<ConnectionId, oneshot::Sender<Result<PeerId>>>,
    requests: HashMap<OutboundRequestId, (PeerId, Reply<P>)>,
    /// The listen addresses each peer announced through identify.
    identified: HashMap<PeerId, Vec<Multiaddr>>,
    heard: Heard,
}

impl<P: Protocol> EventLoop<P> {
    pub fn new(swarm: Swarm<Behaviour<P>>, commands: mpsc::Receiver<Command<P>>, heard: Heard) -> Self {
        EventLoop {
            swarm,
            commands,
            handler: None,
            inbound: JoinSet::new(),
            dials: HashMap::new(),
            requests: HashMap::new(),
            identified: HashMap::new(),
            heard,
        }
    }

    /// Runs until [`Command::Shutdown`] or until every handle is dropped; connections close with it.
    pub async fn run(mut self) {
        let shutdown_reply = loop {
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(command) => if let ControlFlow::Break(reply) = self.on_command(command) {
                        break Some(reply);
                    },
                    None => break None,
                },
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                Some(answered) = self.inbound.join_next(), if !self.inbound.is_empty() => match answered {
                    Ok((channel, response)) => {
                        if self.swarm.behaviour_mut().rpc.send_response(channel, response).is_err() {
                            tracing::debug!("the caller went away before the answer was sent");
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "an RPC handler failed; the caller gets no answer"),
                },
            }
        };
        drop(self);
        tracing::debug!("libp2p host stopped");
        if let Some(reply) = shutdown_reply {
            let _ = reply.send(());
        }
    }

    /// Breaks with the reply of [`Command::Shutdown`].
    fn on_command(&mut self, command: Command<P>) -> ControlFlow<oneshot::Sender<()>> {
        match command {
            Command::ListenAddrs { reply } => {
                let _ = reply.send(self.swarm.listeners().cloned().collect());
            }
            Command::Dial { address, reply } => self.dial(address, reply),
            Command::Connect { peer, addrs } => {
                let opts = DialOpts::peer_id(peer).addresses(addrs).condition(PeerCondition::DisconnectedAndNotDialing);
                if let Err(e) = self.swarm.dial(opts.build()) {
                    tracing::trace!(%peer, error = %e, "not connecting");
                }
            }
            Command::ConnectedPeers { reply } => {
                let _ = reply.send(self.swarm.connected_peers().copied().collect());
            }
            Command::RememberAddrs { peer, addrs, reply } => {
                for address in addrs {
                    self.swarm.add_peer_address(peer, address);
                }
                let _ = reply.send(());
            }
            Command::PeerAddrs { peer, reply } => {
                let _ = reply.send(self.identified.get(&peer).cloned().unwrap_or_default());
            }
            Command::Request { peer, addrs, request, reply } => {
                for address in addrs {
                    self.swarm.add_peer_address(peer, address);
                }
                // Dials the peer first when not connected, through the addresses known for it.
                let id = self.swarm.behaviour_mut().rpc.send_request(&peer, *request);
                self.requests.insert(id, (peer, reply));
            }
            Command::Serve { handler } => self.handler = Some(handler),
            Command::Shutdown { reply } => return ControlFlow::Break(reply),
        }
        ControlFlow::Continue(())
    }

    fn dial(&mut self, address: Multiaddr, reply: oneshot::Sender<Result<PeerId>>) {
        let opts = match address.iter().last() {
            Some(multiaddr::Protocol::P2p(peer)) => {
                if self.swarm.is_connected(&peer) {
                    let _ = reply.send(Ok(peer));
                    return;
                }
                // Remembered so that later requests can dial the peer again after a connection drops.
                self.swarm.add_peer_address(peer, address.clone());
                DialOpts::peer_id(peer).addresses(vec![address.clone()]).condition(PeerCondition::Always).build()
            }
            _ => DialOpts::unknown_peer_id().address(address.clone()).build(),
        };
        let connection = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => {
                self.dials.insert(connection, reply);
            }
            Err(e) => {
                let _ = reply.send(Err(Error::PeerUnreachable(format!("{address}: {e}"))));
            }
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent<P>>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => tracing::info!(%address, "cluster peer-to-peer listening"),
            SwarmEvent::ConnectionEstablished { peer_id, connection_id, endpoint, .. } => {
                tracing::debug!(peer = %peer_id, address = %endpoint.get_remote_address(), "connected");
                if let Some(reply) = self.dials.remove(&connection_id) {
                    let _ = reply.send(Ok(peer_id));
                }
            }
            SwarmEvent::OutgoingConnectionError { connection_id, peer_id, error } => {
                tracing::debug!(peer = ?peer_id, %error, "could not connect");
                if let Some(reply) = self.dials.remove(&connection_id) {
                    let _ = reply.send(Err(Error::PeerUnreachable(explain_dial_error(&error.to_string()))));
                }
            }
            SwarmEvent::ConnectionClosed { peer_id, cause, num_established: 0, .. } => {
                tracing::debug!(peer = %peer_id, cause = ?cause, "disconnected");
            }
            SwarmEvent::IncomingConnectionError { send_back_addr, error, .. } => {
                // What a peer with another secret (or no secret) looks like from this side.
                tracing::warn!(from = %send_back_addr, %error, "refused an incoming connection");
            }
            SwarmEvent::ListenerError { error, .. } => tracing::warn!(%error, "peer-to-peer listener failed"),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. })) => {
                tracing::debug!(peer = %peer_id, agent = %info.agent_version, "identified");
                self.identified.insert(peer_id, info.listen_addrs);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event { peer, connection, result })) => match result {
                Ok(_) => {
                    self.heard.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(peer, Instant::now());
                }
                Err(e) => {
                    // A stalled connection would keep swallowing requests: a new one is dialed
                    // for the next request.
                    tracing::debug!(%peer, error = %e, "ping failed; closing the connection");
                    self.swarm.close_connection(connection);
                }
            },
            SwarmEvent::Behaviour(BehaviourEvent::Rpc(event)) => self.on_rpc_event(event),
            _ => {}
        }
    }

    fn on_rpc_event(&mut self, event: request_response::Event<P::Request, P::Response>) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request { request, channel, .. } => {
                    let Some(handler) = self.handler.clone() else {
                        let refusal = P::not_serving();
                        let _ = self.swarm.behaviour_mut().rpc.send_response(channel, refusal);
                        return;
                    };
                    self.inbound.spawn(async move { (channel, handler.handle(peer, request).await) });
                }
                request_response::Message::Response { request_id, response } => {
                    if let Some((_, reply)) = self.requests.remove(&request_id) {
                        let _ = reply.send(Ok(response));
                    }
                }
            },
            request_response::Event::OutboundFailure { request_id, error, .. } => {
                if let Some((peer, reply)) = self.requests.remove(&request_id) {
                    let _ = reply.send(Err(outbound_error(peer, error)));
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "could not answer a request");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }
}

/// A peer with another cluster secret accepts the TCP connection but never completes the
/// private-network handshake: the dial times out while negotiating. Say what usually causes it.
fn explain_dial_error(error: &str) -> String {
    if error.contains("negotiate") {
        format!("{error} (the peer listens but the handshake failed: is the cluster secret the same on both peers?)")
    } else {
        error.to_string()
    }
}

fn outbound_error(peer: PeerId, failure: OutboundFailure) -> Error {
    match failure {
        OutboundFailure::Timeout => Error::Timeout(format!("no answer from peer {peer}")),
        OutboundFailure::Io(e) => Error::Io(std::io::Error::new(e.kind(), format!("RPC with peer {peer}: {e}"))),
        // Never sent.
        failure @ (OutboundFailure::DialFailure | OutboundFailure::UnsupportedProtocols) => {
            Error::PeerUnreachable(format!("{peer}: {failure}"))
        }
        // Sent, maybe handled: the caller cannot tell.
        OutboundFailure::ConnectionClosed => {
            Error::Timeout(format!("no answer from peer {peer}: the connection closed before it answered"))
        }
    }
}
