//! The cluster's peer protocol: the messages peers exchange over the libp2p host (`p2p`), CBOR-
//! encoded. It sits above both the host, which carries any [`Protocol`], and consensus, whose
//! messages it carries, so that neither imports the other.
//!
//! One request enum and one response enum: a new call is a new variant of each, so peers of one
//! version always agree on the wire.

use libp2p::{PeerId, StreamProtocol};
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::{Deserialize, Serialize};

use crate::consensus::{ClusterNode, NodeId, OpBatch, RemovalNotice, SnapshotMeta, TypeConfig, Vote};
use crate::p2p::{P2p, Protocol};
use crate::types::{CidKey, Id, Metric, PinInfoShort, RepoGc, TrackerStatus};
use crate::{Error, Result};

/// The cluster peers' protocol, for the host.
pub struct ClusterProtocol;

/// The libp2p host of a cluster peer.
pub type Host = P2p<ClusterProtocol>;

impl Protocol for ClusterProtocol {
    type Request = RpcRequest;
    type Response = RpcResponse;

    fn name() -> StreamProtocol {
        StreamProtocol::new("/cluster-sidecar/rpc/1.0.0")
    }

    fn into_result(peer: PeerId, response: RpcResponse) -> Result<RpcResponse> {
        match response {
            RpcResponse::Error(message) => Err(Error::Remote { code: 500, message: format!("peer {peer}: {message}") }),
            RpcResponse::Failed { status, message } => Err(Error::Remote { code: status, message }),
            response => Ok(response),
        }
    }

    fn not_serving() -> RpcResponse {
        RpcResponse::Error("this peer is not serving requests yet".into())
    }
}

/// A call to another peer.
#[allow(clippy::large_enum_variant)] // one request per call; boxing buys nothing
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum RpcRequest {
    /// The peer's `GET /id` object.
    Id,
    /// Raft replication, election and snapshot transfer, for the Raft node `to`: a peer whose
    /// consensus data was replaced (a new node) refuses what was meant for its old node.
    Raft { to: NodeId, message: RaftMessage },
    /// To the leader: commit a batch of pinset ops; answers [`RpcResponse::Written`].
    Write(OpBatch),
    /// Who the peer is in consensus; answers [`RpcResponse::NodeInfo`].
    NodeInfo,
    /// To the leader: add this node (learner, catch-up, then voter when there is room).
    AddMember { node_id: NodeId, node: ClusterNode },
    /// To the leader: remove the member with this peer ID; `force`: even when it leaves a cluster
    /// that cannot lose another peer (see `consensus::plan::removal_risk`).
    RemoveMember {
        peer_id: String,
        #[serde(default)]
        force: bool,
    },
    /// From a new peer to a member: add me, reachable at these addresses; answers
    /// [`RpcResponse::Joined`].
    Join { addrs: Vec<String> },
    /// From the peer that added this one: the members, and the address it reached this peer at.
    Welcome { members: Vec<ClusterNode>, observed_addr: String },
    /// From the leader: this peer was removed from the cluster and must stop taking part, once
    /// it has checked the notice.
    Removed(RemovalNotice),
    /// A peer's latest metrics, pushed to every other member.
    Metrics(Vec<Metric>),
    /// This peer's tracker statuses of these CIDs, in the same order, as one [`StatusPage`].
    Statuses(Vec<CidKey>),
    /// Whom this peer and its IPFS daemon are connected to (`/health/graph`).
    Links,
    /// Garbage-collect this peer's IPFS daemon (`POST /ipfs/gc`).
    RepoGc,
    /// Re-queue this peer's failed operation on one CID, or all of them.
    Recover(Option<CidKey>),
}

/// A message of Raft's own, to a peer's Raft node.
#[allow(clippy::large_enum_variant)] // as for `RpcRequest`
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum RaftMessage {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    Snapshot(#[serde(with = "snapshot_chunk")] InstallSnapshotRequest<TypeConfig>),
}

/// A snapshot chunk on the wire: openraft's request with its data as one CBOR byte string. Derived,
/// the data would go as an array with one item per byte, which made encoding and decoding the
/// chunks the senders' and receivers' main cost in a catch-up.
mod snapshot_chunk {
    use std::fmt;

    use serde::de::{Error as _, MapAccess, SeqAccess, Visitor};
    use serde::ser::SerializeMap;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::{InstallSnapshotRequest, SnapshotMeta, TypeConfig, Vote};
    use crate::consensus::SNAPSHOT_CHUNK_SIZE as CHUNK_SIZE;

    /// The one key of the data's compressed form.
    const LZ4: &str = "lz4";
    /// Far above any chunk a peer sends: a compressed block claiming more is refused before its
    /// memory is allocated.
    const MAX_DATA: usize = 4 * CHUNK_SIZE;

    #[derive(Serialize)]
    struct Out<'a> {
        vote: &'a Vote,
        meta: &'a SnapshotMeta,
        offset: u64,
        data: Lz4<'a>,
        done: bool,
    }

    #[derive(Deserialize)]
    struct In {
        vote: Vote,
        meta: SnapshotMeta,
        offset: u64,
        #[serde(deserialize_with = "any_form")]
        data: Vec<u8>,
        done: bool,
    }

    /// The data as `{"lz4": block}`, one LZ4 block with its length first. A snapshot's records
    /// repeat field names, peer IDs and timestamps, so about a third of the bytes cross the wire,
    /// and each byte costs its share of the stream's flow-control round trips.
    struct Lz4<'a>(&'a [u8]);

    impl Serialize for Lz4<'_> {
        fn serialize<S: Serializer>(&self, to: S) -> Result<S::Ok, S::Error> {
            let block = lz4_flex::block::compress_prepend_size(self.0);
            let mut map = to.serialize_map(Some(1))?;
            map.serialize_entry(LZ4, serde_bytes::Bytes::new(&block))?;
            map.end()
        }
    }

    fn decompress<E: serde::de::Error>(block: &[u8]) -> Result<Vec<u8>, E> {
        let (len, compressed) =
            block.split_first_chunk::<4>().ok_or_else(|| E::custom("an LZ4 block without its length"))?;
        let len = u32::from_le_bytes(*len) as usize;
        if len > MAX_DATA {
            return Err(E::custom(format!("an LZ4 block of {len} bytes, above the {MAX_DATA} a chunk may hold")));
        }
        let data =
            lz4_flex::block::decompress(compressed, len).map_err(|e| E::custom(format!("a bad LZ4 block: {e}")))?;
        if data.len() != len {
            return Err(E::custom(format!("an LZ4 block of {} bytes, {len} announced", data.len())));
        }
        Ok(data)
    }

    /// The data compressed, or as the earlier forms that peers before it send, a plain byte
    /// string or an array of numbers: a peer of this version still installs a snapshot from a
    /// leader not yet upgraded.
    fn any_form<'de, D: Deserializer<'de>>(from: D) -> Result<Vec<u8>, D::Error> {
        struct Data;

        impl<'de> Visitor<'de> for Data {
            type Value = Vec<u8>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("snapshot data: {\"lz4\": bytes}, a byte string or an array of bytes")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<u8>, A::Error> {
                let (key, block) = map
                    .next_entry::<String, serde_bytes::ByteBuf>()?
                    .ok_or_else(|| A::Error::custom("empty snapshot data"))?;
                if key != LZ4 {
                    return Err(A::Error::custom(format!("snapshot data in an unknown form {key:?}")));
                }
                if map.next_key::<serde::de::IgnoredAny>()?.is_some() {
                    return Err(A::Error::custom("snapshot data with more than its lz4 block"));
                }
                decompress(&block)
            }

            fn visit_bytes<E>(self, bytes: &[u8]) -> Result<Vec<u8>, E> {
                Ok(bytes.to_vec())
            }

            fn visit_byte_buf<E>(self, bytes: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(bytes)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut numbers: A) -> Result<Vec<u8>, A::Error> {
                // The hint is the sender's word: trusted no further than a chunk's size.
                let mut data = Vec::with_capacity(numbers.size_hint().unwrap_or(0).min(CHUNK_SIZE));
                while let Some(byte) = numbers.next_element()? {
                    data.push(byte);
                }
                Ok(data)
            }
        }

        from.deserialize_any(Data)
    }

    pub fn serialize<S: Serializer>(rpc: &InstallSnapshotRequest<TypeConfig>, to: S) -> Result<S::Ok, S::Error> {
        Out { vote: &rpc.vote, meta: &rpc.meta, offset: rpc.offset, data: Lz4(&rpc.data), done: rpc.done }.serialize(to)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(from: D) -> Result<InstallSnapshotRequest<TypeConfig>, D::Error> {
        let In { vote, meta, offset, data, done } = In::deserialize(from)?;
        Ok(InstallSnapshotRequest { vote, meta, offset, data, done })
    }
}

/// A peer's connections, for the cluster's health graph.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PeerLinks {
    pub peername: String,
    /// Cluster peers this one is connected to (base58 IDs).
    pub cluster_peers: Vec<String>,
    /// Its IPFS daemon's ID and the daemons it is connected to.
    pub ipfs_id: Option<String>,
    pub ipfs_peers: Vec<String>,
}

/// One peer's statuses of a page of CIDs. A cluster-wide listing asks every other peer for each
/// page of the pinset; the peer's name and its daemon's ID and addresses are the same in all of
/// them, and sending them once (binary, not text) is most of the saving.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusPage {
    pub peername: String,
    pub ipfs_peer_id: Option<PeerId>,
    pub ipfs_peer_addresses: Vec<multiaddr::Multiaddr>,
    /// In the order of the CIDs asked for.
    pub statuses: Vec<PageStatus>,
}

/// What differs between one peer's statuses: status, timestamp (seconds and nanoseconds since the
/// epoch), error, attempts, priority. A tuple, so that CBOR carries no field names.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PageStatus(pub TrackerStatus, pub i64, pub u32, pub String, pub u32, pub bool);

impl PageStatus {
    pub fn timestamp(&self) -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::from_timestamp(self.1, self.2).unwrap_or_default()
    }
}

impl StatusPage {
    /// What a peer that could not answer shows for `count` pins: `cluster_error` and the reason.
    pub fn failed(count: usize, error: String, now: chrono::DateTime<chrono::Utc>) -> Self {
        let status =
            PageStatus(TrackerStatus::ClusterError, now.timestamp(), now.timestamp_subsec_nanos(), error, 0, false);
        StatusPage {
            peername: String::new(),
            ipfs_peer_id: None,
            ipfs_peer_addresses: Vec::new(),
            statuses: vec![status; count],
        }
    }

    /// Each status whole, in order.
    pub fn into_statuses(self) -> impl Iterator<Item = PinInfoShort> {
        let StatusPage { peername, ipfs_peer_id, ipfs_peer_addresses, statuses } = self;
        statuses.into_iter().map(move |status| PinInfoShort {
            peername: peername.clone(),
            ipfs_peer_id,
            ipfs_peer_addresses: ipfs_peer_addresses.clone(),
            timestamp: status.timestamp(),
            status: status.0,
            error: status.3,
            attempt_count: status.4,
            priority_pin: status.5,
        })
    }
}

/// The answer to an [`RpcRequest`].
#[derive(Debug, Serialize, Deserialize)]
pub enum RpcResponse {
    Ok,
    Id(Box<Id>),
    RaftAppend(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    RaftVote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    RaftSnapshot(Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>),
    /// The log index the batch was committed at.
    Written {
        index: u64,
    },
    NodeInfo {
        node_id: NodeId,
        initialized: bool,
    },
    Joined {
        members: Vec<ClusterNode>,
    },
    Statuses(StatusPage),
    Links(PeerLinks),
    RepoGc(RepoGc),
    /// The peer could not answer; [`P2p::request`] turns it into an error for the caller.
    Error(String),
    /// The call failed with this error: its HTTP status (see [`crate::Error::status`]) and text,
    /// so a forwarded request fails on the first peer as it did on the second.
    Failed {
        status: u16,
        message: String,
    },
    /// To [`RpcRequest::Write`]: this peer does not lead (nothing was proposed); the leader it
    /// knows, if any.
    NotLeader {
        leader: Option<NodeId>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(data: Vec<u8>) -> InstallSnapshotRequest<TypeConfig> {
        InstallSnapshotRequest {
            vote: Vote::new_committed(3, 1),
            meta: SnapshotMeta {
                last_log_id: Some(openraft::LogId::new(openraft::CommittedLeaderId::new(3, 1), 42)),
                last_membership: Default::default(),
                snapshot_id: "3-42-1000".into(),
            },
            offset: 4 << 20,
            data,
            done: true,
        }
    }

    fn encoded(message: &impl Serialize) -> Vec<u8> {
        let mut bytes = Vec::new();
        cbor4ii::serde::to_writer(&mut bytes, message).unwrap();
        bytes
    }

    /// A Raft snapshot message with the chunk in whatever form another peer gives it.
    #[derive(Serialize)]
    enum AsSent<T> {
        Snapshot(T),
    }

    fn decoded(bytes: &[u8]) -> std::result::Result<InstallSnapshotRequest<TypeConfig>, String> {
        match cbor4ii::serde::from_slice(bytes) {
            Ok(RaftMessage::Snapshot(rpc)) => Ok(rpc),
            Ok(_) => Err("not a chunk".into()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// A snapshot chunk crosses the wire whole, its data compressed: records repeat most of
    /// their bytes, and data that does not compress costs only a little framing.
    #[test]
    fn a_snapshot_chunk_carries_its_data_compressed() {
        let record =
            |i: u32| format!("{{name: dataset-{:03}/file-{i:07}.bin, peer: 12D3KooWPkdnc, at: 2026-12-07}}", i % 1000);
        let records: Vec<u8> = (0..2000).flat_map(|i| record(i).into_bytes()).collect();
        let mut state = 0x2545_f491_u32;
        let noise: Vec<u8> = (0..64 * 1024)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                state as u8
            })
            .collect();
        for (data, at_most) in
            [(records.clone(), records.len() / 2), (noise.clone(), noise.len() + 512), (Vec::new(), 256)]
        {
            let sent = chunk(data.clone());
            let bytes = encoded(&RaftMessage::Snapshot(sent.clone()));
            assert!(bytes.len() <= at_most, "{} bytes for {} of data", bytes.len(), data.len());
            let back = decoded(&bytes).unwrap();
            assert_eq!(
                (back.vote, back.meta, back.offset, back.data, back.done),
                (sent.vote, sent.meta, sent.offset, data, sent.done)
            );
        }
    }

    /// Peers before the compression sent the data as one byte string, and before that as an
    /// array of numbers (derived): a peer of this version reads both.
    #[test]
    fn a_snapshot_chunk_from_an_earlier_peer_still_decodes() {
        let data: Vec<u8> = (0..64 * 1024).map(|i| (i * 7 % 251) as u8).collect();
        #[derive(Serialize)]
        struct AsBytes<'a> {
            vote: Vote,
            meta: SnapshotMeta,
            offset: u64,
            #[serde(with = "serde_bytes")]
            data: &'a [u8],
            done: bool,
        }
        let sent = chunk(data.clone());
        let as_bytes =
            AsBytes { vote: sent.vote, meta: sent.meta.clone(), offset: sent.offset, data: &data, done: sent.done };
        assert_eq!(decoded(&encoded(&AsSent::Snapshot(as_bytes))).unwrap().data, data);
        let numbers = encoded(&AsSent::Snapshot(sent));
        assert!(numbers.len() > data.len() * 3 / 2, "{} bytes: not the array of numbers", numbers.len());
        assert_eq!(decoded(&numbers).unwrap().data, data);
    }

    /// A compressed block that lies about its length, or is damaged, is an error, not an
    /// allocation of what it claims or a panic.
    #[test]
    fn a_bad_compressed_chunk_is_refused() {
        #[derive(Serialize)]
        struct Raw {
            vote: Vote,
            meta: SnapshotMeta,
            offset: u64,
            data: std::collections::BTreeMap<&'static str, serde_bytes::ByteBuf>,
            done: bool,
        }
        let with_block = |key: &'static str, block: Vec<u8>| {
            let sent = chunk(Vec::new());
            let data = [(key, serde_bytes::ByteBuf::from(block))].into_iter().collect();
            encoded(&AsSent::Snapshot(Raw { vote: sent.vote, meta: sent.meta, offset: 0, data, done: false }))
        };
        let mut block = lz4_flex::block::compress_prepend_size(&[7u8; 4096]);
        let huge = (1u32 << 30).to_le_bytes();
        let mut bomb = block.clone();
        bomb[..4].copy_from_slice(&huge);
        let cut = block[..block.len() - 3].to_vec();
        let short = vec![1, 0];
        for (key, bad, expected) in [
            ("lz4", bomb, "above the"),
            ("lz4", cut, "bad LZ4 block"),
            ("lz4", short, "without its length"),
            ("zstd", block.clone(), "unknown form"),
        ] {
            let error = decoded(&with_block(key, bad)).unwrap_err();
            assert!(error.contains(expected), "{key}: {error}");
        }
        block[0] += 1; // announces one byte more than the block holds
        assert!(decoded(&with_block("lz4", block)).is_err());
    }

    /// A page crosses the wire (CBOR, as the host encodes calls) and gives back each status whole:
    /// the shared fields in every one, timestamps to the nanosecond.
    #[test]
    fn a_status_page_gives_back_every_status_whole() {
        let daemon = PeerId::random();
        let addresses: Vec<multiaddr::Multiaddr> = vec!["/ip4/127.0.0.1/tcp/4001".parse().unwrap()];
        let at = chrono::DateTime::from_timestamp(1_765_000_000, 123_456_789).unwrap();
        let page = StatusPage {
            peername: "peer-1".into(),
            ipfs_peer_id: Some(daemon),
            ipfs_peer_addresses: addresses.clone(),
            statuses: vec![
                PageStatus(TrackerStatus::Pinned, at.timestamp(), at.timestamp_subsec_nanos(), String::new(), 0, false),
                PageStatus(TrackerStatus::PinError, 0, 0, "no route".into(), 3, true),
            ],
        };
        let mut bytes = Vec::new();
        cbor4ii::serde::to_writer(&mut bytes, &RpcResponse::Statuses(page.clone())).unwrap();
        let RpcResponse::Statuses(back) = cbor4ii::serde::from_slice(&bytes).unwrap() else { panic!("a page") };
        assert_eq!(back, page);
        let statuses: Vec<PinInfoShort> = back.into_statuses().collect();
        assert_eq!(statuses.len(), 2);
        for status in &statuses {
            assert_eq!((status.peername.as_str(), status.ipfs_peer_id), ("peer-1", Some(daemon)));
            assert_eq!(status.ipfs_peer_addresses, addresses);
        }
        assert_eq!((statuses[0].status, statuses[0].timestamp), (TrackerStatus::Pinned, at));
        assert_eq!(
            (statuses[1].error.as_str(), statuses[1].attempt_count, statuses[1].priority_pin),
            ("no route", 3, true)
        );
    }
}
