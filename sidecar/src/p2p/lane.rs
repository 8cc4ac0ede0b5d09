//! Lanes: one long-lived stream to a peer that carries call after call (the next request once the
//! previous answer arrived), for the calls a busy cluster makes hundreds of times a second (Raft's
//! replication). A request-response call opens a substream, negotiates its protocol, arms three
//! timers on each side and passes through the swarm's task twice; on a lane a call is one frame
//! each way, written and read by the caller's own task.
//!
//! A frame is a 4-byte big-endian length, then the message in the same CBOR as the request-response
//! codec. A lane carries the same [`Protocol`] messages, answered by the same [`RpcHandler`]. The
//! answering side first writes one byte, [`ACCEPTED`], as it takes the stream: libp2p drops an
//! inbound stream that arrives while the last one is still being handed over, and a stream closed
//! before that byte was never read, so its request can be sent again.
//!
//! A lane whose call failed or was given up midway is closed (the stream may hold half a message);
//! the next call opens a new one. Opening costs no round trip: the stream's protocol is negotiated
//! lazily (as every stream of the host), its proposal travelling with the first request. So a peer
//! that does not speak lanes (an older version, during a rolling upgrade) refuses in place of an
//! answer; it never read the request, and the lane falls back to request-response calls.

use std::sync::{Arc, Mutex, PoisonError};

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::core::upgrade::NegotiationError;
use libp2p::{Multiaddr, PeerId, Stream, StreamProtocol};
use libp2p_stream::OpenStreamError;
use tokio::sync::watch;

use super::bandwidth::BandwidthMeter;
use super::{P2p, Protocol, RpcHandler};
use crate::{Error, Result};

/// Bytes of a frame's length prefix.
const PREFIX: usize = 4;
/// What the answering side writes first on a lane it took (and the lanes' version).
const ACCEPTED: u8 = 1;
/// A frame buffer grown past this (by a snapshot chunk, a large append) is not kept for the next
/// frame: replication's usual frames are far smaller.
const KEPT_FRAME_CAPACITY: usize = 1024 * 1024;

/// The stream protocol of `P`'s lanes.
pub(crate) fn protocol_name<P: Protocol>() -> StreamProtocol {
    StreamProtocol::try_from_owned(format!("{}/lane", P::name())).expect("a protocol name starts with /")
}

/// Calls to one peer, one at a time, over one stream.
pub struct Lane<P: Protocol> {
    host: P2p<P>,
    peer: PeerId,
    addrs: Vec<Multiaddr>,
    /// `None` until the first call, and after a call that did not finish. In a mutex only to make
    /// the lane `Sync` (as openraft's networks must be): it is only reached through `&mut self`.
    stream: Option<Mutex<Stream>>,
    /// The peer does not speak lanes: calls go through request-response.
    fallback: bool,
    frames: Frames,
}

impl<P: Protocol> Lane<P> {
    pub(super) fn new(host: P2p<P>, peer: PeerId, addrs: Vec<Multiaddr>) -> Self {
        let frames = Frames::new::<P>(host.bandwidth.clone());
        Lane { host, peer, addrs, stream: None, fallback: false, frames }
    }

    /// Calls the peer, with the errors of [`P2p::request_via`]: [`Error::PeerUnreachable`] when
    /// the request cannot have been handled (no connection, no stream, not sent whole), another
    /// error when it may have been. Dropping the call midway closes the lane.
    pub async fn call(&mut self, request: P::Request) -> Result<P::Response> {
        if !self.fallback {
            let encoded = self.frames.encode(&request);
            encoded.map_err(|error| Unanswered::Broken { doing: "encoding a call to", error }.into_error(self.peer))?;
            // A lane whose connection closed since its last call fails the write. The frame did
            // not get through whole, so nothing was handled: a new stream takes it.
            if let Some(idle) = self.stream.take() {
                let mut stream = idle.into_inner().unwrap_or_else(PoisonError::into_inner);
                if stream.write_all(self.frames.bytes()).await.is_ok() {
                    return self.answer(stream, false).await.map_err(|e| e.into_error(self.peer));
                }
            }
            // A new stream the peer did not take (see [`ACCEPTED`]) is tried once more.
            let mut tries = 0;
            loop {
                tries += 1;
                let mut stream =
                    self.open().await.map_err(|e| Error::PeerUnreachable(format!("{}: {e}", self.peer)))?;
                let sent = stream.write_all(self.frames.bytes()).await;
                sent.map_err(|e| Error::PeerUnreachable(format!("{}: {e}", self.peer)))?;
                match self.answer(stream, true).await {
                    Err(Unanswered::Refused) => {
                        tracing::info!(peer = %self.peer, "the peer does not speak lanes; calling it through request-response");
                        self.fallback = true;
                        break;
                    }
                    Err(Unanswered::NotTaken(_)) if tries < 2 => {}
                    answered => return answered.map_err(|e| e.into_error(self.peer)),
                }
            }
        }
        self.host.request_via(self.peer, self.addrs.clone(), request).await
    }

    /// Sends the frame written to `stream` on its way and reads the answer (on a `new` stream,
    /// the peer's [`ACCEPTED`] first); the lane keeps the stream for the next call only when all
    /// of that went well.
    async fn answer(&mut self, mut stream: Stream, new: bool) -> std::result::Result<P::Response, Unanswered> {
        self.frames.flush(&mut stream).await.map_err(|e| Unanswered::failed("sending to", e))?;
        if new {
            let mut accepted = [0u8];
            match stream.read_exact(&mut accepted).await.map_err(|e| Unanswered::failed("opening a lane to", e)) {
                Ok(()) if accepted[0] == ACCEPTED => {}
                Ok(()) => {
                    return Err(Unanswered::Failed(Error::Io(std::io::Error::other(format!(
                        "peer {} opened its lane with {}, not {ACCEPTED}: another version of lanes",
                        self.peer, accepted[0]
                    )))))
                }
                Err(Unanswered::Broken { error, .. }) => return Err(Unanswered::NotTaken(error)),
                Err(refused) => return Err(refused),
            }
        }
        let response = self.frames.receive(&mut stream, self.host.max_response_size).await;
        let response = response.map_err(|e| Unanswered::failed("reading the answer of", e))?;
        self.stream = Some(Mutex::new(stream));
        P::into_result(self.peer, response).map_err(Unanswered::Failed)
    }

    async fn open(&mut self) -> std::result::Result<Stream, OpenStreamError> {
        // Dialing, when needed, goes through the addresses the host knows for the peer.
        if !self.addrs.is_empty() {
            self.host
                .remember_addrs(self.peer, self.addrs.clone())
                .await
                .map_err(|e| OpenStreamError::Io(std::io::Error::other(e.to_string())))?;
        }
        self.host.streams.clone().open_stream(self.peer, protocol_name::<P>()).await
    }
}

/// Why a call sent on a lane has no answer.
enum Unanswered {
    /// The peer refused the lane's protocol (it negotiates lazily: the refusal comes instead of
    /// the answer), so it never read the request.
    Refused,
    Failed(Error),
    /// The stream closed before the peer took it: it never read the request.
    NotTaken(std::io::Error),
    Broken {
        doing: &'static str,
        error: std::io::Error,
    },
}

impl Unanswered {
    fn failed(doing: &'static str, error: std::io::Error) -> Unanswered {
        let refused = error.get_ref().and_then(|inner| inner.downcast_ref::<NegotiationError>());
        match refused {
            Some(NegotiationError::Failed) => Unanswered::Refused,
            _ => Unanswered::Broken { doing, error },
        }
    }

    fn into_error(self, peer: PeerId) -> Error {
        match self {
            // Only a new stream is refused, and a new stream's refusal is taken as a fallback.
            Unanswered::Refused => Error::PeerUnreachable(format!("{peer} refused the lane's protocol")),
            Unanswered::Failed(e) => e,
            Unanswered::NotTaken(error) => Error::PeerUnreachable(format!("{peer} did not take the lane: {error}")),
            Unanswered::Broken { doing, error } => {
                Error::Io(std::io::Error::new(error.kind(), format!("{doing} peer {peer} on its lane: {error}")))
            }
        }
    }
}

/// Frames in and out of lane streams, their bytes counted as the lane protocol's.
struct Frames {
    /// The frame being written or the one last read.
    buffer: Vec<u8>,
    meter: BandwidthMeter,
    protocol: StreamProtocol,
}

impl Frames {
    fn new<P: Protocol>(meter: BandwidthMeter) -> Self {
        Frames { buffer: Vec::new(), meter, protocol: protocol_name::<P>() }
    }

    /// Makes `message` the frame to send.
    fn encode<T: serde::Serialize>(&mut self, message: &T) -> std::io::Result<()> {
        self.release_if_large();
        self.buffer.clear();
        self.buffer.extend_from_slice(&[0; PREFIX]);
        cbor4ii::serde::to_writer(&mut self.buffer, message).map_err(std::io::Error::other)?;
        let len =
            u32::try_from(self.buffer.len() - PREFIX).map_err(|_| std::io::Error::other("a message over 4 GiB"))?;
        self.buffer[..PREFIX].copy_from_slice(&len.to_be_bytes());
        Ok(())
    }

    /// The encoded frame, to write.
    fn bytes(&self) -> &[u8] {
        &self.buffer
    }

    /// Flushes the frame written to `stream`.
    async fn flush(&mut self, stream: &mut Stream) -> std::io::Result<()> {
        stream.flush().await?;
        self.meter.add(self.protocol.as_ref(), 0, self.buffer.len() as u64);
        Ok(())
    }

    /// Reads one frame of at most `max` bytes; `None` when the stream ended before one began.
    async fn receive_or_end<T: serde::de::DeserializeOwned>(
        &mut self,
        stream: &mut Stream,
        max: u64,
    ) -> std::io::Result<Option<T>> {
        let mut prefix = [0u8; PREFIX];
        let first = stream.read(&mut prefix).await?;
        if first == 0 {
            return Ok(None);
        }
        stream.read_exact(&mut prefix[first..]).await?;
        let len = u32::from_be_bytes(prefix) as u64;
        if len > max {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("a message of {len} bytes, over the limit of {max}"),
            ));
        }
        self.release_if_large();
        self.buffer.resize(len as usize, 0);
        stream.read_exact(&mut self.buffer).await?;
        self.meter.add(self.protocol.as_ref(), (PREFIX as u64) + len, 0);
        let message = cbor4ii::serde::from_slice(&self.buffer)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("undecodable message: {e}")))?;
        Ok(Some(message))
    }

    async fn receive<T: serde::de::DeserializeOwned>(&mut self, stream: &mut Stream, max: u64) -> std::io::Result<T> {
        self.receive_or_end(stream, max)
            .await?
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the peer closed the lane"))
    }

    /// A buffer grown past [`KEPT_FRAME_CAPACITY`] is not kept for the next frame.
    fn release_if_large(&mut self) {
        if self.buffer.capacity() > KEPT_FRAME_CAPACITY {
            self.buffer = Vec::new();
        }
    }
}

/// Serves the lanes other peers open to this host, each on a task of its own, until the host
/// stops. Until a handler is set, every call is answered with [`Protocol::not_serving`].
pub(super) async fn serve_lanes<P: Protocol>(
    mut incoming: libp2p_stream::IncomingStreams,
    handler: watch::Receiver<Option<Arc<dyn RpcHandler<P>>>>,
    max_request_size: u64,
    meter: BandwidthMeter,
) {
    while let Some((peer, stream)) = incoming.next().await {
        let handler = handler.clone();
        let meter = meter.clone();
        tokio::spawn(async move {
            if let Err(e) = answer_lane(peer, stream, handler, max_request_size, meter).await {
                tracing::debug!(%peer, error = %e, "a lane closed");
            }
        });
    }
}

async fn answer_lane<P: Protocol>(
    peer: PeerId,
    mut stream: Stream,
    handler: watch::Receiver<Option<Arc<dyn RpcHandler<P>>>>,
    max_request_size: u64,
    meter: BandwidthMeter,
) -> std::io::Result<()> {
    stream.write_all(&[ACCEPTED]).await?;
    stream.flush().await?;
    let mut frames = Frames::new::<P>(meter);
    while let Some(request) = frames.receive_or_end(&mut stream, max_request_size).await? {
        let serving = handler.borrow().clone();
        let response = match serving {
            Some(handler) => handler.handle(peer, request).await,
            None => P::not_serving(),
        };
        frames.encode(&response)?;
        drop(response);
        stream.write_all(frames.bytes()).await?;
        frames.flush(&mut stream).await?;
    }
    Ok(())
}
