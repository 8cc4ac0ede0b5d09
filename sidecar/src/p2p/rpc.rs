//! The messages peers exchange over the request-response protocol, CBOR-encoded.
//!
//! One request enum and one response enum: a new call (Raft's append/vote/snapshot, pin calls) is a
//! new variant of each, so peers of one version always agree on the wire.

use serde::{Deserialize, Serialize};

use crate::types::Id;

/// The request-response protocol of the cluster peers.
pub(crate) const PROTOCOL: libp2p::StreamProtocol = libp2p::StreamProtocol::new("/cluster-sidecar/rpc/1.0.0");

/// A call to another peer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum RpcRequest {
    /// The peer's `GET /id` object.
    Id,
}

/// The answer to an [`RpcRequest`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum RpcResponse {
    Id(Box<Id>),
    /// The peer could not answer; [`super::P2p::request`] turns it into an error for the caller.
    Error(String),
}

pub(crate) type Behaviour = libp2p::request_response::cbor::Behaviour<RpcRequest, RpcResponse>;
