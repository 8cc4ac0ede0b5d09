use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use tempfile::TempDir;

use super::*;
use crate::types::{fixtures, Cid, CidKey, Pin};
use crate::Error;

mod conditional;
mod snapshots;

/// A distinct, valid pin for each `n` (raw codec, identity multihash of `n`).
pub(crate) fn pin_n(n: u64) -> Pin {
    let hash = multihash::Multihash::<64>::wrap(0x00, &n.to_be_bytes()).unwrap();
    let mut pin = fixtures::pin("QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG");
    pin.cid = Cid::new_v1(0x55, hash);
    pin.name = format!("pin-{n}");
    pin
}

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
}

fn state_path(dir: &TempDir) -> PathBuf {
    dir.path().join("state.redb")
}

fn storage_error<T: std::fmt::Debug>(result: Result<T>) -> String {
    match result {
        Err(Error::Storage(msg)) => msg,
        other => panic!("expected a storage error, got {other:?}"),
    }
}

/// The snapshot stream of a state holding `pin_n(n)` for each `n`, built in `dir`.
fn snapshot_of(dir: &TempDir, pins: impl IntoIterator<Item = u64>) -> Vec<u8> {
    let source = PinState::open(&dir.path().join("snapshot-source.redb")).unwrap();
    source.apply(&pins.into_iter().map(|n| StateOp::Pin(pin_n(n))).collect::<Vec<_>>()).unwrap();
    let mut stream = Vec::new();
    source.snapshot(&mut stream).unwrap();
    stream
}

fn all_pins(state: &PinState) -> Vec<Pin> {
    state.scan(None, usize::MAX).unwrap()
}

#[test]
fn apply_get_scan_len() {
    let dir = TempDir::new().unwrap();
    let state = PinState::open(&state_path(&dir)).unwrap();
    assert!(state.is_empty().unwrap());

    let (a, b, c) = (pin_n(1), pin_n(2), pin_n(3));
    let changes = state
        .apply(&[StateOp::Pin(a.clone()), StateOp::Pin(b.clone()), StateOp::Pin(c.clone()), StateOp::Unpin(b.key())])
        .unwrap();
    assert_eq!(
        changes,
        vec![
            StateChange::Pinned { pin: a.clone(), previous: None },
            StateChange::Pinned { pin: b.clone(), previous: None },
            StateChange::Pinned { pin: c.clone(), previous: None },
            StateChange::Unpinned { pin: b.clone() },
        ]
    );
    assert_eq!(state.len().unwrap(), 2);
    assert_eq!(state.get(&a.key()).unwrap(), Some(a.clone()));
    assert_eq!(state.get(&b.key()).unwrap(), None);

    // Replacing reports the previous pin; unpinning an absent pin changes nothing.
    let mut a2 = a.clone();
    a2.name = "renamed".into();
    let outcomes = state.apply_each(&[StateOp::Pin(a2.clone()), StateOp::Unpin(b.key())], None).unwrap();
    assert_eq!(outcomes, vec![Some(StateChange::Pinned { pin: a2.clone(), previous: Some(a.clone()) }), None]);

    let mut expected = vec![a2, c];
    expected.sort_by_key(Pin::key);
    assert_eq!(all_pins(&state), expected);
}

#[test]
fn scan_pages_through_everything_in_key_order() {
    let dir = TempDir::new().unwrap();
    let state = PinState::open(&state_path(&dir)).unwrap();
    let ops: Vec<_> = (0..250).map(|n| StateOp::Pin(pin_n(n))).collect();
    state.apply(&ops).unwrap();

    let mut seen = Vec::new();
    let mut after: Option<CidKey> = None;
    loop {
        let page = state.scan(after.as_ref(), 100).unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 100);
        after = page.last().map(Pin::key);
        seen.extend(page);
    }
    assert_eq!(seen.len(), 250);
    assert!(seen.windows(2).all(|w| w[0].key() < w[1].key()));
    assert_eq!(state.scan(None, 0).unwrap(), vec![]);
}

#[test]
fn get_many_answers_each_key_in_order_sorted_or_not() {
    let dir = TempDir::new().unwrap();
    let state = PinState::open(&state_path(&dir)).unwrap();
    // Every other pin stored: the asked-for keys have gaps, and the range holds keys nobody asked for.
    state.apply(&(0..40).filter(|n| n % 2 == 0).map(|n| StateOp::Pin(pin_n(n))).collect::<Vec<_>>()).unwrap();
    let mut keys: Vec<CidKey> = (0..40).map(|n| pin_n(n).key()).collect();
    keys.sort();
    let expected = |keys: &[CidKey]| -> Vec<Option<Pin>> { keys.iter().map(|key| state.get(key).unwrap()).collect() };

    let cases: Vec<(&str, Vec<CidKey>)> = vec![
        ("ascending, with gaps", keys.clone()),
        ("ascending, every third", keys.iter().step_by(3).cloned().collect()),
        (
            "ascending, only missing ones",
            keys.iter().filter(|key| state.get(key).unwrap().is_none()).cloned().collect(),
        ),
        ("descending", keys.iter().rev().cloned().collect()),
        ("a key twice", vec![keys[0].clone(), keys[0].clone(), keys[2].clone()]),
        ("one", vec![keys[4].clone()]),
        ("none", vec![]),
    ];
    for (case, keys) in cases {
        let found = state.get_many(&keys).unwrap();
        assert_eq!(found, expected(&keys), "{case}");
    }
}

#[test]
fn expired_reads_only_due_pins_and_follows_replacements() {
    let dir = TempDir::new().unwrap();
    let state = PinState::open(&state_path(&dir)).unwrap();
    let mut soon = pin_n(1);
    soon.expire_at = Some(at("2030-01-01T00:00:00.500Z"));
    let mut later = pin_n(2);
    later.expire_at = Some(at("2031-01-01T00:00:00Z"));
    let never = pin_n(3);
    state.apply(&[StateOp::Pin(soon.clone()), StateOp::Pin(later.clone()), StateOp::Pin(never)]).unwrap();

    assert_eq!(state.expired(at("2029-12-31T23:59:59Z")).unwrap(), vec![]);
    // Same second as the expiry but before it: not yet.
    assert_eq!(state.expired(at("2030-01-01T00:00:00.100Z")).unwrap(), vec![]);
    assert_eq!(state.expired(at("2030-01-01T00:00:00.500Z")).unwrap(), vec![soon.clone()]);
    let mut both = vec![soon.clone(), later.clone()];
    both.sort_by_key(|p| p.expire_at);
    assert_eq!(state.expired(at("2032-01-01T00:00:00Z")).unwrap(), both);

    // Moving the expiry of `soon` later removes its old index entry; unpinning `later` removes its.
    let mut moved = soon.clone();
    moved.expire_at = Some(at("2040-01-01T00:00:00Z"));
    state.apply(&[StateOp::Pin(moved.clone()), StateOp::Unpin(later.key())]).unwrap();
    assert_eq!(state.expired(at("2032-01-01T00:00:00Z")).unwrap(), vec![]);
    assert_eq!(state.expired(at("2040-01-01T00:00:00Z")).unwrap(), vec![moved]);
}

#[test]
fn records_round_trip_every_field() {
    let dir = TempDir::new().unwrap();
    let state = PinState::open(&state_path(&dir)).unwrap();
    let mut pin = pin_n(7);
    pin.replication_factor_min = 2;
    pin.replication_factor_max = 3;
    pin.mode = crate::types::PinMode::Direct;
    pin.shard_size = 1 << 20;
    pin.user_allocations = vec![libp2p_identity::PeerId::random()];
    pin.allocations = vec![libp2p_identity::PeerId::random(), libp2p_identity::PeerId::random()];
    pin.expire_at = Some(at("2030-05-06T07:08:09.123456789Z"));
    pin.metadata.insert("owner".into(), "me".into());
    pin.pin_update = Some(pin_n(8).cid);
    pin.reference = Some(pin_n(9).cid);
    pin.origins = vec!["/ip4/127.0.0.1/tcp/4001".parse().unwrap()];
    pin.pin_type = crate::types::PinType::Meta;
    pin.max_depth = 0;
    state.apply(&[StateOp::Pin(pin.clone())]).unwrap();
    assert_eq!(state.get(&pin.key()).unwrap(), Some(pin));
}

#[test]
fn reopening_keeps_pins_and_last_applied() {
    let dir = TempDir::new().unwrap();
    let path = state_path(&dir);
    {
        let state = PinState::open(&path).unwrap();
        assert_eq!(state.last_applied().unwrap(), None);
        state.apply_each(&[StateOp::Pin(pin_n(1)), StateOp::Pin(pin_n(2))], Some(b"log-7")).unwrap();
        state.apply(&[StateOp::Unpin(pin_n(1).key())]).unwrap();
    }
    let state = PinState::open(&path).unwrap();
    assert_eq!(all_pins(&state), vec![pin_n(2)]);
    // A batch without a position leaves the stored one alone.
    assert_eq!(state.last_applied().unwrap(), Some(b"log-7".to_vec()));
}

#[test]
fn a_second_open_of_the_same_file_is_refused() {
    let dir = TempDir::new().unwrap();
    let path = state_path(&dir);
    let _state = PinState::open(&path).unwrap();
    let msg = storage_error(PinState::open(&path));
    assert!(msg.contains("another process has it open"), "{msg}");
}

/// Opening must fail with a message naming the file, and leave its bytes exactly as they were.
fn assert_refused(path: &Path, expect: &str) {
    let before = std::fs::read(path).unwrap();
    let msg = storage_error(PinState::open(path));
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains(expect), "expected {expect:?} in: {msg}");
    assert!(std::fs::read(path).unwrap() == before, "the file was modified");
}

fn populated(dir: &TempDir, pins: u64) -> PathBuf {
    let path = state_path(dir);
    let state = PinState::open(&path).unwrap();
    let ops: Vec<_> = (0..pins).map(|n| StateOp::Pin(pin_n(n))).collect();
    state.apply(&ops).unwrap();
    path
}

#[test]
fn zero_length_file_is_refused() {
    let dir = TempDir::new().unwrap();
    let path = state_path(&dir);
    std::fs::write(&path, b"").unwrap();
    assert_refused(&path, "damaged");
}

#[test]
fn garbage_file_is_refused() {
    let dir = TempDir::new().unwrap();
    let path = state_path(&dir);
    std::fs::write(&path, vec![0x5a; 64 * 1024]).unwrap();
    assert_refused(&path, "damaged");
}

#[test]
fn truncated_file_is_refused() {
    let dir = TempDir::new().unwrap();
    let path = populated(&dir, 2000);
    let len = std::fs::metadata(&path).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(len / 3).unwrap();
    drop(file);
    assert_refused(&path, "damaged");
}

#[test]
fn foreign_redb_file_is_refused() {
    let dir = TempDir::new().unwrap();
    let path = state_path(&dir);
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(redb::TableDefinition::<&str, u64>::new("something")).unwrap().insert("a", 1).unwrap();
        txn.commit().unwrap();
    }
    assert_refused(&path, "not a pinset state file");
}

/// Rewrites meta or pins of a state file with raw redb, as damage or another version would.
fn tamper(path: &Path, edit: impl FnOnce(&redb::WriteTransaction)) {
    let db = redb::Database::open(path).unwrap();
    let txn = db.begin_write().unwrap();
    edit(&txn);
    txn.commit().unwrap();
}

#[test]
fn unknown_format_version_is_refused() {
    let dir = TempDir::new().unwrap();
    let path = populated(&dir, 3);
    tamper(&path, |txn| {
        txn.open_table(store::META).unwrap().insert("format", 2u32.to_le_bytes().as_slice()).unwrap();
    });
    assert_refused(&path, "format version 2");
}

#[test]
fn corrupt_record_is_an_error_when_read_never_skipped() {
    let dir = TempDir::new().unwrap();
    let path = populated(&dir, 3);
    let victim = pin_n(1).key();
    tamper(&path, |txn| {
        txn.open_table(store::PINS).unwrap().insert(victim.as_bytes(), [1u8, 0xff, 0xff, 0xff].as_slice()).unwrap();
    });
    let state = PinState::open(&path).unwrap();
    let cid = victim.to_cid().to_string();
    for msg in [
        storage_error(state.get(&victim)),
        storage_error(state.scan(None, 10)),
        storage_error(state.snapshot(Vec::new())),
        storage_error(state.apply(&[StateOp::Unpin(victim.clone())])),
    ] {
        assert!(msg.contains(&cid) && msg.contains("damaged"), "{msg}");
    }
    assert_eq!(state.get(&pin_n(0).key()).unwrap(), Some(pin_n(0)));
    drop(state);
    // Nothing was dropped or rewritten: the damaged record is still there, as it was.
    let db = redb::Database::open(&path).unwrap();
    let txn = db.begin_read().unwrap();
    let pins = txn.open_table(store::PINS).unwrap();
    assert_eq!(pins.get(victim.as_bytes()).unwrap().unwrap().value(), [1u8, 0xff, 0xff, 0xff].as_slice());
    assert_eq!(redb::ReadableTableMetadata::len(&pins).unwrap(), 3);
}

#[test]
fn record_under_the_wrong_key_is_an_error() {
    let dir = TempDir::new().unwrap();
    let path = populated(&dir, 2);
    let record = store::encode_pin(&path, &pin_n(0)).unwrap();
    tamper(&path, |txn| {
        txn.open_table(store::PINS).unwrap().insert(pin_n(1).key().as_bytes(), record.as_slice()).unwrap();
    });
    let state = PinState::open(&path).unwrap();
    let msg = storage_error(state.get(&pin_n(1).key()));
    assert!(msg.contains("is the pin of"), "{msg}");
}

/// `cargo test --release -p sidecar state::tests::million -- --ignored --nocapture`
#[test]
#[ignore = "a benchmark: 1M pins, takes a minute in release mode"]
fn million_pins_insert_reopen_scan_snapshot() {
    const N: u64 = 1_000_000;
    let dir = TempDir::new().unwrap();
    let path = state_path(&dir);
    let state = PinState::open(&path).unwrap();
    let started = Instant::now();
    let mut ops = Vec::with_capacity(1024);
    for n in 0..N {
        let mut pin = pin_n(n);
        pin.allocations = vec![libp2p_identity::PeerId::random(), libp2p_identity::PeerId::random()];
        if n % 10 == 0 {
            pin.expire_at = Some(Utc::now() + Duration::days(1 + (n % 365) as i64));
        }
        ops.push(StateOp::Pin(pin));
        if ops.len() == 1024 {
            state.apply(&ops).unwrap();
            ops.clear();
        }
    }
    state.apply(&ops).unwrap();
    let insert = started.elapsed();
    drop(state);

    // What start-up costs after a kill -9: redb then walks and verifies the whole file, as this does.
    let started = Instant::now();
    redb::Builder::new().set_check_integrity_on_open(true).open(&path).unwrap();
    let repair = started.elapsed();

    let started = Instant::now();
    let state = PinState::open(&path).unwrap();
    assert_eq!(state.len().unwrap(), N);
    let reopen = started.elapsed();

    let started = Instant::now();
    let (mut after, mut seen) = (None, 0u64);
    loop {
        let page = state.scan(after.as_ref(), 10_000).unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.key());
        seen += page.len() as u64;
    }
    assert_eq!(seen, N);
    let scan = started.elapsed();

    let started = Instant::now();
    let expired = state.expired(Utc::now() + Duration::days(30)).unwrap();
    assert!(!expired.is_empty());
    let expiry = started.elapsed();

    let started = Instant::now();
    let snapshot_path = dir.path().join("snapshot");
    state.snapshot(std::io::BufWriter::new(std::fs::File::create(&snapshot_path).unwrap())).unwrap();
    let snapshot = started.elapsed();
    let started = Instant::now();
    let copy = PinState::open(&dir.path().join("copy.redb")).unwrap();
    copy.restore(std::fs::File::open(&snapshot_path).unwrap()).unwrap();
    let restore = started.elapsed();
    // Over a full pinset: every pin is compared with the one it replaces.
    let started = Instant::now();
    copy.restore(std::fs::File::open(&snapshot_path).unwrap()).unwrap();
    let restore_over = started.elapsed();

    let rss = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .map(str::to_string)
        .unwrap_or_default();
    let mib = |p: &Path| std::fs::metadata(p).unwrap().len() / (1024 * 1024);
    println!(
        "1M pins: insert {insert:?} ({:.0}/s, batches of 1024), full check as after a crash {repair:?}, \
         reopen {reopen:?}, scan {scan:?} ({:.0}/s), \
         expired(30 days, {} pins) {expiry:?}, snapshot {snapshot:?} ({} MiB), restore {restore:?} \
         (over the same pins {restore_over:?}), file {} MiB, {rss}",
        N as f64 / insert.as_secs_f64(),
        N as f64 / scan.as_secs_f64(),
        expired.len(),
        mib(&snapshot_path),
        mib(&path),
    );
}

fn pin_for(n: u64, allocations: &[libp2p_identity::PeerId]) -> Pin {
    Pin { allocations: allocations.to_vec(), ..pin_n(n) }
}

fn all_unpins(state: &PinState) -> Vec<PendingUnpin> {
    state.pending_unpins(None, usize::MAX).unwrap()
}

#[test]
fn an_unpin_writes_its_record_in_its_own_transaction() {
    let dir = TempDir::new().unwrap();
    let path = state_path(&dir);
    let (p1, p2) = (libp2p_identity::PeerId::random(), libp2p_identity::PeerId::random());
    let mut direct = pin_for(1, &[p1, p2]);
    direct.mode = crate::types::PinMode::Direct;
    {
        let state = PinState::open(&path).unwrap();
        state.apply(&[StateOp::Pin(direct.clone()), StateOp::Pin(pin_n(2))]).unwrap();
        assert_eq!((all_unpins(&state), state.latest_unpin_seq()), (vec![], 0), "pins owe nothing");
        state.apply(&[StateOp::Unpin(direct.key()), StateOp::Unpin(pin_n(3).key())]).unwrap();
        let expected =
            PendingUnpin { key: direct.key(), cid: direct.cid, mode: direct.mode, from: vec![p1, p2], seq: 1 };
        assert_eq!((all_unpins(&state), state.latest_unpin_seq()), (vec![expected], 1));
    }
    // Durable with the unpin: there after a reopen, and the sequence goes on from where it was.
    let state = PinState::open(&path).unwrap();
    assert_eq!((all_unpins(&state).len(), state.latest_unpin_seq()), (1, 1));
    state.apply(&[StateOp::Unpin(pin_n(2).key())]).unwrap();
    let pending = all_unpins(&state);
    assert_eq!(pending.iter().map(|u| (u.key.clone(), u.seq)).collect::<Vec<_>>(), {
        let mut expected = vec![(direct.key(), 1), (pin_n(2).key(), 2)];
        expected.sort();
        expected
    });
    assert!(pending.iter().find(|u| u.key == pin_n(2).key()).unwrap().names(&p1), "allocated everywhere");

    // All or nothing: an unpin in a batch that fails leaves neither its removal nor its record.
    state.apply(&[StateOp::Pin(pin_n(4)), StateOp::Pin(pin_n(5))]).unwrap();
    drop(state);
    tamper(&path, |txn| {
        txn.open_table(store::PINS).unwrap().insert(pin_n(5).key().as_bytes(), [1u8, 0xff].as_slice()).unwrap();
    });
    let state = PinState::open(&path).unwrap();
    storage_error(state.apply(&[StateOp::Unpin(pin_n(4).key()), StateOp::Unpin(pin_n(5).key())]));
    assert_eq!(state.get(&pin_n(4).key()).unwrap(), Some(pin_n(4)));
    assert!(all_unpins(&state).iter().all(|u| u.key != pin_n(4).key()));
    assert_eq!(state.latest_unpin_seq(), 2);
}

#[test]
fn owed_peers_follow_allocations() {
    let [a, b, c] = [(); 3].map(|_| libp2p_identity::PeerId::random());
    let peers = |p: &[libp2p_identity::PeerId]| Some(p.to_vec());
    let every = Some(vec![]);
    let table = [
        // New pins owe nothing.
        (None, None, peers(&[a]), None),
        (None, None, every.clone(), None),
        // Unpinned: whoever had it.
        (None, peers(&[a, b]), None, peers(&[a, b])),
        (None, every.clone(), None, every.clone()),
        // Moved: whoever lost it; nobody when nobody did.
        (None, peers(&[a, b]), peers(&[b, c]), peers(&[a])),
        (None, peers(&[a]), peers(&[a, b]), None),
        (None, every.clone(), peers(&[a]), every.clone()),
        (None, peers(&[a]), every.clone(), None),
        // A record lasts until everyone it names has the pin again.
        (peers(&[a, b]), None, peers(&[c]), peers(&[a, b])),
        (peers(&[a, b]), None, peers(&[a]), peers(&[b])),
        (peers(&[a, b]), None, peers(&[a, b]), None),
        (peers(&[a]), peers(&[b]), peers(&[c]), peers(&[a, b])),
        (peers(&[a]), peers(&[b]), None, peers(&[a, b])),
        (peers(&[a]), every.clone(), peers(&[c]), every.clone()),
        (every.clone(), peers(&[b]), peers(&[b]), every.clone()),
        (every.clone(), None, every.clone(), None),
    ];
    for (recorded, previous, next, expected) in table {
        assert_eq!(
            store::owed_peers(recorded.as_deref(), previous.as_deref(), next.as_deref()),
            expected,
            "{recorded:?} {previous:?} {next:?}"
        );
    }
}

#[test]
fn a_repin_drops_the_record_and_a_reallocation_writes_one() {
    let dir = TempDir::new().unwrap();
    let state = PinState::open(&state_path(&dir)).unwrap();
    let (me, other) = (libp2p_identity::PeerId::random(), libp2p_identity::PeerId::random());
    let key = pin_n(1).key();
    let owed = |state: &PinState| all_unpins(state).into_iter().map(|u| (u.from, u.seq)).collect::<Vec<_>>();

    state.apply(&[StateOp::Pin(pin_for(1, &[me])), StateOp::Unpin(key.clone())]).unwrap();
    assert_eq!(owed(&state), vec![(vec![me], 1)]);
    state.apply(&[StateOp::Pin(pin_for(1, &[me]))]).unwrap();
    assert_eq!(owed(&state), vec![], "pinned again: nothing to undo");

    state.apply(&[StateOp::Pin(pin_for(1, &[other]))]).unwrap();
    assert_eq!(owed(&state), vec![(vec![me], 2)], "moved away from me");
    // A rename elsewhere keeps what I am owed, under a new seq.
    state.apply(&[StateOp::Pin(Pin { name: "renamed".into(), ..pin_for(1, &[other]) })]).unwrap();
    assert_eq!(owed(&state), vec![(vec![me], 3)]);
    state.apply(&[StateOp::Pin(pin_for(1, &[other, me]))]).unwrap();
    assert_eq!(owed(&state), vec![]);
    assert_eq!(state.latest_unpin_seq(), 3);
}

#[test]
fn unpin_records_page_and_are_forgotten_unless_rewritten_since() {
    let dir = TempDir::new().unwrap();
    let state = PinState::open(&state_path(&dir)).unwrap();
    state.apply(&(0..250).map(|n| StateOp::Pin(pin_n(n))).collect::<Vec<_>>()).unwrap();
    state.apply(&(0..250).map(|n| StateOp::Unpin(pin_n(n).key())).collect::<Vec<_>>()).unwrap();

    let mut seen = Vec::new();
    let mut after: Option<CidKey> = None;
    loop {
        let page = state.pending_unpins(after.as_ref(), 100).unwrap();
        let Some(last) = page.last() else { break };
        assert!(page.len() <= 100);
        after = Some(last.key.clone());
        seen.extend(page);
    }
    assert_eq!(seen.len(), 250);
    assert!(seen.windows(2).all(|w| w[0].key < w[1].key));
    assert_eq!(state.pending_unpins(None, 0).unwrap(), vec![]);

    // Checked up to the latest seq: every record may go, but one re-pinned and unpinned meanwhile
    // stays (its new record asks for another unpin).
    let checked = state.latest_unpin_seq();
    let done: Vec<(CidKey, u64)> = seen.iter().map(|u| (u.key.clone(), checked)).collect();
    let again = pin_n(7);
    state.apply(&[StateOp::Pin(again.clone()), StateOp::Unpin(again.key())]).unwrap();
    state.forget_unpins(&done).unwrap();
    let left = all_unpins(&state);
    assert_eq!(left.iter().map(|u| &u.key).collect::<Vec<_>>(), vec![&again.key()]);
    assert!(left[0].seq > checked);
    state.forget_unpins(&[(again.key(), left[0].seq), (pin_n(999).key(), 1)]).unwrap();
    assert_eq!(all_unpins(&state), vec![]);
}

#[test]
fn a_state_file_from_before_unpin_records_opens_and_gets_them() {
    let dir = TempDir::new().unwrap();
    let path = populated(&dir, 3);
    // What a file of the same format version written before the table existed looks like.
    tamper(&path, |txn| {
        assert!(txn.delete_table(store::UNPINS).unwrap());
    });
    let state = PinState::open(&path).unwrap();
    assert_eq!((all_unpins(&state), state.latest_unpin_seq()), (vec![], 0));
    assert_eq!(all_pins(&state).len(), 3);
    state.apply(&[StateOp::Unpin(pin_n(1).key())]).unwrap();
    assert_eq!(all_unpins(&state).iter().map(|u| u.key.clone()).collect::<Vec<_>>(), vec![pin_n(1).key()]);
    state.forget_unpins(&[(pin_n(1).key(), 1)]).unwrap();
    assert_eq!(all_unpins(&state), vec![]);
}
