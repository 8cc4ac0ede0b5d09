//! Group commit: client writes that queue together become one Raft entry, proposed on the leader
//! (forwarded there from any other peer, where they join the leader's own queue). Per-entry costs
//! (an fsync of the log on a quorum, a replication message, a pinset transaction, Raft's own
//! bookkeeping) are paid once however many ops the entry carries; one entry is in flight at a
//! time, and what queues meanwhile makes the next entry bigger.
//!
//! Every write is answered within `commit_timeout`, with success or an error that says whether
//! the write may still have been committed:
//! - a proposal whose leader stops leading, or loses its majority, is answered at once rather than
//!   waiting on openraft (which never answers an entry that a snapshot replaced);
//! - a write is forwarded again only when it cannot have been proposed (the peer answered that it
//!   does not lead, or could not be reached): re-proposing a write that may be committed could
//!   apply it a second time around another client's write;
//! - a peer never forwards a write it was forwarded: it answers [`RpcResponse::NotLeader`], so
//!   two peers that each believe the other leads cannot wait on each other.

use std::sync::Arc;
use std::time::Duration;

use libp2p::PeerId;
use openraft::error::{ClientWriteError, RaftError};
use openraft::ServerState;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::types::{ClusterNode, NodeId, OpBatch, Raft};
use crate::p2p::{encoded_len, Lane};
use crate::protocol::{ClusterProtocol, Host, RpcRequest, RpcResponse};
use crate::state::StateOp;
use crate::{Error, Result};

/// Most ops in one entry: bounds the latency a batch adds to its last op and the entry's size.
pub const MAX_BATCH: usize = 1024;
/// Most bytes one op takes encoded (a pin with its name, metadata, allocations and the rest), so
/// that entries are bounded in bytes. Sixty times a typical pin (about 0.5 KB): room for any real
/// name and metadata, which arrive in a request line of at most 64 KiB anyway.
pub const MAX_OP_BYTES: u64 = 32 * 1024;
/// Most bytes of ops in one entry. One entry must always fit in an append request (16 MiB),
/// which no split of a request makes smaller; several entries that do not fit together are split
/// by the network (`PayloadTooLarge`). Pins of a typical size still batch by count (1024 of them
/// take about 0.5 MB); pins near [`MAX_OP_BYTES`] go 32 to an entry.
pub const MAX_BATCH_BYTES: u64 = 1024 * 1024;
/// How long a proposal waits for openraft's answer once its leader stopped leading: the entry
/// may still commit under the next leader (then openraft answers), or be replaced.
const LOST_LEADERSHIP_GRACE: Duration = Duration::from_secs(1);
/// How long in-flight proposals may finish once the peer is shutting down.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Answered with the log index of the entry that carried the op.
type Reply = oneshot::Sender<Result<u64>>;

/// Who asked for a write: a client of this peer, or another peer that forwarded it here.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Origin {
    Local,
    Forwarded,
}

struct Request {
    op: StateOp,
    /// The op's encoded size.
    bytes: u64,
    origin: Origin,
    reply: Reply,
    /// When the write must be answered by: `commit_timeout` after it was asked for, time in the
    /// queue included.
    deadline: Instant,
}

/// The timing the writer works with.
#[derive(Clone, Debug)]
pub struct WriterTiming {
    /// Every write is answered within this.
    pub commit_timeout: Duration,
    /// A leader that has not heard from a majority for this long refuses writes: the rest of the
    /// cluster has likely elected another leader.
    pub quorum_lost_after: Duration,
}

pub struct Writer {
    requests: mpsc::Sender<Request>,
    task: tokio::sync::Mutex<Option<JoinHandle<()>>>,
    proposer: Arc<Proposer>,
}

impl Writer {
    pub fn start(raft: Raft, node_id: NodeId, p2p: Host, timing: WriterTiming, shutdown: CancellationToken) -> Writer {
        let (requests, inbox) = mpsc::channel(4 * MAX_BATCH);
        let proposer = Arc::new(Proposer { raft, node_id, p2p, timing, leader_lane: Default::default() });
        let batcher = Batcher { proposer: proposer.clone(), inbox, shutdown };
        Writer { requests, task: tokio::sync::Mutex::new(Some(tokio::spawn(batcher.run()))), proposer }
    }

    /// Commits a client's write: returns once a leader committed it and this peer applied it.
    pub async fn commit(&self, op: StateOp) -> Result<u64> {
        self.enqueue(op, Origin::Local).await
    }

    /// Commits writes another peer forwarded here, only as the leader: elsewhere they fail with
    /// [`Error::NotLeader`] and the forwarding peer tries the leader itself. They join this
    /// peer's own queue, sharing entries with every other write; returns the log index by which
    /// all of them are committed.
    pub async fn commit_forwarded(&self, batch: OpBatch) -> Result<u64> {
        self.proposer.check_leading()?;
        let commits = batch.0.into_iter().map(|op| self.enqueue(op, Origin::Forwarded));
        let indexes = futures::future::try_join_all(commits).await?;
        Ok(indexes.into_iter().max().unwrap_or(0))
    }

    /// This peer leads but has not heard from a majority for longer than allowed.
    pub fn leads_without_quorum(&self) -> bool {
        let metrics = self.proposer.raft.metrics();
        let metrics = metrics.borrow();
        metrics.current_leader == Some(self.proposer.node_id) && self.proposer.quorum_silence(&metrics).is_some()
    }

    /// Queues `op`, unless it is larger than any op may be: every write passes here, a forwarded
    /// one on its way in and again on the leader.
    async fn enqueue(&self, op: StateOp, origin: Origin) -> Result<u64> {
        let bytes = encoded_len(&op);
        if bytes > MAX_OP_BYTES {
            return Err(Error::BadRequest(format!(
                "the pin is too large: {bytes} bytes encoded, over the limit of {MAX_OP_BYTES} \
                 (its name, metadata and the rest)"
            )));
        }
        let (reply, outcome) = oneshot::channel();
        let deadline = Instant::now() + self.proposer.timing.commit_timeout;
        let request = Request { op, bytes, origin, reply, deadline };
        self.requests.send(request).await.map_err(|_| Error::ShuttingDown)?;
        outcome.await.map_err(|_| Error::ShuttingDown)?
    }

    /// Waits for the batcher to end (after its shutdown token fired): proposals in flight get
    /// [`SHUTDOWN_GRACE`] to finish, then their writes fail with [`Error::ShuttingDown`].
    pub async fn stopped(&self) {
        if let Some(task) = self.task.lock().await.take() {
            let _ = task.await;
        }
    }
}

struct Batcher {
    proposer: Arc<Proposer>,
    inbox: mpsc::Receiver<Request>,
    shutdown: CancellationToken,
}

impl Batcher {
    async fn run(mut self) {
        let mut in_flight: Option<JoinHandle<()>> = None;
        // The request that did not fit in the last batch: it starts the next one.
        let mut carried: Option<Request> = None;
        loop {
            let first = match carried.take() {
                Some(request) => request,
                None => tokio::select! {
                    biased;
                    _ = self.shutdown.cancelled() => break,
                    request = self.inbox.recv() => match request {
                        Some(request) => request,
                        None => break,
                    },
                },
            };
            // The previous entry first: whatever queued meanwhile joins this one.
            if let Some(previous) = in_flight.as_mut() {
                tokio::select! {
                    _ = previous => {}
                    _ = self.shutdown.cancelled() => {
                        let _ = first.reply.send(Err(Error::ShuttingDown));
                        break;
                    }
                }
            }
            let mut bytes = first.bytes;
            let mut batch = vec![first];
            while let Ok(request) = self.inbox.try_recv() {
                if !has_room(batch.len(), bytes, request.bytes) {
                    carried = Some(request);
                    break;
                }
                bytes += request.bytes;
                batch.push(request);
            }
            let proposer = self.proposer.clone();
            in_flight = Some(tokio::spawn(async move { proposer.write(batch).await }));
        }
        self.inbox.close();
        while let Ok(request) = self.inbox.try_recv() {
            let _ = request.reply.send(Err(Error::ShuttingDown));
        }
        if let Some(mut last) = in_flight {
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut last).await.is_err() {
                // Its callers see their reply channels close: ShuttingDown.
                last.abort();
            }
        }
    }
}

/// Whether an op of `op_bytes` joins a batch of `len` ops taking `bytes`: while the batch stays
/// within both [`MAX_BATCH`] and [`MAX_BATCH_BYTES`]. The first op always starts one.
fn has_room(len: usize, bytes: u64, op_bytes: u64) -> bool {
    len == 0 || (len < MAX_BATCH && bytes + op_bytes <= MAX_BATCH_BYTES)
}

struct Proposer {
    raft: Raft,
    node_id: NodeId,
    p2p: Host,
    timing: WriterTiming,
    /// The lane forwards take to the leader, and which peer that is: one batch is forwarded at a
    /// time, so one lane suffices.
    leader_lane: tokio::sync::Mutex<Option<(PeerId, Lane<ClusterProtocol>)>>,
}

/// How an attempt to propose on this peer ended.
enum Proposed {
    Committed(u64),
    /// This peer does not lead: nothing was proposed.
    NotLeader(Option<(NodeId, ClusterNode)>),
}

impl Proposer {
    /// Commits one batch and answers each of its requests.
    #[tracing::instrument(level = "debug", name = "write", skip_all, fields(ops = batch.len()))]
    async fn write(&self, batch: Vec<Request>) {
        let Some(deadline) = batch.iter().map(|r| r.deadline).min() else { return };
        let ops: Vec<StateOp> = batch.iter().map(|r| r.op.clone()).collect();
        let outcome = self.propose(OpBatch(ops), deadline).await;
        let leader = match outcome {
            Ok(Proposed::Committed(index)) => return answer(batch, &Ok(index)),
            Err(e) => return answer(batch, &Err(e)),
            Ok(Proposed::NotLeader(leader)) => leader,
        };
        // Forwarded writes go back to their peer; this peer's own go on to the leader.
        let (forwarded, local): (Vec<Request>, Vec<Request>) =
            batch.into_iter().partition(|r| r.origin == Origin::Forwarded);
        answer(forwarded, &Err(Error::NotLeader { leader: leader.as_ref().map(|(id, _)| *id) }));
        if !local.is_empty() {
            let ops = OpBatch(local.iter().map(|r| r.op.clone()).collect());
            let outcome = self.forward(ops, leader, deadline).await;
            answer(local, &outcome);
        }
    }

    /// Fails at once unless this peer leads a majority it hears from.
    fn check_leading(&self) -> Result<()> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        if metrics.current_leader != Some(self.node_id) {
            return Err(Error::NotLeader { leader: metrics.current_leader });
        }
        if let Some(age) = self.quorum_silence(&metrics) {
            return Err(Error::Unavailable(format!(
                "this peer leads but has not heard from a majority for {age:?}: the other peers may have elected another leader"
            )));
        }
        Ok(())
    }

    /// How long this leader has not heard from a majority, once that is longer than allowed.
    fn quorum_silence(&self, metrics: &openraft::RaftMetrics<NodeId, ClusterNode>) -> Option<Duration> {
        let age = Duration::from_millis(metrics.millis_since_quorum_ack?);
        (age > self.timing.quorum_lost_after).then_some(age)
    }

    /// Proposes `batch` through this peer's Raft node, waiting at most until `deadline`.
    async fn propose(&self, batch: OpBatch, deadline: Instant) -> Result<Proposed> {
        if let Err(e) = self.check_leading() {
            return match e {
                Error::NotLeader { .. } => Ok(Proposed::NotLeader(self.known_leader())),
                e => Err(e),
            };
        }
        let written = self.raft.client_write(batch);
        let lost = async {
            let why = self.leadership_lost().await;
            tokio::time::sleep(LOST_LEADERSHIP_GRACE).await;
            why
        };
        tokio::select! {
            written = written => match written {
                Ok(response) => Ok(Proposed::Committed(response.log_id.index)),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                    Ok(Proposed::NotLeader(forward.leader_id.zip(forward.leader_node)))
                }
                Err(RaftError::APIError(e)) => Err(Error::Storage(format!("Raft refused the write: {e}"))),
                Err(RaftError::Fatal(e)) => Err(fatal(e)),
            },
            why = lost => Err(in_doubt(&why)),
            _ = tokio::time::sleep_until(deadline) => Err(in_doubt(&format!(
                "it was not committed within {:?}", self.timing.commit_timeout
            ))),
        }
    }

    /// Resolves once this peer no longer leads, or no longer hears from a majority; says which.
    async fn leadership_lost(&self) -> String {
        let mut metrics = self.raft.metrics();
        loop {
            {
                let m = metrics.borrow_and_update();
                if m.state != ServerState::Leader || m.current_leader != Some(self.node_id) {
                    return "this peer stopped leading while the write was in flight".to_string();
                }
                if let Some(age) = self.quorum_silence(&m) {
                    return format!("this peer lost contact with a majority for {age:?} while the write was in flight");
                }
            }
            if metrics.changed().await.is_err() {
                return "the Raft node stopped".to_string();
            }
        }
    }

    fn known_leader(&self) -> Option<(NodeId, ClusterNode)> {
        let metrics = self.raft.metrics().borrow().clone();
        let leader = metrics.current_leader?;
        Some((leader, metrics.membership_config.membership().get_node(&leader)?.clone()))
    }

    /// Sends `batch` to the leader (`leader`, or the next one known), then waits until this peer
    /// applied it too. Tries another leader only when the batch cannot have been proposed.
    async fn forward(
        &self,
        batch: OpBatch,
        mut leader: Option<(NodeId, ClusterNode)>,
        deadline: Instant,
    ) -> Result<u64> {
        let mut pause = Duration::from_millis(20);
        loop {
            let (leader_id, node) = match leader.take() {
                Some(known) => known,
                None => self.wait_for_leader(deadline).await?,
            };
            let retry_reason = if leader_id == self.node_id {
                // Elected meanwhile.
                match self.propose(batch.clone(), deadline).await? {
                    Proposed::Committed(index) => return Ok(index),
                    Proposed::NotLeader(next) => leader = next,
                }
                "this peer stopped leading before it proposed the write".to_string()
            } else {
                match self.forward_once(&batch, leader_id, &node, deadline).await? {
                    Forwarded::Committed(index) => return self.applied_here(index, deadline).await,
                    Forwarded::NotLeader(next) => {
                        leader = next.and_then(|id| Some((id, self.node(id)?)));
                        format!("peer {node} does not lead")
                    }
                    Forwarded::Unreachable(why) => why,
                }
            };
            if Instant::now() + pause >= deadline {
                return Err(Error::Unavailable(format!(
                    "no leader took the write within {:?}: {retry_reason}",
                    self.timing.commit_timeout
                )));
            }
            tracing::debug!(reason = %retry_reason, "forwarding the write again");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(250));
        }
    }

    /// One forward to `leader`, given up when the deadline passes or this peer learns of a
    /// newer leader (the old one may be cut off and never answer).
    #[tracing::instrument(level = "debug", name = "forward", skip_all, fields(leader = %node))]
    async fn forward_once(
        &self,
        batch: &OpBatch,
        leader_id: NodeId,
        node: &ClusterNode,
        deadline: Instant,
    ) -> Result<Forwarded> {
        let peer = node.peer().ok_or_else(|| Error::PeerUnreachable(format!("leader {node} has a bad peer ID")))?;
        let sent = async {
            let mut lane = self.leader_lane.lock().await;
            if !matches!(&*lane, Some((to, _)) if *to == peer) {
                *lane = Some((peer, self.p2p.lane(peer, node.multiaddrs())));
            }
            let (_, lane) = lane.as_mut().expect("just set");
            lane.call(RpcRequest::Write(batch.clone())).await
        };
        let answer = tokio::select! {
            answer = sent => answer,
            _ = self.leader_changed_from(leader_id) => {
                return Err(in_doubt(&format!("leadership moved away from {node} while the write was in flight")))
            }
            _ = tokio::time::sleep_until(deadline) => {
                return Err(in_doubt(&format!("the leader {node} did not answer within {:?}", self.timing.commit_timeout)))
            }
        };
        match answer {
            Ok(RpcResponse::Written { index }) => Ok(Forwarded::Committed(index)),
            Ok(RpcResponse::NotLeader { leader }) => Ok(Forwarded::NotLeader(leader)),
            Ok(other) => Err(Error::Remote { code: 500, message: format!("unexpected answer to a write: {other:?}") }),
            // The request never left: safe to send again.
            Err(Error::PeerUnreachable(why)) => Ok(Forwarded::Unreachable(why)),
            Err(e @ Error::Remote { .. }) => Err(e),
            Err(e) => Err(in_doubt(&format!("the call to the leader {node} failed: {e}"))),
        }
    }

    /// Resolves once this peer knows a leader other than `leader`.
    async fn leader_changed_from(&self, leader: NodeId) {
        let mut metrics = self.raft.metrics();
        let _ = metrics.wait_for(|m| m.current_leader.is_some_and(|l| l != leader)).await;
    }

    async fn wait_for_leader(&self, deadline: Instant) -> Result<(NodeId, ClusterNode)> {
        let mut metrics = self.raft.metrics();
        let known = async {
            metrics
                .wait_for(|m| m.current_leader.is_some_and(|l| m.membership_config.membership().get_node(&l).is_some()))
                .await
                .is_ok()
        };
        match tokio::time::timeout_at(deadline, known).await {
            Ok(true) => self.known_leader().ok_or_else(|| no_leader(self.timing.commit_timeout)),
            Ok(false) => Err(Error::ShuttingDown),
            Err(_) => Err(no_leader(self.timing.commit_timeout)),
        }
    }

    fn node(&self, id: NodeId) -> Option<ClusterNode> {
        self.raft.metrics().borrow().membership_config.membership().get_node(&id).cloned()
    }

    /// Read-your-writes: the write is answered once this peer applied it too.
    async fn applied_here(&self, index: u64, deadline: Instant) -> Result<u64> {
        let wait = deadline.saturating_duration_since(Instant::now());
        match self.raft.wait(Some(wait)).applied_index_at_least(Some(index), "forwarded write").await {
            Ok(_) => Ok(index),
            Err(_) => Err(Error::Unavailable(format!(
                "the write was committed (log index {index}) but this peer has not applied it within {:?}; \
                 it will: read it from the leader meanwhile",
                self.timing.commit_timeout
            ))),
        }
    }
}

/// How a forward ended, short of an error for the client.
enum Forwarded {
    Committed(u64),
    /// The peer does not lead (and names the leader it knows): nothing was proposed.
    NotLeader(Option<NodeId>),
    /// The peer could not be reached: nothing was sent.
    Unreachable(String),
}

fn answer(requests: Vec<Request>, outcome: &Result<u64>) {
    for request in requests {
        // The caller may have given up waiting; the write stands regardless.
        let _ = request.reply.send(outcome.as_ref().copied().map_err(Error::duplicate));
    }
}

/// A write whose fate is unknown: it may still be committed.
fn in_doubt(why: &str) -> Error {
    Error::Unavailable(format!(
        "the write's outcome is unknown ({why}); it may or may not be committed: retry it or read it back"
    ))
}

fn no_leader(waited: Duration) -> Error {
    Error::Unavailable(format!("no leader is known after {waited:?} (an election may be running, or quorum is lost)"))
}

fn fatal(e: openraft::error::Fatal<u64>) -> Error {
    match e {
        openraft::error::Fatal::Stopped => Error::ShuttingDown,
        e => Error::Storage(format!("Raft stopped: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::p2p::P2pConfig;

    #[test]
    fn batches_are_bounded_by_count_and_by_bytes() {
        const TYPICAL: u64 = 500;
        let largest = (MAX_BATCH_BYTES / MAX_OP_BYTES) as usize;
        // (ops in the batch, their bytes, the next op's bytes, whether it joins)
        let cases: &[(usize, u64, u64, bool)] = &[
            (0, 0, MAX_OP_BYTES, true),
            (1, TYPICAL, TYPICAL, true),
            (MAX_BATCH - 1, (MAX_BATCH as u64 - 1) * TYPICAL, TYPICAL, true),
            (MAX_BATCH, MAX_BATCH as u64 * TYPICAL, TYPICAL, false),
            (largest - 1, (largest as u64 - 1) * MAX_OP_BYTES, MAX_OP_BYTES, true),
            (largest, largest as u64 * MAX_OP_BYTES, MAX_OP_BYTES, false),
            (largest, largest as u64 * MAX_OP_BYTES, 1, false),
            (2, MAX_BATCH_BYTES - 10, 10, true),
            (2, MAX_BATCH_BYTES - 10, 11, false),
        ];
        for &(len, bytes, op_bytes, joins) in cases {
            assert_eq!(has_room(len, bytes, op_bytes), joins, "{len} ops of {bytes} bytes, then {op_bytes}");
        }
    }

    #[test]
    fn a_full_batch_fits_in_one_request_on_its_own() {
        const { assert!(MAX_OP_BYTES <= MAX_BATCH_BYTES) };
        assert!(MAX_BATCH_BYTES * 8 <= P2pConfig::new([0; 32]).max_request_size, "room for the envelope");
    }
}
