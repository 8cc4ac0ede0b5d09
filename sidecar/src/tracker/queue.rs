//! The operation table: one entry per CID with an operation queued, running, waiting to retry or
//! failed, and the queue that orders them. No IO; time comes in as an argument.
//!
//! Lanes: new pins (and recovered ones) go to the priority lane, retries and repairs to the normal
//! lane, unpins to their own lane. The priority lane always goes before the normal one; unpins
//! alternate with pins, so neither starves the other.
//!
//! A queued entry is a ticket `(key, seq)`; re-queueing an operation gives it a new `seq`, so
//! earlier tickets and timers for it go stale and are skipped when popped, instead of being
//! searched for and removed.

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap, VecDeque};

use chrono::{DateTime, Utc};
use multiaddr::Multiaddr;
use tokio::time::Instant;

use super::config::TrackerConfig;
use crate::types::{Cid, CidKey, PinMode};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpKind {
    Pin,
    Unpin,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Queued,
    /// At the daemon. `ran` is what is executing; the operation's kind may since have changed
    /// (a pin removed while pinning), and then it is queued again as that kind once `ran` ends.
    Running {
        ran: OpKind,
    },
    /// Waiting out a retry backoff.
    Backoff,
    /// Out of retries: stays until recovered.
    Failed,
}

/// Where a pin operation waits. Unpins always wait in their own lane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lane {
    Priority,
    Normal,
}

/// What an operation must do, as a state change or a sync asks for it.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    pub cid: Cid,
    pub kind: OpKind,
    pub mode: PinMode,
    pub origins: Vec<Multiaddr>,
    /// Whether the CID is in the pinset (false for unpins of removed pins).
    pub in_pinset: bool,
}

#[derive(Clone, Debug)]
pub(crate) struct Op {
    pub cid: Cid,
    pub kind: OpKind,
    pub mode: PinMode,
    pub origins: Vec<Multiaddr>,
    pub phase: Phase,
    pub attempt_count: u32,
    pub priority: bool,
    pub error: Option<String>,
    pub timestamp: DateTime<Utc>,
    pub in_pinset: bool,
    /// Failures since the operation was last queued fresh or recovered.
    retries: u32,
    seq: u64,
}

/// A popped operation, handed to a worker.
#[derive(Clone, Debug)]
pub(crate) struct Job {
    pub key: CidKey,
    pub cid: Cid,
    pub kind: OpKind,
    pub mode: PinMode,
    pub origins: Vec<Multiaddr>,
}

/// How a daemon call ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Done,
    /// The daemon could not be reached: the attempt does not use up a retry.
    Unreachable(String),
    Failed(String),
}

/// Operations by phase, kept as they change (for metrics without a scan).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub queued: usize,
    pub running: usize,
    pub failed: usize,
}

impl Counts {
    fn slot(&mut self, phase: Phase) -> &mut usize {
        match phase {
            Phase::Queued | Phase::Backoff => &mut self.queued,
            Phase::Running { .. } => &mut self.running,
            Phase::Failed => &mut self.failed,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LaneId {
    Priority,
    Normal,
    Unpins,
}

#[derive(Default)]
pub(crate) struct OpTable {
    ops: HashMap<CidKey, Op>,
    priority: VecDeque<(CidKey, u64)>,
    normal: VecDeque<(CidKey, u64)>,
    unpins: VecDeque<(CidKey, u64)>,
    timers: BinaryHeap<Reverse<(Instant, u64, CidKey)>>,
    next_seq: u64,
    unpins_next: bool,
    counts: Counts,
}

impl OpTable {
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn get(&self, key: &CidKey) -> Option<&Op> {
        self.ops.get(key)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&CidKey, &Op)> {
        self.ops.iter()
    }

    pub fn counts(&self) -> Counts {
        self.counts
    }

    pub fn set_in_pinset(&mut self, key: &CidKey, in_pinset: bool) {
        if let Some(op) = self.ops.get_mut(key) {
            op.in_pinset = in_pinset;
        }
    }

    /// Attaches a note to a pending operation's status (shown as its `error` until it runs).
    pub fn annotate(&mut self, key: &CidKey, note: &str) {
        if let Some(op) = self.ops.get_mut(key) {
            op.error = Some(note.to_string());
        }
    }

    /// Queues `target` fresh (replacing any waiting or failed operation of the CID). With
    /// `keep_attempts` the attempt count carries on (a recover), else it starts at 0.
    /// Must not be called for a running operation: see [`OpTable::retarget`].
    pub fn queue(&mut self, key: &CidKey, target: Target, lane: Lane, keep_attempts: bool) {
        let seq = self.bump_seq();
        let op = match self.ops.entry(key.clone()) {
            Entry::Occupied(entry) => {
                let op = entry.into_mut();
                debug_assert!(!matches!(op.phase, Phase::Running { .. }), "re-queueing a running op");
                set_phase(&mut self.counts, op, Phase::Queued);
                op
            }
            Entry::Vacant(entry) => {
                *self.counts.slot(Phase::Queued) += 1;
                entry.insert(Op {
                    cid: target.cid,
                    kind: target.kind,
                    mode: target.mode,
                    origins: Vec::new(),
                    phase: Phase::Queued,
                    attempt_count: 0,
                    priority: false,
                    error: None,
                    timestamp: Utc::now(),
                    in_pinset: target.in_pinset,
                    retries: 0,
                    seq,
                })
            }
        };
        op.cid = target.cid;
        op.kind = target.kind;
        op.mode = target.mode;
        op.origins = target.origins;
        op.in_pinset = target.in_pinset;
        if !keep_attempts {
            op.attempt_count = 0;
        }
        op.retries = 0;
        op.error = None;
        op.priority = lane == Lane::Priority;
        op.timestamp = Utc::now();
        op.seq = seq;
        let lane = lane_of(op.kind, lane);
        self.lane(lane).push_back((key.clone(), seq));
    }

    /// Changes what a running operation must do once the daemon call in progress ends.
    pub fn retarget(&mut self, key: &CidKey, target: Target) {
        if let Some(op) = self.ops.get_mut(key) {
            op.kind = target.kind;
            op.mode = target.mode;
            op.origins = target.origins;
            op.in_pinset = target.in_pinset;
            op.timestamp = Utc::now();
        }
    }

    /// Forgets a waiting or failed operation (its tickets go stale). Running ones are left alone.
    pub fn cancel(&mut self, key: &CidKey) {
        if let Entry::Occupied(entry) = self.ops.entry(key.clone()) {
            if !matches!(entry.get().phase, Phase::Running { .. }) {
                *self.counts.slot(entry.get().phase) -= 1;
                entry.remove();
            }
        }
    }

    /// The earliest retry timer, to sleep until.
    pub fn next_timer(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Takes the next operation to run and marks it running.
    pub fn next(&mut self, now: Instant) -> Option<Job> {
        self.promote_due(now);
        let order = if self.unpins_next {
            [LaneId::Unpins, LaneId::Priority, LaneId::Normal]
        } else {
            [LaneId::Priority, LaneId::Normal, LaneId::Unpins]
        };
        for lane in order {
            while let Some((key, seq)) = self.lane(lane).pop_front() {
                let Some(op) = self.ops.get_mut(&key) else {
                    continue;
                };
                if op.seq != seq || op.phase != Phase::Queued {
                    continue;
                }
                set_phase(&mut self.counts, op, Phase::Running { ran: op.kind });
                op.timestamp = Utc::now();
                self.unpins_next = lane != LaneId::Unpins;
                return Some(Job { cid: op.cid, kind: op.kind, mode: op.mode, origins: op.origins.clone(), key });
            }
        }
        None
    }

    /// Records how the running operation of `key` ended: done, queued again, backing off or
    /// failed for good. Returns what ran, or `None` when nothing was running for `key`.
    pub fn finish(&mut self, key: &CidKey, outcome: Outcome, now: Instant, config: &TrackerConfig) -> Option<OpKind> {
        let op = self.ops.get_mut(key)?;
        let Phase::Running { ran } = op.phase else {
            return None;
        };
        op.timestamp = Utc::now();
        if op.kind != ran {
            // Superseded while running: whatever came of it, the other operation is what is wanted.
            let target = Target {
                cid: op.cid,
                kind: op.kind,
                mode: op.mode,
                origins: std::mem::take(&mut op.origins),
                in_pinset: op.in_pinset,
            };
            set_phase(&mut self.counts, op, Phase::Queued);
            self.queue(key, target, Lane::Priority, false);
            return Some(ran);
        }
        match outcome {
            Outcome::Done => {
                *self.counts.slot(op.phase) -= 1;
                self.ops.remove(key);
            }
            Outcome::Unreachable(error) => {
                // Not the operation's fault: back to the head of its lane, in the same order.
                op.attempt_count += 1;
                op.error = Some(error);
                set_phase(&mut self.counts, op, Phase::Queued);
                let lane = lane_of(op.kind, if op.priority { Lane::Priority } else { Lane::Normal });
                let ticket = (key.clone(), op.seq);
                self.lane(lane).push_front(ticket);
            }
            Outcome::Failed(error) => {
                op.attempt_count += 1;
                op.retries += 1;
                op.priority = false;
                op.error = Some(error);
                if op.retries > config.max_retries {
                    set_phase(&mut self.counts, op, Phase::Failed);
                } else {
                    set_phase(&mut self.counts, op, Phase::Backoff);
                    let at = now + config.backoff(op.retries);
                    self.timers.push(Reverse((at, op.seq, key.clone())));
                }
            }
        }
        Some(ran)
    }

    /// Moves operations whose backoff has elapsed to the normal (or unpin) lane.
    fn promote_due(&mut self, now: Instant) {
        while let Some(Reverse((at, _, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, seq, key))) = self.timers.pop() else {
                break;
            };
            let Some(op) = self.ops.get_mut(&key) else {
                continue;
            };
            if op.seq != seq || op.phase != Phase::Backoff {
                continue;
            }
            set_phase(&mut self.counts, op, Phase::Queued);
            let lane = lane_of(op.kind, Lane::Normal);
            self.lane(lane).push_back((key, seq));
        }
    }

    fn bump_seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    fn lane(&mut self, lane: LaneId) -> &mut VecDeque<(CidKey, u64)> {
        match lane {
            LaneId::Priority => &mut self.priority,
            LaneId::Normal => &mut self.normal,
            LaneId::Unpins => &mut self.unpins,
        }
    }
}

fn lane_of(kind: OpKind, lane: Lane) -> LaneId {
    match (kind, lane) {
        (OpKind::Unpin, _) => LaneId::Unpins,
        (OpKind::Pin, Lane::Priority) => LaneId::Priority,
        (OpKind::Pin, Lane::Normal) => LaneId::Normal,
    }
}

fn set_phase(counts: &mut Counts, op: &mut Op, phase: Phase) {
    *counts.slot(op.phase) -= 1;
    *counts.slot(phase) += 1;
    op.phase = phase;
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::ipfs::fake::raw_block_cid;

    fn key(n: u32) -> (CidKey, Cid) {
        let cid = raw_block_cid(&n.to_be_bytes());
        (CidKey::of(&cid), cid)
    }

    fn target(n: u32, kind: OpKind) -> Target {
        Target { cid: key(n).1, kind, mode: PinMode::Recursive, origins: vec![], in_pinset: kind == OpKind::Pin }
    }

    fn queue(table: &mut OpTable, n: u32, kind: OpKind, lane: Lane) {
        table.queue(&key(n).0, target(n, kind), lane, false);
    }

    fn popped(table: &mut OpTable, now: Instant) -> Vec<(CidKey, OpKind)> {
        std::iter::from_fn(|| table.next(now)).map(|job| (job.key, job.kind)).collect()
    }

    fn config() -> TrackerConfig {
        TrackerConfig {
            retry_backoff_base: Duration::from_secs(10),
            retry_backoff_cap: Duration::from_secs(100),
            max_retries: 1,
            ..TrackerConfig::default()
        }
    }

    #[test]
    fn priority_lane_goes_first_and_unpins_alternate_with_pins() {
        let mut table = OpTable::default();
        queue(&mut table, 1, OpKind::Pin, Lane::Normal);
        queue(&mut table, 2, OpKind::Pin, Lane::Normal);
        queue(&mut table, 3, OpKind::Pin, Lane::Priority);
        queue(&mut table, 4, OpKind::Pin, Lane::Priority);
        queue(&mut table, 5, OpKind::Unpin, Lane::Priority);
        queue(&mut table, 6, OpKind::Unpin, Lane::Priority);
        let order = popped(&mut table, Instant::now());
        let expected = [
            (3, OpKind::Pin),
            (5, OpKind::Unpin),
            (4, OpKind::Pin),
            (6, OpKind::Unpin),
            (1, OpKind::Pin),
            (2, OpKind::Pin),
        ]
        .map(|(n, kind)| (key(n).0, kind));
        assert_eq!(order, expected);
        assert_eq!(table.counts(), Counts { queued: 0, running: 6, failed: 0 });
    }

    #[test]
    fn requeue_and_cancel_make_old_tickets_stale() {
        let mut table = OpTable::default();
        queue(&mut table, 1, OpKind::Pin, Lane::Normal);
        queue(&mut table, 2, OpKind::Pin, Lane::Normal);
        // Replaced in place by an unpin: one entry, in the unpin lane only.
        queue(&mut table, 1, OpKind::Unpin, Lane::Priority);
        table.cancel(&key(2).0);
        assert_eq!(table.len(), 1);
        assert_eq!(popped(&mut table, Instant::now()), vec![(key(1).0, OpKind::Unpin)]);
    }

    #[test]
    fn failures_back_off_then_fail_for_good() {
        let config = config();
        let start = Instant::now();
        let mut table = OpTable::default();
        let (k, _) = key(1);
        queue(&mut table, 1, OpKind::Pin, Lane::Priority);
        assert!(table.next(start).is_some());
        table.finish(&k, Outcome::Failed("boom".into()), start, &config);
        let op = table.get(&k).unwrap();
        assert_eq!((op.phase, op.attempt_count, op.priority), (Phase::Backoff, 1, false));
        let due = table.next_timer().unwrap();
        assert!(due >= start + Duration::from_secs(5) && due <= start + Duration::from_secs(10));
        assert!(table.next(due - Duration::from_millis(1)).is_none(), "not before its backoff");
        assert_eq!(table.next(due).unwrap().key, k);
        table.finish(&k, Outcome::Failed("boom again".into()), due, &config);
        let op = table.get(&k).unwrap();
        assert_eq!((op.phase, op.attempt_count), (Phase::Failed, 2));
        assert_eq!(op.error.as_deref(), Some("boom again"));
        assert_eq!(table.counts(), Counts { queued: 0, running: 0, failed: 1 });
    }

    #[test]
    fn unreachable_returns_to_the_head_without_using_a_retry() {
        let config = config();
        let now = Instant::now();
        let mut table = OpTable::default();
        queue(&mut table, 1, OpKind::Pin, Lane::Priority);
        queue(&mut table, 2, OpKind::Pin, Lane::Priority);
        let job = table.next(now).unwrap();
        for _ in 0..5 {
            table.finish(&job.key, Outcome::Unreachable("down".into()), now, &config);
            assert_eq!(table.next(now).unwrap().key, job.key);
        }
        let op = table.get(&job.key).unwrap();
        assert_eq!((op.attempt_count, op.priority), (5, true));
        table.finish(&job.key, Outcome::Done, now, &config);
        assert!(table.get(&job.key).is_none());
        assert_eq!(table.next(now).unwrap().key, key(2).0);
    }

    #[test]
    fn retargeted_running_op_is_queued_again_as_the_new_kind() {
        let config = config();
        let now = Instant::now();
        let mut table = OpTable::default();
        let (k, _) = key(1);
        queue(&mut table, 1, OpKind::Pin, Lane::Priority);
        table.next(now).unwrap();
        table.retarget(&k, target(1, OpKind::Unpin));
        assert_eq!(table.finish(&k, Outcome::Failed("ignored".into()), now, &config), Some(OpKind::Pin));
        let op = table.get(&k).unwrap();
        assert_eq!((op.kind, op.phase, op.error.as_deref()), (OpKind::Unpin, Phase::Queued, None));
        assert_eq!(table.next(now).unwrap().kind, OpKind::Unpin);
    }
}
