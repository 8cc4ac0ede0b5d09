//! What the tracker does about a CID, decided from what it observes. Pure functions: the callers
//! hold the observations and carry the plan out.

use libp2p_identity::PeerId;

use super::queue::{OpKind, Phase};
use super::status::{IpfsView, Membership};
use crate::state::StateChange;
use crate::types::PinMode;

/// What this peer should hold after a state change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Want {
    Pinned(PinMode),
    /// Not to be pinned here; `ours` when it was allocated here before, so its IPFS pin is ours to
    /// remove (pins the cluster never asked of us are left alone).
    NotPinned {
        ours: bool,
    },
}

/// What to do with the CID's operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    Nothing,
    /// Queue this operation fresh, replacing a waiting or failed one.
    Queue(OpKind),
    /// The operation is running: do this once it ends.
    Retarget(OpKind),
    /// Drop the waiting or failed operation: the daemon is already as wanted.
    Cancel,
}

pub(crate) fn want_after(change: &StateChange, me: &PeerId) -> Want {
    match change {
        StateChange::Pinned { pin, .. } if pin.is_allocated_to(me) => Want::Pinned(pin.mode),
        StateChange::Pinned { previous, .. } => {
            Want::NotPinned { ours: previous.as_ref().is_some_and(|p| p.is_allocated_to(me)) }
        }
        StateChange::Unpinned { pin } => Want::NotPinned { ours: pin.is_allocated_to(me) },
    }
}

/// The plan for a state change, given the CID's operation (kind and phase) and the daemon's view.
pub(crate) fn plan_change(want: Want, op: Option<(OpKind, Phase)>, ipfs: IpfsView) -> Plan {
    use OpKind::{Pin, Unpin};
    use Phase::{Backoff, Failed, Queued, Running};
    match (want, op) {
        (Want::Pinned(mode), None) if ipfs.satisfies(mode) => Plan::Nothing,
        (Want::Pinned(_), None) => Plan::Queue(Pin),
        (Want::Pinned(_), Some((Pin, Queued | Running { .. }))) => Plan::Nothing,
        // Pinned again after failures: a fresh start, as the user asked again.
        (Want::Pinned(_), Some((Pin, Backoff | Failed))) => Plan::Queue(Pin),
        (Want::Pinned(_), Some((Unpin, Running { .. }))) => Plan::Retarget(Pin),
        (Want::Pinned(mode), Some((Unpin, _))) if ipfs.satisfies(mode) => Plan::Cancel,
        (Want::Pinned(_), Some((Unpin, _))) => Plan::Queue(Pin),

        // Unknown counts as "maybe pinned": an unpin of something not pinned is harmless.
        (Want::NotPinned { ours: true }, None) if ipfs != IpfsView::Missing => Plan::Queue(Unpin),
        (Want::NotPinned { .. }, None) => Plan::Nothing,
        // A pin operation exists only for pins allocated here, so the CID is ours either way.
        (Want::NotPinned { .. }, Some((Pin, Running { .. }))) => Plan::Retarget(Unpin),
        (Want::NotPinned { .. }, Some((Pin, _))) if ipfs == IpfsView::Missing => Plan::Cancel,
        (Want::NotPinned { .. }, Some((Pin, _))) => Plan::Queue(Unpin),
        (Want::NotPinned { .. }, Some((Unpin, _))) => Plan::Nothing,
    }
}

/// The plan for a `recover` of one CID: retry what failed or waits, repair what is missing.
pub(crate) fn plan_recover(membership: Membership, op: Option<(OpKind, Phase)>, ipfs: IpfsView) -> Plan {
    match (membership, op) {
        (_, Some((kind, Phase::Failed | Phase::Backoff))) => Plan::Queue(kind),
        (_, Some(_)) => Plan::Nothing,
        (Membership::Here(mode), None) if ipfs != IpfsView::Unknown && !ipfs.satisfies(mode) => {
            Plan::Queue(OpKind::Pin)
        }
        (_, None) => Plan::Nothing,
    }
}

/// Sync: whether a pin allocated here must be queued because the daemon lacks it.
pub(crate) fn needs_repair(mode: PinMode, op: Option<(OpKind, Phase)>, ipfs: IpfsView) -> bool {
    op.is_none() && ipfs != IpfsView::Unknown && !ipfs.satisfies(mode)
}

/// Sync: whether a waiting or failed operation is already accomplished in the daemon (pinned or
/// unpinned by other means), so it can be dropped.
pub(crate) fn already_done(kind: OpKind, phase: Phase, mode: PinMode, ipfs: IpfsView) -> bool {
    matches!(phase, Phase::Backoff | Phase::Failed)
        && match kind {
            OpKind::Pin => ipfs.satisfies(mode),
            OpKind::Unpin => ipfs == IpfsView::Missing,
        }
}

/// What to do about an unpin record (an acknowledged removal whose IPFS side may not have run).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RecordPlan {
    Unpin,
    /// Nothing for this peer to do: drop the record.
    Forget,
    /// Decide later (an operation is on the CID, or the daemon's pin set is not known).
    Keep,
}

/// Sync: the plan for an unpin record, given whether it names this peer (the pin was allocated
/// here), where the CID stands in the pinset now, its operation and the daemon's view.
pub(crate) fn plan_unpin_record(
    names_me: bool,
    membership: Membership,
    op: Option<(OpKind, Phase)>,
    ipfs: IpfsView,
) -> RecordPlan {
    match (names_me, membership, op, ipfs) {
        // Never asked of this peer: an IPFS pin of it is the user's, left alone.
        (false, ..) => RecordPlan::Forget,
        // Allocated here again: nothing to undo.
        (true, Membership::Here(_), ..) => RecordPlan::Forget,
        // A running unpin drops the record when it succeeds; a pin operation for a pin no longer
        // here is the sync's stale check's to turn into an unpin.
        (true, _, Some(_), _) => RecordPlan::Keep,
        (true, _, None, IpfsView::Has(_)) => RecordPlan::Unpin,
        (true, _, None, IpfsView::Missing) => RecordPlan::Forget,
        (true, _, None, IpfsView::Unknown) => RecordPlan::Keep,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::fixtures::pin;
    use IpfsView::{Has, Missing, Unknown};
    use OpKind::{Pin, Unpin};
    use Phase::{Backoff, Failed, Queued, Running};
    use PinMode::{Direct, Recursive};

    const CID: &str = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG";

    #[test]
    fn what_a_change_asks_for() {
        let me = PeerId::random();
        let other = PeerId::random();
        let everywhere = pin(CID);
        let here = crate::types::Pin { allocations: vec![me], mode: Direct, ..pin(CID) };
        let elsewhere = crate::types::Pin { allocations: vec![other], ..pin(CID) };
        let table = [
            (StateChange::Pinned { pin: everywhere.clone(), previous: None }, Want::Pinned(Recursive)),
            (StateChange::Pinned { pin: here.clone(), previous: Some(elsewhere.clone()) }, Want::Pinned(Direct)),
            (StateChange::Pinned { pin: elsewhere.clone(), previous: None }, Want::NotPinned { ours: false }),
            (
                StateChange::Pinned { pin: elsewhere.clone(), previous: Some(here.clone()) },
                Want::NotPinned { ours: true },
            ),
            (
                StateChange::Pinned { pin: elsewhere.clone(), previous: Some(elsewhere.clone()) },
                Want::NotPinned { ours: false },
            ),
            (StateChange::Unpinned { pin: here }, Want::NotPinned { ours: true }),
            (StateChange::Unpinned { pin: elsewhere }, Want::NotPinned { ours: false }),
        ];
        for (change, expected) in table {
            assert_eq!(want_after(&change, &me), expected, "{change:?}");
        }
    }

    #[test]
    fn plans_for_changes() {
        let pinned = Want::Pinned(Recursive);
        let ours = Want::NotPinned { ours: true };
        let foreign = Want::NotPinned { ours: false };
        let table = [
            // Pin wanted.
            (pinned, None, Has(Recursive), Plan::Nothing),
            (Want::Pinned(Direct), None, Has(Recursive), Plan::Nothing),
            (pinned, None, Has(Direct), Plan::Queue(Pin)),
            (pinned, None, Missing, Plan::Queue(Pin)),
            (pinned, None, Unknown, Plan::Queue(Pin)),
            (pinned, Some((Pin, Queued)), Missing, Plan::Nothing),
            (pinned, Some((Pin, Running { ran: Pin })), Missing, Plan::Nothing),
            (pinned, Some((Pin, Backoff)), Missing, Plan::Queue(Pin)),
            (pinned, Some((Pin, Failed)), Missing, Plan::Queue(Pin)),
            (pinned, Some((Unpin, Queued)), Has(Recursive), Plan::Cancel),
            (pinned, Some((Unpin, Failed)), Has(Recursive), Plan::Cancel),
            (pinned, Some((Unpin, Queued)), Missing, Plan::Queue(Pin)),
            (pinned, Some((Unpin, Running { ran: Unpin })), Has(Recursive), Plan::Retarget(Pin)),
            (pinned, Some((Unpin, Running { ran: Pin })), Missing, Plan::Retarget(Pin)),
            // Unpin wanted.
            (ours, None, Has(Recursive), Plan::Queue(Unpin)),
            (ours, None, Unknown, Plan::Queue(Unpin)),
            (ours, None, Missing, Plan::Nothing),
            (foreign, None, Has(Recursive), Plan::Nothing),
            (foreign, None, Unknown, Plan::Nothing),
            (ours, Some((Pin, Queued)), Missing, Plan::Cancel),
            (ours, Some((Pin, Failed)), Missing, Plan::Cancel),
            (ours, Some((Pin, Queued)), Has(Direct), Plan::Queue(Unpin)),
            (ours, Some((Pin, Backoff)), Unknown, Plan::Queue(Unpin)),
            (ours, Some((Pin, Running { ran: Pin })), Missing, Plan::Retarget(Unpin)),
            (ours, Some((Pin, Running { ran: Unpin })), Missing, Plan::Retarget(Unpin)),
            (ours, Some((Unpin, Queued)), Has(Recursive), Plan::Nothing),
            (ours, Some((Unpin, Running { ran: Unpin })), Has(Recursive), Plan::Nothing),
        ];
        for (want, op, ipfs, expected) in table {
            assert_eq!(plan_change(want, op, ipfs), expected, "{want:?} {op:?} {ipfs:?}");
        }
    }

    #[test]
    fn plans_for_recover() {
        let here = Membership::Here(Recursive);
        let table = [
            (here, Some((Pin, Failed)), Missing, Plan::Queue(Pin)),
            (here, Some((Pin, Backoff)), Missing, Plan::Queue(Pin)),
            (Membership::Remote, Some((Unpin, Failed)), Has(Recursive), Plan::Queue(Unpin)),
            (Membership::Absent, Some((Unpin, Failed)), Has(Recursive), Plan::Queue(Unpin)),
            (here, Some((Pin, Queued)), Missing, Plan::Nothing),
            (here, Some((Pin, Running { ran: Pin })), Missing, Plan::Nothing),
            (here, None, Missing, Plan::Queue(Pin)),
            (here, None, Has(Direct), Plan::Queue(Pin)),
            (here, None, Has(Recursive), Plan::Nothing),
            (here, None, Unknown, Plan::Nothing),
            (Membership::Remote, None, Missing, Plan::Nothing),
            (Membership::Absent, None, Has(Recursive), Plan::Nothing),
        ];
        for (membership, op, ipfs, expected) in table {
            assert_eq!(plan_recover(membership, op, ipfs), expected, "{membership:?} {op:?} {ipfs:?}");
        }
    }

    #[test]
    fn plans_for_unpin_records() {
        use Membership::{Absent, Here, Remote};
        use RecordPlan as R;
        let table = [
            (true, Absent, None, Has(Recursive), R::Unpin),
            (true, Absent, None, Has(Direct), R::Unpin),
            (true, Remote, None, Has(Recursive), R::Unpin),
            (true, Absent, None, Missing, R::Forget),
            (true, Remote, None, Missing, R::Forget),
            (true, Absent, None, Unknown, R::Keep),
            (false, Absent, None, Has(Recursive), R::Forget),
            (false, Remote, None, Has(Recursive), R::Forget),
            (true, Here(Recursive), None, Has(Recursive), R::Forget),
            (true, Here(Recursive), None, Missing, R::Forget),
            (true, Here(Recursive), Some((Pin, Queued)), Missing, R::Forget),
            (true, Absent, Some((Unpin, Queued)), Has(Recursive), R::Keep),
            (true, Absent, Some((Unpin, Failed)), Has(Recursive), R::Keep),
            (true, Remote, Some((Pin, Queued)), Missing, R::Keep),
        ];
        for (names_me, membership, op, ipfs, expected) in table {
            assert_eq!(
                plan_unpin_record(names_me, membership, op, ipfs),
                expected,
                "{names_me} {membership:?} {op:?} {ipfs:?}"
            );
        }
    }

    #[test]
    fn what_a_sync_implies() {
        assert!(needs_repair(Recursive, None, Missing));
        assert!(needs_repair(Recursive, None, Has(Direct)));
        assert!(!needs_repair(Direct, None, Has(Recursive)));
        assert!(!needs_repair(Recursive, None, Unknown));
        assert!(!needs_repair(Recursive, Some((Pin, Failed)), Missing), "errors wait for recover");

        assert!(already_done(Pin, Failed, Recursive, Has(Recursive)));
        assert!(already_done(Pin, Backoff, Direct, Has(Recursive)));
        assert!(!already_done(Pin, Failed, Recursive, Missing));
        assert!(!already_done(Pin, Queued, Recursive, Has(Recursive)), "queued work just runs");
        assert!(already_done(Unpin, Failed, Recursive, Missing));
        assert!(!already_done(Unpin, Failed, Recursive, Has(Direct)));
        assert!(!already_done(Unpin, Backoff, Recursive, Unknown));
    }
}
