//! Table-style tests of [`plan`]: a cluster and its Pins as observed, and the actions expected.

use chrono::TimeZone;

use super::*;

const CID: &str = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi";

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 6, 12, 0, 0).unwrap()
}

fn peer(i: u32) -> String {
    format!("peer-{i}")
}

fn pod(i: u32) -> String {
    format!("ipfs-{i}")
}

/// A reachable cluster of three peers that has no pins.
fn cluster() -> Cluster {
    Cluster { name: "ipfs".into(), peers: (0..3).map(|i| (pod(i), peer(i))).collect(), pins: BTreeMap::new() }
}

/// The cluster's account of `CID` allocated to `peers`, each in `status`.
fn listed(peers: &[(u32, &str)]) -> ClusterPin {
    ClusterPin {
        allocations: peers.iter().map(|(i, _)| peer(*i)).collect(),
        peers: peers
            .iter()
            .map(|(i, status)| (peer(*i), PeerPin { status: status.to_string(), error: String::new() }))
            .collect(),
    }
}

/// A new Pin of `CID`, generation 1, finalizer in place, no status yet.
fn new_pin() -> PinView {
    PinView {
        name: "doc".into(),
        generation: 1,
        created: Some(now() - chrono::Duration::hours(1)),
        deleting: false,
        has_finalizer: true,
        cid: Ok(CID.into()),
        request: Wanted { name: "doc".into(), ..Wanted::default() },
        current: Summary::default(),
        sent: None,
        failure: None,
    }
}

fn applied(generation: i64) -> Applied {
    Applied { generation, expires_at: None }
}

fn observed(cluster: Result<Cluster, Unavailable>, pins: Vec<PinView>) -> Observed {
    Observed { now: now(), cluster, pins }
}

fn with_pin(listing: ClusterPin) -> Cluster {
    let mut cluster = cluster();
    cluster.pins.insert(CID.into(), listing);
    cluster
}

fn kinds(steps: &[Step]) -> Vec<(String, Vec<&'static str>)> {
    steps.iter().map(|s| (s.pin.clone(), s.actions.iter().map(Action::kind).collect())).collect()
}

fn only(steps: &[Step]) -> &[Action] {
    assert_eq!(steps.len(), 1, "{steps:#?}");
    &steps[0].actions
}

fn status_of(actions: &[Action]) -> &Summary {
    actions.iter().find_map(|a| if let Action::SetStatus(s) = a { Some(s) } else { None }).expect("a status write")
}

#[test]
fn decisions_by_situation() {
    let settled = Summary { applied: Some(applied(1)), ..placement(&cluster(), &listed(&[(0, "pinned")]), applied(1)) };
    let cases: Vec<(&str, Observed, Vec<&'static str>)> = vec![
        (
            "a new Pin: finalizer first, then the cluster",
            observed(Ok(cluster()), vec![PinView { has_finalizer: false, ..new_pin() }]),
            vec!["add_finalizer", "pin"],
        ),
        (
            "a new Pin with its finalizer: sent quietly, the status waits for the listing",
            observed(Ok(cluster()), vec![new_pin()]),
            vec!["pin"],
        ),
        (
            "sent in an earlier pass and listed: the status is written",
            observed(Ok(with_pin(listed(&[(0, "pinning")]))), vec![PinView { sent: Some(applied(1)), ..new_pin() }]),
            vec!["set_status"],
        ),
        (
            "settled: nothing to do",
            observed(Ok(with_pin(listed(&[(0, "pinned")]))), vec![PinView { current: settled.clone(), ..new_pin() }]),
            vec![],
        ),
        (
            "spec changed (generation 2): pinned again with the new options, an Updated event",
            observed(
                Ok(with_pin(listed(&[(0, "pinned")]))),
                vec![PinView { generation: 2, current: settled.clone(), ..new_pin() }],
            ),
            vec!["pin", "note"],
        ),
        (
            "removed behind its back: pinned again, with a warning",
            observed(Ok(cluster()), vec![PinView { current: settled.clone(), ..new_pin() }]),
            vec!["pin", "note"],
        ),
        (
            "cluster unreachable: nothing sent, Ready says why",
            observed(
                Err(Unavailable::Unreachable("connection refused".into())),
                vec![PinView { current: settled.clone(), ..new_pin() }],
            ),
            vec!["set_status"],
        ),
        (
            "deleted and pinned: unpinned, then released",
            observed(
                Ok(with_pin(listed(&[(0, "pinned")]))),
                vec![PinView { deleting: true, current: settled.clone(), ..new_pin() }],
            ),
            vec!["unpin", "remove_finalizer"],
        ),
        (
            "deleted and not in the cluster: released",
            observed(Ok(cluster()), vec![PinView { deleting: true, ..new_pin() }]),
            vec!["remove_finalizer"],
        ),
        (
            "deleted while the cluster is unreachable: waits, saying so",
            observed(
                Err(Unavailable::Unreachable("timed out".into())),
                vec![PinView { deleting: true, current: settled.clone(), ..new_pin() }],
            ),
            vec!["set_status"],
        ),
        (
            "deleted with no cluster left: released",
            observed(Err(Unavailable::Missing("no cluster".into())), vec![PinView { deleting: true, ..new_pin() }]),
            vec!["remove_finalizer"],
        ),
        (
            "deleted without the finalizer: nothing",
            observed(Ok(cluster()), vec![PinView { deleting: true, has_finalizer: false, ..new_pin() }]),
            vec![],
        ),
        (
            "no cluster for it: queued, saying why",
            observed(Err(Unavailable::Missing("no cluster named x".into())), vec![new_pin()]),
            vec!["set_status"],
        ),
    ];
    for (case, observed, expected) in cases {
        let steps = plan(&observed);
        let got: Vec<&str> = steps.iter().flat_map(|s| s.actions.iter().map(Action::kind)).collect();
        assert_eq!(got, expected, "{case}: {steps:#?}");
    }
}

#[test]
fn status_follows_the_daemons() {
    let cases: Vec<(&str, ClusterPin, PinPhase, i32, i32)> = vec![
        ("every allocated peer holds it", listed(&[(0, "pinned"), (1, "pinned")]), PinPhase::Pinned, 2, 2),
        ("one still fetching", listed(&[(0, "pinned"), (1, "pinning")]), PinPhase::Pinning, 1, 2),
        ("queued", listed(&[(0, "pin_queued")]), PinPhase::Pinning, 0, 1),
        ("one failed, one holds it", listed(&[(0, "pinned"), (1, "pin_error")]), PinPhase::PartiallyPinned, 1, 2),
        (
            "one unreachable, one holds it",
            listed(&[(0, "pinned"), (1, "cluster_error")]),
            PinPhase::PartiallyPinned,
            1,
            2,
        ),
        ("every peer failed", listed(&[(0, "pin_error"), (1, "pin_error")]), PinPhase::Error, 0, 2),
    ];
    for (case, listing, phase, pinned, wanted) in cases {
        let summary = placement(&cluster(), &listing, applied(1));
        assert_eq!((summary.phase, summary.pinned, summary.wanted), (phase, pinned, wanted), "{case}");
        assert!(summary.ready.ready, "{case}: the spec is applied");
    }
}

#[test]
fn an_empty_allocation_means_every_peer_but_remote_ones() {
    let mut listing = listed(&[(0, "pinned"), (1, "pinned"), (2, "remote")]);
    listing.allocations.clear();
    let summary = placement(&cluster(), &listing, applied(1));
    assert_eq!((summary.phase, summary.pinned, summary.wanted), (PinPhase::Pinned, 2, 2));
    let pods: Vec<_> = summary.peers.iter().map(|p| p.pod.clone().unwrap()).collect();
    assert_eq!(pods, [pod(0), pod(1)], "statuses name the pods");
}

#[test]
fn a_daemon_error_is_reported_with_its_pod() {
    let mut listing = listed(&[(1, "pin_error")]);
    listing.peers.get_mut(&peer(1)).unwrap().error = "context deadline exceeded".into();
    let summary = placement(&cluster(), &listing, applied(1));
    assert_eq!(summary.phase, PinPhase::Error);
    assert_eq!(summary.last_error.as_deref(), Some("ipfs-1: context deadline exceeded"));
}

#[test]
fn allocations_by_pod_become_peer_ids_and_unknown_pods_are_invalid() {
    let pin = PinView {
        request: Wanted {
            allocations: vec![pod(2), pod(0)],
            replication_min: 2,
            replication_max: 2,
            ..new_pin().request
        },
        ..new_pin()
    };
    let steps = plan(&observed(Ok(cluster()), vec![pin.clone()]));
    let Action::Pin { request, .. } = &only(&steps)[0] else { panic!("{steps:#?}") };
    assert_eq!(request.allocations, [peer(2), peer(0)]);
    assert_eq!((request.replication_min, request.replication_max), (2, 2));

    let unknown = PinView { request: Wanted { allocations: vec!["ipfs-9".into()], ..pin.request.clone() }, ..pin };
    let steps = plan(&observed(Ok(cluster()), vec![unknown.clone()]));
    let actions = only(&steps);
    assert!(!actions.iter().any(Action::calls_cluster), "{actions:#?}");
    let summary = status_of(actions);
    assert_eq!((summary.phase, summary.ready.reason.as_str()), (PinPhase::Error, "Invalid"));
    assert!(summary.ready.message.contains("pod ipfs-9 is not a peer"), "{}", summary.ready.message);
    assert!(matches!(actions[0], Action::Note { warning: true, reason: "Invalid", .. }));

    // Marked once: the next pass, with that status in place, does nothing (no retry storm).
    let marked = PinView { current: summary.clone(), ..unknown };
    assert_eq!(plan(&observed(Ok(cluster()), vec![marked])), vec![]);
}

#[test]
fn of_two_pins_of_one_cid_the_older_owns_it() {
    let older = new_pin();
    let newer = PinView { name: "copy".into(), created: Some(now()), ..new_pin() };
    let steps = plan(&observed(Ok(cluster()), vec![newer.clone(), older.clone()]));
    assert_eq!(kinds(&steps), [("copy".into(), vec!["note", "set_status"]), ("doc".into(), vec!["pin"])]);
    let copy = status_of(&steps[0].actions);
    assert_eq!(copy.ready.reason, "DuplicateCid");

    // Deleting the copy leaves the content to the owner.
    let deleting = PinView { deleting: true, ..newer };
    let steps = plan(&observed(Ok(with_pin(listed(&[(0, "pinned")]))), vec![deleting, older]));
    assert_eq!(kinds(&steps)[0], ("copy".into(), vec!["remove_finalizer"]));
}

#[test]
fn expiry_is_fixed_when_first_applied_and_an_expired_pin_is_not_restored() {
    let ttl = chrono::Duration::hours(24);
    let pin = PinView { request: Wanted { expiry: Expiry::After(ttl), ..new_pin().request }, ..new_pin() };
    let steps = plan(&observed(Ok(cluster()), vec![pin.clone()]));
    let Action::Pin { request, applied, .. } = &only(&steps)[0] else { panic!("{steps:#?}") };
    assert_eq!(request.expire_at, Some(now() + ttl));
    assert_eq!(applied.expires_at, Some(now() + ttl));

    // Restored before its expiry: with the same expiry, not a new one.
    let at = now() + chrono::Duration::hours(1);
    let restoring = PinView {
        current: Summary { applied: Some(Applied { generation: 1, expires_at: Some(at) }), ..Summary::default() },
        ..pin.clone()
    };
    let steps = plan(&observed(Ok(cluster()), vec![restoring]));
    let Action::Pin { request, .. } = &only(&steps)[0] else { panic!("{steps:#?}") };
    assert_eq!(request.expire_at, Some(at));

    // Gone after its expiry: expired, said once.
    let past = now() - chrono::Duration::seconds(1);
    let expired = PinView {
        current: Summary { applied: Some(Applied { generation: 1, expires_at: Some(past) }), ..Summary::default() },
        ..pin
    };
    let steps = plan(&observed(Ok(cluster()), vec![expired.clone()]));
    assert_eq!(kinds(&steps), [("doc".into(), vec!["note", "set_status"])]);
    let summary = status_of(&steps[0].actions).clone();
    assert_eq!(summary.phase, PinPhase::Expired);
    assert_eq!(plan(&observed(Ok(cluster()), vec![PinView { current: summary, ..expired }])), vec![]);
}

#[test]
fn a_refused_pin_waits_out_its_backoff_then_tries_again_quietly() {
    let failure =
        Failure { message: "not enough peers to allocate".into(), retry_at: now() + chrono::Duration::seconds(5) };
    let waiting = PinView { failure: Some(failure.clone()), ..new_pin() };
    let steps = plan(&observed(Ok(cluster()), vec![waiting.clone()]));
    let actions = only(&steps);
    assert_eq!(actions.iter().map(Action::kind).collect::<Vec<_>>(), ["set_status"]);
    let summary = status_of(actions);
    assert_eq!((summary.phase, summary.ready.reason.as_str()), (PinPhase::Error, "ClusterRefused"));
    assert_eq!(summary.last_error.as_deref(), Some("not enough peers to allocate"));

    let due = PinView { failure: Some(Failure { retry_at: now(), ..failure }), current: summary.clone(), ..waiting };
    let steps = plan(&observed(Ok(cluster()), vec![due]));
    assert_eq!(kinds(&steps), [("doc".into(), vec!["pin"])], "no new event on a retry");
}

#[test]
fn invalid_specs_are_marked_without_asking_the_cluster() {
    let cases = [
        ("cid", PinView { cid: Err("invalid multibase".into()), ..new_pin() }),
        (
            "expireIn",
            PinView {
                request: Wanted { expiry: Expiry::Invalid("too large".into()), ..new_pin().request },
                ..new_pin()
            },
        ),
    ];
    for (field, pin) in cases {
        let steps = plan(&observed(Ok(cluster()), vec![pin]));
        let actions = only(&steps);
        assert!(!actions.iter().any(Action::calls_cluster), "{field}: {actions:#?}");
        let summary = status_of(actions);
        assert_eq!(summary.phase, PinPhase::Error, "{field}");
        assert!(summary.ready.message.starts_with(field), "{field}: {}", summary.ready.message);
    }
}

#[test]
fn a_pin_belongs_to_the_cluster_it_names_or_the_only_one() {
    let one = ["ipfs".to_string()];
    let two = ["a".to_string(), "b".to_string()];
    type Case<'a> = (Option<&'a str>, &'a [String], Result<&'a str, &'a str>);
    let cases: [Case; 5] = [
        (Some("ipfs"), &one, Ok("ipfs")),
        (Some("other"), &one, Err("no cluster named other in this namespace")),
        (None, &one, Ok("ipfs")),
        (None, &[], Err("no cluster in this namespace yet")),
        (None, &two, Err("2 clusters in this namespace (a, b): name one in spec.cluster")),
    ];
    for (named, clusters, expected) in cases {
        let got = cluster_for(named, clusters);
        assert_eq!(got.as_deref().map_err(String::as_str), expected, "{named:?} among {clusters:?}");
    }
}
