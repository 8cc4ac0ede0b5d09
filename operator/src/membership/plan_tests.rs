//! Table-style tests of [`plan`]: each case is a cluster as observed and the actions expected.

use super::*;

fn name(ordinal: u32) -> String {
    format!("ipfs-{ordinal}")
}

fn peer(ordinal: u32) -> String {
    format!("peer-{ordinal}")
}

fn sidecar(ordinal: u32, standing: Standing) -> Sidecar {
    Sidecar {
        peer_id: peer(ordinal),
        node_id: u64::from(ordinal) + 100,
        standing,
        restart_declared: false,
        unheard: vec![],
        vouched_seconds: 0,
    }
}

fn joined(ordinal: u32) -> PeerState {
    PeerState {
        peer_id: Some(peer(ordinal)),
        node_id: Some(u64::from(ordinal) + 100),
        role: Some(PeerRole::Voter),
        phase: PeerPhase::Joined,
    }
}

/// `n` pods whose peers are all voting members, `peer-0` leading, each recorded as such.
fn settled(n: u32) -> Observed {
    Observed {
        replicas: n,
        pods: (0..n)
            .map(|i| PodView {
                name: name(i),
                ordinal: i,
                terminating: false,
                sidecar: Some(sidecar(i, Standing::Member)),
            })
            .collect(),
        records: (0..n).map(|i| Record { pod: name(i), ordinal: i, deleting: false, state: joined(i) }).collect(),
        membership: Some(Membership {
            members: (0..n).map(|i| Member { peer_id: peer(i), node_id: u64::from(i) + 100, voter: true }).collect(),
            leader: Some(peer(0)),
            changing: false,
        }),
        pod_management: PodManagement::OrderedReady,
    }
}

impl Observed {
    fn pod_mut(&mut self, ordinal: u32) -> &mut PodView {
        self.pods.iter_mut().find(|p| p.ordinal == ordinal).unwrap()
    }

    fn record_mut(&mut self, ordinal: u32) -> &mut Record {
        self.records.iter_mut().find(|r| r.ordinal == ordinal).unwrap()
    }

    fn terminating(mut self, ordinals: &[u32]) -> Self {
        for &i in ordinals {
            self.pod_mut(i).terminating = true;
        }
        self
    }

    fn without_pods(mut self, ordinals: &[u32]) -> Self {
        self.pods.retain(|p| !ordinals.contains(&p.ordinal));
        self
    }

    fn without_members(mut self, ordinals: &[u32]) -> Self {
        let gone: Vec<String> = ordinals.iter().map(|&i| peer(i)).collect();
        self.membership.as_mut().unwrap().members.retain(|m| !gone.contains(&m.peer_id));
        self
    }

    /// No leader known: the members that are back do not hear a quorum.
    fn leaderless(mut self) -> Self {
        self.membership.as_mut().unwrap().leader = None;
        self
    }

    fn vouched(mut self, ordinal: u32, seconds: u64) -> Self {
        self.pod_mut(ordinal).sidecar.as_mut().unwrap().vouched_seconds = seconds;
        self
    }

    fn leader(mut self, ordinal: u32) -> Self {
        self.membership.as_mut().unwrap().leader = Some(peer(ordinal));
        self
    }
}

fn state(ordinal: u32, phase: PeerPhase) -> Action {
    let role = matches!(phase, PeerPhase::Joined | PeerPhase::Leaving).then_some(PeerRole::Voter);
    Action::SetState { pod: name(ordinal), state: PeerState { role, phase, ..joined(ordinal) } }
}

fn remove(ordinal: u32, via: u32, reason: Removal) -> Action {
    Action::Remove { peer_id: peer(ordinal), via: name(via), reason }
}

#[test]
fn plans() {
    let fresh_pod = |ordinal| PodView {
        name: name(ordinal),
        ordinal,
        terminating: false,
        sidecar: Some(sidecar(ordinal, Standing::Uninitialized)),
    };
    let pending = |ordinal| Record { pod: name(ordinal), ordinal, deleting: false, state: PeerState::default() };
    let joining = |ordinal| PeerState { role: None, phase: PeerPhase::Joining, ..joined(ordinal) };
    let new_cluster = Observed { replicas: 1, pods: vec![fresh_pod(0)], ..Observed::default() };
    let wiped = {
        let mut o = settled(3);
        o.pod_mut(1).sidecar = Some(Sidecar { peer_id: "peer-1b".into(), ..sidecar(1, Standing::Uninitialized) });
        o
    };
    let wiped_and_removed = {
        let mut o = wiped.clone().without_members(&[1]);
        o.record_mut(1).state = PeerState { phase: PeerPhase::Removed, role: None, ..joined(1) };
        o
    };
    let cases: Vec<(&str, Observed, Vec<Action>)> = vec![
        ("a settled cluster needs nothing", settled(3), vec![]),
        (
            "members that do not hear each other (all moved at once) are told where the others are",
            {
                let mut o = settled(3).without_pods(&[2]);
                o.membership.as_mut().unwrap().leader = None;
                for pod in &mut o.pods {
                    pod.sidecar.as_mut().unwrap().unheard = vec![peer(0), peer(1), peer(2)];
                }
                o
            },
            vec![
                Action::Introduce { pod: name(0), peers: vec![(name(1), peer(1))] },
                Action::Introduce { pod: name(1), peers: vec![(name(0), peer(0))] },
            ],
        ),
        (
            "whole-cluster restart, OrderedReady: pod 0 alone is no quorum, so it is vouched for",
            settled(3).without_pods(&[1, 2]).leaderless(),
            vec![Action::Vouch { pod: name(0) }],
        ),
        (
            "a vouch with time left is not renewed; one running out is",
            settled(5).without_pods(&[2, 3, 4]).leaderless().vouched(0, 50).vouched(1, 20),
            vec![Action::Vouch { pod: name(1) }],
        ),
        (
            "a quorum of members back only has to elect a leader: no vouch",
            settled(3).without_pods(&[2]).leaderless(),
            vec![],
        ),
        ("with a leader, a missing pod is only restarting: no vouch", settled(3).without_pods(&[1, 2]), vec![]),
        (
            "Parallel creates every pod anyway: no vouch",
            Observed { pod_management: PodManagement::Parallel, ..settled(3).without_pods(&[1, 2]).leaderless() },
            vec![],
        ),
        (
            "every staying pod exists (the missing ones are condemned): no vouch",
            Observed { replicas: 1, ..settled(3).without_pods(&[1, 2]).leaderless() },
            vec![remove(2, 0, Removal::Condemned), state(1, PeerPhase::Leaving), state(2, PeerPhase::Leaving)],
        ),
        ("a new pod gets its ClusterPeer first", new_cluster.clone(), vec![Action::Record { pod: name(0) }]),
        (
            "the first pod of a new cluster starts it",
            Observed { records: vec![pending(0)], ..new_cluster.clone() },
            vec![Action::Initialize { pod: name(0) }, Action::SetState { pod: name(0), state: joining(0) }],
        ),
        (
            "no member answers, but one joined once: the cluster is not started again",
            {
                let mut o = settled(3);
                o.membership = None;
                o.pods = vec![fresh_pod(2)];
                o
            },
            vec![Action::SetState { pod: name(2), state: joining(2) }],
        ),
        (
            "a new pod joins through the leader's pod",
            {
                let mut o = settled(2);
                o.replicas = 3;
                o.pods.push(fresh_pod(2));
                o.records.push(pending(2));
                o
            },
            vec![
                Action::Join { pod: name(2), peer_id: peer(2), via: name(0) },
                Action::SetState { pod: name(2), state: joining(2) },
            ],
        ),
        (
            "scale 3 to 1 at once (Parallel): the highest ordinal leaves first, through the leader",
            Observed { replicas: 1, ..settled(3).terminating(&[1, 2]) },
            vec![remove(2, 0, Removal::Condemned), state(1, PeerPhase::Leaving), state(2, PeerPhase::Leaving)],
        ),
        (
            "the leader among the condemned leaves last",
            Observed { replicas: 1, ..settled(3).terminating(&[1, 2]).leader(2) },
            vec![remove(1, 0, Removal::Condemned), state(1, PeerPhase::Leaving), state(2, PeerPhase::Leaving)],
        ),
        (
            "a condemned pod not yet terminating (OrderedReady) is left until the StatefulSet deletes it",
            Observed { replicas: 2, ..settled(3) },
            vec![],
        ),
        (
            "a restarting pod is told so, and keeps its membership",
            settled(3).terminating(&[1]),
            vec![Action::DeclareRestart { pod: name(1) }],
        ),
        (
            "a restart already declared needs nothing more",
            {
                let mut o = settled(3).terminating(&[1]);
                o.pod_mut(1).sidecar.as_mut().unwrap().restart_declared = true;
                o
            },
            vec![],
        ),
        ("a restarting pod that is gone for now keeps its membership", settled(3).without_pods(&[1]), vec![]),
        (
            "a member that is down is not introduced to anyone",
            {
                let mut o = settled(3).without_pods(&[1]);
                for pod in &mut o.pods {
                    pod.sidecar.as_mut().unwrap().unheard = vec![peer(1)];
                }
                o
            },
            vec![],
        ),
        (
            "while a change is half-way, the next one waits",
            {
                let mut o = Observed { replicas: 1, ..settled(3).terminating(&[1, 2]) };
                o.membership.as_mut().unwrap().changing = true;
                o
            },
            vec![state(1, PeerPhase::Leaving), state(2, PeerPhase::Leaving)],
        ),
        (
            "a condemned pod gone while the operator was down is removed, then forgotten",
            Observed { replicas: 2, ..settled(3).without_pods(&[2]) },
            vec![remove(2, 0, Removal::Condemned), state(2, PeerPhase::Leaving)],
        ),
        (
            "once out, a condemned pod's ClusterPeer is deleted",
            {
                let mut o = Observed { replicas: 2, ..settled(3).without_pods(&[2]).without_members(&[2]) };
                o.record_mut(2).state = PeerState { phase: PeerPhase::Removed, role: None, ..joined(2) };
                o
            },
            vec![Action::Forget { pod: name(2) }],
        ),
        (
            "a ClusterPeer deleted by hand removes its peer (its pod and node lost)",
            {
                let mut o = settled(3).without_pods(&[2]);
                o.record_mut(2).deleting = true;
                o
            },
            vec![remove(2, 0, Removal::Deleted), state(2, PeerPhase::Leaving)],
        ),
        (
            "and its finalizer goes once the peer is out",
            {
                let mut o = settled(3).without_pods(&[2]).without_members(&[2]);
                o.record_mut(2).deleting = true;
                o.record_mut(2).state = PeerState { phase: PeerPhase::Removed, role: None, ..joined(2) };
                o
            },
            vec![Action::Release { pod: name(2) }],
        ),
        (
            "a pod back with wiped data: its old node is removed first",
            wiped.clone(),
            vec![remove(1, 0, Removal::Superseded)],
        ),
        (
            "then it is recorded and joins as the new node",
            wiped_and_removed,
            vec![
                Action::Join { pod: name(1), peer_id: "peer-1b".into(), via: name(0) },
                Action::SetState { pod: name(1), state: PeerState { peer_id: Some("peer-1b".into()), ..joining(1) } },
            ],
        ),
        (
            "the last member is never removed (scale to zero): it stops as a member, at once",
            Observed { replicas: 0, ..settled(1).terminating(&[0]) },
            vec![Action::DeclareRestart { pod: name(0) }, state(0, PeerPhase::Leaving)],
        ),
        (
            "a condemned member that is not the last waits for its removal",
            Observed { replicas: 0, ..settled(2).terminating(&[0, 1]).leader(1) },
            vec![remove(0, 1, Removal::Condemned), state(0, PeerPhase::Leaving), state(1, PeerPhase::Leaving)],
        ),
        (
            "scaled to zero and every pod gone: the ClusterPeers go, a deleted one included",
            {
                let mut o = Observed { replicas: 0, ..settled(2).without_pods(&[0, 1]) };
                o.membership = None;
                o.record_mut(1).deleting = true;
                o
            },
            vec![Action::Forget { pod: name(0) }, Action::Release { pod: name(1) }],
        ),
    ];
    for (case, observed, expected) in cases {
        assert_eq!(plan(&observed), expected, "{case}");
    }
}
