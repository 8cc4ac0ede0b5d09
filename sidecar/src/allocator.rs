//! Where a pin goes: a pure decision over the candidates the peer knows about.
//!
//! Rules, as in the reference: replication -1 means "every peer" (no allocations listed); otherwise
//! keep current holders that are still candidates, then take the user's preferred peers, then the
//! peers with the most free space, until `max` peers hold the pin. Fewer than `min` is an error.

use libp2p_identity::PeerId;

use crate::types::Cid;
use crate::{Error, Result};

/// A peer that may receive pins, with the free space it last reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub peer: PeerId,
    pub free_space: u64,
}

/// What allocation is asked to decide for one pin.
#[derive(Clone, Debug)]
pub struct AllocationRequest<'a> {
    pub cid: &'a Cid,
    pub replication_min: i32,
    pub replication_max: i32,
    /// Peers holding the pin today (empty for a new pin).
    pub current: &'a [PeerId],
    /// `user-allocations`: preferred peers, in the user's order.
    pub preferred: &'a [PeerId],
}

/// Whether replication `min`/`max` pins everywhere: no peer is chosen, so nothing needs to be
/// known about the candidates or the current holders.
pub fn everywhere(min: i32, max: i32) -> bool {
    min == -1 && max == -1
}

/// Returns the peers to hold the pin; empty means "everywhere".
pub fn allocate(request: &AllocationRequest<'_>, candidates: &[Candidate]) -> Result<Vec<PeerId>> {
    let (min, max) = (request.replication_min, request.replication_max);
    if everywhere(min, max) {
        return Ok(Vec::new());
    }
    let is_candidate = |peer: &PeerId| candidates.iter().any(|c| &c.peer == peer);
    let mut chosen: Vec<PeerId> = Vec::new();
    for peer in request.current.iter().filter(|p| is_candidate(p)) {
        if chosen.len() < max as usize && !chosen.contains(peer) {
            chosen.push(*peer);
        }
    }
    let kept = chosen.len();
    for peer in request.preferred.iter().filter(|p| is_candidate(p)) {
        if chosen.len() < max as usize && !chosen.contains(peer) {
            chosen.push(*peer);
        }
    }
    let mut by_space: Vec<&Candidate> = candidates.iter().filter(|c| !chosen.contains(&c.peer)).collect();
    // Most free space first; the peer ID breaks ties so that the decision is deterministic.
    by_space.sort_by(|a, b| b.free_space.cmp(&a.free_space).then_with(|| a.peer.cmp(&b.peer)));
    for candidate in by_space {
        if chosen.len() >= max as usize {
            break;
        }
        chosen.push(candidate.peer);
    }
    if chosen.len() < min as usize {
        return Err(not_enough_peers(request.cid, min - kept as i32, max - kept as i32, candidates.len() - kept));
    }
    Ok(chosen)
}

fn not_enough_peers(cid: &Cid, needed: i32, wanted: i32, available: usize) -> Error {
    tracing::error!(%cid, needed, wanted, available, "not enough candidates to allocate");
    Error::Allocation(format!(
        "not enough peers to allocate CID. Needed at least: {needed}. Wanted at most: {wanted}. \
         Available candidates: {available}. See logs for more info."
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::parse_cid;

    fn peers(n: usize) -> Vec<PeerId> {
        let mut peers: Vec<PeerId> = (0..n).map(|_| PeerId::random()).collect();
        peers.sort();
        peers
    }

    #[test]
    fn allocation_table() {
        let cid = parse_cid("QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG").unwrap();
        let p = peers(4);
        let space = |free: [u64; 4]| -> Vec<Candidate> {
            p.iter().zip(free).map(|(peer, free_space)| Candidate { peer: *peer, free_space }).collect()
        };
        struct Case {
            name: &'static str,
            min: i32,
            max: i32,
            current: Vec<PeerId>,
            preferred: Vec<PeerId>,
            candidates: Vec<Candidate>,
            expected: std::result::Result<Vec<PeerId>, &'static str>,
        }
        let cases = vec![
            Case { name: "everywhere", min: -1, max: -1, current: vec![], preferred: vec![], candidates: space([1, 2, 3, 4]), expected: Ok(vec![]) },
            Case { name: "most free space first", min: 2, max: 2, current: vec![], preferred: vec![], candidates: space([10, 40, 30, 20]), expected: Ok(vec![p[1], p[2]]) },
            Case { name: "user allocations first", min: 1, max: 2, current: vec![], preferred: vec![p[0]], candidates: space([10, 40, 30, 20]), expected: Ok(vec![p[0], p[1]]) },
            Case { name: "current holders kept", min: 2, max: 2, current: vec![p[3]], preferred: vec![], candidates: space([10, 40, 30, 20]), expected: Ok(vec![p[3], p[1]]) },
            Case { name: "gone holder replaced", min: 2, max: 2, current: vec![PeerId::random()], preferred: vec![], candidates: space([10, 40, 30, 20]), expected: Ok(vec![p[1], p[2]]) },
            Case { name: "max beyond candidates takes all", min: 1, max: 10, current: vec![], preferred: vec![], candidates: space([1, 1, 1, 1]), expected: Ok(p.clone()) },
            Case { name: "not enough", min: 5, max: 6, current: vec![], preferred: vec![], candidates: space([1, 1, 1, 1]), expected: Err("not enough peers to allocate CID. Needed at least: 5. Wanted at most: 6. Available candidates: 4. See logs for more info.") },
        ];
        for case in cases {
            let request = AllocationRequest {
                cid: &cid,
                replication_min: case.min,
                replication_max: case.max,
                current: &case.current,
                preferred: &case.preferred,
            };
            let got = allocate(&request, &case.candidates).map_err(|e| e.to_string());
            assert_eq!(got, case.expected.map_err(String::from), "{}", case.name);
        }
    }
}
