//! `pin add --wait` / `pin rm --wait`: poll the status until the pin reached its target on the
//! peers that matter, printing progress to stderr.

use std::time::Duration;

use libp2p_identity::PeerId;

use crate::client::Client;
use crate::types::{Cid, GlobalPinInfo, TrackerStatus};
use crate::{Error, Result};

const POLL_EVERY: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Pinned,
    Unpinned,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    Done,
    Pending { done: usize, total: usize },
    Failed(String),
}

/// Where `info` stands. For pinning, the peers that matter are `allocations` (every non-remote
/// peer when empty, i.e. "everywhere"); for unpinning, every peer.
pub fn progress(info: &GlobalPinInfo, target: Target, allocations: &[PeerId]) -> Progress {
    let wanted = |peer: &str| allocations.is_empty() || allocations.iter().any(|a| a.to_string() == peer);
    let relevant: Vec<(&String, TrackerStatus, &str)> = info
        .peer_map
        .iter()
        .filter(|(peer, p)| match target {
            Target::Pinned => wanted(peer) && p.status != TrackerStatus::Remote,
            Target::Unpinned => true,
        })
        .map(|(peer, p)| (peer, p.status, p.error.as_str()))
        .collect();
    if let Some((peer, status, error)) = relevant.iter().find(|(_, s, _)| s.is_error()) {
        return Progress::Failed(format!("{peer}: {}: {error}", status.as_str()));
    }
    let reached = |s: TrackerStatus| match target {
        Target::Pinned => s == TrackerStatus::Pinned,
        Target::Unpinned => matches!(s, TrackerStatus::Unpinned | TrackerStatus::Remote),
    };
    let done = relevant.iter().filter(|(_, s, _)| reached(*s)).count();
    if done == relevant.len() && (target == Target::Unpinned || done > 0) {
        Progress::Done
    } else {
        Progress::Pending { done, total: relevant.len() }
    }
}

/// Polls until done, failed or `timeout` (zero = no limit).
pub async fn wait(client: &Client, cid: &Cid, target: Target, allocations: &[PeerId], timeout: Duration) -> Result<()> {
    let deadline = (!timeout.is_zero()).then(|| tokio::time::Instant::now() + timeout);
    let word = match target {
        Target::Pinned => "pinned",
        Target::Unpinned => "unpinned",
    };
    loop {
        let info = client.status(cid, false).await?;
        match progress(&info, target, allocations) {
            Progress::Done => return Ok(()),
            Progress::Failed(why) => return Err(Error::Ipfs(why)),
            Progress::Pending { done, total } => eprintln!("waiting for {cid}: {done}/{total} {word}"),
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() + POLL_EVERY > d) {
            return Err(Error::Timeout(format!("{cid} was not {word} within {timeout:?}")));
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::types::{parse_cid, PinInfoShort};

    fn info(statuses: &[(PeerId, TrackerStatus)]) -> GlobalPinInfo {
        let short = |status| PinInfoShort {
            peername: String::new(),
            ipfs_peer_id: None,
            ipfs_peer_addresses: vec![],
            status,
            timestamp: chrono::Utc::now(),
            error: if status == TrackerStatus::PinError { "boom".into() } else { String::new() },
            attempt_count: 0,
            priority_pin: false,
        };
        GlobalPinInfo {
            cid: parse_cid("QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG").unwrap(),
            name: String::new(),
            allocations: vec![],
            origins: vec![],
            created: None,
            metadata: None,
            peer_map: statuses.iter().map(|(p, s)| (p.to_string(), short(*s))).collect::<BTreeMap<_, _>>(),
        }
    }

    #[test]
    fn pinned_on_allocations_only() {
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        let gpi = info(&[(a, TrackerStatus::Pinned), (b, TrackerStatus::Pinning), (c, TrackerStatus::Remote)]);
        assert_eq!(progress(&gpi, Target::Pinned, &[a]), Progress::Done);
        assert_eq!(progress(&gpi, Target::Pinned, &[a, b]), Progress::Pending { done: 1, total: 2 });
        assert_eq!(progress(&gpi, Target::Pinned, &[]), Progress::Pending { done: 1, total: 2 });
        let failed = info(&[(a, TrackerStatus::PinError)]);
        assert!(matches!(progress(&failed, Target::Pinned, &[]), Progress::Failed(m) if m.contains("boom")));
        assert_eq!(progress(&info(&[]), Target::Pinned, &[]), Progress::Pending { done: 0, total: 0 });
    }

    #[test]
    fn unpinned_everywhere() {
        let (a, b) = (PeerId::random(), PeerId::random());
        assert_eq!(
            progress(&info(&[(a, TrackerStatus::Unpinned), (b, TrackerStatus::Remote)]), Target::Unpinned, &[]),
            Progress::Done
        );
        assert_eq!(
            progress(&info(&[(a, TrackerStatus::Unpinning), (b, TrackerStatus::Unpinned)]), Target::Unpinned, &[]),
            Progress::Pending { done: 1, total: 2 }
        );
    }
}
