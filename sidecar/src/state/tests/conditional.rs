//! The conditional ops (`UnpinIfExpired`, `Reallocate`, a `Pin` that changes nothing, `Barrier`):
//! each against each prior state, and the stale reads of review §2.1 replayed as the ops they commit.

use super::*;

/// What one op did to the pin of its key: the change reported, the pin stored after it, and the
/// peers its unpin record names (if it has one).
type Outcome = (Option<StateChange>, Option<Pin>, Option<Vec<libp2p_identity::PeerId>>);

/// Applies `op` to a fresh state that holds `prior` (or nothing).
fn apply_to(prior: Option<&Pin>, op: StateOp) -> Outcome {
    let dir = TempDir::new().unwrap();
    let state = PinState::open(&state_path(&dir)).unwrap();
    if let Some(prior) = prior {
        state.apply(&[StateOp::Pin(prior.clone())]).unwrap();
    }
    let key = pin_n(1).key();
    let change = state.apply_each(&[op], None).unwrap().pop().unwrap();
    let record = all_unpins(&state).into_iter().find(|u| u.key == key).map(|u| u.from);
    (change, state.get(&key).unwrap(), record)
}

#[test]
fn each_op_against_each_prior_state() {
    let [a, b, c] = [(); 3].map(|_| libp2p_identity::PeerId::random());
    let (read_at, later, now) = (at("2030-01-01T00:00:00Z"), at("2030-02-01T00:00:00Z"), at("2030-06-01T00:00:00Z"));
    let key = pin_n(1).key();
    let base = Pin { timestamp: read_at, ..pin_for(1, &[a, b]) };
    let expiring = |expire_at: &str| Pin { expire_at: Some(at(expire_at)), ..base.clone() };
    let (expired, due_now, not_expired) =
        (expiring("2030-03-01T00:00:00Z"), expiring("2030-06-01T00:00:00Z"), expiring("2030-09-01T00:00:00Z"));
    let repinned = Pin { timestamp: later, ..base.clone() };
    let renamed = Pin { name: "renamed".into(), timestamp: later, ..base.clone() };
    let moved = Pin { allocations: vec![b, c], timestamp: now, ..base.clone() };
    let unpin_if_expired = StateOp::UnpinIfExpired { key: key.clone(), now };
    let reallocate =
        StateOp::Reallocate { key: key.clone(), expected: read_at, allocations: vec![b, c], timestamp: now };
    let pinned =
        |pin: &Pin, previous: Option<&Pin>| Some(StateChange::Pinned { pin: pin.clone(), previous: previous.cloned() });
    let unpinned = |pin: &Pin| Some(StateChange::Unpinned { pin: pin.clone() });

    // (case, prior, op) => (change, stored after, unpin record)
    let cases: Vec<(&str, Option<&Pin>, StateOp, Outcome)> = vec![
        ("pin, absent", None, StateOp::Pin(base.clone()), (pinned(&base, None), Some(base.clone()), None)),
        (
            "pin, equal but for the time and the order of allocations: nothing written",
            Some(&base),
            StateOp::Pin(Pin { allocations: vec![b, a], ..repinned.clone() }),
            (None, Some(base.clone()), None),
        ),
        (
            "pin, changed",
            Some(&base),
            StateOp::Pin(renamed.clone()),
            (pinned(&renamed, Some(&base)), Some(renamed.clone()), None),
        ),
        (
            "pin, allocations changed",
            Some(&base),
            StateOp::Pin(moved.clone()),
            (pinned(&moved, Some(&base)), Some(moved.clone()), Some(vec![a])),
        ),
        ("unpin, absent", None, StateOp::Unpin(key.clone()), (None, None, None)),
        ("unpin, present", Some(&base), StateOp::Unpin(key.clone()), (unpinned(&base), None, Some(vec![a, b]))),
        ("unpin if expired, absent", None, unpin_if_expired.clone(), (None, None, None)),
        (
            "unpin if expired, expired",
            Some(&expired),
            unpin_if_expired.clone(),
            (unpinned(&expired), None, Some(vec![a, b])),
        ),
        (
            "unpin if expired, expires at that very time",
            Some(&due_now),
            unpin_if_expired.clone(),
            (unpinned(&due_now), None, Some(vec![a, b])),
        ),
        (
            "unpin if expired, not expired",
            Some(&not_expired),
            unpin_if_expired.clone(),
            (None, Some(not_expired.clone()), None),
        ),
        ("unpin if expired, never expires", Some(&base), unpin_if_expired.clone(), (None, Some(base.clone()), None)),
        ("reallocate, absent", None, reallocate.clone(), (None, None, None)),
        (
            "reallocate, unchanged since read",
            Some(&base),
            reallocate.clone(),
            (pinned(&moved, Some(&base)), Some(moved.clone()), Some(vec![a])),
        ),
        ("reallocate, re-pinned later", Some(&repinned), reallocate.clone(), (None, Some(repinned.clone()), None)),
        ("reallocate, changed", Some(&renamed), reallocate.clone(), (None, Some(renamed.clone()), None)),
        ("barrier, absent", None, StateOp::Barrier, (None, None, None)),
        ("barrier, present", Some(&expired), StateOp::Barrier, (None, Some(expired.clone()), None)),
    ];
    for (case, prior, op, expected) in cases {
        assert_eq!(apply_to(prior, op), expected, "{case}");
    }
}

/// The stale reads of review §2.1, replayed as the ops they commit, in the order Raft applies them.
#[test]
fn a_decision_on_a_stale_read_never_undoes_a_later_write() {
    let dir = TempDir::new().unwrap();
    let state = PinState::open(&state_path(&dir)).unwrap();
    let [a, b, c] = [(); 3].map(|_| libp2p_identity::PeerId::random());
    let (t0, t1, now) = (at("2030-01-01T00:00:00Z"), at("2030-02-01T00:00:00Z"), at("2030-06-01T00:00:00Z"));
    let x = Pin { timestamp: t0, ..pin_for(1, &[a, b]) };
    let key = x.key();

    // 1. Expiry: a lagging peer reads X as expired; the user's re-pin without expiry lands first.
    state.apply(&[StateOp::Pin(Pin { expire_at: Some(at("2030-03-01T00:00:00Z")), ..x.clone() })]).unwrap();
    let stale = state.expired(now).unwrap();
    assert_eq!(stale.len(), 1);
    state.apply(&[StateOp::Pin(Pin { timestamp: t1, ..x.clone() })]).unwrap();
    let expire: Vec<StateOp> = stale.iter().map(|pin| StateOp::UnpinIfExpired { key: pin.key(), now }).collect();
    assert_eq!(state.apply(&expire).unwrap(), vec![]);
    assert_eq!(state.get(&key).unwrap(), Some(Pin { timestamp: t1, ..x.clone() }), "the re-pin stays");
    state.apply(&[StateOp::Unpin(key.clone())]).unwrap();

    // The re-allocation pass reads a page, then decides on it.
    let reallocate = |read: &Pin| StateOp::Reallocate {
        key: read.key(),
        expected: read.timestamp,
        allocations: vec![b, c],
        timestamp: now,
    };

    // 2a. An unpin acknowledged after the page was read is not undone, nor its record rewritten.
    state.apply(&[StateOp::Pin(x.clone())]).unwrap();
    let page = state.scan(None, 10).unwrap();
    state.apply(&[StateOp::Unpin(key.clone())]).unwrap();
    let seq = state.latest_unpin_seq();
    assert_eq!(state.apply(&[reallocate(&page[0])]).unwrap(), vec![]);
    assert_eq!(state.get(&key).unwrap(), None, "the unpin stays");
    assert_eq!(state.latest_unpin_seq(), seq);

    // 2b. Options changed after the page was read are kept.
    state.apply(&[StateOp::Pin(x.clone())]).unwrap();
    let page = state.scan(None, 10).unwrap();
    let renamed = Pin { name: "renamed".into(), timestamp: t1, ..x.clone() };
    state.apply(&[StateOp::Pin(renamed.clone()), reallocate(&page[0])]).unwrap();
    assert_eq!(state.get(&key).unwrap(), Some(renamed), "the new name stays");

    // 2c. A pin sent again unchanged changes nothing, so the move read before it still applies.
    let page = state.scan(None, 10).unwrap();
    state.apply(&[StateOp::Pin(Pin { timestamp: now, ..page[0].clone() }), reallocate(&page[0])]).unwrap();
    assert_eq!(state.get(&key).unwrap().map(|p| p.allocations), Some(vec![b, c]));

    // 3. A pin through a peer that still sees it (unpinned meanwhile) is committed, and pins it.
    state.apply(&[StateOp::Unpin(key.clone())]).unwrap();
    let changes = state.apply(&[StateOp::Pin(x.clone())]).unwrap();
    assert_eq!(changes, vec![StateChange::Pinned { pin: x.clone(), previous: None }]);
    assert_eq!(state.get(&key).unwrap(), Some(x));
}

#[test]
fn conditional_ops_survive_the_log_encoding_and_keep_the_old_variants_in_place() {
    let key = pin_n(1).key();
    // Nanoseconds matter: `Reallocate` compares the time it carries with the stored one.
    let (then, now) = (at("2030-01-01T00:00:00.123456789Z"), at("2030-06-01T00:00:00.000000001Z"));
    let ops = [
        StateOp::Pin(pin_n(1)),
        StateOp::Unpin(key.clone()),
        StateOp::UnpinIfExpired { key: key.clone(), now },
        StateOp::Reallocate {
            key: key.clone(),
            expected: then,
            allocations: vec![libp2p_identity::PeerId::random()],
            timestamp: now,
        },
        StateOp::Barrier,
    ];
    for (index, op) in ops.into_iter().enumerate() {
        let bytes = postcard::to_allocvec(&op).unwrap();
        assert_eq!(usize::from(bytes[0]), index, "variant index of {op:?}");
        assert_eq!(postcard::from_bytes::<StateOp>(&bytes).unwrap(), op);
    }
}
