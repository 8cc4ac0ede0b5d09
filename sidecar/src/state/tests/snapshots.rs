//! Snapshot streams and restores: a stream restores whole or not at all, a restore is staged
//! where no reader sees it and then swapped in, and it owes the unpin records of what it replaces.

use super::*;

/// A state (`a.redb` in `dir`) of pins `0..count`, pin `expiring` with an expiry in 2030, at Raft
/// position `applied`; and its pins.
fn source_with_one_expiring(dir: &TempDir, count: u64, expiring: usize, applied: &[u8]) -> (PinState, Vec<Pin>) {
    let source = PinState::open(&dir.path().join("a.redb")).unwrap();
    let mut pins: Vec<Pin> = (0..count).map(pin_n).collect();
    pins[expiring].expire_at = Some(at("2030-01-01T00:00:00Z"));
    source.apply_each(&pins.iter().cloned().map(StateOp::Pin).collect::<Vec<_>>(), Some(applied)).unwrap();
    (source, pins)
}

#[test]
fn snapshot_restores_into_a_fresh_state() {
    let dir = TempDir::new().unwrap();
    let (source, pins) = source_with_one_expiring(&dir, 500, 3, b"term-2-index-9");

    let mut stream = Vec::new();
    assert_eq!(source.snapshot(&mut stream).unwrap().pins, 500);

    let target = PinState::open(&dir.path().join("b.redb")).unwrap();
    target.apply(&[StateOp::Pin(pin_n(10_000))]).unwrap();
    let summary = target.restore(stream.as_slice()).unwrap();
    assert_eq!(summary, SnapshotSummary { pins: 500, last_applied: Some(b"term-2-index-9".to_vec()) });
    assert_eq!(all_pins(&target), all_pins(&source));
    assert_eq!(target.last_applied().unwrap(), Some(b"term-2-index-9".to_vec()));
    assert_eq!(target.expired(at("2031-01-01T00:00:00Z")).unwrap(), vec![pins[3].clone()]);

    // An empty state restores to empty, and clears the position.
    let mut empty = Vec::new();
    PinState::open(&dir.path().join("c.redb")).unwrap().snapshot(&mut empty).unwrap();
    assert_eq!(target.restore(empty.as_slice()).unwrap(), SnapshotSummary { pins: 0, last_applied: None });
    assert!(target.is_empty().unwrap());
    assert_eq!(target.expired(at("2031-01-01T00:00:00Z")).unwrap(), vec![]);
    assert_eq!(target.last_applied().unwrap(), None);
}

#[test]
fn damaged_snapshots_are_rejected_and_change_nothing() {
    let dir = TempDir::new().unwrap();
    // Several of the restore's batches: damage found late is found after some were written.
    let stream = snapshot_of(&dir, 0..10_000);

    let target = PinState::open(&dir.path().join("b.redb")).unwrap();
    target.apply_each(&[StateOp::Pin(pin_n(999))], Some(b"mine")).unwrap();

    let mut flipped = stream.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x01;
    let mut trailing = stream.clone();
    trailing.push(0);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("bit flip", flipped, ""),
        ("truncated", stream[..stream.len() - 3].to_vec(), "truncated"),
        ("cut between records", stream[..stream.len() / 3].to_vec(), "truncated"),
        ("trailing bytes", trailing, "after the trailer"),
        ("not a snapshot", b"hello world, this is not it".to_vec(), "not a pinset snapshot"),
        ("empty", Vec::new(), "truncated"),
    ];
    for (name, bytes, expect) in cases {
        let msg = storage_error(target.restore(bytes.as_slice()));
        assert!(msg.contains("snapshot rejected") && msg.contains(expect), "{name}: {msg}");
        assert_eq!(all_pins(&target), vec![pin_n(999)], "{name}");
        assert_eq!(target.last_applied().unwrap(), Some(b"mine".to_vec()), "{name}");
    }
}

#[test]
fn a_staged_snapshot_is_unseen_until_finished_and_writes_go_on_meanwhile() {
    let dir = TempDir::new().unwrap();
    let (source, pins) = source_with_one_expiring(&dir, 10_000, 7, b"leader");
    let mut stream = Vec::new();
    source.snapshot(&mut stream).unwrap();

    let target = PinState::open(&dir.path().join("b.redb")).unwrap();
    target.apply_each(&[StateOp::Pin(pin_n(20_000))], Some(b"mine")).unwrap();
    let staged = target.stage(stream.as_slice()).unwrap();
    assert_eq!(all_pins(&target), vec![pin_n(20_000)], "staged, not yet seen");
    assert_eq!(target.expired(at("2031-01-01T00:00:00Z")).unwrap(), vec![]);
    target.apply_each(&[StateOp::Pin(pin_n(20_001))], Some(b"mine, later")).unwrap();

    let summary = target.finish_restore(staged).unwrap();
    assert_eq!(summary, SnapshotSummary { pins: 10_000, last_applied: Some(b"leader".to_vec()) });
    assert_eq!(all_pins(&target), all_pins(&source));
    assert_eq!(target.expired(at("2031-01-01T00:00:00Z")).unwrap(), vec![pins[7].clone()]);
    // Both pins the snapshot does not have owe their unpin, the one written while it was staged too.
    let owed: Vec<_> = all_unpins(&target).into_iter().map(|u| u.key).collect();
    assert_eq!(owed, vec![pin_n(20_000).key(), pin_n(20_001).key()]);
}

#[test]
fn a_later_stage_takes_the_staged_tables_over() {
    let dir = TempDir::new().unwrap();
    let source = PinState::open(&dir.path().join("a.redb")).unwrap();
    source.apply(&[StateOp::Pin(pin_n(1))]).unwrap();
    let mut first = Vec::new();
    source.snapshot(&mut first).unwrap();
    source.apply(&[StateOp::Pin(pin_n(2))]).unwrap();
    let mut second = Vec::new();
    source.snapshot(&mut second).unwrap();

    let target = PinState::open(&dir.path().join("b.redb")).unwrap();
    let earlier = target.stage(first.as_slice()).unwrap();
    let later = target.stage(second.as_slice()).unwrap();
    let msg = storage_error(target.finish_restore(earlier));
    assert!(msg.contains("another restore started"), "{msg}");
    assert!(target.is_empty().unwrap(), "unchanged");
    target.finish_restore(later).unwrap();
    assert_eq!(all_pins(&target), vec![pin_n(1), pin_n(2)]);
}

#[test]
fn a_restore_stopped_before_its_finish_leaves_no_staged_tables_behind() {
    let dir = TempDir::new().unwrap();
    let stream = snapshot_of(&dir, 0..100);

    let path = dir.path().join("b.redb");
    let target = PinState::open(&path).unwrap();
    let tables = |state: &PinState| -> Vec<String> {
        let read = state.db.begin_read().unwrap();
        read.list_tables().unwrap().map(|t| redb::TableHandle::name(&t).to_string()).collect()
    };
    target.stage(stream.as_slice()).unwrap();
    assert!(tables(&target).iter().any(|t| t.starts_with("restoring.")));
    drop(target);
    let target = PinState::open(&path).unwrap();
    assert!(!tables(&target).iter().any(|t| t.starts_with("restoring.")), "{:?}", tables(&target));
    assert!(target.is_empty().unwrap());
}

#[test]
fn snapshots_leave_unpin_records_out_and_restores_keep_them() {
    let dir = TempDir::new().unwrap();
    let source = PinState::open(&dir.path().join("a.redb")).unwrap();
    source.apply(&[StateOp::Pin(pin_n(1)), StateOp::Pin(pin_n(2)), StateOp::Unpin(pin_n(1).key())]).unwrap();
    let mut stream = Vec::new();
    source.snapshot(&mut stream).unwrap();

    let target = PinState::open(&dir.path().join("b.redb")).unwrap();
    target.apply(&[StateOp::Pin(pin_n(3)), StateOp::Unpin(pin_n(3).key())]).unwrap();
    target.restore(stream.as_slice()).unwrap();
    assert_eq!(all_pins(&target), vec![pin_n(2)]);
    assert_eq!(all_unpins(&target).iter().map(|u| u.key.clone()).collect::<Vec<_>>(), vec![pin_n(3).key()]);
}

#[test]
fn a_restore_writes_unpin_records_for_the_pins_it_removes_or_moves_away() {
    let dir = TempDir::new().unwrap();
    let (p, q) = (libp2p_identity::PeerId::random(), libp2p_identity::PeerId::random());
    // The leader's pinset after ops this peer never saw: 1 kept, 2 moved off p, 3 and 5 unpinned, 4 new.
    let source = PinState::open(&dir.path().join("leader.redb")).unwrap();
    let kept = pin_for(1, &[p]);
    source
        .apply(&[StateOp::Pin(kept.clone()), StateOp::Pin(pin_for(2, &[q])), StateOp::Pin(pin_for(4, &[p]))])
        .unwrap();
    let mut stream = Vec::new();
    source.snapshot(&mut stream).unwrap();

    let path = dir.path().join("follower.redb");
    let target = PinState::open(&path).unwrap();
    let before = [pin_for(1, &[p]), pin_for(2, &[p, q]), pin_for(3, &[p]), pin_for(5, &[])];
    target.apply(&before.map(StateOp::Pin)).unwrap();
    target.restore(stream.as_slice()).unwrap();

    assert_eq!(all_pins(&target), all_pins(&source));
    let mut owed: Vec<_> = all_unpins(&target).into_iter().map(|u| (u.key, u.from)).collect();
    owed.sort_by(|a, b| a.0.cmp(&b.0));
    let mut expected = vec![(pin_n(2).key(), vec![p]), (pin_n(3).key(), vec![p]), (pin_n(5).key(), vec![])];
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(owed, expected, "nothing for the kept or the new pin");
    assert_eq!(target.latest_unpin_seq(), 3);
    assert!(all_unpins(&target).iter().all(|u| u.seq <= 3));

    // Durable with the restore.
    drop(target);
    let target = PinState::open(&path).unwrap();
    assert_eq!((all_unpins(&target).len(), target.latest_unpin_seq()), (3, 3));
    // Restoring the same snapshot again owes nothing more (as a repeated op, it may renew a seq).
    target.restore(stream.as_slice()).unwrap();
    let mut again: Vec<_> = all_unpins(&target).into_iter().map(|u| (u.key, u.from)).collect();
    again.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(again, expected);
}
