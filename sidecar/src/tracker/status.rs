//! What status a CID has on this peer, derived from what the tracker observes. Pure functions.

use super::queue::{OpKind, Phase};
use crate::types::{PinMode, TrackerStatus};

/// What the daemon's pin set says about a CID, as last known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IpfsView {
    /// The daemon's pin set has not been read yet.
    Unknown,
    Missing,
    Has(PinMode),
}

impl IpfsView {
    /// Whether the daemon holds the CID at least as `want` asks (recursive covers direct).
    pub fn satisfies(self, want: PinMode) -> bool {
        self == IpfsView::Has(PinMode::Recursive) || self == IpfsView::Has(want)
    }
}

/// Where a CID stands in the pinset with respect to this peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Membership {
    Absent,
    /// In the pinset, allocated to other peers.
    Remote,
    /// In the pinset and allocated here, to be pinned with this mode.
    Here(PinMode),
}

/// The status of a CID with an operation in the table.
pub(crate) fn of_op(kind: OpKind, phase: Phase) -> TrackerStatus {
    match (kind, phase) {
        (OpKind::Pin, Phase::Running { ran: OpKind::Pin }) => TrackerStatus::Pinning,
        (OpKind::Unpin, Phase::Running { ran: OpKind::Unpin }) => TrackerStatus::Unpinning,
        // Running the other operation means this one is queued behind it.
        (OpKind::Pin, Phase::Queued | Phase::Backoff | Phase::Running { .. }) => TrackerStatus::PinQueued,
        (OpKind::Unpin, Phase::Queued | Phase::Backoff | Phase::Running { .. }) => TrackerStatus::UnpinQueued,
        (OpKind::Pin, Phase::Failed) => TrackerStatus::PinError,
        (OpKind::Unpin, Phase::Failed) => TrackerStatus::UnpinError,
    }
}

pub(crate) const UNKNOWN_PINSET: &str = "the IPFS daemon's pin set has not been read yet";
pub(crate) const QUEUE_FULL: &str =
    "pin queue full (max_pin_queue_size): not queued; the next IPFS sync queues it when there is room";

/// The status of a CID with nothing in the table, and the error text that goes with it.
/// `queue_full` says a pin was refused for lack of room since the last complete sync: an
/// allocated pin missing from IPFS is then most likely one of those.
/// `ipfs` is asked only for a pin allocated here: it looks the CID up among every pin the daemon
/// holds, and a listing asks for millions of statuses.
pub(crate) fn of_idle(
    membership: Membership,
    ipfs: impl FnOnce() -> IpfsView,
    queue_full: bool,
) -> (TrackerStatus, Option<&'static str>) {
    let mode = match membership {
        Membership::Absent => return (TrackerStatus::Unpinned, None),
        Membership::Remote => return (TrackerStatus::Remote, None),
        Membership::Here(mode) => mode,
    };
    match ipfs() {
        ipfs if ipfs.satisfies(mode) => (TrackerStatus::Pinned, None),
        IpfsView::Unknown => (TrackerStatus::ClusterError, Some(UNKNOWN_PINSET)),
        _ if queue_full => (TrackerStatus::PinError, Some(QUEUE_FULL)),
        _ => (TrackerStatus::UnexpectedlyUnpinned, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use IpfsView::*;
    use Membership::*;
    use OpKind::*;
    use PinMode::*;
    use TrackerStatus as S;

    #[test]
    fn statuses_of_operations() {
        let table = [
            (Pin, Phase::Queued, S::PinQueued),
            (Pin, Phase::Backoff, S::PinQueued),
            (Pin, Phase::Running { ran: Pin }, S::Pinning),
            (Pin, Phase::Running { ran: Unpin }, S::PinQueued),
            (Pin, Phase::Failed, S::PinError),
            (Unpin, Phase::Queued, S::UnpinQueued),
            (Unpin, Phase::Backoff, S::UnpinQueued),
            (Unpin, Phase::Running { ran: Unpin }, S::Unpinning),
            (Unpin, Phase::Running { ran: Pin }, S::UnpinQueued),
            (Unpin, Phase::Failed, S::UnpinError),
        ];
        for (kind, phase, expected) in table {
            assert_eq!(of_op(kind, phase), expected, "{kind:?} {phase:?}");
        }
    }

    #[test]
    fn statuses_without_operations() {
        let table = [
            (Absent, Missing, false, S::Unpinned),
            (Absent, Has(Recursive), false, S::Unpinned),
            (Remote, Missing, false, S::Remote),
            (Remote, Has(Recursive), false, S::Remote),
            (Here(Recursive), Has(Recursive), false, S::Pinned),
            (Here(Direct), Has(Recursive), false, S::Pinned),
            (Here(Direct), Has(Direct), false, S::Pinned),
            (Here(Recursive), Has(Direct), false, S::UnexpectedlyUnpinned),
            (Here(Recursive), Missing, false, S::UnexpectedlyUnpinned),
            (Here(Recursive), Missing, true, S::PinError),
            (Here(Recursive), Has(Recursive), true, S::Pinned),
            (Here(Recursive), Unknown, false, S::ClusterError),
            (Here(Recursive), Unknown, true, S::ClusterError),
        ];
        for (membership, ipfs, queue_full, expected) in table {
            let (status, error) = of_idle(membership, || ipfs, queue_full);
            assert_eq!(status, expected, "{membership:?} {ipfs:?} full={queue_full}");
            assert_eq!(error.is_some(), status.is_error(), "errors and only errors explain themselves");
        }
    }
}
